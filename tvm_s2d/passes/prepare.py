"""What runs before the rewrite, with or without it (the ``"s2d"`` pipeline's preparation, and
what ``SpaceToDepthConv2d`` applied on its own runs first): QDQ convs made integer (exact),
then constants folded, so that weights and biases (ONNX initializers behind dequantize,
reshape or transpose) are constants the rewrite can fold and adapt; then each quantized
conv's float epilogue, each quantized residual add, max pool and concat, as integer
arithmetic (``IntegerRequantize``, ``IntegerAdd``, ``IntegerPoolConcat``)."""

from __future__ import annotations

import tvm
from tvm.relax import transform

from .integer_add import IntegerAdd
from .integer_pool_concat import IntegerPoolConcat
from .integer_requantize import IntegerRequantize
from .qdq_conv_to_integer import QDQConvToInteger


def prepare_passes() -> list[tvm.transform.Pass]:
    return [QDQConvToInteger(), transform.FoldConstant(), IntegerRequantize(), IntegerAdd(), IntegerPoolConcat()]


def prepare(mod: tvm.IRModule) -> tvm.IRModule:
    return tvm.transform.Sequential(prepare_passes())(mod)
