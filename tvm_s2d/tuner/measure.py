"""Measuring one layer in one config. On LLVM CPUs: build the single-conv module with the
config's block and schedule knobs, then time it here (``LocalMeasurer``) or on devices behind
a TVM RPC tracker (``RPCMeasurer``); costs are median seconds of ``time_evaluator`` runs. On
Hexagon: executed packets of the layer's HVX kernels under qemu-hexagon
(``HexagonMeasurer``, ``hexagon.layer``), deterministic. ``ReplayMeasurer`` answers from
records already measured (exact for deterministic costs: checking the tuner's search)."""

from __future__ import annotations

import os
import statistics
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import tvm
from tvm import relax

from ..passes import ScheduleConvs, SpaceToDepthConv2d
from ..pipeline import S2DPipeline
from ..schedules import x86
from ..targets import use_all_cores
from ..tuning.space import Config
from ..tuning.workload import Layer


MIN_REPEAT_MS = 20


@dataclass
class Measurement:
    cost: float | None
    error: str | None = None
    extra: dict = field(default_factory=dict)


def layer_module(layer: Layer, seed: int = 0) -> tvm.IRModule:
    """``main(x) = conv2d(x, W)`` for the layer, ``W`` a seeded random constant."""
    spec, rng = layer.spec, np.random.default_rng(seed)
    oihw = (spec.out_channels, spec.in_channels // spec.groups, *spec.kernel_hw)
    integer = layer.dtype in ("int8", "uint8")
    weight = rng.integers(-128, 128, oihw).astype("int8") if integer else rng.standard_normal(oihw).astype(layer.dtype)
    if layer.layout == "NHWC":
        weight = weight.transpose(2, 3, 1, 0)
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType(layer.input_shape, layer.dtype))
    with bb.function("main", [x]):
        with bb.dataflow():
            y = bb.emit(relax.op.nn.conv2d(
                x, relax.const(weight), strides=spec.strides, padding=spec.padding, dilation=spec.dilation,
                groups=spec.groups, data_layout=layer.layout, kernel_layout="OIHW" if layer.layout == "NCHW" else "HWIO",
                out_dtype="int32" if integer else "",
            ))
            out = bb.emit_output(y)
        bb.emit_func_output(out)
    return bb.get()


