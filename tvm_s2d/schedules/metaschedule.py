"""MetaSchedule (TVM's auto-scheduler, XGBoost cost model) as the alternative schedule for
any conv kernel, original or rewritten.

    tune(mod, host_target(), "tuning_logs/demo_llvm_ms", trials=64)
    tvm.compile(mod, target, relax_pipeline=relax.get_pipeline("s2d", metaschedule="tuning_logs/demo_llvm_ms"))

It tunes the kernels the s2d pipeline itself produces (same rewrite, same fusion), so the
JSON database it writes (``database_workload.json``, ``database_tuning_record.json``) matches
them at compile time; kernels the database does not hold keep ``ScheduleConvs``' schedule.

Two things measured on TVM 0.27 here: ``LocalBuilder``'s default build function imports all
of ``tvm.s_tir.tensor_intrin`` (~47 s, over its 30 s timeout, so every trial fails), so
``build_kernel`` builds without it; and tuning needs the target's ``num-cores``
(``tuning_target``).
"""

from __future__ import annotations

from pathlib import Path

import tvm
from tvm.relax import transform
from tvm.s_tir import meta_schedule as ms

#: MetaSchedule tunes the tasks whose name holds one of these (the fused conv kernels).
CONV_TASKS = ("conv2d",)
DATABASE_FILES = ("database_workload.json", "database_tuning_record.json")


def tuning_target(target: tvm.target.Target) -> tvm.target.Target:
    """``target`` with ``num-cores`` (physical cores), which MetaSchedule requires."""
    if target.attrs.get("num-cores") is not None:
        return target
    from tvm.s_tir.meta_schedule.utils import cpu_count

    return tvm.target.Target({**target.export(), "num-cores": cpu_count(logical=False)})


def build_kernel(mod: tvm.IRModule, target: tvm.target.Target, _params=None) -> tvm.runtime.Module:
    """MetaSchedule's default build without importing every tensor intrinsic."""
    from tvm.driver import build
    from tvm.s_tir.transform import RemoveWeightLayoutRewriteBlock

    return build(RemoveWeightLayoutRewriteBlock(skip_tensor_rewrite=True)(mod), target=target)


def kernels(mod: tvm.IRModule, target: tvm.target.Target, **rewrite_options) -> tvm.IRModule:
    """``mod`` through the s2d pipeline up to fusion: the kernels the schedules take.
    ``rewrite_options`` go to ``SpaceToDepthConv2d`` (``tuning_log``, ``block``, ...);
    ``rewrite=False`` keeps the original convs."""
    from ..passes import SpaceToDepthConv2d
    from ..pipeline import kernel_passes

    rewrite = SpaceToDepthConv2d(**rewrite_options) if rewrite_options.pop("rewrite", True) else None
    with target, tvm.transform.PassContext(opt_level=3):
        return tvm.transform.Sequential(kernel_passes(rewrite))(mod)


def tune(mod: tvm.IRModule, target: tvm.target.Target, work_dir: str | Path, trials: int = 64, seed: int = 0,
         ops=CONV_TASKS, **rewrite_options) -> ms.Database:
    """Tune the conv kernels of ``mod`` (as the s2d pipeline builds them for ``target``) with
    MetaSchedule, ``trials`` measured schedules per kernel; records go to ``work_dir``."""
    fused = kernels(mod, target, **rewrite_options)
    target = tuning_target(target)
    tasks = [t for t in ms.relax_integration.extract_tasks(fused, target) if any(op in t.task_name for op in ops)]
    if not tasks:
        raise ValueError(f"no kernel named like {', '.join(ops)} to tune")
    Path(work_dir).mkdir(parents=True, exist_ok=True)
    return ms.relax_integration.tune_relax(
        fused, {}, target, work_dir=str(work_dir), max_trials_global=trials * len(tasks), max_trials_per_task=trials,
        op_names=list(ops), num_trials_per_iter=min(trials, 32), seed=seed,
        builder=ms.builder.LocalBuilder(f_build=build_kernel),
    )


def open_database(work_dir: str | Path) -> ms.database.JSONDatabase:
    """The JSON database in ``work_dir``; a clear error when it is missing or unreadable."""
    missing = [name for name in DATABASE_FILES if not (Path(work_dir) / name).is_file()]
    if missing:
        raise ValueError(f"{work_dir}: not a MetaSchedule database (missing {', '.join(missing)});"
                         " write one with `tvm-s2d tune MODEL --metaschedule DIR`")
    try:
        return ms.database.JSONDatabase(work_dir=str(work_dir), allow_missing=False)
    except Exception as exc:  # TVM raises its own error types for malformed JSON
        raise ValueError(f"{work_dir}: unreadable MetaSchedule database: {str(exc).splitlines()[-1]}") from None


@tvm.transform.module_pass(opt_level=0, name="ApplyMetaScheduleDatabase")
class ApplyDatabase:
    """Give each kernel held in the database its tuned schedule (marks it scheduled, so
    ``ScheduleConvs`` leaves it alone); other kernels are unchanged."""

    def __init__(self, work_dir: str | Path):
        self.work_dir = work_dir
        self.database = open_database(work_dir)

    def transform_module(self, mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        with self.database:
            return transform.MetaScheduleApplyDatabase()(mod)

