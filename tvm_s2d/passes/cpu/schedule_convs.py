"""Give the conv PrimFuncs a real schedule for the build target (after ``FuseTIR``).

TVM 0.27's default pipeline leaves a legalized conv as its naive loop nest, tens of times
slower than ONNX Runtime on a CPU, and every other kernel single-threaded. On LLVM CPU
targets this pass applies ``schedules.x86.schedule_conv`` to every PrimFunc holding one
conv block (plain, grouped or depthwise; NCHW or NHWC; the fused epilogue included),
``x86_injective.schedule_injective`` (parallel, vectorized) to functions without reductions
(the rewrite's space-to-depth, depth-to-space, pads and masks, layout transposes, elementwise
ops), ``x86_reductions.schedule_window`` to pools, means and dense layers, and TVM's dlight
CPU rules to softmax. Other targets and functions already scheduled are left as they are;
a function none of these takes keeps TVM's default lowering, and its outcome says so.
``knobs`` maps a function name to ``ConvKnobs``, or is a function ``(x86.ConvBlock, lanes)
-> ConvKnobs | None`` (the tuner's choice, e.g. from a tuning log); the rest get
``default_knobs``.

Where every call of a conv kernel passes its weights as a constant, the kernel reads them
packed (``x86.pack_weights``: a register tile's weights contiguous) and the calls pass the
constants packed so, computed here once.

``PassContext(disabled_pass=["ScheduleConvs"])`` compiles without it.
"""

from __future__ import annotations

from dataclasses import dataclass

import tvm
from tvm import relax, s_tir
from tvm.relax.expr_functor import PyExprMutator, mutator

from ...schedules import x86, x86_injective, x86_int8, x86_resize
from ...schedules.x86_reductions import schedule_dlight, schedule_window
from ...targets import is_cpu, pass_target, vector_lanes
from ..outcome import Outcome, applied, refused, strict
from ..relax_tools import bound, constant_arguments, map_relax_functions, with_functions

_CALL_TIR = tvm.ir.Op.get("relax.call_tir")

PASS_NAME = "ScheduleConvs"


@dataclass(frozen=True)
class Scheduled:
    """What the pass did to one function."""

    function: str
    conv: str  # x86.ConvBlock.signature
    knobs: x86.ConvKnobs | None
    error: str | None = None  # why the function kept its default loop nest


