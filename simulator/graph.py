"""The model graph: layers in topological order, their integer parameters and encodings, and shape checks.

Tensors are named by the layer that produces them; the model input is named "input". Shapes are per sample
(no batch axis): [C, H, W] for feature maps, [K] for vectors. The batch axis is added by the engine.
`Model.check()` validates everything a file can get wrong and infers every tensor's shape and encoding.
"""

from __future__ import annotations

import contextlib
import contextvars
import math
import os
from dataclasses import dataclass, field

import numpy as np

from .encodings import BinaryAct, BinaryW, CodebookW, Float32W, KnqAct, ThresholdAct, UniformAct, int_range
from .errors import HwsimError

MAC_OPS = ("conv2d", "dense")
PASS_OPS = ("maxpool", "avgpool", "relu", "clip", "flatten", "reshape", "concat")
# Elementwise units: "lut" maps each code through a stored table (activation functions, float islands);
# "mul" multiplies two quantized tensors (squeeze-and-excitation gating), with broadcasting like "add".
ELEMENTWISE_OPS = ("add", "mul", "lut")
OPS = MAC_OPS + PASS_OPS + ELEMENTWISE_OPS + ("resize", "dilate", "softmax", "transpose", "lut_avgpool", "pad")
# mul arithmetic: "float32" is ONNX Runtime's QLinearMul on x86 (MLAS qlmul.cpp, SSE2 path): the exact integer
# product of the two values, times float32(float32(s_a * s_b) / s_out), plus the output zero point in float32,
# rounded half to even, saturated; "float64" rounds the exact real product half to even; "xnnpack" is LiteRT's
# XNNPACK qs8/qu8 vmul: the same float32 product and ratio, rounded, then the zero point added as an integer
# (units/xnnpack_ops.py).
# "tflite": TFLite's int8 MUL (reference and optimized kernels): MultiplyByQuantizedMultiplier of the product with
# M = float32(float32(s_a * s_b) / s_out) (units/elementwise.py).
MUL_MODES = ("float32", "float64", "xnnpack", "tflite")
# softmax: exact ("float64"), ONNX Runtime's QLinearSoftmax, LiteRT's reference (gemmlowp fixed point) and optimized
# (float32 exp table) 8-bit kernels (simulator/importers/tflite_arith.py)
SOFTMAX_ARITHMETICS = ("float64", "ort_qlinear", "tflite_reference", "tflite_optimized")
# add input_rounding (fixed_double): "double" is TFLite's reference ADD, "single" its optimized SIMD ADD
ADD_INPUT_ROUNDINGS = ("double", "single")
LUT_MAX_CODES = 1 << 16   # a lut layer's input has at most 16-bit codes (the table has one row per code)
REQUANT_MODES = ("float32", "float64", "fixed_double", "fixed_single", "shift", "fixed_double_ruy",
                 "fixed_double_blocks8", "float64_away")
# TFLite's kernel-path modes that only its conv / depthwise / fully-connected output stages use
# (units/requantizer.py); they take TFLite's 32-bit accumulator
MAC_ONLY_REQUANT = ("fixed_double_ruy", "fixed_double_blocks8", "float64_away")
INT32_ACC_REQUANT = ("fixed_double", "fixed_single") + MAC_ONLY_REQUANT
# The rounding each requantization mode means to do: the float reference rounds the exact real result this way,
# so what remains are the mode's true arithmetic effects (float32 precision, TFLite's double rounding).
REQUANT_ROUNDING = {"float32": "half_even", "float64": "half_even", "fixed_double": "half_away",
                    "fixed_single": "half_up", "shift": "half_up", "fixed_double_ruy": "half_up",
                    "fixed_double_blocks8": "half_up", "float64_away": "half_away"}
ROUNDINGS = ("floor", "half_up", "half_even", "half_away", "trunc")
# avgpool also takes "ort_float32": ONNX Runtime's QLinearAveragePool / QLinearGlobalAveragePool arithmetic
# (units/pooling.py avgpool_ort), which may also change the encoding (scale, zero point) on the way.
# "xnnpack_mean": LiteRT's XNNPACK MEAN over H and W (global only; units/xnnpack_ops.py), which also may change
# the encoding.
# "tflite_codes": TFLite's int8 / uint8 AVERAGE_POOL_2D (reference and optimized): the sum of the RAW codes (zero
# point included) of the real cells, divided by their count, rounded half away from zero (units/pooling.py).
# "tflite_mean_reference" / "tflite_mean_optimized": LiteRT's int8 MEAN over H and W on its reference / optimized
# kernels (global only; its own output scale / zero point; units/elementwise.py tflite_mean).
TFLITE_MEAN_ROUNDINGS = ("tflite_mean_reference", "tflite_mean_optimized")
AVGPOOL_ROUNDINGS = ROUNDINGS + ("ort_float32", "xnnpack_mean", "tflite_codes") + TFLITE_MEAN_ROUNDINGS
# the input quantizer's x / scale: float64, float32 as ONNX Runtime, or "xnnpack": x * float32(1 / scale) in
# float32 (LiteRT's XNNPACK QUANTIZE, f32-qs8-vcvt)
# "tflite_optimized": LiteRT's optimized int8 QUANTIZE on x86 (per sample, blocks of 8 as x * float32(1 / scale)
# rounded half to even, the size mod 8 values left as x / scale in double, half away; engine.quantize_input)
INPUT_DIVISIONS = ("float64", "float32", "xnnpack", "tflite_optimized")
# output.dequantize: false, true (float32 (code - zp) * scale), or "tflite_optimized": LiteRT's optimized
# DEQUANTIZE on x86 (per sample, blocks of 8 as float32(code) * scale + float32(-zp * scale), the rest as true)
OUTPUT_DEQUANTIZE = (False, True, "tflite_optimized")
# add: "ratio" sums v_i * (s_i / s_out); "dequantize" computes (sum_i v_i * s_i) / s_out (ONNX Runtime);
# "xnnpack": LiteRT's XNNPACK qs8/qu8 vadd, two inputs, integer multipliers and a round-half-up shift
# (units/xnnpack_ops.py); `requant` is not used by it; `subtract` (xnnpack only) computes a - b
ADD_RESCALES = ("ratio", "dequantize", "xnnpack")
BINARY_PAD_MODES = ("+1", "-1", "zero")
# MAC PE datapaths: "exact" (every product into the accumulator), "x86_pair_sat16" (ONNX Runtime's u8 x s8
# kernels on x86 without VNNI: adjacent product pairs summed into int16 with saturation; kernels/pairsat.py).
DATAPATHS = ("exact", "x86_pair_sat16")

# Structural bounds (always checked): every dimension, kernel size and padding is at most MAX_DIM.
MAX_DIM = 1 << 24
# The work and memory budget (check_budget; docs/qnn-format.md "Limits"), per sample unless said otherwise.
# HWSIM_NO_LIMITS=1 in the environment, or --no-limits on the command line, lifts these (not MAX_DIM).
LIMITS = {
    # structural and memory limits: checked by every command that reads a model (inspect, import, estimate, run)
    "output_elements": 1 << 24,   # elements of one layer's output tensor (and of the input)
    "layer_ops": 1 << 36,         # MACs / compares / adds of one layer
    "model_ops": 1 << 38,         # MACs / compares / adds of the whole model
    "layer_bytes": 1 << 28,       # activation bytes one layer touches at the engine's int64 width (inputs, output)
    "param_bytes": 1 << 30,       # parameter bytes of one layer at the engine's int64 width (VGG-16 fc6: 822 MB)
    "model_param_bytes": 3 << 29,  # parameter bytes of the whole model at int64 width (VGG-16: 1.1 GB)
    "window": 1 << 20,            # cells of one kernel window (conv / pool)
    "stride_phases": 1 << 20,     # stride_h * stride_w of one layer
    "sample_elements": 1 << 20,   # elements of the sample input stored in a model (all samples)
    "layers": 1 << 14,            # layers in a model
    "layer_inputs": 1 << 10,      # inputs of one layer (add, concat)
    "model_inputs": 1 << 16,      # inputs of all layers together (the graph's edges)
    # execution limit: checked where the engine runs (run, validate, compare; check_run_work), not by inspect or
    # estimate: the engine's estimated time (run_work, about nanoseconds on the reference machine) of one run
    "run_work": 1 << 33,
}
_NO_LIMITS = contextvars.ContextVar("hwsim_no_limits", default=False)


def limits_enabled() -> bool:
    """False under --no-limits (no_limits()) or with HWSIM_NO_LIMITS=1 in the environment."""
    return not (_NO_LIMITS.get() or os.environ.get("HWSIM_NO_LIMITS", "").strip() not in ("", "0"))


@contextlib.contextmanager
def no_limits(active: bool = True):
    """Lift the work and memory budget inside the block (the CLI's --no-limits)."""
    token = _NO_LIMITS.set(True) if active else None
    try:
        yield
    finally:
        if token is not None:
            _NO_LIMITS.reset(token)