def layer_input(layer: Layer, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if layer.dtype == "float32":
        return rng.standard_normal(layer.input_shape).astype("float32")
    return rng.integers(0, 100, layer.input_shape).astype(layer.dtype)


def build(layer: Layer, config: Config, target: tvm.target.Target):
    """The compiled layer and the signature of the conv it scheduled (for applying the
    knobs later to the same conv)."""
    rewrite = None if config.block is None else SpaceToDepthConv2d(block=config.block, prepare=False)

    def knobs(conv, lanes):
        return None if config.vectors is None else x86.knobs_for(conv, config.vectors, config.tile, lanes)

    schedule = ScheduleConvs(knobs=knobs)
    with target, tvm.transform.PassContext(opt_level=3):
        ex = tvm.compile(layer_module(layer), target=target,
                         relax_pipeline=S2DPipeline(rewrite=rewrite if rewrite is not None else False,
                                                     schedules=[schedule]).as_pass())
    if rewrite is not None and not any(d.rewritten for d in rewrite.decisions):
        raise ValueError(f"block {config.block} refused: {rewrite.decisions[0].reason}")
    convs = [s.conv for s in schedule.scheduled if s.error is None]
    return ex, (convs[0] if convs else None)


def _failed(exc: Exception) -> Measurement:
    """A failed build or run is a record, not a crash."""
    return Measurement(None, f"{type(exc).__name__}: {exc}".splitlines()[0])


def _time(vm, device, data, repeat, min_repeat_ms: int = MIN_REPEAT_MS) -> float:
    """Median seconds per run over ``repeat`` repeats, each at least ``min_repeat_ms`` long
    (single sub-millisecond runs on a busy 2-core machine are too noisy to rank configs)."""
    timer = vm.time_evaluator("main", device, number=1, repeat=repeat, min_repeat_ms=min_repeat_ms)
    return statistics.median(timer(data).results)


class LocalMeasurer:
    """Times each config on this machine."""

    unit = "s"

    def __init__(self, target: tvm.target.Target, repeat: int = 5):
        self.target, self.repeat = target, repeat
        use_all_cores()  # as the compiled model will run

    def measure(self, layer: Layer, configs: list[Config]) -> list[Measurement]:
        data = tvm.runtime.tensor(layer_input(layer))
        out = []
        for config in configs:
            try:
                ex, conv = build(layer, config, self.target)
                vm = relax.VirtualMachine(ex, tvm.cpu())
                out.append(Measurement(_time(vm, tvm.cpu(), data, self.repeat), extra={"conv": conv}))
            except Exception as exc:
                out.append(_failed(exc))
        return out


class RPCMeasurer:
    """Builds here, runs on devices registered with a TVM RPC tracker under ``key``; the
    configs of a batch run in parallel on up to ``parallel`` devices."""

    unit = "s"

    def __init__(self, target: tvm.target.Target, tracker: str, key: str, parallel: int = 2, repeat: int = 5,
                 session_timeout: int = 120):
        host, _, port = tracker.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"RPC tracker must be host:port, got {tracker!r}")
        self.target, self.host, self.port, self.key = target, host, int(port), key
        self.parallel, self.repeat, self.session_timeout = parallel, repeat, session_timeout

    def _session(self):
        """A session on a free device, and that device's address (the tracker's REQUEST, as
        ``TrackerSession.request`` sends it, keeping the address it answers with)."""
        import socket

        from tvm import rpc
        from tvm.rpc import base

        with socket.create_connection((self.host, self.port), timeout=self.session_timeout) as sock:
            sock.sendall(base.struct.pack("<i", base.RPC_TRACKER_MAGIC))
            if base.struct.unpack("<i", base.recvall(sock, 4))[0] != base.RPC_TRACKER_MAGIC:
                raise RuntimeError(f"{self.host}:{self.port} is not a TVM RPC tracker")
            base.sendjson(sock, [base.TrackerCode.REQUEST, self.key, "", 0])
            code, value = base.recvjson(sock)
        if code != base.TrackerCode.SUCCESS:
            raise RuntimeError(f"tracker refused the request for key {self.key!r}: {value}")
        url, port, matchkey = value
        return rpc.connect(url, port, matchkey, self.session_timeout), f"{url}:{port}"

    def _run_remote(self, path: str, x: np.ndarray) -> Measurement:
        remote, address = self._session()
        remote.upload(path)
        lib = remote.load_module(os.path.basename(path))
        device = remote.cpu()
        vm = relax.VirtualMachine(lib, device)
        cost = _time(vm, device, tvm.runtime.tensor(x, device), self.repeat)
        return Measurement(cost, extra={"device": address})

    def measure(self, layer: Layer, configs: list[Config]) -> list[Measurement]:
        x = layer_input(layer)
        results: list[Measurement | None] = [None] * len(configs)
        with tempfile.TemporaryDirectory() as tmp, ThreadPoolExecutor(self.parallel) as pool:
            jobs = {}
            for i, config in enumerate(configs):
                try:
                    ex, conv = build(layer, config, self.target)
                    path = os.path.join(tmp, f"layer{i}.so")
                    ex.export_library(path)
                    jobs[i] = (pool.submit(self._run_remote, path, x), conv)
                except Exception as exc:
                    results[i] = _failed(exc)
            for i, (job, conv) in jobs.items():
                try:
                    m = job.result()
                    m.extra["conv"] = conv
                    results[i] = m
                except Exception as exc:
                    results[i] = _failed(exc)
        return results


class HexagonMeasurer:
    """Executed packets of the layer's HVX kernels (conv, plus S2D and D2S with a block) under
    qemu-hexagon, in the layer's uint8 x int8 form. Deterministic: one run per config."""

    unit = "packets"

    def measure(self, layer: Layer, configs: list[Config]) -> list[Measurement]:
        from ..emulator.layer import run_layer

        out = []
        for config in configs:
            try:
                run = run_layer(layer.spec, config.block, config.mapping or "lanes", config.tile or 4)
                out.append(Measurement(run.packets, extra={"conv": run.signature, "conv_packets": run.conv,
                                                           "s2d": run.s2d, "d2s": run.d2s, "vrmpy": run.vrmpy}))
            except Exception as exc:
                out.append(_failed(exc))
        return out


class ReplayMeasurer:
    """Answers from measured records (workload key, config key) -> cost, counting the
    measurements asked for; an unknown config is an error record."""

    def __init__(self, records, unit: str):
        self.unit = unit
        self.costs = {(r.workload, Config.from_json(r.config).key): r.cost for r in records}
        self.asked = 0

    def measure(self, layer: Layer, configs: list[Config]) -> list[Measurement]:
        self.asked += len(configs)
        out = []
        for config in configs:
            cost = self.costs.get((layer.key, config.key))
            out.append(Measurement(cost) if cost is not None else Measurement(None, f"no record of {config}"))
        return out
