"""QONNX (Brevitas / FINN) graphs -> hwsim Model, and a per-tensor comparison with qonnx's own executor.

QONNX marks every quantized tensor with a custom op (domain `qonnx.custom_op.general`; REFERENCES.md §4):

    Quant(x, s, zp, b)   code = rnd(clip(x/s + zp, min_int, max_int)), real = (code - zp)·s
                         (`signed`, `narrow`, `rounding_mode` ROUND = half even / FLOOR / CEIL / ...; clip before
                         round equals round before clip for integer bounds); 1-bit signed Quant is bipolar
    BipolarQuant(x, s)   x >= 0 -> +s, else -s
    MultiThreshold(x, T) out = out_scale·#{i : x >= T[c, i]} + out_bias   (T per channel or shared)
    Trunc(x, s, zp, bi, bo)  floor of a sum shifted right by bi - bo (TruncAvgPool)

Mapping (one hwsim layer per MAC; everything between a MAC and the next quantizer is folded into that layer):

    QONNX                                            hwsim
    Quant on the graph input                         input UniformAct(bits, signed, s, zp) + rounding;
                                                     narrow range: a clip layer; float32 division as qonnx
    BipolarQuant on the graph input                  input BinaryAct(s)
    FINN-ONNX: datatype-annotated integer input      input UniformAct / BinaryAct with scale 1
    Quant on a weight initializer                    UniformW(bits, signed, s per output channel, zp)
    BipolarQuant / 1-bit signed Quant on weights     BinaryW(s per channel); on binary inputs the XNOR-popcount PE
    FINN-ONNX: integer-valued float weights          UniformW (or BinaryW for +-1) with scale 1
    Conv / MatMul / Gemm [+ bias (float or Quant),   conv2d / dense. Quant: the requantizer ("float64", half even)
      Add, Sub, Mul, Div, BatchNormalization,          when the fold is exact (integer bias, ROUND, even zp), else
      Relu, Clip, MaxPool] -> Quant                    a ThresholdAct output (integer comparators, FINN-style)
      ... -> MultiThreshold                          ThresholdAct output (one threshold, {-s/2, +s/2}: BinaryAct)
      ... -> BipolarQuant                            BinaryAct output, the threshold folded into the integer bias
      ... -> graph output (float)                    16-bit signed output at the finest channel scale (noted)
    MaxPool / Relu / Flatten / Reshape / Concat      maxpool / relu / flatten / reshape / concat
    AveragePool -> Quant (same encoding)             avgpool (half_even / floor)
    AveragePool -> Mul(window) -> Trunc v1 (FLOOR)   avgpool, rounding floor (Brevitas TruncAvgPool2d)
    Add(q, q) [-> Relu] -> Quant                     add (residual, float64 requant)

Exactness. Every function between a MAC and its quantizer here is monotone non-decreasing per channel (affine
with a positive factor, ReLU, Clip, MaxPool), so "quantizer code >= k" is "accumulator >= T[c, k]" for one integer
T per channel and code step. The importer solves for T in exact rational arithmetic (Fractions of the float32
constants), for any qonnx rounding mode: that is integer hardware semantics. It equals qonnx's float32 execution
whenever float32 is exact (power-of-two scales, small accumulators); otherwise `compare_with_qonnx` reports how
often and how far they part. `quant_as="thresholds"` forces comparators for every Quant up to 8 bits;
`quant_as="requant"` forces the requantizer (rounding a fractional bias, noted in metadata["import_notes"]).

Known difference: qonnx rounds x/s + zp; hwsim's input quantizer, residual add and avgpool round x/s and add zp
afterwards (as ONNX QuantizeLinear). With ROUND and an odd zero point exact ties then go the other way; the
importer notes it (MAC layers avoid it by using thresholds).

MaxPool commutes with every monotone per-channel function, so a MaxPool between a MAC and its quantizer is moved
after the quantizer (pooling codes); the pre-pool tensor then exists only in hwsim.
The tensor mapping (hwsim tensor -> ONNX tensor, scale, zero point) is kept in metadata["qonnx_tensors"].
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from fractions import Fraction

import numpy as np

from ..encodings import BinaryAct, BinaryW, ThresholdAct, UniformAct, UniformW
from ..errors import HwsimError
from ..graph import Layer, Model

MAX_THRESHOLD_BITS = 8            # auto mode: thresholds only up to 255 comparators per channel
INPUT_ROUNDING = {"ROUND": "half_even", "HALF_EVEN": "half_even", "FLOOR": "floor"}
SYMMETRIC_ROUNDING = {"HALF_UP": "half_away", "DOWN": "trunc"}   # equal to hwsim's only when zp == 0


# --------------------------------------------------------------------------------------------- values

@dataclass
class _QConst:
    """A quantized initializer (weights or bias): integer codes plus the scale / zero point broadcast to it."""
    codes: np.ndarray        # int64
    scale: np.ndarray        # float32, broadcast to codes.shape
    zp: np.ndarray           # float32, broadcast to codes.shape
    bits: int
    signed: bool
    binary: bool             # values are +-1 (BipolarQuant or 1-bit signed Quant)
    real: np.ndarray         # float32 dequantized values, as qonnx computes them


@dataclass
class _Q:
    """A quantized activation tensor that exists in the hwsim graph."""
    name: str                # hwsim tensor name
    enc: object
    rank: int                # per-sample rank (3: [C, H, W], 1: [K])


@dataclass
class _Acc:
    """A MAC layer whose output quantizer has not been reached yet.

    The real value of output channel c is  z = steps(raw), raw = sum x_value·w_value (an integer), where
    `steps` starts with the affine map raw -> A[c]·raw + B[c] (A = s_in·s_w[c], B = the real bias) and goes on
    with the folded nodes: ("affine", a, b) per channel, ("relu",), ("clip", lo, hi)."""
    layer: Layer             # op, inputs, attrs, weight codes, weight encoding (scales fixed at the end)
    in_q: _Q
    w_unit: list             # Fraction per channel: real value of one weight-value unit (s_w[c])
    steps: list
    pools: list = field(default_factory=list)   # MaxPool attrs moved past the quantizer
    onnx_node: str = ""


@dataclass
class _AvgPending:
    q: _Q
    attrs: dict
    window: int
    summed: bool = False     # a Mul by the window size followed (the TruncAvgPool pattern)


@dataclass
class _AddPending:
    a: _Q
    b: _Q
    relu: bool = False


# --------------------------------------------------------------------------------------------- importer

def _load(path):
    try:
        from .onnx_import import load_onnx
        return load_onnx(path)
    except ImportError:
        pass
    import onnx
    try:
        return onnx.load(str(path))
    except Exception as exc:   # onnx raises DecodeError, OSError, ...
        raise HwsimError(f"cannot read ONNX model: {exc}", source=str(path)) from None


def import_qonnx(path, proto=None, *, quant_as: str = "auto", requant: str = "float64",
                 name: str | None = None) -> Model:
    """Import a QONNX graph as a hwsim Model (see the module docstring for the mapping).

    quant_as: "auto" (requantizer where the fold is exact, thresholds otherwise), "requant" (always the
              requantizer; a bias that is not an integer number of accumulator units is rounded, noted in
              metadata), "thresholds" (comparator banks for every Quant activation up to 8 bits).
    requant:  the requantization mode of requantizer layers (hwsim modes; "float64" rounds half to even).
    """
    if quant_as not in ("auto", "requant", "thresholds"):
        raise HwsimError(f"quant_as must be 'auto', 'requant' or 'thresholds', got {quant_as!r}")
    proto = _load(path) if proto is None else proto
    source = str(path)
    try:
        model = _Importer(proto, quant_as, requant, name or os.path.splitext(os.path.basename(source))[0]).run()
    except HwsimError as exc:
        raise HwsimError(exc.message, source=source, field=exc.field) from None
    model.source = source
    model.check()
    return model


class _Importer:
    def __init__(self, proto, quant_as, requant, name):
        self.proto = proto
        self.graph = proto.graph
        self.quant_as = quant_as
        self.requant = requant
        self.name = name
        self.env = {}             # ONNX tensor name -> np.ndarray | _QConst | _Q | _Acc | _AvgPending | _AddPending
        self.layers = []
        self.names = {"input"}
        self.mapping = {}         # hwsim tensor -> {"onnx": name, "scale": s, "zero_point": zp} or {"binary": s}
        self.notes = []
        self.input = None         # (shape, enc, rounding)
        self.consumers = {}
        for node in self.graph.node:
            for t in node.input:
                self.consumers[t] = self.consumers.get(t, 0) + 1
        for t in self.graph.output:
            self.consumers[t.name] = self.consumers.get(t.name, 0) + 1

    # ----------------------------------------------------------------------------------- driver

    def run(self) -> Model:
        from onnx import numpy_helper
        for init in self.graph.initializer:
            self.env[init.name] = numpy_helper.to_array(init)
        inputs = [i for i in self.graph.input if i.name not in self.env]
        if len(inputs) != 1:
            raise HwsimError(f"the graph must have exactly one (non-initializer) input, got {len(inputs)}",
                             field="graph.input")
        self.graph_input = inputs[0]
        self.env[self.graph_input.name] = "graph-input"
        self.annotations = _datatype_annotations(self.graph)
        self._last_weight_name = None
        dt = self.annotations.get(self.graph_input.name)
        if dt is not None:     # FINN-ONNX: an integer input with a datatype annotation instead of a Quant
            self._define_input(self.graph_input.name, "input", _annotated_encoding(dt), "ROUND", None)
        for i, node in enumerate(self.graph.node):
            handler = getattr(self, f"_op_{node.op_type}", None)
            where = f"node {node.name or i} ({node.op_type})"
            if handler is None:
                raise HwsimError(f"op {node.op_type} is not supported by the QONNX importer", field=where)
            for t in node.input:
                if isinstance(self.env.get(t), _Acc) and self.consumers.get(t, 0) > 1:
                    raise HwsimError(f"the pre-activation {t!r} feeds more than one node; hwsim folds it into "
                                     "one layer's quantizer", field=where)
            try:
                handler(node)
            except HwsimError as exc:
                raise HwsimError(exc.message, field=exc.field or where) from None
            except (KeyError, IndexError, ValueError, TypeError, OverflowError, ZeroDivisionError) as exc:
                # a malformed node (missing attribute or input, bad shape): one line, never a traceback
                raise HwsimError(f"malformed {node.op_type} node ({type(exc).__name__}: {exc})", field=where) from None
        if len(self.graph.output) != 1:
            raise HwsimError(f"the graph must have exactly one output, got {len(self.graph.output)}",
                             field="graph.output")
        out = self.env.get(self.graph.output[0].name)
        if isinstance(out, _Acc):
            out = self._finish_float(out, self.graph.output[0].name)
        if not isinstance(out, _Q):
            raise HwsimError("the graph output must be a quantized tensor or the float output of a MAC layer",
                             field="graph.output")
        if self.input is None:
            raise HwsimError("the graph input is never quantized", field="graph.input")
        if not self.layers or self.layers[-1].name != out.name:
            raise HwsimError("the graph output is not produced by the last layer", field="graph.output")
        shape, enc, rounding = self.input
        meta = {"source_format": "qonnx", "qonnx_tensors": self.mapping}
        if self.notes:
            meta["import_notes"] = self.notes
        # qonnx's input Quant divides in float32 (float32 tensor / float32 scale), as ONNX Runtime's QuantizeLinear.
        return Model(self.name, tuple(shape), enc, self.layers, input_rounding=rounding, input_division="float32",
                     metadata=meta)

    # ----------------------------------------------------------------------------------- helpers

    def _get(self, name):
        if name not in self.env:
            raise HwsimError(f"tensor {name!r} is not produced by an earlier node")
        return self.env[name]

    def _const(self, name, what):
        v = self._get(name)
        if not isinstance(v, np.ndarray):
            raise HwsimError(f"{what} ({name!r}) must be a constant (initializer or Constant node)")
        return v

    def _layer_name(self, node, default):
        base = "".join(ch if ch.isalnum() or ch in "_-." else "_" for ch in (node.name or default)) or default
        name, k = base, 1
        while name in self.names:
            k += 1
            name = f"{base}_{k}"
        self.names.add(name)
        return name

    def _map(self, q: _Q, onnx_name: str):
        if isinstance(q.enc, BinaryAct):
            self.mapping[q.name] = {"onnx": onnx_name, "binary": True}
        else:
            self.mapping[q.name] = {"onnx": onnx_name, "scale": q.enc.scale, "zero_point": q.enc.zero_point}

    def _add_layer(self, lay: Layer) -> Layer:
        self.layers.append(lay)
        return lay

    def _shapes(self):
        """Per-sample shapes of every hwsim tensor so far (checks the partial graph)."""
        shape, enc, rounding = self.input
        m = Model(self.name, tuple(shape), enc, list(self.layers), input_rounding=rounding)
        m.check()
        return m.shapes()

    # ----------------------------------------------------------------------------------- quantizers

    def _quant_params(self, node):
        s = self._const(node.input[1], "scale").astype(np.float32)
        zp = self._const(node.input[2], "zero point").astype(np.float32)
        bits = self._const(node.input[3], "bit width")
        if bits.size != 1 or float(bits.ravel()[0]) != int(bits.ravel()[0]) or not 1 <= int(bits.ravel()[0]) <= 32:
            raise HwsimError(f"bit width must be one integer in 1..32, got {bits.ravel()[:4].tolist()}")
        attrs = _attrs(node)
        for key in ("signed", "narrow"):
            if key not in attrs:
                raise HwsimError(f"attribute {key!r} is required (QONNX Quant)")
        mode = str(attrs.get("rounding_mode", "ROUND")).upper()
        if np.any(s <= 0) or not np.all(np.isfinite(s)):
            raise HwsimError("scales must be positive and finite")
        return s, zp, int(bits.ravel()[0]), bool(attrs["signed"]), bool(attrs["narrow"]), mode

    def _scalar_act_params(self, s, zp, what):
        if s.size != 1 or zp.size != 1:
            raise HwsimError(f"{what}: per-channel activation scales / zero points are not supported "
                             "(hwsim activations have one scale per tensor)")
        s, zp = float(s.ravel()[0]), float(zp.ravel()[0])
        if zp != int(zp):
            raise HwsimError(f"{what}: zero point {zp} is not an integer")
        return s, int(zp)

    def _op_Quant(self, node):
        x = self._get(node.input[0])
        s, zp, bits, signed, narrow, mode = self._quant_params(node)
        bipolar = bits == 1 and signed
        if isinstance(x, np.ndarray):
            self.env[node.output[0]] = _quantize_const(x, s, zp, bits, signed, narrow, mode)
            return
        s1, z1 = self._scalar_act_params(s, zp, "Quant")
        if bits > 16:
            raise HwsimError(f"{bits}-bit activations are not supported (hwsim activations have 1..16 bits)")
        lo, hi = _qrange(bits, signed, narrow)
        if bipolar:
            if z1 != 0:
                raise HwsimError("a 1-bit signed (bipolar) Quant needs zero point 0")
            self._bipolar_activation(node, x, s1)
            return
        if x == "graph-input":
            self._define_input(node.output[0], node.name, UniformAct(bits, signed, s1, z1), mode, (lo, hi))
            return
        enc = UniformAct(bits, signed, s1, z1)
        if isinstance(x, _Acc):
            self.env[node.output[0]] = self._finish_quant(x, node, enc, (lo, hi), mode)
        elif isinstance(x, _AddPending):
            self.env[node.output[0]] = self._finish_add(x, node, enc, (lo, hi), mode)
        elif isinstance(x, _AvgPending):
            self.env[node.output[0]] = self._finish_avgpool(x, node, enc, (lo, hi), mode)
        elif isinstance(x, _Q):
            self.env[node.output[0]] = self._requantize_q(x, node, enc, (lo, hi), mode)
        else:
            raise HwsimError(f"cannot quantize {_what(x)}")

    def _op_BipolarQuant(self, node):
        x = self._get(node.input[0])
        s = self._const(node.input[1], "scale").astype(np.float32)
        if np.any(s <= 0):
            raise HwsimError("scales must be positive")
        if isinstance(x, np.ndarray):
            codes = (x < 0).astype(np.int64)       # x >= 0 -> +1 (code 0), x < 0 -> -1 (code 1)
            sb = np.broadcast_to(s, x.shape)
            real = np.where(x >= 0, np.float32(1), np.float32(-1)) * s
            self.env[node.output[0]] = _QConst(codes, sb, np.zeros(x.shape, np.float32), 1, True, True,
                                               np.asarray(real, np.float32))
            return
        s1, _ = self._scalar_act_params(s, np.zeros(1), "BipolarQuant")
        self._bipolar_activation(node, x, s1)

    def _bipolar_activation(self, node, x, s):
        enc = BinaryAct(s)
        if x == "graph-input":
            self._define_input(node.output[0], node.name, enc, "ROUND", None)
        elif isinstance(x, _Acc):
            self.env[node.output[0]] = self._finish_binary(x, node, enc)
        elif isinstance(x, _Q) and x.enc == enc:
            self.env[node.output[0]] = x
        else:
            raise HwsimError(f"a bipolar quantizer on {_what(x)} is not supported (only on the graph input or "
                             "after a conv / dense layer)")

    def _define_input(self, out, node_name, enc, mode, qrange):
        if self.input is not None:
            raise HwsimError("the graph input is quantized twice")
        vi = self.graph_input.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else None for d in vi.shape.dim]
        if len(dims) not in (2, 4) or any(d is None or d < 1 for d in dims[1:]):
            raise HwsimError(f"the graph input must be [N, C, H, W] or [N, K] with known sizes, got {dims}",
                             field="graph.input")
        rounding = "half_even"
        if isinstance(enc, UniformAct):
            rounding = INPUT_ROUNDING.get(mode)
            if rounding is None and enc.zero_point == 0:
                rounding = SYMMETRIC_ROUNDING.get(mode)
            if rounding is None:
                raise HwsimError(f"rounding_mode {mode} on the input quantizer is not supported "
                                 f"(hwsim input rounding: half_even, floor; half_away / trunc with zero point 0)")
            self._note_odd_zp("input", enc, mode)
        self.input = (dims[1:], enc, rounding)
        q = _Q("input", enc, len(dims) - 1)
        self._map(q, out)
        if isinstance(enc, UniformAct) and qrange is not None and qrange != enc.code_range():
            # narrow range: the input quantizer clamps to the full code range; a clip layer narrows it.
            lay = self._add_layer(Layer(self._layer_name(_Named(node_name), "input_narrow"), "clip", ["input"],
                                        {"min": qrange[0] - enc.zero_point, "max": qrange[1] - enc.zero_point}))
            q = _Q(lay.name, enc, q.rank)
            del self.mapping["input"]        # the ONNX tensor is the narrowed one
            self._map(q, out)
        self.env[out] = q

    def _op_MultiThreshold(self, node):
        x = self._get(node.input[0])
        t = self._const(node.input[1], "thresholds").astype(np.float32)
        if not np.all(np.isfinite(t)):
            raise HwsimError("thresholds must be finite")
        attrs = _attrs(node)
        layout = str(attrs.get("data_layout", "") or "")
        if layout and layout not in ("NCHW", "NC"):
            raise HwsimError(f"data_layout {layout} is not supported (hwsim is channels-first)")
        out_scale = float(np.float32(attrs.get("out_scale", 1.0)))
        out_bias = float(np.float32(attrs.get("out_bias", 0.0)))
        if not (math.isfinite(out_scale) and math.isfinite(out_bias)):
            raise HwsimError("out_scale / out_bias must be finite")
        if not isinstance(x, _Acc):
            raise HwsimError(f"MultiThreshold on {_what(x)} is not supported (only after a conv / dense layer, "
                             "where the thresholds become integer comparators on the accumulator)")
        if t.ndim != 2 or t.shape[1] < 1:
            raise HwsimError(f"thresholds must be [C or 1, n], got shape {list(t.shape)}")
        if out_scale <= 0:
            raise HwsimError(f"out_scale must be positive, got {out_scale}")
        n = t.shape[1]
        rows = np.sort(t, axis=1)                   # the count does not depend on the order
        conds = [[(Fraction(float(v)), False) for v in row] for row in rows]
        if n == 1 and out_bias == -out_scale / 2:    # {-s/2, +s/2}: a sign bit
            enc = BinaryAct(out_scale / 2)
            self.env[node.output[0]] = self._finish_binary(x, node, enc, conds=conds)
            return
        zp = -out_bias / out_scale
        bits = max(1, n.bit_length())
        if zp != int(zp) or not 0 <= zp < (1 << bits):
            raise HwsimError(f"out_bias {out_bias} is not an integer number of out_scale steps inside the "
                             f"{bits}-bit code range, which hwsim's uniform storage needs")
        enc = UniformAct(bits, False, out_scale, int(zp))
        self.env[node.output[0]] = self._finish_thresholds(x, node, enc, 0, conds)

    def _op_Trunc(self, node):
        x = self._get(node.input[0])
        if len(node.input) != 5:
            raise HwsimError("only Trunc v1 (5 inputs: x, scale, zero point, input bits, output bits) is supported")
        if not isinstance(x, _AvgPending) or not x.summed:
            raise HwsimError("Trunc is supported only as TruncAvgPool: AveragePool -> Mul(window) -> Trunc")
        s = self._const(node.input[1], "scale").astype(np.float32)
        zp = self._const(node.input[2], "zero point")
        bi = int(self._const(node.input[3], "input bits").ravel()[0])
        bo = int(self._const(node.input[4], "output bits").ravel()[0])
        mode = str(_attrs(node).get("rounding_mode", "FLOOR")).upper()
        enc = x.q.enc
        if (not isinstance(enc, UniformAct) or s.size != 1 or float(s.ravel()[0]) != enc.scale
                or np.any(zp != 0) or enc.zero_point != 0):
            raise HwsimError("Trunc must keep the pooled tensor's scale, with zero points 0")
        if (1 << max(bi - bo, 0)) != x.window or mode != "FLOOR":
            raise HwsimError(f"Trunc shifts by {bi - bo} bits with {mode}; hwsim's avgpool needs a FLOOR shift "
                             f"equal to the window size {x.window}")
        self.env[node.output[0]] = self._emit_avgpool(x, node, "floor")

    # ----------------------------------------------------------------------------------- MAC layers

    def _weights(self, w, axis, what):
        """A quantized weight input -> (codes [Co, ...], weight encoding without final scales, s_w per channel)."""
        if isinstance(w, np.ndarray):
            w = _integer_const(w, self.annotations.get(self._last_weight_name))
        if not isinstance(w, _QConst):
            raise HwsimError(f"{what} must be a quantized initializer (Quant / BipolarQuant on a constant)")
        codes, s, zp = (np.moveaxis(a, axis, 0) for a in (w.codes, w.scale, w.zp))
        co = codes.shape[0]
        s_c = _per_channel(s, f"{what} scale")
        z_c = _per_channel(zp, f"{what} zero point")
        if any(z != int(z) for z in z_c):
            raise HwsimError(f"{what}: zero points must be integers")
        if w.binary:
            if any(z != 0 for z in z_c):
                raise HwsimError(f"{what}: bipolar weights need zero point 0")
            enc = ("binary", None)
            stored = codes                               # already sign bits (1 = -1)
        else:
            enc = ("uniform", (w.bits, w.signed, tuple(int(z) for z in z_c) if len(set(z_c)) > 1 else (int(z_c[0]),)))
            stored = codes
        units = [Fraction(float(v)) for v in (s_c if len(s_c) == co else np.repeat(s_c, co))]
        return np.ascontiguousarray(stored), enc, units

    def _mac(self, node, op, x, w_codes, w_kind, units, attrs, bias):
        if not isinstance(x, _Q):
            raise HwsimError(f"the input of {node.op_type} must be a quantized tensor, got {_what(x)}")
        if op == "dense" and x.rank != 1:
            raise HwsimError(f"{node.op_type} needs a flat input (add a Flatten), got a rank-{x.rank} tensor")
        if op == "conv2d" and x.rank != 3:
            raise HwsimError(f"Conv needs a [C, H, W] input, got a rank-{x.rank} tensor")
        co = w_codes.shape[0]
        lay = Layer(self._layer_name(node, node.op_type.lower()), op, [x.name], attrs, weight=w_codes)
        lay.weight_enc = w_kind                   # resolved in _emit_mac once the scales are final
        s_in = Fraction(x.enc.scale)
        a = [s_in * u for u in units]
        b = [Fraction(0)] * co if bias is None else [Fraction(float(v)) for v in bias]
        acc = _Acc(lay, x, units, [("affine", a, b)], onnx_node=node.name)
        self.env[node.output[0]] = acc

    def _bias(self, name, co, what="bias"):
        v = self._get(name)
        if isinstance(v, _QConst):
            v = v.real
        if not isinstance(v, np.ndarray):
            raise HwsimError(f"{what} must be a constant")
        v = np.asarray(v, np.float32).ravel()
        if not np.all(np.isfinite(v)):
            raise HwsimError(f"{what} is not finite")
        if v.size == 1:
            v = np.repeat(v, co)
        if v.size != co:
            raise HwsimError(f"{what} has {v.size} entries for {co} output channels")
        return v

    def _op_Conv(self, node):
        x = self._get(node.input[0])
        w = self._get(node.input[1])
        self._last_weight_name = node.input[1]
        attrs = _attrs(node)
        codes, kind, units = self._weights(w, 0, "Conv weights")
        if codes.ndim != 4:
            raise HwsimError(f"only 2-D convolutions are supported, weight shape {list(codes.shape)}")
        if any(d != 1 for d in attrs.get("dilations", [1, 1])):
            raise HwsimError("dilated convolutions are not supported")
        if str(attrs.get("auto_pad", "NOTSET")) not in ("NOTSET", "VALID"):
            raise HwsimError(f"auto_pad {attrs['auto_pad']} is not supported; export explicit pads")
        pads = list(attrs.get("pads", [0, 0, 0, 0]))
        hw_attrs = {"stride": list(attrs.get("strides", [1, 1])), "padding": [pads[0], pads[1], pads[2], pads[3]],
                    "groups": int(attrs.get("group", 1))}
        if isinstance(x, _Q) and isinstance(x.enc, BinaryAct) and any(pads):
            hw_attrs["binary_pad"] = "zero"        # ONNX pads with real 0: the XNOR PE's correction term
        bias = self._bias(node.input[2], codes.shape[0]) if len(node.input) > 2 and node.input[2] else None
        self._mac(node, "conv2d", x, codes, kind, units, hw_attrs, bias)

    def _op_MatMul(self, node):
        x = self._get(node.input[0])
        w = self._get(node.input[1])
        self._last_weight_name = node.input[1]
        if isinstance(w, _QConst) and w.codes.ndim != 2:
            raise HwsimError("MatMul weights must be 2-D [K, Co]")
        codes, kind, units = self._weights(w, 1, "MatMul weights")
        self._mac(node, "dense", x, codes, kind, units, {}, None)

    def _op_Gemm(self, node):
        attrs = _attrs(node)
        if attrs.get("transA", 0):
            raise HwsimError("Gemm with transA is not supported")
        x = self._get(node.input[0])
        w = self._get(node.input[1])
        self._last_weight_name = node.input[1]
        if isinstance(w, _QConst) and w.codes.ndim != 2:
            raise HwsimError("Gemm weights must be 2-D")
        codes, kind, units = self._weights(w, 0 if attrs.get("transB", 0) else 1, "Gemm weights")
        alpha, beta = float(attrs.get("alpha", 1.0)), float(attrs.get("beta", 1.0))
        if not (math.isfinite(alpha) and math.isfinite(beta)) or alpha <= 0:
            raise HwsimError(f"Gemm alpha must be positive, got {alpha}")
        bias = None
        if len(node.input) > 2 and node.input[2]:
            bias = self._bias(node.input[2], codes.shape[0]).astype(np.float64) * beta
        self._mac(node, "dense", x, codes, kind, units, {}, None)
        acc = self.env[node.output[0]]
        if alpha != 1.0:
            acc.steps.append(("affine", [Fraction(alpha)] * codes.shape[0], [Fraction(0)] * codes.shape[0]))
        if bias is not None:
            acc.steps.append(("affine", [Fraction(1)] * codes.shape[0], [Fraction(float(v)) for v in bias]))
        _merge_affine(acc.steps)

    # ----------------------------------------------------------------------------------- folded elementwise ops

    def _acc_and_const(self, node):
        a, b = (self._get(n) for n in node.input[:2])
        if isinstance(a, _Acc) and isinstance(b, np.ndarray):
            return a, b, False
        if isinstance(b, _Acc) and isinstance(a, np.ndarray):
            return b, a, True
        return None, None, None

    def _channel_vector(self, acc: _Acc, c, what):
        co = acc.layer.weight.shape[0]
        rank = 4 if acc.layer.op == "conv2d" else 2
        target = (1, co) + (1,) * (rank - 2)
        c = np.asarray(c, np.float32)
        if not np.all(np.isfinite(c)):
            raise HwsimError(f"{what}: constant is not finite")
        try:
            ok = np.broadcast_shapes(c.shape, target) == target
        except ValueError:
            ok = False
        if not ok:
            raise HwsimError(f"{what}: constant of shape {list(c.shape)} is not per-tensor or per-channel "
                             f"for {co} channels")
        return [Fraction(float(v)) for v in np.broadcast_to(c, target).reshape(co)]

    def _fold(self, node, acc, a, b):
        acc.steps.append(("affine", a, b))
        _merge_affine(acc.steps)
        self.env[node.output[0]] = acc

    def _op_Add(self, node):
        acc, c, _ = self._acc_and_const(node)
        if acc is not None:
            v = self._channel_vector(acc, c, "Add")
            self._fold(node, acc, [Fraction(1)] * len(v), v)
            return
        a, b = (self._get(n) for n in node.input[:2])
        if isinstance(a, _Q) and isinstance(b, _Q):
            self.env[node.output[0]] = _AddPending(a, b)
            return
        raise HwsimError(f"Add of {_what(a)} and {_what(b)} is not supported")

    def _op_Sub(self, node):
        acc, c, swapped = self._acc_and_const(node)
        if acc is None or swapped:
            raise HwsimError("Sub is supported only as (MAC output) - constant")
        v = self._channel_vector(acc, c, "Sub")
        self._fold(node, acc, [Fraction(1)] * len(v), [-t for t in v])

    def _op_Mul(self, node):
        acc, c, _ = self._acc_and_const(node)
        if acc is not None:
            v = self._channel_vector(acc, c, "Mul")
            if any(t <= 0 for t in v):
                raise HwsimError("Mul after a MAC needs positive factors (a negative one flips the comparators)")
            self._fold(node, acc, v, [Fraction(0)] * len(v))
            return
        a, b = (self._get(n) for n in node.input[:2])
        p, c = (a, b) if isinstance(a, _AvgPending) else (b, a)
        if isinstance(p, _AvgPending) and isinstance(c, np.ndarray) and c.size == 1 and float(c.ravel()[0]) == p.window:
            self.env[node.output[0]] = _AvgPending(p.q, p.attrs, p.window, summed=True)
            return
        raise HwsimError(f"Mul of {_what(a)} and {_what(b)} is not supported")

    def _op_Div(self, node):
        acc, c, swapped = self._acc_and_const(node)
        if acc is None or swapped:
            raise HwsimError("Div is supported only as (MAC output) / constant")
        v = self._channel_vector(acc, c, "Div")
        if any(t <= 0 for t in v):
            raise HwsimError("Div after a MAC needs positive divisors")
        self._fold(node, acc, [1 / t for t in v], [Fraction(0)] * len(v))

    def _op_BatchNormalization(self, node):
        acc = self._get(node.input[0])
        if not isinstance(acc, _Acc):
            raise HwsimError(f"BatchNormalization on {_what(acc)} is not supported (only after a conv / dense layer)")
        gamma, beta, mean, var = (self._const(n, "batch-norm parameter").astype(np.float64) for n in node.input[1:5])
        eps = float(np.float32(_attrs(node).get("epsilon", 1e-5)))
        with np.errstate(all="ignore"):
            a = gamma / np.sqrt(var + eps)
            b = beta - mean * a
        if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
            raise HwsimError("batch-norm parameters give a non-finite factor or offset")
        if np.any(a <= 0):
            raise HwsimError("batch norm with a non-positive factor (gamma / sqrt(var + eps)) is not supported")
        co = acc.layer.weight.shape[0]
        if a.shape != (co,) or b.shape != (co,):
            raise HwsimError(f"batch-norm parameters must have {co} entries, got {list(a.shape)}")
        self._fold(node, acc, [Fraction(float(v)) for v in a], [Fraction(float(v)) for v in b])

    def _op_Relu(self, node):
        x = self._get(node.input[0])
        if isinstance(x, _Acc):
            x.steps.append(("relu",))
            self.env[node.output[0]] = x
        elif isinstance(x, _AddPending):
            self.env[node.output[0]] = _AddPending(x.a, x.b, relu=True)
        elif isinstance(x, _Q):
            if isinstance(x.enc, BinaryAct):
                raise HwsimError("ReLU of binary activations is not defined")
            if x.enc.value_range()[0] >= 0:
                self.env[node.output[0]] = x          # already non-negative
                return
            lay = self._add_layer(Layer(self._layer_name(node, "relu"), "relu", [x.name]))
            q = _Q(lay.name, x.enc, x.rank)
            self._map(q, node.output[0])
            self.env[node.output[0]] = q
        else:
            raise HwsimError(f"Relu on {_what(x)} is not supported")

    def _op_Clip(self, node):
        x = self._get(node.input[0])
        if not isinstance(x, _Acc):
            raise HwsimError(f"Clip on {_what(x)} is not supported (only between a MAC and its quantizer)")
        lo = float(self._const(node.input[1], "min")) if len(node.input) > 1 and node.input[1] else -math.inf
        hi = float(self._const(node.input[2], "max")) if len(node.input) > 2 and node.input[2] else math.inf
        x.steps.append(("clip", lo, hi))
        self.env[node.output[0]] = x

    # ----------------------------------------------------------------------------------- pass-through ops

    def _pool_attrs(self, node, avg=False):
        attrs = _attrs(node)
        if any(d != 1 for d in attrs.get("dilations", [1, 1])) or attrs.get("ceil_mode", 0):
            raise HwsimError("pooling with dilations or ceil_mode is not supported")
        if str(attrs.get("auto_pad", "NOTSET")) not in ("NOTSET", "VALID"):
            raise HwsimError("auto_pad pooling is not supported; export explicit pads")
        k = list(attrs["kernel_shape"])
        out = {"kernel": k, "stride": list(attrs.get("strides", [1, 1])), "padding": list(attrs.get("pads", [0] * 4))}
        if avg:
            out["count_include_pad"] = bool(attrs.get("count_include_pad", 0))
        return out

    def _op_MaxPool(self, node):
        x = self._get(node.input[0])
        if len(node.output) > 1 and node.output[1]:
            raise HwsimError("MaxPool indices output is not supported")
        attrs = self._pool_attrs(node)
        if isinstance(x, _Acc):
            x.pools.append((node, attrs))          # commutes with every monotone per-channel activation
            self.env[node.output[0]] = x
        elif isinstance(x, _Q):
            lay = self._add_layer(Layer(self._layer_name(node, "maxpool"), "maxpool", [x.name], attrs))
            q = _Q(lay.name, x.enc, 3)
            self._map(q, node.output[0])
            self.env[node.output[0]] = q
        else:
            raise HwsimError(f"MaxPool on {_what(x)} is not supported")

    def _op_AveragePool(self, node):
        x = self._get(node.input[0])
        if not isinstance(x, _Q) or not isinstance(x.enc, UniformAct):
            raise HwsimError(f"AveragePool on {_what(x)} is not supported (only on uniform quantized tensors)")
        attrs = self._pool_attrs(node, avg=True)
        self.env[node.output[0]] = _AvgPending(x, attrs, attrs["kernel"][0] * attrs["kernel"][1])

    def _op_GlobalAveragePool(self, node):
        x = self._get(node.input[0])
        if not isinstance(x, _Q) or not isinstance(x.enc, UniformAct):
            raise HwsimError(f"GlobalAveragePool on {_what(x)} is not supported")
        c, h, w = self._shapes()[x.name]
        self.env[node.output[0]] = _AvgPending(x, {"global": True}, h * w)

    def _emit_avgpool(self, p: _AvgPending, node, rounding):
        lay = self._add_layer(Layer(self._layer_name(node, "avgpool"), "avgpool", [p.q.name],
                                    {**p.attrs, "rounding": rounding}))
        q = _Q(lay.name, p.q.enc, 3)
        self._map(q, node.output[0])
        return q

    def _finish_avgpool(self, p: _AvgPending, node, enc, qrange, mode):
        if p.summed:
            raise HwsimError("a summed pool (AveragePool -> Mul) must be followed by Trunc")
        if not _same_storage(enc, p.q.enc) or qrange != enc.code_range():
            raise HwsimError("the Quant after AveragePool must keep the pooled tensor's encoding "
                             "(hwsim's avgpool re-encodes with its input's encoding)")
        rounding = {"ROUND": "half_even", "HALF_EVEN": "half_even", "FLOOR": "floor"}.get(mode)
        if rounding is None and enc.zero_point == 0:
            rounding = SYMMETRIC_ROUNDING.get(mode)
        if rounding is None:
            raise HwsimError(f"rounding_mode {mode} after AveragePool is not supported")
        self._note_odd_zp(node.name or "avgpool", enc, mode)
        return self._emit_avgpool(p, node, rounding)

    def _note_odd_zp(self, where, enc, mode):
        # qonnx rounds u = z/s + zp half to even; hwsim rounds z/s half to even and adds zp afterwards. With an
        # odd zero point the two break exact ties in opposite directions (round(2.5 + 1) = 4, round(2.5) + 1 = 3).
        if mode in ("ROUND", "HALF_EVEN") and enc.zero_point % 2:
            self.notes.append(f"{where}: odd zero point {enc.zero_point} with ROUND: exact ties round the other "
                              "way than qonnx (hwsim rounds before adding the zero point)")

    def _op_Flatten(self, node):
        x = self._get(node.input[0])
        if int(_attrs(node).get("axis", 1)) != 1:
            raise HwsimError("Flatten must use axis 1")
        self._flatten(node, x)

    def _flatten(self, node, x):
        if not isinstance(x, _Q):
            raise HwsimError(f"Flatten / Reshape of {_what(x)} is not supported")
        if x.rank == 1:
            self.env[node.output[0]] = x
            return
        lay = self._add_layer(Layer(self._layer_name(node, "flatten"), "flatten", [x.name]))
        q = _Q(lay.name, x.enc, 1)
        self._map(q, node.output[0])
        self.env[node.output[0]] = q

    def _op_Reshape(self, node):
        x = self._get(node.input[0])
        shape = [int(v) for v in self._const(node.input[1], "shape").ravel()]
        if len(shape) == 2:
            self._flatten(node, x)
            return
        if not isinstance(x, _Q) or len(shape) != 4:
            raise HwsimError(f"Reshape to {shape} is not supported (only [N, K] flattening or [N, C, H, W])")
        size = math.prod(self._shapes()[x.name])
        rest = [d for d in shape[1:] if d != -1]
        target = [d if d != -1 else size // math.prod(rest) for d in shape[1:]]
        lay = self._add_layer(Layer(self._layer_name(node, "reshape"), "reshape", [x.name], {"shape": target}))
        q = _Q(lay.name, x.enc, 3)
        self._map(q, node.output[0])
        self.env[node.output[0]] = q

    def _op_Concat(self, node):
        xs = [self._get(n) for n in node.input]
        if int(_attrs(node).get("axis", 1)) != 1 or not all(isinstance(x, _Q) for x in xs):
            raise HwsimError("Concat is supported only along channels (axis 1) of quantized tensors")
        lay = self._add_layer(Layer(self._layer_name(node, "concat"), "concat", [x.name for x in xs]))
        q = _Q(lay.name, xs[0].enc, xs[0].rank)
        self._map(q, node.output[0])
        self.env[node.output[0]] = q

    def _op_Identity(self, node):
        self.env[node.output[0]] = self._get(node.input[0])

    _op_Dropout = _op_Identity

    def _op_Constant(self, node):
        from onnx import numpy_helper
        attrs = {a.name: a for a in node.attribute}
        if "value" not in attrs:
            raise HwsimError("only Constant nodes with a tensor 'value' are supported")
        self.env[node.output[0]] = numpy_helper.to_array(attrs["value"].t)

    def _op_Transpose(self, node):
        x = self._get(node.input[0])
        perm = list(_attrs(node).get("perm", []))
        if isinstance(x, _QConst) and x.codes.ndim == 2 and perm in ([1, 0], []):
            self.env[node.output[0]] = _QConst(x.codes.T, x.scale.T, x.zp.T, x.bits, x.signed, x.binary, x.real.T)
        elif isinstance(x, np.ndarray):
            self.env[node.output[0]] = np.transpose(x, perm or None)
        else:
            raise HwsimError("Transpose is supported only on 2-D weights")

    # ----------------------------------------------------------------------------------- finishing a MAC layer

    def _requantize_q(self, x: _Q, node, enc, qrange, mode):
        """Quant of an already-quantized tensor: accepted when it cannot change any value (an identity)."""
        old = x.enc
        if isinstance(old, UniformAct) and old.scale == enc.scale and old.zero_point == enc.zero_point:
            vlo, vhi = old.value_range()
            if qrange[0] - enc.zero_point <= vlo and vhi <= qrange[1] - enc.zero_point:
                self._map(x, node.output[0])
                return x
        raise HwsimError(f"a Quant that changes the encoding of an existing tensor ({_what(x)}) needs a requantizing "
                         "layer, which hwsim does not have outside conv / dense / add")

    def _conditions_quant(self, enc, qrange, mode):
        """Quant code >= k, k = lo+1 .. hi, as conditions `z >= v` / `z > v` on its real input z."""
        lo, hi = qrange
        s, zp = Fraction(enc.scale), enc.zero_point
        conds = []
        for k in range(lo + 1, hi + 1):
            v, strict = _round_condition(k, mode)
            conds.append(((v - zp) * s, strict))
        return lo, conds

    def _finish_quant(self, acc: _Acc, node, enc, qrange, mode):
        path = self.quant_as
        simple = _simple_fold(acc)
        if path == "auto":
            exact = (simple is not None and mode in ("ROUND", "HALF_EVEN") and enc.zero_point % 2 == 0
                     and all((b / a).denominator == 1 for a, b in zip(*simple[:2])))
            path = "requant" if exact or enc.bits > MAX_THRESHOLD_BITS else "thresholds"
        if path == "thresholds":
            if enc.bits > MAX_THRESHOLD_BITS:
                raise HwsimError(f"{enc.bits}-bit thresholds ({(1 << enc.bits) - 1} comparators per channel) are "
                                 f"not supported; use the requantizer")
            lo, conds = self._conditions_quant(enc, qrange, mode)
            return self._finish_thresholds(acc, node, enc, lo, [conds])
        # requantizer path
        if simple is None:
            raise HwsimError("this activation chain (ReLU/Clip between affine ops) cannot use the requantizer; "
                             "import with quant_as='thresholds' or 'auto'")
        if mode not in ("ROUND", "HALF_EVEN"):
            raise HwsimError(f"rounding_mode {mode} cannot use the requantizer (it rounds half to even); "
                             "import with quant_as='thresholds' or 'auto'")
        self._note_odd_zp(acc.layer.name, enc, mode)
        a, b, relu = simple
        bias = []
        for c, (ac, bc) in enumerate(zip(a, b)):
            r = bc / ac
            if r.denominator != 1:
                self.notes.append(f"{acc.layer.name}: bias {float(r):.6g} accumulator units rounded to {round(r)}")
            bias.append(round(r))
        zp = enc.zero_point
        clip_lo = max(qrange[0] - zp, 0) if relu else qrange[0] - zp
        clip = [clip_lo, qrange[1] - zp]
        lay = acc.layer
        lay.attrs = {**lay.attrs, "requant": self.requant}
        if clip != [enc.value_range()[0], enc.value_range()[1]]:
            lay.attrs["clip"] = clip
        lay.out_enc = enc
        self._emit_mac(acc, [ac / Fraction(acc.in_q.enc.scale) for ac in a], bias)
        return self._after_mac(acc, node, enc)

    def _finish_binary(self, acc: _Acc, node, enc, conds=None):
        """BipolarQuant (z >= 0) or a one-threshold MultiThreshold: the sign of acc + bias, bias = -T."""
        co = acc.layer.weight.shape[0]
        conds = conds or [[(Fraction(0), False)]]
        t = self._thresholds(acc, conds)              # [rows, 1]
        t = np.broadcast_to(t, (co, 1))[:, 0]
        lay = acc.layer
        lay.out_enc = enc
        a = _simple_fold(acc)
        scale = a[0] if a is not None else [acc.w_unit[c] * Fraction(acc.in_q.enc.scale) for c in range(co)]
        self._emit_mac(acc, [sc / Fraction(acc.in_q.enc.scale) for sc in scale], [-int(v) for v in t])
        return self._after_mac(acc, node, enc)

    def _finish_thresholds(self, acc: _Acc, node, enc, lo, conds):
        t = self._thresholds(acc, conds)
        # Codes count up from the lowest code of (bits, signed); a narrow range starts one higher: a threshold
        # that always fires (the lowest reachable accumulator) supplies the offset.
        skip = lo - enc.code_range()[0]
        always = -_acc_bound(acc) - 1
        rows = tuple((always,) * skip + tuple(int(v) for v in row) for row in t)
        if all(r == rows[0] for r in rows):
            rows = rows[:1]
        tenc = ThresholdAct(enc.bits, enc.signed, enc.scale, enc.zero_point, thresholds=rows)
        acc.layer.out_enc = tenc
        a = _simple_fold(acc)
        co = acc.layer.weight.shape[0]
        scale = a[0] if a is not None else [acc.w_unit[c] * Fraction(acc.in_q.enc.scale) for c in range(co)]
        self._emit_mac(acc, [sc / Fraction(acc.in_q.enc.scale) for sc in scale], None)
        return self._after_mac(acc, node, tenc)

    def _thresholds(self, acc: _Acc, conds):
        """Conditions on the quantizer input z (one row, or one per channel) -> integer thresholds on raw."""
        co = acc.layer.weight.shape[0]
        if len(conds) not in (1, co):
            raise HwsimError(f"{len(conds)} threshold rows for {co} channels")
        bound = _acc_bound(acc)
        out = np.empty((co, len(conds[0])), dtype=np.int64)
        for c in range(co):
            row = conds[c if len(conds) > 1 else 0]
            for i, (v, strict) in enumerate(row):
                out[c, i] = _invert(acc.steps, c, v, strict, bound)
        out.sort(axis=1)
        return out

    def _emit_mac(self, acc: _Acc, w_scales, bias):
        """Put the MAC layer in the graph with its final weight scales (A[c] / s_in, BN folded) and bias."""
        lay = acc.layer
        kind, params = lay.weight_enc
        scales = [float(s) for s in w_scales]
        if any(s <= 0 or not math.isfinite(s) for s in scales):
            raise HwsimError(f"{lay.name}: folded weight scales must be positive and finite")
        scales = tuple(scales[:1]) if len(set(scales)) == 1 else tuple(scales)
        if kind == "binary":
            lay.weight_enc = BinaryW(scales)
        else:
            bits, signed, zps = params
            lay.weight_enc = UniformW(bits, signed, scales, zps)
        bound = _acc_bound(acc)
        if bias is not None and any(bias):
            b = np.asarray(bias, dtype=np.int64)
            lay.bias = b
            lay.bias_bits = max(32, int(np.abs(b).max()).bit_length() + 1)
            bound += int(np.abs(b).max())
        need = bound.bit_length() + 1
        lay.attrs = {**lay.attrs, "acc_bits": 32 if need <= 32 else min(64, need)}
        self._add_layer(lay)

    def _after_mac(self, acc: _Acc, node, enc):
        """The commuted MaxPools, then map the quantizer's output tensor."""
        q = _Q(acc.layer.name, enc, 3 if acc.layer.op == "conv2d" else 1)
        for pnode, attrs in acc.pools:
            lay = self._add_layer(Layer(self._layer_name(pnode, "maxpool"), "maxpool", [q.name], attrs))
            q = _Q(lay.name, enc, 3)
        self._map(q, node.output[0])
        return q

    def _finish_add(self, p: _AddPending, node, enc, qrange, mode):
        if mode not in ("ROUND", "HALF_EVEN"):
            raise HwsimError(f"rounding_mode {mode} after a residual Add is not supported")
        self._note_odd_zp(node.name or "add", enc, mode)
        for x in (p.a, p.b):
            if not isinstance(x.enc, UniformAct):
                raise HwsimError("residual Add needs uniform inputs")
        zp = enc.zero_point
        clip = [max(qrange[0] - zp, 0) if p.relu else qrange[0] - zp, qrange[1] - zp]
        attrs = {"requant": self.requant}
        if clip != list(enc.value_range()):
            attrs["clip"] = clip
        lay = self._add_layer(Layer(self._layer_name(node, "add"), "add", [p.a.name, p.b.name], attrs, out_enc=enc))
        q = _Q(lay.name, enc, p.a.rank)
        self._map(q, node.output[0])
        return q

    def _finish_float(self, acc: _Acc, onnx_name):
        """A MAC whose float output is the graph output: 16-bit signed codes at the finest channel scale."""
        simple = _simple_fold(acc)
        if simple is None or simple[2]:
            raise HwsimError("a float graph output must be an affine function of a MAC layer; add an output Quant")
        a, b, _ = simple
        bias = [round(bc / ac) for ac, bc in zip(a, b)]
        if any((bc / ac).denominator != 1 for ac, bc in zip(a, b)):
            self.notes.append(f"{acc.layer.name}: output bias rounded to whole accumulator units")
        unit = min(a)
        bound = _acc_bound(acc) + max(abs(v) for v in bias)
        peak = max(Fraction(bound) * ac / unit for ac in a)
        while peak > (1 << 15) - 1:
            unit *= 2
            peak /= 2
        if len(set(a)) > 1 or unit != a[0]:
            self.notes.append(f"{acc.layer.name}: the float output is stored as 16-bit codes of scale {float(unit):.6g}")
        if acc.pools:
            raise HwsimError("MaxPool on a float graph output is not supported")
        enc = UniformAct(16, True, float(unit), 0)
        acc.layer.out_enc = enc
        acc.layer.attrs = {**acc.layer.attrs, "requant": self.requant}
        self._emit_mac(acc, [ac / Fraction(acc.in_q.enc.scale) for ac in a], bias)
        q = _Q(acc.layer.name, enc, 3 if acc.layer.op == "conv2d" else 1)
        self.mapping[q.name] = {"onnx": onnx_name, "scale": enc.scale, "zero_point": 0, "dequantized": True}
        return q


