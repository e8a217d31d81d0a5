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
   - QOperator form (quantize_static leaves ConvTranspose in float with float32 weight and bias initializers,
     encodings.Float32W): ORT's default session quantizes them first (`runtime_weights`: WeightBiasQuantization)
     and then runs the runtime-weight path above. Only with graph optimizations off (ORT_DISABLE_ALL) does
     ConvTranspose see the float32 initializer, which it prepacks (conv_transpose.cc ConvTranspose<float>::PrePack: the
     weight transposed to [Co/g * KH * KW, Ci/g] per group, unless M = Co/g * KH * KW or K = Ci/g is 1), and
     the GEMM runs with TransA = CblasNoTrans. MLAS then grows StrideK when N < K (while StrideN > 16 and
     StrideN / 2 >= N: StrideK doubles, StrideN halves; `k_block_size`), and N == 1 takes
     MlasSgemmKernelM1TransposeBAvx (x86_64/SgemmKernelM1TransposeBAvx.S): eight lane sums of float32 products
     (lane k mod 8, vmulps then vaddps), reduced by the row's place in the kernel's blocks of 4, 2 and 1 rows
     (`_dot_m1t`). N is the ConvTranspose input's pixel count (before the dilate that stands for its stride).
     Modelled for ORT's single-threaded run (intra_op_num_threads = 1, as every ORT comparison here): MLAS's
     threads split N into slices of their own StrideK, and M into slices that may hit its M == 1 kernel, so
     with several threads a prepacked layer with Ci/g > 128 can differ (the runtime-weight QDQ form cannot).
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
from ..jit import njit, prange

from ..encodings import Float32W
from ..kernels.threads import launcher, split

K_BLOCK = 128   # MLAS_SGEMM_STRIDEK (onnxruntime/core/mlas/lib/mlasi.h)
N_STRIDE = 128  # MLAS_SGEMM_STRIDEN
# the column-buffer kernels: MLAS's SGEMM kernels in K blocks (FMAs), MlasSgemmKernelM1Avx (runtime weight,
# N == 1), MlasSgemmKernelM1TransposeBAvx (prepacked weight, N == 1)
GEMM, M1, M1_TRANSPOSE_B = 0, 1, 2


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


@njit(cache=True)
def _dot_m1t(x, w, rows):
    """One output of MlasSgemmKernelM1TransposeBAvx: lane k % 8 sums float32 products in k order (vmulps,
    vaddps), then the lanes are reduced as the kernel's 4-, 2- or 1-row block (`rows`) does."""
    a = np.zeros(8)
    for i in range(x.shape[0]):
        a[i % 8] = _f32(a[i % 8] + _f32(x[i] * w[i]))
    if rows == 4:     # vunpck{l,h}ps / vunpck{l,h}pd transpose, three vaddps, then the two 128-bit halves
        return _f32(_f32(_f32(_f32(a[0] + a[1]) + a[2]) + a[3]) + _f32(_f32(_f32(a[4] + a[5]) + a[6]) + a[7]))
    if rows == 2:     # vunpck{l,h}ps + vaddps, halves added, vmovhlps + vaddps
        return _f32(_f32(_f32(a[0] + a[2]) + _f32(a[4] + a[6])) + _f32(_f32(a[1] + a[3]) + _f32(a[5] + a[7])))
    return _f32(_f32(_f32(a[0] + a[1]) + _f32(a[2] + a[3])) + _f32(_f32(a[4] + a[5]) + _f32(a[6] + a[7])))


@njit(cache=True)
def _m1t_rows(m, m_total):
    """The row block (4, 2 or 1 rows) MlasSgemmKernelM1TransposeBAvx reduces GEMM row m of m_total in."""
    full = m_total - m_total % 4
    if m < full:
        return 4
    if m_total % 4 >= 2 and m < full + 2:
        return 2
    return 1


