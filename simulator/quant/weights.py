"""Weight quantizers of the seed papers, on numpy arrays (axis 0 = output channel).

Every scale returned for the engine is exact for hwsim's float64 requantizer: either a power of two or a
float64 with at most 8 significant mantissa bits (`mantissa8`), so acc (< 2^31) times the scale fits in the
53-bit mantissa. TWN's alpha, Hwang's step and XNOR's alpha are returned as the exact formula values; pass
them through `exact_scale` before putting them in a model.

Rounding: the seeds' uniform rule Q(w) = D*floor(w/D + 1/2) (seed 001 Eq. 5) unless a docstring says
otherwise.
"""

from __future__ import annotations

import math

import numpy as np

# ------------------------------------------------------------------------------------------- helpers


def _check_int(name, value, lo, hi):
    """`value` as an int in [lo, hi], else ValueError (bool is not an int here)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not lo <= value <= hi:
        raise ValueError(f"{name} must be an integer in [{lo}, {hi}], got {value!r}")
    return int(value)


def _real_array(w, name="w", min_ndim=0):
    a = np.asarray(w, dtype=np.float64)
    if a.size == 0:
        raise ValueError(f"{name} is empty")
    if a.ndim < min_ndim:
        raise ValueError(f"{name} needs an output-channel axis (axis 0), got a {a.ndim}-d array")
    if not np.isfinite(a).all():
        raise ValueError(f"{name} contains NaN or infinity")
    return a


def _eq5_round(x):
    """Seed 001 Eq. 5 in step units: floor(x + 1/2) (ties toward +inf)."""
    return np.floor(np.asarray(x, dtype=np.float64) + 0.5)


def _channel_view(w, per_channel):
    """[groups, n] view: one row per output channel, or one row for the whole tensor."""
    return w.reshape(w.shape[0], -1) if per_channel else w.reshape(1, -1)


def _broadcast_rows(values, w, per_channel):
    """Per-row values shaped to broadcast against w (axis 0)."""
    return values.reshape((-1,) + (1,) * (w.ndim - 1)) if per_channel else values[0]


def mantissa8(s: float) -> float:
    """Round a positive scale UP to at most 8 significant bits (non-positive or non-finite -> 1.0).

    acc * scale with |acc| < 2^31 then needs at most 39 mantissa bits: exact in float64.
    Rounding up (not to nearest) keeps max|w| / scale <= qmax, so no code ever saturates.
    """
    s = float(s)
    if not (math.isfinite(s) and s > 0):
        return 1.0
    m, e = math.frexp(s)                       # s = m * 2^e, m in [0.5, 1)
    return math.ldexp(math.ceil(m * 256.0) / 256.0, e)


def exact_scale(alpha: float) -> float:
    """A formula scale (TWN alpha, Hwang step, XNOR alpha) made exact for the requantizer: `mantissa8`."""
    return mantissa8(alpha)


def _largest_shift(amax, limit, strict=False):
    """Largest integer f with amax * 2^f <= limit (< limit if strict); amax > 0. Exact: scaling by 2^f is."""
    f = math.frexp(limit)[1] - math.frexp(amax)[1]          # within one of the answer, never overflows
    fits = (lambda g: math.ldexp(amax, g) < limit) if strict else (lambda g: math.ldexp(amax, g) <= limit)
    while fits(f + 1):
        f += 1
    while not fits(f):
        f -= 1
    return f


def _nearest_index(values, sorted_points):
    """Index of the nearest of `sorted_points` (non-decreasing) for each value; a tie goes to the upper point
    (seed 000's threshold form l_j if delta_{j-1} <= W < delta_j, delta = the midpoints)."""
    mids = (sorted_points[:-1] + sorted_points[1:]) / 2.0
    return np.searchsorted(mids, values, side="right").astype(np.int64)


# ------------------------------------------------------------------------------------------- uniform


def uniform_weights(w, bits, per_channel=True):
    """Symmetric uniform weights (seed 001 Eq. 5, Q(w) = D*floor(w/D + 1/2), with D = the scale).

    Returns (codes int64 shaped like w, scales float64 [co] or [1]). Codes lie in [-qmax, qmax],
    qmax = 2^(bits-1) - 1; scale = mantissa8(max|w_c| / qmax) (an all-zero channel gets scale 1.0, codes 0).
    Decode with `UniformW(bits, True, scales)`: real = code * scale.
    """
    bits = _check_int("bits", bits, 2, 16)
    w = _real_array(w, min_ndim=1)
    qmax = (1 << (bits - 1)) - 1
    amax = np.abs(_channel_view(w, per_channel)).max(axis=1)
    scales = np.array([mantissa8(a / qmax) if a > 0 else 1.0 for a in amax], dtype=np.float64)
    codes = np.clip(_eq5_round(w / _broadcast_rows(scales, w, per_channel)), -qmax, qmax)
    return codes.astype(np.int64), scales


# ------------------------------------------------------------------------------------------- k-means / codebooks


def lloyd_kmeans(values, k, iters=300, init="linear"):
    """Seed 000's K-means with Lloyd's optimisation, in 1-D.

    Lloyd: assign every value to its nearest centroid (ties to the upper one), move every centroid to the mean
    of its cell (an empty cell keeps its centroid), repeat until no assignment changes or `iters` steps.
    In 1-D the cells are intervals, so the result is seed 000's threshold form W^_i = l_j if
    delta_{j-1} <= W_i < delta_j, delta_j the midpoint between l_j and l_{j+1}.

    init "linear": linspace(min, max, k) (Deep Compression's recommended init); "density": the data's
    quantiles at (j + 1/2) / k (equal-probability bins). Deterministic.

    Returns (centroids float64 sorted [k], assignment int64 shaped like `values`).
    With at most k distinct values the centroids are exactly the distinct values (zero error), padded to
    length k by repeating the largest; no value is assigned to the padding.
    Equal initial centroids (heavy ties under "density") may stay equal: one of them keeps an empty cell.
    """
    k = _check_int("k", k, 1, 1 << 16)
    iters = _check_int("iters", iters, 0, 1 << 30)
    if init not in ("linear", "density"):
        raise ValueError(f"init must be 'linear' or 'density', got {init!r}")
    x = _real_array(values, "values")
    v = x.ravel()
    distinct = np.unique(v)
    if distinct.size <= k:
        cent = np.concatenate([distinct, np.full(k - distinct.size, distinct[-1])])
        return cent, np.searchsorted(distinct, v).astype(np.int64).reshape(x.shape)

    if init == "linear":
        cent = np.linspace(v.min(), v.max(), k)
    else:
        cent = np.quantile(v, (np.arange(k) + 0.5) / k)
    assign = _nearest_index(v, cent)
    for _ in range(iters):
        sums = np.bincount(assign, weights=v, minlength=k)
        counts = np.bincount(assign, minlength=k)
        cent = np.where(counts > 0, sums / np.maximum(counts, 1), cent)
        order = np.argsort(cent, kind="stable")
        if (order != np.arange(k)).any():           # an empty cell's old centroid was overtaken: relabel
            cent = cent[order]
            assign = np.argsort(order)[assign]
        new = _nearest_index(v, cent)
        if np.array_equal(new, assign):
            break
        assign = new
    return cent, assign.reshape(x.shape)


def fixed_point_table(centroids, table_bits):
    """Codebook entries as signed `table_bits` integers with a power-of-two scale 2^-f.

    f is the largest integer for which every rounded entry rint(c * 2^f) stays within
    +-(2^(table_bits-1) - 1), i.e. max|c| * 2^f < qmax + 1/2 (rint, half to even; qmax is odd so the tie
    rounds out of range). All-zero centroids: f = 0. Returns (table int64, scale = 2^-f).
    """
    table_bits = _check_int("table_bits", table_bits, 2, 16)
    c = _real_array(centroids, "centroids")
    qmax = (1 << (table_bits - 1)) - 1
    amax = float(np.abs(c).max())
    f = _largest_shift(amax, qmax + 0.5, strict=True) if amax > 0 else 0
    if math.ldexp(1.0, -f) == 0:
        raise ValueError(f"centroids up to {amax:g} are too small for a float64 power-of-two scale")
    table = np.rint(np.ldexp(c, f)).astype(np.int64)
    return table, math.ldexp(1.0, -f)


def kmeans_weights(w, bits, groups=1, table_bits=8):
    """k-means codebook weights (seed 000 Lloyd; seed 001 SIQ's k-means step; Deep Compression's layout).

    One 2^bits-entry Lloyd codebook per group of co/groups consecutive output channels (linear init), its
    entries stored by `fixed_point_table`. Indices are the Lloyd assignment (nearest real centroid).
    Returns (indices int64 shaped like w, table int64 [groups, 2^bits], scales float64 [groups]);
    real = table[group(c), index] * scales[group(c)], i.e.
    `CodebookW(bits, table_bits, group_size=co // groups if groups > 1 else 0, scale=scales)`.
    """
    bits = _check_int("bits", bits, 1, 8)
    w = _real_array(w, min_ndim=1)
    co = w.shape[0]
    groups = _check_int("groups", groups, 1, co)
    if co % groups:
        raise ValueError(f"groups ({groups}) must divide the {co} output channels")
    size = co // groups
    indices = np.empty(w.shape, dtype=np.int64)
    tables, scales = [], []
    for g in range(groups):
        cent, idx = lloyd_kmeans(w[g * size:(g + 1) * size], 1 << bits)
        table, scale = fixed_point_table(cent, table_bits)
        indices[g * size:(g + 1) * size] = idx
        tables.append(table)
        scales.append(scale)
    return indices, np.stack(tables), np.array(scales, dtype=np.float64)


# ------------------------------------------------------------------------------------------- ternary / binary


def twn_ternary(w):
    """Ternary weight networks (Li et al., seed 002 §III-B.2, Eq. 5, 8, 9), one threshold per layer.

    Delta = 0.7 * mean|w| (TWN's rule of thumb between the seed's 2/3*E|w| (uniform) and 0.75*E|w|
    (Gaussian)); code = +1 if w > Delta, -1 if w < -Delta, else 0; alpha = mean of |w_i| over |w_i| > Delta
    (Eq. 8; the seed's text writes the set I_Delta with <=, TWN's paper defines it with >).
    Returns (codes int64 in {-1, 0, 1}, delta, alpha), alpha the exact formula value (1.0 if no weight
    exceeds Delta, i.e. all weights are zero).
    """
    w = _real_array(w)
    a = np.abs(w)
    delta = 0.7 * float(a.mean())
    big = a > delta
    codes = np.where(big, np.sign(w), 0.0).astype(np.int64)
    alpha = float(a[big].mean()) if big.any() else 1.0
    return codes, delta, alpha


def _ternary_error(w, step):
    """Sum of (w - step * clip(round(w/step), -1, 1))^2 for each step (vectorised over steps)."""
    a = np.abs(np.ravel(w))[None, :]
    s = np.asarray(step, dtype=np.float64)[:, None]
    return np.where(a >= s / 2, (a - s) ** 2, a ** 2).sum(axis=1)


def hwang_ternary(w, candidates=2048):
    """Hwang & Sung's L2-optimal ternary step per layer (seed 002 §III-A.2, step 1).

    Minimises E(D) = sum (w - D * clip(round(w/D), -1, 1))^2 exactly instead of by a grid of D values:
    for magnitudes sorted descending a_1 >= a_2 >= ..., any D zeroes all but some top-n magnitudes, so
    E(D) >= sum a^2 - S_n^2 / n (S_n = a_1 + ... + a_n, equality at D = S_n / n); at D* = S_n*/n* with
    n* = argmax_n S_n^2 / n the rounding is at least as good as that partition, so D* attains the global
    lower bound min_n (sum a^2 - S_n^2 / n). `candidates` is accepted for API compatibility and unused (the
    exact optimum needs no grid; tests check it against a dense brute-force grid).
    Codes: +-1 where |w| >= D/2 (round half away from zero), else 0.
    Returns (codes int64 in {-1, 0, 1}, step) with step the exact optimum (1.0 for an all-zero tensor).
    """
    w = _real_array(w)
    a = np.sort(np.abs(w).ravel())[::-1]
    if a[0] == 0:
        return np.zeros(w.shape, dtype=np.int64), 1.0
    prefix = np.cumsum(a)
    n = np.arange(1, a.size + 1)
    best = int(np.argmax(prefix ** 2 / n))
    step = float(prefix[best] / n[best])
    codes = np.where(np.abs(w) >= step / 2, np.sign(w), 0.0).astype(np.int64)
    return codes, step


def xnor_binary(w):
    """XNOR-Net binary weights (seed 002 §III-B.1, Eq. 2): B = sign(W), alpha = mean|W| per output channel.

    Codes follow `BinaryW`: bit 1 means -1 (w < 0), bit 0 means +1 (w >= 0, sign(0) = +1).
    Returns (codes int64 {0, 1} shaped like w, alpha float64 [co]) with alpha the exact formula value
    (0.0 for an all-zero channel; `exact_scale` maps it to 1.0).
    """
    w = _real_array(w, min_ndim=1)
    codes = (w < 0).astype(np.int64)
    alpha = np.abs(w.reshape(w.shape[0], -1)).mean(axis=1)
    return codes, alpha


def xnor_beta(x) -> float:
    """XNOR-Net input scale beta = mean|X| (seed 002 Eq. 3), taken over the whole calibration tensor.

    Simplification: XNOR-Net computes one beta per sub-tensor X under each kernel position (its K map); hwsim's
    BinaryAct carries one scale per tensor, so this is the mean over every element of `x`.
    """
    return float(np.abs(_real_array(x, "x")).mean())


# ------------------------------------------------------------------------------------------- powers of two


def pow2_weights(w, bits, per_channel=True):
    """Power-of-two weights for shift-add PEs, decoded by `simulator.encodings.Pow2W`.

    Code c: value = sign(c) * 2^(|c|-1), 0 for c = 0, with |c| <= qmax = 2^(bits-1) - 1 (symmetric; Pow2W
    also accepts -2^(bits-1), which this quantizer never uses). bits in 2..5 as Pow2W.
    Scale = a power of two per channel chosen as INQ does (n1 = floor(log2(4/3 * max|w_c|))): the top value
    2^(qmax-1) * scale equals 2^n1, so max|w_c| / scale lies in [0.75, 1.5) * top and rounds to the top code.
    Each weight goes to the nearest representable value in the linear domain (0 is representable), ties away
    from zero; magnitudes above the top saturate. All-zero channel: scale 1.0, codes 0.
    Returns (codes int64 shaped like w, scales float64 [co] or [1]).
    """
    bits = _check_int("bits", bits, 2, 5)
    w = _real_array(w, min_ndim=1)
    qmax = (1 << (bits - 1)) - 1
    scales = []
    for amax in np.abs(_channel_view(w, per_channel)).max(axis=1):
        if amax == 0:
            scales.append(1.0)
            continue
        n1 = math.frexp(amax)[1] - 1                   # 2^n1 <= amax < 2^(n1+1)
        while amax >= math.ldexp(1.5, n1):             # want 0.75 * 2^n1 <= amax < 1.5 * 2^n1
            n1 += 1
        while amax < math.ldexp(0.75, n1):
            n1 -= 1
        scales.append(math.ldexp(1.0, n1 - (qmax - 1)))
    scales = np.array(scales, dtype=np.float64)
    mag = np.abs(w) / _broadcast_rows(scales, w, per_channel)     # exact: division by a power of two
    # midpoints between the magnitudes 0, 1, 2, ..., top; side="right" sends ties up (away from zero)
    mids = np.array([0.5] + [1.5 * 2.0 ** j for j in range(qmax - 1)])
    codes = np.sign(w) * np.searchsorted(mids, mag, side="right")
    return codes.astype(np.int64), scales


# ------------------------------------------------------------------------------------------- dictionary


def dictionary_weights(ws, entries, init="uniform", table_bits=8):
    """Seed 003's dictionary-based weights: one small table shared by every layer, plus per-layer scaling
    factors (abstract: "a limited number of floating-point entries for all the synaptic weights, with proper
    initialization and scaling factors"; "uniform/non-uniform initialization").

    - layer scale s_L = mantissa8(max|w_L|): each layer is normalised into [-1, 1];
    - table entries on the pooled normalised weights: "uniform" = linspace(-1, 1, entries), "kmeans" =
      Lloyd k-means (non-uniform, seed 000's algorithm, linear init);
    - entries stored as signed table_bits fixed point with a power-of-two scale (`fixed_point_table`; the
      seed's entries are floating point, hwsim's LUT holds integers);
    - indices = the nearest stored entry (ties to the upper one, as seed 000's thresholds).
    Real weight of layer L = table[idx] * table_scale * layer_scales[L] (a power of two times an 8-bit
    mantissa: still exact). A layer is `CodebookW(ceil(log2 entries), table_bits, 0,
    (table_scale * layer_scales[L],))` with the table as its one-row codebook.
    Returns (table int64 [entries], table_scale, layer_scales list[float], indices list[int64 arrays]).
    """
    entries = _check_int("entries", entries, 2, 256)
    if init not in ("uniform", "kmeans"):
        raise ValueError(f"init must be 'uniform' or 'kmeans', got {init!r}")
    if not isinstance(ws, (list, tuple)) or not ws:
        raise ValueError("ws must be a non-empty list of weight arrays")
    ws = [_real_array(w, f"ws[{i}]") for i, w in enumerate(ws)]
    layer_scales = [mantissa8(float(np.abs(w).max())) if np.abs(w).max() > 0 else 1.0 for w in ws]
    normalised = [w / s for w, s in zip(ws, layer_scales)]
    if init == "uniform":
        real_entries = np.linspace(-1.0, 1.0, entries)
    else:
        real_entries, _ = lloyd_kmeans(np.concatenate([n.ravel() for n in normalised]), entries)
    table, table_scale = fixed_point_table(real_entries, table_bits)
    stored = table * table_scale                       # sorted: rounding keeps the order (non-decreasing)
    indices = [_nearest_index(n, stored) for n in normalised]
    return table, table_scale, layer_scales, indices