# --------------------------------------------------------------------------------------------- exact folding

def _merge_affine(steps):
    while len(steps) >= 2 and steps[-1][0] == "affine" and steps[-2][0] == "affine":
        _, a2, b2 = steps.pop()
        _, a1, b1 = steps.pop()
        steps.append(("affine", [x * y for x, y in zip(a1, a2)], [y * b + c for y, b, c in zip(a2, b1, b2)]))


def _simple_fold(acc: _Acc):
    """(A, B, relu) when the chain is one affine map, optionally followed by ReLU; else None."""
    steps = acc.steps
    if len(steps) == 1 and steps[0][0] == "affine":
        return steps[0][1], steps[0][2], False
    if len(steps) == 2 and steps[0][0] == "affine" and steps[1][0] == "relu":
        return steps[0][1], steps[0][2], True
    return None


def _invert(steps, c, v, strict, bound):
    """Smallest integer raw with steps(raw) >= v (or > v when strict), clamped to [-bound-1, bound+1]."""
    for step in reversed(steps):
        if step[0] == "affine":
            v = (v - step[2][c]) / step[1][c]          # positive factor: the inequality keeps its direction
        elif step[0] == "relu":                       # max(x, 0) >= v: always when v < 0 (or v == 0, closed)
            if v < 0 or (v == 0 and not strict):
                return -bound - 1
        else:                                         # clip(x, lo, hi)
            lo, hi = step[1], step[2]
            if v < lo or (v == lo and not strict):
                return -bound - 1
            if v > hi or (v == hi and strict):
                return bound + 1
    t = math.floor(v) + 1 if strict else math.ceil(v)
    return max(-bound - 1, min(bound + 1, t))


