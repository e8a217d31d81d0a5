"""Activation quantizers of the seeds: uniform fixed point (seed 001 Eq. 5, seed 004 §III-A), ENQ and KNQ
(seed 004), the ENQ per-layer E_i search, and SQNR.

Activation scales are powers of two 2^-F (seed 004: V_i = i * 2^-F): a real x is the integer value v with
x ~ v * 2^-F.
"""

from __future__ import annotations

import itertools
import math

import numpy as np

from simulator.encodings import int_range
from simulator.units.enq import qe_encode
from simulator.units.knq import kmeans_centroids

from .weights import _check_int, _eq5_round, _largest_shift, _real_array


def frac_bits(max_value, bits, signed=False) -> int:
    """Largest F with max_value * 2^F <= qmax (qmax = 2^bits - 1 unsigned, 2^(bits-1) - 1 signed).

    The activation scale is then 2^-F (seed 004 §III-A). max_value <= 0 (e.g. an all-zero calibration
    tensor) gives F = 0, scale 1.
    """
    bits = _check_int("bits", bits, 2 if signed else 1, 32)
    max_value = float(max_value)
    if not math.isfinite(max_value):
        raise ValueError(f"max_value must be finite, got {max_value!r}")
    if max_value <= 0:
        return 0
    return _largest_shift(max_value, int_range(bits, signed)[1])


def uniform_codes(x, bits, frac, signed=False):
    """Seed 001 Eq. 5, Q(x) = D * floor(x/D + 1/2) with D = 2^-frac, clamped to the (bits, signed) code
    range of `UniformAct`. Returns the integer values v (int64), x ~ v * 2^-frac."""
    bits = _check_int("bits", bits, 1, 32)
    frac = _check_int("frac", frac, -1100, 1100)
    lo, hi = int_range(bits, signed)
    v = _eq5_round(np.ldexp(_real_array(x, "x"), frac))     # x / D exactly: D is a power of two
    return np.clip(v, lo, hi).astype(np.int64)


def enq_codes(x, e_bits, qm_bits, frac):
    """Seed 004 ENQ: x -> q_m-bit unsigned fixed point (Eq. 5 rounding, clamped to [0, 2^q_m - 1])
    -> QE code floor(v / 2^(q_m - E)) (`simulator.units.enq.qe_encode`). Decode with `EnqAct(E, q_m, frac)`."""
    qm_bits = _check_int("qm_bits", qm_bits, 1, 24)
    e_bits = _check_int("e_bits", e_bits, 1, qm_bits)
    return qe_encode(uniform_codes(x, qm_bits, frac), e_bits, qm_bits)


def knq_centroids(x, t_bits, qm_bits, frac, iters=100, seed=0):
    """Seed 004 KNQ centroids d_0 <= ... <= d_{2^T - 1} (integers in 2^-frac units), Eq. 2 by k-means.

    The activations are put in q_m-bit unsigned fixed point first (`uniform_codes`: Eq. 5 rounding, negatives
    to 0 as after ReLU), which is the seed's pre-processing "saturate at M = (2^q_m - 1) * 2^-F". k-means is
    `simulator.units.knq.kmeans_centroids` (k-means++ init from `seed`, Lloyd, exact integer means). When the
    data has fewer than 2^T distinct values it returns fewer centroids; the last one is repeated to fill
    2^T entries (codes past it decode to the same value).
    """
    t_bits = _check_int("t_bits", t_bits, 1, 8)
    qm_bits = _check_int("qm_bits", qm_bits, 1, 24)
    v = uniform_codes(x, qm_bits, frac)
    cents = kmeans_centroids(v, 1 << t_bits, (1 << qm_bits) - 1, iters=_check_int("iters", iters, 0, 1 << 30),
                             seed=_check_int("seed", seed, 0, (1 << 63) - 1))
    return np.concatenate([cents, np.full((1 << t_bits) - cents.size, cents[-1])]).astype(np.int64)


