"""The engine's fast paths against the reference units they replace, bit for bit.

- kernels/epilogue.py (requantize -> clip -> encode in one pass) against units/requantizer.py + np.clip + the
  encoder, every mode and encoding, extreme accumulators included; None exactly where the reference refuses.
- kernels/codes_path.py (the MAC sum straight from codes: int16 micro-kernel, u8 x s8 micro-kernel, depthwise
  kernel) against mac.conv2d_acc_reference (Python integers), with operands at the extremes each path admits
  (±32767 for int16, 0..255 x -128 for u8) and tiny reduction chunks for the int32 lane arithmetic.
- codes_path.zero_taps_codes against units/zero_gating.zero_operand_macs, and code_tables.maxpool_codes against
  units/pooling.maxpool.
- The whole engine with its fast paths against the same engine with them switched off (the reference units),
  on random models of every encoding: output codes and every event count equal.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from model_factory import random_act_enc, random_model
from simulator import engine as engine_mod
from simulator.encodings import BinaryAct, EnqAct, KnqAct, UniformAct
from simulator.errors import HwsimError
from simulator.kernels import code_tables, codes_path, im2col, mac
from simulator.kernels.epilogue import code_dtype, make_epilogue, run_epilogue
from simulator.kernels.im2col import conv_geometry
from simulator.qnn.model_io import load_model
from simulator.units import pooling
from simulator.units.requantizer import REQUANT_MODES, requantize
from simulator.units.zero_gating import zero_operand_macs

MODELS = Path(__file__).resolve().parents[1] / "models"

EDGE_ACC = [0, 1, -1, 2**31 - 1, -2**31, 2**31, -2**31 - 1, 2**24 + 1, -(2**24) - 1, 2**40, -2**40, 2**62, -2**62]


def reference_epilogue(acc, m, mode, clip, enc):
    v = requantize(acc, m, mode, 1)
    if clip is not None:
        v = np.clip(v, clip[0], clip[1])
    return enc.encode(v)


def out_encodings(rng):
    return [UniformAct(8, False, 0.1, int(rng.integers(0, 256))), UniformAct(8, True, 0.1, int(rng.integers(-128, 128))),
            UniformAct(16, True, 0.5, 3), UniformAct(3, False, 1.0, 0), random_act_enc(rng, allow_binary=False),
            EnqAct(2, 5, 1), KnqAct(2, (0, 3, 10, 40), (), 0)]


@settings(max_examples=150, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), mode=st.sampled_from(REQUANT_MODES), per_channel=st.booleans(),
       clipped=st.booleans(), int32=st.booleans(), rows=st.sampled_from(["short", "short in pieces", "long"]))
def test_epilogue_equals_reference_units(seed, mode, per_channel, clipped, int32, rows):
    """Rows (one image's channel) short or long: the float modes run each image as one line in pieces
    (epilogue._float_spread, PIECE cut to 16 for the second case) or row by row."""
    from simulator.kernels import epilogue
    saved = epilogue.PIECE
    epilogue.PIECE = 16 if rows == "short in pieces" else saved
    try:
        _epilogue_case(seed, mode, per_channel, clipped, int32, 7 if rows != "long" else epilogue.SHORT_ROW + 3)
    finally:
        epilogue.PIECE = saved


def _epilogue_case(seed, mode, per_channel, clipped, int32, size):
    rng = np.random.default_rng(seed)
    channels = 11 if mode == "fixed_double_blocks8" else 5   # one full block of 8 and 3 channels left over
    c = channels if per_channel else 1
    if mode == "shift":
        m = 2.0 ** -rng.integers(-4, 40, c).astype(np.float64)
    else:
        m = np.exp(rng.uniform(-25, 3, c))
    acc = rng.integers(-2**33, 2**33, (2, channels, size)) >> rng.integers(0, 34, (2, channels, size))
    acc[0, :, :2] = rng.choice(EDGE_ACC, (channels, 2))
    if mode in ("float32", "float64"):   # exact ties: acc * m = k + 1/2 when m is a power of two
        acc[1, :, 0] = 2 * rng.integers(-1000, 1000, channels) + 1
    if int32:
        acc = np.clip(acc, -2**31, 2**31 - 1).astype(np.int32)
    for enc in out_encodings(rng):
        lo, hi = enc.value_range()
        clip = (int(rng.integers(lo - 3, hi + 1)), int(hi + rng.integers(0, 3))) if clipped else None
        ep = make_epilogue(m, mode, clip, enc)
        if ep is None:
            continue
        got = run_epilogue(ep, acc)
        try:
            ref = reference_epilogue(acc.astype(np.int64), m, mode, clip, enc)
        except HwsimError:
            assert got is None
            continue
        assert got is not None and got.dtype == code_dtype(enc)
        np.testing.assert_array_equal(got.astype(np.int64), ref)


@pytest.mark.parametrize("size", [60, 100])   # one image as a line in pieces, or row by row
def test_epilogue_wide_code_offset_takes_the_table(size):
    """A uniform code whose offset float32 cannot add exactly (|value| + |offset| >= 2^24: no shipped encoding
    has one, the kernels' float add relies on it): make_epilogue takes the table path, and the codes equal the
    encoder's. A duck-typed encoder, codes = value + 2^24."""
    class Wide:
        def value_range(self):
            return 0, 2**23

        def code_range(self):
            return 2**24, 2**24 + 2**23

        def encode(self, v):
            return np.asarray(v, np.int64) + 2**24

    ep = make_epilogue(np.array([1.0]), "float32", (2**23 - 40, 2**23), Wide())
    assert ep is not None and not ep.linear
    acc = np.arange(2**23 - size + 10, 2**23 + 10).reshape(1, 1, -1)
    np.testing.assert_array_equal(run_epilogue(ep, acc), np.clip(acc, 2**23 - 40, 2**23) + 2**24)


def test_epilogue_declines_what_it_cannot_fuse():
    assert make_epilogue(np.array([0.3]), "shift", None, UniformAct(8)) is None        # not a power of two
    assert make_epilogue(np.array([0.5]), "float32", None, BinaryAct(1.0)) is None
    assert make_epilogue(np.array([np.inf]), "float32", None, UniformAct(8)) is None
    assert make_epilogue(np.array([0.5]), "float64", (5, 1), UniformAct(8)) is None     # empty clip
    assert make_epilogue(np.array([0.5]), "float64", None, UniformAct(8)) is not None


def test_code_dtype():
    assert code_dtype(UniformAct(8)) == np.uint8 and code_dtype(UniformAct(8, True)) == np.int8
    assert code_dtype(UniformAct(9)) == np.uint16 and code_dtype(UniformAct(16, True)) == np.int16
    assert code_dtype(BinaryAct(1.0)) == np.uint8


def conv_case(rng, depthwise=False):
    n = int(rng.integers(1, 3))
    groups = int(rng.integers(1, 4))
    cig = 1 if depthwise else int(rng.integers(1, 12))
    # past 32 output channels a group takes 3-4 channel vectors per tile on AVX-512 (im2col.MAX_NVEC), the
    # last partly filled
    cog = int(rng.integers(1, 4)) if depthwise else int(rng.integers(4, 24) if rng.random() < 0.7 else rng.integers(33, 70))
    h, w = (int(v) for v in rng.integers(1, 9, 2))
    kh, kw = (int(v) for v in rng.integers(1, 4, 2))
    sh, sw = (int(v) for v in rng.integers(1, 3, 2))
    pads = tuple(int(v) for v in rng.integers(0, 2, 4))
    if h + pads[0] + pads[2] < kh or w + pads[1] + pads[3] < kw:
        kh = kw = 1
    return n, groups, cig, cog, h, w, kh, kw, (sh, sw), pads


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), depthwise=st.booleans(), extreme=st.booleans())
def test_int16_and_depthwise_paths_equal_python_ints(seed, depthwise, extreme):
    rng = np.random.default_rng(seed)
    n, groups, cig, cog, h, w, kh, kw, stride, pads = conv_case(rng, depthwise)
    # a decode table reaching ±32767 (the int16 limit the micro-kernel admits) and weights at ±32767
    top = 32767 if extreme else 300
    table = rng.integers(-top, top + 1, 64)
    table[:2] = [-top, top]
    codes = rng.integers(0, 64, (n, cig * groups, h, w)).astype(np.uint8)
    codes.reshape(-1)[:2] = [0, 1][:codes.size]
    wv = rng.integers(-top, top + 1, (cog * groups, cig, kh, kw))
    wv.reshape(-1)[:2] = [top, -top][:wv.size]
    bias = rng.integers(-2**40, 2**40, cog * groups)
    pad = int(rng.choice([-top, 0, top]))
    g = conv_geometry(codes.shape, wv.shape, stride, pads, groups)
    got = codes_path.conv2d_sum_codes(codes, table, 0, wv, bias, g, pad, top, top)
    ref, _ = mac.conv2d_acc_reference(table[codes], wv, bias, stride, pads, groups, pad, 64, "wrap")
    np.testing.assert_array_equal(got, ref)


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), signed=st.booleans(), chunk=st.sampled_from([None, 1, 2, 3]),
       int32=st.booleans(), wide_tiles=st.booleans())
