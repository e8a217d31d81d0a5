"""ConvTranspose in ORT-quantized models: ONNX Runtime runs DequantizeLinear -> ConvTranspose -> QuantizeLinear
unfused, in float32 (MLAS SGEMM in K blocks of 128 with FMAs, or its M1 kernel for a 1x1 input; col2im; the
bias); hwsim's conv2d arithmetic "ort_float32" (simulator/units/float_conv_transpose.py) reproduces it.

- the exact-FMA helper against exact rational arithmetic (fractions), on random and on constructed halfway cases;
- the fast unit (numba, on the importer's dilate + flipped conv2d form) against the plain reference that follows
  ORT's code (GEMM into a column buffer, col2im), as a hypothesis property;
- random ConvTranspose models quantized by onnxruntime.quantization (QDQ): the float32 ConvTranspose output bit
  for bit, and every quantized tensor (tests/ort_cuts.py), with 0 differences;
- MAC counts as the integer conv of the same shape, shape_counts, the ONNX export, validation;
- QOperator form (float32 weights, encodings.Float32W): random models against ORT, every quantized tensor with
  0 differences; ORT's WeightBiasQuantization against its session's optimized model; the prepacked float path
  (ORT without graph optimizations); fp32 MAC counts and costs, the .qnn round trip and the export; hostile
  .qnn files (float32 weights on an integer conv, NaN / infinity bit patterns).
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from simulator.units import float_conv_transpose as fct

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
quantization = pytest.importorskip("onnxruntime.quantization")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402
from onnxruntime.quantization import QuantFormat, QuantType  # noqa: E402

from ort_cuts import compare_every_tensor  # noqa: E402


# ------------------------------------------------------------------------------------------------ exact FMA

def round_to_float32(q: Fraction) -> float:
    """The float32 nearest to the rational q, ties to even (subnormals included)."""
    if q == 0:
        return 0.0
    a = abs(q)
    e = a.numerator.bit_length() - a.denominator.bit_length()
    while Fraction(2) ** e > a:
        e -= 1
    while Fraction(2) ** (e + 1) <= a:
        e += 1
    step = max(e - 23, -149)
    scaled = a / Fraction(2) ** step
    n, rem = divmod(scaled.numerator, scaled.denominator)
    if 2 * rem > scaled.denominator or (2 * rem == scaled.denominator and n % 2):
        n += 1
    return math.copysign(math.ldexp(n, step), q)


def exact_fma32(a, b, c) -> float:
    return round_to_float32(Fraction(float(a)) * Fraction(float(b)) + Fraction(float(c)))


def f32_values(rng, n, spread=20):
    m = rng.uniform(-2, 2, n) * 2.0 ** rng.integers(-spread, spread, n)
    return m.astype(np.float32).astype(np.float64)


def test_fma32_random_against_fractions():
    rng = np.random.default_rng(0)
    a, b, c = (f32_values(rng, 20000) for _ in range(3))
    c[::3] = -(a[::3] * b[::3]).astype(np.float32)            # near cancellation
    for x, y, z in zip(a, b, c):
        assert fct.fma32(x, y, z) == exact_fma32(x, y, z), (x, y, z)


def test_fma32_halfway_cases():
    """p + c within 2^-32 (relative) of a float32 midpoint: the float64 sum lands on the midpoint itself and
    only the TwoSum error tells the side. 641 * 6700417 = 2^32 + 1 and 16777215 * 16777215 = 2^48 - 2^25 + 1."""
    rng = np.random.default_rng(1)
    checked = 0
    for r in f32_values(rng, 400, spread=30):
        up = float(np.nextafter(np.float32(r), np.float32(np.inf)))
        half = (up - r) / 2
        for x, y, scale in ((641.0, 6700417.0, 2.0 ** -32), (16777215.0, 16777215.0, 2.0 ** -48)):
            for sign in (1, -1):
                p_a, p_b = sign * x * half * scale, y     # p = sign * half * (1 + tiny) (or * (1 - tiny))
                assert np.float32(p_a) == p_a
                for c in (r, up):
                    v = fct.fma32(p_a, p_b, c)
                    assert v == exact_fma32(p_a, p_b, c), (p_a, p_b, c)
                    naive = float(np.float32(p_a * p_b + c))
                    checked += naive != v
    assert checked > 100      # the naive double rounding is wrong on many of them


@settings(max_examples=300, deadline=None)
@given(st.floats(width=32, allow_nan=False, allow_infinity=False),
       st.floats(width=32, allow_nan=False, allow_infinity=False),
       st.floats(width=32, allow_nan=False, allow_infinity=False))
def test_fma32_property(a, b, c):
    exact = Fraction(a) * Fraction(b) + Fraction(c)
    if abs(exact) >= Fraction(2) ** 127:
        return                                                   # at or near float32 overflow
    assert fct.fma32(a, b, c) == exact_fma32(a, b, c)


# ------------------------------------------------------------------------------------- fast unit vs reference

def conv_form(x, w, strides, pads, output_padding, groups):
    """ONNX ConvTranspose (x [N, Ci, H, W], w [Ci, Co/g, KH, KW]) -> the importer's dilated input, flipped
    [Co, Ci/g, KH, KW] weight and conv padding."""
    n, ci, h, wd = x.shape
    _, cog, kh, kw = w.shape
    (sh, sw), (pt, pl, pb, pr), (oph, opw) = strides, pads, output_padding
    xd = np.zeros((n, ci, (h - 1) * sh + 1, (wd - 1) * sw + 1), np.float32)
    xd[:, :, ::sh, ::sw] = x
    cig = ci // groups
    wc = w.reshape(groups, cig, cog, kh, kw).transpose(0, 2, 1, 3, 4).reshape(groups * cog, cig, kh, kw)
    return xd, np.ascontiguousarray(wc[:, :, ::-1, ::-1]), [kh - 1 - pt, kw - 1 - pl, kh - 1 - pb + oph,
                                                             kw - 1 - pr + opw]


@st.composite
def geometries(draw):
    groups = draw(st.sampled_from([1, 1, 2, 3]))
    cig = draw(st.sampled_from([1, 2, 3, 5, 8, 130, 260])) if groups == 1 else draw(st.integers(1, 4))
    cog = draw(st.integers(1, 3))
    kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    sh, sw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    small = cig > 100
    h = draw(st.integers(1, 2 if small else 4))
    w = draw(st.integers(1, 2 if small else 4))
    pads = [draw(st.integers(0, kh - 1)), draw(st.integers(0, kw - 1)), draw(st.integers(0, kh - 1)),
            draw(st.integers(0, kw - 1))]
    oph, opw = draw(st.integers(0, min(sh - 1, pads[2]))), draw(st.integers(0, min(sw - 1, pads[3])))
    return groups, cig, cog, (kh, kw), (sh, sw), (h, w), pads, (oph, opw), draw(st.booleans()), draw(st.integers(0, 2 ** 31))


@settings(max_examples=60, deadline=None)
@given(geometries())
def test_fast_unit_equals_reference(geo):
    groups, cig, cog, k, s, (h, w), pads, op, bias, seed = geo
    if (h - 1) * s[0] - pads[0] - pads[2] + k[0] + op[0] < 1 or (w - 1) * s[1] - pads[1] - pads[3] + k[1] + op[1] < 1:
        return
    rng = np.random.default_rng(seed)
    ci = cig * groups
    # dequantized-looking values (codes times a scale, some zeros) and odd ones
    x = (rng.integers(-128, 128, (1, ci, h, w)) * np.float32(0.0123)).astype(np.float32)
    wt = (rng.standard_normal((ci, cog, *k)) * 0.3).astype(np.float32)
    b = (rng.standard_normal(cog * groups)).astype(np.float32) if bias else None
    ref = fct.conv_transpose_reference(x[0], wt, b, s, pads, op, groups)
    xd, wc, pad = conv_form(x, wt, s, pads, op, groups)
    fast = fct.conv_transpose_ort(xd, wc, b, pad, groups)[0]
    assert fast.shape == ref.shape
    assert np.array_equal(fast.view(np.uint32), ref.view(np.uint32))
    # a prepacked float32 initializer (ORT without graph optimizations): its own K blocks and M1 kernel
    ref = fct.conv_transpose_reference(x[0], wt, b, s, pads, op, groups, float_weights=True)
    fast = fct.conv_transpose_ort(xd, wc, b, pad, groups, float_weights=True, gemm_n=h * w)[0]
    assert np.array_equal(fast.view(np.uint32), ref.view(np.uint32))


def test_reference_uses_exact_fma():
    """The reference's default FMA is the exact one: with fractions it gives the same column buffer."""
    rng = np.random.default_rng(3)
    x = (rng.standard_normal((140, 2, 2)) * 0.7).astype(np.float32)
    w = (rng.standard_normal((140, 2, 2, 2)) * 0.1).astype(np.float32)
    a = fct.conv_transpose_reference(x, w, None, (2, 2), (0, 0, 0, 0), (0, 0), 1)
    b = fct.conv_transpose_reference(x, w, None, (2, 2), (0, 0, 0, 0), (0, 0), 1, fma=exact_fma32)
    assert np.array_equal(a.view(np.uint32), b.view(np.uint32))


