"""S-TIR schedules for the convs TVM's ``LegalizeOps`` produces (``conv2d_nchw`` /
``conv2d_nhwc`` blocks), on LLVM CPU targets.

TVM 0.27's default Relax pipeline leaves a conv as its naive loop nest. This template gives
it a register-blocked direct convolution:

* the innermost contiguous output axis holds the SIMD lanes: width in NCHW (a
  width-vectorized kernel: no lane is wasted whatever the channel count), output channels in
  NHWC (lanes fill only when there are enough channels: the space-to-depth form helps);
* a register tile of ``tile_channels`` output channels x ``tile_width`` output pixels
  accumulates in registers over all taps and input channels, then is written back once,
  with the fused epilogue (bias, activation, requantize) applied on the way;
* the padded input rows one output row needs are materialized per row (no bounds tests in
  the inner loop), rows run in parallel.

``ConvKnobs`` are the tuner's knobs; ``default_knobs`` the heuristic without tuning. Any
shape is correct (tiles that do not divide the output are predicated); tiles that divide
it are fast.
"""

from __future__ import annotations

from dataclasses import dataclass

import tvm
from tvm import s_tir

CONV_BLOCKS = {"conv2d_nchw": "NCHW", "conv2d_nhwc": "NHWC"}
MAX_ACCUMULATORS = 12  # vector registers kept for accumulators (16 on AVX2)


@dataclass(frozen=True)
class ConvKnobs:
    """One point of the schedule's search space."""

    tile_channels: int  # output channels per register tile
    tile_width: int  # output pixels along the width per register tile
    unroll_taps: bool = True  # unroll the kernel's rows and columns


@dataclass(frozen=True)
class ConvBlock:
    """The conv block of a PrimFunc: its name, layout and output geometry."""

    name: str
    layout: str
    out_channels: int
    out_width: int
    dtype: str  # the accumulator's
    extents: tuple[int, ...]  # of the block's loops (spatial, then reduction)

    @property
    def signature(self) -> str:
        """What the conv computes, as far as its schedule is concerned."""
        return f"{self.layout}:{self.dtype}:" + "x".join(map(str, self.extents))


def find_conv(func: tvm.tirx.PrimFunc) -> ConvBlock | None:
    """The only conv block of ``func``, or None."""
    sch = s_tir.Schedule(func)
    found = []
    for name in CONV_BLOCKS:
        try:
            found.append(sch.get_sblock(name))
        except s_tir.ScheduleError:  # absent, or more than one
            continue
    if len(found) != 1:
        return None
    block = sch.get(found[0])
    layout = CONV_BLOCKS[block.name_hint]
    extents = tuple(int(sch.get(loop).extent) for loop in sch.get_loops(found[0]))
    _, a, b, c = extents[:4]
    out_channels, out_width = (a, c) if layout == "NCHW" else (c, b)
    return ConvBlock(block.name_hint, layout, out_channels, out_width, _written_dtype(block), extents)


def _written_dtype(block) -> str:
    return str(block.init.value.ty.dtype)  # the accumulator's zero


def _largest_divisor(n: int, limit: int) -> int:
    return max(d for d in range(1, min(n, limit) + 1) if n % d == 0)


