"""The rule ``IntegerRequantize`` (of ``integer.IntegerArithmetic``): a quantized conv's float
epilogue as integer arithmetic.

After ``QDQConvToInteger`` a QDQ conv ends in ``quantize(act(float(acc) * s + bias), sy, zy)``
(``acc`` the int32 accumulator, ``s = sx * sw`` per tensor or per output channel, ``act``
ReLU, Clip or nothing): scalar float code on Hexagon (v66 HVX has no float), ~20 packets an
element. As TFLite and gemmlowp do, this pass writes it in integers:

    a = acc + b                                   b = round(bias / s), folded into the accumulator
    t = (a * M + 2**30) >> 31                     M / 2**(31 + r) = s / sy, 2**30 <= M < 2**31
    q = clamp((t + (2**r >> 1)) >> r + zy, lo, hi)

a 31-bit fixed-point multiplier per output channel with a rounding doubling high multiply
(exactly HVX's ``vmpyewuh`` + ``vmpyowh:<<1:rnd:sat``), a rounding right shift ``r`` per
channel, the activation as the clamp ``[lo, hi]`` in the quantized domain (ReLU: ``lo = zy``;
Clip(a, b): ``quantize(a)``, ``quantize(b)``; both monotonic, so exact), and the uint8 or
int8 narrowing last. In Relax the products run in int64, so nothing overflows. It is not the
float graph bit for bit: the float rounds ``acc * s``, ``+ bias`` and ``/ sy`` in float32 and
rounds half to even, the integers round twice, half up. The results differ by at most one
quantization step, on a small fraction of values (tested, and counted in the README). CPU
and Hexagon builds compute the same integers, so the CPU build is the bit-exact reference of
a Hexagon run. A bias that is not a multiple of ``s`` (not an int32 bias), or a ratio
``s / sy`` of 1 or more that the accumulator's headroom cannot take, keeps the float epilogue,
and ``outcomes`` says why. (A ratio of 1 or more, ``M / 2**(31 + r)`` with ``r < 0``, is
the headroom shift's business: ``a << pre`` with ``pre >= -r`` stays inside int32 when
``255 * sum|W| + |b|`` leaves ``pre`` bits, and the second shift is ``r + pre >= 0``; a
quantizer calibrated on random inputs gives ResNet-18 such ratios on 20 of its 21 convs.)
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax
from tvm.relax.expr_functor import PyExprMutator, mutator

from ...geometry.fixed_point import RANGES, fixed_point
from ..outcome import applied, refused
from ..relax_tools import call_of, const_of, is_call, map_relax_functions

RULE_NAME = "IntegerRequantize"
#: A bias this far from a multiple of ``s`` (in output steps) keeps the float epilogue.
BIAS_TOLERANCE = 0.01
#: The largest second shift (``r`` plus the headroom shift): 32-bit vector shifts take it.
MAX_SHIFT = 30


def quantize_params(quantize: relax.Call, var2val) -> tuple | None:
    """``(sy, zy, lo, hi, dtype)`` of a per-tensor ``quantize`` to int8 / uint8, else None."""
    sy, zy = const_of(quantize.args[1], var2val), const_of(quantize.args[2], var2val)
    dtype = str(quantize.ty.dtype)
    if sy is None or zy is None or sy.size != 1 or zy.size != 1 or dtype not in RANGES:
        return None
    return float(sy.reshape(())), int(zy.reshape(())), *RANGES[dtype], dtype


def rewrite_quantizes(mod: tvm.IRModule, outcomes: list, replace) -> tvm.IRModule:
    """Each ``quantize`` binding of ``mod``'s Relax functions through ``replace(rewriter, call)``
    (the integer passes' shared mechanism): ``(name, what, value)`` puts ``value`` in its place
    (an outcome applied to ``name``), a reason refuses it, "" passes it by as none of the
    rule's business. ``replace`` emits through ``rewriter.builder_`` and reads
    ``rewriter.var2val``."""
    def rewrite(func):
        rewriter = _QuantizeRewriter(mod, outcomes, relax.analysis.get_var2val(func), replace)
        rewritten = rewriter.visit_expr(func)
        return relax.analysis.remove_all_unused(rewritten) if rewriter.changed else None

    return map_relax_functions(mod, rewrite)


@mutator
class _QuantizeRewriter(PyExprMutator):
    def __init__(self, mod, outcomes: list, var2val, replace):
        super().__init__(mod)
        self.outcomes, self.var2val, self.replace, self.changed = outcomes, var2val, replace, False

    def visit_var_binding_(self, binding: relax.VarBinding) -> None:
        call = binding.value
        if not is_call(call, "relax.quantize"):
            return super().visit_var_binding_(binding)
        found = self.replace(self, call)
        if isinstance(found, str):
            if found:
                refused(self.outcomes, binding.var.name, found)
            return super().visit_var_binding_(binding)
        name, what, value = found
        self.changed = True
        applied(self.outcomes, name or binding.var.name, what)
        return super().visit_var_binding_(relax.VarBinding(binding.var, value))


def integer_epilogue(rewriter, quantize: relax.Call):
    """A conv's float epilogue as integers (the module doc), or why not ("" for no epilogue)."""
    found = _match_epilogue(quantize, rewriter.var2val)
    if isinstance(found, str):
        return found
    acc, terms = found
    value = emit_requantize(rewriter.builder_, rewriter.visit_expr(acc), *terms)
    name = acc.name if isinstance(acc, relax.Var) else None
    return name, "integer requantization (31-bit multiplier, rounding shift)", value


def _match_epilogue(quantize: relax.Call, var2val):
    """``(acc, (b, M, S, zy, lo, hi, dtype))``, a refusal reason, or "" for no conv epilogue."""
    v2v = var2val
    params = quantize_params(quantize, v2v)
    if params is None:
        return ""
    sy, zy, lo, hi, dtype = params
    x = quantize.args[0]
    act = call_of(x, v2v, "relax.nn.relu", "relax.clip")
    if act is not None:
        if act.op.name == "relax.nn.relu":
            lo = max(lo, zy)
        else:
            def quantized(bound):  # as quantize computes it: float32, rounding half to even
                return int(np.clip(np.rint(np.float32(bound) / np.float32(sy)) + zy, lo, hi))

            lo, hi = max(lo, quantized(act.args[1].value)), min(hi, quantized(act.args[2].value))
        x = act.args[0]
    bias = np.zeros((), np.float32)
    add = call_of(x, v2v, "relax.add")
    if add is not None:
        for i in (0, 1):
            const = const_of(add.args[i], v2v)
            if const is not None:
                bias, x = const, add.args[1 - i]
                break
        else:
            return ""
    mul = call_of(x, v2v, "relax.multiply")
    if mul is None:
        return ""
    scale, cast = const_of(mul.args[1], v2v), mul.args[0]
    if scale is None:
        scale, cast = const_of(mul.args[0], v2v), mul.args[1]
    cast = call_of(cast, v2v, "relax.astype")
    if scale is None or cast is None or str(cast.args[0].ty.dtype) != "int32":
        return ""
    acc = cast.args[0]
    scale64 = scale.astype(np.float64)
    if np.any(scale64 <= 0):
        return "a scale that is not positive"
    b = np.rint(bias.astype(np.float64) / scale64)
    if np.max(np.abs(b * scale64 - bias) / sy, initial=0) > BIAS_TOLERANCE:
        return "its bias is not a multiple of x_scale * w_scale (not an int32 bias)"
    if np.max(np.abs(b), initial=0) >= 2**31:
        return "its bias does not fit int32"
    shape = np.broadcast_shapes(scale.shape, b.shape)
    m, r = fixed_point(np.broadcast_to(scale64 / sy, shape))
    room = headroom(acc, b, var2val)
    pre = np.minimum(room, MAX_SHIFT - r)
    if np.any(r + pre < 0):  # a ratio of 1 or more: its left shift is the headroom shift, which must take it
        return (f"the ratio x_scale * w_scale / y_scale reaches {np.max(scale64 / sy):.3g}: a left shift of "
                f"{int(np.max(-r))} bits, beyond the accumulator's headroom of {int(np.min(room))} bits in int32")
    return acc, (np.broadcast_to(b, shape).astype(np.int32), m, r + pre, zy, lo, hi, dtype, pre)


def headroom(acc, b, var2val) -> np.ndarray:
    """Per output channel (along the conv output's channel axis), how far ``acc + b`` can be shifted left inside int32:
    ``30 - bits(255 * sum|W| + |b|)`` when ``acc`` is a conv of 8-bit values minus a zero point
    (``|x - zx| <= 255``) with constant weights, else 0."""
    conv = call_of(acc, var2val, "relax.nn.conv2d")
    weight = None if conv is None else const_of(conv.args[1], var2val)
    if weight is None:
        return np.zeros((), np.int64)
    layout = str(conv.attrs.kernel_layout)
    o_axis = layout.index("O")
    sums = np.abs(weight.astype(np.int64)).sum(axis=tuple(i for i in range(weight.ndim) if i != o_axis))
    cax = str(conv.attrs.out_layout or conv.attrs.data_layout).index("C")
    along = [1] * len(conv.ty.shape)
    along[cax] = sums.size
    bound = 255 * sums.reshape(along) + np.abs(np.asarray(b, np.int64))
    bits = np.ceil(np.log2(bound.astype(np.float64) + 1)).astype(np.int64)
    return np.clip(30 - bits, 0, None)



def emit_requantize(bb: relax.BlockBuilder, x: relax.Expr, b, m, r, zy: int, lo: int, hi: int, dtype: str,
                    pre=0) -> relax.Expr:
    """The integers of the module doc as Relax ops on the int32 accumulator ``x`` (the last
    one un-emitted); with a headroom shift ``pre`` the first rounding shift is ``31 - pre``
    (``((a << pre) * M + 2**30) >> 31`` exactly, what the HVX kernels compute)."""
    if np.any(b):
        x = bb.emit(relax.op.add(x, relax.const(b, "int32")))
    x = bb.emit(relax.op.multiply(relax.op.astype(x, "int64"), relax.const(m, "int64")))
    first = 31 - np.asarray(pre, np.int64)
    x = bb.emit(relax.op.right_shift(relax.op.add(x, relax.const((np.int64(1) << first) >> 1, "int64")),
                                     relax.const(first, "int64")))
    rounding = (np.int64(1) << np.asarray(r, np.int64)) >> 1
    x = bb.emit(relax.op.right_shift(relax.op.add(x, relax.const(rounding, "int64")), relax.const(r, "int64")))
    x = bb.emit(relax.op.add(x, relax.const(zy, "int64")))
    # the clamp as maximum / minimum with scalars: ConvertLayout carries NHWC through them (not through clip)
    x = bb.emit(relax.op.minimum(relax.op.maximum(x, relax.const(lo, "int64")), relax.const(hi, "int64")))
    return relax.op.astype(x, dtype)


def match_requantize(call: relax.Expr, var2val: dict):
    """What ``emit_requantize`` wrote, read back from its last op: ``(x, b, m, r, zy, lo, hi,
    dtype, pre)`` with ``x`` the int32 accumulator and the constants as arrays, or None."""
    def arg(expr, name):
        return None if expr is None else call_of(expr, var2val, name)

    def shifted(expr, rounding):
        """``(x, shift)`` of ``right_shift(add(x, half), shift)``: ``half`` is ``rounding``, or
        (None) the rounding half of ``shift``."""
        shift = arg(expr, "relax.right_shift")
        add = None if shift is None else arg(shift.args[0], "relax.add")
        if add is None:
            return None
        half, amount = const_of(add.args[1], var2val), const_of(shift.args[1], var2val)
        if half is None or amount is None:
            return None
        shape = np.broadcast_shapes(half.shape, amount.shape)
        expected = rounding if rounding is not None else (np.int64(1) << amount.astype(np.int64)) >> 1
        if not np.array_equal(np.broadcast_to(half, shape), np.broadcast_to(expected, shape)):
            return None
        return add.args[0], amount

    narrow = call_of(call, var2val, "relax.astype")
    upper = None if narrow is None else arg(narrow.args[0], "relax.minimum")
    lower = None if upper is None else arg(upper.args[0], "relax.maximum")
    add_zy = None if lower is None or str(lower.ty.dtype) != "int64" else arg(lower.args[0], "relax.add")
    zy = None if add_zy is None else const_of(add_zy.args[1], var2val)
    lo, hi = (None, None) if add_zy is None else (const_of(lower.args[1], var2val), const_of(upper.args[1], var2val))
    if zy is None or zy.size != 1 or lo is None or lo.size != 1 or hi is None or hi.size != 1:
        return None
    second = shifted(add_zy.args[0], None)
    first = None if second is None else shifted(second[0], None)
    if first is None or np.any(first[1] > 31) or np.any(first[1] < 1):
        return None
    mul = arg(first[0], "relax.multiply")
    m = None if mul is None else const_of(mul.args[1], var2val)
    widen = None if mul is None else arg(mul.args[0], "relax.astype")
    if m is None or widen is None or str(widen.args[0].ty.dtype) != "int32":
        return None
    x, b = widen.args[0], np.zeros((), np.int32)
    add_b = call_of(x, var2val, "relax.add")
    if add_b is not None and const_of(add_b.args[1], var2val) is not None and str(add_b.ty.dtype) == "int32":
        x, b = add_b.args[0], const_of(add_b.args[1], var2val)
    return (x, b, m, second[1], int(zy.reshape(())), int(lo.reshape(())), int(hi.reshape(())), str(narrow.ty.dtype),
            31 - first[1].astype(np.int64))