def test_u8_path_equals_python_ints(seed, signed, chunk, int32, wide_tiles):
    """(wide_tiles: every call may take im2col.MAX_NVEC channel vectors per tile, not only large ones)"""
    saved = im2col.WIDE_TILE_MACS
    im2col.WIDE_TILE_MACS = 0 if wide_tiles else saved
    try:
        _u8_path_case(seed, signed, chunk, int32)
    finally:
        im2col.WIDE_TILE_MACS = saved


def _u8_path_case(seed, signed, chunk, int32):
    rng = np.random.default_rng(seed)
    n, groups, cig, cog, h, w, kh, kw, stride, pads = conv_case(rng)
    lo = -128 if signed else 0
    codes = rng.integers(lo, lo + 256, (n, cig * groups, h, w)).astype(np.int8 if signed else np.uint8)
    codes.reshape(-1)[:2] = [lo, lo + 255][:codes.size]         # bytes 0 and 255
    wv = rng.integers(-128, 128, (cog * groups, cig, kh, kw))
    wv.reshape(-1)[:2] = [-128, 127][:wv.size]
    zp = int(rng.integers(lo, lo + 256))
    pad_code = int(rng.integers(lo, lo + 256))
    bias = rng.integers(-2**20, 2**20, cog * groups)
    g = conv_geometry(codes.shape, wv.shape, stride, pads, groups)
    zero_code = int(rng.choice([zp, lo, lo + 255, int(codes.reshape(-1)[-1])])) if rng.integers(2) else None
    got = codes_path.conv2d_sum_u8(codes, lo, lo - zp, wv, bias, g, pad_code - lo, 128,
                                   np.int32 if int32 else np.int64, _chunk=chunk, zero_code=zero_code)
    if zero_code is not None:   # the zero codes per input channel, counted on the way into the canvas
        got, zeros = got
        want = [sum(int(v) == zero_code for v in codes[:, c].reshape(-1)) for c in range(codes.shape[1])]
        assert zeros.tolist() == want
    ref, _ = mac.conv2d_acc_reference(codes.astype(np.int64) - zp, wv, bias, stride, pads, groups, pad_code - zp,
                                      64, "wrap")
    np.testing.assert_array_equal(got, ref)


