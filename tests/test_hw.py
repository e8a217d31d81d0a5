"""Tech tables (loader, validation, shipped tables, node scaling) and the energy model."""

from __future__ import annotations

import copy
import csv
import json
import math
from collections import Counter
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from simulator.errors import HwsimError
from simulator.hw import CATEGORIES, estimate_energy, load_techtable, resolve_hw_path
from simulator.hw.techtable import shipped_hwconfigs_dir
from simulator.trace import LayerCounts, Trace

REPO = Path(__file__).resolve().parents[1]
GENERIC45 = REPO / "hwconfigs" / "generic45.yaml"
TSMC90 = REPO / "hwconfigs" / "tsmc90.yaml"
CACTI_CSV = Path("/work/shared/reference-data/cacti7_sram_64bit_word.csv")


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


# ----------------------------------------------------------------------------------------------------------
# Energy of a hand-built trace, computed by hand from the literature numbers (generic45).

# 45 nm figures, typed in again here so the test does not read them through the code under test.
C2, C1, CADD = 0.002994791667, 0.001041666667, 0.003125     # QTools fits of Horowitz 2014
MUX2, XNOR2, FA = 0.00385, 0.004, 0.004                      # NanGate 45 midpoints
QE, CE, QK_CMP, CK = 0.202294, 0.0810740, 0.0631706, 1.06543
W_RD, A_RD, A_WR = 28.9844 / 64, 14.9248 / 64, 12.6898 / 64   # CACTI 45 nm HP 64 KB / 32 KB
DRAM = 20.3125


def _hand_trace(batch=2) -> Trace:
    b = batch   # every count below is per inference x batch
    conv = LayerCounts("conv1", "conv", macs=Counter({(8, 8): 1000 * b, (4, 8): 500 * b}), acc_bits=24,
                       qe=10 * b, ce=20 * b, qk=5 * b, qk_comparators=15, ck=7 * b, requants=30 * b,
                       compares=40 * b, adds=50 * b, weight_bits={"w1": 800 * b, "b1": 96 * b},
                       input_bits={"x": 1600 * b}, output_bits={"y1": 2400 * b}, batch=b)
    binary = LayerCounts("bin2", "binary_conv", binary_macs=6400 * b, popcount_words=100 * b,
                         popcount_word_bits=64, acc_bits=16, lut_reads=12 * b, lut_entries=16, lut_width_bits=8,
                         weight_bits={"w2": 6400 * b}, input_bits={"y1": 2400 * b},
                         output_bits={"y2": 320 * b}, batch=b)
    return Trace([conv, binary], batch=b, dram_input_bits=1600 * b, dram_output_bits=80 * b)


def _hand_energy() -> dict:
    mac88 = C2 * 64 + C1 * 8 + CADD * 24
    mac48 = C2 * 32 + C1 * math.sqrt(32) + CADD * 24
    conv = {
        "mac": 1000 * mac88 + 500 * mac48,
        "popcount": 0.0,
        "lut": 0.0,
        "converters": 10 * QE + 20 * CE + 5 * 15 * QK_CMP + 7 * CK,
        # 32x32 multiply + 32-bit rounding add + 32-bit barrel shifter (32*5 MUX2) + two 32-bit compares
        "requant": 30 * (C2 * 1024 + C1 * 32 + CADD * 32 + 32 * 5 * MUX2 + 2 * CADD * 32),
        "other_alu": 40 * CADD * 16 + 50 * CADD * 16,
        "sram": 896 * W_RD + 1600 * A_RD + 2400 * A_WR,
        "dram": 0.0,
    }
    binary = {
        "mac": 0.0,
        # 64 XNOR2 + 57 full adders + 16-bit accumulate, per word
        "popcount": 100 * (64 * XNOR2 + 57 * FA + 16 * CADD),
        "lut": 12 * (15 * 8 * MUX2),
        "converters": 0.0, "requant": 0.0, "other_alu": 0.0,
        "sram": 6400 * W_RD + 2400 * A_RD + 320 * A_WR,
        "dram": 0.0,
    }
    io = {c: 0.0 for c in CATEGORIES}
    io["dram"] = (1600 + 80) * DRAM
    return {"conv1": conv, "bin2": binary, "io": io}


def test_energy_matches_hand_computation(g45):
    report = estimate_energy(_hand_trace(batch=2), g45)
    hand = _hand_energy()
    assert report.per == "inference" and report.batch == 2
    assert [layer.name for layer in report.layers] == ["conv1", "bin2"]
    for layer in report.layers:
        for c in CATEGORIES:
            assert layer.energy_pj[c] == pytest.approx(hand[layer.name][c], rel=1e-6), (layer.name, c)
    for c in CATEGORIES:
        assert report.chip_io.energy_pj[c] == pytest.approx(hand["io"][c], rel=1e-9)
    total = sum(sum(part.values()) for part in hand.values())
    assert report.total_energy_pj == pytest.approx(total, rel=1e-6)
    for c in CATEGORIES:
        assert report.energy_pj[c] == pytest.approx(sum(part[c] for part in hand.values()), rel=1e-6)


