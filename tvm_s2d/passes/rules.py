"""Rewrite rules and the passes made of them, in the onnxscript rewriter's form.

A ``Rule`` is a pattern (TVM's pattern language, built once) and a decision: the rewritten
expression and what was done, or the reason the match is left as it was. ``rewrite_rules``
applies a set of rules in one traversal of a Relax function (``rewrite_call`` on the patterns
joined with ``|``, each match decided by the rule whose pattern it is) with one ``Outcome`` per
expression decided; ``RuleSet`` is the shell of a module pass of rules (``RemoveDropout``,
``SumAsAdds``, ``PowerAsRoots``, ``FoldBatchNorm``); ``CpuRuleSet`` the same on LLVM CPU targets
only, with the target's vector lanes (``CpuDense``, ``CpuPointwiseRows``, ``CpuTileWidth``).
"""

from __future__ import annotations

import functools
import operator
from dataclasses import dataclass
from typing import Callable, Sequence

import tvm
from tvm import relax
from tvm.relax.dpl import DFPattern, rewrite_call

from ..targets import is_cpu, pass_target, vector_lanes
from .outcome import Outcome, applied, refused
from .relax_tools import map_relax_functions

#: A decision: ``(new expression, what was done)``, or the reason the match is left, or None
#: when the match is not the rule's concern (left without an outcome).
Decision = "tuple[relax.Expr, str] | str"


@dataclass(frozen=True)
class Rule:
    """``pattern`` and ``decide(expr, matches) -> Decision``. ``recorded``: whether its
    decisions are outcomes (False for a clean-up step, such as dropping identity broadcasts,
    whose refusals would be a line for every broadcast of the model)."""

    pattern: DFPattern
    decide: Callable[[relax.Expr, dict], object]
    recorded: bool = True


def rewrite_rules(rules: Sequence[Rule], func: relax.Function, outcomes: list[Outcome]) -> relax.Function | None:
    """``rules`` applied to ``func`` in one ``rewrite_call``, with one outcome per expression
    decided. Each expression is named by the variable ``func`` binds it to; rewrite_call repeats
    to a fixpoint, so an expression it meets again is decided once, and one that ``func`` did not
    bind (a rewrite wrote it) is left alone, as is a variable bound to another (its match is the
    other's binding, decided there). The new function, or None when nothing applied."""
    names = {value: var.name for var, value in relax.analysis.get_var2val(func).items()}
    decided: dict[str, tuple[Outcome, bool]] = {}

    def rewriter(expr: relax.Expr, matches) -> relax.Expr:
        name = names.get(expr)
        if name is None or isinstance(expr, relax.Var):  # ``b = a``: the match is a's own binding
            return expr
        rule = next(r for r in rules if r.pattern in matches)
        found = rule.decide(expr, matches)
        if found is None:  # not the rule's concern (a 3x3 conv to a rule of 1x1 convs): no outcome
            return expr
        if isinstance(found, str):
            decided.setdefault(name, (Outcome(name, False, found), rule.recorded))
            return expr
        decided[name] = (Outcome(name, True, found[1]), rule.recorded)
        return found[0]

    rewritten = rewrite_call(functools.reduce(operator.or_, [r.pattern for r in rules]), rewriter, func)
    for outcome, recorded in decided.values():
        if recorded:
            (applied if outcome.applied else refused)(outcomes, outcome.name, outcome.reason)
    return rewritten if any(o.applied for o, _ in decided.values()) else None


class RuleSet:
    """The shell of a module pass of rules: a subclass passes its rules (patterns built once) to
    ``__init__`` and decorates itself with ``tvm.transform.module_pass``; ``outcomes`` per
    expression decided; ``finish(mod)`` runs after the rules (default: nothing)."""

    def __init__(self, rules: Sequence[Rule]):
        self.rules = list(rules)
        self.outcomes: list[Outcome] = []

    def transform_module(self, mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        self.outcomes = []
        mod = map_relax_functions(mod, lambda func: rewrite_rules(self.rules, func, self.outcomes))
        return self.finish(mod)

    def finish(self, mod: tvm.IRModule) -> tvm.IRModule:
        return mod


class CpuPass:
    """The shell of a module pass that runs on LLVM CPU targets only (the pass's ``target``, else
    the current one): ``outcomes``, ``lanes`` (the target's float32 vector lanes) and ``run(mod, target)``
    (``CpuIntegerConvs``, ``CpuRequantizeInt32``, ``CpuResize``, ``VectorMath``, the ``CpuRuleSet`` passes)."""

    def __init__(self, target: tvm.target.Target | None = None):
        self.target, self.lanes = target, 8
        self.outcomes: list[Outcome] = []

    def transform_module(self, mod: tvm.IRModule, ctx) -> tvm.IRModule:
        self.outcomes = []
        target = pass_target(self.target)
        if not is_cpu(target):
            return mod
        self.lanes = vector_lanes(target)
        return self.run(mod, target)

    def run(self, mod: tvm.IRModule, target: tvm.target.Target) -> tvm.IRModule:
        raise NotImplementedError


class CpuRuleSet(CpuPass, RuleSet):
    """A ``RuleSet`` that runs on LLVM CPU targets only, with ``lanes`` (``CpuPass``)."""

    def __init__(self, rules: Sequence[Rule], target: tvm.target.Target | None = None):
        RuleSet.__init__(self, rules)
        CpuPass.__init__(self, target)

    def run(self, mod: tvm.IRModule, target: tvm.target.Target) -> tvm.IRModule:
        return RuleSet.transform_module(self, mod, None)
