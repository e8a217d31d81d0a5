"""TensorFlow Lite's integer arithmetic for the non-MAC ops, per kernel path, as exact models (numpy and Python
integers only: importable without TensorFlow or LiteRT).

Kernel paths (LiteRT 2.3.0 on x86-64): "reference" is OpResolverType.BUILTIN_REF (tflite/kernels/internal/
reference/...), "optimized" is BUILTIN_WITHOUT_DEFAULT_DELEGATES (the builtin kernels registered by default,
`kGenericOptimized`), "xnnpack" is the delegate (simulator/importers/tflite_xnnpack.py, another file). LiteRT's x86
build defines USE_NEON (optimized/neon_check.h: GCC with SSE4.1 includes NEON_2_SSE.h), so the optimized kernels run
their NEON code on x86 through that emulation: SIMD blocks of 8 or 16 elements, then a scalar tail. What each op
runs, read from the LiteRT sources (tflite/kernels/<op>.cc Prepare / Eval) and checked value by value against
LiteRT 2.3.0 (tests/test_tflite_arith.py on tests/tflite/op_fixtures/):

| op | reference | optimized (x86) |
|---|---|---|
| ADD (int8) | add.cc: inputs << 20, each MBQM(·, s_i / (2·max s)) (rounded twice), summed, MBQM(·, 2·max s / (2^20 · s_out)) | add.h AddElementwiseInt8, 16-element blocks: each input SRDHM(v << (20 + shift_i), m_i), rounded once; the tail (size mod 16) and the broadcast loops as the reference |
| SUB (int8) | sub.cc: as ADD, the second rescaled value subtracted | the same (reference_ops::Sub for int8) |
| MUL (int8) | mul.cc: MBQM(v_a · v_b, M), M = float32(float32(s_a · s_b) / s_out) | the same (its SIMD blocks use gemmlowp's exact RoundingDivideByPOT) |
| MEAN over H, W | reduce.cc QuantizedMeanOrSum: Σ codes − zp·N, multiplier (m << k) / N, shift − k (k = floor(log2 N)) | keep_dims and 4-D: optimized/integer_ops/mean.h: MBQM(Σ raw codes, float32(s_in / (N · s_out))) + zp_out − round(zp_in · s_in / s_out), the final shift rounding ties up on 16-channel blocks; otherwise the reference |
| SOFTMAX (8-bit) | softmax.h: gemmlowp fixed point, exp_on_negative_values (Q5.26), 1 / sum by Newton-Raphson | optimized_ops.h: float table expf(−s_in · d) (PopulateSoftmaxLookupTable), float32 sum, round(e / (sum · s_out)) + zp |
| LOGISTIC (8-bit) | LUTPopulate (common.h): float32 1 / (1 + expf(−x)), roundf | the same table |
| HARD_SWISH | reference_ops::HardSwish: int16 fixed point | the same (its SIMD code is `#ifdef __ARM_NEON` only) |
| QUANTIZE 8-bit -> 8-bit | Requantize: MBQM(code − zp_in, s_in / s_out (double)) + zp_out | 16-element blocks: MultiplyByQuantizedMultiplier4Rows, the final shift rounding ties up; the tail as the reference |
| QUANTIZE float -> int8 | roundf(x / float32(s)) half away + zp | 8-element blocks: rint(x · float32(1 / s)) half to even; the tail round(x / double(s)) half away |
| CONCATENATION int8 | equal scales and zero points required (Prepare): codes copied | the same |
| PAD int8 | the output zero point | the same |

MBQM is MultiplyByQuantizedMultiplier (common.cc, double rounding: SaturatingRoundingDoublingHighMul then
RoundingDivideByPOT). Fused activations clamp the output codes to `activation_range` (kernel_util.cc).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import math
from dataclasses import dataclass

import numpy as np

from ..errors import HwsimError

PATHS = ("reference", "optimized", "xnnpack")
UNARY_OPS = ("LOGISTIC", "HARD_SWISH", "QUANTIZE", "CONCATENATION")
ACTIVATIONS = ("NONE", "RELU", "RELU6", "RELU_N1_TO_1")
INT32_MIN, INT32_MAX = -(1 << 31), (1 << 31) - 1
f32 = np.float32


@dataclass(frozen=True)
class QParams:
    """A tensor's quantization as the flatbuffer stores it: scale (the float32 value), zero point, dtype."""
    scale: float
    zero_point: int
    dtype: str          # "int8" / "uint8"

    def code_range(self) -> tuple[int, int]:
        if self.dtype == "int8":
            return -128, 127
        if self.dtype == "uint8":
            return 0, 255
        raise HwsimError(f"TFLite tensor type {self.dtype!r} is not supported here; expected int8 or uint8")


