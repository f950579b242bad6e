"""``CpuLayout``: each conv on an LLVM CPU target in the layout whose vectors it fills.

The CPU conv schedule (``schedules/x86.py``) puts the SIMD lanes on the innermost output axis:
the width in NCHW, the output channels in NHWC, in whole power-of-two vectors. A 56-pixel row
fills vectors of 8 of AVX-512's 16 lanes, a 28-pixel row vectors of 4, while 32 or 64 output
channels fill them all (measured on a 32->32 3x3 conv at 56x56: 0.29 ms NCHW, 0.19 ms NHWC;
72->36 1x1 at 112x112: 0.34 ms NCHW, 0.67 ms NHWC). A width stride makes NCHW vectors gather
(a strided depthwise conv: 0.34 ms NCHW, 0.10 ms NHWC), and NCHW depthwise convs load a row
per channel (1.15-3.5x slower than NHWC, measured on six of MobileNetV2's). Each conv's cost
is its MACs over the lanes it fills, plus the pools after it (a strided NCHW pool gathers
every read: 12-14x slower than NHWC), plus a transpose wherever two layouts meet (the
model's inputs and outputs and ops such as dense layers are NCHW; beside a
reshape or transpose a transpose is free: it fuses into that kernel). The layouts that cost
least are found by a local search from each conv's own best, from all NHWC and from all
NCHW. NHWC convs get HWIO weights (transposed at compile time) and TVM's ``ConvertLayout``
carries the layout through the ops between convs that know how. It sees only what this pass
understands: each conv decided here, with its layout (NCHW too: a conv without one would take
its input's), and the ops of ``CARRY`` on tensors of at most 4 dims; every other op is hidden
from it and gets its inputs in NCHW (TVM 0.27's rules fail on dropout's tuple result and on
5-d stacks), with an outcome naming it where that costs a transpose. Image stems are decided like
the others; the space-to-depth rewrite, which runs after this pass, still decides by its own
cost model whether to rewrite them.

Runs in the ``"s2d"`` pipeline after the preparation, before the rewrite; other targets and
models without NCHW convs are left as they are. ``disabled_pass=["CpuLayout"]``: the model's
own layout.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import tvm
from tvm import relax

from ...schedules.x86_tiles import vector_width
from ...targets import is_cpu, vector_lanes
from ..outcome import applied, refused
from ..relax_tools import op_name
from ..conv_layout import ConvLayouts, convert_convs

PASS_NAME = "CpuLayout"
GATHER_PENALTY = 0.5  # a width stride's gathers, on NCHW vectors
# a strided NCHW pool gathers every input it reads (3x3/2 max pools of 32 and 48 channels at 112x112:
# 12-14x slower than NHWC, which vectorizes the channels)
POOL_GATHER_PENALTY = 0.1
# NCHW depthwise convs measured 1.15-3.5x slower than NHWC ones (16-128 channels, 28-112 pixels)
DEPTHWISE_PENALTY = 0.25


def filled(n: int, lanes: int) -> float:
    """The fraction of a vector's lanes the schedule fills along an axis of ``n``: whole
    power-of-two vectors of at least 4 lanes, else one vector of any length (half as fast)."""
    width = vector_width(n, lanes)
    if width >= min(4, lanes):
        return width / lanes
    return min(n, lanes) / lanes / 2


def filled_channels(n: int, lanes: int) -> float:
    """``filled`` along an NHWC tile's channels (``schedules.x86_tiles._channel_tile``): vectors of
    the widest power of two dividing ``n``, however narrow (34 channels a group: vectors of 2
    lanes, measured 2x slower than NCHW's 4-lane vectors on ShuffleNet's 28-pixel rows), one
    vector of any length only where none does."""
    width = vector_width(n, lanes)
    return width / lanes if width > 1 else filled(n, lanes)


def fills(out_channels: int, groups: int, out_width: int, stride_w: int, lanes: int) -> dict[str, float]:
    """The lanes one conv fills in each layout, as a speed factor (1: whole vectors)."""
    per_group = out_channels if groups in (1, out_channels) else out_channels // groups
    nchw = filled(out_width, lanes) * (GATHER_PENALTY if stride_w > 1 else 1.0)
    if groups == out_channels > 1:  # depthwise: each channel's row a load of its own, and a broadcast weight
        nchw *= DEPTHWISE_PENALTY
    return {"NHWC": filled_channels(per_group, lanes), "NCHW": nchw}


def describe(fill: dict[str, float], out_channels: int, groups: int, out_width: int, stride_w: int) -> str:
    per_group = out_channels if groups in (1, out_channels) else out_channels // groups
    return f"lanes filled: NHWC {fill['NHWC']:.2f} ({per_group} channels), NCHW {fill['NCHW']:.2f} " \
           f"({out_width} pixels" + (f", stride {stride_w}" if stride_w > 1 else "") \
           + (", depthwise" if groups == out_channels > 1 else "") + ")"


# ops ConvertLayout carries a layout through, on tensors of at most 4 dims (the rest need NCHW: reshapes,
# dense layers; ConvertLayout only ever sees these and the convs decided here, see conv_layout.convert_convs)
CARRY = {"relax.add", "relax.subtract", "relax.multiply", "relax.divide", "relax.maximum", "relax.minimum",
         "relax.nn.relu", "relax.clip", "relax.sigmoid", "relax.tanh", "relax.nn.max_pool2d", "relax.nn.avg_pool2d",
         "relax.concat", "relax.mean", "relax.sum", "relax.astype", "relax.nn.batch_norm", "relax.right_shift",
         "relax.left_shift"}
# a transpose, in MAC-equivalents per byte of the tensor, by direction of the data (measured, tiled: 3.2 MB in
# 0.13-0.14 ms either way, the time of ~20M MACs of a conv that fills its vectors; untiled,
# NHWC -> NCHW was 10x slower; 6, 8 and 24 for that direction chose the same layouts for the six
# benchmark models)
TRANSPOSE_COST = {("NCHW", "NHWC"): 8.0, ("NHWC", "NCHW"): 8.0}
FIXED = "model"  # the model's inputs, outputs and the ops that need NCHW
# data-movement ops that need NCHW too, but a transpose next to them fuses into their kernel (FuseOps
# makes one injective kernel of the chain): free either way (ShuffleNet's channel shuffles)
MOVEMENT = {"relax.reshape", "relax.permute_dims", "relax.flatten", "relax.squeeze", "relax.expand_dims"}
FREE = "movement"
POOLS = {"relax.nn.max_pool2d", "relax.nn.avg_pool2d"}


@dataclass
class _Conv:
    name: str
    call: relax.Call
    macs: int
    fill: dict[str, float]  # layout -> lanes filled
    why: str
    carried: dict[str, float] = field(default_factory=lambda: {"NCHW": 0.0, "NHWC": 0.0})  # pools after it

    def cost(self, layout: str) -> float:
        own = self.macs / self.fill[layout] if self.fill[layout] else float("inf")
        return own + self.carried[layout]


@tvm.transform.module_pass(opt_level=0, name=PASS_NAME)
class CpuLayout(ConvLayouts):
    """Each conv's layout by the lanes it fills (the module doc)."""

    def applies(self, target) -> bool:
        return is_cpu(target)

    def convert(self, mod: tvm.IRModule, target: tvm.target.Target) -> tvm.IRModule:
        lanes = vector_lanes(target)
        chosen = []  # (weight, layout)
        for _, func in mod.functions_items():
            if isinstance(func, relax.Function):
                plan, others, barriers = plan_layouts(func, lanes)
                for name, reason in others:
                    refused(self.outcomes, name, reason)
                for conv, layout, why in plan:
                    chosen.append((conv.call.args[1], layout))
                    if layout == "NHWC":
                        applied(self.outcomes, conv.name, f"NCHW -> NHWC, {why}")
                    else:
                        refused(self.outcomes, conv.name, f"keeps NCHW: {why}")
                for name, reason in barriers:
                    refused(self.outcomes, name, reason)
        if not any(layout == "NHWC" for _, layout in chosen):
            return mod

        def decided(conv: relax.Call) -> str | None:  # the NCHW ones too: a conv without one takes its input's layout
            return next((layout for weight, layout in chosen if len(conv.args) > 1 and weight.same_as(conv.args[1])), None)

        return convert_convs(mod, decided, seen=_carries)


