"""Requantization of the conv outputs HVX mappings leave in other layouts: the width
mapping's channel-major accumulators (``requantize_transpose_kernel``: written NHWC;
``requantize_channel_major_kernel``: written NCHW, for model outputs) and the channel-in-lanes
mapping's 32-padded channels (``requantize_slice_kernel``). The same integers as
``requantize.requantize_kernel``."""

from __future__ import annotations

import math

import tvm
from tvm import te
from tvm.script import tirx as T

from .intrinsics import hvx
from .requantize import SPAN_GROUPS, _int64_requantize, _narrow, _requantized_row, pack_bytes, pack_words, requantize_lanes

# ---- requantization with the layout change: channel-major accumulators -> NHWC ---------------
#
# The width mapping's conv writes ``[N, C, H, W']`` int32 (32 columns a vector, ``W'`` a
# multiple of 32). Requantizing there reads one channel's constants as scalars; four channels'
# uint8 results pack into one word per pixel (``t0 | t1 << 8 | t2 << 16 | t3 << 24``), and the
# ``C/4`` word vectors of 32 pixels turn pixel-major (NHWC) by ``log2(C/4)`` rounds of ``vshuff``
# (the inverse of ``width.deal_channel_groups``). Channel counts the rounds do not take, and
# the last partial block of columns, go through a local vector and a plain copy.


def transpose_shuffles_apply(channels: int) -> bool:
    """Whether the ``vshuff`` rounds take ``channels``: 4 x a power of two, up to 128."""
    groups = channels // 4
    return channels % 4 == 0 and groups & (groups - 1) == 0 and groups <= 32


@T.macro
def _shuffle_words(src, dst, half):
    """dst[2i] ++ dst[2i+1] = the words of src[i] and src[half + i] interleaved, i < half."""
    for i in T.unroll(half):
        pair = hvx("vshuffvdd", src[half + i, T.ramp(0, 1, 32)], src[i, T.ramp(0, 1, 32)], -4, dtype="int32x64")
        dst[2 * i, T.ramp(0, 1, 32)] = hvx("lo", pair)
        dst[2 * i + 1, T.ramp(0, 1, 32)] = hvx("hi", pair)


def _plain(acc_shape, lanes: int, out_shape, where, zy, lo, hi, dtype) -> tvm.tirx.PrimFunc:
    """A kernel's plain loops: ``out[i] = requantize(acc[index], constants[lane])`` with
    ``(index, lane) = where(*i)`` (the CPU reference of the HVX kernels)."""
    acc = te.placeholder(tuple(int(d) for d in acc_shape), "int32", name="acc")
    bias, mult, shift, half, pre = (te.placeholder((lanes,), "int32", name=v) for v in ("bias", "mult", "shift", "half", "pre"))

    def element(*i):
        index, k = where(*i)
        return _int64_requantize(acc[index], bias[k], mult[k], shift[k], pre[k], zy, lo, hi, dtype)

    return te.create_prim_func([acc, bias, mult, shift, half, pre, te.compute(out_shape, element, name="requantize")])


@T.macro
def shuffle_rounds(even, odd, half, rounds):
    """``rounds`` (up to 5) rounds of ``_shuffle_words`` between ``even`` and ``odd``, from
    ``even``: the result is in ``odd`` after an odd number (TVMScript macros cannot recurse)."""
    if rounds >= 1:
        _shuffle_words(even, odd, half)
    if rounds >= 2:
        _shuffle_words(odd, even, half)
    if rounds >= 3:
        _shuffle_words(even, odd, half)
    if rounds >= 4:
        _shuffle_words(odd, even, half)
    if rounds >= 5:
        _shuffle_words(even, odd, half)