def _check_path(path: str) -> None:
    if path not in ("reference", "optimized"):
        raise HwsimError(f"unknown TFLite kernel path {path!r}; expected one of {PATHS}")


# ---- gemmlowp / TFLite fixed-point primitives on int32 values held in int64 arrays --------------------------

def srdhm(a, b):
    """gemmlowp SaturatingRoundingDoublingHighMul (int32): round(a·b / 2^31), ties toward +inf (nudge, then C
    division truncating toward zero); INT32_MIN · INT32_MIN saturates to INT32_MAX."""
    a, b = np.broadcast_arrays(np.asarray(a, dtype=np.int64), np.asarray(b, dtype=np.int64))
    ab = a * b
    t = ab + np.where(ab >= 0, np.int64(1 << 30), np.int64(1 - (1 << 30)))
    high = np.where(t >= 0, t >> 31, -((-t) >> 31))
    return np.where((a == INT32_MIN) & (b == INT32_MIN), np.int64(INT32_MAX), high)


def rdbpot(x, exponent):
    """gemmlowp RoundingDivideByPOT: x / 2^exponent rounded to nearest, ties away from zero."""
    x = np.asarray(x, dtype=np.int64)
    mask = np.int64((1 << int(exponent)) - 1)
    threshold = (mask >> 1) + (x < 0)
    return (x >> int(exponent)) + ((x & mask) > threshold)


def quantize_multiplier(m: float) -> tuple[int, int]:
    """TFLite QuantizeMultiplier (quantization_util.cc): (q, shift), m ≈ q · 2^(shift − 31), q in [2^30, 2^31)."""
    m = float(m)
    if m == 0.0:
        return 0, 0
    if not math.isfinite(m) or m < 0:
        raise HwsimError(f"TFLite multiplier must be finite and >= 0, got {m!r}")
    q, shift = math.frexp(m)
    v = q * 2.0 ** 31
    q_fixed = math.floor(v) + (1 if v - math.floor(v) >= 0.5 else 0)     # TfLiteRound: half away from zero
    if q_fixed == 1 << 31:
        q_fixed //= 2
        shift += 1
    if shift < -31:
        return 0, 0
    return int(q_fixed), int(shift)


def mbqm(x, q: int, shift: int):
    """MultiplyByQuantizedMultiplier(int32 x, q, shift), double rounding (common.cc, not TFLITE_SINGLE_ROUNDING):
    RoundingDivideByPOT(SRDHM(x · 2^max(shift, 0), q), max(−shift, 0)). x · 2^shift wraps in int32 (as C)."""
    x = np.asarray(x, dtype=np.int64)
    if shift > 0:
        x = _wrap32(x << shift)
    return rdbpot(srdhm(x, q), max(-shift, 0))


def mbqm_neon(x, q: int, shift: int):
    """MultiplyByQuantizedMultiplier4Rows (common.h, USE_NEON, double rounding): vrshlq_s32(vqrdmulhq_s32(x ·
    2^max(shift, 0), q), min(shift, 0)): the final rounding right shift rounds ties up (toward +inf), not away
    from zero. LiteRT's x86 build runs its NEON code through NEON_2_SSE (optimized/neon_check.h: USE_NEON is
    defined with SSE4.1), so this is what the optimized kernels compute on x86 too."""
    x = np.asarray(x, dtype=np.int64)
    if shift > 0:
        x = _wrap32(x << shift)
    p = srdhm(x, q)
    e = max(-shift, 0)
    return p if e == 0 else (p + (1 << (e - 1))) >> e


def _wrap32(x):
    return ((np.asarray(x, dtype=np.int64) + (1 << 31)) & 0xFFFFFFFF) - (1 << 31)


def _srmpot(x, exponent: int):
    """gemmlowp SaturatingRoundingMultiplyByPOT<exponent> on int32."""
    x = np.asarray(x, dtype=np.int64)
    if exponent == 0:
        return x
    if exponent < 0:
        return rdbpot(x, -exponent)
    threshold = (1 << (31 - exponent)) - 1
    return np.where(x > threshold, INT32_MAX, np.where(x < -threshold, INT32_MIN, x << exponent))


def round_half_away_f32(x):
    """roundf / std::round on float32: half away from zero (exact: floor(|x| + 0.5) on the float32 value)."""
    x = np.asarray(x, dtype=np.float32).astype(np.float64)
    return np.sign(x) * np.floor(np.abs(x) + 0.5)


# ---- libm's float32 functions (what the C++ kernels call) --------------------------------------------------

_LIBM = None


def _libm():
    global _LIBM
    if _LIBM is None:
        try:
            lib = ctypes.CDLL(ctypes.util.find_library("m") or "libm.so.6")
            lib.expf.restype, lib.expf.argtypes = ctypes.c_float, [ctypes.c_float]
            _LIBM = lib
        except (OSError, AttributeError):
            _LIBM = False
    return _LIBM


