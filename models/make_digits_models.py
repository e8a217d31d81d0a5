#!/usr/bin/env python3
"""Train small CNNs on scikit-learn's 8x8 handwritten digits and write hwsim's example models.

Outputs (in --out-dir, default: the folder of this script):
  digits_test.npz              held-out test set: x float32 [N, 1, 8, 8] = pixel / 16 (in [0, 1]), y int64
  lenet_digits_u8.qnn          int8 per-channel weights, uint8 activations with power-of-two scales (2^-F)
  lenet_digits_codebook.qnn    4-bit k-means codebook weights (seed 000 Lloyd + seed 001 SIQ), uint8 activations
  lenet_digits_enq.qnn         int8 weights, ENQ activations (seed 004: q_m = 8, per-layer E_i by exhaustive search)
  lenet_digits_knq.qnn         int8 weights, KNQ activations (seed 004: 2^T k-means centroids, T per layer in {3, 4})
  lenet_digits_xnor.qnn        XNOR-Net (seed 002): binary conv + binary dense on sign activations, 8-bit first/last

Network (seed 001's LeNet shape adapted to 8x8 inputs):
  conv 16@3x3 pad 1 -> ReLU -> maxpool 2 -> conv 32@3x3 pad 1 -> ReLU -> maxpool 2 -> flatten (128)
  -> dense 64 -> ReLU -> dense 10
Every quantized layer uses requant "float64" with multipliers that are exact in float64 (activation scales are
powers of two, weight scales have at most 8 significant bits), so hwsim's integer engine and its float64
reference agree bit for bit. The script ends by checking exactly that on the whole test set and printing each
model's accuracy as measured by hwsim's engine.

Needs torch and scikit-learn to run; the files it writes need neither (numpy + hwsim only).
Deterministic: fixed seeds, single-process data order, torch deterministic algorithms.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # run from a source checkout without installing

from simulator.encodings import (BinaryAct, BinaryW, CodebookW, EnqAct, KnqAct,  # noqa: E402
                                 UniformAct, UniformW)
from simulator.graph import Layer, Model, default_pad_code  # noqa: E402
from simulator.qnn.model_io import save_model  # noqa: E402
from simulator.units.knq import kmeans_centroids  # noqa: E402

INPUT_ENC = UniformAct(bits=5, signed=False, scale=2.0 ** -4)  # codes 0..16 = the raw digit pixels, lossless
QM = 8                    # q_m: activation fixed-point width (uint8)
OUT_BITS = 16             # logits: int16 with a power-of-two scale
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


def input_codes(x):
    """The models' input quantizer (x / 2^-4, round half to even, clamp): here exactly the raw pixels."""
    v = np.rint(x.astype(np.float64) / INPUT_ENC.scale)
    return INPUT_ENC.encode(v.astype(np.int64))


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

        def forward(self, x):
            x = F.max_pool2d(F.relu(self.conv1(x)), 2)
            x = F.max_pool2d(F.relu(self.conv2(x)), 2)
            x = F.relu(self.fc1(x.flatten(1)))
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
        """conv1 (8-bit) -> BN -> sign -> XNOR conv2 stride 2 (+1 padding) -> BN -> sign -> flatten
        -> XNOR fc1 -> BN -> ReLU -> fc2 (8-bit)."""

        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(1, 32, 3, padding=1, bias=False)
            self.bn1 = nn.BatchNorm2d(32)
            self.conv2 = nn.Conv2d(32, 64, 3, stride=2, padding=0, bias=False)
            self.bn2 = nn.BatchNorm2d(64)
            self.fc1 = nn.Linear(1024, 128, bias=False)
            self.bn3 = nn.BatchNorm1d(128)
            self.fc2 = nn.Linear(128, 10)

        def forward(self, x):
            x = SignSTE.apply(self.bn1(self.conv1(x)))
            x = F.pad(x, (1, 1, 1, 1), value=1.0)  # binary_pad "+1": padding is free in XNOR hardware
            x = F.conv2d(x, binarize_weight(self.conv2.weight), stride=2)
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


# ============================================================================================ quantizers

def mantissa8(s):
    """Round a positive scale UP to 8 significant bits: products and sums with it stay exact in float64."""
    if not s > 0:
        return 1.0
    m, e = math.frexp(float(s))          # s = m * 2^e, m in [0.5, 1)
    m8 = math.ceil(m * 256.0) / 256.0
    return math.ldexp(m8, e)


