"""TFLite's non-MAC integer arithmetic (simulator/importers/tflite_arith.py) and the hwsim modes that declare it.

1. The fixed-point pieces (gemmlowp SRDHM / RoundingDivideByPOT, MultiplyByQuantizedMultiplier and its NEON
   form, QuantizeMultiplier, the fused-activation clamp, TFLite's MUL / ADD / MEAN) against separately written
   Python big-integer models (hypothesis).
2. The hwsim layers (add with subtract / input_rounding, mul "tflite", softmax "tflite_*", avgpool
   "tflite_mean_*", lut tables) run by the engine and by reference.py, against tflite_arith.
3. LiteRT 2.3.0 itself (skipped without ai_edge_litert): every single-op model of tests/tflite/op_fixtures/
   (made by tests/tflite/make_op_fixtures.py) run on the reference and the optimized kernels with random and
   edge-code inputs; every output code of every op compared with tflite_arith and with the hwsim layer.
"""

from __future__ import annotations

import json
import math
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from simulator.encodings import UniformAct
from simulator.engine import RUNNERS, Engine
from simulator.errors import HwsimError
from simulator.graph import Layer, Model
from simulator.importers import tflite_arith as ta
from simulator.importers.tflite_arith import QParams
from simulator.reference import reference_layer
from simulator.trace import LayerCounts

FIXTURES = Path(__file__).parent / "tflite" / "op_fixtures"
# the importer's fixtures (tests/tflite/make_fixtures.py): more ops in context, legacy uint8 among them
MODEL_FIXTURES = Path(__file__).parent / "tflite" / "fixtures"
WITH_NON_MAC_OPS = ("add_sub_mul", "concat", "float_io", "hard_swish", "legacy_uint8", "logistic", "mean", "mixed",
                    "pad", "softmax", "uint8_io")
I32 = st.integers(-(1 << 31), (1 << 31) - 1)
SCALES = st.floats(1e-4, 2.0).map(lambda s: float(np.float32(s)))


# ---- big-integer models, written from the definitions ------------------------------------------------------

def big_srdhm(a: int, b: int) -> int:
    """round(a * b / 2^31) with ties toward +inf; -2^31 * -2^31 saturates."""
    if a == b == -(1 << 31):
        return (1 << 31) - 1
    return math.floor(Fraction(a * b, 1 << 31) + Fraction(1, 2))


def big_rdbpot(x: int, e: int) -> int:
    """x / 2^e rounded to nearest, ties away from zero."""
    q = Fraction(x, 1 << e)
    r = math.floor(abs(q) + Fraction(1, 2))
    return r if q >= 0 else -r


def big_quantize_multiplier(m: float) -> tuple[int, int]:
    """q in [2^30, 2^31), m ~ q * 2^(e - 31): the mantissa of m (exact rational) rounded half away."""
    f = Fraction(m)
    e = 0
    while f >= 1:
        f /= 2
        e += 1
    while f < Fraction(1, 2):
        f *= 2
        e -= 1
    q = math.floor(f * (1 << 31) + Fraction(1, 2))
    if q == 1 << 31:
        q, e = 1 << 30, e + 1
    return (0, 0) if e < -31 else (q, e)


def big_mbqm(x: int, q: int, shift: int, neon: bool = False) -> int:
    high = big_srdhm(x * (1 << max(shift, 0)), q)
    e = max(-shift, 0)
    if neon:   # vrshl: ties up
        return math.floor(Fraction(high, 1 << e) + Fraction(1, 2))
    return big_rdbpot(high, e)


@settings(max_examples=300, deadline=None)
@given(I32, I32)
def test_srdhm_is_round_half_up_of_the_high_product(a, b):
    assert int(ta.srdhm(a, b)) == big_srdhm(a, b)


@settings(max_examples=300, deadline=None)
@given(I32, st.integers(0, 31))
def test_rdbpot_rounds_half_away(x, e):
    assert int(ta.rdbpot(x, e)) == big_rdbpot(x, e)


@settings(max_examples=300, deadline=None)
@given(st.floats(1e-9, 1e4))
def test_quantize_multiplier(m):
    assert ta.quantize_multiplier(m) == big_quantize_multiplier(m)


