"""Float64 reference executor of the same quantized graph: dequantize, compute in float64, quantize.

It shares no arithmetic with the integer engine: convolutions are float64 einsums (on the integer operand
values, exact below 2^53, then scaled to real values), and each output is rounded two ways:

  declared  the layer's own arithmetic: a `requant` mode (float32, float64, fixed_double, fixed_single, shift,
            and TFLite's kernel paths fixed_double_ruy, fixed_double_blocks8, float64_away)
            is part of the model's semantics (docs/qnn-format.md), so the accumulator is requantized in that
            mode bit for bit -- written here from the modes' definitions, not by calling the engine's
            requantizer, so that a bug there shows up as a difference. This is what `validate` passes or fails.
  exact     the exact real result rounded with the mode's tie rule: how far the declared arithmetic lands from
            exact rounding (ONNX Runtime's float32, TFLite's double rounding), which `validate` reports as
            information.

Pooling uses its declared rounding. The encoders (QE, QK, sign) are the definition of the storage format, so
both sides use them.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from .encodings import BinaryAct, CodebookW, Float32W, ThresholdAct
from .engine import check_input_shape
from .graph import BINARY_PAD_VALUES, REQUANT_ROUNDING, Layer, Model
from .units import resize
from .units.elementwise import dilate_codes, lut_lookup, softmax_exact
from .units.rounding import round_float


def conv2d_float(x, w, stride, padding, groups, pad_value):
    """Real-valued grouped convolution, NCHW, float64.

    Memory stays near the output's size: the sum runs over the kernel offsets (each adds the strided slice of
    the padded input that offset sees, contracted with that tap of the weights), or, for a kernel with more
    cells than the output has positions, over the output positions (each one window); groups are one
    contraction, not a loop."""
    pt, pl, pb, pr = padding
    sh, sw = stride
    xp = np.pad(x, ((0, 0), (0, 0), (pt, pb), (pl, pr)), constant_values=pad_value)
    n, c = xp.shape[:2]
    co, cg, kh, kw = w.shape
    ho = (xp.shape[2] - kh) // sh + 1
    wo = (xp.shape[3] - kw) // sw + 1
    cog = co // groups
    xg = xp.reshape(n, groups, cg, xp.shape[2], xp.shape[3])
    wg = w.reshape(groups, cog, cg, kh, kw)
    y = np.zeros((n, groups, cog, ho, wo), dtype=np.float64)
    if kh * kw <= ho * wo:
        few = cg * cog <= 8          # a few channels per group: multiply-adds beat an einsum per offset
        tmp = np.empty((n, groups, ho, wo), dtype=np.float64) if few else None
        for i in range(kh):
            for j in range(kw):
                patch = xg[:, :, :, i:i + sh * (ho - 1) + 1:sh, j:j + sw * (wo - 1) + 1:sw]
                if not few:
                    y += np.einsum("ngchw,goc->ngohw", patch, wg[:, :, :, i, j], optimize=True)
                    continue
                for o in range(cog):
                    for ci in range(cg):
                        np.multiply(patch[:, :, ci], wg[:, o, ci, i, j].reshape(1, -1, 1, 1), out=tmp)
                        y[:, :, o] += tmp
    else:
        for oh in range(ho):
            for ow in range(wo):
                window = xg[:, :, :, oh * sh:oh * sh + kh, ow * sw:ow * sw + kw]
                y[:, :, :, oh, ow] = np.einsum("ngcij,gocij->ngo", window, wg, optimize=True)
    return y.reshape(n, co, ho, wo)


def _real(enc, codes):
    return enc.decode(codes).astype(np.float64) * enc.value_scale


# Padding, weight decoding and the multiplier are derived here on their own, not taken from the engine or graph
# helpers, so that a bug there shows up as a difference in `validate` and the tests instead of on both sides.

def zero_code(enc) -> int:
    """The code whose value is nearest to real zero (the lowest such code): what zero padding stores."""
    lo, hi = enc.code_range()
    codes = np.arange(lo, hi + 1, dtype=np.int64)
    return int(codes[np.argmin(np.abs(enc.decode(codes)))])


def reference_pad_value(lay: Layer) -> int:
    """The value a conv's padded positions hold: binary_pad for binary inputs, else the pad code's value."""
    enc = lay.in_encs[0]
    if isinstance(enc, BinaryAct):
        return BINARY_PAD_VALUES[lay.attr("binary_pad")]
    code = lay.attr("pad_code")
    return int(enc.decode(np.array([zero_code(enc) if code is None else code]))[0])


def weight_values(lay: Layer) -> np.ndarray:
    """Integer weight values: codebook entries looked up channel by channel, else the encoding's decoder."""
    enc = lay.weight_enc
    if isinstance(enc, CodebookW):
        out = np.empty(lay.weight.shape, np.int64)
        for c in range(lay.weight.shape[0]):
            group = 0 if enc.group_size == 0 else c // enc.group_size
            out[c] = lay.codebook[group][lay.weight[c].astype(np.int64)]
        return out
    return enc.decode(lay.weight)


