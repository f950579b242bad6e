"""Dense layers on CPUs: dropout as the identity (``RemoveDropout``), weights packed in column
blocks (``CpuDense``), and softmax of one row kept from a schedule that recomputed it per output
(light AlexNet: 437 ms of kernels, 95% in its first two dense layers, before these)."""

import numpy as np
import pytest
import tvm
from onnx import TensorProto, helper, numpy_helper
from tvm import relax
from tvm.script import relax as R

import tvm_s2d
from helpers import onnxruntime_reference, run
from tvm_s2d.passes import CpuDense, RemoveDropout
from tvm_s2d.pipeline import S2DPipeline
from tvm_s2d.schedules.x86_reductions import schedule_dlight
from tvm_s2d.targets import host_target

AVX2 = tvm.target.Target({"kind": "llvm", "mcpu": "haswell"})  # 8 float lanes: blocks of 32 columns


def test_dropout_read_for_its_data_becomes_its_input():
    @tvm.script.ir_module
    class Before:
        @R.function
        def main(x: R.Tensor((1, 8), "float32")):
            with R.dataflow():
                d = R.nn.dropout(x, 0.5)
                y = d[0]
                z = R.nn.relu(y)
                R.output(z)
            return z

    @tvm.script.ir_module
    class Expected:
        @R.function
        def main(x: R.Tensor((1, 8), "float32")):
            with R.dataflow():
                z = R.nn.relu(x)
                R.output(z)
            return z

    pass_ = RemoveDropout()
    tvm.ir.assert_structural_equal(pass_(Before), Expected)
    assert [(o.name, o.applied) for o in pass_.outcomes] == [("y", True)]


def test_a_dropout_whose_mask_is_read_keeps_its_call_for_the_mask():
    @tvm.script.ir_module
    class Before:
        @R.function
        def main(x: R.Tensor((1, 8), "float32")):
            with R.dataflow():
                d = R.nn.dropout(x, 0.5)
                y = d[0]
                mask = d[1]
                z = R.add(y, mask)
                R.output(z)
            return z

    after = RemoveDropout()(Before)
    text = after.script()
    assert "R.nn.dropout" in text and "R.add(x, mask)" in text


