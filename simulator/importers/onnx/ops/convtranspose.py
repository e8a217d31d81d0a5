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
with a float32 weight initializer (and a float32 bias) between DequantizeLinear and QuantizeLinear. That is the
same ORT float32 ConvTranspose on the weights as they are: they become float32 weights (encodings.Float32W,
their bit patterns stored exactly), which ORT prepacks, so its SGEMM runs A untransposed (the unit models that
path too). Their MACs are fp32 MACs in the trace and the cost model.

A float32 bias (either form) is what ORT adds after col2im: each value v is stored exactly as an integer
mantissa m (|m| < 2^24) with a power-of-two `bias_scale` 2^e (e >= -149), so float32(m) * 2^e == v, the
existing float32(bias) * bias_scale of the unit.
"""

import numpy as np

from ....encodings import Float32W
from ....graph import Layer
from ...onnx_import import QConst
from . import handler


def float_bias(values) -> tuple[np.ndarray, list]:
    """float32 values -> (int64 mantissas, power-of-two scales) with float32(m) * scale == value exactly."""
    v = np.asarray(values, dtype=np.float32).reshape(-1).astype(np.float64)
    _, e = np.frexp(v)                                  # |v| in [2^(e-1), 2^e): 24 significant bits
    step = np.maximum(e.astype(np.int64) - 24, -149)    # the float32 ulp of v (subnormals: 2^-149)
    return np.ldexp(v, -step).astype(np.int64), [float(s) for s in np.ldexp(1.0, step)]


def _float_weight(node, imp) -> QConst:
    """QOperator form: the float32 weight initializer ORT's float ConvTranspose multiplies, as Float32W codes."""
    wf = imp.const(node.inputs[1], node.where, "weight")
    if wf.dtype != np.float32:
        node.fail(f"a float weight must be float32, got {wf.dtype}")
    if wf.size and not np.all(np.isfinite(wf)):
        node.fail("the float32 weight holds NaN or infinity")
    return QConst(Float32W.codes(wf), np.ones(1, np.float32), np.zeros(1, np.int64), None)


def _bias(node, imp, x, w) -> tuple:
    """(integer bias, its float32 bias_scale or None): a float32 initializer added as is, or an int32 bias
    behind DequantizeLinear (ORT adds float32(bias) * the bias's own float32 scale)."""
    co = w.codes.shape[0]
    if node.input(2) and imp.lookup(node.input(2), node.where)[0] == "const":
        bf = imp.const(node.input(2), node.where, "bias")
        if bf.dtype != np.float32 or bf.size != co or not np.all(np.isfinite(bf)):
            node.fail(f"a float bias must hold {co} finite float32 values, got {bf.size} of {bf.dtype}")
        return float_bias(bf)
    b = imp.dq_const(node.input(2), node.where, "bias") if node.input(2) else None
    bias = imp.bias(b, x.enc.scale, w, co, node.where)
    return bias, None if b is None else [float(s) for s in np.asarray(b.scale, dtype=np.float32).reshape(-1)]


ATTRS = {"dilations": [1, 1], "group": None, "kernel_shape": None, "output_padding": None, "pads": None,
         "strides": None, "auto_pad": "NOTSET", "output_shape": None}


@handler("ConvTranspose")
class ConvTranspose:
    def ort(self, node, imp):
        node.only_attrs(ATTRS)
        x = imp.dq_input(node.inputs[0], node.where)
        f32 = imp.lookup(node.inputs[1], node.where)[0] == "const"
        wq = _float_weight(node, imp) if f32 else imp.dq_const(node.inputs[1], node.where, "weight")
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
        w = QConst(codes, wq.scale, wq.zp, None) if f32 else \
            imp.weight(QConst(codes, wq.scale, wq.zp, None if axis is None else 0), node.where, "conv")
        bias, bias_scale = _bias(node, imp, x, w)
        src = x
        if (sh, sw) != (1, 1):
            lay = Layer(imp.new_name(node.outputs[0] + "_dilate"), "dilate", [x.name], {"stride": [sh, sw]})
            src = imp.add_layer(lay, [x], node.where)
        attrs = {"stride": [1, 1], "padding": [kh - 1 - pt, kw - 1 - pl, kh - 1 - pb + oph, kw - 1 - pr + opw],
                 "groups": groups, "arithmetic": "ort_float32"}
        if bias_scale is not None:
            attrs["bias_scale"] = bias_scale
        params = {"op": "conv2d", "w": w, "bias": bias, "attrs": attrs}
        if f32:
            params["w_enc"] = Float32W()
        imp.qdq_group(node, "mac", [src], params)
        # ORT computes the group in float32 whatever its 8-bit types, so close_group's check that ORT's
        # QDQS8ToU8 rewrite keeps the types of a fused group together does not apply (no ort_float_nodes entry)
        imp.values[node.outputs[0]][1].in_types = []
