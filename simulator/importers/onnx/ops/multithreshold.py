"""QONNX / FINN MultiThreshold(x, T): out = out_scale * #{i : x >= T[c, i]} + out_bias. After a MAC the thresholds
become integer comparators on the accumulator (a ThresholdAct output; one threshold at {-s/2, +s/2}: BinaryAct)."""

import math
from fractions import Fraction

import numpy as np

from ....encodings import BinaryAct, UniformAct
from ...qonnx_import import Acc, describe
from . import QONNX, handler


@handler("MultiThreshold", domain=QONNX)
class MultiThreshold:
    def qonnx(self, node, imp):
        x = imp.get(node.inputs[0])
        t = imp.const(node.inputs[1], "thresholds").astype(np.float32)
        if not np.all(np.isfinite(t)):
            node.fail("thresholds must be finite")
        attrs = node.text_attrs()
        layout = str(attrs.get("data_layout", "") or "")
        if layout and layout not in ("NCHW", "NC"):
            node.fail(f"data_layout {layout} is not supported (hwsim is channels-first)")
        out_scale = float(np.float32(attrs.get("out_scale", 1.0)))
        out_bias = float(np.float32(attrs.get("out_bias", 0.0)))
        if not (math.isfinite(out_scale) and math.isfinite(out_bias)):
            node.fail("out_scale / out_bias must be finite")
        if not isinstance(x, Acc):
            node.fail(f"MultiThreshold on {describe(x)} is not supported (only after a conv / dense layer, "
                      "where the thresholds become integer comparators on the accumulator)")
        if t.ndim != 2 or t.shape[1] < 1:
            node.fail(f"thresholds must be [C or 1, n], got shape {list(t.shape)}")
        if out_scale <= 0:
            node.fail(f"out_scale must be positive, got {out_scale}")
        n = t.shape[1]
        rows = np.sort(t, axis=1)                   # the count does not depend on the order
        conds = [[(Fraction(float(v)), False) for v in row] for row in rows]
        if n == 1 and out_bias == -out_scale / 2:    # {-s/2, +s/2}: a sign bit
            imp.env[node.outputs[0]] = imp.finish_binary(x, node, BinaryAct(out_scale / 2), conds=conds)
            return
        zp = -out_bias / out_scale
        bits = max(1, n.bit_length())
        if zp != int(zp) or not 0 <= zp < (1 << bits):
            node.fail(f"out_bias {out_bias} is not an integer number of out_scale steps inside the "
                      f"{bits}-bit code range, which hwsim's uniform storage needs")
        enc = UniformAct(bits, False, out_scale, int(zp))
        imp.env[node.outputs[0]] = imp.finish_thresholds(x, node, enc, 0, conds)
