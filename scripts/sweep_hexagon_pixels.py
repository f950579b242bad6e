"""How many output columns a channel-in-lanes ``vrmpy`` block should compute: every divisor of
the row (1-16, and the whole row up to 28) for 3x3 and 1x1 convs of rows of 3-56 columns, stride 1 and 2, run under
qemu-hexagon (``emulator.layer.run_layer``: bit-exact, packets of the conv kernel). The rule
``schedules.hexagon.lanes.block_pixels`` is read off these records (``tests/test_hexagon_default.py``
checks it against them).

    python scripts/sweep_hexagon_pixels.py [--out results/hexagon_pixels.jsonl]
"""

from __future__ import annotations

import argparse
import json
import sys

from tvm_s2d.emulator.layer import run_layer
from tvm_s2d.geometry import Conv2dSpec
from tvm_s2d.schedules.hexagon import lanes

lanes.block_pixels = lambda out_width, pixels: pixels  # measure each block as given, not as the rule maps it

WIDTHS = (3, 6, 7, 12, 14, 24, 28, 48, 56)
CONVS = ((64, 3, 1), (128, 1, 1), (64, 3, 2))  # (channels, kernel, stride)


def layers():
    for ow in WIDTHS:
        for channels, k, s in CONVS:
            if s == 2 and ow not in (6, 12, 24, 48):
                continue
            yield ow, channels, k, s


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="results/hexagon_pixels.jsonl")
    args = parser.parse_args(argv)
    with open(args.out, "w") as out:
        for ow, channels, k, s in layers():
            spec = Conv2dSpec(batch=1, in_channels=channels, out_channels=channels, in_hw=(ow * s, ow * s),
                              kernel_hw=(k, k), strides=(s, s), padding=(k // 2,) * 4)
            for pixels in sorted({p for p in (1, 2, 3, 4, 6, 7, 8, 12, 14, 16, ow) if ow % p == 0 and p <= 28}):
                run = run_layer(spec, None, "lanes", pixels)
                record = {"out_width": ow, "channels": channels, "kernel": k, "stride": s, "pixels": pixels,
                          "conv_packets": run.conv, "ideal": run.ideal}
                print(json.dumps(record), file=out, flush=True)
                print(f"{ow:3d} columns {channels:4d} ch {k}x{k}/{s} pixels {pixels:2d}: {run.conv / run.ideal:.2f}x ideal")
    return 0


if __name__ == "__main__":
    sys.exit(main())
