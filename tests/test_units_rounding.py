"""Rounding shift / divider against Python big-int references (floor division + remainder)."""

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from simulator.errors import HwsimError
from simulator.units.rounding import ROUNDING_MODES, round_div, round_shift

I64_MIN, I64_MAX = -(1 << 63), (1 << 63) - 1
EDGES = [0, 1, -1, 2, -2, 3, -3, I64_MIN, I64_MIN + 1, I64_MAX, I64_MAX - 1, (1 << 62), -(1 << 62),
         (1 << 31) - 1, -(1 << 31), (1 << 32), -(1 << 32) - 1]
int64s = st.one_of(st.integers(I64_MIN, I64_MAX), st.sampled_from(EDGES), st.integers(-1000, 1000))
modes = st.sampled_from(ROUNDING_MODES)


def ref_div(x: int, d: int, mode: str) -> int:
    """x / d rounded; Python ints: q = floor, r in [0, d), compare 2r with d."""
    q, r = divmod(x, d)
    if mode == "floor":
        return q
    if mode == "trunc":
        return q + 1 if (r and x < 0) else q
    if 2 * r > d:
        return q + 1
    if 2 * r < d:
        return q
    # exact tie: x/d = q + 1/2
    if mode == "half_up":
        return q + 1
    if mode == "half_even":
        return q + (q % 2)
    if mode == "half_away":
        return q + 1 if x > 0 else q
    raise AssertionError(mode)


@settings(max_examples=400, deadline=None)
@given(st.lists(int64s, min_size=1, max_size=20), st.integers(0, 70), modes)
def test_round_shift_matches_bigint(xs, shift, mode):
    got = round_shift(np.array(xs, dtype=np.int64), shift, mode)
    assert got.dtype == np.int64
    assert got.tolist() == [ref_div(x, 1 << shift, mode) for x in xs]


@settings(max_examples=300, deadline=None)
@given(st.integers(-(1 << 40), 1 << 40), st.integers(1, 22), modes)
def test_round_shift_exact_ties(k, shift, mode):
    x = k * (1 << shift) + (1 << (shift - 1))          # x / 2^shift = k + 1/2 exactly
    for v in (x, -x):
        assert int(round_shift(np.array([v]), shift, mode)[0]) == ref_div(v, 1 << shift, mode)


def test_round_shift_tie_table():
    x = np.array([5, 3, 1, -1, -3, -5], dtype=np.int64)   # /2 = 2.5, 1.5, .5, -.5, -1.5, -2.5
    assert round_shift(x, 1, "floor").tolist() == [2, 1, 0, -1, -2, -3]
    assert round_shift(x, 1, "trunc").tolist() == [2, 1, 0, 0, -1, -2]
    assert round_shift(x, 1, "half_up").tolist() == [3, 2, 1, 0, -1, -2]
    assert round_shift(x, 1, "half_even").tolist() == [2, 2, 0, 0, -2, -2]
    assert round_shift(x, 1, "half_away").tolist() == [3, 2, 1, -1, -2, -3]
    assert round_shift(x, 0, "half_up").tolist() == x.tolist()


def test_round_shift_huge_shift_int64_min_tie():
    x = np.array([I64_MIN, I64_MIN + 1, I64_MAX, -1, 0], dtype=np.int64)
    for mode in ROUNDING_MODES:
        for s in (62, 63, 64, 65, 200):
            assert round_shift(x, s, mode).tolist() == [ref_div(int(v), 1 << s, mode) for v in x]


@settings(max_examples=200, deadline=None)
@given(st.lists(int64s, min_size=1, max_size=10), st.lists(st.integers(0, 66), min_size=1, max_size=10), modes)
def test_round_shift_per_element_shift(xs, shifts, mode):
    n = min(len(xs), len(shifts))
    got = round_shift(np.array(xs[:n]), np.array(shifts[:n]), mode)
    assert got.tolist() == [ref_div(x, 1 << s, mode) for x, s in zip(xs[:n], shifts[:n])]


@settings(max_examples=400, deadline=None)
@given(st.lists(int64s, min_size=1, max_size=20),
       st.one_of(st.integers(1, 50), st.integers(1, I64_MAX), st.sampled_from([1, 2, 3, 4, 9, I64_MAX])), modes)
def test_round_div_matches_bigint(xs, d, mode):
    got = round_div(np.array(xs, dtype=np.int64), d, mode)
    assert got.tolist() == [ref_div(x, d, mode) for x in xs]


@settings(max_examples=200, deadline=None)
@given(st.integers(-(1 << 40), 1 << 40), st.integers(1, 1000), modes)
def test_round_div_exact_ties(k, half, mode):
    d = 2 * half
    for v in (k * d + half, -(k * d + half)):
        assert int(round_div(np.array([v]), d, mode)[0]) == ref_div(v, d, mode)


def test_round_div_array_divisor_and_errors():
    x = np.array([7, 7, -7, 9], dtype=np.int64)
    assert round_div(x, np.array([2, 4, 2, 9]), "half_even").tolist() == [4, 2, -4, 1]
    with pytest.raises(HwsimError):
        round_div(x, 0, "floor")
    with pytest.raises(HwsimError):
        round_shift(x, -1, "floor")
    with pytest.raises(HwsimError):
        round_shift(x, 1, "nearest")
    with pytest.raises(HwsimError):
        round_shift(np.array([1.5]), 1, "floor")
