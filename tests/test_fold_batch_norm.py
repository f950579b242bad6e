"""``FoldBatchNorm``: batch norms after convs folded into the conv's weights and a bias, the
others elementwise (light ShuffleNet, ResNet-50, Inception-v2, DenseNet-121 keep theirs)."""

import numpy as np
import pytest
import tvm
from onnx import TensorProto, helper, numpy_helper
from tvm import relax

import tvm_s2d
from helpers import assert_same, onnxruntime_reference, run
from tvm_s2d.passes.fold_batch_norm import FoldBatchNorm
from tvm_s2d.targets import host_target

RNG = np.random.default_rng(11)


def _norm_params(c):
    return [RNG.uniform(0.5, 2, c), RNG.standard_normal(c), RNG.standard_normal(c), RNG.uniform(0.1, 3, c)]


def _model(groups=1, conv_first=True):
    """conv -> BatchNormalization -> Relu (or BatchNormalization -> Relu -> conv, DenseNet's order)."""
    c_in, c_out = 8, 12
    inits = {"w": RNG.standard_normal((c_out, c_in // groups, 3, 3)) / 3}
    c_norm = c_out if conv_first else c_in
    inits.update(zip(["gamma", "beta", "mean", "var"], _norm_params(c_norm)))
    conv_in, norm_in = ("x", "c") if conv_first else ("r", "x")
    norm_out = "n"
    nodes = [helper.make_node("Conv", [conv_in, "w"], ["c"], pads=[1, 0, 2, 1], strides=[2, 1], group=groups),
             helper.make_node("BatchNormalization", [norm_in, "gamma", "beta", "mean", "var"], [norm_out], epsilon=1e-3),
             helper.make_node("Relu", [norm_out], ["r"])]
    if not conv_first:
        nodes = nodes[1:] + nodes[:1]
    out = "r" if conv_first else "c"
    graph = helper.make_graph(nodes, "bn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, c_in, 15, 13])],
                              [helper.make_tensor_value_info(out, TensorProto.FLOAT, [1, c_out, 8, 12])],
                              [numpy_helper.from_array(np.asarray(v, np.float32), k) for k, v in inits.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 15)])


@pytest.mark.parametrize("groups", [1, 4])
def test_a_batch_norm_after_a_conv_is_folded_into_its_weights(groups):
    model = _model(groups)
    mod = tvm.transform.Sequential([relax.transform.FoldConstant()])(tvm_s2d.from_onnx(model))
    pass_ = FoldBatchNorm()
    folded = pass_(mod)
    (outcome,) = pass_.outcomes
    assert outcome.applied and outcome.reason.startswith("12 channels: scale folded")
    text = folded.script()
    assert "batch_norm" not in text and "R.nn.conv2d" in text and "R.add" in text
    x = RNG.standard_normal((1, 8, 15, 13)).astype(np.float32)
    assert_same(run(folded, x), onnxruntime_reference(model, {"x": x}), "float32")
    got = run(tvm_s2d.from_onnx(model), x, pipeline="s2d", target=host_target())
    assert_same(got, onnxruntime_reference(model, {"x": x}), "float32")


def test_a_batch_norm_before_a_conv_becomes_elementwise():
    model = _model(conv_first=False)
    mod = tvm.transform.Sequential([relax.transform.FoldConstant()])(tvm_s2d.from_onnx(model))
    pass_ = FoldBatchNorm()
    after = pass_(mod)
    assert pass_.outcomes == [] and "batch_norm" not in after.script()
    x = RNG.standard_normal((1, 8, 15, 13)).astype(np.float32)
    assert_same(run(after, x), onnxruntime_reference(model, {"x": x}), "float32")


def _nhwc(axis, params_const=True):
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((1, 9, 7, 8), "float32"))
    gamma = relax.Var("gamma", relax.TensorType((6,), "float32"))
    inputs = [x] if params_const else [x, gamma]
    with bb.function("main", inputs):
        with bb.dataflow():
            w = relax.const(RNG.standard_normal((3, 3, 8, 6)).astype(np.float32))
            y = bb.emit(relax.op.nn.conv2d(x, w, padding=1, data_layout="NHWC", kernel_layout="HWIO"))
            params = [relax.const(p.astype(np.float32)) for p in _norm_params(6 if axis == 3 else 9)]
            if not params_const:
                params[0] = gamma
            n = bb.emit(relax.op.nn.batch_norm(y, *params, axis=axis, epsilon=1e-5))
            out = bb.emit_output(bb.emit(relax.TupleGetItem(n, 0)))
        bb.emit_func_output(out)
    return bb.get()


def test_nhwc_convs_fold_along_their_channel_axis_and_the_rest_is_refused_with_a_reason():
    mod = _nhwc(3)
    x = RNG.standard_normal((1, 9, 7, 8)).astype(np.float32)
    pass_ = FoldBatchNorm()
    folded = pass_(mod)
    assert [o.applied for o in pass_.outcomes] == [True]
    expected = run(relax.transform.DecomposeOpsForInference()(mod), x)
    assert_same(run(folded, x), expected, "float32")
    pass_(_nhwc(1))  # over the rows of an NHWC conv's output
    assert [o.reason for o in pass_.outcomes] == [
        "batch norm over axis 1 of a NHWC conv, not its channels: left to the elementwise batch norm"]
    pass_(_nhwc(3, params_const=False))
    assert [o.reason for o in pass_.outcomes] == [
        "batch norm parameters are not constants: left to the elementwise batch norm"]
