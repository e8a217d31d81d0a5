"""Reshape that keeps the batch axis -> flatten ([N, -1]) or reshape."""

import math

from ...qonnx_import import Q
from . import handler


@handler("Reshape")
class Reshape:
    def to_float(self, node, fb):
        node.only_attrs({"allowzero": None})
        x, order = fb.flatten_input(node)
        size = math.prod(fb.shape(x))
        target = [int(v) for v in node.const(1, "shape").reshape(-1)]
        if node.attr("allowzero", 0) and 0 in target:
            node.fail(f"shape {target} with allowzero=1 asks for an empty dimension")
        if not target or target[0] not in (0, -1, 1):
            node.fail(f"shape {target} must keep the batch axis first (0, 1 or -1)")
        dims = fb.shape(x)
        rest = [dims[i - 1] if v == 0 and i <= len(dims) else v for i, v in enumerate(target)][1:]
        if rest.count(-1) > 1 or any(v < -1 or v == 0 for v in rest):
            node.fail(f"cannot read shape {target}")
        if -1 in rest:
            known = math.prod(v for v in rest if v != -1)
            if size % known:
                node.fail(f"cannot reshape {size} elements to {target}")
            rest[rest.index(-1)] = size // known
        if math.prod(rest) != size or len(rest) not in (1, 3):
            node.fail(f"reshapes a {list(fb.shape(x))} sample to {rest}; only [K] or [C, H, W] are supported")
        if order is not None and len(rest) != 1:
            node.fail("after a channels-last Transpose only a flatten to [N, K] is supported")
        if len(rest) == 1:
            flat = fb.emit(node, "flatten", [x])
            if order is not None:
                fb.flat_order[flat.name] = order
        else:
            fb.emit(node, "reshape", [x], {"shape": rest})

    def ort(self, node, imp):
        """A reshape of 8-bit codes (QOperator) or of a DequantizeLinear's input (QDQ)."""
        imp.on_codes(node, lambda x: imp.reshape(x, _ort_target(node, imp, x), node.where, node.outputs[0]))

    def qonnx(self, node, imp):
        x = imp.get(node.inputs[0])
        shape = [int(v) for v in imp.const(node.inputs[1], "shape").ravel()]
        if len(shape) == 2:
            imp.flatten(node, x)
            return
        if not isinstance(x, Q) or len(shape) != 4:
            node.fail(f"Reshape to {shape} is not supported (only [N, K] flattening or [N, C, H, W])")
        size = math.prod(imp.shapes()[x.name])
        rest = [d for d in shape[1:] if d != -1]
        target = [d if d != -1 else size // math.prod(rest) for d in shape[1:]]
        imp.emit(node, "reshape", [x], {"shape": target}, rank=3)


def _ort_target(node, imp, q):
    """The per-sample shape a Reshape gives the quantized tensor q."""
    size = math.prod(q.shape)
    if not node.input(1):
        node.fail("Reshape needs its target shape as a second input (opset 5 or later)")
    target = [int(t) for t in imp.const(node.inputs[1], node.where, "shape").reshape(-1)]
    if node.attr("allowzero", 0) and 0 in target:
        node.fail("Reshape with allowzero and a 0 in the shape is not supported")
    if not target or target[0] not in (0, -1, 1):
        node.fail(f"Reshape to {target}: the first dimension must stay the batch (0, -1 or 1)")
    full = (1,) + tuple(q.shape)
    rest = [full[i + 1] if t == 0 and i + 1 < len(full) else t for i, t in enumerate(target[1:])]
    if rest.count(-1) > 1 or (target[0] == -1 and -1 in rest):
        node.fail(f"Reshape to {target} is ambiguous")
    if -1 in rest:
        known = math.prod(t for t in rest if t != -1)
        if known == 0 or size % known:
            node.fail(f"Reshape to {target} does not fit {size} elements per sample")
        rest[rest.index(-1)] = size // known
    if math.prod(rest) != size or len(rest) not in (1, 3):
        node.fail(f"Reshape to {target}: hwsim needs [N, K] or [N, C, H, W] with {size} elements per sample")
    return tuple(rest)
