"""Make the tiny single-op int8 .tflite models of tests/tflite/op_fixtures/ (needs TensorFlow; the tests don't).

    python tests/tflite/make_op_fixtures.py [OUT_DIR]

Each model is one non-MAC op (ADD, SUB, MUL, MEAN, SOFTMAX, LOGISTIC, HARD_SWISH, QUANTIZE, CONCATENATION, PAD,
fused RELU / RELU6 / RELU_N1_TO_1) between int8 inputs and outputs, converted by the TF converter with
full-integer quantization. Every input gets its own calibration range (so scales and zero points differ), so
tests/test_tflite_arith.py can run each model with LiteRT's reference and optimized kernels and compare every
output code with simulator/importers/tflite_arith.py. `manifest.json` records, per file, the op and the fused
activation the converter wrote (read back with the `tflite` schema package).
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

OUT = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent / "op_fixtures"


def _convert(fn, shapes, ranges, seed, in_type=tf.int8):
    """Convert a function of len(shapes) float inputs; input i calibrated on uniform values in ranges[i]."""
    rng = np.random.default_rng(seed)
    sig = [tf.TensorSpec((1,) + s, tf.float32) for s in shapes]
    func = tf.function(fn, input_signature=sig).get_concrete_function()

    def data():
        for _ in range(48):
            yield [rng.uniform(lo, hi, (1,) + s).astype(np.float32) for s, (lo, hi) in zip(shapes, ranges)]

    conv = tf.lite.TFLiteConverter.from_concrete_functions([func])
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = data
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    if in_type is not None:
        conv.inference_input_type = in_type
    conv.inference_output_type = tf.int8
    return conv.convert()


def _ops(data):
    """[(op name, fused activation name or None)] of the model's operators (tflite schema package)."""
    import tflite
    m = tflite.Model.GetRootAsModel(data, 0)
    g = m.Subgraphs(0)
    names = {v: k for k, v in tflite.BuiltinOperator.__dict__.items() if not k.startswith("_")}
    acts = {v: k for k, v in tflite.ActivationFunctionType.__dict__.items() if not k.startswith("_")}
    out = []
    for i in range(g.OperatorsLength()):
        op = g.Operators(i)
        code = m.OperatorCodes(op.OpcodeIndex())
        name = names[max(code.BuiltinCode(), code.DeprecatedBuiltinCode())]
        act = None
        opts = op.BuiltinOptions()
        if opts is not None:
            cls = {"ADD": tflite.AddOptions, "SUB": tflite.SubOptions, "MUL": tflite.MulOptions,
                   "CONCATENATION": tflite.ConcatenationOptions}.get(name)
            if cls is not None:
                o = cls()
                o.Init(opts.Bytes, opts.Pos)
                act = acts[o.FusedActivationFunction()]
        out.append((name, act))
    return out


def _clip1(x):
    return tf.clip_by_value(x, -1.0, 1.0)


S = (4, 5, 8)
T = (3, 5, 7)
BIN_RANGES = [[(-1.0, 1.0), (-3.0, 2.0)], [(-0.2, 4.0), (-0.5, 0.5)], [(-6.0, 6.0), (-6.0, 6.0)],
              [(-0.05, 0.07), (-2.0, 9.0)]]
UNARY_RANGES = [(-1.0, 1.0), (-8.0, 8.0), (-3.0, 0.5), (-0.3, 12.0), (-20.0, 5.0)]

MODELS = {}
for i, r in enumerate(BIN_RANGES):
    MODELS[f"add_{i}"] = (lambda a, b: a + b, [S, S], r)
    MODELS[f"sub_{i}"] = (lambda a, b: a - b, [S, S], r)
    MODELS[f"mul_{i}"] = (lambda a, b: a * b, [S, S], r)
MODELS["add_relu"] = (lambda a, b: tf.nn.relu(a + b), [S, S], BIN_RANGES[0])
MODELS["add_relu6"] = (lambda a, b: tf.nn.relu6(a + b), [S, S], [(-4.0, 5.0), (-3.0, 4.0)])
MODELS["add_relu_n1_to_1"] = (lambda a, b: _clip1(a + b), [S, S], [(-1.5, 1.2), (-1.0, 0.7)])
MODELS["sub_relu6"] = (lambda a, b: tf.nn.relu6(a - b), [S, S], [(-4.0, 5.0), (-3.0, 4.0)])
MODELS["mul_relu"] = (lambda a, b: tf.nn.relu(a * b), [S, S], BIN_RANGES[1])
MODELS["add_bcast"] = (lambda a, b: a + b, [S, (1, 1, 8)], [(-1.0, 2.0), (-0.5, 0.5)])
MODELS["mul_bcast"] = (lambda a, b: a * b, [S, (1, 1, 8)], [(-1.0, 2.0), (0.0, 1.5)])
for i, r in enumerate(UNARY_RANGES):
    MODELS[f"logistic_{i}"] = (tf.sigmoid, [S], [r])
    MODELS[f"hard_swish_{i}"] = (lambda x: x * tf.nn.relu6(x + 3.0) / 6.0, [S], [r])
    MODELS[f"softmax_{i}"] = (tf.nn.softmax, [(3, 40)], [r])
    MODELS[f"mean_keep_{i}"] = (lambda x: tf.reduce_mean(x, axis=[1, 2], keepdims=True), [(7, 9, 16)], [r])
    MODELS[f"mean_{i}"] = (lambda x: tf.reduce_mean(x, axis=[1, 2]), [(7, 9, 16)], [r])
MODELS["mean_keep_big"] = (lambda x: tf.reduce_mean(x, axis=[1, 2], keepdims=True), [(23, 29, 8)], [(-1.0, 3.0)])
MODELS["mean_big"] = (lambda x: tf.reduce_mean(x, axis=[1, 2]), [(23, 29, 8)], [(-1.0, 3.0)])
MODELS["concat_0"] = (lambda a, b: tf.concat([a, b], axis=-1), [S, S], [(-1.0, 1.0), (-3.0, 7.0)])
MODELS["concat_1"] = (lambda a, b, c: tf.concat([a, b, c], axis=-1), [S, S, S],
                      [(-0.1, 0.3), (-3.0, 2.0), (0.0, 1.0)])
# int8 CONCATENATION needs equal scales: the converter requantizes an input with a fixed scale (a LOGISTIC
# output, 1/256) by an int8 -> int8 QUANTIZE
MODELS["requant_0"] = (lambda a, b: tf.concat([tf.sigmoid(a), b], axis=-1), [S, S], [(-1.0, 1.0), (-3.0, 7.0)])
MODELS["requant_1"] = (lambda a, b: tf.concat([tf.sigmoid(a), b], axis=-1), [S, S], [(-4.0, 4.0), (-0.3, 0.2)])
MODELS["requant_2"] = (lambda a, b: tf.concat([tf.sigmoid(a), b], axis=-1), [S, S], [(-4.0, 4.0), (0.0, 0.9)])
# a TANH output (scale 1/128, zero point 0) holds negative values: the requantization's negative ties
MODELS["requant_tanh_0"] = (lambda a, b: tf.concat([tf.tanh(a), b], axis=-1), [T, T], [(-3.0, 3.0), (-5.0, 7.0)])
MODELS["requant_tanh_1"] = (lambda a, b: tf.concat([tf.tanh(a), b], axis=-1), [T, T], [(-3.0, 3.0), (-0.3, 0.4)])
# 105 elements: the optimized kernels' SIMD blocks (16 or 8 elements) and their scalar tails
MODELS["add_tail"] = (lambda a, b: a + b, [T, T], [(-1.0, 1.0), (-0.4, 0.3)])
MODELS["pad_0"] = (lambda x: tf.pad(x, [[0, 0], [1, 2], [2, 0], [0, 0]]), [S], [(-0.5, 3.0)])
# input quantizers: a float input (QUANTIZE float -> int8), a uint8 input (QUANTIZE uint8 -> int8)
FLOAT_IN = {f"quantize_float_{i}": (tf.sigmoid, [S], [r]) for i, r in enumerate(UNARY_RANGES[:3])}
FLOAT_IN["quantize_float_tail"] = (tf.sigmoid, [T], [(-2.0, 3.0)])
UINT8_IN = {f"quantize_uint8_{i}": (tf.sigmoid, [S], [r]) for i, r in enumerate(UNARY_RANGES[:2])}


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    manifest = {}
    items = [(k, v, tf.int8) for k, v in MODELS.items()] + [(k, v, None) for k, v in FLOAT_IN.items()] + \
        [(k, v, tf.uint8) for k, v in UINT8_IN.items()]
    for i, (name, (fn, shapes, ranges), in_type) in enumerate(items):
        data = _convert(fn, shapes, ranges, 300 + i, in_type)
        (OUT / f"{name}.tflite").write_bytes(data)
        manifest[name] = [list(t) for t in _ops(data)]
        print(f"{name}.tflite: {len(data)} bytes, ops {manifest[name]}")
    (OUT / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