@settings(max_examples=300, deadline=None)
@given(st.integers(-(1 << 20), 1 << 20), st.floats(1e-6, 8.0), st.booleans())
def test_mbqm_double_rounding_and_neon(x, m, neon):
    q, shift = ta.quantize_multiplier(m)
    got = (ta.mbqm_neon if neon else ta.mbqm)(np.array([x]), q, shift)[0]
    assert int(got) == big_mbqm(x, q, shift, neon)


def test_mbqm_neon_differs_only_on_negative_ties():
    x = np.arange(-4096, 4097)
    q, shift = ta.quantize_multiplier(0.125)       # q = 2^30, shift -2: SRDHM halves, then a shift by 2
    a, b = ta.mbqm(x, q, shift), ta.mbqm_neon(x, q, shift)
    high = ta.srdhm(x, q)
    differ = a != b
    assert differ.sum() == 1024 and np.all(x[differ] < 0) and np.all(high[differ] % 4 == 2)
    assert np.all(b[differ] == a[differ] + 1)      # the tie went up instead of away from zero


@settings(max_examples=200, deadline=None)
@given(SCALES, st.integers(-128, 127), st.sampled_from(["RELU", "RELU6", "RELU_N1_TO_1", "NONE"]))
def test_activation_range_rounds_the_float32_quotient_half_away(scale, zp, act):
    out = QParams(scale, zp, "int8")

    def q(f):   # roundf(float32(f / scale)) + zp: the quotient is a float32
        t = Fraction(float(np.float32(np.float32(f) / np.float32(scale))))
        r = math.floor(abs(t) + Fraction(1, 2))
        return zp + (r if t >= 0 else -r)
    lo, hi = {"NONE": (-128, 127), "RELU": (q(0.0), 127), "RELU6": (q(0.0), q(6.0)),
              "RELU_N1_TO_1": (q(-1.0), q(1.0))}[act]
    assert ta.activation_range(act, out) == (max(-128, lo), min(127, hi))


def _big_add(a, b, qa, qb, qo, subtract):
    twice = 2 * max(Fraction(qa.scale), Fraction(qb.scale))
    ms = [big_quantize_multiplier(float(Fraction(q.scale) / twice)) for q in (qa, qb)]
    mo = big_quantize_multiplier(float(twice / ((1 << 20) * Fraction(qo.scale))))
    sa = big_mbqm((a - qa.zero_point) << 20, *ms[0])
    sb = big_mbqm((b - qb.zero_point) << 20, *ms[1])
    raw = big_mbqm(sa - sb if subtract else sa + sb, *mo) + qo.zero_point
    return min(max(raw, -128), 127)


@settings(max_examples=60, deadline=None)
@given(SCALES, SCALES, st.integers(-128, 127), st.integers(-128, 127), st.integers(-128, 127), st.booleans(),
       st.integers(0, 2 ** 32 - 1))
def test_add_and_sub_match_big_integers(sa, sb, za, zb, zo, subtract, seed):
    qa, qb = QParams(sa, za, "int8"), QParams(sb, zb, "int8")
    qo = QParams(float(np.float32((sa + sb) * 0.7)), zo, "int8")
    rng = np.random.default_rng(seed)
    a, b = rng.integers(-128, 128, 40), rng.integers(-128, 128, 40)
    got = ta.add_codes(a, b, [qa, qb], qo, subtract=subtract)
    assert got.tolist() == [_big_add(int(x), int(y), qa, qb, qo, subtract) for x, y in zip(a, b)]


@settings(max_examples=60, deadline=None)
@given(SCALES, SCALES, st.integers(-128, 127), st.integers(-128, 127), st.integers(-128, 127),
       st.integers(0, 2 ** 32 - 1))
def test_mul_matches_big_integers(sa, sb, za, zb, zo, seed):
    qa, qb = QParams(sa, za, "int8"), QParams(sb, zb, "int8")
    qo = QParams(float(np.float32(sa * sb * 40)), zo, "int8")
    rng = np.random.default_rng(seed)
    a, b = rng.integers(-128, 128, 40), rng.integers(-128, 128, 40)
    m = float(np.float32(np.float32(np.float32(sa) * np.float32(sb)) / np.float32(qo.scale)))   # mul.cc: float
    q, shift = big_quantize_multiplier(m)
    want = [min(max(big_mbqm((int(x) - za) * (int(y) - zb), q, shift) + zo, -128), 127) for x, y in zip(a, b)]
    assert ta.mul_codes(a, b, [qa, qb], qo).tolist() == want


