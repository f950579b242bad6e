"""Elementwise float regions of one 8-bit tensor as 256-entry tables (``IntegerTables``):
the rewrite's form, its refusals, the table against the float ops evaluated exactly, quantized
activations of real networks against ONNX Runtime, and the lookup on Hexagon against the CPU
build."""

import numpy as np
import onnx
import pytest
import tvm
from onnx import TensorProto, helper, numpy_helper
from tvm import relax

from helpers import require_hexagon_tools, run
from tvm_s2d.passes.quantized.integer import IntegerTables

RNG = np.random.default_rng(0)


def _dq(x, scale, zero):
    return relax.op.dequantize(x, relax.const(np.float32(scale)), relax.const(np.array(zero, str(x.ty.dtype))))


def _q(y, scale, zero, dtype="uint8"):
    return relax.op.quantize(y, relax.const(np.float32(scale)), relax.const(np.array(zero, dtype)), out_dtype=dtype)


def _module(body, shapes, dtype="uint8"):
    bb = relax.BlockBuilder()
    xs = [relax.Var(f"x{i}", relax.TensorType(shape, dtype)) for i, shape in enumerate(shapes)]
    with bb.function("main", xs):
        with bb.dataflow():
            out = bb.emit_output(bb.emit(body(bb, xs)))
        bb.emit_func_output(out)
    return bb.get()


def _silu(bb, xs, dtype="uint8", zero=7):
    """``Q(DQ(x) * DQ(Q(sigmoid(DQ(x)))))``: SiLU as ONNX Runtime's quantizer leaves it."""
    x = bb.emit(_dq(xs[0], 0.05, zero))
    s = bb.emit(_q(bb.emit(relax.op.sigmoid(x)), 1 / 255, 0, "uint8"))
    return _q(bb.emit(relax.op.multiply(x, bb.emit(_dq(s, 1 / 255, 0)))), 0.03, 9, dtype)


def test_a_quantized_silu_becomes_one_lookup_of_its_input():
    mod = _module(_silu, [(1, 8, 5, 7)])
    rule = IntegerTables()
    rewritten = rule(mod)
    assert [o.applied for o in rule.outcomes] == [True, True]  # the sigmoid's quantize, then the product's
    calls = []
    relax.analysis.post_order_visit(rewritten["main"], lambda e: calls.append(e.op.name)
                                    if isinstance(e, relax.Call) and isinstance(e.op, tvm.ir.Op) else None)
    assert calls == ["relax.take"]  # the sigmoid's table is unused, and gone

    bb = relax.BlockBuilder()  # Expected: one take of the table by the input itself
    x = relax.Var("x0", relax.TensorType((1, 8, 5, 7), "uint8"))
    (table,) = [e for e in _consts(rewritten) if e.size == 256]
    with bb.function("main", [x]):
        with bb.dataflow():
            out = bb.emit_output(bb.emit(relax.op.take(relax.const(table), x, axis=0, mode="clip")))
        bb.emit_func_output(out)
    tvm.ir.assert_structural_equal(rewritten, bb.get())


def _consts(mod):
    found = []
    relax.analysis.post_order_visit(mod["main"], lambda e: found.append(e.value.numpy())
                                    if isinstance(e, tvm.ir.GenericConst) else None)
    return found


def _exact(q, f, s_in, z_in, s_out, z_out, lo=0, hi=255):
    """The region evaluated in exact arithmetic (float64 stands in: 8-bit inputs)."""
    y = f((q.astype(np.float64) - z_in) * np.float32(s_in))
    return np.clip(np.rint(y / np.float32(s_out)) + z_out, lo, hi)