@settings(max_examples=80, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), pad_zero=st.booleans(), one_zero_code=st.booleans())
def test_zero_taps_equal_zero_gating_unit(seed, pad_zero, one_zero_code):
    rng = np.random.default_rng(seed)
    n, groups, cig, cog, h, w, kh, kw, stride, pads = conv_case(rng, depthwise=bool(rng.integers(2)))
    table = rng.integers(-2, 3, 8)
    if one_zero_code:
        table = np.arange(8) - int(rng.integers(0, 8))
    codes = rng.integers(0, 8, (n, cig * groups, h, w)).astype(np.uint8)
    wv = rng.integers(-1, 2, (cog * groups, cig, kh, kw))
    g = conv_geometry(codes.shape, wv.shape, stride, pads, groups)
    taps = codes_path.zero_taps_codes(codes, table == 0, 0, g, pad_zero)
    zw = (wv == 0).reshape(groups, cog, cig, kh, kw).sum(axis=1).reshape(groups * cig, kh, kw)
    got = codes_path.zero_counts_from_taps(taps, zw, int((wv == 0).sum()), cog, n * g.ho * g.wo)
    assert got == zero_operand_macs(table[codes], wv, stride, pads, groups, 0 if pad_zero else 5)


@settings(max_examples=80, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), pad_zero=st.booleans(), one_zero_code=st.booleans(),
       zero_weights=st.sampled_from(["none", "some channels", "every channel"]),
       stored=st.sampled_from(["uint8", "int8", "int16"]))
