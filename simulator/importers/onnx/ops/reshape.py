"""Reshape that keeps the batch axis -> flatten ([N, -1]) or reshape."""

import math

from . import handler


@handler("Reshape")
class Reshape:
    def to_float(self, node, fb):
        node.only_attrs({"allowzero": 0})
        x = fb.tensor(node, 0)
        size = math.prod(fb.shape(x))
        target = [int(v) for v in node.const(1, "shape").reshape(-1)]
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
        if len(rest) == 1:
            fb.emit(node, "flatten", [x])
        else:
            fb.emit(node, "reshape", [x], {"shape": rest})