@settings(max_examples=60, deadline=None)
@given(SCALES, SCALES, st.integers(-128, 127), st.integers(-128, 127), st.integers(1, 40), st.integers(1, 40),
       st.integers(0, 2 ** 32 - 1))
def test_mean_reference_matches_big_integers(si, so, zi, zo, h, w, seed):
    qi, qo = QParams(si, zi, "int8"), QParams(so, zo, "int8")
    x = np.random.default_rng(seed).integers(-128, 128, (1, h, w, 3))
    n = h * w
    q, e = big_quantize_multiplier(float(Fraction(si) / Fraction(so)))
    k = min(n.bit_length() - 1, 32, 31 + e)
    q2, e2 = (q << k) // n, e - k
    want = [min(max(big_mbqm(int(x[0, :, :, c].sum()) - zi * n, q2, e2) + zo, -128), 127) for c in range(3)]
    assert ta.mean_codes(x, "reference", qi, qo, keep_dims=False)[0].tolist() == want


def test_exp_on_negative_values_is_close_to_exp():
    a = np.arange(-(1 << 31), 0, 9_999_991, dtype=np.int64)        # Q5.26 inputs in [-32, 0)
    got = ta.exp_on_negative_values(a).astype(np.float64) / 2 ** 31
    want = np.exp(a.astype(np.float64) / 2 ** 26)
    assert np.max(np.abs(got - want)) < 2.5e-7          # a 4-term polynomial on [-1/4, 0), times constants
    assert ta.exp_on_negative_values(np.array([0]))[0] == (1 << 31) - 1


def test_one_over_one_plus_x():
    a = np.arange(0, (1 << 31) - 1, 7_777_777, dtype=np.int64)
    got = ta.one_over_one_plus_x_for_x_in_0_1(a).astype(np.float64) / 2 ** 31
    assert np.max(np.abs(got - 1.0 / (1.0 + a / 2 ** 31))) < 1e-8


def test_unary_tables_are_monotone_and_sane():
    qi, qo = QParams(0.05, 3, "int8"), QParams(1 / 256, -128, "int8")
    for path in ("reference", "optimized"):
        lg = ta.unary_table("LOGISTIC", path, qi, qo)
        assert lg.shape == (256,) and np.all(np.diff(lg) >= 0)
        real = 1 / (1 + np.exp(-0.05 * (np.arange(-128, 128) - 3)))
        assert np.max(np.abs(lg - (np.round(real * 256) - 128))) <= 1
        hs = ta.unary_table("HARD_SWISH", path, QParams(0.05, 3, "int8"), QParams(0.03, -40, "int8"))
        x = 0.05 * (np.arange(-128, 128) - 3)
        assert np.max(np.abs(hs - np.clip(np.round(x * np.clip(x + 3, 0, 6) / 6 / 0.03) - 40, -128, 127))) <= 1
    with pytest.raises(HwsimError, match="kernel path"):
        ta.unary_table("LOGISTIC", "fast", qi, qo)
    with pytest.raises(HwsimError, match="unary"):
        ta.unary_table("TANH", "reference", qi, qo)


def _big_hard_swish(code: int, si: float, zi: int, so: float, zo: int) -> int:
    """reference_ops::HardSwish (reference/hard_swish.h) on one code, on Python integers, line by line."""
    f = np.float32
    hires = f(f(1.0 / 128.0) * f(si))

    def q16(m):   # QuantizeMultiplier, then DownScaleInt32ToInt16Multiplier
        q, e = big_quantize_multiplier(float(m))
        return (32767 if q >= (1 << 31) - 1 - (1 << 15) else (q + (1 << 15)) >> 16), e

    def s16(x):   # store into an int16
        return (x + (1 << 15)) % (1 << 16) - (1 << 15)

    def srdhm16(a, b):
        if a == b == -32768:
            return 32767
        ab = a * b
        t = ab + ((1 << 14) if ab >= 0 else 1 - (1 << 14))
        return s16(int(Fraction(t, 1 << 15)))       # C division: toward zero

    out_m, out_e = q16(f(hires / f(so)))
    rel_m, rel_e = q16(f(hires / f(3.0 / 32768.0)))
    v = s16(code - zi)
    hi = s16(v * 128)
    pre_out = srdhm16(hi, out_m)
    rel = hi
    if rel_e > 0:
        rel = min(max(rel * (1 << (rel_e - 1)), -32768), 32767)
    rel = srdhm16(rel, rel_m)
    if rel_e > 0:
        rel = min(max(rel * 2, -32768), 32767)
    if rel_e < 0:
        rel = big_rdbpot(rel, -rel_e)
    rel = s16((rel + (1 << 15)) >> 1)
    pre = 32767 if rel == pre_out == -32768 else s16(int(Fraction(rel * pre_out, 1 << 15)))
    out = s16(big_rdbpot(pre, -out_e) + zo)
    return min(max(out, -128), 127)


