"""``SpaceToDepthConv2d``: rewrite low-channel convs into exact space-to-depth convs, and keep
the network in the S2D domain between them.

Rules, in the onnxscript rewriter's terms:

* ``conv2d``: pattern ``relax_tools.CONV2D``; check ``conv2d.decide`` (an exact plan from
  ``geometry`` or a reason; for an input already in the domain, stay-or-leave by cost);
  rewrite ``[align -> S2D | mask] -> conv2d(folded constant weight)``, output in the domain.
* ``conv2d_transpose`` with stride: a stride-1 ``conv2d`` with ``s*s`` times the output
  channels, output in the domain of block ``s`` (the D2S comes when, and if, plain is needed).
* elementwise ops (``elementwise.UNARY``, ``BINARY``) whose tensor operands all carry the
  same S2D run in the domain, constants adapted.
* anything else that reads a domain tensor gets it back in plain layout (D2S, crop), once;
  ``exits`` records which op forced it.

A tensor in the domain is ``S2D(aligned image)`` (``geometry.Domain``). A conv's output
offset is chosen with its folded kernel, so chains of "same"-padded convs keep the small
kernel; rows outside the image are masked (a fused ``where``) before a conv reads them.
Folded weights are computed in numpy at compile time. A refused conv is left as it was;
``decisions`` records why.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import tvm
from tvm import relax
from tvm.relax.expr_functor import PyExprMutator, mutator

from ...geometry import CostModel, Domain, normalize_block, spatial_axes
from ...targets import default_model
from ..outcome import Outcome
from ..prepare import prepare
from ..relax_tools import CONV2D, CONV2D_TRANSPOSE, op_name, static_shape
from .conv2d import FOLDED_KERNEL_LAYOUT, Decision, decide, folded_weight, with_output_offset
from .elementwise import BINARY, UNARY, adapt_constant, keeps_clean, propagates
from .emit import crop_to, emit_align, emit_leave_domain, emit_mask, emit_space_to_depth

PASS_NAME = "SpaceToDepthConv2d"
#: The rewritten conv ``name`` binds its result, in the domain, to ``name + DOMAIN_SUFFIX``.
DOMAIN_SUFFIX = "_s2d_out"


def conv_name(var_name: str) -> str:
    """The model's name of a conv, from the name of the variable it is bound to."""
    return var_name.removesuffix(DOMAIN_SUFFIX)


def check_options(block, lane_width, move_cost) -> tuple[tuple[int, int] | None, CostModel]:
    """Validate the pass options; returns ``(block pair or None, cost model)`` (the model with
    the no-target defaults where an option is None)."""
    model = default_model(None, lane_width, move_cost)
    return (None if block is None else normalize_block(block)), model


@dataclass(frozen=True)
class Exit:
    """A tensor brought back from the S2D domain to plain layout, and the op that needed it."""

    tensor: str
    forced_by: str
    origin: str  # the conv whose output (maybe through elementwise ops) the tensor is


