"""``PowerAsRoots``: ``power(x, c)`` with a constant exponent in quarters as products of ``x``,
``sqrt(x)`` and ``sqrt(sqrt(x))``.

ONNX ``LRN`` (AlexNet, Inception-v1) imports as ``x / power(bias + alpha * avg_pool(x * x),
beta)`` with ``beta = 0.75``, and ``relax.power`` lowers to a call of ``powf``: the Hexagon
harness's libm (``emulator/libm.c``) has none, and glibc's ``powf`` (the CPU build, the
emulator's bit-exact reference) cannot be matched bit for bit cheaply. ``sqrt`` is correctly
rounded IEEE on both (the host's ``sqrtss``, ``libm.c``'s ``sqrtf``), and so is a multiply or
a divide, so this pass writes

    x^c = x^n * sqrt(x)^[f >= 1/2] * sqrt(sqrt(x))^[f in {1/4, 3/4}]     c = n + f, f in {0, 1/4, 1/2, 3/4}

(``x^n`` by squaring, ``n <= 4``; a negative ``c`` as ``1 / x^-c``; ``c = 0`` as ones), e.g.
``x^0.75 = sqrt(x) * sqrt(sqrt(x))``, for every target in the preparation, so the CPU build and
the Hexagon build compute the same floats. It takes a constant scalar float exponent that is a
multiple of 1/4 with ``|c| <= 4``, matched with TVM's pattern language (``rewrite_call``); any
other power is left to ``powf`` and ``outcomes`` says why.

**Accuracy.** Each ``sqrt``, multiply and divide rounds once, so the result is a few ulp from a
correctly rounded ``x^c`` (glibc's ``powf`` is not correctly rounded either: within 1 ulp).
Measured on float32 against ``x^c`` in float64 rounded to float32 (100,000 ``x`` in [1, 2),
LRN's range with ``bias = 1``, and in [2^-6, 2^6]): exact for 0, 0.5, 1, -1 and 2; at most
1 ulp for 0.25, 1.5 and 3, 2 ulp for 0.75 (LRN: 43-47% of the values an ulp or two off, where
glibc's ``powf`` misrounds ~0.1%), 4 for 2.75 and 3.75, 5 for -2.75 and -3.75 (a negative
exponent adds a division's rounding to the positive one's); at most 5 ulp for every exponent
taken (``tests/test_power_as_roots.py``).

Special values: with a fractional exponent, ``x = -inf`` gives NaN (``powf``: ``+inf``, or
``+0`` for a negative exponent), and ``x = -0`` where an odd number of the factors are -0 (0.25,
0.5, 2.5, -0.5, ...) a zero or an infinity of the wrong sign (``sqrt(-0) = -0``; ``powf``:
``+0``, ``+inf``). Near the ends of the float range an intermediate power (``x^n``, or with a
negative exponent the whole ``x^-c`` before the division) can overflow or lose its precision
to subnormals where ``powf`` would not.
"""

from __future__ import annotations

import numpy as np
import tvm
import tvm_ffi
from tvm import relax
from tvm.relax.dpl import is_op, wildcard

from .rules import Rule, RuleSet

PASS_NAME = "PowerAsRoots"
#: The exponents taken: multiples of 1/4 of magnitude at most ``MAX_EXPONENT``.
MAX_EXPONENT = 4
NOT_QUARTERS = "is not a multiple of 1/4 of magnitude at most 4 (left to powf)"


@tvm.transform.module_pass(opt_level=0, name=PASS_NAME)
class PowerAsRoots(RuleSet):
    """Rewrite ``power(x, c)``, ``c`` a constant in quarters with ``|c| <= 4``, as products of
    ``x``, ``sqrt(x)``, ``sqrt(sqrt(x))`` (the module doc); ``outcomes`` per power."""

    def __init__(self):
        self.exponent = wildcard()
        super().__init__([Rule(is_op("relax.power")(wildcard(), self.exponent),
                               lambda call, matches: as_roots(call, matches[self.exponent]))])


def exponent_value(exponent: relax.Expr, call: relax.Call) -> float | str:
    """The exponent of ``call`` as a float, when it is a constant that leaves ``call`` the
    shape of its base; else the reason."""
    if not isinstance(exponent, tvm.ir.GenericConst):
        return "exponent is not a constant (left to powf)"
    value = exponent.value.numpy()
    if value.size != 1:
        return f"exponent is a {value.shape} tensor, not a scalar (left to powf)"
    if value.ndim and not tvm_ffi.structural_equal(call.ty, call.args[0].ty):
        return "the exponent broadcasts the base to another shape (left to powf)"
    return float(value.reshape(()))


def as_roots(call: relax.Call, exponent: relax.Expr):
    """``(expression, what)`` computing ``call`` (a ``power``) from ``x``, ``sqrt(x)`` and
    ``sqrt(sqrt(x))``, or the reason it is left alone."""
    x = call.args[0]
    dtype = str(x.ty.dtype)
    if not dtype.startswith("float"):
        return f"base is {dtype}, not float (left to power)"
    c = exponent_value(exponent, call)
    if isinstance(c, str):
        return c
    quarters = c * 4
    if not np.isfinite(quarters) or quarters != round(quarters) or abs(c) > MAX_EXPONENT:
        return f"exponent {c:g} {NOT_QUARTERS}"
    value, formula = positive_power(x, abs(int(round(quarters))))
    if c < 0:
        value, formula = relax.op.divide(relax.const(1, dtype), value), f"1 / ({formula})"
    return value, f"x^{c:g} as {formula}"


def positive_power(x: relax.Expr, quarters: int) -> tuple[relax.Expr, str]:
    """``x^(quarters / 4)`` (``0 <= quarters <= 16``) and its formula in words."""
    if quarters == 0:
        return relax.op.ones_like(x), "1"
    n, f = divmod(quarters, 4)
    factors = []
    if n:
        square = relax.op.multiply(x, x)
        factors.append({1: (x, "x"), 2: (square, "x * x"), 3: (relax.op.multiply(square, x), "x * x * x"),
                        4: (relax.op.multiply(square, square), "(x * x) * (x * x)")}[n])
    if f:
        root = relax.op.sqrt(x)
        fourth = relax.op.sqrt(root)
        factors += {1: [(fourth, "sqrt(sqrt(x))")], 2: [(root, "sqrt(x)")],
                    3: [(root, "sqrt(x)"), (fourth, "sqrt(sqrt(x))")]}[f]
    value, formula = factors[0]
    for factor, text in factors[1:]:
        value, formula = relax.op.multiply(value, factor), f"{formula} * {text}"
    return value, formula
