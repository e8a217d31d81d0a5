"""Elementwise units on quantized tensors: the activation lookup table, the two-input multiplier, and zero
insertion (the data movement in front of a transposed convolution).

- lut: output code = table[channel, input code - lowest code]. Any single-input elementwise function between
  quantized tensors (sigmoid, HardSwish, a constant affine, a float island of ONNX Runtime) is exactly such a
  table over the 2^bits input codes, which is also how integer accelerators build these functions.
- mul: y = a_value * b_value (exact integer product) rescaled to the output scale.
  "float32" is ONNX Runtime's QLinearMul on x86 (onnxruntime/core/mlas/lib/qlmul.cpp, the SSE2 kernel that the
  AVX2/AVX-512 builds also run): product in int32, converted to float32 (exact below 2^24), times the float32
  ratio float32(float32(s_a * s_b) / s_out), plus float32(zero point), rounded half to even (cvtps2dq under the
  default MXCSR; a result outside int32 becomes INT32_MIN), saturated to the output type (packs). "float64" rounds the exact real product half to even.
  "tflite" is TensorFlow Lite's int8 MUL (tflite/kernels/mul.cc Prepare, reference_integer_ops MulElementwise;
  the optimized kernel computes the same): MultiplyByQuantizedMultiplier(product, M) + zero point, saturated,
  with M = float32(float32(s_a · s_b) / s_out) (mul.cc multiplies and divides the float scales in float) turned
  into TFLite's fixed-point (q, shift) (requantizer.quantize_multiplier), double rounding (SRDHM, then
  RoundingDivideByPOT).
- softmax "tflite_reference" / "tflite_optimized": LiteRT's int8 / uint8 SOFTMAX kernels (gemmlowp fixed point /
  a float32 exp table), simulator/importers/tflite_arith.py.
- avgpool rounding "tflite_mean_reference" / "tflite_mean_optimized": LiteRT's int8 MEAN over H and W
  (`tflite_mean`).
Both take NumPy-broadcast operands (a [N, C, 1, 1] gate times a [N, C, H, W] map).
"""

from __future__ import annotations

import functools

import numpy as np

from .requantizer import quantize_multiplier, srdhm


def lut_lookup(codes: np.ndarray, table: np.ndarray, lowest_code: int) -> np.ndarray:
    """codes [N, C, ...] -> table[c, code - lowest_code]; a [1, codes] table applies to every channel."""
    index = codes.astype(np.int64) - lowest_code
    if table.shape[0] == 1:
        return table[0].astype(np.int64)[index]
    channel = np.arange(table.shape[0]).reshape((1, -1) + (1,) * (codes.ndim - 2))
    return table.astype(np.int64)[channel, index]


def mul_codes(a_values, b_values, s_a, s_b, s_out, zero_point, code_lo, code_hi, mode):
    """Output codes of y = a * b (values: code - zero point), in `mode`'s arithmetic, clamped to [lo, hi]."""
    product = np.asarray(a_values, dtype=np.int64) * np.asarray(b_values, dtype=np.int64)
    if mode == "float32":
        ratio = np.float32(np.float32(s_a) * np.float32(s_b)) / np.float32(s_out)
        with np.errstate(over="ignore", invalid="ignore"):
            rounded = np.rint(product.astype(np.float32) * ratio + np.float32(zero_point)).astype(np.float64)
            # cvtps2dq returns 0x80000000 ("integer indefinite") for a result outside int32 (or NaN)
            codes = np.where((rounded >= -2.0 ** 31) & (rounded < 2.0 ** 31), rounded, -2.0 ** 31)
    elif mode == "tflite":
        m = np.float32(np.float32(np.float32(s_a) * np.float32(s_b)) / np.float32(s_out))
        q, shift = quantize_multiplier(float(m))
        codes = _mbqm(product, q, shift) + zero_point
    else:
        real = product.astype(np.float64) * (s_a * s_b / s_out)
        codes = np.rint(np.clip(real, -2.0 ** 62, 2.0 ** 62)) + zero_point
    return np.clip(codes, code_lo, code_hi).astype(np.int64)


