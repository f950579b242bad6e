"""What ``SpaceToDepthConv2d`` does to a module: per conv, per tensor sent back to plain
layout, and per model (executed MACs, data-movement ops)."""

from __future__ import annotations

import contextlib
import json
import re
from dataclasses import dataclass, field

import tvm
from tvm import relax

from .passes.outcome import summary
from .passes.relax_tools import is_call, op_name
from .passes.s2d.conv2d import Decision
from .passes.s2d.space_to_depth_conv2d import PASS_NAME, SpaceToDepthConv2d
from .emulator.kinds import KernelRun, is_view, kernel_kind, output_specs, scalar_lines
from .pipeline import S2DPipeline

#: Ops that only move data; S2D and D2S each show up as one ``permute_dims``.
DATA_MOVEMENT_OPS = ("relax.permute_dims", "relax.layout_transform", "relax.nn.pad", "relax.strided_slice")


@dataclass
class Report:
    """``rows``: one dict per conv; ``exits``: tensors brought back to plain, and by what;
    ``data_movement``: data-movement ops in the module before and after the rewrite;
    ``passes``: the other passes' outcomes (``passes.outcome``), by pass name."""

    rows: list[dict] = field(default_factory=list)
    lane_width: int = 32
    exits: list[dict] = field(default_factory=list)
    data_movement: dict = field(default_factory=dict)
    passes: dict = field(default_factory=dict)

    @classmethod
    def from_run(cls, pass_, before: tvm.IRModule | None = None, after: tvm.IRModule | None = None) -> Report:
        """The report of one run of the pass (``before`` / ``after`` give data-movement counts;
        by default the modules of the pass's last run)."""
        target = None
        if before is None and after is None and pass_.last_run is not None:
            before, after, target = pass_.last_run
        movement = {}
        if before is not None and after is not None:
            movement = {"before": count_ops(before, DATA_MOVEMENT_OPS), "after": count_ops(after, DATA_MOVEMENT_OPS)}
            if pass_.stay_in_domain:  # what staying in the domain saves over one S2D and D2S per conv
                alone = SpaceToDepthConv2d(block=pass_.block, lane_width=pass_.lane_width, move_cost=pass_.move_cost,
                                           tuned_blocks=pass_.tuned_blocks, stay_in_domain=False, prepare=False)
                with target if target is not None else contextlib.nullcontext():  # decide as the run did
                    movement["each_conv_alone"] = count_ops(alone(before), DATA_MOVEMENT_OPS)
        return cls(
            [_row(d, pass_.model.lane_width) for d in pass_.decisions],
            pass_.model.lane_width,
            [{"tensor": e.tensor, "from_conv": e.origin, "forced_by": e.forced_by} for e in pass_.exits],
            movement,
        )

    @classmethod
    def from_pipeline(cls, pipeline) -> Report:
        """The report of a compile with ``pipeline`` (a ``pipeline.S2DPipeline`` that ran): the
        rewrite's rows, and every other pass's outcomes."""
        report = cls.from_run(pipeline.rewrite)
        report.passes = {name: found for name, found in pipeline.outcomes().items()
                         if found and (name != PASS_NAME or name in pipeline.failures)}
        return report

    @property
    def rewritten(self) -> list[dict]:
        return [row for row in self.rows if row["status"] == "rewritten"]

    def totals(self) -> dict:
        """Executed MACs over all convs, before and after (refused convs count unchanged)."""
        before = sum(r["executed_macs"][0] for r in self.rows if r["executed_macs"])
        after = sum(r["executed_macs"][-1] for r in self.rows if r["executed_macs"])
        totals = {
            "convs": len(self.rows),
            "rewritten": len(self.rewritten),
            "stayed_in_domain": sum(1 for r in self.rows if r["input"] == "S2D domain"),
            "executed_macs_before": before,
            "executed_macs_after": after,
        }
        for key in ("before", "after", "each_conv_alone"):
            if key in self.data_movement:
                totals[f"data_movement_ops_{key}"] = sum(self.data_movement[key].values())
        return totals

    def to_json(self) -> str:
        return json.dumps(
            {"lane_width": self.lane_width, "totals": self.totals(), "layers": self.rows,
             "back_to_plain": self.exits, "data_movement": self.data_movement,
             "passes": {name: [o.to_json() for o in found] for name, found in self.passes.items()}},
            indent=2,
        )

    def __str__(self) -> str:
        if not self.rows:
            return "no conv2d in the module"
        header = ("conv", "input -> output", "block", "Cin", "Cout", "kernel", f"useful/{self.lane_width}-lane MAC",
                  "executed MACs", "input", "decision")
        lines = [header] + [_table_cells(row) for row in self.rows]
        widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
        text = ["  ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip() for line in lines]
        text.insert(1, "  ".join("-" * w for w in widths))
        t = self.totals()
        if t["executed_macs_before"]:
            before, after = t["executed_macs_before"], max(t["executed_macs_after"], 1)
            change = "unchanged" if before == after else (
                f"{before / after:.2f}x fewer" if before > after else f"{after / before:.2f}x more")
            text.append(
                f"{t['rewritten']} of {t['convs']} convs rewritten, {t['stayed_in_domain']} of them fed from the S2D domain"
                f" (D2S/S2D pairs cancelled); executed MACs on {self.lane_width}-channel lanes"
                f" {_si(before)} -> {_si(t['executed_macs_after'])} ({change})"
            )
        if self.data_movement:
            alone = t.get("data_movement_ops_each_conv_alone")
            kinds = ", ".join(f"{op.split('.')[-1]} {n}" for op, n in self.data_movement["after"].items() if n)
            text.append(
                f"data-movement ops: {t['data_movement_ops_before']} in the model, "
                + (f"{alone} rewriting each conv alone, " if alone is not None else "")
                + f"{t['data_movement_ops_after']} after the rewrite" + (f" ({kinds})" if kinds else "")
            )
        for e in self.exits:
            text.append(f"back to plain layout: {_tensor(e['tensor'], e['from_conv'])}, for {_user(e['forced_by'])}")
        for name, found in self.passes.items():
            text += summary(name, found)
        return "\n".join(text)


def explain(mod: tvm.IRModule, tuning_log=None, **options) -> Report:
    """What the ``"s2d"`` pipeline does to ``mod`` for the current target: the rewrite of each
    conv (same ``options`` as ``SpaceToDepthConv2d``: ``block``, ``lane_width``, ``move_cost``,
    ``stay_in_domain``; ``tuning_log`` as the pipeline's) and, with a target, what every
    other pass of the compile does (the pipeline runs up to code generation)."""
    pipeline = S2DPipeline(tuning_log, **options)  # validates the options before any work
    target = tvm.target.Target.current(allow_none=True)
    passes = pipeline.passes(until="schedule" if target is not None else "rewrite")
    with tvm.transform.PassContext(opt_level=3):
        tvm.transform.Sequential(passes)(mod)
    return Report.from_pipeline(pipeline)


def count_ops(mod: tvm.IRModule, names) -> dict[str, int]:
    counts = dict.fromkeys(names, 0)

    def visit(expr):
        if op_name(expr) in counts:
            counts[expr.op.name] += 1

    for _, func in mod.functions_items():
        if isinstance(func, relax.Function):
            relax.analysis.post_order_visit(func, visit)
    return counts


def _row(d: Decision, lane_width: int) -> dict:
    row = {
        "name": d.name,
        "kind": d.kind,
        "status": "rewritten" if d.rewritten else "refused",
        "layout": d.layout,
        "input_shape": list(d.data_shape) if d.data_shape else None,
        "weight_shape": list(d.weight_shape) if d.weight_shape else None,
        "output_shape": list(d.out_shape) if d.out_shape else None,
        "block": list(d.plan.block) if d.plan else None,
        "out_block": list(d.plan.out_block) if d.plan else None,
        "input": "S2D domain" if d.stayed else ("S2D domain, sent back to plain" if d.in_domain else "plain"),
        "stay_cost": d.stay_cost,
        "leave_cost": d.leave_cost,
        "decided_by": d.source or None,
        "reason": d.reason,
        "in_channels": None,
        "out_channels": None,
        "kernel": None,
        "useful_macs": None,
        "executed_macs": None,
        "useful_fraction": None,
    }
    spec = d.spec
    if spec is None:
        return row
    executed = [spec.executed_macs(lane_width)]
    row.update(in_channels=[spec.in_channels], out_channels=[spec.out_channels], kernel=[list(spec.kernel_hw)],
               useful_macs=spec.useful_macs)
    if d.plan:
        executed.append(d.plan.executed_macs(lane_width))
        row["in_channels"].append(d.plan.in_channels)
        row["out_channels"].append(d.plan.out_channels)
        row["kernel"].append(list(d.plan.kernel_hw))
    row["executed_macs"] = executed
    row["useful_fraction"] = [round(spec.useful_macs / e, 4) for e in executed]
    return row


def _table_cells(row: dict) -> tuple[str, ...]:
    def arrow(values, fmt=str):
        return " -> ".join(fmt(v) for v in values) if values else "?"

    shapes = "?"
    if row["input_shape"]:
        shapes = f"{'x'.join(map(str, row['input_shape']))} -> {'x'.join(map(str, row['output_shape']))}"
    block = "x".join(map(str, row["block"])) if row["block"] else "-"
    if row["kind"] == "conv2d_transpose" and row["out_block"]:
        block = "D2S " + "x".join(map(str, row["out_block"]))
    decision = f"rewritten ({row['decided_by']})" if row["status"] == "rewritten" else f"refused: {row['reason']}"
    source = row["input"]
    if row["stay_cost"] is not None:
        source += f" (stay {_si(row['stay_cost'])} vs leave {_si(row['leave_cost'])})"
    return (
        row["name"],
        shapes,
        block,
        arrow(row["in_channels"]),
        arrow(row["out_channels"]),
        arrow(row["kernel"], lambda k: f"{k[0]}x{k[1]}"),
        arrow(row["useful_fraction"], lambda f: f"{100 * f:.0f}%"),
        arrow(row["executed_macs"], _si),
        source,
        decision,
    )


def _tensor(name: str, origin: str) -> str:
    """A tensor as the model knows it: the conv's own output by the conv's name; a variable
    the importer named (``lv12``) as what it is computed from."""
    if name == origin:
        return f"the output of {origin}"
    if re.fullmatch(r"(lv|gv)\d*", name):
        return f"a tensor computed from {origin} (by elementwise ops)"
    return f"{name} (computed from {origin})"


def _user(forced_by: str) -> str:
    """``relax.nn.conv2d dw (not rewritten: ...)`` -> ``conv2d dw (not rewritten: ...)``."""
    if forced_by == "function output":
        return "the model's output"
    return re.sub(r"^relax\.(nn\.)?", "", forced_by)


def _si(n: float) -> str:
    if n == float("inf"):
        return "n/a"
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.2f}{unit}"
    return str(int(n))


