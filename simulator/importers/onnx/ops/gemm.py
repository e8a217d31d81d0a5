"""Gemm (Y = alpha * A B + beta * C) and MatMul by a constant matrix -> dense."""

import math
from fractions import Fraction

import numpy as np

from ...qonnx_import import QConst, merge_affine
from ..frontend import as_float
from . import handler


def gemm_trans_b(node) -> bool:
    """ORT's integer Gemm / QGemm: alpha = beta = 1 and no transA; returns transB."""
    a = node.attrs()
    if a.get("transA", 0):
        node.fail("Gemm with transA=1 is not supported")
    if float(a.get("alpha", 1.0)) != 1.0 or float(a.get("beta", 1.0)) != 1.0:
        node.fail("Gemm with alpha or beta other than 1 is not supported")
    return bool(a.get("transB", 0))


def channels_first(fb, x, w):
    """Weights [Co, K] for an NCHW-flattened input when the model flattened NHWC (Keras after a Transpose)."""
    order = fb.flat_order.get(x)
    if order is None:
        return w
    out = np.empty_like(w)
    out[:, order] = w          # column j of the NHWC flatten is element order[j] of the NCHW flatten
    return out


def _operands(node, fb):
    """The [N, K] activation and the constant 2-D matrix B of a Gemm / MatMul."""
    x = fb.tensor(node, 0)
    if len(fb.shape(x)) != 1:
        node.fail(f"needs a 2-D [N, K] input, got a per-sample shape {list(fb.shape(x))} (Flatten first)")
    b = as_float(node.const(1, "matrix B"), node, "matrix B")
    if b.ndim != 2:
        node.fail(f"matrix B must be 2-D, got {list(b.shape)}")
    return x, b


@handler("Gemm")
class Gemm:
    def to_float(self, node, fb):
        node.only_attrs({"alpha": None, "beta": None, "transA": 0, "transB": None})
        x, b = _operands(node, fb)
        w = b if node.attr("transB", 0) else b.T
        w = w * float(node.attr("alpha", 1.0))
        c = node.const(2, "bias C", required=False)
        if c is not None:
            c = as_float(c, node, "bias C") * float(node.attr("beta", 1.0))
            if c.size not in (1, w.shape[0]) or c.ndim > 2 or (c.ndim == 2 and c.shape[0] != 1):
                node.fail(f"bias C must broadcast as [{w.shape[0]}], got {list(c.shape)}")
            c = np.broadcast_to(c.reshape(-1), (w.shape[0],)).copy()
        fb.emit(node, "dense", [x], {}, channels_first(fb, x, w), c)

    def ort(self, node, imp):
        """QDQ: DQ(x), DQ(B) [, DQ(C)] -> Gemm, pending until its QuantizeLinear."""
        trans_b = gemm_trans_b(node)
        x = imp.dq_input(node.inputs[0], node.where)
        w = imp.weight(imp.dq_const(node.inputs[1], node.where, "weight"), node.where, "dense", trans_b)
        b = imp.dq_const(node.input(2), node.where, "bias") if node.input(2) else None
        bias = imp.bias(b, x.enc.scale, w, w.codes.shape[0], node.where)
        imp.qdq_group(node, "mac", [x], {"op": "dense", "w": w, "bias": bias, "attrs": {}})

    def qonnx(self, node, imp):
        """dense; alpha and beta * C become affine steps of the activation chain."""
        a = node.attrs()
        if a.get("transA", 0):
            node.fail("Gemm with transA is not supported")
        x = imp.get(node.inputs[0])
        w = imp.get(node.inputs[1])
        if isinstance(w, QConst) and w.codes.ndim != 2:
            node.fail("Gemm weights must be 2-D")
        codes, kind, units = imp.weights(node.inputs[1], 0 if a.get("transB", 0) else 1, "Gemm weights")
        alpha, beta = float(a.get("alpha", 1.0)), float(a.get("beta", 1.0))
        if not (math.isfinite(alpha) and math.isfinite(beta)) or alpha <= 0:
            node.fail(f"Gemm alpha must be positive, got {alpha}")
        bias = None
        if node.input(2):
            bias = imp.bias(node.input(2), codes.shape[0]).astype(np.float64) * beta
        acc = imp.mac(node, "dense", x, codes, kind, units, {}, None)
        co = codes.shape[0]
        if alpha != 1.0:
            acc.steps.append(("affine", [Fraction(alpha)] * co, [Fraction(0)] * co))
        if bias is not None:
            acc.steps.append(("affine", [Fraction(1)] * co, [Fraction(float(v)) for v in bias]))
        merge_affine(acc.steps)


@handler("MatMul")
class MatMul:
    def to_float(self, node, fb):
        node.only_attrs({})
        x, b = _operands(node, fb)
        fb.emit(node, "dense", [x], {}, channels_first(fb, x, b.T.copy()), None)

    def ort(self, node, imp):
        x = imp.dq_input(node.inputs[0], node.where)
        w = imp.weight(imp.dq_const(node.inputs[1], node.where, "weight"), node.where, "dense")
        imp.qdq_group(node, "mac", [x], {"op": "dense", "w": w, "bias": None, "attrs": {}})

    def qonnx(self, node, imp):
        x = imp.get(node.inputs[0])
        w = imp.get(node.inputs[1])
        if isinstance(w, QConst) and w.codes.ndim != 2:
            node.fail("MatMul weights must be 2-D [K, Co]")
        codes, kind, units = imp.weights(node.inputs[1], 1, "MatMul weights")
        imp.mac(node, "dense", x, codes, kind, units, {}, None)
