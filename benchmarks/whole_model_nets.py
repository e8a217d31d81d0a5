"""Float ONNX networks with random weights for the whole-model speed benchmark (bench_whole_model.py), quantized by
ONNX Runtime's quantize_static: a MobileNet-v1-like net (depthwise-separable blocks), a ResNet-like net (basic
blocks with residual adds) and a single QLinearConv layer. Written with onnx.helper, so no torch is needed.

    from whole_model_nets import mobilenet_v1_float, resnet_like_float, quantize_qdq
"""
from __future__ import annotations

import logging
import os

import numpy as np


class _Net:
    """A small graph builder: conv (+ReLU), depthwise conv, add, pools, dense."""

    def __init__(self, seed):
        self.rng = np.random.default_rng(seed)
        self.nodes, self.inits, self.count = [], [], 0

    def name(self, base):
        self.count += 1
        return f"{base}_{self.count}"

    def const(self, base, array):
        from onnx import numpy_helper
        n = self.name(base)
        self.inits.append(numpy_helper.from_array(np.asarray(array, np.float32), n))
        return n

    def node(self, op, inputs, **attrs):
        from onnx import helper
        y = self.name(op.lower())
        self.nodes.append(helper.make_node(op, inputs, [y], name=y, **attrs))
        return y

    def conv(self, x, cin, cout, k, stride=1, groups=1, relu=True):
        fan_in = cin // groups * k * k
        w = self.const("w", self.rng.normal(size=(cout, cin // groups, k, k)) * np.sqrt(2.0 / fan_in))
        b = self.const("b", self.rng.normal(size=cout) * 0.05)
        y = self.node("Conv", [x, w, b], kernel_shape=[k, k], strides=[stride, stride], pads=[k // 2] * 4,
                      group=groups)
        return self.node("Relu", [y]) if relu else y

    def dense(self, x, cin, cout):
        w = self.const("fc_w", self.rng.normal(size=(cout, cin)) / np.sqrt(cin))
        b = self.const("fc_b", np.zeros(cout))
        return self.node("Gemm", [x, w, b], transB=1)

    def model(self, out, size, classes, label):
        from onnx import TensorProto, helper
        graph = helper.make_graph(
            self.nodes, label, [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, size, size])],
            [helper.make_tensor_value_info(out, TensorProto.FLOAT, ["N", classes])], self.inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        model.ir_version = 8
        return model


def mobilenet_v1_float(size: int = 96, width: float = 1.0, classes: int = 1000, seed: int = 0):
    """MobileNet-v1 (Howard et al. 2017): a 3x3 stride-2 stem, 13 depthwise-separable blocks, GAP, dense."""
    net = _Net(seed)
    c = int(32 * width)
    x = net.conv("input", 3, c, 3, 2)
    plan = [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2)] + [(512, 1)] * 5 + [(1024, 2), (1024, 1)]
    for cout, stride in plan:
        cout = int(cout * width)
        x = net.conv(x, c, c, 3, stride, groups=c)      # depthwise
        x = net.conv(x, c, cout, 1)                      # pointwise
        c = cout
    x = net.node("Flatten", [net.node("GlobalAveragePool", [x])], axis=1)
    return net.model(net.dense(x, c, classes), size, classes, "mobilenet_v1")


def resnet_like_float(size: int = 64, classes: int = 100, seed: int = 0):
    """A ResNet-like net: a 3x3 stem, three stages of two basic blocks (64, 128, 256 channels), max pool, GAP."""
    net = _Net(seed)
    x = net.conv("input", 3, 64, 3, 1)
    x = net.node("MaxPool", [x], kernel_shape=[2, 2], strides=[2, 2])
    c = 64
    for cout, stride in [(64, 1), (128, 2), (256, 2)]:
        for block in range(2):
            s = stride if block == 0 else 1
            y = net.conv(x, c, cout, 3, s)
            y = net.conv(y, cout, cout, 3, 1, relu=False)
            skip = x if (s == 1 and c == cout) else net.conv(x, c, cout, 1, s, relu=False)
            x = net.node("Relu", [net.node("Add", [y, skip])])
            c = cout
    x = net.node("Flatten", [net.node("GlobalAveragePool", [x])], axis=1)
    return net.model(net.dense(x, c, classes), size, classes, "resnet_like")


def quantize_qdq(float_model, path, size: int, *, fmt: str = "QDQ", per_channel: bool = True, seed: int = 1,
                 calib_samples: int = 2, activation: str = "u8", weight: str = "s8") -> str:
    """quantize_static (MinMax on N(0, 1) images of size x size) of `float_model` into `path`; returns the path.
    `activation` / `weight`: "u8" or "s8"."""
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    types = {"u8": QuantType.QUInt8, "s8": QuantType.QInt8}
    path = os.fspath(path)
    float_path = path + ".float.onnx"
    onnx.save(float_model, float_path)
    rng = np.random.default_rng(seed)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter([{"input": rng.normal(size=(1, 3, size, size)).astype(np.float32)}
                            for _ in range(calib_samples)])

        def get_next(self):
            return next(self.it, None)

    level = logging.getLogger().level
    logging.getLogger().setLevel(logging.ERROR)
    try:
        quantize_static(float_path, path, Reader(), quant_format=getattr(QuantFormat, fmt), per_channel=per_channel,
                        activation_type=types[activation], weight_type=types[weight])
    finally:
        logging.getLogger().setLevel(level)
        os.remove(float_path)
    return path


def qlinearconv_model(path, n_ci: int = 64, n_co: int = 64, size: int = 56, seed: int = 0) -> str:
    """One QLinearConv 3x3 (pad 1) layer, u8 activations x s8 per-channel weights, written directly (a float
    input through QuantizeLinear, the output through DequantizeLinear: hwsim's models take float inputs)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    w = rng.integers(-127, 128, size=(n_co, n_ci, 3, 3), dtype=np.int8)
    bias = rng.integers(-5000, 5000, size=n_co).astype(np.int32)
    w_scale = (rng.uniform(0.5, 1.5, n_co) * 0.004).astype(np.float32)
    inits = [numpy_helper.from_array(np.array(0.02, np.float32), "x_s"),
             numpy_helper.from_array(np.array(128, np.uint8), "x_z"),
             numpy_helper.from_array(w, "w"), numpy_helper.from_array(w_scale, "w_s"),
             numpy_helper.from_array(np.zeros(n_co, np.int8), "w_z"),
             numpy_helper.from_array(np.array(0.5, np.float32), "y_s"),
             numpy_helper.from_array(np.array(128, np.uint8), "y_z"),
             numpy_helper.from_array(bias, "b")]
    nodes = [helper.make_node("QuantizeLinear", ["input", "x_s", "x_z"], ["x"]),
             helper.make_node("QLinearConv", ["x", "x_s", "x_z", "w", "w_s", "w_z", "y_s", "y_z", "b"], ["y"],
                              kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
             helper.make_node("DequantizeLinear", ["y", "y_s", "y_z"], ["output"])]
    graph = helper.make_graph(nodes, "qlinearconv",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", n_ci, size, size])],
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["N", n_co, size, size])],
                              inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, os.fspath(path))
    return os.fspath(path)
