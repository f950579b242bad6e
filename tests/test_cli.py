"""The command line: the main job, report, compile, and clear errors on bad input."""

import json

import numpy as np
import onnx
import pytest
import tvm
from tvm import relax

from tvm_s2d.cli import main
from tvm_s2d.demo import demo_model


@pytest.fixture
def demo_path(tmp_path):
    path = tmp_path / "demo.onnx"
    onnx.save(demo_model(40), path)
    return path


def test_demo_checks_outputs_and_writes_json(tmp_path, capsys):
    out = tmp_path / "demo.json"
    assert main(["demo", "--size", "64", "--repeat", "2", "--json", str(out), "--hexagon-size", "0"]) == 0
    text = capsys.readouterr().out
    assert "outputs agree: yes" in text and "refused: grouped conv (groups=8)" in text
    assert "TVM default          compile" in text and "ONNX Runtime" in text
    verdict = next(line for line in text.splitlines() if line.startswith("fastest: "))
    assert verdict.startswith("fastest: tvm-s2d (") or "tvm-s2d" in verdict.split("(", 1)[1]  # who wins, and by how much
    result = json.loads(out.read_text())
    assert result["agree"] and result["report"]["totals"]["rewritten"] == 4
    assert set(result["run_ms"]) == {"tvm-s2d", "tvm-s2d, no rewrite", "TVM default", "ONNX Runtime"}
    # each step credited with its own gain, and the analytic HTP table after what was measured
    gains = next(line for line in text.splitlines() if line.startswith("what each step gained: "))
    rewritten, convs = result["rewritten"]
    assert f"{rewritten} of {convs} convs rewritten" in gains and convs == 5 and "measurement noise" in gains
    assert text.index("what each step gained") < text.index("Hexagon HTP (analytic")
    body1 = next(r for r in result["report"]["layers"] if r["name"] == "body1")
    assert body1["in_channels"] == [8, 32] and body1["kernel"] == [[3, 3], [2, 2]]


