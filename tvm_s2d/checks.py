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
