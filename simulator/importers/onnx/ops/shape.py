"""Shape of an activation -> a constant [1, *per-sample shape]: the reader works per sample (batch taken as 1),
which is what the exporters' Shape -> Gather -> Concat -> Reshape chains need to fold into a flatten."""

import numpy as np

from . import handler


@handler("Shape")
class Shape:
    def to_float(self, node, fb):
        node.only_attrs({"start": None, "end": None})
        dims = np.array((1,) + tuple(fb.shape(fb.tensor(node, 0))), dtype=np.int64)
        start, end = node.attr("start", 0), node.attr("end", None)
        node.graph.consts[node.outputs[0]] = dims[start:end]
