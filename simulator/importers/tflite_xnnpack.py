"""The XNNPACK delegate of LiteRT 2.3.0 (what a plain `Interpreter()` runs) on int8 / uint8 models, as exact
integer and float32 arithmetic: which ops it takes, and what each computes on an x86 machine with AVX2 / FMA
and no AVX-512. numpy and Python integers only (no TensorFlow / LiteRT import).

Sources (XNNPACK at the commit mirrored with LiteRT 2.3.0; every formula below was checked against the runtime,
tests/test_tflite_xnnpack.py):

- which ops: tflite/delegates/xnnpack/xnnpack_delegate.cc (LiteRT), Visit*Node: quantized int8 is taken for
  CONV_2D, DEPTHWISE_CONV_2D, FULLY_CONNECTED, ADD, SUB, MUL, MAX_POOL_2D, MEAN (and SUM), CONCATENATION, PAD,
  RESHAPE, LOGISTIC, TANH, ELU, LEAKY_RELU, QUANTIZE (float -> q, or q -> q of one type), DEQUANTIZE; NOT for
  AVERAGE_POOL_2D (CheckTensorFloatType), SOFTMAX, HARD_SWISH, RELU, RELU6, RELU_N1_TO_1 (float only), so those
  run LiteRT's optimized builtin kernels. uint8 (TFLITE_XNNPACK_DELEGATE_FLAG_QU8, set in the pip wheel: checked
  on legacy uint8 models) is taken for the same ops except ELU (CheckTensorFloatOrQInt8Type) and a QUANTIZE that
  changes the type (uint8 <-> int8), with the qu8 kernels: the same arithmetic on 0..255 codes.
- conv / depthwise / FC requantization: src/operators/convolution-nhwc.c (init_requantization_scale_qx8_qc8w),
  src/operators/fully-connected-nc.c: scale[c] = f32(f32(s_in * s_w[c]) / s_out) (C float arithmetic); the AVX2
  microkernels (src/qs8-qc8w-gemm/gen/qs8-qc8w-gemm-1x8c8-minmax-fp32-avx2.c,
  src/qs8-qc8w-dwconv/gen/qs8-qc8w-dwconv-25p16c-minmax-fp32-avx2-mul32.c): vcvtdq2ps(acc) * scale (vmulps, no
  FMA), min with (out_max - zp), vcvtps2dq (half to even), + zp (saturating), max with out_min.
- fused activation: xnnpack_delegate.cc ConvertActivationToOutputRange gives float bounds (RELU [0, inf),
  RELU6 [0, 6], RELU_N1_TO_1 [-1, 1]); src/xnnpack/requantization.h xnn_qs8_quantize turns each into a code:
  lrintf(min(max(f32(f32(v / s_out) + f32(zp)), -128), 127)).
- ADD / SUB: src/microparams-init.c xnn_init_qs8_add_minmax_scalar_params, src/qs8-vadd/gen/
  qs8-vadd-minmax-avx2-mul32-ld64-u16.c; SUB is ADD with the b scale negated (src/operators/
  binary-elementwise-nd.c); the fused activation is a separate clamp node (src/subgraph/binary.c).
- MUL: xnn_init_qs8_mul_minmax_scalar_params, src/qs8-vmul/gen/qs8-vmul-minmax-fp32-avx-mul16-ld64-u16.c.
- MEAN: src/operators/reduce-nd.c (int32 sum of raw codes, then the reference int32 -> qs8 convert with the
  zero points folded in), src/microparams-init.c xnn_init_qs8_reduce_scalar_params / xnn_update_qs8_reduce_...,
  src/reference/unary-elementwise.cc, src/xnnpack/reference-utils.h (quantize, round_float_to_int).
- LOGISTIC / TANH / ELU: no qs8 kernel, so src/operators/unary-elementwise-nc.c (init_lut_op_with_config) runs
  the float reference op (src/reference/unary-elementwise.cc) on all 256 codes into a table.
- LEAKY_RELU: xnn_init_qs8_lrelu_scalar_params, src/qs8-vlrelu/gen/qs8-vlrelu-avx2-u32.c; QUANTIZE q -> q:
  xnn_init_qs8_cvt_scalar_params, src/qs8-vcvt/gen/qs8-vcvt-avx2-u32.c (both vpmulhrsw fixed point).
- QUANTIZE float -> int8: xnn_init_f32_qs8_cvt_scalar_params, src/f32-qs8-vcvt/gen/f32-qs8-vcvt-avx2-u64.c;
  DEQUANTIZE: src/qs8-f32-vcvt/gen/qs8-f32-vcvt-avx2-u16.c.
- MAX_POOL_2D, PAD (the zero point's code), CONCATENATION (XNNPACK requires equal quantization: a copy),
  RESHAPE: code movement, no arithmetic.
"""

