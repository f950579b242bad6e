"""Benchmark scripts stay runnable (benchmarks are not tests: one tiny layer, no timing claims)."""

import json

from helpers import load_script as load


def test_bench_x86_runs_on_a_tiny_layer(tmp_path, capsys):
    out = tmp_path / "x86.json"
    assert load("bench_x86").main(["--scale", "64", "--repeat", "1", "--layers", "3", "--no-demo", "--json", str(out)]) == 0
    (row,) = json.loads(out.read_text())["rows"]
    assert {"onnxruntime", "tvm default", "tvm-s2d, no rewrite", "tvm-s2d, rewrite", "tvm-s2d, default"} <= set(row["ms"])
    assert row["best_form"].startswith("tvm-s2d")
    assert row["default_choice"] == "0 of 1 rewritten" and row["default_speedup_over_tvm_default"] > 0
    assert all(ms > 0 for ms in row["ms"].values())
    assert "256x256x8" in capsys.readouterr().out
