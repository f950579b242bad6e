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
corrected by ``-128 x`` the sum of its input window (``window_offsets``, a second kernel:
channel sums by ``vrmpy`` with ones and a tree of ``vdeal`` + add, then vectorized box sums).
int32 arithmetic wraps, so the result is exact whenever the conv's own result fits int32.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import tvm
from tvm import te
from tvm.script import tirx as T

from .intrinsics import DEPTH, LANES, VECTOR_BYTES, VRMPY_LANES, aligned_prim_func, deal, hvx, roundup
from .width import channel_groups_apply

WEIGHT_OFFSET = 128  # packed weights are W + 128 (uint8)


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
        return (self.cout_blocks, *self.kernel_hw, self.cin // DEPTH, LANES, DEPTH)

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
        return n * oh * ow * self.cout_blocks * kh * kw * (self.cin // DEPTH)

    def compute(self) -> tvm.tirx.PrimFunc:
        """``out = sum(x * Wp) + offsets`` with ``Wp = W + 128`` packed, as plain loops."""
        x = te.placeholder(self.input_shape, "uint8", name="data")
        w = te.placeholder(self.weight_shape, "uint8", name="weight")
        offsets = te.placeholder(self.offsets_shape, "int32", name="offsets")
        kh = te.reduce_axis((0, self.kernel_hw[0]), name="kh")
        kw = te.reduce_axis((0, self.kernel_hw[1]), name="kw")
        c4 = te.reduce_axis((0, self.cin // DEPTH), name="c4")
        ci = te.reduce_axis((0, DEPTH), name="ci")
        sh, sw = self.strides
        conv = te.compute(
            self.output_shape,
            lambda n, h, w_, ko, co: te.sum(
                x[n, h * sh + kh, w_ * sw + kw, c4 * DEPTH + ci].astype("int32")
                * w[ko, kh, kw, c4, co, ci].astype("int32"),
                axis=[kh, kw, c4, ci],
            ),
            name="conv",
        )
        out = te.compute(self.output_shape, lambda n, h, w_, ko, co: conv[n, h, w_, ko, co] + offsets[n, h, w_],
                         name="out")
        return aligned_prim_func([x, w, offsets, out])

    def hvx_kernel(self, pixels: int = 8) -> tvm.tirx.PrimFunc:
        """``compute()`` on ``vrmpy`` with the knob ``pixels``: ``schedule_vrmpy``'s blocks, or
        ``overlapping_vrmpy``'s where the row's width has no divisor near the knob."""
        block = overlapping_block(self.out_hw[1], pixels)
        return schedule_vrmpy(self.compute(), pixels) if block is None else overlapping_vrmpy(self, block)

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
        padded = np.zeros((self.cout_blocks * LANES, self.cin, kh, kw), np.int16)
        padded[:o, :c] = weight_oihw
        packed = padded.reshape(self.cout_blocks, LANES, self.cin // DEPTH, DEPTH, kh, kw).transpose(0, 4, 5, 2, 1, 3)
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
    (oh, ow), (kh, kw), (sh, sw), kb = conv.out_hw, conv.kernel_hw, conv.strides, conv.cout_blocks
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
                for i in T.unroll(block):
                    acc[i, T.ramp(0, 1, 32)] = T.broadcast(offsets[b, y, T.min(xb * block, last) + i], LANES)
                for ky in range(kh):
                    for kx in T.unroll(kw):
                        for g in range(c4):
                            for i in T.unroll(block):
                                acc[i, T.ramp(0, 1, 32)] = hvx(
                                    "vrmpyub.acc", acc[i, T.ramp(0, 1, 32)],
                                    T.reinterpret(w.vload([(((ko * kh + ky) * kw + kx) * c4 + g) * VECTOR_BYTES], "uint8x128"),
                                                  dtype="int32x32"),
                                    x[((b * hi + y * sh + ky) * wi + (T.min(xb * block, last) + i) * sw + kx) * c4 + g])
                for i in T.unroll(block):
                    out[T.ramp((((b * oh + y) * ow + T.min(xb * block, last) + i) * kb + ko) * LANES, 1, LANES)] = \
                        acc[i, T.ramp(0, 1, 32)]

    return overlapping

def _vector(flat, offset):
    """The 128 bytes of ``flat`` at ``offset`` as 32 words (an aligned load)."""
    return T.reinterpret(flat.vload([offset], "uint8x128"), dtype="int32x32")


@T.macro
def _halve(parts, count):
    """parts[k] = pairwise sums of the words of parts[2k] ++ parts[2k+1], k < count (``vdeal``
    of words splits even and odd words; the order of the pixels is kept)."""
    for k in T.unroll(count):
        pair = deal(parts[2 * k + 1, T.ramp(0, 1, 32)], parts[2 * k, T.ramp(0, 1, 32)], 4)
        parts[k, T.ramp(0, 1, 32)] = hvx("lo", pair) + hvx("hi", pair)


def window_offsets(shape_nhwc, kernel_hw, strides) -> tvm.tirx.PrimFunc:
    """NHWC uint8 ``[N, H, W, C]`` (C a multiple of 4) -> int32 ``[N, OH, OW]``: ``-128 x`` the
    sum of each output pixel's ``kernel_hw`` window over all channels.

    Channel sums, 32 pixels at a time: ``vrmpy`` with ones sums 4 bytes per word (a pixel of
    C > 128 channels, a multiple of 128, accumulates its C / 128 vectors into one), then
    ``log2`` of the words a pixel has left rounds of ``vdeal`` + add sum them (C / 4 a power of
    two up to 32, or C a multiple of 128). The last pixels of such C: a pixel's vectors by
    ``vrmpy``, then its 32 words; the last pixels of other powers of two, a plain loop. Other
    C: the words of all pixels by ``vrmpy`` (C / 4 bytes of a pixel are whole words), then
    each pixel's C / 4 words. Box sums: 32 output columns per vector, one unaligned load and
    add per tap; stride 2 sums 64 positions and keeps the even ones (``vdeal``); a row's last
    vector overlaps the one before, rows under 32 columns run over into the next row (written
    after) and the last such row goes through a copy of its lanes. Stride 3 and over: strided
    lanes, which LLVM gathers a word at a time."""
    n, h, w, c = shape_nhwc
    words = c // DEPTH
    whole = c % VECTOR_BYTES == 0  # a pixel is whole vectors
    spans = max(1, c // VECTOR_BYTES)  # vectors a pixel spans, 1 for C <= 128
    parts_count = min(words, LANES)  # vectors of words left to halve, per group
    rounds = parts_count.bit_length() - 1
    pixels = n * h * w
    halving = channel_groups_apply(c) or whole
    groups = pixels // LANES if halving else 0
    tail = groups * LANES
    vectors = 0 if halving else pixels * c // VECTOR_BYTES  # other C: the words of all pixels by vrmpy
    kh, kw = kernel_hw
    sh, sw = strides
    oh, ow = (h - kh) // sh + 1, (w - kw) // sw + 1
    ones = 0x01010101
    boxed = sw in (1, 2)  # box sums by vectors (other strides: strided lanes)
    vectors_out = -(-ow // LANES)
    last = max(ow - LANES, 0)  # the last vector of a row overlaps the one before; rows under 32 run over
    slack = LANES * sw + kw  # the loads of the last vector read past the last pixel's sum

    @T.prim_func(s_tir=True)  # a root block, as relax's pattern analysis expects
    def offsets(a: T.Buffer((n, h, w, c), "uint8", align=128), out: T.Buffer((n, oh, ow), "int32")):
        T.func_attr({"tirx.noalias": True})
        with T.sblock("root"):
            flat = T.decl_buffer((pixels * c,), "uint8", data=a.data, align=128)
            sums = T.sblock_alloc_buffer((pixels + slack,), "int32", align=128)
            flat_out = T.decl_buffer((n * oh * ow,), "int32", data=out.data)
            parts = T.sblock_alloc_buffer((parts_count, LANES), "int32", scope="local")
            acc = T.sblock_alloc_buffer((LANES,), "int32", scope="local")
            taps = T.sblock_alloc_buffer((sw, LANES), "int32", scope="local")
            words_of = T.sblock_alloc_buffer((LANES,), "int32", align=128)
            words_all = T.sblock_alloc_buffer((1 if halving else roundup(pixels * words, LANES),), "int32", align=128)
            for v in range(vectors):
                words_all[T.ramp(v * LANES, 1, LANES)] = hvx("vrmpyub", _vector(flat, v * VECTOR_BYTES), ones)
            for e in range(vectors * LANES, 0 if halving else pixels * words):
                words_all[e] = (T.Cast("int32", flat[e * 4]) + T.Cast("int32", flat[e * 4 + 1])
                                + T.Cast("int32", flat[e * 4 + 2]) + T.Cast("int32", flat[e * 4 + 3]))
            for g in range(groups):
                for v in T.unroll(parts_count):
                    parts[v, T.ramp(0, 1, 32)] = hvx("vrmpyub", _vector(flat, g * LANES * c + v * spans * 128), ones)
                    for j in T.unroll(spans - 1):
                        parts[v, T.ramp(0, 1, 32)] = hvx("vrmpyub.acc", parts[v, T.ramp(0, 1, 32)],
                                                         _vector(flat, g * LANES * c + (v * spans + j + 1) * 128), ones)
                if rounds >= 1:
                    _halve(parts, parts_count // 2)
                if rounds >= 2:
                    _halve(parts, parts_count // 4)
                if rounds >= 3:
                    _halve(parts, parts_count // 8)
                if rounds >= 4:
                    _halve(parts, parts_count // 16)
                if rounds >= 5:
                    _halve(parts, parts_count // 32)
                sums[T.ramp(g * LANES, 1, LANES)] = parts[0, T.ramp(0, 1, 32)]
            for p in range(tail, pixels):
                sums[p] = 0
                if whole:  # the pixel's vectors into 32 words, then the words
                    acc[T.ramp(0, 1, 32)] = hvx("vrmpyub", _vector(flat, p * c), ones)
                    for j in range(spans - 1):
                        acc[T.ramp(0, 1, 32)] = hvx("vrmpyub.acc", acc[T.ramp(0, 1, 32)], _vector(flat, p * c + (j + 1) * 128),
                                                    ones)
                    words_of[T.ramp(0, 1, 32)] = acc[T.ramp(0, 1, 32)]
                    for j in range(LANES):
                        sums[p] = sums[p] + words_of[j]
                elif halving:
                    for j in range(c):
                        sums[p] = sums[p] + T.Cast("int32", flat[p * c + j])
                else:
                    for j in range(words):
                        sums[p] = sums[p] + words_all[p * words + j]
            if boxed:  # 32 outputs a vector: taps by unaligned loads; stride 2 keeps the even lanes
                for b, y in T.grid(n, oh):
                    for xv in range(vectors_out):
                        for half in T.unroll(sw):  # stride 2: the columns of 64 positions, then the even ones
                            taps[half, T.ramp(0, 1, 32)] = T.broadcast(T.int32(0), LANES)
                            for i in T.unroll(kh):
                                for j in T.unroll(kw):
                                    taps[half, T.ramp(0, 1, 32)] = taps[half, T.ramp(0, 1, 32)] + sums[T.ramp(
                                        (b * h + y * sh + i) * w + T.min(xv * LANES, last) * sw + half * LANES + j, 1,
                                        LANES)]
                        if sw == 1:
                            acc[T.ramp(0, 1, 32)] = taps[0, T.ramp(0, 1, 32)] * -WEIGHT_OFFSET
                        else:
                            acc[T.ramp(0, 1, 32)] = hvx("lo", deal(taps[1, T.ramp(0, 1, 32)], taps[0, T.ramp(0, 1, 32)],
                                                                   4)) * -WEIGHT_OFFSET
                        if (b * oh + y) * ow + T.min(xv * LANES, last) + LANES <= n * oh * ow:
                            flat_out[T.ramp((b * oh + y) * ow + T.min(xv * LANES, last), 1, LANES)] = acc[T.ramp(0, 1, 32)]
                        else:  # the last row when it is narrower than a vector: its own lanes
                            words_of[T.ramp(0, 1, 32)] = acc[T.ramp(0, 1, 32)]
                            for xi in range(ow):
                                flat_out[(b * oh + y) * ow + xi] = words_of[xi]
            else:
                for b, y in T.grid(n, oh):
                    for xv in range(ow // LANES):
                        for xi in T.vectorized(LANES):
                            acc[xi] = 0
                        for i in T.unroll(kh):
                            for j in T.unroll(kw):
                                for xi in T.vectorized(LANES):
                                    acc[xi] = acc[xi] + sums[(b * h + y * sh + i) * w + (xv * LANES + xi) * sw + j]
                        for xi in T.vectorized(LANES):
                            out[b, y, xv * LANES + xi] = acc[xi] * -WEIGHT_OFFSET
                    for x in range(ow // LANES * LANES, ow):
                        out[b, y, x] = 0
                        for i, j in T.grid(kh, kw):
                            out[b, y, x] = out[b, y, x] - sums[(b * h + y * sh + i) * w + x * sw + j] * WEIGHT_OFFSET

    return offsets
