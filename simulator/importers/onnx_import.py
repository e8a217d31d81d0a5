"""Quantized ONNX (as written by onnxruntime.quantization) -> hwsim Model, bit-exact with ONNX Runtime.

The graph walk and the per-op logic live in the shared front end: `onnx/frontend.py` walks the nodes and each op's
handler (`onnx/ops/<op>.py`, method `ort`) reads it. This module is the reader state those handlers work with
(`OrtBuilder`): tensor kinds, encodings, Q/DQ group matching, constant quantization and layer emission.

Both forms are read:

- QOperator: QuantizeLinear, QLinearConv, QLinearMatMul, QGemm, QLinearAdd, QLinearAveragePool,
  QLinearGlobalAveragePool, QLinearConcat (com.microsoft), MaxPool / Flatten / Reshape on 8-bit tensors,
  DequantizeLinear at the end;
- QDQ: QuantizeLinear / DequantizeLinear pairs around float Conv, MatMul, Gemm, Add, AveragePool,
  GlobalAveragePool, MaxPool, Relu, Clip, Flatten, Reshape, Concat, Identity.

The integer semantics follow ONNX Runtime's CPU kernels (what a QDQ model runs as after ORT's QDQ fusion), checked
against its source (microsoft/onnxruntime):

- conv / dense (QLinearConv, QLinearMatMul, QGemm; core/providers/cpu/quantization/qlinearconv.cc,
  quantize_linear_matmul.cc, contrib_ops/cpu/quantization/quant_gemm.cc): int32 accumulator (wrap) preloaded with
  the int32 bias, requantized by MlasRequantizeOutput: rint(float32(acc) * M[c]) with the float32 multiplier
  M[c] = float32(float32(x_scale * w_scale[c]) / y_scale)  -> `requant: "float32"` and an explicit `multiplier`;
- QuantizeLinear of the model input (MLAS MlasQuantizeLinear): float32 x / scale, round half to even, + zp,
  saturate -> `input.division: "float32"`;
- DequantizeLinear at the output: float32(code - zp) * scale -> `output.dequantize: true`;
- QLinearAdd (MLAS x86_64/QLinearBinaryOpKernelAvx2.S), DQ -> Add -> Q, QLinearConcat's requantizing table
  (qlinear_lookup_table.cc): (sum_i float32(v_i * s_i)) / s_out, round half to even -> `add` with
  `requant: "float32", rescale: "dequantize"` (one input: a rescale);
- QLinearAveragePool / QLinearGlobalAveragePool (qlinear_pool.cc, MLAS qlgavgpool.cpp) -> `avgpool` with
  `rounding: "ort_float32"` (see units/pooling.py avgpool_ort);
- DQ -> ConvTranspose -> Q, which ORT runs unfused in float32 (core/providers/cpu/nn/conv_transpose.cc, MLAS
  SGEMM, Col2im) -> `dilate` + `conv2d` with `arithmetic: "ort_float32"` (units/float_conv_transpose.py).
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field

import numpy as np

from ..encodings import UniformAct, UniformW
from ..errors import HwsimError
from ..graph import CHECKS, Layer, Model
from . import prune_layers, require, unique_name
from .onnx.frontend import Node, OnnxGraph, load_onnx  # noqa: F401  (load_onnx: re-exported, used elsewhere)
from .onnx.islands import island_step, tabulate
from .onnx.ops import lookup

ORT_SOURCES = {
    "conv/dense": "onnxruntime/core/providers/cpu/quantization/qlinearconv.cc, quantize_linear_matmul.cc, "
                  "contrib_ops/cpu/quantization/quant_gemm.cc (output_scales = x_scale * w_scale / y_scale, "
                  "float32), MlasRequantizeOutput",
    "input": "onnxruntime/core/mlas/lib/quantize.cpp MlasQuantizeLinear (float32 division, round half to even)",
    "add": "onnxruntime/core/mlas/lib/x86_64/QLinearBinaryOpKernelAvx2.S (dequantize, add, divide, round)",
    "concat": "onnxruntime/contrib_ops/cpu/quantization/qlinear_concat.cc, qlinear_lookup_table.cc",
    "avgpool": "onnxruntime/contrib_ops/cpu/quantization/qlinear_pool.cc, onnxruntime/core/mlas/lib/qlgavgpool.cpp",
}
ACT_DTYPES = {np.dtype(np.uint8): False, np.dtype(np.int8): True}
MALFORMED = (IndexError, KeyError, ValueError, TypeError, AttributeError)   # a malformed node, not a bug here


ORT_CPUS = ("host", "vnni", "avx2")


def host_int8_path() -> str:
    """Which u8 x s8 kernel ONNX Runtime's MLAS runs on this CPU: "vnni" (vpdpbusd: exact int32 sums; also
    what ARM's dot-product kernels and x86 without AVX2 compute) or "avx2" (vpmaddubsw: adjacent products
    summed into int16 with saturation, docs/references.md §4)."""
    from ..jit import cpu_features
    feats = cpu_features()
    if "+avx512vnni" in feats or "+avxvnni" in feats or "+avx2" not in feats:
        return "vnni"
    return "avx2"


def apply_ort_cpu(model: Model, ort_cpu: str) -> Model:
    """Give every u8 x s8 conv / dense layer the datapath ORT's kernels on `ort_cpu` compute (depthwise convs and
    ORT's float32 ConvTranspose keep the exact one: ORT runs them on other kernels)."""
    if ort_cpu not in ORT_CPUS:
        raise HwsimError(f"unknown ORT CPU {ort_cpu!r}; expected one of {', '.join(ORT_CPUS)}", field="ort_cpu")
    cpu = host_int8_path() if ort_cpu == "host" else ort_cpu
    model.metadata["ort_cpu"] = {"requested": ort_cpu, "int8_kernel": cpu}
    if cpu != "avx2":
        return model
    shifted = set(model.metadata.get("ort_u8_shifted_inputs", []))
    for lay in model.layers:
        if lay.op not in ("conv2d", "dense") or lay.attr("arithmetic") == "ort_float32":
            continue
        enc, w = lay.in_encs[0], lay.weight_enc
        # u8 codes, or int8 codes that ORT's QDQS8ToU8 rewrite turns into u8 ones (code + 128) for this kernel
        u8 = isinstance(enc, UniformAct) and enc.bits == 8 and (not enc.signed or lay.name in shifted)
        s8 = getattr(w, "kind", None) == "uniform" and w.bits == 8 and w.signed
        depthwise = lay.op == "conv2d" and lay.weight.shape[1] == 1 and lay.weight.shape[0] == lay.attr("groups")
        if u8 and s8 and not depthwise:
            lay.attrs["datapath"] = "x86_pair_sat16"
    return model