# ------------------------------------------------------------------------------------------- against ORT

def float_model(path, ci, co, hw, k, s, pads, opad, groups, bias, seed, wrap=False):
    """One float ConvTranspose (wrap: between two 1x1 Convs, so that QOperator quantizes around it)."""
    rng = np.random.default_rng(seed)
    wt = (rng.normal(size=(ci, co // groups, *k)) / np.sqrt(ci * k[0] * k[1] / groups)).astype(np.float32)
    inits, ins = [numpy_helper.from_array(wt, "W")], ["x1" if wrap else "x", "W"]
    if bias:
        inits.append(numpy_helper.from_array((rng.normal(size=co) * 0.3).astype(np.float32), "B"))
        ins.append("B")
    nodes = [helper.make_node("ConvTranspose", ins, ["y1" if wrap else "y"], name="deconv", strides=list(s),
                              pads=list(pads), output_padding=list(opad), group=groups, kernel_shape=list(k))]
    oh = (hw[0] - 1) * s[0] - pads[0] - pads[2] + k[0] + opad[0]
    ow = (hw[1] - 1) * s[1] - pads[1] - pads[3] + k[1] + opad[1]
    if wrap:
        for name, c in (("P", ci), ("Q", co)):
            inits.append(numpy_helper.from_array(rng.normal(size=(c, c, 1, 1)).astype(np.float32) * 0.3, name))
        nodes.insert(0, helper.make_node("Conv", ["x", "P"], ["x1"], name="pre"))
        nodes.append(helper.make_node("Conv", ["y1", "Q"], ["y"], name="post"))
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, ci, *hw])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, co, oh, ow])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))


