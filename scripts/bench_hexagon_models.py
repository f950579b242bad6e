"""Whole quantized models on the Hexagon emulator: packets of every kernel, per form.

Models, built here as float ONNX and quantized with ONNX Runtime's ``quantize_static`` (QDQ,
uint8 activations, per-channel int8 weights, calibrated on random images):

* ``demo``: the built-in example (strided stem, two 8-channel convs with a residual, a
  depthwise conv, a 3-channel tail);
* ``espcn``: ESPCN-like super-resolution (5x5 3->16, 3x3 16->16, 3x3 16->12, DepthToSpace 2);
* ``denoiser``: a residual denoiser, 3 -> 16 -> 16 -> 16 (+skip) -> 3 channels;
* ``seed chain``: three of the seed's 8 -> 8 3x3 convs;
* ``rgb stem``: a strided RGB stem (7x7/2 3->32) and a 3x3 32->32 conv;
* ``unet block``: 3->16 conv, 2x2/2 max pool, two 16->16 convs concatenated, 32->8 conv.

Forms: ``tvm default`` (TVM's own lowering of the imported model), ``float epilogue`` (the
pipeline default without integer requantization and one layout, as it was before them), ``no rewrite`` (the
``"s2d"`` pipeline without the space-to-depth rewrite), ``default`` (the pipeline as it is),
and ``tuned`` with ``--tune N`` (the pipeline with a log from ``tune --target hexagon``, N
trials a layer). Each form runs whole under qemu-hexagon (``tvm_s2d.emulator.model``), its
output bit-exact against the CPU build of the same graph, compared with ONNX Runtime
(optimizations off) in output steps. ``packets`` excludes the float boundary kernels (input
quantize, output dequantize). Prints a table and writes JSON.

    python scripts/bench_hexagon_models.py [--size 48] [--tune 6] [--json results/bench_hexagon_models.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from tvm_s2d.demo import demo_model
from tvm_s2d.emulator.model import KINDS, run_model
from tvm_s2d.quantize import quantize_qdq

FORMS = ("tvm default", "float epilogue", "no rewrite", "default", "tuned")
#: The pipeline as it was before integer requantization and one layout (float epilogues, a
#: transpose around every NCHW conv): what ``compile --target hexagon`` built until then.
BEFORE = ["IntegerRequantize", "IntegerAdd", "HexagonLayout", "HexagonRequantize"]


def _net(name: str, size: int, layers, tail=(), channels_in: int = 3, seed: int = 0) -> onnx.ModelProto:
    """``layers``: (name, cin, cout, kernel, stride, relu, skip_from) convs in a chain; ``tail``:
    extra nodes after the last conv (their output is the model output)."""
    rng = np.random.default_rng(seed)
    nodes, inits, src = [], [], "x"
    for conv, cin, cout, k, stride, relu, skip in layers:
        w = (rng.standard_normal((cout, cin, k, k)) / np.sqrt(cin * k * k)).astype(np.float32)
        inits += [numpy_helper.from_array(w, f"{conv}.w"),
                  numpy_helper.from_array((0.1 * rng.standard_normal(cout)).astype(np.float32), f"{conv}.b")]
        out = f"{conv}_out"
        nodes.append(helper.make_node("Conv", [src, f"{conv}.w", f"{conv}.b"], [out], name=conv, kernel_shape=[k, k],
                                      strides=[stride, stride], pads=[k // 2] * 4))
        if skip:
            nodes.append(helper.make_node("Add", [out, skip], [out + "_add"]))
            out += "_add"
        if relu:
            nodes.append(helper.make_node("Relu", [out], [out + "_relu"]))
            out += "_relu"
        src = out
    for op, attrs in tail:
        nodes.append(helper.make_node(op, [src], [src + "_" + op.lower()], **attrs))
        src = src + "_" + op.lower()
    graph = helper.make_graph(nodes, name, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, channels_in, size, size])],
                              [helper.make_tensor_value_info(src, TensorProto.FLOAT, None)], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    return onnx.shape_inference.infer_shapes(model)


def _unet(size: int, seed: int = 1) -> onnx.ModelProto:
    """A U-Net-like block: conv -> ReLU -> 2x2/2 max pool -> two convs -> channel concat -> conv."""
    rng = np.random.default_rng(seed)
    nodes, inits = [], []

    def conv(name, src, cin, cout):
        w = (rng.standard_normal((cout, cin, 3, 3)) / np.sqrt(cin * 9)).astype(np.float32)
        inits.extend([numpy_helper.from_array(w, f"{name}.w"),
                      numpy_helper.from_array((0.1 * rng.standard_normal(cout)).astype(np.float32), f"{name}.b")])
        nodes.extend([helper.make_node("Conv", [src, f"{name}.w", f"{name}.b"], [name], kernel_shape=[3, 3], pads=[1] * 4),
                      helper.make_node("Relu", [name], [name + "_r"])])

    conv("enc", "x", 3, 16)
    nodes.append(helper.make_node("MaxPool", ["enc_r"], ["pool"], kernel_shape=[2, 2], strides=[2, 2]))
    conv("left", "pool", 16, 16)
    conv("right", "pool", 16, 16)
    nodes.append(helper.make_node("Concat", ["left_r", "right_r"], ["cat"], axis=1))
    conv("dec", "cat", 32, 8)
    graph = helper.make_graph(nodes, "unet", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, size, size])],
                              [helper.make_tensor_value_info("dec_r", TensorProto.FLOAT, None)], initializer=inits)
    return onnx.shape_inference.infer_shapes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))


def models(size: int) -> dict[str, onnx.ModelProto]:
    return {
        "demo": demo_model(size),
        "espcn": _net("espcn", size, [("feat", 3, 16, 5, 1, True, None), ("mid", 16, 16, 3, 1, True, None),
                                      ("up", 16, 12, 3, 1, False, None)], tail=[("DepthToSpace", {"blocksize": 2})]),
        "denoiser": _net("denoiser", size, [("head", 3, 16, 3, 1, True, None), ("body1", 16, 16, 3, 1, True, None),
                                            ("body2", 16, 16, 3, 1, True, "head_out_relu"), ("tail", 16, 3, 3, 1, False, None)]),
        "seed chain": _net("seed", size, [(f"conv{i}", 8, 8, 3, 1, True, None) for i in range(3)], channels_in=8),
        "rgb stem": _net("stem", size, [("stem", 3, 32, 7, 2, True, None), ("next", 32, 32, 3, 1, True, None)]),
        "unet block": _unet(size),
    }


def tune_log(path: Path, trials: int, log: Path) -> None:
    from tvm_s2d.cli import main

    if main(["tune", str(path), "--target", "hexagon", "--trials", str(trials), "--log", str(log)]) != 0:
        raise RuntimeError(f"tuning {path} failed")


def bench(name: str, path: Path, trials: int, work: Path) -> dict:
    runs = {"tvm default": dict(tvm_default=True), "float epilogue": dict(disabled=BEFORE), "no rewrite": dict(rewrite=False),
            "default": {}}
    if trials:
        log = work / f"{path.stem}.jsonl"
        tune_log(path, trials, log)
        runs["tuned"] = dict(tuning_log=str(log))
    row = {"model": name, "forms": {}}
    for form, options in runs.items():
        start = time.perf_counter()
        run = run_model(path, **options)
        kinds = run.by_kind()
        row["forms"][form] = {"packets": run.packets, "by_kind": kinds, "matches_cpu": run.matches_cpu,
                              "onnxruntime": run.onnxruntime, "kernels": [k.__dict__ for k in run.kernels]}
        print(f"  {name}, {form}: {run.packets:,} packets ({time.perf_counter() - start:.0f} s)", file=sys.stderr, flush=True)
    return row


def table(rows) -> str:
    forms = [f for f in FORMS if any(f in r["forms"] for r in rows)]
    lines = [f"{'model':12s} " + " ".join(f"{f:>13s}" for f in forms)
             + f" {'outside conv':>13s} {'vs tvm':>7s} {'vs float':>8s} {'default/no-rw':>13s} {'exact':>6s} {'ORT steps':>9s}"]
    for r in rows:
        f = r["forms"]
        default = f["default"]
        outside = sum(v for k, v in default["by_kind"].items() if k not in ("conv", "boundary")) / max(default["by_kind"]["conv"], 1)
        exact = all(v["matches_cpu"] for v in f.values())
        ort = max(v["onnxruntime"]["max_steps"] for k, v in f.items() if k not in ("tvm default", "float epilogue"))
        lines.append(f"{r['model']:12s} " + " ".join(f"{f[k]['packets']:13,d}" if k in f else f"{'-':>13s}" for k in forms)
                     + f" {100 * outside:12.0f}% {f['tvm default']['packets'] / default['packets']:6.1f}x"
                     + f" {f['float epilogue']['packets'] / default['packets']:7.1f}x"
                     + f" {default['packets'] / f['no rewrite']['packets']:13.2f} {'yes' if exact else 'NO':>6s} {ort:9d}")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=48, help="input height and width (default 48)")
    parser.add_argument("--tune", type=int, default=0, metavar="N", help="also the tuned form, N trials a layer")
    parser.add_argument("--models", nargs="*", help="only these models")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory(prefix="s2d-models-") as tmp:
        for name, model in models(args.size).items():
            if args.models and name not in args.models:
                continue
            path = quantize_qdq(model, Path(tmp) / f"{name.replace(' ', '_')}.onnx")
            rows.append(bench(name, path, args.tune, Path(tmp)))
    print(table(rows))
    print("outside conv: packets of the default form outside its conv kernels (boundary excluded), in % of the conv"
          " kernels'; vs tvm: TVM's default lowering / default; vs float: float epilogue / default;"
          " ORT steps: the largest difference from ONNX Runtime"
          " (optimizations off) over the s2d forms, in output quantization steps")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"size": args.size, "tune_trials": args.tune, "kinds": KINDS, "models": rows},
                                              indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
