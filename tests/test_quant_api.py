"""simulator.quant against the seed papers' formulas written out here, brute force, and hwsim's encodings."""

import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from simulator.encodings import BinaryW, CodebookW, EnqAct, KnqAct, Pow2W, TernaryW, UniformAct, UniformW
from simulator.quant import (allocate_bits, dictionary_weights, enq_codes, enq_search, exact_scale,
                             fixed_point_table, frac_bits, hwang_ternary, kappa_beta_fit, kmeans_weights,
                             knq_centroids, knq_thresholds, lin_closed_form, lin_output_sqnr_db, lloyd_kmeans,
                             mantissa8, pow2_weights, sqnr_db, twn_ternary, uniform_codes, uniform_weights,
                             xnor_beta, xnor_binary)
from simulator.units.codebook_lut import lut_decode

FAST = settings(max_examples=60, deadline=None)
floats = st.floats(-100, 100, allow_nan=False, allow_infinity=False, allow_subnormal=False)


def is_mantissa8(s):
    """s * 2^k is an integer below 256 for some k: at most 8 significant bits."""
    m, e = math.frexp(s)
    return m * 256 == int(m * 256)


def is_pow2(s):
    return s > 0 and math.frexp(s)[0] == 0.5


def weight_tensors(min_co=1, max_co=6):
    return st.integers(min_co, max_co).flatmap(
        lambda co: st.lists(floats, min_size=co * 3, max_size=co * 3).map(lambda v: np.array(v).reshape(co, 3)))


# ============================================================================ mantissa8 / uniform weights

@FAST
@given(st.floats(1e-300, 1e300))
def test_mantissa8_rounds_up_to_the_next_8_bit_value(s):
    m8 = mantissa8(s)
    assert m8 >= s and is_mantissa8(m8)
    m, e = math.frexp(m8)                         # the next smaller 8-bit value is below s
    assert math.ldexp(m - 1 / 256, e) < s or m8 == s


@pytest.mark.parametrize("bad", [0.0, -1.0, math.inf, math.nan])
def test_mantissa8_non_positive_is_one(bad):
    assert mantissa8(bad) == 1.0
    assert exact_scale(bad) == 1.0


@FAST
@given(weight_tensors(), st.integers(2, 16), st.booleans())
def test_uniform_weights_round_trip_through_uniformw(w, bits, per_channel):
    codes, scales = uniform_weights(w, bits, per_channel)
    qmax = 2 ** (bits - 1) - 1
    assert codes.shape == w.shape and codes.dtype == np.int64
    assert np.abs(codes).max() <= qmax
    assert scales.shape == ((w.shape[0],) if per_channel else (1,))
    assert all(is_mantissa8(s) for s in scales)
    enc = UniformW(bits, True, tuple(scales.tolist()))
    real = enc.decode(codes) * enc.channel_scales(w.shape[0])[:, None]
    assert np.all(np.abs(real - w) <= enc.channel_scales(w.shape[0])[:, None] / 2 * (1 + 1e-9))
    rows = w if per_channel else w.reshape(1, -1)
    for row, s in zip(rows, scales):              # scale formula: mantissa8(max|w_c| / qmax)
        amax = float(np.abs(row).max())
        assert s == (mantissa8(amax / qmax) if amax > 0 else 1.0)


def test_uniform_weights_eq5_by_hand():
    w = np.array([[0.5, -0.25, 0.125, -0.5], [0.0, 0.0, 0.0, 0.0]])
    codes, scales = uniform_weights(w, 3)         # qmax 3: scale = mantissa8(0.5 / 3)
    d = mantissa8(0.5 / 3)
    assert scales.tolist() == [d, 1.0]
    assert codes[0].tolist() == [math.floor(x / d + 0.5) for x in w[0]]
    assert codes[1].tolist() == [0, 0, 0, 0]


@pytest.mark.parametrize("bits", [1, 17, 2.0, True])
def test_uniform_weights_rejects_bad_bits(bits):
    with pytest.raises(ValueError):
        uniform_weights(np.ones((2, 2)), bits)


# ============================================================================ Lloyd k-means (seed 000)

