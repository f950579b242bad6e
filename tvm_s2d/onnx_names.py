"""ONNX node names on the Relax bindings the importer makes of them.

TVM's ONNX importer drops node names. ``recording()`` watches it convert, node by node: the
bindings a converter emits and the expression it returns belong to that node; a binding
neither emitted nor returned by a converter (an argument the importer normalized into a
binding later) belongs to the node of the binding that reads it. ``name_bindings`` then
names each binding after its node (``_identifier``: the node name as an identifier), so the
names the passes give their kernels (``hvx_<var>``, ``hvx_requantize_<var>`` ...) carry
them, and returns ``OnnxNames``: the binding names -> the ONNX node, for the tables
(``OnnxNames.nodes_in``: the nodes a kernel name speaks of).
"""

from __future__ import annotations

import contextlib
import re

import tvm
from tvm import relax
from tvm.relax.expr_functor import PyExprMutator, mutator
from tvm.relax.frontend.onnx import onnx_frontend

from .passes.kernel_names import kernel_bindings
from .passes.relax_tools import CONV2D, CONV2D_TRANSPOSE


#: The module attribute ``import_model`` leaves the names in (binding name -> ONNX node).
ONNX_NAMES_ATTR = "tvm_s2d.onnx_names"


def onnx_names(mod: tvm.IRModule) -> OnnxNames:
    """The names ``import_model`` left on ``mod`` (empty for a module built otherwise)."""
    found = mod.attrs.get(ONNX_NAMES_ATTR) if mod.attrs is not None else None
    names = OnnxNames()
    for ident, (node, op) in (found or {}).items():
        names[str(ident)], names.ops[str(node)] = str(node), str(op)
    return names


class OnnxNames(dict):
    """Binding name (an identifier) -> the ONNX node's own name; ``ops``: node -> op type."""

    def __init__(self, *args):
        super().__init__(*args)
        self.ops: dict[str, str] = {}

    def as_attr(self) -> dict:
        return {ident: [node, self.ops.get(node, "")] for ident, node in self.items()}

    def rank(self, node: str) -> int:
        """For sorting: a node's own op first, then the quantize and dequantize around it."""
        return {"QuantizeLinear": 1, "DequantizeLinear": 2}.get(self.ops.get(node, ""), 0)

    def nodes_in(self, name: str) -> list[str]:
        """The ONNX nodes whose binding names occur in ``name`` (a kernel's, e.g.
        ``hvx_requantize_conv1_s2d_out1`` or ``fused_conv1_1_relu1``), longest match first
        at each place, in order of occurrence."""
        if not self:
            return []
        if not hasattr(self, "_pattern"):
            alternatives = sorted(self, key=len, reverse=True)
            self._pattern = re.compile(r"(?<![A-Za-z0-9])(" + "|".join(map(re.escape, alternatives)) + r")(?![A-Za-z0-9])")
        found: list[str] = []
        for match in self._pattern.finditer(name):
            node = self[match.group(1)]
            if node not in found:
                found.append(node)
        return found


@contextlib.contextmanager
def recording():
    """While importing: the list of (node name, Relax object) the converters emit and return;
    its ``ops``: node name -> op type. A node without a name is named after its first output."""
    records = _Records()
    importer = onnx_frontend.ONNXGraphImporter
    convert, emit, parse = importer._convert_operator, relax.BlockBuilder.emit, importer._parse_value_proto
    current: list[str] = []
    output = [""]  # the output of the node being converted: the name of a node without one

    def parsing(self, proto):
        if hasattr(proto, "op_type") and len(proto.output):
            output[0] = proto.output[0]
        return parse(self, proto)

    def converting(self, op_name, inputs, attrs, opset):
        custom = attrs.get("tvm_custom", {})
        current.append(custom.get("name") or output[0] or f"{op_name}_{len(records)}")
        try:
            op = convert(self, op_name, inputs, attrs, opset)
        finally:
            node = current.pop()
        records.append((node, op))
        records.ops[node] = op_name
        return op

    def emitting(self, expr, name_hint=""):
        var = emit(self, expr, name_hint)
        if current:
            records.append((current[-1], var))
        return var

    importer._convert_operator, relax.BlockBuilder.emit, importer._parse_value_proto = converting, emitting, parsing
    try:
        yield records
    finally:
        importer._convert_operator, relax.BlockBuilder.emit, importer._parse_value_proto = convert, emit, parse


