"""Mul by a per-channel constant after a conv / dense: float reader -> folded into its weights and bias; QONNX
-> (positive factors) folded into its activation chain, or an AveragePool times its window size -> the sum of a
TruncAvgPool. In a quantized ONNX Runtime model: of two quantized tensors (squeeze-and-excitation gating) -> a
mul layer (ORT fuses the QDQ group to QLinearMul); of one tensor and constants -> a float island (islands.py)."""

from fractions import Fraction

import numpy as np

from ...qonnx_import import AvgPending, describe
from . import handler
from ._fold import fold_constant


@handler("Mul")
class Mul:
    def to_float(self, node, fb):
        node.only_attrs({})
        fold_constant(node, fb, "mul")

    def ort(self, node, imp):
        """DQ(a) * DQ(b) of two quantized tensors, pending until its QuantizeLinear (QLinearMul)."""
        node.only_attrs({})
        xs = [imp.dq_input(n, node.where) for n in node.inputs]
        if len(xs) != 2:
            node.fail(f"Mul needs 2 inputs, got {len(xs)}")
        imp.qdq_group(node, "mul", xs)

    def qonnx(self, node, imp):
        acc, c, _ = imp.acc_and_const(node)
        if acc is not None:
            v = imp.channel_vector(acc, c, "Mul")
            if any(t <= 0 for t in v):
                node.fail("Mul after a MAC needs positive factors (a negative one flips the comparators)")
            imp.fold(node, acc, v, [Fraction(0)] * len(v))
            return
        a, b = (imp.get(n) for n in node.inputs[:2])
        p, c = (a, b) if isinstance(a, AvgPending) else (b, a)
        if isinstance(p, AvgPending) and isinstance(c, np.ndarray) and c.size == 1 and float(c.ravel()[0]) == p.window:
            imp.env[node.outputs[0]] = AvgPending(p.q, p.attrs, p.window, summed=True)
            return
        node.fail(f"Mul of {describe(a)} and {describe(b)} is not supported")
