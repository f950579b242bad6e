"""HexagonMovement: the uint8 NHWC 2x2 S2D/D2S and pads of a quantized NHWC network on HVX
kernels. The graph is checked bit-exact on this CPU (shuffles as plain copies, pads left to
relax); the kernels the pass emits run under qemu-hexagon equal to those copies and to numpy's
pad; other movement is left alone."""

import numpy as np
import pytest
import tvm
from tvm import relax

from helpers import require_hexagon_tools, run
from tvm_s2d.passes.prepare import prepare
from tvm_s2d.targets import hexagon_target
from tvm_s2d.emulator.network import quantized_nhwc_chain as nhwc_qdq
from tvm_s2d.passes import HexagonConvs, HexagonMovement, SpaceToDepthConv2d

HEXAGON = hexagon_target()


def _rewritten(mod, hvx):
    with HEXAGON:
        rewrite = SpaceToDepthConv2d(block=2, move_cost=1000.0)
        mod = rewrite(mod)
        assert all(d.rewritten for d in rewrite.decisions)
        mod = HexagonConvs(schedule=hvx)(mod)
        shuffles = HexagonMovement(hvx=hvx)
        return shuffles(mod), shuffles


def _kernels(mod, prefix):
    return [gv.name_hint for gv, f in mod.functions.items()
            if isinstance(f, tvm.tirx.PrimFunc) and gv.name_hint.startswith(prefix)]


@pytest.mark.parametrize("hw", [(16, 20), (10, 38)])
def test_the_domains_s2d_and_d2s_run_on_shuffles_exactly(hw):
    mod = nhwc_qdq(hw)
    x = np.random.default_rng(1).integers(0, 256, (1, *hw, 8)).astype(np.uint8)
    expected = run(prepare(mod), x)  # the pass prepares: integer epilogues
    rewritten, shuffles = _rewritten(mod, hvx=False)
    assert len(shuffles.replaced) == 2  # the input's S2D, the output's D2S
    assert len(_kernels(rewritten, "hvx_s2d_")) == 1 and len(_kernels(rewritten, "hvx_d2s_")) == 1
    np.testing.assert_array_equal(run(rewritten, x), expected)


def test_movement_it_cannot_take_is_left_alone():
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((1, 8, 16, 16), "uint8"))  # NCHW S2D
    f = relax.Var("f", relax.TensorType((1, 16, 16, 8), "float32"))  # float NHWC S2D
    with bb.function("main", [x, f]):
        with bb.dataflow():
            a = bb.emit(relax.op.reshape(x, [1, 8, 8, 2, 8, 2]))
            a = bb.emit(relax.op.permute_dims(a, [0, 3, 5, 1, 2, 4]))
            a = bb.emit(relax.op.reshape(a, [1, 32, 8, 8]))
            b = bb.emit(relax.op.reshape(f, [1, 8, 2, 8, 2, 8]))
            b = bb.emit(relax.op.permute_dims(b, [0, 1, 3, 2, 4, 5]))
            b = bb.emit(relax.op.reshape(b, [1, 8, 8, 32]))
            out = bb.emit_output(relax.Tuple([a, b]))
        bb.emit_func_output(out)
    mod = bb.get()
    shuffles = HexagonMovement(target=HEXAGON)
    tvm.ir.assert_structural_equal(shuffles(mod), mod)
    assert shuffles.replaced == []
    cpu = HexagonMovement(target=tvm.target.Target({"kind": "llvm"}))
    tvm.ir.assert_structural_equal(cpu(nhwc_qdq()), nhwc_qdq())


def test_the_kernels_the_pass_emits_run_exactly_under_qemu():
    from tvm_s2d.emulator.qemu import run_kernel

    require_hexagon_tools()
    mod = nhwc_qdq((10, 38))  # rows of 40 x 8 and 20 x 32 bytes: whole vectors and tails
    plain, _ = _rewritten(mod, hvx=False)
    hvx, _ = _rewritten(mod, hvx=True)
    rng = np.random.default_rng(2)
    for name in _kernels(hvx, "hvx_s2d_") + _kernels(hvx, "hvx_d2s_"):
        call = next(v for v in relax.analysis.get_var2val(hvx["main"]).values()
                    if isinstance(v, relax.Call) and v.op.name == "relax.call_tir" and v.args[0].name_hint == name)
        x = rng.integers(0, 256, [int(d) for d in call.args[1].fields[0].ty.shape]).astype(np.uint8)
        out_shape = tuple(int(d) for d in call.ty.shape)
        cpu = tvm.compile(tvm.IRModule({"main": plain[name].with_attr("global_symbol", "main")}),
                          target=tvm.target.Target({"kind": "llvm"}))
        expected = tvm.runtime.tensor(np.zeros(out_shape, "uint8"))
        cpu["main"](tvm.runtime.tensor(x), expected)
        run_ = run_kernel(hvx[name], [x], [(out_shape, "uint8")], name=name)
        np.testing.assert_array_equal(run_.outputs[0], expected.numpy())
    pads = {binding.var.name: binding.value for block in plain["main"].body.blocks for binding in block.bindings
            if isinstance(binding.value, relax.Call) and binding.value.op.name == "relax.nn.pad"}
    assert {f"hvx_pad_{name}" for name in pads} == set(_kernels(hvx, "hvx_pad_"))  # every zero-point pad
    for name, pad in pads.items():
        x = rng.integers(0, 256, [int(d) for d in pad.args[0].ty.shape]).astype(np.uint8)
        widths = [int(v) for v in pad.attrs.pad_width]
        expected = np.pad(x, [widths[2 * i : 2 * i + 2] for i in range(4)], constant_values=int(pad.attrs.pad_value))
        run_ = run_kernel(hvx[f"hvx_pad_{name}"], [x], [(expected.shape, "uint8")], name="pad")
        np.testing.assert_array_equal(run_.outputs[0], expected)


