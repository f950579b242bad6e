"""``CpuDense``: fully connected layers of a few rows with their weights packed at compile time
in blocks of output columns, so that each thread streams its weights contiguously; of many rows,
1x1 convs that take the conv schedules.

A float dense layer ``matmul(x, W)`` (``x``: ``M x K``, ``W``: a constant ``K x N``; ONNX
``Gemm``/``MatMul`` after the import folds ``transB``) with one or a few rows is a matrix-vector
product: each weight is read once and the time is the time to stream ``W`` from memory
(AlexNet's first dense layer: 151 MB). Lanes along ``N`` walk ``W`` down its rows with a
stride of ``4N`` bytes, a new page every few rows; this pass writes instead

    Wp = W (columns padded with zeros to a multiple of C) as [Np / C, K, C]      (at compile time)
    y  = reshape(permute_dims(matmul(x, Wp), [1, 0, 2]), [M, Np])[:, :N]

with ``C`` four vectors of the target (64 float32 with AVX-512): the matmul's block has the
spatial axes ``(Np / C, M, C)`` and the reduction ``K``, which ``schedule_window`` runs in
parallel over the column blocks, ``C`` in vector lanes, each block's ``K x C`` weights one
contiguous stream. Exact: the same products summed in the same order (along ``K``) as the
unpacked matmul. The bias, activation and slice that follow fuse into the kernel's write-back.

A dense layer of more rows (``x``: ``... x K``, more than ``MAX_ROWS`` rows in all) is a matrix
product, and a 1x1 conv: ConvNeXt's pointwise layers are ``Linear`` layers on a
``1 x H x W x C`` image (its blocks permute to channels-last around them), which TVM's default
lowering ran as plain loops (ConvNeXt-T at 224: 93% of its time). They become

    y = conv2d(x as N x H x W x K, W as 1 x 1 x K x N, NHWC, HWIO)       (x reshaped when not 4-D)

and take the conv schedules (``ScheduleConvs``: register tiles, vectors along the output
channels, rows in parallel) with their epilogue (bias, GELU) in the write-back. Exact: each
output the same products summed along ``K`` in the same order.

Runs on LLVM CPU targets in the ``cpu`` stage. Left as they were, each with its reason: integer
matmuls (quantized models' fully connected layers are 1x1 convs, ``QDQMatmulToConv``), weights
that are not a constant matrix, inputs of unknown shape.
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax
from tvm.relax.dpl import is_op, wildcard

from ...geometry.layout import rows_as_image
from ..relax_tools import static_shape
from ..rules import CpuRuleSet, Rule

PASS_NAME = "CpuDense"
#: Inputs of at most this many rows are packed (a batch of a few images); more become 1x1 convs.
MAX_ROWS = 16
#: Vectors in a block of output columns (the accumulators a thread keeps per step along K).
BLOCK_VECTORS = 4


@tvm.transform.module_pass(opt_level=0, name=PASS_NAME)
class CpuDense(CpuRuleSet):
    """Pack the constant weights of dense layers of a few rows in column blocks (module doc)."""

    def __init__(self, target: tvm.target.Target | None = None):
        self.data, self.weight = wildcard(), wildcard()
        super().__init__([Rule(is_op("relax.matmul")(self.data, self.weight),
                               lambda _call, matches: packed(matches[self.data], matches[self.weight],
                                                             BLOCK_VECTORS * self.lanes))], target)


def packed(data: relax.Expr, weight: relax.Expr, columns: int) -> tuple[relax.Expr, str] | str:
    """The dense layer ``matmul(data, weight)`` with ``weight`` packed in blocks of ``columns``
    output columns (a few rows) or as a 1x1 conv (many rows), and what was done; or the reason
    it is left as it was."""
    if not isinstance(weight, tvm.ir.GenericConst):
        return "weights are not a constant (computed at run time): left as it was"
    w = weight.value.numpy()
    shape = static_shape(data)
    if shape is None:
        return "input of unknown shape: left as it was"
    dtype = str(data.ty.dtype)
    if not dtype.startswith("float") or str(w.dtype) != dtype:
        return f"a {dtype} x {w.dtype} matmul, not float: left as it was"
    if w.ndim != 2 or len(shape) < 2 or shape[-1] != w.shape[0]:
        return f"a {list(shape)} x {list(w.shape)} matmul, not a matrix by a constant matrix: left as it was"
    rows = int(np.prod(shape[:-1]))
    if len(shape) == 2 and rows <= MAX_ROWS:
        return _column_blocks(data, w, columns)
    return _as_conv(data, w, shape)


def _as_conv(data: relax.Expr, w: np.ndarray, shape: tuple[int, ...]) -> tuple[relax.Expr, str]:
    """``matmul(data, w)`` as a 1x1 NHWC conv (the module doc)."""
    k, n = w.shape
    if len(shape) >= 4:
        image = (int(np.prod(shape[:-3])), *shape[-3:-1], k)
    else:  # rows folded into an image, a row of at most MAX_IMAGE_WIDTH pixels
        image = (1, *rows_as_image(int(np.prod(shape[:-1]))), k)
    x = data if tuple(shape) == image else relax.op.reshape(data, image)
    y = relax.op.nn.conv2d(x, relax.const(np.ascontiguousarray(w.reshape(1, 1, k, n))),
                           data_layout="NHWC", kernel_layout="HWIO")
    if tuple(shape) != image:
        y = relax.op.reshape(y, [*shape[:-1], n])
    size = "x".join(map(str, image[:3]))
    return y, f"{'x'.join(map(str, shape))} by {k}x{n}: a 1x1 conv on a {size} image (NHWC), the conv schedules"


def _column_blocks(data: relax.Expr, w: np.ndarray, columns: int) -> tuple[relax.Expr, str]:
    """``matmul(data, w)``, ``data`` of a few rows, with ``w`` packed in column blocks."""
    dtype = str(data.ty.dtype)
    (rows, k), n = static_shape(data), w.shape[1]
    blocks = -(-n // columns)
    padded = np.zeros((k, blocks * columns), w.dtype)
    padded[:, :n] = w
    wp = np.ascontiguousarray(padded.reshape(k, blocks, columns).transpose(1, 0, 2))
    y = relax.op.matmul(data, relax.const(wp, dtype))
    y = relax.op.reshape(relax.op.permute_dims(y, [1, 0, 2]), [rows, blocks * columns])
    if blocks * columns != n:
        y = relax.op.strided_slice(y, axes=[1], begin=[0], end=[n])
    return y, f"{rows}x{k} by {k}x{n}: weights packed as [{blocks}, {k}, {columns}] at compile time"
