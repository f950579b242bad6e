"""``CpuLayout``: each conv on an LLVM CPU target in the layout whose vectors it fills.

The CPU conv schedule (``schedules/x86.py``) puts the SIMD lanes on the innermost output axis:
the width in NCHW, the output channels in NHWC, in whole power-of-two vectors. A 56-pixel row
fills vectors of 8 of AVX-512's 16 lanes, a 28-pixel row vectors of 4, while 32 or 64 output
channels fill them all (measured on a 32->32 3x3 conv at 56x56: 0.29 ms NCHW, 0.19 ms NHWC;
72->36 1x1 at 112x112: 0.34 ms NCHW, 0.67 ms NHWC). A width stride makes NCHW vectors gather
(a strided depthwise conv: 0.09 ms NCHW, 0.03 ms NHWC). So each conv gets NHWC (HWIO weights,
folded at compile time) when its NHWC vectors are fuller, and keeps NCHW otherwise; TVM's
``ConvertLayout`` carries the layout through the ops between convs that know how, and puts
a transpose where two layouts meet. Image stems (at most ``STEM_CHANNELS`` input channels)
keep NCHW: the space-to-depth rewrite serves them there.

Runs in the ``"s2d"`` pipeline after the preparation, before the rewrite; other targets and
models without NCHW convs are left as they are. ``disabled_pass=["CpuLayout"]``: the model's
own layout.
"""

from __future__ import annotations

import tvm
from tvm import relax

from ..schedules.x86 import vector_width
from ..targets import CPU_STRIDED_CHANNELS, is_cpu, vector_lanes
from .outcome import Outcome, applied, refused

PASS_NAME = "CpuLayout"
STEM_CHANNELS = CPU_STRIDED_CHANNELS
GATHER_PENALTY = 0.5  # a width stride's gathers, on NCHW vectors


def filled(n: int, lanes: int) -> float:
    """The fraction of a vector's lanes the schedule fills along an axis of ``n``: whole
    power-of-two vectors of at least 4 lanes, else one vector of any length (half as fast)."""
    width = vector_width(n, lanes)
    if width >= min(4, lanes):
        return width / lanes
    return min(n, lanes) / lanes / 2


def choose(out_channels: int, groups: int, out_width: int, in_channels: int, stride_w: int,
           lanes: int) -> tuple[str, str]:
    """``("NHWC" | "NCHW", why)`` for one NCHW conv."""
    if in_channels <= STEM_CHANNELS:
        return "NCHW", f"{in_channels} input channels: an image stem, the space-to-depth rewrite's"
    per_group = out_channels if groups in (1, out_channels) else out_channels // groups
    nhwc = filled(per_group, lanes)
    nchw = filled(out_width, lanes) * (GATHER_PENALTY if stride_w > 1 else 1.0)
    why = f"lanes filled: NHWC {nhwc:.2f} ({per_group} channels), NCHW {nchw:.2f} ({out_width} pixels" \
          + (f", stride {stride_w}" if stride_w > 1 else "") + ")"
    return ("NHWC" if nhwc > nchw else "NCHW"), why


@tvm.transform.module_pass(opt_level=0, name=PASS_NAME)
class CpuLayout:
    def __init__(self, target: tvm.target.Target | None = None):
        self.target = target
        self.outcomes: list[Outcome] = []

    def transform_module(self, mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        self.outcomes = []
        target = self.target or tvm.target.Target.current(allow_none=True)
        if not is_cpu(target):
            return mod
        lanes = vector_lanes(target)
        converts = False
        for name, call in _convs(mod):
            layout, why = _choice(call, lanes)
            if layout == "NHWC":
                converts = True
                applied(self.outcomes, name, f"NCHW -> NHWC, {why}")
            else:
                refused(self.outcomes, name, f"keeps {call.attrs.data_layout}: {why}" if why else
                        f"keeps {call.attrs.data_layout}")
        if not converts:
            return mod
        nhwc = {"relax.nn.conv2d": ["NHWC", "HWIO"]}

        def layout_of(call: relax.Call):
            if getattr(call.op, "name", "") != "relax.nn.conv2d":
                return {}
            return nhwc if _choice(call, lanes)[0] == "NHWC" else {}

        mod = relax.transform.ConvertLayout({}, layout_of)(mod)
        return relax.transform.FoldConstant()(mod)  # the weights' transposes


def _choice(call: relax.Call, lanes: int) -> tuple[str, str]:
    attrs = call.attrs
    if str(attrs.data_layout) != "NCHW" or str(attrs.kernel_layout) != "OIHW" or str(attrs.out_layout) != "NCHW":
        return "keep", ""
    data, out = call.args[0].ty.shape, call.ty.shape
    if not all(isinstance(d, tvm.tirx.IntImm) for d in (*data, *out)):
        return "keep", "dynamic shape"
    return choose(int(out[1]), int(attrs.groups), int(out[3]), int(data[1]), int(attrs.strides[1]), lanes)


def _convs(mod: tvm.IRModule) -> list[tuple[str, relax.Call]]:
    found = []
    for _, func in mod.functions_items():
        if not isinstance(func, relax.Function):
            continue
        for var, value in relax.analysis.get_var2val(func).items():
            if isinstance(value, relax.Call) and getattr(value.op, "name", "") == "relax.nn.conv2d":
                found.append((var.name, value))
    return found
