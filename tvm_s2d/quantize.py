"""Quantize a float ONNX model with ONNX Runtime's ``quantize_static`` (QDQ, uint8 activations,
per-channel int8 weights, calibrated on seeded random inputs): the quantized models of the
demo, the Hexagon benchmarks and the model zoo, as a deployment would make them (the zoo's
after ONNX Runtime's ``quant_pre_process``, as its docs advise). Needs ``onnxruntime``
(installed with the ``test`` extra)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx


def quantize_qdq(model: onnx.ModelProto, path: str | Path, samples: int = 4, preprocess: bool = False) -> Path:
    """Write ``model`` quantized to ``path`` (the float model beside it); returns ``path``.
    ``preprocess``: first ONNX Runtime's ``quant_pre_process`` (shape inference, graph
    optimization: batch norms folded into convs, constants folded)."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quant_pre_process, quantize_static

    path = Path(path)
    graph_input = model.graph.input[0]
    shape = [d.dim_value for d in graph_input.type.tensor_type.shape.dim]

    class Inputs(CalibrationDataReader):
        def __init__(self):
            self.data = iter({graph_input.name: np.random.default_rng(i).standard_normal(shape).astype(np.float32)}
                             for i in range(samples))

        def get_next(self):
            return next(self.data, None)

    float_path = path.with_suffix(".float.onnx")
    onnx.save(model, float_path)
    if preprocess:
        quant_pre_process(float_path, float_path.with_suffix(".pre.onnx"))
        float_path = float_path.with_suffix(".pre.onnx")
    quantize_static(str(float_path), str(path), Inputs(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    return path