def import_onnx(path, proto=None, *, qdq_int8_allowed: bool = False, ort_cpu: str = "host",
                extra_outputs=()) -> Model:
    """Import a QOperator or QDQ ONNX model; returns a checked Model whose source is `path`.

    `ort_cpu`: the CPU whose ONNX Runtime the model should match bit for bit: "vnni" (exact u8 x s8 sums),
    "avx2" (x86 without VNNI: the pair-saturating datapath on u8 x s8 layers), or "host" (this machine's).

    `qdq_int8_allowed` mirrors ONNX Runtime's session option `session.qdqisint8allowed`. Its default on x86 is
    off: ORT then rewrites every int8 QuantizeLinear -> DequantizeLinear pair whose QuantizeLinear has a single
    consumer to uint8 (QDQS8ToU8Transformer, zero point + 128). That rewrite is exact for every integer kernel
    but one: QLinearAveragePool adds its output zero point in float32 (`float_zero_point`). Node groups whose
    int8 inputs and outputs end up with different types are not fused: ORT computes them in float32, which no
    integer datapath reproduces; the importer lists them in `metadata["ort_float_nodes"]`. With the option on
    (ORT's default on ARM), nothing is rewritten and every group runs on ORT's int8 kernels.

    `extra_outputs`: tensors the ORT session being matched also returns as graph outputs (a harness reading
    intermediate tensors). The rewrite leaves an int8 QuantizeLinear that is a graph output as int8, which
    changes the kernel a consumer runs on x86 without VNNI; the hwsim model keeps its one output.
    """
    source = os.fspath(path)
    try:
        model = OrtBuilder(OnnxGraph(path, proto), qdq_int8_allowed, extra_outputs).run()
        return apply_ort_cpu(model.check(), ort_cpu).check()   # encodings are resolved by the first check
    except HwsimError as exc:
        if exc.source is None:
            raise HwsimError(exc.message, source=source, field=exc.field) from None
        raise


# ----------------------------------------------------------------------------------------------- values

@dataclass
class QT:
    """A quantized activation tensor that exists in the hwsim graph (the model input or a layer's output)."""
    name: str
    enc: UniformAct
    shape: tuple


@dataclass
class QConst:
    """Integer codes of a constant with their quantization parameters (a weight or a bias)."""
    codes: np.ndarray
    scale: np.ndarray      # float32, 1-D (1 or per channel)
    zp: np.ndarray         # int64, 1-D
    axis: int | None       # the channel axis when per channel


@dataclass
class Pending:
    """A float result that becomes a hwsim layer once a QuantizeLinear gives its output encoding."""
    kind: str              # "mac", "add", "avgpool", "concat", "clip"
    where: str
    inputs: list
    params: dict = field(default_factory=dict)
    clip: tuple = (-math.inf, math.inf)   # real bounds from Relu / Clip applied to the float result
    node: str = ""                        # the ONNX node (QDQ groups: ORT's fusion is checked on it)
    in_types: list = field(default_factory=list)   # ORT's 8-bit type of each DequantizeLinear input