def python_lloyd(values, k, iters=300):
    """Plain-Python Lloyd with linspace init: nearest centroid by seed 000's midpoint thresholds (ties up; the
    same float midpoints as the implementation, so near-ties are not a rounding coin toss), cell means."""
    cent = list(np.linspace(min(values), max(values), k))
    assign = None
    for _ in range(iters + 1):
        new = [sum(v >= (cent[j] + cent[j + 1]) / 2.0 for j in range(k - 1)) for v in values]
        if new == assign:
            break
        assign = new
        for j in range(k):
            cell = [v for v, a in zip(values, assign) if a == j]
            if cell:
                cent[j] = sum(cell) / len(cell)
    return cent, assign


@settings(max_examples=80, deadline=None)
@given(st.lists(st.floats(-10, 10, allow_nan=False), min_size=1, max_size=40), st.integers(1, 6),
       st.sampled_from(["linear", "density"]))
def test_lloyd_fixed_point_conditions(values, k, init):
    v = np.array(values)
    cent, assign = lloyd_kmeans(v, k, init=init)
    assert cent.shape == (k,) and assign.shape == v.shape
    assert np.all(np.diff(cent) >= 0)
    distinct = np.unique(v)
    if distinct.size <= k:                       # exactly the distinct values, padded with the last one
        assert cent[:distinct.size].tolist() == distinct.tolist()
        assert np.all(cent[distinct.size:] == distinct[-1])
        assert np.all(cent[assign] == v)
        return
    for j in range(k):                           # every centroid is the mean of its (non-empty) cell
        cell = v[assign == j]
        if cell.size:
            assert cent[j] == pytest.approx(cell.mean(), abs=1e-9)
    dist = np.abs(v[:, None] - cent[None, :])    # every value sits at a nearest centroid
    assert np.allclose(dist[np.arange(v.size), assign], dist.min(axis=1), atol=1e-9)
    order = np.argsort(v, kind="stable")         # seed 000's threshold form: cells are intervals
    assert np.all(np.diff(assign[order]) >= 0)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(-50, 50), min_size=8, max_size=30), st.integers(2, 5))
def test_lloyd_matches_pure_python(values, k):
    # repeated values, but no exact real ties between two cell means (a float-rounding coin toss otherwise)
    v = [x + 0.01 * (x * math.sqrt(2) % 1) for x in values]
    cent, assign = lloyd_kmeans(np.array(v), k, init="linear")
    if len(set(v)) <= k:
        return
    ref_cent, ref_assign = python_lloyd(v, k)
    if np.all(np.diff(ref_cent) >= 0):           # the reference never reorders; compare when it stayed sorted
        assert np.allclose(cent, ref_cent, atol=1e-12)
        assert assign.tolist() == ref_assign


def test_lloyd_tie_goes_up_as_seed_000_thresholds():
    # init [0, 2], delta_1 = 1: seed 000 puts W = delta_1 in the upper level (delta_1 <= W < delta_2)
    cent, assign = lloyd_kmeans(np.array([0.0, 0.0, 1.0, 2.0, 2.0]), 2)
    assert cent.tolist() == [0.0, 5 / 3] and assign.tolist() == [0, 0, 1, 1, 1]


def test_lloyd_deterministic_and_density_init():
    rng = np.random.default_rng(1)
    v = np.concatenate([rng.normal(0, 0.05, 500), rng.normal(1, 0.5, 50)])
    a = lloyd_kmeans(v, 8, init="density")
    b = lloyd_kmeans(v, 8, init="density")
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    lin = lloyd_kmeans(v, 8, init="linear")
    assert not np.allclose(a[0], lin[0])        # different inits reach different local optima here
    with pytest.raises(ValueError):
        lloyd_kmeans(v, 8, init="random")
    with pytest.raises(ValueError):
        lloyd_kmeans([], 2)


# ============================================================================ fixed-point tables / codebooks

