"""The bit-exact integer engine: runs a Model on integer codes and records exact event counts.

Per conv / dense layer the datapath is (DESIGN.md):
  decode inputs (uniform: code - zp, ENQ: CE left shift, KNQ: CK centroid mux, binary: sign bits)
  -> MAC PE (or XNOR-popcount PE) into a declared accumulator (wrap / saturate, overflow count), bias preloaded
  -> requantizer (declared mode) -> clip/ReLU in the output's value domain
  -> encoder (uniform clamp + zp, ENQ: QE, KNQ: QK, binary: sign).
The engine knows nothing of energy; it hands a Trace of counts to the cost model.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace

import numpy as np

from .encodings import BinaryAct, CodebookW, EnqAct, Float32W, KnqAct, ThresholdAct, UniformAct
from .errors import HwsimError
from . import interrupt
from .graph import (LIMITS, MAC_OPS, Layer, Model, check_run_work, default_pad_code, layer_figures, pad_value,
                    run_work, table_bits)
from .kernels import code_tables, codes_path, im2col, mac, pairsat, popcount
from .kernels.im2col import conv_geometry
from .kernels.epilogue import code_dtype, make_epilogue, run_epilogue, run_thresholds
from .trace import STATIC_FIELDS, LayerCounts, Trace
from .units import float_conv_transpose, pooling, resize, xnnpack_ops
from .units.codebook_lut import lut_decode
from .units.elementwise import (dilate_codes, lut_avgpool_ort, lut_lookup, mul_codes, qlinear_softmax,
                                softmax_exact, tflite_mean, tflite_softmax)
from .units.requantizer import requantize
from .units.residual_add import SIMD_BLOCK, residual_add, simd_tail_mask
from .units.rounding import round_float
from .units.zero_gating import zero_operand_macs


def over_channels(rows_fn, x: np.ndarray) -> np.ndarray:
    """Apply a function of [rows, K] rows to [N, K] (one row per sample) or along the channels of [N, C, H, W]
    (one row per pixel: a softmax over channels, as TFLite's over the last NHWC axis)."""
    if x.ndim == 2:
        return rows_fn(x)
    n, c, h, w = x.shape
    rows = np.ascontiguousarray(x.transpose(0, 2, 3, 1)).reshape(n * h * w, c)
    return rows_fn(rows).reshape(n, h, w, c).transpose(0, 3, 1, 2)


def quantize_input(model: Model, x: np.ndarray) -> np.ndarray:
    """The model's input quantizer: float array -> input codes (integer arrays are taken as codes), in the
    narrowest dtype of the input encoding (kernels/epilogue.code_dtype)."""
    enc = model.input_enc
    if np.issubdtype(x.dtype, np.integer):
        lo, hi = enc.code_range()
        if x.size and (x.min() < lo or x.max() > hi):
            raise HwsimError(f"integer input taken as codes, but values lie outside [{lo}, {hi}]", field="input")
        return x.astype(code_dtype(enc))
    if not np.issubdtype(x.dtype, np.floating):
        raise HwsimError(f"input must be a float or integer array, got dtype {x.dtype}", field="input")
    if not np.all(np.isfinite(x)):
        raise HwsimError("input contains NaN or infinity", field="input")
    if isinstance(enc, BinaryAct):
        return (x < 0).astype(np.uint8)
    if model.input_division == "tflite_optimized":
        return _quantize_tflite_optimized(enc, x)
    out = np.empty(x.shape, code_dtype(enc))
    flat_in, flat_out = x.reshape(-1), out.reshape(-1)
    for start in range(0, flat_in.size, QUANTIZE_CHUNK):   # float64 temporaries of one chunk at a time
        flat_out[start:start + QUANTIZE_CHUNK] = _quantize_values(model, flat_in[start:start + QUANTIZE_CHUNK])
    return out


QUANTIZE_CHUNK = 1 << 20   # input elements quantized at a time (a few MB of float64 temporaries)


def _quantize_tflite_optimized(enc, x: np.ndarray) -> np.ndarray:
    """LiteRT's optimized int8 QUANTIZE on x86 (optimized_ops.h AffineQuantize, NEON code through NEON_2_SSE), per
    sample: blocks of 8 values rint(x * float32(1 / double(scale))), half to even; the size mod 8 values left
    over round(x / double(scale)), half away from zero. (x: [N, ...] float, N samples = N invocations.)"""
    flat = x.reshape(x.shape[0], -1).astype(np.float32)
    body = flat.shape[1] // 8 * 8
    v = np.empty(flat.shape, np.float64)
    with np.errstate(over="ignore"):
        v[:, :body] = np.rint(flat[:, :body] * np.float32(1.0 / enc.value_scale))
    v[:, body:] = round_float(flat[:, body:].astype(np.float64) / enc.value_scale, "half_away")
    return enc.encode(np.clip(v, -2.0 ** 40, 2.0 ** 40).astype(np.int64)).reshape(x.shape).astype(code_dtype(enc))


def _quantize_values(model: Model, x: np.ndarray) -> np.ndarray:
    enc = model.input_enc
    if model.input_division == "float32":
        # ONNX Runtime's QuantizeLinear: the float32 input divided by the float32 scale in IEEE single precision
        with np.errstate(over="ignore"):
            v = (x.astype(np.float32) / np.float32(enc.value_scale)).astype(np.float64)
    elif model.input_division == "xnnpack":
        # LiteRT's XNNPACK QUANTIZE (f32-qs8-vcvt): the float32 input times float32(1 / scale) in float32
        with np.errstate(over="ignore"):
            v = (x.astype(np.float32) * (np.float32(1.0) / np.float32(enc.value_scale))).astype(np.float64)
    else:
        v = x.astype(np.float64) / enc.value_scale  # a true division, as ONNX QuantizeLinear
    v = round_float(v, model.input_rounding)
    return enc.encode(np.clip(v, -2.0 ** 40, 2.0 ** 40).astype(np.int64))


def check_input_shape(model: Model, codes: np.ndarray) -> np.ndarray:
    shape = tuple(model.input_shape)
    if tuple(codes.shape) == shape:
        codes = codes[None]
    if tuple(codes.shape[1:]) != shape:
        raise HwsimError(f"input shape {list(codes.shape)} does not match the model's [N, {', '.join(map(str, shape))}]",
                         field="input")
    return codes


# --------------------------------------------------------------------------------------------- layer plans

@dataclass
class MacPlan:
    """What a MAC layer needs at run time, prepared once from the model (weights decoded, multipliers)."""
    w_values: np.ndarray            # integer operand values
    w_bits: np.ndarray | None       # sign bits for the XNOR path
    multiplier: np.ndarray          # s_in * s_w[c] / s_out (or the file's explicit multiplier)
    pad_value: int
    bias: np.ndarray | None
    epilogue: object = None         # the fused requantize -> clip -> encode pass (kernels/epilogue.py), if any
    from_codes: object = None       # CodesPlan: the exact sum straight from the codes (kernels/codes_path.py)
    thresholds: np.ndarray | None = None   # a threshold output's [Co, n] comparator thresholds


@dataclass
class CodesPlan:
    table: np.ndarray               # operand value of each input code (index code - code_lo)
    code_lo: int
    x_reach: int                    # largest |operand| a window can see (codes and padding)
    w_max: int
    is_zero: np.ndarray             # per code: its value is 0
    zero_w_per_tap: np.ndarray      # [Ci, KH, KW]: zero weights among a group's filters at each tap
    zero_w_total: int
    acc_dtype: type                 # int32 where the bound (bias included) fits it: half the memory traffic
    memo: dict = field(default_factory=dict)   # per input shape: geometry, packed weights, tile plans
    u8_offset: int | None = None    # operands within 256 consecutive values and int8 weights: operand = byte +
    #                                 u8_offset on the u8 x s8 kernel (codes_path.conv2d_sum_u8)
    u8_bytes: np.ndarray | None = None   # byte of each code (None: byte = code - code_lo, a uniform input)
    pair_sat: pairsat.SaturatingPairs | None = None   # datapath x86_pair_sat16: the exact sums corrected by the
    #                                 pairs that can saturate (pairsat.add_pair_saturation)
    pad_code: int = 0               # the raw code of a padded position (for the pair-saturation correction)
    pair_sat_kernel: bool = False   # x86_pair_sat16 whose pairs are the canvas's: the u8 kernel's pair-saturating
    #                                 step (vpmaddubsw) computes the datapath's sums; the correction only counts


# The exact u8 x s8 kernel where vpdpbusd runs it; elsewhere its generic IR is ~8x slower than the int16 kernel
# (measured on AVX2), which the plan then takes. A switch, so that tests can take either route on any CPU.
U8_KERNEL = im2col.VNNI


def make_codes_plan(lay: Layer, w_values: np.ndarray, pad: int, bias) -> CodesPlan | None:
    """The code-driven fast path of a MAC layer, when the accumulator bound proves it exact for any input
    (from the encoding's largest |value|, not from data), and its operands fit the int16 micro-kernel."""
    if lay.is_xnor:
        return None
    enc = lay.in_encs[0]
    table = codes_path.decode_table(enc)
    if table is None:
        return None
    x_reach = max(int(np.abs(table).max()), abs(pad))
    w_max = max(abs(int(w_values.min())), abs(int(w_values.max()))) if w_values.size else 0   # no int8 abs wrap
    bound = mac.accumulator_bound(x_reach, w_values, bias)
    if not codes_path.fits_int16(x_reach, w_max) or bound > mac.acc_limits(lay.attr("acc_bits"))[1]:
        return None
    w4 = w_values if w_values.ndim == 4 else w_values[:, :, None, None]
    groups = lay.attr("groups") if lay.op == "conv2d" else 1
    co, cig, kh, kw = w4.shape
    zero_w = (w4 == 0).reshape(groups, co // groups, cig, kh, kw).sum(axis=1).reshape(groups * cig, kh, kw)
    plan = CodesPlan(table, enc.code_range()[0], x_reach, w_max, table == 0, zero_w.astype(np.int64),
                     int((w4 == 0).sum()), np.int32 if bound < (1 << 31) else np.int64)
    if lay.attr("datapath") == "x86_pair_sat16":
        sat_bound = _pair_sat_bound(lay, bias)
        if sat_bound > mac.acc_limits(lay.attr("acc_bits"))[1]:
            return None   # an accumulator could overflow: the sequential pair-saturation kernel counts it
        plan.pair_sat = pairsat.saturating_pairs(lay.weight if lay.weight.ndim == 4 else lay.weight[:, :, None, None])
        code = lay.attr("pad_code")
        plan.pad_code = (default_pad_code(enc) if code is None else code) + _u8_shift(enc)   # its u8 operand
        plan.acc_dtype = np.int32 if max(bound, sat_bound) < (1 << 31) else np.int64
        cig = lay.weight.shape[1]
        if cig % 2 == 0 and not np.any(lay.weight_enc.zero_point) and 0 <= plan.pad_code <= 255:
            # even channel counts: MLAS's pairs (2j, 2j + 1) never cross a kernel tap, so they are the canvas's;
            # zero weight points: the kernel's weights are the raw codes the datapath multiplies
            plan.u8_offset, plan.pair_sat_kernel = int(table[0]), True
        return plan   # otherwise exact sums on the int16 kernel (faster than the u8 one off VNNI), corrected
    # operands that fit a window of 256 values (uniform 8-bit, KNQ, small ENQ) with int8 weights: the u8 x s8
    # kernel on bytes = value - offset (uniform: the codes themselves, no table read)
    linear = bool(np.array_equal(table, np.arange(table.size) + int(table[0])))
    offset = int(table[0]) if linear else int(table.min())
    span_ok = (table.size <= 256) if linear else (int(table.max()) - offset <= 255)
    if (U8_KERNEL and span_ok and 0 <= pad - offset <= 255
            and (w_values.size == 0 or (w_values.min() >= -128 and w_values.max() <= 127))):
        plan.u8_offset = offset
        if not linear:
            plan.u8_bytes = (table - offset).astype(np.uint8)
    return plan


def _pair_sat_bound(lay: Layer, bias) -> int:
    """Largest |partial sum| of the pair-saturating datapath (kernels/pairsat.py): bias, then pair sums no larger
    than the raw products' (|s_j| <= |p_j| <= 255·(|w_a| + |w_b|)), then the zero-point correction
    -zw·Σx - zx·Σw + K·zx·zw with Σx in [0, 255·K]."""
    w = lay.weight.astype(np.int64).reshape(lay.weight.shape[0], -1)
    k = w.shape[1]
    zx = int(lay.in_encs[0].zero_point) + _u8_shift(lay.in_encs[0])
    zw = np.broadcast_to(np.asarray(lay.weight_enc.zero_point, np.int64).reshape(-1), (w.shape[0],))
    b = np.zeros(w.shape[0], np.int64) if bias is None else np.abs(np.asarray(bias, np.int64))
    corr = np.abs(zw) * 255 * k + np.abs(k * zx * zw - zx * w.sum(axis=1))
    return int((b + 255 * np.abs(w).sum(axis=1) + corr).max()) if w.size else 0


def decode_weights(lay: Layer) -> np.ndarray:
    enc = lay.weight_enc
    if isinstance(enc, CodebookW):
        co = lay.weight.shape[0]
        return lut_decode(lay.weight.astype(np.int64), lay.codebook.astype(np.int64), enc.groups(co))
    return enc.decode(lay.weight)


def narrowest(values: np.ndarray) -> np.ndarray:
    """A private copy of integer `values` in the narrowest signed dtype that holds them."""
    values = np.asarray(values)
    if values.size and values.dtype.kind in "iu":
        lo, hi = int(values.min()), int(values.max())
        for dt in (np.int8, np.int16, np.int32):
            if np.iinfo(dt).min <= lo and hi <= np.iinfo(dt).max:
                return values.astype(dt)
    return np.array(values)


def layer_multiplier(lay: Layer) -> np.ndarray:
    """Real value of one accumulator unit in output value units, per output channel."""
    co = lay.out_shape[0]
    explicit = lay.attr("multiplier")
    if explicit is not None:
        return np.broadcast_to(np.asarray(explicit, dtype=np.float64), (co,)).copy()
    s_in = lay.in_encs[0].value_scale
    return s_in * lay.weight_enc.channel_scales(co) / lay.out_enc.value_scale


def make_plan(lay: Layer) -> MacPlan:
    if isinstance(lay.weight_enc, Float32W):   # ORT's float32 ConvTranspose: no integer operands, bound or epilogue
        w = Float32W.floats(lay.weight).copy()
        w.flags.writeable = False
        bias = None if lay.bias is None else lay.bias.astype(np.int64)
        return MacPlan(w, None, layer_multiplier(lay), pad_value(lay), bias)
    # A private read-only copy: the kernels then trust their packed-weight cache without re-checking it.
    w_values = narrowest(decode_weights(lay))   # int8 for 8-bit weights: an eighth of int64's memory
    w_values.flags.writeable = False
    pad = pad_value(lay) if lay.op == "conv2d" else 0
    bias = None if lay.bias is None else lay.bias.astype(np.int64)
    plan = MacPlan(w_values, None, layer_multiplier(lay), pad, bias)
    if not lay.is_xnor:
        plan.epilogue = make_epilogue(plan.multiplier, lay.attr("requant"), lay.attr("clip"), lay.out_enc)
    plan.from_codes = make_codes_plan(lay, w_values, pad, bias)
    if isinstance(lay.out_enc, ThresholdAct):
        plan.thresholds = np.ascontiguousarray(lay.out_enc.threshold_array(lay.out_shape[0]))
    if lay.is_xnor:   # Model.check() proved the accumulator holds the binary dot product
        plan.w_bits = lay.weight.astype(np.uint8)
        plan.w_bits.flags.writeable = False   # frozen: the packed-filter cache then trusts it without a compare
    # threshold outputs (row count, no clip) are checked by Model.check(), so a model that loads also runs
    return plan


# --------------------------------------------------------------------------------------------- engine

@dataclass
class RunResult:
    output: np.ndarray                 # codes of the model's output tensor [N, ...]
    tensors: dict                      # codes of every tensor by name (when keep_all)
    trace: Trace
    functional_s: float = 0.0


@dataclass
class Engine:
    model: Model
    plans: dict = field(default_factory=dict)
    _work_checked: bool = field(default=False, repr=False)
    _work: int | None = field(default=None, repr=False)
    _single: tuple | None = field(default=None, repr=False)
    _tables: dict = field(default_factory=dict, repr=False)   # per layer: its code table (kernels/code_tables.py)
    _traffic: dict = field(default_factory=dict, repr=False)  # per layer: its tensors' bit widths (_count_traffic)
    _steps: list | None = field(default=None, repr=False)     # per layer: what _run_codes needs (_schedule)
    # binary tensors kept as packed bits (packed_binary_tensors): name -> (C, H, W); XNOR dense weights in the
    # bit order of a packed input, per layer
    _packed: dict = field(default_factory=dict, repr=False)
    _dense_bits: dict = field(default_factory=dict, repr=False)
    _xnor_convs: dict = field(default_factory=dict, repr=False)   # per layer and input shape: popcount.XnorConv

    def __post_init__(self):
        self.model.check()   # every structural check (threshold encodings, accumulators, budget) is there
        for lay in self.model.layers:
            if lay.op in MAC_OPS:
                try:
                    self.plans[lay.name] = make_plan(lay)
                except HwsimError as exc:
                    raise HwsimError(exc.message, source=self.model.source, field=exc.field) from None
        self._packed = packed_binary_tensors(self.model)

    def run(self, codes: np.ndarray, keep_all: bool = False) -> RunResult:
        """Run a batch of input codes [N, *input_shape] through the model."""
        model = self.model
        codes = np.asarray(codes)
        if not np.issubdtype(codes.dtype, np.integer):   # a float array would be silently truncated to codes
            raise HwsimError(f"Engine.run takes integer input codes, got a {codes.dtype} array: quantize float "
                             f"inputs first (quantize_input(model, x)) or use hwsim.run(model, x, hw=...)",
                             field="input")
        codes = check_input_shape(model, codes)
        n = codes.shape[0]
        if not self._work_checked:   # the execution limit (graph.check_run_work): one sample's work
            try:
                check_run_work(model, 1)
            except HwsimError as exc:
                raise HwsimError(exc.message, source=model.source, field=exc.field) from None
            self._work_checked = True
        start = time.perf_counter()
        out, tensors, trace = self._run_codes(codes, keep_all)
        elapsed = time.perf_counter() - start
        result = RunResult(out, tensors, trace, elapsed)
        if n == 1 and not keep_all and self.work_per_sample >= REUSE_WORK:
            # a heavy model's single-sample run (the CLI's JIT warm-up) is kept for run_batched to reuse
            self._single = (codes.astype(np.int64), result)
        return result

    def _run_codes(self, codes: np.ndarray, keep_all: bool) -> tuple[np.ndarray, dict, Trace]:
        """(output codes, tensors, trace) of checked input codes, layer after layer."""
        model = self.model
        n = codes.shape[0]
        tensors = {"input": codes.astype(code_dtype(model.input_enc))}
        trace = Trace(batch=n, dram_input_bits=codes.size * model.input_enc.storage_bits)
        for lay, wide_inputs, out_dtype, last_uses, pack in self._schedule():
            interrupt.check()  # Ctrl-C at the command line: raised here if it could not be at once
            counts = LayerCounts.fresh(lay.name, lay.op, n)
            inputs = [tensors[name] for name in lay.inputs]
            if wide_inputs:   # units written for int64 codes get them
                inputs = [x.astype(np.int64, copy=False) for x in inputs]
            # codes are kept in the narrowest dtype of their encoding between layers (binary ones as packed bits
            # where XNOR layers read them)
            out = self.run_layer(lay, inputs, counts, packed=pack)
            tensors[lay.name] = out if pack else out.astype(out_dtype, copy=False)
            _count_traffic(lay, inputs, tensors[lay.name], counts, self._traffic)
            trace.layers.append(counts)
            if not keep_all:
                for name in last_uses:
                    del tensors[name]
        out = tensors[model.output_name].astype(np.int64)
        if keep_all:
            tensors = {name: (t.codes() if isinstance(t, popcount.PackedBits) else t).astype(np.int64)
                       for name, t in tensors.items()}
        else:
            tensors = {}
        trace.dram_output_bits = out.size * model.layers[-1].out_enc.storage_bits
        return out, tensors, trace

    def _schedule(self) -> list:
        """Per layer, worked out once: (layer, whether its unit takes int64 codes, its codes' dtype, the tensors
        no later layer reads, the model's output excepted, whether its output is kept as packed bits)."""
        if self._steps is None:
            model, last = self.model, _last_use(self.model)
            self._steps = [(lay, not _takes_narrow(lay), code_dtype(lay.out_enc),
                            tuple(name for name in dict.fromkeys(lay.inputs)
                                  if last[name] == i and name != model.output_name),
                            lay.name in self._packed)
                           for i, lay in enumerate(model.layers)]
        return self._steps

    def run_layer(self, lay: Layer, inputs: list, counts: LayerCounts, packed: bool = False) -> np.ndarray:
        """One layer on its input codes (or popcount.PackedBits, from the engine's own runs); a failure that
        depends on the data (e.g. a requantizer overflow) names the model file and the layer. `packed`: the
        output as PackedBits (a binary layer's)."""
        try:
            if packed:
                return self._packed_output(lay, inputs, counts)
            return RUNNERS[lay.op](self, lay, inputs, counts)
        except HwsimError as exc:
            where = f"layers.{lay.name}"
            fld = exc.field if exc.field and exc.field.startswith(where) else where
            raise HwsimError(exc.message, source=exc.source or self.model.source, field=fld) from None

    @property
    def work_per_sample(self) -> int:
        if self._work is None:
            self._work = run_work(self.model)
        return self._work

    def take_single(self, codes: np.ndarray):
        """The kept result of a single-sample run on exactly `codes` [1, ...] (once), else None."""
        kept, self._single = self._single, None
        if kept is not None and kept[0].shape == codes.shape and np.array_equal(kept[0], codes):
            return kept[1]
        return None

    # ----------------------------------------------------------------------------------- per op

    def _mac(self, lay, inputs, counts, packed_out: bool = False):
        plan = self.plans[lay.name]
        in_enc, out_enc, w_enc = lay.in_encs[0], lay.out_enc, lay.weight_enc
        x_codes = inputs[0]
        n = x_codes.shape[0]
        out_elems = n * math.prod(lay.out_shape)
        k = lay.weight[0].size
        acc_bits, policy = lay.attr("acc_bits"), lay.attr("overflow")
        counts.acc_bits = acc_bits
        if isinstance(w_enc, Float32W):
            return self._float_mac(lay, x_codes, plan, counts)
        if isinstance(w_enc, CodebookW):
            counts.lut_reads = n * lay.weight.size  # each weight index decoded once per inference
            counts.lut_entries = lay.codebook.shape[1]
            counts.lut_width_bits = w_enc.table_bits
        if lay.is_xnor:
            packed_in = isinstance(x_codes, popcount.PackedBits)
            # packed bits in and out: the sign bits straight from the micro-kernel (no sums tensor)
            signs_of = (plan.bias,) if packed_in and packed_out and isinstance(out_enc, BinaryAct) else ()
            if packed_in:
                acc = self._xnor_conv(lay, plan, x_codes, signs_of).packed(x_codes.bits)
            elif lay.op == "conv2d":
                acc = popcount.xnor_conv2d(x_codes.astype(np.uint8, copy=False), plan.w_bits, *_xnor_geometry(lay))
            else:
                acc = popcount.xnor_dense(x_codes.astype(np.uint8, copy=False), plan.w_bits)
            words = popcount.popcount_words_per_output(lay.weight.shape[1], *lay.weight.shape[2:]) \
                if lay.op == "conv2d" else popcount.popcount_words_per_output(k, 1, 1)
            counts.binary_macs = out_elems * k
            counts.popcount_words = out_elems * words
            if signs_of:
                return acc
            if isinstance(out_enc, BinaryAct):   # sign bits straight from the popcount sums (no int64 pass)
                return (popcount.signs_packed if packed_out else popcount.signs)(acc, plan.bias)
            acc = acc.astype(np.int64)
            if plan.bias is not None:
                acc += plan.bias.reshape((1, -1) + (1,) * (acc.ndim - 2))
        elif lay.attr("datapath") == "x86_pair_sat16" and (plan.from_codes is None
                                                           or plan.from_codes.pair_sat is None):
            acc = _pair_sat_mac(lay, x_codes.astype(np.int64), plan, counts)
            counts.macs[(8, 8)] += out_elems * k  # raw u8 x s8 codes; the zero points are corrected apart
        elif plan.from_codes is not None:
            if lay.attr("datapath") != "x86_pair_sat16":
                counts.macs[(in_enc.operand_bits, w_enc.operand_bits)] += out_elems * k
                _count_decode(in_enc, x_codes.size, counts)
            else:   # the pair-saturating datapath's events, as the sequential kernel records them
                counts.macs[(8, 8)] += out_elems * k
                counts.datapath = "x86_pair_sat16"
            codes = _fused_depthwise(lay, plan, x_codes, counts)
            if codes is None:
                codes = _chunked_mac(lay, plan, x_codes, counts)
            if codes is not None:   # sums and epilogue a few images at a time: the accumulators stay small
                counts.requants = out_elems
                _count_clip_encode(lay, codes.size, counts)
                return codes
            acc = _mac_from_codes(lay, plan, x_codes, counts)
        else:
            x_values = in_enc.decode(x_codes)
            if lay.op == "conv2d":
                acc, overflows = mac.conv2d_acc(x_values, plan.w_values, plan.bias, tuple(lay.attr("stride")),
                                                tuple(lay.attr("padding")), lay.attr("groups"), plan.pad_value,
                                                acc_bits, policy)
            else:
                acc, overflows = mac.dense_acc(x_values, plan.w_values, plan.bias, acc_bits, policy)
            counts.overflows = int(overflows)
            counts.macs[(in_enc.operand_bits, w_enc.operand_bits)] += out_elems * k
            counts.zero_act_macs, counts.zero_any_macs = zero_operand_macs(
                x_values, plan.w_values, tuple(lay.attr("stride")), tuple(lay.attr("padding")), lay.attr("groups"),
                plan.pad_value) if lay.op == "conv2d" else zero_operand_macs(x_values, plan.w_values)
            _count_decode(in_enc, x_codes.size, counts)
        if isinstance(out_enc, BinaryAct):
            # Positive scales: the sign of the real output is the sign of the accumulator (bias is the threshold).
            return out_enc.encode(acc)
        if isinstance(out_enc, ThresholdAct):
            # FINN-style thresholding (QONNX MultiThreshold): the comparator bank replaces requantizer and clip.
            # Counted as QK conversions (same comparator bank + priority encoder); pass-through layers that
            # re-encode a threshold tensor use the plain uniform clamp, so this is counted here only.
            counts.qk += out_elems
            counts.qk_comparators = out_enc.n_thresholds
            if plan.thresholds is not None:   # the fused comparator bank (its reference: encode_acc)
                return run_thresholds(acc, plan.thresholds, out_enc.code_range()[0], code_dtype(out_enc))
            return out_enc.encode_acc(acc, channel_axis=1)
        counts.requants = out_elems
        if lay.attr("arithmetic") == "ort_float32":   # ORT's float32 ConvTranspose: same MACs, its own output
            return self._encode(lay, float_conv_transpose.layer_values(lay, x_codes, plan.w_values, plan.bias),
                                counts)
        codes = None if plan.epilogue is None else _epilogue_codes(plan.epilogue, acc)
        if codes is not None:   # the fused pass; the reference units below where it declines
            _count_clip_encode(lay, codes.size, counts)
            return codes
        values = requantize(acc, plan.multiplier, lay.attr("requant"), channel_axis=1)
        return self._encode(lay, values, counts)

    def _float_mac(self, lay, x_codes, plan, counts):
        """conv2d on float32 weights (arithmetic "ort_float32"): ORT's float32 ConvTranspose; fp32 MACs, zero
        operands counted on the float weights (w == 0.0); no integer accumulator exists."""
        x_values = lay.in_encs[0].decode(x_codes)
        counts.fp32_macs = x_codes.shape[0] * math.prod(lay.out_shape) * lay.weight[0].size
        counts.zero_act_macs, counts.zero_any_macs = zero_operand_macs(
            x_values, plan.w_values, (1, 1), tuple(lay.attr("padding")), lay.attr("groups"), plan.pad_value)
        counts.requants = x_codes.shape[0] * math.prod(lay.out_shape)
        values = float_conv_transpose.layer_values(lay, x_codes, plan.w_values, plan.bias)
        return self._encode(lay, values, counts)

    def _encode(self, lay, values, counts):
        clip = lay.attr("clip")
        if clip is not None:
            values = np.clip(values, clip[0], clip[1])
        _count_clip_encode(lay, values.size, counts)
        return lay.out_enc.encode(values)

    def _maxpool(self, lay, inputs, counts):
        # Every activation encoding is monotone in its code, so the pool unit compares stored codes with no
        # converter: uniform, ENQ and KNQ codes grow with the value; binary codes shrink (bit 1 = -1), so the
        # max of the values is the min of the bits (an AND gate tree).
        descending = isinstance(lay.in_encs[0], BinaryAct)
        x = 1 - inputs[0] if descending else inputs[0]
        kernel = tuple(lay.attr("kernel"))
        out = code_tables.maxpool_codes(x, kernel, tuple(lay.attr("stride")), tuple(lay.attr("padding")))
        counts.compares = (kernel[0] * kernel[1] - 1) * out.size
        return 1 - out if descending else out

    def _table(self, lay, build):
        """The layer's code table, built once (None when the reference unit must run on the data)."""
        table = self._tables.get(lay.name, _MISSING)   # (no check-then-read: batch parts may run side by side)
        if table is _MISSING:
            table = self._tables.setdefault(lay.name, build())
        return table

    def _avgpool(self, lay, inputs, counts):
        enc = lay.in_encs[0]
        _count_decode(enc, inputs[0].size, counts)
        if _global_ort_codes(lay):   # the whole plane, ORT's rounding: in one pass
            out_enc, hw = lay.out_enc, inputs[0].shape[2] * inputs[0].shape[3]
            counts.adds = (hw - 1) * inputs[0].shape[0] * inputs[0].shape[1]
            counts.requants = inputs[0].shape[0] * inputs[0].shape[1]
            lo, hi = out_enc.code_range()
            return code_tables.global_average_ort_codes(inputs[0], enc.zero_point,
                                                        pooling.ort_global_multiplier(enc.scale, out_enc.scale, hw),
                                                        lo, hi, out_enc.zero_point, code_dtype(out_enc))
        x = enc.decode(inputs[0])
        if lay.attr("rounding") == "xnnpack_mean":     # LiteRT XNNPACK's MEAN over H, W: sums of raw codes
            counts.adds = inputs[0].size
            counts.requants = inputs[0].shape[0] * inputs[0].shape[1]
            return xnnpack_ops.global_mean_codes(inputs[0], enc, lay.out_enc)
        if lay.attr("rounding") in ("tflite_mean_reference", "tflite_mean_optimized"):   # LiteRT's int8 MEAN
            counts.adds = inputs[0].size
            counts.requants = inputs[0].shape[0] * inputs[0].shape[1]
            out = lay.out_enc
            return tflite_mean(inputs[0], lay.attr("rounding"), enc.scale, enc.zero_point, out.scale,
                               out.zero_point, enc.signed)
        if lay.attr("rounding") == "ort_float32":
            out_enc = lay.out_enc
            out, adds = pooling.avgpool_ort(x, tuple(lay.attr("kernel")), tuple(lay.attr("stride")),
                                            tuple(lay.attr("padding")), lay.attr("count_include_pad"),
                                            enc.scale, out_enc.scale, out_enc.zero_point,
                                            lay.attr("float_zero_point"))
            counts.adds = int(adds)
            counts.requants = out.size
            return out_enc.encode(out)
        if lay.attr("rounding") == "tflite_codes":   # TFLite's average of raw codes (units/pooling.py)
            out, adds = pooling.avgpool_tflite(inputs[0], tuple(lay.attr("kernel")), tuple(lay.attr("stride")),
                                               tuple(lay.attr("padding")))
            counts.adds = int(adds)
            _count_encode(enc, out.size, counts)
            return enc.encode(out - enc.zero_point)
        pad_value = int(enc.decode(np.array([default_pad_code(enc)]))[0])
        out, adds = pooling.avgpool(x, tuple(lay.attr("kernel")), tuple(lay.attr("stride")),
                                    tuple(lay.attr("padding")), lay.attr("rounding"),
                                    lay.attr("count_include_pad"), pad_value)
        counts.adds = int(adds)
        _count_encode(enc, out.size, counts)
        return enc.encode(out)

    def _clip(self, lay, inputs, counts):
        enc = lay.in_encs[0]
        x = inputs[0]
        _count_decode(enc, x.size, counts)
        counts.compares = (1 if lay.op == "relu" else 2) * x.size
        _count_encode(enc, x.size, counts)
        table = self._table(lay, lambda: code_tables.unary_table(enc, lambda c: _clip_codes(lay, c),
                                                                 code_dtype(lay.out_enc)))
        if table is not None:
            return code_tables.lookup1(x, table, enc.code_range()[0])
        return _clip_codes(lay, x)

    def _reshape(self, lay, inputs, counts):
        x = inputs[0]
        if isinstance(x, popcount.PackedBits):   # a flatten of packed bits: their bytes, [N, H·W·ceil(C/8)]
            return replace(x, bits=x.bits.reshape(x.shape[0], -1), shape=(x.shape[0],) + tuple(lay.out_shape))
        return x.reshape((x.shape[0],) + tuple(lay.out_shape))

    def _packed_output(self, lay, inputs, counts) -> popcount.PackedBits:
        """A binary layer's output as packed bits: written so by an XNOR layer's sign unit and a flatten of
        packed bits; packed after the unit otherwise."""
        n = inputs[0].shape[0]
        shape, layout = (n,) + tuple(lay.out_shape), self._packed[lay.name]
        if lay.is_xnor:
            return popcount.PackedBits(self._mac(lay, inputs, counts, packed_out=True), layout, shape)
        out = RUNNERS[lay.op](self, lay, inputs, counts)
        if isinstance(out, popcount.PackedBits):
            return out
        return popcount.PackedBits(popcount.pack_channels(out), layout, shape)

    def _xnor_conv(self, lay, plan, x_codes, signs_of):
        """An XNOR layer on packed bits, prepared once per input shape: popcount.XnorConv (a conv) or
        popcount.XnorDense (a dense layer; the batch size is part of its shape)."""
        dense = lay.op != "conv2d"
        key = (lay.name, x_codes.bits.shape if dense else x_codes.bits.shape[1:], bool(signs_of))
        conv = self._xnor_convs.get(key)
        if conv is None:
            conv = self._xnor_convs[key] = popcount.XnorDense(
                x_codes.bits.shape, self._dense_packed_bits(lay, plan, x_codes.layout), lay.weight[0].size,
                signs_of) if dense else popcount.xnor_conv_packed_plan(
                x_codes.bits.shape, x_codes.layout[0], plan.w_bits, *_xnor_geometry(lay), signs_of=signs_of)
        return conv

    def _dense_packed_bits(self, lay, plan, packed_in) -> np.ndarray:
        """An XNOR dense layer's weight bits [Co, H·W·8·ceil(C/8)] in the order of its packed input bits (pixel
        after pixel, C channels and the byte's spare bits each), 0 at the spare bits; made once."""
        bits = self._dense_bits.get(lay.name)
        if bits is None:
            c, h, w = packed_in
            co = plan.w_bits.shape[0]
            bits = np.zeros((co, h, w, -(-c // 8) * 8), np.uint8)
            bits[..., :c] = plan.w_bits.reshape(co, c, h, w).transpose(0, 2, 3, 1)
            bits = bits.reshape(co, -1)
            bits.flags.writeable = False   # frozen: the packed-filter cache trusts it without a compare
            self._dense_bits[lay.name] = bits
        return bits

    def _concat(self, lay, inputs, counts):
        return np.concatenate(inputs, axis=1)

    def _add(self, lay, inputs, counts):
        for enc, x in zip(lay.in_encs, inputs):
            _count_decode(enc, x.size, counts)
        size = int(np.prod(np.broadcast_shapes(*(x.shape for x in inputs))))
        counts.adds = size
        counts.requants = size
        _count_clip_encode(lay, size, counts)
        if len(inputs) == 2 and not _has_simd_tail(lay):   # a tail makes the result depend on the position
            ea, eb = lay.in_encs
            table = self._table(lay, lambda: code_tables.pair_table(ea, eb, lambda a, b: _add_codes(lay, [a, b]),
                                                                    code_dtype(lay.out_enc)))
            if table is not None:
                return code_tables.lookup2(inputs[0], inputs[1], table, ea.code_range()[0], eb.code_range()[0])
        return _add_codes(lay, inputs)

    def _mul(self, lay, inputs, counts):
        (ea, eb), out_enc = lay.in_encs, lay.out_enc
        a, b = ea.decode(inputs[0]), eb.decode(inputs[1])
        lo, hi = _mul_code_range(lay)
        if lay.attr("requant") == "xnnpack":
            out = xnnpack_ops.mul_codes(a, b, ea.scale, eb.scale, out_enc.scale, out_enc.zero_point, lo, hi)
        else:
            out = mul_codes(a, b, ea.scale, eb.scale, out_enc.scale, out_enc.zero_point, lo, hi,
                            lay.attr("requant"))
        counts.muls = out.size
        counts.mul_bits = max(ea.operand_bits, eb.operand_bits)
        counts.requants = out.size
        return out

    def _lut(self, lay, inputs, counts):
        lo, _ = lay.in_encs[0].code_range()
        counts.lut_reads = inputs[0].size
        counts.lut_entries = lay.table.shape[1]
        counts.lut_width_bits = lay.out_enc.storage_bits
        return lut_lookup(inputs[0], lay.table, lo)


    def _softmax(self, lay, inputs, counts):
        enc, out = lay.in_encs[0], lay.out_enc
        x = inputs[0]
        counts.lut_reads = 2 * x.size          # the exp table, read for the sum and for each output
        counts.lut_entries, counts.lut_width_bits = 256, 32
        counts.adds = x.size
        counts.requants = x.size               # e * (1 / s_out) / sum, rounded
        if lay.attr("arithmetic") == "ort_qlinear":
            return over_channels(lambda v: qlinear_softmax(v, enc.scale, out.scale, out.zero_point, enc.signed), x)
        if lay.attr("arithmetic") in ("tflite_reference", "tflite_optimized"):
            return over_channels(lambda v: tflite_softmax(v, lay.attr("arithmetic"), enc.scale, enc.zero_point,
                                                          enc.signed, out.scale, out.zero_point, out.signed), x)
        return over_channels(lambda v: softmax_exact(enc.decode(v) * enc.scale, out), x)

    def _lut_avgpool(self, lay, inputs, counts):
        enc, out = lay.in_encs[0], lay.out_enc
        x = inputs[0]
        counts.lut_reads, counts.lut_entries, counts.lut_width_bits = x.size, lay.table.shape[1], 32
        counts.adds, counts.requants = x.size, x.shape[0] * x.shape[1]
        return lut_avgpool_ort(x, lay.table, enc.code_range()[0], out.scale, out.zero_point, *out.code_range(),
                               lay.attr("sum_order"))

    def _transpose(self, lay, inputs, counts):
        return np.ascontiguousarray(inputs[0].transpose((0,) + tuple(p + 1 for p in lay.attr("perm"))))

    def _pad(self, lay, inputs, counts):
        top, left, bottom, right = lay.attr("padding")
        code = lay.attr("pad_code")
        code = default_pad_code(lay.in_encs[0]) if code is None else code
        return np.pad(inputs[0], ((0, 0), (0, 0), (top, bottom), (left, right)), constant_values=code)

    def _dilate(self, lay, inputs, counts):
        return dilate_codes(inputs[0], lay.attr("stride"), default_pad_code(lay.in_encs[0]))

    def _resize(self, lay, inputs, counts):
        size, scales, coord = lay.attr("size"), lay.attr("scales"), lay.attr("coordinate")
        if lay.attr("mode") == "nearest":
            return resize.resize_nearest(inputs[0], size, scales, coord, lay.attr("nearest_mode"))
        if lay.attr("arithmetic") != "dequantized":   # ORT's kernels on the 8-bit codes (QOperator form)
            out = resize.resize_codes(inputs[0], size, scales, coord, lay.attr("arithmetic"))
            counts.muls, counts.mul_bits, counts.adds = 4 * out.size, lay.in_encs[0].operand_bits, 3 * out.size
            counts.requants = out.size      # the truncation / 2^20 division back to a code (qnn_shapes counts it)
            return out
        enc, out_enc = lay.in_encs[0], lay.out_enc
        lo, hi = out_enc.code_range()
        fn = resize.resize_linear_ort if lay.attr("requant") == "float32" else resize.resize_linear_exact
        out = fn(enc.decode(inputs[0]), enc.scale, size, scales, coord, out_enc.scale, out_enc.zero_point, lo, hi)
        counts.muls = 4 * out.size      # four taps times their weights
        counts.mul_bits = enc.operand_bits
        counts.adds = 3 * out.size
        counts.requants = out.size
        return out


RUNNERS = {"conv2d": Engine._mac, "dense": Engine._mac, "maxpool": Engine._maxpool, "avgpool": Engine._avgpool,
           "relu": Engine._clip, "clip": Engine._clip, "flatten": Engine._reshape, "reshape": Engine._reshape,
           "concat": Engine._concat, "add": Engine._add, "mul": Engine._mul, "lut": Engine._lut,
           "resize": Engine._resize, "dilate": Engine._dilate, "pad": Engine._pad,
           "softmax": Engine._softmax, "transpose": Engine._transpose,
           "lut_avgpool": Engine._lut_avgpool}


# Ops whose runners take codes in any integer dtype (the others get int64 codes; `_takes_narrow`)
NARROW_INPUTS = frozenset({"conv2d", "dense", "flatten", "reshape", "concat", "transpose", "maxpool", "relu",
                           "clip", "add"})


def _xnor_geometry(lay) -> tuple:
    """An XNOR conv's (stride, padding, groups, pad mode)."""
    return (tuple(lay.attr("stride")), tuple(lay.attr("padding")), lay.attr("groups"), lay.attr("binary_pad"))


def _global_ort_codes(lay) -> bool:
    """An average pool over each whole plane with ORT's float32 rounding, uniform codes in and out: one pass
    over the codes (code_tables.global_average_ort_codes), what pooling.avgpool_ort and the encoder compute."""
    if lay.op != "avgpool" or lay.attr("rounding") != "ort_float32":
        return False
    pad = lay.attr("padding") or 0
    return (tuple(lay.attr("kernel")) == tuple(lay.in_shapes[0][1:3]) and not any(np.atleast_1d(pad))
            and type(lay.in_encs[0]) is UniformAct and type(lay.out_enc) is UniformAct)


def _takes_narrow(lay) -> bool:
    return lay.op in NARROW_INPUTS or _global_ort_codes(lay)


def packed_binary_tensors(model: Model) -> dict:
    """name -> (C, H, W) ([K] as (K, 1, 1)) of each binary tensor the engine keeps as packed bits
    (popcount.pack_channels: eight channels a byte, an eighth of a uint8 code's memory): every layer that reads
    it takes packed bits, that is an XNOR conv (one group, or groups of whole bytes), an XNOR dense, or a
    flatten that only XNOR dense layers read (its output is then packed too, the same bytes). The model's input
    and output stay codes."""
    readers: dict = {}
    for lay in model.layers:
        for name in lay.inputs:
            readers.setdefault(name, []).append(lay)

    def reads_packed(lay: Layer, shape: tuple) -> bool:
        if lay.is_xnor and lay.op == "conv2d":
            return len(shape) == 3 and (lay.attr("groups") == 1 or shape[0] // lay.attr("groups") % 8 == 0)
        if lay.is_xnor and lay.op == "dense":
            return len(shape) == 1
        if lay.op == "flatten" and len(shape) == 3 and lay.name != model.output_name:
            return bool(readers.get(lay.name)) and all(r.is_xnor and r.op == "dense" for r in readers[lay.name])
        return False

    packed = {}
    for lay in model.layers:
        shape = tuple(lay.out_shape)
        if lay.name in packed:   # a flatten of packed bits (registered with its input's layout)
            continue
        if (isinstance(lay.out_enc, BinaryAct) and lay.name != model.output_name and readers.get(lay.name)
                and len(shape) in (1, 3) and all(reads_packed(r, shape) for r in readers[lay.name])):
            packed[lay.name] = shape if len(shape) == 3 else (shape[0], 1, 1)
            for r in readers[lay.name]:
                if r.op == "flatten":
                    packed[r.name] = packed[lay.name]
    return packed


def _last_use(model: Model) -> dict:
    last = {}
    for i, lay in enumerate(model.layers):
        for name in lay.inputs:
            last[name] = i
    return last


CHUNK_ACC_BYTES = 8 << 20   # accumulator bytes of one chunk of images (_chunked_mac; ResNet-18 at batch 32: peak
#                               277 MB against 295 MB with 16 MB chunks, the same speed)


def _chunked_mac(lay, plan, x_codes, counts):
    """Output codes of a large conv computed a few images at a time (sums, then the fused epilogue), so its
    accumulators never exist for the whole batch; None when the layer does not qualify or the epilogue
    declines a chunk (the caller then runs the whole batch through the reference units)."""
    n = x_codes.shape[0]
    per_image = math.prod(lay.out_shape) * np.dtype(plan.from_codes.acc_dtype).itemsize
    if (lay.op != "conv2d" or plan.epilogue is None or lay.attr("arithmetic") == "ort_float32" or n < 2
            or n * per_image <= CHUNK_ACC_BYTES):
        return None
    step = max(1, CHUNK_ACC_BYTES // per_image)
    out = np.empty((n,) + tuple(lay.out_shape), plan.epilogue.table.dtype)
    zero_act = zero_any = 0
    for start in range(0, n, step):
        part = LayerCounts(lay.name, lay.op)
        codes = run_epilogue(plan.epilogue, _mac_from_codes(lay, plan, x_codes[start:start + step], part))
        if codes is None:
            return None
        out[start:start + step] = codes
        zero_act, zero_any = zero_act + part.zero_act_macs, zero_any + part.zero_any_macs
        counts.pair_saturations += part.pair_saturations
        counts.pair_saturated_outputs += part.pair_saturated_outputs
    counts.zero_act_macs, counts.zero_any_macs = zero_act, zero_any
    return out


def _epilogue_codes(ep, acc):
    """run_epilogue on a layer's accumulators; a dense layer's [N, C] as C rows of N (the fused pass works row
    by row: one-element rows would each pay its per-row cost), the codes transposed back."""
    if acc.ndim == 2:
        codes = run_epilogue(ep, acc.T[None])
        return None if codes is None else np.ascontiguousarray(codes[0].T)
    return run_epilogue(ep, acc)


def _fused_depthwise(lay, plan, x_codes, counts):
    """Output codes of a depthwise conv in one kernel (codes_path.depthwise_codes: sums, epilogue and zero
    taps), or None when the layer does not qualify."""
    fast = plan.from_codes
    if (lay.op != "conv2d" or lay.attr("groups") != lay.in_shapes[0][0] or plan.epilogue is None
            or lay.attr("datapath") == "x86_pair_sat16" or lay.attr("arithmetic") == "ort_float32"):
        return None
    g = _geometries(lay, fast, x_codes.shape, plan.w_values.shape, x_codes.shape)[0]
    zero_code = _zero_code(fast, x_codes.dtype)
    done = codes_path.depthwise_codes(x_codes, fast.table, fast.code_lo, plan.w_values, plan.bias, g,
                                      plan.pad_value, fast.x_reach, plan.epilogue, memo=fast.memo,
                                      zero_code=zero_code)   # the zero map counted on the way where it can be
    if done is None:
        return None
    codes, map_total = done if zero_code is not None else (done, None)
    counts.zero_act_macs, counts.zero_any_macs = codes_path.zero_operand_counts(
        x_codes, fast.is_zero, fast.code_lo, g, plan.pad_value == 0, fast.zero_w_per_tap, fast.zero_w_total,
        memo=fast.memo, map_total=map_total)
    return codes


def _zero_code(fast, dtype):
    """The one input code whose value is 0 (None: several or none), for codes of `dtype`; once per layer."""
    key = ("zero code", np.dtype(dtype).str)
    code = fast.memo.get(key, False)
    if code is False:
        code = fast.memo[key] = codes_path.zero_code_of(fast.is_zero, fast.code_lo, dtype)
    return code


def _geometries(lay, fast, x_shape, w_shape, zx_shape):
    """(geometry of the sums, of the zero counts) of a conv / dense layer on the code-driven path for an input
    shape (dense: the batch as the width of a one-row image), computed once per shape."""
    geometries = fast.memo.get(("geometry", x_shape))
    if geometries is None:
        conv = lay.op == "conv2d"
        g = conv_geometry(x_shape, w_shape, tuple(lay.attr("stride")) if conv else (1, 1),
                          tuple(lay.attr("padding")) if conv else (0, 0, 0, 0), lay.attr("groups") if conv else 1)
        gz = g if conv else conv_geometry(zx_shape, w_shape, (1, 1), (0, 0, 0, 0), 1)
        kept = [key for key in list(fast.memo) if key[0] == "geometry"]   # (parts of a batch may run side by side)
        for key in kept[:len(kept) // 2] if len(kept) >= codes_path.MEMO_ENTRIES else ():
            fast.memo.pop(key, None)   # a caller cycling through batch sizes: keep the newest
        geometries = fast.memo[("geometry", x_shape)] = (g, gz)
    return geometries


def _mac_from_codes(lay, plan, x_codes, counts):
    """Accumulators of a conv / dense layer on the code-driven fast path, and its zero-operand counts."""
    fast = plan.from_codes
    pair_sat_kernel = fast.pair_sat_kernel and lay.attr("datapath") == "x86_pair_sat16"
    pointwise = lay.op == "conv2d" and _pointwise(lay)
    if pointwise:   # 1x1, stride 1, no padding: each image as one row of pixels (no partly filled tile per row)
        x4 = zx = x_codes.reshape(x_codes.shape[:2] + (1, -1))
        w4 = plan.w_values
    elif lay.op == "conv2d":
        x4, w4, zx = x_codes, plan.w_values, x_codes
    else:   # dense: the batch becomes the width of a one-row image; zero counts per sample over [N, K, 1, 1]
        # (a C-ordered copy of the small [K, N] transpose: the kernels then see one layout, one compilation)
        x4 = np.ascontiguousarray(x_codes.T)[None, :, None, :]
        w4, zx = plan.w_values[:, :, None, None], x_codes[:, :, None, None]
    g, gz = _geometries(lay, fast, x4.shape, w4.shape, zx.shape)
    channel_zeros = None
    if fast.u8_offset is not None and not (g.cig == 1 and g.cog < 4):   # depthwise: its own int16-free kernel
        # a 1x1 conv or dense layer: its zeros per channel counted while its bytes go into the canvas
        zero_code = _zero_code(fast, x_codes.dtype) if (gz.kh, gz.kw, gz.sh, gz.sw) == (1, 1, 1, 1) \
            and not gz.has_padding else None
        acc = codes_path.conv2d_sum_u8(x4, fast.code_lo, fast.u8_offset, w4, plan.bias, g,
                                       plan.pad_value - fast.u8_offset, fast.w_max, fast.acc_dtype,
                                       memo=fast.memo, byte_table=fast.u8_bytes, pair_saturating=pair_sat_kernel,
                                       zero_code=zero_code)
        if zero_code is not None:
            acc, channel_zeros = acc
    else:
        acc = codes_path.conv2d_sum_codes(x4, fast.table, fast.code_lo, w4, plan.bias, g, plan.pad_value,
                                          fast.x_reach, fast.w_max, fast.acc_dtype)
    if lay.attr("datapath") == "x86_pair_sat16":   # its int16 pair saturation (it records no zero operands)
        counts.pair_saturations, counts.pair_saturated_outputs = pairsat.add_pair_saturation(
            acc, x4 if not lay.in_encs[0].signed else (x4.astype(np.int16) + 128).astype(np.uint8), fast.pair_sat,
            g, fast.pad_code, apply=not pair_sat_kernel)
    else:
        counts.zero_act_macs, counts.zero_any_macs = codes_path.zero_operand_counts(
            zx, fast.is_zero, fast.code_lo, gz, plan.pad_value == 0, fast.zero_w_per_tap, fast.zero_w_total,
            memo=fast.memo, channel_zeros=channel_zeros)
    if lay.op == "dense":
        acc = np.ascontiguousarray(acc[0, :, 0, :].T)
    elif pointwise:
        acc = acc.reshape(acc.shape[:2] + x_codes.shape[2:])
    return acc


def _pointwise(lay) -> bool:
    return (lay.weight.shape[2:] == (1, 1) and tuple(lay.attr("stride")) == (1, 1)
            and not any(lay.attr("padding")))


def _pair_sat_mac(lay, x_codes, plan, counts):
    """The x86 int16 pair-saturation datapath (kernels/pairsat.py) on raw codes; records its event counts."""
    shift = _u8_shift(lay.in_encs[0])
    x_codes = x_codes + shift
    zx, zw = lay.in_encs[0].zero_point + shift, np.asarray(lay.weight_enc.zero_point, dtype=np.int64)
    acc_bits, policy = lay.attr("acc_bits"), lay.attr("overflow")
    if lay.op == "conv2d":
        code = lay.attr("pad_code")
        pad = (default_pad_code(lay.in_encs[0]) if code is None else code) + shift
        acc, over, pairs, outs = pairsat.conv2d_pairsat_acc(
            x_codes, lay.weight, zx, zw, plan.bias, tuple(lay.attr("stride")), tuple(lay.attr("padding")),
            lay.attr("groups"), pad, acc_bits, policy)
    else:
        acc, over, pairs, outs = pairsat.dense_pairsat_acc(x_codes, lay.weight, zx, zw, plan.bias, acc_bits, policy)
    counts.overflows = over
    counts.datapath = "x86_pair_sat16"
    counts.pair_saturations = pairs
    counts.pair_saturated_outputs = outs
    return acc


def _u8_shift(enc) -> int:
    """What the pair-saturating datapath adds to an activation code to get its u8 operand: 128 for int8 codes
    (ORT's QDQS8ToU8 rewrite hands them to the u8 kernel as code + 128, zero point + 128), else 0."""
    return 128 if enc.signed else 0


def _clip_codes(lay, codes):
    """The clip / ReLU layer on codes: decode, clamp in the value domain, encode (the reference units)."""
    enc = lay.in_encs[0]
    lo, hi = (0, None) if lay.op == "relu" else (lay.attr("min"), lay.attr("max"))
    return enc.encode(np.clip(enc.decode(codes), lo, hi))


def _has_simd_tail(lay):
    """An add with input_rounding "single" whose sample size is no multiple of TFLite's 16-element SIMD block."""
    return lay.attr("input_rounding") == "single" and int(np.prod(lay.out_shape)) % SIMD_BLOCK != 0


def _mul_code_range(lay):
    """The output codes a mul may write: the encoding's range, narrowed by its `clip` (output value units)."""
    lo, hi = lay.out_enc.code_range()
    clip = lay.attr("clip")
    if clip is not None:
        zp = lay.out_enc.zero_point
        lo, hi = max(lo, min(hi, clip[0] + zp)), min(hi, max(lo, clip[1] + zp))
    return lo, hi


def _add_codes(lay, codes):
    """The residual add on codes (units/residual_add.py), then clip and encode."""
    values = [enc.decode(x) for enc, x in zip(lay.in_encs, codes)]
    scales = [enc.value_scale for enc in lay.in_encs]
    value_bits = max(max(abs(lo), abs(hi)).bit_length() for lo, hi in (e.value_range() for e in lay.in_encs))
    if lay.attr("rescale") == "xnnpack":   # LiteRT XNNPACK's vadd (units/xnnpack_ops.py)
        out = xnnpack_ops.add_values(values, scales, lay.out_enc.value_scale, lay.attr("subtract"))
    else:
        out = residual_add(values, scales, lay.out_enc.value_scale, lay.attr("requant"), value_bits,
                           rescale=lay.attr("rescale"), subtract=lay.attr("subtract"),
                           input_rounding=lay.attr("input_rounding"),
                           double_mask=simd_tail_mask(lay.out_shape) if _has_simd_tail(lay) else None)
    clip = lay.attr("clip")
    if clip is not None:
        out = np.clip(out, clip[0], clip[1])
    return lay.out_enc.encode(out)


def _count_clip_encode(lay, n, counts):
    if lay.attr("clip") is not None:
        counts.compares += 2 * n
    _count_encode(lay.out_enc, n, counts)


def _count_decode(enc, n, counts):
    if isinstance(enc, EnqAct):
        counts.ce += n
    elif isinstance(enc, KnqAct):
        counts.ck += n


def _count_encode(enc, n, counts):
    if isinstance(enc, EnqAct):
        counts.qe += n
    elif isinstance(enc, KnqAct):
        counts.qk += n
        counts.qk_comparators = len(enc.thresholds)


def _count_traffic(lay: Layer, inputs, output, counts: LayerCounts, memo: dict):
    """Compulsory traffic: each weight, input and output moved once; reshapes and concats are free views.
    `memo` keeps each layer's tensor names and bit widths (the engine's: one lookup per layer and run). A
    packed binary tensor's size is its count of codes."""
    plan = memo.get(lay.name)
    if plan is None:
        plan = memo[lay.name] = _traffic_plan(lay)
    if plan is False:
        return
    in_bits, out_bits, weight_bits = plan
    n = output.shape[0]
    for (name, bits), x in zip(in_bits, inputs):
        counts.input_bits[name] = x.size * bits
    counts.output_bits[lay.name] = output.size * out_bits
    for key, bits in weight_bits:
        counts.weight_bits[key] = n * bits


def _traffic_plan(lay: Layer):
    """((input name, bits per code) per input, output bits per code, (key, bits per image) per weight tensor),
    or False for the free views."""
    if lay.op in ("flatten", "reshape", "concat"):
        return False
    weights = []
    if lay.weight is not None:
        weights.append((f"{lay.name}.weight", lay.weight.size * lay.weight_enc.storage_bits))
        if lay.bias is not None:
            weights.append((f"{lay.name}.bias", lay.bias.size * lay.bias_bits))
        if lay.codebook is not None:
            weights.append((f"{lay.name}.codebook", lay.codebook.size * lay.weight_enc.table_bits))
    if lay.table is not None:   # the lut's table is loaded like a weight tensor
        weights.append((f"{lay.name}.table", lay.table.size * table_bits(lay)))
    return (tuple((name, enc.storage_bits) for name, enc in zip(lay.inputs, lay.in_encs)),
            lay.out_enc.storage_bits, tuple(weights))


_MISSING = object()


REUSE_WORK = 1 << 26   # work units (~67 ms) from which a single-sample run is worth keeping for run_batched


def check_stored_samples(model: Model, codes: np.ndarray, passes: int = 1) -> None:
    """The execution limit over all samples when they are the model's own `sample_input` (part of the file, so
    the file's work); samples the user supplies are the user's choice of work (--limit N bounds it)."""
    stored = model.sample_input
    if stored is None or tuple(codes.shape) != tuple(stored.shape) or not np.array_equal(codes, stored):
        return
    try:
        check_run_work(model, codes.shape[0], "sample_input", passes)
    except HwsimError as exc:
        raise HwsimError(exc.message, source=model.source, field=exc.field) from None


def batch_for_memory(model: Model, batch_size: int) -> int:
    """`batch_size`, made smaller for a model whose largest layer would touch more than LIMITS["layer_bytes"]
    (the per-sample memory limit) for the whole batch: the engine's int64 tensors then stay near that size."""
    per_sample = max(layer_figures(lay)["bytes"] for lay in model.layers)
    return max(1, min(int(batch_size), LIMITS["layer_bytes"] // max(per_sample, 1)))


def run_batched(engine: Engine, codes: np.ndarray, batch_size: int = 512, progress=None):
    """Run a large set in batches (bounded memory); returns outputs and the summed trace.

    The batch shrinks for a model with large layers (batch_for_memory); the model's stored sample input must be
    within the execution limit as a whole (check_stored_samples); a single-sample run just made on the first
    sample (the CLI's JIT warm-up) is reused rather than repeated for a heavy model.
    `progress`, if given, is called after each batch with the number of samples done (a progress bar)."""
    model = engine.model
    codes = check_input_shape(model, np.asarray(codes))
    check_stored_samples(model, codes)
    batch_size = batch_for_memory(model, batch_size)
    outputs, total, functional_s = [], None, 0.0
    start = 0
    first = engine.take_single(codes[:1])
    if first is not None:
        outputs.append(first.output)
        functional_s += first.functional_s
        total = first.trace
        start = 1
    while start < codes.shape[0]:
        stop = min(codes.shape[0], start + batch_size)
        res = engine.run(codes[start:stop])
        outputs.append(res.output)
        functional_s += res.functional_s
        total = res.trace if total is None else _merge(total, res.trace)
        start = stop
        if progress is not None:
            progress(stop)
    return RunResult(np.concatenate(outputs), {}, total, functional_s)


def _merge(a: Trace, b: Trace) -> Trace:
    for la, lb in zip(a.layers, b.layers):
        for key, value in lb.__dict__.items():
            if key in STATIC_FIELDS:
                continue
            current = getattr(la, key)
            if isinstance(value, dict):
                for k, v in value.items():
                    current[k] = current.get(k, 0) + v
            else:
                setattr(la, key, current + value)
    for la, lb in zip(a.layers, b.layers):
        la.batch += lb.batch
    a.batch += b.batch
    a.dram_input_bits += b.dram_input_bits
    a.dram_output_bits += b.dram_output_bits
    return a
