"""ONNX in: load and validate a model, import it to Relax with weights as constants.

TVM's importer drops node names; ``from_onnx`` puts each ONNX node's name back on the Relax
variables it is bound to (``onnx_names``): a ``Conv``'s on its conv2d, so the report and the
kernels' names speak the model's language.
"""

from __future__ import annotations

import contextlib
import os
import warnings

import numpy as np
import onnx
import tvm
from tvm import relax
from tvm.relax.frontend.onnx import from_onnx as relax_from_onnx
from tvm.relax.frontend.onnx import onnx_frontend

from .onnx_names import ONNX_NAMES_ATTR, name_bindings, recording
from .onnx_shapes import fold_shapes
from .qoperator import has_qoperators, to_qdq


class ModelError(ValueError):
    """A model tvm-s2d cannot use; the message names the file and the problem."""


class ModelWarning(UserWarning):
    """A spec violation that ONNX Runtime and TVM tolerate; the message names the values."""


def check_model(model: onnx.ModelProto, where: str = "the ONNX model") -> None:
    """``onnx.checker.check_model``, except for what ONNX Runtime and TVM's importer accept:
    graph inputs or outputs without a shape, and (IR version < 4) initializers that are not
    graph inputs. Each of those becomes one ``ModelWarning`` naming the values; any other
    violation is a ``ModelError`` naming ``where``."""
    graph = model.graph
    shapeless = [v.name for v in [*graph.input, *graph.output, *graph.value_info]
                 if v.type.HasField("tensor_type") and not v.type.tensor_type.HasField("shape")]
    inputs = {v.name for v in graph.input}
    not_inputs = [init.name for init in graph.initializer if init.name not in inputs]
    tolerated = model
    if shapeless or (not_inputs and model.ir_version < 4):
        tolerated = onnx.ModelProto()
        tolerated.CopyFrom(model)  # the checker's copy; the model itself is imported as it is
        for v in [*tolerated.graph.input, *tolerated.graph.output, *tolerated.graph.value_info]:
            if v.name in shapeless:
                v.type.tensor_type.shape.SetInParent()
        if model.ir_version < 4:
            by_name = {init.name: init for init in graph.initializer}
            tolerated.graph.input.extend(
                onnx.helper.make_tensor_value_info(n, by_name[n].data_type, list(by_name[n].dims)) for n in not_inputs)
    try:
        onnx.checker.check_model(tolerated)
    except onnx.checker.ValidationError as exc:
        raise ModelError(f"{where}: invalid ONNX model: {str(exc).strip().splitlines()[0]}") from None
    if shapeless:
        warnings.warn(f"{where}: {_names(shapeless)} {'has' if len(shapeless) == 1 else 'have'} no shape"
                      " (the ONNX checker requires one; shapes are inferred)", ModelWarning, stacklevel=4)
    if not_inputs and model.ir_version < 4:
        warnings.warn(f"{where}: initializer(s) {_names(not_inputs)} are not graph inputs, as IR version"
                      f" {model.ir_version} requires (read as constants)", ModelWarning, stacklevel=4)


def _names(names: list[str], shown: int = 3) -> str:
    text = ", ".join(repr(n) for n in names[:shown])
    return text + (f" and {len(names) - shown} more" if len(names) > shown else "")


def load_onnx(model_or_path) -> onnx.ModelProto:
    """An ``onnx.ModelProto`` from a path or a model, checked by ``onnx.checker``."""
    where = _where(model_or_path)
    if isinstance(model_or_path, onnx.ModelProto):
        model = model_or_path
    elif isinstance(model_or_path, (str, os.PathLike)):
        if os.path.isdir(where):
            raise ModelError(f"{where} is a directory; give an .onnx file")
        if not os.path.isfile(where):
            raise ModelError(f"{where}: no such file")
        try:
            model = onnx.load(where)
        except Exception as exc:  # protobuf raises several unrelated types here
            raise ModelError(f"{where}: not an ONNX model ({type(exc).__name__}: {exc})") from None
    else:
        raise TypeError(f"expected an onnx.ModelProto or a path, got {type(model_or_path).__name__}")
    check_model(model, where)
    return model


def from_onnx(model_or_path, shape_dict: dict | None = None) -> tvm.IRModule:
    """Import an ONNX model (path or ``ModelProto``) as a Relax module, weights bound as constants.

    ``shape_dict`` maps input names to static shapes for models with dynamic inputs.
    QOperator models (``QLinearConv`` ...) are imported in their QDQ form (``qoperator.py``).
    """
    return import_model(load_onnx(model_or_path), shape_dict, _where(model_or_path))


def import_model(model: onnx.ModelProto, shape_dict: dict | None = None, where: str = "the ONNX model") -> tvm.IRModule:
    """``from_onnx`` of a model ``load_onnx`` has checked."""
    check_shapes(model, shape_dict or {})
    if has_qoperators(model):
        model = to_qdq(model)
    model = fold_shapes(model, shape_dict)
    try:
        with warnings.catch_warnings():  # its own checker run: load_onnx has said what matters
            warnings.filterwarnings("ignore", module=r"tvm\.relax\.frontend")
            with recording() as records, clips_as_ops():
                mod = relax_from_onnx(model, shape_dict=shape_dict)
    except Exception as exc:
        raise ModelError(f"{where}: TVM cannot import it: {type(exc).__name__}: {_first_line(exc)}") from exc
    mod, names = name_bindings(mod, records)
    return mod.with_attr(ONNX_NAMES_ATTR, names.as_attr()) if names else mod


