"""The rule ``IntegerPoolConcat`` (of ``integer.IntegerArithmetic``): quantized max pools and
concats on the 8-bit tensors themselves.

A QDQ model pools and concatenates in float between a ``dequantize`` and a ``quantize``
(float code on Hexagon, ~20 packets an element). As rules (pattern -> check -> rewrite):

* ``quantize(max_pool2d(dequantize(q, s, z)), s, z)`` -> ``max_pool2d(q)``: exact, since
  dequantizing is monotonic and ``quantize(dequantize(q))`` is ``q`` for the same scale and
  zero point (the pool's padding, the lowest value, never wins a window that holds a real one);
* ``quantize(concat(dequantize(q_i, s_i, z_i)), s, z)`` -> ``concat(r_i)`` with ``r_i = q_i``
  where ``(s_i, z_i) = (s, z)``, else ``q_i`` requantized to ``(s, z)`` in integers: one term of
  ``IntegerAdd`` (``(q_i - z_i) * M_i``, ``M_i <= 2**21``) and its requantization, at most
  one step from the float (tested; none measured on real models).

* ``quantize(avg_pool2d(dequantize(q)))``, 2x2 stride 2 without padding (DenseNet's transition
  layers), stays float but sums each window column by column, ``(x00 + x10) + (x01 + x11)``,
  as ONNX Runtime does: a quarter of such windows average to an exact half step, and the float
  rounding of the sum decides which way they go (summed row by row, 1 step on ~4% of values
  differed from ONNX Runtime; in its order, none).

* ``quantize(mean(dequantize(q, s, z)), sy, zy)`` (global average pools, ``ReduceMean``) -> the
  int32 sum of ``q - z`` requantized by ``s / (sy * count)``: at most one step from the float.

Per-tensor scales only; a pool whose output scale differs from its input's, an input scale
above the concat's and other forms are left alone, and ``outcomes`` says why.
``HexagonRequantize`` computes the one-term requantizations on an HVX kernel.
"""

from __future__ import annotations

import numpy as np
from tvm import relax

from ...geometry.fixed_point import fixed_point
from ..relax_tools import bound, call_of, static_shape
from .integer_add import dequantized, emit_term, same_quantization, terms
from .integer_requantize import emit_requantize, quantize_params

RULE_NAME = "IntegerPoolConcat"


def integer_pool_concat(rewriter, quantize: relax.Call):
    params = quantize_params(quantize, rewriter.var2val)
    if params is None:
        return ""
    v2v = rewriter.var2val
    op = call_of(quantize.args[0], v2v, *RULES)
    if op is None:
        return ""
    return RULES[op.op.name](rewriter, op, params, quantize)


def _max_pool(rewriter, pool: relax.Call, params, quantize):
    sy, zy = params[:2]
    found = dequantized(pool.args[0], rewriter.var2val)
    if found is None:
        return "a max pool of a tensor that is not dequantized per tensor"
    q, s, z = found
    if not same_quantization(q, s, z, params):
        return (f"a max pool whose output scale or zero point ({float(sy):g}, {zy}) differs from its input's"
                f" ({float(s):g}, {z}): the integer max pool takes the same on both sides")
    return None, "max pool on the 8-bit tensor", relax.Call(pool.op, [rewriter.visit_expr(q)], pool.attrs)


def _concat(rewriter, concat: relax.Call, params, quantize):
    sy, zy, lo, hi, dtype = params
    v2v = rewriter.var2val
    items = bound(concat.args[0], v2v)
    if not isinstance(items, relax.Tuple):
        return "a concat of a tuple it cannot see"
    found = [dequantized(item, v2v) for item in items.fields]
    if any(f is None for f in found):
        return "a concat of tensors that are not all dequantized per tensor"
    if any(s > sy * (1 + 1e-6) for _, s, _ in found):
        return "a concat input's scale is above the output's"
    bb, parts = rewriter.builder_, []
    for q, s, z in found:
        q = rewriter.visit_expr(q)
        if same_quantization(q, s, z, params):
            parts.append(q)
            continue
        weight, _, scale = terms(s, s)  # (q - z) * weight in units of scale, as a term of IntegerAdd
        term = emit_term(bb, q, z, weight)
        m, r = fixed_point(np.array(scale / sy))
        parts.append(bb.emit(emit_requantize(bb, term, np.zeros((), np.int32), m, r, zy, lo, hi, dtype)))
    return None, "concat of the 8-bit tensors (inputs of other scales requantized)", relax.Call(
        concat.op, [relax.Tuple(parts)], concat.attrs)


