"""A whole conv: its shape (``Conv2dSpec``), its exact S2D rewrite with the cheapest offsets
(``S2DConvPlan``: folded weights, movement in and out, cost, a numpy run), and the cost
model's choice of block (``choose_block``).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from .axis import AxisPlan
from .cost import CostModel, executed_macs
from .domain import Domain
from .layout import (
    CANDIDATE_BLOCKS,
    MAX_FOLDED_WEIGHT_BYTES,
    Unsupported,
    movement_is_free,
    nchw_to,
    normalize_block,
    s2d_steps,
    space_to_depth,
    spatial_axes,
)
from .reference import conv2d_nchw


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
        shape = nchw_to(self.layout, (self.spec.batch, self.spec.in_channels, *(b * self.block[i] for i, b in enumerate(self.s2d_hw))))
        aligned = self.align != ((0, 0), (0, 0))
        if not aligned and movement_is_free(shape, self.block, self.layout, s2d_steps):
            return 0
        return 2 * self.spec.input_bytes()

    def exit_bytes(self) -> int:
        """Bytes read and written to bring the output back to plain (D2S and crop)."""
        out = self.out_domain
        return 0 if out is None else out.leave_bytes(self.spec.batch, self.spec.out_channels, self.spec.itemsize, self.layout)

    def cost(self, model: CostModel = CostModel()) -> float:
        """The conv and data movement into and out of the domain, as ``model`` estimates them."""
        return model.plan_cost(self)

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



def choose_block(spec: Conv2dSpec, model: CostModel = CostModel(), candidates=None, layout: str = "NCHW") -> S2DConvPlan:
    """The cost model's choice: the valid block with the lowest ``cost`` (smallest on ties).

    Raises ``Unsupported`` when no block beats the conv as it is.
    """
    spec.require_dense()
    lane_width = model.lane_width
    before = model.conv_cost(spec, layout)
    plans, reasons = [], []
    for block in candidates or getattr(model, "candidates", CANDIDATE_BLOCKS):
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
        why = "NHWC vectors hold channels: a stride gathers nothing" if layout == "NHWC" else "NCHW vectors hold pixels"
        if spec.strides == (1, 1) or layout == "NHWC":
            raise Unsupported(f"no estimated gain with 1-channel lanes ({why}): S2D only adds zero taps and data"
                              " movement")
        raise Unsupported(f"no estimated gain with 1-channel lanes ({why}): best block {best.block[0]}x{best.block[1]}"
                          f" costs {best.cost(model):,.0f} vs {before:,.0f} {model.unit}")
    lanes = model.unit.startswith("executed MACs")  # a lane model (not the HVX packet model)
    if lanes and spec.in_channels >= lane_width:
        raise Unsupported(f"already enough channels ({spec.in_channels} input channels fill {lane_width}-wide lanes)")
    where = f"on {lane_width}-channel lanes" if lanes else "in HVX packets"
    raise Unsupported(
        f"no estimated gain {where} (best block {best.block[0]}x{best.block[1]}:"
        f" cost {best.cost(model):,.0f} vs {before:,.0f} {model.unit})"
    )