def test_zero_operand_counts_equal_zero_gating_unit(seed, pad_zero, one_zero_code, zero_weights, stored):
    """The totals over a channel-summed zero map (and the taps of the channels with a zero weight only)
    against the zero-gating unit, which counts every MAC's operands."""
    rng = np.random.default_rng(seed)
    n, groups, cig, cog, h, w, kh, kw, stride, pads = conv_case(rng, depthwise=bool(rng.integers(2)))
    table = rng.integers(-2, 3, 8) if not one_zero_code else np.arange(8) - int(rng.integers(0, 9))
    codes = rng.integers(0, 8, (n, cig * groups, h, w))
    wv = rng.choice([-3, -1, 1, 2], (cog * groups, cig, kh, kw))
    if zero_weights != "none":
        chosen = rng.random(cig * groups) < (0.4 if zero_weights == "some channels" else 2)
        mask = (rng.random(wv.shape) < 0.3) & chosen.reshape(groups, 1, cig, 1, 1).repeat(cog, 1).reshape(
            cog * groups, cig, 1, 1)
        wv[mask] = 0
    lo = {"uint8": 0, "int8": -128, "int16": -5}[stored]
    g = conv_geometry(codes.shape, wv.shape, stride, pads, groups)
    zw = (wv == 0).reshape(groups, cog, cig, kh, kw).sum(axis=1).reshape(groups * cig, kh, kw)
    got = codes_path.zero_operand_counts((codes + lo).astype(stored), table == 0, lo, g, pad_zero, zw,
                                         int((wv == 0).sum()))
    assert got == zero_operand_macs(table[codes], wv, stride, pads, groups, 0 if pad_zero else 5)


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), dtype=st.sampled_from([np.uint8, np.int8, np.int16, np.int64]))
def test_maxpool_codes_equals_pooling_unit(seed, dtype):
    rng = np.random.default_rng(seed)
    info = np.iinfo(dtype)
    kh, kw = (int(v) for v in rng.integers(1, 4, 2))
    stride = tuple(int(v) for v in rng.integers(1, 4, 2))
    pads = (int(rng.integers(0, kh)), int(rng.integers(0, kw)), int(rng.integers(0, kh)), int(rng.integers(0, kw)))
    h, w = kh + int(rng.integers(0, 6)), kw + int(rng.integers(0, 6))
    x = rng.integers(max(info.min, -2**40), min(info.max, 2**40), (2, 3, h, w), endpoint=True).astype(dtype)
    got = code_tables.maxpool_codes(x, (kh, kw), stride, pads)
    ref, _ = pooling.maxpool(x.astype(np.int64), (kh, kw), stride, pads, None)
    assert got.dtype == x.dtype
    np.testing.assert_array_equal(got.astype(np.int64), ref)


def _engine_without_fast_paths(monkeypatch, model):
    monkeypatch.setattr(engine_mod, "make_codes_plan", lambda *a, **k: None)
    monkeypatch.setattr(engine_mod, "make_epilogue", lambda *a, **k: None)
    monkeypatch.setattr(engine_mod.Engine, "_table", lambda self, lay, build: None)
    return engine_mod.Engine(model)


@pytest.mark.parametrize("u8_kernel", [True, False])
@pytest.mark.parametrize("seed", range(40))
def test_engine_fast_paths_equal_reference_units(monkeypatch, seed, u8_kernel):
    monkeypatch.setattr(engine_mod, "U8_KERNEL", u8_kernel)   # both routes, whatever this CPU prefers
    model = random_model(seed, requant=("float64", "float32", "shift", "fixed_double", "fixed_single"))
    x = model.sample_input
    fast = engine_mod.Engine(model)
    try:
        res = fast.run(x)
    except HwsimError as exc:       # the same refusal (a fixed-point contract) on the reference path
        with monkeypatch.context() as m:
            with pytest.raises(HwsimError) as ref_exc:
                _engine_without_fast_paths(m, model).run(x)
        assert str(ref_exc.value) == str(exc)
        return
    with monkeypatch.context() as m:
        ref = _engine_without_fast_paths(m, model).run(x, keep_all=True)
    np.testing.assert_array_equal(res.output, ref.output)
    assert res.output.dtype == np.int64
    for a, b in zip(res.trace.layers, ref.trace.layers):
        assert vars(a) == vars(b), a.name


