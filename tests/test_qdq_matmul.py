"""Quantized fully connected layers (``QDQMatmulToConv``): a QDQ ``Gemm`` / ``MatMul`` with
constant int8 weights becomes a 1x1 integer conv on a 1x1 image, on HVX ``vrmpy`` kernels on
Hexagon; float models keep their matmul."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import tvm
from onnx import TensorProto, helper, numpy_helper

from helpers import onnxruntime_reference, ops_in, require_hexagon_tools, run
from tvm_s2d.onnx_import import import_model
from tvm_s2d.passes.prepare import prepare
from tvm_s2d.passes.quantized.qdq_matmul_to_conv import QDQMatmulToConv
from tvm_s2d.targets import host_target

SY = 0.05


def qdq_dense(n=1, k=50, m=40, op="Gemm", per_channel=True, relu=False, seed=0):
    """float x [n, k] -> quantize -> dequantize -> Gemm (transB, int32 bias) or MatMul (+ Add)
    with int8 weights -> [Relu] -> quantize -> dequantize: a dense layer as ONNX Runtime's
    ``quantize_static`` writes it."""
    rng = np.random.default_rng(seed)
    w = rng.integers(-127, 128, (m, k) if op == "Gemm" else (k, m)).astype(np.int8)
    sw = (rng.random(m) * 0.004 + 0.001).astype(np.float32) if per_channel else np.array(0.003, np.float32)
    zw = np.zeros(m, np.int8) if per_channel else np.array(0, np.int8)
    sx = np.array(0.04, np.float32)
    inits = [numpy_helper.from_array(v, name) for name, v in [
        ("sx", sx), ("zx", np.array(128, np.uint8)), ("w", w), ("sw", sw), ("zw", zw),
        ("b", rng.integers(-2000, 2000, m).astype(np.int32)), ("sb", (sx * sw * np.ones(m)).astype(np.float32)),
        ("zb", np.zeros(m, np.int32)), ("sy", np.array(SY, np.float32)), ("zy", np.array(100, np.uint8))]]
    nodes = [helper.make_node("QuantizeLinear", ["x", "sx", "zx"], ["xq"]),
             helper.make_node("DequantizeLinear", ["xq", "sx", "zx"], ["xf"]),
             helper.make_node("DequantizeLinear", ["w", "sw", "zw"], ["wf"], axis=0 if op == "Gemm" else 1),
             helper.make_node("DequantizeLinear", ["b", "sb", "zb"], ["bf"], axis=0)]
    if op == "Gemm":
        nodes.append(helper.make_node("Gemm", ["xf", "wf", "bf"], ["c"], transB=1, name="fc"))
    else:
        nodes += [helper.make_node("MatMul", ["xf", "wf"], ["mm"], name="fc"), helper.make_node("Add", ["mm", "bf"], ["c"])]
    if relu:
        nodes.append(helper.make_node("Relu", ["c"], ["r"]))
    nodes += [helper.make_node("QuantizeLinear", ["r" if relu else "c", "sy", "zy"], ["yq"]),
              helper.make_node("DequantizeLinear", ["yq", "sy", "zy"], ["y"])]
    graph = helper.make_graph(nodes, "qdq_dense", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [n, k])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [n, m])], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    return model


def _input(n, k, seed=1):
    return (np.random.default_rng(seed).standard_normal((n, k)) * 2).astype(np.float32)


@pytest.mark.parametrize("op,per_channel,relu,n", [("Gemm", True, False, 1), ("Gemm", False, True, 2),
                                                   ("MatMul", True, True, 1), ("MatMul", False, False, 3),
                                                   ("MatMul", True, False, 36)])
def test_a_qdq_dense_layer_becomes_an_integer_conv_and_matches_onnxruntime(op, per_channel, relu, n):
    """The preparation leaves no matmul (the layer is an int32 conv with an integer epilogue);
    compiled for this CPU it matches ONNX Runtime (optimizations off) within one step, on few
    values (the integer epilogue rounds half up where float32 rounds half to even)."""
    model = qdq_dense(n=n, op=op, per_channel=per_channel, relu=relu)
    rule = QDQMatmulToConv()
    mod = prepare(rule(import_model(model)))
    assert [o.applied for o in rule.outcomes] == [True]
    assert not ops_in(mod, "relax.matmul") and len(ops_in(mod, "relax.quantize")) == 1  # the input's
    conv = ops_in(mod)
    assert len(conv) == 1 and str(conv[0].attrs.out_dtype) == "int32"
    x = _input(n, 50)
    got = run(import_model(model), x, pipeline="s2d", target=host_target())
    steps = np.rint(np.abs(got.astype(np.float64) - onnxruntime_reference(model, {"x": x})) / SY)
    assert steps.max() <= 1 and (steps > 0).mean() <= 0.02


def test_many_rows_are_the_pixels_of_an_nhwc_image():
    """Regression: ConvNeXt's pointwise layers ([H x W, K] rows) were a batch of N 1x1 images, each
    CPU register tile one pixel and, for 36 rows in one row, one thread (ConvNeXt-T int8 at 96:
    17.6 -> 11.8 ms as images). One row stays a 1x1 NCHW image."""
    from tvm_s2d.geometry.layout import rows_as_image

    assert [rows_as_image(r) for r in (1, 9, 36, 49, 576)] == [(1, 1), (3, 3), (4, 9), (7, 7), (9, 64)]
    for n, shape, layout in ((36, (1, 4, 9, 50), "NHWC"), (1, (1, 50, 1, 1), "NCHW")):
        rule = QDQMatmulToConv()
        (conv,) = ops_in(prepare(rule(import_model(qdq_dense(n=n, op="MatMul")))))
        assert tuple(int(d) for d in conv.args[0].ty.shape) == shape and str(conv.attrs.data_layout) == layout


def test_float_and_activation_matmuls_are_left_alone():
    """A float Gemm (no dequantize) is none of the rule's business: the module is unchanged."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((40, 50)).astype(np.float32), "w"),
             numpy_helper.from_array(rng.standard_normal(40).astype(np.float32), "b")]
    graph = helper.make_graph([helper.make_node("Gemm", ["x", "w", "b"], ["y"], transB=1)], "dense",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 50])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 40])], initializer=inits)
    mod = import_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    rule = QDQMatmulToConv()
    tvm.ir.assert_structural_equal(rule(mod), mod)
    assert rule.outcomes == []