def _width_tile(out_width: int, lanes: int, vectors: int) -> int:
    """Pixels per register tile along a vectorized width: ``vectors`` full vectors when they
    divide the width, else a divisor of the width that is one odd-length vector (no
    predicated lanes), else one predicated vector."""
    if out_width % (lanes * vectors) == 0:
        return lanes * vectors
    if out_width % lanes == 0:
        return lanes
    divisors = [d for d in range(lanes // 2, 2 * lanes + 1) if d and out_width % d == 0]
    if divisors:
        return max(divisors)
    return min(lanes, out_width)


def _tiles(layout: str, out_channels: int, out_width: int, vectors: int, tile: int, lanes: int) -> ConvKnobs:
    """``vectors`` SIMD vectors along the vector axis (width in NCHW, channels in NHWC) times
    ``tile`` along the other, fitted to the conv's output."""
    if layout == "NCHW":
        return ConvKnobs(_largest_divisor(out_channels, tile), _width_tile(out_width, lanes, vectors))
    return ConvKnobs(min(out_channels, lanes * vectors), _largest_divisor(out_width, tile))


def default_knobs(layout: str, out_channels: int, out_width: int, lanes: int) -> ConvKnobs:
    """Measured-good tiles: at most ``MAX_ACCUMULATORS`` vector accumulators, tiles that
    divide the output where possible."""
    if layout == "NCHW":  # lanes along the width; few channels: two vectors
        vectors = 1 if out_channels >= 4 else 2
        registers = -(-_width_tile(out_width, lanes, vectors) // lanes)
        return _tiles(layout, out_channels, out_width, vectors, MAX_ACCUMULATORS // registers, lanes)
    vectors = min(-(-out_channels // lanes), 4)  # NHWC: lanes along the channels
    return _tiles(layout, out_channels, out_width, vectors, max(1, MAX_ACCUMULATORS // vectors), lanes)


def knobs_for(conv: ConvBlock, vectors: int, tile: int, lanes: int) -> ConvKnobs:
    """The tuner's knobs (``vectors``, ``tile``: see ``_tiles``) made concrete for one conv."""
    return _tiles(conv.layout, conv.out_channels, conv.out_width, vectors, tile, lanes)


def schedule_conv(func: tvm.tirx.PrimFunc, knobs: ConvKnobs | None = None, lanes: int = 8,
                  conv_block: ConvBlock | None = None) -> tuple[tvm.tirx.PrimFunc, ConvKnobs]:
    """``func`` with its conv block register-blocked and vectorized (see the module doc), and
    the knobs used (``default_knobs`` unless given). ``conv_block``: ``find_conv(func)``, if
    the caller has it already.

    Raises ``ValueError`` when ``func`` has no single conv block, and TVM's ``ScheduleError``
    if a knob does not apply; the caller keeps the unscheduled function then.
    """
    found = conv_block or find_conv(func)
    if found is None:
        raise ValueError("no single conv2d_nchw / conv2d_nhwc block")
    layout = found.layout
    knobs = knobs or default_knobs(layout, found.out_channels, found.out_width, lanes)
    sch = s_tir.Schedule(func)
    conv = sch.get_sblock(found.name)
    loops = sch.get_loops(conv)
    if layout == "NCHW":
        n, f, y, x, *reduction = loops
    else:
        n, y, x, f, *reduction = loops
    fo, fi = sch.split(f, [None, knobs.tile_channels])
    xo, xi = sch.split(x, [None, knobs.tile_width])
    if layout == "NCHW":  # lanes along the width
        inner, lane = sch.split(xi, [None, lanes]) if knobs.tile_width % lanes == 0 else (None, xi)
        register = [fi, inner, lane]
    else:  # lanes along the channels
        inner, lane = sch.split(fi, [None, lanes]) if knobs.tile_channels % lanes == 0 else (None, fi)
        register = [xi, inner, lane]
    register = [loop for loop in register if loop is not None]
    sch.reorder(n, y, fo, xo, *reduction, *register)
    row = sch.fuse(n, y)
    sch.parallel(row)

    accumulate = sch.cache_write(conv, 0, "local")
    sch.reverse_compute_at(accumulate, xo)
    for pad in sch.get_producers(conv):
        if sch.get(pad).name_hint == "pad_temp":
            sch.compute_at(pad, row)
    if knobs.unroll_taps:  # the kernel's rows and columns, not the input channels
        taps = reduction[1:] if layout == "NCHW" else reduction[:2]
        for loop in taps:
            sch.unroll(loop)
    for loop in register[:-1]:
        sch.unroll(loop)
    sch.vectorize(register[-1])
    init = sch.decompose_reduction(conv, reduction[0])
    sch.vectorize(sch.get_loops(init)[-1])

    # the epilogue (bias, activation, casts) into the write-back of the accumulators
    while True:
        consumers = sch.get_consumers(accumulate)
        if len(consumers) != 1:
            break
        try:
            sch.reverse_compute_inline(consumers[0])
        except s_tir.ScheduleError:
            break
    last = sch.get_loops(accumulate)[-1]
    extent = int(sch.get(last).extent)
    if extent > lanes and extent % lanes == 0:
        _, last = sch.split(last, [None, lanes])
    sch.vectorize(last)
    return sch.mod["main"].with_attr("tirx.is_scheduled", True), knobs


def schedule_injective(func: tvm.tirx.PrimFunc, lanes: int = 8) -> tvm.tirx.PrimFunc | None:
    """A data-movement or elementwise function (no reductions: the rewrite's S2D, D2S,
    alignment pads, masks) made one loop nest, parallel over its outer loops, the innermost
    vectorized. None if ``func`` has a reduction or does not inline to one block."""
    sch = s_tir.Schedule(func)
    blocks = sch.get_child_blocks(sch.get_sblock("root"))
    if not blocks or any(iv.iter_type != tvm.tirx.IterVar.DataPar for b in blocks for iv in sch.get(b).iter_vars):
        return None
    try:
        for block in blocks[:-1]:
            sch.compute_inline(block)
    except s_tir.ScheduleError:
        return None
    loops = sch.get_loops(blocks[-1])
    if len(loops) > 1:
        sch.parallel(sch.fuse(*loops[:-1]))
    extent = int(sch.get(loops[-1]).extent)
    if extent >= lanes:
        _, lane = sch.split(loops[-1], [None, lanes])
        sch.vectorize(lane)
    return sch.mod["main"].with_attr("tirx.is_scheduled", True)