def _round_condition(k, mode):
    """rnd(u) >= k  <=>  u >= v (strict False) or u > v (strict True), for qonnx's rounding modes."""
    half = Fraction(2 * k - 1, 2)
    if mode in ("ROUND", "HALF_EVEN"):
        return half, k % 2 != 0                   # a tie k - 1/2 goes to the even neighbour
    if mode == "FLOOR":
        return Fraction(k), False
    if mode == "CEIL":
        return Fraction(k - 1), True
    if mode == "HALF_UP":                         # qonnx: sign(u)·floor(|u| + 1/2), ties away from zero
        return half, k <= 0
    if mode == "HALF_DOWN":                       # ties toward zero
        return half, k >= 1
    if mode == "UP":                              # away from zero: u > 0 -> ceil, u < 0 -> floor
        return (Fraction(k - 1), True) if k >= 1 else (Fraction(k), False)
    if mode == "DOWN":                            # toward zero
        return (Fraction(k), False) if k >= 1 else (Fraction(k - 1), True)
    raise HwsimError(f"unknown rounding_mode {mode!r}")


def _acc_bound(acc: _Acc) -> int:
    """Largest |sum x_value·w_value| the layer can produce (padding contributes value 0)."""
    lay, enc = acc.layer, acc.in_q.enc
    lo, hi = enc.value_range()
    kind, params = lay.weight_enc if isinstance(lay.weight_enc, tuple) else (lay.weight_enc.kind, None)
    w = lay.weight.astype(np.int64)
    if kind == "binary":
        wv = np.ones_like(w)
    elif params is not None:
        zp = np.asarray(params[2], dtype=np.int64).reshape((-1,) + (1,) * (w.ndim - 1))
        wv = w - zp
    else:
        wv = lay.weight_enc.decode(lay.weight)
    xmax = max(abs(lo), abs(hi))
    per = np.abs(wv).reshape(wv.shape[0], -1).sum(axis=1) * xmax
    return int(per.max())


