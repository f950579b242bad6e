"""``CpuResize``: bilinear resizes as two separable passes, bit-identical to TVM's kernel and
within rounding of ONNX Runtime's; the resizes it leaves, with their reasons."""

import numpy as np
import pytest
import tvm
from onnx import TensorProto, helper
from tvm import relax

import tvm_s2d
from helpers import run
from tvm_s2d.passes import CpuResize
from tvm_s2d.pipeline import S2DPipeline
from tvm_s2d.schedules.x86_resize import COLS, ROWS
from tvm_s2d.targets import host_target

HOST = host_target()


def _net(shape, size, layout="NCHW", method="linear", mode="half_pixel", dtype="float32", transposed=False):
    """``resize2d`` of ``x`` (after an NHWC -> NCHW transpose when ``transposed``, as CpuLayout leaves a
    segmentation head's upsampling)."""
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType(shape, dtype))
    with bb.function("main", [x]):
        with bb.dataflow():
            y = bb.emit(relax.op.permute_dims(x, [0, 3, 1, 2])) if transposed else x
            y = bb.emit(relax.op.image.resize2d(y, size, layout=layout, method=method, coordinate_transformation_mode=mode))
            out = bb.emit_output(y)
        bb.emit_func_output(out)
    return bb.get()


@pytest.mark.parametrize("shape,size,layout,mode,transposed", [
    ((1, 28, 28, 21), (224, 224), "NCHW", "half_pixel", True),  # LRASPP's upsampling of its class maps
    ((1, 13, 17, 5), (40, 31), "NHWC", "align_corners", False),  # odd sizes, channels of no whole vector
    ((2, 3, 13, 17), (40, 31), "NCHW", "asymmetric", False),
    ((1, 3, 13, 17), (7, 9), "NCHW", "pytorch_half_pixel", False),  # a downscale
    ((1, 16, 8, 8), (16, 16), "NHWC", "half_pixel", False),
])
def test_separable_resize_is_bit_identical(shape, size, layout, mode, transposed):
    mod = _net(shape, size, layout, mode=mode, transposed=transposed)
    pass_ = CpuResize(target=HOST)
    pass_(mod)
    assert [o.applied for o in pass_.outcomes] == [True], pass_.outcomes
    x = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
    got = run(mod, x, pipeline="s2d", target=HOST)
    np.testing.assert_array_equal(got, run(mod, x, pipeline="s2d", target=HOST, disabled=["CpuResize"]))


def test_each_pass_is_one_parallel_loop_nest():
    """The kernel FuseOps makes of the transpose and the resize: the columns pass, then the rows
    pass, each parallel over rows (not the per-lane gathers of TVM's kernel)."""
    pipeline = S2DPipeline(rewrite=False)
    with HOST, tvm.transform.PassContext(opt_level=3):
        mod = pipeline.run(_net((1, 28, 28, 21), (224, 224), transposed=True), until="schedule")
    (func,) = [f for gv, f in mod.functions.items() if isinstance(f, tvm.tirx.PrimFunc)]
    assert func.attrs["tirx.is_scheduled"] and f'sblock("{COLS}")' in func.script() and f'sblock("{ROWS}")' in func.script()
    nests = func.body.block.body.seq
    assert len(nests) == 2 and all(n.kind == tvm.tirx.ForKind.PARALLEL for n in nests)


def test_onnx_resize_agrees_with_onnxruntime():
    from tvm_s2d.zoo import run_onnxruntime

    nodes = [helper.make_node("Resize", ["x", "", "scales"], ["y"], mode="linear",
                              coordinate_transformation_mode="half_pixel")]
    scales = helper.make_tensor("scales", TensorProto.FLOAT, [4], [1.0, 1.0, 4.0, 4.0])
    graph = helper.make_graph(nodes, "up", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 5, 9, 11])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 5, 36, 44])], [scales])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    x = np.random.default_rng(2).standard_normal((1, 5, 9, 11)).astype(np.float32)
    got = run(tvm_s2d.from_onnx(model), x, pipeline="s2d", target=HOST)
    np.testing.assert_allclose(got, run_onnxruntime(model, {"x": x})[0], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("mod,reason", [
    (_net((1, 3, 8, 8), (16, 16), method="nearest_neighbor", mode="asymmetric"), "method nearest_neighbor"),
    (_net((1, 3, 8, 8), (16, 16), method="cubic"), "method cubic"),
    (_net((1, 3, 8, 8), (16, 16), mode="tf_crop_and_resize"), "region of interest"),
    (_net((1, 3, 8, 8), (16, 16), dtype="float16"), "float32 only"),
])
def test_resizes_it_leaves(mod, reason):
    pass_ = CpuResize(target=HOST)
    tvm.ir.assert_structural_equal(pass_(mod), mod)
    (outcome,) = pass_.outcomes
    assert not outcome.applied and reason in outcome.reason, outcome


def test_other_targets_are_left():
    mod = _net((1, 3, 8, 8), (16, 16))
    pass_ = CpuResize(target=tvm.target.Target({"kind": "c"}))
    tvm.ir.assert_structural_equal(pass_(mod), mod)
    assert pass_.outcomes == []
