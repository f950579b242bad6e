"""The cost model the rewrite decides by.

HTP rounds both channel counts of a conv up to multiples of 32 (the lane width); HVX
``vrmpy`` does the same for output channels. Executed multiply-accumulates are therefore
``batch * out_h * out_w * kh * kw * roundup(Ci, lane) * roundup(Co, lane)``, zero taps
included. Useful ones are those of the original conv; their ratio is the lane utilization.
Grouped convs (never rewritten, but reported) count as independent per-group convs, except
depthwise ones, which keep channels in lanes with no reduction: ``roundup(Co, lane)`` MACs
per tap and pixel.
"""

from __future__ import annotations

from dataclasses import dataclass

from .layout import ceil_div


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

    def conv_cost(self, spec) -> float:
        """The estimated cost of ``spec`` (a ``conv.ConvShape``) as it is."""
        gathers = spec.strides[1] > 1 and (self.strided_width_channels is None
                                           or spec.in_channels <= self.strided_width_channels)
        factor = self.strided_width if gathers else 1.0
        return spec.executed_macs(self.lane_width) * factor

    def __post_init__(self):
        if isinstance(self.lane_width, bool) or not isinstance(self.lane_width, int) or self.lane_width < 1:
            raise ValueError(f"lane_width must be a positive int, got {self.lane_width!r}")
        if not isinstance(self.move_cost, (int, float)) or isinstance(self.move_cost, bool) or not self.move_cost >= 0:
            raise ValueError(f"move_cost must be a number >= 0, got {self.move_cost!r}")



def executed_macs(batch, out_hw, kernel_hw, cin, cout, lane_width=32) -> int:
    """Multiply-accumulates executed with both channel counts padded to ``lane_width``."""
    def roundup(c):
        return ceil_div(c, lane_width) * lane_width

    return batch * out_hw[0] * out_hw[1] * kernel_hw[0] * kernel_hw[1] * roundup(cin) * roundup(cout)
