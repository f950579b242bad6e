"""The depthwise conv on HVX: uint8 activations x int8 weights -> int32, NHWC, any stride
(``DepthwiseConv``: ``hvx_kernel`` and its plain loops ``compute``).

In NHWC a row of outputs ``[OW, C]`` is one contiguous run of ``OW * C`` values, and the
input each tap ``(ky, kx)`` reads for it is the padded input row ``y + ky`` from ``kx * C`` on:
also contiguous. So the kernel works on flattened rows, 32 outputs a vector: per tap one
(unaligned) load of 32 input bytes, widened, times the tap's weights tiled along the row
(``w[ky, kx, j % C]``, packed at compile time), accumulated in int32 registers.

A strided conv breaks that (output ``j`` of pixel ``p`` reads input pixel ``s * p + kx``), so
it works a pixel at a time: its ``C`` outputs in ``roundup(C, 128) / 128`` groups, each tap one
load of 128 bytes from the input pixel's channel. A pixel's last group runs past its ``C``
channels (zero weights there: zeros) into the next pixels' first group, which is written after
it (the groups in descending order, the pixels in ascending order inside each), so the rows
carry ``roundup(C, 128) - C`` values of slack, zeros, after the last pixel.

Both multiply bytes (``depthwise_fused.ordered_sums``: ``vmpybusv``, two taps a widening ``vaddhw``;
the stride-1 conv with its requantization is ``depthwise_fused.requantized_kernel``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import tvm
from tvm import te

from tvm.script import tirx as T

from .depthwise_fused import BAND_ROWS, INPUT_OFFSET, ordered_sums, requantized_kernel, split_bands
from .intrinsics import LANES, fields_of, roundup, with_fields
from .requantize import lane_constants
from ..memo import kernel_cache

#: The attribute a depthwise kernel carries its ``DepthwiseConv`` in (``tagged`` / ``of``), for
#: ``HexagonRequantize`` to fuse the requantization after it (``hvx_requantized_kernel``).
SPEC_ATTR = "tvm_s2d.depthwise"
#: The share of a conv's taps at least that ``border_rows`` skips, and the kernel rows at least,
#: for the kernel to skip them: rows apart from the others' blocks lose their weights' reuse
#: (5x5: 6x6x240, 20% of the taps, 10% fewer packets; 3x3x576, 40%: 19% fewer; 3x3 kernels, their
#: rows in blocks of 3: 12x12x88, 5.6%, 8.5% more packets; ShuffleNetV2's 6x6x116, 11%: 10% more,
#: 3x3x232, 22%: 19% more).
MIN_SKIPPED, BORDER_KERNEL = 0.1, 5
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
    fill_rows: tuple[int, int] = (0, 0)  # input rows at the top and the bottom holding only ``fill`` (the padding)
    fill: int = 0  # the byte those rows hold: the input's zero point
    signed: bool = False  # the kernels sum (input - 128) x weight (``ordered_sums``; weights in [-127, 127])

    @property
    def strided(self) -> bool:
        return tuple(self.stride) != (1, 1)

    def border_rows(self) -> list[tuple[int, tuple[int, ...]]]:
        """``(r, kept)`` for each output row of a stride-1 conv some of whose kernel rows read
        only ``fill_rows`` (``ky`` not in ``kept``): ``hvx_requantized_kernel`` computes no
        product for them and adds their sum ``fill x sum(W[ky])`` instead (``border_corrections``):
        a 5x5 conv on 3x3 pixels reads 2 fill rows a row (of 5), on 6x6 pixels 1.3 on average.
        Rows that would keep no kernel row compute them all; more than ``BAND_ROWS`` such rows
        above or below the others, under ``MIN_SKIPPED`` of the taps skipped or kernels of fewer
        than ``BORDER_KERNEL`` rows: none skipped."""
        if self.strided or not any(self.fill_rows) or self.kernel_hw[0] < BORDER_KERNEL:
            return []
        (oh, _), kh, (top, bottom) = self.out_hw, self.kernel_hw[0], self.fill_rows
        rows = oh + kh - 1  # the padded input's rows
        border = []
        for r in range(oh):
            kept = tuple(ky for ky in range(kh) if top <= r + ky < rows - bottom)
            if kept and len(kept) < kh:
                border.append((r, kept))
        _, above, below = split_bands(border, oh)
        skipped = sum(kh - len(kept) for _, kept in border) / (kh * oh)  # the share of the taps not computed
        return border if max(len(above), len(below)) <= BAND_ROWS and skipped >= MIN_SKIPPED else []

    def border_corrections(self, packed: np.ndarray) -> np.ndarray:
        """``[len(border_rows()), constant_lanes]`` int32: for each border row, ``fill`` times the
        sum of the weights of its skipped kernel rows, lane ``j`` of channel ``j % C`` (as
        ``requantize_constants``); ``packed``: ``pack_weight``'s weights."""
        c, lanes = self.channels, self.constant_lanes
        rows = []
        for _, kept in self.border_rows():
            skipped = [ky for ky in range(self.kernel_hw[0]) if ky not in kept]
            per_channel = (self.fill - INPUT_OFFSET * self.signed) * packed[skipped, :, :c].astype(np.int64).sum(axis=(0, 1))
            rows.append(np.tile(per_channel, -(-lanes // c))[:lanes])
        return np.asarray(rows, np.int64).reshape(-1, lanes).astype(np.int32)

    @property
    def lanes(self) -> int:
        """A strided conv's outputs a pixel, in whole groups of 128."""
        return roundup(self.channels, 128)

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
        # rows of whole pixels and whole vectors: every row starts aligned (its pad's stores too), so a
        # tap's load is two aligned loads and one ``valign`` by a constant (rows of 2400 bytes, 240
        # channels, took a second ``valign`` by the row's runtime offset: 6x6x240 5x5 9.1k -> 6.0k packets)
        return (self.batch, oh + kh - 1, roundup(self.row + (kw - 1) * c, math.lcm(128, c)))

    @property
    def weight_shape(self) -> tuple[int, int, int]:
        """A tap's weights whole vectors (aligned loads: a row of 1440 outputs' taps unaligned
        cost two loads and a ``valign`` each)."""
        return (*self.kernel_hw, self.lanes if self.strided else roundup(self.row, 128))

    @property
    def output_shape(self) -> tuple[int, int, int]:
        return (self.batch, self.out_hw[0], self.row)

    weight_dtype = "int8"  # the kernels multiply bytes (``vmpybusv``)

    def tagged(self, func: tvm.tirx.PrimFunc) -> tvm.tirx.PrimFunc:
        """``func`` (this conv's kernel) with the conv in its attributes (``of`` reads it back)."""
        return with_fields(func, SPEC_ATTR, [self.batch, *self.out_hw, self.channels, *self.kernel_hw, *self.stride,
                                             *self.in_hw, *self.fill_rows, self.fill, int(self.signed)])

    @staticmethod
    def of(func) -> "DepthwiseConv | None":
        """The conv a kernel ``tagged`` carries, else None."""
        fields = fields_of(func, SPEC_ATTR)
        if fields is None:
            return None
        b, oh, ow, c, kh, kw, sh, sw, ih, iw, top, bottom, fill, signed = fields
        return DepthwiseConv(b, (oh, ow), c, (kh, kw), (sh, sw), (ih, iw), (top, bottom), fill, bool(signed))

    @property
    def dealt(self) -> bool:
        """A conv of column stride 2 whose pixels tile a vector (C divides 64): its fused kernel
        reads each tap's even or odd pixels from 256 input bytes by one ``vdeal`` of C-byte
        elements, 128 outputs a vector like a stride-1 conv's."""
        return self.strided and self.stride[1] == 2 and 64 % self.channels == 0

    @property
    def fusable(self) -> bool:
        """Whether ``hvx_requantized_kernel`` takes this conv: stride 1 or ``dealt``, rows of 128
        outputs or more."""
        return (not self.strided or self.dealt) and self.out_hw[1] * self.channels >= 128

    def fused_weight(self, packed: np.ndarray) -> np.ndarray:
        """The weights ``hvx_requantized_kernel`` reads, from ``pack_weight``'s: a ``dealt``
        conv's C channels tiled along the 128 lanes (its unfused kernel's are zero past C)."""
        if not self.dealt:
            return packed
        return np.ascontiguousarray(np.tile(packed[..., : self.channels], (1, 1, 128 // self.channels)))

    @property
    def constant_lanes(self) -> int:
        """The requantization constants' length in ``hvx_requantized_kernel``: ``lcm(C, 128)``
        lanes (lane ``j`` of channel ``j % C``) and 128 more, for the row's last vector."""
        return math.lcm(self.channels, 128) + 128

    @property
    def bias_length(self) -> int:
        """``hvx_requantized_kernel``'s bias: ``constant_lanes`` values, then as many again for each
        of ``border_rows`` (its corrections: ``border_bias``)."""
        return self.constant_lanes * (1 + len(self.border_rows()))

    def border_bias(self, bias_lanes: np.ndarray, packed: np.ndarray) -> np.ndarray:
        """The bias operand of ``hvx_requantized_kernel``: ``requantize_constants``' bias and
        ``border_corrections``."""
        return np.concatenate([bias_lanes, self.border_corrections(packed).reshape(-1)]).astype(np.int32)

    def requantized_shape(self) -> tuple[int, int, int, int]:
        return (self.batch, *self.out_hw, self.channels)

    @kernel_cache
    def hvx_requantized_kernel(self, zy: int, lo: int, hi: int, dtype: str, hvx_code: bool = True,
                               pre_shift: bool = True, rows: int | None = None, average: bool = False) -> tvm.tirx.PrimFunc:
        """The conv and the requantization after it as one kernel (``depthwise_fused.requantized_kernel``)."""
        return requantized_kernel(self, zy, lo, hi, dtype, hvx_code, pre_shift, rows, average)

    def requantize_constants(self, b, m, r, pre) -> list[np.ndarray]:
        """``[bias, multiplier, shift, half, pre]`` per channel (or scalars) as
        ``hvx_requantized_kernel`` reads them: ``lane_constants`` ``constant_lanes`` long."""
        return lane_constants(b, m, r, self.channels, pre, lanes=self.constant_lanes)

    def pack_weight(self, weight_oihw: np.ndarray) -> np.ndarray:
        """``[C, 1, kh, kw]`` -> ``[kh, kw, row]``: each tap's weights repeated along the row
        (``weight_dtype``, as the kernel multiplies them)."""
        taps = weight_oihw[:, 0].transpose(1, 2, 0)  # [kh, kw, C]
        if self.strided:  # a pixel's channels, zeros up to whole vectors
            padded = np.zeros(self.weight_shape, self.weight_dtype)
            padded[..., : self.channels] = taps
            return padded
        length = self.weight_shape[2]
        tiled = np.tile(taps, (1, 1, length // self.channels + 1))[..., :length]
        return np.ascontiguousarray(tiled).astype(self.weight_dtype)

    def compute(self) -> tvm.tirx.PrimFunc:
        """The plain loops (the CPU reference of the HVX kernel)."""
        c, offset = self.channels, INPUT_OFFSET * self.signed
        x = te.placeholder(self.input_shape, "uint8", name="data")
        w = te.placeholder(self.weight_shape, self.weight_dtype, name="weight")
        ky = te.reduce_axis((0, self.kernel_hw[0]), name="ky")
        kx = te.reduce_axis((0, self.kernel_hw[1]), name="kx")
        if self.strided:  # output j: pixel p (the slack: the last one's), channel j - p * C
            (sh, sw), last = self.stride, self.out_hw[1] - 1

            def strided(n, r, j):
                p = te.min(j // c, last)
                return te.sum((x[n, r * sh + ky, (p * sw + kx) * c + j - p * c].astype("int32") - offset)
                              * w[ky, kx, j - p * c].astype("int32"), axis=[ky, kx])

            return te.create_prim_func([x, w, te.compute(self.output_shape, strided, name="depthwise")])
        y = te.compute(
            self.output_shape,
            lambda n, r, j: te.sum((x[n, r + ky, j + kx * c].astype("int32") - offset) * w[ky, kx, j].astype("int32"),
                                   axis=[ky, kx]),
            name="depthwise",
        )
        return te.create_prim_func([x, w, y])

    @kernel_cache
    def hvx_kernel(self) -> tvm.tirx.PrimFunc:
        """128 outputs at a time: per tap one unaligned load of 128 input bytes and the tap's
        128 weight bytes (``ordered_sums``); the row's last vectors 32 at a time."""
        if self.strided:
            return self._strided_kernel()
        n, oh, row = self.output_shape
        kh, kw = self.kernel_hw
        c, (_, h, wi) = self.channels, self.input_shape
        groups, vectors = row // 128, row // LANES
        taps = [(ky, kx) for ky in range(kh) for kx in range(kw)]

        def group(x, w, b, r, g):
            return ordered_sums([(x.vload([b, r + ky, g * 128 + kx * c], "uint8x128"), w.vload([ky, kx, g * 128], "int8x128"))
                                 for ky, kx in taps], self.signed)

        def vector_sum(x, w, b, r, v):
            total = None
            for ky, kx in taps:
                term = ((T.cast(x.vload([b, r + ky, v * 32 + kx * c], "uint8x32"), "int32x32")
                         - T.broadcast(INPUT_OFFSET * self.signed, 32)) * T.cast(w.vload([ky, kx, v * 32], "int8x32"), "int32x32"))
                total = term if total is None else total + term
            return total

        @T.prim_func(s_tir=True)  # a root block, as relax's pattern analysis expects
        def depthwise(x: T.Buffer((n, h, wi), "uint8", align=128), w: T.Buffer(self.weight_shape, "int8", align=128),
                      y: T.Buffer((n, oh, row), "int32", align=128)):
            T.func_attr({"tirx.noalias": True})
            with T.sblock("root"):
                for b, r, g in T.grid(n, oh, groups):  # both halves share the products (LLVM's CSE)
                    y[b, r, T.ramp(g * 128, 1, 64)] = group(x, w, b, r, g)[0]
                    y[b, r, T.ramp(g * 128 + 64, 1, 64)] = group(x, w, b, r, g)[1]
                for b, r, v in T.grid(n, oh, vectors - groups * 4):
                    y[b, r, T.ramp((groups * 4 + v) * 32, 1, 32)] = vector_sum(x, w, b, r, groups * 4 + v)

        return depthwise

    def _strided_kernel(self) -> tvm.tirx.PrimFunc:
        """A pixel's outputs 128 at a time (``ordered_sums``, one 128-byte load a tap), the last
        group first, then the others in descending order, the pixels ascending in each: a group's
        slack past the pixel's channels (zero weights: zeros) lands on the next pixels' first
        group, written after it; the tap's weights are the same for every pixel."""
        n, oh, row = self.output_shape
        (kh, kw), (sh, sw), c, (_, h, wi) = self.kernel_hw, self.stride, self.channels, self.input_shape
        ow, lanes = self.out_hw[1], self.lanes
        groups = lanes // 128

        def group(x, w, b, r, p, g):
            return ordered_sums([(x.vload([b, r * sh + ky, (p * sw + kx) * c + g * 128], "uint8x128"),
                                  w.vload([ky, kx, g * 128], "int8x128")) for ky in range(kh) for kx in range(kw)], self.signed)

        @T.prim_func(s_tir=True)
        def depthwise(x: T.Buffer((n, h, wi), "uint8", align=128), w: T.Buffer((kh, kw, lanes), "int8", align=128),
                      y: T.Buffer((n, oh, row), "int32")):
            T.func_attr({"tirx.noalias": True})
            with T.sblock("root"):
                for u, b, r, p in T.grid(groups, n, oh, ow):  # the last group first
                    y[b, r, T.ramp(p * c + (groups - 1 - u) * 128, 1, 64)] = group(x, w, b, r, p, groups - 1 - u)[0]
                    y[b, r, T.ramp(p * c + (groups - 1 - u) * 128 + 64, 1, 64)] = group(x, w, b, r, p, groups - 1 - u)[1]

        return depthwise