@pytest.mark.parametrize("dtype,zero", [("uint8", 7), ("int8", -3)])
@pytest.mark.parametrize("name", ["sigmoid", "tanh", "leakyrelu", "hardswish", "gelu"])
def test_the_table_is_the_float_op_evaluated_exactly(dtype, zero, name):
    """Every input value once: the table against the float graph (TVM's float kernels: one step
    at most where the exact value lies within their few ulp of a rounding boundary) and against
    the op in float64."""
    import math

    f64 = {"sigmoid": lambda v: 1 / (1 + np.exp(-v)), "tanh": np.tanh,
           "leakyrelu": lambda v: np.where(v >= 0, v, v * np.float64(np.float32(0.1))),
           "hardswish": lambda v: v * np.clip(v + 3, 0, 6) / 6,
           "gelu": np.vectorize(lambda v: 0.5 * v * (1 + math.erf(v / math.sqrt(2))))}[name]

    def region(bb, xs):
        x = bb.emit(_dq(xs[0], 0.043, zero))
        if name == "sigmoid":
            y = relax.op.sigmoid(x)
        elif name == "tanh":
            y = relax.op.tanh(x)
        elif name == "leakyrelu":
            y = relax.op.nn.leakyrelu(x, 0.1)
        elif name == "gelu":
            y = relax.op.nn.gelu(x)
        else:  # as TVM imports ONNX's HardSwish
            y = relax.op.divide(relax.op.multiply(x, relax.op.clip(relax.op.add(x, relax.const(np.float32(3))), 0, 6)),
                                relax.const(np.float32(6)))
        return _q(bb.emit(y), 0.011, zero + 1, dtype)

    lo, hi = (0, 255) if dtype == "uint8" else (-128, 127)
    x = np.arange(lo, hi + 1).astype(dtype).reshape(1, 256)
    mod = _module(region, [x.shape], dtype)
    rule = IntegerTables()
    rewritten = rule(mod)
    assert [o.applied for o in rule.outcomes] == [True], rule.outcomes
    got = run(rewritten, x).astype(int)
    np.testing.assert_array_equal(got, _exact(x, f64, 0.043, zero, 0.011, zero + 1, lo, hi))
    steps = np.abs(got - run(mod, x).astype(int))
    assert steps.max() <= 1 and (steps > 0).sum() <= 2


def test_regions_it_does_not_take_say_why():
    shape = (1, 4, 3, 3)
    two_inputs = _module(lambda bb, xs: _q(relax.op.multiply(_dq(xs[0], 0.05, 7), _dq(xs[1], 0.02, 3)), 0.03, 9),
                         [shape, shape])
    per_channel = _module(lambda bb, xs: _q(relax.op.multiply(
        _dq(xs[0], 0.05, 7), relax.const(np.linspace(0.5, 2, 4, dtype=np.float32).reshape(1, 4, 1, 1))), 0.03, 9), [shape])
    reasons = []
    for mod in (two_inputs, per_channel):
        rule = IntegerTables()
        tvm.ir.assert_structural_equal(rule(mod), mod)
        (outcome,) = rule.outcomes
        assert not outcome.applied
        reasons.append(outcome.reason)
    assert "more than one 8-bit input" in reasons[0] and "per-channel" in reasons[1], reasons  # IntegerTables alone


def _activation_net(op, cin=3, mid=8, kernel=3, size=(12, 10)):
    """Conv (``cin -> mid``, ``kernel``) -> activation -> conv (1x1, ``mid -> 8``), float, for
    ONNX Runtime's quantizer."""
    inits = [numpy_helper.from_array(RNG.standard_normal((mid, cin, kernel, kernel)).astype(np.float32) * 0.4, "w0"),
             numpy_helper.from_array(RNG.standard_normal(mid).astype(np.float32) * 0.3, "b0"),
             numpy_helper.from_array(RNG.standard_normal((8, mid, 1, 1)).astype(np.float32) * 0.4, "w1")]
    nodes = [helper.make_node("Conv", ["x", "w0", "b0"], ["c0"], pads=[kernel // 2] * 4)]
    if op == "SiLU":
        nodes += [helper.make_node("Sigmoid", ["c0"], ["s"]), helper.make_node("Mul", ["c0", "s"], ["a"])]
    elif op == "LeakyRelu":
        nodes += [helper.make_node("LeakyRelu", ["c0"], ["a"], alpha=0.2)]
    else:
        nodes += [helper.make_node(op, ["c0"], ["a"])]
    nodes += [helper.make_node("Conv", ["a", "w1"], ["y"])]
    graph = helper.make_graph(nodes, "act", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, cin, *size])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, *size])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize("op", ["Sigmoid", "SiLU", "HardSwish", "HardSigmoid", "Tanh", "LeakyRelu"])
def test_quantized_activations_match_onnxruntime(op, tmp_path):
    """Quantized by ONNX Runtime's quantizer; its own Sigmoid/Tanh are approximations a few
    ulp off, so a value whose exact result lies that close to a rounding boundary may differ
    by a step."""
    import tvm_s2d
    from tvm_s2d.checks import compare_with_onnxruntime
    from tvm_s2d.pipeline import S2DPipeline
    from tvm_s2d.quantize import quantize_qdq

    model = onnx.load(quantize_qdq(_activation_net(op), tmp_path / "q.onnx"))
    mod = tvm_s2d.from_onnx(model)
    pipeline = S2DPipeline()
    with tvm_s2d.targets.host_target(), tvm.transform.PassContext(opt_level=3):
        pipeline.run(mod, until="prepare")
    tables = [o for o in pipeline.outcomes()["IntegerArithmetic"] if "table" in o.reason]
    assert tables and all(o.applied for o in tables), pipeline.outcomes()["IntegerArithmetic"]
    x = RNG.standard_normal((1, 3, 12, 10)).astype(np.float32)
    found = compare_with_onnxruntime(model, {"x": x}, run(mod, x, pipeline="s2d", target=tvm_s2d.targets.host_target()))
    assert found["max_steps"] <= 1 and found["fraction_differing"] <= 0.01, found


