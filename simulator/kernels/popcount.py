"""XNOR-popcount kernels for binary conv2d and dense layers (the Larq Compute Engine convention).

Semantics:
- Bits encode ±1 values: bit 1 means -1, bit 0 means +1 (so an upstream sign(0) gives +1).
  `x_bits` uint8 [N, Ci, H, W] and `w_bits` uint8 [Co, Ci/groups, KH, KW] hold 0/1.
- Each output is the ±1 dot product of the window with the filter,
      out = Σ x·w = K − 2·popcount(x XOR w)
  over the K positions that take part. Int32 [N, Co, Ho, Wo] (dense: [N, Co]).
- `pad_mode` says what a padded position is:
    "+1"    an input of +1 (bit 0): K = Ci/groups·KH·KW for every output ("one-padding", free in hardware)
    "-1"    an input of -1 (bit 1): K as above
    "zero"  nothing: padded positions contribute 0 and K counts only real positions. Computed as the "+1"
            result minus Σ w over the padded positions (Larq's per-output correction term), folded into the
            constant the kernel adds per output: it depends only on which taps of the window are padded.
- Geometry as in mac.py: Ho = (H + top + bottom - KH)//sh + 1; groups divide Ci and Co.

The fast kernel packs each group's channels into uint64 words, LSB first (channel c of a group is bit c%64 of
word c//64; spare bits are 0 in x and w so they never count), and runs the shared register-tiled micro-kernel
of im2col.py with combine = popcount(x XOR w) (a vector `llvm.ctpop`). `*_reference` are small plain-numpy
versions for the tests.
"""
from __future__ import annotations

import math
import sys
from dataclasses import dataclass, replace

import numpy as np
from ..jit import njit, prange

from . import im2col
from .byte_transpose import transpose_bytes
from .im2col import ConvGeometry, conv_geometry
from .threads import launcher, split

PAD_MODES = ("+1", "-1", "zero")
WORD_BITS = 64
BIAS_BOUND = 1 << 40   # |bias| beyond any sum's reach (|sums| < 2^32): clipping it there keeps every sign
XORPOP_STEPS = 31   # words per micro-kernel call on AVX2: its byte counters hold at most 31 · 8 = 248


