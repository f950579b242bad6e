"""Whole real CNNs on this CPU: ONNX Runtime and PyTorch vs TVM's default pipeline vs tvm-s2d (and tuned).

Models: by default the project's own (``tvm_s2d.models.zoo``, float32, seeded weights):
ResNet-like, MobileNetV2-like (depthwise convs), ShuffleNet-like (grouped 1x1 convs, channel
shuffle), DenseNet-like (concats), the built-in demo, ESPCN-like super-resolution. With
``--zoo`` the real-model zoo (``tvm_s2d.zoo``: torchvision and the onnx wheel's light models,
random weights) at ``--size``, float, or with ``--int8`` quantized by ONNX Runtime (QDQ), where
the peer is ONNX Runtime's default session with its fused int8 kernels and outputs are
compared in quantization steps against its optimizations-off session (the ONNX semantics).
Forms, same input, float outputs checked against ONNX Runtime (relative to the output's scale):

* ``onnxruntime``: ONNX Runtime's default CPU session (all graph optimizations), 2 threads;
* ``pytorch``: the same graph as eager PyTorch calls (``bench_x86.torch_forward``), 2 threads,
  if ``torch`` is installed (``pip install torch==2.13.0``, the CPU wheel);
* ``tvm default``: ``tvm.compile`` with TVM's default Relax pipeline (2 threads, as every TVM form);
* ``tvm-s2d``: the ``"s2d"`` pipeline (this CPU's cost model, its conv schedules);
* ``tvm-s2d tuned`` with ``--tune N``: the pipeline with a log from ``tvm-s2d tune`` (N trials a conv).

Each form: compile time (for tvm-s2d also the shares its own passes take), then its time:
3 rounds of ``--repeat``/3 runs after a warm-up, the least of the round medians (the TVM forms
and ONNX Runtime take turns, so that a machine whose speed drifts between minutes drifts for
all of them; ONNX Runtime runs in a process of its own, started for each of its rounds, and no
session of it is alive while TVM runs: the two runtimes' idle threads spin, and in one process
each slowed the other up to 2x;
PyTorch, whose OpenMP threads spin too, after the TVM forms; TVM's default pipeline: the
median of at most 3 runs). Prints a table; ``--json`` writes
it, ``--chart`` draws it (matplotlib).

    python scripts/bench_models_x86.py [--size 224] [--repeat 10] [--tune N] [--models resnet demo]
        [--json results/bench_models_x86.json] [--chart results/bench_models_x86.png]
    python scripts/bench_models_x86.py --zoo [--int8] [--no-default] [--models resnet18 googlenet]
        [--json results/bench_zoo_x86.json] [--table results/bench_zoo_x86.md]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TVM_NUM_THREADS", "2")  # TVM's default is half the cores (it assumes hyperthreads)
sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench_x86, also when loaded by the tests

import numpy as np
import onnx  # noqa: E402
import tvm  # noqa: E402
from tvm import relax  # noqa: E402

from bench_x86 import THREADS, _median, torch, torch_forward  # noqa: E402
from tvm_s2d import from_onnx  # noqa: E402
from tvm_s2d.models import zoo  # noqa: E402
from tvm_s2d.pipeline import OWN_PASSES as TVM_S2D_PASSES, STAGES, S2DPipeline  # noqa: E402
from tvm_s2d.targets import host_target  # noqa: E402

FORMS = ("onnxruntime", "pytorch", "tvm default", "tvm-s2d", "tvm-s2d tuned")
PEERS = ("onnxruntime", "pytorch")
# the passes tvm-s2d adds to TVM's: graph rewrites, and the kernel schedules (their shares of the compile time)
_SCHEDULES = set(next(stage.passes for stage in STAGES if stage.name == "schedule"))
OWN_PASSES = {"s2d": {"SpaceToDepthConv2d"}, "other passes": set(TVM_S2D_PASSES) - _SCHEDULES - {"SpaceToDepthConv2d"},
              "schedules": _SCHEDULES}


@tvm.instrument.pass_instrument
class _PassTimes:
    """Seconds spent in each group of ``OWN_PASSES``."""

    def __init__(self):
        self.seconds, self._started = dict.fromkeys(OWN_PASSES, 0.0), []

    def run_before_pass(self, _mod, info):
        self._started.append((info.name, time.perf_counter()))

    def run_after_pass(self, _mod, info):
        name, start = self._started.pop()
        for group, names in OWN_PASSES.items():
            if name in names:
                self.seconds[group] += time.perf_counter() - start


ROUNDS = 3  # the forms take turns this many times (_interleaved)


def _onnxruntime(model: onnx.ModelProto, feeds: dict, optimize: bool = True) -> dict:
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = THREADS
    if not optimize:
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_DISABLE_ALL
    start = time.perf_counter()
    session = onnxruntime.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    compile_s = time.perf_counter() - start
    output = session.run(None, feeds)[0]
    del session  # its idle threads spin: a live session slowed TVM's ResNet-18 int8 0.58 -> 0.98 ms
    return {"ms": float("nan"), "compile_s": compile_s, "output": output}


_TIME_ONNXRUNTIME = """
import pickle, statistics, sys, time
import onnxruntime
model, feeds, threads, runs = pickle.load(open(sys.argv[1], "rb"))
options = onnxruntime.SessionOptions()
options.intra_op_num_threads = threads
session = onnxruntime.InferenceSession(model, options, providers=["CPUExecutionProvider"])
session.run(None, feeds)
times = []
for _ in range(runs):
    start = time.perf_counter()
    session.run(None, feeds)
    times.append(time.perf_counter() - start)
