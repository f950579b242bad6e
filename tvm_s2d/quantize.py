"""Quantize a float ONNX model with ONNX Runtime (``quant_pre_process``, then
``quantize_static``: QDQ, uint8 activations, int8 weights per channel): what ``tvm-s2d
quantize`` runs, and the quantized models of the demo, the Hexagon benchmarks and the zoo.
Needs ``onnxruntime`` and ``sympy`` (the ``test`` extra installs both).

Calibration data: a directory of ``.npy`` files (one sample of the model's single input
each) or ``.npz`` files (one sample, arrays named by input), or ``random`` seeded normal
samples (enough to check a compiler; real accuracy needs real samples).
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import onnx

def is_quantized(model: onnx.ModelProto) -> bool:
    """Whether ``model`` has quantized ops (QDQ pairs or QOperator ops): what the integer and
    HVX kernels take."""
    return any(node.op_type in ("QuantizeLinear", "DequantizeLinear", "ConvInteger", "MatMulInteger")
               or node.op_type.startswith("QLinear") for node in model.graph.node)


def input_specs(model: onnx.ModelProto, shapes: dict | None = None, floats_only: bool = False
                ) -> dict[str, tuple[list[int], np.dtype]]:
    """The model's inputs (initializers aside): name -> (static shape, numpy dtype). Dynamic
    dims take ``shapes[name]``; a dynamic batch alone is taken as 1; any other dynamic dim
    without a shape is an error naming ``--shape``. ``floats_only``: an input that is not
    float is an error (calibration is for float models)."""
    inits = {init.name for init in model.graph.initializer}
    specs = {}
    for value in model.graph.input:
        if value.name in inits:
            continue
        tensor = value.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None for d in tensor.shape.dim]
        if shapes and value.name in shapes:
            dims = list(shapes[value.name])
        elif None in dims[1:]:
            fix = ",".join(str(d or 1) for d in dims)
            raise ValueError(f"input {value.name} has dynamic dims {dims}: give its shape, e.g. --shape {value.name}={fix}")
        dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type))
        if floats_only and dtype.kind != "f":
            raise ValueError(f"input {value.name} is {dtype}: quantization calibrates float models")
        specs[value.name] = ([d or 1 for d in dims], dtype)
    return specs


def random_samples(specs: dict, count: int, seed: int = 0) -> Iterator[dict[str, np.ndarray]]:
    """``count`` seeded samples of every input: standard normal floats, integers over their range."""
    for i in range(count):
        rng = np.random.default_rng(seed + i)
        yield {name: rng.standard_normal(shape).astype(dtype) if dtype.kind == "f" else
               rng.integers(np.iinfo(dtype).min, int(np.iinfo(dtype).max) + 1, shape).astype(dtype)
               if dtype.kind in "iu" else np.zeros(shape, dtype) for name, (shape, dtype) in specs.items()}


def directory_samples(directory: str | Path, specs: dict) -> list[dict[str, np.ndarray]]:
    """The samples of a calibration directory (``.npy``: the single input; ``.npz``: arrays
    named by input), checked against the inputs' shapes."""
    directory = Path(directory)
    if not directory.is_dir():
        raise ValueError(f"--calibration {directory}: not a directory (give a directory of .npy or .npz samples)")
    files = sorted(p for p in directory.iterdir() if p.suffix in (".npy", ".npz"))
    if not files:
        raise ValueError(f"--calibration {directory}: no .npy or .npz files in it")
    samples = []
    for path in files:
        try:
            if path.suffix == ".npz":
                with np.load(path) as arrays:
                    sample = {name: arrays[name] for name in arrays.files}
            else:
                if len(specs) != 1:
                    raise ValueError(f"the model has {len(specs)} inputs ({', '.join(specs)}): give .npz samples "
                                     "with one array per input name")
                sample = {next(iter(specs)): np.load(path)}
        except (OSError, ValueError) as exc:
            raise ValueError(f"--calibration {path}: {exc}") from None
        for name, (shape, dtype) in specs.items():
            if name not in sample:
                raise ValueError(f"--calibration {path}: no array named {name!r} (has {', '.join(sample)})")
            if list(sample[name].shape) != list(shape):
                raise ValueError(f"--calibration {path}: {name} has shape {list(sample[name].shape)}, the model takes {shape}")
            sample[name] = sample[name].astype(dtype)
        samples.append({name: sample[name] for name in specs})
    return samples


def quantize_file(source: str | Path, path: str | Path, samples: Iterable[dict[str, np.ndarray]],
                  per_channel: bool = True, preprocess: bool = True, log=None) -> Path:
    """Write the float model at ``source`` quantized to ``path``: ``quant_pre_process``
    (shape inference, batch norms folded into convs, constants folded) when ``preprocess``,
    then ``quantize_static`` (QDQ, uint8 activations, int8 weights, per channel or per
    tensor) calibrated on ``samples``. ``log``: a callable told each step."""
    try:
        from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quant_pre_process, quantize_static
    except ImportError as exc:
        raise ImportError(f"quantizing needs onnxruntime ({exc}); pip install -e \".[test]\"") from None
    say = log or (lambda text: None)
    path = Path(path)
    data = iter(samples)

    class Reader(CalibrationDataReader):
        def get_next(self):
            return next(data, None)

    with tempfile.TemporaryDirectory(prefix="s2d-quantize-") as tmp:
        if preprocess:
            say("preprocessing (ONNX Runtime's quant_pre_process: shapes, batch norms folded, constants folded)")
            staged = Path(tmp) / "pre.onnx"
            quant_pre_process(str(source), str(staged))
            source = staged
        say(f"calibrating and quantizing (quantize_static: QDQ, uint8 activations, int8 weights "
            f"{'per channel' if per_channel else 'per tensor'})")
        root = logging.getLogger()
        level = root.level
        root.setLevel(max(level, logging.ERROR))  # ONNX Runtime's advice to preprocess (done, or declined)
        try:
            quantize_static(str(source), str(path), Reader(), quant_format=QuantFormat.QDQ, per_channel=per_channel,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
        finally:
            root.setLevel(level)
    return path


def quantize_qdq(model: onnx.ModelProto, path: str | Path, samples: int = 4, preprocess: bool = False) -> Path:
    """Write ``model`` quantized to ``path`` (the float model beside it), calibrated on
    ``samples`` seeded random inputs; returns ``path``."""
    path = Path(path)
    float_path = path.with_suffix(".float.onnx")
    onnx.save(model, float_path)
    return quantize_file(float_path, path, random_samples(input_specs(model), samples), preprocess=preprocess)