# --------------------------------------------------------------------------------------------- constants

def _attrs(node) -> dict:
    from onnx import helper
    return {a.name: (v.decode() if isinstance(v := helper.get_attribute_value(a), bytes) else v)
            for a in node.attribute}


def _qrange(bits, signed, narrow):
    """qonnx's min_int / max_int."""
    if signed:
        return (-(1 << (bits - 1)) + (1 if narrow else 0)), (1 << (bits - 1)) - 1
    return 0, (1 << bits) - (2 if narrow else 1)


def _rounding_fn(mode):
    fns = {"ROUND": np.round, "HALF_EVEN": np.round, "CEIL": np.ceil, "FLOOR": np.floor, "DOWN": np.fix,
           "UP": lambda x: np.sign(x) * np.ceil(np.abs(x)),
           "HALF_UP": lambda x: np.sign(x) * np.floor(np.abs(x) + 0.5),
           "HALF_DOWN": lambda x: np.sign(x) * np.ceil(np.abs(x) - 0.5)}
    if mode not in fns:
        raise HwsimError(f"unknown rounding_mode {mode!r}")
    return fns[mode]


def _quantize_const(x, s, zp, bits, signed, narrow, mode) -> _QConst:
    """Quant of an initializer, in float32 exactly as qonnx's int_quant computes it."""
    x = np.asarray(x, np.float32)
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(zp))):
        raise HwsimError("a quantized constant or its zero point is not finite")
    try:
        sb = np.broadcast_to(s, x.shape).astype(np.float32)
        zb = np.broadcast_to(zp, x.shape).astype(np.float32)
    except ValueError:
        raise HwsimError(f"scale {list(s.shape)} / zero point {list(zp.shape)} do not broadcast to the "
                         f"tensor {list(x.shape)}") from None
    y = x / sb + zb
    if bits == 1 and signed:
        y = np.where(y >= 0, np.float32(1), np.float32(-1))
        codes = (y < 0).astype(np.int64)                  # binary codes: bit 1 = -1
        return _QConst(codes, sb, zb, 1, True, True, ((y - zb) * sb).astype(np.float32))
    lo, hi = _qrange(bits, signed, narrow)
    y = _rounding_fn(mode)(np.clip(y, np.float32(lo), np.float32(hi)))
    codes = y.astype(np.int64)
    return _QConst(codes, sb, zb, bits, signed, False, ((y - zb) * sb).astype(np.float32))


