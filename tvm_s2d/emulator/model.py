"""A whole compiled model on the Hexagon emulator: every kernel of ``main``, in order, on the
real intermediate tensors, with the packets each one executes.

``run_model`` lowers the model with the ``"s2d"`` pipeline for ``hexagon_target()`` (up to
code generation), then interprets ``main``: each ``call_tir`` runs its kernel under
qemu-hexagon (``qemu.run_kernel``) on the tensors the earlier kernels produced; tuples and
aliases are followed in Python. The same graph, with the HVX kernels as their plain loops,
is compiled for this CPU and run on the same inputs: the Hexagon run must equal it bit for
bit. With the ONNX model at hand, ONNX Runtime with graph optimizations off (the ONNX
semantics, op by op) is compared too, in output quantization steps.

Each kernel gets a kind: ``conv`` (the HVX ``vrmpy`` kernels and their offsets, or a conv
in TVM's default lowering), ``requantize`` (int32 accumulators to int8/uint8), ``elementwise``,
``movement`` (layout changes, pads, S2D/D2S; the HVX shuffles and pads included),
``boundary`` (the float input's quantize and the float output's dequantize: a deployment
passes quantized tensors, so they are listed but not counted in ``packets``) and ``other``.
``hvx`` marks the hand-written HVX kernels; the others are TVM's default (scalar) lowering.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

import numpy as np
import tvm
from tvm import relax
from tvm.relax.pipeline import default_build_pipeline

from ..onnx_import import ModelError, dynamic_inputs, import_model, load_onnx, model_inputs, model_macs
from ..onnx_names import kernel_nodes, onnx_names
from ..passes import PASS_NAME
from ..passes.relax_tools import is_call, op_name, static_shape
from ..pipeline import S2DPipeline
from ..targets import hexagon_target, host_target
from ..checks import compare_with_onnxruntime
from .kinds import KINDS, KernelRun, is_movement, is_view, kernel_kind, output_specs, scalar_kernels, scalar_lines
from .qemu import Run, cancel_prefetched, prefetch, run_kernel

#: What HVX can do at most: two ``vrmpy`` a packet, each 32 lanes x 4 multiply-accumulates.
HVX_MACS_PER_PACKET = 256
@dataclass
class ModelRun:
    model: str
    target: str
    rewrite: bool
    kernels: list[KernelRun] = field(default_factory=list)
    matches_cpu: bool = False
    onnxruntime: dict | None = None
    output: np.ndarray | None = None
    first_difference: dict | None = None  # the first kernel whose outputs differ from the CPU build's (check_each)
    macs: int = 0  # the model's conv and matmul multiply-accumulates (``onnx_import.model_macs``)
    failures: list[str] = field(default_factory=list)  # passes that failed (left out of the build), with why

    @property
    def packets(self) -> int:
        """Packets of every kernel but the boundary ones."""
        return sum(k.packets for k in self.kernels if k.kind != "boundary")

    def scalar(self) -> dict[str, list[str]]:
        """Kind -> the kernels of that kind in TVM's default (scalar) lowering, boundary excluded."""
        return scalar_kernels(self.kernels)

    @property
    def hvx_share(self) -> float:
        """The fraction of ``packets`` executed by the hand-written HVX kernels."""
        return sum(k.packets for k in self.kernels if k.hvx and k.kind != "boundary") / max(self.packets, 1)

    @property
    def times_limit(self) -> float | None:
        """``packets`` over the fewest a model of ``macs`` can take on HVX (``HVX_MACS_PER_PACKET``)."""
        return self.packets * HVX_MACS_PER_PACKET / self.macs if self.macs else None

    def headline(self) -> str:
        limit = f", {self.times_limit:.1f}x the HVX MAC limit ({self.macs / 1e6:.1f}M MACs / {HVX_MACS_PER_PACKET} a packet)" \
            if self.times_limit else ""
        return f"{self.packets:,} packets, {100 * self.hvx_share:.0f}% of them on HVX kernels{limit}"

    def by_kind(self) -> dict[str, int]:
        return {kind: sum(k.packets for k in self.kernels if k.kind == kind) for kind in KINDS}

    def to_json(self) -> str:
        return json.dumps({"model": self.model, "target": self.target, "rewrite": self.rewrite,
                           "kernels": [asdict(k) for k in self.kernels], "packets": self.packets,
                           "hvx_share": self.hvx_share, "macs": self.macs, "times_limit": self.times_limit,
                           "matches_cpu": self.matches_cpu, "first_difference": self.first_difference,
                           "onnxruntime": self.onnxruntime, "failures": self.failures}, indent=2)

    def table(self) -> str:
        def short(name):  # a fused kernel's name lists its ops; the scalar lines below give it whole
            return name if len(name) <= 40 else name[:37] + "..."

        width = max([len(short(k.name)) for k in self.kernels] + [6])
        nodes = max([len(k.onnx) for k in self.kernels] + [9])
        lines = [f"{'ONNX node':{nodes}s}  {'kernel':{width}s}  {'kind':11s}  {'runs on':7s}  {'packets':>12s}"]
        lines += [f"{k.onnx:{nodes}s}  {short(k.name):{width}s}  {k.kind:11s}  {'HVX' if k.hvx else 'scalar':7s}"
                  f"  {k.packets:12,d}" for k in self.kernels]
        totals = self.by_kind()
        lines.append("")
        lines += [f"{kind:11s} {totals[kind]:14,d}" + ("  (not counted: a deployment passes quantized tensors)"
                                                     if kind == "boundary" else "") for kind in KINDS if totals[kind]]
        hvx = sum(k.packets for k in self.kernels if k.hvx)
        lines.append(f"{'total':11s} {self.packets:14,d}  ({hvx:,} on HVX kernels, {self.packets - hvx:,} scalar)")
        lines += scalar_lines(self.kernels)
        lines += [f"a pass failed, its changes left out of the build: {failure}" for failure in self.failures]
        lines.append(self.headline())
        lines.append(f"bit-exact against the CPU build: {'yes' if self.matches_cpu else 'NO'}")
        if self.first_difference is not None:
            d = self.first_difference
            lines.append(f"first kernel that differs from the CPU build: {d['kernel']} ({d['kind']}, inputs "
                         f"{', '.join(d['inputs'])} -> {d['output']}): {d['differing']:,} of {d['elements']:,} values,"
                         f" at most {d['max_diff']:g} apart")
        if self.onnxruntime is not None:
            ort = self.onnxruntime
            lines.append(f"against ONNX Runtime (optimizations off): at most {ort['max_steps']} step(s),"
                         f" {100 * ort['fraction_differing']:.2f}% of outputs differ")
        return "\n".join(lines)