def test_a_quantized_dense_layer_with_weights_per_input_row_is_refused():
    """Scales along the input dimension have no per-output-channel conv equivalent."""
    model = qdq_dense(op="MatMul", per_channel=True)
    for node in model.graph.node:
        if node.output[0] == "wf":
            node.attribute[0].i = 0  # axis 0 of [K, M]: per input row
    for init in model.graph.initializer:
        if init.name in ("sw", "zw"):
            arr = numpy_helper.to_array(init)
            init.CopyFrom(numpy_helper.from_array(np.resize(arr, 50).astype(arr.dtype), init.name))
    rule = QDQMatmulToConv()
    rule(import_model(model))
    assert [(o.applied, o.reason) for o in rule.outcomes] == [
        (False, "its weight scales are neither per tensor nor per output column")]


@pytest.mark.parametrize("op,n", [("Gemm", 1), ("MatMul", 2)])
def test_a_qdq_dense_layer_runs_on_hvx_bit_exact(op, n):
    """On Hexagon the layer is an HVX vrmpy conv (lanes mapping) and its requantization an HVX
    kernel: the model under qemu equals its CPU build (the kernels' plain loops) bit for bit,
    and ONNX Runtime within one step."""
    require_hexagon_tools()
    from tvm_s2d.emulator.model import run_model

    model = qdq_dense(n=n, k=70, m=300, op=op, relu=True)
    run_ = run_model(model, inputs={"x": _input(n, 70)})
    convs = [k for k in run_.kernels if k.kind == "conv"]
    assert convs and all(k.hvx for k in convs)
    assert not [k.name for k in run_.kernels if "matmul" in k.name]
    assert run_.matches_cpu, run_.first_difference
    assert run_.onnxruntime["max_steps"] <= 1 and run_.onnxruntime["fraction_differing"] <= 0.02
