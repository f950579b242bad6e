"""Integer convs of quantized models on the CPU's dot products, AVX-512 VNNI or AVX2
(``CpuIntegerConvs``, the kernel and its schedule in ``schedules/x86_int8.py``; the tests run the
kind this CPU has): the same integers as the build without it, and the ONNX
semantics (ONNX Runtime, optimizations off), on odd sizes, strides, paddings, dilations, int8 and
uint8 activations, input channels not a multiple of 4 and widths no register tile divides; the
convs it does not take keep today's path with a reason."""

import re

import numpy as np
import onnx
import pytest
import tvm
from onnx import TensorProto, helper, numpy_helper
from tvm import relax

import tvm_s2d
from helpers import onnxruntime_reference, run
from tvm_s2d.passes.quantized.integer import PASS_NAME as FLOAT_EPILOGUE
from tvm_s2d.pipeline import S2DPipeline
from tvm_s2d.schedules.x86_int8 import AVX2, VNNI, VnniKnobs, default_vnni_knobs, dot_kind, has_vnni
from tvm_s2d.targets import host_target

HOST = host_target()
KIND = dot_kind(HOST)
needs_dot = pytest.mark.skipif(KIND is None, reason="this CPU has neither AVX-512 VNNI nor AVX2")
INTRINSICS = {"VNNI": "llvm.x86.avx512.vpdpbusd.512", "AVX2": "llvm.x86.avx2.pmadd.wd"}