class OrtBuilder:
    """What a handler's `ort(node, imp)` works with. `values` maps every ONNX tensor name to (kind, payload):

    const      a float or integer constant (np.ndarray)       qconst / dqconst  QuantizeLinear / DequantizeLinear
    float_input  the float model input                                            of a constant (QConst)
    q          a quantized tensor in the hwsim graph (QT)     dq        the DequantizeLinear of a q tensor (QT)
    pending    a float result waiting for its QuantizeLinear (Pending: a QDQ node group ORT fuses)
    """

    def __init__(self, graph: OnnxGraph, qdq_int8_allowed=False, extra_outputs=()):
        self.onnx = require("onnx")
        self.graph = graph
        self.proto = graph.proto
        self.source = graph.source
        self.values = {name: ("const", arr) for name, arr in graph.consts.items()}
        self.layers = []
        self.layer_names = {"input", "sample_input"}
        self.forms = set()
        self.model_input = None    # QT of the model input
        self.float_input = None    # name of the float graph input
        self.q_outputs = set()     # outputs of QuantizeLinear nodes
        self.input_shape = None
        self.consumers = {}
        for node in self.proto.graph.node:
            for name in node.input:
                self.consumers.setdefault(name, []).append(node)
        self.graph_outputs = set(graph.output_names) | set(extra_outputs)   # as ORT's session sees them
        self.qdq_int8_allowed = qdq_int8_allowed
        self.ort_type = {}         # DequantizeLinear output -> the 8-bit type ORT's kernels see ("u8" / "s8")
        self.ort_float_nodes = []  # QDQ node groups ORT leaves unfused (computed in float32)
        self.lut_sources = {}      # lut layer -> the ONNX ops its table stands for
        self.u8_shifted = []       # MAC layers on int8 codes that ORT's QDQS8ToU8 hands its u8 kernels as code + 128

    # --------------------------------------------------------------------------------------- the walk
    def run(self) -> Model:
        self.read_input(self.graph.inputs[0])
        for node in self.graph.nodes():
            if island_step(node, self):   # an elementwise float op on a dequantized tensor: a lut to be
                continue
            handler = lookup(node, "ort")
            try:
                handler.ort(node, self)
            except HwsimError:
                raise
            except MALFORMED as exc:
                self.fail(f"malformed {node.op_type} node ({type(exc).__name__}: {exc}); check its inputs and "
                          "attributes", node.where)
        return self.finish()

    def finish(self) -> Model:
        outputs = self.graph.output_names
        if len(outputs) != 1:
            self.fail(f"hwsim models have exactly one output, the graph has {len(outputs)}", "graph.output")
        if self.model_input is None:
            self.fail(f"the float input {self.float_input!r} is never quantized by a QuantizeLinear", "graph.input")
        out_name = outputs[0]
        kind, payload = self.lookup(out_name, "graph.output")
        if kind not in ("q", "dq"):
            what = {"pending": "a float result that is never quantized (ONNX Runtime would compute it in float32, "
                               "which hwsim does not model)",
                    "island": "the result of float ops that is never quantized (a float tail ONNX Runtime computes "
                              "in float32; end the graph with a QuantizeLinear or a DequantizeLinear output)",
                    "float_input": "the float input itself"}.get(kind, f"a {kind}")
            self.fail(f"the graph output {out_name!r} is {what}; it must be a quantized tensor or its "
                      "DequantizeLinear", "graph.output")
        out_q = payload
        if out_q.name == "input":
            self.fail("the graph computes nothing hwsim can run (its output is the quantized input)", "graph.output")
        layers = prune_layers(self.layers, out_q.name)
        form = "QDQ" if self.forms == {"QDQ"} else "QOperator" if self.forms == {"QOperator"} else "mixed"
        meta = {"source": {"format": "onnx", "file": os.path.basename(self.source), "form": form,
                           "producer": f"{self.proto.producer_name} {self.proto.producer_version}".strip(),
                           "opsets": {(o.domain or "ai.onnx"): int(o.version) for o in self.proto.opset_import},
                           "graph_output": out_name},
                "arithmetic": "ONNX Runtime CPU (MLAS, x86 with AVX2); the formulas follow these sources",
                "ort_sources": ORT_SOURCES,
                "ort_qdq_int8_allowed": self.qdq_int8_allowed, "ort_u8_shifted_inputs": self.u8_shifted}
        kept = {lay.name for lay in layers}
        meta["onnx_tensors"] = {name: payload.name for name, (kind, payload) in self.values.items()
                                if kind == "q" and payload.name in kept}
        if self.lut_sources:
            meta["lookup_tables"] = {name: " -> ".join(ops) for name, ops in self.lut_sources.items()
                                     if any(lay.name == name for lay in layers)}
        if self.ort_float_nodes:
            meta["ort_float_nodes"] = list(self.ort_float_nodes)
            meta["ort_warning"] = (
                f"ONNX Runtime (x86, default session options) leaves {len(self.ort_float_nodes)} node group(s) "
                f"unfused and computes them in float32: {', '.join(self.ort_float_nodes[:8])}"
                f"{' ...' if len(self.ort_float_nodes) > 8 else ''}. Its QDQS8ToU8 rewrite gives their int8 inputs "
                "and outputs different types. hwsim computes them in integer arithmetic, as ORT does with the "
                "session option session.qdqisint8allowed=1 (import with qdq_int8_allowed=True to match that)")
        name = self.proto.graph.name or os.path.splitext(os.path.basename(self.source))[0]
        return Model(name=name, input_shape=self.input_shape, input_enc=self.model_input.enc, layers=layers,
                     input_rounding="half_even", input_division="float32", output_dequantize=(kind == "dq"),
                     metadata=meta, source=self.source)

    def read_input(self, vi):
        where = f"graph input {vi.name!r}"
        tt = vi.type.tensor_type
        if not vi.type.HasField("tensor_type") or tt.elem_type != self.onnx.TensorProto.FLOAT:
            self.fail("the model input must be a float32 tensor", where)
        dims = list(tt.shape.dim)
        if len(dims) not in (2, 4):
            self.fail(f"the input must be [N, C, H, W] or [N, K], got rank {len(dims)}", where)
        shape = []
        for k, d in enumerate(dims[1:], start=1):
            if not d.HasField("dim_value") or d.dim_value < 1:
                label = d.dim_param or "?"
                self.fail(f"dimension {k} is dynamic ({label!r}); hwsim needs fixed sizes except the batch "
                          "dimension (re-export with a fixed input size)", where)
            shape.append(int(d.dim_value))
        self.input_shape = tuple(shape)
        self.float_input = vi.name
        self.values[vi.name] = ("float_input", None)

    # --------------------------------------------------------------------------------------- values
    def fail(self, msg, where=None):
        raise HwsimError(msg, field=where)

    def lookup(self, name, where):
        if name not in self.values:
            self.fail(f"input {name!r} is not defined: no initializer, graph input or earlier node output of that "
                      "name (a missing initializer?)", where)
        return self.values[name]

    def const(self, name, where, what):
        kind, payload = self.lookup(name, where)
        if kind != "const":
            self.fail(f"{what} {name!r} must be a constant initializer", where)
        return payload

    def scale(self, name, where, per_channel_ok=False):
        arr = self.const(name, where, "scale")
        if arr.dtype != np.float32:
            self.fail(f"scale {name!r} must be float32, got {arr.dtype}", where)
        flat = arr.reshape(-1)
        if flat.size == 0 or (flat.size > 1 and not per_channel_ok):
            self.fail(f"scale {name!r} must be a single value (per tensor), got shape {list(arr.shape)}", where)
        bad = ~np.isfinite(flat) | (flat <= 0)
        if bad.any():
            self.fail(f"scale {name!r} must be positive and finite, got {float(flat[bad][0])!r}", where)
        return flat

    def zero_point(self, name, where, dtype_default=np.uint8, per_channel_ok=False, allowed=None):
        if not name:
            return np.zeros(1, dtype=np.int64), np.dtype(dtype_default)
        arr = self.const(name, where, "zero point")
        allowed = allowed or ACT_DTYPES
        if arr.dtype not in allowed:
            vals = arr.reshape(-1)[:1].tolist()
            extra = ""
            if np.issubdtype(arr.dtype, np.integer) and vals:
                extra = f" (value {vals[0]}" + (", outside the 8-bit range)" if not -128 <= vals[0] <= 255 else ")")
            self.fail(f"zero point {name!r} has type {arr.dtype}{extra}; supported: "
                      f"{', '.join(str(d) for d in allowed)}", where)
        flat = arr.reshape(-1).astype(np.int64)
        if flat.size == 0 or (flat.size > 1 and not per_channel_ok):
            self.fail(f"zero point {name!r} must be a single value (per tensor), got shape {list(arr.shape)}", where)
        return flat, arr.dtype

    def act_enc(self, scale_name, zp_name, where, dtype_default=np.uint8):
        s = self.scale(scale_name, where)
        zp, dtype = self.zero_point(zp_name, where, dtype_default)
        lo, hi = (-128, 127) if ACT_DTYPES[dtype] else (0, 255)
        if not lo <= int(zp[0]) <= hi:
            self.fail(f"zero point {int(zp[0])} is outside the {dtype} range [{lo}, {hi}]", where)
        return UniformAct(8, ACT_DTYPES[dtype], float(s[0]), int(zp[0]))

    @staticmethod
    def same_enc(a, b):
        return a.signed == b.signed and a.scale == b.scale and a.zero_point == b.zero_point and a.bits == b.bits

    @staticmethod
    def norm_axis(axis, ndim):
        return axis + ndim if axis < 0 else axis

    # --------------------------------------------------------------------------------------- layers
    def new_name(self, base):
        base = re.sub(r"(_QuantizeLinear_Output|_DequantizeLinear_Output|_quantized)$", "", base)
        name = re.sub(r"[^A-Za-z0-9_]+", "_", base).strip("_") or "layer"
        if name[0].isdigit():
            name = "n" + name
        return unique_name(name, self.layer_names)

    def add_layer(self, lay: Layer, inputs: list, where) -> QT:
        lay.in_shapes = [q.shape for q in inputs]
        lay.in_encs = [q.enc for q in inputs]
        try:
            CHECKS[lay.op](lay, where)
            if lay.out_enc is None:
                self.fail("output encoding is required", where)
        except HwsimError as exc:
            fld = exc.field or ""
            fld = fld[len(where):].lstrip(".") if fld.startswith(where) else fld
            self.fail(f"cannot map to hwsim {lay.op}: {exc.message}" + (f" ({fld})" if fld else ""), where)
        self.layers.append(lay)
        return QT(lay.name, lay.out_enc, tuple(lay.out_shape))

    def rescale(self, q: QT, enc: UniformAct, where, base) -> QT:
        """Q(DQ(q)) with a new encoding: ORT's float32 dequantize -> quantize (a one-input add)."""
        if self.same_enc(q.enc, enc):
            return q
        lay = Layer(self.new_name(base + "_rescale"), "add", [q.name],
                    {"requant": "float32", "rescale": "dequantize"}, enc)
        return self.add_layer(lay, [q], where)

    def clip_layer(self, q: QT, bounds, where, base) -> QT:
        lo_r, hi_r = bounds
        if lo_r == -math.inf and hi_r == math.inf:
            return q
        lo_v, hi_v = self.value_bounds(q.enc, bounds)
        lay = Layer(self.new_name(base + "_clip"), "clip", [q.name], {"min": lo_v, "max": hi_v})
        return self.add_layer(lay, [q], where)

    @staticmethod
    def value_bounds(enc, bounds):
        """Real clip bounds -> bounds in the encoding's value units: Q(clip(y, a, b)) = clip(Q(y), Q(a), Q(b))."""
        lo_c, hi_c = enc.code_range()
        out = []
        for b, default in zip(bounds, (lo_c, hi_c)):
            if math.isinf(b):
                out.append(default - enc.zero_point)
                continue
            with np.errstate(over="ignore"):
                v = np.rint(np.float32(b) / np.float32(enc.scale))
            code = int(np.clip(v, -2.0 ** 40, 2.0 ** 40)) + enc.zero_point
            out.append(min(max(code, lo_c), hi_c) - enc.zero_point)
        return out

    def mac_layer(self, where, base, x: QT, w: QConst, bias, enc, op, conv_attrs, clip=(-math.inf, math.inf),
                  w_enc=None):
        """w_enc: the weight encoding when it is not 8-bit uniform (Float32W: float32 weights, which ORT's float
        ConvTranspose multiplies as they are; no requantizer, so no multiplier)."""
        co = w.codes.shape[0]
        if w_enc is not None:
            lay = Layer(self.new_name(base), op, [x.name], dict(conv_attrs), enc, w.codes.astype(np.int64), w_enc,
                        None, None if bias is None else bias.astype(np.int64), 32)
            if clip != (-math.inf, math.inf):
                lay.attrs["clip"] = self.value_bounds(enc, clip)
            return self.add_layer(lay, [x], where)
        wscale = np.broadcast_to(w.scale, (co,)) if w.scale.size == 1 else w.scale
        f32 = np.float32
        mult = [float((f32(x.enc.scale) * f32(s)) / f32(enc.scale)) for s in np.asarray(wscale, dtype=np.float32)]
        if w.scale.size == 1:
            mult = mult[:1]
        if not all(math.isfinite(m) and m > 0 for m in mult):
            self.fail("the requantization multiplier x_scale * w_scale / y_scale is not a positive float32", where)
        signed = w.codes.dtype == np.int8
        zps = tuple(int(z) for z in w.zp)
        if len(set(zps)) == 1:
            zps = zps[:1]        # one zero point for the tensor (ORT requires them equal per channel anyway)
        wenc = UniformW(8, signed, tuple(float(s) for s in w.scale), zps)
        attrs = {"acc_bits": 32, "overflow": "wrap", "requant": "float32", "multiplier": mult}
        if op == "conv2d":
            attrs = {**conv_attrs, **attrs}
        lay = Layer(self.new_name(base), op, [x.name], attrs, enc, w.codes.astype(np.int64), wenc, None,
                    None if bias is None else bias.astype(np.int64), 32)
        if clip != (-math.inf, math.inf):
            lay.attrs["clip"] = self.value_bounds(enc, clip)
        return self.add_layer(lay, [x], where)

    def materialize(self, p: Pending, enc: UniformAct, base) -> QT:
        where = p.where
        if p.kind == "mac":
            q = self.mac_layer(where, base, p.inputs[0], p.params["w"], p.params["bias"], enc, p.params["op"],
                               p.params["attrs"], p.clip, p.params.get("w_enc"))
            if p.in_types[:1] == ["u8"] and p.inputs[0].enc.signed and p.node not in self.ort_float_nodes:
                # ORT's QDQS8ToU8 rewrite: its u8 kernel sees code + 128 (a group it leaves in float32 has none)
                self.u8_shifted.append(q.name)
            return q
        if p.kind == "add":
            lay = Layer(self.new_name(base), "add", [q.name for q in p.inputs],
                        {"requant": "float32", "rescale": "dequantize"}, enc)
            if p.clip != (-math.inf, math.inf):
                lay.attrs["clip"] = self.value_bounds(enc, p.clip)
            return self.add_layer(lay, p.inputs, where)
        if p.kind == "avgpool":
            attrs = {k: v for k, v in p.params.items() if k not in ("ort_out_type", "done")}
            attrs["rounding"] = "ort_float32"
            if p.params.get("ort_out_type") == "u8" and enc.signed and not attrs.get("global"):
                # ORT on x86 runs int8 QDQ graphs as uint8 (QDQS8ToU8Transformer): QLinearAveragePool then adds
                # the shifted zero point (zp + 128) in float32 before rounding
                attrs["float_zero_point"] = enc.zero_point + 128
            lay = Layer(self.new_name(base), "avgpool", [p.inputs[0].name], attrs, enc)
            q = self.add_layer(lay, p.inputs, where)
            return self.clip_layer(q, p.clip, where, base)
        if p.kind == "mul":
            lay = Layer(self.new_name(base), "mul", [q.name for q in p.inputs], {"requant": "float32"}, enc)
            q = self.add_layer(lay, p.inputs, where)
            return self.clip_layer(q, p.clip, where, base)
        if p.kind == "lut_avgpool":
            attrs = {"sum_order": p.params["sum_order"]} if "sum_order" in p.params else {}
            lay = Layer(self.new_name(base), "lut_avgpool", [p.inputs[0].name], attrs, enc, table=p.params["table"])
            self.lut_sources[lay.name] = p.params["ops"] + [p.params.get("pool_op", "GlobalAveragePool")]
            q = self.add_layer(lay, p.inputs, where)
            return self.clip_layer(q, p.clip, where, base)
        if p.kind == "softmax":
            lay = Layer(self.new_name(base), "softmax", [p.inputs[0].name], {"arithmetic": "ort_qlinear"}, enc)
            q = self.add_layer(lay, p.inputs, where)
            return self.clip_layer(q, p.clip, where, base)
        if p.kind == "resize":
            lay = Layer(self.new_name(base), "resize", [p.inputs[0].name], p.params["attrs"], enc)
            q = self.add_layer(lay, p.inputs, where)
            return self.clip_layer(q, p.clip, where, base)
        if p.kind == "concat":
            parts = [self.rescale(q, enc, where, base) for q in p.inputs]
            lay = Layer(self.new_name(base), "concat", [q.name for q in parts])
            q = self.add_layer(lay, parts, where)
            return self.clip_layer(q, p.clip, where, base)
        if p.kind == "clip":
            q = self.rescale(p.inputs[0], enc, where, base)
            return self.clip_layer(q, p.clip, where, base)
        raise AssertionError(p.kind)

    def lut_layer(self, nodes, source: QT, dq_names, q_node, enc, where, feed="hwsim_codes") -> QT:
        """A float island (or a QOperator unary op) -> a lut layer whose table ONNX Runtime computed."""
        table = tabulate(self, nodes, source, dq_names, q_node, enc, where, feed)
        lay = Layer(self.new_name(q_node.output[0]), "lut", [source.name], {}, enc, table=table)
        ops = [n.op_type for n in nodes] or [q_node.op_type]
        self.lut_sources[lay.name] = ops
        return self.add_layer(lay, [source], where)

    def reshape(self, x: QT, shape, where, base):
        if tuple(shape) == tuple(x.shape):
            return x
        if len(shape) == 1:
            lay = Layer(self.new_name(base), "flatten", [x.name])
        else:
            lay = Layer(self.new_name(base), "reshape", [x.name], {"shape": list(shape)})
        return self.add_layer(lay, [x], where)

    # --------------------------------------------------------------------------------------- QDQ patterns
    def q_params(self, node: Node, per_channel_ok=False):
        """(scale, zero point, its dtype, axis) of a QuantizeLinear / DequantizeLinear node."""
        attrs = node.attrs()
        if attrs.get("block_size", 0):
            node.fail("blocked quantization (block_size) is not supported")
        scale = self.scale(node.inputs[1], node.where, per_channel_ok)
        zp_name = node.input(2)
        default = np.uint8
        if "output_dtype" in attrs and not zp_name:
            default = self.onnx.helper.tensor_dtype_to_np_dtype(attrs["output_dtype"])
        allowed = {np.dtype(np.uint8): 0, np.dtype(np.int8): 0, np.dtype(np.int32): 0} if per_channel_ok else None
        zp, dtype = self.zero_point(zp_name, node.where, default, per_channel_ok, allowed)
        return scale, zp, dtype, attrs.get("axis", 1)

    def ort_q_type(self, q_out, enc):
        """The 8-bit type ORT's kernels see for the QuantizeLinear output `q_out` (module docstring of
        import_onnx): int8 pairs become uint8 when the QuantizeLinear has exactly one consumer, counting one
        DequantizeLinear per consumer of a DequantizeLinear (EnsureUniqueDQForNodeUnit duplicates them first)
        and it is no graph output (onnxruntime/core/optimizer/qdq_transformer/qdq_s8_to_u8.cc)."""
        if not enc.signed:
            return "u8"
        if self.qdq_int8_allowed or q_out in self.graph_outputs:
            return "s8"
        cons = self.consumers.get(q_out, [])
        edges = 0
        for c in cons:
            if c.op_type == "DequantizeLinear" and (c.domain or "") in ("", "ai.onnx"):
                edges += max(1, len(self.consumers.get(c.output[0], [])))
            else:
                edges += 1
        return "u8" if edges == 1 and cons[0].op_type == "DequantizeLinear" else "s8"

    def qdq_group(self, node: Node, kind, xs, params=None):
        """A float op between DequantizeLinear inputs and a QuantizeLinear output (ORT fuses it to a QLinear op):
        its output is pending until that QuantizeLinear gives the encoding."""
        types = [self.ort_type.get(n) for n in node.inputs if n in self.ort_type]
        p = Pending(kind, node.where, xs, dict(params or {}), node=node.proto.name or node.where, in_types=types)
        self.values[node.outputs[0]] = ("pending", p)

    def close_group(self, p: Pending, enc: UniformAct, q_out, where) -> QT:
        """The QuantizeLinear `q_out` ending a QDQ node group: the group becomes one hwsim layer (once)."""
        if "done" in p.params:
            if not self.same_enc(p.params["done"].enc, enc):
                self.fail("a float result is quantized twice with different parameters", where)
            return p.params["done"]
        out_type = self.ort_q_type(q_out, enc)
        p.params["ort_out_type"] = out_type
        types = {t for t in p.in_types + [out_type] if t is not None}
        if len(types) > 1 and p.node not in self.ort_float_nodes:
            self.ort_float_nodes.append(p.node)
        q = self.materialize(p, enc, q_out)
        for view in p.params.get("after", []):   # views deferred until the quantized result existed
            q = view(q)
        p.params["done"] = q
        return q

    def dq_input(self, name, where, what="input"):
        kind, payload = self.lookup(name, where)
        if kind != "dq":
            hint = {"q": "a quantized tensor used by a float op (missing DequantizeLinear?)",
                    "float_input": "the float model input (missing QuantizeLinear?)",
                    "pending": "a float result that was never quantized (missing QuantizeLinear / DequantizeLinear "
                               "pair; ONNX Runtime would compute it in float32)",
                    "island": "the result of elementwise float ops that is never quantized (hwsim makes such a chain "
                              "a lookup table when a QuantizeLinear ends it)"}.get(kind, kind)
            self.fail(f"{what} {name!r} must be a DequantizeLinear output, got {hint}", where)
        return payload

    def dq_const(self, name, where, what):
        kind, payload = self.lookup(name, where)
        if kind != "dqconst":
            if kind == "const":
                self.fail(f"{what} {name!r} is a float constant; hwsim needs it quantized "
                          "(DequantizeLinear of an integer initializer)", where)
            self.fail(f"{what} {name!r} must be a DequantizeLinear of a constant, got {kind}", where)
        return payload

    def clip_op(self, node: Node, lo, hi):
        """Relu / Clip: folded into a pending QDQ group's output, else a relu layer or a pending clip."""
        kind, payload = self.lookup(node.inputs[0], node.where)
        out = node.outputs[0]
        if kind == "pending" and "done" not in payload.params:
            old = payload.clip
            payload.clip = (max(old[0], lo), min(old[1], hi))
            self.values[out] = ("pending", payload)
            return
        x = self.dq_input(node.inputs[0], node.where)
        if lo == 0.0 and hi == math.inf:
            # Relu: max(v, 0) commutes with dequantization exactly (DQ(v) >= 0 iff v >= 0)
            lay = Layer(self.new_name(out), "relu", [x.name])
            self.values[out] = ("dq", self.add_layer(lay, [x], node.where))
            return
        self.values[out] = ("pending", Pending("clip", node.where, [x], clip=(lo, hi)))

    def on_codes(self, node: Node, build):
        """MaxPool / Flatten / Reshape commute with (de)quantization: `build(x: QT) -> QT` works on the 8-bit
        codes of a quantized tensor (QOperator) or of a DequantizeLinear's input (QDQ)."""
        kind, payload = self.lookup(node.inputs[0], node.where)
        if kind == "pending" and payload.kind == "lut_avgpool" and "done" not in payload.params:
            # a view of a float pooled result (QOperator MobileNetV3's head: GlobalAveragePool -> Flatten ->
            # QuantizeLinear): it commutes with the quantization, so it is applied to the quantized layer
            after = payload.params.get("after", []) + [build]
            self.values[node.outputs[0]] = ("pending", Pending(payload.kind, payload.where, payload.inputs,
                                                               {**payload.params, "after": after}, payload.clip,
                                                               payload.node, payload.in_types))
            return
        if kind == "q":
            self.forms.add("QOperator")
        else:
            kind, payload = "dq", self.dq_input(node.inputs[0], node.where)
        self.values[node.outputs[0]] = (kind, build(payload))

    def weight(self, w: QConst, where, kind, trans_b=False):
        """Weight codes in hwsim's layout [Co, ...] with per-output-channel parameters."""
        codes, axis = w.codes, w.axis
        if codes.dtype not in (np.int8, np.uint8):
            self.fail(f"weights must be int8 or uint8, got {codes.dtype}", where)
        if kind == "conv":
            if codes.ndim != 4:
                self.fail(f"only 2-D convolutions are supported (weight shape {list(codes.shape)})", where)
            chan_axis = 0
        else:
            if codes.ndim != 2:
                self.fail(f"the weight must be a 2-D matrix, got shape {list(codes.shape)}", where)
            chan_axis = 0 if trans_b else 1
            if not trans_b:
                codes = codes.T
        if axis is not None and axis != chan_axis:
            self.fail(f"per-channel weight parameters along axis {axis}; hwsim needs them per output channel "
                      f"(axis {chan_axis})", where)
        return QConst(np.ascontiguousarray(codes), w.scale, w.zp, 0 if axis is not None else None)

    def bias(self, b: QConst | None, x_scale, w: QConst, co, where):
        if b is None:
            return None
        if b.codes.dtype != np.int32:
            self.fail(f"the bias must be int32 (quantized with scale x_scale * w_scale), got {b.codes.dtype}", where)
        codes = b.codes.reshape(-1).astype(np.int64)
        if codes.size == 1:
            codes = np.full(co, codes[0])
        if codes.size != co:
            self.fail(f"bias has {codes.size} values for {co} output channels", where)
        if np.any(b.zp != 0):
            self.fail("the bias zero point must be 0", where)
        want = np.float32(x_scale) * np.broadcast_to(w.scale, (co,)).astype(np.float32)
        have = np.broadcast_to(b.scale, (co,))
        if not np.allclose(have, want, rtol=1e-5, atol=0):
            self.fail("the bias scale is not input scale x weight scale; ONNX Runtime would add the int32 bias "
                      "as if it were (hwsim refuses the ambiguity)", where)
        return codes

    # --------------------------------------------------------------------------------------- QOperator
    def q_input(self, name, scale_name, zp_name, where):
        kind, payload = self.lookup(name, where)
        if kind != "q":
            self.fail(f"input {name!r} must be a quantized (uint8/int8) tensor, got {kind}", where)
        enc = self.act_enc(scale_name, zp_name, where, np.int8 if payload.enc.signed else np.uint8)
        if not self.same_enc(enc, payload.enc):
            self.fail(f"input {name!r} is read with scale {enc.scale} / zero point {enc.zero_point}, but it was "
                      f"quantized with {payload.enc.scale} / {payload.enc.zero_point}", where)
        return payload

    def enc_like(self, scale_name, zp_name, like: QT, where):
        """The encoding (scale, zero point) of a tensor derived from `like`: without a zero point, its type."""
        return self.act_enc(scale_name, zp_name, where, np.int8 if like.enc.signed else np.uint8)

    def q_weight(self, codes_name, scale_name, zp_name, where, co_axis):
        codes = self.const(codes_name, where, "weight")
        scale = self.scale(scale_name, where, per_channel_ok=True)
        zp, dtype = self.zero_point(zp_name, where, codes.dtype.type, per_channel_ok=True)
        if zp.size > 1 and zp.size != scale.size and scale.size != 1:
            self.fail("weight scale and zero point sizes differ", where)
        if codes.dtype != dtype:
            self.fail(f"weight zero point type {dtype} does not match the weight type {codes.dtype}", where)
        axis = co_axis if max(scale.size, zp.size) > 1 else None
        if axis is not None and codes.shape[axis] != max(scale.size, zp.size):
            self.fail(f"{max(scale.size, zp.size)} per-channel parameters for {codes.shape[axis]} output channels",
                      where)
        return QConst(codes, scale, zp, axis)

    def q_bias(self, name, where, co):
        if not name:
            return None
        b = self.const(name, where, "bias")
        if b.dtype != np.int32:
            self.fail(f"the bias must be int32, got {b.dtype}", where)
        codes = b.reshape(-1).astype(np.int64)
        if codes.size == 1:
            codes = np.full(co, codes[0])
        if codes.size != co:
            self.fail(f"bias has {codes.size} values for {co} output channels", where)
        return codes

    def qlinear(self, node: Node, kind, xs, enc, params=None):
        """A QOperator op that requantizes (QLinearAdd, QLinearAveragePool, QLinearConcat, ...): one hwsim layer."""
        self.forms.add("QOperator")
        p = Pending(kind, node.where, xs, dict(params or {}))
        self.values[node.outputs[0]] = ("q", self.materialize(p, enc, node.outputs[0]))
