"""Max pool, global pool sums and channel concat of 8-bit NHWC tensors on HVX.

* ``max_pool``: on a pre-padded input (padded with the type's lowest value). In NHWC an
  output row of a stride-1 pool is one run of ``OW * C`` bytes, and tap ``(ky, kx)`` reads
  input row ``y + ky`` from byte ``kx * C`` on: one unaligned 128-byte load a tap, ``vmax``
  over the taps. A stride-2 pool is the stride-1 row (in a local buffer) with every other
  pixel kept: a ``vdeal`` of C-byte chunks per 256 bytes, its even half.
  Where a pixel is at least a vector, any stride: each output pixel's vectors the ``vmax`` of
  its taps' vectors (the last ending at the pixel's end; aligned where C is a multiple of
  128); under a vector, a pixel at a time, its store's spill overwritten by the next pixels.
* ``concat_channels``: two tensors of ``C`` channels each, concatenated along the channels:
  their pixels interleaved in C-byte chunks, one ``vshuff`` per 256 output bytes.
* ``concat_pixels``: tensors of any channel counts (at least ``MIN_PIXEL_BYTES``): each input
  pixel's bytes copied by 128-byte vectors, the last one ending at the pixel's end
  (overlapping the one before it where the count is not a multiple of 128); an input under a
  vector by one vector whose spill the next inputs and pixels overwrite.
* ``slice_pixels``: channels ``[begin, begin + width)`` of each pixel (a channel split): copied
  as ``concat_pixels`` copies where ``width`` is at least 128; else one 128-byte vector a
  pixel, stored from the pixel on, its spill overwritten by the next pixels (ascending).
* ``channel_sums_kernel``: a global pool's per-channel sums (less the zero point) as int32.

Rows or tensors that are not whole vectors finish with plain loops."""

from __future__ import annotations

import math

import numpy as np
import tvm
from tvm import te, topi
from tvm.script import from_source
from tvm.script import tirx as T

from .intrinsics import VECTOR_BYTES, deal, hvx, roundup
from .requantize import quarters


def chunks_apply(channels: int) -> bool:
    """Whether ``vdeal``/``vshuff`` of ``channels``-byte chunks splits 256 bytes into 2 vectors of whole pixels (C | 64)."""
    return channels & (channels - 1) == 0 and channels <= 64


def _tap_max(kernel: int, load):
    """The max of ``load(ky, kx)`` over a ``kernel`` x ``kernel`` window's taps, row by row."""
    best = None
    for ky in range(kernel):
        for kx in range(kernel):
            value = load(ky, kx)
            best = value if best is None else T.max(best, value)
    return best


