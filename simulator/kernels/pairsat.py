"""The x86 int16 pair-saturation MAC datapath (`datapath: "x86_pair_sat16"`), bit for bit.

What it models: ONNX Runtime's uint8 x int8 integer GEMM / convolution kernels (MLAS) on x86 CPUs *without*
VNNI (AVX2, and AVX-512 BW/DQ without VNNI). They multiply raw u8 activation codes by raw s8 weight codes
with `vpmaddubsw`, which adds two adjacent products into an int16 lane **with signed saturation**, then widen
to int32 with `vpmaddwd` against 1s and accumulate in int32 (`vpaddd`). Zero-point corrections are computed
separately on exact sums. With full-range weights |255·w_a + 255·w_b| reaches 65,280 > 32,767, so results
differ from exact arithmetic. (VNNI's `vpdpbusd` and the u8 x u8 / s8 x s8 kernels are exact.)
Sources (microsoft/onnxruntime, onnxruntime/core/mlas/lib/): x86_64/QgemmU8S8KernelAvx2.S (CopyPackA/B:
4 consecutive k per 32-bit lane, zero padded; kernel: vpmaddubsw + vpmaddwd + vpaddd), QgemvU8S8KernelAvx2.S
(the M = 1 path, same pairing), x86_64/ConvSymKernelAvx2.S (QLinearConv with symmetric weights, input
channels in groups of 4 per kernel tap), qgemm.h (the zero-point algebra), platform.cpp (dispatch).
The codes are used as stored: MLAS's `^ 0x80` flips apply to unsigned *weights* handed to the u8 x s8 kernel
(CopyPackB, FixupZeroPointB) and to u8 activations in ARM's ConvSym; neither happens for u8 x s8 on x86, and the
non-VNNI x86 dispatch runs u8 x u8 (and s8 x s8) on other, exact kernels.

Semantics, per output (n, co, oh, ow) of a conv (dense is a 1x1 conv: x [N, K], w [Co, K]):
- Operands are raw *codes*: x in [0, 255] (padded positions hold `pad_code`), w in [-128, 127]; zero points
  zx (activation) and zw[co] (weight, per tensor or per output channel).
- The reduction index k runs over the window in MLAS's order, channels innermost (NHWC im2col):
      k = (kh · KW + kw) · Cg + ci,   K = KH · KW · Cg   (Cg = input channels of the group)
  The pairs are (k, k+1) for even k. When K is odd the last product is alone (MLAS pads K with zero codes):
  a single product |x·w| <= 255·128 = 32,640 never saturates. So with odd Cg a pair may join the last
  channel of one kernel tap to the first channel of the next (ORT's im2col GEMM path does exactly that; its
  ConvSym path is only taken when Cg % 4 == 0, where the two orders agree).
- pair j: p_j = x_2j·w_2j + x_2j+1·w_2j+1 (exact), s_j = clamp(p_j, -32768, 32767); "saturated" if s_j != p_j.
- Accumulator (acc_bits, policy wrap | saturate, applied after every add as in mac.py):
      acc = policy(bias[co]);  acc = policy(acc + s_j) for j = 0, 1, ...;
      acc = policy(acc + c),   c = -zw·Σ_k x_k - zx·Σ_k w_k + K·zx·zw   (the exact zero-point correction)
  Without overflow this is   acc = Σ_k (x_k - zx)(w_k - zw) + bias + Σ_j (s_j - p_j):  the exact result plus
  the pair-saturation error. With the wrap policy the result does not depend on the order of the adds
  (MLAS adds the correction first in its GEMM path and bias + correction last in ConvSym; all agree modulo
  2^32); only the overflow count would.
- Result: (acc int64 [N, Co, Ho, Wo], overflow count, saturated pairs, saturated outputs): outputs whose
  accumulator left the range at least once, pairs that saturated, outputs with at least one saturated pair.

`*_reference` are plain-Python versions (Python ints, small shapes only) for the tests.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from ..jit import njit, prange

from .im2col import conv_geometry
from .mac import _add_row, _phase_planes, accumulator_start, apply_policy, check_accumulator
from .threads import launcher, split

PAIR_MIN, PAIR_MAX = -(1 << 15), (1 << 15) - 1   # the int16 lane of vpmaddubsw
X_RANGE = (0, 255)       # unsigned 8-bit activation codes
W_RANGE = (-128, 127)    # signed 8-bit weight codes


def reduction_order(cig: int, kh: int, kw: int) -> np.ndarray:
    """(ci, kh, kw) of every reduction index k, int64 [K, 3], in MLAS's order (channels innermost)."""
    c, a, b = np.meshgrid(np.arange(cig), np.arange(kh), np.arange(kw), indexing="ij")
    taps = np.stack([c, a, b], axis=-1).transpose(1, 2, 0, 3).reshape(-1, 3)  # [kh][kw][ci]
    return np.ascontiguousarray(taps, dtype=np.int64)


