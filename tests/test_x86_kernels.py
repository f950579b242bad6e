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
from tvm_s2d.passes.cpu_layout import describe, fills
from tvm_s2d.schedules.x86_reductions import schedule_window
from tvm_s2d.targets import host_target

RNG = np.random.default_rng(11)


def _run(mod, x, target):
    ex = tvm.compile(mod, target=target)
    out = relax.VirtualMachine(ex, tvm.cpu())["main"](tvm.runtime.tensor(x))
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
    assert done["softmax"].applied and "dlight" in done["softmax"].reason
    assert all(o.applied for o in schedule.outcomes)  # nothing left to TVM's default lowering
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


# ---- CpuLayout -------------------------------------------------------------------------------

def test_each_layout_is_priced_by_the_lanes_it_fills():
    def better(out_channels, groups, out_width, stride):  # on its own, a tie keeping NCHW
        fill = fills(out_channels, groups, out_width, stride, 16)
        return "NHWC" if fill["NHWC"] > fill["NCHW"] else "NCHW"

    assert better(32, 1, 56, 1) == "NHWC"  # 32 channels fill 2 vectors; 56 pixels vectors of 8
    assert better(12, 1, 112, 1) == "NCHW"  # DenseNet growth: 12 channels, 112 pixels
    assert better(48, 4, 56, 1) == "NCHW"  # grouped: 12 channels a group
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
    from tvm_s2d.passes.cpu_layout import POOL_GATHER_PENALTY, _plan

    net = Net((1, 32, 16, 64), seed=9)
    y = net.emit(relax.op.nn.max_pool2d(_grouped(net, net.x, 1, k=3), 3, 2, 1))
    mod = net.module(y)
    ((conv, layout, _),), others = _plan(mod["main"], 16)
    assert others == []
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


@pytest.mark.parametrize("shape,axes,tiled", [((2, 16, 32, 48), [0, 3, 1, 2], True),  # NHWC -> NCHW
                                              ((2, 48, 16, 32), [0, 2, 3, 1], True),  # NCHW -> NHWC
                                              ((1, 7, 20, 36), [0, 3, 1, 2], False)])  # odd sizes: whole rows
def test_layout_transposes_run_in_tiles_and_are_exact(shape, axes, tiled):
    from tvm_s2d.schedules import x86

    mod = _graph("NCHW", "float32", lambda bb, x: bb.emit(relax.op.permute_dims(x, axes)), shape)
    (gv,) = [gv for gv, f in mod.functions.items() if isinstance(f, tvm.tirx.PrimFunc)]
    func = x86.schedule_injective(mod[gv], 16)
    assert ("T.unroll" in func.script()) == tiled  # the source axis's lanes, unrolled inside a tile
    scheduled = mod.clone()
    scheduled[gv] = func
    x = random_tensor(RNG, shape, "float32")
    np.testing.assert_array_equal(_run(scheduled, x, host_target()), _run(mod, x, LLVM))
