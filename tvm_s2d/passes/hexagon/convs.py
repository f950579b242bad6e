"""``HexagonConvs``: the integer convs of a quantized model run on HVX ``vrmpy`` kernels.

After ``QDQConvToInteger`` (and the rewrite) a quantized conv reads

    conv2d(M(astype(xq, int32) - zx), W)        xq uint8, W constant int32 with int8 values,

where ``M`` is data movement (the rewrite's crop, pad, S2D reshapes and transposes, domain
masks), possibly empty. Movement commutes with subtracting a constant if zero-filling becomes
filling with ``zx``, and the conv's zero padding of ``xq - zx`` is padding ``xq`` with ``zx``,
so with ``P`` = ``M`` and the conv padding, filling with ``zx``:

    conv2d(...) = conv_valid(P(xq), W) - zx * sum(W over taps and input channels)

The first term is a uint8 x int8 -> int32 conv on HVX in one of two mappings
(``schedules.hexagon``; weights packed at compile time): ``"width"`` (``WidthConv``: 32 output
columns per vector-by-scalar ``vrmpy``, input ``[N, C/4, H, W, 4]`` made by an HVX ``vdeal``
kernel; stride-1 convs) and
``"lanes"`` (``PackedConv``: 32 output channels per ``vrmpy``, NHWC input with channels padded
to 4, weights packed as ``W + 128`` and the per-pixel window sums that undo it: in a lane of
its own, ``PackedConv.sums``, else a second kernel), the HTP-native one. Without a tuning
record a conv takes the mapping that executes fewer ``vrmpy`` (``default_mapping``: lanes for
strided convs and 32-channel outputs, width for few output channels); a tuning log's record
for the conv (matched by ``conv_signature``) picks the mapping and its knob instead. The second term is a per-channel constant. Both sides
are the same int32 sums: exact.

Convs that do not have this form (float convs, weights outside int8, dilation, groups, a
data path that is not pure movement from a uint8 tensor) are left alone; ``refusals`` says
why. It acts for Hexagon targets (the given one, else the current one) only.
``schedule=False`` keeps the kernel's plain loops (for checking the graph on a CPU).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import tvm
from tvm import relax
from tvm.relax.dpl import is_const, is_op, wildcard
from tvm.relax.expr_functor import PyExprMutator, mutator

from ...geometry import Unsupported, kernel_to_oihw
from ...geometry.grouped import block_diagonal
from ...schedules.hexagon.depthwise import INPUT_OFFSET, DepthwiseConv
from ...schedules.hexagon.grouped import GroupedConv, schedule_grouped
from ...schedules.hexagon import LANES, PackedConv, WidthConv, conv_signature, default_mapping, input_layout, mapped_conv, \
    padded_layout, schedule_mapping
from ...schedules.hexagon.movement import spread_width
from ...targets import is_hexagon, pass_target
from ..outcome import Outcome, applied, refused
from ..relax_tools import add_kernel, bound, conv_spec, is_call, op_name, rewrite_functions, static_shape
from ..s2d.space_to_depth_conv2d import conv_name
from .conv_output import emit_corrected, emit_depthwise_output, emit_lanes_output, emit_width_output

PASS_NAME = "HexagonConvs"
#: Grouped (not depthwise) convs run as dense block-diagonal convs up to this many groups.
MAX_DENSE_GROUPS = 32
MOVEMENT = ("relax.reshape", "relax.permute_dims", "relax.strided_slice", "relax.nn.pad", "relax.where")


def _scalar(expr) -> np.ndarray | None:
    if isinstance(expr, tvm.ir.GenericConst) and expr.value.numpy().size == 1:
        return expr.value.numpy().reshape(())
    return None


@tvm.transform.module_pass(opt_level=0, name=PASS_NAME)
class HexagonConvs:
    """Replace each qualifying integer conv of the Relax functions by an HVX vrmpy kernel (see the
    module doc); ``replaced``, ``mappings`` and ``refusals`` say what it did."""

    def __init__(self, target: tvm.target.Target | None = None, knobs=None, schedule: bool = True):
        """``knobs``: ``conv_signature -> (mapping, knob) | None`` (e.g. from a tuning log)."""
        self.target, self.knobs, self.schedule = target, knobs, schedule
        self.data, self.weight = wildcard(), is_const()
        self.conv = is_op("relax.nn.conv2d")(self.data, self.weight)
        self.mappings: dict[str, tuple[str, int]] = {}  # conv name -> (mapping, knob)
        self.outcomes: list[Outcome] = []

    @property
    def replaced(self) -> list[str]:
        """The convs on HVX kernels."""
        return [o.name for o in self.outcomes if o.applied]

    @property
    def refusals(self) -> dict[str, str]:
        """Conv -> why it keeps TVM's default lowering."""
        return {o.name: o.reason for o in self.outcomes if not o.applied}

    def transform_module(self, mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        self.outcomes, self.mappings = [], {}
        if not is_hexagon(pass_target(self.target)):
            return mod
        return rewrite_functions(mod, _Rewriter(mod, self))

    def choose(self, signature: str, strides, out_channels: int, out_width: int, taps: int = 1) -> tuple[str, int]:
        """(mapping, knob): the tuned one, else ``default_mapping``."""
        tuned = self.knobs(signature) if self.knobs is not None else None
        if tuned is not None and (tuned[0] == "lanes" or tuple(strides) == (1, 1)):
            return tuned
        return default_mapping(out_channels, out_width, strides, taps)

    def kernel(self, conv, mapping: str, knob: int) -> tvm.tirx.PrimFunc:
        return schedule_mapping(conv, mapping, knob) if self.schedule else conv.compute()


def _uint8_source(expr, var2val):
    """``(xq, zx, movement calls innermost first)`` when ``expr`` = M(astype(xq u8) - zx), or a reason."""
    chain = []
    while True:
        value = bound(expr, var2val)
        name = op_name(value)
        if name is None:
            return "its input is not computed from a uint8 tensor minus a zero point"
        if name == "relax.subtract":
            source, zx = value.args
            source = bound(source, var2val)
            zero = _scalar(zx)
            if (zero is None or not is_call(source, "relax.astype")
                    or str(source.args[0].ty.dtype) != "uint8"):
                return "its input is not a uint8 tensor minus a constant zero point"
            return source.args[0], int(zero), chain[::-1]
        if name not in MOVEMENT:
            return f"its input comes through {name}, not pure data movement"
        if name == "relax.nn.pad" and (str(value.attrs.pad_mode) != "constant" or float(value.attrs.pad_value) != 0):
            return "a padding of its input is not with zeros"
        if name == "relax.where":
            fill = _scalar(value.args[2])
            if fill is None or fill != 0 or not isinstance(value.args[0], tvm.ir.GenericConst):
                return "a mask on its input is not a constant mask filling zeros"
            chain.append(value)
            expr = value.args[1]
            continue
        chain.append(value)
        expr = value.args[0]


def dealt_channels(channels: int, strides, out_width: int) -> int:
    """The channels a depthwise conv runs on: ``channels``, or for a column stride of 2 and
    channels ``pad_pixels`` widens (24, 40, 48, 56), the next power of two (24 -> 32, 48 -> 64),
    whose pixels tile a vector (MnasNet's 24-channel 3x3/2 conv a pixel a vector: 17.0k packets)."""
    padded = spread_width(channels)
    return padded if strides[1] == 2 and padded is not None and out_width * padded >= 128 else channels


def _pad(bb: relax.BlockBuilder, x: relax.Expr, widths: list[int], zx: int) -> relax.Expr:
    """``x`` padded with ``zx`` (unchanged when ``widths`` are all zero: a pad of nothing would
    still copy)."""
    return bb.emit(relax.op.nn.pad(x, widths, pad_value=float(zx))) if any(widths) else x


def _replay(bb: relax.BlockBuilder, x: relax.Expr, chain, zx: int) -> relax.Expr:
    """The movement ``chain`` on the uint8 tensor, filling with ``zx`` where it filled zeros."""
    fill = relax.const(np.uint8(zx))
    for call in chain:
        name = call.op.name
        if name == "relax.nn.pad":
            x = _pad(bb, x, [int(v) for v in call.attrs.pad_width], zx)
        elif name == "relax.where":
            x = bb.emit(relax.op.where(call.args[0], x, fill))
        else:
            x = bb.emit(relax.Call(call.op, [x, *call.args[1:]], call.attrs, call.ty_args))
    return x


@mutator
class _Rewriter(PyExprMutator):
    def __init__(self, mod, rule: HexagonConvs):
        super().__init__(mod)
        self.rule, self.var2val = rule, {}

    def visit_var_binding_(self, binding: relax.VarBinding) -> None:
        call = binding.value
        matched = isinstance(call, relax.Call) and self.rule.conv.match(call)
        if not matched:
            return super().visit_var_binding_(binding)
        name = conv_name(binding.var.name)
        result = self._replace(call, name)
        if isinstance(result, str):
            refused(self.rule.outcomes, name, result)
            return super().visit_var_binding_(binding)
        mapping, knob = self.rule.mappings[name]
        how = {"lanes": "HVX vrmpy kernel, channels in lanes", "width": "HVX vrmpy kernel, width in lanes",
               "depthwise": "HVX depthwise kernel", "grouped": "HVX vrmpy kernel, a group in lanes",
               "dense": "HVX vrmpy kernel, channels in lanes, block-diagonal weights"}.get(mapping)
        applied(self.rule.outcomes, name, how)
        return super().visit_var_binding_(relax.VarBinding(binding.var, result))

    def _replace(self, call: relax.Call, name: str):
        attrs = call.attrs
        layout = str(attrs.data_layout)
        if str(call.ty.dtype) != "int32":
            return "not an integer conv (Hexagon kernels are uint8 x int8 -> int32)"
        try:
            conv_spec(call)
        except Unsupported as exc:
            if "grouped" not in str(exc):  # depthwise convs: below
                return str(exc)
        weight = call.args[1].value.numpy().transpose(kernel_to_oihw(str(attrs.kernel_layout)))
        groups = int(attrs.groups)
        if any(int(d) != 1 for d in attrs.dilation):
            return "dilated conv"
        grouped = groups != 1 and not (groups == weight.shape[0] and weight.shape[1] == 1)
        if grouped and not GroupedConv.applies(weight.shape[1] * groups, weight.shape[0], groups):
            if groups > MAX_DENSE_GROUPS:
                return f"grouped conv (groups={groups}; dense HVX kernels take at most {MAX_DENSE_GROUPS} groups)"
            weight, groups, grouped = block_diagonal(weight, groups), 1, "dense"  # exactly (geometry.grouped)
        elif grouped:
            groups = 1  # the grouped kernel, below
        if weight.min() < -128 or weight.max() > 127:
            return "weights outside int8 (a weight zero point other than 0)"
        found = _uint8_source(call.args[0], self.var2val)
        if isinstance(found, str):
            return found
        xq, zx, chain = found
        bb = self.builder_
        x = _replay(bb, self.visit_expr(xq), chain, zx)
        if layout == "NCHW":
            x = bb.emit(relax.op.permute_dims(x, [0, 2, 3, 1]))
        n, h, w, c = static_shape(x)
        padding = tuple(int(p) for p in attrs.padding)
        strides = tuple(int(s) for s in attrs.strides)
        cout, kernel_hw = weight.shape[0], weight.shape[2:]
        if grouped is True:
            y = self._grouped(x, weight, int(attrs.groups), padding, strides, zx, name)
            self.rule.mappings[name] = ("grouped", 0)
            return emit_corrected(self.builder_, y, weight, zx, layout)
        if groups != 1:
            signed = int(weight.min()) >= -127  # int16 sums of two taps (``ordered_sums``): the inputs less 128
            y = self._depthwise(x, weight, padding, strides, zx, signed, name)
            self.rule.mappings[name] = ("depthwise", 0)
            return emit_corrected(bb, y, weight, zx - INPUT_OFFSET * signed, layout)
        out_width = (w + padding[1] + padding[3] - kernel_hw[1]) // strides[1] + 1
        mapping, knob = self.rule.choose(conv_signature(n, (h, w), c, cout, kernel_hw, strides, padding), strides,
                                         cout, out_width, kernel_hw[0] * kernel_hw[1])
        conv = mapped_conv(mapping, n, (h, w), c, cout, kernel_hw, strides, padding)
        if mapping == "lanes":  # the window sums in a lane of its own where summing() puts them: no offsets kernel
            y = self._lanes(conv.summing(), x, weight, padding, zx, knob, name)
        else:
            y = self._width(conv, x, weight, padding, zx, knob, name)
        self.rule.mappings[name] = (mapping, knob) if grouped != "dense" else ("dense", knob)
        return emit_corrected(bb, y, weight, zx, layout)

    def _grouped(self, x, weight, groups, padding, strides, zx, name):
        """NHWC uint8 -> a group a 32-lane block (``schedules.hexagon.grouped``) -> NHWC int32."""
        bb = self.builder_
        n, h, w, c = static_shape(x)
        t, l, b, r = padding
        conv = GroupedConv(n, (h + t + b, w + l + r), c, weight.shape[0], groups, tuple(weight.shape[2:]), strides)
        x = _pad(bb, x, [0, 0, t, b, l, r, 0, 0], zx)
        func = conv.compute()
        kernel = add_kernel(bb, schedule_grouped(func, 8 if strides != (1, 1) else 4) if self.rule.schedule else func,
                            f"hvx_{name}")
        y = bb.emit(relax.call_tir(kernel, [x, relax.const(conv.pack_weight(weight.astype(np.int8)))],
                                   relax.TensorType(conv.output_shape, "int32")))
        oh, ow = conv.out_hw
        y = bb.emit(relax.op.strided_slice(y, [4], [0], [conv.group_out]))
        return bb.emit(relax.op.reshape(y, [n, oh, ow, weight.shape[0]]))

    def _depthwise(self, x, weight, padding, strides, zx, signed, name):
        """NHWC uint8 -> padded rows ``[N, H, W * C]`` -> the HVX depthwise kernel -> NHWC int32.
        A stride-2 conv of the channels ``dealt_channels`` widens runs on their next power of two
        (zero weights past C, the input's channels padded with the zero point), sliced back to C
        after it: its kernel with its requantization then reads a tap's pixels by ``vdeal``
        (``DepthwiseConv.dealt``) instead of a pixel a vector."""
        bb = self.builder_
        n, h, w, c = static_shape(x)
        t, l, b, r = padding
        (kh, kw), (sh, sw) = weight.shape[2:], strides
        out_hw = ((h + t + b - kh) // sh + 1, (w + l + r - kw) // sw + 1)
        channels = dealt_channels(c, strides, out_hw[1])
        conv = DepthwiseConv(n, out_hw, channels, (kh, kw), strides, (h + t + b, w + l + r))
        extra = conv.input_shape[2] // channels - (w + l + r)  # columns for the last vector's loads
        rows = conv.input_shape[1] - (h + t + b)  # none for stride 1 (and ``in_hw`` for strides)
        conv = replace(conv, fill_rows=(t, b + rows), fill=int(zx), signed=signed)  # the pad's rows: the zero point
        x = _pad(bb, x, [0, 0, t, b + rows, l, r + extra, 0, channels - c], zx)
        x = bb.emit(relax.op.reshape(x, conv.input_shape))
        func = conv.tagged(conv.hvx_kernel() if self.rule.schedule else conv.compute())  # HexagonRequantize fuses
        kernel = add_kernel(bb, func, f"hvx_{name}")
        padded = np.zeros((channels, *weight.shape[1:]), np.int8)
        padded[:c] = weight
        y = bb.emit(relax.call_tir(kernel, [x, relax.const(conv.pack_weight(padded))],
                                   relax.TensorType(conv.output_shape, "int32")))
        y = emit_depthwise_output(bb, y, conv)
        return bb.emit(relax.op.strided_slice(y, [3], [0], [c])) if channels != c else y

    def _call(self, conv, mapping, knob, name, x, weight):
        """The conv's kernel on ``x`` (and, for the channel-in-lanes mapping without ``sums``, its
        per-pixel offsets kernel first), weights packed at compile time."""
        bb = self.builder_
        operands = [x, relax.const(conv.pack_weight(weight.astype(np.int8)))]
        if mapping == "lanes" and not conv.sums:
            offsets = add_kernel(bb, conv.window_offsets(hvx=self.rule.schedule), f"hvx_{name}_offsets")
            operands.append(bb.emit(relax.call_tir(offsets, [x], relax.TensorType(conv.offsets_shape, "int32"))))
        func = self.rule.kernel(conv, mapping, knob)
        kernel = add_kernel(bb, conv.tagged(func) if mapping == "lanes" else func, f"hvx_{name}")
        return bb.emit(relax.call_tir(kernel, operands, relax.TensorType(conv.output_shape, "int32")))

    def _lanes(self, conv: PackedConv, x, weight, padding, zx, knob, name):
        """NHWC uint8 -> channel-in-lanes conv -> NHWC int32."""
        bb = self.builder_
        n, _, _, c = static_shape(x)
        t, l, b, r = padding
        x = _pad(bb, x, [0, 0, t, b, l, r, 0, conv.cin - c], zx)
        y = self._call(conv, "lanes", knob, name, x, weight)
        return emit_lanes_output(bb, y, n, conv.out_hw, conv.cout_blocks * LANES, weight.shape[0])

    def _width(self, conv: WidthConv, x, weight, padding, zx, knob, name):
        """NHWC uint8 -> [N, C/4, H, W, 4] -> width-vectorized stride-1 conv -> NHWC int32."""
        bb = self.builder_
        n, h, w, c = static_shape(x)
        t, l, b, r = padding
        func = padded_layout((n, h, w, c), padding, conv.input_shape[3], zx, self.rule.schedule) if c == conv.cin else None
        if func is None:  # the pad, then the layout change
            extra = conv.input_shape[3] - (w + l + r)  # columns up to whole vectors
            channels, func = input_layout((n, conv.input_shape[2], conv.input_shape[3]), conv.cin, hvx=self.rule.schedule)
            x = _pad(bb, x, [0, 0, t, b, l, r + extra, 0, channels - c], zx)
        layout = add_kernel(bb, func, f"hvx_{name}_layout")
        x = bb.emit(relax.call_tir(layout, [x], relax.TensorType(conv.input_shape, "uint8")))
        y = self._call(conv, "width", knob, name, x, weight)
        return emit_width_output(bb, y, conv.out_hw[1])
