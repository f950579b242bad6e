"""The model zoo: real CNN architectures as float and int8 (QDQ) ONNX models, by name.

Three families, each model with seeded random weights (no trained weights are stored):

* ``light``: the nine "light" models of the onnx wheel (``onnx/backend/test/data/light``:
  AlexNet, DenseNet-121, Inception v1/v2, ResNet-50, ShuffleNet, SqueezeNet, VGG-19,
  ZFNet-512), whose big weights are ``ConstantOfShape`` nodes;
* ``torchvision``: torchvision models exported to ONNX by ``scripts/export_zoo.py`` and
  committed stripped, every weight a ``ConstantOfShape`` node (``zoo_models/<name>_<size>.onnx``);
* ``own``: the small architectures of ``models.py`` and the demo network.

``fill_weights`` turns each weight ``ConstantOfShape`` into a seeded random initializer
(He-scaled); the zoo then scales each conv and dense layer by one number so that deep nets
neither explode nor vanish. ``ZOO`` holds the models by name; ``float_model(name,
size)`` gives one float, ``quantized_model(name, size)`` its QDQ model (ONNX Runtime's
``quant_pre_process`` and ``quantize_static``, cached on disk). Needs only numpy and onnx to
import; normalizing, quantizing and ``run_onnxruntime`` need ``onnxruntime``.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnx.version_converter
from onnx import helper, numpy_helper

LIGHT_DIR = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"
MODELS_DIR = Path(__file__).parent / "zoo_models"
#: Bump when the weights or the quantization of the zoo change: names the quantized cache files.
CACHE_VERSION = 1

#: Ops a weight may pass through (as input 0) on its way to the op that uses it.
_RESHAPES = {"Unsqueeze", "Squeeze", "Reshape", "Transpose", "Flatten", "Identity", "Cast", "Expand"}
_FLOATS = {onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE, onnx.TensorProto.FLOAT16}


def _attr(node: onnx.NodeProto, name: str, default=None):
    found = [a for a in node.attribute if a.name == name]
    return helper.get_attribute_value(found[0]) if found else default


def _role(node: onnx.NodeProto, index: int, shape: list[int]) -> tuple[str, float] | None:
    """How a float constant of ``shape`` used as input ``index`` of ``node`` is filled:
    ``("he", fan_in)``, ``("unit", 0)`` (positive, about 1) or ``("small", 0)``; None if it
    is no weight."""
    op, numel = node.op_type, int(np.prod(shape)) if shape else 1
    if op == "Conv" and index == 1 and len(shape) >= 3:
        return "he", float(np.prod(shape[1:]))
    if op == "ConvTranspose" and index == 1 and len(shape) >= 3:
        strides = _attr(node, "strides") or [1]
        return "he", max(1.0, shape[0] / _attr(node, "group", 1) * np.prod(shape[2:]) / np.prod(strides))
    if op == "Gemm" and index == 1 and len(shape) == 2:
        return "he", float(shape[1] if _attr(node, "transB", 0) else shape[0])
    if op == "MatMul" and index == 1 and len(shape) >= 2:
        return "he", float(shape[-2])
    if op in ("Conv", "ConvTranspose", "Gemm") and index == 2:
        return "small", 0.0
    if op == "BatchNormalization" and index in (1, 4) or op in ("LayerNormalization", "InstanceNormalization") and index == 1:
        return "unit", 0.0  # scale; the batch norm's variance (positive)
    if op == "BatchNormalization" and index in (2, 3) or op in ("LayerNormalization", "InstanceNormalization") and index == 2:
        return "small", 0.0  # shift; the batch norm's mean
    if op in ("Mul", "Add") and numel > 1:  # a per-channel scale or shift (a scalar is an activation's constant)
        return ("unit" if op == "Mul" else "small"), 0.0
    return None


class _Graph:
    """Consumers, constants and inferred shapes of a graph, for telling weights apart."""

    def __init__(self, model: onnx.ModelProto):
        graph = model.graph
        self.consumers: dict[str, list[tuple[onnx.NodeProto, int]]] = {}
        for node in graph.node:
            for i, name in enumerate(node.input):
                self.consumers.setdefault(name, []).append((node, i))
        self.constants = {init.name: init for init in graph.initializer}
        for node in graph.node:
            if node.op_type == "Constant" and _attr(node, "value") is not None:
                self.constants[node.output[0]] = _attr(node, "value")
        self._model, self._shapes = model, None

    def shape(self, name: str) -> list[int] | None:
        if self._shapes is None:
            try:
                inferred = onnx.shape_inference.infer_shapes(self._model).graph
            except Exception:  # shapes help with weights behind a Reshape only
                inferred = onnx.GraphProto()
            self._shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
                            for v in [*inferred.value_info, *inferred.output] if v.type.tensor_type.HasField("shape")}
        shape = self._shapes.get(name)
        return shape if shape and all(d > 0 for d in shape) else None

    def role(self, name: str, shape: list[int]) -> tuple[str, float] | None:
        """The fill of the constant ``name``: from its first user that is not a reshape."""
        for node, index in self.consumers.get(name, []):
            if node.op_type in _RESHAPES and index == 0:
                found = self.role(node.output[0], self.shape(node.output[0]) or shape)
            else:
                found = _role(node, index, shape)
            if found:
                return found
        return None


def _random(rng: np.random.Generator, role: tuple[str, float], shape: list[int], dtype) -> np.ndarray:
    kind, fan_in = role
    if kind == "unit":
        return rng.uniform(0.5, 1.5, shape).astype(dtype)
    values = rng.standard_normal(shape, dtype=np.float32)
    values *= np.float32(np.sqrt(2.0 / fan_in) if kind == "he" else 0.01)
    return values.astype(dtype, copy=False)


def _fill(model: onnx.ModelProto, seed: int) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """``fill_weights`` as the graph without the filled weights and the weights by name."""
    graph = _Graph(model)
    rng = np.random.default_rng(seed)
    skeleton = onnx.ModelProto()
    skeleton.CopyFrom(model)
    del skeleton.graph.node[:]
    arrays = {}
    for node in model.graph.node:
        value = _attr(node, "value") if node.op_type == "ConstantOfShape" else None
        shape = graph.constants.get(node.input[0]) if node.op_type == "ConstantOfShape" else None
        if shape is not None and (value is None or value.data_type in _FLOATS):
            dims = [int(d) for d in numpy_helper.to_array(shape)]
            role = graph.role(node.output[0], dims)
            if role:
                dtype = numpy_helper.to_array(value).dtype if value is not None else np.dtype(np.float32)
                arrays[node.output[0]] = _random(rng, role, dims, dtype)
                continue
        skeleton.graph.node.append(node)
    return _prune(skeleton, arrays), arrays


def fill_weights(model: onnx.ModelProto, seed: int = 0) -> onnx.ModelProto:
    """A copy of ``model`` where each float ``ConstantOfShape`` that feeds a weight is an
    initializer of seeded random values, by the op that uses it (behind reshapes): conv, Gemm
    and MatMul weights He-scaled normal (std ``sqrt(2 / fan_in)``), biases and shifts
    (batch-norm bias and mean, layer-norm bias, per-channel ``Add``) ``0.01 * normal``, scales
    and variances (batch norm, layer norm, per-channel ``Mul``) uniform in [0.5, 1.5]. Other
    ``ConstantOfShape`` nodes stay. The copy has no unused nodes or initializers and no
    initializers among its graph inputs (IR version at least 4, where they need not be)."""
    return _assemble(*_fill(model, seed))


def strip_weights(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` with each float initializer that ``fill_weights`` would fill replaced by a
    ``ConstantOfShape`` of its shape (the weights-free graphs of ``zoo_models``)."""
    graph = _Graph(model)
    out = onnx.ModelProto()
    out.CopyFrom(model)
    kept, shapes, nodes = [], [], []
    for init in model.graph.initializer:
        dims = list(init.dims)
        if init.data_type not in _FLOATS or not dims or not graph.role(init.name, dims):
            kept.append(init)
            continue
        shapes.append(numpy_helper.from_array(np.array(dims, np.int64), init.name + "__SHAPE"))
        value = numpy_helper.from_array(np.zeros(1, helper.tensor_dtype_to_np_dtype(init.data_type)), "")
        nodes.append(helper.make_node("ConstantOfShape", [init.name + "__SHAPE"], [init.name], value=value))
    del out.graph.initializer[:], out.graph.node[:]
    out.graph.initializer.extend(kept + shapes)
    out.graph.node.extend(nodes + list(model.graph.node))
    return _assemble(out, {})


