"""Per-tensor bit allocation by SQNR (Lin et al., "Fixed point quantization of deep convolutional networks",
as summarised in seed 002 §III-A.1).

The seed's two relations:
  * the output noise adds up: 1/gamma_out = sum_i 1/gamma_i over every quantized weight and activation tensor
    (seed Eq. 1; its printed left side "gamma_output" is missing the 1/), gamma linear (not dB);
  * 10*log10(gamma) = kappa * beta: SQNR in dB grows linearly with the bit width beta (kappa = dB per bit,
    the quantization efficiency; `kappa_beta_fit` also fits an offset).
"Combining this relation with (1), it is trivial to formulate an optimization problem that minimizes the
bitwidth beta_i for each layer i": `allocate_bits` solves it exactly on integer widths with measured or
modelled SQNRs; `lin_closed_form` is the continuous Lagrange solution of the kappa*beta model.
"""

from __future__ import annotations

import math

import numpy as np

from .weights import _check_int


def kappa_beta_fit(bits, sqnr_db):
    """Least squares fit of SQNR_dB ~ kappa * bits + offset; returns (kappa, offset)."""
    b = np.asarray(bits, dtype=np.float64).ravel()
    s = np.asarray(sqnr_db, dtype=np.float64).ravel()
    if b.shape != s.shape:
        raise ValueError(f"bits and sqnr_db differ in length ({b.size} vs {s.size})")
    if not (np.isfinite(b).all() and np.isfinite(s).all()):
        raise ValueError("bits and sqnr_db must be finite (drop lossless +inf dB points before fitting)")
    if np.unique(b).size < 2:
        raise ValueError("fitting kappa needs SQNRs at two or more different bit widths")
    design = np.stack([b, np.ones_like(b)], axis=1)
    (kappa, offset), *_ = np.linalg.lstsq(design, s, rcond=None)
    return float(kappa), float(offset)


def _noise(db):
    """1/gamma from dB (+inf dB -> 0 noise)."""
    return 10.0 ** (-np.asarray(db, dtype=np.float64) / 10.0)


def _db(noise) -> float:
    return math.inf if noise == 0 else -10.0 * math.log10(noise)


def lin_output_sqnr_db(sqnr_db_per_tensor) -> float:
    """Output SQNR in dB of tensors with the given SQNRs (dB): 1/gamma_out = sum_i 1/gamma_i."""
    db = np.asarray(sqnr_db_per_tensor, dtype=np.float64).ravel()
    if db.size == 0:
        raise ValueError("need at least one tensor SQNR")
    if np.isnan(db).any():
        raise ValueError("SQNR values must not be NaN")
    return _db(float(_noise(db).sum()))


def _table_noise(sqnr_db_table, n, bit_options):
    """[n, len(bit_options)] noise 1/gamma from a per-tensor table indexed by bit width."""
    noise = np.empty((n, len(bit_options)))
    for i, row in enumerate(sqnr_db_table):
        for j, b in enumerate(bit_options):
            try:
                value = float(row[b])
            except (KeyError, IndexError, TypeError, ValueError):
                raise ValueError(f"sqnr_db_table[{i}] has no SQNR for {b} bits") from None
            if math.isnan(value):
                raise ValueError(f"sqnr_db_table[{i}][{b}] is NaN")
            noise[i, j] = _noise(value)
    return noise


