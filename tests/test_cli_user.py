"""Issue 24's loose ends on the command line: hints that name the target, tuning logs for
another target, --shape over a static shape, unwritable logs, compile --check; and the ONNX
node names the tables give kernels."""

import json

import onnx
import pytest

from helpers import qdq_chain, quantize_float_net, require_hexagon_tools
from tvm_s2d.cli import main
from tvm_s2d.demo import demo_model
from tvm_s2d.tuning.log import Record, TuningLog
from tvm_s2d.tuning.space import Config


@pytest.fixture
def demo_path(tmp_path):
    path = tmp_path / "demo.onnx"
    onnx.save(demo_model(40), path)
    return path


def _one_line(err: str, kind: str = "error") -> str:
    lines = [line for line in err.splitlines() if kind in line]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.mark.parametrize("target,logged", [("llvm", "hexagon-hexagonv66"), ("hexagon", "llvm -mcpu=somecpu")])
def test_a_tuning_log_for_another_target_is_one_warning(demo_path, tmp_path, capsys, target, logged):
    log = tmp_path / "other.jsonl"
    TuningLog(log).append(Record("w", logged, Config(None, 1, 4).to_json(), 1.0, "s"))
    assert main(["report", str(demo_path), "--target", target, "--tuning-log", str(log)]) == 0
    line = _one_line(capsys.readouterr().err, "warning")
    assert f"has no records for {'hexagon-hexagonv66' if target == 'hexagon' else 'llvm -mcpu='}" in line
    assert f"only for {logged}" in line and ("--target hexagon" in line) == (target == "hexagon")


def test_a_shape_that_replaces_a_static_one_is_said(demo_path, capsys):
    assert main(["report", str(demo_path), "--shape", "image=1,3,48,48"]) == 0
    line = _one_line(capsys.readouterr().err, "warning")
    assert "'image', 1,3,48,48, replaces the model's static 1,3,40,40 (dims 2, 3)" in line
    assert main(["report", str(demo_path), "--shape", "image=1,3,40,40"]) == 0  # the same shape: nothing to say
    assert "warning" not in capsys.readouterr().err


def test_the_dynamic_note_says_the_build_is_slower(demo_path, tmp_path, capsys):
    model = demo_model(40)
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_param = "N"
    onnx.save(model, tmp_path / "dynamic.onnx")
    assert main(["report", str(tmp_path / "dynamic.onnx")]) == 0
    note = next(line for line in capsys.readouterr().err.splitlines() if line.startswith("note:"))
    assert "many times slower than built with a static shape, e.g. --shape image=1,3,40,40" in note


@pytest.mark.parametrize("log,message", [
    ("/proc/t.jsonl", "--log /proc/t.jsonl cannot be created ("),
    ("{tmp}/file/t.jsonl", "cannot be written: {tmp}/file is a file, not a directory"),
])
def test_an_unwritable_tuning_log_is_one_line_before_tuning(demo_path, tmp_path, capsys, log, message):
    (tmp_path / "file").write_text("")
    assert main(["tune", str(demo_path), "--log", log.format(tmp=tmp_path)]) == 2
    assert message.format(tmp=tmp_path) in _one_line(capsys.readouterr().err)


def test_a_writable_log_is_not_left_behind_by_the_check(tmp_path):
    from tvm_s2d.cli import check_log_path

    check_log_path(str(tmp_path / "new" / "t.jsonl"))
    assert not (tmp_path / "new" / "t.jsonl").exists()


@pytest.mark.parametrize("hexagon", [False, True])
def test_the_tune_hint_names_the_target(demo_path, tmp_path, capsys, monkeypatch, hexagon):
    import tvm_s2d.tuner.measure as measure
    import tvm_s2d.tuner.tuner as tuner

    monkeypatch.setattr(tuner, "tune", lambda *a, **k: ["row"])
    monkeypatch.setattr(tuner, "table", lambda rows: "the table")
    monkeypatch.setattr(measure, "HexagonMeasurer", lambda: None)
    monkeypatch.setattr(measure, "LocalMeasurer", lambda target: None)
    log = tmp_path / "t.jsonl"
    assert main(["tune", str(demo_path), "--log", str(log), *(["--target", "hexagon"] if hexagon else [])]) == 0
    hint = next(line for line in capsys.readouterr().out.splitlines() if "apply with" in line)
    if hexagon:
        assert f"tvm-s2d compile MODEL --target hexagon --tuning-log {log} -o MODEL.o" in hint
    else:
        assert f"tvm-s2d compile MODEL --tuning-log {log} or" in hint


