"""The depthwise conv on HVX: uint8 activations x int8 weights -> int32, NHWC, any stride
(``DepthwiseConv``: ``hvx_kernel`` and its plain loops ``compute``).

In NHWC a row of outputs ``[OW, C]`` is one contiguous run of ``OW * C`` values, and the
input each tap ``(ky, kx)`` reads for it is the padded input row ``y + ky`` from ``kx * C`` on:
also contiguous. So the kernel works on flattened rows, 32 outputs a vector: per tap one
(unaligned) load of 32 input bytes, widened, times the tap's weights tiled along the row
(``w[ky, kx, j % C]``, packed at compile time), accumulated in int32 registers.

A strided conv breaks that (output ``j`` of pixel ``p`` reads input pixel ``s * p + kx``), so
it works a pixel at a time: its ``C`` outputs in ``roundup(C, 32) / 32`` vectors, each tap one
load of 32 bytes from the input pixel's channel. A pixel's last vector runs past its ``C``
channels (zero weights there: zeros) into the next pixel's first vector, which is written after
it (the vectors in descending order, the pixels in ascending order inside each), so the rows
carry ``roundup(C, 32) - C`` values of slack, zeros, after the last pixel.
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
    stride: tuple[int, int] = (1, 1)
    in_hw: tuple[int, int] = (0, 0)  # a strided conv's (padded) input, when larger than it reads

    @property
    def strided(self) -> bool:
        return tuple(self.stride) != (1, 1)

    @property
    def lanes(self) -> int:
        """A strided conv's outputs a pixel, in whole vectors."""
        return roundup(self.channels, LANES)

    @property
    def row(self) -> int:
        if self.strided:  # the pixels, and the last one's slack
            return self.out_hw[1] * self.channels + self.lanes - self.channels
        return roundup(self.out_hw[1] * self.channels, LANES)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """Rows of whole pixels, long enough for the last vector's loads."""
        (oh, ow), (kh, kw), c = self.out_hw, self.kernel_hw, self.channels
        if self.strided:
            (sh, sw), (ih, iw) = self.stride, self.in_hw
            pixels = -(-(((ow - 1) * sw + kw - 1) * c + roundup(self.lanes, 128)) // c)  # whole 128-byte loads
            return (self.batch, max((oh - 1) * sh + kh, ih), max(pixels, iw) * c)
        return (self.batch, oh + kh - 1, roundup(self.row + (kw - 1) * c, c))

    @property
    def weight_shape(self) -> tuple[int, int, int]:
        return (*self.kernel_hw, self.lanes if self.strided else self.row)

    @property
    def output_shape(self) -> tuple[int, int, int]:
        return (self.batch, self.out_hw[0], self.row)

    @property
    def weight_dtype(self) -> str:
        """int8 where the kernel multiplies bytes (``vmpybusv``), int32 for the strided one."""
        return "int32" if self.strided else "int8"

    def pack_weight(self, weight_oihw: np.ndarray) -> np.ndarray:
        """``[C, 1, kh, kw]`` -> ``[kh, kw, row]``: each tap's weights repeated along the row
        (``weight_dtype``, as the kernel multiplies them)."""
        taps = weight_oihw[:, 0].transpose(1, 2, 0)  # [kh, kw, C]
        if self.strided:  # a pixel's channels, zeros up to whole vectors
            padded = np.zeros(self.weight_shape, np.int32)
            padded[..., : self.channels] = taps
            return padded
        tiled = np.tile(taps, (1, 1, self.row // self.channels + 1))[..., : self.row]
        return np.ascontiguousarray(tiled).astype(self.weight_dtype)

    def compute(self) -> tvm.tirx.PrimFunc:
        """The plain loops (the CPU reference of the HVX kernel)."""
        c = self.channels
        x = te.placeholder(self.input_shape, "uint8", name="data")
        w = te.placeholder(self.weight_shape, self.weight_dtype, name="weight")
        ky = te.reduce_axis((0, self.kernel_hw[0]), name="ky")
        kx = te.reduce_axis((0, self.kernel_hw[1]), name="kx")
        if self.strided:  # output j: pixel p (the slack: the last one's), channel j - p * C
            (sh, sw), last = self.stride, self.out_hw[1] - 1

            def strided(n, r, j):
                p = te.min(j // c, last)
                return te.sum(x[n, r * sh + ky, (p * sw + kx) * c + j - p * c].astype("int32") * w[ky, kx, j - p * c],
                              axis=[ky, kx])

            return te.create_prim_func([x, w, te.compute(self.output_shape, strided, name="depthwise")])
        y = te.compute(
            self.output_shape,
            lambda n, r, j: te.sum(x[n, r + ky, j + kx * c].astype("int32") * w[ky, kx, j].astype("int32"), axis=[ky, kx]),
            name="depthwise",
        )
        return te.create_prim_func([x, w, y])

    def hvx_kernel(self) -> tvm.tirx.PrimFunc:
        """128 outputs at a time: per tap one unaligned load of 128 input bytes times the tap's
        128 weight bytes (``vmpybusv``: int16 products, even and odd bytes apart), two taps'
        products added and widened to int32 (``vaddhw`` accumulating: outputs ``4i``, ``4i+2``
        from the even products, ``4i+1``, ``4i+3`` from the odd), then two rounds of ``vshuff``
        put the 128 sums in order; the row's last vectors 32 at a time."""
        if self.strided:
            return self._strided_kernel()
        n, oh, row = self.output_shape
        kh, kw = self.kernel_hw
        c, (_, h, wi) = self.channels, self.input_shape
        groups, vectors = row // 128, row // LANES
        taps = [(ky, kx) for ky in range(kh) for kx in range(kw)]

        def products(x, w, b, r, g, tap):
            ky, kx = tap
            return hvx("vmpybusv", T.reinterpret(x.vload([b, r + ky, g * 128 + kx * c], "uint8x128"), dtype="int32x32"),
                       T.reinterpret(w.vload([ky, kx, g * 128], "int8x128"), dtype="int32x32"), dtype="int32x64")

        def sums(x, w, b, r, g, part):
            """The ``part`` ("lo": even, "hi": odd bytes) products of every tap, two taps a widening
            add: 64 int32 sums as a vector pair."""
            total, zero = None, T.broadcast(T.int32(0), 32)
            for i in range(0, len(taps), 2):
                first = hvx(part, products(x, w, b, r, g, taps[i]))
                second = hvx(part, products(x, w, b, r, g, taps[i + 1])) if i + 1 < len(taps) else zero
                total = (hvx("vaddhw", first, second, dtype="int32x64") if total is None
                         else hvx("vaddhw.acc", total, first, second, dtype="int32x64"))
            return total

        def in_order(even, odd, half):
            """Outputs ``64 half ... 64 half + 63`` in order from the even and odd bytes' sums."""
            evens = hvx("vshuffvdd", hvx("hi", even), hvx("lo", even), -4, dtype="int32x64")  # outputs 0, 2, 4, ...
            odds = hvx("vshuffvdd", hvx("hi", odd), hvx("lo", odd), -4, dtype="int32x64")  # 1, 3, 5, ...
            return hvx("vshuffvdd", hvx(half, odds), hvx(half, evens), -4, dtype="int32x64")

        def vector_sum(x, w, b, r, v):
            total = None
            for ky, kx in taps:
                term = (T.cast(x.vload([b, r + ky, v * 32 + kx * c], "uint8x32"), "int32x32")
                        * T.cast(w.vload([ky, kx, v * 32], "int8x32"), "int32x32"))
                total = term if total is None else total + term
            return total

        @T.prim_func(s_tir=True)  # a root block, as relax's pattern analysis expects
        def depthwise(x: T.Buffer((n, h, wi), "uint8"), w: T.Buffer((kh, kw, row), "int8", align=128),
                      y: T.Buffer((n, oh, row), "int32", align=128)):
            T.func_attr({"tirx.noalias": True})
            with T.sblock("root"):
                for b, r, g in T.grid(n, oh, groups):  # both halves share the products (LLVM's CSE)
                    y[b, r, T.ramp(g * 128, 1, 64)] = T.reinterpret(
                        in_order(sums(x, w, b, r, g, "lo"), sums(x, w, b, r, g, "hi"), "lo"), dtype="int32x64")
                    y[b, r, T.ramp(g * 128 + 64, 1, 64)] = T.reinterpret(
                        in_order(sums(x, w, b, r, g, "lo"), sums(x, w, b, r, g, "hi"), "hi"), dtype="int32x64")
                for b, r, v in T.grid(n, oh, vectors - groups * 4):
                    y[b, r, T.ramp((groups * 4 + v) * 32, 1, 32)] = vector_sum(x, w, b, r, groups * 4 + v)

        return depthwise

    def _strided_kernel(self) -> tvm.tirx.PrimFunc:
        """A pixel's vectors four at a time (one 128-byte load a tap, widened by ``vunpack``), the
        last group first (its slack is the next pixel's first vector), then the others in
        descending order, the pixels ascending in each; the tap's weights are the same for every
        pixel."""
        n, oh, row = self.output_shape
        (kh, kw), (sh, sw), c, (_, h, wi) = self.kernel_hw, self.stride, self.channels, self.input_shape
        ow, lanes = self.out_hw[1], self.lanes
        groups, tail = divmod(lanes // LANES, 4)

        def quarters(x, b, r, j):
            pair = hvx("vunpackub", T.reinterpret(x.vload([b, r, j], "uint8x128"), dtype="int32x32"), dtype="int32x64")
            low, high = (hvx("vunpackuh", hvx(part, pair), dtype="int32x64") for part in ("lo", "hi"))
            return [hvx("lo", low), hvx("hi", low), hvx("lo", high), hvx("hi", high)]

        def quarter_sum(x, w, b, r, p, g, q):
            total = None
            for ky in range(kh):
                for kx in range(kw):
                    term = (quarters(x, b, r * sh + ky, (p * sw + kx) * c + g * 128)[q]
                            * w.vload([ky, kx, g * 128 + q * 32], "int32x32"))
                    total = term if total is None else total + term
            return total

        @T.prim_func(s_tir=True)
        def depthwise(x: T.Buffer((n, h, wi), "uint8"), w: T.Buffer((kh, kw, lanes), "int32", align=128),
                      y: T.Buffer((n, oh, row), "int32")):
            T.func_attr({"tirx.noalias": True})
            with T.sblock("root"):
                for b, r, p in T.grid(n, oh, ow):  # the last group, fewer than four vectors
                    if tail > 0:
                        y[b, r, T.ramp(p * c + groups * 128, 1, 32)] = quarter_sum(x, w, b, r, p, groups, 0)
                    if tail > 1:
                        y[b, r, T.ramp(p * c + groups * 128 + 32, 1, 32)] = quarter_sum(x, w, b, r, p, groups, 1)
                    if tail > 2:
                        y[b, r, T.ramp(p * c + groups * 128 + 64, 1, 32)] = quarter_sum(x, w, b, r, p, groups, 2)
                for u, b, r, p in T.grid(groups, n, oh, ow):  # whole groups, the last first
                    y[b, r, T.ramp(p * c + (groups - 1 - u) * 128, 1, 32)] = quarter_sum(x, w, b, r, p, groups - 1 - u, 0)
                    y[b, r, T.ramp(p * c + (groups - 1 - u) * 128 + 32, 1, 32)] = quarter_sum(
                        x, w, b, r, p, groups - 1 - u, 1)
                    y[b, r, T.ramp(p * c + (groups - 1 - u) * 128 + 64, 1, 32)] = quarter_sum(
                        x, w, b, r, p, groups - 1 - u, 2)
                    y[b, r, T.ramp(p * c + (groups - 1 - u) * 128 + 96, 1, 32)] = quarter_sum(
                        x, w, b, r, p, groups - 1 - u, 3)

        return depthwise