def name_bindings(mod: tvm.IRModule, records) -> tuple[tvm.IRModule, OnnxNames]:
    """``mod``'s bindings of ``main`` named after the ONNX nodes ``records`` assigns them to
    (see the module doc); the first binding of a node (a conv's conv2d, else its first) gets
    the node's identifier, later ones ``<identifier>_<k>``. Names already taken stay unique."""
    main = mod["main"]
    bindings = [b for block in main.body.blocks for b in block.bindings]
    by_object = {}
    for node, obj in records:
        if isinstance(obj, relax.Expr):
            by_object.setdefault(obj, node)
    node_of: dict = {}
    for binding in bindings:
        node = by_object.get(binding.var) or by_object.get(binding.value)
        if node is not None:
            node_of[binding.var] = node
    bound = {b.var for b in bindings}
    for binding in reversed(bindings):  # the importer's own bindings: the node that reads them
        node = node_of.get(binding.var)
        if node is None:
            continue
        for var in relax.analysis.free_vars(binding.value):
            if var in bound and var not in node_of:
                node_of[var] = node
    names, taken = OnnxNames(), {p.name for p in main.params}
    order: dict[str, list] = {}
    for binding in bindings:
        if binding.var in node_of:
            order.setdefault(node_of[binding.var], []).append(binding)
    new_names = {}
    for node, group in order.items():
        convs = [b for b in group if CONV2D.match(b.value) or CONV2D_TRANSPOSE.match(b.value)]
        group = convs[:1] + [b for b in group if not convs or not b.same_as(convs[0])]
        base = _identifier(node)
        for k, binding in enumerate(group):
            name = base if k == 0 else f"{base}_{k}"
            while name in taken:
                name += "_"
            taken.add(name)
            new_names[binding.var] = name
            names[name] = node
            names.ops[node] = records.ops.get(node, "")
    renamer = _Renamer(mod, new_names)
    renamed = renamer.visit_expr(main)
    mod = mod.clone()
    mod.update_func(mod.get_global_var("main"), renamed)
    return mod, names


class _Records(list):
    def __init__(self):
        super().__init__()
        self.ops: dict[str, str] = {}


def _identifier(name: str) -> str:
    name = re.sub(r"\W", "_", name)
    return name if name and not name[0].isdigit() else "node_" + name


@mutator
class _Renamer(PyExprMutator):
    def __init__(self, mod, names):
        super().__init__(mod)
        self.names = names

    def visit_var_binding_(self, binding: relax.VarBinding) -> None:
        name = self.names.get(binding.var)
        if name is None:
            return super().visit_var_binding_(binding)
        renamed = type(binding.var)(name, binding.var.ty)  # Var or DataflowVar
        super().visit_var_binding_(relax.VarBinding(renamed, binding.value))
        self.set_var_remap(binding.var, renamed)


def kernel_nodes(mod: tvm.IRModule, names: OnnxNames, movement=lambda name: False) -> dict:
    """Kernel call of ``mod``'s ``main`` (by the variable it binds) -> the ONNX nodes it
    computes, its own ops before the quantize and dequantize around them: those its ``hvx_``
    name, its variable and the bindings fused into it (``passes.kernel_names``) are named
    after. A kernel named after none that only moves data (``movement(kernel name)``: a pad,
    an S2D, a layout change) prepares its reader's input and takes its reader's nodes."""
    bindings = [b for block in mod["main"].body.blocks for b in block.bindings]
    fused = kernel_bindings(mod)
    found: dict = {}
    readers: dict = {}
    for binding in bindings:
        for var in relax.analysis.free_vars(binding.value):
            readers.setdefault(var, []).append(binding.var)
    calls = {}
    for binding in bindings:
        value = binding.value
        if isinstance(value, relax.Call) and isinstance(value.op, tvm.ir.Op) and value.op.name == "relax.call_tir":
            kernel = value.args[0].name_hint
            calls[binding.var] = kernel
            words = [kernel] if kernel.startswith("hvx_") else []
            nodes: list[str] = []
            for word in [*words, binding.var.name, *fused.get(kernel, [])]:
                nodes += [n for n in names.nodes_in(word) if n not in nodes]
            found[binding.var] = sorted(nodes, key=names.rank)

    def reader_nodes(var, seen) -> list[str]:
        for reader in readers.get(var, []):
            if reader in seen:
                continue
            seen.add(reader)
            nodes = found.get(reader)
            if nodes:
                return nodes
            if reader not in calls or movement(calls[reader]):  # a view, a tuple or more movement: look further
                nodes = reader_nodes(reader, seen)
                if nodes:
                    return nodes
        return []

    for var, kernel in reversed(list(calls.items())):
        if not found[var] and movement(kernel):
            found[var] = reader_nodes(var, set())
    return found
