"""The Relax pipeline ``"s2d"``, registered when ``tvm_s2d`` is imported, declared once as a
table of stages (``STAGES``): each stage's passes and why it comes where it does.

    with tvm.transform.PassContext(opt_level=3):
        ex = tvm.compile(mod, target, relax_pipeline="s2d")            # lane model per layer
        ex = tvm.compile(mod, target, relax_pipeline=relax.get_pipeline("s2d", block=2))

``S2DPipeline`` gives every variant and slice of it (``rewrite=False``: the fair baseline;
``hvx=False``: the HVX kernels as their plain loops, the emulator's CPU reference;
``passes(until="lower")``: the kernels the schedules take, for the tuners). Its passes keep
what they decided (``outcomes``).

**No pass of tvm-s2d can crash a compile.** Each runs under one guard (``_guarded``): an
exception inside it leaves the module as it was, becomes the outcome ``failed: <error type>:
<first line>`` that ``report`` and ``compile`` print, and the compile goes on.
``TVM_S2D_STRICT=1`` (the tests) raises instead.

``PassContext(disabled_pass=["SpaceToDepthConv2d"])`` compiles the same pipeline without the
rewrite, which is the fair baseline. ``disabled_pass=["ScheduleConvs"]`` keeps TVM's naive
loops; ``["CpuLayout"]`` the model's own layouts on CPUs; ``["HexagonConvs"]``,
``["HexagonMovement"]`` TVM's default lowering on Hexagon. ``metaschedule=`` a MetaSchedule
JSON database (``tvm-s2d tune --metaschedule``) gives the kernels it holds their tuned
schedule instead (``schedules/metaschedule.py``).
"""

from __future__ import annotations

from dataclasses import dataclass

import tvm
from tvm.relax import transform
from tvm.relax.pipeline import PIPELINE_MAP, default_build_pipeline, register_pipeline

from .passes import (CpuDense, CpuIntegerConvs, CpuLayout, CpuPointwiseRows, CpuRequantizeInt32, CpuResize, CpuTileWidth,
                     HexagonConvs, HexagonLayout, HexagonMovement, HexagonRequantize, NarrowMultipliers, ScheduleConvs, SpaceToDepthConv2d,
                     VectorMath)
from .passes.kernel_names import RecordFusedNames
from .passes.outcome import Outcome, strict
from .passes.fold_constants import FoldConstantOps
from .passes.prepare import prepare_passes
from .schedules.metaschedule import ApplyDatabase
from .tuning.apply import TunedLog

PIPELINE_NAME = "s2d"


@dataclass(frozen=True)
class Stage:
    name: str
    passes: tuple[str, ...]  # the registered pass names, in order
    why: str  # after what, and because of what


