"""``CpuResize``: bilinear resizes as two separable passes on CPUs.

A float32 ``resize2d`` (``linear``, NCHW or NHWC, static shapes, a coordinate mode of
``x86_resize.MODES``) becomes ``x86_resize.separable_resize2d``: the input's rows interpolated
along the width, then the output's rows from two of those rows each, the same floats as TVM's
kernel (bit-identical) without its per-lane gathers. LRASPP-MobileNetV3's 28x28 -> 224x224
upsampling of 21 class maps on this AVX2 CPU: see the README (x86). Left, with the reason:
other methods (nearest, cubic), modes that need a region of interest, other dtypes and
layouts, dynamic shapes. Runs in the ``cpu`` stage on LLVM CPU targets.
``disabled_pass=["CpuResize"]``: TVM's kernel.
"""

from __future__ import annotations

import tvm
from tvm import relax
from tvm.relax.expr_functor import PyExprMutator, mutator

from ...schedules.x86_resize import MODES, separable_resize2d
from ..outcome import applied, refused
from ..relax_tools import is_call, static_shape
from ..rules import CpuPass

PASS_NAME = "CpuResize"


def why_not(call: relax.Call) -> str | None:
    """Why a ``resize2d`` call is left to TVM's kernel, or None when it is not."""
    attrs = call.attrs
    if str(attrs.method) != "linear":
        return f"method {attrs.method}: only linear is separable here"
    if str(attrs.coordinate_transformation_mode) not in MODES:
        return f"coordinate mode {attrs.coordinate_transformation_mode} (a region of interest)"
    if str(attrs.layout) not in ("NCHW", "NHWC"):
        return f"layout {attrs.layout}"
    if str(call.args[0].ty.dtype) != "float32" or str(call.ty.dtype) != "float32":
        return f"{call.args[0].ty.dtype} -> {call.ty.dtype}: float32 only"
    if static_shape(call.args[0]) is None or static_shape(call) is None:
        return "dynamic shape"
    return None


@tvm.transform.module_pass(opt_level=0, name=PASS_NAME)
class CpuResize(CpuPass):
    """Bilinear resizes as two separable passes (the module doc)."""

    def run(self, mod: tvm.IRModule, _target) -> tvm.IRModule:
        rewriter = _Rewriter(mod, self.outcomes)
        for gv, func in mod.functions.items():
            if isinstance(func, relax.Function) and not (func.attrs is not None and func.attrs.get("Primitive", False)):
                rewriter.builder_.update_func(gv, rewriter.visit_expr(func))
        return rewriter.builder_.get() if any(o.applied for o in self.outcomes) else mod


@mutator
class _Rewriter(PyExprMutator):
    def __init__(self, mod, outcomes):
        super().__init__(mod)
        self.outcomes = outcomes

    def visit_var_binding_(self, binding: relax.VarBinding) -> None:
        call = binding.value
        if not is_call(call, "relax.image.resize2d"):
            return super().visit_var_binding_(binding)
        name = binding.var.name
        reason = why_not(call)
        if reason is not None:
            refused(self.outcomes, name, reason)
            return super().visit_var_binding_(binding)
        layout, out = str(call.attrs.layout), static_shape(call)
        out_h, out_w = (out[2], out[3]) if layout == "NCHW" else (out[1], out[2])
        resized = self.builder_.call_te(separable_resize2d, self.visit_expr(call.args[0]), out_h, out_w, layout,
                                        str(call.attrs.coordinate_transformation_mode), primfunc_name_hint="resize2d_separable")
        applied(self.outcomes, name, f"bilinear {layout} resize to {out_h}x{out_w} as two separable passes")
        return super().visit_var_binding_(relax.VarBinding(binding.var, resized))