def _per_channel(a, what):
    """[Co, ...] array constant along every axis but 0 -> its Co values (or one value if all equal)."""
    flat = a.reshape(a.shape[0], -1)
    if not np.all(flat == flat[:, :1]):
        raise HwsimError(f"{what} varies inside an output channel (only per-tensor or per-output-channel)")
    col = flat[:, 0].astype(np.float64)
    return col[:1] if np.all(col == col[0]) else col


@dataclass
class _Named:
    name: str


def _datatype_annotations(graph) -> dict:
    """FINN/QONNX datatype annotations: tensor name -> "INT4", "UINT8", "BIPOLAR", ..."""
    out = {}
    for ann in graph.quantization_annotation:
        for kv in ann.quant_parameter_tensor_names:
            if kv.key == "finn_datatype":
                out[ann.tensor_name] = kv.value
    return out


def _annotated_encoding(dt: str):
    """An integer datatype annotation on the graph input -> its hwsim encoding (scale 1)."""
    if dt == "BIPOLAR":
        return BinaryAct(1.0)
    if dt == "BINARY":
        return UniformAct(1, False, 1.0, 0)
    for prefix, signed in (("UINT", False), ("INT", True)):
        if dt.startswith(prefix) and dt[len(prefix):].isdigit() and 1 <= int(dt[len(prefix):]) <= 16:
            return UniformAct(int(dt[len(prefix):]), signed, 1.0, 0)
    raise HwsimError(f"the graph input's datatype annotation {dt} is not an integer type hwsim supports")


