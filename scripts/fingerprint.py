"""What a refactor must not change: the outputs of the project's own models compiled for this
CPU (float), and of their quantized forms run whole on the Hexagon emulator (every kernel's
packets and the output's bytes), as one JSON fingerprint.

    python scripts/fingerprint.py --json /tmp/after.json                 # this checkout
    PYTHONPATH=/tmp/base python scripts/fingerprint.py --json /tmp/before.json   # another checkout
    python scripts/fingerprint.py --compare /tmp/before.json /tmp/after.json

Outputs are hashed (sha256 of the bytes); CPU runs use fixed seeded inputs.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
from pathlib import Path

import numpy as np


def _hash(array) -> str:
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()[:16]


def fingerprint(size: int, hexagon_size: int) -> dict:
    import tvm
    from tvm import relax

    import tvm_s2d
    from tvm_s2d.emulator.model import run_model
    from tvm_s2d.models import zoo
    from tvm_s2d.quantize import quantize_qdq
    from tvm_s2d.targets import host_target

    found = {"cpu": {}, "hexagon": {}}
    for name, model in zoo(size).items():
        x = np.random.default_rng(0).standard_normal((1, 3, size, size)).astype(np.float32)
        with tvm.transform.PassContext(opt_level=3):
            ex = tvm.compile(tvm_s2d.from_onnx(model), target=host_target(), relax_pipeline="s2d")
        out = relax.VirtualMachine(ex, tvm.cpu())["main"](tvm.runtime.tensor(x))
        found["cpu"][name] = _hash((out if hasattr(out, "numpy") else out[0]).numpy())
        print(f"cpu {name}: {found['cpu'][name]}", file=sys.stderr, flush=True)
    with tempfile.TemporaryDirectory() as work:
        for name in ("demo", "espcn"):  # the classifiers end in a softmax, whose expf the harness lacks
            path = quantize_qdq(zoo(hexagon_size)[name], Path(work) / f"{name}.onnx")
            run = run_model(path, onnxruntime=False)
            found["hexagon"][name] = {"output": _hash(run.output), "matches_cpu": run.matches_cpu,
                                      "packets": {f"{i}:{k.name}": k.packets for i, k in enumerate(run.kernels)}}
            print(f"hexagon {name}: {run.packets:,} packets, {found['hexagon'][name]['output']}", file=sys.stderr, flush=True)
    return found


def compare(before: dict, after: dict) -> list[str]:
    diffs = []
    for part in ("cpu", "hexagon"):
        for name in sorted(set(before[part]) | set(after[part])):
            if before[part].get(name) != after[part].get(name):
                diffs.append(f"{part} {name}: {before[part].get(name)} -> {after[part].get(name)}")
    return diffs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--hexagon-size", type=int, default=32)
    parser.add_argument("--json", help="write the fingerprint here")
    parser.add_argument("--compare", nargs=2, metavar=("BEFORE", "AFTER"), help="compare two fingerprints")
    args = parser.parse_args()
    if args.compare:
        before, after = (json.loads(Path(p).read_text()) for p in args.compare)
        diffs = compare(before, after)
        print("\n".join(diffs) if diffs else f"identical: {len(after['cpu'])} CPU outputs, "
              f"{sum(len(h['packets']) for h in after['hexagon'].values())} Hexagon kernels (packets and outputs)")
        return 1 if diffs else 0
    found = fingerprint(args.size, args.hexagon_size)
    text = json.dumps(found, indent=1)
    if args.json:
        Path(args.json).write_text(text)
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