# Attributes each op accepts, with defaults. Anything else in a file is an error (catches typos).
ATTR_DEFAULTS = {
    "conv2d": {"stride": [1, 1], "padding": [0, 0, 0, 0], "groups": 1, "pad_code": None, "binary_pad": "+1",
               "acc_bits": 32, "overflow": "wrap", "requant": "float64", "multiplier": None, "clip": None,
               "datapath": "exact", "arithmetic": "integer", "bias_scale": None},
    "dense": {"acc_bits": 32, "overflow": "wrap", "requant": "float64", "multiplier": None, "clip": None,
              "datapath": "exact"},
    "maxpool": {"kernel": [2, 2], "stride": None, "padding": [0, 0, 0, 0]},
    "avgpool": {"kernel": [2, 2], "stride": None, "padding": [0, 0, 0, 0], "rounding": "half_even",
                "count_include_pad": True, "global": False, "float_zero_point": None},
    "relu": {},
    "clip": {"min": None, "max": None},
    "add": {"requant": "float64", "clip": None, "rescale": "ratio", "subtract": False, "input_rounding": "double"},
    "mul": {"requant": "float64", "clip": None},
    "lut": {},
    # size: output [H, W]; scales: the float32 factors the source coordinates use (ONNX Resize "scales", or
    # size / input size); arithmetic of "linear": "float32" (ONNX Runtime) or "float64" (exact reference)
    # dilate: zero insertion, (stride - 1) zero-point codes between pixels: a transposed convolution is a dilate
    # followed by an ordinary conv2d on the MAC array (with its kernel flipped)
    "dilate": {"stride": [1, 1]},
    # transpose: per-sample axes permuted (the batch axis stays first), e.g. [1, 2, 0]: [C, H, W] -> [H, W, C]
    "transpose": {"perm": None},
    # pad: constant padding of H and W with one code (default: the code of real 0), e.g. TFLite's PAD before a
    # max pool, whose padded cells then take part in the max
    "pad": {"padding": [0, 0, 0, 0], "pad_code": None},
    # lut_avgpool: a lookup table into float32 values (bit patterns in <layer>.table), averaged over the whole
    # map in float32 (in sum_order) and quantized like QuantizeLinear: ONNX Runtime's float GlobalAveragePool after a
    # float island (a QOperator MobileNetV3's HardSwish -> GlobalAveragePool); sum_order: "sequential" (ORT's
    # GlobalAveragePool) or "eigen_sse" (ORT's ReduceMean, Eigen's SSE redux; units/elementwise.py)
    "lut_avgpool": {"sum_order": "sequential"},
    # softmax over a [K] vector: "ort_qlinear" is ONNX Runtime's QLinearSoftmax (an exp table, float32 sums,
    # units/elementwise.py); "float64" is the exact softmax rounded half to even
    "softmax": {"arithmetic": "float64"},
    # resize: linear on "dequantized" values rounded per `requant`, or (QOperator form) one of ORT's kernels on
    # the 8-bit codes, "ort_nchw_float32_trunc" / "ort_nhwc_int10" / "ort_nhwc_float32_trunc" (units/resize.py)
    "resize": {"size": None, "scales": None, "mode": "nearest", "coordinate": "half_pixel",
               "nearest_mode": "round_prefer_floor", "requant": "float64", "arithmetic": "dequantized"},
    "flatten": {},
    "reshape": {"shape": None},
    "concat": {},
}


@dataclass
class Layer:
    name: str
    op: str
    inputs: list
    attrs: dict = field(default_factory=dict)
    out_enc: object = None          # activation encoding of the output (None: same as the input)
    weight: np.ndarray | None = None       # weight codes, [Co, Ci/groups, KH, KW] or [Co, K]
    weight_enc: object = None
    codebook: np.ndarray | None = None     # [groups, entries] signed fixed-point table (codebook weights)
    bias: np.ndarray | None = None         # int64 [Co], in accumulator units (s_in * s_w[c])
    bias_bits: int = 32
    table: np.ndarray | None = None        # lut: output codes [1 or C, input codes], row per channel
    # Filled by Model.check():
    in_shapes: list = field(default_factory=list)
    out_shape: tuple = ()
    in_encs: list = field(default_factory=list)

    def attr(self, key):
        return self.attrs.get(key, ATTR_DEFAULTS[self.op].get(key))

    @property
    def is_xnor(self):
        """Binary weights on binary activations run on the XNOR-popcount PE."""
        return (self.op in MAC_OPS and isinstance(self.weight_enc, BinaryW)
                and bool(self.in_encs) and isinstance(self.in_encs[0], BinaryAct))


@dataclass
class Model:
    name: str
    input_shape: tuple
    input_enc: object
    layers: list
    input_rounding: str = "half_even"      # how a float input is rounded by the input quantizer
    input_division: str = "float64"        # x / scale in float64, or in float32 (ONNX Runtime QuantizeLinear)
    output_dequantize: bool = False        # the model's output is float32 (code - zp) * scale (ONNX DequantizeLinear)
    output_bias: np.ndarray | None = None  # float32 per output channel, added after that dequantization (a float
                                           # bias of a QONNX / Brevitas float output, as qonnx computes it)
    sample_input: np.ndarray | None = None  # codes [N, *input_shape], run when no input is given
    metadata: dict = field(default_factory=dict)
    source: str = "model"                   # file name used in error messages

    @property
    def output_name(self):
        return self.layers[-1].name

    def layer(self, name):
        for lay in self.layers:
            if lay.name == name:
                return lay
        raise KeyError(name)

    def encodings(self):
        """Encoding of every tensor by name (after check())."""
        encs = {"input": self.input_enc}
        for lay in self.layers:
            encs[lay.name] = lay.out_enc
        return encs

    def shapes(self):
        shapes = {"input": tuple(self.input_shape)}
        for lay in self.layers:
            shapes[lay.name] = lay.out_shape
        return shapes

    def check(self):
        """Validate the whole graph and infer shapes; raises HwsimError naming the file and field."""
        try:
            _check_model(self)
        except HwsimError as exc:
            if exc.source is None:
                raise HwsimError(exc.message, source=self.source, field=exc.field) from None
            raise
        return self


# ------------------------------------------------------------------------------------------------ checks

def _fail(msg, fld):
    raise HwsimError(msg, field=fld)


def _int_list(value, n, fld, lo=0, hi=None):
    if (not isinstance(value, (list, tuple)) or len(value) != n
            or any(isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo
                   or (hi is not None and v > hi) for v in value)):
        bound = f">= {lo}" if hi is None else f"in [{lo}, {hi}]"
        _fail(f"must be a list of {n} integers {bound}, got {_short(value)}", fld)
    return [int(v) for v in value]


def _short(value, limit=60):
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _check_bool(value, fld):
    if not isinstance(value, (bool, np.bool_)):
        _fail(f"must be true or false, got {_short(value)}", fld)
    return bool(value)


def _check_model(model: Model):
    if not isinstance(model.name, str):
        _fail("must be a string", "name")
    if not isinstance(model.input_shape, (list, tuple, np.ndarray)) or len(model.input_shape) not in (1, 3):
        _fail(f"must be [C, H, W] or [K], got {_short(model.input_shape)}", "input.shape")
    shape = _int_list(list(model.input_shape), len(model.input_shape), "input.shape", lo=1, hi=MAX_DIM)
    if not isinstance(model.input_enc, (UniformAct, BinaryAct, KnqAct)):
        # knq at the input: a k-means codebook of the input data (seed 000 quantizes the images too): the input
        # quantizer's fixed-point value goes through the comparator bank to its centroid index
        _fail("the model input must be uniform, binary or knq (a k-means codebook)", "input.encoding")
    if isinstance(model.input_enc, ThresholdAct):
        _fail("the model input cannot have a threshold encoding (it has no accumulator)", "input.encoding")
    if model.input_rounding not in ROUNDINGS:
        _fail(f"must be one of {ROUNDINGS}", "input.rounding")
    if model.input_division not in INPUT_DIVISIONS:
        _fail(f"must be one of {INPUT_DIVISIONS}, got {_short(model.input_division)}", "input.division")
    if not any(model.output_dequantize is v or model.output_dequantize == v and isinstance(v, str)
               for v in OUTPUT_DEQUANTIZE):
        _fail(f"must be true, false or 'tflite_optimized', got {_short(model.output_dequantize)}", "output.dequantize")
    if not model.layers:
        _fail("the model has no layers", "layers")
    if limits_enabled() and len(model.layers) > LIMITS["layers"]:
        _fail(f"the model has {_fmt(len(model.layers))} layers, more than the limit of {_limit_text('layers')} "
              f"{LIMITS_HINT}", "layers")
    edges = sum(len(lay.inputs) for lay in model.layers if isinstance(lay.inputs, (list, tuple)))
    if limits_enabled() and edges > LIMITS["model_inputs"]:
        _fail(f"the layers list {_fmt(edges)} inputs in all, more than the limit of "
              f"{_limit_text('model_inputs')} {LIMITS_HINT}", "layers")
    if model.sample_input is not None:
        if model.sample_input.ndim < 1 or tuple(model.sample_input.shape[1:]) != tuple(shape):
            _fail(f"shape {list(model.sample_input.shape)} does not match input shape {shape}", "sample_input")
        if model.sample_input.shape[0] < 1:
            _fail("holds no samples (its first dimension is 0)", "sample_input")
        check_sample_size(model.sample_input.size)
        lo, hi = model.input_enc.code_range()
        if model.sample_input.size and (model.sample_input.min() < lo or model.sample_input.max() > hi):
            _fail(f"codes outside the input encoding's range [{lo}, {hi}]", "sample_input")
    shapes = {"input": tuple(shape)}
    encs = {"input": model.input_enc}
    for i, lay in enumerate(model.layers):
        where = f"layers[{i}]"
        if not isinstance(lay.name, str) or not lay.name or lay.name in shapes:
            _fail(f"layer name {_short(lay.name)} is empty or not unique", f"{where}.name")
        where = f"layers.{lay.name}"
        if lay.op not in OPS:
            _fail(f"unknown op {_short(lay.op, 40)}; supported: {', '.join(OPS)}", f"{where}.op")
        unknown = set(lay.attrs) - set(ATTR_DEFAULTS[lay.op])
        if unknown:
            _fail(f"unknown attribute(s) {sorted(unknown)} for {lay.op}; allowed: {sorted(ATTR_DEFAULTS[lay.op])}",
                  f"{where}.attrs")
        if not isinstance(lay.inputs, (list, tuple)) or not lay.inputs:
            _fail("must list at least one input tensor", f"{where}.inputs")
        if limits_enabled() and len(lay.inputs) > LIMITS["layer_inputs"]:
            _fail(f"lists {_fmt(len(lay.inputs))} inputs, more than the limit of {_limit_text('layer_inputs')} "
                  f"{LIMITS_HINT}", f"{where}.inputs")
        for name in lay.inputs:
            if name not in shapes:
                _fail(f"input {_short(name)} is not the model input or an earlier layer", f"{where}.inputs")
        n_in = {"add": None, "concat": None, "mul": 2}.get(lay.op, 1)
        if n_in is not None and len(lay.inputs) != n_in:
            _fail(f"{lay.op} takes {n_in} input(s), got {len(lay.inputs)}", f"{where}.inputs")
        lay.in_shapes = [shapes[n] for n in lay.inputs]
        lay.in_encs = [encs[n] for n in lay.inputs]
        CHECKS[lay.op](lay, where)
        if lay.out_enc is None:
            _fail("output encoding is required", f"{where}.encoding")
        shapes[lay.name] = lay.out_shape
        encs[lay.name] = lay.out_enc
    if model.output_dequantize and not isinstance(model.layers[-1].out_enc, UniformAct):
        _fail("a dequantized output needs a uniform output encoding", "output.dequantize")
    if model.output_bias is not None:
        bias = np.asarray(model.output_bias)
        channels = model.layers[-1].out_shape[0]
        if not model.output_dequantize:
            _fail("an output bias needs output.dequantize (it is added to the dequantized output)", "output.bias")
        if bias.ndim != 1 or bias.size != channels or not np.all(np.isfinite(bias.astype(np.float32))):
            _fail(f"must be {channels} finite float32 values (one per output channel), got {bias.size}", "output.bias")
    with np.errstate(all="ignore"):
        if model.output_dequantize and not np.isfinite(np.float32(model.layers[-1].out_enc.scale)):
            _fail("the output scale overflows float32 (the dequantized output is float32)", "output.dequantize")
        if model.input_division == "float32" and not isinstance(model.input_enc, BinaryAct):
            s32 = np.float32(model.input_enc.value_scale)
            if not (np.isfinite(s32) and s32 > 0):
                _fail("the input scale is zero or infinite in float32 (input.division is float32)", "input.encoding")
    check_budget(model)


