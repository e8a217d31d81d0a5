"""KNQ (seed 004, section III): k-means nonuniform quantizer QK, centroid converter CK, centroid fitting.

Centroids d_0 < d_1 < ... < d_{2^T - 1} (integers in the q_m-bit fixed-point domain). The seed maps

    x -> k   if d_k <= x < d_{k+1};     x >= d_{2^T - 1} -> 2^T - 1

QK is a bank of 2^T - 1 comparators `x >= t_j` with thresholds t_j = d_j (j = 1 .. 2^T - 1) feeding the
priority encoder DEC2; with sorted thresholds the comparator outputs form a thermometer code, so the priority
encoder's output is the number of comparators that fire:

    qk_encode(x, thresholds) = #{ j : x >= t_j }

This equals the seed's rule for d_0 <= x, and maps every x < d_1 (including x < d_0, which the seed leaves
undefined; d_0 = 0 for post-ReLU data) to code 0. `qk_encode_tree` computes the same function the way a
comparator tree / binary search does (T sequential compares per value instead of 2^T - 1 parallel ones): same
codes, different hardware cost.

Thresholds must be non-decreasing integers. The seed's own Table IV has repeated centroids (conv1_2:
d_0..d_12 = 0); with repeats the count is still the seed's k = the largest index with d_k <= x, so both
encoders accept them. Any number of thresholds is accepted (2^T - 1 in the seed's hardware; fewer when
`kmeans_centroids` merged duplicate centroids); codes are 0 .. len(thresholds).

CK is a mux: ck_decode(k, centroids) = centroids[k]; a code outside 0 .. len(centroids) - 1 is an error.

`kmeans_centroids` fits the centroids as the seed does: Lloyd's k-means on the 1-D integer samples after the
pre-processing that saturates every sample at M = `max_value` (seed: M = 2^q_m - 1 in fixed-point units).
"""

from __future__ import annotations

import numpy as np

from simulator.errors import HwsimError
from simulator.units.rounding import as_int64, round_div


def _thresholds(thresholds) -> np.ndarray:
    t = as_int64(thresholds, "KNQ thresholds")
    if t.ndim == 0:
        t = t.reshape(1)
    if t.ndim != 1:
        raise HwsimError(f"KNQ thresholds must be 1-D, got shape {t.shape}")
    decreasing = t[1:] < t[:-1]  # a comparison, not np.diff: differences of extreme values overflow int64
    if decreasing.any():
        i = int(np.nonzero(decreasing)[0][0])
        raise HwsimError(f"KNQ thresholds must be non-decreasing: t[{i}]={int(t[i])} > t[{i + 1}]={int(t[i + 1])}")
    return t


def thresholds_from_centroids(centroids) -> np.ndarray:
    """The comparator thresholds d_1 .. d_{n-1} of a sorted centroid table d_0 .. d_{n-1}."""
    c = _thresholds(centroids)
    return c[1:].copy()


def qk_encode(x, thresholds) -> np.ndarray:
    """QK as a comparator bank + priority encoder: code = number of thresholds t with x >= t."""
    t = _thresholds(thresholds)
    x = as_int64(x, "x")
    codes = np.zeros(x.shape, dtype=np.int64)
    for tj in t:                                  # one comparator per threshold, all in parallel in hardware
        codes += x >= tj
    return codes


def qk_encode_tree(x, thresholds) -> np.ndarray:
    """QK as a comparator tree (branch-free binary search over the thresholds); equal to `qk_encode`."""
    t = _thresholds(thresholds)
    x = as_int64(x, "x")
    n = int(t.size)
    levels = n.bit_length()                       # a complete tree of 2^levels - 1 >= n comparators
    codes = np.zeros(x.shape, dtype=np.int64)
    if n == 0:
        return codes
    # pad to 2^levels - 1 thresholds with "never fires" slots (beyond the last real one)
    for level in range(levels - 1, -1, -1):
        probe = codes + (1 << level)              # candidate code; it fires iff x >= t[probe - 1]
        valid = probe <= n
        idx = np.minimum(probe, n) - 1
        fire = valid & (x >= t[idx])
        codes = np.where(fire, probe, codes)
    return codes


