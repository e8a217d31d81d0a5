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
from ..jit import njit, prange
from .im2col import tap_outputs
from .threads import launcher, split

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
        split(_lookup2, a.size, np.ascontiguousarray(a).reshape(-1), np.ascontiguousarray(b).reshape(-1),
              np.ascontiguousarray(table).reshape(-1), table.shape[1], lo_a * table.shape[1] + lo_b, out.reshape(-1))
        return out
    return table[a.astype(np.int64) - lo_a, b.astype(np.int64) - lo_b]


@njit(nogil=True, cache=True)
def _lookup1(t0, t1, x, table, lo, out):
    for i in range(t0, t1):
        out[i] = table[np.int64(x[i]) - lo]


@njit(nogil=True, cache=True)
def _lookup2(t0, t1, a, b, flat_table, width, origin, out):
    """out[i] = table[a[i] - lo_a, b[i] - lo_b] for the table as one flat row: a·width + b - origin, with
    origin = lo_a·width + lo_b (one address computation, no 2-D index per element)."""
    for i in range(t0, t1):
        out[i] = flat_table[np.uint64(np.int64(a[i]) * width + np.int64(b[i]) - origin)]   # >= 0: no wraparound


def maxpool_codes(x: np.ndarray, kernel, stride, padding) -> np.ndarray:
    """Max over each window of codes [N, C, H, W] (padding never wins), the input's dtype.

    A numba kernel over the planes: each output's window clipped to the image, its max taken element by element
    (small windows over small planes: numpy's strided loops would pay their set-up per few elements). Every
    window holds at least one real element (the model checks pad < kernel); one that does not would get the
    dtype's lowest value. Python mode runs the numpy twin `_maxpool_numpy` (the same values)."""
    (kh, kw), (sh, sw), (pt, pl, pb, pr) = kernel, stride, padding
    n, c, h, w = x.shape
    oh, ow = (h + pt + pb - kh) // sh + 1, (w + pl + pr - kw) // sw + 1
    out = np.empty((n, c, oh, ow), x.dtype)
    geom = np.array([kh, kw, sh, sw, pt, pl], np.int64)
    if (kh, kw) == (sh, sw) and not any(padding) and (h, w) == (oh * kh, ow * kw):   # windows tile the planes
        split(_maxpool_tiled, n * c, np.ascontiguousarray(x).reshape(n * c * oh, kh, ow, kw),
              out.reshape(n * c * oh, ow), oh, work=x.size)
        return out
    split(_maxpool_planes, n * c, np.ascontiguousarray(x).reshape(n * c, h, w), out.reshape(n * c, oh, ow), geom,
          np.array([np.iinfo(x.dtype).min], x.dtype), work=out.size * kh * kw)
    return out


def _tap_range(k: int, pad: int, stride: int, n_out: int, size: int) -> tuple[int, int, int]:
    """(first output, end output, first input) of tap k (im2col.tap_outputs)."""
    first, end = tap_outputs(k, pad, stride, n_out, size)
    return first, end, first * stride + k - pad


def _maxpool_numpy(t0, t1, x, out, geom, lowest):
    """Planes t0..t1 in numpy: out = max over the taps of the input positions each output's tap reads (one
    running np.maximum per tap over strided views, each restricted to the outputs whose tap lands inside)."""
    kh, kw, sh, sw, pt, pl = (int(v) for v in geom)
    oh, ow, h, w = out.shape[1], out.shape[2], x.shape[1], x.shape[2]
    dst = out[t0:t1]
    dst[...] = lowest[0]
    for a in range(kh):
        o0, o1, i0 = _tap_range(a, pt, sh, oh, h)
        for b in range(kw):
            q0, q1, j0 = _tap_range(b, pl, sw, ow, w)
            if o1 > o0 and q1 > q0:
                view = dst[:, o0:o1, q0:q1]
                np.maximum(view, x[t0:t1, i0:i0 + (o1 - o0 - 1) * sh + 1:sh, j0:j0 + (q1 - q0 - 1) * sw + 1:sw],
                           out=view)