def quant_int8_per_channel(w):
    """Symmetric int8 per output channel (codes in [-127, 127]); scales with 8 significant bits."""
    w = np.asarray(w, dtype=np.float64)
    co = w.shape[0]
    amax = np.abs(w.reshape(co, -1)).max(axis=1)
    scales = np.array([mantissa8(a / 127.0) for a in amax])
    codes = np.clip(np.rint(w / scales.reshape((-1,) + (1,) * (w.ndim - 1))), -127, 127).astype(np.int64)
    return codes, UniformW(bits=8, signed=True, scale=tuple(float(s) for s in scales), zero_point=(0,))


def kmeans1d(values, k, iters=100):
    """Lloyd's k-means on 1-D data (seed 000), deterministic linear initialisation over [min, max]
    (Deep Compression's recommended init). Returns (sorted centroids, index of each value)."""
    v = np.asarray(values, dtype=np.float64).ravel()
    cent = np.linspace(v.min(), v.max(), k)
    for _ in range(iters):
        mids = (cent[:-1] + cent[1:]) / 2.0
        assign = np.searchsorted(mids, v)
        sums = np.bincount(assign, weights=v, minlength=k)
        cnt = np.bincount(assign, minlength=k)
        new = np.where(cnt > 0, sums / np.maximum(cnt, 1), cent)
        if np.allclose(new, cent, rtol=0, atol=1e-12):
            break
        cent = np.sort(new)
    mids = (cent[:-1] + cent[1:]) / 2.0
    return cent, np.searchsorted(mids, v).reshape(np.shape(values))


def quant_codebook(w, index_bits=4, table_bits=8):
    """k-means codebook with 2^index_bits entries, stored as signed table_bits fixed-point integers with a
    per-layer power-of-two scale 2^-f (the largest f with every entry in range)."""
    cent, idx = kmeans1d(w, 1 << index_bits)
    top = (1 << (table_bits - 1)) - 1
    f = math.floor(math.log2(top / np.abs(cent).max()))
    table = np.clip(np.rint(cent * 2.0 ** f), -top, top).astype(np.int64)
    enc = CodebookW(index_bits=index_bits, table_bits=table_bits, group_size=0, scale=(2.0 ** -f,))
    return idx.astype(np.int64), enc, table[None, :]


def kmeans_weights_(net, levels=16):
    """Replace every layer's weights by their nearest of `levels` k-means centroids (one codebook per layer)."""
    import torch
    with torch.no_grad():
        for mod in (net.conv1, net.conv2, net.fc1, net.fc2):
            cent, idx = kmeans1d(mod.weight.detach().double().numpy(), levels)
            mod.weight.copy_(torch.from_numpy(cent[idx]).float())
    return net


def frac_bits_for(max_value, qmax):
    """F such that max_value * 2^F <= qmax (power-of-two activation scale 2^-F)."""
    return int(math.floor(math.log2(qmax / max(float(max_value), 1e-12))))


# ============================================================================================ integer forward
# A fast re-implementation of hwsim's engine semantics (torch float64 on exact integers) used for calibration
# and the searches; the final check runs hwsim's own Engine and float reference on every model.

def decode_weight_values(lay):
    enc = lay.weight_enc
    if isinstance(enc, CodebookW):
        co = lay.weight.shape[0]
        return lay.codebook[enc.groups(co)[:, None], lay.weight.reshape(co, -1)].reshape(lay.weight.shape)
    return enc.decode(lay.weight)


def mac_acc(lay, x_codes):
    """Accumulator (bias included) of a conv/dense layer, float64 torch tensor holding exact integers."""
    import torch
    import torch.nn.functional as F
    in_enc = lay.in_encs[0]
    xv = torch.from_numpy(in_enc.decode(x_codes).astype(np.float64))
    wv = torch.from_numpy(decode_weight_values(lay).astype(np.float64))
    if lay.op == "conv2d":
        if isinstance(in_enc, BinaryAct):
            pad = {"+1": 1.0, "-1": -1.0, "zero": 0.0}[lay.attr("binary_pad")]
        else:
            code = lay.attr("pad_code")
            code = default_pad_code(in_enc) if code is None else code
            pad = float(in_enc.decode(np.array([code]))[0])
        pt, pl, pb, pr = lay.attr("padding")
        xv = F.pad(xv, (pl, pr, pt, pb), value=pad)
        acc = F.conv2d(xv, wv, stride=tuple(lay.attr("stride")), groups=lay.attr("groups"))
        shape = (1, -1, 1, 1)
    else:
        acc = xv @ wv.T
        shape = (1, -1)
    if lay.bias is not None:
        acc = acc + torch.from_numpy(lay.bias.astype(np.float64)).view(shape)
    assert float(acc.abs().max()) < 2.0 ** 31, f"{lay.name}: accumulator leaves int32"
    return acc


