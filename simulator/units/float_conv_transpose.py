"""ONNX Runtime's float32 ConvTranspose between DequantizeLinear and QuantizeLinear, bit for bit.

ORT fuses no QDQ ConvTranspose group on its CPU EP (there is no QLinearConvTranspose CPU kernel): it dequantizes,
runs its float32 ConvTranspose and quantizes. This unit is what a conv2d layer with `arithmetic: "ort_float32"`
computes (the importer's dilate + flipped-kernel conv2d form of the transposed convolution). Sources (microsoft/
onnxruntime), and the float32 operations they make, per output element:

1. DequantizeLinear: float32(code - zp) * scale, one float32 rounding, for the input, the 8-bit weight (per
   output channel) and the int32 bias (float32(bias) first). The weight's DequantizeLinear is not
   constant-folded (core/optimizer/constant_folding.cc: "avoid to constant fold DequantizeLinear for QDQ
   format"), so ConvTranspose gets the weight as a runtime tensor and does not prepack it (checked: a case
   with N < K, where the prepacked CblasNoTrans path would block K differently, matches the unpacked one).
2. core/providers/cpu/nn/conv_transpose.cc, per group: math::Gemm(CblasTrans, CblasNoTrans, M = Co/g * KH * KW,
   N = H * W, K = Ci/g, alpha 1, W, X, beta 0) into a column buffer, then math::Col2imPar, then the bias.
   - MLAS sgemm.cpp MlasSgemmOperation: TransA = CblasTrans, so StrideK stays MLAS_SGEMM_STRIDEK = 128 (it only
     shrinks below K, and grows only for CblasNoTrans); K runs in blocks of 128. The AVX-512F / FMA3 kernels
     (x86_64/FgemmKernelAvx512FCommon.h, FgemmKernelCommon.h ComputeBlockLoop) start each block's accumulator
     at 0 and add the block's products in k order with vfmadd231ps (one rounding per step: an FMA); the first
     block is stored (ZeroMode: times alpha = 1, exact), later blocks are added to C with vfmadd213ps
     (acc * 1 + C: one float32 add). Threading splits M or N, never K, so the thread count changes nothing.
   - N == 1 (a 1x1 input, with ldb = ldc = 1) takes MlasSgemmKernelM1Avx instead (x86_64/SgemmKernelM1Avx.S):
     no FMA, no K blocks; per 4 rows of K: ((p0 + p1) + p2) + p3 of float32 products, added to C; then a pair
     (p0 + p1) and a single p0 for the K mod 4 rest, each added to C.
   - core/util/math_cpu.cc Col2im (NCHW): the output starts at 0 (Set) and each column-buffer row
     (c, kh, kw) is added in that order, so an output pixel sums its contributions in increasing (kh, kw)
     order, one float32 add each.
   - the bias: an Eigen rowwise float32 add after col2im.
3. QuantizeLinear (MLAS quantize.cpp MlasQuantizeLinearVector): float32 y / scale (a division), clamped, then
   cvtps2dq (round half to even), + zero point, saturated.

In the conv2d form (input dilated with zero codes, kernel flipped, padding kh - 1 - p), ConvTranspose's kernel
offset kh is the flipped offset KH - 1 - a, so the kernel offsets run from last to first. Offsets that see an
inserted zero or a padded cell contribute an exact 0, which changes no float32 sum (at most the sign of a zero,
which no quantization sees), so they are skipped.

Exact FMA without an FMA instruction (works under numba and as plain Python): the product a * b of two float32
values is exact in float64 (48 significant bits); s = p + c in float64 and its error e (Knuth's TwoSum, s + e
== p + c exactly) give the exact sum. Rounding s to float32 is the correct rounding of s + e except when s lies
exactly halfway between two float32 values (then r + 2 (s - r) is the other neighbour, a float32) and e != 0:
then the side of e decides (`fma32`). A float32 add, multiply or divide done in float64 and rounded to float32
is correctly rounded (53 >= 2 * 24 + 2).

`conv_transpose_ort` is the fast kernel (numba) on the conv2d form; `conv_transpose_reference` follows ORT's
code literally (a GEMM into a column buffer in K blocks, then col2im) on the ONNX form, for the tests.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

K_BLOCK = 128   # MLAS_SGEMM_STRIDEK (onnxruntime/core/mlas/lib/mlasi.h)


@njit(cache=True)
def fma32(a, b, c):
    """float32(a * b + c) with one rounding (vfmadd231ps); a, b, c are float32 values held as float64."""
    p = a * b                        # exact
    s = p + c
    bb = s - p
    e = (p - (s - bb)) + (c - bb)    # TwoSum: s + e == p + c exactly
    r = np.float64(np.float32(s))
    if e == 0.0 or not math.isfinite(r):
        return r
    d = s - r                        # exact; s is halfway iff r + 2d is r's float32 neighbour
    other = r + 2.0 * d
    if d == 0.0 or np.float64(np.float32(other)) != other:
        return r                     # s is no midpoint: rounding s is rounding s + e
    return other if (e > 0.0) == (d > 0.0) else r


@njit(cache=True)
def _f32(v):
    return np.float64(np.float32(v))


@njit(cache=True)
def _dot_fma(x, w, k_block):
    """One column-buffer entry of MLAS's SGEMM kernels: K blocks, sequential FMAs from 0, blocks added."""
    k = x.shape[0]
    col = 0.0
    for k0 in range(0, k, k_block):
        acc = 0.0
        for i in range(k0, min(k, k0 + k_block)):
            acc = fma32(w[i], x[i], acc)
        col = acc if k0 == 0 else _f32(col + acc)
    return col


