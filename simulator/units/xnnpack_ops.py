"""XNNPACK's int8 / uint8 arithmetic (the LiteRT default delegate on x86 AVX2) as hwsim units.

What no other hwsim mode reproduces (simulator/importers/tflite_xnnpack.py has the derivations and sources):

- add (`rescale: "xnnpack"`): XNNPACK's qs8 / qu8 vadd. Per input an integer multiplier
  m_i = rint_even(|f32(f32(s_i) / f32(s_out))| * 2^shift) with the sign of the ratio (a subtract negates the
  second scale), shift = 20 - exponent(max |ratio|) in [12, 30]; y = (Σ v_i * m_i + 2^(shift-1)) >> shift
  (arithmetic shift: a floor, so ties round up), in the output's value domain (the zero point is added and the
  code range clamped by the encoder). Source: src/microparams-init.c xnn_init_qs8_add_minmax_scalar_params,
  src/qs8-vadd/gen/qs8-vadd-minmax-avx2-mul32-ld64-u16.c.
- mul (`requant: "xnnpack"`): y = rint_even(f32(v_a * v_b) * f32(f32(s_a * s_b) / s_out)), the zero point added
  to the rounded integer (ONNX Runtime's "float32" adds it in float before rounding). Source:
  xnn_init_qs8_mul_minmax_scalar_params, src/qs8-vmul/gen/qs8-vmul-minmax-fp32-avx-mul16-ld64-u16.c.
- global average pool (`rounding: "xnnpack_mean"`), TFLite MEAN over H and W: the int32 sum of raw codes S over
  N cells, then rint_even(f32(f32(S) * k) + z) saturated to the output codes, with
  k = f32(f32(s_in / s_out) * f32(1 / N)) and z = f32(zp_out - f32(f32(N * zp_in) * k)). Source:
  src/operators/reduce-nd.c, src/reference/unary-elementwise.cc, src/xnnpack/reference-utils.h.
"""

from __future__ import annotations

import numpy as np

from ..errors import HwsimError

F32 = np.float32


def add_multipliers(scales, out_scale, subtract: bool = False) -> tuple[list[int], int]:
    """([m_a, m_b], shift) of XNNPACK's quantized add; HwsimError when a ratio is outside [2^-10, 2^8)."""
    if len(scales) != 2:
        raise HwsimError(f"XNNPACK's add takes exactly two inputs, got {len(scales)}")
    so = F32(out_scale)
    ratios = [F32(F32(scales[0]) / so), F32(F32(-F32(scales[1]) if subtract else F32(scales[1])) / so)]
    for r in ratios:
        if not (2.0 ** -10 <= abs(float(r)) < 2.0 ** 8):
            raise HwsimError(f"XNNPACK add: input / output scale ratio {abs(float(r)):.6g} outside [2^-10, 2^8)")
    _, exp2 = np.frexp(max(abs(r) for r in ratios))      # frexp: m in [0.5, 1), so the float exponent is exp2 - 1
    shift = 20 - (int(exp2) - 1)
    mults = [int(np.rint(abs(float(r)) * 2.0 ** shift)) * (-1 if r < 0 else 1) for r in ratios]
    return mults, shift


def add_values(values, scales, out_scale, subtract: bool = False) -> np.ndarray:
    """Output values (before the zero point) of XNNPACK's add of two value arrays (numpy broadcast)."""
    (ma, mb), shift = add_multipliers(scales, out_scale, subtract)
    a, b = (np.asarray(v, dtype=np.int64) for v in values)
    return (a * ma + b * mb + (1 << (shift - 1))) >> shift


def mul_scale(s_a, s_b, s_out) -> np.float32:
    return F32(F32(F32(s_a) * F32(s_b)) / F32(s_out))


def mul_codes(a_values, b_values, s_a, s_b, s_out, zero_point, code_lo, code_hi) -> np.ndarray:
    """Output codes of XNNPACK's quantized multiply of two value arrays (numpy broadcast)."""
    product = np.asarray(a_values, dtype=np.int64) * np.asarray(b_values, dtype=np.int64)
    with np.errstate(over="ignore", invalid="ignore"):
        v = product.astype(np.float32) * mul_scale(s_a, s_b, s_out)
    r = np.clip(np.rint(v.astype(np.float64)), -2.0 ** 31, 2.0 ** 31)   # |product| < 2^17 here: never reached
    return np.clip(r + zero_point, code_lo, code_hi).astype(np.int64)


def mean_constants(s_in, zp_in, s_out, zp_out, count: int) -> tuple[np.float32, np.float32]:
    """(k, z) of XNNPACK's quantized mean over `count` cells."""
    k = F32(F32(F32(s_in) / F32(s_out)) * F32(F32(1.0) / F32(count)))
    z = F32(F32(zp_out) - F32(F32(count * zp_in) * k))
    return k, z


def global_mean_codes(codes: np.ndarray, in_enc, out_enc) -> np.ndarray:
    """[N, C, H, W] input codes -> [N, C, 1, 1] output codes of XNNPACK's mean over H and W."""
    x = np.asarray(codes, dtype=np.int64)
    count = x.shape[2] * x.shape[3]
    sums = x.sum(axis=(2, 3), keepdims=True)
    if np.abs(sums).max(initial=0) >= 1 << 31:
        raise HwsimError(f"XNNPACK mean: the int32 sum of {count} codes overflows")
    k, z = mean_constants(in_enc.scale, in_enc.zero_point, out_enc.scale, out_enc.zero_point, count)
    v = sums.astype(np.float32) * k + z
    lo, hi = out_enc.code_range()
    return np.clip(np.rint(v.astype(np.float64)), lo, hi).astype(np.int64)