def qdq_convs(in_ch=12, hw=(13, 11), convs=((32, 3, 1, 1, 1),), act="uint8", weight="int8", groups=1, seed=0):
    """A chain of QDQ convs + ReLU; each conv ``(out channels, kernel, stride, pad, dilation)``;
    ``act`` the activations' type (with zero points), ``weight`` int8 per channel (zero point 0)
    or uint8 per tensor (zero point 120)."""
    rng = np.random.default_rng(seed)
    inits, nodes = [], []
    tensor_type = TensorProto.UINT8 if act == "uint8" else TensorProto.INT8
    zero = (lambda v: np.array(v, np.uint8)) if act == "uint8" else (lambda v: np.array(v - 128, np.int8))

    def const(name, value):
        inits.append(numpy_helper.from_array(value, name))
        return name

    const("s_in", np.array(0.05, np.float32))
    const("z_in", zero(131))
    src, scale, zp, channels, size = "x", "s_in", "z_in", in_ch, list(hw)
    for i, (out_ch, k, stride, pad, dilation) in enumerate(convs):
        g = groups if i == 0 else 1
        shape = (out_ch, channels // g, k, k)
        if weight == "int8":
            const(f"w{i}", rng.integers(-128, 128, shape).astype(np.int8))
            const(f"ws{i}", (rng.random(out_ch) * 0.004 + 0.0005).astype(np.float32))
            const(f"wz{i}", np.zeros(out_ch, np.int8))
        else:
            const(f"w{i}", rng.integers(0, 256, shape).astype(np.uint8))
            const(f"ws{i}", np.array(0.002, np.float32))
            const(f"wz{i}", np.array(120, np.uint8))
        const(f"b{i}", rng.standard_normal(out_ch).astype(np.float32))
        const(f"s{i}", np.array(0.1 + 0.05 * i, np.float32))
        const(f"z{i}", zero(90 + 20 * i))
        nodes += [
            helper.make_node("DequantizeLinear", [src, scale, zp], [f"xf{i}"]),
            helper.make_node("DequantizeLinear", [f"w{i}", f"ws{i}", f"wz{i}"], [f"wf{i}"], axis=0),
            helper.make_node("Conv", [f"xf{i}", f"wf{i}", f"b{i}"], [f"y{i}"], pads=[pad] * 4, strides=[stride] * 2,
                             dilations=[dilation] * 2, group=g, name=f"conv{i}"),
            helper.make_node("Relu", [f"y{i}"], [f"r{i}"]),
            helper.make_node("QuantizeLinear", [f"r{i}", f"s{i}", f"z{i}"], [f"q{i}"]),
        ]
        src, scale, zp, channels = f"q{i}", f"s{i}", f"z{i}", out_ch
        size = [(d + 2 * pad - dilation * (k - 1) - 1) // stride + 1 for d in size]
    graph = helper.make_graph(
        nodes, "qdq", [helper.make_tensor_value_info("x", tensor_type, [1, in_ch, *hw])],
        [helper.make_tensor_value_info(src, tensor_type, [1, channels, *size])], initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    return model


def _input(model, act, seed=1):
    shape = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    info = np.iinfo(act)
    return np.random.default_rng(seed).integers(info.min, info.max + 1, shape).astype(act)


def _outcomes(mod, disabled=()):
    pipeline = S2DPipeline()
    with HOST, tvm.transform.PassContext(opt_level=3, disabled_pass=list(disabled)):
        pipeline.run(mod, until="schedule")
    return pipeline.outcomes()


CASES = [  # (input channels, size, convs, activations)
    (12, (13, 11), ((32, 3, 1, 1, 1), (16, 1, 1, 0, 1)), "uint8"),
    (3, (17, 15), ((64, 7, 2, 3, 1),), "uint8"),  # an image stem: 3 channels padded to 4
    (16, (12, 23), ((48, 3, 2, 0, 1), (32, 3, 1, 2, 2)), "int8"),  # stride 2 unpadded, dilation 2, int8 activations
    (20, (9, 47), ((16, 5, 1, 2, 1),), "uint8"),  # 47 wide: the tile does not divide it
    (8, (6, 5), ((40, 1, 1, 0, 1), (1000, 1, 1, 0, 1)), "uint8"),  # 40, 1000 channels: padded to whole vectors
    (1, (11, 13), ((24, 5, 1, 2, 1),), "int8"),  # one channel: a row's 5 taps one reduction (flat), int8
    (3, (15, 17), ((16, 3, 2, 1, 1), (8, 3, 1, 1, 1)), "uint8"),  # an RGB 3x3/2 stem flat, odd sizes
]


@needs_dot
@pytest.mark.parametrize("in_ch,hw,convs,act", CASES)
def test_integer_kernels_compute_the_same_integers(in_ch, hw, convs, act):
    model = qdq_convs(in_ch, hw, convs, act)
    mod = tvm_s2d.from_onnx(model)
    outcomes = _outcomes(mod)
    assert [o.applied for o in outcomes["CpuIntegerConvs"]] == [True] * len(convs), outcomes["CpuIntegerConvs"]
    kernels = [o for o in outcomes["ScheduleConvs"] if f"{KIND.name} conv schedule" in o.reason]
    assert len(kernels) == len(convs) and all(o.applied for o in kernels), outcomes["ScheduleConvs"]
    flat = [o for o in outcomes["CpuIntegerConvs"] if "a row's taps one reduction" in o.reason]
    assert len(flat) == (1 if in_ch % KIND.ic_block and convs[0][1] > 1 else 0), outcomes["CpuIntegerConvs"]
    x = _input(model, act)
    new = run(mod, x, pipeline="s2d", target=HOST)
    old = run(mod, x, pipeline="s2d", target=HOST, disabled=["CpuIntegerConvs"])
    np.testing.assert_array_equal(new, old)  # bit-exact against today's integer convs
    # with the float epilogue the integer convs compute the ONNX semantics exactly
    reference = onnxruntime_reference(model, {"x": x})
    np.testing.assert_array_equal(run(mod, x, pipeline="s2d", target=HOST, disabled=[FLOAT_EPILOGUE]), reference)


ROW_TILES = {"VNNI": ["2x16 channels x 4x3 pixels", "4x16 channels x 6 pixels"],  # 7 rows (prime): one a tile
             "AVX2": ["1x8 channels x 2x3 pixels", "2x8 channels x 3 pixels"]}  # 10 accumulators


@needs_dot
def test_tiles_of_rows_compute_the_same_integers():
    """Large weights on small images (tiles of several rows, channel tiles in parallel); ONNX
    Runtime sums 1152 products a value in float32, so against it up to a step off."""
    from tvm_s2d.checks import compare_with_onnxruntime

    model = qdq_convs(128, (7, 6), ((256, 3, 1, 1, 1), (512, 3, 2, 1, 1)), "int8")
    mod = tvm_s2d.from_onnx(model)
    tiles = [o.reason for o in _outcomes(mod)["ScheduleConvs"] if f"{KIND.name} conv schedule" in o.reason]
    assert sorted(t.split("(")[1].split(",")[0] for t in tiles) == ROW_TILES[KIND.name], tiles
    x = _input(model, "int8")
    new = run(mod, x, pipeline="s2d", target=HOST)
    np.testing.assert_array_equal(new, run(mod, x, pipeline="s2d", target=HOST, disabled=["CpuIntegerConvs"]))
    assert compare_with_onnxruntime(model, {"x": x}, new)["max_steps"] <= 1


@needs_dot
def test_the_kernel_calls_the_dot_product_instruction():
    mod = tvm_s2d.from_onnx(qdq_convs())
    with HOST, tvm.transform.PassContext(opt_level=3):
        lowered = S2DPipeline().run(mod, until="schedule")
    kernels = [f.script() for _, f in lowered.functions_items() if isinstance(f, tvm.tirx.PrimFunc)]
    assert any(INTRINSICS[KIND.name] in k for k in kernels)


@needs_dot
def test_convs_the_vnni_kernel_does_not_take_keep_their_path_with_a_reason():
    # grouped first conv; uint8 weights whose zero point leaves int8 (Wq - 120 reaches 135)
    reasons = {}
    for model in (qdq_convs(16, (9, 9), ((32, 3, 1, 1, 1),), groups=2),
                  qdq_convs(16, (9, 9), ((32, 3, 1, 1, 1),), weight="uint8")):
        mod = tvm_s2d.from_onnx(model)
        (outcome,) = _outcomes(mod)["CpuIntegerConvs"]
        assert not outcome.applied
        reasons[outcome.reason.split(":")[0].split(",")[0]] = outcome
        x = _input(model, "uint8")
        np.testing.assert_array_equal(run(mod, x, pipeline="s2d", target=HOST, disabled=[FLOAT_EPILOGUE]),
                                      onnxruntime_reference(model, {"x": x}))
    assert any("grouped" in r for r in reasons), reasons
    assert any("outside int8" in o.reason for o in reasons.values()), reasons


def test_each_target_gets_its_dot_product_kernel_or_keeps_todays_integer_convs():
    mod = tvm_s2d.from_onnx(qdq_convs())
    for cpu, reason in ((None, "neither AVX-512 VNNI nor AVX2"), ("skylake-avx512", "AVX2 kernel"),
                        ("znver3", "AVX2 kernel"), ("cascadelake", "VNNI kernel")):
        pipeline = S2DPipeline()
        with tvm.target.Target({"kind": "llvm", **({"mcpu": cpu} if cpu else {})}), tvm.transform.PassContext(opt_level=3):
            pipeline.run(mod, until="cpu")
        (outcome,) = pipeline.outcomes()["CpuIntegerConvs"]
        assert outcome.applied == (cpu is not None) and reason in outcome.reason, (cpu, outcome)
    assert has_vnni(tvm.target.Target({"kind": "llvm", "mcpu": "cascadelake"}))
    assert not has_vnni(tvm.target.Target({"kind": "llvm", "mcpu": "znver3"}))


def test_register_tiles_fill_the_accumulators():
    assert default_vnni_knobs(64, 24) == default_vnni_knobs(256, 48)  # 4 vectors x 6 pixels
    assert default_vnni_knobs(64, 24).tile_vectors * default_vnni_knobs(64, 24).tile_width == 24
    assert default_vnni_knobs(32, 22).tile_width == 11  # 2 vectors x 11 pixels (a divisor)
    assert default_vnni_knobs(16, 47).tile_width == 24  # no good divisor: the width rounds up to whole tiles
    # weights streamed from beyond L2: tiles of whole rows of a small image, each weight read once a tile
    assert default_vnni_knobs(512, 3, 3, 3 * 3 * 512 * 512) == VnniKnobs(2, 3, 3)  # 18 accumulators, 9 pixels
    assert default_vnni_knobs(256, 6, 6, 3 * 3 * 256 * 256) == VnniKnobs(1, 6, 3)
    assert default_vnni_knobs(256, 6, 6, 3 * 3 * 64 * 256) == VnniKnobs(4, 6)  # weights that stay in L2
    assert default_vnni_knobs(256, 24, 24, 3 * 3 * 256 * 256).tile_rows == 1  # rows fill the tile already
    # AVX2: at most 2 vectors of 8 channels, 10 accumulators (LLVM unrolls the reduction by 2: 12 spilled)
    assert default_vnni_knobs(64, 56, kind=AVX2) == VnniKnobs(2, 4)
    assert default_vnni_knobs(64, 55, kind=AVX2) == VnniKnobs(2, 5)
    assert default_vnni_knobs(8, 30, kind=AVX2) == VnniKnobs(1, 10)
    assert default_vnni_knobs(512, 3, 3, 3 * 3 * 512 * 512 * 2, AVX2) == VnniKnobs(1, 3, 3)
    assert VNNI.oc_block * VNNI.ic_block == 64 and AVX2.oc_block * AVX2.ic_block == 16  # bytes / int16s a vector


@pytest.mark.parametrize("cpu", ["icelake-server", "haswell"])  # VNNI, AVX2
def test_the_kernel_is_bit_exact_without_the_pipeline(cpu):
    """The Relax pass on a module of its own (no VNNI or AVX2 needed to lower it: the kernel's
    plain loops)."""
    from tvm_s2d.passes import CpuIntegerConvs

    model = qdq_convs(6, (7, 9), ((16, 3, 2, 1, 1),))
    mod = tvm_s2d.from_onnx(model)
    x = _input(model, "uint8")
    with HOST, tvm.transform.PassContext(opt_level=3):
        before = S2DPipeline(schedules=[]).run(mod, until="rewrite")
        after = CpuIntegerConvs(target=tvm.target.Target({"kind": "llvm", "mcpu": cpu}))(before)
    outs = []
    for m in (before, after):
        ex = tvm.compile(m, target=tvm.target.Target({"kind": "llvm"}))
        outs.append(relax.VirtualMachine(ex, tvm.cpu())["main"](tvm.runtime.tensor(x)).numpy())
    assert "conv2d_vnni" in [gv.name_hint for gv in after.get_global_vars()]
    np.testing.assert_array_equal(outs[0], outs[1])


@needs_dot
def test_a_kernel_schedule_that_fails_is_a_refusal_not_a_failed_compile(tmp_path):
    """Regression (the property test on CI): one channel in and out, 3x3 stride 2 padded on top
    only, a 1x1 output; the schedule's ``vectorize`` raised a ScheduleError, and its handler
    named an exception TVM 0.27 does not have, so the compile failed."""
    from tvm_s2d.quantize import quantize_qdq

    inits = [numpy_helper.from_array(np.array([0.12573022], np.float32).reshape(1, 1, 1, 1), "c1"),
             numpy_helper.from_array(np.array([-0.04403495, 0.21347421, 0.03496671, -0.17855646, 0.12053169,
                                               0.4346667, 0.31569365, -0.23457842, -0.42180717],
                                              np.float32).reshape(1, 1, 3, 3), "c4")]
    nodes = [helper.make_node("Conv", ["x", "c1"], ["conv2"], kernel_shape=[1, 1]),
             helper.make_node("AveragePool", ["conv2"], ["pool"], kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("Conv", ["pool", "c4"], ["y"], kernel_shape=[3, 3], pads=[1, 0, 0, 0], strides=[2, 2])]
    graph = helper.make_graph(nodes, "random", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 5, 6])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, 1, 1])], inits)
    model = onnx.load(quantize_qdq(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]),
                                   tmp_path / "q.onnx"))
    mod = tvm_s2d.from_onnx(model)
    # with VNNI the integer kernel's schedule fails; on AVX2 the conv stays NCHW (8 lanes) and the float
    # path's conv schedule fails the same way
    failed = [o for o in _outcomes(mod)["ScheduleConvs"] if "conv schedule failed" in o.reason]
    assert failed and not any(o.applied for o in failed)
    x = np.random.default_rng(0).standard_normal((1, 1, 5, 6)).astype(np.float32)
    from tvm_s2d.checks import compare_with_onnxruntime

    assert compare_with_onnxruntime(model, {"x": x}, run(mod, x, pipeline="s2d", target=HOST))["max_steps"] <= 1


