"""HexagonConvs: the integer convs of quantized models on HVX vrmpy kernels. The graph it
builds is checked bit-exact on this CPU (kernels with their plain loops), with and without the
space-to-depth rewrite, NCHW and NHWC; the Hexagon build has vrmpy; refusals say why."""


import numpy as np
import pytest
import tvm
from tvm import relax

import tvm_s2d
from helpers import LLVM, conv_module, qdq_chain, require_hexagon_tools, run
from tvm_s2d.targets import hexagon_target
from tvm_s2d.passes import HexagonConvs, SpaceToDepthConv2d
from tvm_s2d.passes.prepare import prepare_passes
from tvm_s2d.pipeline import S2DPipeline
from tvm_s2d.schedules.hexagon import PackedConv, default_mapping

HEXAGON = hexagon_target()


def _prepared(model, block=None):
    mod = tvm.transform.Sequential(prepare_passes())(tvm_s2d.from_onnx(model))
    if block is not None:
        with HEXAGON:
            rewrite = SpaceToDepthConv2d(block=block, move_cost=1000.0)
            mod = rewrite(mod)
        assert all(d.rewritten for d in rewrite.decisions)
    return mod


@pytest.mark.parametrize("mapping", [None, "lanes"])
@pytest.mark.parametrize("block", [None, 2, (1, 2)])
@pytest.mark.parametrize("strides", [(1, 1, 1), (1, 2, 1)])
def test_qdq_chain_on_vrmpy_kernels_is_bit_exact(block, strides, mapping):
    mod = _prepared(qdq_chain(1, (23, 21), "int8", strides), block)
    x = np.random.default_rng(3).integers(0, 256, (1, 8, 23, 21)).astype(np.uint8)
    expected = run(mod, x)
    knobs = None if mapping is None else (lambda signature: (mapping, 8))
    hexagon = HexagonConvs(target=HEXAGON, knobs=knobs, schedule=False)
    rewritten = hexagon(mod)
    assert len(hexagon.replaced) == 3 and hexagon.refusals == {}
    for (name, (chosen, _)), stride in zip(hexagon.mappings.items(), strides):
        if mapping is not None:
            assert chosen == mapping, name
        elif block is None:  # default_mapping: 8 output channels fill a quarter of the lanes
            assert chosen == ("width" if stride == 1 else "lanes"), name
    kernels = [gv.name_hint for gv, f in rewritten.functions.items() if isinstance(f, tvm.tirx.PrimFunc)]
    assert all(name.startswith("hvx_") for name in kernels)
    offsets = [name for name in kernels if name.endswith("_offsets")]  # one per channel-in-lanes conv with no spare lane
    layouts = [name for name in kernels if name.endswith("_layout")]  # one per width-vectorized conv
    assert len(kernels) - len(offsets) - len(layouts) == 3
    lanes = [c for f in rewritten.functions.values() if isinstance(f, tvm.tirx.PrimFunc) and (c := PackedConv.of(f))]
    assert len(lanes) == [m for m, _ in hexagon.mappings.values()].count("lanes")
    assert all(c.sums == (c.out_channels % 32 != 0) for c in lanes)  # 8 channels: the sums in a spare lane
    assert len(offsets) == sum(not c.sums for c in lanes)
    assert len(layouts) == [m for m, _ in hexagon.mappings.values()].count("width")
    np.testing.assert_array_equal(run(rewritten, x), expected)


def test_default_mapping_executes_fewer_packets():
    assert default_mapping(8, 1024, (1, 1)) == ("width", 8)  # the seed conv: 8 of 32 lanes
    assert default_mapping(32, 512, (1, 1)) == ("lanes", 8)  # its S2D form, 32 channels: same vrmpy, lanes pair better
    assert default_mapping(16, 7, (1, 1)) == ("lanes", 8)  # 7 columns fill a quarter of a width vector
    assert default_mapping(64, 112, (2, 2)) == ("lanes", 8)  # the width mapping takes stride 1 only
    # the width mapping's layout change counted (regression: MnasNet's 24x24 1x1 48 -> 16 took it,
    # 1.07x the lanes mapping's packets before its pad kernel, 1.27x with it)
    assert default_mapping(16, 24, (1, 1)) == ("lanes", 8)
    assert default_mapping(8, 48, (1, 1)) == ("width", 8)  # 8 of 32 lanes: the width mapping still
    assert default_mapping(16, 48, (1, 1), taps=9) == ("width", 8)  # a 3x3's vrmpy outweigh the layout change


def test_nhwc_integer_conv_with_zero_point_and_odd_channels():
    rng = np.random.default_rng(4)
    weight = rng.integers(-128, 128, (3, 3, 5, 7)).astype(np.int32)  # HWIO, int8 values
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((1, 13, 11, 5), "uint8"))
    with bb.function("main", [x]):
        with bb.dataflow():
            shifted = bb.emit(relax.op.subtract(relax.op.astype(x, "int32"), relax.const(np.int32(77))))
            y = bb.emit(relax.op.nn.conv2d(shifted, relax.const(weight), strides=2, padding=(1, 0, 2, 1),
                                           data_layout="NHWC", kernel_layout="HWIO", out_dtype="int32"))
            out = bb.emit_output(y)
        bb.emit_func_output(out)
    mod = bb.get()
    data = rng.integers(0, 256, (1, 13, 11, 5)).astype(np.uint8)
    hexagon = HexagonConvs(target=HEXAGON, schedule=False)
    np.testing.assert_array_equal(run(hexagon(mod), data), run(mod, data))
    assert len(hexagon.replaced) == 1


