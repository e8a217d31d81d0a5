"""MAC kernels: fast kernel == reference kernel == plain Python big-int arithmetic, overflow counts included."""
from itertools import product

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from simulator.kernels import im2col, mac

SETTINGS = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# operand value ranges (inclusive) a PE may see, each with its edges
RANGES = {"u8": (0, 255), "s8": (-128, 127), "s4": (-8, 7), "s16": (-(2**15), 2**15 - 1),
          "u16": (0, 2**16 - 1), "s17": (-(2**16) + 1, 2**16 - 1)}
DTYPES = {"u8": np.uint8, "s8": np.int8, "s4": np.int8, "s16": np.int16, "u16": np.uint16, "s17": np.int32}


# ----------------------------------------------------------------------------------------------------------
# An independent model: Python ints, the products listed first, then folded left to right
# ----------------------------------------------------------------------------------------------------------
def fold(start, products, bits, policy):
    """Fold the bias and products into a `bits` accumulator; (value, left the range at least once)."""
    lo, hi = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    left = False
    acc = None
    for p in [start] + products:
        v = p if acc is None else acc + p
        if v < lo or v > hi:
            left = True
            v = max(lo, min(hi, v)) if policy == "saturate" else (v + 2 ** (bits - 1)) % 2**bits - 2 ** (bits - 1)
        acc = v
    return acc, left