class _Reader(quantization.CalibrationDataReader):
    def __init__(self, shape, seed):
        self.data = iter([{"x": np.random.default_rng(seed + i).standard_normal(shape).astype(np.float32)}
                          for i in range(3)])

    def get_next(self):
        return next(self.data, None)


def quantized_case(tmp_path, seed, ci, co, hw, k, s, pads, opad, groups, bias, act, wt, per_channel,
                   fmt=QuantFormat.QDQ, wrap=False):
    fpath, qpath = tmp_path / f"f{seed}.onnx", tmp_path / f"q{seed}.onnx"
    float_model(fpath, ci, co, hw, k, s, pads, opad, groups, bias, seed, wrap)
    import logging
    logging.getLogger().setLevel(logging.ERROR)
    quantization.quantize_static(str(fpath), str(qpath), _Reader((1, ci, *hw), seed), quant_format=fmt,
                                 per_channel=per_channel, activation_type=act, weight_type=wt)
    return qpath


def ort_float_output(qpath, x):
    """ORT's float32 ConvTranspose output (the QuantizeLinear's input) for each sample."""
    m = onnx.load(str(qpath))
    conv = next(n for n in m.graph.node if n.op_type == "ConvTranspose")
    m.graph.output.append(helper.make_empty_tensor_value_info(conv.output[0]))
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.log_severity_level = 3
    sess = ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return np.concatenate([sess.run([conv.output[0]], {"x": x[i:i + 1]})[0] for i in range(len(x))])