def _shifted_int_conv(rng, shape_nhwc, cout: int, padding, zero: int) -> tvm.IRModule:
    """``conv2d(astype(x, int32) - zero, W)``, NHWC uint8 ``x``, random 3x3 HWIO weights of int8
    values: the integer conv ``HexagonConvs`` takes."""
    weight = rng.integers(-128, 128, (3, 3, shape_nhwc[3], cout)).astype(np.int32)
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType(shape_nhwc, "uint8"))
    with bb.function("main", [x]):
        with bb.dataflow():
            shifted = bb.emit(relax.op.subtract(relax.op.astype(x, "int32"), relax.const(np.int32(zero))))
            out = bb.emit_output(bb.emit(relax.op.nn.conv2d(shifted, relax.const(weight), padding=padding,
                                                            data_layout="NHWC", kernel_layout="HWIO", out_dtype="int32")))
        bb.emit_func_output(out)
    return bb.get()


@pytest.mark.parametrize("channels", [48, 20, 12, 136])
def test_a_width_conv_of_any_4k_channels_gets_its_input_layout_from_a_kernel(channels):
    """The width mapping's input layout ``[N, C/4, H, W, 4]`` comes from the deal kernel for any
    4 x k channels (48 dealt as 64, the padding's planes dropped): MnasNet's 48-channel ones
    were a reshape and a 5-d transpose, TVM's scalar copy. Bit-exact (the deal's plain copy);
    136 channels (past the deal's 128) take the plain copy (``width.input_layout``)."""
    rng = np.random.default_rng(6)
    mod = _shifted_int_conv(rng, (1, 9, 40, channels), 8, padding=1, zero=3)
    hexagon = HexagonConvs(target=HEXAGON, schedule=False)
    rewritten = hexagon(mod)
    assert [m for m, _ in hexagon.mappings.values()] == ["width"]
    assert any(gv.name_hint.endswith("_layout") for gv in rewritten.functions) and \
        "axes=[0, 3, 1, 2, 4]" not in rewritten["main"].script()  # no 5-d transpose left
    data = rng.integers(0, 256, (1, 9, 40, channels)).astype(np.uint8)
    np.testing.assert_array_equal(run(rewritten, data), run(mod, data))


@pytest.mark.parametrize("channels,padding", [(8, 1), (16, (0, 2, 1, 0))])
def test_a_width_conv_pads_its_input_in_its_layout_kernel(channels, padding):
    """A width conv of 4 x 2^k channels (up to 32) on rows of 32 pixels or more takes its pad
    and its input layout from one kernel (``padded_layout``): no pad left. Bit-exact."""
    rng = np.random.default_rng(7)
    mod = _shifted_int_conv(rng, (1, 6, 37, channels), 8, padding=padding, zero=5)
    hexagon = HexagonConvs(target=HEXAGON, schedule=False)
    rewritten = hexagon(mod)
    assert [m for m, _ in hexagon.mappings.values()] == ["width"]
    assert "R.nn.pad" not in rewritten["main"].script() and any(gv.name_hint.endswith("_layout")
                                                               for gv in rewritten.functions)
    data = rng.integers(0, 256, (1, 6, 37, channels)).astype(np.uint8)
    np.testing.assert_array_equal(run(rewritten, data), run(mod, data))


def test_convs_it_cannot_take_are_left_alone_with_a_reason():
    mod = _prepared(qdq_chain(1, (12, 12), "uint8", (1,)))  # weights 0..255 with zero point 120
    hexagon = HexagonConvs(target=HEXAGON, schedule=False)
    tvm.ir.assert_structural_equal(hexagon(mod), mod)
    assert "outside int8" in next(iter(hexagon.refusals.values()))
    float_conv = conv_module((1, 4, 8, 8), np.ones((4, 4, 3, 3), np.float32), padding=1)
    hexagon(float_conv)
    assert "not an integer conv" in next(iter(hexagon.refusals.values()))
    int8 = _prepared(qdq_chain(1, (12, 12), "int8", (1,)))
    cpu = HexagonConvs(target=LLVM)
    tvm.ir.assert_structural_equal(cpu(int8), int8)  # CPU targets: nothing to do
    hexagon = HexagonConvs(target=HEXAGON, schedule=False)
    hexagon(int8)
    assert cpu.replaced == [] and hexagon.replaced == ["conv0"]


def test_the_hexagon_build_runs_the_convs_on_vrmpy():
    mod = tvm_s2d.from_onnx(qdq_chain(1, (32, 32), "int8", (1, 2, 1)))
    counts = {}
    for disabled in ((), ("HexagonConvs",)):
        with tvm.transform.PassContext(opt_level=3, disabled_pass=list(disabled)):
            ex = tvm.compile(mod, target=HEXAGON, relax_pipeline=relax.get_pipeline("s2d", block=2))
        counts[disabled] = ex.mod.imports[0].inspect_source("asm").count("vrmpy")
    assert counts[()] > 0 and counts[("HexagonConvs",)] == 0


