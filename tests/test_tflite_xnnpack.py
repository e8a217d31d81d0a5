"""LiteRT's XNNPACK delegate (the default `Interpreter()` path) on int8 / uint8 models: the arithmetic of
simulator/importers/tflite_xnnpack.py and simulator/units/xnnpack_ops.py against separately written Python
big-integer / exact-rational models (hypothesis), hwsim's engine and float reference running the declared modes,
and LiteRT 2.3.0 itself on the single-op fixtures of tests/tflite/make_xnnpack_fixtures.py (skipped without
`ai_edge_litert`). The LiteRT checks also rewrite a fixture's scales, zero points and shapes (the flatbuffer
object API) to sweep the arithmetic over many quantizations, and rewrite int8 models as legacy uint8 ones.
"""

from __future__ import annotations

import math
import struct
from fractions import Fraction
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from simulator.encodings import UniformAct, UniformW
from simulator.engine import Engine, quantize_input
from simulator.errors import HwsimError
from simulator.graph import Layer, Model
from simulator.importers import tflite_xnnpack as X
from simulator.reference import run_reference
from simulator.units import xnnpack_ops

FIXTURES = Path(__file__).parent / "tflite" / "xnnpack_fixtures"


def Q(scale, zero_point, dtype="int8"):
    """A QParams-like object (scale as its float32 value)."""
    return SimpleNamespace(scale=float(np.float32(scale)), zero_point=int(zero_point), dtype=dtype)


# ------------------------------------------------------------------ independent exact models (Python integers)

def f32(x) -> Fraction:
    """A rational rounded to the nearest float32 (ties to even), exactly, as a Fraction (normal range only)."""
    x = Fraction(x)
    if x == 0:
        return Fraction(0)
    sign = -1 if x < 0 else 1
    x = abs(x)
    e = x.numerator.bit_length() - x.denominator.bit_length()
    while Fraction(2) ** e > x:
        e -= 1
    while Fraction(2) ** (e + 1) <= x:
        e += 1
    m = round(x * Fraction(2) ** (23 - e))          # 24-bit mantissa, round() on a Fraction: half to even
    return sign * m * Fraction(2) ** (e - 23)


def f32_exponent(x: Fraction) -> int:
    x = abs(x)
    e = 0
    while Fraction(2) ** e > x:
        e -= 1
    while Fraction(2) ** (e + 1) <= x:
        e += 1
    return e