def hwsim_float_output(model, x):
    """hwsim's float32 ConvTranspose output for the same input (the unit on the engine's dilated codes)."""
    from simulator.engine import Engine, quantize_input
    res = Engine(model).run(quantize_input(model, x), keep_all=True)
    lay = next(lay for lay in model.layers if lay.attr("arithmetic") == "ort_float32")
    co = lay.weight.shape[0]
    xin = fct.dequantize(lay.in_encs[0].decode(res.tensors[lay.inputs[0]]), lay.in_encs[0].scale)
    w = fct.dequantize(lay.weight_enc.decode(lay.weight), lay.weight_enc.channel_scales(co).reshape(-1, 1, 1, 1))
    b = None if lay.bias is None else fct.dequantize(lay.bias, fct.bias_scales(lay, co))
    return fct.conv_transpose_ort(xin, w, b, lay.attr("padding"), lay.attr("groups"))


def random_case(seed):
    rng = np.random.default_rng(seed)
    groups = int(rng.choice([1, 1, 2, 3]))
    cig = int(rng.choice([1, 2, 3, 5, 8, 17, 64, 130, 257, 300])) if groups == 1 else int(rng.integers(1, 9))
    cog = int(rng.integers(1, 5))
    k = (int(rng.integers(1, 5)), int(rng.integers(1, 5)))
    s = (int(rng.integers(1, 4)), int(rng.integers(1, 4)))
    hw = (1, 1) if rng.integers(6) == 0 else (int(rng.integers(1, 8)), int(rng.integers(1, 8)))
    pads = [int(rng.integers(0, k[0])), int(rng.integers(0, k[1])), int(rng.integers(0, k[0])),
            int(rng.integers(0, k[1]))]
    opad = [min(int(rng.integers(0, s[0])), pads[2]), min(int(rng.integers(0, s[1])), pads[3])]
    for d in (0, 1):   # an empty output: drop that axis's pads
        if (hw[d] - 1) * s[d] - pads[d] - pads[d + 2] + k[d] + opad[d] < 1:
            pads[d] = pads[d + 2] = opad[d] = 0
    act = [QuantType.QUInt8, QuantType.QInt8][int(rng.integers(2))]
    wt = QuantType.QInt8 if act == QuantType.QInt8 else [QuantType.QInt8, QuantType.QUInt8][int(rng.integers(2))]
    per_channel = bool(rng.integers(2)) and groups == 1
    return dict(ci=cig * groups, co=cog * groups, hw=hw, k=k, s=s, pads=pads, opad=opad, groups=groups,
                bias=bool(rng.integers(4)), act=act, wt=wt, per_channel=per_channel)


FIXED = {
    "k_blocks_300": dict(ci=300, co=3, hw=(6, 6), k=(2, 2), s=(2, 2), pads=[0, 0, 0, 0], opad=(0, 0), groups=1,
                         bias=True, act=QuantType.QUInt8, wt=QuantType.QInt8, per_channel=True),
    "m1_1x1_input": dict(ci=203, co=4, hw=(1, 1), k=(3, 3), s=(2, 2), pads=[1, 0, 0, 1], opad=(0, 0), groups=1,
                         bias=True, act=QuantType.QInt8, wt=QuantType.QInt8, per_channel=False),
    "fpn_like": dict(ci=8, co=8, hw=(16, 16), k=(2, 2), s=(2, 2), pads=[0, 0, 0, 0], opad=(0, 0), groups=1,
                     bias=True, act=QuantType.QUInt8, wt=QuantType.QInt8, per_channel=True),
    "grouped_odd": dict(ci=6, co=9, hw=(5, 4), k=(3, 2), s=(3, 2), pads=[2, 1, 1, 0], opad=(1, 0), groups=3,
                        bias=False, act=QuantType.QUInt8, wt=QuantType.QUInt8, per_channel=False),
}