@FAST
@given(st.lists(floats, min_size=1, max_size=10), st.integers(2, 16))
def test_fixed_point_table_largest_f(cents, table_bits):
    table, scale = fixed_point_table(np.array(cents), table_bits)
    qmax = 2 ** (table_bits - 1) - 1
    assert is_pow2(scale)
    f = -int(math.log2(scale))
    assert np.abs(table).max() <= qmax
    assert table.tolist() == np.rint(np.ldexp(np.array(cents), f)).astype(int).tolist()
    if max(abs(c) for c in cents) > 0:           # f + 1 would overflow after rounding
        assert np.abs(np.rint(np.ldexp(np.array(cents), f + 1))).max() > qmax


@FAST
@given(weight_tensors(min_co=2, max_co=8), st.integers(1, 4), st.integers(4, 12), st.sampled_from([1, 2]))
def test_kmeans_weights_decode_through_codebookw(w, bits, table_bits, groups):
    co = w.shape[0]
    if co % groups:
        with pytest.raises(ValueError):
            kmeans_weights(w, bits, groups, table_bits)
        return
    idx, table, scales = kmeans_weights(w, bits, groups, table_bits)
    assert idx.shape == w.shape and table.shape == (groups, 2 ** bits) and scales.shape == (groups,)
    assert all(is_pow2(s) for s in scales)
    assert np.abs(table).max() <= 2 ** (table_bits - 1) - 1
    enc = CodebookW(bits, table_bits, co // groups if groups > 1 else 0, tuple(scales.tolist()))
    real = lut_decode(idx, table, enc.groups(co)) * enc.channel_scales(co)[:, None]
    size = co // groups
    for g in range(groups):                       # each group's codebook is that group's Lloyd codebook
        cent, assign = lloyd_kmeans(w[g * size:(g + 1) * size], 2 ** bits)
        assert np.array_equal(idx[g * size:(g + 1) * size], assign)
        assert np.allclose(real[g * size:(g + 1) * size], cent[assign], atol=scales[g] / 2 + 1e-12)


def test_kmeans_weights_bad_groups():
    with pytest.raises(ValueError, match="divide"):
        kmeans_weights(np.ones((6, 2)), 2, groups=4)


# ============================================================================ ternary / binary (seed 002)

def test_twn_by_the_formula():
    w = [0.9, -0.05, 0.3, -0.6, 0.02, -1.1, 0.4, 0.0]
    delta = 0.7 * sum(abs(x) for x in w) / len(w)
    big = [abs(x) for x in w if abs(x) > delta]
    codes, d, alpha = twn_ternary(np.array(w).reshape(2, 4))
    assert d == pytest.approx(delta) and alpha == pytest.approx(sum(big) / len(big))
    assert codes.ravel().tolist() == [(1 if x > delta else -1 if x < -delta else 0) for x in w]
    enc = TernaryW((exact_scale(alpha),))
    assert is_mantissa8(enc.scale[0]) and enc.scale[0] >= alpha


def test_twn_all_zero():
    codes, d, alpha = twn_ternary(np.zeros(5))
    assert codes.tolist() == [0] * 5 and d == 0.0 and alpha == 1.0


def ternary_error(w, step):
    q = step * np.clip(np.floor(np.abs(w) / step + 0.5), 0, 1) * np.sign(w)
    return float(((w - q) ** 2).sum())


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(-4, 4, allow_nan=False), min_size=1, max_size=30))
def test_hwang_step_beats_a_dense_grid(values):
    w = np.array(values)
    codes, step = hwang_ternary(w)
    if not np.any(w):
        assert step == 1.0 and not codes.any()
        return
    grid = np.linspace(1e-6, 2 * np.abs(w).max(), 401)
    assert ternary_error(w, step) <= min(ternary_error(w, g) for g in grid) + 1e-12
    fine = np.linspace(max(step * 0.98, 1e-9), step * 1.02, 2001)   # and is a local minimum of E(step)
    assert ternary_error(w, step) <= min(ternary_error(w, g) for g in fine) + 1e-12
    assert codes.tolist() == [(int(np.sign(x)) if abs(x) >= step / 2 else 0) for x in values]
    assert float(((w - step * codes) ** 2).sum()) == pytest.approx(ternary_error(w, step))


