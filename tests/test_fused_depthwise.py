"""The fused depthwise kernels and the XNOR sign kernel against the separate passes they replace, bit for bit.

- codes_path.depthwise_codes (decode, exact sums, bias and float epilogue in one kernel: the channels-last
  kernel and the planar one for wide stride-1 images) against mac.conv2d_acc_reference (Python integers) ->
  epilogue.run_epilogue; the engine's zero-operand counts for it against the zero-gating unit.
- popcount.signs against epilogue.run_signs (BinaryAct's encoder on acc + bias), biases beyond int32 included.
- The engine with the fused depthwise path against the same engine without it: codes and every count.
"""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from simulator import engine as engine_mod
from simulator.encodings import EnqAct, KnqAct, UniformAct
from simulator.kernels import codes_path, im2col, mac, popcount
from simulator.kernels.epilogue import make_epilogue, run_epilogue, run_signs
from simulator.kernels.im2col import conv_geometry
from simulator.units.zero_gating import zero_operand_macs


def depthwise_case(rng, wide: bool):
    # channels: few, or several vectors of them and a remainder (the 3x3 sums' register-held weights per vector)
    n, c = int(rng.integers(1, 4)), int(rng.integers(1, 20) if rng.integers(2) else rng.integers(16, 72))
    kh, kw = (3, 3) if rng.integers(3) else tuple(int(v) for v in rng.integers(1, 6, 2))
    stride = (1, 1) if wide or rng.integers(2) else tuple(int(v) for v in rng.integers(1, 4, 2))
    pads = tuple(int(v) for v in rng.integers(0, 3, 4))
    h = int(rng.integers(max(1, kh - pads[0] - pads[2]), 9))
    w = int(rng.integers(codes_path.PLANAR_WIDTH, codes_path.PLANAR_WIDTH + 12)) if wide else \
        int(rng.integers(max(1, kw - pads[1] - pads[3]), 12))
    return n, c, h, w, (kh, kw), stride, pads


@settings(max_examples=120, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), wide=st.booleans(), mode=st.sampled_from(["float32", "float64"]),
       decoder=st.sampled_from(["uniform", "table"]), extreme=st.booleans(), per_channel=st.booleans(),
       stored=st.sampled_from(["uint8", "int8", "int16"]))
