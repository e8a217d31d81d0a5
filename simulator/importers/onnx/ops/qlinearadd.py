"""QLinearAdd (com.microsoft) of two quantized tensors (equal shapes or broadcasting per channel) -> add (ORT's float32 rescale)."""

from . import MS, handler


@handler("QLinearAdd", domain=MS)
class QLinearAdd:
    def ort(self, node, imp):
        inp = node.inputs
        a = imp.q_input(inp[0], inp[1], inp[2], node.where)
        b = imp.q_input(inp[3], inp[4], inp[5], node.where)
        imp.qlinear(node, "add", [a, b], imp.enc_like(inp[6], node.input(7), a, node.where))
