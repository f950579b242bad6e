"""The search space of one layer: the S2D block (or none) times the target's schedule knobs
(CPU: ``schedules.x86`` register tiles; Hexagon: the HVX mapping and its knob,
``schedules.hexagon.MAPPINGS``)."""

from __future__ import annotations

import json
from dataclasses import dataclass

from ..geometry import Unsupported
from .workload import Layer

BLOCKS = ((2, 2), (4, 4), (1, 2), (1, 4), (2, 1), (4, 1), (3, 3))
CPU_VECTORS = (1, 2)  # SIMD vectors along the vector axis per register tile
CPU_TILES = (4, 8)  # register tile along the other axis
HEXAGON_MAPPINGS = (("lanes", 4), ("lanes", 8), ("width", 4), ("width", 8))  # (mapping, knob) tried


@dataclass(frozen=True)
class Config:
    block: tuple[int, int] | None  # None: the conv as it is
    vectors: int | None = None  # CPU schedule knobs (schedules.x86.knobs_for)
    tile: int | None = None  # CPU: register tile; Hexagon: the mapping's knob
    mapping: str | None = None  # Hexagon: "lanes" (channel-in-lanes) or "width" (hexagon.layer)

    def to_json(self) -> dict:
        data = {"block": list(self.block) if self.block else None, "vectors": self.vectors, "tile": self.tile}
        return {**data, "mapping": self.mapping} if self.mapping else data

    @property
    def key(self) -> str:
        return json.dumps(self.to_json(), sort_keys=True)

    @classmethod
    def from_json(cls, data: dict) -> "Config":
        block = data.get("block")
        return cls(tuple(block) if block else None, data.get("vectors"), data.get("tile"), data.get("mapping"))

    def __str__(self) -> str:
        block = "no S2D" if self.block is None else f"S2D {self.block[0]}x{self.block[1]}"
        if self.mapping:
            return f"{block}, {self.mapping} x{self.tile}"
        return block if self.vectors is None else f"{block}, {self.vectors} vec x {self.tile}"


def valid_blocks(layer: Layer) -> list[tuple[int, int]]:
    """Blocks the rewrite can apply exactly to this layer."""
    ok = []
    for block in BLOCKS:
        try:
            layer.spec.plan(block, layout=layer.layout)
        except Unsupported:
            continue
        ok.append(block)
    return ok


def running_conv(layer: Layer, block) -> tuple[int, int, tuple[int, int], int]:
    """(output channels, output width, strides, kernel taps) of the conv that runs with
    ``block`` (S2D by the stride makes a strided conv stride 1): ``default_mapping``'s arguments."""
    if block is None:
        return layer.spec.out_channels, layer.spec.out_hw[1], layer.spec.strides, layer.spec.kernel_hw[0] * layer.spec.kernel_hw[1]
    plan = layer.spec.plan(block, layout=layer.layout)
    return plan.out_channels, plan.conv_out_hw[1], plan.strides, plan.kernel_hw[0] * plan.kernel_hw[1]


def search_space(layer: Layer, cpu: bool) -> list[Config]:
    """Every config for ``layer``: blocks x the target's schedule knobs (CPU: the default knobs
    and register tiles; Hexagon: mappings, the width mapping only where the conv that runs has stride 1)."""
    blocks = [None, *valid_blocks(layer)]
    if cpu:  # Config(b) first: the default knobs (x86.default_knobs), what the untuned pipeline runs
        return [c for b in blocks for c in (Config(b), *(Config(b, v, t) for v in CPU_VECTORS for t in CPU_TILES))]
    return [Config(b, tile=knob, mapping=m) for b in blocks for m, knob in HEXAGON_MAPPINGS
            if m != "width" or running_conv(layer, b)[2] == (1, 1)]
