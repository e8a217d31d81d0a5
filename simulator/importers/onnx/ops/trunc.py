"""QONNX Trunc v1 (x, scale, zero point, input bits, output bits), supported as Brevitas' TruncAvgPool2d:
AveragePool -> Mul(window size) -> Trunc (a FLOOR shift by log2(window)) -> avgpool with rounding floor."""

import numpy as np

from ....encodings import UniformAct
from ...qonnx_import import AvgPending
from . import QONNX, handler


@handler("Trunc", domain=QONNX)
class Trunc:
    def qonnx(self, node, imp):
        x = imp.get(node.inputs[0])
        if len(node.inputs) != 5:
            node.fail("only Trunc v1 (5 inputs: x, scale, zero point, input bits, output bits) is supported")
        if not isinstance(x, AvgPending) or not x.summed:
            node.fail("Trunc is supported only as TruncAvgPool: AveragePool -> Mul(window) -> Trunc")
        s = imp.const(node.inputs[1], "scale").astype(np.float32)
        zp = imp.const(node.inputs[2], "zero point")
        bi = int(imp.const(node.inputs[3], "input bits").ravel()[0])
        bo = int(imp.const(node.inputs[4], "output bits").ravel()[0])
        mode = str(node.text_attrs().get("rounding_mode", "FLOOR")).upper()
        enc = x.q.enc
        if (not isinstance(enc, UniformAct) or s.size != 1 or float(s.ravel()[0]) != enc.scale
                or np.any(zp != 0) or enc.zero_point != 0):
            node.fail("Trunc must keep the pooled tensor's scale, with zero points 0")
        if (1 << max(bi - bo, 0)) != x.window or mode != "FLOOR":
            node.fail(f"Trunc shifts by {bi - bo} bits with {mode}; hwsim's avgpool needs a FLOOR shift "
                      f"equal to the window size {x.window}")
        imp.env[node.outputs[0]] = imp.emit_avgpool(x, node, "floor")
