"""A quantized NHWC network of the seed's low-channel convs, as Hexagon deployments see it:
uint8 activations with zero points, int8 weights, int32 accumulation, float requantization."""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax


def quantized_nhwc_chain(hw=(16, 20), channels: int = 8, convs: int = 2, seed: int = 0) -> "tvm.IRModule":
    """uint8 NHWC ``[1, H, W, channels]`` in and out; ``convs`` integer 3x3 same-padded convs
    (``channels -> channels``), each ``(x - zero) * W``, scaled, ReLU, quantized per tensor."""
    rng = np.random.default_rng(seed)
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((1, *hw, channels), "uint8"))
    with bb.function("main", [x]):
        with bb.dataflow():
            y, zero = x, 3
            for i in range(convs):
                w = rng.integers(-100, 100, (3, 3, channels, channels)).astype(np.int32)
                shifted = bb.emit(relax.op.subtract(relax.op.astype(y, "int32"), relax.const(np.int32(zero))))
                acc = bb.emit(relax.op.nn.conv2d(shifted, relax.const(w), padding=1, data_layout="NHWC",
                                                 kernel_layout="HWIO", out_dtype="int32"))
                f = bb.emit(relax.op.nn.relu(relax.op.multiply(relax.op.astype(acc, "float32"),
                                                               relax.const(np.float32(0.002)))))
                zero = 100 + i
                y = bb.emit(relax.op.quantize(f, relax.const(np.float32(0.05)), relax.const(np.uint8(zero)), axis=3,
                                              out_dtype="uint8"))
            out = bb.emit_output(y)
        bb.emit_func_output(out)
    return bb.get()
