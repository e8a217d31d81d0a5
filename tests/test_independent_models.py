"""Units checked against models written separately here, where the engine, the exporter and the float reference
would otherwise share one helper (and so one bug): round_float, the zero-padding code, TFLite's residual add
and the int16 fast path of the MAC kernel at its operand limits."""
from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from model_factory import random_act_enc
from simulator.encodings import EnqAct, KnqAct, UniformAct
from simulator.graph import default_pad_code
from simulator.kernels import mac
from simulator.reference import zero_code
from simulator.units.requantizer import quantize_multiplier
from simulator.units.residual_add import residual_add
from simulator.units.rounding import ROUNDING_MODES, round_float


def round_fraction(q: Fraction, mode: str) -> int:
    """Round an exact rational by the definition of each mode."""
    fl = math.floor(q)
    rem = q - fl
    if mode == "floor":
        return fl
    if mode == "trunc":
        return fl if q >= 0 else math.ceil(q)
    if mode == "half_up":
        return fl + (rem >= Fraction(1, 2))
    return fl + (rem > Fraction(1, 2) or (rem == Fraction(1, 2) and fl % 2 == 1))   # half_even


def _half_up_neg(q):  # helper for half_away on negatives: |q| rounded half up
    fl = math.floor(q)
    return fl + (q - fl >= Fraction(1, 2))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(st.floats(-1e6, 1e6, allow_nan=False),
                          st.integers(-10**6, 10**6).map(lambda k: k + 0.5),
                          st.integers(-2**52, 2**52).map(float)), min_size=1, max_size=20),
       st.sampled_from(ROUNDING_MODES))
def test_round_float_equals_exact_rounding(values, mode):
    got = round_float(np.array(values), mode)
    for v, g in zip(values, got.tolist()):
        q = Fraction(v)
        if mode == "half_away":
            want = _half_up_neg(q) if q >= 0 else -_half_up_neg(-q)
        else:
            want = round_fraction(q, mode)
        assert g == want, (v, mode)


def test_zero_padding_code_by_hand():
    """Hand-worked cases: the code whose value is nearest to zero (the lowest one on a tie)."""
    assert default_pad_code(UniformAct(8, False, 0.1, 37)) == 37
    knq = KnqAct(2, (-7, -2, 3, 9), (), 0)          # |values| 7, 2, 3, 9: code 1
    assert default_pad_code(knq) == 1 and zero_code(knq) == 1
    knq_tie = KnqAct(2, (-4, 4, 6, 8), (), 0)       # a tie between codes 0 and 1: the lowest
    assert default_pad_code(knq_tie) == 0 and zero_code(knq_tie) == 0
    enq = EnqAct(2, 4, 0)
    assert enq.decode(np.array([default_pad_code(enq)]))[0] == 0


def test_engine_and_reference_pad_codes_agree_on_random_encodings():
    rng = np.random.default_rng(5)
    for _ in range(300):
        enc = random_act_enc(rng, allow_binary=False)
        assert default_pad_code(enc) == zero_code(enc), enc


def tflite_add(a: int, b: int, sa: float, sb: float, so: float) -> int:
    """TensorFlow Lite's reference int8 Add (reference_ops::AddElementwise) in Python ints, with its constant
    left_shift = 20 and the multipliers as PrepareGeneralSubOp / QuantizeMultiplierSmallerThanOneExp make them."""
    left_shift = 20
    twice_max = 2 * max(sa, sb)

    def mul(x, m):
        q, e = quantize_multiplier(m)
        left, right = max(e, 0), max(-e, 0)
        x = x * (1 << left)
        if x == q == -(1 << 31):
            high = (1 << 31) - 1
        else:
            t = x * q + ((1 << 30) if x * q >= 0 else 1 - (1 << 30))
            high = t // (1 << 31) if t >= 0 else -((-t) // (1 << 31))
        mask = (1 << right) - 1
        return (high >> right) + ((high & mask) > (mask >> 1) + (high < 0))

    total = mul(a << left_shift, sa / twice_max) + mul(b << left_shift, sb / twice_max)
    return mul(total, twice_max / ((1 << left_shift) * so))


@settings(max_examples=200, deadline=None)
@given(st.integers(-255, 255), st.integers(-255, 255), st.floats(1e-3, 1.0), st.floats(1e-3, 1.0),
       st.floats(1e-3, 2.0))
