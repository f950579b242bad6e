"""Small builders and runners shared by the tests."""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax

LLVM = tvm.target.Target({"kind": "llvm"})


def conv_module(data_shape, weight, *, dtype="float32", weight_param=False, epilogue=None, **conv_attrs):
    """``main(x) = [epilogue](conv2d(x, W))`` with ``W`` a constant (or a parameter)."""
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType(data_shape, dtype))
    params = [x]
    if weight_param:
        w = relax.Var("w", relax.TensorType(weight.shape, str(weight.dtype)))
        params.append(w)
    else:
        w = relax.const(weight)
    with bb.function("main", params):
        with bb.dataflow():
            y = bb.emit(relax.op.nn.conv2d(x, w, **conv_attrs), "conv")
            if epilogue is not None:
                y = bb.emit(epilogue(y), "post")
            out = bb.emit_output(y)
        bb.emit_func_output(out)
    return bb.get()


def run(mod, *inputs, pipeline="default", target=LLVM):
    with tvm.transform.PassContext(opt_level=3):
        ex = tvm.compile(mod, target=target, relax_pipeline=pipeline)
    vm = relax.VirtualMachine(ex, tvm.cpu())
    return vm["main"](*[tvm.runtime.tensor(np.ascontiguousarray(a)) for a in inputs]).numpy()


def random_tensor(rng, shape, dtype):
    if dtype == "float32":
        return rng.standard_normal(shape).astype(np.float32)
    info = np.iinfo(dtype)
    return rng.integers(info.min, info.max + 1, shape).astype(dtype)


def assert_same(got, expected, dtype):
    """Integer results must be bit-exact; float ones may differ only by rounding."""
    assert got.shape == expected.shape and got.dtype == expected.dtype
    if np.issubdtype(expected.dtype, np.integer):
        np.testing.assert_array_equal(got, expected)
    else:
        scale = float(np.abs(expected).max()) or 1.0
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5 * scale)


def ops_in(mod, name="relax.nn.conv2d"):
    """The calls to operator ``name`` in ``main``, in order."""
    found = []

    def visit(expr):
        if isinstance(expr, relax.Call) and isinstance(expr.op, tvm.ir.Op) and expr.op.name == name:
            found.append(expr)

    relax.analysis.post_order_visit(mod["main"], visit)
    return found