def test_categories_sum_to_total_and_rows_are_traceable(g45, t90):
    for table in (g45, t90):
        report = estimate_energy(_hand_trace(), table)
        assert set(report.energy_pj) == set(CATEGORIES)
        assert sum(report.energy_pj.values()) == pytest.approx(report.total_energy_pj, rel=1e-12)
        for layer in (*report.layers, report.chip_io):
            assert sum(layer.energy_pj.values()) == pytest.approx(layer.total_energy_pj, rel=1e-12)
            assert sum(e.energy_pj for e in layer.events) == pytest.approx(layer.total_energy_pj, rel=1e-12)
            for event in layer.events:
                assert event.rows and all(row in table.rows for row in event.rows)
                assert event.energy_pj == pytest.approx(event.count * event.pj_per_event)
        for c in CATEGORIES:
            assert bool(report.rows_used[c]) == (report.energy_pj[c] > 0), c
        assert "arith.mult_pj_per_bit2" in report.rows_used["mac"]
        assert "sram.weights.read_pj_per_access" in report.rows_used["sram"]
        assert "converters.qk_pj_per_comparator" in report.assumptions_used
        assert "alu.compare_bits" in report.assumptions_used
        assert "arith.add_pj_per_bit" not in report.assumptions_used
        assert set(report.row_sources) == {r for rows in report.rows_used.values() for r in rows}
        assert report.memory_model.startswith("compulsory: each weight, input and output moved once")
        assert "weights are resident on chip" in report.memory_model
        assert "leakage" in report.leakage_model and "not costed" in report.leakage_model
        json.dumps(report.to_dict())
    report90 = estimate_energy(_hand_trace(), t90)
    assert "scaling.from_v" in report90.assumptions_used    # scaled rows carry the scaling rule
    assert "scaling.to_v" in report90.rows_used["mac"]


def test_weights_off_chip_charge_dram_and_sram_fill(tmp_path):
    data = _raw()
    data["dram"]["weights_on_chip"] = False
    table = load_techtable(_write(tmp_path, data, "offchip.yaml"))
    report = estimate_energy(_hand_trace(batch=1), table)
    weight_bits = 896 + 6400
    assert report.energy_pj["dram"] == pytest.approx((weight_bits + 1600 + 80) * DRAM)
    on_chip = estimate_energy(_hand_trace(batch=1), load_techtable(GENERIC45))
    assert report.energy_pj["sram"] - on_chip.energy_pj["sram"] == pytest.approx(weight_bits * 17.1907 / 64)
    assert "not resident" in report.memory_model


def test_trace_inconsistencies_are_reported(g45):
    bad = Trace([LayerCounts("c", "conv", macs=Counter({(8, 8): 10}), acc_bits=0)])
    with pytest.raises(HwsimError, match=r"trace: layers\[0\] \(c\)\.acc_bits: must be a positive integer"):
        estimate_energy(bad, g45)
    bad = Trace([LayerCounts("k", "conv", qk=3, qk_comparators=0)])
    with pytest.raises(HwsimError, match="qk_comparators"):
        estimate_energy(bad, g45)
    bad = Trace([LayerCounts("n", "conv", adds=-1)])
    with pytest.raises(HwsimError, match="non-negative count"):
        estimate_energy(bad, g45)


def test_empty_trace_costs_nothing(g45):
    report = estimate_energy(Trace(), g45)
    assert report.total_energy_pj == 0 and report.assumptions_used == []


@settings(max_examples=60, deadline=None)
@given(macs=st.dictionaries(st.tuples(st.integers(1, 16), st.integers(1, 16)), st.integers(0, 10**9),
                            max_size=4),
       acc=st.integers(8, 48), words=st.integers(0, 10**6), word_bits=st.sampled_from([8, 32, 64, 128]),
       conv=st.lists(st.integers(0, 10**6), min_size=4, max_size=4), comparators=st.integers(1, 255),
       bits=st.lists(st.integers(0, 10**9), min_size=3, max_size=3), batch=st.integers(1, 8))
def test_energy_is_linear_and_sums(macs, acc, words, word_bits, conv, comparators, bits, batch):
    table = load_techtable(TSMC90)

    def trace(scale):
        layer = LayerCounts("l", "conv", macs=Counter({k: v * scale for k, v in macs.items()}), acc_bits=acc,
                            popcount_words=words * scale, popcount_word_bits=word_bits,
                            qe=conv[0] * scale, ce=conv[1] * scale, qk=conv[2] * scale, ck=conv[3] * scale,
                            qk_comparators=comparators, weight_bits={"w": bits[0] * scale},
                            input_bits={"x": bits[1] * scale}, output_bits={"y": bits[2] * scale}, batch=batch)
        return Trace([layer], batch=batch, dram_input_bits=bits[1] * scale)

    one, two = estimate_energy(trace(1), table), estimate_energy(trace(2), table)
    assert sum(one.energy_pj.values()) == pytest.approx(one.total_energy_pj, rel=1e-9)
    assert two.total_energy_pj == pytest.approx(2 * one.total_energy_pj, rel=1e-9)
    assert all(v >= 0 for v in one.energy_pj.values())
