"""Ops that run unchanged in the S2D domain, as a table, and how their constants adapt.

An elementwise op commutes with S2D when every tensor operand carries the same S2D: the op
sees the same values, only in other places. Constant operands must follow: a scalar stays,
a per-channel constant is tiled ``bh * bw`` times along the channel axis (S2D channel
``(dy * bw + dx) * C + c`` holds channel ``c``). Any other operand sends the op back to plain
layout, and the report names the op.
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax

from ...geometry import spatial_axes
from ..relax_tools import op_name

#: Unary ops (one tensor operand, maybe constant parameters): whether ``f(0) == 0``, which
#: keeps zeros outside the image (a "clean" domain tensor) clean.
UNARY = {
    "relax.nn.relu": True,
    "relax.nn.leakyrelu": True,
    "relax.nn.silu": True,
    "relax.nn.gelu": True,
    "relax.tanh": True,
    "relax.negative": True,
    "relax.abs": True,
    "relax.astype": True,
    "relax.clip": None,  # when min <= 0 <= max
    "relax.sigmoid": False,
    "relax.exp": False,
    "relax.quantize": False,
    "relax.dequantize": False,
}
#: Binary ops: whether one clean operand keeps the result clean (else both must be).
BINARY = {
    "relax.add": False,
    "relax.subtract": False,
    "relax.multiply": True,
    "relax.divide": False,
    "relax.maximum": False,
    "relax.minimum": False,
    "relax.right_shift": False,
    "relax.left_shift": False,
}


def propagates(call: relax.Expr) -> bool:
    return op_name(call) in UNARY or op_name(call) in BINARY


def adapt_constant(const: relax.Expr, block, layout: str, channel_axis_attr: int | None = None):
    """The constant operand for the S2D domain, or None when it cannot follow.

    ``channel_axis_attr``: for quantize/dequantize, the op's ``axis`` (their parameters are
    1-d per-channel vectors along it).
    """
    if not isinstance(const, tvm.ir.GenericConst):
        return None
    value = const.value.numpy()
    repeats = block[0] * block[1]
    if value.size == 1:
        return const
    _, _, cax = spatial_axes(layout)
    if channel_axis_attr is not None:
        if value.ndim == 1 and channel_axis_attr % 4 == cax:
            return relax.const(np.tile(value, repeats), str(value.dtype))
        return None
    if value.ndim > 4:
        return None
    full = value.reshape((1,) * (4 - value.ndim) + value.shape)
    if [d for axis, d in enumerate(full.shape) if axis != cax and d != 1]:
        return None
    tiled = np.tile(full, [repeats if axis == cax else 1 for axis in range(4)])
    return relax.const(tiled.reshape(tiled.shape[4 - value.ndim :]), str(value.dtype))


def keeps_clean(call: relax.Call, clean: list[bool]) -> bool:
    """Whether the op's result is zero outside the image, given which operands are."""
    name = op_name(call)
    if name in UNARY:
        zero_preserving = UNARY[name]
        if zero_preserving is None:  # clip
            lo, hi = (_scalar(arg) for arg in call.args[1:3])
            zero_preserving = lo <= 0 <= hi
        return zero_preserving and clean[0]
    if BINARY[name]:
        return any(clean)
    return len(clean) == 2 and all(clean)


def _scalar(arg) -> float:
    value = arg.value  # IntImm / FloatImm, or a PrimValue around one
    return float(value.value if hasattr(value, "value") else value)