#: The pipeline's order, once. ``test_pipeline`` asserts the constraints the ``why`` lines state.
STAGES = (
    Stage("prepare", ("RemoveDropout", "SumAsAdds", "QDQMatmulToConv", "QDQConvToInteger", "PowerAsRoots", "FoldConstantOps",
                      "FoldConstant", "FoldBatchNorm", "IntegerArithmetic"),
          "first: dropouts become the identity (inference), so no mask kernel keeps a dense layer from its "
          "schedule; ONNX Sum (broadcast, stack, reduce) becomes adds, which layouts carry and convs fuse; "
          "QDQ fully connected layers become 1x1 convs, QDQ convs integer convs and weights constants "
          "(folded: with numpy where FoldConstantOps can, each of FoldConstant's folds compiles a kernel), so every later "
          "pass sees a conv "
          "with constant weights; powers in quarters (LRN's x^0.75) become products of square roots on every "
          "target, so the CPU build (the emulator's reference) and the Hexagon build, whose libm has no powf, "
          "compute the same floats; batch norms folded into the convs before them (weights constants by then), the "
          "others elementwise; then the float epilogues, adds, pools and concats of quantized ops become integer"),
    Stage("layout", ("HexagonLayout", "CpuLayout"),
          "after prepare because layouts are chosen for convs with constant weights (folded at compile time); "
          "before the rewrite, which decides each conv in the layout its kernel runs in"),
    Stage("rewrite", ("SpaceToDepthConv2d",),
          "after layout because S2D blocks are decided per layout and lane model; before the kernels that take "
          "the rewritten convs"),
    Stage("hvx", ("HexagonConvs", "HexagonRequantize", "HexagonMovement"),
          "after the rewrite because the HVX conv kernels take the rewritten integer convs; requantization fuses "
          "into the conv kernels HexagonConvs emitted, and the S2D/D2S movement left around them goes last"),
    Stage("cpu", ("CpuIntegerConvs", "CpuDense", "CpuPointwiseRows", "CpuTileWidth", "CpuRequantizeInt32",
                  "CpuResize"),
          "after the layout and the rewrite because it takes integer convs in the layout and form they will run in "
          "(NHWC); before lower because it packs weights as Relax constants and emits a kernel whose epilogue "
          "FuseOps fuses; dense layers' weights packed in column blocks the same way; the 1x1 convs left in NCHW "
          "on rows of whole vectors, their reshapes views FuseOps leaves alone; NHWC float convs on rows of whole "
          "register tiles (after CpuDense, whose 1x1 convs they include); requantizations in int32 after their "
          "multiply where the CPU has no 64-bit multiply or shift (AVX2), before FuseOps fuses them into the kernels; bilinear "
          "resizes as two separable passes (a kernel of its own, which FuseOps fuses the transposes around into)"),
    Stage("lower", ("FoldConstantOps", "LegalizeOps", "AnnotateTIROpPattern", "FoldConstant", "FuseOps", "RecordFusedNames",
                    "FuseTIR", "VectorMath", "NarrowMultipliers"),
          "after every graph pass: constant reshapes, casts and dequantizes folded with numpy (FoldConstant compiles"
          " a kernel for each, ~57 ms), the rest by TVM; Relax ops become TIR kernels (PrimFuncs), fused; which bindings each fused"
          " kernel computes is kept for the tables (FuseTIR forgets it); on CPUs exp, sigmoid, erf and tanh in"
          " the fused kernels become polynomials that vectorize (libm's calls do not), and their int64 products of"
          " int32-range constants (the requantizations' multipliers) 32 x 32 -> 64-bit multiplies"),
    Stage("schedule", ("ApplyMetaScheduleDatabase", "ScheduleConvs"),
          "after lower because schedules take the fused kernels; a MetaSchedule database first, ScheduleConvs "
          "takes the kernels it left"),
    Stage("build", ("_pipeline",), "last: TVM's default build pipeline (registered as \"_pipeline\")"),
)
STAGE_NAMES = tuple(stage.name for stage in STAGES)
#: The passes of tvm-s2d (guarded; TVM's own passes are not).
OWN_PASSES = ("RemoveDropout", "SumAsAdds", "QDQMatmulToConv", "QDQConvToInteger", "PowerAsRoots", "FoldConstantOps",
              "FoldBatchNorm",
              "IntegerArithmetic", "HexagonLayout", "CpuLayout",
              "SpaceToDepthConv2d", "HexagonConvs", "HexagonRequantize", "HexagonMovement", "CpuIntegerConvs", "CpuDense",
              "CpuPointwiseRows", "CpuTileWidth", "CpuRequantizeInt32", "CpuResize", "VectorMath", "NarrowMultipliers",
              "ApplyMetaScheduleDatabase",
              "ScheduleConvs")


