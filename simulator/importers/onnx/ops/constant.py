"""Constant -> a named constant for the nodes that read it (weights, shapes, bounds)."""

from ...import require
from . import handler


@handler("Constant")
class Constant:
    def to_float(self, node, fb):
        value = node.attr("value")
        if value is None:
            node.fail("only the 'value' form of Constant is supported")
        node.graph.consts[node.outputs[0]] = require("onnx").numpy_helper.to_array(value)

    def ort(self, node, imp):
        imp.values[node.outputs[0]] = ("const", _value(node))

    def qonnx(self, node, imp):
        imp.env[node.outputs[0]] = _value(node)


def _value(node):
    value = node.attr("value")
    if value is None:
        node.fail("only Constant nodes with a tensor 'value' are supported")
    return require("onnx").numpy_helper.to_array(value)
