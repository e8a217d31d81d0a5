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

from ..errors import HwsimError
from ..jit import njit
from .im2col import tap_outputs
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
    """Max over each window of codes [N, C, H, W] (padding never wins), the input's dtype.

    In numpy, one running np.maximum per window tap over strided views of the input, each restricted to the
    outputs whose tap lands inside the image: no padded copy, no temporaries. Every window holds at least one
    real element (the model checks pad < kernel), so the start value (the dtype's lowest) never survives.
    The planes are split across the kernel threads (numpy's loops release the GIL)."""
    (kh, kw), (sh, sw), (pt, pl, pb, pr) = kernel, stride, padding
    n, c, h, w = x.shape
    oh, ow = (h + pt + pb - kh) // sh + 1, (w + pl + pr - kw) // sw + 1
    out = np.empty((n, c, oh, ow), x.dtype)
    taps = [(_tap_range(a, pt, sh, oh, h), _tap_range(b, pl, sw, ow, w)) for a in range(kh) for b in range(kw)]
    split(_maxpool_planes, n * c, np.ascontiguousarray(x).reshape(n * c, h, w), out.reshape(n * c, oh, ow),
          taps, sh, sw, work=x.size * kh * kw)
    return out


def _tap_range(k: int, pad: int, stride: int, n_out: int, size: int) -> tuple[int, int, int]:
    """(first output, end output, first input) of tap k (im2col.tap_outputs)."""
    first, end = tap_outputs(k, pad, stride, n_out, size)
    return first, end, first * stride + k - pad


def _maxpool_planes(t0, t1, x, out, taps, sh, sw):
    """Planes t0..t1: out = max over the taps of the input positions each output's tap reads."""
    dst = out[t0:t1]
    dst[...] = np.iinfo(out.dtype).min
    for (o0, o1, i0), (q0, q1, j0) in taps:
        if o1 > o0 and q1 > q0:
            view = dst[:, o0:o1, q0:q1]
            np.maximum(view, x[t0:t1, i0:i0 + (o1 - o0 - 1) * sh + 1:sh, j0:j0 + (q1 - q0 - 1) * sw + 1:sw],
                       out=view)