@settings(max_examples=40, deadline=None)
@given(st.floats(0.002, 0.5).map(lambda s: float(np.float32(s))), st.integers(-128, 127),
       st.floats(0.3, 3.0), st.integers(-128, 127))
def test_hard_swish_table_matches_big_integers(si, zi, ratio, zo):
    so = float(np.float32(si * ratio))
    table = ta.unary_table("HARD_SWISH", "reference", QParams(si, zi, "int8"), QParams(so, zo, "int8"))
    assert table.tolist() == [_big_hard_swish(c, si, zi, so, zo) for c in range(-128, 128)]


@settings(max_examples=30, deadline=None)
@given(SCALES, st.integers(1, 50), st.integers(0, 2 ** 32 - 1))
def test_softmax_optimized_matches_a_scalar_float32_loop(si, k, seed):
    """optimized_ops::Softmax written as its C loop on numpy float32 scalars (expf from the C library, as
    tflite_arith uses), against the vectorised model."""
    f = np.float32
    x = np.random.default_rng(seed).integers(-128, 128, k)
    qi, qo = QParams(si, 7, "int8"), QParams(1 / 256, -128, "int8")
    table = [ta.expf(np.array([f(-f(si)) * f(d)]))[0] for d in range(256)]      # table[d]: exp(-s * d)
    mx = int(x.max())
    total = f(0.0)
    for c in x:
        total = f(total + table[mx - int(c)])
    inv = f(f(1.0) / f(total * f(qo.scale)))
    want = []
    for c in x:
        p = f(table[mx - int(c)] * inv)
        r = math.floor(abs(float(p)) + 0.5)                                     # std::round: half away
        want.append(min(max(r - 128, -128), 127))
    assert ta.softmax_codes(x[None], "optimized", qi, qo)[0].tolist() == want


def test_requantize_table_is_the_identity_for_equal_scales_and_shifts_uint8():
    q8 = QParams(0.02, 5, "int8")
    assert np.array_equal(ta.unary_table("QUANTIZE", "reference", q8, q8), np.arange(-128, 128))
    u8 = QParams(0.02, 133, "uint8")
    assert np.array_equal(ta.unary_table("QUANTIZE", "optimized", u8, q8), np.arange(-128, 128))


# ---- the hwsim layers --------------------------------------------------------------------------------------

def _enc(q: QParams) -> UniformAct:
    return UniformAct(8, q.dtype == "int8", float(q.scale), int(q.zero_point))


def _hwsim_layer(op, attrs, in_qs, out_q, shape, table=None):
    """A checked hwsim Layer `op` whose inputs have the encodings of in_qs (the second one through an identity
    lut that only re-labels the codes), for calling the engine's unit and reference.py on given codes."""
    encs = [_enc(q) for q in in_qs]
    layers, names = [], ["input"]
    for i, e in enumerate(encs[1:]):
        lo, hi = e.code_range()
        layers.append(Layer(f"in{i + 1}", "lut", ["input"], out_enc=e, table=np.arange(lo, hi + 1)[None]))
        names.append(f"in{i + 1}")
    layers.append(Layer("y", op, names, attrs, _enc(out_q), table=table))
    model = Model("t", tuple(shape), encs[0], layers).check()
    return model, model.layers[-1]


def _run_layer(model, lay, inputs):
    engine = Engine(model)
    out = RUNNERS[lay.op](engine, lay, inputs, LayerCounts(lay.name, lay.op))
    return np.asarray(out), np.asarray(reference_layer(lay, inputs))


