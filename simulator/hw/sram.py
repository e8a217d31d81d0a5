"""Per-bank figures of a memory level: energy per access, leakage, area and cycle time.

- `macro: cacti` — CACTI 7 rows (one bank, one port, 64-bit words; `hwconfigs/reference-data/cacti7_sram_64bit_word.csv`,
  docs/references.md §3) for the table's node and the level's cell type, interpolated log-log in
  the bank size between the two nearest rows (extrapolated along the nearest segment outside 2–64 KB, and said
  so). Energy per access scales with the word width (×word_bits/64): CACTI's dynamic energy is dominated by the
  bitlines and sense amplifiers of the bits read — an assumption the report lists.
- `macro: registers` — a register file of flip-flops: a write clocks word_bits DFFs; a read passes a
  ⌈log2 entries⌉-level MUX2 tree per bit (the selected path switches); area = DFFs + an (entries−1) MUX2 tree per
  bit; leakage = area × the table's logic leakage density.
- `macro: explicit` — figures per bank given in the architecture, each with its source.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from functools import lru_cache

from simulator.errors import HwsimError
from simulator.hw.techtable import shipped_hwconfigs_dir

CACTI_FILE = "reference-data/cacti7_sram_64bit_word.csv"
CACTI_SOURCE = ("CACTI 7, one bank, one port, 64-bit word, 300 K (hwconfigs/reference-data/cacti7_sram_64bit_word.csv, "
                "docs/references.md §3)")


@dataclass(frozen=True)
class MacroFigures:
    """One bank (or one per-PE instance) of a level."""

    read_pj: float            # per access of one word
    write_pj: float
    leakage_mw: float
    area_mm2: float
    cycle_ns: float | None    # None: no figure (registers)
    source: str
    assumption: bool


@lru_cache(maxsize=1)
def cacti_rows() -> tuple:
    path = shipped_hwconfigs_dir() / CACTI_FILE
    with open(path, newline="", encoding="utf-8") as fh:
        rows = []
        for row in csv.DictReader(fh):
            rows.append({k: (v if k == "cell_type" else float(v)) for k, v in row.items()})
    return tuple(rows)


def _loglog(x: float, xs: list, ys: list) -> float:
    """Power-law interpolation through the two nearest points (the nearest segment outside the range)."""
    i = 1
    while i < len(xs) - 1 and xs[i] < x:
        i += 1
    x0, x1, y0, y1 = xs[i - 1], xs[i], ys[i - 1], ys[i]
    if y0 <= 0 or y1 <= 0:
        return y0 + (y1 - y0) * (x - x0) / (x1 - x0)
    slope = math.log(y1 / y0) / math.log(x1 / x0)
    return y0 * (x / x0) ** slope


def level_macro(level, tech, row: str) -> MacroFigures:
    """Figures for one bank (shared level) or one instance (per-PE level) of `level` (arch.MemoryLevel)."""
    bank_bytes = level.size_bytes / level.banks
    if level.macro == "explicit":
        e = level.explicit
        return MacroFigures(e["read_pj_per_access"].value, e["write_pj_per_access"].value, e["leakage_mw"].value,
                            e["area_mm2"].value, e["cycle_ns"].value,
                            "; ".join(f"{k}: {fig.source}" for k, fig in e.items()),
                            any(fig.assumption for fig in e.values()))
    if level.macro == "registers":
        return register_file(bank_bytes, level.word_bits, tech)
    node = tech.node.feature_nm.value
    rows = sorted((r for r in cacti_rows() if r["cell_type"] == level.cell_type and r["tech_nm"] == node),
                  key=lambda r: r["size_bytes"])
    if len(rows) < 2:
        nodes = sorted({int(r["tech_nm"]) for r in cacti_rows()})
        raise HwsimError(f"CACTI rows exist for {', '.join(map(str, nodes))} nm only, not {node:g} nm; give the "
                         f"figures with macro: explicit", field=f"{row}.macro")
    sizes = [r["size_bytes"] for r in rows]
    fig = {key: _loglog(bank_bytes, sizes, [r[key] for r in rows])
           for key in ("read_pj", "write_pj", "leakage_mw", "area_mm2", "cycle_ns")}
    width = level.word_bits / 64.0
    inside = sizes[0] <= bank_bytes <= sizes[-1]
    how = "interpolated" if inside else "EXTRAPOLATED"
    source = (f"{CACTI_SOURCE}: {level.cell_type} {node:g} nm, {how} log-log to a {bank_bytes:g}-byte bank; "
              f"energy per access x{width:g} for {level.word_bits}-bit words (assumption: dynamic energy "
              f"proportional to the bits read)")
    return MacroFigures(fig["read_pj"] * width, fig["write_pj"] * width, fig["leakage_mw"], fig["area_mm2"],
                        fig["cycle_ns"], source, assumption=(width != 1.0 or not inside))


def register_file(size_bytes: float, word_bits: int, tech) -> MacroFigures:
    lg = tech.logic
    entries = max(1, int(size_bytes * 8 // word_bits))
    levels = math.ceil(math.log2(entries)) if entries > 1 else 0
    read_pj = word_bits * levels * lg.mux2_pj.value
    write_pj = word_bits * lg.dff_pj_per_clock.value
    area_um2 = entries * word_bits * lg.dff_area_um2.value + word_bits * (entries - 1) * lg.mux2_area_um2.value
    leak = lg.leakage_nw_per_um2.value * area_um2 * 1e-6 if lg.leakage_nw_per_um2 is not None else 0.0
    source = (f"register file of {entries} x {word_bits}-bit DFFs: read = {word_bits} bits x {levels} MUX2 levels "
              f"(logic.mux2_pj), write = {word_bits} DFF clocks (logic.dff_pj_per_clock), area = DFFs + MUX2 tree, "
              f"leakage = area x logic.leakage_nw_per_um2")
    return MacroFigures(read_pj, write_pj, leak, area_um2 * 1e-6, None, source, assumption=True)

