"""``HexagonLayout``: one layout, NHWC, for the whole model on Hexagon targets.

The HVX kernels take NHWC (channels innermost, the lanes' bytes); an NCHW model would pay a
transpose before and after every conv (``HexagonConvs`` wraps each in one). TVM's
``ConvertLayout`` turns the convs to NHWC (HWIO weights) and carries the layout through the
ops between them that know how, so transposes stay at the model's input and output. Runs in
the ``"s2d"`` pipeline after the preparation (the QDQ convs are integer convs with constant
weights by then) and before the rewrite; other targets are left as they are.
"""

from __future__ import annotations

import tvm
from tvm import relax

from ...targets import is_hexagon
from ..outcome import Outcome, applied, refused
from ..relax_tools import is_call

PASS_NAME = "HexagonLayout"


@tvm.transform.module_pass(opt_level=0, name=PASS_NAME)
class HexagonLayout:
    def __init__(self, target: tvm.target.Target | None = None):
        self.target = target
        self.outcomes: list[Outcome] = []

    def transform_module(self, mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        self.outcomes = []
        if not is_hexagon(self.target or tvm.target.Target.current(allow_none=True)):
            return mod
        convs = _convs(mod)
        for name, layout in convs:
            if layout == "NHWC":
                refused(self.outcomes, name, "already NHWC")
            else:
                applied(self.outcomes, name, f"{layout} -> NHWC")
        if all(layout == "NHWC" for _, layout in convs):
            return mod
        mod = relax.transform.ConvertLayout({"relax.nn.conv2d": ["NHWC", "HWIO"]})(mod)
        return relax.transform.FoldConstant()(mod)  # the weights' transposes


def _convs(mod: tvm.IRModule) -> list[tuple[str, str]]:
    found = []
    for _, func in mod.functions_items():
        if not isinstance(func, relax.Function):
            continue
        for name, value in relax.analysis.get_var2val(func).items():
            if is_call(value, "relax.nn.conv2d"):
                found.append((name.name, str(value.attrs.data_layout)))
    return found
