"""The channel shuffle (ShuffleNet's reshape to ``[N, g, C/g, H, W]``, transpose, reshape back)
in Relax: ``emit_channel_shuffle`` writes it from ``geometry.shuffle_steps`` and
``match_channel_shuffle`` reads it back (the exact inverse, with a round-trip test). The layout
passes (``conv_layout``) recognise a model's shuffles and put them back on the axis the channels
have after the layout change; ``HexagonMovement`` recognises them in NHWC and runs them on HVX."""

from __future__ import annotations

from dataclasses import dataclass

from tvm import relax

from ..geometry import shuffle_steps
from .relax_tools import emit_steps, match_triple, static_shape


@dataclass(frozen=True)
class Shuffle:
    """What a reshape -> permute_dims -> reshape triple computes: the channel shuffle of ``x`` in
    ``groups`` along ``axis`` (``geometry.shuffle_steps``)."""

    x: relax.Expr
    axis: int
    groups: int


def emit_channel_shuffle(bb, x, axis: int, groups: int, name: str) -> relax.Expr:
    """The channel shuffle of ``x`` (``geometry.shuffle_steps``), its last step un-emitted."""
    return emit_steps(bb, x, shuffle_steps(static_shape(x), axis, groups), name)


def match_channel_shuffle(call: relax.Expr, var2val: dict) -> Shuffle | str:
    """``call``, the last reshape of a triple, as the ``Shuffle`` whose ``emit_channel_shuffle``
    emits exactly this triple (ShuffleNet's ``[N, g, C/g, H, W]`` transpose included); else
    why not."""
    found = match_triple(call, var2val)
    if isinstance(found, str):
        return found
    x, shapes, found = found
    if len(shapes[1]) != len(shapes[0]) + 1:
        return f"a {len(shapes[0])}-D tensor split into {len(shapes[1])}-D: a shuffle splits one axis in two"
    for axis in range(len(shapes[0])):
        groups = shapes[1][axis]
        if groups > 1 and shapes[0][axis] % groups == 0 and shuffle_steps(shapes[0], axis, groups) == found:
            return Shuffle(x, axis, groups)
    return "not a channel shuffle of any axis"
