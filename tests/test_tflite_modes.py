"""TFLite's kernel paths as declared arithmetic: requant modes fixed_double_ruy, fixed_double_blocks8, float64_away
and the average-pool rounding tflite_codes.

- the units against Python big-integer models written here from the C++ sources (ruy/kernel_avx2_fma.cc,
  tflite/kernels/internal/optimized/optimized_ops.h Quantize, reference/integer_ops/fully_connected.h,
  reference/integer_ops/pooling.h), not from hwsim's code: extreme accumulators, exact ties, every shift;
- the fused epilogue against the units, in numba mode and in Python mode (a child with NUMBA_DISABLE_JIT=1);
- graph validation, the engine against the float reference, the ONNX export against ONNX Runtime;
- LiteRT itself (if `ai_edge_litert` is installed): the one-layer int8 models of tests/tflite/mode_fixtures/ (made
  by tests/tflite/make_mode_fixtures.py) run with the reference and the optimized kernels, every output compared
  with hwsim's engine running the same layer in the mode that path needs.
"""
from __future__ import annotations

import math
import os
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from simulator.encodings import UniformAct, UniformW
from simulator.engine import Engine
from simulator.errors import HwsimError
from simulator.graph import Layer, Model
from simulator.kernels.epilogue import make_epilogue, run_epilogue
from simulator.reference import run_reference
from simulator.units.pooling import avgpool, avgpool_tflite
from simulator.units.requantizer import requantize, requantize_reference

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).parent / "tflite" / "mode_fixtures"
NEW_MODES = ("fixed_double_ruy", "fixed_double_blocks8", "float64_away")
INT32_MIN, INT32_MAX = -(1 << 31), (1 << 31) - 1
HALF = Fraction(1, 2)


# ------------------------------------------------------------------------------------ big-integer models
def tfl_quantize_multiplier(m: float) -> tuple[int, int]:
    """tflite QuantizeMultiplier on exact rationals: m = frac * 2^e, frac in [1/2, 1), q = std::round(frac * 2^31)."""
    frac, e = Fraction(m), 0
    while frac >= 1:
        frac, e = frac / 2, e + 1
    while frac < HALF:
        frac, e = frac * 2, e - 1
    q = math.floor(frac * 2 ** 31 + HALF)          # positive: half away = half up
    if q == 2 ** 31:
        q, e = q // 2, e + 1
    if e < -31:
        return 0, 0
    return q, e


def _high(acc: int, m: float) -> tuple[int, int] | None:
    """acc << left, then the doubling high product (x*q + 2^30) >> 31 (ties up); None if acc << left leaves int32."""
    q, e = tfl_quantize_multiplier(m)
    x = acc * 2 ** max(e, 0)
    if not INT32_MIN <= x <= INT32_MAX:
        return None
    return math.floor(Fraction(x * q, 2 ** 31) + HALF), max(-e, 0)


def model_ruy(acc: int, m: float) -> int | None:
    """ruy apply_multiplier + rounding_right_shift: the last shift rounds ties toward +inf."""
    hr = _high(acc, m)
    return None if hr is None else math.floor(Fraction(hr[0], 2 ** hr[1]) + HALF)


def model_gemmlowp(acc: int, m: float) -> int | None:
    """MultiplyByQuantizedMultiplier: RoundingDivideByPOT rounds ties away from zero."""
    hr = _high(acc, m)
    if hr is None:
        return None
    d = Fraction(hr[0], 2 ** hr[1])
    return math.floor(abs(d) + HALF) * (1 if d >= 0 else -1)


def model_fc_reference(acc: int, m: float) -> int | None:
    """static_cast<int32_t>(round(static_cast<double>(acc) * m)): a Python float product is the IEEE double one."""
    p = Fraction(float(acc) * m)
    r = math.floor(abs(p) + HALF) * (1 if p >= 0 else -1)
    return r if INT32_MIN <= r <= INT32_MAX else None


