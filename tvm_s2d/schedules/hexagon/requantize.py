"""Integer requantization on HVX: int32 accumulators -> uint8 / int8, the integers of
``passes.quantized.integer_requantize`` (bias add, 31-bit rounding doubling high multiply, rounding
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
from typing import NamedTuple

import numpy as np
import tvm
from tvm import te
from tvm.script import tirx as T

from ...geometry.fixed_point import RANGES
from .intrinsics import hvx
from .lookup import lookup_vector, table_entry, table_vectors
from ..memo import kernel_cache

#: Groups of 128 outputs at least in one iteration of the elementwise kernels' loops (products,
#: adds), unrolled: independent chains for LLVM's scheduler (one group an iteration ran serially:
#: ~23 packets a group of a squeeze-and-excite product, 12.6 so).
SPAN_GROUPS = 4
#: Vectors a period of the requantization's constants at most (4 constant vectors each), and spans
#: at least, for its kernel to iterate over whole spans, the constants held in registers (24x24x96:
#: 6,168 -> 5,720 packets, 10x10x96 1,608 -> 1,198); longer periods iterate over each span's 4
#: vectors apart (6x6x256: 1,274, whole spans 1,601), and so do fewer spans (9: 6x6x96 550, 588).
HOISTED_BLOCKS, HOISTED_SPANS = 5, 12
#: The attribute of a ``requantize_kernel`` with its arguments, by which ``HexagonMovement`` makes it
#: again with the table of the lookup that alone reads its output (``table``).
REQUANTIZE_ATTR = "hvx_requantize"


def hoisted(shape) -> bool:
    """Whether ``requantize_kernel`` on ``shape`` iterates over whole spans, a period's constants
    held in registers (``HOISTED_BLOCKS``, ``HOISTED_SPANS``)."""
    blocks = math.lcm(int(shape[-1]), 32) // 32
    return blocks <= HOISTED_BLOCKS and int(np.prod(shape)) // 32 // math.lcm(4, blocks) >= HOISTED_SPANS


def lane_constants(b, m, r, channels: int, pre=0, lanes: int | None = None) -> list[np.ndarray]:
    """``[bias, multiplier, shift, half, pre]`` per channel (or scalars), tiled to ``lanes``
    int32 lanes (lane ``j`` of channel ``j % C``; ``lcm(C, 32)`` by default): the requantization
    kernels' constant operands (``pre``: the headroom shift)."""
    lanes = math.lcm(channels, 32) if lanes is None else lanes

    def tiled(values):
        per_channel = np.broadcast_to(np.asarray(values).reshape(-1), (channels,))
        return np.tile(per_channel, -(-lanes // channels))[:lanes].astype(np.int32)

    shift = tiled(r)
    return [tiled(b), tiled(m), shift, ((np.int64(1) << shift.astype(np.int64)) >> 1).astype(np.int32), tiled(pre)]


def channel_constants(b, m, r, channels: int, pre=0) -> list[np.ndarray]:
    """``[bias, multiplier, shift, half, pre]``, one int32 a channel: the channel-major kernels'
    constant operands."""
    per_channel = [np.broadcast_to(np.asarray(v).reshape(-1), (channels,)).astype(np.int32) for v in (b, m, r, pre)]
    half = ((np.int64(1) << per_channel[2].astype(np.int64)) >> 1).astype(np.int32)
    return [*per_channel[:3], half, per_channel[3]]


def _int64_requantize(x, bias, mult, shift, pre, zy, lo, hi, dtype):
    """One element, in int64 (the tail loop and the plain kernel)."""
    first = T.int64(31) - T.cast(pre, "int64")
    t = (T.cast(x + bias, "int64") * T.cast(mult, "int64") + ((T.int64(1) << first) >> T.int64(1))) >> first
    rs = T.cast(shift, "int64")
    t = ((t + ((T.int64(1) << rs) >> T.int64(1))) >> rs) + T.int64(zy)
    return T.cast(T.max(T.min(t, T.int64(hi)), T.int64(lo)), dtype)


@kernel_cache
def requantize_kernel(shape, zy: int, lo: int, hi: int, dtype: str, hvx_code: bool = True,
                      average: bool = False, pre_shift: bool = True, table: Table | None = None) -> tvm.tirx.PrimFunc:
    """``(acc int32 NHWC, bias, mult, shift, half, pre) -> dtype`` (the constants from
    ``lane_constants``; ``average``, ``pre_shift``: ``requantize_lanes``'s); ``hvx_code=False``:
    the same integers as a plain loop (CPU checks). ``table``: the requantized bytes looked up in
    a 256-entry table before they are stored (an activation's, ``Table``): one more operand before
    the output, the table as ``lookup.arrange_table`` lays it out; the output of the table's type."""
    channels, total = int(shape[-1]), int(np.prod(shape))
    period = math.lcm(channels, 32)
    params = {"shape": [int(d) for d in shape], "zy": zy, "lo": lo, "hi": hi, "dtype": dtype,
              "average": average, "pre_shift": pre_shift}
    if not hvx_code:
        return tabled(_plain(shape, period, zy, lo, hi, dtype, table), table, params)
    out_dtype = dtype if table is None else table.dtype
    vectors, groups = total // 32, total // 128
    blocks = period // 32  # vectors in a period of the constants
    span = math.lcm(4, blocks)  # vectors of whole packs and whole periods: their lanes are constants
    supers = vectors // span

    def requantized(acc, bias, mult, shift, half, pre, v, clamp=True, lane=None):
        """Vector ``v`` (32 lanes) of the flattened accumulators, requantized and (``clamp``)
        clamped, int32 (``lane``: the constants' offset, if not ``v``'s)."""
        t = requantize_lanes(acc.vload([v * 32], "int32x32"), (bias, mult, shift, half, pre),
                             v * 32 % period if lane is None else lane, zy, pre_shift, average)
        return T.max(T.min(t, T.broadcast(hi, 32)), T.broadcast(lo, 32)) if clamp else t

    def span_bytes(acc, bias, mult, shift, half, pre, lut, u, q):
        """Vectors ``4 q ...`` of span ``u`` as 128 bytes, their constants' lanes constants."""
        v = u * span + q * 4
        return output_bytes([requantized(acc, bias, mult, shift, half, pre, v + i, False, (q * 4 + i) * 32 % period)
                             for i in range(4)], lo, hi, dtype, table, lut)

    @T.prim_func(s_tir=True)  # a root block, as relax's pattern analysis expects
    def requantize(acc_: T.Buffer(shape, "int32", align=128), bias: T.Buffer((period,), "int32"), mult: T.Buffer((period,), "int32"),
                   shift: T.Buffer((period,), "int32"), half: T.Buffer((period,), "int32"), pre: T.Buffer((period,), "int32"),
                   lut: T.Buffer((256,), "uint8", align=128), out_: T.Buffer(shape, out_dtype, align=128)):
        T.func_attr({"tirx.noalias": True})
        with T.sblock("root"):
            acc = T.decl_buffer((total,), "int32", data=acc_.data)
            out = T.decl_buffer((total,), out_dtype, data=out_.data)
            if hoisted(shape):  # a period's constants in registers: spans an iteration
                for u in range(supers):
                    for q in T.unroll(span // 4):  # 4 vectors -> 128 bytes: saturating packs, word -> half -> byte, the clamp
                        out[T.ramp((u * span + q * 4) * 32, 1, 128)] = span_bytes(acc, bias, mult, shift, half, pre, lut, u, q)
            else:
                for q in T.unroll(span // 4):
                    for u in range(supers):  # the same 4 vectors of each span: their constants loaded once, out of the loop
                        out[T.ramp((u * span + q * 4) * 32, 1, 128)] = span_bytes(acc, bias, mult, shift, half, pre, lut, u, q)
            for g in range(supers * span // 4, groups):
                out[T.ramp(g * 128, 1, 128)] = output_bytes([requantized(acc, bias, mult, shift, half, pre, g * 4 + i, False)
                                                             for i in range(4)], lo, hi, dtype, table, lut)
            for v in range(groups * 4, vectors):
                out[T.ramp(v * 32, 1, 32)] = _narrow(requantized(acc, bias, mult, shift, half, pre, v), dtype, table, lut)
            for e in range(vectors * 32, total):
                out[e] = output_element(_int64_requantize(acc[e], bias[e % period], mult[e % period], shift[e % period],
                                                          pre[e % period], zy, lo, hi, dtype), dtype, table, lut)

    return tabled(requantize, table, params)


def tabled(func: tvm.tirx.PrimFunc, table: Table | None, params: dict) -> tvm.tirx.PrimFunc:
    """A requantization kernel written with a table operand (``lut``): as it is with ``table``;
    without, that operand (if any) dropped and ``params`` (what the kernel was made of) in the
    attribute ``REQUANTIZE_ATTR``."""
    if table is not None:
        return func
    return tvm.tirx.PrimFunc([p for p in func.params if p.name != "lut"], func.body, func.ret_type,
                             func.attrs).with_attr(REQUANTIZE_ATTR, params)


def output_bytes(t, lo: int, hi: int, dtype: str, table: Table | None = None, lut=None):
    """Four vectors of requantized lanes as 128 output bytes (``pack_bytes``), through ``table``
    (its ``arrange_table`` buffer ``lut``) if any: the table's type."""
    words = pack_bytes(t, lo, hi, dtype)
    return words if table is None else _looked_up(T.reinterpret(words, dtype="int32x32"), table, lut)


def _looked_up(words, table: Table, lut):
    """128 packed bytes (int32x32) through ``table`` (its ``arrange_table`` buffer ``lut``): the
    table's type."""
    return T.reinterpret(lookup_vector(words, *table_vectors(lut), table.base, table.segments), dtype=f"{table.dtype}x128")


def output_element(value, dtype: str, table: Table | None = None, lut=None):
    """One requantized value (``dtype``) through ``table`` if any."""
    return value if table is None else table_entry(lut, value, dtype, table.dtype, table.base)


class Table(NamedTuple):
    """A 256-entry table a requantization kernel looks its bytes up in (``lookup.table_segments``):
    the entries' type, the byte the table vectors hold them less, the 32-entry segments looked up."""
    dtype: str
    base: int
    segments: tuple[int, ...]


def averaging(shift) -> bool:
    """Whether the requantization may round its last shift by ``vavg`` (``requantize_lanes``'s
    ``average``): every shift at least 1."""
    return bool(np.all(np.asarray(shift) >= 1))


def requantize_lanes(acc, constants, lane, zy: int, pre_shift: bool = True, average: bool = False):
    """32 int32 accumulators requantized, unclamped (int32 lanes): ``constants`` the
    ``lane_constants`` buffers (bias, multiplier, shift, half, pre), read 32 lanes from ``lane``
    (``pre_shift=False``: every headroom shift is 0, none is made). ``average`` (every shift
    ``s >= 1``, ``averaging``): ``(t + 2^(s-1)) >> s + zy`` as ``vavg.rnd(t >> (s - 1), 2 zy)``,
    the same integers (floor((floor(t / 2^(s-1)) + 1) / 2) = floor((t + 2^(s-1)) / 2^s)) without
    the ``half`` load and add: the requantization kernels are load-bound (24x24x72 of 96 lanes
    7.3k -> 6.3k packets)."""
    bias, mult, shift, half, pre = constants
    a = acc + bias.vload([lane], "int32x32")
    if pre_shift:
        a = T.shift_left(a, pre.vload([lane], "int32x32"))
    mv = mult.vload([lane], "int32x32")
    t = hvx("vmpyowh.rnd.sacc", hvx("vmpyewuh", a, mv), a, mv)
    if average:
        return hvx("vavgwrnd", T.shift_right(t, shift.vload([lane], "int32x32") - T.broadcast(1, 32)), T.broadcast(2 * zy, 32))
    return T.shift_right(t + half.vload([lane], "int32x32"), shift.vload([lane], "int32x32")) + T.broadcast(zy, 32)


def pack_bytes(t, lo: int, hi: int, dtype: str):
    """Four vectors of 32 requantized int32 lanes (``requantize_lanes``) as 128 bytes in order:
    saturating packs (word -> half -> byte), then the clamp where narrower than the type's."""
    pack, (low_op, high_op) = {"uint8": ("vpackhub.sat", ("vmaxub", "vminub")),
                               "int8": ("vpackhb.sat", ("vmaxb", "vminb"))}[dtype]
    words = hvx(pack, hvx("vpackwh.sat", t[3], t[2]), hvx("vpackwh.sat", t[1], t[0]))
    if (lo, hi) != RANGES[dtype]:
        words = hvx(high_op, hvx(low_op, words, _byte_splat(lo, dtype)), _byte_splat(hi, dtype))
    return T.reinterpret(words, dtype=f"{dtype}x128")


def _plain(shape, period: int, zy: int, lo: int, hi: int, dtype: str, table: Table | None = None) -> tvm.tirx.PrimFunc:
    acc = te.placeholder(shape, "int32", name="acc")
    bias, mult, shift, half, pre = (te.placeholder((period,), "int32", name=n)
                                    for n in ("bias", "mult", "shift", "half", "pre"))

    def element(*idx):
        flat = idx[0]
        for i, d in zip(idx[1:], shape[1:]):
            flat = flat * d + i
        lane = flat % period
        return _int64_requantize(acc[idx], bias[lane], mult[lane], shift[lane], pre[lane], zy, lo, hi, dtype)

    out = te.compute(shape, element, name="requantize")
    if table is None:
        return te.create_prim_func([acc, bias, mult, shift, half, pre, out])
    lut = te.placeholder((256,), "uint8", name="lut")
    looked = te.compute(shape, lambda *i: table_entry(lut, out[i], dtype, table.dtype, table.base), name="lookup")
    return te.create_prim_func([acc, bias, mult, shift, half, pre, lut, looked])


def requantize_add_kernel(shape, a_dtype: str, za: int, ma: int, b_dtype: str, zb: int, mb: int, m: int, r: int,
                          zy: int, lo: int, hi: int, dtype: str, hvx_code: bool = True) -> tvm.tirx.PrimFunc:
    """``(qa, qb) -> dtype``: ``requantize((qa - za) * ma + (qb - zb) * mb)`` with one multiplier
    ``m`` and shift ``r`` (``passes.quantized.integer_add``), 128 values a vector, a tail as the
    last 128 values once more (MobileNetV3's 6x6x48 residual adds ran their last 64 a value at a
    time: 1.2k packets); ``hvx_code=False``: a plain loop."""
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
    groups = total // 128
    pack = {"uint8": "vpackhub.sat", "int8": "vpackhb.sat"}[dtype]
    offset = -(za * ma + zb * mb)  # (qa - za) ma + (qb - zb) mb in wrapping int32: exact where the sum fits

    def requantized(a, b):
        """32 lanes: the rescaled sum ``a ma + b mb + offset`` requantized and clamped, int32."""
        a = a * T.broadcast(ma, 32) + b * T.broadcast(mb, 32) + T.broadcast(offset, 32)
        mv = T.broadcast(m, 32)
        t = hvx("vmpyowh.rnd.sacc", hvx("vmpyewuh", a, mv), a, mv)
        t = T.shift_right(t + T.broadcast(half, 32), T.broadcast(r, 32))
        return T.max(T.min(t + T.broadcast(zy, 32), T.broadcast(hi, 32)), T.broadcast(lo, 32))

    def added(qa, qb, start):
        """128 outputs from ``start``."""
        t = [requantized(x, y) for x, y in zip(quarters(qa, start, a_dtype), quarters(qb, start, b_dtype))]
        return T.reinterpret(hvx(pack, hvx("vpackwh.sat", t[3], t[2]), hvx("vpackwh.sat", t[1], t[0])), dtype=f"{dtype}x128")

    @T.prim_func(s_tir=True)  # a root block, as relax's pattern analysis expects
    def requantize_add(qa_: T.Buffer(shape, a_dtype, align=128), qb_: T.Buffer(shape, b_dtype, align=128),
                       out_: T.Buffer(shape, dtype, align=128)):
        T.func_attr({"tirx.noalias": True})
        with T.sblock("root"):
            qa = T.decl_buffer((total,), a_dtype, data=qa_.data)
            qb = T.decl_buffer((total,), b_dtype, data=qb_.data)
            out = T.decl_buffer((total,), dtype, data=out_.data)
            for u in range(groups // SPAN_GROUPS):  # 128 bytes of each: widened in order, requantized, packed back
                for q in T.unroll(SPAN_GROUPS):  # independent groups an iteration
                    out[T.ramp((u * SPAN_GROUPS + q) * 128, 1, 128)] = added(qa, qb, (u * SPAN_GROUPS + q) * 128)
            for g in range(groups // SPAN_GROUPS * SPAN_GROUPS, groups):
                out[T.ramp(g * 128, 1, 128)] = added(qa, qb, g * 128)
            if groups > 0 and total % 128 != 0:  # the tail: the last 128 values once more
                out[T.ramp(total - 128, 1, 128)] = added(qa, qb, total - 128)
            else:
                for e in range(groups * 128, total):
                    out[e] = element(qa[e], qb[e])

    return requantize_add


def quarters(q, start, q_dtype: str) -> list:
    """The 128 bytes of ``q`` from ``start`` as 4 int32 vectors, in order (two rounds of ``vunpack``)."""
    bytes_, halves = {"uint8": ("vunpackub", "vunpackuh"), "int8": ("vunpackb", "vunpackh")}[q_dtype]
    pair = hvx(bytes_, T.reinterpret(q.vload([start], f"{q_dtype}x128"), dtype="int32x32"), dtype="int32x64")
    low, high = (hvx(halves, hvx(part, pair), dtype="int32x64") for part in ("lo", "hi"))
    return [hvx("lo", low), hvx("hi", low), hvx("lo", high), hvx("hi", high)]


def halves(q, start, q_dtype: str) -> list:
    """The 128 bytes of ``q`` from ``start`` as 2 vectors of 64 int16, in order (``vunpack``)."""
    unpack = {"uint8": "vunpackub", "int8": "vunpackb"}[q_dtype]
    pair = hvx(unpack, T.reinterpret(q.vload([start], f"{q_dtype}x128"), dtype="int32x32"), dtype="int32x64")
    return [hvx("lo", pair), hvx("hi", pair)]


def _half_splat(value: int):
    return T.reinterpret(T.broadcast(T.int16(value), 64), dtype="int32x32")


def _byte_splat(value: int, dtype: str):
    return T.reinterpret(T.broadcast(T.Cast(dtype, value), 128), dtype="int32x32")


def pack_words(t, lo: int, hi: int, dtype: str):
    """Four channels' 32 requantized (unclamped) int32 lanes as one word a pixel: saturating
    packs in the order t0, t2, t1, t3 (32 bytes each), then ``vshuffb`` and ``vshuffh``
    interleave them pixel by pixel; a clamp narrower than the type's range on the bytes."""
    pack, (low_op, high_op) = {"uint8": ("vpackhub.sat", ("vmaxub", "vminub")),
                               "int8": ("vpackhb.sat", ("vmaxb", "vminb"))}[dtype]
    words = hvx("vshuffh", hvx("vshuffb", hvx(pack, hvx("vpackwh.sat", t[3], t[1]), hvx("vpackwh.sat", t[2], t[0]))))
    if (lo, hi) != RANGES[dtype]:
        words = hvx(high_op, hvx(low_op, words, _byte_splat(lo, dtype)), _byte_splat(hi, dtype))
    return words


def _requantized_row(acc, bias, mult, shift, half, pre, base, k, zy, lo, hi, clamp: bool = True):
    """32 accumulators from ``base`` of channel ``k``, requantized (``requantize_vector``)."""
    return requantize_vector(acc.vload([base], "int32x32"), bias, mult, shift, half, pre, k, zy, lo, hi, clamp)


def requantize_vector(acc, bias, mult, shift, half, pre, k, zy, lo, hi, clamp: bool = True):
    """32 int32 accumulators of channel ``k`` requantized and (``clamp``) clamped (int32
    lanes); the channel's constants as scalars, the shifts as scalar operands."""
    a = hvx("vaslw.acc", T.broadcast(T.shift_left(bias[k], pre[k]), 32), acc, pre[k])  # (acc + bias) << pre, mod 2^32
    mv = T.broadcast(mult[k], 32)
    t = hvx("vmpyowh.rnd.sacc", hvx("vmpyewuh", a, mv), a, mv)
    t = hvx("vasrw.acc", T.broadcast(zy, 32), t + T.broadcast(half[k], 32), shift[k])
    return T.max(T.min(t, T.broadcast(hi, 32)), T.broadcast(lo, 32)) if clamp else t


def _narrow(t, dtype: str, table: Table | None = None, lut=None):
    """32 int32 lanes in ``dtype``'s range as 32 bytes: saturating packs (word -> half -> byte,
    each putting its low operand first), the first 32 bytes of the result (through ``table`` if
    any: the table's type)."""
    pack = {"uint8": "vpackhub.sat", "int8": "vpackhb.sat"}[dtype]
    halves = hvx("vpackwh.sat", t, t)
    words = hvx(pack, halves, halves)
    out = T.reinterpret(words, dtype=f"{dtype}x128") if table is None else _looked_up(words, table, lut)
    return T.Shuffle([out], list(range(32)))
