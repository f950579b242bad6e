"""ONNX in: ONNX Runtime as the reference, the onnx package's own conv cases, bad input."""

import glob
import os

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from tvm import relax

import tvm_s2d
from helpers import onnxruntime_reference, ops_in, run
from tvm_s2d.demo import demo_model

ONNX_CASES = os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data", "pytorch-converted")


ort_run = onnxruntime_reference

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
    got = run(mod, image, pipeline=relax.get_pipeline("s2d", block=block, lane_width=32))
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


def _onnx_case_dirs():
    cases = glob.glob(os.path.join(ONNX_CASES, "test_Conv2d*")) + glob.glob(os.path.join(ONNX_CASES, "test_ConvTranspose2d*"))
    return sorted(d for d in cases if os.path.isdir(d))


def test_the_onnx_package_ships_conv_cases():
    assert len(_onnx_case_dirs()) >= 10


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
    assert len(reasons) == 1 and "dynamic or unknown shape" in reasons.pop()
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


def _demo_variant(edit, size=32):
    model = demo_model(size)
    edit(model)
    return model


def test_a_graph_output_without_shape_is_a_warning_naming_it(tmp_path):
    """ONNX Runtime and TVM run it; the ONNX checker alone refuses it (without naming the value)."""
    def drop_shape(model):
        model.graph.output[0].type.tensor_type.ClearField("shape")

    model = _demo_variant(drop_shape)
    path = tmp_path / "shapeless.onnx"
    onnx.save(model, path)
    with pytest.warns(tvm_s2d.onnx_import.ModelWarning, match="shapeless.onnx: 'output' has no shape"):
        mod = tvm_s2d.from_onnx(path)
    image = np.random.default_rng(0).standard_normal((1, 3, 32, 32)).astype(np.float32)
    np.testing.assert_allclose(run(mod, image, pipeline="s2d"), ort_run(model, {"image": image}), rtol=1e-4, atol=1e-5)


def test_old_ir_initializers_that_are_not_inputs_are_a_warning_naming_them():
    model = _demo_variant(lambda m: setattr(m, "ir_version", 3))
    with pytest.warns(tvm_s2d.onnx_import.ModelWarning, match=r"'stem.weight', 'stem.bias', 'body1.weight' and 7 more"):
        mod = tvm_s2d.from_onnx(model)
    assert len(tvm_s2d.explain(mod).rewritten) == 4


def test_other_spec_violations_are_still_errors():
    def wrong_output_name(model):
        model.graph.node[-1].output[0] = "elsewhere"

    with pytest.raises(tvm_s2d.ModelError, match="invalid ONNX model"):
        tvm_s2d.from_onnx(_demo_variant(wrong_output_name))


@pytest.mark.parametrize("shape_dict,message", [
    ({"imag": [1, 3, 32, 32]}, "'imag', which is not an input of the model \\(its inputs: image\\)"),
    ({"image": [1, 3, 32]}, "'image' has 3 dims, the input has 4"),
])
def test_shapes_must_name_an_input_with_its_rank(shape_dict, message):
    with pytest.raises(tvm_s2d.ModelError, match=message):
        tvm_s2d.from_onnx(demo_model(32), shape_dict=shape_dict)


def test_not_a_model_object():
    with pytest.raises(TypeError, match="onnx.ModelProto or a path"):
        tvm_s2d.from_onnx(42)


def test_a_model_without_convs_gives_an_empty_report():
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 8, 8])])
    report = tvm_s2d.explain(tvm_s2d.from_onnx(helper.make_model(graph)))
    assert report.rows == [] and "no conv2d" in str(report)


# ---- whole models (issue 3): ONNX Runtime is the reference ----------------------------------------


