"""Requantizer against independent references: exact rationals (fractions.Fraction) with hand-written IEEE
rounding for the float modes, Python ints for the fixed-point modes."""

import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import assume, given, settings, strategies as st

from simulator.errors import HwsimError
from simulator.units.requantizer import quantize_multiplier, requantize, requantize_reference

I32_MIN, I32_MAX = -(1 << 31), (1 << 31) - 1
I64_MIN, I64_MAX = -(1 << 63), (1 << 63) - 1


# ---------------------------------------------------------------- independent references
def round_half_even(f: Fraction) -> int:
    fl = math.floor(f)
    rem = f - fl
    if rem > Fraction(1, 2) or (rem == Fraction(1, 2) and fl % 2):
        return fl + 1
    return fl


def round_half_up(f: Fraction) -> int:
    return math.floor(f + Fraction(1, 2))


def round_half_away(f: Fraction) -> int:
    return round_half_up(f) if f >= 0 else -round_half_up(-f)


def to_ieee(f: Fraction, mant_bits: int) -> Fraction:
    """Round a rational to the nearest binary float with `mant_bits` significant bits, ties to even
    (normal range only; the tests stay inside it)."""
    if f == 0:
        return Fraction(0)
    sign = -1 if f < 0 else 1
    a = abs(f)
    e = a.numerator.bit_length() - a.denominator.bit_length()
    while a >= Fraction(2) ** (e + 1):
        e += 1
    while a < Fraction(2) ** e:
        e -= 1
    scale = Fraction(2) ** (e - mant_bits + 1)          # ulp
    return sign * round_half_even(a / scale) * scale


def ref_quantize_multiplier(m: float):
    f = Fraction(m)
    e = 0
    while f / Fraction(2) ** e >= 1:
        e += 1
    while f / Fraction(2) ** e < Fraction(1, 2):
        e -= 1
    q = round_half_away(f / Fraction(2) ** e * (1 << 31))
    if q == 1 << 31:
        q, e = q // 2, e + 1
    if e < -31:
        return 0, 0
    return q, e


SAT = 1 << 62   # documented: the float modes saturate their rounded result to +-2^62


def ref_float32(acc: int, m: float) -> int:
    p = to_ieee(to_ieee(Fraction(acc), 24) * to_ieee(Fraction(m), 24), 24)
    return max(-SAT, min(SAT, round_half_even(p)))


def ref_float64(acc: int, m: float) -> int:
    return max(-SAT, min(SAT, round_half_even(to_ieee(to_ieee(Fraction(acc), 53) * Fraction(m), 53))))


def ref_fixed_double(acc: int, m: float) -> int:
    q, shift = ref_quantize_multiplier(m)
    left, right = max(shift, 0), max(-shift, 0)
    x = acc * 2 ** left
    assert I32_MIN <= x <= I32_MAX
    high = round_half_up(Fraction(x * q, 1 << 31))      # SRDHM = x*q/2^31, ties toward +inf
    return round_half_away(Fraction(high, 1 << right))  # RDBPOT = ties away from zero


def ref_fixed_single(acc: int, m: float) -> int:
    q, shift = ref_quantize_multiplier(m)
    if shift > 30:
        q, shift = (1 << 31) - 1, 30
    return round_half_up(Fraction(acc * q, 1 << (31 - shift)))


def ref_shift(acc: int, m: float) -> int:
    return round_half_up(Fraction(acc) * Fraction(m))


REFS = {"float32": ref_float32, "float64": ref_float64, "fixed_double": ref_fixed_double,
        "fixed_single": ref_fixed_single, "shift": ref_shift}


# ---------------------------------------------------------------- strategies
I32_EDGES = [0, 1, -1, I32_MIN, I32_MIN + 1, I32_MAX, I32_MAX - 1, 1 << 24, (1 << 24) + 1, -(1 << 24) - 1,
             1 << 30, -(1 << 30)]
acc32 = st.one_of(st.integers(I32_MIN, I32_MAX), st.sampled_from(I32_EDGES), st.integers(-300, 300))
acc64 = st.one_of(acc32, st.integers(-(1 << 62), 1 << 62), st.sampled_from([I64_MIN, I64_MAX, (1 << 53) + 1]))
mult = st.one_of(
    st.floats(2.0 ** -40, 1.0, allow_nan=False, allow_infinity=False),
    st.floats(1e-6, 0.1), st.sampled_from([2.0 ** -40, 2.0 ** -31, 2.0 ** -32, 2.0 ** -33, 0.5, 0.25,
                                            1.0 - 2.0 ** -40, 1.0 - 2.0 ** -33, 1.0 - 2.0 ** -20, 1.0,
                                            1.0 + 2.0 ** -30, 0.1, 1 / 3, 0.0037])
)


