"""Applying a tuning log at compile time: the best record per workload for the current
target gives the conv's block (``SpaceToDepthConv2d(tuned_blocks=tuned_blocks(log))``) and its
schedule knobs (``ScheduleConvs`` on CPUs, ``HexagonConvs``' mapping on Hexagon; matched by
the signature of the conv the measured kernel computed). Each function here turns a log path
into the data a pass takes; the log is read once per target."""

from __future__ import annotations

import tvm

from ..schedules import x86
from .log import Record, TuningLog
from .space import Config
from .workload import Layer, call_layer, target_key

#: ``tuned_blocks``' answer for a conv the log keeps as it is.
AS_IS = (1, 1)


def best_records(tuning_log, target: tvm.target.Target | None) -> dict[str, Record]:
    """Workload key -> best record for ``target`` (empty without a log or a target)."""
    if tuning_log is None or target is None:
        return {}
    return TuningLog(tuning_log).best(target_key(target))


def tuned_block(record: Record) -> tuple[int, int] | None:
    return Config.from_json(record.config).block


def _per_target(read):
    """``read(target)`` memoized per target key (the current target when called)."""
    cache: dict[str, object] = {}

    def get():
        target = tvm.target.Target.current(allow_none=True)
        if target is None:
            return None
        key = target_key(target)
        if key not in cache:
            cache[key] = read(target)
        return cache[key]

    return get


def tuned_blocks(tuning_log):
    """``SpaceToDepthConv2d``'s ``tuned_blocks`` for a log (None without one): a conv2d call
    -> the block of its best record for the current target, ``AS_IS`` when that record keeps
    the conv as it is, None without a record."""
    if tuning_log is None:
        return None
    records = _per_target(lambda target: best_records(tuning_log, target))

    def block(call) -> tuple[int, int] | None:
        layer = call_layer("", call)
        record = (records() or {}).get(layer.key) if isinstance(layer, Layer) else None
        if record is None:
            return None
        return tuned_block(record) or AS_IS

    return block


def _configs_by_conv(tuning_log):
    """``target -> {conv signature: best Config}``, read once per target."""
    by_target: dict[str, dict[str, Config]] = {}

    def configs(target: tvm.target.Target) -> dict[str, Config]:
        key = target_key(target)
        if key not in by_target:
            by_target[key] = {r.extra["conv"]: Config.from_json(r.config)
                              for r in best_records(tuning_log, target).values() if r.extra.get("conv")}
        return by_target[key]

    return configs


def tuned_knobs(tuning_log):
    """``ScheduleConvs``'s ``knobs`` function for a log (None without one)."""
    if tuning_log is None:
        return None
    configs = _configs_by_conv(tuning_log)

    def knobs(conv: x86.ConvBlock, lanes: int) -> x86.ConvKnobs | None:
        target = tvm.target.Target.current(allow_none=True)
        config = configs(target).get(conv.signature) if target is not None else None
        if config is None or config.vectors is None:
            return None
        return x86.knobs_for(conv, config.vectors, config.tile, lanes)

    return knobs


def tuned_hexagon_knobs(tuning_log):
    """``HexagonConvs``'s ``knobs`` function for a log: conv signature -> (mapping, knob)."""
    if tuning_log is None:
        return None
    configs = _configs_by_conv(tuning_log)

    def knobs(signature: str) -> tuple[str, int] | None:
        target = tvm.target.Target.current(allow_none=True)
        config = configs(target).get(signature) if target is not None else None
        if config is None or config.mapping is None:
            return None
        return config.mapping, config.tile

    return knobs
