"""The demo model compiled with a tuning log, side by side with its untuned forms, on this CPU.

Forms, each compiled once with the s2d pipeline for this CPU (``targets.host_target()``):

* unrewritten: ``disabled_pass=["SpaceToDepthConv2d"]`` (conv schedules only);
* default: the heuristic cost model's choice per layer;
* rewrite everywhere: the 32-lane (HTP) cost model's choice;
* S2D 2x2 everywhere: ``block=2``;
* tuned: the log's best record per layer (``tvm-s2d tune``), heuristic for layers without one;
* with ``--metaschedule DIR``: tuned, and the conv kernels from that MetaSchedule database
  (``tvm-s2d tune --metaschedule``).

Timing: ``--rounds`` interleaved rounds, each timing every form (median of ``--repeat`` runs);
the result is the median over rounds, so drift on a noisy machine hits all forms alike. Every
form's output is checked against the unrewritten one. Prints the per-layer choice of the
tuned form (the report's "source" column), a table and the ratios tuned / best untuned and
tuned / unrewritten, and writes JSON.

    python scripts/bench_tuned.py [--log tuning_logs/demo_llvm.jsonl] [--size 256] [--json results/bench_tuned.json]
        [--metaschedule tuning_logs/demo_llvm_ms]

The log's records apply to the sizes they were tuned at (the workload key holds the shapes):
``tuning_logs/demo_llvm.jsonl`` holds the demo at 256.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path

os.environ.setdefault("TVM_NUM_THREADS", "2")

import numpy as np  # noqa: E402
import tvm  # noqa: E402
from tvm import relax  # noqa: E402

import tvm_s2d  # noqa: E402
from tvm_s2d.demo import demo_model  # noqa: E402
from tvm_s2d.targets import host_target  # noqa: E402

UNTUNED = {
    "unrewritten": ({}, ("SpaceToDepthConv2d",)),
    "default": ({}, ()),
    "rewrite everywhere": ({"lane_width": 32}, ()),
    "S2D 2x2 everywhere": ({"block": 2}, ()),
}


def compile_form(mod, target, options, disabled=()):
    with tvm.transform.PassContext(opt_level=3, disabled_pass=list(disabled)):
        ex = tvm.compile(mod, target=target, relax_pipeline=relax.get_pipeline("s2d", **options))
    return relax.VirtualMachine(ex, tvm.cpu())


def side_by_side(mod, x, log, rounds, repeat, metaschedule=None) -> dict:
    target = host_target()
    forms = {**UNTUNED, "tuned": ({"tuning_log": log}, ())}
    if metaschedule:
        forms["tuned + MetaSchedule"] = ({"tuning_log": log, "metaschedule": metaschedule}, ())
    vms = {name: compile_form(mod, target, options, disabled) for name, (options, disabled) in forms.items()}
    data = tvm.runtime.tensor(x)
    reference = vms["unrewritten"]["main"](data).numpy()
    for name, vm in vms.items():
        np.testing.assert_allclose(vm["main"](data).numpy(), reference, rtol=1e-4, atol=1e-5, err_msg=name)
    per_round = {name: [] for name in vms}
    for _ in range(rounds):
        for name, vm in vms.items():
            timer = vm.time_evaluator("main", tvm.cpu(), number=1, repeat=repeat)
            per_round[name].append(float(np.median(timer(data).results)))
    seconds = {name: statistics.median(times) for name, times in per_round.items()}
    best_untuned = min(UNTUNED, key=seconds.get)
    with target:
        report = tvm_s2d.explain(mod, tuning_log=log)
    return {
        "ms": {name: s * 1e3 for name, s in seconds.items()},
        "rounds_ms": {name: [t * 1e3 for t in times] for name, times in per_round.items()},
        "best_untuned": best_untuned,
        "tuned_over_best_untuned": seconds["tuned"] / seconds[best_untuned],
        "tuned_over_unrewritten": seconds["tuned"] / seconds["unrewritten"],
        "choices": [{"conv": r["name"], "block": r["block"], "decided_by": r["decided_by"], "reason": r["reason"]}
                    for r in report.rows],
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--log", default="tuning_logs/demo_llvm.jsonl", help="tuning log (default: the shipped demo log)")
    parser.add_argument("--size", type=int, default=256, help="demo input size (default 256, the log's)")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds (default 5)")
    parser.add_argument("--repeat", type=int, default=20, help="runs per form per round (default 20)")
    parser.add_argument("--metaschedule", metavar="DIR", help="also: tuned with this MetaSchedule database")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args(argv)
    if not Path(args.log).is_file():
        parser.error(f"no tuning log at {args.log}")
    mod = tvm_s2d.from_onnx(demo_model(args.size))
    x = np.random.default_rng(0).standard_normal((1, 3, args.size, args.size)).astype(np.float32)
    result = side_by_side(mod, x, args.log, args.rounds, args.repeat, args.metaschedule)
    for choice in result["choices"]:
        print(f"  {choice['conv']:8s} block {str(choice['block']):8s} decided by: {choice['decided_by'] or '-'}"
              f"{'  (' + choice['reason'] + ')' if choice['reason'] else ''}")
    print(f"{'form':22s} {'ms (median of rounds)':>22s}")
    for name, ms in result["ms"].items():
        print(f"{name:22s} {ms:22.3f}")
    print(f"tuned / best untuned ({result['best_untuned']}): {result['tuned_over_best_untuned']:.3f}; "
          f"tuned / unrewritten: {result['tuned_over_unrewritten']:.3f}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"size": args.size, "log": args.log, "target": str(host_target()),
                                               "rounds": args.rounds, "repeat": args.repeat, **result}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
