"""Does the zoo (``zoo.py``) compile, run and match? One check per model and form:

* ``float``: the float model compiled for this CPU with the ``"s2d"`` pipeline, against ONNX
  Runtime (``max |diff| / max |ref|``, the tolerance ``FLOAT_TOLERANCE``);
* ``int8 cpu``: the quantized model (QDQ) compiled for this CPU, against ONNX Runtime with
  optimizations off (the ONNX semantics), in output quantization steps;
* ``int8 layers``: the same, layer by layer: each quantized tensor (a ``QuantizeLinear``
  output) computed by the CPU build from ONNX Runtime's own values of the quantized tensors
  it reads, so a step one layer rounds differently is not carried into the next; per layer,
  the bound is one step. Where the two differ, the layer is computed in float64
  (``checks.exact_steps``) to say which is right: the CPU build must give the exact result
  wherever it is more than ``NEAR_TIE`` of a step from a rounding boundary (``inexact`` lists
  where it does not). End to end the steps are not a verdict: ONNX Runtime accumulates in
  float32 and rounds a value that lies a few 1e-6 of a step from a tie the other way (in
  MobileNetV2's first conv, exactly 89.500006 -> 89: one value of 73,728), and a deep net with
  random weights grows that one step into steps on half its outputs; onnx's own reference
  evaluator and ONNX Runtime differ as much on ResNet-18/50 (1-2 steps on 27-37%), and so
  does ONNX Runtime's own default session (its int8 kernels, integer like the CPU build's):
  beyond the bound, the check also gives its steps, and this build's against it;
* ``int8 hexagon``: the quantized model run whole on the Hexagon emulator
  (``emulator.model.run_model``): bit-exact against the CPU build (what it must be; the CPU
  build answers to ONNX Runtime in the forms above), its steps against ONNX Runtime shown.

A check never raises: an exception is its result (``error: <type>: <first line>``), and the
outcomes of passes the pipeline's guard caught are listed (``guarded``), so a zoo run shows
every failure at once. ``scripts/check_zoo.py`` runs the zoo and writes the table.
"""

from __future__ import annotations

import time
import traceback
from dataclasses import asdict, dataclass, field

import numpy as np

from .checks import (FLOAT_TOLERANCE, MAX_FRACTION, MAX_STEPS, NEAR_TIE, exact_steps, output_steps, round_exact,
                     tie_distance)

__all__ = ["FLOAT_TOLERANCE", "MAX_FRACTION", "MAX_STEPS", "Check", "check", "layer_steps"]


