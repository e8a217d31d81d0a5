"""QuantizeLinear: of the float model input -> the model's input encoding; after a DequantizeLinear -> a rescale;
after a float op -> the end of a QDQ node group (one hwsim layer); of a float constant -> its codes, computed here
as the op would (round half to even, saturate)."""

import numpy as np

from ... import require
from ...onnx_import import QT, QConst
from . import handler


@handler("QuantizeLinear")
class QuantizeLinear:
    def ort(self, node, imp):
        kind, payload = imp.lookup(node.inputs[0], node.where)
        out = node.outputs[0]
        imp.q_outputs.add(out)
        if kind == "const":   # a float weight quantized in the graph: do it here, as QuantizeLinear would
            scale, zp, dtype, axis = imp.q_params(node, per_channel_ok=True)
            codes = _quantize(node, imp, payload, scale, zp, dtype, axis)
            imp.values[out] = ("qconst", QConst(codes, scale, zp, imp.norm_axis(axis, payload.ndim)
                                                if scale.size > 1 else None))
            return
        enc = imp.act_enc(node.inputs[1], node.input(2), node.where, _output_dtype(node))
        if kind == "float_input":
            if imp.model_input is not None and not imp.same_enc(imp.model_input.enc, enc):
                node.fail("the model input is quantized twice with different parameters")
            if imp.model_input is None:
                imp.model_input = QT("input", enc, imp.input_shape)
            imp.values[out] = ("q", imp.model_input)
        elif kind == "dq":
            imp.forms.add("QDQ")
            imp.values[out] = ("q", imp.rescale(payload, enc, node.where, out))
        elif kind == "island":
            imp.forms.add("QDQ")
            imp.values[out] = ("q", imp.lut_layer(payload.nodes, payload.source, payload.dq_names, node.proto, enc,
                                                  node.where))
        elif kind == "pending":
            imp.forms.add("QDQ")
            imp.values[out] = ("q", imp.close_group(payload, enc, out, node.where))
        else:
            node.fail(f"QuantizeLinear needs a float tensor, {node.inputs[0]!r} is {kind}")


def _output_dtype(node):
    """Without a zero point the output type is uint8 unless `output_dtype` (opset 21) says otherwise."""
    dtype = node.attr("output_dtype")
    return np.uint8 if dtype is None else require("onnx").helper.tensor_dtype_to_np_dtype(dtype)


def _quantize(node, imp, x, scale, zp, dtype, axis):
    if x.dtype != np.float32:
        node.fail(f"QuantizeLinear of a constant needs float32 data, got {x.dtype}")
    shape = [1] * x.ndim
    if scale.size > 1:
        ax = imp.norm_axis(axis, x.ndim)
        if not 0 <= ax < x.ndim or x.shape[ax] != scale.size:
            node.fail(f"per-axis scale of {scale.size} values does not fit axis {axis} of shape {list(x.shape)}")
        shape[ax] = scale.size
    info = np.iinfo(dtype)
    v = np.rint(x / scale.reshape(shape).astype(np.float32)).astype(np.float64) + zp.reshape(shape)
    return np.clip(v, info.min, info.max).astype(dtype)
