"""``CpuRequantizeInt32``: the requantization in int32 after its multiply gives the int64 form's
integers for every int32 accumulator (extremes, rounding shifts 0, 1 and 30, headroom shifts), in a
quantized model too; AVX-512 targets keep the int64 form."""

import numpy as np
import pytest
import tvm
from tvm import relax

import tvm_s2d
from helpers import run
from tvm_s2d.passes import CpuRequantizeInt32
from tvm_s2d.passes.cpu.requantize_int32 import has_avx512
from tvm_s2d.passes.quantized.integer_requantize import emit_requantize
from tvm_s2d.targets import host_target

HOST = host_target()
needs_no_avx512 = pytest.mark.skipif(has_avx512(HOST), reason="this CPU has AVX-512: the pass keeps the int64 form")


def _module(shape, b, m, r, zy, lo, hi, dtype, pre):
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType(shape, "int32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            out = bb.emit_output(bb.emit(emit_requantize(bb, x, b, m, r, zy, lo, hi, dtype, pre)))
        bb.emit_func_output(out)
    return bb.get()


def _int64_reference(x, b, m, r, zy, lo, hi, dtype, pre):
    first = 31 - np.asarray(pre, np.int64)
    t = ((x.astype(np.int64) + b) * m + ((np.int64(1) << first) >> 1)) >> first
    t = (t + ((np.int64(1) << np.asarray(r, np.int64)) >> 1)) >> np.asarray(r, np.int64)
    return np.clip(t + zy, lo, hi).astype(dtype)


@needs_no_avx512
@pytest.mark.parametrize("dtype,zy,lo,hi", [("uint8", 131, 0, 255), ("int8", -7, -128, 127), ("uint8", 90, 90, 200)])
def test_the_int32_form_gives_the_int64_forms_integers(dtype, zy, lo, hi):
    rng = np.random.default_rng(5)
    channels = 8
    shape = (1, 5, 6, channels)
    r = np.array([0, 1, 2, 7, 13, 22, 30, 30])
    m = np.array([2**31 - 1, 2**30, 1_518_500_250, 2**31 - 1, 1_234_567_891, 2**30 + 1, 2**31 - 1, 2**30])
    b = rng.integers(-1000, 1000, channels).astype(np.int32)
    x = rng.integers(-(2**31) + 1000, 2**31 - 1000, shape).astype(np.int32)
    x[0, 0, :2] = [[2**31 - 1001] * channels, [-(2**31) + 1000] * channels]  # the extremes (after the bias)
    mod = _module(shape, b, m, r, zy, lo, hi, dtype, 0)
    expected = _int64_reference(x, b, m, r, zy, lo, hi, dtype, 0)
    pass_ = CpuRequantizeInt32(target=HOST)
    rewritten = pass_(mod)
    assert [o.applied for o in pass_.outcomes] == [True], pass_.outcomes
    np.testing.assert_array_equal(run(mod, x, pipeline="default", target=HOST), expected)
    np.testing.assert_array_equal(run(rewritten, x, pipeline="default", target=HOST), expected)


@needs_no_avx512
def test_headroom_shifts_give_the_same_integers():
    """``pre`` bits of headroom: ``(a << pre) * M >> 31`` as one shift of ``31 - pre``, accumulators
    inside the headroom (``|a| << pre < 2**30``, as ``IntegerRequantize`` chooses it)."""
    rng = np.random.default_rng(6)
    shape, channels = (1, 7, 3, 4), 4
    pre = np.array([0, 3, 9, 14])
    r = np.array([5, 8, 20, 25])
    m = np.array([2**31 - 1, 1_500_000_000, 1_100_000_000, 2**30])
    b = rng.integers(-50, 50, channels).astype(np.int32)
    bound = (1 << (30 - pre)) - 100
    x = (rng.integers(-(2**30), 2**30, shape) % (2 * bound) - bound).astype(np.int32)
    x[0, 0] = bound - 60
    mod = _module(shape, b, m, r, 3, -128, 127, "int8", pre)
    expected = _int64_reference(x, b, m, r, 3, -128, 127, "int8", pre)
    np.testing.assert_array_equal(run(CpuRequantizeInt32(target=HOST)(mod), x, pipeline="default", target=HOST), expected)


@needs_no_avx512
def test_quantized_convs_compute_the_same_integers():
    from test_x86_int8 import _input, qdq_convs

    model = qdq_convs(12, (13, 11), ((32, 3, 1, 1, 1), (16, 1, 1, 0, 1)), "uint8")
    mod = tvm_s2d.from_onnx(model)
    x = _input(model, "uint8")
    new = run(mod, x, pipeline="s2d", target=HOST)
    np.testing.assert_array_equal(new, run(mod, x, pipeline="s2d", target=HOST, disabled=["CpuRequantizeInt32"]))
    from tvm_s2d.pipeline import S2DPipeline

    pipeline = S2DPipeline()
    with HOST, tvm.transform.PassContext(opt_level=3):
        pipeline.run(mod, until="cpu")
    assert [o.applied for o in pipeline.outcomes()["CpuRequantizeInt32"]] == [True, True]


def test_avx512_and_other_targets_keep_the_int64_form():
    mod = _module((1, 2, 2, 4), np.zeros(4, np.int32), np.full(4, 2**30), np.full(4, 3), 0, 0, 255, "uint8", 0)
    for target in (tvm.target.Target({"kind": "llvm", "mcpu": "skylake-avx512"}), tvm.target.Target({"kind": "c"})):
        pass_ = CpuRequantizeInt32(target=target)
        tvm.ir.assert_structural_equal(pass_(mod), mod)
        assert pass_.outcomes == []
    pass_ = CpuRequantizeInt32(target=tvm.target.Target({"kind": "llvm", "mcpu": "haswell"}))
    pass_(mod)
    assert [o.applied for o in pass_.outcomes] == [True]


def _product_module(m: np.ndarray, constant: bool = True):
    """``int32((int64(x) * m) >> 31)`` as a fused kernel called with ``m`` a constant (or an input)."""
    from tvm.script import tirx as T

    n = m.size

    @T.prim_func(private=True, s_tir=True)
    def product(x: T.Buffer((n,), "int32"), mult: T.Buffer((n,), "int64"), out: T.Buffer((n,), "int32")):
        for i in T.vectorized(n):
            with T.sblock("product"):
                v = T.axis.spatial(n, i)
                out[v] = T.Cast("int32", (T.Cast("int64", x[v]) * mult[v] + T.int64(1 << 30)) >> T.int64(31))

    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((n,), "int32"))
    params = [x] if constant else [x, relax.Var("m", relax.TensorType((n,), "int64"))]
    with bb.function("main", params):
        gv = bb.add_func(product, "product")
        mult = relax.const(m, "int64") if constant else params[1]
        out = bb.emit(relax.call_tir(gv, [x, mult], relax.TensorType((n,), "int32")))
        bb.emit_func_output(out)
    return bb.get()


