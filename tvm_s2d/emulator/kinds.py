"""What each kernel of a model lowered for Hexagon is (``kernel_kind``: conv, requantize,
elementwise, movement, boundary, other), from its name and dtypes, and what is left to TVM's
scalar lowering (``scalar_lines``); the whole-model runner (``model.py``) and the compile
report (``report.py``) name kernels by it."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import tvm
from tvm import relax

from ..passes.relax_tools import static_shape

KINDS = ("conv", "requantize", "elementwise", "movement", "boundary", "other")
MOVEMENT_OPS = {"transpose", "reshape", "pad", "strided", "slice", "layout", "transform", "concatenate", "split",
                "squeeze", "expand", "dims", "permute", "depth", "space", "to"}
ELEMENTWISE_OPS = {"add", "subtract", "multiply", "divide", "relu", "clip", "maximum", "minimum", "where", "astype",
                   "cast", "round", "floor", "sigmoid", "tanh", "exp", "negative", "right", "left", "shift"}


@dataclass
class KernelRun:
    name: str
    kind: str
    hvx: bool
    packets: int
    nodes: list[str] = field(default_factory=list)  # the ONNX nodes it computes (``onnx_names.kernel_nodes``)

    @property
    def onnx(self) -> str:
        """``nodes`` for a table: the first two, and how many more."""
        shown = ", ".join(self.nodes[:2]) + (f" +{len(self.nodes) - 2}" if len(self.nodes) > 2 else "")
        return shown or "-"


def scalar_kernels(kernels) -> dict[str, list[str]]:
    """Kind -> the kernels of that kind left to TVM's default (scalar) lowering, boundary excluded."""
    found: dict[str, list[str]] = {}
    for k in kernels:
        if not k.hvx and k.kind != "boundary":
            found.setdefault(k.kind, []).append(k.name)
    return found


def scalar_lines(kernels) -> list[str]:
    """One line per kind of kernel left to TVM's scalar lowering, with a count."""
    lines = []
    for kind, names in scalar_kernels(kernels).items():
        lines.append(f"left to TVM's scalar lowering: {len(names)} {kind} kernel{'s' if len(names) > 1 else ''}"
                     f" ({', '.join(sorted(set(names))[:4])}{', ...' if len(set(names)) > 4 else ''})")
    return lines


def is_view(func, operands, specs) -> bool:
    """A pure reshape of one tensor (same elements, same order): TVM's build turns its call into
    a view of the input (``relax.transform.RewriteDataflowReshape``)."""
    if not (isinstance(func, tvm.tirx.PrimFunc) and len(operands) == 1 and len(specs) == 1):
        return False
    shape = static_shape(operands[0])
    return (shape is not None and str(operands[0].ty.dtype) == specs[0][1] and int(np.prod(shape)) == int(np.prod(specs[0][0]))
            and bool(relax.analysis.has_reshape_pattern(func)))


def output_specs(ty) -> list[tuple[tuple[int, ...], str]]:
    types = list(ty.fields) if isinstance(ty, relax.TupleType) else [ty]
    return [(tuple(int(d) for d in t.shape.values), str(t.dtype)) for t in types]


def is_movement(name: str) -> bool:
    """A kernel that only moves data, by its name (``kernel_kind``'s rule without the dtypes)."""
    if name.startswith("hvx_"):
        return name.startswith(("hvx_s2d_", "hvx_d2s_", "hvx_pad_", "hvx_concat_")) or name.endswith("_layout")
    tokens = {t.rstrip("0123456789") for t in name.replace("fused_", "").split("_")} - {""}
    return bool(tokens) and tokens <= MOVEMENT_OPS


def kernel_kind(name: str, operands, outputs, float_inputs, returns_output: bool) -> str:
    """What a kernel does, from its name (fused op names, ``hvx_`` kernels) and dtypes."""
    if name.startswith(("hvx_s2d_", "hvx_d2s_", "hvx_pad_", "hvx_concat_")) or (name.startswith("hvx_")
                                                                                and name.endswith("_layout")):
        return "movement"
    if name.startswith(("hvx_lookup_", "hvx_product_")):
        return "elementwise"  # a table lookup (an activation), a gate's product
    if name.startswith("hvx_sums_"):
        return "other"  # a global pool's sums
    if name.startswith("hvx_pool_"):
        return "other"  # a max pool: neither a conv nor data movement
    if name.startswith("hvx_requantize_"):
        return "requantize"
    if name.startswith("hvx_"):
        return "conv"
    in_dtypes = {str(a.ty.dtype) for a in operands if isinstance(a.ty, relax.TensorType)}
    out_dtypes = {dtype for _, dtype in outputs}
    if any(a in float_inputs for a in operands if isinstance(a, relax.Var)) and out_dtypes <= {"int8", "uint8"}:
        return "boundary"  # the float input's quantize
    if returns_output and out_dtypes <= {"float32"} and in_dtypes <= {"int8", "uint8"}:
        return "boundary"  # the float output's dequantize
    tokens = set(name.replace("fused_", "").split("_")) - {""}
    tokens = {t.rstrip("0123456789") for t in tokens} - {""}
    if "conv2d" in tokens:
        return "conv"
    if ("int32" in in_dtypes and out_dtypes & {"int8", "uint8"}) or "quantize" in tokens:
        return "requantize"
    if tokens <= MOVEMENT_OPS:
        return "movement"
    if tokens & ELEMENTWISE_OPS and not tokens - ELEMENTWISE_OPS - MOVEMENT_OPS - {"dequantize"}:
        return "elementwise"
    return "other"
