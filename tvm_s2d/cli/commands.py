"""The commands of ``tvm-s2d`` (``cmd_<name>``, one per subcommand), with what they share:
reading the model, the rewrite options, progress lines."""

from __future__ import annotations

import contextlib
import json
import sys
import threading
import time
import warnings

from . import _one_line, check_log_path, check_output, check_tuning_log, parse_target


def cmd_demo(args) -> int:
    from ..demo import htp_report, run_demo, run_hexagon_demo

    if args.size < 8 or args.repeat < 1:
        raise ValueError("--size must be at least 8 and --repeat at least 1")
    result = run_demo(size=args.size, block=args.block, repeat=args.repeat)
    hexagon = run_hexagon_demo(args.hexagon_size) if args.hexagon_size > 0 else None
    htp_report(result["report"])  # analytic: after what was measured
    if args.json:
        with open(args.json, "w") as f:
            json.dump({**result, "report": json.loads(result["report"].to_json()), "hexagon": hexagon}, f, indent=2)
    exact = hexagon is None or all(row["matches_cpu"] for row in hexagon.values())
    return 0 if result["agree"] and exact else 1


def rewrite_options(args) -> dict:
    return dict(block=args.block, lane_width=args.lane_width, move_cost=args.move_cost, stay_in_domain=not args.per_conv)


def _import(args, on_dynamic: str = "note"):
    """The model as a Relax module. Dynamic inputs not given by ``--shape``: a note
    (``on_dynamic="note"``) or an error (``"error"``), naming ``--shape``."""
    from ..onnx_import import dynamic_inputs, import_model, load_onnx

    shapes = dict(args.shape)
    model = load_onnx(args.model)
    dynamic = dynamic_inputs(model, shapes)
    if dynamic:
        def dims(values, unknown):
            return ",".join(str(d) if isinstance(d, int) and d > 0 else unknown(d) for d in values)

        names = ", ".join(f"{name}={dims(d, lambda v: str(v or '?'))}" for name, d in dynamic.items())
        what = f"input{'s' if len(dynamic) > 1 else ''} {names} {'are' if len(dynamic) > 1 else 'is'} dynamic"
        fix = " ".join(f"--shape {name}={dims(d, lambda v: '1')}" for name, d in dynamic.items())
        if on_dynamic == "error":
            raise ValueError(f"{args.model}: {what}; give static shapes, e.g. {fix}")
        print(f"note: {what}: convs reading it are not rewritten and keep TVM's default kernels, unscheduled, so"
              f" the model runs many times slower than built with a static shape, e.g. {fix}", file=sys.stderr)
    return import_model(model, shapes or None, args.model)