@pytest.mark.parametrize("u8_kernel", [True, False])
def test_fast_paths_are_taken_on_an_ort_like_model(monkeypatch, u8_kernel):
    """A uniform 8-bit model with int8 weights takes the u8 path (where the engine chooses it: VNNI CPUs), the
    fused epilogue and code tables; either route gives the reference units' result."""
    monkeypatch.setattr(engine_mod, "U8_KERNEL", u8_kernel)
    if not u8_kernel:
        model = random_model(0)
        eng = engine_mod.Engine(model)
        assert all(p.from_codes is None or p.from_codes.u8_offset is None for p in eng.plans.values())
        return
    for seed in range(200):
        model = random_model(seed)
        lays = [lay for lay in model.layers if lay.op in ("conv2d", "dense")]
        eng = engine_mod.Engine(model)
        if any(eng.plans[lay.name].from_codes is not None and eng.plans[lay.name].from_codes.u8_offset is not None
               for lay in lays):
            break
    else:
        pytest.fail("no random model reaches the u8 path")
    assert any(eng.plans[lay.name].epilogue is not None for lay in lays)
    assert im2col.LANES[np.dtype(np.uint8)] * 32 == im2col.VECTOR_BITS


@pytest.mark.parametrize("stride,pads", [((1, 1), (1, 1, 1, 1)), ((2, 2), (1, 1, 1, 1)), ((2, 1), (0, 1, 1, 0)),
                                         ((1, 2), (0, 0, 0, 0))])
def test_depthwise_3x3_kernel_equals_python_ints(stride, pads):
    """The 3x3 depthwise kernel (nine taps per pass), both column phases, against Python integers."""
    rng = np.random.default_rng(sum(stride) + sum(pads))
    codes = rng.integers(0, 256, (2, 7, 9, 8)).astype(np.uint8)
    table = np.arange(256) - 117
    wv = rng.integers(-128, 128, (7, 1, 3, 3))
    bias = rng.integers(-1000, 1000, 7)
    g = conv_geometry(codes.shape, wv.shape, stride, pads, 7)
    got = codes_path.conv2d_sum_codes(codes, table, 0, wv, bias, g, 5, 138, 128, np.int32)
    ref, _ = mac.conv2d_acc_reference(table[codes], wv, bias, stride, pads, 7, 5, 32, "wrap")
    np.testing.assert_array_equal(got, ref)


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), shared=st.booleans(), int32=st.booleans())
def test_threshold_bank_equals_encode_acc(seed, shared, int32):
    from simulator.encodings import ThresholdAct
    from simulator.kernels.epilogue import run_thresholds
    rng = np.random.default_rng(seed)
    c, n_th = 5, int(rng.integers(1, 8))
    rows = np.sort(rng.integers(-50, 50, (1 if shared else c, n_th)), axis=1)
    bits = max(1, int(n_th).bit_length())
    enc = ThresholdAct(bits, bool(rng.integers(2)), 1.0, 0, tuple(tuple(int(v) for v in r) for r in rows))
    acc = rng.integers(-60, 60, (3, c, 4, 2))
    acc.reshape(-1)[:n_th] = rows[0]                       # values equal to a threshold: >= counts them
    if int32:
        acc = acc.astype(np.int32)
    got = run_thresholds(acc, enc.threshold_array(c), enc.code_range()[0], code_dtype(enc))
    np.testing.assert_array_equal(got.astype(np.int64), enc.encode_acc(acc.astype(np.int64), channel_axis=1))


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), stored=st.sampled_from(["uint8", "int8", "int16"]))
def test_u8_path_with_a_byte_table_equals_python_ints(seed, stored):
    """A non-uniform decoder whose values fit 256 consecutive integers (KNQ centroids) on the u8 kernel, its
    codes stored unsigned, signed (code_lo below 0: the raw byte table's sign) or in two bytes."""
    rng = np.random.default_rng(seed)
    n, groups, cig, cog, h, w, kh, kw, stride, pads = conv_case(rng)
    values = np.sort(rng.choice(np.arange(-40, 216), 16, replace=False))     # a 4-bit KNQ's centroids
    code_lo = 0 if stored == "uint8" else -8
    codes = (rng.integers(0, 16, (n, cig * groups, h, w)) + code_lo).astype(stored)
    wv = rng.integers(-128, 128, (cog * groups, cig, kh, kw))
    vmin = int(values.min())
    pad = int(values[np.argmin(np.abs(values))])
    g = conv_geometry(codes.shape, wv.shape, stride, pads, groups)
    got = codes_path.conv2d_sum_u8(codes, code_lo, vmin, wv, None, g, pad - vmin, 128, np.int64,
                                   byte_table=(values - vmin).astype(np.uint8))
    ref, _ = mac.conv2d_acc_reference(values[codes.astype(np.int64) - code_lo], wv, None, stride, pads, groups, pad,
                                      64, "wrap")
    np.testing.assert_array_equal(got, ref)


