"""Binary tensors kept as packed bits between XNOR layers (engine.packed_binary_tensors, popcount.PackedBits).

The format against Python integers; the packed kernels (sign bits, conv, dense) against the uint8 ones and the
small references; and whole XNOR networks, packed against unpacked (outputs, every tensor, every count) and
against the float reference (validate.compare), with channel counts that leave spare bits, groups, every pad
mode, strides, a max pool in between (a layer that reads codes) and a flatten into XNOR dense layers."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from simulator.encodings import BinaryAct, BinaryW, UniformAct, UniformW
from simulator.engine import Engine, packed_binary_tensors
from simulator.graph import Layer, Model
from simulator.kernels import popcount as pc
from simulator.validate import compare


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), c=st.integers(1, 70), dense=st.booleans())
def test_pack_channels_is_eight_channels_a_byte_lsb_first(seed, c, dense):
    rng = np.random.default_rng(seed)
    n, h, w = int(rng.integers(1, 3)), int(rng.integers(1, 4)), int(rng.integers(1, 4))
    codes = rng.integers(0, 2, (n, c) if dense else (n, c, h, w)).astype(np.uint8)
    packed = pc.pack_channels(codes)
    pixels = codes[:, :, None, None] if dense else codes
    nb = -(-c // 8)
    assert packed.shape == ((n, nb) if dense else (n, h, w, nb))
    for ni in range(n):
        for i in range(pixels.shape[2]):
            for j in range(pixels.shape[3]):
                value = sum(int(pixels[ni, ch, i, j]) << ch for ch in range(c))   # a Python integer
                got = packed[ni] if dense else packed[ni, i, j]
                assert int.from_bytes(bytes(got.astype(np.uint8)), "little") == value
    assert np.array_equal(pc.unpack_channels(packed, c), codes)
    bits = pc.PackedBits(packed, (c, 1, 1) if dense else (c, h, w), codes.shape)
    assert bits.size == codes.size and np.array_equal(bits.codes(), codes)


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), c=st.integers(1, 20), wide=st.booleans(), dense=st.booleans())
def test_signs_packed_equals_packing_the_signs(seed, c, wide, dense):
    rng = np.random.default_rng(seed)
    dtype = np.int64 if wide else np.int32
    info = np.iinfo(dtype)
    shape = (int(rng.integers(1, 4)), c) + (() if dense else (int(rng.integers(1, 5)), int(rng.integers(1, 5))))
    acc = rng.integers(-40, 41, shape).astype(dtype)
    acc.reshape(-1)[: acc.size // 3] = rng.choice([info.min, info.max, 0, -1], acc.size // 3)
    bias = rng.choice([0, 1, -1, 5, -(2**40), 2**40, int(info.max), int(info.min)], c) if rng.integers(2) else None
    want = pc.pack_channels(pc.signs(acc, bias))
    got = pc.signs_packed(acc, bias)
    assert got.dtype == np.uint8 and np.array_equal(got, want)


@settings(max_examples=80, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), cig=st.sampled_from([1, 3, 8, 9, 16, 63, 64, 65, 130]),
       groups=st.integers(1, 3), pad_mode=st.sampled_from(pc.PAD_MODES), junk=st.booleans())
def test_xnor_conv2d_packed_equals_the_reference(seed, cig, groups, pad_mode, junk):
    rng = np.random.default_rng(seed)
    if cig % 8:
        groups = 1   # groups of whole bytes only
    kh, kw = int(rng.integers(1, 4)), int(rng.integers(1, 4))
    pad = tuple(int(v) for v in rng.integers(0, 3, 4))
    h, w = int(rng.integers(max(1, kh - pad[0] - pad[2]), 7)), int(rng.integers(max(1, kw - pad[1] - pad[3]), 7))
    stride = (int(rng.integers(1, 3)), int(rng.integers(1, 3)))
    x = (rng.random((int(rng.integers(1, 3)), groups * cig, h, w)) < rng.random()).astype(np.uint8)
    wt = rng.integers(0, 2, (groups * int(rng.integers(1, 5)), cig, kh, kw)).astype(np.uint8)
    packed = pc.pack_channels(x)
    if junk and (groups * cig) % 8:   # whatever a producer leaves in the spare bits of the last byte
        packed[..., -1] |= np.uint8(0xFF << ((groups * cig) % 8) & 0xFF)
    got = pc.xnor_conv2d_packed(packed, groups * cig, wt, stride, pad, groups, pad_mode)
    want = pc.xnor_conv2d_reference(x, wt, stride, pad, groups, pad_mode)
    assert got.dtype == np.int32 and np.array_equal(got, want)


def _signs_bias(rng, co: int, k: int):
    """A bias per channel: mostly within the sums' reach, where a sign flips (sums + bias = 0 is not negative),
    some beyond any sum, and int64's extremes (-bias of -2^63 wraps in int64)."""
    if rng.integers(8) == 0:
        return None
    bias = rng.integers(-k - 2, k + 3, co)
    far = rng.random(co) < 0.3
    bias[far] = rng.choice([-(2**63), 2**63 - 1, -(2**40), 2**40, -(2**33), 2**31, -(2**31) - 1], far.sum())
    return bias


