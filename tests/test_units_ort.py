"""The ONNX Runtime arithmetic modes against scalar transcriptions of ORT's C++ loops (np.float32 scalars).

- avgpool `rounding: "ort_float32"`: contrib_ops/cpu/quantization/qlinear_pool.cc (windowed) and MLAS
  qlgavgpool.cpp (whole-image window, no padding);
- add `rescale: "dequantize"`: MLAS QLinearBinaryOpKernelAvx2 (and QLinearConcat's table with one input);
- the input quantizer with `input.division: "float32"`: MLAS MlasQuantizeLinear;
- the model header fields that carry them, with strict type checks.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from simulator.encodings import BinaryAct, UniformAct
from simulator.engine import Engine, quantize_input
from simulator.errors import HwsimError
from simulator.graph import Layer, Model
from simulator.qnn.model_io import header_to_model, load_model, model_to_header, save_model
from simulator.report import output_array
from simulator.units.pooling import avgpool_ort
from simulator.units.residual_add import residual_add

f32 = np.float32


def ort_avgpool_window(codes, kh, kw, sh, sw, pads, include_pad, xs, xzp, ys, yzp, lo, hi):
    """qlinear_pool.cc QLinearPool2DTask, one image, one channel: returns output codes."""
    h, w = codes.shape
    pt, pl, pb, pr = pads
    oh, ow = (h + pt + pb - kh) // sh + 1, (w + pl + pr - kw) // sw + 1
    xf = [[f32(xs) * f32(int(codes[i, j]) - xzp) for j in range(w)] for i in range(h)]
    out = np.zeros((oh, ow), dtype=np.int64)
    for ph in range(oh):
        hs = ph * sh - pt
        he = min(hs + kh, h)
        hs = max(hs, 0)
        for pw in range(ow):
            ws = pw * sw - pl
            we = min(ws + kw, w)
            ws = max(ws, 0)
            y = f32(0.0)
            for i in range(hs, he):
                for j in range(ws, we):
                    y = f32(y + xf[i][j])
            size = kh * kw if include_pad else (he - hs) * (we - ws)
            y = f32(y / f32(size))
            v = int(np.rint(f32(f32(y / f32(ys)) + f32(yzp))))
            out[ph, pw] = max(lo, min(hi, v))
    return out


def ort_global(codes, xs, xzp, ys, yzp, lo, hi):
    n = codes.size
    acc = int(codes.astype(np.int64).sum()) - xzp * n
    scale = f32(xs) / (f32(ys) * f32(n))
    return max(lo, min(hi, int(np.rint(f32(f32(acc) * scale))) + yzp))


@pytest.mark.parametrize("seed", range(40))
def test_avgpool_ort_matches_ort_loops(seed):
    rng = np.random.default_rng(seed)
    signed = bool(rng.integers(2))
    lo, hi = (-128, 127) if signed else (0, 255)
    h, w = int(rng.integers(2, 8)), int(rng.integers(2, 8))
    codes = rng.integers(lo, hi + 1, size=(2, 3, h, w))
    xs, ys = f32(rng.uniform(0.001, 0.2)), f32(rng.uniform(0.001, 0.2))
    if rng.integers(3) == 0:
        ys = xs                                # QDQ AveragePool shares the input's parameters
    xzp, yzp = (int(rng.integers(lo, hi + 1)) for _ in range(2))
    fzp = yzp + 128 if signed and rng.integers(2) else None   # the x86 uint8 rewrite of int8 QDQ
    if rng.integers(4) == 0:
        kh, kw, sh, sw, pads = h, w, 1, 1, (0, 0, 0, 0)
    else:
        kh, kw = int(rng.integers(1, min(h, 3) + 1)), int(rng.integers(1, min(w, 3) + 1))
        sh, sw = int(rng.integers(1, 3)), int(rng.integers(1, 3))
        pads = tuple(int(rng.integers(0, k)) for k in (kh, kw, kh, kw))
    include = bool(rng.integers(2))
    values, _ = avgpool_ort(codes - xzp, (kh, kw), (sh, sw), pads, include, float(xs), float(ys), yzp, fzp)
    got = np.clip(values + yzp, lo, hi)
    for n in range(2):
        for c in range(3):
            if (kh, kw) == (h, w) and not any(pads):
                want = ort_global(codes[n, c], xs, xzp, ys, yzp, lo, hi)
                assert got[n, c, 0, 0] == want
            else:
                zp = yzp if fzp is None else fzp
                want = ort_avgpool_window(codes[n, c] - (0 if fzp is None else -128), kh, kw, sh, sw, pads,
                                          include, xs, xzp + (0 if fzp is None else 128), ys, zp,
                                          lo + (0 if fzp is None else 128), hi + (0 if fzp is None else 128))
                want = want - (0 if fzp is None else 128)
                np.testing.assert_array_equal(got[n, c], want)


def test_avgpool_float_zero_point_changes_rounding():
    """Adding the zero point in float32 before rounding can round differently for zp and zp + 128."""
    x = np.full((1, 1, 1, 3), 1, dtype=np.int64)      # a 1x2 window on a 1x3 input: the float32 kernel
    found = False
    ys = f32(0.4)
    for _ in range(2000):
        ys = np.nextafter(ys, f32(1.0))
        a, _ = avgpool_ort(x, (1, 2), (1, 1), 0, True, 1.0, float(ys), 1, None)
        b, _ = avgpool_ort(x, (1, 2), (1, 1), 0, True, 1.0, float(ys), 1, 129)
        if a.ravel()[0] != b.ravel()[0]:
            found = True
            break
    assert found


@pytest.mark.parametrize("seed", range(30))
def test_add_dequantize_matches_ort_avx2(seed):
    rng = np.random.default_rng(seed)
    n_in = int(rng.integers(1, 3))
    scales = [f32(rng.uniform(0.001, 0.5)) for _ in range(n_in)]
    out_scale = f32(rng.uniform(0.001, 0.5))
    values = [rng.integers(-255, 256, size=50) for _ in range(n_in)]
    got = residual_add(values, [float(s) for s in scales], float(out_scale), "float32", rescale="dequantize")
    for i in range(50):
        total = None
        for v, s in zip(values, scales):
            real = f32(f32(int(v[i])) * s)
            total = real if total is None else f32(total + real)
        assert got[i] == int(np.rint(f32(total / out_scale)))


def test_add_dequantize_needs_float_mode():
    with pytest.raises(HwsimError):
        residual_add([np.arange(3)], [0.5], 0.25, "fixed_double", rescale="dequantize")


def _model(**kw):
    enc = UniformAct(8, True, 0.0375, 3)
    layers = [Layer("pool", "avgpool", ["input"], {"kernel": [2, 2], "stride": [1, 1], "rounding": "ort_float32",
                                                   "count_include_pad": False, "float_zero_point": 4 + 128},
                    UniformAct(8, True, 0.02, 4)),
              Layer("res", "add", ["pool", "pool"], {"requant": "float32", "rescale": "dequantize"},
                    UniformAct(8, False, 0.05, 7))]
    return Model("m", (2, 4, 4), enc, layers, input_division="float32", output_dequantize=True, **kw).check()


def test_input_division_float32():
    model = _model()
    rng = np.random.default_rng(0)
    x = (rng.normal(size=(50, 2, 4, 4)) * 3).astype(np.float32)
    codes = quantize_input(model, x)
    want = np.clip(np.rint(x / f32(0.0375)).astype(np.int64) + 3, -128, 127)
    np.testing.assert_array_equal(codes, want)
    # near a rounding boundary the float32 quotient can land on k + 0.5 where the float64 one is just below
    model64 = _model()
    model64.input_division = "float64"
    xs = []
    for k in range(-100, 100):
        v = f32((k + 0.5) * 0.0375)
        for _ in range(4):
            xs.append(v)
            v = np.nextafter(v, f32(0))
    x = np.array(xs * 32, dtype=np.float32)[: (len(xs) * 32) // 32 * 32].reshape(-1, 2, 4, 4)
    c32, c64 = quantize_input(model, x), quantize_input(model64, x)
    np.testing.assert_array_equal(c32, np.clip(np.rint(x / f32(0.0375)).astype(np.int64) + 3, -128, 127))
    assert np.any(c32 != c64)


def test_output_dequantize_and_header_round_trip(tmp_path):
    model = _model()
    codes = quantize_input(model, np.random.default_rng(1).normal(size=(3, 2, 4, 4)).astype(np.float32))
    out = Engine(model).run(codes).output
    arr = output_array(model, out)
    assert arr.dtype == np.float32
    np.testing.assert_array_equal(arr, (out - 7).astype(np.float32) * f32(0.05))
    save_model(model, tmp_path / "m.qnn")
    again = load_model(tmp_path / "m.qnn")
    assert again.input_division == "float32" and again.output_dequantize
    assert again.layers[0].attr("float_zero_point") == 132
    np.testing.assert_array_equal(Engine(again).run(codes).output, out)


@pytest.mark.parametrize("path, value, msg", [
    (("input", "division"), "float16", "division"),
    (("input", "division"), 32, "division"),
    (("output", "dequantize"), "yes", "dequantize"),
    (("output", "dequantize"), 1, "dequantize"),
    (("output", "extra"), True, "unknown key"),
])
def test_header_fields_are_strict(path, value, msg):
    header, tensors = model_to_header(_model())
    m = header["model"]
    m.setdefault(path[0], {})[path[1]] = value
    with pytest.raises(HwsimError, match=msg):
        header_to_model(header, {k: v[0] for k, v in tensors.items()}, "x.qnn")


def test_graph_checks_for_new_attributes():
    enc = UniformAct(8, False, 0.1, 0)
    bad = [
        Layer("p", "avgpool", ["input"], {"rounding": "half_even", "float_zero_point": 3}),
        Layer("p", "avgpool", ["input"], {"rounding": "ort_float32"}, BinaryAct(1.0)),
        Layer("a", "add", ["input"], {"requant": "fixed_double", "rescale": "dequantize"}, enc),
        Layer("a", "add", ["input"], {"requant": "float32", "rescale": "sideways"}, enc),
    ]
    for lay in bad:
        with pytest.raises(HwsimError):
            Model("m", (1, 4, 4), enc, [lay]).check()
    with pytest.raises(HwsimError, match="dequantize"):
        Model("m", (1, 4, 4), enc, [Layer("r", "relu", ["input"])], output_dequantize="yes").check()
    # one-input add (a rescale) and an avgpool that changes the encoding are valid
    Model("m", (1, 4, 4), enc, [Layer("a", "add", ["input"], {"requant": "float32", "rescale": "dequantize"},
                                      UniformAct(8, True, 0.3, -2)),
                                Layer("p", "avgpool", ["a"], {"rounding": "ort_float32"}, enc)]).check()


@settings(max_examples=80, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), dtype=st.sampled_from(["uint8", "int8", "int16"]), big=st.booleans())
def test_global_average_codes_in_one_pass_equal_the_unit(seed, dtype, big):
    """code_tables.global_average_ort_codes (the engine's whole-plane ORT average pool on uniform codes) against
    the unit (pooling.avgpool_ort on the decoded values, then the output encoder): sums beyond float32's
    integers (2^24), scales from tiny to huge (float32 overflow), every code dtype; its numpy twin too."""
    from simulator.kernels import code_tables
    from simulator.kernels.epilogue import code_dtype
    rng = np.random.default_rng(seed)
    info = np.iinfo(dtype)
    n, c = int(rng.integers(1, 4)), int(rng.integers(1, 6))
    h, w = (int(rng.integers(20, 60)), int(rng.integers(20, 60))) if big else (int(rng.integers(1, 8)),
                                                                               int(rng.integers(1, 8)))
    codes = rng.integers(int(info.min), int(info.max) + 1, (n, c, h, w)).astype(dtype)
    if rng.integers(2):
        codes[:, 0] = info.max   # one plane at the top of the range
    in_zp = int(rng.integers(int(info.min), int(info.max) + 1))
    in_scale = float(rng.choice([1e-30, 1e-3, 0.02, 1.0, 7.5, 1e30]))
    signed = bool(rng.integers(2))
    out_enc = UniformAct(int(rng.choice([4, 8, 16])), signed, float(rng.choice([1e-6, 0.05, 1.0, 300.0])), 0)
    lo, hi = out_enc.code_range()
    out_enc = UniformAct(out_enc.bits, signed, out_enc.scale, int(rng.integers(lo, hi + 1)))
    values, _ = avgpool_ort(codes.astype(np.int64) - in_zp, (h, w), None, 0, False, in_scale, out_enc.scale,
                            out_enc.zero_point)
    want = out_enc.encode(values)
    m = np.float32(in_scale) / (np.float32(out_enc.scale) * np.float32(h * w))
    got = code_tables.global_average_ort_codes(codes, in_zp, m, lo, hi, out_enc.zero_point, code_dtype(out_enc))
    assert got.dtype == code_dtype(out_enc) and np.array_equal(got.astype(np.int64), want)
    twin = np.full(n * c, 7, code_dtype(out_enc))
    code_tables._global_average_numpy(0, n * c, codes.reshape(n * c, -1), in_zp, m, lo, hi, out_enc.zero_point, twin)
    assert np.array_equal(twin.astype(np.int64), want.reshape(-1))
