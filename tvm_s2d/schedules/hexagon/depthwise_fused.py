"""The depthwise conv's sums of 128 outputs (``ordered_sums``, every depthwise kernel's) and the
stride-1 (or ``dealt``) conv with its requantization in one kernel (``requantized_kernel``, which
``DepthwiseConv.hvx_requantized_kernel`` calls): a ``depthwise.DepthwiseConv`` in, not imported here."""

from __future__ import annotations

import tvm
from tvm import te
from tvm.script import tirx as T

from .intrinsics import deal, hvx
from .requantize import _int64_requantize, pack_bytes, requantize_lanes

#: Output rows at most in a band of rows reading fill rows at the top or the bottom
#: (``DepthwiseConv.border_rows``: a 7x7 kernel's 3, a 5x5 kernel's 3 on 3 rows).
BAND_ROWS = 4
#: What a ``signed`` kernel takes from every input byte (its top bit flipped: ``ordered_sums``).
INPUT_OFFSET = 128


def split_bands(border, oh: int) -> tuple[int, tuple, tuple]:
    """``(first, above, below)``: the first of ``oh`` output rows reading no fill row (``oh`` if
    none) and the ``border`` entries (each ``(row, ...)``, ``DepthwiseConv.border_rows``') above
    and below the rows that read none."""
    edge = {entry[0] for entry in border}
    first = min([r for r in range(oh) if r not in edge], default=oh)
    return first, tuple(e for e in border if e[0] < first), tuple(e for e in border if e[0] >= first)


def ordered_sums(loads, signed: bool = False) -> list:
    """``sum_t input_t * weight_t`` over 128 outputs, as two int32 vector pairs (outputs 0-63,
    64-127) in order: ``loads`` the taps' (128 uint8 inputs, 128 int8 weights) vectors. Byte
    products (``vmpybusv``: int16, even and odd bytes apart), two taps' products added and
    widened to int32 (``vaddhw``, accumulating: outputs ``4i``, ``4i+2`` from the even products,
    ``4i+1``, ``4i+3`` from the odd), then two rounds of ``vshuff`` put the sums in order.
    ``signed`` (every weight in [-127, 127]): ``sum_t (input_t - 128) * weight_t`` instead, the
    inputs' top bit flipped (``vxor``) and two taps' signed products accumulated in int16
    (``vmpybv.acc``: each at most 128 x 127 = 16,256 in magnitude, two at most 32,512), so a
    widening ``vaddhw`` adds four taps: 1.5 packets a tap, not 2 (both take a packet alone)."""
    if signed:
        flip = T.reinterpret(T.broadcast(T.uint8(128), 128), dtype="int32x32")
        flipped = [(hvx("vxor", T.reinterpret(x, dtype="int32x32"), flip), T.reinterpret(w, dtype="int32x32")) for x, w in loads]
        products = []
        for i in range(0, len(flipped), 2):
            pair = hvx("vmpybv", *flipped[i], dtype="int32x64")
            if i + 1 < len(flipped):
                pair = hvx("vmpybv.acc", pair, *flipped[i + 1], dtype="int32x64")
            products.append(pair)
    else:
        products = [hvx("vmpybusv", T.reinterpret(x, dtype="int32x32"), T.reinterpret(w, dtype="int32x32"), dtype="int32x64")
                    for x, w in loads]
    zero = T.broadcast(T.int32(0), 32)

    def sums(part):
        total = None
        for i in range(0, len(products), 2):
            first = hvx(part, products[i])
            second = hvx(part, products[i + 1]) if i + 1 < len(products) else zero
            total = (hvx("vaddhw", first, second, dtype="int32x64") if total is None
                     else hvx("vaddhw.acc", total, first, second, dtype="int32x64"))
        return total

    even, odd = sums("lo"), sums("hi")
    evens = hvx("vshuffvdd", hvx("hi", even), hvx("lo", even), -4, dtype="int32x64")  # outputs 0, 2, 4, ...
    odds = hvx("vshuffvdd", hvx("hi", odd), hvx("lo", odd), -4, dtype="int32x64")  # 1, 3, 5, ...
    return [hvx("vshuffvdd", hvx(half, odds), hvx(half, evens), -4, dtype="int32x64") for half in ("lo", "hi")]


