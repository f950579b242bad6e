"""Hexagon kernels under qemu-hexagon: bit-exact against numpy, really vrmpy, far fewer packets.

Needs Debian's qemu-user, clang-14, lld-14 and llvm-14 (``.ci/run`` installs them). Without
them these tests skip, unless S2D_REQUIRE_HEXAGON=1 (set by ``.ci/run``) makes that a failure.
"""

import os
import re

import numpy as np
import pytest
import tvm

from helpers import load_script
from tvm_s2d.geometry import Conv2dSpec, conv2d_nchw, space_to_depth
from tvm_s2d.emulator.qemu import EmulatorError, check_tools, compile_kernel, run_kernel
from tvm_s2d.emulator.layer import run_packed
from tvm_s2d.schedules.hexagon import PackedConv, WidthConv, schedule_vrmpy, schedule_width_vrmpy

try:
    check_tools()
except EmulatorError as missing:
    if os.environ.get("S2D_REQUIRE_HEXAGON") == "1":
        raise
    pytestmark = pytest.mark.skip(reason=str(missing))

RNG = np.random.default_rng(17)


def _operands(cin, cout, k, hw=(12, 12)):
    x = RNG.integers(0, 256, (1, cin, *hw)).astype(np.uint8)
    w = RNG.integers(-128, 128, (cout, cin, k, k)).astype(np.int8)
    return x, w


@pytest.mark.parametrize("cin,cout,k,stride", [(8, 8, 3, 1), (3, 16, 3, 2), (32, 40, 2, 1), (5, 3, 1, 1)])
def test_channel_in_lanes_conv_is_bit_exact(cin, cout, k, stride):
    x, w = _operands(cin, cout, k, (11, 13))
    p = k // 2
    conv = PackedConv(1, (11 + 2 * p, 13 + 2 * p), cin, cout, (k, k), (stride, stride))
    out, _ = run_packed(conv, "lanes", 4, conv.pack_input(x, (p,) * 4), conv.pack_weight(w))
    np.testing.assert_array_equal(conv.unpack_output(out), conv2d_nchw(x, w, (stride, stride), (p,) * 4))


@pytest.mark.parametrize("cin,cout,k,stride,hw", [(16, 64, 3, 1, (5, 23)), (3, 64, 3, 2, (7, 93)), (12, 16, 1, 1, (3, 47)),
                                                   (8, 40, 3, 1, (4, 19))])
def test_rows_without_a_divisor_near_the_block_take_overlapping_blocks_bit_exact(cin, cout, k, stride, hw):
    """Rows of 23, 47 or 19 columns (prime: SqueezeNet's) were cut into blocks of one pixel, a
    weight vector loaded for each ``vrmpy`` (the 23x23 16->64 3x3: 41.9k packets); blocks of
    4, the last overlapping the one before: 26.1k."""
    from tvm_s2d.schedules.hexagon.lanes import block_pixels, overlapping_block

    x, w = _operands(cin, cout, k, hw)
    p = k // 2
    conv = PackedConv(1, (hw[0] + 2 * p, hw[1] + 2 * p), cin, cout, (k, k), (stride, stride))
    assert block_pixels(conv.out_hw[1], 8) == 1 and overlapping_block(conv.out_hw[1], 8) == 4
    out, _ = run_packed(conv, "lanes", 8, conv.pack_input(x, (p,) * 4), conv.pack_weight(w))
    np.testing.assert_array_equal(conv.unpack_output(out), conv2d_nchw(x, w, (stride, stride), (p,) * 4))


@pytest.mark.parametrize("batch,in_hw,cin,cout,k,stride,sums", [(1, (3, 3), 576, 96, (1, 1), 1, True),  # a block of its own
                                                                   (1, (3, 3), 288, 96, (1, 1), 1, False),
                                                                   (2, (5, 5), 24, 72, (3, 3), 1, True),  # a spare lane, batch 2
                                                                   (1, (9, 6), 16, 40, (3, 2), 2, False),  # 4x3: overlapping
                                                                   (1, (2, 2), 64, 64, (1, 1), 1, False)])  # under a block
