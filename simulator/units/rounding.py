"""Rounding right shift and rounding divider: the one place every rounding mode is defined.

For an integer x and a divisor D (D = 2^shift for `round_shift`, D = d for `round_div`) the result is the
exact rational x / D rounded to an integer:

    "floor"      floor(x / D)                        (arithmetic right shift)
    "trunc"      toward zero                          (C integer division)
    "half_up"    nearest, ties toward +inf            floor(x / D + 1/2)
    "half_even"  nearest, ties to the even integer    (IEEE / numpy.rint)
    "half_away"  nearest, ties away from zero         (std::round, gemmlowp RoundingDivideByPOT)

Hardware view: q = x >> shift (or the divider's floor quotient) and the remainder r = x - q*D in [0, D);
every mode is q plus a 0/1 correction computed from r (compared with D - r, so nothing can overflow), the
sign of x and the parity of q. shift 0 / d 1 is the identity.

All arithmetic is int64 and exact for every int64 input: no intermediate ever leaves the int64 range
(shifts of 64 or more are handled explicitly; the only possible tie there is x = -2^63, shift = 64).
"""

from __future__ import annotations

import numpy as np

from simulator.errors import HwsimError

ROUNDING_MODES = ("floor", "half_up", "half_even", "half_away", "trunc")

INT64_MIN = -(1 << 63)
INT64_MAX = (1 << 63) - 1


def as_int64(x, name: str = "x") -> np.ndarray:
    """`x` as an int64 array; any integer dtype whose values fit, otherwise HwsimError (never a silent cast)."""
    a = np.asarray(x)
    if a.dtype == np.int64:
        return a
    if a.dtype == np.bool_ or a.dtype.kind not in "iu":
        if a.dtype == object:
            try:
                vals = [int(v) for v in a.ravel()]
            except (TypeError, ValueError):
                raise HwsimError(f"{name} must hold integers") from None
            if any(not (INT64_MIN <= v <= INT64_MAX) or v != e for v, e in zip(vals, a.ravel())):
                raise HwsimError(f"{name}: values must be integers in the int64 range")
            return np.array(vals, dtype=np.int64).reshape(a.shape)
        if a.size == 0:
            return a.astype(np.int64)
        raise HwsimError(f"{name} must be an integer array, got dtype {a.dtype}")
    if a.dtype == np.uint64 and a.size and int(a.max()) > INT64_MAX:
        raise HwsimError(f"{name}: value {int(a.max())} does not fit in int64")
    return a.astype(np.int64)


def check_mode(mode: str) -> str:
    if mode not in ROUNDING_MODES:
        raise HwsimError(f"unknown rounding mode {mode!r}; expected one of {', '.join(ROUNDING_MODES)}")
    return mode


def _correct(q: np.ndarray, above: np.ndarray, tie: np.ndarray, nonzero: np.ndarray,
             negative: np.ndarray, mode: str) -> np.ndarray:
    """q = floor quotient; the 0/1 correction of each mode from the remainder comparisons."""
    if mode == "floor":
        return q
    if mode == "half_up":
        inc = above | tie
    elif mode == "half_even":
        inc = above | (tie & ((q & 1) == 1))
    elif mode == "half_away":
        inc = above | (tie & ~negative)
    else:  # trunc
        inc = nonzero & negative
    return q + inc.astype(np.int64)


def round_shift(x, shift, mode: str) -> np.ndarray:
    """x / 2^shift rounded by `mode`. `shift` is an int >= 0 or an int array broadcastable to x (per channel)."""
    check_mode(mode)
    x = as_int64(x, "x")
    s = np.asarray(shift)
    if s.dtype.kind not in "iu" or s.dtype == np.bool_:
        raise HwsimError(f"shift must be an integer, got {shift!r}")
    if s.size and int(s.min()) < 0:
        raise HwsimError(f"shift must be >= 0, got {int(s.min())}")
    s = s.astype(np.int64)
    if s.ndim == 0 and int(s) == 0:
        return x.copy()
    x, s = np.broadcast_arrays(x, s)
    big = s >= 64                      # |x| <= 2^63 <= 2^(s-1): quotient 0 or -1, the only tie x=-2^63, s=64
    sc = np.minimum(s, 63)
    q = x >> sc                        # floor(x / 2^s) also for s >= 63 (0 or -1)
    mask = ~(np.int64(-1) << sc)       # 2^s - 1 (s <= 63), no overflow
    r = x & mask                       # x mod 2^s in [0, 2^s)
    half = np.where(sc > 0, np.int64(1) << np.maximum(sc - 1, 0), 0)
    above = r > half
    tie = (r == half) & (sc > 0)
    nonzero = r != 0
    negative = x < 0
    if big.any():
        # s >= 64: r = x mod 2^s = x + 2^s for negative x does not fit; decide from x directly.
        r_half_tie = (s == 64) & (x == INT64_MIN)          # x / 2^64 = -1/2 exactly
        above = np.where(big, negative & ~r_half_tie, above)  # negative x: r = x + 2^s > 2^(s-1)
        tie = np.where(big, r_half_tie, tie)
        nonzero = np.where(big, x != 0, nonzero)
    return _correct(q, above, tie, nonzero, negative, mode)


def round_div(x, d, mode: str) -> np.ndarray:
    """x / d rounded by `mode`; `d` an int > 0 or an int array of divisors broadcastable to x."""
    check_mode(mode)
    x = as_int64(x, "x")
    dv = np.asarray(d)
    if dv.dtype.kind not in "iu" or dv.dtype == np.bool_:
        raise HwsimError(f"divisor must be an integer, got {d!r}")
    if dv.size and int(dv.min()) <= 0:
        raise HwsimError(f"divisor must be > 0, got {int(dv.min())}")
    dv = as_int64(dv, "divisor")
    q, r = np.divmod(x, dv)            # floor quotient, remainder in [0, d): numpy computes both exactly
    other = dv - r                     # d - r > 0, no overflow
    return _correct(q, r > other, r == other, r != 0, x < 0, mode)


def round_float(x, mode: str) -> np.ndarray:
    """A float array rounded to integers (still float64) with the same five modes, for the input quantizer and
    the float reference. Exact: each mode is one IEEE operation on the already-rounded float value."""
    check_mode(mode)
    x = np.asarray(x, dtype=np.float64)
    if mode == "floor":
        return np.floor(x)
    if mode == "trunc":
        return np.trunc(x)
    if mode == "half_even":
        return np.rint(x)
    if mode == "half_up":
        r = np.floor(x)
        return r + ((x - r) >= 0.5)
    r = np.trunc(x)  # half_away
    return r + np.sign(x) * (np.abs(x - r) >= 0.5)
