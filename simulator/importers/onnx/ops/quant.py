"""QONNX Quant(x, scale, zero point, bit width): of a constant -> quantized weights (computed here in float32, as
qonnx's int_quant); of the graph input -> the model's input encoding; after a MAC / residual add / average pool
-> that layer's output quantizer (requantizer or thresholds, see qonnx_import.py)."""

import numpy as np

from ....encodings import UniformAct
from ....errors import HwsimError
from ...qonnx_import import Acc, AddPending, AvgPending, Q, QConst, describe, qrange
from . import QONNX, handler


@handler("Quant", domain=QONNX)
class Quant:
    def qonnx(self, node, imp):
        x = imp.get(node.inputs[0])
        s, zp, bits, signed, narrow, mode = _params(node, imp)
        if isinstance(x, np.ndarray):
            imp.env[node.outputs[0]] = quantize_const(x, s, zp, bits, signed, narrow, mode)
            return
        s1, z1 = imp.scalar_act_params(s, zp, "Quant")
        if bits > 16:
            node.fail(f"{bits}-bit activations are not supported (hwsim activations have 1..16 bits)")
        if bits == 1 and signed:                     # bipolar
            if z1 != 0:
                node.fail("a 1-bit signed (bipolar) Quant needs zero point 0")
            imp.bipolar_activation(node, x, s1)
            return
        enc, bounds = UniformAct(bits, signed, s1, z1), qrange(bits, signed, narrow)
        if isinstance(x, str) and x == "graph-input":
            imp.define_input(node.outputs[0], node.proto.name, enc, mode, bounds)
            return
        finish = {Acc: imp.finish_quant, AddPending: imp.finish_add, AvgPending: imp.finish_avgpool,
                  Q: imp.requantize_q}.get(type(x))
        if finish is None:
            node.fail(f"cannot quantize {describe(x)}")
        imp.env[node.outputs[0]] = finish(x, node, enc, bounds, mode)


def _params(node, imp):
    s = imp.const(node.inputs[1], "scale").astype(np.float32)
    zp = imp.const(node.inputs[2], "zero point").astype(np.float32)
    bits = imp.const(node.inputs[3], "bit width")
    if bits.size != 1 or float(bits.ravel()[0]) != int(bits.ravel()[0]) or not 1 <= int(bits.ravel()[0]) <= 32:
        node.fail(f"bit width must be one integer in 1..32, got {bits.ravel()[:4].tolist()}")
    attrs = node.text_attrs()
    for key in ("signed", "narrow"):
        if key not in attrs:
            node.fail(f"attribute {key!r} is required (QONNX Quant)")
    mode = str(attrs.get("rounding_mode", "ROUND")).upper()
    if np.any(s <= 0) or not np.all(np.isfinite(s)):
        node.fail("scales must be positive and finite")
    return s, zp, int(bits.ravel()[0]), bool(attrs["signed"]), bool(attrs["narrow"]), mode


def _rounding_fn(mode):
    fns = {"ROUND": np.round, "HALF_EVEN": np.round, "CEIL": np.ceil, "FLOOR": np.floor, "DOWN": np.fix,
           "UP": lambda x: np.sign(x) * np.ceil(np.abs(x)),
           "HALF_UP": lambda x: np.sign(x) * np.floor(np.abs(x) + 0.5),
           "HALF_DOWN": lambda x: np.sign(x) * np.ceil(np.abs(x) - 0.5)}
    if mode not in fns:
        raise HwsimError(f"unknown rounding_mode {mode!r}")
    return fns[mode]


def quantize_const(x, s, zp, bits, signed, narrow, mode) -> QConst:
    """Quant of an initializer, in float32 exactly as qonnx's int_quant computes it."""
    x = np.asarray(x, np.float32)
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(zp))):
        raise HwsimError("a quantized constant or its zero point is not finite")
    try:
        sb = np.broadcast_to(s, x.shape).astype(np.float32)
        zb = np.broadcast_to(zp, x.shape).astype(np.float32)
    except ValueError:
        raise HwsimError(f"scale {list(s.shape)} / zero point {list(zp.shape)} do not broadcast to the "
                         f"tensor {list(x.shape)}") from None
    y = x / sb + zb
    if bits == 1 and signed:
        y = np.where(y >= 0, np.float32(1), np.float32(-1))
        codes = (y < 0).astype(np.int64)                  # binary codes: bit 1 = -1
        return QConst(codes, sb, zb, 1, True, True, ((y - zb) * sb).astype(np.float32))
    lo, hi = qrange(bits, signed, narrow)
    y = _rounding_fn(mode)(np.clip(y, np.float32(lo), np.float32(hi)))
    codes = y.astype(np.int64)
    return QConst(codes, sb, zb, bits, signed, False, ((y - zb) * sb).astype(np.float32))
