"""`hwsim tables --accelergy`: the ERT / ART files parse, and every energy and area is the figure hwsim's cost
model uses — recomputed here from an independent read of the YAML tables and the CACTI CSV (plain
yaml.safe_load and csv, not simulator.hw), and checked against the cost model's own per-layer energies."""

import csv
import math
import os
from pathlib import Path

import pytest
import yaml

from simulator.cli import main
from test_cli import one_error_line, run_cli

ROOT = Path(__file__).resolve().parents[1]
HWCONFIGS = ROOT / "hwconfigs"
DESIGNS = ("tsmc90", "generic45", "eyeriss65", "tpu_like", "lowbit90")


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """design -> (ERT mapping, ART mapping, ERT text, ART text), written by the command."""
    out = {}
    for design in DESIGNS:
        directory = tmp_path_factory.mktemp(design)
        assert main(["tables", "--accelergy", str(directory), "--hw", design]) == 0
        ert_text, art_text = (directory / "ERT.yaml").read_text(), (directory / "ART.yaml").read_text()
        out[design] = (yaml.safe_load(ert_text), yaml.safe_load(art_text), ert_text, art_text)
        assert sorted(os.listdir(directory)) == ["ART.yaml", "ERT.yaml"]   # no temporaries left
    return out


# ----------------------------------------------------------------------------------------------------------
# An independent reading of a design: its technology table and architecture as plain YAML.


