"""QLinearConcat (com.microsoft) along channels -> a rescale per input that needs one, then concat."""

from . import MS, handler
from .concat import channel_axis


@handler("QLinearConcat", domain=MS)
class QLinearConcat:
    def ort(self, node, imp):
        inp = node.inputs
        if len(inp) < 5 or (len(inp) - 2) % 3:
            node.fail("QLinearConcat takes Y_scale, Y_zero_point, then (tensor, scale, zero point) triples")
        xs = [imp.q_input(inp[i], inp[i + 1], inp[i + 2], node.where) for i in range(2, len(inp), 3)]
        channel_axis(node, xs)
        imp.qlinear(node, "concat", xs, imp.enc_like(inp[0], inp[1], xs[0], node.where))
