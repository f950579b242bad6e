"""MetaSchedule as the alternative kernel schedule (schedules/ and tuner/metaschedule.py): tuning the s2d
pipeline's own kernels works on this platform (builder without the tensor-intrinsic import,
target with num-cores), the database is applied at compile time, exactly, and a missing or
broken database is a clear error."""

import numpy as np
import pytest
import tvm
from tvm import relax

import tvm_s2d  # noqa: F401  (registers the pipeline)
from helpers import assert_same
from tvm_s2d.cli import main
from tvm_s2d.geometry import Conv2dSpec
from tvm_s2d.passes import ScheduleConvs
from tvm_s2d.schedules import metaschedule, x86
from tvm_s2d.tuner import metaschedule as ms_tuning
from tvm_s2d.targets import host_target
from tvm_s2d.tuner.measure import layer_input, layer_module
from tvm_s2d.tuning.workload import Layer

LAYER = Layer("stem", Conv2dSpec(1, 3, 8, (17, 15), (3, 3), (2, 2), padding=(1, 1, 1, 1), itemsize=4), "NCHW", "float32")


def _run(mod, x, target, **options):
    with tvm.transform.PassContext(opt_level=3):
        ex = tvm.compile(mod, target, relax_pipeline=relax.get_pipeline("s2d", **options))
    return relax.VirtualMachine(ex, tvm.cpu())["main"](tvm.runtime.tensor(x)).numpy()


def test_tuning_target_adds_num_cores():
    target = metaschedule.tuning_target(host_target())
    assert int(target.attrs["num-cores"]) >= 1
    assert metaschedule.tuning_target(target) is target


@pytest.mark.slow
def test_tune_then_apply_the_database(tmp_path):
    mod, target, work = layer_module(LAYER), host_target(), tmp_path / "ms"
    ms_tuning.tune(mod, target, work, trials=4, block=2)
    assert all((work / name).stat().st_size > 0 for name in metaschedule.DATABASE_FILES)

    fused = ms_tuning.kernels(mod, target, block=2)
    with target:
        applied = metaschedule.ApplyDatabase(work)(fused)
    convs = [gv.name_hint for gv, f in applied.functions.items()
             if isinstance(f, tvm.tirx.PrimFunc) and "conv2d" in gv.name_hint]
    assert convs and all(applied[name].attrs.get("tirx.is_scheduled") for name in convs)
    schedule = ScheduleConvs(target)
    schedule(applied)
    assert schedule.scheduled == []  # ScheduleConvs leaves the tuned kernels alone
    assert any(x86.find_conv(fused[name]) for name in convs)

    x = layer_input(LAYER)
    expected = _run(mod, x, target, block=2)  # ScheduleConvs' kernels
    assert_same(_run(mod, x, target, block=2, metaschedule=str(work)), expected, "float32")
    with tvm.transform.PassContext(opt_level=3, disabled_pass=["SpaceToDepthConv2d"]):
        ex = tvm.compile(mod, target, relax_pipeline=relax.get_pipeline("s2d"))
    assert_same(relax.VirtualMachine(ex, tvm.cpu())["main"](tvm.runtime.tensor(x)).numpy(), expected, "float32")


def test_missing_or_broken_database_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="not a MetaSchedule database.*missing database_workload.json"):
        relax.get_pipeline("s2d", metaschedule=str(tmp_path))
    for name in metaschedule.DATABASE_FILES:
        (tmp_path / name).write_text("{not json\n")
    with pytest.raises(ValueError, match="unreadable MetaSchedule database"):
        metaschedule.open_database(tmp_path)


def test_cli_refuses_metaschedule_over_rpc(tmp_path, capsys):
    code = main(["tune", "demo", "--size", "16", "--log", str(tmp_path / "x.jsonl"), "--metaschedule", str(tmp_path),
                 "--rpc-tracker", "127.0.0.1:9"])
    assert code == 2 and "does not take --rpc-tracker" in capsys.readouterr().err
    np.testing.assert_equal(list(tmp_path.iterdir()), [])
