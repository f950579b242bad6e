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
  the inner loop), rows run in parallel; an NHWC conv whose weights outgrow the cache on a few
  rows (``streamed``: ResNet-18's 7x7x512 3x3, 9.4 MB read once a row) runs its tiles of output
  channels in parallel instead, each over every row (ResNet-18 at 224: 24.6 -> 23.0 ms).

``ConvKnobs`` are the tuner's knobs; ``default_knobs`` the heuristic without tuning (both in
``x86_tiles``). Any
shape is correct (tiles that do not divide the output are predicated); tiles that divide
it are fast.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import tvm
from tvm import s_tir

from .x86_tiles import ConvKnobs, _tiles, default_knobs, max_pixels, vector_width

# TOPI's conv blocks; grouped and depthwise convs have the same loops (rc: a group's channels)
CONV_BLOCKS = {"conv2d_nchw": "NCHW", "conv2d_nhwc": "NHWC", "group_conv2d_nchw": "NCHW", "group_conv2d_nhwc": "NHWC"}


@dataclass(frozen=True)
class ConvBlock:
    """The conv block of a PrimFunc: its name, layout and output geometry."""

    name: str
    layout: str
    out_channels: int
    out_width: int
    dtype: str  # the accumulator's
    extents: tuple[int, ...]  # of the block's loops (spatial, then reduction)
    groups: int = 1

    @property
    def max_pixels(self) -> int:
        """``x86_tiles.max_pixels`` of this conv."""
        return max_pixels(_group_in(self.layout, self.extents), self.depthwise)

    @property
    def depthwise(self) -> bool:
        return 1 < self.groups == self.out_channels

    @property
    def channels(self) -> int:
        """The output channels one register tile may span: in NHWC a grouped conv's vectors stay
        in one group (its input is then one broadcast, not a gather); depthwise convs (one
        output channel per group) and NCHW tiles span any."""
        if self.layout == "NHWC" and 1 < self.groups < self.out_channels:
            return self.out_channels // self.groups
        return self.out_channels

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
    data = [r.source for r in block.reads if not r.source.same_as(block.writes[0].source)][0]
    in_channels = int(data.shape[1 if layout == "NCHW" else 3])
    return ConvBlock(block.name_hint, layout, out_channels, out_width, _written_dtype(block), extents,
                     max(1, in_channels // _group_in(layout, extents)))


def _group_in(layout: str, extents: tuple[int, ...]) -> int:
    """The input channels one output sums (a group's): the conv block's channel reduction."""
    return extents[4] if layout == "NCHW" else extents[6]


def _written_dtype(block) -> str:
    return str(block.init.value.ty.dtype)  # the accumulator's zero


def knobs_for(conv: ConvBlock, vectors: int, tile: int, lanes: int) -> ConvKnobs:
    """The tuner's knobs (``vectors``, ``tile``: see ``_tiles``) made concrete for one conv."""
    return _tiles(conv.layout, conv.channels, conv.out_width, vectors, tile, lanes)


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
    knobs = knobs or default_knobs(layout, found.channels, found.out_width, lanes, found.dtype, found.max_pixels)
    sch = s_tir.Schedule(func)
    conv = sch.get_sblock(found.name)
    inline_side_inputs(sch, conv)
    loops = sch.get_loops(conv)
    if layout == "NCHW":
        n, f, y, x, *reduction = loops
    else:
        n, y, x, f, *reduction = loops
    fo, fi = sch.split(f, [None, knobs.tile_channels])
    xo, xi = sch.split(x, [None, knobs.tile_width])
    if layout == "NCHW":  # lanes along the width
        inner, lane = split_vectors(sch, xi, knobs.tile_width, lanes)
        register = [fi, inner, lane]
    else:  # lanes along the channels
        inner, lane = split_vectors(sch, fi, knobs.tile_channels, lanes)
        register = [xi, inner, lane]
    register = [loop for loop in register if loop is not None]
    if layout == "NHWC" and streamed(found):  # tiles of channels in parallel, each over every row
        sch.reorder(n, fo, y, xo, *reduction, *register)
        row = sch.fuse(n, fo)
    else:
        sch.reorder(n, y, fo, xo, *reduction, *register)
        row = sch.fuse(n, y)
    sch.parallel(row)

    accumulate = sch.cache_write(conv, 0, "local")
    sch.reverse_compute_at(accumulate, xo)
    for pad in sch.get_producers(conv):
        if sch.get(pad).name_hint == "pad_temp":
            if layout == "NHWC" and found.depthwise:  # 9 MACs a pixel: copying padded rows costs more
                sch.compute_inline(pad)  # than a bounds test per tap (measured 1.3-2x faster)
            else:
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

    fold_epilogue(sch, accumulate, found.extents[:4])
    last = sch.get_loops(accumulate)[-1]
    _, last = split_vectors(sch, last, int(sch.get(last).extent), lanes)
    sch.vectorize(last)
    if layout == "NHWC":
        fold_width_slice(sch, accumulate, xo, found.extents[:4], lanes)
    return sch.mod["main"].with_attr("tirx.is_scheduled", True), knobs


#: Weights beyond this many bytes (L2, 512 KB a core here) are read from memory once per row when
#: rows run in parallel; a conv of at most ``STREAMED_ROWS`` output rows runs its tiles of output
#: channels in parallel instead, each over every row (its weights, a tile's, stay in the cache).
STREAMED_BYTES, STREAMED_ROWS = 2 * 1024 * 1024, 14


def streamed(conv: ConvBlock) -> bool:
    """Whether ``schedule_conv`` runs ``conv``'s channel tiles in parallel (``STREAMED_BYTES``)."""
    n, h, w, f, *reduction = conv.extents
    return int(np.prod(reduction)) * f * 4 > STREAMED_BYTES and h <= STREAMED_ROWS and conv.groups == 1


def fold_width_slice(sch: s_tir.Schedule, accumulate, tile_loop, out_shape: tuple[int, ...], lanes: int) -> None:
    """A conv computed wider than its output (``CpuTileWidth``: its extra pixels sliced off) with
    the slice and the epilogue after it (bias, activation, a branching one such as HardSwish's
    ``x * clip(x + 3, 0, 6) / 6``) computed per register tile, after the tile's accumulation,
    on the tile's real pixels, from the accumulators, vectorized along the channels. Left as
    loop nests of their own they ran over the whole output, serial and scalar (SqueezeNet's
    stem: 0.62 -> 1.18 ms in the model). Only where the blocks after the conv start with the
    slice of the width (the output's shape but fewer pixels), all have that shape, and one
    writes the function's output."""
    consumers = sch.get_consumers(accumulate)
    if len(consumers) != 1 or not sch.get(consumers[0]).name_hint.startswith("T_strided_slice"):
        return
    shape = _domain(sch, consumers[0])
    if len(shape) != 4 or shape[:2] != out_shape[:2] or shape[3] != out_shape[3] or not shape[2] < out_shape[2]:
        return
    chain = [sch.get_sblock(name) for name in sorted(_reached(sch, accumulate, sch.get_consumers))]
    sinks = [b for b in chain if not sch.get_consumers(b)]
    if len(sinks) != 1 or not all(_pointwise(sch, b, shape) for b in chain):
        return
    sink = sinks[0]
    for b in chain:
        if not sch.get(b).same_as(sch.get(sink)):
            sch.compute_inline(b)
    sch.reverse_compute_at(sink, tile_loop)
    sch.compute_inline(accumulate)  # the epilogue reads the accumulators themselves
    loops = sch.get_loops(sink)
    outer, last = split_vectors(sch, loops[-1], int(sch.get(loops[-1]).extent), lanes)
    sch.vectorize(last)
    start = next(i for i, loop in enumerate(loops) if sch.get(loop).same_as(sch.get(tile_loop))) + 1
    for loop in [loop for loop in loops[start:-1] if int(sch.get(loop).extent) > 1] + [outer] * (outer is not None):
        sch.unroll(loop)  # the accumulators stay registers


def pack_weights(func: tvm.tirx.PrimFunc, conv: ConvBlock, knobs: ConvKnobs):
    """``func`` with the HWIO weights of its NHWC conv packed as ``[F/T, KH, KW, C, T]`` (T: the
    register tile's output channels): the weights one tile reads are one contiguous stream, where
    in HWIO they are T values every F. In a model the weights come from memory, not the cache
    (ResNet-18's 7x7x512 3x3 convs ran 2.7 ms in the model, 1.3 ms alone); measured with the
    weights out of cache, 7x7x512 3x3: 4.2 -> 1.4 ms, 14x14 256->1024 1x1: 0.97 -> 0.58 ms.
    The loops and the order of the sums stay as they were: the same floats.

    Returns ``(func, parameter index)`` (``packed_hwio`` packs a constant the caller passes as
    ``weight_packing`` maps it), or None where the weights stay as they are: NCHW, grouped or depthwise
    convs, a tile that is all the output channels (the same layout) or does not divide them,
    weights that are not a parameter of ``func``."""
    if conv.layout != "NHWC" or conv.groups != 1:
        return None
    tile = knobs.tile_channels
    if tile >= conv.out_channels or conv.out_channels % tile:
        return None
    sch = s_tir.Schedule(func)
    block = sch.get_sblock(conv.name)
    output = sch.get(block).writes[0].source
    reads = [i for i, r in enumerate(sch.get(block).reads) if not r.source.same_as(output)]
    if len(reads) != 2:
        return None
    weight = sch.get(block).reads[reads[1]].source
    params = [i for i, p in enumerate(func.params) if p.same_as(weight)]
    if len(weight.shape) != 4 or not params:
        return None
    try:
        sch.transform_layout(block, ("read", reads[1]), weight_packing(tile, str(weight.shape[0].ty)))
    except (tvm.error.TVMError, RuntimeError):  # TVM could not invert the map: the weights stay HWIO
        return None
    return sch.mod["main"], params[0]


def weight_packing(tile: int, index_dtype: str = "int64") -> tvm.tirx.IndexMap:
    """HWIO -> ``[F/tile, KH, KW, C, tile]``, as ``pack_weights`` reads the weights (indices
    of the buffer's own type: an int64 map on int32 shapes fails to invert)."""
    return tvm.tirx.IndexMap.from_func(lambda ry, rx, rc, f: (f // tile, ry, rx, rc, f % tile), index_dtype=index_dtype)


def packed_hwio(weights: np.ndarray, tile: int) -> np.ndarray:
    """HWIO ``weights`` packed as ``weight_packing(tile)`` maps them (``IndexMap.map_tensor``
    does the same element by element, 20 s for ResNet-18's weights)."""
    kh, kw, c, f = weights.shape
    return np.ascontiguousarray(weights.reshape(kh, kw, c, f // tile, tile).transpose(3, 0, 1, 2, 4))


def fold_epilogue(sch: s_tir.Schedule, accumulate, out_shape: tuple[int, ...]) -> None:
    """The epilogue (bias, activation, casts, requantization, a residual add) folded into
    ``accumulate``, the write-back of the accumulators (after ``inline_side_inputs``, before
    the conv's loops were transformed): branches merged, then each pointwise consumer in turn."""
    _merge_branches(sch, accumulate, out_shape)
    while True:
        consumers = sch.get_consumers(accumulate)
        if len(consumers) != 1 or not _pointwise(sch, consumers[0], out_shape):
            break
        try:
            sch.reverse_compute_inline(consumers[0])
        except s_tir.ScheduleError:
            break


def inline_side_inputs(sch: s_tir.Schedule, conv) -> None:
    """The blocks that neither feed the conv nor read its result (a quantized residual's
    dequantization: cast, subtract, multiply, computed whole before the epilogue) inlined
    into their readers. Left as loop nests of their own they ran after the conv, serial and
    unvectorized, and the epilogue could not fold past the add that reads them (MobileNetV2's
    int8 residual kernels: 13x the time of the same conv without the add). Called on the
    unscheduled function, where every block is still a child of the root."""
    on_path = {sch.get(conv).name_hint} | _reached(sch, conv, sch.get_consumers) | _reached(sch, conv, sch.get_producers)
    for block in sch.get_child_blocks(sch.get_sblock("root")):
        if sch.get(block).name_hint in on_path:
            continue
        try:
            sch.compute_inline(block)
        except s_tir.ScheduleError:
            pass


def _reached(sch: s_tir.Schedule, start, step) -> set[str]:
    """The names of the blocks ``step`` (``get_consumers`` or ``get_producers``) reaches from ``start``."""
    names, frontier = set(), [start]
    while frontier:
        for block in step(frontier.pop()):
            if sch.get(block).name_hint not in names:
                names.add(sch.get(block).name_hint)
                frontier.append(block)
    return names


def _merge_branches(sch: s_tir.Schedule, accumulate, out_shape: tuple[int, ...]) -> None:
    """An epilogue that branches (the ``x`` of SiLU's ``x * sigmoid(x)``, read by the sigmoid
    and by the product) made one block: its pointwise blocks whose readers are all pointwise
    are inlined into them, so that the last one reads the conv's output alone and folds into
    the write-back. Without this the epilogue stopped where it branched and the rest ran as
    loop nests of their own, neither parallel nor vectorized (EfficientNet-B0's conv + SiLU
    kernels). A value read by a larger loop nest (a squeeze-excite scale broadcast over an
    image) stays computed once; an epilogue that does not branch is left to the chain."""
    epilogue, frontier = [], list(sch.get_consumers(accumulate))
    while frontier:
        block = frontier.pop(0)
        if all(sch.get(block).name_hint != sch.get(b).name_hint for b in epilogue):
            epilogue.append(block)
            frontier += sch.get_consumers(block)
    if all(len(sch.get_consumers(b)) <= 1 for b in [accumulate, *epilogue]):
        return
    for block in epilogue:
        readers = sch.get_consumers(block)
        if readers and all(_pointwise(sch, b, out_shape) for b in [block, *readers]):
            try:
                sch.compute_inline(block)
            except s_tir.ScheduleError:
                pass


def _pointwise(sch: s_tir.Schedule, block, out_shape: tuple[int, ...]) -> bool:
    """Whether ``block`` runs over the conv's output one element for one (bias, activation,
    casts): only those fold into the write-back. A consumer over a larger domain, such as a
    squeeze-excite scale broadcast over an image, stays a loop nest of its own: TVM 0.27's
    ``reverse_compute_inline`` fails inside (``Cannot dispatch a null expression``) instead
    of raising a ``ScheduleError`` on it."""
    return _domain(sch, block) == tuple(out_shape)


def _domain(sch: s_tir.Schedule, block) -> tuple[int, ...]:
    """The extents of ``block``'s iteration domain."""
    return tuple(int(iv.dom.extent) for iv in sch.get(block).iter_vars)


def split_vectors(sch: s_tir.Schedule, loop, extent: int, lanes: int):
    """``loop`` (of ``extent``) as (vectors, lanes): whole power-of-two vectors of at least 4
    lanes where they divide it, else (None, loop): one vector of any length."""
    width = vector_width(extent, lanes)
    if width >= min(4, lanes) and extent > width:
        return tuple(sch.split(loop, [None, width]))
    return None, loop
