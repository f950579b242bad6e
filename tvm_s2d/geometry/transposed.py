"""Transposed convolution with stride ``s`` = a stride-1 conv with ``s*s`` times the output
channels, then depth-to-space (``TransposedConv2dSpec``, ``TransposedConvPlan``).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from .conv import ConvShape
from .cost import CostModel, executed_macs
from .domain import Domain
from .layout import Unsupported, ceil_div, spatial_axes
from .reference import conv2d_nchw


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
        return ceil_div(self.out_size + self.offset_out, self.stride)

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
        return model.plan_cost(self)

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
