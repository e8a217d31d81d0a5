"""Resize unit: nearest and bilinear up/down-sampling of a [N, C, H, W] map, as ONNX Resize defines it and as
ONNX Runtime's CPU kernel computes it (onnxruntime/core/providers/cpu/tensor/upsamplebase.h, upsample.cc).

Source coordinates are computed per output row / column in float32, as ORT does:
  half_pixel          (x + 0.5) / scale - 0.5
  pytorch_half_pixel  (x + 0.5) / scale - 0.5 if the output length > 1 else 0
  asymmetric          x / scale
  align_corners       x * (in - 1) / (out - 1)   (0 if out == 1)
  tf_half_pixel_for_nn (x + 0.5) / scale
- nearest: the coordinate rounded by `nearest_mode` (floor, ceil, round_prefer_floor, round_prefer_ceil),
  clamped to the input; it moves codes, so it is exact on any encoding.
- linear: the coordinate clamped to [0, in - 1]; x1 = int(x), x2 = min(x1 + 1, in - 1), dx1 = |x - x1|,
  dx2 = |x - x2| (both 0.5 when x1 == x2); in float32, left to right:
  y = dx2*dy2*X11 + dx1*dy2*X21 + dx2*dy1*X12 + dx1*dy1*X22  (UpsampleBilinear), on dequantized float32
  values (code - zp) * scale; the result is quantized like QuantizeLinear: y / s_out rounded half to even,
  plus the zero point, saturated.
An axis whose scale is exactly 1 takes its output index as the coordinate (SetupUpsampleBilinear), and an output
of the input's size is a copy (Upsample::BaseCompute) whatever the scales (the ORT paths; not the float64 one).

Bilinear on the 8-bit codes themselves (ORT's QOperator form: Resize between QLinear ops, output encoded like
the input), `arithmetic` names the kernel ORT runs (onnxruntime/core/providers/cpu/tensor/upsample.h, upsample.cc;
the kernel takes NHWC when scales[1] != 1, i.e. after ORT's layout transformer moved the channels last):
- ort_nchw_float32_trunc (UpsampleBilinear): the four-term float32 sum above on the codes, cast to the code type
  (truncation toward zero). (ORT 1.32 on x86 computes this four-term form; a later upsample.h interpolates rows
  first, dy2 * (dx2*X11 + dx1*X21) + dy1 * (...), which differs in a few codes per thousand.)
- ort_nhwc_int10 (NhwcUpsampleBilinearInteger, SetupUpsampleBilinearInteger): per axis
  s10 = int32(x * 1024), d1 = |s10 - x1 * 1024|, d2 = |s10 - x2 * 1024| (512 and 512 when x1 == x2); the int32 sum
  dx2*dy2*X11 + dx1*dy2*X21 + dx2*dy1*X12 + dx1*dy1*X22 divided by 2^20 in C (truncation toward zero).
- ort_nhwc_float32_trunc: NHWC with an H scale of 1: the kernel's float32 path on the [N, H, W, C] tensor read as
  [N, C', H', W'], i.e. W interpolated as its "H" and the channels as its "W" (scale 1).
"""

from __future__ import annotations

import numpy as np

COORDINATE_MODES = ("half_pixel", "pytorch_half_pixel", "asymmetric", "align_corners", "tf_half_pixel_for_nn")
NEAREST_MODES = ("floor", "ceil", "round_prefer_floor", "round_prefer_ceil")
RESIZE_MODES = ("nearest", "linear")
# linear resize: "dequantized" values requantized (`requant`), or one of ORT's kernels on the codes
ARITHMETICS = ("dequantized", "ort_nchw_float32_trunc", "ort_nhwc_int10", "ort_nhwc_float32_trunc")


def source_coordinates(out_len: int, in_len: int, scale: float, mode: str) -> np.ndarray:
    """float32 source coordinate of every output index along one axis."""
    f = np.float32
    x = np.arange(out_len, dtype=np.float32)
    s = f(scale)
    if mode == "half_pixel":
        return (x + f(0.5)) / s - f(0.5)
    if mode == "pytorch_half_pixel":
        return (x + f(0.5)) / s - f(0.5) if out_len > 1 else np.zeros(out_len, np.float32)
    if mode == "asymmetric":
        return x / s
    if mode == "align_corners":
        if out_len == 1:
            return np.zeros(1, np.float32)
        return x * f(in_len - 1) / f(out_len - 1)
    if mode == "tf_half_pixel_for_nn":
        return (x + f(0.5)) / s
    raise ValueError(mode)


def nearest_index(coord: np.ndarray, in_len: int, nearest_mode: str) -> np.ndarray:
    c = coord.astype(np.float64)   # exact: a float32 widens exactly
    if nearest_mode == "floor":
        idx = np.floor(c)
    elif nearest_mode == "ceil":
        idx = np.ceil(c)
    elif nearest_mode == "round_prefer_floor":
        idx = np.where(c == np.floor(c) + 0.5, np.floor(c), np.round(c))
    else:  # round_prefer_ceil: std::round (halves away from zero)
        idx = np.where(c >= 0, np.floor(c + 0.5), np.ceil(c - 0.5))
    return np.clip(idx, 0, in_len - 1).astype(np.int64)


