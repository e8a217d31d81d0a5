#!/usr/bin/env python3
"""Make the small .tflite fixtures of tests/tflite/fixtures/ with the TensorFlow converter.

    /work/venvs/tf/bin/python tests/tflite/make_fixtures.py [--out DIR] [--only NAME ...] [--no-check]

Needs tensorflow (tested: tensorflow-cpu 2.21), the `tflite` schema package and ai-edge-litert (2.3.0); the
tests that use the files need only ai-edge-litert. Every fixture is a tf.function over constant weights drawn
from numpy with a seed derived from the fixture name (so adding a fixture changes no other), converted with
optimizations=[DEFAULT], a seeded representative dataset, TFLITE_BUILTINS_INT8 and int8 input / output unless
the fixture says otherwise. The script reads each file back (op list, fused activations, per-channel or
per-tensor scales), runs it on LiteRT's three kernel paths (reference, optimized, XNNPACK), counts where they
disagree, and writes fixtures/README.md. Conversion is deterministic: running it twice gives the same bytes.
"""

from __future__ import annotations

import argparse
import os
import re
import struct
import sys
import zlib
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

import numpy as np  # noqa: E402

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import litert_runner  # noqa: E402

N_CALIB = 32          # representative samples per fixture
N_CHECK_INPUTS = 32   # random inputs per fixture for the cross-path comparison


# ============================================================================================ building blocks

class Weights:
    """Seeded random weights; the seed comes from the fixture name."""

    def __init__(self, name):
        self.rng = np.random.default_rng(zlib.crc32(name.encode()))

    def conv(self, kh, kw, cin, cout, bias=True):
        w = self.rng.normal(0.0, np.sqrt(2.0 / (kh * kw * cin)), (kh, kw, cin, cout)).astype(np.float32)
        b = self.rng.normal(0.0, 0.2, cout).astype(np.float32) if bias else None
        return w, b

    def dw(self, k, cin, mult=1, bias=True):
        w = self.rng.normal(0.0, np.sqrt(2.0 / (k * k)), (k, k, cin, mult)).astype(np.float32)
        b = self.rng.normal(0.0, 0.2, cin * mult).astype(np.float32) if bias else None
        return w, b

    def dense(self, cin, cout, bias=True):
        w = self.rng.normal(0.0, np.sqrt(2.0 / cin), (cin, cout)).astype(np.float32)
        b = self.rng.normal(0.0, 0.2, cout).astype(np.float32) if bias else None
        return w, b

    def vec(self, shape, lo, hi):
        return self.rng.uniform(lo, hi, shape).astype(np.float32)


def _tf():
    import tensorflow as tf
    return tf


def conv2d(x, wb, stride=1, padding="SAME"):
    tf = _tf()
    w, b = wb
    y = tf.nn.conv2d(x, w, stride, padding)
    return y + b if b is not None else y


def dwconv(x, wb, stride=1, padding="SAME"):
    tf = _tf()
    w, b = wb
    y = tf.nn.depthwise_conv2d(x, w, [1, stride, stride, 1], padding)
    return y + b if b is not None else y


def dense(x, wb):
    tf = _tf()
    w, b = wb
    y = tf.matmul(x, w)
    return y + b if b is not None else y


def hard_swish(x):
    tf = _tf()
    return x * tf.nn.relu6(x + 3.0) * (1.0 / 6.0)   # the converter's pattern for HARD_SWISH


# ============================================================================================ fixtures
# Each entry: name -> (build(name) -> (fn, input specs [(name, shape, lo, hi)]), converter options, what it covers)

FIXTURES = {}


def fixture(name, covers, **opts):
    def deco(build):
        FIXTURES[name] = (build, opts, covers)
        return build
    return deco


@fixture("conv2d", "CONV_2D: 3x3 SAME s1 +bias RELU; 1x1 no activation, no bias in the graph (the converter "
                   "adds a zero bias); 3x3 s2 SAME RELU6; 3x3 VALID no activation; per-channel weights")
def _conv2d(name):
    W = Weights(name)
    c1, c2, c3, c4 = W.conv(3, 3, 3, 8), W.conv(1, 1, 8, 8, bias=False), W.conv(3, 3, 8, 12), W.conv(3, 3, 12, 16)
    tf = _tf()

    def fn(x):
        y = tf.nn.relu(conv2d(x, c1))
        y = conv2d(y, c2)
        y = tf.nn.relu6(conv2d(y, c3, stride=2))
        return conv2d(y, c4, padding="VALID")
    return fn, [("x", (1, 12, 12, 3), -0.5, 1.5)]


@fixture("conv2d_relu_n1_to_1", "CONV_2D with fused RELU_N1_TO_1 (clip to [-1, 1]) 3x3 and 1x1")
def _conv_n1(name):
    W = Weights(name)
    c1, c2 = W.conv(3, 3, 4, 8), W.conv(1, 1, 8, 8)
    tf = _tf()

    def fn(x):
        y = tf.clip_by_value(conv2d(x, c1), -1.0, 1.0)
        return tf.clip_by_value(conv2d(y, c2), -1.0, 1.0)
    return fn, [("x", (1, 8, 8, 4), -1.0, 1.0)]


@fixture("depthwise", "DEPTHWISE_CONV_2D: 3x3 SAME RELU; 3x3 SAME no activation; 3x3 VALID depth multiplier 2 "
                      "RELU6; 3x3 s2 SAME no bias in the graph")
