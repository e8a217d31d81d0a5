"""Any ONNX model (float, QDQ or QOperator) -> list of `Workload`, for SHAPES only (no weights are needed).

`import_onnx` needs a quantized model it can run bit-exactly; costing an architecture only needs loop bounds,
operand widths and event counts, so this reader accepts float models too and never reads tensor values
except zero points (operand widths), Reshape targets, Squeeze / Unsqueeze axes and Resize scales / sizes.

- Shapes come from onnx.shape_inference after a symbolic or unknown batch dimension is fixed to 1; any other
  unknown dimension is an error naming the tensor. The batch dimension is the Workload's n (counts are per
  batch, as Workload says).
- MAC layers: Conv / ConvInteger / QLinearConv (2-D, any group, strides, pads, auto_pad; dilation 1),
  Gemm / QGemm / MatMul / MatMulInteger / QLinearMatMul (2-D, second operand constant). events: requants =
  outputs; a bias adds 32 bits per output channel to the weight fetch.
- Vector layers (counts as simulator/importers/qnn_shapes.py `_layer_counts` derives the engine's for the same
  ops): MaxPool / GlobalMaxPool: compares = (kernel elements - 1) per output; AveragePool / GlobalAveragePool /
  QLinear(Global)AveragePool: adds = (kernel elements - 1) per output, plus requants = outputs when the model is
  quantized (ONNX Runtime's QLinearAveragePool requantizes; import_onnx maps it to rounding "ort_float32");
  ReduceMean over H and W: the same in a float graph; in a quantized one (ORT leaves it in float) import_onnx's
  `lut_avgpool`: lut_reads = adds = input elements, requants = outputs, a 2^(input bits) x 32-bit table;
  Relu: 1 compare per element; Clip: 1 per bound given.
  Add / QLinearAdd of two activations (numpy broadcasting): `add`, adds = requants = outputs; Mul / QLinearMul of
  two activations (a squeeze-and-excitation gate [N, C, 1, 1] x [N, C, H, W]): `mul`, muls = requants =
  outputs, mul_bits = the wider operand.
  Softmax / QLinearSoftmax (any axis; the engine's is over [N, K]): `softmax`, lut_reads = 2 per element from a
  256 x 32-bit exp table, adds = requants = elements.
  Resize (nearest or linear; the output from constant scales, as ONNX Runtime: int(float32(dim) * scale), or
  sizes): `resize`; nearest moves data only (no events), linear: muls = 4, adds = 3, requants = 1 per output.
  ConvTranspose (2-D, group, strides, pads, output_padding): a `dilate` vector layer (zero insertion to
  (H - 1) * stride + 1, data movement only; left out at stride 1) and a stride-1 conv2d MAC layer on the dilated
  input with the flipped kernel, padded k - 1 - p (+ output_padding at the bottom / right), as import_onnx.
- Lookup tables (`lut`, on the LUT units): single-input elementwise functions (HardSwish, HardSigmoid, Sigmoid,
  Tanh, Erf, Gelu, LeakyRelu, PRelu, Elu, Selu, Celu, Softplus, Softsign, Mish, Exp, Log, Sqrt, Reciprocal, Neg,
  Abs, Floor, Ceil, Round, Sin, Cos), Add / Sub / Mul / Div / Pow / Min / Max of one activation and constants
  (when they do not fold, below), an elementwise op of a tensor with itself (x * x), QLinearSigmoid /
  QLinearLeakyRelu / QLinearSoftsign: lut_reads = elements, lut_entries = 2^(input bits), lut_width_bits = output
  bits; the table (2^in x out bits) is fetched like weights, once: shapes cannot tell whether a constant differs
  per channel (then import_onnx keeps one table per channel).
  Chains count once: an elementwise op whose inputs are all the same source tensor or an open chain of it (read
  by this op alone) extends that chain's lut instead of adding one, as import_onnx tabulates a float island once;
  Relu / Clip extend an open chain too. So a decomposed HardSwish x * Clip(x + 3, 0, 6) / 6 costs as the fused
  HardSwish, and Swish x * Sigmoid(x) is one table. A QuantizeLinear ends a chain: in a QDQ model the counts are
  exactly the engine's (tests/test_onnx_shapes_real_ops.py). A float graph cannot know where a quantizer will put
  QuantizeLinear nodes: ONNX Runtime's quantize_static quantizes a Sigmoid's output, so its QDQ EfficientNet has a
  lut and a mul per Swish where the float graph's estimate has one lut.
- Constants fold into the MAC layer before them: Add / Sub / Mul / Div with a constant and BatchNormalization
  whose activation input is a MAC output (or the model input) read by that op alone are not layers (a bias or a
  scale; the output must keep the input's shape). After any other op (a pool, an add, a table, a
  DequantizeLinear in a quantized model) the same op is a lookup table.
- Views (free): Flatten, Reshape, Concat, QLinearConcat, Squeeze, Unsqueeze, Transpose (the batch axis staying
  first; the engine's transpose layer on codes moves data, shapes count it free). (import_onnx adds a rescaling
  layer per Concat input whose scale differs from the output's, and after a nearest Resize whose output is
  quantized differently; shapes alone do not see those.)
- Not layers: QuantizeLinear, DequantizeLinear, DynamicQuantizeLinear, Cast, Identity, Dropout, and any node
  whose inputs are all constants (weight preprocessing, Shape arithmetic).
  Anything else (TopK, LayerNormalization, MatMul of two activations, Sub / Div of two activations, ...) is an
  error of one line naming the node (and, for an unknown op, listing the supported ones).
- Bits: a tensor's quantized type gives its width (int8/uint8 -> 8, int4 -> 4, int16 -> 16); operand widths
  add one bit when the zero point is not 0, as hwsim's uniform encodings do. Float tensors take
  `bits=(a_bits, w_bits)`. Accumulators are 32 bits.
"""

from __future__ import annotations

import math
import os
from dataclasses import replace

import numpy as np

from ..errors import HwsimError
from ..graph import LIMITS, limits_enabled
from ..hw.workload import Workload
from . import require
from .onnx.frontend import load_onnx

