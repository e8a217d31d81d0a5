#!/usr/bin/env python3
"""Train a small CNN on scikit-learn's 8x8 digits in TensorFlow and convert it to a full-integer int8 .tflite.

    /work/venvs/tf/bin/python models/make_digits_tflite.py [--out-dir models] [--seed 0] [--epochs 60]

Output: digits_cnn_int8.tflite and digits_test_nhwc.npz (the test set as [N, 8, 8, 1]) in --out-dir (default: the
folder of this script); `hwsim import` makes digits_cnn_int8.qnn from it. Input int8 [1, 8, 8, 1] NHWC
(pixel / 16 in [0, 1], quantized with the model's input scale and zero point), output int8 logits [1, 10].

Data: the same split and scaling as make_digits_models.py (load_digits, x = pixel / 16, train/test 70/30
stratified, random_state = --seed), so accuracies compare with the other digits models; the test images equal
models/digits_test.npz (checked) transposed from NCHW to NHWC.

Network: conv 3x3 8ch SAME ReLU -> depthwise 3x3 SAME ReLU6 -> conv 1x1 16ch ReLU -> max pool 2x2 -> avg pool 2x2
-> flatten (64) -> dense 10. Converted by the TF converter: optimizations=[DEFAULT], the training images as
representative data, TFLITE_BUILTINS_INT8, int8 input and output (per-channel conv / dense weights).
Then the float model and the int8 model on LiteRT's three kernel paths (reference, optimized, XNNPACK) are
scored on the test set. Needs tensorflow, scikit-learn and ai-edge-litert; deterministic (seeded, op
determinism, one thread).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

import numpy as np  # noqa: E402

HERE = Path(__file__).resolve().parent


def load_data(seed):
    """make_digits_models.load_data, in NHWC."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    digits = load_digits()
    x = (digits.images.astype(np.float32) / 16.0)[:, :, :, None]  # pixel 0..16 -> [0, 1], exact in float32
    y = digits.target.astype(np.int64)
    return train_test_split(x, y, test_size=0.3, stratify=y, random_state=seed)


def build(tf, seed):
    import keras
    keras.utils.set_random_seed(seed)
    init = keras.initializers.HeNormal(seed=seed)
    return keras.Sequential([
        keras.Input((8, 8, 1), batch_size=None),
        keras.layers.Conv2D(8, 3, padding="same", activation="relu", kernel_initializer=init),
        keras.layers.DepthwiseConv2D(3, padding="same", activation="relu6",
                                     depthwise_initializer=keras.initializers.HeNormal(seed=seed + 1)),
        keras.layers.Conv2D(16, 1, activation="relu", kernel_initializer=keras.initializers.HeNormal(seed=seed + 2)),
        keras.layers.MaxPooling2D(2),
        keras.layers.AveragePooling2D(2),
        keras.layers.Flatten(),
        keras.layers.Dense(10, kernel_initializer=keras.initializers.HeNormal(seed=seed + 3)),
    ])


def convert(tf, model, x_train):
    f = tf.function(lambda x: model(x, training=False),
                    input_signature=[tf.TensorSpec([1, 8, 8, 1], tf.float32, name="image")])

    def rep():
        for i in range(len(x_train)):   # every training image, in order
            yield [x_train[i:i + 1]]

    conv = tf.lite.TFLiteConverter.from_concrete_functions([f.get_concrete_function()], f)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = rep
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = tf.int8
    conv.inference_output_type = tf.int8
    return conv.convert()


def litert_predict(path, x, kernels):
    """int8 logits of every image on one LiteRT kernel path; the float image is quantized with the model's
    input scale / zero point (round half to even, as numpy; the images are multiples of 1/16)."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType
    resolver = {"reference": OpResolverType.BUILTIN_REF,
                "optimized": OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
                "xnnpack": OpResolverType.AUTO}[kernels]
    it = Interpreter(model_path=str(path), experimental_op_resolver_type=resolver, num_threads=1)
    it.allocate_tensors()
    d_in, d_out = it.get_input_details()[0], it.get_output_details()[0]
    s, zp = d_in["quantization"]
    q = np.clip(np.round(x / s) + zp, -128, 127).astype(np.int8)
    out = np.empty((len(x), 10), np.int8)
    for i in range(len(x)):
        it.set_tensor(d_in["index"], q[i:i + 1])
        it.invoke()
        out[i] = it.get_tensor(d_out["index"])[0]
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out-dir", type=Path, default=HERE)
    ap.add_argument("--seed", type=int, default=0, help="split and training seed (default: %(default)s)")
    ap.add_argument("--epochs", type=int, default=60)
    args = ap.parse_args(argv)

    import tensorflow as tf
    tf.config.experimental.enable_op_determinism()
    tf.config.threading.set_inter_op_parallelism_threads(1)
    tf.config.threading.set_intra_op_parallelism_threads(1)
    import keras

    x_tr, x_te, y_tr, y_te = load_data(args.seed)
    ref = HERE / "digits_test.npz"
    if args.seed == 0 and ref.exists():
        t = np.load(ref)
        assert np.array_equal(t["x"].transpose(0, 2, 3, 1), x_te) and np.array_equal(t["y"], y_te), \
            "split differs from models/digits_test.npz"

    t0 = time.time()
    model = build(tf, args.seed)
    model.compile(optimizer=keras.optimizers.Adam(3e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    model.fit(x_tr, y_tr, batch_size=32, epochs=args.epochs, shuffle=True, verbose=0)
    acc_float = float(np.mean(np.argmax(model.predict(x_te, verbose=0), 1) == y_te))
    print(f"trained {args.epochs} epochs in {time.time() - t0:.1f} s; float test accuracy "
          f"{acc_float:.2%} ({len(y_te)} images), {model.count_params()} parameters")

    data = convert(tf, model, x_tr)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    path = args.out_dir / "digits_cnn_int8.tflite"
    path.write_bytes(data)
    print(f"wrote {path} ({len(data):,} B)")
    nhwc = args.out_dir / "digits_test_nhwc.npz"     # the test set in the layout the TFLite model takes
    np.savez_compressed(nhwc, x=x_te.astype(np.float32), y=y_te.astype(np.int64))
    print(f"wrote {nhwc}; import with: hwsim import {path} -o {args.out_dir / 'digits_cnn_int8.qnn'}")

    logits = {}
    for k in ("reference", "optimized", "xnnpack"):
        logits[k] = litert_predict(path, x_te, k)
        acc = float(np.mean(np.argmax(logits[k], 1) == y_te))
        print(f"LiteRT int8 {k:9s}: test accuracy {acc:.2%}")
    for a, b in [("reference", "optimized"), ("reference", "xnnpack"), ("optimized", "xnnpack")]:
        d = logits[a].astype(int) - logits[b].astype(int)
        print(f"  {a} vs {b}: {np.count_nonzero(d)} of {d.size} logits differ (max {np.abs(d).max()} LSB), "
              f"{np.count_nonzero(np.argmax(logits[a], 1) != np.argmax(logits[b], 1))} predictions differ")


if __name__ == "__main__":
    sys.exit(main())
