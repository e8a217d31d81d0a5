"""Requantizer: accumulator -> rounded value in the output's integer domain (before zero point and clamp).

`requantize(acc, multiplier, mode)` models the multiplier + rounding-shift block of a conv / dense layer.
`multiplier` is the real factor s_in * s_w / s_out, one value or one per output channel (broadcast along
`channel_axis`). The zero point and the clamp to the output range come after this block (the engine).

Modes (each reproduces one runtime bit for bit):

- "float32"  ONNX Runtime (MLAS QLinearConv / QLinearMatMul): `float32(acc) * float32(multiplier)` in IEEE
  single precision, rounded half to even. The int -> float32 conversion itself rounds when |acc| > 2^24,
  exactly as ORT does; that is kept. ORT clamps the float product to the output range before rounding; since
  the range bounds are integers and rounding is monotone, clamp-then-round equals round-then-clamp, so this
  block returns the unclamped rounded value, saturated to [-2^62, 2^62] (which any later int32-or-narrower
  clamp cannot tell apart; it also absorbs a float32 overflow to +-inf).
- "float64"  ONNX reference evaluator: `float64(acc) * multiplier` in double precision, round half to even,
  saturated to [-2^62, 2^62] the same way.
- "fixed_double"  TFLite default: `(q, shift) = quantize_multiplier(multiplier)`, then
  `MultiplyByQuantizedMultiplier(x, q, shift) =
      RoundingDivideByPOT(SaturatingRoundingDoublingHighMul(x * 2^max(shift, 0), q), max(-shift, 0))`
  with gemmlowp's definitions:
      SRDHM(a, b): ab = a*b (64 bit); nudge = 2^30 if ab >= 0 else 1 - 2^30;
                   (ab + nudge) / 2^31 truncated toward zero (C division); a == b == INT32_MIN -> INT32_MAX.
                   (= round(a*b / 2^31) with ties toward +inf.)
      RDBPOT(x, e): mask = 2^e - 1; remainder = x & mask; threshold = (mask >> 1) + (x < 0);
                   (x >> e) + (remainder > threshold)       (= x / 2^e rounded, ties away from zero)
  The accumulator is an int32 in TFLite. Out-of-contract values (|acc| needing more than 32 bits, or
  `acc * 2^shift` overflowing int32 when the multiplier is >= 1, where C++ would be undefined behaviour)
  raise HwsimError by default; with `int32_overflow="saturate"` they saturate to INT32_MIN / INT32_MAX instead
  (first the acc, then the left-shifted acc). Note the rounding this gives: with shift >= 0 (multiplier in
  [0.5, inf)) only SRDHM rounds, ties toward +inf; with shift < 0 the result is rounded twice.
- "fixed_single"  TFLite built with TFLITE_SINGLE_ROUNDING: `(q, shift) = quantize_multiplier(m,
  single_rounding=True)` (shift clamped to <= 30 as TFLite does), total_shift = 31 - shift in [1, 62],
  result = (x*q + 2^(total_shift-1)) >> total_shift, i.e. x*q / 2^total_shift rounded half up (toward +inf).
  No int64 overflow: |x| <= 2^31, 0 <= q < 2^31, so |x*q| < 2^62, and the rounding term is <= 2^61,
  hence |x*q + round| < 2^62 + 2^61 < 2^63. The acc must fit int32 (same `int32_overflow` policy); a result
  outside int32 (multiplier >= ~1) raises, or saturates with "saturate" (TFLite's static_cast would wrap).
- "shift"  power-of-two scale: the multiplier must be exactly 2^-s (s may be negative: a left shift);
  result = round_shift(acc, s, "half_up") for s >= 0, acc * 2^-s for s < 0 (HwsimError if that leaves int64).
  Any multiplier that is not an exact power of two -> HwsimError naming the value.

- "fixed_double_ruy"  TFLite's optimized x86 kernels for CONV_2D and FULLY_CONNECTED (cpu_backend_gemm -> ruy's
  AVX / AVX2 / AVX-512 kernels, ruy/kernel_avx2_fma.cc `apply_multiplier` and `rounding_right_shift`; the custom
  GEMV of tflite/kernels/cpu_backend_gemm_custom_gemv.h, vqrdmulhq_s32 then vrshlq_s32, computes the same):
  `(q, shift) = quantize_multiplier(multiplier)`, x = acc * 2^max(shift, 0) (int32, as fixed_double),
  h = floor((x*q + 2^30) / 2^31) (= SRDHM above: q > 0 never saturates), then the final right shift by
  e = max(-shift, 0) rounds half UP: floor((h + 2^(e-1)) / 2^e). ruy adds the nudge in int32 and, where
  h + nudge would overflow, returns 2^(31-e): that is exactly the floor above, so no overflow rule remains.
  It differs from fixed_double only on negative ties of the final shift (-2.5 -> -2, not -3).
  Same int32 contract and `int32_overflow` policy as fixed_double (ruy's own left shift would wrap).
- "fixed_double_blocks8"  TFLite's optimized DEPTHWISE_CONV_2D on x86 (optimized/integer_ops/depthwise_conv.h
  DepthwiseConvGeneral -> optimized_ops.h Quantize: NEON code, on x86 through NEON_2_SSE, for every full block of
  8 output channels, vqrdmulhq_s32 + vrshlq_s32; the C mod 8 channels left over run MultiplyByQuantizedMultiplier):
  with C channels along `channel_axis`, channel c < C - C mod 8 is requantized as fixed_double_ruy, the others as
  fixed_double. (x86 never takes the 3x3 depthwise kernels: they are compiled for aarch64 only.)
- "float64_away"  TFLite's reference FULLY_CONNECTED (reference/integer_ops/fully_connected.h, the float-scale
  variants): `static_cast<int32_t>(round(static_cast<double>(acc) * effective_scale))` -- one IEEE double multiply,
  then C `round` (half away from zero). The acc is an int32 (same `int32_overflow` policy); a rounded result
  outside int32 (C++ undefined behaviour) raises, or saturates with "saturate".

`quantize_multiplier(m)` is TFLite's QuantizeMultiplier: `q, e = frexp(m)`, `q_fixed = round(q * 2^31)`
(half away from zero, std::round), `q_fixed == 2^31 -> (2^30, e + 1)`, `e < -31 -> (0, 0)`; with
`single_rounding=True` also `e > 30 -> (2^31 - 1, 30)`. Real multiplier ~ q_fixed * 2^(e - 31).
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np

from simulator.errors import HwsimError
from simulator.units.rounding import as_int64, round_shift

REQUANT_MODES = ("float32", "float64", "fixed_double", "fixed_single", "shift", "fixed_double_ruy",
                 "fixed_double_blocks8", "float64_away")
FIXED_DOUBLE_MODES = ("fixed_double", "fixed_double_ruy", "fixed_double_blocks8")   # same multiply, final shifts differ
BLOCK_CHANNELS = 8          # fixed_double_blocks8: channels in full blocks of 8 round half up
INT32_MIN = -(1 << 31)
INT32_MAX = (1 << 31) - 1
FLOAT_SATURATION = 1 << 62          # the float modes' rounded result is saturated to +-2^62


def _check_multiplier(m) -> float:
    try:
        mf = float(m)
    except (TypeError, ValueError):
        raise HwsimError(f"requantization multiplier must be a number, got {m!r}") from None
    if not math.isfinite(mf) or mf <= 0.0:
        raise HwsimError(f"requantization multiplier must be finite and > 0, got {mf!r}")
    return mf


def quantize_multiplier(m: float, single_rounding: bool = False) -> tuple[int, int]:
    """TFLite QuantizeMultiplier: (q_fixed, shift) with m ~ q_fixed * 2^(shift - 31), q_fixed in [2^30, 2^31)."""
    m = _check_multiplier(m)
    q, e = math.frexp(m)                       # m = q * 2^e, q in [0.5, 1)
    v = q * 2.0 ** 31                          # exact in double (a power-of-two scaling)
    fl = math.floor(v)
    q_fixed = fl + (1 if v - fl >= 0.5 else 0)  # std::round: half away from zero (v > 0)
    if q_fixed == 1 << 31:
        q_fixed //= 2
        e += 1
    if e < -31:
        return 0, 0
    if single_rounding and e > 30:
        return (1 << 31) - 1, 30
    return int(q_fixed), int(e)


def multiplier_fault(m: float, mode: str) -> str | None:
    """Why requantizing with multiplier `m` in `mode` fails for every accumulator other than 0 (and -1), from
    the same fixed-point form `requantize` uses; None when some non-zero accumulator goes through."""
    if mode in FIXED_DOUBLE_MODES:
        _, shift = quantize_multiplier(m)
        if shift >= 31:    # acc * 2^shift must fit int32: only 0 (and -1 at shift 31) do
            return (f"{mode} shifts the accumulator left by {shift} bits before its int32 multiply: "
                    "every non-zero accumulator overflows int32")
    elif mode == "shift":
        q, e = math.frexp(_check_multiplier(m))
        if q == 0.5 and e - 1 >= 63:   # acc * 2^(e-1) must fit int64
            return (f"shift requantization shifts the accumulator left by {e - 1} bits: every non-zero "
                    "accumulator leaves int64")
    return None


def _multiplier_array(multiplier, acc_shape, channel_axis: int) -> tuple[np.ndarray, tuple]:
    """The multipliers as a 1-D float64 array and the shape that broadcasts them along `channel_axis`."""
    m = np.atleast_1d(np.asarray(multiplier, dtype=np.float64))
    if m.ndim != 1:
        raise HwsimError(f"multiplier must be a scalar or a 1-D array, got shape {m.shape}")
    if m.size == 0:
        raise HwsimError("multiplier array is empty")
    for v in m:
        _check_multiplier(v)
    if m.size == 1:
        return m, (1,) * len(acc_shape)
    nd = len(acc_shape)
    if nd == 0:
        raise HwsimError("per-channel multipliers need an accumulator with a channel axis")
    ax = channel_axis if channel_axis >= 0 else channel_axis + nd
    if not 0 <= ax < nd:
        raise HwsimError(f"channel_axis {channel_axis} out of range for accumulator of shape {acc_shape}")
    if acc_shape[ax] != m.size:
        raise HwsimError(f"{m.size} multipliers for {acc_shape[ax]} channels (axis {ax}); expected 1 or "
                         f"{acc_shape[ax]}")
    shape = [1] * nd
    shape[ax] = m.size
    return m, tuple(shape)


def _int32_input(x: np.ndarray, policy: str, what: str) -> np.ndarray:
    bad = (x < INT32_MIN) | (x > INT32_MAX)
    if bad.any():
        if policy == "saturate":
            return np.clip(x, INT32_MIN, INT32_MAX)
        first = int(x[bad].ravel()[0])
        raise HwsimError(f"{what}: {int(bad.sum())} value(s) outside int32 (first {first}); TFLite's "
                         "fixed-point requantizer works on int32 values")
    return x


def srdhm(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """gemmlowp SaturatingRoundingDoublingHighMul on int32 values held in int64 arrays."""
    a, b = np.broadcast_arrays(a, b)
    ab = a * b                                             # |ab| <= 2^62: exact in int64
    nudge = np.where(ab >= 0, np.int64(1 << 30), np.int64(1 - (1 << 30)))
    t = ab + nudge
    high = np.where(t >= 0, t >> 31, -((-t) >> 31))         # C division by 2^31: truncation toward zero
    overflow = (a == b) & (a == INT32_MIN)
    return np.where(overflow, np.int64(INT32_MAX), high)


def rdbpot(x: np.ndarray, exponent: np.ndarray) -> np.ndarray:
    """gemmlowp RoundingDivideByPOT, 0 <= exponent <= 31."""
    x, e = np.broadcast_arrays(x, np.asarray(exponent, dtype=np.int64))
    mask = (np.int64(1) << e) - 1
    remainder = x & mask
    threshold = (mask >> 1) + (x < 0).astype(np.int64)
    return (x >> e) + (remainder > threshold).astype(np.int64)


def _float_mode(acc: np.ndarray, m: np.ndarray, dtype) -> np.ndarray:
    if dtype == np.float32:
        with np.errstate(over="ignore"):
            m32 = m.astype(np.float32)
        if not np.isfinite(m32).all():
            raise HwsimError(f"float32 requantization: multiplier {float(m[~np.isfinite(m32)].ravel()[0])!r} "
                             "overflows float32")
        m = m32
    with np.errstate(over="ignore", invalid="ignore"):
        prod = acc.astype(dtype) * m                       # one IEEE multiply in `dtype`
        r = np.rint(prod)                                  # round half to even, in `dtype`
    r = np.clip(r, -FLOAT_SATURATION, FLOAT_SATURATION)    # also maps +-inf; bounds exact in both dtypes
    return r.astype(np.int64)


def requantize(acc, multiplier, mode: str, channel_axis: int = 1, *,
               int32_overflow: str = "error") -> np.ndarray:
    """acc (int64 array) times the real multiplier(s), rounded as runtime `mode` does; int64 result."""
    if mode not in REQUANT_MODES:
        raise HwsimError(f"unknown requantization mode {mode!r}; expected one of {', '.join(REQUANT_MODES)}")
    if int32_overflow not in ("error", "saturate"):
        raise HwsimError(f"int32_overflow must be 'error' or 'saturate', got {int32_overflow!r}")
    acc = as_int64(acc, "acc")
    m, bshape = _multiplier_array(multiplier, acc.shape, channel_axis)
    if mode == "float32":
        return _float_mode(acc, m.reshape(bshape), np.float32).reshape(acc.shape)
    if mode == "float64":
        return _float_mode(acc, m.reshape(bshape), np.float64).reshape(acc.shape)
    if mode == "shift":
        s = np.empty(m.size, dtype=np.int64)
        for i, v in enumerate(m):
            q, e = math.frexp(float(v))
            if q != 0.5:
                raise HwsimError(f"shift requantization needs a power-of-two multiplier, got {float(v)!r}")
            s[i] = 1 - e                                   # v = 2^(e-1) = 2^-s
        s = s.reshape(bshape)
        right = round_shift(acc, np.maximum(s, 0), "half_up")
        left = np.maximum(-s, 0)
        if not left.any():
            return right.reshape(acc.shape)
        left_b = np.broadcast_to(left, right.shape)
        sl = np.minimum(left_b, 63)
        hi = np.where(left_b >= 64, 0, np.int64((1 << 63) - 1) >> sl)      # largest v with v << left in int64
        lo = np.where(left_b >= 64, 0, np.int64(-(1 << 63)) >> sl)         # smallest
        bad = (right > hi) | (right < lo)
        if bad.any():
            raise HwsimError(f"shift requantization: acc * 2^{int(left_b[bad].ravel()[0])} leaves int64 "
                             f"(acc {int(right[bad].ravel()[0])})")
        return (right << np.minimum(left_b, 63)).reshape(acc.shape)
    if mode == "float64_away":
        x = _int32_input(acc, int32_overflow, "float64_away requantization: acc")
        with np.errstate(over="ignore", invalid="ignore"):
            p = x.astype(np.float64) * m.reshape(bshape)       # one IEEE double multiply, as the C++ expression
            a = np.abs(p)
            f = np.floor(a)
            r = np.copysign(f + (a - f >= 0.5), p)             # C round: half away (a - f is exact in double)
        bad = ~((r >= INT32_MIN) & (r <= INT32_MAX))           # also +-inf
        if bad.any():
            if int32_overflow == "error":
                raise HwsimError(f"float64_away requantization: {int(bad.sum())} result(s) outside int32 (first "
                                 f"{float(r[bad].ravel()[0])!r}): TFLite's static_cast<int32_t> is undefined there")
            r = np.clip(r, INT32_MIN, INT32_MAX)
        return r.astype(np.int64).reshape(acc.shape)
    # fixed point (TFLite)
    single = mode == "fixed_single"
    qs = np.empty(m.size, dtype=np.int64)
    sh = np.empty(m.size, dtype=np.int64)
    for i, v in enumerate(m):
        qs[i], sh[i] = quantize_multiplier(float(v), single_rounding=single)
    qs = qs.reshape(bshape)
    sh = sh.reshape(bshape)
    x = _int32_input(acc, int32_overflow, f"{mode} requantization: acc")
    if single:
        total = 31 - sh                                    # in [1, 62]
        rnd = np.int64(1) << (total - 1)
        res = (x * qs + rnd) >> total                      # |x*qs + rnd| < 2^63 (module docstring)
        return _int32_input(res, int32_overflow, "fixed_single requantization: result").reshape(acc.shape)
    left = np.maximum(sh, 0)
    right = np.maximum(-sh, 0)                             # <= 31 after quantize_multiplier's flush to zero
    left_b = np.broadcast_to(left, x.shape)
    # x * 2^left in int32: exact check without overflow (left can be large for a huge multiplier)
    lo = np.where(left_b >= 32, 0, np.int64(INT32_MIN) >> np.minimum(left_b, 32))
    hi = np.where(left_b >= 32, 0, np.int64(INT32_MAX) >> np.minimum(left_b, 32))
    bad = (x < lo) | (x > hi)
    if bad.any():
        if int32_overflow == "error":
            raise HwsimError(f"{mode} requantization: acc * 2^{int(left_b[bad].ravel()[0])} overflows "
                             f"int32 (acc {int(x[bad].ravel()[0])}): the multiplier is too large for TFLite's "
                             "int32 fixed-point requantizer")
        shifted = np.where(bad, np.where(x < 0, INT32_MIN, INT32_MAX), x << np.minimum(left_b, 32))
    else:
        shifted = x << np.minimum(left_b, 32)
    high = srdhm(shifted, qs)
    if mode == "fixed_double":
        return rdbpot(high, right).reshape(acc.shape)
    up = shift_half_up(high, right)
    if mode == "fixed_double_ruy":
        return up.reshape(acc.shape)
    return np.where(block_mask(acc.shape, channel_axis), up, rdbpot(high, right)).reshape(acc.shape)


def shift_half_up(x: np.ndarray, exponent: np.ndarray) -> np.ndarray:
    """ruy's rounding_right_shift / NEON vrshl: floor((x + 2^(e-1)) / 2^e), 0 <= e <= 31, |x| <= 2^31 (exact in
    int64; ruy's overflow rule, 2^(31-e) when x + nudge leaves int32, is this same floor)."""
    x, e = np.broadcast_arrays(x, np.asarray(exponent, dtype=np.int64))
    return (x + ((np.int64(1) << e) >> 1)) >> e


