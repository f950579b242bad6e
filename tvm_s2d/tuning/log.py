"""Tuning records, one JSON object per line in ``tuning_logs/<name>.jsonl``.

Appends are crash-safe: each record is one ``write`` of a whole line, flushed and fsynced;
a line cut short by a crash is skipped on reading (with a warning) and the next append
starts on a fresh line. Corrupt or foreign lines are skipped with a warning naming the file
and the line.
"""

from __future__ import annotations

import json
import math
import os
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import tvm

SCHEMA = 1
FIELDS = ("schema", "workload", "target", "config", "cost", "unit", "error", "timestamp", "tvm")


class LogError(ValueError):
    """A log line that is not a tuning record of this schema."""


@dataclass(frozen=True)
class Record:
    workload: str  # workload.workload_key
    target: str  # target key (workload.target_key)
    config: dict  # space.Config.to_json()
    cost: float | None  # None when the measurement failed
    unit: str  # "s" or "packets"
    error: str | None = None
    timestamp: float = field(default_factory=time.time)
    tvm: str = tvm.__version__
    schema: int = SCHEMA
    extra: dict = field(default_factory=dict)  # e.g. the device that measured, the conv schedule key

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, line: str) -> "Record":
        try:
            data = json.loads(line)
        except json.JSONDecodeError as exc:
            raise LogError(f"not JSON ({exc.msg})") from None
        if not isinstance(data, dict):
            raise LogError("not a JSON object")
        if data.get("schema") != SCHEMA:
            raise LogError(f"schema {data.get('schema')!r}, expected {SCHEMA}")
        missing = [f for f in FIELDS if f not in data]
        if missing:
            raise LogError(f"missing field(s) {', '.join(missing)}")
        cost = data["cost"]
        if cost is not None and (not isinstance(cost, (int, float)) or not math.isfinite(cost) or cost < 0):
            raise LogError(f"bad cost {cost!r}")
        if not isinstance(data["config"], dict):
            raise LogError("config is not an object")
        return cls(**{k: data[k] for k in FIELDS}, extra=data.get("extra", {}))

    @property
    def ok(self) -> bool:
        return self.error is None and self.cost is not None


class TuningLog:
    """An append-only JSONL file of ``Record``s."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def append(self, record: Record) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "ab+") as f:
            f.seek(0, os.SEEK_END)
            prefix = b""
            if f.tell() > 0:
                f.seek(-1, os.SEEK_END)
                if f.read(1) != b"\n":  # a line cut short by a crash: do not glue onto it
                    prefix = b"\n"
            f.write(prefix + record.to_json().encode() + b"\n")
            f.flush()
            os.fsync(f.fileno())

    def records(self) -> list[Record]:
        """All readable records; unreadable lines are skipped with a warning."""
        if not self.path.exists():
            return []
        out = []
        with open(self.path, encoding="utf-8", errors="replace") as f:
            for number, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    out.append(Record.from_json(line))
                except LogError as exc:
                    warnings.warn(f"{self.path}:{number}: skipped: {exc}", stacklevel=2)
        return out

    def best(self, target: str) -> dict[str, Record]:
        """The lowest-cost successful record per workload for ``target``."""
        return best_of(self.records(), target)


def best_of(records: list[Record], target: str) -> dict[str, Record]:
    """The lowest-cost successful record per workload for ``target``."""
    best: dict[str, Record] = {}
    for r in records:
        if r.target == target and r.ok and (r.workload not in best or r.cost < best[r.workload].cost):
            best[r.workload] = r
    return best
