"""Integer convs on the CPU's dot-product instructions: AVX-512 VNNI (``vpdpbusd``, uint8 x int8
-> int32, four products summed into each 32-bit lane) or AVX2 (``vpmaddwd``, int16 x int16 ->
int32, two products a lane, then ``vpaddd``); ``DotKind`` says which, ``dot_kind`` picks the
target's.

The kernel (``vnni_conv``, a TE compute) is an NHWC conv of uint8 activations with the weights
pre-packed at compile time: VNNI ``[OC/16, KH, KW, IC/4, 16, 4]`` int8 (one 64-byte vector holds 16
output channels x 4 input channels, the order ``vpdpbusd`` reads them in), AVX2 ``[OC/8, KH, KW,
IC/2, 8, 2]`` int16 (the activations widened to int16 as the padded rows are copied). The
activations' input channels of a vector step at a pixel are contiguous in NHWC: one 32-bit
broadcast. Padding is the activation zero point (``pad_value``), so every window is full and the
caller subtracts ``zero point * sum of the weights`` per output channel once (exact: the
accumulators are int32 whatever the order, and neither instruction saturates: ``vpmaddwd``'s
pair sums of 255 x 128 fit its int32 lanes).

``schedule_vnni_conv`` register-blocks it: a tile of ``tile_vectors`` x 16 (8) output channels x
``tile_width`` pixels in vector accumulators, the inner reduction tensorized with the kind's
intrinsic, padded rows materialized per output row, rows in parallel, the fused epilogue (the
compensation, bias, requantization) in the accumulators' write-back. On this AVX2 machine (AMD
EPYC znver3, session 20) ResNet-18 int8's convs ran 1.4-2.2x faster than the int32 convs before
them (24.4 against 38.6 ms, every kernel timed alone).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import tvm
from tvm import s_tir, te, topi

from .x86 import fold_epilogue, inline_side_inputs

BLOCK = "conv2d_nhwc_vnni"  # the conv block's name, how ScheduleConvs recognises the kernel
WIDEN = "widen_int16"  # the AVX2 kernel's uint8 -> int16 of its input, inlined into the padded rows
OUT_BLOCK = "conv2d_nhwc_vnni_out"  # its copy to the real output width
STREAMED = 256 * 1024  # weights beyond a quarter of L2 (1 MB a core here): streamed once per register tile


@dataclass(frozen=True)
class DotKind:
    """A dot-product instruction the kernel is built on: ``oc_block`` int32 lanes, each adding
    ``ic_block`` products of a ``data_dtype`` activation and a ``weight_dtype`` weight."""

    name: str
    instruction: str
    oc_block: int
    ic_block: int
    data_dtype: str
    weight_dtype: str
    accumulators: int  # vector registers a register tile holds
    max_vectors: int  # output-channel vectors a register tile holds at most
    intrinsic: str


#: AVX-512 VNNI: ``vpdpbusd``, 16 lanes of 4 uint8 x int8 products; 24 of the 32 zmm registers.
VNNI = DotKind("VNNI", "vpdpbusd", 16, 4, "uint8", "int8", 24, 4, "tvm_s2d_dot_16x4_vnni_local")
#: AVX2: ``vpmaddwd``, 8 lanes of 2 int16 x int16 products (the uint8 activations widened as the
#: padded rows are copied, the weights packed as int16), then ``vpaddd``: exact (ORT's AVX2 kernels
#: use ``vpmaddubsw``, whose int16 pair sums saturate). 10 of the 16 ymm registers: LLVM unrolls
#: the reduction by 2 (two weight vectors, broadcasts and products live), and 12 accumulators
#: spilled (session 20, the float convs' 13-pixel tiles: every accumulator through the stack).
AVX2 = DotKind("AVX2", "vpmaddwd", 8, 2, "int16", "int16", 10, 2, "tvm_s2d_dot_8x2_avx2_local")
KINDS = (VNNI, AVX2)


def dot_kind(target: tvm.target.Target | None) -> DotKind | None:
    """The dot-product kernel the LLVM target's CPU runs: VNNI with AVX-512 VNNI, else AVX2 with
    AVX2, else None (a target without ``mcpu``: generic x86-64)."""
    if target is None or target.kind.name != "llvm" or not target.attrs.get("mcpu"):
        return None
    features = tvm.target.codegen.llvm_get_cpu_features(target)
    if "avx512vnni" in features and "avx512bw" in features:
        return VNNI
    return AVX2 if "avx2" in features else None


def has_vnni(target: tvm.target.Target | None) -> bool:
    """Whether the LLVM target's CPU has AVX-512 VNNI (``vpdpbusd`` on zmm registers)."""
    return dot_kind(target) is VNNI


