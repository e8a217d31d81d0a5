"""Clip (min / max as inputs since opset 11, as attributes before) -> clip with real bounds (ReLU6, ...)."""

import math

from ...qonnx_import import Acc, describe
from ..frontend import as_float
from . import handler


@handler("Clip")
class Clip:
    def to_float(self, node, fb):
        node.only_attrs({"min": None, "max": None})
        bounds = [node.attr("min", -math.inf), node.attr("max", math.inf)]
        for i in (1, 2):
            v = node.const(i, ("min", "max")[i - 1], required=False)
            if v is not None:
                v = as_float(v, node, ("min", "max")[i - 1])
                if v.size != 1:
                    node.fail(f"{('min', 'max')[i - 1]} must be a scalar")
                bounds[i - 1] = float(v.reshape(()))
        if bounds[0] > bounds[1]:
            node.fail(f"min {bounds[0]} > max {bounds[1]}")
        fb.emit(node, "clip", [fb.tensor(node, 0)], {"min": bounds[0], "max": bounds[1]})

    def ort(self, node, imp):
        """Folded into the pending QDQ group before it, else a clip of DequantizeLinear codes."""
        lo, hi = node.attr("min", -math.inf), node.attr("max", math.inf)
        for k, name in ((1, "min"), (2, "max")):
            if node.input(k):
                v = imp.const(node.inputs[k], node.where, name).reshape(-1)
                if v.size != 1:
                    node.fail(f"Clip {name} must be a scalar")
                lo, hi = (float(v[0]), hi) if k == 1 else (lo, float(v[0]))
        imp.clip_op(node, float(lo), float(hi))

    def qonnx(self, node, imp):
        """Only between a MAC and its quantizer: a clip step of the activation chain."""
        x = imp.get(node.inputs[0])
        if not isinstance(x, Acc):
            node.fail(f"Clip on {describe(x)} is not supported (only between a MAC and its quantizer)")
        lo = float(imp.const(node.inputs[1], "min")) if node.input(1) else -math.inf
        hi = float(imp.const(node.inputs[2], "max")) if node.input(2) else math.inf
        x.steps.append(("clip", lo, hi))
        imp.env[node.outputs[0]] = x