def test_depthwise_codes_equal_separate_passes(seed, wide, mode, decoder, extreme, per_channel, stored):
    """`stored`: the input codes' dtype. One-byte codes (and one-byte outputs) take the 8x8 byte transposes
    (kernels/byte_transpose.py); int8 codes are the same values shifted by code_lo = -128; int16 codes and
    12-bit outputs take the element-wise copies."""
    rng = np.random.default_rng(seed)
    n, c, h, w, (kh, kw), stride, pads = depthwise_case(rng, wide)
    if decoder == "uniform":   # a uniform u8 input: value = code - zp
        zp = int(rng.integers(0, 256))
        table = np.arange(256) - zp
    else:                      # any decoder: a table, zeros in it (zero operands), values up to the int16 limit
        top = 32767 if extreme else 300
        table = rng.integers(-top, top + 1, 256)
        table[rng.integers(0, 256, 3)] = 0
        table[:2] = [-top, top]
    codes = rng.integers(0, 256, (n, c, h, w)).astype(np.uint8)
    codes.reshape(-1)[:2] = [0, 1][:codes.size]
    wmax = 32767 if extreme else 127
    wv = rng.integers(-wmax, wmax + 1, (c, 1, kh, kw))
    wv.reshape(-1)[:2] = [wmax, -wmax][:wv.size]
    wv[rng.random(wv.shape) < 0.1] = 0
    bias = rng.integers(-2**40, 2**40, c) if extreme else rng.integers(-5000, 5000, c)
    pad = int(rng.choice([0, int(table[0]), int(table.max())]))
    g = conv_geometry(codes.shape, wv.shape, stride, pads, c)
    x_reach = max(int(np.abs(table).max()), abs(pad))
    m = rng.uniform(1e-4, 1e-2, c if per_channel else 1) / (1000 if extreme else 1)
    signed = bool(rng.integers(2))
    out_enc = UniformAct(8, signed, 0.1, int(rng.integers(-20, 20)) if signed else int(rng.integers(0, 40)))
    if rng.integers(2):
        out_enc = [EnqAct(2, 5, 1), KnqAct(2, (0, 3, 10, 40), (), 0), UniformAct(12, True, 0.1, 3)][int(rng.integers(3))]
    clip = None if rng.integers(2) else (int(rng.integers(-50, 0)), int(rng.integers(0, 60)))
    ep = make_epilogue(m, mode, clip, out_enc)
    assert ep is not None
    stored_codes, code_lo = {"uint8": (codes, 0), "int8": ((codes.astype(np.int16) - 128).astype(np.int8), -128),
                             "int16": (codes.astype(np.int16), 0)}[stored]
    got = codes_path.depthwise_codes(stored_codes, table, code_lo, wv, bias, g, pad, x_reach, ep)
    assert got is not None
    acc, _ = mac.conv2d_acc_reference(table[codes], wv, bias, stride, pads, c, pad, 64, "wrap")
    want = run_epilogue(ep, acc)
    assert got.dtype == want.dtype
    np.testing.assert_array_equal(got, want)


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), wide=st.booleans(), mode=st.sampled_from(["float32", "float64"]))
def test_depthwise_codes_sum_plus_bias_at_the_int32_edge(seed, wide, mode):
    """Biases as large as the kernels' int32 (`narrow`) path admits: sum + bias reaches +-(2^31 - 1), where a
    wrong int32 / int64 conversion of the sum in the fused epilogue would show."""
    rng = np.random.default_rng(seed)
    n, c, h, w, (kh, kw), stride, pads = depthwise_case(rng, wide)
    zp = int(rng.integers(0, 256))
    table = np.arange(256) - zp
    codes = rng.integers(0, 256, (n, c, h, w)).astype(np.uint8)
    wv = rng.integers(-127, 128, (c, 1, kh, kw))
    pad = int(rng.choice([0, int(table[0]), int(table[-1])]))
    g = conv_geometry(codes.shape, wv.shape, stride, pads, c)
    x_reach = max(int(np.abs(table).max()), abs(pad))
    bound = x_reach * int(np.abs(wv).reshape(c, -1).sum(1).max())
    edge = (1 << 31) - 1 - bound   # the largest |bias| of the int32 path
    bias = np.array([int(rng.choice([edge, -edge, int(rng.integers(-edge, edge + 1))])) for _ in range(c)])
    m = rng.uniform(0.5, 2.0, c) * 100.0 / 2**31   # codes neither all clipped nor all equal
    out_enc = UniformAct(8, True, 0.1, int(rng.integers(-20, 20)))
    ep = make_epilogue(m, mode, None, out_enc)
    assert ep is not None
    got = codes_path.depthwise_codes(codes, table, 0, wv, bias, g, pad, x_reach, ep)
    assert got is not None
    acc, _ = mac.conv2d_acc_reference(table[codes], wv, bias, stride, pads, c, pad, 64, "wrap")
    np.testing.assert_array_equal(got, run_epilogue(ep, acc))


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), wide=st.booleans(), mode=st.sampled_from(["float32", "float64"]))
def test_depthwise_codes_sums_float32_cannot_hold(seed, wide, mode):
    """Accumulator bounds between 2^24 and 2^31: products and sums no longer exact in float32. Each channel's
    input is one constant value, so every interior output sums the same x·Σw (large, mostly odd products); a
    bias cancels it to within the output's range and a unit multiplier keeps every low bit of the sum in the
    codes: a float32 sum (one rounding step = 2 to 64) would show."""
    rng = np.random.default_rng(seed)
    n, c, h, w, (kh, kw), stride, pads = depthwise_case(rng, wide)
    wv = rng.integers(-32767, 32768, (c, 1, kh, kw)) | 1   # odd weights: odd products
    sum_w = int(np.abs(wv).reshape(c, -1).sum(1).max())
    reach = int(rng.integers(-(-(1 << 24) // sum_w), (1 << 31) // sum_w + 1))   # bound in [2^24, 2^31)
    table = np.clip(np.arange(256) * (2 * reach // 255) - reach, -reach, reach) | 1
    table[:2] = [-reach | 1, reach | 1]
    x_reach = max(int(np.abs(table).max()), reach)
    code_of = rng.integers(0, 256, c)   # one code per channel
    codes = np.broadcast_to(code_of[None, :, None, None], (n, c, h, w)).astype(np.uint8)
    interior = table[code_of] * wv.reshape(c, -1).sum(1)
    bias = -interior + rng.integers(-30000, 30001, c)
    g = conv_geometry(codes.shape, wv.shape, stride, pads, c)
    ep = make_epilogue(np.ones(1), mode, None, UniformAct(16, True, 1.0, 0))
    got = codes_path.depthwise_codes(codes, table, 0, wv, bias, g, 0, x_reach, ep)
    assert got is not None
    acc, _ = mac.conv2d_acc_reference(table[codes], wv, bias, stride, pads, c, 0, 64, "wrap")
    np.testing.assert_array_equal(got, run_epilogue(ep, acc))


def test_depthwise_codes_declines_what_it_does_not_fuse():
    codes = np.zeros((1, 4, 5, 5), np.uint8)
    table = np.arange(256) - 3
    ep = make_epilogue(np.full(4, 0.01), "float32", None, UniformAct(8))
    w = np.ones((4, 1, 3, 3), np.int64)
    g = conv_geometry(codes.shape, w.shape, (1, 1), (1, 1, 1, 1), 4)
    assert codes_path.depthwise_codes(codes, table, 0, w, None, g, 0, 255, ep) is not None
    fixed = make_epilogue(np.full(4, 0.01), "fixed_double", None, UniformAct(8))
    assert codes_path.depthwise_codes(codes, table, 0, w, None, g, 0, 255, fixed) is None   # not a float mode
    w2 = np.ones((8, 1, 3, 3), np.int64)   # two outputs per group
    g2 = conv_geometry(codes.shape, w2.shape, (1, 1), (1, 1, 1, 1), 4)
    ep8 = make_epilogue(np.full(8, 0.01), "float32", None, UniformAct(8))
    assert codes_path.depthwise_codes(codes, table, 0, w2, None, g2, 0, 255, ep8) is None


@settings(max_examples=80, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), with_bias=st.booleans())
def test_xnor_signs_equal_run_signs(seed, with_bias):
    rng = np.random.default_rng(seed)
    c = int(rng.integers(1, 9))
    acc = rng.integers(-2**31, 2**31, (int(rng.integers(1, 4)), c, int(rng.integers(1, 7)))).astype(np.int32)
    acc.reshape(-1)[:2] = [-2**31, 2**31 - 1][:acc.size]
    bias = None
    if with_bias:
        edges = [0, 1, -1, 2**31 - 1, -2**31, 2**31, -2**31 - 1, 2**31 + 1, -2**31 + 1, 2**40, -2**40]
        bias = np.array([int(rng.choice(edges)) if rng.integers(2) else int(rng.integers(-2**32, 2**32))
                         for _ in range(c)], np.int64)
    got = popcount.signs(acc, bias)
    assert got.dtype == np.uint8
    np.testing.assert_array_equal(got, run_signs(acc, bias))


@pytest.mark.parametrize("seed", range(3))
def test_engine_fused_depthwise_equals_separate_passes(monkeypatch, seed):
    """A depthwise-separable model: the engine's output codes and every count with the fused kernel and
    without it."""
    from simulator.encodings import UniformW
    from simulator.graph import Layer, Model
    from simulator.engine import Engine
    from dataclasses import asdict

    rng = np.random.default_rng(seed)
    c, size, stride = 6, (12, 40, 40)[seed], (1, 1, 2)[seed]   # channels-last, planar, channels-last
    u8 = UniformAct(8, False, 0.05, int(rng.integers(0, 40)))
    wq = UniformW(8, True, (0.02,), (0,))
    layers = [Layer("dw", "conv2d", ["input"], {"groups": c, "padding": [1, 1, 1, 1], "requant": "float32",
                                                "stride": [stride, stride]},
                    u8, rng.integers(-127, 128, (c, 1, 3, 3)), wq, bias=rng.integers(-900, 900, c)),
              Layer("pw", "conv2d", ["dw"], {"requant": "float64", "clip": [0, 255]}, u8,
                    rng.integers(-127, 128, (8, c, 1, 1)), wq)]
    model = Model("dws", (c, size, size), u8, layers).check()
    codes = rng.integers(0, 256, (3, c, size, size))
    fused = Engine(model).run(codes, keep_all=True)
    monkeypatch.setattr(engine_mod, "_fused_depthwise", lambda *a: None)
    separate = Engine(model).run(codes, keep_all=True)
    for name in separate.tensors:
        np.testing.assert_array_equal(fused.tensors[name], separate.tensors[name])
    assert [asdict(a) for a in fused.trace.layers] == [asdict(b) for b in separate.trace.layers]
    dw = fused.trace.layers[0]   # the zero-gating unit on the decoded input (the pad code decodes to 0)
    assert (dw.zero_act_macs, dw.zero_any_macs) == zero_operand_macs(
        codes - u8.zero_point, layers[0].weight, (stride, stride), (1, 1, 1, 1), c, 0)


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), dtype=st.sampled_from([np.uint8, np.int8, np.int16, np.int64]))
def test_tiled_maxpool_equals_pooling_unit(seed, dtype):
    """Windows that tile the planes (kernel = stride, no padding): code_tables' own kernel for that case."""
    from simulator.kernels import code_tables
    from simulator.units import pooling

    rng = np.random.default_rng(seed)
    info = np.iinfo(dtype)
    kh, kw = (2, 2) if rng.integers(2) else tuple(int(v) for v in rng.integers(1, 4, 2))
    oh, ow = (int(v) for v in rng.integers(1, 6, 2))
    x = rng.integers(max(info.min, -2**40), min(info.max, 2**40), (int(rng.integers(1, 4)), 3, oh * kh, ow * kw),
                     endpoint=True).astype(dtype)
    got = code_tables.maxpool_codes(x, (kh, kw), (kh, kw), (0, 0, 0, 0))
    ref, _ = pooling.maxpool(x.astype(np.int64), (kh, kw), (kh, kw), (0, 0, 0, 0), None)
    assert got.dtype == x.dtype
    np.testing.assert_array_equal(got.astype(np.int64), ref)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), one_zero_code=st.booleans())
