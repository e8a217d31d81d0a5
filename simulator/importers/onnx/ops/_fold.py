"""A constant Add / Sub / Mul / Div right after a conv / dense folds into its weights and bias (PyTorch's bias Add
after MatMul, Keras / tf2onnx's per-channel scale and shift)."""

import numpy as np

from ..frontend import as_float


def fold_constant(node, fb, kind):
    """(MAC output) `kind` constant -> new weights / bias of the conv2d / dense before; kind: add, sub, mul, div."""
    consts = [node.is_const(i) for i in (0, 1)]
    if len(node.inputs) != 2 or consts.count(True) != 1:
        node.fail(f"{node.op_type} needs one activation and one constant input")
    i = consts.index(False)
    if i == 1 and kind in ("sub", "div"):
        node.fail(f"{node.op_type} of a constant by an activation is not supported (only activation {node.op_type} "
                  "constant)")
    x = fb.tensor(node, i)
    prev = fb.graph.producer(x)
    if prev is None or prev.op not in ("conv2d", "dense") or not fb.only_consumer(node, i):
        node.fail(f"an {node.op_type} of a constant must follow a Conv / Gemm / MatMul whose output nothing else uses "
                  "(it folds into that layer's weights and bias)")
    c = as_float(node.const(1 - i, "constant"), node, "constant")
    co = prev.weight.shape[0]
    try:   # ONNX broadcasting against [1, *shape]; only a per-channel constant folds
        full = np.broadcast_to(c, (1,) + tuple(prev.shape)) if c.ndim <= len(prev.shape) + 1 else None
    except ValueError:
        full = None
    rows = None if full is None else full.reshape(co, -1)
    if rows is None or not np.all(rows == rows[:, :1]):
        node.fail(f"the constant {list(c.shape)} is not per channel of the {co}-channel layer before")
    c = rows[:, 0]
    bias = np.zeros(co) if prev.bias is None else prev.bias
    if kind in ("add", "sub"):
        prev.bias = bias + c if kind == "add" else bias - c
    else:
        if kind == "div" and np.any(c == 0):
            node.fail("divides by zero")
        k = c if kind == "mul" else 1.0 / c
        prev.weight = prev.weight * k.reshape((-1,) + (1,) * (prev.weight.ndim - 1))
        prev.bias = bias * k
    fb.alias(node, x)
