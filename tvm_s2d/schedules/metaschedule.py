"""MetaSchedule (TVM's auto-scheduler, XGBoost cost model) schedules as the alternative for
any conv kernel, original or rewritten: ``ApplyDatabase`` gives the kernels a JSON database
holds their tuned schedule (``tuner/metaschedule.py`` writes the database), and the helpers
the tuning needs on this platform.

    tvm.compile(mod, target, relax_pipeline=relax.get_pipeline("s2d", metaschedule="tuning_logs/demo_llvm_ms"))

Kernels the database does not hold keep ``ScheduleConvs``' schedule.

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

