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
- `depthwise_codes`: a depthwise conv from codes to output codes in one kernel call (sums, bias, the float
  epilogue of kernels/epilogue.py and the zero-operand taps together), channels-last or planar by image width.
- `zero_taps_codes`: the zero-operand tap counts of units/zero_gating.py, counted from the codes.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np
from ..jit import njit, prange, tiered

from . import im2col
from .byte_transpose import transpose_bytes
from .im2col import ConvGeometry
from .mac import _INT16_MAX
from .threads import image_spans, launcher, split

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
        _fill(canvas, pad_pixel)
    split(_decode_into, g.n * g.h, codes, table.astype(np.int16), code_lo, canvas, g.top, g.left, g.cig,
          work=canvas.size)
    nvec = im2col.choose_nvec(g.cog, np.int16, g.macs)
    wg = w.reshape(g.groups, g.cog, g.cig, g.kh, g.kw).transpose(0, 1, 3, 4, 2)
    wpk = im2col.memo_pack(w, ("int16", g.groups, nvec), lambda: im2col.pack_weights(wg, ce, np.int16, nvec))
    chunk = ((1 << 31) - 1) // (2 * max(1, x_reach) * max(1, w_max))   # int32 lanes: exact chunks
    return im2col.run_tiles(canvas, wpk, im2col.offset_table(g, canvas), g, nvec, chunk, init, 1, out_dtype)


