"""The rule ``IntegerTables`` (of ``integer.IntegerArithmetic``): an elementwise float region
of a QDQ graph that depends on one 8-bit tensor, as a 256-entry table looked up by that
tensor.

Between a ``dequantize`` and a ``quantize`` a QDQ model computes activations in float:
Sigmoid, SiLU (``x * sigmoid(x)``, its sigmoid quantized on the way: ``Q(DQ(q) *
DQ(Q(sigmoid(DQ(q)))))``), HardSwish, HardSigmoid, Tanh, GELU, LeakyReLU, a requantization.
Whatever the ops, when every float value of the region is an elementwise function of one
8-bit tensor ``q`` (through scalar constants and the region's own quantize/dequantize pairs),
the region's output is ``table[q]`` for a table of 256 (or 128 + 128) entries:

    quantize(f(dequantize(q, s, z)), sy, zy)  ->  take(T, q - lo),  T[i] = quantize(f(dequantize(lo + i)))

computed at compile time by ``evaluate`` (``OPS``, below): each op in float64 from float32
operands, rounded to float32 -- the ONNX semantics with every op rounded once (IEEE
correctly rounded for ``+ - * /`` and ``sqrt``; the transcendental functions to within
float64's accuracy before that rounding). That is exact by construction where the float
graph is not: its kernels may contract a multiply-add, and ONNX Runtime's ``Sigmoid``,
``Tanh`` and ``Erf`` are vectorised approximations a few ulp off; both move a value by one
step where the exact result lies within those ulp of a rounding boundary (tested against
ONNX Runtime: at most one step, on few values).

On Hexagon the float region ran as scalar float code (~100 packets an element for a sigmoid
and its exp); the table is a byte lookup. Regions of two 8-bit tensors (a squeeze-and-excite
gate ``x * s``), per-channel constants, broadcasting and other ops are left alone with a
reason.
"""

from __future__ import annotations

import math

import numpy as np
from tvm import relax

from ...geometry.fixed_point import RANGES
from ..relax_tools import call_of, const_of, static_shape
from .integer_requantize import quantize_params

RULE_NAME = "IntegerTables"
MAX_OPS = 48  # ops in one region: beyond, not a plain activation
MAX_HOPS = 4  # quantize/dequantize pairs followed back to find the one 8-bit source


def _f32(v):
    return np.asarray(v, np.float64).astype(np.float32)


_erf = np.vectorize(math.erf, otypes=[np.float64])


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _clip(x, call):
    lo, hi = (float(getattr(a.value, "value", a.value)) for a in call.args[1:3])  # PrimValues
    return np.clip(x, lo, hi)


#: Relax op -> its value in float64 from float32 operands (``call`` for attributes); unary ops
#: take ``(x, call)``, binary ``(a, b, call)``.
OPS = {
    "relax.sigmoid": lambda x, c: _sigmoid(x),
    "relax.tanh": lambda x, c: np.tanh(x),
    "relax.exp": lambda x, c: np.exp(x),
    "relax.log": lambda x, c: np.log(x),
    "relax.sqrt": lambda x, c: np.sqrt(x),
    "relax.rsqrt": lambda x, c: 1.0 / np.sqrt(x),
    "relax.erf": lambda x, c: _erf(x),
    "relax.negative": lambda x, c: -x,
    "relax.abs": lambda x, c: np.abs(x),
    "relax.nn.relu": lambda x, c: np.maximum(x, 0.0),
    "relax.clip": _clip,
    "relax.nn.leakyrelu": lambda x, c: np.where(x >= 0, x, x * float(np.float32(c.attrs.alpha))),
    "relax.nn.silu": lambda x, c: x * _sigmoid(x),
    "relax.nn.gelu": lambda x, c: 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0))),
    "relax.nn.gelu_tanh": lambda x, c: 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3))),
    "relax.add": lambda a, b, c: a + b,
    "relax.subtract": lambda a, b, c: a - b,
    "relax.multiply": lambda a, b, c: a * b,
    "relax.divide": lambda a, b, c: a / b,
    "relax.maximum": lambda a, b, c: np.maximum(a, b),
    "relax.minimum": lambda a, b, c: np.minimum(a, b),
    "relax.power": lambda a, b, c: np.power(a, b),
}
_MOVES_NOTHING = ("relax.dequantize", "relax.quantize")


