"""Seed 004 ENQ (QE / CE) and KNQ (QK / CK, k-means) against Python references and the seed's tables."""

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from simulator.errors import HwsimError
from simulator.units.enq import ce_decode, qe_encode
from simulator.units.knq import (ck_decode, kmeans_centroids, qk_encode, qk_encode_tree,
                                 thresholds_from_centroids)

I64_MIN, I64_MAX = -(1 << 63), (1 << 63) - 1

# Seed 004 Table IV, KNQ centroids d0..d31 (VGG-16, E_i = 5 bits)
CONV2_1 = [0, 11, 22, 35, 49, 64, 80, 97, 115, 134, 154, 176, 200, 226, 254, 284,
           316, 350, 387, 426, 468, 514, 563, 616, 674, 739, 814, 901, 1015, 1162, 1407, 1815]
CONV1_2 = [0] * 13 + [1, 3, 6, 10, 15, 21, 28, 36, 45, 56, 69, 85, 105, 128, 156, 191, 234, 290, 373]


# ---------------------------------------------------------------- ENQ
def ref_qe(x: int, e: int, qm: int) -> int:
    if x < 0:
        return 0
    if x > 2 ** qm - 1:
        return 2 ** e - 1
    return x // 2 ** (qm - e)


@st.composite
def enq_case(draw):
    qm = draw(st.integers(1, 32))
    e = draw(st.integers(1, qm))
    edges = [0, 1, -1, 2 ** qm - 1, 2 ** qm, 2 ** qm + 1, 2 ** (qm - e), 2 ** (qm - e) - 1, I64_MAX, I64_MIN]
    xs = draw(st.lists(st.one_of(st.sampled_from(edges), st.integers(-10, 2 ** qm + 10),
                                 st.integers(I64_MIN, I64_MAX)), min_size=1, max_size=20))
    return xs, e, qm


@settings(max_examples=400, deadline=None)
@given(enq_case())
def test_qe_ce_match_reference(case):
    xs, e, qm = case
    codes = qe_encode(np.array(xs, dtype=np.int64), e, qm)
    assert codes.tolist() == [ref_qe(x, e, qm) for x in xs]
    assert all(0 <= c < 2 ** e for c in codes.tolist())
    back = ce_decode(codes, e, qm)
    assert back.tolist() == [c * 2 ** (qm - e) for c in codes.tolist()]
    for x, v in zip(xs, back.tolist()):
        if 0 <= x <= 2 ** qm - 1:
            assert v <= x < v + 2 ** (qm - e)     # CE returns the bottom of the bin


def test_enq_seed_example_by_hand():
    # Table I: q_m = 12 bits suffice for VGG-16; Table II index 6: conv1_1 E=8, conv2_1 E=6
    qm = 12
    x = np.array([0, 15, 16, 100, 4095, 4096, 15000, -7])
    # E = 8: shift by 4
    assert qe_encode(x, 8, qm).tolist() == [0, 0, 1, 6, 255, 255, 255, 0]
    assert ce_decode(qe_encode(x, 8, qm), 8, qm).tolist() == [0, 0, 16, 96, 4080, 4080, 4080, 0]
    # E = 6: shift by 6; V_k = k * 2^(12-6)
    assert qe_encode(x, 6, qm).tolist() == [0, 0, 0, 1, 63, 63, 63, 0]
    assert ce_decode(np.array([0, 1, 63]), 6, qm).tolist() == [0, 64, 4032]
    # E = q_m is the identity on the uniform range
    assert qe_encode(np.array([0, 4095, 5000]), 12, 12).tolist() == [0, 4095, 4095]


def test_enq_errors():
    for e, qm in ((0, 8), (9, 8), (4, 33), (True, 8)):
        with pytest.raises(HwsimError):
            qe_encode(np.array([1]), e, qm)
    with pytest.raises(HwsimError):
        ce_decode(np.array([16]), 4, 8)
    with pytest.raises(HwsimError):
        ce_decode(np.array([-1]), 4, 8)


# ---------------------------------------------------------------- KNQ
def ref_seed_knq(x: int, centroids) -> int:
    """Seed 004 literally: k if d_k <= x < d_{k+1}; x >= d_last -> last; below d_0 -> 0 (our documented choice)."""
    n = len(centroids)
    if x >= centroids[-1]:
        return n - 1
    for k in range(n - 1):
        if centroids[k] <= x < centroids[k + 1]:
            return k
    return 0


