"""HVX ``vrmpy`` schedules for uint8 x int8 convs in the channel-in-lanes mapping.

``vrmpy`` (128-byte HVX) adds to 32 int32 lanes a 4-way dot product of 4 bytes. A conv uses
it with output channels in the lanes and input channels 4 at a time:

* activations NHWC, channels padded to a multiple of 4 (and spatially pre-padded);
* weights packed ``[Co/32, kh, kw, Ci/4, 32, 4]`` (``pack_weight``), done at compile time;
* outputs ``[N, OH, OW, Co/32, 32]`` int32.

One ``vrmpy`` per output pixel, 32-channel output block, tap and 4 input channels: a conv
with 8 channels leaves 24 of 32 lanes idle, its S2D form fills them. The same template
serves the original conv and the space-to-depth one (``geometry.S2DConvPlan``).

The ``vrmpy`` is the vector-by-scalar form (``vrmpyub``: the weights' vector times the 4
activation bytes of a pixel in a scalar register), which issues two per packet on v66; the
vector-by-vector form (weights and a broadcast pixel) issues one. That form multiplies
unsigned bytes, so the weights are packed as ``W + 128`` and each pixel's result is
corrected by ``-128 x`` the sum of its input window (``offsets.window_offsets``, a second kernel:
channel sums by ``vrmpy`` with ones and a tree of ``vdeal`` + add, then vectorized box sums).
int32 arithmetic wraps, so the result is exact whenever the conv's own result fits int32.

A conv whose output channels leave a lane of the last block spare (``C % 32 != 0``) needs no
second kernel (``PackedConv.sums``): that lane's packed weights are all 1, so its ``vrmpy``
sums are the window sums themselves, and each pixel's accumulators take ``-128 x`` that lane
as they are written back (``summing_vrmpy``). MobileNetV3-Small's offsets kernels ran 22k
packets, as many as 60% of their conv's (72 -> 24 at 12x12: 1.2k beside 1.9k). A conv of
``SUMS_BLOCKS`` lane blocks or more with none spare sums in one more block, computed and not
stored, where that block's ``vrmpy`` pairs are at most ``SUMS_PACKETS`` (3x3x96 -> 576 1x1:
0.7k offsets packets, 0.1k so; ResNet-18's 12x12x128 3x3 convs took 24% more packets so).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import tvm
from tvm import te
from tvm.script import tirx as T

from .intrinsics import DEPTH, LANES, VECTOR_BYTES, VRMPY_LANES, aligned_prim_func, fields_of, roundup, with_fields
from .lanes_accumulate import accumulate_block, pairing
from .offsets import WEIGHT_OFFSET, window_offsets
from ..memo import kernel_cache

SPEC_ATTR = "tvm_s2d.lanes_conv"
#: Lane blocks from which a conv with no spare lane sums its windows in a block of its own, and
#: the most ``vrmpy`` pairs that block may take (offsets kernels measured 0.3-1.0k packets on
#: small maps, their cost growing far slower with the input than a block's).
SUMS_BLOCKS, SUMS_PACKETS = 3, 800

@dataclass(frozen=True)
class PackedConv:
    """A stride-``s`` conv on a pre-padded NHWC uint8 input, packed for ``vrmpy``: two kernels,
    ``window_offsets()`` (input -> per-pixel offsets) and ``compute()`` (input, packed weights,
    offsets -> output)."""

    batch: int
    in_hw: tuple[int, int]  # spatial size of the padded input
    in_channels: int
    out_channels: int
    kernel_hw: tuple[int, int]
    strides: tuple[int, int] = (1, 1)
    sums: bool = False  # the window sums in a lane of its own (``summing``), no offsets kernel

    @property
    def spare_lane(self) -> int | None:
        """The lane of the last block past the output channels (the first), if any."""
        return self.out_channels % LANES or None

    def summing(self) -> "PackedConv":
        """This conv with its window sums in a lane (``sums``): its spare lane, or one more lane
        block at ``SUMS_BLOCKS`` blocks or more if it costs ``SUMS_PACKETS`` at most; else itself."""
        (oh, ow), (kh, kw) = self.out_hw, self.kernel_hw
        block_packets = self.batch * oh * ow * kh * kw * self.cin // DEPTH // 2  # one lane block's vrmpy pairs
        if self.spare_lane is None and (self.cout_blocks < SUMS_BLOCKS or block_packets > SUMS_PACKETS):
            return self
        return replace(self, sums=True)

    @property
    def weight_blocks(self) -> int:
        """Lane blocks the kernel computes: the output's, and the sums' own if it has one."""
        return self.cout_blocks + (self.sums and self.spare_lane is None)

    @property
    def sums_lane(self) -> tuple[int, int]:
        """(block, lane) of a ``sums`` conv's window sums."""
        return (self.cout_blocks - 1, self.spare_lane) if self.spare_lane is not None else (self.cout_blocks, 0)

    @property
    def cin(self) -> int:
        return roundup(self.in_channels, DEPTH)

    @property
    def cout_blocks(self) -> int:
        return roundup(self.out_channels, LANES) // LANES

    @property
    def out_hw(self) -> tuple[int, int]:
        return tuple((self.in_hw[i] - self.kernel_hw[i]) // self.strides[i] + 1 for i in (0, 1))

    @property
    def input_shape(self) -> tuple[int, ...]:
        return (self.batch, *self.in_hw, self.cin)

    @property
    def weight_shape(self) -> tuple[int, ...]:
        return (self.weight_blocks, *self.kernel_hw, self.cin // DEPTH, LANES, DEPTH)

    @property
    def offsets_shape(self) -> tuple[int, ...]:
        return (self.batch, *self.out_hw)

    @property
    def output_shape(self) -> tuple[int, ...]:
        return (self.batch, *self.out_hw, self.cout_blocks, LANES)

    @property
    def vrmpy_count(self) -> int:
        """vrmpy instructions the conv executes (each 32 x 4 = 128 MACs)."""
        n, (oh, ow), (kh, kw) = self.batch, self.out_hw, self.kernel_hw
        return n * oh * ow * self.weight_blocks * kh * kw * (self.cin // DEPTH)

    def compute(self) -> tvm.tirx.PrimFunc:
        """``out = sum(x * Wp) + offsets`` with ``Wp = W + 128`` packed, as plain loops (``sums``:
        ``- 128 x`` the sums lane's value instead of the offsets, no offsets operand)."""
        x = te.placeholder(self.input_shape, "uint8", name="data")
        w = te.placeholder(self.weight_shape, "uint8", name="weight")
        offsets = te.placeholder(self.offsets_shape, "int32", name="offsets")
        kh = te.reduce_axis((0, self.kernel_hw[0]), name="kh")
        kw = te.reduce_axis((0, self.kernel_hw[1]), name="kw")
        c4 = te.reduce_axis((0, self.cin // DEPTH), name="c4")
        ci = te.reduce_axis((0, DEPTH), name="ci")
        sh, sw = self.strides
        conv = te.compute(
            (*self.output_shape[:3], self.weight_blocks, LANES),
            lambda n, h, w_, ko, co: te.sum(
                x[n, h * sh + kh, w_ * sw + kw, c4 * DEPTH + ci].astype("int32")
                * w[ko, kh, kw, c4, co, ci].astype("int32"),
                axis=[kh, kw, c4, ci],
            ),
            name="conv",
        )
        if self.sums:
            block, lane = self.sums_lane
            out = te.compute(self.output_shape, lambda n, h, w_, ko, co: conv[n, h, w_, ko, co]
                             + conv[n, h, w_, block, lane] * -WEIGHT_OFFSET, name="out")
            return aligned_prim_func([x, w, out])
        out = te.compute(self.output_shape, lambda n, h, w_, ko, co: conv[n, h, w_, ko, co] + offsets[n, h, w_],
                         name="out")
        return aligned_prim_func([x, w, offsets, out])

    def tagged(self, func: tvm.tirx.PrimFunc) -> tvm.tirx.PrimFunc:
        """``func`` (this conv's kernel) with the conv in its attributes (``of`` reads it back:
        the requantization pass fuses a kernel of one lane block, ``lanes_fused``)."""
        return with_fields(func, SPEC_ATTR, [self.batch, *self.in_hw, self.in_channels, self.out_channels,
                                             *self.kernel_hw, *self.strides, int(self.sums)])

    @staticmethod
    def of(func) -> "PackedConv | None":
        """The conv a kernel ``tagged`` carries, else None."""
        fields = fields_of(func, SPEC_ATTR)
        if fields is None:
            return None
        b, h, w, ci, co, kh, kw, sh, sw, sums = fields
        return PackedConv(b, (h, w), ci, co, (kh, kw), (sh, sw), bool(sums))

    @kernel_cache
    def hvx_kernel(self, pixels: int = 8) -> tvm.tirx.PrimFunc:
        """``compute()`` on ``vrmpy`` with the knob ``pixels``: ``schedule_vrmpy``'s blocks, or
        ``overlapping_vrmpy``'s where the row's width has no divisor near the knob; rows of at
        most ``FLAT_WIDTH`` pixels, ``lanes_flat``'s blocks of ``FLAT_PIXELS`` across rows."""
        from .lanes_flat import FLAT_PIXELS, FLAT_WIDTH, flat_vrmpy

        if self.out_hw[1] <= FLAT_WIDTH:
            return flat_vrmpy(self, min(FLAT_PIXELS, self.batch * self.out_hw[0] * self.out_hw[1]))
        block = overlapping_block(self.out_hw[1], pixels)
        if self.sums:
            return summing_vrmpy(self, block or block_pixels(self.out_hw[1], pixels))
        return schedule_vrmpy(self.compute(), pixels) if block is None else overlapping_vrmpy(self, block)

    @kernel_cache
    def window_offsets(self, hvx: bool = True) -> tvm.tirx.PrimFunc:
        """``offsets[n, oh, ow] = -128 x`` the sum of the input window (all channels) of each
        output pixel: the HVX kernel (``window_offsets``), or with ``hvx=False`` plain loops."""
        if hvx:
            return window_offsets(self.input_shape, self.kernel_hw, self.strides)
        x = te.placeholder(self.input_shape, "uint8", name="data")
        kh = te.reduce_axis((0, self.kernel_hw[0]), name="kh")
        kw = te.reduce_axis((0, self.kernel_hw[1]), name="kw")
        c = te.reduce_axis((0, self.cin), name="c")
        sh, sw = self.strides
        sums = te.compute(self.offsets_shape, lambda n, h, w_: te.sum(
            x[n, h * sh + kh, w_ * sw + kw, c].astype("int32"), axis=[kh, kw, c]), name="sums")
        offsets = te.compute(self.offsets_shape, lambda *i: sums(*i) * -WEIGHT_OFFSET, name="offsets")
        return te.create_prim_func([x, offsets])

    def pack_weight(self, weight_oihw: np.ndarray) -> np.ndarray:
        """OIHW int8 -> ``W + 128`` as uint8 ``[Co/32, kh, kw, Ci/4, 32, 4]``, zero-padded
        channels (128 once packed)."""
        o, c, kh, kw = weight_oihw.shape
        padded = np.zeros((self.weight_blocks * LANES, self.cin, kh, kw), np.int16)
        padded[:o, :c] = weight_oihw
        if self.sums:  # packed as 1: the window sums
            block, lane = self.sums_lane
            padded[block * LANES + lane] = 1 - WEIGHT_OFFSET
        packed = padded.reshape(self.weight_blocks, LANES, self.cin // DEPTH, DEPTH, kh, kw).transpose(0, 4, 5, 2, 1, 3)
        return np.ascontiguousarray(packed + WEIGHT_OFFSET).astype(np.uint8)

    def pack_input(self, x_nchw: np.ndarray, padding=(0, 0, 0, 0), pad_value: int = 0) -> np.ndarray:
        """NCHW uint8 -> padded NHWC with channels padded to 4."""
        t, l, b, r = padding
        n, c, h, w = x_nchw.shape
        out = np.full((n, h + t + b, w + l + r, self.cin), pad_value, np.uint8)
        out[:, t : t + h, l : l + w, :c] = x_nchw.transpose(0, 2, 3, 1)
        out[..., c:] = 0
        return out

    def unpack_output(self, y: np.ndarray) -> np.ndarray:
        """``[N, OH, OW, Co/32, 32]`` -> NCHW with the real output channels."""
        n, oh, ow = y.shape[:3]
        return y.reshape(n, oh, ow, -1)[..., : self.out_channels].transpose(0, 3, 1, 2)


def block_pixels(out_width: int, pixels: int) -> int:
    """Output columns a ``vrmpy`` block computes for the knob ``pixels``: a row of at most
    ``2 x pixels`` columns whole, else the largest divisor of the row up to ``pixels`` that
    leaves more than two blocks (``results/hexagon_pixels.jsonl``, 3x3 and 1x1 convs, rows of
    3-56 columns: whole rows of up to 16 columns and blocks of 7-8 ran 1.2-1.5x the ``vrmpy``
    ideal; two blocks a row ran 1.5-4x, LLVM unrolling their loop)."""
    if out_width <= 2 * pixels:
        return out_width
    fits = [d for d in range(1, pixels + 1) if out_width % d == 0 and out_width // d != 2]
    return max(fits)


def schedule_vrmpy(func: tvm.tirx.PrimFunc, pixels: int = 4) -> tvm.tirx.PrimFunc:
    """Tensorize ``PackedConv.compute()``'s (32 lanes x 4 channels) block with ``vrmpyub``.

    Knob for the tuner: output columns share each weight vector (their accumulators stay in
    registers, unrolled; ``block_pixels``); the offsets are added as the accumulators are
    written back.
    """
    sch = tvm.s_tir.Schedule(func)
    conv, out = sch.get_sblock("conv"), sch.get_sblock("out")
    n, h, w, ko, co, kh, kw, c4, ci = sch.get_loops(conv)
    wo, wi = sch.split(w, [None, block_pixels(int(sch.get(w).extent), pixels)])
    sch.reorder(n, h, ko, wo, kh, kw, c4, wi, co, ci)
    sch.set_scope(conv, 0, "local")
    sch.reverse_compute_at(out, wo)
    init = sch.decompose_reduction(conv, kh)
    sch.tensorize(co, VRMPY_LANES)
    sch.unroll(wi)
    sch.unroll(kw)
    for stage in (init, out):  # offsets / write back, 32 lanes at a time
        sch.vectorize(sch.get_loops(stage)[-1])
    return sch.mod["main"]



def overlapping_block(out_width: int, pixels: int) -> int | None:
    """The block of ``overlapping_vrmpy`` for rows that ``block_pixels`` can only cut into
    blocks under half of ``pixels`` (widths with no divisor near it: SqueezeNet's 47 and 23,
    prime, ran a pixel a block), else None. Half the knob: blocks of 4 measured best or within
    3% of it on 23 and 47 columns (3x3 on 16 and 12 channels, stride 2 on 4, 1x1 on 128);
    blocks of 6-8 ran up to 2.2x that on some (LLVM's unrolling)."""
    if out_width > 2 * pixels and 2 * block_pixels(out_width, pixels) < pixels:
        return max(pixels // 2, 1)
    return None


def overlapping_vrmpy(conv: PackedConv, block: int) -> tvm.tirx.PrimFunc:
    """``PackedConv.compute()`` as ``schedule_vrmpy`` schedules it, written out, with blocks of
    ``block`` output columns of which a row's last starts ``block`` before its end: it overlaps
    the one before (those columns computed twice, written twice alike), so any width takes
    the same block. The accumulators start at the pixel's offset."""
    n, (hi, wi), c4 = conv.batch, conv.in_hw, conv.cin // DEPTH
    (oh, ow), (kh, kw), kb = conv.out_hw, conv.kernel_hw, conv.cout_blocks
    blocks, last = -(-ow // block), ow - block

    @T.prim_func(s_tir=True)  # a root block, as relax's pattern analysis expects
    def overlapping(x_: T.Buffer(conv.input_shape, "uint8", align=128), w_: T.Buffer(conv.weight_shape, "uint8", align=128),
                    offsets: T.Buffer(conv.offsets_shape, "int32"), out_: T.Buffer(conv.output_shape, "int32", align=128)):
        T.func_attr({"tirx.noalias": True})
        with T.sblock("root"):
            x = T.decl_buffer((n * hi * wi * c4,), "int32", data=x_.data, align=128)  # a pixel's 4 channels, one word
            w = T.decl_buffer((kb * kh * kw * c4 * VECTOR_BYTES,), "uint8", data=w_.data, align=128)
            out = T.decl_buffer((n * oh * ow * kb * LANES,), "int32", data=out_.data, align=128)
            acc = T.sblock_alloc_buffer((block, LANES), "int32", scope="local")
            for b, y, ko, xb in T.grid(n, oh, kb, blocks):
                accumulate_block(acc, x, w, offsets, b, y, ko, T.min(xb * block, last), conv, block)
                for i in T.unroll(block):
                    out[T.ramp((((b * oh + y) * ow + T.min(xb * block, last) + i) * kb + ko) * LANES, 1, LANES)] = \
                        acc[i, T.ramp(0, 1, 32)]

    return overlapping


def summing_vrmpy(conv: PackedConv, block: int) -> tvm.tirx.PrimFunc:
    """``PackedConv.compute()`` of a ``sums`` conv: ``overlapping_vrmpy``'s blocks of ``block``
    output columns (a row's last overlapping the one before where ``block`` does not divide
    it), the sums' lane block first (the last, or one of its own, not stored): its lane holds
    the pixels' window sums, kept (times -128) for every block's write-back."""
    n, (hi, wi), c4 = conv.batch, conv.in_hw, conv.cin // DEPTH
    (oh, ow), (kh, kw), kb, wb = conv.out_hw, conv.kernel_hw, conv.cout_blocks, conv.weight_blocks
    (sums_block, lane), rest = conv.sums_lane, min(kb, conv.sums_lane[0])  # the output blocks left
    pairs = pairing(conv, block)
    blocks, last = -(-ow // block), ow - block

    @T.prim_func(s_tir=True)  # a root block, as relax's pattern analysis expects
    def summing(x_: T.Buffer(conv.input_shape, "uint8", align=128), w_: T.Buffer(conv.weight_shape, "uint8", align=128),
                out_: T.Buffer(conv.output_shape, "int32", align=128)):
        T.func_attr({"tirx.noalias": True})
        with T.sblock("root"):
            x = T.decl_buffer((n * hi * wi * c4,), "int32", data=x_.data, align=128)  # a pixel's 4 channels, one word
            w = T.decl_buffer((wb * kh * kw * c4 * VECTOR_BYTES,), "uint8", data=w_.data, align=128)
            out = T.decl_buffer((n * oh * ow * kb * LANES,), "int32", data=out_.data, align=128)
            acc = T.sblock_alloc_buffer((block, LANES), "int32", scope="local")
            sums = T.sblock_alloc_buffer((block, LANES), "int32", scope="local")
            for b, y, xb in T.grid(n, oh, blocks):
                accumulate_block(acc, x, w, None, b, y, sums_block, T.min(xb * block, last), conv, block, pairs)
                for i in T.unroll(block):  # the sums' lane in every lane, times -128
                    sums[i, T.ramp(0, 1, 32)] = T.Shuffle([acc[i, T.ramp(0, 1, 32)]], [lane] * LANES) * T.broadcast(
                        T.int32(-WEIGHT_OFFSET), LANES)
                if sums_block < kb:  # the last block's other lanes: outputs
                    for i in T.unroll(block):
                        out[T.ramp((((b * oh + y) * ow + T.min(xb * block, last) + i) * kb + kb - 1) * LANES, 1, LANES)] = \
                            acc[i, T.ramp(0, 1, 32)] + sums[i, T.ramp(0, 1, 32)]
                for ko in range(rest):
                    accumulate_block(acc, x, w, None, b, y, ko, T.min(xb * block, last), conv, block, pairs)
                    for i in T.unroll(block):
                        out[T.ramp((((b * oh + y) * ow + T.min(xb * block, last) + i) * kb + ko) * LANES, 1, LANES)] = \
                            acc[i, T.ramp(0, 1, 32)] + sums[i, T.ramp(0, 1, 32)]

    return summing
