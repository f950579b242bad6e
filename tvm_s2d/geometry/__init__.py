"""Exact space-to-depth (S2D) geometry, in numpy only.

Everything the rewrite needs to know about shapes, weights and costs lives here; the Relax
passes only translate a plan from this package into graph operations. One module a concern:

* ``layout``: blocks, S2D / D2S of arrays and their reshape / transpose steps, kernel
  layouts, ``Unsupported`` (a refusal with its reason);
* ``axis``: how one spatial axis of a conv is rewritten (``AxisPlan``; the formulas are in
  its docstring);
* ``domain``: a tensor kept in the S2D domain between layers (``Domain``);
* ``cost``: the cost model (executed MACs on lanes plus data movement);
* ``conv``: a whole conv (``Conv2dSpec``), its plan (``S2DConvPlan``), ``choose_block``;
* ``transposed``: transposed convs as stride-1 convs then D2S;
* ``reference``: numpy reference convolutions.

Conventions
-----------
* A block is ``(bh, bw)``: rows and columns gathered into channels.
* S2D channel order is ONNX ``SpaceToDepth`` / ``DepthToSpace`` mode **DCR** (block position
  major, channel minor), in NCHW and NHWC alike: channel ``(dy * bw + dx) * C + c`` of the
  S2D pixel ``(I, J)`` holds channel ``c`` of the pixel ``(I * bh + dy, J * bw + dx)``.
* A convolution is described in canonical NCHW activations and OIHW weights; other layouts
  are transposes of them (``kernel_to_oihw`` / ``oihw_to_kernel`` for weights,
  ``spatial_axes`` for activations). Padding is ``(top, left, bottom, right)`` as in
  ``relax.nn.conv2d``.
"""

from .axis import AxisPlan
from .conv import Conv2dSpec, ConvShape, S2DConvPlan, choose_block
from .cost import CostModel, HVXCostModel, executed_macs, hvx_conv_packets, hvx_vrmpy, shuffles_move
from .domain import Domain
from .layout import (
    CANDIDATE_BLOCKS,
    LAYOUTS,
    MAX_BLOCK,
    MAX_FOLDED_WEIGHT_BYTES,
    Unsupported,
    ceil_div,
    channel_shuffle,
    d2s_steps,
    depth_to_space,
    is_pure_reshape,
    kernel_to_oihw,
    movement_is_free,
    nchw_to,
    normalize_block,
    oihw_to_kernel,
    s2d_steps,
    shuffle_steps,
    space_to_depth,
    spatial_axes,
)
from .reference import conv2d_nchw, conv_transpose2d_nchw
from .transposed import TransposedAxisPlan, TransposedConv2dSpec, TransposedConvPlan

__all__ = [
    "AxisPlan",
    "CANDIDATE_BLOCKS",
    "Conv2dSpec",
    "ConvShape",
    "CostModel",
    "Domain",
    "HVXCostModel",
    "LAYOUTS",
    "MAX_BLOCK",
    "MAX_FOLDED_WEIGHT_BYTES",
    "S2DConvPlan",
    "TransposedAxisPlan",
    "TransposedConv2dSpec",
    "TransposedConvPlan",
    "Unsupported",
    "ceil_div",
    "channel_shuffle",
    "choose_block",
    "conv2d_nchw",
    "conv_transpose2d_nchw",
    "d2s_steps",
    "depth_to_space",
    "executed_macs",
    "hvx_conv_packets",
    "hvx_vrmpy",
    "is_pure_reshape",
    "kernel_to_oihw",
    "movement_is_free",
    "nchw_to",
    "normalize_block",
    "oihw_to_kernel",
    "s2d_steps",
    "shuffle_steps",
    "shuffles_move",
    "space_to_depth",
    "spatial_axes",
]
