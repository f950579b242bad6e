"""``RemoveDropout``: ``dropout(x)[0]`` is ``x`` at inference.

ONNX ``Dropout`` (AlexNet, VGG, ZFNet, SqueezeNet 1.0, GoogLeNet's classifier) imports as
``relax.nn.dropout``, a tuple of the data and a mask, which ``LegalizeOps`` lowers to a copy
of the data and a kernel filling the mask with ones. Fused after a dense layer, the second
output keeps the dense layer's kernel from its schedule (a block writing an output of its own
next to the reduction). At inference dropout is the identity (ONNX: ``training_mode`` false,
the default), so the data read from it becomes its input; a dropout whose mask is read keeps
its call for the mask. Matched with TVM's pattern language (``rewrite_call``), as
``relax/transform/remove_redundant_reshape.py`` does.
"""

from __future__ import annotations

import tvm
from tvm import relax
from tvm.relax.dpl import is_op, is_tuple_get_item, wildcard

from .rules import Rule, RuleSet

PASS_NAME = "RemoveDropout"


@tvm.transform.module_pass(opt_level=0, name=PASS_NAME)
class RemoveDropout(RuleSet):
    """Replace ``dropout(x)[0]`` by ``x``; ``outcomes`` per dropout."""

    def __init__(self):
        self.data = wildcard()
        super().__init__([Rule(is_tuple_get_item(is_op("relax.nn.dropout")(self.data), 0), self._identity)])

    def _identity(self, _item: relax.Expr, matches) -> tuple[relax.Expr, str]:
        return matches[self.data], "dropout is the identity at inference: its input read instead"
