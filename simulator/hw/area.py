"""Area of a design and its clock: the sum over its units, each from the technology table.

    MAC PE        mult(a, w) + add(acc) + register_bits DFFs         (arith fits, logic.dff_area_um2)
    XNOR PE       W XNOR2 + (W - ⌊log2 W⌋ - 1) full adders + add(acc) + register_bits DFFs
    memory level  per-bank macro area (sram.level_macro) × banks (× PEs for a per-PE level)
    QE/CE/QK/CK   seed 004 Table V areas × unit counts
    LUT           entries × width DFFs + a (entries-1) MUX2 tree per bit, × units
    requantizer   mult(m, m) + add(m) + s·⌈log2 s⌉ MUX2 + 2·add(c), × units
    ALU lane      add(compare_bits), × units

A `derived` clock is 1 / the slowest critical path among the units the design uses that have a delay figure:
PE `delay_ns` (given in the architecture), seed 004's converter delays, CACTI cycle times of the SRAM macros.
Units without a delay figure are listed, not guessed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from simulator.errors import HwsimError
from simulator.hw.energy import popcount_full_adders
from simulator.hw.sram import level_macro


def mult_area_um2(tech, a_bits: int, w_bits: int) -> float:
    ar = tech.arith
    return ar.mult_area_um2_per_bit2.value * a_bits * w_bits + ar.mult_area_um2_per_bit.value * math.sqrt(a_bits * w_bits)


def add_area_um2(tech, bits: int) -> float:
    return tech.arith.add_area_um2_per_bit.value * bits


def pe_area_um2(tech, pe) -> float:
    lg = tech.logic
    regs = pe.register_bits * lg.dff_area_um2.value
    if pe.kind == "mac":
        return mult_area_um2(tech, pe.a_bits, pe.w_bits) + add_area_um2(tech, pe.acc_bits) + regs
    return (pe.word_bits * lg.xnor2_area_um2.value + popcount_full_adders(pe.word_bits) * lg.full_adder_area_um2.value
            + add_area_um2(tech, pe.acc_bits) + regs)


def requant_area_um2(tech) -> float:
    rq = tech.requant
    m, s, c = rq.multiplier_bits.value, rq.shift_bits.value, rq.clamp_bits.value
    shifter = s * math.ceil(math.log2(s)) * tech.logic.mux2_area_um2.value if s > 1 else 0.0
    return mult_area_um2(tech, m, m) + add_area_um2(tech, m) + shifter + 2 * add_area_um2(tech, c)


def lut_area_um2(tech, entries: int, width_bits: int) -> float:
    lg = tech.logic
    return entries * width_bits * lg.dff_area_um2.value + width_bits * (entries - 1) * lg.mux2_area_um2.value


@dataclass(frozen=True)
class AreaReport:
    breakdown_mm2: dict        # unit -> mm2
    logic_mm2: float           # everything but the memory macros (leaks at the table's logic density)
    memory_leakage_mw: float   # all SRAM / register-file macros
    logic_leakage_mw: float
    macros: dict               # level name -> MacroFigures (per bank / per instance)

    @property
    def total_mm2(self) -> float:
        return sum(self.breakdown_mm2.values())

    @property
    def leakage_mw(self) -> float:
        return self.memory_leakage_mw + self.logic_leakage_mw


def design_area(tech, arch) -> AreaReport:
    parts: dict[str, float] = {}
    for pe in (arch.mac, arch.xnor):
        if pe is not None:
            parts[f"{pe.kind}_pes"] = pe.pes * pe_area_um2(tech, pe) * 1e-6
    macros, mem_leak = {}, 0.0
    for lv in arch.levels:
        macro = level_macro(lv, tech, f"architecture.memory.{lv.name}")
        macros[lv.name] = macro
        instances = lv.banks * (pes_for_level(arch) if lv.per_pe else 1)
        parts[f"memory.{lv.name}"] = macro.area_mm2 * instances
        mem_leak += macro.leakage_mw * instances
    cv = tech.converters
    for unit, fig in (("qe", cv.qe_area_um2), ("ce", cv.ce_area_um2), ("qk", cv.qk_area_um2), ("ck", cv.ck_area_um2)):
        if arch.units[unit].count:
            parts[f"units.{unit}"] = arch.units[unit].count * fig.value * 1e-6
    lut = arch.units["lut"]
    if lut.count:
        parts["units.lut"] = lut.count * lut_area_um2(tech, arch.lut_entries, arch.lut_width_bits) * 1e-6
    if arch.units["requant"].count:
        parts["units.requant"] = arch.units["requant"].count * requant_area_um2(tech) * 1e-6
    if arch.units["alu"].count:
        parts["units.alu"] = arch.units["alu"].count * add_area_um2(tech, tech.alu.compare_bits.value) * 1e-6
    logic = sum(v for k, v in parts.items() if not k.startswith("memory."))
    density = tech.logic.leakage_nw_per_um2
    logic_leak = density.value * logic * 1e6 * 1e-6 if density is not None else 0.0
    return AreaReport(parts, logic, mem_leak, logic_leak, macros)


def pes_for_level(arch) -> int:
    """Instances of a per-PE level: one per MAC PE (or XNOR PE when the design has no MAC array)."""
    pe = arch.mac or arch.xnor
    return pe.pes


@dataclass(frozen=True)
class Clock:
    hz: float
    mode: str                  # given | derived
    limited_by: str | None     # derived: the unit with the slowest critical path
    delay_ns: float | None
    considered: dict           # unit -> critical path ns (derived)
    without_delay: list        # units the design uses that have no delay figure


def design_clock(tech, arch, area: AreaReport) -> Clock:
    paths: dict[str, float] = {}
    missing = []
    for pe in (arch.mac, arch.xnor):
        if pe is not None:
            if pe.delay_ns is not None:
                paths[f"{pe.kind} PE"] = pe.delay_ns.value
            else:
                missing.append(f"{pe.kind} PE")
    cv = tech.converters
    for unit in ("qe", "ce", "qk", "ck"):
        if arch.units[unit].count:
            fig = getattr(cv, f"{unit}_delay_ns")
            if fig is not None:
                paths[f"{unit.upper()} converter"] = fig.value
            else:
                missing.append(f"{unit.upper()} converter")
    for name, macro in area.macros.items():
        if macro.cycle_ns is not None:
            paths[f"memory {name}"] = macro.cycle_ns
        else:
            missing.append(f"memory {name}")
    for unit in ("lut", "requant", "alu"):
        if arch.units[unit].count:
            missing.append(unit)
    if arch.clock_mode == "given":
        return Clock(arch.clock_mhz * 1e6, "given", None, None, paths, missing)
    if not paths:
        raise HwsimError("a derived clock needs at least one unit with a critical-path figure (PE delay_ns, "
                         "converter delays, CACTI SRAM cycle times)", field="architecture.clock.mode")
    unit, delay = max(paths.items(), key=lambda kv: kv[1])
    if not 1e-3 <= delay <= 1e6:
        raise HwsimError(f"the slowest critical path ({unit}, {delay!r} ns) gives no usable clock",
                         field="architecture.clock.mode")
    return Clock(1e9 / delay, "derived", unit, delay, paths, missing)
