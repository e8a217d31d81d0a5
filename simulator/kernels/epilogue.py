"""Fused layer epilogue: accumulator -> requantizer -> clip/ReLU -> encoder, one pass, narrow codes out.

What it computes is, bit for bit, the chain of reference units the engine used to run one numpy pass at a time:

    values = units.requantizer.requantize(acc, multiplier, mode)      # every mode (float32 ... shift)
    values = np.clip(values, clip_lo, clip_hi)                        # the layer's clip / ReLU, if any
    codes  = out_enc.encode(values)                                   # uniform, ENQ QE, KNQ QK

Clip then encode is one table lookup: every activation encoder saturates (a value beyond the encoding's value
range gets the end code), so encode(clip(v, c0, c1)) = T[clip(v, A, B) - A] with [A, B] the clip interval
clamped into the value range and T[i] = out_enc.encode(A + i), built once from the reference encoder
(`make_epilogue` checks the saturation on the encoder itself before trusting it). The requantizer's arithmetic
is written out per mode below, as units/requantizer.py documents it.

Values the fixed-point modes refuse (an accumulator outside int32, a shift leaving int64) are not handled
here: the kernel reports them and the caller runs the reference units, which raise the precise error.
Output codes are stored in the narrowest integer dtype of the encoding's code range (`code_dtype`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
from ..jit import njit, prange

from ..encodings import BinaryAct, ThresholdAct
from ..errors import HwsimError
from ..units.requantizer import BLOCK_CHANNELS, FLOAT_SATURATION, REQUANT_MODES, quantize_multiplier
from .threads import image_spans, launcher, split

# float32 0, float64 1, fixed_double 2, fixed_single 3, shift 4, fixed_double_ruy 5, fixed_double_blocks8 6,
# float64_away 7
MODE_IDS = {name: i for i, name in enumerate(REQUANT_MODES)}
TABLE_LIMIT = 1 << 20   # largest clip-and-encode table (entries); wider value ranges take the reference units
_PROBE = 1 << 40        # how far beyond the value range the encoder's saturation is checked


@lru_cache(maxsize=4096)   # asked for every layer of every run; encodings are frozen (hashable)
def code_dtype(enc) -> np.dtype:
    """The narrowest integer dtype holding every code of `enc`."""
    lo, hi = enc.code_range()
    for dt in (np.uint8, np.int8, np.uint16, np.int16, np.int32):
        info = np.iinfo(dt)
        if info.min <= lo and hi <= info.max:
            return np.dtype(dt)
    return np.dtype(np.int64)


@dataclass(frozen=True)
class Epilogue:
    mode: int
    m32: np.ndarray      # float32 multiplier per channel (float32 mode)
    m64: np.ndarray      # float64 multiplier per channel (float64 mode)
    q: np.ndarray        # fixed-point multiplier per channel (fixed modes)
    shift: np.ndarray    # exponent per channel (fixed modes), right shift s (shift mode: multiplier 2^-s)
    lo: int              # A: the lowest value kept by clip and encoding
    hi: int              # B
    table: np.ndarray    # codes of A .. B, in the output dtype
    offset: int          # code = value + offset when the table is that line (uniform encodings), else 0
    linear: bool
    spread: dict = field(default_factory=dict, compare=False, repr=False)   # multipliers spread along images


def make_epilogue(multiplier: np.ndarray, mode: str, clip, out_enc) -> Epilogue | None:
    """The fused epilogue of a layer, or None when it cannot be fused (then the reference units run)."""
    if isinstance(out_enc, (BinaryAct, ThresholdAct)) or mode not in MODE_IDS:
        return None
    m = np.asarray(multiplier, np.float64).reshape(-1)
    if m.size == 0 or not np.all(np.isfinite(m)) or np.any(m <= 0):
        return None
    with np.errstate(over="ignore"):
        m32 = m.astype(np.float32)
    q = np.zeros(m.size, np.int64)
    shift = np.zeros(m.size, np.int64)
    if mode == "float32" and not np.all(np.isfinite(m32)):
        return None
    if mode in ("fixed_double", "fixed_single", "fixed_double_ruy", "fixed_double_blocks8"):
        for i, v in enumerate(m.tolist()):
            q[i], shift[i] = quantize_multiplier(v, single_rounding=mode == "fixed_single")
    if mode == "shift":
        for i, v in enumerate(m.tolist()):
            frac, e = math.frexp(v)
            if frac != 0.5 or not -62 <= 1 - e <= 62:
                return None        # not a power of two, or a shift the reference handles (and may refuse)
            shift[i] = 1 - e
    vlo, vhi = out_enc.value_range()
    c0, c1 = (vlo, vhi) if clip is None else (int(clip[0]), int(clip[1]))
    if c0 > c1:
        return None
    a, b = min(max(c0, vlo), vhi), min(max(c1, vlo), vhi)
    if b - a + 1 > TABLE_LIMIT or max(abs(a), abs(b)) >= 1 << 24:   # the clip ends exact in float32 and int32
        return None
    values = np.arange(a, b + 1, dtype=np.int64)
    codes = out_enc.encode(np.clip(values, c0, c1))
    # the saturation the table relies on, checked on the encoder itself
    probe = np.array([vlo - _PROBE, vlo - 1, vhi + 1, vhi + _PROBE], np.int64)
    ends = out_enc.encode(np.clip(probe, c0, c1))
    if ends[0] != ends[1] or ends[2] != ends[3] or ends[1] != out_enc.encode(np.clip(np.array([vlo]), c0, c1))[0] \
            or ends[2] != out_enc.encode(np.clip(np.array([vhi]), c0, c1))[0]:
        return None
    dt = code_dtype(out_enc)
    # uniform: no table lookup (a gather stops vectorisation); the kernels add the code offset to the clipped
    # value in float, exact while |value| + |offset| < 2^24 (16-bit codes: far below)
    linear = bool(np.all(np.diff(codes) == 1)) and max(abs(a), abs(b)) + abs(int(codes[0]) - a) < 1 << 24
    return Epilogue(MODE_IDS[mode], m32, m, q, shift, int(a), int(b), codes.astype(dt), int(codes[0]) - int(a),
                    linear)


def run_epilogue(ep: Epilogue, acc: np.ndarray) -> np.ndarray | None:
    """Codes of `acc` [N, C, ...] (channel axis 1; int32 or int64), or None if some value needs the reference
    units."""
    if acc.dtype not in (np.int32, np.int64):
        acc = acc.astype(np.int64)
    acc = np.ascontiguousarray(acc)
    n, c = acc.shape[0], acc.shape[1]
    per = ep.m64.size
    if per not in (1, c):
        raise HwsimError(f"{per} multipliers for {c} channels")
    out = np.empty(acc.shape, ep.table.dtype)
    flat, dst, shared = acc.reshape(n, c, -1), out.reshape(n, c, -1), per == 1
    # one small kernel per variant, chosen here: a first run compiles only the variants its model uses
    if ep.mode in (0, 1):
        m = ep.m32 if ep.mode == 0 else ep.m64
        s = flat.shape[2]
        if s < SHORT_ROW:   # short rows (small images): each image as one long line, its multipliers spread
            spread = ep.spread.get((m.dtype.str, c, s))
            if spread is None:
                spread = ep.spread.setdefault((m.dtype.str, c, s), np.repeat(np.broadcast_to(m, (c,)), s))
            pieces = -(-(c * s) // PIECE)
            split(_float_spread, n * pieces, acc.reshape(n, -1), spread, ep.lo, ep.hi, ep.offset, ep.table, ep.linear,
                  PIECE, out.reshape(n, -1), work=acc.size)
        elif ep.linear:
            split(_float_lines, n * c, flat, m, shared, ep.lo, ep.hi, ep.offset, dst, work=acc.size)
        else:
            split(_float_rows, n * c, flat, m, shared, ep.lo, ep.hi, ep.table, dst, work=acc.size)
        return out
    bad = split(_generic_rows, n * c, flat, ep.mode, ep.m32, ep.m64, ep.q, ep.shift, shared, ep.lo, ep.hi,
                ep.table, dst, c - c % BLOCK_CHANNELS, work=acc.size)
    return None if any(bad) else out


_INT32_MIN, _INT32_MAX = -(1 << 31), (1 << 31) - 1


@njit(cache=True)
def _requant_one(a, mode, m32, m64, q, sh):
    """(value, ok) for one accumulator; ok False where the reference requantizer raises."""
    sat = np.int64(FLOAT_SATURATION)
    if mode == 0:                                   # float32: one IEEE single multiply, half to even
        r = np.rint(np.float32(a) * m32)
        if r >= np.float32(FLOAT_SATURATION):
            return sat, True
        if r <= -np.float32(FLOAT_SATURATION):
            return -sat, True
        return np.int64(r), True
    if mode == 1:                                   # float64
        r = np.rint(np.float64(a) * m64)
        if r >= np.float64(FLOAT_SATURATION):
            return sat, True
        if r <= -np.float64(FLOAT_SATURATION):
            return -sat, True
        return np.int64(r), True
    if mode == 4:                                   # shift: 2^-sh, half up
        if sh > 0:
            if a > np.int64(0x7FFFFFFFFFFFFFFF) - (np.int64(1) << (sh - 1)):
                return np.int64(0), False           # the reference's wider arithmetic decides
            return (a + (np.int64(1) << (sh - 1))) >> sh, True
        if sh == 0:
            return a, True
        left = -sh
        if a > (np.int64(0x7FFFFFFFFFFFFFFF) >> left) or a < (np.int64(-0x7FFFFFFFFFFFFFFF - 1) >> left):
            return np.int64(0), False
        return a << left, True
    if a < _INT32_MIN or a > _INT32_MAX:            # TFLite's requantizer works on int32
        return np.int64(0), False
    if mode == 7:                                   # float64_away: C round(double(acc) * m), half away
        p = np.float64(a) * m64
        mag = abs(p)
        fl = np.floor(mag)
        r = fl + 1.0 if mag - fl >= 0.5 else fl    # mag - fl is exact in double
        if p < 0:
            r = -r
        if not (r >= _INT32_MIN and r <= _INT32_MAX):   # also +-inf
            return np.int64(0), False
        return np.int64(r), True
    if mode == 3:                                   # fixed_single: (a*q + 2^(t-1)) >> t, t = 31 - shift
        t = 31 - sh
        r = (a * q + (np.int64(1) << (t - 1))) >> t
        if r < _INT32_MIN or r > _INT32_MAX:
            return np.int64(0), False
        return r, True
    # fixed_double (2): RDBPOT(SRDHM(a * 2^left, q), right); fixed_double_ruy (5): the last shift rounds half up
    left = sh if sh > 0 else 0
    right = -sh if sh < 0 else 0
    if left >= 32:
        if a != 0:
            return np.int64(0), False
        x = np.int64(0)
    else:
        if a < (np.int64(_INT32_MIN) >> left) or a > (np.int64(_INT32_MAX) >> left):
            return np.int64(0), False
        x = a << left
    if x == _INT32_MIN and q == _INT32_MIN:
        high = np.int64(_INT32_MAX)
    else:
        ab = x * q
        t = ab + (np.int64(1 << 30) if ab >= 0 else np.int64(1 - (1 << 30)))
        high = t >> 31 if t >= 0 else -((-t) >> 31)
    if mode == 5:
        return (high + ((np.int64(1) << right) >> 1)) >> right, True
    mask = (np.int64(1) << right) - 1
    threshold = (mask >> 1) + (1 if high < 0 else 0)
    return (high >> right) + (1 if (high & mask) > threshold else 0), True


# Clipping the rounded float to [lo, hi] before the integer conversion equals converting (with the +-2^62
# saturation) and then clipping: lo and hi are integers well inside float32's exact range (TABLE_LIMIT). The
# multiplier's dtype (float32 or float64) is the mode: numba compiles one specialization per dtype.
def _clipped_products(acc, m, lo, hi) -> np.ndarray:
    """int32 clip(rint(acc·m), lo, hi) in m's float type, vectorised (the numpy twins' common step: the same
    IEEE operations as the kernels', element by element)."""
    v = np.rint(acc.astype(m.dtype) * m)
    np.clip(v, m.dtype.type(lo), m.dtype.type(hi), out=v)
    return v.astype(np.int32)