def test_tflite_add_shift_and_arithmetic(a, b, sa, sb, so):
    got = residual_add([np.array([a]), np.array([b])], [sa, sb], so, "fixed_double", value_bits=8)
    assert int(got[0]) == tflite_add(a, b, sa, sb, so)


def test_tflite_add_on_every_pair_of_8_bit_values():
    """Every (a, b) in [-255, 255]^2 for a few scale triples: a change of the left shift (20) or of any rounding
    shows up somewhere in the 261,121 pairs even where random draws miss it."""
    rng = np.random.default_rng(0)
    values = np.arange(-255, 256, dtype=np.int64)
    a, b = (v.ravel() for v in np.meshgrid(values, values, indexing="ij"))
    for _ in range(6):   # scales a few orders of magnitude apart: where the shift's precision matters
        sa, sb, so = (float(v) for v in np.exp(rng.uniform(-7, 0, 3)))
        got = residual_add([a, b], [sa, sb], so, "fixed_double", value_bits=8)
        np.testing.assert_array_equal(got, tflite_add_vectorised(a, b, sa, sb, so))


def tflite_add_vectorised(a, b, sa, sb, so):
    """tflite_add on int64 arrays (every product stays below 2^63: |x| < 2^31, q < 2^31)."""
    left_shift = 20
    twice_max = 2 * max(sa, sb)

    def mul(x, m):
        q, e = quantize_multiplier(m)
        x = x * (1 << max(e, 0))
        ab = x * q
        t = ab + np.where(ab >= 0, 1 << 30, 1 - (1 << 30))
        high = np.where(t >= 0, t // (1 << 31), -((-t) // (1 << 31)))
        right = max(-e, 0)
        mask = (1 << right) - 1
        return (high >> right) + ((high & mask) > (mask >> 1) + (high < 0))

    total = mul(a << left_shift, sa / twice_max) + mul(b << left_shift, sb / twice_max)
    return mul(total, twice_max / ((1 << left_shift) * so))


def test_int16_fast_path_at_its_operand_limits():
    """|x| = |w| = 32767 with many output channels per group: the int16 micro-kernel's lane bound and the int32
    chunking must hold at the extremes (4·32767² overflows int32 if a chunk is too long)."""
    rng = np.random.default_rng(2)
    for groups, cog, ci_g, k in ((1, 8, 9, 3), (2, 16, 5, 2), (1, 32, 40, 1)):
        x = rng.choice([-32767, 32767, 0, 1], size=(1, groups * ci_g, 5, 5))
        w = rng.choice([-32767, 32767], size=(groups * cog, ci_g, k, k))
        bias = rng.integers(-2**40, 2**40, groups * cog)
        got, over = mac.conv2d_acc(x, w, bias, (1, 1), (1, 1, 1, 1), groups, 32767, 64, "wrap")
        ref, ref_over = mac.conv2d_acc_reference(x, w, bias, (1, 1), (1, 1, 1, 1), groups, 32767, 64, "wrap")
        np.testing.assert_array_equal(got, ref)
        assert over == ref_over == 0


def test_operands_just_beyond_int16_take_the_split_path():
    """±32768 is not an int16: such operands must go through the split (hi/lo byte) path, exactly."""
    rng = np.random.default_rng(4)
    for x_edge, w_edge in ((32768, 3), (-32768, 5), (7, 32768), (32768, -32768)):
        x = rng.integers(-3, 4, size=(1, 6, 4, 4))
        w = rng.integers(-3, 4, size=(8, 6, 3, 3))
        x.reshape(-1)[::5] = x_edge
        w.reshape(-1)[::7] = w_edge
        got, _ = mac.conv2d_acc(x, w, None, (1, 1), (1, 1, 1, 1), 1, 0, 64, "wrap")
        ref, _ = mac.conv2d_acc_reference(x, w, None, (1, 1), (1, 1, 1, 1), 1, 0, 64, "wrap")
        np.testing.assert_array_equal(got, ref)


def test_uniform_encoder_saturates_at_the_int64_edges():
    """Values near ±2^63 (a shift requantizer's left shift of a 64-bit accumulator) clamp to the code range;
    adding the zero point first would wrap them to the other end."""
    enc = UniformAct(8, True, 0.1, -31)
    values = np.array([-(2**63), -(2**62), 2**63 - 1, 2**62, 0])
    np.testing.assert_array_equal(enc.encode(values), [-128, -128, 127, 127, -31])
