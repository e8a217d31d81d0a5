"""Div: (MAC output) / constant -> folded into the layer's weights and bias (float reader) or, for positive
divisors, its activation chain (QONNX)."""

from fractions import Fraction

from . import handler
from ._fold import fold_constant


@handler("Div")
class Div:
    def to_float(self, node, fb):
        node.only_attrs({})
        fold_constant(node, fb, "div")

    def qonnx(self, node, imp):
        acc, c, swapped = imp.acc_and_const(node)
        if acc is None or swapped:
            node.fail("Div is supported only as (MAC output) / constant")
        v = imp.channel_vector(acc, c, "Div")
        if any(t <= 0 for t in v):
            node.fail("Div after a MAC needs positive divisors")
        imp.fold(node, acc, [1 / t for t in v], [Fraction(0)] * len(v))
