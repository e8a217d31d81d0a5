"""The numpy twins of the engine's kernels against the numba kernels, bit for bit, and the tiers that choose
between them (simulator/jit.py: a one-run command runs a kernel whose whole run's work is small as its twin
instead of compiling it).

Each twin gets task ranges that cut images and rows anywhere, edge values (full-range accumulators, products
that fall half-way between integers, clip bounds at the ends of the output's dtype), and outputs that start
as a sentinel, so that a twin writing outside its tasks is caught."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from simulator import jit
from simulator.kernels import codes_path, epilogue, popcount
from simulator.kernels.im2col import conv_geometry

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(jit.mode() == jit.PYTHON, reason="numba kernels against their twins")

DTYPES = {"uint8": np.uint8, "int8": np.int8, "int16": np.int16}


def _range(rng, n):
    t0 = int(rng.integers(0, n + 1))
    return t0, int(rng.integers(t0, n + 1))


def _accumulators(rng, shape, dtype):
    """Random accumulators with the edge values mixed in: 0, +-1, odd values (half-way products with m = 0.5),
    the dtype's ends, and for int64 values past float32's and float64's exact integers."""
    info = np.iinfo(dtype)
    acc = rng.integers(info.min, info.max, shape, dtype=dtype, endpoint=True)
    small = rng.integers(-300, 301, shape).astype(dtype)
    edges = np.array([0, 1, -1, 3, -3, info.max, info.min, info.max - 1, info.min + 1]
                     + ([2**24 + 1, -(2**24) - 1, 2**53 + 1, -(2**53) - 1] if dtype == np.int64 else []), dtype)
    pick = rng.integers(0, 3, shape)
    return np.where(pick == 0, acc, np.where(pick == 1, small, edges[rng.integers(0, edges.size, shape)]))


def _multipliers(rng, count, float_type):
    m = np.exp(rng.uniform(-12, 2, count)) * rng.choice([1, -1], count)
    m[rng.random(count) < 0.3] = 0.5   # ties: half-way products, rounded to even
    return m.astype(float_type)


def _clip_range(rng, out_dtype):
    """(lo, hi, offset): codes clip(v, lo, hi) + offset inside the output's dtype, often at its ends."""
    info = np.iinfo(out_dtype)
    offset = int(rng.integers(-20, 21))
    lo_min, hi_max = int(info.min) - offset, int(info.max) - offset
    lo = lo_min if rng.random() < 0.3 else int(rng.integers(lo_min, hi_max + 1))
    hi = hi_max if rng.random() < 0.3 else int(rng.integers(lo, hi_max + 1))
    return lo, hi, offset


def _assert_twin(kernel, twin, sentinel, args_with):
    """Run the kernel and its twin, each into its own copy of the sentinel-filled output (`args_with(out)`: the
    call's arguments around it); the outputs must be equal. Returns the output and both calls' results."""
    want, got = sentinel.copy(), sentinel.copy()
    results = kernel(*args_with(want)), twin(*args_with(got))
    np.testing.assert_array_equal(got, want)
    return got, results


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), acc_t=st.sampled_from([np.int32, np.int64]),
       float_t=st.sampled_from([np.float32, np.float64]), out_t=st.sampled_from(list(DTYPES)),
       shared=st.booleans())
def test_float_lines_twin(seed, acc_t, float_t, out_t, shared):
    rng = np.random.default_rng(seed)
    n, c, s = int(rng.integers(1, 5)), int(rng.integers(1, 6)), int(rng.integers(1, 80))
    acc = _accumulators(rng, (n, c, s), acc_t)
    m = _multipliers(rng, 1 if shared else c, float_t)
    lo, hi, offset = _clip_range(rng, DTYPES[out_t])
    t0, t1 = _range(rng, n * c)
    _assert_twin(epilogue._float_lines, epilogue._float_lines_numpy, np.full((n, c, s), 7, DTYPES[out_t]),
                 lambda out: (t0, t1, acc, m, shared, lo, hi, offset, out))


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), acc_t=st.sampled_from([np.int32, np.int64]),
       float_t=st.sampled_from([np.float32, np.float64]), out_t=st.sampled_from(list(DTYPES)),
       linear=st.booleans())
