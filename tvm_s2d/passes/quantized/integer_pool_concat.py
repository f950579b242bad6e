"""The rule ``IntegerPoolConcat`` (of ``integer.IntegerArithmetic``): quantized max pools and
concats on the 8-bit tensors themselves.

A QDQ model pools and concatenates in float between a ``dequantize`` and a ``quantize``
(float code on Hexagon, ~20 packets an element). As rules (pattern -> check -> rewrite):

* ``quantize(max_pool2d(dequantize(q, s, z)), s, z)`` -> ``max_pool2d(q)``: exact, since
  dequantizing is monotonic and ``quantize(dequantize(q))`` is ``q`` for the same scale and
  zero point (the pool's padding, the lowest value, never wins a window that holds a real one);
* ``quantize(concat(dequantize(q_i, s_i, z_i)), s, z)`` -> ``concat(r_i)`` with ``r_i = q_i``
  where ``(s_i, z_i) = (s, z)``, else ``q_i`` requantized to ``(s, z)`` by a 256-entry table
  (``integer_tables.requantize_table``): the ONNX semantics exactly, ties to even included (an
  integer rescale rounded the ties of a power-of-two ratio up: 1 step on 16% of a concat of
  ``x`` at scale ``s`` and ``x + x`` at ``2s``, found by the property test).

* ``quantize(avg_pool2d(dequantize(q)))`` (any kernel, stride and padding; not ceil mode)
  stays float but sums each window in ONNX Runtime's order (``_mlas_vector_pool``: each column
  down the rows, then the columns, ``(x00 + x10) + (x01 + x11)``; row by row for strides above
  2): with one scale in and out a quarter of 2x2 windows average to an exact half step, and the
  float rounding of the sum decides which way they go (summed row by row, 1 step on ~4% of
  values differed from ONNX Runtime, on a 2x2 stride-1 pool 11%; in its order, none).

* ``quantize(mean(dequantize(q, s, z)), sy, zy)`` (global average pools, ``ReduceMean``) -> the
  int32 sum of ``q - z`` requantized by ``s / (sy * count)``: at most one step from the float.

Per-tensor scales only; a pool whose output scale differs from its input's and other forms are
left alone, and ``outcomes`` says why. ``HexagonMovement`` looks the tables up on HVX.
"""

from __future__ import annotations

import numpy as np
from tvm import relax

from ...geometry.fixed_point import RANGES, fixed_point
from ..relax_tools import bound, call_of, const_of, static_shape
from .integer_add import dequantized, same_quantization
from .integer_requantize import emit_requantize, quantize_params
from .integer_tables import lookup, requantize_table

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
    bb, parts = rewriter.builder_, []
    for q, s, z in found:
        q = rewriter.visit_expr(q)
        if same_quantization(q, s, z, params):
            parts.append(q)
            continue
        parts.append(bb.emit(lookup(requantize_table(str(q.ty.dtype), s, z, sy, zy, dtype), q)))
    return None, "concat of the 8-bit tensors (inputs of other scales requantized by a table)", relax.Call(
        concat.op, [relax.Tuple(parts)], concat.attrs)


def _avg_pool(rewriter, pool: relax.Call, params, quantize: relax.Call):
    attrs = pool.attrs
    (kh, kw), (sh, sw) = [int(v) for v in attrs.pool_size], [int(v) for v in attrs.strides]
    top, left, bottom, right = (int(v) for v in attrs.padding)
    if any(int(v) != 1 for v in attrs.dilation) or bool(attrs.ceil_mode):
        return "a dilated or ceil-mode average pool (summed in TVM's order)"
    shape, found = static_shape(pool.args[0]), dequantized(pool.args[0], rewriter.var2val)
    if found is None or shape is None:
        return "an average pool of a tensor that is not dequantized per tensor or not of a static shape"
    layout = str(attrs.layout)
    h, w = layout.index("H"), layout.index("W")
    oh, ow = (int(d) for d in (pool.ty.shape.values[h], pool.ty.shape.values[w]))
    bb = rewriter.builder_
    x = _dequantized_by_table(bb, rewriter.visit_expr(found[0]), *found[1:])
    if top or left or bottom or right:  # zeros: adding one is exact, as leaving a tap out is
        widths = [0] * (2 * len(shape))
        widths[2 * h:2 * h + 2], widths[2 * w:2 * w + 2] = [top, bottom], [left, right]
        x = bb.emit(relax.op.nn.pad(x, widths, pad_value=0.0))

    def tap(dy, dx):
        return bb.emit(relax.op.strided_slice(x, [h, w], [dy, dx], [dy + sh * (oh - 1) + 1, dx + sw * (ow - 1) + 1],
                                              [sh, sw]))

    def total(values):  # ((v0 + v1) + v2) + ...
        acc = values[0]
        for v in values[1:]:
            acc = bb.emit(relax.op.add(acc, v))
        return acc

    if _mlas_vector_pool((kh, kw), sw, shape[w] + left + right):
        summed = total([total([tap(dy, dx) for dy in range(kh)]) for dx in range(kw)])
        order = "each column down the rows, then the columns"
    else:
        summed = total([tap(dy, dx) for dy in range(kh) for dx in range(kw)])
        order = "row by row"
    if bool(attrs.count_include_pad) or not (top or left or bottom or right):
        divisor = relax.const(np.float32(kh * kw))
    else:
        rows = [min(y * sh - top + kh, shape[h]) - max(y * sh - top, 0) for y in range(oh)]
        cols = [min(v * sw - left + kw, shape[w]) - max(v * sw - left, 0) for v in range(ow)]
        counts = np.ones([1] * len(shape), np.float32).repeat(oh, h).repeat(ow, w)
        counts[...] = np.multiply.outer(rows, cols).reshape(counts.shape) if h < w else \
            np.multiply.outer(rows, cols).T.reshape(counts.shape)
        divisor = relax.const(counts)
    mean = bb.emit(relax.op.divide(summed, divisor))
    return None, f"{kh}x{kw} average pool summed as ONNX Runtime does ({order})", relax.op.quantize(
        mean, quantize.args[1], quantize.args[2], int(quantize.attrs.axis), str(quantize.ty.dtype))