@dataclass
class Check:
    model: str
    form: str  # "float", "int8 cpu", "int8 hexagon"
    size: int
    ok: bool = False
    error: str = ""
    seconds: float = 0.0
    rel_diff: float | None = None  # float form
    max_steps: int | None = None  # quantized forms
    fraction_differing: float | None = None
    worst_layer: str = ""  # int8 layers: the quantized tensor with the most steps
    inexact: dict = field(default_factory=dict)  # int8 layers: tensor -> values off the float64 result beyond a near-tie
    near_ties: int = 0  # int8 layers: values where the CPU build and ONNX Runtime differ at a near-tie
    onnxruntime_off: int = 0  # int8 layers: values ONNX Runtime rounds away from the float64 result, beyond a near-tie
    unchecked: int = 0  # int8 layers: differing layers onnx's reference evaluator could not run
    tvm_default: tuple | None = None  # int8 cpu: (steps, fraction) of TVM's own lowering of the same QDQ graph
    # int8 cpu beyond the bound: (steps, fraction) of ONNX Runtime's default session (its int8 kernels) against the
    # same reference, and of the CPU build against that session
    onnxruntime_int8: tuple | None = None
    against_onnxruntime_int8: tuple | None = None
    matches_cpu: bool | None = None  # hexagon form
    packets: int | None = None
    first_difference: dict | None = None
    guarded: list[str] = field(default_factory=list)  # "pass: failed: ..." outcomes
    traceback: str = ""  # of an error, its last frames

    def to_json(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        if self.error:
            return self.error
        if self.form == "float":
            found = f"rel diff {self.rel_diff:.1e}"
        else:
            found = f"{self.max_steps} step(s) on {100 * self.fraction_differing:.2f}%"
            if self.tvm_default is not None:
                found += f" (TVM's default lowering: {self.tvm_default[0]} on {100 * self.tvm_default[1]:.2f}%)"
            if self.onnxruntime_int8 is not None:
                (steps, fraction), (ours, ours_fraction) = self.onnxruntime_int8, self.against_onnxruntime_int8
                found += (f"; ONNX Runtime's int8 session: {steps} on {100 * fraction:.2f}%, this build against it "
                          f"{ours} on {100 * ours_fraction:.2f}%")
            if self.form == "int8 layers":
                found = f"each layer at most {self.max_steps} step(s), on at most {100 * self.fraction_differing:.2f}%"
                found += (f"; {sum(self.inexact.values())} value(s) off the exact result" if self.inexact else
                          f"; every difference a near-tie ({self.near_ties})")
                if self.onnxruntime_off:
                    found += f"; ONNX Runtime off the exact result on {self.onnxruntime_off}"
                if self.unchecked:
                    found += f"; {self.unchecked} layer(s) not judged (onnx's reference evaluator)"
            if self.form == "int8 hexagon":
                found = f"{'bit-exact' if self.matches_cpu else 'NOT bit-exact'} vs CPU, {found}, {self.packets:,} packets"
        return found + (f"; guarded: {'; '.join(self.guarded)}" if self.guarded else "")


def _guarded(pipeline) -> list[str]:
    return [f"{name}: {pipeline.failures[name].reason}" for name in pipeline.failures]


def _cpu_output(model, feeds: dict, check: Check, pipeline="s2d") -> np.ndarray:
    """``model`` compiled for this CPU with the ``"s2d"`` pipeline (None: TVM's default), run
    on ``feeds``."""
    import tvm
    from tvm import relax

    from .onnx_import import import_model, model_inputs
    from .pipeline import S2DPipeline
    from .targets import host_target

    mod = import_model(model)
    s2d = S2DPipeline() if pipeline == "s2d" else None
    with tvm.transform.PassContext(opt_level=3):
        ex = tvm.compile(mod, target=host_target(), relax_pipeline=s2d.as_pass() if s2d else "default")
    check.guarded = _guarded(s2d) if s2d else []
    vm = relax.VirtualMachine(ex, tvm.cpu())
    names = list(model_inputs(model))  # the params, in order (the importer may rename them)
    out = vm["main"](*[tvm.runtime.tensor(np.ascontiguousarray(feeds[n])) for n in names[:len(mod["main"].params)]])
    return (out if hasattr(out, "numpy") else out[0]).numpy()


def check(name: str, form: str, size: int | None = None, tvm_default: bool = False) -> Check:
    """One model (a ``zoo.ZOO`` name) in one form; never raises. ``tvm_default``: an ``int8
    cpu`` check beyond the bound also compiles the graph with TVM's own default lowering and
    gives its steps, for scale (slow: scalar loops)."""
    from . import zoo
    from .zoo import run_onnxruntime, sample_inputs

    size = size or zoo.ZOO[name].sizes[-1]
    result = Check(name, form, size)
    start = time.perf_counter()
    try:
        if form == "float":
            model = zoo.float_model(name, size)
            feeds = sample_inputs(model)
            got, expected = _cpu_output(model, feeds, result), run_onnxruntime(model, feeds)[0]
            result.rel_diff = float(np.abs(got - expected).max() / max(float(np.abs(expected).max()), 1e-30))
            result.ok = got.shape == expected.shape and result.rel_diff <= FLOAT_TOLERANCE
        elif form == "int8 cpu":
            model = zoo.quantized_model(name, size)
            feeds = sample_inputs(model)
            got, expected = _cpu_output(model, feeds, result), run_onnxruntime(model, feeds, optimize=False)[0]
            result.max_steps, result.fraction_differing = output_steps(model, got, expected)
            result.ok = result.max_steps <= MAX_STEPS and result.fraction_differing <= MAX_FRACTION
            if not result.ok:  # for scale: ONNX Runtime's own int8 kernels against the same reference
                session = run_onnxruntime(model, feeds)[0]
                result.onnxruntime_int8 = output_steps(model, session, expected)
                result.against_onnxruntime_int8 = output_steps(model, got, session)
            if tvm_default and not result.ok:  # the same graph in TVM's own float QDQ lowering, for scale
                result.tvm_default = output_steps(model, _cpu_output(model, feeds, Check(name, form, size), pipeline=None), expected)
        elif form == "int8 layers":
            model = zoo.quantized_model(name, size)
            layers = layer_steps(model, sample_inputs(model), result)
            worst = max(layers, key=lambda k: layers[k])
            result.max_steps = max(steps for steps, _ in layers.values())
            result.fraction_differing = max(fraction for _, fraction in layers.values())
            result.worst_layer = worst
            result.ok = result.max_steps <= 1 and result.fraction_differing <= MAX_FRACTION and not result.inexact
        elif form == "int8 hexagon":
            from .emulator.model import run_model

            run = run_model(zoo.quantized_model(name, size), seed=0)
            result.matches_cpu, result.packets, result.first_difference = run.matches_cpu, run.packets, run.first_difference
            result.max_steps = run.onnxruntime["max_steps"]
            result.fraction_differing = run.onnxruntime["fraction_differing"]
            result.ok = run.matches_cpu  # the CPU build is the reference here; it is checked against ORT by the other forms
        else:
            raise ValueError(f"form {form!r}: one of float, int8 cpu, int8 layers, int8 hexagon")
    except Exception as exc:  # noqa: BLE001 - a failed check is a result
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        message = lines[-1] if lines and lines[0].startswith("Traceback") else (lines[0] if lines else "")
        result.error = f"error: {type(exc).__name__}: {message[:300]}"
        result.ok = False
        result.traceback = traceback.format_exc(limit=-6)
    result.seconds = time.perf_counter() - start
    return result


def layer_steps(model, feeds: dict, check: Check, exact: bool = True) -> dict[str, tuple[int, float]]:
    """Quantized tensor -> ``(max steps, fraction differing)`` of the CPU build against ONNX
    Runtime (optimizations off), each computed from ONNX Runtime's values of the quantized
    tensors (and graph inputs) it reads: the ``int8 layers`` form. ``exact``: a layer where
    the two differ is judged against its float64 result (``_judge_exactly``)."""
    import onnx

    from .zoo import run_onnxruntime

    model = onnx.shape_inference.infer_shapes(model)
    quantized = [n.output[0] for n in model.graph.node if n.op_type == "QuantizeLinear"]
    exposed = onnx.ModelProto()
    exposed.CopyFrom(model)
    known = {o.name for o in exposed.graph.output}
    infos = {v.name: v for v in [*model.graph.value_info, *model.graph.output]}
    exposed.graph.output.extend(infos[t] for t in quantized if t not in known and t in infos)
    session_values = dict(zip([o.name for o in exposed.graph.output], run_onnxruntime(exposed, feeds, optimize=False)))
    producers = {o: n for n in model.graph.node for o in n.output}
    inits = {i.name for i in model.graph.initializer}
    boundary = set(quantized) | set(feeds)
    found, guarded = {}, []
    for tensor in quantized:
        if tensor not in session_values:
            continue
        reads, stack, seen = [], list(producers[tensor].input), set()
        while stack:
            t = stack.pop()
            if t in seen or not t or t in inits:
                continue
            seen.add(t)
            if t in boundary:
                reads.append(t)
            elif t in producers:
                stack.extend(producers[t].input)
        layer = onnx.utils.Extractor(model).extract_model(sorted(reads), [tensor])
        layer_feeds = {t: session_values[t] if t in session_values else feeds[t] for t in reads}
        got = _cpu_output(layer, layer_feeds, check)
        guarded += check.guarded
        diff = np.abs(got.astype(np.int64) - session_values[tensor].astype(np.int64))
        found[tensor] = (int(diff.max()) if diff.size else 0, float((diff > 0).mean()) if diff.size else 0.0)
        if exact and diff.any():
            _judge_exactly(layer, layer_feeds, tensor, got, session_values[tensor], check)
    check.guarded = sorted(set(guarded))
    return found


def _judge_exactly(layer, feeds: dict, tensor: str, got: np.ndarray, onnxruntime: np.ndarray, check: Check):
    """Where the CPU build and ONNX Runtime differ on a layer, which is right: the layer in
    float64 (``checks.exact_steps``). Values the CPU build rounds away from the exact result,
    beyond a near-tie (``NEAR_TIE``), go to ``check.inexact``; differences at near-ties (either
    rounding exact) are counted in ``check.near_ties``; ONNX Runtime's own departures in
    ``check.onnxruntime_off``."""
    try:
        values = exact_steps(layer, feeds)
    except Exception:  # noqa: BLE001 - onnx's reference evaluator lacks an op or an attribute
        check.unchecked += 1
        return
    expected, far = round_exact(values, got.dtype), tie_distance(values) >= NEAR_TIE
    wrong = int(((got != expected) & far).sum())
    if wrong:
        check.inexact[tensor] = wrong
    check.near_ties += int(((got != onnxruntime) & ~far).sum())
    check.onnxruntime_off += int(((onnxruntime != expected) & far).sum())
