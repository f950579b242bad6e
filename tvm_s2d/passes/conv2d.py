"""Which ``relax.nn.conv2d`` calls can be rewritten, and with which block.

This is the *check* half of the rewrite rule: ``decide`` turns a conv call into a
``Decision`` carrying either an exact ``S2DConvPlan`` or the reason for refusing. The pass
(``space_to_depth_conv2d.py``) and the report (``report.py``) share it, so the report always
says what the pass does.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import tvm
from tvm import relax
from tvm.ir.prim.expr import IntImm
from tvm.relax.dpl import is_op, wildcard

from ..geometry import (
    LAYOUTS,
    Conv2dSpec,
    S2DConvPlan,
    Unsupported,
    choose_block,
    kernel_to_oihw,
    oihw_to_kernel,
    spatial_axes,
)

#: ``conv2d(data, weight)``; the weight is checked for constness in ``decide`` so that a
#: non-constant weight gets a refusal in the report rather than silence.
CONV2D = is_op("relax.nn.conv2d")(wildcard(), wildcard())


@dataclass(frozen=True)
class Decision:
    """What the rewrite does with one conv: ``plan`` when rewritten, else ``reason``."""

    name: str
    data_shape: tuple | None
    weight_shape: tuple | None
    out_shape: tuple | None
    layout: str | None
    spec: Conv2dSpec | None
    plan: S2DConvPlan | None = None
    reason: str | None = None
    source: str = ""  # "forced block" or "lane model"

    @property
    def rewritten(self) -> bool:
        return self.plan is not None


def static_shape(expr: relax.Expr) -> tuple[int, ...] | None:
    """The shape of a tensor expression when every dimension is a known integer."""
    ty = expr.ty
    if not isinstance(ty, relax.TensorType) or ty.shape is None:
        return None
    dims = getattr(ty.shape, "values", None)
    if dims is None or not all(isinstance(d, IntImm) for d in dims):
        return None
    return tuple(int(d) for d in dims)


def constant_weight(call: relax.Call) -> np.ndarray | None:
    weight = call.args[1]
    return weight.value.numpy() if isinstance(weight, tvm.ir.GenericConst) else None


def decide(name: str, call: relax.Call, block=None, lane_width: int = 32) -> Decision:
    """Check one conv2d call; ``block`` is a normalized pair to force, or None for the lane model."""
    data_shape, weight_shape, out_shape = (static_shape(e) for e in (call.args[0], call.args[1], call))
    attrs = call.attrs
    layout = str(attrs.data_layout)

    def refuse(reason: str, spec=None) -> Decision:
        return Decision(name, data_shape, weight_shape, out_shape, layout, spec, reason=reason)

    if data_shape is None or weight_shape is None:
        return refuse("dynamic or unknown shape")
    if layout not in LAYOUTS:
        return refuse(f"data layout {layout} is not NCHW or NHWC")
    out_layout = str(attrs.out_layout)
    if out_layout != layout:
        return refuse(f"output layout {out_layout} differs from data layout {layout}")
    try:
        kernel_to_oihw(str(attrs.kernel_layout))
    except ValueError as exc:
        return refuse(str(exc))
    spec = conv2d_spec(call, data_shape, weight_shape)
    if not isinstance(call.args[1], tvm.ir.GenericConst):
        return refuse("weight is not a compile-time constant", spec)
    try:
        if block is not None:
            plan, source = spec.plan(block), "forced block"
        else:
            plan, source = choose_block(spec, lane_width), "lane model"
    except Unsupported as exc:
        return refuse(str(exc), spec)
    return Decision(name, data_shape, weight_shape, out_shape, layout, spec, plan=plan, source=source)


def conv2d_spec(call: relax.Call, data_shape, weight_shape) -> Conv2dSpec:
    attrs = call.attrs
    hax, wax, cax = spatial_axes(str(attrs.data_layout))
    o, i, kh, kw = (weight_shape[axis] for axis in kernel_to_oihw(str(attrs.kernel_layout)))
    return Conv2dSpec(
        batch=data_shape[0],
        in_channels=data_shape[cax],
        out_channels=o,
        in_hw=(data_shape[hax], data_shape[wax]),
        kernel_hw=(kh, kw),
        strides=tuple(int(v) for v in attrs.strides),
        dilation=tuple(int(v) for v in attrs.dilation),
        padding=tuple(int(v) for v in attrs.padding),
        groups=int(attrs.groups),
    )


def folded_weight(call: relax.Call, plan: S2DConvPlan) -> np.ndarray:
    """The conv's constant weight folded for ``plan``, in the conv's kernel layout."""
    kernel_layout = str(call.attrs.kernel_layout)
    oihw = constant_weight(call).transpose(kernel_to_oihw(kernel_layout))
    return plan.fold_weight(oihw).transpose(oihw_to_kernel(kernel_layout))