def test_hwang_brute_force_exact_on_small_set():
    w = np.array([0.1, -0.9, 1.0, 0.45, -0.2])
    _, step = hwang_ternary(w)
    errors = [ternary_error(w, g) for g in np.linspace(1e-4, 2.0, 20001)]
    assert ternary_error(w, step) <= min(errors) + 1e-12
    # the exact optimum: the mean of the top-n magnitudes maximising S_n^2 / n
    a = sorted(np.abs(w), reverse=True)
    n = max(range(1, 6), key=lambda n: sum(a[:n]) ** 2 / n)
    assert step == pytest.approx(sum(a[:n]) / n)


@FAST
@given(weight_tensors())
def test_xnor_binary_by_the_formula(w):
    codes, alpha = xnor_binary(w)
    assert codes.tolist() == [[1 if x < 0 else 0 for x in row] for row in w]   # sign(0) = +1
    assert np.allclose(alpha, [sum(abs(x) for x in row) / len(row) for row in w])
    enc = BinaryW(tuple(exact_scale(a) for a in alpha))
    assert np.array_equal(enc.decode(codes), np.where(w < 0, -1, 1))


def test_xnor_beta():
    assert xnor_beta(np.array([[1.0, -3.0], [0.0, 2.0]])) == 1.5


# ============================================================================ powers of two

@FAST
@given(weight_tensors(), st.integers(2, 5), st.booleans())
def test_pow2_nearest_representable(w, bits, per_channel):
    codes, scales = pow2_weights(w, bits, per_channel)
    qmax = 2 ** (bits - 1) - 1
    assert np.abs(codes).max() <= qmax and all(is_pow2(s) for s in scales)
    enc = Pow2W(bits, tuple(scales.tolist()))
    s = enc.channel_scales(w.shape[0])[:, None] if per_channel else scales[0]
    got = enc.decode(codes) * s
    levels = [0.0] + [2.0 ** j for j in range(qmax)]
    rows = w if per_channel else w.reshape(1, -1)
    for row, sc in zip(rows, scales):
        amax = float(np.abs(row).max())
        if amax > 0:                              # INQ: the top power 2^n1 with 0.75 * 2^n1 <= max < 1.5 * 2^n1
            top = levels[-1] * sc
            assert 0.75 * top <= amax < 1.5 * top
    for x, y, sc in zip(w.ravel(), got.ravel(), np.broadcast_to(s, w.shape).ravel()):
        a = abs(x) / sc                           # nearest level, ties away from zero
        best = min(levels, key=lambda lv: (abs(a - lv), -lv))
        assert y == math.copysign(best * sc, x) or (best == 0 and y == 0)


def test_pow2_by_hand():
    codes, scales = pow2_weights(np.array([[1.0, 0.75, 0.5, 0.3, 0.12, -0.02, -0.6]]), 3)
    # qmax 3: levels 0, 1, 2, 4 (x scale); max 1.0 -> 2^n1 = 1, scale 1/4; in steps: 4, 3, 2, 1.2, .48, -.08, -2.4
    assert scales.tolist() == [0.25]
    assert codes.tolist() == [[3, 3, 2, 1, 0, 0, -2]]   # 3.0 is a tie between 2 and 4: away from zero
    with pytest.raises(ValueError):
        pow2_weights(np.ones((1, 2)), 6)


# ============================================================================ dictionary (seed 003)

@pytest.mark.parametrize("init", ["uniform", "kmeans"])
def test_dictionary_weights(init):
    rng = np.random.default_rng(3)
    ws = [rng.normal(0, 0.1, (8, 9)), rng.laplace(0, 2.0, (4, 16)), np.zeros((2, 2))]
    table, tscale, lscales, idx = dictionary_weights(ws, 16, init, table_bits=8)
    assert table.shape == (16,) and np.abs(table).max() <= 127 and is_pow2(tscale)
    assert lscales[2] == 1.0 and all(is_mantissa8(s) and is_mantissa8(s * tscale) for s in lscales)
    assert np.all(np.diff(table) >= 0)
    stored = table * tscale
    for w, s, i in zip(ws, lscales, idx):
        assert s >= np.abs(w).max()
        enc = CodebookW(4, 8, 0, (tscale * s,))
        real = lut_decode(i, table[None, :]) * enc.channel_scales(w.shape[0])[:, None]
        assert np.allclose(real, stored[i] * s)
        err = np.abs(w[..., None] / s - stored).min(axis=-1)   # index = a nearest entry
        assert np.allclose(np.abs(w / s - stored[i]), err)
    if init == "uniform":
        assert np.allclose(stored, np.linspace(-1, 1, 16), atol=tscale / 2)


