"""`hwsim estimate` on real-network ops (importers/onnx_shapes.py): lookup-table activations, squeeze-and-excitation
Mul, broadcasting Add, Resize, ConvTranspose, Softmax, Squeeze / Unsqueeze / Transpose.

Small float graphs built with onnx.helper are read for shapes, quantized by onnxruntime.quantization (QDQ and
QOperator) and read again; the quantized file is also imported (`import_onnx`) and counted by the engine's rules
(`qnn_shapes.workloads_from_model`). Where both exist the workloads must be equal. Cases where the float graph
cannot know what the quantizer does are checked as documented (a decomposed chain is one table in the float read,
ORT quantizes between its ops).
"""

from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from simulator.errors import HwsimError  # noqa: E402
from simulator.importers.onnx_shapes import load_onnx_shapes  # noqa: E402


class G:
    """A float graph under construction: nodes, float initializers, one input."""

    def __init__(self, in_shape, seed=0):
        self.in_shape, self.nodes, self.inits, self.k = list(in_shape), [], [], 0
        self.rng = np.random.default_rng(seed)

    def const(self, arr, dtype=np.float32):
        self.k += 1
        name = f"c{self.k}"
        self.inits.append(numpy_helper.from_array(np.asarray(arr, dtype=dtype), name))
        return name

    def op(self, op, inputs, name=None, **attrs):
        self.k += 1
        out = f"t{self.k}"
        self.nodes.append(helper.make_node(op, inputs, [out], name=name or f"{op}_{self.k}", **attrs))
        return out

    def conv(self, x, ci, co, k=3, stride=1, groups=1, pad=None):
        w = self.const(self.rng.normal(size=(co, ci // groups, k, k)) * 0.3)
        b = self.const(self.rng.normal(size=co) * 0.1)
        p = k // 2 if pad is None else pad
        return self.op("Conv", [x, w, b], kernel_shape=[k, k], strides=[stride, stride], pads=[p] * 4,
                       group=groups)

    def save(self, path, out, opset=17):
        graph = helper.make_graph(self.nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                                  self.in_shape)],
                                  [helper.make_tensor_value_info(out, TensorProto.FLOAT, None)], self.inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
        model.ir_version = 8
        onnx.save(model, str(path))
        return path


def strip(wls):
    """Everything but the names and graph edges (the importer names layers its own way), views left out."""
    return [{**w.__dict__, "name": "", "inputs": ()} for w in wls if w.path != "view"]


def counts(wls):
    return [(w.op, w.events, w.lut_entries, w.lut_width_bits, w.mul_bits, w.macs, w.input_elems, w.output_elems)
            for w in wls if w.path != "view"]


def quantized(tmp_path, fp, in_shape, fmt="QDQ", **kw):
    pytest.importorskip("onnxruntime")
    from onnx_factory import quantize
    qp = tmp_path / f"{fp.stem}_{fmt}.onnx"
    quantize(fp, qp, in_shape[1:], fmt=fmt, **kw)
    return qp


def engine(qp):
    from simulator.importers.onnx_import import import_onnx
    from simulator.importers.qnn_shapes import workloads_from_model
    return workloads_from_model(import_onnx(qp, ort_cpu="vnni"))   # shapes alone model the exact datapath


def check_against_engine(tmp_path, g, out, name, fmts=("QDQ",), **kw):
    """float shapes == QDQ shapes == the engine's counts of the imported QDQ model; returns the three lists."""
    fp = g.save(tmp_path / f"{name}.onnx", out)
    flt = load_onnx_shapes(fp)
    results = []
    for fmt in fmts:
        qp = quantized(tmp_path, fp, g.in_shape, fmt, **kw)
        qs, eng = load_onnx_shapes(qp), engine(qp)
        assert strip(qs) == strip(eng), (fmt, [w.op for w in qs], [w.op for w in eng])
        results.append((qs, eng))
    return flt, results


def ops(wls):
    return [w.op for w in wls if w.path != "view"]


# ------------------------------------------------------------------------------------------------ equal counts

def test_mobilenetv3_block_luts_se_mul_residual(tmp_path):
    """Conv -> HardSwish -> depthwise -> Relu -> SE (GAP, fc, Relu, fc, HardSigmoid, Mul) -> project -> Add."""
    g = G([1, 8, 10, 10])
    e = g.op("HardSwish", [g.conv("x", 8, 16, k=1)], name="hs")
    d = g.op("Relu", [g.conv(e, 16, 16, groups=16)])
    s = g.op("GlobalAveragePool", [d])
    s = g.op("Relu", [g.conv(s, 16, 4, k=1)])
    s = g.op("HardSigmoid", [g.conv(s, 4, 16, k=1)], name="gate", alpha=1 / 6)
    m = g.op("Mul", [d, s], name="se")
    y = g.op("Add", [g.conv(m, 16, 8, k=1), "x"], name="res")
    flt, [(qdq, eng)] = check_against_engine(tmp_path, g, y, "v3", fmts=("QDQ",))
    assert ops(eng) == ["conv2d", "lut", "conv2d", "avgpool", "conv2d", "conv2d", "lut", "mul", "conv2d", "add"]
    by = {w.name: w for w in flt}
    assert by["hs"].events == {"lut_reads": 1600} and (by["hs"].lut_entries, by["hs"].lut_width_bits) == (256, 8)
    assert by["hs"].extra_weight_bits == 256 * 8 and by["hs"].path == "vector"
    assert by["gate"].events == {"lut_reads": 16}
    assert by["se"].events == {"muls": 1600, "requants": 1600} and by["se"].in_elems == 1600 + 16
    assert by["se"].mul_bits == 8                 # float: --bits; the QDQ operands carry a zero point
    se = next(w for w in eng if w.op == "mul")
    assert next(w for w in qdq if w.op == "mul").mul_bits == se.mul_bits
    # the float read: the same ops and events but for the relus ORT folds away and the float pools' requants
    assert [o for o in ops(flt) if o != "relu"] == ops(eng)
    assert sum(w.macs for w in flt) == sum(w.macs for w in eng)
    for key in ("lut_reads", "muls"):
        assert sum(w.event(key) for w in flt) == sum(w.event(key) for w in eng)


def test_unary_luts_and_constant_ops_after_non_mac(tmp_path):
    """Sigmoid, Tanh, LeakyRelu, Elu, Softplus; a constant Mul after a Relu and x * x: one lut each."""
    g = G([1, 4, 6, 6])
    t = g.op("Relu", [g.conv("x", 4, 4)])
    t = g.op("Mul", [t, g.const(0.5)], name="scale")       # after a non-MAC op: cannot fold, a table
    for op, kw in (("Sigmoid", {}), ("Tanh", {}), ("LeakyRelu", {"alpha": 0.1}), ("Elu", {}), ("Softplus", {})):
        t = g.op(op, [g.conv(t, 4, 4)], name=op.lower(), **kw)
    sq = g.op("Mul", [t, t], name="square")
    flt, [(qdq, eng)] = check_against_engine(tmp_path, g, sq, "unary")
    assert ops(eng).count("lut") == 7 and ops(qdq) == ops(eng)
    by = {w.name: w for w in flt}
    assert by["scale"].op == by["sigmoid"].op == by["softplus"].op == "lut"
    assert all(by[k].events == {"lut_reads": 144} for k in ("scale", "sigmoid", "tanh", "softplus"))
    # Softplus(t) * Softplus(t) is one chain in the float graph: one table; ORT quantizes between the two ops,
    # so the quantized model has one more (documented: a chain counts once where the float graph shows it)
    assert "square" not in by and ops(flt).count("lut") == 6
    assert counts([w for w in flt if w.op == "lut"]) == counts([w for w in eng if w.op == "lut"])[:6]


def test_qoperator_qlinear_ops(tmp_path):
    """QLinearSigmoid / QLinearLeakyRelu -> lut, QLinearMul -> mul, QLinearAdd broadcasting -> add."""
    g = G([1, 4, 6, 6])
    c = g.conv("x", 4, 8)
    a = g.op("Sigmoid", [c])
    b = g.op("LeakyRelu", [g.conv(a, 8, 8)], alpha=0.2)
    gate = g.op("GlobalAveragePool", [b])
    m = g.op("Mul", [c, g.conv(gate, 8, 8, k=1)])
    y = g.op("Add", [m, g.conv(gate, 8, 8, k=1)])      # [1, 8, 6, 6] + [1, 8, 1, 1]
    fp = g.save(tmp_path / "qop.onnx", y)
    qp = quantized(tmp_path, fp, g.in_shape, "QOperator")
    types = {n.op_type for n in onnx.load(str(qp)).graph.node}
    assert {"QLinearSigmoid", "QLinearLeakyRelu", "QLinearMul", "QLinearAdd"} <= types
    qs, eng = load_onnx_shapes(qp), engine(qp)
    assert strip(qs) == strip(eng)
    assert sorted(ops(qs)) == sorted(["conv2d", "lut", "conv2d", "lut", "avgpool", "conv2d", "mul", "conv2d", "add"])
    add = [w for w in qs if w.op == "add"][0]
    assert add.events == {"adds": 288, "requants": 288} and add.in_elems == 288 + 8
    # the float graph: the same layers (ORT orders them differently); its pool has no requantizer and its
    # operands no zero point (mul_bits 8 from --bits, 9 in the uint8 model)
    key = lambda c: (c[0], c[5], c[7])      # noqa: E731
    flt = sorted(counts(load_onnx_shapes(fp)), key=key)
    qop = sorted(counts(qs), key=key)
    for a, b in zip(flt, qop):
        assert a[0] == b[0] and a[5:] == b[5:] and {k: v for k, v in a[1].items() if k != "requants" or a[0] != "avgpool"} \
            == {k: v for k, v in b[1].items() if k != "requants" or b[0] != "avgpool"}


def test_fpn_head_resize_convtranspose(tmp_path):
    """Nearest (scales) and bilinear (sizes) Resize, a stride-2 ConvTranspose with output_padding, lateral Add."""
    g = G([1, 8, 8, 8])
    c = g.conv("x", 8, 8)
    low = g.conv(c, 8, 8, stride=2)                                 # 4x4
    up = g.op("Resize", [low, "", g.const([1, 1, 2, 2])], name="up", mode="nearest")
    p = g.op("Add", [up, c], name="lateral")
    lin = g.op("Resize", [p, "", "", g.const([1, 8, 12, 12], np.int64)], name="bilinear", mode="linear")
    w = g.const(g.rng.normal(size=(8, 4, 3, 3)) * 0.3)
    ct = g.op("ConvTranspose", [lin, w, g.const(np.zeros(4))], name="deconv", strides=[2, 2], pads=[1, 1, 1, 1],
              output_padding=[1, 1], kernel_shape=[3, 3])
    y = g.conv(ct, 4, 4)
    flt, [(qdq, eng)] = check_against_engine(tmp_path, g, y, "fpn")
    assert ops(eng) == ["conv2d", "conv2d", "resize", "add", "resize", "dilate", "conv2d", "conv2d"]
    by = {w.name: w for w in flt}
    assert by["up"].events == {} and (by["up"].p, by["up"].q, by["up"].out_elems) == (8, 8, 512)
    assert by["bilinear"].events == {"muls": 4 * 1152, "adds": 3 * 1152, "requants": 1152}
    dil, dc = by["deconv_dilate"], by["deconv"]
    assert (dil.op, dil.path, dil.events, dil.p, dil.q) == ("dilate", "vector", {}, 23, 23)
    assert (dc.h, dc.w, dc.pad, dc.stride, dc.p, dc.q, dc.k, dc.c) == (23, 23, (1, 1, 2, 2), (1, 1), 24, 24, 4, 8)
    assert dc.macs == 24 * 24 * 4 * 8 * 9 and dc.events == {"requants": 24 * 24 * 4}
    assert ops(flt) == ops(eng)
    for a, b in zip(flt, eng):         # float and quantized: the same loop bounds and events, layer by layer
        assert (a.op, a.macs, a.events, a.p, a.q, a.h, a.w) == (b.op, b.macs, b.events, b.p, b.q, b.h, b.w)


def test_softmax_head_and_views(tmp_path):
    """GAP -> Squeeze -> Gemm -> Unsqueeze / Squeeze -> Softmax; Transpose of an activation is a view."""
    g = G([1, 8, 6, 6])
    c = g.conv("x", 8, 8)
    t = g.op("Transpose", [c], name="tr", perm=[0, 1, 3, 2])
    s = g.op("GlobalAveragePool", [t])
    s = g.op("Squeeze", [s, g.const([2, 3], np.int64)], name="sq")
    f = g.op("Gemm", [s, g.const(g.rng.normal(size=(10, 8))), g.const(np.zeros(10))], transB=1)
    u = g.op("Unsqueeze", [f, g.const([2], np.int64)], name="unsq")
    u = g.op("Squeeze", [u, g.const([2], np.int64)], name="sq2")
    y = g.op("Softmax", [u], name="softmax", axis=-1)
    fp = g.save(tmp_path / "head.onnx", y)
    flt = load_onnx_shapes(fp)
    by = {w.name: w for w in flt}
    assert (by["tr"].path, by["sq"].path, by["unsq"].path) == ("view", "view", "view")
    sm = by["softmax"]
    assert sm.events == {"lut_reads": 20, "adds": 10, "requants": 10}
    assert (sm.lut_entries, sm.lut_width_bits, sm.in_elems, sm.out_elems) == (256, 32, 10, 10)
    # the engine's softmax, from the QDQ and QOperator (QLinearSoftmax) forms of the same head without Transpose
    g2 = G([1, 8, 6, 6])
    s2 = g2.op("GlobalAveragePool", [g2.conv("x", 8, 8)])
    s2 = g2.op("Flatten", [s2])
    f2 = g2.op("Gemm", [s2, g2.const(g2.rng.normal(size=(10, 8))), g2.const(np.zeros(10))], transB=1)
    y2 = g2.op("Softmax", [f2], axis=-1)
    fp2 = g2.save(tmp_path / "head2.onnx", y2)
    for fmt in ("QDQ", "QOperator"):
        qp = quantized(tmp_path, fp2, g2.in_shape, fmt)
        qs, eng = load_onnx_shapes(qp), engine(qp)
        assert strip(qs) == strip(eng), fmt
        assert [w.events for w in qs if w.op == "softmax"] == [sm.events]
    assert counts([w for w in load_onnx_shapes(fp2) if w.op == "softmax"]) == counts([sm])


# ------------------------------------------------------------------------------------------------ chains

def test_elementwise_chains_count_one_table(tmp_path):
    """A chain of single-input elementwise ops (and their products with the same input) is one table: a decomposed
    HardSwish x * Clip(x + 3, 0, 6) / 6 costs as HardSwish; Swish x * Sigmoid(x) is one lut in a float graph."""
    g = G([1, 4, 6, 6])
    c = g.conv("x", 4, 4)
    t = g.op("Add", [c, g.const(3.0)], name="hs_add")
    t = g.op("Clip", [t, g.const(0.0), g.const(6.0)], name="hs_clip")
    t = g.op("Div", [t, g.const(6.0)], name="hs_div")
    hs = g.op("Mul", [c, t], name="hs_mul")
    d = g.conv(hs, 4, 4)
    sw = g.op("Mul", [d, g.op("Sigmoid", [d], name="sig")], name="swish")
    r = g.op("Relu", [sw], name="relu_after")                       # extends the open chain too
    y = g.conv(r, 4, 4)
    fp = g.save(tmp_path / "chains.onnx", y)
    flt = load_onnx_shapes(fp)
    assert ops(flt) == ["conv2d", "lut", "conv2d", "lut", "conv2d"]
    luts = [w for w in flt if w.op == "lut"]
    assert [w.name for w in luts] == ["hs_add", "sig"] and all(w.events == {"lut_reads": 144} for w in luts)
    assert [w.inputs for w in flt if w.is_mac][1:] == [("hs_add",), ("sig",)]
    # the fused op costs the same as its decomposition
    g2 = G([1, 4, 6, 6])
    y2 = g2.conv(g2.op("HardSwish", [g2.conv("x", 4, 4)]), 4, 4)
    assert counts(load_onnx_shapes(g2.save(tmp_path / "fused.onnx", y2))) == counts(flt)[:3]
    # QDQ: ORT quantizes the Sigmoid output before the Mul, so Swish is a lut and a mul there (documented)
    qp = quantized(tmp_path, fp, g.in_shape)
    qs, eng = load_onnx_shapes(qp), engine(qp)
    assert strip(qs) == strip(eng)
    assert "mul" in ops(eng) and sum(w.event("lut_reads") for w in eng) >= 2 * 144


def test_constants_still_fold_into_the_mac_before(tmp_path):
    """A same-shape bias / scale right after a conv (its only consumer) folds; BatchNormalization too."""
    g = G([1, 4, 6, 6])
    c = g.conv("x", 4, 4)
    t = g.op("Mul", [c, g.const(np.ones((4, 1, 1)))], name="scale")
    t = g.op("Add", [t, g.const(np.ones((4, 1, 1)))], name="bias")
    t = g.op("BatchNormalization", [t] + [g.const(v) for v in (np.ones(4), np.zeros(4), np.zeros(4), np.ones(4))])
    y = g.op("Sigmoid", [t], name="act")
    assert ops(load_onnx_shapes(g.save(tmp_path / "fold.onnx", y))) == ["conv2d", "lut"]


def test_square_of_the_model_input_is_a_table(tmp_path):
    g = G([1, 4])
    y = g.op("Mul", ["x", "x"], name="sq")
    (w,) = load_onnx_shapes(g.save(tmp_path / "sq.onnx", y))
    assert (w.op, w.events, w.inputs) == ("lut", {"lut_reads": 4}, ("input",))


def test_float_bits_and_gelu(tmp_path):
    g = G([1, 4, 6, 6])
    y = g.op("Gelu", [g.conv("x", 4, 4)], name="gelu")
    lut = [w for w in load_onnx_shapes(g.save(tmp_path / "gelu.onnx", y, opset=20), bits=(4, 2))
           if w.op == "lut"][0]
    assert (lut.in_bits, lut.out_bits, lut.lut_entries, lut.lut_width_bits, lut.extra_weight_bits) == (4, 4, 16, 4,
                                                                                                       64)


# ------------------------------------------------------------------------------------------------ real networks

REAL = ("mobilenet_v2", "mobilenet_v3_small", "efficientnet_lite_block", "fpn_head")


@pytest.mark.parametrize("net", REAL)
def test_real_networks_float_and_qdq_match_the_engine(tmp_path, net):
    """tests/torch_mobilenets.py's MobileNetV2, MobileNetV3-small, EfficientNet-Lite block and FPN head: the QDQ
    file's workloads equal the engine's (per tensor and per channel), and the float file has the same MACs, lut
    reads and muls (it keeps the Relus ORT folds into the requantizer, and its pools have no requantizer)."""
    pytest.importorskip("torch")
    import test_real_networks as trn
    from onnxruntime.quantization import QuantFormat
    import torch
    import warnings
    torch.manual_seed(0)
    model = trn.tm.init_batchnorm(trn.BUILDERS[net]())
    fp = tmp_path / f"{net}.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, torch.randn(1, 3, trn.SIZE, trn.SIZE), str(fp), opset_version=17, dynamo=False,
                          input_names=["x"], output_names=["y"])
    flt = load_onnx_shapes(fp)
    for per_channel in (False, True):
        qp = trn.quantize(fp, tmp_path / f"q{per_channel}.onnx", QuantFormat.QDQ, per_channel, False)
        qs, eng = load_onnx_shapes(qp), engine(qp)
        assert strip(qs) == strip(eng), per_channel
        assert sum(w.macs for w in flt) == sum(w.macs for w in eng)
        assert sum(w.event("lut_reads") for w in flt) == sum(w.event("lut_reads") for w in eng)
        # Swish x * Sigmoid(x) is one chain, one table, in the float graph; ORT's quantizer quantizes the
        # Sigmoid's output, so the QDQ model has a lut and a mul per Swish (documented in onnx_shapes)
        swish = [w for w in flt if w.op == "lut" and net == "efficientnet_lite_block" and "gate" not in w.name]
        assert sum(w.event("muls") for w in flt) + sum(w.out_elems for w in swish) == sum(w.event("muls")
                                                                                           for w in eng)
        assert sorted([o for o in ops(flt) if o not in ("relu", "clip")] + ["mul"] * len(swish)) == sorted(
            o for o in ops(eng) if o != "clip")


# ------------------------------------------------------------------------------------------------ errors

def error(path):
    with pytest.raises(HwsimError) as info:
        load_onnx_shapes(path)
    text = str(info.value)
    assert "\n" not in text and text.startswith(str(path))
    return text


def test_errors_name_the_node(tmp_path):
    g = G([1, 4, 6, 6])
    c = g.conv("x", 4, 4)
    y = g.op("Sub", [c, g.op("Sigmoid", [g.conv("x", 4, 4)])], name="diff")
    assert "node diff (Sub): Sub of two activations is not supported" in error(g.save(tmp_path / "a.onnx", y))
    g = G([1, 4, 6, 6])
    y = g.op("Resize", [g.conv("x", 4, 4), "", g.const([1, 1, 2, 2])], name="cub", mode="cubic")
    assert "node cub (Resize): Resize mode 'cubic' is not supported" in error(g.save(tmp_path / "b.onnx", y))
    g = G([1, 4, 6, 6])
    y = g.op("TopK", [g.conv("x", 4, 4), g.const([2], np.int64)], name="top", axis=1)
    assert "node top (TopK): unsupported op 'TopK'; supported: Conv, " in error(g.save(tmp_path / "c.onnx", y))
    g = G([1, 4, 6, 6])
    y = g.op("Mul", [g.op("Relu", [g.conv("x", 4, 4)]), g.const(np.ones((1, 4, 6, 1, 1)))], name="bc")
    assert "node bc (Mul): Mul inputs [[1, 4, 6, 6], [1, 4, 6, 1, 1]] do not broadcast" in error(
        g.save(tmp_path / "d.onnx", y))
    g = G([1, 4, 6, 6])
    y = g.op("Mul", [g.op("GlobalAveragePool", [g.conv("x", 4, 4)]), g.const(np.ones((1, 4, 6, 6)))], name="up")
    assert ("node up (Mul): Mul with a constant broadcasts [1, 4, 1, 1] to [1, 4, 6, 6]; an elementwise function "
            "(a lookup table) keeps its input's shape") in error(g.save(tmp_path / "e.onnx", y))
