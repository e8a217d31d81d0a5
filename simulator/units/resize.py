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
"""

from __future__ import annotations

import numpy as np

COORDINATE_MODES = ("half_pixel", "pytorch_half_pixel", "asymmetric", "align_corners", "tf_half_pixel_for_nn")
NEAREST_MODES = ("floor", "ceil", "round_prefer_floor", "round_prefer_ceil")
RESIZE_MODES = ("nearest", "linear")


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


def _linear_axis(out_len, in_len, scale, coordinate):
    f = np.float32
    x = source_coordinates(out_len, in_len, scale, coordinate)
    x = np.maximum(f(0), np.minimum(x, f(in_len - 1)))
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
    y1, y2, dy1, dy2 = _linear_axis(out_hw[0], h, scales[0], coordinate)
    x1, x2, dx1, dx2 = _linear_axis(out_hw[1], w, scales[1], coordinate)
    real = values.astype(np.float32) * np.float32(in_scale)
    x11 = real[:, :, y1][:, :, :, x1]
    x21 = real[:, :, y1][:, :, :, x2]
    x12 = real[:, :, y2][:, :, :, x1]
    x22 = real[:, :, y2][:, :, :, x2]
    dy1, dy2 = dy1[:, None], dy2[:, None]
    y = (dx2 * dy2) * x11
    y = y + (dx1 * dy2) * x21
    y = y + (dx2 * dy1) * x12
    y = y + (dx1 * dy1) * x22
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