def _products(func) -> list:
    """The products (``Mul``) in ``func``'s body."""
    import tvm_ffi
    from tvm.ir.prim.expr import Mul

    found = []
    tvm_ffi.structural_map(func.body, [(Mul, lambda e: found.append(e) or e)])
    return found


def test_narrow_multipliers_reads_int32_range_constants_as_32_bits():
    """Before/Expected on the product's operand, the same integers, and LLVM's 32 x 32 -> 64-bit
    multiply (``vpmuldq``) on AVX2 instead of the emulated 64-bit one."""
    from tvm.ir.prim.expr import Cast

    from tvm_s2d.passes import NarrowMultipliers

    haswell = tvm.target.Target({"kind": "llvm", "mcpu": "haswell"})
    m = np.array([2**31 - 1, 2**30, -(2**31), 1_234_567_891] * 8, np.int64)
    mod = _product_module(m)
    pass_ = NarrowMultipliers(target=haswell)
    narrowed = pass_(mod)
    assert [o.applied for o in pass_.outcomes] == [True], pass_.outcomes
    (mul,) = _products(narrowed["product"])
    operand = mul.b
    assert isinstance(operand, Cast) and str(operand.ty) == "int64" and isinstance(operand.value, Cast)
    assert str(operand.value.ty) == "int32" and operand.value.value.same_as(_products(mod["product"])[0].b)
    x = np.random.default_rng(7).integers(-(2**31), 2**31, m.size).astype(np.int32)
    expected = ((x.astype(np.int64) * m + (1 << 30)) >> 31).astype(np.int32)
    np.testing.assert_array_equal(run(narrowed, x, pipeline="default", target=HOST), expected)

    def asm(module):
        with haswell:
            lib = tvm.compile(tvm.IRModule({"main": module["product"].with_attr("global_symbol", "main")}), target=haswell)
        return lib.mod.inspect_source("asm") if hasattr(lib, "mod") else lib.inspect_source("asm")

    assert "vpmuldq" in asm(narrowed) and "vpmuludq" not in asm(narrowed)
    assert "vpmuludq" in asm(mod)  # the emulated form it replaces


@pytest.mark.parametrize("case", ["outside int32", "not a constant"])
def test_narrow_multipliers_leaves_other_products(case):
    from tvm_s2d.passes import NarrowMultipliers

    m = np.array([2**31, 3] * 16, np.int64) if case == "outside int32" else np.full(32, 3, np.int64)
    mod = _product_module(m, constant=case != "not a constant")
    pass_ = NarrowMultipliers(target=tvm.target.Target({"kind": "llvm", "mcpu": "haswell"}))
    tvm.ir.assert_structural_equal(pass_(mod), mod)
    assert pass_.outcomes == []
