"""Register tiles for the x86 conv schedule (``x86.schedule_conv``): the knobs (``ConvKnobs``),
the tiles chosen without tuning (``default_knobs``), and on AVX2 the NHWC tiles scored by
multiply-adds a load (``few_registers_tiles``) and the row width they fill best
(``padded_width``, which ``CpuTileWidth`` pads convs to).
"""

from __future__ import annotations

from dataclasses import dataclass

import tvm

#: Vector registers an AVX2 register tile keeps for accumulators (of 16). Measured on this znver3 CPU
#: (session 21): tiles of 12-13 accumulators ran at 60-90 GFLOP/s, tiles of 8-10 at 145-190, in NCHW
#: and NHWC alike (LLVM unrolls the reduction by 2 and spills the larger tiles to the stack).
MAX_ACCUMULATORS = 10
#: Pixels a tile of one channel vector takes at most on AVX2 (8-14 measured 83-127 GFLOP/s, 7 114-144).
ONE_VECTOR_PIXELS = 7


@dataclass(frozen=True)
class ConvKnobs:
    """One point of the schedule's search space."""

    tile_channels: int  # output channels per register tile
    tile_width: int  # output pixels along the width per register tile
    unroll_taps: bool = True  # unroll the kernel's rows and columns


def max_pixels(summed_channels: int, depthwise: bool = False) -> int:
    """Pixels an NHWC register tile measured fastest with at most: 8 for depthwise convs, else as
    many as the input channels a tap sums, at least 4 (an image stem's 3 channels: 2.8x faster
    with 4 pixels than with 14; 32 channels: fastest with 14)."""
    return 8 if depthwise else max(4, summed_channels)


def _largest_divisor(n: int, limit: int) -> int:
    return max(d for d in range(1, min(n, limit) + 1) if n % d == 0)


def accumulators(lanes: int, dtype: str = "float32") -> int:
    """Vector registers a register tile may hold: 28 of AVX-512's 32, 10 of AVX2's 16."""
    return 28 if lanes * tvm.DataType(dtype).bits >= 512 else MAX_ACCUMULATORS


def vector_width(n: int, lanes: int) -> int:
    """The widest power-of-two vector, at most ``lanes``, that divides ``n`` (1: none does).
    Vectors of other lengths (28 = 16 + 8 + 4 lanes) measured 3-4x slower than whole ones."""
    width = lanes
    while width > 1 and n % width:
        width //= 2
    return width


