"""``HexagonMovement``: the data movement of uint8 tensors on HVX kernels: 2x2
space-to-depth and depth-to-space of NHWC tensors on shuffles, constant pads on vector
copies and fills, and (8-bit NHWC, as ``IntegerPoolConcat`` leaves them) max pools on
``vmax`` and concats of two equal channel counts on ``vshuff`` (``schedules.hexagon.pool``).

The rewrite writes S2D and D2S as ``reshape -> permute_dims -> reshape``
(``geometry.s2d_steps`` / ``d2s_steps``). On a uint8 NHWC tensor with a 2x2 block these are
one ``vshuff`` (S2D) or ``vdeal`` (D2S) per 256 bytes (``schedules.hexagon``), where TVM's
default lowering copies byte by byte. In a quantized NHWC network that is where they sit:
``HexagonConvs`` replays the conv input's S2D on the uint8 tensor (filling pads with the zero
point), and the D2S that leaves the domain follows a ``quantize``. The pass replaces each
such triple by the shuffle kernel and each constant pad of two neighbouring axes of a 4-D
uint8 tensor by ``pad_rows``, one that also widens NHWC pixels (a 3-channel image to the
width mapping's 4) by ``pad_pixels``, one of NHWC channels (after, to at most 128) with rows and
columns or not by ``pad_channels``; others (NCHW S2D, other blocks and dtypes, a channel count
whose chunks do not divide a vector) are left alone. ``IntegerTables``' lookups
(``take(T, q)``, ``T`` a constant of 256 8-bit entries, ``q`` uint8, or int8 in ``"wrap"``
mode) run on ``vlut32`` (``schedules.hexagon.lookup``), the table a constant argument in the
layout ``vlut32`` reads; a lookup that alone reads a requantization kernel's output runs in that
kernel where it pays (``_requantized_lookup``).

It acts for Hexagon targets (the given one, else the current one) only. ``hvx=False`` uses
the shuffles' plain copies and leaves pads to relax (to check a graph on a CPU); ``replaced``
names the outputs it computes."""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax
from tvm.relax.dpl import is_op, wildcard
from tvm.relax.expr_functor import PyExprMutator, mutator

from ...schedules.hexagon import (copy_space_to_depth, deal_depth_to_space, pad_channels, pad_channels_apply, pad_pixels,
                                  pad_pixels_apply, pad_rows, pad_rows_apply, shuffle_space_to_depth, shuffles_apply)
from ...schedules.hexagon.lookup import LUT_DTYPES, arrange_table, lookup_table, plain_lookup_table, table_segments
from ...schedules.hexagon.requantize import REQUANTIZE_ATTR, Table, hoisted, requantize_kernel
from ...schedules.hexagon.pool import (MIN_PIXEL_BYTES, chunks_apply, concat_channels, concat_pixels, concat_pixels_apply, max_pool,
                                       plain_concat, plain_concat_channels, plain_max_pool, plain_slice_pixels,
                                       slice_pixels)
from ...targets import is_hexagon, pass_target
from ..outcome import Outcome, applied, refused
from ..relax_tools import add_kernel, bound, call_of, const_of, op_name, rewrite_functions, static_shape
from ..channel_shuffle import Shuffle, match_channel_shuffle
from ..s2d.emit import match_space_to_depth

PASS_NAME = "HexagonMovement"


