"""The rule ``IntegerAdd`` (of ``integer.IntegerArithmetic``): the quantized residual add in
integers.

A QDQ model adds two quantized tensors as ``quantize(add(dequantize(qa, sa, za),
dequantize(qb, sb, zb)) [ReLU], sy, zy)``: float code on Hexagon. With ``s = max(sa, sb) /
2**21``, ``Ma = round(sa / s)`` and ``Mb = round(sb / s)`` (at most ``2**21``, so the int32 sum
of two 8-bit terms cannot overflow) it is

    acc = (qa - za) * Ma + (qb - zb) * Mb         int32
    q = requantize(acc, s / (2**21 * sy))         passes.quantized.integer_requantize (ReLU: clamp at zy)

the two scales rescaled to a common one in integers, then the conv epilogue's requantization.
``Ma / Mb`` approximates ``sa / sb`` to about ``2**-21`` (scales within a factor 1000 of each
other), far inside the one step the rounding allows.
Per-tensor scales only; other adds are left alone (``outcomes`` says why).
``HexagonRequantize`` computes the whole of it on an HVX kernel.
"""

from __future__ import annotations

import numpy as np
from tvm import relax

from ...geometry.fixed_point import RANGES, fixed_point
from ..relax_tools import call_of, const_of, static_shape
from .integer_requantize import emit_requantize, quantize_params

RULE_NAME = "IntegerAdd"
TERM_BITS = 21


def dequantized(expr, var2val):
    """``(q, scale, zero)`` of a per-tensor ``dequantize`` of an 8-bit tensor, or None."""
    dq = call_of(expr, var2val, "relax.dequantize")
    if dq is None or str(dq.args[0].ty.dtype) not in RANGES:
        return None
    scale, zero = const_of(dq.args[1], var2val), const_of(dq.args[2], var2val)
    if scale is None or zero is None or scale.size != 1 or zero.size != 1 or float(scale.reshape(())) <= 0:
        return None
    return dq.args[0], float(scale.reshape(())), int(zero.reshape(()))


def same_quantization(q: relax.Expr, scale: float, zero: int, params) -> bool:
    """Whether ``dequantize(q, scale, zero)`` quantized by ``params`` (``quantize_params``) gives
    ``q`` back: the same scale (as float32), zero point and type."""
    sy, zy, _, _, dtype = params
    return (np.float32(scale), zero, str(q.ty.dtype)) == (np.float32(sy), zy, dtype)


def terms(sa: float, sb: float) -> tuple[int, int, float]:
    """``(Ma, Mb, s)``: the integer weights of the two terms (at most ``2**21``: two 8-bit terms
    sum inside int32) and the scale of their sum."""
    s = max(sa, sb) / 2.0**TERM_BITS
    return int(round(sa / s)), int(round(sb / s)), s


def emit_term(bb: relax.BlockBuilder, q: relax.Expr, zero: int, weight: int) -> relax.Expr:
    return bb.emit(relax.op.multiply(relax.op.subtract(relax.op.astype(q, "int32"), relax.const(zero, "int32")),
                                     relax.const(weight, "int32")))


def match_add(expr: relax.Expr, var2val: dict):
    """``(qa, za, Ma, qb, zb, Mb)`` when ``expr`` is the int32 sum ``emit_term + emit_term`` (a
    term may come through a reshape: its tensor is then reshaped the same way)."""
    add = call_of(expr, var2val, "relax.add")
    if add is None or str(add.ty.dtype) != "int32":
        return None
    found = [match_term(term, var2val) for term in add.args]
    return None if None in found else (*found[0], *found[1])


def match_term(term: relax.Expr, var2val: dict):
    """``(q, z, M)`` when ``term`` is ``emit_term(q, z, M)``, perhaps through a reshape, else None."""
    reshaped = call_of(term, var2val, "relax.reshape")  # a term computed in the S2D domain: same elements, same order
    if reshaped is not None:
        term = reshaped.args[0]
    mul = call_of(term, var2val, "relax.multiply")
    sub = None if mul is None else call_of(mul.args[0], var2val, "relax.subtract")
    cast = None if sub is None else call_of(sub.args[0], var2val, "relax.astype")
    weight = None if mul is None else const_of(mul.args[1], var2val)
    zero = None if sub is None else const_of(sub.args[1], var2val)
    if cast is None or weight is None or zero is None or weight.size != 1 or zero.size != 1:
        return None
    if str(cast.args[0].ty.dtype) not in RANGES or str(mul.ty.dtype) != "int32":
        return None
    q = cast.args[0] if reshaped is None else relax.op.reshape(cast.args[0], reshaped.args[1])
    return q, int(zero.reshape(())), int(weight.reshape(()))


def integer_add(rewriter, quantize: relax.Call):
    """A quantized residual add as integers (the module doc), or why not ("" for no such add)."""
    found = _match(quantize, rewriter.var2val)
    if isinstance(found, str):
        return found
    (qa, sa, za), (qb, sb, zb), sy, zy, lo, hi, dtype = found
    ma, mb, s = terms(sa, sb)
    if min(ma, mb) < 2**11:
        return "the two scales are more than 1000x apart"
    if s / sy >= 1:
        return "the output scale is below the inputs'"
    bb = rewriter.builder_
    acc = bb.emit(relax.op.add(emit_term(bb, rewriter.visit_expr(qa), za, ma), emit_term(bb, rewriter.visit_expr(qb), zb, mb)))
    m, r = fixed_point(np.array(s / sy))
    value = emit_requantize(bb, acc, np.zeros((), np.int32), m, r, zy, lo, hi, dtype)
    return None, "integer add (two rescaled terms, one requantization)", value


def _match(quantize: relax.Call, v2v):
    """``((qa, sa, za), (qb, sb, zb), sy, zy, lo, hi, dtype)``, a reason, or "" for no add."""
    params = quantize_params(quantize, v2v)
    if params is None:
        return ""
    sy, zy, lo, hi, dtype = params
    x = quantize.args[0]
    relu = call_of(x, v2v, "relax.nn.relu")
    if relu is not None:
        lo, x = max(lo, zy), relu.args[0]
    add = call_of(x, v2v, "relax.add")
    if add is None:
        return ""
    operands = [dequantized(a, v2v) for a in add.args]
    if any(o is None for o in operands):
        return "" if all(o is None for o in operands) else "an add of a dequantized and another tensor"
    shapes = [static_shape(o[0]) for o in operands]
    if None in shapes:
        return "an add of tensors of dynamic shape: the integer add takes static shapes"
    if shapes[0] != shapes[1]:
        return (f"an add of shapes {list(shapes[0])} and {list(shapes[1])} (a broadcast): the integer add takes two"
                " tensors of one shape")
    return operands[0], operands[1], sy, zy, lo, hi, dtype