def model_mode(mode: str, acc: int, m: float, channel: int = 0, channels: int = 1) -> int | None:
    if mode == "fixed_double_ruy":
        return model_ruy(acc, m)
    if mode == "float64_away":
        return model_fc_reference(acc, m)
    # fixed_double_blocks8: NEON's vqrdmulh + vrshl on every full block of 8 channels, the scalar leftovers
    return model_ruy(acc, m) if channel < channels - channels % 8 else model_gemmlowp(acc, m)


ACCS = st.one_of(st.integers(INT32_MIN, INT32_MAX), st.integers(-5000, 5000),
                 st.sampled_from([INT32_MIN, INT32_MIN + 1, INT32_MAX, INT32_MAX - 1, -1, 0, 1]))
MULTIPLIERS = st.one_of(
    st.floats(2.0 ** -40, 1.0, exclude_max=True),
    st.builds(lambda s, f: f * 2.0 ** -s, st.integers(0, 31), st.floats(0.5, 1.0)),
    st.sampled_from([1.0, 1.0 - 2.0 ** -53, 0.5, 0.75, 2.0 ** -31, 2.0 ** -32, 1.5 * 2.0 ** -32, 2.0 ** -33,
                     0.9999999995, 2.0 ** -31 * (1 - 2.0 ** -40), 3.0, 1024.5]))


# ------------------------------------------------------------------------------------ units vs models
@settings(max_examples=400, deadline=None)
@given(mode=st.sampled_from(NEW_MODES), accs=st.lists(ACCS, min_size=1, max_size=24), m=MULTIPLIERS)
@example(mode="fixed_double_ruy", accs=[INT32_MIN], m=2.0 ** -32)      # -0.5 after a 31-bit shift: up to 0
@example(mode="float64_away", accs=[INT32_MIN, INT32_MAX], m=1.0)
def test_modes_match_bigint_models(mode, accs, m):
    acc = np.array(accs, dtype=np.int64).reshape(1, -1)     # one channel per value for fixed_double_blocks8
    expected = [model_mode(mode, a, m, c, len(accs)) for c, a in enumerate(accs)]
    if any(v is None for v in expected):
        with pytest.raises(HwsimError):
            requantize(acc, m, mode)
        return
    np.testing.assert_array_equal(requantize(acc, m, mode), [expected])
    np.testing.assert_array_equal(requantize_reference(acc, m, mode), [expected])


@settings(max_examples=200, deadline=None)
@given(s=st.integers(2, 31), k=st.integers(-(1 << 20), 1 << 20))
def test_exact_ties(s, k):
    """acc * 2^-s = k + 1/2: ruy rounds up, MultiplyByQuantizedMultiplier and C round away from zero."""
    acc = (2 * k + 1) << (s - 1)
    if not INT32_MIN <= acc <= INT32_MAX:
        return
    m, x = 2.0 ** -s, np.array([[acc]])
    assert requantize(x, m, "fixed_double_ruy")[0, 0] == k + 1
    away = k + 1 if k >= 0 else k
    assert requantize(x, m, "fixed_double")[0, 0] == away
    assert requantize(x, m, "float64_away")[0, 0] == away
    # blocks8: the channel decides (8 channels in one block: up; the ninth channel is left over: away)
    nine = requantize(np.full((1, 9), acc), m, "fixed_double_blocks8")[0]
    assert list(nine) == [k + 1] * 8 + [away]


def test_float64_away_is_not_the_fixed_point_mode():
    """Reference FC rounds once in double: 5 * 0.25 -> 1, where fixed_double rounds twice (5/2 -> 3, 3/2 -> 2)."""
    acc = np.array([[5, -5, 3, -3, 6]])
    assert requantize(acc, 0.25, "float64_away").tolist() == [[1, -1, 1, -1, 2]]
    assert requantize(acc, 0.25, "fixed_double").tolist() == [[2, -1, 1, -1, 2]]
    assert requantize(acc, 0.25, "fixed_double_ruy").tolist() == [[2, -1, 1, 0, 2]]