class Design:
    def __init__(self, name):
        doc = yaml.safe_load((HWCONFIGS / f"{name}.yaml").read_text())
        if doc["format"] == "hwsim-arch/1":
            self.tech = yaml.safe_load((HWCONFIGS / f"{doc['tech']}.yaml").read_text())
            self.arch, self.name = doc["architecture"], doc["name"]
        else:
            self.tech, self.name = doc, doc["node"]["name"]
            self.arch = doc.get("architecture") or \
                yaml.safe_load((HWCONFIGS / "architectures" / "default.yaml").read_text())["architecture"]

    def t(self, row):
        """A technology-table figure at the table's node: the written value times its scaling factor."""
        node = self.tech
        for key in row.split("."):
            node = node[key]
        factor = 1.0
        if node.get("scale"):
            s = {k: v["value"] for k, v in self.tech["scaling"].items() if isinstance(v, dict)}
            factor = (s["to_nm"] / s["from_nm"]) * (s["to_v"] / s["from_v"]) ** 2 if node["scale"] == "energy" \
                else s["area_factor"]
        return node["value"] * factor

    def a(self, *keys, default=None):
        """An architecture figure's value (or a plain field), `default` when absent."""
        node = self.arch
        for key in keys:
            if not isinstance(node, dict) or key not in node:
                return default
            node = node[key]
        return node["value"] if isinstance(node, dict) and "value" in node else node

    # per-event energies (docs/hwconfig-format.md, "How events are costed")
    def mult(self, a, w):
        return self.t("arith.mult_pj_per_bit2") * a * w + self.t("arith.mult_pj_per_bit") * math.sqrt(a * w)

    def add(self, n):
        return self.t("arith.add_pj_per_bit") * n

    def mult_area(self, a, w):
        return self.t("arith.mult_area_um2_per_bit2") * a * w + self.t("arith.mult_area_um2_per_bit") * math.sqrt(a * w)

    def add_area(self, n):
        return self.t("arith.add_area_um2_per_bit") * n

    def pes(self):
        kind = "mac" if self.a("pe_array", "mac") else "xnor"
        return self.a("pe_array", kind, "rows") * self.a("pe_array", kind, "cols")

    def macro(self, level):
        """Per-bank read pJ, write pJ, leakage mW, area mm2, cycle ns (None for registers) of a memory level."""
        lv = self.arch["memory"][level]
        size, word = lv["size_bytes"]["value"], lv["word_bits"]["value"]
        bank = size / self.a("memory", level, "banks", default=1)
        kind = lv.get("macro", "cacti")
        if kind == "explicit":
            return tuple(lv[k]["value"] for k in ("read_pj_per_access", "write_pj_per_access", "leakage_mw",
                                                  "area_mm2", "cycle_ns"))
        if kind == "registers":
            entries = int(bank * 8 // word)
            area = entries * word * self.t("logic.dff_area_um2") + word * (entries - 1) * self.t("logic.mux2_area_um2")
            return (word * math.ceil(math.log2(entries)) * self.t("logic.mux2_pj"),
                    word * self.t("logic.dff_pj_per_clock"),
                    self.t("logic.leakage_nw_per_um2") * area * 1e-6, area * 1e-6, None)
        rows = sorted((r for r in cacti_rows() if r["cell_type"] == lv.get("cell_type", "itrs-hp")
                       and float(r["tech_nm"]) == self.tech["node"]["feature_nm"]["value"]),
                      key=lambda r: float(r["size_bytes"]))
        sizes = [float(r["size_bytes"]) for r in rows]
        i = next((j for j in range(1, len(sizes)) if sizes[j] >= bank), len(sizes) - 1)

        def loglog(key):     # power law through the two rows around the bank size (nearest pair outside)
            x0, x1, y0, y1 = sizes[i - 1], sizes[i], float(rows[i - 1][key]), float(rows[i][key])
            return y0 * (bank / x0) ** (math.log(y1 / y0) / math.log(x1 / x0))
        scale = word / 64
        return (loglog("read_pj") * scale, loglog("write_pj") * scale, loglog("leakage_mw"), loglog("area_mm2"),
                loglog("cycle_ns"))

    def unit_count(self, unit):
        return self.a("units", unit, "count", default=0)

    def clock_hz(self):
        if self.a("clock", "mode") == "given":
            return self.a("clock", "mhz") * 1e6
        paths = [self.a("pe_array", k, "delay_ns") for k in ("mac", "xnor") if self.a("pe_array", k, "delay_ns")]
        paths += [self.t(f"converters.{u}_delay_ns") for u in ("qe", "ce", "qk", "ck") if self.unit_count(u)]
        paths += [self.macro(lv)[4] for lv in self.arch["memory"] if self.macro(lv)[4] is not None]
        return 1e9 / max(paths)


def cacti_rows():
    with open(HWCONFIGS / "reference-data" / "cacti7_sram_64bit_word.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def expected(design: Design):
    """Accelergy base name -> ({action: pJ}, area um2 or None, instances), from the independent reading."""
    d, out = design, {}
    hz = d.clock_hz()
    leak = lambda mw: mw / hz * 1e9     # noqa: E731  (pJ per cycle)
    logic = lambda um2: leak(d.t("logic.leakage_nw_per_um2") * um2 * 1e-6)   # noqa: E731
    for kind in ("mac", "xnor"):
        if not d.a("pe_array", kind):
            continue
        acc, regs = d.a("pe_array", kind, "acc_bits"), d.a("pe_array", kind, "register_bits")
        if kind == "mac":
            a, w = d.a("pe_array", kind, "a_bits"), d.a("pe_array", kind, "w_bits")
            actions = {"compute": d.mult(a, w) + d.add(acc),
                       "compute_fp32": d.t("arith.fp32_mult_pj") + d.t("arith.fp32_add_pj")}
            area = d.mult_area(a, w) + d.add_area(acc) + regs * d.t("logic.dff_area_um2")
        else:
            word = d.a("pe_array", kind, "word_bits")
            adders = word - int(math.log2(word)) - 1
            actions = {"compute": word * d.t("logic.xnor2_pj") + adders * d.t("logic.full_adder_pj") + d.add(acc)}
            area = (word * d.t("logic.xnor2_area_um2") + adders * d.t("logic.full_adder_area_um2") + d.add_area(acc)
                    + regs * d.t("logic.dff_area_um2"))
        actions.update(clock=regs * d.t("logic.dff_pj_per_clock"), leak=logic(area))
        out[f"{kind}_pe"] = (actions, area, d.a("pe_array", kind, "rows") * d.a("pe_array", kind, "cols"))
    for level in d.arch["memory"]:
        read, write, leak_mw, area_mm2, _ = d.macro(level)
        banks = d.a("memory", level, "banks", default=1)
        instances = banks * (d.pes() if d.a("memory", level, "per_pe", default=False) else 1)
        out[level] = ({"read": read, "write": write, "update": write, "leak": leak(leak_mw)}, area_mm2 * 1e6,
                      instances)
    dram = d.a("dram", "pj_per_bit", default=d.t("dram.pj_per_bit"))
    out["DRAM"] = ({"read": dram, "write": dram}, None, 1)
    mux_area, dff_area = d.t("logic.mux2_area_um2"), d.t("logic.dff_area_um2")
    for unit in ("qe", "ce", "qk", "ck", "lut", "requant", "alu"):
        count = d.unit_count(unit)
        if not count:
            continue
        if unit in ("qe", "ce", "ck"):
            actions, area = {"quantize" if unit == "qe" else "convert": d.t(f"converters.{unit}_pj")}, \
                d.t(f"converters.{unit}_area_um2")
        elif unit == "qk":
            actions = {"quantize": d.t("converters.qk_reference_comparators") * d.t("converters.qk_pj_per_comparator")}
            area = d.t("converters.qk_area_um2")
        elif unit == "lut":
            e, b = d.a("units", "lut", "entries", default=16), d.a("units", "lut", "width_bits", default=8)
            actions, area = {"read": (e - 1) * b * d.t("logic.mux2_pj")}, e * b * dff_area + b * (e - 1) * mux_area
        elif unit == "requant":
            m, s, c = (d.t(f"requant.{k}") for k in ("multiplier_bits", "shift_bits", "clamp_bits"))
            shifter = s * math.ceil(math.log2(s))
            actions = {"requantize": d.mult(m, m) + d.add(m) + shifter * d.t("logic.mux2_pj") + 2 * d.add(c)}
            area = d.mult_area(m, m) + d.add_area(m) + shifter * mux_area + 2 * d.add_area(c)
        else:
            actions = {"compare": d.add(d.t("alu.compare_bits")), "add": d.add(d.t("alu.add_bits"))}
            area = d.add_area(d.t("alu.compare_bits"))
        actions["leak"] = logic(area)
        out[unit] = (actions, area, count)
    return out


def base_name(name):
    """'design.level[0..3]' -> ('level', 4)"""
    local = name.split(".", 1)[1]
    if "[" not in local:
        return local, 1
    base, rng = local[:-1].split("[")
    lo, hi = rng.split("..")
    return base, int(hi) - int(lo) + 1


# ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("design", DESIGNS)
def test_files_parse_in_accelergy_format(written, design):
    ert, art, ert_text, art_text = written[design]
    assert set(ert) == {"ERT"} and set(art) == {"ART"}
    assert str(ert["ERT"]["version"]) == "0.4" and str(art["ART"]["version"]) == "0.4"
    names = [t["name"] for t in ert["ERT"]["tables"]]
    assert len(names) == len(set(names)) and all(n.startswith(Design(design).name + ".") for n in names)
    for table in ert["ERT"]["tables"]:
        assert set(table) == {"name", "actions"} and table["actions"]
        for action in table["actions"]:
            assert set(action) == {"name", "arguments", "energy"}
            assert isinstance(action["arguments"], dict)
            assert isinstance(action["energy"], float) and math.isfinite(action["energy"]) and action["energy"] >= 0
    for table in art["ART"]["tables"]:
        assert set(table) == {"name", "area"} and table["area"] > 0
    # every component of the ART is in the ERT; DRAM has no area figure: left out, and the file says so
    assert {t["name"] for t in art["ART"]["tables"]} <= set(names)
    dram = f"{Design(design).name}.DRAM"
    assert dram in names and dram not in {t["name"] for t in art["ART"]["tables"]}
    assert "Left out, no area figure in the tables" in art_text and dram in art_text.split("ART:")[0]
    assert ert_text.startswith("# Accelergy energy reference table")


@pytest.mark.parametrize("design", DESIGNS)
def test_every_energy_and_area_equals_the_tables(written, design):
    ert, art, _, _ = written[design]
    want = expected(Design(design))
    areas = {t["name"]: t["area"] for t in art["ART"]["tables"]}
    seen = set()
    for table in ert["ERT"]["tables"]:
        base, instances = base_name(table["name"])
        actions, area, count = want[base]
        seen.add(base)
        assert instances == count, table["name"]
        got = {a["name"]: a["energy"] for a in table["actions"]}
        if "compute_fp32" in actions and "fp32_mult_pj" not in Design(design).tech["arith"]:
            actions.pop("compute_fp32")
        assert set(got) == set(actions), (table["name"], set(got) ^ set(actions))
        for name, pj in actions.items():
            assert got[name] == pytest.approx(pj, rel=1e-12, abs=1e-15), (table["name"], name)
        if area is None:
            assert table["name"] not in areas
        else:
            assert areas[table["name"]] == pytest.approx(area, rel=1e-12), table["name"]
    assert seen == set(want)


def test_the_designs_cover_every_kind_of_component(written):
    bases = {base_name(t["name"])[0] for d in DESIGNS for t in written[d][0]["ERT"]["tables"]}
    assert {"mac_pe", "xnor_pe", "qe", "ce", "qk", "ck", "lut", "requant", "alu", "DRAM"} <= bases
    eyeriss = {base_name(t["name"]) for t in written["eyeriss65"][0]["ERT"]["tables"]}
    # per-PE scratchpads, one per PE of the 12 x 14 array (a CACTI macro and two register files); 27 GLB banks
    assert {("filter_spad", 168), ("ifmap_spad", 168), ("psum_spad", 168), ("glb", 27)} <= eyeriss


TOPOLOGY = """Layer name, IFMAP Height, IFMAP Width, Filter Height, Filter Width, Channels, Num Filter, Strides,
conv1, 28, 28, 5, 5, 1, 6, 1,
conv2, 12, 12, 5, 5, 6, 16, 1,
fc1, 1, 1, 1, 1, 256, 120, 1,
"""


@pytest.mark.parametrize("design", ["tsmc90", "eyeriss65", "lowbit90"])
def test_the_cost_model_charges_these_figures(written, design, tmp_path):
    """Per layer, the cost model's SRAM, DRAM, leakage and clock energy = its counts x the ERT's figures."""
    from simulator.commands import load_network
    from simulator.hw.arch import load_hardware
    from simulator.hw.cost import estimate

    topo = tmp_path / "t.csv"
    topo.write_text(TOPOLOGY)
    workloads, _ = load_network(str(topo), (8, 8))
    batch = 2
    report = estimate(workloads, load_hardware(design), batch)
    ert = {base_name(t["name"])[0]: ({a["name"]: a["energy"] for a in t["actions"]}, base_name(t["name"])[1])
           for t in written[design][0]["ERT"]["tables"]}
    leak_per_cycle = sum(actions.get("leak", 0.0) * n for actions, n in ert.values())
    clock_per_cycle = sum(ert[pe][0]["clock"] * ert[pe][1] for pe in ("mac_pe",) if pe in ert)
    for layer in report.layers:
        e = layer.energy_pj
        assert e["leakage"] == pytest.approx(leak_per_cycle * layer.cycles / batch, rel=1e-9)
        assert e["clock"] == pytest.approx(clock_per_cycle * layer.cycles / batch, rel=1e-9)
        sram = sum(acc["reads"] * ert[lv][0]["read"] + acc["writes"] * ert[lv][0]["write"]
                   for lv, acc in layer.accesses.items())
        assert e["sram"] == pytest.approx(sram / batch, rel=1e-9)
        bits = sum(v["read"] + v["write"] for v in layer.dram_bits.values())
        assert e["dram"] == pytest.approx(bits * ert["DRAM"][0]["read"] / batch, rel=1e-9)


def test_existing_tables_are_replaced_whole(tmp_path):
    (tmp_path / "ERT.yaml").write_text("old")
    assert main(["tables", "--accelergy", str(tmp_path), "--hw", "generic45"]) == 0
    assert yaml.safe_load((tmp_path / "ERT.yaml").read_text())["ERT"]["tables"]
    assert sorted(os.listdir(tmp_path)) == ["ART.yaml", "ERT.yaml"]


def test_a_missing_directory_is_created(tmp_path):
    out = tmp_path / "a" / "b"
    assert main(["tables", "--accelergy", str(out), "--hw", str(HWCONFIGS / "tpu_like.yaml")]) == 0
    assert sorted(os.listdir(out)) == ["ART.yaml", "ERT.yaml"]


def test_unknown_design_is_one_error_line(tmp_path):
    out = tmp_path / "out"
    code, stdout, err = run_cli("tables", "--accelergy", out, "--hw", "no_such_design")
    assert code != 0 and stdout == ""
    one_error_line(err, "--hw", "no_such_design", "tsmc90")
    assert not out.exists()


def test_bad_design_file_names_file_and_field(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text((HWCONFIGS / "tsmc90.yaml").read_text().replace("value: 0.003125", "value: -1", 1))
    code, _, err = run_cli("tables", "--accelergy", tmp_path / "out", "--hw", bad)
    assert code != 0
    one_error_line(err, str(bad), "arith.add_pj_per_bit")
    assert not (tmp_path / "out").exists()


def test_out_dir_under_a_file_is_one_error_line(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code, _, err = run_cli("tables", "--accelergy", blocker / "sub", "--hw", "tsmc90")
    assert code != 0
    one_error_line(err, str(blocker / "sub"), "--accelergy")
    code, _, err = run_cli("tables", "--accelergy", blocker, "--hw", "tsmc90")
    assert code != 0
    one_error_line(err, str(blocker), "not a directory")
    assert blocker.read_text() == "x"


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root writes into read-only directories")
def test_unwritable_out_dir_is_one_error_line_and_no_files(tmp_path):
    out = tmp_path / "ro"
    out.mkdir()
    out.chmod(0o555)
    try:
        code, _, err = run_cli("tables", "--accelergy", out, "--hw", "tsmc90")
        assert code != 0
        one_error_line(err, str(out))
        assert os.listdir(out) == []
    finally:
        out.chmod(0o755)


def test_a_failed_commit_leaves_no_half_written_tables(tmp_path):
    """The second file cannot be written: neither file appears (staged together, committed together)."""
    (tmp_path / "ART.yaml").mkdir()          # a directory where ART.yaml should go
    code, _, err = run_cli("tables", "--accelergy", tmp_path, "--hw", "tsmc90")
    assert code != 0
    one_error_line(err, "ART.yaml")
    assert sorted(os.listdir(tmp_path)) == ["ART.yaml"] and not (tmp_path / "ERT.yaml").exists()


def test_a_design_the_model_cannot_clock_names_file_and_field(tmp_path):
    """Errors of the design's area and clock (they carry only a field) name the design's file too."""
    design = tmp_path / "noclock.yaml"
    design.write_text("""format: hwsim-arch/1
name: noclock
description: "a derived clock and no unit with a delay figure"
tech: tsmc90
architecture:
  clock: {mode: derived}
  pe_array:
    interconnect: systolic
    mac:
      rows: {value: 4, source: "t"}
      cols: {value: 4, source: "t"}
      a_bits: {value: 8, source: "t"}
      w_bits: {value: 8, source: "t"}
      acc_bits: {value: 32, source: "t"}
      register_bits: {value: 0, source: "t"}
  memory:
    rf: {holds: [weights, inputs, outputs], size_bytes: {value: 64, source: "t"}, word_bits: {value: 8, source: "t"},
         macro: registers}
  dram: {bandwidth_bits_per_cycle: {value: 8, source: "t"}, latency_cycles: {value: 1, source: "t"}}
""")
    code, _, err = run_cli("tables", "--accelergy", tmp_path / "out", "--hw", design)
    assert code != 0
    one_error_line(err, str(design), "architecture.clock.mode")
    assert not (tmp_path / "out").exists()
