"""int8/uint8 QDQ models: integer convs, bit-exact with and without the rewrite and against ONNX
Runtime with graph optimizations off; QOperator models (QLinearConv, ConvInteger, ...: TVM's
importer lacks them) imported in QDQ form, bit-exact too."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import tvm
from onnx import TensorProto, helper, numpy_helper
from tvm import relax

import tvm_s2d
from helpers import conv_module, onnx_semantics, onnxruntime_reference, ops_in, qdq_chain, quantize_float_net, run
from tvm_s2d.passes import QDQConvToInteger


#: The integer epilogue's pass: disabled, a QDQ conv keeps its float epilogue (the ONNX semantics).
FLOAT = "IntegerRequantize"



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
    reference = onnxruntime_reference(model, {"x": x})
    # with the float epilogue the integer convs compute the ONNX semantics exactly, rewritten or not
    float_epilogue = run(mod, x, pipeline=pipeline, disabled=[FLOAT])
    np.testing.assert_array_equal(float_epilogue, reference)
    np.testing.assert_array_equal(float_epilogue, run(mod, x, pipeline=pipeline, disabled=[FLOAT, "SpaceToDepthConv2d"]))
    # the integer epilogue: one step at most per layer, on a few values
    steps = np.abs(with_rewrite.astype(int) - reference.astype(int))
    assert steps.max() <= len(strides) and (steps > 0).mean() < 0.05


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
            wf = relax.op.dequantize(relax.const(np.ones((8, 8, 3, 3), np.int8)), relax.const(np.float32(0.1)),
                                     relax.const(np.int8(0)), axis=0)
            y = bb.emit(relax.op.nn.conv2d(xf, bb.emit(wf), padding=1))
            out = bb.emit_output(y)
        bb.emit_func_output(out)
    before = bb.get()
    assert len(ops_in(QDQConvToInteger()(before), "relax.dequantize")) == 2


def test_run_helper_is_the_default_pipeline():
    """The QDQ comparison above runs the s2d pipeline both ways; the default pipeline (float
    QDQ) agrees with ONNX Runtime on the same model, so the integer form changes no result."""
    model = qdq_chain(strides=(1,))
    x = np.random.default_rng(2).integers(0, 256, (1, 8, 23, 21)).astype(np.uint8)
    np.testing.assert_array_equal(run(tvm_s2d.from_onnx(model), x), onnxruntime_reference(model, {"x": x}))


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_a_float_bias_folds_within_one_step_of_the_onnx_semantics(seed):
    """PyTorch-exported QDQ convs keep their bias in float (``b`` here is not a multiple of
    ``x_scale * w_scale``). Folded into the integer requantization, the bias moves each value
    by at most ``BIAS_TOLERANCE`` of a step before the rounding, so one requantization differs
    from the ONNX semantics (ORT, optimizations off) by at most one step, on few values. In a
    chain, a step in one layer's output moves the next layer's input: the bound is per
    requantization, on the same inputs."""
    from tvm_s2d.passes.quantized.integer_requantize import BIAS_TOLERANCE

    model = qdq_chain(strides=(1,), seed=seed)
    bias = numpy_helper.to_array(next(i for i in model.graph.initializer if i.name == "b0"))
    grid = 0.05 * numpy_helper.to_array(next(i for i in model.graph.initializer if i.name == "ws0"))
    assert np.abs(bias / grid - np.rint(bias / grid)).max() > 0.1  # a float bias, off the accumulator's grid
    assert BIAS_TOLERANCE <= 0.01
    x = np.random.default_rng(seed).integers(0, 256, (1, 8, 23, 21)).astype(np.uint8)
    from tvm_s2d.pipeline import S2DPipeline

    pipeline = S2DPipeline()
    got = run(tvm_s2d.from_onnx(model), x, pipeline=pipeline.as_pass())
    (epilogue,) = [o for o in pipeline.outcomes()["IntegerArithmetic"] if "requantization" in o.reason]
    assert epilogue.applied  # folded, not left in float
    steps = np.abs(got.astype(int) - onnxruntime_reference(model, {"x": x}).astype(int))
    assert steps.max() <= 1 and (steps > 0).mean() < 0.02


def test_onnxruntime_default_session_rounds_differently_from_the_onnx_semantics():
    """Why the tests compare with ORT's unoptimized session: its default session fuses QDQ
    into integer kernels that round their own way (this records the size of the gap)."""
    model = qdq_chain()
    x = np.random.default_rng(1).integers(0, 256, (1, 8, 23, 21)).astype(np.uint8)
    fused = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    diff = np.abs(fused.astype(int) - onnxruntime_reference(model, {"x": x}).astype(int))
    assert diff.max() <= 32  # steps of the output quantization


# ---- QOperator models -----------------------------------------------------------------------


@pytest.mark.parametrize("per_channel", [True, False])
def test_qoperator_model_from_onnxruntimes_quantizer_compiles_and_matches(tmp_path, per_channel):
    path = quantize_float_net(tmp_path, "QOperator", per_channel)
    model = onnx.load(path)
    assert {"QLinearConv", "QLinearAdd", "QLinearMul"} <= {n.op_type for n in model.graph.node}
    mod = tvm_s2d.from_onnx(path)
    report = tvm_s2d.explain(mod, block=2)
    assert [r["name"] for r in report.rows] == [n.name for n in model.graph.node if n.op_type == "QLinearConv"]
    assert len(report.rewritten) == 4
    assert len(ops_in(QDQConvToInteger()(mod), "relax.dequantize")) < len(ops_in(mod, "relax.dequantize"))
    x = np.random.default_rng(5).standard_normal((1, 3, 24, 20)).astype(np.float32)
    pipeline = relax.get_pipeline("s2d", block=2)
    rewritten = run(mod, x, pipeline=pipeline, disabled=[FLOAT])  # the float epilogue: the ONNX semantics
    np.testing.assert_array_equal(rewritten, run(mod, x, pipeline=pipeline, disabled=[FLOAT, "SpaceToDepthConv2d"]))
    np.testing.assert_array_equal(rewritten, onnxruntime_reference(model, {"x": x}))
    # the same network in QDQ form computes the same numbers
    qdq = quantize_float_net(tmp_path, "QDQ", per_channel)
    np.testing.assert_array_equal(rewritten, run(tvm_s2d.from_onnx(qdq), x, pipeline=pipeline, disabled=[FLOAT]))
    integer = run(mod, x, pipeline=pipeline)
    np.testing.assert_array_equal(integer, run(tvm_s2d.from_onnx(qdq), x, pipeline=pipeline))


def _integer_model(op, inputs, inits, out_type, x_shape, out_shape, x_type=TensorProto.UINT8, **attrs):
    graph = helper.make_graph([helper.make_node(op, inputs, ["y"], name="q", **attrs)], "q",
                              [helper.make_tensor_value_info("x", x_type, x_shape)],
                              [helper.make_tensor_value_info("y", out_type, out_shape)],
                              initializer=[numpy_helper.from_array(v, n) for n, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    return model


def test_qlinearconv_per_channel_with_bias_is_bit_exact():
    rng = np.random.default_rng(0)
    inits = {"sx": np.array(0.02, np.float32), "zx": np.array(7, np.uint8),
             "w": rng.integers(-127, 128, (6, 5, 3, 3)).astype(np.int8), "sw": (rng.random(6) * 0.01 + 0.002).astype(np.float32),
             "zw": np.zeros(6, np.int8), "sy": np.array(0.05, np.float32), "zy": np.array(120, np.uint8),
             "b": rng.integers(-2000, 2000, 6).astype(np.int32)}
    model = _integer_model("QLinearConv", ["x", "sx", "zx", "w", "sw", "zw", "sy", "zy", "b"], inits, TensorProto.UINT8,
                           [1, 5, 17, 15], [1, 6, 9, 8], pads=[1] * 4, strides=[2, 2])
    x = rng.integers(0, 256, (1, 5, 17, 15)).astype(np.uint8)
    mod = tvm_s2d.from_onnx(model)
    got = run(mod, x, pipeline=relax.get_pipeline("s2d", block=2), disabled=[FLOAT])
    assert tvm_s2d.explain(mod, block=2).rows[0]["status"] == "rewritten"
    np.testing.assert_array_equal(got, onnx_semantics(model, {"x": x}))


@pytest.mark.parametrize("op", ["ConvInteger", "MatMulInteger", "QLinearMatMul"])
def test_integer_ops_are_bit_exact(op):
    rng = np.random.default_rng(1)
    if op == "ConvInteger":  # large accumulators: exact in int32, not in float32
        inits = {"w": rng.integers(0, 256, (4, 64, 3, 3)).astype(np.uint8), "zx": np.array(3, np.uint8),
                 "zw": np.array(250, np.uint8)}
        model = _integer_model(op, ["x", "w", "zx", "zw"], inits, TensorProto.INT32, [1, 64, 9, 9], [1, 4, 9, 9], pads=[1] * 4)
        x = rng.integers(0, 256, (1, 64, 9, 9)).astype(np.uint8)
    elif op == "MatMulInteger":
        inits = {"b": rng.integers(-128, 128, (600, 5)).astype(np.int8), "za": np.array(250, np.uint8),
                 "zb": np.array([1, -2, 3, 0, 5], np.int8)}
        model = _integer_model(op, ["x", "b", "za", "zb"], inits, TensorProto.INT32, [3, 600], [3, 5])
        x = rng.integers(0, 256, (3, 600)).astype(np.uint8)
    else:
        inits = {"sa": np.array(0.03, np.float32), "za": np.array(128, np.uint8), "b": rng.integers(-128, 128, (40, 6)).astype(np.int8),
                 "sb": np.array(0.01, np.float32), "zb": np.array(0, np.int8), "sy": np.array(0.2, np.float32),
                 "zy": np.array(100, np.uint8)}
        model = _integer_model(op, ["x", "sa", "za", "b", "sb", "zb", "sy", "zy"], inits, TensorProto.UINT8, [3, 40], [3, 6])
        x = rng.integers(0, 256, (3, 40)).astype(np.uint8)
    np.testing.assert_array_equal(run(tvm_s2d.from_onnx(model), x, pipeline="s2d"), onnx_semantics(model, {"x": x}))
