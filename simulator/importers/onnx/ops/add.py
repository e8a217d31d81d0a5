"""Add: of two activations -> add (residual); of an activation and a constant -> the bias of the layer before."""

from fractions import Fraction

from ...qonnx_import import AddPending, Q, describe
from . import handler
from ._fold import fold_constant


@handler("Add")
class Add:
    def to_float(self, node, fb):
        node.only_attrs({})
        if len(node.inputs) != 2:
            node.fail(f"needs 2 inputs, got {len(node.inputs)}")
        consts = [node.is_const(i) for i in (0, 1)]
        if not any(consts):
            fb.emit(node, "add", [fb.tensor(node, 0), fb.tensor(node, 1)])
            return
        if all(consts):
            node.fail("adds two constants (constant folding of this op is not supported)")
        fold_constant(node, fb, "add")

    def ort(self, node, imp):
        """QDQ residual: DQ(a) + DQ(b), pending until its QuantizeLinear (ORT fuses it to QLinearAdd)."""
        xs = [imp.dq_input(n, node.where) for n in node.inputs]
        if len(xs) != 2:
            node.fail(f"Add needs 2 inputs, got {len(xs)}")
        imp.qdq_group(node, "add", xs)   # shapes: equal, or broadcasting per channel (checked by the add layer)

    def qonnx(self, node, imp):
        """A constant after a MAC folds into its activation chain; two quantized tensors: a residual add."""
        acc, c, _ = imp.acc_and_const(node)
        if acc is not None:
            v = imp.channel_vector(acc, c, "Add")
            imp.fold(node, acc, [Fraction(1)] * len(v), v)
            return
        a, b = (imp.get(n) for n in node.inputs[:2])
        if not (isinstance(a, Q) and isinstance(b, Q)):
            node.fail(f"Add of {describe(a)} and {describe(b)} is not supported")
        imp.env[node.outputs[0]] = AddPending(a, b)
