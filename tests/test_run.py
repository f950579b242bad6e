"""The whole-model runner: every kernel of a compiled model under qemu-hexagon, chained on
real tensors, bit-exact against the CPU build and ONNX Runtime (optimizations off)."""

import json

import numpy as np
import onnx
import pytest

from helpers import qdq_chain, quantize_float_net, require_hexagon_tools
from tvm_s2d.cli import main
from tvm_s2d.emulator.model import KINDS, KernelRun, kernel_kind, interpret, run_model
from tvm_s2d.onnx_import import ModelError


@pytest.fixture(autouse=True)
def _tools():
    require_hexagon_tools()


@pytest.fixture(scope="module")
def chain_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("run") / "chain.onnx"
    onnx.save(qdq_chain(1, (15, 18), "int8", (1, 2, 1)), path)
    return path


@pytest.mark.parametrize("rewrite", [False, True])
def test_a_quantized_chain_runs_whole_and_bit_exact(chain_path, rewrite):
    run = run_model(chain_path, rewrite=rewrite, block=2, move_cost=1000.0)
    assert run.matches_cpu  # bit-exact
    # integer requantization: at most a step per layer from the float semantics, on few values
    assert run.onnxruntime["max_steps"] <= 3 and run.onnxruntime["fraction_differing"] < 0.05
    kinds = [k.kind for k in run.kernels]
    assert set(kinds) <= set(KINDS) and kinds.count("conv") >= 3
    assert sum(k.hvx for k in run.kernels if k.kind == "conv") >= 3  # the vrmpy kernels
    requantize = [k for k in run.kernels if k.kind == "requantize" or k.name.endswith("_requantized")]
    assert len(requantize) == 3 and all(k.hvx for k in requantize)  # integer, on HVX (alone or in the conv's kernel)
    assert run.packets == sum(k.packets for k in run.kernels) and all(k.packets > 0 for k in run.kernels)
    assert run.output.shape == (1, 8, 8, 9) and run.output.dtype == np.uint8
    scalar = run.scalar()
    assert all(not k.hvx for names in scalar.values() for k in run.kernels if k.name in names)
    table = run.table()
    for kind, names in scalar.items():  # every op kind left to TVM is named, once
        assert table.count(f"left to TVM's scalar lowering: {len(names)} {kind} kernel") == 1


def test_float_boundaries_are_listed_but_not_counted(tmp_path):
    path = quantize_float_net(tmp_path, "QDQ", per_channel=True)
    run = run_model(path)
    boundary = [k for k in run.kernels if k.kind == "boundary"]
    assert boundary and boundary[0].name.startswith("fused_quantize")
    assert run.packets == sum(k.packets for k in run.kernels) - sum(k.packets for k in boundary)
    assert run.matches_cpu and run.onnxruntime["max_steps"] <= 4  # four quantized convs


def test_given_inputs_and_json_schema(chain_path, tmp_path, capsys):
    x = np.random.default_rng(3).integers(0, 256, (1, 8, 15, 18)).astype(np.uint8)
    np.save(tmp_path / "x.npy", x)
    out = tmp_path / "run.json"
    assert main(["run", str(chain_path), "--input", f"x={tmp_path / 'x.npy'}", "--json", str(out), "--no-rewrite"]) == 0
    assert "bit-exact against the CPU build: yes" in capsys.readouterr().out
    data = json.loads(out.read_text())
    assert list(data) == ["model", "target", "rewrite", "kernels", "packets", "hvx_share", "macs", "times_limit",
                          "matches_cpu", "first_difference", "onnxruntime", "failures"]
    assert data["macs"] > 0 and 0 < data["hvx_share"] <= 1  # the chain's convs, mostly on HVX
    assert data["times_limit"] == pytest.approx(data["packets"] * 256 / data["macs"])
    assert data["first_difference"] is None  # bit-exact: no kernel differs
    assert data["target"] == "hexagon" and data["rewrite"] is False and data["matches_cpu"] is True
    assert set(data["kernels"][0]) == {"name", "kind", "hvx", "packets", "nodes"}
    assert set(data["onnxruntime"]) == {"max_steps", "fraction_differing"}
    assert data["packets"] == sum(k["packets"] for k in data["kernels"] if k["kind"] != "boundary")


