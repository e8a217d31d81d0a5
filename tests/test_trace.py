"""Event counts: checked against hand-computed figures, and batching must not change them."""

import numpy as np

from model_factory import random_model
from simulator.encodings import BinaryAct, BinaryW, CodebookW, EnqAct, KnqAct, UniformAct, UniformW
from simulator.engine import Engine, run_batched
from simulator.graph import Layer, Model
from simulator.trace import LayerCounts


def test_counts_of_a_small_network_by_hand():
    rng = np.random.default_rng(0)
    n, c, h, w = 3, 2, 6, 6
    knq = KnqAct(2, (0, 10, 20, 40))
    layers = [
        Layer("c1", "conv2d", ["input"], {"padding": [1, 1, 1, 1], "stride": [2, 2]}, EnqAct(3, 8, 2),
              rng.integers(0, 16, (4, 2, 3, 3)), CodebookW(4, 8), rng.integers(-50, 50, (1, 16))),
        Layer("c2", "conv2d", ["c1"], {"groups": 4}, knq, rng.integers(-7, 8, (4, 1, 3, 3)), UniformW(4)),
        Layer("c3", "conv2d", ["c2"], {}, BinaryAct(), rng.integers(-7, 8, (64, 4, 1, 1)), UniformW(4)),
        Layer("c4", "conv2d", ["c3"], {"binary_pad": "zero", "padding": [1, 1, 1, 1]}, UniformAct(8),
              rng.integers(0, 2, (8, 64, 2, 2)), BinaryW((0.5,))),
        Layer("flat", "flatten", ["c4"]),
        Layer("fc", "dense", ["flat"], {}, UniformAct(8, True), rng.integers(-7, 8, (5, 8 * 2 * 2)), UniformW(4),
              None, rng.integers(-9, 9, 5), 12),
    ]
    model = Model("m", (c, h, w), UniformAct(8, False, 1 / 16), layers).check()
    trace = Engine(model).run(rng.integers(0, 256, (n, c, h, w))).trace
    t = {lay.name: lay for lay in trace.layers}
    # c1: 4 x 3 x 3 outputs of a 2x3x3 window, 8-bit inputs times 8-bit codebook values; QE on every output
    assert dict(t["c1"].macs) == {(8, 8): n * 4 * 3 * 3 * 18}
    assert t["c1"].lut_reads == n * 72 and (t["c1"].lut_entries, t["c1"].lut_width_bits) == (16, 8)
    assert t["c1"].qe == n * 36 and t["c1"].requants == n * 36 and t["c1"].ce == 0
    # c2: depthwise 3x3 on ENQ inputs (CE on every input read, q_m = 8 operand bits); QK on every output
    assert dict(t["c2"].macs) == {(8, 4): n * 4 * 1 * 1 * 9}
    assert t["c2"].ce == n * 36 and t["c2"].qk == n * 4 and t["c2"].qk_comparators == 3
    # c3: 1x1 on KNQ inputs (CK per input, centroids up to 40 need 6 bits); binary output: no requantizer
    assert dict(t["c3"].macs) == {(6, 4): n * 64 * 4} and t["c3"].ck == n * 4 and t["c3"].requants == 0
    # c4: XNOR-popcount 2x2 on 64 channels = one 64-bit word per kernel position; 1x1 input padded to 3x3
    assert t["c4"].binary_macs == n * 8 * 4 * 256 and t["c4"].popcount_words == n * 8 * 4 * 4
    assert not t["c4"].macs
    # fc: traffic in bits, weights 4-bit, 12-bit bias
    assert t["fc"].weight_bits == {"fc.weight": n * 5 * 32 * 4, "fc.bias": n * 5 * 12}
    assert t["fc"].input_bits == {"flat": n * 32 * 8} and t["fc"].output_bits == {"fc": n * 5 * 8}
    assert t["flat"].input_bits == {} and trace.dram_input_bits == n * c * h * w * 8


def test_batching_does_not_change_counts():
    for seed in range(20):
        model = random_model(seed)
        codes = np.repeat(model.sample_input, 5, axis=0)
        whole = Engine(model).run(codes).trace
        pieces = run_batched(Engine(model), codes, batch_size=4).trace
        assert pieces.batch == whole.batch == codes.shape[0]
        for a, b in zip(whole.layers, pieces.layers):
            assert a.__dict__ == b.__dict__, (seed, a.name)
        per = whole.per_inference()
        assert all(isinstance(v, int) for lay in per.layers for v in lay.macs.values())


def test_fresh_counts_equal_the_constructor_and_share_nothing():
    """LayerCounts.fresh (the engine's fast constructor) gives what the dataclass constructor gives, for every
    field, and two fresh counts never share a mutable field."""
    a, b = LayerCounts.fresh("conv", "conv2d", 4), LayerCounts.fresh("conv", "conv2d", 4)
    assert a == LayerCounts("conv", "conv2d", batch=4)
    assert vars(a) == vars(LayerCounts("conv", "conv2d", batch=4))
    a.macs[(8, 8)] += 5
    a.weight_bits["w"] = 1
    a.input_bits["x"] = 2
    a.output_bits["y"] = 3
    assert b == LayerCounts("conv", "conv2d", batch=4)
