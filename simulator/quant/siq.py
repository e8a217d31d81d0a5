"""Seed 001's supervised iterative quantization (SIQ) of weights: alternate k-means and retraining.

Seed 001 §3.2: "we first deploy k-means adaptive quantization on trained network weights, to solve the
minimization problem with regards to Q [...] Then we retrain the network via back propagation (Eq. (1)) to solve
the minimization problem with respect to w, where quantized weights are used as initialization. The above two steps
are alternated until a certain iteration number is reached."

What is implemented, step by step (`siq_retrain`):

1. Start from the trained float network `fg` (the seed's server has already trained it at full precision).
2. Round r = 1..R (R = the scheme's `rounds`, default 3):
   a. k-means step (fix w, solve Q): every layer whose weight scheme is `siq:B[,groups=G]` gets its weights
      replaced by their Lloyd k-means centroids, 2^B centroids per group of Co/G consecutive output channels —
      exactly `simulator.quant.weights.kmeans_weights`' grouping and `lloyd_kmeans` (linear init).
   b. retraining step (fix Q, solve w): the whole network is retrained by back propagation on the plain
      cross-entropy of Eq. (1) for E epochs (the scheme's `epochs`, default 2), starting from the quantized
      weights. Nothing is frozen: the seed retrains "the network", and every layer (siq or not) is free to move;
      layers with other schemes are quantized afterwards by the pipeline from their retrained float values.
3. A final k-means step, so the returned siq weights are exactly clustered (<= 2^B distinct values per group).

Convergence criterion: the seed's own — "until a certain iteration number is reached", i.e. a fixed number of
rounds R (no tolerance test). The Split Bregman form of its Eq. (3)/(4) (continuation parameters alpha, beta) is
not recoverable from the seed's text beyond these two alternating steps, so no penalty term is added: the
retraining minimises Eq. (1) only. The k-means step uses Lloyd to convergence (`lloyd_kmeans`, <= 300 steps).

Training: float32 torch, Adam (lr 1e-3 by default, cosine-decayed to 0 within each retraining round so each
round ends near a stable point), mini-batches of 64 in a seeded order, torch.manual_seed(seed), deterministic
algorithms and one thread (restored afterwards). Returns a copy of `fg` (the input is not changed) and a recipe in
which every `siq:B[,groups=G]` becomes `kmeans:B[,groups=G]`: the pipeline's Lloyd on data with <= 2^B
distinct values returns those values, so the codebook is the SIQ codebook (then stored as 8-bit fixed point like
every k-means codebook).
"""

from __future__ import annotations

import copy
import math

import numpy as np

from ..errors import HwsimError
from ..floatgraph import FloatGraph
from . import weights as qw
from .schemes import Recipe, Scheme

DEFAULT_ROUNDS = 3
DEFAULT_EPOCHS = 2
BATCH = 64


# ------------------------------------------------------------------------------------------------ torch module