def test_short_rows_take_flat_pixel_blocks_bit_exact(batch, in_hw, cin, cout, k, stride, sums):
    """Rows of at most 3 output pixels: blocks of 9 pixels across rows (``lanes_flat``), the last
    overlapping the one before, a ``sums`` conv's sums block first; the conv's integers, and on
    a 3x3 map fewer packets than a row a block (MnasNet's 3x3x576 -> 96: 3.9k -> 3.1k)."""
    from tvm_s2d.schedules.hexagon.lanes import overlapping_vrmpy, summing_vrmpy

    conv = PackedConv(batch, in_hw, cin, cout, k, (stride, stride))
    conv = conv.summing() if sums else conv
    assert conv.sums == sums
    (oh, ow), (kh, kw) = conv.out_hw, conv.kernel_hw
    x = RNG.integers(0, 256, conv.input_shape).astype(np.uint8)
    w = RNG.integers(-128, 128, (cout, cin, kh, kw)).astype(np.int8)
    expected = np.zeros((batch, oh, ow, cout), np.int64)
    for ky in range(kh):
        for kx in range(kw):
            patch = x[:, ky: ky + (oh - 1) * stride + 1: stride, kx: kx + (ow - 1) * stride + 1: stride, :cin].astype(np.int64)
            expected += patch @ w[:, :, ky, kx].T.astype(np.int64)
    operands = [x, conv.pack_weight(w)]
    if not sums:
        operands.append(run_kernel(conv.window_offsets(), [x], [(conv.offsets_shape, "int32")]).outputs[0])
    flat = run_kernel(conv.hvx_kernel(8), operands, [(conv.output_shape, "int32")])
    np.testing.assert_array_equal(flat.outputs[0].reshape(batch, oh, ow, -1)[..., :cout], expected)
    if (batch, oh, ow) == (1, 3, 3):
        rows = run_kernel(summing_vrmpy(conv, 3) if sums else overlapping_vrmpy(conv, 3), operands,
                          [(conv.output_shape, "int32")])
        np.testing.assert_array_equal(rows.outputs[0], flat.outputs[0])
        assert flat.packets < rows.packets


@pytest.mark.parametrize("channels,hw,kernel,stride", [(4, (7, 40), 3, 1), (8, (13, 17), 3, 1), (12, (5, 9), 1, 1),
                                                        (32, (9, 37), 2, 1), (64, (9, 9), 3, 2), (128, (4, 9), 2, 1),
                                                        (144, (7, 9), 1, 1), (96, (5, 5), 3, 2), (256, (6, 7), 3, 1),
                                                        (384, (3, 3), 3, 1), (512, (5, 7), 1, 2),
                                                        (4, (96, 96), 3, 2), (16, (25, 25), 3, 1), (8, (9, 70), 3, 2),
                                                        (4, (5, 5), 5, 1), (16, (40, 40), 3, 3), (4, (3, 66), 3, 2),
                                                        (8, (8, 33), 1, 1), (4, (2, 3), 2, 2), (144, (24, 24), 1, 1),
                                                        (240, (5, 7), 1, 1), (672, (3, 3), 1, 1), (40, (3, 11), 3, 1),
                                                        (12, (9, 47), 3, 1)])
def test_window_offsets_are_minus_128_times_the_window_sums(channels, hw, kernel, stride):
    """The offsets kernel of the channel-in-lanes mapping: vrmpy + vdeal channel sums where C/4
    is a power of two (up to 32) or C a multiple of 128 (its vectors accumulated first; the
    last pixels a vector at a time, a plain loop for the other powers of two); other C (12,
    96, 144) the words of all pixels by vrmpy, then each pixel's words; box sums 32 columns at
    a time by unaligned loads (stride 2: 64 positions dealt to the even ones), a row's last
    vector overlapping the one before, rows under 32 columns running over into the next row
    (the last row's lanes copied); stride 3 the plain tail. SqueezeNet's 96x96 RGB stem (stride
    2, 47 columns) took 18.3k packets when the taps were strided lanes, 2.8k now."""
    x = RNG.integers(0, 256, (1, *hw, channels)).astype(np.uint8)
    conv = PackedConv(1, hw, channels, 32, (kernel, kernel), (stride, stride))
    run = run_kernel(conv.window_offsets(), [x], [(conv.offsets_shape, "int32")], name="offsets")
    sums = x.astype(np.int64).sum(-1)
    oh, ow = conv.out_hw
    window = sum(sums[:, i : i + (oh - 1) * stride + 1 : stride, j : j + (ow - 1) * stride + 1 : stride]
                 for i in range(kernel) for j in range(kernel))
    np.testing.assert_array_equal(run.outputs[0], -128 * window)
    if (channels, hw, stride) == (4, (96, 96), 2):
        assert run.packets < 4000, run.packets
    if (channels, hw) == (144, (24, 24)):  # EfficientNet's: 13.1k packets when each pixel's 36 words were a plain loop
        assert run.packets < 6000, run.packets