def _mbqm(x, q: int, shift: int) -> np.ndarray:
    """TFLite MultiplyByQuantizedMultiplier(int32 x, q, shift), double rounding (tflite/kernels/internal/
    common.cc): RoundingDivideByPOT(SRDHM(x · 2^max(shift, 0), q), max(−shift, 0)); x · 2^shift wraps in int32."""
    x = np.asarray(x, dtype=np.int64)
    if shift > 0:
        x = ((x << shift) + (1 << 31)) % (1 << 32) - (1 << 31)
    p = srdhm(x, np.int64(q))
    e = max(-shift, 0)
    if e == 0:
        return p
    mask = np.int64((1 << e) - 1)
    return (p >> e) + ((p & mask) > ((mask >> 1) + (p < 0)))


def tflite_softmax(codes: np.ndarray, arithmetic: str, in_scale: float, in_zero_point: int, signed_in: bool,
                   out_scale: float, out_zero_point: int, signed_out: bool) -> np.ndarray:
    """LiteRT's 8-bit SOFTMAX over the last axis of [N, D] codes: "tflite_reference" (reference/softmax.h,
    gemmlowp fixed point) or "tflite_optimized" (optimized_ops.h, float32 exp table)."""
    from ..importers import tflite_arith as ta
    qi = ta.QParams(float(in_scale), int(in_zero_point), "int8" if signed_in else "uint8")
    qo = ta.QParams(float(out_scale), int(out_zero_point), "int8" if signed_out else "uint8")
    return ta.softmax_codes(codes, arithmetic[len("tflite_"):], qi, qo)


def tflite_mean(codes: np.ndarray, rounding: str, in_scale: float, in_zero_point: int, out_scale: float,
                out_zero_point: int, signed: bool) -> np.ndarray:
    """LiteRT's int8 MEAN over H and W of [N, C, H, W] codes -> [N, C, 1, 1]: rounding "tflite_mean_reference"
    (reference/reduce.h QuantizedMeanOrSum) or "tflite_mean_optimized" (optimized/integer_ops/mean.h, keep_dims
    4-D input, one thread)."""
    from ..importers import tflite_arith as ta
    dtype = "int8" if signed else "uint8"
    qi, qo = ta.QParams(float(in_scale), int(in_zero_point), dtype), ta.QParams(float(out_scale), int(out_zero_point), dtype)
    path = "optimized" if rounding == "tflite_mean_optimized" else "reference"
    out = ta.mean_codes(np.moveaxis(codes, 1, -1), path, qi, qo, keep_dims=True)
    return out.reshape(codes.shape[0], codes.shape[1], 1, 1)


def mul_reference(a_values, b_values, s_a, s_b, s_out, zero_point, code_lo, code_hi):
    """Exact rational arithmetic, round half to even (Python fractions): the test reference for mul_codes."""
    from fractions import Fraction
    a, b = np.broadcast_arrays(np.asarray(a_values), np.asarray(b_values))
    ratio = Fraction(s_a) * Fraction(s_b) / Fraction(s_out)
    out = [min(max(round(Fraction(int(x) * int(y)) * ratio) + zero_point, code_lo), code_hi)
           for x, y in zip(a.ravel().tolist(), b.ravel().tolist())]
    return np.asarray(out, dtype=np.int64).reshape(a.shape)


def dilate_codes(codes: np.ndarray, stride, zero_code: int) -> np.ndarray:
    """Zero insertion: [N, C, H, W] -> [N, C, (H-1)*sh+1, (W-1)*sw+1], the gaps holding the code of real 0."""
    sh, sw = stride
    n, c, h, w = codes.shape
    out = np.full((n, c, (h - 1) * sh + 1, (w - 1) * sw + 1), zero_code, dtype=np.int64)
    out[:, :, ::sh, ::sw] = codes
    return out


def _logf(x: np.float32) -> np.float32:
    """The C library's logf (what ONNX Runtime calls), else the double logarithm rounded to float32 (equal to
    glibc's logf for all but 6 of the 300,000 row lengths checked)."""
    import ctypes
    import ctypes.util
    import math
    try:
        libm = ctypes.CDLL(ctypes.util.find_library("m") or "libm.so.6")
        libm.logf.restype, libm.logf.argtypes = ctypes.c_float, [ctypes.c_float]
        return np.float32(libm.logf(float(x)))
    except (OSError, AttributeError):
        return np.float32(math.log(float(x)))