def expf(x) -> np.ndarray:
    """The C library's expf on each float32 value (std::exp of a float), else exp in double rounded to float32."""
    x = np.asarray(x, dtype=np.float32)
    lib = _libm()
    if lib:
        return np.array([lib.expf(float(v)) for v in x.ravel()], dtype=np.float32).reshape(x.shape)
    with np.errstate(over="ignore"):
        return np.exp(x.astype(np.float64)).astype(np.float32)


# ---- fused activations ----------------------------------------------------------------------------------------

def activation_range(activation: str, out_q: QParams) -> tuple[int, int]:
    """CalculateActivationRangeQuantized (kernel_util.cc): the clamp in output codes. Each bound is
    zp + (int)roundf(float32(f / scale)) (half away from zero), intersected with the type's range."""
    lo, hi = out_q.code_range()
    if activation in (None, "NONE"):
        return lo, hi

    def q(f):
        return out_q.zero_point + int(round_half_away_f32(f32(f32(f) / f32(out_q.scale))))
    if activation == "RELU":
        return max(lo, q(0.0)), hi
    if activation == "RELU6":
        return max(lo, q(0.0)), min(hi, q(6.0))
    if activation == "RELU_N1_TO_1":
        return max(lo, q(-1.0)), min(hi, q(1.0))
    raise HwsimError(f"unsupported fused activation {activation!r}; expected one of {ACTIVATIONS}")


# ---- unary ops as tables ---------------------------------------------------------------------------------

def _codes(q: QParams) -> np.ndarray:
    lo, hi = q.code_range()
    return np.arange(lo, hi + 1, dtype=np.int64)


def logistic_table(in_q: QParams, out_q: QParams) -> np.ndarray:
    """LUTPopulate<int8/uint8> (common.h) with 1.0f / (1.0f + std::exp(-x)) (activations.cc SigmoidPrepare),
    all in float32: dequantized = s_in · float(code − zp), rescaled = roundf(y · float32(1 / s_out)),
    code = (int)(rescaled + float(zp_out)), clamped."""
    c = _codes(in_q)
    deq = f32(in_q.scale) * (c - in_q.zero_point).astype(np.float32)
    with np.errstate(over="ignore"):
        y = f32(1.0) / (f32(1.0) + expf(-deq))
    inv = f32(1.0) / f32(out_q.scale)
    rescaled = round_half_away_f32(y * inv).astype(np.float32)
    q = (rescaled + f32(out_q.zero_point)).astype(np.float64)
    lo, hi = out_q.code_range()
    return np.clip(np.trunc(q), lo, hi).astype(np.int64)


def _srdhm16(a, b):
    """gemmlowp SaturatingRoundingDoublingHighMul on int16: (a·b + nudge) / 2^15 truncated; -2^15·-2^15 -> 2^15-1."""
    a, b = np.broadcast_arrays(np.asarray(a, dtype=np.int64), np.asarray(b, dtype=np.int64))
    ab = a * b
    t = ab + np.where(ab >= 0, 1 << 14, 1 - (1 << 14))
    high = np.where(t >= 0, t >> 15, -((-t) >> 15))
    return np.where((a == -32768) & (b == -32768), 32767, _wrap16(high))


def _wrap16(x):
    return ((np.asarray(x, dtype=np.int64) + (1 << 15)) & 0xFFFF) - (1 << 15)


def hard_swish_params(in_q: QParams, out_q: QParams) -> dict:
    """HardSwishPrepare (activations.cc): float32 multipliers, QuantizeMultiplier, then rounded to int16
    (DownScaleInt32ToInt16Multiplier, common.h)."""
    hires = f32(f32(1.0 / 128.0) * f32(in_q.scale))
    reluish_scale = f32(3.0 / 32768.0)

    def to16(m):
        q, e = quantize_multiplier(float(m))
        return (32767 if q >= INT32_MAX - (1 << 15) else (q + (1 << 15)) >> 16), e
    out_m16, out_e = to16(f32(hires / f32(out_q.scale)))
    rel_m16, rel_e = to16(f32(hires / reluish_scale))
    if out_e > 0:
        raise HwsimError("TFLite HARD_SWISH needs s_in / 128 < s_out (its output multiplier exponent must be <= 0)")
    return {"out_m16": out_m16, "out_e": out_e, "rel_m16": rel_m16, "rel_e": rel_e}