from __future__ import annotations

import math
import struct

import numpy as np

F32 = np.float32
INT8_LO, INT8_HI = -128, 127

# ops the delegate takes with int8 tensors (given the per-op conditions of `delegated`)
DELEGATED_INT8 = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "ADD", "SUB", "MUL", "MAX_POOL_2D", "MEAN",
                  "SUM", "CONCATENATION", "PAD", "RESHAPE", "LOGISTIC", "TANH", "ELU", "LEAKY_RELU", "QUANTIZE",
                  "DEQUANTIZE")
NOT_DELEGATED_INT8 = ("AVERAGE_POOL_2D", "SOFTMAX", "HARD_SWISH", "RELU", "RELU6", "RELU_N1_TO_1")
UNARY_TABLE_OPS = ("LOGISTIC", "TANH", "ELU", "LEAKY_RELU", "QUANTIZE")
ACTIVATIONS = ("NONE", "RELU", "RELU6", "RELU_N1_TO_1")


def _f32(x) -> np.float32:
    return F32(x)


def _code_range(q) -> tuple[int, int]:
    return (0, 255) if getattr(q, "dtype", "int8") == "uint8" else (INT8_LO, INT8_HI)


def _f32_bits(x: np.float32) -> int:
    return struct.unpack("<I", struct.pack("<f", float(x)))[0]


# ------------------------------------------------------------------------------------------ delegation


def delegated(op: str, in_qs=(), out_q=None, *, activation: str = "NONE", alpha: float | None = None,
              filter_per_channel_axis: int = 0, filter_scales=None) -> bool:
    """Whether the XNNPACK delegate of LiteRT 2.3.0 (default options) runs this op, given its quantization
    (xnnpack_delegate.cc Visit*Node). `in_qs`: the quantized inputs' QParams-like objects (scale, zero_point,
    dtype); `out_q` likewise. Float inputs of QUANTIZE / float output of DEQUANTIZE: pass None.

    False covers two cases: the delegate leaves the node to the builtin kernels (AVERAGE_POOL_2D, SOFTMAX, a scale
    ratio out of its range, ...), and nodes the delegate claims but XNNPACK then refuses, so that LiteRT fails to
    prepare the whole model (checked): CONCATENATION with unequal quantization (src/subgraph/concatenate.c),
    a conv / depthwise / FC requantization scale f32(f32(s_in * s_w) / s_out) >= 256 (pass `filter_scales`)."""
    op = op.upper()
    qs = [q for q in list(in_qs) + [out_q] if q is not None]
    if len({getattr(q, "dtype", "int8") for q in qs}) > 1:
        return False                      # a QUANTIZE uint8 <-> int8 (no qu8 <-> qs8 convert)
    if op == "ELU" and any(getattr(q, "dtype", "int8") == "uint8" for q in qs):
        return False                      # ELU: CheckTensorFloatOrQInt8Type
    if op not in DELEGATED_INT8:
        return False
    if activation not in ACTIVATIONS:
        return False                      # TANH / SIGN_BIT / SIGMOID fused activations are refused
    s = lambda q: float(_f32(q.scale))   # noqa: E731
    if op in ("ADD", "SUB"):
        a, b = in_qs
        return all(1.0 / 1024 <= float(_f32(s(x) / F32(s(out_q)))) < 256.0 for x in (a, b))
    if op == "MUL":
        a, b = in_qs
        r = float(_f32(_f32(s(a) * F32(s(b))) / F32(s(out_q))))
        return 1.0 / 65536 <= r < 256.0
    if op == "LEAKY_RELU":
        if alpha is None or alpha == 0.0 or not math.isfinite(alpha) or not math.isfinite(1.0 / alpha):
            return False
        pos = float(_f32(F32(s(in_qs[0])) / F32(s(out_q))))
        neg = float(_f32(F32(pos) * F32(alpha)))
        return 1.0 / 256 <= pos <= 128.0 and -127.99609375 <= neg <= 128.0 and abs(neg) >= 1.0 / 256
    if op == "QUANTIZE" and in_qs and in_qs[0] is not None:
        r = float(_f32(F32(s(in_qs[0])) / F32(s(out_q))))
        return 1.0 / 256 <= r <= 128.0
    if op == "CONCATENATION":
        # XNNPACK's concatenate requires equal quantization of every input and the output
        return all((s(q), int(q.zero_point)) == (s(out_q), int(out_q.zero_point)) for q in in_qs)
    if op in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"):
        if filter_scales is not None and np.any(conv_multipliers(in_qs[0].scale, filter_scales, out_q.scale) >= 256):
            return False
        return filter_per_channel_axis in (0, 3) if op == "DEPTHWISE_CONV_2D" else filter_per_channel_axis == 0
    return True


