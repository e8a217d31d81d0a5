"""QONNX importer: Quant / BipolarQuant / MultiThreshold / Trunc graphs against qonnx's own executor.

With power-of-two scales qonnx's float32 execution is exact, so hwsim must reproduce the integer code of every
quantized tensor bit for bit (chained through the whole network). With float32 scales the two part ways on a
few near-tie elements; `compare_with_qonnx` measures how often and by how much.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("onnx")
pytest.importorskip("qonnx")

from qonnx_factory import G, pow2, qrange, weight_quant  # noqa: E402

from simulator.encodings import BinaryAct, BinaryW, ThresholdAct, UniformAct  # noqa: E402
from simulator.engine import Engine, quantize_input  # noqa: E402
from simulator.errors import HwsimError  # noqa: E402
from simulator.importers.qonnx_import import compare_with_qonnx, format_agreement, import_qonnx  # noqa: E402
from simulator.validate import compare as validate  # noqa: E402


def assert_identical(path, model, x):
    results = compare_with_qonnx(path, model, x)
    assert results, "nothing was compared"
    bad = [r for r in results if r.mismatches or r.local_mismatches > 0]
    assert not bad, "\n" + format_agreement(results)
    for r in results:   # a float output with per-channel scales is stored at the finest scale: off grid
        assert r.dequantized or r.off_grid < 1e-3, f"{r.hwsim}: qonnx values off the code grid by {r.off_grid}"
    return results


ROUNDINGS = ("ROUND", "ROUND", "FLOOR", "CEIL", "HALF_UP")


def act_quant(g, rng, x, roundings=ROUNDINGS, even_zp=False):
    """A random activation Quant: 2..8 bits, signed or not, sometimes a zero point, narrow, FLOOR / CEIL."""
    bits = int(rng.integers(2, 9))
    signed = bool(rng.integers(2))
    narrow = bool(rng.integers(4) == 0)
    lo, hi = qrange(bits, signed, narrow)
    zp = 0 if rng.integers(2) else int(rng.integers(lo, hi + 1))
    if even_zp:
        zp -= zp % 2
    rounding = roundings[rng.integers(len(roundings))]
    return g.quant(x, pow2(rng, -5, -1), zp, bits, signed, narrow, rounding)


def random_uniform_net(rng, path, roundings=ROUNDINGS, even_zp=False):
    """Quant input -> 1..3 convs (1..8-bit weights, bias, pow2 BN-like Mul/Add, ReLU, MaxPool before or after the
    quantizer) -> Flatten -> MatMul / Gemm -> Quant or float output."""
    c, h = int(rng.integers(1, 4)), int(rng.integers(6, 10))
    g = G([1, c, h, h])
    in_bits, in_signed = int(rng.integers(2, 9)), bool(rng.integers(2))
    lo, hi = qrange(in_bits, in_signed, False)
    in_zp = 0 if rng.integers(2) else int(rng.integers(lo, hi + 1))
    x = g.quant("x", pow2(rng, -4, 0), in_zp, in_bits, in_signed, bool(in_signed and rng.integers(2)))
    for _ in range(int(rng.integers(1, 4))):
        co = int(rng.integers(1, 6))
        bits = int(rng.integers(1, 9))
        w, s_w = weight_quant(g, rng, (co, c, 3, 3), bits, signed=bits == 1 or bool(rng.integers(4)),
                              per_channel=bool(rng.integers(2)))
        pad = int(rng.integers(0, 2))
        bias = None
        if rng.integers(2):   # a float bias: whole accumulator units, or quarters (forces thresholds)
            bias = g.const(rng.integers(-40, 40, size=co) * 2.0 ** -int(rng.integers(0, 3))
                           * np.broadcast_to(s_w.reshape(-1), (co,)) * 2.0 ** -4)
        y = g.conv(x, w, bias, pads=(pad,) * 4)
        if rng.integers(2):
            y = g.node("Mul", [y, g.const(pow2(rng, -2, 1, size=(1, co, 1, 1)))])
        if rng.integers(2):
            y = g.node("Add", [y, g.const(rng.integers(-8, 8, size=(1, co, 1, 1)) * 2.0 ** -6)])
        if rng.integers(2):
            y = g.node("Relu", [y])
        pool_first = bool(rng.integers(3) == 0) and y and h - 2 + 2 * pad >= 2
        if pool_first:
            y = g.node("MaxPool", [y], kernel_shape=[2, 2], strides=[2, 2])
        x = act_quant(g, rng, y, roundings, even_zp)
        h = h - 2 + 2 * pad
        if pool_first:
            h //= 2
        elif rng.integers(3) == 0 and h >= 2:
            x = g.node("MaxPool", [x], kernel_shape=[2, 2], strides=[2, 2])
            h //= 2
        c = co
        if h < 3:
            break
    x = g.node("Flatten", [x], axis=1)
    k, out = c * h * h, int(rng.integers(2, 8))
    bits = int(rng.integers(2, 9))
    if rng.integers(2):
        w, _ = weight_quant(g, rng, (k, out), bits, axis=1)
        y = g.node("MatMul", [x, w])
    else:
        w, _ = weight_quant(g, rng, (out, k), bits, axis=0)
        y = g.node("Gemm", [x, w], transB=1)
    if rng.integers(2):
        y = act_quant(g, rng, y, roundings, even_zp)
    return g.save(y, path)


def test_random_uniform_nets_match_qonnx_bit_for_bit(tmp_path):
    rng = np.random.default_rng(2024)
    kinds = set()
    for i in range(30):
        path = random_uniform_net(rng, tmp_path / f"u{i}.onnx")
        model = import_qonnx(path)
        kinds |= {type(lay.out_enc).__name__ for lay in model.layers}
        shape = model.input_shape
        x = (rng.standard_normal((24, *shape)) * 4).astype(np.float32)
        assert_identical(path, model, x)
        assert validate(Engine(model), quantize_input(model, x)).passed
    assert {"UniformAct", "ThresholdAct"} <= kinds


def test_requant_and_threshold_paths_agree(tmp_path):
    """The same graph imported with the requantizer and with comparator banks gives the same codes."""
    rng = np.random.default_rng(7)
    compared = 0
    for i in range(12):   # ROUND with even zero points: where the requantizer is exact (see _note_odd_zp)
        path = random_uniform_net(rng, tmp_path / f"p{i}.onnx", roundings=("ROUND",), even_zp=True)
        a = import_qonnx(path, quant_as="requant")
        if any("rounded" in note for note in a.metadata.get("import_notes", [])):
            continue   # a bias of fractional accumulator units: only thresholds are exact
        b = import_qonnx(path, quant_as="thresholds")
        assert any(isinstance(lay.out_enc, ThresholdAct) for lay in b.layers)
        x = quantize_input(a, (rng.standard_normal((16, *a.input_shape)) * 4).astype(np.float32))
        assert np.array_equal(Engine(a).run(x).output, Engine(b).run(x).output)
        compared += 1
    assert compared >= 4


def binary_net(rng, path, pad=1):
    """BipolarQuant input and weights (XNOR-popcount), batch-norm-like Mul/Add, BipolarQuant activations,
    zero padding (ONNX pads with real 0), MaxPool, a binary dense layer with a float output."""
    g = G([1, 3, 8, 8])
    x = g.bipolar("x", 1.0)
    c = 3
    for co in (6, 5):
        w = g.bipolar(g.const(rng.standard_normal((co, c, 3, 3)), "w"), pow2(rng, -3, 0, size=(co, 1, 1, 1)))
        y = g.conv(x, w, pads=(pad,) * 4)
        y = g.node("Mul", [y, g.const(pow2(rng, -2, 2, size=(1, co, 1, 1)))])
        y = g.node("Add", [y, g.const(rng.integers(-16, 16, size=(1, co, 1, 1)) * 2.0 ** -3)])
        x = g.bipolar(y, 0.5)
        c = co
    x = g.node("MaxPool", [x], kernel_shape=[2, 2], strides=[2, 2])
    x = g.node("Flatten", [x], axis=1)
    k = c * ((8 - 4 + 4 * pad) // 2) ** 2
    w = g.bipolar(g.const(rng.standard_normal((k, 10)), "w"), 1.0)
    y = g.node("MatMul", [x, w])
    y = g.node("Mul", [y, g.const(np.float32(0.25))])
    return g.save(y, path)


@pytest.mark.parametrize("pad", [0, 1])
def test_binary_xnor_net_matches_qonnx(tmp_path, pad):
    rng = np.random.default_rng(11 + pad)
    path = binary_net(rng, tmp_path / "bin.onnx", pad)
    model = import_qonnx(path)
    macs = [lay for lay in model.layers if lay.op in ("conv2d", "dense")]
    assert all(lay.is_xnor for lay in macs)
    assert all(isinstance(lay.weight_enc, BinaryW) for lay in macs)
    assert isinstance(model.input_enc, BinaryAct)
    assert [lay.attr("binary_pad") for lay in macs if lay.op == "conv2d"] == (["zero"] * 2 if pad else ["+1"] * 2)
    x = rng.standard_normal((32, 3, 8, 8)).astype(np.float32)
    x[0, 0, 0, :4] = [0.0, -0.0, 1e-30, -1e-30]          # sign(0) = +1 on both sides
    assert_identical(path, model, x)
    assert validate(Engine(model), quantize_input(model, x)).passed


def multithreshold_net(rng, path, shared=False):
    """Quant input -> conv -> per-channel MultiThreshold (signed output via out_bias) -> conv -> bipolar
    MultiThreshold (out_scale 2, out_bias -1) -> dense with 3-bit weights -> 15-threshold MultiThreshold."""
    g = G([1, 2, 7, 7])
    x = g.quant("x", 2.0 ** -4, 0, 8, 0, 0)
    w, s = weight_quant(g, rng, (4, 2, 3, 3), 4, per_channel=not shared)
    y = g.conv(x, w, pads=(1, 1, 1, 1))
    y = g.node("Mul", [y, g.const(pow2(rng, -1, 1, size=(1, 1 if shared else 4, 1, 1)))])
    rows = 1 if shared else 4    # shared thresholds on a per-tensor scale stay one row in accumulator units
    t = np.sort(rng.uniform(-3, 3, size=(rows, 7)), axis=1).astype(np.float32)
    t[:, 3] = np.round(t[:, 3] * 64) / 64                  # values the pre-activation can hit exactly (ties)
    x = g.mt(y, t, out_scale=0.25, out_bias=-1.0, out_dtype="INT4")   # codes 0..7, zero point 4
    w, s = weight_quant(g, rng, (5, 4, 3, 3), 3)
    y = g.conv(x, w)
    y = g.node("Add", [y, g.const(rng.integers(-8, 8, size=(1, 5, 1, 1)) * 2.0 ** -5)])
    x = g.mt(y, np.zeros((1, 1), np.float32), out_scale=2.0, out_bias=-1.0, out_dtype="BIPOLAR")
    x = g.node("Flatten", [x], axis=1)
    w, s = weight_quant(g, rng, (5 * 5 * 5, 6), 3, axis=1)
    y = g.node("MatMul", [x, w])
    t = np.sort(rng.uniform(-4, 4, size=(6, 15)), axis=1).astype(np.float32)
    y = g.mt(y, t, out_scale=1.0, out_bias=0.0)
    return g.save(y, path)


@pytest.mark.parametrize("shared", [False, True])
def test_multithreshold_net_matches_qonnx(tmp_path, shared):
    rng = np.random.default_rng(5 + shared)
    path = multithreshold_net(rng, tmp_path / "mt.onnx", shared)
    model = import_qonnx(path)
    encs = [lay.out_enc for lay in model.layers if lay.op in ("conv2d", "dense")]
    assert isinstance(encs[0], ThresholdAct) and encs[0].zero_point == 4 and encs[0].n_thresholds == 7
    assert len(encs[0].thresholds) == (1 if shared else 4)
    assert isinstance(encs[1], BinaryAct)
    assert isinstance(encs[2], ThresholdAct) and encs[2].bits == 4 and len(encs[2].thresholds) == 6
    x = rng.uniform(0, 12, size=(32, 2, 7, 7)).astype(np.float32)
    assert_identical(path, model, x)
    assert validate(Engine(model), quantize_input(model, x)).passed
    trace = Engine(model).run(quantize_input(model, x)).trace
    assert trace.layers[0].qk == 32 * 4 * 7 * 7 and trace.layers[0].requants == 0


def residual_pool_net(rng, path):
    """Residual Add -> ReLU -> Quant, AveragePool -> Mul(4) -> Trunc (TruncAvgPool), GlobalAveragePool -> Quant,
    Concat, Gemm with bias."""
    g = G([1, 3, 8, 8])
    s = 2.0 ** -3
    x = g.quant("x", s, 0, 6, 1, 0)
    w, _ = weight_quant(g, rng, (3, 3, 3, 3), 5)
    y = g.conv(x, w, pads=(1, 1, 1, 1))
    r = g.quant(y, s, 0, 6, 1, 0)
    z = g.node("Add", [r, x])
    z = g.node("Relu", [z])
    z = g.quant(z, 2.0 ** -2, 0, 5, 0, 0)
    a = g.node("AveragePool", [z], kernel_shape=[2, 2], strides=[2, 2])
    a = g.node("Mul", [a, g.const(np.float32(4.0))])
    a = g.trunc(a, 2.0 ** -2, 0.0, 7, 5)
    b = g.node("GlobalAveragePool", [z])
    b = g.quant(b, 2.0 ** -2, 0, 5, 0, 0)
    b = g.node("Flatten", [b], axis=1)
    a = g.node("Flatten", [a], axis=1)
    ab = g.node("Concat", [a, b], axis=1)
    w, s_w = weight_quant(g, rng, (4, 3 * 16 + 3), 4, axis=0)
    bias = g.const(rng.integers(-30, 30, size=4) * s_w.reshape(-1) * 2.0 ** -2)
    y = g.node("Gemm", [ab, w, bias], transB=1)
    y = g.quant(y, 2.0 ** -1, 0, 8, 1, 0)
    return g.save(y, path)


def test_residual_avgpool_trunc_concat(tmp_path):
    rng = np.random.default_rng(3)
    path = residual_pool_net(rng, tmp_path / "res.onnx")
    model = import_qonnx(path)
    ops = [lay.op for lay in model.layers]
    assert ops.count("add") == 1 and ops.count("avgpool") == 2 and "concat" in ops
    x = (rng.standard_normal((32, 3, 8, 8)) * 3).astype(np.float32)
    assert_identical(path, model, x)


@pytest.mark.parametrize("rounding", ["UP", "DOWN", "HALF_DOWN", "HALF_UP", "CEIL", "FLOOR", "ROUND"])
def test_other_folded_ops_and_rounding_modes(tmp_path, rounding):
    """Sub, Div, Clip, Identity, Gemm alpha/beta, a [N, C, H, W] Reshape, and every qonnx rounding mode on a signed
    activation (exact ties included: all scales are powers of two)."""
    rng = np.random.default_rng(len(rounding))
    g = G([1, 2, 5, 5])
    x = g.quant("x", 0.25, 0, 6, 1, 0)
    w, s = weight_quant(g, rng, (4, 2, 3, 3), 5)
    y = g.conv(x, w, pads=(1, 1, 1, 1))
    y = g.node("Sub", [y, g.const(rng.integers(-8, 8, size=(1, 4, 1, 1)) * 2.0 ** -4)])
    y = g.node("Div", [y, g.const(np.float32(0.5))])
    y = g.node("Clip", [y, g.const(np.float32(-3.0)), g.const(np.float32(2.5))])
    y = g.node("Identity", [y])
    x = g.quant(y, 0.125, 0, 6, 1, 0, rounding)
    x = g.node("Reshape", [x, g.const([1, 4, 5, 5], dtype=np.int64)])
    x = g.node("Reshape", [x, g.const([1, -1], dtype=np.int64)])
    w, s = weight_quant(g, rng, (3, 100), 4)
    y = g.node("Gemm", [x, w, g.const(rng.integers(-20, 20, size=3) * 2.0 ** -5)], transB=1, alpha=0.5, beta=2.0)
    y = g.quant(y, 0.25, 0, 8, 1, 0, rounding)
    path = g.save(y, tmp_path / "misc.onnx")
    model = import_qonnx(path)
    x = (rng.standard_normal((40, 2, 5, 5)) * 3).astype(np.float32)
    assert_identical(path, model, x)


def test_qnn_round_trip_keeps_thresholds(tmp_path):
    from simulator.qnn.model_io import load_model, save_model
    rng = np.random.default_rng(9)
    path = multithreshold_net(rng, tmp_path / "mt.onnx")
    model = import_qonnx(path)
    save_model(model, tmp_path / "mt.qnn")
    again = load_model(tmp_path / "mt.qnn")
    assert [lay.out_enc for lay in again.layers] == [lay.out_enc for lay in model.layers]
    x = quantize_input(model, rng.uniform(0, 12, size=(8, 2, 7, 7)).astype(np.float32))
    assert np.array_equal(Engine(model).run(x).output, Engine(again).run(x).output)


def test_finn_dialect_integer_input_and_weights(tmp_path):
    """FINN-ONNX after streamlining: a datatype-annotated integer input, integer-valued float weights, Mul/Add
    folded into MultiThreshold."""
    from qonnx.core.datatype import DataType
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.transformation.infer_shapes import InferShapes
    rng = np.random.default_rng(21)
    g = G([1, 2, 6, 6])
    y = g.conv("x", g.const(rng.integers(-7, 8, size=(3, 2, 3, 3)), "w"))
    y = g.node("Mul", [y, g.const(np.float32(0.5))])
    y = g.node("Add", [y, g.const(rng.integers(-4, 4, size=(1, 3, 1, 1)) * 0.25)])
    x = g.mt(y, np.sort(rng.uniform(-20, 20, size=(3, 3)), axis=1).astype(np.float32), out_dtype="UINT2")
    y = g.conv(x, g.const(rng.integers(-3, 4, size=(4, 3, 3, 3)), "w"))
    y = g.mt(y, np.sort(rng.uniform(-6, 6, size=(4, 7)), axis=1).astype(np.float32), out_bias=-4.0, out_dtype="INT3")
    mw = ModelWrapper(g.model(y)).transform(InferShapes())
    mw.set_tensor_datatype("x", DataType["UINT4"])
    path = str(tmp_path / "finn.onnx")
    mw.save(path)
    model = import_qonnx(path)
    assert model.input_enc == UniformAct(4, False, 1.0, 0)
    assert [type(lay.out_enc) for lay in model.layers] == [ThresholdAct, ThresholdAct]
    x = rng.integers(0, 16, size=(32, 2, 6, 6)).astype(np.float32)
    assert_identical(path, model, x)


def test_import_any_dispatches_to_qonnx(tmp_path):
    from simulator.importers import import_any
    rng = np.random.default_rng(1)
    path = multithreshold_net(rng, tmp_path / "mt.onnx")
    model = import_any(path)
    assert any(isinstance(lay.out_enc, ThresholdAct) for lay in model.layers)
    assert model.metadata["source_format"] == "qonnx"


# --------------------------------------------------------------------------------------------- float32 scales

def float_scale_net(rng, path):
    """Brevitas-like: float32 scales everywhere, a real BatchNormalization, 4-bit and 8-bit Quant activations,
    a MultiThreshold after batch norm, float bias."""
    g = G([1, 3, 10, 10])
    def f(lo, hi, size=None):
        return np.float32(rng.uniform(lo, hi)) if size is None else rng.uniform(lo, hi, size=size).astype(np.float32)

    x = g.quant("x", f(0.01, 0.05), 0, 8, 0, 0)
    sw = f(0.005, 0.05, (8, 1, 1, 1))
    w = g.quant(g.const(rng.standard_normal((8, 3, 3, 3)) * sw * 3, "w"), sw, 0, 4, 1, 1)
    y = g.conv(x, w, g.const(f(-0.3, 0.3, 8)), pads=(1, 1, 1, 1))
    y = g.node("BatchNormalization", [y, g.const(f(0.5, 2, 8)), g.const(f(-0.5, 0.5, 8)), g.const(f(-0.2, 0.2, 8)),
                                      g.const(f(0.5, 2, 8))])
    y = g.node("Relu", [y])
    x = g.quant(y, f(0.02, 0.1), 0, 4, 0, 0)
    sw = f(0.002, 0.02, (6, 1, 1, 1))
    w = g.quant(g.const(rng.standard_normal((6, 8, 3, 3)) * sw * 30, "w"), sw, 0, 8, 1, 1)
    y = g.conv(x, w)
    y = g.node("BatchNormalization", [y, g.const(f(0.5, 2, 6)), g.const(f(-0.5, 0.5, 6)), g.const(f(-0.2, 0.2, 6)),
                                      g.const(f(0.5, 2, 6))])
    x = g.mt(y, np.sort(f(-1, 1, (6, 3)), axis=1), out_scale=f(0.1, 0.3), out_bias=0.0, out_dtype="UINT2")
    x = g.node("MaxPool", [x], kernel_shape=[2, 2], strides=[2, 2])
    x = g.node("Flatten", [x], axis=1)
    sw = f(0.002, 0.02, (1, 10))
    w = g.quant(g.const(rng.standard_normal((6 * 16, 10)) * sw * 30, "w"), sw, 0, 8, 1, 1)
    y = g.node("MatMul", [x, w])
    y = g.quant(y, f(0.01, 0.05), 0, 8, 1, 0)
    return g.save(y, path)


def test_float32_scales_agreement_is_measured(tmp_path):
    rng = np.random.default_rng(42)
    path = float_scale_net(rng, tmp_path / "fs.onnx")
    model = import_qonnx(path)
    x = rng.uniform(0, 8, size=(64, 3, 10, 10)).astype(np.float32)
    results = compare_with_qonnx(path, model, x)
    print("\n" + format_agreement(results))
    total = sum(r.elements for r in results)
    local = sum(max(r.local_mismatches, 0) for r in results)
    # qonnx rounds float32 sums and products; hwsim is exact integer + float64 requantization. They may part on
    # near-ties only: few elements, one LSB each, layer by layer.
    assert local <= 1e-3 * total
    assert all(r.local_max_diff_lsb <= 1 for r in results)
    v = validate(Engine(model), quantize_input(model, x), tolerance_lsb=1)
    assert v.passed, v.to_dict()
    # Forcing the requantizer rounds each batch-norm bias to whole accumulator units (noted in the metadata):
    # still at most one LSB per layer, on a few elements.
    forced = import_qonnx(path, quant_as="requant")
    assert any("rounded" in n for n in forced.metadata["import_notes"])
    results = compare_with_qonnx(path, forced, x)
    print(format_agreement(results))
    assert all(r.local_max_diff_lsb <= 1 for r in results)
    assert sum(max(r.local_mismatches, 0) for r in results) <= 1e-2 * total


def test_odd_input_zero_point_ties_are_flagged(tmp_path):
    """qonnx rounds x/s + zp half to even; hwsim's input quantizer (like ONNX QuantizeLinear) rounds x/s, then
    adds zp. With an odd zero point exact ties go the other way: the importer says so, and the comparison sees it."""
    g = G([1, 1, 1, 8])
    x = g.quant("x", 0.5, 1, 4, 0, 0)
    w, _ = weight_quant(g, np.random.default_rng(0), (2, 1, 1, 1), 4)
    path = g.save(g.quant(g.conv(x, w), 0.25, 0, 8, 1, 0), tmp_path / "odd.onnx")
    model = import_qonnx(path)
    assert any("odd zero point 1" in n for n in model.metadata["import_notes"])
    ties = ((np.arange(8) + 0.5) * 0.5).astype(np.float32).reshape(1, 1, 1, 8)     # x/s = k + 1/2
    inp = compare_with_qonnx(path, model, ties)[0]
    assert inp.hwsim == "input" and inp.mismatches == 8 and inp.max_diff_lsb == 1    # every tie
    off = compare_with_qonnx(path, model, ties + np.float32(0.01))[0]
    assert off.mismatches == 0


# --------------------------------------------------------------------------------------------- ThresholdAct

def test_threshold_encoding_unit():
    from simulator.encodings import activation_from_dict
    rng = np.random.default_rng(0)
    rows = tuple(tuple(int(v) for v in np.sort(rng.integers(-50, 50, size=15))) for _ in range(3))
    enc = ThresholdAct(4, True, 0.5, -2, thresholds=rows)
    acc = rng.integers(-60, 60, size=(5, 3, 4, 4))
    codes = enc.encode_acc(acc)
    brute = np.array([[[[-8 + sum(a >= t for t in rows[c]) for a in r] for r in ch] for c, ch in enumerate(n)]
                      for n in acc])
    assert np.array_equal(codes, brute)
    assert activation_from_dict(enc.to_dict()) == enc
    assert enc.decode(codes).min() >= -6 and isinstance(enc, UniformAct)
    for bad, match in [(((3, 1),), "non-decreasing"), (((1,) * 16,), "1..15"), (((1, 2), (1,)), "row 0"),
                       ((), "non-empty"), (((1.5,),), "integer")]:
        with pytest.raises(HwsimError, match=match):
            ThresholdAct(4, True, 0.5, 0, thresholds=bad)


def test_threshold_rows_must_match_channels():
    from simulator.encodings import UniformW
    from simulator.graph import Layer, Model
    lay = Layer("d", "dense", ["input"], weight=np.ones((3, 4), np.int64), weight_enc=UniformW(2, True),
                out_enc=ThresholdAct(2, False, 1.0, 0, thresholds=((0, 1, 2), (0, 1, 2))))
    model = Model("m", (4,), UniformAct(4, False, 1.0, 0), [lay])
    with pytest.raises(HwsimError, match="1 or 3"):
        Engine(model)


# --------------------------------------------------------------------------------------------- errors

def test_bad_graphs_give_one_clear_error(tmp_path):
    g = G([1, 2, 4, 4])
    x = g.quant("x", np.full((1, 2, 1, 1), 0.5, np.float32), 0, 8, 0, 0)     # per-channel activation scale
    path = g.save(x, tmp_path / "pc.onnx")
    with pytest.raises(HwsimError, match="per-channel activation"):
        import_qonnx(path)

    g = G([1, 2, 4, 4])
    x = g.quant("x", 0.5, 0, 8, 0, 0)
    y = g.node("Sigmoid", [x])
    path = g.save(y, tmp_path / "sig.onnx")
    with pytest.raises(HwsimError) as exc:
        import_qonnx(path)
    assert "Sigmoid" in str(exc.value) and "sig.onnx" in str(exc.value)

    g = G([1, 2, 4, 4])
    x = g.quant("x", 0.5, 0, 8, 0, 0)
    y = g.conv(x, g.const(np.full((3, 2, 1, 1), 0.3), "w"))             # float (non-integer) weights
    path = g.save(g.quant(y, 0.5, 0, 8, 0, 0), tmp_path / "fw.onnx")
    with pytest.raises(HwsimError, match="quantized initializer"):
        import_qonnx(path)

    g = G([1, 2, 4, 4])
    x = g.quant("x", 0.5, 0, 8, 0, 0)
    y = g.node("MaxPool", [x], strides=[2, 2])                              # no kernel_shape
    path = g.save(y, tmp_path / "mp.onnx")
    with pytest.raises(HwsimError, match="malformed MaxPool"):
        import_qonnx(path)

    g = G([1, 2, 4, 4])
    x = g.quant("x", 0.5, 0, 8, 0, 0)
    w, _ = weight_quant(g, np.random.default_rng(0), (3, 2, 1, 1), 4)
    y = g.mt(g.conv(x, w), np.array([[0.0, np.inf]], np.float32))
    path = g.save(y, tmp_path / "inf.onnx")
    with pytest.raises(HwsimError, match="finite"):
        import_qonnx(path)

    with pytest.raises(HwsimError, match="not found|cannot read"):
        import_qonnx(tmp_path / "missing.onnx")