def _check_params_absent(lay, where):
    for key in ("weight", "bias", "codebook", "table"):
        if getattr(lay, key) is not None:
            _fail(f"{lay.op} takes no {key}", f"{where}.{key}")


def _inherit_encoding(lay, where):
    if lay.out_enc is None:
        lay.out_enc = lay.in_encs[0]
    elif lay.out_enc != lay.in_encs[0]:
        _fail(f"{lay.op} keeps its input's encoding; a different output encoding needs a requantizing layer",
              f"{where}.encoding")


def _check_requant(lay, where):
    mode = lay.attr("requant")
    if mode not in REQUANT_MODES:
        _fail(f"unknown requantization mode {_short(mode)}; supported: {', '.join(REQUANT_MODES)}", f"{where}.attrs.requant")
    clip = lay.attr("clip")
    if clip is not None:
        lo, hi = _int_list(clip, 2, f"{where}.attrs.clip", lo=-(1 << 31), hi=(1 << 31) - 1)
        if lo > hi:
            _fail(f"min {lo} > max {hi}", f"{where}.attrs.clip")


def _check_mac(lay, where):
    inp, in_enc = lay.in_shapes[0], lay.in_encs[0]
    if lay.weight is None or lay.weight_enc is None:
        _fail(f"{lay.op} needs a weight tensor and a weight encoding", f"{where}.weight")
    if lay.table is not None:
        _fail(f"{lay.op} takes no table", f"{where}.table")
    w = lay.weight
    if not isinstance(w, np.ndarray) or w.dtype.kind not in "iu":
        _fail("must be an integer tensor", f"{where}.weight")
    if any(d > MAX_DIM for d in w.shape):
        _fail(f"shape {list(w.shape)} has a dimension above {MAX_DIM}", f"{where}.weight.shape")
    acc_bits = _int_list([lay.attr("acc_bits")], 1, f"{where}.attrs.acc_bits", lo=2, hi=64)[0]
    if lay.attr("overflow") not in ("wrap", "saturate"):
        _fail(f"must be 'wrap' or 'saturate', got {_short(lay.attr('overflow'))}", f"{where}.attrs.overflow")
    if lay.op == "conv2d":
        if len(inp) != 3:
            _fail(f"conv2d needs a [C, H, W] input, got {list(inp)} from {_short(lay.inputs[0])}", f"{where}.inputs")
        if w.ndim != 4:
            _fail(f"conv2d weight must be [Co, Ci/groups, KH, KW], got {list(w.shape)}", f"{where}.weight.shape")
        co, cig, kh, kw = w.shape
        groups = _int_list([lay.attr("groups")], 1, f"{where}.attrs.groups", lo=1, hi=MAX_DIM)[0]
        sh, sw = _int_list(lay.attr("stride"), 2, f"{where}.attrs.stride", lo=1, hi=MAX_DIM)
        pt, pl, pb, pr = _int_list(lay.attr("padding"), 4, f"{where}.attrs.padding", hi=MAX_DIM)
        c, h, wd = inp
        if c % groups or co % groups or cig * groups != c:
            _fail(f"weight expects {cig} x {groups} groups = {cig * groups} input channels, but {lay.inputs[0]!r} "
                  f"has {c} (output channels {co})", f"{where}.weight.shape")
        ho, wo = (h + pt + pb - kh) // sh + 1, (wd + pl + pr - kw) // sw + 1
        if h + pt + pb < kh or wd + pl + pr < kw or ho < 1 or wo < 1:
            _fail(f"kernel {kh}x{kw} does not fit the padded input {h + pt + pb}x{wd + pl + pr}", f"{where}.weight.shape")
        if max(pt, pb) >= kh or max(pl, pr) >= kw:
            _fail(f"padding {[pt, pl, pb, pr]} must be smaller than the kernel {kh}x{kw}", f"{where}.attrs.padding")
        _check_stride(sh, sw, h + pt + pb, wd + pl + pr, where)
        pad_code = lay.attr("pad_code")
        if pad_code is not None:
            lo, hi = in_enc.code_range()
            _int_list([pad_code], 1, f"{where}.attrs.pad_code", lo=lo)
            if pad_code > hi:
                _fail(f"must be a code of the input encoding in [{lo}, {hi}], got {_short(pad_code)}",
                      f"{where}.attrs.pad_code")
        if not isinstance(lay.attr("binary_pad"), str) or lay.attr("binary_pad") not in BINARY_PAD_MODES:
            _fail(f"must be one of {BINARY_PAD_MODES}", f"{where}.attrs.binary_pad")
        lay.out_shape = (co, ho, wo)
    else:
        if len(inp) != 1:
            _fail(f"dense needs a flat [K] input, got {list(inp)} from {_short(lay.inputs[0])} (add a flatten layer)",
                  f"{where}.inputs")
        if w.ndim != 2:
            _fail(f"dense weight must be [Co, K], got {list(w.shape)}", f"{where}.weight.shape")
        co, k = w.shape
        if k != inp[0]:
            _fail(f"weight expects {k} inputs but {lay.inputs[0]!r} gives {inp[0]}", f"{where}.weight.shape")
        lay.out_shape = (co,)
    if co < 1:
        _fail("needs at least one output channel", f"{where}.weight.shape")
    _check_weight_codes(lay, where, co)
    _check_float_weights(lay, where)
    _check_operand_limits(lay, where)
    _int_list([lay.bias_bits], 1, f"{where}.bias_bits", lo=1, hi=64)
    if lay.bias is not None:
        if not isinstance(lay.bias, np.ndarray) or lay.bias.dtype.kind not in "iu":
            _fail("must be an integer tensor", f"{where}.bias")
        if lay.bias.shape != (co,):
            _fail(f"bias shape {list(lay.bias.shape)} must be [{co}]", f"{where}.bias.shape")
        blo, bhi = int_range(lay.bias_bits, True)
        if lay.bias.size and (int(lay.bias.min()) < blo or int(lay.bias.max()) > bhi):
            _fail(f"bias values lie outside [{blo}, {bhi}], the range of bias_bits {lay.bias_bits}",
                  f"{where}.bias_bits")
    if lay.out_enc is None:
        _fail("output encoding is required", f"{where}.encoding")
    _check_requant(lay, where)
    if lay.attr("requant") in INT32_ACC_REQUANT and acc_bits > 32:
        _fail(f"{lay.attr('requant')} requantization takes a 32-bit accumulator, acc_bits is {acc_bits}",
              f"{where}.attrs.acc_bits")
    mult = lay.attr("multiplier")
    if mult is not None:
        if not isinstance(mult, (list, tuple)) or len(mult) not in (1, co) or any(
                isinstance(m, bool) or not isinstance(m, (int, float)) or not _finite(m) or m <= 0 for m in mult):
            _fail(f"must be a list of 1 or {co} positive numbers", f"{where}.attrs.multiplier")
    if isinstance(in_enc, BinaryAct) is False and isinstance(lay.out_enc, BinaryAct) and lay.attr("clip"):
        _fail("a binary output takes no clip", f"{where}.attrs.clip")
    _check_datapath(lay, where, in_enc)
    if lay.op == "conv2d":
        _check_conv_arithmetic(lay, where, co)
    _check_mac_output(lay, where, co)


