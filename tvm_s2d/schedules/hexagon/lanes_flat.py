"""The channel-in-lanes conv over output pixels in flat order, for maps of short rows.

``overlapping_vrmpy`` and ``summing_vrmpy`` take an output row a block: on a 3x3 map a weight
vector serves 3 pixels and is loaded again for each row, and the conv is load-bound (a vector
and a pixel's word for each ``vrmpy``; MnasNet's 3x3x576 -> 96 ran 2.0x the ``vrmpy`` ideal).
NHWC output pixels are one stream: here a block of ``pixels`` of them, across rows, a lane
block at a time (``accumulate_pixels``), so a weight vector serves the block. The last block
starts a block before the end (its pixels computed twice, stored alike). The output, offsets and ``sums`` are ``PackedConv.compute()``'s.

Measured (``vrmpy`` ideal in brackets): 3x3 maps, a block of the 9 pixels and one lane block
at a time, 0.75-0.81x the row blocks' packets (576 -> 96 3869 -> 3053 [2592], 96 -> 576 3377 ->
2693, 576 -> 160 5959 -> 4539, 160 -> 1280 11264 -> 8946 [7380], 3x3 256 -> 256 29693 -> 23474);
2x2 maps 0.78x; 2-4 lane blocks accumulated together (a pixel's word loaded once for them) no
better, blocks overlapping more (8 of 9) 1.3-1.6x;
4x4 and 6x6 maps 0.9-1.2x (rows of 4-6 already share a weight vector): not taken there.
"""

from __future__ import annotations

import tvm
from tvm.script import tirx as T

from .intrinsics import DEPTH, LANES, hvx
from .lanes_accumulate import vrmpy_acc, weight_vector
from .offsets import WEIGHT_OFFSET

#: Rows of at most this many output pixels take ``flat_vrmpy``, in blocks of ``FLAT_PIXELS``.
FLAT_WIDTH, FLAT_PIXELS = 3, 9


