"""Max pool and channel concat of 8-bit NHWC tensors on HVX.

* ``max_pool``: on a pre-padded input (padded with the type's lowest value). In NHWC an
  output row of a stride-1 pool is one run of ``OW * C`` bytes, and tap ``(ky, kx)`` reads
  input row ``y + ky`` from byte ``kx * C`` on: one unaligned 128-byte load a tap, ``vmax``
  over the taps. A stride-2 pool is the stride-1 row (in a local buffer) with every other
  pixel kept: a ``vdeal`` of C-byte chunks per 256 bytes, its even half.
* ``concat_channels``: two tensors of ``C`` channels each, concatenated along the channels:
  their pixels interleaved in C-byte chunks, one ``vshuff`` per 256 output bytes.

Rows or tensors that are not whole vectors finish with plain loops.
"""

from __future__ import annotations

import tvm
from tvm import te, topi
from tvm.script import tirx as T

from .intrinsics import deal, hvx, roundup


def chunks_apply(channels: int) -> bool:
    """Whether a ``vdeal`` / ``vshuff`` of ``channels``-byte chunks splits 256 bytes into two
    vectors of whole pixels: a power of two up to 64."""
    return channels & (channels - 1) == 0 and channels <= 64


def max_pool(shape_padded, kernel: int, stride: int, dtype: str) -> tvm.tirx.PrimFunc:
    """``[N, Hp, Wp, C]`` (padded) -> ``[N, OH, OW, C]``, a ``kernel`` x ``kernel`` max pool of
    stride 1, or 2 where ``chunks_apply(C)``."""
    n, hp, wp, c = (int(d) for d in shape_padded)
    oh, ow = (hp - kernel) // stride + 1, (wp - kernel) // stride + 1
    w1 = wp - kernel + 1  # the stride-1 row's pixels
    row1, row_in, row_out = w1 * c, wp * c, ow * c
    full1 = row1 // 128
    pairs = row_out // 128 if stride == 2 else 0
    lanes = f"{dtype}x128"

    def window(x, b, r, j, width):
        """The max over the taps of ``width`` bytes of stride-1 output row ``r`` from byte ``j``."""
        best = None
        for ky in range(kernel):
            for kx in range(kernel):
                value = x.vload([b, r + ky, j + kx * c], f"{dtype}x{width}") if width > 1 else x[b, r + ky, j + kx * c]
                best = value if best is None else T.max(best, value)
        return best

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