def _float_lines_numpy(t0, t1, acc, m, shared, lo, hi, offset, out):
    """_float_lines in numpy."""
    n, c, s = acc.shape
    mk = m[:1] if shared else m[np.arange(t0, t1) % c, None]
    codes = _clipped_products(acc.reshape(n * c, s)[t0:t1], mk, lo, hi) + np.int32(offset)
    out.reshape(n * c, s)[t0:t1] = codes


@njit(nogil=True, cache=True, python=_float_lines_numpy)
def _float_lines(t0, t1, acc, m, shared, lo, hi, offset, out):
    """Rows t0..t1 of the N·C, uniform output: code = clip(rint(acc·m)) + offset (branch-free: it vectorises)."""
    c = acc.shape[1]
    flo, fhi, foff = m.dtype.type(lo), m.dtype.type(hi), m.dtype.type(offset)
    for t in range(t0, t1):
        row, dst, mk = acc[t // c, t % c], out[t // c, t % c], m[0 if shared else t % c]
        for i in range(row.shape[0]):   # the offset added in float (exact: make_epilogue), then int32 (AVX2
            # has no vector float -> int64; numba would widen an int32 sum to int64)
            dst[i] = np.int32(min(max(np.rint(m.dtype.type(row[i]) * mk), flo), fhi) + foff)


SHORT_ROW = 64   # rows (one image's channel) shorter than this: _float_spread, whose loops run long
PIECE = 1 << 12  # elements of one _float_spread task


def _float_spread_numpy(t0, t1, acc, m, lo, hi, offset, table, linear, piece, out):
    """_float_spread in numpy: whole images at once (a split's single chunk), else image by image."""
    size = acc.shape[1]
    for n0, n1, p0, p1 in image_spans(t0, t1, -(-size // piece)):
        i0, i1 = p0 * piece, min(size, p1 * piece)
        q = _clipped_products(acc[n0:n1, i0:i1], m[i0:i1], lo, hi)
        out[n0:n1, i0:i1] = q + np.int32(offset) if linear else table[q - np.int32(lo)]


@njit(nogil=True, cache=True, python=_float_spread_numpy)
def _float_spread(t0, t1, acc, m, lo, hi, offset, table, linear, piece, out):
    """As _float_lines / _float_rows over [N, C·S] images, a multiplier per element (m [C·S]: each channel's
    repeated along its S positions), in pieces of `piece` elements: no per-row loop overhead on small images."""
    size = acc.shape[1]
    pieces = -(-size // piece)
    flo, fhi, foff, lo32 = m.dtype.type(lo), m.dtype.type(hi), m.dtype.type(offset), np.int32(lo)
    index = np.empty(min(size, piece), np.int32)
    for t in range(t0, t1):
        i0 = (t % pieces) * piece
        i1 = min(size, i0 + piece)
        row, dst, mr = acc[t // pieces, i0:i1], out[t // pieces, i0:i1], m[i0:i1]
        if linear:   # the offset added in float, as _float_lines
            for i in range(i1 - i0):
                dst[i] = np.int32(min(max(np.rint(m.dtype.type(row[i]) * mr[i]), flo), fhi) + foff)
        else:   # as _float_rows: the indices in vectors, then the lookups unsigned
            for i in range(i1 - i0):
                index[i] = np.int32(min(max(np.rint(m.dtype.type(row[i]) * mr[i]), flo), fhi)) - lo32
            for i in range(i1 - i0):
                dst[i] = table[np.uint32(index[i])]


@njit(nogil=True, cache=True)
def _float_rows(t0, t1, acc, m, shared, lo, hi, table, out):
    """As _float_lines, with the code looked up in `table` (non-uniform encodings): per row, the clipped values
    less lo (in vectors), then the lookups with an unsigned index (a signed one gets a wraparound check that
    keeps the whole loop scalar: 3-4x slower)."""
    c = acc.shape[1]
    flo, fhi, lo32 = m.dtype.type(lo), m.dtype.type(hi), np.int32(lo)
    index = np.empty(acc.shape[2], np.int32)
    for t in range(t0, t1):
        row, dst, mk = acc[t // c, t % c], out[t // c, t % c], m[0 if shared else t % c]
        for i in range(row.shape[0]):
            index[i] = np.int32(min(max(np.rint(m.dtype.type(row[i]) * mk), flo), fhi)) - lo32
        for i in range(row.shape[0]):
            dst[i] = table[np.uint32(index[i])]


@njit(nogil=True, cache=True)
def _generic_rows(t0, t1, acc, mode, m32, m64, q, sh, shared, lo, hi, table, out, blocks_end):
    """Rows t0..t1 of the N·C in any mode, one value at a time; returns how many values need the reference
    units (their code is left as lo's). fixed_double_blocks8 runs as fixed_double_ruy on the channels below
    `blocks_end` (the full blocks of 8) and as fixed_double on the rest."""
    c = acc.shape[1]
    bad = 0
    for t in range(t0, t1):
        row, dst, k = acc[t // c, t % c], out[t // c, t % c], 0 if shared else t % c
        md = mode
        if mode == 6:
            md = 5 if t % c < blocks_end else 2
        for i in range(row.shape[0]):
            v, ok = _requant_one(row[i], md, m32[k], m64[k], q[k], sh[k])
            if not ok:
                bad += 1
                v = lo
            dst[i] = table[min(max(v, lo), hi) - lo]
    return bad


# ----------------------------------------------------------------------------------------------------------
# The comparator bank of a threshold output (encodings.ThresholdAct.encode_acc, its reference)
# ----------------------------------------------------------------------------------------------------------
def run_thresholds(acc: np.ndarray, thresholds: np.ndarray, code_lo: int, out_dtype) -> np.ndarray:
    """code = code_lo + #{i : acc >= thresholds[c, i]} per output channel c (axis 1); thresholds int64 [C, n]."""
    acc = np.ascontiguousarray(acc)
    n, c = acc.shape[0], acc.shape[1]
    out = np.empty(acc.shape, out_dtype)
    split(_thresholds, n * c, acc.reshape(n, c, -1), np.ascontiguousarray(thresholds, dtype=np.int64), code_lo,
          out.reshape(n, c, -1), work=acc.size * thresholds.shape[-1])
    return out


@njit(nogil=True, cache=True)
def _thresholds(t0, t1, acc, th, lo, out):
    c, s = acc.shape[1], acc.shape[2]
    count = np.empty(s, np.int32)
    for t in range(t0, t1):
        row, dst, tc = acc[t // c, t % c], out[t // c, t % c], th[t % c]
        count[:] = 0
        for k in range(tc.shape[0]):   # one comparator per threshold (a thermometer code), counted: a threshold
            level = tc[k]              # at a time over the row (the inner loop then vectorises)
            for i in range(s):
                count[i] += np.int64(row[i]) >= level
        for i in range(s):
            dst[i] = lo + count[i]


def run_signs(acc: np.ndarray, bias) -> np.ndarray:
    """A binary output's sign bits: 1 where acc + bias[c] < 0 (BinaryAct.encode of the biased accumulator), uint8."""
    acc = np.ascontiguousarray(acc)
    n, c = acc.shape[0], acc.shape[1]
    b = np.zeros(c, np.int64) if bias is None else np.asarray(bias, np.int64)
    out = np.empty(acc.shape, np.uint8)
    split(_signs, n * c, acc.reshape(n, c, -1), b, out.reshape(n, c, -1), work=acc.size)
    return out


@njit(nogil=True, cache=True)
def _signs(t0, t1, acc, bias, out):
    c, s = acc.shape[1], acc.shape[2]
    for t in range(t0, t1):
        row, dst, b = acc[t // c, t % c], out[t // c, t % c], bias[t % c]
        for i in range(s):
            dst[i] = np.int64(row[i]) + b < 0


# ---------------------------------------------------------------------------------------------------------
# Parallel launchers (threads.launcher): each kernel's chunks on numba's threads; here, beside the kernels,
# because numba's cache keys a function on its own file
# ---------------------------------------------------------------------------------------------------------
@launcher(_float_spread)
@njit(parallel=True, nogil=True, cache=True)
def _float_spread_launch(n_tasks, chunks, acc, m, lo, hi, offset, table, linear, piece, out):
    for c in prange(chunks):
        _float_spread(n_tasks * c // chunks, n_tasks * (c + 1) // chunks,
                      acc, m, lo, hi, offset, table, linear, piece, out)


@launcher(_float_lines)
@njit(parallel=True, nogil=True, cache=True)
def _float_lines_launch(n_tasks, chunks, acc, m, shared, lo, hi, offset, out):
    for c in prange(chunks):
        _float_lines(n_tasks * c // chunks, n_tasks * (c + 1) // chunks, acc, m, shared, lo, hi, offset, out)


@launcher(_float_rows)
@njit(parallel=True, nogil=True, cache=True)
def _float_rows_launch(n_tasks, chunks, acc, m, shared, lo, hi, table, out):
    for c in prange(chunks):
        _float_rows(n_tasks * c // chunks, n_tasks * (c + 1) // chunks, acc, m, shared, lo, hi, table, out)


@launcher(_generic_rows)
@njit(parallel=True, nogil=True, cache=True)
def _generic_rows_launch(n_tasks, chunks, acc, mode, m32, m64, q, sh, shared, lo, hi, table, out, blocks_end):
    counts = np.zeros(chunks, np.int64)
    for c in prange(chunks):
        counts[c] = _generic_rows(n_tasks * c // chunks, n_tasks * (c + 1) // chunks,
                                  acc, mode, m32, m64, q, sh, shared, lo, hi, table, out, blocks_end)
    return counts


@launcher(_thresholds)
@njit(parallel=True, nogil=True, cache=True)
def _thresholds_launch(n_tasks, chunks, acc, th, lo, out):
    for c in prange(chunks):
        _thresholds(n_tasks * c // chunks, n_tasks * (c + 1) // chunks, acc, th, lo, out)


@launcher(_signs)
@njit(parallel=True, nogil=True, cache=True)
def _signs_launch(n_tasks, chunks, acc, bias, out):
    for c in prange(chunks):
        _signs(n_tasks * c // chunks, n_tasks * (c + 1) // chunks, acc, bias, out)
