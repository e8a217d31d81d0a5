"""Seed 004 Table VII: bits needed to store all activations of one image (NB), VGG-16 and AlexNet, for half
precision, ENQ and KNQ, computed from the layer shapes of the SCALE-Sim topologies and the per-layer bits printed
in seed 004.

    python benchmarks/reproductions/seed004_storage.py

Definition (one, for every row): NB = sum over the network's MAC layers (every conv and FC layer of the topology)
of (elements of that layer's output feature map) x (bits per element of that tensor); the network input and the
pooling outputs are not counted (a pooled map is a window maximum of values already stored; seed 004 quantizes
"activations after the ReLU step" per layer). MB = 10^6 bytes.
Bits per layer output:
  half precision  16 everywhere
  ENQ   VGG-16: E_i of Tables II/III, index 6 (the row the paper picks), the i-th column = the i-th layer's
        output: conv1_1 8, conv1_2 5, conv2_1 6, conv2_2 5, conv3_x 5 5 5, conv4_x 5 5 5, conv5_1 6, conv5_2 5,
        conv5_3 5, fc6 6, fc7 3, fc8 2.
        AlexNet: seed 004 prints no E_i; its ENQ NB equals its KNQ NB (0.48 MB), so 3 bits per layer (the KNQ T)
        is assumed and said so.
  KNQ   VGG-16: T = 5 for every conv layer ("Ei = 5 for each convolutional layer"); the FC outputs keep the ENQ
        bits above (the paper does not say; they change NB by < 0.02 MB). AlexNet: T = 3 for every layer.
The topologies (models/topologies/*.csv) are read with simulator.importers.topology.load_topology; the AlexNet
file (Eyeriss) has the five conv layers only (CONV2/4/5 split into two groups), no FC layers.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

VGG_ENQ_INDEX6 = {"conv1_1": 8, "conv1_2": 5, "conv2_1": 6, "conv2_2": 5, "conv3_1": 5, "conv3_2": 5,
                  "conv3_3": 5, "conv4_1": 5, "conv4_2": 5, "conv4_3": 5, "conv5_1": 6, "conv5_2": 5,
                  "conv5_3": 5, "fc6": 6, "fc7": 3, "fc8": 2}
PAPER_MB = {"vgg16": {"half": 27.0, "enq": 9.5, "knq": 8.4}, "alexnet": {"half": 2.57, "enq": 0.48, "knq": 0.48}}
TOPOLOGY = {"vgg16": ROOT / "models/topologies/vgg16.csv", "alexnet": ROOT / "models/topologies/alexnet_eyeriss.csv"}


def layer_outputs(topology) -> dict:
    """{layer name: output elements} of every MAC layer of a SCALE-Sim topology CSV (one image)."""
    from simulator.importers.topology import load_topology
    return {w.name: w.k * w.p * w.q for w in load_topology(topology)}


def bits_per_layer(net: str, scheme: str, names) -> dict:
    if scheme == "half":
        return {n: 16 for n in names}
    if net == "vgg16":
        if scheme == "enq":
            return {n: VGG_ENQ_INDEX6[n] for n in names}
        return {n: 5 if n.startswith("conv") else VGG_ENQ_INDEX6[n] for n in names}
    return {n: 3 for n in names}


def activation_storage(net: str, scheme: str) -> dict:
    """NB of `net` ("vgg16" | "alexnet") under `scheme` ("half" | "enq" | "knq"), by the definition above."""
    outs = layer_outputs(TOPOLOGY[net])
    bits = bits_per_layer(net, scheme, outs)
    total_bits = sum(outs[n] * bits[n] for n in outs)
    return {"elements": sum(outs.values()), "bits": total_bits, "MB": total_bits / 8 / 1e6,
            "per_layer": {n: {"elements": outs[n], "bits": bits[n]} for n in outs}}


def table():
    rows = []
    for net in ("vgg16", "alexnet"):
        for scheme in ("half", "enq", "knq"):
            r = activation_storage(net, scheme)
            paper = PAPER_MB[net][scheme]
            rows.append({"net": net, "scheme": scheme, "elements": r["elements"], "MB": round(r["MB"], 3),
                         "paper_MB": paper, "deviation": round(r["MB"] / paper - 1, 4),
                         "within_5pct": abs(r["MB"] / paper - 1) <= 0.05})
    return rows


def main():
    from common import log, pyplot, save_json, savefig
    rows = table()
    for r in rows:
        log(f"{r['net']:8s} {r['scheme']:5s} {r['elements']:>11,d} elements  {r['MB']:7.3f} MB  paper "
            f"{r['paper_MB']:6.2f} MB  {100 * r['deviation']:+6.1f} %  {'ok' if r['within_5pct'] else 'MISS'}")
    # alternative definitions, for the account of the AlexNet rows
    alt = {}
    for net in ("vgg16", "alexnet"):
        outs = layer_outputs(TOPOLOGY[net])
        alt[net] = {"outputs_MiB_half": sum(outs.values()) * 2 / 2 ** 20,
                    "outputs_MB_fp32": sum(outs.values()) * 4 / 1e6}
    save_json("seed004_storage", {"command": "python benchmarks/reproductions/seed004_storage.py",
                                  "definition": "sum over every conv/FC layer of output elements x bits; input "
                                                "and pooling outputs not counted; MB = 1e6 bytes",
                                  "rows": rows, "alternatives": alt,
                                  "per_layer": {f"{n}/{s}": activation_storage(n, s)["per_layer"]
                                                for n in ("vgg16", "alexnet") for s in ("half", "enq", "knq")}})
    plt = pyplot()
    import numpy as np
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
    for ax, net in zip(axes, ("vgg16", "alexnet")):
        rs = [r for r in rows if r["net"] == net]
        x = np.arange(len(rs))
        ax.bar(x - 0.2, [r["MB"] for r in rs], 0.4, label="hwsim (layer shapes)")
        ax.bar(x + 0.2, [r["paper_MB"] for r in rs], 0.4, label="seed 004 Table VII")
        ax.set_xticks(x, [r["scheme"] for r in rs])
        ax.set_title(net)
        ax.set_ylabel("activation storage, MB")
    axes[0].legend()
    savefig(fig, "seed004_storage")


if __name__ == "__main__":
    main()
