"""Whole-graph rewriting: chains stay in the S2D domain, elementwise ops and transposed convs
run there, everything else sends tensors back to plain, and the results stay exact."""

import numpy as np
import pytest
from tvm import relax

from helpers import Net, assert_same, ops_in, random_tensor, run
from tvm_s2d import SpaceToDepthConv2d
from tvm_s2d.report import DATA_MOVEMENT_OPS, count_ops

RNG = np.random.default_rng(5)


#: The mechanism tests price data movement high, so that staying in the domain always wins;
#: ``test_the_cost_model_stays_only_where_it_pays`` checks the default trade-off.
EXPENSIVE_MOVES = 1000.0


def rewrite(mod, **options):
    options.setdefault("move_cost", EXPENSIVE_MOVES)
    pass_ = SpaceToDepthConv2d(**options)
    return pass_(relax.transform.FoldConstant()(mod)), pass_


def check_exact(before, after, shape, dtype):
    x = random_tensor(RNG, shape, dtype)
    expected = run(before, x)
    assert_same(run(after, x), expected, dtype)
    return expected


def permutes(mod):
    return len(ops_in(mod, "relax.permute_dims"))


@pytest.mark.parametrize("n", [2, 3, 6])
@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("dtype", ["float32", "int8"])
@pytest.mark.parametrize("hw", [(24, 24), (23, 19)])
def test_a_chain_of_convs_has_one_s2d_in_and_one_d2s_out(n, layout, dtype, hw):
    shape = (2, 8, *hw) if layout == "NCHW" else (2, *hw, 8)
    net = Net(shape, dtype, layout)
    y = net.x
    for i in range(n):
        y = net.conv(y, 8, 3, padding=1, name=f"conv{i}")
        y = net.bias(y)
        y = net.emit(relax.op.nn.relu(y) if i % 2 else relax.op.clip(y, -1000, 1000))
        if dtype == "int8" and i < n - 1:
            y = net.emit(relax.op.astype(relax.op.clip(relax.op.right_shift(y, relax.const(8, "int32")), -128, 127), "int8"))
    before = net.module(y)
    after, pass_ = rewrite(before, block=2)
    assert [d.rewritten for d in pass_.decisions] == [True] * n
    assert [d.stayed for d in pass_.decisions] == [False] + [True] * (n - 1)
    assert all(d.plan.kernel_hw == (2, 2) for d in pass_.decisions)
    assert permutes(after) == 2  # S2D of the input, D2S of the output: n - 1 pairs cancelled
    assert [(e.forced_by, e.origin) for e in pass_.exits] == [("function output", f"conv{n - 1}")]
    check_exact(before, after, shape, dtype)


def _same_chain(size, n=3):
    net = Net((1, 8, size, size))
    y = net.x
    for _ in range(n):
        y = net.emit(relax.op.nn.relu(net.conv(y, 8, 3, padding=1)))
    return net.module(y)


def test_the_cost_model_stays_only_where_it_pays():
    """Staying costs an extra block row and column of MACs where offsets alternate; leaving
    costs a D2S and an S2D. Small images leave, large ones stay; both are recorded."""
    _, small = rewrite(_same_chain(16), block=2, move_cost=1.0)
    _, large = rewrite(_same_chain(96), block=2, move_cost=1.0)
    assert not any(d.stayed for d in small.decisions) and all(d.stayed for d in large.decisions[1:])
    for d in small.decisions[1:] + large.decisions[1:]:
        assert d.in_domain and (d.stay_cost <= d.leave_cost) == d.stayed


def test_stay_in_domain_off_rewrites_each_conv_on_its_own():
    net = Net((1, 8, 24, 24))
    y = net.conv(net.conv(net.conv(net.x, 8, 3, padding=1), 8, 3, padding=1), 8, 3, padding=1)
    before = net.module(y)
    after, pass_ = rewrite(before, block=2, stay_in_domain=False)
    assert permutes(after) == 6 and not any(d.stayed for d in pass_.decisions)
    check_exact(before, after, (1, 8, 24, 24), "float32")


