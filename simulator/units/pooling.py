"""Integer pooling units on [N, C, H, W] tensors, with the operation counts they perform.

Geometry (ONNX MaxPool / AveragePool without dilation or ceil_mode):
    kernel (kh, kw) or k; stride (sh, sw) or s (None: = kernel); padding p, (ph, pw) or the ONNX order
    (top, left, bottom, right); every pad must be < the kernel size in its dimension (so every window holds at
    least one real element); output OH = floor((H + top + bottom - kh) / sh) + 1, likewise OW.

maxpool(x, ...) -> (out, compares)
    out = max over the window. pad_value None: padded cells never win (ONNX: padding is -inf); an integer
    pad_value: padded cells take part with that value (e.g. the zero point of a quantized tensor).
    compares = (kh*kw - 1) per output: a sequential comparator (or a tree of kh*kw - 1 comparators) that
    sees every window slot, padded ones included.

avgpool(x, ...) -> (out, adds)
    sum = exact int64 sum of the window; count_include_pad=True: padded cells count with value pad_value and
    the divisor is kh*kw; False: padded cells are left out of both the sum and the divisor (ONNX default).
    out = round_div(sum, divisor, rounding) with any mode of `simulator.units.rounding`.
    adds = (kh*kw - 1) per output (the adder sees every window slot, padded ones feed zero or pad_value);
    the division is one divider operation per output (the caller counts outputs).

avgpool_tflite(codes, ...) -> (out codes, adds)
    TFLite's int8 / uint8 AVERAGE_POOL_2D (reference/integer_ops/pooling.h and reference/pooling.h, and the
    optimized optimized/integer_ops/pooling.h / optimized_ops.h, which compute the same): acc = the sum of the RAW
    codes (zero point included) of the window's real cells -- padded cells are left out of the sum and the count
    (SAME padding included) --, then `acc > 0 ? (acc + n/2) / n : (acc - n/2) / n` in C integer arithmetic, i.e.
    acc / n rounded half away from zero; input and output share scale and zero point. Rounding half away is not
    shift invariant, so this is not avgpool(code - zp) + zp: with zp = 3, codes {0, 1} average 0.5 -> code 1,
    while their values {-3, -2} average -2.5 -> -3 -> code 0. The result lies between the window's extreme
    codes; TFLite's clamp to a fused activation's range is a separate clip.
"""

from __future__ import annotations

import numpy as np

from simulator.errors import HwsimError
from simulator.units.rounding import INT64_MIN, as_int64, check_mode, round_div


def _pair(v, name: str) -> tuple[int, int]:
    if isinstance(v, (int, np.integer)) and not isinstance(v, bool):
        return int(v), int(v)
    try:
        a, b = v
    except (TypeError, ValueError):
        raise HwsimError(f"pooling {name} must be an int or a pair, got {v!r}") from None
    for t in (a, b):
        if isinstance(t, bool) or not isinstance(t, (int, np.integer)):
            raise HwsimError(f"pooling {name} must hold integers, got {v!r}")
    return int(a), int(b)


def _geometry(x, kernel, stride, padding):
    x = as_int64(x, "pooling input")
    if x.ndim != 4:
        raise HwsimError(f"pooling input must be [N, C, H, W], got shape {x.shape}")
    kh, kw = _pair(kernel, "kernel")
    sh, sw = (kh, kw) if stride is None else _pair(stride, "stride")
    if isinstance(padding, (list, tuple)) and len(padding) == 4:
        for t in padding:
            if isinstance(t, bool) or not isinstance(t, (int, np.integer)):
                raise HwsimError(f"pooling padding must hold integers, got {padding!r}")
        pt, pl, pb, pr = (int(t) for t in padding)
    else:
        ph, pw = _pair(padding, "padding")
        pt, pl, pb, pr = ph, pw, ph, pw
    if kh < 1 or kw < 1 or sh < 1 or sw < 1:
        raise HwsimError(f"pooling kernel and stride must be >= 1, got kernel {(kh, kw)}, stride {(sh, sw)}")
    if min(pt, pl, pb, pr) < 0 or max(pt, pb) >= kh or max(pl, pr) >= kw:
        raise HwsimError(f"pooling pads {(pt, pl, pb, pr)} must be >= 0 and smaller than the kernel {(kh, kw)}")
    H, W = x.shape[2], x.shape[3]
    oh = (H + pt + pb - kh) // sh + 1
    ow = (W + pl + pr - kw) // sw + 1
    if oh < 1 or ow < 1:
        raise HwsimError(f"pooling window {(kh, kw)} larger than the padded input {(H + pt + pb, W + pl + pr)}")
    return x, (kh, kw), (sh, sw), (pt, pl, pb, pr), (oh, ow)