def pair_taps(cig: int, kh: int, kw: int) -> tuple[np.ndarray, np.ndarray]:
    """The two taps of every pair, int64 [P, 3] each; the second is (-1, -1, -1) for a lone last product."""
    order = reduction_order(cig, kh, kw)
    if len(order) % 2:
        order = np.concatenate([order, np.full((1, 3), -1, np.int64)])
    return np.ascontiguousarray(order[0::2]), np.ascontiguousarray(order[1::2])


# ----------------------------------------------------------------------------------------------------------
# Public API
# ----------------------------------------------------------------------------------------------------------
def conv2d_pairsat_acc(x, w, x_zero_point, w_zero_point, bias, stride, padding, groups, pad_code, acc_bits,
                       policy) -> tuple[np.ndarray, int, int, int]:
    """(acc int64 [N, Co, Ho, Wo], overflows, saturated pairs, saturated outputs); see the module docstring.
    x, w, pad_code are codes; w_zero_point is one value or one per output channel."""
    x, w, zx, zw, bias, g = _check(x, w, x_zero_point, w_zero_point, bias, stride, padding, groups, pad_code,
                                   acc_bits, policy)
    if g.n == 0:
        return np.zeros((0, g.co, g.ho, g.wo), np.int64), 0, 0, 0
    init, init_over, lo, hi, mask = accumulator_start(bias, g.co, acc_bits, policy)
    w64 = w.astype(np.int64)
    k = g.cig * g.kh * g.kw
    # the correction's constant part per channel: -zx·Σw + K·zx·zw (exact; |.| < 2^40 for any K < 2^23)
    const = -zx * w64.reshape(g.co, -1).sum(axis=1) + k * zx * zw
    with_corr = bool(zx != 0 or np.any(zw != 0))
    taps_a, taps_b = pair_taps(g.cig, g.kh, g.kw)
    acc = np.empty((g.n, g.co, g.ho, g.wo), np.int64)
    over = np.empty(acc.shape, np.bool_)
    nsat = np.empty(acc.shape, np.int32)
    split(_pairsat_kernel, g.n * g.co, _phase_planes(x, g, int(pad_code)), w64, taps_a, taps_b, zw, const,
          with_corr, init, init_over, g.sh, g.sw, g.groups, np.int64(lo), np.int64(hi), mask, acc_bits == 64,
          policy == "saturate", acc, over, nsat, work=acc.size * w64[0].size)
    return acc, int(np.count_nonzero(over)), int(nsat.sum(dtype=np.int64)), int(np.count_nonzero(nsat))


def dense_pairsat_acc(x, w, x_zero_point, w_zero_point, bias, acc_bits, policy) -> tuple[np.ndarray, int, int, int]:
    """(acc int64 [N, Co], overflows, saturated pairs, saturated outputs): a 1x1 conv, pairs (k, k+1)."""
    x, w = np.asarray(x), np.asarray(w)
    if x.ndim != 2 or w.ndim != 2 or x.shape[1] != w.shape[1]:
        raise ValueError(f"dense: x must be [N, K] and w [Co, K], got {x.shape}, {w.shape}")
    if x.shape[0] == 0:
        _check(x.T[None, :, None, :], w[:, :, None, None], x_zero_point, w_zero_point, bias, (1, 1),
               (0, 0, 0, 0), 1, 0, acc_bits, policy)
        return np.zeros((0, w.shape[0]), np.int64), 0, 0, 0
    acc, over, pairs, outs = conv2d_pairsat_acc(x.T[None, :, None, :], w[:, :, None, None], x_zero_point,
                                                w_zero_point, bias, (1, 1), (0, 0, 0, 0), 1, 0, acc_bits, policy)
    return np.ascontiguousarray(acc[0, :, 0, :].T), over, pairs, outs