def _finite(x) -> bool:
    try:
        return math.isfinite(x)
    except OverflowError:   # an integer beyond the float range
        return False


def _check_stride(sh, sw, hp, wp, where):
    """A stride beyond the padded input only repeats one window: bounded by the padded extent (16 on tiny inputs)."""
    for s, extent in ((sh, hp), (sw, wp)):
        if s > max(extent, 16):
            _fail(f"stride {[sh, sw]} is larger than the padded input {hp}x{wp}", f"{where}.attrs.stride")


def _check_mac_output(lay, where, co):
    """What the engine needs of a MAC layer's output stage, checked here so that a model that loads also runs."""
    enc = lay.out_enc
    if isinstance(enc, ThresholdAct):   # comparator bank on the accumulator: no requantizer, no clip
        if len(enc.thresholds) not in (1, co):
            _fail(f"has {len(enc.thresholds)} rows, expected 1 or {co} (output channels)",
                  f"{where}.encoding.thresholds")
        if lay.attr("clip") is not None:
            _fail("a threshold output takes no clip (the thresholds are the activation)", f"{where}.attrs.clip")
    if lay.is_xnor:
        bound = int(lay.weight[0].size) + (0 if lay.bias is None or not lay.bias.size
                                           else int(np.abs(lay.bias.astype(np.int64)).max()))
        if bound >= 1 << (lay.attr("acc_bits") - 1):
            _fail(f"accumulator of {lay.attr('acc_bits')} bits cannot hold the binary dot product (up to {bound})",
                  f"{where}.attrs.acc_bits")
    if isinstance(enc, (BinaryAct, ThresholdAct)):
        return      # no requantizer
    mult = lay.attr("multiplier")
    if mult is None:
        with np.errstate(all="ignore"):
            m = lay.in_encs[0].value_scale * lay.weight_enc.channel_scales(co) / enc.value_scale
    else:
        m = np.asarray(mult, dtype=np.float64)
    _check_multipliers(m, lay.attr("requant"), where, explicit=mult is not None)


def _check_multipliers(m, mode, where, explicit=False):
    m = np.asarray(m, dtype=np.float64).reshape(-1)
    if not np.all(np.isfinite(m)) or not np.all(m > 0):
        _fail("the scales give a requantization multiplier (s_in * s_w / s_out) that is zero or not finite",
              f"{where}.encoding.scale")
    # a multiplier whose fixed-point form (the requantizer's own arithmetic) no non-zero accumulator survives
    if mode in ("fixed_double", "shift", "fixed_double_ruy", "fixed_double_blocks8"):
        from .units.requantizer import multiplier_fault
        for v in dict.fromkeys(m.tolist()):
            fault = multiplier_fault(v, mode)
            if fault:
                fld = f"{where}.attrs.multiplier" if explicit else f"{where}.encoding.scale"
                what = "multiplier" if explicit else "multiplier s_in * s_w / s_out"
                _fail(f"{what} {v:.6g}: {fault}", fld)
    if mode == "float32":
        with np.errstate(all="ignore"):
            m32 = m.astype(np.float32)
        if not np.all(np.isfinite(m32)):
            _fail("a requantization multiplier overflows float32", where)
    elif mode == "shift":
        if any(math.frexp(float(v))[0] != 0.5 for v in m):
            _fail("shift requantization needs power-of-two multipliers (s_in * s_w / s_out = 2^-s)", where)


def _check_conv_arithmetic(lay, where, co):
    """conv2d arithmetic: "integer" (the MAC array's exact accumulator, then the requantizer) or "ort_float32":
    ONNX Runtime's unfused float32 ConvTranspose that this (dilate + flipped-kernel) conv2d stands for
    (units/float_conv_transpose.py): uniform codes dequantized to float32, MLAS's SGEMM + col2im order, the bias
    as float32(bias) * bias_scale (default float32(s_in * s_w[c])), QuantizeLinear. Its MAC events are those
    of the integer conv of the same shape; on float32 weights (Float32W, the QOperator form) they are fp32 MACs."""
    arith = lay.attr("arithmetic")
    if arith not in ("integer", "ort_float32"):
        _fail(f"must be 'integer' or 'ort_float32', got {_short(arith)}", f"{where}.attrs.arithmetic")
    bias_scale = lay.attr("bias_scale")
    if arith == "integer":
        if bias_scale is not None:
            _fail("bias_scale applies to arithmetic 'ort_float32' only", f"{where}.attrs.bias_scale")
        return
    encs = (lay.in_encs[0], lay.weight_enc, lay.out_enc)
    if not all(getattr(e, "kind", None) == "uniform" for e in encs[::2]) or encs[1].kind not in ("uniform",
                                                                                                  "float32"):
        _fail("ort_float32 (ONNX Runtime's float ConvTranspose) needs uniform input and output encodings and "
              "uniform or float32 weights, "
              f"got {', '.join(_enc_desc(e) for e in encs)}", f"{where}.attrs.arithmetic")
    if lay.attr("datapath") != "exact":
        _fail("ort_float32 takes datapath 'exact'", f"{where}.attrs.datapath")
    if lay.attr("pad_code") not in (None, lay.in_encs[0].zero_point):
        _fail("ort_float32 pads with real 0 (the zero point's code)", f"{where}.attrs.pad_code")
    if list(lay.attr("stride")) != [1, 1]:   # a transposed conv's stride is the dilate layer's
        _fail("ort_float32 takes stride [1, 1] (the transposed stride is the dilate in front)", f"{where}.attrs.stride")
    scales = [lay.in_encs[0].scale, lay.out_enc.scale, *lay.weight_enc.channel_scales(co)]
    if bias_scale is not None:
        if lay.bias is None:
            _fail("bias_scale needs a bias", f"{where}.attrs.bias_scale")
        if not isinstance(bias_scale, (list, tuple)) or len(bias_scale) not in (1, co) or any(
                isinstance(s, bool) or not isinstance(s, (int, float)) or not _finite(s) or s <= 0
                for s in bias_scale):
            _fail(f"must be a list of 1 or {co} positive numbers", f"{where}.attrs.bias_scale")
        scales += list(bias_scale)
    with np.errstate(over="ignore"):
        if not np.all(np.isfinite(np.asarray(scales, dtype=np.float64).astype(np.float32))):
            _fail("ort_float32 computes in float32: a scale overflows float32", f"{where}.attrs.arithmetic")


def _check_datapath(lay, where, in_enc):
    datapath = lay.attr("datapath")
    if datapath not in DATAPATHS:
        _fail(f"unknown datapath {_short(datapath)}; supported: {', '.join(DATAPATHS)}", f"{where}.attrs.datapath")
    if datapath == "x86_pair_sat16":
        w_enc = lay.weight_enc
        # 8-bit activations: unsigned codes as they are, signed ones as code + 128 (ORT's QDQS8ToU8 rewrite)
        u8 = isinstance(in_enc, UniformAct) and in_enc.bits == 8
        s8 = getattr(w_enc, "kind", None) == "uniform" and w_enc.bits == 8 and w_enc.signed
        if not (u8 and s8):
            _fail("x86_pair_sat16 (vpmaddubsw) multiplies 8-bit uniform activation codes (signed ones as code + "
                  "128) by signed 8-bit uniform weight codes; this layer has "
                  f"{_enc_desc(in_enc)} activations and {_enc_desc(w_enc)} weights", f"{where}.attrs.datapath")
        if lay.op == "conv2d" and lay.weight.shape[1] == 1 and lay.weight.shape[0] == lay.attr("groups"):
            _fail("x86_pair_sat16 is not defined for a depthwise conv (one input and one output channel per "
                  "group): ONNX Runtime runs those on its depthwise kernels, which widen to 16 bits and are "
                  "exact; use datapath 'exact'", f"{where}.attrs.datapath")


def _enc_desc(enc):
    if getattr(enc, "kind", None) == "uniform" or isinstance(enc, UniformAct):
        return f"{'signed' if enc.signed else 'unsigned'} {enc.bits}-bit uniform"
    return getattr(enc, "kind", type(enc).__name__)


OPERAND_LIMIT = 1 << 16  # the MAC PE multiplies operands with |value| < 2^16 (kernels/mac.py)