def _dequantized_by_table(bb: relax.BlockBuilder, q: relax.Expr, scale: float, zero: int) -> relax.Expr:
    """``dequantize(q, scale, zero)`` looked up in a 256-entry float32 table of ONNX Runtime's
    products ``float(q - zero) * scale``: the same values, but no multiply that LLVM could
    contract with the sum's first add into a fused multiply-add (TVM allows FP op fusion; the
    FMA's single rounding moved ties: 1 step on 8% of a 2x2 stride-1 pool's values)."""
    lo, hi = RANGES[str(q.ty.dtype)]
    table = (np.arange(lo, hi + 1, dtype=np.int32) - zero).astype(np.float32) * np.float32(scale)
    return bb.emit(lookup(table, q))


def _mlas_vector_pool(kernel, stride_w: int, padded_width: int) -> bool:
    """Whether ONNX Runtime's CPU pool (MLAS ``MlasPool``) takes its vector kernel, which sums
    each window's column down the rows and then the columns; else its generic kernel sums row
    by row. Either divides the float sum by the window's count."""
    return stride_w <= 2 and max(kernel) <= 32 and padded_width <= 2048 - 3


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
    total = bb.emit(relax.op.sum(centred, axes, keepdims=bool(mean.attrs.keepdims)))  # read back by match_sum
    m, r = fixed_point(np.array(ratio))
    # a sum is small (count x 255) and its rescale's shift r too (a few bits): the high multiply's
    # rounding would be a coarse first rounding (1/8 of a step at r = 3, a step off on ~9% of
    # values); the headroom shift keeps 2**-(r + pre) of a step, with the sum << pre inside int32
    # (what the HVX requantization kernel shifts in 32-bit lanes)
    pre = max(0, 30 - int(count * 255).bit_length())
    return None, "mean as an int32 sum and one integer requantization", emit_requantize(
        bb, total, np.zeros((), np.int32), m, r + pre, zy, lo, hi, dtype, pre=pre)


def match_sum(expr: relax.Expr, var2val: dict):
    """What ``_mean`` wrote before its requantization, read back: ``(q, z, axes, keepdims)``
    for ``sum(astype(q, int32) - z, axes)``, else None (``HexagonRequantize`` sums on HVX)."""
    total = call_of(expr, var2val, "relax.sum")
    sub = None if total is None else call_of(total.args[0], var2val, "relax.subtract")
    cast = None if sub is None else call_of(sub.args[0], var2val, "relax.astype")
    zero = None if sub is None else const_of(sub.args[1], var2val)
    if cast is None or zero is None or zero.size != 1 or str(cast.args[0].ty.dtype) not in RANGES or total.attrs.axis is None:
        return None
    rank = len(cast.args[0].ty.shape)
    return cast.args[0], int(zero.reshape(())), sorted(int(a) % rank for a in total.attrs.axis), bool(total.attrs.keepdims)


#: op -> its rule ``(rewriter, op, quantize's params, quantize) -> (name, what, value) | reason``.
RULES = {"relax.nn.max_pool2d": _max_pool, "relax.concat": _concat, "relax.nn.avg_pool2d": _avg_pool, "relax.mean": _mean}
