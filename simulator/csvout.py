"""CSV views of the reports (`--csv` of run, estimate and compare): flat rows for spreadsheets and plots.

Every number is the JSON report's own figure (docs/report-schema.md), under a column name that carries its
unit (`_pj`, `_s`, `_hz`, `_mm2`, `_mw`, `_bits`, `_words`, `_cycles`; counts are named by what they count:
`macs`, `cycles`, `qe` ...). Cycles and latency are per batch, energies and counts per inference, as in JSON.
The text is built in memory and handed to the command's output plan (fileio.Outputs), which writes it to a
temporary file and renames it into place: a CSV file is never seen half written.
"""

from __future__ import annotations

import csv
import io

# Integer counts of one layer from the functional run (`hwsim run` only): per inference, as in the JSON report.
RUN_COUNTS = ("binary_macs", "popcount_words", "lut_reads", "qe", "ce", "qk", "ck", "requants", "compares",
              "adds", "muls", "zero_act_macs", "zero_any_macs", "overflows", "pair_saturations",
              "pair_saturated_outputs")
# Text columns of a run's layers.
RUN_TEXT = ("output_shape", "output_encoding", "weight_encoding", "datapath")


def _cell(value):
    """A text cell a spreadsheet would run as a formula (a name from a file starting with = + - @) is written
    with a leading apostrophe; numbers and None (an empty cell) are left alone."""
    if value is None:
        return ""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


def _csv_text(header: list, rows: list) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows([_cell(row.get(col)) for col in header] for row in rows)
    return buf.getvalue()


def _keys(dicts, key) -> list:
    """The union of the keys of `d[key]` over `dicts`, in first-seen order (stable columns across rows)."""
    seen = {}
    for d in dicts:
        for k in d.get(key) or {}:
            seen.setdefault(k, None)
    return list(seen)


def _level(name: str) -> str:
    """A memory level or unit name as a column-name part ('memory:glb' -> 'memory_glb')."""
    return name.replace(":", "_").replace(".", "_")


def layer_columns(rep: dict) -> list:
    """The columns of the per-layer CSV of a run or estimate report."""
    layers = rep["layers"]
    causes, cats, levels = (_keys(layers, "stall_cycles"), _keys(layers, "energy_breakdown_pj"),
                            _keys(layers, "accesses"))
    cols = ["layer", "op", "path", "macs", "gated_macs", "active_macs", "cycles", "compute_cycles"]
    cols += [f"stall_{_level(c)}_cycles" for c in causes]
    cols += ["utilization", "latency_s", "energy_pj"] + [f"energy_{c}_pj" for c in cats]
    for level in levels:
        cols += [f"{_level(level)}_reads_words", f"{_level(level)}_writes_words"]
    cols += ["dram_read_bits", "dram_write_bits"]
    if "macs_by_bits" in (layers[0] if layers else {}):   # a run: the engine's counts and encodings too
        cols += list(RUN_TEXT) + list(RUN_COUNTS)
    return cols


def _layer_row(layer: dict, clock_hz: float) -> dict:
    row = {"layer": layer["name"], "op": layer["op"], "path": layer["path"], "macs": layer["macs"],
           "gated_macs": layer["gated_macs"], "active_macs": layer["active_macs"], "cycles": layer["cycles"],
           "compute_cycles": layer["compute_cycles"], "utilization": layer["utilization"],
           "latency_s": layer["cycles"] / clock_hz if clock_hz else None, "energy_pj": layer["energy_pj"]}
    row.update({f"stall_{_level(c)}_cycles": v for c, v in layer["stall_cycles"].items()})
    row.update({f"energy_{c}_pj": v for c, v in layer["energy_breakdown_pj"].items()})
    for level, acc in layer["accesses"].items():
        row[f"{_level(level)}_reads_words"] = acc.get("reads", 0)
        row[f"{_level(level)}_writes_words"] = acc.get("writes", 0)
    row["dram_read_bits"] = sum(t.get("read", 0) for t in layer["dram_bits"].values())
    row["dram_write_bits"] = sum(t.get("write", 0) for t in layer["dram_bits"].values())
    for key in RUN_COUNTS:
        if key in layer:
            row[key] = layer[key]
    for key in RUN_TEXT:
        if key in layer:
            value = layer[key]
            row[key] = "x".join(map(str, value)) if isinstance(value, list) else value
    return row