def test_dictionary_kmeans_beats_uniform_on_peaked_weights():
    rng = np.random.default_rng(4)
    ws = [rng.laplace(0, 0.05, (16, 16)), rng.laplace(0, 0.5, (8, 32))]

    def error(init):
        table, ts, ls, idx = dictionary_weights(ws, 8, init, table_bits=12)
        return sum(float(((w - table[i] * ts * s) ** 2).sum()) for w, s, i in zip(ws, ls, idx))
    assert error("kmeans") < error("uniform")


# ============================================================================ activations (seeds 001, 004)

@FAST
@given(st.floats(0, 1e6), st.integers(1, 16), st.booleans())
def test_frac_bits_is_the_largest(max_value, bits, signed):
    if signed and bits == 1:
        return
    f = frac_bits(max_value, bits, signed)
    qmax = 2 ** (bits - 1) - 1 if signed else 2 ** bits - 1
    if max_value <= 0:
        assert f == 0
        return
    assert math.ldexp(max_value, f) <= qmax < math.ldexp(max_value, f + 1)


@FAST
@given(st.lists(st.floats(-300, 300, allow_nan=False), min_size=1, max_size=20), st.integers(1, 12),
       st.integers(-4, 8), st.booleans())
def test_uniform_codes_eq5(xs, bits, frac, signed):
    got = uniform_codes(np.array(xs), bits, frac, signed)
    lo, hi = UniformAct(bits, signed).code_range()
    d = 2.0 ** -frac
    assert got.tolist() == [min(max(math.floor(x / d + 0.5), lo), hi) for x in xs]


@FAST
@given(st.lists(st.floats(-2, 300, allow_nan=False), min_size=1, max_size=20), st.integers(1, 10),
       st.integers(0, 6))
def test_enq_codes_by_the_seed(xs, qm, frac):
    e = max(1, qm - 3)
    codes = enq_codes(np.array(xs), e, qm, frac)
    for x, c in zip(xs, codes.tolist()):
        v = min(max(math.floor(x * 2 ** frac + 0.5), 0), 2 ** qm - 1)
        assert c == v // 2 ** (qm - e)            # seed 004: floor(x / 2^(q_m - E_i)), saturating
    enc = EnqAct(e, qm, frac)
    assert np.all(enc.decode(codes) <= uniform_codes(np.array(xs), qm, frac))


def test_knq_centroids_and_thresholds():
    rng = np.random.default_rng(5)
    x = np.maximum(rng.normal(0.5, 1.0, 4000), 0)          # post-ReLU, many zeros
    qm, frac, t = 8, 5, 3
    cents = knq_centroids(x, t, qm, frac)
    assert cents.shape == (8,) and np.all(np.diff(cents) >= 0)
    assert cents[0] >= 0 and cents[-1] <= 2 ** qm - 1       # pre-saturated at M = 2^q_m - 1
    v = uniform_codes(x, qm, frac)
    for rule in ("seed", "nearest"):
        thr = knq_thresholds(cents, rule)
        enc = KnqAct(t, tuple(cents.tolist()), tuple(thr.tolist()), frac)
        codes = enc.encode(v)
        for xv, k in zip(v[:300].tolist(), codes[:300].tolist()):
            if rule == "seed":                   # x -> k if d_k <= x < d_{k+1}
                assert cents[k] <= xv and (k == 7 or xv < cents[k + 1]) or (k == 0 and xv < cents[0])
            else:                                # nearest centroid, ties up
                dist = [abs(xv - c) for c in cents]
                assert dist[k] == min(dist) and all(dist[j] > dist[k] for j in range(k + 1, 8)
                                                    if cents[j] != cents[k])


