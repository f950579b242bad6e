"""``CpuRequantizeInt32``: the requantization after an integer conv in 32-bit lanes after its
multiply, on CPUs without AVX-512; ``NarrowMultipliers``: that multiply as a 32 x 32 -> 64-bit one.

``IntegerRequantize`` writes ``q = clamp(((a * M + 2**(f-1)) >> f + 2**(r-1)) >> r + zy, lo, hi)``
(``f = 31 - pre``) in int64, the arithmetic every target can run. AVX2 has neither a 64-bit
multiply nor a 64-bit arithmetic shift: LLVM emulates both, about 65 instructions a vector of 8
outputs in the conv kernel's write-back, more than the conv itself for 1x1 convs of few input
channels (MobileNetV2's 16 -> 96 at 112x112). The same integers with only the multiply in int64:

    t = int32(((a << pre) * M + 2**30) >> 31)          LLVM keeps bits 31..62 only: no sign fill
    s = (t >> r) + ((t >> max(r - 1, 0)) & [r > 0])    the rounding right shift, bit r-1 its carry
    q = clamp(s, lo - zy, hi - zy) + zy

``(a << pre) * M + 2**30`` is ``2**pre (a * M + 2**(f-1))``, so its shift by 31 is the int64 form's
shift by ``f`` (what the HVX kernels compute); ``a << pre`` stays in int32, ``|a| << pre < 2**30``, by
the headroom ``IntegerRequantize`` chooses (from the weights: ``integer_requantize.headroom``), and
with ``pre = 0`` for every int32 ``a`` (tested at int32's extremes against the int64 form). ``|t| <=
2**30``; ``s`` never overflows (``t >> r`` for ``r >= 1`` is under 2**30), and the clamp before ``+ zy``
keeps that add inside int32 too. A constant shift by 31 (not a shift by ``f`` per channel, which
AVX2 has no instruction for in 64 bits) is what LLVM narrows. Written as a logical shift of the
product cast to uint64, the vectorized kernel gave wrong values for negative products (TVM's x86
code for that cast; not pursued).

The multiply is int64 x int64 in Relax, ``M`` an int64 constant: LLVM emulates it with three
``vpmuludq``. ``NarrowMultipliers`` (after ``FuseTIR``) finds each kernel's int64 operands that every
call passes as a constant inside int32 and writes their loads in a product as
``int64(int32(load))``: LLVM then sees two sign-extended 32-bit operands and multiplies them with
one ``vpmuldq`` (a vectorized loop of such products: 1044 -> 741 instructions).

Run on LLVM CPU targets without AVX-512 (``avx512f``: its 64-bit multiply and shifts run the
int64 form natively), in the ``cpu`` stage, after the layout (it reads ``match_requantize``'s
form, which ``CpuLayout`` carries). ``disabled_pass=["CpuRequantizeInt32"]``: the int64 form.
"""

from __future__ import annotations

import numpy as np
import tvm
import tvm_ffi
from tvm import relax
from tvm.ir.expr import TensorLoad
from tvm.ir.prim.expr import Cast, Mul
from tvm.relax.dpl import is_op, wildcard

from ...targets import vector_lanes
from ..quantized.integer_requantize import match_requantize
from ..outcome import applied
from ..relax_tools import constant_arguments, map_relax_functions, with_functions
from ..rules import CpuPass, CpuRuleSet, Rule, rewrite_rules

PASS_NAME = "CpuRequantizeInt32"


def has_avx512(target: tvm.target.Target) -> bool:
    """AVX-512 (``avx512f``): ``vector_lanes``' 16 float32 lanes."""
    return vector_lanes(target) == 16


