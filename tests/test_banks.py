"""SRAM bank-conflict cycles (simulator.hw.banks): hand-checked cases, analytical == brute force, properties."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from simulator.hw.banks import (DATAFLOWS, TENSORS, BankSpec, ConvGeometry, conflict_cycles,
                                conflict_cycles_bruteforce, geometry)
from simulator.hw.workload import Workload


def both(geom, dataflow, rows, cols, tensor, elem_bits, bank):
    """Both implementations' results. They must agree. Returns that one number."""
    fast = conflict_cycles(geom, dataflow, rows, cols, tensor, elem_bits, bank)
    slow = conflict_cycles_bruteforce(geom, dataflow, rows, cols, tensor, elem_bits, bank)
    assert fast == slow
    return fast


def dense(n=1, c=1, k=1):
    return ConvGeometry(n=n, g=1, k=k, c=c, p=1, q=1, r=1, s=1, h=1, w=1)


# ---------------------------------------------------------------- hand-computed cases

@pytest.mark.parametrize("word_bits, expected", [(8, 3), (16, 3), (32, 1)])
def test_os_weights_one_pixel_four_filters(word_bits, expected):
    # Dense 2 -> 4 (T = 2), OS on a 1x4 array, 8-bit weights, 1 bank, 1 port. Lane j = filter j reads
    # weight (j, tau = t - j) at address j*2 + tau = t + j:
    #   t=0: {0}   t=1: {1, 2}   t=2: {3, 4}   t=3: {5, 6}   t=4: {7}
    # 1 element per word: every address is its own line -> 0+1+1+1+0 = 3 stalls.
    # 2 per word: lines {0} {0,1} {1,2} {2,3} {3} -> still 3.
    # 4 per word: lines {0} {0} {0,1} {1} {1}     -> 1.
    bank = BankSpec(banks=1, ports_per_bank=1, word_bits=word_bits)
    assert both(dense(c=2, k=4), "os", 1, 4, "weights", 8, bank) == expected


def test_os_inputs_single_pixel_never_conflicts():
    # The same layer's input stream has one pixel lane, so it makes one request per cycle and never stalls.
    bank = BankSpec(banks=1, ports_per_bank=1, word_bits=8)
    assert both(dense(c=2, k=4), "os", 1, 4, "inputs", 8, bank) == 0


@pytest.mark.parametrize("banks, ports, expected", [(1, 1, 6), (2, 1, 6), (3, 1, 0), (2, 2, 2)])
def test_os_weights_bank_mapping(banks, ports, expected):
    # Dense 3 -> 4 (T = 3), OS on a 1x4 array, 1 element per word. Lane j reads address j*3 + (t - j) = t + 2j:
    #   t=0: {0}  t=1: {1,3}  t=2: {2,4,6}  t=3: {5,7,9}  t=4: {8,10}  t=5: {11}
    # 1 bank: 0+1+2+2+1+0 = 6.
    # 2 banks: each cycle's addresses share a parity, so all land in one bank: again 6.
    # 3 banks: t + 2j covers distinct residues mod 3 for up to 3 lanes, so there is no conflict: 0.
    # 2 banks with 2 ports: ceil(3/2)-1 = 1 at t=2 and t=3, and 0 elsewhere: 2.
    bank = BankSpec(banks=banks, ports_per_bank=ports, word_bits=8)
    assert both(dense(c=3, k=4), "os", 1, 4, "weights", 8, bank) == expected


def test_os_input_stream_is_repeated_per_column_fold():
    # Dense 2 -> 8 with N = 2 (M = 2 pixels), OS on a 2x4 array, 1 bank, 1 port, 1 element per word.
    # Lane i = image i reads input (i, c = t - i) at address 2i + c = t + i: t=0: {0}, t=1: {1, 2}, t=2: {3}.
    # That is 1 stall per pass. K = 8 needs 2 column folds, so the stream runs twice: 2.
    bank = BankSpec(banks=1, ports_per_bank=1, word_bits=8)
    assert both(dense(n=2, c=2, k=8), "os", 2, 4, "inputs", 8, bank) == 2