def _width_tile(out_width: int, lanes: int, vectors: int) -> int:
    """Pixels per register tile along a vectorized width: ``vectors`` vectors of the widest
    power-of-two width (at least 4 lanes) dividing the output width, else a divisor of the
    width that is one odd-length vector (no predicated lanes), else one predicated vector."""
    width = vector_width(out_width, lanes)
    if width >= min(4, lanes):
        return width * _largest_divisor(out_width // width, vectors)
    divisors = [d for d in range(lanes // 2, 2 * lanes + 1) if d and out_width % d == 0]
    if divisors:
        return max(divisors)
    return min(lanes, out_width)


def _channel_tile(out_channels: int, lanes: int, vectors: int) -> int:
    """Output channels per register tile along vectorized channels: ``vectors`` vectors of the
    widest power-of-two width dividing the channels (all of them when they are fewer)."""
    width = vector_width(out_channels, lanes)
    if width == 1:
        return min(out_channels, lanes * vectors)
    return width * _largest_divisor(out_channels // width, vectors * max(1, lanes // width))


def _tiles(layout: str, out_channels: int, out_width: int, vectors: int, tile: int, lanes: int) -> ConvKnobs:
    """``vectors`` SIMD vectors along the vector axis (width in NCHW, channels in NHWC) times
    ``tile`` along the other, fitted to the conv's output."""
    if layout == "NCHW":
        return ConvKnobs(_largest_divisor(out_channels, tile), _width_tile(out_width, lanes, vectors))
    return ConvKnobs(_channel_tile(out_channels, lanes, vectors), _largest_divisor(out_width, tile))


def _registers(size: int, lanes: int) -> int:
    """Vector registers ``size`` contiguous values take."""
    width = vector_width(size, lanes)
    return size // width if width >= min(4, lanes) else -(-size // lanes)


def default_knobs(layout: str, out_channels: int, out_width: int, lanes: int, dtype: str = "float32",
                  max_pixels: int | None = None) -> ConvKnobs:
    """Measured-good tiles: at most ``accumulators`` vector registers of accumulators, tiles
    that divide the output where possible; in NHWC at most ``max_pixels`` pixels
    (``ConvBlock.max_pixels``)."""
    budget = accumulators(lanes, dtype)
    if layout == "NCHW":  # lanes along the width; few channels: two vectors
        vectors = 1 if out_channels >= 4 else 2
        registers = _registers(_width_tile(out_width, lanes, vectors), lanes)
        return _tiles(layout, out_channels, out_width, vectors, min(16, budget // registers), lanes)
    if budget <= MAX_ACCUMULATORS and out_channels % lanes == 0:  # AVX2: 16 registers
        return _few_registers_tile(out_channels, out_width, lanes, budget, max_pixels)
    vectors = min(-(-out_channels // lanes), 2)  # NHWC: lanes along the channels
    registers = _registers(_channel_tile(out_channels, lanes, vectors), lanes)
    tile = max(1, budget // registers)
    if max_pixels is not None:
        tile = min(tile, max_pixels)
    return _tiles(layout, out_channels, out_width, vectors, tile, lanes)


def _few_registers_tile(out_channels: int, out_width: int, lanes: int, budget: int, max_pixels: int | None) -> ConvKnobs:
    """The best of ``few_registers_tiles`` (the first of equal scores)."""
    return max(few_registers_tiles(out_channels, out_width, lanes, budget, max_pixels), key=lambda t: t[0])[1]


def few_registers_tiles(out_channels: int, out_width: int, lanes: int, budget: int = MAX_ACCUMULATORS,
                        max_pixels: int | None = None) -> list[tuple[float, ConvKnobs]]:
    """NHWC tiles of 1-5 channel vectors x the pixels dividing the width, with their scores:
    multiply-adds a load (``v x t / (1.5 v + t)``: a weight vector a channel vector, streamed,
    counted 1.5; a broadcast from the input row a pixel), scaled down below 8 accumulators (an
    FMA's latency x the two FMA units), the accumulators at most ``budget``. Measured on this
    AVX2 CPU (session 21, GFLOP/s): 2 vectors x 5 pixels 175-190, 2 x 4 165-178, 4 x 2 and 5 x 2
    146-157, 1 x 7 114-144; one vector x 8-14 pixels 83-127 (``ONE_VECTOR_PIXELS``). Two vectors alone took a pixel a tile on 7-wide rows (2
    accumulators, 3 loads a 2 FMAs: ResNet-18's 7x7x512 convs 5.5 ms on this AVX2 CPU), one on
    SqueezeNet's 13-wide classifier (7.0 ms); 5 vectors x 2 pixels fit its 1000 channels."""
    found = []
    for vectors in (2, 1, 3, 4, 5):
        if out_channels % (vectors * lanes) == 0:
            pixels = budget // vectors if vectors > 1 else min(budget, ONE_VECTOR_PIXELS)
            tile = _largest_divisor(out_width, min(pixels, max_pixels or pixels))
            score = vectors * tile / (1.5 * vectors + tile) * min(1.0, vectors * tile / 8)
            found.append((score, ConvKnobs(vectors * lanes, tile)))
    return found


#: An NHWC conv's output width is padded (``passes/cpu/tile_width.py``) by at most this factor.
MAX_WIDTH_PADDING = 1.2
#: ... and only where the best tile's score a real pixel gains at least this factor.
MIN_WIDTH_GAIN = 1.1


def padded_width(out_channels: int, out_width: int, lanes: int, max_pixels: int | None = None) -> int:
    """The output width an NHWC float conv on AVX2 computes best on: ``out_width``, or up to
    ``MAX_WIDTH_PADDING`` times it where the widths' best tiles (``few_registers_tiles``),
    scored a real pixel, gain ``MIN_WIDTH_GAIN``. SqueezeNet's 13-wide rows take tiles of one
    vector x 13 pixels or of one pixel; padded to 15, two vectors x 5 (13x13x64->256 3x3:
    0.56 -> 0.32 ms on this CPU, session 21)."""
    def best(width: int) -> float:
        return max((score for score, _ in few_registers_tiles(out_channels, width, lanes, max_pixels=max_pixels)), default=0.0)

    if accumulators(lanes) > MAX_ACCUMULATORS or out_channels % lanes:
        return out_width
    widths = range(out_width, int(out_width * MAX_WIDTH_PADDING) + 1)
    width = max(widths, key=lambda w: (best(w) * out_width / w, -w))
    return width if best(width) * out_width / width >= MIN_WIDTH_GAIN * best(out_width) else out_width
