"""Reference convolutions in numpy (direct loops over taps), the ground truth of the tests
and of the plans' ``run``.
"""

from __future__ import annotations

import numpy as np


def conv2d_nchw(x: np.ndarray, weight: np.ndarray, strides=(1, 1), padding=(0, 0, 0, 0), dilation=(1, 1)) -> np.ndarray:
    """Direct convolution, NCHW x OIHW, groups == 1.

    Float inputs accumulate in float64 and return float32-or-wider; integer inputs
    accumulate exactly in int64 and return int64.
    """
    acc = np.int64 if np.issubdtype(x.dtype, np.integer) else np.float64
    x = x.astype(acc)
    weight = weight.astype(acc)
    t, l, b, r = padding
    xp = np.pad(x, ((0, 0), (0, 0), (t, b), (l, r)))
    o, c, kh, kw = weight.shape
    (sh, sw), (dh, dw) = strides, dilation
    oh = (xp.shape[2] - dh * (kh - 1) - 1) // sh + 1
    ow = (xp.shape[3] - dw * (kw - 1) - 1) // sw + 1
    out = np.zeros((x.shape[0], o, oh, ow), dtype=acc)
    for a in range(kh):
        for bb in range(kw):
            window = xp[:, :, a * dh : a * dh + (oh - 1) * sh + 1 : sh, bb * dw : bb * dw + (ow - 1) * sw + 1 : sw]
            out += np.einsum("nchw,oc->nohw", window, weight[:, :, a, bb])
    return out


def conv_transpose2d_nchw(x, weight, strides=(1, 1), padding=(0, 0, 0, 0), output_padding=(0, 0), dilation=(1, 1)):
    """Direct transposed convolution, NCHW x IOHW, groups == 1 (scatter form)."""
    acc = np.int64 if np.issubdtype(x.dtype, np.integer) else np.float64
    x, weight = x.astype(acc), weight.astype(acc)
    n, c, h, w = x.shape
    _, o, kh, kw = weight.shape
    (sh, sw), (dh, dw) = strides, dilation
    full = np.zeros((n, o, (h - 1) * sh + dh * (kh - 1) + 1 + output_padding[0], (w - 1) * sw + dw * (kw - 1) + 1 + output_padding[1]), acc)
    for a in range(kh):
        for b in range(kw):
            contrib = np.einsum("nchw,co->nohw", x, weight[:, :, a, b])
            full[:, :, a * dh : a * dh + (h - 1) * sh + 1 : sh, b * dw : b * dw + (w - 1) * sw + 1 : sw] += contrib
    t, l, bottom, r = padding
    out_h = (h - 1) * sh - t - bottom + dh * (kh - 1) + output_padding[0] + 1
    out_w = (w - 1) * sw - l - r + dw * (kw - 1) + output_padding[1] + 1
    return full[:, :, t : t + out_h, l : l + out_w]
