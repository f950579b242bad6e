"""``PowerAsRoots``: powers with an exponent in quarters as products of square roots (LRN's
``x^0.75``, which lowered to ``powf``, absent from the Hexagon harness's libm)."""

import numpy as np
import tvm
from tvm import relax
from tvm.script import relax as R

import tvm_s2d
from helpers import lrn_model, onnxruntime_reference, ops_in, run
from tvm_s2d.passes import PowerAsRoots
from tvm_s2d.pipeline import S2DPipeline
from tvm_s2d.targets import host_target


def test_a_power_of_three_quarters_becomes_a_square_root_times_a_fourth_root():
    @tvm.script.ir_module
    class Before:
        @R.function
        def main(x: R.Tensor((1, 8, 4, 4), "float32")):
            with R.dataflow():
                scale = R.add(x, R.const(1.0, "float32"))
                denominator = R.power(scale, R.const(0.75, "float32"))
                y = R.divide(x, denominator)
                R.output(y)
            return y

    @tvm.script.ir_module
    class Expected:
        @R.function
        def main(x: R.Tensor((1, 8, 4, 4), "float32")):
            with R.dataflow():
                scale = R.add(x, R.const(1.0, "float32"))
                root = R.sqrt(scale)
                fourth = R.sqrt(root)
                denominator = R.multiply(root, fourth)
                y = R.divide(x, denominator)
                R.output(y)
            return y

    pass_ = PowerAsRoots()
    tvm.ir.assert_structural_equal(pass_(Before), Expected)
    (outcome,) = pass_.outcomes
    assert (outcome.name, outcome.applied, outcome.reason) == ("denominator", True, "x^0.75 as sqrt(x) * sqrt(sqrt(x))")


def test_negative_and_integer_exponents_take_a_division_and_products():
    @tvm.script.ir_module
    class Before:
        @R.function
        def main(x: R.Tensor((4,), "float32")):
            with R.dataflow():
                y = R.power(x, R.const(-1.5, "float32"))
                z = R.power(y, R.const(3.0, "float32"))
                R.output(z)
            return z

    @tvm.script.ir_module
    class Expected:
        @R.function
        def main(x: R.Tensor((4,), "float32")):
            with R.dataflow():
                root = R.sqrt(x)
                x_root = R.multiply(x, root)
                y = R.divide(R.const(1.0, "float32"), x_root)
                square = R.multiply(y, y)
                z = R.multiply(square, y)
                R.output(z)
            return z

    pass_ = PowerAsRoots()
    tvm.ir.assert_structural_equal(pass_(Before), Expected)
    assert [o.reason for o in pass_.outcomes] == ["x^-1.5 as 1 / (x * sqrt(x))", "x^3 as x * x * x"]


def test_other_exponents_are_left_to_powf_with_the_reason():
    @tvm.script.ir_module
    class Before:
        @R.function
        def main(x: R.Tensor((4,), "float32"), e: R.Tensor((), "float32")):
            with R.dataflow():
                a = R.power(x, R.const(0.3, "float32"))
                b = R.power(a, R.const(4.25, "float32"))
                c = R.power(b, e)
                R.output(c)
            return c

    pass_ = PowerAsRoots()
    tvm.ir.assert_structural_equal(pass_(Before), Before)
    assert [(o.name, o.applied, o.reason) for o in pass_.outcomes] == [
        ("a", False, "exponent 0.3 is not a multiple of 1/4 of magnitude at most 4 (left to powf)"),
        ("b", False, "exponent 4.25 is not a multiple of 1/4 of magnitude at most 4 (left to powf)"),
        ("c", False, "exponent is not a constant (left to powf)"),
    ]


EXPONENTS = [k / 4 for k in range(-16, 17)]
#: The measured bound of the module doc: at most 5 ulp from the correctly rounded power.
MAX_ULP = 5


def test_every_exponent_is_within_a_few_ulp_of_the_correctly_rounded_power():
    """Each exponent taken, compiled for this CPU, on 4,096 floats in [2^-6, 2^6]: within
    ``MAX_ULP`` of x^c in float64 rounded to float32; x^0, x^0.5, x^1, x^-1, x^2 exact (one
    correctly rounded operation or none)."""
    x = np.exp2(np.random.default_rng(0).uniform(-6, 6, 4096)).astype(np.float32)
    bb = relax.BlockBuilder()
    xv = relax.Var("x", relax.TensorType(x.shape, "float32"))
    with bb.function("main", [xv]):
        with bb.dataflow():
            powers = [bb.emit(relax.op.power(xv, relax.const(c, "float32"))) for c in EXPONENTS]
            out = bb.emit_output(relax.op.stack(powers))
        bb.emit_func_output(out)
    pass_ = PowerAsRoots()
    mod = pass_(bb.get())
    assert all(o.applied for o in pass_.outcomes) and len(pass_.outcomes) == len(EXPONENTS)
    assert not ops_in(mod, "relax.power")
    got = run(mod, x, target=host_target())
    for c, row in zip(EXPONENTS, got):
        expected = np.power(x.astype(np.float64), c).astype(np.float32)
        ulps = np.abs(row.view(np.int32).astype(np.int64) - expected.view(np.int32).astype(np.int64))
        assert ulps.max() <= (0 if c in (0, 0.5, 1, -1, 2) else MAX_ULP), c


def test_a_float_lrn_compiled_by_the_pipeline_matches_onnxruntime():
    model = lrn_model()
    x = (np.random.default_rng(1).standard_normal((1, 16, 7, 9)) * 3).astype(np.float32)
    pipeline = S2DPipeline()
    got = run(tvm_s2d.from_onnx(model), x, pipeline=pipeline.as_pass(), target=host_target())
    (outcome,) = pipeline.outcomes()["PowerAsRoots"]
    assert outcome.applied and outcome.reason == "x^0.75 as sqrt(x) * sqrt(sqrt(x))"
    np.testing.assert_allclose(got, onnxruntime_reference(model, {"x": x}), rtol=2e-6, atol=1e-7)
