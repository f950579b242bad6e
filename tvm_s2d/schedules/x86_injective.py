"""Data movement and elementwise kernels on x86 (no reductions: the rewrite's S2D / D2S,
layout transposes, channel shuffles, biases, residual adds, pads): one loop nest, parallel
over its outer loops, vectors innermost; layout transposes in tiles that stay in cache."""

from __future__ import annotations

import math

import tvm
from tvm import s_tir
from tvm.sym.analyzer import Analyzer


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
    tiles = _transpose_tiles(sch, blocks[-1], loops, lanes)
    if tiles is not None:  # a transpose: lanes x lanes tiles (in cache) instead of whole strided rows
        outer, (source, lane) = tiles
        sch.parallel(sch.fuse(*outer) if len(outer) > 1 else outer[0])
        sch.unroll(source)
        sch.vectorize(lane)
        return sch.mod["main"].with_attr("tirx.is_scheduled", True)
    extents = [int(sch.get(loop).extent) for loop in loops]
    if extents[-1] % lanes:  # rows of 28 floats: the trailing loops as one, to whole vectors (3,808 x 28 as 6,664 x 16)
        inner = next((k for k in range(2, len(loops) + 1) if math.prod(extents[-k:]) % lanes == 0), None)
        if inner is not None and _reads_follow(sch.get(blocks[-1]), inner):
            fused = sch.fuse(*loops[-inner:])
            outer, lane = sch.split(fused, [None, lanes])
            sch.parallel(sch.fuse(*loops[:-inner], outer) if inner < len(loops) else outer)
            sch.vectorize(lane)
            return sch.mod["main"].with_attr("tirx.is_scheduled", True)
    if len(loops) > 1:
        sch.parallel(sch.fuse(*loops[:-1]))
    extent = int(sch.get(loops[-1]).extent)
    if extent >= lanes:
        _, lane = sch.split(loops[-1], [None, lanes])
        sch.vectorize(lane)
    return sch.mod["main"].with_attr("tirx.is_scheduled", True)


def _reads_follow(stmt, inner: int) -> bool:
    """Whether every read of the block indexes its last ``inner`` dimensions by the block's last
    ``inner`` axes, in order, or by constants (a broadcast): then the fused axes read memory in
    order. A channel shuffle or concat (indices computed, selects) would gather every lane
    (ShuffleNetV2's 14x14 shuffle 0.07 -> 0.76 ms when fused)."""
    names, analyzer = [iv.var for iv in stmt.iter_vars], _axes_analyzer(stmt)
    for read in stmt.reads:
        if len(read.region) < inner:
            if read.region:
                return False
            continue  # a 0-d operand
        for axis, dim in zip(names[-inner:], read.region[-inner:]):
            index = analyzer.simplify(dim.min)
            if int(dim.extent) != 1 or not (index.same_as(axis) or isinstance(index, tvm.tirx.IntImm)):
                return False
    return True



def _transpose_tiles(sch: s_tir.Schedule, block, loops, lanes: int):
    """For a block that reads a buffer whose innermost index is an output axis other than the
    innermost (a layout transpose: NHWC -> NCHW reads channels 4 KB apart; its other reads,
    if any, along the innermost axis or constant there: a bias), the loops reordered into
    w x w tiles, ``w`` the vector width or half of it, whichever divides both axes (136
    channels: 8): (outer loops, (source lanes, output lanes)); None otherwise. Whole rows of
    such a transpose thrash the cache (3.2 MB NHWC -> NCHW: 1.6 ms)."""
    stmt = sch.get(block)
    if len(stmt.iter_vars) != len(loops) or len(loops) < 2:
        return None
    names, analyzer = [iv.var for iv in stmt.iter_vars], _axes_analyzer(stmt)  # inlined reshapes: w % 28 % 28

    def axis_of(index):
        index = analyzer.simplify(index)
        return next((i for i, v in enumerate(names) if index.same_as(v)), None)

    sources = set()
    for read in stmt.reads:
        if not read.region:
            continue  # a 0-d buffer: a scalar, broadcast
        last = read.region[-1]
        if int(last.extent) != 1:
            return None
        axis = axis_of(last.min)
        if axis is not None and axis != len(loops) - 1:
            # the output axes before it that the read's indices before it follow (H of NCHW -> NHWC)
            run = 1
            while (axis - run >= 0 and len(read.region) > run and int(read.region[-1 - run].extent) == 1
                   and axis_of(read.region[-1 - run].min) == axis - run):
                run += 1
            sources.add((axis, run))
        elif axis is None and not isinstance(analyzer.simplify(last.min), tvm.tirx.IntImm):
            return None  # an index that is no axis: not a plain transpose
    if len(sources) != 1:
        return None
    ((source, run),) = sources
    extents = [int(sch.get(loop).extent) for loop in loops]

    def width_for(extent):
        return next((w for w in (lanes, lanes // 2) if w >= 4 and extent % w == 0 and extents[-1] % w == 0), None)

    # the source axis with the one before it (28 x 28 pixels as 784: contiguous in the source),
    # or the output's last two axes as one (14 x 14 as 196: contiguous in the output), where
    # that gives a width; planned first, the schedule changed only once it does
    width, fuse_source, fuse_inner = width_for(extents[source]), False, False
    if width is None and run > 1:
        width, fuse_source = width_for(extents[source - 1] * extents[source]), True
    if width is None and source < len(loops) - 2:
        inner = extents[-2] * extents[-1]
        width = next((w for w in (lanes, lanes // 2) if w >= 4 and extents[source] % w == 0 and inner % w == 0), None)
        fuse_source, fuse_inner = False, True
    if width is None:
        return None
    if fuse_source:
        loops = [*loops[: source - 1], sch.fuse(loops[source - 1], loops[source]), *loops[source + 1 :]]
        source -= 1
    if fuse_inner:
        loops = [*loops[:-2], sch.fuse(loops[-2], loops[-1])]
    source_outer, source_lanes = sch.split(loops[source], [None, width])
    inner_outer, inner_lanes = sch.split(loops[-1], [None, width])
    outer = [loop for i, loop in enumerate(loops[:-1]) if i != source]
    sch.reorder(*outer, source_outer, inner_outer, source_lanes, inner_lanes)
    return [*outer, source_outer, inner_outer], (source_lanes, inner_lanes)


def _axes_analyzer(stmt) -> Analyzer:
    """An analyzer that knows the block's axes' ranges (to simplify the indices it reads with)."""
    analyzer = Analyzer()
    for iv in stmt.iter_vars:
        analyzer.bind(iv.var, iv.dom)
    return analyzer