@pytest.mark.parametrize("with_bias", [False, True])
def test_sign_bits_equal_binary_encoder(with_bias):
    from simulator.kernels.epilogue import run_signs
    rng = np.random.default_rng(int(with_bias))
    acc = rng.integers(-20, 20, (3, 6, 5, 4)).astype(np.int32)
    bias = rng.integers(-5, 6, 6) if with_bias else None
    ref = BinaryAct(1.0).encode(acc.astype(np.int64) + (0 if bias is None else bias.reshape(1, -1, 1, 1)))
    np.testing.assert_array_equal(run_signs(acc, bias), ref)


@pytest.mark.parametrize("seed", range(12))
def test_chunked_batches_equal_whole_batches(monkeypatch, seed):
    """Large convs run a few images at a time; forced on tiny models (a chunk of one image), the outputs and
    every count equal the whole-batch run."""
    model = random_model(seed)
    x = np.concatenate([model.sample_input] * 3)
    whole = engine_mod.Engine(model).run(x)
    monkeypatch.setattr(engine_mod, "CHUNK_ACC_BYTES", 1)
    chunked = engine_mod.Engine(model).run(x)
    np.testing.assert_array_equal(whole.output, chunked.output)
    for a, b in zip(whole.trace.layers, chunked.trace.layers):
        assert vars(a) == vars(b), a.name


@pytest.mark.parametrize("copies", [1, 3, 4, 9])
def test_results_identical_for_any_thread_count(copies):
    """Exact integer sums: one numba thread or two give the same codes, tensors and counts, on random models of
    every encoding (residual adds, pools, depthwise and dense layers among them): two threads take each large
    kernel call in chunks through its parallel launcher (threads.launcher), and every launcher run here is
    seen to run."""
    from simulator.kernels import threads as kernel_threads
    models = [random_model(seed) for seed in range(8)]
    saved = kernel_threads.count()
    try:
        for model in models:
            x = np.concatenate([model.sample_input] * copies)
            outs = []
            for threads in (1, 2):
                kernel_threads.set_count(threads)
                res = engine_mod.Engine(model).run(x, keep_all=bool(copies % 2))
                outs.append((res.output, res.tensors, res.trace))
            np.testing.assert_array_equal(outs[0][0], outs[1][0])
            assert outs[0][1].keys() == outs[1][1].keys()
            for name, t in outs[0][1].items():
                np.testing.assert_array_equal(t, outs[1][1][name])
            assert [vars(lay) for lay in outs[0][2].layers] == [vars(lay) for lay in outs[1][2].layers]
            assert vars(outs[0][2]) == vars(outs[1][2])
    finally:
        kernel_threads.set_count(saved)


def test_every_launcher_takes_its_kernels_arguments():
    """A launcher is launch(n_tasks, chunks, *the kernel's arguments after t0, t1), and calls that kernel."""
    import inspect
    from simulator.kernels import threads as kernel_threads
    from simulator.units import float_conv_transpose  # noqa: F401  (its launcher registers on import)
    assert len(kernel_threads._launchers) >= 30
    for (module, name), launch in kernel_threads._launchers.items():
        kernel = getattr(__import__(module, fromlist=[name]), name)
        kernel_params = list(inspect.signature(getattr(kernel, "py_func", kernel)).parameters)
        launch_func = getattr(launch, "py_func", launch)
        assert list(inspect.signature(launch_func).parameters) == ["n_tasks", "chunks"] + kernel_params[2:], name
        assert name in launch_func.__code__.co_names, name