@functools.lru_cache(maxsize=64)   # per batch the engine asks again; logf's library lookup runs a subprocess
def qlinear_softmax_table(x_scale: float, reduce_len: int, signed: bool) -> np.ndarray:
    """ONNX Runtime's QLinearSoftmax exp table (contrib_ops/cpu/quantization/qlinear_softmax.cc,
    QlinearBuildLookupTableUint32, EXP_OUT_DTYPE float): 256 float32 values exp((i - 255 + shift) * x_scale),
    shift = max(0, logf(FLT_MAX / D) - 5) / x_scale (a float32 logarithm, then double), exp in double,
    indexed by the code's byte (int8 codes: i - 128)."""
    import math
    flt_max_over_d = np.float32(np.float32(np.finfo(np.float32).max) / np.float32(reduce_len))
    # C++'s log() of that float is logf: a float32 logarithm (with a double log the table differs in rare rows)
    shift = max(0.0, float(_logf(flt_max_over_d)) - 5.0) / float(np.float32(x_scale))
    table = np.empty(256, dtype=np.float32)
    for i in range(256):
        value = math.exp((i - 255 + shift) * float(np.float32(x_scale)))
        table[(i - 128) & 0xFF if signed else i] = np.float32(value) if value < 3.4e38 else np.float32(np.inf)
    table.flags.writeable = False
    return table


def qlinear_softmax(codes: np.ndarray, x_scale: float, y_scale: float, y_zero_point: int, signed: bool):
    """ONNX Runtime's QLinearSoftmax over the last axis of [N, D] codes (QlinearSoftmaxCPU): the row's max is
    aligned to the table's top, the exp values summed in float32 in order, each divided as
    nearbyintf(e * floor(1 / y_scale) / sum) + zero point, saturated (uint8 above at 255; int8 to [-128, 127])."""
    n, d = codes.shape
    table = qlinear_softmax_table(x_scale, d, signed)
    ys = np.float32(np.floor(np.float32(1.0) / np.float32(y_scale)))
    if signed:
        index = (127 - codes.max(axis=1, keepdims=True) + codes) & 0xFF
    else:
        index = 255 - codes.max(axis=1, keepdims=True) + codes
    e = table[index]                                   # [N, D] float32
    total = np.zeros(n, dtype=np.float32)
    for j in range(d):                                 # sequential float32 sum, as the C loop
        total = total + e[:, j]
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        q = np.rint((e * ys) / total[:, None]).astype(np.float64)
    q = np.where(np.isnan(q), 0, q) + y_zero_point     # an overflowed product (inf) saturates, as ORT gives
    if signed:   # saturated: onnxruntime 1.32 gives 127 where an older source read wraps 128 to -128
        return np.clip(q, -128, 127).astype(np.int64)
    return np.minimum(q, 255).astype(np.int64)


def softmax_exact(real: np.ndarray, out_enc) -> np.ndarray:
    """Softmax of real values [N, K] in float64, quantized half to even to `out_enc` (the reference)."""
    e = np.exp(real - real.max(axis=1, keepdims=True))
    y = e / e.sum(axis=1, keepdims=True) / out_enc.scale
    lo, hi = out_enc.code_range()
    return np.clip(np.rint(y) + out_enc.zero_point, lo, hi).astype(np.int64)


# lut_avgpool's float32 sum over the H*W values of one channel (attr sum_order):
# - "sequential": in row-major order, ONNX Runtime's float GlobalAveragePool (MLAS), checked against it;
# - "eigen_sse": ONNX Runtime's float ReduceMean over H and W (reduction_ops.h: ReduceAggregatorMean::FastReduceKR
#   -> ReduceAggregatorSum::aggall, Eigen's Map<VectorXf>.sum(), then /= float(H*W)). Eigen's vectorized redux
#   (Eigen/src/Core/Redux.h, LinearVectorizedTraversal) with ORT's SSE build (4-float packets, 16-byte
#   alignment): the elements before the first 16-byte-aligned one (the head) are skipped, the aligned packets go
#   to two packet accumulators (even / odd packets) that are then added, plus one odd last packet; the packet
#   is reduced as (p0 + p2) + (p1 + p3) (predux); then the head elements and the tail elements are added in
#   order. Fewer than 4 elements after the head: a plain sequential sum. The row of channel c starts c*H*W floats
#   into the sample's tensor, which ORT's allocator aligns to 64 bytes (one sample per run).
_PACKET = 4                        # floats in an SSE packet


