"""``QDQConvToInteger``: quantized (QDQ) convs computed exactly in integers.

ONNX QDQ models import as ``conv2d(dequantize(xq, sx, zx), dequantize(Wq, sw, zw))``: a float
conv whose result depends on the order of its float additions, so no rewrite of it could be
bit-exact. This pass states what a quantized conv means,

    conv2d(xq - zx, Wq - zw, out_dtype=int32) * (sx * sw)

an integer conv (exact in any order, so the space-to-depth rewrite is bit-exact on it) and one
rescale. Zero padding of ``xq - zx`` is padding with the activation zero point, and a zero tap
of ``Wq - zw`` is the weight zero point. It runs in the ``"s2d"`` pipeline's preparation,
before (and independently of) ``SpaceToDepthConv2d``, so the graph with and without the
rewrite computes the same integers.
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax
from tvm.relax.dpl import is_const, is_op, wildcard
from tvm.relax.expr_functor import PyExprMutator, mutator

from ...geometry import Unsupported, spatial_axes
from ..outcome import Outcome, applied, refused
from ..relax_tools import check_layouts, is_call, map_relax_functions

INTEGER_TYPES = ("int8", "uint8")


@tvm.transform.module_pass(opt_level=0, name="QDQConvToInteger")
class QDQConvToInteger:
    """Rewrite ``conv2d(dequantize(x), dequantize(W constant))`` into an int32 conv and a scale.

    The integer conv keeps the conv's name (the report's row name); the scaled result takes
    its place for every user. Convs with other quantization schemes are left alone;
    ``outcomes`` (``passes.outcome``) says, per conv, which became integer and why not.
    """

    def __init__(self):
        self.x, self.sx, self.zx = wildcard(), is_const(), is_const()
        self.w, self.sw, self.zw = is_const(), is_const(), is_const()
        self.dq_x = is_op("relax.dequantize")(self.x, self.sx, self.zx)
        self.dq_w = is_op("relax.dequantize")(self.w, self.sw, self.zw)
        self.pattern = is_op("relax.nn.conv2d")(self.dq_x, self.dq_w)
        self.outcomes: list[Outcome] = []

    def transform_module(self, mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        self.outcomes = []

        def rewrite(func):
            if not op_calls(func, "relax.dequantize"):
                return None  # nothing quantized here (and nothing to rebuild)
            rewritten = _Rewriter(mod, self, relax.analysis.get_var2val(func)).visit_expr(func)
            return relax.analysis.remove_all_unused(rewritten)

        return map_relax_functions(mod, rewrite)

    def integer_conv(self, conv: relax.Call, matches, data: relax.Expr):
        """``(conv on xq - zx with Wq - zw, scale)``, or the reason the conv does not qualify."""
        x, w = matches[self.x], matches[self.w].value.numpy()
        sx, zx = (matches[p].value.numpy() for p in (self.sx, self.zx))
        sw, zw = (matches[p].value.numpy() for p in (self.sw, self.zw))
        attrs = conv.attrs
        kernel_layout, layout = str(attrs.kernel_layout), str(attrs.data_layout)
        try:
            check_layouts(conv)
        except Unsupported as exc:
            return str(exc)
        o_axis = kernel_layout.index("O")
        w_axis = int(matches[self.dq_w].attrs.axis) % w.ndim
        if str(x.ty.dtype) not in INTEGER_TYPES or str(w.dtype) not in INTEGER_TYPES:
            return f"{x.ty.dtype} activations x {w.dtype} weights, not int8/uint8"
        if sx.size != 1 or zx.size != 1:
            return "activation scale or zero point is not per-tensor"
        if max(sw.size, zw.size) != 1 and w_axis != o_axis:
            return "weight scales are neither per-tensor nor per output channel"
        out_channels = w.shape[o_axis]

        def per_channel(values):
            return np.broadcast_to(np.asarray(values).reshape(-1), (out_channels,))

        along_o = [1] * w.ndim
        along_o[o_axis] = out_channels
        weight = w.astype(np.int32) - per_channel(zw).astype(np.int32).reshape(along_o)
        data = relax.op.subtract(relax.op.astype(data, "int32"), relax.const(np.int32(zx.reshape(()))))
        acc = relax.op.nn.conv2d(
            data, relax.const(weight), strides=attrs.strides, padding=attrs.padding, dilation=attrs.dilation,
            groups=attrs.groups, data_layout=layout, kernel_layout=kernel_layout, out_layout=layout, out_dtype="int32",
        )
        _, _, cax = spatial_axes(layout)
        shape = [1, 1, 1, 1]
        shape[cax] = out_channels
        scale = np.float32(sx.reshape(())) * per_channel(sw).astype(np.float32)
        return acc, scale.reshape(shape).astype(str(conv.ty.dtype))


def op_calls(func: relax.Function, name: str) -> list[relax.Call]:
    found = []

    def visit(expr):
        if is_call(expr, name):
            found.append(expr)

    relax.analysis.post_order_visit(func, visit)
    return found


@mutator
class _Rewriter(PyExprMutator):
    def __init__(self, mod, rule: QDQConvToInteger, var2val):
        super().__init__(mod)
        self.rule, self.var2val = rule, var2val
        # matching through var2val hands back bound values: their variables, so that a tensor
        # quantized once (its dequantize read by a conv and by other ops) stays computed once
        self.val2var = {value: var for var, value in var2val.items()}
        self.conv = is_op("relax.nn.conv2d")(wildcard(), wildcard())

    def visit_var_binding_(self, binding: relax.VarBinding) -> None:
        conv = binding.value
        if not isinstance(conv, relax.Call) or not self.conv.match(conv):  # an alias matches through var2val too
            return super().visit_var_binding_(binding)
        name = binding.var.name
        matches = self.rule.pattern.extract_matched_expr(conv, self.var2val)
        if not matches:
            refused(self.rule.outcomes, name, "not a QDQ conv (input and weight are not both dequantized,"
                                              " the weight from a constant)")
            return super().visit_var_binding_(binding)
        # the dequantize of the weight may sit in a binding of its own
        matches = {**matches, self.rule.dq_w: self.var2val.get(matches[self.rule.dq_w], matches[self.rule.dq_w])}
        data = matches[self.rule.x]
        found = self.rule.integer_conv(conv, matches, self.visit_expr(self.val2var.get(data, data)))
        if isinstance(found, str):
            refused(self.rule.outcomes, name, found)
            return super().visit_var_binding_(binding)
        applied(self.rule.outcomes, name, "integer conv (int32 accumulator, one rescale)")
        acc, scale = found
        acc = self.builder_.emit(acc, binding.var.name)
        scaled = relax.op.multiply(relax.op.astype(acc, str(conv.ty.dtype)), relax.const(scale))
        return super().visit_var_binding_(relax.VarBinding(binding.var, scaled))
