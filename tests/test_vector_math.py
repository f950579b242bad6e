"""``VectorMath``: sigmoid, erf and tanh of float32 as polynomials in CPU kernels (EfficientNet's
SiLU, ConvNeXt's GELU spent most of their kernels' time in a libm call per vector lane)."""

import math

import numpy as np
import pytest
import tvm
from tvm import relax

import tvm_s2d  # noqa: F401  (registers the pipeline)
from tvm_s2d.passes import VectorMath
from tvm_s2d.passes.cpu.vector_math import MAX_ULPS
from tvm_s2d.targets import hexagon_target, host_target

OPS = {"sigmoid": (relax.op.sigmoid, lambda x: 1 / (1 + np.exp(-x))),
       "erf": (relax.op.erf, np.vectorize(math.erf)),
       "tanh": (relax.op.tanh, np.tanh),
       "exp": (relax.op.exp, np.exp)}


def _module(n, ops):
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((n,), "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            out = bb.emit_output(relax.Tuple([bb.emit(OPS[op][0](x)) for op in ops]))
        bb.emit_func_output(out)
    return bb.get()


def _run(mod, x, disabled=()):
    with tvm.transform.PassContext(opt_level=3, disabled_pass=list(disabled)):
        ex = tvm.compile(mod, target=host_target(), relax_pipeline="s2d")
    return [o.numpy() for o in relax.VirtualMachine(ex, tvm.cpu())["main"](tvm.runtime.tensor(x))]


def test_each_function_is_within_a_few_ulps_of_the_exact_value():
    """Every 97th float32 step of 2^-17 in [-100, 100]: each result within MAX_ULPS of float64's
    wherever that is a normal float32; exp keeps libm's call (bit-identical to the pass off)."""
    x = np.arange(-100, 100, 97 * 2.0**-17).astype(np.float32)
    ops = list(OPS)
    fast, libm = _run(_module(x.size, ops), x), _run(_module(x.size, ops), x, ["VectorMath"])
    for op, got, plain in zip(ops, fast, libm):
        exact = OPS[op][1](x.astype(np.float64))
        normal = np.isfinite(exact) & (np.abs(exact) >= np.finfo(np.float32).tiny) & (np.abs(exact) < 3e38)
        ulps = np.abs(got[normal] - exact[normal]) / np.spacing(np.abs(exact[normal]).astype(np.float32))
        assert ulps.max() <= MAX_ULPS, op
        assert np.all(np.isfinite(got[normal])), op
        if op == "exp":
            np.testing.assert_array_equal(got, plain)


def test_the_calls_are_replaced_in_cpu_kernels_only():
    mod = _module(64, ["sigmoid", "erf", "tanh", "exp"])
    lowered = tvm.transform.Sequential([relax.transform.LegalizeOps()])(mod)
    pass_ = VectorMath(target=host_target())
    after = pass_(lowered)
    text = after.script()
    assert "T.sigmoid" not in text and "T.erf" not in text and "T.tanh" not in text and "T.exp" in text
    assert sorted(o.reason.split(" ")[0] for o in pass_.outcomes) == ["erf", "sigmoid", "tanh"]
    assert all(o.applied for o in pass_.outcomes)
    untouched = VectorMath(target=hexagon_target())
    assert untouched(lowered).script() == lowered.script() and untouched.outcomes == []


@pytest.mark.parametrize("epilogue", ["silu", "gelu"])
def test_conv_epilogues_match_onnxruntime(epilogue):
    """A conv + SiLU (EfficientNet) and a channels-last dense layer + GELU (ConvNeXt's pointwise
    layers, taken by CpuDense as 1x1 convs) through the pipeline, against ONNX Runtime."""
    from onnx import TensorProto, helper, numpy_helper

    from helpers import assert_same, onnxruntime_reference

    rng = np.random.default_rng(7)
    if epilogue == "silu":
        inits = {"w": rng.standard_normal((24, 8, 3, 3)) / 4, "b": rng.standard_normal(24)}
        nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
                 helper.make_node("Sigmoid", ["c"], ["s"]), helper.make_node("Mul", ["c", "s"], ["y"])]
        shape, out = [1, 8, 13, 11], [1, 24, 13, 11]
    else:
        inits = {"w": rng.standard_normal((8, 32)) / 3, "b": rng.standard_normal(32), "half": 0.5,
                 "root2": math.sqrt(2), "one": 1.0}
        nodes = [helper.make_node("MatMul", ["x", "w"], ["m"]), helper.make_node("Add", ["m", "b"], ["c"]),
                 helper.make_node("Div", ["c", "root2"], ["d"]), helper.make_node("Erf", ["d"], ["e"]),
                 helper.make_node("Add", ["e", "one"], ["f"]), helper.make_node("Mul", ["c", "f"], ["g"]),
                 helper.make_node("Mul", ["g", "half"], ["y"])]
        shape, out = [1, 13, 11, 8], [1, 13, 11, 32]
    graph = helper.make_graph(nodes, epilogue, [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, out)],
                              [numpy_helper.from_array(np.asarray(v, np.float32), k) for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    x = rng.standard_normal(shape).astype(np.float32) * 3
    from tvm_s2d.pipeline import S2DPipeline

    pipeline = S2DPipeline()
    with tvm.transform.PassContext(opt_level=3):
        ex = tvm.compile(tvm_s2d.from_onnx(model), target=host_target(), relax_pipeline=pipeline.as_pass())
    got = relax.VirtualMachine(ex, tvm.cpu())["main"](tvm.runtime.tensor(x)).numpy()
    assert_same(got, onnxruntime_reference(model, {"x": x}), "float32")
    outcomes = pipeline.outcomes()
    assert any(o.applied for o in outcomes["VectorMath"])
    assert any(o.applied and "conv" in o.reason for o in outcomes["ScheduleConvs"])


def test_a_sigmoid_of_a_sigmoid_defines_each_variable_once():
    """Regression (the property test): the replacements shared the variable sigmoid's exp binds,
    and two sigmoids in one kernel defined it twice (``TIR is ill-formed``)."""
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((1, 1, 5, 5), "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            out = bb.emit_output(bb.emit(relax.op.sigmoid(bb.emit(relax.op.sigmoid(x)))))
        bb.emit_func_output(out)
    data = np.linspace(-6, 6, 25, dtype=np.float32).reshape(1, 1, 5, 5)
    with tvm.transform.PassContext(opt_level=3):
        ex = tvm.compile(bb.get(), target=host_target(), relax_pipeline="s2d")
    got = relax.VirtualMachine(ex, tvm.cpu())["main"](tvm.runtime.tensor(data)).numpy()
    expected = 1 / (1 + np.exp(-1 / (1 + np.exp(-data.astype(np.float64)))))
    np.testing.assert_allclose(got, expected, rtol=1e-6)
