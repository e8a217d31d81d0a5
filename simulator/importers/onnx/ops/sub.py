"""Sub: (MAC output) - constant -> folded into the layer's bias (float reader) or activation chain (QONNX)."""

from fractions import Fraction

from . import handler
from ._fold import fold_constant


@handler("Sub")
class Sub:
    def to_float(self, node, fb):
        node.only_attrs({})
        fold_constant(node, fb, "sub")

    def qonnx(self, node, imp):
        acc, c, swapped = imp.acc_and_const(node)
        if acc is None or swapped:
            node.fail("Sub is supported only as (MAC output) - constant")
        v = imp.channel_vector(acc, c, "Sub")
        imp.fold(node, acc, [Fraction(1)] * len(v), [-t for t in v])
