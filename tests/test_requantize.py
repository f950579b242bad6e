"""Integer requantization: the integers against the float epilogue (at most one step), the
pass against its numpy reference, the HVX kernel under qemu against both."""

import numpy as np
import pytest
import tvm
from tvm import relax

from helpers import require_hexagon_tools, run
from tvm_s2d.geometry.fixed_point import fixed_point, requantize
from tvm_s2d.passes.quantized.integer import IntegerRequantize
from tvm_s2d.schedules.hexagon.requantize import averaging, channel_constants, lane_constants, requantize_kernel

RNG = np.random.default_rng(0)
RANGES = {"uint8": (0, 255), "int8": (-128, 127)}


def _epilogue_module(shape, scale, bias, sy, zy, act, dtype):
    """``quantize(act(float(acc) * scale + bias), sy, zy)`` on an int32 NCHW input."""
    bb = relax.BlockBuilder()
    acc = relax.Var("acc", relax.TensorType(shape, "int32"))
    with bb.function("main", [acc]):
        with bb.dataflow():
            y = bb.emit(relax.op.multiply(relax.op.astype(acc, "float32"), relax.const(scale)))
            y = bb.emit(relax.op.add(y, relax.const(bias)))
            if act == "relu":
                y = bb.emit(relax.op.nn.relu(y))
            elif act == "clip":
                y = bb.emit(relax.op.clip(y, -1.0, 3.0))
            q = relax.op.quantize(y, relax.const(np.float32(sy)), relax.const(np.array(zy, dtype)), axis=1, out_dtype=dtype)
            out = bb.emit_output(bb.emit(q))
        bb.emit_func_output(out)
    return bb.get()


def _constants(per_channel, channels=8):
    scale = ((RNG.random(channels) * 0.01 + 0.001) if per_channel else np.full(1, 0.004)).astype(np.float32) * np.float32(0.05)
    b = RNG.integers(-3000, 3000, channels)
    bias = (b * scale).astype(np.float32)
    return scale.reshape(1, -1, 1, 1), bias.reshape(1, -1, 1, 1)


@pytest.mark.parametrize("per_channel", [True, False])
@pytest.mark.parametrize("act", ["none", "relu", "clip"])
@pytest.mark.parametrize("dtype", ["uint8", "int8"])
def test_integers_within_one_step_of_the_float_epilogue(per_channel, act, dtype):
    shape, sy, zy = (2, 8, 13, 11), 0.08, (100 if dtype == "uint8" else -3)
    scale, bias = _constants(per_channel)
    mod = _epilogue_module(shape, scale, bias, sy, zy, act, dtype)
    integer = IntegerRequantize()
    rewritten = integer(mod)
    assert [o.applied for o in integer.outcomes] == [True]
    acc = RNG.integers(-300000, 300000, shape).astype(np.int32)
    got = run(rewritten, acc)
    lo, hi = RANGES[dtype]
    if act == "relu":
        lo = max(lo, zy)
    elif act == "clip":
        lo, hi = max(lo, int(np.rint(-1.0 / sy)) + zy), min(hi, int(np.rint(3.0 / sy)) + zy)
    b = np.rint(bias.astype(np.float64) / scale.astype(np.float64)).astype(np.int64)
    m, r = fixed_point(np.broadcast_to(scale.astype(np.float64) / np.float64(np.float32(sy)), scale.shape))
    np.testing.assert_array_equal(got, requantize(acc.astype(np.int64) + b, m, r, zy, lo, hi, dtype))  # the reference
    steps = np.abs(got.astype(int) - run(mod, acc).astype(int))  # against the float epilogue
    assert steps.max() <= 1 and (steps > 0).mean() < 0.01


def test_a_bias_off_the_accumulator_grid_keeps_the_float_epilogue():
    """Rounding the bias to the accumulator's grid (``s = 0.04``) would move outputs by 0.15 of
    a step (``sy = 0.08``): the float epilogue stays."""
    scale = np.full((1, 8, 1, 1), 0.04, np.float32)
    mod = _epilogue_module((1, 8, 4, 4), scale, scale * np.float32(0.3), 0.08, 100, "none", "uint8")
    integer = IntegerRequantize()
    tvm.ir.assert_structural_equal(integer(mod), mod)
    assert "not a multiple of x_scale * w_scale" in integer.outcomes[0].reason


