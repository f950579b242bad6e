"""``SumAsAdds``: ONNX ``Sum`` (imported as broadcasts, a stack and a reduction) as adds, so
layouts carry through residual adds and convs fuse them (light ResNet-50's and ShuffleNet's)."""

import numpy as np
import pytest
import tvm
from onnx import TensorProto, helper, numpy_helper

import tvm_s2d
from helpers import assert_same, onnxruntime_reference, run
from tvm_s2d.passes.sum_as_adds import SumAsAdds
from tvm_s2d.targets import host_target

RNG = np.random.default_rng(13)


def _model(shapes, quantized=False):
    """Sum of a conv's output and len(shapes) - 1 more inputs (broadcast where their shapes are)."""
    inputs = [helper.make_tensor_value_info(f"x{i}", TensorProto.FLOAT, s) for i, s in enumerate(shapes)]
    w = numpy_helper.from_array(RNG.standard_normal((shapes[0][1], shapes[0][1], 3, 3)).astype(np.float32) / 4, "w")
    nodes = [helper.make_node("Conv", ["x0", "w"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Sum", ["c", *[f"x{i}" for i in range(1, len(shapes))]], ["s"]),
             helper.make_node("Relu", ["s"], ["y"])]
    graph = helper.make_graph(nodes, "sum", inputs, [helper.make_tensor_value_info("y", TensorProto.FLOAT, shapes[0])], [w])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


@pytest.mark.parametrize("shapes", [[(1, 8, 9, 7)] * 2, [(1, 8, 9, 7)] * 4, [(1, 8, 9, 7), (1, 8, 1, 1), (8, 1, 7)]])
def test_a_sum_becomes_adds_and_matches_onnxruntime(shapes):
    model = _model(shapes)
    mod = tvm_s2d.from_onnx(model)
    assert "R.stack" in mod.script()
    pass_ = SumAsAdds()
    after = pass_(mod)
    text = after.script()
    assert "R.stack" not in text and "R.sum" not in text
    (outcome,) = pass_.outcomes
    assert outcome.applied and outcome.reason == f"a sum of {len(shapes)} tensors as {len(shapes) - 1} add(s)"
    feeds = {f"x{i}": RNG.standard_normal(s).astype(np.float32) for i, s in enumerate(shapes)}
    expected = onnxruntime_reference(model, feeds)
    assert_same(run(after, *feeds.values()), expected, "float32")
    got = run(mod, *feeds.values(), pipeline="s2d", target=host_target())
    assert_same(got, expected, "float32")
    if len(shapes) == 2:  # same shapes: no broadcast left, the add carried in the conv's layout
        assert "broadcast_to" not in text


def test_a_sum_over_another_axis_is_left_with_its_reason():
    bb = tvm.relax.BlockBuilder()
    x = tvm.relax.Var("x", tvm.relax.TensorType((2, 3), "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            s = bb.emit(tvm.relax.op.stack([x, x], axis=1))
            out = bb.emit_output(bb.emit(tvm.relax.op.sum(s, axis=[1])))
        bb.emit_func_output(out)
    pass_ = SumAsAdds()
    assert "R.stack" in pass_(bb.get()).script()
    assert [o.reason for o in pass_.outcomes] == ["a sum of a stack over another axis, or keeping it: left as it was"]