def max_pool(shape_padded, kernel: int, stride: int, dtype: str) -> tvm.tirx.PrimFunc:
    """``[N, Hp, Wp, C]`` (padded) -> ``[N, OH, OW, C]``, a ``kernel`` x ``kernel`` max pool of
    any stride: stride 1 on rows (and where a pixel is whole vectors, a pixel at a time); stride
    2 where ``chunks_apply`` the stride-1 row's even pixels by a deal; else a pixel at a time (its
    vectors, or one vector for a pixel under one)."""
    n, hp, wp, c = (int(d) for d in shape_padded)
    oh, ow = (hp - kernel) // stride + 1, (wp - kernel) // stride + 1
    if (c % VECTOR_BYTES == 0 and c > VECTOR_BYTES) or (stride > 1 and c >= VECTOR_BYTES):
        return _vector_pixel_pool(n, hp, wp, c, kernel, stride, dtype)
    if stride > 1 and not (stride == 2 and chunks_apply(c)):
        return _pixel_pool(n, hp, wp, c, kernel, stride, dtype)
    w1 = wp - kernel + 1  # the stride-1 row's pixels
    row1, row_in, row_out = w1 * c, wp * c, ow * c
    full1 = row1 // 128
    pairs = row_out // 128 if stride == 2 else 0
    lanes = f"{dtype}x128"

    def window(x, b, r, j, width):
        """The max over the taps of ``width`` bytes of stride-1 output row ``r`` from byte ``j``."""
        return _tap_max(kernel, lambda ky, kx: x.vload([b, r + ky, j + kx * c], f"{dtype}x{width}") if width > 1
                        else x[b, r + ky, j + kx * c])

    @T.prim_func(s_tir=True)  # a root block, as relax's pattern analysis expects
    def pool(x_: T.Buffer((n, hp, wp, c), dtype), y_: T.Buffer((n, oh, ow, c), dtype)):
        T.func_attr({"tirx.noalias": True})
        with T.sblock("root"):
            x = T.decl_buffer((n, hp, row_in), dtype, data=x_.data)
            y = T.decl_buffer((n, oh, row_out), dtype, data=y_.data)
            s1 = T.sblock_alloc_buffer((roundup(row1 + 1, 256),), dtype, scope="local")
            for b, r in T.grid(n, oh):
                # the row's last, partial vector in a vector too, where its loads stay inside the input
                inside = (b * hp + r * stride + kernel - 1) * row_in + (full1 + 1) * 128 + (kernel - 1) * c <= n * hp * row_in
                if stride == 1:
                    for v in range(full1):
                        y[b, r, T.ramp(v * 128, 1, 128)] = window(x, b, r, v * 128, 128)
                    if row1 > full1 * 128:
                        if inside:
                            s1[T.ramp(0, 1, 128)] = window(x, b, r, full1 * 128, 128)
                            for j in range(row1 - full1 * 128):
                                y[b, r, full1 * 128 + j] = s1[j]
                        else:
                            for j in range(full1 * 128, row1):
                                y[b, r, j] = window(x, b, r, j, 1)
                else:
                    for v in range(full1):
                        s1[T.ramp(v * 128, 1, 128)] = window(x, b, r * 2, v * 128, 128)
                    if row1 > full1 * 128:
                        if inside:
                            s1[T.ramp(full1 * 128, 1, 128)] = window(x, b, r * 2, full1 * 128, 128)
                        else:
                            for j in range(full1 * 128, row1):
                                s1[j] = window(x, b, r * 2, j, 1)
                    for p in range(pairs):  # 256 stride-1 bytes -> their even pixels
                        y[b, r, T.ramp(p * 128, 1, 128)] = T.reinterpret(hvx("lo", deal(
                            T.reinterpret(s1.vload([p * 256 + 128], lanes), dtype="int32x32"),
                            T.reinterpret(s1.vload([p * 256], lanes), dtype="int32x32"), c)), dtype=lanes)
                    for j in range(pairs * 128, row_out):
                        y[b, r, j] = s1[(j // c) * 2 * c + j % c]

    return pool


def _vector_pixel_pool(n, hp, wp, c, kernel, stride, dtype) -> tvm.tirx.PrimFunc:
    """``max_pool`` of pixels of at least 128 channels, any stride: an output vector is the
    ``vmax`` of the same vector of its ``kernel x kernel`` input pixels; a pixel's vectors from
    its first byte on, 128 apart, the last ending at its end (overlapping the one before it
    where C is not a multiple of 128: the same maxima written twice)."""
    oh, ow = (hp - kernel) // stride + 1, (wp - kernel) // stride + 1
    vectors, lanes = -(-c // VECTOR_BYTES), f"{dtype}x128"

    def window(x, b, r, k, v):
        offset = T.min(v * VECTOR_BYTES, c - VECTOR_BYTES) if c % VECTOR_BYTES else v * VECTOR_BYTES
        return _tap_max(kernel, lambda ky, kx: x.vload([b, r * stride + ky, (k * stride + kx) * c + offset], lanes))

    def start(k, v):
        return k * c + (T.min(v * VECTOR_BYTES, c - VECTOR_BYTES) if c % VECTOR_BYTES else v * VECTOR_BYTES)

    @T.prim_func(s_tir=True)  # a root block, as relax's pattern analysis expects
    def pool(x_: T.Buffer((n, hp, wp, c), dtype, align=128), y_: T.Buffer((n, oh, ow, c), dtype, align=128)):
        T.func_attr({"tirx.noalias": True})
        with T.sblock("root"):
            x = T.decl_buffer((n, hp, wp * c), dtype, data=x_.data, align=128)
            y = T.decl_buffer((n, oh, ow * c), dtype, data=y_.data, align=128)
            for b, r, k, v in T.grid(n, oh, ow, vectors):
                y[b, r, T.ramp(start(k, v), 1, 128)] = window(x, b, r, k, v)

    return pool


def _pixel_pool(n, hp, wp, c, kernel, stride, dtype) -> tvm.tirx.PrimFunc:
    """``max_pool`` of a pixel under a vector (C < 128), any stride: an output pixel at a time,
    the ``vmax`` of its taps' 128-byte (unaligned) loads stored from the pixel on; the bytes past
    its C are the next pixels', stored after it (ascending). The last ``ceil(128 / C)`` pixels of
    the tensor, whose stores and loads would leave it, a plain loop."""
    oh, ow = (hp - kernel) // stride + 1, (wp - kernel) // stride + 1
    pixels = n * oh * ow
    tail = -(-VECTOR_BYTES // c)
    vectored = max(0, pixels - tail)
    lanes = f"{dtype}x128"

    def window(x, b, r, k):
        return _tap_max(kernel, lambda ky, kx: x.vload([b, r * stride + ky, (k * stride + kx) * c], lanes))

    def element(x, b, r, k, j):
        return _tap_max(kernel, lambda ky, kx: x[b, r * stride + ky, (k * stride + kx) * c + j])

    @T.prim_func(s_tir=True)  # a root block, as relax's pattern analysis expects
    def pool(x_: T.Buffer((n, hp, wp, c), dtype), y_: T.Buffer((n, oh, ow, c), dtype)):
        T.func_attr({"tirx.noalias": True})
        with T.sblock("root"):
            x = T.decl_buffer((n, hp, wp * c), dtype, data=x_.data)
            y = T.decl_buffer((pixels * c,), dtype, data=y_.data)
            for q in range(vectored):
                y[T.ramp(q * c, 1, 128)] = window(x, q // (oh * ow), q // ow % oh, q % ow)
            for q, j in T.grid(pixels - vectored, c):
                y[(vectored + q) * c + j] = element(x, (vectored + q) // (oh * ow), (vectored + q) // ow % oh,
                                                    (vectored + q) % ow, j)

    return pool


def plain_max_pool(shape_padded, kernel: int, stride: int, dtype: str) -> tvm.tirx.PrimFunc:
    """``max_pool`` as TVM's own pooling (any target: the CPU reference)."""
    x = te.placeholder(tuple(int(d) for d in shape_padded), dtype, name="x")
    y = topi.nn.pool2d(x, (kernel, kernel), (stride, stride), (1, 1), (0, 0, 0, 0), "max", layout="NHWC")
    return te.create_prim_func([x, y])


def concat_channels(shape, dtype: str) -> tvm.tirx.PrimFunc:
    """Two ``[..., C]`` tensors -> ``[..., 2C]`` (``chunks_apply(C)``)."""
    c = int(shape[-1])
    total = 1
    for d in shape:
        total *= int(d)
    in_shape = tuple(int(d) for d in shape)
    out_shape = (*in_shape[:-1], 2 * c)
    full = total // 128
    lanes, pair = f"{dtype}x128", f"{dtype}x256"

    @T.prim_func(s_tir=True)  # a root block, as relax's pattern analysis expects
    def concat(a_: T.Buffer(in_shape, dtype), b_: T.Buffer(in_shape, dtype), y_: T.Buffer(out_shape, dtype)):
        T.func_attr({"tirx.noalias": True})
        with T.sblock("root"):
            a = T.decl_buffer((total,), dtype, data=a_.data)
            b = T.decl_buffer((total,), dtype, data=b_.data)
            y = T.decl_buffer((2 * total,), dtype, data=y_.data)
            for v in range(full):
                y[T.ramp(v * 256, 1, 256)] = T.reinterpret(hvx(
                    "vshuffvdd", T.reinterpret(b.vload([v * 128], lanes), dtype="int32x32"),
                    T.reinterpret(a.vload([v * 128], lanes), dtype="int32x32"), -c, dtype="int32x64"), dtype=pair)
            for e in range(full * 128, total):
                y[e // c * 2 * c + e % c] = a[e]
                y[e // c * 2 * c + c + e % c] = b[e]

    return concat


def plain_concat_channels(shape, dtype: str) -> tvm.tirx.PrimFunc:
    a = te.placeholder(tuple(int(d) for d in shape), dtype, name="a")
    b = te.placeholder(tuple(int(d) for d in shape), dtype, name="b")
    return te.create_prim_func([a, b, topi.concatenate([a, b], axis=len(shape) - 1)])


#: The fewest bytes a pixel ``concat_pixels`` copies of an input: under a vector, one 128-byte
#: vector store a pixel copies them (the rest spill), no faster than a plain loop for a few.
MIN_PIXEL_BYTES = 16


def concat_pixels_apply(channels) -> bool:
    """Whether ``concat_pixels`` takes inputs of ``channels``: each at least ``MIN_PIXEL_BYTES``."""
    return all(c >= MIN_PIXEL_BYTES for c in channels)


def concat_pixels(lead_shape, channels, dtype: str) -> tvm.tirx.PrimFunc:
    """Tensors ``[..., C_i]`` (``concat_pixels_apply``) -> ``[..., sum C_i]``, a pixel at a time,
    its inputs in order: an input of at least 128 bytes by 128-byte vectors, the last ending at
    its end; a narrower one by one vector stored from its place on, the bytes past it spilling
    into the next inputs' and pixels' places, which are written after it (ascending). The last
    pixels, whose spilling loads or stores would leave their tensors, a plain loop. TVMScript
    written for the inputs there are (one parameter each)."""
    lead = tuple(int(d) for d in lead_shape)
    pixels = 1
    for d in lead:
        pixels *= d
    channels = [int(c) for c in channels]
    total = sum(channels)
    vectored, start = pixels, 0
    for c in channels:
        if c < VECTOR_BYTES:  # its load and store of 128 bytes stay inside their tensors
            vectored = min(vectored, (pixels * c - VECTOR_BYTES) // c + 1,
                           (pixels * total - start - VECTOR_BYTES) // total + 1)
        start += c
    vectored = max(0, vectored)
    params = "".join(f"x{i}_: T.Buffer({(*lead, c)}, '{dtype}'), " for i, c in enumerate(channels))
    lines = ["@T.prim_func(s_tir=True)",
             f"def concat({params}y_: T.Buffer({(*lead, total)}, '{dtype}')):",
             "    T.func_attr({'tirx.noalias': True})",
             "    with T.sblock('root'):",
             f"        y = T.decl_buffer(({pixels * total},), '{dtype}', data=y_.data)"]
    lines += [f"        x{i} = T.decl_buffer(({pixels * c},), '{dtype}', data=x{i}_.data)" for i, c in enumerate(channels)]
    if vectored:
        lines.append(f"        for p in range({vectored}):")
    start = 0
    for i, c in enumerate(channels):
        if not vectored:
            break
        whole = (c - 1) // VECTOR_BYTES  # vectors before the last, which ends at c (or spills past it)
        if whole:
            lines += [f"            for j in range({whole}):",
                      f"                y[T.ramp(p * {total} + {start} + j * 128, 1, 128)] = x{i}.vload([p * {c} + j * 128],"
                      f" '{dtype}x128')"]
        last = max(c - VECTOR_BYTES, 0)
        lines.append(f"            y[T.ramp(p * {total} + {start + last}, 1, 128)] = "
                     f"x{i}.vload([p * {c} + {last}], '{dtype}x128')")
        start += c
    if vectored < pixels:
        lines.append(f"        for p in range({vectored}, {pixels}):")
        start = 0
        for i, c in enumerate(channels):
            lines += [f"            for j in range({c}):", f"                y[p * {total} + {start} + j] = x{i}[p * {c} + j]"]
            start += c
    return from_source("\n".join(lines), extra_vars={"T": T}, s_tir=True)


def plain_concat(lead_shape, channels, dtype: str) -> tvm.tirx.PrimFunc:
    """``concat_pixels`` as TVM's own concatenate (the CPU reference)."""
    xs = [te.placeholder((*[int(d) for d in lead_shape], int(c)), dtype, name=f"x{i}") for i, c in enumerate(channels)]
    return te.create_prim_func([*xs, topi.concatenate(xs, axis=len(lead_shape))])


def slice_pixels(lead_shape, channels: int, begin: int, width: int, dtype: str) -> tvm.tirx.PrimFunc:
    """``[..., C]`` -> ``[..., width]``: channels ``[begin, begin + width)`` of each pixel. At
    least 128 wide: 128-byte vectors, the last ending at the pixel's end. Narrower: a pixel at
    a time, a 128-byte (unaligned) load from its first channel stored from its output on; the
    bytes past ``width`` are the next pixels', stored after it. The last pixels, whose vector
    would leave the input or the output, a plain loop."""
    lead = tuple(int(d) for d in lead_shape)
    pixels = 1
    for d in lead:
        pixels *= d
    c, begin, width = int(channels), int(begin), int(width)
    lanes = f"{dtype}x128"
    if width >= VECTOR_BYTES:
        whole, vectored = (width - 1) // VECTOR_BYTES, pixels
    else:
        whole = 0
        fits_out = (pixels * width - VECTOR_BYTES) // width + 1
        fits_in = (pixels * c - begin - VECTOR_BYTES) // c + 1
        vectored = max(0, min(pixels, fits_out, fits_in))
    last = max(0, width - VECTOR_BYTES)

    @T.prim_func(s_tir=True)  # a root block, as relax's pattern analysis expects
    def split(x_: T.Buffer((*lead, c), dtype), y_: T.Buffer((*lead, width), dtype)):
        T.func_attr({"tirx.noalias": True})
        with T.sblock("root"):
            x = T.decl_buffer((pixels * c,), dtype, data=x_.data)
            y = T.decl_buffer((pixels * width,), dtype, data=y_.data)
            for p in range(vectored):
                for j in range(whole):
                    y[T.ramp(p * width + j * 128, 1, 128)] = x.vload([p * c + begin + j * 128], lanes)
                y[T.ramp(p * width + last, 1, 128)] = x.vload([p * c + begin + last], lanes)
            for p, j in T.grid(pixels - vectored, width):
                y[(vectored + p) * width + j] = x[(vectored + p) * c + begin + j]

    return split


def plain_slice_pixels(lead_shape, channels: int, begin: int, width: int, dtype: str) -> tvm.tirx.PrimFunc:
    """``slice_pixels`` as TVM's own strided slice (the CPU reference)."""
    lead = [int(d) for d in lead_shape]
    x = te.placeholder((*lead, int(channels)), dtype, name="x")
    y = te.compute((*lead, int(width)), lambda *i: x[(*i[:-1], i[-1] + int(begin))], name="split")
    return te.create_prim_func([x, y])


def channel_sums_kernel(shape, q_dtype: str, zero: int, hvx_code: bool = True) -> tvm.tirx.PrimFunc:
    """``q -> int32[C]``: ``out[c] = sum(q[..., c] - zero)`` over every pixel of an NHWC tensor
    (a global pool's sums). Lanes of ``P = lcm(C, 128)`` bytes: lane ``j`` sums the elements
    at ``j`` modulo ``P`` (channel ``j % C``), whole windows of ``P`` bytes accumulated 128
    bytes at a time widened to four int32 vectors (two rounds of ``vunpack``), the whole vectors
    past them the same way into the first lanes, the last elements under 128 as the last vector
    masked (its lanes not wrapping around the period; else a plain loop, 6x6x240: 702 -> 626);
    then the ``P / C`` lanes of each channel added up 32 channels at a time (unaligned loads of
    the lane buffer; the last 32 overlapping the ones before), the zero point's ``count * zero``
    subtracted; under 32 channels a plain loop. ``hvx_code=False``: a plain loop."""
    total, channels = int(np.prod(shape)), int(shape[-1])
    period = math.lcm(channels, 128)
    windows, blocks, groups, count = total // period, period // 128, period // channels, total // channels
    offset = count * zero
    tail = windows * period  # the first element past the last window
    rest = (total - tail) // 128  # whole vectors past it
    vectors, last = -(-channels // 32) if channels >= 32 else 0, channels - 32
    left, start = total - tail - rest * 128, (total - 128) % period  # elements past the whole vectors; their lanes
    overlap = 0 < left and total >= 128 and start + 128 <= period

    def masked(q, j):  # quarter ``j`` of the tensor's last 128 elements, those before the last ``left`` zero
        return T.Select(T.ramp(j * 32, 1, 32) >= T.broadcast(128 - left, 32), quarters(q, total - 128, q_dtype)[j],
                        T.broadcast(0, 32))

    @T.prim_func(s_tir=True)  # a root block, as relax's pattern analysis expects
    def channel_sums(q_: T.Buffer(shape, q_dtype, align=128), out: T.Buffer((channels,), "int32", align=128)):
        T.func_attr({"tirx.noalias": True})
        with T.sblock("root"):
            q = T.decl_buffer((total,), q_dtype, data=q_.data)
            lanes = T.sblock_alloc_buffer((period,), "int32", align=128)
            for j in range(period // 32):
                lanes[T.ramp(j * 32, 1, 32)] = T.broadcast(0, 32)
            for k in range(blocks):
                for w in range(windows):  # the four quarters share one vunpack chain (pure: LLVM computes it once)
                    lanes[T.ramp(k * 128, 1, 32)] = lanes[T.ramp(k * 128, 1, 32)] + quarters(q, w * period + k * 128, q_dtype)[0]
                    lanes[T.ramp(k * 128 + 32, 1, 32)] = lanes[T.ramp(k * 128 + 32, 1, 32)] + quarters(q, w * period + k * 128, q_dtype)[1]
                    lanes[T.ramp(k * 128 + 64, 1, 32)] = lanes[T.ramp(k * 128 + 64, 1, 32)] + quarters(q, w * period + k * 128, q_dtype)[2]
                    lanes[T.ramp(k * 128 + 96, 1, 32)] = lanes[T.ramp(k * 128 + 96, 1, 32)] + quarters(q, w * period + k * 128, q_dtype)[3]
            for k in range(rest):  # the elements past the last window: into the first lanes, 128 at a time
                lanes[T.ramp(k * 128, 1, 32)] = lanes[T.ramp(k * 128, 1, 32)] + quarters(q, tail + k * 128, q_dtype)[0]
                lanes[T.ramp(k * 128 + 32, 1, 32)] = lanes[T.ramp(k * 128 + 32, 1, 32)] + quarters(q, tail + k * 128, q_dtype)[1]
                lanes[T.ramp(k * 128 + 64, 1, 32)] = lanes[T.ramp(k * 128 + 64, 1, 32)] + quarters(q, tail + k * 128, q_dtype)[2]
                lanes[T.ramp(k * 128 + 96, 1, 32)] = lanes[T.ramp(k * 128 + 96, 1, 32)] + quarters(q, tail + k * 128, q_dtype)[3]
            if overlap:  # the last elements under 128: the tensor's last vector, the ones counted already masked
                lanes[T.ramp(start, 1, 32)] = lanes[T.ramp(start, 1, 32)] + masked(q, 0)
                lanes[T.ramp(start + 32, 1, 32)] = lanes[T.ramp(start + 32, 1, 32)] + masked(q, 1)
                lanes[T.ramp(start + 64, 1, 32)] = lanes[T.ramp(start + 64, 1, 32)] + masked(q, 2)
                lanes[T.ramp(start + 96, 1, 32)] = lanes[T.ramp(start + 96, 1, 32)] + masked(q, 3)
            else:
                for e in range(tail + rest * 128, total):
                    lanes[e % period] = lanes[e % period] + T.cast(q[e], "int32")
            for v in range(vectors):  # the last vector overlaps the one before (the same sums written twice)
                acc = T.decl_buffer((32,), "int32", scope="local")
                acc[T.ramp(0, 1, 32)] = T.broadcast(-offset, 32)
                for g in T.unroll(groups):
                    acc[T.ramp(0, 1, 32)] = acc[T.ramp(0, 1, 32)] + lanes[T.ramp(g * channels + T.min(v * 32, last), 1, 32)]
                out[T.ramp(T.min(v * 32, last), 1, 32)] = acc[T.ramp(0, 1, 32)]
            for c in range(vectors * 32 if channels < 32 else channels, channels):
                out[c] = -offset
                for g in range(groups):
                    out[c] = out[c] + lanes[g * channels + c]

    @T.prim_func(s_tir=True)
    def plain_channel_sums(q_: T.Buffer(shape, q_dtype), out: T.Buffer((channels,), "int32")):
        T.func_attr({"tirx.noalias": True})
        with T.sblock("root"):
            q = T.decl_buffer((total,), q_dtype, data=q_.data)
            for c in range(channels):
                out[c] = -offset
            for e in range(total):
                out[e % channels] = out[e % channels] + T.cast(q[e], "int32")

    return channel_sums if hvx_code else plain_channel_sums
