"""A quantized softmax with its exponentials as a table of byte differences (``IntegerSoftmax``):
the rewrite's form, the refusal, the result against the float graph and ONNX Runtime, and the
lookup on Hexagon against the CPU build (the float graph's ``exp`` ran as scalar libm code)."""

import numpy as np
import onnx
import pytest
import tvm
from onnx import TensorProto, helper, numpy_helper
from tvm import relax

from helpers import require_hexagon_tools, run
from tvm_s2d.passes.quantized.integer import IntegerSoftmax
from tvm_s2d.passes.quantized.integer_softmax import exp_table

RNG = np.random.default_rng(0)


def _softmax_module(shape, dtype="uint8", zero=7, scale=0.05, axis=-1):
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType(shape, dtype))
    with bb.function("main", [x]):
        with bb.dataflow():
            f = bb.emit(relax.op.dequantize(x, relax.const(np.float32(scale)), relax.const(np.array(zero, dtype))))
            s = bb.emit(relax.op.nn.softmax(f, axis=axis))
            out = bb.emit_output(bb.emit(relax.op.quantize(s, relax.const(np.float32(1 / 256)), relax.const(np.uint8(0)),
                                                           out_dtype="uint8")))
        bb.emit_func_output(out)
    return bb.get()


def test_a_quantized_softmax_looks_its_exponentials_up():
    mod = _softmax_module((2, 10))
    rule = IntegerSoftmax()
    rewritten = rule(mod)
    assert [o.applied for o in rule.outcomes] == [True]

    bb = relax.BlockBuilder()  # Expected
    x = relax.Var("x", relax.TensorType((2, 10), "uint8"))
    with bb.function("main", [x]):
        with bb.dataflow():
            wide = bb.emit(relax.op.astype(x, "int32"))
            top = bb.emit(relax.op.max(wide, axis=-1, keepdims=True))
            e = bb.emit(relax.op.take(relax.const(exp_table(0.05, "uint8")), relax.op.subtract(top, wide), axis=0,
                                      mode="clip"))
            total = bb.emit(relax.op.sum(e, axis=-1, keepdims=True))
            inverse = bb.emit(relax.op.divide(relax.const(np.float32(1)),
                                              relax.op.multiply(total, relax.const(np.float32(1 / 256)))))
            steps = bb.emit(relax.op.astype(relax.op.add(relax.op.multiply(e, inverse), relax.const(np.float32(0.5))),
                                            "int32"))
            out = bb.emit_output(bb.emit(relax.op.astype(relax.op.clip(relax.op.add(steps, relax.const(0, "int32")), 0,
                                                                       255), "uint8")))
        bb.emit_func_output(out)
    tvm.ir.assert_structural_equal(rewritten, bb.get())
    assert "exp" not in rewritten["main"].script()


def test_the_table_holds_every_difference_rounded_once():
    table = exp_table(0.1, "int8")
    assert table.dtype == np.float32 and table.shape == (256,) and table[0] == 1.0
    np.testing.assert_array_equal(table, np.exp(-np.float64(np.float32(0.1)) * np.arange(256)).astype(np.float32))


@pytest.mark.parametrize("shape,axis,dtype,zero", [((3, 1000), -1, "uint8", 7), ((2, 37), 1, "int8", -3),
                                                   ((1, 12, 5, 7), 1, "uint8", 128), ((2, 3, 4, 9), -1, "int8", 0)])
def test_the_lookup_matches_the_float_softmax_within_a_step(shape, axis, dtype, zero):
    """Against the unrewritten graph on TVM's CPU build: the float graph rounds ``x - max`` before
    its ``exp`` and sums in its own order; a step only where that moves a value across a rounding
    boundary."""
    mod = _softmax_module(shape, dtype, zero, scale=0.09, axis=axis)
    rule = IntegerSoftmax()
    rewritten = rule(mod)
    assert [o.applied for o in rule.outcomes] == [True]
    info = np.iinfo(dtype)
    x = RNG.integers(info.min, info.max + 1, shape).astype(dtype)
    got, expected = run(rewritten, x).astype(int), run(mod, x).astype(int)
    steps = np.abs(got - expected)
    assert steps.max() <= 1 and (steps > 0).mean() <= 0.01, (steps.max(), (steps > 0).mean())
    # and against softmax in float64 of the dequantized input: every value within a step
    f = (x.astype(np.float64) - zero) * np.float32(0.09)
    e = np.exp(f - f.max(axis=axis, keepdims=True))
    exact = np.clip(np.rint(e / e.sum(axis=axis, keepdims=True) * 256), 0, 255)
    assert np.abs(got - exact).max() <= 1


