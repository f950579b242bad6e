"""Run times of conv layers and of the demo model on this CPU (llvm), side by side in one run:

* ONNX Runtime (CPU execution provider, 2 threads);
* TVM's default Relax pipeline;
* tvm-s2d's pipeline without the rewrite (``disabled_pass=["SpaceToDepthConv2d"]``);
* tvm-s2d's pipeline with the rewrite as the 32-lane (HTP) cost model chooses it.

Median of ``--repeat`` runs after a warm-up, on the same inputs; useful GFLOP/s counts the
original conv's multiply-adds. Prints a table and writes JSON.

    python scripts/bench_x86.py [--scale 1] [--repeat 10] [--json results/bench_x86.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("TVM_NUM_THREADS", "2")

import numpy as np  # noqa: E402
import onnx  # noqa: E402
import onnxruntime as ort  # noqa: E402
import tvm  # noqa: E402
from onnx import TensorProto, helper, numpy_helper  # noqa: E402
from tvm import relax  # noqa: E402

import tvm_s2d  # noqa: E402
from tvm_s2d.demo import demo_model  # noqa: E402

LAYERS = [
    ("seed 1024x1024x8 3x3 8->8", dict(cin=8, cout=8, hw=1024, k=3, stride=1)),
    ("ResNet stem 224x224x3 7x7/2 ->64", dict(cin=3, cout=64, hw=224, k=7, stride=2)),
    ("tail 1024x1024 3x3 16->3", dict(cin=16, cout=3, hw=1024, k=3, stride=1)),
    ("256x256x8 3x3 8->8", dict(cin=8, cout=8, hw=256, k=3, stride=1)),
    ("control 128x128x32 3x3 32->32", dict(cin=32, cout=32, hw=128, k=3, stride=1)),
]
LLVM = tvm.target.Target({"kind": "llvm"})


def conv_model(cin, cout, hw, k, stride) -> tuple[onnx.ModelProto, float]:
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array((rng.standard_normal((cout, cin, k, k)) / np.sqrt(cin * k * k)).astype(np.float32), "w")
    node = helper.make_node("Conv", ["x", "w"], ["y"], name="conv", kernel_shape=[k, k], strides=[stride] * 2, pads=[k // 2] * 4)
    out = (hw + 2 * (k // 2) - k) // stride + 1
    graph = helper.make_graph([node], "layer", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, cin, hw, hw])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, cout, out, out])], initializer=[w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    return model, 2.0 * out * out * k * k * cin * cout


def time_ort(model, feeds, repeat) -> tuple[float, np.ndarray]:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    out = session.run(None, feeds)[0]
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        session.run(None, feeds)
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def time_tvm(mod, x, repeat, pipeline, disabled=()) -> tuple[float, np.ndarray]:
    with tvm.transform.PassContext(opt_level=3, disabled_pass=list(disabled)):
        ex = tvm.compile(mod, target=LLVM, relax_pipeline=pipeline)
    vm = relax.VirtualMachine(ex, tvm.cpu())
    data = tvm.runtime.tensor(x)
    out = vm["main"](data).numpy()
    timer = vm.time_evaluator("main", tvm.cpu(), number=1, repeat=repeat)
    return float(np.median(timer(data).results)), out


def bench(name, model, flops, x, repeat) -> dict:
    mod = tvm_s2d.from_onnx(model)
    input_name = model.graph.input[0].name
    row = {"name": name, "flops": flops}
    seconds = {}
    seconds["onnxruntime"], reference = time_ort(model, {input_name: x}, repeat)
    variants = [
        ("tvm default", "default", ()),
        ("tvm-s2d, no rewrite", relax.get_pipeline("s2d", lane_width=32), ("SpaceToDepthConv2d",)),
        ("tvm-s2d, rewrite", relax.get_pipeline("s2d", lane_width=32), ()),
    ]
    for label, pipeline, disabled in variants:
        seconds[label], out = time_tvm(mod, x, repeat, pipeline, disabled)
        scale = float(np.abs(reference).max()) or 1.0
        assert np.allclose(out, reference, rtol=1e-4, atol=1e-5 * scale), f"{name}: {label} disagrees with ONNX Runtime"
    row["ms"] = {k: v * 1e3 for k, v in seconds.items()}
    row["useful_gflops"] = {k: flops / v / 1e9 for k, v in seconds.items()}
    return row


def table(rows) -> str:
    labels = list(rows[0]["ms"])
    head = f"{'layer':34s} " + " ".join(f"{label:>20s}" for label in labels) + "   best tvm-s2d / ORT"
    lines = [head, "(ms, median; useful GFLOP/s in brackets)"]
    for r in rows:
        cells = " ".join(f"{r['ms'][k]:9.2f} ({r['useful_gflops'][k]:6.2f})  " for k in labels)
        best = min(r["ms"]["tvm-s2d, no rewrite"], r["ms"]["tvm-s2d, rewrite"])
        lines.append(f"{r['name']:34s} {cells} {best / r['ms']['onnxruntime']:8.1f}x")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=int, default=1, help="divide spatial sizes by this (default 1)")
    parser.add_argument("--repeat", type=int, default=10, help="timed runs per variant (default 10)")
    parser.add_argument("--layers", type=int, nargs="*", help="indices into the layer list (default all)")
    parser.add_argument("--no-demo", action="store_true", help="skip the end-to-end demo model")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args(argv)
    rng = np.random.default_rng(1)
    rows = []
    for i, (name, layer) in enumerate(LAYERS):
        if args.layers is not None and i not in args.layers:
            continue
        layer = {**layer, "hw": max(16, layer["hw"] // args.scale)}
        model, flops = conv_model(**layer)
        x = rng.standard_normal((1, layer["cin"], layer["hw"], layer["hw"])).astype(np.float32)
        rows.append(bench(f"{name} @{layer['hw']}", model, flops, x, args.repeat))
        print(f"  {name}: done", file=sys.stderr)
    if not args.no_demo:
        size = max(32, 1024 // args.scale)
        report = tvm_s2d.explain(tvm_s2d.from_onnx(demo_model(size)), lane_width=32)
        flops = 2.0 * sum(r["useful_macs"] for r in report.rows)
        x = rng.standard_normal((1, 3, size, size)).astype(np.float32)
        rows.append(bench(f"demo model @{size}", demo_model(size), flops, x, args.repeat))
    print(table(rows))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"threads": 2, "repeat": args.repeat, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