def reference_mac(lay: Layer, x_codes: np.ndarray) -> np.ndarray:
    """A conv2d / dense layer in the reference, rounded in its declared arithmetic."""
    return reference_mac_pair(lay, x_codes)[0]


def reference_mac_pair(lay: Layer, x_codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(declared, exact-rounding) output codes of a conv2d / dense layer (module docstring)."""
    in_enc, out_enc = lay.in_encs[0], lay.out_enc
    co = lay.out_shape[0]
    s_in, s_out = in_enc.value_scale, out_enc.value_scale
    if (lay.op == "conv2d" and lay.attr("arithmetic") == "ort_float32") or isinstance(lay.weight_enc, Float32W):
        out = _float_mac(lay, x_codes)   # no integer accumulator: the exact real result is the reference
        return out, out
    explicit = lay.attr("multiplier")
    if explicit is not None:
        # the file's multiplier m = s_in * s_w / s_out, so the weight scale it implies is m * s_out / s_in
        multiplier = np.broadcast_to(np.asarray(explicit, dtype=np.float64), (co,))
        w_scale = multiplier * s_out / s_in
    else:
        w_scale = lay.weight_enc.channel_scales(co)
        multiplier = s_in * w_scale / s_out
    x_int = in_enc.decode(x_codes).astype(np.float64)
    w_int = weight_values(lay).astype(np.float64)
    if lay.op == "conv2d":
        acc = conv2d_float(x_int, w_int, lay.attr("stride"), lay.attr("padding"), lay.attr("groups"),
                           reference_pad_value(lay))
        shape = (1, -1, 1, 1)
    else:
        acc = x_int @ w_int.T
        shape = (1, -1)
    if lay.bias is not None:
        acc = acc + lay.bias.astype(np.float64).reshape(shape)   # the bias is in accumulator units
    y = acc * (s_in * w_scale).reshape(shape)                  # the exact real result (to float64 precision)
    if isinstance(out_enc, BinaryAct):
        out = out_enc.encode(y)
        return out, out
    if isinstance(out_enc, ThresholdAct):
        # Comparator bank on the accumulator. The accumulator is an integer, so `acc >= T` is
        # `real > (T - 1/2) * unit`: half a unit of slack keeps the float reference clear of exact ties.
        unit = (s_in * w_scale).reshape((-1, 1))
        t = (out_enc.threshold_array(co).astype(np.float64) - 0.5) * unit          # [co, n], rows sorted
        count = np.stack([np.searchsorted(t[c], y[:, c], side="right") for c in range(co)], axis=1)
        out = count.astype(np.int64) + out_enc.code_range()[0]
        return out, out
    # the sums are integers held exactly in float64 (below 2^53; wider accumulators are out of its reach)
    acc = np.rint(acc).astype(np.int64)
    declared = _encode_values(lay, requantize_declared(acc, multiplier, lay.attr("requant")))
    return declared, _quantize(lay, y / s_out)


def _float_mac(lay: Layer, x_codes: np.ndarray) -> np.ndarray:
    """ORT's float32 ConvTranspose (arithmetic ort_float32, float32 weights): the exact real result, rounded."""
    in_enc, out_enc = lay.in_encs[0], lay.out_enc
    co = lay.out_shape[0]
    s_in, s_out = in_enc.value_scale, out_enc.value_scale
    ort_float = lay.op == "conv2d" and lay.attr("arithmetic") == "ort_float32"
    explicit = lay.attr("multiplier")
    if explicit is not None and not ort_float:   # ORT's float ConvTranspose uses the scales
        w_scale = np.broadcast_to(np.asarray(explicit, dtype=np.float64), (co,)) * s_out / s_in
    else:
        w_scale = lay.weight_enc.channel_scales(co)
    if isinstance(lay.weight_enc, Float32W):   # float32 weights: the stored values are the real weights
        w_real = Float32W.floats(lay.weight).astype(np.float64)
    else:
        w_real = weight_values(lay).astype(np.float64) * w_scale.reshape((-1,) + (1,) * (lay.weight.ndim - 1))
    x_real = _real(in_enc, x_codes)
    if lay.op == "conv2d":
        pad_real = reference_pad_value(lay) * s_in
        y = conv2d_float(x_real, w_real, lay.attr("stride"), lay.attr("padding"), lay.attr("groups"), pad_real)
        shape = (1, -1, 1, 1)
    else:
        y = x_real @ w_real.T
        shape = (1, -1)
    if lay.bias is not None:
        b_scale = s_in * w_scale
        if ort_float and lay.attr("bias_scale") is not None:   # the int32 bias's own scale (ORT's DequantizeLinear)
            b_scale = np.broadcast_to(np.asarray(lay.attr("bias_scale"), dtype=np.float64), (co,))
        y = y + (lay.bias.astype(np.float64) * b_scale).reshape(shape)
    return _quantize(lay, y / s_out)


# ---------------------------------------------------------------------------------------- declared requantization
# Each mode from its definition (units/requantizer.py's docstring: the runtimes' arithmetic), written anew here.

INT32_MIN, INT32_MAX = -(1 << 31), (1 << 31) - 1


def _shift_half_up(x: np.ndarray, s: int) -> np.ndarray:
    """x / 2^s rounded half up (ties toward +inf), exact in int64: floor shift, then the remainder decides."""
    if s <= 0:
        return x << -s
    if s >= 64:
        return np.zeros_like(x)         # |x| <= 2^63: at most half of 2^s, which rounds up to 0
    floor = x >> s
    return floor + ((x - (floor << s)) >= (1 << (s - 1)))


def _shift_half_away(x: np.ndarray, s: int) -> np.ndarray:
    """x / 2^s rounded half away from zero (gemmlowp's RoundingDivideByPOT); x within int32."""
    return np.where(x < 0, -_shift_half_up(-x, s), _shift_half_up(x, s))


def _tflite_multiplier(m: float, single_rounding: bool) -> tuple[int, int]:
    """TFLite's QuantizeMultiplier: m ~ q * 2^(shift - 31) with q a 31-bit mantissa rounded half away."""
    frac, shift = math.frexp(m)                  # m = frac * 2^shift, frac in [0.5, 1)
    q = math.floor(frac * 2.0 ** 31 + 0.5)       # exact in double: frac * 2^31 < 2^31 keeps 22 fraction bits
    if q == 1 << 31:
        q, shift = q // 2, shift + 1
    if shift < -31:
        return 0, 0
    if single_rounding and shift > 30:
        return INT32_MAX, 30
    return q, shift


def _requantize_one(acc: np.ndarray, m: float, mode: str) -> np.ndarray:
    """Accumulators (int64) times the real multiplier `m`, rounded as `mode` defines; int64."""
    if mode in ("float32", "float64"):
        ftype = np.float32 if mode == "float32" else np.float64
        with np.errstate(over="ignore", invalid="ignore"):
            r = np.rint(acc.astype(ftype) * ftype(m))    # one IEEE multiply and round half to even, in ftype
        return np.clip(r, -2.0 ** 62, 2.0 ** 62).astype(np.int64)   # (+-inf included)
    if mode == "shift":
        frac, e = math.frexp(m)                      # m = 2^-s exactly (Model.check refuses anything else)
        return _shift_half_up(acc, 1 - e)
    if mode == "float64_away":
        # TFLite's reference FULLY_CONNECTED: C round(double(acc) * m): the product in double, then its integer
        # part plus one step away from zero where the fraction (p - trunc(p), exact) reaches one half
        with np.errstate(over="ignore", invalid="ignore"):
            p = np.clip(acc, INT32_MIN, INT32_MAX).astype(np.float64) * np.float64(m)
            whole = np.trunc(p)
            r = whole + np.sign(p) * (np.abs(p - whole) >= 0.5)
        return np.clip(np.nan_to_num(r, posinf=2.0 ** 62, neginf=-2.0 ** 62), -2.0 ** 62, 2.0 ** 62).astype(np.int64)
    # TFLite: int32 accumulators (the engine stops on any other, so clamping here only keeps the shifts exact)
    x = np.clip(acc, INT32_MIN, INT32_MAX)
    q, shift = _tflite_multiplier(m, single_rounding=mode == "fixed_single")
    if mode == "fixed_single":
        return _shift_half_up(x * q, 31 - shift)     # x*q / 2^(31 - shift) rounded half up: one rounding
    # fixed_double: SaturatingRoundingDoublingHighMul (x*q / 2^31 rounded half up; q > 0, so it never
    # saturates), then RoundingDivideByPOT (half away from zero); fixed_double_ruy (ruy's AVX kernels, NEON's
    # vqrdmulh + vrshl): the same high product, then a right shift rounding half up
    x = np.clip(x * (1 << max(shift, 0)), INT32_MIN, INT32_MAX)
    high = _shift_half_up(x * q, 31)
    if mode == "fixed_double_ruy":
        return _shift_half_up(high, max(-shift, 0))
    return _shift_half_away(high, max(-shift, 0))


def requantize_declared(acc: np.ndarray, multipliers, mode: str) -> np.ndarray:
    """[N, C, ...] int64 accumulators requantized channel by channel (axis 1) in `mode`."""
    m = np.broadcast_to(np.asarray(multipliers, dtype=np.float64), (acc.shape[1],))
    out = np.empty(acc.shape, dtype=np.int64)
    channels = acc.shape[1]
    for c in range(channels):
        mode_c = mode
        if mode == "fixed_double_blocks8":   # TFLite's x86 depthwise: NEON rounding on whole blocks of 8 channels
            mode_c = "fixed_double_ruy" if c < channels // 8 * 8 else "fixed_double"
        out[:, c] = _requantize_one(acc[:, c], float(m[c]), mode_c)
    return out


def _xnnpack_add_declared(lay: Layer, values: list) -> np.ndarray:
    """XNNPACK's add (rescale "xnnpack") from its definition: float32 ratios r_i = f32(s_i) / f32(s_out) (the
    second negated by subtract), shift = 20 - floor(log2(max |r_i|)), multipliers |r_i| * 2^shift rounded half
    to even with r_i's sign; (sum v_i * m_i + 2^(shift - 1)) >> shift, on Python integers."""
    f = np.float32
    ratios = [f(lay.in_encs[0].scale) / f(lay.out_enc.scale), f(lay.in_encs[1].scale) / f(lay.out_enc.scale)]
    if lay.attr("subtract"):
        ratios[1] = -ratios[1]
    exponent = math.floor(math.log2(max(abs(float(r)) for r in ratios)))
    while 2.0 ** exponent > max(abs(float(r)) for r in ratios):   # log2 rounding at an exact power of two
        exponent -= 1
    shift = 20 - exponent
    mults = [round(abs(float(r)) * 2 ** shift) * (1 if r > 0 else -1) for r in ratios]   # round(): half even
    a, b = np.broadcast_arrays(*values)
    out = [(int(x) * mults[0] + int(y) * mults[1] + 2 ** (shift - 1)) >> shift
           for x, y in zip(a.ravel().tolist(), b.ravel().tolist())]
    return np.asarray(out, dtype=np.int64).reshape(a.shape)


def _xnnpack_mean_declared(lay: Layer, x_codes: np.ndarray) -> np.ndarray:
    """XNNPACK's MEAN over H, W (avgpool rounding "xnnpack_mean") from its definition: S = sum of raw codes,
    k = f32(f32(s_in / s_out) * f32(1 / N)), z = f32(zp_out - f32(f32(N * zp_in) * k)), code =
    nearbyint(f32(f32(S) * k) + z) saturated to the output codes."""
    f = np.float32
    enc, out = lay.in_encs[0], lay.out_enc
    n_cells = x_codes.shape[2] * x_codes.shape[3]
    k = f(f(enc.scale) / f(out.scale)) * (f(1) / f(n_cells))
    z = f(out.zero_point) - f(f(n_cells * enc.zero_point) * k)
    sums = x_codes.astype(np.int64).sum(axis=(2, 3), keepdims=True)
    lo, hi = out.code_range()
    return np.clip(np.rint((sums.astype(np.float32) * k + z).astype(np.float64)), lo, hi).astype(np.int64)


def _tflite_mean_declared(lay: Layer, x_codes: np.ndarray) -> np.ndarray:
    """LiteRT's int8 MEAN over H, W (avgpool rounding "tflite_mean_reference" / "tflite_mean_optimized") from its
    definition, per output on Python integers. Reference (reference/reduce.h): (q, e) = QuantizeMultiplier(s_in /
    s_out), k = min(floor(log2 N), 32, 31 + e), q' = floor(q * 2^k / N), S = sum(code - zp_in); out = zp_out +
    RDBPOT(SRDHM(S * 2^max(e - k, 0), q'), max(k - e, 0)). Optimized (optimized/integer_ops/mean.h, one thread):
    (q, e) of f32(s_in / f32(N * s_out)), S = sum of raw codes, out = SRDHM then the right shift (half up on
    channels below 16 * floor(C / 16), the NEON blocks; half away from zero after them) + zp_out -
    trunc(t +- 0.5) with t = f32(f32(zp_in * s_in) / s_out)."""
    f = np.float32
    enc, out = lay.in_encs[0], lay.out_enc
    n_batch, channels = x_codes.shape[:2]
    n_cells = x_codes.shape[2] * x_codes.shape[3]
    lo, hi = out.code_range()
    sums = x_codes.astype(np.int64).sum(axis=(2, 3))

    def srdhm(a: int, b: int) -> int:              # round(a * b / 2^31), ties up (q > 0: no saturation)
        return (a * b + (1 << 30)) >> 31

    def shift_away(x: int, s: int) -> int:         # x / 2^s rounded half away from zero
        if s == 0:
            return x
        r = (abs(x) + (1 << (s - 1))) >> s
        return r if x >= 0 else -r

    optimized = lay.attr("rounding") == "tflite_mean_optimized"
    if optimized:
        q, e = _tflite_multiplier(float(f(f(enc.scale) / f(f(n_cells) * f(out.scale)))), single_rounding=False)
        t = f(f(f(enc.zero_point) * f(enc.scale)) / f(out.scale))
        bias = out.zero_point - int(f(t + f(0.5)) if t > 0 else f(t - f(0.5)))
    else:
        q0, e0 = _tflite_multiplier(float(enc.scale) / float(out.scale), single_rounding=False)
        k = min(n_cells.bit_length() - 1, 32, 31 + e0)
        q, e, bias = (q0 << k) // n_cells, e0 - k, out.zero_point
    result = np.empty((n_batch, channels), dtype=np.int64)
    for b in range(n_batch):
        for c in range(channels):
            total = int(sums[b, c]) if optimized else int(sums[b, c]) - enc.zero_point * n_cells
            high = srdhm(total << max(e, 0), q)
            s = max(-e, 0)
            if optimized and c < channels // 16 * 16 and s > 0:
                val = (high + (1 << (s - 1))) >> s
            else:
                val = shift_away(high, s)
            result[b, c] = min(max(val + bias, lo), hi)
    return result.reshape(n_batch, channels, 1, 1)


def _add_declared(lay: Layer, inputs: list) -> np.ndarray:
    """The residual add in its declared arithmetic (docs/qnn-format.md, Residual add), in output values."""
    mode, encs = lay.attr("requant"), lay.in_encs
    values = [e.decode(x) for e, x in zip(encs, inputs)]
    if lay.attr("rescale") == "xnnpack":
        return _xnnpack_add_declared(lay, values)
    scales = [e.value_scale for e in encs]
    s_out = lay.out_enc.value_scale
    if mode in ("float32", "float64"):
        ftype = np.float32 if mode == "float32" else np.float64
        with np.errstate(over="ignore", invalid="ignore"):
            g = [1, -1] if lay.attr("subtract") else [1] * len(values)
            if lay.attr("rescale") == "dequantize":   # each input dequantized, summed in order, / s_out
                total = sum(gi * (v.astype(ftype) * ftype(s)) for gi, v, s in zip(g, values, scales))
                r = np.rint(total / ftype(s_out))
            else:                                      # each input times its ratio s_i / s_out, summed
                r = np.rint(sum(gi * (v.astype(ftype) * ftype(s / s_out)) for gi, v, s in zip(g, values, scales)))
        return np.clip(r, -2.0 ** 62, 2.0 ** 62).astype(np.int64)
    if mode == "shift":   # aligned to the finest scale by left shifts (power-of-two ratios), then shifted out
        finest = min(scales)
        g = [1, -1] if lay.attr("subtract") else [1] * len(values)
        total = sum(gi * v * int(round(s / finest)) for gi, v, s in zip(g, values, scales))
        return _requantize_one(total, finest / s_out, "shift")
    # TFLite's integer add: inputs << left_shift, each rescaled to twice the larger scale, summed (SUB: the
    # second rescaled value subtracted), rescaled out
    value_bits = max(max(abs(lo), abs(hi)).bit_length() for lo, hi in (e.value_range() for e in encs))
    left_shift = min(20, 30 - value_bits)
    twice_max = 2.0 * max(scales)
    signs = [1, -1] if lay.attr("subtract") else [1] * len(values)
    def double(v, r):
        return _requantize_one(v << left_shift, r, mode)

    def single(v, r):   # TFLite's SIMD add: the right shift folded into the left shift, one SRDHM rounding (ties up)
        q, shift = _tflite_multiplier(r, single_rounding=False)
        return _shift_half_up((v << (left_shift + min(shift, 0))) * q, 31)

    def total(rescale):
        return sum(g * rescale(v, s / twice_max) for g, v, s in zip(signs, values, scales))
    out = _requantize_one(total(double), twice_max / ((1 << left_shift) * s_out), mode)
    if lay.attr("input_rounding") == "single":
        out_single = _requantize_one(total(single), twice_max / ((1 << left_shift) * s_out), mode)
        # the SIMD blocks: the first 16 * floor(size / 16) elements of a sample in TFLite's order (NHWC for
        # [C, H, W]); the rest is the scalar tail, which rounds twice
        shape = out.shape[1:]
        size = int(np.prod(shape))
        if len(shape) == 3:
            c_idx, h_idx, w_idx = np.indices(shape)
            position = (h_idx * shape[2] + w_idx) * shape[0] + c_idx
        else:
            position = np.arange(size).reshape(shape)
        out = np.where(position[None] < size - size % 16, out_single, out)
    return out


def _mul_declared(lay: Layer, inputs: list) -> np.ndarray:
    """The elementwise product in its declared arithmetic: float32 as ONNX Runtime's QLinearMul, or float64."""
    (ea, eb), out = lay.in_encs, lay.out_enc
    product = ea.decode(inputs[0]) * eb.decode(inputs[1])
    lo, hi = out.code_range()
    if lay.attr("clip") is not None:         # the fused activation: a clamp of the output values
        lo = max(lo, min(hi, lay.attr("clip")[0] + out.zero_point))
        hi = min(out.code_range()[1], max(out.code_range()[0], lay.attr("clip")[1] + out.zero_point))
    with np.errstate(over="ignore", invalid="ignore"):
        if lay.attr("requant") == "tflite":    # TFLite's MUL: fixed point of the float32 ratio, double rounding
            ratio = np.float32(np.float32(ea.scale) * np.float32(eb.scale)) / np.float32(out.scale)
            codes = _requantize_one(product, float(ratio), "fixed_double") + out.zero_point
        elif lay.attr("requant") == "xnnpack":   # XNNPACK's vmul: float32 product and ratio, zp added after rounding
            ratio = np.float32(np.float32(ea.scale) * np.float32(eb.scale)) / np.float32(out.scale)
            codes = np.rint((product.astype(np.float32) * ratio).astype(np.float64)) + out.zero_point
        elif lay.attr("requant") == "float32":
            ratio = np.float32(np.float32(ea.scale) * np.float32(eb.scale)) / np.float32(out.scale)
            codes = np.rint(product.astype(np.float32) * ratio + np.float32(out.zero_point)).astype(np.float64)
            # the float -> int32 conversion (cvtps2dq) gives INT32_MIN for anything outside int32
            codes = np.where((codes >= -2.0 ** 31) & (codes < 2.0 ** 31), codes, -2.0 ** 31)
        else:
            real = product.astype(np.float64) * (ea.scale * eb.scale / out.scale)
            codes = np.rint(np.clip(real, -2.0 ** 62, 2.0 ** 62)) + out.zero_point
    return np.clip(codes, lo, hi).astype(np.int64)


def _encode_values(lay, values: np.ndarray) -> np.ndarray:
    """Output values (integers) -> codes: the layer's clip, then its encoder."""
    clip = lay.attr("clip")
    if clip is not None:
        values = np.clip(values, clip[0], clip[1])
    return lay.out_enc.encode(values)


def _quantize(lay, value):
    v = round_float(value, REQUANT_ROUNDING[lay.attr("requant")])
    clip = lay.attr("clip")
    if clip is not None:
        v = np.clip(v, clip[0], clip[1])
    return lay.out_enc.encode(np.clip(v, -2.0 ** 62, 2.0 ** 62).astype(np.int64))


def _pool_windows(lay, x, pad_value):
    pt, pl, pb, pr = lay.attr("padding")
    xp = np.pad(x, ((0, 0), (0, 0), (pt, pb), (pl, pr)), constant_values=pad_value)
    kh, kw = lay.attr("kernel")
    sh, sw = lay.attr("stride")
    return sliding_window_view(xp, (kh, kw), axis=(2, 3))[:, :, ::sh, ::sw]


def _window_sums(lay, x, fill):
    """Per pooling window: the sum of its cells (padded cells worth `fill`) and its count of real cells, from
    summed-area tables (exact integer sums; memory ~ the padded input, not the windows)."""
    pt, pl, pb, pr = lay.attr("padding")
    kh, kw = lay.attr("kernel")
    sh, sw = lay.attr("stride")
    n, c, h, w = x.shape
    ints = np.issubdtype(np.asarray(x).dtype, np.integer)
    xp = np.pad(np.asarray(x, dtype=np.int64 if ints else np.float64), ((0, 0), (0, 0), (pt, pb), (pl, pr)))
    real = np.pad(np.ones((h, w), dtype=np.int64), ((pt, pb), (pl, pr)))
    rows = np.arange((h + pt + pb - kh) // sh + 1) * sh
    cols = np.arange((w + pl + pr - kw) // sw + 1) * sw

    def box(a):
        table = np.zeros(a.shape[:-2] + (a.shape[-2] + 1, a.shape[-1] + 1), dtype=a.dtype)
        table[..., 1:, 1:] = a.cumsum(-2).cumsum(-1)
        top, bottom = table[..., rows, :], table[..., rows + kh, :]
        return (bottom[..., cols + kw] - bottom[..., cols] - top[..., cols + kw] + top[..., cols])

    count = box(real)
    sums = box(xp).astype(np.float64)
    if fill:
        sums = sums + fill * (kh * kw - count)
    return sums, count


def reference_layer(lay: Layer, inputs: list) -> np.ndarray:
    """One layer of the float reference, on input codes; returns output codes in the layer's declared
    arithmetic (module docstring)."""
    if lay.op in ("conv2d", "dense"):
        return reference_mac(lay, inputs[0])
    if lay.op == "add":
        return _encode_values(lay, _add_declared(lay, inputs))
    if lay.op == "mul":
        return _mul_declared(lay, inputs)
    if lay.op == "avgpool" and lay.attr("rounding") == "xnnpack_mean":
        return _xnnpack_mean_declared(lay, inputs[0])
    if lay.op == "avgpool" and lay.attr("rounding") in ("tflite_mean_reference", "tflite_mean_optimized"):
        return _tflite_mean_declared(lay, inputs[0])
    if lay.op == "avgpool" and lay.attr("rounding") == "tflite_codes":
        # TFLite's mean of the raw codes (zero point included) over the real cells, half away from zero
        enc = lay.in_encs[0]
        sums, count = _window_sums(lay, inputs[0].astype(np.float64), 0.0)
        return enc.encode(round_float(sums / count, "half_away").astype(np.int64) - enc.zero_point)
    return exact_reference_layer(lay, inputs)


def reference_layer_pair(lay: Layer, inputs: list) -> tuple[np.ndarray, np.ndarray]:
    """(declared, exact-rounding) output codes of one layer; the same array twice where they cannot differ."""
    if lay.op in ("conv2d", "dense"):
        return reference_mac_pair(lay, inputs[0])
    if lay.op in ("add", "mul") or (lay.op == "avgpool" and lay.attr("rounding") in (
            "xnnpack_mean", "tflite_mean_reference", "tflite_mean_optimized", "tflite_codes")):
        return reference_layer(lay, inputs), exact_reference_layer(lay, inputs)
    out = exact_reference_layer(lay, inputs)
    return out, out


def exact_reference_layer(lay: Layer, inputs: list) -> np.ndarray:
    """One layer on input codes, its exact real result rounded with the mode's tie rule (module docstring)."""
    if lay.op in ("conv2d", "dense"):
        return reference_mac_pair(lay, inputs[0])[1]
    enc = lay.in_encs[0]
    if lay.op == "maxpool":
        # Pooling works on the integer values: the scale cancels, and floats would blur exact ties.
        x = enc.decode(inputs[0]).astype(np.float64)
        out = _pool_windows(lay, x, -np.inf).max(axis=(-2, -1))
        return enc.encode(out.astype(np.int64))
    if lay.op == "avgpool":
        x = enc.decode(inputs[0]).astype(np.float64)
        pad_value = float(enc.decode(np.array([zero_code(enc)]))[0])
        sums, count = _window_sums(lay, x, pad_value if lay.attr("count_include_pad") else 0.0)
        if lay.attr("count_include_pad"):
            count = int(np.prod(lay.attr("kernel")))
        if lay.attr("rounding") == "tflite_codes":
            # the exact mean of the values over the real cells, half away from zero (the raw codes' zero point
            # moves TFLite's ties: reference_layer)
            sums, count = _window_sums(lay, x, 0.0)
            return enc.encode(round_float(sums / count, "half_away").astype(np.int64))
        if lay.attr("rounding") in ("ort_float32", "xnnpack_mean", "tflite_mean_reference", "tflite_mean_optimized"):
            # ONNX Runtime's / XNNPACK's arithmetic means: the exact mean, rescaled to the output encoding, half to even
            mean = sums / count * enc.value_scale / lay.out_enc.value_scale
            return lay.out_enc.encode(np.clip(round_float(mean, "half_even"), -2.0 ** 62, 2.0 ** 62).astype(np.int64))
        return enc.encode(round_float(sums / count, lay.attr("rounding")).astype(np.int64))
    if lay.op in ("relu", "clip"):
        lo, hi = (0, None) if lay.op == "relu" else (lay.attr("min"), lay.attr("max"))
        return enc.encode(np.clip(enc.decode(inputs[0]), lo, hi))
    if lay.op in ("flatten", "reshape"):
        return inputs[0].reshape((inputs[0].shape[0],) + tuple(lay.out_shape))
    if lay.op == "concat":
        return np.concatenate(inputs, axis=1)
    if lay.op == "add":
        signs = [1, -1] if lay.attr("subtract") else [1] * len(inputs)
        total = sum(sign * _real(e, x) for sign, e, x in zip(signs, lay.in_encs, inputs))
        if lay.attr("rescale") == "xnnpack":   # XNNPACK's shift means ties up
            v = round_float(total / lay.out_enc.value_scale, "half_up")
            return _encode_values(lay, np.clip(v, -2.0 ** 62, 2.0 ** 62).astype(np.int64))
        return _quantize(lay, total / lay.out_enc.value_scale)
    if lay.op == "mul":
        # exact real product, rounded half to even (the float32 mode's own effects show in validate)
        (ea, eb), out = lay.in_encs, lay.out_enc
        real = _real(ea, inputs[0]) * _real(eb, inputs[1]) / out.scale
        lo, hi = out.code_range()
        if lay.attr("clip") is not None:     # the fused activation, in output value units
            lo, hi = max(lo, min(hi, lay.attr("clip")[0] + out.zero_point)), min(hi, max(lo, lay.attr("clip")[1] + out.zero_point))
        return np.clip(np.rint(np.clip(real, -2.0 ** 62, 2.0 ** 62)) + out.zero_point, lo, hi).astype(np.int64)
    if lay.op == "resize":
        size, scales, coord = lay.attr("size"), lay.attr("scales"), lay.attr("coordinate")
        if lay.attr("mode") == "nearest":
            return resize.resize_nearest(inputs[0], size, scales, coord, lay.attr("nearest_mode"))
        out = lay.out_enc
        return resize.resize_linear_exact(enc.decode(inputs[0]), enc.scale, size, scales, coord, out.scale,
                                          out.zero_point, *out.code_range())
    if lay.op == "softmax":   # the exact softmax; ORT's table arithmetic shows as a difference in validate
        x = inputs[0]
        if x.ndim == 2:
            return softmax_exact(_real(enc, x), lay.out_enc)
        n, c, h, w = x.shape    # over the channels of each pixel
        rows = x.transpose(0, 2, 3, 1).reshape(-1, c)
        return softmax_exact(_real(enc, rows), lay.out_enc).reshape(n, h, w, c).transpose(0, 3, 1, 2)
    if lay.op == "lut_avgpool":   # the float32 table is the definition; the mean in float64, half to even
        vals = lut_lookup(inputs[0], lay.table, enc.code_range()[0]).astype(np.int32).view(np.float32)
        mean = vals.astype(np.float64).mean(axis=(2, 3), keepdims=True)
        out = lay.out_enc
        q = np.rint(np.clip(mean / out.scale, -2.0 ** 40, 2.0 ** 40)) + out.zero_point
        return np.clip(q, *out.code_range()).astype(np.int64)
    if lay.op == "transpose":
        return inputs[0].transpose((0,) + tuple(p + 1 for p in lay.attr("perm")))
    if lay.op == "dilate":
        return dilate_codes(inputs[0], lay.attr("stride"), zero_code(enc))
    if lay.op == "pad":
        top, left, bottom, right = lay.attr("padding")
        code = zero_code(enc) if lay.attr("pad_code") is None else lay.attr("pad_code")
        x = inputs[0]
        out = np.full(x.shape[:2] + (x.shape[2] + top + bottom, x.shape[3] + left + right), code, dtype=np.int64)
        out[:, :, top:top + x.shape[2], left:left + x.shape[3]] = x
        return out
    if lay.op == "lut":
        # The table is the unit's definition (computed at import from the float function it stands for), as the
        # encoders are the storage format's: both sides look it up.
        return lut_lookup(inputs[0], lay.table, lay.in_encs[0].code_range()[0])
    raise AssertionError(lay.op)


def run_reference(model: Model, codes: np.ndarray) -> dict:
    """Run the whole graph in the float reference; returns codes of every tensor by name."""
    tensors = {"input": check_input_shape(model, np.asarray(codes)).astype(np.int64)}
    for lay in model.layers:
        tensors[lay.name] = reference_layer(lay, [tensors[n] for n in lay.inputs])
    return tensors
