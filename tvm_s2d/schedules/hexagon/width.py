"""The width-vectorized mapping: 32 output pixels in the lanes, no channel padding to 32
(``WidthConv``: ``vrmpybus``, weights in a scalar), and its input layout change
``[N, H, W, C] -> [N, C/4, H, W, 4]`` by ``vdeal`` rounds (``deal_channel_groups``)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import tvm
from tvm import te
from tvm.script import tirx as T

from .intrinsics import DEPTH, LANES, VRMPY_BY_SCALAR, aligned_prim_func, deal, hvx, roundup


@dataclass(frozen=True)
class WidthConv:
    """A stride-1 conv with 32 output columns per vector: activations ``[N, Ci/4, H, W, 4]``
    (pre-padded, width padded to whole vectors: every 32-column load stays inside and every
    row starts on a vector, so a tap at column 0 is an aligned load; seed layer: 128 -> 125
    packets a block), weights
    ``[Co, kh, kw, Ci/4, 4]``, outputs ``[N, Co, OH, OW]`` with ``OW`` a multiple of 32."""

    batch: int
    out_hw: tuple[int, int]  # the conv's real output size
    in_channels: int
    out_channels: int
    kernel_hw: tuple[int, int]

    @property
    def cin(self) -> int:
        return roundup(self.in_channels, DEPTH)

    @property
    def out_w(self) -> int:
        return roundup(self.out_hw[1], LANES)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return (self.batch, self.cin // DEPTH, self.out_hw[0] + self.kernel_hw[0] - 1,
                roundup(self.out_w + self.kernel_hw[1] - 1, LANES), DEPTH)

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
        return aligned_prim_func([x, w, y])

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
        pair = deal(src[2 * i + 1, T.ramp(0, 1, 32)], src[2 * i, T.ramp(0, 1, 32)], 4)
        dst[i, T.ramp(0, 1, 32)] = hvx("lo", pair)
        dst[half + i, T.ramp(0, 1, 32)] = hvx("hi", pair)


def channel_groups_apply(channels: int) -> bool:
    """Whether the vdeal rounds over a pixel's words (``deal_channel_groups``, the channel sums
    of ``window_offsets``) take ``channels``: 4 x a power of two, up to 128."""
    groups = channels // DEPTH
    return channels % DEPTH == 0 and groups & (groups - 1) == 0 and groups <= 32


def dealt_channels(channels: int) -> int:
    """The channels ``deal_channel_groups`` deals a pixel of ``channels`` (a multiple of 4) as:
    rounded up to ``channel_groups_apply``'s 4 x a power of two where that is at most 128 (the
    channels past ``channels`` padding, their planes not stored), else ``channels``."""
    groups = max(1, channels // DEPTH)
    dealt = DEPTH << (groups - 1).bit_length()
    return dealt if dealt <= 128 else channels


def deal_channel_groups(shape_nhwc, keep: int | None = None) -> tvm.tirx.PrimFunc:
    """NHWC uint8 ``[N, H, W, C]`` -> ``[N, keep, H, W, 4]`` (``WidthConv``'s input layout; the
    first ``keep`` groups of 4 channels, all ``C/4`` by default).

    32 pixels at a time: their ``C/4`` vectors of words transposed into one vector per group
    of 4 channels by ``log2(C/4)`` rounds of ``vdeal`` (each splits even and odd words; the
    groups come out in order), the first ``keep`` stored (a pixel of 48 channels is dealt as 64,
    ``dealt_channels``, its padding's planes dropped). Rows that are not whole groups of 32
    pixels finish with a plain loop."""
    n, h, w, c = shape_nhwc
    groups = c // DEPTH
    keep = groups if keep is None else int(keep)
    rounds = groups.bit_length() - 1
    full = w // LANES if channel_groups_apply(c) else 0

    @T.prim_func(s_tir=True)  # a root block, as relax's pattern analysis expects
    def deal(x: T.Buffer((n, h, w, c), "uint8"), y: T.Buffer((n, keep, h, w, DEPTH), "uint8")):
        T.func_attr({"tirx.noalias": True})
        with T.sblock("root"):
            words = T.decl_buffer((n * h * w * groups,), "int32", data=x.data)
            planes = T.decl_buffer((n * keep * h * w,), "int32", data=y.data)
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
                for k in T.unroll(keep):
                    if rounds % 2 == 1:
                        planes[T.ramp(((b * keep + k) * h + r) * w + v * LANES, 1, 32)] = odd[k, T.ramp(0, 1, 32)]
                    else:
                        planes[T.ramp(((b * keep + k) * h + r) * w + v * LANES, 1, 32)] = even[k, T.ramp(0, 1, 32)]
            for b, r, p, ch in T.grid(n, h, w - full * LANES, keep * DEPTH):
                y[b, ch // DEPTH, r, full * LANES + p, ch % DEPTH] = x[b, r, full * LANES + p, ch]

    return deal


def input_layout(shape_nhwc, cin: int, hvx: bool = True) -> tuple[int, tvm.tirx.PrimFunc]:
    """The width mapping's input layout change, decided once for the pipeline
    (``passes.hexagon.convs``) and the emulator's layer model: an NHWC uint8 input of
    ``shape_nhwc`` whose pixels hold ``cin`` channels (a multiple of 4) -> ``[N, cin/4, H, W, 4]``.
    Gives the channels to pad each pixel to first and the kernel: the HVX deal where its
    rounds take the pixel (``dealt_channels``: 48 channels dealt as 64), with ``hvx=False``
    its plain copy (the emulator's CPU reference); else a plain copy."""
    n, h, w = shape_nhwc[:3]
    dealt = dealt_channels(cin)
    if channel_groups_apply(dealt):
        shape = (n, h, w, dealt)
        return dealt, deal_channel_groups(shape, cin // DEPTH) if hvx else copy_channel_groups(shape, cin // DEPTH)
    return cin, copy_channel_groups((n, h, w, cin))


def copy_channel_groups(shape_nhwc, keep: int | None = None) -> tvm.tirx.PrimFunc:
    """``deal_channel_groups`` as a plain copy, for any target and channel count (multiple of 4)."""
    n, h, w, c = shape_nhwc
    keep = c // DEPTH if keep is None else int(keep)
    x = te.placeholder(shape_nhwc, "uint8", name="x")
    y = te.compute((n, keep, h, w, DEPTH), lambda b, k, r, p, i: x[b, r, p, k * DEPTH + i], name="y")
    return te.create_prim_func([x, y])


def padded_layout(shape_nhwc, padding, width: int, zx: int, hvx_code: bool = True) -> tvm.tirx.PrimFunc | None:
    """The width mapping's pad and input layout change as one kernel, where it takes the input:
    NHWC uint8 ``[N, H, W, C]`` -> ``[N, C/4, H + t + b, width, 4]``, the input at rows ``t``
    and columns ``l`` (``padding`` = ``(t, l, b, r)``), every other byte ``zx``; None unless
    ``C`` is 4, 8, 16 or 32 (``channel_groups_apply``, at most 8 planes: each plane is an
    expression choosing among all of them), ``W`` at least 32, ``l`` under 32 and ``width`` at
    least ``W + l`` (then ``pad`` + ``input_layout``).

    A row of planes is whole aligned vectors (``WidthConv``'s rows): each is ``valign`` of the
    dealt vectors of the input's 32-pixel groups before and at it (``deal_channel_groups``'s
    rounds, as expressions: no buffer, which TVM would put in memory on Hexagon), ``zx``
    words past the input's ends, so every store is whole and aligned (no scalar store beside
    a vector one: LLVM put such a pair in one packet, the later store lost). Seed layer (128x128x8):
    pad 4.2k + deal 3.8k packets -> one kernel. ``hvx_code=False``: a plain copy (CPU reference)."""
    n, h, w, c = (int(d) for d in shape_nhwc)
    t, l, b, _ = (int(p) for p in padding)
    groups, hp = c // DEPTH, h + t + b
    if not channel_groups_apply(c) or groups > 8 or w < LANES or not 0 <= l < LANES or width < w + l:
        return None
    if not hvx_code:
        x = te.placeholder((n, h, w, c), "uint8", name="x")
        return te.create_prim_func([x, te.compute((n, groups, hp, width, DEPTH), lambda i, k, r, p, j: tvm.tirx.if_then_else(
            tvm.tirx.all(r >= t, r < t + h, p >= l, p < l + w), x[i, r - t, p - l, k * DEPTH + j], tvm.tirx.const(zx, "uint8")),
            name="y")])
    full, vectors = w // LANES, width // LANES
    fill = int(np.array([zx * 0x01010101], np.uint32).view(np.int32)[0])  # a word of four zx bytes
    shift = (LANES - l) * DEPTH  # bytes of the previous group's vector before this one's

    def plane(words, base, k):
        """Plane ``k`` (TIR var, unrolled) of the 32-pixel group at word ``base`` (a pure
        expression, no buffer: the planes of a group stay in registers)."""
        vectors_ = [words[T.ramp(base + g * LANES, 1, 32)] for g in range(groups)]
        dealt = _dealt(vectors_)
        chosen = dealt[-1]
        for g in range(groups - 2, -1, -1):
            chosen = T.Select(k == g, dealt[g], chosen)
        return chosen

    rem = w - full * LANES  # pixels of a row past its whole groups

    def group(words, i, row, u, k):
        """Plane ``k`` of a row's 32-pixel group ``u`` (``u`` unrolled): a whole group, the
        last ``rem`` pixels then ``zx`` words for ``u = full`` (dealt from the row's last 32
        pixels, so no load leaves the row), ``zx`` words outside the row."""
        start = (i * h + row) * w
        tail = hvx("valignb", T.broadcast(fill, 32), plane(words, (start + w - LANES) * groups, k), (LANES - rem) * DEPTH) \
            if rem else T.broadcast(fill, 32)
        whole = plane(words, (start + u * LANES) * groups, k)
        return T.if_then_else(tvm.tirx.all(u >= 0, u < full), whole, T.if_then_else(u == full, tail, T.broadcast(fill, 32)))

    @T.prim_func(s_tir=True)  # a root block, as relax's pattern analysis expects
    def pad_deal(x: T.Buffer((n, h, w, c), "uint8", align=128), y: T.Buffer((n, groups, hp, width, DEPTH), "uint8", align=128)):
        T.func_attr({"tirx.noalias": True})
        with T.sblock("root"):
            words = T.decl_buffer((n * h * w * groups,), "int32", data=x.data, align=128)
            planes = T.decl_buffer((n * groups * hp * width,), "int32", data=y.data, align=128)
            for i, r in T.grid(n, hp):
                if r < t or r >= t + h:
                    for k, u in T.grid(groups, vectors):
                        planes[T.ramp(((i * groups + k) * hp + r) * width + u * LANES, 1, 32)] = T.broadcast(fill, 32)
                else:
                    for u in T.unroll(vectors):
                        for k in T.unroll(groups):
                            if l == 0:
                                planes[T.ramp(((i * groups + k) * hp + r) * width + u * LANES, 1, 32)] = group(words, i, r - t, u, k)
                            else:
                                planes[T.ramp(((i * groups + k) * hp + r) * width + u * LANES, 1, 32)] = hvx(
                                    "valignb", group(words, i, r - t, u, k), group(words, i, r - t, u - 1, k), shift)

    return pad_deal


def _dealt(vectors: list) -> list:
    """``deal_channel_groups``'s rounds on a pixel group's vectors of words, as expressions: one
    vector a group of 4 channels, in order."""
    half = len(vectors) // 2
    for _ in range(len(vectors).bit_length() - 1):
        pairs = [deal(vectors[2 * j + 1], vectors[2 * j], 4) for j in range(half)]
        vectors = [hvx("lo", p) for p in pairs] + [hvx("hi", p) for p in pairs]
    return vectors