@njit(nogil=True, cache=True)
def _kernel(t0, t1, x, live, w, bias, pt, pl, groups, mode, k_block, y):
    """x [N, H, W, C] and w [Co, KH, KW, Ci/g] float32 values (float64); live[n, h, w, g]: a non-zero input;
    mode GEMM, M1 or M1_TRANSPOSE_B (the column-buffer kernel)."""
    n_, h_, w_, _ = x.shape
    co_, kh_, kw_, cig = w.shape
    cog = co_ // groups
    ho, wo = y.shape[2], y.shape[3]
    for job in range(t0, t1):
        n, co = job // co_, job % co_
        g = co // cog
        c0 = g * cig
        for a in range(kh_ - 1, -1, -1):          # ConvTranspose's kh = KH - 1 - a, increasing
            for b in range(kw_ - 1, -1, -1):
                wv = w[co, a, b]
                # the GEMM row of (co, kh, kw) in its group: (co mod cog) * KH * KW + kh * KW + kw
                rows = _m1t_rows(((co % cog) * kh_ + kh_ - 1 - a) * kw_ + kw_ - 1 - b, cog * kh_ * kw_)
                for oh in range(ho):
                    ih = oh + a - pt
                    if ih < 0 or ih >= h_:
                        continue
                    for ow in range(wo):
                        iw = ow + b - pl
                        if iw < 0 or iw >= w_ or not live[n, ih, iw, g]:
                            continue
                        xv = x[n, ih, iw, c0:c0 + cig]
                        if mode == M1:
                            col = _dot_m1(xv, wv)
                        elif mode == M1_TRANSPOSE_B:
                            col = _dot_m1t(xv, wv, rows)
                        else:
                            col = _dot_fma(xv, wv, k_block)
                        y[n, co, oh, ow] = _f32(y[n, co, oh, ow] + col)
        for oh in range(ho):
            for ow in range(wo):
                y[n, co, oh, ow] = _f32(y[n, co, oh, ow] + bias[co])


def dequantize(values, scale) -> np.ndarray:
    """DequantizeLinear: float32(value) * float32(scale) in float32 (scale broadcasts, e.g. per channel)."""
    return np.asarray(values).astype(np.float32) * np.asarray(scale, dtype=np.float32)


def is_prepacked(m: int, k: int, float_weights: bool) -> bool:
    """ORT prepacks (transposes) a float32 weight initializer unless the GEMM's M = Co/g * KH * KW or
    K = Ci/g is 1 (ConvTranspose<float>::PrePack); a runtime weight (the QDQ form's DequantizeLinear) never."""
    return float_weights and m > 1 and k > 1


def k_block_size(n: int, k: int, prepacked: bool) -> int:
    """MlasSgemmOperation's StrideK for a GEMM of N columns and depth K: 128, grown while StrideN > 16 and
    StrideN / 2 >= N when N < K and A is not transposed (the prepacked weight). (When N >= K it only shrinks
    while it stays >= K: one block either way.)"""
    stride_n, stride_k = N_STRIDE, K_BLOCK
    if prepacked and n < k:
        while stride_n > 16 and stride_n // 2 >= n:
            stride_k, stride_n = stride_k * 2, stride_n // 2
    return stride_k


