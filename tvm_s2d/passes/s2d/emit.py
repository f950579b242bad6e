"""Relax data-movement building blocks of the rewrite: align, S2D, D2S, crop; and the
recogniser of what they emit.

Each builder takes a ``BlockBuilder`` and an expression, emits its intermediate steps and
returns its last step *un-emitted*, so the caller decides whether it becomes a new binding or
the value of an existing one. The reshape/transpose steps come from ``geometry.s2d_steps`` /
``d2s_steps``, the same tables the numpy reference uses. ``match_space_to_depth`` is the
exact inverse of ``emit_space_to_depth`` / ``emit_depth_to_space`` (the three-step form):
later passes read a block, layout and direction back from the graph instead of recomputing
them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from tvm import relax

from ...geometry import LAYOUTS, MAX_BLOCK, Domain, d2s_steps, s2d_steps, spatial_axes
from ..relax_tools import emit_steps, match_triple, static_shape


def emit_space_to_depth(bb, x, block, layout: str, name: str) -> relax.Expr:
    return emit_steps(bb, x, s2d_steps(static_shape(x), block, layout), name)


def emit_depth_to_space(bb, x, block, layout: str, name: str) -> relax.Expr:
    return emit_steps(bb, x, d2s_steps(static_shape(x), block, layout), name)


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


@dataclass(frozen=True)
class Movement:
    """What a reshape -> permute_dims -> reshape triple computes: the S2D (``inverse``: D2S)
    of ``x`` by ``block`` in ``layout``."""

    x: relax.Expr
    block: tuple[int, int]
    layout: str
    inverse: bool


def match_space_to_depth(call: relax.Expr, var2val: dict) -> Movement | str:
    """``call``, the last reshape of a triple, as the ``Movement`` whose
    ``emit_space_to_depth`` / ``emit_depth_to_space`` emits exactly this triple; else why not."""
    found = match_triple(call, var2val)
    if isinstance(found, str):
        return found
    x, shapes, found = found
    if len(shapes[0]) != 4 or len(shapes[1]) != 6:
        return f"a {len(shapes[0])}-D tensor split into {len(shapes[1])}-D: S2D/D2S take a 4-D tensor split into 6-D"
    for layout in LAYOUTS:
        for inverse, steps in ((False, s2d_steps), (True, d2s_steps)):
            for block in _blocks(found[0]):
                try:
                    expected = steps(shapes[0], block, layout)
                except ValueError:
                    continue
                if (tuple(expected[0]), tuple(expected[1]), tuple(expected[2])) == found:
                    return Movement(x, block, layout, inverse)
    return "not the space-to-depth or depth-to-space of any block"


def _blocks(split_shape) -> list[tuple[int, int]]:
    """The blocks a split shape can hold: pairs of its dims up to ``MAX_BLOCK``."""
    sizes = sorted({int(d) for d in split_shape if 1 <= d <= MAX_BLOCK})
    return [(bh, bw) for bh in sizes for bw in sizes if (bh, bw) != (1, 1)]