@settings(max_examples=150, deadline=None)
@given(data=st.data(), channels=st.integers(1, 20), axis_last=st.booleans())
def test_per_channel_multipliers_and_blocks(data, channels, axis_last):
    mode = data.draw(st.sampled_from(NEW_MODES))
    ms = data.draw(st.lists(st.floats(2.0 ** -35, 0.999), min_size=channels, max_size=channels))
    n = data.draw(st.integers(1, 3))
    rows = data.draw(st.lists(st.lists(ACCS, min_size=channels, max_size=channels), min_size=n, max_size=n))
    acc = np.array(rows, dtype=np.int64)                          # [N, C]
    expected = np.array([[model_mode(mode, a, ms[c], c, channels) for c, a in enumerate(r)] for r in rows])
    if axis_last:
        got = requantize(acc[:, None, :], ms, mode, channel_axis=-1)[:, 0, :]
    else:
        got = requantize(acc, ms, mode, channel_axis=1)
    np.testing.assert_array_equal(got, expected)


def test_int32_contract():
    with pytest.raises(HwsimError, match="int32"):
        requantize(np.array([[1 << 31]]), 0.001, "fixed_double_ruy")
    with pytest.raises(HwsimError, match="int32"):
        requantize(np.array([[1 << 31]]), 0.001, "float64_away")
    with pytest.raises(HwsimError, match="outside int32"):          # 3 * 2^30 rounds to a value beyond int32
        requantize(np.array([[1 << 30]]), 3.0, "float64_away")
    assert requantize(np.array([[1 << 30]]), 3.0, "float64_away", int32_overflow="saturate")[0, 0] == INT32_MAX
    with pytest.raises(HwsimError, match="fixed_double_ruy requantization: acc"):   # acc << 2 leaves int32
        requantize(np.array([[1 << 30]]), 3.0, "fixed_double_ruy")
    with pytest.raises(HwsimError, match="channel axis"):
        requantize(np.array(5), 0.5, "fixed_double_blocks8")


# ------------------------------------------------------------------------------------ average pooling
def model_avgpool(codes, kernel, stride, pads):
    """reference_integer_ops::AveragePool, loop for loop (NCHW here): real cells only, C integer division."""
    n, c, h, w = codes.shape
    (kh, kw), (sh, sw), (pt, pl, pb, pr) = kernel, stride, pads
    oh, ow = (h + pt + pb - kh) // sh + 1, (w + pl + pr - kw) // sw + 1
    out = np.zeros((n, c, oh, ow), dtype=np.int64)
    for b in range(n):
        for ch in range(c):
            for y in range(oh):
                for x in range(ow):
                    acc, count = 0, 0
                    for i in range(kh):
                        for j in range(kw):
                            yy, xx = y * sh - pt + i, x * sw - pl + j
                            if 0 <= yy < h and 0 <= xx < w:
                                acc += int(codes[b, ch, yy, xx])
                                count += 1
                    # (acc + count/2) / count, C division truncating toward zero
                    num = acc + count // 2 if acc > 0 else acc - count // 2
                    q = abs(num) // count * (1 if num >= 0 else -1)
                    out[b, ch, y, x] = q
    return out


@settings(max_examples=150, deadline=None)
@given(seed=st.integers(0, 2 ** 32 - 1), k=st.tuples(st.integers(1, 4), st.integers(1, 4)),
       s=st.tuples(st.integers(1, 3), st.integers(1, 3)), signed=st.booleans(), pad=st.booleans())
def test_avgpool_tflite_matches_the_kernel_loop(seed, k, s, signed, pad):
    rng = np.random.default_rng(seed)
    lo, hi = (-128, 127) if signed else (0, 255)                     # int8 and legacy uint8 codes
    h, w = int(rng.integers(k[0], 9)), int(rng.integers(k[1], 9))
    codes = rng.integers(lo, hi + 1, (2, 3, h, w))
    codes[0, 0] = rng.choice([lo, lo + 1, -1 if signed else 1, 0, hi], (h, w))   # extremes and ties
    pads = tuple(int(rng.integers(0, kk)) if pad else 0 for kk in (k[0], k[1], k[0], k[1]))
    got, adds = avgpool_tflite(codes, k, s, pads)
    np.testing.assert_array_equal(got, model_avgpool(codes, k, s, pads))
    assert adds == (k[0] * k[1] - 1) * got.size