def case_inputs(seed, case):
    """Four float inputs of a case, at one of four spreads."""
    ci, (h, w) = case["ci"], case["hw"]
    return (np.random.default_rng(seed + 99).standard_normal((4, ci, h, w)) * [0.5, 1, 2, 4][seed % 4]).astype(
        np.float32)


def check_against_ort(tmp_path, seed, case):
    from simulator.importers.onnx_import import import_onnx
    qpath = quantized_case(tmp_path, seed, **case)
    model = import_onnx(qpath)
    assert [lay.attr("arithmetic") for lay in model.layers if lay.op == "conv2d"] == ["ort_float32"]
    assert "ort_float_nodes" not in model.metadata
    x = case_inputs(seed, case)
    theirs, ours = ort_float_output(qpath, x), hwsim_float_output(model, x)
    assert np.array_equal(theirs.view(np.uint32), ours.view(np.uint32)), \
        f"{int((theirs.view(np.uint32) != ours.view(np.uint32)).sum())} of {ours.size} float32 outputs differ"
    diffs = compare_every_tensor(qpath, model, x)
    assert diffs and sum(diffs.values()) == 0, diffs
    return model, qpath, x


def check_form(form, tmp_path, seed, case):
    return (check_against_ort if form == "QDQ" else check_qoperator_against_ort)(tmp_path, seed, case)


@pytest.mark.parametrize("form", ["QDQ", "QOperator"])
@pytest.mark.parametrize("name", sorted(FIXED))
def test_fixed_cases_match_ort(tmp_path, name, form):
    check_form(form, tmp_path, 11, FIXED[name])


@pytest.mark.parametrize("form", ["QDQ", "QOperator"])
@pytest.mark.parametrize("seed", range(40))
def test_random_models_match_ort(tmp_path, seed, form):
    """Groups, strides, pads, output_padding, u8/s8, per tensor / per channel, with and without bias; the QDQ
    form and the QOperator form (float32 weights)."""
    check_form(form, tmp_path, seed, random_case(seed))