def _integer_const(w, dt=None):
    """FINN-ONNX weights: a float initializer holding integers (datatype-annotated or not), scale 1."""
    w = np.asarray(w)
    if not np.all(np.isfinite(w)) or not np.all(w == np.round(w)) or np.abs(w).max(initial=0) >= 1 << 15:
        raise HwsimError("weights must be a quantized initializer (Quant / BipolarQuant on a constant) or "
                         "integers (FINN-ONNX)")
    one = np.ones(w.shape, np.float32)
    zero = np.zeros(w.shape, np.float32)
    if dt == "BIPOLAR" or (dt is None and w.size and np.all(np.abs(w) == 1)):
        return _QConst((w < 0).astype(np.int64), one, zero, 1, True, True, w.astype(np.float32))
    codes = w.astype(np.int64)
    lo, hi = int(codes.min(initial=0)), int(codes.max(initial=0))
    bits = max(max(hi, -lo - 1).bit_length() + 1, 2)
    return _QConst(codes, one, zero, bits, True, False, w.astype(np.float32))


def _same_storage(a, b) -> bool:
    return all(isinstance(e, UniformAct) for e in (a, b)) and (a.bits, a.signed, a.scale, a.zero_point) == (
        b.bits, b.signed, b.scale, b.zero_point)