def _model(nodes, inputs, outputs, inits, opset=17):
    graph = helper.make_graph(nodes, "m", inputs, outputs, initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    onnx.checker.check_model(model)
    return model


def _conv(rng, name, src, dst, cin, cout, k, stride=1, pad=None, transpose=False, **attrs):
    shape = (cin, cout, k, k) if transpose else (cout, cin, k, k)
    w = numpy_helper.from_array((rng.standard_normal(shape) / np.sqrt(cin * k * k)).astype(np.float32), name + ".w")
    b = numpy_helper.from_array((0.1 * rng.standard_normal(cout)).astype(np.float32), name + ".b")
    pads = [k // 2] * 4 if pad is None else [pad] * 4
    node = helper.make_node("ConvTranspose" if transpose else "Conv", [src, name + ".w", name + ".b"], [dst], name=name,
                            kernel_shape=[k, k], strides=[stride, stride], pads=pads, **attrs)
    return node, [w, b]


def _compare(model, feeds, **options):
    options.setdefault("lane_width", 32)  # the HTP cost model, also when compiling for llvm
    mod = tvm_s2d.from_onnx(model)
    report = tvm_s2d.explain(mod, **options)
    got = run(mod, *feeds.values(), pipeline=relax.get_pipeline("s2d", **options))
    np.testing.assert_allclose(got, ort_run(model, feeds), rtol=1e-4, atol=1e-5)
    return report


@pytest.mark.parametrize("size", [(24, 24), (21, 17)])
def test_espcn_like_super_resolution_ending_in_depth_to_space(size):
    rng = np.random.default_rng(3)
    nodes, inits = [], []
    for spec in [("c1", "x", "h1", 1, 16, 5), ("c2", "a1", "h2", 16, 8, 3), ("c3", "a2", "h3", 8, 4, 3)]:
        node, params = _conv(rng, *spec)
        nodes.append(node)
        inits += params
        if spec[2] != "h3":
            nodes.append(helper.make_node("Tanh", [spec[2]], ["a" + spec[2][1]]))
    nodes.append(helper.make_node("DepthToSpace", ["h3"], ["y"], blocksize=2, mode="DCR"))
    h, w = size
    model = _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 1, h, w])],
                   [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 1, 2 * h, 2 * w])], inits)
    x = np.random.default_rng(0).standard_normal((2, 1, h, w)).astype(np.float32)
    report = _compare(model, {"x": x})  # the cost model's own choices
    assert [r["status"] for r in report.rows] == ["rewritten"] * 3
    report = _compare(model, {"x": x}, block=2, move_cost=1000.0)  # one chain in a 2x2 domain
    assert report.totals()["stayed_in_domain"] == 2


def test_resnet_like_stem_and_residual_block():
    rng = np.random.default_rng(4)
    nodes, inits = [], []
    for spec, act in [(("stem", "x", "s", 3, 16, 7, 2, 3), "s_act"), (("b1", "p", "h1", 16, 16, 3), "h1_act"),
                      (("b2", "h1_act", "h2", 16, 16, 3), None)]:
        node, params = _conv(rng, *spec)
        nodes.append(node)
        inits += params
        if act:
            nodes.append(helper.make_node("Relu", [spec[2]], [act]))
        if spec[0] == "stem":
            nodes.append(helper.make_node("MaxPool", ["s_act"], ["p"], kernel_shape=[3, 3], strides=[2, 2], pads=[1] * 4))
    nodes += [helper.make_node("Add", ["h2", "p"], ["r"]), helper.make_node("Relu", ["r"], ["y"])]
    model = _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 64, 64])],
                   [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 16, 16, 16])], inits)
    x = np.random.default_rng(1).standard_normal((1, 3, 64, 64)).astype(np.float32)
    report = _compare(model, {"x": x}, block=2, move_cost=1000.0)
    by_name = {r["name"]: r for r in report.rows}
    # the strided stem is S2D + a stride-1 4x4 conv with a plain output: no D2S before the pool
    assert by_name["stem"]["kernel"] == [[7, 7], [4, 4]] and by_name["stem"]["out_block"] == [1, 1]
    assert by_name["b2"]["input"] == "S2D domain"
    assert [e["forced_by"] for e in report.exits] == ["relax.add"]  # its other operand comes plain from the pool


def test_unet_like_model_with_conv_transpose():
    rng = np.random.default_rng(5)
    nodes, inits = [], []
    for spec in [("enc", "x", "e", 4, 8, 3), ("down", "e_act", "d", 8, 8, 3, 2, 1),
                 ("up", "d_act", "u", 8, 8, 4, 2, 1, True), ("head", "s", "y", 8, 3, 3)]:
        node, params = _conv(rng, *spec)
        nodes.append(node)
        inits += params
        if spec[0] in ("enc", "down"):
            nodes.append(helper.make_node("Relu", [spec[2]], [spec[2] + "_act"]))
        if spec[0] == "up":
            nodes.append(helper.make_node("Add", ["u", "e_act"], ["s"]))
    model = _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4, 32, 32])],
                   [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3, 32, 32])], inits)
    x = np.random.default_rng(2).standard_normal((2, 4, 32, 32)).astype(np.float32)
    report = _compare(model, {"x": x}, block=2, move_cost=1000.0)
    assert [r["status"] for r in report.rows] == ["rewritten"] * 4
    assert [r["input"] for r in report.rows] == ["plain", "S2D domain", "plain", "S2D domain"]
    assert report.rows[2]["name"] == "up" and report.rows[2]["kind"] == "conv2d_transpose"
    # the skip connection meets the transposed conv's output in the same domain: one S2D in, one D2S out
    assert report.data_movement["after"]["relax.permute_dims"] == 2
    assert [e["forced_by"] for e in report.exits] == ["function output"]


