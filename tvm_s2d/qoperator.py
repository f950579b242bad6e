"""QOperator ONNX models (``QLinearConv``, ``QLinearAdd``, ``ConvInteger``, ...) in QDQ form.

ONNX Runtime's quantizer with ``QuantFormat.QOperator``, and older int8 model zoos, write
quantized ops that TVM's importer lacks. Each is, by its definition, its float op between
``DequantizeLinear`` of its quantized inputs and ``QuantizeLinear`` of its output: ``to_qdq``
writes it so, before the import, and the ``"s2d"`` pipeline's ``QDQConvToInteger`` then makes
the convs exact integer convs again. ``ConvInteger`` and ``MatMulInteger`` (int32 results)
become the same op on int32 operands with their zero points subtracted: exact.

The rules are a table: op type -> float op and which inputs are (tensor, scale, zero point)
triples. A node whose quantized op is not in the table is left as it is (TVM's importer then
names it).
"""

from __future__ import annotations

from dataclasses import dataclass

import onnx
from onnx import TensorProto, helper


@dataclass(frozen=True)
class QRule:
    float_op: str
    triples: tuple[int, ...]  # input positions where a (tensor, scale, zero point) triple starts
    output: int | None  # input position of the output's (scale, zero point)
    extra: tuple[int, ...] = ()  # other inputs passed to the float op, in order (QLinearConv's bias)
    weight_axis: dict | None = None  # DequantizeLinear axis per triple position (per-channel scales)


RULES = {
    "QLinearConv": QRule("Conv", (0, 3), 6, extra=(8,), weight_axis={3: 0}),
    "QLinearMatMul": QRule("MatMul", (0, 3), 6, weight_axis={3: -1}),
    "QLinearAdd": QRule("Add", (0, 3), 6),
    "QLinearMul": QRule("Mul", (0, 3), 6),
    "QLinearLeakyRelu": QRule("LeakyRelu", (0,), 3),
    "QLinearSigmoid": QRule("Sigmoid", (0,), 3),
    "QLinearAveragePool": QRule("AveragePool", (0,), 3),
    "QLinearGlobalAveragePool": QRule("GlobalAveragePool", (0,), 3),
}
INTEGER_RULES = {"ConvInteger": "Conv", "MatMulInteger": "MatMul"}
#: Attributes of the QOperator ops that their float ops do not have.
DROPPED_ATTRIBUTES = {"channels_last"}


def has_qoperators(model: onnx.ModelProto) -> bool:
    return any(n.op_type in RULES or n.op_type in INTEGER_RULES or n.op_type == "QLinearConcat"
               for n in model.graph.node)


def to_qdq(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of ``model`` with every QOperator node in the table written in QDQ form."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    nodes = []
    for index, node in enumerate(model.graph.node):
        if node.op_type in RULES or node.op_type == "QLinearConcat":
            nodes += _qdq_nodes(node, index)
        elif node.op_type in INTEGER_RULES:
            nodes += _integer_nodes(node, index)
        else:
            nodes.append(node)
    del out.graph.node[:]
    out.graph.node.extend(nodes)
    return out


def _attributes(node) -> dict:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute if a.name not in DROPPED_ATTRIBUTES}


def _qdq_nodes(node, index) -> list[onnx.NodeProto]:
    if node.op_type == "QLinearConcat":  # Y_scale, Y_zero_point, then (X, scale, zero point) triples
        rule = QRule("Concat", tuple(range(2, len(node.input), 3)), 0)
    else:
        rule = RULES[node.op_type]
    prefix = f"{node.name or node.output[0]}_qdq{index}"
    nodes, floats = [], []
    for position in rule.triples:
        x, scale, zero = (list(node.input[position:position + 3]) + ["", ""])[:3]
        dequantized = f"{prefix}_in{position}"
        axis = (rule.weight_axis or {}).get(position)
        nodes.append(helper.make_node("DequantizeLinear", [x, scale, zero] if zero else [x, scale], [dequantized],
                                      **({} if axis is None else {"axis": axis})))
        floats.append(dequantized)
    for position in rule.extra:  # QLinearConv's int32 bias, in units of x_scale * w_scale
        if position < len(node.input) and node.input[position]:
            bias_scale, bias = f"{prefix}_bias_scale", f"{prefix}_bias"
            nodes += [helper.make_node("Mul", [node.input[1], node.input[4]], [bias_scale]),
                      helper.make_node("DequantizeLinear", [node.input[position], bias_scale], [bias], axis=0)]
            floats.append(bias)
    result = f"{prefix}_out"
    nodes.append(helper.make_node(rule.float_op, floats, [result], name=node.name, **_attributes(node)))
    scale, zero = node.input[rule.output], node.input[rule.output + 1] if rule.output + 1 < len(node.input) else ""
    nodes.append(helper.make_node("QuantizeLinear", [result, scale, zero] if zero else [result, scale], [node.output[0]]))
    return nodes


def _integer_nodes(node, index) -> list[onnx.NodeProto]:
    """``ConvInteger(x, w, zx, zw)`` -> ``Conv(int32(x) - zx, int32(w) - zw)``, exact in int32."""
    prefix = f"{node.name or node.output[0]}_int{index}"
    nodes, operands = [], []
    for i in (0, 1):
        value = f"{prefix}_in{i}"
        nodes.append(helper.make_node("Cast", [node.input[i]], [value], to=TensorProto.INT32))
        zero = node.input[i + 2] if i + 2 < len(node.input) else ""
        if zero:
            zero32 = f"{prefix}_zero{i}"
            nodes.append(helper.make_node("Cast", [zero], [zero32], to=TensorProto.INT32))
            if i == 1 and node.op_type == "ConvInteger":  # a per-output-channel zero point: [O] -> [O, 1, 1, 1]
                shape = f"{prefix}_zero_shape"
                nodes.append(helper.make_node("Constant", [], [shape],
                                              value=helper.make_tensor(shape, TensorProto.INT64, [4], [-1, 1, 1, 1])))
                nodes.append(helper.make_node("Reshape", [zero32, shape], [zero32 + "_o"]))
                zero32 += "_o"
            centred = f"{prefix}_centred{i}"
            nodes.append(helper.make_node("Sub", [value, zero32], [centred]))
            value = centred
        operands.append(value)
    nodes.append(helper.make_node(INTEGER_RULES[node.op_type], operands, [node.output[0]], name=node.name,
                                  **_attributes(node)))
    return nodes
