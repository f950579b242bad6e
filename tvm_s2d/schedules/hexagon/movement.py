"""Data movement of uint8 tensors on HVX: pads (vector fills and copies) and 2x2
space-to-depth / depth-to-space of NHWC tensors on shuffles."""

from __future__ import annotations

import numpy as np
import tvm
from tvm import te
from tvm.script import tirx as T

from .intrinsics import deal, hvx, opaque_vector

#: Channels ``pad_pixels`` widens to the next power of two (compiled and run, 2.4-2.7 packets a
#: vector's shuffle; ``tests/test_hexagon.py`` compiles each in a child process).
SPREAD_CHANNELS = (24, 40, 48, 56)


def spread_width(channels: int) -> int | None:
    """The channels ``pad_pixels`` widens ``channels`` to (``SPREAD_CHANNELS``: their next power
    of two), else None."""
    return 1 << (channels - 1).bit_length() if channels in SPREAD_CHANNELS else None


def pad_rows_apply(shape, pad_width) -> bool:
    """Whether ``pad_rows`` takes this pad: a 4-D tensor padded on two neighbouring axes (or one)."""
    padded = [axis for axis in range(len(shape)) if pad_width[2 * axis] or pad_width[2 * axis + 1]]
    return len(shape) == 4 and bool(padded) and padded[-1] - padded[0] <= 1