def ck_decode(codes, centroids) -> np.ndarray:
    """CK: the centroid mux, code k -> centroids[k]."""
    c = as_int64(centroids, "KNQ centroids")
    if c.ndim != 1 or c.size == 0:
        raise HwsimError(f"KNQ centroids must be a non-empty 1-D array, got shape {c.shape}")
    k = as_int64(codes, "KNQ codes")
    bad = (k < 0) | (k >= c.size)
    if bad.any():
        raise HwsimError(f"KNQ code {int(k[bad].ravel()[0])} out of range (0..{c.size - 1})")
    return c[k]


def kmeans_centroids(samples, n_centroids: int, max_value: int, iters: int = 100, seed: int = 0) -> np.ndarray:
    """Lloyd k-means on 1-D integer samples saturated at `max_value`; sorted unique integer centroids.

    Deterministic for given arguments. Works on the histogram of distinct sample values (exact integer sums).
    - samples > max_value are set to max_value first (seed 004's pre-processing); negatives are kept.
    - initialisation: k-means++ over the distinct values weighted by their counts, `np.random.default_rng(seed)`.
    - Lloyd steps in float64 (assignment to the nearest centroid, ties to the lower one; empty clusters keep
      their centroid) until the assignment stops changing or `iters` steps were done.
    - final centroids: each cluster's exact integer mean rounded half to even; sorted; duplicates merged
      (np.unique), so the result can be shorter than `n_centroids` (always when there are fewer distinct
      values than centroids; the result is then exactly the distinct values).
    """
    for name, v in (("n_centroids", n_centroids), ("max_value", max_value), ("iters", iters), ("seed", seed)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            raise HwsimError(f"kmeans_centroids: {name} must be an integer, got {v!r}")
    if n_centroids < 1:
        raise HwsimError(f"kmeans_centroids: n_centroids must be >= 1, got {n_centroids}")
    if iters < 0:
        raise HwsimError(f"kmeans_centroids: iters must be >= 0, got {iters}")
    s = as_int64(samples, "samples").ravel()
    if s.size == 0:
        raise HwsimError("kmeans_centroids: no samples")
    s = np.minimum(s, int(max_value))
    values, counts = np.unique(s, return_counts=True)
    if values.size <= n_centroids:
        return values.astype(np.int64)
    # exact-sum safety: |value| * count summed must stay in int64
    span = int(np.abs(values).max()) * int(s.size)
    if span >= 1 << 62:
        raise HwsimError("kmeans_centroids: samples too large for exact int64 cluster sums")
    rng = np.random.default_rng(int(seed))
    vf = values.astype(np.float64)
    w = counts.astype(np.float64)
    # k-means++ (weighted by counts)
    chosen = [int(rng.choice(values.size, p=w / w.sum()))]
    d2 = (vf - vf[chosen[0]]) ** 2
    for _ in range(1, n_centroids):
        p = w * d2
        tot = p.sum()
        if tot <= 0:
            break
        nxt = int(rng.choice(values.size, p=p / tot))
        chosen.append(nxt)
        d2 = np.minimum(d2, (vf - vf[nxt]) ** 2)
    cent = np.sort(vf[np.unique(chosen)])
    assign = None
    for _ in range(int(iters)):
        new = _assign(vf, cent)
        if assign is not None and np.array_equal(new, assign):
            break
        assign = new
        sums = np.bincount(assign, weights=w * vf, minlength=cent.size)
        cnt = np.bincount(assign, weights=w, minlength=cent.size)
        nz = cnt > 0
        cent = np.where(nz, sums / np.where(nz, cnt, 1.0), cent)
        cent = np.sort(cent)
    assign = _assign(vf, cent)
    # exact integer means, rounded half to even
    k = cent.size
    isums = np.zeros(k, dtype=np.int64)
    icnt = np.zeros(k, dtype=np.int64)
    np.add.at(isums, assign, values * counts)
    np.add.at(icnt, assign, counts)
    nz = icnt > 0
    out = round_div(isums[nz], icnt[nz], "half_even")
    return np.unique(out).astype(np.int64)


def _assign(values: np.ndarray, cent: np.ndarray) -> np.ndarray:
    """Index of the nearest centroid (sorted `cent`), ties to the lower centroid."""
    if cent.size == 1:
        return np.zeros(values.shape, dtype=np.intp)
    mids = (cent[:-1] + cent[1:]) / 2.0
    return np.searchsorted(mids, values, side="left")
