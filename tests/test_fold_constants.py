"""``FoldConstantOps``: constant calls of its table folded with numpy, bit for bit what TVM's
``FoldConstant`` computes (dequantize of int8 weights and of int32 biases at int32's extremes,
per-channel and scalar; reshape, expand_dims, permute_dims chains; casts), and the calls it must
leave (a cast from float to int, an op outside the table, a non-constant operand)."""

import numpy as np
import tvm
from tvm import relax

from tvm_s2d.passes.fold_constants import FoldConstantOps


def _module(chain: bool = True):
    rng = np.random.default_rng(0)
    w = rng.integers(-128, 128, (16, 8, 3, 3)).astype(np.int8)
    b = rng.integers(-(2**31), 2**31, (16,)).astype(np.int32)
    b[:2] = [2**31 - 1, -(2**31)]
    sw = rng.uniform(1e-4, 1e-1, 16).astype(np.float32)
    u = rng.integers(0, 256, (2, 5)).astype(np.uint8)
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((1, 16, 4, 4), "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            dw = bb.emit(relax.op.dequantize(relax.const(w), relax.const(sw), relax.const(rng.integers(-5, 5, 16).astype(np.int8)),
                                             axis=0))
            db = bb.emit(relax.op.dequantize(relax.const(b), relax.const(sw * np.float32(0.01)), relax.const(np.int32(0)), axis=0))
            du = bb.emit(relax.op.dequantize(relax.const(u), relax.const(np.float32(0.37)), relax.const(np.uint8(131)), axis=1))
            e = bb.emit(relax.op.expand_dims(db, [1, 2])) if chain else db
            t = bb.emit(relax.op.permute_dims(bb.emit(relax.op.reshape(dw, [16, 72]))))
            c = bb.emit(relax.op.astype(relax.const(b), "float32"))
            n = bb.emit(relax.op.astype(relax.const(b), "int8"))
            s = bb.emit(relax.op.multiply(bb.emit(relax.op.add(c, relax.const(sw))), relax.const(np.float32(1 / 3))))
            root = bb.emit(relax.op.sqrt(bb.emit(relax.op.add(relax.const(sw), bb.emit(relax.op.multiply(s, s))))))
            s = bb.emit(relax.op.divide(relax.const(sw), root))
            i = bb.emit(relax.op.subtract(relax.const(b), relax.const(np.int32(7))))  # wraps at int32's minimum
            out = bb.emit_output(relax.Tuple([bb.emit(relax.op.add(x, e)), t, c, n, du, s, i]))
        bb.emit_func_output(out)
    return bb.get()


def _constants(mod) -> list[np.ndarray]:
    found = []
    relax.analysis.post_order_visit(mod["main"], lambda e: found.append(e.value.numpy()) if isinstance(e, tvm.ir.GenericConst) else None)
    return sorted(found, key=lambda a: (a.shape, str(a.dtype)))


def test_folds_are_tvms_bit_for_bit():
    mod = _module()
    mine, tvms = FoldConstantOps()(mod), relax.transform.FoldConstant()(mod)
    calls = []
    relax.analysis.post_order_visit(mine["main"], lambda e: calls.append(e.op.name) if isinstance(e, relax.Call)
                                    and isinstance(e.op, tvm.ir.Op) else None)
    assert calls == ["relax.add"]  # every constant call folded, the chains too
    ours, theirs = _constants(mine), _constants(tvms)
    assert [(a.shape, a.dtype) for a in ours] == [(a.shape, a.dtype) for a in theirs]
    for a, b in zip(ours, theirs):
        np.testing.assert_array_equal(a.view(np.uint8), b.view(np.uint8))  # bits, not values


def test_leaves_what_it_does_not_fold():
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((4,), "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            f = relax.const(np.array([1.5, -2.5, 3e9, 7.0], np.float32))
            out = bb.emit_output(relax.Tuple([bb.emit(relax.op.astype(f, "int32")), bb.emit(relax.op.exp(f)),
                                              bb.emit(relax.op.expand_dims(x, [0]))]))
        bb.emit_func_output(out)
    mod = bb.get()
    tvm.ir.assert_structural_equal(FoldConstantOps()(mod), mod)


def test_the_folded_model_computes_the_same():
    """The unfolded graph run whole (its constant kernels at run time) against the folded one."""
    from helpers import run

    mod = _module()
    single = tvm.IRModule({"main": relax.Function(mod["main"].params, relax.TupleGetItem(mod["main"].body, 0))})
    single = relax.transform.Normalize()(single)
    x = np.random.default_rng(1).standard_normal((1, 16, 4, 4)).astype(np.float32)
    np.testing.assert_array_equal(run(FoldConstantOps()(single), x), run(single, x))
