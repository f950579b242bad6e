"""Grouped convs (groups of at most 31 output channels, input channels a multiple of 4 a
group: RegNetX's groups of 16) in the channel-in-lanes mapping, one group a 32-lane block.

As in ``lanes.PackedConv`` the weights are the vector operand of ``vrmpyub`` (u8 x u8), packed
as ``W + 128``; the block of group ``g`` reads only its group's input channels
(``g * Cg + c``), so a conv executes ``groups x taps x Cg / 4`` ``vrmpy`` a pixel instead of
the dense conv's ``ceil(Co / 32) x taps x C / 4``. The ``+ 128`` is undone without a second
kernel: lane 31 of each block carries the weight byte 1 on every channel of the group, so it
accumulates the sum of the group's input window ``S``; every lane ``o`` then holds
``sum(x * (W + 128)) = conv + 128 * S`` and the kernel writes ``acc[o] - 128 * acc[31]``:
exact in int32 arithmetic (wrapping) whenever the conv's own result fits int32.

* input NHWC uint8, pre-padded, ``C = groups x Cg`` channels;
* weights packed ``[G, kh, kw, Cg/4, 32, 4]`` (``pack_weight``, compile time);
* output ``[N, OH, OW, G, 32]`` int32 (lanes ``0 .. Co/G - 1`` are the group's outputs).

``schedule_grouped`` tensorizes ``compute()`` as ``lanes.schedule_vrmpy`` does ``PackedConv``'s.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import tvm
from tvm import te

from .intrinsics import DEPTH, LANES, VRMPY_LANES, aligned_prim_func
from .lanes import WEIGHT_OFFSET

SUM_LANE = LANES - 1


@dataclass(frozen=True)
class GroupedConv:
    batch: int
    in_hw: tuple[int, int]  # spatial size of the padded input
    in_channels: int
    out_channels: int
    groups: int
    kernel_hw: tuple[int, int]
    strides: tuple[int, int] = (1, 1)

    @staticmethod
    def applies(in_channels: int, out_channels: int, groups: int) -> bool:
        """Groups of whole words of input channels and at most 31 outputs, and more than 32
        outputs in all: up to 32 the dense block-diagonal conv is one block of lanes and
        executes as few ``vrmpy`` (measured faster: RegNetX's 32-channel 3x3/2 conv at 48x48,
        30.9k packets dense with its offsets kernel, 74.7-108.8k here)."""
        return (in_channels % groups == 0 and out_channels % groups == 0 and (in_channels // groups) % DEPTH == 0
                and out_channels // groups <= SUM_LANE and out_channels > LANES)

    @property
    def group_in(self) -> int:
        return self.in_channels // self.groups

    @property
    def group_out(self) -> int:
        return self.out_channels // self.groups

    @property
    def out_hw(self) -> tuple[int, int]:
        return tuple((self.in_hw[i] - self.kernel_hw[i]) // self.strides[i] + 1 for i in (0, 1))

    @property
    def input_shape(self) -> tuple[int, ...]:
        return (self.batch, *self.in_hw, self.in_channels)

    @property
    def weight_shape(self) -> tuple[int, ...]:
        return (self.groups, *self.kernel_hw, self.group_in // DEPTH, LANES, DEPTH)

    @property
    def output_shape(self) -> tuple[int, ...]:
        return (self.batch, *self.out_hw, self.groups, LANES)

    @property
    def vrmpy_count(self) -> int:
        n, (oh, ow), (kh, kw) = self.batch, self.out_hw, self.kernel_hw
        return n * oh * ow * self.groups * kh * kw * (self.group_in // DEPTH)

    def compute(self) -> tvm.tirx.PrimFunc:
        """``out[.., g, o] = acc[.., g, o] - 128 * acc[.., g, 31]`` with ``acc = sum(x * Wp)``,
        as plain loops (``schedule_vrmpy`` tensorizes the ``conv`` block)."""
        x = te.placeholder(self.input_shape, "uint8", name="data")
        w = te.placeholder(self.weight_shape, "uint8", name="weight")
        kh = te.reduce_axis((0, self.kernel_hw[0]), name="kh")
        kw = te.reduce_axis((0, self.kernel_hw[1]), name="kw")
        c4 = te.reduce_axis((0, self.group_in // DEPTH), name="c4")
        ci = te.reduce_axis((0, DEPTH), name="ci")
        sh, sw = self.strides
        cg = self.group_in
        conv = te.compute(
            self.output_shape,
            lambda n, h, w_, g, co: te.sum(
                x[n, h * sh + kh, w_ * sw + kw, g * cg + c4 * DEPTH + ci].astype("int32")
                * w[g, kh, kw, c4, co, ci].astype("int32"),
                axis=[kh, kw, c4, ci],
            ),
            name="conv",
        )
        sums = te.compute(self.output_shape[:-1], lambda n, h, w_, g: conv[n, h, w_, g, SUM_LANE] * WEIGHT_OFFSET,
                          name="sums")
        out = te.compute(self.output_shape, lambda n, h, w_, g, co: conv[n, h, w_, g, co] - sums[n, h, w_, g], name="out")
        return aligned_prim_func([x, w, out])

    def pack_weight(self, weight_oihw: np.ndarray) -> np.ndarray:
        """Grouped OIHW int8 ``[Co, Cg, kh, kw]`` -> uint8 ``[G, kh, kw, Cg/4, 32, 4]``: the
        group's ``W + 128`` in lanes ``0 .. Co/G - 1``, 1 in lane 31, 128 (zero) elsewhere."""
        o, cg, kh, kw = weight_oihw.shape
        lanes = np.zeros((self.groups, LANES, cg, kh, kw), np.int16)
        lanes[:, :self.group_out] = weight_oihw.reshape(self.groups, self.group_out, cg, kh, kw)
        lanes += WEIGHT_OFFSET
        lanes[:, SUM_LANE] = 1
        packed = lanes.reshape(self.groups, LANES, cg // DEPTH, DEPTH, kh, kw).transpose(0, 4, 5, 2, 1, 3)
        return np.ascontiguousarray(packed).astype(np.uint8)


def schedule_grouped(func: tvm.tirx.PrimFunc, pixels: int = 4) -> tvm.tirx.PrimFunc:
    """``GroupedConv.compute()`` with ``vrmpyub``: ``pixels`` output columns share each weight
    vector (accumulators in registers); each block's sum lane and write back follow it."""
    sch = tvm.s_tir.Schedule(func)
    conv, sums, out = sch.get_sblock("conv"), sch.get_sblock("sums"), sch.get_sblock("out")
    n, h, w, g, co, kh, kw, c4, ci = sch.get_loops(conv)
    ow = int(sch.get(w).extent)
    pixels = max(1, min(pixels, ow))
    while ow % pixels:
        pixels -= 1
    wo, wi = sch.split(w, [None, pixels])
    sch.reorder(n, h, g, wo, kh, kw, c4, wi, co, ci)
    sch.set_scope(conv, 0, "local")
    sch.set_scope(sums, 0, "local")
    sch.reverse_compute_at(sums, wo)
    sch.reverse_compute_at(out, wo)
    init = sch.decompose_reduction(conv, kh)
    sch.tensorize(co, VRMPY_LANES)
    sch.unroll(wi)
    sch.unroll(kw)
    for stage in (init, out):
        sch.vectorize(sch.get_loops(stage)[-1])
    return sch.mod["main"]