def test_counts_export_and_checks(tmp_path):
    """MAC events as the integer conv of the same shape; shape_counts agrees; the ONNX export runs bit for bit
    in ORT; validation of the attributes."""
    import copy

    from simulator.engine import Engine, quantize_input
    from simulator.errors import HwsimError
    from simulator.exporters.onnx_export import export_routes, to_onnx
    from simulator.importers.qnn_shapes import shape_counts

    model, qpath, x = check_against_ort(tmp_path, 5, FIXED["grouped_odd"])
    codes = quantize_input(model, x)
    res = Engine(model).run(codes)
    integer = copy.deepcopy(model)
    for lay in integer.layers:
        if lay.op == "conv2d":
            lay.attrs["arithmetic"] = "integer"
            lay.attrs.pop("bias_scale", None)
    res_int = Engine(integer.check()).run(codes)
    for a, b in zip(res.trace.layers, res_int.trace.layers):
        assert a.macs == b.macs and a.zero_act_macs == b.zero_act_macs and a.requants == b.requants
    shapes = shape_counts(model)
    for a, b in zip(shapes.layers, res.trace.layers):
        assert a.macs == {k: v // len(x) for k, v in b.macs.items()}
    conv = next(lay.name for lay in model.layers if lay.op == "conv2d")
    assert export_routes(model)[conv] == "qdq: ort_float32"
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    sess = ort.InferenceSession(to_onnx(model).SerializeToString(), opts, providers=["CPUExecutionProvider"])
    got = sess.run(None, {"input": x})[0]
    from simulator.report import output_array
    assert np.array_equal(got, output_array(model, res.output))
    bad = copy.deepcopy(model)
    next(lay for lay in bad.layers if lay.op == "conv2d").attrs["arithmetic"] = "float16"
    with pytest.raises(HwsimError, match="ort_float32"):
        bad.check()
    with pytest.raises(HwsimError, match="bias_scale"):
        for lay in integer.layers:
            if lay.op == "conv2d":
                lay.attrs["bias_scale"] = [1.0]
        integer.check()


def test_bias_and_export_with_bias(tmp_path):
    from simulator.engine import Engine, quantize_input
    from simulator.exporters.onnx_export import to_onnx
    from simulator.report import output_array
    model, _, x = check_against_ort(tmp_path, 7, FIXED["k_blocks_300"])
    assert next(lay for lay in model.layers if lay.op == "conv2d").attr("bias_scale") is not None
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    sess = ort.InferenceSession(to_onnx(model).SerializeToString(), opts, providers=["CPUExecutionProvider"])
    expected = output_array(model, Engine(model).run(quantize_input(model, x)).output)
    assert np.array_equal(sess.run(None, {"input": x})[0], expected)
    # the .qnn container keeps the arithmetic; the float64 reference (exact real result) stays within a code
    from simulator.qnn.model_io import load_model, save_model
    from simulator.reference import run_reference
    save_model(model, tmp_path / "m.qnn")
    loaded = load_model(tmp_path / "m.qnn")
    codes = quantize_input(loaded, x)
    out = Engine(loaded).run(codes).output
    assert np.array_equal(output_array(loaded, out), expected)
    ref = run_reference(loaded, codes)[loaded.output_name]
    assert np.abs(ref.astype(np.int64) - out.astype(np.int64)).max() <= 1


# ------------------------------------------------------------------------------------ QOperator: float32 weights

def check_qoperator_against_ort(tmp_path, seed, case):
    """quantize_static's QOperator form (ConvTranspose left in float with float32 weights, between two
    QLinearConvs): every quantized tensor ORT computes, 0 differences."""
    from simulator.importers.onnx_import import import_onnx
    qpath = quantized_case(tmp_path, seed, **case, fmt=QuantFormat.QOperator, wrap=True)
    ops = [n.op_type for n in onnx.load(str(qpath)).graph.node]
    assert "QLinearConv" in ops and "ConvTranspose" in ops
    model = import_onnx(qpath)
    (lay,) = [lay for lay in model.layers if lay.attr("arithmetic") == "ort_float32"]
    assert lay.weight_enc.kind == "float32" and (lay.bias is not None) == case["bias"]
    x = case_inputs(seed, case)
    diffs = compare_every_tensor(qpath, model, x)
    assert len(diffs) == 3 and sum(diffs.values()) == 0, diffs
    return model, qpath, x


def test_weight_bias_quantization_matches_ort_session(tmp_path):
    """ORT's WeightBiasQuantization (what its session makes of the float32 weight and bias on load) against the
    initializers of the session's own optimized model."""
    qpath = quantized_case(tmp_path, 6, **random_case(6), fmt=QuantFormat.QOperator, wrap=True)
    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    so.optimized_model_filepath = str(tmp_path / "opt.onnx")
    ort.InferenceSession(str(qpath), so, providers=["CPUExecutionProvider"])
    got = {i.name: numpy_helper.to_array(i) for i in onnx.load(str(tmp_path / "opt.onnx")).graph.initializer}
    src = {i.name: numpy_helper.to_array(i) for i in onnx.load(str(qpath)).graph.initializer}
    codes, scale, zp = fct.ort_weight_quantization(src["W"])
    wq = next(v for k, v in got.items() if k.endswith("_weight_q"))
    assert np.array_equal(codes, wq.astype(np.int64))
    assert scale == next(v for k, v in got.items() if k.endswith("_weight_scale"))
    assert zp == int(next(v for k, v in got.items() if k.endswith("_weight_zp")))
    bq, _ = fct.ort_bias_quantization(src["B"], src["x1_scale"], scale)
    assert np.array_equal(bq, next(v for k, v in got.items() if k.endswith("_bias_int32")).astype(np.int64))


def _direct_float_model(ci, co, hw, k, s, groups, pads, seed):
    rng = np.random.default_rng(seed)
    w = (rng.standard_normal((ci, co // groups, *k)) * 0.3).astype(np.float32)
    b = rng.standard_normal(co).astype(np.float32)
    x = (rng.integers(-128, 128, (1, ci, *hw)) * np.float32(0.0123)).astype(np.float32)
    node = helper.make_node("ConvTranspose", ["x", "W", "B"], ["y"], strides=list(s), group=groups,
                            kernel_shape=list(k), pads=list(pads))
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, ci, *hw])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(w, "W"), numpy_helper.from_array(b, "B")])
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m, x, w, b