@pytest.mark.parametrize("dtype", ["float32", "int8"])
def test_residual_blocks_stay_in_the_domain(dtype):
    net = Net((1, 8, 20, 20), dtype)
    y = net.conv(net.x, 8, 3, padding=1, name="stem")
    if dtype == "int8":
        y = net.emit(relax.op.astype(relax.op.clip(y, -128, 127), "int8"))
    for block in range(2):
        h = net.emit(relax.op.nn.relu(net.conv(y, 8, 3, padding=1, name=f"b{block}a")))
        if dtype == "int8":
            h = net.emit(relax.op.astype(relax.op.clip(h, 0, 127), "int8"))
        h = net.conv(h, 8, 3, padding=1, name=f"b{block}b")
        skip = y if dtype == "float32" else net.emit(relax.op.astype(y, "int32"))
        y = net.emit(relax.op.nn.relu(relax.op.add(h, skip)))
        if dtype == "int8":
            y = net.emit(relax.op.astype(relax.op.clip(y, 0, 127), "int8"))
    before = net.module(y)
    after, pass_ = rewrite(before, block=2)
    assert sum(d.stayed for d in pass_.decisions) == 4
    assert permutes(after) == 2 and len(ops_in(after, "relax.add")) == 2
    check_exact(before, after, (1, 8, 20, 20), dtype)


def test_elementwise_ops_with_per_channel_and_scalar_constants_run_in_the_domain():
    net = Net((1, 8, 15, 15))
    y = net.conv(net.x, 8, 3, padding=1)
    y = net.emit(relax.op.multiply(y, relax.const(RNG.standard_normal((1, 8, 1, 1)).astype(np.float32))))
    y = net.emit(relax.op.subtract(y, relax.const(np.float32(0.25))))
    y = net.emit(relax.op.divide(y, relax.const(np.full((8, 1, 1), 2.0, np.float32))))
    y = net.emit(relax.op.sigmoid(relax.op.nn.leakyrelu(y, 0.1)))
    y = net.emit(relax.op.tanh(y))
    y = net.conv(y, 8, 3, padding=1)
    before = net.module(y)
    after, pass_ = rewrite(before, block=2)
    assert pass_.decisions[1].stayed and permutes(after) == 2
    # 15 rows in 8 blocks: one row outside the image, which sigmoid(0) != 0 makes nonzero
    assert not pass_.decisions[1].plan.domain.clean and pass_.decisions[1].plan.needs_mask
    check_exact(before, after, (1, 8, 15, 15), "float32")


def test_quantize_and_dequantize_with_per_channel_parameters_run_in_the_domain():
    net = Net((1, 8, 16, 16))
    y = net.conv(net.x, 8, 3, padding=1)
    scale = relax.const((RNG.random(8) * 0.05 + 0.01).astype(np.float32))
    zero = relax.const(RNG.integers(-3, 3, 8).astype(np.int8))
    q = net.emit(relax.op.quantize(y, scale, zero, axis=1, out_dtype="int8"))
    y = net.emit(relax.op.dequantize(q, scale, zero, axis=1, out_dtype="float32"))
    y = net.conv(y, 8, 3, padding=1)
    before = net.module(y)
    after, pass_ = rewrite(before, block=2)
    assert pass_.decisions[1].stayed and permutes(after) == 2
    assert [e.forced_by for e in pass_.exits] == ["function output"]
    check_exact(before, after, (1, 8, 16, 16), "float32")


# ---- ops that send a tensor back to plain layout: still exact, and the report names them ----------


def _forcing(op):
    net = Net((1, 8, 16, 16))
    a = net.conv(net.x, 8, 3, padding=1, name="a")
    y = net.emit(op(net, a), "user")
    return net.module(net.conv(y, 8, 3, padding=1)) if int(y.ty.shape.values[1]) == 8 else net.module(y)