def test_cli_compile_for_hexagon_names_the_vrmpy_convs(tmp_path, capsys):
    import onnx

    from tvm_s2d.cli import main

    onnx.save(qdq_chain(1, (16, 16), "int8", (1, 2)), tmp_path / "q.onnx")
    obj = tmp_path / "q.o"
    assert main(["compile", str(tmp_path / "q.onnx"), "--target", "hexagon", "-o", str(obj)]) == 0
    out = capsys.readouterr().out
    assert "HexagonConvs: 2 of 2 applied" in out
    # a uint8 NCHW model: NHWC inside, the layout change at its input and output left to TVM
    assert "left to TVM's scalar lowering: 2 movement kernels (transpose, transpose1)" in out
    named = [line.split(": ", 1)[1] for line in out.splitlines() if line.startswith("  HVX vrmpy kernel")]
    assert sorted(", ".join(named).split(", ")) == ["conv0", "conv1"]
    assert obj.read_bytes()[:4] == b"\x7fELF"
    assert main(["compile", str(tmp_path / "q.onnx"), "--target", "hexagon", "-o", str(tmp_path / "q.so")]) == 2
    assert "give -o NAME.o" in capsys.readouterr().err  # one line, before compiling
    from tvm_s2d.demo import demo_model

    onnx.save(demo_model(16), tmp_path / "float.onnx")  # float convs: HVX (v66) has no float
    assert main(["compile", str(tmp_path / "float.onnx"), "--target", "hexagon", "-o", str(obj)]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("left to TVM's scalar lowering")]
    assert any(line.startswith("left to TVM's scalar lowering: 5 conv kernels") for line in lines)
    assert len(lines) == len({line.split(" kernel")[0].split()[-1] for line in lines})  # one line a kind


def test_a_hexagon_tuning_log_picks_each_convs_mapping(tmp_path):
    """Records measured on the emulator name the conv they ran; the pipeline finds them for
    the convs it builds (blocks and mappings from the log)."""
    from tvm_s2d.tuning import TuningLog
    from tvm_s2d.tuner.measure import HexagonMeasurer
    from tvm_s2d.tuner.tuner import model_layers, tune_layers
    from tvm_s2d.tuning.workload import target_key

    model = qdq_chain(1, (16, 16), "int8", (1, 2))
    mod = tvm_s2d.from_onnx(model)
    log = TuningLog(tmp_path / "q.jsonl")
    found = model_layers(mod, HEXAGON)
    assert {layer.layout for layer in found} == {"NHWC"}  # as the Hexagon pipeline builds them
    tune_layers(found, HEXAGON, HexagonMeasurer(), log, trials=3, progress=lambda _: None)
    best = log.best(target_key(HEXAGON))
    assert len(best) == 2 and all(r.extra["conv"] for r in best.values())
    pipeline = S2DPipeline(tuning_log=str(log.path))
    with tvm.transform.PassContext(opt_level=3):
        tvm.compile(mod, target=HEXAGON, relax_pipeline=pipeline.as_pass())
    hexagon = pipeline.hexagon_convs
    from tvm_s2d.tuning.space import Config

    wanted = [(Config.from_json(best[layer.key].config).mapping, Config.from_json(best[layer.key].config).tile)
              for layer in found]
    assert list(hexagon.mappings.values()) == wanted


def test_the_kernels_the_pass_emits_run_exactly_under_qemu():
    """The scheduled HVX kernels of a pipeline run (width mapping for the stride-1 conv, with
    its layout kernel, channel-in-lanes for the stride-2 one, its window sums in a spare lane: 8 of
    32 channels) under qemu-hexagon equal the same kernels' plain loops on this CPU, whose graph
    the tests above check against the original model."""
    from tvm_s2d.emulator.qemu import run_kernel

    require_hexagon_tools()
    mod = _prepared(qdq_chain(1, (16, 16), "int8", (1, 2)))
    plain, hvx = HexagonConvs(target=HEXAGON, schedule=False), HexagonConvs(target=HEXAGON)
    plain_mod, hvx_mod = plain(mod), hvx(mod)
    assert [m for m, _ in hvx.mappings.values()] == ["width", "lanes"]
    rng = np.random.default_rng(8)
    calls = [v for v in relax.analysis.get_var2val(hvx_mod["main"]).values()
             if isinstance(v, relax.Call) and v.op.name == "relax.call_tir"]
    assert sorted(call.args[0].name_hint.rsplit("_", 1)[-1] for call in calls) == ["conv0", "conv1", "layout"]

    def random(ty):
        shape, dtype = [int(d) for d in ty.shape], str(ty.dtype)
        low, high = {"uint8": (0, 256), "int8": (-128, 128), "int32": (-10**6, 10**6)}[dtype]
        return rng.integers(low, high, shape).astype(dtype)

    for call in calls:
        gv, inputs = call.args[0], [random(arg.ty) for arg in call.args[1].fields]
        out_shape, out_dtype = tuple(int(d) for d in call.ty.shape), str(call.ty.dtype)
        cpu = tvm.compile(tvm.IRModule({"main": plain_mod[gv.name_hint].with_attr("global_symbol", "main")}), target=LLVM)
        expected = tvm.runtime.tensor(np.zeros(out_shape, out_dtype))
        cpu["main"](*[tvm.runtime.tensor(a) for a in inputs], expected)
        run = run_kernel(hvx_mod[gv], inputs, [(out_shape, out_dtype)], name=gv.name_hint)
        np.testing.assert_array_equal(run.outputs[0], expected.numpy())


