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
from dataclasses import dataclass
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
    """How one spatial axis of a conv is rewritten with block ``block`` (see module doc).

    ``offset_in`` is the aligned row of input row 0: the explicit front padding for a plain
    input, the domain's offset for an input already in the S2D domain (``extent_in`` blocks
    long). ``offset_out`` is the aligned row of output row 0 in the output blocks.
    """

    size: int
    kernel: int
    stride: int
    dilation: int
    pad: tuple[int, int]
    block: int
    offset_in: int = 0
    offset_out: int = 0
    extent_in: int | None = None  # None: plain input, aligned and S2D'd by the rewrite

    @classmethod
    def candidates(cls, size, kernel, stride, dilation, pad, block, offset_in=None, extent_in=None) -> list[AxisPlan]:
        """Every valid plan: all input offsets (when free) times all output offsets."""
        if block > size:
            raise Unsupported(f"block {block} exceeds the input size {size}")
        if stride % block and block % stride:
            raise Unsupported(f"stride {stride} and block {block} do not divide one another")
        first = cls(size, kernel, stride, dilation, tuple(pad), block)
        if first.out_size < 1:
            raise Unsupported("the conv has an empty output")
        if first.rows_read < 1:
            raise Unsupported("the conv reads only padding")
        offsets_in = range(block) if offset_in is None else [offset_in]
        return [
            cls(size, kernel, stride, dilation, tuple(pad), block, e_in, e_out, extent_in)
            for e_in in offsets_in
            for e_out in range(first.out_block)
        ]

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

    def _t(self, p: int, a: int) -> int:
        """Aligned input row, relative to the output block's first read, of phase p, tap a."""
        return (p - self.offset_out) * self.stride + a * self.dilation - self.pad[0] + self.offset_in

    @property
    def _u_min(self) -> int:
        return self._t(0, 0) // self.block

    @property
    def taps(self) -> list[tuple[int, int, int, int]]:
        """``(p, a, u, q)``: output phase p and original tap a read folded tap u, phase q."""
        return [
            (p, a, self._t(p, a) // self.block - self._u_min, self._t(p, a) % self.block)
            for p in range(self.out_block)
            for a in range(self.kernel)
        ]

    @property
    def conv_kernel(self) -> int:
        return self._t(self.out_block - 1, self.kernel - 1) // self.block - self._u_min + 1

    @property
    def conv_out(self) -> int:
        """Output blocks: enough to hold rows ``[-offset_out, out_size)``; the output extent."""
        return _ceil_div(self.out_size + self.offset_out, self.out_block)

    @property
    def rows_read(self) -> int:
        """Input rows any output reads; the rest are cropped before S2D."""
        last = (self.out_size - 1) * self.stride + (self.kernel - 1) * self.dilation - self.pad[0]
        return min(self.size, last + 1)

    @property
    def _rows_needed(self) -> int:
        """S2D-domain rows (padding included) the conv reads for its ``conv_out`` outputs."""
        return (self.conv_out - 1) * self.conv_stride + self.conv_kernel

    @property
    def s2d_size(self) -> int:
        """Length of the conv's S2D input in blocks (trailing blocks nobody reads are cut)."""
        if self.extent_in is None:
            available = _ceil_div(self.offset_in + self.rows_read, self.block)
        else:
            available = self.extent_in
        return min(available, self._rows_needed + self._u_min)

    @property
    def conv_pad(self) -> tuple[int, int]:
        lo = -self._u_min
        return lo, self._rows_needed - lo - self.s2d_size

    @property
    def front_pad(self) -> int:
        """Explicit zeros in front of a plain input before S2D."""
        return self.offset_in

    @property
    def back_pad(self) -> int:
        """Explicit zeros behind a plain input before S2D; negative means crop that many rows."""
        return self.s2d_size * self.block - self.offset_in - self.size

    @property
    def trim_in(self) -> int:
        """Trailing blocks of a domain input the conv never reads (cut before the conv)."""
        return 0 if self.extent_in is None else self.extent_in - self.s2d_size

    @property
    def reads_outside(self) -> bool:
        """Whether valid outputs read aligned rows of the input tensor outside the image."""
        first = self.offset_in - self.pad[0]
        last = first + (self.out_size - 1) * self.stride + (self.kernel - 1) * self.dilation
        end = self.offset_in + self.size
        return (first < self.offset_in and self.offset_in > 0) or (last >= end and self.s2d_size * self.block > end)

    @property
    def exact_out(self) -> bool:
        """The output blocks hold exactly the output rows, nothing before or after."""
        return self.offset_out == 0 and self.conv_out * self.out_block == self.out_size


# --------------------------------------------------------------------------------------
# The S2D domain


@dataclass(frozen=True)
class Domain:
    """A tensor living in the S2D domain: ``S2D(aligned image)``.

    The aligned image holds image row 0 at aligned row ``offset`` (per axis, ``< block``) and
    spans ``extent`` blocks, the fewest covering the image. Rows outside the image hold zeros
    when ``clean``, anything (e.g. outputs computed past the image) otherwise.
    """

    block: tuple[int, int]
    offset: tuple[int, int]
    size: tuple[int, int]
    clean: bool = False

    @property
    def extent(self) -> tuple[int, int]:
        return tuple(_ceil_div(self.size[i] + self.offset[i], self.block[i]) for i in (0, 1))

    @property
    def exact(self) -> bool:
        """The blocks hold the image and nothing else (no offset, no tail)."""
        return self.offset == (0, 0) and all(self.extent[i] * self.block[i] == self.size[i] for i in (0, 1))

    def inside(self, channels: int) -> tuple[np.ndarray, np.ndarray]:
        """Boolean ``(C*bh*bw, extent_h)`` and ``(C*bh*bw, extent_w)``: which S2D element is in the image."""
        (bh, bw), masks = self.block, []
        for axis, b in enumerate(self.block):
            rows = np.arange(self.extent[axis])[None, :] * b
            phase = np.arange(bh * bw)[:, None] // bw if axis == 0 else np.arange(bh * bw)[:, None] % bw
            image_row = rows + phase - self.offset[axis]
            inside = (image_row >= 0) & (image_row < self.size[axis])
            masks.append(np.repeat(inside, channels, axis=0))
        return masks[0], masks[1]

    def inside_masks(self, channels: int, layout: str = "NCHW") -> tuple[np.ndarray, np.ndarray]:
        """``inside`` as two boolean arrays broadcastable against the S2D tensor in ``layout``."""
        inside_h, inside_w = self.inside(channels)
        if layout == "NCHW":
            return inside_h[None, :, :, None], inside_w[None, :, None, :]
        return inside_h.T[None, :, None, :], inside_w.T[None, None, :, :]

    # numpy conversions, the reference for the Relax ones
    def enter(self, x: np.ndarray, layout: str = "NCHW", fill=0) -> np.ndarray:
        hax, wax, _ = spatial_axes(layout)
        widths = [(0, 0)] * 4
        for axis, i in ((hax, 0), (wax, 1)):
            widths[axis] = (self.offset[i], self.extent[i] * self.block[i] - self.offset[i] - self.size[i])
        return space_to_depth(np.pad(x, widths, constant_values=fill), self.block, layout)

    def leave_bytes(self, batch: int, channels: int, itemsize: int, layout: str = "NCHW") -> int:
        """Bytes read and written to bring the tensor back to plain (0 for a pure reshape)."""
        shape = _nchw_to(layout, (batch, channels * self.block[0] * self.block[1], *self.extent))
        if self.exact and _movement_is_free(shape, self.block, layout, d2s_steps):
            return 0
        return 2 * batch * channels * self.size[0] * self.size[1] * itemsize

    def leave(self, x: np.ndarray, layout: str = "NCHW") -> np.ndarray:
        hax, wax, _ = spatial_axes(layout)
        y = depth_to_space(x, self.block, layout)
        for axis, i in ((hax, 0), (wax, 1)):
            y = np.take(y, range(self.offset[i], self.offset[i] + self.size[i]), axis=axis)
        return y


@dataclass(frozen=True)
class CostModel:
    """The estimate the rewrite decides by: executed MACs on ``lane_width``-channel lanes plus
    ``move_cost`` MAC-equivalents per byte a data-movement kernel reads or writes.

    The default ``move_cost`` is a rough HVX figure (a packet moves a 128-byte vector in and
    out, or does 256 int8 MACs); tuning replaces these guesses with measurements.
    """

    lane_width: int = 32
    move_cost: float = 1.0
    # cost factor on a conv with a width stride > 1: a width-vectorized kernel (CPU) gathers
    # every s-th pixel into its vectors; S2D turns it into a stride-1 conv
    strided_width: float = 1.0
    # ... charged only to convs with at most this many input channels (None: all)
    strided_width_channels: int | None = None

    def conv_cost(self, spec: "ConvShape") -> float:
        """The estimated cost of ``spec`` as it is."""
        gathers = spec.strides[1] > 1 and (self.strided_width_channels is None
                                           or spec.in_channels <= self.strided_width_channels)
        factor = self.strided_width if gathers else 1.0
        return spec.executed_macs(self.lane_width) * factor

    def __post_init__(self):
        if isinstance(self.lane_width, bool) or not isinstance(self.lane_width, int) or self.lane_width < 1:
            raise ValueError(f"lane_width must be a positive int, got {self.lane_width!r}")
        if not isinstance(self.move_cost, (int, float)) or isinstance(self.move_cost, bool) or not self.move_cost >= 0:
            raise ValueError(f"move_cost must be a number >= 0, got {self.move_cost!r}")


# --------------------------------------------------------------------------------------
# A whole conv


@dataclass(frozen=True)
class ConvShape:
    """What a 2-d conv or transposed conv is, in canonical NCHW terms."""

    batch: int
    in_channels: int
    out_channels: int
    in_hw: tuple[int, int]
    kernel_hw: tuple[int, int]
    strides: tuple[int, int] = (1, 1)
    dilation: tuple[int, int] = (1, 1)
    padding: tuple[int, int, int, int] = (0, 0, 0, 0)  # top, left, bottom, right
    groups: int = 1
    itemsize: int = 4  # bytes per activation element, for the data-movement cost


@dataclass(frozen=True)
class Conv2dSpec(ConvShape):
    """A 2-d convolution, NCHW activations and OIHW weights."""

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

    def plan(self, block, domain: Domain | None = None, layout: str = "NCHW", model: CostModel = CostModel(),
             offset_out: tuple[int, int] | None = None) -> S2DConvPlan:
        """The exact S2D rewrite with ``block``, cheapest over the free offsets.

        ``domain``: the input is already in the S2D domain (its block must be ``block``);
        otherwise it is plain and the rewrite aligns and S2D's it. ``offset_out`` fixes the
        output's offset. Raises ``Unsupported``.
        """
        self.require_dense()
        block = normalize_block(block)
        if domain is not None and domain.block != block:
            raise ValueError(f"domain block {domain.block} differs from block {block}")
        per_axis = []
        for i, name in enumerate(("height", "width")):
            try:
                per_axis.append(
                    AxisPlan.candidates(
                        self.in_hw[i], self.kernel_hw[i], self.strides[i], self.dilation[i],
                        (self.padding[i], self.padding[i + 2]), block[i],
                        offset_in=None if domain is None else domain.offset[i],
                        extent_in=None if domain is None else domain.extent[i],
                    )
                )
            except Unsupported as exc:
                raise Unsupported(f"{name}: {exc}") from None
        self._check_folded_size(block, per_axis)
        plans = [S2DConvPlan(self, h, w, layout, domain) for h in per_axis[0] for w in per_axis[1]
                 if offset_out is None or (h.offset_out, w.offset_out) == tuple(offset_out)]
        if not plans:
            raise Unsupported(f"no plan with output offset {offset_out}")
        return min(plans, key=lambda p: (p.cost(model), p.h.offset_in + p.w.offset_in, p.h.offset_out + p.w.offset_out))

    def _check_folded_size(self, block, per_axis) -> None:
        """Refuse before planning when every plan's folded weight exceeds the limit."""
        taps = [min(a.out_block * a.conv_kernel for a in axis) for axis in per_axis]
        size = self.in_channels * block[0] * block[1] * self.out_channels * taps[0] * taps[1] * self.itemsize
        if size > MAX_FOLDED_WEIGHT_BYTES:
            raise Unsupported(f"block {block[0]}x{block[1]}: folded weights of at least {size / 2**20:.0f} MiB"
                              f" (limit {MAX_FOLDED_WEIGHT_BYTES >> 20} MiB)")

    def input_bytes(self) -> int:
        return self.batch * self.in_channels * self.in_hw[0] * self.in_hw[1] * self.itemsize


def executed_macs(batch, out_hw, kernel_hw, cin, cout, lane_width=32) -> int:
    """Multiply-accumulates executed with both channel counts padded to ``lane_width``."""
    def roundup(c):
        return _ceil_div(c, lane_width) * lane_width

    return batch * out_hw[0] * out_hw[1] * kernel_hw[0] * kernel_hw[1] * roundup(cin) * roundup(cout)


def _movement_is_free(shape, block, layout, steps) -> bool:
    split, perm, _ = steps(shape, block, layout)
    return is_pure_reshape(split, perm)


@dataclass(frozen=True)
class S2DConvPlan:
    """``conv(x, W)`` == ``leave(conv'(enter(x), W'))`` for one conv and block.

    ``enter`` is align + S2D for a plain input (nothing, or a mask, for a ``domain`` input);
    the output is in the domain ``out_domain`` when ``needs_d2s``, else plain.
    """

    spec: Conv2dSpec
    h: AxisPlan
    w: AxisPlan
    layout: str = "NCHW"
    domain: Domain | None = None  # the input's domain; None for a plain input

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
    def trim(self) -> tuple[int, int]:
        """Trailing blocks of a domain input cut before the conv."""
        return self.h.trim_in, self.w.trim_in

    @property
    def needs_mask(self) -> bool:
        """A domain input must have zeros outside the image and may not."""
        return self.domain is not None and not self.domain.clean and (self.h.reads_outside or self.w.reads_outside)

    @property
    def needs_d2s(self) -> bool:
        return self.out_block != (1, 1)

    @property
    def out_domain(self) -> Domain | None:
        """Where the output lives: a domain of ``out_block``, or None (plain)."""
        if not self.needs_d2s:
            return None
        clean = self.h.exact_out and self.w.exact_out
        return Domain(self.out_block, (self.h.offset_out, self.w.offset_out), self.spec.out_hw, clean)

    def executed_macs(self, lane_width: int = 32) -> int:
        return executed_macs(
            self.spec.batch, self.conv_out_hw, self.kernel_hw, self.in_channels, self.out_channels, lane_width
        )

    # ---- data movement ----

    def entry_bytes(self) -> int:
        """Bytes read and written to bring a plain input into the S2D domain (0 from a domain)."""
        if self.domain is not None:
            return 0
        shape = _nchw_to(self.layout, (self.spec.batch, self.spec.in_channels, *(b * self.block[i] for i, b in enumerate(self.s2d_hw))))
        aligned = self.align != ((0, 0), (0, 0))
        if not aligned and _movement_is_free(shape, self.block, self.layout, s2d_steps):
            return 0
        return 2 * self.spec.input_bytes()

    def exit_bytes(self) -> int:
        """Bytes read and written to bring the output back to plain (D2S and crop)."""
        out = self.out_domain
        return 0 if out is None else out.leave_bytes(self.spec.batch, self.spec.out_channels, self.spec.itemsize, self.layout)

    def cost(self, model: CostModel = CostModel()) -> float:
        """Executed MACs plus data movement into and out of the domain, per ``model``."""
        return self.executed_macs(model.lane_width) + model.move_cost * (self.entry_bytes() + self.exit_bytes())

    # ---- weights ----

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
        """Conv output -> the original conv's output (plain)."""
        out = self.out_domain
        return y if out is None else out.leave(y, layout)

    def run_s2d(self, xs: np.ndarray, weight: np.ndarray, layout: str = "NCHW") -> np.ndarray:
        """The folded conv on an S2D input (a domain tensor or an aligned and S2D'd one)."""
        hax, wax, _ = spatial_axes(layout)
        if self.needs_mask:
            inside_h, inside_w = self.domain.inside_masks(self.spec.in_channels, layout)
            xs = np.where(inside_h & inside_w, xs, 0)
        xs = np.take(np.take(xs, range(self.s2d_hw[0]), axis=hax), range(self.s2d_hw[1]), axis=wax)
        if layout == "NHWC":
            xs = xs.transpose(0, 3, 1, 2)
        y = conv2d_nchw(xs, self.fold_weight(weight), self.strides, self.padding)
        return y.transpose(0, 2, 3, 1) if layout == "NHWC" else y

    def run(self, x: np.ndarray, weight: np.ndarray, layout: str = "NCHW") -> np.ndarray:
        """The rewritten conv in numpy on a plain input (``x`` in ``layout``, ``weight`` OIHW)."""
        xs = space_to_depth(self.align_input(x, layout), self.block, layout)
        return self.finish_output(self.run_s2d(xs, weight, layout), layout)


def _nchw_to(layout: str, shape):
    n, c, h, w = shape
    return shape if layout == "NCHW" else (n, h, w, c)


def choose_block(spec: Conv2dSpec, model: CostModel = CostModel(), candidates=CANDIDATE_BLOCKS, layout: str = "NCHW") -> S2DConvPlan:
    """The cost model's choice: the valid block with the lowest ``cost`` (smallest on ties).

    Raises ``Unsupported`` when no block beats the conv as it is.
    """
    spec.require_dense()
    lane_width = model.lane_width
    before = model.conv_cost(spec)
    plans, reasons = [], []
    for block in candidates:
        try:
            plans.append(spec.plan(block, layout=layout, model=model))
        except Unsupported as exc:
            reasons.append(f"{block[0]}x{block[1]}: {exc}")
    if not plans:
        raise Unsupported("no valid block (" + "; ".join(reasons) + ")")
    best = min(plans, key=lambda p: (p.cost(model), p.block[0] * p.block[1]))
    if best.cost(model) < before:
        return best
    if lane_width == 1:
        raise Unsupported("no estimated gain with 1-channel lanes (CPU vectors hold pixels): S2D only adds zero taps"
                          " and data movement to a stride-1 conv")
    if spec.in_channels >= lane_width:
        raise Unsupported(f"already enough channels ({spec.in_channels} input channels fill {lane_width}-wide lanes)")
    raise Unsupported(
        f"no estimated gain on {lane_width}-channel lanes (best block {best.block[0]}x{best.block[1]}:"
        f" cost {best.cost(model):,.0f} vs {before:,.0f} executed MACs)"
    )


# --------------------------------------------------------------------------------------
# Transposed convolution = stride-1 conv with s*s times the output channels, then D2S


@dataclass(frozen=True)
class TransposedAxisPlan:
    """One axis of ``conv_transpose`` as a stride-1 conv producing ``stride`` output phases.

    Output row ``i = J*s + p - offset`` gets ``x[j] * W[a]`` wherever ``j*s + a*d - pl = i``,
    i.e. ``j = J + v`` with ``v = (p - offset + pl - a*d) / s`` when that divides exactly.
    """

    size: int
    kernel: int
    stride: int
    dilation: int
    pad: tuple[int, int]
    output_padding: int = 0
    offset_out: int = 0

    @property
    def out_size(self) -> int:
        return (self.size - 1) * self.stride - self.pad[0] - self.pad[1] + self.dilation * (self.kernel - 1) + self.output_padding + 1

    @property
    def out_block(self) -> int:
        return self.stride

    @property
    def _raw_taps(self) -> list[tuple[int, int, int]]:
        result = []
        for p in range(self.stride):
            for a in range(self.kernel):
                num = p - self.offset_out + self.pad[0] - a * self.dilation
                if num % self.stride == 0:
                    result.append((p, a, num // self.stride))
        return result

    @property
    def _v_min(self) -> int:
        return min(v for _, _, v in self._raw_taps)

    @property
    def taps(self) -> list[tuple[int, int, int]]:
        """``(p, a, u)``: output phase p gets original tap a from folded tap u."""
        return [(p, a, v - self._v_min) for p, a, v in self._raw_taps]

    @property
    def conv_kernel(self) -> int:
        return max(v for _, _, v in self._raw_taps) - self._v_min + 1

    @property
    def conv_out(self) -> int:
        return _ceil_div(self.out_size + self.offset_out, self.stride)

    @property
    def crop_in(self) -> tuple[int, int]:
        """Input rows cut from the front and back before the conv."""
        front = max(0, self._v_min)
        back = max(0, -self._pad_hi_raw)
        return front, back

    @property
    def _pad_hi_raw(self) -> int:
        needed = self.conv_out - 1 + self.conv_kernel
        return needed - max(0, -self._v_min) - (self.size - max(0, self._v_min))

    @property
    def conv_pad(self) -> tuple[int, int]:
        return max(0, -self._v_min), max(0, self._pad_hi_raw)

    @property
    def exact_out(self) -> bool:
        return self.offset_out == 0 and self.conv_out * self.stride == self.out_size


@dataclass(frozen=True)
class TransposedConv2dSpec(ConvShape):
    """A 2-d transposed convolution, NCHW activations and IOHW weights."""

    output_padding: tuple[int, int] = (0, 0)

    def _axes(self, offsets=(0, 0)) -> tuple[TransposedAxisPlan, TransposedAxisPlan]:
        return tuple(
            TransposedAxisPlan(self.in_hw[i], self.kernel_hw[i], self.strides[i], self.dilation[i],
                               (self.padding[i], self.padding[i + 2]), self.output_padding[i], offsets[i])
            for i in (0, 1)
        )

    @property
    def out_hw(self) -> tuple[int, int]:
        return tuple(axis.out_size for axis in self._axes())

    @property
    def useful_macs(self) -> int:
        (h, w), (kh, kw) = self.in_hw, self.kernel_hw
        return self.batch * h * w * kh * kw * self.in_channels * self.out_channels // self.groups

    def executed_macs(self, lane_width: int = 32) -> int:
        """Direct (scatter) transposed conv: every input pixel times every tap."""
        g = self.groups
        return g * executed_macs(self.batch, self.in_hw, self.kernel_hw, self.in_channels // g, self.out_channels // g, lane_width)

    def plan(self, layout: str = "NCHW", model: CostModel = CostModel(), offset_out: tuple[int, int] | None = None) -> TransposedConvPlan:
        if self.groups != 1:
            raise Unsupported(f"grouped conv (groups={self.groups})")
        if self.strides == (1, 1):
            raise Unsupported("stride 1: a plain conv already, no depth-to-space to gain")
        if min(self.out_hw) < 1:
            raise Unsupported("the conv has an empty output")
        offsets = [(eh, ew) for eh in range(self.strides[0]) for ew in range(self.strides[1])]
        if offset_out is not None:
            offsets = [tuple(offset_out)] if tuple(offset_out) in offsets else []
        if not offsets:
            raise Unsupported(f"no plan with output offset {offset_out}")
        plans = [TransposedConvPlan(self, *self._axes(offset), layout) for offset in offsets]
        return min(plans, key=lambda p: (p.cost(model), p.h.offset_out + p.w.offset_out))


@dataclass(frozen=True)
class TransposedConvPlan:
    """``conv_transpose(x, W)`` == ``leave(conv'(crop(x), W'))``, output in ``out_domain``."""

    spec: TransposedConv2dSpec
    h: TransposedAxisPlan
    w: TransposedAxisPlan
    layout: str = "NCHW"

    block = property(lambda self: (1, 1))  # the input stays plain
    out_block = property(lambda self: (self.h.stride, self.w.stride))
    in_channels = property(lambda self: self.spec.in_channels)
    out_channels = property(lambda self: self.spec.out_channels * self.h.stride * self.w.stride)
    kernel_hw = property(lambda self: (self.h.conv_kernel, self.w.conv_kernel))
    strides = property(lambda self: (1, 1))
    conv_out_hw = property(lambda self: (self.h.conv_out, self.w.conv_out))
    crop_in = property(lambda self: (self.h.crop_in, self.w.crop_in))

    @property
    def padding(self) -> tuple[int, int, int, int]:
        return (self.h.conv_pad[0], self.w.conv_pad[0], self.h.conv_pad[1], self.w.conv_pad[1])

    @property
    def out_domain(self) -> Domain:
        clean = self.h.exact_out and self.w.exact_out
        return Domain(self.out_block, (self.h.offset_out, self.w.offset_out), self.spec.out_hw, clean)

    def executed_macs(self, lane_width: int = 32) -> int:
        return executed_macs(self.spec.batch, self.conv_out_hw, self.kernel_hw, self.in_channels, self.out_channels, lane_width)

    def exit_bytes(self) -> int:
        return self.out_domain.leave_bytes(self.spec.batch, self.spec.out_channels, self.spec.itemsize, self.layout)

    def cost(self, model: CostModel = CostModel()) -> float:
        return self.executed_macs(model.lane_width) + model.move_cost * self.exit_bytes()

    def fold_weight(self, weight: np.ndarray) -> np.ndarray:
        """IOHW transposed-conv weight -> OIHW weight of the stride-1 conv."""
        c, o, kh, kw = weight.shape
        if (c, o, (kh, kw)) != (self.spec.in_channels, self.spec.out_channels, self.spec.kernel_hw):
            raise ValueError(f"weight shape {weight.shape} does not match the transposed conv {self.spec}")
        (sh, sw), (khf, kwf) = self.out_block, self.kernel_hw
        folded = np.zeros((sh, sw, o, c, khf, kwf), dtype=weight.dtype)
        for (py, a, u), (px, b, v) in itertools.product(self.h.taps, self.w.taps):
            folded[py, px, :, :, u, v] = weight[:, :, a, b].T
        return folded.reshape(self.out_channels, c, khf, kwf)

    def run_s2d(self, x: np.ndarray, weight: np.ndarray, layout: str = "NCHW") -> np.ndarray:
        """The stride-1 conv in numpy; the result lives in ``out_domain``."""
        hax, wax, _ = spatial_axes(layout)
        for axis, (front, back) in ((hax, self.h.crop_in), (wax, self.w.crop_in)):
            x = np.take(x, range(front, x.shape[axis] - back), axis=axis)
        if layout == "NHWC":
            x = x.transpose(0, 3, 1, 2)
        y = conv2d_nchw(x, self.fold_weight(weight), (1, 1), self.padding)
        return y.transpose(0, 2, 3, 1) if layout == "NHWC" else y

    def run(self, x: np.ndarray, weight: np.ndarray, layout: str = "NCHW") -> np.ndarray:
        return self.out_domain.leave(self.run_s2d(x, weight, layout), layout)


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

