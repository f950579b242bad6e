"""The rule ``IntegerMultiply`` (of ``integer.IntegerArithmetic``): the product of two
quantized tensors in integers, as a squeeze-and-excitation gate computes it (``x * s``, ``s``
a per-channel sigmoid broadcast over the image; EfficientNet, MobileNetV3).

    quantize(dequantize(qa, sa, za) * dequantize(qb, sb, zb), sy, zy)
      ->  requantize((qa - za) * (qb - zb), sa * sb / sy)         int32, |product| < 2**16

one int32 product (the broadcast as the float graph has it) and the conv epilogue's
requantization (``integer_requantize``) with a single rounding: ``M = round(ratio * 2**31)``
and no second shift. The conv epilogue's normalised multiplier (``2**30 <= M < 2**31``) and
its second rounding shift ``r`` rounded twice, and for a gate's ratio (~0.005, ``r = 7``) that
moved 0.3% of all (qa, qb) pairs a step; compounded over EfficientNet-B0's 16 gates, 24 steps on
95% of its outputs. With one rounding ``M`` keeps at least 22 bits (ratios of at least
``2**-9``; smaller ones are left alone): a step only where the exact value lies within
``2**-22`` of a rounding boundary. A product of one tensor with itself through an
activation (SiLU's ``x * sigmoid(x)``) is ``IntegerTables``' business: a table is exact.
Per-tensor scales only; an output scale that would need a multiplier of 1 or more is left
alone (``outcomes`` says why).
"""

from __future__ import annotations

import numpy as np
from tvm import relax

from ...geometry.fixed_point import RANGES
from ..relax_tools import call_of, const_of, static_shape
from .integer_add import dequantized
from .integer_requantize import emit_requantize, quantize_params

RULE_NAME = "IntegerMultiply"
MIN_RATIO = 2.0**-9


def integer_multiply(rewriter, quantize: relax.Call):
    """A quantized product as integers (the module doc), or why not ("" for no product)."""
    params = quantize_params(quantize, rewriter.var2val)
    mul = None if params is None else call_of(quantize.args[0], rewriter.var2val, "relax.multiply")
    if mul is None:
        return ""
    operands = [dequantized(a, rewriter.var2val) for a in mul.args]
    if any(o is None for o in operands):
        return "" if all(o is None for o in operands) else "a product of a dequantized and another tensor"
    if None in (static_shape(o[0]) for o in operands) or static_shape(quantize) is None:
        return "a product of tensors of dynamic shape"
    (qa, sa, za), (qb, sb, zb) = operands
    sy, zy, lo, hi, dtype = params
    ratio = np.float64(sa) * np.float64(sb) / np.float64(sy)
    if not MIN_RATIO <= ratio < 1:
        return f"a product whose scale ratio sa * sb / sy = {ratio:.3g} is not in [2**-9, 1) (one rounding in 31 bits)"
    bb = rewriter.builder_

    def term(q, zero):  # read back by match_product
        return bb.emit(relax.op.subtract(relax.op.astype(rewriter.visit_expr(q), "int32"), relax.const(zero, "int32")))

    product = bb.emit(relax.op.multiply(term(qa, za), term(qb, zb)))
    m = np.int64(np.rint(ratio * 2.0**31))
    return None, "integer product (one int32 multiply, one requantization)", emit_requantize(
        bb, product, np.zeros((), np.int32), min(m, np.int64(2**31 - 1)), np.int64(0), zy, lo, hi, dtype)


def match_product(expr: relax.Expr, var2val: dict):
    """What ``integer_multiply`` wrote before its requantization, read back:
    ``(qa, za, qb, zb)`` for ``(astype(qa) - za) * (astype(qb) - zb)`` in int32, else None
    (``HexagonRequantize`` computes the whole of it on one HVX kernel)."""
    mul = call_of(expr, var2val, "relax.multiply")
    if mul is None or str(mul.ty.dtype) != "int32":
        return None
    found = []
    for term in mul.args:
        sub = call_of(term, var2val, "relax.subtract")
        cast = None if sub is None else call_of(sub.args[0], var2val, "relax.astype")
        zero = None if sub is None else const_of(sub.args[1], var2val)
        if cast is None or zero is None or zero.size != 1 or str(cast.args[0].ty.dtype) not in RANGES:
            return None
        found += [cast.args[0], int(zero.reshape(()))]
    return tuple(found)
