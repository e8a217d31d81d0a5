"""Energy and cycles of two tiny layers on a tiny design, computed by hand from the table's literature numbers."""

import math

import pytest
import yaml

from simulator.hw.arch import load_hardware
from simulator.hw.cost import ENERGY_CATEGORIES, estimate
from simulator.hw.techtable import shipped_hwconfigs_dir
from simulator.hw.workload import Workload

# 45 nm figures, typed in again here so the test does not read them through the code under test.
C2, C1, CADD = 0.002994791667, 0.001041666667, 0.003125     # QTools fits of Horowitz 2014
MUX2, XNOR2, FA, DFF = 0.00385, 0.004, 0.004, 0.007          # NanGate 45 midpoints
QE, CE, QK_CMP, CK = 0.202294, 0.0810740, 0.0631706, 1.06543
READ, WRITE, DRAM = 2.0, 3.0, 10.0                            # the design's own figures below

DESIGN = """
format: hwsim-arch/1
name: hand
description: "one MAC PE and one XNOR PE under one 8-bit-word buffer"
tech: g45.yaml
architecture:
  clock: {mode: given, mhz: {value: 100, source: t}}
  pe_array:
    interconnect: broadcast
    mac: {rows: {value: 1, source: t}, cols: {value: 1, source: t}, a_bits: {value: 8, source: t},
          w_bits: {value: 8, source: t}, acc_bits: {value: 24, source: t}, register_bits: {value: 10, source: t}}
    xnor: {rows: {value: 1, source: t}, cols: {value: 1, source: t}, word_bits: {value: 64, source: t},
           acc_bits: {value: 16, source: t}, register_bits: {value: 0, source: t}}
  dataflow: os
  memory:
    buf:
      size_bytes: {value: 65536, source: t}
      word_bits: {value: 8, source: t}
      holds: [weights, inputs, outputs]
      macro: explicit
      read_pj_per_access: {value: 2.0, source: t}
      write_pj_per_access: {value: 3.0, source: t}
      leakage_mw: {value: 0, source: t}
      area_mm2: {value: 0, source: t}
      cycle_ns: {value: 1, source: t}
  dram:
    bandwidth_bits_per_cycle: {value: 8, source: t}
    latency_cycles: {value: 0, source: t}
    burst_bits: {value: 8, source: t}
    pj_per_bit: {value: 10, source: t}
  units:
    requant: {count: {value: 1, source: t}, per_cycle: {value: 1, source: t}}
    qe: {count: {value: 1, source: t}, per_cycle: {value: 1, source: t}}
    ce: {count: {value: 1, source: t}, per_cycle: {value: 1, source: t}}
    qk: {count: {value: 1, source: t}, per_cycle: {value: 1, source: t}}
    ck: {count: {value: 1, source: t}, per_cycle: {value: 1, source: t}}
    lut: {count: {value: 1, source: t}, per_cycle: {value: 1, source: t}, entries: {value: 16, source: t},
          width_bits: {value: 8, source: t}}
    alu: {count: {value: 1, source: t}, per_cycle: {value: 1, source: t}}
"""


@pytest.fixture()
def hw(tmp_path):
    table = yaml.safe_load((shipped_hwconfigs_dir() / "generic45.yaml").read_text())
    table["logic"]["leakage_nw_per_um2"]["value"] = 0.0     # no leakage: energies below are all dynamic
    (tmp_path / "g45.yaml").write_text(yaml.safe_dump(table))
    (tmp_path / "hand.yaml").write_text(DESIGN)
    return load_hardware(str(tmp_path / "hand.yaml"))


DENSE = Workload("fc", "dense", "mac", k=2, c=3, in_bits=8, w_bits=8, out_bits=8, acc_bits=24,
                 events={"qe": 10, "ce": 20, "qk": 5, "ck": 7, "requants": 30, "compares": 40, "adds": 50,
                         "lut_reads": 12},
                 qk_comparators=15, lut_entries=16, lut_width_bits=8)
BINARY = Workload("bin", "dense", "xnor", k=2, c=128, in_bits=1, w_bits=1, out_bits=8, a_op_bits=1, w_op_bits=1,
                  acc_bits=16)


