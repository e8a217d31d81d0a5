"""Small random float ONNX models, quantized by onnxruntime.quantization, for the ORT bit-exactness tests.

`random_float_model(seed)` builds a float CNN or MLP with onnx.helper (random weights): padded / strided /
grouped / depthwise convs with and without bias, Relu and Clip(0, 6), residual Add, MaxPool, AveragePool,
GlobalAveragePool, Concat, Flatten / Reshape, Gemm and MatMul; the output is the last op (so every op kind is
also compared directly, not only through a classifier head). `quantize(float_path, out_path, **settings)` runs
`quantize_static` on a few random calibration samples.
"""

from __future__ import annotations

import numpy as np

onnx = __import__("pytest").importorskip("onnx")
ort = __import__("pytest").importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402
from onnxruntime.quantization import (CalibrationDataReader, QuantFormat, QuantType,  # noqa: E402
                                      quantize_static)

TYPE_COMBOS = {"u8s8": (QuantType.QUInt8, QuantType.QInt8), "s8s8": (QuantType.QInt8, QuantType.QInt8),
               "u8u8": (QuantType.QUInt8, QuantType.QUInt8)}


class _Builder:
    def __init__(self, rng):
        self.rng, self.nodes, self.inits, self.k = rng, [], [], 0

    def name(self, base):
        self.k += 1
        return f"{base}{self.k}"

    def const(self, base, arr):
        n = self.name(base)
        self.inits.append(numpy_helper.from_array(np.asarray(arr, dtype=np.float32), n))
        return n

    def node(self, op, inputs, **attrs):
        out = self.name(op.lower())
        self.nodes.append(helper.make_node(op, inputs, [out], name=self.name(op + "_"), **attrs))
        return out

    def conv(self, x, c, h, w, co=None, k=None, stride=None, pad=None, groups=1, bias=None, act=None):
        rng = self.rng
        k = int(rng.integers(1, 4)) if k is None else k
        k = min(k, h, w)
        stride = int(rng.integers(1, 3)) if stride is None else stride
        pads = [int(rng.integers(0, k)) for _ in range(4)] if pad is None else [min(pad, k - 1)] * 4
        co = (groups * int(rng.integers(1, 4))) if co is None else co
        wt = rng.normal(size=(co, c // groups, k, k)) * (1.5 / np.sqrt(k * k * c / groups))
        ins = [x, self.const("w", wt)]
        if bias if bias is not None else rng.integers(2):
            ins.append(self.const("b", rng.normal(size=co) * 0.2))
        y = self.node("Conv", ins, kernel_shape=[k, k], strides=[stride, stride], pads=pads, group=groups)
        ho = (h + pads[0] + pads[2] - k) // stride + 1
        wo = (w + pads[1] + pads[3] - k) // stride + 1
        y = self.act(y, act)
        return y, co, ho, wo

    def act(self, y, act=None):
        act = self.rng.choice(["relu", "relu", "none", "clip"]) if act is None else act
        if act == "relu":
            return self.node("Relu", [y])
        if act == "clip":
            lo = self.const("lo", np.array(0.0))
            hi = self.const("hi", np.array(6.0))
            return self.node("Clip", [y, lo, hi])
        return y

    def dense(self, x, k, n, gemm=None, act="none"):
        rng = self.rng
        gemm = bool(rng.integers(2)) if gemm is None else gemm
        wt = rng.normal(size=(k, n)) * (1.5 / np.sqrt(k))
        if gemm:
            trans_b = int(rng.integers(2))
            b = self.const("w", wt.T if trans_b else wt)
            ins = [x, b]
            if rng.integers(3):
                ins.append(self.const("b", rng.normal(size=n) * 0.2))
            y = self.node("Gemm", ins, transB=trans_b)
        else:
            y = self.node("MatMul", [x, self.const("w", wt)])
        return self.act(y, act)


def random_float_model(seed: int):
    """A random float model; returns (ModelProto, input shape without batch, description)."""
    rng = np.random.default_rng(seed)
    b = _Builder(rng)
    desc = []
    if rng.integers(6) == 0:                      # an MLP
        k = int(rng.integers(4, 40))
        x, dims = "x", k
        for _ in range(int(rng.integers(1, 4))):
            n = int(rng.integers(2, 24))
            x = b.dense(x, dims, n, act=str(rng.choice(["relu", "none"])))
            desc.append("dense")
            dims = n
        return _finish(b, x, [k], ["N", dims], "mlp:" + ",".join(desc))
    c, h, w = int(rng.integers(1, 5)), int(rng.integers(5, 13)), int(rng.integers(5, 13))
    x = "x"
    shape = (c, h, w)
    x, c, h, w = b.conv(x, c, h, w)
    desc.append("conv")
    for _ in range(int(rng.integers(1, 5))):
        op = str(rng.choice(["conv", "dw", "res", "maxpool", "avgpool", "concat", "conv"]))
        if op in ("maxpool", "avgpool") and min(h, w) < 3:
            op = "conv"
        if op == "conv":
            x, c, h, w = b.conv(x, c, h, w, groups=int(rng.choice([g for g in (1, 2) if c % g == 0])))
        elif op == "dw":
            x, c, h, w = b.conv(x, c, h, w, co=c, k=3, stride=int(rng.integers(1, 3)), pad=1, groups=c)
        elif op == "res":
            k = 3 if min(h, w) >= 3 else 1
            y, _, _, _ = b.conv(x, c, h, w, co=c, k=k, stride=1, pad=k // 2, act="none")
            x = b.node("Add", [x, y] if rng.integers(2) else [y, x])
            x = b.act(x, str(rng.choice(["relu", "none"])))
        elif op == "maxpool":
            k = int(rng.choice([2, 3]))
            s = int(rng.integers(1, 3))
            p = int(rng.integers(0, k)) if k == 3 else 0
            x = b.node("MaxPool", [x], kernel_shape=[k, k], strides=[s, s], pads=[p] * 4)
            h, w = (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1
        elif op == "avgpool":
            k = int(rng.choice([2, 3]))
            s = int(rng.integers(1, 3))
            p = int(rng.integers(0, k)) if rng.integers(2) else 0
            x = b.node("AveragePool", [x], kernel_shape=[k, k], strides=[s, s], pads=[p] * 4,
                       count_include_pad=int(rng.integers(2)))
            h, w = (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1
        else:  # concat of two 1x1/3x3 branches
            y1, c1, _, _ = b.conv(x, c, h, w, k=1, stride=1, pad=0)
            k = 3 if min(h, w) >= 3 else 1
            y2, c2, _, _ = b.conv(x, c, h, w, k=k, stride=1, pad=k // 2)
            x = b.node("Concat", [y1, y2, x] if rng.integers(2) else [y1, y2], axis=1)
            c = c1 + c2 + (c if len(b.nodes[-1].input) == 3 else 0)
        desc.append(op)
    tail = str(rng.choice(["none", "gap", "fc", "fc2"]))
    if tail == "gap":
        x = b.node("GlobalAveragePool", [x])
        h = w = 1
        desc.append("gap")
    if tail in ("fc", "fc2"):
        if rng.integers(2):
            x = b.node("GlobalAveragePool", [x])
            h = w = 1
            desc.append("gap")
        k = c * h * w
        if rng.integers(2):
            x = b.node("Flatten", [x], axis=1)
        else:
            x = b.node("Reshape", [x, _shape_const(b, [-1 if rng.integers(2) else 0, k])])
        if tail == "fc2":
            n = int(rng.integers(4, 16))
            x = b.dense(x, k, n, act="relu")
            k = n
            desc.append("fc")
        n = int(rng.integers(2, 11))
        x = b.dense(x, k, n, act="none")
        desc.append("fc")
        return _finish(b, x, list(shape), ["N", n], ",".join(desc))
    return _finish(b, x, list(shape), ["N", c, h, w], ",".join(desc))


def _shape_const(b, shape):
    n = b.name("shape")
    b.inits.append(numpy_helper.from_array(np.asarray(shape, dtype=np.int64), n))
    return n


def _finish(b, x, in_shape, out_shape, desc):
    # rename the last tensor to "y" (graph output)
    last = b.nodes[-1]
    last.output[0] = "y"
    for node in b.nodes:
        for i, name in enumerate(node.input):
            if name == x and node is not last:
                node.input[i] = "y"
    graph = helper.make_graph(b.nodes, "random", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                              ["N"] + list(in_shape))],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], b.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model, tuple(in_shape), desc


class _Reader(CalibrationDataReader):
    def __init__(self, samples):
        self.it = iter([{"x": s[None]} for s in samples])

    def get_next(self):
        return next(self.it, None)


def quantize(float_path, out_path, in_shape, *, fmt="QDQ", types="u8s8", per_channel=False, reduce_range=False,
             seed=0, n_calib=3, extra_options=None):
    act, wt = TYPE_COMBOS[types]
    rng = np.random.default_rng(seed + 12345)
    samples = rng.normal(size=(n_calib,) + tuple(in_shape)).astype(np.float32)
    quantize_static(str(float_path), str(out_path), _Reader(samples),
                    quant_format=QuantFormat.QDQ if fmt == "QDQ" else QuantFormat.QOperator,
                    per_channel=per_channel, reduce_range=reduce_range, activation_type=act, weight_type=wt,
                    extra_options=extra_options or {})


FLOAT_COMPUTE_OPS = ("Conv", "MatMul", "Gemm", "Add", "AveragePool", "GlobalAveragePool", "Concat")


def _session(path, int8_allowed=False, optimized_path=None):
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.log_severity_level = 3
    if int8_allowed:
        so.add_session_config_entry("session.qdqisint8allowed", "1")
    if optimized_path is not None:
        so.optimized_model_filepath = str(optimized_path)
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def ort_run(path, x, int8_allowed=False):
    sess = _session(path, int8_allowed)
    return sess.run(None, {sess.get_inputs()[0].name: x})[0]


def ort_float_nodes(path, int8_allowed=False):
    """Names of the compute nodes ONNX Runtime's optimized graph still runs in float32."""
    opt = str(path) + (".int8" if int8_allowed else "") + ".opt.onnx"
    _session(path, int8_allowed, opt)
    return sorted(n.name for n in onnx.load(opt).graph.node if n.op_type in FLOAT_COMPUTE_OPS)
