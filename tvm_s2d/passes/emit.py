"""Relax data-movement building blocks of the rewrite: align, S2D, D2S, crop.

Each takes a ``BlockBuilder`` and an expression, emits its intermediate steps and returns
its last step *un-emitted*, so the caller decides whether it becomes a new binding or the
value of an existing one.
The reshape/transpose steps come from ``geometry.s2d_steps`` / ``d2s_steps``, the same
tables the numpy reference uses.
"""

from __future__ import annotations

from tvm import relax

from ..geometry import d2s_steps, is_pure_reshape, s2d_steps, spatial_axes


def _shape(expr: relax.Expr) -> tuple[int, ...]:
    return tuple(int(d) for d in expr.ty.shape.values)


def _emit_steps(bb: relax.BlockBuilder, x: relax.Expr, steps, name: str) -> relax.Expr:
    split, perm, out = steps
    if not is_pure_reshape(split, perm):
        x = bb.emit(relax.op.reshape(x, split), name + "_split")
        x = bb.emit(relax.op.permute_dims(x, list(perm)), name + "_perm")
    return relax.op.reshape(x, out)


def emit_space_to_depth(bb, x, block, layout: str, name: str) -> relax.Expr:
    return _emit_steps(bb, x, s2d_steps(_shape(x), block, layout), name)


def emit_depth_to_space(bb, x, block, layout: str, name: str) -> relax.Expr:
    return _emit_steps(bb, x, d2s_steps(_shape(x), block, layout), name)


def emit_align(bb, x, align, layout: str, name: str, pad_value=0) -> relax.Expr:
    """Crop (negative back padding) then zero-pad the spatial axes: ``align`` per geometry.

    Returns ``x`` itself when there is nothing to do.
    """
    hax, wax, _ = spatial_axes(layout)
    shape = _shape(x)
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


def crop_spatial(x, out_hw, layout: str) -> relax.Expr:
    """``x[..., :out_h, :out_w, ...]``."""
    hax, wax, _ = spatial_axes(layout)
    return relax.op.strided_slice(x, [hax, wax], [0, 0], list(out_hw))
