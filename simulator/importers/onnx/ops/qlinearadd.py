"""QLinearAdd / QLinearMul (com.microsoft) of two quantized tensors (equal shapes or broadcasting per channel)
-> add (ORT's float32 rescale) / mul (MLAS QLinearMul arithmetic, units/elementwise.py)."""

from . import MS, handler

KINDS = {"QLinearAdd": "add", "QLinearMul": "mul"}


@handler("QLinearAdd", "QLinearMul", domain=MS)
class QLinearBinary:
    def ort(self, node, imp):
        inp = node.inputs
        a = imp.q_input(inp[0], inp[1], inp[2], node.where)
        b = imp.q_input(inp[3], inp[4], inp[5], node.where)
        imp.qlinear(node, KINDS[node.op_type], [a, b], imp.enc_like(inp[6], node.input(7), a, node.where))