def _prune(skeleton: onnx.ModelProto, arrays: dict[str, np.ndarray]) -> onnx.ModelProto:
    """``skeleton`` (changed) without unused nodes, initializers and ``arrays``, and without
    initializers among its graph inputs (IR version >= 4, where they need not be)."""
    graph = skeleton.graph
    used = {v.name for v in graph.output}
    alive = []
    for node in reversed(graph.node):
        if any(name in used for name in node.output):
            alive.append(node)
            used.update(node.input)
    del graph.node[:]
    graph.node.extend(reversed(alive))
    names = {init.name for init in graph.initializer} | set(arrays)
    inits = [init for init in graph.initializer if init.name in used and init.name not in arrays]
    inputs = [v for v in graph.input if v.name not in names]
    del graph.initializer[:], graph.input[:]
    graph.initializer.extend(inits)
    graph.input.extend(inputs)
    for name in [name for name in arrays if name not in used]:
        del arrays[name]
    skeleton.ir_version = max(skeleton.ir_version, 4)
    return skeleton


def _assemble(skeleton: onnx.ModelProto, arrays: dict[str, np.ndarray]) -> onnx.ModelProto:
    """``skeleton`` (changed, pruned) with ``arrays`` as initializers."""
    graph = _prune(skeleton, arrays).graph
    for name, array in arrays.items():
        tensor = graph.initializer.add()
        tensor.name, tensor.data_type = name, helper.np_dtype_to_tensor_dtype(array.dtype)
        tensor.dims.extend(array.shape)
        tensor.raw_data = np.ascontiguousarray(array, array.dtype.newbyteorder("<")).tobytes()
    return skeleton


