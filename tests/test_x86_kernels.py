"""The CPU kernels other than convs (pools, means, dense, softmax, reductions:
``schedules/x86_reductions.py``) and the per-conv layout choice (``CpuLayout``): each
scheduled kernel gives the unscheduled one's result, on odd sizes, batch 2, NCHW and NHWC."""

import numpy as np
import pytest
import tvm
from tvm import relax
from tvm.script import tirx as T

import tvm_s2d  # noqa: F401  (registers the pipeline)
from helpers import FUSE, LLVM, Net, assert_same, random_tensor
from tvm_s2d.passes import CpuLayout, ScheduleConvs
from tvm_s2d.passes.cpu.layout import describe, fills
from tvm_s2d.schedules.x86_reductions import schedule_window
from tvm_s2d.targets import host_target

RNG = np.random.default_rng(11)


def _run(mod, x, target, *more):
    ex = tvm.compile(mod, target=target)
    out = relax.VirtualMachine(ex, tvm.cpu())["main"](tvm.runtime.tensor(x), *(tvm.runtime.tensor(m) for m in more))
    return out.numpy()


def _graph(layout, dtype, build, shape):
    """A one-input function ``build(bb, x)`` made kernels (legalized, fused)."""
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType(shape, dtype))
    with bb.function("main", [x]):
        with bb.dataflow():
            out = bb.emit_output(build(bb, x))
        bb.emit_func_output(out)
    return tvm.transform.Sequential(FUSE)(bb.get())


def _classifier_tail(layout, classes=10):
    """max pool 3x3/2 (padded), average pool 2x2, global mean, dense, softmax."""
    def build(bb, x):
        a = bb.emit(relax.op.nn.max_pool2d(x, 3, 2, 1, layout=layout))
        b = bb.emit(relax.op.nn.avg_pool2d(a, 2, 2, layout=layout))
        channels = int(b.ty.shape[1 if layout == "NCHW" else 3])
        c = bb.emit(relax.op.mean(b, axis=[2, 3] if layout == "NCHW" else [1, 2], keepdims=True))
        flat = bb.emit(relax.op.reshape(c, (int(x.ty.shape[0]), channels)))
        w = relax.const(RNG.standard_normal((channels, classes)).astype("float32"))
        dense = bb.emit(relax.op.add(relax.op.matmul(flat, w), relax.const(RNG.standard_normal(classes).astype("float32"))))
        return bb.emit(relax.op.nn.softmax(dense, axis=1))
    return build


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("batch", [1, 2])
def test_pools_means_dense_softmax_are_scheduled_and_exact(layout, batch):
    shape = (batch, 24, 21, 19) if layout == "NCHW" else (batch, 21, 19, 24)
    mod = _graph(layout, "float32", _classifier_tail(layout), shape)
    x = random_tensor(RNG, shape, "float32")
    expected = _run(mod, x, LLVM)
    schedule = ScheduleConvs(host_target())
    scheduled = schedule(mod)
    done = {o.name: o for o in schedule.outcomes}
    for name in ("max_pool2d", "avg_pool2d", "mean", "fused_matmul_add"):
        assert done[name].applied and "window reduction" in done[name].reason
    if batch == 1:  # one row: dlight's rule would compute its max and sum again for each output
        assert not done["softmax"].applied and "TVM's default lowering" in done["softmax"].reason
    else:
        assert done["softmax"].applied and "dlight" in done["softmax"].reason
    assert all(o.applied for o in schedule.outcomes if o.name != "softmax")  # nothing else left to TVM's default lowering
    text = scheduled["max_pool2d"].script()
    assert "T.parallel" in text and "T.vectorized" in text
    assert_same(_run(scheduled, x, host_target()), expected, "float32")


@pytest.mark.parametrize("op", ["sum", "max", "argmax"])
@pytest.mark.parametrize("dtype", ["float32", "int32"])
def test_other_reductions_are_exact(op, dtype):
    shape = (2, 7, 5, 9)
    make = {"sum": lambda x: relax.op.sum(x, axis=[1]), "max": lambda x: relax.op.max(x, axis=[2, 3]),
            "argmax": lambda x: relax.op.argmax(x, axis=1)}[op]
    mod = _graph("NCHW", dtype, lambda bb, x: bb.emit(make(x)), shape)
    x = random_tensor(RNG, shape, dtype)
    expected = _run(mod, x, LLVM)
    schedule = ScheduleConvs(host_target())
    scheduled = schedule(mod)
    assert all(o.applied for o in schedule.outcomes)
    assert_same(_run(scheduled, x, host_target()), expected, str(expected.dtype))


