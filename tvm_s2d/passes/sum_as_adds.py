"""``SumAsAdds``: ONNX ``Sum`` as a chain of adds.

TVM's ONNX importer writes ``Sum(a, b, ...)`` (the light ResNet-50's and ShuffleNet's residual
adds) as every input broadcast to the output's shape, stacked on a new axis and summed over
it: a copy of each input, a tensor of all of them, a reduction. The stack and the reduction keep
``CpuLayout`` from carrying a layout through the add (each residual add went back to NCHW and
forth again: light ResNet-50 at 224, 9 ms of transposes in 49 ms of kernels on one thread) and
the add from fusing into the conv before it. Two rules (in one traversal):

    broadcast_to(x, shape of x)               ->  x                 (the identity)
    sum(stack((a, b, c, ...), axis=0), axis=0)  ->  ((a + b) + c) ...  (numpy broadcasting)

Exact: the reduction adds along the stacked axis in order from zero, ``((0 + a) + b) + c``,
which is ``(a + b) + c``. A ``sum`` of a stack over another axis, or keeping its axis, is left.
"""

from __future__ import annotations

import tvm
from tvm import relax
from tvm.relax.dpl import is_op, wildcard

from .relax_tools import static_shape
from .rules import Rule, RuleSet

PASS_NAME = "SumAsAdds"


@tvm.transform.module_pass(opt_level=0, name=PASS_NAME)
class SumAsAdds(RuleSet):
    """Identity broadcasts removed and sums of stacks written as adds (module doc); ``outcomes``
    per sum (the identity broadcasts are a step of the sum's rule, not decisions)."""

    def __init__(self):
        self.broadcast_data = wildcard()
        self.stack = is_op("relax.stack")(wildcard())
        super().__init__([
            Rule(is_op("relax.broadcast_to")(self.broadcast_data, wildcard()), self._identity, recorded=False),
            Rule(is_op("relax.sum")(self.stack), self._adds),
        ])

    def _identity(self, call: relax.Call, matches):
        data = matches[self.broadcast_data]
        shape = static_shape(data)
        if shape is None or shape != static_shape(call) or str(data.ty.dtype) != str(call.ty.dtype):
            return "not the identity"
        return data, "the identity"

    def _adds(self, call: relax.Call, matches):
        stack = matches[self.stack]
        fields = stack.args[0]
        if not isinstance(fields, relax.Tuple):
            return "a sum of a stacked tuple variable: left as it was"
        axes = call.attrs.axis
        if int(stack.attrs.axis) != 0 or axes is None or [int(a) for a in axes] != [0] or call.attrs.keepdims:
            return "a sum of a stack over another axis, or keeping it: left as it was"
        total = fields.fields[0]
        for field in fields.fields[1:]:
            total = relax.op.add(total, field)
        if len(fields.fields) == 1:
            return "a sum of one tensor: left as it was"
        return total, f"a sum of {len(fields.fields)} tensors as {len(fields.fields) - 1} add(s)"
