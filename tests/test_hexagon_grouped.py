"""Grouped convs on HVX (``schedules.hexagon.grouped``): one group a 32-lane block, the
``+ 128`` of the packed weights undone by the block's sum lane; and the block-diagonal dense
form (``geometry.grouped``) for the groups it does not take."""

from __future__ import annotations

import numpy as np
import pytest
import tvm

from helpers import require_hexagon_tools
from tvm_s2d.geometry.grouped import block_diagonal
from tvm_s2d.schedules.hexagon.grouped import GroupedConv, schedule_grouped


def _reference(x_nhwc, weight_oihw, groups, strides):
    """The grouped conv of a pre-padded NHWC uint8 input, NHWC int64, in numpy."""
    n, h, w, c = x_nhwc.shape
    o, cg, kh, kw = weight_oihw.shape
    sh, sw = strides
    oh, ow = (h - kh) // sh + 1, (w - kw) // sw + 1
    og = o // groups
    out = np.zeros((n, oh, ow, o), np.int64)
    for i in range(kh):
        for j in range(kw):
            patch = x_nhwc[:, i:i + (oh - 1) * sh + 1:sh, j:j + (ow - 1) * sw + 1:sw].astype(np.int64)
            for g in range(groups):
                out[..., g * og:(g + 1) * og] += patch[..., g * cg:(g + 1) * cg] @ weight_oihw[g * og:(g + 1) * og, :, i, j].T
    return out


def _case(shape, out_channels, groups, strides, seed):
    rng = np.random.default_rng(seed)
    conv = GroupedConv(shape[0], shape[1:3], shape[3], out_channels, groups, (3, 3), strides)
    x = rng.integers(0, 256, conv.input_shape).astype(np.uint8)
    weight = rng.integers(-128, 128, (out_channels, shape[3] // groups, 3, 3)).astype(np.int8)
    expected = _reference(x, weight.astype(np.int64), groups, strides)
    return conv, x, weight, expected


def _unpacked(conv, y):
    return y[..., :conv.group_out].reshape(*y.shape[:3], conv.out_channels)


CASES = [((1, 8, 9, 32), 32, 2, (1, 1)), ((2, 7, 11, 64), 64, 4, (2, 2)), ((1, 5, 6, 48), 93, 3, (1, 1))]


@pytest.mark.parametrize("shape,out_channels,groups,strides", CASES)
def test_the_grouped_kernels_plain_loops_are_the_grouped_conv(shape, out_channels, groups, strides):
    conv, x, weight, expected = _case(shape, out_channels, groups, strides, 3)
    out = tvm.runtime.tensor(np.zeros(conv.output_shape, np.int32))
    tvm.compile(tvm.IRModule({"main": conv.compute()}), target="llvm")(
        tvm.runtime.tensor(x), tvm.runtime.tensor(conv.pack_weight(weight)), out)
    np.testing.assert_array_equal(_unpacked(conv, out.numpy()), expected)


@pytest.mark.parametrize("shape,out_channels,groups,strides", CASES)
def test_the_grouped_hvx_kernel_is_exact_under_qemu(shape, out_channels, groups, strides):
    require_hexagon_tools()
    from tvm_s2d.emulator.qemu import run_kernel

    conv, x, weight, expected = _case(shape, out_channels, groups, strides, 4)
    run_ = run_kernel(schedule_grouped(conv.compute(), 8 if strides != (1, 1) else 4), [x, conv.pack_weight(weight)],
                      [(conv.output_shape, "int32")])
    np.testing.assert_array_equal(_unpacked(conv, run_.outputs[0]), expected)


def test_what_the_grouped_kernel_takes_and_the_dense_form():
    assert GroupedConv.applies(400, 400, 25) and GroupedConv.applies(48, 93, 3)
    assert not GroupedConv.applies(8, 8, 4)  # 2 input channels a group: the dense form
    assert not GroupedConv.applies(64, 128, 2)  # 64 outputs a group do not fit 31 lanes
    assert not GroupedConv.applies(32, 32, 2)  # one block of lanes: the dense form
    rng = np.random.default_rng(0)
    weight = rng.integers(-9, 9, (6, 2, 3, 3))
    dense = block_diagonal(weight, 3)
    assert dense.shape == (6, 6, 3, 3) and not dense[:2, 2:].any() and np.array_equal(dense[2:4, 2:4], weight[2:4])