@pytest.mark.parametrize("argv,message", [
    (["--check"], "--check runs the model on the Hexagon emulator: it takes --target hexagon"),
    (["--target", "hexagon", "--strict"], "--strict is --check's"),
])
def test_compile_check_options_are_one_line(demo_path, tmp_path, capsys, argv, message):
    out = tmp_path / ("m.o" if "hexagon" in argv else "m.so")
    assert main(["compile", str(demo_path), "-o", str(out), *argv]) == 2
    assert message in _one_line(capsys.readouterr().err)


@pytest.mark.parametrize("strict", [False, True])
def test_compile_check_warns_when_the_run_is_not_bit_exact(tmp_path, capsys, monkeypatch, strict):
    import tvm_s2d.emulator.model as model

    class Differs:
        matches_cpu = False
        first_difference = {"kernel": "hvx_body"}

        def headline(self):
            return "1 packets"

    monkeypatch.setattr(model, "run_model", lambda *a, **k: Differs())
    onnx.save(qdq_chain(1, (9, 10), "int8", (1,)), tmp_path / "q.onnx")
    argv = ["compile", str(tmp_path / "q.onnx"), "--target", "hexagon", "-o", str(tmp_path / "q.o"), "--check"]
    assert main(argv + (["--strict"] if strict else [])) == (1 if strict else 0)
    line = _one_line(capsys.readouterr().err, "warning")
    assert "does not compute the model bit-exactly" in line and "first kernel that differs: hvx_body" in line


def test_onnx_node_names_reach_every_binding_and_kernel(tmp_path):
    from tvm_s2d.emulator.model import is_movement, lower_for_hexagon
    from tvm_s2d.onnx_import import from_onnx
    from tvm_s2d.onnx_names import kernel_nodes, onnx_names
    from tvm_s2d.pipeline import S2DPipeline

    pytest.importorskip("onnxruntime")
    mod = from_onnx(quantize_float_net(tmp_path, "QDQ", True))
    names = onnx_names(mod)
    assert {"stem", "body", "pointwise", "tail"} <= set(names.values())
    assert names.ops["stem"] == "Conv" and names.nodes_in("hvx_requantize_stem_2_s2d_out1") == ["stem"]
    bound = [b.var.name for block in mod["main"].body.blocks for b in block.bindings]
    assert "stem" in bound and all(name in names for name in bound)  # every binding named after its node
    nodes = kernel_nodes(lower_for_hexagon(mod, S2DPipeline(), []), names, movement=is_movement)
    kernels = [found for found in nodes.values()]
    assert [found for found in kernels if found and found[0] in ("stem", "body", "pointwise", "tail")]
    # the Mul of two quantized tensors is an integer product on one HVX kernel, named after its quantize
    assert [found for found in kernels if found == ["m2_QuantizeLinear"]]
    assert sum(bool(found) for found in kernels) >= len(kernels) - 1, kernels


