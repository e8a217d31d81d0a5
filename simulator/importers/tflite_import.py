"""Import a TFLite / LiteRT int8 model (.tflite) as a hwsim Model, bit-exact against one LiteRT kernel path.

What a TFLite model computes depends on which kernels run it, as ONNX Runtime's result depends on VNNI:

- "xnnpack"   (default) what a plain `Interpreter()` runs: the XNNPACK delegate takes the layers it supports and
              requantizes conv / depthwise / fully connected outputs in float32 (`requant: "float32"`, the
              multiplier float32(float32(s_in * s_w) / s_out)); the rest run on the optimized builtin kernels.
- "optimized" the builtin kernels without a delegate (`BUILTIN_WITHOUT_DEFAULT_DELEGATES`): conv, fully
              connected (and depthwise) go through ruy, whose final rounding shift rounds ties up
              (`requant: "fixed_double_ruy"`).
- "reference" the reference kernels (`BUILTIN_REF`): gemmlowp's fixed-point multiplier with double rounding
              (`fixed_double`), the fully connected layer requantized in double (`float64_away`).

Average pooling divides the sum of raw codes, zero point included (`rounding: "tflite_codes"`), on every path.
Each layer records its path's arithmetic in its attributes; `metadata.tflite` says which path the model follows.

Layout: TFLite activations are NHWC, hwsim's are CHW per sample. The model takes its input in the TFLite
layout ([H, W, C]) and a `transpose` layer turns it into [C, H, W]; a 4-D output is turned back the same way,
and a RESHAPE of a 4-D tensor flattens it in NHWC order (a transpose first); tensors of other ranks are held
flat in TFLite's row-major order. So the user feeds and reads tensors exactly as LiteRT does, and
`metadata.tflite_tensors` maps every TFLite tensor to the hwsim tensor holding it with its layout ("CHW": a 4-D
tensor held as [C, H, W]; "flat": the values in TFLite's order).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np

from ..encodings import UniformAct, UniformW
from ..errors import HwsimError
from ..graph import CHECKS, Layer, Model
from . import prune_layers, unique_name
from .tflite_reader import TGraph, TOp, TTensor, read_tflite

KERNEL_PATHS = ("xnnpack", "optimized", "reference")
SUPPORTED_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "ADD", "SUB", "MUL", "AVERAGE_POOL_2D",
                 "MAX_POOL_2D", "MEAN", "RESHAPE", "SQUEEZE", "CONCATENATION", "PAD", "QUANTIZE", "DEQUANTIZE",
                 "SOFTMAX", "LOGISTIC", "HARD_SWISH")
# the inputs each operator needs (more may follow: a bias, a shape tensor)
MIN_INPUTS = {"CONV_2D": 2, "DEPTHWISE_CONV_2D": 2, "FULLY_CONNECTED": 2, "ADD": 2, "SUB": 2, "MUL": 2, "MEAN": 2,
              "PAD": 2}
ACTIVATIONS = {0: None, 1: "RELU", 2: "RELU_N1_TO_1", 3: "RELU6"}
ACTIVATION_NAMES = {4: "TANH", 5: "SIGN_BIT"}
SAME, VALID = 0, 1

LITERT_SOURCES = {
    "conv / depthwise / fully connected multipliers": "tflite/kernels/kernel_util.cc "
                                                     "(PopulateConvolutionQuantizationParams)",
    "fused activation range": "tflite/kernels/kernel_util.cc (CalculateActivationRangeQuantizedImpl)",
    "reference fully connected": "tflite/kernels/internal/reference/integer_ops/fully_connected.h",
    "ruy output stage": "ruy/kernel_avx2_fma.cc (apply_multiplier, rounding_right_shift)",
    "XNNPACK requantization": "tflite/delegates/xnnpack/xnnpack_delegate.cc",
    "average pool": "tflite/kernels/internal/reference/integer_ops/pooling.h",
}


@dataclass
class HT:
    """A TFLite activation tensor as it exists in the hwsim graph."""
    name: str                  # hwsim tensor name
    enc: UniformAct
    shape: tuple               # hwsim per-sample shape ([C, H, W] for a 4-D TFLite tensor)
    nhwc: bool                 # a 4-D TFLite tensor held as [C, H, W]


def import_tflite(path, kernels: str = "xnnpack", output: str | None = None) -> Model:
    """Import `path` (a .tflite flatbuffer) to follow LiteRT's `kernels` path bit for bit; returns a checked
    Model. `output`: the name of the tensor the hwsim model ends at (required when the graph has several
    outputs; any tensor the graph computes may be named). HwsimError (one line naming the file and the operator
    or tensor) for anything it cannot express."""
    source = os.fspath(path)
    if kernels not in KERNEL_PATHS:
        raise HwsimError(f"unknown TFLite kernel path {kernels!r}; choose one of {', '.join(KERNEL_PATHS)}",
                         field="--tflite-kernels")
    graph = read_tflite(source)
    try:
        with np.errstate(all="ignore"):   # hostile scales overflow float32; the checks below refuse the results
            model = TfliteBuilder(graph, kernels, source, output).run()
            return model.check()
    except HwsimError as exc:
        if exc.source is None:
            raise HwsimError(exc.message, source=source, field=exc.field) from None
        raise


def same_padding(size: int, kernel: int, stride: int, dilation: int = 1) -> tuple[int, int, int]:
    """TFLite's ComputePaddingHeightWidth for SAME: (output size, pad before, pad after)."""
    out = (size + stride - 1) // stride
    total = max((out - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)
    return out, total // 2, total - total // 2


class TfliteBuilder:
    def __init__(self, graph: TGraph, kernels: str, source: str, output: str | None = None):
        self.g = graph
        self.output = output
        self.kernels = kernels
        self.source = source
        self.layers: list[Layer] = []
        self.values: dict[int, HT] = {}           # TFLite tensor index -> hwsim tensor
        self.names: set = {"input"}
        self.notes: list[str] = []
        self.paths: dict[str, str] = {}           # hwsim layer -> the kernel path arithmetic it declares
        self.consumers: dict[int, list] = {}
        for op in graph.ops:
            for t in op.inputs:
                self.consumers.setdefault(t, []).append(op)
        self.folded_pads: dict[int, tuple] = {}   # PAD output tensor -> (input tensor, pads [t, l, b, r], code)
        self.model_input: HT | None = None
        self.input_float = False
        self.input_division, self.input_rounding = "float32", "half_away"   # a float input's quantizer
        first = graph.tensors[graph.inputs[0]].shape if graph.inputs else ()
        self.batch = first[0] if first else 1     # samples run side by side, as hwsim runs a batch

    # ------------------------------------------------------------------------------------------- helpers
    def fail(self, msg, where=None):
        raise HwsimError(msg, field=where)

    def where(self, op: TOp) -> str:
        return f"operators[{op.index}] ({op.name})"

    def tensor(self, index: int, op: TOp, what: str) -> TTensor:
        if index < 0:
            self.fail(f"its {what} is missing", self.where(op))
        return self.g.tensors[index]

    def new_name(self, base: str) -> str:
        # the converter names a fused tensor "a/b/Relu;a/b/BiasAdd;...": the first name says enough
        base = base.split(";")[0]
        base = "".join(ch if ch.isalnum() or ch in "_-." else "_" for ch in base)[:60] or "layer"
        return unique_name(base, self.names)

    def enc(self, t: TTensor, where) -> UniformAct:
        """The uniform encoding of an 8-bit activation tensor (per-tensor scale and zero point)."""
        if t.dtype not in ("int8", "uint8"):
            what = {"float32": "a float32 tensor", "int16": "an int16 tensor (a 16x8 model)"}.get(
                t.dtype, f"a {t.dtype} tensor")
            self.fail(f"tensor {t.name!r} is {what}; hwsim imports int8 (and legacy uint8) quantized models: "
                      "convert with full-integer quantization (inference types int8 or uint8)", where)
        if t.scales.size != 1 or t.zero_points.size != 1:
            if t.scales.size == 0:
                self.fail(f"tensor {t.name!r} has no quantization parameters (scale and zero point)", where)
            self.fail(f"activation tensor {t.name!r} has {t.scales.size} scales; activations need one scale and "
                      "one zero point", where)
        scale = float(t.scales[0])
        if not (math.isfinite(scale) and scale > 0):
            self.fail(f"tensor {t.name!r} has scale {scale!r}; it must be finite and > 0", where)
        zp = int(t.zero_points[0])
        lo, hi = (-128, 127) if t.dtype == "int8" else (0, 255)
        if not lo <= zp <= hi:
            self.fail(f"tensor {t.name!r} has zero point {zp}, outside the {t.dtype} range", where)
        return UniformAct(8, t.dtype == "int8", scale, zp)

    def hw_shape(self, t: TTensor, where) -> tuple[tuple, bool]:
        shape = t.shape
        if len(shape) < 2 or shape[0] != self.batch:
            self.fail(f"tensor {t.name!r} has shape {list(shape)}; hwsim imports [N, H, W, C] and [N, K] "
                      f"activations with the input's batch N = {self.batch} on every tensor", where)
        if any(d < 1 for d in shape):
            self.fail(f"tensor {t.name!r} has a dynamic or empty shape {list(shape)}", where)
        if len(shape) == 4:
            return (shape[3], shape[1], shape[2]), True
        return (math.prod(shape[1:]),), False       # any other rank: held flat, in TFLite's row-major order

    def value(self, index: int, op: TOp) -> HT:
        if index not in self.values:
            t = self.tensor(index, op, "input")
            if t.data is not None:
                self.fail(f"input {t.name!r} is a constant; hwsim needs an activation here", self.where(op))
            self.fail(f"input {t.name!r} is not computed by any earlier operator", self.where(op))
        return self.values[index]

    def const(self, index: int, op: TOp, what: str) -> TTensor:
        t = self.tensor(index, op, what)
        if t.data is None:
            self.fail(f"the {what} {t.name!r} must be a constant tensor", self.where(op))
        return t

    def add_layer(self, lay: Layer, inputs: list, where) -> HT:
        lay.in_shapes = [q.shape for q in inputs]
        lay.in_encs = [q.enc for q in inputs]
        try:
            CHECKS[lay.op](lay, where)
        except HwsimError as exc:
            self.fail(f"cannot map to hwsim {lay.op}: {exc.message}", where)
        self.layers.append(lay)
        return HT(lay.name, lay.out_enc or inputs[0].enc, tuple(lay.out_shape), False)

    def define(self, op: TOp, q: HT, nhwc: bool):
        out = self.g.tensors[op.outputs[0]]
        q.nhwc = nhwc
        if not out.shape:        # a shape left to run time (a dynamic batch): the computed one stands
            self.values[op.outputs[0]] = q
            return
        shape, is4 = self.hw_shape(out, self.where(op))
        if is4 != nhwc or tuple(shape) != tuple(q.shape):
            self.fail(f"computes shape {list(q.shape)} but its output {out.name!r} is declared {list(out.shape)}",
                      self.where(op))
        self.values[op.outputs[0]] = q

    def transpose(self, q: HT, perm, base, where) -> HT:
        lay = Layer(self.new_name(base), "transpose", [q.name], {"perm": list(perm)})
        return self.add_layer(lay, [q], where)

    def to_flat(self, q: HT, base, where) -> HT:
        """A [C, H, W] tensor as TFLite's NHWC flattening: transpose to [H, W, C] (unless H = W = 1), flatten."""
        if q.nhwc and q.shape[1] * q.shape[2] > 1:
            q = self.transpose(q, (1, 2, 0), base + "_nhwc", where)
        if len(q.shape) != 1:
            q = self.add_layer(Layer(self.new_name(base + "_flat"), "flatten", [q.name]), [q], where)
        return q

    def act_bounds(self, activation: int, enc: UniformAct, path: str) -> tuple[int, int]:
        """The code range a fused activation clamps to on `path`: TFLite's CalculateActivationRangeQuantized on
        the builtin kernels, XNNPACK's own quantization of the bounds on the delegate."""
        name = ACTIVATIONS.get(activation) or "NONE"
        if path == "xnnpack":
            from .tflite_xnnpack import activation_codes
            return activation_codes(name, self.qparams(enc))
        from .tflite_arith import activation_range
        return activation_range(name, self.qparams(enc))

    def clamp(self, q: HT, activation: int, base, where, path: str) -> HT:
        lo, hi = self.act_bounds(activation, q.enc, path)
        if (lo, hi) == q.enc.code_range():
            return q
        zp = q.enc.zero_point
        lay = Layer(self.new_name(base + "_act"), "clip", [q.name], {"min": lo - zp, "max": hi - zp})
        return self.add_layer(lay, [q], where)

    def check_activation(self, op: TOp):
        act = op.options.get("activation", 0)
        if act not in ACTIVATIONS:
            name = ACTIVATION_NAMES.get(act, f"code {act}")
            self.fail(f"fused activation {name} is not supported (RELU, RELU6 and RELU_N1_TO_1 are)",
                      self.where(op))
        return act

    # ------------------------------------------------------------------------------------------- run
    def run(self) -> Model:
        g = self.g
        if g.subgraphs != 1:
            self.notes.append(f"the file has {g.subgraphs} subgraphs; only the first (the main graph) is imported")
        if len(g.inputs) != 1:
            self.fail(f"hwsim models have one input; this graph has {len(g.inputs)}", "subgraphs[0].inputs")
        if self.output is not None:
            found = [t.index for t in g.tensors if t.name == self.output]
            if not found:
                self.fail(f"no tensor is named {self.output!r}", "--tflite-output")
            self.out_index = found[0]
        elif len(g.outputs) != 1:
            names = ", ".join(repr(g.tensors[i].name) for i in g.outputs[:8])
            self.fail(f"the graph has {len(g.outputs)} outputs ({names}); a hwsim model has one: choose it with "
                      "--tflite-output NAME", "subgraphs[0].outputs")
        else:
            self.out_index = g.outputs[0]
        unsupported = sorted({op.name for op in g.ops if op.name not in SUPPORTED_OPS})
        if unsupported:
            first = next(op for op in g.ops if op.name == unsupported[0])
            self.fail(f"unsupported operator {unsupported[0]}"
                      + (f" (and {', '.join(unsupported[1:])})" if unsupported[1:] else "")
                      + f"; supported: {', '.join(SUPPORTED_OPS)}", self.where(first))
        self.read_input(g.tensors[g.inputs[0]])
        for op in g.ops:
            if not op.outputs:
                self.fail("has no output", self.where(op))
            if len(op.inputs) < MIN_INPUTS.get(op.name, 1) or op.inputs[0] < 0:
                self.fail(f"has {len(op.inputs)} input(s); {op.name} needs {MIN_INPUTS.get(op.name, 1)}",
                          self.where(op))
            if op.name == "QUANTIZE" and self.input_float and op.inputs and op.inputs[0] == g.inputs[0]:
                self.quantize_input(op)
                continue
            getattr(self, "op_" + op.name.lower())(op)
        return self.finish()

    def read_input(self, t: TTensor):
        where = f"input {t.name!r}"
        weights = [self.g.tensors[op.inputs[1]] for op in self.g.ops
                   if op.name in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED") and len(op.inputs) > 1]
        if any(w.dtype in ("float32", "float16") for w in weights):
            self.fail("this is a float model (float weights); hwsim imports full-integer quantized TFLite models "
                      "(int8, or legacy uint8): convert with a representative dataset and "
                      "TFLITE_BUILTINS_INT8", "subgraphs[0]")
        if t.dtype == "int16" or any(self.g.tensors[op.outputs[0]].dtype == "int16" for op in self.g.ops
                                     if op.outputs):
            self.fail("this is a 16x8 model (int16 activations); hwsim imports int8 (and legacy uint8) "
                      "activations", "subgraphs[0]")
        if t.dtype == "float32":
            users = self.consumers.get(t.index, [])
            if not users or any(u.name != "QUANTIZE" for u in users):
                self.fail("the model takes float32 input that is not quantized by a QUANTIZE operator first; "
                          "hwsim imports full-integer quantized models (int8 or uint8 inside)", where)
            self.input_float = True
            return
        enc = self.enc(t, where)
        self.set_input(t, enc, where)

    def set_input(self, t: TTensor, enc: UniformAct, where):
        if t.shape and t.shape[0] != self.batch:
            self.fail(f"shape {list(t.shape)} does not keep the batch of the model input ({self.batch})", where)
        shape, nhwc = self.hw_shape(t, where)
        q = HT("input", enc, tuple(t.shape[1:]), False)
        self.model_input = q
        if nhwc:
            q = self.transpose(q, (2, 0, 1), "input_chw", where)
            q.nhwc = True
        self.values[t.index] = q

    def quantize_input(self, op: TOp):
        """The float -> int8 QUANTIZE at the model input becomes hwsim's input quantizer, in this path's
        arithmetic: the reference kernel divides in float32 and rounds half away from zero; XNNPACK multiplies by
        float32(1 / scale) and rounds half to even; the optimized kernel does so in blocks of 8 per sample."""
        out = self.g.tensors[op.outputs[0]]
        enc = self.enc(out, self.where(op))
        path = self.path_for("QUANTIZE", [], self.qparams(enc))
        self.input_division, self.input_rounding = {"reference": ("float32", "half_away"),
                                                    "optimized": ("tflite_optimized", "half_even"),
                                                    "xnnpack": ("xnnpack", "half_even")}[path]
        self.set_input(out, enc, self.where(op))

    def finish(self) -> Model:
        out_index = self.out_index
        out_t = self.g.tensors[out_index]
        dequantize = False
        if out_index not in self.values and out_t.dtype == "float32":
            producer = next((op for op in self.g.ops if out_index in op.outputs), None)
            if producer is not None and producer.name == "DEQUANTIZE":
                out_index, dequantize = producer.inputs[0], True
        if out_index not in self.values:
            self.fail(f"the graph output {out_t.name!r} is not a quantized tensor hwsim computes", "subgraphs[0].outputs")
        q = self.values[out_index]
        if q.name == "input":
            self.fail("the graph computes nothing hwsim can run (its output is its input)", "subgraphs[0].outputs")
        if q.nhwc:
            q = self.transpose(q, (1, 2, 0), "output_nhwc", "output")
        layers = prune_layers(self.layers, q.name)
        tensors = {}
        kept = {lay.name for lay in layers} | {"input"}
        for index, h in self.values.items():
            if h.name not in kept:
                continue
            t = self.g.tensors[index]
            tensors[t.name or str(index)] = {"index": index, "hwsim": h.name, "layout": "CHW" if h.nhwc else "flat"}
        if dequantize and self.kernels == "optimized":
            dequantize = "tflite_optimized"
        meta = {"source": {"format": "tflite", "file": os.path.basename(self.source), "schema_version": self.g.version,
                           "description": self.g.description[:200]},
                "tflite": {"kernels": self.kernels, "layers": {k: v for k, v in self.paths.items()
                                                                if any(lay.name == k for lay in layers)}},
                "litert_sources": LITERT_SOURCES,
                "tflite_tensors": tensors}
        if self.notes:
            meta["import_notes"] = self.notes
        name = os.path.splitext(os.path.basename(self.source))[0]
        return Model(name=name, input_shape=self.model_input.shape, input_enc=self.model_input.enc, layers=layers,
                     input_rounding=self.input_rounding, input_division=self.input_division,
                     output_dequantize=dequantize,
                     metadata=meta, source=self.source)

    # ------------------------------------------------------------------------------------------- MAC layers
    def requant(self, kind: str, x_enc, w: TTensor, out_enc, co: int) -> tuple[str, list]:
        """The requantization mode and the explicit multipliers of a conv / depthwise / fully connected layer on
        this kernel path, formed as LiteRT forms them."""
        s_w = np.broadcast_to(w.scales, (co,)) if w.scales.size == 1 else w.scales
        f32 = np.float32
        if self.kernels == "xnnpack":
            # the delegate: float32(float32(s_in * s_w) / s_out), float32 requantization
            from .tflite_xnnpack import conv_multipliers
            mult = conv_multipliers(x_enc.scale, s_w, out_enc.scale)
            if not np.all(mult < 256):
                raise HwsimError("a requantization scale s_in * s_w / s_out of 256 or more: LiteRT's XNNPACK "
                                 "delegate takes the layer, XNNPACK refuses it and the interpreter fails to "
                                 "prepare the model")
            return "float32", [float(m) for m in mult]
        if w.scales.size == 1 and kind == "fully_connected" and self.kernels == "optimized":
            # per-tensor fully connected on the optimized kernels: the multiplier from the float32 product
            # s_in * s_w (measured on LiteRT 2.3.0: the double product gives other codes)
            mult = [float(f32(f32(x_enc.scale) * f32(w.scales[0]))) / float(f32(out_enc.scale))]
        else:   # double(s_in) * double(s_w[c]) / double(s_out) (PopulateConvolutionQuantizationParams)
            mult = [float(f32(x_enc.scale)) * float(f32(s)) / float(f32(out_enc.scale)) for s in s_w]
            if w.scales.size == 1:
                mult = mult[:1]
        if self.kernels == "reference":
            return ("float64_away" if kind == "fully_connected" else "fixed_double"), mult
        # optimized x86: ruy's output stage for conv and fully connected; the depthwise kernel's NEON code (via
        # NEON_2_SSE) does the same on whole blocks of 8 channels and the reference rounding on the rest
        return ("fixed_double_blocks8" if kind == "depthwise" else "fixed_double_ruy"), mult

    def weight_enc(self, w: TTensor, co: int, where) -> UniformW:
        if w.dtype not in ("int8", "uint8"):
            self.fail(f"weights {w.name!r} are {w.dtype}; hwsim imports int8 (or uint8) weights", where)
        if w.scales.size not in (1, co) or w.zero_points.size not in (0, 1, w.scales.size):
            self.fail(f"weights {w.name!r} have {w.scales.size} scales for {co} output channels", where)
        if w.scales.size == 0:
            self.fail(f"weights {w.name!r} have no quantization parameters", where)
        zps = tuple(int(z) for z in (w.zero_points if w.zero_points.size else [0]))
        if len(set(zps)) == 1:
            zps = zps[:1]
        return UniformW(8, w.dtype == "int8", tuple(float(s) for s in w.scales), zps)

    def bias(self, op: TOp, co: int):
        if len(op.inputs) < 3 or op.inputs[2] < 0:
            return None
        b = self.const(op.inputs[2], op, "bias")
        if b.dtype != "int32" or b.data.size != co:
            self.fail(f"bias {b.name!r} must be int32 with {co} values, got {b.dtype} {list(b.shape)}",
                      self.where(op))
        return b.data.reshape(co).astype(np.int64)

    def mac(self, op: TOp, kind, x: HT, w: TTensor, weight, attrs, base):
        where = self.where(op)
        out = self.g.tensors[op.outputs[0]]
        enc = self.enc(out, where)
        co = weight.shape[0]
        wenc = self.weight_enc(w, co, where)
        mode, mult = self.requant(kind, x.enc, w, enc, co)
        attrs = {**attrs, "acc_bits": 32, "overflow": "wrap", "requant": mode, "multiplier": mult}
        lo, hi = self.act_bounds(self.check_activation(op), enc, self.kernels)
        if (lo, hi) != enc.code_range():
            attrs["clip"] = [lo - enc.zero_point, hi - enc.zero_point]
        lay = Layer(self.new_name(base), "conv2d" if kind != "fully_connected" else "dense", [x.name], attrs, enc,
                    weight.astype(np.int64), wenc, None, self.bias(op, co), 32)
        self.paths[lay.name] = f"{self.kernels}: requant {mode}"
        return self.add_layer(lay, [x], where)

    def spatial(self, op: TOp, x: HT, kh: int, kw: int):
        """stride and padding [top, left, bottom, right] of a conv or pool on x (TFLite's SAME or VALID)."""
        where = self.where(op)
        sh, sw = op.options.get("stride_h", 1), op.options.get("stride_w", 1)
        dh, dw = op.options.get("dilation_h", 1), op.options.get("dilation_w", 1)
        if sh < 1 or sw < 1:
            self.fail(f"stride {[sh, sw]} must be positive", where)
        if (dh, dw) != (1, 1):
            self.fail(f"dilation {[dh, dw]} is not supported (hwsim convolutions are not dilated)", where)
        _, h, w = x.shape
        if op.options.get("padding", VALID) == SAME:
            _, top, bottom = same_padding(h, kh, sh)
            _, left, right = same_padding(w, kw, sw)
            pads = [top, left, bottom, right]
        else:
            pads = [0, 0, 0, 0]
        return [sh, sw], pads

    def conv_input(self, op: TOp):
        """The conv's input, and the padding / pad code of a PAD folded into it (None: no PAD)."""
        index = op.inputs[0]
        if index in self.folded_pads:
            src, pads, code = self.folded_pads.pop(index)
            return self.values[src], pads, code
        return self.value(index, op), None, None

    def op_conv_2d(self, op: TOp):
        x, pre_pads, pad_code = self.conv_input(op)
        w = self.const(op.inputs[1], op, "filter")
        if len(w.shape) != 4 or not x.nhwc:
            self.fail(f"needs a 4-D input and a [Co, KH, KW, Ci] filter, got {list(w.shape)}", self.where(op))
        co, kh, kw, ci = w.shape
        if ci < 1 or x.shape[0] % ci:
            self.fail(f"filter has {ci} input channels; the input has {x.shape[0]}", self.where(op))
        attrs = self.conv_attrs(op, x, kh, kw, pre_pads, pad_code)
        attrs["groups"] = x.shape[0] // ci
        q = self.mac(op, "conv", x, w, w.data.transpose(0, 3, 1, 2), attrs, self.g.tensors[op.outputs[0]].name or "conv")
        self.define(op, q, True)

    def conv_attrs(self, op, x, kh, kw, pre_pads, pad_code):
        stride, pads = self.spatial(op, x, kh, kw)
        attrs = {"stride": stride}
        if pre_pads is not None:     # a VALID convolution after a PAD (op_pad checks both)
            pads = pre_pads
            if pad_code is not None and pad_code != x.enc.zero_point:
                attrs["pad_code"] = pad_code
        attrs["padding"] = pads
        return attrs

    def op_depthwise_conv_2d(self, op: TOp):
        x, pre_pads, pad_code = self.conv_input(op)
        w = self.const(op.inputs[1], op, "filter")
        if len(w.shape) != 4 or w.shape[0] != 1 or not x.nhwc:
            self.fail(f"needs a 4-D input and a [1, KH, KW, C*M] filter, got {list(w.shape)}", self.where(op))
        _, kh, kw, co = w.shape
        c = x.shape[0]
        if co % c:
            self.fail(f"filter has {co} channels, not a multiple of the input's {c}", self.where(op))
        attrs = self.conv_attrs(op, x, kh, kw, pre_pads, pad_code)
        attrs["groups"] = c
        weight = w.data[0].transpose(2, 0, 1)[:, None]            # [C*M, 1, KH, KW]; output c*M + m in group c
        q = self.mac(op, "depthwise", x, w, weight, attrs, self.g.tensors[op.outputs[0]].name or "depthwise")
        self.define(op, q, True)

    def op_fully_connected(self, op: TOp):
        x = self.value(op.inputs[0], op)
        w = self.const(op.inputs[1], op, "weights")
        if len(w.shape) != 2:
            self.fail(f"weights must be [Co, K], got {list(w.shape)}", self.where(op))
        if op.options.get("weights_format", 0) != 0:
            self.fail("shuffled weights formats are not supported", self.where(op))
        co, k = w.shape
        base = self.g.tensors[op.outputs[0]].name or "fc"
        x = self.to_flat(x, base, self.where(op))
        if x.shape[0] != k:
            self.fail(f"weights take {k} inputs, the input has {x.shape[0]} (batched rows are not supported)",
                      self.where(op))
        q = self.mac(op, "fully_connected", x, w, w.data, {}, base)
        self.define(op, q, False)

    # ------------------------------------------------------------------------------------------- pooling
    def op_max_pool_2d(self, op: TOp):
        self.pool(op, "maxpool")

    def op_average_pool_2d(self, op: TOp):
        self.pool(op, "avgpool")

    def pool(self, op: TOp, kind):
        x = self.value(op.inputs[0], op)
        if not x.nhwc:
            self.fail("pooling needs a 4-D input", self.where(op))
        fh, fw = op.options.get("filter_h", 1), op.options.get("filter_w", 1)
        if fh < 1 or fw < 1:
            self.fail(f"filter {[fh, fw]} must be positive", self.where(op))
        stride, pads = self.spatial(op, x, fh, fw)
        out = self.g.tensors[op.outputs[0]]
        enc = self.enc(out, self.where(op))
        if enc != x.enc:
            self.fail("pooling output must have the input's scale and zero point (as TFLite requires)",
                      self.where(op))
        attrs = {"kernel": [fh, fw], "stride": stride, "padding": pads}
        if kind == "avgpool":
            attrs.update(rounding="tflite_codes", count_include_pad=False)
        base = out.name or kind
        lay = Layer(self.new_name(base), kind, [x.name], attrs)
        q = self.add_layer(lay, [x], self.where(op))
        if kind == "avgpool":
            self.paths[lay.name] = f"{self.kernels}: average of raw codes (tflite_codes)"
        path = self.path_for(op.name, [self.qparams(x.enc)], self.qparams(enc))
        q = self.clamp(q, self.check_activation(op), base, self.where(op), path)
        self.define(op, q, True)

    # ------------------------------------------------------------------------------------------- shapes
    def op_reshape(self, op: TOp):
        self.reshape(op)

    def op_squeeze(self, op: TOp):
        self.reshape(op)

    def reshape(self, op: TOp):
        x = self.value(op.inputs[0], op)
        out = self.g.tensors[op.outputs[0]]
        where = self.where(op)
        if self.enc(out, where) != x.enc:
            self.fail("changes the quantization; a reshape keeps scale and zero point", where)
        target = self.target_shape(op, x)
        nhwc = len(target) == 4
        base = out.name or "reshape"
        if x.nhwc and nhwc and (target[3], target[1], target[2]) == tuple(x.shape):
            self.values[op.outputs[0]] = x
            return
        if target[0] != self.batch:
            self.fail(f"reshapes to {list(target)}, which moves data across the batch (N = {self.batch})", where)
        q = self.to_flat(x, base, where)
        if nhwc:    # to [H, W, C] in TFLite order, then to hwsim's [C, H, W]
            h, w, c = target[1:]
            q = self.add_layer(Layer(self.new_name(base + "_hwc"), "reshape", [q.name], {"shape": [h, w, c]}),
                               [q], where)
            q = self.transpose(q, (2, 0, 1), base, where)
        self.define(op, q, nhwc)

    def target_shape(self, op: TOp, x: HT) -> tuple:
        """A RESHAPE's / SQUEEZE's output shape (batch included): the stored one, else worked out from the
        shape input, the options and the input shape (a graph with a dynamic batch stores none)."""
        out = self.g.tensors[op.outputs[0]]
        if out.shape:
            return tuple(out.shape)
        shape_in = (self.batch,) + ((x.shape[1], x.shape[2], x.shape[0]) if x.nhwc else tuple(x.shape))
        size = math.prod(shape_in)
        if op.name == "SQUEEZE":
            dims = op.options.get("squeeze_dims") or [i for i, d in enumerate(shape_in) if d == 1 and i > 0]
            dims = {d + len(shape_in) if d < 0 else d for d in dims}
            return tuple(d for i, d in enumerate(shape_in) if i not in dims or i == 0)
        new = None
        if len(op.inputs) > 1 and op.inputs[1] >= 0 and self.g.tensors[op.inputs[1]].data is not None:
            new = [int(v) for v in self.g.tensors[op.inputs[1]].data.reshape(-1)]
        new = new or op.options.get("new_shape")
        if not new or sum(d == -1 for d in new) > 1:
            self.fail("the output shape is not stored and cannot be worked out", self.where(op))
        known = math.prod(d for d in new if d != -1)
        new = [size // known if d == -1 else d for d in new]
        if math.prod(new) != size:
            self.fail(f"reshapes {list(shape_in)} to {new}", self.where(op))
        return (self.batch,) + tuple(new[1:]) if new[0] in (-1, self.batch, 1) else tuple(new)

    def op_concatenation(self, op: TOp):
        where = self.where(op)
        xs = [self.value(i, op) for i in op.inputs]
        out = self.g.tensors[op.outputs[0]]
        enc = self.enc(out, where)
        base = out.name or "concat"
        if any(x.enc != enc for x in xs):
            if enc.signed:   # LiteRT refuses the model at prepare (concatenation.cc)
                name = next(self.g.tensors[i].name for i, x in zip(op.inputs, xs) if x.enc != enc)
                self.fail(f"input {name!r} has another scale or zero point than the output; TFLite's int8 "
                          "CONCATENATION requires them equal", where)
            from .tflite_arith import layer_spec    # uint8: each input requantized to the output (builtin kernels)
            out_q = self.qparams(enc)
            path = "reference" if self.kernels == "reference" else "optimized"
            tables = layer_spec("CONCATENATION", path, [self.qparams(x.enc) for x in xs], out_q)["input_tables"]
            xs = [x if t is None else self.table_layer(op, x, enc, t, f"{base}_in{k}", f"{path}: CONCATENATION "
                                                       "input requantized") for k, (x, t) in enumerate(zip(xs, tables))]
        rank = len(out.shape)
        axis = op.options.get("axis", 0)
        axis = axis + rank if axis < 0 else axis
        if axis < 1 or axis >= rank:
            self.fail(f"concatenation along axis {op.options.get('axis')} of a rank-{rank} tensor (the batch axis "
                      "or no axis)", where)
        # hwsim concatenates along the first per-sample axis: bring the TFLite axis there and back
        # (NHWC axis 1 = H, 2 = W, 3 = C; hwsim holds [C, H, W], so channels need no transpose)
        perm = {1: (1, 0, 2), 2: (2, 1, 0), 3: None}[axis] if rank == 4 else None
        if perm:
            xs = [self.transpose(x, perm, base + f"_in{k}", where) for k, x in enumerate(xs)]
        q = self.add_layer(Layer(self.new_name(base), "concat", [x.name for x in xs]), xs, where)
        if perm:
            q = self.transpose(q, perm, base + "_out", where)
        q = self.clamp(q, self.check_activation(op), base, where,
                       self.path_for(op.name, [self.qparams(x.enc) for x in xs], self.qparams(enc)))
        self.define(op, q, rank == 4)

    def op_pad(self, op: TOp):
        """PAD of H and W with the zero point (real 0). Folded into the padding of the one convolution that reads
        it (the pad code its constant), as an accelerator's address generator would; otherwise a `pad` layer
        (before a max pool, the padded cells take part in the max, as in TFLite)."""
        where = self.where(op)
        x = self.value(op.inputs[0], op)
        pads_t = self.const(op.inputs[1], op, "paddings")
        out = self.g.tensors[op.outputs[0]]
        if self.enc(out, where) != x.enc:
            self.fail("PAD must keep its input's scale and zero point", where)
        p = np.asarray(pads_t.data, dtype=np.int64).reshape(-1, 2)
        if not x.nhwc or p.shape[0] != 4 or p[0].any() or p[3].any() or (p < 0).any():
            self.fail(f"hwsim pads H and W of a 4-D tensor; got paddings {p.tolist()}", where)
        pads = [int(p[1, 0]), int(p[2, 0]), int(p[1, 1]), int(p[2, 1])]     # top, left, bottom, right
        users = self.consumers.get(op.outputs[0], [])
        if (len(users) == 1 and users[0].name in ("CONV_2D", "DEPTHWISE_CONV_2D") and users[0].inputs[0] == op.outputs[0]
                and op.outputs[0] not in self.g.outputs and users[0].options.get("padding") == VALID):
            self.folded_pads[op.outputs[0]] = (op.inputs[0], pads, x.enc.zero_point)
            return
        lay = Layer(self.new_name(out.name or "pad"), "pad", [x.name], {"padding": pads})
        self.define(op, self.add_layer(lay, [x], where), True)

    # ------------------------------------------------------------------------------------------- elementwise
    # ------------------------------------------------------------------------------------------- elementwise
    def path_for(self, name: str, in_qs, out_q, **kw) -> str:
        """The kernel path an op runs on: XNNPACK only where the delegate takes it, else the optimized builtins."""
        if self.kernels != "xnnpack":
            return self.kernels
        from .tflite_xnnpack import delegated
        return "xnnpack" if delegated(name, in_qs, out_q, **kw) else "optimized"

    @staticmethod
    def qparams(enc: UniformAct):
        from .tflite_arith import QParams
        return QParams(scale=enc.scale, zero_point=enc.zero_point, dtype="int8" if enc.signed else "uint8")

    def table_layer(self, op: TOp, x: HT, enc: UniformAct, table, base, what) -> HT:
        table = np.asarray(table, dtype=np.int64)
        lay = Layer(self.new_name(base), "lut", [x.name], {}, enc, table=table.reshape(-1, table.shape[-1]))
        self.paths[lay.name] = what
        q = self.add_layer(lay, [x], self.where(op))
        q.nhwc = x.nhwc
        return q

    def unary(self, op: TOp, name: str):
        from .tflite_arith import unary_table
        where = self.where(op)
        x = self.value(op.inputs[0], op)
        out = self.g.tensors[op.outputs[0]]
        enc = self.enc(out, where)
        in_q, out_q = self.qparams(x.enc), self.qparams(enc)
        path = self.path_for(name, [in_q], out_q)
        table = unary_table(name, path, in_q, out_q)
        tail = self.batch * math.prod(x.shape) % 16
        if name == "QUANTIZE" and path == "optimized" and tail:
            self.notes.append(f"{self.where(op)}: the optimized QUANTIZE rounds the last {tail} "
                              "values of each invocation as the reference kernel does (negative ties differ by "
                              "1); hwsim's table rounds every value as the SIMD blocks do")
        q = self.table_layer(op, x, enc, table, out.name or name.lower(), f"{path}: {name} table")
        self.define(op, q, x.nhwc)

    def op_quantize(self, op: TOp):
        self.unary(op, "QUANTIZE")

    def op_logistic(self, op: TOp):
        self.unary(op, "LOGISTIC")

    def op_hard_swish(self, op: TOp):
        self.unary(op, "HARD_SWISH")

    def op_dequantize(self, op: TOp):
        if op.outputs[0] != self.out_index:
            self.fail("a DEQUANTIZE inside the graph gives float32 values hwsim does not compute; only the "
                      "graph output may be dequantized", self.where(op))
        self.value(op.inputs[0], op)   # the output itself is handled by finish()

    def op_add(self, op: TOp):
        self.binary(op, "ADD")

    def op_sub(self, op: TOp):
        self.binary(op, "SUB")

    def op_mul(self, op: TOp):
        self.binary(op, "MUL")

    def binary(self, op: TOp, name: str):
        """ADD / SUB / MUL of two tensors, or of a tensor and a constant (then a per-channel table: the
        constant's code for each channel is fixed, so each output code is a function of the input code)."""
        where = self.where(op)
        if len(op.inputs) != 2:
            self.fail(f"needs two inputs, got {len(op.inputs)}", where)
        out = self.g.tensors[op.outputs[0]]
        enc = self.enc(out, where)
        act_id = self.check_activation(op)
        act = ACTIVATIONS[act_id] or "NONE"
        consts = [self.g.tensors[i].data is not None for i in op.inputs]
        base = out.name or name.lower()
        if all(consts):
            self.fail("both inputs are constants (fold them before converting)", where)
        encs = [self.enc(self.g.tensors[i], where) if c else self.value(i, op).enc for i, c in zip(op.inputs, consts)]
        in_qs, out_q = [self.qparams(e) for e in encs], self.qparams(enc)
        path = self.path_for(name, in_qs, out_q, activation=act)
        if any(consts):
            self.binary_const(op, name, path, consts, in_qs, out_q, enc, act, base)
            return
        xs = [self.value(i, op) for i in op.inputs]
        if path == "xnnpack":
            attrs = ({"rescale": "xnnpack", "subtract": name == "SUB"} if name != "MUL" else {"requant": "xnnpack"})
        else:
            from .tflite_arith import layer_spec
            attrs = layer_spec(name, path, in_qs, out_q, {"broadcast": xs[0].shape != xs[1].shape})["attrs"]
            attrs.pop("clip", None)
        lo, hi = self.act_bounds(act_id, enc, path)
        if (lo, hi) != enc.code_range():
            attrs["clip"] = [lo - enc.zero_point, hi - enc.zero_point]
        if path == "optimized" and name == "ADD" and xs[0].shape != xs[1].shape:
            self.notes.append(f"{self.where(op)}: the optimized kernels' broadcasting ADD is modelled with the "
                              "reference rounding (inputs rounded twice), checked exact for a [1, 1, 1, C] operand "
                              "only")
        lay = Layer(self.new_name(base), "add" if name != "MUL" else "mul", [x.name for x in xs], attrs, enc)
        self.paths[lay.name] = f"{path}: {name}"
        q = self.add_layer(lay, xs, where)
        self.define(op, q, xs[0].nhwc or xs[1].nhwc)

    def binary_const(self, op, name, path, consts, in_qs, out_q, enc, act, base):
        where = self.where(op)
        k = consts.index(False)
        x = self.value(op.inputs[k], op)
        c = self.g.tensors[op.inputs[1 - k]]
        cdata = np.asarray(c.data, dtype=np.int64)
        channels = x.shape[0] if x.nhwc else x.shape[-1]
        if cdata.size == 1:
            per = cdata.reshape(1)
        elif cdata.size == channels and (cdata.ndim == 1 or cdata.shape[-1] == channels):
            per = cdata.reshape(-1)
        else:
            self.fail(f"constant operand {c.name!r} of shape {list(c.shape)}: hwsim takes a scalar or per-channel "
                      "constant ([C] or [1, 1, 1, C])", where)
        lo_code, hi_code = x.enc.code_range()
        codes = np.arange(lo_code, hi_code + 1, dtype=np.int64)
        grid_x, grid_c = np.broadcast_arrays(codes[None, :], per[:, None])
        operands = (grid_x, grid_c) if k == 0 else (grid_c, grid_x)
        if path == "xnnpack":
            from .tflite_xnnpack import add_xnnpack, mul_xnnpack
            if name == "MUL":
                table = mul_xnnpack(*operands, *in_qs, out_q, activation=act)
            else:
                table = add_xnnpack(*operands, *in_qs, out_q, sub=name == "SUB", activation=act)
        else:
            from .tflite_arith import add_codes, mul_codes
            if name == "MUL":
                table = mul_codes(*operands, in_qs, out_q, activation=act)
            else:   # a broadcast constant runs on the broadcasting kernels: inputs rounded twice on both paths
                table = add_codes(*operands, in_qs, out_q, activation=act, subtract=name == "SUB")
        # one table row per channel ([C, H, W]) or per element ([K]: its axis is the lut's channel axis)
        q = self.table_layer(op, x, enc, table, base, f"{path}: {name} with a constant, as a table")
        self.define(op, q, x.nhwc)

    # ------------------------------------------------------------------------------------------- reductions
    def op_mean(self, op: TOp):
        where = self.where(op)
        x = self.value(op.inputs[0], op)
        axes_t = self.const(op.inputs[1], op, "axes")
        axes = sorted({int(a) + 4 if int(a) < 0 else int(a) for a in np.asarray(axes_t.data).reshape(-1)})
        if not x.nhwc or axes != [1, 2]:
            self.fail(f"MEAN over axes {axes} of a rank-{4 if x.nhwc else 2} tensor: hwsim averages 4-D tensors "
                      "over H and W (axes [1, 2])", where)
        out = self.g.tensors[op.outputs[0]]
        enc = self.enc(out, where)
        keep = bool(op.options.get("keep_dims", False))
        in_q, out_q = self.qparams(x.enc), self.qparams(enc)
        path = self.path_for("MEAN", [in_q], out_q)
        if path == "xnnpack":
            attrs = {"global": True, "rounding": "xnnpack_mean"}
        else:
            from .tflite_arith import layer_spec
            attrs = layer_spec("MEAN", path, [in_q], out_q, {"keep_dims": keep, "rank": 4})["attrs"]
        _, h, w = x.shape
        attrs.update(kernel=[h, w], stride=[h, w])
        base = out.name or "mean"
        lay = Layer(self.new_name(base), "avgpool", [x.name], attrs, enc)
        self.paths[lay.name] = f"{path}: MEAN ({attrs['rounding']})"
        q = self.add_layer(lay, [x], where)
        if keep:
            self.define(op, q, True)
            return
        q = self.add_layer(Layer(self.new_name(base + "_flat"), "flatten", [q.name]), [q], where)
        self.define(op, q, False)

    def op_softmax(self, op: TOp):
        from .tflite_arith import layer_spec
        where = self.where(op)
        x = self.value(op.inputs[0], op)
        out = self.g.tensors[op.outputs[0]]
        enc = self.enc(out, where)
        if len(self.g.tensors[op.inputs[0]].shape) not in (2, 4):
            self.fail("SOFTMAX needs a [N, K] or [N, H, W, C] input (over its last axis)", where)
        in_q, out_q = self.qparams(x.enc), self.qparams(enc)
        path = self.path_for("SOFTMAX", [in_q], out_q)
        spec = layer_spec("SOFTMAX", path, [in_q], out_q, {"beta": op.options.get("beta", 1.0)})
        base = out.name or "softmax"
        lay = Layer(self.new_name(base), "softmax", [x.name], spec["attrs"], enc)   # [C, H, W]: over channels
        self.paths[lay.name] = f"{path}: SOFTMAX ({spec['attrs'].get('arithmetic')})"
        q = self.add_layer(lay, [x], where)
        self.define(op, q, x.nhwc)
