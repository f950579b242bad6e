"""Relax passes of tvm-s2d, one pass per file."""

from .space_to_depth_conv2d import PASS_NAME, SpaceToDepthConv2d

__all__ = ["PASS_NAME", "SpaceToDepthConv2d"]