def allocate_bits(sqnr_db_table, cost, budget_bits=None, target_sqnr_db=None, bits_range=(1, 8)):
    """Integer bit widths per tensor under Lin et al.'s additive-noise model, solved exactly.

    sqnr_db_table[i][b]: SQNR (dB) of tensor i quantized to b bits (measured, or kappa*b + offset), a dict or
    an array indexed by b, for every b in bits_range (inclusive). cost[i]: elements of tensor i, so the
    storage is sum cost_i * b_i bits. Give exactly one of
      budget_bits:    maximise the output SQNR subject to total bits <= budget_bits (ties: fewer bits);
      target_sqnr_db: minimise total bits subject to output SQNR >= target (ties: higher SQNR).
    Method: dynamic programming over tensors keeping the Pareto front of (total bits, output noise) partial
    allocations, pruned by the constraint; exact (tests compare with brute force). The front stays small in
    practice (120 tensors x 8 widths: about 2 s).
    Returns {"bits": [b_i], "output_sqnr_db": float, "total_bits": int}.
    """
    if (budget_bits is None) == (target_sqnr_db is None):
        raise ValueError("give exactly one of budget_bits and target_sqnr_db")
    lo, hi = bits_range
    lo, hi = _check_int("bits_range[0]", lo, 1, 32), _check_int("bits_range[1]", hi, 1, 32)
    if lo > hi:
        raise ValueError(f"bits_range {bits_range} is empty")
    options = np.arange(lo, hi + 1, dtype=np.int64)
    cost = [_check_int(f"cost[{i}]", c, 1, 1 << 40) for i, c in enumerate(cost)]
    n = len(cost)
    if n == 0 or len(sqnr_db_table) != n:
        raise ValueError(f"need one sqnr_db_table row per tensor: {len(sqnr_db_table)} rows, {n} costs")
    noise = _table_noise(sqnr_db_table, n, options.tolist())
    cost = np.array(cost, dtype=np.int64)

    # what the remaining tensors add at least: prunes partial allocations that cannot be completed
    min_cost_after = np.append(np.cumsum((cost * lo)[::-1])[::-1], 0)[1:]
    min_noise_after = np.append(np.cumsum(noise.min(axis=1)[::-1])[::-1], 0.0)[1:]
    if budget_bits is not None:
        budget = _check_int("budget_bits", budget_bits, 0, 1 << 62)
        if int((cost * lo).sum()) > budget:
            raise ValueError(f"budget of {budget} bits is below the minimum {int((cost * lo).sum())} "
                             f"(every tensor at {lo} bits)")
    else:
        target = float(target_sqnr_db)
        if math.isnan(target):
            raise ValueError("target_sqnr_db must not be NaN")
        best = _db(float(noise.min(axis=1).sum()))
        if best < target:
            raise ValueError(f"target {target:g} dB is above the best reachable output SQNR {best:.4g} dB")
        max_noise = _noise(target) * (1 + 1e-12)          # slack against summation-order rounding

    front_cost, front_noise = np.zeros(1, dtype=np.int64), np.zeros(1)
    parents, choices = [], []                               # back-pointers of every front, to read the bits back
    for i in range(n):
        c = (front_cost[:, None] + cost[i] * options[None, :]).ravel()
        z = (front_noise[:, None] + noise[i][None, :]).ravel()
        src = np.arange(c.size)                             # = parent * len(options) + option index
        ok = (c + min_cost_after[i] <= budget) if budget_bits is not None else (z + min_noise_after[i] <= max_noise)
        order = np.lexsort((z[ok], c[ok]))                  # by cost, then noise
        c, z, src = c[ok][order], z[ok][order], src[ok][order]
        best_before = np.concatenate([[np.inf], np.minimum.accumulate(z)[:-1]])
        keep = z < best_before                              # Pareto: strictly less noise than any cheaper one
        keep[:1] = True                                     # the cheapest always stays (even at infinite noise)
        front_cost, front_noise, src = c[keep], z[keep], src[keep]
        parents.append(src // options.size)
        choices.append(options[src % options.size])

    # front: cost increasing, noise strictly decreasing
    if budget_bits is not None:
        pick = front_cost.size - 1                          # least noise within the budget
    else:
        feasible = np.nonzero([_db(float(z)) >= target for z in front_noise])[0]
        pick = int(feasible[0]) if feasible.size else front_cost.size - 1
    bits, at = [0] * n, pick
    for i in range(n - 1, -1, -1):
        bits[i], at = int(choices[i][at]), int(parents[i][at])
    return {"bits": bits, "output_sqnr_db": _db(float(front_noise[pick])), "total_bits": int(front_cost[pick])}


def lin_closed_form(cost, kappa, target_sqnr_db=None, budget_bits=None, offset=0.0):
    """Continuous optimum of the seed's model: real-valued bit widths beta_i (round them yourself).

    Model: tensor i at beta_i bits has SQNR kappa * beta_i + offset_i dB; minimise sum rho_i * beta_i
    (rho_i = cost[i], elements) subject to 1/gamma_out = sum 1/gamma_i = 1/gamma_target. The Lagrange
    condition rho_i = lambda * (kappa ln10 / 10) / gamma_i makes every tensor's noise share proportional to its
    size, 1/gamma_i = (rho_i / sum rho) / gamma_target, hence

        beta_i = (target + 10*log10(sum rho / rho_i) - offset_i) / kappa,

    i.e. Lin et al.'s beta_i - beta_j = 10*log10(rho_j / rho_i) / kappa (equal offsets): bigger tensors get
    fewer bits. With budget_bits instead of a target, the target is the one whose solution has
    sum rho_i * beta_i = budget_bits (the same allocation maximises the output SQNR for that budget).
    """
    if (budget_bits is None) == (target_sqnr_db is None):
        raise ValueError("give exactly one of budget_bits and target_sqnr_db")
    rho = np.asarray(cost, dtype=np.float64).ravel()
    if rho.size == 0 or not (np.isfinite(rho).all() and (rho > 0).all()):
        raise ValueError("cost must be a non-empty list of positive element counts")
    kappa = float(kappa)
    if not (math.isfinite(kappa) and kappa > 0):
        raise ValueError(f"kappa must be a positive finite number (dB per bit), got {kappa!r}")
    off = np.broadcast_to(np.asarray(offset, dtype=np.float64), rho.shape)
    share_db = 10.0 * np.log10(rho.sum() / rho)
    if target_sqnr_db is None:
        target = (kappa * float(budget_bits) - float((rho * (share_db - off)).sum())) / rho.sum()
    else:
        target = float(target_sqnr_db)
    return (target + share_db - off) / kappa
