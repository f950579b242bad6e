"""The "s2d" Relax pipeline inside tvm.compile: it rewrites, it can be disabled, it takes options."""

import numpy as np
import pytest
import tvm
from tvm import relax

import tvm_s2d  # noqa: F401  (registers the pipeline)
from helpers import LLVM, assert_same, conv_module, ops_in, run

RNG = np.random.default_rng(11)


@tvm.ir.instrument.pass_instrument
class Capture:
    """Keeps the module right after the pass named ``name``, if that pass ran."""

    def __init__(self, name="SpaceToDepthConv2d"):
        self.pass_name = name
        self.after = None

    def run_after_pass(self, mod, info):
        if info.name == self.pass_name:
            self.after = mod


def compile_capturing(mod, pipeline, disabled=(), after="SpaceToDepthConv2d"):
    capture = Capture(after)
    with tvm.transform.PassContext(opt_level=3, instruments=[capture], disabled_pass=list(disabled)):
        ex = tvm.compile(mod, target=LLVM, relax_pipeline=pipeline)
    return ex, capture.after


def _model():
    weight = RNG.standard_normal((8, 8, 3, 3)).astype(np.float32)
    return conv_module((1, 8, 20, 20), weight, padding=(1, 1, 1, 1), epilogue=relax.op.nn.relu)


def _run(ex, x):
    return relax.VirtualMachine(ex, tvm.cpu())["main"](tvm.runtime.tensor(x)).numpy()


def test_s2d_pipeline_is_registered_and_rewrites_inside_tvm_compile():
    mod = _model()
    ex, after = compile_capturing(mod, relax.get_pipeline("s2d", lane_width=32))
    assert after is not None
    (conv,) = ops_in(after)
    assert conv.args[0].ty.shape[1] == 32  # 8 channels x 2x2 block, chosen by the 32-lane cost model
    x = RNG.standard_normal((1, 8, 20, 20)).astype(np.float32)
    assert_same(_run(ex, x), run(mod, x), "float32")


def test_on_an_llvm_cpu_target_the_default_cost_model_keeps_the_original_convs():
    """CPU vectors hold pixels: S2D would only add zero taps and data movement (and measured
    slower on x86), so without an explicit lane width the pipeline leaves the convs alone."""
    mod = _model()
    capture = Capture()
    pipeline = relax.get_pipeline("s2d")
    with tvm.transform.PassContext(opt_level=3, instruments=[capture]):
        tvm.compile(mod, target=LLVM, relax_pipeline=pipeline)
    (conv,) = ops_in(capture.after)
    assert conv.args[0].ty.shape[1] == 8
    from tvm_s2d.targets import default_lane_width

    assert default_lane_width(LLVM) == 1 and default_lane_width(None) == 32
    from tvm_s2d.targets import hexagon_target

    assert default_lane_width(hexagon_target()) == 32


def test_disabled_pass_turns_the_rewrite_off():
    ex, after = compile_capturing(_model(), "s2d", disabled=["SpaceToDepthConv2d"])
    assert after is None


def test_pipeline_options_force_a_block():
    mod = _model()
    ex, after = compile_capturing(mod, relax.get_pipeline("s2d", block=(1, 4)))
    (conv,) = ops_in(after)
    assert conv.args[0].ty.shape[1] == 32 and conv.args[1].value.numpy().shape[:2] == (32, 32)
    x = RNG.standard_normal((1, 8, 20, 20)).astype(np.float32)
    assert_same(_run(ex, x), run(mod, x), "float32")


def test_pipeline_rejects_bad_options():
    with pytest.raises(ValueError, match="block"):
        relax.get_pipeline("s2d", block=-1)


def test_no_weight_transform_is_left_at_run_time():
    """After fusion, main calls three kernels: S2D (fused pad/reshape/transpose), the conv with
    the folded 32x32x2x2 weight as a constant, D2S. Nothing computes on the original weight."""
    _, fused = compile_capturing(_model(), relax.get_pipeline("s2d", lane_width=32), after="FuseTIR")
    calls = ops_in(fused, "relax.call_tir")
    constants = [arg for call in calls for arg in call.args[1].fields if isinstance(arg, tvm.ir.GenericConst)]
    assert [tuple(c.value.numpy().shape) for c in constants] == [(32, 32, 2, 2)]
    inputs = [tuple(int(d) for d in arg.ty.shape.values) for call in calls for arg in call.args[1].fields]
    assert (8, 8, 3, 3) not in inputs
    assert len(calls) == 3


