"""ConvTranspose (2-D) between DequantizeLinear and QuantizeLinear -> dilate (zero insertion) + conv2d.

A transposed convolution with stride s, kernel k and pads p is an ordinary convolution of the input with
(s - 1) zeros inserted between pixels, padded by k - 1 - p, with the kernel flipped in H and W and its two
channel axes swapped. On the MAC array that is a zero-insertion mapping: the inserted zeros are MACs a
zero-gated PE skips (they show as zero-operand MACs). ONNX Runtime does not fuse this group: it runs a float32
ConvTranspose (MLAS SGEMM + col2im) between the DequantizeLinear and QuantizeLinear; hwsim accumulates the exact
integer products and requantizes like QLinearConv, so an output may differ from ORT's by one code where
float32 rounding decides (the importer lists the node in metadata["ort_float_nodes"]).
"""

import numpy as np

from ....graph import Layer
from ...onnx_import import QConst
from . import handler

ATTRS = {"dilations": [1, 1], "group": None, "kernel_shape": None, "output_padding": None, "pads": None,
         "strides": None, "auto_pad": "NOTSET", "output_shape": None}


@handler("ConvTranspose")
class ConvTranspose:
    def ort(self, node, imp):
        node.only_attrs(ATTRS)
        x = imp.dq_input(node.inputs[0], node.where)
        wq = imp.dq_const(node.inputs[1], node.where, "weight")
        if len(x.shape) != 3 or wq.codes.ndim != 4:
            node.fail(f"only 2-D transposed convolutions are supported (input {list(x.shape)}, weight "
                      f"{list(wq.codes.shape)})")
        if node.attr("output_shape") is not None:
            node.fail("output_shape is not supported (give pads and output_padding)")
        groups = int(node.attr("group", 1))
        ci, cog, kh, kw = wq.codes.shape
        if ci != x.shape[0] or ci % groups:
            node.fail(f"weight {list(wq.codes.shape)} does not fit {x.shape[0]} input channels in {groups} groups")
        sh, sw = (int(v) for v in node.attr("strides", [1, 1]))
        pt, pl, pb, pr = (int(v) for v in node.attr("pads", [0, 0, 0, 0]))
        oph, opw = (int(v) for v in node.attr("output_padding", [0, 0]))
        if min(sh, sw) < 1 or min(pt, pl, pb, pr, oph, opw) < 0 or oph >= sh or opw >= sw:
            node.fail("strides must be >= 1, pads and output_padding >= 0, output_padding < stride")
        if max(pt, pb) > kh - 1 or max(pl, pr) > kw - 1:
            node.fail(f"pads {[pt, pl, pb, pr]} larger than kernel - 1 are not supported")
        # [Ci, Co/g, KH, KW] -> [Co, Ci/g, KH, KW], flipped: the equivalent convolution's weight
        cig = ci // groups
        codes = wq.codes.reshape(groups, cig, cog, kh, kw).transpose(0, 2, 1, 3, 4)
        codes = np.ascontiguousarray(codes.reshape(groups * cog, cig, kh, kw)[:, :, ::-1, ::-1])
        axis = wq.axis
        if axis is not None and axis != 1:
            node.fail(f"per-channel weight parameters along axis {axis}; ConvTranspose needs them per output "
                      "channel (axis 1)")
        if axis is not None and groups > 1:
            node.fail("per-channel weights of a grouped ConvTranspose are not supported")
        w = imp.weight(QConst(codes, wq.scale, wq.zp, None if axis is None else 0), node.where, "conv")
        b = imp.dq_const(node.input(2), node.where, "bias") if node.input(2) else None
        bias = imp.bias(b, x.enc.scale, w, w.codes.shape[0], node.where)
        src = x
        if (sh, sw) != (1, 1):
            lay = Layer(imp.new_name(node.outputs[0] + "_dilate"), "dilate", [x.name], {"stride": [sh, sw]})
            src = imp.add_layer(lay, [x], node.where)
        attrs = {"stride": [1, 1], "padding": [kh - 1 - pt, kw - 1 - pl, kh - 1 - pb + oph, kw - 1 - pr + opw],
                 "groups": groups}
        imp.qdq_group(node, "mac", [src], {"op": "conv2d", "w": w, "bias": bias, "attrs": attrs})
        name = node.proto.name or node.where
        if name not in imp.ort_float_nodes:
            imp.ort_float_nodes.append(name)