def test_bool_tensors_run_on_the_emulator():
    """A mask (``where`` on a bool constant) reaches a kernel as a bool tensor."""
    import tvm
    from tvm import relax

    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((1, 4, 6, 6), "uint8"))
    mask = np.random.default_rng(0).random((1, 1, 6, 6)) > 0.5
    with bb.function("main", [x]):
        with bb.dataflow():
            y = bb.emit(relax.op.where(relax.const(mask), x, relax.const(np.uint8(7))))
            out = bb.emit_output(y)
        bb.emit_func_output(out)
    with tvm.target.Target({"kind": "llvm"}):
        lowered = tvm.transform.Sequential([relax.transform.LegalizeOps()])(bb.get())
    data = np.random.default_rng(1).integers(0, 256, (1, 4, 6, 6)).astype(np.uint8)
    output, runs = interpret(lowered, [data])
    np.testing.assert_array_equal(output, np.where(mask, data, 7))
    assert len(runs) == 1 and runs[0].packets > 0


@pytest.mark.parametrize("edit,message", [
    (lambda m: m.graph.input[0].type.tensor_type.shape.dim[0].__setattr__("dim_param", "N"), "--shape"),
])
def test_a_model_without_static_shape_names_shape(tmp_path, edit, message):
    model = qdq_chain(1, (8, 8), "int8", (1,))
    edit(model)
    with pytest.raises(ModelError, match=message):
        run_model(model)


def test_bad_inputs_are_one_line(chain_path, tmp_path, capsys):
    np.save(tmp_path / "x.npy", np.zeros((1, 8, 4, 4), np.uint8))
    assert main(["run", str(chain_path), "--input", f"y={tmp_path / 'x.npy'}"]) == 2
    assert "not an input of the model" in capsys.readouterr().err
    assert main(["run", str(chain_path), "--input", f"x={tmp_path / 'x.npy'}"]) == 2
    assert "the model takes uint8 [1, 8, 15, 18]" in capsys.readouterr().err
    assert main(["run", str(chain_path), "--input", "x"]) == 2
    assert "NAME=FILE.npy" in capsys.readouterr().err


@pytest.mark.parametrize("name,expected", [
    ("hvx_conv0", "conv"), ("hvx_conv0_offsets", "conv"), ("hvx_pad_lv3", "movement"), ("hvx_conv1_layout", "movement"),
    ("hvx_s2d_lv2", "movement"), ("fused_reshape_transpose_reshape1_transpose1", "movement"),
    ("hvx_concat_lv27", "movement"), ("hvx_pool_lv10", "other"), ("hvx_lookup_lv4", "elementwise"),
])
def test_kernel_kinds_by_name(name, expected):
    assert kernel_kind(name, [], [((1,), "uint8")], set(), False) == expected
    assert KernelRun(name, expected, name.startswith("hvx_"), 1).kind in KINDS



def test_a_residual_denoiser_runs_its_epilogues_on_hvx_in_one_layout(tmp_path):
    """A tensor read by a conv and by the residual add is requantized once; the width mapping's
    16-channel convs requantize in their own kernel (uint8 NHWC out); the 3-channel output is
    written NCHW, so nothing but the boundary kernels stays scalar."""
    from helpers import load_script
    from tvm_s2d.quantize import quantize_qdq

    bench = load_script("bench_hexagon_models")
    layers = [("head", 3, 16, 3, 1, True, None), ("body", 16, 16, 3, 1, True, "head_out_relu"),
              ("tail", 16, 3, 3, 1, False, None)]
    path = quantize_qdq(bench._net("denoiser", 24, layers), tmp_path / "denoiser.onnx")
    run = run_model(path)
    assert run.matches_cpu and run.onnxruntime["max_steps"] <= 1
    fused = [k for k in run.kernels if k.name.endswith("_requantized")]  # 16-channel width convs: in the conv's kernel
    requantize = [k for k in run.kernels if k.kind == "requantize"]
    assert len(fused) == 2 and len(requantize) == 2 and all(k.hvx for k in requantize)  # the 3-channel tail, the add
    assert all(k.hvx for k in run.kernels if k.kind != "boundary")
    assert [k.name for k in run.kernels if k.kind == "boundary"][-1] == "dequantize"  # no transpose back to NCHW