# periods of the constants of 1-4 vectors and of 9 (144 channels), tails of vectors and of elements
@pytest.mark.parametrize("shape,dtype,clamp", [((1, 16, 20, 32), "uint8", None), ((1, 7, 9, 8), "uint8", (30, 200)),
                                               ((2, 5, 5, 3), "int8", None), ((1, 4, 4, 64), "int8", (-5, 127)),
                                               ((1, 6, 7, 144), "uint8", None), ((1, 5, 9, 96), "int8", (-100, 90))])
@pytest.mark.parametrize("average", [False, True])
def test_hvx_requantize_kernel_is_bit_exact(shape, dtype, clamp, average):
    require_hexagon_tools()
    from tvm_s2d.emulator.qemu import run_kernel

    lo, hi = clamp or RANGES[dtype]
    channels = shape[-1]
    acc = RNG.integers(-200000, 200000, shape).astype(np.int32)
    b = RNG.integers(-500, 500, channels).astype(np.int32)
    m, r = fixed_point(RNG.random(channels) * 0.01 + 0.0005)
    pre = RNG.integers(0, 12, channels)  # headroom shifts: |acc + b| < 2**18
    constants = lane_constants(b, m, r + pre, channels, pre)
    expected = requantize(acc.astype(np.int64) + b, m, r + pre, 17, lo, hi, dtype, pre)
    assert averaging(r + pre)
    hvx = run_kernel(requantize_kernel(shape, 17, lo, hi, dtype, average=average), [acc, *constants], [(shape, dtype)])
    np.testing.assert_array_equal(hvx.outputs[0], expected)
    assert hvx.packets < 4 * acc.size  # vector code: under one packet an element on whole vectors
    plain = tvm.compile(tvm.IRModule({"main": requantize_kernel(shape, 17, lo, hi, dtype, hvx_code=False)}), target="llvm")
    out = tvm.runtime.tensor(np.zeros(shape, dtype))
    plain(tvm.runtime.tensor(acc), *[tvm.runtime.tensor(c) for c in constants], out)
    np.testing.assert_array_equal(out.numpy(), expected)


# a table of every segment, one with two segments of its base (a HardSwish's zero), an int8 table
@pytest.mark.parametrize("shape,dtype,table_dtype,filled", [((1, 16, 20, 32), "uint8", "uint8", 0),
                                                            ((1, 7, 9, 8), "uint8", "int8", 2),
                                                            ((2, 5, 5, 3), "int8", "uint8", 2),
                                                            ((1, 6, 7, 144), "uint8", "uint8", 3),
                                                            ((1, 3, 3, 576), "uint8", "uint8", 2),
                                                            ((1, 6, 6, 120), "int8", "int8", 1)])
def test_hvx_requantize_kernel_with_a_lookup_is_bit_exact(shape, dtype, table_dtype, filled):
    """The requantized bytes through a 256-entry table in the same kernel (``table``): every path
    (whole spans, groups, vectors, elements), the HVX kernel and its plain loop against numpy."""
    require_hexagon_tools()
    from tvm_s2d.emulator.qemu import run_kernel
    from tvm_s2d.schedules.hexagon.lookup import arrange_table, table_segments
    from tvm_s2d.schedules.hexagon.requantize import Table

    lo, hi = RANGES[dtype]
    channels = shape[-1]
    acc = RNG.integers(-200000, 200000, shape).astype(np.int32)
    b = RNG.integers(-500, 500, channels).astype(np.int32)
    m, r = fixed_point(RNG.random(channels) * 0.01 + 0.0005)
    constants = lane_constants(b, m, r, channels)
    values = RNG.integers(*RANGES[table_dtype], 256, endpoint=True).astype(table_dtype)
    values[: 32 * filled] = values[0]  # segments of one byte: no vlut32 for them
    base, segments = table_segments(values)
    assert len(segments) == 8 - filled
    table = Table(table_dtype, base, segments)
    expected = values[requantize(acc.astype(np.int64) + b, m, r, 17, lo, hi, dtype).astype(np.int64) % 256]
    arranged = arrange_table(values, base)
    hvx = run_kernel(requantize_kernel(shape, 17, lo, hi, dtype, average=True, table=table), [acc, *constants, arranged],
                     [(shape, table_dtype)])
    np.testing.assert_array_equal(hvx.outputs[0], expected)
    plain = requantize_kernel(shape, 17, lo, hi, dtype, hvx_code=False, table=table)
    np.testing.assert_array_equal(_plain_run(plain, [acc, *constants, arranged], shape, table_dtype), expected)


