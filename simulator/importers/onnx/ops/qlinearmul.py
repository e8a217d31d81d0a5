"""QLinearMul (com.microsoft) of two quantized tensors -> mul (MLAS QLinearMul arithmetic, units/elementwise.py)."""

from . import MS, handler


@handler("QLinearMul", domain=MS)
class QLinearMul:
    def ort(self, node, imp):
        inp = node.inputs
        a = imp.q_input(inp[0], inp[1], inp[2], node.where)
        b = imp.q_input(inp[3], inp[4], inp[5], node.where)
        imp.qlinear(node, "mul", [a, b], imp.enc_like(inp[6], node.input(7), a, node.where))