def layer_out(lay, acc):
    import torch
    if isinstance(lay.out_enc, BinaryAct):
        return (acc < 0).numpy().astype(np.int64)
    co = lay.out_shape[0]
    m = lay.in_encs[0].value_scale * lay.weight_enc.channel_scales(co) / lay.out_enc.value_scale
    shape = (1, -1, 1, 1) if acc.dim() == 4 else (1, -1)
    v = torch.round(acc * torch.from_numpy(m).view(shape)).numpy().astype(np.int64)  # half to even
    clip = lay.attr("clip")
    if clip is not None:
        v = np.clip(v, clip[0], clip[1])
    return lay.out_enc.encode(v)


def int_forward(model, codes):
    """Output codes of `model` (already check()ed) on input codes, as hwsim's engine computes them."""
    import torch
    import torch.nn.functional as F
    t = {"input": np.asarray(codes, dtype=np.int64)}
    for lay in model.layers:
        x = t[lay.inputs[0]]
        if lay.op in ("conv2d", "dense"):
            out = layer_out(lay, mac_acc(lay, x))
        elif lay.op == "maxpool":
            assert not isinstance(lay.in_encs[0], BinaryAct), "maxpool of binary codes: see the README"
            out = F.max_pool2d(torch.from_numpy(x.astype(np.float64)), tuple(lay.attr("kernel")),
                               tuple(lay.attr("stride"))).numpy().astype(np.int64)
        elif lay.op == "flatten":
            out = x.reshape(x.shape[0], -1)
        else:
            raise NotImplementedError(lay.op)
        t[lay.name] = out
    return t[model.output_name]


def predict(model, codes):
    out = model.layers[-1].out_enc.decode(int_forward(model, codes))
    return out.argmax(axis=1)


def accuracy(model, codes, y):
    return float((predict(model, codes) == y).mean())


# ============================================================================================ model builders

def cnn_params(net):
    """Float parameters of DigitsCNN as numpy float64 arrays, in layer order."""
    p = {k: v.detach().double().numpy() for k, v in net.state_dict().items()}
    return [("conv1", p["conv1.weight"], p["conv1.bias"]), ("conv2", p["conv2.weight"], p["conv2.bias"]),
            ("fc1", p["fc1.weight"], p["fc1.bias"]), ("fc2", p["fc2.weight"], p["fc2.bias"])]


def build_cnn(name, params, weight_quant, act_policy, calib_codes, metadata, sample_codes, cache=None):
    """Quantize DigitsCNN layer by layer (each layer calibrated on the output of the already quantized ones).

    weight_quant(layer_name, w) -> (codes, weight_encoding, codebook or None)
    act_policy(layer_index, layer_name, y_real) -> (out_enc, clip, offset): y_real are this layer's real
        pre-activation outputs on the calibration set; offset (in output value units) is folded into the bias.
    cache: a dict shared by calls with the same params and weight_quant (the searches): the calibration-set
        tensors are reused for every prefix of layer decisions already seen.
    Returns (model, output codes on the calibration set).
    """
    cache = {} if cache is None else cache
    layers = []
    in_enc = INPUT_ENC
    x_cur = calib_codes
    key = ()
    for i, (lname, w, b) in enumerate(params):
        codes, wenc, cb = weight_quant(lname, w)
        co = w.shape[0]
        s_in = in_enc.value_scale
        s_w = wenc.channel_scales(co)
        b_acc = b / (s_in * s_w)                   # bias in accumulator units (real)
        op = "conv2d" if w.ndim == 4 else "dense"
        attrs = {"padding": [1, 1, 1, 1]} if op == "conv2d" else {}
        attrs.update({"acc_bits": 32, "requant": "float64"})
        lay = Layer(lname, op, [layers[-1].name if layers else "input"], dict(attrs),
                    out_enc=UniformAct(16, True, 1.0), weight=codes, weight_enc=wenc, codebook=cb,
                    bias=None, bias_bits=32)
        Model(name, (1, 8, 8), INPUT_ENC, layers + [lay]).check()        # fills lay.in_encs / out_shape
        # calibration: this layer's accumulator (without bias) on the calibration set, given the quantized
        # layers before it
        if (key, "acc") not in cache:
            cache[(key, "acc")] = mac_acc(lay, x_cur)
        acc = cache[(key, "acc")]
        shape = (1, -1) + (1,) * (w.ndim - 2)
        y_real = (acc.numpy() + np.rint(b_acc).reshape(shape)) * (s_in * s_w).reshape(shape)
        out_enc, clip, offset = act_policy(i, lname, y_real)
        lay.out_enc = out_enc
        lay.attrs = dict(attrs, **({"clip": clip} if clip is not None else {}))
        lay.bias = np.rint(b_acc + offset * out_enc.value_scale / (s_in * s_w)).astype(np.int64)
        assert np.abs(lay.bias).max() < 2 ** 31
        layers.append(lay)
        if lname in ("conv1", "conv2"):
            layers.append(Layer(f"pool{lname[-1]}", "maxpool", [lname], {"kernel": [2, 2], "stride": [2, 2]}))
        if lname == "conv2":
            layers.append(Layer("flatten", "flatten", ["pool2"]))
        key = key + ((out_enc, None if clip is None else tuple(clip), offset),)
        if (key, "out") not in cache:
            import torch
            x = layer_out(lay, acc + torch.from_numpy(lay.bias.astype(np.float64)).view(shape))
            if lname in ("conv1", "conv2"):
                x = torch.nn.functional.max_pool2d(torch.from_numpy(x.astype(np.float64)), 2).numpy()
                x = x.astype(np.int64)
            if lname == "conv2":
                x = x.reshape(x.shape[0], -1)
            cache[(key, "out")] = x
        x_cur = cache[(key, "out")]
        in_enc = out_enc
    model = Model(name, (1, 8, 8), INPUT_ENC, layers, input_rounding="half_even",
                  sample_input=sample_codes, metadata=metadata)
    return model.check(), x_cur


