"""Sub (QONNX): (MAC output) - constant -> folded into the MAC's activation chain."""

from fractions import Fraction

from . import handler


@handler("Sub")
class Sub:
    def qonnx(self, node, imp):
        acc, c, swapped = imp.acc_and_const(node)
        if acc is None or swapped:
            node.fail("Sub is supported only as (MAC output) - constant")
        v = imp.channel_vector(acc, c, "Sub")
        imp.fold(node, acc, [Fraction(1)] * len(v), [-t for t in v])