def requantize_int32(x: relax.Expr, b, m, r, zy: int, lo: int, hi: int, dtype: str, pre) -> relax.Expr:
    """The module doc's integers on the int32 accumulator ``x`` (``match_requantize``'s terms)."""
    a = relax.op.add(x, relax.const(b, "int32")) if np.any(b) else x
    if np.any(pre):
        a = relax.op.left_shift(a, relax.const(np.asarray(pre, np.int32), "int32"))
    product = relax.op.add(relax.op.multiply(relax.op.astype(a, "int64"), relax.const(m, "int64")),
                           relax.const(1 << 30, "int64"))
    t = relax.op.astype(relax.op.right_shift(product, relax.const(31, "int64")), "int32")
    r = np.asarray(r, np.int64)
    carry = relax.op.bitwise_and(relax.op.right_shift(t, relax.const(np.maximum(r - 1, 0), "int32")),
                                 relax.const((r > 0).astype(np.int32), "int32"))
    s = relax.op.add(relax.op.right_shift(t, relax.const(r, "int32")), carry)
    s = relax.op.minimum(relax.op.maximum(s, relax.const(lo - zy, "int32")), relax.const(hi - zy, "int32"))
    return relax.op.astype(relax.op.add(s, relax.const(zy, "int32")), dtype)


@tvm.transform.module_pass(opt_level=0, name=PASS_NAME)
class CpuRequantizeInt32(CpuRuleSet):
    """Requantizations in int32 after their multiply (the module doc)."""

    def __init__(self, target: tvm.target.Target | None = None):
        self.var2val: dict = {}
        super().__init__([Rule(is_op("relax.astype")(wildcard()), self._decide)], target)

    def run(self, mod: tvm.IRModule, target: tvm.target.Target) -> tvm.IRModule:
        if has_avx512(target):
            return mod

        def rewrite(func):
            self.var2val = relax.analysis.get_var2val(func)
            return rewrite_rules(self.rules, func, self.outcomes)

        return map_relax_functions(mod, rewrite)

    def _decide(self, call: relax.Call, _matches):
        found = match_requantize(call, self.var2val)
        if found is None:
            return None  # not a requantization
        x, b, m, r, zy, lo, hi, dtype, pre = found
        if np.any(np.asarray(m) < 0) or np.any(np.asarray(m) >= 2**31) or np.any(np.asarray(r) < 0) \
                or np.any(np.asarray(r) > 31):
            return f"multiplier or shift outside the 31-bit form (shifts {np.min(r)}..{np.max(r)}): the int64 form"
        return requantize_int32(x, b, m, r, zy, lo, hi, dtype, pre), "int32 after the multiply"


@tvm.transform.module_pass(opt_level=0, name="NarrowMultipliers")
class NarrowMultipliers(CpuPass):
    """In each kernel, the products with an int64 operand that every call passes as a constant
    inside int32 read it as ``int64(int32(load))`` (module doc); ``outcomes`` per kernel changed."""

    def run(self, mod: tvm.IRModule, _target) -> tvm.IRModule:
        updates = {}
        for gv, constants in constant_arguments(mod, narrow_int64).items():
            func = mod[gv]
            params = [func.params[i] for i in constants if i < len(func.params)]
            if not params:
                continue
            count = [0]

            def narrow(mul: Mul, params=params, count=count) -> Mul:
                a, b = (_narrowed(e, params) for e in (mul.a, mul.b))
                if a is None and b is None:
                    return mul
                count[0] += 1
                return Mul(mul.a if a is None else a, mul.b if b is None else b)

            body = tvm_ffi.structural_map(func.body, [(Mul, narrow)])
            if count[0]:
                updates[gv] = func.with_body(body)
                applied(self.outcomes, gv.name_hint, f"{count[0]} int64 product(s) of int32-range constants: 32 x 32 -> 64 bits")
        return with_functions(mod, updates)


def narrow_int64(value: np.ndarray) -> bool:
    """Whether a constant argument is int64 with every value inside int32."""
    return value.dtype == np.int64 and value.size > 0 and value.min() >= -(2**31) and value.max() < 2**31


def _narrowed(expr, params):
    """``int64(int32(expr))`` when ``expr`` loads one of ``params``, else None."""
    if isinstance(expr, TensorLoad) and str(expr.ty) == "int64" and any(expr.source.same_as(p) for p in params):
        return Cast("int64", Cast("int32", expr))
    return None
