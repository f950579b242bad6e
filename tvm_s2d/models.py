"""Small real CNN architectures as float ONNX models, built with ``onnx.helper`` and seeded
random weights, for the whole-model benchmarks and tests: ResNet-like, MobileNetV2-like
(depthwise), ShuffleNet-like (grouped 1x1 convs, channel shuffle), DenseNet-like (concats),
ESPCN-like (DepthToSpace). ``zoo(size)`` names them all (with the built-in demo)."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


class _Graph:
    """A growing ONNX graph: ``conv`` / ``op`` append nodes and return the output name."""

    def __init__(self, name: str, seed: int = 0):
        self.name, self.rng = name, np.random.default_rng(seed)
        self.nodes, self.inits, self.count = [], [], 0

    def _fresh(self, prefix: str) -> str:
        self.count += 1
        return f"{prefix}{self.count}"

    def conv(self, x: str, cin: int, cout: int, k: int, stride: int = 1, groups: int = 1, relu: bool = True) -> str:
        name = self._fresh("conv")
        w = (self.rng.standard_normal((cout, cin // groups, k, k)) * np.sqrt(2.0 / (cin // groups * k * k))).astype(np.float32)
        b = (0.05 * self.rng.standard_normal(cout)).astype(np.float32)
        self.inits += [numpy_helper.from_array(w, f"{name}.w"), numpy_helper.from_array(b, f"{name}.b")]
        self.nodes.append(helper.make_node("Conv", [x, f"{name}.w", f"{name}.b"], [name], name=name, kernel_shape=[k, k],
                                           strides=[stride, stride], pads=[k // 2] * 4, group=groups))
        return self.op("Relu", [name]) if relu else name

    def op(self, op_type: str, inputs: list[str], **attrs) -> str:
        out = self._fresh(op_type.lower())
        self.nodes.append(helper.make_node(op_type, inputs, [out], name=out, **attrs))
        return out

    def const(self, values, dtype=np.int64) -> str:
        name = self._fresh("const")
        self.inits.append(numpy_helper.from_array(np.asarray(values, dtype), name))
        return name

    def dense(self, x: str, cin: int, cout: int) -> str:
        name = self._fresh("fc")
        w = (self.rng.standard_normal((cin, cout)) / np.sqrt(cin)).astype(np.float32)
        self.inits += [numpy_helper.from_array(w, f"{name}.w"), numpy_helper.from_array(np.zeros(cout, np.float32), f"{name}.b")]
        self.nodes.append(helper.make_node("Gemm", [x, f"{name}.w", f"{name}.b"], [name], name=name))
        return name

    def classifier(self, x: str, channels: int, classes: int = 10) -> str:
        pooled = self.op("GlobalAveragePool", [x])
        flat = self.op("Flatten", [pooled], axis=1)
        return self.op("Softmax", [self.dense(flat, channels, classes)], axis=1)

    def model(self, output: str, size: int, channels: int = 3) -> onnx.ModelProto:
        graph = helper.make_graph(self.nodes, self.name,
                                  [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, channels, size, size])],
                                  [helper.make_tensor_value_info(output, TensorProto.FLOAT, None)], initializer=self.inits)
        return onnx.shape_inference.infer_shapes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))


def resnet_like(size: int = 224) -> onnx.ModelProto:
    """7x7/2 stem, 3x3/2 max pool, basic residual blocks at 32 and 64 channels (the second
    strided with a 1x1/2 shortcut), global pool, dense, softmax."""
    g = _Graph("resnet_like", seed=1)
    x = g.op("MaxPool", [g.conv("x", 3, 32, 7, 2)], kernel_shape=[3, 3], strides=[2, 2], pads=[1] * 4)
    for cin, cout, stride in [(32, 32, 1), (32, 32, 1), (32, 64, 2), (64, 64, 1)]:
        y = g.conv(g.conv(x, cin, cout, 3, stride), cout, cout, 3, relu=False)
        shortcut = x if (cin, stride) == (cout, 1) else g.conv(x, cin, cout, 1, stride, relu=False)
        x = g.op("Relu", [g.op("Add", [y, shortcut])])
    return g.model(g.classifier(x, 64), size)


def mobilenet_v2_like(size: int = 224) -> onnx.ModelProto:
    """3x3/2 stem, inverted residual blocks (1x1 expand, 3x3 depthwise, 1x1 project, residual
    where shapes match), 1x1 head, global pool, dense, softmax."""
    g = _Graph("mobilenet_v2_like", seed=2)
    x, c = g.conv("x", 3, 16, 3, 2), 16
    for cout, stride, expand in [(16, 1, 1), (24, 2, 4), (24, 1, 4), (32, 2, 4), (32, 1, 4)]:
        hidden = c * expand
        y = g.conv(x, c, hidden, 1) if expand != 1 else x
        y = g.conv(y, hidden, hidden, 3, stride, groups=hidden)
        y = g.conv(y, hidden, cout, 1, relu=False)
        x = g.op("Add", [x, y]) if (stride, c) == (1, cout) else y
        c = cout
    return g.model(g.classifier(g.conv(x, c, 128, 1), 128), size)


def shufflenet_like(size: int = 224) -> onnx.ModelProto:
    """3x3/2 stem and 3x3/2 max pool, then units of grouped 1x1 conv (4 groups), channel
    shuffle (reshape, transpose, reshape), 3x3 depthwise, grouped 1x1, residual add."""
    g = _Graph("shufflenet_like", seed=3)
    x = g.op("MaxPool", [g.conv("x", 3, 48, 3, 2)], kernel_shape=[3, 3], strides=[2, 2], pads=[1] * 4)
    c, groups, hw = 48, 4, -(-size // 4)
    for _ in range(3):
        y = g.conv(x, c, c, 1, groups=groups)
        y = g.op("Reshape", [y, g.const([1, groups, c // groups, hw, hw])])
        y = g.op("Transpose", [y], perm=[0, 2, 1, 3, 4])
        y = g.op("Reshape", [y, g.const([1, c, hw, hw])])
        y = g.conv(y, c, c, 3, groups=c, relu=False)
        y = g.conv(y, c, c, 1, groups=groups, relu=False)
        x = g.op("Relu", [g.op("Add", [x, y])])
    return g.model(g.classifier(x, c), size)


def densenet_like(size: int = 224) -> onnx.ModelProto:
    """3x3/2 stem, two dense blocks (each layer a 3x3 conv of growth 12 concatenated to its
    input) with a 1x1 transition and 2x2 average pool between them."""
    g = _Graph("densenet_like", seed=4)
    x, c = g.conv("x", 3, 24, 3, 2), 24
    for block in range(2):
        for _ in range(4):
            x = g.op("Concat", [x, g.conv(x, c, 12, 3)], axis=1)
            c += 12
        if block == 0:
            x = g.op("AveragePool", [g.conv(x, c, c // 2, 1)], kernel_shape=[2, 2], strides=[2, 2])
            c //= 2
    return g.model(g.classifier(x, c), size)


def espcn_like(size: int = 224) -> onnx.ModelProto:
    """ESPCN-like super-resolution: 5x5 3->32, 3x3 32->32, 3x3 32->12, DepthToSpace 2."""
    g = _Graph("espcn_like", seed=5)
    x = g.conv(g.conv("x", 3, 32, 5), 32, 32, 3)
    return g.model(g.op("DepthToSpace", [g.conv(x, 32, 12, 3, relu=False)], blocksize=2), size)


def zoo(size: int = 224) -> dict[str, onnx.ModelProto]:
    """The benchmark's models by name, input ``1x3xsize x size`` (``size`` a multiple of 16)."""
    from .demo import demo_model

    return {"resnet": resnet_like(size), "mobilenet_v2": mobilenet_v2_like(size), "shufflenet": shufflenet_like(size),
            "densenet": densenet_like(size), "demo": demo_model(size), "espcn": espcn_like(size)}
