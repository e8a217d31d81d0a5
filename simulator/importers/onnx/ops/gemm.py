"""Gemm (Y = alpha * A B + beta * C) and MatMul by a constant matrix -> dense."""

import numpy as np

from ..frontend import as_float
from . import handler


@handler("Gemm")
class Gemm:
    def to_float(self, node, fb):
        node.only_attrs({"alpha": None, "beta": None, "transA": 0, "transB": None})
        x = fb.tensor(node, 0)
        if len(fb.shape(x)) != 1:
            node.fail(f"needs a 2-D [N, K] input, got a per-sample shape {list(fb.shape(x))} (Flatten first)")
        b = as_float(node.const(1, "matrix B"), node, "matrix B")
        if b.ndim != 2:
            node.fail(f"matrix B must be 2-D, got {list(b.shape)}")
        w = b if node.attr("transB", 0) else b.T
        w = w * float(node.attr("alpha", 1.0))
        c = node.const(2, "bias C", required=False)
        if c is not None:
            c = as_float(c, node, "bias C") * float(node.attr("beta", 1.0))
            if c.size not in (1, w.shape[0]) or c.ndim > 2 or (c.ndim == 2 and c.shape[0] != 1):
                node.fail(f"bias C must broadcast as [{w.shape[0]}], got {list(c.shape)}")
            c = np.broadcast_to(c.reshape(-1), (w.shape[0],)).copy()
        fb.emit(node, "dense", [x], {}, w, c)


@handler("MatMul")
class MatMul:
    def to_float(self, node, fb):
        node.only_attrs({})
        x = fb.tensor(node, 0)
        if len(fb.shape(x)) != 1:
            node.fail(f"needs a 2-D [N, K] input, got a per-sample shape {list(fb.shape(x))}")
        b = as_float(node.const(1, "matrix B"), node, "matrix B")
        if b.ndim != 2:
            node.fail(f"matrix B must be 2-D [K, N], got {list(b.shape)}")
        fb.emit(node, "dense", [x], {}, b.T.copy(), None)
