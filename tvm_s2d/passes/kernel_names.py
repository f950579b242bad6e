"""``RecordFusedNames``: between ``FuseOps`` and ``FuseTIR``, the names of the bindings each
fused function computes, kept on the module (attribute ``KERNEL_BINDINGS``: kernel name ->
binding names), for the tables that name a kernel by the ONNX nodes it computes
(``onnx_names``): ``FuseTIR`` keeps the kernel's name but not its bindings'."""

from __future__ import annotations

import tvm
from tvm import relax

#: The module attribute: fused kernel name -> the names of the bindings fused into it.
KERNEL_BINDINGS = "tvm_s2d.kernel_bindings"


@tvm.transform.module_pass(opt_level=0, name="RecordFusedNames")
def RecordFusedNames(mod: tvm.IRModule, _ctx) -> tvm.IRModule:  # noqa: N802 - a pass, named as TVM's are
    found = dict(mod.attrs[KERNEL_BINDINGS]) if mod.attrs is not None and KERNEL_BINDINGS in mod.attrs else {}
    for gv, func in mod.functions.items():
        if isinstance(func, relax.Function) and func.attrs is not None and "Primitive" in func.attrs:
            found[gv.name_hint] = [b.var.name for block in func.body.blocks for b in block.bindings]
    return mod.with_attr(KERNEL_BINDINGS, found) if found else mod


def kernel_bindings(mod: tvm.IRModule) -> dict[str, list[str]]:
    """What ``RecordFusedNames`` kept on ``mod`` (empty when it did not run)."""
    found = mod.attrs.get(KERNEL_BINDINGS) if mod.attrs is not None else None
    return {str(k): [str(v) for v in vs] for k, vs in found.items()} if found is not None else {}
