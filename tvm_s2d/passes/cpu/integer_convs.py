"""``CpuIntegerConvs``: the integer convs of quantized models on the CPU's dot-product
instructions (AVX-512 VNNI's ``vpdpbusd``, else AVX2's ``vpmaddwd``).

After ``QDQConvToInteger`` a quantized conv is ``conv2d(astype(xq, int32) - zx, Wq - zw)`` in
int32: 4-byte activations, scalar-width products. With ``u = xq`` (uint8; int8 activations
shifted by 128, ``zu = zx + 128``) and ``W' = Wq - zw`` (int8 when it fits), the same integers are

    conv(pad(u, zu), W') - zu * sum(W')        (per output channel)

because padding ``u - zu`` with zeros is padding ``u`` with ``zu`` (every window then is full).
The conv becomes ``schedules.x86_int8.vnni_conv`` (uint8 NHWC activations, weights packed at
compile time as ``[OC/16, KH, KW, IC/4, 16, 4]`` int8 for VNNI or ``[OC/8, KH, KW, IC/2, 8, 2]``
int16 for AVX2, input channels padded to whole groups with zero weights; a low-channel conv's
kernel rows packed flat, ``x86_int8.flat_weights``: an RGB 7x7 stem's row is 11 pairs of its 21
(tap, channel) values instead of 7 taps x 2 pairs, 0.75 of its time), the correction a
subtraction that fuses into the kernel's write-back with the requantization after it;
``ScheduleConvs`` tensorizes it. Exact: the accumulators are int32 in any order, so the outputs are the same integers as without this pass.

Runs on LLVM CPU targets with AVX-512 VNNI or AVX2 (``dot_kind``), after the layout and the rewrite
(it takes the convs in the layout ``CpuLayout`` chose, NHWC with HWIO weights). Every other
conv stays as it was, with an outcome saying why: another target, not an integer conv of
8-bit activations, weights outside int8, NCHW, grouped. Output channels are padded to whole
vectors (zero weights), input channels to whole groups.
``disabled_pass=["CpuIntegerConvs"]``: today's integer convs.
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax
from tvm.relax.expr_functor import PyExprMutator, mutator

from ...schedules.x86_int8 import DotKind, dot_kind, flat_apply, flat_weights, vnni_conv
from ..outcome import applied, refused
from ..relax_tools import bound, const_of, is_call
from ..rules import CpuPass

PASS_NAME = "CpuIntegerConvs"


@tvm.transform.module_pass(opt_level=0, name=PASS_NAME)
class CpuIntegerConvs(CpuPass):
    """Integer convs as dot-product kernels on CPUs that have one (the module doc)."""

    def run(self, mod: tvm.IRModule, target: tvm.target.Target) -> tvm.IRModule:
        integer_convs = [c for f in mod.functions.values() if isinstance(f, relax.Function) for c in _integer_convs(f)]
        if not integer_convs:
            return mod
        kind = dot_kind(target)
        if kind is None:
            for name in integer_convs:
                refused(self.outcomes, name, "the target has neither AVX-512 VNNI nor AVX2: integer conv as it was")
            return mod
        rewriter = _Rewriter(mod, self.outcomes, kind)
        for gv, func in mod.functions.items():
            if isinstance(func, relax.Function) and not (func.attrs is not None and func.attrs.get("Primitive", False)):
                rewriter.var2val = relax.analysis.get_var2val(func)
                rewriter.builder_.update_func(gv, relax.analysis.remove_all_unused(rewriter.visit_expr(func)))
        return rewriter.builder_.get()


def _integer_convs(func: relax.Function) -> list[str]:
    found = []
    for binding in (b for block in func.body.blocks for b in block.bindings):
        value = binding.value
        if is_call(value, "relax.nn.conv2d") and str(value.attrs.out_dtype) == "int32":
            found.append(binding.var.name)
    return found


def plan(conv: relax.Call, var2val: dict, kind: DotKind):
    """``(u, zu, packed weights, correction, flat width)`` for a conv the ``kind``'s kernel takes
    (``u``: the uint8 activations as a Relax expression to emit; the flat width: the kernel's width
    when its rows are packed flat, ``x86_int8.flat_apply``, else 0), or the reason it does not."""
    attrs = conv.attrs
    if str(attrs.out_dtype) != "int32":
        return "not an integer conv"
    if str(attrs.data_layout) != "NHWC" or str(attrs.kernel_layout) != "HWIO":
        return f"{attrs.data_layout} / {attrs.kernel_layout}: the integer kernel takes NHWC / HWIO (CpuLayout's NHWC)"
    if int(attrs.groups) != 1:
        return "grouped conv: the register-blocked integer schedule"
    weight = const_of(conv.args[1], var2val)
    if weight is None:
        return "weights not a compile-time constant"
    if weight.min() < -128 or weight.max() > 127:
        return "weights minus their zero point outside int8"
    kh, kw, ic, oc = weight.shape
    # the activations: [permute_dims of] astype(xq, int32) - zx, xq 8-bit
    data, axes = bound(conv.args[0], var2val), None
    if is_call(data, "relax.permute_dims"):
        axes = [int(a) for a in data.attrs.axes]
        data = bound(data.args[0], var2val)
    zx = const_of(data.args[1], var2val) if is_call(data, "relax.subtract") else None
    source = bound(data.args[0], var2val) if zx is not None else None
    if zx is None or zx.size != 1 or not is_call(source, "relax.astype"):
        return "activations not astype(8-bit, int32) - zero point"
    xq = source.args[0]
    dtype = str(xq.ty.dtype)
    if dtype not in ("uint8", "int8"):
        return f"{dtype} activations, not 8-bit"
    zu = int(zx.reshape(())) + (128 if dtype == "int8" else 0)
    if not 0 <= zu <= 255:
        return "activation zero point outside the 8-bit range"
    u = xq
    if dtype == "int8":  # u = xq + 128 as uint8
        u = relax.op.astype(relax.op.add(relax.op.astype(xq, "int16"), relax.const(128, "int16")), "uint8")
    if axes is not None:
        u = relax.op.permute_dims(u, axes)
    correction = (zu * weight.astype(np.int64).sum(axis=(0, 1, 2))).astype(np.int32)
    if flat_apply(ic, kw, attrs.dilation, kind):  # a low-channel conv (an RGB stem): a row's taps one reduction
        return u, zu, flat_weights(weight, kind), correction, kw
    ib, ob = kind.ic_block, kind.oc_block
    padded_ic, padded_oc = -(-ic // ib) * ib, -(-oc // ob) * ob
    w = np.zeros((kh, kw, padded_ic, padded_oc), kind.weight_dtype)  # zero weights: whole groups and vectors
    w[:, :, :ic, :oc] = weight
    packed = w.reshape(kh, kw, padded_ic // ib, ib, padded_oc // ob, ob).transpose(4, 0, 1, 2, 5, 3)
    return u, zu, np.ascontiguousarray(packed), correction, 0


@mutator
class _Rewriter(PyExprMutator):
    def __init__(self, mod, outcomes, kind: DotKind):
        super().__init__(mod)
        self.outcomes, self.var2val, self.kind = outcomes, {}, kind

    def visit_var_binding_(self, binding: relax.VarBinding) -> None:
        conv = binding.value
        if not is_call(conv, "relax.nn.conv2d") or str(conv.attrs.out_dtype) != "int32":
            return super().visit_var_binding_(binding)
        name = binding.var.name
        found = plan(conv, self.var2val, self.kind)
        if isinstance(found, str):
            refused(self.outcomes, name, found)
            return super().visit_var_binding_(binding)
        u, zu, packed, correction, flat = found
        u = self.builder_.emit(self.visit_expr(u)) if not isinstance(u, relax.Var) else self.visit_expr(u)
        attrs = conv.attrs
        acc = self.builder_.call_te(vnni_conv, u, relax.const(packed), [int(s) for s in attrs.strides],
                                    [int(p) for p in attrs.padding], [int(d) for d in attrs.dilation], zu,
                                    len(correction), flat, primfunc_name_hint="conv2d_vnni")
        if correction.any():
            acc = self.builder_.emit(acc, name)
            acc = relax.op.subtract(acc, relax.const(correction))
        kind = self.kind
        layout = (f"[OC/{kind.oc_block}, KH, 1, KW*IC/{kind.ic_block}, {kind.oc_block}, {kind.ic_block}]: a row's taps one "
                  "reduction" if flat else f"[OC/{kind.oc_block}, KH, KW, IC/{kind.ic_block}, {kind.oc_block}, {kind.ic_block}]")
        applied(self.outcomes, name, f"{kind.name} kernel ({kind.instruction}: {kind.data_dtype} x {kind.weight_dtype} -> int32, weights "
                                     f"packed {layout})")
        return super().visit_var_binding_(relax.VarBinding(binding.var, acc))