def cmd_quantize(args) -> int:
    from ..onnx_import import load_onnx
    from ..quantize import directory_samples, input_specs, is_quantized, quantize_file, random_samples

    check_output(args.output)
    model = load_onnx(args.model)
    if is_quantized(model):
        raise ValueError(f"{args.model} is already quantized (it has QuantizeLinear/DequantizeLinear or QLinear ops)")
    specs = input_specs(model, dict(args.shape), floats_only=True)
    if args.calibration:
        samples = directory_samples(args.calibration, specs)
        what = f"{len(samples)} samples from {args.calibration}"
    else:
        count = 8 if args.random is None else args.random
        if count < 1:
            raise ValueError("--random must be at least 1")
        samples = list(random_samples(specs, count))
        what = f"{count} random samples (for accuracy, calibrate on real inputs: --calibration DIR)"
    start = time.perf_counter()
    print(f"quantizing {args.model} on {what} ...", file=sys.stderr, flush=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ORT's advice to preprocess, which this command does
        quantize_file(args.model, args.output, samples, per_channel=not args.per_tensor, preprocess=not args.no_preprocess,
                      log=lambda text: print(f"  {text}", file=sys.stderr, flush=True))
    quantized = load_onnx(args.output)
    convs = sum(node.op_type in ("Conv", "Gemm", "MatMul") for node in quantized.graph.node)
    pairs = sum(node.op_type == "QuantizeLinear" for node in quantized.graph.node)
    print(f"wrote {args.output} in {time.perf_counter() - start:.1f} s: {pairs} quantized tensors, {convs} conv/matmul"
          f" layers; next: tvm-s2d run {args.output} --target hexagon")
    return 0


def warn_if_float(model_path: str, shapes=None) -> None:
    """One line when a model going to Hexagon is not quantized: the HVX kernels take
    quantized models; the float ops run as scalar code."""
    from ..onnx_import import load_onnx
    from ..quantize import is_quantized

    if not is_quantized(load_onnx(model_path)):
        print(f"note: {model_path} is a float model: Hexagon's HVX kernels take quantized models, so every op runs as"
              f" scalar float code; quantize it first: tvm-s2d quantize {model_path} -o MODEL_q.onnx", file=sys.stderr)


def cmd_report(args) -> int:
    from ..report import explain

    if args.tuning_log and args.target is None:
        raise ValueError("--tuning-log needs --target: records hold measurements for one target")
    check_tuning_log(args.tuning_log, args.target)
    mod = _import(args)
    with args.target if args.target is not None else contextlib.nullcontext():
        report = explain(mod, tuning_log=args.tuning_log, **rewrite_options(args))
    print(report.to_json() if args.json else report)
    return 0


def cmd_compile(args) -> int:
    import tvm

    from ..passes import PASS_NAME
    from ..passes.outcome import summary
    from ..pipeline import S2DPipeline
    from ..report import Report
    from ..targets import describe, is_hexagon

    check_output(args.output)
    if is_hexagon(args.target) and not args.output.endswith(".o"):
        raise ValueError(f"--target hexagon writes the kernels as an object file: give -o NAME.o, not {args.output}")
    check_tuning_log(args.tuning_log, args.target)
    if (args.check or args.strict) and not is_hexagon(args.target):
        raise ValueError("--check runs the model on the Hexagon emulator: it takes --target hexagon")
    if args.strict and not args.check:
        raise ValueError("--strict is --check's: give --check --strict")
    print(f"importing {args.model} ...", file=sys.stderr, flush=True)
    if is_hexagon(args.target):
        warn_if_float(args.model)
    mod = _import(args)
    disabled = [PASS_NAME] if args.no_rewrite else []
    pipeline = S2DPipeline(tuning_log=args.tuning_log, metaschedule=args.metaschedule, **rewrite_options(args))
    print(f"compiling {args.model} for {describe(args.target)} ...", file=sys.stderr, flush=True)
    progress = Progress()
    with args.target, tvm.transform.PassContext(opt_level=3, disabled_pass=disabled):
        lowered = pipeline.run(mod, progress=progress)
        with progress.waiting("build: TVM's code generation"):
            ex = tvm.compile(lowered, target=args.target,
                             relax_pipeline=tvm.transform.Sequential(pipeline.stages["build"]))
    kernels = sum(1 for _, f in lowered.functions_items() if isinstance(f, tvm.tirx.PrimFunc))
    with progress.waiting(f"writing {args.output}" + (f" (LLVM's Hexagon code generation of {kernels} kernels)"
                                                      if is_hexagon(args.target) else "")):
        try:
            if is_hexagon(args.target):
                ex.mod.imports[0].write_to_file(args.output)  # the kernels; Hexagon has no TVM runtime here to link them
            else:
                ex.export_library(args.output)
        except Exception as exc:
            raise OSError(f"cannot write {args.output}: {_one_line(exc)}") from exc
    progress.close()
    print(f"compiled in {time.perf_counter() - progress.start:.1f} s", file=sys.stderr)
    if is_hexagon(args.target):  # the ops no HVX kernel takes, one line a kind
        from ..report import scalar_report

        print("\n".join(scalar_report(lowered)))
    if args.no_rewrite:  # what the other passes did
        for name, found in pipeline.outcomes().items():
            if name != PASS_NAME:
                print("\n".join(summary(name, found)) or f"{name}: nothing to do")
    else:
        print(Report.from_pipeline(pipeline))
    print(f"wrote {args.output}")
    return _check_on_emulator(args) if args.check else 0


def _check_on_emulator(args) -> int:
    """``compile --check``: the model run whole on the emulator as ``run`` does; a warning (and
    with ``--strict`` exit 1) when the object's kernels do not reproduce the CPU build."""
    from ..emulator.model import run_model

    print(f"checking {args.model} on the Hexagon emulator ...", file=sys.stderr, flush=True)
    progress = Progress()
    result = run_model(args.model, rewrite=not args.no_rewrite, tuning_log=args.tuning_log,
                       shape_dict=dict(args.shape) or None, progress=progress, **rewrite_options(args))
    progress.close()
    print(result.headline())
    if result.matches_cpu:
        print("bit-exact against the CPU build: yes")
        return 0
    where = ""
    if result.first_difference is not None:
        where = f" (first kernel that differs: {result.first_difference['kernel']})"
    print(f"tvm-s2d compile: warning: {args.output} does not compute the model bit-exactly: its run on the emulator"
          f" differs from the CPU build{where}; tvm-s2d run {args.model} --target hexagon --check-each shows where",
          file=sys.stderr)
    return 1 if args.strict else 0


def cmd_run(args) -> int:
    import numpy as np

    from ..emulator.model import run_model

    check_tuning_log(args.tuning_log, parse_target("hexagon"))
    if args.json:
        check_output(args.json)
    inputs = {}
    for item in args.input:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise ValueError(f"--input must look like NAME=FILE.npy, got {item!r}")
        try:
            inputs[name] = np.load(path)
        except (OSError, ValueError) as exc:
            raise ValueError(f"--input {name}: cannot read {path}: {_one_line(exc)}") from None
    warn_if_float(args.model)
    print(f"running {args.model} on the Hexagon emulator ...", file=sys.stderr, flush=True)
    progress = Progress()
    result = run_model(args.model, inputs, rewrite=not args.no_rewrite, tuning_log=args.tuning_log,
                       shape_dict=dict(args.shape) or None, check_each=args.check_each, progress=progress,
                       **rewrite_options(args))
    progress.close()
    print(result.table())
    if args.json:
        with open(args.json, "w") as f:
            f.write(result.to_json())
    return 0 if result.matches_cpu else 1


def cmd_bench(args) -> int:
    from ..bench import bench_cpu, bench_hexagon, plot

    check_tuning_log(args.tuning_log, parse_target(args.target))
    for path in (args.json, args.plot):
        if path:
            check_output(path)
    if args.repeat < 1:
        raise ValueError("--repeat must be at least 1")
    print(f"benchmarking {args.model} on {args.target} ...", file=sys.stderr, flush=True)
    progress = Progress()
    if args.target == "hexagon":
        warn_if_float(args.model)
        result = bench_hexagon(args.model, dict(args.shape), tuning_log=args.tuning_log, progress=progress)
    else:
        result = bench_cpu(args.model, dict(args.shape), repeat=args.repeat, tuning_log=args.tuning_log, progress=progress)
    progress.close()
    print(f"{result.model} on {result.target}:")
    print(result.table())
    if args.json:
        with open(args.json, "w") as f:
            f.write(result.to_json())
    if args.plot:
        plot(result, args.plot)
    return 0 if all(row["ok"] for row in result.rows.values()) else 1


class Progress:
    """Steps as they start, and of a long series (kernels) one line every ``every`` seconds,
    on stderr, each with the time since the first; while a step makes no line for ``beat``
    seconds (LLVM's code generation, a CPU build, a pipeline stage), a line that it still runs,
    so no silence passes ~5 s (a kernel's line comes when it ends, and one kernel under the
    emulator takes up to ~2 s). ``close`` ends the heartbeat (before the results are printed)."""

    def __init__(self, every: float = 3.0, file=None, beat: float = 4.0):
        self.every, self.file, self.beat = every, file, beat
        self.start = self.last = time.perf_counter()
        self.step, self.step_start = None, self.start
        self._lock, self._stop, self._thread = threading.Lock(), threading.Event(), None

    def _print(self, now: float, text: str) -> None:
        print(f"  [{now - self.start:5.0f} s] {text}", file=self.file or sys.stderr, flush=True)

    def __call__(self, text: str, done: int | None = None, total: int | None = None) -> None:
        now = time.perf_counter()
        with self._lock:
            if done is None:
                self.last, self.step, self.step_start = now, text, now
                self._print(now, text)
            elif now - self.last >= self.every or done == total:
                self.last = now
                self._print(now, f"kernel {done} of {total}: {text}")
        if self._thread is None:
            self._thread = threading.Thread(target=self._heartbeat, daemon=True)
            self._thread.start()

    def _heartbeat(self) -> None:
        while not self._stop.wait(min(0.5, self.beat / 4)):
            now = time.perf_counter()
            with self._lock:
                if self.step is not None and now - self.last >= self.beat:
                    self.last = now
                    self._print(now, f"{self.step.split(':')[0]}: still running ({now - self.step_start:.0f} s)")

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    @contextlib.contextmanager
    def waiting(self, text: str, every: float | None = None):
        """``text`` as a step whose end is known: its heartbeat every ``every`` seconds (default
        ``beat``) while the block runs, none after it."""
        beat, self.beat = self.beat, every or self.beat
        self(text)
        try:
            yield
        finally:
            with self._lock:
                self.step, self.beat = None, beat


def cmd_tune(args) -> int:
    from ..targets import is_cpu, is_hexagon
    from ..tuning import TuningLog
    from ..tuner.measure import HexagonMeasurer, LocalMeasurer, RPCMeasurer
    from ..tuner.tuner import table, tune

    if args.trials < 1:
        raise ValueError("--trials must be at least 1")
    check_log_path(args.log)
    hexagon = is_hexagon(args.target)
    if not is_cpu(args.target) and not hexagon:
        raise ValueError(f"tune measures LLVM CPU targets (locally or over RPC) and hexagon, not {args.target.kind.name}")
    if hexagon and (args.rpc_tracker or args.metaschedule):
        raise ValueError("hexagon is measured on the emulator here: no --rpc-tracker or --metaschedule")
    if args.model == "demo":
        from ..demo import demo_model
        from ..onnx_import import from_onnx

        mod = from_onnx(demo_model(args.size))
    else:
        mod = _import(args, on_dynamic="error")
    if args.metaschedule:
        return _tune_metaschedule(mod, args)
    if hexagon:
        measurer = HexagonMeasurer()
    elif args.rpc_tracker:
        measurer = RPCMeasurer(args.target, args.rpc_tracker, args.rpc_key, parallel=args.parallel)
    else:
        measurer = LocalMeasurer(args.target)
    skipped = []
    rows = tune(mod, args.target, measurer, TuningLog(args.log), trials=args.trials, skipped=skipped)
    if not rows:
        raise ValueError(f"{args.model}: no conv that can be tuned"
                         + (f" ({'; '.join(f'{n}: {r}' for n, r in skipped)})" if skipped else ""))
    print(table(rows))
    from ..passes.outcome import Outcome, summary

    for line in summary("not tuned", [Outcome(name, False, reason) for name, reason in skipped])[1:]:
        print(line.strip())
    target = " --target hexagon" if hexagon else ""
    print(f"records in {args.log}; apply with: tvm-s2d compile MODEL{target} --tuning-log {args.log}"
          f"{' -o MODEL.o' if hexagon else ''} or relax.get_pipeline('s2d', tuning_log=...)")
    return 0


def _tune_metaschedule(mod, args) -> int:
    from pathlib import Path

    from ..tuner import metaschedule

    if args.rpc_tracker:
        raise ValueError("--metaschedule measures on this machine; it does not take --rpc-tracker")
    log = args.log if Path(args.log).is_file() else None
    metaschedule.tune(mod, args.target, args.metaschedule, trials=args.trials, tuning_log=log)
    print(f"MetaSchedule database in {args.metaschedule}; apply with: tvm-s2d compile MODEL"
          f"{f' --tuning-log {log}' if log else ''} --metaschedule {args.metaschedule}")
    return 0


COMMANDS = {"demo": cmd_demo, "quantize": cmd_quantize, "report": cmd_report, "compile": cmd_compile, "run": cmd_run,
            "bench": cmd_bench, "tune": cmd_tune}