def test_two_threads_launch_the_kernels_in_parallel(monkeypatch):
    """With two threads the large calls of every shipped digits model go through the launchers (each kernel's
    chunks on numba's threads, one chunk per thread), never the worker threads, and give one thread's codes
    and counts."""
    from simulator import jit
    from simulator.kernels import threads as kernel_threads
    if jit.mode() != jit.NUMBA:
        pytest.skip("Python mode: no launches")
    launched, handed = [], []
    for key, launch in list(kernel_threads._launchers.items()):
        def counting(n_tasks, chunks, *args, _launch=launch, _key=key):
            launched.append((_key[1], n_tasks, chunks))
            return _launch(n_tasks, chunks, *args)
        monkeypatch.setitem(kernel_threads._launchers, key, counting)
    monkeypatch.setattr(kernel_threads, "_launch_of", {})   # (the launchers each kernel looked up so far)
    monkeypatch.setattr(kernel_threads, "_together", lambda *a: handed.append(a))
    with np.load(MODELS / "digits_test.npz", allow_pickle=False) as data:
        x = data["x"][:256].astype(np.float32)
    saved = kernel_threads.count()
    try:
        for path in sorted(MODELS.glob("lenet_digits_*.qnn")):
            model = load_model(path)
            codes = engine_mod.quantize_input(model, x)
            runs = []
            for threads in (1, 2):
                kernel_threads.set_count(threads)
                runs.append(engine_mod.Engine(model).run(codes, keep_all=True))
            np.testing.assert_array_equal(runs[0].output, runs[1].output)
            for name, t in runs[0].tensors.items():
                np.testing.assert_array_equal(t, runs[1].tensors[name])
            assert [vars(lay) for lay in runs[0].trace.layers] == [vars(lay) for lay in runs[1].trace.layers]
    finally:
        kernel_threads.set_count(saved)
    assert not handed
    names = {name for name, _, _ in launched}
    assert {"_bytes_transposed", "_float_lines", "_float_rows", "_zero_taps", "_maxpool_tiled"} <= names
    assert any(name.startswith("_run_tiles_nvec") for name in names)
    assert any(name.startswith("_run_sign_tiles_nvec") for name in names)   # XNOR layers between XNOR layers
    assert all(chunks == 2 for _, _, chunks in launched)


def test_layer_memo_stays_bounded_across_batch_sizes(monkeypatch):
    """Weights are packed once per layer whatever the batch size; geometries are remembered for a bounded
    number of batch sizes."""
    from simulator.kernels import codes_path as cp
    monkeypatch.setattr(engine_mod, "U8_KERNEL", True)
    for seed in range(200):
        model = random_model(seed)
        eng = engine_mod.Engine(model)
        fast = [p.from_codes for p in eng.plans.values() if p.from_codes is not None and p.from_codes.u8_offset
                is not None]
        if fast:
            break
    x = model.sample_input
    for n in range(1, 2 * cp.MEMO_ENTRIES + 3):
        eng.run(np.concatenate([x] * n)[:n])
    for memo in (f.memo for f in fast):
        assert sum(k[0] == "u8s8 weights" for k in memo) <= 1
        assert sum(k[0] == "geometry" for k in memo) <= cp.MEMO_ENTRIES
        assert sum(k[0] == "u8s8 plan" for k in memo) <= cp.MEMO_ENTRIES + 1


def test_a_refusal_reads_the_same_for_any_thread_count():
    """A run refused mid-way (here: requantized values beyond TFLite's int32) gives the message of the whole
    batch, which counts the values, on one thread or two."""
    from simulator.encodings import UniformW
    from simulator.graph import Layer, Model
    from simulator.kernels import threads as kernel_threads
    act = UniformAct(8, False, 1.0, 0)
    first = Layer("a", "dense", ["input"], {"requant": "float64", "multiplier": [1.0]}, act,   # codes as they are
                  np.eye(64, dtype=np.int64), UniformW(8, True, (1.0,), (0,)))
    lay = Layer("d", "dense", ["a"], {"requant": "float64_away", "acc_bits": 32, "multiplier": [3.0e5]}, act,
                np.full((3, 64), 120, np.int64), UniformW(8, True, (1.0,), (0,)))
    model = Model("t", (64,), act, [first, lay]).check()
    x = np.zeros((4, 64), np.int64)
    x[1] = 255          # one image in each half of the batch overflows: 3 results each, 6 in all
    x[3, :40] = 200
    saved = kernel_threads.count()
    messages = []
    try:
        for threads in (1, 2):
            kernel_threads.set_count(threads)
            eng = engine_mod.Engine(model)
            with pytest.raises(HwsimError) as exc:
                eng.run(x)
            messages.append(str(exc.value))
    finally:
        kernel_threads.set_count(saved)
    assert "6 result(s) outside int32" in messages[0]
    assert messages[0] == messages[1]