class S2DPipeline:
    """The ``"s2d"`` pipeline as objects, stage by stage (``STAGES``).

    ``options`` are ``SpaceToDepthConv2d``'s: ``block``, ``lane_width``, ``move_cost``,
    ``stay_in_domain``. ``tuning_log``: a ``tuning_logs/*.jsonl`` file; each conv with a
    record for the build target gets the block and schedule knobs measured best.
    ``metaschedule``: the work directory of a MetaSchedule JSON database. ``rewrite``: False
    leaves the rewrite out, or a ``SpaceToDepthConv2d`` to use. ``hvx``: False keeps the HVX
    kernels' places but as plain loops (what the emulator's CPU build runs). ``schedules``:
    the schedule stage's passes instead of the default; ``hexagon_knobs``: the HVX conv
    mapping per conv instead of the tuning log's.
    """

    def __init__(self, tuning_log=None, metaschedule=None, rewrite=True, hvx: bool = True, schedules=None,
                 hexagon_knobs=None, **options):
        tuned = TunedLog(tuning_log) if tuning_log is not None else None
        if isinstance(rewrite, bool):
            rewrite = SpaceToDepthConv2d(tuned_blocks=tuned and tuned.block, prepare=False, **options) if rewrite else None
        self.rewrite = rewrite
        self.hexagon_convs = HexagonConvs(knobs=hexagon_knobs or (tuned and tuned.hexagon_knobs), schedule=hvx)
        if schedules is None:
            schedules = [ApplyDatabase(metaschedule)] if metaschedule is not None else []
            schedules.append(ScheduleConvs(knobs=tuned and tuned.knobs))
        self.stages: dict[str, list[tvm.transform.Pass]] = {
            "prepare": prepare_passes(),
            "layout": [HexagonLayout(), CpuLayout()],
            "rewrite": [rewrite] if rewrite is not None else [],
            "hvx": [self.hexagon_convs, HexagonRequantize(hvx=hvx), HexagonMovement(hvx=hvx)],
            "cpu": [CpuIntegerConvs(), CpuDense(), CpuPointwiseRows(), CpuTileWidth(), CpuRequantizeInt32(), CpuResize()],
            "lower": [FoldConstantOps(), transform.LegalizeOps(), transform.AnnotateTIROpPattern(), transform.FoldConstant(),
                      transform.FuseOps(), RecordFusedNames, transform.FuseTIR(), VectorMath(), NarrowMultipliers()],
            "schedule": list(schedules),
            "build": [default_build_pipeline()],
        }
        self.failures: dict[str, Outcome] = {}  # pass name -> why it failed (the guard's record)

    def passes(self, until: str = "schedule", start: str = "prepare") -> list[tvm.transform.Pass]:
        """The passes of the stages from ``start`` to ``until`` (inclusive), each of tvm-s2d's
        under the guard. The default: everything before code generation."""
        first, last = STAGE_NAMES.index(start), STAGE_NAMES.index(until)
        return [_guarded(p, self.failures) for name in STAGE_NAMES[first:last + 1] for p in self.stages[name]]

    def run(self, mod: tvm.IRModule, until: str = "schedule", start: str = "prepare", progress=None) -> tvm.IRModule:
        """``mod`` through the stages from ``start`` to ``until``, one after the other (the same
        passes as ``passes()``), under the current target and pass context; ``progress(text)``
        hears of each stage as it starts."""
        first, last = STAGE_NAMES.index(start), STAGE_NAMES.index(until)
        for stage in STAGES[first:last + 1]:
            if progress is not None:
                progress(f"{stage.name}: {', '.join(p.info.name for p in self.stages[stage.name]) or '(nothing)'}")
            mod = tvm.transform.Sequential(self.passes(until=stage.name, start=stage.name))(mod)
        return mod

    def as_pass(self) -> tvm.transform.Pass:
        return tvm.transform.Sequential(self.passes(until="build"), name="s2d_pipeline")

    def outcomes(self) -> dict[str, list]:
        """Pass name -> its ``passes.outcome.Outcome`` list, for every pass that records them
        (empty where a pass did not run or found nothing); a pass the guard caught has its
        failure as its one outcome."""
        found = {}
        for p in (p for stage in self.stages.values() for p in stage):
            name = p.info.name
            if name in self.failures:
                found[name] = [self.failures[name]]
            elif hasattr(p, "outcomes"):
                found[name] = list(p.outcomes)
        return found


def _guarded(p: tvm.transform.Pass, failures: dict) -> tvm.transform.Pass:
    """``p`` itself, or for a pass of tvm-s2d the same pass under the guard (same name, so
    ``disabled_pass`` and instruments see it as ``p``)."""
    name, inst = p.info.name, getattr(p, "_inst", None)
    if name not in OWN_PASSES or inst is None:
        return p

    @tvm.transform.module_pass(opt_level=p.info.opt_level, name=name)
    def guard(mod: tvm.IRModule, ctx) -> tvm.IRModule:
        failures.pop(name, None)
        before = mod.clone()  # the functions map only: what the pass may have changed in place
        try:
            return inst.transform_module(mod, ctx)
        except Exception as exc:  # noqa: BLE001 - every failure of a pass becomes its outcome
            if strict():
                raise
            failures[name] = Outcome("(module)", False, f"failed: {type(exc).__name__}: {_first_line(exc)}")
            return before

    return guard


def _first_line(exc: Exception) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    # TVM's errors start with a traceback; the message is the last line
    return (lines[-1] if lines and lines[0].startswith("Traceback") else lines[0] if lines else "")[:300]


def s2d_pipeline(tuning_log=None, metaschedule=None, **options) -> tvm.transform.Pass:
    """Every stage, TVM's build included (``S2DPipeline(...).as_pass()``)."""
    return S2DPipeline(tuning_log, metaschedule, **options).as_pass()


def register() -> None:
    """Register ``s2d_pipeline`` as ``"s2d"`` (idempotent)."""
    if PIPELINE_MAP.get(PIPELINE_NAME) is not s2d_pipeline:
        PIPELINE_MAP.pop(PIPELINE_NAME, None)
        register_pipeline(PIPELINE_NAME)(s2d_pipeline)


register()
