"""Zero-operand MAC counts (units/zero_gating.py) against a reference that visits every MAC."""

import numpy as np
from hypothesis import given, settings, strategies as st

from simulator.engine import Engine
from simulator.qnn.model_io import load_model
from simulator.units.zero_gating import zero_operand_macs


def every_mac(x, w, stride, padding, groups, pad_value):
    """Walk every (output, tap) pair: count zero activations and zero activation-or-weight operands."""
    n, c_total, h, wd = x.shape
    k_total, c, r, s = w.shape
    pt, pl, pb, pr = padding
    padded = np.full((n, c_total, h + pt + pb, wd + pl + pr), pad_value, np.int64)
    padded[:, :, pt:pt + h, pl:pl + wd] = x
    p = (h + pt + pb - r) // stride[0] + 1
    q = (wd + pl + pr - s) // stride[1] + 1
    k = k_total // groups
    zero_a = zero_any = 0
    for b in range(n):
        for ko in range(k_total):
            g = ko // k
            for i in range(p):
                for j in range(q):
                    for ci in range(c):
                        for ri in range(r):
                            for si in range(s):
                                a = padded[b, g * c + ci, i * stride[0] + ri, j * stride[1] + si]
                                zero_a += a == 0
                                zero_any += a == 0 or w[ko, ci, ri, si] == 0
    return int(zero_a), int(zero_any)


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_conv_counts_match_every_mac(data):
    groups = data.draw(st.sampled_from([1, 2]))
    c = data.draw(st.integers(1, 3))
    k = data.draw(st.integers(1, 3)) * groups
    r, s = data.draw(st.integers(1, 3)), data.draw(st.integers(1, 3))
    padding = tuple(data.draw(st.integers(0, 2)) for _ in range(4))
    stride = (data.draw(st.integers(1, 2)), data.draw(st.integers(1, 2)))
    h = data.draw(st.integers(max(1, r - padding[0] - padding[2]), 6))
    w = data.draw(st.integers(max(1, s - padding[1] - padding[3]), 6))
    seed = data.draw(st.integers(0, 2**31))
    rng = np.random.default_rng(seed)
    x = rng.integers(-1, 2, size=(2, c * groups, h, w))        # about a third zeros
    wt = rng.integers(-1, 2, size=(k, c, r, s))
    pad_value = data.draw(st.sampled_from([0, 3]))
    assert zero_operand_macs(x, wt, stride, padding, groups, pad_value) == every_mac(x, wt, stride, padding, groups,
                                                                                      pad_value)


def test_dense_counts_match_every_mac():
    rng = np.random.default_rng(1)
    x = rng.integers(0, 2, size=(3, 7))
    w = rng.integers(-1, 2, size=(5, 7))
    ref = every_mac(x[:, :, None, None], w[:, :, None, None], (1, 1), (0, 0, 0, 0), 1, 0)
    assert zero_operand_macs(x, w) == ref


def test_hand_count():
    # x = [0, 5], w = [[0, 1], [2, 3]]: MACs (x, w): (0,0) (5,1) (0,2) (5,3): zero act 2, zero any 2.
    x = np.array([[0, 5]])
    w = np.array([[0, 1], [2, 3]])
    assert zero_operand_macs(x, w) == (2, 2)
    w = np.array([[1, 0], [2, 3]])   # (0,1) (5,0) (0,2) (5,3): zero act 2, any 3
    assert zero_operand_macs(x, w) == (2, 3)


def test_engine_trace_counts_relu_zeros():
    """The u8 model's conv2 reads post-ReLU activations: many zero operands, never more than its MACs."""
    model = load_model("models/lenet_digits_u8.qnn")
    engine = Engine(model)
    trace = engine.run(model.sample_input).trace
    macs = [(lc.total_macs(), lc.zero_act_macs, lc.zero_any_macs) for lc in trace.layers if lc.total_macs()]
    assert all(0 <= za <= zany <= m for m, za, zany in macs)
    assert any(za > 0 for _, za, _ in macs[1:])