# ---- depthwise convs -------------------------------------------------------------------------


def _depthwise_module(shape_nchw, weight, zx, padding, strides=1, layout="NCHW", groups=None):
    """``conv2d(astype(x, int32) - zx, W, groups=C)``, an integer depthwise conv as
    QDQConvToInteger writes it."""
    bb = relax.BlockBuilder()
    shape = shape_nchw if layout == "NCHW" else (shape_nchw[0], *shape_nchw[2:], shape_nchw[1])
    x = relax.Var("x", relax.TensorType(shape, "uint8"))
    kernel = weight if layout == "NCHW" else weight.transpose(2, 3, 1, 0)  # OIHW / HWIO
    with bb.function("main", [x]):
        with bb.dataflow():
            shifted = bb.emit(relax.op.subtract(relax.op.astype(x, "int32"), relax.const(np.int32(zx))))
            y = bb.emit(relax.op.nn.conv2d(shifted, relax.const(kernel), strides=strides, padding=padding,
                                           groups=groups or weight.shape[0], data_layout=layout,
                                           kernel_layout="OIHW" if layout == "NCHW" else "HWIO", out_dtype="int32"))
            out = bb.emit_output(y)
        bb.emit_func_output(out)
    return bb.get(), shape


@pytest.mark.parametrize("shape,kernel,padding,layout,strides", [((1, 8, 13, 11), 3, (1, 1, 1, 1), "NCHW", 1),
                                                                ((2, 3, 9, 7), 3, (0, 2, 1, 0), "NHWC", 1),
                                                                ((1, 16, 6, 10), 5, (2, 2, 2, 2), "NHWC", 1),
                                                                ((1, 144, 12, 12), 3, (1, 1, 1, 1), "NHWC", 2),
                                                                ((2, 24, 9, 11), 5, (2, 2, 2, 2), "NCHW", 2),
                                                                ((1, 40, 8, 7), 3, (0, 1, 1, 0), "NHWC", (1, 2))])
@pytest.mark.parametrize("low", [-128, -127])
def test_depthwise_convs_run_on_the_hvx_depthwise_kernel_bit_exact(shape, kernel, padding, layout, strides, low):
    """Weights in [-127, 127]: the kernels sum (input - 128) x weight (``DepthwiseConv.signed``) and
    the zero-point correction takes ``(zx - 128) x sum(W)``; a weight of -128: the unsigned sums."""
    from tvm_s2d.schedules.hexagon.depthwise import DepthwiseConv

    rng = np.random.default_rng(5)
    weight = rng.integers(low, 128, (shape[1], 1, kernel, kernel)).astype(np.int32)
    weight.reshape(-1)[0] = low
    mod, data_shape = _depthwise_module(shape, weight, 77, padding, strides=strides, layout=layout)
    data = rng.integers(0, 256, data_shape).astype(np.uint8)
    hexagon = HexagonConvs(target=HEXAGON, schedule=False)
    rewritten = hexagon(mod)
    np.testing.assert_array_equal(run(rewritten, data), run(mod, data))
    assert list(hexagon.mappings.values()) == [("depthwise", 0)]
    assert [o.reason for o in hexagon.outcomes] == ["HVX depthwise kernel"]
    convs = [DepthwiseConv.of(f) for f in rewritten.functions.values() if DepthwiseConv.of(f) is not None]
    assert [conv.signed for conv in convs] == [low == -127]


def test_depthwise_convs_it_cannot_take_say_why():
    rng = np.random.default_rng(6)
    hexagon = HexagonConvs(target=HEXAGON, schedule=False)
    grouped, _ = _depthwise_module((1, 66, 6, 6), rng.integers(-9, 9, (66, 2, 3, 3)).astype(np.int32), 3, 1, groups=33)
    tvm.ir.assert_structural_equal(hexagon(grouped), grouped)
    assert "grouped conv (groups=33" in next(iter(hexagon.refusals.values()))


@pytest.mark.parametrize("shape,groups,strides,layout", [((1, 8, 12, 12), 4, 1, "NCHW"), ((1, 64, 9, 7), 4, 2, "NHWC"),
                                                         ((2, 48, 5, 6), 3, 1, "NHWC")])
