"""MetaSchedule tuning of the conv kernels the ``"s2d"`` pipeline builds.

    tune(mod, host_target(), "tuning_logs/demo_llvm_ms", trials=64)

It tunes the kernels the s2d pipeline itself produces (same rewrite, same fusion), so the
JSON database it writes (``database_workload.json``, ``database_tuning_record.json``) matches
them at compile time (``schedules.metaschedule.ApplyDatabase``).
"""

from __future__ import annotations

from pathlib import Path

import tvm
from tvm.s_tir import meta_schedule as ms

from ..pipeline import S2DPipeline
from ..schedules.metaschedule import CONV_TASKS, build_kernel, tuning_target


def kernels(mod: tvm.IRModule, target: tvm.target.Target, **rewrite_options) -> tvm.IRModule:
    """``mod`` through the s2d pipeline up to fusion: the kernels the schedules take.
    ``rewrite_options`` go to ``SpaceToDepthConv2d`` (``block``, ...), ``tuning_log`` as the
    pipeline's; ``rewrite=False`` keeps the original convs."""
    pipeline = S2DPipeline(**rewrite_options)
    with target, tvm.transform.PassContext(opt_level=3):
        return tvm.transform.Sequential(pipeline.passes(until="lower"))(mod)


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