def _check_operand_limits(lay, where):
    """Operands wider than the MAC PE's 17-bit signed inputs are a model error, not a kernel crash."""
    if lay.is_xnor:
        return
    lo, hi = lay.in_encs[0].value_range()
    if max(abs(lo), abs(hi)) >= OPERAND_LIMIT:
        _fail(f"input values reach {max(abs(lo), abs(hi))}; the MAC PE takes operands with |value| < 2^16",
              f"{where}.inputs")
    # min / max per tensor (or per output channel): no int64 copy of a possibly large weight tensor
    if lay.codebook is not None:
        w_max = max(abs(int(lay.codebook.min())), abs(int(lay.codebook.max())))
    elif lay.weight_enc.kind == "uniform":
        zp = np.asarray(lay.weight_enc.zero_point, dtype=np.int64)
        w2 = lay.weight.reshape(lay.weight.shape[0], -1)
        lo_c = w2.min(axis=1).astype(np.int64) - zp
        hi_c = w2.max(axis=1).astype(np.int64) - zp
        w_max = int(max(np.abs(lo_c).max(), np.abs(hi_c).max()))
    elif lay.weight_enc.kind == "pow2":
        w_max = 1 << max(max(abs(int(lay.weight.min())), abs(int(lay.weight.max()))) - 1, 0)
    else:
        w_max = 1
    if w_max >= OPERAND_LIMIT:
        _fail(f"weight values reach {w_max}; the MAC PE takes operands with |value| < 2^16", f"{where}.weight")


def _check_weight_codes(lay, where, co):
    enc, w = lay.weight_enc, lay.weight
    if w.size == 0:
        _fail("weight tensor is empty", f"{where}.weight.shape")
    lo, hi = int_range(enc.storage_bits, enc.storage_signed)
    if w.min() < lo or w.max() > hi:
        _fail(f"codes outside [{lo}, {hi}] for {enc.storage_bits}-bit {enc.kind} weights", f"{where}.weight")
    try:
        enc.channel_scales(co)
    except HwsimError as exc:
        _fail(exc.message, f"{where}.weight_encoding.{exc.field}")
    if enc.kind == "ternary" and (w.min() < -1 or w.max() > 1):
        _fail("ternary codes must be -1, 0 or +1", f"{where}.weight")
    if isinstance(enc, CodebookW):
        cb = lay.codebook
        groups = enc.n_groups(co)
        if cb is None or cb.ndim != 2:
            _fail("codebook weights need a [groups, entries] table", f"{where}.codebook")
        if cb.shape[0] != groups or not 1 <= cb.shape[1] <= (1 << enc.index_bits):
            _fail(f"table shape {list(cb.shape)} must be [{groups}, 1..{1 << enc.index_bits}]", f"{where}.codebook.shape")
        tlo, thi = int_range(enc.table_bits, True)
        if cb.min() < tlo or cb.max() > thi:
            _fail(f"entries outside [{tlo}, {thi}] for {enc.table_bits}-bit signed table", f"{where}.codebook")
        if w.max() >= cb.shape[1]:
            _fail(f"index {int(w.max())} is beyond the codebook's {cb.shape[1]} entries", f"{where}.weight")
    elif lay.codebook is not None:
        _fail(f"{enc.kind} weights take no codebook", f"{where}.codebook")


def _check_float_weights(lay, where):
    """float32 weights (Float32W): only ONNX Runtime's float32 ConvTranspose (conv2d arithmetic "ort_float32")
    computes with them, and only finite ones (no ONNX quantizer writes a NaN or infinite weight)."""
    if not isinstance(lay.weight_enc, Float32W):
        return
    if lay.op != "conv2d" or lay.attr("arithmetic") != "ort_float32":
        what = f"this {lay.op} has arithmetic {_short(lay.attr('arithmetic'))}" if lay.op == "conv2d" else \
            f"this is a {lay.op} layer"
        _fail("float32 weights are taken only by a conv2d with arithmetic 'ort_float32' (ONNX Runtime's float32 "
              f"ConvTranspose); {what}", f"{where}.weight_encoding.kind")
    values = Float32W.floats(lay.weight).reshape(-1)
    bad = np.flatnonzero(~np.isfinite(values))
    if bad.size:
        first = int(bad[0])
        _fail(f"{bad.size} weight(s) are NaN or infinite float32 bit patterns (the first at flat index {first}: "
              f"0x{int(lay.weight.reshape(-1)[first]) & 0xFFFFFFFF:08x}); float32 weights must be finite",
              f"{where}.weight")
    with np.errstate(over="ignore"):   # ORT quantizes them to int8 on load: scale = float32(max - min) / 255
        span = np.float32(max(values.max(), 0)) - np.float32(min(values.min(), 0))
    if not np.isfinite(span):
        _fail("the float32 weights span more than the float32 range (max - min overflows)", f"{where}.weight")


