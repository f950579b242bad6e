"""The model zoo (``tvm_s2d.zoo``): weights filled from ``ConstantOfShape`` nodes, seeded; the
committed weight-free torchvision graphs; every model runs in ONNX Runtime. No TVM compile."""

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from tvm_s2d import zoo

pytest.importorskip("onnxruntime")


def _light(stem: str) -> onnx.ModelProto:
    return onnx.load(zoo.LIGHT_DIR / f"light_{stem}.onnx")


def _constant_of_shape_outputs(model: onnx.ModelProto) -> list[str]:
    return [node.output[0] for node in model.graph.node if node.op_type == "ConstantOfShape"]


#: The three light models with big dense layers (60 to 140 M weights: seconds each to make and run).
BIG = ("alexnet", "vgg19", "zfnet512")
SMALL_LIGHT = [stem for name, (stem, _) in zoo.LIGHT.items() if name not in BIG]


@pytest.mark.parametrize("stem", SMALL_LIGHT)
def test_fill_weights_makes_every_constant_of_shape_weight_an_initializer(stem):
    model = _light(stem)
    weights = _constant_of_shape_outputs(model)
    filled = zoo.fill_weights(model, seed=0)
    onnx.checker.check_model(filled)
    inits = {init.name: init for init in filled.graph.initializer}
    assert not _constant_of_shape_outputs(filled)
    assert set(weights) <= set(inits)
    originals = {init.name for init in model.graph.initializer}
    assert [v.name for v in filled.graph.input] == [v.name for v in model.graph.input if v.name not in originals]


def test_fill_weights_statistics_follow_the_consumer():
    filled = zoo.fill_weights(_light("resnet50"), seed=0)
    inits = {init.name: numpy_helper.to_array(init) for init in filled.graph.initializer}
    for node in filled.graph.node:
        if node.op_type == "Conv" and node.input[1] in inits:
            w = inits[node.input[1]]
            if w.size > 10_000:
                assert np.std(w) == pytest.approx(np.sqrt(2 / np.prod(w.shape[1:])), rel=0.05)
        if node.op_type == "BatchNormalization":
            assert inits[node.input[4]].min() > 0  # a variance
    fc = next(node for node in filled.graph.node if node.op_type == "Gemm")
    w = inits[fc.input[1]]
    fan_in = w.shape[1] if any(a.name == "transB" and a.i for a in fc.attribute) else w.shape[0]
    assert np.std(w) == pytest.approx(np.sqrt(2 / fan_in), rel=0.05)
    assert np.abs(inits[fc.input[2]]).max() < 0.1  # a bias: small


def test_fill_weights_is_seeded():
    model = _light("squeezenet")
    a, b, c = (zoo.fill_weights(model, seed) for seed in (0, 0, 1))
    arrays = [{init.name: numpy_helper.to_array(init) for init in m.graph.initializer} for m in (a, b, c)]
    assert arrays[0].keys() == arrays[1].keys() == arrays[2].keys()
    for name in arrays[0]:
        np.testing.assert_array_equal(arrays[0][name], arrays[1][name])
    assert any(not np.array_equal(arrays[0][n], arrays[2][n]) for n in _constant_of_shape_outputs(model))


def test_fill_weights_leaves_a_constant_of_shape_that_is_no_weight():
    """An int64 ConstantOfShape (a shape) and a float one that feeds no weight stay."""
    nodes = [helper.make_node("ConstantOfShape", ["w_shape"], ["w"], value=helper.make_tensor("", TensorProto.FLOAT, [1], [0.0])),
             helper.make_node("ConstantOfShape", ["s_shape"], ["s"], value=helper.make_tensor("", TensorProto.INT64, [1], [-1])),
             helper.make_node("ConstantOfShape", ["s_shape"], ["one"], value=helper.make_tensor("", TensorProto.FLOAT, [1], [1.0])),
             helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1]),
             helper.make_node("Max", ["y", "one"], ["z"]),
             helper.make_node("Reshape", ["z", "s"], ["out"])]
    inits = [numpy_helper.from_array(np.array(dims, np.int64), name) for dims, name in [([8, 3, 3, 3], "w_shape"), ([1], "s_shape")]]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, [512])], inits)
    filled = zoo.fill_weights(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), seed=3)
    assert _constant_of_shape_outputs(filled) == ["s", "one"]
    w = numpy_helper.to_array(next(init for init in filled.graph.initializer if init.name == "w"))
    assert w.shape == (8, 3, 3, 3) and w.std() > 0
    assert zoo.run_onnxruntime(filled)[0].shape == (512,)


def test_strip_weights_undoes_fill_weights():
    filled = zoo.fill_weights(_light("inception_v1"), seed=0)
    stripped = zoo.strip_weights(filled)
    onnx.checker.check_model(stripped)
    assert sum(init.data_type == TensorProto.FLOAT for init in stripped.graph.initializer) == 0
    refilled = zoo.fill_weights(stripped, seed=0)
    assert sorted(i.name for i in refilled.graph.initializer) == sorted(i.name for i in filled.graph.initializer)


def test_the_committed_graphs_are_the_torchvision_entries_and_small():
    files = {path.name for path in zoo.MODELS_DIR.glob("*.onnx")}
    assert files == {f"{name}_{size}.onnx" for name, sizes in zoo.TORCHVISION.items() for size in sizes}
    assert sum(path.stat().st_size for path in zoo.MODELS_DIR.glob("*.onnx")) < 2_000_000


@pytest.mark.parametrize("name", sorted(zoo.TORCHVISION))
def test_the_committed_graphs_load_and_pass_the_checker(name):
    for size in zoo.TORCHVISION[name]:
        model = onnx.load(zoo.MODELS_DIR / f"{name}_{size}.onnx")
        onnx.checker.check_model(model)
        assert [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim] == [1, 3, size, size]
        assert all(init.data_type != TensorProto.FLOAT or np.prod(init.dims) <= 1 for init in model.graph.initializer)
        assert _constant_of_shape_outputs(model)


@pytest.mark.parametrize("name", [pytest.param(name, marks=[pytest.mark.slow] if name.removeprefix("light_") in BIG else [])
                                  for name in zoo.ZOO])
def test_every_zoo_model_runs_in_onnxruntime(name):
    entry = zoo.ZOO[name]
    model = zoo.float_model(name, entry.small)
    assert not _constant_of_shape_outputs(model) or entry.family == "own"
    out = zoo.run_onnxruntime(model)[0]
    assert np.isfinite(out).all()
    assert 0 < np.std(out) and np.abs(out).max() < 100


def test_a_quantized_model_is_cached_and_not_collapsed(tmp_path, monkeypatch):
    monkeypatch.setenv("TVM_S2D_CACHE", str(tmp_path))
    path = zoo.quantized_path("squeezenet1_1", 96)
    assert path.parent == tmp_path and path.exists()
    stamp = path.stat().st_mtime_ns
    model = zoo.quantized_model("squeezenet1_1", 96)
    assert path.stat().st_mtime_ns == stamp  # the second call reads the cache
    assert any(node.op_type == "QuantizeLinear" for node in model.graph.node)
    out = zoo.run_onnxruntime(model, optimize=False)[0]
    assert np.isfinite(out).all() and len(np.unique(out)) > 10


def test_an_unknown_name_or_size_says_what_there_is():
    with pytest.raises(KeyError, match="resnet18"):
        zoo.float_model("resnet19")
    with pytest.raises(ValueError, match="224"):
        zoo.float_model("light_vgg19", 96)
