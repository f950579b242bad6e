"""Blocks and layouts: space-to-depth and depth-to-space of arrays, the steps that write
them as reshape / transpose / reshape, kernel layouts, and ``Unsupported``, the refusal
every geometry module raises.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

LAYOUTS = ("NCHW", "NHWC")
#: Blocks ``SpaceToDepthConv2d(block=None)`` chooses among.
CANDIDATE_BLOCKS = ((2, 2), (3, 3), (4, 4))
#: The largest block side a rewrite takes: planning enumerates ``block**2`` offsets per axis
#: (16: about a second), and channels grow with ``bh * bw``.
MAX_BLOCK = 16
#: The largest folded weight a rewrite builds at compile time (bytes).
MAX_FOLDED_WEIGHT_BYTES = 64 << 20


class Unsupported(ValueError):
    """A conv the rewrite refuses; ``str(exc)`` is the reason shown in the report."""





#: The widest row ``rows_as_image`` makes (a CPU register tile spans a few pixels of one row) ...
MAX_IMAGE_WIDTH = 64
#: ... and the fewest rows it leaves where it can (the CPU schedules run rows in parallel).
MIN_IMAGE_ROWS = 4


def rows_as_image(rows: int) -> tuple[int, int]:
    """``(height, width)`` of the image whose pixels are ``rows`` rows of a matrix: the width the
    largest divisor of ``rows`` up to ``MAX_IMAGE_WIDTH`` that leaves ``MIN_IMAGE_ROWS`` rows, if
    one does, else the squarest image (9 -> 3 x 3). A dense layer on many rows is a 1x1 conv over these pixels, whose rows the conv
    schedules run in parallel and tile (576 -> 9 x 64, 36 -> 4 x 9; as one row of 36 pixels
    ConvNeXt-T int8's last pointwise convs ran on one thread)."""
    widths = [d for d in range(1, MAX_IMAGE_WIDTH + 1) if rows % d == 0]
    tall = [d for d in widths if rows // d >= MIN_IMAGE_ROWS and d > 1]
    width = max(tall) if tall else min(widths, key=lambda d: (abs(d * d - rows), -d))  # else the squarest: 9 -> 3 x 3
    return rows // width, width


def normalize_block(block) -> tuple[int, int]:
    """``2`` -> ``(2, 2)``; ``(2, 1)`` stays. Raises ``ValueError`` for anything else."""
    if isinstance(block, (int, np.integer)) and not isinstance(block, bool):
        pair = (int(block), int(block))
    elif (
        isinstance(block, (tuple, list))
        and len(block) == 2
        and all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in block)
    ):
        pair = (int(block[0]), int(block[1]))
    else:
        raise ValueError(f"block must be a positive int or a pair (bh, bw) of them, got {block!r}")
    if min(pair) < 1:
        raise ValueError(f"block sizes must be positive, got {block!r}")
    if max(pair) > MAX_BLOCK:
        raise ValueError(f"block sizes must be at most {MAX_BLOCK}, got {block!r}")
    if pair == (1, 1):
        raise ValueError("block (1, 1) would not change anything; use a larger block")
    return pair


def spatial_axes(layout: str) -> tuple[int, int, int]:
    """(height, width, channel) axis of a 4-d activation layout."""
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    return (2, 3, 1) if layout == "NCHW" else (1, 2, 3)


def s2d_steps(shape: Sequence[int], block, layout: str = "NCHW"):
    """The reshape -> transpose -> reshape that is S2D: ``(split_shape, perm, out_shape)``.

    ``numpy`` and the Relax pass both use these steps, so they cannot disagree.
    """
    bh, bw = block
    if layout == "NCHW":
        n, c, h, w = shape
        _check_divisible(h, w, block)
        return (n, c, h // bh, bh, w // bw, bw), (0, 3, 5, 1, 2, 4), (n, bh * bw * c, h // bh, w // bw)
    n, h, w, c = shape
    _check_divisible(h, w, block)
    return (n, h // bh, bh, w // bw, bw, c), (0, 1, 3, 2, 4, 5), (n, h // bh, w // bw, bh * bw * c)


def d2s_steps(shape: Sequence[int], block, layout: str = "NCHW"):
    """The reshape -> transpose -> reshape that is D2S (the inverse of ``s2d_steps``)."""
    bh, bw = block
    if layout == "NCHW":
        n, cb, h, w = shape
        c = _channels_per_block(cb, block)
        return (n, bh, bw, c, h, w), (0, 3, 4, 1, 5, 2), (n, c, h * bh, w * bw)
    n, h, w, cb = shape
    c = _channels_per_block(cb, block)
    return (n, h, w, bh, bw, c), (0, 1, 3, 2, 4, 5), (n, h * bh, w * bw, c)


def shuffle_steps(shape: Sequence[int], axis: int, groups: int):
    """The reshape -> transpose -> reshape that is a channel shuffle (ShuffleNet's) of ``groups``
    along ``axis``: ``(split_shape, perm, shape)``, the axis split into ``(groups, size /
    groups)`` and the two swapped; element ``j * groups + i`` of the result is element
    ``i * size / groups + j`` of the input."""
    shape = tuple(int(d) for d in shape)
    if not 0 <= axis < len(shape) or groups < 1 or shape[axis] % groups:
        raise ValueError(f"a shuffle of {groups} groups along axis {axis} of {shape}")
    split = (*shape[:axis], groups, shape[axis] // groups, *shape[axis + 1:])
    perm = (*range(axis), axis + 1, axis, *range(axis + 2, len(split)))
    return split, perm, shape


def channel_shuffle(x: np.ndarray, axis: int, groups: int) -> np.ndarray:
    """``shuffle_steps`` on an array."""
    split, perm, shape = shuffle_steps(x.shape, axis, groups)
    return x.reshape(split).transpose(perm).reshape(shape)


def is_pure_reshape(split_shape: Sequence[int], perm: Sequence[int]) -> bool:
    """True when ``perm`` moves only unit axes: the transpose is a no-op in memory.

    This is the case for width-to-depth (block ``(1, bw)``) in NHWC.
    """
    moved = [axis for axis in perm if split_shape[axis] != 1]
    return moved == sorted(moved)


def space_to_depth(x: np.ndarray, block, layout: str = "NCHW") -> np.ndarray:
    split, perm, out = s2d_steps(x.shape, normalize_block(block), layout)
    return x.reshape(split).transpose(perm).reshape(out)


def depth_to_space(x: np.ndarray, block, layout: str = "NCHW") -> np.ndarray:
    split, perm, out = d2s_steps(x.shape, normalize_block(block), layout)
    return x.reshape(split).transpose(perm).reshape(out)


def _check_divisible(h: int, w: int, block) -> None:
    if h % block[0] or w % block[1]:
        raise ValueError(f"spatial size {h}x{w} is not a multiple of block {block[0]}x{block[1]}")


def _channels_per_block(cb: int, block) -> int:
    if cb % (block[0] * block[1]):
        raise ValueError(f"{cb} channels do not split into blocks of {block[0]}x{block[1]}")
    return cb // (block[0] * block[1])


def kernel_to_oihw(kernel_layout: str) -> tuple[int, ...]:
    """Transpose taking a weight in ``kernel_layout`` (a permutation of OIHW) to OIHW."""
    if sorted(kernel_layout) != sorted("OIHW"):
        raise ValueError(f"kernel layout must be a permutation of OIHW, got {kernel_layout!r}")
    return tuple(kernel_layout.index(axis) for axis in "OIHW")


def oihw_to_kernel(kernel_layout: str) -> tuple[int, ...]:
    """Transpose taking an OIHW weight to ``kernel_layout``."""
    kernel_to_oihw(kernel_layout)
    return tuple("OIHW".index(axis) for axis in kernel_layout)

def movement_is_free(shape, block, layout, steps) -> bool:
    split, perm, _ = steps(shape, block, layout)
    return is_pure_reshape(split, perm)

def nchw_to(layout: str, shape):
    n, c, h, w = shape
    return shape if layout == "NCHW" else (n, h, w, c)


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)