def test_grouped_convs_run_as_block_diagonal_dense_hvx_convs_bit_exact(shape, groups, strides, layout):
    """RegNetX's grouped convs (groups of 16 channels): the dense conv with block-diagonal
    weights (zeros between the groups) on the HVX conv kernels, exactly the grouped conv."""
    rng = np.random.default_rng(8)
    weight = rng.integers(-128, 128, (shape[1], shape[1] // groups, 3, 3)).astype(np.int32)
    mod, data_shape = _depthwise_module(shape, weight, 77, 1, strides=strides, layout=layout, groups=groups)
    data = rng.integers(0, 256, data_shape).astype(np.uint8)
    hexagon = HexagonConvs(target=HEXAGON, schedule=False)
    np.testing.assert_array_equal(run(hexagon(mod), data), run(mod, data))
    assert [o.applied for o in hexagon.outcomes] == [True]


@pytest.mark.parametrize("batch,out_hw,channels,kernel", [(1, (8, 32), 8, 3), (2, (7, 9), 3, 3), (1, (4, 16), 32, 5)])
def test_the_hvx_depthwise_kernel_is_exact_under_qemu(batch, out_hw, channels, kernel):
    require_hexagon_tools()
    from tvm_s2d.emulator.qemu import run_kernel
    from tvm_s2d.schedules.hexagon.depthwise import DepthwiseConv

    rng = np.random.default_rng(7)
    conv = DepthwiseConv(batch, out_hw, channels, (kernel, kernel))
    x = rng.integers(0, 256, conv.input_shape).astype(np.uint8)
    w = conv.pack_weight(rng.integers(-128, 128, (channels, 1, kernel, kernel)).astype(np.int8))
    expected = np.zeros(conv.output_shape, np.int64)  # each tap: the row from kx * C on, times its weights
    for ky in range(kernel):
        for kx in range(kernel):
            rows = x[:, ky : ky + out_hw[0], kx * channels : kx * channels + conv.row]
            expected += rows.astype(np.int64) * w[ky, kx, : conv.row].astype(np.int64)
    hvx = run_kernel(conv.hvx_kernel(), [x, w], [(conv.output_shape, "int32")])
    np.testing.assert_array_equal(hvx.outputs[0], expected)
    plain = tvm.compile(tvm.IRModule({"main": conv.compute()}), target="llvm")
    out = tvm.runtime.tensor(np.zeros(conv.output_shape, np.int32))
    plain(tvm.runtime.tensor(x), tvm.runtime.tensor(w), out)
    np.testing.assert_array_equal(out.numpy(), expected)


@pytest.mark.parametrize("out_hw,channels,kernel,stride,in_hw", [((5, 7), 96, 3, (2, 2), (11, 15)),
                                                                  ((4, 5), 16, 3, (2, 2), (10, 12)),
                                                                  ((3, 4), 72, 5, (2, 2), (9, 11)),
                                                                  ((2, 3), 144, 3, (1, 2), (4, 8))])
def test_the_strided_hvx_depthwise_kernel_is_exact_under_qemu(out_hw, channels, kernel, stride, in_hw):
    """A pixel at a time: the last vector's slack (channels not a multiple of 32) is overwritten
    by the next pixel's first vector; the row's slack after the last pixel is zeros."""
    require_hexagon_tools()
    from tvm_s2d.emulator.qemu import run_kernel
    from tvm_s2d.schedules.hexagon.depthwise import DepthwiseConv

    rng = np.random.default_rng(11)
    conv = DepthwiseConv(2, out_hw, channels, (kernel, kernel), stride, in_hw)
    x = rng.integers(0, 256, conv.input_shape).astype(np.uint8)
    weight = rng.integers(-128, 128, (channels, 1, kernel, kernel)).astype(np.int8)
    image = x.reshape(2, conv.input_shape[1], -1, channels).astype(np.int64)
    (oh, ow), (sh, sw) = out_hw, stride
    expected = np.zeros((2, oh, conv.row), np.int64)
    for ky in range(kernel):
        for kx in range(kernel):
            taps = image[:, ky : ky + (oh - 1) * sh + 1 : sh, kx : kx + (ow - 1) * sw + 1 : sw]
            expected[..., : ow * channels] += (taps * weight[:, 0, ky, kx]).reshape(2, oh, -1)
    w = conv.pack_weight(weight)
    hvx = run_kernel(conv.hvx_kernel(), [x, w], [(conv.output_shape, "int32")])
    np.testing.assert_array_equal(hvx.outputs[0], expected)
    plain = tvm.compile(tvm.IRModule({"main": conv.compute()}), target="llvm")
    out = tvm.runtime.tensor(np.zeros(conv.output_shape, np.int32))
    plain(tvm.runtime.tensor(x), tvm.runtime.tensor(w), out)
    np.testing.assert_array_equal(out.numpy(), expected)
    assert hvx.packets < 20 * oh * 2 * (conv.lanes // 32) * ow * kernel * kernel


@pytest.mark.parametrize("batch,out_hw,channels,kernel,stride,in_hw", [(1, (24, 24), 16, 3, (2, 2), (50, 50)),
                                                                        (2, (5, 9), 32, 5, (2, 2), (13, 21)),
                                                                        (1, (4, 13), 64, 3, (1, 2), (6, 27)),
                                                                        (1, (3, 17), 8, 4, (2, 2), (8, 36))])
def test_the_dealt_stride_2_depthwise_kernel_with_its_requantization_is_exact_under_qemu(batch, out_hw, channels, kernel,
                                                                                         stride, in_hw):
    """Column stride 2, C dividing 64: each tap's 128 inputs the even or odd pixels of 256
    input bytes (``vdeal``), the weights tiled (``fused_weight``); odd and even kernels, a row
    stride of 1, rows that are not whole groups, a batch."""
    require_hexagon_tools()
    from tvm_s2d.emulator.qemu import run_kernel
    from tvm_s2d.schedules.hexagon.depthwise import DepthwiseConv

    rng = np.random.default_rng(23)
    conv = DepthwiseConv(batch, out_hw, channels, (kernel, kernel), stride, in_hw)
    assert conv.dealt and conv.fusable
    x = rng.integers(0, 256, conv.input_shape).astype(np.uint8)
    weight = rng.integers(-128, 128, (channels, 1, kernel, kernel)).astype(np.int8)
    w = conv.fused_weight(conv.pack_weight(weight))
    pixels = x.reshape(batch, conv.input_shape[1], -1, channels).astype(np.int64)
    (sh, sw), (oh, ow) = stride, out_hw
    acc = np.zeros((batch, oh, ow, channels), np.int64)
    for ky in range(kernel):
        for kx in range(kernel):
            acc += pixels[:, ky : ky + (oh - 1) * sh + 1 : sh, kx : kx + (ow - 1) * sw + 1 : sw] * weight[:, 0, ky, kx]
    b = rng.integers(-5000, 5000, channels)
    m = rng.integers(2**30, 2**31 - 1, channels)
    r = rng.integers(6, 12, channels)
    t = ((acc + b) * m + 2**30) >> 31
    expected = np.clip(((t + ((1 << r) >> 1)) >> r) + 120, 0, 255).astype(np.uint8)
    constants = conv.requantize_constants(b, m, r, 0)
    out = [(conv.requantized_shape(), "uint8")]
    hvx = run_kernel(conv.hvx_requantized_kernel(120, 0, 255, "uint8"), [x, w, *constants], out)
    np.testing.assert_array_equal(hvx.outputs[0], expected)
    plain = tvm.compile(tvm.IRModule({"main": conv.hvx_requantized_kernel(120, 0, 255, "uint8", hvx_code=False)}),
                        target="llvm")
    got = tvm.runtime.tensor(np.zeros(conv.requantized_shape(), np.uint8))
    plain(tvm.runtime.tensor(x), tvm.runtime.tensor(w), *(tvm.runtime.tensor(c) for c in constants), got)
    np.testing.assert_array_equal(got.numpy(), expected)
    if out_hw == (24, 24):  # the per-pixel strided kernel and its requantization kernel: 17.7k + 1.6k packets
        assert hvx.packets < 9000, hvx.packets


@pytest.mark.parametrize("batch,out_hw,channels,kernel,dtype,clamp", [(1, (6, 48), 32, 3, "uint8", (0, 255)),
                                                                      (2, (5, 12), 144, 3, "uint8", (7, 255)),  # a tail
                                                                      (1, (3, 7), 576, 5, "int8", (-128, 127)),
                                                                      (1, (4, 24), 16, 3, "int8", (-100, 90)),
                                                                      (1, (3, 5), 40, 3, "uint8", (0, 255)),
                                                                      (2, (5, 9), 24, 5, "uint8", (0, 255))])
def test_the_hvx_depthwise_kernel_with_its_requantization_is_exact_under_qemu(batch, out_hw, channels, kernel, dtype, clamp):
    """The conv's groups of 128 outputs requantized in registers and stored as bytes: the same
    integers as the conv kernel followed by the requantization kernel (numpy's, here), per-channel
    constants at every lane offset (144 and 40 channels: periods of the constants of 9 and 5
    groups; rows that are not whole groups end with their last 128 outputs; blocks of 3 rows
    (3x3) and 2 (5x5) with the rows left over: 5 of 3x3, 4 of 3x3, 5 of 5x5)."""
    require_hexagon_tools()
    from tvm_s2d.emulator.qemu import run_kernel
    from tvm_s2d.schedules.hexagon.depthwise import DepthwiseConv

    rng = np.random.default_rng(17)
    conv = DepthwiseConv(batch, out_hw, channels, (kernel, kernel))
    assert conv.fusable
    x = rng.integers(0, 256, conv.input_shape).astype(np.uint8)
    w = conv.pack_weight(rng.integers(-128, 128, (channels, 1, kernel, kernel)).astype(np.int8))
    acc = np.zeros(conv.output_shape, np.int64)
    for ky in range(kernel):
        for kx in range(kernel):
            acc += x[:, ky : ky + out_hw[0], kx * channels : kx * channels + conv.row].astype(np.int64) * w[ky, kx, : conv.row]
    acc = acc[..., : out_hw[1] * channels].reshape(batch, *out_hw, channels)
    b = rng.integers(-5000, 5000, channels)
    m = rng.integers(2**30, 2**31 - 1, channels)
    r = rng.integers(6, 12, channels)
    zy = 3 if dtype == "int8" else 120
    t = ((acc + b) * m + 2**30) >> 31
    expected = np.clip(((t + ((1 << r) >> 1)) >> r) + zy, *clamp).astype(dtype)
    constants = conv.requantize_constants(b, m, r, 0)
    out = [(conv.requantized_shape(), dtype)]
    hvx = run_kernel(conv.hvx_requantized_kernel(zy, *clamp, dtype), [x, w, *constants], out)
    np.testing.assert_array_equal(hvx.outputs[0], expected)
    plain = tvm.compile(tvm.IRModule({"main": conv.hvx_requantized_kernel(zy, *clamp, dtype, hvx_code=False)}), target="llvm")
    got = tvm.runtime.tensor(np.zeros(conv.requantized_shape(), dtype))
    plain(tvm.runtime.tensor(x), tvm.runtime.tensor(w), *(tvm.runtime.tensor(c) for c in constants), got)
    np.testing.assert_array_equal(got.numpy(), expected)


@pytest.mark.parametrize("batch,out_hw,channels,kernel,fill_rows,fill", [(1, (6, 6), 240, 5, (2, 2), 131),
                                                                         (1, (3, 3), 576, 5, (2, 2), 7),  # all rows
                                                                         (2, (5, 12), 144, 3, (1, 1), 255),  # 3x3: none
                                                                         (1, (12, 12), 88, 3, (1, 0), 0),
                                                                         (1, (4, 9), 40, 5, (1, 2), 99),
                                                                         (1, (2, 5), 32, 3, (3, 3), 17),  # none: no row left
                                                                         (1, (9, 9), 32, 7, (3, 4), 60),  # bands of 3, 4
                                                                         (1, (9, 9), 32, 7, (3, 5), 60)])  # 5 below: none
@pytest.mark.parametrize("signed", [False, True])
def test_depthwise_rows_reading_only_the_pad_skip_those_taps_exactly(batch, out_hw, channels, kernel, fill_rows, fill,
                                                                     signed):
    """``border_rows``: kernel rows that read only the pad's rows (the zero point) compute no
    product; their sum, ``fill x sum(W[ky])`` a channel, is added from the bias operand's
    corrections (``border_bias``). The same bytes as the plain loops over every tap; fewer
    packets than the same kernel reading the pad (6x6x240 5x5: 20% fewer taps). ``signed``: the
    sums of (input - 128) x weight, two taps in int16 (weights in [-127, 127]), the skipped rows'
    corrections ``(fill - 128) x sum(W[ky])``."""
    require_hexagon_tools()
    from dataclasses import replace

    from tvm_s2d.emulator.qemu import run_kernel
    from tvm_s2d.schedules.hexagon.depthwise import DepthwiseConv

    rng = np.random.default_rng(23)
    plain_conv = DepthwiseConv(batch, out_hw, channels, (kernel, kernel), signed=signed)
    conv = replace(plain_conv, fill_rows=fill_rows, fill=fill)
    x = rng.integers(0, 256, conv.input_shape).astype(np.uint8)
    top, bottom = fill_rows
    x[:, :top] = fill
    x[:, x.shape[1] - bottom:] = fill
    w = conv.pack_weight(rng.integers(-127 if signed else -128, 128, (channels, 1, kernel, kernel)).astype(np.int8))
    acc = np.zeros(conv.output_shape, np.int64)
    for ky in range(kernel):
        for kx in range(kernel):
            acc += (x[:, ky : ky + out_hw[0], kx * channels : kx * channels + conv.row].astype(np.int64) - 128 * signed) \
                * w[ky, kx, : conv.row]
    acc = acc[..., : out_hw[1] * channels].reshape(batch, *out_hw, channels)
    b, m, r = rng.integers(-5000, 5000, channels), rng.integers(2**30, 2**31 - 1, channels), rng.integers(6, 12, channels)
    t = ((acc + b) * m + 2**30) >> 31
    expected = np.clip(((t + ((1 << r) >> 1)) >> r) + 120, 0, 255).astype(np.uint8)
    constants = conv.requantize_constants(b, m, r, 0)
    constants[0] = conv.border_bias(constants[0], w)
    skipping = kernel >= 5 and fill_rows != (3, 5)  # 3x3 kernels: none (their rows lose the blocks of 3)
    assert bool(conv.border_rows()) == skipping and len(constants[0]) == conv.bias_length
    out = [(conv.requantized_shape(), "uint8")]
    hvx = run_kernel(conv.hvx_requantized_kernel(120, 0, 255, "uint8"), [x, w, *constants], out)
    np.testing.assert_array_equal(hvx.outputs[0], expected)
    plain = tvm.compile(tvm.IRModule({"main": conv.hvx_requantized_kernel(120, 0, 255, "uint8", hvx_code=False)}),
                        target="llvm")
    got = tvm.runtime.tensor(np.zeros(conv.requantized_shape(), "uint8"))
    plain(tvm.runtime.tensor(x), tvm.runtime.tensor(w), *(tvm.runtime.tensor(c) for c in constants), got)
    np.testing.assert_array_equal(got.numpy(), expected)
    if skipping:
        every = run_kernel(plain_conv.hvx_requantized_kernel(120, 0, 255, "uint8"),
                           [x, w, *plain_conv.requantize_constants(b, m, r, 0)], out)
        np.testing.assert_array_equal(every.outputs[0], expected)
        assert hvx.packets < every.packets, (hvx.packets, every.packets)


@pytest.mark.parametrize("in_hw,cin,cout,kernel,stride", [((12, 12), 72, 24, 1, 1),  # 8 spare lanes, one block
                                                          ((24, 24), 16, 72, 1, 1),  # three blocks, the sums in the last
                                                          ((98, 98), 3, 16, 3, 2),  # the RGB stem: 3 channels padded to 4
                                                          ((25, 25), 8, 40, 3, 1),  # 23 columns: overlapping blocks
                                                          ((3, 3), 576, 96, 1, 1),  # no lane spare: a block of its own
                                                          ((5, 7), 20, 128, 3, 1),
                                                          ((12, 12), 88, 24, 1, 1),  # words in pairs, one block
                                                          ((22, 22), 3, 16, 7, 2)])  # taps in pairs and one alone
def test_a_lanes_conv_sums_its_windows_in_a_lane_exactly_under_qemu(in_hw, cin, cout, kernel, stride):
    """``PackedConv.sums``: the sums' lane (a spare one, or lane 0 of one more block, computed and
    not stored) has packed weights 1, its sums the window sums (padded channels with the zero
    point included, as the offsets kernel sums them), and every lane takes -128 x them: the
    conv's integers with no offsets kernel, under qemu and as plain loops."""
    require_hexagon_tools()
    from tvm_s2d.emulator.qemu import run_kernel
    from tvm_s2d.schedules.hexagon.lanes_accumulate import pairs_taps, pairs_words

    rng = np.random.default_rng(29)
    conv = PackedConv(1, in_hw, cin, cout, (kernel, kernel), (stride, stride)).summing()
    assert conv.sums and PackedConv(1, in_hw, cin, 64, (kernel, kernel)).summing().sums is False  # 2 blocks: offsets
    assert conv.weight_blocks == conv.cout_blocks + (cout % 32 == 0)
    x = rng.integers(0, 256, conv.input_shape).astype(np.uint8)
    x[..., cin:] = 77  # channels padded with the zero point
    weight = rng.integers(-128, 128, (cout, cin, kernel, kernel)).astype(np.int8)
    (oh, ow), s = conv.out_hw, stride
    expected = np.zeros((1, oh, ow, cout), np.int64)
    for ky in range(kernel):
        for kx in range(kernel):
            patch = x[:, ky : ky + (oh - 1) * s + 1 : s, kx : kx + (ow - 1) * s + 1 : s, :cin].astype(np.int64)
            expected += patch @ weight[:, :, ky, kx].T.astype(np.int64)
    w = conv.pack_weight(weight)
    hvx = run_kernel(conv.hvx_kernel(8), [x, w], [(conv.output_shape, "int32")])
    np.testing.assert_array_equal(hvx.outputs[0].reshape(1, oh, ow, -1)[..., :cout], expected)
    paired = {((24, 24), 16): "words", ((12, 12), 72): "words", ((12, 12), 88): "words", ((98, 98), 3): "taps",
              ((22, 22), 3): "taps", ((3, 3), 576): "words"}.get((in_hw, cin))  # (3 columns: lanes_flat's kernel)
    assert (pairs_words(conv), pairs_taps(conv)) == (paired == "words", paired == "taps")
    if in_hw == (98, 98):  # regression: a word a load, two memory operations a packet: 14,540 packets
        assert hvx.packets < 14200, hvx.packets  # 13,962
    plain = tvm.compile(tvm.IRModule({"main": conv.compute()}), target="llvm")
    out = tvm.runtime.tensor(np.zeros(conv.output_shape, np.int32))
    plain(tvm.runtime.tensor(x), tvm.runtime.tensor(w), out)
    np.testing.assert_array_equal(out.numpy(), hvx.outputs[0])
    assert PackedConv.of(conv.tagged(conv.compute())) == conv


def test_lanes_convs_pair_their_word_loads_where_it_was_measured_to_pay():
    """``lanes.pairing``: a pixel's channel words two a load in ``summing_vrmpy`` with 3 lane
    blocks or more, or one block of 6 pixels or more; a one-word conv of even column stride and
    input width its taps in pairs. Regressions: SqueezeNet's 23-column 128 -> 16 squeeze (blocks
    of 4) ran 12,557 -> 13,894 packets paired; two blocks (6x6 120 -> 48) 1,436 -> 1,687."""
    from tvm_s2d.schedules.hexagon.lanes import block_pixels, overlapping_block
    from tvm_s2d.schedules.hexagon.lanes_accumulate import pairing

    def paired(in_hw, cin, cout, kernel=1, stride=1):
        conv = PackedConv(1, in_hw, cin, cout, (kernel, kernel), (stride, stride)).summing()
        width = conv.out_hw[1]
        return pairing(conv, overlapping_block(width, 8) or block_pixels(width, 8))

    assert paired((24, 24), 16, 72) == "words" and paired((6, 6), 48, 144) == "words"  # 3 and 5 blocks
    assert paired((12, 12), 88, 24) == "words"  # one block, blocks of 12 pixels
    assert paired((23, 23), 128, 16) is None  # one block, blocks of 4
    assert paired((6, 6), 120, 48) is None and paired((24, 24), 16, 16) is None  # two blocks; 4 words
    assert paired((98, 98), 4, 16, 3, 2) == "taps" and paired((97, 97), 4, 16, 3, 2) is None  # odd width


def test_a_conv_sums_its_windows_in_a_block_of_its_own_only_where_that_block_is_small():
    """Regression: ResNet-18's 12x12x128 3x3 convs summing their windows in one more lane block
    ran 124.5k packets against 100.3k with the offsets kernel (ResNet-18 1.76M -> 1.90M); a 1x1
    conv on a small map still does (its 6x6 64 -> 128 downsample: 2.7k -> 2.0k)."""
    assert PackedConv(1, (14, 14), 128, 128, (3, 3)).summing().sums is False
    assert PackedConv(1, (12, 12), 64, 128, (1, 1), (2, 2)).summing().sums
    assert PackedConv(1, (14, 14), 128, 120, (3, 3)).summing().sums  # a spare lane costs no vrmpy
