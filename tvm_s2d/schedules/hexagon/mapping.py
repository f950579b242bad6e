"""Which HVX mapping computes a conv: the two mappings, their knobs, the default choice
without a tuning record, and the signature a record names a conv by."""

from __future__ import annotations

import tvm

from ...geometry import Unsupported, hvx_conv_packets
from .intrinsics import DEPTH
from .lanes import PackedConv
from .width import WidthConv, schedule_width_vrmpy
from ..memo import kernel_cache

#: The HVX mappings of a conv, and the name of each one's knob.
MAPPINGS = {"lanes": "pixels", "width": "channels"}
#: The knob each mapping runs with without a tuning record (lanes: ``lanes.block_pixels``).
DEFAULT_KNOBS = {"lanes": 8, "width": 8}


def mapped_conv(mapping: str, batch: int, in_hw, cin: int, cout: int, kernel_hw, strides, padding):
    """The packed conv (``PackedConv`` for "lanes", ``WidthConv`` for "width") computing a conv
    on an ``in_hw`` input with ``padding``; ``Unsupported`` for the width mapping of a strided conv."""
    t, l, b, r = padding
    padded = (in_hw[0] + t + b, in_hw[1] + l + r)
    if mapping == "lanes":
        return PackedConv(batch, padded, cin, cout, tuple(kernel_hw), tuple(strides))
    if mapping == "width":
        if tuple(strides) != (1, 1):
            raise Unsupported(f"the width mapping needs a stride-1 conv, this one has strides {tuple(strides)}")
        out_hw = (padded[0] - kernel_hw[0] + 1, padded[1] - kernel_hw[1] + 1)
        return WidthConv(batch, out_hw, cin, cout, tuple(kernel_hw))
    raise ValueError(f"mapping must be one of {', '.join(MAPPINGS)}, got {mapping!r}")


@kernel_cache
def schedule_mapping(conv, mapping: str, knob: int) -> tvm.tirx.PrimFunc:
    """``conv`` (``mapped_conv(mapping, ...)``)'s ``compute()`` on its ``vrmpy`` form with its knob."""
    return conv.hvx_kernel(pixels=knob) if mapping == "lanes" else schedule_width_vrmpy(conv.compute(), channels=knob)


#: Packets a byte of the input costs the width mapping's layout change (``[N, C/4, H, W, 4]``,
#: and the pad to whole 32-column vectors before it where the row is not), which the
#: channel-in-lanes mapping reads as it is. Measured (``emulator.layer.run_layer``): 0.036-0.066
#: on 1x1 convs of 16-48 channels at 24x24 and 48x48, 0.045 on a 3x3 8 -> 16 at 48x48.
WIDTH_LAYOUT_PACKETS_PER_BYTE = 0.05


def default_mapping(out_channels: int, out_width: int, strides, taps: int = 1) -> tuple[str, int]:
    """The HVX mapping and knob used without a tuning record: the one with fewer estimated
    packets on an output row of 4 input channels (``geometry.hvx_conv_packets``: channel-in-lanes
    pads the output channels to 32, width-vectorized the output width; width for stride-1 convs
    only; on a tie channel-in-lanes), the width mapping's with its input's layout change
    (``taps``: the kernel's, which the conv's ``vrmpy`` scale with and the layout change does
    not), with its default knob (``results/hexagon_exhaustive.jsonl``). Without the layout
    change, 1x1 convs to 16 channels took the width mapping and ran 1.07-1.23x the packets of
    the channel-in-lanes one (conv, layout and requantization; MnasNet's 24x24 48 -> 16)."""
    packets = hvx_conv_packets(1, (1, out_width), (1, taps), DEPTH, out_channels, strides)
    if "width" in packets:
        packets["width"] += WIDTH_LAYOUT_PACKETS_PER_BYTE * out_width * DEPTH
    mapping = min(packets, key=lambda m: (packets[m], m != "lanes"))
    return mapping, DEFAULT_KNOBS[mapping]


def conv_signature(batch: int, in_hw, in_channels: int, out_channels: int, kernel_hw, strides, padding) -> str:
    """What identifies the conv an HVX kernel computes (a tuning record names it, so the pass
    that builds kernels finds the record of the conv it is building)."""
    return (f"{batch}x{in_hw[0]}x{in_hw[1]}x{in_channels}:{out_channels}:{kernel_hw[0]}x{kernel_hw[1]}"
            f":s{strides[0]}x{strides[1]}:p{'x'.join(str(p) for p in padding)}")
