"""The LLVM CPU conv schedules (schedules/x86.py) and the ScheduleConvs pass: every layout,
dtype, stride, dilation, padding and odd size gives the unscheduled module's result."""

import numpy as np
import pytest
import tvm
from tvm import relax

import tvm_s2d  # noqa: F401  (registers the pipeline)
from helpers import FUSE, LLVM, Net, assert_same, conv_module, ops_in, random_tensor, run
from tvm_s2d import explain
from tvm_s2d.passes import ScheduleConvs, SpaceToDepthConv2d
from tvm_s2d.targets import default_model
from tvm_s2d.schedules import x86, x86_tiles
from tvm_s2d.targets import host_target, is_cpu, vector_lanes

RNG = np.random.default_rng(5)


def _net(layout, dtype, cin, cout, hw, k, stride=1, padding=0, dilation=1, epilogue=True):
    shape = (1, cin, *hw) if layout == "NCHW" else (1, *hw, cin)
    net = Net(shape, dtype=dtype, layout=layout, seed=3)  # int8: int8 x int8 -> int32 conv
    y = net.conv(net.x, cout, k, stride=stride, padding=padding, dilation=dilation)
    if epilogue:
        y = net.bias(y)
        y = net.emit(relax.op.nn.relu(y))
    return net.module(y), shape


