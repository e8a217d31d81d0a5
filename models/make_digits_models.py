#!/usr/bin/env python3
"""Train small CNNs on scikit-learn's 8x8 handwritten digits and write hwsim's example models.

Outputs (in --out-dir, default: the folder of this script):
  digits_test.npz              held-out test set: x float32 [N, 1, 8, 8] = pixel / 16 (in [0, 1]), y int64
  lenet_digits_u8.qnn          int8 per-channel weights, uint8 activations with power-of-two scales (2^-F)
  lenet_digits_codebook.qnn    4-bit k-means codebook weights (seed 000 Lloyd + seed 001 SIQ), uint8 activations
  lenet_digits_enq.qnn         int8 weights, ENQ activations (seed 004: q_m = 8, E_i per tensor by enq:auto)
  lenet_digits_knq.qnn         int8 weights, KNQ activations (seed 004: 2^T k-means centroids)
  lenet_digits_xnor.qnn        XNOR-Net (seed 002): binary conv + binary dense on sign activations, 8-bit first/last

Network (seed 001's LeNet shape adapted to 8x8 inputs):
  conv 16@3x3 pad 1 -> ReLU -> maxpool 2 -> conv 32@3x3 pad 1 -> ReLU -> maxpool 2 -> flatten (128)
  -> dense 64 -> ReLU -> dense 10
The CNN models quantize the shipped float network models/lenet_digits_float.onnx (made by make_onnx_example.py;
--retrain trains a fresh one), the XNOR model a network trained here with a straight-through estimator, all with
hwsim's own toolchain (simulator.quant: the code behind `hwsim quantize`), calibrated on the training images; each model is checked
bit-exact (integer engine vs float64 reference) on the test set and its accuracy measured by the engine.

Needs torch, onnx and scikit-learn to run; the files it writes need neither (numpy + hwsim only).
Deterministic: fixed seeds, single-process data order, torch deterministic algorithms.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # run from a source checkout without installing

from simulator.qnn.model_io import save_model  # noqa: E402

SEED_REFS = {
    "000": "k-means (Lloyd) codebook quantization of weights",
    "001": "LeNet-shape CNN; SIQ (alternate k-means and retraining); uniform Q(w) = D*floor(w/D + 1/2)",
    "002": "XNOR-Net: B = sign(W), alpha = mean|W| per output channel, sign activations, XNOR + popcount",
    "004": "activation quantization: uniform q-bit with F fractional bits, ENQ (E_i, q_m), KNQ (2^T centroids)",
}


def log(*args):
    print(*args, flush=True)


# ============================================================================================ data

def load_data(seed):
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    digits = load_digits()
    x = (digits.images.astype(np.float32) / 16.0)[:, None, :, :]  # pixel 0..16 -> [0, 1], exact in float32
    y = digits.target.astype(np.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=0.3, stratify=y, random_state=seed)
    return x_tr, y_tr, x_te, y_te


# ============================================================================================ torch models

def torch_modules():
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    class DigitsCNN(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(1, 16, 3, padding=1)
            self.conv2 = nn.Conv2d(16, 32, 3, padding=1)
            self.fc1 = nn.Linear(128, 64)
            self.fc2 = nn.Linear(64, 10)
            self.pool1, self.pool2, self.flatten = nn.MaxPool2d(2), nn.MaxPool2d(2), nn.Flatten()  # names in ONNX

        def forward(self, x):
            x = self.pool1(F.relu(self.conv1(x)))
            x = self.pool2(F.relu(self.conv2(x)))
            x = F.relu(self.fc1(self.flatten(x)))
            return self.fc2(x)

    class SignSTE(torch.autograd.Function):
        """sign with sign(0) = +1 (hwsim's binary convention); straight-through gradient where |x| <= 1."""

        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return torch.where(x >= 0, torch.ones_like(x), -torch.ones_like(x))

        @staticmethod
        def backward(ctx, g):
            (x,) = ctx.saved_tensors
            return g * (x.abs() <= 1).to(g.dtype)

    def binarize_weight(w):
        """XNOR-Net: alpha * sign(W), alpha = mean |W| per output channel (gradient flows to W and alpha)."""
        alpha = w.abs().flatten(1).mean(1)
        return SignSTE.apply(w) * alpha.view((-1,) + (1,) * (w.dim() - 1))

    class XnorCNN(nn.Module):
        """conv1 (8-bit) -> BN -> sign -> XNOR conv2 stride 2 (zero padding) -> BN -> sign -> flatten
        -> XNOR fc1 -> BN -> ReLU -> fc2 (8-bit)."""

        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(1, 32, 3, padding=1, bias=False)
            self.bn1 = nn.BatchNorm2d(32)
            self.conv2 = nn.Conv2d(32, 64, 3, stride=2, padding=1, bias=False)
            self.bn2 = nn.BatchNorm2d(64)
            self.fc1 = nn.Linear(1024, 128, bias=False)
            self.bn3 = nn.BatchNorm1d(128)
            self.fc2 = nn.Linear(128, 10)

        def forward(self, x):
            x = SignSTE.apply(self.bn1(self.conv1(x)))
            x = F.conv2d(x, binarize_weight(self.conv2.weight), stride=2, padding=1)  # zero padding
            x = SignSTE.apply(self.bn2(x))
            x = F.linear(x.flatten(1), binarize_weight(self.fc1.weight))
            x = F.relu(self.bn3(x))
            return self.fc2(x)

    return DigitsCNN, XnorCNN


def train(net, x, y, epochs, lr, seed, clip_weights=None, log_every=0, name="net"):
    import torch
    import torch.nn.functional as F
    g = torch.Generator().manual_seed(seed)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    steps_per_epoch = math.ceil(len(x) / 32)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=epochs * steps_per_epoch)
    for ep in range(epochs):
        net.train()
        perm = torch.randperm(len(x), generator=g)
        # augmentation: random shifts by up to one pixel (zero fill), same for the whole mini-batch
        for i in range(0, len(x), 32):
            idx = perm[i:i + 32]
            xb = xt[idx]
            dy, dx = (torch.randint(-1, 2, (2,), generator=g)).tolist()
            if dy or dx:
                xb = torch.roll(xb, shifts=(dy, dx), dims=(2, 3))
                if dy == 1:
                    xb[:, :, 0, :] = 0
                elif dy == -1:
                    xb[:, :, -1, :] = 0
                if dx == 1:
                    xb[:, :, :, 0] = 0
                elif dx == -1:
                    xb[:, :, :, -1] = 0
            loss = F.cross_entropy(net(xb), yt[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            if clip_weights:
                with torch.no_grad():
                    for p in clip_weights:
                        p.clamp_(-1.0, 1.0)
        if log_every and (ep + 1) % log_every == 0:
            log(f"  {name} epoch {ep + 1}/{epochs} loss {loss.item():.4f}")
    net.train(False)  # inference mode
    return net


def torch_accuracy(net, x, y):
    import torch
    with torch.no_grad():
        pred = net(torch.from_numpy(x)).argmax(1).numpy()
    return float((pred == y).mean())


# ============================================================================================ quantization
# Every scheme comes from hwsim's own toolchain (simulator.quant, the same code as `hwsim quantize`): the float
# networks are exported to ONNX and quantized from there, calibrated on the training images.

def export_onnx(net, path):
    import torch
    net.train(False)
    torch.onnx.export(net, torch.zeros(1, 1, 8, 8), str(path), input_names=["input"], output_names=["logits"],
                      dynamic_axes={"input": {0: "N"}, "logits": {0: "N"}}, opset_version=17, dynamo=False)
    return path


def xnor_float_twin(xnet):
    """The XNOR network as plain float layers (same parameters, no sign, latent weights): what hwsim quantize reads.
    `--weights binary:xnor --acts binary,beta=1` then binarizes exactly as the STE network did in training:
    B = sign(W) with alpha = mean|W| per channel, and sign activations of the BN outputs (sign(0) = +1)."""
    import torch.nn as nn
    import torch.nn.functional as F

    class Twin(nn.Module):
        def __init__(self):
            super().__init__()
            for name in ("conv1", "bn1", "conv2", "bn2", "fc1", "bn3", "fc2"):
                setattr(self, name, getattr(xnet, name))
            self.flatten = nn.Flatten()

        def forward(self, x):
            x = self.bn2(self.conv2(self.bn1(self.conv1(x))))
            return self.fc2(F.relu(self.bn3(self.fc1(self.flatten(x)))))

    return Twin()


def rename_layers(model, names):
    """Friendlier names for the layers the exporter named after their op (torch.onnx's "/MaxPool" -> MaxPool)."""
    for lay in model.layers:
        lay.name = names.get(lay.name, lay.name)
        lay.inputs = [names.get(i, i) for i in lay.inputs]
    return model.check()


def base_metadata(args, what, float_acc, extra=None):
    md = {"description": what,
          "dataset": "scikit-learn load_digits (8x8, 10 classes); train/test 70/30 stratified, random_state="
                     f"{args.seed}; test set in models/digits_test.npz",
          "input": "x = pixel / 16 in [0, 1] (float32); input codes = pixel values 0..16 (5-bit uniform, scale 2^-4)",
          "made_by": "models/make_digits_models.py" + ("" if args.epochs == 60 else f" --epochs {args.epochs}"),
          "float_test_accuracy": round(float_acc, 4),
          "seeds": {k: SEED_REFS[k] for k in sorted(SEED_REFS)}}
    md.update(extra or {})
    return md


def main(argv=None):
    ap = argparse.ArgumentParser(
        description="Train small CNNs on sklearn's 8x8 digits and write hwsim's example models "
                    "(uniform 8-bit, SIQ codebook, ENQ, KNQ, XNOR) plus the test set, all quantized by hwsim's "
                    "toolchain (simulator.quant); then check each model bit-exact (engine vs float64 reference) "
                    "and print its accuracy measured by hwsim.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Example: python models/make_digits_models.py            (about 1-3 minutes on 2 cores)")
    ap.add_argument("--out-dir", default=str(HERE), help="where to write the files (default: this script's folder, models/)")
    ap.add_argument("--seed", type=int, default=0, help="split and training seed (default: %(default)s)")
    ap.add_argument("--epochs", type=int, default=60, help="float training epochs (default: %(default)s)")
    ap.add_argument("--threads", type=int, default=2, help="torch threads (default: %(default)s)")
    ap.add_argument("--float-model", default=str(HERE / "lenet_digits_float.onnx"),
                    help="the float CNN to quantize (default: the shipped lenet_digits_float.onnx, made by "
                         "make_onnx_example.py)")
    ap.add_argument("--retrain", action="store_true", help="train the float CNN afresh instead (--seed, --epochs)")
    ap.add_argument("--tolerance", type=float, default=0.0025,
                    help="enq:auto keeps training-set accuracy within this of the 8-bit model (default: %(default)s)")
    args = ap.parse_args(argv)

    import tempfile

    import torch

    from simulator.engine import Engine, quantize_input
    from simulator.importers.onnx.float_reader import read_float_onnx
    from simulator.quant.pipeline import quantize
    from simulator.quant.schemes import recipe_from_dict
    from simulator.validate import compare

    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)
    t_start = time.perf_counter()
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp())
    DigitsCNN, XnorCNN = torch_modules()

    x_tr, y_tr, x_te, y_te = load_data(args.seed)
    np.savez_compressed(out / "digits_test.npz", x=x_te.astype(np.float32), y=y_te.astype(np.int64))
    log(f"digits: {len(x_tr)} train, {len(x_te)} test images")

    if args.retrain:
        torch.manual_seed(args.seed)
        net = train(DigitsCNN(), x_tr, y_tr, args.epochs, 3e-3, args.seed, log_every=20, name="float CNN")
        cnn = read_float_onnx(export_onnx(net, tmp / "cnn.onnx"))
    else:                 # the shipped float network (make_onnx_example.py): what `hwsim quantize` users start from
        cnn = read_float_onnx(args.float_model)
    float_acc = float((cnn.run(x_te)[cnn.output].argmax(1) == y_te).mean())
    log(f"float CNN ({'retrained' if args.retrain else args.float_model}): test accuracy {float_acc:.4f}")

    def recipe(text):
        import yaml
        return recipe_from_dict(yaml.safe_load(text))

    def make(key, fg, rec, what, float_accuracy, extra=None, train_set=None):
        res = quantize(fg, x_tr, y_tr, rec, name=f"lenet_digits_{key}", seed=args.seed, train=train_set)
        model = rename_layers(res.model, {"MaxPool": "pool1", "MaxPool_1": "pool2", "Flatten": "flatten"})
        codes = quantize_input(model, x_te)
        engine = Engine(model)
        acc = float((model.layers[-1].out_enc.decode(engine.run(codes).output).argmax(1) == y_te).mean())
        exact = compare(engine, codes).passed
        model.sample_input = codes[:8].copy()
        if fg is not cnn or args.retrain:
            model.metadata["quantized_by"]["float_model"] = "exported to a temporary ONNX file by this script"
        else:
            model.metadata["quantized_by"]["float_model"] = "models/lenet_digits_float.onnx"
        model.metadata.update(base_metadata(args, what, float_accuracy, extra))
        model.metadata["expected_hwsim_test_accuracy"] = round(acc, 4)
        path = out / f"lenet_digits_{key}.qnn"
        save_model(model, path)
        log(f"{key}: test accuracy {acc:.4f} (integer engine), bit-exact {exact}; train {res.accuracy:.4f}; "
            f"wrote {path.name} ({path.stat().st_size} bytes)")
        return acc, exact, res

    results = {}
    base = "format: hwsim-recipe/1\ninput: uniform:5\n"     # the raw pixels 0..16: lossless 5-bit input codes
    results["u8"] = make("u8", cnn, recipe(base),
                         "8-bit uniform: int8 symmetric per-output-channel weights, uint8 activations with "
                         "power-of-two scales 2^-F (seed 004, F from the calibration max on the training set), "
                         "int16 logits; hwsim quantize --weights uniform:8 --acts uniform:8", float_acc)
    siq = "siq:4,rounds=8,epochs=6"
    results["codebook"] = make("codebook", cnn, recipe(base + f"weights: '{siq}'\nall_layers: true\n"),
                               "k-means codebook weights: 4-bit indices into one 16-entry table per layer of signed "
                               "8-bit fixed-point values; centroids by Lloyd's k-means (seed 000) with supervised "
                               f"iterative quantization (seed 001 SIQ, {siq}); uint8 activations; hwsim quantize "
                               f"--weights {siq} --all-layers --train", float_acc, train_set=(x_tr, y_tr))
    enq = base + f"budget: {args.tolerance}\nacts: enq:auto\nlayers:\n  fc2: {{acts: enq:auto}}\n"
    results["enq"] = make("enq", cnn, recipe(enq),
                          "ENQ activations (seed 004): q_m = 8, F per tensor from the calibration range, E_i per "
                          "tensor by hwsim quantize --acts enq:auto (the smallest E_i keeping training accuracy "
                          f"within {args.tolerance} of the 8-bit model, one tensor at a time); int8 weights",
                          float_acc)
    knq = base + "acts: knq:4\nlayers:\n  fc2: {acts: knq:3}\n"
    results["knq"] = make("knq", cnn, recipe(knq),
                          "KNQ activations (seed 004): q_m = 8, 2^T centroids by k-means on each tensor's training "
                          "activations in fixed point, pre-saturated at M = 2^q_m - 1, x -> k if d_k <= x < d_(k+1); "
                          "T = 4 (3 for the tensor fc2 reads); int8 weights", float_acc)

    torch.manual_seed(args.seed + 2)
    xnet = XnorCNN()
    xnet = train(xnet, x_tr, y_tr, args.epochs * 2, 5e-3, args.seed + 2,
                 clip_weights=[xnet.conv2.weight, xnet.fc1.weight], log_every=40, name="XNOR CNN")
    xnor_float = torch_accuracy(xnet, x_te, y_te)
    log(f"XNOR CNN (float simulation of the binary net): test accuracy {xnor_float:.4f}")
    twin = read_float_onnx(export_onnx(xnor_float_twin(xnet), tmp / "xnor.onnx"))
    results["xnor"] = make("xnor", twin, recipe(base + "weights: binary:xnor\nacts: binary,beta=1\n"),
                           "XNOR-Net (seed 002): conv1 int8 -> BN -> sign; conv2 XNOR-popcount (B = sign(W), "
                           "alpha = mean|W| per channel, zero padding) -> BN -> sign; fc1 XNOR-popcount -> BN -> "
                           "ReLU -> uint8; fc2 int8 -> int16 logits. Trained with a straight-through estimator; "
                           "quantized by hwsim quantize --weights binary:xnor --acts binary,beta=1 (BN folded)",
                           xnor_float, {"float_cnn_test_accuracy": round(float_acc, 4)})

    summary = {k: {"integer_test_accuracy": round(a, 4), "bit_exact": e} for k, (a, e, _) in results.items()}
    summary["float_cnn_test_accuracy"] = round(float_acc, 4)
    summary["xnor_float_test_accuracy"] = round(xnor_float, 4)
    log(json.dumps(summary, indent=1))
    log(f"training + quantization took {time.perf_counter() - t_start:.0f} s")
    return 0 if all(e for _, e, _ in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