def test_the_stage_table_is_the_pipeline_and_states_its_order():
    """Every variant is built from ``STAGES``: the passes run in the table's order, under the
    names it gives, and the constraints its ``why`` lines state hold."""
    from tvm_s2d.pipeline import STAGES, S2DPipeline

    from pathlib import Path

    pipeline = S2DPipeline(metaschedule=Path(__file__).parents[1] / "tuning_logs" / "demo_llvm_ms")
    assert [s.name for s in STAGES] == list(pipeline.stages)
    for stage in STAGES:
        assert [p.info.name for p in pipeline.stages[stage.name]] == list(stage.passes), stage.name
        assert stage.why
    order = [name for stage in STAGES for name in stage.passes]

    def before(a, b):
        return order.index(a) < order.index(b)

    # weights constants before anything decides on them
    assert order[:4] == ["RemoveDropout", "SumAsAdds", "QDQMatmulToConv", "QDQConvToInteger"]
    assert before("PowerAsRoots", "HexagonLayout")  # every target computes the same powers (no powf on Hexagon)
    assert before("CpuLayout", "SpaceToDepthConv2d") and before("HexagonLayout", "SpaceToDepthConv2d")
    assert before("SpaceToDepthConv2d", "HexagonConvs") and before("HexagonConvs", "HexagonRequantize")
    assert before("HexagonRequantize", "HexagonMovement") and before("HexagonMovement", "LegalizeOps")
    assert before("FuseTIR", "VectorMath")  # the fused kernels' final expressions
    assert before("VectorMath", "ApplyMetaScheduleDatabase") and before("ApplyMetaScheduleDatabase", "ScheduleConvs")
    assert order[-1] == "_pipeline"  # TVM's default_build_pipeline
    # slices and variants come from the same table
    names = [p.info.name for p in S2DPipeline(rewrite=False).passes(until="lower")]
    assert "SpaceToDepthConv2d" not in names and names[-3:] == ["FuseTIR", "VectorMath", "NarrowMultipliers"]
    assert [p.info.name for p in S2DPipeline().passes(start="layout", until="rewrite")] == [
        "HexagonLayout", "CpuLayout", "SpaceToDepthConv2d"]


@tvm.transform.module_pass(opt_level=0, name="CpuLayout")
class _Exploding:
    def transform_module(self, mod, _ctx):
        raise RuntimeError("boom\nsecond line")


def test_a_failing_pass_becomes_an_outcome_and_the_compile_goes_on(monkeypatch):
    """No pass can crash a compile: the guard leaves the module as it was and records the
    failure, which the report prints; with ``TVM_S2D_STRICT=1`` it raises."""
    from tvm_s2d.pipeline import S2DPipeline
    from tvm_s2d.report import Report

    mod = _model()
    pipeline = S2DPipeline()
    pipeline.stages["layout"][1] = _Exploding()
    monkeypatch.setenv("TVM_S2D_STRICT", "0")
    with tvm.transform.PassContext(opt_level=3):
        ex = tvm.compile(mod, target=LLVM, relax_pipeline=pipeline.as_pass())
    (failure,) = pipeline.outcomes()["CpuLayout"]
    assert not failure.applied and failure.reason == "failed: RuntimeError: boom"
    assert "not applied, failed: RuntimeError: boom" in str(Report.from_pipeline(pipeline))
    x = RNG.standard_normal((1, 8, 20, 20)).astype(np.float32)
    assert_same(_run(ex, x), run(mod, x), "float32")
    monkeypatch.setenv("TVM_S2D_STRICT", "1")
    with pytest.raises(RuntimeError, match="boom"), tvm.transform.PassContext(opt_level=3):
        tvm.compile(mod, target=LLVM, relax_pipeline=pipeline.as_pass())
