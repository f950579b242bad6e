"""HVX intrinsics for the hand-written kernels: the two ``vrmpy`` tensor intrinsics, made by
one generator and registered in one block (as TVM's ``s_tir/tensor_intrin/hexagon.py`` does),
and the helpers that call HVX instructions from TVMScript.

Both ``vrmpy`` forms add to 32 int32 lanes a 4-way dot product of bytes, with the
accumulator in "local" scope so a block of outputs accumulates in HVX registers, and both
are vector-by-scalar (two per packet on v66): a ``(32, 4)`` byte vector operand times 4
bytes of a scalar register.

* ``VRMPY_LANES`` (``vrmpyub``, u8 x u8): the weights' vector times a pixel's 4 channels
  (channel-in-lanes mapping, ``lanes.py``);
* ``VRMPY_BY_SCALAR`` (``vrmpybus``, u8 x i8): 32 pixels' 4 channels times 4 weights
  (width mapping, ``width.py``).
"""

from __future__ import annotations

import tvm
from tvm import te
from tvm.s_tir import TensorIntrin
from tvm.script import tirx as T
from tvm.tirx import decl_buffer
from tvm.tirx.transform.common import BufferReplacer

LANES, DEPTH = 32, 4
VECTOR_BYTES = 128


def aligned_prim_func(args) -> tvm.tirx.PrimFunc:
    """``te.create_prim_func(args)`` with every parameter declared ``VECTOR_BYTES``-aligned, as the
    kernels written in TVMScript declare theirs (``align=128``): TVM tells LLVM only 64 bytes
    otherwise, and LLVM then loads each HVX vector as two loads and a ``valign``. The emulator's
    buffers and TVM's Hexagon allocations are 128-byte aligned."""
    func = te.create_prim_func(args)
    aligned = {b: decl_buffer(b.ty.shape, b.ty.dtype, b.name, data_alignment=VECTOR_BYTES) for b in func.params}
    return BufferReplacer(aligned)(func)


def vrmpy_intrinsic(instruction: str, vector_dtype: str, scalar_dtype: str, vector_first: bool):
    """``(desc, impl)`` of ``C[32] += V[32, 4] . S[4]`` on ``llvm.hexagon.V6.<instruction>``;
    the desc's operands in the order the compute blocks multiply them (``vector_first``: ``V``
    is the first argument)."""
    a_shape, a_dtype = ((32, 4), vector_dtype) if vector_first else ((4,), scalar_dtype)
    b_shape, b_dtype = ((4,), scalar_dtype) if vector_first else ((32, 4), vector_dtype)
    vector_lanes, scalar_lanes = f"{vector_dtype}x128", f"{scalar_dtype}x4"
    intrinsic = f"llvm.hexagon.V6.{instruction}.128B"

    @T.prim_func(s_tir=True)
    def desc(a: T.handle, b: T.handle, c: T.handle) -> None:
        A = T.match_buffer(a, a_shape, a_dtype, offset_factor=1)
        B = T.match_buffer(b, b_shape, b_dtype, offset_factor=1)
        C = T.match_buffer(c, (32,), "int32", offset_factor=1, scope="local")
        with T.sblock("root"):
            T.reads(C[0:32], A[0:32, 0:4] if vector_first else A[0:4], B[0:4] if vector_first else B[0:32, 0:4])
            T.writes(C[0:32])
            for i in T.serial(0, 32):
                for k in T.serial(0, 4):
                    with T.sblock("update"):
                        vi, vk = T.axis.remap("SR", [i, k])
                        if vector_first:
                            C[vi] = C[vi] + T.cast(A[vi, vk], "int32") * T.cast(B[vk], "int32")
                        else:
                            C[vi] = C[vi] + T.cast(A[vk], "int32") * T.cast(B[vi, vk], "int32")

    @T.prim_func(s_tir=True)
    def impl(a: T.handle, b: T.handle, c: T.handle) -> None:
        A = T.match_buffer(a, a_shape, a_dtype, offset_factor=1)
        B = T.match_buffer(b, b_shape, b_dtype, offset_factor=1)
        C = T.match_buffer(c, (32,), "int32", offset_factor=1, scope="local")
        with T.sblock("root"):
            T.reads(C[0:32], A[0:32, 0:4] if vector_first else A[0:4], B[0:4] if vector_first else B[0:32, 0:4])
            T.writes(C[0:32])
            if vector_first:
                C[T.ramp(T.int32(0), 1, 32)] = T.call_llvm_pure_intrin(
                    T.llvm_lookup_intrinsic_id(intrinsic), C[T.ramp(T.int32(0), 1, 32)],
                    T.reinterpret(A.vload([0, 0], dtype=vector_lanes), dtype="int32x32"),
                    T.reinterpret(B.vload([0], scalar_lanes), dtype="int32"), dtype="int32x32")
            else:
                C[T.ramp(T.int32(0), 1, 32)] = T.call_llvm_pure_intrin(
                    T.llvm_lookup_intrinsic_id(intrinsic), C[T.ramp(T.int32(0), 1, 32)],
                    T.reinterpret(B.vload([0, 0], dtype=vector_lanes), dtype="int32x32"),
                    T.reinterpret(A.vload([0], scalar_lanes), dtype="int32"), dtype="int32x32")

    return desc, impl