def hard_swish_table(in_q: QParams, out_q: QParams) -> np.ndarray:
    """reference_ops::HardSwish (reference/hard_swish.h) on every input code, int16 fixed point; the optimized
    kernel runs the same code on x86 (its NEON part only on ARM)."""
    p = hard_swish_params(in_q, out_q)
    v = _wrap16(_codes(in_q) - in_q.zero_point)
    hires = _wrap16(v * 128)
    pre_out = _srdhm16(hires, p["out_m16"])
    rel = hires
    if p["rel_e"] > 0:
        rel = np.clip(rel * (1 << (p["rel_e"] - 1)), -32768, 32767)       # SaturatingLeftShift
    rel = _srdhm16(rel, p["rel_m16"])
    if p["rel_e"] > 0:
        rel = np.clip(rel * 2, -32768, 32767)
    if p["rel_e"] < 0:
        rel = rdbpot(rel, -p["rel_e"])
    rel = _wrap16((rel + (1 << 15)) >> 1)
    ab = rel * pre_out                                                    # SaturatingDoublingHighMul: no nudge
    pre = np.where((rel == -32768) & (pre_out == -32768), 32767, _wrap16(np.where(ab >= 0, ab >> 15, -((-ab) >> 15))))
    out = _wrap16(rdbpot(pre, -p["out_e"]) + out_q.zero_point)
    lo, hi = out_q.code_range()
    return np.clip(out, lo, hi).astype(np.int64)


def requantize_table(in_q: QParams, out_q: QParams, neon: bool = False) -> np.ndarray:
    """QUANTIZE between 8-bit types (quantize.cc Prepare: QuantizeMultiplier(double(s_in) / double(s_out))):
    MBQM(code − zp_in) + zp_out, clamped (reference/requantize.h; the uint8 <-> int8 fast path, xor 0x80 when the
    scales are equal and the zero points differ by 128, gives the same codes). neon=True: the optimized
    Requantize<In, Out> (optimized_ops.h) on its blocks of 16 elements, MultiplyByQuantizedMultiplier4Rows
    (`mbqm_neon`); its scalar tail (the last size mod 16 elements) computes the reference codes."""
    q, shift = quantize_multiplier(float(in_q.scale) / float(out_q.scale))
    out = (mbqm_neon if neon else mbqm)(_codes(in_q) - in_q.zero_point, q, shift) + out_q.zero_point
    lo, hi = out_q.code_range()
    return np.clip(out, lo, hi).astype(np.int64)


def concat_requant_table(in_q: QParams, out_q: QParams, fma: bool = False) -> np.ndarray:
    """uint8 CONCATENATION of an input whose scale or zero point differs from the output's (concatenation.cc:
    reference_ops::ConcatenationWithScaling on both paths; int8 CONCATENATION refuses unequal scales): scale =
    float32(s_in · float32(1 / s_out)), bias = float32(−zp_in · scale), code = roundf(float32(code · scale + bias))
    (half away) + zp_out, clamped to [0, 255]. fma: the product and sum fused (one rounding)."""
    if (in_q.zero_point, f32(in_q.scale)) == (out_q.zero_point, f32(out_q.scale)):
        return _codes(in_q)                                      # memcpy
    scale = f32(f32(in_q.scale) * (f32(1.0) / f32(out_q.scale)))
    bias = f32(f32(-in_q.zero_point) * scale)
    c = _codes(in_q)
    if fma:
        y = (c.astype(np.float64) * float(scale) + float(bias)).astype(np.float32)   # exact product, one rounding
    else:
        y = c.astype(np.float32) * scale + bias
    out = round_half_away_f32(y) + out_q.zero_point
    lo, hi = out_q.code_range()
    return np.clip(out, lo, hi).astype(np.int64)


def unary_table(op: str, path: str, in_q: QParams, out_q: QParams) -> np.ndarray:
    """Output code for each input code from the lowest up (256 entries for 8-bit) of the unary op `op` on the
    kernel path `path` ("reference", "optimized", "xnnpack")."""
    if path == "xnnpack":
        from .tflite_xnnpack import unary_table_xnnpack
        return unary_table_xnnpack(op, in_q, out_q)
    _check_path(path)
    if op == "LOGISTIC":
        return logistic_table(in_q, out_q)      # both paths build the same LUT in SigmoidPrepare
    if op == "HARD_SWISH":
        return hard_swish_table(in_q, out_q)
    if op == "QUANTIZE":
        return requantize_table(in_q, out_q, neon=path == "optimized")
    if op == "CONCATENATION":       # one input of a uint8 concatenation, requantized to the output
        return concat_requant_table(in_q, out_q)
    raise HwsimError(f"TFLite op {op!r} is not a supported unary op; expected one of {UNARY_OPS}")


