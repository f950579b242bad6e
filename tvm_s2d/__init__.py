"""tvm-s2d: exact space-to-depth rewriting of low-channel convolutions for Apache TVM.

``import tvm_s2d`` registers the Relax pipeline ``"s2d"`` (see ``pipeline.py``).
"""

from . import pipeline  # registers "s2d"
from .geometry import Conv2dSpec, Unsupported
from .onnx_import import ModelError, from_onnx
from .passes import SpaceToDepthConv2d
from .report import Report, explain

__all__ = ["Conv2dSpec", "ModelError", "Report", "SpaceToDepthConv2d", "Unsupported", "explain", "from_onnx", "pipeline"]
