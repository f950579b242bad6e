"""The rule ``IntegerSoftmax`` (of ``integer.IntegerArithmetic``): a softmax between a
``dequantize`` and a ``quantize`` with its exponentials looked up by byte differences.

A classifier quantized by ONNX Runtime ends in ``quantize(softmax(dequantize(q, s, z)), sy,
zy)``. Softmax subtracts the row's maximum first, so every exponent is ``s * (q - max(q))``:
one of 256 values for an 8-bit ``q``, known at compile time. The rule writes

    d = max(q) - q                        int32, 0 .. 255 (the maximum along the softmax axis)
    e = E[d]                              E[k] = exp(-s * k) in float64, rounded to float32
    r = 1 / (sum(e) * sy)                 one division a row
    clamp(int(e * r + 0.5) + zy, lo, hi)  e * r >= 0: a truncation rounds it

On Hexagon the float graph ran as scalar libm code: its ``exp`` ~480 packets an element
(SqueezeNet's 1000 classes: 477k packets, half the model), a division and a ``round`` ~40
more; here a load, a multiply and a conversion, ~15 packets an element in all. Not bit for
bit the float graph, which rounds ``x - max(x)`` in float32 before its ``exp``, sums in its
kernel's order, divides each element and rounds half to even: these are ulps of a value
in [0, 256], which move an output a step only where it lies that close to a rounding
boundary (tested against the float graph, exact float64 and ONNX Runtime). CPU and Hexagon
builds compute the same graph, so the CPU build stays the bit-exact reference. Per-tensor
quantization only; any axis.
"""

from __future__ import annotations

import numpy as np
from tvm import relax

from ...geometry.fixed_point import RANGES
from ..relax_tools import call_of
from .integer_add import dequantized
from .integer_requantize import quantize_params

RULE_NAME = "IntegerSoftmax"


def exp_table(scale: float, dtype: str) -> np.ndarray:
    """``E[k] = exp(-scale * k)`` for every difference ``k`` two values of ``dtype`` can have,
    in float64 from the float32 scale, rounded to float32."""
    lo, hi = RANGES[dtype]
    return np.exp(-np.float64(np.float32(scale)) * np.arange(hi - lo + 1)).astype(np.float32)


def integer_softmax(rewriter, quantize: relax.Call):
    """A quantized softmax with its exponentials as a table (the module doc), or why not ("" for
    no softmax)."""
    params = quantize_params(quantize, rewriter.var2val)
    softmax = None if params is None else call_of(quantize.args[0], rewriter.var2val, "relax.nn.softmax")
    if softmax is None:
        return ""
    found = dequantized(softmax.args[0], rewriter.var2val)
    if found is None:
        return "a softmax of a tensor that is not a per-tensor dequantized 8-bit tensor"
    q, scale, _ = found
    axis = int(softmax.attrs.axis)
    bb = rewriter.builder_
    wide = bb.emit(relax.op.astype(rewriter.visit_expr(q), "int32"))
    top = bb.emit(relax.op.max(wide, axis=axis, keepdims=True))
    e = bb.emit(relax.op.take(relax.const(exp_table(scale, str(q.ty.dtype))), relax.op.subtract(top, wide), axis=0,
                              mode="clip"))
    total = bb.emit(relax.op.sum(e, axis=axis, keepdims=True))
    sy, zy, lo, hi, dtype = params
    inverse = bb.emit(relax.op.divide(relax.const(np.float32(1)), relax.op.multiply(total, relax.const(np.float32(sy)))))
    steps = bb.emit(relax.op.astype(relax.op.add(relax.op.multiply(e, inverse), relax.const(np.float32(0.5))), "int32"))
    value = relax.op.astype(relax.op.clip(relax.op.add(steps, relax.const(zy, "int32")), lo, hi), dtype)
    return None, "softmax with its exponentials as a 256-entry table of byte differences", value
