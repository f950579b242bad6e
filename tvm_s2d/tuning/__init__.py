"""Tuning data, below the pipeline: the search space, the JSONL log and its records, and the
tuned values a compile reads from it (``apply``: blocks, CPU knobs, HVX mappings). The tuner
that writes the log is above the pipeline (``tvm_s2d.tuner``)."""

from .log import Record, TuningLog
from .workload import Layer, layers, workload_key

__all__ = ["Layer", "Record", "TuningLog", "layers", "workload_key"]