def cost_csv(rep: dict) -> str:
    """Per-layer CSV of a run or estimate report: one row per layer in graph order, then a `total` row.

    The total row holds the report's own totals where it has them (MACs, cycles, latency, energy and its
    breakdown) and the sum over layers for the other numeric columns; text columns and utilization are empty."""
    cols = layer_columns(rep)
    rows = [_layer_row(layer, rep["clock_hz"]) for layer in rep["layers"]]
    for row in rows:   # a stall cause or memory level a layer does not use (a pool has no onload): 0, not empty
        row.update({c: 0 for c in cols if (c.startswith("stall_") or c.endswith("_words")) and c not in row})
    total = {"layer": "total"}
    for col in cols:
        numbers = [r[col] for r in rows if isinstance(r.get(col), (int, float))]
        if numbers and col not in ("utilization",) and col not in RUN_TEXT:
            total[col] = sum(numbers)
    total.update({"macs": rep["macs_per_inference"], "gated_macs": rep["gated_macs_per_inference"],
                  "active_macs": rep["macs_per_inference"] - rep["gated_macs_per_inference"],
                  "cycles": rep["cycles"], "latency_s": rep["latency_s"],
                  "energy_pj": rep["energy_pj_per_inference"]})
    total.update({f"energy_{c}_pj": v for c, v in rep["energy_breakdown_pj"].items()})
    return _csv_text(cols, rows + [total])


# Per-design figures of a compare report, in column order (name = the JSON key; each carries its unit).
DESIGN_FIGURES = ("energy_pj_per_inference", "cycles", "latency_s", "area_mm2", "edp_j_s", "clock_hz",
                  "throughput_inferences_per_s", "tops_per_w", "leakage_mw", "macs_per_inference",
                  "gated_macs_per_inference")


def compare_columns(rep: dict) -> list:
    designs = rep["designs"]
    return (["model", "hw", "hw_path", "technology", "technology_nm", "batch", "accuracy"] + list(DESIGN_FIGURES)
            + [f"energy_{c}_pj" for c in _keys(designs, "energy_breakdown_pj")]
            + [f"area_{_level(u)}_mm2" for u in _keys(designs, "area_breakdown_mm2")])


def compare_csv(rep: dict) -> str:
    """CSV of a compare report: one row per design, in --hw order. `model` and `hw` name the design point as
    `hwsim plot` expects; `accuracy` (a fraction) is the single functional run's, empty for shapes-only networks;
    an area column of a unit a design lacks is 0."""
    cols = compare_columns(rep)
    rows = [design_row(d, rep.get("accuracy"), cols) for d in rep["designs"]]
    return _csv_text(cols, rows)


def design_row(d: dict, accuracy, cols: list) -> dict:
    """The CSV row of one design's cost part `d` (compare --csv, hwsim sweep): an area column of `cols` for a
    unit the design lacks is 0."""
    row = {"model": d["network"]["name"], "hw": d["hw"]["name"], "hw_path": d["hw"]["path"],
           "technology": d["hw"]["technology"], "technology_nm": d["hw"]["technology_nm"],
           "batch": d["batch"], "accuracy": accuracy}
    row.update({key: d[key] for key in DESIGN_FIGURES})
    row.update({f"energy_{c}_pj": v for c, v in d["energy_breakdown_pj"].items()})
    row.update({col: 0.0 for col in cols if col.startswith("area_") and col != "area_mm2"})
    row.update({f"area_{_level(u)}_mm2": v for u, v in d["area_breakdown_mm2"].items()})
    return row