def requantize_transpose_kernel(shape_nchw, out_w: int, zy: int, lo: int, hi: int, dtype: str,
                                hvx_code: bool = True) -> tvm.tirx.PrimFunc:
    """``(acc int32 [N, C, H, W'], bias, mult, shift, half [C]) -> dtype [N, H, out_w, C]``: the
    requantization of ``requantize_kernel`` on channel-major accumulators, written NHWC and
    cropped to ``out_w`` columns (``C`` a multiple of 4, ``W'`` a multiple of 32, at least
    ``out_w``); ``hvx_code=False``: a plain loop (any ``C``)."""
    n, c, h, wp = (int(d) for d in shape_nchw)
    out_shape = (n, h, out_w, c)
    if not hvx_code:
        return _plain((n, c, h, wp), c, out_shape, lambda b, r, p, k: ((b, k, r, p), k), zy, lo, hi, dtype)
    if c % 4 or wp % 32 or wp < out_w:
        raise ValueError(f"requantize_transpose_kernel takes C a multiple of 4 and W' a multiple of 32, not {shape_nchw}")
    groups = c // 4
    rounds = groups.bit_length() - 1
    blocks = -(-out_w // 32)
    shuffled = transpose_shuffles_apply(c)
    full = out_w // 32 if shuffled else 0

    def packed(acc, bias, mult, shift, half, pre, b, g, r, v):
        """Channels 4g..4g+3 of 32 pixels, requantized, one word a pixel."""
        return pack_words([_requantized_row(acc, bias, mult, shift, half, pre, ((b * c + 4 * g + j) * h + r) * wp + v * 32,
                                            4 * g + j, zy, lo, hi, clamp=False) for j in range(4)], lo, hi, dtype)

    @T.prim_func(s_tir=True)  # a root block, as relax's pattern analysis expects
    def requantize(acc_: T.Buffer((n, c, h, wp), "int32", align=128), bias: T.Buffer((c,), "int32"), mult: T.Buffer((c,), "int32"),
                   shift: T.Buffer((c,), "int32"), half: T.Buffer((c,), "int32"), pre: T.Buffer((c,), "int32"),
                   out: T.Buffer(out_shape, dtype)):
        T.func_attr({"tirx.noalias": True})
        with T.sblock("root"):
            acc = T.decl_buffer((n * c * h * wp,), "int32", data=acc_.data, align=128)
            words = T.decl_buffer((n * h * out_w * groups,), "int32", data=out.data)
            row = T.sblock_alloc_buffer((groups, blocks * 32), "int32", scope="local")
            even = T.sblock_alloc_buffer((groups, 32), "int32", scope="local")
            odd = T.sblock_alloc_buffer((groups, 32), "int32", scope="local")
            for b, r in T.grid(n, h):
                # a group's constants stay in registers across the row (a group a time: no spills)
                for g, v in T.grid(groups, blocks):
                    row[g, T.ramp(v * 32, 1, 32)] = packed(acc, bias, mult, shift, half, pre, b, g, r, v)
                for v in range(full):  # the row's words turned pixel-major, 32 pixels at a time
                    for g in T.unroll(groups):
                        even[g, T.ramp(0, 1, 32)] = row[g, T.ramp(v * 32, 1, 32)]
                    shuffle_rounds(even, odd, groups // 2, rounds)
                    for g in T.unroll(groups):
                        if rounds % 2 == 1:
                            words[T.ramp(((b * h + r) * out_w + v * 32) * groups + g * 32, 1, 32)] = odd[g, T.ramp(0, 1, 32)]
                        else:
                            words[T.ramp(((b * h + r) * out_w + v * 32) * groups + g * 32, 1, 32)] = even[g, T.ramp(0, 1, 32)]
                for p, g in T.grid(out_w - full * 32, groups):  # the rest word by word
                    words[((b * h + r) * out_w + full * 32 + p) * groups + g] = row[g, full * 32 + p]

    return requantize


def requantize_channel_major_kernel(shape_nchw, out_w: int, zy: int, lo: int, hi: int, dtype: str,
                                    hvx_code: bool = True) -> tvm.tirx.PrimFunc:
    """``(acc int32 [N, C, H, W'], bias, mult, shift, half [C]) -> dtype [N, C, H, out_w]``: the
    same requantization written channel-major (``W'`` a multiple of 32, any ``C``), for outputs
    that leave the model in NCHW; ``hvx_code=False``: a plain loop."""
    n, c, h, wp = (int(d) for d in shape_nchw)
    out_shape = (n, c, h, out_w)
    if not hvx_code:
        return _plain((n, c, h, wp), c, out_shape, lambda b, k, r, p: ((b, k, r, p), k), zy, lo, hi, dtype)
    if wp % 32 or wp < out_w:
        raise ValueError(f"requantize_channel_major_kernel takes W' a multiple of 32, not {shape_nchw}")
    full = out_w // 32

    @T.prim_func(s_tir=True)  # a root block, as relax's pattern analysis expects
    def requantize(acc_: T.Buffer((n, c, h, wp), "int32", align=128), bias: T.Buffer((c,), "int32"),
                   mult: T.Buffer((c,), "int32"), shift: T.Buffer((c,), "int32"), half: T.Buffer((c,), "int32"),
                   pre: T.Buffer((c,), "int32"), out: T.Buffer(out_shape, dtype)):
        T.func_attr({"tirx.noalias": True})
        with T.sblock("root"):
            acc = T.decl_buffer((n * c * h * wp,), "int32", data=acc_.data)
            scratch = T.sblock_alloc_buffer((32,), "int32", scope="local")
            for b, k in T.grid(n, c):
                for r, v in T.grid(h, full):
                    out[b, k, r, T.ramp(v * 32, 1, 32)] = _narrow(
                        _requantized_row(acc, bias, mult, shift, half, pre, ((b * c + k) * h + r) * wp + v * 32, k, zy, lo, hi),
                        dtype)
                for r in range(h * (out_w - full * 32 > 0)):
                    scratch[T.ramp(0, 1, 32)] = _requantized_row(acc, bias, mult, shift, half, pre,
                                                                 ((b * c + k) * h + r) * wp + full * 32, k, zy, lo, hi)
                    for p in range(out_w - full * 32):
                        out[b, k, r, full * 32 + p] = T.cast(scratch[p], dtype)

    return requantize


def requantize_slice_kernel(shape, channels: int, zy: int, lo: int, hi: int, dtype: str,
                            hvx_code: bool = True, average: bool = False, pre_shift: bool = True) -> tvm.tirx.PrimFunc:
    """``(acc int32 [N, H, W, Cp], bias, mult, shift, half, pre) -> dtype [N, H, W, C]``: the
    requantization of ``requantize_kernel`` on the first ``C`` of ``Cp`` channels (the
    channel-in-lanes mapping's output, its channels padded to 32): ``32 / C`` pixels' channels
    gathered into one vector by a shuffle, four vectors packed to 128 bytes. ``C`` divides 32;
    the constants are ``lane_constants(..., C)`` (32 lanes)."""
    n, h, w, cp = (int(d) for d in shape)
    out_shape = (n, h, w, channels)
    if not hvx_code:
        return _plain(shape, math.lcm(channels, 32), out_shape, lambda b, r, p, k: ((b, r, p, k), k), zy, lo, hi, dtype)
    if wide_slice_apply(channels, cp):
        return _wide_slice_kernel(shape, channels, zy, lo, hi, dtype, average, pre_shift)
    if 32 % channels or cp % 32:
        raise ValueError(f"requantize_slice_kernel takes C dividing 32 and Cp a multiple of 32, not {channels}, {cp}")
    per = 32 // channels  # pixels a vector
    pixels = n * h * w
    vectors = pixels // per
    groups = vectors // 4
    gather = [i * 32 + j for i in range(per) for j in range(channels)]

    def requantized(acc, bias, mult, shift, half, pre, v):
        """Vector ``v``: pixels ``v * per ...``, their ``C`` channels each, requantized (unclamped)."""
        a = T.Shuffle([acc.vload([(v * per + i) * cp], "int32x32") for i in range(per)], gather)
        return requantize_lanes(a, (bias, mult, shift, half, pre), 0, zy, pre_shift, average)

    def group(acc, bias, mult, shift, half, pre, g):
        """128 output bytes from vectors ``4 g ...``."""
        return pack_bytes([requantized(acc, bias, mult, shift, half, pre, g * 4 + i) for i in range(4)], lo, hi, dtype)

    @T.prim_func(s_tir=True)  # a root block, as relax's pattern analysis expects
    def requantize(acc_: T.Buffer(shape, "int32", align=128), bias: T.Buffer((32,), "int32"), mult: T.Buffer((32,), "int32"),
                   shift: T.Buffer((32,), "int32"), half: T.Buffer((32,), "int32"), pre: T.Buffer((32,), "int32"),
                   out_: T.Buffer(out_shape, dtype, align=128)):
        T.func_attr({"tirx.noalias": True})
        with T.sblock("root"):
            acc = T.decl_buffer((pixels * cp,), "int32", data=acc_.data)
            out = T.decl_buffer((pixels * channels,), dtype, data=out_.data)
            for u in range(groups // SPAN_GROUPS):
                for k in T.unroll(SPAN_GROUPS):
                    out[T.ramp((u * SPAN_GROUPS + k) * 128, 1, 128)] = group(acc, bias, mult, shift, half, pre, u * SPAN_GROUPS + k)
            for g in range(groups // SPAN_GROUPS * SPAN_GROUPS, groups):
                out[T.ramp(g * 128, 1, 128)] = group(acc, bias, mult, shift, half, pre, g)
            for e in range(groups * 128, pixels * channels):
                out[e] = _int64_requantize(acc[e // channels * cp + e % channels], bias[e % channels], mult[e % channels],
                                           shift[e % channels], pre[e % channels], zy, lo, hi, dtype)

    return requantize


#: Output vectors a period of the wide slice kernel (``lcm(C, 128) / 32``) at most: unrolled.
MAX_WIDE_VECTORS = 64


def wide_slice_apply(channels: int, padded: int) -> bool:
    """Whether ``requantize_slice_kernel`` takes ``C`` channels of ``Cp`` the wide way: ``C``
    over 32, ``Cp`` a multiple of 32, a period of ``lcm(C, 128)`` outputs in at most
    ``MAX_WIDE_VECTORS`` vectors."""
    return 32 < channels < padded and padded % 32 == 0 and math.lcm(channels, 128) // 32 <= MAX_WIDE_VECTORS


def _wide_slice_kernel(shape, channels: int, zy: int, lo: int, hi: int, dtype: str, average: bool,
                       pre_shift: bool) -> tvm.tirx.PrimFunc:
    """``requantize_slice_kernel`` for ``C`` over 32 (48 of 64, 144 of 160): the output's
    bytes in periods of ``U = lcm(C, 128)``, unrolled, each 32-lane vector read from at most
    two pixels (a pixel's last channels and the next one's first, joined by a select), its
    constants' lanes constants (``lane_constants``: period ``lcm(C, 32)``), four vectors
    packed to 128 bytes; past the last whole period the same a vector at a time with its
    lanes computed, the last values (under 32) a plain loop. Regression: a plain loop over all
    the values past the last period (480 of 6x6x120) came out wrong on 97 of them under
    qemu-hexagon (MobileNetV3-Small not bit-exact), and slow."""
    n, h, w, cp = (int(d) for d in shape)
    pixels, c = n * h * w, channels
    period, span = math.lcm(c, 32), math.lcm(c, 128)
    supers = pixels * c // span  # whole periods
    lane = T.ramp(0, 1, 32)

    def vector_at(acc, j):
        """Output lanes ``j ...``: the first ``k`` from pixel ``p``, the rest from the next
        (``k >= 32``: all from ``p``; in the unrolled periods LLVM drops that select)."""
        p, k = j // c, c - j % c
        return T.Select(lane < T.broadcast(k, 32), acc.vload([p * cp + c - k], "int32x32"),
                        acc.vload([(p + 1) * cp - k], "int32x32"))

    total = pixels * c

    @T.prim_func(s_tir=True)  # a root block, as relax's pattern analysis expects
    def requantize(acc_: T.Buffer(shape, "int32", align=128), bias: T.Buffer((period,), "int32"),
                   mult: T.Buffer((period,), "int32"), shift: T.Buffer((period,), "int32"),
                   half: T.Buffer((period,), "int32"), pre: T.Buffer((period,), "int32"),
                   out_: T.Buffer((n, h, w, c), dtype, align=128)):
        T.func_attr({"tirx.noalias": True})
        with T.sblock("root"):
            acc = T.decl_buffer((pixels * cp,), "int32", data=acc_.data)
            out = T.decl_buffer((total,), dtype, data=out_.data)
            constants = (bias, mult, shift, half, pre)
            for g in T.unroll(span // 128):
                for s in range(supers):  # the same vectors of each period: their constants loaded once, out of the loop
                    out[T.ramp(s * span + g * 128, 1, 128)] = pack_bytes(
                        [requantize_lanes(vector_at(acc, s * span + (g * 4 + i) * 32), constants, (g * 4 + i) * 32 % period, zy,
                                          pre_shift, average)
                         for i in range(4)], lo, hi, dtype)
            for g in range(supers * span // 128, total // 128):  # the rest: the constants' lanes computed
                out[T.ramp(g * 128, 1, 128)] = pack_bytes(
                    [requantize_lanes(vector_at(acc, g * 128 + i * 32), constants, (g * 128 + i * 32) % period, zy,
                                      pre_shift, average)
                     for i in range(4)], lo, hi, dtype)
            for v in range(total // 128 * 4, total // 32):
                t = requantize_lanes(vector_at(acc, v * 32), constants, v * 32 % period, zy, pre_shift, average)
                out[T.ramp(v * 32, 1, 32)] = _narrow(T.max(T.min(t, T.broadcast(hi, 32)), T.broadcast(lo, 32)), dtype)
            for e in range(total // 32 * 32, total):  # under 32 values: a plain loop
                out[e] = _int64_requantize(acc[e // c * cp + e % c], bias[e % c], mult[e % c], shift[e % c], pre[e % c],
                                           zy, lo, hi, dtype)

    return requantize
