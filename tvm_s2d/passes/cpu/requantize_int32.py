"""``CpuRequantizeInt32``: the requantization after an integer conv in 32-bit lanes after its
multiply, on CPUs without AVX-512.

``IntegerRequantize`` writes ``q = clamp(((a * M + 2**(f-1)) >> f + 2**(r-1)) >> r + zy, lo, hi)``
(``f = 31 - pre``) in int64, the arithmetic every target can run. AVX2 has neither a 64-bit
multiply nor a 64-bit arithmetic shift: LLVM emulates both, about 65 instructions a vector of 8
outputs in the conv kernel's write-back, more than the conv itself for 1x1 convs of few input
channels (MobileNetV2's 16 -> 96 at 112x112). The same integers with only the multiply in int64:

    t = int32((a * M + 2**(f-1)) >> f)                 LLVM keeps bits f..f+31 only: no sign fill
    s = (t >> r) + ((t >> max(r - 1, 0)) & [r > 0])    the rounding right shift, bit r-1 its carry
    q = clamp(s, lo - zy, hi - zy) + zy

``t`` is the int64 ``(a * M + 2**(f-1)) >> f`` whenever that fits in int32, which the headroom shift
guarantees (``|a| << pre`` stays under 2**30, ``M < 2**31``: ``|t| <= 2**30``); ``s`` never
overflows (``t >> r`` for ``r >= 1`` is under 2**30), and the clamp before ``+ zy`` keeps that
add inside int32 too. So the rewrite is exact for every int32 ``a``, with no bound to prove
(tested at the extremes of int32 against the int64 form). Written as a logical shift of the
product cast to uint64, the vectorized kernel gave wrong values for negative products (TVM's x86
code for that cast; not pursued): the arithmetic shift, truncated, is what LLVM narrows.

Runs on LLVM CPU targets without AVX-512 (``avx512f``: its 64-bit multiply and shifts run the
int64 form natively), in the ``cpu`` stage, after the layout (it reads ``match_requantize``'s
form, which ``CpuLayout`` carries). ``disabled_pass=["CpuRequantizeInt32"]``: the int64 form.
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax
from tvm.relax.dpl import is_op, wildcard

from ...targets import vector_lanes
from ..quantized.integer_requantize import match_requantize
from ..relax_tools import map_relax_functions
from ..rules import CpuRuleSet, Rule, rewrite_rules

PASS_NAME = "CpuRequantizeInt32"


def has_avx512(target: tvm.target.Target) -> bool:
    """AVX-512 (``avx512f``): ``vector_lanes``' 16 float32 lanes."""
    return vector_lanes(target) == 16


def requantize_int32(x: relax.Expr, b, m, r, zy: int, lo: int, hi: int, dtype: str, pre) -> relax.Expr:
    """The module doc's integers on the int32 accumulator ``x`` (``match_requantize``'s terms)."""
    a = relax.op.add(x, relax.const(b, "int32")) if np.any(b) else x
    first = 31 - np.asarray(pre, np.int64)
    product = relax.op.add(relax.op.multiply(relax.op.astype(a, "int64"), relax.const(m, "int64")),
                           relax.const((np.int64(1) << first) >> 1, "int64"))
    t = relax.op.astype(relax.op.right_shift(product, relax.const(first, "int64")), "int32")
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