def add_model(a, b, sa, za, sb, zb, so, zo, sub, lo, hi):
    """XNNPACK vadd from its definition, on Python integers and exact rationals."""
    ra = f32(f32(sa) / f32(so))
    rb = f32((-1 if sub else 1) * f32(sb) / f32(so))
    shift = 20 - f32_exponent(max(abs(ra), abs(rb)))
    ma = round(abs(ra) * 2 ** shift) * (1 if ra > 0 else -1)
    mb = round(abs(rb) * 2 ** shift) * (1 if rb > 0 else -1)
    acc = (a - za) * ma + (b - zb) * mb + 2 ** (shift - 1)
    return min(max(acc // 2 ** shift + zo, lo), hi)


def mul_model(a, b, sa, za, sb, zb, so, zo, lo, hi):
    ratio = f32(f32(f32(sa) * f32(sb)) / f32(so))
    v = f32((a - za) * (b - zb) * ratio)
    return min(max(round(v) + zo, lo), hi)


def mean_model(codes, si, zi, so, zo, lo, hi):
    n = len(codes)
    k = f32(f32(f32(si) / f32(so)) * f32(Fraction(1) / n))
    z = f32(zo - f32(n * zi * k))
    v = f32(f32(f32(sum(codes)) * k) + z)
    return min(max(round(v), lo), hi)


def mulhrs_model(x, zp, m, zo, lo, hi):
    """vpmulhrsw on ((zp - x) << 7, -m), saturating + zo, pack: x * m / 256 rounded half up."""
    y = ((x - zp) * m + 128) // 256
    return min(max(min(max(y + zo, -32768), 32767), lo), hi)


def scales(lo=1e-3, hi=0.5):
    return st.floats(lo, hi).map(lambda s: float(np.float32(s)))


def scales_or_pow2(lo=1e-3, hi=0.5):
    """Random float32 scales, or powers of two (dyadic ratios put every rounding on exact ties)."""
    return st.one_of(scales(lo, hi), st.integers(math.ceil(math.log2(lo)), math.floor(math.log2(hi))).map(
        lambda e: 2.0 ** e))


int8 = st.integers(-128, 127)


# ------------------------------------------------------------------ the arithmetic against the exact models

@settings(max_examples=200, deadline=None)
@given(sa=scales_or_pow2(), sb=scales_or_pow2(), so=scales_or_pow2(2e-3, 1.0), za=int8, zb=int8, zo=int8,
       sub=st.booleans(), u8=st.booleans(), data=st.data())
def test_add_matches_big_integer_model(sa, sb, so, za, zb, zo, sub, u8, data):
    dtype, off = ("uint8", 128) if u8 else ("int8", 0)
    qa, qb, qo = Q(sa, za + off, dtype), Q(sb, zb + off, dtype), Q(so, zo + off, dtype)
    if not X.delegated("SUB" if sub else "ADD", [Q(sa, za), Q(sb, zb)], Q(so, zo)):
        with pytest.raises(HwsimError):
            xnnpack_ops.add_multipliers([sa, sb], so, sub)
        return
    lo, hi = (0, 255) if u8 else (-128, 127)
    a = np.array(data.draw(st.lists(st.integers(lo, hi), min_size=1, max_size=40)))
    b = np.array(data.draw(st.lists(st.integers(lo, hi), min_size=a.size, max_size=a.size)))
    got = X.add_xnnpack(a, b, qa, qb, qo, sub=sub)
    unit = np.clip(xnnpack_ops.add_values([a - qa.zero_point, b - qb.zero_point], [qa.scale, qb.scale], qo.scale,
                                          sub) + qo.zero_point, lo, hi)
    want = [add_model(int(x), int(y), qa.scale, qa.zero_point, qb.scale, qb.zero_point, qo.scale, qo.zero_point,
                      sub, lo, hi) for x, y in zip(a, b)]
    assert got.tolist() == want
    assert unit.tolist() == want


def test_add_shift_ties_round_up():
    # ratios 1/2 and 1/2 (dyadic): 1 + 0 -> 0.5 -> 1, -1 + 0 -> -0.5 -> 0 (floor of x + 1/2)
    qa = qb = Q(0.5, 0)
    qo = Q(1.0, 0)
    assert X.add_xnnpack(np.array([1, -1, 3, -3]), np.array([0, 0, 0, 0]), qa, qb, qo).tolist() == [1, 0, 2, -1]


@settings(max_examples=200, deadline=None)
@given(sa=scales_or_pow2(), sb=scales_or_pow2(), so=scales_or_pow2(1e-4, 0.5), za=int8, zb=int8, zo=int8,
       u8=st.booleans(), data=st.data())
def test_mul_matches_exact_model(sa, sb, so, za, zb, zo, u8, data):
    off, dtype = (128, "uint8") if u8 else (0, "int8")
    qa, qb, qo = Q(sa, za + off, dtype), Q(sb, zb + off, dtype), Q(so, zo + off, dtype)
    lo, hi = (0, 255) if u8 else (-128, 127)
    a = np.array(data.draw(st.lists(st.integers(lo, hi), min_size=1, max_size=40)))
    b = np.array(data.draw(st.lists(st.integers(lo, hi), min_size=a.size, max_size=a.size)))
    got = X.mul_xnnpack(a, b, qa, qb, qo)
    unit = xnnpack_ops.mul_codes(a - qa.zero_point, b - qb.zero_point, qa.scale, qb.scale, qo.scale, qo.zero_point,
                                 lo, hi)
    want = [mul_model(int(x), int(y), qa.scale, qa.zero_point, qb.scale, qb.zero_point, qo.scale, qo.zero_point,
                      lo, hi) for x, y in zip(a, b)]
    assert got.tolist() == want
    assert unit.tolist() == want


@settings(max_examples=60, deadline=None)
@given(sa=scales(), sb=scales(), so=scales(1e-4, 0.5), zo=int8)
def test_mul_on_every_code_pair_matches_single_rounding_model(sa, sb, so, zo):
    # (a - za)(b - zb) has at most 17 bits and the float32 ratio 24, so float64 holds the product exactly and
    # one rounding to float32 is the kernel's vmulps; the ratio itself from the exact rational model
    products = np.arange(-255, 256)[:, None] * np.arange(-255, 256)[None, :]
    ratio = float(f32(f32(f32(sa) * f32(sb)) / f32(so)))
    assert float(xnnpack_ops.mul_scale(sa, sb, so)) == ratio
    v = np.float32(products.astype(np.float64) * ratio)
    want = np.clip(np.rint(v.astype(np.float64)) + zo, -128, 127)
    a = np.arange(-255, 256)[:, None]
    b = np.arange(-255, 256)[None, :]
    assert np.array_equal(xnnpack_ops.mul_codes(a, b, sa, sb, so, zo, -128, 127), want)


@settings(max_examples=150, deadline=None)
@given(si=scales(), so=scales(1e-3, 1.0), zi=int8, zo=int8, n=st.integers(1, 3000), seed=st.integers(0, 2 ** 31))
def test_mean_matches_exact_model(si, so, zi, zo, n, seed):
    codes = np.random.default_rng(seed).integers(-128, 128, n)
    got = X.mean_xnnpack(codes, 0, Q(si, zi), Q(so, zo), keepdims=False)
    enc_in, enc_out = UniformAct(8, True, si, zi), UniformAct(8, True, so, zo)
    unit = xnnpack_ops.global_mean_codes(codes.reshape(1, 1, 1, n), enc_in, enc_out)
    want = mean_model(codes.tolist(), si, zi, so, zo, -128, 127)
    assert int(got) == want == int(unit[0, 0, 0, 0])
    k = f32(f32(f32(si) / f32(so)) * f32(Fraction(1) / n))
    z = f32(zo - f32(n * zi * k))
    for pair in (X.mean_params(Q(si, zi), Q(so, zo), n), xnnpack_ops.mean_constants(si, zi, so, zo, n)):
        assert (Fraction(float(pair[0])), Fraction(float(pair[1]))) == (k, z)


@settings(max_examples=150, deadline=None)
@given(si=scales(1e-3, 0.2), ratio=st.floats(1 / 200, 100), alpha=st.floats(-3, 3), zi=int8, zo=int8,
       u8=st.booleans())
def test_leaky_relu_and_requantize_tables_match_mulhrs_model(si, ratio, alpha, zi, zo, u8):
    off, dtype, lo, hi = (128, "uint8", 0, 255) if u8 else (0, "int8", -128, 127)
    qi, qo = Q(si, zi + off, dtype), Q(si / ratio, zo + off, dtype)
    codes = range(lo, hi + 1)
    pos = f32(f32(qi.scale) / f32(qo.scale))
    m = round(256 * pos)
    table = X.unary_table_xnnpack("QUANTIZE", qi, qo)
    assert table.tolist() == [mulhrs_model(c, qi.zero_point, m, qo.zero_point, lo, hi) for c in codes]
    if alpha == 0 or not X.delegated("LEAKY_RELU", [Q(si, zi)], Q(qo.scale, zo), alpha=alpha):
        return
    neg = round(256 * f32(pos * f32(alpha)))
    table = X.unary_table_xnnpack("LEAKY_RELU", qi, qo, alpha=alpha)
    assert table.tolist() == [mulhrs_model(c, qi.zero_point, m if c > qi.zero_point else neg, qo.zero_point, lo, hi)
                              for c in codes]


def _f32_struct(x: float) -> float:
    return struct.unpack("<f", struct.pack("<f", x))[0]


@settings(max_examples=300, deadline=None)
@given(x=st.floats(-120, 120, width=32))
def test_sigmoid_is_computed_in_double(x):
    # SigmoidOp<float>: exp and e / (1 + e) in double, one rounding to float; 1 and 0 beyond +-100
    e = math.exp(x)
    want = 1.0 if x > 100 else 0.0 if x < -100 else _f32_struct(e / (1 + e))
    assert float(X._sigmoid(np.float32(x))) == want


@settings(max_examples=60, deadline=None)
@given(si=scales(1e-3, 0.1), so=scales(1e-3, 0.02), zi=int8, zo=int8, op=st.sampled_from(["LOGISTIC", "TANH",
                                                                                             "ELU"]))
def test_float_tables_match_struct_float32_model(si, so, zi, zo, op):
    # reference-utils.h dequantize / quantize with float32 rounding done by struct, not numpy
    got = X.unary_table_xnnpack(op, Q(si, zi), Q(so, zo))
    inv = _f32_struct(1.0 / so)
    want = []
    for c in range(-128, 128):
        x = _f32_struct(_f32_struct(float(c - zi)) * si)
        if op == "LOGISTIC":
            y = 1.0 if x > 100 else 0.0 if x < -100 else _f32_struct(math.exp(x) / (1 + math.exp(x)))
        elif op == "TANH":
            y = _f32_struct(math.tanh(x))
        else:
            y = x if x >= 0 else _f32_struct(math.expm1(x))
        v = _f32_struct(_f32_struct(y * inv) + zo)
        want.append(int(min(max(round(v), -128), 127)))
    assert got.tolist() == want


@settings(max_examples=100, deadline=None)
@given(s=scales(1e-3, 0.5), zp=int8, xs=st.lists(st.floats(-300, 300, width=32), min_size=1, max_size=30))
def test_quantize_dequantize_match_exact_model(s, zp, xs):
    x = np.array(xs, dtype=np.float32)
    inv = f32(Fraction(1) / f32(s))
    want = [min(max(round(f32(Fraction(float(v)) * inv)) + zp, -128), 127) for v in x]
    assert X.quantize_xnnpack(x, Q(s, zp)).tolist() == want
    codes = np.arange(-128, 128)
    want_f = [float(f32((c - zp) * f32(s))) for c in codes]
    assert X.dequantize_xnnpack(codes, Q(s, zp)).astype(np.float64).tolist() == want_f


@settings(max_examples=100, deadline=None)
@given(si=scales(), so=scales(1e-3, 1.0), zo=int8, sw=st.lists(scales(1e-4, 0.05), min_size=1, max_size=6),
       act=st.sampled_from(X.ACTIVATIONS), seed=st.integers(0, 2 ** 31))
def test_conv_requantization_matches_exact_model(si, so, zo, sw, act, seed):
    qo = Q(so, zo)
    if not all(float(m) < 256 for m in X.conv_multipliers(si, sw, so)):
        return
    acc = np.random.default_rng(seed).integers(-2 ** 31, 2 ** 31, size=(7, len(sw)))
    acc[0] = 0
    got = X.requantize_conv(acc, X.conv_multipliers(si, sw, so), zo, *X.activation_codes(act, qo))
    bounds = {"NONE": (None, None), "RELU": (0, None), "RELU6": (0, 6), "RELU_N1_TO_1": (-1, 1)}[act]
    qb = [-128 if v is None and i == 0 else 127 if v is None else
          min(max(round(f32(f32(Fraction(v) / f32(so)) + zo)), -128), 127) for i, v in enumerate(bounds)]
    for row_got, row in zip(got.tolist(), acc.tolist()):
        for c, (g, a) in enumerate(zip(row_got, row)):
            m = f32(f32(f32(si) * f32(sw[c])) / f32(so))
            assert g == min(max(round(f32(f32(a) * m)) + zo, qb[0]), qb[1])


def test_delegated_decisions():
    q = Q(0.05, 3)
    assert X.delegated("CONV_2D", [q, Q(0.01, 0)], q)
    assert not X.delegated("AVERAGE_POOL_2D", [q], q)
    assert not X.delegated("SOFTMAX", [q], Q(1 / 256, -128))
    assert not X.delegated("HARD_SWISH", [q], q)
    assert not X.delegated("ELU", [Q(0.05, 3, "uint8")], Q(0.05, 3, "uint8"))
    assert X.delegated("ADD", [Q(0.05, 131, "uint8")] * 2, Q(0.1, 128, "uint8"))
    assert not X.delegated("ADD", [Q(1.0, 0), Q(0.001, 0)], Q(1e-4, 0))       # ratio 1e4 >= 256
    assert not X.delegated("CONCATENATION", [q, Q(0.06, 3)], q)
    assert not X.delegated("CONV_2D", [q, q], q, activation="TANH")


# ------------------------------------------------------------------ hwsim's declared modes (engine + reference)

def _engine_and_reference(model, codes):
    model.check()
    eng = Engine(model).run(codes).output
    ref = run_reference(model, codes)[model.output_name]
    return eng, ref


@settings(max_examples=40, deadline=None)
@given(sa=scales_or_pow2(), sb=scales_or_pow2(), so=scales_or_pow2(2e-3, 1.0), za=int8, zb=int8, zo=int8,
       sub=st.booleans(), seed=st.integers(0, 2 ** 31))
def test_hwsim_add_xnnpack_mode(sa, sb, so, za, zb, zo, sub, seed):
    qa, qb, qo = Q(sa, za), Q(sb, zb), Q(so, zo)
    if not X.delegated("ADD", [qa, qb], qo):
        return
    enc = lambda q: UniformAct(8, True, q.scale, q.zero_point)  # noqa: E731
    # the second operand: the input's codes re-labelled with b's encoding by an identity table
    model = Model("add", (2, 3, 3), enc(qa), [
        Layer("b", "lut", ["input"], {}, out_enc=enc(qb), table=np.arange(-128, 128)[None]),
        Layer("add", "add", ["input", "b"], {"rescale": "xnnpack", "subtract": sub}, out_enc=enc(qo))])
    codes = np.random.default_rng(seed).integers(-128, 128, (5, 2, 3, 3))
    eng, ref = _engine_and_reference(model, codes)
    want = X.add_xnnpack(codes, codes, qa, qb, qo, sub=sub)
    assert np.array_equal(eng, want) and np.array_equal(ref, want)


@settings(max_examples=40, deadline=None)
@given(sa=scales_or_pow2(), sb=scales_or_pow2(), so=scales_or_pow2(1e-3, 0.3), za=int8, zb=int8, zo=int8,
       seed=st.integers(0, 2 ** 31))
def test_hwsim_mul_xnnpack_mode(sa, sb, so, za, zb, zo, seed):
    qa, qb, qo = Q(sa, za), Q(sb, zb), Q(so, zo)
    if not X.delegated("MUL", [qa, qb], qo):
        return
    enc = lambda q: UniformAct(8, True, q.scale, q.zero_point)  # noqa: E731
    rng = np.random.default_rng(seed)
    perm = rng.permutation(256)
    model = Model("mul", (3, 4, 4), enc(qa), [
        Layer("b", "lut", ["input"], {}, out_enc=enc(qb), table=(perm - 128)[None]),
        Layer("mul", "mul", ["input", "b"], {"requant": "xnnpack"}, out_enc=enc(qo))])
    codes = rng.integers(-128, 128, (4, 3, 4, 4))
    eng, ref = _engine_and_reference(model, codes)
    want = X.mul_xnnpack(codes, perm[codes + 128] - 128, qa, qb, qo)
    assert np.array_equal(eng, want) and np.array_equal(ref, want)


@settings(max_examples=40, deadline=None)
@given(si=scales_or_pow2(), so=scales_or_pow2(1e-3, 1.0), zi=int8, zo=int8, h=st.integers(1, 9), w=st.integers(1, 9),
       seed=st.integers(0, 2 ** 31))
def test_hwsim_xnnpack_mean_mode(si, so, zi, zo, h, w, seed):
    model = Model("mean", (3, h, w), UniformAct(8, True, si, zi), [
        Layer("mean", "avgpool", ["input"], {"global": True, "rounding": "xnnpack_mean"},
              out_enc=UniformAct(8, True, so, zo))])
    codes = np.random.default_rng(seed).integers(-128, 128, (4, 3, h, w))
    eng, ref = _engine_and_reference(model, codes)
    want = X.mean_xnnpack(codes, (2, 3), Q(si, zi), Q(so, zo))
    assert np.array_equal(eng, want) and np.array_equal(ref, want)


def test_hwsim_xnnpack_modes_refuse_what_xnnpack_cannot_do():
    u8 = UniformAct(8, True, 0.05, 0)
    bad_add = Model("a", (1, 2, 2), u8, [Layer("add", "add", ["input", "input"],
                                                {"rescale": "xnnpack"}, out_enc=UniformAct(8, True, 1e-5, 0))])
    with pytest.raises(HwsimError, match="outside"):
        bad_add.check()
    three = Model("a", (1, 2, 2), u8, [Layer("add", "add", ["input", "input", "input"], {"rescale": "xnnpack"},
                                              out_enc=u8)])
    with pytest.raises(HwsimError, match="two inputs"):
        three.check()
    bad_mul = Model("m", (1, 2, 2), u8, [Layer("m", "mul", ["input", "input"], {"requant": "xnnpack"},
                                               out_enc=UniformAct(8, True, 1e-6, 0))])
    with pytest.raises(HwsimError, match=r"2\^8"):
        bad_mul.check()
    local_mean = Model("m", (1, 4, 4), u8, [Layer("m", "avgpool", ["input"], {"kernel": [2, 2],
                                                                               "rounding": "xnnpack_mean"})])
    with pytest.raises(HwsimError, match="global"):
        local_mean.check()


def test_hwsim_input_division_xnnpack():
    enc = UniformAct(8, True, 0.0196, 25)
    model = Model("q", (8,), enc, [Layer("r", "reshape", ["input"], {"shape": [8]})], input_division="xnnpack")
    model.check()
    x = np.random.default_rng(3).uniform(-4, 4, (50, 8)).astype(np.float32)
    assert np.array_equal(quantize_input(model, x), X.quantize_xnnpack(x, Q(0.0196, 25)))


# ------------------------------------------------------------------ LiteRT 2.3.0 itself


def _litert():
    pytest.importorskip("flatbuffers")
    return pytest.importorskip("ai_edge_litert.interpreter")


def _schema():
    return pytest.importorskip("ai_edge_litert.schema_py_generated")


def _model_t(data: bytes):
    return _schema().ModelT.InitFromPackedBuf(data, 0)


def _pack(m) -> bytes:
    flatbuffers = pytest.importorskip("flatbuffers")
    b = flatbuffers.Builder(1024)
    b.Finish(m.Pack(b), file_identifier=b"TFL3")
    return bytes(b.Output())


def rewrite(data: bytes, quant=None, shapes=None) -> bytes:
    """Set tensors' (scale, zero point) and shapes of a model (flatbuffer object API)."""
    m = _model_t(data)
    sg = m.subgraphs[0]
    for ti, (s, z) in (quant or {}).items():
        sg.tensors[ti].quantization.scale = [float(s)]
        sg.tensors[ti].quantization.zeroPoint = [int(z)]
    for ti, shape in (shapes or {}).items():
        sg.tensors[ti].shape = list(shape)
        sg.tensors[ti].shapeSignature = None
    return _pack(m)


def to_uint8(data: bytes) -> bytes:
    """An int8 model as a legacy uint8 one: every int8 tensor uint8, zero points and stored codes + 128."""
    S = _schema()
    m = _model_t(data)
    for t in m.subgraphs[0].tensors:
        if t.type == S.TensorType.INT8:
            t.type = S.TensorType.UINT8
            t.quantization.zeroPoint = [int(z) + 128 for z in t.quantization.zeroPoint]
            buf = m.buffers[t.buffer]
            if buf.data is not None and len(buf.data):
                buf.data = (np.asarray(buf.data, np.uint8).view(np.int8).astype(np.int16) + 128).astype(np.uint8)
    return _pack(m)


class Runner:
    """One model on the AUTO (XNNPACK) path and its description from the builtin path (constants readable)."""

    def __init__(self, data: bytes):
        it_mod = _litert()
        self.auto = it_mod.Interpreter(model_content=data)
        self.auto.allocate_tensors()
        details = self.auto._get_ops_details()
        self.ops = [o["op_name"] for o in details]
        self.opname = details[0]["op_name"]
        self.tensors = {t["index"]: t for t in self.auto.get_tensor_details()}
        self.op = _model_t(data).subgraphs[0].operators[0]
        self._data, self._builtin = data, None

    @property
    def builtin(self):
        """The same model on the builtin kernels, whose constant tensors stay readable (the delegate packs them)."""
        if self._builtin is None:
            it_mod = _litert()
            self._builtin = it_mod.Interpreter(model_content=self._data, experimental_op_resolver_type=(
                it_mod.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES))
            self._builtin.allocate_tensors()
        return self._builtin

    def q(self, ti):
        d = self.tensors[ti]
        p = d["quantization_parameters"]
        return Q(p["scales"][0], p["zero_points"][0], np.dtype(d["dtype"]).name)

    def const(self, ti):
        return self.builtin.get_tensor(ti)

    def __call__(self, *xs):
        for d, x in zip(self.auto.get_input_details(), xs):
            self.auto.set_tensor(d["index"], np.asarray(x).reshape(d["shape"]).astype(d["dtype"]))
        self.auto.invoke()
        return self.auto.get_tensor(self.auto.get_output_details()[0]["index"]).copy()

    def random_inputs(self, rng):
        out = []
        for d in self.auto.get_input_details():
            ii = np.iinfo(d["dtype"])
            out.append(rng.integers(ii.min, ii.max + 1, d["shape"]).astype(d["dtype"]))
        return out


ACT_NAMES = {0: "NONE", 1: "RELU", 2: "RELU_N1_TO_1", 3: "RELU6"}


def conv_acc(x, w, bias, zi, stride, same, depthwise):
    """int32 accumulators of a TFLite conv / depthwise conv (NHWC codes, weight values), exact integers."""
    x = x.astype(np.int64)[0] - zi
    kh, kw = w.shape[1:3]
    h, wd = x.shape[:2]
    sh, sw = stride
    if same:
        oh, ow = -(-h // sh), -(-wd // sw)
        ph, pw = max((oh - 1) * sh + kh - h, 0), max((ow - 1) * sw + kw - wd, 0)
    else:
        oh, ow, ph, pw = (h - kh) // sh + 1, (wd - kw) // sw + 1, 0, 0
    xp = np.zeros((h + ph, wd + pw, x.shape[2]), np.int64)
    xp[ph // 2:ph // 2 + h, pw // 2:pw // 2 + wd] = x
    acc = np.zeros((oh, ow, w.shape[3] if depthwise else w.shape[0]), np.int64) + bias.astype(np.int64)
    for i in range(kh):
        for j in range(kw):
            patch = xp[i:i + sh * (oh - 1) + 1:sh, j:j + sw * (ow - 1) + 1:sw]
            acc += patch * w[0, i, j] if depthwise else patch @ w[:, i, j, :].T
    return acc[None]


def xnnpack_model_output(r: Runner, xs):
    """What tflite_xnnpack.py says the delegate outputs for the single-op model `r`."""
    op, name = r.op, r.opname
    opts = op.builtinOptions
    act = ACT_NAMES.get(getattr(opts, "fusedActivationFunction", 0))
    qi, qo = r.q(op.inputs[0]), r.q(op.outputs[0])
    if name in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"):
        wt = r.tensors[op.inputs[1]]["quantization_parameters"]
        depthwise = name == "DEPTHWISE_CONV_2D"
        zw = wt["zero_points"].reshape((1, 1, 1, -1) if depthwise else (-1,) + (1,) * (r.const(op.inputs[1]).ndim - 1))
        w = r.const(op.inputs[1]).astype(np.int64) - zw
        bias = r.const(op.inputs[2])
        if name == "FULLY_CONNECTED":
            acc = (xs[0].astype(np.int64).reshape(1, -1) - qi.zero_point) @ w.T + bias
        else:
            acc = conv_acc(xs[0], w, bias, qi.zero_point, (opts.strideH, opts.strideW), opts.padding == 0, depthwise)
        mult = X.conv_multipliers(qi.scale, wt["scales"], qo.scale)
        return X.requantize_conv(acc, mult, qo.zero_point, *X.activation_codes(act, qo))
    if name in ("ADD", "SUB"):
        return X.add_xnnpack(xs[0], xs[1], qi, r.q(op.inputs[1]), qo, sub=name == "SUB", activation=act)
    if name == "MUL":
        return X.mul_xnnpack(xs[0], xs[1], qi, r.q(op.inputs[1]), qo, activation=act)
    if name == "MEAN":
        return X.mean_xnnpack(xs[0], r.const(op.inputs[1]), qi, qo, keepdims=bool(opts.keepDims))
    if name in ("LOGISTIC", "TANH", "LEAKY_RELU", "QUANTIZE", "ELU"):
        table = X.unary_table_xnnpack(name, qi, qo, alpha=getattr(opts, "alpha", None))
        return table[xs[0].astype(np.int64) - X._code_range(qi)[0]]
    if name == "MAX_POOL_2D":
        x = xs[0].astype(np.int64)
        n, h, w, c = x.shape
        kh, kw, sh, sw = opts.filterHeight, opts.filterWidth, opts.strideH, opts.strideW
        if opts.padding == 0:
            oh, ow = -(-h // sh), -(-w // sw)
            ph, pw = max((oh - 1) * sh + kh - h, 0), max((ow - 1) * sw + kw - w, 0)
        else:
            oh, ow, ph, pw = (h - kh) // sh + 1, (w - kw) // sw + 1, 0, 0
        xp = np.full((n, h + ph, w + pw, c), -10 ** 6)
        xp[:, ph // 2:ph // 2 + h, pw // 2:pw // 2 + w] = x
        out = np.full((n, oh, ow, c), -10 ** 6)
        for i in range(kh):
            for j in range(kw):
                out = np.maximum(out, xp[:, i:i + sh * (oh - 1) + 1:sh, j:j + sw * (ow - 1) + 1:sw])
        return np.clip(out, *X.activation_codes(act, qo))
    if name == "PAD":
        pads = r.const(op.inputs[1])
        return np.pad(xs[0].astype(np.int64), pads, constant_values=qo.zero_point)
    if name == "CONCATENATION":
        return np.concatenate([x.astype(np.int64) for x in xs], axis=opts.axis)
    return None


DELEGATED_FIXTURES = ["conv3x3_relu", "conv3x3_relu6_valid_s2", "conv1x1", "conv1x1_pertensor", "dwconv",
                      "dwconv_relu6", "dwconv_pertensor", "fc", "fc_pertensor", "fc_relu_n1", "add", "add_relu",
                      "add_bcast", "sub", "mul", "mul_relu6", "maxpool2x2", "maxpool3x3_same", "mean_hw",
                      "mean_hw_squeeze", "concat", "pad", "logistic", "tanh", "leaky_relu"]
# legacy uint8: TFLite takes only per-tensor weights in uint8 convolutions
UINT8_FIXTURES = [n for n in DELEGATED_FIXTURES if n not in ("conv3x3_relu", "conv3x3_relu6_valid_s2", "conv1x1",
                                                               "dwconv", "dwconv_relu6", "fc", "fc_relu_n1")]
BUILTIN_FIXTURES = ["avgpool2x2", "avgpool3x3_same", "softmax", "hardswish", "relu", "relu6", "relu_n1_to_1"]


@pytest.mark.parametrize("name,u8", [(n, False) for n in DELEGATED_FIXTURES] + [(n, True) for n in UINT8_FIXTURES])
def test_fixture_bit_exact_against_litert_xnnpack(name, u8):
    data = (FIXTURES / f"{name}.tflite").read_bytes()
    r = Runner(to_uint8(data) if u8 else data)
    assert "DELEGATE" in r.ops, r.ops
    qs = [r.q(i) for i in r.op.inputs if i >= 0 and r.tensors[i]["dtype"] in (np.int8, np.uint8)]
    assert X.delegated(r.opname, qs, r.q(r.op.outputs[0]),
                       alpha=getattr(r.op.builtinOptions, "alpha", None))
    rng = np.random.default_rng(sum(map(ord, name)))
    compared = 0
    for _ in range(12):
        xs = r.random_inputs(rng)
        want = xnnpack_model_output(r, xs)
        got = r(*xs)
        assert np.array_equal(np.asarray(want).reshape(got.shape), got.astype(np.int64)), name
        compared += got.size
    assert compared > 0


@pytest.mark.parametrize("name", BUILTIN_FIXTURES)
def test_ops_xnnpack_leaves_to_the_builtin_kernels(name):
    for data in ((FIXTURES / f"{name}.tflite").read_bytes(),
                 to_uint8((FIXTURES / f"{name}.tflite").read_bytes())):
        r = Runner(data)
        assert "DELEGATE" not in r.ops
        assert not X.delegated(r.opname, [r.q(r.op.inputs[0])], r.q(r.op.outputs[0]))


@pytest.mark.parametrize("u8", [False, True])
def test_float_quantize_and_dequantize_against_litert(u8):
    data = (FIXTURES / "float_io_maxpool.tflite").read_bytes()
    S = _schema()
    int8_tensors = [i for i, t in enumerate(_model_t(data).subgraphs[0].tensors) if t.type == S.TensorType.INT8]
    rng = np.random.default_rng(0)
    for scale in (None, 1 / 32):     # the converter's scale, and a power of two: exact ties of x * (1 / s)
        if scale is not None:
            data = rewrite(data, {i: (scale, 3) for i in int8_tensors})
        r = Runner(to_uint8(data) if u8 else data)
        assert r.ops == ["QUANTIZE", "MAX_POOL_2D", "DEQUANTIZE", "DELEGATE"]
        q = r.q(r.auto._get_ops_details()[0]["outputs"][0])
        for t in range(20):
            x = rng.uniform(-4, 4, (1, 8, 8, 4)).astype(np.float32)
            if t % 2:   # halfway between two codes (exactly so for the power-of-two scale)
                x = ((rng.integers(-140, 140, x.shape) + 0.5) * q.scale).astype(np.float32)
            codes = X.quantize_xnnpack(x, q).reshape(1, 4, 2, 4, 2, 4).max(axis=(2, 4))
            want = X.dequantize_xnnpack(codes, q)
            assert np.array_equal(want.view(np.int32), r(x).view(np.int32))


def test_requantization_scale_of_256_fails_to_prepare_in_litert():
    data = (FIXTURES / "conv1x1_pertensor.tflite").read_bytes()
    r = Runner(data)
    op = r.op
    qi, sw = r.q(op.inputs[0]), r.tensors[op.inputs[1]]["quantization_parameters"]["scales"]
    prod = float(np.float32(np.float32(qi.scale) * np.float32(sw[0])))
    for ratio, runs in ((255.0, True), (257.0, False)):
        so = prod / ratio
        assert X.delegated("CONV_2D", [qi], Q(so, 0), filter_scales=sw) == runs
        if runs:
            assert "DELEGATE" in Runner(rewrite(data, {op.outputs[0]: (so, 0)})).ops
        else:
            with pytest.raises(RuntimeError, match="XNNPACK"):
                Runner(rewrite(data, {op.outputs[0]: (so, 0)}))


def test_unequal_concat_quantization_fails_to_prepare_in_litert():
    data = (FIXTURES / "concat.tflite").read_bytes()
    op = _model_t(data).subgraphs[0].operators[0]
    bad = rewrite(data, {op.inputs[0]: (0.05, 3)})
    assert not X.delegated("CONCATENATION", [Q(0.05, 3), Q(1, 0)], Q(1, 0))
    with pytest.raises(RuntimeError, match="CONCATENATION"):
        Runner(bad)


# sweeps over rewritten quantizations: the tables on all codes, add / mul on every pair of codes


def _quant(rng, lo, hi):
    return float(np.float32(np.exp(rng.uniform(np.log(lo), np.log(hi)))))


@pytest.mark.parametrize("name,opname", [("logistic", "LOGISTIC"), ("tanh", "TANH"),
                                         ("leaky_relu", "LEAKY_RELU"), ("relu", "QUANTIZE")])
@pytest.mark.parametrize("u8", [False, True])
def test_unary_tables_against_litert_over_many_quantizations(name, opname, u8):
    S = _schema()
    base = (FIXTURES / f"{name}.tflite").read_bytes()
    m = _model_t(base)
    if opname == "QUANTIZE":   # the relu fixture turned into an int8 -> int8 QUANTIZE (a requantization)
        code = m.operatorCodes[m.subgraphs[0].operators[0].opcodeIndex]
        code.builtinCode = code.deprecatedBuiltinCode = S.BuiltinOperator.QUANTIZE
        m.subgraphs[0].operators[0].builtinOptionsType = 0
        m.subgraphs[0].operators[0].builtinOptions = None
        base = _pack(m)
    if u8:
        base = to_uint8(base)
    op = m.subgraphs[0].operators[0]
    alpha = getattr(op.builtinOptions, "alpha", None)
    ti, to = op.inputs[0], op.outputs[0]
    off, dtype = (128, np.uint8) if u8 else (0, np.int8)
    codes = (np.arange(-128, 128) + off).astype(dtype)
    rng = np.random.default_rng(7 + u8)
    compared = 0
    for _ in range(25):
        si = _quant(rng, 1e-3, 0.2)
        so = _quant(rng, 1e-3, 0.02) if opname == "LOGISTIC" else float(np.float32(si * np.exp(
            rng.uniform(np.log(0.1), np.log(8)))))
        zi, zo = (int(v) + off for v in rng.integers(-128, 128, 2))
        r = Runner(rewrite(base, {ti: (si, zi), to: (so, zo)}, {ti: [1, 256], to: [1, 256]}))
        qi, qo = Q(si, zi, np.dtype(dtype).name), Q(so, zo, np.dtype(dtype).name)
        if not X.delegated(opname, [qi], qo, alpha=alpha):
            assert "DELEGATE" not in r.ops
            continue
        assert "DELEGATE" in r.ops
        got = r(codes).reshape(-1).astype(np.int64)
        assert got.tolist() == X.unary_table_xnnpack(opname, qi, qo, alpha=alpha).tolist()
        compared += 256
    assert compared >= 256 * 10


@pytest.mark.parametrize("name,opname", [("add", "ADD"), ("sub", "SUB"), ("mul", "MUL"), ("add_relu", "ADD"),
                                         ("mul_relu6", "MUL")])
@pytest.mark.parametrize("u8", [False, True])
def test_binary_ops_against_litert_on_every_code_pair(name, opname, u8):
    base = (FIXTURES / f"{name}.tflite").read_bytes()
    op = _model_t(base).subgraphs[0].operators[0]
    if u8:
        base = to_uint8(base)
    act = ACT_NAMES[op.builtinOptions.fusedActivationFunction]
    ta, tb, to = op.inputs[0], op.inputs[1], op.outputs[0]
    off, dtype = (128, np.uint8) if u8 else (0, np.int8)
    a = (np.repeat(np.arange(-128, 128), 256) + off).astype(dtype)
    b = (np.tile(np.arange(-128, 128), 256) + off).astype(dtype)
    rng = np.random.default_rng(11 + u8)
    for trial in range(4):
        sa = _quant(rng, 1e-3, 0.5)
        sb = float(np.float32(sa * np.exp(rng.uniform(np.log(0.05), np.log(20)))))
        so = (float(np.float32(sa * sb * np.exp(rng.uniform(np.log(2), np.log(300))))) if opname == "MUL"
              else float(np.float32(max(sa, sb) * np.exp(rng.uniform(np.log(0.3), np.log(4))))))
        if trial == 0:   # dyadic scales: the exact ties of each rounding
            sa, sb, so = (0.5, 0.25, 0.25) if opname == "MUL" else (0.5, 0.25, 0.5)
        za, zb, zo = (int(v) + off for v in rng.integers(-128, 128, 3))
        dt = np.dtype(dtype).name
        qa, qb, qo = Q(sa, za, dt), Q(sb, zb, dt), Q(so, zo, dt)
        n = a.size
        r = Runner(rewrite(base, {ta: (sa, za), tb: (sb, zb), to: (so, zo)}, {ta: [1, n], tb: [1, n], to: [1, n]}))
        assert "DELEGATE" in r.ops
        got = r(a, b).reshape(-1).astype(np.int64)
        want = (X.mul_xnnpack(a, b, qa, qb, qo, activation=act) if opname == "MUL"
                else X.add_xnnpack(a, b, qa, qb, qo, sub=opname == "SUB", activation=act))
        assert np.array_equal(got, want), (name, sa, za, sb, zb, so, zo, int((got != want).sum()))


@pytest.mark.parametrize("u8", [False, True])
def test_mean_against_litert_over_many_shapes_and_quantizations(u8):
    base = (FIXTURES / "mean_hw.tflite").read_bytes()
    op = _model_t(base).subgraphs[0].operators[0]
    if u8:
        base = to_uint8(base)
    ti, to = op.inputs[0], op.outputs[0]
    off, dtype = (128, np.uint8) if u8 else (0, np.int8)
    rng = np.random.default_rng(5 + u8)
    for _ in range(15):
        h, w, c = (int(v) for v in rng.integers(1, 40, 3))
        si = _quant(rng, 1e-3, 0.5)
        so = float(np.float32(si * np.exp(rng.uniform(np.log(0.05), np.log(4)))))
        zi, zo = (int(v) + off for v in rng.integers(-128, 128, 2))
        dt = np.dtype(dtype).name
        r = Runner(rewrite(base, {ti: (si, zi), to: (so, zo)}, {ti: [1, h, w, c], to: [1, 1, 1, c]}))
        assert "DELEGATE" in r.ops
        for rep in range(2):
            x = rng.integers(-128, 128, (1, h, w, c)) + off
            if rep:
                x[...] = x.flat[0]      # a constant map: the mean lands on exact ties
            got = r(x.astype(dtype)).astype(np.int64)
            want = X.mean_xnnpack(x, (1, 2), Q(si, zi, dt), Q(so, zo, dt))
            assert np.array_equal(got, want), (h, w, c, si, zi, so, zo)


# hwsim models built as the importer would, run by the engine, against LiteRT


def _enc(q):
    return UniformAct(8, q.dtype == "int8", q.scale, q.zero_point)


@pytest.mark.parametrize("name", ["conv3x3_relu", "conv3x3_relu6_valid_s2", "conv1x1_pertensor", "dwconv_relu6",
                                  "dwconv", "fc", "fc_relu_n1"])
def test_hwsim_float32_requant_mode_reproduces_litert_xnnpack(name):
    """conv2d / dense with requant "float32", multiplier f32(f32(s_in * s_w) / s_out), clip = the activation's
    code bounds minus the zero point: hwsim's existing mode is XNNPACK's arithmetic."""
    r = Runner((FIXTURES / f"{name}.tflite").read_bytes())
    op, opts = r.op, r.op.builtinOptions
    qi, qo = r.q(op.inputs[0]), r.q(op.outputs[0])
    wq = r.tensors[op.inputs[1]]["quantization_parameters"]
    w = r.const(op.inputs[1]).astype(np.int64)
    bias = r.const(op.inputs[2]).astype(np.int64)
    act = ACT_NAMES[opts.fusedActivationFunction]
    qmin, qmax = X.activation_codes(act, qo)
    attrs = {"requant": "float32", "multiplier": X.conv_multipliers(qi.scale, wq["scales"], qo.scale).tolist(),
             "clip": [qmin - qo.zero_point, qmax - qo.zero_point]}
    wenc = UniformW(8, True, tuple(float(s) for s in wq["scales"]), tuple(int(z) for z in wq["zero_points"]))
    in_shape = tuple(r.tensors[op.inputs[0]]["shape"][1:])
    if r.opname == "FULLY_CONNECTED":
        lay = Layer("y", "dense", ["input"], attrs, out_enc=_enc(qo), weight=w, weight_enc=wenc, bias=bias)
        model = Model(name, in_shape, _enc(qi), [lay])
    else:
        h, wd, c = in_shape
        kh, kw = w.shape[1:3]
        sh, sw = opts.strideH, opts.strideW
        if opts.padding == 0:
            oh, ow = -(-h // sh), -(-wd // sw)
            ph, pw = max((oh - 1) * sh + kh - h, 0), max((ow - 1) * sw + kw - wd, 0)
        else:
            ph = pw = 0
        attrs.update(stride=[sh, sw], padding=[ph // 2, pw // 2, ph - ph // 2, pw - pw // 2])
        if r.opname == "DEPTHWISE_CONV_2D":
            attrs["groups"] = c
            wt = w[0].transpose(2, 0, 1)[:, None]          # [1, KH, KW, C] -> [C, 1, KH, KW]
        else:
            wt = w.transpose(0, 3, 1, 2)                    # [O, KH, KW, I] -> [O, I, KH, KW]
        lay = Layer("y", "conv2d", ["input"], attrs, out_enc=_enc(qo), weight=wt, weight_enc=wenc, bias=bias)
        model = Model(name, (c, h, wd), _enc(qi), [lay])
    model.check()
    rng = np.random.default_rng(1)
    xs = np.stack([r.random_inputs(rng)[0][0] for _ in range(10)])
    got = np.stack([r(x[None])[0] for x in xs])
    if r.opname == "FULLY_CONNECTED":
        ours = Engine(model).run(xs.astype(np.int64)).output
        ref = run_reference(model, xs.astype(np.int64))["y"]
    else:
        nchw = xs.transpose(0, 3, 1, 2).astype(np.int64)
        ours = Engine(model).run(nchw).output.transpose(0, 2, 3, 1)
        ref = run_reference(model, nchw)["y"].transpose(0, 2, 3, 1)
    assert np.array_equal(ours, got) and np.array_equal(ref, got)


def test_hwsim_declared_modes_reproduce_litert_xnnpack_graphs():
    """add (rescale xnnpack), mul (requant xnnpack), avgpool (xnnpack_mean), lut (the tables), input division
    xnnpack + output dequantize: each hwsim layer against the delegate's output of the same single-op model."""
    rng = np.random.default_rng(2)
    for name in ("add", "sub", "add_relu", "mul", "mul_relu6", "mean_hw", "logistic", "tanh", "leaky_relu"):
        r = Runner((FIXTURES / f"{name}.tflite").read_bytes())
        op, opts = r.op, r.op.builtinOptions
        qi, qo = r.q(op.inputs[0]), r.q(op.outputs[0])
        shape = tuple(r.tensors[op.inputs[0]]["shape"][1:])
        if r.opname == "MEAN":
            h, w, c = shape
            model = Model(name, (c, h, w), _enc(qi), [Layer("y", "avgpool", ["input"],
                                                            {"global": True, "rounding": "xnnpack_mean"},
                                                            out_enc=_enc(qo))])
            xs = rng.integers(-128, 128, (16, c, h, w))
            got = np.stack([r(x.transpose(1, 2, 0)[None].astype(np.int8)).reshape(c) for x in xs])
            ours = Engine(model.check()).run(xs).output.reshape(16, c)
        elif r.opname in ("LOGISTIC", "TANH", "LEAKY_RELU"):
            table = X.unary_table_xnnpack(r.opname, qi, qo, alpha=getattr(opts, "alpha", None))
            model = Model(name, shape, _enc(qi), [Layer("y", "lut", ["input"], {}, out_enc=_enc(qo),
                                                        table=table[None])])
            xs = rng.integers(-128, 128, (16,) + shape)
            got = np.stack([r(x[None].astype(np.int8))[0] for x in xs])
            ours = Engine(model.check()).run(xs).output
        else:
            qb = r.q(op.inputs[1])
            h, w, c = shape
            act = ACT_NAMES[opts.fusedActivationFunction]
            qmin, qmax = X.activation_codes(act, qo)
            # inputs stacked on the channel axis, split by two 1x1 convs that copy channels; simpler: a concat
            # input [2C, H, W] cannot carry two encodings, so feed b through a lut that re-labels a's codes
            perm = rng.permutation(256)
            layers = [Layer("b", "lut", ["input"], {}, out_enc=_enc(qb), table=(perm - 128)[None])]
            if r.opname == "MUL":
                layers.append(Layer("m", "mul", ["input", "b"], {"requant": "xnnpack"}, out_enc=_enc(qo)))
                layers.append(Layer("y", "clip", ["m"], {"min": qmin - qo.zero_point, "max": qmax - qo.zero_point}))
            else:
                layers.append(Layer("y", "add", ["input", "b"],
                                    {"rescale": "xnnpack", "subtract": r.opname == "SUB",
                                     "clip": [qmin - qo.zero_point, qmax - qo.zero_point]}, out_enc=_enc(qo)))
            model = Model(name, (c, h, w), _enc(qi), layers)
            xs = rng.integers(-128, 128, (16, c, h, w))
            got = np.stack([r(x.transpose(1, 2, 0)[None].astype(np.int8),
                              (perm[x + 128] - 128).transpose(1, 2, 0)[None].astype(np.int8))[0] for x in xs])
            ours = Engine(model.check()).run(xs).output.transpose(0, 2, 3, 1)
        assert np.array_equal(ours, got), name

    r = Runner((FIXTURES / "float_io_maxpool.tflite").read_bytes())
    det = {o["op_name"]: o for o in r.builtin._get_ops_details()}
    q = r.q(det["QUANTIZE"]["outputs"][0])
    model = Model("qdq", (4, 8, 8), _enc(q), [Layer("y", "maxpool", ["input"], {"kernel": [2, 2]})],
                  input_division="xnnpack", output_dequantize=True)
    model.check()
    x = rng.uniform(-4, 4, (10, 4, 8, 8)).astype(np.float32)
    codes = Engine(model).run(quantize_input(model, x)).output
    ours = ((codes.astype(np.int64) - q.zero_point).astype(np.float32) * np.float32(q.scale)).transpose(0, 2, 3, 1)
    got = np.stack([r(xi.transpose(1, 2, 0)[None])[0] for xi in x])
    assert np.array_equal(ours.view(np.int32), got.view(np.int32))


def test_mean_over_other_axes_against_litert():
    """MEAN over C, H alone, W alone and all three (the axes constant rewritten): the same sum-then-convert."""
    data = (FIXTURES / "mean_hw.tflite").read_bytes()
    op = _model_t(data).subgraphs[0].operators[0]
    rng = np.random.default_rng(4)
    for axes, out_shape in (([3], [1, 5, 5, 1]), ([1], [1, 1, 5, 8]), ([2], [1, 5, 1, 8]), ([1, 2, 3], [1, 1, 1, 1])):
        m = _model_t(data)
        axes_t = m.subgraphs[0].tensors[op.inputs[1]]
        axes_t.shape = [len(axes)]
        m.buffers[axes_t.buffer].data = np.array(axes, np.int32).view(np.uint8)
        m.subgraphs[0].tensors[op.outputs[0]].shape = out_shape
        base = _pack(m)
        for _ in range(4):
            si = float(np.float32(rng.uniform(1e-3, 0.5)))
            so = float(np.float32(si * rng.uniform(0.1, 3)))
            zi, zo = (int(v) for v in rng.integers(-128, 128, 2))
            r = Runner(rewrite(base, {op.inputs[0]: (si, zi), op.outputs[0]: (so, zo)}))
            assert "DELEGATE" in r.ops
            x = rng.integers(-128, 128, (1, 5, 5, 8)).astype(np.int8)
            want = X.mean_xnnpack(x, axes, Q(si, zi), Q(so, zo))
            assert np.array_equal(r(x).astype(np.int64), want.reshape(out_shape)), (axes, si, zi, so, zo)
