"""Accelergy energy and area reference tables (ERT, ART) of a design, from hwsim's own figures.

`hwsim tables --accelergy OUT_DIR --hw HW` writes OUT_DIR/ERT.yaml and OUT_DIR/ART.yaml in Accelergy's formats
(Accelergy-Project/accelergy, `ERT_generator.py` / `ART_generator.py`):

    ERT: {version, tables: [{name, actions: [{name, arguments, energy}]}]}     energy in pJ per action
    ART: {version, tables: [{name, area}]}                                       area in um^2 per instance

One entry per component of the design, named `DESIGN.COMPONENT[0..N-1]` for N identical instances. Every
number is a figure hwsim's cost model charges, computed by the same functions (energy.py, sram.py, area.py), so
a Timeloop or Accelergy user gets exactly hwsim's per-event energies and areas:

    mac_pe     compute = mult(a, w) + add(acc) at the PE's widths (hwsim charges a layer at its own operand
               widths with the same formula); compute_fp32 when the table has float32 figures; clock =
               register_bits DFF clocks per cycle; leak
    xnor_pe    compute = one popcount word at the PE's word_bits and acc_bits; clock; leak
    memory     read, write, update (= write: a partial-sum write), leak, per bank (per PE instance for per_pe)
    DRAM       read, write per bit (no area: not in the tables)
    units      qe/qk quantize, ce/ck convert, lut read, requant requantize, alu compare/add; leak
    leak       energy per cycle of the design's clock (`global_cycle_seconds`): leakage power x one cycle,
               as the cost model charges leakage x time; omitted when the table has no logic leakage density
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from simulator.errors import HwsimError
from simulator.hw.area import (add_area_um2, design_area, design_clock, lut_area_um2, pe_area_um2, pes_for_level,
                               requant_area_um2)
from simulator.hw.energy import (PerEvent, alu_add_energy, compare_energy, converter_energy, fp32_mac_energy,
                                 lut_read_energy, mac_energy, popcount_word_energy, requant_energy)

ACCELERGY_VERSION = "0.4"      # the table format of Accelergy 0.4 (it reads 0.2-0.4)
ERT_FILE = "ERT.yaml"
ART_FILE = "ART.yaml"

# what one event of a converter unit does (seed 004: QE/QK encode an activation, CE/CK decode it)
CONVERTER_ACTIONS = {"qe": "quantize", "ce": "convert", "qk": "quantize", "ck": "convert"}


@dataclass
class Component:
    name: str                        # Accelergy name, with the instance range
    actions: list = field(default_factory=list)    # (action, arguments, pJ, rows or source text)
    area_um2: float | None = None    # per instance; None: no area figure in the tables

    def add(self, action: str, arguments: dict, energy, rows=()) -> None:
        if isinstance(energy, PerEvent):
            energy, rows = energy.pj, energy.rows
        self.actions.append((action, arguments, float(energy), rows))


def _ident(text: str) -> str:
    """A design name usable as the first part of an Accelergy hierarchical name (no dots, no brackets)."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", text) or "design"


def _named(prefix: str, name: str, instances: int) -> str:
    return f"{prefix}.{name}[0..{instances - 1}]" if instances > 1 else f"{prefix}.{name}"