@pytest.mark.parametrize("word_bits, ports, expected", [(8, 1, 4), (16, 1, 2), (8, 2, 1)])
def test_is_input_preload_skips_padding(word_bits, ports, expected):
    # Input 1x3 (one channel), filter 1x3, left/right padding 1 -> 1x3 output. IS on a 3x3 array: one fold.
    # Preload row u holds tap s = u. Lane j = output column q = j reads input w = q + s - 1 (address w).
    # w = -1 or 3 is padding and is not requested:
    #   u=0: w {-1, 0, 1} -> {0, 1}   u=1: {0, 1, 2}   u=2: {1, 2, 3} -> {1, 2}
    # 1 bank, 1 element per word: 1 + 2 + 1 = 4.  2 per word: lines {0} {0,1} {0,1} -> 0+1+1 = 2.
    # 2 ports: ceil(2/2)-1 + ceil(3/2)-1 + ceil(2/2)-1 = 1.
    geom = ConvGeometry(n=1, g=1, k=1, c=1, p=1, q=3, r=1, s=3, h=1, w=3, pl=1)
    bank = BankSpec(banks=1, ports_per_bank=ports, word_bits=word_bits)
    assert both(geom, "is", 3, 3, "inputs", 8, bank) == expected


def test_all_padding_but_one_tap():
    # A 1x1 input under a 3x3 filter with padding 1: only the centre tap reads real data. The WS input stream
    # then makes one request in total, so it never stalls.
    geom = ConvGeometry(n=1, g=1, k=1, c=1, p=1, q=1, r=3, s=3, h=1, w=1, pt=1, pl=1)
    bank = BankSpec(banks=1, ports_per_bank=1, word_bits=8)
    assert both(geom, "ws", 9, 1, "inputs", 8, bank) == 0


# ---------------------------------------------------------------- analytical == brute force

@st.composite
def layers(draw):
    n, g = draw(st.integers(1, 2)), draw(st.integers(1, 2))
    k, c = draw(st.integers(1, 6)), draw(st.integers(1, 6))
    h, w = draw(st.integers(1, 9)), draw(st.integers(1, 9))
    r, s = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    sh, sw = draw(st.integers(1, 2)), draw(st.integers(1, 2))
    pt, pb, pl, pr = (draw(st.integers(0, 2)) for _ in range(4))
    p = (h + pt + pb - r) // sh + 1
    q = (w + pl + pr - s) // sw + 1
    if p < 1 or q < 1:       # the filter does not fit even with padding: shrink it to the padded input
        r, s = min(r, h + pt + pb), min(s, w + pl + pr)
        p, q = (h + pt + pb - r) // sh + 1, (w + pl + pr - s) // sw + 1
    # A padded layout (a skewed pitch between pixels / filters) half of the time.
    c_pitch = draw(st.sampled_from([0, 0, g * c + 1, g * c + 3]))
    t_pitch = draw(st.sampled_from([0, 0, c * r * s + 1, c * r * s + 8]))
    return ConvGeometry(n=n, g=g, k=k, c=c, p=p, q=q, r=r, s=s, h=h, w=w, sh=sh, sw=sw, pt=pt, pl=pl,
                        c_pitch=c_pitch, t_pitch=t_pitch)


def test_padded_pitch_breaks_a_power_of_two_stride():
    """16 filters of T = 64 8-bit weights, os on a 1x16 array, 16 banks of 64-bit words: unpadded, lane j reads
    line 8j + (t - j)/8 -> banks 8j mod 16: two banks serve 16 lanes. One spare word per filter (pitch 9 words)
    spreads the lanes over the banks, and the conflicts fall."""
    from simulator.hw.banks import padded_pitch

    geom = ConvGeometry(n=1, g=1, k=16, c=64, p=1, q=1, r=1, s=1, h=1, w=1)
    bank = BankSpec(banks=16, ports_per_bank=1, word_bits=64)
    assert padded_pitch(64, 8, 64, 0) == 0 and padded_pitch(64, 8, 64, 1) == 72 and padded_pitch(60, 8, 64, 1) == 72
    plain = conflict_cycles(geom, "os", 1, 16, "weights", 8, bank)
    padded_geom = ConvGeometry(n=1, g=1, k=16, c=64, p=1, q=1, r=1, s=1, h=1, w=1, t_pitch=72)
    padded = conflict_cycles(padded_geom, "os", 1, 16, "weights", 8, bank)
    assert padded == conflict_cycles_bruteforce(padded_geom, "os", 1, 16, "weights", 8, bank)
    assert padded < plain


banks_specs = st.builds(BankSpec, banks=st.integers(1, 8), ports_per_bank=st.integers(1, 2),
                        word_bits=st.sampled_from([8, 16, 32, 64]), interleave_words=st.integers(1, 2))
