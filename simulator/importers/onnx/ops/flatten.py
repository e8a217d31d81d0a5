"""Flatten (axis 1) -> flatten."""

from . import handler


@handler("Flatten")
class Flatten:
    def to_float(self, node, fb):
        node.only_attrs({"axis": 1})
        fb.emit(node, "flatten", [fb.tensor(node, 0)])
