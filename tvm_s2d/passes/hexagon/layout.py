"""``HexagonLayout``: one layout, NHWC, for the whole model on Hexagon targets (the policy of
``conv_layout`` for Hexagon).

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
from ..conv_layout import ConvLayouts, convert_convs
from ..outcome import applied, refused
from ..relax_tools import is_call

PASS_NAME = "HexagonLayout"


@tvm.transform.module_pass(opt_level=0, name=PASS_NAME)
class HexagonLayout(ConvLayouts):
    """Every conv NHWC."""

    def applies(self, target) -> bool:
        return is_hexagon(target)

    def convert(self, mod: tvm.IRModule, target: tvm.target.Target) -> tvm.IRModule:
        convs = _convs(mod)
        for name, layout in convs:
            if layout == "NHWC":
                refused(self.outcomes, name, "already NHWC")
            else:
                applied(self.outcomes, name, f"{layout} -> NHWC")
        if all(layout == "NHWC" for _, layout in convs):
            return mod
        return convert_convs(mod, lambda conv: "NHWC")


def _convs(mod: tvm.IRModule) -> list[tuple[str, str]]:
    found = []
    for _, func in mod.functions_items():
        if not isinstance(func, relax.Function):
            continue
        for name, value in relax.analysis.get_var2val(func).items():
            if is_call(value, "relax.nn.conv2d"):
                found.append((name.name, str(value.attrs.data_layout)))
    return found
