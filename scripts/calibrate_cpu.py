"""Strided convs on this CPU: the conv as it is vs its S2D form vs what the default pipeline does.

The CPU cost model charges a width-strided conv ``CPU_STRIDED_WIDTH`` times its MACs (a
width-vectorized kernel gathers every s-th pixel), but only for convs with at most
``CPU_STRIDED_CHANNELS`` input channels. This script measures the layers that decide those
two numbers: ResNet-50's stem and its strided 3x3 convs, a small RGB stem, and strided convs
with 16-512 channels. Each layer (conv + ReLU, the s2d pipeline for ``host_target()``) is
compiled three ways, timed in ``--rounds`` interleaved rounds (median), outputs checked
against the unrewritten form. "default/plain" above 1.05 would mean the default loses.

    python scripts/calibrate_cpu.py [--rounds 3] [--scale 1] [--json results/calibrate_cpu.json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("TVM_NUM_THREADS", "2")

import numpy as np  # noqa: E402
import tvm  # noqa: E402
from tvm import relax  # noqa: E402

import tvm_s2d  # noqa: E402
from tvm_s2d.targets import host_target  # noqa: E402

# name, input (N, C, H, W), output channels, kernel, stride, padding
LAYERS = [
    ("ResNet-50 stem 7x7/2 3->64", (1, 3, 224, 224), 64, 7, 2, 3),
    ("ResNet-50 3x3/2 128", (1, 128, 56, 56), 128, 3, 2, 1),
    ("ResNet-50 3x3/2 256", (1, 256, 28, 28), 256, 3, 2, 1),
    ("ResNet-50 3x3/2 512", (1, 512, 14, 14), 512, 3, 2, 1),
    ("RGB stem 3x3/2 3->8", (1, 3, 256, 256), 8, 3, 2, 1),
    ("3x3/2 16->32", (1, 16, 112, 112), 32, 3, 2, 1),
    ("3x3/2 64->64", (1, 64, 56, 56), 64, 3, 2, 1),
    ("ResNet-50 1x1/2 256->512", (1, 256, 56, 56), 512, 1, 2, 0),
]
FORMS = {"plain": ({}, ["SpaceToDepthConv2d"]), "S2D 2x2": ({"block": 2}, []), "default": ({}, [])}


def layer_module(shape, cout, k, stride, pad, rng):
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType(shape, "float32"))
    weight = (rng.standard_normal((cout, shape[1], k, k)) / np.sqrt(shape[1] * k * k)).astype(np.float32)
    with bb.function("main", [x]):
        with bb.dataflow():
            y = bb.emit(relax.op.nn.conv2d(x, relax.const(weight), strides=stride, padding=pad), "conv")
            out = bb.emit_output(relax.op.nn.relu(y))
        bb.emit_func_output(out)
    return bb.get()


def measure(layers, rounds: int, scale: int) -> list[dict]:
    target, rng, rows = host_target(), np.random.default_rng(0), []
    for name, (n, c, h, w), cout, k, stride, pad in layers:
        shape = (n, c, h // scale, w // scale)
        mod = layer_module(shape, cout, k, stride, pad, rng)
        x = tvm.runtime.tensor(rng.standard_normal(shape).astype(np.float32))
        vms, decisions = {}, {}
        for form, (options, disabled) in FORMS.items():
            with tvm.transform.PassContext(opt_level=3, disabled_pass=disabled):
                ex = tvm.compile(mod, target=target, relax_pipeline=relax.get_pipeline("s2d", **options))
            vms[form] = relax.VirtualMachine(ex, tvm.cpu())
            if not disabled:
                with target:
                    decisions[form] = tvm_s2d.explain(mod, **options).rows[0]["status"]
        reference = vms["plain"]["main"](x).numpy()
        for form, vm in vms.items():
            np.testing.assert_allclose(vm["main"](x).numpy(), reference, rtol=1e-4, atol=1e-4 * np.abs(reference).max())
        times = {form: [] for form in vms}
        for _ in range(rounds):
            for form, vm in vms.items():
                timer = vm.time_evaluator("main", tvm.cpu(), number=3, repeat=3, min_repeat_ms=30)
                times[form].append(timer(x).median * 1e3)
        ms = {form: float(np.median(t)) for form, t in times.items()}
        rows.append({"layer": name, "input": list(shape), "ms": ms, "default": decisions["default"],
                     "s2d/plain": ms["S2D 2x2"] / ms["plain"], "default/plain": ms["default"] / ms["plain"]})
        print(f"{name:28s} {'x'.join(map(str, shape)):>16s}  plain {ms['plain']:8.3f} ms  S2D 2x2 {ms['S2D 2x2']:8.3f} ms"
              f"  default {ms['default']:8.3f} ms ({decisions['default']:9s})  S2D/plain {rows[-1]['s2d/plain']:5.2f}"
              f"  default/plain {rows[-1]['default/plain']:5.2f}", flush=True)
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--scale", type=int, default=1, help="divide every input's height and width by this")
    parser.add_argument("--layers", type=int, default=len(LAYERS), help="the first N layers only")
    parser.add_argument("--json", default="results/calibrate_cpu.json")
    args = parser.parse_args(argv)
    rows = measure(LAYERS[: args.layers], args.rounds, args.scale)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps({"target": str(host_target()), "rows": rows}, indent=2))
    worst = max(r["default/plain"] for r in rows)
    print(f"default/plain at worst {worst:.2f}; wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
