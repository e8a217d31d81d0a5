"""XNOR-popcount kernels: fast kernel == reference kernel == direct ±1 integer arithmetic."""
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from simulator.kernels import popcount as pc

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
PAD_VALUE = {"+1": 1, "-1": -1, "zero": 0}


def direct_pm1_conv(x_bits, w_bits, stride, pad, groups, pad_mode):
    """Decode bits to ±1 (bit 1 = -1), pad with the mode's value, multiply-add in int64."""
    x = 1 - 2 * x_bits.astype(np.int64)
    w = 1 - 2 * w_bits.astype(np.int64)
    top, left, bottom, right = pad
    xp = np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)), constant_values=PAD_VALUE[pad_mode])
    co, cig, kh, kw = w.shape
    win = np.lib.stride_tricks.sliding_window_view(xp, (kh, kw), axis=(2, 3))[:, :, ::stride[0], ::stride[1]]
    out = [np.einsum("ncijab,cab->nij", win[:, (o // (co // groups)) * cig:][:, :cig], w[o]) for o in range(co)]
    return np.stack(out, axis=1)


@st.composite
def binary_conv_cases(draw):
    groups = draw(st.integers(1, 3))
    cig = draw(st.sampled_from([1, 2, 63, 64, 65, 130, 260]))
    cog = draw(st.integers(1, 4))
    if draw(st.booleans()):  # depthwise
        cig, cog, groups = 1, 1, draw(st.integers(1, 8))
    kh, kw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    pad = tuple(draw(st.integers(0, 2)) for _ in range(4))
    h = draw(st.integers(max(1, kh - pad[0] - pad[2]), 6))
    w = draw(st.integers(max(1, kw - pad[1] - pad[3]), 6))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    p = draw(st.sampled_from([0.0, 0.5, 1.0, 0.1]))  # all +1, random, all -1, mostly +1
    x = (rng.random((draw(st.integers(1, 3)), groups * cig, h, w)) < p).astype(np.uint8)
    wt = rng.integers(0, 2, (groups * cog, cig, kh, kw)).astype(np.uint8)
    stride = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    return x, wt, stride, pad, groups


@SETTINGS
@given(binary_conv_cases())
def test_xnor_conv_fast_equals_reference_equals_direct(case):
    for mode in pc.PAD_MODES:
        got = pc.xnor_conv2d(*case, mode)
        assert got.dtype == np.int32
        np.testing.assert_array_equal(got, pc.xnor_conv2d_reference(*case, mode))
        np.testing.assert_array_equal(got, direct_pm1_conv(*case, mode))


@pytest.mark.parametrize("k", [1, 63, 64, 65, 130, 200])
def test_xnor_dense_fast_equals_reference_equals_direct(k):
    rng = np.random.default_rng(k)
    x = rng.integers(0, 2, (7, k)).astype(np.uint8)
    w = rng.integers(0, 2, (37, k)).astype(np.uint8)
    got = pc.xnor_dense(x, w)
    assert got.dtype == np.int32 and got.shape == (7, 37)
    np.testing.assert_array_equal(got, pc.xnor_dense_reference(x, w))
    np.testing.assert_array_equal(got, (1 - 2 * x.astype(np.int64)) @ (1 - 2 * w.astype(np.int64)).T)


def test_larger_layer_with_zero_padding():
    rng = np.random.default_rng(3)
    x = rng.integers(0, 2, (2, 96, 13, 11)).astype(np.uint8)
    w = rng.integers(0, 2, (70, 96, 3, 3)).astype(np.uint8)
    for mode in pc.PAD_MODES:
        got = pc.xnor_conv2d(x, w, (1, 2), (1, 1, 2, 0), 1, mode)
        np.testing.assert_array_equal(got, direct_pm1_conv(x, w, (1, 2), (1, 1, 2, 0), 1, mode))


def test_weights_edited_in_place_are_repacked():
    rng = np.random.default_rng(6)
    x = rng.integers(0, 2, (1, 70, 5, 5)).astype(np.uint8)
    w = rng.integers(0, 2, (9, 70, 3, 3)).astype(np.uint8)
    for flip in (False, True):
        if flip:
            w[4, 66, 2, 2] ^= 1
        got = pc.xnor_conv2d(x, w, (1, 1), (1, 1, 1, 1), 1, "zero")
        np.testing.assert_array_equal(got, direct_pm1_conv(x, w, (1, 1), (1, 1, 1, 1), 1, "zero"))


def test_one_weight_array_in_many_geometries():
    """Packed weights and zero-padding tables are remembered per weight array; any geometry change must show."""
    rng = np.random.default_rng(7)
    w = rng.integers(0, 2, (6, 3, 3, 3)).astype(np.uint8)
    for h, wd, pad, stride, groups in [(5, 5, (1, 1, 1, 1), (1, 1), 1), (5, 5, (1, 1, 0, 0), (1, 1), 1),
                                       (7, 4, (2, 0, 1, 2), (2, 1), 1), (5, 5, (1, 1, 1, 1), (1, 1), 2)]:
        x = rng.integers(0, 2, (2, 3 * groups, h, wd)).astype(np.uint8)
        wg = np.concatenate([w] * groups) if groups > 1 else w
        for mode in pc.PAD_MODES:
            got = pc.xnor_conv2d(x, wg, stride, pad, groups, mode)
            np.testing.assert_array_equal(got, direct_pm1_conv(x, wg, stride, pad, groups, mode))


def test_pack_bits_is_lsb_first():
    bits = np.zeros((2, 130), np.uint8)
    bits[0, 0] = bits[0, 64] = bits[1, 129] = 1
    words = pc.pack_bits(bits, axis=1)
    assert words.dtype == np.uint64 and words.shape == (2, 3)
    assert words[0].tolist() == [1, 1, 0] and words[1].tolist() == [0, 0, 2]
    np.testing.assert_array_equal(pc.pack_bits(bits.T, axis=0), words.T)


def test_words_per_output():
    assert pc.popcount_words_per_output(64, 3, 3) == 9
    assert pc.popcount_words_per_output(65, 3, 3) == 18
    assert pc.popcount_words_per_output(1, 1, 1) == 1
    assert pc.popcount_words_per_output(65, 1, 1, word_bits=32) == 3


def test_bad_bits_raise():
    with pytest.raises(ValueError):
        pc.xnor_conv2d(np.full((1, 1, 2, 2), 2, np.uint8), np.zeros((1, 1, 1, 1), np.uint8), (1, 1), (0,) * 4, 1, "+1")
    with pytest.raises(ValueError):
        pc.xnor_conv2d(np.zeros((1, 1, 2, 2), np.uint8), np.zeros((1, 1, 1, 1), np.uint8), (1, 1), (0,) * 4, 1, "0")


@pytest.mark.parametrize("pad_mode", ["+1", "zero"])
def test_every_word_all_ones_past_the_byte_counters_limit(pad_mode):
    """x all ones against w all zeros: every XOR word is 64 ones, so each byte counter of the AVX2 micro-kernel
    gains 8 a word; 4 words a tap x 9 taps = 36 words per output, past the 31 a call (248 of 256) it takes."""
    x = np.ones((2, 256, 5, 6), np.uint8)
    w = np.zeros((3, 256, 3, 3), np.uint8)
    w[2, :, 1, 1] = 1   # and one filter whose centre tap matches the input
    got = pc.xnor_conv2d(x, w, (1, 1), (1, 1, 1, 1), 1, pad_mode)
    np.testing.assert_array_equal(got, pc.xnor_conv2d_reference(x, w, (1, 1), (1, 1, 1, 1), 1, pad_mode))
    assert got[0, 0, 2, 2] == -256 * 9   # an inner output: 36 words of 64 differing bits


@SETTINGS
@given(seed=st.integers(0, 2**32 - 1), groups=st.sampled_from([1, 2, 3]), bad=st.booleans())
def test_byte_plane_packing_equals_the_bitwise_packing(seed, groups, bad):
    """_pack_canvas_bytes (eight byte planes, 8x8 byte transposes into the words; uint64 lanes when a plane is
    whole words) writes the canvas _pack_canvas writes, bit by bit, padding untouched, and flags the same
    images that hold a value other than 0 and 1."""
    from simulator.kernels.im2col import canvas_shape, conv_geometry
    rng = np.random.default_rng(seed)
    n, cig, h, w = int(rng.integers(1, 4)), int(rng.integers(1, 140)), int(rng.integers(1, 10)), int(rng.integers(1, 10))
    x = rng.integers(0, 2, (n, cig * groups, h, w)).astype(np.uint8)
    if bad:
        x.reshape(-1)[int(rng.integers(x.size))] = int(rng.integers(2, 256))
    pads = tuple(int(v) for v in rng.integers(0, 2, 4))
    g = conv_geometry(x.shape, (groups, cig, 1, 1), (1, 1), pads, groups)
    nw = -(-cig // 64)
    want = np.full(canvas_shape(g, nw), 0x5A5A5A5A5A5A5A5A, np.uint64)
    got = want.copy()
    flagged_want = pc._pack_canvas(0, n * groups * nw, x, want, g.top, g.left, groups)
    flagged_got = pc._pack_canvas_bytes(0, n * groups * nw, x, got, g.top, g.left, groups)
    assert flagged_got == flagged_want and (flagged_got > 0) == bad
    if not bad:
        np.testing.assert_array_equal(got, want)
