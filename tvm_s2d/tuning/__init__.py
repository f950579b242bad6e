"""Per-layer tuning: search space, measurement (local, Hexagon emulator, RPC), XGBoost cost
model, JSONL logs, and the tuner that ties them together. ``tuning_log=`` on the pass and
the pipeline applies the best records at compile time."""

from .log import Record, TuningLog
from .workload import Layer, layers, workload_key

__all__ = ["Layer", "Record", "TuningLog", "layers", "workload_key"]