def _hwsim_binary(opname, path, a, b, in_qs, out_q, activation):
    """hwsim add / mul on NHWC codes a, b (b broadcast to a's shape) -> NHWC output codes (engine, reference)."""
    spec = ta.layer_spec(opname, path, in_qs, out_q, {"activation": activation})
    b = np.broadcast_to(b, a.shape)
    nchw = [np.ascontiguousarray(np.moveaxis(x.astype(np.int64), -1, 1)) for x in (a, b)]
    model, lay = _hwsim_layer(spec["op"], spec["attrs"], in_qs, out_q, nchw[0].shape[1:])
    return [np.moveaxis(o, 1, -1) for o in _run_layer(model, lay, nchw)]


@settings(max_examples=40, deadline=None)
@given(SCALES, SCALES, st.integers(-128, 127), st.integers(-128, 127), st.integers(-128, 127),
       st.sampled_from(["ADD", "SUB", "MUL"]), st.sampled_from(["NONE", "RELU", "RELU6"]),
       st.sampled_from(["reference", "optimized"]), st.integers(0, 2 ** 32 - 1))
def test_hwsim_binary_layers_compute_tflite(sa, sb, za, zb, zo, op, act, path, seed):
    qa, qb = QParams(sa, za, "int8"), QParams(sb, zb, "int8")
    so = sa * sb * 30 if op == "MUL" else (sa + sb) * 0.6
    qo = QParams(float(np.float32(so)), zo, "int8")
    rng = np.random.default_rng(seed)
    shape = (1, 3, 5, 7) if seed % 2 else (1, 4, 4, 16)     # 105 elements: 96 in SIMD blocks and a tail of 9
    a, b = rng.integers(-128, 128, shape), rng.integers(-128, 128, shape)
    engine, ref = _hwsim_binary(op, path, a, b, [qa, qb], qo, act)
    if op == "MUL":
        want = ta.mul_codes(a, b, [qa, qb], qo, act)
    else:
        rnd = "single" if (path == "optimized" and op == "ADD") else "double"
        want = ta.add_codes(a, b, [qa, qb], qo, act, subtract=op == "SUB", input_rounding=rnd)
        if rnd == "single":       # the scalar tail (NHWC order) rounds twice
            tail = ta.add_codes(a, b, [qa, qb], qo, act, input_rounding="double")
            body = a.size // 16 * 16
            want = np.concatenate([want.ravel()[:body], tail.ravel()[body:]]).reshape(shape)
    assert np.array_equal(engine, want) and np.array_equal(ref, want)


def test_add_single_rounding_differs_from_double():
    """A case where TFLite's SIMD add (input rounded once) and its scalar add (twice) give different codes."""
    # found by a search over random float32 scales (3 pairs of codes in 13 million differ)
    qa, qb = QParams(0.08144886791706085, -109, "int8"), QParams(0.006447036750614643, -124, "int8")
    qo = QParams(0.049350060522556305, -84, "int8")
    a, b = np.full(256, -6), np.arange(-128, 128)
    single = ta.add_codes(a, b, [qa, qb], qo, input_rounding="single")
    double = ta.add_codes(a, b, [qa, qb], qo, input_rounding="double")
    assert single[10 + 128] == 103 and double[10 + 128] == 104
    engine_s, ref_s = _hwsim_binary("ADD", "optimized", a.reshape(1, 1, 16, 16), b.reshape(1, 1, 16, 16),
                                    [qa, qb], qo, "NONE")
    assert np.array_equal(engine_s.ravel(), single) and np.array_equal(ref_s.ravel(), single)
    assert not np.array_equal(single, double)


def test_add_single_rounding_leaves_the_tail_to_double_rounding():
    """The optimized ADD's scalar tail (the last size mod 16 elements in NHWC order) rounds twice: the same pair
    of codes gives 103 in a SIMD block and 104 in the tail, in the engine and in reference.py."""
    qa, qb = QParams(0.08144886791706085, -109, "int8"), QParams(0.006447036750614643, -124, "int8")
    qo = QParams(0.049350060522556305, -84, "int8")
    a = np.full((1, 1, 3, 7), -6)
    b = np.random.default_rng(0).integers(-128, 128, a.shape)
    b.flat[0], b.flat[20] = 10, 10                    # NHWC positions 0 (a block) and 20 (the tail of 5)
    engine, ref = _hwsim_binary("ADD", "optimized", a, b, [qa, qb], qo, "NONE")
    assert engine.flat[0] == ref.flat[0] == 103 and engine.flat[20] == ref.flat[20] == 104


