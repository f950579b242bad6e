"""The tuning loop: per layer, measure the untuned pipeline's config and the original conv's
first, then the configs the XGBoost cost model ranks best (retrained after every batch on all
records of the target), until the trial budget is spent. Every measurement is appended to the
log at once, so an interrupted run resumes where it stopped (the log is read once, at the
start)."""

from __future__ import annotations

import random
import sys

import tvm

from ..pipeline import S2DPipeline
from ..targets import is_cpu
from .xgb_model import XGBCostModel, default_configs, samples_from
from ..tuning.log import Record, TuningLog, best_of
from ..tuning.space import Config, search_space
from ..tuning.workload import Layer, layers, target_key


def _fmt(cost: float | None, unit: str) -> str:
    if cost is None:
        return "-"
    return f"{cost * 1e3:.3f} ms" if unit == "s" else f"{cost:,.0f} {unit}"


def tune(mod: tvm.IRModule, target: tvm.target.Target, measurer, log: TuningLog, trials: int = 16,
         seed: int = 0, progress=None, skipped: list | None = None) -> list[dict]:
    """Tune every distinct conv workload of ``mod`` for ``target``; returns one row per layer.
    ``skipped`` (a list) gets ``(conv, reason)`` for each conv that cannot be tuned."""
    return tune_layers(model_layers(mod, target, skipped), target, measurer, log, trials, seed, progress)


def model_layers(mod: tvm.IRModule, target: tvm.target.Target, skipped: list | None = None) -> list[Layer]:
    """The convs of ``mod`` as the pipeline builds them for ``target`` (prepared; NHWC on
    Hexagon; each conv in its layout on CPUs), one per workload: the keys a compile for
    ``target`` looks up."""
    with target, tvm.transform.PassContext(opt_level=3):
        found = layers(tvm.transform.Sequential(S2DPipeline(rewrite=False).passes(until="layout"))(mod), skipped)
    if is_cpu(target):
        return found
    for layer in [f for f in found if f.spec.groups != 1]:  # HVX: one kernel a grouped conv, no knobs
        if skipped is not None:
            skipped.append((layer.name, f"grouped conv (groups={layer.spec.groups}): its only form is the conv as it is"))
    return [f for f in found if f.spec.groups == 1]


def tune_layers(found: list[Layer], target: tvm.target.Target, measurer, log: TuningLog, trials: int = 16,
                seed: int = 0, progress=None, defaults: bool = True) -> list[dict]:
    """Tune each layer in turn (records of earlier layers warm-start the cost model).
    ``defaults=False``: no default configs first, the search alone (to judge it)."""
    progress = progress or (lambda line: print(line, file=sys.stderr))
    tkey, cpu, unit = target_key(target), is_cpu(target), measurer.unit
    model = XGBCostModel(seed)
    batch = max(1, getattr(measurer, "parallel", 1))
    records = log.records()
    rows = []
    for index, layer in enumerate(found):
        space = search_space(layer, cpu)
        # configs already measured (successfully or not): a resumed run skips them
        done = {Config.from_json(r.config).key for r in records if r.workload == layer.key and r.target == tkey}
        budget = min(trials, len(space))
        untuned = default_configs(layer, target, space)
        first, firsts = untuned[0], (untuned if defaults else [])
        rng = random.Random(seed + index)
        while True:
            tried = sum(c.key in done for c in space)
            untried = [c for c in space if c.key not in done]
            if tried >= budget or not untried:
                break
            pending = [c for c in firsts if c.key not in done]
            if pending:
                ranked = pending + [c for c in untried if c not in pending]
            elif model.fit(samples_from(records, tkey)):
                ranked = model.rank(layer, untried)
            else:
                ranked = rng.sample(untried, len(untried))
            pick = ranked[: min(batch, budget - tried)]
            for config, m in zip(pick, measurer.measure(layer, pick)):
                record = Record(layer.key, tkey, config.to_json(), m.cost, unit, m.error, extra=m.extra)
                log.append(record)
                records.append(record)
                done.add(config.key)
            best = best_of(records, tkey).get(layer.key)
            progress(f"[{index + 1}/{len(found)}] {layer.name}: {tried + len(pick)}/{budget} trials,"
                     f" best {_fmt(best.cost if best else None, unit)} ({Config.from_json(best.config) if best else '-'})")
        measured = [r for r in records if r.workload == layer.key and r.target == tkey and r.ok]
        best = best_of(measured, tkey).get(layer.key)
        heuristic = next((r for r in measured if Config.from_json(r.config) == first), None)
        rows.append({
            "layer": layer.name, "workload": layer.key, "space": len(space), "measured": len(measured),
            "best": str(Config.from_json(best.config)) if best else None, "best_cost": best.cost if best else None,
            "heuristic": str(first), "heuristic_cost": heuristic.cost if heuristic else None, "unit": unit,
        })
    return rows


def table(rows: list[dict]) -> str:
    lines = [f"{'layer':12s} {'space':>5s} {'measured':>8s}  {'heuristic':28s} {'cost':>12s}  {'best':28s} {'cost':>12s}"]
    for r in rows:
        lines.append(f"{r['layer']:12s} {r['space']:5d} {r['measured']:8d}  {r['heuristic']:28s}"
                     f" {_fmt(r['heuristic_cost'], r['unit']):>12s}  {r['best'] or '-':28s} {_fmt(r['best_cost'], r['unit']):>12s}")
    return "\n".join(lines)