def quantize_float(x, path: str, out_q: QParams) -> np.ndarray:
    """QUANTIZE float32 -> int8/uint8 of a flat tensor, element by element in memory order.
    reference (reference/quantize.h AffineQuantize): roundf(x / float(scale)) half away from zero, + zp.
    optimized int8 (optimized_ops.h AffineQuantize<int8_t>, USE_NEON through NEON_2_SSE on x86): the blocks of 8
    elements compute rint(x · float32(1.0f / double(scale))) half to even (vcvtnq_s32_f32 = cvtps2dq), the tail
    (the last size mod 8 elements) round(x / double(scale)) half away from zero."""
    _check_path(path)
    x = np.asarray(x, dtype=np.float32)
    flat = x.ravel()
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        if path == "reference" or out_q.dtype != "int8":
            r = round_half_away_f32(flat / f32(out_q.scale))
        else:
            r = np.sign(flat) * np.floor(np.abs(flat.astype(np.float64) / float(out_q.scale)) + 0.5)
            body = flat.size // 8 * 8
            r[:body] = np.rint(flat[:body] * f32(1.0 / float(out_q.scale))).astype(np.float64)
    lo, hi = out_q.code_range()
    r = np.clip(np.nan_to_num(r, nan=0.0, posinf=2.0 ** 40, neginf=-2.0 ** 40), -2.0 ** 40, 2.0 ** 40)
    return np.clip(r + out_q.zero_point, lo, hi).astype(np.int64).reshape(x.shape)


# ---- binary ops ---------------------------------------------------------------------------------------------

def add_params(in_qs, out_q: QParams, left_shift: int = 20) -> dict:
    """add.cc / sub.cc Prepare (8-bit): multipliers s_i / (2·max s) and 2·max s / (2^20 · s_out), in double."""
    twice_max = 2.0 * max(float(q.scale) for q in in_qs)
    ins = [quantize_multiplier(float(q.scale) / twice_max) for q in in_qs]
    out = quantize_multiplier(twice_max / ((1 << left_shift) * float(out_q.scale)))
    return {"left_shift": left_shift, "inputs": ins, "output": out}


def add_codes(a, b, in_qs, out_q: QParams, activation="NONE", subtract=False, input_rounding="double"):
    """ADD / SUB of int8 codes (broadcasting as numpy). input_rounding "double": reference_integer_ops AddFunc /
    reference_ops SubElementwise, each input MultiplyByQuantizedMultiplierSmallerThanOneExp(v · 2^20) (SRDHM then
    RoundingDivideByPOT). "single": optimized_integer_ops AddElementwiseInt8 on its blocks of 16 elements (USE_NEON,
    NEON_2_SSE on x86): vqrdmulh(v · 2^(20 + shift_i), q_i), the input shift folded into the left shift, so each
    input is rounded once. The output stage is the same (vqrdmulh, then gemmlowp's RoundingDivideByPOT)."""
    p = add_params(in_qs, out_q)
    if input_rounding == "single":
        scaled = [srdhm((np.asarray(c, dtype=np.int64) - q.zero_point) << (p["left_shift"] + m[1]), m[0])
                  for c, q, m in zip((a, b), in_qs, p["inputs"])]
    elif input_rounding == "double":
        scaled = [mbqm((np.asarray(c, dtype=np.int64) - q.zero_point) << p["left_shift"], *m)
                  for c, q, m in zip((a, b), in_qs, p["inputs"])]
    else:
        raise HwsimError(f"input_rounding must be 'double' or 'single', got {input_rounding!r}")
    raw = scaled[0] - scaled[1] if subtract else scaled[0] + scaled[1]
    out = mbqm(raw, *p["output"]) + out_q.zero_point
    return np.clip(out, *activation_range(activation, out_q)).astype(np.int64)


def mul_multiplier(in_qs, out_q: QParams) -> float:
    """mul.cc Prepare: `input1->params.scale * input2->params.scale / output->params.scale` is float arithmetic."""
    return float(f32(f32(f32(in_qs[0].scale) * f32(in_qs[1].scale)) / f32(out_q.scale)))


def mul_codes(a, b, in_qs, out_q: QParams, activation="NONE") -> np.ndarray:
    """MUL of int8 codes (reference_integer_ops MulElementwise): MBQM(v_a · v_b) + zp_out, both paths."""
    q, shift = quantize_multiplier(mul_multiplier(in_qs, out_q))
    prod = (np.asarray(a, dtype=np.int64) - in_qs[0].zero_point) * (np.asarray(b, dtype=np.int64) - in_qs[1].zero_point)
    out = mbqm(prod, q, shift) + out_q.zero_point
    return np.clip(out, *activation_range(activation, out_q)).astype(np.int64)


# ---- MEAN -------------------------------------------------------------------------------------------------