@settings(max_examples=30, deadline=None)
@given(SCALES, SCALES, st.integers(-128, 127), st.integers(-128, 127), st.sampled_from([(3, 5, 7), (4, 4, 16),
       (2, 3, 33), (1, 1, 20)]), st.sampled_from(["reference", "optimized"]), st.integers(0, 2 ** 32 - 1))
def test_hwsim_mean_layer_computes_tflite(si, so, zi, zo, hwc, path, seed):
    qi, qo = QParams(si, zi, "int8"), QParams(so, zo, "int8")
    x = np.random.default_rng(seed).integers(-128, 128, (2,) + hwc)
    spec = ta.layer_spec("MEAN", path, [qi], qo, {"keep_dims": True, "rank": 4})
    model, lay = _hwsim_layer(spec["op"], spec["attrs"], [qi], qo, (hwc[2], hwc[0], hwc[1]))
    engine, ref = _run_layer(model, lay, [np.ascontiguousarray(np.moveaxis(x, -1, 1))])
    want = ta.mean_codes(x, path, qi, qo, keep_dims=True)
    assert np.array_equal(engine.reshape(want.shape), want) and np.array_equal(ref.reshape(want.shape), want)


@settings(max_examples=30, deadline=None)
@given(SCALES, st.integers(-128, 127), st.sampled_from(["reference", "optimized"]), st.integers(1, 60),
       st.integers(0, 2 ** 32 - 1))
def test_hwsim_softmax_layer_computes_tflite(si, zi, path, k, seed):
    qi, qo = QParams(si, zi, "int8"), QParams(1 / 256, -128, "int8")
    x = np.random.default_rng(seed).integers(-128, 128, (3, k))
    spec = ta.layer_spec("SOFTMAX", path, [qi], qo)
    model, lay = _hwsim_layer(spec["op"], spec["attrs"], [qi], qo, (k,))
    engine, _ = _run_layer(model, lay, [x])
    assert np.array_equal(engine, ta.softmax_codes(x, path, qi, qo))


def test_softmax_reference_needs_the_lowest_code_as_zero_point():
    with pytest.raises(HwsimError, match="zero point"):
        _hwsim_layer("softmax", {"arithmetic": "tflite_reference"}, [QParams(0.1, 0, "int8")],
                     QParams(1 / 256, 0, "int8"), (10,))


def test_mean_optimized_is_int8_only_and_global():
    with pytest.raises(HwsimError, match="int8"):
        _hwsim_layer("avgpool", {"global": True, "rounding": "tflite_mean_optimized"}, [QParams(0.1, 128, "uint8")],
                     QParams(0.05, 128, "uint8"), (4, 3, 3))
    with pytest.raises(HwsimError, match="global"):
        _hwsim_layer("avgpool", {"kernel": [2, 2], "rounding": "tflite_mean_reference"}, [QParams(0.1, 0, "int8")],
                     QParams(0.05, 0, "int8"), (4, 4, 4))


def test_input_rounding_single_needs_fixed_double():
    with pytest.raises(HwsimError, match="input_rounding"):
        _hwsim_layer("add", {"requant": "float32", "input_rounding": "single"},
                     [QParams(0.1, 0, "int8"), QParams(0.2, 0, "int8")], QParams(0.3, 0, "int8"), (2, 2, 2))


# ---- LiteRT itself -----------------------------------------------------------------------------------------

def _fixture_paths():
    manifest = FIXTURES / "manifest.json"
    own = [FIXTURES / f"{n}.tflite" for n in sorted(json.loads(manifest.read_text()))] if manifest.exists() else []
    return own + [MODEL_FIXTURES / f"{n}.tflite" for n in WITH_NON_MAC_OPS]


