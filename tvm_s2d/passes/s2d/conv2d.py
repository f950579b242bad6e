"""Which convs can be rewritten, and how: the *check* half of the rewrite rules.

``decide`` turns a ``relax.nn.conv2d`` or ``relax.nn.conv2d_transpose`` call into a
``Decision`` carrying either an exact plan from ``geometry`` or the reason for refusing. For a
conv whose input already lives in the S2D domain it also weighs staying there against going
back to plain layout, and records both costs. The pass and the report share it, so the report
always says what the pass does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
import tvm
from tvm import relax

from ...geometry import Conv2dSpec, CostModel, Domain, TransposedConv2dSpec, Unsupported, choose_block, kernel_to_oihw, \
    oihw_to_kernel
from ..relax_tools import CONV2D, CONV2D_TRANSPOSE, conv_spec, static_shape

#: The weight layout a transposed conv's folded stride-1 conv uses, per data layout.
FOLDED_KERNEL_LAYOUT = {"NCHW": "OIHW", "NHWC": "HWIO"}


@dataclass(frozen=True)
class Decision:
    """What the rewrite does with one conv: ``plan`` when rewritten, else ``reason``.

    ``in_domain``: the conv's input was in the S2D domain; ``stayed`` then says whether the
    conv consumed it there, with ``stay_cost`` and ``leave_cost`` the two estimates.
    """

    name: str
    kind: str  # "conv2d" or "conv2d_transpose"
    data_shape: tuple | None
    weight_shape: tuple | None
    out_shape: tuple | None
    layout: str | None
    spec: Conv2dSpec | TransposedConv2dSpec | None
    plan: object | None = None
    reason: str | None = None
    source: str = ""  # "forced block", "cost model"
    in_domain: bool = False
    stayed: bool = False
    stay_cost: float | None = None
    leave_cost: float | None = None

    @property
    def rewritten(self) -> bool:
        return self.plan is not None


def constant_weight(call: relax.Call) -> np.ndarray | None:
    weight = call.args[1]
    return weight.value.numpy() if isinstance(weight, tvm.ir.GenericConst) else None


def decide(name: str, call: relax.Call, block=None, model: CostModel = CostModel(), domain: Domain | None = None) -> Decision:
    """Check one conv call.

    ``block``: a normalized pair to force, or None for the cost model. ``domain``: where the
    conv's input lives when it is in the S2D domain (None: plain).
    """
    kind = "conv2d" if CONV2D.match(call) else "conv2d_transpose"
    shapes = tuple(static_shape(e) for e in (call.args[0], call.args[1], call))
    layout = str(call.attrs.data_layout)

    def refuse(reason: str, spec=None) -> Decision:
        return Decision(name, kind, *shapes, layout, spec, reason=reason, in_domain=domain is not None)

    try:
        spec = conv_spec(call)
    except Unsupported as exc:
        return refuse(str(exc))
    if not isinstance(call.args[1], tvm.ir.GenericConst):
        return refuse("weight is not a compile-time constant", spec)
    source = "forced block" if block is not None else "cost model"
    if kind == "conv2d_transpose":
        return _decide_transpose(name, spec, shapes, layout, block, model, domain, refuse)

    try:
        plain = spec.plan(block, layout=layout, model=model) if block else choose_block(spec, model, layout=layout)
        reason = None
    except Unsupported as exc:
        plain, reason = None, str(exc)
    if domain is None:
        return Decision(name, kind, *shapes, layout, spec, plain, reason, source if plain else "")

    stay = None
    if block is None or block == domain.block:
        try:
            stay = spec.plan(domain.block, domain=domain, layout=layout, model=model)
        except Unsupported:
            pass
    leave_cost = model.move_cost * domain.leave_bytes(spec.batch, spec.in_channels, spec.itemsize, layout)
    leave_cost += plain.cost(model) if plain else model.conv_cost(spec, layout)
    stay_cost = stay.cost(model) if stay else math.inf
    common = dict(in_domain=True, stay_cost=stay_cost, leave_cost=leave_cost)
    if stay_cost <= leave_cost:
        return Decision(name, kind, *shapes, layout, spec, stay, None, source, stayed=True, **common)
    return Decision(name, kind, *shapes, layout, spec, plain, reason, source if plain else "", **common)


def _decide_transpose(name, spec, shapes, layout, block, model, domain, refuse) -> Decision:
    try:
        plan = spec.plan(layout, model)
    except Unsupported as exc:
        return refuse(str(exc), spec)
    if block is None and plan.cost(model) >= spec.executed_macs(model.lane_width):
        return refuse("no estimated gain over the transposed conv", spec)
    source = "forced block" if block is not None else "cost model"
    return Decision(name, "conv2d_transpose", *shapes, layout, spec, plan, None, source, in_domain=domain is not None)


def folded_weight(call: relax.Call, plan) -> np.ndarray:
    """The conv's constant weight folded for ``plan``, in the layout of the emitted conv."""
    layout = str(call.attrs.kernel_layout)
    weight = constant_weight(call)
    if CONV2D_TRANSPOSE.match(call):
        iohw = weight.transpose(tuple(layout.index(axis) for axis in "IOHW"))
        out_layout = FOLDED_KERNEL_LAYOUT[str(call.attrs.data_layout)]
        return plan.fold_weight(iohw).transpose(oihw_to_kernel(out_layout))
    oihw = weight.transpose(kernel_to_oihw(layout))
    return plan.fold_weight(oihw).transpose(oihw_to_kernel(layout))


def with_output_offset(decision: Decision, offset, model: CostModel) -> Decision:
    """The decision re-planned so its output lands at ``offset``, if that costs no more than the
    D2S and S2D a mismatched offset would cost; else the decision unchanged."""
    plan = decision.plan
    if plan is None or plan.out_domain is None or plan.out_domain.offset == tuple(offset):
        return decision
    spec = decision.spec
    try:
        if decision.kind == "conv2d_transpose":
            fixed = spec.plan(decision.layout, model, offset_out=offset)
        else:
            fixed = spec.plan(plan.block, domain=plan.domain, layout=decision.layout, model=model, offset_out=offset)
    except Unsupported:
        return decision
    mismatch = model.move_cost * 2 * plan.out_domain.leave_bytes(spec.batch, spec.out_channels, spec.itemsize, decision.layout)
    return replace(decision, plan=fixed) if fixed.cost(model) <= plan.cost(model) + mismatch else decision
