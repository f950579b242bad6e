"""The zero-point correction of the lanes mapping's convs (``lanes.py``): the unsigned
``vrmpy`` multiplies weights packed as ``W + 128``, so each output pixel takes ``-128 x`` the
sum of its input window over all channels, computed here by HVX code."""

from __future__ import annotations

import tvm
from tvm.script import tirx as T

from .intrinsics import DEPTH, LANES, VECTOR_BYTES, deal, hvx
from .width import channel_groups_apply

WEIGHT_OFFSET = 128  # packed weights are W + 128 (uint8)


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
    C (C / 4 = 2**a * m, m odd; 12, 144, 240, 672): chunks of 2**a vectors by ``vrmpy`` and
    ``a`` rounds of ``vdeal`` + add in registers (the array of all pixels' words, its
    neighbouring words a pixel's own), then sums of m neighbouring values from every value
    (unaligned loads), each pixel's first read out (EfficientNet's 24x24x144: 13.1k packets
    when a plain loop summed each pixel's 36 words, 4.1k now). Box sums: 32 output columns per vector, one unaligned load and
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
    # other C: a pixel's words are 2**paired * odd (odd odd): chunks of 2**paired vectors by vrmpy,
    # their neighbouring words summed in registers by ``paired`` rounds of vdeal + add (pairs of a
    # pixel's own words: the chunks start at multiples of 2**paired words), then sums of ``odd``
    # neighbouring values from every value (unaligned loads), read at each pixel's first
    paired = 0 if halving else min((words & -words).bit_length() - 1, 5)
    odd, chunk = words >> paired, 1 << paired
    chunks = 0 if halving else pixels * c // (VECTOR_BYTES * chunk)
    reduced = 0 if halving else pixels * odd  # values left, ``odd`` a pixel
    window_vectors = -(-reduced // LANES)
    padded_values = window_vectors * LANES + odd + LANES if reduced else 0
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
            parts = T.sblock_alloc_buffer((max(parts_count, chunk), LANES), "int32", scope="local")
            acc = T.sblock_alloc_buffer((LANES,), "int32", scope="local")
            taps = T.sblock_alloc_buffer((sw, LANES), "int32", scope="local")
            words_of = T.sblock_alloc_buffer((LANES,), "int32", align=128)
            values = T.sblock_alloc_buffer((window_vectors * LANES + odd + LANES,), "int32", align=128)
            windows = T.sblock_alloc_buffer((window_vectors * LANES + 1,), "int32", align=128)
            for u in range(chunks):
                for v in T.unroll(chunk):
                    parts[v, T.ramp(0, 1, 32)] = hvx("vrmpyub", _vector(flat, (u * chunk + v) * VECTOR_BYTES), ones)
                if paired >= 1:
                    _halve(parts, chunk // 2)
                if paired >= 2:
                    _halve(parts, chunk // 4)
                if paired >= 3:
                    _halve(parts, chunk // 8)
                if paired >= 4:
                    _halve(parts, chunk // 16)
                if paired >= 5:
                    _halve(parts, chunk // 32)
                values[T.ramp(u * LANES, 1, LANES)] = parts[0, T.ramp(0, 1, 32)]
            for e in range(chunks * LANES, reduced):  # the values past the last chunk: 4 * 2**paired bytes each
                values[e] = 0
                for j in range(DEPTH * chunk):
                    values[e] = values[e] + T.Cast("int32", flat[e * DEPTH * chunk + j])
            for e in range(reduced, padded_values):  # zeros: the window loads read past the last value
                values[e] = 0
            if odd > 1:  # (an unrolled loop of no iterations does not lower)
                for v in range(window_vectors):
                    acc[T.ramp(0, 1, 32)] = values[T.ramp(v * LANES, 1, LANES)]
                    for j in T.unroll(odd - 1):
                        acc[T.ramp(0, 1, 32)] = acc[T.ramp(0, 1, 32)] + values[T.ramp(v * LANES + j + 1, 1, LANES)]
                    windows[T.ramp(v * LANES, 1, LANES)] = acc[T.ramp(0, 1, 32)]
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
                else:  # a pixel's first window sum of ``odd`` words (``windows``)
                    if odd > 1:
                        sums[p] = windows[p * odd]
                    else:
                        sums[p] = values[p]
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
