"""QLinearSoftmax (com.microsoft), and DequantizeLinear -> Softmax -> QuantizeLinear (which ORT fuses into it)
-> softmax with ORT's table arithmetic (units/elementwise.py qlinear_softmax), over the last axis of [N, K]."""

from ....graph import Layer
from . import MS, handler


def softmax_axis_ok(node, x):
    axis = int(node.attr("axis", -1 if int(node.attr("opset", 13)) >= 13 else 1))
    if len(x.shape) != 1 or axis not in (-1, 1):
        node.fail(f"Softmax is supported over the last axis of an [N, K] tensor, got axis {axis} on a sample of "
                  f"shape {list(x.shape)}")


@handler("QLinearSoftmax", domain=MS)
class QLinearSoftmax:
    def ort(self, node, imp):
        inp = node.inputs
        x = imp.q_input(inp[0], inp[1], inp[2], node.where)
        softmax_axis_ok(node, x)
        enc = imp.enc_like(inp[3], node.input(4), x, node.where)
        imp.forms.add("QOperator")
        lay = Layer(imp.new_name(node.outputs[0]), "softmax", [x.name], {"arithmetic": "ort_qlinear"}, enc)
        imp.values[node.outputs[0]] = ("q", imp.add_layer(lay, [x], node.where))