def test_check_each_names_the_first_kernel_that_differs(chain_path):
    """The diagnosis of a run that is not bit-exact: kernel by kernel against the CPU build,
    the first kernel whose outputs differ (here one value of the third kernel's output is
    changed; every kernel after it differs too)."""
    import tvm_s2d
    from tvm_s2d.emulator.model import Run, first_difference, lower_for_hexagon, run_on_cpu
    from tvm_s2d.pipeline import S2DPipeline

    plain = lower_for_hexagon(tvm_s2d.from_onnx(str(chain_path)), S2DPipeline(hvx=False, block=2, move_cost=1000.0), [])
    x = np.random.default_rng(0).integers(0, 256, (1, 8, 15, 18)).astype(np.uint8)
    reference: dict = {}
    interpret(plain, [x], run=run_on_cpu, trace=reference)
    calls = []

    def corrupt_third(func, inputs, outputs, name):
        run = run_on_cpu(func, inputs, outputs, name)
        calls.append(name)
        if len(calls) == 3:
            run.outputs[0].reshape(-1)[5] += 1
        return Run(run.outputs, 0)

    trace: dict = {}
    interpret(plain, [x], run=corrupt_third, trace=trace)
    assert first_difference(plain, reference, reference) is None
    found = first_difference(plain, trace, reference)
    assert found["binding"] == list(reference)[2] and found["kernel"] == calls[2]
    assert found["differing"] == 1 and found["max_diff"] in (1, 255)