def conv2d_sum_u8(codes, code_lo: int, offset: int, w, bias, g: ConvGeometry, pad_byte: int, w_max: int,
                  out_dtype=np.int64, _chunk: int | None = None, memo: dict | None = None,
                  byte_table: np.ndarray | None = None, pair_saturating: bool = False, zero_code: int | None = None):
    """The same sum for a uniform 8-bit input, whose operand is byte + offset with byte = code - code_lo in
    [0, 255]: the bytes go to the u8 x s8 micro-kernel (vpdpbusd: four products per lane and step) as they
    are, and offset·Σw moves into the bias: Σ (byte + offset)·w = Σ byte·w + offset·Σ_window w, padded taps
    included (they hold pad_byte). The caller checked the bound, int8 weights and 0 <= pad_byte <= 255.
    `memo`: a dict the caller keeps with the layer (packed weights and tile plans, per input shape).
    `byte_table`: the byte of each code (code - code_lo indexes it) for a non-uniform decoder whose values fit
    256 consecutive integers (KNQ centroids, say); None: byte = code - code_lo.
    `pair_saturating`: the bytes times the weights on x86's non-VNNI step instead (im2col._Maddubs8: adjacent
    channel products summed into int16 with saturation, in the canvas's channel order).
    `zero_code`: also count, per input channel, the codes equal to it (zero_taps_codes' counts of a 1x1 conv),
    while the bytes go into the canvas; returns (sums, counts int64 [Ci], or None where the bytes are looked up
    or wider than one byte) instead of the sums."""
    def prepare():   # per geometry: canvas shape, packed weights, the tile plan (bias with offset·Σw), pad pixel
        ce = -(-g.cig // 4) * 4
        shape = im2col.canvas_shape(g, ce)
        nvec = im2col.choose_nvec(g.cog, np.uint8, g.macs)

        def pack():      # depends on the weights only: one copy whatever the batch size or image size
            wg = w.reshape(g.groups, g.cog, g.cig, g.kh, g.kw).transpose(0, 1, 3, 4, 2)
            return im2col.pack_weights(wg, ce, np.uint8, nvec)

        if memo is None:
            wpk = im2col.memo_pack(w, ("u8s8", g.groups, nvec), pack)
        else:   # (the engine may run parts of a batch side by side: dict reads and writes only)
            wkey = ("u8s8 weights", g.groups, nvec)
            wpk = memo.get(wkey)
            if wpk is None:
                wpk = memo.setdefault(wkey, pack())
        init = np.zeros(g.co, np.int64) if bias is None else np.asarray(bias, np.int64)
        init = init + offset * w.astype(np.int64).reshape(w.shape[0], -1).sum(axis=1)
        pad_pixel = np.zeros((g.groups, ce), np.uint8)
        pad_pixel[:, :g.cig] = pad_byte
        fill = g.has_padding or shape[2] > g.w or ce > g.cig
        return shape, nvec, wpk, im2col.tile_plan(g, shape, np.uint8, init), pad_pixel, fill

    if memo is None:
        entry = prepare()
    else:   # one lookup per call
        gkey = ("u8s8 plan", g, offset, pad_byte)
        entry = memo.get(gkey)
        if entry is None:
            if len(memo) > MEMO_ENTRIES:   # a caller cycling through batch sizes: keep the newest only
                for key in [k for k in list(memo) if k[0] == "u8s8 plan"][:len(memo) // 2]:
                    memo.pop(key, None)
            entry = memo[gkey] = prepare()
    shape, nvec, wpk, tp, pad_pixel, fill = entry
    canvas = np.empty(shape, np.uint8)
    if fill:
        _fill(canvas, pad_pixel)
    zero_counts = None
    if byte_table is None and codes.dtype.itemsize == 1:   # bytes as they are (plus -code_lo): 8x8 at a time
        count = zero_code is not None
        per_task = np.zeros((g.n * g.h, g.ci) if count else (1, 1), np.int32)   # zero codes per task and channel
        split(_bytes_transposed, g.n * g.h, np.ascontiguousarray(codes), code_lo, canvas, g.top, g.left, g.cig,
              count, np.uint8((0 if zero_code is None else zero_code - code_lo) & 0xFF), per_task, work=canvas.size)
        if count:
            zero_counts = per_task.sum(axis=0, dtype=np.int64)
    elif codes.dtype.itemsize == 1:   # each code's byte looked up, then 8x8 at a time
        tkey = ("raw byte table", code_lo, codes.dtype.str)
        raw_table = None if memo is None else memo.get(tkey)
        if raw_table is None:   # (per layer: its byte table and code dtype never change)
            raw_table = _raw_byte_table(byte_table, code_lo, codes.dtype)
            if memo is not None:
                memo[tkey] = raw_table
        split(_bytes_looked_up, g.n * g.h, np.ascontiguousarray(codes), raw_table, canvas, g.top, g.left, g.cig,
              work=canvas.size)
    else:
        bytes_of = np.zeros(1, np.uint8) if byte_table is None else byte_table
        split(_bytes_into, g.n * g.h, codes, code_lo, byte_table is not None, bytes_of, canvas, g.top, g.left,
              g.cig, work=canvas.size)
    chunk = ((1 << 31) - 1) // (4 * 255 * max(1, w_max))   # int32 lanes: exact chunks of raw byte products
    chunk = chunk if _chunk is None else _chunk              # (tests: tiny chunks exercise the chunked sums)
    sums = im2col.run_planned(canvas.view(np.int8) if pair_saturating else canvas, wpk, tp, nvec, chunk, 1, out_dtype)
    return sums if zero_code is None else (sums, zero_counts)


def _fill(canvas: np.ndarray, pad_pixel: np.ndarray) -> None:
    """canvas[...] = pad_pixel (the last axes): a memset-like fill where the pixel is one repeated value (numpy's
    broadcast copy of a few-element pixel is slow)."""
    if pad_pixel.size and np.all(pad_pixel == pad_pixel.flat[0]):
        canvas.fill(pad_pixel.flat[0])
    else:   # one canvas row of pixels, copied row by row
        rows = canvas.reshape(-1, canvas.shape[2] * pad_pixel.size)
        rows[...] = np.tile(pad_pixel.reshape(-1), canvas.shape[2])


@njit(nogil=True, cache=True)
def _bytes_into(t0, t1, codes, lo, use_table, byte_table, canvas, top, left, cig):
    """canvas[n, top + i, left + j, g, k] = the byte of codes[n, g·cig + k, i, j] (a transposing copy)."""
    n, ci, h, w = codes.shape
    groups = canvas.shape[3]
    for t in range(t0, t1):
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


def _raw_byte_table(byte_table: np.ndarray, code_lo: int, dtype) -> np.ndarray:
    """uint8 [256]: the byte of each one-byte code, indexed by the code's raw byte (no sign, no offset in the
    kernel's loop: an unsigned index needs no wraparound check); raw bytes that are no code map to 0."""
    index = np.arange(256, dtype=np.uint8).view(np.dtype(dtype)).astype(np.int64) - code_lo
    inside = (index >= 0) & (index < byte_table.size)
    return np.where(inside, byte_table[np.clip(index, 0, byte_table.size - 1)], 0).astype(np.uint8)


@njit(nogil=True, cache=True)
def _bytes_looked_up(t0, t1, codes, raw_table, canvas, top, left, cig):
    """What _bytes_into computes with a byte table, for one-byte codes: per input row, each channel's W codes
    looked up (`raw_table`: _raw_byte_table) into a scratch [Ci, W] (contiguous reads), then each group's
    [cig, W] block transposed into the canvas 8x8 at a time (byte_transpose.transpose_bytes): _bytes_into
    reads the codes a channel apart, ~3x slower."""
    n, ci, h, w = codes.shape
    hp, wp, groups, ce = canvas.shape[1], canvas.shape[2], canvas.shape[3], canvas.shape[4]
    src, dst = codes.reshape(-1).view(np.uint8), canvas.reshape(-1)
    scratch = np.empty(ci * w, np.uint8)
    for t in range(t0, t1):
        ni, i = t // h, t % h
        for c in range(ci):
            row = src[((ni * ci + c) * h + i) * w:((ni * ci + c) * h + i + 1) * w]
            looked = scratch[c * w:(c + 1) * w]
            for j in range(w):
                looked[j] = raw_table[row[j]]
        for gi in range(groups):
            transpose_bytes(scratch, gi * cig * w, w, dst, (((ni * hp + top + i) * wp + left) * groups + gi) * ce,
                            groups * ce, cig, w, 0)


@njit(nogil=True, cache=True)
def _bytes_transposed(t0, t1, codes, lo, canvas, top, left, cig, count, zero_byte, zero_counts):
    """What _bytes_into computes without a byte table, for one-byte codes: each input row's [cig, W] block of a
    group goes to the canvas transposed (byte_transpose.transpose_bytes), code - lo wrapping in 8 bits.
    `count`: zero_counts[t, c] += how many of the task's pixels hold zero_byte in channel c (read back from
    the canvas pixels just written, channels contiguous: vector compares across the channels); a run of
    tasks counts into the row of its first."""
    n, ci, h, w = codes.shape
    hp, wp, groups, ce = canvas.shape[1], canvas.shape[2], canvas.shape[3], canvas.shape[4]
    src, dst = codes.reshape(-1).view(np.uint8), canvas.reshape(-1)
    add = (-lo) & 0xFF
    if top == 0 and left == 0 and wp == w:   # no padding: an image's rows are one run of pixels, one transpose
        t = t0
        while t < t1:
            ni, i0 = t // h, t % h
            i1 = min(h, i0 + t1 - t)
            for gi in range(groups):
                transpose_bytes(src, ((ni * ci + gi * cig) * h + i0) * w, h * w, dst,
                                ((ni * hp + i0) * wp * groups + gi) * ce, groups * ce, cig, (i1 - i0) * w, add)
            if count:
                _count_pixel_zeros(dst, (ni * hp + i0) * wp, (i1 - i0) * w, groups, ce, cig, zero_byte, zero_counts[t])
            t += i1 - i0
        return
    for t in range(t0, t1):
        ni, i = t // h, t % h
        for gi in range(groups):
            transpose_bytes(src, ((ni * ci + gi * cig) * h + i) * w, h * w, dst,
                            (((ni * hp + top + i) * wp + left) * groups + gi) * ce, groups * ce, cig, w, add)
        if count:
            _count_pixel_zeros(dst, (ni * hp + top + i) * wp + left, w, groups, ce, cig, zero_byte, zero_counts[t])


@njit(inline="always")
def _count_pixel_zeros(canvas_bytes, first_pixel, pixels, groups, ce, cig, zero_byte, counts):
    """counts[g·cig + c] += how many of the canvas pixels first_pixel.. (pixels of groups·ce bytes) hold
    zero_byte at channel c of group g."""
    for p in range(first_pixel, first_pixel + pixels):
        for gi in range(groups):
            pix = canvas_bytes[(p * groups + gi) * ce:(p * groups + gi) * ce + cig]
            row = counts[gi * cig:(gi + 1) * cig]
            for c in range(cig):
                row[c] += np.int32(pix[c] == zero_byte)


def _decode_into_numpy(t0, t1, codes, table, lo, canvas, top, left, cig):
    """_decode_into in numpy: whole images at once (a split's single chunk), else image by image."""
    h, w = codes.shape[2], codes.shape[3]
    groups = canvas.shape[3]
    for n0, n1, i0, i1 in image_spans(t0, t1, h):
        values = table[codes[n0:n1, :, i0:i1].astype(np.int64) - lo]   # [images, Ci, rows, W]
        dst = canvas[n0:n1, top + i0:top + i1, left:left + w]           # [images, rows, W, groups, ce]
        dst[..., :cig] = values.reshape(n1 - n0, groups, cig, i1 - i0, w).transpose(0, 3, 4, 1, 2)
        dst[..., cig:] = 0


@njit(nogil=True, cache=True, python=_decode_into_numpy)
def _decode_into(t0, t1, codes, table, lo, canvas, top, left, cig):
    """canvas[n, top + i, left + j, g, k] = table[codes[n, g·cig + k, i, j] - lo]; spare channel elements 0."""
    n, ci, h, w = codes.shape
    groups, ce = canvas.shape[3], canvas.shape[4]
    for t in range(t0, t1):
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
    """Channels-last with channels in SIMD lanes. The decoded input is a canvas split by column phase,
    [N, Hp, sw, Wq, Ci] (column j at phase j % sw, position j // sw), so that tap (kh, kw) of output pixel ow
    is the Ci values at one offset: a flat 1-D index per tap, no per-pixel views. float32 where every partial
    sum is an integer below 2^24 (exact, and vector FMA on any SIMD ISA: numba would multiply int32 operands
    as int64, which AVX2 cannot vectorise), else int64."""
    hp = max(g.h + g.top, (g.ho - 1) * g.sh + g.kh)
    wq = -(-max(g.w + g.left, (g.wo - 1) * g.sw + g.kw) // g.sw)
    sums = im2col.memo_pack(w, ("abs_sums_depthwise",), lambda: np.abs(w.astype(np.int64)).reshape(g.co, -1).sum(1))
    bound = x_reach * int(sums.max(initial=0))
    dtype = np.float32 if bound < (1 << 24) else np.int64
    canvas = np.full((g.n, hp, g.sw, wq, g.ci), pad_value, dtype)
    offset = int(table[0]) - code_lo   # a uniform code's value is code + offset: no table read
    linear = bool(table.size < 2 or np.all(np.diff(table) == 1))
    split(_decode_phases, g.n * g.h, codes, table.astype(dtype), code_lo, linear, offset, canvas, g.top, g.left,
          work=canvas.size)
    # weights tap-major [KH·KW, Co]; output channel co reads input channel co // cog
    wt = im2col.memo_pack(w, ("depthwise", np.dtype(dtype).str), lambda: np.ascontiguousarray(
        w.reshape(g.co, g.kh * g.kw).T, dtype=dtype))
    taps = np.array([((kh * g.sw + kw % g.sw) * wq + kw // g.sw) * g.ci for kh in range(g.kh) for kw in range(g.kw)],
                    np.int64)   # each tap's offset from the window's corner (row oh·sh, phase 0, column ow)
    out = np.empty((g.n, g.co, g.ho, g.wo), out_dtype)
    split(_depthwise_kernel, g.n * g.ho, canvas.reshape(-1), wt, taps, init, g.n, hp, wq, g.ci, g.cog, g.sh,
          bound < (1 << 31), out, work=out.size * g.kh * g.kw)
    return out


@njit(nogil=True, cache=True)
def _decode_phases(t0, t1, codes, table, lo, linear, offset, canvas, top, left):
    n, ci, h, w = codes.shape
    sw = canvas.shape[2]
    for t in range(t0, t1):
        ni, i = t // h, t % h
        for j in range(w):
            col = left + j
            dst = canvas[ni, top + i, col % sw, col // sw]
            if linear:   # a transposing copy: contiguous writes, strided reads; int32 on the way to float
                for c in range(ci):
                    dst[c] = np.int32(np.int32(codes[ni, c, i, j]) + np.int32(offset))
            else:
                for c in range(ci):
                    dst[c] = table[np.int64(codes[ni, c, i, j]) - lo]


@njit(nogil=True, cache=True)
def _depthwise_kernel(t0, t1, xf, wt, taps, init, n, hp, wq, ci, cog, sh, narrow, out):
    """One task per (image, output row): a[ow·Co + co] = Σ_taps w[tap, co] · x[tap of ow, co // cog], vector
    loops over channels (nine taps at once for 3x3), then stored transposed into NCHW with the bias."""
    _, co_n, ho, wo = out.shape
    sw = (xf.shape[0] // (n * hp)) // (wq * ci)
    nt = taps.shape[0]
    row_pitch = sw * wq * ci
    nine = nt == 9 and cog == 1   # 3x3 depthwise: the nine products of a channel in one expression
    last = nt - 1   # 1-D weight rows: they vectorise (2-D indexing in the loop does not)
    w0, w1, w2, w3, w4 = wt[0], wt[min(1, last)], wt[min(2, last)], wt[min(3, last)], wt[min(4, last)]
    w5, w6, w7, w8 = wt[min(5, last)], wt[min(6, last)], wt[min(7, last)], wt[min(8, last)]
    for t in range(t0, t1):
        ni, oh = t // ho, t % ho
        a = np.zeros(wo * co_n, wt.dtype)
        base = (ni * hp + oh * sh) * row_pitch
        for ow in range(wo):
            p = base + ow * ci
            dst = a[ow * co_n:(ow + 1) * co_n]
            if nine:
                x0, x1, x2 = xf[p + taps[0]:p + taps[0] + ci], xf[p + taps[1]:p + taps[1] + ci], xf[p + taps[2]:p + taps[2] + ci]
                x3, x4, x5 = xf[p + taps[3]:p + taps[3] + ci], xf[p + taps[4]:p + taps[4] + ci], xf[p + taps[5]:p + taps[5] + ci]
                x6, x7, x8 = xf[p + taps[6]:p + taps[6] + ci], xf[p + taps[7]:p + taps[7] + ci], xf[p + taps[8]:p + taps[8] + ci]
                for c in range(co_n):
                    dst[c] = (w0[c] * x0[c] + w1[c] * x1[c] + w2[c] * x2[c] + w3[c] * x3[c] + w4[c] * x4[c]
                              + w5[c] * x5[c] + w6[c] * x6[c] + w7[c] * x7[c] + w8[c] * x8[c])
            else:
                for k in range(nt):
                    wk, xk = wt[k], xf[p + taps[k]:p + taps[k] + ci]
                    for c in range(co_n):
                        dst[c] += wk[c] * xk[c // cog]
        for co in range(co_n):
            b = init[co]
            for ow in range(wo):   # narrow (|a| < 2^31): through int32, which AVX2 converts in vectors
                v = a[ow * co_n + co]
                out[ni, co, oh, ow] = b + (np.int64(np.int32(v)) if narrow else np.int64(v))


FUSED_MODES = (0, 1)   # the epilogue modes the fused depthwise kernel applies itself (float32, float64)
BAND_TASKS = 8         # tasks of a fused depthwise call at least (bands of output rows per image)
ZERO_MAP_CHUNKS = 8    # tasks of a zero-position count (chunks of channels)
PLANAR_WIDTH = 32      # output rows at least this wide (stride 1): the planar kernel (rows in SIMD lanes)


def depthwise_codes(codes, table, code_lo: int, w, bias, g: ConvGeometry, pad_value: int, x_reach: int, ep,
                    memo: dict | None = None, zero_code: int | None = None):
    """A depthwise conv (one input and one output channel per group) from its codes to its output codes in one
    kernel call: decode, the exact sums, bias, and the fused epilogue `ep` (kernels/epilogue.py, float modes:
    what its `run_epilogue` computes from the accumulators, bit for bit). Returns the codes [N, Co, Ho, Wo] of
    the epilogue's dtype, or None where it does not apply (the caller then takes the separate passes). `memo`:
    a dict the caller keeps with the layer (the kernel's arguments per geometry). The zero operands are
    counted apart (`zero_operand_counts`), but for their map: with `zero_code` (the one code whose value is 0)
    the kernel also sums, while it has the codes at hand, how many window taps read that code (Σ over the
    positions of its count there times the taps covering it: zero_operand_counts' `map_total`), returned as
    (codes, that sum or None where this kernel cannot count it) instead of the codes.

    One task per band of output rows of an image, channels-last inside (channels in SIMD lanes, as
    `_depthwise`): the band's input rows are decoded into a small padded [rows, Wp, C] scratch, each output
    pixel takes its taps as C-vectors, and the codes are transposed into NCHW as they are stored. Wide images
    at stride 1 take the planar kernel instead (`_depthwise_planar`: rows in SIMD lanes, no transposes). Sums
    in float32 where every partial sum is an integer below 2^24 (exact; vector FMA on AVX2), else float64
    (below 2^53)."""
    key = ("depthwise plan", g, code_lo, pad_value, x_reach)
    plan = None if memo is None else memo.get(key)
    if plan is None:
        plan = _depthwise_plan(table, code_lo, w, bias, g, pad_value, x_reach, ep)
        if plan is not False:   # with the zero map's row and column coverage (its weights per input position)
            rows, cols = _tap_boxes(g)[:2]
            plan = plan + (rows.coverage, cols.coverage)
        if memo is not None:
            kept = [k for k in list(memo) if k[0] == "depthwise plan"]
            for k in kept[:len(kept) // 2] if len(kept) >= MEMO_ENTRIES else ():
                memo.pop(k, None)   # a caller cycling through batch sizes: keep the newest
            memo[key] = plan
    if plan is False:
        return None
    kernel, tasks, args, row_cov, col_cov = plan
    out = np.empty((g.n, g.co, g.ho, g.wo), ep.table.dtype)
    # (the banded kernel counts on its channels-last bytes: one-byte codes only)
    count = zero_code is not None and (kernel is _depthwise_planar or codes.itemsize == 1)
    zero_totals = np.zeros(tasks if count else 1, np.int64)
    split(kernel, tasks, np.ascontiguousarray(codes), *args, count, np.int64(zero_code if count else 0),
          row_cov, col_cov, zero_totals, out, work=out.size * 4)
    return out if zero_code is None else (out, int(zero_totals.sum()) if count else None)


def _depthwise_plan(table, code_lo, w, bias, g: ConvGeometry, pad_value, x_reach, ep):
    """(kernel, tasks, arguments) of depthwise_codes for one geometry, or False."""
    if g.cig != 1 or g.cog != 1 or ep is None or ep.mode not in FUSED_MODES or ep.m64.size not in (1, g.co):
        return False
    bound = x_reach * int(np.abs(w.astype(np.int64)).reshape(g.co, -1).sum(1).max(initial=0))
    if bound >= 1 << 53:
        return False
    dtype = np.float32 if bound < (1 << 24) else np.float64
    wt = np.ascontiguousarray(w.reshape(g.co, g.kh * g.kw).T, dtype=dtype)   # tap-major [KH·KW, C]
    init = np.zeros(g.co, np.int64) if bias is None else np.array(bias, np.int64)
    m = ep.m32 if ep.mode == 0 else ep.m64
    narrow = bound + int(np.abs(init).max(initial=0)) < (1 << 31)   # every sum + bias within int32
    decode = (table.astype(dtype), code_lo, bool(table.size < 2 or np.all(np.diff(table) == 1)),
              int(table[0]) - code_lo, dtype(pad_value))
    epi = (narrow, m, m.size == 1, ep.lo, ep.hi, ep.offset, ep.linear, ep.table)
    # 3x3: the channels of whole vectors summed with the weights in registers (_dw3x3_sums), the rest in loops
    blocks = g.co // im2col.dw_lanes(dtype) if (g.kh, g.kw) == (3, 3) else 0
    if g.wo >= PLANAR_WIDTH and g.sh == g.sw == 1 and not blocks:   # wide rows, no whole vector of channels:
        # planar, rows in SIMD lanes, no transposes (with whole vectors the banded kernel is faster: 48x48x32
        # at batch 4, 222 against 368 us)
        geom = np.array([g.kh, g.kw, g.sh, g.sw, g.top, g.left, g.ho - 1 + g.kh, g.wo - 1 + g.kw], np.int64)
        return _depthwise_planar, g.n * g.co, decode + (np.ascontiguousarray(wt.T), init, geom) + epi
    band = -(-g.ho // max(1, -(-BAND_TASKS // g.n)))   # output rows per task
    bands = -(-g.ho // band)
    wp = max(g.w + g.left, (g.wo - 1) * g.sw + g.kw)
    geom = np.array([g.kh, g.kw, g.sh, g.sw, g.top, g.left, wp, band, bands, blocks,
                     blocks * im2col.dw_lanes(dtype)], np.int64)
    # the multiplier and bias tiled along an output row (channels last): the epilogue is one run per row
    m_row = np.tile(np.broadcast_to(m, (g.co,)), g.wo)
    init_row = np.tile(init.astype(np.int32) if narrow else init, g.wo)
    return _depthwise_fused, g.n * bands, decode + (
        wt, geom, narrow, m_row, init_row, ep.lo, ep.hi, ep.offset, ep.linear, ep.table)


def _dw3x3_sums_numpy(x, x_base, x_step, pitch, wt, acc, npix, blocks):
    """What microkernel.dw3x3_sums computes (integer sums the float type holds exactly: any order)."""
    c_n = wt.size // 9
    cc = blocks * im2col.dw_lanes(x.dtype)
    for p in range(npix):
        base = x_base + p * x_step
        total = np.zeros(cc, x.dtype)
        for t in range(9):
            start = base + (t // 3) * pitch + (t % 3) * c_n
            total += wt[t * c_n:t * c_n + cc] * x[start:start + cc]
        acc[p * c_n:p * c_n + cc] = total


def _build_dw3x3():
    from .microkernel import dw3x3_sums
    return dw3x3_sums


# the depthwise 3x3 sums: the LLVM IR intrinsic in numba mode, the twin in Python mode
_dw3x3_sums = njit(build=_build_dw3x3)(_dw3x3_sums_numpy)


@njit(inline="always")
def _aligned(size, dtype):
    """np.empty(size, dtype) starting on a 64-byte boundary: the channel vectors of the depthwise scratch then
    never straddle two cache lines (numpy's 16-byte alignment split most of them: 7% of the kernel's time)."""
    raw = np.empty(size + 64, dtype)
    shift = ((64 - raw.ctypes.data % 64) % 64) // raw.itemsize
    return raw[shift:shift + size]


@njit(nogil=True, cache=True)
def _depthwise_fused(t0, t1, codes, table, lo, linear, offset, pad, wt, geom, narrow, m_row, init_row, ep_lo,
                     ep_hi, ep_offset, ep_linear, ep_table, count_zeros, zero_code, row_cov, col_cov, zero_totals,
                     out):
    """depthwise_codes, channels last: one task per band of output rows of an image. The band's input rows are
    transposed to [rows, W, C] (8x8 bytes at a time), decoded into a padded scratch [rows, Wp, C], summed,
    requantized and encoded as channels-last runs and transposed back into the NCHW output. The sums: per output
    pixel, channels in SIMD lanes, three taps (a kernel row) per loop: a loop holds at most seven arrays (LLVM
    gives up vectorising a loop that needs more run-time alias checks: nine taps in one loop ran scalar). The
    epilogue runs over an output row at once, the multiplier and bias tiled along it (`m_row`, `init_row`).
    `count_zeros`: zero_totals[t] = Σ over the input rows the task owns (bands partition the rows; a row no
    window reads has coverage 0) of row_cov[i] · col_cov[j] · (codes at (i, j) equal to zero_code), counted
    on the channels-last rows a pixel's C bytes at a time (_count_equal)."""
    n, c_n, h, w = codes.shape
    ho, wo = out.shape[2], out.shape[3]
    kh_n, kw_n, sh, sw, top, left, wp, band, bands, blocks, c_vec = geom   # c_vec: channels _dw3x3_sums takes
    run = wo * c_n                # an output row, channels last
    wt_flat = wt.reshape(-1)
    pitch = wp * c_n              # a scratch row
    rows = (band - 1) * sh + kh_n
    canvas = _aligned(rows * pitch, wt.dtype)   # the band's padded input rows, channels last
    byte_in, byte_out = codes.itemsize == 1, out.itemsize == 1   # one-byte codes: transposes 8x8 at a time
    codes_flat = codes.reshape(-1).view(np.uint8)
    band_codes = np.empty(rows * w * c_n, codes.dtype)   # the band's input rows, channels last, undecoded
    band_bytes = band_codes.view(np.uint8)
    out_flat = out.reshape(-1).view(np.uint8)
    acc = _aligned(run, wt.dtype)
    values = np.empty(run, np.int32)            # requantized and clipped, one output row
    codes_cl = np.empty(band * run, ep_table.dtype)   # the band's output codes, channels last
    ftype = m_row.dtype.type
    flo, fhi, foff = ftype(ep_lo), ftype(ep_hi), ftype(ep_offset)
    three = kw_n == 3
    for t in range(t0, t1):
        ni, b = t // bands, t % bands
        oh0, oh1 = b * band, min(ho, (b + 1) * band)
        used = (oh1 - 1 - oh0) * sh + kh_n   # scratch rows this band reads
        r0 = oh0 * sh - top   # input row of the scratch's first row
        i_lo, i_hi = max(r0, 0), min(r0 + used, h)   # the band's rows inside the image
        if byte_in and i_hi > i_lo:   # [C, rows·W] bytes -> [rows·W, C], 8x8 at a time
            transpose_bytes(codes_flat, (ni * c_n * h + i_lo) * w, h * w, band_bytes, 0, c_n, c_n, (i_hi - i_lo) * w, 0)
        if count_zeros:   # the zero map of the rows this band owns: [b·band·sh - top, (b + 1)·band·sh - top)
            own_lo = i_lo if b == 0 else max(i_lo, b * band * sh - top)
            own_hi = i_hi if b == bands - 1 else min(i_hi, (b + 1) * band * sh - top)
            z_byte = np.uint8(zero_code & 0xFF)
            total = 0
            for i in range(own_lo, own_hi):
                if row_cov[i] == 0:
                    continue
                base = (i - i_lo) * w * c_n
                row_total = 0
                for j in range(w):
                    if col_cov[j]:
                        row_total += col_cov[j] * _count_equal(band_bytes, base + j * c_n, base + (j + 1) * c_n, z_byte)
                total += row_cov[i] * row_total
            zero_totals[t] = total
        for rl in range(used):   # decode, padding around
            i = r0 + rl
            dst = canvas[rl * pitch:(rl + 1) * pitch]
            if i < 0 or i >= h:
                dst[:] = pad
                continue
            dst[:left * c_n] = pad
            dst[(left + w) * c_n:] = pad
            dst_run = dst[left * c_n:(left + w) * c_n]
            if byte_in:   # the row, already channels last: decoded in one run
                src_run = band_codes[(i - i_lo) * w * c_n:(i - i_lo + 1) * w * c_n]
                if linear:
                    for q in range(w * c_n):
                        dst_run[q] = np.int32(np.int32(src_run[q]) + np.int32(offset))
                else:
                    for q in range(w * c_n):
                        dst_run[q] = table[np.uint64(np.int64(src_run[q]) - lo)]   # (unsigned: no wraparound check)
            else:   # a transposing copy: contiguous writes, strided reads
                for j in range(w):
                    for c in range(c_n):
                        code = codes[ni, c, i, j]
                        dst_run[j * c_n + c] = np.int32(np.int32(code) + np.int32(offset)) if linear else \
                            table[np.int64(code) - lo]
        for oh in range(oh0, oh1):
            # the sums of output row oh, channels last: whole vectors of channels with the weights in registers,
            # the rest per output pixel, the taps of a kernel row at a time
            if blocks:
                _dw3x3_sums(canvas, (oh - oh0) * sh * pitch, sw * c_n, pitch, wt_flat, acc, wo, blocks)
            rest = c_n - c_vec   # channels [c_vec, C): slices from there (loops from 0 vectorise)
            for ow in range(wo if rest else 0):
                a, p = acc[ow * c_n + c_vec:(ow + 1) * c_n], (oh - oh0) * sh * pitch + ow * sw * c_n + c_vec
                for kh in range(kh_n):
                    q = p + kh * pitch
                    if three:
                        x0, x1, x2 = canvas[q:q + rest], canvas[q + c_n:q + c_n + rest], \
                            canvas[q + 2 * c_n:q + 2 * c_n + rest]
                        u0, u1, u2 = wt[kh * 3, c_vec:], wt[kh * 3 + 1, c_vec:], wt[kh * 3 + 2, c_vec:]
                        if kh == 0:
                            for c in range(rest):
                                a[c] = u0[c] * x0[c] + u1[c] * x1[c] + u2[c] * x2[c]
                        else:
                            for c in range(rest):
                                a[c] += u0[c] * x0[c] + u1[c] * x1[c] + u2[c] * x2[c]
                    else:
                        if kh == 0:
                            a[:] = 0
                        for kw in range(kw_n):
                            x, u = canvas[q + kw * c_n:q + (kw + 1) * c_n], wt[kh * kw_n + kw]
                            for c in range(c_n):
                                a[c] += u[c] * x[c]
            # bias and the epilogue (epilogue._float_lines / _float_rows on the accumulator sum + bias); sum +
            # bias within int32 (`narrow`) is wrapped in int32 on the way to float (numba widens an int32 sum to
            # int64, whose conversion to float is scalar on AVX2); a uniform code is the clipped value plus the
            # offset, added in float (exact: epilogue.make_epilogue)
            row_cl = codes_cl[(oh - oh0) * run:(oh - oh0 + 1) * run]
            if ep_linear and narrow:
                for q in range(run):
                    row_cl[q] = np.int32(min(max(np.rint(ftype(np.int32(np.int32(acc[q]) + init_row[q])) * m_row[q]),
                                                 flo), fhi) + foff)
            elif ep_linear:
                for q in range(run):
                    row_cl[q] = np.int32(min(max(np.rint(ftype(np.int64(acc[q]) + init_row[q]) * m_row[q]), flo), fhi)
                                         + foff)
            else:
                if narrow:
                    for q in range(run):
                        values[q] = np.int32(min(max(np.rint(ftype(np.int32(np.int32(acc[q]) + init_row[q])) * m_row[q]),
                                                     flo), fhi))
                else:
                    for q in range(run):
                        values[q] = np.int32(min(max(np.rint(ftype(np.int64(acc[q]) + init_row[q]) * m_row[q]), flo),
                                                 fhi))
                for q in range(run):
                    row_cl[q] = ep_table[np.uint32(values[q] - np.int32(ep_lo))]
            if not byte_out:
                for c in range(c_n):
                    for ow in range(wo):
                        out[ni, c, oh, ow] = row_cl[ow * c_n + c]
        if byte_out:   # the band's [rows·Wo, C] codes -> rows oh0..oh1 of the C planes, 8x8 at a time
            transpose_bytes(codes_cl.view(np.uint8), 0, c_n, out_flat, (ni * c_n * ho + oh0) * wo, ho * wo,
                            (oh1 - oh0) * wo, c_n, 0)


@njit(nogil=True, cache=True)
def _depthwise_planar(t0, t1, codes, table, lo, linear, offset, pad, wt, init, geom, narrow, m, shared, ep_lo, ep_hi,
                      ep_offset, ep_linear, ep_table, count_zeros, zero_code, row_cov, col_cov, zero_totals, out):
    """depthwise_codes for wide images at stride 1: one task per (image, channel), its padded plane [Hp, Wp]
    decoded into a scratch, the outputs summed as one run with row pitch Wp (output q = oh·Wp + ow reads the
    scratch at q + kh·Wp + kw: one long unit-stride loop per tap; the Wp - Wo extra outputs per row are
    computed and dropped), the epilogue applied and the codes stored straight into the NCHW output.
    `count_zeros`: the plane's zero map, as _depthwise_fused counts it (zero_totals[t])."""
    n, c_n, h, w = codes.shape
    ho, wo = out.shape[2], out.shape[3]
    kh_n, kw_n, sh, sw, top, left, hp, wp = geom
    xp = np.empty(hp * wp, wt.dtype)
    run = (ho - 1) * wp + wo
    acc = np.empty(run, wt.dtype)
    values = np.empty(run, np.int32)
    codes_run = np.empty(run, ep_table.dtype)
    ftype = m.dtype.type
    flo, fhi, foff = ftype(ep_lo), ftype(ep_hi), ftype(ep_offset)
    for t in range(t0, t1):
        ni, c = t // c_n, t % c_n
        if count_zeros:
            total = 0
            for i in range(h):
                if row_cov[i]:
                    src, row_total = codes[ni, c, i], 0
                    for j in range(w):
                        row_total += col_cov[j] * np.int64(np.int64(src[j]) == zero_code)
                    total += row_cov[i] * row_total
            zero_totals[t] = total
        xp[:] = pad
        for i in range(h):
            dst, src = xp[(top + i) * wp + left:], codes[ni, c, i]
            cols = min(w, wp - left)
            if linear:   # int32 on the way to float: it vectorises
                for j in range(cols):
                    dst[j] = np.int32(np.int32(src[j]) + np.int32(offset))
            else:
                for j in range(cols):
                    dst[j] = table[np.uint64(np.int64(src[j]) - lo)]
        wk, mk, bias = wt[c], m[0 if shared else c], init[c]
        bias32 = np.int32(bias) if narrow else np.int32(0)
        if kh_n == 3 and kw_n == 3:   # the nine products of an output in one expression: one pass
            v0, v1, v2, v3, v4, v5, v6, v7, v8 = wk[0], wk[1], wk[2], wk[3], wk[4], wk[5], wk[6], wk[7], wk[8]
            r0, r1, r2 = xp[0:], xp[wp:], xp[2 * wp:]
            for q in range(run):
                acc[q] = (v0 * r0[q] + v1 * r0[q + 1] + v2 * r0[q + 2] + v3 * r1[q] + v4 * r1[q + 1] + v5 * r1[q + 2]
                          + v6 * r2[q] + v7 * r2[q + 1] + v8 * r2[q + 2])
        else:
            for k in range(kh_n * kw_n):
                x = xp[(k // kw_n) * wp + k % kw_n:]
                wv = wk[k]
                if k == 0:
                    for q in range(run):
                        acc[q] = wv * x[q]
                else:
                    for q in range(run):
                        acc[q] += wv * x[q]
        # the epilogue over the whole run (long loops vectorise; the extra columns are dropped), as in
        # _depthwise_fused: sum + bias wrapped in int32 where `narrow`, a uniform code's offset added in float
        if ep_linear and narrow:
            for q in range(run):
                codes_run[q] = np.int32(min(max(np.rint(ftype(np.int32(np.int32(acc[q]) + bias32)) * mk), flo), fhi)
                                        + foff)
        elif ep_linear:
            for q in range(run):
                codes_run[q] = np.int32(min(max(np.rint(ftype(np.int64(acc[q]) + bias) * mk), flo), fhi) + foff)
        else:
            if narrow:
                for q in range(run):
                    values[q] = np.int32(min(max(np.rint(ftype(np.int32(np.int32(acc[q]) + bias32)) * mk), flo), fhi))
            else:
                for q in range(run):
                    values[q] = np.int32(min(max(np.rint(ftype(np.int64(acc[q]) + bias) * mk), flo), fhi))
            for q in range(run):
                codes_run[q] = ep_table[np.uint32(values[q] - np.int32(ep_lo))]
        for oh in range(ho):
            out[ni, c, oh] = codes_run[oh * wp:oh * wp + wo]


def zero_taps_codes(codes, is_zero, code_lo: int, g: ConvGeometry, pad_is_zero: bool,
                    channel_zeros: np.ndarray | None = None) -> np.ndarray:
    """taps[c, r, s]: over the batch and every output position, how often tap (r, s) of input channel c reads
    a zero operand (a code whose value is 0, or a padded position when the pad value is 0).

    Tap (r, s) reads the input positions r + oh·sh - top, s + ow·sw - left: a strided box, so its count is a
    sum over the box's columns and then its rows (the kernel, per channel); the window positions that fall in
    the padding add the batch size each when the pad value is 0. `channel_zeros`: a 1x1 conv's counts per
    channel, counted already (conv2d_sum_u8 does)."""
    single, zc = _zero_code(is_zero.tobytes(), code_lo, codes.dtype)
    if (g.kh, g.kw, g.sh, g.sw) == (1, 1, 1, 1) and not g.has_padding:   # 1x1 (dense too): every position once
        if channel_zeros is not None:
            return channel_zeros.reshape(g.ci, 1, 1)
        if not single:
            codes, zc = is_zero[codes.astype(np.int64) - code_lo].view(np.uint8), np.ones(1, np.uint8)
        taps = np.empty(g.ci, np.int64)
        split(_zero_channels, g.ci, np.ascontiguousarray(codes).reshape(g.n, g.ci, -1), zc, taps, work=codes.size)
        return taps.reshape(g.ci, 1, 1)
    if not single:   # several codes decode to zero (or none): mark them first
        codes, zc = is_zero[codes.astype(np.int64) - code_lo].view(np.uint8), np.ones(1, np.uint8)
    rows, cols, outside, _ = _tap_boxes(g)
    taps = np.empty((g.ci, g.kh, g.kw), np.int64)
    split(_zero_taps, g.ci, np.ascontiguousarray(codes), zc, _channels(g.ci), rows.spans, cols.spans, taps,
          work=codes.size * g.kw)
    if pad_is_zero:   # every window position outside the image, in every image
        taps += g.n * outside
    return taps


def zero_operand_counts(codes, is_zero, code_lo: int, g: ConvGeometry, pad_is_zero: bool, zero_w_per_tap,
                        zero_w_total: int, memo: dict | None = None, map_total: int | None = None,
                        channel_zeros: np.ndarray | None = None) -> tuple[int, int]:
    """(MACs with a zero activation, with a zero activation or weight) of a conv on `codes`: what
    zero_counts_from_taps makes of zero_taps_codes, without counting every channel's taps.

    Every tap summed: Σ_taps taps = Σ_(i, j) Z(i, j) · rows(i) · cols(j), Z the zero operands at input position
    (i, j) over the batch and the channels, rows(i) how many kernel rows read input row i, cols(j) the same for
    columns (a tap's window positions are a box: rows × columns), plus the padded positions. Only the channels
    with a zero weight need their own taps (the positions where both operands are zero); when every channel
    has one (int8 weights of a trained layer, often), their taps' sum is the total and the map is skipped.
    `memo`: a dict the caller keeps with the layer (which channels have a zero weight). `map_total`: the map's
    sum over the image positions, counted already (depthwise_codes' kernel does), else counted here;
    `channel_zeros` likewise a 1x1 conv's zero codes per channel (conv2d_sum_u8's)."""
    if (g.kh, g.kw, g.sh, g.sw) == (1, 1, 1, 1) and not g.has_padding:   # per channel already: one pass
        taps = zero_taps_codes(codes, is_zero, code_lo, g, pad_is_zero, channel_zeros)
        return zero_counts_from_taps(taps, zero_w_per_tap, zero_w_total, g.cog, g.n * g.ho * g.wo)
    key = ("zero counts", g, codes.dtype.str)
    prepared = None if memo is None else memo.get(key)
    if prepared is None:   # per geometry and code dtype (the layer's zero codes and weights never change)
        single, zc = _zero_code(is_zero.tobytes(), code_lo, codes.dtype)
        chosen = np.flatnonzero(zero_w_per_tap.reshape(g.ci, -1).any(axis=1))   # channels with a zero weight
        zero_w = np.ascontiguousarray(zero_w_per_tap[chosen].reshape(-1), np.int64)   # their zero weights a tap
        prepared = (single, zc, chosen, zero_w) + _tap_boxes(g)
        if memo is not None:
            kept = [k for k in list(memo) if k[0] == "zero counts"]
            for k in kept[:len(kept) // 2] if len(kept) >= MEMO_ENTRIES else ():
                memo.pop(k, None)   # a caller cycling through batch sizes: keep the newest
            memo[key] = prepared
    single, zc, chosen, zero_w, rows, cols, outside, coverage = prepared
    flat = np.ascontiguousarray(codes).reshape(g.n, g.ci, -1)
    if not single:   # several codes decode to zero (or none): mark them first
        flat, zc = is_zero[flat.astype(np.int64) - code_lo].view(np.uint8), np.ones(1, np.uint8)
    both = 0
    if chosen.size:   # the channels with a zero weight: their taps, one by one
        taps = np.empty((chosen.size, g.kh, g.kw), np.int64)
        split(_zero_taps, chosen.size, flat.reshape(g.n, g.ci, g.h, g.w), zc, chosen, rows.spans, cols.spans, taps,
              work=chosen.size * g.n * g.h * g.w)
        if pad_is_zero:
            taps += g.n * outside
        both = int(np.dot(taps.reshape(-1), zero_w))
    if chosen.size == g.ci:   # every channel's taps counted: their sum is the total
        total = int(taps.sum())
    else:
        if map_total is None:
            totals = np.empty(max(1, min(ZERO_MAP_CHUNKS, g.ci)), np.int64)
            split(_zero_map, totals.size, flat, zc, coverage, totals, work=flat.size)
            map_total = int(totals.sum())
        total = map_total
        if pad_is_zero:   # every window position outside the image, in every image and channel
            total += g.n * g.ci * int(outside.sum())
    zero_act = total * g.cog
    return zero_act, zero_act + g.n * g.ho * g.wo * zero_w_total - both


@lru_cache(maxsize=64)
def _channels(ci: int) -> np.ndarray:
    """[0, ci) (every channel, for _zero_taps), made once."""
    every = np.arange(ci, dtype=np.int64)
    every.flags.writeable = False
    return every


class _Boxes:
    """The input rows (or columns) each kernel row (column) reads: `spans` int64 [K, 3] (start, stop, step) of
    `_inside`, `counts` [K] their lengths, `coverage` int64 [size]: how many kernel rows read each input row."""

    def __init__(self, k: int, pad: int, stride: int, n_out: int, size: int):
        self.spans = np.array([_inside(r, pad, stride, n_out, size) for r in range(k)], np.int64).reshape(k, 3)
        self.counts = np.array([len(range(*span)) for span in self.spans.tolist()], np.int64)
        self.coverage = np.zeros(size, np.int64)
        for start, stop, step in self.spans.tolist():
            self.coverage[start:stop:step] += 1
        for kept in (self.spans, self.counts, self.coverage):   # shared by every caller of the cache
            kept.flags.writeable = False


@lru_cache(maxsize=512)
def _tap_boxes(g: ConvGeometry) -> tuple[_Boxes, _Boxes, np.ndarray, np.ndarray]:
    """(rows, columns, outside [KH, KW]: each tap's window positions in the padding, per image and channel,
    coverage [H·W]: how many taps read each input position) of a geometry: computed once, not per call."""
    rows, cols = _Boxes(g.kh, g.top, g.sh, g.ho, g.h), _Boxes(g.kw, g.left, g.sw, g.wo, g.w)
    outside = g.ho * g.wo - np.outer(rows.counts, cols.counts)
    coverage = np.outer(rows.coverage, cols.coverage).reshape(-1)
    for kept in (outside, coverage):
        kept.flags.writeable = False
    return rows, cols, outside, coverage


def _zero_map_numpy(t0, t1, codes, zc, weight, totals):
    c_n, chunks = codes.shape[1], totals.shape[0]
    for t in range(t0, t1):
        part = codes[:, t * c_n // chunks:(t + 1) * c_n // chunks]
        totals[t] = np.dot(np.count_nonzero(part == zc[0], axis=(0, 1)).astype(np.int64), weight)


@njit(nogil=True, cache=True, python=_zero_map_numpy)
def _zero_map(t0, t1, codes, zc, weight, totals):
    """Tasks t0..t1 of totals.shape[0] chunks of channels: totals[t] = Σ_q weight[q] · (how many codes[n, c, q]
    of the chunk's channels equal zc[0]): the zeros per position (a compare and add per element, in vectors),
    then weighted once."""
    n, c_n, hw = codes.shape
    chunks = totals.shape[0]
    z = zc[0]
    m = np.empty(hw, np.int32)   # zeros per position over the chunk (< 2^31: below the tensor's size)
    m8 = np.empty(hw, np.uint8)  # the same over at most 255 rows: byte lanes, four times as many a vector
    bytewise = hw >= 32          # (rows shorter than a vector of bytes: the int32 lanes are faster)
    for t in range(t0, t1):
        m[:] = 0
        m8[:] = 0
        rows = 0
        for c in range(t * c_n // chunks, (t + 1) * c_n // chunks):
            for ni in range(n):
                src = codes[ni, c]
                if not bytewise:
                    for q in range(hw):
                        m[q] += np.int32(src[q] == z)
                    continue
                for q in range(hw):
                    m8[q] += np.uint8(src[q] == z)
                rows += 1
                if rows == 255:
                    for q in range(hw):
                        m[q] += np.int32(m8[q])
                    m8[:] = 0
                    rows = 0
        for q in range(hw):
            m[q] += np.int32(m8[q])
        total = 0
        for q in range(hw):
            total += np.int64(m[q]) * weight[q]
        totals[t] = total


def _zero_channels_numpy(t0, t1, codes, zc, out):
    out[t0:t1] = np.count_nonzero(codes[:, t0:t1] == zc[0], axis=(0, 2))


@njit(nogil=True, cache=True, python=_zero_channels_numpy)
def _zero_channels(t0, t1, codes, zc, out):
    """Channels t0..t1: out[c] = how many of codes[:, c, :] equal zc[0]: rows of one-byte codes a vector of
    bytes at a time (_count_equal: a compare and a popcount of its mask; 3-4x faster on 2304 bytes), short or
    wider rows a compare and add per element (vectorised; a masked vector per short row costs more)."""
    z = zc[0]
    n, _, hw = codes.shape
    one_byte = codes.itemsize == 1 and hw >= 32
    flat = codes.reshape(-1).view(np.uint8)   # (one-byte codes: their bytes; z's byte below)
    z_byte = np.uint8(z)
    for c in range(t0, t1):
        total = 0
        for ni in range(n):
            if one_byte:
                start = (ni * codes.shape[1] + c) * hw
                total += _count_equal(flat, start, start + hw, z_byte)
            else:
                row = codes[ni, c]
                run = 0
                for j in range(hw):
                    run += row[j] == z
                total += run
        out[c] = total


def _count_equal_numpy(x, start, stop, value):
    """What microkernel.count_equal computes."""
    return int(np.count_nonzero(x[start:stop] == value))


def _build_count_equal():
    from .microkernel import count_equal
    return count_equal


_count_equal = njit(build=_build_count_equal)(_count_equal_numpy)


def _zero_taps_numpy(t0, t1, codes, zc, channels, rows, cols, taps):
    """_zero_taps in numpy: the zeros per position summed over the batch, then each tap's strided box."""
    per_position = (codes[:, channels[t0:t1]] == zc[0]).sum(axis=0, dtype=np.int64)   # [channels, H, W]
    for r, (r0, r1, rs) in enumerate(rows.tolist()):
        for s, (c0, c1, cs) in enumerate(cols.tolist()):
            taps[t0:t1, r, s] = per_position[:, r0:r1:rs, c0:c1:cs].sum(axis=(1, 2))


@njit(nogil=True, cache=True, python=_zero_taps_numpy)
def _zero_taps(t0, t1, codes, zc, channels, rows, cols, taps):
    """Tasks t0..t1: taps[t, r, s] = how many codes[n, channels[t], rows[r] (start, stop, step), cols[s] (start,
    stop, step)] equal zc[0].
    Per channel, one pass: the zeros per column over the batch and the rows of each stride phase (rows i with
    the same i % step). A tap row reads the rows of one phase but the few at the plane's edges: its column sums
    are its phase's less those rows (re-counted), not a pass per row it reads; then per tap column its strided
    run of those sums. Rows are short (a 56-wide plane: 3-4 vectors), so the count of row loops is the cost."""
    n, _, h, w = codes.shape
    z = zc[0]
    step = rows[0, 2] if rows.shape[0] else 1   # every tap row's rows share the stride
    phases = np.empty((step, w), np.int32)   # zeros per column of one channel over a phase's rows and the batch
    column_sums = np.empty(w, np.int32)      # over the rows one tap row reads
    for t in range(t0, t1):
        c = channels[t]
        phases[:, :] = 0
        for i in range(h):
            sums = phases[i % step]
            for ni in range(n):
                src = codes[ni, c, i]
                for j in range(w):
                    sums[j] += np.int32(src[j] == z)
        for r in range(rows.shape[0]):
            r0, r1 = rows[r, 0], rows[r, 1]
            count = max(0, (r1 - r0 + step - 1) // step)
            if count == 0:
                column_sums[:] = 0
            else:
                column_sums[:] = phases[r0 % step]
                for i in range(r0 % step, r0, step):   # the phase's rows above the tap row's first
                    _count_off(column_sums, codes, c, i, z)
                for i in range(r0 + count * step, h, step):   # and below its last
                    _count_off(column_sums, codes, c, i, z)
            for s in range(cols.shape[0]):
                c0, c1, cs = cols[s, 0], cols[s, 1], cols[s, 2]
                run = column_sums[c0:max(c0, c1)]
                total = 0
                if cs == 1:
                    for j in range(run.shape[0]):
                        total += run[j]
                elif cs == 2:
                    for j in range((run.shape[0] + 1) // 2):
                        total += run[2 * j]
                else:
                    for j in range((run.shape[0] + cs - 1) // cs):
                        total += run[np.uint64(j * cs)]
                taps[t, r, s] = total


@njit(nogil=True, cache=True)
def _count_off(column_sums, codes, c, i, z):
    """column_sums[j] -= how many codes[:, c, i, j] equal z."""
    for ni in range(codes.shape[0]):
        src = codes[ni, c, i]
        for j in range(src.shape[0]):
            column_sums[j] -= np.int32(src[j] == z)


def _inside(k: int, pad: int, stride: int, n_out: int, size: int) -> tuple[int, int, int]:
    """(start, stop, step) of the input positions k + o·stride - pad (o < n_out) that lie in [0, size)."""
    first, end = im2col.tap_outputs(k, pad, stride, n_out, size)
    if end == first:
        return 0, 0, stride
    return k + first * stride - pad, k + (end - 1) * stride - pad + 1, stride


def zero_code_of(is_zero, code_lo: int, dtype) -> int | None:
    """The one code (in `dtype`) whose value is 0, or None (several, or none)."""
    single, zc = _zero_code(is_zero.tobytes(), code_lo, np.dtype(dtype))
    return int(zc[0]) if single else None


@lru_cache(maxsize=256)
def _zero_code(is_zero_bytes: bytes, code_lo: int, dtype):
    """(whether exactly one code is zero, that code in the codes' dtype): one zero code (every uniform
    encoding) is a compare, instead of a table read per element."""
    zeros = np.flatnonzero(np.frombuffer(is_zero_bytes, np.bool_))
    return zeros.size == 1, np.array([int(zeros[0]) + code_lo if zeros.size == 1 else 0], dtype)


def zero_counts_from_taps(taps, zero_w_per_tap, zero_w_total: int, k: int, positions: int) -> tuple[int, int]:
    """(MACs with a zero activation, with a zero activation or weight), as units/zero_gating.py combines them:
    zero_w_per_tap[c, r, s] counts the zero weights among a group's K filters at that tap."""
    sum_and_dot = tiered(_sum_and_dot, taps.size)[0]   # a small reduction: numpy's, if not worth compiling
    total, both = sum_and_dot(taps.reshape(-1), zero_w_per_tap.reshape(-1))   # exact: far below 2^63
    zero_act = int(total) * k
    return zero_act, zero_act + positions * zero_w_total - int(both)


def _sum_and_dot_numpy(a, b):
    return a.sum(dtype=np.int64), np.dot(a.astype(np.int64), b.astype(np.int64))


@njit(nogil=True, cache=True, python=_sum_and_dot_numpy)
def _sum_and_dot(a, b):
    """(Σ a, Σ a·b) in int64."""
    total = both = np.int64(0)
    for i in range(a.shape[0]):
        total += a[i]
        both += np.int64(a[i]) * np.int64(b[i])
    return total, both


def fits_int16(x_reach: int, w_max: int) -> bool:
    return x_reach <= _INT16_MAX and w_max <= _INT16_MAX


# ---------------------------------------------------------------------------------------------------------
# Parallel launchers (threads.launcher): each kernel's chunks on numba's threads; here, beside the kernels,
# because numba's cache keys a function on its own file
# ---------------------------------------------------------------------------------------------------------
@launcher(_decode_into)
@njit(parallel=True, nogil=True, cache=True)
def _decode_into_launch(n_tasks, chunks, codes, table, lo, canvas, top, left, cig):
    for c in prange(chunks):
        _decode_into(n_tasks * c // chunks, n_tasks * (c + 1) // chunks, codes, table, lo, canvas, top, left, cig)


@launcher(_bytes_into)
@njit(parallel=True, nogil=True, cache=True)
def _bytes_into_launch(n_tasks, chunks, codes, lo, use_table, byte_table, canvas, top, left, cig):
    for c in prange(chunks):
        _bytes_into(n_tasks * c // chunks, n_tasks * (c + 1) // chunks,
                    codes, lo, use_table, byte_table, canvas, top, left, cig)


@launcher(_bytes_transposed)
@njit(parallel=True, nogil=True, cache=True)
def _bytes_transposed_launch(n_tasks, chunks, codes, lo, canvas, top, left, cig, count, zero_byte, zero_counts):
    for c in prange(chunks):
        _bytes_transposed(n_tasks * c // chunks, n_tasks * (c + 1) // chunks, codes, lo, canvas, top, left, cig,
                          count, zero_byte, zero_counts)


@launcher(_decode_phases)
@njit(parallel=True, nogil=True, cache=True)
def _decode_phases_launch(n_tasks, chunks, codes, table, lo, linear, offset, canvas, top, left):
    for c in prange(chunks):
        _decode_phases(n_tasks * c // chunks, n_tasks * (c + 1) // chunks,
                       codes, table, lo, linear, offset, canvas, top, left)


@launcher(_depthwise_kernel)
@njit(parallel=True, nogil=True, cache=True)
def _depthwise_kernel_launch(n_tasks, chunks, xf, wt, taps, init, n, hp, wq, ci, cog, sh, narrow, out):
    for c in prange(chunks):
        _depthwise_kernel(n_tasks * c // chunks, n_tasks * (c + 1) // chunks,
                          xf, wt, taps, init, n, hp, wq, ci, cog, sh, narrow, out)


@launcher(_depthwise_fused)
@njit(parallel=True, nogil=True, cache=True)
def _depthwise_fused_launch(n_tasks, chunks,
                            codes, table, lo, linear, offset, pad, wt, geom, narrow, m_row, init_row, ep_lo, ep_hi,
                            ep_offset, ep_linear, ep_table, count_zeros, zero_code, row_cov, col_cov, zero_totals, out):
    for c in prange(chunks):
        _depthwise_fused(n_tasks * c // chunks, n_tasks * (c + 1) // chunks,
                         codes, table, lo, linear, offset, pad, wt, geom, narrow, m_row, init_row, ep_lo, ep_hi,
                         ep_offset, ep_linear, ep_table, count_zeros, zero_code, row_cov, col_cov, zero_totals, out)


@launcher(_depthwise_planar)
@njit(parallel=True, nogil=True, cache=True)
def _depthwise_planar_launch(n_tasks, chunks,
                             codes, table, lo, linear, offset, pad, wt, init, geom, narrow, m, shared, ep_lo, ep_hi,
                             ep_offset, ep_linear, ep_table, count_zeros, zero_code, row_cov, col_cov, zero_totals,
                             out):
    for c in prange(chunks):
        _depthwise_planar(n_tasks * c // chunks, n_tasks * (c + 1) // chunks,
                          codes, table, lo, linear, offset, pad, wt, init, geom, narrow, m, shared, ep_lo, ep_hi,
                          ep_offset, ep_linear, ep_table, count_zeros, zero_code, row_cov, col_cov, zero_totals, out)


@launcher(_zero_map)
@njit(parallel=True, nogil=True, cache=True)
def _zero_map_launch(n_tasks, chunks, codes, zc, weight, totals):
    for c in prange(chunks):
        _zero_map(n_tasks * c // chunks, n_tasks * (c + 1) // chunks, codes, zc, weight, totals)


@launcher(_zero_channels)
@njit(parallel=True, nogil=True, cache=True)
def _zero_channels_launch(n_tasks, chunks, codes, zc, out):
    for c in prange(chunks):
        _zero_channels(n_tasks * c // chunks, n_tasks * (c + 1) // chunks, codes, zc, out)


@launcher(_zero_taps)
@njit(parallel=True, nogil=True, cache=True)
def _zero_taps_launch(n_tasks, chunks, codes, zc, channels, rows, cols, taps):
    for c in prange(chunks):
        _zero_taps(n_tasks * c // chunks, n_tasks * (c + 1) // chunks, codes, zc, channels, rows, cols, taps)


@launcher(_bytes_looked_up)
@njit(parallel=True, nogil=True, cache=True)
def _bytes_looked_up_launch(n_tasks, chunks, codes, raw_table, canvas, top, left, cig):
    for c in prange(chunks):
        _bytes_looked_up(n_tasks * c // chunks, n_tasks * (c + 1) // chunks, codes, raw_table, canvas, top, left, cig)
