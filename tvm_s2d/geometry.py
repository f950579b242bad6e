"""Exact space-to-depth (S2D) geometry, in numpy only.

Everything the rewrite needs to know about shapes, weights and costs lives here; the Relax
pass only translates a plan from this module into graph operations.

Conventions
-----------
* A block is ``(bh, bw)``: rows and columns gathered into channels.
* S2D channel order is ONNX ``SpaceToDepth`` / ``DepthToSpace`` mode **DCR** (block position
  major, channel minor), in NCHW and NHWC alike: channel ``(dy * bw + dx) * C + c`` of the
  S2D pixel ``(I, J)`` holds channel ``c`` of the pixel ``(I * bh + dy, J * bw + dx)``.
* A convolution is described in canonical NCHW activations and OIHW weights; other layouts
  are transposes (``to_canonical`` / ``from_canonical``). Padding is ``(top, left, bottom,
  right)`` as in ``relax.nn.conv2d``.

The rewrite of one spatial axis (``AxisPlan``)
----------------------------------------------
Original conv along one axis: input length ``N``, kernel ``k``, stride ``s``, dilation ``d``,
padding ``(pl, ph)``. Output ``i`` reads padded row ``R = i*s + a*d`` for taps ``a < k``.

With block ``b`` (``s`` and ``b`` must divide one another) the input is aligned (cropped to
the rows ever read, padded by ``e`` zeros in front and zeros behind to a multiple of ``b``),
S2D'd, and convolved with stride ``m`` and padding ``(P_lo, P_hi)``. A *phase* ``r`` in
``[0, b)`` fixes the alignment: ``P_lo * b + e = pl + r``, so padded row ``R`` sits at
S2D-domain row ``R + r``.

The output comes in blocks of ``ob`` rows: ``ob = b / s`` when ``s`` divides ``b`` (the
output is itself S2D'd and needs a depth-to-space), else ``ob = 1`` and ``m = s / b``. Either
way ``ob * s = m * b``. For output row ``i = I * ob + p`` and tap ``a``, let
``t = p*s + a*d + r``; it reads S2D row ``I*m + t // b``, phase ``t % b``. So the folded
kernel has tap ``u = t // b`` and input phase ``q = t % b``, its length is
``max(t) // b + 1`` (``ceil((k + b - 1) / b)`` for ``s = d = 1, r = 0``), and taps no
``(p, a)`` maps to are zero. The phase is chosen to minimise that length, then to avoid the
front padding ``e``.

Lane cost model
---------------
HTP rounds both channel counts of a conv up to multiples of 32 (the lane width); HVX
``vrmpy`` does the same for output channels. Executed multiply-accumulates are therefore
``batch * out_h * out_w * kh * kw * roundup(Ci, lane) * roundup(Co, lane)``, zero taps
included. Useful ones are those of the original conv; their ratio is the lane utilization.
Grouped convs (never rewritten, but reported) count as independent per-group convs, except
depthwise ones, which keep channels in lanes with no reduction: ``roundup(Co, lane)`` MACs
per tap and pixel.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

LAYOUTS = ("NCHW", "NHWC")
#: Blocks ``SpaceToDepthConv2d(block=None)`` chooses among.
CANDIDATE_BLOCKS = ((2, 2), (3, 3), (4, 4))


class Unsupported(ValueError):
    """A conv the rewrite refuses; ``str(exc)`` is the reason shown in the report."""


# --------------------------------------------------------------------------------------
# Blocks and layouts


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


# --------------------------------------------------------------------------------------
# One spatial axis


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


@dataclass(frozen=True)
class AxisPlan:
    """How one spatial axis of a conv is rewritten with block ``block`` (see module doc)."""

    size: int
    kernel: int
    stride: int
    dilation: int
    pad: tuple[int, int]
    block: int
    phase: int

    @classmethod
    def best(cls, size, kernel, stride, dilation, pad, block) -> AxisPlan:
        """The plan with the shortest folded kernel, then without front padding."""
        if block > size:
            raise Unsupported(f"block {block} exceeds the input size {size}")
        if stride % block and block % stride:
            raise Unsupported(f"stride {stride} and block {block} do not divide one another")
        plans = [cls(size, kernel, stride, dilation, tuple(pad), block, r) for r in range(block)]
        if plans[0].out_size < 1:
            raise Unsupported("the conv has an empty output")
        if plans[0].rows_read < 1:
            raise Unsupported("the conv reads only padding")
        return min(plans, key=lambda p: (p.conv_kernel, p.front_pad > 0, p.phase))

    @property
    def out_size(self) -> int:
        span = self.dilation * (self.kernel - 1) + 1
        return (self.size + self.pad[0] + self.pad[1] - span) // self.stride + 1

    @property
    def out_block(self) -> int:
        """Output rows per S2D-domain output row (``ob``); > 1 needs a depth-to-space."""
        return self.block // self.stride if self.block % self.stride == 0 else 1

    @property
    def conv_stride(self) -> int:
        return self.stride // self.block if self.stride % self.block == 0 else 1

    @property
    def taps(self) -> list[tuple[int, int, int, int]]:
        """``(p, a, u, q)``: output phase p and original tap a read folded tap u, phase q."""
        result = []
        for p in range(self.out_block):
            for a in range(self.kernel):
                t = p * self.stride + a * self.dilation + self.phase
                result.append((p, a, t // self.block, t % self.block))
        return result

    @property
    def conv_kernel(self) -> int:
        return max(u for _, _, u, _ in self.taps) + 1

    @property
    def conv_out(self) -> int:
        return _ceil_div(self.out_size, self.out_block)

    @property
    def front_pad(self) -> int:
        """Explicit zeros in front of the input before S2D (``e``)."""
        return (self.pad[0] + self.phase) % self.block

    @property
    def rows_read(self) -> int:
        """Input rows any output reads; the rest are cropped before S2D."""
        last = (self.out_size - 1) * self.stride + (self.kernel - 1) * self.dilation - self.pad[0]
        return min(self.size, last + 1)

    @property
    def _conv_pad_lo(self) -> int:
        return (self.pad[0] + self.phase) // self.block

    @property
    def _rows_needed(self) -> int:
        """S2D-domain rows (padding included) the conv reads for its ``conv_out`` outputs."""
        return (self.conv_out - 1) * self.conv_stride + self.conv_kernel

    @property
    def s2d_size(self) -> int:
        """Length of the aligned input in S2D-domain rows."""
        aligned = _ceil_div(self.front_pad + self.rows_read, self.block)
        return min(aligned, self._rows_needed - self._conv_pad_lo)

    @property
    def conv_pad(self) -> tuple[int, int]:
        return self._conv_pad_lo, self._rows_needed - self._conv_pad_lo - self.s2d_size

    @property
    def back_pad(self) -> int:
        """Explicit zeros behind the input before S2D; negative means crop that many rows."""
        return self.s2d_size * self.block - self.front_pad - self.size


# --------------------------------------------------------------------------------------
# A whole conv


@dataclass(frozen=True)
class Conv2dSpec:
    """A 2-d convolution in canonical NCHW / OIHW terms (``groups == 1``)."""

    batch: int
    in_channels: int
    out_channels: int
    in_hw: tuple[int, int]
    kernel_hw: tuple[int, int]
    strides: tuple[int, int] = (1, 1)
    dilation: tuple[int, int] = (1, 1)
    padding: tuple[int, int, int, int] = (0, 0, 0, 0)  # top, left, bottom, right
    groups: int = 1

    @property
    def out_hw(self) -> tuple[int, int]:
        return tuple(
            (self.in_hw[i] + self.padding[i] + self.padding[i + 2] - self.dilation[i] * (self.kernel_hw[i] - 1) - 1)
            // self.strides[i]
            + 1
            for i in (0, 1)
        )

    @property
    def useful_macs(self) -> int:
        oh, ow = self.out_hw
        kh, kw = self.kernel_hw
        return self.batch * oh * ow * kh * kw * self.in_channels * self.out_channels // self.groups

    def executed_macs(self, lane_width: int = 32) -> int:
        g = self.groups
        if g > 1 and g == self.in_channels:  # depthwise: channels in lanes, one MAC per lane
            return executed_macs(self.batch, self.out_hw, self.kernel_hw, 1, self.out_channels, lane_width) // lane_width
        per_group = executed_macs(self.batch, self.out_hw, self.kernel_hw, self.in_channels // g, self.out_channels // g, lane_width)
        return g * per_group

    def require_dense(self) -> None:
        if self.groups != 1:
            raise Unsupported(f"grouped conv (groups={self.groups})")

    def plan(self, block) -> S2DConvPlan:
        """The exact S2D rewrite with ``block``; raises ``Unsupported`` with the reason."""
        self.require_dense()
        bh, bw = normalize_block(block)
        axes = []
        for i, (name, b) in enumerate((("height", bh), ("width", bw))):
            try:
                axes.append(
                    AxisPlan.best(
                        self.in_hw[i], self.kernel_hw[i], self.strides[i], self.dilation[i],
                        (self.padding[i], self.padding[i + 2]), b,
                    )
                )
            except Unsupported as exc:
                raise Unsupported(f"{name}: {exc}") from None
        return S2DConvPlan(self, axes[0], axes[1])


def executed_macs(batch, out_hw, kernel_hw, cin, cout, lane_width=32) -> int:
    """Multiply-accumulates executed with both channel counts padded to ``lane_width``."""
    def roundup(c):
        return _ceil_div(c, lane_width) * lane_width

    return batch * out_hw[0] * out_hw[1] * kernel_hw[0] * kernel_hw[1] * roundup(cin) * roundup(cout)


@dataclass(frozen=True)
class S2DConvPlan:
    """``conv(x, W)`` == ``crop(D2S(conv'(S2D(align(x)), W')))`` for one conv and block."""

    spec: Conv2dSpec
    h: AxisPlan
    w: AxisPlan

    @property
    def block(self) -> tuple[int, int]:
        return self.h.block, self.w.block

    @property
    def out_block(self) -> tuple[int, int]:
        return self.h.out_block, self.w.out_block

    @property
    def in_channels(self) -> int:
        return self.spec.in_channels * self.h.block * self.w.block

    @property
    def out_channels(self) -> int:
        return self.spec.out_channels * self.h.out_block * self.w.out_block

    @property
    def kernel_hw(self) -> tuple[int, int]:
        return self.h.conv_kernel, self.w.conv_kernel

    @property
    def strides(self) -> tuple[int, int]:
        return self.h.conv_stride, self.w.conv_stride

    @property
    def padding(self) -> tuple[int, int, int, int]:
        return (*[self.h.conv_pad[0], self.w.conv_pad[0]], *[self.h.conv_pad[1], self.w.conv_pad[1]])

    @property
    def s2d_hw(self) -> tuple[int, int]:
        return self.h.s2d_size, self.w.s2d_size

    @property
    def conv_out_hw(self) -> tuple[int, int]:
        return self.h.conv_out, self.w.conv_out

    @property
    def align(self) -> tuple[tuple[int, int], tuple[int, int]]:
        """``((front, back), (front, back))`` zeros added per axis before S2D; back < 0 crops."""
        return (self.h.front_pad, self.h.back_pad), (self.w.front_pad, self.w.back_pad)

    @property
    def needs_d2s(self) -> bool:
        return self.out_block != (1, 1)

    @property
    def crop_hw(self) -> tuple[int, int] | None:
        """Output size to crop to after D2S, or None when nothing is cropped."""
        full = (self.h.conv_out * self.h.out_block, self.w.conv_out * self.w.out_block)
        return None if full == self.spec.out_hw else self.spec.out_hw

    def executed_macs(self, lane_width: int = 32) -> int:
        return executed_macs(
            self.spec.batch, self.conv_out_hw, self.kernel_hw, self.in_channels, self.out_channels, lane_width
        )

    def fold_weight(self, weight: np.ndarray) -> np.ndarray:
        """OIHW ``W`` -> OIHW ``W'`` (zero taps included); dtype is kept."""
        o, c, kh, kw = weight.shape
        if (o, c, (kh, kw)) != (self.spec.out_channels, self.spec.in_channels, self.spec.kernel_hw):
            raise ValueError(f"weight shape {weight.shape} does not match the conv {self.spec}")
        (obh, obw), (bh, bw), (khf, kwf) = self.out_block, self.block, self.kernel_hw
        folded = np.zeros((obh, obw, o, bh, bw, c, khf, kwf), dtype=weight.dtype)
        for (py, a, u, qy), (px, b, v, qx) in itertools.product(self.h.taps, self.w.taps):
            folded[py, px, :, qy, qx, :, u, v] = weight[:, :, a, b]
        return folded.reshape(self.out_channels, self.in_channels, khf, kwf)

    def fold_bias(self, bias: np.ndarray) -> np.ndarray:
        """Per-output-channel values (bias, scales) for the S2D output channels."""
        return np.tile(bias, self.h.out_block * self.w.out_block)

    # ---- numpy execution of the plan: the reference the Relax rewrite must agree with ----

    def align_input(self, x: np.ndarray, layout: str = "NCHW", pad_value=0) -> np.ndarray:
        hax, wax, _ = spatial_axes(layout)
        for axis, (front, back) in zip((hax, wax), self.align):
            if back < 0:
                x = np.take(x, range(x.shape[axis] + back), axis=axis)
            widths = [(0, 0)] * 4
            widths[axis] = (front, max(back, 0))
            x = np.pad(x, widths, constant_values=pad_value)
        return x

    def finish_output(self, y: np.ndarray, layout: str = "NCHW") -> np.ndarray:
        if self.needs_d2s:
            y = depth_to_space(y, self.out_block, layout)
        if self.crop_hw is not None:
            hax, wax, _ = spatial_axes(layout)
            y = np.take(np.take(y, range(self.crop_hw[0]), axis=hax), range(self.crop_hw[1]), axis=wax)
        return y

    def run(self, x: np.ndarray, weight: np.ndarray, layout: str = "NCHW") -> np.ndarray:
        """The rewritten conv in numpy (``x`` in ``layout``, ``weight`` OIHW)."""
        xs = space_to_depth(self.align_input(x, layout), self.block, layout)
        if layout == "NHWC":
            xs = xs.transpose(0, 3, 1, 2)
        y = conv2d_nchw(xs, self.fold_weight(weight), self.strides, self.padding)
        if layout == "NHWC":
            y = y.transpose(0, 2, 3, 1)
        return self.finish_output(y, layout)