@needs_dot
def test_a_quantized_residual_add_folds_into_the_kernels_write_back(tmp_path):
    """Regression (MobileNetV2 int8, scripts/profile_cpu.py): the residual operand's
    dequantization (cast, subtract, multiply) ran as whole loop nests after the conv, so the
    epilogue stopped at the add and the requantization after it ran serial and scalar: 13x the
    time of the same conv without the add. Now the kernel is the conv and its write-back."""
    from tvm_s2d.checks import compare_with_onnxruntime
    from tvm_s2d.quantize import quantize_qdq

    rng = np.random.default_rng(3)
    inits = [numpy_helper.from_array((rng.standard_normal((32, 32, k, k)) * 0.2 / k).astype(np.float32), f"w{k}")
             for k in (1, 3)] + [numpy_helper.from_array(rng.standard_normal(32).astype(np.float32), "b")]
    nodes = [helper.make_node("Conv", ["x", "w3", "b"], ["a"], kernel_shape=[3, 3], pads=[1] * 4),
             helper.make_node("Relu", ["a"], ["r"]),
             helper.make_node("Conv", ["r", "w1", "b"], ["c"], kernel_shape=[1, 1]),
             helper.make_node("Add", ["c", "r"], ["y"])]
    graph = helper.make_graph(nodes, "residual", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 32, 12, 11])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 32, 12, 11])], inits)
    model = onnx.load(quantize_qdq(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]),
                                   tmp_path / "q.onnx"))
    mod = tvm_s2d.from_onnx(model)
    with HOST, tvm.transform.PassContext(opt_level=3):
        lowered = S2DPipeline().run(mod, until="schedule")
    kernels = [f.script() for _, f in lowered.functions_items() if isinstance(f, tvm.tirx.PrimFunc)]
    kernels = [k for k in kernels if INTRINSICS[KIND.name] in k]
    assert len(kernels) == 2 and any(k.count('"uint8"') >= 3 for k in kernels)  # one reads the residual too
    for kernel in kernels:
        blocks = set(re.findall(r'T\.sblock\("(\w+)"\)', kernel))
        assert blocks == {"root", "pad_temp", "conv2d_nhwc_vnni_init", "conv2d_nhwc_vnni_update_o",
                          "conv2d_nhwc_vnni_out"}, blocks
    x = np.random.default_rng(0).standard_normal((1, 32, 12, 11)).astype(np.float32)
    got = run(mod, x, pipeline="s2d", target=HOST)
    np.testing.assert_array_equal(got, run(mod, x, pipeline="s2d", target=HOST, disabled=["CpuIntegerConvs"]))
    assert compare_with_onnxruntime(model, {"x": x}, got)["max_steps"] <= 1