def test_a_quantized_silu_looks_up_bit_exact_on_hexagon(tmp_path):
    require_hexagon_tools()
    from tvm_s2d.emulator.model import run_model
    from tvm_s2d.quantize import quantize_qdq

    path = quantize_qdq(_activation_net("SiLU"), tmp_path / "q.onnx")
    result = run_model(path)
    assert result.matches_cpu and result.onnxruntime["max_steps"] <= 1
    assert not any("sigmoid" in k.name for k in result.kernels)  # the float sigmoid is gone
    # the lookup on the HVX vlut32 kernel (HexagonMovement; the CPU build: its plain loop), none
    # left to TVM's scalar take (~1.6 packets an element)
    (lookup,) = [k for k in result.kernels if k.name.startswith("hvx_lookup_")]
    assert lookup.hvx and lookup.kind == "elementwise" and not any("take" in k.name for k in result.kernels)
    assert lookup.packets < 0.5 * 8 * 12 * 10, lookup  # 960 elements


def test_a_lookup_after_a_requantization_kernel_runs_in_it_bit_exact_on_hexagon(tmp_path):
    """A 1x1 conv's requantization on its own kernel (96 channels at 6x6, MobileNetV3's expand
    convs) and the HardSwish lookup that alone reads it: one kernel, ``vlut32`` on the bytes
    before they are stored (``HexagonMovement._requantized_lookup``), no lookup kernel left."""
    require_hexagon_tools()
    from tvm_s2d.emulator.model import run_model
    from tvm_s2d.quantize import quantize_qdq

    path = quantize_qdq(_activation_net("HardSwish", cin=32, mid=96, kernel=1, size=(6, 6)), tmp_path / "q.onnx")
    result = run_model(path)
    assert result.matches_cpu and result.onnxruntime["max_steps"] <= 1, result.onnxruntime
    assert not any(k.name.startswith("hvx_lookup_") for k in result.kernels), [k.name for k in result.kernels]
    names = {k.name: k for k in result.kernels}
    assert not any(n.startswith("hvx_requantize_c0") for n in names), names  # the conv's own requantization went
    fused = names["hvx_requantize_a_QuantizeLinear"]  # the lookup's output ("a"), on the requantization kernel
    assert fused.hvx and fused.kind == "requantize"


# ---- the product of two quantized tensors (IntegerMultiply) -----------------------------------


@pytest.mark.parametrize("dtype,zero", [("uint8", 7), ("int8", -3)])
def test_a_squeeze_and_excite_gate_is_an_integer_product_within_a_step(dtype, zero):
    """``x * s``, ``s`` a per-channel sigmoid broadcast over the image."""
    from tvm_s2d.passes.quantized.integer import IntegerArithmetic

    image, gate = (1, 16, 7, 9), (1, 16, 1, 1)
    mod = _module(lambda bb, xs: _q(relax.op.multiply(_dq(xs[0], 0.047, zero), _dq(xs[1], 1 / 255, 0 if dtype == "uint8"
                                                                                   else -128)), 0.05, zero + 2, dtype),
                  [image, gate], dtype)
    rule = IntegerArithmetic()
    rewritten = rule(mod)
    assert [(o.applied, "integer product" in o.reason) for o in rule.outcomes] == [(True, True)], rule.outcomes
    lo, hi = (0, 255) if dtype == "uint8" else (-128, 127)
    x, s = RNG.integers(lo, hi + 1, image).astype(dtype), RNG.integers(lo, hi + 1, gate).astype(dtype)
    steps = np.abs(run(rewritten, x, s).astype(int) - run(mod, x, s).astype(int))
    assert steps.max() <= 1 and (steps > 0).mean() < 0.002  # rounded twice (r = 7): 0.3% of pairs a step off
    assert "float32" not in rewritten["main"].script()