@pytest.mark.parametrize("geo", [(300, 3, (2, 2), (2, 2), (2, 2), 1), (300, 3, (6, 6), (2, 2), (2, 2), 1),
                                 (1000, 2, (3, 3), (3, 3), (1, 1), 1), (2100, 2, (2, 3), (2, 2), (2, 2), 1),
                                 (600, 4, (10, 10), (2, 2), (2, 2), 1), (203, 4, (1, 1), (3, 3), (2, 2), 1),
                                 (203, 3, (1, 1), (1, 1), (1, 1), 1), (203, 7, (1, 1), (1, 1), (1, 1), 1),
                                 (203, 1, (1, 1), (1, 1), (1, 1), 1), (64, 8, (3, 3), (3, 3), (2, 2), 4)])
def test_prepacked_float_weights_against_ort_without_optimizations(geo):
    """With graph optimizations off, ORT's ConvTranspose prepacks a float32 weight initializer (CblasNoTrans:
    a larger StrideK when N < K, the M1TransposeB kernel for a 1x1 input); conv_transpose_ort(float_weights=True)
    and the plain reference model that, bit for bit (single-threaded ORT)."""
    ci, co, hw, k, s, groups = geo
    m, x, w, b = _direct_float_model(ci, co, hw, k, s, groups, (0, 0, 0, 0), sum(geo[:2]))
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.log_severity_level = 3
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    theirs = ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"]).run(
        None, {"x": x})[0]
    xd, wc, pad = conv_form(x, w, s, (0, 0, 0, 0), (0, 0), groups)
    fast = fct.conv_transpose_ort(xd, wc, b, pad, groups, float_weights=True, gemm_n=hw[0] * hw[1])
    assert np.array_equal(fast.view(np.uint32), theirs.view(np.uint32))
    if ci * co * hw[0] * hw[1] * k[0] * k[1] < 100000:
        ref = fct.conv_transpose_reference(x[0], w, b, s, (0, 0, 0, 0), (0, 0), groups, float_weights=True)
        assert np.array_equal(ref.view(np.uint32), theirs[0].view(np.uint32))


def test_qoperator_counts_costs_and_export(tmp_path):
    """fp32 MACs (as many as the integer conv of the same shape), zero operands from w == 0.0, shape_counts
    agrees; costed with the tech table's fp32 figures (Horowitz 3.7 + 0.9 pJ at 45 nm), refused without them;
    the .qnn keeps the float32 bit patterns; the ONNX export runs in ORT to the same output bits."""
    import copy

    from simulator.engine import Engine, quantize_input
    from simulator.errors import HwsimError
    from simulator.exporters.onnx_export import export_routes, to_onnx
    from simulator.hw.arch import load_hardware
    from simulator.hw.cost import estimate
    from simulator.importers.qnn_shapes import shape_counts, workloads_from_model
    from simulator.qnn.model_io import load_model, save_model
    from simulator.report import output_array

    model, qpath, x = check_qoperator_against_ort(tmp_path, 5, FIXED["k_blocks_300"])
    lay = next(lay for lay in model.layers if getattr(lay.weight_enc, "kind", None) == "float32")
    lay.weight[0, 0, 0, 0] = 0   # one zero weight (+0.0): zero-operand MACs count it
    model.check()
    codes = quantize_input(model, x)
    res = Engine(model).run(codes)
    counts = next(c for c in res.trace.layers if c.name == lay.name)
    out_elems = len(x) * int(np.prod(lay.out_shape))
    assert counts.fp32_macs == out_elems * lay.weight[0].size and not counts.macs
    assert counts.zero_any_macs > counts.zero_act_macs > 0
    shapes = next(c for c in shape_counts(model).layers if c.name == lay.name)
    assert shapes.fp32_macs == counts.fp32_macs // len(x)
    (wl,) = [w for w in workloads_from_model(model, res.trace) if w.name == lay.name]
    assert wl.mac_kind == "fp32" and wl.macs == counts.fp32_macs // len(x)
    hw = load_hardware("generic45")
    cost = estimate(workloads_from_model(model, res.trace), hw)
    lc = next(c for c in cost.layers if c.name == lay.name)
    assert lc.energy_pj["mac"] == pytest.approx((wl.macs - lc.gated_macs) * (3.7 + 0.9))
    stripped = copy.deepcopy(hw)
    object.__setattr__(stripped.tech.arith, "fp32_mult_pj", None)
    with pytest.raises(HwsimError, match="fp32_mult_pj"):
        estimate(workloads_from_model(model, res.trace), stripped)
    save_model(model, tmp_path / "m.qnn")
    loaded = load_model(tmp_path / "m.qnn")
    again = next(la for la in loaded.layers if la.name == lay.name)
    assert again.weight_enc.kind == "float32" and np.array_equal(again.weight, lay.weight)
    out = Engine(loaded).run(quantize_input(loaded, x)).output
    assert np.array_equal(out, res.output)
    assert export_routes(loaded)[lay.name] == "qdq: ort_float32"
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    sess = ort.InferenceSession(to_onnx(loaded).SerializeToString(), opts, providers=["CPUExecutionProvider"])
    assert np.array_equal(sess.run(None, {"input": x})[0], output_array(loaded, out))
    with pytest.raises(HwsimError, match="float32 weights have no integer operand values"):
        lay.weight_enc.decode(lay.weight)


