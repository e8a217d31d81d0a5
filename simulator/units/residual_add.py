"""Residual add with rescale: y = sum_i v_i * s_i / s_out, in the arithmetic of the declared requantization mode.

- float32 / float64, rescale "ratio": each input value times its ratio s_i / s_out in that float type, summed,
  rounded half to even.
- float32 / float64, rescale "dequantize": each input dequantized in that float type (v_i * s_i, one rounding),
  the reals summed in input order, the sum divided by s_out (a true division), rounded half to even. This is ONNX
  Runtime on x86 with AVX2 (MLAS QLinearBinaryOpKernelAvx2: vcvtdq2ps, vmulps scale, vaddps, vdivps scale_out,
  vcvtps2dq), its DequantizeLinear -> Add -> QuantizeLinear, and, with one input, QLinearConcat's requantizing
  table (QlinearBuildLookupTable: X_scale * (x - zp), then MlasQuantizeLinear). The output zero point is added
  after rounding (as an integer), so the engine's encoder does it.
- fixed_double / fixed_single: TensorFlow Lite's integer add (tflite/kernels/add.cc Prepare, reference_integer_ops
  AddFunc; sub.cc / reference_ops SubElementwise with `subtract`). Inputs are left-shifted by `left_shift` (20
  for 8-bit values, as TFLite; smaller for wider values so the shifted value stays in int32), rescaled to twice
  the larger input scale by a fixed-point multiplier, summed (or the second subtracted: each input is rescaled
  from its own value, then the difference taken, as TFLite: SRDHM's ties toward +inf make rescale(-v) differ
  from -rescale(v)), then rescaled to the output by a third multiplier. Checked bit for bit against LiteRT
  2.3.0's reference and optimized ADD / SUB (tests/test_tflite_arith.py). input_rounding "single" (fixed_double
  only) is LiteRT's optimized int8 ADD on its 16-element SIMD blocks (optimized_integer_ops/add.h
  AddElementwiseInt8, USE_NEON, run through NEON_2_SSE on x86): each input is SRDHM(v · 2^(20 + shift_i), m_i),
  its multiplier's right shift folded into the left shift, so rounded once instead of twice.
- shift: every ratio must be a power of two: inputs are aligned to the finest scale by left shifts, summed,
  and the sum is shifted to the output scale with round-half-up.
Returns the output in the output's integer value domain (before zero point and clamp), int64.
"""

from __future__ import annotations

import numpy as np

from ..errors import HwsimError
from .requantizer import quantize_multiplier, requantize, srdhm


def tflite_left_shift(value_bits: int) -> int:
    """TFLite uses 20 for 8-bit inputs; keep (value << shift) inside int32 for wider ones."""
    shift = min(20, 30 - value_bits)
    if shift < 0:
        raise HwsimError(f"fixed-point residual add supports values up to 30 bits, got {value_bits}")
    return shift