def _se_net():
    """A squeeze-and-excitation block as torchvision's EfficientNet has it: x * sigmoid(fc(mean(x)))."""
    inits = [numpy_helper.from_array(RNG.standard_normal((16, 3, 3, 3)).astype(np.float32) * 0.4, "w0"),
             numpy_helper.from_array(RNG.standard_normal((16, 16, 1, 1)).astype(np.float32) * 0.3, "w1"),
             numpy_helper.from_array(RNG.standard_normal(16).astype(np.float32) * 0.3, "b1")]
    nodes = [helper.make_node("Conv", ["x", "w0"], ["c0"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["c0"], ["r"]),
             helper.make_node("GlobalAveragePool", ["r"], ["g"]), helper.make_node("Conv", ["g", "w1", "b1"], ["f"]),
             helper.make_node("Sigmoid", ["f"], ["s"]), helper.make_node("Mul", ["r", "s"], ["y"])]
    graph = helper.make_graph(nodes, "se", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 12, 10])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 16, 12, 10])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_a_squeeze_and_excite_block_runs_bit_exact_on_hexagon(tmp_path):
    require_hexagon_tools()
    from tvm_s2d.emulator.model import run_model
    from tvm_s2d.quantize import quantize_qdq

    result = run_model(quantize_qdq(_se_net(), tmp_path / "q.onnx"))
    assert result.matches_cpu and result.onnxruntime["max_steps"] <= 1 and result.onnxruntime["fraction_differing"] <= 0.01
    assert not any("multiply" in k.name for k in result.kernels)  # no product left to scalar code
    assert any(k.name.startswith("hvx_product_") for k in result.kernels)
    assert any(k.name.startswith("hvx_sums_") for k in result.kernels)  # the global pool's sums (NHWC after the conv)
    assert not any(k.name.endswith("_sum") or "_sum_" in k.name for k in result.kernels if "hvx" not in k.name)


@pytest.mark.parametrize("dtypes,shape,gate,zeros", [(("uint8", "uint8", "uint8"), (1, 9, 11, 40), True, None),  # a tail
                                                     (("int8", "int8", "int8"), (1, 5, 7, 96), True, None),
                                                     (("uint8", "uint8", "uint8"), (1, 6, 8, 16), False, None),  # no tail
                                                     (("int8", "uint8", "int8"), (1, 2, 3, 240), True, None),
                                                     (("uint8", "uint8", "uint8"), (1, 4, 4, 144), True, (250, 2)),
                                                     (("uint8", "uint8", "uint8"), (1, 4, 4, 144), True, (2, 250)),
                                                     (("uint8", "uint8", "uint8"), (1, 6, 6, 240), True, None),  # tail of 64
                                                     (("uint8", "uint8", "uint8"), (1, 3, 5, 40), False, None)])