def test_pointwise_zero_taps_equal_zero_gating_unit(seed, one_zero_code):
    """1x1, stride 1, no padding (pointwise convs, dense layers as [N, K, 1, 1]): the per-channel zero count."""
    from simulator.units.zero_gating import zero_operand_macs

    rng = np.random.default_rng(seed)
    n, c, h, w, co = (int(v) for v in rng.integers(1, 6, 5))
    table = np.arange(8) - int(rng.integers(0, 8)) if one_zero_code else rng.integers(-2, 3, 8)
    codes = rng.integers(0, 8, (n, c, h, w)).astype(np.uint8)
    wv = rng.integers(-1, 2, (co, c, 1, 1))
    g = conv_geometry(codes.shape, wv.shape, (1, 1), (0, 0, 0, 0), 1)
    taps = codes_path.zero_taps_codes(codes, table == 0, 0, g, True)
    zw = (wv == 0).sum(axis=0)
    got = codes_path.zero_counts_from_taps(taps, zw, int((wv == 0).sum()), co, n * h * w)
    assert got == zero_operand_macs(table[codes], wv, (1, 1), (0, 0, 0, 0), 1, 0)


@settings(max_examples=80, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), wide=st.booleans(), stored=st.sampled_from(["uint8", "int8", "int16"]))
def test_depthwise_zero_map_counted_in_the_kernel(seed, wide, stored):
    """depthwise_codes' zero map (the window taps that read the zero code inside the image, over every output,
    channel and image) against a brute-force count over the taps' strided boxes: bands of rows (each input row
    counted by one band), strides, padding, the planar kernel; two-byte codes in the banded kernel: no count."""
    rng = np.random.default_rng(seed)
    n, c, h, w, (kh, kw), stride, pads = depthwise_case(rng, wide)
    info = np.iinfo(stored)
    zero = int(rng.integers(int(info.min), int(info.max) + 1)) if stored != "int16" else int(rng.integers(-300, 300))
    codes = np.where(rng.random((n, c, h, w)) < rng.random(), zero,
                     rng.integers(max(int(info.min), -300), min(int(info.max), 300) + 1, (n, c, h, w))).astype(stored)
    lo = int(codes.min())
    table = np.arange(int(codes.max()) - lo + 1) + lo   # the codes' own values: any table will do
    wv = rng.integers(-5, 6, (c, 1, kh, kw))
    g = conv_geometry(codes.shape, wv.shape, stride, pads, c)
    ep = make_epilogue(np.full(c, 0.01), "float32", None, UniformAct(8))
    done = codes_path.depthwise_codes(codes, table, lo, wv, None, g, 0, 300, ep, zero_code=zero)
    assert done is not None
    _, map_total = done
    xp = np.full((n, c, h + pads[0] + pads[2], w + pads[1] + pads[3]), 10**9, np.int64)
    xp[:, :, pads[0]:pads[0] + h, pads[1]:pads[1] + w] = codes
    want = sum(int((xp[:, :, r:r + stride[0] * g.ho:stride[0], s:s + stride[1] * g.wo:stride[1]] == zero).sum())
               for r in range(kh) for s in range(kw))
    vectors = (kh, kw) == (3, 3) and c >= im2col.dw_lanes(np.float32)   # (float32 sums: the bound is small)
    planar = g.wo >= codes_path.PLANAR_WIDTH and stride == (1, 1) and not vectors
    if stored == "int16" and not planar:
        assert map_total is None
    else:
        assert map_total == want