def _depthwise(name):
    W = Weights(name)
    d1, d2, d3, d4 = W.dw(3, 8), W.dw(3, 8), W.dw(3, 8, mult=2), W.dw(3, 16, bias=False)
    tf = _tf()

    def fn(x):
        y = tf.nn.relu(dwconv(x, d1))
        y = dwconv(y, d2)
        y = tf.nn.relu6(dwconv(y, d3, padding="VALID"))
        return dwconv(y, d4, stride=2)
    return fn, [("x", (1, 12, 12, 8), -1.0, 1.0)]


def _fc_chain(name):
    W = Weights(name)
    f1, f2 = W.dense(64, 48), W.dense(48, 32)
    tf = _tf()

    def fn(x):
        return dense(tf.nn.relu(dense(x, f1)), f2)
    return fn, [("x", (8, 64), -1.0, 2.0)]   # batch 8: more values per run


fixture("fc_per_channel", "FULLY_CONNECTED per-channel weights (TF 2.21's default): RELU, then no activation")(
    _fc_chain)
fixture("fc_per_tensor", "FULLY_CONNECTED per-tensor weights (_experimental_disable_per_channel_quantization_"
                         "for_dense_layers): RELU, then no activation",
        _experimental_disable_per_channel_quantization_for_dense_layers=True)(_fc_chain)


@fixture("fc_flatten", "RESHAPE (flatten of a 4-D tensor) -> FULLY_CONNECTED RELU6 -> FULLY_CONNECTED; "
                       "per-tensor weights", _experimental_disable_per_channel_quantization_for_dense_layers=True)
def _fc_flatten(name):
    W = Weights(name)
    f1, f2 = W.dense(6 * 6 * 4, 32), W.dense(32, 16)
    tf = _tf()

    def fn(x):
        y = tf.reshape(x, [4, 6 * 6 * 4])
        return dense(tf.nn.relu6(dense(y, f1)), f2)
    return fn, [("x", (4, 6, 6, 4), -1.0, 1.0)]


@fixture("add_sub_mul", "ADD (fused RELU), SUB, MUL of two tensors with different scales (two 1x1 convs of one "
                        "input: hwsim models take one input); MUL and ADD with a broadcast [1,1,1,C] constant "
                        "operand")
def _add_sub_mul(name):
    W = Weights(name)
    m, c = W.vec((1, 1, 1, 8), -2.0, 2.0), W.vec((1, 1, 1, 8), -1.0, 3.0)
    ca, cb = W.conv(1, 1, 8, 8), W.conv(1, 1, 8, 8)
    tf = _tf()

    def fn(x):
        a, b = conv2d(x, ca), 2.5 * conv2d(x, cb) + 1.0
        return {"add_relu": tf.nn.relu(a + b), "sub": a - b, "mul": a * b,
                "mul_bcast": a * m, "add_bcast": b + c}
    return fn, [("x", (1, 8, 8, 8), -1.0, 1.0)]


@fixture("broadcast", "ADD, SUB, MUL of a [1,8,8,20] tensor and a [1,1,1,20] tensor (a channel-wise MEAN, as a "
                      "squeeze-and-excitation gate): the broadcasting kernels, 20 channels so SIMD blocks of 16 "
                      "leave a tail")
def _broadcast(name):
    W = Weights(name)
    ca, cb = W.conv(1, 1, 8, 20), W.conv(1, 1, 8, 20)
    tf = _tf()

    def fn(x):
        a = conv2d(x, ca)
        b = tf.reduce_mean(conv2d(x, cb) * 1.7, axis=[1, 2], keepdims=True)
        return {"add_b": a + b, "sub_b": a - b, "mul_b": a * b}
    return fn, [("x", (1, 8, 8, 8), -1.0, 1.0)]


@fixture("pool", "AVERAGE_POOL_2D 2x2 s2 VALID and 3x3 s1 SAME (border cells average real cells only); "
                 "MAX_POOL_2D 2x2 s2 VALID and 3x3 s2 SAME; input zero point != 0")
def _pool(name):
    tf = _tf()

    def fn(x):
        return {"avg_2x2_valid": tf.nn.avg_pool2d(x, 2, 2, "VALID"),
                "avg_3x3_same": tf.nn.avg_pool2d(x, 3, 1, "SAME"),
                "max_2x2_valid": tf.nn.max_pool2d(x, 2, 2, "VALID"),
                "max_3x3_same_s2": tf.nn.max_pool2d(x, 3, 2, "SAME")}
    return fn, [("x", (1, 12, 12, 8), -0.3, 1.7)]


@fixture("mean", "MEAN over H,W with keepdims true and false, straight on the input (so the reference / "
                 "optimized comparison sees MEAN alone), batch 4; output scales differ from the input's")
def _mean(name):
    tf = _tf()

    def fn(x):
        return {"mean_keep": tf.reduce_mean(x, axis=[1, 2], keepdims=True),
                "mean_flat": tf.reduce_mean(x * 1.0, axis=[1, 2], keepdims=False)}
    return fn, [("x", (4, 8, 8, 16), -0.4, 1.2)]


@fixture("reshape_squeeze", "SQUEEZE (no axes: all size-1 dims) and RESHAPE around a 1x1 CONV_2D; the input has a "
                            "dynamic batch (shape_signature -1), because with static shapes the converter turns "
                            "every squeeze into RESHAPE", dynamic_batch=True)
def _reshape_squeeze(name):
    W = Weights(name)
    c1 = W.conv(1, 1, 4, 8)
    tf = _tf()

    def fn(x):
        y = conv2d(x, c1)                            # [N, 8, 1, 8]
        s = tf.squeeze(y)                            # [8, 8] at N = 1
        return {"squeezed": s, "reshaped": tf.reshape(s, [1, 4, 16])}
    return fn, [("x", (1, 8, 1, 4), -1.0, 1.0)]


