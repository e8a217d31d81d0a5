"""Every encoding's decoder and encoder against plain Python integer arithmetic, at the edges of its range."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from simulator.encodings import (BinaryAct, BinaryW, CodebookW, EnqAct, KnqAct, Pow2W, TernaryW, UniformAct,
                                 UniformW)
from simulator.engine import decode_weights
from simulator.graph import Layer


@settings(max_examples=200, deadline=None)
@given(bits=st.integers(1, 16), signed=st.booleans(), data=st.data())
def test_uniform_activation(bits, signed, data):
    lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
    zp = data.draw(st.integers(lo, hi))
    enc = UniformAct(bits, signed, 0.5, zp)
    codes = data.draw(st.lists(st.sampled_from([lo, hi, zp]) | st.integers(lo, hi), min_size=1, max_size=20))
    values = data.draw(st.lists(st.integers(-(1 << 40), 1 << 40) | st.sampled_from([lo - zp, hi - zp]),
                                min_size=1, max_size=20))
    assert enc.decode(np.array(codes)).tolist() == [c - zp for c in codes]
    assert enc.encode(np.array(values)).tolist() == [min(max(v + zp, lo), hi) for v in values]
    assert enc.value_range() == (lo - zp, hi - zp)


@settings(max_examples=200, deadline=None)
@given(qm=st.integers(1, 24), data=st.data())
def test_enq_is_seed_004(qm, data):
    e = data.draw(st.integers(1, qm))
    enc = EnqAct(e, qm, 3)
    top = (1 << qm) - 1
    xs = data.draw(st.lists(st.integers(-5, 1 << 26) | st.sampled_from([0, top, top + 1]), min_size=1, max_size=20))
    # seed 004: x -> floor(x / 2^(qm - E)) if x <= 2^qm - 1, else 2^E - 1 (negative inputs: 0, as after a ReLU)
    expected = [0 if x < 0 else (x // 2 ** (qm - e) if x <= top else 2 ** e - 1) for x in xs]
    assert enc.encode(np.array(xs)).tolist() == expected
    codes = list(range(min(1 << e, 50)))
    assert enc.decode(np.array(codes)).tolist() == [k * 2 ** (qm - e) for k in codes]


@settings(max_examples=200, deadline=None)
@given(t=st.integers(1, 5), data=st.data())
def test_knq_is_seed_004(t, data):
    cents = sorted(data.draw(st.lists(st.integers(-1000, 5000), min_size=1 << t, max_size=1 << t)))
    enc = KnqAct(t, tuple(cents))
    xs = data.draw(st.lists(st.integers(-2000, 6000) | st.sampled_from(cents), min_size=1, max_size=30))
    # seed 004: x -> k if d_k <= x < d_{k+1}; x >= d_last -> last; below d_1 -> 0 (the largest such k)
    expected = [max([k for k in range(1, 1 << t) if cents[k] <= x], default=0) for x in xs]
    assert enc.encode(np.array(xs)).tolist() == expected
    assert enc.decode(np.arange(1 << t)).tolist() == cents


def test_binary_convention():
    enc = BinaryAct()
    assert enc.encode(np.array([-3, -1, 0, 1, 7])).tolist() == [1, 1, 0, 0, 0]  # sign(0) = +1
    assert enc.decode(np.array([0, 1])).tolist() == [1, -1]


@settings(max_examples=100, deadline=None)
@given(data=st.data())
def test_weight_decoders(data):
    co = data.draw(st.integers(1, 6))
    bits = data.draw(st.integers(2, 5))
    p2 = Pow2W(bits)
    codes = np.array(data.draw(st.lists(st.integers(-(1 << (bits - 1)), (1 << (bits - 1)) - 1), min_size=co * 3,
                                        max_size=co * 3))).reshape(co, 3)
    expected = [[0 if c == 0 else (1 if c > 0 else -1) * 2 ** (abs(c) - 1) for c in row] for row in codes.tolist()]
    assert p2.decode(codes).tolist() == expected
    zps = tuple(data.draw(st.lists(st.integers(-8, 7), min_size=co, max_size=co)))
    uw = UniformW(4, True, (1.0,) * co, zps)
    wc = np.array(data.draw(st.lists(st.integers(-8, 7), min_size=co * 2, max_size=co * 2))).reshape(co, 2)
    assert uw.decode(wc).tolist() == [[c - zps[i] for c in row] for i, row in enumerate(wc.tolist())]
    assert TernaryW().decode(np.array([-1, 0, 1])).tolist() == [-1, 0, 1]
    assert BinaryW().decode(np.array([0, 1])).tolist() == [1, -1]
    # codebook: value = table[group(c)][index], groups of `group_size` output channels
    group_size = data.draw(st.integers(0, co))
    enc = CodebookW(3, 8, group_size)
    groups = enc.n_groups(co)
    table = np.array(data.draw(st.lists(st.integers(-128, 127), min_size=groups * 8, max_size=groups * 8)))
    table = table.reshape(groups, 8)
    idx = np.array(data.draw(st.lists(st.integers(0, 7), min_size=co * 4, max_size=co * 4))).reshape(co, 4)
    lay = Layer("fc", "dense", ["input"], {}, UniformAct(8), idx, enc, table)
    expected = [[int(table[(c // group_size) if group_size else 0][i]) for i in row] for c, row in enumerate(idx.tolist())]
    assert decode_weights(lay).tolist() == expected
