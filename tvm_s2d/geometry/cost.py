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

    @property
    def unit(self) -> str:
        """What its costs count (the report's refusals say it)."""
        return f"executed MACs on {self.lane_width}-channel lanes"

    def conv_cost(self, spec, layout: str = "NCHW") -> float:
        """The estimated cost of ``spec`` (a ``conv.ConvShape``) as it is, in ``layout`` (the
        width-stride charge is NCHW's: NHWC vectors hold channels, a stride gathers nothing)."""
        gathers = layout == "NCHW" and spec.strides[1] > 1 and (self.strided_width_channels is None
                                                                or spec.in_channels <= self.strided_width_channels)
        factor = self.strided_width if gathers else 1.0
        return spec.executed_macs(self.lane_width) * factor

    def plan_cost(self, plan) -> float:
        """The estimated cost of a rewrite ``plan`` (``S2DConvPlan`` or ``TransposedConvPlan``):
        its conv's executed MACs plus the data movement into and out of the domain."""
        moved = getattr(plan, "entry_bytes", lambda: 0)() + plan.exit_bytes()
        return plan.executed_macs(self.lane_width) + self.move_cost * moved

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


# ---- HVX: packets, per mapping --------------------------------------------------------------
#
# Measured on the emulator (results/hexagon_exhaustive.jsonl: every block x mapping x knob of
# five layers at two scales): a conv kernel executes 0.55-0.7 packets per ``vrmpy`` with
# channels in the lanes, 0.62-0.9 width-vectorized; the 2x2 shuffles move a byte in about
# 1/50 of a packet where two pixels' channels divide a vector, the copies of other blocks in
# 0.6-1 (S2D) and 0.06-0.4 (D2S). Strided convs in the lanes ran 0.9-1.07 then; with session
# 14-15's kernels 0.58-0.62 (ResNet-18's 3x3/2 at 24 and 12 pixels, its 7x7/2 stem), so a
# stride no longer costs extra, and rewriting ResNet-18's 3x3/2 convs to 3x2 ones on twice
# the channels (1.33x the ``vrmpy``) cost it 80k packets (1.76M -> 1.84M).
HVX_PACKETS_PER_VRMPY = {"lanes": 0.6, "width": 0.7}
# Not counted: each int32 vector of 32 outputs a conv writes costs its requantization and store,
# 3.2-3.7 packets, so a channel-in-lanes conv of 16 outputs pays for 32 lanes (a stem's S2D
# output of 2 x 16 halves it: 23.3k -> 21.7k packets). Counting it (3.5 a vector) rewrote the
# 8-16 channel convs of small residual graphs, whose integer adds then met a D2S and fell to
# scalar code (tests/test_pool_concat.py, test_softmax.py, test_tables.py), which the model does
# not price.
HVX_PACKETS_PER_BYTE = {"shuffle": 0.02, "s2d copy": 0.8, "d2s copy": 0.25}


def hvx_vrmpy(mapping: str, batch: int, out_hw, kernel_hw, cin: int, cout: int) -> int:
    """``vrmpy`` instructions of a conv in an HVX mapping: channel-in-lanes pads the output
    channels to 32, width-vectorized the output width; both take input channels 4 at a time."""
    taps = kernel_hw[0] * kernel_hw[1] * ceil_div(cin, 4)
    if mapping == "lanes":
        return batch * out_hw[0] * out_hw[1] * ceil_div(cout, 32) * taps
    return batch * out_hw[0] * ceil_div(out_hw[1], 32) * cout * taps


def hvx_conv_packets(batch: int, out_hw, kernel_hw, cin: int, cout: int, strides) -> dict[str, float]:
    """Estimated packets of a conv's kernel in each HVX mapping it can run in (width: stride 1
    only)."""
    packets = {"lanes": hvx_vrmpy("lanes", batch, out_hw, kernel_hw, cin, cout) * HVX_PACKETS_PER_VRMPY["lanes"]}
    if tuple(strides) == (1, 1):
        packets["width"] = hvx_vrmpy("width", batch, out_hw, kernel_hw, cin, cout) * HVX_PACKETS_PER_VRMPY["width"]
    return packets


def shuffles_move(channels: int) -> bool:
    """Whether a 2x2 S2D / D2S of ``channels`` channels runs on the HVX shuffles (two pixels'
    channels divide a 128-byte vector)."""
    return 128 % (2 * channels) == 0


@dataclass(frozen=True)
class HVXCostModel(CostModel):
    """Estimated packets on HVX (v66, 128-byte vectors), the default for Hexagon targets: each
    form of a conv (the original, each S2D block) in its cheaper mapping (channel-in-lanes or
    width-vectorized), plus its data movement on the shuffles or copies. ``lane_width`` stays
    32 for the report's lane columns; ``CostModel(lane_width=32)`` is the HTP (HMX-style)
    model, analytic: QEMU does not emulate HTP."""

    unit = "estimated HVX packets"

    def conv_cost(self, spec, layout: str = "NHWC") -> float:
        return min(hvx_conv_packets(spec.batch, spec.out_hw, spec.kernel_hw, spec.in_channels, spec.out_channels,
                                    spec.strides).values())

    candidates: tuple = ((2, 2), (1, 2), (2, 1), (1, 4), (4, 1), (3, 3), (4, 4))

    def plan_cost(self, plan) -> float:
        """The plan's conv in its cheaper mapping, plus its movement; the HVX kernels work in
        NHWC, where a block of one row is a reshape (free) unless the input needs aligning."""
        spec = plan.spec
        conv = min(hvx_conv_packets(spec.batch, plan.conv_out_hw, plan.kernel_hw, plan.in_channels, plan.out_channels,
                                    plan.strides).values())
        aligned = getattr(plan, "align", ((0, 0), (0, 0))) == ((0, 0), (0, 0))
        entry = 0 if plan.block[0] == 1 and aligned else getattr(plan, "entry_bytes", lambda: 0)()
        exit_ = 0 if plan.out_block[0] == 1 and (plan.out_domain is None or plan.out_domain.exact) else plan.exit_bytes()
        s2d_rate = HVX_PACKETS_PER_BYTE["shuffle" if plan.block == (2, 2) and shuffles_move(spec.in_channels)
                                        else "s2d copy"]
        d2s_rate = HVX_PACKETS_PER_BYTE["shuffle" if plan.out_block == (2, 2) and shuffles_move(spec.out_channels)
                                        else "d2s copy"]
        return conv + s2d_rate * entry + d2s_rate * exit_
