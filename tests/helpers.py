"""Small builders and runners shared by the tests."""

from __future__ import annotations

import numpy as np
import onnx
import tvm
from onnx import TensorProto, helper, numpy_helper
from tvm import relax

from tvm_s2d.pipeline import S2DPipeline

LLVM = tvm.target.Target({"kind": "llvm"})
#: The pipeline's lowering stage (legalize, fold, fuse): the kernels the schedules take
FUSE = S2DPipeline(rewrite=False).stages["lower"]


def conv_module(data_shape, weight, *, dtype="float32", weight_param=False, epilogue=None, **conv_attrs):
    """``main(x) = [epilogue](conv2d(x, W))`` with ``W`` a constant (or a parameter)."""
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType(data_shape, dtype))
    params = [x]
    if weight_param:
        w = relax.Var("w", relax.TensorType(weight.shape, str(weight.dtype)))
        params.append(w)
    else:
        w = relax.const(weight)
    with bb.function("main", params):
        with bb.dataflow():
            y = bb.emit(relax.op.nn.conv2d(x, w, **conv_attrs), "conv")
            if epilogue is not None:
                y = bb.emit(epilogue(y), "post")
            out = bb.emit_output(y)
        bb.emit_func_output(out)
    return bb.get()


def run(mod, *inputs, pipeline="default", target=LLVM, disabled=()):
    with tvm.transform.PassContext(opt_level=3, disabled_pass=list(disabled)):
        ex = tvm.compile(mod, target=target, relax_pipeline=pipeline)
    vm = relax.VirtualMachine(ex, tvm.cpu())
    return vm["main"](*[tvm.runtime.tensor(np.ascontiguousarray(a)) for a in inputs]).numpy()


def random_tensor(rng, shape, dtype):
    if dtype == "float32":
        return rng.standard_normal(shape).astype(np.float32)
    info = np.iinfo(dtype)
    return rng.integers(info.min, info.max + 1, shape).astype(dtype)


def assert_same(got, expected, dtype):
    """Integer results must be bit-exact; float ones may differ only by rounding."""
    assert got.shape == expected.shape and got.dtype == expected.dtype
    if np.issubdtype(expected.dtype, np.integer):
        np.testing.assert_array_equal(got, expected)
    else:
        scale = float(np.abs(expected).max()) or 1.0
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5 * scale)


def ops_in(mod, name="relax.nn.conv2d"):
    """The calls to operator ``name`` in ``main``, in order."""
    found = []

    def visit(expr):
        if isinstance(expr, relax.Call) and isinstance(expr.op, tvm.ir.Op) and expr.op.name == name:
            found.append(expr)

    relax.analysis.post_order_visit(mod["main"], visit)
    return found


class Net:
    """A tiny builder for test graphs: ``net = Net((1, 8, 16, 16)); y = net.conv(net.x, 8, 3, padding=1)``.

    Convs get seeded random constant weights in the layout's kernel layout; ``net.module(y)``
    closes the function.
    """

    def __init__(self, shape, dtype="float32", layout="NCHW", seed=0):
        self.rng = np.random.default_rng(seed)
        self.layout, self.dtype = layout, dtype
        self.bb = relax.BlockBuilder()
        self.x = relax.Var("x", relax.TensorType(shape, dtype))
        self._func = self.bb.function("main", [self.x])
        self._func.__enter__()
        self._df = self.bb.dataflow()
        self._df.__enter__()
        self.count = 0

    def channels(self, y):
        return int(y.ty.shape.values[1 if self.layout == "NCHW" else 3])

    def weight(self, shape_oihw, dtype=None):
        dtype = dtype or ("int8" if self.dtype in ("int8", "uint8") else "float32")
        w = random_tensor(self.rng, shape_oihw, dtype)
        if dtype == "float32":
            w = (w / np.sqrt(np.prod(shape_oihw[1:]))).astype(np.float32)
        return w

    def emit(self, expr, name=None):
        self.count += 1
        return self.bb.emit(expr, name or f"t{self.count}")

    def conv(self, y, cout, k, stride=1, padding=0, dilation=1, name=None, **attrs):
        kernel_layout = "OIHW" if self.layout == "NCHW" else "HWIO"
        w = self.weight((cout, self.channels(y), k, k))
        w = w if self.layout == "NCHW" else w.transpose(2, 3, 1, 0)
        if self.dtype in ("int8", "uint8"):
            attrs.setdefault("out_dtype", "int32")
        return self.emit(relax.op.nn.conv2d(y, relax.const(w), strides=stride, padding=padding, dilation=dilation,
                                            data_layout=self.layout, kernel_layout=kernel_layout, **attrs), name)

    def conv_transpose(self, y, cout, k, stride, padding=0, output_padding=0, name=None):
        w = self.weight((self.channels(y), cout, k, k))  # IOHW
        return self.emit(relax.op.nn.conv2d_transpose(y, relax.const(w), strides=stride, padding=padding,
                                                      output_padding=output_padding, data_layout=self.layout), name)

    def bias(self, y):
        c = self.channels(y)
        shape = (1, c, 1, 1) if self.layout == "NCHW" else (c,)
        return self.emit(relax.op.add(y, relax.const(self.rng.standard_normal(shape).astype(str(y.ty.dtype)))))

    def module(self, y):
        out = self.bb.emit_output(y)
        self._df.__exit__(None, None, None)
        self.bb.emit_func_output(out)
        self._func.__exit__(None, None, None)
        return self.bb.get()


