"""QONNX BipolarQuant(x, scale): x >= 0 -> +scale, else -scale. Of a constant -> binary weights; of the graph input
-> a binary input; after a MAC -> a sign output (the threshold folded into the integer bias)."""

import numpy as np

from ...qonnx_import import QConst
from . import QONNX, handler


@handler("BipolarQuant", domain=QONNX)
class BipolarQuant:
    def qonnx(self, node, imp):
        x = imp.get(node.inputs[0])
        s = imp.const(node.inputs[1], "scale").astype(np.float32)
        if np.any(s <= 0):
            node.fail("scales must be positive")
        if isinstance(x, np.ndarray):
            codes = (x < 0).astype(np.int64)       # x >= 0 -> +1 (code 0), x < 0 -> -1 (code 1)
            sb = np.broadcast_to(s, x.shape)
            real = np.where(x >= 0, np.float32(1), np.float32(-1)) * s
            imp.env[node.outputs[0]] = QConst(codes, sb, np.zeros(x.shape, np.float32), 1, True, True,
                                              np.asarray(real, np.float32))
            return
        s1, _ = imp.scalar_act_params(s, np.zeros(1), "BipolarQuant")
        imp.bipolar_activation(node, x, s1)