@fixture("concat", "CONCATENATION along channels (3 inputs) and along W; a LOGISTIC input whose fixed scale "
                   "differs gets an int8->int8 QUANTIZE (requantize), since the converter gives every "
                   "concatenation input the output's scale")
def _concat(name):
    W = Weights(name)
    c1, c2 = W.conv(3, 3, 4, 4), W.conv(1, 1, 4, 6)
    tf = _tf()

    def fn(x):
        a, b = conv2d(x, c1), tf.nn.relu(conv2d(x, c2))
        return {"concat_c": tf.concat([a, b, tf.sigmoid(a)], axis=3),
                "concat_w": tf.concat([a, x * 3.0], axis=2)}
    return fn, [("x", (1, 8, 8, 4), -1.0, 1.0)]


@fixture("concat_mixed_scales_invalid", "INVALID on purpose, for the bad-input tests: an int8 CONCATENATION whose "
                                        "inputs have other scales / zero points than its output. The converter "
                                        "always unifies them, so the script rewrites the two CONV_2D outputs' scale "
                                        "and zero point in the flatbuffer; LiteRT rejects the file at prepare "
                                        "(concatenation.cc: int8 inputs must have the output's scale and zero "
                                        "point), so int8 concatenation never rescales",
         patch_concat_inputs=True)
def _concat_mixed(name):
    W = Weights(name)
    c1, c2 = W.conv(3, 3, 4, 4), W.conv(1, 1, 4, 6)
    tf = _tf()

    def fn(x):
        return tf.concat([conv2d(x, c1), conv2d(x, c2)], axis=3)
    return fn, [("x", (1, 8, 8, 4), -1.0, 1.0)]


@fixture("nobias_patched", "FULLY_CONNECTED with the optional bias index -1 (both FCs; the DEPTHWISE_CONV_2Ds "
                           "keep theirs): the TF converter always writes a bias, so this script sets the index to "
                           "-1 in the flatbuffer after conversion (the bias tensors stay, unused). CONV_2D cannot "
                           "go without bias (LiteRT conv.cc: TF_LITE_ENSURE(context, has_bias)); a DEPTHWISE_CONV_2D "
                           "with 2 inputs runs on the reference kernels but segfaults LiteRT 2.3.0's optimized "
                           "kernels, so it is not shipped",
         drop_bias=True)
def _nobias(name):
    W = Weights(name)
    d1, d2, f1, f2 = W.dw(3, 8), W.dw(3, 8, mult=2), W.dense(4 * 4 * 16, 16), W.dense(16, 10)
    tf = _tf()

    def fn(x):
        y = tf.nn.relu(dwconv(x, d1))
        y = dwconv(y, d2, stride=2)
        y = tf.nn.relu(dense(tf.reshape(y, [1, -1]), f1))
        return dense(y, f2)
    return fn, [("x", (1, 8, 8, 8), -1.0, 1.0)]


@fixture("pad", "PAD symmetric 1 on H,W (= keras ZeroPadding2D) and asymmetric (2,0),(0,1) on H,W; input zero "
                "point != 0, so padding writes the zero point; PAD before a VALID MAX_POOL_2D (the padded cells "
                "take part in the max) and before a VALID CONV_2D")
def _pad(name):
    W = Weights(name)
    c1 = W.conv(3, 3, 4, 6)
    tf = _tf()

    def fn(x):
        return {"pad_sym": tf.pad(x, [[0, 0], [1, 1], [1, 1], [0, 0]]),
                "pad_asym": tf.pad(x, [[0, 0], [2, 0], [0, 1], [0, 0]]),
                "pad_maxpool": tf.nn.max_pool2d(tf.pad(x - 1.0, [[0, 0], [1, 1], [1, 1], [0, 0]]), 3, 2, "VALID"),
                "pad_conv": conv2d(tf.pad(x, [[0, 0], [1, 2], [2, 1], [0, 0]]), c1, padding="VALID")}
    return fn, [("x", (1, 8, 8, 4), -0.2, 1.8)]


@fixture("float_io", "QUANTIZE float32->int8 at the input, DEQUANTIZE int8->float32 at the output "
                     "(inference_input_type = inference_output_type = float32) around CONV_2D RELU + "
                     "FULLY_CONNECTED", io="float32")
def _float_io(name):
    W = Weights(name)
    c1, f1 = W.conv(3, 3, 3, 6), W.dense(8 * 8 * 6, 10)
    tf = _tf()

    def fn(x):
        y = tf.nn.relu(conv2d(x, c1))
        return dense(tf.reshape(y, [1, -1]), f1)
    return fn, [("x", (1, 8, 8, 3), -1.0, 1.0)]


@fixture("softmax", "SOFTMAX on [1,10] after FULLY_CONNECTED and on [1,4,4,8] (last axis) after CONV_2D")
def _softmax(name):
    W = Weights(name)
    f1, c1 = W.dense(128, 10), W.conv(1, 1, 8, 8)
    tf = _tf()

    def fn(x):
        v = tf.reshape(x, [1, -1])
        return {"softmax_fc": tf.nn.softmax(dense(v, f1) * 2.0), "softmax_4d": tf.nn.softmax(conv2d(x, c1))}
    return fn, [("x", (1, 4, 4, 8), -1.0, 1.0)]


