"""Fixed-point requantization in numpy (the ground floor: the passes emit it, the HVX
schedules vectorize it, the emulator checks against it): a float ratio as a 31-bit
multiplier and a rounding right shift, and the integers they compute. The passes' doc
(``passes/quantized/integer_requantize.py``) gives the scheme and its error bound."""

from __future__ import annotations

import numpy as np

RANGES = {"uint8": (0, 255), "int8": (-128, 127)}


def fixed_point(ratio: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(M, r)`` with ``M / 2**(31 + r)`` = ``ratio`` (in (0, 1)), ``2**30 <= M < 2**31``:
    the 31-bit multiplier and the rounding right shift after the high multiply."""
    exponent = np.floor(np.log2(ratio)).astype(np.int64)
    shift = 30 - exponent
    multiplier = np.rint(ratio * np.exp2(shift.astype(np.float64))).astype(np.int64)
    overflow = multiplier >= 2**31  # ratio * 2**shift rounded up to 2**31
    multiplier = np.where(overflow, multiplier // 2, multiplier)
    return multiplier, shift - overflow.astype(np.int64) - 31


def requantize(a: np.ndarray, m, r, zy: int, lo: int, hi: int, dtype: str, pre=0) -> np.ndarray:
    """``a`` (accumulator plus bias) -> ``dtype``: ``((a << pre) * m + 2**30) >> 31``, then a
    rounding right shift by ``r`` (the second shift, ``r + pre`` in all), plus ``zy``, clamped
    to ``[lo, hi]``."""
    first = 31 - np.asarray(pre, np.int64)
    t = (a.astype(np.int64) * np.asarray(m, np.int64) + ((np.int64(1) << first) >> 1)) >> first
    r = np.asarray(r, np.int64)
    return np.clip(((t + ((np.int64(1) << r) >> 1)) >> r) + zy, lo, hi).astype(dtype)
