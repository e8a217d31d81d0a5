"""Small QONNX graphs built with onnx.helper and the qonnx custom-op domain, for tests/test_qonnx.py.

`G` collects nodes and initializers; `G.save(path)` runs qonnx's InferShapes (it knows the custom ops) so that
qonnx's executor can run the file. Scales are powers of two unless a test says otherwise.
"""

from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper, numpy_helper

DOMAIN = "qonnx.custom_op.general"


class G:
    def __init__(self, input_shape, name="qonnx_test"):
        self.name = name
        self.nodes, self.inits = [], []
        self.n = 0
        self.input_shape = list(input_shape)
        self.input = "x"

    def _t(self, prefix):
        self.n += 1
        return f"{prefix}{self.n}"

    def const(self, value, prefix="c", dtype=np.float32):
        name = self._t(prefix)
        self.inits.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def node(self, op, inputs, domain="", n_out=1, **attrs):
        outs = [self._t(op.lower() + "_") for _ in range(n_out)]
        self.nodes.append(helper.make_node(op, inputs, outs, name=self._t(op + "_n"), domain=domain, **attrs))
        return outs[0]

    # QONNX ops
    def quant(self, x, scale, zp=0.0, bits=8, signed=1, narrow=0, rounding="ROUND"):
        return self.node("Quant", [x, self.const(scale), self.const(zp), self.const(bits)], DOMAIN,
                         signed=int(signed), narrow=int(narrow), rounding_mode=rounding)

    def bipolar(self, x, scale=1.0):
        return self.node("BipolarQuant", [x, self.const(scale)], DOMAIN)

    def mt(self, x, thresholds, out_scale=1.0, out_bias=0.0, out_dtype="UINT4"):
        return self.node("MultiThreshold", [x, self.const(thresholds)], DOMAIN, out_scale=float(out_scale),
                         out_bias=float(out_bias), out_dtype=out_dtype)

    def trunc(self, x, scale, zp, in_bits, out_bits, rounding="FLOOR"):
        return self.node("Trunc", [x, self.const(scale), self.const(zp), self.const(in_bits), self.const(out_bits)],
                         DOMAIN, rounding_mode=rounding)

    # standard ops
    def conv(self, x, w, b=None, pads=(0, 0, 0, 0), strides=(1, 1), group=1):
        ins = [x, w] + ([b] if b is not None else [])
        return self.node("Conv", ins, pads=list(pads), strides=list(strides), group=group)

    def model(self, out):
        x = helper.make_tensor_value_info(self.input, TensorProto.FLOAT, self.input_shape)
        y = helper.make_tensor_value_info(out, TensorProto.FLOAT, None)
        graph = helper.make_graph(self.nodes, self.name, [x], [y], self.inits)
        m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13), helper.make_opsetid(DOMAIN, 1)])
        return m

    def save(self, out, path):
        from qonnx.core.modelwrapper import ModelWrapper
        from qonnx.transformation.infer_shapes import InferShapes
        mw = ModelWrapper(self.model(out)).transform(InferShapes())
        mw.save(str(path))
        return str(path)


def pow2(rng, lo, hi, size=None):
    return 2.0 ** rng.integers(lo, hi + 1, size=size)


def qrange(bits, signed, narrow):
    if signed:
        return -(1 << (bits - 1)) + (1 if narrow else 0), (1 << (bits - 1)) - 1
    return 0, (1 << bits) - (2 if narrow else 1)


def weight_quant(g, rng, shape, bits, signed=True, narrow=False, per_channel=True, axis=0, scale_exp=(-6, -1)):
    """A float weight initializer and a Quant on it; codes cover the whole range."""
    co = shape[axis]
    sshape = [1] * len(shape)
    sshape[axis] = co
    s = pow2(rng, *scale_exp, size=co if per_channel else 1).reshape(sshape if per_channel else [1] * len(shape))
    if bits == 1 and signed:
        w = rng.standard_normal(shape) * s
        return g.quant(g.const(w, "w"), s, 0.0, 1, 1, 0), s
    lo, hi = qrange(bits, signed, narrow)
    codes = rng.integers(lo, hi + 1, size=shape)
    w = (codes + rng.uniform(-0.45, 0.45, size=shape)) * s
    return g.quant(g.const(w, "w"), s, 0.0, bits, signed, narrow), s