schedules = st.tuples(st.sampled_from(DATAFLOWS), st.integers(1, 5), st.integers(1, 5), st.sampled_from(TENSORS),
                      st.sampled_from([1, 2, 4, 8, 16]))


@settings(max_examples=400, deadline=None)
@given(layers(), schedules, banks_specs)
def test_analytical_equals_bruteforce(geom, schedule, bank):
    dataflow, rows, cols, tensor, elem_bits = schedule
    assert conflict_cycles(geom, dataflow, rows, cols, tensor, elem_bits, bank) == \
        conflict_cycles_bruteforce(geom, dataflow, rows, cols, tensor, elem_bits, bank)


# Longer streams than hypothesis draws. Runs are longer than the steady period, and many rows and tap folds
# share a class, so the analytical path really multiplies representative cycles out.
MEDIUM = [
    ConvGeometry(n=2, g=2, k=12, c=20, p=12, q=10, r=3, s=3, h=12, w=10, pt=1, pl=1),
    ConvGeometry(n=1, g=3, k=5, c=7, p=8, q=13, r=3, s=2, h=16, w=26, sh=2, sw=2, pt=1, pl=0),
    ConvGeometry(n=3, g=1, k=40, c=33, p=1, q=1, r=1, s=1, h=1, w=1),
]


@pytest.mark.parametrize("geom", MEDIUM)
@pytest.mark.parametrize("dataflow", DATAFLOWS)
@pytest.mark.parametrize("tensor", TENSORS)
def test_analytical_equals_bruteforce_medium(geom, dataflow, tensor):
    for rows, cols, elem_bits, bank in [(5, 7, 8, BankSpec(4, 1, 32)), (8, 3, 4, BankSpec(3, 2, 16, 2)),
                                        (16, 16, 8, BankSpec(1, 1, 8))]:
        both(geom, dataflow, rows, cols, tensor, elem_bits, bank)


# ---------------------------------------------------------------- properties

@settings(max_examples=150, deadline=None)
@given(layers(), schedules, banks_specs)
def test_more_ports_never_increase_conflicts(geom, schedule, bank):
    dataflow, rows, cols, tensor, elem_bits = schedule
    counts = [conflict_cycles(geom, dataflow, rows, cols, tensor, elem_bits,
                              BankSpec(bank.banks, ports, bank.word_bits, bank.interleave_words))
              for ports in (1, 2, 3, 5)]
    assert counts == sorted(counts, reverse=True)


@settings(max_examples=100, deadline=None)
@given(layers(), schedules, banks_specs)
def test_enough_ports_means_no_conflicts(geom, schedule, bank):
    # A cycle requests at most one element per lane, and there are at most max(rows, cols) lanes.
    dataflow, rows, cols, tensor, elem_bits = schedule
    bank = BankSpec(bank.banks, max(rows, cols), bank.word_bits, bank.interleave_words)
    assert conflict_cycles(geom, dataflow, rows, cols, tensor, elem_bits, bank) == 0


# ---------------------------------------------------------------- API

def test_geometry_from_workload():
    wl = Workload(name="conv", op="conv2d", path="mac", n=2, g=4, k=8, c=3, p=7, q=6, r=3, s=2, h=14, w=12,
                  stride=(2, 2), pad=(1, 0, 0, 1))
    assert geometry(wl) == ConvGeometry(n=2, g=4, k=8, c=3, p=7, q=6, r=3, s=2, h=14, w=12, sh=2, sw=2, pt=1, pl=0)


@pytest.mark.parametrize("kwargs", [{"dataflow": "rs"}, {"tensor": "outputs"}, {"rows": 0}, {"elem_bits": 0}])
def test_bad_arguments(kwargs):
    args = dict(geom=dense(), dataflow="os", rows=2, cols=2, tensor="inputs", elem_bits=8,
                bank=BankSpec(1, 1, 8)) | kwargs
    with pytest.raises(ValueError):
        conflict_cycles(**args)
    with pytest.raises(ValueError):
        conflict_cycles_bruteforce(**args)


def test_bad_specs():
    with pytest.raises(ValueError):
        BankSpec(banks=0, ports_per_bank=1, word_bits=8)
    with pytest.raises(ValueError):
        ConvGeometry(n=1, g=1, k=1, c=1, p=1, q=1, r=1, s=1, h=1, w=1, pt=-1)