def _check_pool(lay, where):
    _check_params_absent(lay, where)
    inp = lay.in_shapes[0]
    if len(inp) != 3:
        _fail(f"{lay.op} needs a [C, H, W] input, got {list(inp)}", f"{where}.inputs")
    c, h, w = inp
    if lay.op == "avgpool":
        _check_bool(lay.attr("count_include_pad"), f"{where}.attrs.count_include_pad")
    if lay.op == "avgpool" and _check_bool(lay.attr("global"), f"{where}.attrs.global"):
        kh, kw = h, w
    else:
        kh, kw = _int_list(lay.attr("kernel"), 2, f"{where}.attrs.kernel", lo=1, hi=MAX_DIM)
    stride = lay.attr("stride")
    sh, sw = (kh, kw) if stride is None else _int_list(stride, 2, f"{where}.attrs.stride", lo=1, hi=MAX_DIM)
    pt, pl, pb, pr = _int_list(lay.attr("padding"), 4, f"{where}.attrs.padding", hi=MAX_DIM)
    if max(pt, pb) >= kh or max(pl, pr) >= kw:
        _fail(f"padding {[pt, pl, pb, pr]} must be smaller than the kernel {kh}x{kw}", f"{where}.attrs.padding")
    if h + pt + pb < kh or w + pl + pr < kw:
        _fail(f"kernel {kh}x{kw} does not fit the input {h}x{w}", f"{where}.attrs.kernel")
    if stride is not None:
        _check_stride(sh, sw, h + pt + pb, w + pl + pr, where)
    if lay.op == "avgpool":
        if not isinstance(lay.attr("rounding"), str) or lay.attr("rounding") not in AVGPOOL_ROUNDINGS:
            _fail(f"must be one of {AVGPOOL_ROUNDINGS}", f"{where}.attrs.rounding")
        if isinstance(lay.in_encs[0], BinaryAct):
            _fail("average pooling of binary activations is not defined", f"{where}.inputs")
    lay.attrs = {**lay.attrs, "kernel": [kh, kw], "stride": [sh, sw]}
    lay.out_shape = (c, (h + pt + pb - kh) // sh + 1, (w + pl + pr - kw) // sw + 1)
    if lay.op == "avgpool" and lay.attr("rounding") in ("xnnpack_mean",) + TFLITE_MEAN_ROUNDINGS:
        # LiteRT's MEAN over H and W: the whole map, 8-bit uniform in and out (its own scale / zero point)
        rnd = lay.attr("rounding")
        if (kh, kw) != (h, w) or (pt, pl, pb, pr) != (0, 0, 0, 0):
            _fail(f"rounding {rnd!r} is a global average (LiteRT's MEAN over H, W): kernel = the whole map, "
                  "no padding", f"{where}.attrs.rounding")
        if lay.out_enc is None:
            lay.out_enc = lay.in_encs[0]
        for enc in (lay.in_encs[0], lay.out_enc):
            if not isinstance(enc, UniformAct) or enc.bits != 8:
                _fail(f"rounding {rnd!r} reads and writes 8-bit uniform encodings", f"{where}.encoding")
        if rnd in TFLITE_MEAN_ROUNDINGS and lay.in_encs[0].signed != lay.out_enc.signed:
            _fail(f"rounding {rnd!r} keeps the input's type (int8 or uint8)", f"{where}.encoding")
        if rnd == "tflite_mean_optimized" and not lay.in_encs[0].signed:
            _fail("rounding 'tflite_mean_optimized' is LiteRT's int8 kernel (its uint8 kernel is not modelled)",
                  f"{where}.encoding")
        if lay.attr("float_zero_point") is not None:
            _fail("float_zero_point applies to rounding 'ort_float32' only", f"{where}.attrs.float_zero_point")
        return
    if lay.op == "avgpool" and lay.attr("rounding") == "tflite_codes":
        # TFLite divides the raw codes: it needs codes with a zero point, and never counts padded cells
        if not isinstance(lay.in_encs[0], UniformAct):
            _fail("rounding 'tflite_codes' averages uniform codes (TFLite's int8 / uint8 average pool)",
                  f"{where}.inputs")
        if lay.attr("count_include_pad"):
            _fail("rounding 'tflite_codes' leaves padded cells out of the sum and the count, as TFLite does: set "
                  "count_include_pad false", f"{where}.attrs.count_include_pad")
    if lay.op == "avgpool" and lay.attr("rounding") == "ort_float32":
        # ONNX Runtime's QLinearAveragePool requantizes: uniform in, uniform out (its own scale / zero point)
        if not isinstance(lay.in_encs[0], UniformAct):
            _fail("ort_float32 average pooling needs a uniform input encoding", f"{where}.inputs")
        if lay.out_enc is None:
            lay.out_enc = lay.in_encs[0]
        elif not isinstance(lay.out_enc, UniformAct):
            _fail("ort_float32 average pooling needs a uniform output encoding", f"{where}.encoding")
        fzp = lay.attr("float_zero_point")
        if fzp is not None:
            _int_list([fzp], 1, f"{where}.attrs.float_zero_point", lo=-(1 << 16))
            if fzp > 1 << 16:
                _fail(f"must be an integer in [-65536, 65536], got {_short(fzp)}", f"{where}.attrs.float_zero_point")
        return
    if lay.op == "avgpool" and lay.attr("float_zero_point") is not None:
        _fail("float_zero_point applies to rounding 'ort_float32' only", f"{where}.attrs.float_zero_point")
    _inherit_encoding(lay, where)


def _check_clip(lay, where):
    _check_params_absent(lay, where)
    if isinstance(lay.in_encs[0], BinaryAct):
        _fail(f"{lay.op} of binary activations is not defined", f"{where}.inputs")
    if lay.op == "clip":
        lo, hi = lay.attr("min"), lay.attr("max")
        _int_list([lo, hi], 2, f"{where}.attrs", lo=-(1 << 31), hi=(1 << 31) - 1)
        if lo > hi:
            _fail(f"min {lo} > max {hi}", f"{where}.attrs")
    lay.out_shape = lay.in_shapes[0]
    _inherit_encoding(lay, where)


def _check_reshape(lay, where):
    _check_params_absent(lay, where)
    size = math.prod(lay.in_shapes[0])
    if lay.op == "flatten":
        lay.out_shape = (size,)
    else:
        shape = lay.attr("shape")
        if not isinstance(shape, (list, tuple)) or len(shape) not in (1, 3):
            _fail("must be [K] or [C, H, W]", f"{where}.attrs.shape")
        shape = _int_list(shape, len(shape), f"{where}.attrs.shape", lo=1, hi=MAX_DIM)
        if math.prod(shape) != size:
            _fail(f"{shape} has {math.prod(shape)} elements, input has {size}", f"{where}.attrs.shape")
        lay.out_shape = tuple(shape)
    _inherit_encoding(lay, where)


def _check_concat(lay, where):
    _check_params_absent(lay, where)
    first = lay.in_shapes[0]
    for name, shape, enc in zip(lay.inputs, lay.in_shapes, lay.in_encs):
        if len(shape) != len(first) or shape[1:] != first[1:]:
            _fail(f"input {_short(name)} has shape {list(shape)}, which does not concatenate with {list(first)} "
                  "along channels", f"{where}.inputs")
        if enc != lay.in_encs[0]:
            _fail(f"input {_short(name)} has a different encoding; concat needs equal encodings", f"{where}.inputs")
    lay.out_shape = (sum(s[0] for s in lay.in_shapes),) + tuple(first[1:])
    _inherit_encoding(lay, where)


def broadcast_shape(shapes, where) -> tuple:
    """Per-sample shapes of equal rank whose dimensions agree or are 1 (SE gating: [C, 1, 1] with [C, H, W])."""
    first = tuple(shapes[0])
    for shape in shapes[1:]:
        if len(shape) != len(first) or any(a != b and 1 not in (a, b) for a, b in zip(first, shape)):
            _fail(f"inputs have shapes {list(first)} and {list(shape)}, which do not broadcast (equal rank, each "
                  "dimension equal or 1)", f"{where}.inputs")
    return tuple(max(dims) for dims in zip(*shapes))


def _check_add(lay, where):
    _check_params_absent(lay, where)
    out_shape = broadcast_shape(lay.in_shapes, where)
    if any(isinstance(e, BinaryAct) for e in lay.in_encs):
        _fail("residual add of binary activations is not defined", f"{where}.inputs")
    if lay.out_enc is None:
        _fail("output encoding is required", f"{where}.encoding")
    if isinstance(lay.out_enc, BinaryAct):
        _fail("a residual add cannot output binary activations", f"{where}.encoding")
    if isinstance(lay.out_enc, ThresholdAct):
        _fail("only conv2d / dense layers can write a threshold encoding", f"{where}.encoding")
    _check_requant(lay, where)
    with np.errstate(all="ignore"):
        ratios = np.array([e.value_scale / lay.out_enc.value_scale for e in lay.in_encs], dtype=np.float64)
    if not np.all(np.isfinite(ratios)) or not np.all(ratios > 0):
        _fail("an input scale / output scale ratio is zero or not finite", f"{where}.encoding.scale")
    if lay.attr("rescale") not in ADD_RESCALES:
        _fail(f"must be one of {ADD_RESCALES}, got {_short(lay.attr('rescale'))}", f"{where}.attrs.rescale")
    if lay.attr("rescale") == "dequantize" and lay.attr("requant") not in ("float32", "float64"):
        _fail("rescale 'dequantize' needs requant float32 or float64", f"{where}.attrs.rescale")
    if lay.attr("requant") in MAC_ONLY_REQUANT:
        _fail(f"requant {lay.attr('requant')!r} is a conv2d / dense output stage (TFLite kernel path); an add takes "
              "float32, float64, fixed_double, fixed_single or shift", f"{where}.attrs.requant")
    if _check_bool(lay.attr("subtract"), f"{where}.attrs.subtract") and len(lay.inputs) != 2:
        _fail(f"subtract (input 0 minus input 1) takes exactly two inputs, got {len(lay.inputs)}", f"{where}.inputs")
    if lay.attr("input_rounding") not in ADD_INPUT_ROUNDINGS:
        _fail(f"must be one of {ADD_INPUT_ROUNDINGS}, got {_short(lay.attr('input_rounding'))}",
              f"{where}.attrs.input_rounding")
    if lay.attr("input_rounding") == "single" and (lay.attr("requant") != "fixed_double"
                                                   or lay.attr("rescale") != "ratio"):
        _fail("input_rounding 'single' (TFLite's optimized SIMD add) needs requant fixed_double, rescale ratio",
              f"{where}.attrs.input_rounding")
    if lay.attr("input_rounding") == "single" and len(set(map(tuple, lay.in_shapes))) != 1:
        _fail("input_rounding 'single' is TFLite's elementwise SIMD add: the inputs must have equal shapes "
              "(its broadcasting loops are not modelled)", f"{where}.attrs.input_rounding")
    if lay.attr("rescale") == "xnnpack":
        _check_xnnpack_add(lay, where)
    lay.out_shape = out_shape


def _check_xnnpack_add(lay, where):
    """XNNPACK's add: two 8-bit uniform inputs and output, scale ratios its integer multipliers can hold."""
    from .units.xnnpack_ops import add_multipliers
    if len(lay.inputs) != 2:
        _fail(f"rescale 'xnnpack' adds exactly two inputs, got {len(lay.inputs)}", f"{where}.inputs")
    for enc in list(lay.in_encs) + [lay.out_enc]:
        if not isinstance(enc, UniformAct) or enc.bits != 8:
            _fail("rescale 'xnnpack' reads and writes 8-bit uniform encodings", f"{where}.encoding")
    try:
        add_multipliers([e.scale for e in lay.in_encs], lay.out_enc.scale, lay.attr("subtract"))
    except HwsimError as e:
        _fail(str(e), f"{where}.encoding.scale")


def _check_mul(lay, where):
    _check_params_absent(lay, where)
    lay.out_shape = broadcast_shape(lay.in_shapes, where)
    for name, enc in zip(lay.inputs, lay.in_encs):
        if not isinstance(enc, UniformAct):
            _fail(f"input {_short(name)} must have a uniform encoding (mul multiplies integer values)",
                  f"{where}.inputs")
    if not isinstance(lay.out_enc, UniformAct):
        _fail("mul writes a uniform encoding", f"{where}.encoding")
    mode = lay.attr("requant")
    if mode not in MUL_MODES:
        _fail(f"must be one of {MUL_MODES}, got {_short(mode)}", f"{where}.attrs.requant")
    clip = lay.attr("clip")     # a fused activation, in output value units (TFLite MUL's RELU / RELU6)
    if clip is not None:
        lo, hi = _int_list(clip, 2, f"{where}.attrs.clip", lo=-(1 << 31), hi=(1 << 31) - 1)
        if lo > hi:
            _fail(f"min {lo} > max {hi}", f"{where}.attrs.clip")
    a, b = lay.in_encs
    with np.errstate(all="ignore"):
        ratio = np.float32(np.float32(a.scale) * np.float32(b.scale)) / np.float32(lay.out_enc.scale)
        exact = a.scale * b.scale / lay.out_enc.scale
    if not (np.isfinite(exact) and exact > 0) or (mode in ("float32", "xnnpack", "tflite")
                                                   and not (np.isfinite(ratio) and ratio > 0)):
        _fail("the scale ratio s_a * s_b / s_out is zero or not finite", f"{where}.encoding.scale")
    if mode == "xnnpack":   # what XNNPACK's vmul takes (xnnpack_delegate.cc CheckTensorsInputProductOutputScale)
        if any(e.bits != 8 for e in (a, b, lay.out_enc)):
            _fail("requant 'xnnpack' multiplies 8-bit uniform encodings", f"{where}.encoding")
        if not 2.0 ** -16 <= float(ratio) < 2.0 ** 8:
            _fail(f"requant 'xnnpack' needs s_a * s_b / s_out in [2^-16, 2^8), got {float(ratio):.6g}",
                  f"{where}.encoding.scale")


def _check_resize(lay, where):
    from .units.resize import ARITHMETICS, COORDINATE_MODES, NEAREST_MODES, RESIZE_MODES
    _check_params_absent(lay, where)
    inp = lay.in_shapes[0]
    if len(inp) != 3:
        _fail(f"resize needs a [C, H, W] input, got {list(inp)}", f"{where}.inputs")
    size = _int_list(lay.attr("size"), 2, f"{where}.attrs.size", lo=1, hi=MAX_DIM)
    scales = lay.attr("scales")
    if (not isinstance(scales, (list, tuple)) or len(scales) != 2
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                       and 1e-6 <= v <= 1e6 for v in scales)):
        _fail(f"must be two finite factors in [1e-6, 1e6], got {_short(scales)}", f"{where}.attrs.scales")
    for key, options in (("mode", RESIZE_MODES), ("coordinate", COORDINATE_MODES),
                         ("nearest_mode", NEAREST_MODES), ("requant", ("float32", "float64")),
                         ("arithmetic", ARITHMETICS)):
        if lay.attr(key) not in options:
            _fail(f"must be one of {options}, got {_short(lay.attr(key))}", f"{where}.attrs.{key}")
    if lay.attr("mode") == "linear" and lay.attr("arithmetic") != "dequantized":   # ORT's kernels on 8-bit codes
        enc = lay.in_encs[0]
        if not (isinstance(enc, UniformAct) and enc.bits == 8):
            _fail(f"arithmetic {lay.attr('arithmetic')!r} interpolates 8-bit uniform codes, got {_short(enc)}",
                  f"{where}.encoding")
        if lay.attr("arithmetic") == "ort_nhwc_float32_trunc" and (size[0] != inp[1] or scales[0] != 1):
            _fail("arithmetic 'ort_nhwc_float32_trunc' is ORT's kernel for an H scale of 1 (H unchanged)",
                  f"{where}.attrs.arithmetic")
        _inherit_encoding(lay, where)
    elif lay.attr("mode") == "nearest":
        _inherit_encoding(lay, where)
    else:
        for enc in (lay.in_encs[0], lay.out_enc):
            if not isinstance(enc, UniformAct):
                _fail("linear resize reads and writes uniform encodings", f"{where}.encoding")
    lay.out_shape = (inp[0], size[0], size[1])


