"""One refusal protocol: every pass records (name, applied, reason); the report shows them."""

import json

import numpy as np
import tvm
from tvm import relax

import tvm_s2d
from helpers import conv_module
from helpers import qdq_chain
from tvm_s2d.demo import demo_model
from tvm_s2d.passes import QDQConvToInteger
from tvm_s2d.passes.outcome import Outcome, summary
from tvm_s2d.targets import hexagon_target, host_target


def _passes(mod, target, **options):
    with target:
        return tvm_s2d.explain(mod, **options).passes


def test_qdq_conv_to_integer_says_which_convs_became_integer_and_why_not():
    rule = QDQConvToInteger()
    rule(tvm_s2d.from_onnx(qdq_chain(strides=(1, 1))))
    assert [(o.name, o.applied) for o in rule.outcomes] == [("conv0", True), ("conv1", True)]
    bb = relax.BlockBuilder()  # per-channel activation scales: not a per-tensor scheme
    x = relax.Var("x", relax.TensorType((1, 8, 8, 8), "uint8"))
    with bb.function("main", [x]):
        with bb.dataflow():
            xf = bb.emit(relax.op.dequantize(x, relax.const(np.full(8, 0.1, np.float32)), relax.const(np.zeros(8, np.uint8)), axis=1))
            wf = bb.emit(relax.op.dequantize(relax.const(np.ones((8, 8, 3, 3), np.int8)), relax.const(np.float32(0.1)),
                                             relax.const(np.int8(0)), axis=0))
            out = bb.emit_output(bb.emit(relax.op.nn.conv2d(xf, wf), "c"))
        bb.emit_func_output(out)
    rule(bb.get())
    assert rule.outcomes == [Outcome("c", False, "activation scale or zero point is not per-tensor")]


def test_hexagon_passes_say_why_a_float_model_keeps_tvms_lowering():
    passes = _passes(tvm_s2d.from_onnx(demo_model(32)), hexagon_target(), block=2)
    convs = passes["HexagonConvs"]
    assert len(convs) == 5 and {o.reason for o in convs} == {"not an integer conv (Hexagon kernels are uint8 x int8 -> int32)"}
    movement = {o.reason for o in passes["HexagonMovement"]}
    assert "reshape/permute/reshape: of a float32 tensor (the shuffles take 4-D uint8)" in movement
    assert "ScheduleConvs" not in passes  # not a CPU target: nothing to say


def test_hexagon_passes_apply_to_a_quantized_nhwc_chain():
    from tvm_s2d.emulator.network import quantized_nhwc_chain

    passes = _passes(quantized_nhwc_chain((16, 16), 8), hexagon_target(), block=2, move_cost=1000.0)
    assert passes["HexagonConvs"] and all(o.applied for o in passes["HexagonConvs"])
    assert any(o.applied and "shuffle S2D" in o.reason for o in passes["HexagonMovement"])


def test_schedule_convs_names_what_it_did_to_every_kernel():
    grouped = conv_module((1, 8, 16, 16), np.ones((8, 1, 3, 3), np.float32), padding=1, groups=8,
                          epilogue=lambda y: relax.op.nn.max_pool2d(y, 2, 2))
    passes = _passes(grouped, host_target())
    reasons = [o.reason for o in passes["ScheduleConvs"] if o.applied]
    assert any(r.startswith("conv schedule") for r in reasons) and any("window reduction" in r for r in reasons)
    n = tvm.ir.prim.expr.Var("n", "int64")
    dynamic = _passes(conv_module((n, 8, 16, 16), np.ones((8, 8, 3, 3), np.float32), padding=1), host_target())
    assert {o.reason for o in dynamic["ScheduleConvs"]} == {"dynamic shape: TVM's default lowering"}


def test_the_report_prints_and_serializes_every_pass():
    mod = tvm_s2d.from_onnx(qdq_chain(strides=(1, 1)))
    with host_target():
        report = tvm_s2d.explain(mod)
    text = str(report)
    assert "QDQConvToInteger: 2 of 2 applied" in text and "ScheduleConvs: " in text
    data = json.loads(report.to_json())
    assert {"name": "conv0", "applied": True, "reason": "integer conv (int32 accumulator, one rescale)"} \
        in data["passes"]["QDQConvToInteger"]


def test_summary_groups_refusals_by_reason():
    lines = summary("P", [Outcome("a", True, "done"), Outcome("b", False, "why"), Outcome("c", False, "why")])
    assert lines == ["P: 1 of 3 applied", "  done: a", "  not applied, why: b, c"]
