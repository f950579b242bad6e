"""``QDQMatmulToConv``: a quantized fully connected layer as a 1x1 conv on a 1x1 image (one row)
or on an NHWC image of its rows (many).

ONNX QDQ classifiers end in ``Gemm`` / ``MatMul`` on dequantized activations and constant
quantized weights, which import as

    quantize(act(matmul(dequantize(xq [N, K]), dequantize(Wq)[^T]) + bias), sy, zy)

a float kernel (scalar on Hexagon, ~1.5 packets a MAC). A dense layer is the 1x1 conv of
``xq`` seen as an ``[N, K, 1, 1]`` image with ``[M, K, 1, 1]`` weights, the same sums of the
same products, so this pass writes it as one

    reshape(quantize(act(conv2d(dequantize(reshape(xq)), dequantize(Wq'))) + bias'), sy, zy), [N, M])

(``Wq'`` the quantized weights transposed and reshaped at compile time, ``bias'`` reshaped to
``[1, M, 1, 1]``), exactly the form of a QDQ conv. ``N > 1`` rows (ConvNeXt's pointwise layers,
``[H x W, K]``) are the pixels of an NHWC ``[1, H', W', K]`` image instead (``rows_as_image``; the
same memory as ``[N, K]``): as a batch of N 1x1 images each CPU register tile held one pixel
(ConvNeXt-T int8 at 96: 0.33-0.36 ms a pointwise conv, most of the model). Either is a QDQ
conv: ``QDQConvToInteger`` makes it an integer conv, ``IntegerArithmetic`` its epilogue integer, and on Hexagon ``HexagonConvs`` and
``HexagonRequantize`` put it on HVX ``vrmpy`` kernels. The reshapes move uint8 data only.
It runs first in the preparation (before ``FoldConstant`` folds the weights' dequantize
into floats). Only a matmul of a 2-d dequantized 8-bit activation (per-tensor scale and zero
point) by a constant 8-bit weight (per tensor or per output column), ending in a quantize,
is rewritten; float models, and matmuls of two activations, are left alone. ``outcomes``
says, per quantized matmul, which became a conv and why not.
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax

from ...geometry.layout import rows_as_image
from .integer_requantize import rewrite_quantizes
from ..outcome import Outcome
from ..relax_tools import call_of, const_of, static_shape

PASS_NAME = "QDQMatmulToConv"
INTEGER_TYPES = ("int8", "uint8")
#: The elementwise ops that may sit between the matmul and its quantize (bias, activation).
EPILOGUE = ("relax.add", "relax.nn.relu", "relax.clip")
WHAT = "1x1 conv on a 1x1 image, or of many rows on their image (reshapes of the uint8 input and output around it)"


@tvm.transform.module_pass(opt_level=0, name=PASS_NAME)
class QDQMatmulToConv:
    def __init__(self):
        self.outcomes: list[Outcome] = []

    def transform_module(self, mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        self.outcomes = []
        return rewrite_quantizes(mod, self.outcomes, matmul_as_conv)


def _epilogue(quantize: relax.Call, var2val):
    """``(matmul, [(op call, index of the chain operand)], innermost first)`` or None."""
    chain, x = [], quantize.args[0]
    for _ in range(len(EPILOGUE) + 1):
        matmul = call_of(x, var2val, "relax.matmul")
        if matmul is not None:
            return matmul, chain[::-1]
        call = call_of(x, var2val, *EPILOGUE)
        if call is None:
            return None
        index = 0
        if call.op.name == "relax.add":
            shapes = [static_shape(a) for a in call.args]
            out = static_shape(call)
            if shapes[0] == out and shapes[1] != out:
                index = 0
            elif shapes[1] == out and shapes[0] != out:
                index = 1
            else:
                return None
            other = shapes[1 - index]
            if other is None or len(other) > 2 or any(d != 1 for d in other[:-1]) or (other and other[-1] not in (1, out[-1])):
                return None  # not a per-column (or scalar) bias
        chain.append((call, index))
        x = call.args[index]
    return None


def _weight(b: relax.Expr, var2val):
    """``(Wq [M, K], sw, zw)`` with ``sw``, ``zw`` per tensor or per output column, or a reason."""
    transposed = call_of(b, var2val, "relax.permute_dims")
    if transposed is not None:
        axes = transposed.attrs.axes
        if axes is not None and [int(a) for a in axes] != [1, 0]:
            return "its weight is permuted other than transposed"
        b = transposed.args[0]
    dq = call_of(b, var2val, "relax.dequantize")
    if dq is None:
        return "its weight is not dequantized"
    w, sw, zw = (const_of(a, var2val) for a in dq.args)
    if w is None or sw is None or zw is None:
        return "its weight (or its scale or zero point) is not a constant"
    if w.ndim != 2 or str(w.dtype) not in INTEGER_TYPES:
        return f"its weight is {w.ndim}-d {w.dtype}, not a 2-d int8/uint8 matrix"
    out_axis = 0 if transposed is not None else 1  # the output column's axis in the stored weight
    if max(sw.size, zw.size) > 1 and int(dq.attrs.axis) % 2 != out_axis:
        return "its weight scales are neither per tensor nor per output column"
    return (w if transposed is not None else w.T), sw, zw


def matmul_as_conv(rewriter, quantize: relax.Call):
    """The rule on one ``quantize`` binding: ``(name, what, value)``, a reason, or "" (no matmul)."""
    v2v = rewriter.var2val
    found = _epilogue(quantize, v2v)
    if found is None:
        return ""
    matmul, chain = found
    a, b = matmul.args
    dq_x = call_of(a, v2v, "relax.dequantize")
    if dq_x is None:
        return ""  # a float matmul (or a matmul of other values): none of this rule's business
    xq, sx, zx = dq_x.args
    shape = static_shape(a)
    if shape is None or len(shape) != 2:
        return "its input is not a 2-d tensor of static shape"
    if str(xq.ty.dtype) not in INTEGER_TYPES:
        return f"its input is {xq.ty.dtype}, not int8/uint8"
    sx_value, zx_value = const_of(sx, v2v), const_of(zx, v2v)
    if sx_value is None or zx_value is None or sx_value.size != 1 or zx_value.size != 1:
        return "its input's scale or zero point is not a per-tensor constant"
    weight = _weight(b, v2v)
    if isinstance(weight, str):
        return weight
    w, sw, zw = weight
    (n, k), m = shape, w.shape[0]
    if w.shape[1] != k or static_shape(matmul) != (n, m) or str(matmul.ty.dtype) != "float32":
        return "its shapes or dtype are not those of a float32 [N, K] x [K, M] matmul"
    sy = const_of(quantize.args[1], v2v)
    if sy is None or (sy.size > 1 and int(quantize.attrs.axis) % 2 != 1):
        return "its quantize is neither per tensor nor per output column"
    bb = rewriter.builder_
    name = _value_name(quantize.args[0], matmul, v2v)
    if n == 1:  # NCHW: a 1x1 image of K channels
        image, weight, layouts, channel = (1, k, 1, 1), w.reshape(m, k, 1, 1), ("NCHW", "OIHW"), (1, -1, 1, 1)
    else:  # NHWC: the rows as the pixels of an image (a view of [N, K])
        image, weight, layouts, channel = (1, *rows_as_image(n), k), w.T.reshape(1, 1, k, m), ("NHWC", "HWIO"), (1, 1, 1, -1)
    axis = layouts[0].index("C")
    data = bb.emit(relax.op.dequantize(bb.emit(relax.op.reshape(rewriter.visit_expr(xq), image)), relax.const(sx_value),
                                       relax.const(zx_value), axis=axis))
    weights = bb.emit(relax.op.dequantize(relax.const(np.ascontiguousarray(weight)), relax.const(sw), relax.const(zw),
                                          axis=layouts[1].index("O")))
    y = bb.emit(relax.op.nn.conv2d(data, weights, data_layout=layouts[0], kernel_layout=layouts[1], out_dtype="float32"), name)
    for call, index in chain:
        args = [rewriter.visit_expr(arg) for arg in call.args]
        args[index] = y
        if call.op.name == "relax.add":
            other = args[1 - index]
            if len(static_shape(call.args[1 - index])) > 0:
                other = relax.op.reshape(other, channel)
            args[1 - index] = other
        y = bb.emit(relax.Call(call.op, args, call.attrs, call.ty_args))
    value = bb.emit(relax.op.quantize(y, *(rewriter.visit_expr(arg) for arg in quantize.args[1:]), axis=axis,
                                      out_dtype=str(quantize.ty.dtype)))
    return name, WHAT, relax.op.reshape(value, (n, m))


def _value_name(_outer, matmul, var2val) -> str:
    """The matmul's binding name (the report's row name)."""
    for var, value in var2val.items():
        if value.same_as(matmul):
            return var.name
    return "matmul"