def knq_thresholds(centroids, rule="seed"):
    """Comparator thresholds for `KnqAct` (code = #{t : x >= t}).

    rule "seed": d_1 .. d_{n-1}, seed 004's "x -> k if d_k <= x < d_{k+1}" (KnqAct's default).
    rule "nearest": ceil((d_{k-1} + d_k) / 2), k = 1 .. n-1: x goes to its nearest centroid, ties to the
    upper one (integer x >= ceil(m) <=> x >= m).
    """
    c = np.asarray(centroids)
    if c.ndim != 1 or c.size < 1 or c.dtype.kind not in "iu":
        raise ValueError("centroids must be a non-empty 1-d integer array")
    c = c.astype(np.int64)
    if (c[1:] < c[:-1]).any():
        raise ValueError("centroids must be non-decreasing")
    if rule == "seed":
        return c[1:].copy()
    if rule == "nearest":
        return (c[:-1] + c[1:] + 1) // 2                    # floor division: ceil of the midpoint
    raise ValueError(f"rule must be 'seed' or 'nearest', got {rule!r}")


def enq_search(evaluate, n_layers, qm_bits, budget, order="forward", exhaustive=False, sizes=None):
    """Seed 004's per-layer ENQ widths E_i: the smallest E_i whose metric stays within `budget` of the
    reference (the seed: accuracy "close to A'", the q_m-bit uniform accuracy).

    evaluate(e_list) -> metric, higher is better; reference = evaluate([q_m] * n_layers).
    Greedy (default): the seed used exhaustive search over combinations; this is its coordinate version.
    Every layer starts at q_m; layers are visited once in `order` ("forward" or "backward"), each set to the
    smallest E in 1..q_m with metric >= reference - budget while the others keep their current choice.
    At most 1 + n_layers * q_m evaluations.
    exhaustive=True: every combination in {1..q_m}^n (q_m^n evaluations, small n only), returning the one
    with the smallest sum(sizes_i * E_i) (activation storage; sizes default to 1) among those within budget;
    ties go to the higher metric, then the lexicographically smallest E list.
    """
    n_layers = _check_int("n_layers", n_layers, 1, 1 << 20)
    qm_bits = _check_int("qm_bits", qm_bits, 1, 24)
    if order not in ("forward", "backward"):
        raise ValueError(f"order must be 'forward' or 'backward', got {order!r}")
    sizes = [1] * n_layers if sizes is None else list(sizes)
    if len(sizes) != n_layers:
        raise ValueError(f"sizes has {len(sizes)} entries, expected n_layers = {n_layers}")
    budget = float(budget)
    if not (math.isfinite(budget) and budget >= 0):
        raise ValueError(f"budget must be a finite number >= 0, got {budget!r}")
    floor_metric = evaluate([qm_bits] * n_layers) - budget
    if exhaustive:
        best_key, best = None, None
        for combo in itertools.product(range(1, qm_bits + 1), repeat=n_layers):
            metric = evaluate(list(combo))
            if metric >= floor_metric:
                key = (sum(s * e for s, e in zip(sizes, combo)), -metric, combo)
                if best_key is None or key < best_key:
                    best_key, best = key, list(combo)
        return best                                         # [q_m] * n always qualifies
    chosen = [qm_bits] * n_layers
    layers = range(n_layers) if order == "forward" else range(n_layers - 1, -1, -1)
    for i in layers:
        for e in range(1, chosen[i]):                       # chosen[i] itself is known to qualify
            trial = chosen[:i] + [e] + chosen[i + 1:]
            if evaluate(trial) >= floor_metric:
                chosen = trial
                break
    return chosen


def sqnr_db(reference, test) -> float:
    """Signal-to-quantization-noise ratio 10 * log10(sum ref^2 / sum (ref - test)^2) in dB.

    +inf when test equals reference (no noise); -inf when the reference is all zero but the test is not.
    """
    ref = np.asarray(reference, dtype=np.float64)
    tst = np.asarray(test, dtype=np.float64)
    if ref.shape != tst.shape:
        raise ValueError(f"shape mismatch: reference {ref.shape} vs test {tst.shape}")
    noise = float(np.sum((ref - tst) ** 2))
    signal = float(np.sum(ref ** 2))
    if noise == 0:
        return math.inf
    if signal == 0:
        return -math.inf
    return 10.0 * math.log10(signal / noise)
