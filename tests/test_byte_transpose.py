"""The 8x8 byte transposes (kernels/byte_transpose.py) against numpy's transpose, and the u8 canvas copy built
on them (codes_path._bytes_transposed) against the element-wise copy it replaces (codes_path._bytes_into).

Blocks of every size around the 8x8 tiles (edges of 1-7 rows or columns), strides and offsets that leave bytes
around the block untouched (checked: a sentinel fill), and the wrap of code - code_lo in 8 bits (int8 codes)."""
from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from simulator.kernels import byte_transpose as bt
from simulator.kernels import codes_path
from simulator.kernels.im2col import canvas_shape, conv_geometry

SENTINEL = 0xA5


def block_case(rng, rows, cols, gap_s, gap_d):
    s_off, d_off = int(rng.integers(0, 9)), int(rng.integers(0, 9))
    s_stride, d_stride = cols + gap_s, rows + gap_d
    src = rng.integers(0, 256, s_off + rows * s_stride + 8).astype(np.uint8)
    dst = np.full(d_off + cols * d_stride + 8, SENTINEL, np.uint8)
    return src, s_off, s_stride, dst, d_off, d_stride


def expected(src, s_off, s_stride, dst, d_off, d_stride, rows, cols, add):
    want = dst.copy()
    block = np.lib.stride_tricks.as_strided(src[s_off:], (rows, cols), (s_stride, 1)) if rows and cols else \
        np.zeros((rows, cols), np.uint8)
    t = bt.transpose_bytes_reference(block, add)   # [cols, rows]
    for j in range(cols):
        want[d_off + j * d_stride:d_off + j * d_stride + rows] = t[j]
    return want


@settings(max_examples=150, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), rows=st.integers(0, 40), cols=st.integers(0, 40),
       gap_s=st.integers(0, 9), gap_d=st.integers(0, 9), add=st.sampled_from([0, 1, 127, 128, 255]))
def test_transpose_bytes_equals_numpy(seed, rows, cols, gap_s, gap_d, add):
    rng = np.random.default_rng(seed)
    src, s_off, s_stride, dst, d_off, d_stride = block_case(rng, rows, cols, gap_s, gap_d)
    want = expected(src, s_off, s_stride, dst, d_off, d_stride, rows, cols, add)
    bt.transpose_bytes(src, s_off, s_stride, dst, d_off, d_stride, rows, cols, add)
    np.testing.assert_array_equal(dst, want)   # the block transposed, every other byte untouched


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), rows=st.integers(0, 20), cols=st.integers(0, 20),
       add=st.integers(0, 255))
def test_python_mode_twins_equal_numpy(seed, rows, cols, add):
    """The numpy twins that run under NUMBA_DISABLE_JIT / Python mode: the whole copy and one 8x8 block."""
    rng = np.random.default_rng(seed)
    src, s_off, s_stride, dst, d_off, d_stride = block_case(rng, rows, cols, 3, 2)
    want = expected(src, s_off, s_stride, dst, d_off, d_stride, rows, cols, add)
    bt._transpose_bytes_numpy(src, s_off, s_stride, dst, d_off, d_stride, rows, cols, add)
    np.testing.assert_array_equal(dst, want)
    src, s_off, s_stride, dst, d_off, d_stride = block_case(rng, 8, 8, 1, 0)
    want = expected(src, s_off, s_stride, dst, d_off, d_stride, 8, 8, add)
    bt._block8_numpy(src, s_off, s_stride, dst, d_off, d_stride, add)
    np.testing.assert_array_equal(dst, want)


@settings(max_examples=80, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), signed=st.booleans(), padded=st.booleans(), groups=st.sampled_from([1, 2, 3]))
def test_canvas_copy_equals_the_elementwise_copy(seed, signed, padded, groups):
    """_bytes_transposed (8x8 blocks; unpadded images as one run of pixels per image) writes exactly what
    _bytes_into writes: every canvas byte, the padding and spare channel bytes left as they were."""
    rng = np.random.default_rng(seed)
    n, cig, h, w = int(rng.integers(1, 4)), int(rng.integers(1, 21)), int(rng.integers(1, 12)), int(rng.integers(1, 14))
    ci = cig * groups
    codes = rng.integers(-128, 128, (n, ci, h, w)).astype(np.int8) if signed else \
        rng.integers(0, 256, (n, ci, h, w)).astype(np.uint8)
    lo = -128 if signed else int(rng.choice([0, 0, 3]))
    pads = tuple(int(v) for v in rng.integers(1, 3, 4)) if padded else (0, 0, 0, 0)   # (a 3x3 kernel fits)
    g = conv_geometry(codes.shape, (groups * 2, cig, 3 if padded else 1, 3 if padded else 1), (1, 1), pads, groups)
    ce = -(-cig // 4) * 4
    want = np.full(canvas_shape(g, ce), SENTINEL, np.uint8)
    got = want.copy()
    codes_path._bytes_into(0, n * h, codes, lo, False, np.zeros(1, np.uint8), want, g.top, g.left, cig)
    cut = int(rng.integers(0, n * h + 1))   # two calls, as two threads' chunks would split the rows
    zero = int(codes.reshape(-1)[0])   # and the zero codes per channel, counted on the way (1x1 layers' counts)
    counts = np.zeros((n * h, ci), np.int32)
    zero_byte = np.uint8((zero - lo) & 0xFF)
    codes_path._bytes_transposed(0, cut, codes, lo, got, g.top, g.left, cig, True, zero_byte, counts)
    codes_path._bytes_transposed(cut, n * h, codes, lo, got, g.top, g.left, cig, True, zero_byte, counts)
    np.testing.assert_array_equal(got, want)
    assert counts.sum(axis=0).tolist() == [sum(int(v) == zero for v in codes[:, c].reshape(-1)) for c in range(ci)]
