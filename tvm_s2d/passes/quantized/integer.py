"""``IntegerArithmetic``: the quantized ops of a QDQ graph as integer arithmetic, as a rule set
(the onnxscript rewriter's way): each rule is a pattern on a ``quantize`` binding, a check
with a readable reason when it refuses, and a rewrite; ``RULES`` are applied in one traversal
of each function (``integer_requantize.rewrite_quantizes``), in order: the first rule that
takes a binding rewrites it; when none does, the first refusal is its outcome.

| rule | the quantized op | module |
| --- | --- | --- |
| ``IntegerRequantize`` | a conv's float epilogue (bias, ReLU/Clip, requantize) | ``integer_requantize.py`` |
| ``IntegerAdd`` | the residual add of two quantized tensors | ``integer_add.py`` |
| ``IntegerPoolConcat`` | max pools and concats | ``integer_pool_concat.py`` |
| ``IntegerMovement`` | reshapes, transposes, slices of one quantization | ``integer_movement.py`` |
| ``IntegerMultiply`` | the product of two quantized tensors (squeeze-and-excitation gates) | ``integer_multiply.py`` |
| ``IntegerTables`` | float activations of one 8-bit tensor (Sigmoid, SiLU, ...) as tables | ``integer_tables.py`` |
| ``IntegerSoftmax`` | a softmax's exponentials as a table of byte differences | ``integer_softmax.py`` |

A rule is left out by naming it in ``PassContext(disabled_pass=[...])``, as if it were a pass
(``disabled_pass=["IntegerRequantize"]``: quantized convs keep their float epilogue).
"""

from __future__ import annotations

import tvm

from ..outcome import Outcome
from .integer_add import integer_add
from .integer_movement import integer_movement
from .integer_multiply import integer_multiply
from .integer_pool_concat import integer_pool_concat
from .integer_requantize import integer_epilogue, rewrite_quantizes
from .integer_softmax import integer_softmax
from .integer_tables import integer_tables

PASS_NAME = "IntegerArithmetic"
RULES = (("IntegerRequantize", integer_epilogue), ("IntegerAdd", integer_add), ("IntegerPoolConcat", integer_pool_concat),
         ("IntegerMovement", integer_movement), ("IntegerTables", integer_tables), ("IntegerMultiply", integer_multiply),
         ("IntegerSoftmax", integer_softmax))


@tvm.transform.module_pass(opt_level=0, name=PASS_NAME)
class IntegerArithmetic:
    def __init__(self, rules: tuple[str, ...] | None = None):
        known = [name for name, _ in RULES]
        unknown = set(rules or ()) - set(known)
        if unknown:
            raise ValueError(f"no integer rule {', '.join(sorted(unknown))} (the rules: {', '.join(known)})")
        self.rules = tuple(rules) if rules is not None else tuple(known)
        self.outcomes: list[Outcome] = []

    def transform_module(self, mod: tvm.IRModule, ctx: tvm.transform.PassContext) -> tvm.IRModule:
        self.outcomes = []
        disabled = set(ctx.disabled_pass) if ctx is not None else set()
        rules = [rule for name, rule in RULES if name in self.rules and name not in disabled]

        def first(rewriter, quantize):
            refusals = []
            for rule in rules:
                found = rule(rewriter, quantize)
                if not isinstance(found, str):
                    return found
                if found:
                    refusals.append(found)
            return refusals[0] if refusals else ""

        return rewrite_quantizes(mod, self.outcomes, first)


def IntegerRequantize() -> IntegerArithmetic:  # noqa: N802 - the rule, alone, as a pass
    return IntegerArithmetic(rules=("IntegerRequantize",))


def IntegerAdd() -> IntegerArithmetic:  # noqa: N802
    return IntegerArithmetic(rules=("IntegerAdd",))


def IntegerPoolConcat() -> IntegerArithmetic:  # noqa: N802
    return IntegerArithmetic(rules=("IntegerPoolConcat",))


def IntegerMovement() -> IntegerArithmetic:  # noqa: N802
    return IntegerArithmetic(rules=("IntegerMovement",))


def IntegerTables() -> IntegerArithmetic:  # noqa: N802
    return IntegerArithmetic(rules=("IntegerTables",))


def IntegerMultiply() -> IntegerArithmetic:  # noqa: N802
    return IntegerArithmetic(rules=("IntegerMultiply",))


def IntegerSoftmax() -> IntegerArithmetic:  # noqa: N802
    return IntegerArithmetic(rules=("IntegerSoftmax",))