def test_the_rounding_by_average_is_exact_at_a_shift_of_1_and_refused_at_0():
    """``vavg.rnd(t >> (s - 1), 2 zy)`` is ``(t + 2^(s-1)) >> s + zy`` for every int32 ``t`` and
    ``s >= 1``: multipliers in [0.25, 0.5) leave a shift of 1 (no headroom), accumulators of both
    signs at the ties; a shift of 0 keeps the ``half`` form (``averaging``)."""
    require_hexagon_tools()
    from tvm_s2d.emulator.qemu import run_kernel

    shape, channels = (1, 4, 8, 32), 32
    acc = RNG.integers(-(2**20), 2**20, shape).astype(np.int32)
    b = RNG.integers(-500, 500, channels).astype(np.int32)
    acc[0, 0] = np.arange(-16, 16, 4)[:, None] + np.arange(channels)[None, :] % 4 - b  # small sums, ties
    m, r = fixed_point(RNG.random(channels) * 0.2 + 0.26)
    assert np.all(r == 1)
    constants = lane_constants(b, m, r, channels)
    expected = requantize(acc.astype(np.int64) + b, m, r, 3, 0, 255, "uint8")
    hvx = run_kernel(requantize_kernel(shape, 3, 0, 255, "uint8", average=True), [acc, *constants], [(shape, "uint8")])
    np.testing.assert_array_equal(hvx.outputs[0], expected)
    assert not averaging(np.array([3, 0, 5])) and averaging(np.array([1, 7]))


# ---- the quantized residual add ---------------------------------------------------------------


def _add_module(shape, sa, za, sb, zb, sy, zy, relu, dtype="uint8"):
    from tvm_s2d.passes.quantized.integer import IntegerAdd  # noqa: F401  (the pass under test)

    bb = relax.BlockBuilder()
    qa, qb = (relax.Var(n, relax.TensorType(shape, "uint8")) for n in ("qa", "qb"))
    with bb.function("main", [qa, qb]):
        with bb.dataflow():
            fa = bb.emit(relax.op.dequantize(qa, relax.const(np.float32(sa)), relax.const(np.uint8(za)), axis=3))
            fb = bb.emit(relax.op.dequantize(qb, relax.const(np.float32(sb)), relax.const(np.uint8(zb)), axis=3))
            y = bb.emit(relax.op.add(fa, fb))
            if relu:
                y = bb.emit(relax.op.nn.relu(y))
            q = relax.op.quantize(y, relax.const(np.float32(sy)), relax.const(np.array(zy, dtype)), axis=3, out_dtype=dtype)
            out = bb.emit_output(bb.emit(q))
        bb.emit_func_output(out)
    return bb.get()


@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("scales", [(0.05, 0.02, 0.06), (0.1, 0.1, 0.15), (0.013, 0.07, 0.05)])
def test_integer_add_within_one_step_of_the_float_add(relu, scales):
    from tvm_s2d.passes.quantized.integer import IntegerAdd

    shape = (1, 9, 11, 8)
    sa, sb, sy = scales
    mod = _add_module(shape, sa, 120, sb, 3, sy, 128, relu)
    integer = IntegerAdd()
    rewritten = integer(mod)
    assert [o.applied for o in integer.outcomes] == [True]
    qa, qb = (RNG.integers(0, 256, shape).astype(np.uint8) for _ in range(2))
    got, expected = run(rewritten, qa, qb), run(mod, qa, qb)
    steps = np.abs(got.astype(int) - expected.astype(int))
    # commensurate scales put many sums exactly halfway (e.g. (5a + 2b) / 6 for the first
    # scales: a sixth of them); the integers round those up, the float to even: up to ~10% differ
    assert steps.max() <= 1 and (steps > 0).mean() < 0.10


@pytest.mark.parametrize("dtypes,shape", [(("uint8", "uint8", "uint8"), (1, 9, 11, 8)), (("int8", "uint8", "int8"), (1, 9, 11, 8)),
                                          (("uint8", "uint8", "uint8"), (1, 10, 10, 1))])  # 100 values: no whole vector
