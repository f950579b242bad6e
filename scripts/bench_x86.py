"""Run times of conv layers and of the demo model on this CPU, side by side in one run:

* ONNX Runtime (CPU execution provider) and PyTorch (``torch==2.13.0`` CPU wheel, if
  installed: ``pip install torch==2.13.0``), the peers;
* TVM's default Relax pipeline, for this CPU (``targets.host_target()``);
* tvm-s2d without the rewrite (``disabled_pass=["SpaceToDepthConv2d"]``: conv schedules only);
* tvm-s2d with the rewrite as the 32-lane (HTP) cost model chooses it;
* with ``--metaschedule-trials N``: MetaSchedule's schedules (N trials per conv kernel, tuned
  here, in a temporary database) for the conv kernels, without and with the rewrite.

All on 2 threads, median of ``--repeat`` runs after a warm-up, on the same inputs, each
checked against ONNX Runtime. Useful GFLOP/s counts the original conv's multiply-adds. The
last columns: which form tvm-s2d's default pipeline picks for this CPU, its time over the
best peer's, and its speed-up over TVM's default. Prints a table, writes JSON and a PNG chart.

    python scripts/bench_x86.py [--scale 1] [--repeat 10] [--json results/bench_x86.json]
    python scripts/bench_x86.py --layers 1 --no-demo --metaschedule-trials 64

(The tuned demo against its untuned forms: ``scripts/bench_tuned.py``.)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TVM_NUM_THREADS", "2")
os.environ.setdefault("OMP_NUM_THREADS", "2")

import numpy as np  # noqa: E402
import onnx  # noqa: E402
import onnxruntime as ort  # noqa: E402
import tvm  # noqa: E402
from onnx import TensorProto, helper, numpy_helper  # noqa: E402
from tvm import relax  # noqa: E402

import tvm_s2d  # noqa: E402
from tvm_s2d.demo import demo_model  # noqa: E402
from tvm_s2d.targets import host_target  # noqa: E402

try:
    import torch  # noqa: E402
except ImportError:  # optional peer
    torch = None

LAYERS = [
    ("seed 1024x1024x8 3x3 8->8", dict(cin=8, cout=8, hw=1024, k=3, stride=1)),
    ("ResNet stem 224x224x3 7x7/2 ->64", dict(cin=3, cout=64, hw=224, k=7, stride=2)),
    ("tail 1024x1024 3x3 16->3", dict(cin=16, cout=3, hw=1024, k=3, stride=1)),
    ("256x256x8 3x3 8->8", dict(cin=8, cout=8, hw=256, k=3, stride=1)),
    ("control 128x128x32 3x3 32->32", dict(cin=32, cout=32, hw=128, k=3, stride=1)),
]
THREADS = int(os.environ["TVM_NUM_THREADS"])  # 2 unless set: ONNX Runtime, PyTorch and TVM alike
PEERS = ("onnxruntime", "pytorch")
NO_REWRITE, REWRITE, DEFAULT = "tvm-s2d, no rewrite", "tvm-s2d, rewrite", "tvm-s2d, default"
MS_NO_REWRITE, MS_REWRITE = "MetaSchedule, no rewrite", "MetaSchedule, rewrite"
FORMS = (NO_REWRITE, REWRITE, DEFAULT, MS_NO_REWRITE, MS_REWRITE)  # tvm-s2d's forms


def conv_model(cin, cout, hw, k, stride) -> tuple[onnx.ModelProto, float]:
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array((rng.standard_normal((cout, cin, k, k)) / np.sqrt(cin * k * k)).astype(np.float32), "w")
    node = helper.make_node("Conv", ["x", "w"], ["y"], name="conv", kernel_shape=[k, k], strides=[stride] * 2, pads=[k // 2] * 4)
    out = (hw + 2 * (k // 2) - k) // stride + 1
    graph = helper.make_graph([node], "layer", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, cin, hw, hw])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, cout, out, out])], initializer=[w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    return model, 2.0 * out * out * k * k * cin * cout


def _median(fn, repeat) -> float:
    fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def time_ort(model, x, repeat) -> tuple[float, np.ndarray]:
    options = ort.SessionOptions()
    options.intra_op_num_threads = THREADS
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    feeds = {model.graph.input[0].name: x}
    return _median(lambda: session.run(None, feeds), repeat), session.run(None, feeds)[0]


def _depth_to_space(x, block: int, mode: str):
    n, c, h, w = x.shape
    if mode == "CRD":
        return torch.nn.functional.pixel_shuffle(x, block)
    x = x.reshape(n, block, block, c // block**2, h, w).permute(0, 3, 4, 1, 5, 2)  # ONNX's default DCR
    return x.reshape(n, c // block**2, h * block, w * block)


def _torch_op(op: str, ins: list, attrs: dict):
    """One ONNX node as PyTorch calls (the ops the benchmarks' models use, ONNX semantics)."""
    F = torch.nn.functional
    pads = attrs.get("pads", [0, 0, 0, 0])
    if pads[:2] != pads[2:]:
        raise NotImplementedError(f"{op} with asymmetric pads")
    if op == "Conv":
        return F.conv2d(ins[0], ins[1], ins[2] if len(ins) > 2 else None, attrs.get("strides", 1), pads[:2],
                        attrs.get("dilations", 1), attrs.get("group", 1))
    if op == "MaxPool":
        return F.max_pool2d(ins[0], attrs["kernel_shape"], attrs.get("strides", 1), pads[:2])
    if op == "AveragePool":
        return F.avg_pool2d(ins[0], attrs["kernel_shape"], attrs.get("strides", 1), pads[:2],
                            count_include_pad=bool(attrs.get("count_include_pad", 0)))
    if op == "Gemm":
        if attrs.get("transA", 0) or attrs.get("alpha", 1.0) != 1.0 or attrs.get("beta", 1.0) != 1.0:
            raise NotImplementedError("Gemm other than A @ B + C")
        b = ins[1].T if attrs.get("transB", 0) else ins[1]
        return ins[0] @ b + (ins[2] if len(ins) > 2 else 0)
    simple = {
        "Relu": lambda: torch.relu(ins[0]), "Add": lambda: ins[0] + ins[1],
        "GlobalAveragePool": lambda: ins[0].mean((2, 3), keepdim=True),
        "Flatten": lambda: torch.flatten(ins[0], attrs.get("axis", 1)),
        "Softmax": lambda: torch.softmax(ins[0], attrs.get("axis", -1)),
        "Reshape": lambda: ins[0].reshape(tuple(ins[1].tolist())),
        "Transpose": lambda: ins[0].permute(*attrs["perm"]),
        "Concat": lambda: torch.cat(ins, attrs["axis"]),
        "DepthToSpace": lambda: _depth_to_space(ins[0], attrs["blocksize"], attrs.get("mode", b"DCR").decode()),
    }
    if op not in simple:
        raise NotImplementedError(op)
    return simple[op]()


def torch_forward(model: onnx.ModelProto):
    """The ONNX graph as PyTorch (eager) calls, weights as tensors."""
    weights = {i.name: torch.from_numpy(numpy_helper.to_array(i).copy()) for i in model.graph.initializer}
    nodes = [(n.op_type, list(n.input), n.output[0], {a.name: helper.get_attribute_value(a) for a in n.attribute})
             for n in model.graph.node]

    def forward(x):
        values = {model.graph.input[0].name: x, **weights}
        for op, inputs, output, attrs in nodes:
            values[output] = _torch_op(op, [values[name] for name in inputs], attrs)
        return values[model.graph.output[0].name]

    return forward


def time_torch(model, x, repeat) -> tuple[float, np.ndarray]:
    torch.set_num_threads(THREADS)
    forward, data = torch_forward(model), torch.from_numpy(x)
    with torch.inference_mode():
        return _median(lambda: forward(data), repeat), forward(data).numpy()


def time_tvm(mod, x, repeat, pipeline, disabled=()) -> tuple[float, np.ndarray]:
    with tvm.transform.PassContext(opt_level=3, disabled_pass=list(disabled)):
        ex = tvm.compile(mod, target=host_target(), relax_pipeline=pipeline)
    vm = relax.VirtualMachine(ex, tvm.cpu())
    data = tvm.runtime.tensor(x)
    out = vm["main"](data).numpy()
    timer = vm.time_evaluator("main", tvm.cpu(), number=1, repeat=repeat)
    return float(np.median(timer(data).results)), out


def chosen_form(mod) -> str:
    """What the s2d pipeline does to ``mod`` by default on this CPU."""
    with host_target():
        report = tvm_s2d.explain(mod)
    return f"{len(report.rewritten)} of {len(report.rows)} rewritten"


def metaschedule_runs(mod, x, repeat, trials, work) -> list:
    """(label, measure) for MetaSchedule's conv schedules, tuned into ``work``, without and with the rewrite."""
    from tvm_s2d.tuner import metaschedule

    runs = []
    for label, rewrite, options in ((MS_NO_REWRITE, False, {}), (MS_REWRITE, True, {"lane_width": 32})):
        database = str(Path(work) / label.split(", ")[1].replace(" ", "_"))

        def measure(rewrite=rewrite, options=options, database=database):
            metaschedule.tune(mod, host_target(), database, trials=trials, rewrite=rewrite, **options)
            disabled = () if rewrite else ("SpaceToDepthConv2d",)
            return time_tvm(mod, x, repeat, relax.get_pipeline("s2d", metaschedule=database, **options), disabled)

        runs.append((label, measure))
    return runs


def bench(name, model, flops, x, repeat, metaschedule_trials=0) -> dict:
    mod = tvm_s2d.from_onnx(model)
    seconds = {}
    seconds["onnxruntime"], reference = time_ort(model, x, repeat)
    runs = [("tvm default", lambda: time_tvm(mod, x, repeat, "default")),
            (NO_REWRITE, lambda: time_tvm(mod, x, repeat, relax.get_pipeline("s2d"), ("SpaceToDepthConv2d",))),
            (REWRITE, lambda: time_tvm(mod, x, repeat, relax.get_pipeline("s2d", lane_width=32))),
            (DEFAULT, lambda: time_tvm(mod, x, repeat, "s2d"))]
    if torch is not None:
        runs.insert(0, ("pytorch", lambda: time_torch(model, x, repeat)))
    work = tempfile.TemporaryDirectory(prefix="bench-ms-")
    if metaschedule_trials:
        runs += metaschedule_runs(mod, x, repeat, metaschedule_trials, work.name)
    for label, measure in runs:
        seconds[label], out = measure()
        scale = float(np.abs(reference).max()) or 1.0
        assert np.allclose(out, reference, rtol=1e-4, atol=1e-5 * scale), f"{name}: {label} disagrees with ONNX Runtime"
    work.cleanup()
    best_peer = min(seconds[p] for p in PEERS if p in seconds)
    return {
        "name": name, "flops": flops,
        "ms": {k: v * 1e3 for k, v in seconds.items()},
        "useful_gflops": {k: flops / v / 1e9 for k, v in seconds.items()},
        "default_choice": chosen_form(mod),
        "default_over_best_peer": seconds[DEFAULT] / best_peer,
        "best_form": min((f for f in FORMS if f in seconds), key=seconds.get),
        "best_form_over_best_peer": min(seconds[f] for f in FORMS if f in seconds) / best_peer,
        "default_speedup_over_tvm_default": seconds["tvm default"] / seconds[DEFAULT],
    }


def table(rows) -> str:
    labels = list(rows[0]["ms"])
    head = f"{'layer':38s} " + " ".join(f"{label:>24s}" for label in labels)
    head += f"  {'default: convs':>16s}  {'/ best peer':>11s}  {'best form / peer':>16s}  {'vs tvm default':>14s}"
    lines = [head, "(ms, median; useful GFLOP/s in brackets)"]
    for r in rows:
        cells = " ".join(f"{r['ms'][k]:13.2f} ({r['useful_gflops'][k]:7.2f})" for k in labels)
        lines.append(f"{r['name']:38s} {cells}  {r['default_choice']:>16s}  {r['default_over_best_peer']:10.2f}x"
                     f"  {r['best_form_over_best_peer']:15.2f}x  {r['default_speedup_over_tvm_default']:13.1f}x")
    return "\n".join(lines)


def chart(rows, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = list(rows[0]["ms"])
    fig, ax = plt.subplots(figsize=(12, 5))
    width = 0.8 / len(labels)
    for i, label in enumerate(labels):
        ax.bar([j + i * width for j in range(len(rows))], [r["useful_gflops"][label] for r in rows], width, label=label)
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(rows))], [r["name"] for r in rows], rotation=15, ha="right", fontsize=8)
    ax.set_yscale("log")
    ax.set_ylabel(f"useful GFLOP/s ({THREADS} threads, log scale)")
    ax.set_title("conv layers and the demo model on this CPU (higher is better)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=int, default=1, help="divide spatial sizes by this (default 1)")
    parser.add_argument("--repeat", type=int, default=10, help="timed runs per variant (default 10)")
    parser.add_argument("--layers", type=int, nargs="*", help="indices into the layer list (default all)")
    parser.add_argument("--no-demo", action="store_true", help="skip the end-to-end demo model")
    parser.add_argument("--metaschedule-trials", type=int, default=0,
                        help="add MetaSchedule columns, tuning each conv kernel with this many trials (default 0: off)")
    parser.add_argument("--json", help="write the results here (and a PNG chart beside it, if matplotlib is installed)")
    args = parser.parse_args(argv)
    rng = np.random.default_rng(1)
    rows = []
    for i, (name, layer) in enumerate(LAYERS):
        if args.layers is not None and i not in args.layers:
            continue
        layer = {**layer, "hw": max(16, layer["hw"] // args.scale)}
        model, flops = conv_model(**layer)
        x = rng.standard_normal((1, layer["cin"], layer["hw"], layer["hw"])).astype(np.float32)
        rows.append(bench(f"{name} @{layer['hw']}", model, flops, x, args.repeat, args.metaschedule_trials))
        print(f"  {name}: done", file=sys.stderr)
    if not args.no_demo:
        size = max(32, 1024 // args.scale)
        report = tvm_s2d.explain(tvm_s2d.from_onnx(demo_model(size)), lane_width=32)
        flops = 2.0 * sum(r["useful_macs"] for r in report.rows)
        x = rng.standard_normal((1, 3, size, size)).astype(np.float32)
        rows.append(bench(f"demo model @{size}", demo_model(size), flops, x, args.repeat,
                          args.metaschedule_trials))
    print(table(rows))
    if torch is None:
        print("(PyTorch not installed: pip install torch==2.13.0 adds its column)")
    if args.json:
        path = Path(args.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        meta = {"threads": THREADS, "repeat": args.repeat, "target": str(host_target()),
                "torch": torch.__version__ if torch is not None else None, "onnxruntime": ort.__version__,
                "tvm": tvm.__version__}
        path.write_text(json.dumps({**meta, "rows": rows}, indent=2))
        try:
            chart(rows, path.with_suffix(".png"))
        except ImportError:
            print("(matplotlib not installed: no chart)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
