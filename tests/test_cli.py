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
    assert main(["demo", "--size", "64", "--repeat", "2", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "outputs agree: yes" in text and "refused: grouped conv (groups=8)" in text
    result = json.loads(out.read_text())
    assert result["agree"] and result["report"]["totals"]["rewritten"] == 4
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
