"""Applying a tuning log at compile time: ``Tuned.read(log, target)`` parses the log once for a
target (one key, ``workload.target_key``) into what the passes take: each conv's block
(``SpaceToDepthConv2d``'s ``tuned_blocks``, by the workload of the conv call) and schedule
knobs (``ScheduleConvs`` on CPUs, ``HexagonConvs``' mapping on Hexagon; by the signature of
the conv the measured kernel computed). ``TunedLog(log)`` gives the passes those three
functions for whatever target is current when they run, each target's log read once."""

from __future__ import annotations

from dataclasses import dataclass, field

import tvm

from ..schedules import x86
from .log import Record, TuningLog
from .space import Config
from .workload import Layer, call_layer, target_key

#: ``Tuned.block``'s answer for a conv the log keeps as it is.
AS_IS = (1, 1)


@dataclass(frozen=True)
class Tuned:
    """The best record per workload for one target, and the configs of those that name the
    conv they measured (by its signature)."""

    records: dict[str, Record] = field(default_factory=dict)  # workload key -> best record
    configs: dict[str, Config] = field(default_factory=dict)  # conv signature -> best config

    @classmethod
    def read(cls, tuning_log, target: tvm.target.Target | None) -> Tuned:
        """The log's best records for ``target`` (nothing without a log or a target)."""
        if tuning_log is None or target is None:
            return cls()
        records = TuningLog(tuning_log).best(target_key(target))
        configs = {r.extra["conv"]: Config.from_json(r.config) for r in records.values() if r.extra.get("conv")}
        return cls(records, configs)

    def block(self, call) -> tuple[int, int] | None:
        """A conv2d call's block: its best record's, ``AS_IS`` when that record keeps the conv as
        it is, None without a record."""
        layer = call_layer("", call)
        record = self.records.get(layer.key) if isinstance(layer, Layer) else None
        if record is None:
            return None
        return Config.from_json(record.config).block or AS_IS

    def knobs(self, conv: x86.ConvBlock, lanes: int) -> x86.ConvKnobs | None:
        """A CPU conv's schedule knobs (``ScheduleConvs``)."""
        config = self.configs.get(conv.signature)
        if config is None or config.vectors is None:
            return None
        return x86.knobs_for(conv, config.vectors, config.tile, lanes)

    def hexagon_knobs(self, signature: str) -> tuple[str, int] | None:
        """An HVX conv's ``(mapping, knob)`` (``HexagonConvs``)."""
        config = self.configs.get(signature)
        if config is None or config.mapping is None:
            return None
        return config.mapping, config.tile


class TunedLog:
    """A tuning log's ``Tuned`` values for the current target (``tvm.target.Target.current``
    when a pass asks), each target's read once: ``block``, ``knobs`` and ``hexagon_knobs``
    are the functions the passes take. Without a current target nothing is tuned."""

    def __init__(self, tuning_log):
        self.tuning_log = tuning_log
        self._by_target: dict[str, Tuned] = {}

    def current(self) -> Tuned:
        target = tvm.target.Target.current(allow_none=True)
        if target is None:
            return Tuned()
        key = target_key(target)
        if key not in self._by_target:
            self._by_target[key] = Tuned.read(self.tuning_log, target)
        return self._by_target[key]

    def block(self, call) -> tuple[int, int] | None:
        return self.current().block(call)

    def knobs(self, conv: x86.ConvBlock, lanes: int) -> x86.ConvKnobs | None:
        return self.current().knobs(conv, lanes)

    def hexagon_knobs(self, signature: str) -> tuple[str, int] | None:
        return self.current().hexagon_knobs(signature)
