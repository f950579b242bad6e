"""int8/uint8 QDQ models: integer convs, bit-exact with and without the rewrite, equal to ONNX
Runtime; QLinearConv (which TVM's importer lacks) gives a clear error."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import tvm
from onnx import TensorProto, helper, numpy_helper
from tvm import relax

import tvm_s2d
from helpers import conv_module, ops_in, run
from tvm_s2d.passes import QDQConvToInteger


def qdq_chain(batch=1, hw=(23, 21), weight_type="int8", strides=(1, 2, 1), seed=0):
    """uint8 activations with zero points; int8 per-channel or uint8 per-tensor weights."""
    rng = np.random.default_rng(seed)
    inits, nodes = [], []

    def const(name, value):
        inits.append(numpy_helper.from_array(value, name))
        return name

    const("s_in", np.array(0.05, np.float32))
    const("z_in", np.array(3, np.uint8))
    src, scale, zero, size = "x", "s_in", "z_in", list(hw)
    for i, stride in enumerate(strides):
        if weight_type == "int8":
            const(f"w{i}", rng.integers(-100, 100, (8, 8, 3, 3)).astype(np.int8))
            const(f"ws{i}", (rng.random(8) * 0.01 + 0.001).astype(np.float32))
            const(f"wz{i}", np.zeros(8, np.int8))
        else:
            const(f"w{i}", rng.integers(0, 256, (8, 8, 3, 3)).astype(np.uint8))
            const(f"ws{i}", np.array(0.004, np.float32))
            const(f"wz{i}", np.array(120, np.uint8))
        const(f"b{i}", rng.standard_normal(8).astype(np.float32))
        const(f"s{i}", np.array(0.08 + 0.04 * i, np.float32))
        const(f"z{i}", np.array(100 + 10 * i, np.uint8))
        nodes += [
            helper.make_node("DequantizeLinear", [src, scale, zero], [f"xf{i}"]),
            helper.make_node("DequantizeLinear", [f"w{i}", f"ws{i}", f"wz{i}"], [f"wf{i}"], axis=0),
            helper.make_node("Conv", [f"xf{i}", f"wf{i}", f"b{i}"], [f"y{i}"], pads=[1] * 4, strides=[stride] * 2, name=f"conv{i}"),
            helper.make_node("Relu", [f"y{i}"], [f"r{i}"]),
            helper.make_node("QuantizeLinear", [f"r{i}", f"s{i}", f"z{i}"], [f"q{i}"]),
        ]
        src, scale, zero = f"q{i}", f"s{i}", f"z{i}"
        size = [(d - 1) // stride + 1 for d in size]
    graph = helper.make_graph(
        nodes, "qdq", [helper.make_tensor_value_info("x", TensorProto.UINT8, [batch, 8, *hw])],
        [helper.make_tensor_value_info(src, TensorProto.UINT8, [batch, 8, *size])], initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    return model


@pytest.mark.parametrize("weight_type", ["int8", "uint8"])
@pytest.mark.parametrize("batch,hw,strides", [(1, (23, 21), (1, 1, 1)), (2, (24, 30), (1, 2, 1))])
def test_qdq_chain_is_bit_exact_with_and_without_the_rewrite(weight_type, batch, hw, strides):
    model = qdq_chain(batch, hw, weight_type, strides)
    mod = tvm_s2d.from_onnx(model)
    options = dict(block=2, move_cost=1000.0)
    report = tvm_s2d.explain(mod, **options)
    assert [r["name"] for r in report.rows] == ["conv0", "conv1", "conv2"]
    assert [r["status"] for r in report.rows] == ["rewritten"] * 3
    assert report.rows[1]["input"] == "S2D domain"
    x = np.random.default_rng(1).integers(0, 256, (batch, 8, *hw)).astype(np.uint8)
    pipeline = relax.get_pipeline("s2d", **options)
    without = run(mod, x, pipeline=pipeline, disabled=["SpaceToDepthConv2d"])
    with_rewrite = run(mod, x, pipeline=pipeline)
    np.testing.assert_array_equal(with_rewrite, without)  # bit-exact
    reference = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    # ORT fuses QDQ into its own integer kernels and rounds its own way: at most one unit in
    # the last place per layer, on a small fraction of values
    diff = np.abs(with_rewrite.astype(int) - reference.astype(int))
    assert diff.max() <= len(strides) and (diff > 0).mean() < 0.02


def test_qdq_conv_becomes_an_integer_conv():
    mod = relax.transform.FoldConstant()(QDQConvToInteger()(tvm_s2d.from_onnx(qdq_chain(strides=(1,)))))
    (conv,) = ops_in(mod)
    assert str(conv.args[0].ty.dtype) == "int32" and str(conv.ty.dtype) == "int32"
    assert str(conv.args[1].ty.dtype) == "int32" and len(ops_in(mod, "relax.dequantize")) == 0


def test_float_convs_and_other_schemes_are_left_alone():
    mod = conv_module((1, 8, 8, 8), np.ones((8, 8, 3, 3), np.float32), padding=1)
    tvm.ir.assert_structural_equal(QDQConvToInteger()(mod), mod)
    bb = relax.BlockBuilder()  # per-channel activation scales: not a per-tensor scheme
    x = relax.Var("x", relax.TensorType((1, 8, 8, 8), "uint8"))
    with bb.function("main", [x]):
        with bb.dataflow():
            xf = bb.emit(relax.op.dequantize(x, relax.const(np.full(8, 0.1, np.float32)), relax.const(np.zeros(8, np.uint8)), axis=1))
            wf = relax.op.dequantize(relax.const(np.ones((8, 8, 3, 3), np.int8)), relax.const(np.float32(0.1)), relax.const(np.int8(0)), axis=0)
            y = bb.emit(relax.op.nn.conv2d(xf, bb.emit(wf), padding=1))
            out = bb.emit_output(y)
        bb.emit_func_output(out)
    before = bb.get()
    assert len(ops_in(QDQConvToInteger()(before), "relax.dequantize")) == 2


def test_qlinearconv_is_reported_as_not_importable():
    names = ["x", "sx", "zx", "w", "sw", "zw", "sy", "zy"]
    inits = [numpy_helper.from_array(v, n) for n, v in zip(names[1:], [
        np.array(0.1, np.float32), np.array(0, np.uint8), np.ones((4, 4, 3, 3), np.int8),
        np.array(0.1, np.float32), np.array(0, np.int8), np.array(0.1, np.float32), np.array(0, np.uint8)])]
    graph = helper.make_graph([helper.make_node("QLinearConv", names, ["y"], pads=[1] * 4)], "q",
                              [helper.make_tensor_value_info("x", TensorProto.UINT8, [1, 4, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.UINT8, [1, 4, 8, 8])], initializer=inits)
    with pytest.raises(tvm_s2d.ModelError, match="QLinearConv"):
        tvm_s2d.from_onnx(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))


def test_run_helper_is_the_default_pipeline():
    """The QDQ comparison above runs the s2d pipeline both ways; the default pipeline (float
    QDQ) agrees with ONNX Runtime on the same model, so the integer form changes no result."""
    model = qdq_chain(strides=(1,))
    x = np.random.default_rng(2).integers(0, 256, (1, 8, 23, 21)).astype(np.uint8)
    reference = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    assert np.abs(run(tvm_s2d.from_onnx(model), x).astype(int) - reference.astype(int)).max() <= 1