# ------------------------------------------------------------------------------------------ conv / FC


def conv_multipliers(s_in: float, s_w, s_out: float) -> np.ndarray:
    """Per output channel, f32(f32(s_in * s_w[c]) / s_out) (convolution-nhwc.c, fully-connected-nc.c), as
    float64 numbers holding float32 values (hwsim's `multiplier` attribute with `requant: "float32"`)."""
    w = np.atleast_1d(np.asarray(s_w, dtype=np.float32))
    with np.errstate(all="ignore"):
        m = (F32(s_in) * w) / F32(s_out)
    return m.astype(np.float32).astype(np.float64)


def activation_codes(activation: str, out_q) -> tuple[int, int]:
    """Output code bounds of a fused activation: xnn_qs8_quantize on ConvertActivationToOutputRange's floats."""
    lo, hi = {"NONE": (-math.inf, math.inf), "RELU": (0.0, math.inf), "RELU6": (0.0, 6.0),
              "RELU_N1_TO_1": (-1.0, 1.0)}[activation]
    clo, chi = _code_range(out_q)
    scale, zp = F32(out_q.scale), F32(int(out_q.zero_point))

    def q(v):
        with np.errstate(all="ignore"):
            t = F32(F32(v) / scale) + zp
        t = min(max(float(t), float(clo)), float(chi))
        return int(np.rint(t))           # lrintf, default rounding: half to even
    return q(lo), q(hi)


def requantize_conv(acc, multipliers, out_zp: int, qmin: int, qmax: int, channel_axis: int = -1) -> np.ndarray:
    """int32 accumulators (bias and input zero point included) -> int8 codes: the qs8 fp32 AVX2 epilogue,
    clamp(rint(f32(acc) * f32(m[c])) + zp, qmin, qmax)."""
    acc = np.asarray(acc, dtype=np.int64)
    m = np.asarray(multipliers, dtype=np.float32)
    if m.size > 1:
        shape = [1] * acc.ndim
        shape[channel_axis] = m.size
        m = m.reshape(shape)
    with np.errstate(over="ignore", invalid="ignore"):
        v = acc.astype(np.float32) * m
    v = np.minimum(v, F32(qmax - out_zp))          # the float clamp before vcvtps2dq
    r = np.rint(v.astype(np.float64))
    r = np.maximum(r, -2.0 ** 31)                   # vcvtps2dq's integer indefinite for huge negatives
    return np.clip(r + out_zp, qmin, qmax).astype(np.int64)


# ------------------------------------------------------------------------------------------ add / sub


def add_params(a_q, b_q, out_q, sub: bool = False) -> dict:
    """xnn_init_qs8_add_minmax_scalar_params: integer multipliers (< 2^21), shift in [12, 30], bias."""
    so = F32(out_q.scale)
    a_os = F32(F32(a_q.scale) / so)
    b_os = F32(F32(-F32(b_q.scale) if sub else F32(b_q.scale)) / so)
    max_abs = max(abs(a_os), abs(b_os))
    exponent = ((_f32_bits(max_abs) >> 23) & 0xFF) - 127
    shift = 20 - exponent
    if not 12 <= shift <= 30:
        raise ValueError(f"XNNPACK add: input/output scale ratio {float(max_abs):.6g} outside [2^-10, 2^8)")

    def mult(x):
        # lrintf(as_float(bits(|x|) + shift << 23)) = |x| * 2^shift rounded half to even (exact in float64)
        return int(round(abs(float(x)) * 2.0 ** shift)) * (-1 if np.signbit(x) else 1)
    ma, mb = mult(a_os), mult(b_os)
    bias = (1 << (shift - 1)) - ma * int(a_q.zero_point) - mb * int(b_q.zero_point)
    return {"a_multiplier": ma, "b_multiplier": mb, "shift": shift, "bias": bias}