@fixture("logistic", "LOGISTIC after CONV_2D")
def _logistic(name):
    W = Weights(name)
    c1 = W.conv(3, 3, 4, 8)
    tf = _tf()

    def fn(x):
        return tf.sigmoid(conv2d(x, c1) * 2.0)
    return fn, [("x", (1, 8, 8, 4), -1.0, 1.0)]


@fixture("hard_swish", "HARD_SWISH (x * relu6(x + 3) / 6) after CONV_2D and after DEPTHWISE_CONV_2D")
def _hard_swish(name):
    W = Weights(name)
    c1, d1 = W.conv(1, 1, 4, 8), W.dw(3, 8)

    def fn(x):
        y = hard_swish(conv2d(x, c1) * 3.0)
        return hard_swish(dwconv(y, d1))
    return fn, [("x", (1, 8, 8, 4), -1.0, 1.0)]


@fixture("uint8_io", "legacy uint8 at the boundary: inference_input_type = inference_output_type = uint8 gives a "
                     "QUANTIZE uint8->int8 at the input and int8->uint8 at the output around int8 CONV_2D RELU "
                     "and AVERAGE_POOL_2D (the TF2 converter's only uint8; see legacy_uint8 for a uint8 model)",
         io="uint8")
def _uint8_io(name):
    W = Weights(name)
    c1 = W.conv(3, 3, 3, 8)
    tf = _tf()

    def fn(x):
        return tf.nn.avg_pool2d(tf.nn.relu(conv2d(x, c1)), 2, 2, "VALID")
    return fn, [("x", (1, 8, 8, 3), 0.0, 1.0)]


@fixture("legacy_uint8", "legacy uint8 model (TF1-style): uint8 activations and asymmetric per-tensor uint8 "
                         "weights (weight zero point != 0), made from a fake-quant graph by "
                         "tf.compat.v1.lite.TFLiteConverter with inference_type = uint8 (TF 2.21 still "
                         "does this). CONV_2D RELU, DEPTHWISE_CONV_2D RELU6, CONV_2D 1x1, ADD, AVERAGE_POOL_2D and "
                         "MAX_POOL_2D each followed by a QUANTIZE uint8->uint8 (requantize), CONCATENATION whose "
                         "inputs have different scales and zero points from the output (uint8 concatenation "
                         "rescales; int8 cannot), RESHAPE, FULLY_CONNECTED, SOFTMAX", io="tf1_uint8")
def _legacy_uint8(name):
    W = Weights(name)
    c1, d1, c2 = W.conv(3, 3, 3, 8), W.dw(3, 8, bias=False), W.conv(1, 1, 8, 8, bias=False)
    c3, f1 = W.conv(1, 1, 8, 4, bias=False), W.dense(4 * 4 * 12, 10)
    tf = _tf()

    def fq_w(w):
        return tf.quantization.fake_quant_with_min_max_args(w, float(min(w.min(), 0)), float(max(w.max(), 0)))

    def graph(q, x):
        """q(tensor, name, fixed range or None): the activation fake-quant (or a recorder, in the range pass)."""
        y = q(tf.nn.relu(tf.nn.conv2d(x, fq_w(c1[0]), 1, "SAME") + c1[1]), "c1")
        z = q(tf.nn.relu6(tf.nn.depthwise_conv2d(y, fq_w(d1[0]), [1, 1, 1, 1], "SAME")), "d1")
        z = q(tf.nn.conv2d(z, fq_w(c2[0]), 1, "SAME"), "c2")
        a = q(y + z, "add")
        p = q(tf.nn.avg_pool2d(a, 2, 2, "VALID"), "avg")
        m = q(tf.nn.max_pool2d(a, 2, 2, "VALID"), "max")
        u = q(tf.nn.conv2d(m, fq_w(c3[0]), 1, "SAME"), "c3")
        cat = q(tf.concat([p, u], axis=3), "cat")
        f = q(tf.matmul(tf.reshape(cat, [1, -1]), fq_w(f1[0])) + f1[1], "fc")
        return q(tf.nn.softmax(f), "softmax", (0.0, 1.0))
    return graph, [("x", (1, 8, 8, 3), 0.0, 1.0)]


def convert_tf1_uint8(name, graph, specs):
    """Two graph-mode passes: record every activation's float range on the calibration data, then rebuild with
    fake-quant nodes over those ranges and convert with the TF1 converter to a uint8 model."""
    import tensorflow as tf
    tf1 = tf.compat.v1
    (in_name, shape, lo, hi), = specs
    rng = np.random.default_rng(zlib.crc32(("calib-" + name).encode()))
    calib = [rng.uniform(lo, hi, shape).astype(np.float32) for _ in range(N_CALIB)]
    ranges, seen = {}, {}
    g = tf.Graph()
    with g.as_default():
        x = tf1.placeholder(tf.float32, shape, name=in_name)
        graph(lambda t, n, fixed=None: seen.setdefault(n, t), x)
        with tf1.Session(graph=g) as sess:
            for c in calib:
                for n, v in sess.run(seen, {x: c}).items():
                    a, b = ranges.get(n, (0.0, 0.0))   # ranges include 0, as fake-quant nudging needs
                    ranges[n] = (min(a, float(v.min())), max(b, float(v.max())))
    g = tf.Graph()
    with g.as_default():
        x = tf1.placeholder(tf.float32, shape, name=in_name)
        xq = tf.quantization.fake_quant_with_min_max_args(x, lo, hi)

        def fq(t, n, fixed=None):
            a, b = fixed or ranges[n]
            return tf.quantization.fake_quant_with_min_max_args(t, a, b, name=n)
        out = graph(fq, xq)
        with tf1.Session(graph=g) as sess:
            conv = tf1.lite.TFLiteConverter.from_session(sess, [x], [out])
            conv.inference_type = tf.uint8
            conv.quantized_input_stats = {in_name: (-lo * 255.0 / (hi - lo), 255.0 / (hi - lo))}  # (mean, std)
            return conv.convert()