@T.prim_func(private=True, s_tir=True)
def _interleaved(a: T.Buffer((4, 8, 6), "float32"), b: T.Buffer((4, 6), "float32")):
    # a reduction axis between two output axes: no schedule here takes it
    for i, k, j in T.grid(4, 8, 6):
        with T.sblock("interleaved"):
            vi, vk, vj = T.axis.remap("SRS", [i, k, j])
            with T.init():
                b[vi, vj] = T.float32(0)
            b[vi, vj] = b[vi, vj] + a[vi, vk, vj]


def test_kernels_no_schedule_takes_are_left_with_a_reason():
    assert schedule_window(_interleaved, 8) is None
    mod = tvm.IRModule({"interleaved": _interleaved})
    schedule = ScheduleConvs(LLVM)
    tvm.ir.assert_structural_equal(schedule(mod), mod)
    (outcome,) = schedule.outcomes
    assert not outcome.applied and outcome.reason == "no schedule for reductions interleaved: TVM's default lowering"


def test_a_pool_epilogue_whose_other_operand_is_not_the_pool_is_exact(tmp_path):
    """Regression (found by ``test_property``): a quantized ``add(max_pool(c), c)`` fuses the
    pool with the integer add, whose second term (cast, subtract, multiply of ``c``) does not
    read the pool. Computed at each row of the parallel pool loop, that term covered the whole
    tensor and the add read rows not yet pooled: 122 steps off. It is now inlined first."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from helpers import onnxruntime_reference
    from tvm_s2d.checks import compare_with_onnxruntime
    from tvm_s2d.quantize import quantize_qdq

    w = np.random.default_rng(0).standard_normal((2, 1, 1, 1)).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], kernel_shape=[1, 1]),
             helper.make_node("MaxPool", ["c"], ["p"], kernel_shape=[3, 3], pads=[0, 0, 2, 2], strides=[1, 1]),
             helper.make_node("Add", ["p", "c"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 5, 5])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 5, 5])],
                              initializer=[numpy_helper.from_array(w, "w")])
    model = onnx.load(quantize_qdq(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "q.onnx"))
    x = np.random.default_rng(0).standard_normal((1, 1, 5, 5)).astype(np.float32)
    schedule = ScheduleConvs()
    pipeline = tvm_s2d.pipeline.S2DPipeline(schedules=[schedule])
    with tvm.transform.PassContext(opt_level=3):
        ex = tvm.compile(tvm_s2d.from_onnx(model), target=host_target(), relax_pipeline=pipeline.as_pass())
    got = relax.VirtualMachine(ex, tvm.cpu())["main"](tvm.runtime.tensor(x)).numpy()
    assert any(o.applied and "window" in o.reason for o in schedule.outcomes), schedule.outcomes  # the pool was scheduled
    assert compare_with_onnxruntime(model, {"x": x}, got)["max_steps"] == 0
    assert onnxruntime_reference(model, {"x": x}).shape == got.shape


def test_a_dlight_rule_that_raises_leaves_the_kernel_to_the_next(monkeypatch):
    """Regression (found by the zoo: AlexNet's compile lost every schedule to the guard): the
    ``except`` around TVM's dlight rules named ``tvm.TVMError``, which TVM 0.27 does not have, so
    any error a rule raised became an ``AttributeError``."""
    from tvm.s_tir import dlight

    from tvm_s2d.schedules.x86_reductions import schedule_dlight

    def refuse(self, func, target, tunable):
        raise tvm.error.InternalError("this rule does not take it")

    monkeypatch.setattr(dlight.cpu.GEMV, "apply", refuse)
    monkeypatch.setattr(dlight.cpu.Reduction, "apply", refuse)
    assert schedule_dlight(_interleaved, host_target()) is None


# ---- CpuLayout -------------------------------------------------------------------------------

def test_each_layout_is_priced_by_the_lanes_it_fills():
    def better(out_channels, groups, out_width, stride):  # on its own, a tie keeping NCHW
        fill = fills(out_channels, groups, out_width, stride, 16)
        return "NHWC" if fill["NHWC"] > fill["NCHW"] else "NCHW"

    assert better(32, 1, 56, 1) == "NHWC"  # 32 channels fill 2 vectors; 56 pixels vectors of 8
    assert better(12, 1, 112, 1) == "NCHW"  # DenseNet growth: 12 channels, 112 pixels
    assert better(48, 4, 56, 1) == "NCHW"  # grouped: 12 channels a group
    assert better(136, 4, 28, 1) == "NCHW"  # light ShuffleNet: 34 channels a group, vectors of 2 lanes in NHWC
    assert better(544, 4, 7, 1) == "NHWC"  # 136 channels a group: vectors of 8; 7-pixel rows one odd vector
    assert better(96, 96, 112, 2) == "NHWC"  # strided depthwise: NCHW vectors gather
    assert better(16, 16, 112, 1) == "NHWC"  # depthwise: a row load per channel in NCHW
    assert "depthwise" in describe(fills(16, 16, 112, 1, 16), 16, 16, 112, 1)
    assert better(16, 1, 112, 1) == "NCHW"  # a tie


def _resnet_block(channels=32, hw=(14, 10), batch=2):
    net = Net((batch, channels, *hw), seed=7)
    y = net.emit(relax.op.nn.relu(net.bias(net.conv(net.x, channels, 3, padding=1))))
    y = net.bias(net.conv(y, channels, 3, padding=1))
    y = net.emit(relax.op.nn.relu(relax.op.add(y, net.x)))
    y = net.emit(relax.op.nn.max_pool2d(y, 3, 2, 1))
    return net.module(net.emit(relax.op.mean(y, axis=[2, 3]))), (batch, channels, *hw)


def test_cpu_layout_makes_many_channel_convs_nhwc_and_is_exact():
    mod, shape = _resnet_block()
    target = host_target()
    x = random_tensor(RNG, shape, "float32")
    with tvm.transform.PassContext(opt_level=3):
        expected = _run(mod, x, LLVM)
        layout = CpuLayout(target)
        converted = layout(mod)
        with target:
            got = relax.VirtualMachine(tvm.compile(mod, target, relax_pipeline="s2d"), tvm.cpu())["main"](
                tvm.runtime.tensor(x)).numpy()
    assert [o.applied for o in layout.outcomes] == [True, True]
    assert "NCHW -> NHWC" in layout.outcomes[0].reason
    text = converted.script()
    assert text.count('data_layout="NHWC"') == 2 and "permute_dims" in text  # transposes at the edges only
    assert text.count("R.permute_dims(") <= 3
    assert_same(got, expected, "float32")


def test_cpu_layout_leaves_other_targets_and_narrow_convs_alone():
    mod, _ = _resnet_block()
    tvm.ir.assert_structural_equal(CpuLayout(tvm.target.Target({"kind": "c"}))(mod), mod)
    narrow, _ = _resnet_block(channels=3, hw=(16, 32))  # 3 output channels, 32-pixel rows: NCHW fills more
    layout = CpuLayout(host_target())
    tvm.ir.assert_structural_equal(layout(narrow), narrow)
    assert not any(o.applied for o in layout.outcomes) and "lanes filled" in layout.outcomes[0].reason


def _grouped(net, y, groups, k=1):
    channels = net.channels(y)
    w = net.weight((channels, channels // groups, k, k))
    return net.emit(relax.op.nn.relu(relax.op.nn.conv2d(y, relax.const(w), padding=k // 2, groups=groups)))


def test_a_conv_keeps_its_neighbours_layout_when_the_transposes_would_cost_more():
    """ShuffleNet's unit: grouped 1x1 convs (12 channels a group: NCHW fills more lanes) around a
    depthwise conv (NHWC on its own): two transposes would cost more than NHWC gains."""
    net = Net((1, 48, 16, 64), seed=9)
    y = _grouped(net, _grouped(net, _grouped(net, net.x, 4), 48, k=3), 4)
    mod = net.module(y)
    layout = CpuLayout(host_target())
    tvm.ir.assert_structural_equal(layout(mod), mod)
    depthwise = layout.outcomes[1]
    assert not depthwise.applied and "NHWC would cost more in transposes" in depthwise.reason
    dense = Net((1, 48, 16, 64), seed=9)
    layout(dense.module(_grouped(dense, dense.x, 1, k=3)))
    assert not layout.outcomes[0].applied  # a plain conv on 64-pixel rows: NCHW fills them
    narrow = Net((1, 48, 16, 28), seed=9)
    layout(narrow.module(_grouped(narrow, narrow.x, 1, k=3)))
    assert layout.outcomes[0].applied  # on 28-pixel rows (vectors of 4): worth two transposes


def test_a_pool_counts_towards_its_producers_layout():
    """A pool runs in its producer's layout; strided, its NCHW vectors gather every read."""
    from tvm_s2d.passes.cpu.layout import POOL_GATHER_PENALTY, plan_layouts

    net = Net((1, 32, 16, 64), seed=9)
    y = net.emit(relax.op.nn.max_pool2d(_grouped(net, net.x, 1, k=3), 3, 2, 1))
    mod = net.module(y)
    ((conv, layout, _),), others, barriers = plan_layouts(mod["main"], 16)
    assert others == [] and barriers == []
    reads = 32 * 8 * 32 * 9  # outputs x window
    assert conv.carried == pytest.approx({"NCHW": reads / POOL_GATHER_PENALTY, "NHWC": reads})


def _shuffle(net, y, groups=4):
    """ShuffleNet's channel shuffle: reshape, transpose, reshape."""
    n, c, h, w = (int(d) for d in y.ty.shape)
    y = net.emit(relax.op.reshape(y, (n, groups, c // groups, h, w)))
    y = net.emit(relax.op.permute_dims(y, [0, 2, 1, 3, 4]))
    return net.emit(relax.op.reshape(y, (n, c, h, w)))


def test_transposes_next_to_data_movement_are_free():
    """A transpose beside a reshape or transpose fuses into that kernel: a depthwise conv between
    two channel shuffles goes NHWC; between the model's input and output it does not pay."""
    net = Net((1, 48, 16, 64), seed=9)
    mod = net.module(_shuffle(net, _grouped(net, _shuffle(net, net.x), 48, k=3)))
    layout = CpuLayout(host_target())
    converted = layout(mod)
    assert layout.outcomes[0].applied and 'data_layout="NHWC"' in converted.script()
    x = random_tensor(RNG, (1, 48, 16, 64), "float32")
    assert_same(_run(converted, x, LLVM), _run(mod, x, LLVM), "float32")
    alone = Net((1, 48, 16, 64), seed=9)
    layout(alone.module(_grouped(alone, alone.x, 48, k=3)))
    assert not layout.outcomes[0].applied


def test_convs_cpu_layout_cannot_convert_are_named_with_a_reason():
    from helpers import conv_module

    weight = np.ones((32, 32, 3, 3), np.float32)
    as_param = conv_module((1, 32, 8, 28), weight, padding=1, weight_param=True)
    nhwc = conv_module((1, 8, 28, 32), weight.transpose(2, 3, 1, 0), padding=1, data_layout="NHWC",
                       kernel_layout="HWIO")
    layout = CpuLayout(host_target())
    for mod, reason in [(as_param, "weight is not a compile-time constant"), (nhwc, "keeps NHWC")]:
        tvm.ir.assert_structural_equal(layout(mod), mod)
        (outcome,) = layout.outcomes
        assert not outcome.applied and reason in outcome.reason


def _onnx(nodes, inits, shape, opset=13):
    """A one-input ONNX model (input ``x``, output ``y`` of the same shape) with ``inits`` as initializers."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)],
                              [numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    onnx.checker.check_model(model)
    return model


def _tuples_and_5d(case):
    """A 3x3 conv of 32 channels on 14-pixel rows (NHWC on its own) into an op TVM's
    ConvertLayout fails on: dropout's tuple (SqueezeNet, Inception), ONNX ``Sum`` (a stack of
    5-d tensors: ResNet-50, ShuffleNet), a split whose halves meet again in a concat."""
    from onnx import helper

    conv = helper.make_node("Conv", ["x", "w"], ["a"], pads=[1, 1, 1, 1])
    w = (RNG.standard_normal((32, 32, 3, 3)) / 17).astype(np.float32)
    if case == "dropout":
        return _onnx([conv, helper.make_node("Dropout", ["a"], ["y", "mask"])], {"w": w}, [1, 32, 14, 14]), "relax.nn.dropout"
    if case == "sum":
        return _onnx([conv, helper.make_node("Sum", ["a", "x"], ["y"])], {"w": w}, [1, 32, 14, 14]), "relax.broadcast_to"
    w2 = (RNG.standard_normal((16, 16, 1, 1)) / 4).astype(np.float32)
    return _onnx([conv, helper.make_node("Split", ["a", "halves"], ["a1", "a2"], axis=1),
                  helper.make_node("Conv", ["a2", "w2"], ["c"]), helper.make_node("Concat", ["a1", "c"], ["y"], axis=1)],
                 {"w": w, "w2": w2, "halves": np.array([16, 16])}, [1, 32, 14, 14]), "relax.split"


@pytest.mark.parametrize("case", ["dropout", "sum", "split"])
def test_cpu_layout_gives_convert_layout_no_tuples_or_5d_tensors(case):
    """Ops CpuLayout does not carry a layout through (here ones ConvertLayout's own rules fail
    on: ``Expected nested to match tuple``, ``Invalid SLayout``) get their inputs in NCHW, with
    an outcome naming them; the conv before them still goes NHWC, and the model compiles
    and matches ONNX Runtime."""
    from helpers import onnxruntime_reference
    from tvm_s2d.pipeline import S2DPipeline

    model, stopped = _tuples_and_5d(case)
    x = random_tensor(RNG, (1, 32, 14, 14), "float32")
    pipeline = S2DPipeline()
    with tvm.transform.PassContext(opt_level=3):
        ex = tvm.compile(tvm_s2d.from_onnx(model), target=host_target(), relax_pipeline=pipeline.as_pass())
    got = relax.VirtualMachine(ex, tvm.cpu())["main"](tvm.runtime.tensor(x)).numpy()
    assert_same(got, onnxruntime_reference(model, {"x": x}), "float32")
    outcomes = pipeline.outcomes()["CpuLayout"]
    if case == "dropout":  # at inference it is the identity (RemoveDropout): no tuple reaches the layouts
        assert pipeline.outcomes()["RemoveDropout"][0].applied and outcomes and all(o.applied for o in outcomes)
        return
    if case == "sum":  # adds (SumAsAdds): no stack of 5-d tensors reaches the layouts
        assert pipeline.outcomes()["SumAsAdds"][0].applied and outcomes and all(o.applied for o in outcomes)
        return
    assert outcomes[0].name == "a" and outcomes[0].applied
    (stop,) = [o for o in outcomes if o.reason.startswith(stopped)]
    assert not stop.applied and "keeps NCHW (a transpose before it)" in stop.reason
    assert "tuple" in stop.reason


def test_a_conv_cpu_layout_keeps_nchw_stays_nchw_after_an_nhwc_one():
    """ConvertLayout gives a conv without a layout of its own its input's: NHWC data with OIHW
    weights, against the plan. Each conv gets the layout the plan decided."""
    net = Net((1, 32, 28, 28), seed=3)
    y = net.conv(net.emit(relax.op.nn.relu(net.conv(net.x, 64, 3, padding=1))), 3, 3, padding=1)
    mod = net.module(y)
    layout = CpuLayout(host_target())
    converted = layout(mod)
    assert [o.applied for o in layout.outcomes] == [True, False]  # 64 channels NHWC; 3 channels NCHW
    convs = [b.value for b in converted["main"].body.blocks[0].bindings
             if isinstance(b.value, relax.Call) and getattr(b.value.op, "name", "") == "relax.nn.conv2d"]
    assert [(str(c.attrs.data_layout), str(c.attrs.kernel_layout)) for c in convs] == [("NHWC", "HWIO"), ("NCHW", "OIHW")]
    x = random_tensor(RNG, (1, 32, 28, 28), "float32")
    assert_same(_run(converted, x, LLVM), _run(mod, x, LLVM), "float32")


@pytest.mark.parametrize("shape,axes,tiled,bias", [((2, 16, 32, 48), [0, 3, 1, 2], True, False),  # NHWC -> NCHW
                                                   ((2, 48, 16, 32), [0, 2, 3, 1], True, False),  # NCHW -> NHWC
                                                   ((1, 7, 20, 36), [0, 3, 1, 2], False, False),  # odd: whole rows
                                                   ((1, 136, 28, 28), [0, 2, 3, 1], True, False),  # 8 x 8 tiles
                                                   ((1, 136, 28, 28), [0, 2, 3, 1], True, True)])  # with a bias, ReLU
def test_layout_transposes_run_in_tiles_and_are_exact(shape, axes, tiled, bias):
    """Regression (light_shufflenet's shuffles: bias, ReLU, NCHW -> NHWC of 136 channels, 0.14
    ms each in whole strided rows): tiles of 8 where 16 does not divide, other reads along the
    output's innermost axis (a bias) allowed."""
    from tvm_s2d.schedules import x86_injective

    def body(bb, x):
        if bias:
            b = relax.const(RNG.standard_normal((1, shape[1], 1, 1)).astype(np.float32))
            x = bb.emit(relax.op.nn.relu(relax.op.add(x, b)))
        return bb.emit(relax.op.permute_dims(x, axes))

    mod = _graph("NCHW", "float32", body, shape)
    (gv,) = [gv for gv, f in mod.functions.items() if isinstance(f, tvm.tirx.PrimFunc)]
    func = x86_injective.schedule_injective(mod[gv], 16)
    assert ("T.unroll" in func.script()) == tiled  # the source axis's lanes, unrolled inside a tile
    scheduled = mod.clone()
    scheduled[gv] = func
    x = random_tensor(RNG, shape, "float32")
    np.testing.assert_array_equal(_run(scheduled, x, host_target()), _run(mod, x, LLVM))


def test_a_scalar_operand_does_not_stop_the_transpose_tiles_and_one_kernel_error_stays_its_own():
    """Regression: a 0-d operand (a scalar the ONNX importer leaves as a tensor) made
    ``_transpose_tiles`` index an empty region; the error failed ScheduleConvs as a whole, and
    MobileNetV2 ran every kernel in TVM's naive loops (2 -> 156 ms)."""
    from tvm_s2d.schedules import x86_injective

    shape = (1, 32, 14, 16)
    bb = relax.BlockBuilder()
    x, scale = relax.Var("x", relax.TensorType(shape, "float32")), relax.Var("s", relax.TensorType((), "float32"))
    with bb.function("main", [x, scale]):
        with bb.dataflow():
            out = bb.emit_output(bb.emit(relax.op.permute_dims(relax.op.multiply(x, scale), [0, 2, 3, 1])))
        bb.emit_func_output(out)
    mod = tvm.transform.Sequential(FUSE)(bb.get())
    (gv,) = [gv for gv, f in mod.functions.items() if isinstance(f, tvm.tirx.PrimFunc)]
    assert any(len(p.ty.shape) == 0 for p in mod[gv].params if hasattr(p.ty, "shape"))  # the 0-d operand
    func = x86_injective.schedule_injective(mod[gv], 16)
    assert func is not None and "T.unroll" in func.script()
    scheduled = mod.clone()
    scheduled[gv] = func
    data, factor = random_tensor(RNG, shape, "float32"), np.array(3.0, np.float32)
    np.testing.assert_array_equal(_run(scheduled, data, host_target(), factor), _run(mod, data, LLVM, factor))


def test_a_kernel_whose_schedule_fails_keeps_tvms_lowering_and_the_others_their_schedules(monkeypatch):
    """No pass may crash a compile, and one kernel's schedule error must not cost the others
    theirs (it failed ScheduleConvs as a whole: MobileNetV2 2 -> 156 ms)."""
    from tvm_s2d.passes import ScheduleConvs
    from tvm_s2d.schedules import x86_injective

    monkeypatch.delenv("TVM_S2D_STRICT", raising=False)
    real = x86_injective.schedule_injective

    def flaky(func, lanes=8):
        if any(len(p.ty.shape) == 4 and int(p.ty.shape[1]) == 8 for p in func.params if hasattr(p.ty, "shape")):
            raise IndexError("Index out of range. size: 0, got index -1")
        return real(func, lanes)

    monkeypatch.setattr(x86_injective, "schedule_injective", flaky)
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((1, 8, 7, 16), "float32"))
    y = relax.Var("y", relax.TensorType((1, 4, 6, 32), "float32"))
    with bb.function("main", [x, y]):
        with bb.dataflow():
            t = bb.emit(relax.op.permute_dims(x, [0, 2, 1, 3]))  # fails
            u = bb.emit(relax.op.nn.relu(y))  # scheduled
            out = bb.emit_output(relax.Tuple([t, u]))
        bb.emit_func_output(out)
    mod = tvm.transform.Sequential(FUSE)(bb.get())
    rule = ScheduleConvs(host_target())
    rule(mod)
    reasons = sorted(o.reason for o in rule.outcomes)
    assert any("injective schedule failed (IndexError" in r for r in reasons), reasons
    assert any(o.applied for o in rule.outcomes), reasons


def test_rows_fuse_to_whole_vectors_only_where_the_reads_follow_the_axes():
    """Elementwise rows of 14 floats fuse with the loops before them into whole vectors (a
    bias broadcast is fine); a channel shuffle's computed indices would gather every lane
    (regression: ShuffleNetV2's 14x14 shuffles 0.07 -> 0.76 ms when fused)."""
    from tvm import s_tir

    from tvm_s2d.schedules.x86_injective import _reads_follow

    shape = (1, 116, 14, 14)

    def block_of(build):
        mod = _graph("NCHW", "float32", build, shape)
        (gv,) = [gv for gv, f in mod.functions.items() if isinstance(f, tvm.tirx.PrimFunc)]
        sch = s_tir.Schedule(mod[gv])
        blocks = sch.get_child_blocks(sch.get_sblock("root"))
        for block in blocks[:-1]:
            sch.compute_inline(block)
        return sch.get(blocks[-1])

    bias = relax.const(RNG.standard_normal((1, 116, 1, 1)).astype(np.float32))
    elementwise = block_of(lambda bb, x: bb.emit(relax.op.nn.relu(relax.op.add(x, bias))))
    shuffle = block_of(lambda bb, x: bb.emit(relax.op.reshape(relax.op.permute_dims(
        relax.op.reshape(x, (1, 2, 58, 14, 14)), [0, 2, 1, 3, 4]), shape)))
    assert _reads_follow(elementwise, 3) and _reads_follow(elementwise, 2)
    assert not _reads_follow(shuffle, 3) and _reads_follow(shuffle, 2)


def test_float_clips_between_nhwc_convs_cost_no_transposes():
    """Regression: ConvertLayout has no rule for ``clip``; ReLU6 and HardSwish's clip between
    two NHWC convs were each wrapped in a transpose pair (MobileNetV3's). Now they are
    maximum / minimum in NHWC, and the result stays exact."""
    net = Net((1, 64, 9, 9), seed=7)
    y = net.emit(relax.op.clip(net.conv(net.x, 64, 3, padding=1), 0.0, 6.0))  # ReLU6
    y = net.conv(y, 64, 1)
    gate = net.emit(relax.op.clip(net.emit(relax.op.add(y, relax.const(np.float32(3)))), 0.0, 6.0))
    y = net.emit(relax.op.multiply(y, net.emit(relax.op.divide(gate, relax.const(np.float32(6))))))  # HardSwish
    mod = net.module(net.conv(y, 64, 3, padding=1))
    x = random_tensor(RNG, (1, 64, 9, 9), "float32")
    with tvm.transform.PassContext(opt_level=3):
        expected = _run(mod, x, LLVM)
        converted = CpuLayout(host_target())(mod)
    text = converted.script()
    assert text.count('data_layout="NHWC"') == 3 and text.count("R.permute_dims(") == 2  # the graph's edges
    assert "R.clip" not in text and text.count("R.minimum(") == 2
    assert_same(_run(converted, x, LLVM), expected, "float32")