def test_nchw_model_converted_to_nhwc_with_tvm_convert_layout():
    model = demo_model(40)
    nhwc = relax.transform.ConvertLayout({"relax.nn.conv2d": ["NHWC", "HWIO"]})(tvm_s2d.from_onnx(model))
    report = tvm_s2d.explain(nhwc, block=2, move_cost=1000.0)
    assert {r["layout"] for r in report.rows} == {"NHWC"} and len(report.rewritten) == 4
    # the stride-2 stem with a 2x2 block has a plain output; body1 -> body2 stays in the domain
    assert [r["input"] for r in report.rows][1:3] == ["plain", "S2D domain"]
    image = np.random.default_rng(3).standard_normal((1, 3, 40, 40)).astype(np.float32)
    got = run(nhwc, image, pipeline=relax.get_pipeline("s2d", block=2, move_cost=1000.0))
    np.testing.assert_allclose(got, ort_run(model, {"image": image}), rtol=1e-4, atol=1e-5)


def test_hardswish_and_hardsigmoid_run_in_the_domain():
    rng = np.random.default_rng(6)
    (c1, p1), (c2, p2) = _conv(rng, "c1", "x", "h1", 8, 8, 3), _conv(rng, "c2", "a2", "y", 8, 8, 3)
    nodes = [c1, helper.make_node("HardSwish", ["h1"], ["a1"]), helper.make_node("HardSigmoid", ["a1"], ["a2"]), c2]
    model = _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 31, 29])],
                   [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 31, 29])], p1 + p2)
    x = np.random.default_rng(4).standard_normal((1, 8, 31, 29)).astype(np.float32)
    report = _compare(model, {"x": x}, block=2, move_cost=1000.0)
    assert report.rows[1]["input"] == "S2D domain" and [e["forced_by"] for e in report.exits] == ["function output"]
    assert report.data_movement["after"]["relax.permute_dims"] == 2
    assert report.data_movement["each_conv_alone"]["relax.permute_dims"] == 4


def _shape_arithmetic_unit(rng, channels=16, hw=6):
    """ShuffleNetV2's unit as PyTorch's TorchScript exporter writes it (torchvision's, exported):
    ``x.chunk(2, dim=1)`` as arithmetic on ``Shape(x)`` (``Gather -> Add -> Div -> Mul`` into the
    ``Slice`` bounds), the branch's conv, the concat and the channel shuffle."""
    half = channels // 2
    conv, params = _conv(rng, "branch", "x2", "b", half, half, 1, pad=0)

    def const(name, value):
        return helper.make_node("Constant", [], [name], value=numpy_helper.from_array(np.asarray(value, np.int64), name))

    nodes = [helper.make_node("Shape", ["x"], ["s"]), const("axis", [1]), const("zero", [0]), const("one", [1]),
             const("two", [2]), helper.make_node("Gather", ["s", "axis"], ["c"], axis=0),
             helper.make_node("Add", ["c", "one"], ["c1"]), helper.make_node("Div", ["c1", "two"], ["h"]),
             helper.make_node("Mul", ["h", "one"], ["cut"]), helper.make_node("Mul", ["h", "two"], ["end"]),
             helper.make_node("Slice", ["x", "zero", "cut", "axis"], ["x1"]),
             helper.make_node("Slice", ["x", "cut", "end", "axis"], ["x2"]),
             conv, helper.make_node("Relu", ["b"], ["rb"]), helper.make_node("Concat", ["x1", "rb"], ["cat"], axis=1),
             const("shape5", [1, 2, half, hw, hw]), helper.make_node("Reshape", ["cat", "shape5"], ["r5"]),
             helper.make_node("Transpose", ["r5"], ["t5"], perm=[0, 2, 1, 3, 4]),
             const("shape4", [1, -1, hw, hw]), helper.make_node("Reshape", ["t5", "shape4"], ["y"])]
    return _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, channels, hw, hw])],
                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, channels, hw, hw])], params, opset=13)