def components(hw) -> tuple[list, dict]:
    """The design's components with their actions and areas, and facts for the file headers."""
    tech, arch = hw.tech, hw.arch
    try:
        area = design_area(tech, arch)
        clock = design_clock(tech, arch, area)
    except HwsimError as exc:   # these name the field only: add the design's file, as the cost model does
        raise HwsimError(exc.message, source=exc.source or hw.path, field=exc.field) from None
    cycle_s = 1.0 / clock.hz
    density = tech.logic.leakage_nw_per_um2
    prefix = _ident(arch.name)
    out = []

    def leak(comp: Component, leakage_mw: float, rows) -> None:
        # leakage power x one clock cycle: mW x s x 1e9 = pJ, as cost.py charges leakage x time
        comp.add("leak", {"global_cycle_seconds": cycle_s}, leakage_mw / clock.hz * 1e9, rows)

    def logic_leak(comp: Component) -> None:
        if density is not None:   # logic leaks at the table's density (area.py: nW/um2 x um2 x 1e-6 = mW)
            leak(comp, density.value * comp.area_um2 * 1e-6, ("logic.leakage_nw_per_um2",))

    for pe in (arch.mac, arch.xnor):
        if pe is None:
            continue
        comp = Component(_named(prefix, f"{pe.kind}_pe", pe.pes), area_um2=pe_area_um2(tech, pe))
        if pe.kind == "mac":
            comp.add("compute", {"a_bits": pe.a_bits, "w_bits": pe.w_bits, "acc_bits": pe.acc_bits},
                     mac_energy(tech, pe.a_bits, pe.w_bits, pe.acc_bits))
            if tech.arith.fp32_mult_pj is not None and tech.arith.fp32_add_pj is not None:
                comp.add("compute_fp32", {}, fp32_mac_energy(tech, "accelergy"))
        else:
            comp.add("compute", {"word_bits": pe.word_bits, "acc_bits": pe.acc_bits},
                     popcount_word_energy(tech, pe.word_bits, pe.acc_bits))
        if pe.register_bits:
            comp.add("clock", {"register_bits": pe.register_bits},
                     pe.register_bits * tech.logic.dff_pj_per_clock.value, ("logic.dff_pj_per_clock",))
        logic_leak(comp)
        out.append(comp)

    for lv in arch.levels:
        macro = area.macros[lv.name]
        instances = lv.banks * (pes_for_level(arch) if lv.per_pe else 1)
        comp = Component(_named(prefix, lv.name, instances), area_um2=macro.area_mm2 * 1e6)
        words = {"word_bits": lv.word_bits}
        comp.add("read", words, macro.read_pj, macro.source)
        comp.add("write", words, macro.write_pj, macro.source)
        comp.add("update", words, macro.write_pj, macro.source)
        leak(comp, macro.leakage_mw, macro.source)
        out.append(comp)

    dram = Component(f"{prefix}.DRAM")
    row = arch.dram.pj_per_bit.row
    dram.add("read", {"bits": 1}, arch.dram.pj_per_bit.value, (row,))
    dram.add("write", {"bits": 1}, arch.dram.pj_per_bit.value, (row,))
    out.append(dram)

    cv = tech.converters
    for unit in ("qe", "ce", "qk", "ck", "lut", "requant", "alu"):
        count = arch.units[unit].count
        if not count:
            continue
        comp = Component(_named(prefix, unit, count))
        if unit in ("qe", "ce", "ck"):
            comp.area_um2 = getattr(cv, f"{unit}_area_um2").value
            comp.add(CONVERTER_ACTIONS[unit], {}, converter_energy(tech, unit))
        elif unit == "qk":
            # QK energy scales with the layer's comparators; the entry is the table's reference unit
            comparators = cv.qk_reference_comparators.value
            comp.area_um2 = cv.qk_area_um2.value
            comp.add(CONVERTER_ACTIONS["qk"], {"comparators": comparators}, converter_energy(tech, "qk", comparators))
        elif unit == "lut":
            comp.area_um2 = lut_area_um2(tech, arch.lut_entries, arch.lut_width_bits)
            comp.add("read", {"entries": arch.lut_entries, "width_bits": arch.lut_width_bits},
                     lut_read_energy(tech, arch.lut_entries, arch.lut_width_bits))
        elif unit == "requant":
            comp.area_um2 = requant_area_um2(tech)
            comp.add("requantize", {}, requant_energy(tech))
        else:
            comp.area_um2 = add_area_um2(tech, tech.alu.compare_bits.value)
            comp.add("compare", {"bits": tech.alu.compare_bits.value}, compare_energy(tech))
            comp.add("add", {"bits": tech.alu.add_bits.value}, alu_add_energy(tech))
        logic_leak(comp)
        out.append(comp)

    facts = {"design": arch.name, "file": hw.path, "tech": tech.source, "clock_mhz": clock.hz / 1e6,
             "clock_mode": clock.mode, "leak_density": density is not None, "gating": arch.gating}
    return out, facts


