"""The passes' Relax toolkit: matching calls (by op name, through the bindings of a function:
``is_call``, ``call_of``, ``const_of``; the conv patterns and what a conv call computes,
``conv_spec``), shapes, and traversal (rewriting each Relax function of a module, adding
hand-scheduled TIR kernels to it, replacing some of its functions; the constant arguments of
kernel calls). Rewrite rules and their passes: ``rules.py``; constants folded: ``fold_constants.py``."""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax
from tvm.ir.prim.expr import IntImm
from tvm.relax.dpl import is_op, wildcard

from ..geometry import LAYOUTS, Conv2dSpec, TransposedConv2dSpec, Unsupported, is_pure_reshape, kernel_to_oihw, spatial_axes

OPAQUE = 8  # relax OpPatternKind kOpaque: FuseOps leaves the kernel alone, so its schedule stays
#: The conv patterns (the weight's constness is checked by whoever needs it, with a reason).
CONV2D = is_op("relax.nn.conv2d")(wildcard(), wildcard())
CONV2D_TRANSPOSE = is_op("relax.nn.conv2d_transpose")(wildcard(), wildcard())
#: The refusal of a conv whose shapes are not all known numbers.
DYNAMIC = "dynamic or unknown shape (give the model's inputs static shapes: --shape NAME=D,D,... or shape_dict)"


def op_name(expr: relax.Expr) -> str | None:
    """The name of the op ``expr`` calls (``"relax.add"``), None when it is not an op call."""
    if isinstance(expr, relax.Call) and isinstance(expr.op, tvm.ir.Op):
        return expr.op.name
    return None


def is_call(expr: relax.Expr, *names: str) -> bool:
    """Whether ``expr`` is a call of one of the ops ``names``."""
    return op_name(expr) in names


def bound(expr: relax.Expr, var2val: dict) -> relax.Expr:
    """The value a variable is bound to in ``var2val`` (``relax.analysis.get_var2val``), or
    ``expr`` itself."""
    return var2val.get(expr, expr) if isinstance(expr, relax.Var) else expr


def call_of(expr: relax.Expr, var2val: dict, *names: str) -> relax.Call | None:
    """The call of one of the ops ``names`` that ``expr`` is or is bound to, else None."""
    expr = bound(expr, var2val)
    return expr if is_call(expr, *names) else None


def const_of(expr: relax.Expr, var2val: dict) -> np.ndarray | None:
    """The value of the constant ``expr`` is or is bound to, else None."""
    expr = bound(expr, var2val)
    return expr.value.numpy() if isinstance(expr, tvm.ir.GenericConst) else None


def static_shape(expr: relax.Expr) -> tuple[int, ...] | None:
    """The shape of a tensor expression when every dimension is a known integer."""
    ty = expr.ty
    if not isinstance(ty, relax.TensorType) or ty.shape is None:
        return None
    dims = getattr(ty.shape, "values", None)
    if dims is None or not all(isinstance(d, IntImm) for d in dims):
        return None
    return tuple(int(d) for d in dims)


def conv_spec(call: relax.Call) -> Conv2dSpec | TransposedConv2dSpec:
    """The conv a ``conv2d`` / ``conv2d_transpose`` call computes, in canonical NCHW terms: "a
    conv we understand". Raises ``Unsupported`` with the reason (dynamic shapes, layouts)."""
    shapes = tuple(static_shape(e) for e in (call.args[0], call.args[1], call))
    if shapes[0] is None or shapes[1] is None:
        raise Unsupported(DYNAMIC)
    check_layouts(call)
    return _spec(call, "conv2d" if CONV2D.match(call) else "conv2d_transpose", shapes)


def check_layouts(call: relax.Call) -> None:
    """The layout part of ``conv_spec`` (needs no shapes): NCHW or NHWC data, the output in
    the data's layout, a kernel layout that is a permutation of OIHW."""
    attrs = call.attrs
    layout = str(attrs.data_layout)
    if layout not in LAYOUTS:
        raise Unsupported(f"data layout {layout} is not NCHW or NHWC")
    if str(attrs.out_layout) != layout:
        raise Unsupported(f"output layout {attrs.out_layout} differs from data layout {layout}")
    try:
        kernel_to_oihw(str(attrs.kernel_layout))  # IOHW too is a permutation of these letters
    except ValueError as exc:
        raise Unsupported(str(exc)) from None


def _spec(call, kind, shapes):
    data_shape, weight_shape, _ = shapes
    attrs = call.attrs
    hax, wax, cax = spatial_axes(str(attrs.data_layout))
    itemsize = np.dtype(str(call.args[0].ty.dtype)).itemsize
    common = dict(
        batch=data_shape[0],
        in_channels=data_shape[cax],
        in_hw=(data_shape[hax], data_shape[wax]),
        strides=tuple(int(v) for v in attrs.strides),
        dilation=tuple(int(v) for v in attrs.dilation),
        padding=tuple(int(v) for v in attrs.padding),
        groups=int(attrs.groups),
        itemsize=itemsize,
    )
    if kind == "conv2d":
        o, _, kh, kw = (weight_shape[axis] for axis in kernel_to_oihw(str(attrs.kernel_layout)))
        return Conv2dSpec(out_channels=o, kernel_hw=(kh, kw), **common)
    _, o, kh, kw = (weight_shape[str(attrs.kernel_layout).index(axis)] for axis in "IOHW")
    return TransposedConv2dSpec(
        out_channels=o * common["groups"], kernel_hw=(kh, kw),
        output_padding=tuple(int(v) for v in attrs.output_padding), **common,
    )


