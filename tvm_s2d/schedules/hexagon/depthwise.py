"""The depthwise conv on HVX: uint8 activations x int8 weights -> int32, NHWC, stride 1
(``DepthwiseConv``: ``hvx_kernel`` and its plain loops ``compute``).

In NHWC a row of outputs ``[OW, C]`` is one contiguous run of ``OW * C`` values, and the
input each tap ``(ky, kx)`` reads for it is the padded input row ``y + ky`` from ``kx * C`` on:
also contiguous. So the kernel works on flattened rows, 32 outputs a vector: per tap one
(unaligned) load of 32 input bytes, widened, times the tap's weights tiled along the row
(``w[ky, kx, j % C]``, packed at compile time), accumulated in int32 registers.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import tvm
from tvm import te

from tvm.script import tirx as T

from .intrinsics import LANES, hvx, roundup


@dataclass(frozen=True)
class DepthwiseConv:
    """A stride-1 depthwise conv on a pre-padded NHWC input: input ``[N, H, W * C]`` (rows
    long enough for every 32-output vector), int32 weights ``[kh, kw, row]`` tiled, output
    ``[N, OH, row]`` with ``row = roundup(OW * C, 32)``."""

    batch: int
    out_hw: tuple[int, int]
    channels: int
    kernel_hw: tuple[int, int]

    @property
    def row(self) -> int:
        return roundup(self.out_hw[1] * self.channels, LANES)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """Rows of whole pixels, long enough for the last vector's loads."""
        return (self.batch, self.out_hw[0] + self.kernel_hw[0] - 1,
                roundup(self.row + (self.kernel_hw[1] - 1) * self.channels, self.channels))

    @property
    def weight_shape(self) -> tuple[int, int, int]:
        return (*self.kernel_hw, self.row)

    @property
    def output_shape(self) -> tuple[int, int, int]:
        return (self.batch, self.out_hw[0], self.row)

    def pack_weight(self, weight_oihw: np.ndarray) -> np.ndarray:
        """``[C, 1, kh, kw]`` -> ``[kh, kw, row]`` int32: each tap's weights repeated along the row
        (int32, so that the kernel multiplies them as loaded)."""
        taps = weight_oihw[:, 0].transpose(1, 2, 0)  # [kh, kw, C]
        return np.ascontiguousarray(np.tile(taps, (1, 1, self.row // self.channels + 1))[..., : self.row]).astype(np.int32)

    def compute(self) -> tvm.tirx.PrimFunc:
        """The plain loops (the CPU reference of the HVX kernel)."""
        c = self.channels
        x = te.placeholder(self.input_shape, "uint8", name="data")
        w = te.placeholder(self.weight_shape, "int32", name="weight")
        ky = te.reduce_axis((0, self.kernel_hw[0]), name="ky")
        kx = te.reduce_axis((0, self.kernel_hw[1]), name="kx")
        y = te.compute(
            self.output_shape,
            lambda n, r, j: te.sum(x[n, r + ky, j + kx * c].astype("int32") * w[ky, kx, j], axis=[ky, kx]),
            name="depthwise",
        )
        return te.create_prim_func([x, w, y])

    def hvx_kernel(self) -> tvm.tirx.PrimFunc:
        """128 outputs at a time: per tap one unaligned load of 128 input bytes, widened in order
        by two rounds of ``vunpackub``/``vunpackuh``, times four aligned int32 weight vectors,
        accumulated in registers; the row's last vectors 32 at a time."""
        n, oh, row = self.output_shape
        kh, kw = self.kernel_hw
        c, (_, h, wi) = self.channels, self.input_shape
        groups, vectors = row // 128, row // LANES

        def quarters(x, b, r, j):
            pair = hvx("vunpackub", T.reinterpret(x.vload([b, r, j], "uint8x128"), dtype="int32x32"), dtype="int32x64")
            low, high = (hvx("vunpackuh", hvx(part, pair), dtype="int32x64") for part in ("lo", "hi"))
            return [hvx("lo", low), hvx("hi", low), hvx("lo", high), hvx("hi", high)]

        def group_sum(x, w, b, r, g, q):
            """Quarter ``q`` (32 outputs) of group ``g`` of row ``r``, all taps."""
            total = None
            for ky in range(kh):
                for kx in range(kw):
                    term = quarters(x, b, r + ky, g * 128 + kx * c)[q] * w.vload([ky, kx, g * 128 + q * 32], "int32x32")
                    total = term if total is None else total + term
            return total

        def vector_sum(x, w, b, r, v):
            total = None
            for ky in range(kh):
                for kx in range(kw):
                    term = (T.cast(x.vload([b, r + ky, v * 32 + kx * c], "uint8x32"), "int32x32")
                            * w.vload([ky, kx, v * 32], "int32x32"))
                    total = term if total is None else total + term
            return total

        @T.prim_func(s_tir=True)  # a root block, as relax's pattern analysis expects
        def depthwise(x: T.Buffer((n, h, wi), "uint8"), w: T.Buffer((kh, kw, row), "int32", align=128),
                      y: T.Buffer((n, oh, row), "int32", align=128)):
            T.func_attr({"tirx.noalias": True})
            with T.sblock("root"):
                for b, r, g in T.grid(n, oh, groups):  # the four quarters share loads and widening (LLVM's CSE)
                    y[b, r, T.ramp(g * 128, 1, 32)] = group_sum(x, w, b, r, g, 0)
                    y[b, r, T.ramp(g * 128 + 32, 1, 32)] = group_sum(x, w, b, r, g, 1)
                    y[b, r, T.ramp(g * 128 + 64, 1, 32)] = group_sum(x, w, b, r, g, 2)
                    y[b, r, T.ramp(g * 128 + 96, 1, 32)] = group_sum(x, w, b, r, g, 3)
                for b, r, v in T.grid(n, oh, vectors - groups * 4):
                    y[b, r, T.ramp((groups * 4 + v) * 32, 1, 32)] = vector_sum(x, w, b, r, groups * 4 + v)

        return depthwise
