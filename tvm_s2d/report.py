"""Per-layer report of what ``SpaceToDepthConv2d`` does (or would do) to a module."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import tvm
from tvm import relax
from tvm.relax.expr_functor import PyExprVisitor, visitor

from .passes.conv2d import CONV2D, Decision, decide
from .passes.space_to_depth_conv2d import check_options


@dataclass
class Report:
    """One row (a dict) per conv; ``str(report)`` is a table, ``to_json()`` the same data."""

    rows: list[dict] = field(default_factory=list)
    lane_width: int = 32

    @classmethod
    def from_decisions(cls, decisions: list[Decision], lane_width: int = 32) -> Report:
        return cls([_row(d, lane_width) for d in decisions], lane_width)

    @property
    def rewritten(self) -> list[dict]:
        return [row for row in self.rows if row["status"] == "rewritten"]

    def totals(self) -> dict:
        """Executed MACs over all convs, before and after (refused convs count unchanged)."""
        before = sum(r["executed_macs"][0] for r in self.rows if r["executed_macs"])
        after = sum(r["executed_macs"][-1] for r in self.rows if r["executed_macs"])
        return {
            "convs": len(self.rows),
            "rewritten": len(self.rewritten),
            "executed_macs_before": before,
            "executed_macs_after": after,
        }

    def to_json(self) -> str:
        return json.dumps({"lane_width": self.lane_width, "totals": self.totals(), "layers": self.rows}, indent=2)

    def __str__(self) -> str:
        if not self.rows:
            return "no conv2d in the module"
        header = ("conv", "input -> output", "block", "Cin", "Cout", "kernel", f"useful/{self.lane_width}-lane MAC", "executed MACs", "decision")
        lines = [header] + [_table_cells(row) for row in self.rows]
        widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
        text = ["  ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip() for line in lines]
        text.insert(1, "  ".join("-" * w for w in widths))
        t = self.totals()
        if t["executed_macs_before"]:
            ratio = t["executed_macs_before"] / max(t["executed_macs_after"], 1)
            text.append(
                f"{t['rewritten']} of {t['convs']} convs rewritten; executed MACs on {self.lane_width}-channel lanes "
                f"{_si(t['executed_macs_before'])} -> {_si(t['executed_macs_after'])} ({ratio:.2f}x fewer)"
            )
        return "\n".join(text)


def explain(mod: tvm.IRModule, block=None, lane_width: int = 32) -> Report:
    """What ``SpaceToDepthConv2d(block, lane_width)`` would do to each conv of ``mod``."""
    block, lane_width = check_options(block, lane_width)
    collector = _Collector(block, lane_width)
    for _, func in mod.functions_items():
        if isinstance(func, relax.Function):
            collector.visit_expr(func)
    return Report.from_decisions(collector.decisions, lane_width)


@visitor
class _Collector(PyExprVisitor):
    def __init__(self, block, lane_width):
        self.block, self.lane_width = block, lane_width
        self.decisions: list[Decision] = []

    def visit_var_binding_(self, binding: relax.VarBinding) -> None:
        if CONV2D.match(binding.value):
            self.decisions.append(decide(binding.var.name, binding.value, self.block, self.lane_width))
        super().visit_var_binding_(binding)


def _row(d: Decision, lane_width: int) -> dict:
    row = {
        "name": d.name,
        "status": "rewritten" if d.rewritten else "refused",
        "layout": d.layout,
        "input_shape": list(d.data_shape) if d.data_shape else None,
        "weight_shape": list(d.weight_shape) if d.weight_shape else None,
        "output_shape": list(d.out_shape) if d.out_shape else None,
        "block": list(d.plan.block) if d.plan else None,
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
    row.update(
        in_channels=[spec.in_channels],
        out_channels=[spec.out_channels],
        kernel=[list(spec.kernel_hw)],
        useful_macs=spec.useful_macs,
    )
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
    decision = f"rewritten ({row['decided_by']})" if row["status"] == "rewritten" else f"refused: {row['reason']}"
    return (
        row["name"],
        shapes,
        block,
        arrow(row["in_channels"]),
        arrow(row["out_channels"]),
        arrow(row["kernel"], lambda k: f"{k[0]}x{k[1]}"),
        arrow(row["useful_fraction"], lambda f: f"{100 * f:.0f}%"),
        arrow(row["executed_macs"], _si),
        decision,
    )


def _si(n: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.2f}{unit}"
    return str(int(n))
