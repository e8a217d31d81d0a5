"""Per-event energies from a technology table: what one MAC, popcount word, LUT read, conversion or
requantization costs. The architecture model (cost.py) multiplies them by its counts; every figure used is a
table row, named in the report's assumptions when the table marks it so.

Per-event formulas (b = bits; every coefficient is a table row):
    mult(a, w)      = arith.mult_pj_per_bit2 * a*w + arith.mult_pj_per_bit * sqrt(a*w)       (QTools form)
    add(n)          = arith.add_pj_per_bit * n           (a comparator of n bits costs add(n))
    MAC             = mult(a_bits, w_bits) + add(acc_bits)
    fp32 MAC        = arith.fp32_mult_pj + arith.fp32_add_pj    (float32 weights: ORT's float ConvTranspose)
    popcount word   = W * logic.xnor2_pj + (W - floor(log2 W) - 1) * logic.full_adder_pj + add(acc_bits)
    LUT read        = (entries - 1) * width_bits * logic.mux2_pj                (an N:1 mux tree of MUX2)
    QE, CE, CK      = converters.qe_pj, ce_pj, ck_pj
    QK              = qk_comparators * converters.qk_pj_per_comparator
    requantization  = mult(m, m) + add(m) + s*ceil(log2 s) * logic.mux2_pj + 2 * add(c)
                      (m, s, c = requant.multiplier_bits, shift_bits, clamp_bits)
    compare / add   = add(alu.compare_bits) / add(alu.add_bits)
    elementwise mul = mult(b, b), b = the wider operand's value bits (a mul layer; its requantization apart)
Memory, leakage and clock energy are the architecture model's (cost.py, sram.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from simulator.errors import HwsimError
from simulator.hw.techtable import Figure, TechTable

# ----------------------------------------------------------------------------------------------------------
# Per-event energies.


@dataclass(frozen=True)
class PerEvent:
    """Energy of one event and the table rows it was computed from."""

    pj: float
    rows: tuple[str, ...]


def _rows(*figures: Figure) -> tuple[str, ...]:
    out: list[str] = []
    for fig in figures:
        for row in (fig.row, *fig.depends_on):
            if row not in out:
                out.append(row)
    return tuple(out)


def mult_pj(table: TechTable, a_bits: int, w_bits: int) -> float:
    gate_bits = math.sqrt(a_bits * w_bits)
    return table.arith.mult_pj_per_bit2.value * a_bits * w_bits + table.arith.mult_pj_per_bit.value * gate_bits


def add_pj(table: TechTable, bits: int) -> float:
    return table.arith.add_pj_per_bit.value * bits


def mac_energy(table: TechTable, a_bits: int, w_bits: int, acc_bits: int) -> PerEvent:
    ar = table.arith
    return PerEvent(mult_pj(table, a_bits, w_bits) + add_pj(table, acc_bits),
                    _rows(ar.mult_pj_per_bit2, ar.mult_pj_per_bit, ar.add_pj_per_bit))


def fp32_mac_energy(table: TechTable, layer: str) -> PerEvent:
    """One float32 multiply-add (a layer on float32 weights); a table without the two figures cannot cost it."""
    ar = table.arith
    if ar.fp32_mult_pj is None or ar.fp32_add_pj is None:
        raise HwsimError(f"layer '{layer}' does float32 MACs (float32 weights) but the technology table has no "
                         "arith.fp32_mult_pj / arith.fp32_add_pj (add both with their source)",
                         source=table.source, field="arith.fp32_mult_pj")
    return PerEvent(ar.fp32_mult_pj.value + ar.fp32_add_pj.value, _rows(ar.fp32_mult_pj, ar.fp32_add_pj))


def mult_energy(table: TechTable, a_bits: int, b_bits: int) -> PerEvent:
    """One elementwise multiplication of two activations (a mul layer's ALU lane)."""
    ar = table.arith
    return PerEvent(mult_pj(table, a_bits, b_bits), _rows(ar.mult_pj_per_bit2, ar.mult_pj_per_bit))


def popcount_full_adders(word_bits: int) -> int:
    """Full adders of a W-input popcount tree: W - floor(log2 W) - 1 (each FA removes one bit; 64 -> 57)."""
    return word_bits - (word_bits.bit_length() - 1) - 1


def popcount_word_energy(table: TechTable, word_bits: int, acc_bits: int) -> PerEvent:
    lg = table.logic
    pj = (word_bits * lg.xnor2_pj.value + popcount_full_adders(word_bits) * lg.full_adder_pj.value
          + add_pj(table, acc_bits))
    return PerEvent(pj, _rows(lg.xnor2_pj, lg.full_adder_pj, table.arith.add_pj_per_bit))


def lut_read_energy(table: TechTable, entries: int, width_bits: int) -> PerEvent:
    mux = table.logic.mux2_pj
    return PerEvent((entries - 1) * width_bits * mux.value, _rows(mux))


def barrel_shifter_pj(table: TechTable, bits: int) -> float:
    """An N-bit barrel shifter: N * ceil(log2 N) MUX2."""
    return bits * math.ceil(math.log2(bits)) * table.logic.mux2_pj.value if bits > 1 else 0.0


def requant_energy(table: TechTable) -> PerEvent:
    rq, ar = table.requant, table.arith
    m, s, c = rq.multiplier_bits.value, rq.shift_bits.value, rq.clamp_bits.value
    pj = mult_pj(table, m, m) + add_pj(table, m) + barrel_shifter_pj(table, s) + 2 * add_pj(table, c)
    return PerEvent(pj, _rows(ar.mult_pj_per_bit2, ar.mult_pj_per_bit, ar.add_pj_per_bit, table.logic.mux2_pj,
                              rq.multiplier_bits, rq.shift_bits, rq.clamp_bits))


def compare_energy(table: TechTable) -> PerEvent:
    bits = table.alu.compare_bits
    return PerEvent(add_pj(table, bits.value), _rows(table.arith.add_pj_per_bit, bits))


def alu_add_energy(table: TechTable) -> PerEvent:
    bits = table.alu.add_bits
    return PerEvent(add_pj(table, bits.value), _rows(table.arith.add_pj_per_bit, bits))


def converter_energy(table: TechTable, unit: str, qk_comparators: int = 0) -> PerEvent:
    cv = table.converters
    if unit == "qk":
        return PerEvent(qk_comparators * cv.qk_pj_per_comparator.value, _rows(cv.qk_pj_per_comparator))
    fig = {"qe": cv.qe_pj, "ce": cv.ce_pj, "ck": cv.ck_pj}[unit]
    return PerEvent(fig.value, _rows(fig))
