"""Concat along channels -> concat."""

from . import handler


@handler("Concat")
class Concat:
    def to_float(self, node, fb):
        node.only_attrs({"axis": None})
        xs = [fb.tensor(node, i) for i in range(len(node.inputs))]
        rank = len(fb.shape(xs[0])) + 1
        if node.attr("axis") not in (1, 1 - rank):
            node.fail(f"only axis 1 (channels) is supported, got {node.attr('axis')}")
        fb.emit(node, "concat", xs)