# ---------------------------------------------------------------- quantize_multiplier
def test_quantize_multiplier_hand_values():
    assert quantize_multiplier(0.5) == (1 << 30, 0)
    assert quantize_multiplier(1.0) == (1 << 30, 1)
    assert quantize_multiplier(0.75) == (3 << 29, 0)
    assert quantize_multiplier(0.25) == (1 << 30, -1)
    assert quantize_multiplier(2.0 ** -31) == (1 << 30, -30)
    assert quantize_multiplier(2.0 ** -32) == (1 << 30, -31)
    assert quantize_multiplier(2.0 ** -33) == (0, 0)           # shift < -31 flushes to zero
    assert quantize_multiplier(2.0 ** -40) == (0, 0)
    assert quantize_multiplier(1.0 - 2.0 ** -40) == (1 << 30, 1)   # q_fixed rounds to 2^31 -> halve
    assert quantize_multiplier(3.0) == (3 << 29, 2)
    # 0.1 = 0.8 * 2^-3; round(0.8 * 2^31) = 1717986918.4 -> 1717986918
    assert quantize_multiplier(0.1) == (1717986918, -3)
    # exact .5 in q*2^31 rounds away from zero (std::round): q = 0.5 + 2^-32
    assert quantize_multiplier(0.5 + 2.0 ** -32) == ((1 << 30) + 1, 0)
    assert quantize_multiplier(2.0 ** 40, single_rounding=True) == ((1 << 31) - 1, 30)
    assert quantize_multiplier(2.0 ** 40) == (1 << 30, 41)
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(HwsimError):
            quantize_multiplier(bad)


@settings(max_examples=300, deadline=None)
@given(st.floats(2.0 ** -45, 2.0 ** 20, allow_nan=False, allow_infinity=False))
def test_quantize_multiplier_matches_reference(m):
    q, e = quantize_multiplier(m)
    assert (q, e) == ref_quantize_multiplier(m)
    if q:
        assert (1 << 30) <= q < (1 << 31)
        assert abs(Fraction(q) * Fraction(2) ** (e - 31) - Fraction(m)) <= Fraction(2) ** (e - 32)


# ---------------------------------------------------------------- requantize, scalar multiplier
@settings(max_examples=300, deadline=None)
@given(st.lists(acc64, min_size=1, max_size=12), mult)
def test_float_modes_match_ieee_reference(accs, m):
    acc = np.array(accs, dtype=np.int64)
    assert requantize(acc, np.array([m]), "float32").tolist() == [ref_float32(a, m) for a in accs]
    assert requantize(acc, np.array([m]), "float64").tolist() == [ref_float64(a, m) for a in accs]


def test_float32_acc_conversion_rounds_like_ort():
    # 2^24 + 1 is not a float32: it converts to 2^24 before the multiply (ORT behaviour, kept)
    assert requantize(np.array([(1 << 24) + 1]), [1.0], "float32").tolist() == [1 << 24]
    assert requantize(np.array([(1 << 24) + 1]), [1.0], "float64").tolist() == [(1 << 24) + 1]
    # ties to even after the float multiply
    assert requantize(np.array([1, 3, 5, -1, -3]), [0.5], "float32").tolist() == [0, 2, 2, 0, -2]


@settings(max_examples=300, deadline=None)
@given(st.lists(acc32, min_size=1, max_size=12), mult)
def test_fixed_modes_match_bigint_reference(accs, m):
    q, shift = ref_quantize_multiplier(m)
    accs = [a for a in accs if I32_MIN <= a * 2 ** max(shift, 0) <= I32_MAX]
    assume(accs)
    acc = np.array(accs, dtype=np.int64)
    assert requantize(acc, np.array([m]), "fixed_double").tolist() == [ref_fixed_double(a, m) for a in accs]
    single = [ref_fixed_single(a, m) for a in accs]
    if all(I32_MIN <= v <= I32_MAX for v in single):
        assert requantize(acc, np.array([m]), "fixed_single").tolist() == single