VRMPY_LANES = "s2d_vrmpyub_weights_by_pixel_scalar"
VRMPY_BY_SCALAR = "s2d_vrmpy_u8_by_i8_scalar_local_acc"
INTRINSICS = {
    VRMPY_LANES: {"instruction": "vrmpyub.acc", "vector_dtype": "uint8", "scalar_dtype": "uint8", "vector_first": False},
    VRMPY_BY_SCALAR: {"instruction": "vrmpybus.acc", "vector_dtype": "uint8", "scalar_dtype": "int8", "vector_first": True},
}
for _name, _form in INTRINSICS.items():
    if TensorIntrin.get(_name, allow_missing=True) is None:
        TensorIntrin.register(_name, *vrmpy_intrinsic(**_form))


def hvx(name: str, *args, dtype: str = "int32x32"):
    """The HVX intrinsic ``llvm.hexagon.V6.<name>.128B`` on ``args`` (in the hand-written kernels)."""
    return T.call_llvm_pure_intrin(T.llvm_lookup_intrinsic_id(f"llvm.hexagon.V6.{name}.128B"), *args, dtype=dtype)


def paired_word(x, index, h: int):
    """Word ``h`` (0 or 1) of the two int32 words of ``x`` from ``index`` (even: 8-byte aligned),
    read as one 64-bit load (``memd``): a channel-in-lanes conv reads a pixel's channel words in
    pairs, two ``vrmpy`` a load. A packet holds two memory operations, so a ``vrmpy`` a word load
    ran ~1.3 ``vrmpy`` a packet (24x24 16 -> 72 1x1: 5,371 packets; 4,961 so)."""
    return T.Shuffle([x.vload([index], "int32x2")], [h])


def deal(high, low, size: int):
    """``vdeal`` of the vector pair ``low ++ high`` in elements of ``size`` bytes: the even
    elements (``lo`` of the result), then the odd ones (``hi``)."""
    return hvx("vdealvdd", high, low, -size, dtype="int32x64")


def opaque_vector(value):
    """``value`` (uint8x128) through ``vor`` with itself: LLVM then keeps a copy or fill loop
    as HVX code instead of calling memcpy / memset, which the packet count would not see."""
    vector = T.reinterpret(value, dtype="int32x32")
    return T.reinterpret(hvx("vor", vector, vector), dtype="uint8x128")


def with_fields(func: tvm.tirx.PrimFunc, key: str, fields) -> tvm.tirx.PrimFunc:
    """``func`` with the integers ``fields`` in its attribute ``key`` (a kernel carrying the conv
    it computes, for a later pass to read back with ``fields_of``)."""
    return func.with_attr(key, [int(v) for v in fields])


def fields_of(func, key: str) -> list[int] | None:
    """The integers ``with_fields`` put in ``func``'s attribute ``key``, else None."""
    attrs = getattr(func, "attrs", None)
    return None if attrs is None or key not in attrs else [int(v) for v in attrs[key]]


def roundup(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple
