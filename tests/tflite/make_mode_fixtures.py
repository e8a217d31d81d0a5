"""Make the tiny one-layer int8 .tflite models of tests/tflite/mode_fixtures/ (needs TensorFlow; the tests don't).

    python tests/tflite/make_mode_fixtures.py [OUT_DIR]

Each model is one layer between int8 input and output (no QUANTIZE / DEQUANTIZE), converted by the TF
converter with full-integer quantization, so that tests/test_tflite_modes.py can run it with LiteRT's reference
and optimized kernels and compare the layer's output with hwsim's requantizer / pooling modes fed the layer's own
accumulators (computed from LiteRT's input, weights and bias) or input codes. No activation is fused: ties of the
final rounding show only on negative values, which a ReLU would clamp away.

The two *_probe models tell the per-tensor multiplier formulas apart, double(s_in) * double(s_w) / double(s_out)
or double(float32(s_in * s_w)) / double(s_out): they differ by about 2^-24 relative, which random data almost never
shows. So the converter's per-tensor FULLY_CONNECTED and CONV_2D (1x1) get their scales edited in the flatbuffer
(s_out x 64, s_in moved by a few ulps, the bias scale kept at float32(s_in * s_w)) to where some accumulators
round differently under the two formulas, and {name}_inputs.npy holds inputs constructed to produce exactly those
accumulators.
"""
from __future__ import annotations

import math
import os
import struct
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

OUT = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent / "mode_fixtures"


def _convert(model, in_shape, seed, per_tensor_dense=False, per_tensor=False):
    rng = np.random.default_rng(seed)

    def data():
        for _ in range(64):
            yield [rng.uniform(-1.0, 1.0, (1,) + in_shape).astype(np.float32)]

    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = data
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = tf.int8
    conv.inference_output_type = tf.int8
    if per_tensor_dense:
        conv._experimental_disable_per_channel_quantization_for_dense_layers = True
    if per_tensor:
        conv._experimental_disable_per_channel = True
    return conv.convert()


def _model(layer, in_shape, seed):
    tf.keras.utils.set_random_seed(seed)
    inp = tf.keras.Input(in_shape, batch_size=1)
    out = layer(inp)
    m = tf.keras.Model(inp, out)
    rng = np.random.default_rng(seed)
    # random weights and biases with spread, so that multipliers and accumulators vary per channel
    m.set_weights([rng.normal(0, 0.5, w.shape).astype(np.float32) * rng.uniform(0.2, 2.0, w.shape[-1:])
                   .astype(np.float32) for w in m.get_weights()])
    return m


MODELS = {
    "conv1x1": (lambda: tf.keras.layers.Conv2D(16, 1), (8, 8, 12)),
    "conv3x3": (lambda: tf.keras.layers.Conv2D(8, 3, padding="same"), (8, 8, 6)),
    # 12 channels: one block of 8 and 4 leftover channels (the optimized depthwise output stage works in 8s)
    "depthwise3x3": (lambda: tf.keras.layers.DepthwiseConv2D(3, padding="same"), (8, 8, 12)),
    "depthwise5x5": (lambda: tf.keras.layers.DepthwiseConv2D(5, padding="valid", depth_multiplier=2), (9, 9, 5)),
    "dense": (lambda: tf.keras.layers.Dense(20), (40,)),
    "dense_pt": (lambda: tf.keras.layers.Dense(20), (40,)),
    "avgpool2x2": (lambda: tf.keras.layers.AveragePooling2D(2), (8, 8, 12)),
    "avgpool3x3_same": (lambda: tf.keras.layers.AveragePooling2D(3, 2, padding="same"), (9, 10, 12)),
}


# ---------------------------------------------------------------- per-tensor multiplier probes
def _qmult(m):
    """tflite QuantizeMultiplier."""
    q, e = math.frexp(m)
    v = q * 2.0 ** 31
    qf = math.floor(v) + (1 if v - math.floor(v) >= 0.5 else 0)
    if qf == 1 << 31:
        qf, e = qf // 2, e + 1
    return (0, 0) if e < -31 else (qf, e)


def _ruy(acc, m):      # ruy's output stage (fixed_double_ruy), int64 numpy
    q, e = _qmult(m)
    h = ((acc << max(e, 0)) * q + (1 << 30)) >> 31
    r = max(-e, 0)
    return (h + ((1 << r) >> 1)) >> r


def _away(acc, m):     # the reference FC: round(double(acc) * m)
    p = acc.astype(np.float64) * m
    a = np.abs(p)
    f = np.floor(a)
    return (np.sign(p) * (f + (a - f >= 0.5))).astype(np.int64)


def _solve(w, b, zp, target, rng):
    """An int8 vector x with (x - zp) . w + b == target (greedy, then a two-coordinate exact fix), or None."""
    for _ in range(100):
        x = rng.integers(-128, 128, w.size)
        for _ in range(30):
            r = target - ((x - zp) @ w + b)
            if r == 0:
                return x
            moves = [(abs(r - w[i] * (np.clip(x[i] + round(r / w[i]), -128, 127) - x[i])), i)
                     for i in range(w.size) if w[i]]
            i = min(moves)[1]
            x[i] = np.clip(x[i] + round(r / w[i]), -128, 127)
        r = int(target - ((x - zp) @ w + b))
        for i in range(w.size):
            for a in range(-20, 21):
                if w[i] == 0 or not -128 <= x[i] + a <= 127:
                    continue
                rr = r - a * int(w[i])
                for j in range(w.size):
                    if j != i and w[j] and rr % int(w[j]) == 0 and -128 <= x[j] + rr // int(w[j]) <= 127:
                        x2 = x.copy()
                        x2[i] += a
                        x2[j] += rr // int(w[j])
                        return x2
    return None


def make_probe(name, layer, shape, seed, stage):
    """`stage`: the output stage whose rounding must tell the formulas apart (_ruy: the optimized kernels, _away:
    the reference FULLY_CONNECTED)."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType
    rng = np.random.default_rng(seed)
    model = _model(layer, shape, seed)
    src = _convert(model, shape, seed, per_tensor_dense=True, per_tensor=True)
    it = Interpreter(model_content=src, experimental_op_resolver_type=OpResolverType.BUILTIN_REF)
    it.allocate_tensors()
    op = it._get_ops_details()[0]
    det = {t["index"]: t for t in it.get_tensor_details()}
    scale = lambda i: np.float32(det[i]["quantization_parameters"]["scales"][0])  # noqa: E731
    s_in, s_w, s_b, s_out = (scale(op["inputs"][0]), scale(op["inputs"][1]), scale(op["inputs"][2]),
                             scale(op["outputs"][0]))
    assert len(det[op["inputs"][1]]["quantization_parameters"]["scales"]) == 1
    w = it.get_tensor(op["inputs"][1]).astype(np.int64)
    w = w.reshape(w.shape[0], -1)
    bias = it.get_tensor(op["inputs"][2]).astype(np.int64)
    zp_in = int(det[op["inputs"][0]]["quantization_parameters"]["zero_points"][0])
    s_out2 = np.float32(s_out * 64)
    reach = int(np.abs(w).sum(1).max() * 128) // 3
    accs = np.arange(-reach, reach + 1, dtype=np.int64)
    best = None
    for k in range(-4000, 4000):      # s_in moved by k ulps: where the two formulas part most often
        si = np.array([np.array([s_in], np.float32).view(np.int32)[0] + k], np.int32).view(np.float32)[0]
        m_d = float(np.float64(si) * np.float64(s_w) / np.float64(s_out2))
        m_f = float(np.float64(np.float32(si * s_w)) / np.float64(s_out2))
        if m_d == m_f:
            continue
        a, b = stage(accs, m_d), stage(accs, m_f)
        apart = (a != b) & (np.abs(a) < 120)
        if best is None or apart.sum() > best[0]:
            best = (int(apart.sum()), si, accs[apart])
        if best[0] >= 6:
            break
    _, si, targets = best
    data = src
    for old, new in ((s_out, s_out2), (s_in, si), (s_b, np.float32(si * s_w))):
        assert data.count(struct.pack("<f", old)) == 1, (name, old)
        data = data.replace(struct.pack("<f", old), struct.pack("<f", new))
    xs = []
    for t in targets:
        for o in range(min(w.shape[0], 6)):
            x = _solve(w[o], bias[o], zp_in, int(t), rng)
            if x is not None:
                xs.append(x)
    (OUT / f"{name}.tflite").write_bytes(data)
    np.save(OUT / f"{name}_inputs.npy", np.array(xs, np.int8))
    print(f"{name}.tflite: {len(data)} bytes, {len(xs)} probe inputs for {len(targets)} accumulators")


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    for i, (name, (make, shape)) in enumerate(MODELS.items()):
        model = _model(make(), shape, 100 + i)
        data = _convert(model, shape, 200 + i, per_tensor_dense=name == "dense_pt")
        (OUT / f"{name}.tflite").write_bytes(data)
        print(f"{name}.tflite: {len(data)} bytes")
    make_probe("dense_probe_ref", tf.keras.layers.Dense(20), (40,), 7, _away)
    make_probe("dense_probe_opt", tf.keras.layers.Dense(20), (40,), 7, _ruy)
    make_probe("conv_probe", tf.keras.layers.Conv2D(12, 1), (6, 6, 10), 8, _ruy)


if __name__ == "__main__":
    main()
