"""Make the tiny single-op int8 .tflite models of tests/test_tflite_xnnpack.py (TensorFlow needed, tests do not).

Each model is one op (plus the converter's own QUANTIZE / DEQUANTIZE where a test wants them), converted by the
TF converter with full-integer quantization from a seeded representative dataset, so the files are reproducible
on one TensorFlow version. Run: python tests/tflite/make_xnnpack_fixtures.py [OUT_DIR]
"""

from __future__ import annotations

import os
import sys

import numpy as np
import tensorflow as tf

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "xnnpack_fixtures")


def _convert(fn, in_shapes, name, *, per_channel=True, float_io=False, uint8_io=False, in_ranges=None, out=OUT):
    rng = np.random.default_rng(sum(map(ord, name)))
    ranges = in_ranges or [(-1.0, 1.0)] * len(in_shapes)

    def rep():
        for _ in range(64):
            yield [rng.uniform(lo, hi, size=(1,) + tuple(s)).astype(np.float32)
                   for s, (lo, hi) in zip(in_shapes, ranges)]

    specs = [tf.TensorSpec((1,) + tuple(s), tf.float32) for s in in_shapes]
    conc = tf.function(fn).get_concrete_function(*specs)
    conv = tf.lite.TFLiteConverter.from_concrete_functions([conc])
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = rep
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    if uint8_io:
        conv.inference_input_type = tf.uint8
        conv.inference_output_type = tf.uint8
    elif not float_io:
        conv.inference_input_type = tf.int8
        conv.inference_output_type = tf.int8
    if not per_channel:
        conv._experimental_disable_per_channel = True
    data = conv.convert()
    with open(os.path.join(out, name + ".tflite"), "wb") as f:
        f.write(data)
    return len(data)


def _w(rng, *shape, scale=0.3):
    return tf.constant(rng.normal(0, scale, size=shape).astype(np.float32))