@fixture("float32_model", "not quantized (float32 weights and activations): for the bad-input tests",
         io="float_model")
def _float_model(name):
    W = Weights(name)
    c1, f1 = W.conv(3, 3, 3, 4), W.dense(8 * 8 * 4, 10)
    tf = _tf()

    def fn(x):
        return dense(tf.reshape(tf.nn.relu(conv2d(x, c1)), [1, -1]), f1)
    return fn, [("x", (1, 8, 8, 3), -1.0, 1.0)]


@fixture("int16x8", "16-bit activations, 8-bit weights (EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_"
                    "INT8, int16 input and output): for the bad-input tests", io="int16x8")
def _int16x8(name):
    W = Weights(name)
    c1, f1 = W.conv(3, 3, 3, 4), W.dense(8 * 8 * 4, 10)
    tf = _tf()

    def fn(x):
        return dense(tf.reshape(tf.nn.relu(conv2d(x, c1)), [1, -1]), f1)
    return fn, [("x", (1, 8, 8, 3), -1.0, 1.0)]


@fixture("mixed", "MobileNet-like chain for an end-to-end test: CONV_2D 3x3 s2 RELU6 -> inverted residual "
                  "(1x1 expand HARD_SWISH, depthwise RELU6, 1x1 project, ADD residual) -> depthwise s2 RELU6 -> "
                  "1x1 -> AVERAGE_POOL_2D 2x2 -> MEAN -> FULLY_CONNECTED -> SOFTMAX")
def _mixed(name):
    W = Weights(name)
    stem, e1, d1, p1 = W.conv(3, 3, 3, 8), W.conv(1, 1, 8, 16), W.dw(3, 16), W.conv(1, 1, 16, 8)
    d2, p2, f1 = W.dw(3, 8), W.conv(1, 1, 8, 16), W.dense(16, 10)
    tf = _tf()

    def fn(x):
        y = tf.nn.relu6(conv2d(x, stem, stride=2))                 # 8x8x8
        r = hard_swish(conv2d(y, e1))
        r = tf.nn.relu6(dwconv(r, d1))
        y = y + conv2d(r, p1)                                      # residual ADD
        y = tf.nn.relu6(dwconv(y, d2, stride=2))                   # 4x4x8
        y = conv2d(y, p2)                                          # 4x4x16
        y = tf.nn.avg_pool2d(y, 2, 2, "VALID")                     # 2x2x16
        y = tf.reduce_mean(y, axis=[1, 2])                         # 16
        return tf.nn.softmax(dense(y, f1))
    return fn, [("x", (1, 16, 16, 3), -1.0, 1.0)]


# ============================================================================================ conversion

def convert(name):
    import tensorflow as tf
    build, opts, _ = FIXTURES[name]
    opts = dict(opts)
    io = opts.pop("io", "int8")
    patch = opts.pop("patch_concat_inputs", False)
    dynamic_batch = opts.pop("dynamic_batch", False)
    drop_bias = opts.pop("drop_bias", False)
    tf.random.set_seed(zlib.crc32(name.encode()))
    fn, specs = build(name)
    if io == "tf1_uint8":
        return convert_tf1_uint8(name, fn, specs)
    sig = [tf.TensorSpec((None,) + tuple(shape[1:]) if dynamic_batch else shape, tf.float32, name=n)
           for n, shape, _, _ in specs]
    f = tf.function(fn, input_signature=sig)

    def rep():
        rng = np.random.default_rng(zlib.crc32(("calib-" + name).encode()))
        for _ in range(N_CALIB):
            yield [rng.uniform(lo, hi, shape).astype(np.float32) for _, shape, lo, hi in specs]

    conv = tf.lite.TFLiteConverter.from_concrete_functions([f.get_concrete_function()], f)
    if io != "float_model":
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.representative_dataset = rep
        if io == "int16x8":
            conv.target_spec.supported_ops = [
                tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8]
            conv.inference_input_type = conv.inference_output_type = tf.int16
        else:
            conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            io_type = {"int8": tf.int8, "uint8": tf.uint8, "float32": tf.float32}[io]
            conv.inference_input_type = conv.inference_output_type = io_type
    for k, v in opts.items():
        setattr(conv, k, v)
    data = bytearray(conv.convert())
    if patch:
        patch_concat_input_scales(data)
    if drop_bias:
        patch_drop_bias(data)
    return bytes(data)


def _quant_offsets(buf, tensor):
    """Byte offsets of a tensor's first scale (float32) and zero point (int64) in the flatbuffer."""
    import flatbuffers
    q = tensor.Quantization()
    tab = q._tab
    o_s = flatbuffers.number_types.UOffsetTFlags.py_type(tab.Offset(8))
    o_z = flatbuffers.number_types.UOffsetTFlags.py_type(tab.Offset(10))
    return tab.Vector(o_s), tab.Vector(o_z)


