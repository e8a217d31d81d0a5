"""QLinearConv (QOperator; also registered under com.microsoft) -> conv2d with ORT's float32 requantization."""

from . import MS, handler
from .conv import conv_attrs


@handler("QLinearConv", domain=("", MS))
class QLinearConv:
    def ort(self, node, imp):
        imp.forms.add("QOperator")
        where = node.where
        inp = node.inputs + [""] * (9 - len(node.inputs))
        x = imp.q_input(inp[0], inp[1], inp[2], where)
        w = imp.weight(imp.q_weight(inp[3], inp[4], inp[5], where, 0), where, "conv")
        enc = imp.enc_like(inp[6], inp[7], x, where)
        if node.attr("channels_last", 0):
            node.fail("channels_last QLinearConv is not supported")
        attrs = conv_attrs(node, w.codes.shape[2:], x.shape[1:] if len(x.shape) == 3 else (1, 1))
        bias = imp.q_bias(inp[8], where, w.codes.shape[0])
        imp.values[node.outputs[0]] = ("q", imp.mac_layer(where, node.outputs[0], x, w, bias, enc, "conv2d", attrs))
