"""``tvm-s2d``: demo, report, compile and tune from the command line."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings

def parse_block(text: str):
    """``auto`` -> None, ``2`` -> 2, ``2x1`` -> (2, 1)."""
    if text == "auto":
        return None
    try:
        parts = [int(p) for p in text.lower().split("x")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"block must be 'auto', N or HxW, got {text!r}") from None
    if len(parts) not in (1, 2):
        raise argparse.ArgumentTypeError(f"block must be 'auto', N or HxW, got {text!r}")
    from .geometry import normalize_block

    try:
        return normalize_block(parts[0] if len(parts) == 1 else tuple(parts))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def parse_shape(text: str) -> tuple[str, list[int]]:
    """``image=1,3,224,224`` -> ("image", [1, 3, 224, 224])."""
    name, sep, dims = text.partition("=")
    try:
        shape = [int(d) for d in dims.split(",")]
    except ValueError:
        shape = []
    if not sep or not name or not shape or min(shape) < 1:
        raise argparse.ArgumentTypeError(f"shape must look like name=1,3,224,224, got {text!r}")
    return name, shape


def parse_target(text: str):
    import tvm

    if text == "llvm":
        from .targets import host_target

        return host_target()
    if text == "hexagon":
        from .targets import hexagon_target

        return hexagon_target()
    try:
        return tvm.target.Target(json.loads(text) if text.startswith("{") else text)
    except Exception as exc:
        raise argparse.ArgumentTypeError(f"unknown target {text!r}: {exc}") from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tvm-s2d",
        description="Exact space-to-depth rewriting of low-channel convolutions for Apache TVM.",
    )
    from . import __version__

    parser.add_argument("--version", action="version", version=f"tvm-s2d {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="{demo,quantize,report,compile,run,bench,tune}")
    shape_help = "static shape for a dynamic input, e.g. image=1,3,224,224 (repeatable)"

    def add_rewrite_options(p):
        p.add_argument("--block", type=parse_block, default=None, metavar="auto|N|HxW",
                       help="force this block on every eligible conv (default: auto, the lane model)")
        p.add_argument("--lane-width", type=int, default=None,
                       help="lane width of the cost model (default: the target's: HVX packets for hexagon, 1 for llvm; 32: HTP)")
        p.add_argument("--move-cost", type=float, default=None,
                       help="cost-model MAC-equivalents per byte moved by data-movement ops (default: from the target;"
                            " 1.0, 4.0 for llvm)")
        p.add_argument("--per-conv", action="store_true",
                       help="rewrite each conv on its own instead of staying in the S2D domain across layers")

    demo = sub.add_parser("demo", help="compile the built-in example with and without the rewrite, check, time")
    demo.add_argument("--size", type=int, default=1024, help="input height and width (default 1024)")
    demo.add_argument("--repeat", type=int, default=5, help="timed runs per variant (default 5)")
    demo.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    demo.add_argument("--block", type=parse_block, default=None, metavar="auto|N|HxW",
                      help="force this block on every eligible conv (default: auto, the 32-lane model)")
    demo.add_argument("--hexagon-size", type=int, default=64,
                      help="input size of the quantized demo run whole on the Hexagon emulator (default 64; 0: skip)")

    quant = sub.add_parser("quantize", help="quantize a float ONNX model with ONNX Runtime (QDQ, uint8/int8): what Hexagon needs")
    quant.add_argument("model", help="path to a float .onnx file")
    quant.add_argument("-o", "--output", required=True, help="the quantized model, e.g. model_q.onnx")
    source = quant.add_mutually_exclusive_group()
    source.add_argument("--calibration", metavar="DIR",
                        help="calibrate on the samples in DIR: .npy files (the single input) or .npz (arrays named by input)")
    source.add_argument("--random", type=int, default=None, metavar="N",
                        help="calibrate on N seeded random normal samples (default 8 when no --calibration; checks a"
                             " compiler, not accuracy)")
    quant.add_argument("--per-tensor", action="store_true", help="one weight scale per tensor (default: per output channel)")
    quant.add_argument("--no-preprocess", action="store_true", help="skip ONNX Runtime's quant_pre_process")
    quant.add_argument("--shape", type=parse_shape, action="append", default=[], metavar="NAME=D,D,...", help=shape_help)

    report = sub.add_parser("report", help="what the rewrite does to each conv of an ONNX model")
    report.add_argument("model", help="path to an .onnx file")
    report.add_argument("--shape", type=parse_shape, action="append", default=[], metavar="NAME=D,D,...",
                        help=shape_help)
    report.add_argument("--json", action="store_true", help="print JSON instead of a table")
    report.add_argument("--target", type=parse_target, default=None,
                        help="decide as compile does for this target: llvm (this CPU), hexagon or a TVM target JSON"
                             " (default: none, the HTP/HVX 32-lane model)")
    report.add_argument("--tuning-log", help="decide with the best records of this tuning log (needs --target)")
    add_rewrite_options(report)

    comp = sub.add_parser("compile", help="compile an ONNX model with the rewrite to a shared library")
    comp.add_argument("model", help="path to an .onnx file")
    comp.add_argument("--target", type=parse_target, default="llvm",
                      help="llvm (default), hexagon (v66 + HVX, writes the kernels' object file) or a TVM target JSON")
    comp.add_argument("-o", "--output", required=True, help="output library, e.g. model.so (model.o for hexagon)")
    comp.add_argument("--shape", type=parse_shape, action="append", default=[], metavar="NAME=D,D,...",
                      help=shape_help)
    comp.add_argument("--no-rewrite", action="store_true", help="compile the same pipeline without the rewrite")
    comp.add_argument("--tuning-log", help="apply the best records of this tuning log (tuning_logs/*.jsonl)")
    comp.add_argument("--metaschedule", metavar="DIR", help="apply this MetaSchedule database (from tune --metaschedule)")
    add_rewrite_options(comp)

    run = sub.add_parser("run", help="run the compiled model whole on the Hexagon emulator: packets per kernel, checked")
    run.add_argument("model", help="path to an .onnx file")
    run.add_argument("--target", default="hexagon", choices=["hexagon"], help="hexagon (qemu-hexagon, v66 + HVX)")
    run.add_argument("--input", action="append", default=[], metavar="NAME=FILE.npy",
                     help="an input tensor (repeatable; random inputs where not given)")
    run.add_argument("--shape", type=parse_shape, action="append", default=[], metavar="NAME=D,D,...", help=shape_help)
    run.add_argument("--no-rewrite", action="store_true", help="run the same pipeline without the rewrite")
    run.add_argument("--tuning-log", help="apply the best records of this tuning log")
    run.add_argument("--json", metavar="OUT", help="also write the run as JSON")
    run.add_argument("--check-each", action="store_true",
                     help="compare every kernel with the CPU build's (always done when the output differs): the first that differs")
    add_rewrite_options(run)

    bench = sub.add_parser("bench", help="time (CPU) or count packets (Hexagon) of a model built three ways, checked")
    bench.add_argument("model", help="path to an .onnx file")
    bench.add_argument("--target", default="llvm", choices=["llvm", "hexagon"],
                       help="llvm: this CPU, timed, with ONNX Runtime (default); hexagon: packets on the emulator")
    bench.add_argument("--shape", type=parse_shape, action="append", default=[], metavar="NAME=D,D,...", help=shape_help)
    bench.add_argument("--repeat", type=int, default=10, help="timed runs a form on the CPU (default 10)")
    bench.add_argument("--tuning-log", help="apply the best records of this tuning log")
    bench.add_argument("--json", metavar="OUT", help="also write the results as JSON")
    bench.add_argument("--plot", metavar="PNG", help="also draw them (matplotlib)")

    tune = sub.add_parser("tune", help="measure each conv's block and schedule knobs; append records to a log")
    tune.add_argument("model", help="path to an .onnx file, or 'demo' for the built-in example")
    tune.add_argument("--target", type=parse_target, default="llvm",
                      help="llvm (this CPU, default), hexagon (packets under qemu-hexagon) or a TVM target JSON")
    tune.add_argument("--trials", type=int, default=16, help="measured configs per layer (default 16)")
    tune.add_argument("--log", required=True, help="JSONL log to append to and resume from, e.g. tuning_logs/x.jsonl;"
                      " with --metaschedule, the block records to apply (if the file exists)")
    tune.add_argument("--metaschedule", metavar="DIR",
                      help="instead: tune the conv kernels' schedules with MetaSchedule (--trials per kernel) into a"
                           " JSON database in DIR, e.g. tuning_logs/demo_llvm_ms")
    tune.add_argument("--rpc-tracker", metavar="HOST:PORT", help="measure on devices behind this TVM RPC tracker")
    tune.add_argument("--rpc-key", default="", help="device key on the tracker")
    tune.add_argument("--parallel", type=int, default=2, help="devices used at once with --rpc-tracker (default 2)")
    tune.add_argument("--size", type=int, default=256, help="input size of the demo model (default 256)")
    tune.add_argument("--shape", type=parse_shape, action="append", default=[], metavar="NAME=D,D,...",
                      help=shape_help)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    from .onnx_import import ModelError

    with warnings.catch_warnings():
        warnings.simplefilter("once")  # a warning read twice (e.g. a bad tuning-log line) prints once
        warnings.showwarning = _show_warning
        try:
            return COMMANDS[args.command](args)
        except (ModelError, ValueError, OSError) as exc:
            print(f"tvm-s2d {args.command}: error: {_one_line(exc)}", file=sys.stderr)
            return 2
        except Exception as exc:  # a bug or a TVM failure: one line, the traceback on request
            if os.environ.get("TVM_S2D_DEBUG"):
                raise
            print(f"tvm-s2d {args.command}: error: {type(exc).__name__}: {_one_line(exc)}"
                  " (TVM_S2D_DEBUG=1 shows the traceback)", file=sys.stderr)
            return 2


def _show_warning(message, category, filename, lineno, file=None, line=None):
    print(f"tvm-s2d: warning: {message}", file=sys.stderr)


def _one_line(exc: Exception) -> str:
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    if not lines:
        return type(exc).__name__
    if lines[0].startswith("Traceback"):
        return lines[-1]
    return f"{lines[0]} {lines[1]}" if lines[0].endswith(":") and len(lines) > 1 else lines[0]


def check_output(path: str) -> None:
    """Fail before compiling when ``path`` cannot be written."""
    parent = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise ValueError(f"output {path} is a directory; give a file name, e.g. {os.path.join(path, 'model.so')}")
    if not os.path.isdir(parent):
        raise ValueError(f"output directory {parent} does not exist")
    if not os.access(parent, os.W_OK) or (os.path.exists(path) and not os.access(path, os.W_OK)):
        raise ValueError(f"output {path} is not writable")


def check_tuning_log(path: str | None) -> None:
    if path is None:
        return
    if os.path.isdir(path):
        raise ValueError(f"--tuning-log {path} is a directory; give a .jsonl file (tvm-s2d tune --log ...)")
    if not os.path.isfile(path):
        raise ValueError(f"--tuning-log {path}: no such file (tvm-s2d tune --log {path} writes one)")


def cmd_demo(args) -> int:
    from .demo import htp_report, run_demo, run_hexagon_demo

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
    from .onnx_import import dynamic_inputs, import_model, load_onnx

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
        print(f"note: {what}: convs reading it are not rewritten and keep TVM's default kernels; static shapes"
              f" with e.g. {fix}", file=sys.stderr)
    return import_model(model, shapes or None, args.model)


def cmd_quantize(args) -> int:
    from .onnx_import import load_onnx
    from .quantize import directory_samples, input_specs, is_quantized, quantize_file, random_samples

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
    from .onnx_import import load_onnx
    from .quantize import is_quantized

    if not is_quantized(load_onnx(model_path)):
        print(f"note: {model_path} is a float model: Hexagon's HVX kernels take quantized models, so every op runs as"
              f" scalar float code; quantize it first: tvm-s2d quantize {model_path} -o MODEL_q.onnx", file=sys.stderr)


def cmd_report(args) -> int:
    import contextlib

    from .report import explain

    check_tuning_log(args.tuning_log)
    if args.tuning_log and args.target is None:
        raise ValueError("--tuning-log needs --target: records hold measurements for one target")
    mod = _import(args)
    with args.target if args.target is not None else contextlib.nullcontext():
        report = explain(mod, tuning_log=args.tuning_log, **rewrite_options(args))
    print(report.to_json() if args.json else report)
    return 0


def cmd_compile(args) -> int:
    import tvm

    from .passes import PASS_NAME
    from .passes.outcome import summary
    from .pipeline import S2DPipeline
    from .report import Report
    from .targets import describe, is_hexagon

    check_output(args.output)
    if is_hexagon(args.target) and not args.output.endswith(".o"):
        raise ValueError(f"--target hexagon writes the kernels as an object file: give -o NAME.o, not {args.output}")
    check_tuning_log(args.tuning_log)
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
        progress("build: TVM's code generation")
        ex = tvm.compile(lowered, target=args.target, relax_pipeline=tvm.transform.Sequential(pipeline.stages["build"]))
    progress(f"writing {args.output}" + (" (LLVM's Hexagon code generation)" if is_hexagon(args.target) else ""))
    try:
        if is_hexagon(args.target):
            ex.mod.imports[0].write_to_file(args.output)  # the kernels; Hexagon has no TVM runtime here to link them
        else:
            ex.export_library(args.output)
    except Exception as exc:
        raise OSError(f"cannot write {args.output}: {_one_line(exc)}") from exc
    print(f"compiled in {time.perf_counter() - progress.start:.1f} s", file=sys.stderr)
    if is_hexagon(args.target):  # the ops no HVX kernel takes, one line a kind
        from .report import scalar_report

        print("\n".join(scalar_report(lowered)))
    if args.no_rewrite:  # what the other passes did
        for name, found in pipeline.outcomes().items():
            if name != PASS_NAME:
                print("\n".join(summary(name, found)) or f"{name}: nothing to do")
    else:
        print(Report.from_pipeline(pipeline))
    print(f"wrote {args.output}")
    return 0


def cmd_run(args) -> int:
    import numpy as np

    from .emulator.model import run_model

    check_tuning_log(args.tuning_log)
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
    result = run_model(args.model, inputs, rewrite=not args.no_rewrite, tuning_log=args.tuning_log,
                       shape_dict=dict(args.shape) or None, check_each=args.check_each, progress=Progress(),
                       **rewrite_options(args))
    print(result.table())
    if args.json:
        with open(args.json, "w") as f:
            f.write(result.to_json())
    return 0 if result.matches_cpu else 1


def cmd_bench(args) -> int:
    from .bench import bench_cpu, bench_hexagon, plot

    check_tuning_log(args.tuning_log)
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
    on stderr, each with the time since the first."""

    def __init__(self, every: float = 5.0, file=None):
        self.every, self.file = every, file
        self.start = self.last = time.perf_counter()

    def __call__(self, text: str, done: int | None = None, total: int | None = None) -> None:
        now = time.perf_counter()
        if done is None:
            self.last = now
            print(f"  [{now - self.start:5.0f} s] {text}", file=self.file or sys.stderr, flush=True)
        elif now - self.last >= self.every or done == total:
            self.last = now
            print(f"  [{now - self.start:5.0f} s] kernel {done} of {total}: {text}", file=self.file or sys.stderr,
                  flush=True)


