"""QGemm (com.microsoft, QOperator) with an int32 bias and a quantized output -> dense."""

from . import MS, handler
from .gemm import gemm_trans_b


@handler("QGemm", domain=MS)
class QGemm:
    def ort(self, node, imp):
        imp.forms.add("QOperator")
        where = node.where
        trans_b = gemm_trans_b(node)
        inp = node.inputs + [""] * (9 - len(node.inputs))
        if not inp[7]:
            node.fail("QGemm without y_scale outputs float32, which hwsim does not model")
        x = imp.q_input(inp[0], inp[1], inp[2], where)
        w = imp.weight(imp.q_weight(inp[3], inp[4], inp[5], where, 0 if trans_b else 1), where, "dense", trans_b)
        enc = imp.enc_like(inp[7], inp[8], x, where)
        bias = imp.q_bias(inp[6], where, w.codes.shape[0])
        imp.values[node.outputs[0]] = ("q", imp.mac_layer(where, node.outputs[0], x, w, bias, enc, "dense", {}))
