"""``CpuPointwiseRows``: NCHW 1x1 convs over rows of whole vectors.

The CPU conv schedule puts NCHW vectors along the output width: a 28-pixel row fills vectors
of 4 of AVX-512's 16 lanes. A 1x1 conv of stride 1 without padding reads each pixel alone, so
its H x W pixels may be any rows: 28 x 28 = 784 pixels are 7 rows of 112, whole 16-lane
vectors. The conv is computed on its input reshaped to ``[N, C, H', W']`` (``W'`` the widest
multiple of the lanes dividing ``H x W`` that leaves at least ``MIN_ROWS`` rows for the
threads), and its output reshaped back. Both reshapes are views (``vm.builtin.reshape``, as
TVM's ``RewriteDataflowReshape`` emits them): no data moves, and FuseOps does not fuse them
into the kernels around. Each output sums the same products in the same order: bit-identical.
Measured (ShuffleNetV2 at 224, its 58-channel 1x1 convs at 28x28: 0.165 -> 0.043 ms each at
1 thread; the model 2.43 -> 1.95 ms at 2 threads).

Runs on LLVM CPU targets after the layout (it takes the convs ``CpuLayout`` left in NCHW),
float and integer convs, grouped too. A 1x1 NCHW conv whose rows already fill whole vectors is
left without an outcome. Pixels that make no rows of whole vectors (14 x 14 = 196) are padded
with zeros to whole vectors (200: 5 rows of 40) where that adds at most ``MAX_PADDING`` of them
(a pad kernel before the conv, a slice after it, whose extra outputs it drops): on this AVX2 CPU
light ShuffleNet's grouped 272-channel 1x1 convs at 14x14 ran on 14-lane rows (8 + 4 + 2 lanes
a vector) in 62% of the model's time; padded, the model 2.57x -> 1.47x ONNX Runtime's time
(session 20). Convs whose pixels stay short of that are left with the reason.
``disabled_pass=["CpuPointwiseRows"]``: the convs on their own rows.
"""

from __future__ import annotations

import tvm
from tvm import relax
from tvm.relax.dpl import is_op, wildcard

from ..rules import CpuRuleSet, Rule

PASS_NAME = "CpuPointwiseRows"
MIN_ROWS = 4  # rows left for the schedule's parallel loop (2 threads here)
MAX_PADDING = 1.15  # pixels padded to whole vectors at most this many times the conv's (7 x 7 -> 56: 1.14)


def rows_of(height: int, width: int, lanes: int) -> tuple[int, int] | None:
    """``(rows, width)`` of whole ``lanes`` vectors for ``height x width`` pixels, at least
    ``MIN_ROWS`` rows, the widest such; None when there is none."""
    pixels = height * width
    widths = [w for w in range(lanes, pixels // MIN_ROWS + 1, lanes) if pixels % w == 0]
    return (pixels // max(widths), max(widths)) if widths else None


def _view(data: relax.Expr, shape: list[int], dtype: str) -> relax.Expr:
    return relax.op.call_pure_packed("vm.builtin.reshape", data, relax.ShapeExpr(shape),
                                     ty_args=relax.TensorType(shape, dtype))


@tvm.transform.module_pass(opt_level=0, name=PASS_NAME)
class CpuPointwiseRows(CpuRuleSet):
    """NCHW 1x1 convs on rows of whole vectors (the module doc)."""

    def __init__(self, target: tvm.target.Target | None = None):
        super().__init__([Rule(is_op("relax.nn.conv2d")(wildcard(), wildcard()), self._decide)], target)

    def _decide(self, conv: relax.Call, _matches):
        attrs = conv.attrs
        data, weight = conv.args[0].ty, conv.args[1].ty
        shapes = (data.shape, weight.shape, conv.ty.shape)
        if (str(attrs.data_layout) != "NCHW" or str(attrs.out_layout) != "NCHW"
                or str(attrs.kernel_layout) != "OIHW" or any(s is None for s in shapes)
                or not all(isinstance(d, tvm.tirx.IntImm) for s in shapes for d in s)):
            return None
        if [int(d) for d in list(weight.shape)[2:]] != [1, 1] or any(int(s) != 1 for s in attrs.strides) \
                or any(int(p) for p in attrs.padding):
            return None
        batch, channels, height, width = (int(d) for d in data.shape)
        if width % self.lanes == 0:
            return None  # its rows are whole vectors already
        pixels, out, out_dtype = height * width, [int(d) for d in conv.ty.shape], str(conv.ty.dtype)
        found, padded = rows_of(height, width, self.lanes), pixels
        if found is None:
            padded = -(-pixels // self.lanes) * self.lanes
            found = rows_of(1, padded, self.lanes) if padded <= pixels * MAX_PADDING else None
        if found is None:
            return (f"{height}x{width} pixels make no {MIN_ROWS} or more rows of whole {self.lanes}-lane vectors, nor do "
                    f"{padded} (padded: at most {MAX_PADDING}x the pixels): the conv on its own rows of {width}")
        rows, row = found
        x = conv.args[0]
        if padded != pixels:  # zeros after the last pixel; their outputs are sliced off
            x = relax.op.nn.pad(_view(x, [batch, channels, 1, pixels], str(data.dtype)), [0, 0, 0, 0, 0, 0, 0, padded - pixels])
        conv = relax.op.nn.conv2d(_view(x, [batch, channels, rows, row], str(data.dtype)), conv.args[1],
                                  strides=attrs.strides, padding=attrs.padding, dilation=attrs.dilation,
                                  groups=attrs.groups, data_layout="NCHW", kernel_layout="OIHW",
                                  out_layout="NCHW", out_dtype=attrs.out_dtype)
        if padded == pixels:
            return (_view(conv, out, out_dtype),
                    f"{height}x{width} pixels as {rows} rows of {row}: whole {self.lanes}-lane vectors")
        flat = relax.op.strided_slice(_view(conv, [batch, out[1], 1, padded], out_dtype), axes=[3], begin=[0], end=[pixels])
        return (relax.op.reshape(flat, out),
                f"{height}x{width} pixels padded to {padded}, as {rows} rows of {row}: whole {self.lanes}-lane vectors")
