"""Relu -> relu (the quantizer fuses it into the layer before when it can)."""

import math

from ....encodings import BinaryAct
from ...qonnx_import import Acc, AddPending, Q, describe
from . import handler


@handler("Relu")
class Relu:
    def to_float(self, node, fb):
        node.only_attrs({})
        fb.emit(node, "relu", [fb.tensor(node, 0)])

    def ort(self, node, imp):
        """Folded into the pending QDQ group before it, else a relu of DequantizeLinear codes."""
        imp.clip_op(node, 0.0, math.inf)

    def qonnx(self, node, imp):
        """A relu step of a MAC's or a residual add's chain; on a quantized tensor a relu layer (if it can bite)."""
        x = imp.get(node.inputs[0])
        if isinstance(x, Acc):
            x.steps.append(("relu",))
            imp.env[node.outputs[0]] = x
        elif isinstance(x, AddPending):
            imp.env[node.outputs[0]] = AddPending(x.a, x.b, relu=True)
        elif isinstance(x, Q):
            if isinstance(x.enc, BinaryAct):
                node.fail("ReLU of binary activations is not defined")
            if x.enc.value_range()[0] >= 0:
                imp.env[node.outputs[0]] = x          # already non-negative
            else:
                imp.emit(node, "relu", [x])
        else:
            node.fail(f"Relu on {describe(x)} is not supported")