def residual_add(values, scales, out_scale, mode, value_bits=8, rescale="ratio", subtract=False,
                 input_rounding="double", double_mask=None):
    """`subtract`: two inputs, y = v_0 · s_0 / s_out − v_1 · s_1 / s_out (TFLite SUB). With input_rounding
    "single", `double_mask` (bool, broadcastable to the output) marks the elements that TFLite's SIMD add leaves
    to its scalar tail, which rounds twice (`simd_tail_mask`)."""
    if input_rounding == "single" and double_mask is not None and np.any(double_mask):
        single = residual_add(values, scales, out_scale, mode, value_bits, rescale, subtract, "single")
        double = residual_add(values, scales, out_scale, mode, value_bits, rescale, subtract, "double")
        return np.where(double_mask, double, single)
    values = [np.asarray(v, dtype=np.int64) for v in values]
    signs = [1] * len(values)
    if subtract:
        if len(values) != 2:
            raise HwsimError(f"subtract takes exactly two inputs, got {len(values)}")
        signs = [1, -1]
    if input_rounding not in ("double", "single"):
        raise HwsimError(f"input_rounding must be 'double' or 'single', got {input_rounding!r}")
    if input_rounding == "single" and mode != "fixed_double":
        raise HwsimError(f"input_rounding 'single' is a fixed_double arithmetic (TFLite's SIMD add), not {mode!r}")
    shape = np.broadcast_shapes(*(v.shape for v in values))   # a [N, C, 1, 1] input broadcasts over H, W
    if rescale == "dequantize":
        if mode not in ("float32", "float64"):
            raise HwsimError(f"rescale 'dequantize' needs a float requantization mode, got {mode!r}")
        ftype = np.float32 if mode == "float32" else np.float64
        with np.errstate(over="ignore", invalid="ignore"):
            total = None
            for v, s, sign in zip(values, scales, signs):
                real = v.astype(ftype) * ftype(s)             # one IEEE multiply per input
                total = real if total is None else (total + real if sign > 0 else total - real)
            r = np.rint(total / ftype(out_scale))             # one IEEE division, then round half to even
        return np.clip(r, -2.0 ** 62, 2.0 ** 62).astype(np.int64)
    if rescale != "ratio":
        raise HwsimError(f"unknown rescale {rescale!r}; expected 'ratio' or 'dequantize'")
    if mode in ("float32", "float64"):
        ftype = np.float32 if mode == "float32" else np.float64
        total = np.zeros(shape, dtype=ftype)
        for v, s, sign in zip(values, scales, signs):
            total = total + sign * (v.astype(ftype) * ftype(s / out_scale))
        return np.rint(total).astype(np.int64)
    if mode in ("fixed_double", "fixed_single"):
        left_shift = tflite_left_shift(value_bits)
        twice_max = 2.0 * max(scales)
        total = np.zeros(shape, dtype=np.int64)
        for v, s, sign in zip(values, scales, signs):
            if input_rounding == "single":
                q, shift = quantize_multiplier(s / twice_max)
                scaled = srdhm(v << (left_shift + min(shift, 0)), np.int64(q))
            else:
                scaled = requantize(v << left_shift, np.array([s / twice_max]), mode, channel_axis=0)
            total += sign * scaled
        out_multiplier = twice_max / ((1 << left_shift) * out_scale)
        return requantize(total, np.array([out_multiplier]), mode, channel_axis=0)
    if mode == "shift":
        finest = min(scales)
        total = np.zeros(shape, dtype=np.int64)
        for v, s, sign in zip(values, scales, signs):
            ratio = s / finest
            exponent = int(np.round(np.log2(ratio)))
            if ratio != 2.0 ** exponent:
                raise HwsimError(f"shift mode needs power-of-two scale ratios, got {ratio}")
            total += sign * (v << exponent)
        return requantize(total, np.array([finest / out_scale]), "shift", channel_axis=0)
    raise HwsimError(f"unknown requantization mode {mode!r}")


SIMD_BLOCK = 16      # int8 elements per block of optimized_integer_ops AddElementwiseInt8


def simd_tail_mask(sample_shape) -> np.ndarray:
    """[1, *sample_shape] bool: the elements of one sample that TFLite's optimized elementwise ADD computes in its
    scalar tail, the last (size mod 16) in TFLite's memory order: NHWC for a [C, H, W] sample, as stored otherwise."""
    shape = tuple(int(d) for d in sample_shape)
    size = int(np.prod(shape))
    if len(shape) == 3:
        c, h, w = shape
        order = np.arange(size).reshape(h, w, c).transpose(2, 0, 1)    # NHWC position of each [c, h, w]
    else:
        order = np.arange(size).reshape(shape)
    return (order >= size // SIMD_BLOCK * SIMD_BLOCK)[None]


def residual_add_reference(values, scales, out_scale, subtract=False):
    """Exact real arithmetic with round half to even (Python fractions), for tests and the float reference."""
    from fractions import Fraction
    values = np.broadcast_arrays(*(np.asarray(v) for v in values))
    flat = [v.ravel().tolist() for v in values]
    signs = [1, -1] if subtract else [1] * len(values)
    out = []
    for items in zip(*flat):
        exact = sum(g * Fraction(int(v)) * Fraction(s) / Fraction(out_scale) for g, v, s in zip(signs, items, scales))
        out.append(round(exact))  # Python's round on a Fraction is half to even
    return np.asarray(out, dtype=np.int64).reshape(np.asarray(values[0]).shape)
