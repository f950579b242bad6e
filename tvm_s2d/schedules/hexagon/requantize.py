"""Integer requantization on HVX: int32 accumulators -> uint8 / int8, the integers of
``passes.integer_requantize`` (bias add, 31-bit rounding doubling high multiply, rounding
right shift, zero point, clamp), 32 lanes at a time.

The high multiply is HVX's ``vmpyewuh`` followed by ``vmpyowh:<<1:rnd:sat`` (accumulating),
which is ``(a * M + 2**30) >> 31`` exactly (tested against numpy under qemu-hexagon); the
rest is vector int32 arithmetic, and four vectors narrow to 128 bytes by saturating packs
(``vpackwh:sat``, then ``vpackhub:sat`` / ``vpackhb:sat``). The per-channel constants (bias, multiplier, shift, the
shift's rounding half) come in as ``P = lcm(C, 32)`` lanes (``lane_constants``), so that
vector ``i`` of the flattened NHWC tensor reads them at ``(32 i) % P``. Elements past the
last whole vector take a plain loop with the same integers in int64.
"""

from __future__ import annotations

import math

import numpy as np
import tvm
from tvm import te
from tvm.script import tirx as T

from .intrinsics import hvx


def lane_constants(b, m, r, channels: int) -> list[np.ndarray]:
    """``[bias, multiplier, shift, half]`` per channel (or scalars), tiled to ``lcm(C, 32)``
    int32 lanes: the requantization kernels' constant operands."""
    period = math.lcm(channels, 32)

    def tiled(values):
        return np.tile(np.broadcast_to(np.asarray(values).reshape(-1), (channels,)), period // channels).astype(np.int32)

    shift = tiled(r)
    return [tiled(b), tiled(m), shift, ((np.int64(1) << shift.astype(np.int64)) >> 1).astype(np.int32)]


def _int64_requantize(x, bias, mult, shift, zy, lo, hi, dtype):
    """One element, in int64 (the tail loop and the plain kernel)."""
    t = (T.cast(x + bias, "int64") * T.cast(mult, "int64") + T.int64(1 << 30)) >> T.int64(31)
    rs = T.cast(shift, "int64")
    t = ((t + ((T.int64(1) << rs) >> T.int64(1))) >> rs) + T.int64(zy)
    return T.cast(T.max(T.min(t, T.int64(hi)), T.int64(lo)), dtype)


def requantize_kernel(shape, zy: int, lo: int, hi: int, dtype: str, hvx_code: bool = True) -> tvm.tirx.PrimFunc:
    """``(acc int32 NHWC, bias, mult, shift, half) -> dtype`` (the constants from
    ``lane_constants``); ``hvx_code=False``: the same integers as a plain loop (CPU checks)."""
    channels, total = int(shape[-1]), int(np.prod(shape))
    period = math.lcm(channels, 32)
    if not hvx_code:
        return _plain(shape, period, zy, lo, hi, dtype)
    vectors, groups = total // 32, total // 128
    pack = {"uint8": "vpackhub.sat", "int8": "vpackhb.sat"}[dtype]

    def requantized(acc, bias, mult, shift, half, v):
        """Vector ``v`` (32 lanes) of the flattened accumulators, requantized and clamped, int32."""
        lane = v * 32 % period
        a = acc.vload([v * 32], "int32x32") + bias.vload([lane], "int32x32")
        mv = mult.vload([lane], "int32x32")
        t = hvx("vmpyowh.rnd.sacc", hvx("vmpyewuh", a, mv), a, mv)
        t = T.shift_right(t + half.vload([lane], "int32x32"), shift.vload([lane], "int32x32"))
        return T.max(T.min(t + T.broadcast(zy, 32), T.broadcast(hi, 32)), T.broadcast(lo, 32))

    @T.prim_func(s_tir=True)  # a root block, as relax's pattern analysis expects
    def requantize(acc_: T.Buffer(shape, "int32"), bias: T.Buffer((period,), "int32"), mult: T.Buffer((period,), "int32"),
                   shift: T.Buffer((period,), "int32"), half: T.Buffer((period,), "int32"), out_: T.Buffer(shape, dtype)):
        T.func_attr({"tirx.noalias": True})
        with T.sblock("root"):
            acc = T.decl_buffer((total,), "int32", data=acc_.data)
            out = T.decl_buffer((total,), dtype, data=out_.data)
            for g in range(groups):  # 4 vectors -> 128 bytes: saturating packs, word -> half -> byte
                low = hvx("vpackwh.sat", requantized(acc, bias, mult, shift, half, g * 4 + 1),
                          requantized(acc, bias, mult, shift, half, g * 4))
                high = hvx("vpackwh.sat", requantized(acc, bias, mult, shift, half, g * 4 + 3),
                           requantized(acc, bias, mult, shift, half, g * 4 + 2))
                out[T.ramp(g * 128, 1, 128)] = T.reinterpret(hvx(pack, high, low), dtype=f"{dtype}x128")
            for v in range(groups * 4, vectors):
                out[T.ramp(v * 32, 1, 32)] = T.cast(requantized(acc, bias, mult, shift, half, v), f"{dtype}x32")
            for e in range(vectors * 32, total):
                out[e] = _int64_requantize(acc[e], bias[e % period], mult[e % period], shift[e % period], zy, lo, hi, dtype)

    return requantize


def _plain(shape, period: int, zy: int, lo: int, hi: int, dtype: str) -> tvm.tirx.PrimFunc:
    acc = te.placeholder(shape, "int32", name="acc")
    bias, mult, shift, half = (te.placeholder((period,), "int32", name=n) for n in ("bias", "mult", "shift", "half"))

    def element(*idx):
        flat = idx[0]
        for i, d in zip(idx[1:], shape[1:]):
            flat = flat * d + i
        lane = flat % period
        return _int64_requantize(acc[idx], bias[lane], mult[lane], shift[lane], zy, lo, hi, dtype)

    out = te.compute(shape, element, name="requantize")
    return te.create_prim_func([acc, bias, mult, shift, half, out])


def requantize_add_kernel(shape, a_dtype: str, za: int, ma: int, b_dtype: str, zb: int, mb: int, m: int, r: int,
                          zy: int, lo: int, hi: int, dtype: str, hvx_code: bool = True) -> tvm.tirx.PrimFunc:
    """``(qa, qb) -> dtype``: ``requantize((qa - za) * ma + (qb - zb) * mb)`` with one multiplier
    ``m`` and shift ``r`` (``passes.integer_add``); ``hvx_code=False``: a plain loop."""
    total = int(np.prod(shape))
    half = (1 << r) >> 1

    def element(qa, qb):
        a = (T.cast(qa, "int32") - za) * ma + (T.cast(qb, "int32") - zb) * mb
        t = (T.cast(a, "int64") * T.int64(m) + T.int64(1 << 30)) >> T.int64(31)
        t = ((t + T.int64(half)) >> T.int64(r)) + T.int64(zy)
        return T.cast(T.max(T.min(t, T.int64(hi)), T.int64(lo)), dtype)

    if not hvx_code:
        qa, qb = te.placeholder(shape, a_dtype, name="qa"), te.placeholder(shape, b_dtype, name="qb")
        return te.create_prim_func([qa, qb, te.compute(shape, lambda *i: element(qa[i], qb[i]), name="requantize_add")])
    vectors, groups = total // 32, total // 128
    pack = {"uint8": "vpackhub.sat", "int8": "vpackhb.sat"}[dtype]

    def requantized(a_, b_, v):
        a = ((T.cast(a_.vload([v * 32], f"{a_dtype}x32"), "int32x32") - T.broadcast(za, 32)) * T.broadcast(ma, 32)
             + (T.cast(b_.vload([v * 32], f"{b_dtype}x32"), "int32x32") - T.broadcast(zb, 32)) * T.broadcast(mb, 32))
        mv = T.broadcast(m, 32)
        t = hvx("vmpyowh.rnd.sacc", hvx("vmpyewuh", a, mv), a, mv)
        t = T.shift_right(t + T.broadcast(half, 32), T.broadcast(r, 32))
        return T.max(T.min(t + T.broadcast(zy, 32), T.broadcast(hi, 32)), T.broadcast(lo, 32))

    @T.prim_func(s_tir=True)  # a root block, as relax's pattern analysis expects
    def requantize_add(qa_: T.Buffer(shape, a_dtype), qb_: T.Buffer(shape, b_dtype), out_: T.Buffer(shape, dtype)):
        T.func_attr({"tirx.noalias": True})
        with T.sblock("root"):
            qa = T.decl_buffer((total,), a_dtype, data=qa_.data)
            qb = T.decl_buffer((total,), b_dtype, data=qb_.data)
            out = T.decl_buffer((total,), dtype, data=out_.data)
            for g in range(groups):
                low = hvx("vpackwh.sat", requantized(qa, qb, g * 4 + 1), requantized(qa, qb, g * 4))
                high = hvx("vpackwh.sat", requantized(qa, qb, g * 4 + 3), requantized(qa, qb, g * 4 + 2))
                out[T.ramp(g * 128, 1, 128)] = T.reinterpret(hvx(pack, high, low), dtype=f"{dtype}x128")
            for v in range(groups * 4, vectors):
                out[T.ramp(v * 32, 1, 32)] = T.cast(requantized(qa, qb, v), f"{dtype}x32")
            for e in range(vectors * 32, total):
                out[e] = element(qa[e], qb[e])

    return requantize_add
