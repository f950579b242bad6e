"""The emitters and their recognisers: ``match_space_to_depth`` reads back exactly what
``emit_space_to_depth`` / ``emit_depth_to_space`` wrote; ``HexagonRequantize``'s matchers what
``HexagonConvs`` writes after an HVX conv kernel (``passes/hexagon/conv_output.py``)."""

import numpy as np
import pytest
from tvm import relax

from tvm_s2d.geometry import d2s_steps, is_pure_reshape, s2d_steps
from tvm_s2d.passes.hexagon.conv_output import (emit_corrected, emit_depthwise_output, emit_lanes_output, emit_width_output,
                                                match_channel_major, match_correction, match_depthwise_output,
                                                match_padded_channels)
from tvm_s2d.passes.relax_tools import static_shape
from tvm_s2d.passes.s2d.emit import Movement, emit_depth_to_space, emit_space_to_depth, match_space_to_depth


def _emitted(shape, block, layout, inverse):
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType(shape, "uint8"))
    with bb.function("main", [x]):
        with bb.dataflow():
            emit = emit_depth_to_space if inverse else emit_space_to_depth
            out = bb.emit_output(bb.emit(emit(bb, x, block, layout, "m"), "moved"))
        bb.emit_func_output(out)
    func = bb.get()["main"]
    var2val = relax.analysis.get_var2val(func)
    last = func.body.blocks[0].bindings[-1].value
    return x, var2val[last] if isinstance(last, relax.Var) else last, var2val


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("block", [(2, 2), (3, 3), (1, 2), (2, 1), (4, 4)])
@pytest.mark.parametrize("inverse", [False, True])
def test_round_trip(layout, block, inverse):
    channels = 3 * block[0] * block[1] if inverse else 3
    shape = (2, channels, 12, 24) if layout == "NCHW" else (2, 12, 24, channels)
    split, perm, _ = (d2s_steps if inverse else s2d_steps)(shape, block, layout)
    if is_pure_reshape(split, perm):
        pytest.skip("a pure reshape: one step, nothing to recognise")
    x, call, var2val = _emitted(shape, block, layout, inverse)
    found = match_space_to_depth(call, var2val)
    assert isinstance(found, Movement), found
    assert (found.x.same_as(x), found.block, found.layout, found.inverse) == (True, block, layout, inverse)


def test_other_triples_are_refused_with_a_reason():
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((1, 4, 6, 6), "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            a = bb.emit(relax.op.reshape(x, (1, 4, 3, 2, 3, 2)))
            b = bb.emit(relax.op.permute_dims(a, [0, 1, 2, 3, 5, 4]))  # not an S2D permutation
            out = bb.emit_output(bb.emit(relax.op.reshape(b, (1, 4, 6, 6))))
        bb.emit_func_output(out)
    func = bb.get()["main"]
    var2val = relax.analysis.get_var2val(func)
    assert match_space_to_depth(var2val[out], var2val) == "not the space-to-depth or depth-to-space of any block"
    assert match_space_to_depth(var2val[a], var2val) == "not a reshape -> permute_dims -> reshape"


@pytest.mark.parametrize("shape,axis,groups", [((1, 116, 3, 4), 1, 2), ((2, 5, 6, 24), 3, 3), ((1, 3, 4, 8), 3, 4)])
def test_channel_shuffle_round_trip(shape, axis, groups):
    """What ``emit_channel_shuffle`` emits, ``match_channel_shuffle`` reads back (and not as a
    space-to-depth); on an array it is element ``i * K + j`` to ``j * groups + i``."""
    from tvm_s2d.geometry import channel_shuffle
    from tvm_s2d.passes.channel_shuffle import Shuffle, emit_channel_shuffle, match_channel_shuffle

    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType(shape, "uint8"))
    with bb.function("main", [x]):
        with bb.dataflow():
            out = bb.emit_output(bb.emit(emit_channel_shuffle(bb, x, axis, groups, "s")))
        bb.emit_func_output(out)
    func = bb.get()["main"]
    var2val = relax.analysis.get_var2val(func)
    found = match_channel_shuffle(var2val[out], var2val)
    assert isinstance(found, Shuffle) and (found.x.same_as(x), found.axis, found.groups) == (True, axis, groups)
    assert isinstance(match_space_to_depth(var2val[out], var2val), str)
    values = np.arange(int(np.prod(shape))).reshape(shape)
    k = shape[axis] // groups
    for i in range(groups):
        for j in range(k):
            np.testing.assert_array_equal(np.take(channel_shuffle(values, axis, groups), j * groups + i, axis),
                                          np.take(values, i * k + j, axis))


def _hvx_output(shape, emit):
    """``emit(bb, y)`` on an int32 kernel output ``y`` of ``shape``, then the zero-point
    correction (NHWC); the function's ``(y, bound values, the corrected value)``."""
    bb = relax.BlockBuilder()
    y = relax.Var("y", relax.TensorType(shape, "int32"))
    with bb.function("main", [y]):
        with bb.dataflow():
            x = emit(bb, y)
            weight = np.arange(static_shape(x)[-1] * 18).reshape(-1, 2, 3, 3) % 7 - 3
            out = bb.emit_output(bb.emit(emit_corrected(bb, x, weight, 5, "NHWC"), "corrected"))
        bb.emit_func_output(out)
    var2val = relax.analysis.get_var2val(bb.get()["main"])
    return y, var2val, var2val[out], 5 * weight.sum(axis=(1, 2, 3))


