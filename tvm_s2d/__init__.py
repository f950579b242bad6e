"""tvm-s2d: exact space-to-depth rewriting of low-channel convolutions for Apache TVM.

``import tvm_s2d`` registers the Relax pipeline ``"s2d"``.
"""

from .geometry import Conv2dSpec, Unsupported
from .passes import SpaceToDepthConv2d

__all__ = ["Conv2dSpec", "SpaceToDepthConv2d", "Unsupported"]
