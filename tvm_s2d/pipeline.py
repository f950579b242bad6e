"""The Relax pipeline ``"s2d"``, registered when ``tvm_s2d`` is imported.

    with tvm.transform.PassContext(opt_level=3):
        ex = tvm.compile(mod, target, relax_pipeline="s2d")            # lane model per layer
        ex = tvm.compile(mod, target, relax_pipeline=relax.get_pipeline("s2d", block=2))

``metaschedule=`` a MetaSchedule JSON database (``tvm-s2d tune --metaschedule``) gives the
kernels it holds their tuned schedule instead (``schedules/metaschedule.py``).

``PassContext(disabled_pass=["SpaceToDepthConv2d"])`` compiles the same pipeline without the
rewrite, which is the fair baseline: everything else (constant folding, fusion, conv
schedules, the target's default lowering) is identical. ``disabled_pass=["ScheduleConvs"]``
keeps TVM's naive loops; on LLVM CPU targets ``CpuLayout`` puts each conv in the layout whose
vectors it fills (``disabled_pass=["CpuLayout"]``: the model's own). For Hexagon targets
``HexagonConvs`` puts the integer convs of quantized models on HVX ``vrmpy`` kernels and
``HexagonMovement`` the 2x2 S2D/D2S and pads of uint8 tensors on HVX kernels
(``disabled_pass=[...]`` either: TVM's default lowering).
"""

from __future__ import annotations

import tvm
from tvm.relax import transform
from tvm.relax.pipeline import PIPELINE_MAP, default_build_pipeline, register_pipeline

from .passes import (CpuLayout, HexagonConvs, HexagonLayout, HexagonMovement, HexagonRequantize, ScheduleConvs,
                     SpaceToDepthConv2d)
from .passes.prepare import prepare_passes
from .schedules.metaschedule import ApplyDatabase
from .tuning.apply import tuned_blocks, tuned_hexagon_knobs, tuned_knobs

PIPELINE_NAME = "s2d"


def kernel_passes(rewrite: tvm.transform.Pass | None, hexagon: HexagonConvs | None = None,
                  movement: HexagonMovement | None = None, prepare=None, layout: HexagonLayout | None = None,
                  requantize: HexagonRequantize | None = None, cpu_layout: CpuLayout | None = None
                  ) -> list[tvm.transform.Pass]:
    """Prepare, NHWC throughout (Hexagon targets), each conv's layout (CPU targets), rewrite
    (None: no rewrite), integer convs, their requantization and uint8 data movement to HVX
    kernels (Hexagon targets only),
    legalize, fold, fuse: what gives the kernels (PrimFuncs) the schedules then take. Pass
    objects not given are made new."""
    return [
        *(prepare if prepare is not None else prepare_passes()),
        layout if layout is not None else HexagonLayout(),
        cpu_layout if cpu_layout is not None else CpuLayout(),
        *([rewrite] if rewrite is not None else []),
        hexagon if hexagon is not None else HexagonConvs(),
        requantize if requantize is not None else HexagonRequantize(),
        movement if movement is not None else HexagonMovement(),
        transform.LegalizeOps(),
        transform.AnnotateTIROpPattern(),
        transform.FoldConstant(),
        transform.FuseOps(),
        transform.FuseTIR(),
    ]


def s2d_passes(rewrite: tvm.transform.Pass | None, *schedules: tvm.transform.Pass,
               hexagon: HexagonConvs | None = None) -> list[tvm.transform.Pass]:
    """The pipeline's passes around a given rewrite (None: no rewrite) and kernel schedules
    (each leaves functions an earlier one scheduled alone)."""
    return [*kernel_passes(rewrite, hexagon), *schedules, default_build_pipeline()]


class S2DPipeline:
    """The ``"s2d"`` pipeline as objects: its passes keep what they decided, so a compile can
    say what it did (``outcomes``; ``report.Report.from_pipeline``).

    ``options`` are ``SpaceToDepthConv2d``'s: ``block``, ``lane_width``, ``move_cost``,
    ``stay_in_domain``. ``tuning_log``: a ``tuning_logs/*.jsonl`` file; each conv with a
    record for the build target gets the block and schedule knobs measured best.
    ``metaschedule``: the work directory of a MetaSchedule JSON database; kernels found in it
    get its schedule, the others ``ScheduleConvs``'.
    """

    def __init__(self, tuning_log=None, metaschedule=None, **options):
        self.prepare = prepare_passes()
        self.hexagon_layout = HexagonLayout()
        self.cpu_layout = CpuLayout()
        self.rewrite = SpaceToDepthConv2d(tuned_blocks=tuned_blocks(tuning_log), prepare=False, **options)
        self.hexagon_convs = HexagonConvs(knobs=tuned_hexagon_knobs(tuning_log))
        self.hexagon_requantize = HexagonRequantize()
        self.hexagon_movement = HexagonMovement()
        self.schedules = [ApplyDatabase(metaschedule)] if metaschedule is not None else []
        self.schedules.append(ScheduleConvs(knobs=tuned_knobs(tuning_log)))

    def passes(self) -> list[tvm.transform.Pass]:
        """Everything before code generation."""
        return [*kernel_passes(self.rewrite, self.hexagon_convs, self.hexagon_movement, self.prepare, self.hexagon_layout,
                               self.hexagon_requantize, self.cpu_layout), *self.schedules]

    def as_pass(self) -> tvm.transform.Pass:
        return tvm.transform.Sequential([*self.passes(), default_build_pipeline()], name="s2d_pipeline")

    def outcomes(self) -> dict[str, list]:
        """Pass name -> its ``passes.outcome.Outcome`` list, for every pass of this pipeline
        that records them (empty where a pass did not run or found nothing)."""
        found = {}
        for p in [*self.prepare, self.hexagon_layout, self.cpu_layout, self.rewrite, self.hexagon_convs,
                  self.hexagon_requantize, self.hexagon_movement, *self.schedules]:
            if hasattr(p, "outcomes"):
                found[p.info.name] = list(p.outcomes)
        return found


def s2d_pipeline(tuning_log=None, metaschedule=None, **options) -> tvm.transform.Pass:
    """Prepare, rewrite, legalize, fold constants, fuse, schedule the convs (LLVM CPU
    targets), then TVM's default build pipeline (``S2DPipeline(...).as_pass()``)."""
    return S2DPipeline(tuning_log, metaschedule, **options).as_pass()


def register() -> None:
    """Register ``s2d_pipeline`` as ``"s2d"`` (idempotent)."""
    if PIPELINE_MAP.get(PIPELINE_NAME) is not s2d_pipeline:
        PIPELINE_MAP.pop(PIPELINE_NAME, None)
        register_pipeline(PIPELINE_NAME)(s2d_pipeline)


register()