FORCING = {
    "relax.nn.max_pool2d": lambda net, a: relax.op.nn.max_pool2d(a, 3, 1, 1),
    "relax.nn.softmax": lambda net, a: relax.op.nn.softmax(a, axis=1),
    "relax.concat": lambda net, a: relax.op.concat([a, net.x], axis=1),
    "relax.add": lambda net, a: relax.op.add(a, net.x),  # the other operand is plain
    "relax.multiply": lambda net, a: relax.op.multiply(a, relax.const(np.ones((1, 8, 16, 1), np.float32))),
    "relax.mean": lambda net, a: relax.op.mean(a, axis=[2, 3], keepdims=True),
    "relax.nn.conv2d": lambda net, a: relax.op.nn.conv2d(a, relax.const(np.ones((8, 1, 3, 3), np.float32)), padding=1, groups=8),
}


@pytest.mark.parametrize("op", FORCING, ids=lambda name: name.split(".")[-1])
def test_ops_that_force_plain_layout_stay_exact(op):
    before = _forcing(FORCING[op])
    after, pass_ = rewrite(before, block=2)
    assert any(e.tensor == "a" and e.forced_by.startswith(op) for e in pass_.exits), pass_.exits
    check_exact(before, after, (1, 8, 16, 16), "float32")


def test_a_residual_partner_sets_the_output_offset():
    net = Net((1, 8, 16, 16))
    a = net.conv(net.x, 8, 3, padding=1, name="a")
    b = net.conv(net.conv(net.x, 8, 3, padding=1), 8, 3, padding=1, name="b")  # offsets alternate
    before = net.module(net.emit(relax.op.add(a, b), "sum"))
    after, pass_ = rewrite(before, block=2)
    assert pass_.decisions[0].plan.out_domain.offset == pass_.decisions[2].plan.out_domain.offset
    assert [e.forced_by for e in pass_.exits] == ["function output"]
    check_exact(before, after, (1, 8, 16, 16), "float32")


def test_binary_op_on_tensors_in_different_domains_goes_back_to_plain():
    net = Net((1, 8, 8, 8))
    a = net.conv_transpose(net.x, 8, 4, 4, name="a")  # 32x32 in a 4x4 domain
    b = net.conv(a, 8, 3, padding=1, name="b")  # forced 2x2: a 2x2 domain
    before = net.module(net.emit(relax.op.add(a, b), "sum"))
    after, pass_ = rewrite(before, block=2)
    assert [d.plan.out_block for d in pass_.decisions] == [(4, 4), (2, 2)]
    assert {e.forced_by for e in pass_.exits} >= {"relax.add"}
    check_exact(before, after, (1, 8, 8, 8), "float32")


# ---- strided and transposed convs: a U-Net-like down/up path --------------------------------------


@pytest.mark.parametrize("hw", [(32, 32), (30, 26)])
def test_unet_like_down_and_up_path(hw):
    net = Net((1, 4, *hw))
    d0 = net.emit(relax.op.nn.relu(net.conv(net.x, 8, 3, padding=1, name="enc0")))
    d1 = net.emit(relax.op.nn.relu(net.conv(d0, 8, 3, stride=2, padding=1, name="down")))
    d1 = net.emit(relax.op.nn.relu(net.conv(d1, 8, 3, padding=1, name="mid")))
    up = net.conv_transpose(d1, 8, 4, 2, padding=1, output_padding=0, name="up")
    y = net.emit(relax.op.add(up, d0))
    y = net.conv(y, 3, 3, padding=1, name="head")
    before = net.module(y)
    after, pass_ = rewrite(before, block=2)
    by_name = {d.name: d for d in pass_.decisions}
    assert all(d.rewritten for d in by_name.values())
    assert by_name["down"].stayed and by_name["down"].plan.out_block == (1, 1)  # consumes enc0's domain directly
    assert by_name["up"].kind == "conv2d_transpose" and by_name["head"].stayed
    check_exact(before, after, (1, 4, *hw), "float32")