def test_knq_pads_when_few_distinct_values():
    cents = knq_centroids(np.array([0.0, 1.0, 1.0, 2.0]), 3, 8, 0)
    assert cents.tolist() == [0, 1, 2, 2, 2, 2, 2, 2]
    KnqAct(3, tuple(cents.tolist()))
    assert knq_thresholds(np.array([0, 3, 4, 10]), "nearest").tolist() == [2, 4, 7]


def greedy_result_is_minimal(evaluate, e, ref, budget):
    """No single layer of the greedy result can go one bit lower (for a monotone metric)."""
    return all(evaluate(e[:i] + [e[i] - 1] + e[i + 1:]) < ref - budget for i in range(len(e)) if e[i] > 1)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(0.1, 5), min_size=1, max_size=3), st.integers(2, 5), st.floats(0, 0.2))
def test_enq_search_against_brute_force(sens, qm, budget):
    def evaluate(e):                              # accuracy-like: more bits, less noise
        return 1.0 - sum(s * 4.0 ** -b for s, b in zip(sens, e))
    n = len(sens)
    ref = evaluate([qm] * n)
    combos = [list(c) for c in itertools.product(range(1, qm + 1), repeat=n)]
    ok = [c for c in combos if evaluate(c) >= ref - budget]
    best = min(ok, key=lambda c: (sum(c), -evaluate(c), c))
    assert enq_search(evaluate, n, qm, budget, exhaustive=True) == best
    for order in ("forward", "backward"):
        calls = []
        e = enq_search(lambda e: calls.append(e) or evaluate(e), n, qm, budget, order=order)
        assert len(calls) <= 1 + n * (qm - 1)
        assert evaluate(e) >= ref - budget and sum(e) >= sum(best)
        assert greedy_result_is_minimal(evaluate, e, ref, budget)


def test_enq_search_greedy_by_hand():
    # layer 0 tolerates 1 bit alone, but then layer 1 must stay high: greedy is order dependent
    def evaluate(e):
        return -(2.0 ** -e[0] * 0.5 + 2.0 ** -e[1] * 0.5)
    assert enq_search(evaluate, 2, 4, 0.3, order="forward") == [1, 3]
    assert enq_search(evaluate, 2, 4, 0.3, order="backward") == [3, 1]
    assert enq_search(evaluate, 2, 4, 0.3, exhaustive=True) == [2, 2]      # same total, higher metric
    assert enq_search(evaluate, 2, 4, 0.3, exhaustive=True, sizes=[1, 10]) == [3, 1]
    with pytest.raises(ValueError):
        enq_search(evaluate, 2, 4, -1.0)


def test_sqnr_db():
    assert sqnr_db([3.0, 4.0], [3.0, 4.0]) == math.inf
    assert sqnr_db([3.0, 4.0], [3.0, 3.0]) == pytest.approx(10 * math.log10(25.0))
    with pytest.raises(ValueError):
        sqnr_db([1.0, 2.0], [1.0])


# ============================================================================ Lin et al. bit allocation

def test_kappa_beta_fit_and_lin_output():
    bits = [2, 4, 6, 8]
    kappa, off = kappa_beta_fit(bits, [6.02 * b + 1.5 for b in bits])
    assert kappa == pytest.approx(6.02) and off == pytest.approx(1.5)
    db = [20.0, 30.0, 25.0]
    assert lin_output_sqnr_db(db) == pytest.approx(-10 * math.log10(sum(10 ** (-d / 10) for d in db)))
    assert lin_output_sqnr_db([math.inf, 20.0]) == pytest.approx(20.0)
    with pytest.raises(ValueError):
        kappa_beta_fit([4, 4], [1.0, 2.0])


@st.composite
def alloc_case(draw):
    n = draw(st.integers(1, 4))
    lo = draw(st.integers(1, 3))
    hi = draw(st.integers(lo, lo + 3))
    table = []
    for _ in range(n):                            # measured tables need not be monotone or linear
        row = {b: draw(st.floats(-5, 60)) for b in range(lo, hi + 1)}
        table.append(row)
    cost = draw(st.lists(st.integers(1, 50), min_size=n, max_size=n))
    return table, cost, (lo, hi)