def test_hvx_product_kernel_is_bit_exact(dtypes, shape, gate, zeros):
    """A gate tiled to lcm(C, 128) bytes (and one vector more where the kernel's last 128
    outputs, a tail, read past a period: ``gate_length``), or a second tensor of the same shape;
    requantized with one rounding and a clamp narrower than the type's; zero points at the ends
    of the range (the operands less them take 9 bits: the kernel multiplies halfwords).
    Regression: tails ran a value at a time (6x6x240: 2.1k packets); one group an iteration ran
    serially (1.6k)."""
    import math

    require_hexagon_tools()
    from tvm_s2d.emulator.qemu import run_kernel
    from tvm_s2d.geometry.fixed_point import RANGES
    from tvm_s2d.schedules.hexagon.product import gate_length, requantize_product_kernel

    a_dtype, b_dtype, dtype = dtypes
    channels, total = shape[-1], int(np.prod(shape))
    qa = RNG.integers(*RANGES[a_dtype], shape, endpoint=True).astype(a_dtype)
    qb = RNG.integers(*RANGES[b_dtype], (channels,) if gate else shape, endpoint=True).astype(b_dtype)
    period = math.lcm(channels, 128) if gate else total
    length = gate_length(shape, period)
    tiled = np.tile(qb.reshape(-1), -(-length // qb.size))[:length]
    za, zb = zeros or (5, 3 if b_dtype == "uint8" else -2)
    zy, m = 7, int(round(0.0051 * 2**31))
    lo, hi = (10, 250) if dtype == "uint8" else (-120, 127)
    product = (qa.astype(np.int64) - za) * (np.broadcast_to(qb, shape).astype(np.int64) - zb)
    expected = np.clip(((product * m + 2**30) >> 31) + zy, lo, hi).astype(dtype)
    args = (shape, period, a_dtype, za, b_dtype, zb, m, zy, lo, hi, dtype)
    hvx = run_kernel(requantize_product_kernel(*args), [qa, tiled], [(shape, dtype)])
    np.testing.assert_array_equal(hvx.outputs[0], expected)
    scalar = run_kernel(requantize_product_kernel(*args, hvx_code=False), [qa, tiled], [(shape, dtype)])
    np.testing.assert_array_equal(scalar.outputs[0], expected)
    assert hvx.packets < scalar.packets / (8 if total > 128 else 3)  # vector code, the tail too
    if shape == (1, 6, 6, 240):  # regression: one 128-output group an iteration, its gate offset computed: 1,565 packets
        assert hvx.packets < 1000, hvx.packets  # 853: whole periods of the gate an iteration, its offsets constants
    plain = tvm.compile(tvm.IRModule({"main": requantize_product_kernel(*args, hvx_code=False)}), target="llvm")
    out = tvm.runtime.tensor(np.zeros(shape, dtype))
    plain(tvm.runtime.tensor(qa), tvm.runtime.tensor(tiled), out)
    np.testing.assert_array_equal(out.numpy(), expected)



@pytest.mark.parametrize("channels,dtype", [(576, "uint8"), (240, "int8"), (96, "uint8"), (16, "uint8"), (128, "int8"),
                                            (1000, "uint8")])
@pytest.mark.parametrize("extra", [0, 128])
def test_hvx_gate_tile_is_exact(channels, dtype, extra):
    """A squeeze-and-excite gate of C bytes repeated to lcm(C, 128) for the product kernel:
    copied once, then doubled by vector copies (a last overlapping vector where a copy is not
    whole vectors; copies under 128 bytes in a plain loop). Regression: TVM's scalar ``tile``
    took ~1.7 packets a byte (MobileNetV3-Small: 9.2k packets in its nine gates)."""
    import math

    require_hexagon_tools()
    from tvm_s2d.emulator.qemu import run_kernel
    from tvm_s2d.geometry.fixed_point import RANGES
    from tvm_s2d.schedules.hexagon.product import tile_gate_kernel

    period = math.lcm(channels, 128) + extra  # (one vector past a period: not a multiple of C)
    gate = RNG.integers(*RANGES[dtype], (channels,), endpoint=True).astype(dtype)
    hvx = run_kernel(tile_gate_kernel(channels, period, dtype), [gate], [((period,), dtype)])
    plain = run_kernel(tile_gate_kernel(channels, period, dtype, hvx_code=False), [gate], [((period,), dtype)])
    tiled = np.tile(gate, -(-period // channels))[:period]
    np.testing.assert_array_equal(hvx.outputs[0], tiled)
    np.testing.assert_array_equal(plain.outputs[0], tiled)
    if period >= 512:
        assert hvx.packets < plain.packets / 5, (hvx.packets, plain.packets)

def test_a_product_whose_scales_need_a_multiplier_above_one_is_left_with_the_reason():
    from tvm_s2d.passes.quantized.integer import IntegerMultiply

    shape = (1, 4, 3, 3)
    mod = _module(lambda bb, xs: _q(relax.op.multiply(_dq(xs[0], 0.5, 7), _dq(xs[1], 0.4, 3)), 0.1, 9), [shape, shape])
    rule = IntegerMultiply()
    tvm.ir.assert_structural_equal(rule(mod), mod)
    (outcome,) = rule.outcomes
    assert not outcome.applied and "is not in [2**-9, 1)" in outcome.reason


@pytest.mark.parametrize("target", ["hexagon", "host"])
def test_a_lookup_runs_in_the_layout_of_the_convs_around_it(target, tmp_path):
    """ConvertLayout has no rule for ``take``: without the stand-in it sent the lookup's input
    back to NCHW and its output forth to NHWC (two transposes a table)."""
    import tvm_s2d
    from tvm_s2d.pipeline import S2DPipeline
    from tvm_s2d.quantize import quantize_qdq

    mod = tvm_s2d.from_onnx(onnx.load(quantize_qdq(_activation_net("Sigmoid"), tmp_path / "q.onnx")))
    chosen = tvm_s2d.targets.hexagon_target() if target == "hexagon" else tvm_s2d.targets.host_target()
    with chosen, tvm.transform.PassContext(opt_level=3):
        laid_out = S2DPipeline().run(mod, until="layout")
    bindings = {b.var: b.value for block in laid_out["main"].body.blocks for b in block.bindings}
    takes = [v for v in bindings.values() if isinstance(v, relax.Call) and getattr(v.op, "name", "") == "relax.take"]
    assert len(takes) == 1
    source = bindings.get(takes[0].args[1])
    assert not (isinstance(source, relax.Call) and source.op.name == "relax.permute_dims"), source