class _Refused(Exception):
    pass


class _Region:
    """The float region under one ``quantize``: its 8-bit source and how to evaluate it."""

    def __init__(self, var2val, source):
        self.var2val, self.source, self.ops = var2val, source, 0

    def function(self, expr):
        """``expr`` as a function of the source's integer values (float32 results)."""
        value = const_of(expr, self.var2val)
        if value is not None:
            if value.size != 1 or value.dtype.kind != "f":
                raise _Refused("a constant that is not a float scalar (per-channel parameters need a table per channel)")
            v = np.float32(value.reshape(()))
            return lambda q: v
        call = call_of(expr, self.var2val, *OPS, *_MOVES_NOTHING)
        if call is None:
            name = getattr(getattr(self.var2val.get(expr, expr), "op", None), "name", type(expr).__name__)
            raise _Refused(f"{name} in the region is not an elementwise op of the table's list")
        self.ops += 1
        if self.ops > MAX_OPS:
            raise _Refused(f"more than {MAX_OPS} ops")
        if call.op.name == "relax.dequantize":
            scale, zero = _per_tensor(call, self.var2val)
            inner = call.args[0]
            if inner.same_as(self.source):
                return lambda q: _f32((q - zero) * np.float64(scale))
            quantize = call_of(inner, self.var2val, "relax.quantize")
            if quantize is None:
                raise _Refused("more than one 8-bit input (a region of two tensors needs a table of two)")
            f = self.function(quantize)
            return lambda q: _f32((f(q).astype(np.int64) - zero) * np.float64(scale))
        if call.op.name == "relax.quantize":
            scale, zero = _per_tensor(call, self.var2val)
            lo, hi = RANGES[str(call.ty.dtype)]
            f = self.function(call.args[0])
            return lambda q: np.clip(np.rint(_f32(f(q) / np.float64(scale))).astype(np.int64) + zero, lo, hi)
        if static_shape(call) != static_shape(self.source):
            raise _Refused(f"{call.op.name} broadcasts to another shape")
        if str(call.ty.dtype) != "float32":
            raise _Refused(f"{call.op.name} of {call.ty.dtype}")
        op = OPS[call.op.name]
        fs = [self.function(a) for a in call.args if isinstance(a.ty, relax.TensorType)]
        if len(fs) == 1:
            return lambda q: _f32(op(fs[0](q).astype(np.float64), call))
        return lambda q: _f32(op(*(f(q).astype(np.float64) for f in fs), call))


def _per_tensor(call: relax.Call, var2val) -> tuple[float, int]:
    scale, zero = const_of(call.args[1], var2val), const_of(call.args[2], var2val)
    if scale is None or zero is None or scale.size != 1 or zero.size != 1:
        raise _Refused("a per-channel quantization inside the region")
    return float(np.float32(scale.reshape(()))), int(zero.reshape(()))


def _leaves(expr, var2val, found: list, budget: list):
    """The 8-bit tensors ``expr`` dequantizes (not following quantizes), into ``found``."""
    budget[0] -= 1
    if budget[0] < 0:
        raise _Refused(f"more than {MAX_OPS} ops")
    if const_of(expr, var2val) is not None:
        return
    call = call_of(expr, var2val, *OPS, "relax.dequantize")
    if call is None:
        raise _Refused("an op in the region is not an elementwise op of the table's list")
    if call.op.name == "relax.dequantize":
        if not any(call.args[0].same_as(t) for t in found):
            found.append(call.args[0])
        return
    for arg in call.args:
        if isinstance(arg.ty, relax.TensorType):
            _leaves(arg, var2val, found, budget)


def _ancestry(tensor, var2val) -> list:
    """``tensor``, then the one 8-bit tensor it is an elementwise function of, and so on back."""
    chain = [tensor]
    for _ in range(MAX_HOPS):
        quantize = call_of(chain[-1], var2val, "relax.quantize")
        if quantize is None:
            break
        found: list = []
        try:
            _leaves(quantize.args[0], var2val, found, [MAX_OPS])
        except _Refused:
            break
        if len(found) != 1:
            break
        chain.append(found[0])
    return chain


