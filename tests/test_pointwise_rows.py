"""``CpuPointwiseRows``: NCHW 1x1 convs on rows of whole vectors, bit-identical to the convs
on their own rows; the convs it leaves, with a reason where it looked at them."""

import numpy as np
import pytest
import tvm
from onnx import TensorProto, helper, numpy_helper

import tvm_s2d
from helpers import run
from tvm_s2d.passes.cpu.pointwise_rows import rows_of
from tvm_s2d.pipeline import S2DPipeline
from tvm_s2d.targets import host_target

HOST = host_target()


def test_rows_of_whole_vectors():
    assert rows_of(28, 28, 16) == (7, 112)  # 784 pixels: 7 rows of 7 vectors
    assert rows_of(56, 56, 16) == (4, 784)  # the widest that leaves 4 rows
    assert rows_of(14, 14, 16) is None  # 196 = 4 x 49: no multiple of 16 divides it
    assert rows_of(7, 7, 8) is None
    assert rows_of(1, 200, 8) == (5, 40)  # 14 x 14 padded to whole vectors


def _model(channels, size, kernel=1, groups=1, pads=0):
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((channels, channels // groups, kernel, kernel))
                                     .astype(np.float32), "w"),
             numpy_helper.from_array(rng.standard_normal(channels).astype(np.float32), "b")]
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], group=groups, pads=[pads] * 4, name="pointwise"),
             helper.make_node("Relu", ["c"], ["y"])]
    shape = [1, channels, size, size]
    graph = helper.make_graph(nodes, "pw", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _outcomes(mod):
    pipeline = S2DPipeline()
    with HOST, tvm.transform.PassContext(opt_level=3):
        pipeline.run(mod, until="cpu")
    return pipeline.outcomes()


@pytest.mark.parametrize("channels,size,groups", [(58, 28, 1), (24, 20, 3),
                                                  (272, 14, 4), (68, 7, 4)])  # padded: 196 -> 200, 49 -> 56 pixels
def test_pointwise_conv_on_rows_of_whole_vectors_is_bit_identical(channels, size, groups):
    mod = tvm_s2d.from_onnx(_model(channels, size, groups=groups))
    outcomes = _outcomes(mod)
    if [o.reason for o in outcomes["CpuLayout"] if o.applied]:
        pytest.skip("CpuLayout chose NHWC on this CPU")
    (outcome,) = outcomes["CpuPointwiseRows"]
    assert outcome.applied and "rows of" in outcome.reason, outcome
    x = np.random.default_rng(1).standard_normal((1, channels, size, size)).astype(np.float32)
    got = run(mod, x, pipeline="s2d", target=HOST)
    np.testing.assert_array_equal(got, run(mod, x, pipeline="s2d", target=HOST, disabled=["CpuPointwiseRows"]))
    from tvm_s2d.zoo import run_onnxruntime

    expected = run_onnxruntime(_model(channels, size, groups=groups), {"x": x})[0]
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


def test_convs_it_leaves():
    for model, reason in ((_model(20, 5), "no 4 or more rows"), (_model(16, 28, kernel=3, pads=1), None)):
        outcomes = _outcomes(tvm_s2d.from_onnx(model))
        if [o.reason for o in outcomes["CpuLayout"] if o.applied]:
            continue  # NHWC: not this pass's
        found = outcomes["CpuPointwiseRows"]
        assert not any(o.applied for o in found)
        assert [reason in o.reason for o in found] == ([True] if reason else []), found


def test_other_targets_are_left():
    from tvm_s2d.passes import CpuPointwiseRows

    mod = tvm_s2d.from_onnx(_model(58, 28))
    pass_ = CpuPointwiseRows(target=tvm.target.Target({"kind": "c"}))
    tvm.ir.assert_structural_equal(pass_(mod), mod)
    assert pass_.outcomes == []