def _windows(xp: np.ndarray, k, s, o):
    """Yield the strided view of each window slot (i, j): shape [..., OH, OW]."""
    (kh, kw), (sh, sw), (oh, ow) = k, s, o
    for i in range(kh):
        for j in range(kw):
            yield xp[..., i:i + sh * (oh - 1) + 1:sh, j:j + sw * (ow - 1) + 1:sw]


def _pad(x: np.ndarray, pads, value: int) -> np.ndarray:
    pt, pl, pb, pr = pads
    return np.pad(x, ((0, 0),) * (x.ndim - 2) + ((pt, pb), (pl, pr)), constant_values=value)


def _real_cells(shape, k, s, pads, o) -> np.ndarray:
    """The number of real (unpadded) cells in each window: int64 [OH, OW]."""
    ones = _pad(np.ones(shape[2:], dtype=np.int64), pads, 0)
    count = np.zeros(o, dtype=np.int64)
    for view in _windows(ones, k, s, o):
        count += view
    return count


def _int_window_sums(xp: np.ndarray, k, s, o) -> np.ndarray:
    """Exact int64 sums over each window of the padded input: [N, C, OH, OW]."""
    total = np.zeros(xp.shape[:2] + o, dtype=np.int64)
    for view in _windows(xp, k, s, o):
        total += view
    return total


def maxpool(x, kernel, stride=None, padding=0, pad_value=None) -> tuple[np.ndarray, int]:
    """Max over each window; returns (out int64 [N, C, OH, OW], compares)."""
    x, k, s, pads, o = _geometry(x, kernel, stride, padding)
    pv = INT64_MIN if pad_value is None else _int_value(pad_value)
    xp = _pad(x, pads, pv)
    out = None
    for view in _windows(xp, k, s, o):
        out = view.copy() if out is None else np.maximum(out, view)
    compares = (k[0] * k[1] - 1) * int(out.size)
    return out, compares


def avgpool(x, kernel, stride=None, padding=0, rounding: str = "half_even", count_include_pad: bool = False,
            pad_value: int = 0) -> tuple[np.ndarray, int]:
    """Rounded window mean; returns (out int64 [N, C, OH, OW], adds)."""
    check_mode(rounding)
    x, k, s, pads, o = _geometry(x, kernel, stride, padding)
    pv = _int_value(pad_value)
    window = k[0] * k[1]
    biggest = max(int(np.abs(x).max()) if x.size else 0, abs(pv))
    if biggest * window >= 1 << 63:
        raise HwsimError("avgpool: window sum could overflow int64")
    if count_include_pad:
        xp = _pad(x, pads, pv)
        divisor = np.int64(window)
    else:
        xp = _pad(x, pads, 0)
        divisor = _real_cells(x.shape, k, s, pads, o)
    out = round_div(_int_window_sums(xp, k, s, o), divisor, rounding)
    return out, (window - 1) * int(out.size)


def avgpool_tflite(codes, kernel, stride=None, padding=0) -> tuple[np.ndarray, int]:
    """TFLite's average of raw codes over the real cells, half away from zero (module docstring); returns
    (out codes int64 [N, C, OH, OW], adds)."""
    x, k, s, pads, o = _geometry(codes, kernel, stride, padding)
    if x.size and int(np.abs(x).max()) * k[0] * k[1] >= 1 << 62:
        raise HwsimError("avgpool_tflite: window sum could overflow int64")
    xp = _pad(x, pads, 0)                        # padded cells add nothing and are not counted
    out = round_div(_int_window_sums(xp, k, s, o), _real_cells(x.shape, k, s, pads, o), "half_away")
    return out, (k[0] * k[1] - 1) * int(out.size)