def resize_nearest(codes: np.ndarray, out_hw, scales, coordinate: str, nearest_mode: str) -> np.ndarray:
    _, _, h, w = codes.shape
    rows = nearest_index(source_coordinates(out_hw[0], h, scales[0], coordinate), h, nearest_mode)
    cols = nearest_index(source_coordinates(out_hw[1], w, scales[1], coordinate), w, nearest_mode)
    return codes[:, :, rows][:, :, :, cols]


def _linear_coordinates(out_len, in_len, scale, coordinate):
    """ORT's clamped float32 source coordinates of a linear axis (the index itself when the scale is 1)."""
    f = np.float32
    if f(scale) == f(1):
        x = np.arange(out_len, dtype=np.float32)
    else:
        x = source_coordinates(out_len, in_len, scale, coordinate)
    return np.maximum(f(0), np.minimum(x, f(in_len - 1)))


def _linear_axis(out_len, in_len, scale, coordinate):
    f = np.float32
    x = _linear_coordinates(out_len, in_len, scale, coordinate)
    i1 = np.minimum(x.astype(np.int64), in_len - 1)
    i2 = np.minimum(i1 + 1, in_len - 1)
    d1 = np.abs(x - i1.astype(np.float32))
    d2 = np.abs(x - i2.astype(np.float32))
    same = i1 == i2
    d1 = np.where(same, f(0.5), d1).astype(np.float32)
    d2 = np.where(same, f(0.5), d2).astype(np.float32)
    return i1, i2, d1, d2


def resize_linear_ort(values: np.ndarray, in_scale: float, out_hw, scales, coordinate: str, out_scale: float,
                      out_zero_point: int, code_lo: int, code_hi: int) -> np.ndarray:
    """Bilinear resize of integer values (code - zp) in ORT's float32 arithmetic; returns output codes."""
    _, _, h, w = values.shape
    real = values.astype(np.float32) * np.float32(in_scale)
    if tuple(out_hw) == (h, w):   # ORT copies an input of the output's size
        return _quantize_float32(real, out_scale, out_zero_point, code_lo, code_hi)
    y1, y2, dy1, dy2 = _linear_axis(out_hw[0], h, scales[0], coordinate)
    x1, x2, dx1, dx2 = _linear_axis(out_hw[1], w, scales[1], coordinate)
    x11 = real[:, :, y1][:, :, :, x1]
    x21 = real[:, :, y1][:, :, :, x2]
    x12 = real[:, :, y2][:, :, :, x1]
    x22 = real[:, :, y2][:, :, :, x2]
    dy1, dy2 = dy1[:, None], dy2[:, None]
    y = (dx2 * dy2) * x11
    y = y + (dx1 * dy2) * x21
    y = y + (dx2 * dy1) * x12
    y = y + (dx1 * dy1) * x22
    return _quantize_float32(y, out_scale, out_zero_point, code_lo, code_hi)


def _quantize_float32(y, out_scale, out_zero_point, code_lo, code_hi):
    with np.errstate(over="ignore", invalid="ignore"):
        q = np.rint(y / np.float32(out_scale)).astype(np.float64)
    return np.clip(q + out_zero_point, code_lo, code_hi).astype(np.int64)


def resize_linear_exact(values: np.ndarray, in_scale: float, out_hw, scales, coordinate: str, out_scale: float,
                        out_zero_point: int, code_lo: int, code_hi: int) -> np.ndarray:
    """The float64 reference: the same taps and weights, the interpolation in float64, half to even."""
    _, _, h, w = values.shape
    y1, y2, dy1, dy2 = (a.astype(np.float64) if a.dtype == np.float32 else a
                        for a in _linear_axis(out_hw[0], h, scales[0], coordinate))
    x1, x2, dx1, dx2 = (a.astype(np.float64) if a.dtype == np.float32 else a
                        for a in _linear_axis(out_hw[1], w, scales[1], coordinate))
    real = values.astype(np.float64) * in_scale
    dy1, dy2 = dy1[:, None], dy2[:, None]
    y = (dx2 * dy2 * real[:, :, y1][:, :, :, x1] + dx1 * dy2 * real[:, :, y1][:, :, :, x2]
         + dx2 * dy1 * real[:, :, y2][:, :, :, x1] + dx1 * dy1 * real[:, :, y2][:, :, :, x2])
    return np.clip(np.rint(y / out_scale) + out_zero_point, code_lo, code_hi).astype(np.int64)


# ----------------------------------------------------------------------- bilinear on codes (QOperator form)

