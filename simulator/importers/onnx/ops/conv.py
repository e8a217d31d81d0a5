"""Conv: 2-D convolution with groups, strides, pads / auto_pad -> conv2d."""

from ....encodings import BinaryAct
from ...qonnx_import import Q
from ..frontend import as_float
from . import handler
from ._window import window


def conv_attrs(node, kernel, in_hw) -> dict:
    """hwsim conv2d attributes (stride, padding, groups) of a Conv / QLinearConv whose weights have `kernel`."""
    ks = list(node.attr("kernel_shape", kernel))
    if ks != list(kernel):
        node.fail(f"kernel_shape {ks} does not match the weight {list(kernel)}")
    stride, padding = window(node, list(kernel), in_hw)
    return {"stride": stride, "padding": padding, "groups": int(node.attr("group", 1))}


@handler("Conv")
class Conv:
    def to_float(self, node, fb):
        node.only_attrs({"kernel_shape": None, "strides": None, "pads": None, "auto_pad": None, "group": None,
                         "dilations": None})
        x = fb.tensor(node, 0)
        shape = fb.shape(x)
        if len(shape) != 3:
            node.fail(f"needs a 4-D NCHW input, got a per-sample shape {list(shape)}")
        w = as_float(node.const(1, "weights W"), node, "weights W")
        if w.ndim != 4:
            node.fail(f"weights must be 4-D [Co, Ci/group, KH, KW], got {list(w.shape)}")
        kernel = list(node.attr("kernel_shape", w.shape[2:]))
        if kernel != list(w.shape[2:]):
            node.fail(f"kernel_shape {kernel} does not match the weights {list(w.shape)}")
        group = node.attr("group", 1)
        if group < 1 or shape[0] != w.shape[1] * group or w.shape[0] % group:
            node.fail(f"weights {list(w.shape)} with group={group} do not fit a {shape[0]}-channel input")
        b = node.const(2, "bias B", required=False)
        if b is not None:
            b = as_float(b, node, "bias B")
            if b.shape != (w.shape[0],):
                node.fail(f"bias must be [{w.shape[0]}], got {list(b.shape)}")
        stride, padding = window(node, kernel, shape[1:])
        fb.emit(node, "conv2d", [x], {"stride": stride, "padding": padding, "groups": group}, w, b)

    def ort(self, node, imp):
        """QDQ: DQ(x), DQ(w) [, DQ(b)] -> Conv, pending until its QuantizeLinear (ORT fuses it to QLinearConv)."""
        x = imp.dq_input(node.inputs[0], node.where)
        w = imp.weight(imp.dq_const(node.inputs[1], node.where, "weight"), node.where, "conv")
        b = imp.dq_const(node.input(2), node.where, "bias") if node.input(2) else None
        attrs = conv_attrs(node, w.codes.shape[2:], x.shape[1:] if len(x.shape) == 3 else (1, 1))
        bias = imp.bias(b, x.enc.scale, w, w.codes.shape[0], node.where)
        imp.qdq_group(node, "mac", [x], {"op": "conv2d", "w": w, "bias": bias, "attrs": attrs})

    def qonnx(self, node, imp):
        x = imp.get(node.inputs[0])
        codes, kind, units = imp.weights(node.inputs[1], 0, "Conv weights")
        if codes.ndim != 4:
            node.fail(f"only 2-D convolutions are supported, weight shape {list(codes.shape)}")
        auto_pad = node.text_attrs().get("auto_pad", "NOTSET")
        if auto_pad not in ("NOTSET", "VALID"):
            node.fail(f"auto_pad {auto_pad} is not supported; export explicit pads")
        stride, padding = window(node, codes.shape[2:], None)     # the input size only matters for SAME pads
        attrs = {"stride": stride, "padding": padding, "groups": int(node.attr("group", 1))}
        if isinstance(x, Q) and isinstance(x.enc, BinaryAct) and any(padding):
            attrs["binary_pad"] = "zero"        # ONNX pads with real 0: the XNOR PE's correction term
        bias = imp.bias(node.input(2), codes.shape[0]) if node.input(2) else None
        imp.mac(node, "conv2d", x, codes, kind, units, attrs, bias)
