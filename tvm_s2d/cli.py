"""``tvm-s2d``: demo, report, compile and tune from the command line."""

from __future__ import annotations

import argparse
import json
import sys

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
        from .hexagon.emulator import hexagon_target

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
    sub = parser.add_subparsers(dest="command", metavar="{demo,report,compile,tune}")

    def add_rewrite_options(p):
        p.add_argument("--block", type=parse_block, default=None, metavar="auto|N|HxW",
                       help="force this block on every eligible conv (default: auto, the lane model)")
        p.add_argument("--lane-width", type=int, default=None,
                       help="lane width of the cost model (default: from the target; 32 for hexagon and report, 1 for llvm)")
        p.add_argument("--move-cost", type=float, default=None,
                       help="cost-model MAC-equivalents per byte moved by data-movement ops (default: from the target;"
                            " 1.0, 4.0 for llvm)")
        p.add_argument("--per-conv", action="store_true",
                       help="rewrite each conv on its own instead of staying in the S2D domain across layers")

    demo = sub.add_parser("demo", help="compile the built-in example with and without the rewrite, check, time")
    demo.add_argument("--size", type=int, default=1024, help="input height and width (default 1024)")
    demo.add_argument("--repeat", type=int, default=5, help="timed runs per variant (default 5)")
    demo.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    demo.add_argument("--block", type=parse_block, default=None, metavar="auto|N|HxW")

    report = sub.add_parser("report", help="what the rewrite does to each conv of an ONNX model")
    report.add_argument("model", help="path to an .onnx file")
    report.add_argument("--shape", type=parse_shape, action="append", default=[], metavar="NAME=D,D,...",
                        help="static shape for a dynamic input (repeatable)")
    report.add_argument("--json", action="store_true", help="print JSON instead of a table")
    add_rewrite_options(report)

    comp = sub.add_parser("compile", help="compile an ONNX model with the rewrite to a shared library")
    comp.add_argument("model", help="path to an .onnx file")
    comp.add_argument("--target", type=parse_target, default="llvm",
                      help="llvm (default), hexagon (v66 + HVX, writes the kernels' object file) or a TVM target JSON")
    comp.add_argument("-o", "--output", required=True, help="output library, e.g. model.so (model.o for hexagon)")
    comp.add_argument("--shape", type=parse_shape, action="append", default=[], metavar="NAME=D,D,...")
    comp.add_argument("--no-rewrite", action="store_true", help="compile the same pipeline without the rewrite")
    comp.add_argument("--tuning-log", help="apply the best records of this tuning log (tuning_logs/*.jsonl)")
    comp.add_argument("--metaschedule", metavar="DIR", help="apply this MetaSchedule database (from tune --metaschedule)")
    add_rewrite_options(comp)

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
    tune.add_argument("--shape", type=parse_shape, action="append", default=[], metavar="NAME=D,D,...")
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    from .onnx_import import ModelError

    try:
        return COMMANDS[args.command](args)
    except (ModelError, ValueError, OSError) as exc:
        print(f"tvm-s2d {args.command}: error: {exc}", file=sys.stderr)
        return 2


def cmd_demo(args) -> int:
    from .demo import run_demo

    if args.size < 8 or args.repeat < 1:
        raise ValueError("--size must be at least 8 and --repeat at least 1")
    result = run_demo(size=args.size, block=args.block, repeat=args.repeat)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({**result, "report": json.loads(result["report"].to_json())}, f, indent=2)
    return 0 if result["agree"] else 1


def rewrite_options(args) -> dict:
    return dict(block=args.block, lane_width=args.lane_width, move_cost=args.move_cost, stay_in_domain=not args.per_conv)


def _import(args):
    from .onnx_import import from_onnx

    return from_onnx(args.model, shape_dict=dict(args.shape) or None)


def cmd_report(args) -> int:
    from .report import explain

    report = explain(_import(args), **rewrite_options(args))
    print(report.to_json() if args.json else report)
    return 0


def cmd_compile(args) -> int:
    import tvm

    from .passes import PASS_NAME, HexagonConvs
    from .pipeline import s2d_pipeline
    from .targets import is_hexagon
    from .tuning.apply import tuned_hexagon_knobs
    from .report import explain

    mod = _import(args)
    disabled = [PASS_NAME] if args.no_rewrite else []
    hexagon = HexagonConvs(knobs=tuned_hexagon_knobs(args.tuning_log))
    with tvm.transform.PassContext(opt_level=3, disabled_pass=disabled):
        ex = tvm.compile(mod, target=args.target, relax_pipeline=s2d_pipeline(
            tuning_log=args.tuning_log, metaschedule=args.metaschedule, hexagon=hexagon, **rewrite_options(args)))
    if is_hexagon(args.target):
        ex.mod.imports[0].write_to_file(args.output)  # the kernels; Hexagon has no TVM runtime here to link them with
        print(f"HVX vrmpy kernels: {', '.join(hexagon.replaced) or 'none'}")
        for conv, reason in hexagon.refusals.items():
            print(f"  {conv}: TVM's default lowering ({reason})")
    else:
        ex.export_library(args.output)
    if not args.no_rewrite:
        with args.target:
            print(explain(mod, tuning_log=args.tuning_log, **rewrite_options(args)))
    print(f"wrote {args.output}")
    return 0


def cmd_tune(args) -> int:
    from .targets import is_cpu, is_hexagon
    from .tuning import TuningLog
    from .tuning.measure import HexagonMeasurer, LocalMeasurer, RPCMeasurer
    from .tuning.tuner import table, tune

    if args.trials < 1:
        raise ValueError("--trials must be at least 1")
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
        mod = _import(args)
    if args.metaschedule:
        return _tune_metaschedule(mod, args)
    if hexagon:
        measurer = HexagonMeasurer()
    elif args.rpc_tracker:
        measurer = RPCMeasurer(args.target, args.rpc_tracker, args.rpc_key, parallel=args.parallel)
    else:
        measurer = LocalMeasurer(args.target)
    rows = tune(mod, args.target, measurer, TuningLog(args.log), trials=args.trials)
    print(table(rows))
    print(f"records in {args.log}; apply with: tvm-s2d compile MODEL --tuning-log {args.log}"
          " or relax.get_pipeline('s2d', tuning_log=...)")
    return 0


def _tune_metaschedule(mod, args) -> int:
    from pathlib import Path

    from .schedules import metaschedule

    if args.rpc_tracker:
        raise ValueError("--metaschedule measures on this machine; it does not take --rpc-tracker")
    log = args.log if Path(args.log).is_file() else None
    metaschedule.tune(mod, args.target, args.metaschedule, trials=args.trials, tuning_log=log)
    print(f"MetaSchedule database in {args.metaschedule}; apply with: tvm-s2d compile MODEL"
          f"{f' --tuning-log {log}' if log else ''} --metaschedule {args.metaschedule}")
    return 0


COMMANDS = {"demo": cmd_demo, "report": cmd_report, "compile": cmd_compile, "tune": cmd_tune}


if __name__ == "__main__":
    sys.exit(main())
