"""ONNX in: load and validate a model, import it to Relax with weights as constants.

TVM's importer drops node names; ``from_onnx`` puts each ONNX ``Conv`` node's name back on
the Relax variable its conv2d is bound to, so the report speaks the model's language.
"""

from __future__ import annotations

import os
import re

import onnx
import tvm
from tvm import relax
from tvm.relax.expr_functor import PyExprMutator, mutator
from tvm.relax.frontend.onnx import from_onnx as relax_from_onnx

from .passes.conv2d import CONV2D, CONV2D_TRANSPOSE


class ModelError(ValueError):
    """A model tvm-s2d cannot use; the message names the file and the problem."""


def load_onnx(model_or_path) -> onnx.ModelProto:
    """An ``onnx.ModelProto`` from a path or a model, checked by ``onnx.checker``."""
    if isinstance(model_or_path, onnx.ModelProto):
        model, where = model_or_path, "the ONNX model"
    elif isinstance(model_or_path, (str, os.PathLike)):
        where = os.fspath(model_or_path)
        if not os.path.isfile(where):
            raise ModelError(f"{where}: no such file")
        try:
            model = onnx.load(where)
        except Exception as exc:  # protobuf raises several unrelated types here
            raise ModelError(f"{where}: not an ONNX model ({type(exc).__name__}: {exc})") from None
    else:
        raise TypeError(f"expected an onnx.ModelProto or a path, got {type(model_or_path).__name__}")
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as exc:
        raise ModelError(f"{where}: invalid ONNX model: {str(exc).strip().splitlines()[0]}") from None
    return model


def from_onnx(model_or_path, shape_dict: dict | None = None) -> tvm.IRModule:
    """Import an ONNX model (path or ``ModelProto``) as a Relax module, weights bound as constants.

    ``shape_dict`` maps input names to static shapes for models with dynamic inputs.
    """
    model = load_onnx(model_or_path)
    try:
        mod = relax_from_onnx(model, shape_dict=shape_dict)
    except Exception as exc:
        raise ModelError(f"TVM cannot import the model: {type(exc).__name__}: {exc}") from exc
    return _name_convs(mod, conv_node_names(model))


def conv_node_names(model: onnx.ModelProto) -> list[str]:
    """Names of the 2-d ``Conv`` and ``ConvTranspose`` nodes, in graph order (the importer's)."""
    ranks = {init.name: len(init.dims) for init in model.graph.initializer}
    try:
        inferred = onnx.shape_inference.infer_shapes(model).graph
        for info in [*inferred.value_info, *inferred.input, *inferred.output]:
            if info.type.tensor_type.HasField("shape"):
                ranks[info.name] = len(info.type.tensor_type.shape.dim)
    except Exception:  # shape inference is a help for naming only
        pass
    names = []
    for node in model.graph.node:
        if node.op_type not in ("Conv", "ConvTranspose") or len(node.input) < 2:
            continue
        kernel_shape = next((list(a.ints) for a in node.attribute if a.name == "kernel_shape"), None)
        if (len(kernel_shape) if kernel_shape else ranks.get(node.input[1], 0) - 2) == 2:
            names.append(node.name or node.output[0])
    return names


def _name_convs(mod: tvm.IRModule, names: list[str]) -> tvm.IRModule:
    main = mod.get_global_var("main")
    renamer = _ConvRenamer(mod, [_identifier(n) for n in names])
    renamed = renamer.visit_expr(mod[main])
    if renamer.convs_seen != len(names):  # the importer did not map Conv nodes 1:1; keep its names
        return mod
    mod = mod.clone()
    mod.update_func(main, renamed)
    return mod


def _identifier(name: str) -> str:
    name = re.sub(r"\W", "_", name)
    return name if name and not name[0].isdigit() else "conv_" + name


@mutator
class _ConvRenamer(PyExprMutator):
    def __init__(self, mod, names):
        super().__init__(mod)
        self.names = names
        self.convs_seen = 0

    def visit_var_binding_(self, binding: relax.VarBinding) -> None:
        if not (CONV2D.match(binding.value) or CONV2D_TRANSPOSE.match(binding.value)):
            return super().visit_var_binding_(binding)
        index, self.convs_seen = self.convs_seen, self.convs_seen + 1
        if index >= len(self.names):
            return super().visit_var_binding_(binding)
        renamed = type(binding.var)(self.names[index], binding.var.ty)  # Var or DataflowVar
        super().visit_var_binding_(relax.VarBinding(renamed, binding.value))
        self.set_var_remap(binding.var, renamed)