def test_a_channel_pad_of_an_image_widens_pixels_by_shuffles():
    """Regression: an RGB image padded on its channels alone (SqueezeNet's unpadded stem) went
    to ``pad_rows`` as rows of 3 bytes, a byte at a time: 28k packets at 96x96 where
    ``pad_pixels`` takes 1.2k."""
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((1, 96, 96, 3), "uint8"))
    with bb.function("main", [x]):
        with bb.dataflow():
            out = bb.emit_output(bb.emit(relax.op.nn.pad(x, [0, 0, 0, 0, 0, 0, 0, 1], pad_value=0.0)))
        bb.emit_func_output(out)
    rule = HexagonMovement(target=HEXAGON)
    rule(bb.get())
    assert [(o.applied, o.reason) for o in rule.outcomes] == [(True, "HVX pad kernel (pixels widened by byte shuffles)")]


def test_the_hexagon_build_moves_data_with_shuffles():
    counts = {}
    for disabled in ((), ("HexagonMovement",)):
        with tvm.transform.PassContext(opt_level=3, disabled_pass=list(disabled)):
            ex = tvm.compile(nhwc_qdq((16, 20)), target=HEXAGON, relax_pipeline=relax.get_pipeline("s2d", block=2))
        asm = ex.mod.imports[0].inspect_source("asm")
        counts[disabled] = (asm.count("vshuff"), asm.count("vdeal"), asm.count("vrmpy"))
    (shuffles, deals, vrmpy), (shuffles_off, deals_off, vrmpy_off) = counts[()], counts[("HexagonMovement",)]
    assert shuffles > 0 == shuffles_off  # the S2D
    assert deals > deals_off  # the D2S (the convs' offsets kernels deal too)
    assert vrmpy == vrmpy_off > 0


# ---- 256-entry table lookups (IntegerTables' activations) on vlut32 ---------------------------


def _lookup_module(shape, dtype, table):
    """``take(table, x)`` as ``IntegerTables`` writes it: uint8 in clip mode, int8 wrapping."""
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType(shape, dtype))
    with bb.function("main", [x]):
        with bb.dataflow():
            mode = "clip" if dtype == "uint8" else "wrap"
            out = bb.emit_output(bb.emit(relax.op.take(relax.const(table), x, axis=0, mode=mode)))
        bb.emit_func_output(out)
    return bb.get()


def _random_table(dtype, rng):
    lo, hi = (0, 256) if dtype == "uint8" else (-128, 128)
    return rng.integers(lo, hi, 256).astype(dtype)


def _random_index(shape, dtype, rng):
    lo, hi = (0, 256) if dtype == "uint8" else (-128, 128)
    return rng.integers(lo, hi, shape).astype(dtype)


@pytest.mark.parametrize("dtype", ["uint8", "int8"])
def test_a_table_lookup_becomes_the_lookup_kernel_and_its_plain_loop_looks_up_exactly(dtype):
    rng = np.random.default_rng(3)
    shape = (1, 12, 10, 8)
    table, x = _random_table(dtype, rng), _random_index(shape, dtype, rng)
    mod = _lookup_module(shape, dtype, table)
    rule = HexagonMovement(target=HEXAGON, hvx=False)
    rewritten = rule(mod)
    assert [(o.applied, o.reason) for o in rule.outcomes] == [(True, "HVX vlut32 table lookup")]
    assert len(_kernels(rewritten, "hvx_lookup_")) == 1
    np.testing.assert_array_equal(run(rewritten, x), table[x.view(np.uint8)])  # int8: the byte, wrapping