def test_run_names_each_kernel_by_its_onnx_nodes(tmp_path, capsys):
    require_hexagon_tools()
    pytest.importorskip("onnxruntime")
    path = quantize_float_net(tmp_path, "QDQ", True)
    assert main(["run", str(path), "--json", str(tmp_path / "run.json")]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split()[:3] == ["ONNX", "node", "kernel"]
    assert any(line.startswith("stem ") and "hvx_stem " in line for line in table)
    assert any(line.startswith("body ") and "hvx_pad_" in line for line in table)  # a pad: its conv's
    kernels = json.loads((tmp_path / "run.json").read_text())["kernels"]
    assert all("nodes" in k for k in kernels) and sum(bool(k["nodes"]) for k in kernels) >= len(kernels) - 1


def test_hvx_refusals_state_the_refused_case_and_what_is_taken():
    """Each reason names what was refused and what the HVX kernel takes (the max pool's once read
    "takes square pools of stride 1 or 2" for a 3x3 stride-2 pool; its ceil mode is taken now)."""
    from tvm import relax

    from tvm_s2d.passes import HexagonMovement
    from tvm_s2d.targets import hexagon_target

    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((1, 16, 16, 8), "uint8"))
    y = relax.Var("y", relax.TensorType((1, 16, 16, 8), "uint8"))
    wide = relax.Var("wide", relax.TensorType((1, 7, 7, 200), "uint8"))
    with bb.function("main", [x, y, wide]):
        with bb.dataflow():
            pool = relax.op.nn.max_pool2d
            outs = [bb.emit(pool(x, [3, 3], [2, 2], ceil_mode=True, layout="NHWC")),
                    bb.emit(pool(x, [3, 2], [1, 1], layout="NHWC")),
                    bb.emit(pool(wide, [2, 2], [3, 3], layout="NHWC")),
                    bb.emit(relax.op.concat([x, y, x], axis=3))]
            out = bb.emit_output(relax.Tuple(outs))
        bb.emit_func_output(out)
    movement = HexagonMovement(target=hexagon_target())
    movement(bb.get())
    reasons = [o.reason for o in movement.outcomes if not o.applied]
    assert [o.applied for o in movement.outcomes][:1] == [True]  # 3x3/2 in ceil mode: taken
    assert "max pool 3x2 stride 1x1: the HVX kernel takes square pools (KxK) only" in reasons
    assert ("concat of 8+8+8 channels: the HVX kernels take two tensors of 1, 2, 4, ... 64 channels alike, or any number"
            " of at least 16 channels each") in reasons
    assert not [r for r in reasons if "200 channels" in r]  # any stride, any channel count: taken


def test_a_long_silent_step_still_reports_that_it_runs():
    """LLVM's code generation reports nothing for a minute on a real model: ``Progress.waiting``
    says the step started, then that it still runs, until it ends."""
    import io
    import time

    from tvm_s2d.cli.commands import Progress

    out = io.StringIO()
    progress = Progress(file=out)
    with progress.waiting("build: TVM's code generation", every=0.05):
        time.sleep(0.3)
    lines = out.getvalue().splitlines()
    assert lines[0].endswith("build: TVM's code generation")
    assert len(lines) >= 3 and all(line.split("] ")[1].startswith("build: still running (") for line in lines[1:])
    time.sleep(0.15)
    assert out.getvalue().splitlines() == lines  # quiet once the step is over


def test_every_silent_step_beats_until_the_next_line_or_close():
    """Regression (tried as a new user on MnasNet: 9-11 s without a line while the CPU reference
    built, 6 s in a pipeline stage): any step, not only the ones wrapped in ``waiting``, says it
    still runs every ``beat`` seconds; a new line restarts the count; ``close`` ends it."""
    import io
    import time

    from tvm_s2d.cli.commands import Progress

    out = io.StringIO()
    progress = Progress(file=out, beat=0.05)
    progress("running the CPU build")
    time.sleep(0.3)
    progress("comparing with ONNX Runtime (optimizations off)")
    time.sleep(0.2)
    progress.close()
    lines = [line.split("] ")[1] for line in out.getvalue().splitlines()]
    first, second = lines.index("running the CPU build"), lines.index("comparing with ONNX Runtime (optimizations off)")
    assert second - first >= 3 and all(line.startswith("running the CPU build: still running (")
                                       for line in lines[first + 1 : second])
    assert len(lines) > second + 1 and lines[-1].startswith("comparing with ONNX Runtime (optimizations off): still")
    count = len(out.getvalue().splitlines())
    time.sleep(0.15)
    assert len(out.getvalue().splitlines()) == count  # closed: quiet