def cmd_tune(args) -> int:
    from .targets import is_cpu, is_hexagon
    from .tuning import TuningLog
    from .tuner.measure import HexagonMeasurer, LocalMeasurer, RPCMeasurer
    from .tuner.tuner import table, tune

    if args.trials < 1:
        raise ValueError("--trials must be at least 1")
    if os.path.isdir(args.log):
        raise ValueError(f"--log {args.log} is a directory; give a .jsonl file")
    hexagon = is_hexagon(args.target)
    if not is_cpu(args.target) and not hexagon:
        raise ValueError(f"tune measures LLVM CPU targets (locally or over RPC) and hexagon, not {args.target.kind.name}")
    if hexagon and (args.rpc_tracker or args.metaschedule):
        raise ValueError("hexagon is measured on the emulator here: no --rpc-tracker or --metaschedule")
    if args.model == "demo":
        from .demo import demo_model
        from .onnx_import import from_onnx

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
    from .passes.outcome import Outcome, summary

    for line in summary("not tuned", [Outcome(name, False, reason) for name, reason in skipped])[1:]:
        print(line.strip())
    print(f"records in {args.log}; apply with: tvm-s2d compile MODEL --tuning-log {args.log}"
          " or relax.get_pipeline('s2d', tuning_log=...)")
    return 0


def _tune_metaschedule(mod, args) -> int:
    from pathlib import Path

    from .tuner import metaschedule

    if args.rpc_tracker:
        raise ValueError("--metaschedule measures on this machine; it does not take --rpc-tracker")
    log = args.log if Path(args.log).is_file() else None
    metaschedule.tune(mod, args.target, args.metaschedule, trials=args.trials, tuning_log=log)
    print(f"MetaSchedule database in {args.metaschedule}; apply with: tvm-s2d compile MODEL"
          f"{f' --tuning-log {log}' if log else ''} --metaschedule {args.metaschedule}")
    return 0


COMMANDS = {"demo": cmd_demo, "quantize": cmd_quantize, "report": cmd_report, "compile": cmd_compile, "run": cmd_run,
            "bench": cmd_bench, "tune": cmd_tune}


if __name__ == "__main__":
    sys.exit(main())
