"""SpaceToDepthConv2d: exact IR, exact numbers through tvm.compile, and every refusal."""

import numpy as np
import pytest
import tvm
from hypothesis import given, settings
from hypothesis import strategies as st
from tvm import relax

from helpers import assert_same, conv_module, ops_in, random_tensor, run
from tvm_s2d import SpaceToDepthConv2d, explain
from tvm_s2d.geometry import Conv2dSpec, conv2d_nchw, oihw_to_kernel

RNG = np.random.default_rng(7)


def test_before_expected_ir():
    weight = RNG.standard_normal((8, 8, 3, 3)).astype(np.float32)
    before = conv_module((1, 8, 6, 6), weight, padding=(1, 1, 1, 1))
    folded = Conv2dSpec(1, 8, 8, (6, 6), (3, 3), padding=(1, 1, 1, 1)).plan(2).fold_weight(weight)

    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((1, 8, 6, 6), "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            v = bb.emit(relax.op.nn.pad(x, [0, 0, 0, 0, 1, 1, 1, 1]))
            v = bb.emit(relax.op.reshape(v, (1, 8, 4, 2, 4, 2)))
            v = bb.emit(relax.op.permute_dims(v, [0, 3, 5, 1, 2, 4]))
            v = bb.emit(relax.op.reshape(v, (1, 32, 4, 4)))
            v = bb.emit(relax.op.nn.conv2d(v, relax.const(folded), padding=(0, 0, 0, 0)))
            v = bb.emit(relax.op.reshape(v, (1, 2, 2, 8, 3, 3)))
            v = bb.emit(relax.op.permute_dims(v, [0, 3, 4, 1, 5, 2]))
            v = bb.emit(relax.op.reshape(v, (1, 8, 6, 6)))
            out = bb.emit_output(v)
        bb.emit_func_output(out)
    expected = bb.get()

    after = SpaceToDepthConv2d(block=2)(before)
    tvm.ir.assert_structural_equal(after, expected)
    x_np = RNG.standard_normal((1, 8, 6, 6)).astype(np.float32)
    assert_same(run(after, x_np), conv2d_nchw(x_np, weight, padding=(1, 1, 1, 1)).astype(np.float32), "float32")


def test_folded_weight_is_a_constant_so_nothing_is_left_to_run_time():
    weight = RNG.standard_normal((8, 8, 3, 3)).astype(np.float32)
    after = SpaceToDepthConv2d(block=2)(conv_module((1, 8, 16, 16), weight, padding=(1, 1, 1, 1)))
    (conv,) = ops_in(after)
    assert isinstance(conv.args[1], tvm.ir.GenericConst)
    assert conv.args[1].value.numpy().shape == (32, 32, 2, 2)
    assert len(ops_in(after, "relax.permute_dims")) == 2  # S2D of the input, D2S of the output


LAYOUTS = [("NCHW", "OIHW"), ("NHWC", "HWIO"), ("NHWC", "OHWI")]
CASES = [
    # (data hw, kernel, strides, padding, dilation, block)
    ((16, 16), (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 2),
    ((13, 11), (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 2),
    ((15, 9), (5, 3), (1, 1), (2, 0, 1, 3), (1, 1), (2, 1)),
    ((17, 17), (7, 7), (2, 2), (3, 3, 3, 3), (1, 1), 2),
    ((16, 16), (3, 3), (2, 2), (1, 1, 1, 1), (1, 1), 4),
    ((19, 12), (3, 3), (4, 4), (0, 1, 2, 0), (1, 1), 2),
    ((14, 14), (3, 3), (1, 1), (2, 2, 2, 2), (2, 2), 2),
    ((10, 23), (2, 4), (1, 1), (0, 0, 0, 0), (1, 3), (1, 4)),
    ((9, 9), (1, 1), (1, 1), (0, 0, 0, 0), (1, 1), 3),
]


@pytest.mark.parametrize("layout,kernel_layout", LAYOUTS)
@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[0]}-k{c[1]}-s{c[2]}-p{c[3]}-d{c[4]}-b{c[5]}")
@pytest.mark.parametrize("dtype", ["float32", "int8"])
def test_rewrite_is_exact_through_tvm(layout, kernel_layout, case, dtype):
    hw, kernel, strides, padding, dilation, block = case
    batch, cin, cout = 2, 3, 5
    weight_oihw = random_tensor(RNG, (cout, cin, *kernel), dtype)
    data_shape = (batch, cin, *hw) if layout == "NCHW" else (batch, *hw, cin)
    out_dtype = "int32" if dtype == "int8" else "float32"
    before = conv_module(
        data_shape, weight_oihw.transpose(oihw_to_kernel(kernel_layout)), dtype=dtype, strides=strides,
        padding=padding, dilation=dilation, data_layout=layout, kernel_layout=kernel_layout, out_dtype=out_dtype,
    )
    pass_ = SpaceToDepthConv2d(block=block)
    after = pass_(before)
    (decision,) = pass_.decisions
    assert decision.rewritten, decision.reason
    (conv,) = ops_in(after)
    cax = 1 if layout == "NCHW" else 3
    assert conv.args[0].ty.shape[cax] == cin * decision.plan.block[0] * decision.plan.block[1]

    x = random_tensor(RNG, data_shape, dtype)
    expected = run(before, x)
    assert_same(run(after, x), expected, dtype)
    nchw = conv2d_nchw(x if layout == "NCHW" else x.transpose(0, 3, 1, 2), weight_oihw, strides, padding, dilation)
    assert_same(expected, (nchw if layout == "NCHW" else nchw.transpose(0, 2, 3, 1)).astype(out_dtype), dtype)


@st.composite
def small_convs(draw):
    k, d = draw(st.integers(1, 5)), draw(st.sampled_from([1, 2]))
    pads = draw(st.tuples(*[st.integers(0, 3)] * 4))
    span = d * (k - 1) + 1
    h = draw(st.integers(max(7, span - pads[0] - pads[2]), 14))
    w = draw(st.integers(max(7, span - pads[1] - pads[3]), 14))
    return k, d, pads, h, w


@settings(max_examples=40, deadline=None)
@given(
    conv=small_convs(), s=st.sampled_from([1, 2]),
    block=st.sampled_from([2, 4, (2, 1), (1, 2)]), layout=st.sampled_from(["NCHW", "NHWC"]),
)
def test_random_convs_are_exact_through_tvm(conv, s, block, layout):
    k, d, pads, h, w = conv
    cin, cout = 2, 3
    weight = random_tensor(RNG, (cout, cin, k, k), "int8")
    kernel_layout = "OIHW" if layout == "NCHW" else "HWIO"
    shape = (1, cin, h, w) if layout == "NCHW" else (1, h, w, cin)
    before = conv_module(
        shape, weight.transpose(oihw_to_kernel(kernel_layout)), dtype="int8", strides=s, padding=pads,
        dilation=d, data_layout=layout, kernel_layout=kernel_layout, out_dtype="int32",
    )
    pass_ = SpaceToDepthConv2d(block=block)
    after = pass_(before)
    if not pass_.decisions[0].rewritten:  # only stride/block mismatches are refused here
        assert "do not divide" in pass_.decisions[0].reason
        tvm.ir.assert_structural_equal(after, before)
        return
    x = random_tensor(RNG, shape, "int8")
    assert_same(run(after, x), run(before, x), "int8")


def test_uint8_activations_int8_weights_bit_exact_with_epilogue():
    weight = random_tensor(RNG, (8, 8, 3, 3), "int8")
    before = conv_module(
        (1, 8, 12, 12), weight, dtype="uint8", padding=(1, 1, 1, 1), out_dtype="int32",
        epilogue=lambda y: relax.op.clip(y, 0, 5000),
    )
    after = SpaceToDepthConv2d()(before)  # the lane model picks 2x2 for 8 channels
    assert ops_in(after)[0].args[0].ty.shape[1] == 32
    x = random_tensor(RNG, (1, 8, 12, 12), "uint8")
    assert_same(run(after, x), run(before, x), "int32")


# ---- refusals: the conv is left untouched and the reason recorded --------------------------------


def _refusal(mod, **options):
    pass_ = SpaceToDepthConv2d(**options)
    after = pass_(mod)
    tvm.ir.assert_structural_equal(after, mod)
    (decision,) = pass_.decisions
    assert not decision.rewritten
    (row,) = explain(mod, **options).rows
    assert row["status"] == "refused" and row["reason"] == decision.reason
    return decision.reason


W8 = np.ones((8, 8, 3, 3), np.float32)


@pytest.mark.parametrize(
    "make,options,reason",
    [
        (lambda: conv_module((1, 8, 16, 16), W8, weight_param=True), {}, "weight is not a compile-time constant"),
        (lambda: conv_module((1, 8, 16, 16), np.ones((8, 2, 3, 3), np.float32), groups=4), {}, "grouped conv (groups=4)"),
        (lambda: conv_module((1, 2, 16, 16, 4), np.ones((2, 2, 3, 3, 4, 4), np.float32), data_layout="NCHW4c",
                             kernel_layout="OIHW4i4o", out_layout="NCHW4c"), {}, "data layout NCHW4c is not NCHW or NHWC"),
        (lambda: conv_module((1, 8, 16, 16), W8, out_layout="NHWC"), {}, "output layout NHWC differs from data layout NCHW"),
        (lambda: conv_module((1, 8, 16, 16), np.ones((1, 8, 3, 3, 16), np.float32), kernel_layout="OIHW16o"), {},
         "kernel layout must be a permutation of OIHW"),
        (lambda: conv_module((1, 8, 16, 16), W8, strides=3), {"block": 2}, "height: stride 3 and block 2 do not divide one another"),
        (lambda: conv_module((1, 8, 16, 3), W8, padding=1), {"block": 4}, "width: block 4 exceeds the input size 3"),
        (lambda: conv_module((1, 8, 2, 16), np.ones((8, 8, 1, 1), np.float32), strides=(4, 1), padding=(2, 0, 0, 0)),
         {"block": 2}, "height: the conv reads only padding"),
        (lambda: conv_module((1, 32, 16, 16), np.ones((32, 32, 3, 3), np.float32), padding=1), {}, "already enough channels"),
        (lambda: conv_module((1, 24, 16, 16), np.ones((32, 24, 3, 3), np.float32), padding=1), {}, "no estimated gain"),
        (lambda: conv_module((1, 8, 16, 16), W8, strides=5), {}, "no valid block"),
    ],
)
def test_refusals(make, options, reason):
    assert reason in _refusal(make(), **options)


def test_a_conv_with_an_empty_output_is_refused():
    """Relax accepts it (inferring a size of -1), TVM's own passes then fail on it; the rewrite refuses."""
    mod = conv_module((1, 8, 7, 7), np.ones((8, 8, 5, 5), np.float32), dilation=2)
    pass_ = SpaceToDepthConv2d(block=2)
    tvm.ir.assert_structural_equal(pass_(mod), mod)
    assert pass_.decisions[0].reason == "height: the conv has an empty output"


def test_dynamic_shape_is_refused():
    n = tvm.ir.prim.expr.Var("n", "int64")  # a symbolic batch size
    assert _refusal(conv_module((n, 8, 16, 16), W8, padding=1)).startswith("dynamic or unknown shape (give")


@pytest.mark.parametrize("options", [{"block": 0}, {"block": -2}, {"block": (2, 0)}, {"block": "2"}, {"lane_width": 0},
                                     {"lane_width": 2.5}])
def test_bad_options_raise_a_clear_error(options):
    with pytest.raises(ValueError, match="block|lane_width"):
        SpaceToDepthConv2d(**options)
    with pytest.raises(ValueError, match="block|lane_width"):
        explain(conv_module((1, 8, 8, 8), W8), **options)


def test_module_without_convs_is_unchanged_and_reports_empty():
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((1, 4), "float32"))
    with bb.function("main", [x]):
        bb.emit_func_output(bb.emit(relax.op.nn.relu(x)))
    mod = bb.get()
    tvm.ir.assert_structural_equal(SpaceToDepthConv2d(block=2)(mod), mod)
    report = explain(mod)
    assert report.rows == [] and str(report) == "no conv2d in the module"


# ---- the pass on its own does what it does in the pipeline -------------------------------------


@pytest.mark.parametrize("model", ["demo", "qdq"])
def test_the_pass_alone_on_an_imported_module_equals_the_pipelines_rewrite(model):
    """Applied alone it runs the pipeline's preparation (QDQ convs to integer, constant folding)
    itself: imported weights behind dequantize/reshape are constants, the chain stays in the
    S2D domain (2 layout changes, not one pair per conv), QDQ convs are rewritten."""
    import tvm_s2d
    from helpers import qdq_chain
    from tvm_s2d.demo import demo_model
    from tvm_s2d.passes.prepare import prepare

    onnx_model = demo_model(48) if model == "demo" else qdq_chain(strides=(1, 1, 1))
    mod = tvm_s2d.from_onnx(onnx_model)
    options = dict(block=2, move_cost=1000.0)
    alone = SpaceToDepthConv2d(**options)
    after = alone(mod)
    expected = SpaceToDepthConv2d(**options, prepare=False)(prepare(mod))
    tvm.ir.assert_structural_equal(after, expected)
    assert sum(d.rewritten for d in alone.decisions) == (4 if model == "demo" else 3)
    if model == "qdq":
        assert len(ops_in(after, "relax.permute_dims")) == 2  # one S2D in, one D2S out for the 3-conv chain
        x = np.random.default_rng(0).integers(0, 256, (1, 8, 23, 21)).astype(np.uint8)
        np.testing.assert_array_equal(run(after, x), run(prepare(mod), x))  # bit-exact, integer epilogues included


def test_blocks_are_bounded_and_huge_folded_weights_refused_fast():
    import time

    from tvm_s2d.geometry import MAX_BLOCK, Unsupported

    with pytest.raises(ValueError, match=f"at most {MAX_BLOCK}"):
        SpaceToDepthConv2d(block=MAX_BLOCK + 1)
    spec = Conv2dSpec(1, 64, 64, (128, 128), (3, 3), padding=(1, 1, 1, 1))
    start = time.perf_counter()
    with pytest.raises(Unsupported, match=r"folded weights of at least \d+ MiB \(limit 64 MiB\)"):
        spec.plan(16)
    assert time.perf_counter() - start < 1.0
    mod = conv_module((1, 64, 128, 128), RNG.standard_normal((64, 64, 3, 3)).astype(np.float32), padding=1)
    assert "MiB" in _refusal(mod, block=16)
