"""What runs before the rewrite, with or without it (the ``"s2d"`` pipeline's preparation, and
what ``SpaceToDepthConv2d`` applied on its own runs first): dropouts made the identity
(``RemoveDropout``, inference), ONNX ``Sum`` made adds (``SumAsAdds``), QDQ fully connected layers made
1x1 convs (``QDQMatmulToConv``), QDQ convs made integer (exact), powers with an exponent in
quarters (LRN's ``x^0.75``) made products of square roots (``PowerAsRoots``: no ``powf``,
which the Hexagon harness lacks, on any target), then constants folded, so that weights and biases (ONNX initializers behind dequantize,
reshape or transpose) are constants the rewrite can fold and adapt; batch norms folded into
the convs before them (``FoldBatchNorm``), the others made elementwise; then each quantized
conv's float epilogue, each quantized residual add, pool, concat and data movement as integer
arithmetic, and each float activation of one 8-bit tensor as a 256-entry table
(``IntegerArithmetic``: the rules of ``quantized/integer.py`` in one traversal)."""

from __future__ import annotations

import tvm
from tvm.relax import transform

from .fold_batch_norm import FoldBatchNorm
from .fold_constants import FoldConstantOps
from .power_as_roots import PowerAsRoots
from .quantized.integer import IntegerArithmetic
from .remove_dropout import RemoveDropout
from .sum_as_adds import SumAsAdds
from .quantized.qdq_conv_to_integer import QDQConvToInteger
from .quantized.qdq_matmul_to_conv import QDQMatmulToConv


def prepare_passes() -> list[tvm.transform.Pass]:
    return [RemoveDropout(), SumAsAdds(), QDQMatmulToConv(), QDQConvToInteger(), PowerAsRoots(), FoldConstantOps(),
            transform.FoldConstant(), FoldBatchNorm(), IntegerArithmetic()]


def prepare(mod: tvm.IRModule) -> tvm.IRModule:
    return tvm.transform.Sequential(prepare_passes())(mod)