def test_report_table_and_json(demo_path, capsys):
    assert main(["report", str(demo_path), "--block", "2x1"]) == 0
    assert "rewritten (forced block)" in capsys.readouterr().out
    assert main(["report", str(demo_path), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [layer["status"] for layer in data["layers"]].count("rewritten") == 4


def test_compile_writes_a_library_that_runs(demo_path, tmp_path, capsys):
    lib = tmp_path / "model.so"
    assert main(["compile", str(demo_path), "-o", str(lib)]) == 0
    assert "wrote" in capsys.readouterr().out
    vm = relax.VirtualMachine(tvm.runtime.load_module(str(lib)), tvm.cpu())
    image = np.random.default_rng(0).standard_normal((1, 3, 40, 40)).astype(np.float32)
    assert vm["main"](tvm.runtime.tensor(image)).numpy().shape == (1, 3, 20, 20)


@pytest.mark.parametrize(
    "argv,message",
    [
        (["report", "{tmp}/missing.onnx"], "no such file"),
        (["report", "{tmp}/garbage.onnx"], "not an ONNX model"),
        (["compile", "{tmp}/garbage.onnx", "-o", "{tmp}/x.so"], "not an ONNX model"),
        (["report", "{tmp}"], "is a directory; give an .onnx file"),
        (["quantize", "{tmp}/garbage.onnx", "-o", "{tmp}/q.onnx"], "not an ONNX model"),
    ],
)
def test_bad_models_give_one_line_errors(tmp_path, capsys, argv, message):
    (tmp_path / "garbage.onnx").write_bytes(b"\x00\x01garbage")
    assert main([a.format(tmp=tmp_path) for a in argv]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


@pytest.mark.parametrize("argv", [["report", "m.onnx", "--block", "0"], ["report", "m.onnx", "--block", "-2"],
                                  ["report", "m.onnx", "--block", "2x2x2"], ["report", "m.onnx", "--shape", "x=1,a"]])
def test_bad_options_are_usage_errors(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2 and "error:" in capsys.readouterr().err


def test_compile_for_hexagon_writes_a_hexagon_object(demo_path, tmp_path):
    out = tmp_path / "model.o"
    assert main(["compile", str(demo_path), "--target", "hexagon", "-o", str(out)]) == 0
    header = out.read_bytes()[:20]
    assert header[:4] == b"\x7fELF" and int.from_bytes(header[18:20], "little") == 164  # EM_HEXAGON


def test_report_options_per_conv_and_move_cost(capsys):
    import onnx as _onnx
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = f"{tmp}/demo.onnx"
        _onnx.save(demo_model(256), path)
        assert main(["report", path, "--json", "--per-conv"]) == 0
        alone = json.loads(capsys.readouterr().out)
        assert alone["totals"]["stayed_in_domain"] == 0 and alone["totals"]["rewritten"] == 4
        assert main(["report", path, "--json", "--block", "2", "--move-cost", "1000"]) == 0
        staying = json.loads(capsys.readouterr().out)
        assert staying["totals"]["stayed_in_domain"] >= 1
        assert staying["totals"]["data_movement_ops_after"] < staying["totals"]["data_movement_ops_each_conv_alone"]


# ---- every failure is one line and exit 2; checked before any compile work ----------------------


def test_version(capsys):
    import tvm_s2d

    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0 and capsys.readouterr().out.strip() == f"tvm-s2d {tvm_s2d.__version__}"


def _fails(argv, capsys, message):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and "compiling" not in err, err
    assert len([line for line in err.splitlines() if "error" in line]) == 1, err
    return err


@pytest.mark.parametrize("output,message", [
    ("{tmp}/missing_dir/model.so", "output directory {tmp}/missing_dir does not exist"),
    ("{tmp}", "output {tmp} is a directory"),
])
def test_compile_checks_the_output_path_before_compiling(demo_path, tmp_path, capsys, output, message):
    _fails(["compile", str(demo_path), "-o", output.format(tmp=tmp_path)], capsys, message.format(tmp=tmp_path))


def test_an_output_that_cannot_be_written_is_one_line(demo_path, capsys):
    assert main(["compile", str(demo_path), "-o", "/proc/model.so"]) == 2  # /proc takes no new files, even for root
    err = capsys.readouterr().err
    assert "cannot write /proc/model.so" in err and "Traceback" not in err


@pytest.mark.parametrize("make,message", [
    (lambda tmp: tmp, "is a directory"),
    (lambda tmp: tmp / "missing.jsonl", "no such file"),
])
def test_tuning_log_must_be_a_file(demo_path, tmp_path, capsys, make, message):
    _fails(["compile", str(demo_path), "-o", str(tmp_path / "m.so"), "--tuning-log", str(make(tmp_path))], capsys, message)


@pytest.mark.parametrize("shape,message", [("imag=1,3,40,40", "'imag', which is not an input"),
                                           ("image=1,3,40", "has 3 dims, the input has 4")])
def test_shapes_that_do_not_fit_the_model(demo_path, capsys, shape, message):
    _fails(["report", str(demo_path), "--shape", shape], capsys, message)


@pytest.fixture
def dynamic_path(tmp_path):
    model = demo_model(40)
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_param = "N"
    model.graph.output[0].type.tensor_type.shape.dim[0].dim_param = "N"
    path = tmp_path / "dynamic.onnx"
    onnx.save(model, path)
    return path


def test_dynamic_batch_compiles_and_names_shape(dynamic_path, tmp_path, capsys):
    lib = tmp_path / "dynamic.so"
    assert main(["compile", str(dynamic_path), "-o", str(lib)]) == 0
    err = capsys.readouterr().err
    assert "input image=N,3,40,40 is dynamic" in err and "--shape image=1,3,40,40" in err
    vm = relax.VirtualMachine(tvm.runtime.load_module(str(lib)), tvm.cpu())
    image = np.random.default_rng(0).standard_normal((2, 3, 40, 40)).astype(np.float32)
    assert vm["main"](tvm.runtime.tensor(image)).numpy().shape == (2, 3, 20, 20)


def test_tune_on_a_dynamic_model_is_an_error_naming_shape(dynamic_path, tmp_path, capsys):
    _fails(["tune", str(dynamic_path), "--log", str(tmp_path / "t.jsonl")], capsys, "--shape image=1,3,40,40")


def test_report_previews_what_compile_decides(demo_path, tmp_path, capsys):
    """``report --target llvm`` prints the table ``compile`` prints (this CPU's cost model),
    unlike the default report (the 32-lane HTP model)."""
    assert main(["compile", str(demo_path), "-o", str(tmp_path / "m.so")]) == 0
    compiled = capsys.readouterr().out
    assert main(["report", str(demo_path), "--target", "llvm"]) == 0
    previewed = capsys.readouterr().out
    assert previewed.strip() in compiled
    assert main(["report", str(demo_path)]) == 0
    assert capsys.readouterr().out.strip() not in compiled


def test_bad_tuning_log_lines_warn_once_in_one_line(demo_path, tmp_path, capsys):
    log = tmp_path / "bad.jsonl"
    log.write_text("not json\n")
    assert main(["report", str(demo_path), "--target", "llvm", "--tuning-log", str(log)]) == 0
    err = capsys.readouterr().err
    assert err.count("bad.jsonl:1: skipped: not JSON") == 1 and len(err.strip().splitlines()) == 1, err


def test_report_wording(demo_path, capsys):
    assert main(["report", str(demo_path), "--target", "llvm"]) == 0
    out = capsys.readouterr().out
    assert "(unchanged)" in out and "x fewer)" not in out and "()" not in out
    assert main(["report", str(demo_path)]) == 0
    out = capsys.readouterr().out
    assert "back to plain layout: " in out and " lv" not in out and " gv" not in out


def test_hexagon_compile_summarizes_refusals_per_reason(demo_path, tmp_path, capsys):
    assert main(["compile", str(demo_path), "--target", "hexagon", "-o", str(tmp_path / "m.o")]) == 0
    captured = capsys.readouterr()
    assert "is a float model" in captured.err and f"tvm-s2d quantize {demo_path}" in captured.err  # the way on
    out = captured.out
    assert "HexagonConvs: 0 of 5 applied\n  not applied, not an integer conv (Hexagon kernels are uint8 x int8 -> int32):" \
           " stem, body1, body2, dw, tail\n" in out
    assert out.count("not an integer conv") == 1  # one line for all five convs


def test_demo_runs_the_quantized_demo_whole_on_the_emulator(tmp_path, capsys):
    from helpers import require_hexagon_tools

    require_hexagon_tools()
    out = tmp_path / "demo.json"
    assert main(["demo", "--size", "16", "--repeat", "1", "--json", str(out), "--hexagon-size", "32"]) == 0
    text = capsys.readouterr().out
    assert "Hexagon (qemu-hexagon, v66 + HVX)" in text and "bit-exact vs CPU: NO" not in text
    rows = json.loads(out.read_text())["hexagon"]
    assert set(rows) == {"TVM's default lowering", "tvm-s2d, no rewrite", "tvm-s2d, default"}
    assert all(row["matches_cpu"] for row in rows.values())
    assert rows["tvm-s2d, default"]["packets"] * 5 < rows["TVM's default lowering"]["packets"]


def test_attribution_credits_each_step():
    from tvm_s2d.report import attribution

    assert attribution(120.0, 10.0, 9.0, (0, 5)) == (
        "what each step gained: tvm-s2d's kernels and layouts 12.00x faster (TVM's default -> tvm-s2d without the"
        " rewrite); the rewrite nothing: 0 of 5 convs rewritten (the build's cost model chose none here; the two builds"
        " are the same, 1.11x faster is measurement noise)")
    assert "the rewrite 1.04x fewer packets, 4 of 5" in attribution(2.8e6, 39998, 38283, (4, 5), unit="fewer packets")
    assert "the rewrite 1.25x slower" in attribution(10.0, 4.0, 5.0)


def test_the_demo_verdict_names_who_wins():
    from tvm_s2d.demo import verdict

    assert verdict({"tvm-s2d": 10.0, "TVM default": 100.0, "ONNX Runtime": 20.0}) == \
        "fastest: tvm-s2d (10.00x faster than TVM default, 2.00x faster than ONNX Runtime)"
    losing = verdict({"tvm-s2d": 10.0, "TVM default": 100.0, "ONNX Runtime": 5.0})
    assert losing.startswith("fastest: ONNX Runtime (tvm-s2d 10.00x faster than TVM default, 2.00x slower than ONNX Runtime")


def test_quantize_writes_a_qdq_model_that_matches_onnxruntime_semantics(demo_path, tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    from tvm_s2d.quantize import is_quantized
    from tvm_s2d.zoo import run_onnxruntime

    calibration = tmp_path / "calibration"
    calibration.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        np.save(calibration / f"{i}.npy", rng.standard_normal((1, 3, 40, 40)).astype(np.float32))
    out = tmp_path / "demo_q.onnx"
    assert main(["quantize", str(demo_path), "-o", str(out), "--calibration", str(calibration)]) == 0
    captured = capsys.readouterr()
    assert "wrote" in captured.out and f"tvm-s2d run {out} --target hexagon" in captured.out
    assert "preprocessing" in captured.err and "3 samples" in captured.err
    quantized = onnx.load(out)
    assert is_quantized(quantized) and not is_quantized(onnx.load(demo_path))
    # per channel by default: a weight scale per output channel; --per-tensor: one
    scales = [init for init in quantized.graph.initializer if init.name.endswith("_scale") and len(init.dims) == 1]
    assert scales and max(init.dims[0] for init in scales) > 1
    image = rng.standard_normal((1, 3, 40, 40)).astype(np.float32)
    (ref,) = run_onnxruntime(demo_path, {"image": image})
    (got,) = run_onnxruntime(out, {"image": image})
    assert np.abs(got - ref).max() < 0.1 * np.abs(ref).max()  # a quantization of the same model
    per_tensor = tmp_path / "demo_t.onnx"
    assert main(["quantize", str(demo_path), "-o", str(per_tensor), "--random", "2", "--per-tensor"]) == 0
    weight_scales = [i for i in onnx.load(per_tensor).graph.initializer if i.name.endswith(".weight_scale")]
    assert weight_scales and all(len(i.dims) == 0 for i in weight_scales)


@pytest.mark.parametrize("argv,message", [
    (["--calibration", "{tmp}/none"], "not a directory"),
    (["--calibration", "{tmp}/empty"], "no .npy or .npz files"),
    (["--calibration", "{tmp}/wrong"], "the model takes [1, 3, 40, 40]"),
    (["--random", "0"], "--random must be at least 1"),
    (["-o", "{tmp}/nodir/q.onnx"], "does not exist"),
])
def test_quantize_bad_input_is_one_line(demo_path, tmp_path, capsys, argv, message):
    (tmp_path / "empty").mkdir()
    (tmp_path / "wrong").mkdir()
    np.save(tmp_path / "wrong" / "0.npy", np.zeros((1, 3, 8, 8), np.float32))
    argv = [a.format(tmp=tmp_path) for a in argv]
    assert main(["quantize", str(demo_path), *([] if "-o" in argv else ["-o", str(tmp_path / "q.onnx")]), *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_bench_on_the_cpu_times_three_forms_and_onnxruntime(demo_path, tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    out, chart = tmp_path / "bench.json", tmp_path / "bench.png"
    assert main(["bench", str(demo_path), "--repeat", "2", "--json", str(out), "--plot", str(chart)]) == 0
    text = capsys.readouterr().out
    data = json.loads(out.read_text())
    assert list(data["rows"]) == ["TVM default", "tvm-s2d, no rewrite", "tvm-s2d", "ONNX Runtime"]
    assert all(row["ok"] and row["value"] > 0 for row in data["rows"].values())
    assert "rel diff" in data["rows"]["tvm-s2d"]["check"] and "what each step gained" in text
    assert data["rewritten"][1] == 5 and chart.read_bytes()[:4] == b"\x89PNG"


def test_every_command_line_in_the_readme_parses():
    """The README's command lines (in its bash blocks) are what the parser takes: a renamed
    option or command fails here, not in a user's shell."""
    import re
    import shlex
    from pathlib import Path

    from tvm_s2d.cli import build_parser

    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)```", text, flags=re.S)
    lines = [line.split("   #")[0].split("  #")[0].strip() for block in blocks for line in block.splitlines()]
    commands = [line for line in lines if line.startswith("tvm-s2d ")]
    assert len(commands) >= 15
    parser = build_parser()
    for line in commands:
        words = [w for w in shlex.split(line)[1:] if not (w.startswith("[") or w.endswith("]"))]  # [optional] parts
        parser.parse_args(words)  # exits (fails the test) on anything the parser does not take
