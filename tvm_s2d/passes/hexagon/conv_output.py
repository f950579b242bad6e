"""The Relax ops ``HexagonConvs`` writes after an HVX conv kernel's int32 output, and the
recognisers ``HexagonRequantize`` reads them back with, side by side (as ``s2d/emit.py`` keeps
``emit_space_to_depth`` beside ``match_space_to_depth``; ``tests/test_emit.py`` checks each
round trip):

| emitted by ``HexagonConvs`` | read back by ``HexagonRequantize`` |
| --- | --- |
| ``emit_width_output``: the width mapping's ``[N, C, H, W']`` output, its ``W`` columns, NHWC | ``match_channel_major`` |
| ``emit_lanes_output``: the channel-in-lanes output, reshaped NHWC, its real channels | ``match_padded_channels`` |
| ``emit_lanes_output`` of one lane block, unsliced | ``match_lanes_output`` (the conv's kernel fused) |
| ``emit_corrected``: ``y - zx * sum(W)``, the activation zero point's share | ``match_correction`` |
| ``emit_depthwise_output``: the depthwise kernel's rows ``[N, OH, row]`` as NHWC | ``match_depthwise_output`` |

``HexagonRequantize`` then computes the requantization on a kernel that reads the conv's
output itself (the layout change, the padded channels and the correction in that kernel).
"""

from __future__ import annotations

import numpy as np
from tvm import relax

from ..relax_tools import call_of, const_of, static_shape


def emit_width_output(bb: relax.BlockBuilder, y: relax.Expr, out_width: int) -> relax.Expr:
    """The width mapping's int32 ``[N, C, H, W']`` output ``y`` as NHWC: its first
    ``out_width`` columns, permuted."""
    y = bb.emit(relax.op.strided_slice(y, [3], [0], [out_width]))
    return bb.emit(relax.op.permute_dims(y, [0, 2, 3, 1]))


def emit_lanes_output(bb: relax.BlockBuilder, y: relax.Expr, n: int, out_hw, padded: int, channels: int) -> relax.Expr:
    """The channel-in-lanes output ``y`` as NHWC ``[n, oh, ow, padded]`` (``padded``: the
    output channels rounded up to whole lanes), then its ``channels`` real channels."""
    y = bb.emit(relax.op.reshape(y, [n, *out_hw, padded]))
    if padded != channels:
        y = bb.emit(relax.op.strided_slice(y, [3], [0], [channels]))
    return y


def match_lanes_output(x, var2val, mod) -> tuple | None:
    """``(operands, conv)`` when ``x`` is ``emit_lanes_output`` of a channel-in-lanes kernel's
    call with no slice (``call_tir`` of a PrimFunc of ``mod`` that ``PackedConv.tagged``, on its
    input, constant weights and offsets), else None."""
    from ...schedules.hexagon.lanes import PackedConv

    reshape = call_of(x, var2val, "relax.reshape")
    call = call_of(reshape.args[0], var2val, "relax.call_tir") if reshape is not None else None
    if call is None or len(call.args[1].fields) != 3 or call.args[0] not in mod.functions:
        return None
    conv = PackedConv.of(mod[call.args[0]])
    if conv is None or static_shape(x) != (conv.batch, *conv.out_hw, conv.cout_blocks * 32):  # no slice
        return None
    return list(call.args[1].fields), conv


def emit_depthwise_output(bb: relax.BlockBuilder, y: relax.Expr, conv) -> relax.Expr:
    """The depthwise kernel's int32 rows ``y`` (``[N, OH, row]``, ``conv`` a
    ``DepthwiseConv``) as NHWC ``[N, OH, OW, C]``: each row's first ``OW * C`` values."""
    n, oh, row = conv.output_shape
    ow, c = conv.out_hw[1], conv.channels
    if row != ow * c:
        y = bb.emit(relax.op.strided_slice(y, [2], [0], [ow * c]))
    return bb.emit(relax.op.reshape(y, [n, oh, ow, c]))


def match_depthwise_output(x, var2val, mod) -> tuple | None:
    """``(rows, weight, conv)`` when ``x`` is ``emit_depthwise_output`` of a depthwise kernel's
    call (``call_tir`` of a PrimFunc of ``mod`` that ``DepthwiseConv.tagged``, on its input rows
    and its constant weights), or its first channels (a conv on padded channels,
    ``convs.dealt_channels``), else None."""
    from ...schedules.hexagon.depthwise import DepthwiseConv

    channels = call_of(x, var2val, "relax.strided_slice")
    if channels is not None and _prefix_axes(channels) == [3]:
        x = channels.args[0]
    reshape = call_of(x, var2val, "relax.reshape")
    if reshape is None:
        return None
    y = reshape.args[0]
    sliced = call_of(y, var2val, "relax.strided_slice")
    call = call_of(sliced.args[0] if sliced is not None else y, var2val, "relax.call_tir")
    if call is None or len(call.args[1].fields) != 2 or call.args[0] not in mod.functions:
        return None
    conv = DepthwiseConv.of(mod[call.args[0]])
    if conv is None or static_shape(x) != (conv.batch, *conv.out_hw, conv.channels):
        return None
    rows, weight = call.args[1].fields
    return rows, weight, conv