def _avg_pool(rewriter, pool: relax.Call, params, quantize: relax.Call):
    attrs = pool.attrs
    if ([int(v) for v in attrs.pool_size], [int(v) for v in attrs.strides]) != ([2, 2], [2, 2]) \
            or any(int(v) for v in attrs.padding) or any(int(v) != 1 for v in attrs.dilation) or bool(attrs.ceil_mode):
        return "an average pool other than 2x2 stride 2 without padding (summed in TVM's order)"
    if dequantized(pool.args[0], rewriter.var2val) is None:
        return "an average pool of a tensor that is not dequantized per tensor"
    layout = str(attrs.layout)
    h, w = layout.index("H"), layout.index("W")
    x = rewriter.visit_expr(pool.args[0])
    bb = rewriter.builder_
    oh, ow = (int(d) for d in (pool.ty.shape.values[h], pool.ty.shape.values[w]))

    def tap(dy, dx):
        return bb.emit(relax.op.strided_slice(x, [h, w], [dy, dx], [dy + 2 * oh, dx + 2 * ow], [2, 2]))

    column0 = bb.emit(relax.op.add(tap(0, 0), tap(1, 0)))
    column1 = bb.emit(relax.op.add(tap(0, 1), tap(1, 1)))
    mean = bb.emit(relax.op.divide(bb.emit(relax.op.add(column0, column1)), relax.const(np.float32(4))))
    return None, "2x2 average pool summed column by column (ONNX Runtime's order)", relax.op.quantize(
        mean, quantize.args[1], quantize.args[2], int(quantize.attrs.axis), str(quantize.ty.dtype))


def _mean(rewriter, mean: relax.Call, params, quantize):
    sy, zy, lo, hi, dtype = params
    found = dequantized(mean.args[0], rewriter.var2val)
    if found is None:
        return "a mean of a tensor that is not dequantized per tensor"
    q, s, z = found
    shape = static_shape(q)
    if shape is None or mean.attrs.axis is None:
        return "a mean of a dynamic shape or over every axis"
    axes = sorted({int(a) % len(shape) for a in mean.attrs.axis})
    count = int(np.prod([shape[a] for a in axes]))
    if count * 255 >= 2**31:
        return f"a mean of {count} values: their sum may leave int32"
    ratio = s / (sy * count)
    if not 0 < ratio < 1:
        return f"a mean whose rescale {ratio:g} is not below 1: integer requantization takes ratios below 1"
    bb = rewriter.builder_
    centred = bb.emit(relax.op.subtract(relax.op.astype(rewriter.visit_expr(q), "int32"), relax.const(z, "int32")))
    total = bb.emit(relax.op.sum(centred, axes, keepdims=bool(mean.attrs.keepdims)))
    m, r = fixed_point(np.array(ratio))
    # a sum is small (count x 255) and its rescale's shift r too (a few bits): the high multiply's
    # rounding would be a coarse first rounding (1/8 of a step at r = 3, a step off on ~9% of
    # values); the headroom shift keeps 2**-(r + pre) of a step, with the sum << pre inside int32
    # (what the HVX requantization kernel shifts in 32-bit lanes)
    pre = max(0, 30 - int(count * 255).bit_length())
    return None, "mean as an int32 sum and one integer requantization", emit_requantize(
        bb, total, np.zeros((), np.int32), m, r + pre, zy, lo, hi, dtype, pre=pre)


#: op -> its rule ``(rewriter, op, quantize's params, quantize) -> (name, what, value) | reason``.
RULES = {"relax.nn.max_pool2d": _max_pool, "relax.concat": _concat, "relax.nn.avg_pool2d": _avg_pool, "relax.mean": _mean}
