"""Executed Hexagon packets of every kernel the ``"s2d"`` pipeline builds for a quantized NHWC
network (``tvm_s2d.emulator.network``: the seed's 8 -> 8 3x3 convs, uint8 in and out), per form:

* ``original, width`` / ``original, lanes``: no rewrite, each conv in that HVX mapping;
* ``S2D 2x2, lanes`` / ``S2D 2x2, width``: the rewrite with block 2x2.

Where ``bench_hexagon.py`` measures one conv on pre-packed operands, this runs what a model
compiled for Hexagon runs: the pipeline's kernels (after fusion) one by one under
qemu-hexagon (constants as compiled, other inputs random), grouped as ``conv`` (HVX vrmpy
kernels and their offsets), ``hvx moves`` (HVX S2D/D2S shuffles, pads, the width mapping's
layout deal), ``epilogue`` (requantization: the HVX integer kernel, or what is left in TVM's
lowering; a width-vectorized conv of 4, 8 or 16 channels requantizes in its own kernel,
counted as ``conv``) and ``moves`` (other
movement in TVM's default lowering). Packets of the runtime helpers a kernel calls (the
rounding of ``quantize``, division) are not counted. Prints a table; ``--json`` writes it.

    python scripts/bench_hexagon_pipeline.py [--size 256] [--convs 1] [--json results/bench_hexagon_pipeline.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import tvm
from tvm import relax

from tvm_s2d.targets import hexagon_target
from tvm_s2d.emulator.qemu import run_kernel
from tvm_s2d.emulator.network import quantized_nhwc_chain
from tvm_s2d.passes import SpaceToDepthConv2d
from tvm_s2d.pipeline import S2DPipeline

FORMS = [  # name, block, mapping
    ("original, width", None, "width"),
    ("original, lanes", None, "lanes"),
    ("S2D 2x2, lanes", 2, "lanes"),
    ("S2D 2x2, width", 2, "width"),
]
GROUPS = ("conv", "hvx moves", "epilogue", "moves")


def group(name: str) -> str:
    if name.startswith("hvx_requantize_"):
        return "epilogue"
    if name.startswith(("hvx_s2d_", "hvx_d2s_", "hvx_pad_")) or name.endswith("_layout"):
        return "hvx moves"
    if name.startswith("hvx_"):
        return "conv"
    if any(op in name for op in ("quantize", "multiply", "relu")):
        return "epilogue"
    return "moves"


def kernels(mod: tvm.IRModule):
    """``(name, func, call)`` of each ``call_tir`` of ``main``, in order."""
    for value in relax.analysis.get_var2val(mod["main"]).values():
        if isinstance(value, relax.Call) and value.op.name == "relax.call_tir":
            yield value.args[0].name_hint, mod[value.args[0]], value


def operand(arg, rng) -> np.ndarray:
    if isinstance(arg, tvm.ir.GenericConst):
        return arg.value.numpy()
    shape, dtype = [int(d) for d in arg.ty.shape], str(arg.ty.dtype)
    if dtype == "float32":
        return rng.standard_normal(shape).astype(dtype)
    info = np.iinfo(dtype)
    return rng.integers(max(info.min, -1000), min(info.max, 1000) + 1, shape).astype(dtype)


def bench_form(size: int, convs: int, block, mapping: str) -> dict:
    target = hexagon_target()
    rewrite = SpaceToDepthConv2d(block=block, move_cost=1000.0, prepare=False) if block else None
    pipeline = S2DPipeline(rewrite=rewrite if rewrite is not None else False,
                           hexagon_knobs=lambda signature: (mapping, 8 if mapping == "width" else 4))
    hexagon = pipeline.hexagon_convs
    with target, tvm.transform.PassContext(opt_level=3):
        mod = tvm.transform.Sequential(pipeline.passes(until="lower"))(quantized_nhwc_chain((size, size), 8, convs))
    if block and not all(d.rewritten for d in rewrite.decisions):
        raise RuntimeError("the rewrite refused a conv of the benchmark network")
    assert all(m == mapping for m, _ in hexagon.mappings.values()), hexagon.mappings
    rng = np.random.default_rng(0)
    row = {group_: 0 for group_ in GROUPS}
    row["kernels"] = {}
    for name, func, call in kernels(mod):
        inputs = [operand(arg, rng) for arg in call.args[1].fields]
        out = (tuple(int(d) for d in call.ty.shape), str(call.ty.dtype))
        packets = run_kernel(func, inputs, [out], name="kernel").packets
        row["kernels"][name] = packets
        row[group(name)] += packets
    row["total"] = sum(row[g] for g in GROUPS)
    return row


def table(rows) -> str:
    lines = [f"{'form':18s} " + " ".join(f"{g:>11s}" for g in (*GROUPS, "total"))]
    for r in rows:
        lines.append(f"{r['form']:18s} " + " ".join(f"{r[g]:11,d}" for g in (*GROUPS, "total")))
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=256, help="input height and width (default 256)")
    parser.add_argument("--convs", type=int, default=1, help="convs in the chain (default 1)")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args(argv)
    rows = []
    for name, block, mapping in FORMS:
        start = time.perf_counter()
        rows.append({"form": name, **bench_form(args.size, args.convs, block, mapping)})
        print(f"  {name}: {time.perf_counter() - start:.1f} s", file=sys.stderr)
    print(table(rows))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"size": args.size, "convs": args.convs, "forms": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