def choose_block(spec: Conv2dSpec, lane_width: int = 32, candidates=CANDIDATE_BLOCKS) -> S2DConvPlan:
    """The lane model's choice: the valid block with the fewest executed MACs (smallest on ties).

    Raises ``Unsupported`` when no block lowers the executed MACs on ``lane_width`` lanes.
    """
    spec.require_dense()
    before = spec.executed_macs(lane_width)
    plans, reasons = [], []
    for block in candidates:
        try:
            plans.append(spec.plan(block))
        except Unsupported as exc:
            reasons.append(f"{block[0]}x{block[1]}: {exc}")
    if not plans:
        raise Unsupported("no valid block (" + "; ".join(reasons) + ")")
    best = min(plans, key=lambda p: (p.executed_macs(lane_width), p.block[0] * p.block[1]))
    if best.executed_macs(lane_width) < before:
        return best
    if spec.in_channels >= lane_width:
        raise Unsupported(f"already enough channels ({spec.in_channels} input channels fill {lane_width}-wide lanes)")
    raise Unsupported(
        f"no estimated gain on {lane_width}-channel lanes (best block {best.block[0]}x{best.block[1]}:"
        f" {best.executed_macs(lane_width):,} executed MACs vs {before:,})"
    )


# --------------------------------------------------------------------------------------
# Reference convolution


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


def useful_fraction(useful: int, executed: int) -> float:
    return useful / executed if executed else math.nan
