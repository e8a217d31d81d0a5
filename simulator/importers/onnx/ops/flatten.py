"""Flatten (axis 1) -> flatten."""

import math

from . import handler


@handler("Flatten")
class Flatten:
    def to_float(self, node, fb):
        node.only_attrs({"axis": 1})
        x, order = fb.flatten_input(node)
        flat = fb.emit(node, "flatten", [x])
        if order is not None:
            fb.flat_order[flat.name] = order

    def ort(self, node, imp):
        """A reshape of 8-bit codes (QOperator) or of a DequantizeLinear's input (QDQ)."""
        def build(x):
            axis = node.attr("axis", 1)
            if imp.norm_axis(axis, len(x.shape) + 1) != 1:
                node.fail(f"Flatten axis {axis}: hwsim keeps the batch axis, only axis 1 is supported")
            return imp.reshape(x, (math.prod(x.shape),), node.where, node.outputs[0])
        imp.on_codes(node, build)

    def qonnx(self, node, imp):
        x = imp.get(node.inputs[0])
        if int(node.attr("axis", 1)) != 1:
            node.fail("Flatten must use axis 1")
        imp.flatten(node, x)