def run_model(model, inputs: dict | None = None, rewrite: bool = True, tuning_log=None, shape_dict=None,
              seed: int = 0, onnxruntime: bool = True, tvm_default: bool = False, disabled=(), check_each: bool = False,
              progress=None, **options) -> ModelRun:
    """Run ``model`` (an ONNX path or ``ModelProto``) whole on the Hexagon emulator; see the
    module doc. ``inputs``: name -> array (random where not given); ``options`` go to the
    rewrite (``block``, ``lane_width``, ...). ``tvm_default``: TVM's own lowering of the
    imported model instead of the ``"s2d"`` pipeline (the baseline). ``disabled``: more
    passes to leave out, by name. ``check_each`` (and always when the output differs from the
    CPU build's): run the CPU build kernel by kernel too and name the first kernel whose
    outputs differ (``first_difference``). ``progress``: a callable told each step
    (``progress(text)``) and each kernel run (``progress(text, done, total)``)."""
    say = progress or (lambda text, done=None, total=None: None)
    where = str(model) if not hasattr(model, "graph") else "the ONNX model"
    onnx_model = load_onnx(model)
    dynamic = dynamic_inputs(onnx_model, shape_dict)
    if dynamic:
        raise ModelError(f"{where}: input(s) {', '.join(dynamic)} have no static shape; give one with --shape NAME=D,D,...")
    mod = import_model(onnx_model, shape_dict, where)
    feeds = _inputs(onnx_model, mod, inputs or {}, shape_dict or {}, seed)
    params = [p.name for p in mod["main"].params]
    args = [feeds[name] for name in params]

    disabled = [*disabled] + ([] if rewrite else [PASS_NAME])
    if tvm_default:
        say("lowering (TVM's default)")
        hexagon = plain = lower_for_hexagon(mod, None, disabled)
    else:
        pipeline = S2DPipeline(tuning_log=tuning_log, **options)
        shared = lower_for_hexagon(mod, pipeline, disabled, progress=lambda text: say(f"lowering for Hexagon, {text}"),
                                   until=BEFORE_HVX)  # the stages before the HVX kernels, the reference's too
        hexagon = lower_for_hexagon(shared.clone(), pipeline, disabled, progress=lambda text: say(f"lowering for Hexagon, {text}"),
                                    start="hvx")
        failures = [f"{name}: {outcome.reason}" for name, outcome in pipeline.failures.items()]
        reference = S2DPipeline(tuning_log=tuning_log, hvx=False, **options)
        plain = lower_for_hexagon(shared.clone(), reference, disabled, start="hvx",
                                  progress=lambda text: say(f"lowering the CPU reference (the HVX kernels' plain loops), {text}"))
        failures += [f"{name} in the CPU reference (the HVX kernels' plain loops): {outcome.reason}"  # a pass of the
                     for name, outcome in reference.failures.items() if name not in pipeline.failures]  # reference alone

    run = ModelRun(where, "hexagon", rewrite and not tvm_default, macs=model_macs(onnx_model),
                   failures=[] if tvm_default else failures)
    trace: dict = {}
    nodes = kernel_nodes(hexagon, onnx_names(mod), movement=is_movement)
    output, run.kernels = interpret(hexagon, args, trace=trace, progress=say, nodes=nodes)
    run.output = output
    say("running the CPU build")
    with tvm.transform.PassContext(opt_level=3):
        ex = tvm.compile(plain, target=reference_target(), relax_pipeline=default_build_pipeline())
    cpu = relax.VirtualMachine(ex, tvm.cpu())["main"](*[tvm.runtime.tensor(a) for a in args]).numpy()
    run.matches_cpu = bool(cpu.shape == output.shape and cpu.dtype == output.dtype and np.array_equal(cpu, output))
    if check_each or not run.matches_cpu:
        say("comparing each kernel with the CPU build's")
        cpu_trace: dict = {}
        interpret(plain, args, run=run_on_cpu, trace=cpu_trace)
        run.first_difference = first_difference(hexagon, trace, cpu_trace)
    if onnxruntime:
        say("comparing with ONNX Runtime (optimizations off)")
        run.onnxruntime = compare_with_onnxruntime(onnx_model, feeds, output)
    return run