@pytest.mark.parametrize("cin,cout,k", [(8, 8, 3), (16, 3, 3), (3, 5, 5)])
def test_width_vectorized_conv_is_bit_exact(cin, cout, k):
    x, w = _operands(cin, cout, k, (9, 37))
    p = k // 2
    conv = WidthConv(1, (9, 37), cin, cout, (k, k))
    run = run_kernel(schedule_width_vrmpy(conv.compute()), [conv.pack_input(x, (p,) * 4), conv.pack_weight(w)],
                     [(conv.output_shape, "int32")], name="conv")
    np.testing.assert_array_equal(conv.unpack_output(run.outputs[0]), conv2d_nchw(x, w, padding=(p,) * 4))


def test_the_s2d_conv_runs_exactly_on_hexagon():
    """The rewritten seed layer (8 -> 8, 3x3, block 2) as a 2x2 32 -> 32 conv on the S2D input."""
    x, w = _operands(8, 8, 3, (12, 12))
    plan = Conv2dSpec(1, 8, 8, (12, 12), (3, 3), padding=(1, 1, 1, 1)).plan(2)
    xs = space_to_depth(plan.align_input(x), 2)
    conv = PackedConv(1, tuple(s + plan.padding[i] + plan.padding[i + 2] for i, s in enumerate(xs.shape[2:])),
                      32, 32, plan.kernel_hw)
    t, l, b, r = plan.padding
    out, _ = run_packed(conv, "lanes", 4, conv.pack_input(xs, (t, l, b, r)), conv.pack_weight(plan.fold_weight(w)))
    got = plan.finish_output(conv.unpack_output(out))
    np.testing.assert_array_equal(got, conv2d_nchw(x, w, padding=(1, 1, 1, 1)))


def test_kernels_use_vrmpy_and_execute_far_fewer_packets_than_the_plain_build():
    conv = PackedConv(1, (18, 18), 8, 8, (3, 3))
    x, w = _operands(8, 8, 3, (16, 16))
    operands = [conv.pack_input(x, (1,) * 4), conv.pack_weight(w)]
    asm = compile_kernel(schedule_vrmpy(conv.compute()), "conv").inspect_source("asm")
    assert "vrmpy" in asm
    packets = re.findall(r"\{(.*?)\}", asm, re.S)
    assert any(packet.count("vrmpy") == 2 for packet in packets)  # the vector-by-scalar form dual-issues
    tensorized, tensorized_packets = run_packed(conv, "lanes", 4, *operands)
    plain, plain_packets = run_packed(conv, "lanes", None, *operands)  # both kernels' plain loops
    np.testing.assert_array_equal(tensorized, plain)
    assert tensorized_packets * 20 < plain_packets
    assert tensorized_packets >= conv.vrmpy_count // 2  # at most two vrmpy per packet


def test_packet_counts_are_deterministic():
    conv = WidthConv(1, (4, 32), 8, 8, (3, 3))
    x, w = _operands(8, 8, 3, (4, 32))
    operands = [conv.pack_input(x, (1,) * 4), conv.pack_weight(w)]
    counts = {run_kernel(schedule_width_vrmpy(conv.compute()), operands, [(conv.output_shape, "int32")], name="conv").packets
              for _ in range(2)}
    assert len(counts) == 1


