"""Bilinear resizes on x86 as two separable passes, and their schedule.

TVM's ``resize2d`` computes each output from four input pixels whose indices it derives, per
output, from floats (``floor((x + 0.5) * scale - 0.5)``): the vectorized kernel gathers every
lane of four loads, and LRASPP's 28x28 -> 224x224 upsampling of its 21 class maps took 2.3 ms
on this AVX2 CPU, a quarter of the model. The same sums as two passes:

    cols[n, c, iy, x] = lerp(data[n, c, iy, x0(x)], data[n, c, iy, x1(x)], wx(x))    (input rows only)
    out[n, c, y, x]   = lerp(cols[n, c, y0(y), x], cols[n, c, y1(y), x], wy(y))

with TVM's own index and weight expressions (``topi.image.resize``'s ``get_inx``, the clamps of
``get_2d_pixel``, ``_lerp``): TVM's ``top`` and ``bottom`` are ``cols`` at rows ``y0`` and
``y1``, so each output is the same floats in the same order, bit-identical. The second pass,
the one over every output, reads whole rows of ``cols``: contiguous vectors, no gathers.
``separable_resize2d`` is the TE compute (blocks ``resize_cols``, ``resize_rows``), which
``passes/cpu/resize.py`` emits; ``schedule_resize`` schedules it (``ScheduleConvs``).
"""

from __future__ import annotations

import tvm
from tvm import s_tir, te
from tvm.topi.image.resize import _lerp, get_inx

from .x86_injective import _reads_follow

COLS, ROWS = "resize_cols", "resize_rows"
#: The coordinate modes whose ``get_inx`` needs neither a region of interest nor crop boxes.
MODES = ("half_pixel", "align_corners", "asymmetric", "pytorch_half_pixel")


def _taps(out: tvm.tirx.PrimExpr, size, out_size, mode: str):
    """The two clamped input indices and the weight of the second for output index ``out``
    (``topi.image.resize._resize_2d``'s ``linear`` case)."""
    inx = get_inx(out, size, out_size, mode)
    whole = te.floor(inx).astype("int32")
    last = size - 1

    def clamp(i):
        return te.max(te.min(i, last), 0)

    return clamp(whole), clamp(whole + 1), inx - whole


def separable_resize2d(data: te.Tensor, out_h, out_w, layout: str = "NCHW", mode: str = "half_pixel") -> te.Tensor:
    """Bilinear ``resize2d`` of ``data`` (float32, NCHW or NHWC) to ``out_h x out_w``, as the
    module doc's two passes: the same floats as ``topi.image.resize2d``."""
    out_h, out_w = (tvm.tirx.IntImm("int64", int(d)) for d in (out_h, out_w))
    order = (0, 1, 2, 3) if layout == "NCHW" else (0, 2, 3, 1)  # the (n, c, y, x) axis of each dimension
    n, c, h, w = (data.shape[order.index(k)] for k in range(4))

    def pixel(src, *ncyx):
        return src[tuple(ncyx[k] for k in order)]

    def shape(*ncyx):
        return tuple(ncyx[k] for k in order)

    def cols(*i):
        b, ch, y, x = (i[order.index(k)] for k in range(4))
        x0, x1, wx = _taps(x, w, out_w, mode)
        return _lerp(pixel(data, b, ch, y, x0), pixel(data, b, ch, y, x1), wx)

    first = te.compute(shape(n, c, h, out_w), cols, name=COLS)

    def rows(*i):
        b, ch, y, x = (i[order.index(k)] for k in range(4))
        y0, y1, wy = _taps(y, h, out_h, mode)
        return _lerp(pixel(first, b, ch, y0, x), pixel(first, b, ch, y1, x), wy)

    return te.compute(shape(n, c, out_h, out_w), rows, name=ROWS)


def schedule_resize(func: tvm.tirx.PrimFunc, lanes: int = 8) -> tvm.tirx.PrimFunc | None:
    """``func`` (a ``separable_resize2d`` kernel, with whatever FuseOps fused before or after
    it) with each pass one loop nest over its rows in parallel, vectorized along the innermost
    contiguous axes; None if ``func`` has no ``resize_rows`` block."""
    sch = s_tir.Schedule(func)
    try:
        cols, rows = sch.get_sblock(COLS), sch.get_sblock(ROWS)
    except s_tir.ScheduleError:
        return None
    names = {sch.get(cols).name_hint, sch.get(rows).name_hint}
    for block in sch.get_child_blocks(sch.get_sblock("root")):
        if sch.get(block).name_hint not in names and sch.get_consumers(block):  # producers: a fused transpose
            sch.compute_inline(block)
    for block in sch.get_child_blocks(sch.get_sblock("root")):
        if sch.get(block).name_hint not in names:  # consumers: an epilogue
            sch.reverse_compute_inline(block)
    for block in (cols, rows):
        loops = sch.get_loops(block)
        extents = [int(sch.get(loop).extent) for loop in loops]
        if extents[-1] % lanes and (extents[-1] * extents[-2]) % lanes == 0 and _reads_follow(sch.get(block), 2):
            loops = [*loops[:-2], sch.fuse(*loops[-2:])]  # NHWC, channels of no whole vector: pixels x channels
        sch.parallel(sch.fuse(*loops[:-1]))
        if int(sch.get(loops[-1]).extent) >= lanes:  # a last vector of fewer lanes where it does not divide
            _, lane = sch.split(loops[-1], [None, lanes])
            sch.vectorize(lane)
    return sch.mod["main"].with_attr("tirx.is_scheduled", True)