@njit(nogil=True, cache=True, python=_maxpool_numpy)
def _maxpool_planes(t0, t1, x, out, geom, lowest):
    """Planes t0..t1: out = max over each window clipped to the image. Per output row, one running max per tap
    over the outputs whose tap lands inside the row (a strided run: it vectorises), as _maxpool_numpy."""
    kh, kw, sh, sw, pt, pl = geom
    h, w = x.shape[1], x.shape[2]
    oh, ow = out.shape[1], out.shape[2]
    q_lo, q_hi, j_lo = np.empty(kw, np.int64), np.empty(kw, np.int64), np.empty(kw, np.int64)
    for b in range(kw):   # tap column b: outputs q_lo..q_hi read input columns j_lo, j_lo + sw, ...
        q_lo[b] = min(ow, max(0, -(-(pl - b) // sw)))
        q_hi[b] = max(q_lo[b], min(ow, (w - 1 + pl - b) // sw + 1))
        j_lo[b] = q_lo[b] * sw + b - pl
    for t in range(t0, t1):
        src, dst = x[t], out[t]
        for i in range(oh):
            row = dst[i]
            row[:] = lowest[0]
            for a in range(kh):
                r = i * sh - pt + a
                if r < 0 or r >= h:
                    continue
                line = src[r]
                for b in range(kw):   # (index m from a range, constant strides: no wraparound checks, vectors)
                    seg, run = line[j_lo[b]:], row[q_lo[b]:q_hi[b]]
                    if sw == 1:
                        for m in range(run.shape[0]):
                            run[m] = max(run[m], seg[m])
                    elif sw == 2:
                        for m in range(run.shape[0]):
                            run[m] = max(run[m], seg[2 * m])
                    else:
                        for m in range(run.shape[0]):
                            run[m] = max(run[m], seg[np.uint64(m * sw)])


def _maxpool_tiled_numpy(t0, t1, x4, out, oh):
    """_maxpool_tiled in numpy."""
    out[t0 * oh:t1 * oh] = x4[t0 * oh:t1 * oh].max(axis=(1, 3))


@njit(nogil=True, cache=True, python=_maxpool_tiled_numpy)
def _maxpool_tiled(t0, t1, x4, out, oh):
    """Planes t0..t1 of windows that tile the planes (kernel = stride, no padding): x4 [rows of windows, KH, Wo,
    KW] -> out [rows of windows, Wo]. First the max along each window row, over the planes' rows as one flat
    run (a long loop with a constant stride: it vectorises), then along the window's KH rows."""
    _, kh, ow, kw = x4.shape
    r0, r1 = t0 * oh, t1 * oh
    flat = x4[r0:r1].reshape(-1)   # [(r1 - r0)·KH·Wo, KW]: element m·KW + b
    across = np.empty((r1 - r0) * kh * ow, x4.dtype)
    if kw == 2:   # the usual 2x2 pool: a constant inner count, so the loop vectorises
        for m in range(across.shape[0]):
            across[m] = max(flat[2 * m], flat[2 * m + 1])
    else:
        for m in range(across.shape[0]):
            best = flat[m * kw]
            for b in range(1, kw):
                best = max(best, flat[m * kw + b])
            across[m] = best
    dst = out[r0:r1].reshape(-1)
    if kh == 2:   # rows of windows as one run of Wo-wide pairs of rows
        for r in range(r1 - r0):
            for j in range(ow):
                dst[r * ow + j] = max(across[2 * r * ow + j], across[(2 * r + 1) * ow + j])
    else:
        for r in range(r1 - r0):
            for j in range(ow):
                best = across[r * kh * ow + j]
                for a in range(1, kh):
                    best = max(best, across[(r * kh + a) * ow + j])
                dst[r * ow + j] = best


def global_average_ort_codes(codes: np.ndarray, in_zero_point: int, multiplier: np.float32, lo: int, hi: int,
                             out_zero_point: int, out_dtype) -> np.ndarray:
    """ONNX Runtime's QLinearGlobalAveragePool (units/pooling.avgpool_ort's whole-plane case) from uniform input
    codes [N, C, H, W] (any integer dtype) to uniform output codes [N, C, 1, 1] in one pass: per plane the
    exact sum of the values (code - in_zero_point), rint(float32(sum) · multiplier) in float32, clipped to
    ±2^62, then the output encoder's clamp to [lo, hi] (codes) with its zero point. (The unit's path decodes to
    int64, sums, rounds and encodes in four numpy passes: ~50 us of set-up on a 4x1024x3x3 tensor.)"""
    n, c = codes.shape[:2]
    out = np.empty((n, c, 1, 1), out_dtype)
    split(_global_average, n * c, np.ascontiguousarray(codes).reshape(n * c, -1), np.int64(in_zero_point),
          np.float32(multiplier), np.int64(lo), np.int64(hi), np.int64(out_zero_point), out.reshape(-1),
          work=codes.size)
    return out


def _global_average_numpy(t0, t1, planes, in_zp, m, lo, hi, out_zp, out):
    total = planes[t0:t1].astype(np.int64).sum(axis=1) - in_zp * planes.shape[1]
    with np.errstate(over="ignore", invalid="ignore"):
        r = np.rint(total.astype(np.float32) * np.float32(m))
    values = np.clip(r, -2.0 ** 62, 2.0 ** 62).astype(np.int64)
    out[t0:t1] = np.clip(values, lo - out_zp, hi - out_zp) + out_zp


@njit(nogil=True, cache=True, python=_global_average_numpy)
def _global_average(t0, t1, planes, in_zp, m, lo, hi, out_zp, out):
    """Planes t0..t1 of global_average_ort_codes."""
    hw = planes.shape[1]
    bound = np.float32(2.0 ** 62)
    for t in range(t0, t1):
        row = planes[t]
        total = np.int64(0)
        for q in range(hw):
            total += np.int64(row[q])
        r = np.rint(np.float32(total - in_zp * hw) * m)
        r = min(max(r, -bound), bound)
        out[t] = min(max(np.int64(r), lo - out_zp), hi - out_zp) + out_zp


# ---------------------------------------------------------------------------------------------------------
# Parallel launchers (threads.launcher): each kernel's chunks on numba's threads; here, beside the kernels,
# because numba's cache keys a function on its own file
# ---------------------------------------------------------------------------------------------------------
@launcher(_lookup1)
@njit(parallel=True, nogil=True, cache=True)
def _lookup1_launch(n_tasks, chunks, x, table, lo, out):
    for c in prange(chunks):
        _lookup1(n_tasks * c // chunks, n_tasks * (c + 1) // chunks, x, table, lo, out)


@launcher(_lookup2)
@njit(parallel=True, nogil=True, cache=True)
def _lookup2_launch(n_tasks, chunks, a, b, flat_table, width, origin, out):
    for c in prange(chunks):
        _lookup2(n_tasks * c // chunks, n_tasks * (c + 1) // chunks, a, b, flat_table, width, origin, out)


@launcher(_maxpool_planes)
@njit(parallel=True, nogil=True, cache=True)
def _maxpool_planes_launch(n_tasks, chunks, x, out, geom, lowest):
    for c in prange(chunks):
        _maxpool_planes(n_tasks * c // chunks, n_tasks * (c + 1) // chunks, x, out, geom, lowest)


@launcher(_maxpool_tiled)
@njit(parallel=True, nogil=True, cache=True)
def _maxpool_tiled_launch(n_tasks, chunks, x4, out, oh):
    for c in prange(chunks):
        _maxpool_tiled(n_tasks * c // chunks, n_tasks * (c + 1) // chunks, x4, out, oh)


@launcher(_global_average)
@njit(parallel=True, nogil=True, cache=True)
def _global_average_launch(n_tasks, chunks, planes, in_zp, m, lo, hi, out_zp, out):
    for c in prange(chunks):
        _global_average(n_tasks * c // chunks, n_tasks * (c + 1) // chunks, planes, in_zp, m, lo, hi, out_zp, out)