def test_hvx_integer_add_kernel_is_bit_exact(dtypes, shape):
    """Packed groups of 128 and a tail (792 values: the last 128 once more); under 128 values a
    plain loop. Regression: tails ran a value at a time (MobileNetV3's 6x6x48 adds: 1.2k packets)."""
    require_hexagon_tools()
    from tvm_s2d.emulator.qemu import run_kernel
    from tvm_s2d.passes.quantized.integer_add import terms
    from tvm_s2d.schedules.hexagon.requantize import requantize_add_kernel

    a_dtype, b_dtype, dtype = dtypes
    ma, mb, s = terms(0.05, 0.02)
    m, r = fixed_point(np.array(s / 0.06))
    qa, qb = (RNG.integers(*RANGES[t], shape, endpoint=True).astype(t) for t in (a_dtype, b_dtype))
    za, zy = (120, 128) if a_dtype == "uint8" else (-7, 3)
    lo, hi = (10, 255) if dtype == "uint8" else (-128, 120)
    acc = (qa.astype(np.int64) - za) * ma + (qb.astype(np.int64) - 3) * mb
    expected = requantize(acc, m, r, zy, lo, hi, dtype)
    args = (shape, a_dtype, za, ma, b_dtype, 3, mb, int(m), int(r), zy, lo, hi, dtype)
    hvx = run_kernel(requantize_add_kernel(*args), [qa, qb], [(shape, dtype)])
    np.testing.assert_array_equal(hvx.outputs[0], expected)
    if acc.size >= 128:
        assert hvx.packets < acc.size / 3  # widened by vunpack: vector code, the tail too
    plain = tvm.compile(tvm.IRModule({"main": requantize_add_kernel(*args, hvx_code=False)}), target="llvm")
    out = tvm.runtime.tensor(np.zeros(shape, dtype))
    plain(tvm.runtime.tensor(qa), tvm.runtime.tensor(qb), out)
    np.testing.assert_array_equal(out.numpy(), expected)


# ---- requantization of channel-major accumulators (the width mapping's conv output) ---------


def _channel_major_case(shape, dtype, clamp=None):
    n, c, h, wp = shape
    acc = RNG.integers(-200000, 200000, shape).astype(np.int32)
    b = RNG.integers(-500, 500, c).astype(np.int32)
    m, r = fixed_point(RNG.random(c) * 0.01 + 0.0005)
    pre = RNG.integers(0, 12, c)  # headroom shifts: |acc + b| < 2**18
    lo, hi = clamp or RANGES[dtype]
    nhwc = requantize(acc.transpose(0, 2, 3, 1).astype(np.int64) + b, m, r + pre, 17, lo, hi, dtype, pre)
    return [acc, *channel_constants(b, m, r + pre, c, pre)], nhwc, (lo, hi)


def _plain_run(func, args, out_shape, dtype):
    plain = tvm.compile(tvm.IRModule({"main": func}), target="llvm")
    out = tvm.runtime.tensor(np.zeros(out_shape, dtype))
    plain(*[tvm.runtime.tensor(a) for a in args], out)
    return out.numpy()


# C = 16 / 32 / 64: vshuff rounds; 12: word copies; 8 with a crop: rounds and a partial block;
# clamps narrower than the type (ReLU, Clip) on the packed bytes
@pytest.mark.parametrize("shape,out_w,dtype,clamp", [((1, 16, 5, 64), 64, "uint8", None), ((2, 8, 3, 64), 50, "int8", None),
                                                     ((1, 12, 4, 64), 61, "uint8", (17, 255)),
                                                     ((1, 4, 2, 32), 32, "uint8", (30, 200)),
                                                     ((1, 64, 1, 32), 32, "int8", (-5, 127))])
def test_hvx_requantize_transpose_kernel_writes_nhwc_bit_exact(shape, out_w, dtype, clamp):
    require_hexagon_tools()
    from tvm_s2d.emulator.qemu import run_kernel
    from tvm_s2d.schedules.hexagon.layouts import requantize_transpose_kernel

    args, nhwc, (lo, hi) = _channel_major_case(shape, dtype, clamp)
    expected = nhwc[:, :, :out_w]
    out_shape = expected.shape
    hvx = run_kernel(requantize_transpose_kernel(shape, out_w, 17, lo, hi, dtype), args, [(out_shape, dtype)])
    np.testing.assert_array_equal(hvx.outputs[0], expected)
    assert hvx.packets < expected.size  # vector code: under one packet an element
    plain = requantize_transpose_kernel(shape, out_w, 17, lo, hi, dtype, hvx_code=False)
    np.testing.assert_array_equal(_plain_run(plain, args, out_shape, dtype), expected)


