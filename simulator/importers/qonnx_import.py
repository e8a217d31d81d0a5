"""QONNX (Brevitas / FINN) graphs -> hwsim Model (the comparison with qonnx's executor: qonnx_compare.py).

QONNX marks every quantized tensor with a custom op (domain `qonnx.custom_op.general`; docs/references.md §4):

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

Layout: the shared ONNX front end (`onnx/frontend.py`) walks the graph and each op's handler (`onnx/ops/<op>.py`,
method `qonnx`) reads it; this module is the reader state those handlers work with (`QonnxBuilder`: the value
environment, layer emission, the exact threshold / requantizer solving).
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
from . import unique_name
from .onnx.frontend import Node, OnnxGraph
from .onnx.ops import lookup
from .qonnx_compare import TensorAgreement, compare_with_qonnx, format_agreement, require_qonnx  # noqa: F401

MAX_THRESHOLD_BITS = 8            # auto mode: thresholds only up to 255 comparators per channel
INPUT_ROUNDING = {"ROUND": "half_even", "HALF_EVEN": "half_even", "FLOOR": "floor"}
SYMMETRIC_ROUNDING = {"HALF_UP": "half_away", "DOWN": "trunc"}   # equal to hwsim's only when zp == 0
MALFORMED = (KeyError, IndexError, ValueError, TypeError, OverflowError, ZeroDivisionError)


# --------------------------------------------------------------------------------------------- values

@dataclass
class QConst:
    """A quantized initializer (weights or bias): integer codes plus the scale / zero point broadcast to it."""
    codes: np.ndarray        # int64
    scale: np.ndarray        # float32, broadcast to codes.shape
    zp: np.ndarray           # float32, broadcast to codes.shape
    bits: int
    signed: bool
    binary: bool             # values are +-1 (BipolarQuant or 1-bit signed Quant)
    real: np.ndarray         # float32 dequantized values, as qonnx computes them


@dataclass
class Q:
    """A quantized activation tensor that exists in the hwsim graph."""
    name: str                # hwsim tensor name
    enc: object
    rank: int                # per-sample rank (3: [C, H, W], 1: [K])


@dataclass
class Acc:
    """A MAC layer whose output quantizer has not been reached yet.

    The real value of output channel c is  z = steps(raw), raw = sum x_value·w_value (an integer), where
    `steps` starts with the affine map raw -> A[c]·raw + B[c] (A = s_in·s_w[c], B = the real bias) and goes on
    with the folded nodes: ("affine", a, b) per channel, ("relu",), ("clip", lo, hi)."""
    layer: Layer             # op, inputs, attrs, weight codes, weight encoding (scales fixed at the end)
    in_q: Q
    w_unit: list             # Fraction per channel: real value of one weight-value unit (s_w[c])
    steps: list
    pools: list = field(default_factory=list)   # (ONNX node name, attrs) of MaxPools moved past the quantizer
    onnx_node: str = ""


@dataclass
class AvgPending:
    q: Q
    attrs: dict
    window: int
    summed: bool = False     # a Mul by the window size followed (the TruncAvgPool pattern)


@dataclass
class AddPending:
    a: Q
    b: Q
    relu: bool = False


# --------------------------------------------------------------------------------------------- importer

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
    source = str(path)
    graph = OnnxGraph(path, proto)
    try:
        model = QonnxBuilder(graph, quant_as, requant, name or os.path.splitext(os.path.basename(source))[0]).run()
    except HwsimError as exc:
        raise HwsimError(exc.message, source=source, field=exc.field) from None
    model.source = source
    model.check()
    return model


class QonnxBuilder:
    """What a handler's `qonnx(node, imp)` works with. `env` maps every ONNX tensor name to its value: a constant
    (np.ndarray), a quantized constant (QConst), "graph-input", a quantized tensor in the hwsim graph (Q), or a
    result waiting for its quantizer (Acc: a MAC layer with folded ops; AvgPending; AddPending)."""

    def __init__(self, graph: OnnxGraph, quant_as, requant, name):
        self.graph = graph
        self.quant_as = quant_as
        self.requant = requant
        self.name = name
        self.env = dict(graph.consts)
        self.env[graph.input_name] = "graph-input"
        self.layers = []
        self.names = {"input"}
        self.mapping = {}         # hwsim tensor -> {"onnx": name, "scale": s, "zero_point": zp} or {"binary": s}
        self.notes = []
        self.output_bias = None    # float32 bias of a float graph output, added after dequantization
        self.input = None         # (shape, enc, rounding)
        self.consumers = {}
        for node in graph.proto.graph.node:
            for t in node.input:
                self.consumers[t] = self.consumers.get(t, 0) + 1
        for t in graph.output_names:
            self.consumers[t] = self.consumers.get(t, 0) + 1
        self.annotations = _datatype_annotations(graph.proto.graph)

    # ----------------------------------------------------------------------------------- the walk

    def run(self) -> Model:
        dt = self.annotations.get(self.graph.input_name)
        if dt is not None:     # FINN-ONNX: an integer input with a datatype annotation instead of a Quant
            self.define_input(self.graph.input_name, "input", _annotated_encoding(dt), "ROUND", None)
        for node in self.graph.nodes():
            handler = lookup(node, "qonnx", any_domain=True)
            for t in node.inputs:
                if isinstance(self.env.get(t), Acc) and self.consumers.get(t, 0) > 1:
                    raise HwsimError(f"the pre-activation {t!r} feeds more than one node; hwsim folds it into "
                                     "one layer's quantizer", field=node.where)
            try:
                handler.qonnx(node, self)
            except HwsimError as exc:
                raise HwsimError(exc.message, field=exc.field or node.where) from None
            except MALFORMED as exc:
                # a malformed node (missing attribute or input, bad shape): one line, never a traceback
                raise HwsimError(f"malformed {node.op_type} node ({type(exc).__name__}: {exc})",
                                 field=node.where) from None
        return self.finish()

    def finish(self) -> Model:
        outputs = self.graph.output_names
        if len(outputs) != 1:
            raise HwsimError(f"the graph must have exactly one output, got {len(outputs)}", field="graph.output")
        out = self.env.get(outputs[0])
        float_output = isinstance(out, Acc)
        if float_output:
            out = self.finish_float(out, outputs[0])
        if not isinstance(out, Q):
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
        model = Model(self.name, tuple(shape), enc, self.layers, input_rounding=rounding, input_division="float32",
                      metadata=meta, output_dequantize=float_output)
        if self.output_bias is not None:
            model.output_bias = np.asarray(self.output_bias, dtype=np.float32)
        return model

    # ----------------------------------------------------------------------------------- helpers

    def get(self, name):
        if name not in self.env:
            raise HwsimError(f"tensor {name!r} is not produced by an earlier node")
        return self.env[name]

    def const(self, name, what):
        v = self.get(name)
        if not isinstance(v, np.ndarray):
            raise HwsimError(f"{what} ({name!r}) must be a constant (initializer or Constant node)")
        return v

    def layer_name(self, onnx_name, default):
        """A unique layer name from the ONNX node's name (`default` when it has none)."""
        base = "".join(ch if ch.isalnum() or ch in "_-." else "_" for ch in (onnx_name or default)) or default
        return unique_name(base, self.names)

    def map(self, q: Q, onnx_name: str):
        if isinstance(q.enc, BinaryAct):
            self.mapping[q.name] = {"onnx": onnx_name, "binary": True}
        else:
            self.mapping[q.name] = {"onnx": onnx_name, "scale": q.enc.scale, "zero_point": q.enc.zero_point}

    def add_layer(self, lay: Layer) -> Layer:
        self.layers.append(lay)
        return lay

    def emit(self, node: Node, op, inputs: list, attrs=None, enc=None, rank=None) -> Q:
        """A layer that keeps its input's encoding (relu, maxpool, flatten, reshape, concat) as the node's output."""
        lay = self.add_layer(Layer(self.layer_name(node.proto.name, op), op, [x.name for x in inputs],
                                   attrs or {}))
        q = Q(lay.name, enc or inputs[0].enc, inputs[0].rank if rank is None else rank)
        self.map(q, node.outputs[0])
        self.env[node.outputs[0]] = q
        return q

    def shapes(self):
        """Per-sample shapes of every hwsim tensor so far (checks the partial graph)."""
        shape, enc, rounding = self.input
        m = Model(self.name, tuple(shape), enc, list(self.layers), input_rounding=rounding)
        m.check()
        return m.shapes()

    # ----------------------------------------------------------------------------------- quantizers

    def scalar_act_params(self, s, zp, what):
        if s.size != 1 or zp.size != 1:
            raise HwsimError(f"{what}: per-channel activation scales / zero points are not supported "
                             "(hwsim activations have one scale per tensor)")
        s, zp = float(s.ravel()[0]), float(zp.ravel()[0])
        if zp != int(zp):
            raise HwsimError(f"{what}: zero point {zp} is not an integer")
        return s, int(zp)

    def bipolar_activation(self, node: Node, x, s):
        enc = BinaryAct(s)
        if isinstance(x, str) and x == "graph-input":
            self.define_input(node.outputs[0], node.proto.name, enc, "ROUND", None)
        elif isinstance(x, Acc):
            self.env[node.outputs[0]] = self.finish_binary(x, node, enc)
        elif isinstance(x, Q) and x.enc == enc:
            self.env[node.outputs[0]] = x
        else:
            raise HwsimError(f"a bipolar quantizer on {describe(x)} is not supported (only on the graph input or "
                             "after a conv / dense layer)")

    def define_input(self, out, node_name, enc, mode, qrange):
        if self.input is not None:
            raise HwsimError("the graph input is quantized twice")
        dims = self.graph.input_dims()
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
            self.note_odd_zp("input", enc, mode)
        self.input = (dims[1:], enc, rounding)
        q = Q("input", enc, len(dims) - 1)
        self.map(q, out)
        if isinstance(enc, UniformAct) and qrange is not None and qrange != enc.code_range():
            # narrow range: the input quantizer clamps to the full code range; a clip layer narrows it.
            lay = self.add_layer(Layer(self.layer_name(node_name, "input_narrow"), "clip", ["input"],
                                       {"min": qrange[0] - enc.zero_point, "max": qrange[1] - enc.zero_point}))
            q = Q(lay.name, enc, q.rank)
            del self.mapping["input"]        # the ONNX tensor is the narrowed one
            self.map(q, out)
        self.env[out] = q

    def note_odd_zp(self, where, enc, mode):
        # qonnx rounds u = z/s + zp half to even; hwsim rounds z/s half to even and adds zp afterwards. With an
        # odd zero point the two break exact ties in opposite directions (round(2.5 + 1) = 4, round(2.5) + 1 = 3).
        if mode in ("ROUND", "HALF_EVEN") and enc.zero_point % 2:
            self.notes.append(f"{where}: odd zero point {enc.zero_point} with ROUND: exact ties round the other "
                              "way than qonnx (hwsim rounds before adding the zero point)")

    # ----------------------------------------------------------------------------------- MAC layers

    def weights(self, name, axis, what):
        """The quantized weight input `name` -> (codes [Co, ...], weight encoding without final scales,
        s_w per channel)."""
        w = self.get(name)
        if isinstance(w, np.ndarray):
            w = _integer_const(w, self.annotations.get(name))
        if not isinstance(w, QConst):
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

    def mac(self, node: Node, op, x, w_codes, w_kind, units, attrs, bias) -> Acc:
        if not isinstance(x, Q):
            raise HwsimError(f"the input of {node.op_type} must be a quantized tensor, got {describe(x)}")
        if op == "dense" and x.rank != 1:
            raise HwsimError(f"{node.op_type} needs a flat input (add a Flatten), got a rank-{x.rank} tensor")
        if op == "conv2d" and x.rank != 3:
            raise HwsimError(f"Conv needs a [C, H, W] input, got a rank-{x.rank} tensor")
        co = w_codes.shape[0]
        lay = Layer(self.layer_name(node.proto.name, node.op_type.lower()), op, [x.name], attrs, weight=w_codes)
        lay.weight_enc = w_kind                   # resolved in emit_mac once the scales are final
        s_in = Fraction(x.enc.scale)
        a = [s_in * u for u in units]
        b = [Fraction(0)] * co if bias is None else [Fraction(float(v)) for v in bias]
        acc = Acc(lay, x, units, [("affine", a, b)], onnx_node=node.proto.name)
        self.env[node.outputs[0]] = acc
        return acc

    def bias(self, name, co, what="bias"):
        v = self.get(name)
        if isinstance(v, QConst):
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

    # ----------------------------------------------------------------------------------- folded elementwise ops

    def acc_and_const(self, node: Node):
        """(the MAC output, the constant, whether the constant comes first) of a binary op, or Nones."""
        a, b = (self.get(n) for n in node.inputs[:2])
        if isinstance(a, Acc) and isinstance(b, np.ndarray):
            return a, b, False
        if isinstance(b, Acc) and isinstance(a, np.ndarray):
            return b, a, True
        return None, None, None

    def channel_vector(self, acc: Acc, c, what):
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

    def fold(self, node: Node, acc: Acc, a, b):
        """Fold the per-channel affine map z -> a·z + b into the MAC layer's activation chain."""
        acc.steps.append(("affine", a, b))
        merge_affine(acc.steps)
        self.env[node.outputs[0]] = acc

    # ----------------------------------------------------------------------------------- pass-through ops

    def emit_avgpool(self, p: AvgPending, node: Node, rounding):
        lay = self.add_layer(Layer(self.layer_name(node.proto.name, "avgpool"), "avgpool", [p.q.name],
                                   {**p.attrs, "rounding": rounding}))
        q = Q(lay.name, p.q.enc, 3)
        self.map(q, node.outputs[0])
        return q

    def flatten(self, node: Node, x):
        if not isinstance(x, Q):
            raise HwsimError(f"Flatten / Reshape of {describe(x)} is not supported")
        if x.rank == 1:
            self.env[node.outputs[0]] = x
            return
        self.emit(node, "flatten", [x], rank=1)

    # ----------------------------------------------------------------------------------- finishing a quantizer

    def requantize_q(self, x: Q, node: Node, enc, qrange, mode):
        """Quant of an already-quantized tensor: accepted when it cannot change any value (an identity)."""
        old = x.enc
        if isinstance(old, UniformAct) and old.scale == enc.scale and old.zero_point == enc.zero_point:
            vlo, vhi = old.value_range()
            if qrange[0] - enc.zero_point <= vlo and vhi <= qrange[1] - enc.zero_point:
                self.map(x, node.outputs[0])
                return x
        raise HwsimError(f"a Quant that changes the encoding of an existing tensor ({describe(x)}) needs a "
                         "requantizing layer, which hwsim does not have outside conv / dense / add")

    def finish_avgpool(self, p: AvgPending, node: Node, enc, qrange, mode):
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
        self.note_odd_zp(node.proto.name or "avgpool", enc, mode)
        return self.emit_avgpool(p, node, rounding)

    def finish_add(self, p: AddPending, node: Node, enc, qrange, mode):
        if mode not in ("ROUND", "HALF_EVEN"):
            raise HwsimError(f"rounding_mode {mode} after a residual Add is not supported")
        self.note_odd_zp(node.proto.name or "add", enc, mode)
        for x in (p.a, p.b):
            if not isinstance(x.enc, UniformAct):
                raise HwsimError("residual Add needs uniform inputs")
        zp = enc.zero_point
        clip = [max(qrange[0] - zp, 0) if p.relu else qrange[0] - zp, qrange[1] - zp]
        attrs = {"requant": self.requant}
        if clip != list(enc.value_range()):
            attrs["clip"] = clip
        lay = self.add_layer(Layer(self.layer_name(node.proto.name, "add"), "add", [p.a.name, p.b.name], attrs,
                                   out_enc=enc))
        q = Q(lay.name, enc, p.a.rank)
        self.map(q, node.outputs[0])
        return q

    def _conditions_quant(self, enc, qrange, mode):
        """Quant code >= k, k = lo+1 .. hi, as conditions `z >= v` / `z > v` on its real input z."""
        lo, hi = qrange
        s, zp = Fraction(enc.scale), enc.zero_point
        conds = []
        for k in range(lo + 1, hi + 1):
            v, strict = _round_condition(k, mode)
            conds.append(((v - zp) * s, strict))
        return lo, conds

    def finish_quant(self, acc: Acc, node: Node, enc, qrange, mode):
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
            return self.finish_thresholds(acc, node, enc, lo, [conds])
        # requantizer path
        if simple is None:
            raise HwsimError("this activation chain (ReLU/Clip between affine ops) cannot use the requantizer; "
                             "import with quant_as='thresholds' or 'auto'")
        if mode not in ("ROUND", "HALF_EVEN"):
            raise HwsimError(f"rounding_mode {mode} cannot use the requantizer (it rounds half to even); "
                             "import with quant_as='thresholds' or 'auto'")
        self.note_odd_zp(acc.layer.name, enc, mode)
        a, b, relu = simple
        bias = []
        worst = 0.0
        for c, (ac, bc) in enumerate(zip(a, b)):
            r = bc / ac
            worst = max(worst, float(abs(r - round(r)) * ac / Fraction(enc.scale)))
            bias.append(round(r))
        if worst:   # the integer datapath cannot add a fractional bias before its requantizer: say what it costs
            self.notes.append(f"{acc.layer.name}: float bias rounded to whole accumulator units, worst case "
                              f"{worst:.3g} of an output step (quant_as='thresholds' keeps it exact)")
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

    def finish_binary(self, acc: Acc, node: Node, enc, conds=None):
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

    def finish_thresholds(self, acc: Acc, node: Node, enc, lo, conds):
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

    def _thresholds(self, acc: Acc, conds):
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

    def _emit_mac(self, acc: Acc, w_scales, bias):
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
        self.add_layer(lay)

    def _after_mac(self, acc: Acc, node: Node, enc):
        """The commuted MaxPools, then map the quantizer's output tensor."""
        q = Q(acc.layer.name, enc, 3 if acc.layer.op == "conv2d" else 1)
        for pool_name, attrs in acc.pools:
            lay = self.add_layer(Layer(self.layer_name(pool_name, "maxpool"), "maxpool", [q.name], attrs))
            q = Q(lay.name, enc, 3)
        self.map(q, node.outputs[0])
        return q

    def finish_float(self, acc: Acc, onnx_name):
        """A MAC whose float output is the graph output: 16-bit signed codes at the finest channel scale."""
        simple = _simple_fold(acc)
        if simple is None or simple[2]:
            raise HwsimError("a float graph output must be an affine function of a MAC layer; add an output Quant")
        a, b, _ = simple
        bias = [round(bc / ac) for ac, bc in zip(a, b)]
        if any((bc / ac).denominator != 1 for ac, bc in zip(a, b)):
            # A float bias (Brevitas' default) is not a whole number of accumulator units: it stays a float32
            # added after dequantization (model.output.bias), exactly as qonnx's executor adds it.
            self.output_bias = [float(bc) for bc in b]
            bias = [0] * len(b)
            self.notes.append(f"{acc.layer.name}: float bias added after dequantization (output.bias), as qonnx "
                              "computes it")
        unit = min(a)
        bound = _acc_bound(acc) + max(abs(v) for v in bias)
        peak = max(Fraction(bound) * ac / unit for ac in a)
        while peak > (1 << 15) - 1:
            unit *= 2
            peak /= 2
        if len(set(a)) > 1 or unit != a[0]:
            self.notes.append(f"{acc.layer.name}: the float output is stored as 16-bit codes of scale "
                              f"{float(unit):.6g}")
        if acc.pools:
            raise HwsimError("MaxPool on a float graph output is not supported")
        enc = UniformAct(16, True, float(unit), 0)
        acc.layer.out_enc = enc
        acc.layer.attrs = {**acc.layer.attrs, "requant": self.requant}
        self._emit_mac(acc, [ac / Fraction(acc.in_q.enc.scale) for ac in a], bias)
        q = Q(acc.layer.name, enc, 3 if acc.layer.op == "conv2d" else 1)
        self.mapping[q.name] = {"onnx": onnx_name, "scale": enc.scale, "zero_point": 0, "dequantized": True}
        if self.output_bias is not None:
            self.mapping[q.name]["bias"] = self.output_bias
        return q


