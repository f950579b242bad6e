"""``tvm-s2d``: the command line. The parser and the error handling are here; the commands
(``cmd_<name>``) in ``commands.py``."""

from __future__ import annotations

import argparse
import json
import os
import sys
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
    from ..geometry import normalize_block

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
        from ..targets import host_target

        return host_target()
    if text == "hexagon":
        from ..targets import hexagon_target

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
    from .. import __version__

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
    comp.add_argument("--check", action="store_true",
                      help="hexagon: then run the model whole on the emulator (as tvm-s2d run) and warn when it is not"
                           " bit-exact against the CPU build")
    comp.add_argument("--strict", action="store_true", help="with --check: exit 1 when it is not bit-exact")
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
    from ..onnx_import import ModelError

    with warnings.catch_warnings():
        warnings.simplefilter("once")  # a warning read twice (e.g. a bad tuning-log line) prints once
        warnings.showwarning = _show_warning
        try:
            from .commands import COMMANDS

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


def check_tuning_log(path: str | None, target=None) -> None:
    """Fail when ``path`` is no file; with ``target``, one warning when it holds records, none
    of them for ``target`` (a Hexagon log given to a CPU compile, or the other way round)."""
    if path is None:
        return
    if os.path.isdir(path):
        raise ValueError(f"--tuning-log {path} is a directory; give a .jsonl file (tvm-s2d tune --log ...)")
    if not os.path.isfile(path):
        raise ValueError(f"--tuning-log {path}: no such file (tvm-s2d tune --log {path} writes one)")
    if target is None:
        return
    from ..targets import is_hexagon
    from ..tuning.log import TuningLog
    from ..tuning.workload import target_key

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # unreadable lines: said when the log is applied
        keys = {r.target for r in TuningLog(path).records() if r.ok}
    key = target_key(target)
    if keys and key not in keys:
        flag = " --target hexagon" if is_hexagon(target) else ""
        warnings.warn(f"--tuning-log {path} has no records for {key} (only for {', '.join(sorted(keys))}): nothing of"
                      f" it applies here; tune for this target with tvm-s2d tune MODEL{flag} --log FILE", stacklevel=2)


def check_log_path(path: str) -> None:
    """Fail before tuning, in one line, when the log ``path`` cannot be written: tried by opening
    it to append (its directory made, as the first record would; a file made here is removed)."""
    if os.path.isdir(path):
        raise ValueError(f"--log {path} is a directory; give a .jsonl file")
    existed = os.path.exists(path)
    ancestor = os.path.dirname(os.path.abspath(path))
    while not os.path.exists(ancestor):
        ancestor = os.path.dirname(ancestor)
    if not os.path.isdir(ancestor):
        raise ValueError(f"--log {path} cannot be written: {ancestor} is a file, not a directory")
    try:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(path, "ab"):
            pass
    except OSError as exc:
        raise ValueError(f"--log {path} cannot be {'written' if existed else 'created'} ({exc.strerror or _one_line(exc)});"
                         " give a path in a writable directory") from None
    if not existed:
        os.remove(path)
