"""``CpuTileWidth``: NHWC float convs computed on rows of whole register tiles.

On AVX2 (16 vector registers) the NHWC conv schedule keeps a register tile of 1-5 channel
vectors x a few pixels of one output row, the pixels a divisor of the row
(``schedules.x86_tiles.few_registers_tiles``): two vectors x 4-5 pixels ran at 165-190 GFLOP/s on
this CPU, the tiles a 13- or 27-pixel row allows (one vector x 13, four vectors x 1) at 85-90.
Where a few more pixels make a row of whole good tiles (``schedules.x86_tiles.padded_width``: at
most ``MAX_WIDTH_PADDING`` times the width, a gain of ``MIN_WIDTH_GAIN`` a real pixel), the
conv is computed that wide and the extra pixels sliced off:

    conv2d(x, W, padding=(t, l, b, r))  ->  conv2d(x, W, padding=(t, l, b, r + e * stride))[:, :, :W_out]

``e`` more output columns read zeros of the right padding (and the last real columns); the
real outputs sum the same products in the same order: bit-identical. The padding rides on the
conv's own padded input rows (copied per row by the schedule), the slice is one copy of the
output. Measured on SqueezeNet 1.1's convs at 224 (13x13x64->256 3x3: 0.56 -> 0.32 ms).

Runs on LLVM CPU targets in the ``cpu`` stage, after the layout (it takes the convs ``CpuLayout``
put in NHWC). Left without an outcome: other layouts, integer and grouped convs (their kernels
tile otherwise), AVX-512 targets (28 accumulators: tiles of any row fill them), rows whose tiles
are good already. ``disabled_pass=["CpuTileWidth"]``: every conv on its own width.
"""

from __future__ import annotations

import tvm
from tvm import relax
from tvm.relax.dpl import is_op, wildcard

from ...schedules import x86_tiles
from ..relax_tools import static_shape
from ..rules import CpuRuleSet, Rule

PASS_NAME = "CpuTileWidth"


@tvm.transform.module_pass(opt_level=0, name=PASS_NAME)
class CpuTileWidth(CpuRuleSet):
    """NHWC float convs on rows of whole register tiles (the module doc)."""

    def __init__(self, target: tvm.target.Target | None = None):
        super().__init__([Rule(is_op("relax.nn.conv2d")(wildcard(), wildcard()), self._decide)], target)

    def _decide(self, conv: relax.Call, _matches):
        attrs = conv.attrs
        data, out = static_shape(conv.args[0]), static_shape(conv)
        if (str(attrs.data_layout) != "NHWC" or str(attrs.out_layout) != "NHWC" or int(attrs.groups) != 1
                or data is None or out is None or str(conv.ty.dtype) != "float32"):
            return None
        width, channels, pixels = out[2], out[3], x86_tiles.max_pixels(data[3])
        padded = x86_tiles.padded_width(channels, width, self.lanes, max_pixels=pixels)
        if padded == width:
            return None
        top, left, bottom, right = (int(p) for p in attrs.padding)
        stride = int(attrs.strides[1])
        wide = relax.op.nn.conv2d(conv.args[0], conv.args[1], strides=attrs.strides,
                                  padding=(top, left, bottom, right + (padded - width) * stride),
                                  dilation=attrs.dilation, groups=1, data_layout="NHWC",
                                  kernel_layout=str(attrs.kernel_layout), out_layout="NHWC", out_dtype=attrs.out_dtype)
        tile = x86_tiles.default_knobs("NHWC", channels, padded, self.lanes, max_pixels=pixels)
        return (relax.op.strided_slice(wide, axes=[2], begin=[0], end=[width]),
                f"{width}-pixel rows computed {padded} wide: tiles of {tile.tile_channels} channels x {tile.tile_width} pixels")