@njit(cache=True)
def _dot_m1(x, w):
    """One output of MlasSgemmKernelM1Avx: float32 products, groups of 4 summed, then a pair, then one."""
    k = x.shape[0]
    col = 0.0
    i = 0
    while k - i >= 4:
        t = _f32(_f32(_f32(x[i] * w[i]) + _f32(x[i + 1] * w[i + 1])) + _f32(x[i + 2] * w[i + 2]))
        col = _f32(_f32(t + _f32(x[i + 3] * w[i + 3])) + col)
        i += 4
    if (k - i) & 2:
        col = _f32(_f32(_f32(x[i] * w[i]) + _f32(x[i + 1] * w[i + 1])) + col)
        i += 2
    if (k - i) & 1:
        col = _f32(_f32(x[i] * w[i]) + col)
    return col


@njit(parallel=True, cache=True)
def _kernel(x, live, w, bias, pt, pl, ho, wo, groups, m1, k_block):
    """x [N, H, W, C] and w [Co, KH, KW, Ci/g] float32 values (float64); live[n, h, w, g]: a non-zero input."""
    n_, h_, w_, _ = x.shape
    co_, kh_, kw_, cig = w.shape
    cog = co_ // groups
    y = np.zeros((n_, co_, ho, wo))
    for job in prange(n_ * co_):
        n, co = job // co_, job % co_
        g = co // cog
        c0 = g * cig
        for a in range(kh_ - 1, -1, -1):          # ConvTranspose's kh = KH - 1 - a, increasing
            for b in range(kw_ - 1, -1, -1):
                wv = w[co, a, b]
                for oh in range(ho):
                    ih = oh + a - pt
                    if ih < 0 or ih >= h_:
                        continue
                    for ow in range(wo):
                        iw = ow + b - pl
                        if iw < 0 or iw >= w_ or not live[n, ih, iw, g]:
                            continue
                        xv = x[n, ih, iw, c0:c0 + cig]
                        col = _dot_m1(xv, wv) if m1 else _dot_fma(xv, wv, k_block)
                        y[n, co, oh, ow] = _f32(y[n, co, oh, ow] + col)
        for oh in range(ho):
            for ow in range(wo):
                y[n, co, oh, ow] = _f32(y[n, co, oh, ow] + bias[co])
    return y


def dequantize(values, scale) -> np.ndarray:
    """DequantizeLinear: float32(value) * float32(scale) in float32 (scale broadcasts, e.g. per channel)."""
    return np.asarray(values).astype(np.float32) * np.asarray(scale, dtype=np.float32)


def conv_transpose_ort(x, w, bias, padding, groups) -> np.ndarray:
    """ORT's float32 ConvTranspose on the conv2d form: x float32 [N, C, H, W] (dilated), w float32 [Co, Ci/g,
    KH, KW] (flipped), bias float32 [Co] or None, padding (top, left, bottom, right) -> float32 [N, Co, Ho, Wo].
    A 1x1 input is ORT's N == 1 case (the M1 kernel)."""
    x = np.asarray(x, dtype=np.float32)
    w = np.asarray(w, dtype=np.float32)
    n, c, h, wd = x.shape
    co, cig, kh, kw = w.shape
    pt, pl, pb, pr = (int(p) for p in padding)
    ho, wo = h + pt + pb - kh + 1, wd + pl + pr - kw + 1
    xt = np.ascontiguousarray(x.transpose(0, 2, 3, 1), dtype=np.float64)
    live = np.ascontiguousarray((xt.reshape(n, h, wd, groups, cig) != 0).any(axis=4))
    wt = np.ascontiguousarray(w.transpose(0, 2, 3, 1), dtype=np.float64)
    b = np.zeros(co) if bias is None else np.asarray(bias, dtype=np.float32).astype(np.float64)
    y = _kernel(xt, live, wt, b, pt, pl, ho, wo, int(groups), h * wd == 1, K_BLOCK)
    return y.astype(np.float32)


