"""The x86 int16 pair-saturation datapath (kernels/pairsat.py, graph attr `datapath: x86_pair_sat16`).

numba kernel == plain reference kernel == an independent big-int model written here from the semantics, at the
edges of the u8 x s8 ranges; then the graph checks, the engine, validate, the .qnn round trip, and (when
qemu-x86_64 is installed) real ONNX Runtime on an emulated CPU without VNNI.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from itertools import product
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from simulator import report
from simulator.encodings import UniformAct, UniformW
from simulator.engine import Engine
from simulator.errors import HwsimError
from simulator.graph import Layer, Model
from simulator.kernels import codes_path, pairsat
from simulator.kernels.im2col import conv_geometry
from simulator.validate import compare

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
ROOT = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------------------------------------
# An independent model: an explicit NHWC im2col row per output, Python ints, pairs folded left to right
# ----------------------------------------------------------------------------------------------------------
def fold(values, bits, policy):
    lo, hi = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    acc, left = None, False
    for v in values:
        acc = v if acc is None else acc + v
        if not lo <= acc <= hi:
            left = True
            acc = min(max(acc, lo), hi) if policy == "saturate" else (acc - lo) % 2 ** bits + lo
    return acc, left


def bigint_conv(x, w, zx, zw, bias, stride, pad, groups, pad_code, bits, policy):
    n_, ci, h, wd = x.shape
    co, cig, kh, kw = w.shape
    top, left, bottom, right = pad
    zw = [int(z) for z in np.broadcast_to(np.asarray(zw).reshape(-1), (co,))]
    ho, wo = (h + top + bottom - kh) // stride[0] + 1, (wd + left + right - kw) // stride[1] + 1
    out = np.zeros((n_, co, ho, wo), np.int64)
    over = pairs = outs = 0
    for n, o, i, j in product(range(n_), range(co), range(ho), range(wo)):
        g0 = (o // (co // groups)) * cig
        row, wrow = [], []                       # the im2col row: kernel row, kernel column, channel innermost
        for a, b, c in product(range(kh), range(kw), range(cig)):
            r, s = i * stride[0] + a - top, j * stride[1] + b - left
            row.append(int(x[n, g0 + c, r, s]) if 0 <= r < h and 0 <= s < wd else int(pad_code))
            wrow.append(int(w[o, c, a, b]))
        prods = [p * q for p, q in zip(row, wrow)] + [0]     # MLAS pads K with a zero product
        sums = [prods[k] + prods[k + 1] for k in range(0, len(row), 2)]
        clamped = [min(max(s, -32768), 32767) for s in sums]
        sat = sum(c != s for c, s in zip(clamped, sums))
        corr = sum((p - zx) * (q - zw[o]) for p, q in zip(row, wrow)) - sum(prods)   # exact zero-point terms
        out[n, o, i, j], left_range = fold([0 if bias is None else int(bias[o])] + clamped + [corr], bits, policy)
        over += left_range
        pairs += sat
        outs += sat > 0
    return out, over, pairs, outs


def assert_same(a, b):
    assert a[0].dtype == np.int64 and a[0].shape == b[0].shape
    np.testing.assert_array_equal(a[0], b[0])
    assert tuple(a[1:]) == tuple(b[1:])


# codes drawn mostly from the edges of the ranges (255 x -128 pairs, 254/1 neighbours, zeros)
x_codes = st.one_of(st.sampled_from([0, 1, 2, 127, 128, 253, 254, 255]), st.integers(0, 255))
w_codes = st.one_of(st.sampled_from([-128, -127, -126, -1, 0, 1, 2, 125, 126, 127]), st.integers(-128, 127))


@st.composite
def conv_cases(draw):
    groups = draw(st.integers(1, 2))
    cig, cog = draw(st.integers(1, 4)), draw(st.integers(1, 3))
    kh, kw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    h, w_ = kh + draw(st.integers(0, 3)), kw + draw(st.integers(0, 3))
    pad = tuple(draw(st.integers(0, k - 1)) for k in (kh, kw, kh, kw))
    stride = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    n = draw(st.integers(1, 2))
    x = np.array(draw(st.lists(x_codes, min_size=n * cig * groups * h * w_, max_size=n * cig * groups * h * w_)),
                 np.uint8).reshape(n, cig * groups, h, w_)
    size = cog * groups * cig * kh * kw
    w = np.array(draw(st.lists(w_codes, min_size=size, max_size=size)), np.int8).reshape(cog * groups, cig, kh, kw)
    zx = draw(st.integers(0, 255))
    zw = draw(st.one_of(st.integers(-128, 127), st.lists(st.integers(-128, 127), min_size=cog * groups,
                                                          max_size=cog * groups)))
    bias = draw(st.one_of(st.none(), st.lists(st.integers(-(2 ** 20), 2 ** 20), min_size=cog * groups,
                                              max_size=cog * groups)))
    bias = None if bias is None else np.array(bias, np.int32)
    bits = draw(st.sampled_from([12, 16, 18, 24, 32, 64]))
    policy = draw(st.sampled_from(["wrap", "saturate"]))
    return (x, w, zx, np.asarray(zw), bias, stride, pad, groups, draw(x_codes), bits, policy)


@SETTINGS
@given(conv_cases())
def test_conv_kernel_equals_reference_and_bigint(case):
    fast = pairsat.conv2d_pairsat_acc(*case)
    assert_same(fast, pairsat.conv2d_pairsat_reference(*case))
    assert_same(fast, bigint_conv(*case))


@SETTINGS
@given(st.data())
def test_dense_kernel_equals_reference_and_bigint(data):
    n, k, co = data.draw(st.integers(1, 3)), data.draw(st.integers(1, 9)), data.draw(st.integers(1, 4))
    x = np.array(data.draw(st.lists(x_codes, min_size=n * k, max_size=n * k)), np.uint8).reshape(n, k)
    w = np.array(data.draw(st.lists(w_codes, min_size=co * k, max_size=co * k)), np.int8).reshape(co, k)
    zx, zw = data.draw(st.integers(0, 255)), np.array(data.draw(st.lists(st.integers(-128, 127), min_size=co,
                                                                          max_size=co)))
    bits, policy = data.draw(st.sampled_from([16, 20, 32])), data.draw(st.sampled_from(["wrap", "saturate"]))
    fast = pairsat.dense_pairsat_acc(x, w, zx, zw, None, bits, policy)
    assert_same(fast, pairsat.dense_pairsat_reference(x, w, zx, zw, None, bits, policy))
    big = bigint_conv(x.T[None, :, None, :], w[:, :, None, None], zx, zw, None, (1, 1), (0, 0, 0, 0), 1, 0, bits,
                      policy)
    assert_same(fast, (np.ascontiguousarray(big[0][0, :, 0, :].T),) + big[1:])


# ----------------------------------------------------------------------------------------------------------
# The edges, one pair at a time (dense, K = 2 or 3, zero points 0, 32-bit accumulator)
# ----------------------------------------------------------------------------------------------------------
@SETTINGS
@given(conv_cases())
def test_exact_sums_plus_saturating_pairs_equal_the_kernel(case):
    """The engine's fast route: exact sums (here numpy int64) + add_pair_saturation == the sequential kernel,
    wherever no accumulator can overflow (64-bit accumulators here)."""
    x, w, zx, zw, bias, stride, pad, groups, pad_code, _, policy = case
    want = pairsat.conv2d_pairsat_acc(x, w, zx, zw, bias, stride, pad, groups, pad_code, 64, policy)
    g = conv_geometry(x.shape, w.shape, stride, pad, groups)
    xp = np.full((g.n, g.ci, g.top + g.h + g.bottom, g.left + g.w + g.right), pad_code, np.int64)
    xp[:, :, g.top:g.top + g.h, g.left:g.left + g.w] = x
    zwc = np.broadcast_to(np.asarray(zw, np.int64).reshape(-1), (g.co,))
    acc = np.zeros((g.n, g.co, g.ho, g.wo), np.int64) + (0 if bias is None else bias.astype(np.int64)[:, None, None])
    for o in range(g.co):
        c0 = (o // g.cog) * g.cig
        for a, b, c in product(range(g.kh), range(g.kw), range(g.cig)):
            win = xp[:, c0 + c, a:a + g.sh * (g.ho - 1) + 1:g.sh, b:b + g.sw * (g.wo - 1) + 1:g.sw]
            acc[:, o] += (win - zx) * (int(w[o, c, a, b]) - zwc[o])
    counted = pairsat.add_pair_saturation(acc.copy(), x, pairsat.saturating_pairs(w), g, pad_code, apply=False)
    flushed = acc.copy()   # the kernel's narrow counters flushed after every pair or two (FLUSH is 32,767)
    got_flushed = pairsat.add_pair_saturation(flushed, x, pairsat.saturating_pairs(w), g, pad_code,
                                              _flush=1 + int(x.sum()) % 2)
    got = pairsat.add_pair_saturation(acc, x, pairsat.saturating_pairs(w), g, pad_code)
    np.testing.assert_array_equal(acc, want[0])
    np.testing.assert_array_equal(flushed, want[0])
    assert got == tuple(want[2:]) == got_flushed
    assert counted == got


@SETTINGS
@given(seed=st.integers(0, 2**32 - 1))
def test_pointwise_counts_over_the_whole_batch_equal_the_kernel(seed):
    """Counting only on a 1x1 conv runs the batch as one image (add_pair_saturation): the same counts as the
    sequential kernel, channel maxima that differ from image to image included."""
    rng = np.random.default_rng(seed)
    n, groups, cig, cog = int(rng.integers(2, 5)), int(rng.integers(1, 3)), 2 * int(rng.integers(1, 5)), \
        int(rng.integers(1, 6))
    x = rng.choice([0, 1, 100, 128, 200, 254, 255], (n, groups * cig, int(rng.integers(1, 4)),
                                                    int(rng.integers(1, 6)))).astype(np.uint8)
    x[0] = np.minimum(x[0], 60)   # an image none of whose codes reach most thresholds
    w = rng.choice([-128, -127, -100, -1, 0, 1, 90, 126, 127], (groups * cog, cig, 1, 1)).astype(np.int8)
    g = conv_geometry(x.shape, w.shape, (1, 1), (0, 0, 0, 0), groups)
    want = pairsat.conv2d_pairsat_acc(x, w, 0, 0, None, (1, 1), (0, 0, 0, 0), groups, 0, 64, "wrap")
    acc = np.zeros((g.n, g.co, g.ho, g.wo), np.int64)
    assert pairsat.add_pair_saturation(acc, x, pairsat.saturating_pairs(w), g, 0, apply=False) == tuple(want[2:])
    assert not acc.any()


@SETTINGS
@given(conv_cases())
def test_pair_saturating_kernel_step_equals_the_kernel(case):
    """codes_path.conv2d_sum_u8(pair_saturating=True) (vpmaddubsw, or its generic IR) == the sequential kernel
    on raw codes where the canvas's pairs are MLAS's (even channels per group)."""
    x, w, _, _, bias, stride, pad, groups, pad_code, _, _ = case
    assume(w.shape[1] % 2 == 0)
    g = conv_geometry(x.shape, w.shape, stride, pad, groups)
    got = codes_path.conv2d_sum_u8(x, 0, 0, w, bias, g, pad_code, 128, np.int64, pair_saturating=True)
    want = pairsat.conv2d_pairsat_acc(x, w, 0, 0, bias, stride, pad, groups, pad_code, 64, "wrap")[0]
    np.testing.assert_array_equal(got, want)


def test_pair_saturating_step_generic_ir(tmp_path):
    """The generic IR of the pair-saturating step (llvm.sadd.sat; what runs off x86) gives the same sums:
    compiled in a fresh process with the x86 instructions switched off and its own numba cache."""
    code = (
        "import numpy as np\n"
        "import simulator.kernels.im2col as im2col\n"
        "im2col.PMADDUBSW = False\n"
        "from simulator.kernels import codes_path, pairsat\n"
        "rng = np.random.default_rng(3)\n"
        "x = rng.choice([0, 1, 128, 254, 255], (2, 8, 7, 7)).astype(np.uint8)\n"
        "w = rng.choice([-128, -127, -1, 0, 1, 64, 126, 127], (5, 8, 3, 3)).astype(np.int8)\n"
        "g = im2col.conv_geometry(x.shape, w.shape, (1, 2), (1, 0, 2, 1), 1)\n"
        "got = codes_path.conv2d_sum_u8(x, 0, 0, w, None, g, 200, 128, np.int64, pair_saturating=True)\n"
        "want, _, pairs, _ = pairsat.conv2d_pairsat_acc(x, w, 0, 0, None, (1, 2), (1, 0, 2, 1), 1, 200, 64, 'wrap')\n"
        "assert pairs > 0 and np.array_equal(got, want), 'generic IR differs'\n"
        "print('ok')\n")
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path)}
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT)
    assert run.returncode == 0 and run.stdout.strip() == "ok", run.stderr[-2000:]


def test_saturating_pairs_are_exactly_those_that_can_saturate():
    """Every weight pair: listed iff some u8 pair (x_a, x_b) makes its int16 sum saturate (brute force)."""
    w = np.array([[[[127, 2]]], [[[64, 64]]], [[[65, 64]]], [[[-65, -64]]], [[[-64, -64]]], [[[-128, -1]]],
                  [[[127, -128]]], [[[0, 127]]], [[[-128, -128]]]], np.int8).transpose(0, 3, 1, 2)   # [9, 2, 1, 1]
    sp = pairsat.saturating_pairs(w)
    listed = np.diff(sp.ptr) > 0
    xs = np.arange(256)
    for o in range(w.shape[0]):
        p = xs[:, None] * int(w[o, 0, 0, 0]) + xs[None, :] * int(w[o, 1, 0, 0])
        can = bool(((p > 32767) | (p < -32768)).any())
        assert listed[o] == can, (o, w[o].ravel())


def test_per_image_filter_keeps_a_pair_whose_code_just_reaches_its_threshold():
    """Weights (127, 127): the pair saturates from x_a = 4 with x_b = 255 (4·127 + 255·127 = 32,893) and not at
    x_a = 3 (32,766). An image whose channel maximum is exactly 4 must still be scanned (the per-image filter)."""
    w = np.zeros((1, 2, 1, 1), np.int8)
    w[0, :, 0, 0] = 127
    sp = pairsat.saturating_pairs(w)
    assert sp.x_min.tolist() == [[4, 4]]
    for top, want in ((4, 1), (3, 0)):
        x = np.zeros((1, 2, 1, 3), np.uint8)
        x[0, 0] = [[top, 0, 1]]
        x[0, 1] = 255
        g = conv_geometry(x.shape, w.shape, (1, 1), (0, 0, 0, 0), 1)
        acc = np.zeros((1, 1, 1, 3), np.int64)
        assert pairsat.add_pair_saturation(acc, x, sp, g, 0) == (want, want)
        assert acc[0, 0, 0, 0] == (32767 - (top * 127 + 255 * 127) if want else 0)


def test_engine_fast_route_equals_the_sequential_kernel():
    """Random pair-saturating models: the fast route (exact sums + correction, fused epilogue) against the
    same engine forced onto the sequential kernel: every tensor and every trace field equal."""
    rng = np.random.default_rng(7)
    for seed in range(8):
        model = make_model(seed=seed)
        if seed >= 6:   # odd channels per group: MLAS's pairs cross kernel taps, the canvas's do not
            c1 = model.layers[0]
            w = np.random.default_rng(seed).integers(-128, 128, (8, 3, 3, 3))
            model = Model("pairsat_odd", (3, 5, 5), model.input_enc,
                          [Layer("c1", "conv2d", ["input"], dict(c1.attrs), c1.out_enc, w, c1.weight_enc,
                                 bias=c1.bias), *model.layers[1:]]).check()
        x = rng.integers(0, 256, (5,) + tuple(model.input_shape))
        fast = Engine(model)
        assert all(fast.plans[n].from_codes is not None for n in ("c1", "d"))
        slow = Engine(model)
        for n in ("c1", "d"):
            slow.plans[n].from_codes = None
        a, b = fast.run(x, keep_all=True), slow.run(x, keep_all=True)
        for name in a.tensors:
            np.testing.assert_array_equal(np.asarray(a.tensors[name], np.int64), np.asarray(b.tensors[name], np.int64))
        for la, lb in zip(a.trace.layers, b.trace.layers):
            assert la == lb
        assert a.trace.layers[0].pair_saturations > 0


@pytest.mark.parametrize("x, w, acc, saturated", [
    ([255, 255], [-128, -128], -32768, 1),      # -65280: the most negative pair, saturates
    ([255, 255], [127, 127], 32767, 1),         # 64770: the most positive pair
    ([254, 255], [127, 2], 32767, 1),           # 32768: saturates by one
    ([255, 191], [127, 2], 32767, 0),           # 32767 exactly: no saturation
    ([255, 1], [-128, -128], -32768, 0),        # -32768 exactly: no saturation
    ([255, 2], [-128, -128], -32768, 1),        # -32896
    ([255, 255], [127, -128], -255, 0),         # opposite signs never saturate
    ([255, 255, 255], [-128, -128, -128], -32768 - 32640, 1),   # odd K: the lone last product never saturates
    ([255, 255, 255, 255], [127, 127, -128, -128], 32767 - 32768, 2),  # both signs saturate: -1, exact is -510
    ([254, 255, 255, 3], [127, 2, -128, -43], -1, 2),   # 32768 + (-32769): the two errors cancel exactly
])
def test_edge_pairs(x, w, acc, saturated):
    args = (np.array([x], np.uint8), np.array([w], np.int8), 0, 0, None, 32, "wrap")
    for kernel in (pairsat.dense_pairsat_acc, pairsat.dense_pairsat_reference):
        out, over, pairs, outs = kernel(*args)
        assert int(out[0, 0]) == acc and over == 0 and pairs == saturated and outs == (saturated > 0)
    exact = sum(a * b for a, b in zip(x, w))
    assert (acc == exact) == (saturated == 0 or w == [127, 2, -128, -43])


def test_pairs_follow_the_nhwc_order_across_kernel_taps():
    # 3 input channels, 1x2 kernel: K = 6 in the order (kw0: c0 c1 c2) (kw1: c0 c1 c2); the pairs are
    # (kw0 c0, kw0 c1), (kw0 c2, kw1 c0), (kw1 c1, kw1 c2): only the middle one joins two taps.
    x = np.full((1, 3, 1, 2), 255, np.uint8)
    w = np.zeros((1, 3, 1, 2), np.int8)
    w[0, 2, 0, 0] = w[0, 0, 0, 1] = -128            # the tap-spanning pair: -65280 -> -32768
    acc, _, pairs, outs = pairsat.conv2d_pairsat_acc(x, w, 0, 0, None, (1, 1), (0, 0, 0, 0), 1, 0, 32, "wrap")
    assert int(acc[0, 0, 0, 0]) == -32768 and pairs == 1 and outs == 1
    w2 = np.zeros_like(w)
    w2[0, 0, 0, 0] = w2[0, 0, 0, 1] = -128          # same channel, two taps: different pairs, exact
    acc, _, pairs, _ = pairsat.conv2d_pairsat_acc(x, w2, 0, 0, None, (1, 1), (0, 0, 0, 0), 1, 0, 32, "wrap")
    assert int(acc[0, 0, 0, 0]) == -65280 and pairs == 0


def test_padding_holds_the_pad_code_and_zero_points_are_exact():
    # a 1x1 input padded to 3x3 with pad code 255: the padded taps saturate like real ones
    x = np.full((1, 2, 1, 1), 10, np.uint8)
    w = np.full((1, 2, 3, 3), -128, np.int8)
    args = (x, w, 200, -100, None, (1, 1), (1, 1, 1, 1), 1, 255, 32, "wrap")
    fast = pairsat.conv2d_pairsat_acc(*args)
    assert_same(fast, pairsat.conv2d_pairsat_reference(*args))
    assert_same(fast, bigint_conv(*args))
    assert fast[2] == 8  # pairs of two padded 255s (4 taps x 2 channels: 8 pairs) saturate; the centre does not


def test_seven_bit_weights_never_saturate():
    rng = np.random.default_rng(3)
    x = rng.integers(0, 256, (2, 6, 5, 5)).astype(np.uint8)
    w = rng.integers(-64, 64, (4, 6, 3, 3)).astype(np.int8)   # reduce_range: |255·w_a + 255·w_b| <= 32640
    acc, _, pairs, _ = pairsat.conv2d_pairsat_acc(x, w, 17, 3, None, (1, 1), (1, 1, 1, 1), 1, 17, 32, "wrap")
    from simulator.kernels import mac
    exact, _ = mac.conv2d_acc(x.astype(np.int64) - 17, w.astype(np.int64) - 3, None, (1, 1), (1, 1, 1, 1), 1, 0,
                              32, "wrap")
    assert pairs == 0
    np.testing.assert_array_equal(acc, exact)


@pytest.mark.parametrize("bad", [
    dict(x=np.full((1, 1, 2, 2), 256)), dict(w=np.full((1, 1, 1, 1), 128)), dict(w=np.full((1, 1, 1, 1), -129)),
    dict(zx=256), dict(zw=-129), dict(pad=300), dict(zw=[0, 0, 0]),
])
def test_out_of_range_codes_are_refused(bad):
    x = bad.get("x", np.zeros((1, 1, 2, 2), np.int64))
    w = bad.get("w", np.zeros((1, 1, 1, 1), np.int64))
    with pytest.raises(ValueError):
        pairsat.conv2d_pairsat_acc(x, w, bad.get("zx", 0), bad.get("zw", 0), None, (1, 1), (1, 1, 1, 1), 1,
                                   bad.get("pad", 0), 32, "wrap")


# ----------------------------------------------------------------------------------------------------------
# Graph, engine, validate, .qnn
# ----------------------------------------------------------------------------------------------------------
def make_model(datapath="x86_pair_sat16", act=None, w_enc=None, w_bits=8, groups=1, seed=0):
    rng = np.random.default_rng(seed)
    lo, hi = (-(1 << (w_bits - 1)), 1 << (w_bits - 1)) if w_enc is None or w_enc.signed else (0, 1 << w_bits)
    cig = 4 // groups
    conv = Layer("c1", "conv2d", ["input"], {"padding": [1, 1, 1, 1], "groups": groups, "requant": "float32",
                                               "datapath": datapath},
                 UniformAct(8, False, 0.25, 3), rng.integers(lo, hi, (8 if groups == 1 else groups, cig, 3, 3)),
                 w_enc or UniformW(8, True, (0.01,), (0,)), bias=rng.integers(-500, 500, 8 if groups == 1 else groups))
    flat = Layer("f", "flatten", ["c1"])
    co = conv.weight.shape[0]
    dense = Layer("d", "dense", ["f"], {"datapath": datapath}, UniformAct(8, False, 0.5, 128),
                  rng.integers(lo, hi, (5, co * 25)), UniformW(8, True, (0.003,) * 5, (-2, -1, 0, 1, 2)))
    return Model("pairsat", (4, 5, 5), act or UniformAct(8, False, 0.02, 10), [conv, flat, dense])


@pytest.mark.parametrize("kwargs, message", [
    (dict(datapath="x86"), "unknown datapath"),
    (dict(act=UniformAct(7, True, 0.02, 0)), "signed 7-bit uniform activations"),
    (dict(act=UniformAct(7, False, 0.02, 0)), "unsigned 7-bit uniform activations"),
    (dict(w_enc=UniformW(8, False, (0.01,), (0,))), "unsigned 8-bit uniform weights"),
    (dict(groups=4), "depthwise"),
])
def test_graph_check_names_the_field(kwargs, message):
    with pytest.raises(HwsimError) as err:
        make_model(**kwargs).check()
    assert err.value.field == "layers.c1.attrs.datapath" and message in err.value.message


def test_engine_counts_and_matches_the_kernel():
    model = make_model()
    x = np.random.default_rng(1).integers(0, 256, (6, 4, 5, 5))
    res = Engine(model).run(x, keep_all=True)
    c1, d = res.trace.layers[0], res.trace.layers[2]
    assert c1.datapath == d.datapath == "x86_pair_sat16" and res.trace.layers[1].datapath == "exact"
    assert dict(c1.macs) == {(8, 8): 6 * 8 * 25 * 36} and dict(d.macs) == {(8, 8): 6 * 5 * 200}
    lay = model.layer("c1")
    acc, over, pairs, outs = pairsat.conv2d_pairsat_acc(x, lay.weight, 10, 0, lay.bias, (1, 1),
                                                        (1, 1, 1, 1), 1, 10, 32, "wrap")
    assert (c1.pair_saturations, c1.pair_saturated_outputs, c1.overflows) == (pairs, outs, over) and pairs > 0
    exact = Engine(make_model("exact")).run(x, keep_all=True)
    assert not np.array_equal(res.tensors["c1"], exact.tensors["c1"])
    # 7-bit weights (reduce_range) cannot saturate: the two datapaths agree bit for bit
    seven = Engine(make_model(w_bits=7)).run(x)
    assert seven.trace.layers[0].pair_saturations == 0
    np.testing.assert_array_equal(seven.output, Engine(make_model("exact", w_bits=7)).run(x).output)


@pytest.mark.parametrize("seed", range(4))
def test_int8_activations_are_the_u8_codes_plus_128(seed):
    """int8 activation codes on this datapath are ORT's QDQS8ToU8 operands, code + 128 with zero point + 128:
    the same model with uint8 activations on the shifted codes gives the same outputs and events (fast route
    and sequential kernel)."""
    x = np.random.default_rng(seed).integers(-128, 128, (5, 4, 5, 5))
    signed = make_model(act=UniformAct(8, True, 0.02, -118), seed=seed)
    unsigned = make_model(act=UniformAct(8, False, 0.02, 10), seed=seed)
    for force_slow in (False, True):
        a, b = Engine(signed), Engine(unsigned)
        if force_slow:
            a.plans["c1"].from_codes = b.plans["c1"].from_codes = None
        ra, rb = a.run(x, keep_all=True), b.run(x + 128, keep_all=True)
        np.testing.assert_array_equal(ra.tensors["c1"], rb.tensors["c1"])
        la, lb = ra.trace.layers[0], rb.trace.layers[0]
        assert (la.pair_saturations, la.pair_saturated_outputs, dict(la.macs)) == \
            (lb.pair_saturations, lb.pair_saturated_outputs, dict(lb.macs))
        assert la.pair_saturations > 0


def test_validate_reports_the_datapath_cost():
    model = make_model()
    x = np.random.default_rng(2).integers(0, 256, (8, 4, 5, 5))
    engine = Engine(model)
    result = compare(engine, x)
    c1 = result.layers[0]
    assert c1.datapath == "x86_pair_sat16" and result.layers[1].datapath == "-"
    assert c1.pair_saturations > 0 and c1.pair_saturated_outputs > 0 and c1.datapath_changed_outputs > 0
    assert c1.local_mismatches >= c1.datapath_changed_outputs - c1.exact_datapath_local_mismatches
    exact = Engine(make_model("exact")).run(x, keep_all=True).tensors["c1"]
    ours = engine.run(x, keep_all=True).tensors["c1"]
    assert c1.datapath_changed_outputs == int(np.count_nonzero(exact != ours))
    rep = {"model": "m", "input": "x", "samples": 8, **result.to_dict()}
    text = report.format_validation(rep)
    assert "x86_pair_sat16" in text and f"{c1.datapath_changed_outputs:,} of {c1.elements:,}" in text
    assert not result.passed


def test_qnn_round_trip_keeps_the_datapath(tmp_path):
    from simulator.qnn.model_io import load_model, save_model
    model = make_model().check()
    save_model(model, tmp_path / "m.qnn")
    back = load_model(tmp_path / "m.qnn")
    assert back.layer("c1").attr("datapath") == back.layer("d").attr("datapath") == "x86_pair_sat16"
    x = np.random.default_rng(4).integers(0, 256, (3, 4, 5, 5))
    np.testing.assert_array_equal(Engine(back).run(x).output, Engine(model).run(x).output)


# ----------------------------------------------------------------------------------------------------------
# Real ONNX Runtime without VNNI, emulated
# ----------------------------------------------------------------------------------------------------------
@pytest.mark.skipif(shutil.which("qemu-x86_64") is None,
                    reason="qemu-x86_64 not installed (apt-get install -y qemu-user): the check against ONNX "
                           "Runtime on an emulated CPU without VNNI needs it")
def test_onnxruntime_without_vnni_under_qemu(tmp_path):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import check_pair_saturation_qemu as check

    result = check.check(shutil.which("qemu-x86_64"), out=tmp_path / "pair_saturation.json", verbose=False)
    totals = result["totals"]
    assert totals["qemu_ort_vs_exact_mismatches"] > 0          # ORT without VNNI is not exact ...
    assert totals["qemu_ort_vs_hwsim_x86_mismatches"] == 0     # ... and hwsim reproduces it bit for bit
    assert totals["native_ort_vs_hwsim_host_mismatches"] == 0   # native ORT: this CPU's datapath
    assert result["passed"] and (tmp_path / "pair_saturation.json").exists()