def _check(x, w, x_zero_point, w_zero_point, bias, stride, padding, groups, pad_code, acc_bits, policy):
    x, w = np.asarray(x), np.asarray(w)
    if x.dtype.kind not in "iu" or w.dtype.kind not in "iu":
        raise ValueError(f"pair-sat conv: x and w must be integer code arrays, got {x.dtype} and {w.dtype}")
    g = conv_geometry(x.shape, w.shape, stride, padding, groups)
    check_accumulator(acc_bits, policy, "pair-sat conv")
    for name, a, (lo, hi) in (("x", x, X_RANGE), ("w", w, W_RANGE)):
        if a.size and (int(a.min()) < lo or int(a.max()) > hi):
            raise ValueError(f"pair-sat conv: {name} codes must lie in [{lo}, {hi}] "
                             f"(vpmaddubsw takes u8 activations x s8 weights), got [{a.min()}, {a.max()}]")
    zx = int(x_zero_point)
    zw = np.broadcast_to(np.asarray(w_zero_point, dtype=np.int64).reshape(-1), (g.co,)).copy() \
        if np.size(w_zero_point) in (1, g.co) else None
    if zw is None:
        raise ValueError(f"pair-sat conv: w_zero_point needs 1 or {g.co} values, got {np.size(w_zero_point)}")
    if not (X_RANGE[0] <= zx <= X_RANGE[1] and X_RANGE[0] <= int(pad_code) <= X_RANGE[1]):
        raise ValueError(f"pair-sat conv: x_zero_point and pad_code must be u8 codes, got {zx}, {pad_code}")
    if zw.size and (zw.min() < W_RANGE[0] or zw.max() > W_RANGE[1]):
        raise ValueError(f"pair-sat conv: w_zero_point must be s8 codes, got {zw.tolist()}")
    if bias is not None:
        bias = np.asarray(bias)
        if bias.shape != (g.co,) or bias.dtype.kind not in "iu":
            raise ValueError(f"pair-sat conv: bias must be an integer array of shape ({g.co},), "
                             f"got {bias.dtype} {bias.shape}")
        bias = bias.astype(np.int64)
    return x, w, zx, zw, bias, g


# ----------------------------------------------------------------------------------------------------------
# The fast route: exact sums plus the pairs that can saturate
# ----------------------------------------------------------------------------------------------------------
# Only a pair whose two weights have the same sign and 255·(|w_a| + |w_b|) > 32,767 can leave the int16 lane:
# a lone product, or two of opposite signs, stays within 255·128 = 32,640. Where no accumulator overflow is
# possible (the caller's bound), the datapath's result is the exact sum plus Σ (s_j − p_j) over those pairs
# alone (1.6-10% of the pairs in the MobileNet layers measured); the exact sum comes from the fast kernels.
@dataclass(frozen=True)
class SaturatingPairs:
    """Per output channel, the pairs (in MLAS's order) whose int16 sum can saturate for some u8 input."""
    ptr: np.ndarray    # int64 [Co + 1]: channel co's pairs are rows ptr[co]:ptr[co + 1]
    taps: np.ndarray   # int64 [D, 6]: (ci, kh, kw) of the pair's first and second product
    w: np.ndarray      # int64 [D, 2]: their weight codes
    x_min: np.ndarray  # uint8 [D, 2]: the smallest code of each operand for which the pair can saturate


