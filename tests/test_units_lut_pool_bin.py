"""Codebook LUT, integer pooling and the binarizer against plain-Python references."""

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from simulator.errors import HwsimError
from simulator.units.binarize import bits_to_pm1, sign_bits
from simulator.units.codebook_lut import lut_decode, lut_decode_reference
from simulator.units.pooling import avgpool, maxpool
from simulator.units.rounding import ROUNDING_MODES

I64_MIN, I64_MAX = -(1 << 63), (1 << 63) - 1


# ---------------------------------------------------------------- codebook LUT
@st.composite
def lut_case(draw):
    g = draw(st.integers(1, 4))
    e = draw(st.integers(1, 16))
    cout = draw(st.integers(1, 6))
    rest = draw(st.lists(st.integers(1, 3), max_size=3))
    table = draw(st.lists(st.lists(st.integers(-(1 << 40), 1 << 40), min_size=e, max_size=e),
                          min_size=g, max_size=g))
    groups = draw(st.lists(st.integers(0, g - 1), min_size=cout, max_size=cout))
    size = cout * int(np.prod(rest)) if rest else cout
    idx = draw(st.lists(st.integers(0, e - 1), min_size=size, max_size=size))
    return np.array(idx).reshape([cout] + rest), table, groups


@settings(max_examples=200, deadline=None)
@given(lut_case())
def test_lut_decode_matches_python(case):
    idx, table, groups = case
    got = lut_decode(idx, np.array(table), np.array(groups))
    flat_idx = idx.reshape(idx.shape[0], -1)
    want = [[table[groups[c]][int(i)] for i in flat_idx[c]] for c in range(idx.shape[0])]
    assert got.reshape(idx.shape[0], -1).tolist() == want
    assert np.array_equal(got, lut_decode_reference(idx, np.array(table), np.array(groups)))


def test_lut_errors_and_per_tensor():
    table = np.array([[-3, 0, 5, 7]])
    assert lut_decode(np.array([[0, 3], [2, 1]]), table).tolist() == [[-3, 7], [5, 0]]
    with pytest.raises(HwsimError):
        lut_decode(np.array([[4]]), table, np.array([0]))          # index >= E
    with pytest.raises(HwsimError):
        lut_decode(np.array([[-1]]), table, np.array([0]))
    with pytest.raises(HwsimError):
        lut_decode(np.array([[1]]), table, np.array([1]))          # group >= G
    with pytest.raises(HwsimError):
        lut_decode(np.array([[1], [1]]), table, np.array([0]))     # one group per output channel
    with pytest.raises(HwsimError):
        lut_decode(np.array([[1]]), np.array([[1, 2], [3, 4]]))    # G > 1 needs a map


# ---------------------------------------------------------------- pooling
def ref_round_div(s: int, d: int, mode: str) -> int:
    q, r = divmod(s, d)
    if mode == "floor":
        return q
    if mode == "trunc":
        return q + 1 if (r and s < 0) else q
    if 2 * r != d:
        return q + (2 * r > d)
    return {"half_up": q + 1, "half_even": q + q % 2, "half_away": q + (s > 0)}[mode]


def ref_pool(x, k, st_, pads, kind, mode=None, include=False, pad_value=None):
    n, c, h, w = x.shape
    (kh, kw), (sh, sw), (pt, pl, pb, pr) = k, st_, pads
    oh, ow = (h + pt + pb - kh) // sh + 1, (w + pl + pr - kw) // sw + 1
    out = np.zeros((n, c, oh, ow), dtype=object)
    for a in range(n):
        for b in range(c):
            for i in range(oh):
                for j in range(ow):
                    vals, real = [], 0
                    for di in range(kh):
                        for dj in range(kw):
                            y, z = i * sh + di - pt, j * sw + dj - pl
                            if 0 <= y < h and 0 <= z < w:
                                vals.append(int(x[a, b, y, z]))
                                real += 1
                            elif kind == "max" and pad_value is not None:
                                vals.append(pad_value)
                            elif kind == "avg" and include:
                                vals.append(pad_value)
                    if kind == "max":
                        out[a, b, i, j] = max(vals)
                    else:
                        out[a, b, i, j] = ref_round_div(sum(vals), kh * kw if include else real, mode)
    return out.tolist(), n * c * oh * ow


