"""DequantizeLinear: of a quantized tensor -> the float view a QDQ float op reads (no layer); of an integer
constant (or a QuantizeLinear of one) -> quantized weights / bias for the op that reads it."""

import numpy as np

from ...onnx_import import QConst
from . import handler


@handler("DequantizeLinear")
class DequantizeLinear:
    def ort(self, node, imp):
        kind, payload = imp.lookup(node.inputs[0], node.where)
        out = node.outputs[0]
        if kind == "const":
            imp.values[out] = ("dqconst", _integer_const(node, imp, payload))
        elif kind == "qconst":
            scale, zp, _, _ = imp.q_params(node, per_channel_ok=True)
            if not (np.array_equal(scale, payload.scale) and np.array_equal(zp, payload.zp)):
                node.fail("DequantizeLinear of a constant uses other parameters than its QuantizeLinear")
            imp.values[out] = ("dqconst", payload)
        elif kind == "q":
            enc = imp.enc_like(node.inputs[1], node.input(2), payload, node.where)
            if not imp.same_enc(enc, payload.enc):
                node.fail(f"DequantizeLinear reads {node.inputs[0]!r} with scale {enc.scale} / zero point "
                          f"{enc.zero_point}, but it was quantized with {payload.enc.scale} / "
                          f"{payload.enc.zero_point}")
            imp.values[out] = ("dq", payload)
            if node.inputs[0] in imp.q_outputs:
                imp.ort_type[out] = imp.ort_q_type(node.inputs[0], enc)
        else:
            node.fail(f"DequantizeLinear needs a quantized tensor, {node.inputs[0]!r} is {kind}")


def _integer_const(node, imp, codes) -> QConst:
    scale, zp, dtype, axis = imp.q_params(node, per_channel_ok=True)
    if codes.dtype != dtype:
        node.fail(f"zero point type {dtype} does not match the data type {codes.dtype}")
    if codes.dtype not in (np.uint8, np.int8, np.int32):
        node.fail(f"quantized constants must be uint8, int8 or int32, got {codes.dtype}")
    if scale.size == 1 and zp.size == 1:
        return QConst(codes, scale, zp, None)
    ax = imp.norm_axis(axis, codes.ndim)
    n = max(scale.size, zp.size)
    if not 0 <= ax < codes.ndim or codes.shape[ax] != n or scale.size not in (1, n) or zp.size not in (1, n):
        node.fail(f"per-axis parameters ({scale.size} scales, {zp.size} zero points) do not fit axis {axis} of "
                  f"shape {list(codes.shape)}")
    return QConst(codes, scale, zp, ax)
