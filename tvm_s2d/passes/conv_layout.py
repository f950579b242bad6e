"""Conv layouts: one concept, a policy per target. ``HexagonLayout`` puts every conv in NHWC
(the HVX kernels' layout), ``CpuLayout`` each conv in the layout whose vectors it fills; both
run after the preparation and before the rewrite, record an outcome per conv, and apply their
decisions one way (``convert_convs``): TVM's ``ConvertLayout`` with each decided conv in its
layout (NHWC convs on HWIO weights) carrying the layout through the ops between convs, then
the weights' transposes folded with numpy (``FoldConstantOps``)."""

from __future__ import annotations

import tvm
from tvm import relax
from tvm.relax.dpl import is_op, rewrite_call, wildcard
from tvm.relax.expr_functor import PyExprMutator, mutator

from ..targets import pass_target
from .outcome import Outcome
from .fold_constants import FoldConstantOps
from .relax_tools import is_call, map_relax_functions, rewrite_functions, static_shape
from .channel_shuffle import Shuffle, emit_channel_shuffle, match_channel_shuffle

#: The weight layout of a conv in each data layout.
KERNEL_LAYOUTS = {"NHWC": "HWIO", "NCHW": "OIHW"}


class ConvLayouts:
    """The shell of a conv layout pass (the policy registers it with ``module_pass``): on the
    targets its policy ``applies`` to, ``convert`` the module; elsewhere the module as it is.
    ``outcomes``: one per conv (and per op the policy names)."""

    def __init__(self, target: tvm.target.Target | None = None):
        self.target = target
        self.outcomes: list[Outcome] = []

    def transform_module(self, mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        self.outcomes = []
        target = pass_target(self.target)
        return self.convert(mod, target) if self.applies(target) else mod

    def applies(self, target) -> bool:
        raise NotImplementedError

    def convert(self, mod: tvm.IRModule, target: tvm.target.Target) -> tvm.IRModule:
        raise NotImplementedError


def convert_convs(mod: tvm.IRModule, layout_of, seen=None) -> tvm.IRModule:
    """``mod`` with each conv2d call for which ``layout_of(call)`` names a layout (``"NHWC"``,
    ``"NCHW"``) in that layout, ``ConvertLayout`` carrying it through the ops between, and the
    weights' transposes folded. ``seen``: None, ConvertLayout sees every op; else the calls
    besides the decided convs it may carry a layout through, every other op with a layout rule
    hidden from it (``_Hide``: it gets its inputs in the model's layout)."""
    def desired(call: relax.Call) -> dict:
        layout = layout_of(call) if is_call(call, "relax.nn.conv2d") else None
        return {"relax.nn.conv2d": [layout, KERNEL_LAYOUTS[layout]]} if layout else {}

    lookups, shuffles = _Lookups(mod), _Shuffles(mod)
    mod = rewrite_functions(rewrite_functions(map_relax_functions(mod, _float_clips_as_bounds), lookups), shuffles)
    if seen is None:
        converted = relax.transform.ConvertLayout({}, desired)(mod)
    else:
        hide = _Hide(mod, lambda call: bool(desired(call)) or seen(call) or lookups.marks(call) or shuffles.marks(call))
        converted = relax.transform.ConvertLayout({}, desired)(rewrite_functions(mod, hide))
        converted = rewrite_functions(converted, _Unhide(converted, hide.calls))
    converted = rewrite_functions(converted, _Shuffles(converted, shuffles.groups))
    return FoldConstantOps()(rewrite_functions(converted, _Lookups(converted, lookups.tables)))


_CLIP = is_op("relax.clip")(wildcard(), wildcard(), wildcard())


def _float_clips_as_bounds(func: relax.Function) -> relax.Function:
    """Float ``clip`` (ReLU6, HardSwish's and HardSigmoid's) as ``maximum`` then ``minimum``
    with scalar constants: TVM 0.27's ConvertLayout has no rule for ``clip`` and gave each one
    the model's layout between two transposes (MobileNetV3-Large: 18 transpose pairs, 15% of
    its time at 224); the two ops have rules and fold into a conv's write-back the same way.
    Integer clips (the quantized passes' own) are left as they are."""
    def rewrite(call: relax.Call, _matches) -> relax.Expr:
        dtype = str(call.args[0].ty.dtype)
        if not dtype.startswith(("float", "bfloat")):
            return call
        lo, hi = (relax.const(float(getattr(a.value, "value", a.value)), dtype) for a in call.args[1:3])
        return relax.op.minimum(relax.op.maximum(call.args[0], lo), hi)

    return rewrite_call(_CLIP, rewrite, func)


@mutator
class _Lookups(PyExprMutator):
    """Table lookups (``take(T, q)``, ``T`` a 1-d constant: ``IntegerTables``) are elementwise,
    but ConvertLayout has no rule for ``take`` and would turn ``q`` back to the model's layout
    and the result forth (two transposes a table on Hexagon's NHWC). Hidden as ``q ^ marker``
    (a binary op with a scalar, whose layout is its input's), one marker object a table; given
    ``tables`` (``marker -> lookup``), the lookups put back on the arguments ConvertLayout gave.
    Only tables of the index's type (8-bit to 8-bit): the stand-in must type as the lookup."""

    def __init__(self, mod, tables: list | None = None):
        super().__init__(mod)
        self.restore, self.tables = tables is not None, tables if tables is not None else []

    def marks(self, call: relax.Call) -> bool:
        """Whether ``call`` is a lookup's stand-in."""
        return is_call(call, "relax.bitwise_xor") and any(call.args[1].same_as(m) for m, _ in self.tables)

    def visit_call_(self, call: relax.Call) -> relax.Expr:
        new = super().visit_call_(call)
        if self.restore:
            if is_call(new, "relax.bitwise_xor"):
                for marker, lookup in self.tables:
                    if new.args[1].same_as(marker):
                        return relax.Call(lookup.op, [lookup.args[0], new.args[0]], lookup.attrs)
            return new
        if is_call(new, "relax.take") and isinstance(new.args[0], tvm.ir.GenericConst) and \
                len(new.args[0].ty.shape) == 1 and str(new.args[1].ty.dtype) == str(new.ty.dtype):  # the stand-in's type
            marker = relax.const(0, str(new.ty.dtype))
            self.tables.append((marker, new))
            return relax.op.bitwise_xor(new.args[1], marker)
        return new


@mutator
class _Shuffles(PyExprMutator):
    """Channel shuffles (ShuffleNet's ``reshape -> permute_dims -> reshape`` through
    ``[N, g, C/g, H, W]``: ``emit.match_channel_shuffle``) have no layout rule ConvertLayout
    takes (a 5-d transpose: it turns the tensor back to the model's layout and the result
    forth, two transposes a shuffle, the ops around them left in the model's layout). Hidden as
    ``flip(x + marker, axis=1)`` (both carried through any layout, the flip's axis following
    the channels), one marker object a shuffle; given ``groups`` (``marker -> groups``), put
    back as the shuffle of the axis the flip has then (``emit.emit_channel_shuffle``)."""

    def __init__(self, mod, groups: list | None = None):
        super().__init__(mod)
        self.restore, self.groups, self.var2val = groups is not None, groups if groups is not None else [], {}
        self.marked: list[relax.Var] = []  # the stand-ins' ``x + marker`` variables

    def marks(self, call: relax.Call) -> bool:
        """Whether ``call`` is part of a shuffle's stand-in."""
        if is_call(call, "relax.flip"):
            return any(call.args[0].same_as(v) for v in self.marked)
        return is_call(call, "relax.add") and any(call.args[1].same_as(m) for m, _ in self.groups)

    def visit_call_(self, call: relax.Call) -> relax.Expr:
        if self.restore:
            new = super().visit_call_(call)
            marked = self.lookup_binding(new.args[0]) if is_call(new, "relax.flip") and \
                isinstance(new.args[0], relax.Var) else None
            for marker, groups in self.groups if is_call(marked, "relax.add") else ():
                if marked.args[1].same_as(marker):
                    return emit_channel_shuffle(self.builder_, marked.args[0], int(new.attrs.axis), groups, "shuffle")
            return new
        found = match_channel_shuffle(call, self.var2val) if is_call(call, "relax.reshape") else None
        if not isinstance(found, Shuffle) or found.axis != 1 or len(static_shape(found.x)) != 4:
            return super().visit_call_(call)
        marker = relax.const(0, str(found.x.ty.dtype))
        self.groups.append((marker, found.groups))
        marked = self.builder_.emit(relax.op.add(self.visit_expr(found.x), marker))
        self.marked.append(marked)
        return relax.op.flip(marked, axis=1)


HIDDEN = "tvm_s2d.cpu_layout.opaque."  # the stand-in's name, then its index


@mutator
class _Hide(PyExprMutator):
    """Every call with a layout rule of its own (``FRelaxInferLayout``) that is not ``keep``,
    hidden from ConvertLayout as a pure packed call it has no rule for: it gets its arguments
    in the model's layout. TVM 0.27's rules fail on some (dropout's tuple result: ``Expected
    nested to match tuple``; a stack or transpose of 5-d tensors: ``Invalid SLayout``);
    ``_Unhide`` puts them back."""

    def __init__(self, mod, keep):
        super().__init__(mod)
        self.keep, self.calls = keep, []

    def visit_call_(self, call: relax.Call) -> relax.Expr:
        new = super().visit_call_(call)
        if not isinstance(call.op, tvm.ir.Op) or self.keep(call) or call.op.get_attr("FRelaxInferLayout") is None:
            return new
        self.calls.append(new)
        return relax.op.call_pure_packed(f"{HIDDEN}{len(self.calls) - 1}", *new.args, ty_args=call.ty)


@mutator
class _Unhide(PyExprMutator):
    """The calls ``_Hide`` hid, back, on the arguments ConvertLayout gave their stand-ins."""

    def __init__(self, mod, calls):
        super().__init__(mod)
        self.calls = calls

    def visit_call_(self, call: relax.Call) -> relax.Expr:
        new = super().visit_call_(call)
        callee = new.args[0] if is_call(new, "relax.call_pure_packed") else None
        if isinstance(callee, relax.ExternFunc) and str(callee.global_symbol).startswith(HIDDEN):
            hidden = self.calls[int(str(callee.global_symbol)[len(HIDDEN):])]
            return relax.Call(hidden.op, list(new.args[1:]), hidden.attrs, list(hidden.ty_args))
        return new