_LAYERS = ("Conv", "ConvTranspose", "Gemm", "MatMul")


def _normalize(skeleton: onnx.ModelProto, arrays: dict[str, np.ndarray], seed: int) -> None:
    """Scale each Conv, ConvTranspose, Gemm and MatMul of constant weight in the graph
    ``skeleton`` with float weights ``arrays`` (both changed; the float initializers of
    ``skeleton`` join ``arrays``): its weight and bias times one number, so that its output
    has RMS 1 on a seeded standard normal input, layer after layer. Without trained batch-norm
    statistics a random deep net grows at each residual add (twice the variance where the
    branch keeps it), and through batch norms with random statistics. One ONNX Runtime run of
    a copy that divides each layer's output by its RMS as it goes gives the factors (the
    weights fed to it as inputs, not copied into it)."""
    import onnxruntime as ort

    graph = skeleton.graph
    arrays.update((init.name, numpy_helper.to_array(init).copy()) for init in graph.initializer if init.data_type in _FLOATS and init.dims)
    kept = [init for init in graph.initializer if init.name not in arrays]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    identities = {node.output[0]: node.input[0] for node in graph.node if node.op_type == "Identity"}

    def source(name: str) -> str:  # behind the Identity nodes by which the TorchScript exporter shares equal tensors
        while name in identities:
            name = identities[name]
        return name

    layers = {node.output[0] for node in graph.node if node.op_type in _LAYERS and len(node.input) > 1 and source(node.input[1]) in arrays}
    probe = onnx.ModelProto()
    probe.CopyFrom(skeleton)
    del probe.graph.node[:]
    probe.graph.input.extend(helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(a.dtype), a.shape)
                             for name, a in arrays.items())
    probe.graph.initializer.append(numpy_helper.from_array(np.array(1e-30, np.float32), "zoo__eps"))
    for node in graph.node:
        if node.output[0] not in layers:
            probe.graph.node.append(node)
            continue
        out, raw = node.output[0], node.output[0] + "__raw"
        copy = probe.graph.node.add()
        copy.CopyFrom(node)
        copy.output[0] = raw
        probe.graph.node.extend([helper.make_node("Mul", [raw, raw], [raw + "2"]),
                                 helper.make_node("ReduceMean", [raw + "2"], [raw + "m"], keepdims=0),
                                 helper.make_node("Add", [raw + "m", "zoo__eps"], [raw + "e"]),
                                 helper.make_node("Sqrt", [raw + "e"], [out + "__rms"]),
                                 helper.make_node("Div", [raw, out + "__rms"], [out])])
        probe.graph.output.append(helper.make_tensor_value_info(out + "__rms", onnx.TensorProto.FLOAT, []))
    options = ort.SessionOptions()
    options.log_severity_level = 3  # not the warnings about initializers among the inputs
    session = ort.InferenceSession(probe.SerializeToString(), options, providers=["CPUExecutionProvider"])
    rms = dict(zip([o.name for o in session.get_outputs()], session.run(None, {**sample_inputs(skeleton, seed), **arrays})))
    uses: dict[str, int] = {}
    for node in graph.node:
        for name in node.input:
            uses[source(name)] = uses.get(source(name), 0) + 1
    for node in graph.node:
        factor = 1.0 / float(rms[node.output[0] + "__rms"]) if node.output[0] in layers else 0.0
        if not (np.isfinite(factor) and factor > 0):
            continue
        for index in range(1, 2 if node.op_type == "MatMul" else min(3, len(node.input))):
            name = source(node.input[index])
            if name in arrays:
                if uses[name] == 1 and name == node.input[index]:
                    arrays[name] *= np.asarray(factor, arrays[name].dtype)
                else:  # shared: this layer's own copy
                    arrays[f"{node.output[0]}__{index}"] = arrays[name] * np.asarray(factor, arrays[name].dtype)
                    node.input[index] = f"{node.output[0]}__{index}"


