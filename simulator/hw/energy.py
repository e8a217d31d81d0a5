"""Energy model: event counts (Trace) x per-event energies (TechTable) -> EnergyReport.

The model never sees tensor values. Each cost is one `EventCost`: a count, an energy per event and the table
rows that produced that energy, so every number in a report can name its sources. Energies are per inference
(the trace is divided by its batch size).

Per-event formulas (b = bits; every coefficient is a table row):
    mult(a, w)      = arith.mult_pj_per_bit2 * a*w + arith.mult_pj_per_bit * sqrt(a*w)       (QTools form)
    add(n)          = arith.add_pj_per_bit * n           (a comparator of n bits costs add(n))
    MAC             = mult(a_bits, w_bits) + add(acc_bits)
    popcount word   = W * logic.xnor2_pj + (W - floor(log2 W) - 1) * logic.full_adder_pj + add(acc_bits)
    LUT read        = (entries - 1) * width_bits * logic.mux2_pj                (an N:1 mux tree of MUX2)
    QE, CE, CK      = converters.qe_pj, ce_pj, ck_pj
    QK              = qk_comparators * converters.qk_pj_per_comparator
    requantization  = mult(m, m) + add(m) + s*ceil(log2 s) * logic.mux2_pj + 2 * add(c)
                      (m, s, c = requant.multiplier_bits, shift_bits, clamp_bits)
    compare / add   = add(alu.compare_bits) / add(alu.add_bits)
    SRAM per bit    = energy per access / word_bits of the macro
    DRAM per bit    = dram.pj_per_bit
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field

from simulator.errors import HwsimError
from simulator.hw.techtable import Figure, TechTable
from simulator.trace import LayerCounts, Trace

CATEGORIES = ("mac", "popcount", "lut", "converters", "requant", "other_alu", "sram", "dram")

LEAKAGE_MODEL = ("not costed: there is no latency model yet, so no leakage or clock energy; the table's "
                 "leakage_mw and dff_pj_per_clock figures wait for the cycle model")
NOT_COSTED = ("binary_macs are not costed on their own (the popcount word energy covers XNOR, adder tree and "
              "accumulate); overflow counts are not costed; CK is costed at the table's reference unit "
              "whatever the layer's centroid count; area is in the table but not costed yet")


def memory_model(table: TechTable) -> str:
    if table.dram.weights_on_chip:
        weights = ("weights are resident on chip (dram.weights_on_chip: true): no DRAM traffic for weights")
    else:
        weights = ("weights are not resident (dram.weights_on_chip: false): each weight bit is read once from "
                   "DRAM and written once into the weight SRAM before its SRAM read")
    return ("compulsory: each weight, input and output moved once per inference; architecture model pending. "
            "Weights: read once from the weight SRAM; layer inputs: read once from the activation SRAM; layer "
            "outputs: written once to the activation SRAM; the model input and output cross the chip boundary "
            "once (DRAM read / write); " + weights + ". Not modelled yet: reuse, tiling, refetch, bank "
            "conflicts, DRAM<->SRAM staging of the model input and output.")


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


def sram_read_bit_energy(table: TechTable, buffer: str) -> PerEvent:
    macro = getattr(table.sram, buffer)
    return PerEvent(macro.read_pj_per_bit, _rows(macro.read_pj_per_access, macro.word_bits))


def sram_write_bit_energy(table: TechTable, buffer: str) -> PerEvent:
    macro = getattr(table.sram, buffer)
    return PerEvent(macro.write_pj_per_bit, _rows(macro.write_pj_per_access, macro.word_bits))


def dram_bit_energy(table: TechTable) -> PerEvent:
    return PerEvent(table.dram.pj_per_bit.value, _rows(table.dram.pj_per_bit))


def key_event_energies(table: TechTable) -> dict[str, float]:
    """A few representative per-event energies (pJ), for summaries and comparisons."""
    ref = table.converters.qk_reference_comparators.value
    return {
        "mac_a8_w8_acc32_pj": mac_energy(table, 8, 8, 32).pj,
        "mac_a4_w4_acc16_pj": mac_energy(table, 4, 4, 16).pj,
        "popcount_word64_acc16_pj": popcount_word_energy(table, 64, 16).pj,
        "lut_read_16x8_pj": lut_read_energy(table, 16, 8).pj,
        "qe_pj": converter_energy(table, "qe").pj,
        "ce_pj": converter_energy(table, "ce").pj,
        f"qk_{ref}_comparators_pj": converter_energy(table, "qk", ref).pj,
        "ck_pj": converter_energy(table, "ck").pj,
        "requant_pj": requant_energy(table).pj,
        "sram_weights_read_pj_per_bit": table.sram.weights.read_pj_per_bit,
        "sram_activations_read_pj_per_bit": table.sram.activations.read_pj_per_bit,
        "sram_activations_write_pj_per_bit": table.sram.activations.write_pj_per_bit,
        "dram_pj_per_bit": table.dram.pj_per_bit.value,
    }


# ----------------------------------------------------------------------------------------------------------
# Report objects.


@dataclass(frozen=True)
class EventCost:
    category: str
    event: str
    count: float
    pj_per_event: float
    energy_pj: float
    rows: tuple[str, ...]

    def to_dict(self) -> dict:
        return {"category": self.category, "event": self.event, "count": self.count,
                "pj_per_event": self.pj_per_event, "energy_pj": self.energy_pj, "rows": list(self.rows)}


@dataclass
class LayerEnergy:
    name: str
    op: str
    events: list[EventCost] = field(default_factory=list)
    energy_pj: dict[str, float] = field(default_factory=lambda: {c: 0.0 for c in CATEGORIES})
    total_energy_pj: float = 0.0

    def add(self, category: str, event: str, count: float, per: PerEvent) -> None:
        if count == 0:
            return
        energy = count * per.pj
        self.events.append(EventCost(category, event, count, per.pj, energy, per.rows))
        self.energy_pj[category] += energy
        self.total_energy_pj += energy

    def to_dict(self) -> dict:
        return {"name": self.name, "op": self.op, "energy_pj": dict(self.energy_pj),
                "total_energy_pj": self.total_energy_pj, "events": [e.to_dict() for e in self.events]}


@dataclass
class EnergyReport:
    tech_name: str
    tech_source: str
    per: str                          # "inference"
    batch: int                        # batch size of the trace the per-inference figures came from
    layers: list[LayerEnergy]
    chip_io: LayerEnergy              # model input / output crossing the chip boundary
    energy_pj: dict[str, float]       # by category, summed over layers and chip_io
    total_energy_pj: float
    rows_used: dict[str, list[str]]   # category -> table rows behind its numbers
    assumptions_used: list[str]       # rows flagged `assumption: true` among all rows used
    row_sources: dict[str, str]       # row -> source text (with scaling arithmetic) for every row used
    memory_model: str
    leakage_model: str = LEAKAGE_MODEL
    not_costed: str = NOT_COSTED

    def to_dict(self) -> dict:
        return {
            "tech_name": self.tech_name, "tech_source": self.tech_source, "per": self.per, "batch": self.batch,
            "total_energy_pj": self.total_energy_pj, "energy_pj": dict(self.energy_pj),
            "layers": [layer.to_dict() for layer in self.layers], "chip_io": self.chip_io.to_dict(),
            "rows_used": {k: list(v) for k, v in self.rows_used.items()},
            "assumptions_used": list(self.assumptions_used), "row_sources": dict(self.row_sources),
            "memory_model": self.memory_model, "leakage_model": self.leakage_model,
            "not_costed": self.not_costed,
        }


# ----------------------------------------------------------------------------------------------------------
# The estimate.


def estimate_energy(trace: Trace, table: TechTable) -> EnergyReport:
    """Energy per inference of `trace` on `table`, per layer and per category, with the rows used."""
    per_inf = trace.per_inference()
    layers = [_layer_energy(i, counts, table) for i, counts in enumerate(per_inf.layers)]

    chip_io = LayerEnergy("<chip boundary>", "dram")
    _check_count(per_inf.dram_input_bits, "dram_input_bits")
    _check_count(per_inf.dram_output_bits, "dram_output_bits")
    chip_io.add("dram", "dram read model input bit", per_inf.dram_input_bits, dram_bit_energy(table))
    chip_io.add("dram", "dram write model output bit", per_inf.dram_output_bits, dram_bit_energy(table))

    energy = {c: 0.0 for c in CATEGORIES}
    rows_used: dict[str, list[str]] = {c: [] for c in CATEGORIES}
    for part in (*layers, chip_io):
        for c in CATEGORIES:
            energy[c] += part.energy_pj[c]
        for ev in part.events:
            for row in ev.rows:
                if row not in rows_used[ev.category]:
                    rows_used[ev.category].append(row)
    all_rows = sorted({row for rows in rows_used.values() for row in rows})
    return EnergyReport(
        tech_name=table.name,
        tech_source=table.source,
        per="inference",
        batch=trace.batch,
        layers=layers,
        chip_io=chip_io,
        energy_pj=energy,
        total_energy_pj=sum(part.total_energy_pj for part in (*layers, chip_io)),
        rows_used={c: sorted(rows) for c, rows in rows_used.items()},
        assumptions_used=[row for row in all_rows if table.figure(row).assumption],
        row_sources={row: table.figure(row).describe() for row in all_rows},
        memory_model=memory_model(table),
    )


def _check_count(value, what: str) -> None:
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
    if not (ok and math.isfinite(value) and value >= 0):
        raise HwsimError(f"must be a non-negative count, got {value!r}", source="trace", field=what)


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _layer_energy(index: int, lc: LayerCounts, table: TechTable) -> LayerEnergy:
    where = f"layers[{index}] ({lc.name})"

    def need(value: int, what: str, because: str) -> None:
        if not (_is_int(value) and value >= 1):
            raise HwsimError(f"must be a positive integer when {because}, got {value!r}",
                             source="trace", field=f"{where}.{what}")

    for what in ("binary_macs", "popcount_words", "lut_reads", "qe", "ce", "qk", "ck", "requants",
                 "compares", "adds"):
        _check_count(getattr(lc, what), f"{where}.{what}")
    for tensors in (lc.weight_bits, lc.input_bits, lc.output_bits):
        for tensor, bits in tensors.items():
            _check_count(bits, f"{where}.{tensor}")

    out = LayerEnergy(lc.name, lc.op)

    # MAC array.
    for key in sorted(lc.macs, key=str):
        count = lc.macs[key]
        _check_count(count, f"{where}.macs[{key}]")
        if count == 0:
            continue
        if not (isinstance(key, tuple) and len(key) == 2 and all(_is_int(b) and b >= 1 for b in key)):
            raise HwsimError(f"MAC key must be (activation bits, weight bits), got {key!r}",
                             source="trace", field=f"{where}.macs")
        need(lc.acc_bits, "acc_bits", "the layer has MACs")
        a_bits, w_bits, acc_bits = int(key[0]), int(key[1]), int(lc.acc_bits)
        out.add("mac", f"mac a{a_bits} w{w_bits} acc{acc_bits}", count,
                mac_energy(table, a_bits, w_bits, acc_bits))

    # XNOR-popcount path.
    if lc.popcount_words:
        need(lc.popcount_word_bits, "popcount_word_bits", "the layer has popcount words")
        need(lc.acc_bits, "acc_bits", "the layer has popcount words (the word counts are accumulated)")
        out.add("popcount", f"popcount word{lc.popcount_word_bits} acc{lc.acc_bits}", lc.popcount_words,
                popcount_word_energy(table, lc.popcount_word_bits, lc.acc_bits))

    # Codebook LUT.
    if lc.lut_reads:
        need(lc.lut_entries, "lut_entries", "the layer has LUT reads")
        need(lc.lut_width_bits, "lut_width_bits", "the layer has LUT reads")
        out.add("lut", f"lut read {lc.lut_entries}x{lc.lut_width_bits}b", lc.lut_reads,
                lut_read_energy(table, lc.lut_entries, lc.lut_width_bits))

    # Activation converters (seed 004).
    out.add("converters", "qe (ENQ quantize)", lc.qe, converter_energy(table, "qe"))
    out.add("converters", "ce (ENQ convert)", lc.ce, converter_energy(table, "ce"))
    if lc.qk:
        need(lc.qk_comparators, "qk_comparators", "the layer has QK conversions")
        out.add("converters", f"qk (KNQ quantize, {lc.qk_comparators} comparators)", lc.qk,
                converter_energy(table, "qk", lc.qk_comparators))
    out.add("converters", "ck (KNQ convert)", lc.ck, converter_energy(table, "ck"))

    # Requantizer and the ALU outside the array.
    out.add("requant", "requantization", lc.requants, requant_energy(table))
    out.add("other_alu", f"compare {table.alu.compare_bits.value}b", lc.compares, compare_energy(table))
    out.add("other_alu", f"add {table.alu.add_bits.value}b", lc.adds, alu_add_energy(table))

    # Compulsory memory traffic.
    weight_bits = sum(lc.weight_bits.values())
    out.add("sram", "weight sram read bit", weight_bits, sram_read_bit_energy(table, "weights"))
    if not table.dram.weights_on_chip:
        out.add("sram", "weight sram fill (write) bit", weight_bits, sram_write_bit_energy(table, "weights"))
        out.add("dram", "dram read weight bit", weight_bits, dram_bit_energy(table))
    out.add("sram", "activation sram read bit (inputs)", sum(lc.input_bits.values()),
            sram_read_bit_energy(table, "activations"))
    out.add("sram", "activation sram write bit (outputs)", sum(lc.output_bits.values()),
            sram_write_bit_energy(table, "activations"))
    return out