def calib_accuracy(model, out_codes, y):
    return float((model.layers[-1].out_enc.decode(out_codes).argmax(axis=1) == y).mean())


def output_policy(y_real):
    """Logits: signed 16-bit, power-of-two scale from the largest |logit| on the calibration set."""
    f = frac_bits_for(np.abs(y_real).max(), (1 << (OUT_BITS - 1)) - 1)
    return UniformAct(OUT_BITS, True, 2.0 ** -f), None, 0.0


def uniform_policy(frac_record):
    """Hidden layers: uint8 (q_m = 8) with F = the largest fraction that keeps the calibration max in range."""
    def policy(i, lname, y):
        if lname == "fc2":
            return output_policy(y)
        f = frac_bits_for(y.max(), (1 << QM) - 1)
        frac_record[lname] = f
        return UniformAct(QM, False, 2.0 ** -f), [0, (1 << QM) - 1], 0.0
    return policy


def enq_policy(e_bits, fracs):
    """ENQ with q_m = 8 and the uniform model's F per layer. QE floors (x >> (q_m - E)); half a step,
    2^(q_m - E - 1) in value units, is folded into the bias so the floor rounds to nearest (free in hardware)."""
    def policy(i, lname, y):
        if lname == "fc2":
            return output_policy(y)
        e = e_bits[lname]
        offset = float(1 << (QM - e - 1)) if e < QM else 0.0
        return EnqAct(e, QM, fracs[lname]), [0, (1 << QM) - 1], offset
    return policy


def knq_policy(t_bits, fracs):
    """KNQ (seed 004): 2^T centroids by k-means on the layer's activations in F-fractional-bit fixed point,
    pre-saturated at M = 2^q_m - 1; thresholds = centroids d_1..d_{2^T-1} (x -> k if d_k <= x < d_{k+1})."""
    def policy(i, lname, y):
        if lname == "fc2":
            return output_policy(y)
        f, t = fracs[lname], t_bits[lname]
        x = np.clip(np.rint(np.maximum(y, 0.0) * 2.0 ** f), 0, (1 << QM) - 1).astype(np.int64)  # post-ReLU
        cents = kmeans_centroids(x, 1 << t, (1 << QM) - 1, iters=300, seed=0)
        assert len(cents) == 1 << t, f"{lname}: k-means gave only {len(cents)} distinct centroids"
        return KnqAct(t, tuple(int(c) for c in cents), (), f), [0, (1 << QM) - 1], 0.0
    return policy


def activation_elements():
    return {"conv1": 16 * 8 * 8, "conv2": 32 * 4 * 4, "fc1": 64}  # stored activations per image (pre-pool)


# -------------------------------------------------------------------------------------------- XNOR model

