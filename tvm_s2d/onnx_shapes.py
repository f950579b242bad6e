"""Shape arithmetic in ONNX graphs evaluated before the import.

PyTorch's TorchScript exporter writes ``x.chunk(2, dim=1)`` and ``x.view(b, g, c // g, h, w)``
as arithmetic on ``Shape(x)`` (``Shape -> Gather -> Add -> Div -> Mul -> Slice``, ``Concat``
of ``Unsqueeze``d dims -> ``Reshape``), even when every shape is static. TVM's importer keeps
that arithmetic as Relax ops, so the slice becomes a ``dynamic_strided_slice`` whose result
has no shape: the convs after it lose theirs, and TVM's ``FoldConstant`` (the pipeline's
preparation) fails on them (``emit_te now only supports Tensor that has ShapeExpr shape``,
from legalizing a conv without a shape). ShuffleNetV2's channel split is such a chunk.

``fold_shapes`` replaces ``Shape``/``Size`` of tensors whose shape ONNX shape inference knows
to be static, and every node computing only from them and constants, by ``Constant`` nodes
(evaluated by ``onnx.reference``): the importer then sees constant slice bounds and reshape
shapes. Nodes that do not depend on a shape (weights and their transposes) are left to TVM's
constant folding; a node the reference cannot evaluate is left as it is.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

SHAPE_OPS = {"Shape", "Size"}
NOT_FOLDED = {"RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike", "Multinomial", "Bernoulli"}
MAX_ELEMENTS = 4096  # a folded value is shape arithmetic, not a tensor of data


def fold_shapes(model: onnx.ModelProto, shape_dict: dict | None = None, rounds: int = 8) -> onnx.ModelProto:
    """``model`` with its static shape arithmetic made constants (see the module doc); the
    model itself when it has none. ``shape_dict`` gives inputs static shapes, as for the import.
    Shape inference does not see through all arithmetic (a ``Slice`` whose bounds are a
    ``Div`` of a dim), so each round infers shapes anew from the last one's constants."""
    for _ in range(rounds):
        folded = _fold_once(model, shape_dict)
        if folded is model:
            break
        model = folded
    return model


def _fold_once(model: onnx.ModelProto, shape_dict: dict | None) -> onnx.ModelProto:
    graph = model.graph
    if not any(n.op_type in SHAPE_OPS and n.domain in ("", "ai.onnx") for n in graph.node):
        return model
    shapes = _static_shapes(model, shape_dict or {})
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    known = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    from_shapes: set[str] = set()
    nodes, changed = [], False
    for node in graph.node:
        if node.op_type == "Constant":  # a value the arithmetic may use; the node stays
            known.update(zip(node.output, _evaluate(node, known, opset) or []))
            nodes.append(node)
            continue
        values = _fold(node, known, from_shapes, shapes, opset)
        if values is None:
            nodes.append(node)
            continue
        changed = True
        for name, value in zip(node.output, values):
            known[name] = value
            from_shapes.add(name)
            nodes.append(helper.make_node("Constant", [], [name], value=numpy_helper.from_array(value, name),
                                          name=f"{node.name or name}_folded"))
    if not changed:
        return model
    folded = onnx.ModelProto()
    folded.CopyFrom(model)
    del folded.graph.node[:]
    folded.graph.node.extend(nodes)
    return folded


def _fold(node, known: dict, from_shapes: set, shapes: dict, opset) -> list[np.ndarray] | None:
    """The values of ``node``'s outputs when it is shape arithmetic that can be evaluated."""
    if node.domain not in ("", "ai.onnx") or node.op_type in NOT_FOLDED or any(a.type in (
            onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in node.attribute):
        return None
    if node.op_type in SHAPE_OPS:
        dims = shapes.get(node.input[0])
        if dims is None:
            return None
        if node.op_type == "Size":
            return [np.array(int(np.prod(dims)), np.int64)]
        attrs = {a.name: a.i for a in node.attribute}
        start, end = attrs.get("start", 0), attrs.get("end", len(dims))
        return [np.array(dims[start:end], np.int64)]
    inputs = [i for i in node.input if i]
    if not inputs or not all(i in known for i in inputs) or not any(i in from_shapes for i in inputs):
        return None
    values = _evaluate(node, known, opset)
    if values is None or any(np.asarray(v).size > MAX_ELEMENTS for v in values):
        return None
    return values


def _evaluate(node, known: dict, opset) -> list[np.ndarray] | None:
    from onnx.reference import ReferenceEvaluator

    try:
        reference = ReferenceEvaluator(node, opsets={"": opset} if opset else None)
        values = reference.run(None, {i: known[i] for i in node.input if i})
    except Exception:  # an op or case the reference lacks: left to TVM's importer  # noqa: BLE001
        return None
    return [np.asarray(v) for v in values]


def _static_shapes(model: onnx.ModelProto, shape_dict: dict) -> dict[str, list[int]]:
    """Value name -> its dims, for the values ONNX shape inference finds fully static."""
    typed = onnx.ModelProto()
    typed.CopyFrom(model)
    for value in typed.graph.input:
        if value.name in shape_dict:
            dims = value.type.tensor_type.shape.dim
            for dim, size in zip(dims, shape_dict[value.name]):
                dim.Clear()
                dim.dim_value = int(size)
    try:
        inferred = onnx.shape_inference.infer_shapes(typed, data_prop=True).graph
    except Exception:  # noqa: BLE001 - without inference, nothing is folded
        return {}
    shapes = {}
    for value in [*inferred.input, *inferred.value_info, *inferred.output]:
        tensor = value.type.tensor_type
        if tensor.HasField("shape") and all(d.HasField("dim_value") for d in tensor.shape.dim):
            shapes[value.name] = [d.dim_value for d in tensor.shape.dim]
    for init in model.graph.initializer:
        shapes[init.name] = list(init.dims)
    return shapes