def _what(x) -> str:
    if isinstance(x, _Q):
        return f"quantized tensor {x.name!r} ({x.enc.kind})"
    if isinstance(x, _Acc):
        return f"the float output of {x.layer.name!r}"
    if isinstance(x, _QConst):
        return "a quantized constant"
    if isinstance(x, np.ndarray):
        return "a constant"
    if isinstance(x, (_AvgPending, _AddPending)):
        return "an unquantized pool / add result"
    if x == "graph-input":
        return "the unquantized graph input"
    return repr(x)


# --------------------------------------------------------------------------------------------- comparison

@dataclass
class TensorAgreement:
    hwsim: str                 # hwsim tensor name
    onnx: str                  # the ONNX tensor it stands for
    elements: int
    mismatches: int            # chained: the engine run end to end vs qonnx
    max_diff_lsb: int
    local_mismatches: int      # the layer fed qonnx's own input codes (-1: not computable)
    local_max_diff_lsb: int
    histogram: dict = field(default_factory=dict)    # chained |diff| -> count
    off_grid: float = 0.0      # max |qonnx real / scale - nearest code|: how far qonnx's floats sit off the grid
    dequantized: bool = False  # a float graph output stored as 16-bit codes (lossy by design)

    def to_dict(self):
        return dict(self.__dict__)