def sample_inputs(model: onnx.ModelProto, seed: int = 0) -> dict[str, np.ndarray]:
    """Seeded standard normal values for the model's inputs that are not initializers (dynamic dims 1)."""
    rng = np.random.default_rng(seed)
    inits = {init.name for init in model.graph.initializer}
    return {v.name: rng.standard_normal([d.dim_value or 1 for d in v.type.tensor_type.shape.dim]).astype(
        helper.tensor_dtype_to_np_dtype(v.type.tensor_type.elem_type)) for v in model.graph.input if v.name not in inits}


@dataclass(frozen=True)
class Entry:
    """A zoo model: ``load(size, seed)`` gives it as a float ``ModelProto`` with input
    ``1x3 x size x size``; ``sizes`` are the sizes it takes, the default first (a model of the
    ``own`` family takes any multiple of 16; it has the weights of ``models.py``, whatever the
    seed). A light model is converted to opset 13 (per-channel quantization needs it)."""

    name: str
    family: str  # "light", "torchvision" or "own"
    sizes: tuple[int, ...]
    file: str = ""  # the light model's file in LIGHT_DIR

    @property
    def small(self) -> int:
        return min(self.sizes)

    def load(self, size: int | None = None, seed: int = 0) -> onnx.ModelProto:
        size = self.sizes[0] if size is None else size
        if size not in self.sizes and not (self.family == "own" and size > 0 and size % 16 == 0):
            raise ValueError(f"{self.name} takes sizes {', '.join(map(str, self.sizes))}, not {size}")
        if self.family == "own":
            from . import models
            from .demo import demo_model

            return demo_model(size) if self.name == "demo" else getattr(models, self.name)(size)
        if self.family == "light":
            model = onnx.version_converter.convert_version(onnx.load(LIGHT_DIR / self.file), 13)
        else:
            model = onnx.load(MODELS_DIR / f"{self.name}_{size}.onnx")
        skeleton, arrays = _fill(model, seed)
        if self.family == "light" and size != 224:  # the image, the only input left, is 224 in the file
            del skeleton.graph.value_info[:]
            for v in skeleton.graph.input:
                v.type.tensor_type.shape.dim[2].dim_value = v.type.tensor_type.shape.dim[3].dim_value = size
        _normalize(skeleton, arrays, seed)
        return _assemble(skeleton, arrays)