@tvm.transform.module_pass(opt_level=0, name=PASS_NAME)
class SpaceToDepthConv2d:
    """Rewrite ``relax.nn.conv2d`` with few channels into its space-to-depth form.

    Parameters
    ----------
    block : None, int or (int, int)
        Force this block on every eligible conv; ``None`` lets the cost model choose per layer.
    lane_width : int or None
        Channels per lane group in the cost model (32 for HTP / HVX ``vrmpy``). ``None``: from
        the build target (``default_lane_width``): 32, or 1 on LLVM CPU targets.
    move_cost : float or None
        MAC-equivalents the cost model charges per byte a data-movement kernel reads or
        writes (``geometry.CostModel``). ``None``: from the build target: 1.0, or 4.0 on LLVM
        CPU targets (measured). LLVM CPU targets also charge strided convs (``default_model``).
    stay_in_domain : bool
        Keep tensors in the S2D domain across layers (default); False rewrites each conv on
        its own, with its own S2D and D2S.
    tuned_blocks : callable or None
        ``conv2d call -> (bh, bw) | None``: the block measured best for the conv on the
        current target, ``(1, 1)`` for the conv as it is, None where nothing was measured
        (``tuning.apply.TunedLog(log).block`` reads it from a tuning log).
    prepare : bool
        Run the preparation first (``passes.prepare``: QDQ convs to integer convs, constant
        folding), so that the pass applied alone to an imported module does what it does in
        the ``"s2d"`` pipeline (default); the pipeline, which has prepared already, says False.

    After the pass runs, ``decisions`` holds a ``Decision`` per conv and ``exits`` an ``Exit``
    per tensor brought back to plain layout.
    """

    def __init__(self, block=None, lane_width: int | None = None, move_cost: float | None = None,
                 stay_in_domain: bool = True, tuned_blocks=None, prepare: bool = True):
        self.block, self.model = check_options(block, lane_width, move_cost)
        self.tuned_blocks = tuned_blocks
        self.lane_width, self.move_cost = lane_width, move_cost
        self.stay_in_domain = bool(stay_in_domain)
        self.prepare = bool(prepare)
        self.decisions: list[Decision] = []
        self.exits: list[Exit] = []
        self.last_run: tuple | None = None  # (prepared module, rewritten module, target or None)

    @property
    def outcomes(self) -> list[Outcome]:
        """``decisions`` in the protocol every pass shares (``passes.outcome``)."""
        return [Outcome(d.name, d.rewritten, f"rewritten ({d.source})" if d.rewritten else d.reason)
                for d in self.decisions]

    def transform_module(self, mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        target = tvm.target.Target.current(allow_none=True)
        self.model = default_model(target, self.lane_width, self.move_cost)
        if self.prepare:
            try:
                mod = prepare(mod)
            except (ValueError, RuntimeError):  # e.g. a conv with an empty output, which TVM's
                pass  # own passes cannot fold; the rewrite refuses such a conv with its reason
        rewriter = _Rewriter(mod, self.block, self.model, self.stay_in_domain, self.tuned_blocks)
        rewritten = rewriter.transform()
        self.decisions, self.exits, self.last_run = rewriter.decisions, rewriter.exits, (mod, rewritten, target)
        return rewritten


@dataclass(frozen=True)
class _InDomain:
    value: relax.Var  # the tensor in the S2D domain
    domain: Domain
    channels: int  # channels of the image
    layout: str
    origin: str  # the conv this tensor comes from, for the report

    @property
    def key(self) -> tuple:
        """What operands of one elementwise op must share to combine in the domain."""
        return self.domain.block, self.domain.offset, self.domain.size, self.channels, self.layout


@mutator
class _Rewriter(PyExprMutator):
    def __init__(self, mod: tvm.IRModule, block, model: CostModel, stay: bool, tuned_blocks=None):
        super().__init__(mod)
        self.tuned_blocks = tuned_blocks
        self.mod = mod
        self.block = block
        self.model = model
        self.stay = stay
        self.decisions: list[Decision] = []
        self.exits: list[Exit] = []
        self.in_domain: dict[relax.Var, _InDomain] = {}
        self.back_in_plain: set[relax.Var] = set()  # domain tensors already brought back
        self.users: dict[relax.Var, list[relax.VarBinding]] = {}

    def transform(self) -> tvm.IRModule:
        for gvar, func in self.mod.functions_items():
            if isinstance(func, relax.Function) and not func.attrs.get("Primitive", False):
                self.users = _users(func)
                self.builder_.update_func(gvar, self.visit_expr(func))
        return self.builder_.get()

    # ---- dispatch ----

    def visit_var_binding_(self, binding: relax.VarBinding) -> None:
        value = binding.value
        if CONV2D.match(value) or CONV2D_TRANSPOSE.match(value):
            return self._conv(binding)
        if propagates(value) and self._elementwise(binding):
            return None
        user = op_name(value) or ("function output" if not isinstance(binding.var, relax.DataflowVar) else type(value).__name__)
        self._to_plain(value, user)
        return super().visit_var_binding_(binding)

    # ---- convs ----

    def _tuned(self, name: str, call: relax.Call, source) -> Decision | None:
        """The decision a tuning record makes for this conv, if the log has one."""
        if self.tuned_blocks is None or self.block is not None:
            return None
        block = self.tuned_blocks(call)
        if block is None:
            return None
        if block == (1, 1):  # the record keeps the conv as it is
            decision = decide(name, call, None, self.model, None)
            return replace(decision, plan=None, reason="tuning log: the conv as it is measured fastest",
                           source="tuning log")
        domain = source.domain if source and source.domain.block == block else None
        decision = decide(name, call, block, self.model, domain)
        return replace(decision, source="tuning log") if decision.rewritten else decision

    def _conv(self, binding: relax.VarBinding) -> None:
        call, name = binding.value, binding.var.name
        source = self._source(call.args[0], str(call.attrs.data_layout))
        decision = self._tuned(name, call, source) or decide(name, call, self.block, self.model,
                                                              source.domain if source else None)
        partner = self._partner_offset(binding.var, decision.plan.out_block) if decision.rewritten and self.stay else None
        if partner is not None:
            decision = with_output_offset(decision, partner, self.model)
        self.decisions.append(decision)
        if not decision.rewritten:
            self._to_plain(call, f"{call.op.name} {name} (not rewritten: {decision.reason})")
            return super().visit_var_binding_(binding)

        bb, plan, layout = self.builder_, decision.plan, decision.layout
        if decision.stayed:
            x = source.value
            if plan.needs_mask:
                x = bb.emit(emit_mask(bb, x, source.domain, source.channels, layout, name), name + "_masked")
            if any(plan.trim):
                x = bb.emit(crop_to(x, (0, 0), plan.s2d_hw, layout), name + "_trim")
        else:
            self._to_plain(call, f"{call.op.name} {name}")
            x = self.visit_expr(call.args[0])
            if decision.kind == "conv2d_transpose":
                x = self._crop_input(x, plan, layout, name)
            else:
                aligned = emit_align(bb, x, plan.align, layout, name)
                x = x if aligned is x else bb.emit(aligned, name + "_align")
                x = bb.emit(emit_space_to_depth(bb, x, plan.block, layout, name), name + "_s2d")
        kernel_layout = str(call.attrs.kernel_layout)
        if decision.kind == "conv2d_transpose":
            kernel_layout = FOLDED_KERNEL_LAYOUT[layout]
        conv = relax.op.nn.conv2d(
            x, relax.const(folded_weight(call, plan)), strides=plan.strides, padding=plan.padding,
            data_layout=layout, kernel_layout=kernel_layout, out_layout=layout, out_dtype=call.attrs.out_dtype,
        )
        self._bind(binding, conv, plan.out_domain, decision.spec.out_channels, layout, origin=name)

    def _crop_input(self, x, plan, layout, name):
        (fh, bh), (fw, bw) = plan.crop_in
        if not (fh or bh or fw or bw):
            return x
        hax, wax, _ = spatial_axes(layout)
        shape = static_shape(x)
        return self.builder_.emit(crop_to(x, (fh, fw), (shape[hax] - bh, shape[wax] - bw), layout), name + "_crop")

    # ---- elementwise ops in the domain ----

    def _elementwise(self, binding: relax.VarBinding) -> bool:
        """Run an elementwise op in the domain if its operands allow; False to fall back."""
        if not self.stay:
            return False
        call = binding.value
        name = op_name(call)
        tensor_positions = [0] if name in UNARY else [0, 1]
        sources, args = [], list(call.args)
        for i in tensor_positions:
            if isinstance(args[i], relax.Var) and args[i] in self.in_domain:
                sources.append(self.in_domain[args[i]])
        if not sources:
            return False
        first = sources[0]
        if any(s.key != first.key for s in sources) or not self._same_image(call, first):
            return False
        axis = int(call.attrs.axis) if name in ("relax.quantize", "relax.dequantize") else None
        for i, arg in enumerate(args):
            if isinstance(arg, relax.Var) and arg in self.in_domain:
                args[i] = self.in_domain[arg].value
            elif i in tensor_positions or axis is not None:
                adapted = adapt_constant(arg, first.domain.block, first.layout, axis)
                if adapted is None:
                    return False
                args[i] = adapted
        clean = keeps_clean(call, [s.domain.clean for s in sources])
        new_call = relax.Call(call.op, args, call.attrs, call.ty_args)
        self._bind(binding, new_call, replace(first.domain, clean=clean), first.channels, first.layout, first.origin)
        return True

    @staticmethod
    def _same_image(call, source: _InDomain) -> bool:
        """The op's output has the image's shape (it broadcasts nothing into the tensor)."""
        shape = static_shape(call)
        if shape is None or len(shape) != 4:
            return False
        hax, wax, cax = spatial_axes(source.layout)
        return (shape[hax], shape[wax]) == source.domain.size and shape[cax] == source.channels

    def _partner_offset(self, var: relax.Var, block) -> tuple[int, int] | None:
        """The offset of a domain tensor that ``var`` meets in a binary op (looking through
        elementwise ops with constants), so a residual join can stay in the domain."""
        for user in self.users.get(var, []):
            name = op_name(user.value)
            if name not in UNARY and name not in BINARY:
                continue
            operands = user.value.args[:1] if name in UNARY else user.value.args[:2]
            partners = [self.in_domain.get(a) for a in operands if isinstance(a, relax.Var) and not a.same_as(var)]
            partners = [p for p in partners if p is not None and p.domain.block == tuple(block)]
            found = partners[0].domain.offset if partners else self._partner_offset(user.var, block)
            if found is not None:
                return found
        return None

    # ---- moving between layouts ----

    def _source(self, x: relax.Expr, layout: str) -> _InDomain | None:
        if not self.stay or not isinstance(x, relax.Var):
            return None
        source = self.in_domain.get(x)
        return source if source is not None and source.layout == layout else None

    def _bind(self, binding: relax.VarBinding, value: relax.Expr, domain: Domain | None, channels: int, layout: str,
              origin: str):
        """Bind the op's result: kept in the domain, or brought to plain into the bound var."""
        if domain is None:
            return super().visit_var_binding_(relax.VarBinding(binding.var, value))
        name = binding.var.name
        in_domain = self.builder_.emit(value, name + DOMAIN_SUFFIX)
        self.in_domain[binding.var] = _InDomain(in_domain, domain, channels, layout, origin)
        if self.stay and isinstance(binding.var, relax.DataflowVar):
            return None
        self.back_in_plain.add(binding.var)
        if self.stay:
            self.exits.append(Exit(name, "function output", origin))
        plain = emit_leave_domain(self.builder_, in_domain, domain, layout, name)
        return super().visit_var_binding_(relax.VarBinding(binding.var, plain))

    def _to_plain(self, expr: relax.Expr, forced_by: str) -> None:
        """Bring every domain tensor ``expr`` reads back to plain layout (once per tensor)."""
        for var in relax.analysis.free_vars(expr):
            if var in self.in_domain and var not in self.back_in_plain:
                source = self.in_domain[var]
                plain = emit_leave_domain(self.builder_, source.value, source.domain, source.layout, var.name)
                plain = self.builder_.emit(plain, var.name)
                self.back_in_plain.add(var)
                self.set_var_remap(var, plain)
                self.exits.append(Exit(var.name, forced_by, source.origin))


def _users(func: relax.Function) -> dict[relax.Var, list[relax.VarBinding]]:
    """Each variable's consuming bindings, in ``func``'s dataflow blocks."""
    users: dict[relax.Var, list[relax.VarBinding]] = {}
    for block in getattr(func.body, "blocks", []):
        for binding in block.bindings:
            if isinstance(binding, relax.VarBinding):
                for var in relax.analysis.free_vars(binding.value):
                    users.setdefault(var, []).append(binding)
    return users