def emit_corrected(bb: relax.BlockBuilder, y: relax.Expr, weight: np.ndarray, zx: int, layout: str) -> relax.Expr:
    """``y`` (NHWC int32, back in ``layout``) minus the zero point's share ``zx * sum(W)``
    (``weight`` OIHW), the subtract not yet emitted."""
    cout = weight.shape[0]
    shape = [1, 1, 1, cout]
    if layout == "NCHW":
        y = bb.emit(relax.op.permute_dims(y, [0, 3, 1, 2]))
        shape = [1, cout, 1, 1]
    correction = (zx * weight.astype(np.int64).sum(axis=(1, 2, 3))).astype(np.int32).reshape(shape)
    return relax.op.subtract(y, relax.const(correction))


def along_last_axis(value: np.ndarray, shape) -> np.ndarray | None:
    """``value`` (broadcast against ``shape``) as one value per last-axis index, or None."""
    value = np.asarray(value)
    if value.ndim > len(shape) or any(d != 1 for d in value.shape[:-1]):
        return None
    flat = value.reshape(-1)
    return flat if flat.size in (1, shape[-1]) else None


def _prefix_axes(sliced: relax.Call) -> list[int] | None:
    """The axes of a ``strided_slice`` that keeps a prefix of each (begin 0, stride 1), else None."""
    begin = [int(v) for v in sliced.args[2]]
    strides = [int(v) for v in sliced.args[4]] if len(sliced.args) > 4 else [1] * len(begin)
    if any(begin) or any(s != 1 for s in strides):
        return None
    return [int(v) for v in sliced.args[1]]


def match_channel_major(x, var2val, shape) -> relax.Expr | None:
    """``y`` when ``x`` (NHWC, 4-D, of ``shape``) is ``permute_dims(y[..., :W], [0, 2, 3, 1])``
    of an int32 ``[N, C, H, W']`` tensor ``y`` (``W'`` a multiple of 32), else None."""
    permute = call_of(x, var2val, "relax.permute_dims")
    if len(shape) != 4 or permute is None or [int(a) for a in permute.attrs.axes] != [0, 2, 3, 1]:
        return None
    y = permute.args[0]
    sliced = call_of(y, var2val, "relax.strided_slice")
    if sliced is not None:
        if _prefix_axes(sliced) != [3]:
            return None
        y = sliced.args[0]
    full = static_shape(y)
    if full is None or str(y.ty.dtype) != "int32" or full[3] % 32 or full[3] < shape[2]:
        return None
    return y


def match_padded_channels(x, var2val, shape) -> relax.Expr | None:
    """``y`` when ``x`` (4-D, of ``shape``) is ``y[..., :C]`` of an int32 ``[N, H, W, Cp]``
    tensor (``Cp`` a multiple of 32, ``C`` dividing 32 or ``wide_slice_apply``), read through a
    reshape: what ``requantize_slice_kernel`` takes; else None."""
    from ...schedules.hexagon.layouts import wide_slice_apply

    sliced = call_of(x, var2val, "relax.strided_slice")
    if len(shape) != 4 or sliced is None:
        return None
    y = sliced.args[0]
    full = static_shape(y)
    if _prefix_axes(sliced) not in ([3], [-1]) or full is None or len(full) != 4 or full[3] % 32:
        return None
    if 32 % int(shape[-1]) and not wide_slice_apply(int(shape[-1]), int(full[3])):
        return None
    return y if str(y.ty.dtype) == "int32" else None


def match_correction(x, var2val, shape) -> tuple[relax.Expr, np.ndarray] | None:
    """``(y, c)`` when ``x`` (of ``shape``) is ``y - c`` with ``c`` a constant of one value per
    last-axis index (``emit_corrected`` in NHWC), else None."""
    corrected = call_of(x, var2val, "relax.subtract")
    value = None if corrected is None else const_of(corrected.args[1], var2val)
    correction = None if value is None else along_last_axis(value, shape)
    return None if correction is None else (corrected.args[0], correction)