def torch_graph(fg: FloatGraph, torch):
    """A torch nn.Module evaluating `fg` in float32 (conv2d / dense / pools / relu / clip / add / concat /
    flatten / reshape), with one trainable weight and bias per MAC node. `module.weights[name]` etc."""
    nn, F = torch.nn, torch.nn.functional

    class GraphModule(nn.Module):
        def __init__(self):
            super().__init__()
            self.fg = fg
            self.weights = nn.ParameterDict()
            self.biases = nn.ParameterDict()
            for n in fg.mac_nodes():
                key = _key(n.name)
                self.weights[key] = nn.Parameter(torch.tensor(np.asarray(n.weight), dtype=torch.float32))
                if n.bias is not None:
                    self.biases[key] = nn.Parameter(torch.tensor(np.asarray(n.bias), dtype=torch.float32))

        def forward(self, x):
            t = {"input": x}
            for n in fg.nodes:
                xs = [t[i] for i in n.inputs]
                t[n.name] = self._node(n, xs)
            return t[fg.output].reshape(x.shape[0], -1)

        def _node(self, n, xs):
            a, x = n.attrs, xs[0]
            key = _key(n.name)
            if n.op in ("conv2d", "dense"):
                w = self.weights[key]
                b = self.biases[key] if key in self.biases else None
                if n.op == "dense":
                    return F.linear(x, w, b)
                pt, pl, pb, pr = a["padding"]
                if pt or pl or pb or pr:
                    x = F.pad(x, (pl, pr, pt, pb))
                return F.conv2d(x, w, b, stride=tuple(a["stride"]), groups=a["groups"])
            if n.op == "maxpool":
                pt, pl, pb, pr = a["padding"]
                if pt or pl or pb or pr:
                    x = F.pad(x, (pl, pr, pt, pb), value=-math.inf)
                return F.max_pool2d(x, tuple(a["kernel"]), tuple(a["stride"]))
            if n.op == "avgpool":
                if a.get("global"):
                    return x.mean(dim=(2, 3), keepdim=True)
                (kh, kw), stride = a["kernel"], tuple(a["stride"])
                pt, pl, pb, pr = a["padding"]
                xp = F.pad(x, (pl, pr, pt, pb)) if (pt or pl or pb or pr) else x
                total = F.avg_pool2d(xp, (kh, kw), stride) * (kh * kw)
                if a.get("count_include_pad") or not (pt or pl or pb or pr):
                    return total / (kh * kw)
                ones = F.pad(torch.ones_like(x[:1, :1]), (pl, pr, pt, pb))
                count = F.avg_pool2d(ones, (kh, kw), stride) * (kh * kw)
                return total / count
            if n.op == "relu":
                return F.relu(x)
            if n.op == "clip":
                return torch.clamp(x, a["min"], a["max"])
            if n.op == "add":
                out = xs[0]
                for y in xs[1:]:
                    out = out + y
                return out
            if n.op == "concat":
                return torch.cat(xs, dim=1)
            if n.op in ("flatten", "reshape"):
                return x.reshape((x.shape[0],) + tuple(n.shape))
            raise HwsimError(f"siq cannot train op {n.op!r}", field=f"node {n.name}")

    return GraphModule()


def _key(name):
    """ParameterDict keys may not contain '.'."""
    return name.replace(".", "__dot__")