@T.macro
def accumulate_pixels(acc, x, w, init, s, k, conv, pixels: int):
    """``acc[i]`` = ``init[i]`` plus the ``vrmpyub`` sums of lane block ``k`` for output pixel
    ``s + i`` (flat NHWC order): ``x`` the input as words (a pixel's 4 channels), ``w`` the
    packed weights as bytes."""
    for i in T.unroll(pixels):
        acc[i, T.ramp(0, 1, 32)] = init[i, T.ramp(0, 1, 32)]
    for ky in range(conv.kernel_hw[0]):
        for kx in T.unroll(conv.kernel_hw[1]):
            for g in range(conv.cin // DEPTH):
                for i in T.unroll(pixels):
                    acc[i, T.ramp(0, 1, 32)] = vrmpy_acc(
                        acc, i, weight_vector(w, conv, k, ky, kx, g),
                        x[((((s + i) // (conv.out_hw[0] * conv.out_hw[1]) * conv.in_hw[0]
                             + (s + i) // conv.out_hw[1] % conv.out_hw[0] * conv.strides[0] + ky) * conv.in_hw[1]
                            + (s + i) % conv.out_hw[1] * conv.strides[1] + kx) * (conv.cin // DEPTH) + g)])


@T.macro
def start_at_offsets(starts, offsets, s, conv, pixels: int):
    """Each pixel's accumulators' start: its offset."""
    for i in T.unroll(pixels):
        starts[i, T.ramp(0, 1, 32)] = T.broadcast(offsets[(s + i) // (conv.out_hw[0] * conv.out_hw[1]),
                                                          (s + i) // conv.out_hw[1] % conv.out_hw[0], (s + i) % conv.out_hw[1]],
                                                  LANES)


@T.macro
def start_at_zero(starts, pixels: int):
    """Each pixel's accumulators' start: 0, splat by HVX (LLVM would merge stores of a constant 0
    into a ``memset`` of the accumulators, which then stay in memory)."""
    for i in T.unroll(pixels):
        starts[i, T.ramp(0, 1, 32)] = hvx("lvsplatw", T.int32(0))


@T.macro
def blocks_from(out, acc, x, w, starts, s, conv, blocks: int, pixels: int):
    """Lane blocks ``0 ... blocks - 1`` of pixels ``s ...``, one at a time from ``starts``, stored."""
    for k in range(blocks):
        accumulate_pixels(acc, x, w, starts, s, k, conv, pixels)
        for i in T.unroll(pixels):
            out[T.ramp(((s + i) * conv.cout_blocks + k) * LANES, 1, LANES)] = acc[i, T.ramp(0, 1, 32)]


def flat_vrmpy(conv, pixels: int) -> tvm.tirx.PrimFunc:
    """``PackedConv.compute()`` of ``conv`` (a ``lanes.PackedConv``, which calls this: not
    imported here) in blocks of ``pixels`` flat output pixels, a lane block at a time (a ``sums``
    conv: its sums' block first, its lane then every pixel's start)."""
    n, (oh, ow), cb = conv.batch, conv.out_hw, conv.cout_blocks
    total = n * oh * ow
    if total < pixels:
        raise ValueError(f"flat_vrmpy: {total} output pixels, under a block of {pixels}")
    blocks, last = -(-total // pixels), total - pixels
    (sums_block, lane), rest = conv.sums_lane if conv.sums else (0, 0), min(cb, conv.sums_lane[0]) if conv.sums else cb
    x_words = n * conv.in_hw[0] * conv.in_hw[1] * conv.cin // DEPTH
    w_bytes = conv.weight_blocks * conv.kernel_hw[0] * conv.kernel_hw[1] * conv.cin * LANES

    @T.prim_func(s_tir=True)  # a root block, as relax's pattern analysis expects
    def with_offsets(x_: T.Buffer(conv.input_shape, "uint8", align=128), w_: T.Buffer(conv.weight_shape, "uint8", align=128),
                     offsets: T.Buffer(conv.offsets_shape, "int32"), out_: T.Buffer(conv.output_shape, "int32", align=128)):
        T.func_attr({"tirx.noalias": True})
        with T.sblock("root"):
            x = T.decl_buffer((x_words,), "int32", data=x_.data, align=128)  # a pixel's 4 channels, one word
            w = T.decl_buffer((w_bytes,), "uint8", data=w_.data, align=128)
            out = T.decl_buffer((total * cb * LANES,), "int32", data=out_.data, align=128)
            acc = T.sblock_alloc_buffer((pixels, LANES), "int32", scope="local")
            starts = T.sblock_alloc_buffer((pixels, LANES), "int32", scope="local")
            for xb in range(blocks):
                start_at_offsets(starts, offsets, T.min(xb * pixels, last), conv, pixels)
                blocks_from(out, acc, x, w, starts, T.min(xb * pixels, last), conv, rest, pixels)

    @T.prim_func(s_tir=True)  # a root block, as relax's pattern analysis expects
    def summing(x_: T.Buffer(conv.input_shape, "uint8", align=128), w_: T.Buffer(conv.weight_shape, "uint8", align=128),
                out_: T.Buffer(conv.output_shape, "int32", align=128)):
        T.func_attr({"tirx.noalias": True})
        with T.sblock("root"):
            x = T.decl_buffer((x_words,), "int32", data=x_.data, align=128)  # a pixel's 4 channels, one word
            w = T.decl_buffer((w_bytes,), "uint8", data=w_.data, align=128)
            out = T.decl_buffer((total * cb * LANES,), "int32", data=out_.data, align=128)
            acc = T.sblock_alloc_buffer((pixels, LANES), "int32", scope="local")
            starts = T.sblock_alloc_buffer((pixels, LANES), "int32", scope="local")
            for xb in range(blocks):
                start_at_zero(starts, pixels)
                accumulate_pixels(acc, x, w, starts, T.min(xb * pixels, last), sums_block, conv, pixels)
                for i in T.unroll(pixels):  # the sums' lane in every lane, times -128: every block's start
                    starts[i, T.ramp(0, 1, 32)] = T.Shuffle([acc[i, T.ramp(0, 1, 32)]], [lane] * LANES) * T.broadcast(
                        T.int32(-WEIGHT_OFFSET), LANES)
                if sums_block < cb:  # the last block's other lanes: outputs
                    for i in T.unroll(pixels):
                        out[T.ramp(((T.min(xb * pixels, last) + i) * cb + cb - 1) * LANES, 1, LANES)] = \
                            acc[i, T.ramp(0, 1, 32)] + starts[i, T.ramp(0, 1, 32)]
                blocks_from(out, acc, x, w, starts, T.min(xb * pixels, last), conv, rest, pixels)

    return summing if conv.sums else with_offsets