def test_avgpool_tflite_is_not_the_value_average():
    """zp = 3, codes {0, 1}: TFLite's 1/2 -> code 1; the values {-3, -2} average -5/2 -> -3 -> code 0."""
    codes = np.array([[[[0, 1]]]])
    assert avgpool_tflite(codes, (1, 2))[0].item() == 1
    assert avgpool(codes - 3, (1, 2), rounding="half_away")[0].item() + 3 == 0


# ------------------------------------------------------------------------------------ fused epilogue, both modes
def _epilogue_cases():
    rng = np.random.default_rng(12)
    c = 13                                                         # one block of 8 and 5 channels left over
    acc = rng.integers(-(1 << 31), 1 << 31, (3, c, 9)) >> rng.integers(0, 31, (3, c, 9))
    acc[0, :, :4] = np.array([INT32_MIN, INT32_MAX, -1, 0])
    s = rng.integers(1, 12, c)
    acc[1, :, :6] = ((2 * rng.integers(-300, 300, (6, c)) + 1) << (s - 1)).T   # ties of acc * 2^-s
    cases = []
    for mode in NEW_MODES:
        for m in (2.0 ** -s.astype(np.float64), np.exp(rng.uniform(-20, 0, c)), np.array([0.37])):
            for clip, enc in ((None, UniformAct(8, True, 1.0, 3)), ((0, 90), UniformAct(8, False, 1.0, 7)),
                              (None, UniformAct(16, True, 1.0, 0))):
                cases.append((mode, m, clip, enc, acc))
    return cases


def epilogue_results() -> list:
    return [run_epilogue(make_epilogue(m, mode, clip, enc), acc) for mode, m, clip, enc, acc in _epilogue_cases()]


def test_fused_epilogue_equals_units_and_python_mode(tmp_path):
    fused = epilogue_results()
    for (mode, m, clip, enc, acc), got in zip(_epilogue_cases(), fused):
        assert got is not None, mode
        v = requantize(acc, m, mode, channel_axis=1)
        ref = enc.encode(v if clip is None else np.clip(v, *clip))
        np.testing.assert_array_equal(got.astype(np.int64), ref, err_msg=mode)
    out = tmp_path / "python_mode.npz"
    code = ("import sys, numpy as np; sys.path.insert(0, sys.argv[2]); import test_tflite_modes as t; "
            "from simulator import jit; assert jit.mode() == jit.PYTHON; "
            "np.savez(sys.argv[1], *t.epilogue_results())")
    env = {**os.environ, "NUMBA_DISABLE_JIT": "1"}
    subprocess.run([sys.executable, "-c", code, str(out), str(Path(__file__).parent)], check=True, env=env,
                   cwd=ROOT, timeout=600)
    with np.load(out) as z:
        python = [z[f"arr_{i}"] for i in range(len(fused))]
    for a, b in zip(fused, python):
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(a, b)