def test_knq_seed_table_iv_conv2_1():
    t = thresholds_from_centroids(CONV2_1)
    assert len(t) == 31
    x = np.array([10, 11, 5000, 0, 21, 22, 1814, 1815, 1407, -5])
    want = [0, 1, 31, 0, 1, 2, 30, 31, 30, 0]
    assert qk_encode(x, t).tolist() == want
    assert qk_encode_tree(x, t).tolist() == want
    assert ck_decode(qk_encode(x, t), CONV2_1).tolist() == [CONV2_1[k] for k in want]


def test_knq_seed_table_iv_repeated_centroids():
    # conv1_2 has d0..d12 = 0: x = 0 is the largest k with d_k <= 0, i.e. 12
    t = thresholds_from_centroids(CONV1_2)
    x = np.array([0, 1, 2, 3, 372, 373, 10 ** 6])
    want = [ref_seed_knq(int(v), CONV1_2) for v in x]
    assert want == [12, 13, 13, 14, 30, 31, 31]
    assert qk_encode(x, t).tolist() == want
    assert qk_encode_tree(x, t).tolist() == want


@st.composite
def knq_case(draw):
    n = draw(st.integers(1, 40))
    cents = sorted(draw(st.lists(st.one_of(st.integers(-50, 5000), st.integers(I64_MIN + 1, I64_MAX)),
                                 min_size=n, max_size=n)))
    edges = [c + d for c in cents for d in (-1, 0, 1) if I64_MIN <= c + d <= I64_MAX]
    xs = draw(st.lists(st.one_of(st.sampled_from(edges), st.integers(I64_MIN, I64_MAX),
                                 st.integers(-100, 6000)), min_size=1, max_size=30))
    return cents, xs


@settings(max_examples=400, deadline=None)
@given(knq_case())
def test_qk_bank_and_tree_match_seed_rule(case):
    cents, xs = case
    t = thresholds_from_centroids(cents)
    x = np.array(xs, dtype=np.int64)
    want = [ref_seed_knq(v, cents) for v in xs]
    assert qk_encode(x, t).tolist() == want
    assert qk_encode_tree(x, t).tolist() == want
    assert qk_encode(x, cents[1:]).tolist() == [sum(v >= c for c in cents[1:]) for v in xs]
    dec = ck_decode(qk_encode(x, t), cents).tolist()
    assert dec == [cents[k] for k in want]
    for v, d in zip(xs, dec):
        if v >= cents[0]:
            assert d <= v


def test_knq_errors_and_shapes():
    with pytest.raises(HwsimError):
        qk_encode(np.array([1]), [5, 3])
    with pytest.raises(HwsimError):
        qk_encode_tree(np.array([1]), [5, 3])
    with pytest.raises(HwsimError):
        ck_decode(np.array([32]), CONV2_1)
    with pytest.raises(HwsimError):
        ck_decode(np.array([-1]), CONV2_1)
    x = np.arange(24).reshape(2, 3, 4) * 50
    assert qk_encode(x, CONV2_1[1:]).shape == (2, 3, 4)
    assert qk_encode([3, 9], []).tolist() == [0, 0]            # one centroid: no comparators
    assert qk_encode_tree([3, 9], []).tolist() == [0, 0]


def test_kmeans_centroids():
    rng = np.random.default_rng(7)
    s = np.abs(rng.normal(0, 400, 20000)).astype(np.int64)
    s[:50] = 10 ** 6                                             # saturated at M = 4095 first
    c1 = kmeans_centroids(s, 32, 4095, 50, 3)
    c2 = kmeans_centroids(s, 32, 4095, 50, 3)
    assert np.array_equal(c1, c2)                                 # deterministic
    assert c1.dtype == np.int64 and 1 <= c1.size <= 32
    assert np.all(np.diff(c1) > 0) and c1.min() >= 0 and c1.max() <= 4095
    assert c1.max() == 4095                                       # the saturated samples form their own cluster
    # well separated clusters are found exactly (integer means)
    s = np.concatenate([np.full(100, 10), np.full(100, 12), np.full(50, 1000), np.full(30, 3000),
                        np.full(30, 3003)])
    assert kmeans_centroids(s, 3, 4095, 100, 0).tolist() == [11, 1000, 3002]   # 3001.5 -> even 3002
    # fewer distinct values than centroids: the distinct values themselves
    assert kmeans_centroids(np.array([5, 5, 0, 9]), 8, 7, 10, 0).tolist() == [0, 5, 7]
    with pytest.raises(HwsimError):
        kmeans_centroids(np.array([], dtype=np.int64), 4, 10, 10, 0)
    with pytest.raises(HwsimError):
        kmeans_centroids(np.array([1, 2]), 0, 10, 10, 0)