def _check_pad(lay, where):
    _check_params_absent(lay, where)
    inp = lay.in_shapes[0]
    if len(inp) != 3:
        _fail(f"pad needs a [C, H, W] input, got {list(inp)}", f"{where}.inputs")
    if isinstance(lay.in_encs[0], BinaryAct):
        _fail("pad of binary activations is not supported", f"{where}.inputs")
    top, left, bottom, right = _int_list(lay.attr("padding"), 4, f"{where}.attrs.padding", lo=0, hi=MAX_DIM)
    code = lay.attr("pad_code")
    if code is not None:
        lo, hi = lay.in_encs[0].code_range()
        _int_list([code], 1, f"{where}.attrs.pad_code", lo=lo, hi=hi)
    c, h, w = inp
    lay.out_shape = (c, h + top + bottom, w + left + right)
    _inherit_encoding(lay, where)


def _check_dilate(lay, where):
    _check_params_absent(lay, where)
    inp = lay.in_shapes[0]
    if len(inp) != 3:
        _fail(f"dilate needs a [C, H, W] input, got {list(inp)}", f"{where}.inputs")
    if isinstance(lay.in_encs[0], BinaryAct):
        _fail("dilate of binary activations is not defined (no zero code)", f"{where}.inputs")
    sh, sw = _int_list(lay.attr("stride"), 2, f"{where}.attrs.stride", lo=1, hi=1 << 10)
    c, h, w = inp
    lay.out_shape = (c, (h - 1) * sh + 1, (w - 1) * sw + 1)
    _inherit_encoding(lay, where)


def table_bits(lay) -> int:
    """Stored width of a layer's table: output codes (lut), float32 bit patterns (lut_avgpool)."""
    return 32 if lay.op == "lut_avgpool" else lay.out_enc.storage_bits


def _check_lut_avgpool(lay, where):
    for key in ("weight", "bias", "codebook"):
        if getattr(lay, key) is not None:
            _fail(f"lut_avgpool takes no {key}", f"{where}.{key}")
    inp, enc = lay.in_shapes[0], lay.in_encs[0]
    if len(inp) != 3 or isinstance(enc, (BinaryAct, ThresholdAct)) or not hasattr(enc, "code_range"):
        _fail("lut_avgpool needs a [C, H, W] input with a multi-bit encoding", f"{where}.inputs")
    lo, hi = enc.code_range()
    t = lay.table
    if not isinstance(t, np.ndarray) or t.dtype.kind not in "iu" or t.ndim != 2:
        _fail("lut_avgpool needs an integer table [1 or C, input codes] of float32 bit patterns", f"{where}.table")
    if t.shape[1] != hi - lo + 1 or t.shape[0] not in (1, inp[0]):
        _fail(f"table shape {list(t.shape)} must be [1 or {inp[0]}, {hi - lo + 1}]", f"{where}.table.shape")
    if t.size and (t.min() < -(1 << 31) or t.max() >= 1 << 31
                   or not np.all(np.isfinite(t.astype(np.int64).astype(np.int32).view(np.float32)))):
        _fail("table entries must be the bit patterns of finite float32 values", f"{where}.table")
    if not isinstance(lay.out_enc, UniformAct):
        _fail("lut_avgpool writes a uniform encoding", f"{where}.encoding")
    if lay.attr("sum_order") not in ("sequential", "eigen_sse"):
        _fail(f"must be 'sequential' or 'eigen_sse', got {_short(lay.attr('sum_order'))}",
              f"{where}.attrs.sum_order")
    lay.out_shape = (inp[0], 1, 1)


def _check_transpose(lay, where):
    _check_params_absent(lay, where)
    rank = len(lay.in_shapes[0])
    perm = _int_list(lay.attr("perm"), rank, f"{where}.attrs.perm", lo=0, hi=rank - 1)
    if sorted(perm) != list(range(rank)):
        _fail(f"must be a permutation of the {rank} per-sample axes, got {perm}", f"{where}.attrs.perm")
    lay.out_shape = tuple(lay.in_shapes[0][p] for p in perm)
    _inherit_encoding(lay, where)


def _check_softmax(lay, where):
    _check_params_absent(lay, where)
    if len(lay.in_shapes[0]) not in (1, 3):   # [K]: the whole vector; [C, H, W]: over the channels of each pixel
        _fail(f"softmax works on a [K] vector or over the channels of [C, H, W], got {list(lay.in_shapes[0])}",
              f"{where}.inputs")
    for enc in (lay.in_encs[0], lay.out_enc):
        if not isinstance(enc, UniformAct) or enc.bits != 8:
            _fail("softmax reads and writes 8-bit uniform encodings", f"{where}.encoding")
    if lay.attr("arithmetic") not in SOFTMAX_ARITHMETICS:
        _fail(f"must be one of {SOFTMAX_ARITHMETICS}, got {_short(lay.attr('arithmetic'))}", f"{where}.attrs.arithmetic")
    if lay.attr("arithmetic") == "tflite_reference" and lay.out_enc.zero_point != lay.out_enc.code_range()[0]:
        # reference/softmax.h adds the type's lowest value, not the zero point (SoftmaxPrepare checks int8's -128)
        _fail("TFLite's softmax writes zero point = the lowest code (-128 for int8, 0 for uint8), got "
              f"{lay.out_enc.zero_point}", f"{where}.encoding.zero_point")
    lay.out_shape = lay.in_shapes[0]


def _check_lut(lay, where):
    """A table of output codes, one row per input code: per tensor ([1, codes]) or per channel ([C, codes])."""
    for key in ("weight", "bias", "codebook"):
        if getattr(lay, key) is not None:
            _fail(f"lut takes no {key}", f"{where}.{key}")
    enc = lay.in_encs[0]
    if isinstance(enc, (BinaryAct, ThresholdAct)) or not hasattr(enc, "code_range"):
        _fail("a lut input needs a multi-bit encoding", f"{where}.inputs")
    lo, hi = enc.code_range()
    codes = hi - lo + 1
    if codes > LUT_MAX_CODES:
        _fail(f"a lut input has at most {LUT_MAX_CODES} codes, got {codes}", f"{where}.inputs")
    t = lay.table
    if not isinstance(t, np.ndarray) or t.dtype.kind not in "iu" or t.ndim != 2:
        _fail("lut needs an integer table [1 or C, input codes]", f"{where}.table")
    channels = lay.in_shapes[0][0]
    if t.shape[1] != codes or t.shape[0] not in (1, channels):
        _fail(f"table shape {list(t.shape)} must be [1 or {channels}, {codes}] (one row per channel, one column "
              "per input code)", f"{where}.table.shape")
    if lay.out_enc is None or isinstance(lay.out_enc, (BinaryAct, ThresholdAct)):
        _fail("a lut writes a multi-bit encoding", f"{where}.encoding")
    out_lo, out_hi = lay.out_enc.code_range()
    if t.size and (t.min() < out_lo or t.max() > out_hi):
        _fail(f"table codes outside the output encoding's range [{out_lo}, {out_hi}]", f"{where}.table")
    lay.out_shape = lay.in_shapes[0]


CHECKS = {"conv2d": _check_mac, "dense": _check_mac, "maxpool": _check_pool, "avgpool": _check_pool,
          "relu": _check_clip, "clip": _check_clip, "flatten": _check_reshape, "reshape": _check_reshape,
          "concat": _check_concat, "add": _check_add, "mul": _check_mul, "lut": _check_lut,
          "resize": _check_resize, "dilate": _check_dilate, "softmax": _check_softmax,
          "transpose": _check_transpose, "lut_avgpool": _check_lut_avgpool, "pad": _check_pad}


# ------------------------------------------------------------------------------------------------ budget

