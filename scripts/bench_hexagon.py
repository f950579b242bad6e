"""Executed Hexagon packets per conv layer under qemu-hexagon (v66, HVX 128B), three ways:

(A) the original conv in the HTP-native channel-in-lanes mapping (32 output channels per
    vector, 4 input channels per vrmpy, channels padded up to that);
(B) the original conv width-vectorized (32 output columns per vector, vector-by-scalar
    vrmpy on a 4-channel-blocked layout), stride-1 layers only;
(C) the space-to-depth conv in the channel-in-lanes mapping, plus its S2D and D2S kernels
    (HVX shuffles for 2x2 blocks where they apply, else vectorized copies). In a chain of
    rewritten convs the S2D and D2S are paid once, not per layer: see conv-only packets.

Operands are pre-packed (each mapping's own layout, free here); what a compiled model also
runs around the convs (layout changes, pads, requantization) is measured by
``bench_hexagon_pipeline.py``.

Each kernel is checked bit-exact against numpy (``tvm_s2d.emulator.layer.run_layer``: the
same runs the Hexagon tuner measures). Schedule knobs are tried and the best kept.
Ideal = vrmpy count / 2 (two 128-MAC vrmpy per packet, the vector-by-scalar form's peak).
HMX-style = executed MACs with both channel counts rounded up to 32 (geometry.CostModel).

    python scripts/bench_hexagon.py [--scale 4] [--json results/bench_hexagon.json]

``--scale`` divides every spatial size (the full sizes take minutes per layer in QEMU).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from tvm_s2d.geometry import Conv2dSpec
from tvm_s2d.emulator.layer import run_layer

LAYERS = [
    ("seed 1024x1024x8 3x3 8->8", dict(cin=8, cout=8, hw=1024, k=3, stride=1)),
    ("ResNet stem 224x224x3 7x7/2 ->64", dict(cin=3, cout=64, hw=224, k=7, stride=2)),
    ("tail 512x512 3x3 16->3", dict(cin=16, cout=3, hw=512, k=3, stride=1)),
    ("256x256x8 3x3 8->8", dict(cin=8, cout=8, hw=256, k=3, stride=1)),
    ("control 128x128x32 3x3 32->32", dict(cin=32, cout=32, hw=128, k=3, stride=1)),
]
PIXELS, CHANNELS = (2, 4, 8), (4, 8)


def best_run(spec, block, mapping, knobs):
    """The fewest-packet run of one form over its knob values (each run checked bit-exact)."""
    runs = [(run_layer(spec, block, mapping, knob), knob) for knob in knobs]
    return min(runs, key=lambda pair: pair[0].packets)


def layer_spec(cin, cout, hw, k, stride, scale) -> Conv2dSpec:
    """A benchmark layer, same-padded, spatial size divided by ``scale`` (at least 8)."""
    size, p = max(8, hw // scale), k // 2
    return Conv2dSpec(1, cin, cout, (size, size), (k, k), (stride, stride), padding=(p,) * 4, itemsize=1)


def bench_layer(name, cin, cout, hw, k, stride, scale):
    spec = layer_spec(cin, cout, hw, k, stride, scale)
    size = spec.in_hw[0]
    row = {"layer": name, "size": size, "hmx_macs_original": spec.executed_macs(32),
           "hmx_macs_s2d": spec.plan(2).executed_macs(32)}
    run, knob = best_run(spec, None, "lanes", PIXELS)
    row["A"] = {"packets": run.packets, "ideal": run.ideal, "vrmpy": run.vrmpy, "knob": {"pixels": knob}}
    if stride == 1:
        run, knob = best_run(spec, None, "width", CHANNELS)
        row["B"] = {"packets": run.packets, "ideal": run.ideal, "vrmpy": run.vrmpy, "knob": {"channels": knob}}
    run, knob = best_run(spec, (2, 2), "lanes", PIXELS)
    row["C"] = {"packets": run.packets, "conv": run.conv, "s2d": run.s2d, "d2s": run.d2s,
                "ideal": run.ideal, "vrmpy": run.vrmpy, "knob": {"pixels": knob}}
    return row


def table(rows) -> str:
    lines = [f"{'layer':34s} {'size':>5s} {'(A) packets':>12s} {'(B) packets':>12s} {'(C) packets':>12s} "
             f"{'C conv/move':>16s} {'A/C':>5s} {'C/ideal':>7s} {'B/ideal':>7s} {'HMX A/C':>7s}"]
    for r in rows:
        b = r.get("B")
        b_packets = f"{b['packets']:,}" if b else "n/a"
        b_ideal = f"{b['packets'] / b['ideal']:.2f}" if b else "n/a"
        moved = r["C"]["s2d"] + r["C"]["d2s"]
        lines.append(
            f"{r['layer']:34s} {r['size']:5d} {r['A']['packets']:12,d} {b_packets:>12s} "
            f"{r['C']['packets']:12,d} {r['C']['conv']:>8,d}/{moved:<7,d} "
            f"{r['A']['packets'] / r['C']['packets']:5.2f} {r['C']['packets'] / r['C']['ideal']:7.2f} "
            f"{b_ideal:>7s} {r['hmx_macs_original'] / r['hmx_macs_s2d']:7.2f}"
        )
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=int, default=4, help="divide spatial sizes by this (default 4)")
    parser.add_argument("--layers", type=int, nargs="*", help="indices into the layer list (default all)")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args(argv)
    rows = []
    for i, (name, layer) in enumerate(LAYERS):
        if args.layers is not None and i not in args.layers:
            continue
        start = time.perf_counter()
        rows.append(bench_layer(name, scale=args.scale, **layer))
        print(f"  {name}: {time.perf_counter() - start:.1f} s", file=sys.stderr)
    print(table(rows))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"scale": args.scale, "assumption": "ideal = vrmpy / 2 per packet",
                                               "layers": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
