"""Halide as a peer on the Hexagon emulator (``scripts/bench_hexagon_peers.py``): one small layer
through both sides, no packet claims."""

import json

import pytest

from helpers import load_script, require_hexagon_tools

pytest.importorskip("halide")  # the optional extra: pip install -e '.[peers]'


def test_a_small_conv_is_exact_in_halide_and_in_tvm_s2d(tmp_path):
    """A 3x3 8->8 conv at 32x32: Halide's pipelines and tvm-s2d's kernel chain both give numpy's
    integers bit for bit under qemu-hexagon (tvm-s2d its CPU build's too), both count packets."""
    require_hexagon_tools()
    out, table = tmp_path / "peers.json", tmp_path / "peers.md"
    assert load_script("bench_hexagon_peers").main(["--layers", "tiny", "--json", str(out), "--table", str(table)]) == 0
    (row,) = json.loads(out.read_text())
    assert row["halide"]["exact"] and row["tvm_s2d"]["exact"] and row["tvm_s2d"]["matches_cpu"] and row["exact"]
    assert set(row["halide"]["kernels"]) == {"pack", "conv"} and all(p > 0 for p in row["halide"]["kernels"].values())
    assert row["halide"]["packets"] == sum(row["halide"]["kernels"].values())
    assert row["tvm_s2d"]["packets"] == sum(k["packets"] for k in row["tvm_s2d"]["kernels"]) > 0
    assert row["macs"] == 32 * 32 * 8 * 8 * 9 and "| 3x3 conv 8->8, 32x32 (smoke test) |" in table.read_text()
