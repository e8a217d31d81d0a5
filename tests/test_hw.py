"""Tech tables (loader, validation, shipped tables, node scaling) and the energy model."""

from __future__ import annotations

import copy
import csv
import math
from pathlib import Path

import pytest
import yaml

from simulator.errors import HwsimError
from simulator.hw import load_techtable, resolve_hw_path
from simulator.hw.techtable import shipped_hwconfigs_dir

REPO = Path(__file__).resolve().parents[1]
GENERIC45 = REPO / "hwconfigs" / "generic45.yaml"
TSMC90 = REPO / "hwconfigs" / "tsmc90.yaml"
CACTI_CSV = REPO / "hwconfigs" / "reference-data" / "cacti7_sram_64bit_word.csv"   # docs/references.md §3


@pytest.fixture(scope="module")
def g45():
    return load_techtable(GENERIC45)


@pytest.fixture(scope="module")
def t90():
    return load_techtable(TSMC90)


def _raw(path=GENERIC45) -> dict:
    return yaml.safe_load(path.read_text())


def _write(tmp_path, data, name="bad.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _error_line(path) -> str:
    with pytest.raises(HwsimError) as info:
        load_techtable(path)
    return info.value.line()


# ----------------------------------------------------------------------------------------------------------
# Shipped tables.


def test_shipped_tables_load(g45, t90):
    assert g45.name == "generic45" and g45.node.feature_nm.value == 45 and g45.scaling is None
    assert t90.name == "tsmc90" and t90.node.feature_nm.value == 90
    for table in (g45, t90):
        assert table.rows, "no figures"
        for row, fig in table.rows.items():
            assert fig.row == row and fig.source.strip()
            assert math.isfinite(fig.value) and fig.value >= 0


def test_converter_figures_from_seed_004(t90):
    cv = t90.converters
    assert (cv.qe_area_um2.value, cv.ce_area_um2.value, cv.qk_area_um2.value, cv.ck_area_um2.value) == \
        (776, 311, 7512, 4087)
    assert (cv.qe_delay_ns.value, cv.ce_delay_ns.value, cv.qk_delay_ns.value, cv.ck_delay_ns.value) == \
        (0.43, 0.25, 0.65, 0.31)
    # Seed 004 gives no energy: every converter energy must say it is an assumption / derived.
    for fig in (cv.qe_pj, cv.ce_pj, cv.qk_pj_per_comparator, cv.ck_pj):
        assert fig.assumption and "derived" in fig.source
    # energy = area x (0.1 pJ / 137 um2) x 2.88 / 2.8, with QK split over its 31 comparators
    density_90 = 0.1 / 137 * 2.88 / 2.8
    assert cv.qe_pj.value == pytest.approx(776 * density_90, rel=1e-5)
    assert cv.ce_pj.value == pytest.approx(311 * density_90, rel=1e-5)
    assert cv.qk_pj_per_comparator.value * 31 == pytest.approx(7512 * density_90, rel=1e-5)
    assert cv.ck_pj.value == pytest.approx(4087 * density_90, rel=1e-5)


@pytest.mark.skipif(not CACTI_CSV.exists(), reason="shared CACTI reference CSV not present")
@pytest.mark.parametrize("path, nm", [(GENERIC45, 45), (TSMC90, 90)])
def test_sram_macros_match_cacti_csv(path, nm):
    table = load_techtable(path)
    with CACTI_CSV.open() as f:
        rows = list(csv.DictReader(f))
    for macro in (table.sram.weights, table.sram.activations):
        match = [r for r in rows if r["cell_type"] == macro.cell_type and int(r["tech_nm"]) == nm
                 and int(r["size_bytes"]) == macro.size_bytes.value]
        assert len(match) == 1
        r = match[0]
        assert int(r["word_bits"]) == macro.word_bits.value
        for key, fig in (("read_pj", macro.read_pj_per_access), ("write_pj", macro.write_pj_per_access),
                         ("leakage_mw", macro.leakage_mw), ("area_mm2", macro.area_mm2),
                         ("access_ns", macro.access_ns), ("cycle_ns", macro.cycle_ns)):
            assert fig.value == pytest.approx(float(r[key]), rel=1e-9), (macro.row, key)


# ----------------------------------------------------------------------------------------------------------
# Node scaling: the 90 nm arithmetic is the 45 nm arithmetic x the rule in tsmc90.yaml.


def test_scaling_rule_reproduces_90nm_from_45nm(g45, t90):
    energy_factor = (90 / 45) * (1.2 / 1.0) ** 2          # C ~ feature size, V 1.0 -> 1.2 V
    area_factor = 2.8                                       # Stillmaker & Baas 2017
    assert energy_factor == pytest.approx(2.88)
    assert t90.scaling.energy_factor == pytest.approx(energy_factor)
    scaled = [fig for fig in t90.rows.values() if fig.scale is not None]
    # Leakage density is a property of each node's devices (each table derives its own from CACTI), not scaled.
    assert {fig.row for fig in scaled} == {row for row in g45.rows
                                           if row.startswith(("arith.", "logic.")) and "leakage" not in row}
    for fig in scaled:
        at45 = g45.figure(fig.row).value
        assert fig.written_value == at45, fig.row
        factor = energy_factor if fig.scale == "energy" else area_factor
        assert fig.value == pytest.approx(at45 * factor, rel=1e-12), fig.row
        assert "scaling.from_v" in fig.depends_on or "scaling.area_factor" in fig.depends_on
    # 8b x 8b multiply (Horowitz 0.2 pJ at 45 nm) -> 0.576 pJ at 90 nm
    ar = t90.arith
    assert ar.mult_pj_per_bit2.value * 64 + ar.mult_pj_per_bit.value * 8 == pytest.approx(0.2 * 2.88)
    # The converters go the other way (90 nm measured, 45 nm derived); the two tables must agree.
    for name in ("qe", "ce", "ck"):
        assert t90.figure(f"converters.{name}_pj").value == pytest.approx(
            g45.figure(f"converters.{name}_pj").value * energy_factor, rel=1e-5)
    assert t90.converters.qk_pj_per_comparator.value == pytest.approx(
        g45.converters.qk_pj_per_comparator.value * energy_factor, rel=1e-5)
    for name in ("qe", "ce", "qk", "ck"):
        assert t90.figure(f"converters.{name}_area_um2").value == pytest.approx(
            g45.figure(f"converters.{name}_area_um2").value * area_factor, rel=1e-5)


# ----------------------------------------------------------------------------------------------------------
# Loader rejections: one line naming the file and the field.


def _set(data, dotted, value):
    *parents, last = dotted.split(".")
    node = data
    for key in parents:
        node = node[key]
    node[last] = value


def _delete(data, dotted):
    *parents, last = dotted.split(".")
    node = data
    for key in parents:
        node = node[key]
    del node[last]


BAD_CASES = [
    # (what, mutate(data), field, message start)
    ("missing figure", lambda d: _delete(d, "arith.add_pj_per_bit"),
     "arith.add_pj_per_bit", "missing required field"),
    ("missing section", lambda d: _delete(d, "dram"), "dram", "missing required field"),
    ("missing value", lambda d: _delete(d, "logic.mux2_pj.value"), "logic.mux2_pj.value",
     "missing required field"),
    ("negative", lambda d: _set(d, "sram.weights.read_pj_per_access.value", -4),
     "sram.weights.read_pj_per_access", "must be a non-negative number, got -4"),
    ("nan", lambda d: _set(d, "arith.add_pj_per_bit.value", float("nan")),
     "arith.add_pj_per_bit", "must be a non-negative number, got nan"),
    ("inf", lambda d: _set(d, "dram.pj_per_bit.value", float("inf")),
     "dram.pj_per_bit", "must be a non-negative number, got inf"),
    ("string for number", lambda d: _set(d, "arith.mult_pj_per_bit.value", "0.001"),
     "arith.mult_pj_per_bit", "must be a non-negative number, got '0.001' (a string)"),
    ("bool for number", lambda d: _set(d, "logic.xnor2_pj.value", True),
     "logic.xnor2_pj", "must be a non-negative number, got true (a boolean)"),
    ("number without source", lambda d: _set(d, "arith.add_pj_per_bit", 0.003125),
     "arith.add_pj_per_bit", "must be a mapping {value: ..., source: '...'} (every number needs a source)"),
    ("missing source", lambda d: _delete(d, "converters.qe_pj.source"), "converters.qe_pj.source",
     "missing required field"),
    ("empty source", lambda d: _set(d, "converters.qe_pj.source", "  "), "converters.qe_pj.source",
     "must be a non-empty string"),
    ("unknown top-level key", lambda d: d.update(dramm={}), "dramm", "unknown field; did you mean 'dram'?"),
    ("unknown section key", lambda d: _set(d, "arith.add_pj_per_bitt", {"value": 1, "source": "x"}),
     "arith.add_pj_per_bitt", "unknown field; did you mean 'add_pj_per_bit'?"),
    ("unknown figure key", lambda d: _set(d, "arith.add_pj_per_bit.sorce", "typo"),
     "arith.add_pj_per_bit.sorce", "unknown field; did you mean 'source'?"),
    ("non-integer count", lambda d: _set(d, "requant.multiplier_bits.value", 32.5),
     "requant.multiplier_bits", "must be a positive integer, got 32.5"),
    ("zero word width", lambda d: _set(d, "sram.activations.word_bits.value", 0),
     "sram.activations.word_bits", "must be a positive integer, got 0"),
    ("assumption not bool", lambda d: _set(d, "alu.add_bits.assumption", "yes"),
     "alu.add_bits.assumption", "must be true or false, got 'yes' (a string)"),
    ("flag not bool", lambda d: _set(d, "dram.weights_on_chip", 1),
     "dram.weights_on_chip", "must be true or false, got 1"),
    ("scale without rule", lambda d: _set(d, "arith.add_pj_per_bit.scale", "energy"),
     "arith.add_pj_per_bit.scale", "needs a top-level 'scaling:' section"),
    ("bad format", lambda d: _set(d, "format", "v2"), "format", "must be 'hwsim-techtable/1'"),
    ("section not a mapping", lambda d: _set(d, "sram", [1, 2]), "sram", "must be a mapping, got a list"),
]


@pytest.mark.parametrize("what, mutate, field, message", BAD_CASES, ids=[c[0] for c in BAD_CASES])
def test_loader_rejects(tmp_path, what, mutate, field, message):
    data = copy.deepcopy(_raw())
    mutate(data)
    path = _write(tmp_path, data)
    line = _error_line(path)
    assert line.startswith(f"{path}: {field}: {message}"), line


TSMC_BAD = [
    ("energy scale on an area row", lambda d: _set(d, "logic.mux2_area_um2.scale", "energy"),
     "logic.mux2_area_um2.scale", "'energy' scaling applies only to energy figures"),
    ("unknown scale", lambda d: _set(d, "logic.mux2_pj.scale", "voltage"),
     "logic.mux2_pj.scale", "must be 'energy' or 'area'"),
    ("scaling target != node", lambda d: _set(d, "scaling.to_nm.value", 65),
     "scaling.to_nm", "must equal node.feature_nm (90), got 65"),
    ("scaled scaling rule", lambda d: _set(d, "scaling.area_factor.scale", "area"),
     "scaling.area_factor.scale", "the scaling rule itself cannot be scaled"),
    ("zero voltage", lambda d: _set(d, "scaling.from_v.value", 0),
     "scaling.from_v", "must be a positive number, got 0"),
]


@pytest.mark.parametrize("what, mutate, field, message", TSMC_BAD, ids=[c[0] for c in TSMC_BAD])
def test_loader_rejects_scaling_errors(tmp_path, what, mutate, field, message):
    data = copy.deepcopy(_raw(TSMC90))
    mutate(data)
    path = _write(tmp_path, data)
    line = _error_line(path)
    assert line.startswith(f"{path}: {field}: {message}"), line


def test_loader_rejects_exponent_written_as_string(tmp_path):
    text = GENERIC45.read_text().replace("value: 0.003125\n", "value: 3125e-6\n", 1)
    assert "3125e-6" in text
    path = tmp_path / "exp.yaml"
    path.write_text(text)       # YAML 1.1 (PyYAML) reads 3125e-6 (no decimal point) as a string
    line = _error_line(path)
    assert line.startswith(f"{path}: arith.add_pj_per_bit: must be a non-negative number, got '3125e-6'")
    assert "write 1.0e-3" in line


def test_loader_rejects_unreadable_and_malformed_files(tmp_path):
    missing = tmp_path / "nope.yaml"
    assert _error_line(missing).startswith(f"{missing}: cannot read file")
    broken = tmp_path / "broken.yaml"
    broken.write_text("node: {name: x\narith: [\n")
    assert _error_line(broken).startswith(f"{broken}: YAML syntax error")
    listing = tmp_path / "list.yaml"
    listing.write_text("- 1\n- 2\n")
    assert _error_line(listing) == f"{listing}: must be a mapping, got a list"
    python_tag = tmp_path / "tag.yaml"
    python_tag.write_text("format: !!python/object/apply:os.system ['true']\n")
    assert _error_line(python_tag).startswith(f"{python_tag}: YAML syntax error")


def test_assumption_flag_is_kept(g45, t90):
    assert g45.alu.compare_bits.assumption and "[ASSUMPTION]" in g45.alu.compare_bits.describe()
    assert not g45.arith.add_pj_per_bit.assumption
    assert t90.scaling.from_v.assumption
    assert "x2.88" in t90.arith.add_pj_per_bit.describe()


# ----------------------------------------------------------------------------------------------------------
# resolve_hw_path.


def test_resolve_three_spellings_from_repo_root(monkeypatch):
    monkeypatch.chdir(REPO)
    for arg in ("tsmc90", "tsmc90.yaml", "hwconfigs/tsmc90.yaml"):
        path = resolve_hw_path(arg)
        assert path.resolve() == TSMC90.resolve(), arg
        assert load_techtable(path).name == "tsmc90"


def test_resolve_falls_back_to_shipped_tables(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)           # no ./hwconfigs here
    for arg in ("generic45", "generic45.yaml"):
        path = resolve_hw_path(arg)
        assert path.parent.resolve() == shipped_hwconfigs_dir().resolve()
        assert path.name == "generic45.yaml"
    given = tmp_path / "mine.yaml"
    given.write_text(GENERIC45.read_text())
    assert resolve_hw_path(str(given)) == given


def test_resolve_prefers_local_hwconfigs(tmp_path, monkeypatch):
    local = tmp_path / "hwconfigs"
    local.mkdir()
    (local / "tsmc90.yaml").write_text(TSMC90.read_text())
    (local / "custom.yaml").write_text(GENERIC45.read_text())
    monkeypatch.chdir(tmp_path)
    for arg in ("tsmc90", "tsmc90.yaml", "hwconfigs/tsmc90.yaml"):
        assert resolve_hw_path(arg).resolve() == (local / "tsmc90.yaml").resolve(), arg
    assert resolve_hw_path("custom").resolve() == (local / "custom.yaml").resolve()


def test_resolve_unknown_lists_shipped_names(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(HwsimError) as info:
        resolve_hw_path("tsmc28")
    line = info.value.line()
    assert line.startswith("--hw: no hardware table 'tsmc28'")
    assert "generic45" in line and "tsmc90" in line