def requantized_kernel(conv, zy: int, lo: int, hi: int, dtype: str, hvx_code: bool = True,
                           pre_shift: bool = True, rows: int | None = None, average: bool = False) -> tvm.tirx.PrimFunc:
    """The conv and the requantization after it as one kernel (``fusable``: stride 1, or a
    ``dealt`` stride 2 with ``fused_weight``'s weights, each tap's vector of inputs the even
    or odd C-byte pixels of 256 bytes by ``vdeal``: MobileNetV3's 48x48x16 3x3/2 17.7k -> 4.1k
    packets, with its requantization kernel gone):
    ``(x, weight, bias, mult, shift, half, pre) -> [N, OH, OW, C]`` of ``dtype``, the
    constants ``constant_lanes`` long. Each 128 outputs of a row are ``hvx_kernel``'s group
    requantized in registers (``requantize_lanes``, ``pack_bytes``) and stored as 128
    bytes (the groups of a row innermost: measured 29.1k packets on 48x48x32, the rows
    innermost 33.8k), ``rows`` output rows at a time sharing the group's weights and
    constants (LLVM's CSE; default 3 for 3x3, 2 for larger kernels: 24x24x144 3x3 43.1k ->
    33.4k packets, 6x6x672 5x5 27.5k -> 20.9k). Groups that cover a whole period of the
    constants are unrolled (their lanes constants); a row that is not whole groups ends with
    the group of its last 128 outputs (computed twice).
    ``hvx_code=False``: plain loops (the CPU reference); ``pre_shift=False``: no headroom
    shift (every one 0); ``average``: ``requantize_lanes``'s."""
    assert conv.fusable, conv
    n, oh, _ = conv.output_shape
    (kh, kw), c, (_, h, wi) = conv.kernel_hw, conv.channels, conv.input_shape
    ow, lanes = conv.out_hw[1], conv.constant_lanes
    valid = ow * c  # outputs a row
    if not hvx_code:
        return plain_requantized(conv, zy, lo, hi, dtype)
    groups, period = valid // 128, lanes - 128
    weights = 128 if conv.dealt else conv.weight_shape[2]  # a dealt conv's weights: one vector a tap (fused_weight)
    whole = period // 128 <= 8  # a period of the constants in unrolled groups (their lanes constants)
    span = period // 128 if whole else 1
    rows = min(oh, rows or (3 if kh <= 3 or oh == 3 else 2))
    taps = [(ky, kx) for ky in range(kh) for kx in range(kw)]

    sh = conv.stride[0]

    def tap(x, w, b, r, start, lane, ky, kx):  # (the tap's 128 inputs, its 128 weights)
        if not conv.dealt:  # the weights at ``lane`` (block() passes the row offset where groups cover a period)
            return x.vload([b, r + ky, start + kx * c], "uint8x128"), w.vload([ky, kx, lane], "int8x128")
        at = 2 * start + kx // 2 * 2 * c  # input pixel 2p + kx = 2(p + kx // 2) + kx % 2
        pair = deal(T.reinterpret(x.vload([b, r * sh + ky, at + 128], "uint8x128"), dtype="int32x32"),
                    T.reinterpret(x.vload([b, r * sh + ky, at], "uint8x128"), dtype="int32x32"), c)
        return hvx("lo" if kx % 2 == 0 else "hi", pair), w.vload([ky, kx, 0], "int8x128")

    border = conv.border_rows()
    slots = [(r, kept, k + 1) for k, (r, kept) in enumerate(border)]  # (row, its kernel rows, its corrections)
    first, above, below = split_bands(slots, oh)  # the rows reading no fill row: ``mid`` from ``first``
    mid = oh - len(border)
    bands = [band for band in (above, below) if band] + [()] * 2
    edge = {r for r, _ in border}
    assert all(first <= r < first + mid for r in range(oh) if r not in edge) and max(map(len, bands)) <= BAND_ROWS

    def block(x, w, constants, b, r, start, lane, kept=None, k=0):
        """128 outputs of row ``r`` from ``start``; ``kept``: its kernel rows (the others read
        only fill rows: their sum is ``bias``'s ``k``-th block of corrections)."""
        chosen = taps if kept is None else [(ky, kx) for ky, kx in taps if ky in kept]
        pairs = ordered_sums([tap(x, w, b, r, start, start if whole else lane, ky, kx) for ky, kx in chosen], conv.signed)
        t = [hvx(part, pair) for pair in pairs for part in ("lo", "hi")]
        if k:
            t = [t[i] + constants[0].vload([k * lanes + lane + 32 * i], "int32x32") for i in range(4)]
        return pack_bytes([requantize_lanes(t[i], constants, lane + 32 * i, zy, pre_shift, average) for i in range(4)], lo, hi,
                          dtype)

    def band_group(y, x, w, constants, b, row, start, lane):
        """``row`` (a slot: row, kernel rows, corrections) of a band: its 128 outputs from ``start``."""
        return y.vstore([(b * oh + row[0]) * valid + start], block(x, w, constants, b, row[0], start, lane, row[1], row[2]))

    @T.macro
    def band_groups(y, x, w, constants, band, b, start, lane):  # the band's rows share the group's weights (CSE)
        band_group(y, x, w, constants, b, band[0], start, lane)
        if len(band) > 1:
            band_group(y, x, w, constants, b, band[1], start, lane)
        if len(band) > 2:
            band_group(y, x, w, constants, b, band[2], start, lane)
        if len(band) > 3:
            band_group(y, x, w, constants, b, band[3], start, lane)

    @T.macro
    def border_band(y, x, w, constants, band):  # rows reading fill rows: their groups as the others', fewer taps
        if len(band) > 0:
            for b, u in T.grid(n, groups // span):
                for q in T.unroll(span):
                    band_groups(y, x, w, constants, band, b, (u * span + q) * 128,
                                q * 128 % period if whole else (u * span + q) * 128 % period)
            for g, b in T.grid(groups - groups // span * span, n):
                band_groups(y, x, w, constants, band, b, (groups // span * span + g) * 128,
                            (groups // span * span + g) * 128 % period)
            if valid % 128 != 0:
                for b in range(n):
                    band_groups(y, x, w, constants, band, b, valid - 128, (valid - 128) % period)

    @T.prim_func(s_tir=True)  # a root block, as relax's pattern analysis expects
    def depthwise_requantized(x: T.Buffer((n, h, wi), "uint8", align=128), w: T.Buffer((kh, kw, weights), "int8", align=128),
                              bias: T.Buffer((conv.bias_length,), "int32", align=128),
                              mult: T.Buffer((lanes,), "int32", align=128),
                              shift: T.Buffer((lanes,), "int32", align=128), half: T.Buffer((lanes,), "int32", align=128),
                              pre: T.Buffer((lanes,), "int32", align=128), y_: T.Buffer((n, oh, ow, c), dtype)):
        T.func_attr({"tirx.noalias": True})
        with T.sblock("root"):
            y = T.decl_buffer((n * oh * valid,), dtype, data=y_.data)
            constants = (bias, mult, shift, half, pre)
            for b, r, u in T.grid(n, mid // rows, groups // span):  # the rows outermost: their loads' addresses shared
                for q in T.unroll(span):  # the constants' lanes: constants
                    for i in T.unroll(rows):  # rows of a block share the weights and constants (LLVM's CSE)
                        y[T.ramp((b * oh + first + r * rows + i) * valid + (u * span + q) * 128, 1, 128)] = block(
                            x, w, constants, b, first + r * rows + i, (u * span + q) * 128,
                            q * 128 % period if whole else (u * span + q) * 128 % period)
            for b, r, u in T.grid(n, mid % rows, groups // span):
                for q in T.unroll(span):
                    y[T.ramp((b * oh + first + mid // rows * rows + r) * valid + (u * span + q) * 128, 1, 128)] = block(
                        x, w, constants, b, first + mid // rows * rows + r, (u * span + q) * 128,
                        q * 128 % period if whole else (u * span + q) * 128 % period)
            for g, b, r in T.grid(groups - groups // span * span, n, mid):
                y[T.ramp((b * oh + first + r) * valid + (groups // span * span + g) * 128, 1, 128)] = block(
                    x, w, constants, b, first + r, (groups // span * span + g) * 128,
                    (groups // span * span + g) * 128 % period)
            if valid % 128 != 0:
                for b, r in T.grid(n, mid):  # the row's last 128 outputs
                    y[T.ramp((b * oh + first + r) * valid + valid - 128, 1, 128)] = block(
                        x, w, constants, b, first + r, valid - 128, (valid - 128) % period)
            border_band(y, x, w, constants, bands[0])
            border_band(y, x, w, constants, bands[1])

    return depthwise_requantized


def plain_requantized(conv, zy, lo, hi, dtype) -> tvm.tirx.PrimFunc:
    """``requantized_kernel``'s integers as plain loops (the CPU reference)."""
    c, lanes = conv.channels, conv.constant_lanes
    x = te.placeholder(conv.input_shape, "uint8", name="data")
    w = te.placeholder(conv.weight_shape, conv.weight_dtype, name="weight")
    bias = te.placeholder((conv.bias_length,), "int32", name="bias")  # (the border rows' corrections unread)
    mult, shift, half, pre = (te.placeholder((lanes,), "int32", name=name) for name in ("mult", "shift", "half", "pre"))
    ky = te.reduce_axis((0, conv.kernel_hw[0]), name="ky")
    kx = te.reduce_axis((0, conv.kernel_hw[1]), name="kx")
    (sh, sw) = conv.stride
    offset = INPUT_OFFSET * conv.signed
    sums = te.compute(conv.requantized_shape(), lambda n, r, p, k: te.sum(
        (x[n, r * sh + ky, (p * sw + kx) * c + k].astype("int32") - offset) * w[ky, kx, k].astype("int32"), axis=[ky, kx]),
        name="depthwise")
    y = te.compute(conv.requantized_shape(), lambda n, r, p, k: _int64_requantize(
        sums[n, r, p, k], bias[k], mult[k], shift[k], pre[k], zy, lo, hi, dtype), name="requantize")
    return te.create_prim_func([x, w, bias, mult, shift, half, pre, y])
