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


def test_bench_models_x86_runs_whole_models_tiny(tmp_path, capsys):
    out, chart = tmp_path / "models.json", tmp_path / "models.png"
    bench = load("bench_models_x86")
    assert bench.main(["--size", "16", "--repeat", "1", "--models", "resnet", "shufflenet", "--json", str(out),
                       "--chart", str(chart)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [r["model"] for r in rows] == ["resnet", "shufflenet"]
    for row in rows:  # every form computes the model: same output as ONNX Runtime
        assert set(row["forms"]) - {"pytorch"} == {"onnxruntime", "tvm default", "tvm-s2d"}  # pytorch if installed
        assert all(form["agrees"] and form["ms"] > 0 for form in row["forms"].values())
        shares = row["forms"]["tvm-s2d"]["passes_s"]
        assert set(shares) == {"s2d", "other passes", "schedules"}
        assert all(0 < t < row["forms"]["tvm-s2d"]["compile_s"] for t in shares.values())
    assert chart.read_bytes()[:4] == b"\x89PNG" and "s2d/peer" in capsys.readouterr().out


def test_the_model_zoo_runs_in_onnxruntime():
    import numpy as np
    import onnxruntime

    from tvm_s2d.models import zoo

    for name, model in zoo(32).items():
        session = onnxruntime.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        y = session.run(None, {session.get_inputs()[0].name: np.ones((1, 3, 32, 32), np.float32)})[0]
        assert np.isfinite(y).all() and y.size > 0, name


def test_bench_hexagon_zoo_runs_a_zoo_model_whole(tmp_path, capsys):
    from helpers import require_hexagon_tools

    require_hexagon_tools()
    out = tmp_path / "zoo.json"
    assert load("bench_hexagon_zoo").main(["--models", "demo", "--no-rewrite", "--json", str(out)]) == 0
    rows = json.loads(out.read_text())
    assert [r["form"] for r in rows] == ["default", "no rewrite"]
    assert all(r["matches_cpu"] and r["packets"] > 0 and 0 < r["hvx_share"] <= 1 and r["times_limit"] > 1 for r in rows)
    assert "| demo | 96 | default |" in capsys.readouterr().out


def test_profile_cpu_times_each_kernel_alone_and_inside_the_model(tmp_path, capsys):
    import onnx

    from tvm_s2d.demo import demo_model

    onnx.save(demo_model(32), tmp_path / "demo.onnx")
    out = tmp_path / "profile.json"
    assert load("profile_cpu").main([str(tmp_path / "demo.onnx"), "--repeat", "2", "--json", str(out)]) == 0
    profile = json.loads(out.read_text())
    convs = [k for k in profile["kernels"] if "conv2d" in k["kernel"]]
    assert convs and all(k["ms"] > 0 and k["in_model_ms"] > 0 for k in convs)  # each conv ran in the model
    assert profile["model_ms"] > 0 and "in the model" in capsys.readouterr().out
