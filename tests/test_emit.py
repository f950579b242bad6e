"""The emitter and its recogniser: ``match_space_to_depth`` reads back exactly what
``emit_space_to_depth`` / ``emit_depth_to_space`` wrote."""

import pytest
from tvm import relax

from tvm_s2d.geometry import d2s_steps, is_pure_reshape, s2d_steps
from tvm_s2d.passes.s2d.emit import Movement, emit_depth_to_space, emit_space_to_depth, match_space_to_depth


def _emitted(shape, block, layout, inverse):
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType(shape, "uint8"))
    with bb.function("main", [x]):
        with bb.dataflow():
            emit = emit_depth_to_space if inverse else emit_space_to_depth
            out = bb.emit_output(bb.emit(emit(bb, x, block, layout, "m"), "moved"))
        bb.emit_func_output(out)
    func = bb.get()["main"]
    var2val = relax.analysis.get_var2val(func)
    last = func.body.blocks[0].bindings[-1].value
    return x, var2val[last] if isinstance(last, relax.Var) else last, var2val


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("block", [(2, 2), (3, 3), (1, 2), (2, 1), (4, 4)])
@pytest.mark.parametrize("inverse", [False, True])
def test_round_trip(layout, block, inverse):
    channels = 3 * block[0] * block[1] if inverse else 3
    shape = (2, channels, 12, 24) if layout == "NCHW" else (2, 12, 24, channels)
    split, perm, _ = (d2s_steps if inverse else s2d_steps)(shape, block, layout)
    if is_pure_reshape(split, perm):
        pytest.skip("a pure reshape: one step, nothing to recognise")
    x, call, var2val = _emitted(shape, block, layout, inverse)
    found = match_space_to_depth(call, var2val)
    assert isinstance(found, Movement), found
    assert (found.x.same_as(x), found.block, found.layout, found.inverse) == (True, block, layout, inverse)


def test_other_triples_are_refused_with_a_reason():
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((1, 4, 6, 6), "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            a = bb.emit(relax.op.reshape(x, (1, 4, 3, 2, 3, 2)))
            b = bb.emit(relax.op.permute_dims(a, [0, 1, 2, 3, 5, 4]))  # not an S2D permutation
            out = bb.emit_output(bb.emit(relax.op.reshape(b, (1, 4, 6, 6))))
        bb.emit_func_output(out)
    func = bb.get()["main"]
    var2val = relax.analysis.get_var2val(func)
    assert match_space_to_depth(var2val[out], var2val) == "not the space-to-depth or depth-to-space of any block"
    assert match_space_to_depth(var2val[a], var2val) == "not a reshape -> permute_dims -> reshape"