def _int10_axis(out_len, in_len, scale, coordinate):
    """SetupUpsampleBilinearInteger along one axis: taps and their 10-bit weights (d1 toward x2, d2 toward x1)."""
    x = _linear_coordinates(out_len, in_len, scale, coordinate)
    s10 = (x * np.float32(1 << 10)).astype(np.int64)   # static_cast<int32_t>: truncation (x >= 0; * 1024 is exact)
    i1 = np.minimum(x.astype(np.int64), in_len - 1)
    i2 = np.minimum(i1 + 1, in_len - 1)
    same = i1 == i2
    d1 = np.where(same, 512, np.abs(s10 - i1 * 1024))
    d2 = np.where(same, 512, np.abs(s10 - i2 * 1024))
    return i1, i2, d1, d2


def resize_codes(codes: np.ndarray, out_hw, scales, coordinate: str, arithmetic: str) -> np.ndarray:
    """Bilinear resize of [N, C, H, W] codes as ORT's kernel `arithmetic` computes it; returns codes (int64)."""
    _, _, h, w = codes.shape
    if tuple(out_hw) == (h, w):   # Upsample::BaseCompute: same output dims -> memcpy
        return codes.astype(np.int64)
    if arithmetic == "ort_nhwc_float32_trunc":   # the NCHW kernel on [N, H, W, C]: W is its "H", C its "W"
        nhwc = codes.transpose(0, 2, 3, 1)
        out = resize_codes(nhwc, (out_hw[1], codes.shape[1]), (scales[1], 1.0), coordinate, "ort_nchw_float32_trunc")
        return np.ascontiguousarray(out.transpose(0, 3, 1, 2))
    if arithmetic == "ort_nhwc_int10":
        y1, y2, dy1, dy2 = _int10_axis(out_hw[0], h, scales[0], coordinate)
        x1, x2, dx1, dx2 = _int10_axis(out_hw[1], w, scales[1], coordinate)
        v = codes.astype(np.int64)
    elif arithmetic == "ort_nchw_float32_trunc":
        y1, y2, dy1, dy2 = _linear_axis(out_hw[0], h, scales[0], coordinate)
        x1, x2, dx1, dx2 = _linear_axis(out_hw[1], w, scales[1], coordinate)
        v = codes.astype(np.float32)
    else:
        raise ValueError(arithmetic)
    dy1, dy2 = dy1[:, None], dy2[:, None]
    top, bottom = v[:, :, y1], v[:, :, y2]
    y = (dx2 * dy2) * top[:, :, :, x1]      # weight products first, then the sum left to right, as the C++
    y = y + (dx1 * dy2) * top[:, :, :, x2]
    y = y + (dx2 * dy1) * bottom[:, :, :, x1]
    y = y + (dx1 * dy1) * bottom[:, :, :, x2]
    if arithmetic == "ort_nhwc_int10":
        return np.sign(y) * (np.abs(y) >> 20)    # C's int32 / (1 << 20): truncation toward zero
    return np.trunc(y).astype(np.int64)          # static_cast<uint8_t / int8_t>(float)


def resize_codes_reference(codes: np.ndarray, out_hw, scales, coordinate: str, arithmetic: str) -> np.ndarray:
    """resize_codes one output at a time, the C++ loops' scalar arithmetic (slow; for tests)."""
    _, _, h, w = codes.shape
    if tuple(out_hw) == (h, w):
        return codes.astype(np.int64)
    if arithmetic == "ort_nhwc_float32_trunc":
        out = resize_codes_reference(codes.transpose(0, 2, 3, 1), (out_hw[1], codes.shape[1]), (scales[1], 1.0),
                                     coordinate, "ort_nchw_float32_trunc")
        return np.ascontiguousarray(out.transpose(0, 3, 1, 2))
    f = np.float32
    integer = arithmetic == "ort_nhwc_int10"
    axis = _int10_axis if integer else _linear_axis
    rows = list(zip(*axis(out_hw[0], h, scales[0], coordinate)))
    cols = list(zip(*axis(out_hw[1], w, scales[1], coordinate)))
    out = np.zeros(codes.shape[:2] + tuple(out_hw), np.int64)
    for n in range(codes.shape[0]):
        for c in range(codes.shape[1]):
            img = codes[n, c]
            for oy, (y1, y2, dy1, dy2) in enumerate(rows):
                for ox, (x1, x2, dx1, dx2) in enumerate(cols):
                    taps = (int(img[y1, x1]), int(img[y1, x2]), int(img[y2, x1]), int(img[y2, x2]))
                    weights = ((dx2, dy2), (dx1, dy2), (dx2, dy1), (dx1, dy1))
                    if integer:
                        total = sum(int(a) * int(b) * t for (a, b), t in zip(weights, taps))
                        q = abs(total) // (1 << 20)       # C division truncates toward zero
                        out[n, c, oy, ox] = q if total >= 0 else -q
                    else:
                        total = f(0)
                        for k, ((a, b), t) in enumerate(zip(weights, taps)):
                            term = f(f(a) * f(b)) * f(t)
                            total = term if k == 0 else f(total + term)
                        out[n, c, oy, ox] = int(total)   # Python int(): truncation toward zero
    return out