def conv_transpose_ort(x, w, bias, padding, groups, float_weights=False, gemm_n=None) -> np.ndarray:
    """ORT's float32 ConvTranspose on the conv2d form: x float32 [N, C, H, W] (dilated), w float32 [Co, Ci/g,
    KH, KW] (flipped), bias float32 [Co] or None, padding (top, left, bottom, right) -> float32 [N, Co, Ho, Wo].
    A 1x1 input is ORT's N == 1 case (an M1 kernel). float_weights: the weight is a float32 initializer (ORT
    prepacks it); gemm_n: the pixels of the ConvTranspose's own (undilated) input, H * W of x by default."""
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
    gemm_n = h * wd if gemm_n is None else int(gemm_n)
    packed = is_prepacked(co // int(groups) * kh * kw, cig, float_weights)
    mode = GEMM if h * wd != 1 else (M1_TRANSPOSE_B if packed else M1)
    y = np.zeros((n, co, ho, wo))
    split(_kernel, n * co, xt, live, wt, b, pt, pl, int(groups), mode, k_block_size(gemm_n, cig, packed), y,
          work=y.size * kh * kw * cig)
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


def ort_weight_quantization(w) -> tuple[np.ndarray, np.float32, int]:
    """ORT's WeightBiasQuantization of a float32 weight initializer: int8 per tensor with a zero point
    (core/util/qmath.h GetQuantizationParameter<int8_t>: min/max widened to 0, scale = float32(max - min) / 255
    (1 when max == min), zp = RoundHalfToEven(clamp(-128 - min / scale)), float32 arithmetic), codes by
    MlasQuantizeLinear (float32 w / scale, clamped, half to even, + zp). -> (codes, scale, zero point)."""
    f = np.float32
    w = np.asarray(w, dtype=np.float32)
    lo, hi = min(f(w.min()), f(0)), max(f(w.max()), f(0))
    scale = f(1) if hi == lo else f(f(hi - lo) / f(255))
    zp = int(np.rint(np.clip(f(f(-128) - f(lo / scale)), -128, 127)))
    with np.errstate(over="ignore"):
        q = np.rint(np.clip((w / scale).astype(np.float32), f(-128 - zp), f(127 - zp))).astype(np.int64) + zp
    return q, scale, zp


def ort_bias_quantization(b, x_scale, w_scale) -> tuple[np.ndarray, np.float32]:
    """The same transformer's float32 bias: bias_scale = float32(x_scale * w_scale) (a Mul), codes
    Round(float32(b / bias_scale)) half to even (Div, Round, Cast to int32; constant-folded)."""
    bs = np.float32(np.float32(x_scale) * np.float32(w_scale))
    with np.errstate(over="ignore"):
        q = np.rint((np.asarray(b, dtype=np.float32) / bs).astype(np.float32))
    return np.clip(q, -2.0 ** 31, 2.0 ** 31 - 1).astype(np.int64), bs


def runtime_weights(lay, w_values, bias) -> tuple[np.ndarray, np.ndarray | None]:
    """The float32 weight and bias ORT's ConvTranspose gets at run time: uniform weights through their
    DequantizeLinear (float32(code - zp) * scale[c]), the int32 bias as float32(bias) * bias_scale. Float32
    weights (Float32W, the QOperator form) go through what ORT's default session makes of them first: its
    WeightBiasQuantization (optimizer/qdq_transformer/weight_bias_quantization.cc, graph optimization level
    basic and above, for a ConvTranspose whose input is a DequantizeLinear with a scalar scale and whose output
    goes to a QuantizeLinear, optionally through Relu / Clip) quantizes the float32 weight initializer to int8
    and the float32 bias to int32 and inserts DequantizeLinear nodes, which constant folding keeps: the GEMM
    then takes a runtime weight, exactly as in the QDQ form. (Without graph optimizations, ORT_DISABLE_ALL,
    ORT multiplies the float32 weights themselves, prepacked: conv_transpose_ort(float_weights=True).)"""
    co = w_values.shape[0]
    b = None if bias is None else dequantize(bias, bias_scales(lay, co))
    if not isinstance(lay.weight_enc, Float32W):
        return dequantize(w_values, lay.weight_enc.channel_scales(co).reshape(-1, 1, 1, 1)), b
    codes, w_scale, zp = ort_weight_quantization(w_values)
    if b is not None:
        bq, b_scale = ort_bias_quantization(b, lay.in_encs[0].scale, w_scale)
        b = dequantize(bq, b_scale)
    return dequantize(codes - zp, w_scale), b


def layer_values(lay, x_codes, w_values, bias) -> np.ndarray:
    """A conv2d layer with arithmetic "ort_float32" on its (dilated) input codes -> output values (before the
    zero point): dequantize, ORT's float32 ConvTranspose, quantize. w_values: integer weight values (uniform
    weights) or the float32 weights (Float32W)."""
    x = dequantize(lay.in_encs[0].decode(x_codes), lay.in_encs[0].scale)
    w, b = runtime_weights(lay, w_values, bias)
    y = conv_transpose_ort(x, w, b, lay.attr("padding"), lay.attr("groups"))
    return quantize_values(y, lay.out_enc.scale)


# ----------------------------------------------------------------------------------------- plain reference

def conv_transpose_reference(x, w, bias, strides, pads, output_padding, groups, fma=None,
                             float_weights=False) -> np.ndarray:
    """ORT's ConvTranspose<float> on one image as its code runs (plain Python, small shapes): x float32
    [Ci, H, W], w float32 [Ci, Co/g, KH, KW] (ONNX layout), bias float32 [Co] or None -> float32 [Co, Ho, Wo].
    Per group, the column buffer col[(co, kh, kw), (ih, iw)] of the SGEMM (K blocks of 128, FMAs; the M1
    kernel for a 1x1 input), then Col2im adding rows in (co, kh, kw) order into a zeroed output, then the bias.
    float_weights: the weight is an initializer ORT prepacks (the CblasNoTrans GEMM: its StrideK, and the
    M1TransposeB kernel for a 1x1 input)."""
    fma = fma or (lambda a, b, c: float(fma32(a, b, c)))
    f32 = lambda v: float(np.float32(v))   # noqa: E731
    ci, h, wd = x.shape
    _, cog, kh, kw = w.shape
    cig = ci // groups
    (sh, sw), (pt, pl, pb, pr), (oph, opw) = strides, pads, output_padding
    ho, wo = (h - 1) * sh - pt - pb + kh + oph, (wd - 1) * sw - pl - pr + kw + opw
    y = np.zeros((groups * cog, ho, wo), np.float32)
    packed = is_prepacked(cog * kh * kw, cig, float_weights)
    k_block = k_block_size(h * wd, cig, packed)
    for g in range(groups):
        col = {}
        for row, m in enumerate(np.ndindex(cog, kh, kw)):
            for pix in np.ndindex(h, wd):
                xs = [float(x[g * cig + k][pix]) for k in range(cig)]
                ws = [float(w[g * cig + k][m]) for k in range(cig)]
                if h * wd == 1 and packed:
                    # the kernel's lanes: lane k % 8 sums products in k order; rows reduced in blocks of 4, 2, 1
                    lanes = [0.0] * 8
                    for k in range(cig):
                        lanes[k % 8] = f32(lanes[k % 8] + f32(xs[k] * ws[k]))
                    rows = int(_m1t_rows(row, cog * kh * kw))
                    order = {4: [[0, 1, 2, 3], [4, 5, 6, 7]], 2: [[0, 2, 4, 6], [1, 3, 5, 7]],
                             1: [[0, 1, 2, 3], [4, 5, 6, 7]]}[rows]
                    if rows == 4:
                        halves = [f32(f32(f32(lanes[i] + lanes[j]) + lanes[p]) + lanes[q]) for i, j, p, q in order]
                    else:   # pairs first: (a0 + a2) + (a4 + a6) for 2 rows, (a0 + a1) + (a2 + a3) for 1 row
                        halves = [f32(f32(lanes[i] + lanes[j]) + f32(lanes[p] + lanes[q])) for i, j, p, q in order]
                    col[m + pix] = f32(halves[0] + halves[1])
                    continue
                if h * wd == 1:
                    col[m + pix] = float(_dot_m1(np.array(xs), np.array(ws)))
                    continue
                c = 0.0
                for k0 in range(0, cig, k_block):
                    acc = 0.0
                    for k in range(k0, min(cig, k0 + k_block)):
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


# ---------------------------------------------------------------------------------------------------------
# Parallel launchers (threads.launcher): each kernel's chunks on numba's threads; here, beside the kernels,
# because numba's cache keys a function on its own file
# ---------------------------------------------------------------------------------------------------------
@launcher(_kernel)
@njit(parallel=True, nogil=True, cache=True)
def _kernel_launch(n_tasks, chunks, x, live, w, bias, pt, pl, groups, mode, k_block, y):
    for c in prange(chunks):
        _kernel(n_tasks * c // chunks, n_tasks * (c + 1) // chunks, x, live, w, bias, pt, pl, groups, mode, k_block, y)