@settings(max_examples=200, deadline=None)
@given(st.integers(-(1 << 20), 1 << 20), st.integers(1, 31))
def test_fixed_modes_exact_ties(k, s):
    # multiplier 2^-s (exact in q), acc*m = k + 1/2 exactly
    m = 2.0 ** -s
    acc = (2 * k + 1) * (1 << (s - 1))
    assume(I32_MIN <= acc <= I32_MAX)
    for a in (acc, -acc):
        arr = np.array([a])
        assert int(requantize(arr, [m], "fixed_double")[0]) == ref_fixed_double(a, m)
        assert int(requantize(arr, [m], "fixed_single")[0]) == ref_fixed_single(a, m)
        assert int(requantize(arr, [m], "shift")[0]) == ref_shift(a, m)
        assert int(requantize(arr, [m], "float64")[0]) == ref_float64(a, m)

    m = 0.25                                             # q = 2^30, shift = -1: RDBPOT does the rounding
    acc = np.array([6, -6, 10, -10])                     # 1.5, -1.5, 2.5, -2.5
    assert requantize(acc, [m], "fixed_double").tolist() == [2, -2, 3, -3]   # ties away from zero
    assert requantize(acc, [m], "fixed_single").tolist() == [2, -1, 3, -2]   # ties toward +inf
    assert requantize(acc, [m], "float64").tolist() == [2, -2, 2, -2]        # ties to even
    assert requantize(acc, [m], "float32").tolist() == [2, -2, 2, -2]
    assert requantize(acc, [m], "shift").tolist() == [2, -1, 3, -2]          # half up
    # multiplier 0.5 has shift 0: only SRDHM rounds, and it rounds ties toward +inf
    assert requantize(np.array([3, -3]), [0.5], "fixed_double").tolist() == [2, -1]


def test_fixed_double_known_double_rounding():
    # 5 * 0.25 = 1.25: SRDHM(5, 2^30) = round(2.5) = 3, RDBPOT(3, 1) = round(1.5) = 2 (TFLite's double rounding)
    assert requantize(np.array([5]), [0.25], "fixed_double").tolist() == [2]
    assert requantize(np.array([5]), [0.25], "fixed_single").tolist() == [1]


def test_int32_extremes_fixed():
    acc = np.array([I32_MIN, I32_MIN + 1, I32_MAX, -1, 0, 1], dtype=np.int64)
    for m in (0.5, 1.0 - 2.0 ** -33, 2.0 ** -31, 2.0 ** -40, 0.999, 1e-6):
        q, shift = ref_quantize_multiplier(m)
        ok = [int(a) for a in acc if I32_MIN <= int(a) * 2 ** max(shift, 0) <= I32_MAX]
        assert requantize(np.array(ok), [m], "fixed_double").tolist() == [ref_fixed_double(a, m) for a in ok]
        assert requantize(acc, [m], "fixed_single").tolist() == [ref_fixed_single(int(a), m) for a in acc]
    # tiny multiplier flushes to zero
    assert requantize(acc, [2.0 ** -40], "fixed_double").tolist() == [0] * 6


def test_int32_overflow_policy():
    with pytest.raises(HwsimError):
        requantize(np.array([1 << 31]), [0.5], "fixed_double")
    with pytest.raises(HwsimError):
        requantize(np.array([1 << 30]), [1.0], "fixed_double")        # multiplier 1.0 has left shift 1
    with pytest.raises(HwsimError):
        requantize(np.array([1 << 31]), [0.5], "fixed_single")
    sat = requantize(np.array([1 << 40, -(1 << 40)]), [0.5], "fixed_double", int32_overflow="saturate")
    assert sat.tolist() == [ref_fixed_double(I32_MAX, 0.5), ref_fixed_double(I32_MIN, 0.5)]
    sat = requantize(np.array([1 << 30, -(1 << 30)]), [1.0], "fixed_double", int32_overflow="saturate")
    q, _ = ref_quantize_multiplier(1.0)
    assert sat.tolist() == [round_half_up(Fraction(I32_MAX * q, 1 << 31)), round_half_up(Fraction(I32_MIN * q, 1 << 31))]
    big = requantize(np.array([I32_MAX]), [1e6], "fixed_single", int32_overflow="saturate")
    assert big.tolist() == [I32_MAX]