def plan_layouts(func: relax.Function, lanes: int):
    """Each NCHW conv of ``func`` with constant weights and static shapes, its layout and why
    (the layouts that cost least, see the module doc); the other convs, with why they keep
    their layout; and the ops left in NCHW that get a transpose before them from an NHWC
    conv, with why (``(name, reason)`` pairs)."""
    convs, edges, sources, others, fields, barriers = {}, [], {}, [], {}, []

    def leaves(arg) -> list:  # the tensors an argument holds: a tuple's fields
        if isinstance(arg, relax.Tuple):
            return [leaf for f in arg.fields for leaf in leaves(f)]
        if isinstance(arg, relax.Var) and arg in fields:
            return [leaf for f in fields[arg] if f is not None for leaf in leaves(f)]
        return [arg] if isinstance(arg, relax.Var) else []

    def source_of(arg) -> set:
        found = [sources.get(leaf, {FIXED}) for leaf in leaves(arg)]
        return set().union(*found) if found else {FIXED}

    def link(arg, consumer: str):
        for leaf in leaves(arg):
            for source in sources.get(leaf, {FIXED}):
                if source != consumer:
                    edges.append((source, consumer, _bytes(leaf)))

    for block in func.body.blocks:
        for binding in block.bindings:
            var, value = binding.var, binding.value
            name = op_name(value) or ""
            conv = _conv(var.name, value, lanes) if name == "relax.nn.conv2d" else None
            if isinstance(conv, str):
                others.append((var.name, conv))
                conv = None
            if conv is not None:
                convs[conv.name] = conv
                link(value.args[0], conv.name)
                sources[var] = {conv.name}
            elif isinstance(value, relax.Tuple):
                fields[var] = list(value.fields)
            elif isinstance(value, relax.TupleGetItem):
                held = fields.get(value.tuple_value)
                if held is not None and held[value.index] is not None:
                    sources[var] = source_of(held[value.index])
            elif isinstance(value, relax.Call) and _carries(value):
                data = value.args[:1] if name == "relax.nn.batch_norm" else value.args
                sources[var] = set().union(*(source_of(a) for a in data if leaves(a)))
                if name == "relax.nn.batch_norm":  # (normalized, mean, variance): the first in the data's layout
                    fields[var] = [value.args[0], None, None]
                pool = _pool_costs(value, lanes) if name in POOLS else None
                if pool is not None and len(sources[var]) == 1 and next(iter(sources[var])) in convs:
                    carried = convs[next(iter(sources[var]))].carried  # a pool runs in its producer's layout
                    for layout, cost in pool.items():
                        carried[layout] += cost
            elif isinstance(value, relax.Var):
                sources[var] = source_of(value)
            elif name in MOVEMENT:
                link(value.args[0], FREE)
                sources[var] = {FREE}
            else:
                for arg in getattr(value, "args", []):
                    link(arg, FIXED)
                    if isinstance(value, relax.Call) and name and 4 in _ndims(arg.ty):  # a transpose if NHWC
                        barriers.append((var.name, name, _why_not(value), source_of(arg)))
    if isinstance(func.body.body, relax.Var | relax.Tuple):
        link(func.body.body, FIXED)
    own = {n: min(("NCHW", "NHWC"), key=lambda L: (c.cost(L), L != "NCHW")) for n, c in convs.items()}

    def moves(layouts: dict, a: str, c: str, b: int) -> float:  # data flows from a to c
        if FREE in (a, c):
            return 0.0
        return TRANSPOSE_COST.get((layouts[a], layouts[c]), 0.0) * b

    def total(layouts: dict) -> float:
        return sum(c.cost(layouts[n]) for n, c in convs.items()) + sum(moves(layouts, *e) for e in edges)

    def search(start: dict) -> dict:
        layouts = {FIXED: "NCHW", **start}
        for _ in range(4 * len(convs)):
            changed = False
            for name, conv in convs.items():
                def cost(layout):
                    trial = {**layouts, name: layout}
                    return conv.cost(layout) + sum(moves(trial, *e) for e in edges if name in e[:2])
                best = min(("NCHW", "NHWC"), key=lambda L: (cost(L), L != layouts[name]))
                changed |= best != layouts[name]
                layouts[name] = best
            if not changed:
                break
        return layouts

    # from each conv's own best, and from all NHWC and all NCHW (a run of convs that pays only
    # when it flips together, such as a stem and the convs after it): the cheapest
    starts = [own, dict.fromkeys(convs, "NHWC"), dict.fromkeys(convs, "NCHW")]
    layouts = min((search(start) for start in starts), key=total)
    result = []
    for name, conv in convs.items():
        why = conv.why
        if layouts[name] != own[name]:
            why += f"; {own[name]} would cost more in transposes to the convs around it"
        result.append((conv, layouts[name], why))
    seen, stops = set(), []
    for var, op, why, froms in barriers:
        if var not in seen and any(layouts.get(f) == "NHWC" for f in froms):
            seen.add(var)
            stops.append((var, f"{op} keeps NCHW (a transpose before it): {why}"))
    return result, others, stops