def require_hexagon_tools() -> None:
    """Skip the calling test when qemu-hexagon / clang-14 / lld-14 are missing, unless
    S2D_REQUIRE_HEXAGON=1 (set by ``.ci/run``) makes that a failure."""
    import os

    import pytest

    from tvm_s2d.emulator.qemu import EmulatorError, check_tools

    try:
        check_tools()
    except EmulatorError as missing:
        if os.environ.get("S2D_REQUIRE_HEXAGON") == "1":
            raise
        pytest.skip(str(missing))


def load_script(name: str):
    """``scripts/<name>.py`` as a module (the benchmark scripts are not a package)."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location(name, Path(__file__).resolve().parent.parent / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def onnxruntime_reference(model, feeds: dict) -> np.ndarray:
    """The model's first output by ONNX Runtime with graph optimizations off: its fused int8
    kernels (the default session) round differently on CPUs without VNNI; the unoptimized
    session computes the ONNX semantics, op by op."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return session.run(None, feeds)[0]


def onnx_semantics(model, feeds: dict) -> np.ndarray:
    """The model's first output by onnx's reference evaluator: the ONNX semantics exactly, for
    integer ops where ONNX Runtime's CPU kernels are not. On AVX2 CPUs without VNNI (the AMD
    EPYC of session 19) its uint8 x int8 MatMulInteger, QLinearConv and QLinearMatMul multiply
    through ``vpmaddubsw``, whose int16 pair sums saturate: -103,187 where the ONNX semantics
    (and the reference evaluator, and numpy) give -97,774, graph optimizations off."""
    from onnx.reference import ReferenceEvaluator

    return ReferenceEvaluator(model).run(None, feeds)[0]


# ---- quantized graphs shared by the tests ----------------------------------------------------


