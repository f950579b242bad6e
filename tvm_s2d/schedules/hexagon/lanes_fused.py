"""The channel-in-lanes conv with its requantization in the same kernel, for convs of one
32-lane output block (up to 32 output channels, or an S2D output of 2 x 16): uint8 in, uint8
(int8) out.

``PackedConv``'s kernel stores each output pixel's 32 int32 lanes and a second kernel
(``requantize.requantize_kernel``) reads them back: 4.3k packets for the stem's 48x24x32
accumulators after an 11.9k-packet conv. Here a block of output pixels of a row accumulates
in registers as ``overlapping_vrmpy``'s does, then each 4 pixels are requantized where they
are (``requantize_lanes``: the block's lane constants, loaded once) and narrowed to 128 bytes,
one store: with a single block of lanes, 4 pixels' channels are 128 contiguous bytes of NHWC.
"""

from __future__ import annotations

import tvm
from tvm import te
from tvm.script import tirx as T

from .intrinsics import DEPTH, LANES, VECTOR_BYTES, aligned_prim_func
from .lanes import PackedConv, block_pixels
from .lanes_accumulate import accumulate_block
from .requantize import _int64_requantize, pack_bytes, requantize_lanes
from ..memo import kernel_cache

#: Output pixels a block (a multiple of 4: each 4 are one 128-byte store).
BLOCK = 8


def lanes_fusable(conv: PackedConv) -> bool:
    """Whether ``lanes_requantized`` takes ``conv``: one block of 32 lanes, rows of 4 pixels or more."""
    return conv.cout_blocks == 1 and conv.out_hw[1] >= 4


@kernel_cache
def lanes_requantized(conv: PackedConv, zy: int, lo: int, hi: int, dtype: str, pre_shift: bool = True,
                      hvx_code: bool = True, average: bool = False) -> tvm.tirx.PrimFunc:
    """``(x, packed weights, offsets, bias, mult, shift, half, pre [32]) -> dtype [N, OH, OW, 32]``:
    ``conv.compute()`` requantized by ``lane_constants`` of 32 lanes (``pre_shift=False``: every
    headroom shift is 0; ``average``: ``requantize_lanes``'s). Blocks of ``BLOCK`` (or 4) pixels, a row's last overlapping the one
    before (those pixels computed twice, stored twice alike). ``hvx_code=False``: plain loops."""
    if not lanes_fusable(conv):
        raise ValueError("lanes_requantized takes convs of one 32-lane output block and rows of 4 pixels or more")
    n, (hi_, wi), c4 = conv.batch, conv.in_hw, conv.cin // DEPTH
    (oh, ow), (kh, kw) = conv.out_hw, conv.kernel_hw
    out_shape = (n, oh, ow, LANES)
    if not hvx_code:
        return _plain(conv, out_shape, zy, lo, hi, dtype)
    block = block_pixels(ow, BLOCK)  # the unfused kernel's block where it is whole 4-pixel stores
    if block % 4:
        block = BLOCK if ow >= BLOCK else 4
    blocks, last = -(-ow // block), ow - block if ow % block else ow  # (no overlap: the min folds away)

    @T.prim_func(s_tir=True)  # a root block, as relax's pattern analysis expects
    def fused(x_: T.Buffer(conv.input_shape, "uint8", align=128), w_: T.Buffer(conv.weight_shape, "uint8", align=128),
              offsets: T.Buffer(conv.offsets_shape, "int32"), bias: T.Buffer((LANES,), "int32", align=128),
              mult: T.Buffer((LANES,), "int32", align=128), shift: T.Buffer((LANES,), "int32", align=128),
              half: T.Buffer((LANES,), "int32", align=128), pre: T.Buffer((LANES,), "int32", align=128),
              out_: T.Buffer(out_shape, dtype)):
        T.func_attr({"tirx.noalias": True})
        with T.sblock("root"):
            x = T.decl_buffer((n * hi_ * wi * c4,), "int32", data=x_.data, align=128)  # a pixel's 4 channels, one word
            w = T.decl_buffer((kh * kw * c4 * VECTOR_BYTES,), "uint8", data=w_.data, align=128)
            out = T.decl_buffer((n * oh * ow * LANES,), dtype, data=out_.data)
            acc = T.sblock_alloc_buffer((block, LANES), "int32", scope="local")
            for b, y, xb in T.grid(n, oh, blocks):
                accumulate_block(acc, x, w, offsets, b, y, 0, T.min(xb * block, last), conv, block)
                for q in T.unroll(block // 4):
                    out[T.ramp(((b * oh + y) * ow + T.min(xb * block, last) + 4 * q) * LANES, 1, 128)] = pack_bytes(
                        [requantize_lanes(acc[4 * q + j, T.ramp(0, 1, 32)], (bias, mult, shift, half, pre), 0, zy,
                                          pre_shift, average) for j in range(4)], lo, hi, dtype)

    return fused


def _plain(conv: PackedConv, out_shape, zy: int, lo: int, hi: int, dtype: str) -> tvm.tirx.PrimFunc:
    """The same integers as plain loops (the CPU reference)."""
    x = te.placeholder(conv.input_shape, "uint8", name="data")
    w = te.placeholder(conv.weight_shape, "uint8", name="weight")
    offsets = te.placeholder(conv.offsets_shape, "int32", name="offsets")
    bias, mult, shift, half, pre = (te.placeholder((LANES,), "int32", name=v) for v in ("bias", "mult", "shift", "half", "pre"))
    kh = te.reduce_axis((0, conv.kernel_hw[0]), name="kh")
    kw = te.reduce_axis((0, conv.kernel_hw[1]), name="kw")
    c = te.reduce_axis((0, conv.cin), name="c")
    sh, sw = conv.strides
    acc = te.compute(out_shape, lambda b, y, x_, co: te.sum(
        x[b, y * sh + kh, x_ * sw + kw, c].astype("int32") * w[0, kh, kw, c // DEPTH, co, c % DEPTH].astype("int32"),
        axis=[kh, kw, c]), name="conv")
    out = te.compute(out_shape, lambda b, y, x_, co: _int64_requantize(
        acc[b, y, x_, co] + offsets[b, y, x_], bias[co], mult[co], shift[co], pre[co], zy, lo, hi, dtype), name="requantize")
    return aligned_prim_func([x, w, offsets, bias, mult, shift, half, pre, out])
