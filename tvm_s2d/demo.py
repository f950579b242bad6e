"""The built-in example: a small image-enhancement network with low-channel convs.

Layers (input ``1 x 3 x S x S``, default ``S = 1024``):

* ``stem``: 3 -> 8, 3x3, stride 2 (a strided stem), bias, ReLU
* ``body1``, ``body2``: 8 -> 8, 3x3 at ``S/2 x S/2`` (the seed guideline's layer), a residual add
* ``dw``: depthwise 3x3 (grouped: refused by the rewrite, kept to show a refusal)
* ``tail``: 8 -> 3, 3x3 (a 3-channel output tail)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import tvm
from onnx import TensorProto, helper, numpy_helper

from .onnx_import import from_onnx
from .bench import compile_model, median_ms, onnxruntime_run, verdict
from .report import attribution, explain
from .targets import host_target, use_all_cores

LAYERS = (
    # name, input, output, cin, cout, kernel, stride, groups, nodes after the conv
    ("stem", "image", "stem_out", 3, 8, 3, 2, 1, [("Relu", ["stem_out"], "stem_act")]),
    ("body1", "stem_act", "body1_out", 8, 8, 3, 1, 1, [("Relu", ["body1_out"], "body1_act")]),
    ("body2", "body1_act", "body2_out", 8, 8, 3, 1, 1, [("Add", ["body2_out", "stem_act"], "res"), ("Relu", ["res"], "res_act")]),
    ("dw", "res_act", "dw_out", 8, 8, 3, 1, 8, [("Relu", ["dw_out"], "dw_act")]),
    ("tail", "dw_act", "output", 8, 3, 3, 1, 1, []),
)


def demo_model(size: int = 1024, seed: int = 0) -> onnx.ModelProto:
    """The demo network as an ONNX model with seeded random weights."""
    rng = np.random.default_rng(seed)
    nodes, inits = [], []
    for name, src, dst, cin, cout, k, stride, groups, after in LAYERS:
        fan_in = cin // groups * k * k
        w = (rng.standard_normal((cout, cin // groups, k, k)) / np.sqrt(fan_in)).astype(np.float32)
        inits += [numpy_helper.from_array(w, name + ".weight"),
                  numpy_helper.from_array((0.1 * rng.standard_normal(cout)).astype(np.float32), name + ".bias")]
        nodes.append(helper.make_node(
            "Conv", [src, name + ".weight", name + ".bias"], [dst], name=name,
            kernel_shape=[k, k], strides=[stride, stride], pads=[k // 2] * 4, group=groups,
        ))
        nodes += [helper.make_node(op, inputs, [output]) for op, inputs, output in after]
    half = (size + 1) // 2
    graph = helper.make_graph(
        nodes, "tvm_s2d_demo",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, size, size])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 3, half, half])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="tvm-s2d")
    onnx.checker.check_model(model)
    return model


#: The demo shows the rewrite the HTP / HVX cost model chooses (32-channel lanes); on an LLVM CPU
#: target the default cost model (lane width 1, strided convs charged) keeps most convs as they are.
LANE_WIDTH = 32


def run_demo(size: int = 1024, block=None, repeat: int = 5, out=print) -> dict:
    """On this CPU: TVM's default pipeline, the ``"s2d"`` pipeline without and with the
    rewrite, and ONNX Runtime, outputs checked, timed, each step credited with its own gain.
    The rewrite's analytic report for HTP (32-channel lanes) is returned (``report``), for
    the caller to show after the measured results."""
    use_all_cores()  # ONNX Runtime uses them all
    model = demo_model(size)
    mod = from_onnx(model)
    target = host_target()
    out(f"tvm-s2d demo: {model.graph.name}, input 1x3x{size}x{size}\n")

    variants = [compile_model(mod, target, "TVM default", pipeline=False),
                compile_model(mod, target, "tvm-s2d, no rewrite", block, rewrite=False),
                compile_model(mod, target, "tvm-s2d", block)]
    image = np.random.default_rng(1).standard_normal((1, 3, size, size)).astype(np.float32)
    inputs = [tvm.runtime.tensor(image)]
    outputs = [v.vm["main"](*inputs).numpy() for v in variants]
    times = {v.label: median_ms(v, inputs, repeat) for v in variants}
    ort = onnxruntime_run(model, {"image": image}, repeat)
    if ort is not None:
        outputs.append(ort[0])
        times["ONNX Runtime"] = ort[1]
    max_abs = max(float(np.abs(o - outputs[0]).max()) for o in outputs[1:])
    scale = float(np.abs(outputs[0]).max())
    agree = all(np.allclose(o, outputs[0], rtol=1e-4, atol=1e-5 * scale) for o in outputs[1:])
    out(f"On this CPU (llvm -mcpu={target.attrs['mcpu']}, float32, measured):")
    out(f"outputs agree: {'yes' if agree else 'NO'} (max |difference| {max_abs:.2e}, output scale {scale:.2e})")
    compile_s = {v.label: v.compile_seconds for v in variants}
    for label, ms in times.items():
        built = f"compile {compile_s[label]:5.1f} s" if label in compile_s else f"{'':15s}"
        out(f"{label:20s} {built}   run {ms:8.2f} ms (median of {repeat})")
    if ort is None:
        out("ONNX Runtime: not installed (pip install onnxruntime) - not compared")
    out(verdict(times))
    out(attribution(times["TVM default"], times["tvm-s2d, no rewrite"], times["tvm-s2d"], variants[-1].rewritten))
    report = explain(mod, block=block, lane_width=LANE_WIDTH)
    return {"size": size, "agree": agree, "max_abs_diff": max_abs, "run_ms": times, "report": report,
            "rewritten": variants[-1].rewritten}


def htp_report(report, out=print) -> None:
    """The rewrite on 32-channel lanes (Hexagon HTP/HMX), an analytic model: QEMU does not
    emulate HTP, so its gain is computed, not measured."""
    out("\nHexagon HTP (analytic: MACs on 32-channel lanes, both channel counts rounded up to 32; QEMU does not emulate"
        " HTP, so this is computed, not measured):")
    out(str(report))


def run_hexagon_demo(size: int = 64, out=print) -> dict | None:
    """The demo quantized (ONNX Runtime's ``quantize_static``) and run whole on the Hexagon
    emulator: packets with TVM's default lowering, without and with the rewrite, each
    bit-exact against the CPU build of the same graph. None (and a line saying why) when the
    emulator's tools or ONNX Runtime are missing."""
    import tempfile

    from .emulator.model import run_model
    from .emulator.qemu import EmulatorError, check_tools

    try:
        check_tools()
        import onnxruntime  # noqa: F401
    except (EmulatorError, ImportError) as missing:
        out(f"\nHexagon: skipped ({missing})")
        return None
    from .quantize import quantize_qdq

    out(f"\nHexagon (qemu-hexagon, v66 + HVX): the demo quantized by ONNX Runtime, input 1x3x{size}x{size},"
        " every kernel run, packets:")
    forms = {"TVM's default lowering": dict(tvm_default=True), "tvm-s2d, no rewrite": dict(rewrite=False),
             "tvm-s2d, default": {}}
    rows = {}
    with tempfile.TemporaryDirectory(prefix="s2d-demo-") as tmp:
        path = quantize_qdq(demo_model(size), Path(tmp) / "demo_qdq.onnx")
        for label, options in forms.items():
            run = run_model(path, **options)
            kinds = run.by_kind()
            rows[label] = {"packets": run.packets, "by_kind": kinds, "matches_cpu": run.matches_cpu,
                           "onnxruntime": run.onnxruntime}
            detail = ", ".join(f"{kind} {kinds[kind]:,}" for kind in ("conv", "requantize", "movement", "other") if kinds[kind])
            out(f"  {label:24s} {run.packets:12,d}  ({detail}); bit-exact vs CPU: {'yes' if run.matches_cpu else 'NO'};"
                f" vs ONNX Runtime: {run.onnxruntime['max_steps']} step(s) at most")
    best = min(rows, key=lambda label: rows[label]["packets"])
    base = rows["TVM's default lowering"]["packets"]
    steps = max(row["onnxruntime"]["max_steps"] for row in rows.values())
    out(f"  fewest: {best}, {base / rows[best]['packets']:.1f}x fewer packets than TVM's default lowering"
        + (" (ONNX Runtime differences: integer requantization, at most one step a layer)" if steps else ""))
    out("  " + attribution(base, rows["tvm-s2d, no rewrite"]["packets"], rows["tvm-s2d, default"]["packets"],
                           unit="fewer packets"))
    return rows
