"""MaxPool, AveragePool, GlobalAveragePool -> maxpool / avgpool."""

from ....encodings import UniformAct
from ....graph import Layer
from ...qonnx_import import Acc, AvgPending, Q, describe
from . import handler
from ._window import window


def _pool(node, fb, op, ceil_ok, extra):
    x = fb.tensor(node, 0)
    shape = fb.shape(x)
    if len(shape) != 3:
        node.fail(f"needs a 4-D NCHW input, got a per-sample shape {list(shape)}")
    kernel = list(node.attr("kernel_shape", []))
    if not kernel:
        node.fail("kernel_shape is required")
    stride, padding = window(node, kernel, shape[1:], ceil_ok=ceil_ok, pool=True)
    fb.emit(node, op, [x], dict({"kernel": kernel, "stride": stride, "padding": padding}, **extra))


def ort_pool_attrs(node, q) -> dict:
    """kernel / stride / padding of a (QLinear) pool on the quantized tensor q."""
    if len(q.shape) != 3:
        node.fail(f"pooling needs a [C, H, W] input, got {list(q.shape)}")
    if len(node.outputs) > 1 and node.outputs[1]:
        node.fail("MaxPool's Indices output is not supported")
    kernel = [int(k) for k in node.attr("kernel_shape", [])]
    stride, padding = window(node, kernel, q.shape[1:], pool=True)
    return {"kernel": kernel, "stride": stride, "padding": padding}


def qonnx_pool_attrs(node, avg=False) -> dict:
    auto_pad = node.text_attrs().get("auto_pad", "NOTSET")
    if auto_pad not in ("NOTSET", "VALID"):
        node.fail("auto_pad pooling is not supported; export explicit pads")
    kernel = list(node.attrs()["kernel_shape"])      # required: a KeyError reports a malformed node
    stride, padding = window(node, kernel, None, pool=True)  # the input size only matters for SAME pads
    out = {"kernel": kernel, "stride": stride, "padding": padding}
    if avg:
        out["count_include_pad"] = bool(node.attr("count_include_pad", 0))
    return out


@handler("MaxPool")
class MaxPool:
    def to_float(self, node, fb):
        node.only_attrs({"kernel_shape": None, "strides": None, "pads": None, "auto_pad": None, "ceil_mode": None,
                         "dilations": None, "storage_order": 0})
        if len(node.outputs) > 1 and node.outputs[1]:
            node.fail("the Indices output is not supported")
        _pool(node, fb, "maxpool", True, {})

    def ort(self, node, imp):
        """Max pooling of 8-bit codes: it commutes with dequantization (QOperator and QDQ alike)."""
        def build(x):
            attrs = ort_pool_attrs(node, x)
            return imp.add_layer(Layer(imp.new_name(node.outputs[0]), "maxpool", [x.name], attrs), [x], node.where)
        imp.on_codes(node, build)

    def qonnx(self, node, imp):
        """On codes; between a MAC and its quantizer it moves after the quantizer (it commutes with it)."""
        x = imp.get(node.inputs[0])
        if len(node.outputs) > 1 and node.outputs[1]:
            node.fail("MaxPool indices output is not supported")
        attrs = qonnx_pool_attrs(node)
        if isinstance(x, Acc):
            x.pools.append((node.proto.name, attrs))
            imp.env[node.outputs[0]] = x
        elif isinstance(x, Q):
            imp.emit(node, "maxpool", [x], attrs, rank=3)
        else:
            node.fail(f"MaxPool on {describe(x)} is not supported")


@handler("AveragePool")
class AveragePool:
    def to_float(self, node, fb):
        node.only_attrs({"kernel_shape": None, "strides": None, "pads": None, "auto_pad": None, "ceil_mode": 0,
                         "count_include_pad": None, "dilations": None})
        _pool(node, fb, "avgpool", False, {"count_include_pad": bool(node.attr("count_include_pad", 0))})

    def ort(self, node, imp):
        """QDQ: pending until its QuantizeLinear (ORT fuses it to QLinearAveragePool)."""
        x = imp.dq_input(node.inputs[0], node.where)
        attrs = ort_pool_attrs(node, x)
        attrs["count_include_pad"] = bool(node.attr("count_include_pad", 0))
        imp.qdq_group(node, "avgpool", [x], attrs)

    def qonnx(self, node, imp):
        """Pending until the Quant that keeps its encoding, or the Mul -> Trunc of a TruncAvgPool."""
        x = imp.get(node.inputs[0])
        if not isinstance(x, Q) or not isinstance(x.enc, UniformAct):
            node.fail(f"AveragePool on {describe(x)} is not supported (only on uniform quantized tensors)")
        attrs = qonnx_pool_attrs(node, avg=True)
        imp.env[node.outputs[0]] = AvgPending(x, attrs, attrs["kernel"][0] * attrs["kernel"][1])


@handler("GlobalAveragePool")
class GlobalAveragePool:
    def to_float(self, node, fb):
        node.only_attrs({})
        x = fb.tensor(node, 0)
        shape = fb.shape(x)
        if len(shape) != 3:
            node.fail(f"needs a 4-D NCHW input, got a per-sample shape {list(shape)}")
        fb.emit(node, "avgpool", [x], {"kernel": list(shape[1:]), "stride": list(shape[1:]),
                                       "padding": [0, 0, 0, 0], "global": True, "count_include_pad": True})

    def ort(self, node, imp):
        kind, payload = imp.lookup(node.inputs[0], node.where)
        if kind == "island":
            # ORT computes the float island and this pooling in float32 (a QOperator model leaves HardSwish
            # unquantized): a table of the island's float32 results, averaged in float32 (lut_avgpool)
            from ..islands import tabulate
            if len(payload.source.shape) != 3:
                node.fail(f"pooling needs a [C, H, W] input, got {list(payload.source.shape)}")
            table = tabulate(imp, payload.nodes, payload.source, payload.dq_names, None, None, node.where)
            imp.qdq_group(node, "lut_avgpool", [payload.source], {"table": table,
                                                                   "ops": [n.op_type for n in payload.nodes]})
            return
        x = imp.dq_input(node.inputs[0], node.where)
        if len(x.shape) != 3:
            node.fail(f"pooling needs a [C, H, W] input, got {list(x.shape)}")
        imp.qdq_group(node, "avgpool", [x], {"global": True})

    def qonnx(self, node, imp):
        x = imp.get(node.inputs[0])
        if not isinstance(x, Q) or not isinstance(x.enc, UniformAct):
            node.fail(f"GlobalAveragePool on {describe(x)} is not supported")
        c, h, w = imp.shapes()[x.name]
        imp.env[node.outputs[0]] = AvgPending(x, {"global": True}, h * w)