def build_xnor(name, net, calib_codes, metadata, sample_codes):
    """Fold BN into sign thresholds / per-channel scales and write the XNOR graph.

    A sign output of BN(y), y = k * acc (k = s_in * s_w[c] > 0), is sign(acc - t) with t = -b / (a k) for BN's
    z = a y + b; for a < 0 the channel's weights are negated (binary: bits flipped) so the slope is positive.
    Since acc is an integer, acc >= t <=> acc >= ceil(t): bias = -ceil(t) reproduces the float threshold exactly.
    """
    def bn_affine(bn):
        a = (bn.weight / (bn.running_var + bn.eps).sqrt()).detach().double().numpy()
        b = (bn.bias.detach().double().numpy() - a * bn.running_mean.detach().double().numpy())
        a = np.where(a == 0, 1e-12, a)
        return a, b

    layers = []
    # conv1: 8-bit weights on 5-bit uniform input, BN + sign folded into an integer threshold -> binary output
    a, b = bn_affine(net.bn1)
    w1 = net.conv1.weight.detach().double().numpy() * np.sign(a).reshape(-1, 1, 1, 1)
    codes, wenc = quant_int8_per_channel(w1)
    k = INPUT_ENC.value_scale * np.asarray(wenc.scale)
    bias = -np.ceil(-b / (np.abs(a) * k)).astype(np.int64)
    layers.append(Layer("conv1", "conv2d", ["input"], {"padding": [1, 1, 1, 1], "acc_bits": 32},
                        out_enc=BinaryAct(1.0), weight=codes, weight_enc=wenc, bias=bias))
    # conv2: XNOR-popcount, binary_pad +1, stride 2 -> BN + sign -> binary
    a, b = bn_affine(net.bn2)
    w2 = net.conv2.weight.detach().double().numpy()
    alpha = np.abs(w2).reshape(64, -1).mean(1)
    bits = ((w2 * np.sign(a).reshape(-1, 1, 1, 1)) < 0).astype(np.int64)
    wenc = BinaryW(scale=tuple(mantissa8(v) for v in alpha))
    bias = -np.ceil(-b / (np.abs(a) * alpha)).astype(np.int64)
    layers.append(Layer("conv2", "conv2d", ["conv1"], {"stride": [2, 2], "padding": [1, 1, 1, 1],
                                                      "binary_pad": "+1", "acc_bits": 32},
                        out_enc=BinaryAct(1.0), weight=bits, weight_enc=wenc, bias=bias))
    layers.append(Layer("flatten", "flatten", ["conv2"]))
    # fc1: XNOR-popcount -> BN folded into the per-channel scale |a| alpha and the bias -> ReLU -> uint8
    a, b = bn_affine(net.bn3)
    w3 = net.fc1.weight.detach().double().numpy()
    alpha = np.abs(w3).mean(1)
    bits = ((w3 * np.sign(a).reshape(-1, 1)) < 0).astype(np.int64)
    s_eff = np.array([mantissa8(v) for v in np.abs(a) * alpha])
    wenc = BinaryW(scale=tuple(float(s) for s in s_eff))
    bias = np.rint(b / s_eff).astype(np.int64)                     # s_in = 1 (binary activations)
    fc1 = Layer("fc1", "dense", ["flatten"], {"acc_bits": 32, "requant": "float64"},
                out_enc=UniformAct(16, True, 1.0), weight=bits, weight_enc=wenc, bias=bias)
    probe = Model(name, (1, 8, 8), INPUT_ENC, layers + [fc1]).check()
    x_in = int_forward(Model(name, (1, 8, 8), INPUT_ENC, layers).check(), calib_codes)
    y = mac_acc(probe.layers[-1], x_in).numpy() * s_eff
    f3 = frac_bits_for(y.max(), (1 << QM) - 1)
    fc1.out_enc = UniformAct(QM, False, 2.0 ** -f3)
    fc1.attrs["clip"] = [0, (1 << QM) - 1]
    layers.append(fc1)
    # fc2: int8 weights on the uint8 features -> int16 logits
    w4 = net.fc2.weight.detach().double().numpy()
    b4 = net.fc2.bias.detach().double().numpy()
    codes, wenc = quant_int8_per_channel(w4)
    s_in = fc1.out_enc.value_scale
    s_w = np.asarray(wenc.scale)
    fc2 = Layer("fc2", "dense", ["fc1"], {"acc_bits": 32, "requant": "float64"},
                out_enc=UniformAct(16, True, 1.0), weight=codes, weight_enc=wenc,
                bias=np.rint(b4 / (s_in * s_w)).astype(np.int64))
    probe = Model(name, (1, 8, 8), INPUT_ENC, layers + [fc2]).check()
    x_in = int_forward(Model(name, (1, 8, 8), INPUT_ENC, layers).check(), calib_codes)
    y = mac_acc(probe.layers[-1], x_in).numpy() * s_in * s_w
    fc2.out_enc, _, _ = output_policy(y)
    layers.append(fc2)
    metadata = dict(metadata, frac_bits={"fc1": f3, "fc2": -int(math.log2(fc2.out_enc.scale))})
    return Model(name, (1, 8, 8), INPUT_ENC, layers, sample_input=sample_codes, metadata=metadata).check()