def pad_rows(shape, pad_width, value: int) -> tvm.tirx.PrimFunc:
    """A uint8 tensor padded with ``value`` (``pad_width`` as ``relax.op.nn.pad``'s, before and
    after per axis) on two neighbouring axes, seen as ``[B, H, W, C]`` rows of ``W x C`` bytes
    (NHWC spatial pads, NCHW's with C = 1): border rows are vector fills, the other rows a
    vector copy (unaligned) between scalar fills of the left and right columns."""
    padded = [axis for axis in range(4) if pad_width[2 * axis] or pad_width[2 * axis + 1]]
    first = 1 if padded == [2] else min(padded[0], 2)  # columns alone: rows of W x C bytes, not rows of C
    batch = int(np.prod(shape[:first]))
    h, w, c = shape[first], shape[first + 1], int(np.prod(shape[first + 2 :]))
    t, b, l, r = (pad_width[2 * first], pad_width[2 * first + 1], pad_width[2 * first + 2],
                  pad_width[2 * first + 3])
    ho, wo = h + t + b, w + l + r
    row_in, row_out = w * c, wo * c
    in_shape = tuple(int(d) for d in shape)
    out_shape = tuple(int(d + pad_width[2 * i] + pad_width[2 * i + 1]) for i, d in enumerate(shape))

    if row_in >= 256 and row_in % 128 == 0:  # (other rows: the copy below measured up to 1.3x faster)
        return _pad_vectors(in_shape, out_shape, batch, (h, ho, t), (l * c, row_in, row_out), value)

    @T.prim_func(s_tir=True)  # a root block, as relax's pattern analysis expects
    def pad(x: T.Buffer(in_shape, "uint8"), y_: T.Buffer(out_shape, "uint8")):
        T.func_attr({"tirx.noalias": True})
        with T.sblock("root"):
            a = T.decl_buffer((batch * h, row_in), "uint8", data=x.data)
            o = T.decl_buffer((batch * ho, row_out), "uint8", data=y_.data)
            for n, y in T.grid(batch, ho):
                if y < t or y >= t + h:
                    for v in range(row_out // 128):
                        o[n * ho + y, T.ramp(v * 128, 1, 128)] = opaque_vector(T.broadcast(T.uint8(value), 128))
                    for j in range(row_out // 128 * 128, row_out):
                        o[n * ho + y, j] = T.uint8(value)
                else:
                    for j in range(l * c):
                        o[n * ho + y, j] = T.uint8(value)
                    for v in range(row_in // 128):
                        o[n * ho + y, T.ramp(l * c + v * 128, 1, 128)] = opaque_vector(
                            a[n * h + y - t, T.ramp(v * 128, 1, 128)])
                    for j in range(row_in // 128 * 128, row_in):
                        o[n * ho + y, l * c + j] = a[n * h + y - t, j]
                    for j in range(r * c):
                        o[n * ho + y, (l + w) * c + j] = T.uint8(value)

    return pad


def aligned_words(buffer, start):
    """The aligned vector of uint8 ``buffer`` at byte ``start`` (a multiple of 128) as 32 words."""
    return T.reinterpret(buffer[T.ramp(start, 1, 128)], dtype="int32x32")


def _pad_vectors(in_shape, out_shape, batch: int, rows, bytes_, value: int) -> tvm.tirx.PrimFunc:
    """``pad_rows`` for input rows of whole vectors (2 or more): every output row whole vectors of 128
    bytes at ``128 j`` (the last at ``O - 128``, overlapping the one before with the same bytes),
    each a vector store: the fill, the input (two aligned loads and a ``valign`` where the left
    pad is not whole vectors: as ``vmemu`` loads 1.5x the packets), or at the data's two ends one load
    inside the row shifted in from the fill (``vlalign`` / ``valign``), so no load leaves the
    input and no scalar store is left (48x48x32 -> 50x52x32: 1.8k -> 1.0k packets; 24x24x144 -> 26x26x144:
    2.6k -> 1.7k; 48x48x24 -> 50x50x24: 1.5k -> 1.2k). On rows not whole vectors (58, 116, 120,
    232 channels: ShuffleNetV2's, MnasNet's) it ran 12-32% slower than the copy with scalar fills.
    ``rows`` = (H, H', top pad), ``bytes_`` = (left pad, input row, output row) in bytes."""
    (h, ho, t), (left, row_in, row_out) = rows, bytes_
    first, last = -(-left // 128), (left + row_in) // 128  # the vectors all data
    count = -(-row_out // 128)

    def at(j):
        return T.min(j * 128, row_out - 128)

    @T.prim_func(s_tir=True)  # a root block, as relax's pattern analysis expects
    def pad(x: T.Buffer(in_shape, "uint8", align=128), y_: T.Buffer(out_shape, "uint8", align=128)):
        T.func_attr({"tirx.noalias": True})
        with T.sblock("root"):
            a = T.decl_buffer((batch * h * row_in,), "uint8", data=x.data, align=128)
            o = T.decl_buffer((batch * ho * row_out,), "uint8", data=y_.data, align=128)
            for n, y in T.grid(batch, ho):
                if y < t or y >= t + h:
                    for j in range(count):
                        o[T.ramp((n * ho + y) * row_out + at(j), 1, 128)] = opaque_vector(T.broadcast(T.uint8(value), 128))
                else:
                    for j in T.unroll(first):  # the left pad, then the row's first bytes
                        o[T.ramp((n * ho + y) * row_out + j * 128, 1, 128)] = T.if_then_else(
                            j * 128 + 128 <= left, T.broadcast(T.uint8(value), 128), T.reinterpret(hvx(
                                "vlalignb", aligned_words(a, (n * h + y - t) * row_in),
                                T.reinterpret(T.broadcast(T.uint8(value), 128), dtype="int32x32"), left - j * 128),
                                dtype="uint8x128"))
                    for j in range(first, last):  # aligned loads and a ``valign`` (a ``vmemu`` each: 1.5x the packets)
                        if left % 128 == 0:
                            o[T.ramp((n * ho + y) * row_out + j * 128, 1, 128)] = opaque_vector(
                                a[T.ramp((n * h + y - t) * row_in + j * 128 - left, 1, 128)])
                        else:
                            o[T.ramp((n * ho + y) * row_out + j * 128, 1, 128)] = T.reinterpret(hvx(
                                "valignb", aligned_words(a, (n * h + y - t) * row_in + (j - left // 128) * 128),
                                aligned_words(a, (n * h + y - t) * row_in + (j - left // 128 - 1) * 128), 128 - left % 128),
                                dtype="uint8x128")
                    for j in T.unroll(count - last):  # the row's last bytes, then the right pad
                        o[T.ramp((n * ho + y) * row_out + at(last + j), 1, 128)] = T.if_then_else(
                            at(last + j) >= left + row_in, T.broadcast(T.uint8(value), 128), T.reinterpret(hvx(
                                "valignb", T.reinterpret(T.broadcast(T.uint8(value), 128), dtype="int32x32"),
                                aligned_words(a, (n * h + y - t) * row_in + row_in - 128),
                                at(last + j) - left - row_in + 128), dtype="uint8x128"))

    return pad


def pad_channels_apply(shape, pad_width) -> bool:
    """Whether ``pad_channels`` takes this pad: an NHWC uint8 tensor whose channels are padded
    after (to at most 128), its rows and columns padded or not, its batch not."""
    if len(shape) != 4 or any(pad_width[:2]) or pad_width[6] or not pad_width[7]:
        return False
    return int(shape[3]) + int(pad_width[7]) <= 128


def pad_channels(shape, pad_width, value: int) -> tvm.tirx.PrimFunc:
    """An NHWC uint8 tensor padded with ``value`` on its channels (after: ``C`` -> ``C + p``),
    rows and columns: an output pixel a vector, in order: one unaligned load of 128 input bytes
    from the input pixel, its lanes past ``C`` set to ``value`` (``vmux``), one unaligned store
    of 128 bytes at the output pixel, which the next pixels' stores overwrite past it (border
    pixels: a store of ``value``). The last pixels, whose loads or stores would pass the
    tensors' ends, a plain loop. (A channel pad was rows of ``C`` bytes for ``pad_rows``, a byte
    at a time: MnasNet's 24x24x48 -> 24x32x64 5.2k packets.)"""
    n, h, w, c = (int(d) for d in shape)
    t, b, l, r, cp = (int(pad_width[i]) for i in (2, 3, 4, 5, 7))
    co, ho, wo = c + cp, h + t + b, w + l + r
    total_in, total_out = n * h * w * c, n * ho * wo * co

    def source(p: int) -> int | None:  # the input pixel of output pixel ``p``, None on the border
        bb, y, x = p // (ho * wo), p // wo % ho, p % wo
        return (bb * h + y - t) * w + x - l if t <= y < t + h and l <= x < l + w else None

    def inside(p):  # (TIR) output pixel ``p`` is not on the border
        y, x = p // wo % ho, p % wo
        return tvm.tirx.all(t <= y, y < t + h, l <= x, x < l + w)

    def pixel(p):  # (TIR) its input pixel
        return (p // (ho * wo) * h + p // wo % ho - t) * w + p % wo - l

    vectors = 0  # output pixels from the first whose vector would pass an end: the plain loop's
    while vectors < n * ho * wo and vectors * co + 128 <= total_out and (
            source(vectors) is None or source(vectors) * c + 128 <= total_in):
        vectors += 1

    rows = vectors // wo  # whole output rows of vectors

    def blend(a, q):  # (TIR) input pixel ``q``'s 128 bytes, lanes past ``c`` set to ``value`` (vand, vor)
        mask = T.reinterpret(T.Select(T.ramp(0, 1, 128) < T.broadcast(c, 128), T.broadcast(T.uint8(255), 128),
                                      T.broadcast(T.uint8(0), 128)), dtype="int32x32")
        high = T.reinterpret(T.Select(T.ramp(0, 1, 128) < T.broadcast(c, 128), T.broadcast(T.uint8(0), 128),
                                      T.broadcast(T.uint8(value), 128)), dtype="int32x32")
        loaded = T.reinterpret(a[T.ramp(q * c, 1, 128)], dtype="int32x32")
        return T.reinterpret(hvx("vor", hvx("vand", loaded, mask), high), dtype="uint8x128")

    @T.prim_func(s_tir=True)  # a root block, as relax's pattern analysis expects
    def pad(x: T.Buffer((n, h, w, c), "uint8"), y_: T.Buffer((n, ho, wo, co), "uint8")):
        T.func_attr({"tirx.noalias": True})
        with T.sblock("root"):
            a = T.decl_buffer((total_in,), "uint8", data=x.data)
            o = T.decl_buffer((total_out,), "uint8", data=y_.data)
            fill = T.broadcast(T.uint8(value), 128)
            for row in range(rows):  # whole rows: no test a pixel
                if row % ho < t or row % ho >= t + h:
                    for xx in range(wo):
                        o[T.ramp((row * wo + xx) * co, 1, 128)] = opaque_vector(fill)
                else:
                    for xx in range(l):
                        o[T.ramp((row * wo + xx) * co, 1, 128)] = opaque_vector(fill)
                    for xx in range(w):
                        o[T.ramp((row * wo + l + xx) * co, 1, 128)] = blend(a, (row // ho * h + row % ho - t) * w + xx)
                    for xx in range(r):
                        o[T.ramp((row * wo + l + w + xx) * co, 1, 128)] = opaque_vector(fill)
            for p in range(rows * wo, vectors):
                if inside(p):
                    o[T.ramp(p * co, 1, 128)] = blend(a, pixel(p))
                else:
                    o[T.ramp(p * co, 1, 128)] = opaque_vector(fill)
            for p, j in T.grid(n * ho * wo - vectors, co):
                o[(vectors + p) * co + j] = T.if_then_else(
                    tvm.tirx.all(inside(vectors + p), j < c), a[T.max(pixel(vectors + p), 0) * c + T.min(j, c - 1)],
                    T.uint8(value))

    return pad


def pad_pixels_apply(shape, pad_width) -> bool:
    """Whether ``pad_pixels`` takes this pad: an NHWC uint8 tensor of 1-3 channels widened to 4
    (an image's pixels for the width mapping's 4-byte groups) or of 24, 40, 48 or 56 widened to
    32 or 64 (a strided depthwise conv's, ``convs.dealt_channels``), its rows and columns padded
    or not, its batch not. Other widenings are left alone: LLVM's HVX shuffle lowering crashes
    on many of their byte patterns (3 -> 8, 5 -> 16, 12 -> 32, and to the next power of two 9,
    17, 18, 22 and 23 of 5-63; a crash the pass could not catch)."""
    if len(shape) != 4 or any(pad_width[:2]) or pad_width[6]:
        return False
    c, co = int(shape[3]), int(shape[3]) + int(pad_width[7])
    return (c < 4 and co == 4) or co == spread_width(c)


def pad_pixels(shape, pad_width, value: int) -> tvm.tirx.PrimFunc:
    """An NHWC uint8 tensor padded with ``value`` on its rows, columns and channels (``C`` ->
    ``C + p`` channels a pixel; a 3-channel image's 4th channel for the width mapping's
    4-byte groups): each output vector holds ``128 // (C + p)`` whole pixels, made from one
    unaligned load of the input by one byte shuffle (LLVM's HVX shuffle lowering; the pad
    bytes from a splat of ``value``); the load steps back when it would pass the tensor's end.
    Border rows are vector fills; the pixels past a row's last whole vector a plain loop."""
    n, h, w, c = (int(d) for d in shape)
    t, b, l, r, cp = (int(pad_width[i]) for i in (2, 3, 4, 5, 7))
    co, ho, wo = c + cp, h + t + b, w + l + r
    per = 128 // co  # pixels a vector
    chunks, total, used = w // per, n * h * w * c, per * c  # vectors a row; input bytes; bytes a vector reads

    def indices(back: int) -> list[int]:  # output byte -> input byte (``back`` bytes into the load), 128+: value
        return [back + p * c + j if j < c else 128 for p in range(per) for j in range(co)] + [128] * (128 - per * co)

    ahead, behind = indices(0), indices(128 - used)
    row_out = wo * co

    @T.prim_func(s_tir=True)  # a root block, as relax's pattern analysis expects
    def pad(x: T.Buffer((n, h, w, c), "uint8"), y_: T.Buffer((n, ho, wo, co), "uint8")):
        T.func_attr({"tirx.noalias": True})
        with T.sblock("root"):
            a = T.decl_buffer((total,), "uint8", data=x.data)
            o = T.decl_buffer((n * ho * row_out,), "uint8", data=y_.data)
            fill = T.broadcast(T.uint8(value), 128)
            for bb, y in T.grid(n, ho):
                if y < t or y >= t + h:
                    for v in range(row_out // 128):
                        o[T.ramp((bb * ho + y) * row_out + v * 128, 1, 128)] = opaque_vector(fill)
                    for j in range(row_out // 128 * 128, row_out):
                        o[(bb * ho + y) * row_out + j] = T.uint8(value)
                else:
                    for j in range(l * co):
                        o[(bb * ho + y) * row_out + j] = T.uint8(value)
                    for v in range(chunks):
                        if ((bb * h + y - t) * w + v * per) * c + 128 <= total:
                            o[T.ramp((bb * ho + y) * row_out + (l + v * per) * co, 1, 128)] = T.Shuffle(
                                [a[T.ramp(((bb * h + y - t) * w + v * per) * c, 1, 128)], fill], ahead)
                        elif ((bb * h + y - t) * w + v * per) * c + used >= 128:
                            o[T.ramp((bb * ho + y) * row_out + (l + v * per) * co, 1, 128)] = T.Shuffle(
                                [a[T.ramp(((bb * h + y - t) * w + v * per) * c + used - 128, 1, 128)], fill], behind)
                        else:
                            for p, j in T.grid(per, co):
                                o[(bb * ho + y) * row_out + (l + v * per + p) * co + j] = T.if_then_else(
                                    j < c, a[((bb * h + y - t) * w + v * per + p) * c + T.min(j, c - 1)], T.uint8(value))
                    for p, j in T.grid(w - chunks * per, co):
                        o[(bb * ho + y) * row_out + (l + chunks * per + p) * co + j] = T.if_then_else(
                            j < c, a[((bb * h + y - t) * w + chunks * per + p) * c + T.min(j, c - 1)], T.uint8(value))
                    for j in range(r * co):
                        o[(bb * ho + y) * row_out + (l + w) * co + j] = T.uint8(value)

    return pad


#
# In NHWC, S2D by 2x2 maps rows 2y and 2y+1 to output row y, interleaving them in chunks of
# 2C bytes (one output pixel holds (dy, dx, c)): exactly ``vshuff`` of the two rows with
# element size 2C (``vshuffvdd`` with a negative Rt: a full shuffle). D2S is the inverse,
# ``vdeal``. One pair of vector loads, one shuffle and two stores per 256 output bytes.

def shuffles_apply(shape_nhwc, block, inverse: bool = False) -> bool:
    """Whether the shuffle kernels take this tensor: block 2x2, 2C bytes (S2D) or half a pixel
    (D2S) dividing 128; S2D also an even height."""
    n, h, w, c = shape_nhwc
    if tuple(block) != (2, 2):
        return False
    if inverse:
        return c % 4 == 0 and 128 % (c // 2) == 0
    return h % 2 == 0 and 128 % (2 * c) == 0


def copy_space_to_depth(shape_nhwc, block=(2, 2), inverse: bool = False, vectorize: bool = False) -> tvm.tirx.PrimFunc:
    """NHWC uint8 S2D (``inverse``: D2S) by ``block`` as a plain copy, for any target and block
    (the shuffle kernels' reference on the CPU); ``vectorize``: the innermost loop vectorized."""
    n, h, w, c = shape_nhwc
    bh, bw = block
    x = te.placeholder(shape_nhwc, "uint8", name="x")
    if inverse:  # c = bh * bw * q channels: (dy, dx, ch)
        q = c // (bh * bw)
        y = te.compute((n, h * bh, w * bw, q),
                       lambda i, r, s_, k: x[i, r // bh, s_ // bw, (r % bh * bw + s_ % bw) * q + k], name="y")
    else:
        y = te.compute((n, h // bh, w // bw, bh * bw * c),
                       lambda i, r, s_, k: x[i, r * bh + k // (bw * c), s_ * bw + k // c % bw, k % c], name="y")
    func = te.create_prim_func([x, y])
    if not vectorize:
        return func
    sch = tvm.s_tir.Schedule(func)
    sch.vectorize(sch.get_loops(sch.get_sblock("y"))[-1])
    return sch.mod["main"]


def shuffle_space_to_depth(shape_nhwc) -> tvm.tirx.PrimFunc:
    """NHWC uint8 ``[N, H, W, C]`` -> ``[N, H/2, W/2, 4C]``, block 2x2 (on the tensors as
    rows). Rows that are not whole vectors finish with a plain loop."""
    n, h, w, c = shape_nhwc
    rows, row = n * h, w * c
    full, tail, chunk = row // 128, row % 128, 2 * c

    @T.prim_func(s_tir=True)  # a root block, as relax's pattern analysis expects
    def s2d(x: T.Buffer((n, h, w, c), "uint8"), y_: T.Buffer((n, h // 2, w // 2, 4 * c), "uint8")):
        T.func_attr({"tirx.noalias": True})
        with T.sblock("root"):
            a = T.decl_buffer((rows, row), "uint8", data=x.data)
            b = T.decl_buffer((rows // 2, 2 * row), "uint8", data=y_.data)
            for y in range(rows // 2):
                for v in range(full):
                    b[y, T.ramp(v * 256, 1, 256)] = T.reinterpret(hvx(
                        "vshuffvdd", T.reinterpret(a.vload([y * 2 + 1, v * 128], "uint8x128"), dtype="int32x32"),
                        T.reinterpret(a.vload([y * 2, v * 128], "uint8x128"), dtype="int32x32"),
                        -chunk, dtype="int32x64"), dtype="uint8x256")
                for j in range(2 * tail):
                    b[y, full * 256 + j] = a[y * 2 + j // chunk % 2, full * 128 + j // (2 * chunk) * chunk + j % chunk]

    return s2d


def deal_depth_to_space(shape_nhwc) -> tvm.tirx.PrimFunc:
    """NHWC uint8 ``[N, H, W, 4C]`` -> ``[N, 2H, 2W, C]``, block 2x2 (on the tensors as rows).
    Rows that are not whole pairs of vectors finish with a plain loop."""
    n, h, w, c4 = shape_nhwc
    rows, row = n * h, w * c4
    full, tail, half = row // 256, row % 256, c4 // 2

    @T.prim_func(s_tir=True)  # a root block, as relax's pattern analysis expects
    def d2s(x: T.Buffer((n, h, w, c4), "uint8"), y_: T.Buffer((n, h * 2, w * 2, c4 // 4), "uint8")):
        T.func_attr({"tirx.noalias": True})
        with T.sblock("root"):
            a = T.decl_buffer((rows, row), "uint8", data=x.data)
            b = T.decl_buffer((rows * 2, row // 2), "uint8", data=y_.data)
            for y in range(rows):
                for v in range(full):
                    pair = deal(T.reinterpret(a.vload([y, v * 256 + 128], "uint8x128"), dtype="int32x32"),
                                 T.reinterpret(a.vload([y, v * 256], "uint8x128"), dtype="int32x32"), half)
                    b[y * 2, T.ramp(v * 128, 1, 128)] = T.reinterpret(hvx("lo", pair), dtype="uint8x128")
                    b[y * 2 + 1, T.ramp(v * 128, 1, 128)] = T.reinterpret(hvx("hi", pair), dtype="uint8x128")
                for j in range(tail):
                    b[y * 2 + j % c4 // half, full * 128 + j // c4 * half + j % half] = a[y, full * 256 + j]

    return d2s