def _dense(rows, k, n, weight):
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((rows, k), "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            y = bb.emit(relax.op.matmul(x, relax.const(weight)), "fc")
            y = bb.emit(relax.op.nn.relu(relax.op.add(y, relax.const(np.arange(n, dtype=np.float32) / n))), "post")
            out = bb.emit_output(y)
        bb.emit_func_output(out)
    return bb.get()


@pytest.mark.parametrize("rows,k,n", [(1, 37, 64), (1, 40, 70), (3, 19, 33), (16, 8, 32)])
def test_packed_dense_layers_match_the_plain_matmul(rows, k, n):
    """Column blocks of 32 (AVX2), the last padded with zero columns and sliced off; same sums."""
    rng = np.random.default_rng(rows * k + n)
    w = rng.standard_normal((k, n)).astype(np.float32)
    x = rng.standard_normal((rows, k)).astype(np.float32)
    mod = _dense(rows, k, n, w)
    pass_ = CpuDense(target=AVX2)
    packed = pass_(mod)
    (outcome,) = pass_.outcomes
    blocks = -(-n // 32)
    assert outcome.applied and outcome.name == "fc"
    assert outcome.reason == f"{rows}x{k} by {k}x{n}: weights packed as [{blocks}, {k}, 32] at compile time"
    consts = [c for c in _constants(packed) if c.ndim == 3]
    assert [c.shape for c in consts] == [(blocks, k, 32)]
    expected = np.maximum(x @ w + np.arange(n, dtype=np.float32) / n, 0)
    got = run(packed, x)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(run(mod, x, pipeline="s2d", target=host_target()), expected, rtol=1e-5, atol=1e-5)


def _constants(mod):
    found = []
    relax.analysis.post_order_visit(mod["main"], lambda e: found.append(e.value.numpy())
                                    if isinstance(e, tvm.ir.GenericConst) else None)
    return found


@pytest.mark.parametrize("shape", [(17, 8), (2, 15, 8), (1, 5, 7, 8), (2, 3, 5, 7, 8)])
def test_dense_layers_of_many_rows_become_1x1_convs(shape):
    """ConvNeXt's pointwise layers: Linear on a channels-last image (TVM's default lowering ran
    them as plain loops, 93% of the model's time). A 1x1 NHWC conv, rows folded into an image
    where the input is not 4-D; the same sums."""
    rng = np.random.default_rng(len(shape))
    w = rng.standard_normal((8, 20)).astype(np.float32)
    x = rng.standard_normal(shape).astype(np.float32)
    bb = relax.BlockBuilder()
    xv = relax.Var("x", relax.TensorType(shape, "float32"))
    with bb.function("main", [xv]):
        with bb.dataflow():
            out = bb.emit_output(bb.emit(relax.op.matmul(xv, relax.const(w)), "fc"))
        bb.emit_func_output(out)
    mod = bb.get()
    pass_ = CpuDense(target=AVX2)
    after = pass_(mod)
    (outcome,) = pass_.outcomes
    assert outcome.applied and "a 1x1 conv on a" in outcome.reason and "R.nn.conv2d" in after.script()
    np.testing.assert_allclose(run(after, x), x @ w, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(run(mod, x, pipeline="s2d", target=host_target()), x @ w, rtol=1e-5, atol=1e-5)


def test_a_run_time_weight_is_left_with_its_reason():
    w = np.ones((8, 32), np.float32)
    pass_ = CpuDense(target=AVX2)

    @tvm.script.ir_module
    class TwoInputs:
        @R.function
        def main(x: R.Tensor((1, 8), "float32"), w: R.Tensor((8, 4), "float32")):
            with R.dataflow():
                y = R.matmul(x, w)
                R.output(y)
            return y

    pass_(TwoInputs)
    assert [o.reason for o in pass_.outcomes] == ["weights are not a constant (computed at run time): left as it was"]
    pass_ = CpuDense(target=tvm.target.Target({"kind": "llvm", "mtriple": "hexagon", "mcpu": "hexagonv66"}))
    assert pass_(_dense(1, 8, 32, w)) is not None and pass_.outcomes == []


def _softmax(rows):
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((rows, 1000), "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            out = bb.emit_output(relax.op.nn.softmax(x, axis=-1))
        bb.emit_func_output(out)
    with tvm.transform.PassContext(opt_level=3):
        lowered = tvm.transform.Sequential(S2DPipeline().stages["lower"])(bb.get())
    return next(f for f in lowered.functions.values() if isinstance(f, tvm.tirx.PrimFunc))


def test_a_softmax_of_one_row_is_not_recomputed_for_each_output():
    """TVM's dlight ``Reduction`` rule put a single row's max and sum under the loop over its
    1000 outputs (1000 times the work); such a schedule is refused, a softmax of rows is not."""
    target = host_target()
    assert schedule_dlight(_softmax(1), target) is None
    assert schedule_dlight(_softmax(8), target) is not None


def test_alexnet_like_classifier_with_dropouts_matches_onnxruntime():
    """Flatten, Gemm (transB), Dropout, ReLU, Gemm, Softmax: the pipeline against ONNX Runtime."""
    rng = np.random.default_rng(3)
    w1, w2 = rng.standard_normal((100, 48)).astype(np.float32), rng.standard_normal((10, 100)).astype(np.float32)
    b1, b2 = rng.standard_normal(100).astype(np.float32), rng.standard_normal(10).astype(np.float32)
    nodes = [helper.make_node("Flatten", ["x"], ["f"]),
             helper.make_node("Gemm", ["f", "w1", "b1"], ["g1"], transB=1),
             helper.make_node("Relu", ["g1"], ["r1"]),
             helper.make_node("Dropout", ["r1"], ["d1"]),
             helper.make_node("Gemm", ["d1", "w2", "b2"], ["g2"], transB=1),
             helper.make_node("Softmax", ["g2"], ["y"], axis=1)]
    graph = helper.make_graph(nodes, "classifier", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])],
                              [numpy_helper.from_array(a, n) for a, n in ((w1, "w1"), (b1, "b1"), (w2, "w2"), (b2, "b2"))])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    x = rng.standard_normal((1, 3, 4, 4)).astype(np.float32)
    pipeline = S2DPipeline()
    got = run(tvm_s2d.from_onnx(model), x, pipeline=pipeline.as_pass(), target=host_target())
    outcomes = pipeline.outcomes()
    assert len(outcomes["RemoveDropout"]) == 1 and all(o.applied for o in outcomes["CpuDense"])
    assert len(outcomes["CpuDense"]) == 2
    np.testing.assert_allclose(got, onnxruntime_reference(model, {"x": x}), rtol=1e-5, atol=1e-7)
