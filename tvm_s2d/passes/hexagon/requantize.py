"""``HexagonRequantize``: the integer requantization of each quantized conv on an HVX kernel.

``IntegerRequantize`` writes a conv's epilogue as int64 Relax ops (``emit_requantize``), which
TVM lowers to scalar code (~10 packets an element on Hexagon). On Hexagon targets this pass
reads each such chain back (``match_requantize``) and computes it with
``schedules.hexagon.requantize`` (the same integers, 32 lanes at a time, under one packet an
element): int32 in, uint8 / int8 out. A zero-point correction ``y - c`` (``HexagonConvs``'
``zx * sum(W)``) in front is folded into the bias (what ``HexagonConvs`` writes after a conv
kernel, and how it is read back here: ``conv_output``); a residual add's two rescaled 8-bit terms
(``IntegerAdd``) are computed in the same kernel, from the two uint8 / int8 tensors. Per-channel constants must run along the
last axis (NHWC, as ``HexagonLayout`` makes the model); others are left to TVM, and
``outcomes`` says why. ``hvx=False`` uses the kernel's plain loop (to check a graph on a CPU).
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import tvm
from tvm import relax
from tvm.relax.expr_functor import PyExprMutator, mutator

from ...schedules.hexagon.fused import FUSED_CHANNELS, fused_weight, width_conv_requantized
from ...schedules.hexagon.intrinsics import LANES
from ...schedules.hexagon.lanes_fused import lanes_fusable, lanes_requantized
from ...schedules.hexagon.layouts import requantize_channel_major_kernel, requantize_slice_kernel, \
    requantize_transpose_kernel
from ...schedules.hexagon.pool import channel_sums_kernel
from ...schedules.hexagon.product import gate_length, requantize_product_kernel, tile_gate_kernel
from ...schedules.hexagon.requantize import averaging, channel_constants, lane_constants, requantize_add_kernel, requantize_kernel
from ...targets import is_hexagon, pass_target
from ..outcome import Outcome, applied, refused
from ..quantized.integer_add import match_add, match_term
from ..quantized.integer_multiply import match_product
from ..quantized.integer_pool_concat import match_sum
from ..quantized.integer_requantize import match_requantize
from ..relax_tools import add_kernel, call_of, const_of, is_call, rewrite_functions, static_shape
from .conv_output import along_last_axis, match_channel_major, match_correction, match_depthwise_output, \
    match_lanes_output, match_padded_channels

PASS_NAME = "HexagonRequantize"
#: A global pool sums lcm(C, 128) int32 lanes in a workspace (64 KB at most; C = 1000 takes 16,000).
MAX_SUM_LANES = 16384


@tvm.transform.module_pass(opt_level=0, name=PASS_NAME)
class HexagonRequantize:
    def __init__(self, target: tvm.target.Target | None = None, hvx: bool = True):
        self.target, self.hvx = target, hvx
        self.outcomes: list[Outcome] = []

    def transform_module(self, mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        self.outcomes = []
        if not is_hexagon(pass_target(self.target)):
            return mod
        return rewrite_functions(mod, _Rewriter(mod, self))


@mutator
class _Rewriter(PyExprMutator):
    def __init__(self, mod, rule: HexagonRequantize):
        super().__init__(mod)
        self.rule, self.var2val, self.mod = rule, {}, mod
        self.nhwc_views = {}  # NHWC variable -> the channel-major tensor it is a permute_dims of

    def visit_var_binding_(self, binding: relax.VarBinding) -> None:
        call = binding.value
        back = call_of(call, {}, "relax.permute_dims")
        if back is not None and [int(a) for a in back.attrs.axes] == [0, 3, 1, 2] and back.args[0] in self.nhwc_views:
            # NHWC -> NCHW of a tensor a kernel wrote channel-major: that tensor itself
            return super().visit_var_binding_(relax.VarBinding(binding.var, self.nhwc_views[back.args[0]]))
        if not is_call(call, "relax.astype"):
            return super().visit_var_binding_(binding)
        found = match_requantize(call, self.var2val)
        if found is None:
            return super().visit_var_binding_(binding)
        x, b, m, r, zy, lo, hi, dtype, pre = found
        name = binding.var.name
        shape = static_shape(x)
        if shape is None:
            refused(self.rule.outcomes, name, "dynamic shape")
            return super().visit_var_binding_(binding)
        added = match_add(x, self.var2val)
        if added is None and (term := match_term(x, self.var2val)) is not None:
            added = (*term, term[0], 0, 0)  # one 8-bit term (a concat input rescaled): the add kernel, b's weight 0
        if added is not None and not np.any(b) and np.size(m) == 1 and np.size(r) == 1 and not np.any(pre):
            qa, za, ma, qb, zb, mb = added
            qa, qb = (self.builder_.emit(self.visit_expr(q)) if isinstance(q, relax.Call) else self.visit_expr(q)
                      for q in (qa, qb))
            func = requantize_add_kernel(shape, str(qa.ty.dtype), za, ma, str(qb.ty.dtype), zb, mb,
                                         int(np.reshape(m, ())), int(np.reshape(r, ())), zy, lo, hi, dtype,
                                         hvx_code=self.rule.hvx)
            kernel = add_kernel(self.builder_, func, f"hvx_requantize_{name}")
            applied(self.rule.outcomes, name, "HVX integer add kernel")
            value = relax.call_tir(kernel, [qa, qb], relax.TensorType(shape, dtype))
            return super().visit_var_binding_(relax.VarBinding(binding.var, value))
        product = match_product(x, self.var2val)
        if product is not None and not np.any(b) and np.size(m) == 1 and not np.any(r) and not np.any(pre):
            value = self._product(product, int(np.reshape(m, ())), shape, zy, lo, hi, dtype, name)
            if value is not None:
                applied(self.rule.outcomes, name, "HVX integer product kernel")
                return super().visit_var_binding_(relax.VarBinding(binding.var, value))
        summed = match_sum(x, self.var2val)
        if summed is not None and (sums := self._channel_sums(*summed, shape, name)) is not None:
            x = sums  # a global pool's sums on HVX; the requantization below as for any int32 tensor
        corrected = match_correction(x, self.var2val, shape)  # y - zx * sum(W), folded into the bias
        if corrected is not None:
            x, b = corrected[0], np.asarray(b, np.int64) - corrected[1]
        constants = [along_last_axis(v, shape) for v in (b, m, r, pre)]
        if any(c is None for c in constants):
            refused(self.rule.outcomes, name, "per-channel constants not along the last axis (not NHWC)")
            return super().visit_var_binding_(binding)
        if np.any(np.abs(constants[0]) >= 2**31):
            refused(self.rule.outcomes, name, "the bias with the zero-point correction does not fit int32")
            return super().visit_var_binding_(binding)
        average = averaging(constants[2])  # every shift at least 1: rounded by vavg
        pre_shift = bool(np.any(constants[3]))  # a headroom shift to make (a vector shift a vector, as many as the multiplies)
        depthwise = match_depthwise_output(x, self.var2val, self.mod)
        if depthwise is not None and depthwise[2].fusable and (
                not depthwise[2].dealt or const_of(depthwise[1], self.var2val) is not None):
            rows, weight, conv = depthwise  # the requantization in the depthwise kernel
            packed = const_of(weight, self.var2val)
            if conv.dealt:  # its weights tiled along the lanes
                weight = relax.const(conv.fused_weight(packed))
            if packed is None:  # weights not known here: no tap skipped (no corrections)
                conv = replace(conv, fill_rows=(0, 0))
            func = conv.hvx_requantized_kernel(zy, lo, hi, dtype, hvx_code=self.rule.hvx, pre_shift=pre_shift,
                                              average=average)
            kernel = add_kernel(self.builder_, func, f"hvx_{name}_depthwise")
            padded = [np.pad(np.broadcast_to(v, (shape[-1],)), (0, conv.channels - shape[-1]), mode="edge") for v in constants]
            constants = conv.requantize_constants(*padded[:3], padded[3])
            if conv.border_rows():  # the bias and the corrections of the rows reading only the pad
                constants[0] = conv.border_bias(constants[0], packed)
            operands = [self.visit_expr(rows), weight, *(relax.const(c) for c in constants)]
            applied(self.rule.outcomes, name, "in the depthwise conv's HVX kernel (its sums requantized before they"
                    " are stored)")
            value = relax.call_tir(kernel, operands, relax.TensorType(conv.requantized_shape(), dtype))
            if conv.channels != shape[-1]:  # a conv on padded channels (convs.dealt_channels): its first ones
                value = relax.op.strided_slice(self.builder_.emit(value), [3], [0], [int(shape[-1])])
            return super().visit_var_binding_(relax.VarBinding(binding.var, value))
        lanes = match_lanes_output(x, self.var2val, self.mod)
        if lanes is not None and lanes_fusable(lanes[1]):  # the requantization in the conv's kernel
            (data, weight, offsets), conv = lanes
            func = lanes_requantized(conv, zy, lo, hi, dtype, pre_shift=pre_shift, hvx_code=self.rule.hvx,
                                     average=average)
            kernel = add_kernel(self.builder_, func, f"hvx_{name}_requantized")
            operands = [self.visit_expr(data), weight, self.visit_expr(offsets),
                        *(relax.const(c) for c in lane_constants(*constants[:3], int(shape[-1]), constants[3]))]
            applied(self.rule.outcomes, name, "in the channel-in-lanes conv's HVX kernel (4 pixels requantized and"
                    " stored as 128 bytes)")
            value = relax.call_tir(kernel, operands, relax.TensorType(shape, dtype))
            return super().visit_var_binding_(relax.VarBinding(binding.var, value))
        channel_major = match_channel_major(x, self.var2val, shape)
        if channel_major is not None:  # the width mapping's conv output: the layout change in the kernel too
            return self._channel_major(binding, channel_major, constants, shape, zy, lo, hi, dtype)
        padded = match_padded_channels(x, self.var2val, shape)
        if padded is not None:  # the channel-in-lanes mapping's output: the slice of its 32-padded channels in the kernel
            func = requantize_slice_kernel(static_shape(padded), int(shape[-1]), zy, lo, hi, dtype, hvx_code=self.rule.hvx,
                                           average=average, pre_shift=pre_shift)
            x, how = padded, "HVX requantization kernel, reading the padded channels"
        else:
            func, how = requantize_kernel(shape, zy, lo, hi, dtype, hvx_code=self.rule.hvx, average=average,
                                          pre_shift=pre_shift), \
                "HVX requantization kernel"
        kernel = add_kernel(self.builder_, func, f"hvx_requantize_{name}")
        operands = [self.visit_expr(x), *(relax.const(c) for c in lane_constants(*constants[:3], int(shape[-1]), constants[3]))]
        applied(self.rule.outcomes, name, how)
        value = relax.call_tir(kernel, operands, relax.TensorType(shape, dtype))
        return super().visit_var_binding_(relax.VarBinding(binding.var, value))

    def _channel_sums(self, q, z, axes, keepdims, shape, name):
        """``sum(q - z)`` over every axis but the first (batch 1) and the last (NHWC channels) on
        an HVX kernel (``channel_sums_kernel``), or None."""
        source = static_shape(q)
        if source is None or source[0] != 1 or axes != list(range(1, len(source) - 1)):
            return None
        channels = int(source[-1])
        if math.lcm(channels, 128) > MAX_SUM_LANES:
            return None
        func = channel_sums_kernel(source, str(q.ty.dtype), int(z), hvx_code=self.rule.hvx)
        kernel = add_kernel(self.builder_, func, f"hvx_sums_{name}")
        q = self.builder_.emit(self.visit_expr(q)) if isinstance(q, relax.Call) else self.visit_expr(q)
        sums = self.builder_.emit(relax.call_tir(kernel, [q], relax.TensorType((channels,), "int32")))
        return self.builder_.emit(relax.op.reshape(sums, list(shape)))

    def _product(self, product, m, shape, zy, lo, hi, dtype, name):
        """``IntegerMultiply``'s product and requantization on one kernel, or None: ``qb`` of the
        output's shape, or a per-channel gate (ones but the last axis) tiled to a multiple of 128
        bytes (a few KB, by vector copies: ``tile_gate_kernel``)."""
        qa, za, qb, zb = product
        if static_shape(qa) != tuple(shape):
            qa, za, qb, zb = qb, zb, qa, za
        gate = static_shape(qb)
        if static_shape(qa) != tuple(shape) or gate is None:
            return None
        qa, qb = (self.builder_.emit(self.visit_expr(q)) if isinstance(q, relax.Call) else self.visit_expr(q)
                  for q in (qa, qb))
        channels, total = int(shape[-1]), int(np.prod(shape))
        if gate == tuple(shape):
            period, tiled = total, self.builder_.emit(relax.op.reshape(qb, [total]))
        elif all(d == 1 for d in gate[:-1]) and gate[-1] == channels and len(gate) == len(shape):
            period = math.lcm(channels, 128)
            length = gate_length(shape, period)  # one vector more for a tail computed as the last 128 outputs
            kernel = add_kernel(self.builder_, tile_gate_kernel(channels, length, str(qb.ty.dtype), hvx_code=self.rule.hvx),
                                f"hvx_tile_{name}")
            gate_bytes = self.builder_.emit(relax.op.reshape(qb, [channels]))
            tiled = self.builder_.emit(relax.call_tir(kernel, [gate_bytes], relax.TensorType((length,), str(qb.ty.dtype))))
        else:
            return None
        func = requantize_product_kernel(shape, period, str(qa.ty.dtype), za, str(qb.ty.dtype), zb, m, zy, lo, hi, dtype,
                                         hvx_code=self.rule.hvx)
        kernel = add_kernel(self.builder_, func, f"hvx_product_{name}")
        return relax.call_tir(kernel, [qa, tiled], relax.TensorType(shape, dtype))

    def _channel_major(self, binding, source, constants, shape, zy, lo, hi, dtype):
        """The requantization of ``source`` (int32 ``[N, C, H, W']``) on one HVX kernel: written
        NHWC (``C`` a multiple of 4), else channel-major and viewed NHWC by a ``permute_dims``
        (which cancels against the model output's way back to NCHW)."""
        name, channels = binding.var.name, int(shape[-1])
        constants = [relax.const(v) for v in channel_constants(*constants[:3], channels, constants[3])]
        fused = self._fused(source, constants, shape, zy, lo, hi, dtype)
        if fused is not None:
            applied(self.rule.outcomes, name, "in the conv's HVX kernel (its accumulators requantized before they are stored)")
            return super().visit_var_binding_(relax.VarBinding(binding.var, fused))
        operands = [self.visit_expr(source), *constants]
        n, h, w, c = (int(d) for d in shape)
        if channels % 4 == 0:
            func = requantize_transpose_kernel(static_shape(source), w, zy, lo, hi, dtype, hvx_code=self.rule.hvx)
            out_ty, how = relax.TensorType(shape, dtype), "writing NHWC"
        else:
            func = requantize_channel_major_kernel(static_shape(source), w, zy, lo, hi, dtype, hvx_code=self.rule.hvx)
            out_ty, how = relax.TensorType((n, c, h, w), dtype), "writing NCHW"
        kernel = add_kernel(self.builder_, func, f"hvx_requantize_{name}")
        applied(self.rule.outcomes, name, f"HVX requantization kernel, {how}")
        value = relax.call_tir(kernel, operands, out_ty)
        if channels % 4:
            planar = self.builder_.emit(value, f"{name}_nchw")
            value = relax.op.permute_dims(planar, [0, 2, 3, 1])
            self.nhwc_views[binding.var] = planar
        return super().visit_var_binding_(relax.VarBinding(binding.var, value))

    def _fused(self, source, constants, shape, zy, lo, hi, dtype):
        """The width-vectorized conv that computes ``source`` and this requantization as one HVX
        kernel (``schedules.hexagon.fused``), or None: ``source`` is the output of a
        ``WidthConv`` kernel (operands ``[N, C/4, H, W, 4]`` uint8 and constant weights) of
        4, 8 or 16 output channels."""
        conv = self.var2val.get(source) if isinstance(source, relax.Var) else None
        if conv is None or not isinstance(conv, relax.Call) or conv.op.name != "relax.call_tir":
            return None
        gv, operands = conv.args[0], conv.args[1].fields
        if len(operands) != 2 or not isinstance(operands[1], tvm.ir.GenericConst):
            return None
        x, weight = operands[0], operands[1].value.numpy()
        x_shape = static_shape(x)
        if (x_shape is None or len(x_shape) != 5 or x_shape[4] != 4 or str(x.ty.dtype) != "uint8" or weight.ndim != 5
                or str(weight.dtype) != "int8" or weight.shape[0] not in FUSED_CHANNELS
                or static_shape(source)[3] != (x_shape[3] - weight.shape[2] + 1) // LANES * LANES):
            return None
        w = fused_weight(weight)
        func = width_conv_requantized(x_shape, w.shape, int(shape[2]), zy, lo, hi, dtype, hvx_code=self.rule.hvx)
        kernel = add_kernel(self.builder_, func, f"{gv.name_hint}_requantized")
        return relax.call_tir(kernel, [self.visit_expr(x), relax.const(w), *constants], relax.TensorType(shape, dtype))