MAC_OPS = ("Conv", "ConvInteger", "QLinearConv", "Gemm", "QGemm", "MatMul", "MatMulInteger", "QLinearMatMul")
POOL_OPS = ("MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "QLinearAveragePool",
            "QLinearGlobalAveragePool")
# Single-input elementwise functions: a lookup table (a `lut` layer, as import_onnx's float islands).
UNARY_OPS = ("HardSwish", "HardSigmoid", "Sigmoid", "Tanh", "Erf", "Gelu", "LeakyRelu", "PRelu", "Elu", "Selu",
             "Celu", "Softplus", "Softsign", "Mish", "Exp", "Log", "Sqrt", "Reciprocal", "Neg", "Abs", "Floor",
             "Ceil", "Round", "Sin", "Cos")
BINARY_OPS = ("Add", "Sub", "Mul", "Div", "Pow", "Min", "Max")     # with a constant, or of one tensor: a table
ELEMENTWISE_OPS = UNARY_OPS + BINARY_OPS + ("Relu", "Clip", "BatchNormalization")
QLINEAR_UNARY = ("QLinearSigmoid", "QLinearLeakyRelu", "QLinearSoftsign")
VECTOR_OPS = ("QLinearAdd", "QLinearMul", "Softmax", "QLinearSoftmax", "Resize") + QLINEAR_UNARY
VIEW_OPS = ("Flatten", "Reshape", "Concat", "QLinearConcat", "Squeeze", "Unsqueeze", "Transpose")
PASS_OPS = ("QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "Cast", "Identity", "Dropout",
            "Constant", "Shape")
SUPPORTED = (MAC_OPS + ("ConvTranspose",) + POOL_OPS + ("ReduceMean",) + ELEMENTWISE_OPS + VECTOR_OPS + VIEW_OPS
             + PASS_OPS)
QUANT_OPS = {"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "QLinearConv", "ConvInteger",
             "MatMulInteger", "QLinearMatMul", "QGemm", "QLinearAdd", "QLinearAveragePool",
             "QLinearGlobalAveragePool", "QLinearConcat", "QLinearMul", "QLinearSoftmax", *QLINEAR_UNARY}
# Where each QOperator node keeps (x, x_zero_point) and (w, w_zero_point) / its output zero point.
Q_INPUTS = {"QLinearConv": ((0, 2), (3, 5), 7), "QLinearMatMul": ((0, 2), (3, 5), 7), "QGemm": ((0, 2), (3, 5), 8),
            "ConvInteger": ((0, 2), (1, 3), None), "MatMulInteger": ((0, 2), (1, 3), None),
            "QLinearAdd": ((0, 2), (3, 5), 7), "QLinearMul": ((0, 2), (3, 5), 7),
            "QLinearAveragePool": ((0, 2), None, 4), "QLinearGlobalAveragePool": ((0, 2), None, 4),
            "QLinearSoftmax": ((0, 2), None, 4), **{op: ((0, 2), None, 4) for op in QLINEAR_UNARY}}
ALIAS_OPS = ("DequantizeLinear", "Identity", "Cast", "Dropout")   # the same values (codes) under another name
MAX_ELEMS = 1 << 40


def load_onnx_shapes(path, bits=(8, 8)) -> list[Workload]:
    """Read an ONNX model's layers as Workloads; one HwsimError naming the file for anything unreadable."""
    source = os.fspath(path)
    onnx = require("onnx")
    proto = load_onnx(source)
    try:
        return _Reader(onnx, proto, bits).run()
    except HwsimError as exc:
        raise HwsimError(exc.message, source=source, field=exc.field) from None