def _fused_activations(path: Path) -> list:
    """The fused activation of each operator (None where the op has none): from manifest.json for the op
    fixtures, else read with the `tflite` schema package."""
    if path.parent == FIXTURES:
        return [a for _, a in json.loads((FIXTURES / "manifest.json").read_text())[path.stem]]
    tfl = pytest.importorskip("tflite")
    m = tfl.Model.GetRootAsModel(path.read_bytes(), 0)
    g = m.Subgraphs(0)
    names = {v: k for k, v in tfl.BuiltinOperator.__dict__.items() if not k.startswith("_")}
    acts = {v: k for k, v in tfl.ActivationFunctionType.__dict__.items() if not k.startswith("_")}
    options = {"ADD": tfl.AddOptions, "SUB": tfl.SubOptions, "MUL": tfl.MulOptions,
               "CONCATENATION": tfl.ConcatenationOptions}
    out = []
    for i in range(g.OperatorsLength()):
        op = g.Operators(i)
        code = m.OperatorCodes(op.OpcodeIndex())
        cls = options.get(names[max(code.BuiltinCode(), code.DeprecatedBuiltinCode())])
        table = op.BuiltinOptions()
        if cls is None or table is None:
            out.append(None)
            continue
        o = cls()
        o.Init(table.Bytes, table.Pos)
        out.append(acts[o.FusedActivationFunction()])
    return out


def _qp(t) -> QParams:
    return QParams(float(t["scales"][0]), int(t["zero_points"][0]), np.dtype(t["dtype"]).name)


def _inputs(it, info, name, trial, rng):
    """Trial 0 / 1: every input at its lowest / highest code; 2: every code in turn (shifted per element);
    3: softmax rows near their max; then uniform random codes (float inputs: uniform over the quantizer's
    range and beyond, or exact ties (k + 1/2) * scale)."""
    tensors = {t["index"]: t for t in info["tensors"]}
    for d in it.get_input_details():
        shape = tuple(d["shape"])
        if np.issubdtype(d["dtype"], np.integer):
            ii = np.iinfo(d["dtype"])
            v = rng.integers(ii.min, ii.max, size=shape, endpoint=True)
            if trial == 0:
                v = np.full(shape, ii.min)
            elif trial == 1:
                v = np.full(shape, ii.max)
            elif trial == 2:
                v = (np.arange(v.size).reshape(shape) + 37 * d["index"]) % 256 + ii.min
            elif trial == 3 and name.startswith("softmax"):
                v = rng.integers(ii.max - 6, ii.max, size=shape, endpoint=True)
            it.set_tensor(d["index"], v.astype(d["dtype"]))
        else:
            q = _qp(tensors[info["ops"][0]["outputs"][0]])
            if trial % 2:
                v = (rng.integers(-140, 140, size=shape) - q.zero_point + 0.5) * q.scale
            else:
                v = rng.uniform((-131 - q.zero_point) * q.scale, (130 - q.zero_point) * q.scale, size=shape)
            it.set_tensor(d["index"], v.astype(np.float32))


