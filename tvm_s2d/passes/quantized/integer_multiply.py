"""The rule ``IntegerMultiply`` (of ``integer.IntegerArithmetic``): the product of two
quantized tensors in integers, as a squeeze-and-excitation gate computes it (``x * s``, ``s``
a per-channel sigmoid broadcast over the image; EfficientNet, MobileNetV3).

    quantize(dequantize(qa, sa, za) * dequantize(qb, sb, zb), sy, zy)
      ->  requantize((qa - za) * (qb - zb), sa * sb / sy)         int32, |product| < 2**16

one int32 product (the broadcast as the float graph has it) and the conv epilogue's
requantization (``integer_requantize``): at most one step from the float, which rounds the
product and the division once each. A product of one tensor with itself through an
activation (SiLU's ``x * sigmoid(x)``) is ``IntegerTables``' business: a table is exact.
Per-tensor scales only; an output scale that would need a multiplier of 1 or more is left
alone (``outcomes`` says why).
"""

from __future__ import annotations

import numpy as np
from tvm import relax

from ...geometry.fixed_point import fixed_point
from ..relax_tools import call_of, static_shape
from .integer_add import dequantized
from .integer_requantize import emit_requantize, quantize_params

RULE_NAME = "IntegerMultiply"


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
    if not 0 < ratio < 1:
        return f"a product whose scale ratio sa * sb / sy = {ratio:.3g} is not below 1"
    bb = rewriter.builder_

    def term(q, zero):
        return bb.emit(relax.op.subtract(relax.op.astype(rewriter.visit_expr(q), "int32"), relax.const(zero, "int32")))

    product = bb.emit(relax.op.multiply(term(qa, za), term(qb, zb)))
    m, r = fixed_point(np.array(ratio))
    return None, "integer product (one int32 multiply, one requantization)", emit_requantize(
        bb, product, np.zeros((), np.int32), m, r, zy, lo, hi, dtype)