def _qonnx_run(onnx_path, x):
    """Every tensor of qonnx's executor for a float32 batch x (re-batched; per sample if the graph fixes N)."""
    require_qonnx()
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.core.onnx_exec import execute_onnx
    from qonnx.transformation.infer_shapes import InferShapes

    def run(batch):
        m = ModelWrapper(str(onnx_path))
        inp = m.graph.input[0]
        inp.type.tensor_type.shape.dim[0].dim_value = batch.shape[0]
        del m.graph.value_info[:]
        for o in m.graph.output:
            if len(o.type.tensor_type.shape.dim):
                o.type.tensor_type.shape.dim[0].dim_value = batch.shape[0]
        m = m.transform(InferShapes())
        return execute_onnx(m, {inp.name: batch}, return_full_exec_context=True)

    x = np.asarray(x, np.float32)
    try:
        return run(x)
    except Exception:
        if x.shape[0] == 1:
            raise
    parts = [run(x[i:i + 1]) for i in range(x.shape[0])]
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]
            if isinstance(parts[0][k], np.ndarray) and parts[0][k].ndim and parts[0][k].shape[0] == 1}


def require_qonnx():
    from . import require
    return require("qonnx", extra="qonnx")


def _qonnx_codes(entry, real):
    real = np.asarray(real, np.float64)
    if entry.get("binary"):
        return (real < 0).astype(np.int64), 0.0
    u = real / entry["scale"]
    codes = np.rint(u)
    off = float(np.abs(u - codes).max(initial=0.0))
    return codes.astype(np.int64) + entry["zero_point"], off


def compare_with_qonnx(onnx_path, qnn_model: Model, x) -> list:
    """Run qonnx's executor and the hwsim engine on the float input x [N, ...] and compare integer codes at every
    tensor the importer mapped (metadata "qonnx_tensors"). Returns one TensorAgreement per tensor, in graph order.

    chained: the engine's own end-to-end codes; local: the hwsim layer fed qonnx's codes of its inputs (what the
    layer's arithmetic alone contributes; -1 when an input has no ONNX counterpart). Differences in output LSBs.
    """
    from ..engine import RUNNERS, Engine, quantize_input
    from ..trace import LayerCounts

    mapping = qnn_model.metadata.get("qonnx_tensors")
    if not mapping:
        raise HwsimError("the model has no QONNX tensor mapping (import it with import_qonnx)",
                         source=qnn_model.source)
    x = np.asarray(x, np.float32)
    ctx = _qonnx_run(onnx_path, x)
    engine = Engine(qnn_model)
    ours = engine.run(quantize_input(qnn_model, x), keep_all=True).tensors
    theirs, offs = {}, {}
    for name, entry in mapping.items():
        theirs[name], offs[name] = _qonnx_codes(entry, ctx[entry["onnx"]])
    results = []
    for name in ["input"] + [lay.name for lay in qnn_model.layers]:
        if name not in mapping:
            continue
        entry = mapping[name]
        a, b = ours[name].astype(np.int64), theirs[name].reshape(ours[name].shape)
        d = np.abs(a - b)
        hist = dict(zip(*(v.tolist() for v in np.unique(d[d > 0], return_counts=True))))
        local_mm, local_max = -1, -1
        if name != "input":
            lay = qnn_model.layer(name)
            if all(n in theirs for n in lay.inputs):
                inputs = [theirs[n].reshape(ours[n].shape) for n in lay.inputs]
                out = RUNNERS[lay.op](engine, lay, inputs, LayerCounts(lay.name, lay.op))
                dl = np.abs(out.astype(np.int64) - b)
                local_mm, local_max = int(np.count_nonzero(dl)), int(dl.max(initial=0))
        results.append(TensorAgreement(name, entry["onnx"], int(a.size), int(np.count_nonzero(d)),
                                       int(d.max(initial=0)), local_mm, local_max, hist, offs[name],
                                       bool(entry.get("dequantized", False))))
    return results


def format_agreement(results) -> str:
    """A small text table of compare_with_qonnx results."""
    lines = [f"{'hwsim tensor':24} {'elements':>9} {'chained':>9} {'max':>4} {'local':>7} {'max':>4} {'off-grid':>9}"]
    for r in results:
        lines.append(f"{r.hwsim[:24]:24} {r.elements:9d} {r.mismatches:9d} {r.max_diff_lsb:4d} "
                     f"{r.local_mismatches:7d} {r.local_max_diff_lsb:4d} {r.off_grid:9.2e}"
                     + ("  (dequantized output)" if r.dequantized else ""))
    return "\n".join(lines)
