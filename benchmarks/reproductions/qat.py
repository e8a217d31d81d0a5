"""Quantization-aware training for seed 002's ternary / binary weights, with exactly hwsim's formulas.

Forward quantizers (torch, the same formulas as simulator.quant.weights):
  twn    Delta = 0.7 * mean|w| (per layer); alpha = mean |w_i| over |w_i| > Delta; q = alpha * sign(w) * [|w| > Delta]
         (`twn_ternary`)
  hwang  D* = S_n* / n*, n* = argmax_n S_n^2 / n over the magnitudes sorted descending (S_n their prefix sums:
         the exact L2-optimal ternary step, `hwang_ternary`); q = D* * sign(w) * [|w| >= D*/2]
  xnor   alpha_c = mean |w_c| per output channel; q = alpha_c * (+1 if w >= 0 else -1)   (`xnor_binary`)
The gradient passes straight through (q = w + (Q(w) - w).detach(): the STE of TWN / XNOR-Net; the scale gets no
gradient). Only the middle layers (conv2, fc1) are quantized, as `hwsim quantize` keeps the first and last
layers at 8 bits by default.

Binary activations (XNOR-Net, `--acts binary`), matching what hwsim's pipeline does with a ReLU before a binary
tensor (pipeline.py `_fused_clip`: a binary output takes no clip, so the ReLU is dropped and the stored tensor is
sign of the producing layer's pre-activation, sign(0) = +1; BinaryAct): conv1 -> sign -> maxpool ->
conv2 (zero padding: the pipeline sets `binary_pad: zero` on a conv reading a binary tensor, as the float
model pads with zeros) -> sign -> maxpool -> flatten -> fc1 -> ReLU (fc1's output
is read by the 8-bit last layer, so it stays uniform 8-bit with its ReLU) -> fc2. The sign's gradient is
the hard-tanh STE (1 where |x| <= 1).

hwsim scales a binary tensor by beta = mean|X| (`xnor_beta`) of the values the binarized pre-activation takes on
the calibration set in the network quantized so far (the pipeline's sequential calibration); the torch model here
trains scale-free (beta = 1), and `export_qat` rescales the biases downstream of each binary tensor by the beta
hwsim computes for it (b <- beta * b; read from `Quantizer`'s calibration of the exported model, one binary
tensor at a time, since conv2's beta is measured after conv1's has been folded in) so the integer engine's signs
and argmax do not depend on beta: conv2's sign(beta1 * (alpha * dot) + beta1 * t) = sign(alpha * dot + t), and
the logits are beta2 * (torch logits).
"""

from __future__ import annotations

import numpy as np


def _ste(w, q):
    return w + (q - w).detach()


def q_twn(w):
    import torch
    a = w.detach().abs()
    delta = 0.7 * a.mean()
    big = a > delta
    alpha = a[big].mean() if bool(big.any()) else torch.tensor(1.0)
    return _ste(w, alpha * torch.sign(w.detach()) * big)


def q_hwang(w):
    import torch
    a = w.detach().abs().flatten()
    s = torch.sort(a, descending=True).values.double()
    prefix = torch.cumsum(s, 0)
    n = torch.arange(1, len(s) + 1, dtype=torch.float64)
    best = int(torch.argmax(prefix ** 2 / n))
    step = float(prefix[best] / n[best])
    q = step * torch.sign(w.detach()) * (w.detach().abs() >= step / 2)
    return _ste(w, q)


def q_xnor(w):
    import torch
    alpha = w.detach().abs().flatten(1).mean(1).view((-1,) + (1,) * (w.dim() - 1))
    return _ste(w, alpha * torch.where(w.detach() >= 0, 1.0, -1.0))


QUANT = {"twn": q_twn, "hwang": q_hwang, "xnor": q_xnor}


def sign_ste(x):
    import torch
    s = torch.where(x >= 0, 1.0, -1.0)
    g = torch.clamp(x, -1.0, 1.0)                  # hard-tanh: gradient 1 where |x| <= 1
    return g + (s - g).detach()


def lenet_forward(net, x, quant, binary_acts, pad):
    import torch.nn.functional as F
    q = QUANT[quant] if quant else (lambda w: w)
    w2, w3 = q(net.conv2.weight), q(net.fc1.weight)
    h = F.conv2d(x, net.conv1.weight, net.conv1.bias, padding=pad)
    if binary_acts:
        h = F.max_pool2d(sign_ste(h), 2)
        h = F.max_pool2d(sign_ste(F.conv2d(h, w2, net.conv2.bias, padding=pad)), 2)
    else:
        h = F.max_pool2d(F.relu(h), 2)
        h = F.max_pool2d(F.relu(F.conv2d(h, w2, net.conv2.bias, padding=pad)), 2)
    h = F.relu(F.linear(h.flatten(1), w3, net.fc1.bias))
    return net.fc2(h)


def hwsim_betas(path, rec, calib_x) -> dict:
    """{binary tensor: beta} that `hwsim quantize` with recipe `rec`, calibrated on calib_x, gives the model at
    `path` (the pipeline's own calibration, so the export folds in exactly the betas the engine will use)."""
    from common import read_fg
    from simulator.encodings import BinaryAct
    from simulator.quant.pipeline import Quantizer
    q = Quantizer(read_fg(path), rec, np.asarray(calib_x, dtype=np.float64))
    return {t: e.scale for t, e in q.plan.encodings.items() if isinstance(e, BinaryAct)}


def export_qat(net, dataset, path, calib_x, binary_acts=False, bake=False, quant=None, rec=None):
    """Export the QAT network as a float ONNX: latent float weights (bake=False; hwsim's quantizer makes the
    ternary/binary values itself) or the quantized values (bake=True; hwsim's quantizers are idempotent on
    them). With binary_acts the biases downstream of each binary tensor are multiplied by hwsim's beta of that
    tensor under recipe `rec` (see the module docstring). Returns the betas used."""
    import copy

    import torch

    from common import export_onnx, lenet

    plain = lenet(dataset)
    plain.load_state_dict(net.state_dict())
    if bake:
        with torch.no_grad():
            for mod in (plain.conv2, plain.fc1):
                mod.weight.copy_(QUANT[quant](mod.weight))
    betas = {}
    if binary_acts:
        if rec is None:
            raise ValueError("binary_acts needs the hwsim recipe (rec) whose betas are folded into the biases")
        tmp = path.with_suffix(".tmp.onnx")
        export_onnx(plain, dataset, tmp)
        b = hwsim_betas(tmp, rec, calib_x)
        conv1, conv2 = list(b)               # the two binary tensors (conv1's and conv2's outputs), network order
        beta1 = b[conv1]
        with torch.no_grad():
            plain.conv2.bias.mul_(beta1)
        export_onnx(plain, dataset, tmp)
        b = hwsim_betas(tmp, rec, calib_x)
        assert b[conv1] == beta1          # conv1's beta does not depend on conv2's bias
        beta2 = b[conv2]
        with torch.no_grad():
            plain.fc1.bias.mul_(beta2)
            plain.fc2.bias.mul_(beta2)
        export_onnx(plain, dataset, tmp)
        assert hwsim_betas(tmp, rec, calib_x) == {conv1: beta1, conv2: beta2}
        tmp.unlink()
        betas = {"beta_conv1_out": beta1, "beta_conv2_out": beta2}
    export_onnx(copy.deepcopy(plain), dataset, path)
    return betas