@pytest.mark.parametrize("out_width", [5, 32])
def test_hvx_width_output_round_trip(out_width):
    y, var2val, corrected, correction = _hvx_output((1, 8, 6, 32), lambda bb, y: emit_width_output(bb, y, out_width))
    shape = static_shape(corrected)
    x, found = match_correction(corrected, var2val, shape)
    assert (found == correction).all()
    assert match_channel_major(x, var2val, shape).same_as(y)
    assert match_padded_channels(x, var2val, shape) is None


@pytest.mark.parametrize("channels", [4, 8, 16])
def test_hvx_lanes_output_round_trip(channels):
    y, var2val, corrected, correction = _hvx_output(
        (1, 20, 32), lambda bb, y: emit_lanes_output(bb, y, 1, (4, 5), 32, channels))
    shape = static_shape(corrected)
    x, found = match_correction(corrected, var2val, shape)
    assert (found == correction).all() and shape == (1, 4, 5, channels)
    padded = match_padded_channels(x, var2val, shape)
    assert padded is not None and var2val[padded].args[0].same_as(y)  # the reshape of the kernel's output
    assert match_channel_major(x, var2val, shape) is None


def test_an_uncorrected_output_is_not_a_correction():
    y, var2val, corrected, _ = _hvx_output((1, 8, 6, 32), lambda bb, y: emit_width_output(bb, y, 5))
    x, _ = match_correction(corrected, var2val, static_shape(corrected))
    assert match_correction(x, var2val, static_shape(corrected)) is None


@pytest.mark.parametrize("out_hw,channels", [((6, 48), 32), ((5, 7), 144), ((3, 5), 3)])
def test_hvx_depthwise_output_round_trip(out_hw, channels):
    """The depthwise kernel's rows (sliced where ``OW * C`` is not whole vectors) as NHWC, read
    back with the kernel's call and the conv it carries (``DepthwiseConv.tagged``); an untagged
    kernel is not read back."""
    import tvm

    from tvm_s2d.passes.relax_tools import add_kernel
    from tvm_s2d.schedules.hexagon.depthwise import DepthwiseConv

    conv = DepthwiseConv(1, out_hw, channels, (3, 3))
    for tag in (True, False):
        bb = relax.BlockBuilder()
        rows = relax.Var("rows", relax.TensorType(conv.input_shape, "uint8"))
        weight = relax.const(np.zeros(conv.weight_shape, np.int8))
        with bb.function("main", [rows]):
            with bb.dataflow():
                func = conv.tagged(conv.compute()) if tag else conv.compute()
                kernel = add_kernel(bb, func, "hvx_dw")
                y = bb.emit(relax.call_tir(kernel, [rows, weight], relax.TensorType(conv.output_shape, "int32")))
                out = bb.emit_output(emit_depthwise_output(bb, y, conv))
            bb.emit_func_output(out)
        mod = bb.get()
        var2val = relax.analysis.get_var2val(mod["main"])
        reshaped = var2val[out]  # the output binding's alias of the reshape
        found = match_depthwise_output(reshaped, var2val, mod)
        if tag:
            assert found is not None and found[0].same_as(rows) and found[1].same_as(weight) and found[2] == conv
            assert static_shape(reshaped) == conv.requantized_shape()
        else:
            assert found is None
        assert isinstance(mod, tvm.IRModule)


@pytest.mark.parametrize("out_channels,sliced", [(32, False), (16, False), (24, True), (40, True)])
def test_hvx_lanes_output_of_a_tagged_kernel_round_trip(out_channels, sliced):
    """A channel-in-lanes kernel's output of one lane block, unsliced (the channels of an S2D
    output: 2 x 16 = 32), is read back with the kernel's operands and the conv it carries
    (``PackedConv.tagged``); a sliced output or an untagged kernel's are not."""
    from tvm_s2d.passes.hexagon.conv_output import match_lanes_output
    from tvm_s2d.passes.relax_tools import add_kernel
    from tvm_s2d.schedules.hexagon.lanes import PackedConv

    conv = PackedConv(1, (6, 9), 8, out_channels, (3, 3))
    channels = out_channels if sliced else conv.cout_blocks * 32
    for tag in (True, False):
        bb = relax.BlockBuilder()
        x = relax.Var("x", relax.TensorType(conv.input_shape, "uint8"))
        offsets = relax.Var("offsets", relax.TensorType(conv.offsets_shape, "int32"))
        weight = relax.const(np.zeros(conv.weight_shape, np.uint8))
        with bb.function("main", [x, offsets]):
            with bb.dataflow():
                kernel = add_kernel(bb, conv.tagged(conv.compute()) if tag else conv.compute(), "hvx_conv")
                y = bb.emit(relax.call_tir(kernel, [x, weight, offsets], relax.TensorType(conv.output_shape, "int32")))
                out = bb.emit_output(emit_lanes_output(bb, y, 1, conv.out_hw, conv.cout_blocks * 32, channels))
            bb.emit_func_output(out)
        mod = bb.get()
        var2val = relax.analysis.get_var2val(mod["main"])
        found = match_lanes_output(var2val[out], var2val, mod)
        if tag and not sliced:
            assert found is not None and PackedConv.of(conv.tagged(conv.compute())) == conv == found[1]
            assert [o.same_as(v) for o, v in zip(found[0], (x, weight, offsets))] == [True] * 3
        else:
            assert found is None
