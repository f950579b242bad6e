"""The squeeze-and-excite product on HVX: ``(qa - za) * (qb - zb)`` requantized with one rounding
(``passes.quantized.integer_multiply``), the per-channel gate tiled to whole vectors first
(``tile_gate_kernel``), 128 outputs at a time (``requantize_product_kernel``)."""

from __future__ import annotations

import numpy as np
import tvm
from tvm.script import tirx as T

from ...geometry.fixed_point import RANGES
from .intrinsics import hvx, opaque_vector
from .requantize import SPAN_GROUPS, _byte_splat, _half_splat, halves


def tile_gate_kernel(channels: int, period: int, dtype: str, hvx_code: bool = True) -> tvm.tirx.PrimFunc:
    """A gate of ``C`` bytes -> ``period`` bytes (any length from ``C``): ``out[j] = gate[j % C]``,
    the operand ``requantize_product_kernel`` reads 128 bytes at a time. The first ``C``
    bytes copied, then the filled part doubled until ``period``: each copy whole vectors
    (unaligned) and, for a length that is not whole vectors, its last 128 bytes once more;
    copies under 128 bytes in a plain loop. ``hvx_code=False``: a plain loop."""
    stages = (-(-period // channels) - 1).bit_length()  # doublings from C to period (the last one partial)

    @T.prim_func(s_tir=True)  # a root block, as relax's pattern analysis expects
    def tile_gate(gate_: T.Buffer((channels,), dtype), out_: T.Buffer((period,), dtype)):
        T.func_attr({"tirx.noalias": True})
        with T.sblock("root"):
            gate = T.decl_buffer((channels,), "uint8", data=gate_.data)  # bytes either way
            out = T.decl_buffer((period,), "uint8", data=out_.data)
            for v in range(channels // 128):
                out[T.ramp(v * 128, 1, 128)] = opaque_vector(gate[T.ramp(v * 128, 1, 128)])
            if channels >= 128 and channels % 128 != 0:
                out[T.ramp(channels - 128, 1, 128)] = opaque_vector(gate[T.ramp(channels - 128, 1, 128)])
            if channels < 128:
                for j in range(channels):
                    out[j] = gate[j]
            for s in T.unroll(stages):
                if T.min(channels << s, period - (channels << s)) >= 128:
                    for v in range(T.min(channels << s, period - (channels << s)) // 128):
                        out[T.ramp((channels << s) + v * 128, 1, 128)] = opaque_vector(out[T.ramp(v * 128, 1, 128)])
                    out[T.ramp((channels << s) + T.min(channels << s, period - (channels << s)) - 128, 1, 128)] = \
                        opaque_vector(out[T.ramp(T.min(channels << s, period - (channels << s)) - 128, 1, 128)])
                else:
                    for j in range(T.min(channels << s, period - (channels << s))):
                        out[(channels << s) + j] = out[j]

    @T.prim_func(s_tir=True)
    def plain_tile_gate(gate: T.Buffer((channels,), dtype), out: T.Buffer((period,), dtype)):
        T.func_attr({"tirx.noalias": True})
        with T.sblock("root"):
            for j in range(period):
                out[j] = gate[j % channels]

    return tile_gate if hvx_code else plain_tile_gate


def gate_length(shape, period: int) -> int:
    """The bytes of ``requantize_product_kernel``'s ``qb``: ``period``, and 128 more where the
    kernel ends with the last 128 outputs (a tail that is not a whole vector) off a tiled gate."""
    total = int(np.prod(shape))
    return period + 128 if period != total and total % 128 and total > 128 and period % 128 == 0 else period


def requantize_product_kernel(shape, period: int, a_dtype: str, za: int, b_dtype: str, zb: int, m: int, zy: int,
                              lo: int, hi: int, dtype: str, hvx_code: bool = True) -> tvm.tirx.PrimFunc:
    """``(qa, qb) -> dtype``: ``((qa - za) * (qb - zb) * m + 2**30) >> 31`` plus ``zy``, clamped
    (``passes.quantized.integer_multiply``: one rounding). ``qb`` is ``gate_length`` bytes that
    repeat every ``period`` along the flattened ``qa`` (a per-channel gate tiled to a multiple of
    128 bytes, so each 128-byte group of ``qa`` meets one aligned 128-byte window of it;
    ``period`` = the element count of ``qa`` for a product of one shape); a tail that is not a
    whole vector is the last 128 outputs computed again (MobileNetV3's 6x6x240 squeeze-excite
    products ran their last 64 a value at a time: 2.1k packets, 0.8k of them for those).
    ``hvx_code=False``: a plain loop."""
    total, length = int(np.prod(shape)), gate_length(shape, period)
    groups = total // 128 if period % 128 == 0 or period == total else 0  # whole aligned windows of qb
    overlap = groups > 0 and total % 128 != 0  # the last 128 outputs once more, for the tail
    windows = period // 128 if period % 128 == 0 else 1  # groups a period of qb
    span = windows * -(-SPAN_GROUPS // windows)  # groups an iteration, independent: whole periods, at least SPAN_GROUPS
    supers = groups // span

    def element(qa, qb):
        p = (T.cast(qa, "int32") - za) * (T.cast(qb, "int32") - zb)
        t = ((T.cast(p, "int64") * T.int64(m) + T.int64(1 << 30)) >> T.int64(31)) + T.int64(zy)
        return T.cast(T.max(T.min(t, T.int64(hi)), T.int64(lo)), dtype)

    pack = {"uint8": "vpackhub.sat", "int8": "vpackhb.sat"}[dtype]
    full_range = (lo, hi) == RANGES[dtype]
    low_op, high_op = {"uint8": ("vmaxub", "vminub"), "int8": ("vmaxb", "vminb")}[dtype]

    def clamped(words):
        """128 packed bytes clamped to ``[lo, hi]`` (the saturating packs clamp to the type's range)."""
        return words if full_range else hvx(high_op, hvx(low_op, words, _byte_splat(lo, dtype)), _byte_splat(hi, dtype))

    def requantized(p):
        """32 int32 products requantized, int32 (the packs saturate to the type's range)."""
        mv = T.broadcast(m, 32)
        return hvx("vmpyowh.rnd.sacc", hvx("vmpyewuh", p, mv), p, mv) + T.broadcast(zy, 32)

    def product_bytes(qa, qb, start, window=None):
        """128 outputs from ``start`` (``window``: its offset in ``qb``, if not ``start % period``):
        the operands widened to halfwords (``vunpack``) less their zero points (9 bits),
        multiplied into words (``vmpyhv``: even and odd elements apart), requantized, saturated
        back to halfwords in order (``vsatwh`` interleaves the even and odd words), packed to bytes."""
        words = []
        for x, y in zip(halves(qa, start, a_dtype), halves(qb, start % period if window is None else window, b_dtype)):
            pair = hvx("vmpyhv", hvx("vsubh", x, _half_splat(za)), hvx("vsubh", y, _half_splat(zb)), dtype="int32x64")
            words.append(hvx("vsatwh", requantized(hvx("hi", pair)), requantized(hvx("lo", pair))))
        return T.reinterpret(clamped(hvx(pack, words[1], words[0])), dtype=f"{dtype}x128")

    @T.prim_func(s_tir=True)  # a root block, as relax's pattern analysis expects
    def requantize_product(qa_: T.Buffer(shape, a_dtype, align=128), qb: T.Buffer((length,), b_dtype, align=128),
                           out_: T.Buffer(shape, dtype, align=128)):
        T.func_attr({"tirx.noalias": True})
        with T.sblock("root"):
            qa = T.decl_buffer((total,), a_dtype, data=qa_.data)
            out = T.decl_buffer((total,), dtype, data=out_.data)
            for u in range(supers):  # whole spans: each group's window of qb a constant offset
                for q in T.unroll(span):
                    out[T.ramp((u * span + q) * 128, 1, 128)] = product_bytes(qa, qb, (u * span + q) * 128, q * 128 % period)
            for g in range(supers * span, groups):
                out[T.ramp(g * 128, 1, 128)] = product_bytes(qa, qb, g * 128)
            if overlap:
                out[T.ramp(total - 128, 1, 128)] = product_bytes(qa, qb, total - 128)
            else:
                for e in range(groups * 128, total):
                    out[e] = element(qa[e], qb[e % period])

    @T.prim_func(s_tir=True)
    def plain_product(qa_: T.Buffer(shape, a_dtype), qb: T.Buffer((length,), b_dtype), out_: T.Buffer(shape, dtype)):
        T.func_attr({"tirx.noalias": True})
        with T.sblock("root"):
            qa = T.decl_buffer((total,), a_dtype, data=qa_.data)
            out = T.decl_buffer((total,), dtype, data=out_.data)
            for e in range(total):
                out[e] = element(qa[e], qb[e % period])

    return requantize_product if hvx_code else plain_product
