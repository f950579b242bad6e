"""``schedules.memo.kernel_cache``: equal arguments share one kernel, different ones do not,
unhashable ones build afresh."""

import numpy as np

from tvm_s2d.schedules.memo import kernel_cache


def test_equal_arguments_share_a_result_and_different_ones_do_not():
    calls = []

    @kernel_cache
    def build(shape, dtype="uint8", constants=None):
        calls.append((shape, dtype))
        return object()

    a = build([1, 4, 4, 32])
    assert build((1, 4, 4, 32)) is not a  # a list and a tuple are different arguments
    assert build([1, 4, 4, 32]) is a and build([1, 4, 4, 32], dtype="uint8") is not None
    assert build([1, 4, 4, 32], "int8") is not a
    x, y = np.arange(4, dtype=np.int32), np.arange(4, dtype=np.int64)
    assert build([1], constants=x) is build([1], constants=x.copy()) and build([1], constants=x) is not build([1], constants=y)
    before = len(calls)
    build([1], constants={"unhashable": set()})  # a dict of a set: no key, built afresh each time
    build([1], constants={"unhashable": set()})
    assert len(calls) == before + 2
