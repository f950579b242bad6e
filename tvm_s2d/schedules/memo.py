"""``kernel_cache``: a kernel builder's PrimFuncs kept by its arguments.

TVMScript parses a kernel's Python source each time its builder runs (~60 ms a kernel), and a
model's repeated blocks build the same kernels again: EfficientNet-B0's Hexagon lowering builds
296 kernels, 239 of them different. PrimFuncs are immutable (passes return new ones), so the
same arguments may share one. Arguments are keyed by value (lists as tuples, numpy arrays by
dtype, shape and bytes); a call with an argument that has no such key (an unhashable object)
builds afresh."""

from __future__ import annotations

import functools
from collections import OrderedDict

import numpy as np

#: Kernels kept a builder (the least recently used go first).
MAX_KERNELS = 512


def kernel_cache(builder):
    """``builder`` with its results kept by its arguments' values (the module doc)."""
    cache: OrderedDict = OrderedDict()

    @functools.wraps(builder)
    def cached(*args, **kwargs):
        try:
            key = _key((args, tuple(sorted(kwargs.items()))))
            hash(key)
        except TypeError:
            return builder(*args, **kwargs)
        if key in cache:
            cache.move_to_end(key)
            return cache[key]
        result = cache[key] = builder(*args, **kwargs)
        if len(cache) > MAX_KERNELS:
            cache.popitem(last=False)
        return result

    cached.cache = cache
    return cached


def _key(value):
    """A hashable stand-in for ``value``, equal for equal values (and types)."""
    if isinstance(value, (list, tuple)):
        return (type(value).__name__, tuple(_key(v) for v in value))
    if isinstance(value, dict):
        return ("dict", tuple(sorted((k, _key(v)) for k, v in value.items())))
    if isinstance(value, np.ndarray):
        return ("ndarray", str(value.dtype), value.shape, value.tobytes())
    if isinstance(value, np.generic):
        return (type(value).__name__, value.item())
    return (type(value).__name__, value)