def popcount_words_per_output(ci_per_group: int, kh: int, kw: int, word_bits: int = WORD_BITS) -> int:
    """XNOR-popcount word operations per output element: the group's channels packed per kernel position."""
    return -(-ci_per_group // word_bits) * kh * kw


def pack_bits(bits, axis: int) -> np.ndarray:
    """0/1 array -> uint64 words along `axis` (length ceil(n/64)), LSB first: element i is bit i%64 of word i//64."""
    bits = _as_int(np.ascontiguousarray(bits))
    axis = axis % bits.ndim
    shape = bits.shape
    outer, n, inner = int(np.prod(shape[:axis])), shape[axis], int(np.prod(shape[axis + 1:]))
    words = np.zeros((outer, -(-n // WORD_BITS), inner), np.uint64)
    if _pack_words(bits.reshape(outer, n, inner), words) & ~1:
        raise ValueError("pack_bits: bits must hold only 0 and 1")
    return words.reshape(shape[:axis] + (words.shape[1],) + shape[axis + 1:])


@njit(cache=True)
def _pack_words(bits, words):
    """words[a, c // 64, b] |= bits[a, c, b] << (c % 64); returns the OR of all values (0 or 1 for valid bits)."""
    outer, n, inner = bits.shape
    seen = np.int64(0)  # int64 with or without the JIT (in Python, 0 | uint8 is uint8)
    for a in range(outer):
        for c in range(n):
            shift = np.uint64(c % WORD_BITS)
            dst = words[a, c // WORD_BITS]
            src = bits[a, c]
            for b in range(inner):  # contiguous: vectorises
                seen |= src[b]
                dst[b] |= np.uint64(src[b] & 1) << shift
    return seen


# ----------------------------------------------------------------------------------------------------------
# Public API
# ----------------------------------------------------------------------------------------------------------
def xnor_conv2d(x_bits, w_bits, stride, padding, groups, pad_mode) -> np.ndarray:
    """int32 [N, Co, Ho, Wo]: Σ of ±1 products per output (see the module docstring)."""
    x_bits, w_bits, g = _check(x_bits, w_bits, stride, padding, groups, pad_mode)
    if g.n == 0:
        return np.zeros((0, g.co, g.ho, g.wo), np.int32)
    return XnorConv(w_bits, g, pad_mode).on_canvas(_bit_canvas(x_bits, g, pad_mode))


def xnor_conv2d_packed(x_packed, channels: int, w_bits, stride, padding, groups, pad_mode,
                       signs_of: tuple = ()) -> np.ndarray:
    """xnor_conv2d of packed input bits (`pack_channels`: uint8 [N, H, W, ceil(Ci/8)], channel c at bit c%8 of
    byte c//8 of its pixel). Groups of a whole number of bytes (Ci/groups a multiple of 8, or one group).
    With `signs_of` = (bias,): the packed sign bits of sums + bias instead (xnor_conv2d_packed_signs)."""
    x_packed = np.asarray(x_packed)
    return xnor_conv_packed_plan(x_packed.shape, channels, w_bits, stride, padding, groups, pad_mode,
                                 signs_of).packed(x_packed)


def xnor_conv_packed_plan(x_shape, channels: int, w_bits, stride, padding, groups, pad_mode,
                          signs_of: tuple = ()) -> "XnorConv":
    """xnor_conv2d_packed prepared for inputs of x_shape [N, H, W, ceil(Ci/8)] (any N): checked once; keep it
    and call `.packed(x_packed)` for each batch."""
    w_bits = _as_int(np.asarray(w_bits))
    n, h, w, nb = x_shape
    g = conv_geometry((n, channels, h, w), w_bits.shape, stride, padding, groups)
    if pad_mode not in PAD_MODES or nb != -(-channels // 8) or (g.groups > 1 and g.cig % 8):
        raise ValueError(f"xnor_conv2d_packed: {nb} bytes a pixel for {channels} channels in {g.groups} groups, "
                         f"pad_mode {pad_mode!r}")
    return XnorConv(w_bits, g, pad_mode, signs_of)


class XnorConv:
    """An XNOR conv prepared for one layer and input geometry (any batch size): the packed filters, the tile
    plan and, for packed sign outputs (`signs_of` = (bias,)), the popcount limits, built once (remembered with
    the weights: im2col.memo_pack), so that a call is a canvas and one kernel launch. A caller that runs a
    layer again and again keeps the object (the engine does)."""

    def __init__(self, w_bits, g: ConvGeometry, pad_mode: str, signs_of: tuple = ()):
        self.g, self.pad_mode, self.signs_of = replace(g, n=0), pad_mode, signs_of
        self.nw = -(-g.cig // WORD_BITS)
        self.nvec = nvec = im2col.choose_nvec(g.cog, np.uint64, g.macs)
        key = ("xnor", self.g, pad_mode, nvec, bool(signs_of), _bias_key(signs_of[0]) if signs_of else None)
        self.wpk, self.plan0, self.above = im2col.memo_pack(w_bits, key, lambda: self._prepare(w_bits))
        self._plans = {}
        self.canvas_tail = im2col.canvas_shape(g, self.nw)[1:]   # a canvas is [N] + this
        self.bytes_per_pixel = -(-g.co // 8)
        # the canvas's padding pixel: "-1" is every real channel bit set, else nothing; spare bytes 0
        pad = pack_bits(np.ones(g.cig, np.uint8), axis=0) if pad_mode == "-1" else np.zeros(self.nw, np.uint64)
        self.pad_pixel = np.ascontiguousarray(np.broadcast_to(pad, (g.groups, self.nw)))

    def _prepare(self, w_bits):
        g = self.g
        ww, wpk = _pack_filters(w_bits, g, self.nvec)
        shape = im2col.canvas_shape(g, self.nw)
        if self.pad_mode == "zero" and g.has_padding:
            table, row_class, col_class = _zero_padding_offsets(ww, g)
            plan = im2col.tile_plan(g, shape, np.uint64, table, row_class, col_class)
        else:
            plan = im2col.tile_plan(g, shape, np.uint64, np.full(g.co, g.cig * g.kh * g.kw, np.int64))
        width = self.nvec * im2col.LANES[np.dtype(np.uint64)]
        fused = (self.signs_of and plan.offs.shape[0] <= self._steps(plan) and (g.groups == 1 or g.cog % 8 == 0)
                 and (width % 8 == 0 or g.cog <= width))   # the kernel's bits fill whole bytes of a pixel
        return wpk, plan, _popcounts_above(plan.table, self.signs_of[0], width) if fused else None

    @staticmethod
    def _steps(plan) -> int:   # words per micro-kernel call
        return XORPOP_STEPS if im2col.XORPOP_BYTES else plan.offs.shape[0]

    def _plan(self, n: int):
        plan = self._plans.get(n)
        if plan is None:
            p0 = self.plan0
            plan = self._plans[n] = replace(p0, geom=(n,) + p0.geom[1:], out_shape=(n,) + p0.out_shape[1:])
        return plan

    def packed(self, x_packed) -> np.ndarray:
        """On packed input bits uint8 [N, H, W, ceil(Ci/8)] (checked by the caller)."""
        g, n = self.g, x_packed.shape[0]
        if n == 0:
            return np.zeros((0, g.ho, g.wo, self.bytes_per_pixel), np.uint8) if self.signs_of else \
                np.zeros((0, g.co, g.ho, g.wo), np.int32)
        canvas = np.empty((n,) + self.canvas_tail, np.uint64)
        x_packed = np.ascontiguousarray(x_packed)
        # whole words of whole pixels: the canvas pixel's words are x's pixel's bytes as they stand
        x_words = x_packed.shape[3] == 8 * g.groups * self.nw and g.cig % 8 == 0 and x_packed.ctypes.data % 8 == 0
        split(_fill_packed_canvas, n * canvas.shape[1], x_packed, canvas, g.top, g.left, self.pad_pixel,
              -(-g.cig // 8), (1 << (g.cig % 8 or 8)) - 1, x_words, work=canvas.size)
        return self.on_canvas(canvas)

    def on_canvas(self, canvas) -> np.ndarray:
        """On a canvas built for the layer (im2col.canvas_shape, the padding as pad_mode says)."""
        plan = self._plan(canvas.shape[0])
        if self.signs_of and self.above is not None:
            return im2col.run_sign_tiles(canvas, self.wpk, plan, self.nvec, self.above)
        sums = im2col.run_planned(canvas, self.wpk, plan, self.nvec, self._steps(plan), -2, np.int32)
        return signs_packed(sums, self.signs_of[0]) if self.signs_of else sums


@njit(inline="always")
def _fill_pixels(dst, start, j0, j1, pad):
    """Pixels j0..j1 of the canvas row at dst[start:] (words) set to the pad pixel's words."""
    pix = pad.shape[0]
    if pix == 1:
        for j in range(start + j0, start + j1):
            dst[j] = pad[0]
    else:
        for j in range(j0, j1):
            for k in range(pix):
                dst[start + j * pix + k] = pad[k]


def _fill_packed_canvas_numpy(t0, t1, x, canvas, top, left, pad_pixel, per_group, last_mask, x_words):
    """_fill_packed_canvas in numpy: rows t0..t1 of the canvas (tasks: image, canvas row)."""
    n, h, w, nb = x.shape
    hp, groups, ce = canvas.shape[1], canvas.shape[3], 8 * canvas.shape[4]
    canvas_bytes = canvas.view(np.uint8).reshape(canvas.shape[:4] + (ce,))
    for t in range(t0, t1):
        ni, row = t // hp, t % hp
        canvas[ni, row] = pad_pixel
        if top <= row < top + h:
            pixels = canvas_bytes[ni, row, left:left + w]
            pixels[..., per_group:] = 0
            pixels[..., :per_group] = x[ni, row - top].reshape(w, groups, per_group)
            pixels[..., per_group - 1] &= np.uint8(last_mask)


@njit(nogil=True, cache=True, python=_fill_packed_canvas_numpy)
def _fill_packed_canvas(t0, t1, x, canvas, top, left, pad_pixel, per_group, last_mask, x_words):
    """Canvas words [N, Hp, Wpa, G, nw] from packed bits x [N, H, W, G·per_group] bytes: each pixel's bytes of
    a group at the start of its words (little-endian), the spare bytes 0 (they never count) and the spare bits
    of the last byte cleared (`last_mask`: whatever the producer left there); `pad_pixel` [G, nw] everywhere
    else. Tasks: (image, canvas row). `x_words`: x's rows are whole words of whole pixels (x as uint64, a
    pixel's words those of the canvas pixel: one word copy per word, else a byte loop per pixel)."""
    n, h, w, nb = x.shape
    hp, wpa, groups, nw = canvas.shape[1], canvas.shape[2], canvas.shape[3], canvas.shape[4]
    pix = groups * nw   # words a canvas pixel
    row_words = wpa * pix
    flat = canvas.reshape(-1)   # (flat indices: a view per row cost more than a short row's copy)
    x_bytes = x.reshape(-1)
    x64 = x.reshape(-1).view(np.uint64) if x_words else np.zeros(1, np.uint64)
    pad = pad_pixel.reshape(-1)
    mask = np.uint64(last_mask)
    for t in range(t0, t1):
        ni, i = t // hp, t % hp - top
        d0 = t * row_words
        if not 0 <= i < h:   # a padding row
            _fill_pixels(flat, d0, 0, wpa, pad)
            continue
        _fill_pixels(flat, d0, 0, left, pad)
        _fill_pixels(flat, d0, left + w, wpa, pad)
        base = d0 + left * pix
        if x_words:
            words = (w * nb) // 8
            s0 = (ni * h + i) * words
            for k in range(words):
                flat[base + k] = x64[s0 + k]
            continue
        s0 = (ni * h + i) * w * nb
        for jj in range(w):
            for gi in range(groups):
                first = s0 + jj * nb + gi * per_group
                for k in range(nw):
                    word = np.uint64(0)
                    for b in range(8 * k, min(8 * k + 8, per_group)):
                        byte = np.uint64(x_bytes[first + b])
                        if b == per_group - 1:
                            byte &= mask
                        word |= byte << np.uint64(8 * (b - 8 * k))
                    flat[base + (jj * groups + gi) * nw + k] = word


def xnor_dense_packed(x_packed, w_bits, k: int, signs_of: tuple = ()) -> np.ndarray:
    """xnor_dense of packed inputs: x_packed uint8 [N, B] (8·B bits, the spare ones 0), w_bits 0/1 [Co, 8·B]
    in the same bit order (0 at the spare bits), k the real input count -> int32 [N, Co]; with `signs_of` =
    (bias,) their packed sign bits instead (xnor_dense_packed_signs)."""
    x_packed = np.asarray(x_packed)
    return XnorDense(x_packed.shape, w_bits, k, signs_of).packed(x_packed)


class XnorDense:
    """xnor_dense_packed prepared for inputs of x_shape [N, B] (N included: the batch is the width of the
    1-row image the conv kernel sees)."""

    def __init__(self, x_shape, w_bits, k: int, signs_of: tuple = ()):
        w_bits = np.asarray(w_bits)
        n, nb = x_shape
        if w_bits.ndim != 2 or w_bits.shape[1] != 8 * nb or not 0 < k <= 8 * nb:
            raise ValueError(f"xnor_dense_packed: x [N, {nb}] bytes, w {w_bits.shape}, k {k}")
        # the batch becomes the width of a 1-row image; the spare bits (0 in both) add 8·B - k to each sum
        self.spare, self.signs = 8 * nb - k, bool(signs_of)
        if signs_of:   # sums - spare + bias < 0
            bias = np.zeros(w_bits.shape[0], np.int64) if signs_of[0] is None else np.asarray(signs_of[0], np.int64)
            signs_of = (np.clip(bias, -BIAS_BOUND, BIAS_BOUND) - self.spare,)
        self.conv = xnor_conv_packed_plan((1, 1, n, nb), 8 * nb, w_bits[:, :, None, None], (1, 1), (0, 0, 0, 0), 1,
                                          "+1", signs_of)

    def packed(self, x_packed) -> np.ndarray:
        out = self.conv.packed(x_packed[None, None])
        if self.signs:
            return out[0, 0]
        return np.ascontiguousarray(out[0, :, 0, :].T) - np.int32(self.spare)


@dataclass(frozen=True)
class PackedBits:
    """A binary tensor as the engine keeps it between XNOR layers: `bits` uint8 [N, H, W, ceil(C/8)] (eight
    channels a byte, `pack_channels`; [N, H·W·ceil(C/8)] once flattened), `layout` (C, H, W) of an image's
    codes, `shape` the codes' shape ([N, C, H, W], or [N, C·H·W] flattened). `size` counts codes, not bytes."""
    bits: np.ndarray
    layout: tuple
    shape: tuple

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    def codes(self) -> np.ndarray:
        """The uint8 0/1 codes, shaped as the model shapes the tensor."""
        c, h, w = self.layout
        n = self.shape[0]
        return unpack_channels(self.bits.reshape(n, h, w, -1), c).reshape(self.shape)


def pack_channels(codes) -> np.ndarray:
    """Binary codes (0/1) [N, C, H, W] -> uint8 [N, H, W, ceil(C/8)] (channel c at bit c%8 of byte c//8 of its
    pixel, spare bits 0); [N, K] -> [N, ceil(K/8)]. How the engine keeps a binary tensor that XNOR layers read."""
    codes = np.asarray(codes)
    pixels_last = codes.transpose(0, 2, 3, 1) if codes.ndim == 4 else codes
    return np.packbits(pixels_last, axis=-1, bitorder="little")


def unpack_channels(packed, channels: int) -> np.ndarray:
    """pack_channels undone: uint8 0/1 codes [N, C, H, W] (or [N, K])."""
    bits = np.unpackbits(np.asarray(packed), axis=-1, count=channels, bitorder="little")
    return np.ascontiguousarray(bits.transpose(0, 3, 1, 2)) if bits.ndim == 4 else bits


def signs_packed(acc: np.ndarray, bias) -> np.ndarray:
    """pack_channels(signs(acc, bias)) in one pass: the sign bits of [N, C, ...] sums, eight channels a byte."""
    acc = np.ascontiguousarray(acc)
    n, c = acc.shape[0], acc.shape[1]
    s = math.prod(acc.shape[2:])   # positions per channel (1 for dense sums)
    nb = -(-c // 8)
    out = np.empty((n,) + acc.shape[2:] + (nb,), np.uint8)
    split(_signs_packed, n * nb, acc.reshape(n, c, s), *_sign_limits(bias, c, acc.dtype), out.reshape(n, s, nb),
          work=acc.size // 8)
    return out


_RANGES: dict = {}   # dtype -> (min, max): np.iinfo costs ~10-25 us a call with the caches cold from a kernel


def _sign_limits(bias, c: int, dtype) -> tuple:
    """(limit, always) for the sign units: acc < limit[c] in the sums' own dtype, or always 1 where -bias[c]
    exceeds that dtype (never where it is at or below its minimum: the clipped limit then says so). The bias
    is clipped to ±BIAS_BOUND first (no sum reaches that far), so that -bias cannot wrap (bias = -2^63)."""
    bounds = _RANGES.get(dtype)
    if bounds is None:
        info = np.iinfo(dtype)
        bounds = _RANGES[dtype] = (int(info.min), int(info.max))
    limit = np.zeros(c, np.int64) if bias is None else -np.clip(np.asarray(bias, np.int64), -BIAS_BOUND, BIAS_BOUND)
    return np.clip(limit, *bounds).astype(dtype), limit > bounds[1]


def _signs_packed_numpy(t0, t1, acc, limit, always, out):
    """_signs_packed in numpy: whole images at once (a split's single chunk), else task by task."""
    c, nb = acc.shape[1], out.shape[2]
    spare = np.zeros(nb * 8 - c, bool)
    for ni in range(t0 // nb, -(-t1 // nb)):
        bits = np.concatenate([(acc[ni] < limit[:, None]) | always[:, None], np.broadcast_to(
            spare[:, None], (spare.size, acc.shape[2]))])   # [8·nb, S]
        packed = np.packbits(bits.reshape(nb, 8, -1), axis=1, bitorder="little")[:, 0]   # [nb, S]
        b0, b1 = max(t0 - ni * nb, 0), min(t1 - ni * nb, nb)
        out[ni, :, b0:b1] = packed[b0:b1].T


@njit(nogil=True, cache=True, python=_signs_packed_numpy)
def _signs_packed(t0, t1, acc, limit, always, out):
    """Tasks (image, byte): out[n, p, b] bit j = acc[n, 8b + j, p] < limit[8b + j] (or always), over the pixels."""
    c, s, nb = acc.shape[1], acc.shape[2], out.shape[2]
    byte = np.empty(s, np.int32)   # int32 lanes: a compare, a select and an OR per code (3x faster than uint8)
    zero = np.int32(0)
    for t in range(t0, t1):
        ni, b = t // nb, t % nb
        byte[:] = 0
        for j in range(min(8, c - 8 * b)):
            ch = 8 * b + j
            row, lim, bit = acc[ni, ch], limit[ch], np.int32(1 << j)
            if always[ch]:
                for p in range(s):
                    byte[p] = np.int32(byte[p] | bit)
            else:
                for p in range(s):   # unit stride: it vectorises
                    byte[p] = np.int32(byte[p] | (bit if row[p] < lim else zero))
        dst = out[ni]
        for p in range(s):
            dst[p, b] = np.uint8(byte[p])


def _bias_key(bias):
    return None if bias is None else np.asarray(bias, np.int64).tobytes()


def _popcounts_above(table, bias, width: int) -> np.ndarray:
    """`above` [row class, column class, Co + width] int64 for run_sign_tiles: with sums = table - 2·popcount
    (table: the plan's constant per class and channel), sums + bias < 0 is 2·popcount > table + bias, i.e.
    popcount > floor((table + bias) / 2). The spare values past Co (read by a last partial block, masked
    there) are 0."""
    co = table.shape[2]
    bias = np.zeros(co, np.int64) if bias is None else np.clip(np.asarray(bias, np.int64), -BIAS_BOUND, BIAS_BOUND)
    above = np.zeros(table.shape[:2] + (co + width,), np.int64)
    above[:, :, :co] = (table + bias) >> 1   # an arithmetic shift: the floor
    return above


def xnor_conv2d_packed_signs(x_packed, channels: int, w_bits, stride, padding, groups, pad_mode, bias) -> np.ndarray:
    """signs_packed(xnor_conv2d_packed(...), bias), with no sums tensor in between: an XNOR layer between
    XNOR layers, packed bits in and out (uint8 [N, Ho, Wo, ceil(Co/8)])."""
    return xnor_conv2d_packed(x_packed, channels, w_bits, stride, padding, groups, pad_mode, signs_of=(bias,))


def xnor_dense_packed_signs(x_packed, w_bits, k: int, bias) -> np.ndarray:
    """signs_packed(xnor_dense_packed(x_packed, w_bits, k), bias): uint8 [N, ceil(Co/8)]."""
    return xnor_dense_packed(x_packed, w_bits, k, signs_of=(bias,))


def xnor_dense(x_bits, w_bits) -> np.ndarray:
    """x_bits [N, K], w_bits [Co, K] -> int32 [N, Co]: K − 2·popcount(x XOR w)."""
    x_bits, w_bits = np.asarray(x_bits), np.asarray(w_bits)
    if x_bits.ndim != 2 or w_bits.ndim != 2 or x_bits.shape[1] != w_bits.shape[1]:
        raise ValueError(f"xnor_dense: x must be [N, K] and w [Co, K], got {x_bits.shape}, {w_bits.shape}")
    # the batch becomes the width of a 1-row image: x [N, K] -> [1, K, 1, N]
    out = xnor_conv2d(x_bits.T[None, :, None, :], w_bits[:, :, None, None], (1, 1), (0, 0, 0, 0), 1, "+1")
    return np.ascontiguousarray(out[0, :, 0, :].T)


def signs(acc: np.ndarray, bias) -> np.ndarray:
    """A binary output's sign bits from the XNOR sums: 1 where acc + bias[c] < 0 (channel axis 1), uint8; what
    epilogue.run_signs computes, as acc < -bias[c] in int32 lanes (8 per AVX2 vector) where -bias fits int32."""
    acc = np.ascontiguousarray(acc)
    n, c = acc.shape[0], acc.shape[1]
    out = np.empty(acc.shape, np.uint8)
    split(_signs_below, n * c, acc.reshape(n, c, -1), *_sign_limits(bias, c, acc.dtype), out.reshape(n, c, -1),
          work=acc.size // 8)   # ~0.14 ns an element
    return out


def _signs_below_numpy(t0, t1, acc, limit, always, out):
    c = acc.shape[1]
    for t in range(t0, t1):
        out[t // c, t % c] = True if always[t % c] else acc[t // c, t % c] < limit[t % c]


@njit(nogil=True, cache=True, python=_signs_below_numpy)
def _signs_below(t0, t1, acc, limit, always, out):
    c, s = acc.shape[1], acc.shape[2]
    for t in range(t0, t1):
        row, dst, lim = acc[t // c, t % c], out[t // c, t % c], limit[t % c]
        if always[t % c]:
            dst[:] = 1
        else:
            for i in range(s):
                dst[i] = row[i] < lim


# ----------------------------------------------------------------------------------------------------------
# Packing and checks
# ----------------------------------------------------------------------------------------------------------
def _pack_filters(w_bits, g: ConvGeometry, nvec: int):
    """(filter words [Co, KH, KW, nw], the micro-kernel's weight layout)."""
    ww = _filter_words(w_bits, g)
    return ww, im2col.pack_weights(ww.reshape(g.groups, g.cog, g.kh, g.kw, -1), ww.shape[-1], np.uint64, nvec)


def _filter_words(w_bits, g: ConvGeometry) -> np.ndarray:
    """w_bits [Co, Cig, KH, KW] -> words [Co, KH, KW, nw]: each tap's input channels packed LSB first."""
    words = np.zeros((g.co, g.kh * g.kw, -(-g.cig // WORD_BITS)), np.uint64)
    w3 = np.ascontiguousarray(w_bits).reshape(g.co, g.cig, g.kh * g.kw)
    if _pack_filter(w3, words) & ~1:
        raise ValueError("xnor_conv2d: w_bits must hold only 0 and 1")
    return words.reshape(g.co, g.kh, g.kw, -1)


@njit(cache=True)
def _pack_filter(w, words):
    """words[o, k, c // 64] = OR_c w[o, c, k] << (c % 64); returns the OR of all w (0 or 1 for valid bits)."""
    co_n, cig, taps = w.shape
    seen = np.int64(0)  # int64 with or without the JIT
    for o in range(co_n):
        for k in range(taps):
            for wd in range(words.shape[2]):
                word = np.uint64(0)  # built in a register: no store-to-load chain through memory
                for c in range(wd * WORD_BITS, min(cig, (wd + 1) * WORD_BITS)):
                    seen |= w[o, c, k]
                    word |= np.uint64(w[o, c, k] & 1) << np.uint64(c % WORD_BITS)
                words[o, k, wd] = word
    return seen


def _bit_canvas(x_bits, g: ConvGeometry, pad_mode: str) -> np.ndarray:
    """The packed input canvas [N, Hp, Wpa, G, nw]: "-1" padding is all real channel bits set, else 0."""
    nw = -(-g.cig // WORD_BITS)
    canvas = np.empty(im2col.canvas_shape(g, nw), np.uint64)
    canvas[...] = pack_bits(np.ones(g.cig, np.uint8), axis=0) if pad_mode == "-1" else 0
    pack = _pack_canvas_bytes if sys.byteorder == "little" else _pack_canvas
    if sum(split(pack, g.n * g.groups * nw, np.ascontiguousarray(x_bits), canvas, g.top, g.left, g.groups,
                 work=x_bits.size // 24)):   # ~0.04 ns a bit: a hand-off (~20 us) pays from ~1.5 M bits
        raise ValueError("xnor_conv2d: x_bits must hold only 0 and 1")
    return canvas


@njit(nogil=True, cache=True)
def _pack_canvas(t0, t1, x, canvas, top, left, groups):
    """canvas[n, top + i, left + j, g, c // 64] = OR_c x[n, g·cig + c, i, j] << (c % 64), one task per (image,
    group, word): the words of the whole plane built with long unit-stride loops (they vectorise), then copied
    into the canvas rows. Returns the number of tasks that met values other than 0 and 1."""
    n, ci, h, w = x.shape
    cig = ci // groups
    nw = canvas.shape[4]
    flat = x.reshape(n, ci, h * w)
    word = np.empty(h * w, np.uint64)
    bad = 0
    for t in range(t0, t1):
        ni, gi, k = t // (groups * nw), (t // nw) % groups, t % nw
        seen = np.int64(0)   # OR of the values: 0 or 1 when they are all bits (int64 with or without the JIT)
        word[:] = 0
        for c in range(k * WORD_BITS, min(cig, (k + 1) * WORD_BITS)):
            shift = np.uint64(c % WORD_BITS)
            src = flat[ni, gi * cig + c]
            for p in range(h * w):
                seen |= np.int64(src[p])
                word[p] |= np.uint64(src[p] & 1) << shift
        for i in range(h):
            for j in range(w):
                canvas[ni, top + i, left + j, gi, k] = word[i * w + j]
        bad += (seen & ~np.int64(1)) != 0
    return bad


def _pack_canvas_numpy(t0, t1, x, canvas, top, left, groups):
    """_pack_canvas in numpy (np.packbits, little-endian bit and byte order), for its tasks t0..t1."""
    n, ci, h, w = x.shape
    cig, nw = ci // groups, canvas.shape[4]
    if t1 <= t0:
        return 0
    n0, n1 = t0 // (groups * nw), -(-t1 // (groups * nw))
    bits = np.zeros((n1 - n0, groups, nw * WORD_BITS, h, w), np.uint8)
    bits[:, :, :cig] = x[n0:n1].reshape(n1 - n0, groups, cig, h, w) & 1
    packed = np.packbits(bits.reshape(n1 - n0, groups, nw, WORD_BITS, h, w), axis=3, bitorder="little")
    words = np.ascontiguousarray(packed.transpose(0, 4, 5, 1, 2, 3)).view("<u8")[..., 0].astype(np.uint64)
    odd = np.zeros((n1 - n0, groups, nw * WORD_BITS), bool)   # per channel: some value other than 0 and 1
    odd[:, :, :cig] = ((x[n0:n1] != 0) & (x[n0:n1] != 1)).reshape(n1 - n0, groups, cig, -1).any(axis=3)
    odd = odd.reshape(-1, WORD_BITS).any(axis=1)   # per task (image, group, word)
    if t0 == n0 * groups * nw and t1 == n1 * groups * nw:   # whole images: one copy
        canvas[n0:n1, top:top + h, left:left + w] = words
    else:
        for t in range(t0, t1):
            ni, gi, k = t // (groups * nw), (t // nw) % groups, t % nw
            canvas[ni, top:top + h, left:left + w, gi, k] = words[ni - n0, :, :, gi, k]
    first = n0 * groups * nw
    return int(odd[t0 - first:t1 - first].sum())


@njit(nogil=True, cache=True, python=_pack_canvas_numpy)
def _pack_canvas_bytes(t0, t1, x, canvas, top, left, groups):
    """What _pack_canvas computes (little-endian words): per (image, group, word), eight byte planes, byte b of
    pixel p holding channels 8b..8b+7 of the word as its bits (eight shifted ORs of whole channel rows, in byte
    lanes), then each image row's [8, W] plane bytes go into the canvas words transposed (byte b of a word is
    its bits 8b..8b+7): 8x8 byte transposes, no per-bit loop over the words."""
    n, ci, h, w = x.shape
    cig = ci // groups
    hp, wp, nw = canvas.shape[1], canvas.shape[2], canvas.shape[4]
    flat = x.reshape(n, ci, h * w)
    planes = np.empty((8, h * w), np.uint8)
    plane_bytes = planes.reshape(-1)
    words = (h * w) % 8 == 0   # rows of whole uint64 words: the ORs run on eight codes at a time
    x_words = x.reshape(-1).view(np.uint64).reshape(n, ci, (h * w) // 8) if words else \
        np.zeros((1, 1, 1), np.uint64)
    plane_words = plane_bytes.view(np.uint64).reshape(8, (h * w) // 8) if words else np.zeros((8, 1), np.uint64)
    ONES = np.uint64(0x0101010101010101)
    canvas_bytes = canvas.reshape(-1).view(np.uint8)
    bad = 0
    for t in range(t0, t1):
        ni, gi, k = t // (groups * nw), (t // nw) % groups, t % nw
        seen = np.int64(0)   # OR of the values: 0 or 1 when they are all bits
        for b in range(8):
            plane = planes[b]
            plane[:] = 0
            for c in range(8):
                ch = k * WORD_BITS + b * 8 + c
                if ch >= cig:
                    break
                if words:   # eight pixels per uint64 lane (no byte carries: each byte is 0 or 1, shifted < 8)
                    src64 = x_words[ni, gi * cig + ch]
                    plane64 = plane_words[b]
                    for p in range(src64.shape[0]):
                        v = src64[p]
                        seen |= np.int64(v)
                        plane64[p] |= (v & ONES) << np.uint64(c)
                else:
                    src = flat[ni, gi * cig + ch]
                    for p in range(h * w):
                        seen |= np.int64(src[p])
                        plane[p] |= np.uint8((src[p] & 1) << c)
        seen = (seen | (seen >> 8) | (seen >> 16) | (seen >> 24) | (seen >> 32) | (seen >> 40) | (seen >> 48)
                | (seen >> 56)) & 0xFF   # the bytes' OR (the words hold eight codes each)
        for i in range(h):
            transpose_bytes(plane_bytes, i * w, h * w, canvas_bytes,
                            ((((ni * hp + top + i) * wp + left) * groups + gi) * nw + k) * 8, groups * nw * 8, 8, w, 0)
        bad += (seen & ~np.int64(1)) != 0
    return bad


def _check(x_bits, w_bits, stride, padding, groups, pad_mode):
    """Arrays (bool viewed as uint8) and geometry; the 0/1 values are checked while packing."""
    x_bits, w_bits = _as_int(np.asarray(x_bits)), _as_int(np.asarray(w_bits))
    g = conv_geometry(x_bits.shape, w_bits.shape, stride, padding, groups)
    if pad_mode not in PAD_MODES:
        raise ValueError(f"xnor_conv2d: pad_mode must be one of {PAD_MODES}, got {pad_mode!r}")
    return x_bits, w_bits, g


def _as_int(a: np.ndarray) -> np.ndarray:
    if a.dtype == np.bool_:
        return a.view(np.uint8)
    if a.dtype.kind not in "iu":
        raise ValueError(f"bits must be an integer or bool array, got {a.dtype}")
    return a


def _zero_padding_offsets(w_words, g: ConvGeometry):
    """(table, row classes, column classes) with out = table[co, row class, column class] − 2·popcount.

    The canvas pads with +1, so padded taps add Σ_ci w; "zero" wants them to add nothing. Output row oh
    sees the real kernel rows [a, b) (the taps that land inside the image); rows with the same [a, b) form
    a class, likewise columns. Per class pair, the table holds K − Σ_padded S with S[co, kh, kw] = Σ_ci w
    (through a 2-D prefix sum of S), so that table − 2·popcount over all taps = Σ_real x·w."""
    ones = np.bitwise_count(w_words).sum(axis=3, dtype=np.int64)  # [Co, KH, KW]
    s = g.cig - 2 * ones
    prefix = np.zeros((g.co, g.kh + 1, g.kw + 1), np.int64)
    prefix[:, 1:, 1:] = s.cumsum(axis=1).cumsum(axis=2)
    (a, b), row_class = _tap_classes(g.ho, g.sh, g.kh, g.top, g.h)
    (c, d), col_class = _tap_classes(g.wo, g.sw, g.kw, g.left, g.w)
    a, b, c, d = a[:, None], b[:, None], c[None, :], d[None, :]
    real = prefix[:, b, d] - prefix[:, a, d] - prefix[:, b, c] + prefix[:, a, c]  # [Co, row classes, col classes]
    padded = prefix[:, -1, -1][:, None, None] - real
    return g.cig * g.kh * g.kw - padded, row_class, col_class


def _tap_classes(n_out: int, stride: int, k: int, pad_before: int, size: int):
    """((a, b) per class, class per output position): taps [a, b) of a position land inside the image."""
    start = np.arange(n_out, dtype=np.int64) * stride - pad_before  # input index of tap 0
    first, end = np.clip(-start, 0, k), np.clip(size - start, 0, k)
    keys, cls = np.unique(first * (k + 1) + end, return_inverse=True)
    return (keys // (k + 1), keys % (k + 1)), cls.astype(np.int64)


# ----------------------------------------------------------------------------------------------------------
# Reference kernels: the XNOR formula on unpacked bits, one output at a time
# ----------------------------------------------------------------------------------------------------------
def xnor_conv2d_reference(x_bits, w_bits, stride, padding, groups, pad_mode) -> np.ndarray:
    x_bits, w_bits, g = _check(x_bits, w_bits, stride, padding, groups, pad_mode)
    if not (np.isin(x_bits, (0, 1)).all() and np.isin(w_bits, (0, 1)).all()):
        raise ValueError("xnor_conv2d_reference: bits must hold only 0 and 1")
    hp, wp = g.h + g.top + g.bottom, g.w + g.left + g.right
    xp = np.full((g.n, g.ci, hp, wp), 1 if pad_mode == "-1" else 0, np.int64)
    xp[:, :, g.top:g.top + g.h, g.left:g.left + g.w] = x_bits
    counts = np.ones((hp, wp), np.int64)  # 1 where a position takes part
    if pad_mode == "zero":
        counts[:] = 0
        counts[g.top:g.top + g.h, g.left:g.left + g.w] = 1
    out = np.zeros((g.n, g.co, g.ho, g.wo), np.int32)
    for n in range(g.n):
        for co in range(g.co):
            c0 = (co // g.cog) * g.cig
            for oh in range(g.ho):
                for ow in range(g.wo):
                    rs, cs = slice(oh * g.sh, oh * g.sh + g.kh), slice(ow * g.sw, ow * g.sw + g.kw)
                    window = xp[n, c0:c0 + g.cig, rs, cs]
                    take = np.broadcast_to(counts[rs, cs], window.shape)
                    k = int(take.sum())
                    pc = int(((window ^ w_bits[co]) * take).sum())
                    out[n, co, oh, ow] = k - 2 * pc
    return out


def xnor_dense_reference(x_bits, w_bits) -> np.ndarray:
    x, w = np.asarray(x_bits, np.int64), np.asarray(w_bits, np.int64)
    pc = (x[:, None, :] ^ w[None, :, :]).sum(axis=2)
    return (x.shape[1] - 2 * pc).astype(np.int32)


# ---------------------------------------------------------------------------------------------------------
# Parallel launchers (threads.launcher): each kernel's chunks on numba's threads; here, beside the kernels,
# because numba's cache keys a function on its own file
# ---------------------------------------------------------------------------------------------------------
@launcher(_signs_packed)
@njit(parallel=True, nogil=True, cache=True)
def _signs_packed_launch(n_tasks, chunks, acc, limit, always, out):
    for c in prange(chunks):
        _signs_packed(n_tasks * c // chunks, n_tasks * (c + 1) // chunks, acc, limit, always, out)


@launcher(_signs_below)
@njit(parallel=True, nogil=True, cache=True)
def _signs_below_launch(n_tasks, chunks, acc, limit, always, out):
    for c in prange(chunks):
        _signs_below(n_tasks * c // chunks, n_tasks * (c + 1) // chunks, acc, limit, always, out)


@launcher(_pack_canvas)
@njit(parallel=True, nogil=True, cache=True)
def _pack_canvas_launch(n_tasks, chunks, x, canvas, top, left, groups):
    counts = np.zeros(chunks, np.int64)
    for c in prange(chunks):
        counts[c] = _pack_canvas(n_tasks * c // chunks, n_tasks * (c + 1) // chunks, x, canvas, top, left, groups)
    return counts


@launcher(_pack_canvas_bytes)
@njit(parallel=True, nogil=True, cache=True)
def _pack_canvas_bytes_launch(n_tasks, chunks, x, canvas, top, left, groups):
    counts = np.zeros(chunks, np.int64)
    for c in prange(chunks):
        counts[c] = _pack_canvas_bytes(n_tasks * c // chunks, n_tasks * (c + 1) // chunks, x, canvas, top, left, groups)
    return counts


@launcher(_fill_packed_canvas)
@njit(parallel=True, nogil=True, cache=True)
def _fill_packed_canvas_launch(n_tasks, chunks, x, canvas, top, left, pad_pixel, per_group, last_mask, x_words):
    for c in prange(chunks):
        _fill_packed_canvas(n_tasks * c // chunks, n_tasks * (c + 1) // chunks, x, canvas, top, left, pad_pixel,
                            per_group, last_mask, x_words)
