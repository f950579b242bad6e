"""Executed Hexagon packets per conv layer under qemu-hexagon (v66, HVX 128B), three ways:

(A) the original conv in the HTP-native channel-in-lanes mapping (32 output channels per
    vector, 4 input channels per vrmpy, channels padded up to that);
(B) the original conv width-vectorized (32 output columns per vector, vector-by-scalar
    vrmpy on a 4-channel-blocked layout), stride-1 layers only;
(C) the space-to-depth conv in the channel-in-lanes mapping, plus its S2D and D2S kernels
    (plain TVM-vectorized copies; HVX shuffle-based ones would be cheaper). In a chain of
    rewritten convs the S2D and D2S are paid once, not per layer: see conv-only packets.

Each kernel is checked bit-exact against numpy. Schedule knobs are tried and the best kept.
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

import numpy as np
from tvm import te

from tvm_s2d.geometry import Conv2dSpec, conv2d_nchw, space_to_depth
from tvm_s2d.hexagon.emulator import run_kernel
from tvm_s2d.schedules.hexagon import PackedConv, WidthConv, schedule_vrmpy, schedule_width_vrmpy

LAYERS = [
    ("seed 1024x1024x8 3x3 8->8", dict(cin=8, cout=8, hw=1024, k=3, stride=1)),
    ("ResNet stem 224x224x3 7x7/2 ->64", dict(cin=3, cout=64, hw=224, k=7, stride=2)),
    ("tail 512x512 3x3 16->3", dict(cin=16, cout=3, hw=512, k=3, stride=1)),
    ("256x256x8 3x3 8->8", dict(cin=8, cout=8, hw=256, k=3, stride=1)),
    ("control 128x128x32 3x3 32->32", dict(cin=32, cout=32, hw=128, k=3, stride=1)),
]
PIXELS, CHANNELS = (2, 4, 8), (4, 8)


def best_run(make, knobs, operands, output_shape):
    runs = [(run_kernel(make(k), operands, [(output_shape, "int32")], name="conv"), k) for k in knobs]
    return min(runs, key=lambda pair: pair[0].packets)


def movement_kernel(shape_in, dtype, index):
    """A data-movement kernel out[i] = in[index(i)] with its innermost loop vectorized."""
    src = te.placeholder(shape_in, dtype, name="src")
    out_shape, fn = index(src)
    dst = te.compute(out_shape, fn, name="dst")
    func = te.create_prim_func([src, dst])
    import tvm

    sch = tvm.s_tir.Schedule(func)
    sch.vectorize(sch.get_loops(sch.get_sblock("dst"))[-1])
    return sch.mod["main"], out_shape


def s2d_packets(x_nhwc: np.ndarray, block: int) -> tuple[int, np.ndarray]:
    n, h, w, c = x_nhwc.shape
    b = block

    def index(src):
        return (n, h // b, w // b, b * b * c), lambda i, y, x, ch: src[i, y * b + ch // (b * c), x * b + ch // c % b, ch % c]

    func, shape = movement_kernel(x_nhwc.shape, "uint8", index)
    run = run_kernel(func, [x_nhwc], [(shape, "uint8")], name="s2d")
    return run.packets, run.outputs[0]


def d2s_packets(y: np.ndarray, block: int) -> int:
    """D2S of the conv output after requantization to 8 bits (as in an int8 network, where both
    forms requantize before the next layer; the values do not change the packet count)."""
    y = y.astype(np.uint8)
    n, h, w, cb = y.shape
    b, c = block, cb // (block * block)

    def index(src):
        return (n, h * b, w * b, c), lambda i, yy, xx, ch: src[i, yy // b, xx // b, (yy % b * b + xx % b) * c + ch]

    func, shape = movement_kernel(y.shape, "uint8", index)
    return run_kernel(func, [y], [(shape, "uint8")], name="d2s").packets


def bench_layer(name, cin, cout, hw, k, stride, scale, rng):
    size = max(8, hw // scale)
    p = k // 2
    spec = Conv2dSpec(1, cin, cout, (size, size), (k, k), (stride, stride), padding=(p,) * 4, itemsize=1)
    x = rng.integers(0, 256, (1, cin, size, size)).astype(np.uint8)
    w = rng.integers(-128, 128, (cout, cin, k, k)).astype(np.int8)
    expected = conv2d_nchw(x, w, spec.strides, spec.padding)
    row = {"layer": name, "size": size, "hmx_macs_original": spec.executed_macs(32)}

    a = PackedConv(1, (size + 2 * p, size + 2 * p), cin, cout, (k, k), (stride, stride))
    run, knob = best_run(lambda px: schedule_vrmpy(a.compute(), pixels=px), PIXELS,
                         [a.pack_input(x, (p,) * 4), a.pack_weight(w)], a.output_shape)
    assert (a.unpack_output(run.outputs[0]) == expected).all(), f"{name}: (A) not exact"
    row["A"] = {"packets": run.packets, "ideal": a.vrmpy_count // 2, "vrmpy": a.vrmpy_count, "knob": {"pixels": knob}}

    if stride == 1:
        b = WidthConv(1, (size, size), cin, cout, (k, k))
        run, knob = best_run(lambda ch: schedule_width_vrmpy(b.compute(), channels=ch), CHANNELS,
                             [b.pack_input(x, (p,) * 4), b.pack_weight(w)], b.output_shape)
        assert (b.unpack_output(run.outputs[0]) == expected).all(), f"{name}: (B) not exact"
        row["B"] = {"packets": run.packets, "ideal": b.vrmpy_count // 2, "vrmpy": b.vrmpy_count, "knob": {"channels": knob}}

    plan = spec.plan(2)
    xs = space_to_depth(plan.align_input(x), 2)
    t, l, bot, r = plan.padding
    c = PackedConv(1, (xs.shape[2] + t + bot, xs.shape[3] + l + r), plan.in_channels, plan.out_channels, plan.kernel_hw,
                   plan.strides)
    move_in, _ = s2d_packets(np.ascontiguousarray(plan.align_input(x).transpose(0, 2, 3, 1)), 2)
    run, knob = best_run(lambda px: schedule_vrmpy(c.compute(), pixels=px), PIXELS,
                         [c.pack_input(xs, plan.padding), c.pack_weight(plan.fold_weight(w))], c.output_shape)
    y = c.unpack_output(run.outputs[0])
    assert (plan.finish_output(y) == expected).all(), f"{name}: (C) not exact"
    move_out = d2s_packets(np.ascontiguousarray(y.transpose(0, 2, 3, 1)), 2) if plan.needs_d2s else 0
    row["C"] = {"packets": run.packets + move_in + move_out, "conv": run.packets, "s2d": move_in, "d2s": move_out,
                "ideal": c.vrmpy_count // 2, "vrmpy": c.vrmpy_count, "knob": {"pixels": knob}}
    row["hmx_macs_s2d"] = plan.executed_macs(32)
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
    rng = np.random.default_rng(0)
    rows = []
    for i, (name, layer) in enumerate(LAYERS):
        if args.layers is not None and i not in args.layers:
            continue
        start = time.perf_counter()
        rows.append(bench_layer(name, scale=args.scale, rng=rng, **layer))
        print(f"  {name}: {time.perf_counter() - start:.1f} s", file=sys.stderr)
    print(table(rows))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"scale": args.scale, "assumption": "ideal = vrmpy / 2 per packet",
                                               "layers": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
