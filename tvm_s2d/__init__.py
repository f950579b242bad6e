"""tvm-s2d: exact space-to-depth rewriting of low-channel convolutions for Apache TVM.

``import tvm_s2d`` registers the Relax pipeline ``"s2d"`` (see ``pipeline.py``).
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("tvm-s2d")
except PackageNotFoundError:  # run from a source tree that is not installed
    __version__ = "0.1.0+source"

from . import pipeline  # registers "s2d"
from .geometry import Conv2dSpec, Unsupported
from .onnx_import import ModelError, from_onnx
from .passes import SpaceToDepthConv2d
from .report import Report, explain

__all__ = ["__version__", "Conv2dSpec", "ModelError", "Report", "SpaceToDepthConv2d", "Unsupported", "explain", "from_onnx", "pipeline"]
