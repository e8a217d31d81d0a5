"""QLinearMatMul (QOperator) -> dense with ORT's float32 requantization."""

from . import handler


@handler("QLinearMatMul")
class QLinearMatMul:
    def ort(self, node, imp):
        imp.forms.add("QOperator")
        where = node.where
        inp = node.inputs
        x = imp.q_input(inp[0], inp[1], inp[2], where)
        w = imp.weight(imp.q_weight(inp[3], inp[4], inp[5], where, 1), where, "dense")
        enc = imp.enc_like(inp[6], inp[7], x, where)
        imp.values[node.outputs[0]] = ("q", imp.mac_layer(where, node.outputs[0], x, w, None, enc, "dense", {}))
