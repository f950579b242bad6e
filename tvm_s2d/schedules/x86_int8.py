"""Integer convs on the CPU's dot-product instructions (AVX-512 VNNI: ``vpdpbusd``, uint8 x int8
-> int32, four products summed into each 32-bit lane).

The kernel (``vnni_conv``, a TE compute) is an NHWC conv of uint8 activations with int8 weights
pre-packed at compile time as ``[OC/16, KH, KW, IC/4, 16, 4]``: one 64-byte vector holds 16
output channels x 4 input channels, the order ``vpdpbusd`` reads them in. The activations'
4 input channels at a pixel are contiguous in NHWC: one 32-bit broadcast. Padding is the
activation zero point (``pad_value``), so every window is full and the caller subtracts
``zero point * sum of the weights`` per output channel once (exact: the accumulators are
int32 whatever the order).

``schedule_vnni_conv`` register-blocks it: a tile of ``tile_vectors`` x 16 output channels x
``tile_width`` pixels in zmm accumulators, the inner 16x4 reduction tensorized with TVM's
``dot_16x4_vnni`` intrinsic, padded rows materialized per output row, rows in parallel, the fused
epilogue (the compensation, bias, requantization) in the accumulators' write-back.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import tvm
from tvm import s_tir, te, topi

from .x86 import fold_epilogue, inline_side_inputs

BLOCK = "conv2d_nhwc_vnni"  # the conv block's name, how ScheduleConvs recognises the kernel
OUT_BLOCK = "conv2d_nhwc_vnni_out"  # its copy to the real output width
OC_BLOCK, IC_BLOCK = 16, 4  # vpdpbusd: 16 int32 lanes, 4 uint8 x int8 products each
ACCUMULATORS = 24  # of AVX-512's 32 zmm registers (the rest: weights and the broadcast input)
INTRINSIC = "tvm_s2d_dot_16x4_vnni_local"
STREAMED = 256 * 1024  # weights beyond a quarter of L2 (1 MB a core here): streamed once per register tile


def has_vnni(target: tvm.target.Target | None) -> bool:
    """Whether the LLVM target's CPU has AVX-512 VNNI (``vpdpbusd`` on zmm registers)."""
    if target is None or target.kind.name != "llvm" or not target.attrs.get("mcpu"):
        return False
    features = tvm.target.codegen.llvm_get_cpu_features(target)
    return "avx512vnni" in features and "avx512bw" in features


