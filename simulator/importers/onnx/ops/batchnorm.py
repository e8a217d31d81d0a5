"""BatchNormalization (inference form) -> folded into the conv2d / dense that produces its input."""

from fractions import Fraction

import numpy as np

from ...qonnx_import import Acc, describe
from ..frontend import as_float
from . import handler


@handler("BatchNormalization")
class BatchNormalization:
    def to_float(self, node, fb):
        node.only_attrs({"epsilon": None, "momentum": None, "training_mode": 0, "spatial": 1})
        x = fb.tensor(node, 0)
        prev = fb.graph.producer(x)
        if prev is None or prev.op not in ("conv2d", "dense") or not fb.only_consumer(node, 0):
            node.fail("BatchNormalization is folded into the Conv / Gemm before it: its input must be the output "
                      "of a Conv, Gemm or MatMul used by nothing else")
        co = prev.weight.shape[0]
        gamma, beta, mean, var = (as_float(node.const(i, what), node, what)
                                  for i, what in enumerate(("scale", "B", "mean", "var"), start=1))
        for what, v in zip(("scale", "B", "mean", "var"), (gamma, beta, mean, var)):
            if v.shape != (co,):
                node.fail(f"{what} must be [{co}], got {list(v.shape)}")
        if np.any(var < 0):
            node.fail("var has negative entries")
        k = gamma / np.sqrt(var + float(node.attr("epsilon", 1e-5)))
        prev.weight = prev.weight * k.reshape((-1,) + (1,) * (prev.weight.ndim - 1))
        bias = np.zeros(co) if prev.bias is None else prev.bias
        prev.bias = (bias - mean) * k + beta
        fb.alias(node, x)

    def qonnx(self, node, imp):
        """Folded into the activation chain of the MAC before it (a positive per-channel affine map)."""
        acc = imp.get(node.inputs[0])
        if not isinstance(acc, Acc):
            node.fail(f"BatchNormalization on {describe(acc)} is not supported (only after a conv / dense layer)")
        gamma, beta, mean, var = (imp.const(n, "batch-norm parameter").astype(np.float64) for n in node.inputs[1:5])
        eps = float(np.float32(node.attr("epsilon", 1e-5)))
        with np.errstate(all="ignore"):
            a = gamma / np.sqrt(var + eps)
            b = beta - mean * a
        if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
            node.fail("batch-norm parameters give a non-finite factor or offset")
        if np.any(a <= 0):
            node.fail("batch norm with a non-positive factor (gamma / sqrt(var + eps)) is not supported")
        co = acc.layer.weight.shape[0]
        if a.shape != (co,) or b.shape != (co,):
            node.fail(f"batch-norm parameters must have {co} entries, got {list(a.shape)}")
        imp.fold(node, acc, [Fraction(float(v)) for v in a], [Fraction(float(v)) for v in b])
