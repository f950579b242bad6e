"""Where a model's time goes on this CPU: every kernel of its ``"s2d"`` build timed alone.

The model (an ONNX file or a zoo name, ``tvm_s2d.zoo``) goes through the pipeline up to its
schedules (``S2DPipeline.run``); each PrimFunc is then built alone for this CPU and timed on
random inputs of its buffers' shapes (median of ``--repeat`` runs). The table lists kernels by
time with their share of the sum, what ``ScheduleConvs`` did to each (its outcome) and the
Relax ops fused into it (``RecordFusedNames``): the kernels to work on first. A kernel the
model calls several times (the repeated blocks of a stage) counts that many times.

Each kernel is also timed inside the model (the model built whole and run ``--repeat`` times,
each call timed by the VM's instrument: the "in model" column, per run). The two differ where
memory does: alone, a kernel's weights stay in the cache from one run to the next; in the
model they come from memory (ResNet-18's 7x7x512 convs ran 2.7 ms in the model against 1.3 ms
alone until their weights were packed, ``x86.pack_weights``).

    python scripts/profile_cpu.py resnet18 [--size 224] [--int8] [--top 25] [--json out.json]
    python scripts/profile_cpu.py model.onnx
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TVM_NUM_THREADS", "2")

import numpy as np  # noqa: E402
import onnx  # noqa: E402
import tvm  # noqa: E402

from tvm_s2d import from_onnx  # noqa: E402
from tvm_s2d.pipeline import S2DPipeline  # noqa: E402
from tvm_s2d.targets import host_target  # noqa: E402


def _model(spec: str, size: int | None, int8: bool):
    import onnx

    if Path(spec).exists():
        return onnx.load(spec)
    from tvm_s2d import zoo

    if spec not in zoo.ZOO:
        raise SystemExit(f"{spec}: neither an ONNX file nor a zoo model ({', '.join(zoo.ZOO)})")
    return zoo.quantized_model(spec, size) if int8 else zoo.float_model(spec, size)


def _random(buffer, rng) -> np.ndarray:
    shape, dtype = [int(d) for d in buffer.shape], str(buffer.dtype)
    if dtype.startswith(("int", "uint")):
        info = np.iinfo(dtype)
        return rng.integers(max(info.min, -100), min(info.max, 100) + 1, shape).astype(dtype)
    return rng.standard_normal(shape).astype(dtype)


def kernel_times(mod: tvm.IRModule, target, repeat: int) -> list[dict]:
    """Each PrimFunc of ``mod`` (scheduled) built alone and timed: name, ms, its ops."""
    rng, rows = np.random.default_rng(0), []
    dev = tvm.cpu()
    for gv, func in mod.functions.items():
        if not isinstance(func, tvm.tirx.PrimFunc):
            continue
        buffers = [p.ty for p in func.params if hasattr(p.ty, "shape")]
        try:
            lib = tvm.compile(tvm.IRModule({"main": func.with_attr("global_symbol", "main")}), target=target)
            args = [tvm.runtime.tensor(_random(b, rng), dev) for b in buffers]
            timer = lib.jit().time_evaluator("main", dev, number=1, repeat=repeat, min_repeat_ms=5)
            ms = float(np.median(timer(*args).results) * 1e3)
        except Exception as exc:  # noqa: BLE001 - a kernel that cannot run alone is shown as such
            rows.append({"kernel": gv.name_hint, "ms": float("nan"), "error": str(exc).splitlines()[-1][:100]})
            continue
        rows.append({"kernel": gv.name_hint, "ms": ms,
                     "shapes": [f"{'x'.join(str(int(d)) for d in b.shape)} {b.dtype}" for b in buffers]})
    return rows


def in_model_times(model, target, repeat: int) -> tuple[dict[str, float], float]:
    """Each kernel's time inside the model (ms a run, its calls summed), timed by the VM's
    instrument over ``repeat`` runs after a warm-up, and the model's median time uninstrumented."""
    ex = tvm.compile(from_onnx(model), target=target, relax_pipeline=S2DPipeline().as_pass())
    vm = tvm.relax.VirtualMachine(ex, tvm.cpu())
    rng, weights = np.random.default_rng(0), {init.name for init in model.graph.initializer}
    inputs = []
    for value in model.graph.input:
        if value.name not in weights:
            tensor = value.type.tensor_type
            shape = [d.dim_value for d in tensor.shape.dim]
            dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type))
            data = rng.standard_normal(shape) if dtype.kind == "f" else rng.integers(0, 100, shape)
            inputs.append(tvm.runtime.tensor(data.astype(dtype)))
    runs = []
    for _ in range(repeat + 1):
        start = time.perf_counter()
        vm["main"](*inputs)
        runs.append(time.perf_counter() - start)
    spent, started = {}, {}

    def instrument(_func, symbol, before, _ret, *_args):
        if before:
            started[symbol] = time.perf_counter()
        else:
            spent[symbol] = spent.get(symbol, 0.0) + time.perf_counter() - started[symbol]
        return 0

    vm.set_instrument(instrument)
    for _ in range(repeat):
        vm["main"](*inputs)
    return {k: v * 1e3 / repeat for k, v in spent.items()}, float(np.median(runs[1:]) * 1e3)