OP_UNITS = {"conv2d": "MACs", "dense": "MACs", "maxpool": "compares", "avgpool": "adds"}


def _fmt(n: int) -> str:
    return f"{n:,}" if n < 10 ** 12 else f"{n:.3g}"


def _limit_text(key: str) -> str:
    v = LIMITS[key]
    exp = v.bit_length() - 1
    return f"2^{exp}" if v == 1 << exp else _fmt(v)


LIMITS_HINT = "(lift the limits with --no-limits or HWSIM_NO_LIMITS=1)"


def layer_figures(lay: Layer, batch: int = 1) -> dict:
    """Shape-derived figures of one checked layer: output elements and operations per sample, the bytes the
    engine touches for `batch` samples (int64 inputs, padded inputs, weights and output), window cells and
    stride phases."""
    out = math.prod(lay.out_shape)
    ins = sum(math.prod(s) for s in lay.in_shapes)
    padded, window, phases = 0, 1, 1
    if lay.op in ("conv2d", "maxpool", "avgpool"):
        c, h, w = lay.in_shapes[0]
        pt, pl, pb, pr = lay.attr("padding")
        padded = c * (h + pt + pb) * (w + pl + pr)
        if lay.op == "conv2d":
            kh, kw = lay.weight.shape[2:]
            sh, sw = lay.attr("stride")
            phases = sh * sw
        else:
            kh, kw = lay.attr("kernel")
        window = kh * kw
    if lay.op == "conv2d":
        ops = out * lay.weight.shape[1] * window
    elif lay.op == "dense":
        ops = out * lay.weight.shape[1]
    elif lay.op in ("maxpool", "avgpool"):
        ops = out * window
    elif lay.op == "resize":
        ops = out * 4
    elif lay.op == "lut_avgpool":
        ops = ins
    else:
        ops = out * max(len(lay.inputs), 1)
    params = sum(t.size for t in (lay.weight, lay.codebook, lay.bias, lay.table) if t is not None)
    return {"output_elements": out, "ops": ops, "bytes": 8 * batch * (ins + padded + out), "param_bytes": 8 * params,
            "window": window, "stride_phases": phases, "elements": ins + padded + out, "params": params}


# Per-layer figures checked against LIMITS: (figure, limit, what the figure is in the error line).
LAYER_CHECKS = (("window", "window", "kernel window of {} cells"),
                ("stride_phases", "stride_phases", "stride of {} phases (stride_h x stride_w)"),
                ("output_elements", "output_elements", "output of {} elements per sample"),
                ("ops", "layer_ops", "needs {} {unit} per sample"))


def check_budget(model: Model, batch: int = 1) -> None:
    """Refuse a checked model whose work or memory is beyond LIMITS (one error naming the layer and the figure).

    Computed from shapes alone, before any work; lifted by HWSIM_NO_LIMITS=1 or --no-limits (no_limits())."""
    if not limits_enabled():
        return
    hint = LIMITS_HINT
    inp = math.prod(model.input_shape)
    if inp > LIMITS["output_elements"]:
        _fail(f"the input has {_fmt(inp)} elements per sample, more than the limit of "
              f"{_limit_text('output_elements')} {hint}", "input.shape")
    total = params = 0
    for lay in model.layers:
        fld = f"layers.{lay.name}"
        fig = layer_figures(lay, batch)
        unit = OP_UNITS.get(lay.op, "operations")
        for key, limit, what in LAYER_CHECKS:
            if fig[key] > LIMITS[limit]:
                _fail(f"{lay.op} {what.format(_fmt(fig[key]), unit=unit)}, more than the limit of "
                      f"{_limit_text(limit)} {hint}", fld)
        if fig["bytes"] > LIMITS["layer_bytes"]:
            _fail(f"{lay.op} touches {_fmt(fig['bytes'])} bytes for a batch of {batch}, more than the limit of "
                  f"{LIMITS['layer_bytes'] >> 20} MiB {hint}", fld)
        if fig["param_bytes"] > LIMITS["param_bytes"]:
            _fail(f"{lay.op} has {_fmt(fig['params'])} parameters, {_fmt(fig['param_bytes'])} bytes at the engine's "
                  f"int64 width, more than the limit of {LIMITS['param_bytes'] >> 20} MiB {hint}", fld)
        params += fig["param_bytes"]
        if params > LIMITS["model_param_bytes"]:
            _fail(f"the model's parameters up to this layer take {_fmt(params)} bytes at the engine's int64 width, "
                  f"more than the limit of {LIMITS['model_param_bytes'] >> 20} MiB {hint}", fld)
        total += fig["ops"]
        if total > LIMITS["model_ops"]:
            _fail(f"the model needs {_fmt(total)} operations per sample up to this layer, more than the limit "
                  f"of {_limit_text('model_ops')} {hint}", fld)


# The engine's time per sample, in work units of about a nanosecond on the reference machine (2 cores; figures
# from benchmarks/limits_throughput.py, each weight rounded up to the slowest shape measured for its kind):
# every element a layer reads, pads or writes costs WORK_PER_ELEMENT (decode, im2col, requantize, encode,
# zero-operand counts: 12-16 ns measured), every operation its kind's weight, every layer a fixed overhead.
WORK_PER_ELEMENT = 32
WORK_PER_LAYER = 50_000
WORK_PER_PARAM = 4


def _work_per_op(lay: Layer, fig: dict) -> float:
    if lay.op == "conv2d":
        # the SIMD kernel (4 * output channels per group >= 16 lanes): 0.01-0.25 ns per MAC; else the
        # sequential kernel: up to 3.2 ns per MAC (1x1-channel 256x256 kernels)
        return 0.25 if 4 * (lay.weight.shape[0] // lay.attr("groups")) >= 16 else 4
    if lay.op == "dense":   # one sample is a 1-wide image: 3.6-7.3 ns per MAC, up to 50 ns with K >= 2^18
        k = lay.weight.shape[1]
        return 8 if k <= 1 << 16 and lay.weight.shape[0] >= 4 else 64
    if lay.op in ("maxpool", "avgpool"):
        return 2            # 0.4-1 ns per compare / add in the engine; the reference maxpool ~1.7 ns
    return 4                # elementwise ops: their elements dominate (relu, add: 10-11 ns per element)


def layer_work(lay: Layer) -> int:
    """Work units (about ns) the engine spends on one checked layer for one sample (see WORK_PER_ELEMENT)."""
    fig = layer_figures(lay)
    return int(WORK_PER_LAYER + WORK_PER_ELEMENT * fig["elements"] + WORK_PER_PARAM * fig["params"]
               + _work_per_op(lay, fig) * fig["ops"])


def run_work(model: Model) -> int:
    """Work units of one sample through the whole checked model (the figure LIMITS["run_work"] bounds)."""
    return sum(layer_work(lay) for lay in model.layers)


def check_run_work(model: Model, samples: int = 1, fld: str | None = None, passes: int = 1) -> None:
    """The execution limit, checked where the engine runs (run, validate, compare) and not by inspect or
    estimate: `samples` samples of the checked model, each run `passes` times (validate: the engine and twice
    the float reference, 3), must stay within LIMITS["run_work"]. The error names the layer where one sample's
    running total passes the limit, else `fld` (what holds the samples)."""
    if not limits_enabled():
        return
    limit = LIMITS["run_work"] // max(1, passes)
    total = 0
    for lay in model.layers:
        total += layer_work(lay)
        if total > limit:
            _fail(f"{lay.op}: running the model up to this layer is about {_fmt(total)} work units (~ns) per "
                  f"sample, more than the execution limit of {_limit_text('run_work')}"
                  f"{'' if passes == 1 else f' / {passes} (the passes of validate)'} (inspect and estimate do "
                  f"not check it) {LIMITS_HINT}", f"layers.{lay.name}")
    if samples > 1 and total * samples > limit:
        _fail(f"{_fmt(samples)} samples at about {_fmt(total)} work units (~ns) each are "
              f"{_fmt(total * samples)}, more than the execution limit of {_limit_text('run_work')}"
              f"{'' if passes == 1 else f' / {passes}'}: run fewer "
              f"samples (--limit N) {LIMITS_HINT}", fld or "input")


def check_sample_size(count: int, fld: str = "sample_input") -> None:
    """The sample input stored in a model is bounded like any tensor (checked before it is unpacked)."""
    if limits_enabled() and count > LIMITS["sample_elements"]:
        _fail(f"holds {_fmt(count)} elements, more than the limit of {_limit_text('sample_elements')} "
              "(lift the limits with --no-limits or HWSIM_NO_LIMITS=1)", fld)


BINARY_PAD_VALUES = {"+1": 1, "-1": -1, "zero": 0}


def pad_value(lay: Layer) -> int:
    """The operand value a conv's padded positions hold: binary_pad for binary inputs, else pad_code's value."""
    enc = lay.in_encs[0]
    if isinstance(enc, BinaryAct):
        return BINARY_PAD_VALUES[lay.attr("binary_pad")]
    code = lay.attr("pad_code")
    code = default_pad_code(enc) if code is None else code
    return int(enc.decode(np.array([code]))[0])


def default_pad_code(enc):
    """The code that stands for real zero in `enc` (what zero padding means), or the nearest code."""
    if isinstance(enc, UniformAct):
        return enc.zero_point
    if isinstance(enc, KnqAct):
        return int(np.argmin(np.abs(np.asarray(enc.centroids))))
    return 0