def bigint_conv(x, w, bias, stride, pad, groups, pad_value, bits, policy):
    n_, ci, h, wd = x.shape
    co, cig, kh, kw = w.shape
    top, left, bottom, right = pad
    xp = [[[[pad_value] * (wd + left + right) for _ in range(h + top + bottom)] for _ in range(ci)] for _ in range(n_)]
    for n, c, i, j in product(range(n_), range(ci), range(h), range(wd)):
        xp[n][c][i + top][j + left] = int(x[n, c, i, j])
    ho, wo = (h + top + bottom - kh) // stride[0] + 1, (wd + left + right - kw) // stride[1] + 1
    out, count = np.zeros((n_, co, ho, wo), np.int64), 0
    for n, o, i, j in product(range(n_), range(co), range(ho), range(wo)):
        first = (o // (co // groups)) * cig
        prods = [xp[n][first + c][i * stride[0] + a][j * stride[1] + b] * int(w[o, c, a, b])
                 for c, a, b in product(range(cig), range(kh), range(kw))]
        out[n, o, i, j], left_range = fold(0 if bias is None else int(bias[o]), prods, bits, policy)
        count += left_range
    return out, count


def assert_same(a, b):
    assert a[0].dtype == np.int64 and a[0].shape == b[0].shape
    np.testing.assert_array_equal(a[0], b[0])
    assert a[1] == b[1]


# ----------------------------------------------------------------------------------------------------------
# Strategies
# ----------------------------------------------------------------------------------------------------------
def values(draw, shape, kind):
    lo, hi = RANGES[kind]
    edges = [lo, hi, lo + 1, hi - 1, 0, 1, -1]
    pick = st.one_of(st.sampled_from([v for v in edges if lo <= v <= hi]), st.integers(lo, hi))
    flat = draw(st.lists(pick, min_size=int(np.prod(shape)), max_size=int(np.prod(shape))))
    return np.array(flat, np.int64).reshape(shape).astype(DTYPES[kind])


@st.composite
def conv_cases(draw, kinds=("u8", "s8", "s4", "s16", "u16", "s17"), bits=st.integers(8, 20)):
    groups = draw(st.integers(1, 3))
    cig, cog = draw(st.integers(1, 8 // groups)), draw(st.integers(1, 8 // groups))
    if draw(st.booleans()):  # depthwise
        cig, cog = 1, 1
        groups = draw(st.integers(1, 8))
    kh, kw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    pad = tuple(draw(st.integers(0, 2)) for _ in range(4))
    h = draw(st.integers(max(1, kh - pad[0] - pad[2]), 6))
    w = draw(st.integers(max(1, kw - pad[1] - pad[3]), 6))
    x_kind, w_kind = draw(st.sampled_from(kinds)), draw(st.sampled_from(kinds))
    x = values(draw, (draw(st.integers(1, 3)), groups * cig, h, w), x_kind)
    wt = values(draw, (groups * cog, cig, kh, kw), w_kind)
    acc_bits = draw(bits)
    bias = None
    if draw(st.booleans()):
        b = 2 ** min(acc_bits + 1, 63)
        bias = np.array(draw(st.lists(st.integers(-b, b - 1), min_size=groups * cog, max_size=groups * cog)), np.int64)
    lo, hi = RANGES[x_kind]
    pad_value = draw(st.sampled_from([0, lo, hi, -128 if lo <= -128 else 0]))
    stride = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    return x, wt, bias, stride, pad, groups, pad_value, acc_bits, draw(st.sampled_from(mac.POLICIES))


# ----------------------------------------------------------------------------------------------------------
# conv2d
# ----------------------------------------------------------------------------------------------------------
@SETTINGS
@given(conv_cases())
def test_conv_fast_equals_reference_equals_bigint(case):
    got = mac.conv2d_acc(*case)
    ref = mac.conv2d_acc_reference(*case)
    assert_same(got, ref)
    assert_same(ref, bigint_conv(*case))


@SETTINGS
@given(conv_cases(bits=st.sampled_from([24, 32, 40, 64])))
def test_conv_wide_accumulators(case):
    """Mostly the fast path (no overflow possible), some 64-bit edge cases through a huge bias."""
    assert_same(mac.conv2d_acc(*case), bigint_conv(*case))


def test_conv_overflow_really_happens():
    x = np.full((1, 4, 3, 3), 255, np.uint8)
    w = np.full((2, 4, 3, 3), 127, np.int8)
    for policy in mac.POLICIES:
        case = (x, w, None, (1, 1), (1, 1, 1, 1), 1, 0, 12, policy)
        got, count = mac.conv2d_acc(*case)
        assert count == 2 * 9
        assert_same((got, count), bigint_conv(*case))
    got, _ = mac.conv2d_acc(x, w, None, (1, 1), (0, 0, 0, 0), 1, 0, 12, "saturate")
    assert (got == 2047).all()


def test_bias_outside_the_range_counts_as_overflow():
    x = np.zeros((1, 1, 2, 2), np.int8)
    w = np.ones((1, 1, 1, 1), np.int8)
    got, count = mac.conv2d_acc(x, w, np.array([300]), (1, 1), (0, 0, 0, 0), 1, 0, 8, "wrap")
    assert count == 4 and (got == 300 - 256).all()


def test_int64_accumulator_edges():
    x = np.array([[[[2**15 - 1, -(2**15)]]]], np.int32)
    w = np.array([[[[2**15 - 1]]], [[[-(2**15)]]]], np.int32)
    for policy in mac.POLICIES:
        for b in (2**63 - 2, -(2**63) + 3):
            case = (x, w, np.array([b, b]), (1, 1), (0, 0, 0, 0), 1, 0, 64, policy)
            assert_same(mac.conv2d_acc(*case), bigint_conv(*case))


def test_fast_path_is_chosen_when_safe(monkeypatch):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (2, 6, 9, 7)).astype(np.uint8)
    w = rng.integers(-128, 128, (16, 3, 3, 3)).astype(np.int8)
    bias = rng.integers(-1000, 1000, 16)
    case = (x, w, bias, (2, 1), (1, 0, 2, 1), 2, -128, 32, "wrap")
    assert mac.overflow_impossible(x, w, bias, case[4], -128, 32)
    expected = mac.conv2d_acc_reference(*case)

    def refuse(*args):
        raise AssertionError("the sequential kernel must not run when the bound proves safety")

    monkeypatch.setattr(mac, "_sequential_conv", refuse)
    assert_same(mac.conv2d_acc(*case), expected)
    # and the bound decides it: 255·Σ|w| can exceed a 16-bit accumulator
    assert not mac.overflow_impossible(x, w, bias, case[4], -128, 16)
    with pytest.raises(AssertionError, match="sequential"):
        mac.conv2d_acc(*case[:7], 16, "wrap")


def test_weights_edited_in_place_are_repacked():
    """Packed weights are remembered between calls; an edit to the array must still be seen."""
    rng = np.random.default_rng(5)
    x = rng.integers(0, 256, (1, 8, 5, 5)).astype(np.uint8)
    w = rng.integers(-128, 128, (16, 8, 3, 3)).astype(np.int8)
    case = [x, w, None, (1, 1), (1, 1, 1, 1), 1, 0, 32, "wrap"]
    assert_same(mac.conv2d_acc(*case), mac.conv2d_acc_reference(*case))
    w[3, 2, 1, 0] = -w[3, 2, 1, 0] + 1
    assert_same(mac.conv2d_acc(*case), mac.conv2d_acc_reference(*case))


def test_one_weight_array_in_many_geometries():
    rng = np.random.default_rng(8)
    w = rng.integers(-128, 128, (16, 2, 3, 3)).astype(np.int8)
    for ci, groups, pad in [(2, 1, (1, 1, 1, 1)), (4, 2, (0, 1, 2, 0)), (8, 4, (1, 1, 1, 1)), (2, 1, (0, 0, 0, 0))]:
        x = rng.integers(0, 256, (1, ci, 6, 5)).astype(np.uint8)
        case = (x, w, None, (1, 1), pad, groups, 3, 32, "wrap")
        assert_same(mac.conv2d_acc(*case), mac.conv2d_acc_reference(*case))


@pytest.mark.parametrize("wide_tiles", [False, True])
def test_fast_path_is_exact_on_a_larger_layer(monkeypatch, wide_tiles):
    """(wide_tiles: the call takes im2col.MAX_NVEC channel vectors per tile, as a large call does)"""
    if wide_tiles:
        monkeypatch.setattr(im2col, "WIDE_TILE_MACS", 0)
    rng = np.random.default_rng(1)
    x = rng.integers(0, 2**16, (2, 40, 12, 11)).astype(np.uint16)  # beyond int16: split into bytes
    w = rng.integers(-(2**15), 2**15, (33, 40, 3, 3)).astype(np.int16)
    bias = rng.integers(-(2**40), 2**40, 33)
    got, count = mac.conv2d_acc(x, w, bias, (1, 1), (1, 1, 1, 1), 1, 7, 64, "saturate")
    xp = np.pad(x.astype(np.int64), ((0, 0), (0, 0), (1, 1), (1, 1)), constant_values=7)
    win = np.lib.stride_tricks.sliding_window_view(xp, (3, 3), axis=(2, 3))  # [N, Ci, Ho, Wo, 3, 3]
    exact = np.einsum("ncijab,ocab->noij", win, w.astype(np.int64)) + bias[None, :, None, None]
    assert count == 0
    np.testing.assert_array_equal(got, exact)


def test_accumulator_bound():
    w = np.array([[[[1, -2]]], [[[-3, 0]]]])
    assert mac.accumulator_bound(10, w, None) == 30
    assert mac.accumulator_bound(10, w, np.array([-5, 1])) == 35
    assert mac.accumulator_bound(10, w, np.array([-2**63, 0])) == 2**63 + 30


@pytest.mark.parametrize("bad", [
    dict(acc_bits=1), dict(acc_bits=65), dict(policy="clip"), dict(groups=3),
    dict(x=np.full((1, 2, 3, 3), 2**16)), dict(x=np.zeros((1, 2, 3, 3), np.float32)), dict(pad_value=-(2**16)),
    dict(bias=np.zeros(3, np.int64)), dict(padding=(0, 0, -1, 0)), dict(w=np.zeros((2, 2, 5, 5), np.int8)),
])
def test_bad_arguments_raise(bad):
    args = dict(x=np.zeros((1, 2, 3, 3), np.int8), w=np.zeros((2, 2, 1, 1), np.int8), bias=None, stride=(1, 1),
                padding=(0, 0, 0, 0), groups=1, pad_value=0, acc_bits=16, policy="wrap")
    args.update(bad)
    with pytest.raises(ValueError):
        mac.conv2d_acc(**args)


# ----------------------------------------------------------------------------------------------------------
# dense
# ----------------------------------------------------------------------------------------------------------
def bigint_dense(x, w, bias, bits, policy):
    out, count = np.zeros((x.shape[0], w.shape[0]), np.int64), 0
    for n, o in product(range(x.shape[0]), range(w.shape[0])):
        prods = [int(a) * int(b) for a, b in zip(x[n], w[o])]
        out[n, o], left = fold(0 if bias is None else int(bias[o]), prods, bits, policy)
        count += left
    return out, count


@SETTINGS
@given(st.data())
def test_dense_fast_equals_reference_equals_bigint(data):
    n, k, co = data.draw(st.integers(1, 5)), data.draw(st.integers(1, 70)), data.draw(st.integers(1, 20))
    x = values(data.draw, (n, k), data.draw(st.sampled_from(["u8", "s8", "s16", "s17"])))
    w = values(data.draw, (co, k), data.draw(st.sampled_from(["s4", "s8", "s16"])))
    bias = data.draw(st.one_of(st.none(), st.just(np.arange(co, dtype=np.int64) * 1001 - 5000)))
    bits, policy = data.draw(st.sampled_from([8, 13, 20, 32, 64])), data.draw(st.sampled_from(mac.POLICIES))
    got = mac.dense_acc(x, w, bias, bits, policy)
    assert got[0].shape == (n, co)
    assert_same(got, mac.dense_acc_reference(x, w, bias, bits, policy))
    assert_same(got, bigint_dense(x, w, bias, bits, policy))
