"""Concat along channels -> concat."""

from ...qonnx_import import Q
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

    def ort(self, node, imp):
        """QDQ: DQ inputs -> Concat, pending until its QuantizeLinear (each input rescaled to its encoding)."""
        xs = [imp.dq_input(n, node.where) for n in node.inputs]
        channel_axis(node, xs)
        imp.qdq_group(node, "concat", xs)

    def qonnx(self, node, imp):
        xs = [imp.get(n) for n in node.inputs]
        if int(node.attr("axis", 1)) != 1 or not all(isinstance(x, Q) for x in xs):
            node.fail("Concat is supported only along channels (axis 1) of quantized tensors")
        imp.emit(node, "concat", xs)


def channel_axis(node, xs):
    """Concat / QLinearConcat of quantized tensors xs: only along channels."""
    rank = len(xs[0].shape) + 1
    axis = int(node.attr("axis", 1))
    axis = axis + rank if axis < 0 else axis
    if axis != 1:
        node.fail(f"Concat along axis {axis}: hwsim concatenates along channels (axis 1) only")