@st.composite
def pool_case(draw):
    kh, kw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    sh, sw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    pads = tuple(draw(st.integers(0, k - 1)) for k in (kh, kw, kh, kw))
    h = draw(st.integers(max(1, kh - pads[0] - pads[2]), 6))
    w = draw(st.integers(max(1, kw - pads[1] - pads[3]), 6))
    n, c = draw(st.integers(1, 2)), draw(st.integers(1, 3))
    big = 1 << 59
    vals = draw(st.lists(st.one_of(st.integers(-300, 300), st.integers(-big, big), st.sampled_from([-big, big])),
                         min_size=n * c * h * w, max_size=n * c * h * w))
    return np.array(vals, dtype=np.int64).reshape(n, c, h, w), (kh, kw), (sh, sw), pads


@settings(max_examples=150, deadline=None)
@given(pool_case(), st.sampled_from(ROUNDING_MODES), st.booleans(), st.integers(-5, 5))
def test_pooling_matches_python(case, mode, include, pv):
    x, k, s, pads = case
    window = k[0] * k[1]
    out, cmp = maxpool(x, k, s, pads)
    want, nout = ref_pool(x, k, s, pads, "max")
    assert out.tolist() == want and cmp == (window - 1) * nout
    out, _ = maxpool(x, k, s, pads, pad_value=pv)
    assert out.tolist() == ref_pool(x, k, s, pads, "max", pad_value=pv)[0]
    out, adds = avgpool(x, k, s, pads, mode, include, pv)
    want, nout = ref_pool(x, k, s, pads, "avg", mode, include, pv)
    assert out.tolist() == want and adds == (window - 1) * nout


def test_pooling_hand_and_errors():
    x = np.arange(16).reshape(1, 1, 4, 4)
    out, cmp = maxpool(x, 2)
    assert out.tolist() == [[[[5, 7], [13, 15]]]] and cmp == 12
    out, adds = avgpool(x, 2, rounding="floor")
    assert out.tolist() == [[[[2, 4], [10, 12]]]] and adds == 12     # 2.5 -> 2, 4.5 -> 4
    out, _ = avgpool(x, 2, rounding="half_even")
    assert out.tolist() == [[[[2, 4], [10, 12]]]]
    out, _ = avgpool(x, 2, rounding="half_up")
    assert out.tolist() == [[[[3, 5], [11, 13]]]]
    # corner window with padding 1: {0, 1, 4, 5} / 4 without pads, / 9 with zero pads
    assert avgpool(x, 3, 1, 1, "half_even")[0][0, 0, 0, 0] == 2
    assert avgpool(x, 3, 1, 1, "half_even", True, 0)[0][0, 0, 0, 0] == 1
    with pytest.raises(HwsimError):
        maxpool(x, 2, 2, 2)                     # pad >= kernel
    with pytest.raises(HwsimError):
        maxpool(x[0], 2)                        # not 4-D
    with pytest.raises(HwsimError):
        maxpool(x, 5)                           # window larger than input
    with pytest.raises(HwsimError):
        avgpool(np.full((1, 1, 2, 2), I64_MAX), 2)   # sum would overflow
    with pytest.raises(HwsimError):
        avgpool(x, 2, rounding="nearest")


# ---------------------------------------------------------------- binarize
@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(st.integers(I64_MIN, I64_MAX), st.sampled_from([0, -1, 1, I64_MIN, I64_MAX])),
                min_size=1, max_size=64))
def test_sign_bits(xs):
    bits = sign_bits(np.array(xs, dtype=np.int64))
    assert bits.dtype == np.uint8
    assert bits.tolist() == [1 if v < 0 else 0 for v in xs]
    pm = bits_to_pm1(bits)
    assert pm.dtype == np.int8
    assert pm.tolist() == [-1 if v < 0 else 1 for v in xs]


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 200), st.data())
def test_xnor_popcount_identity(k, data):
    a = np.array(data.draw(st.lists(st.integers(-3, 3), min_size=k, max_size=k)))
    w = np.array(data.draw(st.lists(st.integers(-3, 3), min_size=k, max_size=k)))
    ba, bw = sign_bits(a), sign_bits(w)
    dot = int(np.dot(bits_to_pm1(ba).astype(np.int64), bits_to_pm1(bw).astype(np.int64)))
    assert dot == k - 2 * int(np.sum(ba ^ bw))
    assert dot == sum((1 if x >= 0 else -1) * (1 if y >= 0 else -1) for x, y in zip(a, w))


def test_binarize_edges():
    assert sign_bits(np.array([0, -0.0, -1e-9, 2.5])).tolist() == [0, 0, 1, 0]
    with pytest.raises(HwsimError):
        bits_to_pm1(np.array([2]))
    with pytest.raises(HwsimError):
        sign_bits(np.array([np.nan]))