@tvm.transform.module_pass(opt_level=0, name=PASS_NAME)
class ScheduleConvs:
    """Schedule the conv PrimFuncs for the current (or given) LLVM CPU target."""

    def __init__(self, target: tvm.target.Target | None = None, knobs=None):
        self.target = target
        self.knobs = knobs if callable(knobs) else dict(knobs or {})
        self.scheduled: list[Scheduled] = []
        self.injective: list[str] = []  # functions scheduled by ``schedule_injective``
        self.dynamic: list[str] = []  # functions with a dynamic shape, left to TVM's default lowering
        self.outcomes: list[Outcome] = []  # per function: scheduled, or why not

    def transform_module(self, mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        target = pass_target(self.target)
        self.scheduled, self.injective, self.dynamic, self.outcomes = [], [], [], []
        if not is_cpu(target):
            return mod
        updates, packed = {}, {}
        constants = constant_arguments(mod)
        for gv, func in mod.functions.items():
            if not isinstance(func, tvm.tirx.PrimFunc) or func.attrs and func.attrs.get("tirx.is_scheduled"):
                continue
            name = gv.name_hint
            if not _static(func):
                self.dynamic.append(name)
                refused(self.outcomes, name, "dynamic shape: TVM's default lowering")
                continue
            if x86_int8.find_vnni_conv(func):
                try:
                    updates[gv], knobs = x86_int8.schedule_vnni_conv(func)
                except (RuntimeError, ValueError) as err:  # ScheduleError and TVM's errors are RuntimeErrors
                    refused(self.outcomes, name, f"integer conv schedule failed ({str(err).splitlines()[0]}): "
                                                 "TVM's default lowering")
                    continue
                self.scheduled.append(Scheduled(name, x86_int8.BLOCK, None))
                kind = x86_int8.func_kind(func)
                applied(self.outcomes, name, f"{kind.name} conv schedule ({knobs.tile_vectors}x{kind.oc_block} channels x "
                                             f"{_pixels(knobs)} pixels, {kind.instruction})")
                continue
            conv = x86.find_conv(func)
            if conv is None:
                for kind, what, schedule in _OTHER_KERNELS:
                    try:
                        scheduled = schedule(func, target)
                    except Exception as err:  # noqa: BLE001 - one kernel's schedule error leaves that kernel alone
                        if strict():
                            raise
                        refused(self.outcomes, name, f"{kind} schedule failed ({type(err).__name__}: "
                                                     f"{str(err).splitlines()[0] if str(err) else ''}): TVM's default lowering")
                        break
                    if scheduled is not None:
                        updates[gv] = scheduled
                        if kind == "injective":
                            self.injective.append(name)
                        applied(self.outcomes, name, what)
                        break
                else:
                    refused(self.outcomes, name, f"no schedule for {_kind(func)}: TVM's default lowering")
                continue
            lanes = vector_lanes(target, conv.dtype)
            knobs = self.knobs(conv, lanes) if callable(self.knobs) else self.knobs.get(name)
            knobs = knobs or x86.default_knobs(conv.layout, conv.channels, conv.out_width, lanes, conv.dtype, conv.max_pixels)
            pack = x86.pack_weights(func, conv, knobs)
            if pack is not None and pack[1] not in constants.get(gv, ()):
                pack = None  # a call passes weights computed at run time
            kernel, weight_index = pack or (func, None)
            try:
                updates[gv], knobs = x86.schedule_conv(kernel, knobs, lanes, conv_block=conv)
            except s_tir.ScheduleError as err:
                self.scheduled.append(Scheduled(name, conv.signature, knobs, str(err).splitlines()[0]))
                refused(self.outcomes, name, f"conv schedule failed ({self.scheduled[-1].error}): TVM's default lowering")
                continue
            if pack is not None:
                packed[gv] = (updates.pop(gv), weight_index, knobs.tile_channels)
            self.scheduled.append(Scheduled(name, conv.signature, knobs))
            weights = f", weights packed in tiles of {knobs.tile_channels} channels" if pack else ""
            applied(self.outcomes, name, f"conv schedule (register-blocked, vectorized, parallel rows{weights})")
        return _with_packed_weights(with_functions(mod, updates), packed)


def _with_packed_weights(mod: tvm.IRModule, packed: dict) -> tvm.IRModule:
    """``mod`` with the kernels in ``packed`` (GlobalVar -> (kernel, argument index, tile))
    under GlobalVars of their new signatures and their calls passing the weights packed."""
    if not packed:
        return mod
    mod, renamed = mod.clone(), {}
    for gv, (func, index, tile) in packed.items():
        del mod[gv]  # a GlobalVar keeps the signature it was made with
        fresh = relax.BlockBuilder().add_func(func, gv.name_hint)
        mod[fresh] = func
        renamed[gv] = (fresh, index, tile)
    return map_relax_functions(mod, lambda f: _PackArguments(mod, renamed).visit_expr(f))


@mutator
class _PackArguments(PyExprMutator):
    """The calls of kernels whose weights ``pack_weights`` packed, passing the constants packed."""

    def __init__(self, mod, packed: dict):
        super().__init__(mod)
        self.packed = packed  # old GlobalVar -> (new GlobalVar, argument index, tile)
        self.var2val = {}

    def visit_function_(self, func):
        self.var2val = relax.analysis.get_var2val(func)
        return super().visit_function_(func)

    def visit_call_(self, call: relax.Call) -> relax.Expr:
        call = super().visit_call_(call)
        if not (call.op.same_as(_CALL_TIR) and call.args[0] in self.packed and isinstance(call.args[1], relax.Tuple)):
            return call
        kernel, index, tile = self.packed[call.args[0]]
        args = list(call.args[1].fields)
        weights = bound(args[index], self.var2val).value.numpy()
        args[index] = relax.const(x86.packed_hwio(weights, tile), str(weights.dtype))
        return relax.Call(call.op, [kernel, relax.Tuple(args), *call.args[2:]], call.attrs, call.ty_args)


# the kernels that are not convs, by the first schedule that takes them: (kind, outcome, schedule)
_OTHER_KERNELS = [
    ("resize", "separable resize: rows in parallel, vectorized", lambda f, t: x86_resize.schedule_resize(f, vector_lanes(t))),
    ("injective", "parallel, vectorized (no reduction)", lambda f, t: x86_injective.schedule_injective(f, vector_lanes(t))),
    ("window", "window reduction (pool, mean, dense): parallel, vectorized",
     lambda f, t: schedule_window(f, vector_lanes(t))),
    ("dlight", "TVM's dlight CPU rule (softmax, norms)", schedule_dlight),
]


def _kind(func: tvm.tirx.PrimFunc) -> str:
    """What a kernel's reduction blocks compute, by their names (``pool_max``, ``T_softmax_maxelem``)."""
    try:
        sch = s_tir.Schedule(func)
        blocks = [sch.get(b) for b in sch.get_child_blocks(sch.get_sblock("root"))]
    except s_tir.ScheduleError:
        return "this kernel"
    names = sorted({b.name_hint for b in blocks if any(iv.iter_type != tvm.tirx.IterVar.DataPar for iv in b.iter_vars)})
    return "reductions " + ", ".join(names) if names else "this kernel"


def _static(func: tvm.tirx.PrimFunc) -> bool:
    """Every buffer of ``func`` has a shape of known integers (the schedules tile by them)."""
    return all(isinstance(d, tvm.tirx.IntImm) for p in func.params if hasattr(p.ty, "shape") for d in p.ty.shape)


def _pixels(knobs) -> str:
    return f"{knobs.tile_rows}x{knobs.tile_width}" if knobs.tile_rows > 1 else str(knobs.tile_width)