#: The onnx wheel's light models (file ``light_<stem>.onnx``) and the sizes they take: 224
#: fixed where a Reshape, a 7x7 average pool or a channel shuffle's shape is.
LIGHT = {"alexnet": ("bvlc_alexnet", (224,)), "densenet121": ("densenet121", (224, 96)), "inception_v1": ("inception_v1", (224,)),
         "inception_v2": ("inception_v2", (224,)), "resnet50": ("resnet50", (224,)), "shufflenet": ("shufflenet", (224,)),
         "squeezenet": ("squeezenet", (224, 96)), "vgg19": ("vgg19", (224,)), "zfnet512": ("zfnet512", (224,))}
#: The torchvision models of ``zoo_models`` and their input sizes (``scripts/export_zoo.py``).
TORCHVISION = {name: (224, 96) for name in [
    "resnet18", "resnet50", "mobilenet_v2", "mobilenet_v3_small", "mobilenet_v3_large", "efficientnet_b0",
    "shufflenet_v2_x1_0", "squeezenet1_1", "googlenet", "densenet121", "regnet_x_400mf", "mnasnet0_5",
    "convnext_tiny", "lraspp_mobilenet_v3_large"]}
#: The models of ``models.py`` (``models.zoo``'s "resnet" is "resnet_like" here, and so on).
OWN = ("resnet_like", "mobilenet_v2_like", "shufflenet_like", "densenet_like", "espcn_like", "demo")

#: Every zoo model by name.
ZOO: dict[str, Entry] = {
    **{f"light_{name}": Entry(f"light_{name}", "light", sizes, f"light_{stem}.onnx") for name, (stem, sizes) in LIGHT.items()},
    **{name: Entry(name, "torchvision", sizes) for name, sizes in TORCHVISION.items()},
    **{name: Entry(name, "own", (224, 96)) for name in OWN},
}


def _entry(name: str) -> Entry:
    if name not in ZOO:
        raise KeyError(f"no zoo model {name!r}; the zoo: {', '.join(ZOO)}")
    return ZOO[name]


def float_model(name: str, size: int | None = None, seed: int = 0) -> onnx.ModelProto:
    """The zoo model ``name``, float, input ``1x3 x size x size`` (default: its first size)."""
    return _entry(name).load(size, seed)


def cache_dir() -> Path:
    """Where quantized models are kept: ``$TVM_S2D_CACHE``, else ``~/.cache/tvm-s2d/zoo``."""
    if os.environ.get("TVM_S2D_CACHE"):
        return Path(os.environ["TVM_S2D_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "tvm-s2d" / "zoo"


def quantized_path(name: str, size: int | None = None, seed: int = 0) -> Path:
    """The file of ``quantized_model(name, size, seed)``, made on first use."""
    entry = _entry(name)
    size = entry.sizes[0] if size is None else size
    path = cache_dir() / f"{name}_{size}_seed{seed}_v{CACHE_VERSION}.qdq.onnx"
    if not path.exists():
        from .quantize import quantize_qdq

        model = entry.load(size, seed)
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
            made = quantize_qdq(model, Path(tmp) / path.name, preprocess=True)
            os.replace(made, path)  # whole or not at all, also when two processes race
    return path


def quantized_model(name: str, size: int | None = None, seed: int = 0) -> onnx.ModelProto:
    """The zoo model ``name`` quantized by ONNX Runtime (``quant_pre_process``, then
    ``quantize_static``: QDQ, uint8 activations, per-channel int8 weights, calibrated on
    seeded standard normal inputs), cached in ``cache_dir()`` by name, size and seed."""
    return onnx.load(quantized_path(name, size, seed))


def run_onnxruntime(model: onnx.ModelProto | str | Path, inputs: dict[str, np.ndarray] | None = None,
                    optimize: bool = True) -> list[np.ndarray]:
    """The outputs of ``model`` in ONNX Runtime on CPU for ``inputs`` (default:
    ``sample_inputs(model)``); ``optimize=False`` turns its graph optimizations off."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    if not optimize:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    model = model if isinstance(model, onnx.ModelProto) else onnx.load(model)
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return session.run(None, sample_inputs(model) if inputs is None else inputs)
