"""ConvTranspose (2-D) between DequantizeLinear and QuantizeLinear -> dilate (zero insertion) + conv2d with
`arithmetic: "ort_float32"`.

A transposed convolution with stride s, kernel k and pads p is an ordinary convolution of the input with
(s - 1) zeros inserted between pixels, padded by k - 1 - p, with the kernel flipped in H and W and its two
channel axes swapped. On the MAC array that is a zero-insertion mapping: the inserted zeros are MACs a
zero-gated PE skips (they show as zero-operand MACs), and the layer's MAC events are those of that conv.

ONNX Runtime does not fuse this group (no QLinearConvTranspose kernel on its CPU EP): it dequantizes to float32,
runs its float32 ConvTranspose (MLAS SGEMM into a column buffer, col2im, bias) and quantizes. The conv2d's
`ort_float32` arithmetic is exactly that computation (simulator/units/float_conv_transpose.py, with the ORT
sources), so hwsim matches ORT bit for bit, whatever the 8-bit types (QDQS8ToU8 changes no float value); the
int32 bias's own float32 scale is kept in `bias_scale`. ORT's session option session.disable_quant_qdq=1 would
constant-fold and prepack the weight and block the SGEMM's K differently for small inputs: not modelled.

QOperator form: onnxruntime.quantization has no QOperator ConvTranspose (its QLinearOpsRegistry lists none, and
ORT's com.microsoft QLinearConvTranspose schema has no CPU kernel), so quantize_static leaves the node in float
with float weights between DequantizeLinear and QuantizeLinear; hwsim refuses it (float weights are no 8-bit
MAC operands).
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
        kind, _ = imp.lookup(node.inputs[1], node.where)
        if kind == "const":
            node.fail("ConvTranspose with float weights (quantize_static's QOperator form leaves ConvTranspose "
                      "unquantized: ONNX Runtime has no QLinearConvTranspose CPU kernel); hwsim needs 8-bit "
                      "weights: quantize in QDQ form")
        wq = imp.dq_const(node.inputs[1], node.where, "weight")
        if len(x.shape) != 3 or wq.codes.ndim != 4:
            node.fail(f"only 2-D transposed convolutions are supported (input {list(x.shape)}, weight "
                      f"{list(wq.codes.shape)})")
        if node.attr("output_shape") is not None:
            node.fail("output_shape is not supported (give pads and output_padding)")
        if node.attr("auto_pad", "NOTSET") not in ("NOTSET", b"NOTSET"):
            node.fail("auto_pad is not supported (give pads)")
        if [int(v) for v in node.attr("dilations", [1, 1])] != [1, 1]:
            node.fail(f"dilations {list(node.attr('dilations'))} are not supported (only 1)")
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
                 "groups": groups, "arithmetic": "ort_float32"}
        if b is not None:   # ORT adds float32(bias) * the bias's own float32 scale
            attrs["bias_scale"] = [float(s) for s in np.asarray(b.scale, dtype=np.float32).reshape(-1)]
        imp.qdq_group(node, "mac", [src], {"op": "conv2d", "w": w, "bias": bias, "attrs": attrs})
        # ORT computes the group in float32 whatever its 8-bit types, so close_group's check that ORT's
        # QDQS8ToU8 rewrite keeps the types of a fused group together does not apply (no ort_float_nodes entry)
        imp.values[node.outputs[0]][1].in_types = []