def block_mask(acc_shape, channel_axis: int) -> np.ndarray:
    """fixed_double_blocks8: True for the channels in full blocks of 8 (TFLite's NEON loop), broadcastable."""
    nd = len(acc_shape)
    ax = channel_axis if channel_axis >= 0 else channel_axis + nd
    if not 0 <= ax < nd:
        raise HwsimError(f"fixed_double_blocks8 requantization needs a channel axis: channel_axis {channel_axis}, "
                         f"accumulator of shape {tuple(acc_shape)}")
    c = acc_shape[ax]
    shape = [1] * nd
    shape[ax] = c
    return (np.arange(c) < c - c % BLOCK_CHANNELS).reshape(shape)


# ----------------------------------------------------------------------------------------------------------
# Reference: one element at a time in Python ints (fixed modes) and numpy float scalars (float modes).

def _ref_one(a: int, v: float, mode: str, int32_overflow: str, in_block: bool = False) -> int:
    if mode == "fixed_double_blocks8":
        mode = "fixed_double_ruy" if in_block else "fixed_double"
    if mode == "float64_away":
        if not INT32_MIN <= a <= INT32_MAX:
            if int32_overflow == "error":
                raise HwsimError("acc outside int32")
            a = max(INT32_MIN, min(INT32_MAX, a))
        p = float(a) * v
        if not math.isfinite(p):
            out = INT32_MAX + 1 if p > 0 else INT32_MIN - 1
        else:
            r = Fraction(p)
            mag = abs(r)
            out = int(math.floor(mag + Fraction(1, 2))) * (1 if r >= 0 else -1)
        if not INT32_MIN <= out <= INT32_MAX:
            if int32_overflow == "error":
                raise HwsimError("result outside int32")
            out = max(INT32_MIN, min(INT32_MAX, out))
        return out
    if mode == "float32":
        with np.errstate(over="ignore"):
            v32 = np.float32(v)
        if not math.isfinite(float(v32)):
            raise HwsimError(f"float32 requantization: multiplier {v!r} overflows float32")
        with np.errstate(over="ignore"):
            p = np.float32(np.int64(a)) * v32          # int64 -> float32 in one rounding, as the C cast
        if not math.isfinite(float(p)):
            return FLOAT_SATURATION if p > 0 else -FLOAT_SATURATION
        r = Fraction(float(p))
        return max(-FLOAT_SATURATION, min(FLOAT_SATURATION, _round_half_even(r)))
    if mode == "float64":
        p = float(a) * v
        if not math.isfinite(p):
            return FLOAT_SATURATION if p > 0 else -FLOAT_SATURATION
        return max(-FLOAT_SATURATION, min(FLOAT_SATURATION, _round_half_even(Fraction(p))))
    if mode == "shift":
        q, e = math.frexp(v)
        if q != 0.5:
            raise HwsimError(f"shift requantization needs a power-of-two multiplier, got {v!r}")
        s = 1 - e
        if s <= 0:
            out = a << -s
            if not -(1 << 63) <= out < (1 << 63):
                raise HwsimError("shift requantization leaves int64")
            return out
        return (a + (1 << (s - 1))) >> s                   # half up (Python ints: exact floor shift)
    single = mode == "fixed_single"
    q, shift = quantize_multiplier(v, single_rounding=single)
    if not INT32_MIN <= a <= INT32_MAX:
        if int32_overflow == "error":
            raise HwsimError("acc outside int32")
        a = max(INT32_MIN, min(INT32_MAX, a))
    if single:
        total = 31 - shift
        out = (a * q + (1 << (total - 1))) >> total
        if not INT32_MIN <= out <= INT32_MAX:
            if int32_overflow == "error":
                raise HwsimError("result outside int32")
            out = max(INT32_MIN, min(INT32_MAX, out))
        return out
    left, right = max(shift, 0), max(-shift, 0)
    x = a * (1 << left)
    if not INT32_MIN <= x <= INT32_MAX:
        if int32_overflow == "error":
            raise HwsimError("acc * 2^shift outside int32")
        x = max(INT32_MIN, min(INT32_MAX, x))
    if x == q == INT32_MIN:
        h = INT32_MAX
    else:
        ab = x * q
        nudge = (1 << 30) if ab >= 0 else 1 - (1 << 30)
        t = ab + nudge
        h = t // (1 << 31) if t >= 0 else -((-t) // (1 << 31))
    if mode == "fixed_double_ruy":
        return (h + ((1 << right) >> 1)) >> right        # half up (Python ints: exact floor shift)
    mask = (1 << right) - 1
    return (h >> right) + (1 if (h & mask) > (mask >> 1) + (1 if h < 0 else 0) else 0)


def _round_half_even(r: Fraction) -> int:
    fl = r.numerator // r.denominator
    rem = r - fl
    if rem > Fraction(1, 2) or (rem == Fraction(1, 2) and fl % 2 == 1):
        return fl + 1
    return fl


def requantize_reference(acc, multiplier, mode: str, channel_axis: int = 1, *,
                         int32_overflow: str = "error") -> np.ndarray:
    """Element-by-element reference of `requantize` (slow; for tests and debugging)."""
    if mode not in REQUANT_MODES:
        raise HwsimError(f"unknown requantization mode {mode!r}")
    acc = as_int64(acc, "acc")
    m, bshape = _multiplier_array(multiplier, acc.shape, channel_axis)
    mb = np.broadcast_to(m.reshape(bshape), acc.shape) if acc.ndim else m.reshape(())
    blocks = None
    if mode == "fixed_double_blocks8":
        blocks = np.broadcast_to(block_mask(acc.shape, channel_axis), acc.shape)
    out = np.empty(acc.shape, dtype=np.int64)
    for idx in np.ndindex(acc.shape):
        out[idx] = _ref_one(int(acc[idx]), float(mb[idx]), mode, int32_overflow,
                            blocks is not None and bool(blocks[idx]))
    return out
