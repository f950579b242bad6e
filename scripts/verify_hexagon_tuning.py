"""Does the tuner find each Hexagon benchmark layer's optimum within 16 trials?

1. Exhaustive search: every config of each layer of ``bench_hexagon.LAYERS`` (block or none x
   HVX mapping x knob) measured under qemu-hexagon (executed packets, deterministic), appended
   to ``--exhaustive`` (resumable: configs already there are not measured again).
2. The tuner (``tuner.tuner.tune_layers``: the untuned pipeline's config and the original
   conv's first, then XGBoost-ranked, records of earlier layers warm-starting the model), and
   the search alone (no default configs), run with ``--trials`` per layer against
   ``ReplayMeasurer``, which answers from the exhaustive records. Packet counts are
   deterministic, so replaying is the same as measuring again.

Prints per layer the exhaustive optimum, the tuner's best after the budget, the trial at
which it was reached (and, for scale, the trial at which random search would reach it on
average), and writes JSON.

    python scripts/verify_hexagon_tuning.py [--scale 4] [--trials 16]
        [--exhaustive results/hexagon_exhaustive.jsonl] [--json results/hexagon_tuning.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from bench_hexagon import LAYERS, layer_spec

from tvm_s2d.targets import hexagon_target
from tvm_s2d.tuning import Layer, Record, TuningLog
from tvm_s2d.tuning.log import best_of
from tvm_s2d.tuner.measure import HexagonMeasurer, ReplayMeasurer
from tvm_s2d.tuning.space import Config, search_space
from tvm_s2d.tuner.tuner import tune_layers
from tvm_s2d.tuning.workload import target_key


def benchmark_layers(scale: int) -> list[Layer]:
    return [Layer(name, layer_spec(**d, scale=scale), "NCHW", "uint8") for name, d in LAYERS]


def exhaustive(layers: list[Layer], log: TuningLog, tkey: str) -> None:
    measurer = HexagonMeasurer()
    done = {(r.workload, Config.from_json(r.config).key) for r in log.records() if r.target == tkey}
    for layer in layers:
        todo = [c for c in search_space(layer, cpu=False) if (layer.key, c.key) not in done]
        start = time.perf_counter()
        for config in todo:
            (m,) = measurer.measure(layer, [config])
            log.append(Record(layer.key, tkey, config.to_json(), m.cost, measurer.unit, m.error, extra=m.extra))
        print(f"  {layer.name}: {len(todo)} configs measured in {time.perf_counter() - start:.0f} s", file=sys.stderr)


def replay(layers, records, trials, seed, defaults) -> list[Record]:
    """The records a tuning run makes, answered from the exhaustive records."""
    measurer = ReplayMeasurer([r for r in records if r.ok], "packets")
    with tempfile.TemporaryDirectory() as tmp:
        log = TuningLog(Path(tmp) / "replay.jsonl")
        tune_layers(layers, hexagon_target(), measurer, log, trials=trials, seed=seed, progress=lambda line: None,
                    defaults=defaults)
        return log.records()


def verify(layers: list[Layer], records: list[Record], tkey: str, trials: int, seed: int = 0) -> list[dict]:
    """Replay the tuner on the exhaustive records; one row per layer. Also the search alone
    (no default configs first: random until the cost model has 4 samples, then the model)."""
    tuned = replay(layers, records, trials, seed, defaults=True)
    searched = replay(layers, records, trials, seed, defaults=False)
    rows = []
    for layer in layers:
        everything = [r for r in records if r.workload == layer.key and r.ok]
        optimum = best_of(everything, tkey)[layer.key]
        mine = [r for r in tuned if r.workload == layer.key]
        best = best_of([r for r in mine if r.ok], tkey)[layer.key]
        reached = next(i + 1 for i, r in enumerate(mine) if r.ok and r.cost == best.cost)
        rows.append({
            "layer": layer.name, "space": len(search_space(layer, cpu=False)), "measured": len(everything),
            "optimum": str(Config.from_json(optimum.config)), "optimum_packets": optimum.cost,
            "tuned": str(Config.from_json(best.config)), "tuned_packets": best.cost, "trials": len(mine),
            "reached_at_trial": reached,
            # random search: expected trial of the first optimal config, (n + 1) / (optimal + 1)
            "random_expected_trial": (len(everything) + 1) / (sum(r.cost == optimum.cost for r in everything) + 1),
            "same_block": Config.from_json(best.config).block == Config.from_json(optimum.config).block,
            "found_optimum": best.cost == optimum.cost,
            "search_alone_found_optimum": min(r.cost for r in searched if r.workload == layer.key and r.ok)
            == optimum.cost,
        })
    return rows


def table(rows) -> str:
    lines = [f"{'layer':34s} {'space':>5s}  {'optimum (exhaustive)':24s} {'packets':>11s}  {'tuner, budget':24s}"
             f" {'packets':>11s} {'at trial':>8s} {'random':>6s}  found  search alone"]
    for r in rows:
        lines.append(f"{r['layer']:34s} {r['space']:5d}  {r['optimum']:24s} {r['optimum_packets']:11,.0f}  "
                     f"{r['tuned']:24s} {r['tuned_packets']:11,.0f} {r['reached_at_trial']:8d} {r['random_expected_trial']:6.1f}  "
                     f"{'yes' if r['found_optimum'] else 'same block' if r['same_block'] else 'NO':5s}  "
                     f"{'yes' if r['search_alone_found_optimum'] else 'no'}")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=int, default=4, help="divide spatial sizes by this (default 4)")
    parser.add_argument("--trials", type=int, default=16, help="tuner budget per layer (default 16)")
    parser.add_argument("--exhaustive", default="results/hexagon_exhaustive.jsonl", help="exhaustive records (resumed)")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args(argv)
    layers, tkey = benchmark_layers(args.scale), target_key(hexagon_target())
    log = TuningLog(args.exhaustive)
    exhaustive(layers, log, tkey)
    rows = verify(layers, log.records(), tkey, args.trials)
    print(table(rows))
    found = sum(r["found_optimum"] for r in rows)
    alone = sum(r["search_alone_found_optimum"] for r in rows)
    print(f"optimum found within {args.trials} trials for {found} of {len(rows)} layers"
          f" ({alone} by the search alone, without the default configs first)")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"scale": args.scale, "trials": args.trials, "layers": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
