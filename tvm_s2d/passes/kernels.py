"""What the passes share: rewriting each Relax function of a module, adding hand-scheduled
TIR kernels to it, replacing some of its functions."""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax
from tvm.relax.expr_functor import PyExprMutator, mutator

OPAQUE = 8  # relax OpPatternKind kOpaque: FuseOps leaves the kernel alone, so its schedule stays


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


@mutator
class _FoldTransposes(PyExprMutator):
    """``permute_dims`` of constants made constants, and their uses the constants themselves."""

    def __init__(self, mod):
        super().__init__(mod)
        self.folded = {}

    def visit_var_binding_(self, binding: relax.VarBinding) -> None:
        value = binding.value
        if (isinstance(value, relax.Call) and getattr(value.op, "name", "") == "relax.permute_dims"
                and isinstance(value.args[0], tvm.ir.GenericConst)):
            array = value.args[0].value.numpy()
            axes = value.attrs.axes
            array = array.transpose([int(a) for a in axes]) if axes is not None else array.T
            self.folded[binding.var] = relax.const(np.ascontiguousarray(array), str(array.dtype))
            return
        super().visit_var_binding_(binding)

    def visit_var_(self, var: relax.Var) -> relax.Expr:
        return self.folded.get(var, var)

    def visit_dataflow_var_(self, var: relax.DataflowVar) -> relax.Expr:
        return self.folded.get(var, var)


def fold_constant_transposes(mod: tvm.IRModule) -> tvm.IRModule:
    """``permute_dims`` of constants (the weights a layout change transposes) folded with numpy
    into their uses: what ``FoldConstant`` does for them, without compiling and running a
    kernel for each."""
    return rewrite_functions(mod, _FoldTransposes(mod))