# --------------------------------------------------------------------------------------------- exact folding

def merge_affine(steps):
    while len(steps) >= 2 and steps[-1][0] == "affine" and steps[-2][0] == "affine":
        _, a2, b2 = steps.pop()
        _, a1, b1 = steps.pop()
        steps.append(("affine", [x * y for x, y in zip(a1, a2)], [y * b + c for y, b, c in zip(a2, b1, b2)]))


def _simple_fold(acc: Acc):
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


def _acc_bound(acc: Acc) -> int:
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

def qrange(bits, signed, narrow):
    """qonnx's min_int / max_int."""
    if signed:
        return (-(1 << (bits - 1)) + (1 if narrow else 0)), (1 << (bits - 1)) - 1
    return 0, (1 << bits) - (2 if narrow else 1)


def _per_channel(a, what):
    """[Co, ...] array constant along every axis but 0 -> its Co values (or one value if all equal)."""
    flat = a.reshape(a.shape[0], -1)
    if not np.all(flat == flat[:, :1]):
        raise HwsimError(f"{what} varies inside an output channel (only per-tensor or per-output-channel)")
    col = flat[:, 0].astype(np.float64)
    return col[:1] if np.all(col == col[0]) else col


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
        return QConst((w < 0).astype(np.int64), one, zero, 1, True, True, w.astype(np.float32))
    codes = w.astype(np.int64)
    lo, hi = int(codes.min(initial=0)), int(codes.max(initial=0))
    bits = max(max(hi, -lo - 1).bit_length() + 1, 2)
    return QConst(codes, one, zero, bits, True, False, w.astype(np.float32))


def _same_storage(a, b) -> bool:
    return all(isinstance(e, UniformAct) for e in (a, b)) and (a.bits, a.signed, a.scale, a.zero_point) == (
        b.bits, b.signed, b.scale, b.zero_point)


def describe(x) -> str:
    if isinstance(x, Q):
        return f"quantized tensor {x.name!r} ({x.enc.kind})"
    if isinstance(x, Acc):
        return f"the float output of {x.layer.name!r}"
    if isinstance(x, QConst):
        return "a quantized constant"
    if isinstance(x, np.ndarray):
        return "a constant"
    if isinstance(x, (AvgPending, AddPending)):
        return "an unquantized pool / add result"
    if x == "graph-input":
        return "the unquantized graph input"
    return repr(x)