def _conv(name: str, call: relax.Call, lanes: int) -> _Conv | str:
    """The conv as the search sees it, or why it keeps its layout."""
    attrs = call.attrs
    if str(attrs.data_layout) != "NCHW" or str(attrs.kernel_layout) != "OIHW" or str(attrs.out_layout) != "NCHW":
        return f"keeps {attrs.data_layout}: only NCHW convs (OIHW weights) are converted"
    data, weight, out = call.args[0].ty.shape, call.args[1].ty.shape, call.ty.shape
    if not all(isinstance(d, tvm.tirx.IntImm) for d in (*data, *weight, *out)):
        return "keeps NCHW: dynamic shape"
    if not isinstance(call.args[1], tvm.ir.GenericConst):
        return "keeps NCHW: weight is not a compile-time constant (its transpose would run every call)"
    out_channels, groups = int(out[1]), int(attrs.groups)
    fill = fills(out_channels, groups, int(out[3]), int(attrs.strides[1]), lanes)
    macs = int(np.prod([int(d) for d in out])) * int(np.prod([int(d) for d in list(weight)[1:]]))
    return _Conv(name, call, macs, fill, describe(fill, out_channels, groups, int(out[3]), int(attrs.strides[1])))


def _pool_costs(call: relax.Call, lanes: int) -> dict[str, float] | None:
    """A pool's window reads over the lanes it fills in each layout (its schedule vectorizes the
    width in NCHW, with gathers when strided, and the channels in NHWC); None if not NCHW."""
    attrs, out = call.attrs, call.ty.shape
    if str(attrs.layout) != "NCHW" or not all(isinstance(d, tvm.tirx.IntImm) for d in out):
        return None
    reads = int(np.prod([int(d) for d in out])) * int(np.prod([int(k) for k in attrs.pool_size]))
    nchw = filled(int(out[3]), lanes) * (POOL_GATHER_PENALTY if int(attrs.strides[1]) > 1 else 1.0)
    return {"NCHW": reads / nchw, "NHWC": reads / filled(int(out[1]), lanes)}