def qdq_chain(batch=1, hw=(23, 21), weight_type="int8", strides=(1, 2, 1), seed=0):
    """uint8 activations with zero points; int8 per-channel or uint8 per-tensor weights."""
    rng = np.random.default_rng(seed)
    inits, nodes = [], []

    def const(name, value):
        inits.append(numpy_helper.from_array(value, name))
        return name

    const("s_in", np.array(0.05, np.float32))
    const("z_in", np.array(3, np.uint8))
    src, scale, zero, size = "x", "s_in", "z_in", list(hw)
    for i, stride in enumerate(strides):
        if weight_type == "int8":
            const(f"w{i}", rng.integers(-100, 100, (8, 8, 3, 3)).astype(np.int8))
            const(f"ws{i}", (rng.random(8) * 0.01 + 0.001).astype(np.float32))
            const(f"wz{i}", np.zeros(8, np.int8))
        else:
            const(f"w{i}", rng.integers(0, 256, (8, 8, 3, 3)).astype(np.uint8))
            const(f"ws{i}", np.array(0.004, np.float32))
            const(f"wz{i}", np.array(120, np.uint8))
        const(f"b{i}", rng.standard_normal(8).astype(np.float32))
        const(f"s{i}", np.array(0.08 + 0.04 * i, np.float32))
        const(f"z{i}", np.array(100 + 10 * i, np.uint8))
        nodes += [
            helper.make_node("DequantizeLinear", [src, scale, zero], [f"xf{i}"]),
            helper.make_node("DequantizeLinear", [f"w{i}", f"ws{i}", f"wz{i}"], [f"wf{i}"], axis=0),
            helper.make_node("Conv", [f"xf{i}", f"wf{i}", f"b{i}"], [f"y{i}"], pads=[1] * 4, strides=[stride] * 2, name=f"conv{i}"),
            helper.make_node("Relu", [f"y{i}"], [f"r{i}"]),
            helper.make_node("QuantizeLinear", [f"r{i}", f"s{i}", f"z{i}"], [f"q{i}"]),
        ]
        src, scale, zero = f"q{i}", f"s{i}", f"z{i}"
        size = [(d - 1) // stride + 1 for d in size]
    graph = helper.make_graph(
        nodes, "qdq", [helper.make_tensor_value_info("x", TensorProto.UINT8, [batch, 8, *hw])],
        [helper.make_tensor_value_info(src, TensorProto.UINT8, [batch, 8, *size])], initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    return model


def lrn_model(shape=(1, 16, 7, 9), alpha=0.05, quantized=False):
    """One LRN (AlexNet's size 5, beta 0.75; a larger alpha so the power matters), float, or
    between a DequantizeLinear and a QuantizeLinear (uint8, as ``quantize_static`` writes it)."""
    inits = [helper.make_tensor("s", TensorProto.FLOAT, [], [0.05]), helper.make_tensor("z", TensorProto.UINT8, [], [128]),
             helper.make_tensor("sy", TensorProto.FLOAT, [], [0.04]), helper.make_tensor("zy", TensorProto.UINT8, [], [120])]
    lrn = helper.make_node("LRN", ["xf" if quantized else "x"], ["n" if quantized else "y"], size=5, alpha=alpha, beta=0.75,
                           bias=1.0, name="lrn")
    if quantized:
        nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["xq"]),
                 helper.make_node("DequantizeLinear", ["xq", "s", "z"], ["xf"]), lrn,
                 helper.make_node("QuantizeLinear", ["n", "sy", "zy"], ["yq"]),
                 helper.make_node("DequantizeLinear", ["yq", "sy", "zy"], ["y"])]
    else:
        nodes, inits = [lrn], []
    graph = helper.make_graph(nodes, "lrn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, list(shape))], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    return model


def float_net(hw=(24, 20), seed=0):
    """Conv (stride 2) + ReLU, conv + residual add, 1x1 conv * its input, 3-channel tail."""
    rng = np.random.default_rng(seed)
    inits = []

    def w(name, shape):
        inits.append(numpy_helper.from_array((rng.standard_normal(shape) * 0.3).astype(np.float32), name))
        return name

    nodes = [
        helper.make_node("Conv", ["x", w("w0", (8, 3, 3, 3)), w("b0", (8,))], ["c0"], pads=[1] * 4, strides=[2, 2], name="stem"),
        helper.make_node("Relu", ["c0"], ["r0"]),
        helper.make_node("Conv", ["r0", w("w1", (8, 8, 3, 3)), w("b1", (8,))], ["c1"], pads=[1] * 4, name="body"),
        helper.make_node("Add", ["c1", "r0"], ["a1"]),
        helper.make_node("Conv", ["a1", w("w2", (8, 8, 1, 1))], ["c2"], name="pointwise"),
        helper.make_node("Mul", ["c2", "a1"], ["m2"]),
        helper.make_node("Conv", ["m2", w("w3", (3, 8, 3, 3)), w("b3", (3,))], ["y"], pads=[1] * 4, name="tail"),
    ]
    graph = helper.make_graph(nodes, "f", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, *hw])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, hw[0] // 2, hw[1] // 2])],
                              initializer=inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def quantize_float_net(tmp_path, fmt, per_channel):
    """``float_net`` quantized by ONNX Runtime (``fmt``: QDQ or QOperator), written in ``tmp_path``;
    weights in 7 bits (``reduce_range``), which ONNX Runtime's uint8 x int8 kernels multiply
    exactly on CPUs without VNNI (``onnx_semantics``), so its session is the ONNX semantics here."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.data = iter({"x": np.random.default_rng(i).standard_normal((1, 3, 24, 20)).astype(np.float32)}
                             for i in range(4))

        def get_next(self):
            return next(self.data, None)

    onnx.save(float_net(), tmp_path / "float.onnx")
    path = tmp_path / f"{fmt}.onnx"
    quantize_static(str(tmp_path / "float.onnx"), str(path), Reader(), quant_format=getattr(QuantFormat, fmt),
                    per_channel=per_channel, reduce_range=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    return path