def reference_target() -> tvm.target.Target:
    """The CPU build's target: this CPU, LLVM at ``-O0``. The build is the integers' reference,
    run once on one input: EfficientNet-B0's built (compiled and linked) in 13.8 s instead of 28.4 s
    at the default level, and ran in 0.11 s instead of 0.02 s, the same outputs. (It is built after
    the Hexagon kernels, not beside them: TVM's LLVM options are process-wide, ``qemu._in_compiler``.)"""
    return tvm.target.Target({**host_target().export(), "opt-level": 0})


#: The last stage the Hexagon build and its CPU reference (``hvx=False``) share: ``run_model``
#: lowers the model through it once (EfficientNet-B0: 5 s).
BEFORE_HVX = "rewrite"


def lower_for_hexagon(mod: tvm.IRModule, pipeline: S2DPipeline | None, disabled, progress=None,
                      start: str = "prepare", until: str = "schedule") -> tvm.IRModule:
    """``mod`` lowered for Hexagon up to code generation: the pipeline's stages from ``start``
    to ``until`` (``progress`` hears of each), or (None) TVM's default lowering (legalize, fold,
    fuse)."""
    with hexagon_target(), tvm.transform.PassContext(opt_level=3, disabled_pass=disabled):
        if pipeline is None:
            return tvm.transform.Sequential(S2DPipeline(rewrite=False).stages["lower"])(mod)
        return pipeline.run(mod, until=until, start=start, progress=progress)