def patch_concat_input_scales(data):
    """Give every CONCATENATION input produced by an op its own scale and zero point (in place)."""
    import tflite
    model = tflite.Model.GetRootAsModel(data, 0)
    sg = model.Subgraphs(0)
    producers = {sg.Operators(i).Outputs(0): sg.Operators(i) for i in range(sg.OperatorsLength())}
    factors = [(0.73, 5), (1.61, -7), (0.5, 3)]
    for i in range(sg.OperatorsLength()):
        op = sg.Operators(i)
        if tflite.opcode2name(model.OperatorCodes(op.OpcodeIndex()).BuiltinCode()) != "CONCATENATION":
            continue
        for k in range(op.InputsLength()):
            t_idx = op.Inputs(k)
            if t_idx not in producers:
                continue
            t = sg.Tensors(t_idx)
            s_off, z_off = _quant_offsets(data, t)
            (scale,) = struct.unpack_from("<f", data, s_off)
            (zp,) = struct.unpack_from("<q", data, z_off)
            f, dz = factors[k % len(factors)]
            struct.pack_into("<f", data, s_off, np.float32(scale * f))
            struct.pack_into("<q", data, z_off, int(np.clip(zp + dz, -128, 127)))


def patch_drop_bias(data):
    """In place: FULLY_CONNECTED's bias index becomes -1 (an omitted optional input)."""
    import flatbuffers
    import tflite
    model = tflite.Model.GetRootAsModel(data, 0)
    sg = model.Subgraphs(0)
    for i in range(sg.OperatorsLength()):
        op = sg.Operators(i)
        name = tflite.opcode2name(model.OperatorCodes(op.OpcodeIndex()).BuiltinCode())
        if name != "FULLY_CONNECTED" or op.InputsLength() != 3:
            continue
        vec = op._tab.Vector(flatbuffers.number_types.UOffsetTFlags.py_type(op._tab.Offset(6)))
        struct.pack_into("<i", data, vec + 8, -1)


# ============================================================================================ reading back

ACT = {0: "", 1: "RELU", 2: "RELU_N1_TO_1", 3: "RELU6", 4: "TANH", 5: "SIGN_BIT"}
PAD = {0: "SAME", 1: "VALID"}


def describe(data):
    """[(op description)], input descriptions, weight quantization kinds, from the flatbuffer (tflite package)."""
    import tflite
    model = tflite.Model.GetRootAsModel(data, 0)
    sg = model.Subgraphs(0)
    opt_names = {v: k for k, v in vars(tflite.BuiltinOptions).items() if isinstance(v, int)}
    dtype_names = {v: k for k, v in vars(tflite.TensorType).items() if isinstance(v, int)}
    ops, quant = [], set()
    for i in range(sg.OperatorsLength()):
        op = sg.Operators(i)
        name = tflite.opcode2name(model.OperatorCodes(op.OpcodeIndex()).BuiltinCode())
        tab = op.BuiltinOptions()
        o = None
        if tab is not None:
            cls = getattr(tflite, opt_names[op.BuiltinOptionsType()])
            o = cls()
            o.Init(tab.Bytes, tab.Pos)
        bits = []
        t_in = sg.Tensors(op.Inputs(0))
        if name in ("CONV_2D", "DEPTHWISE_CONV_2D"):
            w = sg.Tensors(op.Inputs(1))
            kh, kw = w.ShapeAsNumpy()[1:3]
            bits.append(f"{kh}x{kw}")
            if o.StrideW() != 1 or o.StrideH() != 1:
                bits.append(f"s{o.StrideH()}")
            bits.append(PAD[o.Padding()])
            if name == "DEPTHWISE_CONV_2D" and o.DepthMultiplier() != 1:
                bits.append(f"x{o.DepthMultiplier()}")
        if name in ("AVERAGE_POOL_2D", "MAX_POOL_2D"):
            bits += [f"{o.FilterHeight()}x{o.FilterWidth()}", f"s{o.StrideH()}", PAD[o.Padding()]]
        if name == "MEAN":
            bits.append("keep" if o.KeepDims() else "nokeep")
        if name == "SQUEEZE":
            bits.append(f"dims{list(o.SqueezeDimsAsNumpy()) if o.SqueezeDimsLength() else '=all'}")
        if name == "CONCATENATION":
            bits.append(f"axis{o.Axis()}")
        if name in ("QUANTIZE", "DEQUANTIZE"):
            t_out = sg.Tensors(op.Outputs(0))
            bits.append(f"{dtype_names[t_in.Type()].lower()}->{dtype_names[t_out.Type()].lower()}")
        if name in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"):
            w = sg.Tensors(op.Inputs(1))
            qw = w.Quantization()
            if qw is not None and qw.ScaleLength() > 0:
                quant.add("per-channel" if qw.ScaleLength() > 1 else "per-tensor")
            if op.InputsLength() < 3 or op.Inputs(2) < 0:   # (the TF converter never does this)
                bits.append("nobias")
        if o is not None and hasattr(o, "FusedActivationFunction") and ACT[o.FusedActivationFunction()]:
            bits.append(ACT[o.FusedActivationFunction()])
        out_type = dtype_names[sg.Tensors(op.Outputs(0)).Type()].lower()
        if name not in ("QUANTIZE", "DEQUANTIZE") and out_type != "int8":
            bits.append(out_type)   # a float32 or int16x8 model's op, not the int8 kernel
        ops.append(f"{name}({' '.join(bits)})" if bits else name)
    inputs = []
    for k in range(sg.InputsLength()):
        t = sg.Tensors(sg.Inputs(k))
        inputs.append(f"{dtype_names[t.Type()].lower()}{[int(v) for v in t.ShapeAsNumpy()]}")
    return ops, inputs, quant


# ============================================================================================ cross-path check