def test_dense_layer_by_hand(hw):
    layer = estimate([DENSE], hw).layers[0]
    # 1x1 broadcast array, os: 1 pixel x 2 filters = 2 folds of T = 3 reduction steps.
    assert layer.compute_cycles == 6
    # Array edge: inputs 3 per fold x 2 folds = 6 reads, weights 6, outputs 2 written: 8-bit words.
    # Staging (the whole layer fits, not double-buffered): DRAM weights 48 bits, inputs 24, outputs 16.
    assert layer.dram_bits == {"weights": {"read": 48, "write": 0}, "inputs": {"read": 24, "write": 0},
                               "outputs": {"read": 0, "write": 16}}
    buf = layer.accesses["buf"]
    assert buf["reads"] == 6 + 6 + 2           # edge reads + output drain to DRAM
    assert buf["writes"] == 6 + 3 + 2          # weight and input fills + outputs from the array
    # Stalls: onload = 72 bits / 8 = 9 (serialised), offload = 16 / 8 = 2; the buffer reads 96 bits at
    # 8 bits/cycle = 12 cycles, 6 more than the compute; the slowest unit stage (alu: 90 ops) 84 more.
    assert layer.stall_cycles == {"onload": 9, "offload": 2, "dram": 0, "memory:buf": 6, "bank_conflicts": 0,
                                  "converters": 90 - 6}
    cycles = 6 + 9 + 2 + 6 + 84
    assert layer.cycles == cycles
    hand = {
        "mac": 6 * (C2 * 64 + C1 * 8 + CADD * 24),
        "lut": 12 * (15 * 8 * MUX2),
        "converters": 10 * QE + 20 * CE + 5 * 15 * QK_CMP + 7 * CK,
        # 32x32 multiply + 32-bit rounding add + 32-bit barrel shifter (32*5 MUX2) + two 32-bit compares
        "requant": 30 * (C2 * 1024 + C1 * 32 + CADD * 32 + 32 * 5 * MUX2 + 2 * CADD * 32),
        "other_alu": 40 * CADD * 16 + 50 * CADD * 16,
        "sram": 14 * READ + 11 * WRITE,
        "dram": (48 + 24 + 16) * DRAM,
        "clock": 1 * 10 * cycles * DFF,
    }
    for cat in ENERGY_CATEGORIES:
        assert layer.energy_pj[cat] == pytest.approx(hand.get(cat, 0.0), rel=1e-6), cat


def test_binary_layer_by_hand(hw):
    layer = estimate([BINARY], hw).layers[0]
    # XNOR array 1x1, os: 2 folds (filters) x T = 128 / 64 = 2 popcount words.
    assert layer.compute_cycles == 4
    assert layer.energy_pj["popcount"] == pytest.approx(4 * (64 * XNOR2 + 57 * FA + 16 * CADD), rel=1e-6)
    assert layer.energy_pj["mac"] == 0
    # Edge: 2 folds x 2 words of 64 bits = 32 buffer words each for inputs and weights; 2 outputs.
    # DRAM: 256 weight bits, 128 input bits, 16 output bits.
    assert layer.dram_bits["weights"]["read"] == 256 and layer.dram_bits["inputs"]["read"] == 128
    buf = layer.accesses["buf"]
    assert buf["reads"] == 32 + 32 + 2 and buf["writes"] == 32 + 16 + 2
    assert layer.energy_pj["sram"] == pytest.approx(66 * READ + 50 * WRITE)
    assert layer.energy_pj["dram"] == pytest.approx(400 * DRAM)


def test_batch_divides_energy_and_multiplies_work(hw):
    one, four = estimate([DENSE], hw, 1), estimate([DENSE], hw, 4)
    assert four.layers[0].macs == 4 * one.layers[0].macs
    # Weights are fetched once per batch: per-inference DRAM energy falls; MAC energy per inference does not.
    assert four.energy_breakdown_pj["mac"] == pytest.approx(one.energy_breakdown_pj["mac"])
    assert four.energy_breakdown_pj["dram"] < one.energy_breakdown_pj["dram"]
    assert math.isclose(four.throughput, 4 / four.latency_s)