def train_graph(module, x, y, epochs, lr, seed, torch, progress=None, label="train"):
    """Adam on cross-entropy, cosine-decayed lr within the call, seeded mini-batch order; in place."""
    F = torch.nn.functional
    xt = torch.as_tensor(np.asarray(x, dtype=np.float32))
    yt = torch.as_tensor(np.asarray(y, dtype=np.int64))
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(module.parameters(), lr=lr)
    steps = max(1, epochs * math.ceil(len(xt) / BATCH))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)))
    module.train()
    loss = None
    for ep in range(epochs):
        perm = torch.randperm(len(xt), generator=g)
        for i in range(0, len(xt), BATCH):
            idx = perm[i:i + BATCH]
            loss = F.cross_entropy(module(xt[idx]), yt[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        if progress:
            progress(f"{label} epoch {ep + 1}/{epochs} loss {loss.item():.4f}")
    module.train(False)   # inference mode
    return module


def torch_accuracy(module, x, y, torch) -> float:
    with torch.no_grad():
        pred = module(torch.as_tensor(np.asarray(x, dtype=np.float32))).argmax(1).numpy()
    return float((pred == np.asarray(y)).mean())


# ------------------------------------------------------------------------------------------------ k-means step

def cluster(w: np.ndarray, bits: int, groups: int = 1) -> np.ndarray:
    """Every weight replaced by its Lloyd centroid (2^bits per group of co/groups output channels), float64."""
    w = np.asarray(w, dtype=np.float64)
    co = w.shape[0]
    size = co // groups
    out = np.empty_like(w)
    for g in range(groups):
        cent, idx = qw.lloyd_kmeans(w[g * size:(g + 1) * size], 1 << bits)
        out[g * size:(g + 1) * size] = cent[idx]
    return out


def _kmeans_step(module, siq, torch):
    with torch.no_grad():
        for name, scheme in siq.items():
            p = module.weights[_key(name)]
            q = cluster(p.detach().double().numpy(), scheme.bits, scheme.opt("groups", 1))
            p.copy_(torch.from_numpy(q).to(p.dtype))


# ------------------------------------------------------------------------------------------------ entry point

def kmeans_equivalent(s: Scheme) -> Scheme:
    opts = tuple((k, v) for k, v in s.options if k == "groups")
    return Scheme("kmeans", s.bits, opts)


def siq_retrain(fg: FloatGraph, recipe: Recipe, train, seed: int = 0, progress=None, lr: float = 1e-3):
    """SIQ (seed 001) on the layers whose weight scheme is siq -> (new FloatGraph, recipe with kmeans schemes).

    `train` = (x, y): float inputs shaped like the model input and integer labels. Rounds R and epochs E per round
    come from the siq schemes' options (`siq:B,rounds=R,epochs=E`; defaults 3 and 2; with several siq layers the
    largest R and E are used). See the module docstring for the exact algorithm and its convergence criterion.
    `progress`: optional callable taking one line of text.
    """
    if train is None:
        raise HwsimError("siq weights need --train TRAIN.npz (x, y): SIQ retrains the network", field="--train")
    x, y = train
    if y is None:
        raise HwsimError("siq retraining needs labels: the --train file has no 'y'", field="--train")
    from simulator.importers import require
    torch = require("torch", "torch")
    from .pipeline import plan_schemes

    plan = plan_schemes(fg, recipe)
    siq = {name: s for name, s in plan.weights.items() if s.kind == "siq"}
    fg2 = copy.deepcopy(fg)
    if not siq:
        return fg2, recipe
    for name, s in siq.items():
        co = fg.node(name).weight.shape[0]
        if co % s.opt("groups", 1):
            raise HwsimError(f"groups={s.opt('groups', 1)} does not divide the {co} output channels",
                             field=f"layer {name}")
    rounds = max(s.opt("rounds", DEFAULT_ROUNDS) for s in siq.values())
    epochs = max(s.opt("epochs", DEFAULT_EPOCHS) for s in siq.values())

    torch.manual_seed(seed)
    deterministic, threads = torch.are_deterministic_algorithms_enabled(), torch.get_num_threads()
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.set_num_threads(1)        # small networks: one thread is faster here, and the sums' order is fixed
    try:
        module = torch_graph(fg2, torch)
        for r in range(rounds):
            _kmeans_step(module, siq, torch)
            if progress:
                progress(f"siq round {r + 1}/{rounds}: k-means, train accuracy "
                         f"{torch_accuracy(module, x, y, torch):.4f}; retraining {epochs} epoch(s)")
            train_graph(module, x, y, epochs, lr, seed + r, torch, progress, label=f"siq round {r + 1}")
        _kmeans_step(module, siq, torch)
        if progress:
            progress(f"siq final k-means: train accuracy {torch_accuracy(module, x, y, torch):.4f}")
    finally:
        torch.use_deterministic_algorithms(deterministic)
        torch.set_num_threads(threads)

    for n in fg2.mac_nodes():
        key = _key(n.name)
        w = module.weights[key].detach().double().numpy()
        if n.name in siq:
            s = siq[n.name]
            w = cluster(w, s.bits, s.opt("groups", 1))        # exact centroids (float64) of the float32 values
        n.weight = w.copy()
        if key in module.biases:
            n.bias = module.biases[key].detach().double().numpy().copy()
    fg2.notes = list(fg.notes) + [f"siq: {rounds} round(s) of k-means + {epochs} epoch(s) retraining on "
                                  f"{len(x)} samples (seed {seed}) for {', '.join(siq)}"]

    recipe2 = copy.deepcopy(recipe)
    recipe2.weights = kmeans_equivalent(recipe.weights) if recipe.weights.kind == "siq" else recipe.weights
    for key, entry in recipe2.layers.items():
        if "weights" in entry and entry["weights"].kind == "siq":
            entry["weights"] = kmeans_equivalent(entry["weights"])
    return fg2, recipe2