def test_float_spread_twin(seed, acc_t, float_t, out_t, linear):
    rng = np.random.default_rng(seed)
    n, size, piece = int(rng.integers(1, 6)), int(rng.integers(1, 90)), int(rng.integers(1, 40))
    acc = _accumulators(rng, (n, size), acc_t)
    m = _multipliers(rng, size, float_t)
    lo, hi, offset = _clip_range(rng, DTYPES[out_t])
    info = np.iinfo(DTYPES[out_t])
    table = rng.integers(info.min, info.max, hi - lo + 1, endpoint=True).astype(DTYPES[out_t])
    pieces = -(-size // piece)
    t0, t1 = _range(rng, n * pieces)
    _assert_twin(epilogue._float_spread, epilogue._float_spread_numpy, np.full((n, size), 7, DTYPES[out_t]),
                 lambda out: (t0, t1, acc, m, lo, hi, offset, table, linear, piece, out))


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), code_t=st.sampled_from(list(DTYPES)), groups=st.integers(1, 3),
       cig=st.integers(1, 5), spare=st.integers(0, 2))
def test_decode_into_twin(seed, code_t, groups, cig, spare):
    rng = np.random.default_rng(seed)
    n, h, w = (int(v) for v in rng.integers(1, 6, 3))
    top, left = int(rng.integers(0, 3)), int(rng.integers(0, 3))
    info = np.iinfo(DTYPES[code_t])
    lo = int(rng.integers(info.min, info.max - 20))
    hi = min(info.max, lo + int(rng.integers(0, 300)))
    codes = rng.integers(lo, hi, (n, groups * cig, h, w), endpoint=True).astype(DTYPES[code_t])
    table = rng.integers(-32768, 32768, hi - lo + 1).astype(np.int16)
    canvas_dims = (n, h + top + int(rng.integers(0, 3)), w + left + int(rng.integers(0, 3)), groups, cig + spare)
    t0, t1 = _range(rng, n * h)
    _assert_twin(codes_path._decode_into, codes_path._decode_into_numpy, np.full(canvas_dims, -7, np.int16),
                 lambda out: (t0, t1, codes, table, lo, out, top, left, cig))


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), dtype=st.sampled_from(["uint8", "int8", "int16"]))
def test_zero_channels_twin(seed, dtype):
    rng = np.random.default_rng(seed)
    n, c, s = int(rng.integers(1, 5)), int(rng.integers(1, 9)), int(rng.integers(0, 300))
    info = np.iinfo(DTYPES[dtype])
    zc = np.array([rng.choice([0, int(info.min), int(info.max), int(rng.integers(info.min, info.max))])],
                  DTYPES[dtype])
    codes = np.where(rng.random((n, c, s)) < rng.random(), zc[0],
                     rng.integers(info.min, info.max, (n, c, s), endpoint=True)).astype(DTYPES[dtype])
    t0, t1 = _range(rng, c)
    got, _ = _assert_twin(codes_path._zero_channels, codes_path._zero_channels_numpy, np.full(c, -7, np.int64),
                          lambda out: (t0, t1, codes, zc, out))
    for ci in range(t0, t1):   # and a count in Python integers
        assert got[ci] == sum(int(v) == int(zc[0]) for v in codes[:, ci].reshape(-1))


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), dtype=st.sampled_from(["uint8", "int8", "int16"]))
def test_zero_map_twin(seed, dtype):
    rng = np.random.default_rng(seed)
    n, c, s = int(rng.integers(1, 5)), int(rng.integers(1, 12)), int(rng.integers(1, 300))
    if rng.integers(3) == 0:   # more than 255 rows a chunk, rows of at least a vector: the byte counters flushed
        n, c, s = int(rng.integers(60, 90)), int(rng.integers(4, 12)), int(rng.integers(32, 48))
    chunks = int(rng.integers(1, c + 1)) if n < 60 else int(rng.integers(1, 3))
    info = np.iinfo(DTYPES[dtype])
    zc = np.array([rng.choice([0, int(info.min), int(info.max), int(rng.integers(info.min, info.max))])],
                  DTYPES[dtype])
    share = 1.0 if n >= 60 and rng.integers(2) else rng.random()   # (all zero: a byte counter would wrap)
    codes = np.where(rng.random((n, c, s)) < share, zc[0],
                     rng.integers(info.min, info.max, (n, c, s), endpoint=True)).astype(DTYPES[dtype])
    weight = rng.integers(0, 10, s)
    t0, t1 = _range(rng, chunks)
    got, _ = _assert_twin(codes_path._zero_map, codes_path._zero_map_numpy, np.full(chunks, -7, np.int64),
                          lambda out: (t0, t1, codes, zc, weight, out))
    for t in range(t0, t1):   # and a count in Python integers, chunk t's channels
        part = codes[:, t * c // chunks:(t + 1) * c // chunks]
        assert got[t] == sum(int(weight[q]) * sum(int(v) == int(zc[0]) for v in part[:, :, q].reshape(-1))
                             for q in range(s))


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), k=st.integers(1, 5), stride=st.integers(1, 3), pad=st.integers(0, 2))
def test_zero_taps_twin(seed, k, stride, pad):
    rng = np.random.default_rng(seed)
    n, c, h, w = (int(v) for v in rng.integers(1, 7, 4))
    if h + 2 * pad < k or w + 2 * pad < k:
        return
    g = conv_geometry((n, c, h, w), (c, 1, k, k), (stride, stride), (pad, pad, pad, pad), c)
    rows = np.array([codes_path._inside(r, g.top, g.sh, g.ho, g.h) for r in range(g.kh)], np.int64)
    cols = np.array([codes_path._inside(s, g.left, g.sw, g.wo, g.w) for s in range(g.kw)], np.int64)
    zc = np.array([int(rng.integers(0, 3))], np.uint8)
    codes = rng.integers(0, 3, (n, c, h, w)).astype(np.uint8)
    channels = rng.permutation(c)[:int(rng.integers(1, c + 1))]   # any subset, in any order
    t0, t1 = _range(rng, channels.size)
    got, _ = _assert_twin(codes_path._zero_taps, codes_path._zero_taps_numpy,
                          np.full((channels.size, k, k), -7, np.int64),
                          lambda out: (t0, t1, codes, zc, channels, rows, cols, out))
    # and both against a count position by position (Python integers)
    for t in range(t0, t1):
        ci = channels[t]
        for r in range(k):
            for s in range(k):
                count = sum(int(codes[b, ci, i, j] == zc[0]) for b in range(n) for oh in range(g.ho)
                            for ow in range(g.wo) for i, j in [(oh * stride + r - pad, ow * stride + s - pad)]
                            if 0 <= i < h and 0 <= j < w)
                assert got[t, r, s] == count


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), groups=st.integers(1, 3), cig=st.sampled_from([1, 7, 8, 63, 64, 65, 130]),
       odd=st.booleans())
