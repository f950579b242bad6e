"""XGBoost cost model: predicts log-cost from features of a layer and a config, trained on
measured records of every layer of the same target (records of other layers warm-start a
new one), and ranks the configs not yet measured."""

from __future__ import annotations

import math

import numpy as np

from ..geometry import Unsupported, choose_block
from ..targets import default_model
from ..schedules.hexagon import default_mapping
from ..tuning.log import Record
from ..tuning.space import Config, running_conv
from ..tuning.workload import Layer

FEATURES = ("log_in_channels", "log_out_channels", "log_height", "log_width", "kernel_h", "kernel_w", "stride",
            "block_h", "block_w", "conv_channels_in", "conv_channels_out", "conv_taps", "log_executed_macs",
            "lane8_utilization", "lane32_utilization", "log_bytes_moved", "vectors", "tile", "width_mapping")


def features(layer: Layer, config: Config) -> list[float]:
    """The model's inputs, named by ``FEATURES``."""
    spec = layer.spec
    plan = None
    if config.block is not None:
        try:
            plan = spec.plan(config.block, layout=layer.layout)
        except Unsupported:
            pass
    conv = plan or spec  # what runs
    bh, bw = config.block or (1, 1)
    moved = plan.entry_bytes() + plan.exit_bytes() if plan is not None else 0
    return [
        math.log2(spec.in_channels), math.log2(spec.out_channels), math.log2(spec.in_hw[0]), math.log2(spec.in_hw[1]),
        spec.kernel_hw[0], spec.kernel_hw[1], spec.strides[1], bh, bw, conv.in_channels, conv.out_channels,
        conv.kernel_hw[0] * conv.kernel_hw[1], math.log2(max(conv.executed_macs(1), 1)),
        spec.useful_macs / conv.executed_macs(8), spec.useful_macs / conv.executed_macs(32), math.log2(1 + moved),
        config.vectors or 0, config.tile or 0, float(config.mapping == "width"),
    ]


class XGBCostModel:
    """Fit on (layer, config, cost) triples; ``rank`` orders candidates cheapest first."""

    def __init__(self, seed: int = 0):
        self.seed = seed
        self.booster = None

    def fit(self, samples: list[tuple[Layer, Config, float]]) -> bool:
        """Train; False (and no model) with fewer than 4 samples."""
        samples = [s for s in samples if s[2] is not None and s[2] > 0]
        if len(samples) < 4:
            self.booster = None
            return False
        import xgboost as xgb

        x = np.array([features(layer, config) for layer, config, _ in samples])
        y = np.log([cost for _, _, cost in samples])
        params = {"max_depth": 4, "eta": 0.1, "seed": self.seed, "nthread": 1, "objective": "reg:squarederror"}
        self.booster = xgb.train(params, xgb.DMatrix(x, label=y), num_boost_round=200)
        return True

    def predict(self, layer: Layer, configs: list[Config]) -> np.ndarray:
        if self.booster is None:
            raise RuntimeError("the cost model is not trained")
        import xgboost as xgb

        return self.booster.predict(xgb.DMatrix(np.array([features(layer, c) for c in configs])))

    def rank(self, layer: Layer, configs: list[Config]) -> list[Config]:
        order = np.argsort(self.predict(layer, configs), kind="stable")
        return [configs[i] for i in order]


def default_configs(layer: Layer, target, space: list[Config]) -> list[Config]:
    """What the untuned pipeline runs (the rewrite's cost model for the target, default knobs
    or HVX mapping), then the original conv with the same defaults: measured first, so tuning
    never ends worse than either."""
    try:
        block = choose_block(layer.spec, default_model(target, None, None), layout=layer.layout).block
    except Unsupported:
        block = None
    out = []
    for b in dict.fromkeys([block, None]):
        candidates = [c for c in space if c.block == b]
        if not candidates:
            continue
        if candidates[0].mapping is not None:  # Hexagon: the mapping HexagonConvs uses without a record
            mapping, knob = default_mapping(*running_conv(layer, b))
            candidates = [c for c in candidates if (c.mapping, c.tile) == (mapping, knob)] or candidates
        out.append(candidates[0])
    return out or space[:1]


def samples_from(records: list[Record], target: str) -> list[tuple[Layer, Config, float]]:
    """Training samples from the successful records of ``target`` (all workloads)."""
    out = []
    for r in records:
        if r.target == target and r.ok:
            try:
                out.append((Layer.from_key(r.workload), Config.from_json(r.config), r.cost))
            except (ValueError, KeyError, TypeError):
                continue
    return out
