"""S-TIR schedules for the CPU kernels with reductions that are not convs: pooling, means,
dense layers and other reductions over trailing axes (``schedule_window``), softmax and norms
(TVM's own ``s_tir.dlight.cpu`` rules, ``schedule_dlight``).

A legalized pool (``pool_max``; ``pool_sum`` then ``pool_avg``) or mean (``*_red`` then
``T_divide``) is one reduction block over spatial axes then window axes, with a pad before it
and an elementwise epilogue after. TVM 0.27 leaves it one scalar thread. ``schedule_window``
inlines the pad (its bounds test becomes a select), makes the innermost output axis of more
than one element (the width in NCHW, channels in NHWC) the SIMD lanes, puts the window's axes
outside the lanes (one vector of accumulators per window), runs the other output axes in
parallel and computes the epilogue with the accumulators.
"""

from __future__ import annotations

import tvm
from tvm import s_tir

from .x86 import split_vectors

SPATIAL, REDUCE = tvm.tirx.IterVar.DataPar, tvm.tirx.IterVar.CommReduce


def _kinds(block) -> list[int]:
    return [int(iv.iter_type) for iv in block.iter_vars]


def schedule_window(func: tvm.tirx.PrimFunc, lanes: int = 8) -> tvm.tirx.PrimFunc | None:
    """``func`` (one reduction block: output axes, then window axes; elementwise blocks before
    and after) parallel over its outer output axes and vectorized along the innermost; None
    when ``func`` is not of that shape."""
    sch = s_tir.Schedule(func)
    blocks = sch.get_child_blocks(sch.get_sblock("root"))
    reductions = [b for b in blocks if REDUCE in _kinds(sch.get(b))]
    if len(reductions) != 1:
        return None
    block = reductions[0]
    kinds = _kinds(sch.get(block))
    spatial = kinds.count(SPATIAL)
    if spatial == 0 or kinds != [SPATIAL] * spatial + [REDUCE] * (len(kinds) - spatial):
        return None
    position = list(blocks).index(block)
    try:
        for producer in blocks[:position]:
            sch.compute_inline(producer)
    except s_tir.ScheduleError:
        return None
    loops = sch.get_loops(block)
    outputs, window = loops[:spatial], loops[spatial:]
    extents = [int(sch.get(loop).extent) for loop in outputs]
    wide = [i for i, e in enumerate(extents) if e > 1]
    if not wide:
        return None
    lane_axis = wide[-1]
    vectors, lane = split_vectors(sch, outputs[lane_axis], extents[lane_axis], lanes)
    outer = [loop for i, loop in enumerate(outputs) if i != lane_axis]
    sch.reorder(*outer, *([vectors] if vectors is not None else []), *window, lane)
    row = sch.fuse(*outer) if len(outer) > 1 else outer[0] if outer else None
    if row is not None:
        sch.parallel(row)
    sch.vectorize(lane)
    init = sch.decompose_reduction(block, window[0])
    sch.vectorize(sch.get_loops(init)[-1])
    anchor = vectors if vectors is not None else row
    after = _independent_first(sch, block, blocks[position + 1:])
    if after is None:
        return None
    for consumer in after if anchor is not None else []:
        try:
            sch.reverse_compute_at(consumer, anchor)
        except s_tir.ScheduleError:
            continue
        sch.vectorize(sch.get_loops(consumer)[-1])
    return sch.mod["main"].with_attr("tirx.is_scheduled", True)


def _independent_first(sch, reduction, consumers):
    """``consumers`` (the blocks after the reduction) with those that do not read its result
    (an epilogue's other operand: a residual add's second term) inlined into their users, so
    that no block computed at a row of the reduction covers more than that row; None when
    one cannot be inlined."""
    tainted, dependent = [w.source for w in sch.get(reduction).writes], []
    for consumer in consumers:
        block = sch.get(consumer)
        if any(r.source.same_as(t) for r in block.reads for t in tainted):
            tainted += [w.source for w in block.writes]
            dependent.append(consumer)
            continue
        try:
            sch.compute_inline(consumer)
        except s_tir.ScheduleError:
            return None
    return dependent


def schedule_dlight(func: tvm.tirx.PrimFunc, target: tvm.target.Target) -> tvm.tirx.PrimFunc | None:
    """``func`` scheduled by the first of TVM's CPU rules that applies (``GEMV``: dense layers
    on one row; ``Reduction``: softmax and norms), or None."""
    from tvm.s_tir import dlight

    for rule in (dlight.cpu.GEMV(), dlight.cpu.Reduction()):
        try:
            sch = rule.apply(func, target, False)
        except (RuntimeError, ValueError):  # ScheduleError, and TVM errors a rule raises on what it does not take
            continue
        if isinstance(sch, list):
            sch = sch[0] if sch else None
        if sch is not None and not _recomputes(sch):
            return sch.mod["main"].with_attr("tirx.is_scheduled", True)
    return None


def _recomputes(sch) -> bool:
    """Whether a reduction block of ``sch`` runs more often than its iteration space (loop
    tails aside): the ``Reduction`` rule put it under the output's loop although the two do not
    share that axis (a softmax of one row: the max and the sum of the row computed again for
    each of its 1000 outputs, 3.4 ms instead of microseconds)."""
    for block in sch.get_child_blocks(sch.get_sblock("root")):
        iter_vars = sch.get(block).iter_vars
        if REDUCE not in [int(iv.iter_type) for iv in iter_vars]:
            continue
        runs = 1
        for loop in sch.get_loops(block):
            runs *= int(sch.get(loop).extent)
        space = 1
        for iv in iter_vars:
            space *= int(iv.dom.extent)
        if runs > 2 * space:
            return True
    return False