def test_static_shape_arithmetic_is_folded_before_the_import():
    """The chunk's slice bounds and the shuffle's shapes are constants once ``Shape`` of static
    tensors is: the conv after the slice keeps a static shape (TVM's importer made it a
    ``dynamic_strided_slice`` with no shape, and ``FoldConstant`` failed on the conv: ``emit_te
    now only supports Tensor that has ShapeExpr shape``), and the model matches ONNX Runtime."""
    from tvm_s2d.onnx_shapes import fold_shapes

    model = _shape_arithmetic_unit(np.random.default_rng(8))
    folded = fold_shapes(model)
    assert not {"Shape", "Gather", "Add", "Div", "Mul"} & {n.op_type for n in folded.graph.node}
    assert [n.op_type for n in folded.graph.node].count("Slice") == 2  # the data ops stay
    mod = tvm_s2d.from_onnx(model)
    (conv,) = ops_in(mod)
    assert [int(d) for d in conv.ty.shape] == [1, 8, 6, 6]
    x = np.random.default_rng(9).standard_normal((1, 16, 6, 6)).astype(np.float32)
    got = run(mod, x, pipeline="s2d", target=tvm_s2d.targets.host_target())
    np.testing.assert_allclose(got, ort_run(model, {"x": x}), rtol=1e-5, atol=1e-6)
    dynamic = onnx.ModelProto()
    dynamic.CopyFrom(model)
    dynamic.graph.input[0].type.tensor_type.shape.dim[0].dim_param = "batch"
    assert [n.op_type for n in fold_shapes(dynamic).graph.node].count("Shape") == 1  # a dynamic batch: kept
    assert fold_shapes(dynamic, {"x": [1, 16, 6, 6]}).graph.node[0].op_type == "Constant"


def test_model_macs_counts_convs_and_matrix_products():
    from onnx import TensorProto, helper, numpy_helper

    from tvm_s2d.onnx_import import model_macs

    w = numpy_helper.from_array(np.zeros((8, 3, 3, 3), np.float32), "w")
    g = numpy_helper.from_array(np.zeros((8 * 5 * 5, 10), np.float32), "g")
    d = numpy_helper.from_array(np.zeros((8, 1, 3, 3), np.float32), "d")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1], strides=[2, 2]),  # 8x5x5 outputs x 27
         helper.make_node("Conv", ["c", "d"], ["e"], pads=[1, 1, 1, 1], group=8),  # depthwise: 8x5x5 x 9
         helper.make_node("Flatten", ["e"], ["f"]), helper.make_node("MatMul", ["f", "g"], ["y"])],  # 200 x 10
        "m", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 10, 10])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])], [w, g, d])
    assert model_macs(helper.make_model(graph)) == 200 * 27 + 200 * 9 + 200 * 10


def test_clips_with_constant_bounds_import_as_the_clip_op():
    """ReLU6 and one-sided Clips (inputs, opset 17; attributes, opset 6) become Relax's clip op,
    which the passes see (TVM writes TE kernels); a computed or NaN bound keeps TVM's
    conversion; every form gives ONNX Runtime's values."""
    scalar = lambda name, v: numpy_helper.from_array(np.array(v, np.float32), name)  # noqa: E731
    inits = [scalar("lo", 0.0), scalar("hi", 6.0), scalar("nan", np.nan)]
    nodes = [helper.make_node("Clip", ["x", "lo", "hi"], ["a"], name="relu6"),
             helper.make_node("Clip", ["a", "", "hi"], ["b"], name="upper"),
             helper.make_node("Clip", ["b", "lo"], ["c"], name="lower"),
             helper.make_node("Clip", ["c", "nan", "hi"], ["d"], name="nan_bound"),
             helper.make_node("ReduceMax", ["x"], ["m"], keepdims=0),
             helper.make_node("Clip", ["d", "lo", "m"], ["y"], name="computed")]
    shape = [2, 3, 4]
    io = lambda name: helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)  # noqa: E731
    model = _model(nodes, [io("x")], [io("y")], inits)
    x = (4 * np.random.default_rng(1).standard_normal(shape)).astype(np.float32)
    mod = tvm_s2d.from_onnx(model)
    assert len(ops_in(mod, "relax.clip")) == 3
    np.testing.assert_array_equal(run(mod, x), ort_run(model, {"x": x}))
    old = _model([helper.make_node("Clip", ["x"], ["y"], min=-1.0, max=2.5)], [io("x")], [io("y")], [], opset=6)
    mod = tvm_s2d.from_onnx(old)
    assert len(ops_in(mod, "relax.clip")) == 1
    np.testing.assert_array_equal(run(mod, x), ort_run(old, {"x": x}))