def vnni_conv(data: te.Tensor, weight: te.Tensor, strides, padding, dilation, pad_value: int,
              out_channels: int | None = None) -> te.Tensor:
    """``data`` NHWC uint8 (channels a multiple of 4), ``weight`` int8 ``[OC/16, KH, KW, IC/4, 16,
    4]``; the int32 NHWC sum over taps of the padded data (padded with ``pad_value``) times the
    weights, without any zero-point correction, ``out_channels`` of them (default: all the packed
    ones; fewer when the weights were padded to whole vectors). The conv block computes a width
    rounded up to whole register tiles (``default_vnni_knobs``; the input padded further right with
    ``pad_value``), so that every tile is whole (a tensorized block cannot be predicated);
    ``OUT_BLOCK`` copies the real width out (the schedule makes it the accumulators'
    write-back)."""
    batch, height, width, _ = (int(d) for d in data.shape)
    ocb, kh, kw, icb, _, _ = (int(d) for d in weight.shape)
    sh, sw = (int(s) for s in strides)
    dh, dw = (int(d) for d in dilation)
    top, left, bottom, right = (int(p) for p in padding)
    out_h = (height + top + bottom - (kh - 1) * dh - 1) // sh + 1
    out_w = (width + left + right - (kw - 1) * dw - 1) // sw + 1
    tile = default_vnni_knobs(ocb * OC_BLOCK, out_w, out_h, ocb * kh * kw * icb * OC_BLOCK * IC_BLOCK).tile_width
    whole_w = -(-out_w // tile) * tile
    right = max(right, (whole_w - 1) * sw + (kw - 1) * dw + 1 - width - left)
    channels = icb * IC_BLOCK - int(data.shape[3])  # input channels padded to whole groups of 4 (zero weights)
    padded = topi.nn.pad(data, [0, top, left, 0], [0, bottom, right, channels],
                         pad_value=tvm.tirx.const(pad_value, "uint8"), name="pad_temp")
    ry, rx = te.reduce_axis((0, kh), "ry"), te.reduce_axis((0, kw), "rx")
    rc, rci = te.reduce_axis((0, icb), "rc"), te.reduce_axis((0, IC_BLOCK), "rci")
    conv = te.compute(
        (batch, out_h, whole_w, ocb * OC_BLOCK),
        lambda n, y, x, f: te.sum(
            padded[n, y * sh + ry * dh, x * sw + rx * dw, rc * IC_BLOCK + rci].astype("int32")
            * weight[f // OC_BLOCK, ry, rx, rc, f % OC_BLOCK, rci].astype("int32"),
            axis=[ry, rx, rc, rci]),
        name=BLOCK,
    )
    out_channels = out_channels or ocb * OC_BLOCK
    return te.compute((batch, out_h, out_w, out_channels), lambda n, y, x, f: conv[n, y, x, f], name=OUT_BLOCK)

def _register_intrinsic() -> str:
    """TVM's ``dot_16x4_vnni`` with the accumulator in registers (``local`` scope: the register
    tile of the schedule), registered once as ``INTRINSIC``."""
    from tvm.s_tir import TensorIntrin
    from tvm.script import tirx as T

    if TensorIntrin.get(INTRINSIC, allow_missing=True) is not None:
        return INTRINSIC
    # LLVM 20 declares vpdpbusd on <64 x i8> operands (TVM 0.27's own dot_16x4_vnni, written for
    # <16 x i32>, fails LLVM's verifier), older LLVMs on <16 x i32>
    operands = "int8x64" if _llvm_major() >= 20 else "int32x16"

    @T.prim_func(s_tir=True)
    def desc(a: T.handle, b: T.handle, c: T.handle) -> None:
        A = T.match_buffer(a, (4,), "uint8", offset_factor=1)
        B = T.match_buffer(b, (16, 4), "int8", offset_factor=1)
        C = T.match_buffer(c, (16,), "int32", offset_factor=1, scope="local")
        with T.sblock("root"):
            T.reads(C[0:16], A[0:4], B[0:16, 0:4])
            T.writes(C[0:16])
            for i in T.serial(0, 16):
                for k in T.serial(0, 4):
                    with T.sblock("update"):
                        vi, vk = T.axis.remap("SR", [i, k])
                        C[vi] = C[vi] + T.cast(A[vk], "int32") * T.cast(B[vi, vk], "int32")

    @T.prim_func(s_tir=True)
    def impl(a: T.handle, b: T.handle, c: T.handle) -> None:
        A = T.match_buffer(a, (4,), "uint8", offset_factor=1)
        B = T.match_buffer(b, (16, 4), "int8", offset_factor=1)
        C = T.match_buffer(c, (16,), "int32", offset_factor=1, scope="local")
        with T.sblock("root"):
            T.reads(C[0:16], A[0:4], B[0:16, 0:4])
            T.writes(C[0:16])
            a_i32 = T.reinterpret(A.vload([0], "uint8x4"), dtype="int32")
            C[T.ramp(T.int32(0), 1, 16)] = T.call_llvm_pure_intrin(
                T.llvm_lookup_intrinsic_id("llvm.x86.avx512.vpdpbusd.512"),
                C.vload([0], dtype="int32x16"), T.reinterpret(T.broadcast(a_i32, 16), dtype=operands),
                T.reinterpret(B.vload([0, 0], dtype="int8x64"), dtype=operands), dtype="int32x16")

    TensorIntrin.register(INTRINSIC, desc, impl)
    return INTRINSIC


def _llvm_major() -> int:
    try:
        return int(tvm.target.codegen.llvm_version_major())
    except (AttributeError, RuntimeError):
        return 0


@dataclass(frozen=True)
class VnniKnobs:
    tile_vectors: int  # 16-channel vectors of output per register tile
    tile_width: int  # output pixels of a row per register tile
    tile_rows: int = 1  # output rows per register tile


def default_vnni_knobs(out_channels: int, out_width: int, out_height: int = 1, weight_bytes: int = 0) -> VnniKnobs:
    """As many 16-channel vectors as divide the channels (at most 4), then as many pixels
    dividing the width as the 24 accumulators leave. Weights of more than ``STREAMED`` bytes
    are read from beyond L2 once per register tile: a small image whose rows the tile does
    not fill gets tiles of whole rows, as many as the accumulators hold (ResNet-18's last
    3x3 convs at 3x3 pixels: their 2.4 MB of weights read once, not once per row)."""
    vectors = max(v for v in (1, 2, 4) if (out_channels // OC_BLOCK) % v == 0)
    budget = ACCUMULATORS // vectors
    width = max(d for d in range(1, min(out_width, budget) + 1) if out_width % d == 0)
    if width < budget // 2 and out_width > budget:  # a poor divisor (a prime width): predicate the last tile
        width = budget
    if weight_bytes <= STREAMED or out_height == 1 or out_width * 2 > ACCUMULATORS:
        return VnniKnobs(vectors, width)
    tiles = [VnniKnobs(v, out_width, r) for v in (1, 2, 4) if (out_channels // OC_BLOCK) % v == 0
             for r in range(1, out_height + 1) if out_height % r == 0 and v * r * out_width <= ACCUMULATORS]
    return max(tiles, key=lambda k: (k.tile_rows * k.tile_width, k.tile_vectors))


def find_vnni_conv(func: tvm.tirx.PrimFunc) -> bool:
    sch = s_tir.Schedule(func)
    try:
        sch.get_sblock(BLOCK)
    except s_tir.ScheduleError:
        return False
    return True


def schedule_vnni_conv(func: tvm.tirx.PrimFunc, knobs: VnniKnobs | None = None):
    """``func`` (holding one ``vnni_conv`` block and its fused epilogue) scheduled, and the
    knobs used. Raises ``ScheduleError`` if the schedule does not apply."""
    sch = s_tir.Schedule(func)
    conv, out = sch.get_sblock(BLOCK), sch.get_sblock(OUT_BLOCK)
    inline_side_inputs(sch, conv)
    n, y, x, f, ry, rx, rc, rci = sch.get_loops(conv)
    out_channels, out_height = int(sch.get(f).extent), int(sch.get(y).extent)
    out_width = int(sch.get(sch.get_loops(out)[2]).extent)
    weight_bytes = max(int(np.prod([int(d) for d in p.ty.shape])) for p in func.params
                       if hasattr(p.ty, "shape") and str(p.ty.dtype) == "int8" and len(p.ty.shape) == 6)
    knobs = knobs or default_vnni_knobs(out_channels, out_width, out_height, weight_bytes)
    if int(sch.get(x).extent) % knobs.tile_width or out_height % knobs.tile_rows:
        raise ValueError(f"tile of {knobs.tile_rows}x{knobs.tile_width} pixels does not divide the kernel's "
                         f"{out_height}x{sch.get(x).extent}")
    fo, fv, fi = sch.split(f, [None, knobs.tile_vectors, OC_BLOCK])
    xo, xi = sch.split(x, [None, knobs.tile_width])
    yo, yi = sch.split(y, [None, knobs.tile_rows])
    sch.reorder(n, yo, fo, xo, ry, rx, rc, yi, xi, fv, fi, rci)
    sch.set_scope(conv, 0, "local")  # the accumulators: one register tile, written back by OUT_BLOCK
    sch.reverse_compute_at(out, xo)
    pads = [p for p in sch.get_producers(conv) if sch.get(p).name_hint == "pad_temp"]
    if knobs.tile_rows == 1:  # rows in parallel, each padding the input rows it reads
        row = sch.fuse(n, yo)
        for pad in pads:
            sch.compute_at(pad, row)
    else:  # tiles of several rows (a small image): tiles of channels in parallel, the image padded once
        row = sch.fuse(n, yo, fo)
    sch.parallel(row)
    for pad in pads:
        sch.vectorize(sch.get_loops(pad)[-1])
    init = sch.decompose_reduction(conv, ry)
    sch.vectorize(sch.get_loops(init)[-1])
    for loop in (ry, rx, yi, xi, fv):
        sch.unroll(loop)
    sch.tensorize(fi, _register_intrinsic())

    fold_epilogue(sch, out, tuple(int(v.dom.extent) for v in sch.get(out).iter_vars))  # correction, requantization, residual
    last = sch.get_loops(out)[-1]
    extent = int(sch.get(last).extent)
    width = max(w for w in (1, 2, 4, 8, OC_BLOCK) if extent % w == 0)
    if extent > width > 1:
        _, last = sch.split(last, [None, width])
    sch.vectorize(last)
    return sch.mod["main"].with_attr("tirx.is_scheduled", True), knobs