def quantize_values(y, scale) -> np.ndarray:
    """QuantizeLinear up to the zero point: rint(float32(y / scale)), half to even, as int64 values (the
    encoder adds the zero point and saturates; the bound keeps huge values in range first)."""
    with np.errstate(over="ignore"):
        q = np.rint(np.asarray(y, dtype=np.float32) / np.float32(scale)).astype(np.float64)
    return np.clip(q, -2.0 ** 40, 2.0 ** 40).astype(np.int64)


def bias_scales(lay, co) -> np.ndarray:
    """The float32 scale of the int32 bias per output channel: the layer's `bias_scale`, else float32(s_x * s_w)."""
    given = lay.attr("bias_scale")
    if given is not None:
        return np.broadcast_to(np.asarray(given, dtype=np.float32), (co,))
    return np.float32(lay.in_encs[0].scale) * lay.weight_enc.channel_scales(co).astype(np.float32)


def layer_values(lay, x_codes, w_values, bias) -> np.ndarray:
    """A conv2d layer with arithmetic "ort_float32" on its (dilated) input codes -> output values (before the
    zero point): dequantize, ORT's float32 ConvTranspose, quantize."""
    co = w_values.shape[0]
    x = dequantize(lay.in_encs[0].decode(x_codes), lay.in_encs[0].scale)
    w = dequantize(w_values, lay.weight_enc.channel_scales(co).reshape(-1, 1, 1, 1))
    b = None if bias is None else dequantize(bias, bias_scales(lay, co))
    y = conv_transpose_ort(x, w, b, lay.attr("padding"), lay.attr("groups"))
    return quantize_values(y, lay.out_enc.scale)


# ----------------------------------------------------------------------------------------- plain reference

def conv_transpose_reference(x, w, bias, strides, pads, output_padding, groups, fma=None) -> np.ndarray:
    """ORT's ConvTranspose<float> on one image as its code runs (plain Python, small shapes): x float32
    [Ci, H, W], w float32 [Ci, Co/g, KH, KW] (ONNX layout), bias float32 [Co] or None -> float32 [Co, Ho, Wo].
    Per group, the column buffer col[(co, kh, kw), (ih, iw)] of the SGEMM (K blocks of 128, FMAs; the M1
    kernel for a 1x1 input), then Col2im adding rows in (co, kh, kw) order into a zeroed output, then the bias."""
    fma = fma or (lambda a, b, c: float(fma32(a, b, c)))
    f32 = lambda v: float(np.float32(v))   # noqa: E731
    ci, h, wd = x.shape
    _, cog, kh, kw = w.shape
    cig = ci // groups
    (sh, sw), (pt, pl, pb, pr), (oph, opw) = strides, pads, output_padding
    ho, wo = (h - 1) * sh - pt - pb + kh + oph, (wd - 1) * sw - pl - pr + kw + opw
    y = np.zeros((groups * cog, ho, wo), np.float32)
    for g in range(groups):
        col = {}
        for m in np.ndindex(cog, kh, kw):
            for pix in np.ndindex(h, wd):
                xs = [float(x[g * cig + k][pix]) for k in range(cig)]
                ws = [float(w[g * cig + k][m]) for k in range(cig)]
                if h * wd == 1:
                    col[m + pix] = float(_dot_m1(np.array(xs), np.array(ws)))
                    continue
                c = 0.0
                for k0 in range(0, cig, K_BLOCK):
                    acc = 0.0
                    for k in range(k0, min(cig, k0 + K_BLOCK)):
                        acc = fma(ws[k], xs[k], acc)
                    c = acc if k0 == 0 else f32(c + acc)
                col[m + pix] = c
        for (co, i, j) in np.ndindex(cog, kh, kw):
            for ih, iw in np.ndindex(h, wd):
                oh, ow = ih * sh - pt + i, iw * sw - pl + j
                if 0 <= oh < ho and 0 <= ow < wo:
                    y[g * cog + co, oh, ow] = f32(float(y[g * cog + co, oh, ow]) + col[(co, i, j, ih, iw)])
    if bias is not None:
        y = (y + np.asarray(bias, dtype=np.float32).reshape(-1, 1, 1)).astype(np.float32)
    return y