# ============================================================================================ main steps

def storage_bits(e_bits):
    n = activation_elements()
    return sum(e_bits[k] * n[k] for k in n)


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
                    "(uniform 8-bit, k-means codebook, ENQ, KNQ, XNOR) plus the test set; then check each "
                    "model bit-exact (engine vs float64 reference) and print its accuracy measured by hwsim.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Example: python models/make_digits_models.py            (about 1-3 minutes on 2 cores)")
    ap.add_argument("--out-dir", default=str(HERE), help="where to write the files (default: this script's folder, models/)")
    ap.add_argument("--seed", type=int, default=0, help="split and training seed (default: %(default)s)")
    ap.add_argument("--epochs", type=int, default=60, help="float training epochs (default: %(default)s)")
    ap.add_argument("--threads", type=int, default=2, help="torch threads (default: %(default)s)")
    ap.add_argument("--tolerance", type=float, default=0.0025,
                    help="the ENQ/KNQ searches keep training-set accuracy within this of the uint8 model "
                         "(default: %(default)s)")
    ap.add_argument("--no-check", action="store_true", help="skip the final hwsim engine/reference check")
    args = ap.parse_args(argv)

    import torch
    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)
    t_start = time.perf_counter()
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    DigitsCNN, XnorCNN = torch_modules()

    x_tr, y_tr, x_te, y_te = load_data(args.seed)
    np.savez_compressed(out / "digits_test.npz", x=x_te.astype(np.float32), y=y_te.astype(np.int64))
    c_tr, c_te = input_codes(x_tr), input_codes(x_te)
    sample = c_te[:8].copy()
    log(f"digits: {len(x_tr)} train, {len(x_te)} test images")

    # ---------------------------------------------------------------- float CNN
    torch.manual_seed(args.seed)
    net = train(DigitsCNN(), x_tr, y_tr, args.epochs, 3e-3, args.seed, log_every=20, name="float CNN")
    float_acc = torch_accuracy(net, x_te, y_te)
    log(f"float CNN: test accuracy {float_acc:.4f}")
    params = cnn_params(net)
    results = {}

    def finish(key, model, extra_log=""):
        acc = accuracy(model, c_te, y_te)
        model.metadata["expected_hwsim_test_accuracy"] = round(acc, 4)
        path = out / f"lenet_digits_{key}.qnn"
        save_model(model, path)
        results[key] = (model, acc, path)
        log(f"{key}: test accuracy {acc:.4f} (integer model){extra_log}; wrote {path.name} "
            f"({path.stat().st_size} bytes)")
        return acc

    # ---------------------------------------------------------------- 8-bit uniform
    fracs = {}
    q8 = lambda lname, w: quant_int8_per_channel(w) + (None,)  # noqa: E731
    md = base_metadata(args, "8-bit uniform: int8 symmetric per-output-channel weights (scales with 8 "
                             "significant bits), int32 biases, uint8 activations with power-of-two scales 2^-F "
                             "(seed 004, F from the calibration max on the training set), int16 logits, "
                             "requant float64 (exact: every multiplier is exact in float64)", float_acc)
    u8, out_tr = build_cnn("lenet_digits_u8", params, q8, uniform_policy(fracs), c_tr, md, sample)
    u8.metadata["frac_bits"] = dict(fracs, fc2=-int(math.log2(u8.layers[-1].out_enc.scale)))
    acc_u8_train = calib_accuracy(u8, out_tr, y_tr)
    finish("u8", u8, f", train {acc_u8_train:.4f}")

    # ---------------------------------------------------------------- codebook (k-means + SIQ)
    siq_rounds, siq_epochs, siq_lr = 8, max(3, args.epochs // 10), 5e-4
    torch.manual_seed(args.seed + 1)
    cb_net = DigitsCNN()
    cb_net.load_state_dict(net.state_dict())
    for r in range(siq_rounds):       # seed 001 SIQ: k-means the weights, retrain from the quantized weights
        kmeans_weights_(cb_net)
        train(cb_net, x_tr, y_tr, siq_epochs, siq_lr, args.seed + 10 + r)
    kmeans_weights_(cb_net)           # final k-means: the shipped codebooks
    cb_float = torch_accuracy(cb_net, x_te, y_te)
    km_net = DigitsCNN()              # plain k-means (no SIQ) of the float weights, for comparison
    km_net.load_state_dict(net.state_dict())
    km_float = torch_accuracy(kmeans_weights_(km_net), x_te, y_te)
    log(f"codebook: float accuracy with 16 k-means levels per layer: plain {km_float:.4f}, after SIQ "
        f"{cb_float:.4f}")
    cb_fracs = {}
    md = base_metadata(args, "k-means codebook weights: 4-bit indices into one 16-entry table per layer of signed "
                             "8-bit fixed-point values (power-of-two scale per layer); centroids by Lloyd's k-means "
                             "(seed 000) with supervised iterative quantization (seed 001 SIQ: "
                             f"{siq_rounds} rounds of k-means + {siq_epochs} epochs of retraining from the quantized "
                             "weights, then a final k-means); uint8 activations 2^-F as the 8-bit model; int16 logits",
                       float_acc, {"float_test_accuracy_codebook_weights_siq": round(cb_float, 4),
                                   "float_test_accuracy_codebook_weights_plain_kmeans": round(km_float, 4),
                                   "siq": {"rounds": siq_rounds, "epochs_per_round": siq_epochs, "lr": siq_lr}})
    cb, _ = build_cnn("lenet_digits_codebook", cnn_params(cb_net), lambda lname, w: quant_codebook(w),
                      uniform_policy(cb_fracs), c_tr, md, sample)
    cb.metadata["frac_bits"] = dict(cb_fracs, fc2=-int(math.log2(cb.layers[-1].out_enc.scale)))
    finish("codebook", cb)

    # ---------------------------------------------------------------- ENQ: exhaustive search of E_i
    names = ["conv1", "conv2", "fc1"]
    best = None
    tol = args.tolerance
    t0 = time.perf_counter()
    cache = {}
    for combo in itertools.product(range(1, QM + 1), repeat=3):
        e_bits = dict(zip(names, combo))
        m, out_tr = build_cnn("lenet_digits_enq", params, q8, enq_policy(e_bits, fracs), c_tr, {}, None, cache)
        acc = calib_accuracy(m, out_tr, y_tr)
        if acc >= acc_u8_train - tol:
            key = (storage_bits(e_bits), -acc, combo)
            if best is None or key < best[0]:
                best = (key, e_bits, acc)
    e_bits, enq_train = best[1], best[2]
    log(f"ENQ search: {QM ** 3} combinations in {time.perf_counter() - t0:.1f} s; chose E = {e_bits} "
        f"(train accuracy {enq_train:.4f} vs uint8 {acc_u8_train:.4f})")
    md = base_metadata(args, "ENQ activations (seed 004): q_m = 8, F per layer as the 8-bit model, per-layer E_i "
                             "from an exhaustive search over E_i in 1..8 (all 512 combinations) for the least "
                             "activation storage (sum of E_i x stored activations) keeping training-set accuracy "
                             f"within {100 * tol:.2f} percentage points of the uint8 model; QE floors, half a "
                             "step 2^(q_m-E_i-1) is folded into the bias (round to nearest). Weights int8 per "
                             "channel as the 8-bit model.",
                       float_acc, {"enq_e_bits": e_bits, "qm_bits": QM, "frac_bits": fracs,
                                   "search": {"criterion": "min sum(E_i * activations_i) s.t. train acc >= "
                                                           f"uint8 train acc - {tol}",
                                              "uint8_train_accuracy": round(acc_u8_train, 4),
                                              "enq_train_accuracy": round(enq_train, 4)}})
    enq, _ = build_cnn("lenet_digits_enq", params, q8, enq_policy(e_bits, fracs), c_tr, md, sample)
    finish("enq", enq)

    # ---------------------------------------------------------------- KNQ: T in {3, 4} per layer
    best, cache = None, {}
    for combo in itertools.product((3, 4), repeat=3):
        t_bits = dict(zip(names, combo))
        m, out_tr = build_cnn("lenet_digits_knq", params, q8, knq_policy(t_bits, fracs), c_tr, {}, None, cache)
        acc = calib_accuracy(m, out_tr, y_tr)
        if acc >= acc_u8_train - tol:
            key = (storage_bits(t_bits), -acc, combo)
            if best is None or key < best[0]:
                best = (key, t_bits, acc)
    if best is None:
        t_bits = dict(zip(names, (4, 4, 4)))
        knq_train = None
    else:
        t_bits, knq_train = best[1], best[2]
    log(f"KNQ search: chose T = {t_bits} (train accuracy {knq_train})")
    md = base_metadata(args, "KNQ activations (seed 004): q_m = 8, F per layer as the 8-bit model; per layer 2^T_i "
                             "centroids by Lloyd k-means (simulator.units.knq.kmeans_centroids, k-means++ seed 0) on "
                             "the layer's post-ReLU training-set activations in fixed point, pre-saturated at "
                             "M = 2^q_m - 1; thresholds = centroids d_1.. (x -> k if d_k <= x < d_{k+1}); T_i in "
                             "{3, 4} chosen for the least storage keeping training accuracy within "
                             f"{100 * tol:.2f} percentage points of the uint8 model. Weights int8 per channel as "
                             "the 8-bit model.",
                       float_acc, {"knq_t_bits": t_bits, "qm_bits": QM, "frac_bits": fracs})
    knq, _ = build_cnn("lenet_digits_knq", params, q8, knq_policy(t_bits, fracs), c_tr, md, sample)
    finish("knq", knq)

    # ---------------------------------------------------------------- XNOR
    torch.manual_seed(args.seed + 2)
    xnet = XnorCNN()
    clip = [xnet.conv2.weight, xnet.fc1.weight]
    xnet = train(xnet, x_tr, y_tr, args.epochs * 2, 5e-3, args.seed + 2, clip_weights=clip, log_every=40,
                 name="XNOR CNN")
    xnor_float = torch_accuracy(xnet, x_te, y_te)
    log(f"XNOR CNN (float simulation of the binary net): test accuracy {xnor_float:.4f}")
    md = base_metadata(args, "XNOR-Net (seed 002): conv1 int8 (32@3x3) -> BN+sign folded into an integer threshold "
                             "-> binary; conv2 64@3x3 stride 2 XNOR-popcount (binary weights, alpha = mean|W| per "
                             "channel, padding +1) -> BN+sign -> binary; fc1 1024->128 XNOR-popcount -> BN folded "
                             "-> ReLU -> uint8 2^-F; fc2 int8 -> int16 logits. Trained with a straight-through "
                             "estimator (hardtanh gradient), latent weights clipped to [-1, 1]. Binary convention: "
                             "bit 1 = -1, sign(0) = +1.",
                       xnor_float, {"float_test_accuracy_note": "the float (STE) network already has binary "
                                                                "weights and activations",
                                    "float_cnn_test_accuracy": round(float_acc, 4)})
    xnor = build_xnor("lenet_digits_xnor", xnet, c_tr, md, sample)
    finish("xnor", xnor)

    summary = {k: {"file": p.name, "bytes": p.stat().st_size, "integer_test_accuracy": round(a, 4)}
               for k, (m, a, p) in results.items()}
    summary["float_cnn_test_accuracy"] = round(float_acc, 4)
    summary["xnor_float_test_accuracy"] = round(xnor_float, 4)
    log(json.dumps(summary, indent=1))
    log(f"training + quantization took {time.perf_counter() - t_start:.0f} s")

    if args.no_check:
        return 0
    return check(out, results, c_te, y_te)


def check(out, results, c_te, y_te):
    """hwsim's own engine vs its float64 reference on the whole test set, and accuracy by the engine."""
    try:
        from simulator.engine import Engine
        from simulator.qnn.model_io import load_model
        from simulator.validate import compare
    except ImportError as exc:
        log(f"CHECK SKIPPED: cannot import the hwsim engine ({exc})")
        return 2
    ok = True
    log(f"\n{'model':<32} {'bit-exact':>9} {'hwsim acc':>9} {'expected':>9}")
    for key, (_, expected, path) in results.items():
        model = load_model(path)
        engine = Engine(model)
        val = compare(engine, c_te)
        res = engine.run(c_te)
        pred = model.layers[-1].out_enc.decode(res.output).argmax(axis=1)
        acc = float((pred == y_te).mean())
        # the engine must also reproduce this script's own integer model output for output, code for code
        same = abs(acc - expected) < 1e-12 and np.array_equal(res.output, int_forward(model, c_te))
        ok &= val.passed and same
        log(f"{path.name:<32} {str(val.passed):>9} {acc:>9.4f} {expected:>9.4f}"
            + ("" if val.passed else f"  first divergent layer: {val.first_divergent}")
            + ("" if same else "  (engine disagrees with the script's integer model)"))
    log("all models bit-exact" if ok else "CHECK FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