def scalar_report(lowered: tvm.IRModule) -> list[str]:
    """What of a module lowered for Hexagon is left to TVM's scalar lowering, one line a kind
    (what ``compile --target hexagon`` prints; ``run`` measures the same kernels)."""
    return scalar_lines(list_kernels(lowered)) or [
        "left to TVM's scalar lowering: nothing but the float input's quantize and output's dequantize"]


def list_kernels(mod: tvm.IRModule) -> list[KernelRun]:
    """The kernels ``main`` calls, in order, with their kinds (not run: packets 0); pure
    reshapes, views in the build, left out."""
    main = mod["main"]
    float_inputs = {p for p in main.params if str(p.ty.dtype).startswith("float")}
    returned = set(relax.analysis.free_vars(main.body.body))
    kernels = []
    for block in main.body.blocks:
        for binding in block.bindings:
            expr = binding.value
            if not is_call(expr, "relax.call_tir"):
                continue
            gv, operands = expr.args[0], expr.args[1].fields
            specs = output_specs(expr.ty)
            if is_view(mod[gv], operands, specs):
                continue
            kind = kernel_kind(gv.name_hint, operands, specs, float_inputs, binding.var in returned)
            kernels.append(KernelRun(gv.name_hint, kind, gv.name_hint.startswith("hvx_"), 0))
    return kernels