def test_bench_on_hexagon_counts_three_forms_and_credits_each(chain_path, tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert main(["bench", str(chain_path), "--target", "hexagon", "--json", str(out)]) == 0
    captured = capsys.readouterr()
    data = json.loads(out.read_text())
    assert data["unit"] == "packets" and list(data["rows"]) == ["TVM default", "tvm-s2d, no rewrite", "tvm-s2d"]
    packets = [row["value"] for row in data["rows"].values()]
    assert all(row["ok"] for row in data["rows"].values()) and packets[0] > packets[1] > 0  # HVX kernels pay
    assert data["gains"].startswith("what each step gained: tvm-s2d's kernels and layouts ")
    assert f"{packets[0] / packets[1]:.2f}x fewer packets" in data["gains"]
    assert "kernel" in captured.err and "lowering for Hexagon" in captured.err  # progress while it runs


def test_a_pass_that_fails_in_the_cpu_reference_alone_is_named_too(chain_path, monkeypatch):
    """Regression: the CPU reference build's passes (the HVX kernels' plain loops) failed
    silently: a plain kernel's error left HexagonRequantize out of that build alone and ``run``
    still said bit-exact with no word of it."""
    from tvm_s2d.passes.hexagon import requantize

    rewrite = requantize.rewrite_functions

    def plain_explodes(mod, rewriter):
        if not rewriter.rule.hvx:  # the plain loops' build
            raise AttributeError("'Tensor' object has no attribute 'requantized_shape'")
        return rewrite(mod, rewriter)

    monkeypatch.setenv("TVM_S2D_STRICT", "0")
    monkeypatch.setattr(requantize, "rewrite_functions", plain_explodes)
    run = run_model(chain_path, onnxruntime=False)
    assert run.failures == ["HexagonRequantize in the CPU reference (the HVX kernels' plain loops): failed: AttributeError: "
                            "'Tensor' object has no attribute 'requantized_shape'"], run.failures
    assert "a pass failed, its changes left out of the build: HexagonRequantize in the CPU reference" in run.table()
    assert run.matches_cpu  # the reference computes the model's integers either way


def test_a_pass_that_fails_is_named_by_run(chain_path, monkeypatch):
    """A pass that fails is left out of the build (the guard), and ``run`` says so: MobileNetV3
    ran at 4% HVX with nothing but the scalar kernels to tell why."""
    from tvm_s2d.passes.hexagon import requantize

    def explode(mod, rewriter):
        raise AttributeError("module 'tvm.relax' has no attribute 'Constant'")

    monkeypatch.setenv("TVM_S2D_STRICT", "0")
    monkeypatch.setattr(requantize, "rewrite_functions", explode)
    run = run_model(chain_path, onnxruntime=False)
    assert run.failures == ["HexagonRequantize: failed: AttributeError: module 'tvm.relax' has no attribute 'Constant'"]
    assert "a pass failed, its changes left out of the build: HexagonRequantize: failed: AttributeError" in run.table()
    assert json.loads(run.to_json())["failures"] == run.failures
    assert run.matches_cpu  # both builds without the pass


def test_kernels_compiled_from_threads_are_the_same_code():
    """Regression: prefetch builds kernels in two threads, and TVM's LLVM options (the target's
    ``-enable-pipeliner=false``) are process-wide: compiles from two threads, even behind a lock,
    sometimes ran with the pipeliner on (the stem's fused kernel: 2 of 8 compiles 4.5 KB more
    assembly, 18.3k packets instead of 15.9k, cached as the kernel's program). Kernels' code is
    now generated in one thread."""
    from concurrent.futures import ThreadPoolExecutor

    from tvm_s2d.emulator import qemu
    from tvm_s2d.schedules.hexagon.lanes import PackedConv
    from tvm_s2d.schedules.hexagon.lanes_fused import lanes_requantized

    func = lanes_requantized(PackedConv(1, (97, 25), 12, 32, (3, 2), (2, 1)), 128, 0, 255, "uint8")
    alone = qemu.kernel_assembly(func)
    with ThreadPoolExecutor(2) as pool:
        codes = list(pool.map(lambda _: qemu.kernel_assembly(func), range(10)))
    assert all(code == alone for code in codes), sorted({len(code) for code in codes})


def test_programs_are_cached_by_body_and_shapes(tmp_path, monkeypatch):
    """A kernel's linked program is cached by its body and shapes, not its name; a prefetched
    build is the one ``build_program`` returns; ``TVM_S2D_PROGRAM_CACHE=0`` builds afresh."""
    from tvm import te

    from tvm_s2d.emulator import qemu

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))

    def kernel(n):
        x = te.placeholder((n,), "uint8", name="x")
        return te.create_prim_func([x, te.compute((n,), lambda i: x[i] + x[i], name="y")])

    x = np.arange(200, dtype=np.uint8)
    programs = tmp_path / "tvm-s2d" / "programs"
    first = qemu.run_kernel(kernel(200), [x], [((200,), "uint8")], name="a")
    second = qemu.run_kernel(kernel(200), [x], [((200,), "uint8")], name="b")  # another name, one body
    assert len(list(programs.iterdir())) == 1
    np.testing.assert_array_equal(first.outputs[0], x + x)
    np.testing.assert_array_equal(second.outputs[0], first.outputs[0])
    assert second.packets == first.packets > 0
    qemu.prefetch(kernel(100), [((100,), "uint8")], [((100,), "uint8")])
    program = qemu.build_program(kernel(100), [((100,), "uint8")], [((100,), "uint8")])
    assert program.path.parent.parent == programs and len(list(programs.iterdir())) == 2
    qemu.cancel_prefetched()
    monkeypatch.setenv("TVM_S2D_PROGRAM_CACHE", "0")
    fresh = qemu.run_kernel(kernel(200), [x], [((200,), "uint8")])
    assert len(list(programs.iterdir())) == 2
    np.testing.assert_array_equal(fresh.outputs[0], x + x)
