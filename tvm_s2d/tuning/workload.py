"""Layers of a model as tuning workloads: a key that names a conv by what it computes
(shapes, dtype, kernel, stride, padding, dilation, layout), independent of model and node
names, and a key for the target."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

import numpy as np
import tvm
from tvm import relax

from ..geometry import Conv2dSpec, Unsupported
from ..passes.relax_tools import CONV2D, conv_spec
from ..targets import is_cpu


@dataclass(frozen=True)
class Layer:
    """One conv of a model, as the tuner sees it."""

    name: str  # the conv's name in the model (for the progress bar and the table only)
    spec: Conv2dSpec
    layout: str
    dtype: str

    @property
    def input_shape(self) -> tuple[int, ...]:
        n, (h, w), c = self.spec.batch, self.spec.in_hw, self.spec.in_channels
        return (n, c, h, w) if self.layout == "NCHW" else (n, h, w, c)

    @property
    def key(self) -> str:
        return workload_key(self.spec, self.layout, self.dtype)

    @classmethod
    def from_key(cls, key: str, name: str = "") -> "Layer":
        data = json.loads(key)
        if data.pop("op") != "conv2d":
            raise ValueError(f"not a conv2d workload: {key}")
        layout, dtype = data.pop("layout"), data.pop("dtype")
        fields = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
        return cls(name, Conv2dSpec(**fields, itemsize=np.dtype(dtype).itemsize), layout, dtype)


def workload_key(spec: Conv2dSpec, layout: str, dtype: str) -> str:
    fields = asdict(spec)
    fields.pop("itemsize")
    return json.dumps({"op": "conv2d", "layout": layout, "dtype": dtype, **fields}, sort_keys=True, separators=(",", ":"))


def target_key(target: tvm.target.Target) -> str:
    """``llvm -mcpu=<cpu>`` for CPUs (records do not transfer between CPUs), ``hexagon-<cpu>``."""
    cpu = str(target.attrs.get("mcpu", "generic"))
    return f"llvm -mcpu={cpu}" if is_cpu(target) else f"hexagon-{cpu}"


def call_layer(name: str, call: relax.Call) -> Layer | str | None:
    """The tuning layer of a conv2d call (grouped ones too: their schedule knobs); the reason
    when the tuner cannot take it (dynamic shapes, weights not constant, ...); None for a call
    that is no conv2d."""
    if not CONV2D.match(call):
        return None
    if not isinstance(call.args[1], tvm.ir.GenericConst):
        return "weight is not a compile-time constant"
    try:
        spec = conv_spec(call)
    except Unsupported as exc:
        return str(exc)
    return Layer(name, spec, str(call.attrs.data_layout), str(call.args[0].ty.dtype))


def layers(mod: tvm.IRModule, skipped: list | None = None) -> list[Layer]:
    """The tunable convs of ``main`` in order, one per distinct workload; ``skipped`` (a list)
    gets ``(name, reason)`` for each conv the tuner cannot take."""
    found: dict[str, Layer] = {}

    def visit(binding):
        if isinstance(binding, relax.VarBinding) and isinstance(binding.value, relax.Call):
            layer = call_layer(binding.var.name, binding.value)
            if isinstance(layer, Layer):
                found.setdefault(layer.key, layer)
            elif layer is not None and skipped is not None:
                skipped.append((binding.var.name, layer))

    for block in mod["main"].body.blocks:
        for binding in block.bindings:
            visit(binding)
    return list(found.values())