# ------------------------------------------------------------------------------------ graph, engine, reference
def conv_model(mode, c_out=13, groups=1, seed=0, acc_bits=32):
    rng = np.random.default_rng(seed)
    c_in = c_out if groups > 1 else 4
    w = rng.integers(-127, 128, (c_out, c_in // groups, 3, 3))
    scales = tuple(float(v) for v in rng.uniform(0.002, 0.02, c_out))
    lay = Layer("conv", "conv2d", ["input"], {"requant": mode, "padding": [1, 1, 1, 1], "groups": groups,
                                              "acc_bits": acc_bits},
                UniformAct(8, True, 0.05, -3), w, UniformW(8, True, scales),
                bias=rng.integers(-3000, 3000, c_out))
    return Model("m", (c_in, 6, 5), UniformAct(8, True, 0.03, 5), [lay])


def test_graph_validation():
    for mode in NEW_MODES:
        conv_model(mode).check()
        with pytest.raises(HwsimError, match="32-bit accumulator"):
            conv_model(mode, acc_bits=40).check()
    bad = conv_model("fixed_double_up")
    with pytest.raises(HwsimError, match="fixed_double_ruy, fixed_double_blocks8, float64_away"):
        bad.check()
    enc = UniformAct(8, True, 0.1, 0)
    add = Model("a", (2, 3, 3), enc, [Layer("add", "add", ["input", "input"], {"requant": "fixed_double_ruy"}, enc)])
    with pytest.raises(HwsimError, match="conv2d / dense output stage"):
        add.check()
    pool = Model("p", (2, 4, 4), enc, [Layer("p", "avgpool", ["input"], {"rounding": "tflite_codes"})])
    with pytest.raises(HwsimError, match="count_include_pad false"):
        pool.check()
    pool.layers[0].attrs["count_include_pad"] = False
    pool.check()


@pytest.mark.parametrize("mode,groups", [("fixed_double_ruy", 1), ("fixed_double_blocks8", 13),
                                         ("float64_away", 1), ("fixed_double_blocks8", 1)])
def test_engine_matches_declared_reference(mode, groups):
    model = conv_model(mode, groups=groups).check()
    rng = np.random.default_rng(3)
    x = rng.integers(-128, 128, (40,) + model.input_shape)
    res = Engine(model).run(x, keep_all=True).tensors
    ref = run_reference(model, x)
    np.testing.assert_array_equal(np.asarray(res["conv"], np.int64), ref["conv"])


def pool_model(pads=(1, 1, 1, 0), zp=-7, signed=True):
    enc = UniformAct(8, signed, 0.1, zp)
    lay = Layer("pool", "avgpool", ["input"], {"rounding": "tflite_codes", "count_include_pad": False,
                                               "kernel": [3, 2], "stride": [2, 1], "padding": list(pads)})
    return Model("p", (3, 7, 6), enc, [lay]).check()


@pytest.mark.parametrize("zp,signed", [(-7, True), (0, True), (128, False), (3, False)])
def test_avgpool_engine_and_reference(zp, signed):
    model = pool_model(zp=zp, signed=signed)
    lo, hi = model.input_enc.code_range()
    x = np.random.default_rng(4).integers(lo, hi + 1, (30,) + model.input_shape)
    got = np.asarray(Engine(model).run(x, keep_all=True).tensors["pool"], np.int64)
    np.testing.assert_array_equal(got, run_reference(model, x)["pool"])
    np.testing.assert_array_equal(got, model_avgpool(x, (3, 2), (2, 1), (1, 1, 1, 0)))


def test_onnx_export_is_exact():
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    from simulator.exporters.onnx_export import to_onnx
    rng = np.random.default_rng(8)
    models = [conv_model(mode, groups=g).check() for mode, g in
              (("fixed_double_ruy", 1), ("fixed_double_blocks8", 13), ("float64_away", 1))]
    models += [pool_model(), pool_model(zp=100, signed=False)]
    for model in models:
        lo, hi = model.input_enc.code_range()
        codes = rng.integers(lo, hi + 1, (20,) + model.input_shape)
        x = ((codes - model.input_enc.zero_point) * model.input_enc.scale).astype(np.float32)
        from simulator.engine import quantize_input
        q = quantize_input(model, x)
        np.testing.assert_array_equal(q.astype(np.int64), codes)
        expected = np.asarray(Engine(model).run(q).output)
        sess = ort.InferenceSession(to_onnx(model).SerializeToString(), providers=["CPUExecutionProvider"])
        got = sess.run(None, {"input": x})[0]
        np.testing.assert_array_equal(got.astype(np.int64), expected.astype(np.int64), err_msg=model.layers[0].name)


# ------------------------------------------------------------------------------------ LiteRT itself
# The fixtures (tests/tflite/make_mode_fixtures.py): kind, padding. Which mode each kernel path needs:
PATH_MODES = {"conv": {"reference": "fixed_double", "optimized": "fixed_double_ruy"},
              "depthwise": {"reference": "fixed_double", "optimized": "fixed_double_blocks8"},
              "dense": {"reference": "float64_away", "optimized": "fixed_double_ruy"}}
FIXTURE_LAYERS = {"conv1x1": ("conv", "VALID"), "conv3x3": ("conv", "SAME"), "depthwise3x3": ("depthwise", "SAME"),
                  "depthwise5x5": ("depthwise", "VALID"), "dense": ("dense", None), "dense_pt": ("dense", None),
                  "avgpool2x2": ("avgpool", ((2, 2), (2, 2), "VALID")),
                  "avgpool3x3_same": ("avgpool", ((3, 3), (2, 2), "SAME"))}
N_INPUTS = 24


def _same_pads(size, k, s):
    total = max((-(-size // s) - 1) * s + k - size, 0)
    return total // 2, total - total // 2


def _litert_run(path, resolver, n, seed):
    from ai_edge_litert.interpreter import Interpreter, OpResolverType
    it = Interpreter(model_path=str(path), experimental_preserve_all_tensors=True,
                     experimental_op_resolver_type=getattr(OpResolverType, resolver))
    it.allocate_tensors()
    op = it._get_ops_details()[0]
    details = {t["index"]: t for t in it.get_tensor_details()}
    rng = np.random.default_rng(seed)
    tin = details[op["inputs"][0]]
    xs, ys = [], []
    for _ in range(n):
        x = rng.integers(-128, 128, tin["shape"]).astype(tin["dtype"])
        it.set_tensor(tin["index"], x)
        it.invoke()
        xs.append(x[0])
        ys.append(it.get_tensor(op["outputs"][0])[0].copy())
    consts = [it.get_tensor(i) for i in op["inputs"][1:] if i >= 0]
    return op, details, consts, np.stack(xs), np.stack(ys)


def _quant(t):
    q = t["quantization_parameters"]
    return q["scales"].astype(np.float32), q["zero_points"].astype(np.int64)


def _hwsim_model(kind, geom, details, op, consts, mode):
    """The LiteRT layer as a hwsim model (NCHW): same codes, weights, bias, and the explicit multipliers
    double(s_in) * double(s_w[c]) / double(s_out) that TFLite forms (kernel_util.cc, fully_connected.cc)."""
    s_in, zp_in = _quant(details[op["inputs"][0]])
    s_out, zp_out = _quant(details[op["outputs"][0]])
    in_shape = tuple(details[op["inputs"][0]]["shape"][1:])
    in_enc, out_enc = UniformAct(8, True, float(s_in[0]), int(zp_in[0])), UniformAct(8, True, float(s_out[0]),
                                                                                      int(zp_out[0]))
    if kind == "avgpool":
        (kh, kw), (sh, sw), padding = geom
        h, w = in_shape[0], in_shape[1]
        pt, pb = _same_pads(h, kh, sh) if padding == "SAME" else (0, 0)
        pl, pr = _same_pads(w, kw, sw) if padding == "SAME" else (0, 0)
        lay = Layer("y", "avgpool", ["input"], {"rounding": "tflite_codes", "count_include_pad": False,
                                                "kernel": [kh, kw], "stride": [sh, sw], "padding": [pt, pl, pb, pr]})
        return Model("t", (in_shape[2], h, w), in_enc, [lay]).check()
    w_codes, bias = consts
    s_w, zp_w = _quant(details[op["inputs"][1]])
    assert not zp_w.any()
    co = w_codes.shape[-1] if kind == "depthwise" else w_codes.shape[0]
    s_w = np.broadcast_to(s_w, (co,))
    mult = [float(np.float64(s_in[0]) * np.float64(s_w[c]) / np.float64(s_out[0])) for c in range(co)]
    attrs = {"requant": mode, "multiplier": mult, "acc_bits": 32}
    if kind == "dense":
        lay = Layer("y", "dense", ["input"], attrs, out_enc, w_codes.astype(np.int64),
                    UniformW(8, True, tuple(float(v) for v in s_w)), bias=bias.astype(np.int64))
        return Model("t", in_shape, in_enc, [lay]).check()
    h, w, c_in = in_shape
    if kind == "conv":
        weight = w_codes.transpose(0, 3, 1, 2)                     # OHWI -> OIHW
        groups = 1
    else:
        weight = w_codes[0].transpose(2, 0, 1)[:, None]            # 1HW(C*M) -> (C*M)1HW
        groups = c_in
    kh, kw = weight.shape[2], weight.shape[3]
    pt, pb = _same_pads(h, kh, 1) if geom == "SAME" else (0, 0)
    pl, pr = _same_pads(w, kw, 1) if geom == "SAME" else (0, 0)
    attrs.update({"padding": [pt, pl, pb, pr], "groups": groups})
    lay = Layer("y", "conv2d", ["input"], attrs, out_enc, weight.astype(np.int64),
                UniformW(8, True, tuple(float(v) for v in s_w)), bias=bias.astype(np.int64))
    return Model("t", (c_in, h, w), in_enc, [lay]).check()


def _to_nchw(a):
    return a.transpose(0, 3, 1, 2) if a.ndim == 4 else a


def test_litert_kernel_paths_bit_exact():
    """Every output of every fixture, on LiteRT's reference and optimized kernels, equals hwsim's engine running
    the layer in that path's mode; and the neighbouring mode is wrong somewhere (the fixtures do hit ties)."""
    pytest.importorskip("ai_edge_litert")
    counts = {}
    told_apart = set()
    for i, (name, (kind, geom)) in enumerate(FIXTURE_LAYERS.items()):
        for path, resolver in (("reference", "BUILTIN_REF"), ("optimized", "BUILTIN_WITHOUT_DEFAULT_DELEGATES")):
            op, details, consts, xs, ys = _litert_run(FIXTURES / f"{name}.tflite", resolver, N_INPUTS, 300 + i)
            modes = ["tflite_codes"] if kind == "avgpool" else [PATH_MODES[kind][path]]
            wrong = [] if kind == "avgpool" else [m for m in ("fixed_double", "fixed_double_ruy", "float64_away")
                                                  if m != modes[0]]
            for mode in modes + wrong:
                model = _hwsim_model(kind, geom, details, op, consts, mode)
                got = np.asarray(Engine(model).run(_to_nchw(xs.astype(np.int64)), keep_all=True).tensors["y"])
                bad = int((got.astype(np.int64) != _to_nchw(ys.astype(np.int64))).sum())
                if mode == modes[0]:
                    assert bad == 0, f"{name} {path} {mode}: {bad} of {got.size} outputs differ"
                    np.testing.assert_array_equal(run_reference(model, _to_nchw(xs.astype(np.int64)))["y"], got)
                    counts[(name, path)] = got.size
                elif bad:
                    told_apart.add((kind, path, mode))
            if kind == "avgpool":   # the value average (code - zp), half away, differs from TFLite's code average
                model = _hwsim_model(kind, geom, details, op, consts, None)
                lay = model.layers[0]
                vals, _ = avgpool(_to_nchw(xs.astype(np.int64)) - lay.in_encs[0].zero_point, lay.attr("kernel"),
                                  lay.attr("stride"), lay.attr("padding"), "half_away", False)
                if (vals + lay.in_encs[0].zero_point != _to_nchw(ys.astype(np.int64))).any():
                    told_apart.add((kind, path, "values"))
    assert sum(counts.values()) > 20000
    # the fixtures separate the paths: each path's mode is needed there
    for kind, path, mode in [("conv", "reference", "fixed_double_ruy"), ("conv", "optimized", "fixed_double"),
                             ("depthwise", "optimized", "fixed_double"), ("depthwise", "optimized",
                                                                          "fixed_double_ruy"),
                             ("dense", "reference", "fixed_double"), ("dense", "optimized", "fixed_double"),
                             ("avgpool", "reference", "values"), ("avgpool", "optimized", "values")]:
        assert (kind, path, mode) in told_apart, (kind, path, mode)


# The per-tensor multiplier formulas (the importer writes the explicit `multiplier`): probes whose scales were edited
# so that some accumulators round differently under the two formulas, and inputs that produce those accumulators
# (tests/tflite/make_mode_fixtures.py make_probe).
def _m_double(s_in, s_w, s_out):
    return float(np.float64(s_in) * np.float64(s_w) / np.float64(s_out))


def _m_float_product(s_in, s_w, s_out):
    return float(np.float64(np.float32(np.float32(s_in) * np.float32(s_w))) / np.float64(s_out))


PROBES = {   # (probe, path): (mode, the multiplier formula that path uses, the formula it must not match)
    ("dense_probe_ref", "reference"): ("float64_away", _m_double, _m_float_product),
    ("dense_probe_opt", "optimized"): ("fixed_double_ruy", _m_float_product, _m_double),
    ("conv_probe", "optimized"): ("fixed_double_ruy", _m_double, _m_float_product),
    ("conv_probe", "reference"): ("fixed_double", _m_double, None),
}


@pytest.mark.parametrize("probe,path", sorted(PROBES))
def test_litert_per_tensor_multiplier_formulas(probe, path):
    pytest.importorskip("ai_edge_litert")
    from ai_edge_litert.interpreter import Interpreter, OpResolverType
    resolver = "BUILTIN_REF" if path == "reference" else "BUILTIN_WITHOUT_DEFAULT_DELEGATES"
    it = Interpreter(model_path=str(FIXTURES / f"{probe}.tflite"), experimental_preserve_all_tensors=True,
                     experimental_op_resolver_type=getattr(OpResolverType, resolver))
    it.allocate_tensors()
    op = it._get_ops_details()[0]
    details = {t["index"]: t for t in it.get_tensor_details()}
    tin = details[op["inputs"][0]]
    vectors = np.load(FIXTURES / f"{probe}_inputs.npy")
    assert len(vectors) > 0
    xs, ys = [], []
    for v in vectors:          # a conv probe's pixel vector fills the whole image (a 1x1 conv)
        x = np.broadcast_to(v, tuple(tin["shape"])).astype(np.int8).copy()
        it.set_tensor(tin["index"], x)
        it.invoke()
        xs.append(x[0])
        ys.append(it.get_tensor(op["outputs"][0])[0].copy())
    xs, ys = _to_nchw(np.stack(xs).astype(np.int64)), _to_nchw(np.stack(ys).astype(np.int64))
    consts = [it.get_tensor(i) for i in op["inputs"][1:] if i >= 0]
    assert len(details[op["inputs"][1]]["quantization_parameters"]["scales"]) == 1     # truly per tensor
    s_in, s_w, s_out = (float(details[i]["quantization_parameters"]["scales"][0])
                        for i in (op["inputs"][0], op["inputs"][1], op["outputs"][0]))
    mode, right, wrong = PROBES[(probe, path)]
    kind, geom = ("dense", None) if probe.startswith("dense") else ("conv", "VALID")
    model = _hwsim_model(kind, geom, details, op, consts, mode)
    results = {}
    for formula in (right, wrong):
        if formula is None:
            continue
        model.layers[0].attrs["multiplier"] = [formula(s_in, s_w, s_out)]
        got = np.asarray(Engine(model.check()).run(xs, keep_all=True).tensors["y"]).astype(np.int64)
        results[formula] = int((got != ys).sum())
    assert results[right] == 0, results
    if wrong is not None:
        assert results[wrong] > 0, results
