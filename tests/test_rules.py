"""``passes.rules``: rules applied in one traversal, one outcome per expression decided."""

import numpy as np
import tvm
from tvm import relax
from tvm.relax.dpl import is_op, wildcard
from tvm.script import relax as R

from tvm_s2d.passes.rules import Rule, RuleSet, rewrite_rules


@tvm.script.ir_module
class Before:
    @R.function
    def main(x: R.Tensor((2, 3), "float32")):
        with R.dataflow():
            a = R.sqrt(x)
            b = R.exp(a)
            c = R.exp(x)
            d = R.add(b, c)
            R.output(d)
        return d


def _rules(log):
    x = wildcard()

    def sqrt_as_itself(call, matches):  # a clean-up step, silent
        log.append("sqrt")
        return "never rewritten"

    def exp_of_sqrt(call, matches):
        log.append("exp")
        if not isinstance(matches[x], relax.Call):  # the matcher sees through ``a`` to its sqrt
            return "not the exp of a sqrt"
        return relax.op.exp(relax.op.sqrt(relax.op.sqrt(matches[x]))), "exp of a sqrt: made longer"

    return [Rule(is_op("relax.sqrt")(wildcard()), sqrt_as_itself, recorded=False),
            Rule(is_op("relax.exp")(x), exp_of_sqrt)]


def test_rules_decide_each_expression_once_and_record_only_theirs():
    log, outcomes = [], []
    new = rewrite_rules(_rules(log), Before["main"], outcomes)
    assert new is not None
    assert sorted((o.name, o.applied, o.reason) for o in outcomes) == [
        ("b", True, "exp of a sqrt: made longer"), ("c", False, "not the exp of a sqrt")]
    assert "sqrt" in log  # the silent rule was asked, its refusal not recorded
    mod = tvm.IRModule({"main": new})
    x = np.random.default_rng(0).uniform(1, 2, (2, 3)).astype("float32")
    got = relax.VirtualMachine(tvm.compile(mod, "llvm"), tvm.cpu())["main"](tvm.runtime.tensor(x)).numpy()
    np.testing.assert_allclose(got, np.exp(np.sqrt(np.sqrt(np.sqrt(x)))) + np.exp(x), rtol=1e-6)


def test_nothing_applied_is_none():
    outcomes = []
    rules = [Rule(is_op("relax.exp")(wildcard()), lambda call, matches: "left")]
    assert rewrite_rules(rules, Before["main"], outcomes) is None
    assert [o.reason for o in outcomes] == ["left", "left"]


def test_a_rule_set_pass_runs_its_rules_and_its_finish():
    @tvm.transform.module_pass(opt_level=0, name="Probe")
    class Probe(RuleSet):
        def __init__(self):
            super().__init__([Rule(is_op("relax.exp")(wildcard()), lambda call, matches: "left")])
            self.finished = 0

        def finish(self, mod):
            self.finished += 1
            return mod

    probe = Probe()
    probe(Before)
    probe(Before)
    assert len(probe.outcomes) == 2 and probe.finished == 2  # outcomes of the last run only
