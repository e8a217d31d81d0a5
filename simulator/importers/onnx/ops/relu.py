"""Relu -> relu (the quantizer fuses it into the layer before when it can)."""

from . import handler


@handler("Relu")
class Relu:
    def to_float(self, node, fb):
        node.only_attrs({})
        fb.emit(node, "relu", [fb.tensor(node, 0)])
