"""256-entry byte table lookups on HVX ``vlut32`` (``IntegerTables``' activations).

``Vd.b = vlut32(Vu.b, Vv.b, Rt)`` looks every byte ``i`` of ``Vu`` up in a 32-entry segment of
the table vector ``Vv``: with ``m = Rt & 7`` and (128-byte vectors) ``half = (Rt >> 1) & 1``,

    Vd.b[i] = Vv.b[2 * (i' % 64) + half]  if  Vu.ub[i] >> 5 == m  else 0     (i' = Vu.ub[i])

and ``Vx.b |= vlut32(...)`` (``.oracc``) ORs it into an accumulator. A 256-entry table is its
8 segments ``m = 0..7``: each index matches exactly one, so one ``vlut32`` and seven
``vlut32 |=`` per 128 bytes, on two table vectors laid out as ``arrange_table`` does (the
manual's semantics as Halide's hexagon backend uses them; confirmed under qemu-hexagon):
vector ``j // 128``, byte ``2 * (j % 64) + (j // 64) % 2`` holds entry ``j``.

The kernel takes any shape (flattened) and any element count: whole vectors, then the last
128 elements again as one vector overlapping the previous (a lookup writes what it reads
nowhere else); fewer than 128 elements are one vector too, its load the whole aligned vector
(inside the page of the tensor's first byte) and its store predicated on the first ``n``
bytes (``vsetq``, ``if (q) vmem = v``). The tensors are 128-byte aligned as the other kernels
take them (``align=128``: an aligned load and store a vector, one ``vlut32`` a packet, 8
packets a vector in LLVM's unrolled loop). uint8 and int8 alike: the index's byte (int8 as
its two's complement byte, ``take``'s ``mode="wrap"``) picks the entry.

A segment whose 32 entries all equal the table's ``base`` (``table_segments``: the byte most
segments are filled with, e.g. a HardSwish's output zero point below -3) takes no ``vlut32``: the
table vectors hold ``T - base`` (mod 256; those segments' entries 0) and the kernel adds ``base``
back to every byte (one ``vadd``): MobileNetV3-Small's HardSwish tables have 1-3 such segments.
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm.script import tirx as T

from .intrinsics import hvx
from ..memo import kernel_cache

LUT_DTYPES = ("uint8", "int8")


def table_segments(table) -> tuple[int, tuple[int, ...]]:
    """``(base, segments)``: the byte (uint8) the most 32-entry segments of ``table`` are filled
    with (0 if none is one value), and the segments ``m`` (entries ``32 m ...``) that are not all
    ``base``: the ones the kernel looks up."""
    t = np.asarray(table).reshape(8, 32).view(np.uint8)
    filled = [int(row[0]) for row in t if np.all(row == row[0])]
    base = max(set(filled), key=filled.count) if filled else 0
    return base, tuple(m for m in range(8) if not np.all(t[m] == base))


def arrange_table(table, base: int = 0) -> np.ndarray:
    """The 256 entries of ``table`` (uint8 or int8) less ``base`` (mod 256) as ``vlut32``'s two
    table vectors (uint8[256])."""
    t = (np.asarray(table).reshape(256).view(np.uint8) - np.uint8(base)).astype(np.uint8)
    out = np.empty(256, np.uint8)
    j = np.arange(256)
    out[table_position(j)] = t
    return out


def table_position(j):
    """Where entry ``j`` sits in ``arrange_table``'s layout (numpy or TIR integers)."""
    return (j // 128) * 128 + (j % 64) * 2 + (j // 64) % 2


def _flat(shape) -> tuple[tuple[int, ...], int]:
    shape = tuple(int(d) for d in shape)
    return shape, int(np.prod(shape, dtype=np.int64))


def _index_byte(value, dtype):
    """An 8-bit index as its unsigned byte, in int32 (the table's position arithmetic)."""
    return T.cast(value if dtype == "uint8" else T.reinterpret(value, dtype="uint8"), "int32")


def lookup_vector(idx, lo, hi, base: int, segments: tuple[int, ...]):
    """128 bytes (``idx``, int32x32) looked up: ``vlut32`` on the table vectors ``lo`` / ``hi``
    (``arrange_table``'s, int32x32) for each of ``segments``, ``base`` added back (int32x32)."""
    acc = T.broadcast(T.int32(0), 32)
    for i, segment in enumerate(segments):
        table = lo if segment < 4 else hi
        acc = hvx("vlutvvb", idx, table, segment) if i == 0 else hvx("vlutvvb.oracc", acc, idx, table, segment)
    if base:
        acc = hvx("vaddb", acc, T.reinterpret(T.broadcast(T.uint8(base), 128), dtype="int32x32"))
    return acc


def table_vectors(table):
    """The two table vectors of an ``arrange_table`` buffer (uint8[256]), int32x32 each."""
    return [T.reinterpret(table.vload([o], "uint8x128"), dtype="int32x32") for o in (0, 128)]


def table_entry(table, index, index_dtype: str, out_dtype: str, base: int):
    """One index (``index_dtype``) looked up in an ``arrange_table`` buffer: ``out_dtype``."""
    return T.reinterpret(table[table_position(_index_byte(index, index_dtype))] + T.uint8(base), dtype=out_dtype)


@kernel_cache
def lookup_table(shape, index_dtype: str, out_dtype: str, base: int = 0,
                 segments: tuple[int, ...] = tuple(range(8))) -> tvm.tirx.PrimFunc:
    """``y = T[x]``, elementwise: ``x`` of ``shape`` and ``index_dtype``, ``table`` the 256
    entries less ``base`` as ``arrange_table`` lays them out, ``y`` of ``out_dtype`` (the table's
    type); ``segments``: the ones to look up (``table_segments``; the others' entries are ``base``)."""
    shape, n = _flat(shape)
    assert n > 0, "an empty tensor has no lookup"
    full = n // 128
    overlap = n >= 128 and n % 128 != 0
    lanes_in, lanes_out = f"{index_dtype}x128", f"{out_dtype}x128"

    def vlut(x, offset, lo, hi):
        idx = T.reinterpret(x.vload([offset], lanes_in), dtype="int32x32")
        return T.reinterpret(lookup_vector(idx, lo, hi, base, segments), dtype=lanes_out)

    @T.prim_func(s_tir=True)  # a root block, as relax's pattern analysis expects
    def lookup(x_: T.Buffer(shape, index_dtype, align=128), table: T.Buffer((256,), "uint8", align=128),
               y_: T.Buffer(shape, out_dtype, align=128)):
        T.func_attr({"tirx.noalias": True})
        with T.sblock("root"):
            x = T.decl_buffer((n,), index_dtype, data=x_.data, align=128)
            y = T.decl_buffer((n,), out_dtype, data=y_.data, align=128)
            lo, hi = table_vectors(table)
            for v in range(full):
                y[T.ramp(v * 128, 1, 128)] = vlut(x, v * 128, lo, hi)
            if overlap:
                y[T.ramp(n - 128, 1, 128)] = vlut(x, n - 128, lo, hi)
            if n < 128:  # one vector (an aligned load: within x's page), its first n bytes stored
                T.evaluate(T.call_llvm_intrin(
                    T.llvm_lookup_intrinsic_id("llvm.hexagon.V6.vS32b.qpred.ai.128B"),
                    T.call_llvm_pure_intrin(T.llvm_lookup_intrinsic_id("llvm.hexagon.V6.pred.scalar2.128B"), n,
                                            dtype="boolx128"),
                    y.access_ptr("w"), T.reinterpret(vlut(x, 0, lo, hi), dtype="int32x32"), dtype="void"))

    return lookup


def plain_lookup_table(shape, index_dtype: str, out_dtype: str, base: int = 0) -> tvm.tirx.PrimFunc:
    """``lookup_table`` as a plain loop on the same arranged table (any target: the CPU reference)."""
    shape, n = _flat(shape)

    @T.prim_func(s_tir=True)
    def lookup(x_: T.Buffer(shape, index_dtype), table: T.Buffer((256,), "uint8"), y_: T.Buffer(shape, out_dtype)):
        T.func_attr({"tirx.noalias": True})
        with T.sblock("root"):
            x = T.decl_buffer((n,), index_dtype, data=x_.data)
            y = T.decl_buffer((n,), out_dtype, data=y_.data)
            for i in range(n):
                y[i] = table_entry(table, x[i], index_dtype, out_dtype, base)

    return lookup
