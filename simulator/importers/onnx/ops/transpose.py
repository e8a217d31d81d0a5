"""Transpose: float reader -> NCHW to NHWC right before a Flatten / Reshape into a dense layer (Keras' flatten
order, folded into the dense weights); QONNX -> of constants only, e.g. a quantized 2-D weight matrix before
MatMul (Brevitas' Linear); quantized ONNX Runtime model -> a transpose layer on the codes (ORT drops the Q/DQ
pair around it), the batch axis staying first."""

from ....graph import Layer

import numpy as np

from ...qonnx_import import QConst
from . import handler


@handler("Transpose")
class Transpose:
    def to_float(self, node, fb):
        node.only_attrs({"perm": None})
        perm = list(node.attr("perm", []))
        if node.inputs[0] == node.graph.input_name and perm == [0, 3, 1, 2]:
            node.fail("the model takes channels-last (NHWC) input; hwsim models take NCHW: export with "
                      "channels-first inputs (tf2onnx --inputs-as-nchw)")
        x = fb.tensor(node, 0)
        if len(fb.shape(x)) != 3 or perm != [0, 2, 3, 1]:
            node.fail(f"only the NCHW -> NHWC Transpose (perm [0, 2, 3, 1]) before a flatten is supported, got "
                      f"perm {perm}")
        fb.channels_last[node.outputs[0]] = x

    def ort(self, node, imp):
        node.only_attrs({"perm": None})

        def build(x):
            rank = len(x.shape) + 1
            perm = [int(p) for p in node.attr("perm", list(range(rank))[::-1])]
            if sorted(perm) != list(range(rank)) or perm[0] != 0:
                node.fail(f"perm {perm} must permute the axes of a rank-{rank} tensor and keep the batch axis first")
            sample = [p - 1 for p in perm[1:]]
            if sample == list(range(rank - 1)):
                return x
            lay = Layer(imp.new_name(node.outputs[0]), "transpose", [x.name], {"perm": sample})
            return imp.add_layer(lay, [x], node.where)
        imp.on_codes(node, build)

    def qonnx(self, node, imp):
        x = imp.get(node.inputs[0])
        perm = list(node.attr("perm", []))
        if isinstance(x, QConst) and x.codes.ndim == 2 and perm in ([1, 0], []):
            imp.env[node.outputs[0]] = QConst(x.codes.T, x.scale.T, x.zp.T, x.bits, x.signed, x.binary, x.real.T)
        elif isinstance(x, np.ndarray):
            imp.env[node.outputs[0]] = np.transpose(x, perm or None)
        else:
            node.fail("Transpose is supported only on 2-D weights")
