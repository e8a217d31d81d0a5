"""Random valid models for property tests: every op, weight encoding and activation encoding.

Scales are powers of two, so the float64 reference is exact and float64 / float32 / shift requantization must
agree with it bit for bit. `requant` picks the mode of every layer.
"""

from __future__ import annotations

import numpy as np

from simulator.encodings import (BinaryAct, BinaryW, CodebookW, EnqAct, KnqAct, Pow2W, TernaryW, UniformAct,
                                 UniformW)
from simulator.graph import Layer, Model


def pow2(rng, lo, hi):
    return 2.0 ** int(rng.integers(lo, hi + 1))


def random_act_enc(rng, allow_binary=True):
    kinds = ["uniform", "uniform_zp", "enq", "knq"] + (["binary"] if allow_binary else [])
    kind = kinds[rng.integers(len(kinds))]
    if kind == "uniform":
        bits = int(rng.integers(2, 9))
        return UniformAct(bits, False, pow2(rng, -6, 0), 0)
    if kind == "uniform_zp":
        bits = int(rng.integers(3, 9))
        signed = bool(rng.integers(2))
        lo = -(1 << (bits - 1)) if signed else 0
        zp = int(rng.integers(lo, lo + (1 << bits)))
        return UniformAct(bits, signed, pow2(rng, -6, 0), zp)
    if kind == "enq":
        qm = int(rng.integers(2, 10))
        return EnqAct(int(rng.integers(1, qm + 1)), qm, int(rng.integers(0, 6)))
    if kind == "knq":
        t = int(rng.integers(1, 4))
        cents = np.sort(rng.choice(np.arange(0, 300), size=1 << t, replace=False))
        return KnqAct(t, tuple(int(c) for c in cents), (), int(rng.integers(0, 6)))
    return BinaryAct(pow2(rng, -2, 1))


def random_weight(rng, shape, in_binary):
    co = shape[0]
    kinds = ["uniform", "uniform_zp", "codebook", "ternary", "binary", "pow2"]
    kind = "binary" if in_binary and rng.integers(2) else kinds[rng.integers(len(kinds))]
    per_channel = bool(rng.integers(2))
    scales = tuple(pow2(rng, -8, -1) for _ in range(co if per_channel else 1))
    if kind in ("uniform", "uniform_zp"):
        bits = int(rng.integers(2, 9))
        lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
        zp = (0,) if kind == "uniform" else tuple(int(rng.integers(max(lo, -2), min(hi, 2) + 1))
                                                  for _ in range(co if per_channel else 1))
        return UniformW(bits, True, scales, zp), rng.integers(lo, hi + 1, size=shape), None
    if kind == "codebook":
        index_bits = int(rng.integers(1, 5))
        group_size = int(rng.integers(0, co + 1))
        enc = CodebookW(index_bits, 8, group_size, (scales[0],))
        groups = enc.n_groups(co)
        entries = int(rng.integers(1, (1 << index_bits) + 1))
        table = rng.integers(-128, 128, size=(groups, entries))
        return enc, rng.integers(0, entries, size=shape), table
    if kind == "ternary":
        return TernaryW(scales), rng.integers(-1, 2, size=shape), None
    if kind == "binary":
        return BinaryW(scales), rng.integers(0, 2, size=shape), None
    bits = int(rng.integers(2, 5))
    return Pow2W(bits, scales), rng.integers(-(1 << (bits - 1)), 1 << (bits - 1), size=shape), None