def saturating_pairs(w_codes: np.ndarray) -> SaturatingPairs:
    """The pairs of a conv's s8 weight codes [Co, Cg, KH, KW] that can saturate (see above)."""
    co, cig, kh, kw = w_codes.shape
    ta, tb = pair_taps(cig, kh, kw)
    w64 = w_codes.astype(np.int64)
    wa = w64[:, ta[:, 0], ta[:, 1], ta[:, 2]]
    wb = np.where(tb[:, 0] < 0, 0, w64[:, tb[:, 0], tb[:, 1], tb[:, 2]])   # a lone last product: partner 0
    danger = (wa * wb > 0) & (X_RANGE[1] * (np.abs(wa) + np.abs(wb)) > PAIR_MAX)
    rows, cols = np.nonzero(danger)            # row-major: grouped by output channel
    ptr = np.zeros(co + 1, np.int64)
    np.cumsum(np.bincount(rows, minlength=co), out=ptr[1:])
    taps = np.ascontiguousarray(np.concatenate([ta[cols], tb[cols]], axis=1), dtype=np.int64)
    w = np.abs(np.stack([wa[rows, cols], wb[rows, cols]], axis=1))
    # x_a·|w_a| + x_b·|w_b| must pass 32,767 (32,768 below zero) with the partner at most 255
    limit = np.where(wa[rows, cols] > 0, PAIR_MAX, -PAIR_MIN)[:, None]
    x_min = np.clip((limit - X_RANGE[1] * w[:, ::-1]) // w + 1, 0, 255).astype(np.uint8)
    return SaturatingPairs(ptr, taps, np.ascontiguousarray(np.stack([wa[rows, cols], wb[rows, cols]], axis=1)),
                           np.ascontiguousarray(x_min))


def add_pair_saturation(acc: np.ndarray, x: np.ndarray, sp: SaturatingPairs, g, pad_code: int,
                        apply: bool = True, _flush: int = None) -> tuple[int, int]:
    """acc [N, Co, Ho, Wo] holds exact sums of raw-code products (any offsets folded in): add Σ (s_j − p_j) of
    the saturating pairs in place, making it the datapath's result. x: the raw u8 codes [N, Ci, H, W]; the
    caller proved that no accumulator can overflow. Returns (saturated pairs, outputs with at least one).
    apply=False: only count (acc already holds the datapath's sums, from the pair-saturating kernel).
    `_flush` (tests): pairs between flushes of the kernel's narrow counters, FLUSH unless given."""
    if sp.ptr[-1] == 0 or acc.size == 0:
        return 0, 0
    shape = acc.shape
    if not apply and g.n > 1 and (g.kh, g.kw, g.sh, g.sw) == (1, 1, 1, 1) and not g.has_padding:
        # counting only, 1x1: the batch as one image (its pixels side by side), so each pair runs over them all
        x = np.ascontiguousarray(np.asarray(x, np.uint8).reshape(g.n, g.ci, -1).transpose(1, 0, 2))
        x = x.reshape(1, g.ci, 1, -1)
        merged = _MERGED.get(g)   # (dataclasses.replace of a frozen geometry costs tens of us per call)
        if merged is None:
            if len(_MERGED) > 256:
                _MERGED.clear()
            merged = _MERGED[g] = replace(g, n=1, h=1, w=x.shape[3], ho=1, wo=x.shape[3])
        g = merged
        shape = (1, g.co, 1, x.shape[3])
    x_max = np.empty((g.n, g.ci), np.uint8)   # per image and channel: the largest code (padding included)
    _channel_max(np.ascontiguousarray(x, dtype=np.uint8).reshape(g.n, g.ci, -1), pad_code if g.has_padding else 0,
                 x_max)
    work = acc.size * (sp.ptr[-1] // max(1, g.co) + 1) // 4   # the pairs that can saturate (~ns per output each)
    totals = split(_saturation_kernel, g.n * -(-g.co // CHANNELS_PER_TASK), _phase_planes(x, g, pad_code, np.uint8), x_max,
          sp.ptr, sp.taps, sp.w, sp.x_min, g.cog, g.cig, np.array(shape, np.int64), acc, apply,
          FLUSH if _flush is None else int(_flush), work=work)   # each chunk's two totals: no arrays to sum
    return sum(int(t[0]) for t in totals), sum(int(t[1]) for t in totals)


_MERGED: dict = {}      # 1x1 geometry -> the same with the batch as one image (add_pair_saturation)
CHANNELS_PER_TASK = 8   # output channels of one parallel task (its scratch rows are allocated once)
FLUSH = 32767           # pairs between flushes of the uint16 hit counts and int32 sums (32,767·32,768 < 2^31)


def _channel_max_numpy(x, floor, out):
    out[...] = np.maximum(x.max(axis=2, initial=0), np.uint8(floor))


@njit(nogil=True, cache=True, python=_channel_max_numpy)
def _channel_max(x, floor, out):
    """out[n, c] = max(floor, max of x[n, c, :]) (x uint8 [N, C, S])."""
    for ni in range(x.shape[0]):
        for c in range(x.shape[1]):
            row = x[ni, c]
            best = np.uint8(floor)
            for i in range(row.shape[0]):
                best = max(best, row[i])
            out[ni, c] = best


@njit(nogil=True, cache=True)
def _saturation_kernel(t0, t1, planes, x_max, ptr, taps, wts, x_min, cog, cig, shape, acc, apply, flush):
    """Per (image, block of channels): for each pair that can saturate, over the output run, in uint16 lanes
    (16 per AVX2 vector): both weights have one sign, so |p| = x_a·|w_a| + x_b·|w_b| <= 65,280 is exact in
    uint16, and the pair saturates iff |p| > L (32,767 above zero, 32,768 below), by |p| - L. `shape`: the
    outputs' [N, Co, Ho, Wo] (acc's, which is only read and written when `apply`). Returns the tasks' saturated
    pairs and outputs with at least one."""
    n, co_total, ho, wo = shape[0], shape[1], shape[2], shape[3]
    ci, sh, sw, hq, wq = planes.shape[1], planes.shape[2], planes.shape[3], planes.shape[4], planes.shape[5]
    flat = planes.reshape(-1)       # one flat index per run start: unit-stride loops that vectorise
    m = (ho - 1) * wq + wo          # outputs as one run with row pitch wq (as _pairsat_kernel)
    blocks = -(-co_total // CHANNELS_PER_TASK)
    unit_stride = sh == 1 and sw == 1
    pairs = outs = 0
    for t in range(t0, t1):
        ni, b = t // blocks, t % blocks
        delta = np.empty(m, np.int32)        # Σ (s - p) since the last flush: at most FLUSH pairs of |.| <= 32,768
        total_delta = np.empty(m, np.int64)
        hits = np.empty(m, np.uint16)
        total_hits = np.empty(m, np.int64)
        for co in range(b * CHANNELS_PER_TASK, min(co_total, (b + 1) * CHANNELS_PER_TASK)):
            c0 = (co // cog) * cig
            touched = False
            since_flush = 0
            for d in range(ptr[co], ptr[co + 1]):
                if x_max[ni, c0 + taps[d, 0]] < x_min[d, 0] or x_max[ni, c0 + taps[d, 3]] < x_min[d, 1]:
                    continue   # no code of this image reaches the pair's threshold
                if not touched:
                    if apply:   # (counting only never reads the sums)
                        delta[:] = 0
                        total_delta[:] = 0
                    hits[:] = 0
                    total_hits[:] = 0
                    touched = True
                ka, kb = taps[d, 1], taps[d, 4]
                if unit_stride:   # one phase plane per channel (no divisions: they cost more than a short run)
                    oa = ((ni * ci + c0 + taps[d, 0]) * hq + ka) * wq + taps[d, 2]
                    ob = ((ni * ci + c0 + taps[d, 3]) * hq + kb) * wq + taps[d, 5]
                else:
                    oa = ((((ni * ci + c0 + taps[d, 0]) * sh + ka % sh) * sw + taps[d, 2] % sw) * hq + ka // sh) \
                        * wq + taps[d, 2] // sw
                    ob = ((((ni * ci + c0 + taps[d, 3]) * sh + kb % sh) * sw + taps[d, 5] % sw) * hq + kb // sh) \
                        * wq + taps[d, 5] // sw
                xa, xb = flat[oa:oa + m], flat[ob:ob + m]   # 1-D slices of a 1-D array: contiguous runs
                positive = wts[d, 0] > 0
                wa, wb = np.uint16(abs(wts[d, 0])), np.uint16(abs(wts[d, 1]))
                lim = np.uint16(32767 if positive else 32768)
                if apply:   # s - p: the clamp takes |p| - L off |p|
                    _excess_row(xa, xb, wa, wb, lim, np.int32(-1 if positive else 1), delta, hits)
                else:
                    _count_row(xa, xb, wa, wb, lim, hits)
                since_flush += 1
                if since_flush == flush:   # uint16 counters and int32 sums: move them on before they could wrap
                    for i in range(m):
                        total_hits[i] += hits[i]
                    hits[:] = 0
                    if apply:
                        for i in range(m):
                            total_delta[i] += delta[i]
                        delta[:] = 0
                    since_flush = 0
            if not touched:
                continue
            total = outputs = 0
            for oh in range(ho):
                if apply:
                    for ow in range(wo):
                        i = oh * wq + ow
                        acc[ni, co, oh, ow] += total_delta[i] + delta[i]
                for i in range(oh * wq, oh * wq + wo):   # one branch-free loop per row: it vectorises
                    h = total_hits[i] + hits[i]
                    total += h
                    outputs += np.int64(h > 0)
            pairs += total
            outs += outputs
    return pairs, outs


@njit(cache=True)
def _count_row(xa, xb, wa, wb, lim, hits):
    """hits[i] += x_a·|w_a| + x_b·|w_b| > L, in uint16 lanes (its own function: the loop vectorises here)."""
    for i in range(xa.shape[0]):
        hits[i] += np.uint16(np.uint16(np.uint16(xa[i]) * wa + np.uint16(xb[i]) * wb) > lim)


@njit(cache=True)
def _excess_row(xa, xb, wa, wb, lim, sign, delta, hits):
    """delta[i] += sign·(|p| - L) where |p| = x_a·|w_a| + x_b·|w_b| > L, and hits[i] += 1 there."""
    for i in range(xa.shape[0]):
        e = max(np.uint16(np.uint16(xa[i]) * wa + np.uint16(xb[i]) * wb), lim) - lim
        delta[i] += sign * np.int32(e)   # int32 lanes: twice int64's per vector
        hits[i] += np.uint16(e != 0)


# ----------------------------------------------------------------------------------------------------------
# The numba kernel: one task per (image, output channel), pairs in K order over a run of outputs
# ----------------------------------------------------------------------------------------------------------
@njit(nogil=True, cache=True)
def _pairsat_kernel(t0, t1, planes, w, taps_a, taps_b, zw, const, with_corr, init, init_over, sh, sw, groups, lo, hi,
                    mask, bits64, saturate, acc, over, nsat):
    n, co_total, ho, wo = acc.shape
    cig = w.shape[1]
    hq, wq = planes.shape[4], planes.shape[5]
    flat = planes.reshape(n, planes.shape[1], sh, sw, hq * wq)
    cog = co_total // groups
    m = (ho - 1) * wq + wo          # outputs as one run with row pitch wq (see mac._sequential_kernel)
    for t in range(t0, t1):
        ni, co = t // co_total, t % co_total
        c0 = (co // cog) * cig
        a = np.full(m, init[co])
        o = np.full(m, init_over[co])
        cnt = np.zeros(m, np.int32)
        sx = np.zeros(m, np.int64)
        q = np.empty(m, np.int64)
        for j in range(taps_a.shape[0]):
            ci, kh, kw = taps_a[j, 0], taps_a[j, 1], taps_a[j, 2]
            sa = (kh // sh) * wq + kw // sw
            xa = flat[ni, c0 + ci, kh % sh, kw % sw, sa:sa + m]
            wa = w[co, ci, kh, kw]
            if taps_b[j, 0] >= 0:
                ci, kh, kw = taps_b[j, 0], taps_b[j, 1], taps_b[j, 2]
                sb = (kh // sh) * wq + kw // sw
                xb = flat[ni, c0 + ci, kh % sh, kw % sw, sb:sb + m]
                _pair_row(q, cnt, sx, xa, xb, wa, w[co, ci, kh, kw])
            else:
                _single_row(q, sx, xa, wa)
            _add_row(a, o, q, np.int64(1), lo, hi, mask, bits64, saturate)
        if with_corr:
            zwc, cc = zw[co], const[co]
            for i in range(m):
                q[i] = cc - zwc * sx[i]
            _add_row(a, o, q, np.int64(1), lo, hi, mask, bits64, saturate)
        for oh in range(ho):
            acc[ni, co, oh] = a[oh * wq:oh * wq + wo]
            over[ni, co, oh] = o[oh * wq:oh * wq + wo]
            nsat[ni, co, oh] = cnt[oh * wq:oh * wq + wo]


@njit(cache=True)
def _pair_row(q, cnt, sx, xa, xb, wa, wb):
    """q[i] = int16-saturated xa[i]·wa + xb[i]·wb (vpmaddubsw), cnt[i] += saturated, sx[i] += xa[i] + xb[i]."""
    for i in range(q.shape[0]):
        p = xa[i] * wa + xb[i] * wb
        s = min(max(p, -32768), 32767)
        cnt[i] += s != p
        sx[i] += xa[i] + xb[i]
        q[i] = s


@njit(cache=True)
def _single_row(q, sx, xa, wa):
    """The lone last product of an odd K (its partner is MLAS's zero padding): |x·w| <= 32640, never saturates."""
    for i in range(q.shape[0]):
        q[i] = xa[i] * wa
        sx[i] += xa[i]


# ----------------------------------------------------------------------------------------------------------
# Reference kernels: plain Python ints, the semantics read straight off the docstring
# ----------------------------------------------------------------------------------------------------------
def conv2d_pairsat_reference(x, w, x_zero_point, w_zero_point, bias, stride, padding, groups, pad_code, acc_bits,
                             policy):
    g = conv_geometry(np.shape(x), np.shape(w), stride, padding, groups)
    xs, ws = np.asarray(x).tolist(), np.asarray(w).tolist()
    zx = int(x_zero_point)
    zws = np.broadcast_to(np.asarray(w_zero_point).reshape(-1), (g.co,)).tolist()
    order = [(ci, a, b) for a in range(g.kh) for b in range(g.kw) for ci in range(g.cig)]
    acc = np.zeros((g.n, g.co, g.ho, g.wo), np.int64)
    overflows = sat_pairs = sat_outputs = 0
    for n in range(g.n):
        for co in range(g.co):
            c0 = (co // g.cog) * g.cig
            for oh in range(g.ho):
                for ow in range(g.wo):
                    xk, wk = [], []
                    for ci, a, b in order:
                        ih, iw = oh * g.sh + a - g.top, ow * g.sw + b - g.left
                        inside = 0 <= ih < g.h and 0 <= iw < g.w
                        xk.append(xs[n][c0 + ci][ih][iw] if inside else int(pad_code))
                        wk.append(ws[co][ci][a][b])
                    v, left = apply_policy(0 if bias is None else int(bias[co]), acc_bits, policy)
                    sat = 0
                    for j in range(0, len(xk), 2):
                        p = sum(xv * wv for xv, wv in zip(xk[j:j + 2], wk[j:j + 2]))
                        s = min(max(p, PAIR_MIN), PAIR_MAX)
                        sat += s != p
                        v, o = apply_policy(v + s, acc_bits, policy)
                        left |= o
                    zw = int(zws[co])
                    corr = -zw * sum(xk) - zx * sum(wk) + len(xk) * zx * zw
                    v, o = apply_policy(v + corr, acc_bits, policy)
                    acc[n, co, oh, ow] = v
                    overflows += left | o
                    sat_pairs += sat
                    sat_outputs += sat > 0
    return acc, overflows, sat_pairs, sat_outputs


def dense_pairsat_reference(x, w, x_zero_point, w_zero_point, bias, acc_bits, policy):
    x, w = np.asarray(x), np.asarray(w)
    acc, over, pairs, outs = conv2d_pairsat_reference(x.T[None, :, None, :], w[:, :, None, None], x_zero_point,
                                                      w_zero_point, bias, (1, 1), (0, 0, 0, 0), 1, 0, acc_bits,
                                                      policy)
    return np.ascontiguousarray(acc[0, :, 0, :].T), over, pairs, outs


# ---------------------------------------------------------------------------------------------------------
# Parallel launchers (threads.launcher): each kernel's chunks on numba's threads; here, beside the kernels,
# because numba's cache keys a function on its own file
# ---------------------------------------------------------------------------------------------------------
@launcher(_pairsat_kernel)
@njit(parallel=True, nogil=True, cache=True)
def _pairsat_kernel_launch(n_tasks, chunks,
                           planes, w, taps_a, taps_b, zw, const, with_corr, init, init_over, sh, sw, groups, lo, hi,
                           mask, bits64, saturate, acc, over, nsat):
    for c in prange(chunks):
        _pairsat_kernel(n_tasks * c // chunks, n_tasks * (c + 1) // chunks,
                        planes, w, taps_a, taps_b, zw, const, with_corr, init, init_over, sh, sw, groups, lo, hi, mask,
                        bits64, saturate, acc, over, nsat)