def cross_path(path, op_names, n_inputs=N_CHECK_INPUTS):
    """Run n random inputs on the three kernel paths; count differing output values per pair and the
    reference-vs-optimized differences in every intermediate tensor (these include propagated ones).
    op_diff[op description] = [values differing, values compared] between reference and optimized, counted only
    where all of the op's inputs are equal on both paths (so the difference is the op's own arithmetic)."""
    res = {"runs": {}, "n_out": 0, "diff": {}, "inner_diff": 0, "inner_n": 0, "max_lsb": {}, "error": {},
           "op_diff": {}, "xnn_ops": []}
    pairs = [("reference", "optimized"), ("reference", "xnnpack"), ("optimized", "xnnpack")]
    for p in pairs:
        res["diff"][p] = 0
        res["max_lsb"][p] = 0
    try:
        const = {t["index"] for t in litert_runner.tensor_details(path)["tensors"]} - _activation_indices(path)
    except Exception as e:  # noqa: BLE001 - a model LiteRT refuses
        for k in litert_runner.KERNEL_PATHS:
            res["runs"][k] = False
        msg = re.sub(r"\(-?\d+ != -?\d+\)", "", " ".join(str(e).split()))  # LiteRT prints floats as %d: noise
        res["error"]["all"] = f"{type(e).__name__}: {msg[:160]}"
        return res
    taken = litert_runner.xnnpack_nodes(path)
    res["xnn_ops"] = [(op, i in taken) for i, op in enumerate(op_names)]
    for seed in range(n_inputs):
        x = litert_runner.random_input(path, seed)
        out = {}
        for k in litert_runner.KERNEL_PATHS:
            try:
                out[k] = litert_runner.run(path, x, k)
                res["runs"][k] = True
            except Exception as e:  # noqa: BLE001 - record which path cannot run the model
                res["runs"][k] = False
                res["error"][k] = f"{type(e).__name__}: {str(e).splitlines()[0][:120]}"
        if len(out) < 3:
            continue
        outs = out["reference"]["outputs"]
        res["n_out"] += sum(out["reference"]["tensors"][i].size for i in outs)
        for a, b in pairs:
            for i in outs:
                va, vb = out[a]["tensors"][i], out[b]["tensors"][i]
                d = np.abs(va.astype(np.float64) - vb.astype(np.float64))
                res["diff"][a, b] += int(np.count_nonzero(d))
                res["max_lsb"][a, b] = max(res["max_lsb"][a, b], float(d.max()))
        ra, ro = out["reference"]["tensors"], out["optimized"]["tensors"]
        for op_name, op in zip(op_names, litert_runner.tensor_details(path)["ops"]):
            ins = [i for i in op["inputs"] if i >= 0]
            if all(i in ra and i in ro and np.array_equal(ra[i], ro[i]) for i in ins):
                o = op["outputs"][0]
                cnt = res["op_diff"].setdefault(op_name, [0, 0])
                cnt[0] += int(np.count_nonzero(ra[o] != ro[o]))
                cnt[1] += ra[o].size
        for i in ra:
            if i in const or i in outs or i in out["reference"]["inputs"] or i not in ro:
                continue
            res["inner_n"] += ra[i].size
            res["inner_diff"] += int(np.count_nonzero(ra[i] != ro[i]))
    return res


def _activation_indices(path):
    info = litert_runner.tensor_details(path)
    idx = set(info["inputs"]) | set(info["outputs"])
    for op in info["ops"]:
        idx |= set(op["outputs"])
    return idx


# ============================================================================================ main

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=HERE / "fixtures", help="output folder (default: %(default)s)")
    ap.add_argument("--only", nargs="*", help="make only these fixtures (README not rewritten)")
    ap.add_argument("--no-check", action="store_true", help="skip the three-kernel-path run")
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    names = args.only or list(FIXTURES)
    rows = []
    for name in names:
        data = convert(name)
        path = args.out / f"{name}.tflite"
        path.write_bytes(data)
        ops, inputs, quant = describe(data)
        row = {"name": name, "ops": ops, "inputs": inputs, "quant": quant, "size": len(data),
               "covers": FIXTURES[name][2]}
        if not args.no_check:
            row["check"] = cross_path(path, ops)
        rows.append(row)
        ck = row.get("check")
        paths = "" if ck is None else " ".join(f"{k}={'ok' if ck['runs'].get(k) else 'FAIL'}"
                                               for k in litert_runner.KERNEL_PATHS)
        print(f"{name:22s} {len(data):6d} B  {paths}")
        print(f"    ops: {', '.join(ops)}")
        if ck is not None:
            for k, e in ck["error"].items():
                print(f"    {k}: {e}")
            if all(ck["runs"].get(k) for k in litert_runner.KERNEL_PATHS):
                d = ck["diff"]
                print(f"    outputs differ (of {ck['n_out']}): ref/opt {d['reference', 'optimized']}, "
                      f"ref/xnn {d['reference', 'xnnpack']}, opt/xnn {d['optimized', 'xnnpack']}; "
                      f"inner ref/opt {ck['inner_diff']} of {ck['inner_n']}")
    if not args.only and not args.no_check:
        (args.out / "README.md").write_text(readme(rows))
        print(f"wrote {args.out / 'README.md'}")


