"""``FoldBatchNorm``: a batch norm after a conv folded into the conv's weights and a bias, at
compile time; the other batch norms made elementwise arithmetic.

Networks exported in training form (the onnx wheel's light ResNet-50, ShuffleNet, Inception-v2,
DenseNet-121) keep ``BatchNormalization`` after their convs, which ONNX Runtime folds when it
loads them. Relax imports it as ``batch_norm``, a tuple, legalized as a kernel of its own after
the conv's (light ShuffleNet at 224: 8.6 ms of kernels on one thread, its batch norms a quarter).
At inference a batch norm is ``y = x * s + t`` per channel, ``s = gamma / sqrt(var + eps)``,
``t = beta - mean * s``, so

    batch_norm(conv(x, W))[0]  ->  conv(x, W * s along O) + t along the output's C

with ``s`` and ``t`` computed in float64 from the constants and rounded once (ONNX Runtime
folds in float32). Batch norms that do not follow a conv with constant weights (DenseNet's
norm before its convs) are made ``(x - mean) / sqrt(var + eps) * gamma + beta`` by TVM's
``DecomposeOpsForInference``, elementwise ops that fuse into their neighbours' kernels.

Left as they were, with the reason: batch norms whose parameters are not constants, of an
axis that is not the conv's output channels, convs of layouts ``conv_spec`` does not take.
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax
from tvm.relax.dpl import is_const, is_op, is_tuple_get_item, wildcard

from ..geometry import Unsupported
from .relax_tools import check_layouts
from .rules import Rule, RuleSet

PASS_NAME = "FoldBatchNorm"


@tvm.transform.module_pass(opt_level=0, name=PASS_NAME)
class FoldBatchNorm(RuleSet):
    """Fold ``batch_norm(conv2d(x, W))[0]`` into ``conv2d(x, W') + t`` (module doc), then
    decompose the remaining batch norms; ``outcomes`` per batch norm after a conv."""

    def __init__(self):
        self.data, self.weight = wildcard(), is_const()
        self.conv = is_op("relax.nn.conv2d")(self.data, self.weight)
        self.params = [wildcard() for _ in range(4)]  # gamma, beta, mean, var
        self.norm = is_op("relax.nn.batch_norm")(self.conv, *self.params)
        super().__init__([Rule(is_tuple_get_item(self.norm, 0), self._fold)])

    def finish(self, mod: tvm.IRModule) -> tvm.IRModule:
        return relax.transform.DecomposeOpsForInference()(mod)

    def _fold(self, _item, matches) -> tuple[relax.Expr, str] | str:
        conv, norm = matches[self.conv], matches[self.norm]
        try:
            check_layouts(conv)
        except Unsupported as exc:
            return f"conv {exc}: left to the elementwise batch norm"
        params = [matches[p] for p in self.params]
        if not all(isinstance(p, tvm.ir.GenericConst) for p in params):
            return "batch norm parameters are not constants: left to the elementwise batch norm"
        gamma, beta, mean, var = (p.value.numpy().astype(np.float64) for p in params)
        layout, kernel_layout = str(conv.attrs.out_layout), str(conv.attrs.kernel_layout)
        axis = int(norm.attrs.axis) % len(layout)
        if layout[axis] != "C":
            return f"batch norm over axis {axis} of a {layout} conv, not its channels: left to the elementwise batch norm"
        scale = gamma / np.sqrt(var + float(norm.attrs.epsilon))
        shift = beta - mean * scale
        w = matches[self.weight].value.numpy()
        o = kernel_layout.index("O")
        dtype = str(w.dtype)
        if not dtype.startswith("float"):
            return f"a {dtype} conv: left to the elementwise batch norm"
        folded = (w.astype(np.float64) * scale.reshape([-1 if i == o else 1 for i in range(w.ndim)])).astype(dtype)
        bias = shift.reshape([-1 if i == axis else 1 for i in range(len(layout))]).astype(dtype)
        y = relax.Call(conv.op, [matches[self.data], relax.const(folded)], conv.attrs)
        channels = len(scale)
        return relax.op.add(y, relax.const(bias)), f"{channels} channels: scale folded into the conv's weights, shift a bias"
