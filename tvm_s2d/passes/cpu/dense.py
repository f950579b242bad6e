"""``CpuDense``: fully connected layers of a few rows with their weights packed at compile time
in blocks of output columns, so that each thread streams its weights contiguously.

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

Runs on LLVM CPU targets in the ``cpu`` stage. Left as they were, each with its reason: integer
matmuls (quantized models' fully connected layers are 1x1 convs, ``QDQMatmulToConv``), weights
that are not a constant matrix, inputs of more than ``MAX_ROWS`` rows (a matrix product, not
a stream of weights) or of unknown shape.
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax
from tvm.relax.dpl import is_op, wildcard

from ...targets import is_cpu, vector_lanes
from ..outcome import Outcome
from ..relax_tools import map_relax_functions, rewrite_recorded, static_shape

PASS_NAME = "CpuDense"
#: Inputs of at most this many rows are taken (a batch of a few images).
MAX_ROWS = 16
#: Vectors in a block of output columns (the accumulators a thread keeps per step along K).
BLOCK_VECTORS = 4


@tvm.transform.module_pass(opt_level=0, name=PASS_NAME)
class CpuDense:
    """Pack the constant weights of dense layers of a few rows in column blocks (module doc)."""

    def __init__(self, target: tvm.target.Target | None = None):
        self.target = target
        self.data, self.weight = wildcard(), wildcard()
        self.pattern = is_op("relax.matmul")(self.data, self.weight)
        self.outcomes: list[Outcome] = []

    def transform_module(self, mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        self.outcomes = []
        target = self.target or tvm.target.Target.current(allow_none=True)
        if not is_cpu(target):
            return mod
        self.columns = BLOCK_VECTORS * vector_lanes(target)
        return map_relax_functions(mod, self._rewrite_function)

    def _rewrite_function(self, func: relax.Function) -> relax.Function | None:
        return rewrite_recorded(
            self.pattern,
            lambda _call, matches: packed(matches[self.data], matches[self.weight], self.columns),
            func,
            self.outcomes,
        )


def packed(data: relax.Expr, weight: relax.Expr, columns: int) -> tuple[relax.Expr, str] | str:
    """The dense layer ``matmul(data, weight)`` with ``weight`` packed in blocks of ``columns``
    output columns, and what was done; or the reason it is left as it was."""
    if not isinstance(weight, tvm.ir.GenericConst):
        return "weights are not a constant (computed at run time): left as it was"
    w = weight.value.numpy()
    shape = static_shape(data)
    if shape is None:
        return "input of unknown shape: left as it was"
    dtype = str(data.ty.dtype)
    if not dtype.startswith("float") or str(w.dtype) != dtype:
        return f"a {dtype} x {w.dtype} matmul, not float: left as it was"
    if w.ndim != 2 or len(shape) != 2 or shape[1] != w.shape[0]:
        return f"a {list(shape)} x {list(w.shape)} matmul, not a matrix by a constant matrix: left as it was"
    (rows, k), n = shape, w.shape[1]
    if rows > MAX_ROWS:
        return f"{rows} rows, more than {MAX_ROWS}: a matrix product, left as it was"
    blocks = -(-n // columns)
    padded = np.zeros((k, blocks * columns), w.dtype)
    padded[:, :n] = w
    wp = np.ascontiguousarray(padded.reshape(k, blocks, columns).transpose(1, 0, 2))
    y = relax.op.matmul(data, relax.const(wp, dtype))
    y = relax.op.reshape(relax.op.permute_dims(y, [1, 0, 2]), [rows, blocks * columns])
    if blocks * columns != n:
        y = relax.op.strided_slice(y, axes=[1], begin=[0], end=[n])
    return y, f"{rows}x{k} by {k}x{n}: weights packed as [{blocks}, {k}, {columns}] at compile time"
