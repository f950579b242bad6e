"""HVX schedules and kernels for Hexagon (v66, 128-byte vectors), one module a concern:

* ``intrinsics``: the two ``vrmpy`` tensor intrinsics (one generator, one registry block) and
  the helpers that call HVX instructions from TVMScript;
* ``lanes``: the channel-in-lanes conv (``PackedConv``: output channels in the lanes,
  ``vrmpyub`` with the weights in the vector) and its window-offsets kernel;
* ``width``: the width-vectorized conv (``WidthConv``: 32 output pixels in the lanes) and
  its input layout change on ``vdeal``;
* ``movement``: pads and 2x2 space-to-depth / depth-to-space of uint8 NHWC tensors;
* ``lookup``: 256-entry byte table lookups (``IntegerTables``' activations) on ``vlut32``;
* ``mapping``: which mapping computes a conv (``mapped_conv``, ``default_mapping``), and the
  signature tuning records name a conv by.
"""

from .intrinsics import LANES, DEPTH, vrmpy_intrinsic, VRMPY_LANES, VRMPY_BY_SCALAR, INTRINSICS, hvx, deal, opaque_vector, roundup
from .mapping import MAPPINGS, mapped_conv, schedule_mapping, default_mapping, conv_signature
from .lanes import WEIGHT_OFFSET, PackedConv, schedule_vrmpy, window_offsets
from .width import WidthConv, schedule_width_vrmpy, channel_groups_apply, deal_channel_groups, copy_channel_groups, \
    dealt_channels, input_layout, padded_layout
from .lookup import LUT_DTYPES, arrange_table, lookup_table, plain_lookup_table
from .movement import pad_rows_apply, pad_rows, pad_pixels_apply, pad_pixels, pad_channels_apply, pad_channels, \
    shuffles_apply, copy_space_to_depth, shuffle_space_to_depth, deal_depth_to_space

__all__ = [
    "DEPTH",
    "INTRINSICS",
    "LANES",
    "LUT_DTYPES",
    "MAPPINGS",
    "PackedConv",
    "VRMPY_BY_SCALAR",
    "VRMPY_LANES",
    "WEIGHT_OFFSET",
    "WidthConv",
    "arrange_table",
    "channel_groups_apply",
    "conv_signature",
    "copy_channel_groups",
    "copy_space_to_depth",
    "deal",
    "deal_channel_groups",
    "dealt_channels",
    "input_layout",
    "padded_layout",
    "deal_depth_to_space",
    "default_mapping",
    "hvx",
    "lookup_table",
    "mapped_conv",
    "opaque_vector",
    "pad_pixels",
    "pad_pixels_apply",
    "pad_channels_apply",
    "pad_channels",
    "pad_rows",
    "pad_rows_apply",
    "plain_lookup_table",
    "roundup",
    "schedule_mapping",
    "schedule_vrmpy",
    "schedule_width_vrmpy",
    "shuffle_space_to_depth",
    "shuffles_apply",
    "vrmpy_intrinsic",
    "window_offsets",
]
