"""One refusal protocol for every pass, as the onnxscript rewriter's rules have it: a pass
records an ``Outcome`` for each thing it looked at (a conv, a data-movement op, a kernel):
applied, with what it did, or not, with the reason. ``report`` and ``compile`` print them, and
tests assert the reasons.

Each pass keeps ``outcomes`` (a list, reset when it runs) and records with ``applied`` and
``refused``; ``summary`` turns one pass's outcomes into report lines, refusals grouped by
reason.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass

#: Set (not 0) in the tests: a pass's internal error raises instead of becoming a refusal.
STRICT_ENV = "TVM_S2D_STRICT"


def strict() -> bool:
    return os.environ.get(STRICT_ENV, "") not in ("", "0")


@dataclass(frozen=True)
class Outcome:
    name: str  # the conv, tensor or kernel, by the model's name where it has one
    applied: bool
    reason: str  # what the pass did, or why it did not

    def to_json(self) -> dict:
        return asdict(self)


def applied(outcomes: list[Outcome], name: str, what: str) -> None:
    outcomes.append(Outcome(name, True, what))


def refused(outcomes: list[Outcome], name: str, reason: str) -> None:
    outcomes.append(Outcome(name, False, reason))


def summary(pass_name: str, outcomes: list[Outcome], shown: int = 6) -> list[str]:
    """``pass: N of M applied (what: names)``, then one line per refusal reason with the names."""
    if not outcomes:
        return []

    def grouped(items):
        groups: dict[str, list[str]] = {}
        for o in items:
            groups.setdefault(o.reason, []).append(o.name)
        return groups

    def names(found):
        return ", ".join(found[:shown]) + (f" and {len(found) - shown} more" if len(found) > shown else "")

    done = [o for o in outcomes if o.applied]
    lines = [f"{pass_name}: {len(done)} of {len(outcomes)} applied"]
    lines += [f"  {what}: {names(found)}" for what, found in grouped(done).items()]
    lines += [f"  not applied, {reason}: {names(found)}" for reason, found in grouped(o for o in outcomes if not o.applied).items()]
    return lines