@contextlib.contextmanager
def clips_as_ops():
    """While importing: ``Clip`` with constant bounds (ReLU6) as Relax's ``clip`` op, which the
    quantized passes fold into a requantization and the layout passes carry
    (``conv_layout.convert_convs``). TVM's importer writes it as TE kernels (``call_tir`` of
    ``topi.maximum`` / ``minimum``) that no pass sees into: the CPU layout could not carry a
    layout through them, and each cost MobileNetV2 an NHWC -> NCHW -> NHWC transpose pair. A
    ``Clip`` whose bounds are computed or NaN (unbounded to ONNX Runtime) keeps TVM's conversion."""
    clip = onnx_frontend.Clip
    originals = {v: getattr(clip, v) for v in ("_impl_v1", "_impl_v13")}

    def constant(bound) -> float | None:  # None: no bound; NaN: computed, or NaN
        if bound is None:
            return None
        value = bound.value.numpy() if isinstance(bound, tvm.ir.GenericConst) else np.array([np.nan])
        return float(value.reshape(-1)[0]) if value.size == 1 else np.nan

    def v13(cls, bb, inputs, attr, params):
        bounds = [constant(b) for b in [*inputs[1:3], None, None][:2]]
        if any(b is not None and np.isnan(b) for b in bounds):
            return originals["_impl_v13"].__func__(cls, bb, inputs, attr, params)
        return _clip(inputs[0], *bounds)

    def v1(cls, bb, inputs, attr, params):
        return _clip(inputs[0], *(float(attr[k]) if k in attr else None for k in ("min", "max")))

    clip._impl_v1, clip._impl_v13 = classmethod(v1), classmethod(v13)
    try:
        yield
    finally:
        for name, impl in originals.items():
            setattr(clip, name, impl)


def _clip(x, lo: float | None, hi: float | None):
    return relax.op.clip(x, -np.inf if lo is None else lo, np.inf if hi is None else hi)


def _where(model_or_path) -> str:
    return os.fspath(model_or_path) if isinstance(model_or_path, (str, os.PathLike)) else "the ONNX model"


def model_inputs(model: onnx.ModelProto) -> dict[str, list]:
    """The graph inputs that are not initializers, with their dims (an int, or a name or None
    where dynamic)."""
    inits = {init.name for init in model.graph.initializer}
    return {
        v.name: [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in v.type.tensor_type.shape.dim]
        for v in model.graph.input if v.name not in inits
    }


def check_shapes(model: onnx.ModelProto, shape_dict: dict) -> None:
    """Each given shape names an input of the model and has its rank; one ``ModelWarning``
    when it replaces a static dimension of the model."""
    inputs = model_inputs(model)
    for name, shape in shape_dict.items():
        if name not in inputs:
            raise ModelError(f"shape given for {name!r}, which is not an input of the model"
                             f" (its inputs: {', '.join(inputs) or 'none'})")
        if len(inputs[name]) != len(shape):
            raise ModelError(f"shape given for {name!r} has {len(shape)} dims, the input has {len(inputs[name])}")
        declared = inputs[name]
        fixed = [(i, d) for i, d in enumerate(declared) if isinstance(d, int) and d > 0 and d != shape[i]]
        if fixed:
            warnings.warn(f"shape given for {name!r}, {','.join(map(str, shape))}, replaces the model's static"
                          f" {','.join(str(d) if isinstance(d, int) and d > 0 else '?' for d in declared)}"
                          f" (dim{'s' if len(fixed) > 1 else ''} {', '.join(str(i) for i, _ in fixed)}): layers"
                          " sized for it (a Reshape, a Gemm) may not fit", ModelWarning, stacklevel=3)


def dynamic_inputs(model: onnx.ModelProto, shape_dict: dict | None = None) -> dict[str, list]:
    """The inputs with a dimension that is not a number, not given in ``shape_dict``."""
    given = shape_dict or {}
    return {name: dims for name, dims in model_inputs(model).items()
            if name not in given and not all(isinstance(d, int) and d > 0 for d in dims)}


def _first_line(exc: Exception) -> str:
    lines = [line for line in str(exc).strip().splitlines() if line.strip()]
    return lines[-1] if lines and lines[0].startswith("Traceback") else (lines[0] if lines else "")


def model_macs(model: onnx.ModelProto) -> int:
    """Multiply-accumulates of the model's convs and matrix products (``Conv``: each output
    value sums ``C/groups x kernel`` products; ``ConvTranspose``: each input value times
    ``C_out/groups x kernel``; ``Gemm``/``MatMul``: ``M x N x K``), from ONNX shape inference;
    0 for a layer whose shapes it cannot infer."""
    try:
        inferred = onnx.shape_inference.infer_shapes(model).graph
    except Exception:  # noqa: BLE001 - a statistic, not a check
        return 0
    shapes = {init.name: list(init.dims) for init in model.graph.initializer}
    for info in [*inferred.value_info, *inferred.input, *inferred.output]:
        dims = info.type.tensor_type.shape.dim
        if info.type.tensor_type.HasField("shape") and all(d.HasField("dim_value") for d in dims):
            shapes[info.name] = [d.dim_value for d in dims]
    total = 0
    for node in model.graph.node:
        if node.op_type in ("Conv", "ConvTranspose", "Gemm", "MatMul") and len(node.input) >= 2:
            x, w, y = shapes.get(node.input[0]), shapes.get(node.input[1]), shapes.get(node.output[0])
            if x is None or w is None or y is None:
                continue
            if node.op_type == "Conv":
                total += int(np.prod(y)) * int(np.prod(w[1:]))
            elif node.op_type == "ConvTranspose":
                total += int(np.prod(x)) * int(np.prod(w[1:]))
            else:
                total += int(np.prod(y)) * int(x[-1])
    return total
