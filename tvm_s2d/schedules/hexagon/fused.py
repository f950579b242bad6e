"""The width-vectorized conv with its requantization in the same kernel: uint8 in, uint8 out.

``WidthConv`` accumulates 32 output columns of a few output channels in registers and stores
them int32; a second kernel (``requantize.requantize_transpose_kernel``) reads them back.
Here, for convs of 4, 8 or 16 output channels, all of them accumulate at once (one
activation vector feeds a ``vrmpy`` per output channel), and the block's accumulators are
requantized where they are (``requantize.requantize_vector``, the channel's constants as
scalars), packed four channels a word and turned pixel-major by ``vshuff`` rounds: 32 pixels
of NHWC uint8 per block, the int32 accumulators never stored (as deployed HVX libraries do).
For 4 output channels, and 8 with many weights, two output rows take each weight word
(``PAIRED_WORDS``: the weights read once for 64 pixels, not 32): the seed layer's conv 68.8k
-> 58.4k packets.
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import te
from tvm.script import tirx as T

from .intrinsics import LANES, aligned_prim_func, hvx
from .layouts import shuffle_rounds
from .requantize import _int64_requantize, pack_words, requantize_vector

#: Output channel counts the fused kernel takes (accumulators in registers, ``vshuff`` rounds).
FUSED_CHANNELS = (4, 8, 16)
#: Output channels -> the fewest weight words (``kh * kw * C/4 * Co``) at which two output rows share
#: each weight word (the accumulators of both in registers), as measured (session 19, conv packets
#: paired / not): 3x3 4 -> 4 0.79, 1x1 8 -> 4 0.98; 3x3 8 -> 8 0.85 (144 words), 16 -> 8 0.89
#: (288), but 3x3 4 -> 8 1.19 (72) and 1x1 8-32 -> 8 1.05-1.23 (16-64 words): where the weights
#: are few, reading them again costs less than the second row's registers.
PAIRED_WORDS = {4: 0, 8: 144}


@T.macro
def _accumulate(acc, x, w, b, r, v, ky, kx, c4, co, rows):
    """Slot ``(ky, kx, c4)`` into the accumulators of ``rows`` output rows from ``r``: a weight
    word for every row, an activation vector for every output channel."""
    for o in T.unroll(co):
        for j in T.unroll(rows):
            acc[j * co + o, T.ramp(0, 1, 32)] = hvx("vrmpybus.acc", acc[j * co + o, T.ramp(0, 1, 32)],
                                                    x.vload([b, c4, r + j + ky, v * 32 + kx], "int32x32"),
                                                    w[ky, kx, c4, o])


def width_conv_requantized(input_shape, weight_shape, out_w: int, zy: int, lo: int, hi: int, dtype: str,
                           hvx_code: bool = True) -> tvm.tirx.PrimFunc:
    """``(x [N, C/4, Hp, Wp, 4] uint8, w [kh, kw, C/4, Co, 4] int8, bias, mult, shift, half, pre
    [Co]) -> dtype [N, OH, out_w, Co]``: ``WidthConv`` on its input layout (weights
    ``fused_weight``: a tap's output channels side by side, read two a load), then the
    requantization of ``requantize_transpose_kernel`` (``out_w`` at most the conv's output
    width ``Wp - kw + 1`` cut to whole vectors: ``WidthConv`` pads its rows to them);
    ``hvx_code=False``: plain loops."""
    n, groups_in, hp, wp, depth = (int(d) for d in input_shape)
    kh, kw, _, co = (int(d) for d in weight_shape[:4])
    oh, owp = hp - kh + 1, (wp - kw + 1) // LANES * LANES  # rows padded to whole vectors (``WidthConv``)
    out_shape = (n, oh, out_w, co)
    if not hvx_code:
        return _plain(input_shape, weight_shape, out_shape, zy, lo, hi, dtype)
    if co not in FUSED_CHANNELS or owp < out_w:
        raise ValueError(f"width_conv_requantized takes {FUSED_CHANNELS} output channels, not {co}")
    groups = co // 4
    rounds = groups.bit_length() - 1
    blocks, full = owp // LANES, out_w // LANES
    rows = 2 if co in PAIRED_WORDS and kh * kw * groups_in * co >= PAIRED_WORDS[co] and oh >= 2 else 1
    steps = -(-oh // rows)

    def first(s):
        """The first output row of step ``s``: the last step's rows end at the last row (one row twice)."""
        return T.min(s * rows, oh - rows) if rows > 1 else s

    def word(b, s, j, v):
        """The first output word of block ``v`` of step ``s``'s row ``j``."""
        return ((b * oh + first(s) + j) * out_w + v * 32) * groups

    @T.prim_func(s_tir=True)  # a root block, as relax's pattern analysis expects
    def fused(x_: T.Buffer(input_shape, "uint8"), w_: T.Buffer(weight_shape, "int8"), bias: T.Buffer((co,), "int32"),
              mult: T.Buffer((co,), "int32"), shift: T.Buffer((co,), "int32"), half: T.Buffer((co,), "int32"),
              pre: T.Buffer((co,), "int32"), out: T.Buffer(out_shape, dtype)):
        T.func_attr({"tirx.noalias": True})
        with T.sblock("root"):
            x = T.decl_buffer((n, groups_in, hp, wp), "int32", data=x_.data)  # a pixel's 4 channels, one word
            w = T.decl_buffer((kh, kw, groups_in, co), "int32", data=w_.data)
            words = T.decl_buffer((n * oh * out_w * groups,), "int32", data=out.data)
            acc = T.sblock_alloc_buffer((rows * co, LANES), "int32", scope="local")
            even = T.sblock_alloc_buffer((groups, LANES), "int32", scope="local")
            odd = T.sblock_alloc_buffer((groups, LANES), "int32", scope="local")
            for b, s, v in T.grid(n, steps, blocks):
                for o in T.unroll(rows * co):
                    acc[o, T.ramp(0, 1, 32)] = T.broadcast(0, 32)
                for ky in T.unroll(kh):
                    for c4 in T.unroll(groups_in):
                        for kx in T.unroll(kw):
                            _accumulate(acc, x, w, b, first(s), v, ky, kx, c4, co, rows)
                for j in T.unroll(rows):
                    for g in T.unroll(groups):
                        even[g, T.ramp(0, 1, 32)] = pack_words(
                            [requantize_vector(acc[j * co + 4 * g + i, T.ramp(0, 1, 32)], bias, mult, shift, half, pre,
                                               4 * g + i, zy, lo, hi, clamp=False) for i in range(4)], lo, hi, dtype)
                    shuffle_rounds(even, odd, groups // 2, rounds)
                    if v < full:
                        for g in T.unroll(groups):
                            if rounds % 2 == 1:
                                words[T.ramp(word(b, s, j, v) + g * 32, 1, 32)] = odd[g, T.ramp(0, 1, 32)]
                            else:
                                words[T.ramp(word(b, s, j, v) + g * 32, 1, 32)] = even[g, T.ramp(0, 1, 32)]
                    else:  # the last, partial block: its words one by one (pixel-major after the rounds)
                        for p, g in T.grid(T.max(out_w - v * 32, 0), groups):
                            if rounds % 2 == 1:
                                words[word(b, s, j, v) + p * groups + g] = odd[(p * groups + g) // 32, (p * groups + g) % 32]
                            else:
                                words[word(b, s, j, v) + p * groups + g] = even[(p * groups + g) // 32, (p * groups + g) % 32]

    return fused


def _plain(input_shape, weight_shape, out_shape, zy, lo, hi, dtype) -> tvm.tirx.PrimFunc:
    """The same integers as plain loops (the CPU reference)."""
    x = te.placeholder(tuple(int(d) for d in input_shape), "uint8", name="x")
    w = te.placeholder(tuple(int(d) for d in weight_shape), "int8", name="w")
    kh, kw, groups_in, co, _ = (int(d) for d in weight_shape)
    bias, mult, shift, half, pre = (te.placeholder((co,), "int32", name=v) for v in ("bias", "mult", "shift", "half", "pre"))
    ky, kx = te.reduce_axis((0, kh), name="ky"), te.reduce_axis((0, kw), name="kx")
    c4, ci = te.reduce_axis((0, groups_in), name="c4"), te.reduce_axis((0, 4), name="ci")
    conv = te.compute(out_shape, lambda b, r, p, o: te.sum(
        x[b, c4, r + ky, p + kx, ci].astype("int32") * w[ky, kx, c4, o, ci].astype("int32"), axis=[ky, kx, c4, ci]),
        name="conv")
    out = te.compute(out_shape, lambda b, r, p, o: _int64_requantize(conv[b, r, p, o], bias[o], mult[o], shift[o], pre[o],
                                                                     zy, lo, hi, dtype), name="requantize")
    return aligned_prim_func([x, w, bias, mult, shift, half, pre, out])


def fused_weight(width_weight: np.ndarray) -> np.ndarray:
    """``WidthConv``'s packed weights ``[Co, kh, kw, C/4, 4]`` as the fused kernel reads them."""
    return np.ascontiguousarray(width_weight.transpose(1, 2, 3, 0, 4))


def fused_reference(x: np.ndarray, w: np.ndarray, out_w: int) -> np.ndarray:
    """The conv part in numpy (int64, NHWC, ``out_w`` columns; ``w`` as ``WidthConv`` packs it), for tests."""
    n, groups_in, hp, wp, _ = x.shape
    co, kh, kw = w.shape[:3]
    oh = hp - kh + 1
    acc = np.zeros((n, oh, out_w, co), np.int64)
    xs = x.transpose(0, 2, 3, 1, 4).reshape(n, hp, wp, groups_in * 4).astype(np.int64)
    ws = w.reshape(co, kh, kw, groups_in * 4).astype(np.int64)
    for ky in range(kh):
        for kx in range(kw):
            acc += np.einsum("nhwc,oc->nhwo", xs[:, ky : ky + oh, kx : kx + out_w], ws[:, ky, kx])
    return acc