def mean_reference_multiplier(in_q: QParams, out_q: QParams, n: int) -> tuple[int, int]:
    """QuantizedMeanOrSum (reference/reduce.h): QuantizeMultiplier(double(s_in) / double(s_out)), then
    k = min(floor(log2 n), 32, 31 + shift), q' = (q << k) / n (integer division), shift' = shift − k.
    q' may lie below 2^30: no float multiplier gives this pair through QuantizeMultiplier."""
    q, shift = quantize_multiplier(float(in_q.scale) / float(out_q.scale))
    k = min(int(n).bit_length() - 1, 32, 31 + shift)
    return int((q << k) // n), shift - k


def mean_optimized_params(in_q: QParams, out_q: QParams, n: int) -> tuple[int, int, int]:
    """optimized_integer_ops::Mean (optimized/integer_ops/mean.h): (q, shift) of float32(s_in / (float(n) ·
    s_out)) and bias = zp_out − (int)(t ± 0.5f), t = float32(zp_in · s_in) / s_out in float32."""
    real = f32(f32(in_q.scale) / f32(f32(n) * f32(out_q.scale)))
    q, shift = quantize_multiplier(float(real))
    t = f32(f32(f32(in_q.zero_point) * f32(in_q.scale)) / f32(out_q.scale))
    t = f32(t + f32(0.5)) if t > 0 else f32(t - f32(0.5))
    return q, shift, out_q.zero_point - int(np.trunc(float(t)))


def mean_uses_optimized_kernel(path: str, keep_dims: bool, rank: int, in_q: QParams) -> bool:
    """reduce.cc EvalMean: the optimized int8 kernel runs only for keep_dims, 4-D input, axes {1, 2}."""
    return path == "optimized" and keep_dims and rank == 4 and in_q.dtype == "int8"


def mean_codes(codes_nhwc, path: str, in_q: QParams, out_q: QParams, keep_dims: bool = True) -> np.ndarray:
    """MEAN over H and W of [N, H, W, C] codes -> [N, C] output codes (keep_dims only changes the shape).
    The optimized kernel (keep_dims, 4-D) rounds its final shift half up (`mbqm_neon`) on the channels of its
    NEON blocks of 16 (channels [0, 16·floor(C / 16)) with one thread: optimized/integer_ops/mean.h splits the
    depth among threads, `C / 8` of them at most, so with more threads the blocks move) and away from zero on the
    rest (the scalar loop)."""
    _check_path(path)
    x = np.asarray(codes_nhwc, dtype=np.int64)
    n = x.shape[1] * x.shape[2]
    total = x.sum(axis=(1, 2))                                  # int32 sum of the raw codes
    lo, hi = out_q.code_range()
    if mean_uses_optimized_kernel(path, keep_dims, 4, in_q):
        q, shift, bias = mean_optimized_params(in_q, out_q, n)
        neon_channels = x.shape[3] // 16 * 16            # one thread: NEON blocks of 16 channels, then scalar
        out = mbqm(total, q, shift) + bias
        out[:, :neon_channels] = mbqm_neon(total[:, :neon_channels], q, shift) + bias
    else:
        q, shift = mean_reference_multiplier(in_q, out_q, n)
        out = mbqm(total - in_q.zero_point * n, q, shift) + out_q.zero_point
    return np.clip(out, lo, hi).astype(np.int64)


# ---- SOFTMAX ----------------------------------------------------------------------------------------------

_SCALED_DIFF_INTEGER_BITS = 5          # softmax.cc / reference softmax.h: Q5.26 exp input
_ACCUM_INTEGER_BITS = 12


def softmax_reference_params(in_q: QParams, beta: float = 1.0) -> tuple[int, int, int]:
    """PreprocessSoftmaxScaling (quantization_util.cc): min(β · s_in · 2^26, 2^31 − 1) in double,
    QuantizeMultiplierGreaterThanOne; diff_min = −floor(31 · 2^26 / 2^shift) (CalculateInputRadius)."""
    real = min(float(beta) * float(in_q.scale) * float(1 << (31 - _SCALED_DIFF_INTEGER_BITS)), float((1 << 31) - 1))
    q, shift = quantize_multiplier(real)
    radius = math.floor(((1 << _SCALED_DIFF_INTEGER_BITS) - 1) * float(1 << (31 - _SCALED_DIFF_INTEGER_BITS))
                        / float(1 << shift))
    return q, shift, -radius


def _exp_on_interval(a):
    """gemmlowp exp_on_interval_between_negative_one_quarter_and_0_excl (Q0.31)."""
    constant_term, one_third = 1895147668, 715827883
    x = _wrap32(a + (1 << 28))
    x2 = srdhm(x, x)
    x3 = srdhm(x2, x)
    x4 = srdhm(x2, x2)
    x4_over_4 = rdbpot(x4, 2)
    poly = rdbpot(_wrap32(srdhm(_wrap32(x4_over_4 + x3), one_third) + x2), 1)
    return _wrap32(constant_term + srdhm(constant_term, _wrap32(x + poly)))


_EXP_BARREL = ((-2, 1672461947), (-1, 1302514674), (0, 790015084), (1, 290630308), (2, 39332535), (3, 720401),
               (4, 242))


def exp_on_negative_values(a, integer_bits: int = _SCALED_DIFF_INTEGER_BITS):
    """gemmlowp exp_on_negative_values for a Q(integer_bits).(31 − integer_bits) input: Q0.31 output."""
    a = np.asarray(a, dtype=np.int64)
    frac = 31 - integer_bits
    quarter = 1 << (frac - 2)
    a_mod = (a & (quarter - 1)) - quarter
    result = _exp_on_interval(_srmpot(a_mod, integer_bits))          # Rescale<0>
    remainder = _wrap32(a_mod - a)
    for exponent, mult in _EXP_BARREL:
        if integer_bits > exponent:
            bit = (remainder >> (frac + exponent)) & 1
            result = np.where(bit == 1, srdhm(result, mult), result)
    if integer_bits > 5:
        result = np.where(a < -(1 << (36 - integer_bits)), 0, result)
    return np.where(a == 0, INT32_MAX, result)


def one_over_one_plus_x_for_x_in_0_1(a):
    """gemmlowp one_over_one_plus_x_for_x_in_0_1 (Q0.31 in and out), Newton-Raphson in Q2.29."""
    a = np.asarray(a, dtype=np.int64)
    s = a + INT32_MAX
    half_den = np.where(s >= 0, (s + 1) // 2, -((-(s - 1)) // 2))    # RoundingHalfSum: (sum + sign) / 2, C division
    x = _wrap32(1515870810 + srdhm(half_den, -1010580540))
    one_f2 = 1 << 29
    for _ in range(3):
        hdx = srdhm(half_den, x)
        x = _wrap32(x + _srmpot(srdhm(x, _wrap32(one_f2 - hdx)), 2))
    return _srmpot(x, 1)


def _clz32(x):
    """CountLeadingZeros of uint32 values (x > 0): 32 − bit length, from the exact float64 exponent."""
    x = np.asarray(x, dtype=np.int64) & 0xFFFFFFFF
    return 32 - np.frexp(x.astype(np.float64))[1].astype(np.int64)


def softmax_reference(codes, in_q: QParams, out_q: QParams, beta: float = 1.0) -> np.ndarray:
    """reference_ops::Softmax (reference/softmax.h) for 8-bit input and output over the last axis of [N, D]."""
    x = np.asarray(codes, dtype=np.int64)
    q, shift, diff_min = softmax_reference_params(in_q, beta)
    out_lo, out_hi = out_q.code_range()
    diff = x - x.max(axis=-1, keepdims=True)
    ok = diff >= diff_min
    rescaled = srdhm(_wrap32(diff << shift), q)                    # MultiplyByQuantizedMultiplierGreaterThanOne
    e = exp_on_negative_values(rescaled)
    total = np.where(ok, rdbpot(e, _ACCUM_INTEGER_BITS), 0).sum(axis=-1, keepdims=True)   # Rescale<12>
    total = _wrap32(total)
    hpo = _clz32(total)
    bits_over_unit = _ACCUM_INTEGER_BITS - hpo
    shifted_minus_one = _wrap32(((total << hpo) & 0xFFFFFFFF) - (1 << 31))
    scale = one_over_one_plus_x_for_x_in_0_1(shifted_minus_one)
    exponent = bits_over_unit + 31 - 8
    if np.any((exponent < 0) | (exponent > 31)):
        raise HwsimError("TFLite softmax: reciprocal exponent out of [0, 31] (TFLITE_CHECK)")
    prod = srdhm(scale, e)
    unsat = np.empty_like(prod)
    for ex in np.unique(exponent):
        rows = np.broadcast_to(exponent == ex, prod.shape)
        unsat[rows] = rdbpot(prod[rows], int(ex))
    out = unsat + out_lo
    return np.where(ok, np.clip(out, out_lo, out_hi), out_lo).astype(np.int64)


def softmax_table(in_q: QParams, beta: float = 1.0) -> np.ndarray:
    """PopulateSoftmaxLookupTable (optimized_ops.h): table[255 − d] = expf(float32(−s_in · β) · d), d = 0..255."""
    scale = f32(f32(-f32(in_q.scale)) * f32(beta))
    d = np.arange(256, dtype=np.float32)
    table = np.empty(256, dtype=np.float32)
    table[255 - np.arange(256)] = expf(scale * d)
    return table


def softmax_optimized(codes, in_q: QParams, out_q: QParams, beta: float = 1.0) -> np.ndarray:
    """optimized_ops::Softmax<In, Out> (optimized_ops.h, x86 build without TFLITE_SOFTMAX_USE_UINT16_LUT): the
    float table read at 255 − max + code, summed in float32 in order, inv = 1 / (sum · s_out) in float32, each
    output roundf(e · inv) + zp (int8; uint8 output: (int)(e · inv + 0.5f)), clamped."""
    x = np.asarray(codes, dtype=np.int64)
    table = softmax_table(in_q, beta)
    e = table[255 - x.max(axis=-1, keepdims=True) + x]
    total = np.zeros(e.shape[:-1], dtype=np.float32)
    for j in range(e.shape[-1]):
        total = total + e[..., j]
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        inv = f32(1.0) / (total * f32(out_q.scale))
        prob = e * inv[..., None]
        if out_q.dtype == "uint8":
            q = np.trunc((prob + f32(0.5)).astype(np.float64))
        else:
            q = round_half_away_f32(prob) + out_q.zero_point
    lo, hi = out_q.code_range()
    return np.clip(np.nan_to_num(q), lo, hi).astype(np.int64)


def softmax_codes(codes, path: str, in_q: QParams, out_q: QParams, beta: float = 1.0) -> np.ndarray:
    _check_path(path)
    fn = softmax_reference if path == "reference" else softmax_optimized
    return fn(codes, in_q, out_q, beta)


# ---- what the importer writes --------------------------------------------------------------------------------

def layer_spec(op: str, path: str, in_qs, out_q: QParams, options: dict | None = None) -> dict:
    """The hwsim layer (op, attrs) that reproduces TFLite op `op` on kernel path `path` (reference / optimized).
    Encodings come from the tensors' QParams (the importer's job); a `lut` layer's table is `unary_table`.
    options: "activation" (fused), "broadcast" (ADD: the inputs' shapes differ), "keep_dims" / "rank" (MEAN),
    "beta" (SOFTMAX), "padding" (PAD)."""
    options = options or {}
    _check_path(path)
    act = options.get("activation", "NONE")
    clip = None
    if act not in (None, "NONE"):
        lo, hi = activation_range(act, out_q)
        clip = [lo - out_q.zero_point, hi - out_q.zero_point]         # hwsim's clip is in output value units
    if op in ("ADD", "SUB"):
        attrs = {"requant": "fixed_double", "rescale": "ratio"}
        if op == "SUB":
            attrs["subtract"] = True         # sub.cc: int8 SUB runs reference_ops::Sub on both paths
        elif path == "optimized" and not options.get("broadcast", False):
            # AddElementwiseInt8's SIMD blocks (its scalar tail, the last size mod 16 elements, rounds twice)
            attrs["input_rounding"] = "single"
        if clip is not None:
            attrs["clip"] = clip
        return {"op": "add", "attrs": attrs}
    if op == "MUL":
        attrs = {"requant": "tflite"}
        if clip is not None:
            attrs["clip"] = clip
        return {"op": "mul", "attrs": attrs}
    if op in UNARY_OPS and op != "CONCATENATION":
        return {"op": "lut", "attrs": {}, "table": unary_table(op, path, in_qs[0], out_q)}
    if op == "SOFTMAX":
        if float(options.get("beta", 1.0)) != 1.0:
            raise HwsimError("TFLite SOFTMAX with beta != 1 is not supported")
        return {"op": "softmax", "attrs": {"arithmetic": f"tflite_{path}"}}
    if op == "MEAN":
        kernel = "optimized" if mean_uses_optimized_kernel(path, bool(options.get("keep_dims", True)),
                                                           int(options.get("rank", 4)), in_qs[0]) else "reference"
        return {"op": "avgpool", "attrs": {"global": True, "rounding": f"tflite_mean_{kernel}"}}
    if op == "CONCATENATION":
        # int8: equal encodings, the codes concatenated. uint8 inputs of another scale / zero point go through
        # a `lut` each first (unary_table("CONCATENATION", path, in_q, out_q)), then the concat.
        return {"op": "concat", "attrs": {},
                "input_tables": [None if (q.zero_point, f32(q.scale)) == (out_q.zero_point, f32(out_q.scale))
                                 else concat_requant_table(q, out_q) for q in in_qs]}
    if op == "PAD":
        # PAD / PADV2 of int8 codes writes the output zero point (= the input's: TFLite requires equal
        # quantization); options "padding" [top, left, bottom, right] of H, W
        return {"op": "pad", "attrs": {"padding": list(options.get("padding", [0, 0, 0, 0])),
                                       "pad_code": int(out_q.zero_point)}}
    raise HwsimError(f"no hwsim layer for TFLite op {op!r}")