def find_source(quantize: relax.Call, var2val):
    """The one 8-bit tensor the region under ``quantize`` is a function of, or a reason."""
    found: list = []
    try:
        _leaves(quantize.args[0], var2val, found, [MAX_OPS])
    except _Refused as exc:
        return str(exc)
    if not found:
        return "no 8-bit input"
    chains = [_ancestry(t, var2val) for t in found]
    for candidate in chains[0]:  # the nearest tensor every leaf descends from
        if all(any(candidate.same_as(t) for t in chain) for chain in chains[1:]):
            return candidate
    return "more than one 8-bit input (a region of two tensors needs a table of two)"


def table_of(quantize: relax.Call, source, var2val) -> np.ndarray:
    """The region's output for every value of ``source``: ``T[i]`` for ``source == lo + i``."""
    lo, hi = RANGES[str(source.ty.dtype)]
    values = _Region(var2val, source).function(quantize)(np.arange(lo, hi + 1, dtype=np.int64))
    return np.broadcast_to(values, (hi - lo + 1,)).astype(str(quantize.ty.dtype))


def integer_tables(rewriter, quantize: relax.Call):
    if quantize_params(quantize, rewriter.var2val) is None:
        return ""
    if call_of(quantize.args[0], rewriter.var2val, *OPS) is None:
        return ""  # a quantize of a dequantize, a conv's epilogue, a pool: other rules' business
    source = find_source(quantize, rewriter.var2val)
    if isinstance(source, str):
        return f"an elementwise region not made a table: {source}"
    if str(source.ty.dtype) not in RANGES or static_shape(source) != static_shape(quantize):
        return "an elementwise region whose 8-bit input has another shape (broadcast)"
    try:
        table = table_of(quantize, source, rewriter.var2val)
    except _Refused as exc:
        return f"an elementwise region not made a table: {exc}"
    ops = sorted({n.split(".")[-1] for n in _op_names(quantize.args[0], source, rewriter.var2val)})
    return None, f"{'/'.join(ops)} as a 256-entry table of the 8-bit input", lookup(table, rewriter.visit_expr(source))


def requantize_table(dtype: str, scale: float, zero: int, sy: float, zy: int, out_dtype: str) -> np.ndarray:
    """``quantize(dequantize(q, scale, zero), sy, zy)`` for every ``q`` of ``dtype``, as the table
    of ``lookup``: the ONNX semantics exactly, ties to even included (where the ratio of the
    scales is a power of two every other value is a tie that an integer rescale rounds up)."""
    lo, hi = RANGES[dtype]
    values = _f32((np.arange(lo, hi + 1, dtype=np.int64) - zero) * np.float64(np.float32(scale)))
    out = np.rint(_f32(values / np.float64(np.float32(sy)))).astype(np.int64) + zy
    return np.clip(out, *RANGES[out_dtype]).astype(out_dtype)


def lookup(table: np.ndarray, q: relax.Expr) -> relax.Call:
    """``table[q - lo]`` for an 8-bit ``q`` (``table[i]`` the value at ``lo + i``), looked up by
    ``q`` itself: uint8 in range (``clip``: ``fast`` warns), int8 as ``T[q mod 256]`` (``wrap``)."""
    if RANGES[str(q.ty.dtype)][0]:
        return relax.op.take(relax.const(np.roll(table, -128)), q, axis=0, mode="wrap")
    return relax.op.take(relax.const(table), q, axis=0, mode="clip")


def _op_names(expr, source, var2val, depth=0) -> list[str]:
    call = None if expr.same_as(source) else call_of(expr, var2val, *OPS, "relax.quantize", "relax.dequantize")
    if call is None or depth > MAX_OPS:
        return []
    names = [call.op.name] if call.op.name in OPS else []
    for arg in call.args:
        if isinstance(getattr(arg, "ty", None), relax.TensorType):
            names += _op_names(arg, source, var2val, depth + 1)
    return names