def eigen_sse_sum(row: np.ndarray, offset: int) -> np.float32:
    """Eigen's redux sum of a float32 row whose first element sits `offset` floats past a 16-byte boundary (the
    reference, a line-by-line reading of redux_impl<..., LinearVectorizedTraversal, NoUnrolling>::run)."""
    x = np.asarray(row, dtype=np.float32)
    size, p = x.size, _PACKET
    start = min((p - offset % p) % p, size)            # first_aligned
    aligned = (size - start) // p * p
    end, end2 = start + aligned, start + (size - start) // (2 * p) * (2 * p)
    if not aligned:
        res = x[0]
        for i in range(1, size):
            res = np.float32(res + x[i])
        return np.float32(res)
    r0 = x[start:start + p]
    if aligned > p:
        r1 = x[start + p:start + 2 * p]
        for i in range(start + 2 * p, end2, 2 * p):
            r0, r1 = r0 + x[i:i + p], r1 + x[i + p:i + 2 * p]
        r0 = r0 + r1
        if end > end2:
            r0 = r0 + x[end2:end2 + p]
    res = np.float32((r0[0] + r0[2]) + (r0[1] + r0[3]))
    for i in list(range(start)) + list(range(end, size)):
        res = np.float32(res + x[i])
    return res


def _sequential_sums(x):
    total = x[..., 0].copy()       # the first element, not 0.0 + it (the same but for the sign of a zero)
    for j in range(1, x.shape[-1]):
        total = total + x[..., j]
    return total


def eigen_sse_sums(flat: np.ndarray) -> np.ndarray:
    """[N, C, L] float32 -> [N, C]: eigen_sse_sum of every row, the row of channel c at offset c*L (vectorized
    over the rows that share an offset)."""
    n, c, size = flat.shape
    p = _PACKET
    out = np.empty((n, c), dtype=np.float32)
    offsets = np.arange(c) * size % p
    for off in np.unique(offsets):
        rows = offsets == off
        x = flat[:, rows, :]
        start = min((p - int(off)) % p, size)
        k = (size - start) // p                        # aligned packets
        if k == 0:
            out[:, rows] = _sequential_sums(x)
            continue
        packets = x[..., start:start + k * p].reshape(n, -1, k, p)
        r0 = packets[:, :, 0]
        if k > 1:
            r1 = packets[:, :, 1]
            for j in range(1, k // 2):
                r0, r1 = r0 + packets[:, :, 2 * j], r1 + packets[:, :, 2 * j + 1]
            r0 = r0 + r1
            if k % 2:
                r0 = r0 + packets[:, :, k - 1]
        res = (r0[..., 0] + r0[..., 2]) + (r0[..., 1] + r0[..., 3])
        for j in list(range(start)) + list(range(start + k * p, size)):
            res = res + x[..., j]
        out[:, rows] = res
    return out


def lut_avgpool_ort(codes: np.ndarray, table_bits: np.ndarray, lowest_code: int, out_scale: float,
                    out_zero_point: int, code_lo: int, code_hi: int, sum_order: str = "sequential") -> np.ndarray:
    """[N, C, H, W] codes -> [N, C, 1, 1] output codes: each code looked up as a float32 (the table holds bit
    patterns), the H*W values summed in float32 in `sum_order` (above) and divided by float32(H*W) (ONNX
    Runtime's float GlobalAveragePool / ReduceMean), then QuantizeLinear: / scale in float32, rounded half to
    even, plus the zero point, saturated."""
    values = lut_lookup(codes, table_bits, lowest_code).astype(np.int32).view(np.float32)
    n, c = values.shape[:2]
    flat = values.reshape(n, c, -1)
    with np.errstate(over="ignore", invalid="ignore"):
        total = eigen_sse_sums(flat) if sum_order == "eigen_sse" else _sequential_sums(flat)
        mean = total / np.float32(flat.shape[2])
        q = np.rint(mean / np.float32(out_scale)).astype(np.float64)
    q = np.clip(np.nan_to_num(q, nan=0.0), -2.0 ** 40, 2.0 ** 40) + out_zero_point
    return np.clip(q, code_lo, code_hi).astype(np.int64).reshape(n, c, 1, 1)