@settings(max_examples=80, deadline=None)
@given(alloc_case(), st.floats(0, 1), st.floats(-5, 70))
def test_allocate_bits_matches_brute_force(case, frac, target):
    table, cost, (lo, hi) = case
    combos = list(itertools.product(range(lo, hi + 1), repeat=len(cost)))

    def out(c):
        return lin_output_sqnr_db([row[b] for row, b in zip(table, c)])

    def total(c):
        return sum(n * b for n, b in zip(cost, c))
    lo_total, hi_total = total([lo] * len(cost)), total([hi] * len(cost))
    budget = int(lo_total + frac * (hi_total - lo_total))
    got = allocate_bits(table, cost, budget_bits=budget, bits_range=(lo, hi))
    assert got["total_bits"] == total(got["bits"]) <= budget
    assert got["output_sqnr_db"] == pytest.approx(out(got["bits"]), abs=1e-9)
    assert got["output_sqnr_db"] >= max(out(c) for c in combos if total(c) <= budget) - 1e-9
    with pytest.raises(ValueError, match="below the minimum"):
        allocate_bits(table, cost, budget_bits=lo_total - 1, bits_range=(lo, hi))

    best_possible = max(out(c) for c in combos)
    if target > best_possible + 1e-9:
        with pytest.raises(ValueError, match="above the best"):
            allocate_bits(table, cost, target_sqnr_db=target, bits_range=(lo, hi))
        return
    if target > best_possible - 1e-9:
        return                                    # too close to call in floating point
    got = allocate_bits(table, cost, target_sqnr_db=target, bits_range=(lo, hi))
    assert got["total_bits"] == total(got["bits"])
    assert out(got["bits"]) >= target - 1e-9
    assert got["total_bits"] <= min(total(c) for c in combos if out(c) >= target + 1e-9)


def test_allocate_bits_arguments():
    table = [np.arange(9) * 6.0, np.arange(9) * 6.0]      # arrays indexed by bits
    got = allocate_bits(table, [10, 1000], target_sqnr_db=30.0)
    assert got["bits"][0] >= got["bits"][1]               # the small tensor gets the bits
    for kwargs in ({}, {"budget_bits": 100, "target_sqnr_db": 3.0}):
        with pytest.raises(ValueError, match="exactly one"):
            allocate_bits(table, [1, 1], **kwargs)
    lossless = [{1: 5.0, 2: math.inf}, {1: 10.0, 2: 20.0}]          # +inf dB: no noise at 2 bits
    assert allocate_bits(lossless, [1, 1], budget_bits=4, bits_range=(1, 2)) == {"bits": [2, 2], "output_sqnr_db": 20.0,
                                                               "total_bits": 4}
    with pytest.raises(ValueError, match="no SQNR for 9 bits"):
        allocate_bits(table, [1, 1], budget_bits=100, bits_range=(1, 9))


def test_lin_closed_form():
    rho, kappa, target = [1000.0, 200.0, 50.0], 6.0, 40.0
    beta = lin_closed_form(rho, kappa, target_sqnr_db=target)
    # Lin et al.: beta_i - beta_j = 10 log10(rho_j / rho_i) / kappa, and the output SQNR hits the target
    assert beta[0] - beta[1] == pytest.approx(10 * math.log10(rho[1] / rho[0]) / kappa)
    assert lin_output_sqnr_db(kappa * beta) == pytest.approx(target)
    # optimal: moving along the constraint surface never lowers the cost sum rho * beta
    cost = float(np.dot(rho, beta))
    rng = np.random.default_rng(6)
    for _ in range(200):
        trial = beta + rng.normal(0, 0.3, 3)
        trial[2] = 0                              # solve the constraint for the last width
        rest = 10 ** (-target / 10) - sum(10 ** (-kappa * b / 10) for b in trial[:2])
        if rest <= 0:
            continue
        trial[2] = -10 * math.log10(rest) / kappa
        assert float(np.dot(rho, trial)) >= cost - 1e-9
    same = lin_closed_form(rho, kappa, budget_bits=cost)
    assert np.allclose(same, beta)
    with pytest.raises(ValueError):
        lin_closed_form(rho, kappa)
