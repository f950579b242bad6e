"""What "matches" means, once: the tolerances of float and quantized outputs against ONNX
Runtime and the step counting behind them (``zoo_check``, ``bench``, ``emulator.model``).

Quantized outputs are compared with ONNX Runtime with graph optimizations off (the ONNX
semantics op by op; its default session runs fused int8 kernels that round differently), in
units of the output's quantization step.
"""

from __future__ import annotations

import numpy as np

#: Float outputs match ONNX Runtime when max |diff| / max |ref| is at most this.
FLOAT_TOLERANCE = 1e-3
#: Quantized outputs against ONNX Runtime (optimizations off): at most this many steps ...
MAX_STEPS = 2
#: ... on at most this fraction of the outputs.
MAX_FRACTION = 0.01


def output_steps(onnx_model, got: np.ndarray, expected: np.ndarray) -> tuple[int, float]:
    """``(max steps, fraction differing)`` of ``got`` against ``expected``. Steps are units of
    the output's quantization: its DequantizeLinear's scale for a float output, 1 for an
    integer one; a float output without one is counted in steps of 1e-5 of its largest
    magnitude (the float tolerance of the tests)."""
    diff = np.abs(got.astype(np.float64) - expected.astype(np.float64))
    if np.issubdtype(got.dtype, np.integer):
        step = 1.0
    else:
        step = output_scale(onnx_model) or 1e-5 * max(float(np.abs(expected).max()), 1e-30)
    steps = np.rint(diff / step)
    return (int(steps.max()) if steps.size else 0), (float((steps > 0).mean()) if steps.size else 0.0)


def compare_with_onnxruntime(onnx_model, feeds: dict, output: np.ndarray) -> dict:
    """``{"max_steps", "fraction_differing"}`` of ``output`` against ONNX Runtime with graph
    optimizations off (``output_steps``)."""
    import onnxruntime as ort

    session_options = ort.SessionOptions()
    session_options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(onnx_model.SerializeToString(), session_options, providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    expected = session.run(None, {name: feeds[name] for name in names})[0]
    steps, fraction = output_steps(onnx_model, output, expected)
    return {"max_steps": steps, "fraction_differing": fraction}


#: Ops that move quantized values without changing them: the output's DequantizeLinear may sit before them.
MOVES = ("DepthToSpace", "SpaceToDepth", "Reshape", "Transpose", "Flatten", "Squeeze", "Unsqueeze", "Identity")


def output_scale(onnx_model) -> float | None:
    """The scale of the per-tensor DequantizeLinear that produces the model's first output,
    possibly through ops that only move values (``MOVES``)."""
    from onnx import numpy_helper

    producers = {out: node for node in onnx_model.graph.node for out in node.output}
    inits = {i.name: i for i in onnx_model.graph.initializer}
    node = producers.get(onnx_model.graph.output[0].name)
    while node is not None and node.op_type in MOVES:
        node = producers.get(node.input[0])
    if node is None or node.op_type != "DequantizeLinear" or node.input[1] not in inits:
        return None
    scale = numpy_helper.to_array(inits[node.input[1]])
    return float(scale.reshape(-1)[0]) if scale.size == 1 else None


#: A value whose exact result lies within this many steps of a rounding boundary is a tie as far
#: as float32 can tell (an accumulation in float32 moves it by ~1e-5 step; the integer path by
#: ~1e-7): either rounding is an exact implementation's.
NEAR_TIE = 1e-4


def exact_steps(onnx_model, feeds: dict) -> np.ndarray:
    """The output of a QDQ graph whose only ``QuantizeLinear`` produces its output (one layer of
    ``zoo_check.layer_steps``), before rounding, in float64: ``x / scale + zero`` with every
    dequantized value and op in float64 (onnx's reference evaluator; ONNX Runtime and TVM compute
    in float32). What an exact implementation rounds (ties to even), and how near a tie each
    value is."""
    from onnx.reference import ReferenceEvaluator
    from onnx.reference.op_run import OpRun
    from onnx.reference.ops._quant_utils import reshape_input

    class DequantizeLinear(OpRun):  # noqa: D401 - onnx's OpRun protocol
        def _run(self, x, scale, zero=None, axis=1, block_size=0, output_dtype=None):
            shifted = x.astype(np.float64) - (0 if zero is None else reshape_input(zero.astype(np.float64), x.shape, axis))
            return (shifted * reshape_input(scale.astype(np.float64), x.shape, axis),)

    output = onnx_model.graph.output[0].name

    class QuantizeLinear(OpRun):  # the output's unrounded; others (an input's quantize) as ONNX has them
        def _run(self, x, scale, zero=None, axis=1, saturate=1, block_size=0, output_dtype=None, precision=0):
            dtype = np.uint8 if zero is None else zero.dtype
            zero = 0 if zero is None else reshape_input(zero.astype(np.float64), x.shape, axis)
            scale = reshape_input(scale.astype(np.float64), x.shape, axis)
            if self.onnx_node.output[0] == output:
                return (x.astype(np.float64) / scale + zero,)
            return (round_exact((x.astype(np.float32) / scale.astype(np.float32)).astype(np.float64) + zero, dtype),)

    session = ReferenceEvaluator(onnx_model, new_ops=[DequantizeLinear, QuantizeLinear])
    return session.run(None, {i.name: feeds[i.name] for i in onnx_model.graph.input})[0]


def round_exact(values: np.ndarray, dtype) -> np.ndarray:
    """``values`` (``exact_steps``) rounded as ONNX does: to nearest, ties to even, saturated."""
    info = np.iinfo(dtype)
    return np.clip(np.rint(values), info.min, info.max).astype(dtype)


def tie_distance(values: np.ndarray) -> np.ndarray:
    """How far each value lies from a rounding boundary (``k + 0.5``), in steps."""
    return np.abs(values - np.floor(values) - 0.5)
