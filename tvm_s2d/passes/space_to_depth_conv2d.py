"""``SpaceToDepthConv2d``: rewrite low-channel convs as exact space-to-depth convs.

Rule, in the onnxscript rewriter's terms:

* pattern: ``relax.nn.conv2d(data, weight)`` (``conv2d.CONV2D``);
* check: ``conv2d.decide`` -> an exact plan from ``geometry``, or a readable reason;
* rewrite: ``align -> S2D -> conv2d(folded constant weight) [-> D2S] [-> crop]``.

The folded weight is computed in numpy here, at compile time: nothing about the weight is
left to run time. A refused conv is left exactly as it was; ``decisions`` records why.
"""

from __future__ import annotations

import tvm
from tvm import relax
from tvm.relax.expr_functor import PyExprMutator, mutator

from ..geometry import normalize_block
from .conv2d import CONV2D, Decision, decide, folded_weight
from .emit import crop_spatial, emit_align, emit_depth_to_space, emit_space_to_depth

PASS_NAME = "SpaceToDepthConv2d"


def check_options(block, lane_width) -> tuple[tuple[int, int] | None, int]:
    """Validate the pass options; returns ``(block pair or None, lane_width)``."""
    if isinstance(lane_width, bool) or not isinstance(lane_width, int) or lane_width < 1:
        raise ValueError(f"lane_width must be a positive int, got {lane_width!r}")
    return (None if block is None else normalize_block(block)), lane_width


@tvm.transform.module_pass(opt_level=0, name=PASS_NAME)
class SpaceToDepthConv2d:
    """Rewrite ``relax.nn.conv2d`` with few input channels into its space-to-depth form.

    Parameters
    ----------
    block : None, int or (int, int)
        Force this block on every eligible conv; ``None`` lets the lane model choose per
        layer (the block with the fewest executed MACs on ``lane_width`` lanes, if any).
    lane_width : int
        Channels per vector lane group in the cost model (32 for HTP / HVX ``vrmpy``).

    After the pass runs, ``decisions`` lists a ``Decision`` per conv it saw.
    """

    def __init__(self, block=None, lane_width: int = 32):
        self.block, self.lane_width = check_options(block, lane_width)
        self.decisions: list[Decision] = []

    def transform_module(self, mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        rewriter = _Rewriter(mod, self.block, self.lane_width)
        mod = rewriter.transform()
        self.decisions = rewriter.decisions
        return mod


@mutator
class _Rewriter(PyExprMutator):
    def __init__(self, mod: tvm.IRModule, block, lane_width: int):
        super().__init__(mod)
        self.mod = mod
        self.block = block
        self.lane_width = lane_width
        self.decisions: list[Decision] = []

    def transform(self) -> tvm.IRModule:
        for gvar, func in self.mod.functions_items():
            if isinstance(func, relax.Function) and not func.attrs.get("Primitive", False):
                self.builder_.update_func(gvar, self.visit_expr(func))
        return self.builder_.get()

    def visit_var_binding_(self, binding: relax.VarBinding) -> None:
        call = binding.value
        if not CONV2D.match(call):
            return super().visit_var_binding_(binding)
        decision = decide(binding.var.name, call, self.block, self.lane_width)
        self.decisions.append(decision)
        if not decision.rewritten:
            return super().visit_var_binding_(binding)
        new_value = self._rewrite(self.visit_expr(call.args[0]), call, decision)
        # Re-emitting through the base class keeps the bound var (and its kind: dataflow or
        # output) so every use of the original conv now sees the rewritten value.
        return super().visit_var_binding_(relax.VarBinding(binding.var, new_value))

    def _rewrite(self, data: relax.Expr, call: relax.Call, decision: Decision) -> relax.Expr:
        bb, plan, layout, name = self.builder_, decision.plan, decision.layout, decision.name
        attrs = call.attrs
        x = emit_align(bb, data, plan.align, layout, name)
        if x is not data:
            x = bb.emit(x, name + "_align")
        x = bb.emit(emit_space_to_depth(bb, x, plan.block, layout, name), name + "_s2d")
        weight = relax.const(folded_weight(call, plan))
        y = relax.op.nn.conv2d(
            x,
            weight,
            strides=plan.strides,
            padding=plan.padding,
            dilation=(1, 1),
            groups=1,
            data_layout=layout,
            kernel_layout=str(attrs.kernel_layout),
            out_layout=layout,
            out_dtype=attrs.out_dtype,
        )
        if plan.needs_d2s:
            y = bb.emit(y, name + "_s2d_conv")
            y = emit_depth_to_space(bb, y, plan.out_block, layout, name + "_d2s")
        if plan.crop_hw is not None:
            y = crop_spatial(bb.emit(y, name + "_d2s"), plan.crop_hw, layout)
        return y
