"""The search space of one layer: the S2D block (or none) times the target's schedule knobs."""

from __future__ import annotations

import json
from dataclasses import dataclass

from ..geometry import Unsupported
from .workload import Layer

BLOCKS = ((2, 2), (4, 4), (1, 2), (1, 4), (2, 1), (4, 1), (3, 3))
CPU_VECTORS = (1, 2)  # SIMD vectors along the vector axis per register tile
CPU_TILES = (4, 8)  # register tile along the other axis


@dataclass(frozen=True)
class Config:
    block: tuple[int, int] | None  # None: the conv as it is
    vectors: int | None = None  # CPU schedule knobs (schedules.x86.knobs_for)
    tile: int | None = None

    def to_json(self) -> dict:
        return {"block": list(self.block) if self.block else None, "vectors": self.vectors, "tile": self.tile}

    @property
    def key(self) -> str:
        return json.dumps(self.to_json(), sort_keys=True)

    @classmethod
    def from_json(cls, data: dict) -> "Config":
        block = data.get("block")
        return cls(tuple(block) if block else None, data.get("vectors"), data.get("tile"))

    def __str__(self) -> str:
        block = "no S2D" if self.block is None else f"S2D {self.block[0]}x{self.block[1]}"
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


def search_space(layer: Layer, cpu: bool) -> list[Config]:
    """Every config for ``layer``: blocks x (on CPUs) schedule knobs."""
    blocks = [None, *valid_blocks(layer)]
    if not cpu:
        return [Config(b) for b in blocks]
    return [Config(b, v, t) for b in blocks for v in CPU_VECTORS for t in CPU_TILES]
