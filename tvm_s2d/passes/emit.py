"""Relax data-movement building blocks of the rewrite: align, S2D, D2S, crop.

Each takes a ``BlockBuilder`` and an expression, emits its intermediate steps and returns
its last step *un-emitted*, so the caller decides whether it becomes a new binding or the
value of an existing one.
The reshape/transpose steps come from ``geometry.s2d_steps`` / ``d2s_steps``, the same
tables the numpy reference uses.
"""

from __future__ import annotations

from tvm import relax

import numpy as np

from ..geometry import Domain, d2s_steps, is_pure_reshape, s2d_steps, spatial_axes
from .conv2d import static_shape


def _emit_steps(bb: relax.BlockBuilder, x: relax.Expr, steps, name: str) -> relax.Expr:
    split, perm, out = steps
    if not is_pure_reshape(split, perm):
        x = bb.emit(relax.op.reshape(x, split), name + "_split")
        x = bb.emit(relax.op.permute_dims(x, list(perm)), name + "_perm")
    return relax.op.reshape(x, out)


def emit_space_to_depth(bb, x, block, layout: str, name: str) -> relax.Expr:
    return _emit_steps(bb, x, s2d_steps(static_shape(x), block, layout), name)


def emit_depth_to_space(bb, x, block, layout: str, name: str) -> relax.Expr:
    return _emit_steps(bb, x, d2s_steps(static_shape(x), block, layout), name)


def emit_align(bb, x, align, layout: str, name: str, pad_value=0) -> relax.Expr:
    """Crop (negative back padding) then zero-pad the spatial axes: ``align`` per geometry.

    Returns ``x`` itself when there is nothing to do.
    """
    hax, wax, _ = spatial_axes(layout)
    shape = static_shape(x)
    crops = [(axis, shape[axis] + back) for axis, (_, back) in zip((hax, wax), align) if back < 0]
    widths = [0] * 8
    for axis, (front, back) in zip((hax, wax), align):
        widths[2 * axis], widths[2 * axis + 1] = front, max(back, 0)
    if crops:
        axes, ends = zip(*crops)
        x = relax.op.strided_slice(x, list(axes), [0] * len(axes), list(ends))
        if any(widths):
            x = bb.emit(x, name + "_crop")
    if any(widths):
        x = relax.op.nn.pad(x, widths, pad_value=pad_value)
    return x


def crop_to(x, begin_hw, end_hw, layout: str) -> relax.Expr:
    """``x[..., begin:end, ...]`` on both spatial axes (un-emitted)."""
    hax, wax, _ = spatial_axes(layout)
    return relax.op.strided_slice(x, [hax, wax], list(begin_hw), list(end_hw))


def emit_leave_domain(bb, x, domain: Domain, layout: str, name: str) -> relax.Expr:
    """Domain tensor -> plain: D2S, then crop the image out of the aligned tensor."""
    y = emit_depth_to_space(bb, x, domain.block, layout, name + "_d2s")
    if domain.exact:
        return y
    y = bb.emit(y, name + "_d2s")
    return crop_to(y, domain.offset, [domain.offset[i] + domain.size[i] for i in (0, 1)], layout)


def emit_mask(bb, x, domain: Domain, channels: int, layout: str, name: str) -> relax.Expr:
    """Zero everything outside the image: ``where(inside_h, where(inside_w, x, 0), 0)``.

    Two small masks (rows, columns) instead of one tensor-sized constant; the ``where``s are
    elementwise and fuse into the op that produced ``x``.
    """
    inside_h, inside_w = domain.inside_masks(channels, layout)
    zero = relax.const(np.zeros((), str(x.ty.dtype)))
    x = bb.emit(relax.op.where(relax.const(inside_w), x, zero), name + "_mask_w")
    return relax.op.where(relax.const(inside_h), x, zero)
