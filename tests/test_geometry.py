"""The numpy mathematics of the rewrite, against a direct convolution and ONNX Runtime."""

import numpy as np
import onnxruntime as ort
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper

from tvm_s2d.geometry import (
    Domain,
    TransposedConv2dSpec,
    conv_transpose2d_nchw,
    AxisPlan,
    Conv2dSpec,
    Unsupported,
    choose_block,
    conv2d_nchw,
    depth_to_space,
    is_pure_reshape,
    normalize_block,
    s2d_steps,
    space_to_depth,
)

BLOCKS = [2, 3, 4, (2, 1), (1, 2), (1, 4), (4, 2)]


def _ort_run(op, x, **attrs):
    node = helper.make_node(op, ["x"], ["y"], **attrs)
    graph = helper.make_graph(
        [node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x.shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    return ort.InferenceSession(model.SerializeToString()).run(None, {"x": x})[0]


@pytest.mark.parametrize("block", [2, 3])
def test_space_to_depth_matches_onnx_dcr(block):
    x = np.random.default_rng(0).standard_normal((2, 3, 6 * block // 2, 4 * block // 2)).astype(np.float32)
    np.testing.assert_array_equal(space_to_depth(x, block), _ort_run("SpaceToDepth", x, blocksize=block))
    y = space_to_depth(x, block)
    np.testing.assert_array_equal(depth_to_space(y, block), _ort_run("DepthToSpace", y, blocksize=block, mode="DCR"))


@pytest.mark.parametrize("block", BLOCKS)
@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_s2d_d2s_round_trip_and_channel_order(block, layout):
    bh, bw = normalize_block(block)
    x = np.arange(2 * 3 * (2 * bh) * (3 * bw)).reshape(2, 3, 2 * bh, 3 * bw)
    if layout == "NHWC":
        x = x.transpose(0, 2, 3, 1)
    y = space_to_depth(x, block, layout)
    np.testing.assert_array_equal(depth_to_space(y, block, layout), x)
    # channel (dy*bw + dx)*C + c of S2D pixel (I, J) is channel c of pixel (I*bh+dy, J*bw+dx)
    nchw_x = x if layout == "NCHW" else x.transpose(0, 3, 1, 2)
    nchw_y = y if layout == "NCHW" else y.transpose(0, 3, 1, 2)
    dy, dx, c, i, j = bh - 1, bw - 1, 2, 1, 2
    assert nchw_y[1, (dy * bw + dx) * 3 + c, i, j] == nchw_x[1, c, i * bh + dy, j * bw + dx]


def test_width_to_depth_in_nhwc_is_a_reshape():
    split, perm, out = s2d_steps((1, 5, 8, 3), (1, 4), "NHWC")
    assert is_pure_reshape(split, perm)
    x = np.random.default_rng(1).standard_normal((1, 5, 8, 3))
    np.testing.assert_array_equal(space_to_depth(x, (1, 4), "NHWC"), x.reshape(1, 5, 2, 12))
    assert not is_pure_reshape(*s2d_steps((1, 4, 8, 3), (2, 2), "NHWC")[:2])


def test_s2d_rejects_sizes_not_a_multiple_of_the_block():
    with pytest.raises(ValueError, match="not a multiple of block"):
        space_to_depth(np.zeros((1, 1, 5, 4)), 2)


@pytest.mark.parametrize("bad", [0, -2, (2, 0), (1, 1), 1.5, "2", (2, 2, 2), True, None])
def test_bad_blocks_are_refused(bad):
    with pytest.raises(ValueError, match="block"):
        normalize_block(bad)


def test_seed_example_3x3x8x8_becomes_2x2x32x32():
    spec = Conv2dSpec(1, 8, 8, (1024, 1024), (3, 3), padding=(1, 1, 1, 1))
    plan = spec.plan(2)
    assert (plan.in_channels, plan.out_channels, plan.kernel_hw) == (32, 32, (2, 2))
    assert plan.conv_out_hw == (512, 512) and plan.needs_d2s and plan.out_domain.exact
    # 9 taps x 32 x 32 per pixel before; 4 x 32 x 32 per quarter as many pixels after
    assert spec.executed_macs(32) == 9 * plan.executed_macs(32)
    assert abs(spec.useful_macs / plan.executed_macs(32) - 0.5625) < 1e-12


def test_resnet_stem_becomes_4x4_stride_1_on_112x112x12():
    spec = Conv2dSpec(1, 3, 64, (224, 224), (7, 7), strides=(2, 2), padding=(3, 3, 3, 3))
    plan = spec.plan(2)
    assert (plan.in_channels, plan.out_channels, plan.kernel_hw, plan.strides) == (12, 64, (4, 4), (1, 1))
    assert plan.s2d_hw == (112, 112) and plan.conv_out_hw == (112, 112)
    assert not plan.needs_d2s and plan.align == ((0, 0), (0, 0))  # all padding inside the conv


@pytest.mark.parametrize("k,b,expected", [(1, 2, 1), (2, 2, 2), (3, 2, 2), (5, 2, 3), (7, 2, 4), (3, 4, 2), (7, 4, 3)])
def test_stride_1_kernel_is_ceil_of_k_plus_b_minus_1_over_b(k, b, expected):
    shortest = min(p.conv_kernel for p in AxisPlan.candidates(64, k, 1, 1, (k // 2, k // 2), b))
    assert shortest == expected == -(-(k + b - 1) // b)


def _check_plan(spec, block, layout, dtype, rng):
    try:
        plan = spec.plan(block)
    except Unsupported as exc:
        bh, bw = normalize_block(block)
        oh, ow = spec.out_hw
        (kh, kw), (dh, dw), (pt, pl) = spec.kernel_hw, spec.dilation, spec.padding[:2]
        axes = [
            (spec.strides[0], bh, spec.in_hw[0], (oh - 1) * spec.strides[0] + (kh - 1) * dh - pt < 0),
            (spec.strides[1], bw, spec.in_hw[1], (ow - 1) * spec.strides[1] + (kw - 1) * dw - pl < 0),
        ]
        expected = any((s % b and b % s) or b > n or only_padding for s, b, n, only_padding in axes)
        assert expected, f"unexpected refusal: {exc}"
        return None
    if dtype == "int8":
        x = rng.integers(-128, 128, (spec.batch, spec.in_channels, *spec.in_hw)).astype(np.int8)
        w = rng.integers(-128, 128, (spec.out_channels, spec.in_channels, *spec.kernel_hw)).astype(np.int8)
    else:
        x = rng.standard_normal((spec.batch, spec.in_channels, *spec.in_hw)).astype(np.float32)
        w = rng.standard_normal((spec.out_channels, spec.in_channels, *spec.kernel_hw)).astype(np.float32)
    expected = conv2d_nchw(x, w, spec.strides, spec.padding, spec.dilation)
    assert expected.shape[2:] == spec.out_hw
    if layout == "NHWC":
        got = plan.run(x.transpose(0, 2, 3, 1), w, "NHWC").transpose(0, 3, 1, 2)
    else:
        got = plan.run(x, w, "NCHW")
    assert got.shape == expected.shape
    if dtype == "int8":
        np.testing.assert_array_equal(got, expected)
    else:
        np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-9)
    return plan


@st.composite
def conv_specs(draw):
    k = (draw(st.integers(1, 7)), draw(st.integers(1, 7)))
    dilation = (draw(st.sampled_from([1, 1, 2, 3])), draw(st.sampled_from([1, 1, 2])))
    strides = (draw(st.sampled_from([1, 2, 4])), draw(st.sampled_from([1, 2, 4])))
    padding = tuple(draw(st.integers(0, 4)) for _ in range(4))
    span = [dilation[i] * (k[i] - 1) + 1 for i in (0, 1)]
    hw = tuple(draw(st.integers(max(1, span[i] - padding[i] - padding[i + 2]), max(span[i], 17))) for i in (0, 1))
    return Conv2dSpec(
        batch=draw(st.integers(1, 2)),
        in_channels=draw(st.integers(1, 4)),
        out_channels=draw(st.integers(1, 4)),
        in_hw=hw, kernel_hw=k, strides=strides, dilation=dilation, padding=padding,
    )


@settings(max_examples=400, deadline=None)
@given(spec=conv_specs(), block=st.sampled_from(BLOCKS), layout=st.sampled_from(["NCHW", "NHWC"]),
       dtype=st.sampled_from(["float32", "int8"]), seed=st.integers(0, 2**16))
def test_rewrite_is_exact_for_any_conv(spec, block, layout, dtype, seed):
    plan = _check_plan(spec, block, layout, dtype, np.random.default_rng(seed))
    if plan is not None:
        assert plan.in_channels == spec.in_channels * plan.block[0] * plan.block[1]
        assert all(p >= 0 for p in plan.padding)


def test_odd_sizes_all_paddings_strides_exhaustively():
    rng = np.random.default_rng(3)
    checked = 0
    for size in (5, 6, 7, 8):
        for k in (1, 2, 3, 4):
            for s in (1, 2, 4):
                for pads in ((0, 0), (1, 0), (0, 2), (1, 1), (2, 3)):
                    spec = Conv2dSpec(1, 2, 3, (size, size + 1), (k, k), (s, s), (1, 1), (pads[0], pads[1], pads[1], pads[0]))
                    if min(spec.out_hw) < 1:
                        continue
                    for block in (2, 4, (2, 1), (1, 4)):
                        checked += _check_plan(spec, block, "NCHW", "float32", rng) is not None
    assert checked > 500


def test_fold_bias_matches_s2d_of_the_biased_output():
    rng = np.random.default_rng(4)
    spec = Conv2dSpec(1, 3, 5, (8, 8), (3, 3), padding=(1, 1, 1, 1))
    plan = spec.plan(2)
    x, w, bias = rng.standard_normal((1, 3, 8, 8)), rng.standard_normal((5, 3, 3, 3)), rng.standard_normal(5)
    s2d_out = conv2d_nchw(space_to_depth(plan.align_input(x), 2), plan.fold_weight(w), plan.strides, plan.padding)
    s2d_out = s2d_out + plan.fold_bias(bias)[None, :, None, None]
    expected = conv2d_nchw(x, w, padding=spec.padding) + bias[None, :, None, None]
    np.testing.assert_allclose(plan.finish_output(s2d_out), expected, rtol=1e-12)


def test_fold_weight_checks_the_weight_shape():
    plan = Conv2dSpec(1, 3, 5, (8, 8), (3, 3)).plan(2)
    with pytest.raises(ValueError, match="does not match"):
        plan.fold_weight(np.zeros((5, 3, 2, 2)))


@pytest.mark.parametrize(
    "spec,reason",
    [
        (Conv2dSpec(1, 3, 8, (16, 16), (3, 3), strides=(3, 3)), "stride 3 and block 2"),
        (Conv2dSpec(1, 3, 8, (1, 16), (1, 3)), "block 2 exceeds the input size 1"),
    ],
)
def test_plan_refusals_name_the_axis_and_reason(spec, reason):
    with pytest.raises(Unsupported, match=reason):
        spec.plan(2)


def test_lane_model_choices():
    seed = Conv2dSpec(1, 8, 8, (1024, 1024), (3, 3), padding=(1, 1, 1, 1))
    assert choose_block(seed).block == (2, 2)
    stem = Conv2dSpec(1, 3, 64, (224, 224), (7, 7), strides=(2, 2), padding=(3, 3, 3, 3))
    plan = choose_block(stem)
    assert plan.executed_macs() < stem.executed_macs()
    assert plan.executed_macs() == min(stem.plan(b).executed_macs() for b in (2, 3, 4) if (b % 2 == 0))
    with pytest.raises(Unsupported, match="already enough channels"):
        choose_block(Conv2dSpec(1, 32, 32, (64, 64), (3, 3), padding=(1, 1, 1, 1)))
    # 24 -> 32 channels, 3x3: 9 x 32 x 32 per pixel before, 2x2 x 96 x 128 per 4 pixels after
    with pytest.raises(Unsupported, match="no estimated gain"):
        choose_block(Conv2dSpec(1, 24, 32, (64, 64), (3, 3), padding=(1, 1, 1, 1)))
    # a 1x1 8 -> 8 conv gains: a block-diagonal 32 x 32 weight on a quarter of the pixels
    assert choose_block(Conv2dSpec(1, 8, 8, (64, 64), (1, 1))).executed_macs() * 4 == 64 * 64 * 32 * 32
    with pytest.raises(Unsupported, match="no valid block"):
        choose_block(Conv2dSpec(1, 3, 8, (64, 64), (3, 3), strides=(5, 5)))


# ---- staying in the S2D domain ---------------------------------------------------------------


def _garbage_outside(y, domain, channels, layout, rng):
    """Replace everything outside the image with noise: consumers must not depend on it."""
    inside_h, inside_w = domain.inside_masks(channels, layout)
    inside = inside_h & inside_w
    noise = rng.integers(-1000, 1000, y.shape)
    return np.where(inside, y, noise)


@settings(max_examples=300, deadline=None)
@given(
    k1=st.integers(1, 5), k2=st.integers(1, 5), p1=st.integers(0, 2), p2=st.integers(0, 2),
    s2=st.sampled_from([1, 2]), size=st.integers(6, 15), block=st.sampled_from([2, 4, (1, 2), (2, 1)]),
    layout=st.sampled_from(["NCHW", "NHWC"]), seed=st.integers(0, 2**16),
)
def test_two_convs_stay_in_the_domain_exactly(k1, k2, p1, p2, s2, size, block, layout, seed):
    """conv1 leaves its output in the domain (with noise outside the image); conv2 consumes it."""
    rng = np.random.default_rng(seed)
    spec1 = Conv2dSpec(1, 2, 3, (size, size + 1), (k1, k1), padding=(p1,) * 4)
    if min(spec1.out_hw) < 1:
        return
    spec2 = Conv2dSpec(1, 3, 2, spec1.out_hw, (k2, k2), strides=(s2, s2), padding=(p2, p2, p2, 0))
    try:
        plan1 = spec1.plan(block, layout=layout)
        plan2 = spec2.plan(block, domain=plan1.out_domain, layout=layout)
    except Unsupported:
        return
    x = rng.integers(-9, 10, (1, 2, size, size + 1))
    w1, w2 = rng.integers(-9, 10, (3, 2, k1, k1)), rng.integers(-9, 10, (2, 3, k2, k2))
    expected = conv2d_nchw(conv2d_nchw(x, w1, padding=spec1.padding), w2, spec2.strides, spec2.padding)
    xl = x if layout == "NCHW" else x.transpose(0, 2, 3, 1)
    y1 = plan1.run_s2d(space_to_depth(plan1.align_input(xl, layout), plan1.block, layout), w1, layout)
    y1 = _garbage_outside(y1, plan1.out_domain, 3, layout, rng)
    got = plan2.finish_output(plan2.run_s2d(y1, w2, layout), layout)
    np.testing.assert_array_equal(got if layout == "NCHW" else got.transpose(0, 3, 1, 2), expected)


def test_a_same_padded_chain_keeps_the_small_kernel_and_needs_no_entry_padding():
    spec = Conv2dSpec(1, 8, 8, (64, 64), (3, 3), padding=(1, 1, 1, 1))
    plan, offsets = spec.plan(2), []
    for _ in range(4):
        assert plan.kernel_hw == (2, 2)
        offsets.append(plan.out_domain.offset)
        plan = spec.plan(2, domain=plan.out_domain)
    assert len(set(offsets)) == 2  # the output offset alternates to keep 2x2 kernels


def test_domain_enter_leave_round_trip_and_inside_mask():
    d = Domain((2, 4), (1, 3), (5, 9))
    x = np.arange(2 * 3 * 5 * 9).reshape(2, 3, 5, 9)
    np.testing.assert_array_equal(d.leave(d.enter(x)), x)
    inside_h, inside_w = d.inside(3)
    y = d.enter(np.ones_like(x))
    assert ((y != 0) == (inside_h[None, :, :, None] & inside_w[None, :, None, :])).all()


@settings(max_examples=300, deadline=None)
@given(
    k=st.tuples(st.integers(1, 6), st.integers(1, 6)), s=st.tuples(st.integers(2, 4), st.integers(1, 3)),
    d=st.sampled_from([(1, 1), (2, 1)]), pads=st.tuples(*[st.integers(0, 3)] * 4),
    op=st.tuples(st.integers(0, 1), st.integers(0, 1)), hw=st.tuples(st.integers(1, 8), st.integers(1, 8)),
    layout=st.sampled_from(["NCHW", "NHWC"]), seed=st.integers(0, 2**16),
)
def test_transposed_conv_is_a_conv_then_depth_to_space(k, s, d, pads, op, hw, layout, seed):
    spec = TransposedConv2dSpec(2, 3, 2, hw, k, s, d, pads, output_padding=op)
    try:
        plan = spec.plan(layout)
    except Unsupported as exc:
        assert "empty output" in str(exc)
        return
    rng = np.random.default_rng(seed)
    x, w = rng.integers(-9, 10, (2, 3, *hw)), rng.integers(-9, 10, (3, 2, *k))
    expected = conv_transpose2d_nchw(x, w, s, pads, op, d)
    got = plan.run(x if layout == "NCHW" else x.transpose(0, 2, 3, 1), w, layout)
    np.testing.assert_array_equal(got if layout == "NCHW" else got.transpose(0, 3, 1, 2), expected)
    assert plan.out_channels == 2 * s[0] * s[1] and plan.strides == (1, 1)