@settings(max_examples=120, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), cig=st.sampled_from([1, 3, 8, 9, 16, 63, 64, 65, 130]),
       groups=st.integers(1, 3), pad_mode=st.sampled_from(pc.PAD_MODES), junk=st.booleans(),
       co=st.sampled_from([1, 3, 7, 8, 9, 16, 17, 24, 33, 40, 70]))
def test_xnor_conv2d_packed_signs_are_the_reference_sums_signs(seed, cig, groups, pad_mode, junk, co):
    """Sign bits straight from the micro-kernel (im2col.run_sign_tiles) against the signs of the reference
    sums, packed by Python integers: channel counts that leave a partial block and spare bits, groups, every
    pad mode (zero padding's per-column limits), strides, biases at the flip and beyond any sum. Groups whose
    channels do not fill whole bytes take the sums and signs_packed instead: the same bits."""
    rng = np.random.default_rng(seed)
    if cig % 8:
        groups = 1   # groups of whole bytes of input channels only
    kh, kw = int(rng.integers(1, 4)), int(rng.integers(1, 4))
    pad = tuple(int(v) for v in rng.integers(0, 3, 4))
    h, w = int(rng.integers(max(1, kh - pad[0] - pad[2]), 8)), int(rng.integers(max(1, kw - pad[1] - pad[3]), 11))
    stride = (int(rng.integers(1, 3)), int(rng.integers(1, 3)))
    x = (rng.random((int(rng.integers(1, 3)), groups * cig, h, w)) < rng.random()).astype(np.uint8)
    wt = rng.integers(0, 2, (groups * co, cig, kh, kw)).astype(np.uint8)
    bias = _signs_bias(rng, groups * co, cig * kh * kw)
    packed = pc.pack_channels(x)
    if junk and (groups * cig) % 8:
        packed[..., -1] |= np.uint8(0xFF << ((groups * cig) % 8) & 0xFF)
    got = pc.xnor_conv2d_packed_signs(packed, groups * cig, wt, stride, pad, groups, pad_mode, bias)
    sums = pc.xnor_conv2d_reference(x, wt, stride, pad, groups, pad_mode)
    n, _, ho, wo = sums.shape
    assert got.shape == (n, ho, wo, -(-groups * co // 8)) and got.dtype == np.uint8
    for ni in range(n):
        for i in range(ho):
            for j in range(wo):
                value = sum(1 << c for c in range(groups * co)
                            if int(sums[ni, c, i, j]) + (0 if bias is None else int(bias[c])) < 0)
                assert int.from_bytes(bytes(got[ni, i, j]), "little") == value


def test_xnor_conv2d_packed_signs_with_the_widest_tiles():
    """A call large enough for the widest tiles (im2col.WIDE_TILE_MACS: four vectors of channels), zero padding
    and a partial last block: the fused bits equal signs_packed of the sums kernel's output."""
    rng = np.random.default_rng(7)
    x = rng.integers(0, 2, (4, 96, 20, 21)).astype(np.uint8)
    wt = rng.integers(0, 2, (72, 96, 3, 3)).astype(np.uint8)
    bias = _signs_bias(rng, 72, 96 * 9)
    args = (pc.pack_channels(x), 96, wt, (1, 1), (1, 1, 1, 1), 1, "zero")
    assert 4 * 72 * 20 * 21 * 96 * 9 >= pc.im2col.WIDE_TILE_MACS
    assert np.array_equal(pc.xnor_conv2d_packed_signs(*args, bias), pc.signs_packed(pc.xnor_conv2d_packed(*args), bias))


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), k=st.integers(1, 200), co=st.integers(1, 40))
def test_xnor_dense_packed_signs(seed, k, co):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 9))
    x = rng.integers(0, 2, (n, k)).astype(np.uint8)
    wt = rng.integers(0, 2, (co, k)).astype(np.uint8)
    bias = _signs_bias(rng, co, k)
    w_bits = np.zeros((co, -(-k // 8) * 8), np.uint8)
    w_bits[:, :k] = wt
    got = pc.xnor_dense_packed_signs(pc.pack_channels(x), w_bits, k, bias)
    sums = pc.xnor_dense_reference(x, wt)
    negative = np.array([[int(sums[i, c]) + (0 if bias is None else int(bias[c])) < 0 for c in range(co)]
                         for i in range(n)], np.uint8)   # Python integers: no wrap
    assert np.array_equal(got, pc.pack_channels(negative))


def test_xnor_conv2d_packed_refuses_groups_that_split_a_byte():
    x = pc.pack_channels(np.zeros((1, 12, 3, 3), np.uint8))
    with pytest.raises(ValueError, match="groups"):
        pc.xnor_conv2d_packed(x, 12, np.zeros((4, 6, 1, 1), np.uint8), (1, 1), (0, 0, 0, 0), 2, "+1")


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), c=st.integers(1, 20), hw=st.integers(1, 3))
def test_xnor_dense_packed_on_a_flattened_packed_image(seed, c, hw):
    """A flatten of packed bits keeps their bytes (pixel after pixel); the dense weights put in that order
    (here by Python indexing, one bit at a time) give the dense layer of the NCHW flatten."""
    rng = np.random.default_rng(seed)
    n, co = int(rng.integers(1, 5)), int(rng.integers(1, 6))
    x = rng.integers(0, 2, (n, c, hw, hw)).astype(np.uint8)
    wt = rng.integers(0, 2, (co, c * hw * hw)).astype(np.uint8)
    nb = -(-c // 8)
    w_bits = np.zeros((co, hw * hw * nb * 8), np.uint8)
    for ch in range(c):
        for i in range(hw):
            for j in range(hw):
                w_bits[:, (i * hw + j) * nb * 8 + ch] = wt[:, (ch * hw + i) * hw + j]
    got = pc.xnor_dense_packed(pc.pack_channels(x).reshape(n, -1), w_bits, c * hw * hw)
    assert np.array_equal(got, pc.xnor_dense_reference(x.reshape(n, -1), wt))


# ------------------------------------------------------------------------------------------------------------
# Whole networks
# ------------------------------------------------------------------------------------------------------------
def xnor_network(seed: int) -> Model:
    """8-bit input -> conv to binary -> XNOR convs (maybe a max pool, maybe groups) -> flatten -> XNOR dense
    to binary -> XNOR dense to 8 bits."""
    rng = np.random.default_rng(seed)
    c_in, size = int(rng.integers(1, 4)), int(rng.integers(4, 8))
    size0 = size
    c1 = int(rng.choice([3, 8, 12, 16, 65]))
    u8 = UniformAct(8, False, 1 / 64, 0)
    binary = BinaryAct(1.0)
    layers = [Layer("c1", "conv2d", ["input"], {"padding": [1, 1, 1, 1], "requant": "float64"}, binary,
                    rng.integers(-127, 128, (c1, c_in, 3, 3)), UniformW(8, True, (1 / 128,), (0,)),
                    bias=rng.integers(-300, 300, c1))]
    name, c = "c1", c1
    for i in range(int(rng.integers(1, 4))):
        if rng.integers(3) == 0 and size >= 4:
            layers.append(Layer(f"p{i}", "maxpool", [name], {"kernel": [2, 2], "stride": [2, 2]}))
            name, size = f"p{i}", size // 2
            continue
        groups = 2 if c % 16 == 0 and rng.integers(2) else 1
        co = int(rng.choice([5, 8, 16, 24]))
        co = co * groups
        k = int(rng.choice([1, 3])) if size >= 3 else 1
        stride = int(rng.integers(1, 3)) if size > 3 else 1
        pad = [int(rng.integers(0, k))] * 4
        attrs = {"padding": pad, "stride": [stride, stride], "groups": groups,
                 "binary_pad": str(rng.choice(pc.PAD_MODES)), "requant": "float64"}
        layers.append(Layer(f"x{i}", "conv2d", [name], attrs, binary, rng.integers(0, 2, (co, c // groups, k, k)),
                            BinaryW((1.0,)), bias=rng.integers(-4, 5, co) if rng.integers(2) else None))
        name, c, size = f"x{i}", co, (size + 2 * pad[0] - k) // stride + 1
    layers.append(Layer("flat", "flatten", [name]))
    k = c * size * size
    hidden = int(rng.integers(1, 20))
    layers.append(Layer("d1", "dense", ["flat"], {"requant": "float64"}, binary, rng.integers(0, 2, (hidden, k)),
                        BinaryW((1.0,)), bias=rng.integers(-3, 4, hidden)))
    layers.append(Layer("d2", "dense", ["d1"], {"requant": "float64"}, UniformAct(8, True, 0.25, 0),
                        rng.integers(0, 2, (10, hidden)), BinaryW((1.0,))))
    return Model("xnor", (c_in, size0, size0), u8, layers).check()


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_packed_network_equals_unpacked_and_the_reference(seed):
    model = xnor_network(seed)
    codes = np.random.default_rng(seed).integers(0, 256, (3,) + tuple(model.input_shape))
    packed = Engine(model)
    layout = packed_binary_tensors(model)
    assert "d2" not in layout   # the model's output stays codes
    assert ("c1" in layout) == (model.layers[1].op == "conv2d")   # an XNOR conv reads it, or a max pool
    assert "d1" in layout and "flat" in layout   # XNOR dense layers read them
    plain = Engine(model)
    plain._packed = {}
    a, b = packed.run(codes, keep_all=True), plain.run(codes, keep_all=True)
    assert np.array_equal(a.output, b.output)
    assert a.tensors.keys() == b.tensors.keys()
    for name in a.tensors:
        assert np.array_equal(a.tensors[name], b.tensors[name]), name
    assert a.trace.layers == b.trace.layers   # every count, the traffic in bits included
    assert compare(packed, codes).passed


def test_which_tensors_are_packed():
    """A tensor a code-reading layer also reads stays codes; the model's output stays codes; a max pool's
    binary output that only XNOR layers read is packed after the pool."""
    binary, w1 = BinaryAct(1.0), BinaryW((1.0,))
    u8 = UniformAct(8, False, 1 / 64, 0)
    ones = np.ones((8, 8, 3, 3), np.int64)
    layers = [Layer("c1", "conv2d", ["input"], {"padding": [1, 1, 1, 1], "requant": "float64"}, binary,
                    np.ones((8, 1, 3, 3), np.int64), UniformW(8, True, (1 / 128,), (0,))),
              Layer("x1", "conv2d", ["c1"], {"padding": [1, 1, 1, 1], "binary_pad": "+1"}, binary, ones, w1),
              Layer("p1", "maxpool", ["c1"], {"kernel": [2, 2], "stride": [2, 2]}),   # c1: read as codes too
              Layer("x2", "conv2d", ["p1"], {"padding": [1, 1, 1, 1], "binary_pad": "+1"}, binary, ones, w1),
              Layer("x3", "conv2d", ["x2"], {"padding": [1, 1, 1, 1], "binary_pad": "+1"}, binary, ones, w1)]
    model = Model("m", (1, 8, 8), u8, layers).check()
    assert packed_binary_tensors(model) == {"p1": (8, 4, 4), "x2": (8, 4, 4)}
    codes = np.random.default_rng(0).integers(0, 256, (4, 1, 8, 8))
    out = Engine(model).run(codes)
    assert out.output.shape == (4, 8, 4, 4) and set(np.unique(out.output)) <= {0, 1}
    assert compare(Engine(model), codes).passed


def test_packed_tensors_take_an_eighth_of_the_memory():
    model = xnor_network(3)
    engine = Engine(model)
    codes = np.random.default_rng(0).integers(0, 256, (4,) + tuple(model.input_shape))
    seen = {}
    run_layer = engine.run_layer

    def spy(lay, inputs, counts, packed=False):
        out = run_layer(lay, inputs, counts, packed)
        seen[lay.name] = out
        return out

    engine.run_layer = spy
    engine.run(codes)
    for name, (c, h, w) in packed_binary_tensors(model).items():
        tensor = seen[name]
        assert isinstance(tensor, pc.PackedBits)
        assert tensor.bits.dtype == np.uint8 and tensor.bits.nbytes == tensor.shape[0] * h * w * -(-c // 8)