def add_xnnpack(a_codes, b_codes, a_q, b_q, out_q, sub: bool = False, activation: str = "NONE") -> np.ndarray:
    """Output codes of XNNPACK's qs8 ADD (SUB: b negated), numpy-broadcast operands:
    clamp(((bias + a * ma + b * mb) >> shift) + zp_out), then the fused activation's clamp node."""
    p = add_params(a_q, b_q, out_q, sub)
    a = np.asarray(a_codes, dtype=np.int64)
    b = np.asarray(b_codes, dtype=np.int64)
    acc = p["bias"] + a * p["a_multiplier"] + b * p["b_multiplier"]
    lo, hi = _code_range(out_q)
    out = np.clip((acc >> p["shift"]) + int(out_q.zero_point), lo, hi)
    qmin, qmax = activation_codes(activation, out_q)
    return np.clip(out, qmin, qmax)


# ------------------------------------------------------------------------------------------ mul


def mul_scale(a_q, b_q, out_q) -> np.float32:
    return F32(F32(F32(a_q.scale) * F32(b_q.scale)) / F32(out_q.scale))


def mul_xnnpack(a_codes, b_codes, a_q, b_q, out_q, activation: str = "NONE") -> np.ndarray:
    """XNNPACK's qs8 MUL: clamp(rint(f32((a - za) * (b - zb)) * f32(f32(sa * sb) / so)) + zo), then the fused
    activation's clamp; the zero point is added to the rounded integer (not in float as ONNX Runtime)."""
    a = np.asarray(a_codes, dtype=np.int64) - int(a_q.zero_point)
    b = np.asarray(b_codes, dtype=np.int64) - int(b_q.zero_point)
    v = (a * b).astype(np.float32) * mul_scale(a_q, b_q, out_q)
    lo, hi = _code_range(out_q)
    out = np.clip(np.rint(v.astype(np.float64)) + int(out_q.zero_point), lo, hi)
    qmin, qmax = activation_codes(activation, out_q)
    return np.clip(out, qmin, qmax).astype(np.int64)


# ------------------------------------------------------------------------------------------ mean


def mean_params(in_q, out_q, count: int) -> tuple[np.float32, np.float32]:
    """(inv_y_scale, y_zero_point) of the int32 -> qs8 convert that ends XNNPACK's qs8 mean (reduce-nd.c):
    scale = f32(f32(s_in / s_out) * f32(1 / count)); y_zp = f32(zo - f32(f32(count * zi) * scale))."""
    scale = F32(F32(F32(in_q.scale) / F32(out_q.scale)) * F32(F32(1.0) / F32(count)))
    zp = F32(F32(int(out_q.zero_point)) - F32(F32(count * int(in_q.zero_point)) * scale))
    return scale, zp


def mean_from_sums(sums, in_q, out_q, count: int) -> np.ndarray:
    """int32 sums of raw codes over `count` elements -> output codes:
    round_float_to_int(f32(f32(sum) * scale) + y_zp) (nearbyint, then saturate)."""
    scale, zp = mean_params(in_q, out_q, count)
    s = np.asarray(sums, dtype=np.int64).astype(np.float32)
    v = (s * scale) + zp
    lo, hi = _code_range(out_q)
    return np.clip(np.rint(v.astype(np.float64)), lo, hi).astype(np.int64)


def mean_xnnpack(codes, axes, in_q, out_q, keepdims: bool = True) -> np.ndarray:
    """XNNPACK's qs8 MEAN over `axes` of an int8 code array (any layout: axes as the array has them)."""
    x = np.asarray(codes, dtype=np.int64)
    axes = tuple(sorted(a % x.ndim for a in np.atleast_1d(axes)))
    count = int(np.prod([x.shape[a] for a in axes]))
    return mean_from_sums(x.sum(axis=axes, keepdims=keepdims), in_q, out_q, count)


# ------------------------------------------------------------------------------------------ unary tables


def _reference_quantize(result: np.float32, inv_scale: np.float32, zp: np.float32, lo: int, hi: int) -> int:
    """reference-utils.h quantize + round_float_to_int: nearbyint(f32(x * inv_scale) + zp), saturated."""
    v = F32(F32(result) * inv_scale) + zp
    if np.isnan(v):
        return 0 if lo <= 0 <= hi else lo
    return int(min(max(np.rint(float(v)), lo), hi))


def _sigmoid(x: np.float32) -> np.float32:
    # SigmoidOp<float>: exp in double, e / (1 + e) in double, then cast to float
    if x > 100:
        return F32(1.0)
    if x < -100:
        return F32(0.0)
    e = math.exp(float(x))
    return F32(e / (1.0 + e))


def _tanh(x: np.float32) -> np.float32:
    # TanHOp<float>: std::tanh(float) (glibc tanhf); the correctly rounded value (tanhf is within an ulp)
    return F32(math.tanh(float(x)))