def _check_op(op, act, ins, out, iqs, oq, path):
    """(tflite_arith's codes, hwsim's codes or None) for one op of a fixture run."""
    name = op["op"]
    if name in ("ADD", "SUB", "MUL"):
        elementwise = ins[0].shape == ins[1].shape
        if name == "MUL":
            want = ta.mul_codes(ins[0], ins[1], iqs, oq, act)
        else:
            rnd = "single" if (path == "optimized" and name == "ADD" and elementwise) else "double"
            want = ta.add_codes(ins[0], ins[1], iqs, oq, act, subtract=name == "SUB", input_rounding=rnd)
            if rnd == "single":   # AddElementwiseInt8: 16-element SIMD blocks, then the scalar (reference) tail
                tail = ta.add_codes(ins[0], ins[1], iqs, oq, act, input_rounding="double")
                body = want.size // 16 * 16
                want = np.concatenate([want.ravel()[:body], tail.ravel()[body:]]).reshape(want.shape)
        if not elementwise:
            return want, None    # the optimized broadcasting loops: not one hwsim layer
        engine, ref = _hwsim_binary(name, path, ins[0], ins[1], iqs, oq, act)
        assert np.array_equal(engine, ref)
        return want, engine
    if name in ("LOGISTIC", "HARD_SWISH") or (name == "QUANTIZE" and ins[0].dtype != np.float32):
        table = ta.unary_table(name, path, iqs[0], oq)
        want = table[ins[0].astype(np.int64) - iqs[0].code_range()[0]]
        if name == "QUANTIZE" and path == "optimized" and ins[0].size % 16:
            ref_table = ta.unary_table(name, "reference", iqs[0], oq)
            body = want.size // 16 * 16      # Requantize: 16-element SIMD blocks, then the scalar tail
            tail = ref_table[ins[0].astype(np.int64).ravel()[body:] - iqs[0].code_range()[0]]
            return np.concatenate([want.ravel()[:body], tail]).reshape(want.shape), None
        spec = ta.layer_spec(name, path, iqs, oq)
        x = np.ascontiguousarray(np.moveaxis(ins[0].astype(np.int64), -1, 1))
        model, lay = _hwsim_layer("lut", {}, iqs, oq, x.shape[1:], table=spec["table"][None])
        engine, ref = _run_layer(model, lay, [x])
        assert np.array_equal(engine, ref)
        return want, np.moveaxis(engine, 1, -1)
    if name == "QUANTIZE":
        return ta.quantize_float(ins[0], path, oq), None
    if name == "SOFTMAX":
        x = ins[0].reshape(-1, ins[0].shape[-1]).astype(np.int64)
        want = ta.softmax_codes(x, path, iqs[0], oq)
        spec = ta.layer_spec("SOFTMAX", path, iqs, oq)
        model, lay = _hwsim_layer(spec["op"], spec["attrs"], iqs, oq, (x.shape[1],))
        engine, _ = _run_layer(model, lay, [x])
        return want.reshape(out.shape), engine.reshape(out.shape)
    if name == "MEAN":
        keep = out.ndim == 4
        want = ta.mean_codes(ins[0], path, iqs[0], oq, keep).reshape(out.shape)
        spec = ta.layer_spec("MEAN", path, iqs, oq, {"keep_dims": keep, "rank": ins[0].ndim})
        x = np.ascontiguousarray(np.moveaxis(ins[0].astype(np.int64), -1, 1))
        model, lay = _hwsim_layer(spec["op"], spec["attrs"], iqs, oq, x.shape[1:])
        engine, ref = _run_layer(model, lay, [x])
        assert np.array_equal(engine, ref)
        return want, engine.reshape(out.shape)
    if name == "CONCATENATION":
        if ins[0].ndim != 4 or out.shape[:-1] != ins[0].shape[:-1]:
            return None, None                 # not along the channels
        if oq.dtype == "int8":
            assert all(q == oq for q in iqs)  # int8 CONCATENATION: equal scales and zero points (Prepare)
        # uint8: each input requantized through its own table (ConcatenationWithScaling)
        parts = [ta.unary_table("CONCATENATION", path, q, oq)[x.astype(np.int64) - q.code_range()[0]]
                 for x, q in zip(ins, iqs)]
        return np.concatenate(parts, axis=-1), None
    if name == "PAD":
        return np.pad(ins[0].astype(np.int64), ins[1], constant_values=oq.zero_point), None
    return None, None


@pytest.mark.parametrize("path", ["reference", "optimized"])
@pytest.mark.parametrize("fixture", _fixture_paths(), ids=lambda p: p.stem)
def test_every_op_matches_litert(fixture, path):
    pytest.importorskip("ai_edge_litert")
    from tests.tflite import litert_runner
    name = fixture.stem
    if not fixture.exists():
        pytest.skip(f"{fixture} is not there")
    acts = _fused_activations(fixture)
    info = litert_runner.tensor_details(fixture)
    tensors = {t["index"]: t for t in info["tensors"]}
    it = litert_runner._interpreter(fixture, path)
    rng = np.random.default_rng(12)
    compared = 0
    for trial in range(8):
        _inputs(it, info, name, trial, rng)
        it.invoke()
        for k, op in enumerate(info["ops"]):
            if not tensors[op["outputs"][0]]["scales"].size:
                continue                      # a float output (DEQUANTIZE)
            ins = [it.get_tensor(i) for i in op["inputs"] if i >= 0]
            out = it.get_tensor(op["outputs"][0]).astype(np.int64)
            iqs = [_qp(tensors[i]) for i in op["inputs"] if i >= 0 and tensors[i]["scales"].size]
            act = acts[k] if k < len(acts) and acts[k] else "NONE"
            want, hwsim = _check_op(op, act, ins, out, iqs, _qp(tensors[op["outputs"][0]]), path)
            if want is None:
                continue
            bad = np.argwhere(want != out)
            assert not bad.size, f"{op['op']} {path}: {len(bad)} of {out.size} codes differ, first at {bad[0]}"
            if hwsim is not None:
                assert np.array_equal(hwsim, out), f"hwsim {op['op']} {path}"
            compared += out.size
    assert compared > 0