def test_a_softmax_of_a_per_channel_dequantization_is_left_with_the_reason():
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((1, 4, 3, 3), "uint8"))
    with bb.function("main", [x]):
        with bb.dataflow():
            f = bb.emit(relax.op.dequantize(x, relax.const(np.float32([0.1, 0.2, 0.3, 0.4])),
                                            relax.const(np.zeros(4, "uint8")), axis=1))
            s = bb.emit(relax.op.nn.softmax(f, axis=1))
            out = bb.emit_output(bb.emit(relax.op.quantize(s, relax.const(np.float32(1 / 256)), relax.const(np.uint8(0)),
                                                           out_dtype="uint8")))
        bb.emit_func_output(out)
    mod = bb.get()
    rule = IntegerSoftmax()
    tvm.ir.assert_structural_equal(rule(mod), mod)
    (outcome,) = rule.outcomes
    assert not outcome.applied and "per-tensor" in outcome.reason


def _classifier():
    """Conv -> global pool -> flatten -> Gemm -> Softmax: a classifier's tail as ONNX models end."""
    inits = [numpy_helper.from_array(RNG.standard_normal((16, 3, 3, 3)).astype(np.float32) * 0.4, "w0"),
             numpy_helper.from_array(RNG.standard_normal((100, 16)).astype(np.float32) * 0.5, "w1"),
             numpy_helper.from_array(RNG.standard_normal(100).astype(np.float32) * 0.3, "b1")]
    nodes = [helper.make_node("Conv", ["x", "w0"], ["c0"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["c0"], ["r"]),
             helper.make_node("GlobalAveragePool", ["r"], ["g"]), helper.make_node("Flatten", ["g"], ["f"]),
             helper.make_node("Gemm", ["f", "w1", "b1"], ["l"], transB=1),
             helper.make_node("Softmax", ["l"], ["y"], axis=-1)]
    graph = helper.make_graph(nodes, "cls", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 12, 10])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 100])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_a_quantized_classifier_matches_onnxruntime(tmp_path):
    import tvm_s2d
    from tvm_s2d.checks import compare_with_onnxruntime
    from tvm_s2d.pipeline import S2DPipeline
    from tvm_s2d.quantize import quantize_qdq

    model = onnx.load(quantize_qdq(_classifier(), tmp_path / "q.onnx"))
    mod = tvm_s2d.from_onnx(model)
    pipeline = S2DPipeline()
    with tvm_s2d.targets.host_target(), tvm.transform.PassContext(opt_level=3):
        pipeline.run(mod, until="prepare")
    assert any(o.applied and "softmax" in o.reason for o in pipeline.outcomes()["IntegerArithmetic"])
    for seed in range(3):
        x = np.random.default_rng(seed).standard_normal((1, 3, 12, 10)).astype(np.float32)
        found = compare_with_onnxruntime(model, {"x": x}, run(mod, x, pipeline="s2d", target=tvm_s2d.targets.host_target()))
        assert found["max_steps"] <= 1 and found["fraction_differing"] <= 0.02, found


def test_a_quantized_softmax_runs_bit_exact_on_hexagon_without_exp(tmp_path):
    require_hexagon_tools()
    from tvm_s2d.emulator.model import run_model
    from tvm_s2d.quantize import quantize_qdq

    result = run_model(quantize_qdq(_classifier(), tmp_path / "q.onnx"))
    assert result.matches_cpu and result.onnxruntime["max_steps"] <= 1
    assert not any("exp" in k.name for k in result.kernels)
    scalar = sum(k.packets for k in result.kernels if not k.hvx and k.kind != "boundary")
    assert scalar < 3000, [(k.name, k.packets) for k in result.kernels]  # with exp: ~50k (100 classes)
