"""Elementwise layers on narrow codes as tables computed by their reference units.

A layer whose output code depends only on one input code (clip / ReLU, a lut) or on one code from each of two
inputs (residual add) is, on codes of at most 8 bits, a table of at most 2^16 entries. The engine builds the
table once per layer by running the reference unit (units/residual_add.py, the encoder, ...) on every code
combination, so the table is exact by construction; the run is then one lookup per element. Where the
reference unit refuses some combination (a fixed-point mode out of its int32 contract, say) no table is made
and the reference runs on the data as before, raising only if the data meet the refusal.

`maxpool_codes` is the max pool on codes of any integer dtype (every activation encoding is monotone in its
code), with ONNX's -inf padding; units/pooling.py stays its reference.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from ..errors import HwsimError
from .threads import split

PAIR_TABLE_LIMIT = 1 << 16   # entries of a two-input table (8-bit x 8-bit)


def code_grid(enc) -> np.ndarray:
    lo, hi = enc.code_range()
    return np.arange(lo, hi + 1, dtype=np.int64)


def unary_table(enc_in, fn, out_dtype) -> np.ndarray | None:
    """fn(codes) over every code of enc_in, or None if fn refuses one (HwsimError) or the range is too wide."""
    grid = code_grid(enc_in)
    if grid.size > PAIR_TABLE_LIMIT:
        return None
    try:
        return np.ascontiguousarray(fn(grid)).astype(out_dtype)
    except HwsimError:
        return None


def pair_table(enc_a, enc_b, fn, out_dtype) -> np.ndarray | None:
    """fn(codes_a, codes_b) over every pair of codes, [len_a, len_b], or None (as unary_table)."""
    ga, gb = code_grid(enc_a), code_grid(enc_b)
    if ga.size * gb.size > PAIR_TABLE_LIMIT:
        return None
    a, b = np.meshgrid(ga, gb, indexing="ij")
    try:
        return np.ascontiguousarray(fn(a[:, :, None, None], b[:, :, None, None])[:, :, 0, 0]).astype(out_dtype)
    except HwsimError:
        return None


def lookup1(x: np.ndarray, table: np.ndarray, lo: int) -> np.ndarray:
    out = np.empty(x.shape, table.dtype)
    flat = np.ascontiguousarray(x).reshape(-1)
    split(_lookup1, flat.size, flat, table, lo, out.reshape(-1))
    return out


def lookup2(a: np.ndarray, b: np.ndarray, table: np.ndarray, lo_a: int, lo_b: int) -> np.ndarray:
    """table[a - lo_a, b - lo_b] elementwise, with numpy broadcasting between a and b."""
    if a.shape == b.shape:
        out = np.empty(a.shape, table.dtype)
        split(_lookup2, a.size, np.ascontiguousarray(a).reshape(-1), np.ascontiguousarray(b).reshape(-1), table, lo_a, lo_b,
                 out.reshape(-1))
        return out
    return table[a.astype(np.int64) - lo_a, b.astype(np.int64) - lo_b]


@njit(nogil=True, cache=True)
def _lookup1(t0, t1, x, table, lo, out):
    for i in range(t0, t1):
        out[i] = table[np.int64(x[i]) - lo]


@njit(nogil=True, cache=True)
def _lookup2(t0, t1, a, b, table, lo_a, lo_b, out):
    for i in range(t0, t1):
        out[i] = table[np.int64(a[i]) - lo_a, np.int64(b[i]) - lo_b]


def maxpool_codes(x: np.ndarray, kernel, stride, padding) -> np.ndarray:
    """Max over each window of codes [N, C, H, W] (padding never wins), the input's dtype."""
    (kh, kw), (sh, sw), (pt, pl, pb, pr) = kernel, stride, padding
    n, c, h, w = x.shape
    oh, ow = (h + pt + pb - kh) // sh + 1, (w + pl + pr - kw) // sw + 1
    out = np.empty((n, c, oh, ow), x.dtype)
    split(_maxpool, n * c, np.ascontiguousarray(x), kh, kw, sh, sw, pt, pl, out, work=x.size * kh)
    return out


@njit(nogil=True, cache=True)
def _maxpool(t0, t1, x, kh, kw, sh, sw, pt, pl, out):
    """Planes t0..t1 of the N·C. Separable: per output row, the max over the window's rows for every column
    (contiguous loops that vectorise), then the max over each window's columns. Padded rows and columns are
    left out, never compared."""
    c, w = x.shape[1], x.shape[3]
    rows = np.empty(w, x.dtype)      # one scratch row per chunk (an allocation per plane costs more)
    for t in range(t0, t1):
        _maxpool_plane(x[t // c, t % c], out[t // c, t % c], rows, kh, kw, sh, sw, pt, pl)


@njit(cache=True)
def _maxpool_plane(plane, dst, rows, kh, kw, sh, sw, pt, pl):
    h, w = plane.shape
    oh_n, ow_n = dst.shape
    for oh in range(oh_n):
        i_lo, i_hi = max(oh * sh - pt, 0), min(oh * sh - pt + kh, h)
        first = plane[i_lo]
        for j in range(w):
            rows[j] = first[j]
        for i in range(i_lo + 1, i_hi):
            row = plane[i]
            for j in range(w):
                rows[j] = max(rows[j], row[j])
        for ow in range(ow_n):
            j_lo, j_hi = max(ow * sw - pl, 0), min(ow * sw - pl + kw, w)
            best = rows[j_lo]
            for j in range(j_lo + 1, j_hi):
                best = max(best, rows[j])
            dst[oh, ow] = best
