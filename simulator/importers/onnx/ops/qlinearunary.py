"""QOperator elementwise ops of one quantized tensor (com.microsoft QLinearSigmoid, QLinearLeakyRelu, and
QLinearSoftsign...) -> a lut layer whose table ONNX Runtime computes on every input code (islands.py)."""

from . import MS, handler


@handler("QLinearSigmoid", "QLinearLeakyRelu", "QLinearSoftsign", domain=MS)
class QLinearUnary:
    def ort(self, node, imp):
        inp = node.inputs
        x = imp.q_input(inp[0], inp[1], inp[2], node.where)
        enc = imp.enc_like(inp[3], node.input(4), x, node.where)
        imp.forms.add("QOperator")
        imp.values[node.outputs[0]] = ("q", imp.lut_layer([], x, set(), node.proto, enc, node.where, feed=inp[0]))
