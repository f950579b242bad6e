"""ONNX in: ONNX Runtime as the reference, the onnx package's own conv cases, bad input."""

import glob
import os

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from tvm import relax

import tvm_s2d
from helpers import ops_in, run
from tvm_s2d.demo import demo_model

ONNX_CASES = os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data", "pytorch-converted")


def ort_run(model, feeds):
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)[0]


@pytest.mark.parametrize("size", [48, 45])
@pytest.mark.parametrize("block", [None, 2, (2, 1)])
def test_demo_model_matches_onnxruntime_and_is_really_rewritten(size, block):
    model = demo_model(size)
    mod = tvm_s2d.from_onnx(model)
    report = tvm_s2d.explain(mod, block=block)
    assert [r["name"] for r in report.rows] == ["stem", "body1", "body2", "dw", "tail"]
    assert [r["status"] for r in report.rows] == ["rewritten"] * 3 + ["refused", "rewritten"]

    rewritten = tvm_s2d.SpaceToDepthConv2d(block=block)(mod)
    convs = ops_in(rewritten)
    by_name = {r["name"]: r for r in report.rows}
    # the rewritten convs have the report's widened input channels
    widened = sorted(int(c.args[0].ty.shape[1]) for c in convs)
    assert widened == sorted(r["in_channels"][-1] for r in by_name.values())

    image = np.random.default_rng(size).standard_normal((1, 3, size, size)).astype(np.float32)
    expected = ort_run(model, {"image": image})
    got = run(mod, image, pipeline=relax.get_pipeline("s2d", block=block))
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


def _onnx_case_dirs():
    return sorted(d for d in glob.glob(os.path.join(ONNX_CASES, "test_Conv2d*")) if os.path.isdir(d))


def test_the_onnx_package_ships_conv_cases():
    assert len(_onnx_case_dirs()) >= 8


@pytest.mark.parametrize("case", _onnx_case_dirs(), ids=os.path.basename)
def test_onnx_backend_conv_cases(case):
    model = onnx.load(os.path.join(case, "model.onnx"))
    inputs = [numpy_helper.to_array(onnx.load_tensor(p)) for p in sorted(glob.glob(os.path.join(case, "test_data_set_0", "input_*.pb")))]
    expected = numpy_helper.to_array(onnx.load_tensor(os.path.join(case, "test_data_set_0", "output_0.pb")))
    mod = tvm_s2d.from_onnx(model)
    (row,) = tvm_s2d.explain(mod, block=2).rows
    grouped = any(a.name == "group" and a.i > 1 for n in model.graph.node for a in n.attribute)
    assert row["status"] == ("refused" if grouped else "rewritten"), row["reason"]
    got = run(mod, *inputs, pipeline=relax.get_pipeline("s2d", block=2))
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


def test_unnamed_conv_nodes_take_their_output_name():
    case = os.path.join(ONNX_CASES, "test_Conv2d")
    (row,) = tvm_s2d.explain(tvm_s2d.from_onnx(os.path.join(case, "model.onnx"))).rows
    model = onnx.load(os.path.join(case, "model.onnx"))
    assert row["name"].endswith(model.graph.node[0].output[0])


def test_dynamic_input_needs_and_takes_a_shape():
    model = demo_model(32)
    model.graph.input[0].type.tensor_type.shape.dim[2].dim_param = "height"
    model.graph.input[0].type.tensor_type.shape.dim[3].dim_param = "width"
    model.graph.output[0].type.tensor_type.shape.dim[2].dim_param = "oh"
    model.graph.output[0].type.tensor_type.shape.dim[3].dim_param = "ow"
    reasons = {r["reason"] for r in tvm_s2d.explain(tvm_s2d.from_onnx(model)).rows}
    assert reasons == {"dynamic or unknown shape"}
    fixed = tvm_s2d.explain(tvm_s2d.from_onnx(model, shape_dict={"image": [1, 3, 32, 32]}))
    assert len(fixed.rewritten) == 4


# ---- bad input: a clear error or an empty report, never a wrong answer or a crash trace -------------


def test_a_file_that_is_not_onnx(tmp_path):
    path = tmp_path / "notes.onnx"
    path.write_text("this is not a model\n")
    with pytest.raises(tvm_s2d.ModelError, match="notes.onnx: not an ONNX model"):
        tvm_s2d.from_onnx(path)


def test_a_missing_file(tmp_path):
    with pytest.raises(tvm_s2d.ModelError, match="no such file"):
        tvm_s2d.from_onnx(tmp_path / "missing.onnx")


def test_an_invalid_model(tmp_path):
    node = helper.make_node("Conv", ["x", "w"], ["y"])  # weight "w" is defined nowhere
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 8, 8])])
    path = tmp_path / "broken.onnx"
    onnx.save(helper.make_model(graph), path)
    with pytest.raises(tvm_s2d.ModelError, match="broken.onnx: invalid ONNX model"):
        tvm_s2d.from_onnx(path)


def test_not_a_model_object():
    with pytest.raises(TypeError, match="onnx.ModelProto or a path"):
        tvm_s2d.from_onnx(42)


def test_a_model_without_convs_gives_an_empty_report():
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 8, 8])])
    report = tvm_s2d.explain(tvm_s2d.from_onnx(helper.make_model(graph)))
    assert report.rows == [] and "no conv2d" in str(report)