def kind_of(weight_dtype: str) -> DotKind:
    """The kind whose packed weights are of ``weight_dtype``."""
    return next(k for k in KINDS if k.weight_dtype == str(weight_dtype))


def vnni_conv(data: te.Tensor, weight: te.Tensor, strides, padding, dilation, pad_value: int,
              out_channels: int | None = None, flat_width: int = 0) -> te.Tensor:
    """``data`` NHWC uint8 (channels a multiple of 4), ``weight`` int8 ``[OC/16, KH, KW, IC/4, 16,
    4]`` (VNNI) or int16 ``[OC/8, KH, KW, IC/2, 8, 2]`` (AVX2: the padded input widened to int16);
    the int32 NHWC sum over taps of the padded data (padded with ``pad_value``) times the
    weights, without any zero-point correction, ``out_channels`` of them (default: all the packed
    ones; fewer when the weights were padded to whole vectors). The conv block computes a width
    rounded up to whole register tiles (``default_vnni_knobs``; the input padded further right with
    ``pad_value``), so that every tile is whole (a tensorized block cannot be predicated);
    ``OUT_BLOCK`` copies the real width out (the schedule makes it the accumulators'
    write-back). ``flat_width``: the kernel's width when the weights are packed flat
    (``flat_weights``: a kernel row's taps and channels one reduction, ``[OC/ob, KH, 1, KW*C/ib, ob,
    ib]``), which reads the padded input rows as ``[N, H, W*C]`` (``flat_apply``)."""
    batch, height, width, _ = (int(d) for d in data.shape)
    ocb, kh, kw, icb, _, _ = (int(d) for d in weight.shape)
    kind = kind_of(weight.dtype)
    ob, ib = kind.oc_block, kind.ic_block
    sh, sw = (int(s) for s in strides)
    dh, dw = (int(d) for d in dilation)
    top, left, bottom, right = (int(p) for p in padding)
    out_h = (height + top + bottom - (kh - 1) * dh - 1) // sh + 1
    out_w = (width + left + right - ((flat_width or kw) - 1) * dw - 1) // sw + 1
    tile = default_vnni_knobs(ocb * ob, out_w, out_h, ocb * kh * kw * icb * ob * ib, kind).tile_width
    whole_w = -(-out_w // tile) * tile
    if flat_width:
        read = _flat_rows(data, kind, padding, pad_value, sh, sw, (whole_w - 1) * sw * int(data.shape[3]) + icb * ib)
    else:
        right = max(right, (whole_w - 1) * sw + (kw - 1) * dw + 1 - width - left)
        channels = icb * ib - int(data.shape[3])  # input channels padded to whole groups (zero weights)
        if kind.data_dtype != str(data.dtype):  # widened as the padded rows are copied (the schedule inlines it)
            data = te.compute(data.shape, lambda *i: data(*i).astype(kind.data_dtype), name=WIDEN)
        padded = topi.nn.pad(data, [0, top, left, 0], [0, bottom, right, channels],
                             pad_value=tvm.tirx.const(pad_value, kind.data_dtype), name="pad_temp")

        def read(n, y, x, ry, rx, rc, rci):
            return padded[n, y * sh + ry * dh, x * sw + rx * dw, rc * ib + rci]
    ry, rx = te.reduce_axis((0, kh), "ry"), te.reduce_axis((0, kw), "rx")
    rc, rci = te.reduce_axis((0, icb), "rc"), te.reduce_axis((0, ib), "rci")
    conv = te.compute(
        (batch, out_h, whole_w, ocb * ob),
        lambda n, y, x, f: te.sum(
            read(n, y, x, ry, rx, rc, rci).astype("int32") * weight[f // ob, ry, rx, rc, f % ob, rci].astype("int32"),
            axis=[ry, rx, rc, rci]),
        name=BLOCK,
    )
    out_channels = out_channels or ocb * ob
    return te.compute((batch, out_h, out_w, out_channels), lambda n, y, x, f: conv[n, y, x, f], name=OUT_BLOCK)


def flat_apply(in_channels: int, kernel_width: int, dilation, kind: DotKind) -> bool:
    """Whether a conv's weights pack flat (``flat_weights``): channels fewer than the kind's group
    (an RGB stem's 3 of 4 or 2 x 2), a kernel row of several taps, no dilation, and fewer
    reduction groups so (7x7 on 3 channels, AVX2: 11 pairs a row instead of 14)."""
    ib = kind.ic_block
    return (in_channels % ib != 0 and kernel_width > 1 and all(int(d) == 1 for d in dilation)
            and -(-kernel_width * in_channels // ib) < kernel_width * -(-in_channels // ib))


def flat_weights(w: np.ndarray, kind: DotKind) -> np.ndarray:
    """HWIO weights ``[KH, KW, C, OC]`` packed flat: ``[OC/ob, KH, 1, ceil(KW*C/ib), ob, ib]``, a
    row's (tap, channel) pairs in order, zero weights to whole groups and vectors."""
    kh, kw, c, oc = w.shape
    ib, ob = kind.ic_block, kind.oc_block
    taps, padded_oc = -(-kw * c // ib) * ib, -(-oc // ob) * ob
    flat = np.zeros((kh, taps, padded_oc), kind.weight_dtype)
    flat[:, : kw * c, :oc] = w.reshape(kh, kw * c, oc)
    return np.ascontiguousarray(flat.reshape(kh, 1, taps // ib, ib, padded_oc // ob, ob).transpose(4, 0, 1, 2, 5, 3))


def _flat_rows(data, kind: DotKind, padding, pad_value: int, sh: int, sw: int, row: int):
    """``vnni_conv``'s read on flat weights: the padded rows as ``[N, H, row]`` (``row``: W*C and
    more, to the last tile's last window's groups; the pad and the widening in one copy), a window
    row's ``KW*C`` values one reduction read from ``x * sw * C``."""
    batch, height, width, c = (int(d) for d in data.shape)
    top, left, bottom, _ = (int(p) for p in padding)
    pad_value = tvm.tirx.const(pad_value, kind.data_dtype)
    ib = kind.ic_block

    def padded_value(n, y, k):
        iy, ix = y - top, k // c - left
        inside = tvm.tirx.all(iy >= 0, iy < height, ix >= 0, ix < width)
        return tvm.tirx.if_then_else(inside, data[n, iy, ix, k % c].astype(kind.data_dtype), pad_value)

    padded = te.compute((batch, height + top + bottom, row), padded_value, name="pad_temp")

    def read(n, y, x, ry, rx, rc, rci):
        return padded[n, y * sh + ry, x * sw * c + rx + rc * ib + rci]

    return read


def _register_intrinsic(kind: DotKind = VNNI) -> str:
    """The kind's dot product with the accumulator in registers (``local`` scope: the register
    tile of the schedule), registered once as ``kind.intrinsic``: TVM's ``dot_16x4_vnni``
    (``vpdpbusd``) or, for AVX2, ``vpmaddwd`` of a broadcast pair of int16 activations and 8 x 2
    int16 weights added to the accumulators."""
    from tvm.s_tir import TensorIntrin
    from tvm.script import tirx as T

    if TensorIntrin.get(kind.intrinsic, allow_missing=True) is not None:
        return kind.intrinsic
    ob, ib, a_dtype, b_dtype = kind.oc_block, kind.ic_block, kind.data_dtype, kind.weight_dtype
    vector = f"int32x{ob}"

    @T.prim_func(s_tir=True)
    def desc(a: T.handle, b: T.handle, c: T.handle) -> None:
        A = T.match_buffer(a, (ib,), a_dtype, offset_factor=1)
        B = T.match_buffer(b, (ob, ib), b_dtype, offset_factor=1)
        C = T.match_buffer(c, (ob,), "int32", offset_factor=1, scope="local")
        with T.sblock("root"):
            T.reads(C[0:ob], A[0:ib], B[0:ob, 0:ib])
            T.writes(C[0:ob])
            for i in T.serial(0, ob):
                for k in T.serial(0, ib):
                    with T.sblock("update"):
                        vi, vk = T.axis.remap("SR", [i, k])
                        C[vi] = C[vi] + T.cast(A[vk], "int32") * T.cast(B[vi, vk], "int32")

    a_lanes, b_lanes = f"{a_dtype}x{ib}", f"{b_dtype}x{ob * ib}"
    if kind is VNNI:  # LLVM 20 declares vpdpbusd on <64 x i8> operands (TVM 0.27's own dot_16x4_vnni,
        operands = "int8x64" if _llvm_major() >= 20 else "int32x16"  # for <16 x i32>, fails its verifier)

        def dot(acc, a, b):
            return T.call_llvm_pure_intrin(T.llvm_lookup_intrinsic_id("llvm.x86.avx512.vpdpbusd.512"), acc,
                                           T.reinterpret(a, dtype=operands), T.reinterpret(b, dtype=operands), dtype=vector)
    else:
        def dot(acc, a, b):
            return acc + T.call_llvm_pure_intrin(T.llvm_lookup_intrinsic_id("llvm.x86.avx2.pmadd.wd"),
                                                 T.reinterpret(a, dtype="int16x16"), b, dtype=vector)

    @T.prim_func(s_tir=True)
    def impl(a: T.handle, b: T.handle, c: T.handle) -> None:
        A = T.match_buffer(a, (ib,), a_dtype, offset_factor=1)
        B = T.match_buffer(b, (ob, ib), b_dtype, offset_factor=1)
        C = T.match_buffer(c, (ob,), "int32", offset_factor=1, scope="local")
        with T.sblock("root"):
            T.reads(C[0:ob], A[0:ib], B[0:ob, 0:ib])
            T.writes(C[0:ob])
            a_i32 = T.reinterpret(A.vload([0], a_lanes), dtype="int32")
            C[T.ramp(T.int32(0), 1, ob)] = dot(C.vload([0], dtype=vector), T.broadcast(a_i32, ob),
                                               B.vload([0, 0], dtype=b_lanes))

    TensorIntrin.register(kind.intrinsic, desc, impl)
    return kind.intrinsic


def _llvm_major() -> int:
    try:
        return int(tvm.target.codegen.llvm_version_major())
    except (AttributeError, RuntimeError):
        return 0


@dataclass(frozen=True)
class VnniKnobs:
    tile_vectors: int  # vectors of output channels (the kind's ``oc_block``) per register tile
    tile_width: int  # output pixels of a row per register tile
    tile_rows: int = 1  # output rows per register tile


def default_vnni_knobs(out_channels: int, out_width: int, out_height: int = 1, weight_bytes: int = 0,
                       kind: DotKind = VNNI) -> VnniKnobs:
    """As many vectors of ``kind.oc_block`` channels as divide the channels (at most
    ``kind.max_vectors``: 4 of 16 for VNNI, 2 of 8 for AVX2), then as many pixels dividing the
    width as the kind's accumulators (24, 10) leave. Weights of more than ``STREAMED`` bytes
    are read from beyond L2 once per register tile: a small image whose rows the tile does
    not fill gets tiles of whole rows, as many as the accumulators hold (ResNet-18's last
    3x3 convs at 3x3 pixels: their 2.4 MB of weights read once, not once per row)."""
    ob, accumulators = kind.oc_block, kind.accumulators
    vectors = max(v for v in (1, 2, 4) if (out_channels // ob) % v == 0 and v <= kind.max_vectors)
    budget = accumulators // vectors
    width = max(d for d in range(1, min(out_width, budget) + 1) if out_width % d == 0)
    if width < budget // 2 and out_width > budget:  # a poor divisor (a prime width): predicate the last tile
        width = budget
    if weight_bytes <= STREAMED or out_height == 1 or out_width * 2 > accumulators:
        return VnniKnobs(vectors, width)
    tiles = [VnniKnobs(v, out_width, r) for v in (1, 2, 4) if (out_channels // ob) % v == 0 and v <= kind.max_vectors
             for r in range(1, out_height + 1) if out_height % r == 0 and v * r * out_width <= accumulators]
    return max(tiles, key=lambda k: (k.tile_rows * k.tile_width, k.tile_vectors))


def _packed_weights(func: tvm.tirx.PrimFunc):
    return next(p.ty for p in func.params if hasattr(p.ty, "shape") and len(p.ty.shape) == 6
                and str(p.ty.dtype) in [k.weight_dtype for k in KINDS])


def func_kind(func: tvm.tirx.PrimFunc) -> DotKind:
    """The kind of a ``vnni_conv`` kernel (by its packed weights' type)."""
    return kind_of(_packed_weights(func).dtype)


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
    weights = _packed_weights(func)
    kind = kind_of(weights.dtype)
    weight_bytes = int(np.prod([int(d) for d in weights.shape])) * tvm.DataType(kind.weight_dtype).bits // 8
    knobs = knobs or default_vnni_knobs(out_channels, out_width, out_height, weight_bytes, kind)
    if int(sch.get(x).extent) % knobs.tile_width or out_height % knobs.tile_rows:
        raise ValueError(f"tile of {knobs.tile_rows}x{knobs.tile_width} pixels does not divide the kernel's "
                         f"{out_height}x{sch.get(x).extent}")
    fo, fv, fi = sch.split(f, [None, knobs.tile_vectors, kind.oc_block])
    xo, xi = sch.split(x, [None, knobs.tile_width])
    yo, yi = sch.split(y, [None, knobs.tile_rows])
    sch.reorder(n, yo, fo, xo, ry, rx, rc, yi, xi, fv, fi, rci)
    sch.set_scope(conv, 0, "local")  # the accumulators: one register tile, written back by OUT_BLOCK
    sch.reverse_compute_at(out, xo)
    pads = [p for p in sch.get_producers(conv) if sch.get(p).name_hint == "pad_temp"]
    for widen in [w for p in pads for w in sch.get_producers(p) if sch.get(w).name_hint == WIDEN]:
        sch.compute_inline(widen)
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
    sch.tensorize(fi, _register_intrinsic(kind))

    fold_epilogue(sch, out, tuple(int(v.dom.extent) for v in sch.get(out).iter_vars))  # correction, requantization, residual
    last = sch.get_loops(out)[-1]
    extent = int(sch.get(last).extent)
    width = max(w for w in (1, 2, 4, 8, kind.oc_block) if extent % w == 0)
    if extent > width > 1:
        _, last = sch.split(last, [None, width])
    sch.vectorize(last)
    return sch.mod["main"].with_attr("tirx.is_scheduled", True), knobs
