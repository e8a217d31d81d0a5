"""Clip (min / max as inputs since opset 11, as attributes before) -> clip with real bounds (ReLU6, ...)."""

import math

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