def _up_then_conv(shape, layout, k, s, p, op):
    net = Net(shape, layout=layout)
    up = net.conv_transpose(net.x, 4, k, s, padding=p, output_padding=op, name="up")
    return net.module(net.conv(net.emit(relax.op.nn.relu(up)), 4, 3, padding=1, name="after"))


@pytest.mark.parametrize("k,s,p,op", [(4, 2, 1, 0), (3, 2, 1, 1), (5, 2, 2, 1), (3, 3, 0, 2), (2, 2, 0, 0), (7, 4, 3, 3)])
@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_transposed_conv_is_exact_and_can_feed_a_conv_in_the_domain(k, s, p, op, layout):
    """NHWC transposed convs do not compile in TVM 0.27 (no legalization); rewritten, they do.
    Their reference is the same network (same weights) in NCHW."""
    before = _up_then_conv((2, 6, 7, 9), "NCHW", k, s, p, op)
    source = before if layout == "NCHW" else _up_then_conv((2, 7, 9, 6), "NHWC", k, s, p, op)
    after, pass_ = rewrite(source, block=s)
    up_decision, conv_decision = pass_.decisions
    assert up_decision.rewritten and up_decision.plan.out_block == (s, s)
    assert len(ops_in(after, "relax.nn.conv2d_transpose")) == 0
    assert conv_decision.stayed and permutes(after) == 1  # only the final D2S
    x = random_tensor(RNG, (2, 6, 7, 9), "float32")
    got = run(after, x if layout == "NCHW" else x.transpose(0, 2, 3, 1))
    assert_same(got if layout == "NCHW" else got.transpose(0, 3, 1, 2), run(before, x), "float32")


# ---- width-to-depth tails in NHWC: reshapes only ---------------------------------------------------


def test_width_to_depth_trades_a_pad_for_a_smaller_kernel_when_moves_are_cheap():
    net = Net((1, 32, 64, 16), layout="NHWC")
    before = net.module(net.conv(net.conv(net.x, 16, 3, padding=1), 3, 3, padding=1))
    after, pass_ = rewrite(before, block=(1, 4), move_cost=1.0)
    assert all(d.plan.kernel_hw == (3, 2) for d in pass_.decisions)  # 3x3 taps over 4-wide blocks: 2 block columns
    assert count_ops(after, DATA_MOVEMENT_OPS)["relax.nn.pad"] == 2
    assert count_ops(after, DATA_MOVEMENT_OPS)["relax.permute_dims"] == 0
    check_exact(before, after, (1, 32, 64, 16), "float32")


@pytest.mark.parametrize("dtype", ["float32", "int8"])
def test_width_to_depth_tail_in_nhwc_moves_no_data(dtype):
    net = Net((1, 32, 64, 16), dtype, layout="NHWC")
    y = net.conv(net.x, 16, 3, padding=1, name="body")
    if dtype == "int8":
        y = net.emit(relax.op.astype(relax.op.clip(y, -128, 127), "int8"))
    y = net.conv(y, 3, 3, padding=1, name="tail")
    before = net.module(y)
    after, pass_ = rewrite(before, block=(1, 4))
    assert all(d.rewritten for d in pass_.decisions) and pass_.decisions[1].stayed
    movement = count_ops(after, DATA_MOVEMENT_OPS)
    assert sum(movement.values()) == 0, movement  # no transpose, pad or crop: reshapes only
    (tail,) = [c for c in ops_in(after) if int(c.ty.shape.values[3]) == 12]  # 1024x256x12 style: 3 x 4 channels
    assert [int(d) for d in tail.ty.shape.values] == [1, 32, 16, 12]
    check_exact(before, after, (1, 32, 64, 16), dtype)
