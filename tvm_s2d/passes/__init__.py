"""Relax passes of tvm-s2d, grouped by concern: ``quantized/`` (integer arithmetic), ``s2d/``
(the rewrite), ``hexagon/`` and ``cpu/`` (each target's layouts and kernels); beside them the
Relax toolkit every pass matches and traverses with (``relax_tools``), the refusal protocol
(``outcome``), the preparation (``prepare``) and its float rewrites: powers as square roots
(``power_as_roots``), dropouts as the identity (``remove_dropout``)."""

from .cpu.dense import CpuDense
from .cpu.integer_convs import CpuIntegerConvs
from .cpu.layout import CpuLayout
from .cpu.pointwise_rows import CpuPointwiseRows
from .cpu.requantize_int32 import CpuRequantizeInt32, NarrowMultipliers
from .cpu.resize import CpuResize
from .cpu.schedule_convs import ScheduleConvs
from .cpu.tile_width import CpuTileWidth
from .cpu.vector_math import VectorMath
from .hexagon.convs import HexagonConvs
from .hexagon.layout import HexagonLayout
from .hexagon.movement import HexagonMovement
from .hexagon.requantize import HexagonRequantize
from .power_as_roots import PowerAsRoots
from .quantized.qdq_conv_to_integer import QDQConvToInteger
from .remove_dropout import RemoveDropout
from .s2d.space_to_depth_conv2d import PASS_NAME, SpaceToDepthConv2d

__all__ = ["CpuDense", "CpuIntegerConvs", "CpuLayout", "CpuPointwiseRows", "CpuRequantizeInt32", "CpuResize", "CpuTileWidth",
           "HexagonConvs", "HexagonLayout", "HexagonMovement", "HexagonRequantize", "NarrowMultipliers", "PASS_NAME", "PowerAsRoots",
           "QDQConvToInteger", "RemoveDropout", "ScheduleConvs", "SpaceToDepthConv2d", "VectorMath"]
