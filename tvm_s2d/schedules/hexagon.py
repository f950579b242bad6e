"""HVX ``vrmpy`` schedules for uint8 x int8 convs in the channel-in-lanes mapping.

``vrmpy`` (128-byte HVX) adds to 32 int32 lanes a 4-way dot product of 4 bytes. A conv uses
it with output channels in the lanes and input channels 4 at a time:

* activations NHWC, channels padded to a multiple of 4 (and spatially pre-padded);
* weights packed ``[Co/32, kh, kw, Ci/4, 32, 4]`` (``pack_weight``), done at compile time;
* outputs ``[N, OH, OW, Co/32, 32]`` int32.

One ``vrmpy`` per output pixel, 32-channel output block, tap and 4 input channels: a conv
with 8 channels leaves 24 of 32 lanes idle, its S2D form fills them. The same template
serves the original conv and the space-to-depth one (``geometry.S2DConvPlan``).

The ``vrmpy`` is the vector-by-scalar form (``vrmpyub``: the weights' vector times the 4
activation bytes of a pixel in a scalar register), which issues two per packet on v66; the
vector-by-vector form (weights and a broadcast pixel) issues one. That form multiplies
unsigned bytes, so the weights are packed as ``W + 128`` and each pixel's result is
corrected by ``-128 x`` the sum of its input window (``window_offsets``, a second kernel:
channel sums by ``vrmpy`` with ones and a tree of ``vdeal`` + add, then vectorized box sums).
int32 arithmetic wraps, so the result is exact whenever the conv's own result fits int32.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import tvm
from tvm import te
from tvm.s_tir import TensorIntrin
from tvm.script import tirx as T

from ..geometry import Unsupported

VRMPY_LANES = "s2d_vrmpyub_weights_by_pixel_scalar"
LANES, DEPTH = 32, 4
WEIGHT_OFFSET = 128  # packed weights are W + 128 (uint8)


def _vrmpy_weights_by_pixel():
    """``C[32] += W[32 channels, 4] (u8) . A[4] (u8 pixel bytes)``: ``vrmpyub`` with the
    accumulator in "local" scope, so a block of output pixels accumulates in HVX registers."""

    @T.prim_func(s_tir=True)
    def desc(a: T.handle, b: T.handle, c: T.handle) -> None:
        A = T.match_buffer(a, (4,), "uint8", offset_factor=1)
        B = T.match_buffer(b, (32, 4), "uint8", offset_factor=1)
        C = T.match_buffer(c, (32,), "int32", offset_factor=1, scope="local")
        with T.sblock("root"):
            T.reads(C[0:32], A[0:4], B[0:32, 0:4])
            T.writes(C[0:32])
            for i in T.serial(0, 32):
                for k in T.serial(0, 4):
                    with T.sblock("update"):
                        vi, vk = T.axis.remap("SR", [i, k])
                        C[vi] = C[vi] + T.cast(A[vk], "int32") * T.cast(B[vi, vk], "int32")

    @T.prim_func(s_tir=True)
    def impl(a: T.handle, b: T.handle, c: T.handle) -> None:
        A = T.match_buffer(a, (4,), "uint8", offset_factor=1)
        B = T.match_buffer(b, (32, 4), "uint8", offset_factor=1)
        C = T.match_buffer(c, (32,), "int32", offset_factor=1, scope="local")
        with T.sblock("root"):
            T.reads(C[0:32], A[0:4], B[0:32, 0:4])
            T.writes(C[0:32])
            C[T.ramp(T.int32(0), 1, 32)] = T.call_llvm_pure_intrin(
                T.llvm_lookup_intrinsic_id("llvm.hexagon.V6.vrmpyub.acc.128B"),
                C[T.ramp(T.int32(0), 1, 32)],
                T.reinterpret(B.vload([0, 0], dtype="uint8x128"), dtype="int32x32"),
                T.reinterpret(A.vload([0], "uint8x4"), dtype="int32"),
                dtype="int32x32",
            )

    return desc, impl


if TensorIntrin.get(VRMPY_LANES, allow_missing=True) is None:
    TensorIntrin.register(VRMPY_LANES, *_vrmpy_weights_by_pixel())


#: The HVX mappings of a conv, and the name of each one's knob.
MAPPINGS = {"lanes": "pixels", "width": "channels"}


def mapped_conv(mapping: str, batch: int, in_hw, cin: int, cout: int, kernel_hw, strides, padding):
    """The packed conv (``PackedConv`` for "lanes", ``WidthConv`` for "width") computing a conv
    on an ``in_hw`` input with ``padding``; ``Unsupported`` for the width mapping of a strided conv."""
    t, l, b, r = padding
    padded = (in_hw[0] + t + b, in_hw[1] + l + r)
    if mapping == "lanes":
        return PackedConv(batch, padded, cin, cout, tuple(kernel_hw), tuple(strides))
    if mapping == "width":
        if tuple(strides) != (1, 1):
            raise Unsupported(f"the width mapping needs a stride-1 conv, this one has strides {tuple(strides)}")
        out_hw = (padded[0] - kernel_hw[0] + 1, padded[1] - kernel_hw[1] + 1)
        return WidthConv(batch, out_hw, cin, cout, tuple(kernel_hw))
    raise ValueError(f"mapping must be one of {', '.join(MAPPINGS)}, got {mapping!r}")


def schedule_mapping(func: tvm.tirx.PrimFunc, mapping: str, knob: int) -> tvm.tirx.PrimFunc:
    """``mapped_conv(mapping, ...).compute()`` scheduled with its ``vrmpy`` form and knob."""
    return schedule_vrmpy(func, pixels=knob) if mapping == "lanes" else schedule_width_vrmpy(func, channels=knob)


def default_mapping(out_channels: int, out_width: int, strides) -> tuple[str, int]:
    """The HVX mapping and knob used without a tuning record: the one that executes fewer
    ``vrmpy`` (channel-in-lanes pads the output channels to 32, width-vectorized the output
    width; on a tie channel-in-lanes, a few % fewer packets on the 32-channel control layer);
    width only for stride-1 convs. Both issue two ``vrmpy`` per packet."""
    if tuple(strides) != (1, 1):
        return "lanes", 4
    lanes = out_width * _roundup(out_channels, LANES)
    width = _roundup(out_width, LANES) * out_channels
    return ("lanes", 4) if lanes <= width else ("width", 8)


def conv_signature(batch: int, in_hw, in_channels: int, out_channels: int, kernel_hw, strides, padding) -> str:
    """What identifies the conv an HVX kernel computes (a tuning record names it, so the pass
    that builds kernels finds the record of the conv it is building)."""
    return (f"{batch}x{in_hw[0]}x{in_hw[1]}x{in_channels}:{out_channels}:{kernel_hw[0]}x{kernel_hw[1]}"
            f":s{strides[0]}x{strides[1]}:p{'x'.join(str(p) for p in padding)}")


def _roundup(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


@dataclass(frozen=True)
class PackedConv:
    """A stride-``s`` conv on a pre-padded NHWC uint8 input, packed for ``vrmpy``: two kernels,
    ``window_offsets()`` (input -> per-pixel offsets) and ``compute()`` (input, packed weights,
    offsets -> output)."""

    batch: int
    in_hw: tuple[int, int]  # spatial size of the padded input
    in_channels: int
    out_channels: int
    kernel_hw: tuple[int, int]
    strides: tuple[int, int] = (1, 1)

    @property
    def cin(self) -> int:
        return _roundup(self.in_channels, DEPTH)

    @property
    def cout_blocks(self) -> int:
        return _roundup(self.out_channels, LANES) // LANES

    @property
    def out_hw(self) -> tuple[int, int]:
        return tuple((self.in_hw[i] - self.kernel_hw[i]) // self.strides[i] + 1 for i in (0, 1))

    @property
    def input_shape(self) -> tuple[int, ...]:
        return (self.batch, *self.in_hw, self.cin)

    @property
    def weight_shape(self) -> tuple[int, ...]:
        return (self.cout_blocks, *self.kernel_hw, self.cin // DEPTH, LANES, DEPTH)

    @property
    def offsets_shape(self) -> tuple[int, ...]:
        return (self.batch, *self.out_hw)

    @property
    def output_shape(self) -> tuple[int, ...]:
        return (self.batch, *self.out_hw, self.cout_blocks, LANES)

    @property
    def vrmpy_count(self) -> int:
        """vrmpy instructions the conv executes (each 32 x 4 = 128 MACs)."""
        n, (oh, ow), (kh, kw) = self.batch, self.out_hw, self.kernel_hw
        return n * oh * ow * self.cout_blocks * kh * kw * (self.cin // DEPTH)

    def compute(self) -> tvm.tirx.PrimFunc:
        """``out = sum(x * Wp) + offsets`` with ``Wp = W + 128`` packed, as plain loops."""
        x = te.placeholder(self.input_shape, "uint8", name="data")
        w = te.placeholder(self.weight_shape, "uint8", name="weight")
        offsets = te.placeholder(self.offsets_shape, "int32", name="offsets")
        kh = te.reduce_axis((0, self.kernel_hw[0]), name="kh")
        kw = te.reduce_axis((0, self.kernel_hw[1]), name="kw")
        c4 = te.reduce_axis((0, self.cin // DEPTH), name="c4")
        ci = te.reduce_axis((0, DEPTH), name="ci")
        sh, sw = self.strides
        conv = te.compute(
            self.output_shape,
            lambda n, h, w_, ko, co: te.sum(
                x[n, h * sh + kh, w_ * sw + kw, c4 * DEPTH + ci].astype("int32")
                * w[ko, kh, kw, c4, co, ci].astype("int32"),
                axis=[kh, kw, c4, ci],
            ),
            name="conv",
        )
        out = te.compute(self.output_shape, lambda n, h, w_, ko, co: conv[n, h, w_, ko, co] + offsets[n, h, w_],
                         name="out")
        return te.create_prim_func([x, w, offsets, out])

    def window_offsets(self, hvx: bool = True) -> tvm.tirx.PrimFunc:
        """``offsets[n, oh, ow] = -128 x`` the sum of the input window (all channels) of each
        output pixel: the HVX kernel (``window_offsets``), or with ``hvx=False`` plain loops."""
        if hvx:
            return window_offsets(self.input_shape, self.kernel_hw, self.strides)
        x = te.placeholder(self.input_shape, "uint8", name="data")
        kh = te.reduce_axis((0, self.kernel_hw[0]), name="kh")
        kw = te.reduce_axis((0, self.kernel_hw[1]), name="kw")
        c = te.reduce_axis((0, self.cin), name="c")
        sh, sw = self.strides
        sums = te.compute(self.offsets_shape, lambda n, h, w_: te.sum(
            x[n, h * sh + kh, w_ * sw + kw, c].astype("int32"), axis=[kh, kw, c]), name="sums")
        offsets = te.compute(self.offsets_shape, lambda *i: sums(*i) * -WEIGHT_OFFSET, name="offsets")
        return te.create_prim_func([x, offsets])

    def pack_weight(self, weight_oihw: np.ndarray) -> np.ndarray:
        """OIHW int8 -> ``W + 128`` as uint8 ``[Co/32, kh, kw, Ci/4, 32, 4]``, zero-padded
        channels (128 once packed)."""
        o, c, kh, kw = weight_oihw.shape
        padded = np.zeros((self.cout_blocks * LANES, self.cin, kh, kw), np.int16)
        padded[:o, :c] = weight_oihw
        packed = padded.reshape(self.cout_blocks, LANES, self.cin // DEPTH, DEPTH, kh, kw).transpose(0, 4, 5, 2, 1, 3)
        return np.ascontiguousarray(packed + WEIGHT_OFFSET).astype(np.uint8)

    def pack_input(self, x_nchw: np.ndarray, padding=(0, 0, 0, 0), pad_value: int = 0) -> np.ndarray:
        """NCHW uint8 -> padded NHWC with channels padded to 4."""
        t, l, b, r = padding
        n, c, h, w = x_nchw.shape
        out = np.full((n, h + t + b, w + l + r, self.cin), pad_value, np.uint8)
        out[:, t : t + h, l : l + w, :c] = x_nchw.transpose(0, 2, 3, 1)
        out[..., c:] = 0
        return out

    def unpack_output(self, y: np.ndarray) -> np.ndarray:
        """``[N, OH, OW, Co/32, 32]`` -> NCHW with the real output channels."""
        n, oh, ow = y.shape[:3]
        return y.reshape(n, oh, ow, -1)[..., : self.out_channels].transpose(0, 3, 1, 2)


def schedule_vrmpy(func: tvm.tirx.PrimFunc, pixels: int = 4) -> tvm.tirx.PrimFunc:
    """Tensorize ``PackedConv.compute()``'s (32 lanes x 4 channels) block with ``vrmpyub``.

    Knob for the tuner: ``pixels`` output columns share each weight vector (their accumulators
    stay in registers, unrolled); the offsets are added as the accumulators are written back.
    """
    sch = tvm.s_tir.Schedule(func)
    conv, out = sch.get_sblock("conv"), sch.get_sblock("out")
    n, h, w, ko, co, kh, kw, c4, ci = sch.get_loops(conv)
    ow = int(sch.get(w).extent)
    pixels = max(1, min(pixels, ow))
    while ow % pixels:
        pixels -= 1
    wo, wi = sch.split(w, [None, pixels])
    sch.reorder(n, h, ko, wo, kh, kw, c4, wi, co, ci)
    sch.set_scope(conv, 0, "local")
    sch.reverse_compute_at(out, wo)
    init = sch.decompose_reduction(conv, kh)
    sch.tensorize(co, VRMPY_LANES)
    sch.unroll(wi)
    sch.unroll(kw)
    for stage in (init, out):  # offsets / write back, 32 lanes at a time
        sch.vectorize(sch.get_loops(stage)[-1])
    return sch.mod["main"]


def _hvx(name: str, *args, dtype: str = "int32x32"):
    """The HVX intrinsic ``llvm.hexagon.V6.<name>.128B`` on ``args`` (in the hand-written kernels)."""
    return T.call_llvm_pure_intrin(T.llvm_lookup_intrinsic_id(f"llvm.hexagon.V6.{name}.128B"), *args, dtype=dtype)


def _deal(high, low, size: int):
    """``vdeal`` of the vector pair ``low ++ high`` in elements of ``size`` bytes: the even
    elements (``lo`` of the result), then the odd ones (``hi``)."""
    return _hvx("vdealvdd", high, low, -size, dtype="int32x64")


@T.macro
def _halve(parts, count):
    """parts[k] = pairwise sums of the words of parts[2k] ++ parts[2k+1], k < count (``vdeal``
    of words splits even and odd words; the order of the pixels is kept)."""
    for k in T.unroll(count):
        pair = _deal(parts[2 * k + 1, T.ramp(0, 1, 32)], parts[2 * k, T.ramp(0, 1, 32)], 4)
        parts[k, T.ramp(0, 1, 32)] = _hvx("lo", pair) + _hvx("hi", pair)


def window_offsets(shape_nhwc, kernel_hw, strides) -> tvm.tirx.PrimFunc:
    """NHWC uint8 ``[N, H, W, C]`` (C a multiple of 4) -> int32 ``[N, OH, OW]``: ``-128 x`` the
    sum of each output pixel's ``kernel_hw`` window over all channels.

    Channel sums, 32 pixels at a time: ``vrmpy`` with ones sums 4 bytes per word, then
    ``log2(C / 4)`` rounds of ``vdeal`` + add sum a pixel's words (C / 4 a power of two up to
    32; other channel counts and the last pixels use a plain loop). Box sums: 32 output
    columns per vector, one add per tap."""
    n, h, w, c = shape_nhwc
    words = c // DEPTH
    rounds = words.bit_length() - 1
    pixels = n * h * w
    groups = pixels // LANES if channel_groups_apply(c) else 0
    kh, kw = kernel_hw
    sh, sw = strides
    oh, ow = (h - kh) // sh + 1, (w - kw) // sw + 1
    ones = 0x01010101

    @T.prim_func(s_tir=True)  # a root block, as relax's pattern analysis expects
    def offsets(a: T.Buffer((n, h, w, c), "uint8"), out: T.Buffer((n, oh, ow), "int32")):
        T.func_attr({"tirx.noalias": True})
        with T.sblock("root"):
            flat = T.decl_buffer((pixels * c,), "uint8", data=a.data)
            sums = T.sblock_alloc_buffer((pixels,), "int32")
            parts = T.sblock_alloc_buffer((words, LANES), "int32", scope="local")
            acc = T.sblock_alloc_buffer((LANES,), "int32", scope="local")
            for g in range(groups):
                for v in T.unroll(words):
                    parts[v, T.ramp(0, 1, 32)] = _hvx(
                        "vrmpyub", T.reinterpret(flat.vload([g * LANES * c + v * 128], "uint8x128"), dtype="int32x32"),
                        ones)
                if rounds >= 1:
                    _halve(parts, words // 2)
                if rounds >= 2:
                    _halve(parts, words // 4)
                if rounds >= 3:
                    _halve(parts, words // 8)
                if rounds >= 4:
                    _halve(parts, words // 16)
                if rounds >= 5:
                    _halve(parts, words // 32)
                sums[T.ramp(g * LANES, 1, LANES)] = parts[0, T.ramp(0, 1, 32)]
            for p in range(groups * LANES, pixels):
                sums[p] = 0
                for j in range(c):
                    sums[p] = sums[p] + T.Cast("int32", flat[p * c + j])
            for b, y in T.grid(n, oh):
                for xv in range(ow // LANES):
                    for xi in T.vectorized(LANES):
                        acc[xi] = 0
                    for i in T.unroll(kh):
                        for j in T.unroll(kw):
                            for xi in T.vectorized(LANES):
                                acc[xi] = acc[xi] + sums[(b * h + y * sh + i) * w + (xv * LANES + xi) * sw + j]
                    for xi in T.vectorized(LANES):
                        out[b, y, xv * LANES + xi] = acc[xi] * -WEIGHT_OFFSET
                for x in range(ow // LANES * LANES, ow):
                    out[b, y, x] = 0
                    for i, j in T.grid(kh, kw):
                        out[b, y, x] = out[b, y, x] - sums[(b * h + y * sh + i) * w + x * sw + j] * WEIGHT_OFFSET

    return offsets


# ---- width-vectorized mapping: 32 output pixels in the lanes, no channel padding to 32 ---------

VRMPY_BY_SCALAR = "s2d_vrmpy_u8_by_i8_scalar_local_acc"


def _vrmpy_by_scalar():
    """``C[32] += A[32 pixels, 4 channels] (u8) . B[4] (i8)``: ``vrmpybus``, the vector-by-scalar
    form, which (unlike the vector-by-vector one) issues two per packet on v66."""

    @T.prim_func(s_tir=True)
    def desc(a: T.handle, b: T.handle, c: T.handle) -> None:
        A = T.match_buffer(a, (32, 4), "uint8", offset_factor=1)
        B = T.match_buffer(b, (4,), "int8", offset_factor=1)
        C = T.match_buffer(c, (32,), "int32", offset_factor=1, scope="local")
        with T.sblock("root"):
            T.reads(C[0:32], A[0:32, 0:4], B[0:4])
            T.writes(C[0:32])
            for i in T.serial(0, 32):
                for k in T.serial(0, 4):
                    with T.sblock("update"):
                        vi, vk = T.axis.remap("SR", [i, k])
                        C[vi] = C[vi] + T.cast(A[vi, vk], "int32") * T.cast(B[vk], "int32")

    @T.prim_func(s_tir=True)
    def impl(a: T.handle, b: T.handle, c: T.handle) -> None:
        A = T.match_buffer(a, (32, 4), "uint8", offset_factor=1)
        B = T.match_buffer(b, (4,), "int8", offset_factor=1)
        C = T.match_buffer(c, (32,), "int32", offset_factor=1, scope="local")
        with T.sblock("root"):
            T.reads(C[0:32], A[0:32, 0:4], B[0:4])
            T.writes(C[0:32])
            C[T.ramp(T.int32(0), 1, 32)] = T.call_llvm_pure_intrin(
                T.llvm_lookup_intrinsic_id("llvm.hexagon.V6.vrmpybus.acc.128B"),
                C[T.ramp(T.int32(0), 1, 32)],
                T.reinterpret(A.vload([0, 0], dtype="uint8x128"), dtype="int32x32"),
                T.reinterpret(B.vload([0], "int8x4"), dtype="int32"),
                dtype="int32x32",
            )

    return desc, impl


if TensorIntrin.get(VRMPY_BY_SCALAR, allow_missing=True) is None:
    TensorIntrin.register(VRMPY_BY_SCALAR, *_vrmpy_by_scalar())


@dataclass(frozen=True)
class WidthConv:
    """A stride-1 conv with 32 output columns per vector: activations ``[N, Ci/4, H, W, 4]``
    (pre-padded, width padded so every 32-column load stays inside), weights
    ``[Co, kh, kw, Ci/4, 4]``, outputs ``[N, Co, OH, OW]`` with ``OW`` a multiple of 32."""

    batch: int
    out_hw: tuple[int, int]  # the conv's real output size
    in_channels: int
    out_channels: int
    kernel_hw: tuple[int, int]

    @property
    def cin(self) -> int:
        return _roundup(self.in_channels, DEPTH)

    @property
    def out_w(self) -> int:
        return _roundup(self.out_hw[1], LANES)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return (self.batch, self.cin // DEPTH, self.out_hw[0] + self.kernel_hw[0] - 1,
                self.out_w + self.kernel_hw[1] - 1, DEPTH)

    @property
    def weight_shape(self) -> tuple[int, ...]:
        return (self.out_channels, *self.kernel_hw, self.cin // DEPTH, DEPTH)

    @property
    def output_shape(self) -> tuple[int, ...]:
        return (self.batch, self.out_channels, self.out_hw[0], self.out_w)

    @property
    def vrmpy_count(self) -> int:
        n, o, oh, ow = self.output_shape
        return n * o * oh * (ow // LANES) * self.kernel_hw[0] * self.kernel_hw[1] * (self.cin // DEPTH)

    def compute(self) -> tvm.tirx.PrimFunc:
        x = te.placeholder(self.input_shape, "uint8", name="data")
        w = te.placeholder(self.weight_shape, "int8", name="weight")
        kh = te.reduce_axis((0, self.kernel_hw[0]), name="kh")
        kw = te.reduce_axis((0, self.kernel_hw[1]), name="kw")
        c4 = te.reduce_axis((0, self.cin // DEPTH), name="c4")
        ci = te.reduce_axis((0, DEPTH), name="ci")
        y = te.compute(
            self.output_shape,
            lambda n, o, h, w_: te.sum(
                x[n, c4, h + kh, w_ + kw, ci].astype("int32") * w[o, kh, kw, c4, ci].astype("int32"),
                axis=[kh, kw, c4, ci],
            ),
            name="conv",
        )
        return te.create_prim_func([x, w, y])

    def pack_input(self, x_nchw: np.ndarray, padding=(0, 0, 0, 0)) -> np.ndarray:
        t, l, _, _ = padding
        n, c, h, w = x_nchw.shape
        out = np.zeros(self.input_shape[:4] + (DEPTH,), np.uint8).reshape(n, self.cin, *self.input_shape[2:4])
        hh, ww = min(h, out.shape[2] - t), min(w, out.shape[3] - l)
        out[:, :c, t : t + hh, l : l + ww] = x_nchw[:, :, :hh, :ww]
        return np.ascontiguousarray(out.reshape(n, self.cin // DEPTH, DEPTH, *out.shape[2:]).transpose(0, 1, 3, 4, 2))

    def pack_weight(self, weight_oihw: np.ndarray) -> np.ndarray:
        o, c, kh, kw = weight_oihw.shape
        padded = np.zeros((o, self.cin, kh, kw), np.int8)
        padded[:, :c] = weight_oihw
        return np.ascontiguousarray(padded.reshape(o, self.cin // DEPTH, DEPTH, kh, kw).transpose(0, 3, 4, 1, 2))

    def unpack_output(self, y: np.ndarray) -> np.ndarray:
        return y[..., : self.out_hw[1]]


def schedule_width_vrmpy(func: tvm.tirx.PrimFunc, channels: int = 4) -> tvm.tirx.PrimFunc:
    """32 columns per vrmpy (vector-by-scalar), ``channels`` output channels sharing each
    activation vector, accumulators in registers (knob: ``channels``)."""
    sch = tvm.s_tir.Schedule(func)
    block = sch.get_sblock("conv")
    n, o, h, w, kh, kw, c4, ci = sch.get_loops(block)
    out_channels = int(sch.get(o).extent)
    channels = max(1, min(channels, out_channels))
    while out_channels % channels:
        channels -= 1
    oo, oi = sch.split(o, [None, channels])
    wo, wi = sch.split(w, [None, LANES])
    sch.reorder(n, oo, h, wo, kh, kw, c4, oi, wi, ci)
    accumulate = sch.cache_write(block, 0, "local")
    sch.reverse_compute_at(accumulate, wo)
    init = sch.decompose_reduction(block, kh)
    sch.tensorize(wi, VRMPY_BY_SCALAR)
    sch.unroll(oi)
    sch.unroll(kw)
    for stage in (init, accumulate):
        sch.vectorize(sch.get_loops(stage)[-1])
    return sch.mod["main"]


@T.macro
def _deal_words(src, dst, half):
    """dst[i] / dst[half + i] = even / odd words of src[2i] ++ src[2i+1], i < half."""
    for i in T.unroll(half):
        pair = _deal(src[2 * i + 1, T.ramp(0, 1, 32)], src[2 * i, T.ramp(0, 1, 32)], 4)
        dst[i, T.ramp(0, 1, 32)] = _hvx("lo", pair)
        dst[half + i, T.ramp(0, 1, 32)] = _hvx("hi", pair)


def channel_groups_apply(channels: int) -> bool:
    """Whether the vdeal rounds over a pixel's words (``deal_channel_groups``, the channel sums
    of ``window_offsets``) take ``channels``: 4 x a power of two, up to 128."""
    groups = channels // DEPTH
    return channels % DEPTH == 0 and groups & (groups - 1) == 0 and groups <= 32


def deal_channel_groups(shape_nhwc) -> tvm.tirx.PrimFunc:
    """NHWC uint8 ``[N, H, W, C]`` -> ``[N, C/4, H, W, 4]`` (``WidthConv``'s input layout).

    32 pixels at a time: their ``C/4`` vectors of words transposed into one vector per group
    of 4 channels by ``log2(C/4)`` rounds of ``vdeal`` (each splits even and odd words; the
    groups come out in order). Rows that are not whole groups of 32 pixels finish with a
    plain loop."""
    n, h, w, c = shape_nhwc
    groups = c // DEPTH
    rounds = groups.bit_length() - 1
    full = w // LANES if channel_groups_apply(c) else 0

    @T.prim_func(s_tir=True)  # a root block, as relax's pattern analysis expects
    def deal(x: T.Buffer((n, h, w, c), "uint8"), y: T.Buffer((n, groups, h, w, DEPTH), "uint8")):
        T.func_attr({"tirx.noalias": True})
        with T.sblock("root"):
            words = T.decl_buffer((n * h * w * groups,), "int32", data=x.data)
            planes = T.decl_buffer((n * groups * h * w,), "int32", data=y.data)
            even = T.sblock_alloc_buffer((groups, LANES), "int32", scope="local")
            odd = T.sblock_alloc_buffer((groups, LANES), "int32", scope="local")
            for b, r, v in T.grid(n, h, full):
                for k in T.unroll(groups):
                    even[k, T.ramp(0, 1, 32)] = words[T.ramp(((b * h + r) * w + v * LANES) * groups + k * LANES, 1, 32)]
                if rounds >= 1:
                    _deal_words(even, odd, groups // 2)
                if rounds >= 2:
                    _deal_words(odd, even, groups // 2)
                if rounds >= 3:
                    _deal_words(even, odd, groups // 2)
                if rounds >= 4:
                    _deal_words(odd, even, groups // 2)
                if rounds >= 5:
                    _deal_words(even, odd, groups // 2)
                for k in T.unroll(groups):
                    if rounds % 2 == 1:
                        planes[T.ramp(((b * groups + k) * h + r) * w + v * LANES, 1, 32)] = odd[k, T.ramp(0, 1, 32)]
                    else:
                        planes[T.ramp(((b * groups + k) * h + r) * w + v * LANES, 1, 32)] = even[k, T.ramp(0, 1, 32)]
            for b, r, p, ch in T.grid(n, h, w - full * LANES, c):
                y[b, ch // DEPTH, r, full * LANES + p, ch % DEPTH] = x[b, r, full * LANES + p, ch]

    return deal


def copy_channel_groups(shape_nhwc) -> tvm.tirx.PrimFunc:
    """``deal_channel_groups`` as a plain copy, for any target and channel count (multiple of 4)."""
    n, h, w, c = shape_nhwc
    x = te.placeholder(shape_nhwc, "uint8", name="x")
    y = te.compute((n, c // DEPTH, h, w, DEPTH), lambda b, k, r, p, i: x[b, r, p, k * DEPTH + i], name="y")
    return te.create_prim_func([x, y])


# --- pads of uint8 tensors ------------------------------------------------------------------

def _opaque_vector(value):
    """``value`` (uint8x128) through ``vor`` with itself: LLVM then keeps a copy or fill loop
    as HVX code instead of calling memcpy / memset, which the packet count would not see."""
    vector = T.reinterpret(value, dtype="int32x32")
    return T.reinterpret(_hvx("vor", vector, vector), dtype="uint8x128")


def pad_rows_apply(shape, pad_width) -> bool:
    """Whether ``pad_rows`` takes this pad: a 4-D tensor padded on two neighbouring axes (or one)."""
    padded = [axis for axis in range(len(shape)) if pad_width[2 * axis] or pad_width[2 * axis + 1]]
    return len(shape) == 4 and bool(padded) and padded[-1] - padded[0] <= 1


def pad_rows(shape, pad_width, value: int) -> tvm.tirx.PrimFunc:
    """A uint8 tensor padded with ``value`` (``pad_width`` as ``relax.op.nn.pad``'s, before and
    after per axis) on two neighbouring axes, seen as ``[B, H, W, C]`` rows of ``W x C`` bytes
    (NHWC spatial pads, NCHW's with C = 1): border rows are vector fills, the other rows a
    vector copy (unaligned) between scalar fills of the left and right columns."""
    padded = [axis for axis in range(4) if pad_width[2 * axis] or pad_width[2 * axis + 1]]
    first = min(padded[0], 2)
    batch = int(np.prod(shape[:first]))
    h, w, c = shape[first], shape[first + 1], int(np.prod(shape[first + 2 :]))
    t, b, l, r = (pad_width[2 * first], pad_width[2 * first + 1], pad_width[2 * first + 2],
                  pad_width[2 * first + 3])
    ho, wo = h + t + b, w + l + r
    row_in, row_out = w * c, wo * c
    in_shape = tuple(int(d) for d in shape)
    out_shape = tuple(int(d + pad_width[2 * i] + pad_width[2 * i + 1]) for i, d in enumerate(shape))

    @T.prim_func(s_tir=True)  # a root block, as relax's pattern analysis expects
    def pad(x: T.Buffer(in_shape, "uint8"), y_: T.Buffer(out_shape, "uint8")):
        T.func_attr({"tirx.noalias": True})
        with T.sblock("root"):
            a = T.decl_buffer((batch * h, row_in), "uint8", data=x.data)
            o = T.decl_buffer((batch * ho, row_out), "uint8", data=y_.data)
            for n, y in T.grid(batch, ho):
                if y < t or y >= t + h:
                    for v in range(row_out // 128):
                        o[n * ho + y, T.ramp(v * 128, 1, 128)] = _opaque_vector(T.broadcast(T.uint8(value), 128))
                    for j in range(row_out // 128 * 128, row_out):
                        o[n * ho + y, j] = T.uint8(value)
                else:
                    for j in range(l * c):
                        o[n * ho + y, j] = T.uint8(value)
                    for v in range(row_in // 128):
                        o[n * ho + y, T.ramp(l * c + v * 128, 1, 128)] = _opaque_vector(
                            a[n * h + y - t, T.ramp(v * 128, 1, 128)])
                    for j in range(row_in // 128 * 128, row_in):
                        o[n * ho + y, l * c + j] = a[n * h + y - t, j]
                    for j in range(r * c):
                        o[n * ho + y, (l + w) * c + j] = T.uint8(value)

    return pad


# --- space-to-depth and depth-to-space (block 2x2, NHWC uint8) with HVX shuffles -------------
#
# In NHWC, S2D by 2x2 maps rows 2y and 2y+1 to output row y, interleaving them in chunks of
# 2C bytes (one output pixel holds (dy, dx, c)): exactly ``vshuff`` of the two rows with
# element size 2C (``vshuffvdd`` with a negative Rt: a full shuffle). D2S is the inverse,
# ``vdeal``. One pair of vector loads, one shuffle and two stores per 256 output bytes.

def shuffles_apply(shape_nhwc, block, inverse: bool = False) -> bool:
    """Whether the shuffle kernels take this tensor: block 2x2, 2C bytes (S2D) or half a pixel
    (D2S) dividing 128; S2D also an even height."""
    n, h, w, c = shape_nhwc
    if tuple(block) != (2, 2):
        return False
    if inverse:
        return c % 4 == 0 and 128 % (c // 2) == 0
    return h % 2 == 0 and 128 % (2 * c) == 0


def copy_space_to_depth(shape_nhwc, block=(2, 2), inverse: bool = False, vectorize: bool = False) -> tvm.tirx.PrimFunc:
    """NHWC uint8 S2D (``inverse``: D2S) by ``block`` as a plain copy, for any target and block
    (the shuffle kernels' reference on the CPU); ``vectorize``: the innermost loop vectorized."""
    n, h, w, c = shape_nhwc
    bh, bw = block
    x = te.placeholder(shape_nhwc, "uint8", name="x")
    if inverse:  # c = bh * bw * q channels: (dy, dx, ch)
        q = c // (bh * bw)
        y = te.compute((n, h * bh, w * bw, q),
                       lambda i, r, s_, k: x[i, r // bh, s_ // bw, (r % bh * bw + s_ % bw) * q + k], name="y")
    else:
        y = te.compute((n, h // bh, w // bw, bh * bw * c),
                       lambda i, r, s_, k: x[i, r * bh + k // (bw * c), s_ * bw + k // c % bw, k % c], name="y")
    func = te.create_prim_func([x, y])
    if not vectorize:
        return func
    sch = tvm.s_tir.Schedule(func)
    sch.vectorize(sch.get_loops(sch.get_sblock("y"))[-1])
    return sch.mod["main"]


def shuffle_space_to_depth(shape_nhwc) -> tvm.tirx.PrimFunc:
    """NHWC uint8 ``[N, H, W, C]`` -> ``[N, H/2, W/2, 4C]``, block 2x2 (on the tensors as
    rows). Rows that are not whole vectors finish with a plain loop."""
    n, h, w, c = shape_nhwc
    rows, row = n * h, w * c
    full, tail, chunk = row // 128, row % 128, 2 * c

    @T.prim_func(s_tir=True)  # a root block, as relax's pattern analysis expects
    def s2d(x: T.Buffer((n, h, w, c), "uint8"), y_: T.Buffer((n, h // 2, w // 2, 4 * c), "uint8")):
        T.func_attr({"tirx.noalias": True})
        with T.sblock("root"):
            a = T.decl_buffer((rows, row), "uint8", data=x.data)
            b = T.decl_buffer((rows // 2, 2 * row), "uint8", data=y_.data)
            for y in range(rows // 2):
                for v in range(full):
                    b[y, T.ramp(v * 256, 1, 256)] = T.reinterpret(_hvx(
                        "vshuffvdd", T.reinterpret(a.vload([y * 2 + 1, v * 128], "uint8x128"), dtype="int32x32"),
                        T.reinterpret(a.vload([y * 2, v * 128], "uint8x128"), dtype="int32x32"),
                        -chunk, dtype="int32x64"), dtype="uint8x256")
                for j in range(2 * tail):
                    b[y, full * 256 + j] = a[y * 2 + j // chunk % 2, full * 128 + j // (2 * chunk) * chunk + j % chunk]

    return s2d


def deal_depth_to_space(shape_nhwc) -> tvm.tirx.PrimFunc:
    """NHWC uint8 ``[N, H, W, 4C]`` -> ``[N, 2H, 2W, C]``, block 2x2 (on the tensors as rows).
    Rows that are not whole pairs of vectors finish with a plain loop."""
    n, h, w, c4 = shape_nhwc
    rows, row = n * h, w * c4
    full, tail, half = row // 256, row % 256, c4 // 2

    @T.prim_func(s_tir=True)  # a root block, as relax's pattern analysis expects
    def d2s(x: T.Buffer((n, h, w, c4), "uint8"), y_: T.Buffer((n, h * 2, w * 2, c4 // 4), "uint8")):
        T.func_attr({"tirx.noalias": True})
        with T.sblock("root"):
            a = T.decl_buffer((rows, row), "uint8", data=x.data)
            b = T.decl_buffer((rows * 2, row // 2), "uint8", data=y_.data)
            for y in range(rows):
                for v in range(full):
                    pair = _deal(T.reinterpret(a.vload([y, v * 256 + 128], "uint8x128"), dtype="int32x32"),
                                 T.reinterpret(a.vload([y, v * 256], "uint8x128"), dtype="int32x32"), half)
                    b[y * 2, T.ramp(v * 128, 1, 128)] = T.reinterpret(_hvx("lo", pair), dtype="uint8x128")
                    b[y * 2 + 1, T.ramp(v * 128, 1, 128)] = T.reinterpret(_hvx("hi", pair), dtype="uint8x128")
                for j in range(tail):
                    b[y * 2 + j % c4 // half, full * 128 + j // c4 * half + j % half] = a[y, full * 256 + j]

    return d2s