def _elu(x: np.float32, alpha: float) -> np.float32:
    # ELUOp: x < 0 ? alpha * expm1f(x) : x (float)
    return F32(F32(alpha) * F32(math.expm1(float(x)))) if x < 0 else x


def _mulhrs_shift(values: np.ndarray, multiplier: int) -> np.ndarray:
    """vpmulhrsw((zp - x) << 7, -m): ((x - zp) * 128 * m + 2^14) >> 15 = (x - zp) * m / 256 rounded half up."""
    a = (-values) << 7                     # int16: |x - zp| <= 255, so |a| <= 32640
    b = -multiplier
    b = ((b + 32768) % 65536) - 32768       # _mm256_set1_epi16 keeps the low 16 bits
    return (a * b + (1 << 14)) >> 15


def _sat16(x):
    return np.clip(x, -32768, 32767)


def lrelu_params(in_q, out_q, alpha: float) -> tuple[int, int]:
    """xnn_init_qs8_lrelu_scalar_params: lrintf(256 * f32(s_in / s_out)) and lrintf(256 * f32(that * alpha))."""
    pos = F32(F32(in_q.scale) / F32(out_q.scale))
    neg = F32(pos * F32(alpha))
    return int(np.rint(float(F32(256.0) * pos))), int(np.rint(float(F32(256.0) * neg)))


def unary_table_xnnpack(op: str, in_q, out_q, alpha: float | None = None) -> np.ndarray:
    """Output code for every input code, from the lowest code up (int8: -128..127), of a delegated unary op:
    LOGISTIC, TANH, ELU (alpha 1 in TFLite), LEAKY_RELU (alpha), QUANTIZE (int8 -> int8 requantization)."""
    op = op.upper()
    lo, hi = _code_range(in_q)
    olo, ohi = _code_range(out_q)
    codes = np.arange(lo, hi + 1, dtype=np.int64)
    zi, zo = int(in_q.zero_point), int(out_q.zero_point)
    if op in ("LEAKY_RELU", "QUANTIZE"):
        x = codes - zi
        if op == "QUANTIZE":
            m = int(np.rint(float(F32(256.0) * F32(F32(in_q.scale) / F32(out_q.scale)))))
            y = _mulhrs_shift(x, m)
        else:
            pm, nm = lrelu_params(in_q, out_q, alpha)
            y = np.where(x > 0, _mulhrs_shift(x, pm), _mulhrs_shift(x, nm))
        return np.clip(_sat16(y + zo), olo, ohi).astype(np.int64)
    if op not in ("LOGISTIC", "TANH", "ELU"):
        raise ValueError(f"XNNPACK has no quantized table for {op}")
    x_scale, x_zp = F32(in_q.scale), F32(zi)
    inv, y_zp = F32(F32(1.0) / F32(out_q.scale)), F32(zo)
    fn = {"LOGISTIC": _sigmoid, "TANH": _tanh, "ELU": lambda v: _elu(v, 1.0 if alpha is None else alpha)}[op]
    out = []
    for c in codes.tolist():
        x = F32(F32(c) - x_zp) * x_scale          # reference-utils.h dequantize
        out.append(_reference_quantize(fn(x), inv, y_zp, olo, ohi))
    return np.asarray(out, dtype=np.int64)


# ------------------------------------------------------------------------------------------ quantize / dequantize


def quantize_xnnpack(x, out_q) -> np.ndarray:
    """QUANTIZE float32 -> int8 (f32-qs8-vcvt AVX2): clamp(rint(min(f32(x) * f32(1 / s), 32767)) + zp);
    NaN becomes +127 (vminps returns its second operand for NaN)."""
    inv = F32(F32(1.0) / F32(out_q.scale))
    with np.errstate(over="ignore", invalid="ignore"):
        v = np.asarray(x, dtype=np.float32) * inv
    v = np.where(np.isnan(v), F32(32767.0), np.minimum(v, F32(32767.0)))
    r = np.maximum(np.rint(v.astype(np.float64)), -32768.0)
    lo, hi = _code_range(out_q)
    return np.clip(r + int(out_q.zero_point), lo, hi).astype(np.int64)


def dequantize_xnnpack(codes, in_q) -> np.ndarray:
    """DEQUANTIZE int8 -> float32 (qs8-f32-vcvt AVX2): f32(code - zp) * f32(s)."""
    v = (np.asarray(codes, dtype=np.int64) - int(in_q.zero_point)).astype(np.float32)
    return v * F32(in_q.scale)
