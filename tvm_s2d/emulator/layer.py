"""One conv layer on the Hexagon emulator, in one form: executed packets of its HVX kernels.

The layer runs as HVX computes it, uint8 activations x int8 weights -> int32 (a float layer is
measured in this quantized form, as it would be deployed on Hexagon), on seeded random data.
Forms:

* ``mapping="lanes"``: channel-in-lanes ``vrmpy`` (``PackedConv``; knob: output pixels per
  register block), the HTP-native mapping: 32 output channels per vector (its per-pixel
  window sums in a lane of its own or its offsets kernel, as the pipeline builds it, counted with the conv);
* ``mapping="width"``: width-vectorized vector-by-scalar ``vrmpy`` (``WidthConv``; knob: output
  channels sharing an activation vector), stride-1 convs only;
* around the conv, the kernels the pipeline puts there for that mapping: the width mapping's
  input layout change, and the requantization of the output to uint8 (NHWC; the width
  mapping's from its channel-major accumulators);
* with a ``block``: the space-to-depth conv (``Conv2dSpec.plan``) in that mapping, plus its
  S2D and D2S kernels (HVX shuffles for 2x2 blocks where whole vectors fit, else vectorized
  copies; none where the transform is a pure reshape, as width-to-depth is in NHWC).

Every kernel's output is checked bit-exact against numpy; a mismatch raises.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..geometry import Conv2dSpec, Unsupported, conv2d_nchw, d2s_steps, depth_to_space, is_pure_reshape, s2d_steps, \
    space_to_depth
from ..geometry.fixed_point import fixed_point, requantize
from ..schedules.hexagon import conv_signature, copy_space_to_depth, deal_depth_to_space, input_layout, mapped_conv, \
    schedule_mapping, shuffle_space_to_depth, shuffles_apply
from ..schedules.hexagon.fused import FUSED_CHANNELS, fused_weight, width_conv_requantized
from ..schedules.hexagon.layouts import requantize_channel_major_kernel, requantize_transpose_kernel
from ..schedules.hexagon.requantize import channel_constants, lane_constants, requantize_kernel
from .qemu import run_kernel

@dataclass(frozen=True)
class LayerRun:
    conv: int  # packets of the conv's kernels
    s2d: int = 0  # packets of the S2D kernel
    d2s: int = 0  # packets of the D2S kernel
    vrmpy: int = 0  # vrmpy instructions the conv executes
    signature: str = ""  # schedules.hexagon.conv_signature of the conv kernel
    layout: int = 0  # packets of the mapping's input layout kernel (the width mapping's vdeal)
    epilogue: int = 0  # packets of the requantization of the conv's output, in the mapping's layout

    @property
    def packets(self) -> int:
        return self.conv + self.s2d + self.d2s + self.layout + self.epilogue

    @property
    def ideal(self) -> int:
        """Two 128-MAC vrmpy per packet (the vector-by-scalar form's peak)."""
        return self.vrmpy // 2


def run_packed(conv, mapping: str, knob: int | None, x_packed: np.ndarray, w_packed: np.ndarray):
    """Run a packed conv (``mapped_conv``) under qemu: its per-pixel offsets kernel first where
    it has one (the channel-in-lanes mapping without ``PackedConv.sums``), then the conv
    (scheduled with ``knob``, or its plain loops with ``knob=None``). Returns the raw output and
    the packets of both."""
    operands, packets = [x_packed, w_packed], 0
    if mapping == "lanes" and not conv.sums:
        offsets = run_kernel(conv.window_offsets(hvx=knob is not None), [x_packed], [(conv.offsets_shape, "int32")],
                             name="offsets")
        operands.append(offsets.outputs[0])
        packets += offsets.packets
    func = conv.compute() if knob is None else schedule_mapping(conv, mapping, knob)
    run = run_kernel(func, operands, [(conv.output_shape, "int32")], name="conv")
    return run.outputs[0], packets + run.packets


def run_conv(x: np.ndarray, w: np.ndarray, strides, padding, mapping: str, knob: int) -> tuple[np.ndarray, LayerRun]:
    """``conv2d(x, w)`` (NCHW uint8, OIHW int8) in ``mapping`` under qemu: the NCHW int32 output
    and the run (packets, vrmpy count, signature; the kernels the pipeline puts around the
    mapping: its input layout change and the requantization of its output). Checked against
    numpy."""
    n, cin, h, wd = x.shape
    conv = mapped_conv(mapping, n, (h, wd), cin, w.shape[0], w.shape[2:], strides, padding)
    if mapping == "lanes":  # its window sums in a lane where the pipeline puts them there (HexagonConvs)
        conv = conv.summing()
    packed = conv.pack_input(x, padding)
    signature = conv_signature(n, (h, wd), cin, w.shape[0], w.shape[2:], tuple(strides), tuple(padding))
    layout = layout_packets(packed) if mapping == "width" else 0
    expected = conv2d_nchw(x, w, strides, padding)
    if mapping == "width" and w.shape[0] in FUSED_CHANNELS:  # conv and requantization in one kernel, as the pipeline builds it
        packets = fused_packets(packed, conv.pack_weight(w), expected)
        return expected, LayerRun(packets, vrmpy=conv.vrmpy_count, signature=signature, layout=layout)
    out, packets = run_packed(conv, mapping, knob, packed, conv.pack_weight(w))
    y = conv.unpack_output(out)
    if not (y == expected).all():
        raise AssertionError(f"{mapping} conv is not bit-exact under qemu-hexagon")
    epilogue = epilogue_packets(out, y.shape[3], mapping, w)
    return y, LayerRun(packets, vrmpy=conv.vrmpy_count, signature=signature, layout=layout, epilogue=epilogue)


def fused_packets(packed: np.ndarray, weight: np.ndarray, expected: np.ndarray) -> int:
    """Packets of the width-vectorized conv with its requantization in one kernel
    (``schedules.hexagon.fused``), checked against numpy's conv requantized."""
    channels, out_w = expected.shape[1], expected.shape[3]
    m, r = fixed_point(np.full(channels, _ratio(weight.reshape(channels, -1))))
    nhwc = requantize(expected.transpose(0, 2, 3, 1).astype(np.int64), m, r, 0, 0, 255, "uint8")
    w = fused_weight(weight)
    func = width_conv_requantized(packed.shape, w.shape, out_w, 0, 0, 255, "uint8")
    run = run_kernel(func, [packed, w, *channel_constants(0, m, r, channels)], [(nhwc.shape, "uint8")], name="fused")
    if not (run.outputs[0] == nhwc).all():
        raise AssertionError("fused conv and requantization kernel is not exact under qemu-hexagon")
    return run.packets


def _ratio(w: np.ndarray) -> float:
    """An output scale over the accumulator's that spreads the outputs over the uint8 range."""
    return 0.5 / max(np.abs(w.astype(np.int64)).sum(axis=1).max() * 255, 1)


def layout_packets(packed: np.ndarray) -> int:
    """Packets of the width mapping's input layout change (NHWC -> ``[N, C/4, H, W, 4]``, the
    HVX deal where it applies, else TVM's lowering of the copy), on the packed input; checked."""
    n, groups, h, w, depth = packed.shape
    nhwc = np.ascontiguousarray(packed.transpose(0, 2, 3, 1, 4).reshape(n, h, w, groups * depth))
    channels, func = input_layout(nhwc.shape, groups * depth)  # as the pipeline lays it out
    nhwc = np.pad(nhwc, [(0, 0)] * 3 + [(0, channels - groups * depth)])
    run = run_kernel(func, [nhwc], [(packed.shape, "uint8")], name="layout")
    if not (run.outputs[0] == packed).all():
        raise AssertionError("layout kernel is not exact under qemu-hexagon")
    return run.packets


def epilogue_packets(out: np.ndarray, out_w: int, mapping: str, w: np.ndarray) -> int:
    """Packets of the requantization to uint8 of a mapping's raw conv output ``out`` as the
    pipeline computes it (``passes.hexagon.requantize``): the width mapping's channel-major
    accumulators read and written NHWC (3-channel and other outputs that are not 4 x k
    channels written NCHW), the channel-in-lanes mapping's NHWC ones; checked against numpy."""
    channels = w.shape[0]
    m, r = fixed_point(np.full(channels, _ratio(w.reshape(channels, -1))))
    if mapping == "width":
        acc, nhwc = out, out.transpose(0, 2, 3, 1)[:, :, :out_w]
        kernel = requantize_transpose_kernel if channels % 4 == 0 else requantize_channel_major_kernel
        func, constants = kernel(acc.shape, out_w, 0, 0, 255, "uint8"), channel_constants(0, m, r, channels)
    else:
        n, oh, ow = out.shape[:3]
        acc = nhwc = np.ascontiguousarray(out.reshape(n, oh, ow, -1)[..., :channels])
        func, constants = requantize_kernel(acc.shape, 0, 0, 255, "uint8"), lane_constants(0, m, r, channels)
    expected = requantize(nhwc.astype(np.int64), m, r, 0, 0, 255, "uint8")
    if mapping == "width" and channels % 4:
        expected = np.ascontiguousarray(expected.transpose(0, 3, 1, 2))
    run = run_kernel(func, [np.ascontiguousarray(acc), *constants], [(expected.shape, "uint8")], name="requantize")
    if not (run.outputs[0] == expected).all():
        raise AssertionError("requantization kernel is not exact under qemu-hexagon")
    return run.packets


def s2d_packets(x_nhwc: np.ndarray, block) -> int:
    """Packets of the NHWC space-to-depth kernel (0 when it is a pure reshape; HVX shuffles
    where they apply, else a vectorized copy); checked."""
    split, perm, out = s2d_steps(x_nhwc.shape, block, "NHWC")
    if is_pure_reshape(split, perm):
        return 0
    if shuffles_apply(x_nhwc.shape, block):
        func = shuffle_space_to_depth(x_nhwc.shape)
    else:
        func = copy_space_to_depth(x_nhwc.shape, block, vectorize=True)
    run = run_kernel(func, [x_nhwc], [(out, "uint8")], name="s2d")
    if not (run.outputs[0] == space_to_depth(x_nhwc, block, "NHWC")).all():
        raise AssertionError("S2D kernel is not exact under qemu-hexagon")
    return run.packets


def d2s_packets(y_nhwc: np.ndarray, block) -> int:
    """Packets of the NHWC depth-to-space kernel on 8-bit data (in an int8 network both forms
    requantize before the next layer; values do not change the count); HVX deals where they
    apply, else a vectorized copy; checked."""
    y_nhwc = np.ascontiguousarray(y_nhwc.astype(np.uint8))
    split, perm, out = d2s_steps(y_nhwc.shape, block, "NHWC")
    if is_pure_reshape(split, perm):
        return 0
    if shuffles_apply(y_nhwc.shape, block, inverse=True):
        func = deal_depth_to_space(y_nhwc.shape)
    else:
        func = copy_space_to_depth(y_nhwc.shape, block, inverse=True, vectorize=True)
    run = run_kernel(func, [y_nhwc], [(out, "uint8")], name="d2s")
    if not (run.outputs[0] == depth_to_space(y_nhwc, block, "NHWC")).all():
        raise AssertionError("D2S kernel is not exact under qemu-hexagon")
    return run.packets


def layer_data(spec: Conv2dSpec, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (spec.batch, spec.in_channels, *spec.in_hw)).astype(np.uint8)
    w = rng.integers(-128, 128, (spec.out_channels, spec.in_channels, *spec.kernel_hw)).astype(np.int8)
    return x, w


def run_layer(spec: Conv2dSpec, block, mapping: str, knob: int, seed: int = 0) -> LayerRun:
    """Packets of ``spec`` in one form (``block`` None: the original conv). Raises
    ``Unsupported`` for a form that does not apply (dilation, width mapping of a strided conv,
    a block the rewrite refuses)."""
    if spec.dilation != (1, 1):
        raise Unsupported(f"the HVX conv kernels take no dilation (dilation {spec.dilation})")
    spec.require_dense()
    x, w = layer_data(spec, seed)
    expected = conv2d_nchw(x, w, spec.strides, spec.padding)
    if block is None:
        return run_conv(x, w, spec.strides, spec.padding, mapping, knob)[1]
    plan = spec.plan(block)
    aligned = plan.align_input(x)
    xs = space_to_depth(aligned, plan.block)[:, :, : plan.s2d_hw[0], : plan.s2d_hw[1]]
    moved_in = s2d_packets(np.ascontiguousarray(aligned.transpose(0, 2, 3, 1)), plan.block)
    y, conv = run_conv(xs, plan.fold_weight(w), plan.strides, plan.padding, mapping, knob)
    if not (plan.finish_output(y) == expected).all():
        raise AssertionError(f"S2D {plan.block} conv does not give the original conv's output")
    moved_out = d2s_packets(y.transpose(0, 2, 3, 1), plan.out_block) if plan.needs_d2s else 0
    return LayerRun(conv.conv, moved_in, moved_out, conv.vrmpy, conv.signature, conv.layout, conv.epilogue)
