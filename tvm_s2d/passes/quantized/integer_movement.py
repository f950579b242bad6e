"""The rule ``IntegerMovement`` (of ``integer.IntegerArithmetic``): quantized data movement on
the 8-bit tensors themselves.

ONNX Runtime's quantizer wraps each Reshape, Transpose, Slice, Squeeze and Unsqueeze of a
quantized tensor in its own ``DequantizeLinear -> op -> QuantizeLinear``, with the input's
scale and zero point on both sides (ShuffleNet's channel split and shuffle are 40 of them);
TVM then moves floats and quantizes them again (on Hexagon ~20 scalar packets an element).
As a rule (pattern -> check -> rewrite):

* ``quantize(M(dequantize(q, s, z)), s, z)`` -> ``M(q)``, ``M`` one of ``MOVES``: exact, since
  ``M`` only moves values and ``quantize(dequantize(q))`` is ``q`` for the same scale, zero
  point and type.

An output scale, zero point or type other than the input's is left alone (``outcomes``).
"""

from __future__ import annotations

from tvm import relax

from ..relax_tools import call_of
from .integer_add import dequantized, same_quantization
from .integer_requantize import quantize_params

RULE_NAME = "IntegerMovement"
#: The Relax ops that only move values (the importer's Reshape, Flatten, Transpose, Slice, Squeeze, Unsqueeze).
MOVES = ("relax.reshape", "relax.permute_dims", "relax.strided_slice", "relax.squeeze", "relax.expand_dims")


def integer_movement(rewriter, quantize: relax.Call):
    params = quantize_params(quantize, rewriter.var2val)
    if params is None:
        return ""
    move = call_of(quantize.args[0], rewriter.var2val, *MOVES)
    if move is None:
        return ""
    found = dequantized(move.args[0], rewriter.var2val)
    if found is None:
        return f"{move.op.name.split('.')[-1]} of a tensor that is not dequantized per tensor"
    q, s, z = found
    sy, zy, _, _, dtype = params
    if not same_quantization(q, s, z, params):
        return (f"{move.op.name.split('.')[-1]} whose output scale, zero point or type ({sy:g}, {zy}, {dtype}) differs "
                f"from its input's ({s:g}, {z}, {q.ty.dtype}): only moves within one quantization are exact")
    moved = relax.Call(move.op, [rewriter.visit_expr(q), *move.args[1:]], move.attrs, move.ty_args)
    return None, "data movement on the 8-bit tensor", moved