def attribution(default: float, without_rewrite: float, full: float, rewritten: tuple[int, int] | None = None,
                unit: str = "faster") -> str:
    """What each step gained, measured (times or packets: lower is better): tvm-s2d's kernels
    and layouts (TVM's default -> tvm-s2d without the rewrite) and the rewrite itself
    (without -> with), so the rewrite is never credited with what the schedules did.
    ``rewritten``: (convs rewritten, convs) for the build."""
    def ratio(before, after):
        if after <= 0 or before <= 0:
            return "n/a"
        return f"{before / after:.2f}x {unit}" if before >= after else f"{after / before:.2f}x {_opposite(unit)}"

    rewrite = f"the rewrite {ratio(without_rewrite, full)}"
    if rewritten is not None:
        done, total = rewritten
        rewrite += f", {done} of {total} convs rewritten"
        if done == 0:  # the same build twice: what differs is measurement noise
            rewrite = (f"the rewrite nothing: 0 of {total} convs rewritten (the build's cost model chose none here; the"
                       f" two builds are the same, {ratio(without_rewrite, full)} is measurement noise)")
    return (f"what each step gained: tvm-s2d's kernels and layouts {ratio(default, without_rewrite)} (TVM's default ->"
            f" tvm-s2d without the rewrite); {rewrite}")


def _opposite(unit: str) -> str:
    return {"faster": "slower", "fewer packets": "more packets"}.get(unit, f"not {unit}")