class _Reader:
    def __init__(self, onnx, proto, bits):
        try:
            self.a_bits, self.w_bits = bits
        except (TypeError, ValueError):
            self.a_bits = self.w_bits = None
        if not all(isinstance(b, int) and not isinstance(b, bool) and 1 <= b <= 32 for b in (self.a_bits, self.w_bits)):
            raise HwsimError(f"bits must be (a_bits, w_bits), integers in [1, 32], got {bits!r}")
        self.onnx, self.nh = onnx, onnx.numpy_helper
        graph = proto.graph
        self.consts = {i.name: i for i in graph.initializer}     # name -> TensorProto or ndarray
        self.inputs = [vi for vi in graph.input if vi.name not in self.consts]
        if not self.inputs:
            raise HwsimError("the graph has no input", field="graph.input")
        for vi in self.inputs:           # a symbolic / unknown batch dimension is taken as 1
            dims = vi.type.tensor_type.shape.dim
            if len(dims) and not dims[0].HasField("dim_value"):
                dims[0].Clear()
                dims[0].dim_value = 1
        try:
            proto = onnx.shape_inference.infer_shapes(proto, data_prop=True)
        except Exception:                # inference is a help: every shape we need is checked below
            pass
        self.graph = proto.graph
        self.types, self.shapes = {}, {}
        for vi in list(self.graph.input) + list(self.graph.value_info) + list(self.graph.output):
            tt = vi.type.tensor_type
            self.types[vi.name] = tt.elem_type
            if tt.HasField("shape"):
                self.shapes[vi.name] = tuple(d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim)
        for init in self.graph.initializer:
            self.types[init.name] = init.data_type
            self.shapes[init.name] = tuple(init.dims)
        first = self.shapes.get(self.inputs[0].name) or (1,)
        self.n = first[0] if first and first[0] else 1
        self.quantized = any(node.op_type in QUANT_OPS for node in self.graph.node)
        self.qinfo = {}                  # tensor -> (storage bits, zero point != 0)
        self.consumers = {}
        for node in self.graph.node:
            for name in node.input:
                self.consumers.setdefault(name, []).append(node)
        self.out = []
        self.root_of = {}                # tensor -> the tensor whose values (codes) it carries: DQ, Identity, islands
        self.island = {}                 # tensor -> the lut Workload name of the open elementwise chain it ends
        self.foldable = {vi.name for vi in self.inputs}   # MAC outputs (and the input): a constant op folds there
        self.read_from = self.produced = None

    # ---------------------------------------------------------------------------------------- helpers
    def qbits(self, elem_type):
        tp = self.onnx.TensorProto
        widths = {"UINT8": 8, "INT8": 8, "UINT16": 16, "INT16": 16, "UINT4": 4, "INT4": 4, "FLOAT8E4M3FN": 8,
                  "FLOAT8E4M3FNUZ": 8, "FLOAT8E5M2": 8, "FLOAT8E5M2FNUZ": 8}
        return next((b for k, b in widths.items() if getattr(tp, k, None) == elem_type), None)

    def const(self, name):
        value = self.consts.get(name)
        if value is not None and not isinstance(value, np.ndarray):
            value = self.nh.to_array(value)
            self.consts[name] = value
        return value

    def zp_nonzero(self, name):
        if not name:
            return False
        value = self.const(name)
        return True if value is None else bool(np.any(value != 0))

    def shape(self, name, where):
        dims = self.shapes.get(name)
        if dims is None or any(d is None or d < 1 for d in dims):
            raise HwsimError(f"tensor {name!r} has unknown or empty dimensions {_dims_text(dims)}; only the batch "
                             "dimension may be symbolic", field=where)
        if math.prod(dims) > MAX_ELEMS:
            raise HwsimError(f"tensor {name!r} of shape {list(dims)} is absurdly large", field=where)
        return dims

    def info(self, name, default):
        """(storage bits, operand bits) of a tensor: its quantized type, or the `bits` default for floats."""
        if name in self.qinfo:
            b, zp = self.qinfo[name]
            return b, b + zp
        b = self.qbits(self.types.get(name))
        return (b, b) if b else (default, default)

    def out_bits(self, name):
        """Storage bits of a layer's output: its own quantized type, or the QuantizeLinear that reads it."""
        b = self.qbits(self.types.get(name))
        if b:
            return b
        for node in self.consumers.get(name, []):
            if node.op_type == "QuantizeLinear":
                return self.info(node.output[0], self.a_bits)[0]
        return self.a_bits

    def attrs(self, node):
        return {a.name: self.onnx.helper.get_attribute_value(a) for a in node.attribute}

    def fail(self, msg, where):
        raise HwsimError(msg, field=where)

    # ---------------------------------------------------------------------------------------- graph
    def run(self):
        producers = {}                   # tensor -> the layers whose output it is (through pass-through ops)
        for i, node in enumerate(self.graph.node):
            where = f"node {node.name or '#' + str(i)} ({node.op_type})"
            before = len(self.out)
            self.read_from = self.produced = None
            try:
                self.node(node, where)
                reads = node.input if self.read_from is None else self.read_from
                sources = tuple(dict.fromkeys(p for x in reads if x and x not in self.consts
                                              for p in producers.get(x, ("input",))))
                if len(self.out) > before:   # a ConvTranspose adds two layers: dilate, then the conv reading it
                    for j in range(before, len(self.out)):
                        self.out[j] = replace(self.out[j], inputs=sources)
                        sources = (self.out[j].name,)
                    if len(self.out) > LIMITS["layers"] and limits_enabled():   # as import's check (graph.py)
                        self.fail(f"the graph has more layers to cost than the limit of "
                                  f"{LIMITS['layers']:,} (lift the limits with --no-limits or HWSIM_NO_LIMITS=1)",
                                  "graph.node")
                elif self.produced is not None:   # a step of an elementwise chain: the chain's lut
                    sources = self.produced
                for y in node.output:
                    producers[y] = sources
            except HwsimError:
                raise
            except Exception as exc:     # a malformed node or attribute: one line, never a traceback
                detail = str(exc).splitlines()[0][:200] if str(exc) else ""
                self.fail(f"malformed {node.op_type} node ({type(exc).__name__}: {detail})", where)
        if not self.out:
            raise HwsimError("the graph has no layer to cost", field="graph")
        return self.out

    def node(self, node, where):
        op = node.op_type
        if op == "Constant":
            value = self.attrs(node).get("value")
            self.consts[node.output[0]] = None if value is None else self.nh.to_array(value)
            return
        if op == "Shape":                # shapes are static once the batch is fixed: a constant
            self.consts[node.output[0]] = None
            return
        if node.input and all(not n or n in self.consts for n in node.input):
            for o in node.output:        # constant folding (weight DequantizeLinear, Shape arithmetic, ...)
                self.consts.setdefault(o, None)
            if op in ("DequantizeLinear", "Identity", "Cast") and node.input[0] in self.shapes:
                self.shapes.setdefault(node.output[0], self.shapes[node.input[0]])
            if op == "DequantizeLinear":
                self.qinfo[node.output[0]] = self.dq_info(node)
            return
        if op not in SUPPORTED:
            dom = f" (domain {node.domain})" if node.domain not in ("", "ai.onnx") else ""
            listed = ", ".join(SUPPORTED)
            if len(listed) > 160:   # one bounded line; the whole list is in this module's docstring
                listed = listed[:listed.rfind(", ", 0, 160)] + f", ... ({len(SUPPORTED)} ops)"
            self.fail(f"unsupported op {_short_name(op)}{dom}; supported: {listed}", where)
        if op in MAC_OPS:
            self.out.append(self.mac(node, op, where))
            self.foldable.add(node.output[0])
        elif op == "ConvTranspose":
            self.conv_transpose(node, where)
        elif op in POOL_OPS:
            self.out.append(self.pool(node, op, where))
        elif op == "ReduceMean":
            self.out.append(self.reduce_mean(node, where))
        elif op in ELEMENTWISE_OPS:
            self.elementwise(node, op, where)
        elif op in ("QLinearAdd", "QLinearMul"):
            self.out.append(self.binary(node, op, where))
        elif op in QLINEAR_UNARY:
            self.qlinear_params(node, op)
            self.out.append(self.lut(node, node.input[0], where))
        elif op in ("Softmax", "QLinearSoftmax"):
            self.out.append(self.softmax(node, op, where))
        elif op == "Resize":
            self.out.append(self.resize(node, where))
        elif op in VIEW_OPS:
            self.view(node, op, where)
        else:
            self.passthrough(node, op, where)

    def dq_info(self, node):
        x = node.input[0]
        b = self.qbits(self.types.get(x)) or self.info(x, self.a_bits)[0]
        return b, self.zp_nonzero(node.input[2] if len(node.input) > 2 else "")

    def passthrough(self, node, op, where):
        x, y = node.input[0], node.output[0]
        if op == "QuantizeLinear":
            zp = node.input[2] if len(node.input) > 2 else ""
            b = self.qbits(self.types.get(y)) or (self.qbits(self.types.get(zp)) if zp else None) or 8
            self.qinfo[y] = (b, self.zp_nonzero(zp))
        elif op == "DequantizeLinear":
            self.qinfo[y] = self.dq_info(node)
        elif op == "DynamicQuantizeLinear":
            self.qinfo[y] = (8, True)    # uint8 with a computed zero point
            for o in node.output[1:]:
                self.consts[o] = None     # the scalar scale and zero point
        elif x in self.qinfo:
            self.qinfo[y] = self.qinfo[x]
        if op in ALIAS_OPS:
            self.root_of[y] = self.root(x)
            if op != "DequantizeLinear":
                if x in self.island and self.single_use(x, node):
                    self.island[y] = self.island[x]
                    self.produced = (self.island[x],)
                if x in self.foldable:
                    self.foldable.add(y)
        if y not in self.shapes and x in self.shapes:
            self.shapes[y] = self.shapes[x]

    def root(self, name):
        return self.root_of.get(name, name)

    def single_use(self, name, node):
        return all(c is node for c in self.consumers.get(name, []))

    # ---------------------------------------------------------------------------------------- layers
    def batch(self, dims, name, where):
        if dims[0] != self.n:
            self.fail(f"tensor {name!r} has batch dimension {dims[0]}, the model input {self.n}", where)

    def mac(self, node, op, where):
        a = self.attrs(node)
        x_pos, w_pos, y_zp = Q_INPUTS.get(op, ((0, None), (1, None), None))
        x, w = node.input[x_pos[0]], node.input[w_pos[0]]
        if w not in self.consts:
            self.fail(f"the weight {w!r} must be a constant (an initializer, or a DequantizeLinear of one); "
                      "a product of two activations is not supported", where)
        xd, wd = self.shape(x, where), self.shape(w, where)
        self.batch(xd, x, where)
        for pos in (x_pos, w_pos):       # QOperator / integer ops: the zero points are explicit inputs
            if pos[1] is not None:
                name = node.input[pos[0]]
                zp = node.input[pos[1]] if len(node.input) > pos[1] else ""
                b = self.qbits(self.types.get(name)) or 8
                self.qinfo.setdefault(name, (b, self.zp_nonzero(zp)))
        in_bits, a_op = self.info(x, self.a_bits)
        w_bits, w_op = self.info(w, self.w_bits)
        y = node.output[0]
        if y_zp is not None:
            zp = node.input[y_zp] if len(node.input) > y_zp else ""
            self.qinfo[y] = (self.qbits(self.types.get(y)) or 8, self.zp_nonzero(zp))
        bias = {"Conv": 2, "QLinearConv": 8, "Gemm": 2, "QGemm": 6}.get(op)
        has_bias = bias is not None and len(node.input) > bias and bool(node.input[bias])
        if op in ("Conv", "ConvInteger", "QLinearConv"):
            dims = self.conv_dims(node, a, xd, wd, where)
        else:
            dims = self.gemm_dims(op, a, xd, wd, where)
        common = dict(in_bits=in_bits, w_bits=w_bits, a_op_bits=a_op, w_op_bits=w_op, out_bits=self.out_bits(y),
                      acc_bits=32, extra_weight_bits=32 * dims["g"] * dims["k"] if has_bias else 0)
        wl = Workload(node.name or y, "conv2d" if "Conv" in op else "dense", "mac", n=self.n, **dims, **common)
        wl = replace(wl, events={"requants": wl.output_elems})
        self.shapes[y] = (self.n, wl.g * wl.k, wl.p, wl.q) if wl.op == "conv2d" else (self.n, wl.k)
        return wl

    def conv_dims(self, node, a, xd, wd, where):
        if len(xd) != 4 or len(wd) != 4:
            self.fail(f"only 2-D convolutions are supported (input {list(xd)}, weight {list(wd)})", where)
        g = int(a.get("group", 1))
        (_, c, h, w), (co, cig, r, s) = xd, wd
        if g < 1 or c != cig * g or co % g:
            self.fail(f"group {g} does not fit {c} input channels, weight {list(wd)}", where)
        if any(d != 1 for d in a.get("dilations", [1, 1])):
            self.fail(f"dilations {list(a['dilations'])} are not supported (only 1)", where)
        stride, pad = self.window(a, (h, w), (r, s), where)
        p, q = _out(h, r, stride[0], pad[0], pad[2]), _out(w, s, stride[1], pad[1], pad[3])
        if p < 1 or q < 1:
            self.fail(f"kernel {r}x{s} does not fit the padded input", where)
        return dict(g=g, k=co // g, c=cig, p=p, q=q, r=r, s=s, h=h, w=w, stride=stride, pad=pad)

    def gemm_dims(self, op, a, xd, wd, where):
        if len(xd) != 2 or len(wd) != 2:
            self.fail(f"only 2-D matrix products are supported, got {list(xd)} x {list(wd)}", where)
        if a.get("transA", 0):
            self.fail("transA = 1 is not supported (the first operand must be [batch, inputs])", where)
        kb, nb = (wd[1], wd[0]) if a.get("transB", 0) else wd
        if kb != xd[1]:
            self.fail(f"{list(xd)} x {list(wd)} do not multiply", where)
        return dict(g=1, k=nb, c=kb)

    def window(self, a, hw, ks, where):
        """strides and (top, left, bottom, right) pads, auto_pad included (ONNX Conv / pooling semantics)."""
        stride = tuple(int(v) for v in a.get("strides", [1, 1]))
        auto = a.get("auto_pad", b"NOTSET")
        auto = auto.decode() if isinstance(auto, bytes) else str(auto)
        if auto in ("SAME_UPPER", "SAME_LOWER"):
            totals = [max((-(-h // st) - 1) * st + k - h, 0) for h, k, st in zip(hw, ks, stride)]
            small = [t // 2 for t in totals]
            big = [t - t // 2 for t in totals]
            begin, end = (small, big) if auto == "SAME_UPPER" else (big, small)
            pad = (begin[0], begin[1], end[0], end[1])
        elif auto == "VALID":
            pad = (0, 0, 0, 0)
        else:
            pad = tuple(int(v) for v in a.get("pads", [0, 0, 0, 0]))
        if len(stride) != 2 or len(pad) != 4 or min(stride) < 1 or min(pad) < 0:
            self.fail(f"strides {list(stride)} / pads {list(pad)} are not 2-D", where)
        return stride, pad

    def pool(self, node, op, where):
        x, y = node.input[0], node.output[0]
        a = self.attrs(node)
        xd = self.shape(x, where)
        if len(xd) != 4:
            self.fail(f"pooling needs an [N, C, H, W] input, got {list(xd)}", where)
        self.batch(xd, x, where)
        if len(node.output) > 1 and node.output[1]:
            self.fail("MaxPool's Indices output is not supported", where)
        _, c, h, w = xd
        if "Global" in op:
            ks, stride, pad = (h, w), (h, w), (0, 0, 0, 0)
        else:
            ks = tuple(int(k) for k in a["kernel_shape"])
            if any(d != 1 for d in a.get("dilations", [1, 1])):
                self.fail(f"dilations {list(a['dilations'])} are not supported (only 1)", where)
            stride, pad = self.window(a, (h, w), ks, where)
        p, q = _out(h, ks[0], stride[0], pad[0], pad[2]), _out(w, ks[1], stride[1], pad[1], pad[3])
        if a.get("ceil_mode", 0) and (p, q) != (_out(h, ks[0], stride[0], pad[0], pad[2], True),
                                            _out(w, ks[1], stride[1], pad[1], pad[3], True)):
            self.fail("ceil_mode = 1 changes the output size here; hwsim pools with floor", where)
        if p < 1 or q < 1:
            self.fail(f"window {ks[0]}x{ks[1]} does not fit the input {h}x{w}", where)
        outs = self.n * c * p * q
        window = ks[0] * ks[1] - 1
        if "Max" in op:
            events = {"compares": window * outs}
        else:
            events = {"adds": window * outs, **({"requants": outs} if self.quantized else {})}
        if x in self.qinfo and op.startswith(("Max", "GlobalMax")):
            self.qinfo[y] = self.qinfo[x]
        if op.startswith("QLinear"):
            zp = node.input[4] if len(node.input) > 4 else ""
            self.qinfo[y] = (self.qbits(self.types.get(y)) or 8, self.zp_nonzero(zp))
        self.shapes[y] = (self.n, c, p, q)
        events = {k: v for k, v in events.items() if v}       # a 1x1 window adds nothing
        in_bits = self.info(x, self.a_bits)[0]
        return Workload(node.name or y, "maxpool" if "Max" in op else "avgpool", "vector", n=self.n, k=c, c=c,
                        p=p, q=q, r=ks[0], s=ks[1], h=h, w=w, stride=stride, pad=pad, in_bits=in_bits,
                        out_bits=self.out_bits(y) if "Avg" in op else in_bits, in_elems=self.n * c * h * w,
                        out_elems=outs, events=events)

    def reduce_mean(self, node, where):
        """ReduceMean over H and W: a global average pool in a float graph; in a quantized one what import_onnx
        makes of ORT's float ReduceMean, a lut_avgpool: a float32 table read and an add per element, one
        requantization per channel (the table: 2^(input bits) x 32 bits)."""
        x, y = node.input[0], node.output[0]
        axes = self.attrs(node).get("axes")
        if axes is None and len(node.input) > 1 and node.input[1]:
            axes = self.const(node.input[1])
        xd = self.shape(x, where)
        if axes is None or len(xd) != 4 or sorted(int(v) % 4 for v in np.ravel(axes)) != [2, 3]:
            self.fail("only the mean over H and W of an NCHW tensor (axes [2, 3]) is supported", where)
        self.batch(xd, x, where)
        _, c, h, w = xd
        keep = self.attrs(node).get("keepdims", 1)
        if not self.quantized:
            wl = self.pool(node, "GlobalAveragePool", where)
        else:
            elems, in_bits = self.n * c * h * w, self.info(x if x in self.qinfo else self.root(x), self.a_bits)[0]
            wl = Workload(node.name or y, "lut_avgpool", "vector", n=self.n, k=c, c=c, h=h, w=w, in_bits=in_bits,
                          out_bits=self.out_bits(y), in_elems=elems, out_elems=self.n * c,
                          events={"lut_reads": elems, "adds": elems, "requants": self.n * c},
                          lut_entries=1 << in_bits, lut_width_bits=32, extra_weight_bits=(1 << in_bits) * 32)
        self.shapes[y] = (self.n, c, 1, 1) if keep else (self.n, c)
        return wl

    def qlinear_params(self, node, op):
        """A QOperator node's zero points: its inputs' and its output's operand widths."""
        x_pos, w_pos, y_zp = Q_INPUTS[op]
        for pos in (x_pos, w_pos):
            if pos is not None and len(node.input) > pos[0]:
                name = node.input[pos[0]]
                zp = node.input[pos[1]] if len(node.input) > pos[1] else ""
                self.qinfo.setdefault(name, (self.qbits(self.types.get(name)) or 8, self.zp_nonzero(zp)))
        y = node.output[0]
        zp = node.input[y_zp] if len(node.input) > y_zp else ""
        self.qinfo[y] = (self.qbits(self.types.get(y)) or 8, self.zp_nonzero(zp))

    def elementwise(self, node, op, where):
        """Relu / Clip, Add / Mul of two activations, a constant folded into the MAC before it, or a lookup table:
        a chain of single-input elementwise ops (and of their products with the same input, as x * Sigmoid(x))
        extends one lut, as import_onnx tabulates a float island once."""
        y = node.output[0]
        live = [x for x in node.input if x and x not in self.consts]
        if op == "BatchNormalization" and len(live) > 1:
            self.fail("BatchNormalization with non-constant statistics is not supported", where)
        roots = list(dict.fromkeys(self.root(x) for x in live))
        if len(roots) > 1:
            if op in ("Add", "Mul") and len(live) == 2:
                self.out.append(self.binary(node, op, where))
                return
            self.fail(f"{op} of two activations is not supported (only Add and Mul of two activations, and "
                      "elementwise ops of one activation and constants)", where)
        x = live[0]
        chains = [t for t in dict.fromkeys(live) if t in self.island and self.single_use(t, node)]
        if op in ("Relu", "Clip") and not chains:
            wl = self.vector(node, op, where)
            if wl is not None:
                self.out.append(wl)
            return
        xd = self.shape(x, where)
        ys = self.shapes.get(y)
        known = [self.shapes.get(n) for n in node.input if n]
        if op in BINARY_OPS + ("PRelu",) and all(d is not None and None not in d for d in known):
            try:                         # the constants' own shapes: numpy broadcasting, as ONNX's
                ys = tuple(int(d) for d in np.broadcast_shapes(*known))
            except ValueError:
                self.fail(f"{op} inputs {[list(d) for d in known]} do not broadcast", where)
        if op in ("Add", "Sub", "Mul", "Div", "BatchNormalization") and len(live) == 1 and x in self.foldable and self.single_use(x, node):
            if ys and ys != xd:          # a bias or a scale of the MAC before: folds into its weights
                self.fail(f"{op} with a constant broadcasts {list(xd)} to {list(ys)}; only a same-shape bias or "
                          "scale folds away", where)
            self.foldable.add(y)
            self.shapes[y] = xd
            if x in self.qinfo:
                self.qinfo[y] = self.qinfo[x]
            return
        if ys and ys != xd:
            self.fail(f"{op} with a constant broadcasts {list(xd)} to {list(ys)}; an elementwise function (a "
                      "lookup table) keeps its input's shape", where)
        self.shapes[y] = xd
        self.root_of[y] = roots[0]
        if chains:                       # one more step of an open chain: the same table, a new output width
            name = self.island[chains[0]]
            for other in {self.island[t] for t in chains[1:]} - {name}:   # two chains of one input meet
                self.out = [wl for wl in self.out if wl.name != other]
                self.island = {t: name if v == other else v for t, v in self.island.items()}
            i = next(j for j in range(len(self.out) - 1, -1, -1) if self.out[j].name == name)
            out_bits = self.out_bits(y)
            self.out[i] = replace(self.out[i], out_bits=out_bits, lut_width_bits=out_bits,
                                  extra_weight_bits=self.out[i].lut_entries * out_bits)
            self.island[y] = name
            self.produced = (name,)
            return
        self.read_from = [roots[0]]
        self.out.append(self.lut(node, x, where))
        self.island[y] = self.out[-1].name

    def lut(self, node, x, where):
        """One table read per element: 2^(input bits) entries of the output's width; one table (shapes cannot
        tell whether a constant differs per channel)."""
        y = node.output[0]
        xd = self.shape(x, where)
        self.batch(xd, x, where)
        elems = math.prod(xd)
        in_bits = self.info(x if x in self.qinfo else self.root(x), self.a_bits)[0]
        out_bits = self.out_bits(y)
        self.shapes[y] = xd
        c, h, w = _chw(xd)
        return Workload(node.name or y, "lut", "vector", n=self.n, k=c, c=c, h=h, w=w, p=h, q=w, in_bits=in_bits,
                        out_bits=out_bits, in_elems=elems, out_elems=elems, events={"lut_reads": elems},
                        lut_entries=1 << in_bits, lut_width_bits=out_bits, extra_weight_bits=(1 << in_bits) * out_bits)

    def binary(self, node, op, where):
        """Add / Mul of two activations, broadcasting (a squeeze-and-excitation gate [N, C, 1, 1] x [N, C, H, W]):
        adds or muls, and requants, one per output element."""
        y = node.output[0]
        if op.startswith("QLinear"):
            self.qlinear_params(node, op)
            xs = [node.input[0], node.input[3]]
        else:
            xs = list(node.input)
        dims = [self.shape(x, where) for x in xs]
        try:
            out = tuple(int(d) for d in np.broadcast_shapes(*dims))
        except ValueError:
            self.fail(f"{op} inputs {[list(d) for d in dims]} do not broadcast", where)
        self.batch(out, y, where)
        elems = math.prod(out)
        mul = "Mul" in op
        events = {"muls" if mul else "adds": elems, "requants": elems}
        mul_bits = max(self.info(x, self.a_bits)[1] for x in xs) if mul else 0
        self.shapes[y] = out
        c, h, w = _chw(out)
        return Workload(node.name or y, "mul" if mul else "add", "vector", n=self.n, k=c, c=c, h=h, w=w, p=h, q=w,
                        in_bits=max(self.info(x, self.a_bits)[0] for x in xs), out_bits=self.out_bits(y),
                        in_elems=sum(math.prod(d) for d in dims), out_elems=elems, events=events, mul_bits=mul_bits)

    def softmax(self, node, op, where):
        """As the engine's softmax: an exp table (2 reads per element, 256 x 32 bits), a sum, a divide."""
        x, y = node.input[0], node.output[0]
        if op == "QLinearSoftmax":
            self.qlinear_params(node, op)
        xd = self.shape(x, where)
        self.batch(xd, x, where)
        elems = math.prod(xd)
        self.shapes[y] = xd
        c, h, w = _chw(xd)
        return Workload(node.name or y, "softmax", "vector", n=self.n, k=c, c=c, h=h, w=w, p=h, q=w,
                        in_bits=self.info(x, self.a_bits)[0], out_bits=self.out_bits(y), in_elems=elems,
                        out_elems=elems, events={"lut_reads": 2 * elems, "adds": elems, "requants": elems},
                        lut_entries=256, lut_width_bits=32)

    def resize(self, node, where):
        """Nearest: data movement only; linear: 4 muls, 3 adds and a requantization per output (Engine._resize)."""
        x, y = node.input[0], node.output[0]
        a = self.attrs(node)
        mode = a.get("mode", b"nearest")
        mode = mode.decode() if isinstance(mode, bytes) else str(mode)
        if mode not in ("nearest", "linear", "bilinear"):
            self.fail(f"Resize mode {mode!r} is not supported (nearest or linear)", where)
        if a.get("axes") is not None:
            self.fail("Resize with axes is not supported (give scales or sizes for all four axes)", where)
        xd = self.shape(x, where)
        if len(xd) != 4:
            self.fail(f"Resize needs an [N, C, H, W] input, got {list(xd)}", where)
        self.batch(xd, x, where)
        names = [node.input[1]] if len(node.input) == 2 else list(node.input[2:4])   # opset 10: (X, scales)
        scales, sizes = (self.const(n) if n else None for n in (names + [""])[:2])
        if scales is not None and scales.size:
            scales = scales.reshape(-1)
            if scales.size != 4 or not np.all(np.isfinite(scales)) or np.any(scales <= 0):
                self.fail(f"scales must be 4 positive factors, got {scales.tolist()[:6]}", where)
            out = tuple(int(np.float32(d) * np.float32(f)) for d, f in zip(xd, scales))  # ORT: (int64)(scale*dim)
        elif sizes is not None and sizes.size:
            out = tuple(int(v) for v in sizes.reshape(-1))
        else:
            out = self.shapes.get(y)
            if out is None or None in out:
                self.fail("Resize needs constant scales or sizes", where)
        if len(out) != 4 or out[:2] != xd[:2] or min(out) < 1:
            self.fail(f"Resize of {list(xd)} to {list(out)}: only H and W may change", where)
        self.shapes[y] = out
        if mode == "nearest" and x in self.qinfo:
            self.qinfo[y] = self.qinfo[x]
        elems = math.prod(out)
        events, mul_bits = {}, 0
        if mode != "nearest":
            events = {"muls": 4 * elems, "adds": 3 * elems, "requants": elems}
            mul_bits = self.info(x, self.a_bits)[1]
        in_bits = self.info(x, self.a_bits)[0]
        return Workload(node.name or y, "resize", "vector", n=self.n, k=xd[1], c=xd[1], h=xd[2], w=xd[3], p=out[2],
                        q=out[3], in_bits=in_bits, out_bits=in_bits if mode == "nearest" else self.out_bits(y),
                        in_elems=math.prod(xd), out_elems=elems, events=events, mul_bits=mul_bits)

    def conv_transpose(self, node, where):
        """Zero insertion (a `dilate` layer: (s - 1) zeros between pixels, data movement only), then an ordinary
        stride-1 convolution with the flipped kernel, padded by k - 1 - p (+ output_padding at the end)."""
        a = self.attrs(node)
        x, w, y = node.input[0], node.input[1], node.output[0]
        if w not in self.consts:
            self.fail(f"the weight {w!r} must be a constant (an initializer, or a DequantizeLinear of one)", where)
        xd, wd = self.shape(x, where), self.shape(w, where)
        if len(xd) != 4 or len(wd) != 4:
            self.fail(f"only 2-D transposed convolutions are supported (input {list(xd)}, weight {list(wd)})", where)
        self.batch(xd, x, where)
        if any(d != 1 for d in a.get("dilations", [1, 1])):
            self.fail(f"dilations {list(a['dilations'])} are not supported (only 1)", where)
        auto = a.get("auto_pad", b"NOTSET")
        if a.get("output_shape") is not None or (auto.decode() if isinstance(auto, bytes) else auto) != "NOTSET":
            self.fail("output_shape and auto_pad are not supported (give pads and output_padding)", where)
        g = int(a.get("group", 1))
        (_, c, h, wi), (ci, cog, kh, kw) = xd, wd
        if g < 1 or ci != c or ci % g:
            self.fail(f"weight {list(wd)} does not fit {c} input channels in {g} groups", where)
        sh, sw = (int(v) for v in a.get("strides", [1, 1]))
        pt, pl, pb, pr = (int(v) for v in a.get("pads", [0, 0, 0, 0]))
        oph, opw = (int(v) for v in a.get("output_padding", [0, 0]))
        if min(sh, sw) < 1 or min(pt, pl, pb, pr, oph, opw) < 0 or oph >= sh or opw >= sw:
            self.fail("strides must be >= 1, pads and output_padding >= 0, output_padding < stride", where)
        if max(pt, pb) > kh - 1 or max(pl, pr) > kw - 1:
            self.fail(f"pads {[pt, pl, pb, pr]} larger than kernel - 1 are not supported", where)
        in_bits, a_op = self.info(x, self.a_bits)
        w_bits, w_op = self.info(w, self.w_bits)
        name = node.name or y
        hd, wdd = (h - 1) * sh + 1, (wi - 1) * sw + 1
        if (sh, sw) != (1, 1):
            self.out.append(Workload(f"{name}_dilate", "dilate", "vector", n=self.n, k=c, c=c, h=h, w=wi, p=hd,
                                     q=wdd, in_bits=in_bits, out_bits=in_bits, in_elems=self.n * c * h * wi,
                                     out_elems=self.n * c * hd * wdd))
        pad = (kh - 1 - pt, kw - 1 - pl, kh - 1 - pb + oph, kw - 1 - pr + opw)
        p, q = _out(hd, kh, 1, pad[0], pad[2]), _out(wdd, kw, 1, pad[1], pad[3])
        has_bias = len(node.input) > 2 and bool(node.input[2])
        wl = Workload(name, "conv2d", "mac", n=self.n, g=g, k=cog, c=ci // g, p=p, q=q, r=kh, s=kw, h=hd, w=wdd,
                      pad=pad, in_bits=in_bits, w_bits=w_bits, a_op_bits=a_op, w_op_bits=w_op,
                      out_bits=self.out_bits(y), acc_bits=32, extra_weight_bits=32 * g * cog if has_bias else 0)
        self.out.append(replace(wl, events={"requants": wl.output_elems}))
        self.shapes[y] = (self.n, g * cog, p, q)
        self.foldable.add(y)

    def vector(self, node, op, where):
        y = node.output[0]
        xs = list(node.input[0:4:3]) if op == "QLinearAdd" else list(node.input) if op == "Add" else [node.input[0]]
        dims = [self.shape(x, where) for x in xs]
        if any(d != dims[0] for d in dims):
            self.fail(f"{op} needs equal input shapes (no broadcasting), got {[list(d) for d in dims]}", where)
        self.batch(dims[0], xs[0], where)
        elems = math.prod(dims[0])
        if op == "Clip":
            a = self.attrs(node)
            bounds = sum(1 for k in (1, 2) if len(node.input) > k and node.input[k]) + ("min" in a) + ("max" in a)
            if bounds == 0:              # Clip without bounds is the identity
                self.passthrough(node, op, where)
                return None
            events = {"compares": bounds * elems}
        elif op == "Relu":
            events = {"compares": elems}
        else:
            events = {"adds": elems, "requants": elems}
        if op == "QLinearAdd":
            self.qinfo[y] = (self.qbits(self.types.get(y)) or 8, self.zp_nonzero(node.input[7]
                                                                               if len(node.input) > 7 else ""))
        elif op != "Add" and xs[0] in self.qinfo:
            self.qinfo[y] = self.qinfo[xs[0]]
        self.shapes[y] = dims[0]
        sample = dims[0][1:]
        c, h, w = (tuple(sample) + (1, 1))[:3] if len(sample) in (1, 3) else (math.prod(sample), 1, 1)
        in_bits = max(self.info(x, self.a_bits)[0] for x in xs)
        out_bits = self.out_bits(y) if "Add" in op else in_bits
        return Workload(node.name or y, {"Relu": "relu", "Clip": "clip"}.get(op, "add"), "vector", n=self.n, k=c,
                        c=c, h=h, w=w, p=h, q=w, in_bits=in_bits, out_bits=out_bits, in_elems=elems * len(xs),
                        out_elems=elems, events=events)

    def view(self, node, op, where):
        y = node.output[0]
        xs = {"Concat": list(node.input), "QLinearConcat": list(node.input[2::3])}.get(op, [node.input[0]])
        dims = [self.shape(x, where) for x in xs]
        self.batch(dims[0], xs[0], where)
        if op in ("Concat", "QLinearConcat"):
            axis = int(self.attrs(node).get("axis", 1)) % len(dims[0])
            if axis == 0:
                self.fail("Concat along the batch axis is not supported", where)
            if any(len(d) != len(dims[0]) or d[:axis] + d[axis + 1:] != dims[0][:axis] + dims[0][axis + 1:]
                   for d in dims):
                self.fail(f"inputs {[list(d) for d in dims]} do not concatenate along axis {axis}", where)
            out = list(dims[0])
            out[axis] = sum(d[axis] for d in dims)
            self.shapes[y] = tuple(out)
        elif op == "Flatten":
            axis = int(self.attrs(node).get("axis", 1)) % (len(dims[0]) + 1)
            self.shapes[y] = (math.prod(dims[0][:axis]), math.prod(dims[0][axis:]))
        elif op == "Transpose":
            perm = [int(v) for v in self.attrs(node).get("perm", range(len(dims[0]) - 1, -1, -1))]
            if sorted(perm) != list(range(len(dims[0]))) or perm[0] != 0:
                self.fail(f"perm {perm} must permute the axes of a rank-{len(dims[0])} tensor and keep the batch "
                          "axis first", where)
            self.shapes[y] = tuple(dims[0][i] for i in perm)
        elif op in ("Squeeze", "Unsqueeze"):
            self.shapes[y] = _squeeze(op, dims[0], self.attrs(node).get("axes"),
                                      self.const(node.input[1]) if len(node.input) > 1 and node.input[1] else None)
        elif self.shapes.get(y) is None or None in self.shapes[y]:
            self.shapes[y] = _reshape(dims[0], self.const(node.input[1]))
        out = self.shape(y, where)       # Reshape: shape inference, else a constant target
        self.batch(out, y, where)
        if op == "QLinearConcat":
            self.qinfo[y] = (self.qbits(self.types.get(y)) or 8, self.zp_nonzero(node.input[1]))
        elif xs[0] in self.qinfo:
            self.qinfo[y] = self.qinfo[xs[0]]
        name = {"Flatten": "flatten", "Reshape": "reshape", "Squeeze": "reshape", "Unsqueeze": "reshape",
                "Transpose": "transpose"}.get(op, "concat")
        self.out.append(Workload(node.name or y, name, "view", n=self.n))


def _short_name(text, limit=40) -> str:
    text = repr(text)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _out(size, k, stride, before, after, ceil=False):
    span = size + before + after - k
    return (-(-span // stride) if ceil else span // stride) + 1


def _reshape(dims, target):
    """ONNX Reshape with a constant target (0 copies a dimension, one -1 is inferred); None when unknown."""
    if target is None:
        return None
    out = [dims[i] if t == 0 and i < len(dims) else int(t) for i, t in enumerate(target.reshape(-1).tolist())]
    if out.count(-1) == 1:
        known = math.prod(d for d in out if d != -1)
        out[out.index(-1)] = math.prod(dims) // known if known else None
    return tuple(out)


def _squeeze(op, dims, attr_axes, const_axes):
    """Squeeze / Unsqueeze output dimensions; None when the axes are unknown."""
    axes = attr_axes if const_axes is None else const_axes.reshape(-1).tolist()
    if op == "Squeeze":
        if axes is None:
            return tuple(d for d in dims if d != 1) if dims[0] != 1 else (1,) + tuple(d for d in dims[1:] if d != 1)
        axes = {int(a) % len(dims) for a in axes}
        return tuple(d for i, d in enumerate(dims) if i not in axes)
    if axes is None:
        return None
    rank = len(dims) + len(axes)
    axes = {int(a) % rank for a in axes}
    rest = iter(dims)
    return tuple(1 if i in axes else next(rest) for i in range(rank))


def _chw(dims):
    """(C, H, W) of a vector layer's [N, C, H, W] or [N, K] tensor (other ranks: all in C)."""
    sample = tuple(dims[1:])
    return (sample + (1, 1))[:3] if len(sample) in (1, 3) else (math.prod(sample) or 1, 1, 1)


def _dims_text(dims):
    return "unknown" if dims is None else "[" + ", ".join("?" if d is None else str(d) for d in dims) + "]"