def test_pack_canvas_twin(seed, groups, cig, odd):
    """The XNOR input packing: words, the padding around them untouched, and the count of tasks that met
    values other than 0 and 1."""
    rng = np.random.default_rng(seed)
    n, h, w = int(rng.integers(1, 4)), int(rng.integers(1, 6)), int(rng.integers(1, 11))
    x = rng.integers(0, 2, (n, groups * cig, h, w)).astype(np.uint8)
    if odd:
        x.reshape(-1)[rng.integers(0, x.size, 3)] = rng.integers(2, 256, 3)
    nw = -(-cig // 64)
    top, left = int(rng.integers(0, 3)), int(rng.integers(0, 3))
    canvas_dims = (n, h + top + int(rng.integers(0, 2)), w + left + int(rng.integers(0, 2)), groups, nw)
    t0, t1 = _range(rng, n * groups * nw)
    _, (bad_want, bad_got) = _assert_twin(popcount._pack_canvas_bytes, popcount._pack_canvas_numpy,
                                          np.full(canvas_dims, 0xA5A5A5A5A5A5A5A5, np.uint64),
                                          lambda out: (t0, t1, x, out, top, left, groups))
    assert bad_got == bad_want


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), c=st.integers(1, 20), acc_t=st.sampled_from([np.int32, np.int64]))
def test_signs_packed_twin(seed, c, acc_t):
    rng = np.random.default_rng(seed)
    n, s = int(rng.integers(1, 4)), int(rng.integers(1, 30))
    acc = _accumulators(rng, (n, c, s), acc_t)
    info = np.iinfo(acc_t)
    limit = rng.choice([0, 1, -1, 7, int(info.max), int(info.min)], c).astype(acc_t)
    always = rng.random(c) < 0.2
    nb = -(-c // 8)
    t0, t1 = _range(rng, n * nb)
    _assert_twin(popcount._signs_packed, popcount._signs_packed_numpy, np.full((n, s, nb), 0xA5, np.uint8),
                 lambda out: (t0, t1, acc, limit, always, out))


# ------------------------------------------------------------------------------------------------------------
# The tiers
# ------------------------------------------------------------------------------------------------------------
def _kernel():
    """A fresh kernel with a twin (each test's decisions are its own: a kernel's tier sticks)."""
    def twin(t0, t1, out):
        out[t0:t1] = 2

    def body(t0, t1, out):
        for i in range(t0, t1):
            out[i] = 1

    return jit.njit(nogil=True, python=twin)(body)


def _tier(kernel, work):
    fn, python = jit.tiered(kernel, work)
    out = np.zeros(4, np.int64)
    fn(0, 4, out)
    assert python == (out[0] == 2)   # the flag says what ran
    return "twin" if python else "numba"


@pytest.fixture(autouse=True)
def no_plan_left(monkeypatch):
    """Whatever a test plans, the session goes on without a plan (the other tests run the numba kernels)."""
    monkeypatch.setattr(jit, "_plan_scale", None)


@pytest.fixture
def uncached(monkeypatch):
    monkeypatch.setattr(jit, "_in_cache", lambda dispatcher: False)


def test_outside_a_plan_a_kernel_is_compiled(uncached):
    k = _kernel()
    assert _tier(k, 10) == "numba"
    with jit.planning(100):   # decided: it stays
        assert _tier(k, 10) == "numba"


def test_a_plan_gives_a_small_run_the_twin_for_the_process(uncached):
    k = _kernel()
    with jit.planning(100):
        assert _tier(k, 10) == "twin"
        assert _tier(k, jit.TWIN_WORK // 100 - 10) == "twin"   # the run's projected work, 100 times each call
    assert _tier(k, jit.TWIN_WORK) == "twin"   # after the plan, whatever the work
    late = _kernel()   # first called after the plan (a variant the warm-up did not use): the run's own work
    assert _tier(late, jit.TWIN_WORK // 2) == "twin"
    assert _tier(late, jit.TWIN_WORK // 2 + 1) == "numba"


def test_a_plan_compiles_a_kernel_once_the_run_work_passes_the_budget(uncached):
    k = _kernel()
    with jit.planning(100):
        first = jit.TWIN_WORK // 200
        assert _tier(k, first) == "twin"
        assert _tier(k, jit.TWIN_WORK // 100 - first + 1) == "numba"   # 100 times both calls: past TWIN_WORK
        assert _tier(k, 1) == "numba"
    assert _tier(k, 1) == "numba"


def test_a_kernel_in_numba_cache_is_loaded_not_replaced(monkeypatch):
    monkeypatch.setattr(jit, "_in_cache", lambda dispatcher: True)
    k = _kernel()
    with jit.planning(100):
        assert _tier(k, 1) == "numba"


def test_a_first_run_with_twins_computes_what_numba_does(tmp_path):
    """A one-run command with an empty numba cache (the first run after install): the twins it runs give the
    outputs the library's run (every kernel compiled) gives."""
    from simulator.engine import Engine, quantize_input
    from simulator.qnn.model_io import load_model
    model_path, dataset = ROOT / "models" / "lenet_digits_u8.qnn", ROOT / "models" / "digits_test.npz"
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "numba"), "HWSIM_CACHE_DIR": str(tmp_path / "hwsim")}
    env.pop("NUMBA_DISABLE_JIT", None)
    env.pop("HWSIM_KERNELS", None)
    out, report = tmp_path / "y.npy", tmp_path / "r.json"
    done = subprocess.run([sys.executable, "-m", "simulator.cli", "run", str(model_path), "--hw", "tsmc90",
                           "--dataset", str(dataset), "--output", str(out), "--json", str(report), "-q"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert json.loads(report.read_text())["timing"]["kernels"] == "numba"
    model = load_model(str(model_path))
    data = np.load(dataset)
    x = data["x"] if "x" in data.files else data[data.files[0]]
    codes = x if np.issubdtype(x.dtype, np.integer) else quantize_input(model, x)
    want = Engine(model).run(codes).output
    np.testing.assert_array_equal(np.load(out), want)


# ------------------------------------------------------------------------------------------------------------
# The IR intrinsics (kernels/microkernel.py) against the numpy twins Python mode runs, called from small jitted
# wrappers (an intrinsic only runs inside numba code)
# ------------------------------------------------------------------------------------------------------------
def _jitted(body):
    import numba
    return numba.njit(body)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), double=st.booleans())
def test_dw3x3_sums_twin(seed, double):
    from simulator.kernels import im2col, microkernel
    run = _jitted(lambda x, b, s, p, wt, acc, n, blocks: microkernel.dw3x3_sums(x, b, s, p, wt, acc, n, blocks))
    rng = np.random.default_rng(seed)
    dtype = np.float64 if double else np.float32
    lanes = im2col.dw_lanes(dtype)
    c = lanes * int(rng.integers(1, 4)) + int(rng.integers(0, lanes))   # whole vectors and a remainder
    blocks, npix, stride = c // lanes, int(rng.integers(1, 9)), int(rng.integers(1, 3))
    pitch = (npix * stride + 2) * c
    x = rng.integers(-255, 256, 3 * pitch + c).astype(dtype)
    wt = rng.integers(-127, 128, 9 * c).astype(dtype)
    base = int(rng.integers(0, c))
    want, got = np.full(npix * c, -7, dtype), np.full(npix * c, -7, dtype)
    run(x, base, stride * c, pitch, wt, got, npix, blocks)
    codes_path._dw3x3_sums_numpy(x, base, stride * c, pitch, wt, want, npix, blocks)
    np.testing.assert_array_equal(got, want)
    for p in range(npix):   # and in Python integers, the channels of whole vectors; the rest untouched
        for ch in range(c):
            exact = sum(int(wt[t * c + ch]) * int(x[base + p * stride * c + (t // 3) * pitch + (t % 3) * c + ch])
                        for t in range(9))
            assert got[p * c + ch] == (exact if ch < blocks * lanes else -7)


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_count_equal_twin(seed):
    from simulator.kernels import microkernel
    run = _jitted(lambda x, a, b, v: microkernel.count_equal(x, a, b, v))
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 4, int(rng.integers(0, 400))).astype(np.uint8)
    value = np.uint8(rng.integers(0, 4))
    start = int(rng.integers(0, x.size + 1))
    stop = int(rng.integers(start, x.size + 1))
    got = run(x, start, stop, value)
    assert got == codes_path._count_equal_numpy(x, start, stop, value) == int((x[start:stop] == value).sum())


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_tile_signs_twin(seed):
    from simulator.kernels import im2col, microkernel
    rng = np.random.default_rng(seed)
    lanes = im2col.LANES[np.dtype(np.uint64)]
    nvec = int(rng.choice([v for v in (1, 2, 4) if v <= im2col.MAX_NVEC]))
    run = _sign_tile_runner(nvec)
    width = nvec * lanes
    steps, npix, nco = int(rng.integers(1, 12)), int(rng.integers(1, im2col.TILE_P + 1)), int(rng.integers(1, width + 1))
    x = rng.integers(0, 2**63, 64, dtype=np.uint64) * np.uint64(2) + rng.integers(0, 2, 64, dtype=np.uint64)
    w = rng.integers(0, 2**63, steps * width, dtype=np.uint64) * np.uint64(2)
    offs = rng.integers(0, 40, steps).astype(np.int64)
    above = rng.integers(0, 64 * steps, 3 * width).astype(np.int64)
    bases = tuple(int(b) for b in rng.integers(0, 2 * width + 1, im2col.TILE_P))
    pixel_stride = -(-width // 8) + int(rng.integers(0, 3))
    want, got = np.full(8 * pixel_stride, 0xA5, np.uint8), np.full(8 * pixel_stride, 0xA5, np.uint8)
    args = (x, 1, 5, offs, 0, steps, w, 0)
    run(*args, got, 2, pixel_stride, npix, nco, above, bases)
    im2col._tile_signs_numpy(*args, want, 2, pixel_stride, npix, nco, above, bases, nvec)
    np.testing.assert_array_equal(got, want)


_SIGN_TILE_RUNNERS: dict = {}


def _sign_tile_runner(nvec: int):
    """A jitted call of microkernel.tile_signs with nvec a compile-time constant (as in im2col's tile loops)."""
    if nvec not in _SIGN_TILE_RUNNERS:
        from simulator.kernels import microkernel

        def run(x, x_base, x_step, offs, r0, r1, w, w_base, out, out_base, stride, npix, nco, above, bases):
            microkernel.tile_signs(x, x_base, x_step, offs, r0, r1, w, w_base, out, out_base, stride, npix, nco,
                                   above, bases, nvec)
        _SIGN_TILE_RUNNERS[nvec] = _jitted(run)
    return _SIGN_TILE_RUNNERS[nvec]


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), pad_mode=st.sampled_from(popcount.PAD_MODES))
def test_fill_packed_canvas_twin(seed, pad_mode):
    """The XNOR canvas from packed bits (popcount.XnorConv.packed): word copies where the pixels are whole words,
    byte loops otherwise, spare bits of the last byte cleared, padding pixels of either sign."""
    rng = np.random.default_rng(seed)
    groups = int(rng.integers(1, 4))
    cig = int(rng.choice([8, 16, 64, 128])) if groups > 1 else int(rng.choice([1, 5, 8, 13, 64, 70, 128]))
    n, h, w = int(rng.integers(1, 3)), int(rng.integers(1, 6)), int(rng.integers(1, 7))
    top, left = int(rng.integers(0, 3)), int(rng.integers(0, 3))
    nw = -(-cig // 64)
    x = rng.integers(0, 256, (n, h, w, -(-groups * cig // 8))).astype(np.uint8)   # junk in the spare bits too
    dims = (n, h + top + int(rng.integers(0, 3)), w + left + int(rng.integers(0, 3)), groups, nw)
    pad = popcount.pack_bits(np.ones(cig, np.uint8), axis=0) if pad_mode == "-1" else np.zeros(nw, np.uint64)
    pad_pixel = np.ascontiguousarray(np.broadcast_to(pad, (groups, nw)))
    x_words = x.shape[3] == 8 * groups * nw and cig % 8 == 0
    t0, t1 = _range(rng, n * dims[1])
    _assert_twin(popcount._fill_packed_canvas, popcount._fill_packed_canvas_numpy, np.full(dims, 7, np.uint64),
                 lambda out: (t0, t1, x, out, top, left, pad_pixel, -(-cig // 8), (1 << (cig % 8 or 8)) - 1, x_words))