def readme(rows):
    lines = [
        "# TFLite fixtures (issue 12)",
        "",
        "Made by `tests/tflite/make_fixtures.py` (`/work/venvs/tf/bin/python tests/tflite/make_fixtures.py`; "
        "tensorflow-cpu 2.21, LiteRT 2.3.0); do not edit by hand, rerun the script (deterministic: same bytes). "
        "Weights are seeded random; int8 models are full-integer with a seeded representative dataset. "
        "The op column is read back from each file with the `tflite` schema package: kernel size, stride, "
        "padding, depth multiplier, fused activation, `nobias` when the op has no bias tensor (the TF converter "
        "always adds one, even for a bias-free conv).",
        "",
        "| file | ops | input | weights | size | covers |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        q = "/".join(sorted(r["quant"])) or "–"
        lines.append(f"| `{r['name']}.tflite` | {', '.join(r['ops'])} | {', '.join(r['inputs'])} | {q} | "
                     f"{r['size']:,} B | {r['covers']} |")
    lines += [
        "",
        "## The three LiteRT kernel paths on these files",
        "",
        f"Each file run on {N_CHECK_INPUTS} random inputs (`litert_runner.random_input`, seeds 0–"
        f"{N_CHECK_INPUTS - 1}: uniform codes over the whole input range) with `litert_runner.run` on the "
        "reference kernels (`BUILTIN_REF`), the optimized builtin kernels (`BUILTIN_WITHOUT_DEFAULT_DELEGATES`) "
        "and XNNPACK (`AUTO`), one thread. 'outputs differ' counts output values that differ between two paths "
        "(max difference in LSB in brackets); 'inner ref≠opt' counts values of intermediate tensors that differ "
        "between reference and optimized (these include differences propagated from an earlier layer).",
        "",
        "| file | runs (ref / opt / xnn) | output values | ref≠opt | ref≠xnn | opt≠xnn | inner ref≠opt | "
        "left to the builtins on the xnnpack path |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        ck = r["check"]
        runs = " / ".join("yes" if ck["runs"].get(k) else "**no**" for k in litert_runner.KERNEL_PATHS)
        if all(ck["runs"].get(k) for k in litert_runner.KERNEL_PATHS):
            cells = []
            for p in [("reference", "optimized"), ("reference", "xnnpack"), ("optimized", "xnnpack")]:
                n, m = ck["diff"][p], ck["max_lsb"][p]
                cells.append(f"{n:,}" + (f" ({m:g})" if n else ""))
            left = ", ".join(op for op, t in ck["xnn_ops"] if not t) or "none"
            lines.append(f"| `{r['name']}` | {runs} | {ck['n_out']:,} | {' | '.join(cells)} | "
                         f"{ck['inner_diff']:,} of {ck['inner_n']:,} | {left} |")
        else:
            err = "; ".join(f"{k}: {e}" for k, e in ck["error"].items())
            lines.append(f"| `{r['name']}` | {runs} | – | – | – | – | {err} | – |")
    lines += [
        "",
        "Notes (checked against LiteRT 2.3.0 and its sources, /work/.mirror/google-ai-edge+LiteRT, "
        "`tflite/kernels/...`):",
        "",
        "- MEAN: the optimized path takes `optimized_integer_ops::Mean` only for keep_dims and a 4-D input "
        "(reduce.cc, EvalMean, kGenericOptimized); that kernel's arithmetic differs from the reference (the "
        "MEAN(keep) row below), while MEAN without keep_dims goes through QuantizedMeanOrSum and agrees.",
        "- DEQUANTIZE int8->float32 on the optimized path (optimized_ops.h, Dequantize/Int8, USE_NEON via "
        "NEON_2_SSE on x86): blocks of 8 values compute `f32(q) * f32(s) + f32(-zp * s)` (two float32 "
        "roundings, no FMA), the remaining `n mod 8` values `f32(double(s) * (q - zp))` like the reference; "
        "reproduced exactly on 500 values of `float_io`.",
        "- int8 CONCATENATION never rescales: concatenation.cc requires every int8 input to have the output's "
        "scale and zero point (`concat_mixed_scales_invalid` fails at prepare), and the converter enforces it "
        "by giving all inputs one scale or inserting an int8->int8 QUANTIZE. uint8 concatenation does rescale "
        "(`legacy_uint8`).",
        "- The XNNPACK path leaves AVERAGE_POOL_2D, HARD_SWISH, SOFTMAX, SQUEEZE, uint8<->int8 QUANTIZE, uint8 "
        "CONCATENATION and all int16 ops to the optimized builtin kernels (last column above).",
    ]
    agg, xnn = {}, {}
    for r in rows:
        for op, (n, tot) in r["check"]["op_diff"].items():
            a = agg.setdefault(op, [0, 0, set()])
            a[0] += n
            a[1] += tot
            a[2].add(r["name"])
        for op, t in r["check"]["xnn_ops"]:
            xnn.setdefault(op, set()).add(t)
    lines += [
        "",
        "### Reference vs optimized, op by op",
        "",
        "Output values of each op that differ between the reference and the optimized kernels, counted only "
        "when all of the op's inputs were equal on both paths (so the difference is the op's own arithmetic), "
        "summed over the fixtures and random inputs above. XNNPACK keeps no intermediate tensors, so its "
        "differences are only visible in the output columns above (single-op fixtures: `pool`, `pad`, "
        "`add_sub_mul`). 'XNNPACK' says whether the XNNPACK delegate takes the op on the xnnpack path "
        "(`litert_runner.xnnpack_nodes`); where it does not, the xnnpack path runs the optimized builtin kernel.",
        "",
        "| op | differing | compared | XNNPACK | fixtures |",
        "|---|---|---|---|---|",
    ]
    for op in sorted(set(agg) | set(xnn)):
        n, tot, fx = agg.get(op, [0, 0, set()])
        t = xnn.get(op, set())
        taken = "yes" if t == {True} else "no" if t == {False} else "some"
        lines.append(f"| {op} | {n:,} | {tot:,} | {taken} | {', '.join(sorted(fx))} |")
    lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