@tvm.transform.module_pass(opt_level=0, name=PASS_NAME)
class HexagonMovement:
    """Replace uint8 NHWC 2x2 S2D / D2S triples, pads, 8-bit max pools and concats, and 256-entry
    table lookups by HVX kernels (see the module doc)."""

    def __init__(self, target: tvm.target.Target | None = None, hvx: bool = True):
        self.target, self.hvx = target, hvx
        self.triple = is_op("relax.reshape")(is_op("relax.permute_dims")(is_op("relax.reshape")(wildcard(), wildcard())),
                                             wildcard())
        self.pad = is_op("relax.nn.pad")(wildcard())
        self.outcomes: list[Outcome] = []

    @property
    def replaced(self) -> list[str]:
        """The tensors computed on HVX movement kernels."""
        return [o.name for o in self.outcomes if o.applied]

    def transform_module(self, mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        self.outcomes, self.superseded = [], set()
        if not is_hexagon(pass_target(self.target)):
            return mod
        mod = rewrite_functions(mod, _Rewriter(mod, self))
        for gv in self.superseded:  # requantization kernels a lookup took in (the fused kernel replaces them)
            del mod[gv]
        return mod

    def kernel(self, shape, inverse: bool) -> tvm.tirx.PrimFunc:
        if not self.hvx:
            func = copy_space_to_depth(shape, inverse=inverse)
        else:
            func = deal_depth_to_space(shape) if inverse else shuffle_space_to_depth(shape)
        return func


def _movement(call: relax.Call, var2val) -> tuple[relax.Expr, bool] | str:
    """``(x, inverse)`` when ``call`` (the matched triple's last reshape) is the 2x2 S2D
    (``inverse``: D2S) of the uint8 NHWC tensor ``x`` that the shuffle kernels take; else
    the reason it is not."""
    found = match_space_to_depth(call, var2val)
    if isinstance(found, str):
        return found
    x = found.x
    if str(x.ty.dtype) != "uint8":
        return f"of a {x.ty.dtype} tensor (the shuffles take 4-D uint8)"
    if (found.block, found.layout) != ((2, 2), "NHWC"):
        return f"block {found.block[0]}x{found.block[1]} in {found.layout} (the shuffles take 2x2 in NHWC)"
    shape = static_shape(x)
    if not shuffles_apply(shape, (2, 2), found.inverse):
        return f"{'D2S' if found.inverse else 'S2D'} of {shape[3]} channels: chunks that do not divide a vector"
    return x, found.inverse


@mutator
class _Rewriter(PyExprMutator):
    def __init__(self, mod, rule: HexagonMovement):
        super().__init__(mod)
        self.rule, self.var2val, self.mod = rule, {}, mod

    def visit_var_binding_(self, binding: relax.VarBinding) -> None:
        call = binding.value
        if binding.var in self._absorbed():
            return super().visit_var_binding_(binding)
        if op_name(call) in SELECTIONS:
            found = getattr(self, SELECTIONS[call.op.name])(call, binding.var.name)
            if isinstance(found, str):
                refused(self.rule.outcomes, binding.var.name, found)
            else:
                return super().visit_var_binding_(relax.VarBinding(binding.var, found))
        if self.rule.hvx and isinstance(call, relax.Call) and self.rule.pad.match(call):
            padded = self._pad(call, binding.var.name)
            if padded is not None:
                return super().visit_var_binding_(relax.VarBinding(binding.var, padded))
        if not (isinstance(call, relax.Call) and self.rule.triple.match(call, self.var2val)):
            return super().visit_var_binding_(binding)
        found = _movement(call, self.var2val)
        shuffle = match_channel_shuffle(call, self.var2val) if isinstance(found, str) else None
        if isinstance(shuffle, Shuffle):
            found = self._shuffle(call, shuffle, binding.var.name)
            if not isinstance(found, str):
                return super().visit_var_binding_(relax.VarBinding(binding.var, found))
        if isinstance(found, str):
            refused(self.rule.outcomes, binding.var.name, f"reshape/permute/reshape: {found}")
            return super().visit_var_binding_(binding)
        x, inverse = found
        shape = static_shape(x)
        name = f"hvx_{'d2s' if inverse else 's2d'}_{binding.var.name}"
        kernel = add_kernel(self.builder_, self.rule.kernel(shape, inverse), name)
        applied(self.rule.outcomes, binding.var.name, f"HVX {'deal D2S' if inverse else 'shuffle S2D'} kernel")
        moved = relax.call_tir(kernel, [self.visit_expr(x)], relax.TensorType(static_shape(call), "uint8"))
        return super().visit_var_binding_(relax.VarBinding(binding.var, moved))

    def _pad(self, call: relax.Call, name: str):
        x, attrs = call.args[0], call.attrs
        shape, value = static_shape(x), float(attrs.pad_value)
        widths = [int(v) for v in attrs.pad_width]
        if str(x.ty.dtype) != "uint8":
            refused(self.rule.outcomes, name, f"pad: of a {x.ty.dtype} tensor (HVX pads take uint8)")
            return None
        if shape is None:
            refused(self.rule.outcomes, name, "pad: dynamic shape")
            return None
        if str(attrs.pad_mode) != "constant" or not 0 <= value <= 255 or value != int(value):
            refused(self.rule.outcomes, name, f"pad in {attrs.pad_mode} mode with value {value:g}: HVX pads take a"
                    " constant value 0..255")
            return None
        if pad_pixels_apply(shape, widths):  # before rows: a channel pad alone is rows of C bytes to pad_rows
            kernel, what = pad_pixels(shape, widths, int(value)), "HVX pad kernel (pixels widened by byte shuffles)"
        elif pad_channels_apply(shape, widths):  # before rows too: a channel pad is rows of C bytes to pad_rows
            kernel, what = pad_channels(shape, widths, int(value)), "HVX pad kernel (a pixel a vector)"
        elif pad_rows_apply(shape, widths):
            kernel, what = pad_rows(shape, widths, int(value)), "HVX pad kernel"
        else:
            refused(self.rule.outcomes, name, f"pad of widths {widths} on a {len(shape)}-D tensor: HVX pads take one or"
                    " two neighbouring axes of a 4-D tensor, or an NHWC tensor's rows, columns and channels (after,"
                    " to at most 128)")
            return None
        kernel = add_kernel(self.builder_, kernel, f"hvx_pad_{name}")
        applied(self.rule.outcomes, name, what)
        return relax.call_tir(kernel, [self.visit_expr(x)], relax.TensorType(static_shape(call), "uint8"))

    def _max_pool(self, call: relax.Call, name: str):
        """An 8-bit NHWC max pool (square, any stride; floor or ceil mode) on
        ``schedules.hexagon.pool.max_pool``, its padding a pad with the type's lowest value."""
        x, attrs = call.args[0], call.attrs
        shape, dtype = static_shape(x), str(x.ty.dtype)
        size, strides = [int(v) for v in attrs.pool_size], [int(v) for v in attrs.strides]
        pool = f"max pool {size[0]}x{size[1]} stride {strides[0]}x{strides[1]}"
        if dtype not in LOWEST or shape is None or str(attrs.layout) != "NHWC":
            what = f"{dtype} {attrs.layout} tensor{'' if shape is not None else ' of dynamic shape'}"
            return f"{pool} of a {what}: the HVX kernel takes static uint8 or int8 NHWC tensors"
        if size[0] != size[1]:
            return f"{pool}: the HVX kernel takes square pools (KxK) only"
        if strides[0] != strides[1]:
            return f"{pool}: the HVX kernel takes equal strides only"
        if any(int(d) != 1 for d in attrs.dilation):
            return f"{pool} dilation {'x'.join(str(int(d)) for d in attrs.dilation)}: the HVX kernel takes dilation 1 only"
        t, l, b, r = (int(v) for v in attrs.padding)
        # ceil_mode: the last windows run past the padded input; more bottom/right padding with the
        # lowest value gives them in floor mode, the same maxima (every window holds a real value)
        out_h, out_w = static_shape(call)[1:3]
        b += max(0, (out_h - 1) * strides[0] + size[0] - (shape[1] + t + b))
        r += max(0, (out_w - 1) * strides[1] + size[1] - (shape[2] + l + r))
        bb = self.builder_
        x = self.visit_expr(x)
        if t or l or b or r:  # the padding on the HVX pad kernel where it takes it (uint8)
            pad = relax.op.nn.pad(x, [0, 0, t, b, l, r, 0, 0], pad_value=float(LOWEST[dtype]))
            padded = self._pad(bb.normalize(pad), f"{name}_pad") if self.rule.hvx else None
            x = bb.emit(pad if padded is None else padded)
        padded = static_shape(x)
        make = max_pool if self.rule.hvx else plain_max_pool
        kernel = add_kernel(bb, make(padded, size[0], strides[0], dtype), f"hvx_pool_{name}")
        applied(self.rule.outcomes, name, "HVX max pool kernel")
        return relax.call_tir(kernel, [x], relax.TensorType(static_shape(call), dtype))

    def _concat(self, call: relax.Call, name: str):
        """A concat of 8-bit tensors along their last axis: two of one shape whose channels divide
        a vector (``schedules.hexagon.pool.concat_channels``), or any number of at least
        ``MIN_PIXEL_BYTES`` channels each (``concat_pixels``). One a channel shuffle reads alone is left (unnamed)
        to ``_shuffle``, which takes its inputs."""
        items = bound(call.args[0], self.var2val)
        fields = list(items.fields) if isinstance(items, relax.Tuple) else []
        shapes = [static_shape(f) for f in fields]
        dtypes = {str(f.ty.dtype) for f in fields}
        if len(fields) < 2:
            return f"concat of {len(fields) or 'a tuple of'} tensors: the HVX kernels take two or more"
        if None in shapes:
            return "concat of tensors of dynamic shape: the HVX kernel takes static shapes"
        if len(dtypes) != 1 or not dtypes <= set(LOWEST):
            return f"concat of {' and '.join(sorted(dtypes))} tensors: the HVX kernel takes uint8 or int8, both alike"
        rank = len(shapes[0])
        axis = int(call.attrs.axis) % rank
        dtype, channels = dtypes.pop(), [s[-1] for s in shapes]
        if axis != rank - 1:  # as a concat of blocks: each input's slab below the axis is contiguous
            blocks = [int(np.prod(s[axis:])) for s in shapes]
            if not concat_pixels_apply(blocks):
                return (f"concat along axis {axis} of blocks of {'+'.join(str(b) for b in blocks)} bytes: the HVX kernel"
                        f" copies blocks of at least {MIN_PIXEL_BYTES} bytes")
            lead = list(shapes[0][:axis])
            make = concat_pixels if self.rule.hvx else plain_concat
            kernel = add_kernel(self.builder_, make(lead, blocks, dtype), f"hvx_concat_{name}")
            applied(self.rule.outcomes, name, f"HVX concat kernel (blocks along axis {axis})")
            bb = self.builder_
            flat = [bb.emit(relax.op.reshape(self.visit_expr(f), [*lead, b])) for f, b in zip(fields, blocks)]
            y = bb.emit(relax.call_tir(kernel, flat, relax.TensorType([*lead, sum(blocks)], dtype)))
            return relax.op.reshape(y, static_shape(call))
        if len(fields) == 2 and shapes[0] == shapes[1] and chunks_apply(channels[0]):
            make = concat_channels if self.rule.hvx else plain_concat_channels
            kernel = add_kernel(self.builder_, make(shapes[0], dtype), f"hvx_concat_{name}")
        elif concat_pixels_apply(channels):
            make = concat_pixels if self.rule.hvx else plain_concat
            kernel = add_kernel(self.builder_, make(shapes[0][:-1], channels, dtype), f"hvx_concat_{name}")
        else:
            return (f"concat of {'+'.join(str(c) for c in channels)} channels: the HVX kernels take two tensors of 1, 2,"
                    f" 4, ... 64 channels alike, or any number of at least {MIN_PIXEL_BYTES} channels each")
        applied(self.rule.outcomes, name, "HVX concat kernel")
        return relax.call_tir(kernel, [self.visit_expr(f) for f in fields], relax.TensorType(static_shape(call), dtype))

    def _shuffle(self, call: relax.Call, shuffle: Shuffle, name: str):
        """A channel shuffle of two groups along the last axis of an 8-bit tensor: the two halves'
        bytes interleaved by ``concat_channels`` of one-byte chunks (a ``vshuff``), the halves the
        two inputs of the concat the shuffle reads (``absorbed``: ShuffleNet's), else two
        ``slice_pixels``."""
        shape, dtype = static_shape(shuffle.x), str(shuffle.x.ty.dtype)
        if dtype not in LOWEST or shuffle.axis != len(shape) - 1 or shuffle.groups != 2:
            return (f"a channel shuffle of {shuffle.groups} groups along axis {shuffle.axis} of a {len(shape)}-D {dtype} "
                    "tensor: the HVX kernel takes two groups along the last axis of 8-bit tensors")
        half, lead, bb = shape[-1] // 2, list(shape[:-1]), self.builder_
        halves = self._halves(shuffle.x)
        if halves is None:
            halves = [bb.emit(relax.call_tir(self._slice_kernel(lead, shape[-1], i * half, half, dtype, f"{name}_{i}"),
                                             [self.visit_expr(shuffle.x)], relax.TensorType([*lead, half], dtype)))
                      for i in range(2)]
        else:
            halves = [self.visit_expr(h) for h in halves]
        chunks = [bb.emit(relax.op.reshape(h, [*lead, half, 1])) for h in halves]
        make = concat_channels if self.rule.hvx else plain_concat_channels
        kernel = add_kernel(bb, make([*lead, half, 1], dtype), f"hvx_shuffle_{name}")
        applied(self.rule.outcomes, name, "HVX channel shuffle (vshuff of the two halves)")
        y = bb.emit(relax.call_tir(kernel, chunks, relax.TensorType([*lead, half, 2], dtype)))
        return relax.op.reshape(y, shape)

    def _halves(self, x: relax.Expr):
        """The two inputs of the concat ``x`` is bound to, when it joins two tensors of one shape
        along the last axis and the shuffle is its only reader; else None."""
        concat = call_of(x, self.var2val, "relax.concat")
        items = bound(concat.args[0], self.var2val) if concat is not None else None
        fields = list(items.fields) if isinstance(items, relax.Tuple) else []
        shapes = [static_shape(f) for f in fields]
        if len(fields) != 2 or None in shapes or shapes[0] != shapes[1] or \
                int(concat.attrs.axis) % len(shapes[0]) != len(shapes[0]) - 1 or self._readers().get(x, 0) != 1:
            return None
        return fields

    def _absorbed(self) -> set:
        """The concats (variables) of the function being rewritten that a channel shuffle reads
        alone (``_halves``): ``_shuffle`` takes their inputs, and they go."""
        if getattr(self, "_absorbed_of", None) is not self.var2val:
            found = set()
            for value in self.var2val.values():
                shuffle = match_channel_shuffle(value, self.var2val) if op_name(value) == "relax.reshape" else None
                if isinstance(shuffle, Shuffle) and self._halves(shuffle.x) is not None:
                    found.add(shuffle.x)
            self._absorbed_of, self._absorbed_vars = self.var2val, found
        return self._absorbed_vars

    def _readers(self) -> dict:
        """How many bindings of the function being rewritten read each variable."""
        if getattr(self, "_readers_of", None) is not self.var2val:
            counts: dict = {}

            def count(expr):
                if isinstance(expr, relax.Var):
                    counts[expr] = counts.get(expr, 0) + 1
                elif isinstance(expr, relax.Tuple):
                    for f in expr.fields:
                        count(f)

            for value in self.var2val.values():
                for arg in (value.args if isinstance(value, relax.Call) else
                            value.fields if isinstance(value, relax.Tuple) else []):
                    count(arg)
            self._readers_of, self._reader_counts = self.var2val, counts
        return self._reader_counts

    def _slice(self, call: relax.Call, name: str):
        """A strided slice of an 8-bit tensor along its last axis, step 1 (a channel split) on
        ``schedules.hexagon.pool.slice_pixels``; slices of other types are left alone unnamed."""
        x = call.args[0]
        shape, dtype = static_shape(x), str(x.ty.dtype)
        if dtype not in LOWEST:
            return call
        axes = [int(a) for a in call.args[1]]
        steps = [int(v) for v in call.args[4]] if len(call.args) > 4 else [1] * len(axes)
        if shape is None or static_shape(call) is None:
            return "slice of a tensor of dynamic shape: the HVX kernel takes static shapes"
        if len(axes) != 1 or axes[0] % len(shape) != len(shape) - 1 or steps != [1]:
            return (f"slice along axes {axes} with steps {steps}: the HVX kernel takes one axis, the last (the "
                    "channels), step 1")
        begin = int(call.args[2][0])
        begin = max(0, min(begin + shape[-1] if begin < 0 else begin, shape[-1]))
        lead, width = list(shape[:-1]), static_shape(call)[-1]
        kernel = self._slice_kernel(lead, shape[-1], begin, width, dtype, name)
        applied(self.rule.outcomes, name, "HVX channel slice kernel")
        return relax.call_tir(kernel, [self.visit_expr(x)], relax.TensorType([*lead, width], dtype))

    def _slice_kernel(self, lead, channels, begin, width, dtype, name) -> tvm.ir.GlobalVar:
        make = slice_pixels if self.rule.hvx else plain_slice_pixels
        return add_kernel(self.builder_, make(lead, channels, begin, width, dtype), f"hvx_slice_{name}")

    def _lookup(self, call: relax.Call, name: str):
        """``take(T, q, axis=0)`` of a constant 256-entry 8-bit table ``T`` by an 8-bit ``q`` (every
        index in range: uint8, or int8 wrapping to its byte) on ``schedules.hexagon.lookup``."""
        table, q = call.args
        values = const_of(table, self.var2val)
        if values is None:
            return "take of a computed tensor: the HVX lookup takes a constant table"
        if values.ndim != 1 or values.size != 256 or str(values.dtype) not in LUT_DTYPES:
            return (f"take of a {values.dtype} table of shape {list(values.shape)}: the HVX lookup takes 256 uint8 or int8"
                    " entries")
        index_dtype, shape, mode = str(q.ty.dtype), static_shape(q), str(call.attrs.mode)
        if call.attrs.axis is not None and int(call.attrs.axis) not in (0, -1):
            return f"take along axis {int(call.attrs.axis)}: the HVX lookup takes a 1-d table"
        if index_dtype not in LUT_DTYPES or (index_dtype == "int8" and mode != "wrap"):
            return (f"take by a {index_dtype} index in {mode} mode: the HVX lookup takes uint8 indices, or int8 ones"
                    " in wrap mode")
        if shape is None:
            return "take by an index of dynamic shape: the HVX lookup takes static shapes"
        out_dtype = str(values.dtype)
        base, segments = table_segments(values)
        fused = self._requantized_lookup(q, Table(out_dtype, base, segments), name)
        if fused is not None:
            applied(self.rule.outcomes, name, "in the requantization's HVX kernel (vlut32 on its bytes before they are"
                    " stored)")
            return relax.call_tir(fused[0], [*fused[1], relax.const(arrange_table(values, base))],
                                  relax.TensorType(shape, out_dtype))
        func = (lookup_table(shape, index_dtype, out_dtype, base, segments) if self.rule.hvx
                else plain_lookup_table(shape, index_dtype, out_dtype, base))
        kernel = add_kernel(self.builder_, func, f"hvx_lookup_{name}")
        applied(self.rule.outcomes, name, "HVX vlut32 table lookup")
        return relax.call_tir(kernel, [self.visit_expr(q), relax.const(arrange_table(values, base))],
                              relax.TensorType(shape, out_dtype))

    def _requantized_lookup(self, q, table: Table, name: str):
        """``(kernel, operands)``: the requantization kernel that computes ``q`` alone
        (``HexagonRequantize``'s ``requantize_kernel``, its parameters in the attribute
        ``REQUANTIZE_ATTR``) again with ``table`` in it, when nothing else reads ``q`` and the kernel
        does not hold its constants in registers (``hoisted``); else None. Measured (packets of the
        two kernels -> the one): not held, 0.78-1.00 (MobileNetV3-Small's 3x3x576 1,316 -> 1,142, its
        squeeze-and-excite gates 0.78-0.84, SqueezeNet 1.1's 5x5x192 0.93); held, 0.93-1.14
        (MobileNetV3-Small's 12x12x96 0.93, SqueezeNet 1.1's 23x23x64 1.03 and 11x11x128 1.14)."""
        call = self.var2val.get(q) if isinstance(q, relax.Var) else None
        if call is None or getattr(call, "op", None) != tvm.ir.Op.get("relax.call_tir") or self._readers().get(q, 0) != 1:
            return None
        func = self.mod[call.args[0]] if call.args[0] in self.mod.functions else None
        params = func.attrs.get(REQUANTIZE_ATTR) if isinstance(func, tvm.tirx.PrimFunc) and func.attrs else None
        if params is None:
            return None
        shape = [int(d) for d in params["shape"]]
        if hoisted(shape):
            return None
        kernel = requantize_kernel(shape, int(params["zy"]), int(params["lo"]), int(params["hi"]), str(params["dtype"]),
                                   hvx_code=self.rule.hvx, average=bool(params["average"]),
                                   pre_shift=bool(params["pre_shift"]), table=table)
        self.rule.superseded.add(call.args[0])
        return add_kernel(self.builder_, kernel, f"hvx_requantize_{name}"), list(call.args[1].fields)


LOWEST = {"uint8": 0, "int8": -128}
SELECTIONS = {"relax.nn.max_pool2d": "_max_pool", "relax.concat": "_concat", "relax.take": "_lookup",
              "relax.strided_slice": "_slice"}  # op -> the rewriter's method
