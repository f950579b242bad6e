"""``CpuTileWidth``: NHWC float convs computed on rows of whole register tiles (a wider right
padding, the extra pixels sliced off), bit-identical to the convs on their own width; the
slice and epilogue computed in the conv's kernel, per register tile; the convs it leaves."""

import numpy as np
import pytest
import tvm
from tvm import relax

from helpers import assert_same, run
from tvm_s2d.passes import CpuTileWidth
from tvm_s2d.pipeline import S2DPipeline
from tvm_s2d.schedules import x86, x86_tiles

AVX2 = tvm.target.Target({"kind": "llvm", "mcpu": "haswell"})
AVX512 = tvm.target.Target({"kind": "llvm", "mcpu": "skylake-avx512"})


def _net(size, channels, out_channels, kernel, stride=1, dilation=1, pad=None, groups=1, dtype="float32",
         residual=False, epilogue="relu"):
    """``relu(conv(x, W) + b)`` (``epilogue``: "relu", "hardswish" or None) in NHWC / HWIO (``+ x``
    when ``residual``)."""
    rng = np.random.default_rng(0)
    pad = (kernel // 2) * dilation if pad is None else pad
    weight = rng.standard_normal((kernel, kernel, channels // groups, out_channels)).astype(dtype)
    bias = rng.standard_normal(out_channels).astype(dtype)
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((1, size, size, channels), dtype))
    with bb.function("main", [x]):
        with bb.dataflow():
            y = bb.emit(relax.op.nn.conv2d(x, relax.const(weight), strides=stride, padding=pad, dilation=dilation,
                                           groups=groups, data_layout="NHWC", kernel_layout="HWIO"))
            if epilogue:
                y = bb.emit(relax.op.add(y, relax.const(bias)))
            if epilogue == "relu":
                y = bb.emit(relax.op.nn.relu(y))
            elif epilogue == "hardswish":  # a branching epilogue: x * clip(x + 3, 0, 6) / 6
                clip = relax.op.minimum(relax.op.maximum(relax.op.add(y, relax.const(3.0)), relax.const(0.0)),
                                        relax.const(6.0))
                y = bb.emit(relax.op.multiply(y, relax.op.divide(clip, relax.const(6.0))))
            if residual:
                y = bb.emit(relax.op.add(y, x))
            out = bb.emit_output(y)
        bb.emit_func_output(out)
    return bb.get()


def _applied(mod, target=AVX2):
    pass_ = CpuTileWidth(target=target)
    return pass_(mod), pass_.outcomes


def test_before_expected():
    before = _net(13, 64, 256, 3, epilogue=None)
    after, outcomes = _applied(before)
    weight = before["main"].body.blocks[0].bindings[0].value.args[1]
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((1, 13, 13, 64), "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            wide = bb.emit(relax.op.nn.conv2d(x, weight, padding=(1, 1, 1, 3), data_layout="NHWC", kernel_layout="HWIO"))
            out = bb.emit_output(bb.emit(relax.op.strided_slice(wide, axes=[2], begin=[0], end=[13])))
        bb.emit_func_output(out)
    canonical = relax.transform.CanonicalizeBindings()  # rewrite_call's trivial rebinding of the output
    tvm.ir.assert_structural_equal(canonical(after), canonical(bb.get()))
    (outcome,) = outcomes
    assert outcome.applied and "13-pixel rows computed 15 wide: tiles of 16 channels x 5 pixels" in outcome.reason


@pytest.mark.parametrize("size,channels,out_channels,kernel,stride,dilation,residual,epilogue", [
    (13, 64, 256, 3, 1, 1, False, "relu"),  # SqueezeNet's 13-wide expand convs: 13 -> 15
    (13, 512, 1000, 1, 1, 1, False, "relu"),  # its classifier: 13 -> 14, 5 vectors x 2 pixels
    (27, 32, 128, 3, 1, 1, False, None),  # 27 -> 30
    (27, 16, 128, 3, 2, 1, False, "relu"),  # stride 2: 14 -> 15
    (17, 24, 64, 3, 1, 2, False, "relu"),  # dilated: 17 -> 20
    (7, 160, 160, 1, 1, 1, True, "relu"),  # a residual add after the epilogue: 7 -> 8
    (14, 160, 960, 1, 1, 1, False, "hardswish"),  # LRASPP's 14-wide 1x1 convs: 14 -> 15
])
def test_wider_rows_are_bit_identical(size, channels, out_channels, kernel, stride, dilation, residual, epilogue):
    mod = _net(size, channels, out_channels, kernel, stride, dilation, residual=residual, epilogue=epilogue)
    _, outcomes = _applied(mod)
    assert [o.applied for o in outcomes] == [True], outcomes
    x = np.random.default_rng(1).standard_normal((1, size, size, channels)).astype(np.float32)
    off = ["CpuLayout"]  # the convs stay NHWC
    got = run(mod, x, pipeline="s2d", target=AVX2, disabled=off)
    np.testing.assert_array_equal(got, run(mod, x, pipeline="s2d", target=AVX2, disabled=[*off, "CpuTileWidth"]))
    assert_same(got, run(mod, x), "float32")  # TVM's default pipeline


@pytest.mark.parametrize("epilogue", ["relu", "hardswish", None])
def test_slice_and_epilogue_run_in_the_conv_kernel(epilogue):
    """Regression: the slice and the bias + ReLU after it ran as loop nests of their own over
    the whole output, serial and scalar (SqueezeNet's stem 0.62 -> 1.18 ms in the model); a
    branching epilogue (HardSwish: LRASPP's 14x14x160->960 1x1 0.36 -> 0.85 ms) too."""
    pipeline = S2DPipeline(rewrite=False)
    with AVX2, tvm.transform.PassContext(opt_level=3, disabled_pass=["CpuLayout"]):
        mod = pipeline.run(_net(13, 64, 256, 3, epilogue=epilogue), until="schedule")
    (func,) = [f for gv, f in mod.functions.items() if "conv2d" in gv.name_hint]
    assert func.attrs["tirx.is_scheduled"]
    root = func.body.block.body
    nests = root.seq if isinstance(root, tvm.tirx.SeqStmt) else [root]
    assert len(nests) == 1 and isinstance(nests[0], tvm.tirx.For) and nests[0].kind == tvm.tirx.ForKind.PARALLEL


@pytest.mark.parametrize("mod,target", [
    (_net(13, 64, 256, 3), AVX512),  # 28 accumulators: any row fills them
    (_net(13, 64, 64, 3, groups=4), AVX2),  # grouped convs tile otherwise
    (_net(13, 8, 8, 3, dtype="int8", epilogue=None), AVX2),
    (_net(56, 64, 64, 3), AVX2),  # 2 vectors x 4 pixels already
    (_net(13, 64, 256, 3), tvm.target.Target({"kind": "c"})),
])
def test_convs_it_leaves(mod, target):
    after, outcomes = _applied(mod, target)
    tvm.ir.assert_structural_equal(after, mod)
    assert outcomes == []


def test_the_padded_width_is_the_schedules_choice():
    """What the pass emits and what the schedule then takes agree: the padded row splits into
    whole tiles of the schedule's default knobs."""
    for channels, width in [(256, 13), (1000, 13), (128, 27), (512, 7)]:
        padded = x86_tiles.padded_width(channels, width, 8)
        assert padded % x86.default_knobs("NHWC", channels, padded, 8).tile_width == 0
