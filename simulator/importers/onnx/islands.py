"""Float islands: elementwise float ops between one quantized tensor's DequantizeLinear and a QuantizeLinear.

ONNX Runtime computes such a chain (HardSwish, HardSigmoid, Sigmoid, a constant Mul / Div / Add, an unfolded
BatchNormalization, ...) in float32, or fuses it into a table-based contrib op (QLinearSigmoid, QLinearLeakyRelu).
Either way the output code is a function of the input code alone (and of the channel, where a constant differs
per channel): exactly a table of 2^bits output codes, which is also how integer accelerators build these
functions. The importer makes it a `lut` layer whose table is what ONNX Runtime itself computes: the island's
own nodes (with their DequantizeLinear and QuantizeLinear) are run once in ONNX Runtime on every input code of
every channel. That is exact by construction, whatever kernel (MLAS' logistic, tanh or erf approximations, a
fused lookup table) ORT picks, since the same nodes get the same fusions.

A QOperator node with one quantized input and output and no state (QLinearSigmoid, QLinearLeakyRelu, ...) is
tabulated the same way.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ...errors import HwsimError
from .. import require

# Elementwise ops an island may hold: each output element depends on the input element at the same position
# (and on constants that broadcast per channel at most, which `tabulate` checks).
ISLAND_OPS = {"Mul", "Add", "Sub", "Div", "Pow", "Sqrt", "Neg", "Abs", "Reciprocal", "Exp", "Log", "Erf", "Tanh",
              "Sigmoid", "HardSigmoid", "HardSwish", "Relu", "LeakyRelu", "PRelu", "Elu", "Selu", "Celu",
              "Softplus", "Softsign", "Gelu", "Mish", "Clip", "Min", "Max", "BatchNormalization", "Identity",
              "Floor", "Ceil", "Round", "Sin", "Cos"}
# Ops that start an island from a DequantizeLinear output. Relu and Clip are not among them: on their own they
# commute with quantization and become exact relu / clip layers (they still extend an island already open).
START_OPS = ISLAND_OPS - {"Relu", "Clip", "Identity"}
MAX_TABLE_ENTRIES = 1 << 24   # channels x codes of one table


@dataclass
class Island:
    """Float ops on one quantized tensor: `source` (a QT), its DequantizeLinear outputs, the nodes so far."""
    source: object
    dq_names: set
    nodes: list = field(default_factory=list)
    where: str = ""

    def extend(self, node_proto, dq_names=()) -> "Island":
        return Island(self.source, self.dq_names | set(dq_names), self.nodes + [node_proto], self.where)


def island_inputs(node, imp):
    """(source QT, dq names, islands) of a node whose every non-constant input is the DequantizeLinear of one
    quantized tensor or an island of it; None when the node is not a float island step."""
    sources, dq_names, islands = [], set(), []
    for name in node.inputs:
        if not name:
            continue
        kind, payload = imp.values.get(name, (None, None))
        if kind in ("const", "dqconst"):
            continue
        if kind == "dq":
            sources.append(payload)
            dq_names.add(name)
        elif kind == "island":
            sources.append(payload.source)
            islands.append(payload)
        else:
            return None
    if not sources or any(s is not sources[0] for s in sources):
        return None
    return sources[0], dq_names, islands


def island_step(node, imp) -> bool:
    """Open or extend a float island with `node`; False when the node is not one (its handler reads it)."""
    if (node.proto.domain or "") not in ("", "ai.onnx") or node.op_type not in ISLAND_OPS:
        return False
    found = island_inputs(node, imp)
    if found is None:
        return False
    source, dq_names, islands = found
    if not islands and node.op_type not in START_OPS:
        return False
    if len(node.outputs) != 1 and not (node.op_type == "BatchNormalization" and not any(node.outputs[1:])):
        node.fail("a float island op must have a single output")
    if islands:
        base = islands[0]
        for other in islands[1:]:
            base = Island(base.source, base.dq_names | other.dq_names,
                          base.nodes + [n for n in other.nodes if n not in base.nodes], base.where)
        island = base.extend(node.proto, dq_names)
    else:
        island = Island(source, set(dq_names), [node.proto], node.where)
    imp.values[node.outputs[0]] = ("island", island)
    return True


def _synthetic_codes(enc, shape):
    """Every code of `enc` in every channel: [codes, C, 1, 1] for a [C, H, W] tensor, [codes, K] for [K]."""
    lo, hi = enc.code_range()
    codes = np.arange(lo, hi + 1, dtype=np.int64)
    channels = shape[0]
    tail = (1,) * (len(shape) - 1)
    return np.broadcast_to(codes.reshape((-1, 1) + tail), (codes.size, channels) + tail), codes.size


def tabulate(imp, nodes, source, dq_names, q_node, out_enc, where, feed="hwsim_codes") -> np.ndarray:
    """Run the island `nodes` (ending with the QuantizeLinear `q_node`, whose output is the island's code)
    in ONNX Runtime on every input code of every channel; returns the table [1 or C, codes]. A QOperator node
    that reads codes itself comes as `q_node` alone, with `feed` its input's name. With `q_node` None the island
    ends in float: the table holds the float32 results' bit patterns (int32)."""
    onnx = require("onnx")
    ort = require("onnxruntime")
    helper, numpy_helper = onnx.helper, onnx.numpy_helper
    enc, shape = source.enc, source.shape
    if shape[0] * (1 << enc.bits) > MAX_TABLE_ENTRIES:
        imp.fail(f"a lookup table of {shape[0]} channels x {1 << enc.bits} codes is too large", where)
    codes, n_codes = _synthetic_codes(enc, shape)
    dtype = np.int8 if enc.signed else np.uint8
    inits = [numpy_helper.from_array(np.array(enc.scale, dtype=np.float32), "hwsim_scale"),
             numpy_helper.from_array(np.array(enc.zero_point, dtype=dtype), "hwsim_zp")]
    graph_nodes = [helper.make_node("DequantizeLinear", ["hwsim_codes", "hwsim_scale", "hwsim_zp"], [name])
                   for name in sorted(dq_names)]
    graph_nodes += list(nodes) + ([q_node] if q_node is not None else [])
    produced = {n for node in graph_nodes for n in node.output} | {t.name for t in inits}
    for name in sorted({n for node in graph_nodes for n in node.input if n} - produced - {feed}):
        kind, payload = imp.values.get(name, (None, None))
        if kind == "const":
            inits.append(numpy_helper.from_array(np.asarray(payload), name))
        elif kind == "dqconst":   # a quantized constant operand: its codes and their DequantizeLinear
            qc = payload
            axis = {} if qc.axis is None else {"axis": int(qc.axis)}
            zp = qc.zp.astype(qc.codes.dtype)
            inits += [numpy_helper.from_array(qc.codes, name + "_hwsim_q"),
                      numpy_helper.from_array(qc.scale.astype(np.float32) if qc.scale.size > 1
                                              else np.float32(qc.scale[0]), name + "_hwsim_s"),
                      numpy_helper.from_array(zp if zp.size > 1 else zp.reshape(()), name + "_hwsim_z")]
            graph_nodes.insert(0, helper.make_node("DequantizeLinear", [name + "_hwsim_q", name + "_hwsim_s",
                                                                        name + "_hwsim_z"], [name], **axis))
        else:
            imp.fail(f"the float island reads {name!r}, which is neither a constant nor its quantized input", where)
    x_info = helper.make_tensor_value_info(feed, onnx.TensorProto.INT8 if enc.signed
                                           else onnx.TensorProto.UINT8, list(codes.shape))
    out_name = (q_node if q_node is not None else nodes[-1]).output[0]
    out_type = (onnx.TensorProto.FLOAT if q_node is None else onnx.TensorProto.INT8 if out_enc.signed
                else onnx.TensorProto.UINT8)
    y_info = helper.make_tensor_value_info(out_name, out_type, None)
    graph = helper.make_graph(graph_nodes, "hwsim_island", [x_info], [y_info], inits)
    model = helper.make_model(graph, opset_imports=list(imp.proto.opset_import))
    model.ir_version = imp.proto.ir_version
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.log_severity_level = 3
    try:
        session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
        out = session.run(None, {feed: np.ascontiguousarray(codes.astype(dtype))})[0]
    except Exception as exc:  # ORT's own reason: an op it cannot run, a constant that does not broadcast, ...
        detail = str(exc).strip().splitlines()[-1][:200] if str(exc).strip() else type(exc).__name__
        raise HwsimError(f"ONNX Runtime cannot evaluate this float island ({len(nodes)} op(s): "
                         f"{', '.join(n.op_type for n in nodes)[:120]}): {detail}", field=where) from None
    out = np.asarray(out)
    if out.shape != codes.shape:
        imp.fail(f"the float island ({', '.join(n.op_type for n in nodes)[:120]}) is not elementwise per channel: "
                 f"a constant varies over positions (output {list(out.shape)} for input {list(codes.shape)})",
                 where)
    if q_node is None:
        out = np.ascontiguousarray(out, dtype=np.float32).view(np.int32)
    table = out.reshape(n_codes, shape[0]).T.astype(np.int64)
    if np.all(table == table[:1]):
        table = table[:1]
    return table