def call_counts(mod: tvm.IRModule) -> dict[str, int]:
    """How many times the Relax functions of ``mod`` call each kernel (by name)."""
    counts: dict[str, int] = {}

    def visit(expr):
        if isinstance(expr, tvm.ir.GlobalVar) and isinstance(mod[expr], tvm.tirx.PrimFunc):
            counts[expr.name_hint] = counts.get(expr.name_hint, 0) + 1

    for func in mod.functions.values():
        if isinstance(func, tvm.relax.Function):
            tvm.relax.analysis.post_order_visit(func, visit)
    return counts


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="an ONNX file or a zoo name")
    parser.add_argument("--size", type=int, help="zoo models: the input size (default: the largest)")
    parser.add_argument("--int8", action="store_true", help="zoo models: the quantized (QDQ) model")
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--top", type=int, default=25, help="kernels shown (default 25)")
    parser.add_argument("--json", help="write every kernel's row here")
    args = parser.parse_args(argv)
    target = host_target()
    pipeline = S2DPipeline()
    model = _model(args.model, args.size, args.int8)
    with target, tvm.transform.PassContext(opt_level=3):
        mod = pipeline.run(from_onnx(model))
        in_model, model_ms = in_model_times(model, target, args.repeat)
    outcomes = {o.name: o.reason for o in pipeline.outcomes().get("ScheduleConvs", [])}
    rows = kernel_times(mod, target, args.repeat)
    calls = call_counts(mod)
    for row in rows:
        row["schedule"] = outcomes.get(row["kernel"], "")
        row["calls"] = calls.get(row["kernel"], 1)
        row["total_ms"] = row["ms"] * row["calls"]
        row["in_model_ms"] = in_model.get(row["kernel"], float("nan"))
    rows.sort(key=lambda r: -(r["total_ms"] if r["total_ms"] == r["total_ms"] else 0))
    total = sum(r["total_ms"] for r in rows if r["total_ms"] == r["total_ms"])
    inside = sum(in_model.values())
    print(f"{len(rows)} kernels, {sum(calls.values())} calls, {total:.2f} ms in all alone, {inside:.2f} ms in the model "
          f"(the model: {model_ms:.2f} ms; {os.environ['TVM_NUM_THREADS']} threads)")
    print(f"{'alone':>11s} {'share':>6s} {'in model':>11s} calls")
    for r in rows[:args.top]:
        what = r.get("error") or f"{'; '.join(r['shapes'])}  [{r['schedule']}]"
        print(f"{r['total_ms']:8.3f} ms {100 * r['total_ms'] / max(total, 1e-9):5.1f}% {r['in_model_ms']:8.3f} ms {r['calls']:3d}x "
              f"{r['kernel'][:48]:48s} {what}")
    for r in rows:
        if r.get("error"):
            print(f"could not time {r['kernel']}: {r['error']}")
    if args.json:
        Path(args.json).write_text(json.dumps({"model": args.model, "total_ms": total, "in_model_ms": inside,
                                               "model_ms": model_ms, "kernels": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