def build(out=OUT):
    os.makedirs(out, exist_ok=True)
    r = np.random.default_rng(12)
    w3, b3 = _w(r, 3, 3, 3, 6), _w(r, 6)
    w1, b1 = _w(r, 1, 1, 6, 5), _w(r, 5)
    wd, bd = _w(r, 3, 3, 6, 1), _w(r, 6)
    wf, bf = _w(r, 24, 7), _w(r, 7)
    models = {
        "conv3x3_relu": (lambda x: tf.nn.relu(tf.nn.conv2d(x, w3, 1, "SAME") + b3), [(6, 6, 3)], {}),
        "conv3x3_relu6_valid_s2": (lambda x: tf.nn.relu6(tf.nn.conv2d(x, w3, 2, "VALID") + b3), [(7, 7, 3)], {}),
        "conv1x1": (lambda x: tf.nn.conv2d(x, w1, 1, "SAME") + b1, [(5, 5, 6)], {}),
        "conv1x1_pertensor": (lambda x: tf.nn.conv2d(x, w1, 1, "SAME") + b1, [(5, 5, 6)], {"per_channel": False}),
        "dwconv_relu6": (lambda x: tf.nn.relu6(tf.nn.depthwise_conv2d(x, wd, [1, 1, 1, 1], "SAME") + bd),
                         [(6, 6, 6)], {}),
        "dwconv_pertensor": (lambda x: tf.nn.depthwise_conv2d(x, wd, [1, 1, 1, 1], "SAME") + bd, [(5, 5, 6)],
                             {"per_channel": False}),
        "dwconv": (lambda x: tf.nn.depthwise_conv2d(x, wd, [1, 1, 1, 1], "VALID") + bd, [(6, 6, 6)], {}),
        "fc": (lambda x: tf.matmul(x, wf) + bf, [(24,)], {}),
        "fc_pertensor": (lambda x: tf.matmul(x, wf) + bf, [(24,)], {"per_channel": False}),
        "fc_relu_n1": (lambda x: tf.clip_by_value(tf.matmul(x, wf) + bf, -1.0, 1.0), [(24,)], {}),
        "add": (lambda a, b: a + b, [(4, 4, 3), (4, 4, 3)], {"in_ranges": [(-1, 1), (-3, 2)]}),
        "add_relu": (lambda a, b: tf.nn.relu(a + b), [(4, 4, 3), (4, 4, 3)], {"in_ranges": [(-1, 1), (-3, 2)]}),
        "add_bcast": (lambda a, b: a + b, [(4, 4, 3), (1, 1, 3)], {"in_ranges": [(-1, 1), (-0.5, 0.25)]}),
        "sub": (lambda a, b: a - b, [(4, 4, 3), (4, 4, 3)], {"in_ranges": [(-1, 1), (-3, 2)]}),
        "mul": (lambda a, b: a * b, [(4, 4, 3), (4, 4, 3)], {"in_ranges": [(-1, 1), (-3, 2)]}),
        "mul_relu6": (lambda a, b: tf.nn.relu6(a * b), [(4, 4, 3), (4, 4, 3)], {"in_ranges": [(-2, 2), (-3, 3)]}),
        "avgpool2x2": (lambda x: tf.nn.avg_pool2d(x, 2, 2, "VALID"), [(6, 6, 4)], {}),
        "avgpool3x3_same": (lambda x: tf.nn.avg_pool2d(x, 3, 1, "SAME"), [(5, 5, 4)], {}),
        "maxpool2x2": (lambda x: tf.nn.max_pool2d(x, 2, 2, "VALID"), [(6, 6, 4)], {}),
        "maxpool3x3_same": (lambda x: tf.nn.max_pool2d(x, 3, 2, "SAME"), [(7, 7, 4)], {}),
        "mean_hw": (lambda x: tf.reduce_mean(x, axis=[1, 2], keepdims=True), [(5, 5, 8)], {}),
        "mean_hw_squeeze": (lambda x: tf.reduce_mean(x, axis=[1, 2]), [(4, 6, 8)], {}),
        "concat": (lambda a, b: tf.concat([a, b], axis=3), [(4, 4, 3), (4, 4, 2)],
                   {"in_ranges": [(-1, 1), (-4, 3)]}),
        "pad": (lambda x: tf.pad(x, [[0, 0], [1, 2], [0, 1], [0, 0]]), [(4, 4, 3)], {"in_ranges": [(0.5, 2)]}),
        "logistic": (lambda x: tf.math.sigmoid(x), [(64,)], {"in_ranges": [(-6, 6)]}),
        "tanh": (lambda x: tf.math.tanh(x), [(64,)], {"in_ranges": [(-3, 3)]}),
        "hardswish": (lambda x: x * tf.nn.relu6(x + 3.0) / 6.0, [(64,)], {"in_ranges": [(-5, 5)]}),
        "leaky_relu": (lambda x: tf.nn.leaky_relu(x, 0.2), [(64,)], {"in_ranges": [(-3, 2)]}),
        "relu": (lambda x: tf.nn.relu(x), [(64,)], {"in_ranges": [(-3, 2)]}),
        "relu6": (lambda x: tf.nn.relu6(x), [(64,)], {"in_ranges": [(-3, 8)]}),
        "relu_n1_to_1": (lambda x: tf.clip_by_value(x, -1.0, 1.0), [(64,)], {"in_ranges": [(-3, 2)]}),
        "softmax": (lambda x: tf.nn.softmax(x), [(10,)], {"in_ranges": [(-4, 4)]}),
        "quant_dequant": (lambda x: tf.nn.relu(x), [(64,)], {"in_ranges": [(-3, 2)], "float_io": True}),
        "float_io_maxpool": (lambda x: tf.nn.max_pool2d(x, 2, 2, "VALID"), [(8, 8, 4)],
                             {"in_ranges": [(-3, 2)], "float_io": True}),
        "uint8_io": (lambda x: tf.nn.relu(x), [(64,)], {"in_ranges": [(-3, 2)], "uint8_io": True}),
    }
    sizes = {}
    for name, (fn, shapes, kw) in models.items():
        sizes[name] = _convert(fn, shapes, name, out=out, **kw)
    return sizes


if __name__ == "__main__":
    for k, v in build(sys.argv[1] if len(sys.argv) > 1 else OUT).items():
        print(f"{k}: {v} bytes")
