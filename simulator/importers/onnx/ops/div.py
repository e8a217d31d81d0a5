"""Div (QONNX): (MAC output) / positive constant -> folded into the MAC's activation chain."""

from fractions import Fraction

from . import handler


@handler("Div")
class Div:
    def qonnx(self, node, imp):
        acc, c, swapped = imp.acc_and_const(node)
        if acc is None or swapped:
            node.fail("Div is supported only as (MAC output) / constant")
        v = imp.channel_vector(acc, c, "Div")
        if any(t <= 0 for t in v):
            node.fail("Div after a MAC needs positive divisors")
        imp.fold(node, acc, [1 / t for t in v], [Fraction(0)] * len(v))