def _grouped_net(layout, channels, hw, k, groups, stride=1, padding=1, batch=1, dtype="float32"):
    """A grouped (``groups == channels``: depthwise) conv, bias and relu."""
    shape = (batch, channels, *hw) if layout == "NCHW" else (batch, *hw, channels)
    net = Net(shape, dtype=dtype, layout=layout, seed=4)
    w = net.weight((channels, channels // groups, k, k))
    w, kernel_layout = (w, "OIHW") if layout == "NCHW" else (w.transpose(2, 3, 0, 1), "HWOI")
    attrs = {"out_dtype": "int32"} if dtype == "int8" else {}
    y = net.emit(relax.op.nn.conv2d(net.x, relax.const(w), strides=stride, padding=padding, groups=groups,
                                    data_layout=layout, kernel_layout=kernel_layout, **attrs))
    return net.module(net.emit(relax.op.nn.relu(net.bias(y)))), shape


def _conv_funcs(mod):
    return {gv.name_hint: f for gv, f in mod.functions.items() if isinstance(f, tvm.tirx.PrimFunc) and x86.find_conv(f)}


def _compile_run(mod, x, target):
    ex = tvm.compile(mod, target=target)
    return relax.VirtualMachine(ex, tvm.cpu())["main"](tvm.runtime.tensor(x)).numpy()


def _input(shape, dtype):
    return random_tensor(RNG, shape, dtype)


CASES = [
    # layout, dtype, cin, cout, hw, k, stride, padding, dilation
    ("NCHW", "float32", 8, 8, (16, 16), 3, 1, 1, 1),
    ("NCHW", "float32", 3, 5, (13, 11), 3, 2, (0, 1, 2, 1), 1),
    ("NCHW", "float32", 4, 7, (9, 17), 3, 1, 2, 2),
    ("NCHW", "int8", 6, 12, (10, 24), 2, 1, 0, 1),
    ("NHWC", "float32", 8, 8, (16, 16), 3, 1, 1, 1),
    ("NHWC", "float32", 16, 3, (7, 13), 3, 1, 1, 1),
    ("NHWC", "float32", 3, 20, (15, 9), 5, 2, 2, 1),
    ("NHWC", "int8", 5, 9, (11, 11), 3, 1, 1, 2),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(map(str, c[:6])))
def test_scheduled_conv_matches_unscheduled(case):
    layout, dtype, cin, cout, hw, k, stride, padding, dilation = case
    mod, shape = _net(layout, dtype, cin, cout, hw, k, stride, padding, dilation)
    fused = tvm.transform.Sequential(FUSE)(mod)
    x = _input(shape, dtype)
    expected = _compile_run(fused, x, LLVM)
    target = host_target()
    schedule = ScheduleConvs(target)
    unscheduled = fused.script()
    scheduled = schedule(fused)
    assert fused.script() == unscheduled  # the caller's module is not changed in place
    (done,) = schedule.scheduled
    assert done.error is None
    assert scheduled[done.function].attrs["tirx.is_scheduled"]
    assert_same(_compile_run(scheduled, x, target), expected, dtype)


GROUPED = [
    # layout, dtype, channels, hw, k, groups, stride, batch
    ("NCHW", "float32", 32, (13, 11), 3, 32, 1, 1),  # depthwise
    ("NHWC", "float32", 32, (13, 11), 3, 32, 1, 1),
    ("NCHW", "float32", 24, (15, 17), 3, 24, 2, 2),  # strided depthwise, batch 2
    ("NHWC", "float32", 24, (15, 17), 3, 24, 2, 2),
    ("NCHW", "float32", 48, (9, 14), 1, 4, 1, 1),  # grouped 1x1 (ShuffleNet)
    ("NHWC", "float32", 48, (9, 14), 1, 4, 1, 2),
    ("NHWC", "float32", 40, (7, 9), 3, 5, 2, 1),  # 8 channels a group, strided
    ("NHWC", "int8", 16, (11, 10), 3, 16, 1, 1),
    ("NCHW", "int8", 12, (11, 10), 3, 3, 1, 2),
]


@pytest.mark.parametrize("case", GROUPED, ids=lambda c: "-".join(map(str, c)))
def test_scheduled_grouped_conv_matches_unscheduled(case):
    layout, dtype, channels, hw, k, groups, stride, batch = case
    mod, shape = _grouped_net(layout, channels, hw, k, groups, stride, padding=k // 2, batch=batch, dtype=dtype)
    fused = tvm.transform.Sequential(FUSE)(mod)
    x = _input(shape, dtype)
    expected = _compile_run(fused, x, LLVM)
    target = host_target()
    schedule = ScheduleConvs(target)
    scheduled = schedule(fused)
    (done,) = schedule.scheduled
    assert done.error is None and scheduled[done.function].attrs["tirx.is_scheduled"]
    assert_same(_compile_run(scheduled, x, target), expected, dtype)


@pytest.mark.parametrize("knobs", [x86.ConvKnobs(1, 8), x86.ConvKnobs(3, 5, False), x86.ConvKnobs(8, 16), x86.ConvKnobs(7, 3)])
@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_every_knob_is_exact(layout, knobs):
    """Tiles that divide the output and tiles that do not (predicated) alike."""
    mod, shape = _net(layout, "float32", 5, 8, (12, 16), 3, padding=1)
    fused = tvm.transform.Sequential(FUSE)(mod)
    x = _input(shape, "float32")
    expected = _compile_run(fused, x, LLVM)
    (name,) = _conv_funcs(fused)
    scheduled = ScheduleConvs(LLVM, knobs={name: knobs})(fused)
    assert_same(_compile_run(scheduled, x, LLVM), expected, "float32")


@pytest.mark.parametrize("knobs", [None, x86.ConvKnobs(3, 5, False)])
def test_large_weights_on_few_rows_run_channel_tiles_in_parallel_and_exact(monkeypatch, knobs):
    """An NHWC conv whose weights do not fit the cache and whose output has few rows runs its
    channel tiles in parallel, each over every row (``streamed``), not its rows each over all the
    weights: the same floats as the row order (the sums' order is a tile's), and the unscheduled
    conv's result; whole tiles and predicated ones."""
    mod, shape = _net("NHWC", "float32", 96, 48, (7, 9), 3, padding=1)  # 96 x 48 x 9 x 4 = 166 KB of weights
    fused = tvm.transform.Sequential(FUSE)(mod)
    (name,) = _conv_funcs(fused)
    x = _input(shape, "float32")
    expected = _compile_run(fused, x, LLVM)
    given = {name: knobs} if knobs else {}
    monkeypatch.setattr(x86, "STREAMED_BYTES", 100 * 1024)
    assert x86.streamed(x86.find_conv(fused[name]))
    channels = _compile_run(ScheduleConvs(LLVM, knobs=given)(fused), x, LLVM)
    monkeypatch.setattr(x86, "STREAMED_BYTES", 1 << 40)
    assert not x86.streamed(x86.find_conv(fused[name]))
    rows = _compile_run(ScheduleConvs(LLVM, knobs=given)(fused), x, LLVM)
    np.testing.assert_array_equal(channels, rows)
    assert_same(channels, expected, "float32")


def test_schedule_vectorizes_the_inner_axis():
    mod, _ = _net("NCHW", "float32", 8, 8, (16, 16), 3, padding=1)
    func, knobs = x86.schedule_conv(next(iter(_conv_funcs(tvm.transform.Sequential(FUSE)(mod)).values())), lanes=8)
    text = func.script()
    assert "T.vectorized" in text and "T.parallel" in text
    assert knobs == x86.default_knobs("NCHW", 8, 16, 8)
    # the epilogue (bias, relu) is written with the accumulators: no full-size intermediate
    assert "conv2d_nchw_intermediate = T.sblock_alloc_buffer((T.int64(1), T.int64(8), T.int64(16)" not in text


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_a_branching_epilogue_folds_into_the_write_back(layout):
    """SiLU after conv + bias reads ``x = conv + b`` twice (``x * sigmoid(x)``). The epilogue
    stopped where it branched and the sigmoid and product ran as loop nests of their own,
    neither parallel nor vectorized (EfficientNet-B0: its conv + SiLU kernels took 2x their
    time). Regression: one loop nest, and the unscheduled result."""
    shape = (1, 6, 11, 13) if layout == "NCHW" else (1, 11, 13, 6)
    net = Net(shape, layout=layout, seed=3)
    x = net.bias(net.conv(net.x, 20, 3, padding=1))
    y = net.emit(relax.op.multiply(x, net.emit(relax.op.sigmoid(x))))
    fused = tvm.transform.Sequential(FUSE)(net.module(y))
    (name, func), = _conv_funcs(fused).items()
    scheduled, _ = x86.schedule_conv(func, lanes=vector_lanes(host_target()))
    root = scheduled.body.block.body
    nests = root.seq if isinstance(root, tvm.tirx.SeqStmt) else [root]
    assert len(nests) == 1 and "T.sigmoid" in scheduled.script()
    data = _input(shape, "float32")
    fused_scheduled = fused.clone()
    fused_scheduled[name] = scheduled
    assert_same(_compile_run(fused_scheduled, data, host_target()), _compile_run(fused, data, LLVM), "float32")


def test_default_knobs():
    assert x86.default_knobs("NCHW", 8, 1024, 8) == x86.ConvKnobs(8, 8)
    assert x86.default_knobs("NCHW", 3, 1024, 8) == x86.ConvKnobs(3, 16)  # few channels: two vectors
    assert x86.default_knobs("NCHW", 8, 513, 8).tile_width == 9  # a divisor: one odd-length vector, no predicate
    assert x86.default_knobs("NHWC", 32, 512, 8) == x86.ConvKnobs(16, 4)  # two vectors x 4 pixels
    assert x86.default_knobs("NHWC", 3, 1024, 8) == x86.ConvKnobs(3, 8)
    # AVX-512 (16 lanes, 32 registers): up to 28 accumulators, whole power-of-two vectors
    assert x86.default_knobs("NHWC", 32, 56, 16) == x86.ConvKnobs(32, 14)
    assert x86.default_knobs("NCHW", 32, 56, 16) == x86.ConvKnobs(16, 8)  # 56 = 7 vectors of 8, not one of 28
    assert x86.default_knobs("NHWC", 24, 56, 16) == x86.ConvKnobs(24, 8)  # three vectors of 8 channels


def test_avx2_nhwc_tiles_fill_the_registers_on_odd_rows():
    """AVX2 (8 lanes, 16 registers): the tile of 1-5 channel vectors x a divisor of the row that
    does the most multiply-adds a load, at most 10 accumulators and one vector x 7 pixels.
    Regressions: two vectors x a pixel on ResNet-18's 7-wide rows (5.5 ms a 7x7x512 conv), a
    pixel on SqueezeNet's 13-wide classifier (7.0 ms -> 2.2 ms); 12-13 accumulators (4 x 3 on
    27-wide rows, 1 x 13) spilled: 60-90 GFLOP/s against 145-190 with 8-10 (session 21)."""
    assert x86.default_knobs("NHWC", 512, 7, 8) == x86.ConvKnobs(8, 7)
    assert x86.default_knobs("NHWC", 1000, 13, 8) == x86.ConvKnobs(40, 1)  # 13 is prime: CpuTileWidth pads it
    assert x86.default_knobs("NHWC", 256, 14, 8) == x86.ConvKnobs(32, 2)
    assert x86.default_knobs("NHWC", 128, 27, 8) == x86.ConvKnobs(16, 3)
    assert x86.default_knobs("NHWC", 128, 28, 8) == x86.ConvKnobs(16, 4)
    assert x86.default_knobs("NHWC", 64, 112, 8, max_pixels=4) == x86.ConvKnobs(16, 4)  # an image stem
    for channels, width in [(256, 14), (512, 56), (64, 55), (1000, 13), (24, 56)]:
        knobs = x86.default_knobs("NHWC", channels, width, 8)
        assert (knobs.tile_channels // 8) * knobs.tile_width <= x86_tiles.MAX_ACCUMULATORS


def test_avx2_nhwc_rows_are_padded_to_whole_good_tiles():
    """``padded_width``: a few more pixels where the row then takes tiles of two vectors x 4-5
    pixels (13 -> 15: 13x13x64->256 3x3 0.56 -> 0.32 ms), at most 1.2x the width; rows with good
    tiles of their own and AVX-512 (28 accumulators) keep their width."""
    assert x86_tiles.padded_width(256, 13, 8) == 15
    assert x86_tiles.padded_width(1000, 13, 8) == 14  # 5 vectors x 2 pixels (1000 channels: no 16-channel tiles)
    assert x86_tiles.padded_width(128, 27, 8) == 30
    assert x86_tiles.padded_width(64, 56, 8) == 56
    assert x86_tiles.padded_width(64, 55, 8) == 55
    assert x86_tiles.padded_width(256, 13, 16) == 13  # AVX-512
    assert x86_tiles.padded_width(20, 13, 8) == 13  # channels that are no whole vectors
    for channels, width in [(256, 13), (128, 27), (512, 7), (64, 111)]:
        assert width < x86_tiles.padded_width(channels, width, 8) <= width * x86_tiles.MAX_WIDTH_PADDING


def test_nhwc_tiles_keep_few_pixels_where_a_tap_sums_few_channels():
    assert x86.default_knobs("NHWC", 64, 112, 16, max_pixels=4) == x86.ConvKnobs(32, 4)  # an image stem
    assert x86.default_knobs("NHWC", 96, 56, 16, max_pixels=8) == x86.ConvKnobs(32, 8)  # depthwise
    mod, _ = _grouped_net("NHWC", 32, (10, 12), 3, 32)
    (func,) = _conv_funcs(tvm.transform.Sequential(FUSE)(mod)).values()
    assert x86.find_conv(func).max_pixels == 8
    stem, _ = _net("NHWC", "float32", 3, 32, (16, 16), 7, stride=2, padding=3)
    (func,) = _conv_funcs(tvm.transform.Sequential(FUSE)(stem)).values()
    assert x86.find_conv(func).max_pixels == 4


def test_vector_width_is_the_widest_whole_power_of_two():
    assert [x86.vector_width(n, 16) for n in (64, 56, 28, 36, 7)] == [16, 8, 4, 4, 1]


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_grouped_convs_are_found_with_their_groups(layout):
    for groups, expected_channels in [(4, 12 if layout == "NHWC" else 48), (48, 48), (1, 48)]:
        mod, _ = _grouped_net(layout, 48, (10, 12), 3, groups)
        (func,) = _conv_funcs(tvm.transform.Sequential(FUSE)(mod)).values()
        conv = x86.find_conv(func)
        assert (conv.groups, conv.channels) == (groups, expected_channels)


def test_functions_without_a_single_conv_are_left_alone():
    net = Net((1, 4, 8, 8))
    mod = tvm.transform.Sequential(FUSE)(net.module(net.emit(relax.op.nn.relu(net.x))))
    schedule = ScheduleConvs(LLVM)
    scheduled = schedule(mod)
    assert schedule.scheduled == [] and schedule.injective == ["relu"]  # elementwise: parallel + vectorized only
    assert scheduled["relu"].attrs["tirx.is_scheduled"] and "tirx.is_scheduled" not in mod["relu"].attrs
    other = Net((1, 4, 8, 8))
    reduction = tvm.transform.Sequential(FUSE)(other.module(other.emit(relax.op.sum(other.x, axis=[1]))))
    schedule(reduction)  # other reductions: test_x86_kernels.py
    assert schedule.scheduled == [] and schedule.injective == []
    with pytest.raises(ValueError, match="no single conv"):
        x86.schedule_conv(next(f for f in mod.functions.values() if isinstance(f, tvm.tirx.PrimFunc)))


def test_non_cpu_targets_are_left_alone():
    mod, _ = _net("NCHW", "float32", 8, 8, (16, 16), 3, padding=1)
    fused = tvm.transform.Sequential(FUSE)(mod)
    hexagon = tvm.target.Target({"kind": "llvm", "mtriple": "hexagon-unknown-linux-musl", "mcpu": "hexagonv66"})
    assert not is_cpu(hexagon) and is_cpu(LLVM)
    tvm.ir.assert_structural_equal(ScheduleConvs(hexagon)(fused), fused)


def test_pipeline_schedules_and_can_be_disabled():
    mod, shape = _net("NCHW", "float32", 8, 8, (16, 16), 3, padding=1)
    x = _input(shape, "float32")
    expected = run(mod, x)
    with_schedule = run(mod, x, pipeline="s2d")
    without = run(mod, x, pipeline="s2d", disabled=("ScheduleConvs",))
    assert_same(with_schedule, expected, "float32")
    assert_same(without, expected, "float32")


def test_vector_lanes():
    assert vector_lanes(LLVM) == 4  # generic x86-64: SSE
    assert vector_lanes(host_target(), "int8") == 4 * vector_lanes(host_target(), "float32")


def test_cpu_cost_model_rewrites_strided_convs_only():
    """On a CPU the schedule vectorizes the width: a stride-1 conv is kept as it is, a
    stride-2 stem becomes a stride-1 conv on the S2D input (measured 2.5x faster)."""
    model = default_model(host_target(), None, 1.0)
    assert model.lane_width == 1 and model.strided_width > 1
    for stride, rewritten in [(1, 0), (2, 1)]:
        net = Net((1, 3, 32, 32))
        mod = net.module(net.conv(net.x, 16, 7, stride=stride, padding=3))
        rewrite = SpaceToDepthConv2d()
        with host_target():
            out = rewrite(mod)
        assert sum(d.plan is not None for d in rewrite.decisions) == rewritten
        assert len(ops_in(out, "relax.nn.conv2d")) == 1
        x = _input((1, 3, 32, 32), "float32")
        assert_same(run(mod, x, pipeline="s2d", target=host_target()), run(mod, x), "float32")


def test_cpu_default_rewrites_nchw_image_stems_not_many_channel_strided_convs():
    """Measured (scripts/calibrate_cpu.py, NCHW): ResNet-50's 7x7/2 stem runs ~2x faster rewritten,
    its 3x3/2 convs with 128-512 channels up to 2.3x slower; the default takes only the stem.
    Where CpuLayout makes the stem NHWC (64 output channels fill the vectors), a stride gathers
    nothing and it stays as it is."""
    cases = [((1, 3, 64, 64), 64, 7, 3, True), ((1, 128, 28, 28), 128, 3, 1, False), ((1, 16, 28, 28), 32, 3, 1, False)]
    for shape, cout, k, pad, rewritten in cases:
        net = Net(shape)
        mod = net.module(net.conv(net.x, cout, k, stride=2, padding=pad))
        rewrite = SpaceToDepthConv2d()
        with host_target():
            rewrite(mod)  # the model's NCHW
        assert (rewrite.decisions[0].plan is not None) == rewritten, rewrite.decisions[0]
        if rewritten:
            with host_target():
                (row,) = explain(mod).rows  # the pipeline: CpuLayout first
            assert row["status"] == "refused" and "NHWC vectors hold channels" in row["reason"], row


def test_dynamic_batch_compiles_with_static_kernels_scheduled():
    """A dynamic batch dimension: the convs keep TVM's default kernels, the rest compiles and
    runs for any batch."""
    n = tvm.ir.prim.expr.Var("n", "int64")
    weight = np.random.default_rng(0).standard_normal((8, 3, 3, 3)).astype(np.float32)
    from helpers import conv_module

    mod = conv_module((n, 3, 16, 16), weight, padding=1)
    schedule = ScheduleConvs()
    with tvm.transform.PassContext(opt_level=3):
        ex = tvm.compile(mod, target=host_target(), relax_pipeline=s2d_pipeline_with(schedule))
    vm = relax.VirtualMachine(ex, tvm.cpu())
    assert schedule.dynamic and not schedule.scheduled
    for batch in (1, 2):
        x = _input((batch, 3, 16, 16), "float32")
        assert_same(vm["main"](tvm.runtime.tensor(x)).numpy(), run(conv_module((batch, 3, 16, 16), weight, padding=1), x),
                    "float32")


def s2d_pipeline_with(schedule):
    from tvm_s2d.pipeline import S2DPipeline

    return S2DPipeline(schedules=[schedule]).as_pass()


def test_squeeze_excite_scale_is_not_folded_into_the_conv_write_back():
    """EfficientNet's squeeze-excite: the excite conv's sigmoid scales an image. FuseOps puts
    the 1x1-pixel conv, its bias, the sigmoid and the image's multiply in one kernel; the
    multiply runs over the image, so it stays out of the conv's write-back (TVM failed inside
    ``reverse_compute_inline`` on it: ``Cannot dispatch a null expression``). SiLU (x *
    sigmoid(x)) after the squeeze conv. Compiles, and matches ONNX Runtime."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from helpers import onnxruntime_reference

    inits = {"w1": RNG.standard_normal((8, 24, 1, 1)) / 5, "b1": RNG.standard_normal(8) / 10,
             "w2": RNG.standard_normal((24, 8, 1, 1)) / 3, "b2": RNG.standard_normal(24) / 10}
    nodes = [helper.make_node("GlobalAveragePool", ["x"], ["g"]), helper.make_node("Conv", ["g", "w1", "b1"], ["s"]),
             helper.make_node("Sigmoid", ["s"], ["ss"]), helper.make_node("Mul", ["s", "ss"], ["silu"]),
             helper.make_node("Conv", ["silu", "w2", "b2"], ["e"]), helper.make_node("Sigmoid", ["e"], ["scale"]),
             helper.make_node("Mul", ["x", "scale"], ["y"])]
    graph = helper.make_graph(nodes, "se", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 24, 14, 14])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 24, 14, 14])],
                              [numpy_helper.from_array(np.asarray(v, np.float32), k) for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    onnx.checker.check_model(model)
    x = _input((1, 24, 14, 14), "float32")
    from tvm_s2d.pipeline import S2DPipeline

    pipeline = S2DPipeline()
    with tvm.transform.PassContext(opt_level=3):
        ex = tvm.compile(tvm_s2d.from_onnx(model), target=host_target(), relax_pipeline=pipeline.as_pass())
    got = relax.VirtualMachine(ex, tvm.cpu())["main"](tvm.runtime.tensor(x)).numpy()
    assert_same(got, onnxruntime_reference(model, {"x": x}), "float32")
    convs = [o for o in pipeline.outcomes()["ScheduleConvs"] if "conv" in o.reason]
    assert len(convs) == 2 and all(o.applied for o in convs)  # both convs keep their schedule


def test_weight_packing_round_trip():
    """The numpy packing of a constant is the IndexMap the kernel reads the weights through."""
    w = RNG.standard_normal((3, 2, 5, 12)).astype("float32")
    for tile in (1, 4, 6):
        mapped = x86.weight_packing(tile).map_tensor(tvm.runtime.tensor(w)).numpy()
        np.testing.assert_array_equal(x86.packed_hwio(w, tile), mapped)


def test_weights_pack_whatever_the_index_type():
    """Regression: a map of int64 indices on a kernel of int32 shapes (TE's) failed to invert
    inside TVM; the map takes the buffer's index type."""
    from tvm import te, topi

    d, w = te.placeholder((1, 7, 7, 40), name="x"), te.placeholder((1, 1, 40, 48), name="w")
    func = te.create_prim_func([d, w, topi.nn.conv2d_nhwc(d, w, 1, 0, 1)])
    packed = x86.pack_weights(func, x86.find_conv(func), x86.ConvKnobs(16, 7))
    assert packed is not None and tuple(int(v) for v in packed[0].params[1].ty.shape) == (3, 1, 1, 40, 16)


def _packed_kernels(scheduled, names):
    """The parameter shapes of the kernels ``names``."""
    return {gv.name_hint: [tuple(int(d) for d in p.ty.shape) for p in f.params]
            for gv, f in scheduled.functions.items() if gv.name_hint in names}


def test_constant_weights_are_packed_in_channel_tiles_every_call_its_own():
    """Two calls of one NHWC conv kernel (the same shapes, their own weights): both pass their
    weights packed, and the outputs are those of the unpacked build."""
    net = Net((1, 9, 11, 16), layout="NHWC", seed=6)
    y = net.emit(relax.op.nn.relu(net.bias(net.conv(net.x, 16, 3, padding=1))))
    y = net.emit(relax.op.nn.relu(net.bias(net.conv(y, 16, 3, padding=1))))
    fused = tvm.transform.Sequential(FUSE)(net.module(net.conv(y, 64, 1)))
    x = _input((1, 9, 11, 16), "float32")
    expected = _compile_run(fused, x, LLVM)
    knobs = {name: x86.ConvKnobs(8, 4) for name in _conv_funcs(fused)}
    schedule = ScheduleConvs(LLVM, knobs=knobs)
    scheduled = schedule(fused)
    kernels = _packed_kernels(scheduled, knobs)
    assert sorted(w for _, w, *_ in kernels.values()) == [(2, 3, 3, 16, 8), (8, 1, 1, 16, 8)]
    assert all("weights packed in tiles of 8 channels" in o.reason for o in schedule.outcomes if o.applied)
    assert_same(_compile_run(scheduled, x, LLVM), expected, "float32")


@pytest.mark.parametrize("why", ["parameter", "all channels", "grouped", "NCHW"])
def test_weights_stay_unpacked(why):
    """Weights given at run time, a tile of all the output channels (the same layout), grouped
    and NCHW convs keep their weights as they are, and stay exact."""
    if why == "parameter":
        w = RNG.standard_normal((3, 3, 8, 16)).astype("float32")
        mod = conv_module((1, 7, 7, 8), w, weight_param=True, padding=1, data_layout="NHWC", kernel_layout="HWIO")
        shape, args = (1, 7, 7, 8), [w]
    else:
        layout = "NCHW" if why == "NCHW" else "NHWC"
        groups = 4 if why == "grouped" else 1
        mod, shape = _grouped_net(layout, 16, (7, 7), 3, groups) if groups > 1 else _net(layout, "float32", 8, 16, (7, 7), 3, padding=1)
        args = []
    fused = tvm.transform.Sequential(FUSE)(mod)
    x = _input(shape, "float32")
    expected = relax.VirtualMachine(tvm.compile(fused, target=LLVM), tvm.cpu())["main"](
        *[tvm.runtime.tensor(a) for a in [x, *args]]).numpy()
    tile = 16 if why == "all channels" else 8
    knobs = {name: x86.ConvKnobs(tile, 7) for name in _conv_funcs(fused)}
    scheduled = ScheduleConvs(LLVM, knobs=knobs)(fused)
    assert knobs and all(len(w) == 4 for _, w, *_ in _packed_kernels(scheduled, knobs).values())
    got = relax.VirtualMachine(tvm.compile(scheduled, target=LLVM), tvm.cpu())["main"](
        *[tvm.runtime.tensor(a) for a in [x, *args]]).numpy()
    assert_same(got, expected, "float32")