@settings(max_examples=300, deadline=None)
@given(st.lists(acc32, min_size=1, max_size=20), st.floats(2.0 ** -30, 0.99))
def test_fixed_double_vs_exact_rounding_only_near_ties(accs, m):
    q, shift = ref_quantize_multiplier(m)
    right = -shift
    for a in accs:
        fixed = ref_fixed_double(a, m)
        assert int(requantize(np.array([a]), [m], "fixed_double")[0]) == fixed
        y = Fraction(a) * Fraction(m)
        exact = round_half_even(y)
        f64 = int(requantize(np.array([a]), [m], "float64")[0])
        assert abs(f64 - exact) <= 1
        assert abs(fixed - exact) <= 1
        if fixed != exact:
            dist_to_tie = abs(y - math.floor(y) - Fraction(1, 2))
            bound = Fraction(1, 2 ** (right + 1)) + abs(a) * Fraction(2) ** (shift - 32)
            assert dist_to_tie <= bound


def test_shift_mode():
    acc = np.array([5, -5, 6, -6, 7, I64_MAX, I64_MIN], dtype=np.int64)
    assert requantize(acc, [0.25], "shift").tolist() == [ref_shift(int(a), 0.25) for a in acc]
    assert requantize(np.array([3, -3]), [4.0], "shift").tolist() == [12, -12]
    assert requantize(np.array([3, -3]), [1.0], "shift").tolist() == [3, -3]
    with pytest.raises(HwsimError, match="0.3"):
        requantize(np.array([3]), [0.3], "shift")
    with pytest.raises(HwsimError):
        requantize(np.array([1 << 62]), [4.0], "shift")
    assert requantize(np.array([-(1 << 61)]), [4.0], "shift").tolist() == [I64_MIN]


# ---------------------------------------------------------------- per-channel
@settings(max_examples=100, deadline=None)
@given(st.integers(1, 3), st.integers(1, 5), st.integers(1, 3), st.data())
def test_per_channel_broadcast(n, c, hw, data):
    accs = data.draw(st.lists(st.integers(-(1 << 20), 1 << 20), min_size=n * c * hw * hw,
                              max_size=n * c * hw * hw))
    ms = data.draw(st.lists(mult, min_size=c, max_size=c))
    acc = np.array(accs, dtype=np.int64).reshape(n, c, hw, hw)
    for mode in ("float32", "float64", "fixed_double", "fixed_single"):
        got = requantize(acc, np.array(ms), mode)
        want = [[[[REFS[mode](int(acc[i, j, k, l]), ms[j]) for l in range(hw)] for k in range(hw)]
                 for j in range(c)] for i in range(n)]
        assert got.tolist() == want
        assert np.array_equal(got, requantize_reference(acc, np.array(ms), mode))
    # channel_axis=0 on a [C, K] array and the [N, C] dense layout
    got0 = requantize(acc[0].reshape(c, -1), np.array(ms), "float64", channel_axis=0)
    assert got0.tolist() == [[ref_float64(int(v), ms[j]) for v in row] for j, row in
                             enumerate(acc[0].reshape(c, -1))]
    dense = acc[:, :, 0, 0]
    assert requantize(dense, np.array(ms), "fixed_double").tolist() == \
        [[ref_fixed_double(int(v), ms[j]) for j, v in enumerate(row)] for row in dense]
    pow2 = np.array([2.0 ** -(j % 4) for j in range(c)])
    assert requantize(acc, pow2, "shift").tolist() == \
        [[[[ref_shift(int(acc[i, j, k, l]), pow2[j]) for l in range(hw)] for k in range(hw)]
          for j in range(c)] for i in range(n)]


def test_bad_arguments():
    acc = np.zeros((2, 3), dtype=np.int64)
    with pytest.raises(HwsimError):
        requantize(acc, [0.5, 0.5], "float32")          # neither 1 nor C
    with pytest.raises(HwsimError):
        requantize(acc, [0.0], "float32")
    with pytest.raises(HwsimError):
        requantize(acc, [float("nan")], "fixed_double")
    with pytest.raises(HwsimError):
        requantize(acc, [0.5], "bankers")
    with pytest.raises(HwsimError):
        requantize(acc.astype(np.float64), [0.5], "float64")
    with pytest.raises(HwsimError):
        requantize(acc, [1e300], "float32")              # not representable in float32