def test_missing_tools_are_named_with_their_packages(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(EmulatorError, match="qemu-user.*apt-get install"):
        check_tools()


def test_benchmark_script_runs_on_a_tiny_layer(tmp_path, capsys):
    bench = load_script("bench_hexagon")
    out = tmp_path / "bench.json"
    assert bench.main(["--scale", "32", "--layers", "3", "--json", str(out)]) == 0
    import json

    (row,) = json.loads(out.read_text())["layers"]
    assert row["size"] == 8 and all(row[v]["packets"] > 0 for v in "ABC")
    assert "256x256x8" in capsys.readouterr().out


def test_pipeline_benchmark_runs_every_kernel_of_each_form(tmp_path):
    import json

    bench = load_script("bench_hexagon_pipeline")
    out = tmp_path / "pipeline.json"
    assert bench.main(["--size", "16", "--json", str(out)]) == 0
    forms = {row["form"]: row for row in json.loads(out.read_text())["forms"]}
    assert set(forms) == {name for name, _, _ in bench.FORMS}
    for name, row in forms.items():
        kernels = row["kernels"]
        fused = any(kernel.endswith("_requantized") for kernel in kernels)  # 8-channel width convs requantize inside
        assert row["total"] == sum(kernels.values()) and row["conv"] > 0 and (row["epilogue"] > 0) != fused
        assert row["hvx moves"] > 0 and any(kernel.startswith("hvx_pad_") for kernel in kernels)  # zero-point pads
        assert any(kernel.startswith("hvx_s2d_") for kernel in kernels) == name.startswith("S2D")  # 2x2 shuffles
        assert any(kernel.endswith("_layout") for kernel in kernels) == name.endswith("width")  # the layout deal


# --- one layer in one form (hexagon/layer.py) and Hexagon tuning --------------------------

from tvm_s2d.geometry import Unsupported  # noqa: E402
from tvm_s2d.emulator.layer import run_layer  # noqa: E402


@pytest.mark.parametrize("block,mapping", [(None, "lanes"), (None, "width"), ((2, 2), "lanes"), ((2, 2), "width"),
                                           ((1, 4), "lanes"), ((3, 3), "width")])
def test_every_form_of_a_layer_runs_exactly(block, mapping):
    # run_layer raises when any kernel (layout, conv, requantization, S2D, D2S) disagrees with numpy
    spec = Conv2dSpec(1, 8, 8, (13, 19), (3, 3), padding=(1, 1, 1, 1), itemsize=1)
    run = run_layer(spec, block, mapping, 4)
    fused = mapping == "width" and block is None  # 8 output channels: requantized inside the conv's kernel
    assert run.conv > 0 and run.vrmpy > 0 and (run.epilogue > 0) != fused  # the output's requantization counts too
    assert run.packets == run.conv + run.s2d + run.d2s + run.layout + run.epilogue
    assert (run.layout > 0) == (mapping == "width")  # the width mapping's input layout change
    if block is None or block == (1, 4):  # no movement, or width-to-depth: a pure reshape in NHWC
        assert run.s2d == run.d2s == 0
    else:
        assert run.s2d > 0 and run.d2s > 0


def test_strided_layer_forms():
    spec = Conv2dSpec(1, 3, 16, (15, 17), (7, 7), (2, 2), padding=(3, 3, 3, 3), itemsize=1)
    with pytest.raises(Unsupported, match="stride-1"):
        run_layer(spec, None, "width", 4)
    run = run_layer(spec, (2, 2), "width", 8)  # the S2D conv of a stride-2 conv has stride 1
    assert run.s2d > 0 and run.d2s == 0  # stride = block: the output is plain


def test_hexagon_tuning_measures_packets_and_applies_the_block(tmp_path):
    from tvm_s2d.cli import main
    from tvm_s2d.targets import hexagon_target
    from tvm_s2d.tuning import TuningLog
    from tvm_s2d.tuner.measure import HexagonMeasurer
    from tvm_s2d.tuning.space import Config
    from tvm_s2d.tuning.workload import Layer, target_key

    log = tmp_path / "hexagon.jsonl"
    assert main(["tune", "demo", "--target", "hexagon", "--size", "16", "--trials", "2", "--log", str(log)]) == 0
    records = TuningLog(log).records()
    assert len(records) == 6 and all(r.unit == "packets" and r.ok and r.target == "hexagon-hexagonv66" for r in records)
    best = TuningLog(log).best(target_key(hexagon_target()))
    # measuring again gives the same packets: the cost is deterministic
    record = next(iter(best.values()))
    (again,) = HexagonMeasurer().measure(Layer.from_key(record.workload), [Config.from_json(record.config)])
    assert again.cost == record.cost
    assert main(["tune", "demo", "--target", "hexagon", "--log", str(log), "--rpc-tracker", "127.0.0.1:9"]) == 2


@pytest.mark.parametrize("shape", [(1, 6, 16, 8), (2, 4, 14, 4), (1, 2, 40, 16)])
def test_hvx_shuffle_space_to_depth_and_back_are_exact(shape):
    from tvm_s2d.geometry import depth_to_space
    from tvm_s2d.emulator.layer import d2s_packets, s2d_packets
    from tvm_s2d.schedules.hexagon import shuffle_space_to_depth, shuffles_apply

    x = RNG.integers(0, 256, shape).astype(np.uint8)
    n, h, w, c = shape
    run = run_kernel(shuffle_space_to_depth(shape), [x], [((n, h // 2, w // 2, 4 * c), "uint8")],
                     name="s2d")  # rows of 16x8, 14x4 (a tail, no whole vector) and 40x16 bytes
    np.testing.assert_array_equal(run.outputs[0], space_to_depth(x, 2, "NHWC"))
    assert s2d_packets(x, (2, 2)) > 0  # checks its own output
    y = RNG.integers(0, 256, (1, 3, 32, 32)).astype(np.uint8)
    assert shuffles_apply(y.shape, (2, 2), inverse=True) and not shuffles_apply(y.shape, (2, 1), inverse=True)
    d2s_packets(y, (2, 2))  # raises unless exact
    assert depth_to_space(y, 2, "NHWC").shape == (1, 6, 64, 8)


@pytest.mark.parametrize("shape", [(1, 3, 70, 8), (2, 2, 33, 32), (1, 1, 32, 128), (1, 2, 40, 4), (1, 2, 9, 12)])
def test_hvx_deal_into_channel_groups_is_exact(shape):
    """NHWC -> [N, C/4, H, W, 4] (the width mapping's input): vdeal rounds for C/4 = 2..32,
    one vector for 4, a plain loop for 12 channels and the pixels past whole groups of 32."""
    from tvm_s2d.schedules.hexagon import deal_channel_groups

    x = RNG.integers(0, 256, shape).astype(np.uint8)
    n, h, w, c = shape
    run = run_kernel(deal_channel_groups(shape), [x], [((n, c // 4, h, w, 4), "uint8")], name="deal")
    np.testing.assert_array_equal(run.outputs[0], x.reshape(n, h, w, c // 4, 4).transpose(0, 3, 1, 2, 4))


@pytest.mark.parametrize("shape,padding,width", [((1, 128, 128, 8), (1, 1, 1, 1), 160),  # the seed layer
                                                  ((1, 48, 48, 16), (1, 1, 1, 1), 64),  # 16 pixels past a group
                                                  ((1, 4, 33, 4), (0, 1, 0, 0), 64),  # 1 pixel past, rows unaligned
                                                  ((2, 5, 40, 32), (2, 0, 1, 3), 64),  # no left pad, 8 planes
                                                  ((1, 3, 64, 16), (0, 31, 0, 1), 128)])  # a pad of 31 columns
def test_the_pad_and_the_width_layout_as_one_kernel_are_exact(shape, padding, width):
    """``padded_layout``: the input padded with the zero point into ``[N, C/4, H', width, 4]``
    in one kernel of whole aligned vector stores. Bit-exact under qemu and as its plain copy;
    (1, 4, 33, 4) is the regression of a row's last pixel copied by a scalar store that LLVM
    put in one packet with the vector store of the same bytes (the vector's zero points won)."""
    from tvm_s2d.schedules.hexagon import padded_layout

    x = RNG.integers(0, 256, shape).astype(np.uint8)
    (n, h, w, c), (t, l, b, _) = shape, padding
    expected = np.full((n, h + t + b, width, c), 113, np.uint8)
    expected[:, t : t + h, l : l + w] = x
    expected = expected.reshape(n, h + t + b, width, c // 4, 4).transpose(0, 3, 1, 2, 4)
    run = run_kernel(padded_layout(shape, padding, width, 113), [x], [(expected.shape, "uint8")], name="pad_deal")
    np.testing.assert_array_equal(run.outputs[0], expected)
    assert run.packets < expected.size / 8  # vector code
    plain = tvm.compile(tvm.IRModule({"main": padded_layout(shape, padding, width, 113, hvx_code=False)}), target="llvm")
    out = tvm.runtime.tensor(np.zeros(expected.shape, np.uint8))
    plain(tvm.runtime.tensor(x), out)
    np.testing.assert_array_equal(out.numpy(), expected)


def test_the_one_kernel_pad_and_layout_leaves_what_it_cannot_take():
    """Channels past 32 (its planes are expressions, 8 at most), rows under a group of 32, pads of
    32 columns or more: None, the pad and ``input_layout`` instead."""
    from tvm_s2d.schedules.hexagon import padded_layout

    assert padded_layout((1, 8, 64, 64), (1, 1, 1, 1), 96, 0) is None
    assert padded_layout((1, 8, 24, 16), (1, 1, 1, 1), 32, 0) is None
    assert padded_layout((1, 8, 64, 16), (0, 32, 0, 0), 128, 0) is None
    assert padded_layout((1, 8, 64, 12), (0, 1, 0, 0), 96, 0) is None  # 3 groups: no deal rounds


@pytest.mark.parametrize("shape,keep", [((1, 3, 70, 64), 12), ((1, 2, 33, 32), 5), ((2, 2, 64, 128), 24)])
def test_hvx_deal_of_a_padded_pixel_keeps_its_first_groups(shape, keep):
    """A pixel of 48 channels is dealt as 64 (``dealt_channels``: the rounds take 4 x a power of
    two), the padding's planes not stored: MnasNet's 48-channel width convs had a scalar layout."""
    from tvm_s2d.schedules.hexagon import copy_channel_groups, deal_channel_groups, dealt_channels

    assert dealt_channels(48) == 64 and dealt_channels(20) == 32 and dealt_channels(132) == 132
    x = RNG.integers(0, 256, shape).astype(np.uint8)
    n, h, w, c = shape
    expected = x.reshape(n, h, w, c // 4, 4).transpose(0, 3, 1, 2, 4)[:, :keep]
    run = run_kernel(deal_channel_groups(shape, keep), [x], [((n, keep, h, w, 4), "uint8")], name="deal")
    np.testing.assert_array_equal(run.outputs[0], expected)
    assert run.packets < x.size / 8  # vector code
    plain = tvm.compile(tvm.IRModule({"main": copy_channel_groups(shape, keep)}), target="llvm")
    out = tvm.runtime.tensor(np.zeros(expected.shape, np.uint8))
    plain(tvm.runtime.tensor(x), out)
    np.testing.assert_array_equal(out.numpy(), expected)


@pytest.mark.parametrize("shape,widths", [((1, 16, 20, 8), [0, 0, 1, 1, 1, 1, 0, 0]),  # NHWC spatial
                                          ((1, 8, 17, 33), [0, 0, 0, 0, 2, 1, 3, 0]),  # NCHW spatial
                                          ((1, 30, 70, 8), [0, 0, 1, 2, 1, 40, 0, 0]),  # rows past a vector
                                          ((2, 5, 7, 3), [0, 0, 0, 0, 0, 0, 0, 1]),  # the last axis only
                                          ((1, 48, 48, 16), [0, 0, 0, 0, 0, 16, 0, 0]),  # the columns only
                                          ((1, 48, 48, 32), [0, 0, 1, 1, 1, 3, 0, 0]),  # the dw layer's: vectors
                                          ((1, 48, 48, 32), [0, 0, 1, 1, 1, 2, 0, 0]),  # rows not whole vectors
                                          ((2, 3, 24, 16), [0, 0, 2, 0, 9, 20, 0, 0]),  # pads of 144 and 320 bytes
                                          ((1, 4, 512, 1), [0, 0, 0, 1, 0, 0, 0, 0]),  # rows of four vectors, no column pad
                                          ((1, 3, 16, 40), [0, 0, 1, 0, 3, 0, 0, 0]),  # a left pad alone
                                          ((1, 12, 12, 116), [0, 0, 1, 1, 1, 2, 0, 0])])  # rows not whole vectors: the copy
def test_hvx_pad_is_exact(shape, widths):
    from tvm_s2d.schedules.hexagon import pad_rows, pad_rows_apply

    x = RNG.integers(0, 256, shape).astype(np.uint8)
    expected = np.pad(x, [widths[2 * i : 2 * i + 2] for i in range(4)], constant_values=77)
    assert pad_rows_apply(shape, widths) and not pad_rows_apply(shape, [0, 1, 0, 0, 0, 0, 1, 0])
    run = run_kernel(pad_rows(shape, widths, 77), [x], [(expected.shape, "uint8")], name="pad")
    np.testing.assert_array_equal(run.outputs[0], expected)
    if shape == (1, 48, 48, 16):  # regression: rows of 16 bytes (the columns taken for rows) made 6.6k packets
        assert run.packets < 1500, run.packets
    if expected.shape[2] * expected.shape[3] % 128 == 0 and shape[2] * shape[3] % 256 == 0:  # aligned rows of vectors:
        assert run.packets < 1.5 * expected.size / 128 + 40, run.packets  # ~a store a packet (48x48x32: scalar fills 1.8k)


@pytest.mark.parametrize("shape,widths", [((1, 24, 24, 48), [0, 0, 0, 0, 0, 8, 0, 16]),  # MnasNet's, for a width conv
                                          ((1, 5, 7, 13), [0, 0, 1, 2, 2, 1, 0, 3]),  # rows, columns, odd channels
                                          ((2, 3, 4, 6), [0, 0, 1, 1, 0, 0, 0, 2]),  # a batch; the plain loop's share
                                          ((1, 4, 3, 1), [0, 0, 0, 0, 0, 0, 0, 7]),  # under one vector in all
                                          ((1, 3, 2, 100), [0, 0, 0, 1, 1, 0, 0, 28])])  # 128-byte pixels
def test_hvx_channel_pad_is_exact(shape, widths):
    """``pad_channels``: a pixel a vector (masked, stored unaligned, the next pixel's store
    writing over its overrun), the pixels whose loads or stores would pass an end a plain loop."""
    from tvm_s2d.schedules.hexagon import pad_channels, pad_channels_apply

    x = RNG.integers(0, 256, shape).astype(np.uint8)
    expected = np.pad(x, [widths[2 * i : 2 * i + 2] for i in range(4)], constant_values=91)
    assert pad_channels_apply(shape, widths)
    assert not pad_channels_apply(shape, [0, 0, 1, 1, 0, 0, 0, 0]) and not pad_channels_apply(shape, [0, 0, 0, 0, 0, 0, 1, 1])
    run = run_kernel(pad_channels(shape, widths, 91), [x], [(expected.shape, "uint8")], name="pad")
    np.testing.assert_array_equal(run.outputs[0], expected)
    if shape == (1, 24, 24, 48):  # pad_rows took it as rows of 48 bytes, a byte at a time: 5.2k packets
        assert run.packets < 2500, run.packets



@pytest.mark.parametrize("shape,widths", [((1, 64, 64, 3), [0, 0, 1, 1, 1, 1, 0, 1]),  # an RGB image for 4-byte groups
                                          ((1, 9, 45, 1), [0, 0, 2, 0, 0, 3, 0, 3]),  # grayscale, a tail of pixels
                                          ((2, 3, 7, 3), [0, 0, 0, 0, 0, 0, 0, 1]),  # the channels only; 126 bytes in all
                                          ((1, 5, 70, 2), [0, 0, 1, 1, 2, 2, 0, 2]),  # the last vector steps back
                                          ((1, 48, 48, 24), [0, 0, 1, 1, 1, 5, 0, 8]),  # a strided depthwise conv's 24 -> 32
                                          ((1, 24, 24, 48), [0, 0, 2, 2, 2, 7, 0, 16])])
def test_hvx_pad_of_rows_columns_and_channels_is_exact(shape, widths):
    """``pad_pixels``: each vector of whole output pixels from one load by a byte shuffle; the
    load steps back at the tensor's end (never read past it), tiny tensors a plain loop."""
    from tvm_s2d.schedules.hexagon import pad_pixels, pad_pixels_apply

    x = RNG.integers(0, 256, shape).astype(np.uint8)
    expected = np.pad(x, [widths[2 * i : 2 * i + 2] for i in range(4)], constant_values=113)
    assert pad_pixels_apply(shape, widths)  # (a pad of the channels alone pad_rows takes too, as rows of 1 byte)
    assert not pad_pixels_apply(shape, [0, 0, 1, 1, 1, 1, 1, 0]) and not pad_pixels_apply(shape, [0, 0, 0, 0, 0, 0, 0, 5])
    run = run_kernel(pad_pixels(shape, widths, 113), [x], [(expected.shape, "uint8")], name="pad")
    np.testing.assert_array_equal(run.outputs[0], expected)
    if shape == (1, 64, 64, 3):  # TVM's scalar pad of this image took 19.6k packets (the peers' RGB layer)
        assert run.packets < 2000, run.packets


def test_hvx_pixel_pads_are_only_the_shuffles_llvm_lowers():
    """Regression: LLVM's HVX shuffle lowering segfaulted writing the object of a 5 -> 16
    channel pad (and 3 -> 8, 12 -> 32, ...): ``pad_pixels`` takes pixels widened to 4 bytes
    only, and every such pattern must compile to an object (in a child process: a crash here
    would take pytest with it)."""
    import subprocess
    import sys

    from tvm_s2d.schedules.hexagon import pad_pixels_apply

    assert [c for c in range(1, 8) for co in (4, 8, 16) if c < co and pad_pixels_apply((1, 9, 45, c),
            [0, 0, 1, 0, 0, 1, 0, co - c])] == [1, 2, 3]
    # to the next power of two (a strided depthwise conv's padded channels): 9, 17, 18, 22, 23 of 5-63 crashed
    widened = [c for c in range(5, 64) if pad_pixels_apply((1, 9, 45, c), [0, 0, 1, 0, 0, 1, 0, (1 << (c - 1).bit_length()) - c])]
    assert widened == [24, 40, 48, 56]
    code = ("from tvm_s2d.schedules.hexagon import pad_pixels\nfrom tvm_s2d.emulator.qemu import compile_kernel\n"
            "import sys, tempfile, os\nd = tempfile.mkdtemp()\n"
            "for c, co in ((1, 4), (2, 4), (3, 4), (24, 32), (40, 64), (48, 64), (56, 64)):\n"
            "  for w in ([0, 0, 0, 0, 0, 0, 0, co - c], [0, 0, 1, 1, 1, 1, 0, co - c], [0, 0, 1, 2, 1, 5, 0, co - c]):\n"
            "    compile_kernel(pad_pixels((1, 9, 45, c), w, 7), 'pad').write_to_file(os.path.join(d, 'k.o'))\n")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0

def test_shuffles_take_far_fewer_packets_than_a_copy():
    from tvm_s2d.emulator.layer import s2d_packets
    from tvm_s2d.schedules.hexagon import copy_space_to_depth

    x = RNG.integers(0, 256, (1, 16, 64, 8)).astype(np.uint8)
    out = (1, 8, 32, 32)
    copy = run_kernel(copy_space_to_depth(x.shape, (2, 2), vectorize=True), [x], [(out, "uint8")], name="s2d")
    np.testing.assert_array_equal(copy.outputs[0], space_to_depth(x, 2, "NHWC"))
    assert s2d_packets(x, (2, 2)) * 10 < copy.packets