def test_lookups_it_cannot_take_say_why():
    bb = relax.BlockBuilder()
    q = relax.Var("q", relax.TensorType((4, 5), "int8"))
    w = relax.Var("w", relax.TensorType((4, 5), "int32"))
    t = relax.Var("t", relax.TensorType((256,), "uint8"))
    with bb.function("main", [q, w, t]):
        with bb.dataflow():
            a = bb.emit(relax.op.take(relax.const(np.arange(256).astype(np.uint8)), q, axis=0, mode="clip"))
            b = bb.emit(relax.op.take(relax.const(np.arange(256).astype(np.int32)), w, axis=0, mode="clip"))
            c = bb.emit(relax.op.take(t, q, axis=0, mode="wrap"))
            out = bb.emit_output(relax.Tuple([a, b, c]))
        bb.emit_func_output(out)
    mod = bb.get()
    rule = HexagonMovement(target=HEXAGON)
    tvm.ir.assert_structural_equal(rule(mod), mod)
    reasons = [o.reason for o in rule.outcomes]
    assert not any(o.applied for o in rule.outcomes) and len(reasons) == 3, reasons
    assert "int8 index in clip mode" in reasons[0] and "int32 table" in reasons[1] and "constant table" in reasons[2]


@pytest.mark.parametrize("dtype,shape", [("uint8", (1, 12, 10, 8)), ("int8", (1, 12, 10, 8)), ("uint8", (1, 3, 5, 7)),
                                         ("int8", (2, 37)), ("int8", (1, 7, 9, 24)), ("uint8", (128,)),
                                         ("uint8", (1, 1, 1, 1)), ("int8", (1, 24, 24, 33))])
def test_the_lookup_kernel_runs_exactly_under_qemu(dtype, shape):
    """Whole vectors, a last vector overlapping the one before (element counts not a multiple of
    128), fewer than 128 elements (one vector, its store predicated); every table entry looked up."""
    from tvm_s2d.emulator.qemu import run_kernel
    from tvm_s2d.schedules.hexagon.lookup import arrange_table, lookup_table

    require_hexagon_tools()
    rng = np.random.default_rng(4)
    table, x = _random_table(dtype, rng), _random_index(shape, dtype, rng)
    if x.size >= 256:
        x.reshape(-1)[:256] = np.arange(256).astype(np.uint8).view(dtype)
    run_ = run_kernel(lookup_table(shape, dtype, dtype), [x, arrange_table(table)], [(shape, dtype)], name="lookup")
    np.testing.assert_array_equal(run_.outputs[0], table[x.view(np.uint8)])
    if x.size >= 128 * 128:
        assert run_.packets < 0.075 * x.size  # 8 packets a vector of 128 (8 vlut32, one a packet), 0.065 an element
    if x.size < 128:
        assert run_.packets < 150  # one vector (the call's argument checks: ~85 packets)



@pytest.mark.parametrize("dtype,filled", [("uint8", {0: 20, 1: 20, 2: 20}),  # a HardSwish: its output zero point below -3
                                          ("int8", {5: -1, 6: -1, 7: -1, 0: 7}),  # two fill bytes: the most common taken
                                          ("uint8", {m: 9 for m in range(8)}),  # one byte everywhere: no vlut32 at all
                                          ("uint8", {})])  # none
def test_segments_of_one_byte_take_no_lookup_and_the_kernel_stays_exact(dtype, filled):
    """``table_segments``: a 32-entry segment filled with the table's base byte is not looked up;
    the table vectors hold ``T - base`` and the kernel adds ``base`` back (wrapping bytes)."""
    from tvm_s2d.emulator.qemu import run_kernel
    from tvm_s2d.schedules.hexagon.lookup import arrange_table, lookup_table, plain_lookup_table, table_segments

    require_hexagon_tools()
    rng = np.random.default_rng(5)
    table = _random_table(dtype, rng)
    for m, byte in filled.items():
        table[32 * m: 32 * m + 32] = byte
    base, segments = table_segments(table)
    assert segments == tuple(m for m in range(8) if m not in filled or (filled[m] != -1 and dtype == "int8"))
    assert base == (np.uint8(np.int8(-1).view(np.uint8)) if dtype == "int8" else next(iter(filled.values()), 0))
    shape = (1, 24, 24, 33)
    x = _random_index(shape, dtype, rng)
    x.reshape(-1)[:256] = np.arange(256).astype(np.uint8).view(dtype)
    arranged = arrange_table(table, base)
    hvx = run_kernel(lookup_table(shape, dtype, dtype, base, segments), [x, arranged], [(shape, dtype)], name="lookup")
    np.testing.assert_array_equal(hvx.outputs[0], table[x.view(np.uint8)])
    full = run_kernel(lookup_table(shape, dtype, dtype), [x, arrange_table(table)], [(shape, dtype)], name="lookup")
    assert hvx.packets < full.packets if segments != tuple(range(8)) else hvx.packets == full.packets
    plain = tvm.compile(tvm.IRModule({"main": plain_lookup_table(shape, dtype, dtype, base)}), target="llvm")
    out = tvm.runtime.tensor(np.zeros(shape, dtype))
    plain(tvm.runtime.tensor(x), tvm.runtime.tensor(arranged), out)
    np.testing.assert_array_equal(out.numpy(), table[x.view(np.uint8)])
