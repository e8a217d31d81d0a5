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
            result minus the padded positions' Σ w (the per-output correction term of Larq).
- Geometry as in mac.py: Ho = (H + top + bottom - KH)//sh + 1; groups divide Ci and Co.

The fast kernel packs each group's channels into uint64 words, LSB first (channel c of a group is bit c%64 of
word c//64; spare bits are 0 in x and w so they never count), and runs the shared register-tiled micro-kernel
of im2col.py with combine = popcount(x XOR w) (a vector `llvm.ctpop`). `*_reference` are small plain-numpy
versions for the tests.
"""
from __future__ import annotations

import numpy as np

from . import im2col
from .im2col import ConvGeometry, conv_geometry

PAD_MODES = ("+1", "-1", "zero")
WORD_BITS = 64


def popcount_words_per_output(ci_per_group: int, kh: int, kw: int, word_bits: int = WORD_BITS) -> int:
    """XNOR-popcount word operations per output element: the group's channels packed per kernel position."""
    return -(-ci_per_group // word_bits) * kh * kw


def pack_bits(bits, axis: int) -> np.ndarray:
    """0/1 array -> uint64 words along `axis` (length ceil(n/64)), LSB first: element i is bit i%64 of word i//64."""
    bits = np.moveaxis(np.asarray(bits, np.uint8), axis, -1)
    n = bits.shape[-1]
    packed = np.zeros(bits.shape[:-1] + (-(-n // WORD_BITS) * 8,), np.uint8)
    packed[..., :-(-n // 8)] = np.packbits(bits, axis=-1, bitorder="little")
    words = packed.view("<u8").astype(np.uint64, copy=False)
    return np.moveaxis(words, -1, axis)


# ----------------------------------------------------------------------------------------------------------
# Public API
# ----------------------------------------------------------------------------------------------------------
def xnor_conv2d(x_bits, w_bits, stride, padding, groups, pad_mode) -> np.ndarray:
    """int32 [N, Co, Ho, Wo]: Σ of ±1 products per output (see the module docstring)."""
    x_bits, w_bits, g = _check(x_bits, w_bits, stride, padding, groups, pad_mode)
    if g.n == 0:
        return np.zeros((0, g.co, g.ho, g.wo), np.int32)
    nw = -(-g.cig // WORD_BITS)
    xw = pack_bits(x_bits.reshape(g.n, g.groups, g.cig, g.h, g.w), axis=2)  # [N, G, nw, H, W]
    pad_pixel = _pad_words(g.cig, nw) if pad_mode == "-1" else np.zeros(nw, np.uint64)
    canvas = im2col.make_canvas(xw.transpose(0, 3, 4, 1, 2), g, nw, np.uint64, pad_pixel)
    ww = pack_bits(w_bits.reshape(g.groups, g.cog, g.cig, g.kh, g.kw), axis=2)  # [G, Cog, nw, KH, KW]
    nvec = im2col.choose_nvec(g.cog, np.uint64)
    wpk = im2col.pack_weights(ww.transpose(0, 1, 3, 4, 2), nw, np.uint64, nvec)
    offs = im2col.offset_table(g, canvas)
    k_total = np.full(g.co, g.cig * g.kh * g.kw, np.int64)
    out = im2col.run_tiles(canvas, wpk, offs, g, nvec, offs.shape[0], k_total, -2)
    if pad_mode == "zero" and g.has_padding:
        out -= _padding_correction(w_bits, g)
    return out.astype(np.int32)


def xnor_dense(x_bits, w_bits) -> np.ndarray:
    """x_bits [N, K], w_bits [Co, K] -> int32 [N, Co]: K − 2·popcount(x XOR w)."""
    x_bits, w_bits = np.asarray(x_bits), np.asarray(w_bits)
    if x_bits.ndim != 2 or w_bits.ndim != 2 or x_bits.shape[1] != w_bits.shape[1]:
        raise ValueError(f"xnor_dense: x must be [N, K] and w [Co, K], got {x_bits.shape}, {w_bits.shape}")
    # the batch becomes the width of a 1-row image: x [N, K] -> [1, K, 1, N]
    out = xnor_conv2d(x_bits.T[None, :, None, :], w_bits[:, :, None, None], (1, 1), (0, 0, 0, 0), 1, "+1")
    return np.ascontiguousarray(out[0, :, 0, :].T)


def _check(x_bits, w_bits, stride, padding, groups, pad_mode):
    x_bits, w_bits = np.asarray(x_bits), np.asarray(w_bits)
    g = conv_geometry(x_bits.shape, w_bits.shape, stride, padding, groups)
    if pad_mode not in PAD_MODES:
        raise ValueError(f"xnor_conv2d: pad_mode must be one of {PAD_MODES}, got {pad_mode!r}")
    for name, a in (("x_bits", x_bits), ("w_bits", w_bits)):
        if a.dtype.kind not in "iub" or (a.size and (a.min() < 0 or a.max() > 1)):
            raise ValueError(f"xnor_conv2d: {name} must hold only 0 and 1")
    return x_bits, w_bits, g


def _pad_words(cig: int, nw: int) -> np.ndarray:
    """Words of a pixel that is -1 on every real channel (spare bits stay 0)."""
    return pack_bits(np.ones(cig, np.uint8), axis=0)


def _padding_correction(w_bits, g: ConvGeometry) -> np.ndarray:
    """Σ of w (±1) over each output's padded window positions, int64 [1, Co, Ho, Wo].

    A window position (kh, kw) is real iff its row and its column are both inside the image, so
    Σ_padded S = Σ_all S − rows_in · S · cols_inᵀ with S[co, kh, kw] = Σ_ci w."""
    s = (1 - 2 * w_bits.astype(np.int64)).sum(axis=1)  # [Co, KH, KW]
    rows = np.arange(g.ho)[:, None] * g.sh + np.arange(g.kh)[None, :] - g.top  # [Ho, KH] input row
    cols = np.arange(g.wo)[:, None] * g.sw + np.arange(g.kw)[None, :] - g.left  # [Wo, KW] input column
    rows_in = ((rows >= 0) & (rows < g.h)).astype(np.int64)
    cols_in = ((cols >= 0) & (cols < g.w)).astype(np.int64)
    real = (rows_in @ s) @ cols_in.T  # [Co, Ho, Wo]
    return (s.sum(axis=(1, 2))[:, None, None] - real)[None]


# ----------------------------------------------------------------------------------------------------------
# Reference kernels: the XNOR formula on unpacked bits, one output at a time
# ----------------------------------------------------------------------------------------------------------
def xnor_conv2d_reference(x_bits, w_bits, stride, padding, groups, pad_mode) -> np.ndarray:
    x_bits, w_bits, g = _check(x_bits, w_bits, stride, padding, groups, pad_mode)
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