def random_model(seed: int, requant=("float64", "float32", "shift"), sample=True) -> Model:
    rng = np.random.default_rng(seed)
    c, h, w = int(rng.integers(1, 4)), int(rng.integers(3, 8)), int(rng.integers(3, 8))
    input_enc = UniformAct(8, False, pow2(rng, -8, -4), 0) if rng.integers(4) else BinaryAct(1.0)
    layers, shape, enc, name = [], (c, h, w), input_enc, "input"
    n_layers = int(rng.integers(1, 5))
    for i in range(n_layers):
        op = rng.choice(["conv2d", "conv2d", "maxpool", "avgpool", "relu", "add", "concat"])
        if op in ("maxpool", "avgpool") and min(shape[1:]) < 2:
            op = "conv2d"
        if op in ("avgpool", "relu", "add") and isinstance(enc, BinaryAct):
            op = "conv2d"
        lname = f"l{i}"
        if op == "conv2d":
            groups = int(rng.choice([g for g in (1, 2, shape[0]) if shape[0] % g == 0]))
            co = groups * int(rng.integers(1, 4))
            kh, kw = int(rng.integers(1, min(3, shape[1]) + 1)), int(rng.integers(1, min(3, shape[2]) + 1))
            pads = [int(rng.integers(0, k)) for k in (kh, kw, kh, kw)]
            wenc, wcodes, table = random_weight(rng, (co, shape[0] // groups, kh, kw), isinstance(enc, BinaryAct))
            out_enc = random_act_enc(rng)
            attrs = {"stride": [int(rng.integers(1, 3)), int(rng.integers(1, 3))],
                     "padding": [pads[0], pads[1], pads[2], pads[3]], "groups": groups,
                     "requant": str(rng.choice(requant)), "acc_bits": 32}
            if isinstance(enc, BinaryAct):
                attrs["binary_pad"] = str(rng.choice(["+1", "-1", "zero"]))
            elif rng.integers(2):
                lo, hi = enc.code_range()
                attrs["pad_code"] = int(rng.integers(lo, hi + 1))
            if not isinstance(out_enc, BinaryAct) and rng.integers(2):
                attrs["clip"] = [0, int(rng.integers(1, 300))]
            bias = rng.integers(-500, 500, size=co) if rng.integers(2) else None
            lay = Layer(lname, "conv2d", [name], attrs, out_enc, wcodes, wenc, table, bias, 16)
        elif op == "maxpool":
            lay = Layer(lname, "maxpool", [name], {"kernel": [2, 2], "stride": [int(rng.integers(1, 3))] * 2})
        elif op == "avgpool":
            lay = Layer(lname, "avgpool", [name], {"kernel": [2, 2], "stride": [1, 1], "padding": [1, 1, 0, 0],
                                                   "rounding": str(rng.choice(["floor", "half_up", "half_even",
                                                                               "half_away", "trunc"])),
                                                   "count_include_pad": bool(rng.integers(2))})
        elif op == "relu":
            lay = Layer(lname, "relu", [name])
        elif op == "add":
            # a residual branch: a 1x1 conv back to the same shape, added to the trunk
            branch_enc = random_act_enc(rng, allow_binary=False)
            wenc, wcodes, table = random_weight(rng, (shape[0], shape[0], 1, 1), False)
            layers.append(Layer(lname + "b", "conv2d", [name], {"requant": "float64"}, branch_enc, wcodes, wenc,
                                table))
            out_enc = UniformAct(8, bool(rng.integers(2)), pow2(rng, -4, 0), 0)
            lay = Layer(lname, "add", [name, lname + "b"], {"requant": str(rng.choice(requant))}, out_enc)
        else:
            lay = Layer(lname, "concat", [name, name])
        layers.append(lay)
        model = Model("random", (c, h, w), input_enc, list(layers))
        model.check()
        shape, enc, name = lay.out_shape, lay.out_enc, lname
    layers.append(Layer("flat", "flatten", [name]))
    k = int(np.prod(shape))
    wenc, wcodes, table = random_weight(rng, (int(rng.integers(1, 5)), k), isinstance(enc, BinaryAct))
    layers.append(Layer("fc", "dense", ["flat"], {"requant": str(rng.choice(requant))},
                        UniformAct(8, True, pow2(rng, -4, 0), 0), wcodes, wenc, table,
                        rng.integers(-100, 100, size=wcodes.shape[0]), 32))
    sample_input = None
    if sample:
        lo, hi = input_enc.code_range()
        sample_input = rng.integers(lo, hi + 1, size=(int(rng.integers(1, 4)), c, h, w))
    return Model("random", (c, h, w), input_enc, layers, sample_input=sample_input,
                 metadata={"seed": seed}).check()