def _int_value(v) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
        raise HwsimError(f"pooling pad_value must be an integer, got {v!r}")
    v = int(v)
    if not INT64_MIN <= v < 1 << 63:
        raise HwsimError(f"pooling pad_value {v} outside int64")
    return v


def ort_global_multiplier(in_scale: float, out_scale: float, window: int) -> np.float32:
    """MLAS's float32 multiplier of a whole-plane average: float32(in_scale / float32(out_scale · float32(H·W)))."""
    return np.float32(in_scale) / (np.float32(out_scale) * np.float32(window))


def avgpool_ort(x, kernel, stride=None, padding=0, count_include_pad: bool = False, in_scale: float = 1.0,
                out_scale: float = 1.0, out_zero_point: int = 0,
                float_zero_point: int | None = None) -> tuple[np.ndarray, int]:
    """ONNX Runtime's quantized average pooling, bit for bit; returns (output values int64 [N, C, OH, OW], adds).

    `x` holds input values (code - input zero point); the result is in output value units (code - out_zero_point),
    before the output encoder's clamp. Two kernels, chosen as ORT chooses them:

    - the window covers the whole input and there is no padding (QLinearGlobalAveragePool, and QLinearAveragePool's
      fallback to it; MLAS qlgavgpool.cpp): an exact integer sum of the values, then the float32 requantizer
      rint(float32(sum) * M) with M = float32(in_scale / float32(out_scale * float32(H * W)));
    - otherwise (QLinearAveragePool, contrib_ops/cpu/quantization/qlinear_pool.cc): every input dequantized to
      float32 (in_scale * value), the real window cells summed in float32 in row-major order (padded cells
      contribute nothing), divided by float32(count) (the kernel size, or the real cells when count_include_pad is
      false), then nearbyint(sum / out_scale + out_zero_point) in float32: the zero point is added in float before
      rounding. `float_zero_point` (default: out_zero_point) is the zero point the kernel adds: ORT on x86
      rewrites int8 QDQ tensors to uint8 (QDQS8ToU8Transformer), so there it is the int8 zero point + 128, and
      the float addition can round differently; the result is shifted back to out_zero_point exactly.
    """
    x, k, s, pads, o = _geometry(x, kernel, stride, padding)
    f32 = np.float32
    window = k[0] * k[1]
    H, W = x.shape[2], x.shape[3]
    if (k[0], k[1]) == (H, W) and not any(pads):
        # exact integer sums per plane (einsum: numpy's sum over two short axes costs ~4x more)
        total = np.einsum("ncq->nc", x.reshape(x.shape[0], x.shape[1], -1))[:, :, None, None]
        m = ort_global_multiplier(in_scale, out_scale, window)
        with np.errstate(over="ignore", invalid="ignore"):
            r = np.rint(total.astype(f32) * m)
        return np.clip(r, -2.0 ** 62, 2.0 ** 62).astype(np.int64), (window - 1) * int(total.size)
    real = x.astype(f32) * f32(in_scale)
    xp = _pad(real, pads, 0)                      # padded cells add +0.0: the sum is unchanged
    if count_include_pad:
        divisor = f32(window)
    else:
        divisor = _real_cells(x.shape, k, s, pads, o).astype(f32)
    total = None
    for view in _windows(xp, k, s, o):            # row-major window order, as ORT's loops
        total = view.astype(f32) if total is None else total + view
    with np.errstate(over="ignore", invalid="ignore"):
        avg = total / divisor
        fzp = out_zero_point if float_zero_point is None else float_zero_point
        code = np.rint(avg / f32(out_scale) + f32(fzp))
    out = np.clip(code, -2.0 ** 62, 2.0 ** 62).astype(np.int64) - int(fzp)
    return out, (window - 1) * int(total.size)