def _inputs(onnx_model, mod, given: dict, shape_dict: dict, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    declared = model_inputs(onnx_model)
    unknown = [name for name in given if name not in declared]
    if unknown:
        raise ModelError(f"--input {', '.join(unknown)}: not an input of the model (its inputs: {', '.join(declared)})")
    feeds = {}
    for param in mod["main"].params:
        shape, dtype = tuple(int(d) for d in param.ty.shape), str(param.ty.dtype)
        if param.name in given:
            value = np.asarray(given[param.name])
            if value.shape != shape or str(value.dtype) != dtype:
                raise ModelError(f"--input {param.name}: {value.dtype} {list(value.shape)}, the model takes {dtype} {list(shape)}")
        elif dtype.startswith("float"):
            value = rng.standard_normal(shape).astype(dtype)
        else:
            info = np.iinfo(dtype)
            value = rng.integers(info.min, int(info.max) + 1, shape).astype(dtype)
        feeds[param.name] = np.ascontiguousarray(value)
    return feeds


def interpret(mod: tvm.IRModule, args: list[np.ndarray], run=None, trace: dict | None = None, progress=None,
              nodes: dict | None = None) -> tuple[np.ndarray, list[KernelRun]]:
    """Execute ``main`` binding by binding: ``call_tir`` through ``run(func, inputs, outputs,
    name)`` (default: under qemu-hexagon), tuples and aliases in Python. Returns the output
    and one ``KernelRun`` per kernel call; ``trace`` gets each kernel call's outputs by the
    name of the variable it binds; ``progress(text, done, total)`` hears of each kernel run;
    ``nodes``: the variable a kernel binds -> its ONNX nodes (``onnx_names.kernel_nodes``)."""
    main = mod["main"]
    env = {param: value for param, value in zip(main.params, args)}
    float_inputs = {p for p in main.params if str(p.ty.dtype).startswith("float")}
    returned = set(relax.analysis.free_vars(main.body.body))
    runs = []
    calls = [b.value for block in main.body.blocks for b in block.bindings
             if isinstance(b.value, relax.Call) and isinstance(b.value.op, tvm.ir.Op) and b.value.op.name == "relax.call_tir"]
    kernels = [c for c in calls if not is_view(mod[c.args[0]], c.args[1].fields, output_specs(c.ty))]
    total = len(kernels)
    if run is None:
        run = _on_qemu
        _prefetch(mod, kernels)

    def value(expr):
        if isinstance(expr, relax.Var):
            return env[expr]
        if isinstance(expr, tvm.ir.GenericConst):
            return expr.value.numpy()
        if isinstance(expr, relax.Tuple):
            return tuple(value(f) for f in expr.fields)
        raise EmulatorInterpretError(f"cannot evaluate {type(expr).__name__} in main")

    try:
        for block in main.body.blocks:
            for binding in block.bindings:
                expr = binding.value
                if is_call(expr, "relax.call_tir"):
                    gv, operands = expr.args[0], expr.args[1]
                    inputs = [np.require(value(a), requirements="C") for a in operands.fields]
                    specs = output_specs(expr.ty)
                    if is_view(mod[gv], operands.fields, specs):  # the build's RewriteDataflowReshape makes it a view
                        env[binding.var] = inputs[0].reshape(specs[0][0])
                        continue
                    result = run(mod[gv], inputs, specs, gv.name_hint)
                    outs = result.outputs
                    env[binding.var] = outs[0] if not isinstance(expr.ty, relax.TupleType) else tuple(outs)
                    if trace is not None:
                        trace[binding.var.name] = outs
                    kind = kernel_kind(gv.name_hint, operands.fields, specs, float_inputs, binding.var in returned)
                    runs.append(KernelRun(gv.name_hint, kind, gv.name_hint.startswith("hvx_"), int(result.packets),
                                          list((nodes or {}).get(binding.var, []))))
                    if progress is not None:
                        progress(f"{gv.name_hint} ({kind}): {int(result.packets):,} packets", len(runs), total)
                elif isinstance(expr, relax.TupleGetItem):
                    env[binding.var] = value(expr.tuple_value)[expr.index]
                elif isinstance(expr, (relax.Var, relax.Tuple)) or isinstance(expr, tvm.ir.GenericConst):
                    env[binding.var] = value(expr)
                else:
                    name = op_name(expr) or type(expr).__name__
                    raise EmulatorInterpretError(f"main still calls {name} after lowering: the runner takes kernels only")
    finally:
        cancel_prefetched()
    output = value(main.body.body)
    if isinstance(output, tuple):
        output = output[0]
    return np.asarray(output), runs


def _on_qemu(func, inputs, outputs, name) -> Run:
    return run_kernel(func, inputs, outputs, name=name)


def _prefetch(mod: tvm.IRModule, calls) -> None:
    """The kernels of ``calls`` (``main``'s kernel calls) handed to ``qemu.prefetch`` in their
    order: built in worker threads while the kernels before them run."""
    for call in calls:
        inputs = [(static_shape(a), str(a.ty.dtype)) for a in call.args[1].fields]
        if all(shape is not None for shape, _ in inputs):
            prefetch(mod[call.args[0]], inputs, output_specs(call.ty))


def run_on_cpu(func, inputs: list[np.ndarray], outputs, name: str) -> Run:
    """One kernel compiled for this CPU and run on ``inputs`` (``interpret``'s ``run``)."""
    lib = tvm.compile(tvm.IRModule({name: func.with_attr("global_symbol", name)}), target=reference_target())
    results = [tvm.runtime.tensor(np.zeros(shape, dtype)) for shape, dtype in outputs]
    lib[name](*[tvm.runtime.tensor(a) for a in inputs], *results)
    return Run([r.numpy() for r in results], 0)


def first_difference(mod: tvm.IRModule, trace: dict, reference: dict) -> dict | None:
    """The first kernel call of ``mod``'s ``main`` whose outputs in ``trace`` differ from
    ``reference``'s (the same variable in the CPU build), with its op kinds and shapes; None
    when every kernel both ran agrees."""
    for block in mod["main"].body.blocks:
        for binding in block.bindings:
            name = binding.var.name
            if name not in trace or name not in reference:
                continue
            for got, want in zip(trace[name], reference[name]):
                if got.shape != want.shape or got.dtype != want.dtype or np.array_equal(got, want):
                    continue  # equal, or not the same tensor in the two builds (another layout)
                gv, operands = binding.value.args[0], binding.value.args[1].fields
                diff = np.abs(got.astype(np.float64) - want.astype(np.float64))
                return {"kernel": gv.name_hint, "binding": name,
                        "kind": kernel_kind(gv.name_hint, operands, output_specs(binding.value.ty), set(), False),
                        "inputs": [f"{a.ty.dtype}{list(static_shape(a) or [])}" for a in operands],
                        "output": f"{want.dtype}{list(want.shape)}", "elements": int(want.size),
                        "differing": int(np.count_nonzero(diff)), "max_diff": float(diff.max())}
    return None


class EmulatorInterpretError(RuntimeError):
    """``main`` holds something the runner cannot execute (named in the message)."""