def _bytes(var: relax.Var) -> int:
    ty = var.ty
    if not isinstance(ty, relax.TensorType) or ty.shape is None:
        return 0
    dims = ty.shape.values if hasattr(ty.shape, "values") else ty.shape
    if not all(isinstance(d, tvm.tirx.IntImm) for d in dims):
        return 0
    return int(np.prod([int(d) for d in dims])) * tvm.DataType(ty.dtype).bits // 8


def _ndims(ty) -> list[int]:
    """The ranks of the tensors a type holds (-1: unknown; a tuple's fields)."""
    if isinstance(ty, relax.TupleType):
        return [n for f in ty.fields for n in _ndims(f)]
    return [int(ty.ndim)] if isinstance(ty, relax.TensorType) else []


def _carries(call: relax.Call) -> bool:
    """Whether ConvertLayout may carry a layout through ``call``: an op of ``CARRY`` whose
    tensors (arguments, tuples' fields, result) have known ranks of at most 4, and whose result
    is a tensor, or batch_norm's tuple (ConvertLayout gives that one its nested layout)."""
    name = op_name(call)
    if name not in CARRY or (isinstance(call.ty, relax.TupleType) and name != "relax.nn.batch_norm"):
        return False
    ranks = [n for a in call.args for n in _ndims(a.ty)] + _ndims(call.ty)
    return all(0 <= n <= 4 for n in ranks)


def _why_not(call: relax.Call) -> str:
    """Why an op runs in the model's layout."""
    ranks = [n for a in call.args for n in _ndims(a.ty)] + _ndims(call.ty)
    if isinstance(call.ty, relax.TupleType):
        return "its result is a tuple, which CpuLayout carries no layout through"
    if any(n > 4 or n < 0 for n in ranks):
        return f"it has {'a tensor of unknown rank' if min(ranks) < 0 else f'a {max(ranks)}-d tensor'}"
    return "not an op CpuLayout carries a layout through"
