"""Transpose (QONNX): of constants only, e.g. a quantized 2-D weight matrix before MatMul (Brevitas' Linear)."""

import numpy as np

from ...qonnx_import import QConst
from . import handler


@handler("Transpose")
class Transpose:
    def qonnx(self, node, imp):
        x = imp.get(node.inputs[0])
        perm = list(node.attr("perm", []))
        if isinstance(x, QConst) and x.codes.ndim == 2 and perm in ([1, 0], []):
            imp.env[node.outputs[0]] = QConst(x.codes.T, x.scale.T, x.zp.T, x.bits, x.signed, x.binary, x.real.T)
        elif isinstance(x, np.ndarray):
            imp.env[node.outputs[0]] = np.transpose(x, perm or None)
        else:
            node.fail("Transpose is supported only on 2-D weights")