def ert_doc(comps) -> dict:
    tables = [{"name": c.name,
               "actions": [{"name": a, "arguments": dict(args), "energy": pj} for a, args, pj, _ in c.actions]}
              for c in comps]
    return {"ERT": {"version": ACCELERGY_VERSION, "tables": tables}}


def art_doc(comps) -> dict:
    tables = [{"name": c.name, "area": c.area_um2} for c in comps if c.area_um2 is not None]
    return {"ART": {"version": ACCELERGY_VERSION, "tables": tables}}


def _comment(lines) -> str:
    # one '# ' line per entry; sources come from files, so newlines inside them are flattened
    return "".join("# " + " ".join(str(line).split()) + "\n" for line in lines)


def render(comps, facts) -> tuple[str, str]:
    """The text of ERT.yaml and ART.yaml: a comment header saying where every number comes from, then the
    table written by yaml.safe_dump."""
    where = (f"Design {facts['design']} ({facts['file']}; technology table {facts['tech']}), written by "
             f"`hwsim tables --accelergy`. Clock {facts['clock_mhz']:.6g} MHz ({facts['clock_mode']}).")
    ert_head = [
        "Accelergy energy reference table (ERT). " + where,
        "Energies in pJ per action of one instance: the per-event figures hwsim's cost model charges "
        "(simulator/hw/energy.py, sram.py). leak = leakage power x one cycle (global_cycle_seconds).",
        "compute of a PE is given at the PE's own widths; hwsim charges each layer at its operand widths with the "
        "same formula. update = write (a partial-sum write). DRAM: per bit moved.",
    ]
    if facts["gating"] != "none":
        ert_head.append(f"Gating {facts['gating']}: hwsim charges no energy for a gated MAC (no compute action).")
    if not facts["leak_density"]:
        ert_head.append("No leak for PEs and units: the technology table has no logic.leakage_nw_per_um2.")
    ert_head.append("Where each energy comes from (technology-table rows, or the memory macro's source):")
    for c in comps:
        by_source = {}   # actions sharing a source are listed together (a memory macro's four actions)
        for action, _, _, rows in c.actions:
            by_source.setdefault(rows if isinstance(rows, str) else ", ".join(rows), []).append(action)
        for text, actions in by_source.items():
            ert_head.append(f"  {c.name} {'/'.join(actions)}: {text}")
    missing = [c.name for c in comps if c.area_um2 is None]
    art_head = [
        "Accelergy area reference table (ART). " + where,
        "Areas in um^2 per instance, as hwsim's area model computes them (simulator/hw/area.py, sram.py).",
    ]
    if missing:
        art_head.append("Left out, no area figure in the tables: " + ", ".join(missing) + ".")
    ert = _comment(ert_head) + yaml.safe_dump(ert_doc(comps), sort_keys=False, default_flow_style=False)
    art = _comment(art_head) + yaml.safe_dump(art_doc(comps), sort_keys=False, default_flow_style=False)
    return ert, art


def prepare_directory(out_dir: str) -> Path:
    """OUT_DIR, created if missing (with its parents); anything but a directory is one error naming it."""
    path = Path(out_dir)
    if path.exists() and not path.is_dir():
        raise HwsimError("not a directory", source=out_dir, field="--accelergy")
    try:
        if not path.is_dir():
            os.makedirs(path, exist_ok=True)
    except OSError as exc:
        raise HwsimError(f"cannot create the output directory: {exc.strerror or exc}", source=out_dir,
                         field="--accelergy") from None
    return path