print(statistics.median(times))
"""


def _time_onnxruntime(model: onnx.ModelProto, feeds: dict, repeat: int) -> float:
    """One round of ONNX Runtime's default session timed in a process of its own (its median,
    ms): its threads and TVM's spin while they wait for work, and each slowed the other up to
    2x in one process."""
    import pickle
    import subprocess

    with tempfile.NamedTemporaryFile(suffix=".pkl") as payload:
        pickle.dump((model.SerializeToString(), feeds, THREADS, max(repeat // ROUNDS, 5)), payload)
        payload.flush()
        found = subprocess.run([sys.executable, "-c", _TIME_ONNXRUNTIME, payload.name], check=True,
                               capture_output=True, text=True)
    return float(found.stdout.split()[-1]) * 1e3


def _pytorch(model: onnx.ModelProto, feeds: dict) -> dict:
    torch.set_num_threads(THREADS)
    start = time.perf_counter()
    forward, data = torch_forward(model), torch.from_numpy(next(iter(feeds.values())))
    compile_s = time.perf_counter() - start
    with torch.inference_mode():
        output = forward(data).numpy()

    def call():
        with torch.inference_mode():
            forward(data)

    return {"ms": float("nan"), "compile_s": compile_s, "output": output, "call": call}


def _interleaved(runs: dict, repeat: int, other=None) -> None:
    """Each in-process form's ``ms``: the least, over ``ROUNDS`` rounds, of its median in that
    round, the forms taking turns in each round; ``other()`` (a round of a form timed
    elsewhere) after them in each round."""
    timed = {form: run for form, run in runs.items() if "call" in run}
    per_round = max(repeat // ROUNDS, 5)
    medians = {form: [] for form in timed}
    for _ in range(ROUNDS):
        for form, run in timed.items():
            medians[form].append(_median(run["call"], per_round))
        if other is not None:
            other()
    for form, run in timed.items():
        run["ms"] = min(medians[form]) * 1e3
        del run["call"]


def _tvm(mod: tvm.IRModule, feeds: dict, pipeline=None, repeat: int | None = None) -> dict:
    """Compiled and run once; timed here if ``repeat`` (TVM's slow default), else by
    ``_interleaved`` with the other forms."""
    timing = _PassTimes()
    start = time.perf_counter()
    with tvm.transform.PassContext(opt_level=3, instruments=[timing]):
        ex = tvm.compile(mod, target=host_target(), relax_pipeline=pipeline) if pipeline is not None else \
            tvm.compile(mod, target=host_target())
    compile_s = time.perf_counter() - start
    vm = relax.VirtualMachine(ex, tvm.cpu())
    args = [tvm.runtime.tensor(np.ascontiguousarray(x)) for x in list(feeds.values())[:len(mod["main"].params)]]
    output = vm["main"](*args)
    output = output.numpy() if hasattr(output, "numpy") else output[0].numpy()
    run = {"compile_s": compile_s, "output": output, "passes_s": timing.seconds}
    if repeat:
        run["ms"] = float(np.median(vm.time_evaluator("main", tvm.cpu(), number=1, repeat=repeat)(*args).results) * 1e3)
    else:
        run.update(ms=float("nan"), call=lambda: vm["main"](*args))
    return run


def _tune(path: Path, trials: int, log: Path) -> None:
    from tvm_s2d.cli import main

    if main(["tune", str(path), "--trials", str(trials), "--log", str(log)]) != 0:
        raise RuntimeError(f"tuning {path} failed")


def bench(name: str, model: onnx.ModelProto, size: int, repeat: int, trials: int, work: Path,
          feeds: dict | None = None, quantized: bool = False, default: bool = True, pytorch: bool = True) -> dict:
    """One model in every form. ``feeds``: its inputs (default: one seeded image); ``quantized``:
    outputs compared in quantization steps against ONNX Runtime with optimizations off;
    ``default``: also TVM's default pipeline (slow on real networks: its naive loops);
    ``pytorch``: also the graph as eager PyTorch calls (the own models: the zoo's networks use
    ops its interpreter lacks)."""
    feeds = feeds or {model.graph.input[0].name: np.random.default_rng(0).standard_normal((1, 3, size, size)).astype(np.float32)}
    mod = from_onnx(model)
    runs = {"onnxruntime": _onnxruntime(model, feeds)}
    if torch is not None and pytorch and not quantized:
        try:
            runs["pytorch"] = _pytorch(model, feeds)
        except NotImplementedError as op:  # bench_x86.torch_forward knows the common ops only
            print(f"{name}: no pytorch form (the ONNX-to-torch interpreter has no {op})", flush=True)
    if default:
        runs["tvm default"] = _tvm(mod, feeds, repeat=min(repeat, 3))
    runs["tvm-s2d"] = _tvm(mod, feeds, S2DPipeline().as_pass())
    if trials:
        path = work / f"{name}.onnx"
        onnx.save(model, path)
        log = work / f"{name}.jsonl"
        _tune(path, trials, log)
        runs["tvm-s2d tuned"] = _tvm(mod, feeds, S2DPipeline(tuning_log=str(log)).as_pass())
    onnxruntime_rounds = []
    _interleaved({form: run for form, run in runs.items() if form.startswith("tvm")}, repeat,
                 other=lambda: onnxruntime_rounds.append(_time_onnxruntime(model, feeds, repeat)))
    _interleaved({form: run for form, run in runs.items() if form == "pytorch"}, repeat)  # its threads spin too
    runs["onnxruntime"]["ms"] = min(onnxruntime_rounds)
    row = {"model": name, "forms": {}}
    if quantized:  # the ONNX semantics, in output quantization steps
        from tvm_s2d.checks import MAX_FRACTION, MAX_STEPS, output_steps

        reference = _onnxruntime(model, feeds, optimize=False)["output"]
    else:
        reference = runs["onnxruntime"]["output"]
        scale = float(np.abs(reference).max()) or 1.0
    for form, run in runs.items():
        entry = {"ms": run["ms"], "compile_s": run["compile_s"]}
        if quantized:
            steps, fraction = output_steps(model, run["output"], reference)
            entry.update(steps=steps, fraction_differing=fraction, agrees=steps <= MAX_STEPS and fraction <= MAX_FRACTION)
        else:
            diff = float(np.abs(run["output"] - reference).max()) / scale
            entry.update(max_rel_diff=diff, agrees=diff < 1e-3)
        if "passes_s" in run:
            entry["passes_s"] = run["passes_s"]
        row["forms"][form] = entry
        print(f"  {name}, {form}: {run['ms']:.2f} ms (compile {run['compile_s']:.1f} s)", file=sys.stderr, flush=True)
    return row


def table(rows) -> str:
    forms = [f for f in FORMS if any(f in r["forms"] for r in rows)]
    lines = [f"{'model':14s} " + " ".join(f"{f + ' ms':>17s}" for f in forms)
             + f" {'s2d/peer':>8s} {'default/s2d':>11s} {'s2d compile':>11s} {'s2d pass':>8s} {'others':>6s}"
             + f" {'schedules':>9s} {'agree':>6s}"
             + ("  steps vs ONNX: tvm-s2d | ORT int8" if any("steps" in r["forms"]["tvm-s2d"] for r in rows) else "")]
    for r in rows:
        f = r["forms"]
        ours = f["tvm-s2d"]
        peer = min(f[p]["ms"] for p in PEERS if p in f)
        lines.append(f"{r['model']:14s} " + " ".join(f"{f[k]['ms']:17.2f}" if k in f else f"{'-':>17s}" for k in forms)
                     + f" {ours['ms'] / peer:7.2f}x "
                     + (f"{f['tvm default']['ms'] / ours['ms']:10.1f}x" if "tvm default" in f else f"{'-':>11s}")
                     + f" {ours['compile_s']:10.1f}s" + "".join(
                         f" {100 * ours['passes_s'][g] / ours['compile_s']:{w}.1f}%"
                         for g, w in (("s2d", 7), ("other passes", 5), ("schedules", 8)))
                     + f" {'yes' if all(v['agrees'] for k, v in f.items() if k.startswith('tvm') or 'steps' not in v) else 'NO':>6s}"
                     + (f"  {_steps(ours)} | {_steps(f['onnxruntime'])}" if "steps" in ours and "onnxruntime" in f else ""))
    return "\n".join(lines)


def _steps(entry) -> str:
    return f"{entry['steps']} on {100 * entry['fraction_differing']:.1f}%"


def footnote(int8: bool) -> str:
    agree = ("agree: every TVM form at most 2 quantization steps on at most 1% of outputs from ONNX Runtime with "
             "optimizations off (the ONNX semantics); steps vs ONNX: the largest difference in steps and the share "
             "of outputs differing, for tvm-s2d and for ONNX Runtime's own int8 session (whose fused kernels round "
             "differently: deep random-weight nets grow near-ties into steps on a third of the outputs, as in "
             "results/check_zoo_int8_cpu.md)") if int8 else "agree: every form within 1e-3 of ONNX Runtime's output scale"
    return ("s2d/peer: tvm-s2d's time over the faster of ONNX Runtime and PyTorch (below 1: tvm-s2d faster);"
            " default/s2d: TVM's default pipeline's time over tvm-s2d's; s2d pass, others, schedules: the shares of"
            " tvm-s2d's compile time its space-to-depth rewrite, its other graph passes (layouts, quantized ops) and"
            f" its kernel schedules take; {agree}")


def chart(rows, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    forms = [f for f in FORMS if any(f in r["forms"] for r in rows)]
    fig, ax = plt.subplots(figsize=(10, 4))
    width = 0.8 / len(forms)
    for i, form in enumerate(forms):
        values = [r["forms"].get(form, {}).get("ms", np.nan) for r in rows]
        ax.bar(np.arange(len(rows)) + i * width, values, width, label=form)
    ax.set_xticks(np.arange(len(rows)) + width * (len(forms) - 1) / 2, [r["model"] for r in rows])
    ax.set_yscale("log")
    ax.set_ylabel("ms (median, log scale)")
    ax.set_title("whole models on this CPU (2 threads)")
    ax.legend()
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)


def _models(args):
    """(name, model, feeds or None) of the models ``args`` asks for."""
    if not args.zoo:
        for name, model in zoo(args.size).items():
            if not args.models or name in args.models:
                yield name, model, None
        return
    from tvm_s2d import zoo as real

    names = args.models or [n for n, e in real.ZOO.items() if e.family != "own"]
    for name in names:
        sizes = real.ZOO[name].sizes
        size = args.size if args.size in sizes else max(sizes)
        model = real.quantized_model(name, size) if args.int8 else real.float_model(name, size)
        yield name, model, real.sample_inputs(model)


def _write_json(args, rows) -> None:
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps({"size": args.size, "repeat": args.repeat, "tune_trials": args.tune,
                                           "threads": THREADS, "target": str(host_target()),
                                           "torch": torch.__version__ if torch is not None else None,
                                           "rows": rows}, indent=2))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=224, help="input height and width, a multiple of 16 (default 224)")
    parser.add_argument("--repeat", type=int, default=30, help="timed runs after a warm-up (default 30)")
    parser.add_argument("--tune", type=int, default=0, metavar="N", help="also the tuned form, N trials a conv")
    parser.add_argument("--models", nargs="*", help="only these models")
    parser.add_argument("--zoo", action="store_true", help="the real-model zoo (tvm_s2d.zoo) instead of the own models")
    parser.add_argument("--int8", action="store_true", help="with --zoo: the models quantized by ONNX Runtime (QDQ)")
    parser.add_argument("--no-default", action="store_true", help="skip TVM's default pipeline (slow on real networks)")
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--table", help="write the table here (Markdown)")
    parser.add_argument("--chart", help="draw them here (PNG)")
    args = parser.parse_args(argv)
    if args.size % 16 or args.repeat < 1:
        parser.error("--size must be a multiple of 16 and --repeat at least 1")
    if args.int8 and not args.zoo:
        parser.error("--int8 takes the zoo's quantized models: add --zoo")
    rows = []
    with tempfile.TemporaryDirectory(prefix="s2d-x86-") as tmp:
        for name, model, feeds in _models(args):
            rows.append(bench(name, model, args.size, args.repeat, args.tune, Path(tmp), feeds=feeds,
                              quantized=args.int8, default=not args.no_default, pytorch=not args.zoo))
            if args.json:  # after each model: a long run stopped part way keeps what it measured
                _write_json(args, rows)
    print(table(rows))
    if args.table:
        Path(args.table).parent.mkdir(parents=True, exist_ok=True)
        Path(args.table).write_text(f"{'int8 (QDQ)' if args.int8 else 'float'} models at {args.size}x{args.size}, "
                                    f"{THREADS} threads, the least of {ROUNDS} round medians of "
                                    f"{max(args.repeat // ROUNDS, 5)} runs\n\n```\n{table(rows)}\n```\n\n"
                                    f"{footnote(args.int8)}\n")
    print(footnote(args.int8))
    if torch is None:
        print("(PyTorch not installed: pip install torch==2.13.0 adds its column)")
    if args.chart:
        chart(rows, args.chart)
    return 0


if __name__ == "__main__":
    sys.exit(main())