@pytest.mark.parametrize("shape,out_w,dtype", [((1, 3, 6, 64), 64, "uint8"), ((2, 5, 3, 64), 50, "int8"),
                                               ((1, 3, 5, 32), 30, "uint8")])
def test_hvx_requantize_channel_major_kernel_is_bit_exact(shape, out_w, dtype):
    require_hexagon_tools()
    from tvm_s2d.emulator.qemu import run_kernel
    from tvm_s2d.schedules.hexagon.layouts import requantize_channel_major_kernel

    args, nhwc, (lo, hi) = _channel_major_case(shape, dtype)
    expected = np.ascontiguousarray(nhwc.transpose(0, 3, 1, 2)[..., :out_w])
    hvx = run_kernel(requantize_channel_major_kernel(shape, out_w, 17, lo, hi, dtype), args, [(expected.shape, dtype)])
    np.testing.assert_array_equal(hvx.outputs[0], expected)
    plain = requantize_channel_major_kernel(shape, out_w, 17, lo, hi, dtype, hvx_code=False)
    np.testing.assert_array_equal(_plain_run(plain, args, expected.shape, dtype), expected)


def test_kernels_refuse_layouts_they_cannot_vectorize():
    from tvm_s2d.schedules.hexagon.layouts import requantize_channel_major_kernel, requantize_transpose_kernel

    with pytest.raises(ValueError, match="multiple of 4"):
        requantize_transpose_kernel((1, 3, 2, 32), 32, 0, 0, 255, "uint8")
    with pytest.raises(ValueError, match="multiple of 32"):
        requantize_channel_major_kernel((1, 3, 2, 30), 30, 0, 0, 255, "uint8")


