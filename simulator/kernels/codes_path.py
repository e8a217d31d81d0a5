"""The MAC layer fed straight from stored codes: decode inside the kernel, no int64 activation tensor.

A layer's input arrives as codes in the narrowest dtype of its encoding. Every activation decoder (uniform
code - zp, ENQ's CE shift, KNQ's CK centroid mux) is a function of the code alone, so it is a table of
2^bits values (`decode_table`, built once from the reference decoder) read while the kernel lays out its
operands. The exact sum is taken only where the accumulator bound proves, from the table's largest |value|
(not from the data), that no partial sum can leave the accumulator: then every order gives the same integer
and the policy never acts (kernels/mac.py). Otherwise the engine keeps the sequential reference-order kernel.

- `conv2d_sum_u8`: operands within 256 consecutive values (uniform 8-bit; KNQ or small ENQ through a byte
  table) with int8 weights, on the u8 x s8 micro-kernel (vpdpbusd where the CPU has AVX-512 VNNI).
- `conv2d_sum_codes`: other convs on the int16 SIMD micro-kernel (im2col.py), the canvas written straight
  from the codes through the decode table; depthwise-like convs (one input channel per group, few outputs
  per group) on their own channels-last kernel.
- `zero_taps_codes`: the zero-operand tap counts of units/zero_gating.py, counted from the codes.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np
from numba import njit, prange

from . import im2col
from .im2col import ConvGeometry
from .mac import _INT16_MAX

DECODE_TABLE_LIMIT = 1 << 16
MEMO_ENTRIES = 32   # per layer: geometries (batch sizes) remembered


def decode_table(enc) -> np.ndarray | None:
    """Operand value of every code of `enc` (int64, index code - lo), or None for a too-wide code range."""
    lo, hi = enc.code_range()
    if hi - lo + 1 > DECODE_TABLE_LIMIT:
        return None
    return np.ascontiguousarray(enc.decode(np.arange(lo, hi + 1, dtype=np.int64)), dtype=np.int64)


def conv2d_sum_codes(codes, table, code_lo: int, w, bias, g: ConvGeometry, pad_value: int, x_reach: int,
                     w_max: int, out_dtype=np.int64) -> np.ndarray:
    """bias[co] + Σ decode(code)·w over each window, [N, Co, Ho, Wo] of `out_dtype`. The caller has proved
    (bound) that no partial sum leaves the accumulator, nor out_dtype, and that x_reach, w_max <= 32767."""
    init = np.zeros(g.co, np.int64) if bias is None else np.asarray(bias, np.int64)
    if g.cig == 1 and 4 * g.cog < im2col.LANES[np.dtype(np.int16)]:
        return _depthwise(codes, table, code_lo, w, init, g, pad_value, x_reach, out_dtype)
    ce = g.cig + (g.cig & 1)   # the micro-kernel takes channels in pairs
    pad_pixel = np.zeros((g.groups, ce), np.int16)
    pad_pixel[:, :g.cig] = pad_value
    canvas = np.empty(im2col.canvas_shape(g, ce), np.int16)
    if g.has_padding or canvas.shape[2] > g.w:
        canvas[...] = pad_pixel
    _decode_into(codes, table.astype(np.int16), code_lo, canvas, g.top, g.left, g.cig)
    nvec = im2col.choose_nvec(g.cog, np.int16)
    wg = w.reshape(g.groups, g.cog, g.cig, g.kh, g.kw).transpose(0, 1, 3, 4, 2)
    wpk = im2col.memo_pack(w, ("int16", g.groups, nvec), lambda: im2col.pack_weights(wg, ce, np.int16, nvec))
    chunk = ((1 << 31) - 1) // (2 * max(1, x_reach) * max(1, w_max))   # int32 lanes: exact chunks
    return im2col.run_tiles(canvas, wpk, im2col.offset_table(g, canvas), g, nvec, chunk, init, 1, out_dtype)


def conv2d_sum_u8(codes, code_lo: int, offset: int, w, bias, g: ConvGeometry, pad_byte: int, w_max: int,
                  out_dtype=np.int64, _chunk: int | None = None, memo: dict | None = None,
                  byte_table: np.ndarray | None = None) -> np.ndarray:
    """The same sum for a uniform 8-bit input, whose operand is byte + offset with byte = code - code_lo in
    [0, 255]: the bytes go to the u8 x s8 micro-kernel (vpdpbusd: four products per lane and step) as they
    are, and offset·Σw moves into the bias: Σ (byte + offset)·w = Σ byte·w + offset·Σ_window w, padded taps
    included (they hold pad_byte). The caller checked the bound, int8 weights and 0 <= pad_byte <= 255.
    `memo`: a dict the caller keeps with the layer (packed weights and tile plans, per input shape).
    `byte_table`: the byte of each code (code - code_lo indexes it) for a non-uniform decoder whose values fit
    256 consecutive integers (KNQ centroids, say); None: byte = code - code_lo."""
    ce = -(-g.cig // 4) * 4
    shape = im2col.canvas_shape(g, ce)
    nvec = im2col.choose_nvec(g.cog, np.uint8)

    def pack():      # depends on the weights only: one copy whatever the batch size or image size
        wg = w.reshape(g.groups, g.cog, g.cig, g.kh, g.kw).transpose(0, 1, 3, 4, 2)
        return im2col.pack_weights(wg, ce, np.uint8, nvec)

    def plan():      # per geometry: the bias with offset·Σw folded in, the tile plan, the pad pixel
        init = np.zeros(g.co, np.int64) if bias is None else np.asarray(bias, np.int64)
        init = init + offset * w.astype(np.int64).reshape(w.shape[0], -1).sum(axis=1)
        pad_pixel = np.zeros((g.groups, ce), np.uint8)
        pad_pixel[:, :g.cig] = pad_byte
        return im2col.tile_plan(g, shape, np.uint8, init), pad_pixel

    if memo is None:
        wpk = im2col.memo_pack(w, ("u8s8", g.groups, nvec), pack)
        tp, pad_pixel = plan()
    else:
        wkey, gkey = ("u8s8 weights", g.groups, nvec), ("u8s8 plan", g, offset, pad_byte)
        wpk = memo[wkey] if wkey in memo else memo.setdefault(wkey, pack())
        if gkey not in memo:
            if len(memo) > MEMO_ENTRIES:   # a caller cycling through batch sizes: keep the newest only
                for key in [k for k in memo if k[0] == "u8s8 plan"][:len(memo) // 2]:
                    del memo[key]
            memo[gkey] = plan()
        tp, pad_pixel = memo[gkey]
    canvas = np.empty(shape, np.uint8)
    if g.has_padding or shape[2] > g.w or ce > g.cig:
        canvas[...] = pad_pixel
    bytes_of = np.zeros(1, np.uint8) if byte_table is None else byte_table
    _bytes_into(codes, code_lo, byte_table is not None, bytes_of, canvas, g.top, g.left, g.cig)
    chunk = ((1 << 31) - 1) // (4 * 255 * max(1, w_max))   # int32 lanes: exact chunks of raw byte products
    chunk = chunk if _chunk is None else _chunk              # (tests: tiny chunks exercise the chunked sums)
    return im2col.run_planned(canvas, wpk, tp, nvec, chunk, 1, out_dtype)


@njit(parallel=True, cache=True)
def _bytes_into(codes, lo, use_table, byte_table, canvas, top, left, cig):
    """canvas[n, top + i, left + j, g, k] = the byte of codes[n, g·cig + k, i, j] (a transposing copy)."""
    n, ci, h, w = codes.shape
    groups = canvas.shape[3]
    for t in prange(n * h):
        ni, i = t // h, t % h
        for j in range(w):
            for gi in range(groups):
                dst = canvas[ni, top + i, left + j, gi]
                if use_table:
                    for k in range(cig):
                        dst[k] = byte_table[np.int64(codes[ni, gi * cig + k, i, j]) - lo]
                else:
                    for k in range(cig):
                        dst[k] = np.uint8(np.int64(codes[ni, gi * cig + k, i, j]) - lo)


@njit(parallel=True, cache=True)
def _decode_into(codes, table, lo, canvas, top, left, cig):
    """canvas[n, top + i, left + j, g, k] = table[codes[n, g·cig + k, i, j] - lo]; spare channel elements 0."""
    n, ci, h, w = codes.shape
    groups, ce = canvas.shape[3], canvas.shape[4]
    for t in prange(n * h):
        ni, i = t // h, t % h
        for gi in range(groups):
            for k in range(cig):
                src = codes[ni, gi * cig + k, i]
                for j in range(w):
                    canvas[ni, top + i, left + j, gi, k] = table[np.int64(src[j]) - lo]
            for k in range(cig, ce):
                for j in range(w):
                    canvas[ni, top + i, left + j, gi, k] = 0


def _depthwise(codes, table, code_lo, w, init, g: ConvGeometry, pad_value: int, x_reach: int,
               out_dtype) -> np.ndarray:
    """Channels-last with output channels in SIMD lanes. The decoded input is an int32 canvas split by column
    phase, [N, Hp, sw, Wq, Ci] (column j at phase j % sw, position j // sw), so that tap (kh, kw) of a whole
    output row is one contiguous run of Wo·Ci values; the weights are tiled along the row to match."""
    hp = max(g.h + g.top, (g.ho - 1) * g.sh + g.kh)
    wq = -(-max(g.w + g.left, (g.wo - 1) * g.sw + g.kw) // g.sw)
    canvas = np.full((g.n, hp, g.sw, wq, g.ci), pad_value, np.int16)   # operands fit int16 (the caller)
    # a uniform code's value is code + offset: arithmetic, not a table read, so the copy vectorises
    offset = int(table[0]) - code_lo
    linear = bool(table.size < 2 or (table[-1] - table[0] == table.size - 1 and np.all(np.diff(table) == 1)))
    _decode_phases(codes, table.astype(np.int16), code_lo, linear, offset, canvas, g.top, g.left)
    w3 = w.reshape(g.co, g.kh, g.kw)
    src = np.arange(g.co) // g.cog                    # the input channel each output channel reads
    wt = im2col.memo_pack(w, ("depthwise", g.wo), lambda: np.ascontiguousarray(
        np.tile(w3.transpose(1, 2, 0)[:, :, None, :], (1, 1, g.wo, 1)), dtype=np.int32))
    # int32 sums where they provably fit (bias added in int64 at the store), else int64
    sums = im2col.memo_pack(w, ("abs_sums_depthwise",), lambda: np.abs(w3.astype(np.int64)).reshape(g.co, -1).sum(1))
    acc_dtype = np.int32 if x_reach * int(sums.max(initial=0)) < (1 << 31) else np.int64
    acc = np.empty((g.n * g.ho, g.wo * g.co), acc_dtype)
    out = np.empty((g.n, g.co, g.ho, g.wo), out_dtype)
    if (g.kh, g.kw) == (3, 3) and g.cog == 1:   # the common case: nine taps summed in registers
        w9 = im2col.memo_pack(w, ("depthwise3x3",), lambda: np.ascontiguousarray(
            w3.reshape(g.co, 9).T, dtype=np.int32))
        _depthwise3x3_kernel(canvas, w9, init, g.sh, g.sw, acc, out)
    else:
        _depthwise_kernel(canvas, wt.reshape(g.kh, g.kw, -1), src, init, g.sh, g.sw, acc, out)
    return out


@njit(parallel=True, cache=True)
def _decode_phases(codes, table, lo, linear, offset, canvas, top, left):
    n, ci, h, w = codes.shape
    sw = canvas.shape[2]
    for t in prange(n * h):
        ni, i = t // h, t % h
        for j in range(w):
            col = left + j
            dst = canvas[ni, top + i, col % sw, col // sw]
            if linear:   # a transposing copy: contiguous writes, strided reads
                for c in range(ci):
                    dst[c] = np.int64(codes[ni, c, i, j]) + offset
            else:
                for c in range(ci):
                    dst[c] = table[np.int64(codes[ni, c, i, j]) - lo]


@njit(parallel=True, cache=True)
def _depthwise_kernel(canvas, wt, src, init, sh, sw, acc, out):
    """One task per (image, output row): acc[ow·Co + co] = Σ_taps w[co, tap] · x[src[co], tap], one long
    contiguous loop per tap (exact: the bound keeps every partial sum within acc's dtype), then stored
    transposed into NCHW with the bias."""
    n, co_n, ho, wo = out.shape
    kh_n, kw_n = wt.shape[0], wt.shape[1]
    ci = canvas.shape[4]
    m = wo * co_n
    same = ci == co_n
    for t in prange(n * ho):
        ni, oh = t // ho, t % ho
        a = acc[t]
        a[:] = 0
        for kh in range(kh_n):
            for kw in range(kw_n):
                run = canvas[ni, oh * sh + kh, kw % sw].reshape(-1)[(kw // sw) * ci:]
                wv = wt[kh, kw]
                if same:
                    for i in range(m):
                        a[i] += wv[i] * run[i]
                else:   # channel multiplier > 1: output channel co reads input channel src[co]
                    for ow in range(wo):
                        for co in range(co_n):
                            a[ow * co_n + co] += wv[ow * co_n + co] * run[ow * ci + src[co]]
        for co in range(co_n):
            for ow in range(wo):
                out[ni, co, oh, ow] = init[co] + a[ow * co_n + co]


@njit(parallel=True, cache=True)
def _depthwise3x3_kernel(canvas, w9, init, sh, sw, acc, out):
    """3x3, one output channel per input channel: for each output pixel, the nine taps of all channels in one
    loop over channels (nine weight rows and nine input runs read, one row written: a ninth of the memory
    traffic of a pass per tap). Exact: the bound keeps every partial sum within acc's dtype."""
    n, co_n, ho, wo = out.shape
    for t in prange(n * ho):
        ni, oh = t // ho, t % ho
        a = acc[t]
        r0, r1, r2 = canvas[ni, oh * sh], canvas[ni, oh * sh + 1], canvas[ni, oh * sh + 2]
        w0, w1, w2, w3, w4, w5, w6, w7, w8 = w9[0], w9[1], w9[2], w9[3], w9[4], w9[5], w9[6], w9[7], w9[8]
        for ow in range(wo):
            # tap (kh, kw) of output ow: phase kw % sw, position ow + kw // sw
            x0, x1, x2 = r0[0, ow], r0[1 % sw, ow + 1 // sw], r0[2 % sw, ow + 2 // sw]
            x3, x4, x5 = r1[0, ow], r1[1 % sw, ow + 1 // sw], r1[2 % sw, ow + 2 // sw]
            x6, x7, x8 = r2[0, ow], r2[1 % sw, ow + 1 // sw], r2[2 % sw, ow + 2 // sw]
            dst = a[ow * co_n:(ow + 1) * co_n]
            for c in range(co_n):
                dst[c] = (w0[c] * x0[c] + w1[c] * x1[c] + w2[c] * x2[c] + w3[c] * x3[c] + w4[c] * x4[c]
                          + w5[c] * x5[c] + w6[c] * x6[c] + w7[c] * x7[c] + w8[c] * x8[c])
        for co in range(co_n):
            for ow in range(wo):
                out[ni, co, oh, ow] = init[co] + a[ow * co_n + co]


def zero_taps_codes(codes, is_zero, code_lo: int, g: ConvGeometry, pad_is_zero: bool) -> np.ndarray:
    """taps[c, r, s]: over the batch and every output position, how often tap (r, s) of input channel c reads
    a zero operand (a code whose value is 0, or a padded position when the pad value is 0)."""
    taps = np.zeros((g.ci, g.kh, g.kw), np.int64)
    is_zero_u8, single, zc = _zero_code(is_zero.tobytes(), code_lo, codes.dtype)
    _zero_taps(codes, is_zero_u8, code_lo, single, zc, g.kh, g.kw, g.sh, g.sw, g.top, g.left, g.ho, g.wo,
               pad_is_zero, taps)
    return taps


@lru_cache(maxsize=256)
def _zero_code(is_zero_bytes: bytes, code_lo: int, dtype):
    """(zero mask as uint8, whether exactly one code is zero, that code in the codes' dtype): one zero code
    (every uniform encoding) is a compare that vectorises, instead of a table read per element."""
    is_zero = np.frombuffer(is_zero_bytes, np.bool_)
    zeros = np.flatnonzero(is_zero)
    zero_code = int(zeros[0]) + code_lo if zeros.size == 1 else 0
    return is_zero.astype(np.uint8), zeros.size == 1, np.array([zero_code], dtype)


@njit(cache=True)   # serial: cheap next to the conv, and a parallel version compiles 4x slower
def _zero_taps(codes, is_zero, lo, single, zc, kh_n, kw_n, sh, sw, top, left, ho, wo, pad_is_zero, taps):
    n, ci, h, w = codes.shape
    zero_code = zc[0]
    hp = max(h + top, (ho - 1) * sh + kh_n)
    wp = max(w + left, (wo - 1) * sw + kw_n)
    if kh_n == kw_n == sh == sw == 1 and hp == h and wp == w:   # 1x1, unpadded: every position is one tap
        for c in range(ci):
            total = 0
            for ni in range(n):
                for i in range(h):
                    src = codes[ni, c, i]
                    for j in range(w):
                        total += (src[j] == zero_code) if single else is_zero[np.int64(src[j]) - lo]
            taps[c, 0, 0] = total
        return
    for c in range(ci):
        # zeros per padded position over the batch (a padded position: all N images, if the pad is 0)
        count = np.full((hp, wp), n if pad_is_zero else 0, np.int32)
        for i in range(h):
            for j in range(w):
                count[top + i, left + j] = 0
        for ni in range(n):
            for i in range(h):
                src = codes[ni, c, i]
                dst = count[top + i, left:left + w]
                if single:
                    for j in range(w):
                        dst[j] += np.int32(src[j] == zero_code)
                else:
                    for j in range(w):
                        dst[j] += np.int32(is_zero[np.int64(src[j]) - lo])
        # strided prefix sums: chain[i, j] = count[i, j] + chain[i, j - sw], so the sum over a tap's
        # positions s, s + sw, ..., s + (wo - 1)·sw is a difference of two entries (likewise for rows)
        for i in range(hp):
            for j in range(sw, wp):
                count[i, j] += count[i, j - sw]
        cols = np.zeros((hp, kw_n), np.int64)
        for i in range(hp):
            for s in range(kw_n):
                cols[i, s] = count[i, s + (wo - 1) * sw] - (count[i, s - sw] if s >= sw else 0)
        for i in range(sh, hp):
            for s in range(kw_n):
                cols[i, s] += cols[i - sh, s]
        for r in range(kh_n):
            for s in range(kw_n):
                taps[c, r, s] = cols[r + (ho - 1) * sh, s] - (cols[r - sh, s] if r >= sh else 0)


def zero_counts_from_taps(taps, zero_w_per_tap, zero_w_total: int, k: int, positions: int) -> tuple[int, int]:
    """(MACs with a zero activation, with a zero activation or weight), as units/zero_gating.py combines them:
    zero_w_per_tap[c, r, s] counts the zero weights among a group's K filters at that tap."""
    zero_act = int(taps.sum()) * k
    both = int((taps * zero_w_per_tap).sum())
    return zero_act, zero_act + positions * zero_w_total - both


def fits_int16(x_reach: int, w_max: int) -> bool:
    return x_reach <= _INT16_MAX and w_max <= _INT16_MAX
