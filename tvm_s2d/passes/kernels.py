"""Hand-scheduled TIR kernels added to a Relax module by the Hexagon passes."""

from __future__ import annotations

import tvm
from tvm import relax

OPAQUE = 8  # relax OpPatternKind kOpaque: FuseOps leaves the kernel alone, so its schedule stays


def add_kernel(bb: relax.BlockBuilder, func: tvm.tirx.PrimFunc, name: str) -> tvm.ir.GlobalVar:
    """``func`` added as ``name``, marked scheduled and opaque to fusion."""
    func = func.with_attr("global_symbol", name).with_attr("op_pattern", OPAQUE).with_attr("tirx.is_scheduled", True)
    return bb.add_func(func, name)
