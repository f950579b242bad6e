"""Relax passes of tvm-s2d, one pass per file."""

from .cpu_layout import CpuLayout
from .hexagon_convs import HexagonConvs
from .hexagon_layout import HexagonLayout
from .hexagon_movement import HexagonMovement
from .hexagon_requantize import HexagonRequantize
from .qdq_conv_to_integer import QDQConvToInteger
from .schedule_convs import ScheduleConvs
from .space_to_depth_conv2d import PASS_NAME, SpaceToDepthConv2d

__all__ = ["CpuLayout", "HexagonConvs", "HexagonLayout", "HexagonMovement", "HexagonRequantize", "PASS_NAME", "QDQConvToInteger",
           "ScheduleConvs", "SpaceToDepthConv2d"]