def _hostile(tmp_path, edit):
    """The QOperator ConvTranspose model as a .qnn, its header / tensors edited by edit(layer dict, weight)."""
    import json

    from simulator.importers.onnx_import import import_onnx
    from simulator.qnn.container import read_container, write_container
    from simulator.qnn.model_io import save_model
    qpath = quantized_case(tmp_path, 3, **dict(FIXED["fpn_like"], hw=(4, 4)), fmt=QuantFormat.QOperator, wrap=True)
    model = import_onnx(qpath)
    save_model(model, tmp_path / "good.qnn")
    header, raw = read_container(tmp_path / "good.qnn")
    table = header.pop("tensors")
    header.pop("format_version", None)
    tensors = {name: (raw[name], e["bits"], e["signed"]) for name, e in table.items()}
    lay = next(d for d in header["model"]["layers"] if d.get("weight_encoding", {}).get("kind") == "float32")
    w = tensors[f"{lay['name']}.weight"][0].copy()
    edit(lay, w)
    tensors[f"{lay['name']}.weight"] = (w, 32, True)
    path = tmp_path / "bad.qnn"
    write_container(path, json.loads(json.dumps(header)), tensors)
    return path


def _refused(capsys, path, words):
    from simulator.cli import main
    rc = main(["run", str(path), "--hw", "generic45"])
    out, err = capsys.readouterr()
    lines = err.splitlines()
    assert rc != 0 and len(lines) == 1 and lines[0].startswith("hwsim: error: "), (rc, lines)
    assert "Traceback" not in out + err and "bad.qnn" in lines[0]
    for w in words:
        assert w in lines[0], lines[0]


def test_hostile_float32_weights_on_an_integer_conv(tmp_path, capsys):
    def edit(lay, w):
        lay["attrs"]["arithmetic"] = "integer"
        lay["attrs"].pop("bias_scale", None)
    _refused(capsys, _hostile(tmp_path, edit), ["weight_encoding.kind", "float32 weights", "ort_float32"])


@pytest.mark.parametrize("pattern", [0x7FC00000, 0x7F800000, 0xFF800000, 0xFFC00001, 0x7F800001])
def test_hostile_nan_and_inf_weight_patterns(tmp_path, capsys, pattern):
    def edit(lay, w):
        w.reshape(-1)[3] = pattern - (1 << 32) if pattern >= 1 << 31 else pattern
    _refused(capsys, _hostile(tmp_path, edit), [".weight", "NaN or infinite", "flat index 3"])