def test_the_headroom_shift_makes_a_conv_epilogue_round_like_the_float_one():
    """With the accumulator shifted left into its headroom (a conv's bound 255 * sum|W| + |b| is
    known), the first rounding keeps ~2^-20 of a step: next to no value differs from the float
    epilogue (without it, ~2^-(r+1) of a step: 0.1-0.2% of values in real models)."""
    shape, channels = (1, 16, 24, 24), 16
    weight = RNG.integers(-127, 128, (channels, 16, 3, 3)).astype(np.int32)
    scale = (RNG.random(channels) * 0.004 + 0.001).astype(np.float32).reshape(1, -1, 1, 1) * np.float32(0.02)
    bias = (RNG.integers(-3000, 3000, channels).reshape(1, -1, 1, 1) * scale).astype(np.float32)
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType(shape, "int32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            acc = bb.emit(relax.op.nn.conv2d(x, relax.const(weight), padding=1, out_dtype="int32"))
            y = bb.emit(relax.op.add(relax.op.multiply(relax.op.astype(acc, "float32"), relax.const(scale)),
                                     relax.const(bias)))
            q = relax.op.quantize(y, relax.const(np.float32(0.05)), relax.const(np.uint8(100)), axis=1, out_dtype="uint8")
            out = bb.emit_output(bb.emit(q))
        bb.emit_func_output(out)
    mod = bb.get()
    rewritten = IntegerRequantize()(mod)
    shifts = [c.args[1].value.numpy() for c in _calls(rewritten, "relax.right_shift")]
    assert shifts[0].min() < 31  # the first rounding shift is 31 - headroom
    xs = RNG.integers(-128, 128, shape).astype(np.int32)
    steps = np.abs(run(rewritten, xs).astype(int) - run(mod, xs).astype(int))
    assert steps.max() <= 1 and (steps > 0).mean() < 1e-4



@pytest.mark.parametrize("ratio,taken", [(3.7, True), (0.9, True), (2.0**12, False)])
def test_a_ratio_of_one_or_more_shifts_left_within_the_headroom(ratio, taken):
    """Regression: ``tvm-s2d quantize --random`` gave ResNet-18 ratios x_scale * w_scale /
    y_scale of 1 or more on 20 of 21 convs, which kept the float epilogue (11.1M packets on
    Hexagon, 16% on HVX). A ratio of 1 or more is ``M / 2**(31 + r)`` with ``r < 0``: the
    headroom shift ``pre >= -r`` takes it where the conv's bound leaves the bits; else refused
    with the reason."""
    shape, channels = (1, 8, 10, 9), 8
    weight = RNG.integers(-127, 128, (channels, 8, 3, 3)).astype(np.int32)
    scale = np.full((1, channels, 1, 1), np.float32(ratio * 0.05), np.float32)
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType(shape, "int32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            acc = bb.emit(relax.op.nn.conv2d(x, relax.const(weight), padding=1, out_dtype="int32"))
            y = bb.emit(relax.op.nn.relu(relax.op.multiply(relax.op.astype(acc, "float32"), relax.const(scale))))
            q = relax.op.quantize(y, relax.const(np.float32(0.05)), relax.const(np.uint8(3)), axis=1, out_dtype="uint8")
            out = bb.emit_output(bb.emit(q))
        bb.emit_func_output(out)
    mod = bb.get()
    rule = IntegerRequantize()
    rewritten = rule(mod)
    (outcome,) = rule.outcomes
    assert outcome.applied == taken, outcome
    if not taken:
        assert "beyond the accumulator's headroom" in outcome.reason
        return
    xs = RNG.integers(-3, 4, shape).astype(np.int32)  # small: outputs inside the range, not all clamped
    got, expected = run(rewritten, xs).astype(int), run(mod, xs).astype(int)
    assert 0 < (expected > 3).mean() and (expected < 255).mean() > 0.3
    steps = np.abs(got - expected)  # a step at exact ties (0.9 * 5 = 4.5): the float rounds half to even
    assert steps.max() <= 1 and (steps > 0).mean() < 0.01

def _calls(mod, name):
    found = []
    relax.analysis.post_order_visit(mod["main"], lambda e: found.append(e) if isinstance(e, relax.Call)
                                    and isinstance(e.op, tvm.ir.Op) and e.op.name == name else None)
    return found


@pytest.mark.parametrize("shape,channels,dtype,clamp", [((1, 6, 16, 32), 16, "uint8", None), ((1, 8, 9, 32), 8, "uint8", (9, 255)),
                                                        ((1, 5, 7, 64), 4, "int8", None),
                                                        ((1, 24, 24, 64), 48, "uint8", (0, 255)),  # wide: 48 of 64
                                                        ((1, 6, 7, 160), 144, "int8", (-100, 127)),  # a tail of pixels
                                                        ((2, 5, 5, 96), 72, "uint8", (3, 250)),
                                                        ((1, 7, 9, 64), 40, "uint8", (0, 255)),
                                                        ((1, 6, 6, 128), 120, "uint8", (0, 255)),  # 480 values past a period
                                                        ((1, 6, 6, 96), 88, "int8", (-128, 127))])
@pytest.mark.parametrize("average", [False, True])
def test_hvx_requantize_slice_kernel_reads_padded_channels_bit_exact(shape, channels, dtype, clamp, average):
    """The channel-in-lanes mapping's output has its channels padded to 32: the kernel gathers
    the real ones (several pixels a vector; over 32 channels, a vector from at most two pixels)
    and requantizes them, the slice in the kernel. Regression: channels over 32 (MnasNet's 48)
    were sliced by a scalar kernel first (2.8k packets at 24x24x48); then the values past the last
    period of lcm(C, 128) ran a plain loop that came out wrong on 6x6x120 (MobileNetV3-Small)."""
    require_hexagon_tools()
    from tvm_s2d.emulator.qemu import run_kernel
    from tvm_s2d.schedules.hexagon.layouts import requantize_slice_kernel

    acc = RNG.integers(-200000, 200000, shape).astype(np.int32)
    b = RNG.integers(-500, 500, channels).astype(np.int32)
    m, r = fixed_point(RNG.random(channels) * 0.01 + 0.0005)
    pre = RNG.integers(0, 12, channels)
    lo, hi = clamp or RANGES[dtype]
    expected = requantize(acc[..., :channels].astype(np.int64) + b, m, r + pre, 17, lo, hi, dtype, pre)
    constants = lane_constants(b, m, r + pre, channels, pre)
    hvx = run_kernel(requantize_slice_kernel(shape, channels, 17, lo, hi, dtype, average=average), [acc, *constants],
                     [(expected.shape, dtype)])
    np.testing.assert_array_equal(hvx.outputs[0], expected)
    plain = requantize_slice_kernel(shape, channels, 17, lo, hi, dtype, hvx_code=False)
    np.testing.assert_array_equal(_plain_run(plain, [acc, *constants], expected.shape, dtype), expected)


@pytest.mark.parametrize("shape,channels", [((1, 6, 6, 96), 96), ((1, 5, 7, 288), 288), ((1, 6, 7, 32), 16),
                                            ((1, 6, 6, 256), 240)])
def test_hvx_requantize_kernels_without_headroom_shifts_skip_the_shift(shape, channels):
    """With every headroom shift 0 (``pre_shift=False``, as ``HexagonRequantize`` passes then), the
    requantization kernels make no shift for it: the same integers, fewer packets (the shifts
    share one HVX resource with the final shift and the packs)."""
    require_hexagon_tools()
    from tvm_s2d.emulator.qemu import run_kernel
    from tvm_s2d.schedules.hexagon.layouts import requantize_slice_kernel

    acc = RNG.integers(-200000, 200000, shape).astype(np.int32)
    b = RNG.integers(-500, 500, channels).astype(np.int32)
    m, r = fixed_point(RNG.random(channels) * 0.0005 + 0.00005)
    expected = requantize(acc[..., :channels].astype(np.int64) + b, m, r, 17, 0, 255, "uint8")
    constants = lane_constants(b, m, r, channels, 0)
    packets = []
    for pre_shift in (True, False):
        func = (requantize_kernel(shape, 17, 0, 255, "uint8", average=True, pre_shift=pre_shift) if channels == shape[-1]
                else requantize_slice_kernel(shape, channels, 17, 0, 255, "uint8", average=True, pre_shift=pre_shift))
        hvx = run_kernel(func, [acc, *constants], [(expected.shape, "uint8")])
        np.testing.assert_array_equal(hvx.outputs[0], expected)
        packets.append(hvx.packets)
    assert packets[1] < packets[0]


# ---- the width-vectorized conv with its requantization in one kernel -------------------------


@pytest.mark.parametrize("shape,channels,kernel,out_w,dtype,clamp", [
    ((1, 4, 10, 66), 16, 3, 64, "uint8", None),  # two whole blocks a row, two shuffle rounds
    ((1, 2, 10, 34), 8, 3, 30, "uint8", (5, 255)),  # a partial block (the crop), ReLU-like clamp; rows in pairs
    ((1, 2, 9, 34), 8, 3, 32, "uint8", None),  # 7 rows: the last pair ends at the last row (row 5 twice)
    ((2, 1, 6, 36), 4, 5, 32, "int8", None),  # batch 2, no shuffle round, one pair of rows
    ((1, 1, 3, 66), 4, 3, 64, "uint8", None),  # one row: no pair
])
def test_hvx_fused_width_conv_and_requantization_is_bit_exact(shape, channels, kernel, out_w, dtype, clamp):
    require_hexagon_tools()
    from tvm_s2d.emulator.qemu import run_kernel
    from tvm_s2d.schedules.hexagon.fused import fused_reference, fused_weight, width_conv_requantized

    n, groups, hp, wp = shape
    x = RNG.integers(0, 256, (n, groups, hp, wp, 4)).astype(np.uint8)
    w = RNG.integers(-128, 128, (channels, kernel, kernel, groups, 4)).astype(np.int8)  # as WidthConv packs them
    b = RNG.integers(-500, 500, channels).astype(np.int32)
    m, r = fixed_point(RNG.random(channels) * 0.0005 + 0.00005)
    pre = RNG.integers(0, 6, channels)
    lo, hi = clamp or RANGES[dtype]
    expected = requantize(fused_reference(x, w, out_w) + b, m, r + pre, 17, lo, hi, dtype, pre)
    args = [x, fused_weight(w), *channel_constants(b, m, r + pre, channels, pre)]
    func = width_conv_requantized(x.shape, fused_weight(w).shape, out_w, 17, lo, hi, dtype)
    hvx = run_kernel(func, args, [(expected.shape, dtype)])
    np.testing.assert_array_equal(hvx.outputs[0], expected)
    plain = width_conv_requantized(x.shape, fused_weight(w).shape, out_w, 17, lo, hi, dtype, hvx_code=False)
    np.testing.assert_array_equal(_plain_run(plain, args, expected.shape, dtype), expected)


@pytest.mark.parametrize("spec,dtype,clamp", [
    ((1, (97, 25), 12, 32, (3, 2), (2, 1)), "uint8", None),  # the RGB stem after width-to-depth: 2 pixels x 16
    ((2, (9, 14), 8, 24, (1, 1), (1, 1)), "int8", None),  # batch 2, 8 padded lanes, rows of 14 (blocks of 7 -> 8)
    ((1, (11, 30), 4, 16, (3, 3), (2, 2)), "uint8", (7, 250)),  # strided, a clamp, a last block overlapping
])
def test_hvx_fused_lanes_conv_and_requantization_is_bit_exact(spec, dtype, clamp):
    """``lanes_requantized``: the channel-in-lanes conv of one 32-lane block with its
    requantization in the kernel (4 pixels a 128-byte store), against numpy's conv and
    requantization, as plain loops too."""
    require_hexagon_tools()
    from tvm_s2d.emulator.qemu import run_kernel
    from tvm_s2d.schedules.hexagon.lanes import PackedConv
    from tvm_s2d.schedules.hexagon.lanes_fused import lanes_requantized

    conv = PackedConv(*spec)
    (oh, ow), (kh, kw), (sh, sw) = conv.out_hw, conv.kernel_hw, conv.strides
    x = RNG.integers(0, 256, conv.input_shape).astype(np.uint8)
    w = np.zeros((32, conv.cin, kh, kw), np.int8)
    w[:conv.out_channels, :conv.in_channels] = RNG.integers(-128, 128, (conv.out_channels, conv.in_channels, kh, kw))
    acc = np.zeros((conv.batch, oh, ow, 32), np.int64)
    for ky in range(kh):
        for kx in range(kw):
            window = x[:, ky : ky + (oh - 1) * sh + 1 : sh, kx : kx + (ow - 1) * sw + 1 : sw].astype(np.int64)
            acc += np.einsum("nhwc,oc->nhwo", window, w[:, :, ky, kx].astype(np.int64))
    b = RNG.integers(-500, 500, 32).astype(np.int32)
    m, r = fixed_point(RNG.random(32) * 0.0005 + 0.00005)
    pre = RNG.integers(0, 6, 32)
    lo, hi = clamp or RANGES[dtype]
    expected = requantize(acc + b, m, r + pre, 17, lo, hi, dtype, pre)
    offsets = conv.window_offsets(hvx=False)
    sums = tvm.compile(tvm.IRModule({"main": offsets}), target="llvm")
    off = tvm.runtime.tensor(np.zeros(conv.offsets_shape, np.int32))
    sums(tvm.runtime.tensor(x), off)
    args = [x, conv.pack_weight(w[:conv.out_channels, :conv.in_channels]), off.numpy(),
            *lane_constants(b, m, r + pre, 32, pre)]
    hvx = run_kernel(lanes_requantized(conv, 17, lo, hi, dtype), args, [(expected.shape, dtype)])
    np.testing.assert_array_equal(hvx.outputs[0], expected)
    plain = lanes_requantized(conv, 17, lo, hi, dtype, hvx_code=False)
    np.testing.assert_array_equal(_plain_run(plain, args, expected.shape, dtype), expected)


def test_unaligned_activation_loads_stay_single_loads():
    """``targets.HEXAGON_LLVM_OPTIONS`` keeps LLVM from realigning unaligned HVX loads (aligned
    loads + a ``valign`` each, in the HVX slots ``vrmpy`` needs): the seed layer's fused conv
    loads its shifted taps by ``vmemu`` and has no ``valign`` (regression of 24 a block)."""
    from tvm_s2d.emulator.qemu import kernel_assembly
    from tvm_s2d.schedules.hexagon.fused import width_conv_requantized

    asm = kernel_assembly(width_conv_requantized((1, 2, 130, 160, 4), (3, 3, 2, 8, 4), 128, 0, 0, 255, "uint8"))
    assert "vmemu(" in asm
    assert "valign(" not in asm
