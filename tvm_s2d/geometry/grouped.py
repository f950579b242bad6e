"""Grouped convs as dense convs: the weights of a conv of ``groups`` groups as one dense
OIHW weight, block diagonal (output channel ``o`` of group ``g = o // (O / groups)`` sees
its group's input channels with the grouped weights, every other channel with zero). The
dense conv computes the same sums plus exact zeros, so it is the grouped conv exactly; it
executes ``groups`` times the MACs, which a 32-lane vector kernel still runs far faster than
scalar code while groups are few (RegNetX: groups of 16 channels)."""

from __future__ import annotations

import numpy as np


def block_diagonal(weight_oihw: np.ndarray, groups: int) -> np.ndarray:
    """``[O, I / groups, kh, kw]`` grouped weights -> ``[O, I, kh, kw]`` dense ones."""
    o, ig, kh, kw = weight_oihw.shape
    if o % groups:
        raise ValueError(f"{o} output channels do not split into {groups} groups")
    og = o // groups
    dense = np.zeros((o, ig * groups, kh, kw), weight_oihw.dtype)
    for g in range(groups):
        dense[g * og:(g + 1) * og, g * ig:(g + 1) * ig] = weight_oihw[g * og:(g + 1) * og]
    return dense