def add_kernel(bb: relax.BlockBuilder, func: tvm.tirx.PrimFunc, name: str) -> tvm.ir.GlobalVar:
    """``func`` added as ``name``, marked scheduled and opaque to fusion. ``name`` is a hint: the
    builder makes it unique (``name1``, ...) when another kernel has it (the binding names it
    is made of repeat), and the kernel's symbol follows (two of one symbol fail the build)."""
    func = func.with_attr("op_pattern", OPAQUE).with_attr("tirx.is_scheduled", True)
    gv = bb.add_func(func.with_attr("global_symbol", name), name)
    if gv.name_hint != name:
        bb.update_func(gv, func.with_attr("global_symbol", gv.name_hint))
    return gv


def rewrite_functions(mod: tvm.IRModule, rewriter) -> tvm.IRModule:
    """Each Relax function of ``mod`` through ``rewriter`` (a ``PyExprMutator`` on ``mod`` with
    a ``var2val`` attribute it reads), unused bindings removed; the module with the kernels
    the rewriter added."""
    for gv, func in mod.functions.items():
        if isinstance(func, relax.Function):
            rewriter.var2val = relax.analysis.get_var2val(func)
            rewriter.builder_.update_func(gv, relax.analysis.remove_all_unused(rewriter.visit_expr(func)))
    return rewriter.builder_.get()


def with_functions(mod: tvm.IRModule, updates: dict) -> tvm.IRModule:
    """``mod`` with the functions in ``updates`` (global var -> function) replaced, as a new
    module (``mod[gv] = ...`` would change the caller's module in place); ``mod`` itself when
    there is nothing to replace."""
    if not updates:
        return mod
    mod = mod.clone()
    for gv, func in updates.items():
        mod[gv] = func
    return mod


def map_relax_functions(mod: tvm.IRModule, rewrite) -> tvm.IRModule:
    """``rewrite(func)`` (a new function, or None to keep it) on each Relax function of ``mod``
    that is not a primitive one; the module with the new functions."""
    updates = {}
    for gv, func in mod.functions.items():
        if isinstance(func, relax.Function) and not (func.attrs is not None and func.attrs.get("Primitive", False)):
            new = rewrite(func)
            if new is not None:
                updates[gv] = new
    return with_functions(mod, updates)


def call_tir_arguments(func: relax.Function):
    """``(kernel GlobalVar, argument list, var2val)`` of each ``call_tir`` in ``func``."""
    var2val, calls = relax.analysis.get_var2val(func), []

    def visit(expr):
        if is_call(expr, "relax.call_tir") and isinstance(expr.args[1], relax.Tuple):
            calls.append((expr.args[0], list(expr.args[1].fields), var2val))

    relax.analysis.post_order_visit(func, visit)
    return calls


def constant_arguments(mod: tvm.IRModule, keep=None) -> dict:
    """For each kernel, the indices of the arguments every one of its calls passes a constant
    (``keep``: and whose value, a numpy array, it accepts)."""
    found = {}
    for func in mod.functions.values():
        if isinstance(func, relax.Function):
            for gv, args, var2val in call_tir_arguments(func):
                values = {i: bound(a, var2val) for i, a in enumerate(args)}
                constant = {i for i, v in values.items() if isinstance(v, tvm.ir.GenericConst)
                            and (keep is None or keep(v.value.numpy()))}
                found[gv] = found.get(gv, constant) & constant
    return found


def emit_steps(bb: relax.BlockBuilder, x: relax.Expr, steps, name: str) -> relax.Expr:
    """A reshape -> permute_dims -> reshape (``steps``: ``(split_shape, perm, out_shape)``, as
    ``geometry``'s ``s2d_steps`` give them) of ``x``: the first two emitted, the last returned
    un-emitted (one reshape where the permutation moves nothing)."""
    split, perm, out = steps
    if not is_pure_reshape(split, perm):
        x = bb.emit(relax.op.reshape(x, split), name + "_split")
        x = bb.emit(relax.op.permute_dims(x, list(perm)), name + "_perm")
    return relax.op.reshape(x, out)


def match_triple(call: relax.Expr, var2val: dict):
    """``(x, shapes, steps)`` of a reshape -> permute_dims -> reshape ending in ``call``: its
    input, the static shapes of the input, the split and the result, and the steps as
    ``(split_shape, perm, out_shape)``; else why not."""
    perm, split, call = None, None, bound(call, var2val)
    if is_call(call, "relax.reshape"):
        perm = bound(call.args[0], var2val)
    if is_call(perm, "relax.permute_dims"):
        split = bound(perm.args[0], var2val)
    if not is_call(split, "relax.reshape"):
        return "not a reshape -> permute_dims -> reshape"
    x = split.args[0]
    shapes = static_shape(x), static_shape(split), static_shape(call)
    if None in shapes:
        return "dynamic shape: the movement kernels take static shapes"
    return x, shapes, (shapes[1], tuple(int(a) for a in perm.attrs.axes), shapes[2])
