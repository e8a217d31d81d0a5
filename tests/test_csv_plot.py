"""--csv of run / estimate / compare against their --json numbers, --quiet, and the figures (run --plot, hwsim
plot) with the Pareto front checked against a brute-force dominance test."""

import csv
import json
import math
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

from simulator.cli import main
from simulator.plots import pareto_front, point_labels
from test_cli import one_error_line

ROOT = Path(__file__).resolve().parents[1]
LENET = str(ROOT / "models" / "lenet_digits_u8.qnn")
VGG = str(ROOT / "models" / "topologies" / "vgg16.csv")
DIGITS = str(ROOT / "models" / "digits_test.npz")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

try:
    import matplotlib  # noqa: F401
    HAVE_MPL = True
except ImportError:
    HAVE_MPL = False
needs_mpl = pytest.mark.skipif(not HAVE_MPL, reason="matplotlib is not installed (the 'plot' extra: "
                                                    "python -m pip install -e \".[plot]\")")


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def close(a, b):
    return math.isclose(float(a), float(b), rel_tol=1e-12, abs_tol=1e-9)


@pytest.fixture(scope="module")
def lenet_run(tmp_path_factory):
    """One run of the shipped LeNet with every output: JSON, CSV and the figure (when matplotlib is here)."""
    d = tmp_path_factory.mktemp("run")
    args = ["run", LENET, "--hw", "tsmc90", "--json", str(d / "r.json"), "--csv", str(d / "r.csv")]
    if HAVE_MPL:
        args += ["--plot", str(d / "r.png")]
    assert main(args) == 0
    return d, json.loads((d / "r.json").read_text()), read_csv(d / "r.csv")


def check_layer_rows(rep, rows):
    """Every layer row and the total row of a run / estimate CSV carry the JSON report's numbers."""
    assert [r["layer"] for r in rows] == [lay["name"] for lay in rep["layers"]] + ["total"]
    for row, lay in zip(rows, rep["layers"]):
        assert row["op"] == lay["op"] and row["path"] == lay["path"]
        for key in ("macs", "gated_macs", "active_macs", "cycles", "compute_cycles", "utilization", "energy_pj"):
            assert close(row[key], lay[key]), key
        assert close(row["latency_s"], lay["cycles"] / rep["clock_hz"])
        for cat, value in lay["energy_breakdown_pj"].items():
            assert close(row[f"energy_{cat}_pj"], value), cat
        for cause, value in lay["stall_cycles"].items():
            assert close(row[f"stall_{cause.replace(':', '_')}_cycles"], value), cause
        for level, acc in lay["accesses"].items():
            assert close(row[f"{level}_reads_words"], acc["reads"])
            assert close(row[f"{level}_writes_words"], acc["writes"])
        assert close(row["dram_read_bits"], sum(t["read"] for t in lay["dram_bits"].values()))
    total = rows[-1]
    for key, rep_key in (("macs", "macs_per_inference"), ("cycles", "cycles"), ("latency_s", "latency_s"),
                         ("energy_pj", "energy_pj_per_inference"), ("gated_macs", "gated_macs_per_inference")):
        assert close(total[key], rep[rep_key]), key
    for cat, value in rep["energy_breakdown_pj"].items():
        assert close(total[f"energy_{cat}_pj"], value), cat
    # the totals are the layers' sums too (the report's figures add up)
    assert math.isclose(sum(float(r["energy_pj"]) for r in rows[:-1]), float(total["energy_pj"]), rel_tol=1e-9)
    assert sum(int(r["cycles"]) for r in rows[:-1]) == int(total["cycles"])


def test_run_csv_matches_json(lenet_run):
    _, rep, rows = lenet_run
    check_layer_rows(rep, rows)
    for row, lay in zip(rows, rep["layers"]):   # the engine's counts, run only
        for key in ("qe", "requants", "compares", "overflows", "zero_act_macs"):
            assert close(row[key], lay[key]), key
        assert row["output_encoding"] == lay["output_encoding"]
        assert row["output_shape"] == "x".join(map(str, lay["output_shape"]))
    assert all(col.endswith(("_pj", "_s", "_cycles", "_bits", "_words")) or col in (
        "layer", "op", "path", "macs", "gated_macs", "active_macs", "cycles", "utilization") or col in (
        "output_shape", "output_encoding", "weight_encoding", "datapath") or "macs" in col or col in (
        "popcount_words", "lut_reads", "qe", "ce", "qk", "ck", "requants", "compares", "adds", "muls", "overflows",
        "pair_saturations", "pair_saturated_outputs") for col in rows[0])


def test_estimate_csv_matches_json(tmp_path, capsys):
    rep_path, csv_path = tmp_path / "e.json", tmp_path / "e.csv"
    assert main(["estimate", VGG, "--hw", "tpu_like", "--json", str(rep_path), "--csv", str(csv_path)]) == 0
    rows = read_csv(csv_path)
    check_layer_rows(json.loads(rep_path.read_text()), rows)
    assert "qe" not in rows[0]    # no functional run: no engine counts


def test_compare_csv_one_row_per_design(tmp_path, capsys):
    rep_path, csv_path = tmp_path / "c.json", tmp_path / "c.csv"
    assert main(["compare", LENET, "--hw", "tsmc90", "--hw", "eyeriss65", "--dataset", DIGITS, "--limit", "50",
                 "--json", str(rep_path), "--csv", str(csv_path)]) == 0
    rep, rows = json.loads(rep_path.read_text()), read_csv(csv_path)
    assert [r["hw"] for r in rows] == [d["hw"]["name"] for d in rep["designs"]] == ["tsmc90", "eyeriss65"]
    for row, d in zip(rows, rep["designs"]):
        assert row["model"] == d["network"]["name"]
        assert close(row["accuracy"], rep["accuracy"])
        for key in ("energy_pj_per_inference", "cycles", "latency_s", "area_mm2", "edp_j_s", "clock_hz",
                    "throughput_inferences_per_s", "tops_per_w", "leakage_mw"):
            assert close(row[key], d[key]), key
        for cat, value in d["energy_breakdown_pj"].items():
            assert close(row[f"energy_{cat}_pj"], value)
        area = {k: float(v) for k, v in row.items() if k.startswith("area_") and k != "area_mm2"}
        assert math.isclose(sum(area.values()), d["area_mm2"], rel_tol=1e-9)


def test_quiet_prints_nothing_and_still_writes(tmp_path, capsys):
    csv_path = tmp_path / "e.csv"
    assert main(["estimate", VGG, "--hw", "tsmc90", "--csv", str(csv_path), "--quiet"]) == 0
    out, err = capsys.readouterr()
    assert out == "" and err == "" and csv_path.stat().st_size > 0
    assert main(["inspect", LENET, "-q"]) == 0
    assert capsys.readouterr().out == ""
    # errors still reach standard error
    assert main(["estimate", VGG, "--hw", "no_such_design", "-q"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.startswith("hwsim: error: ")


def test_every_subcommand_takes_quiet(capsys):
    from simulator.cli import build_parser

    sub = next(a for a in build_parser()._actions if a.dest == "command")
    for name, parser in sub.choices.items():
        assert any("--quiet" in a.option_strings for a in parser._actions), name


@pytest.mark.parametrize("target", ["missing-dir/r.csv", "afile/r.csv"])
def test_unwritable_csv_is_one_error_line(tmp_path, capsys, target):
    (tmp_path / "afile").write_text("a file, not a directory")
    path = tmp_path / target
    assert main(["estimate", VGG, "--hw", "tsmc90", "--csv", str(path)]) == 2
    out, err = capsys.readouterr()
    one_error_line(err, str(path))
    assert not path.exists()


# --------------------------------------------------------------------------------------------- figures

@needs_mpl
def test_run_plot_png(lenet_run):
    d, _, _ = lenet_run
    data = (d / "r.png").read_bytes()
    assert data.startswith(PNG_MAGIC) and len(data) > 10_000


@needs_mpl
def test_run_plot_svg_and_bad_extension(tmp_path, capsys):
    svg = tmp_path / "r.svg"
    assert main(["run", LENET, "--hw", "lowbit90", "--plot", str(svg), "-q"]) == 0
    assert capsys.readouterr().out == ""
    assert ET.parse(svg).getroot().tag == "{http://www.w3.org/2000/svg}svg"
    assert main(["run", LENET, "--hw", "tsmc90", "--plot", str(tmp_path / "r.pdf")]) == 2
    one_error_line(capsys.readouterr().err, "r.pdf", ".png or .svg")
    assert not (tmp_path / "r.pdf").exists()


@pytest.fixture(scope="module")
def results_csv(tmp_path_factory):
    """A results CSV as compare --csv writes it (shapes only: no accuracy) plus one as a sweep writes it."""
    d = tmp_path_factory.mktemp("plot")
    assert main(["compare", VGG, "--hw", "tsmc90", "--hw", "eyeriss65", "--hw", "tpu_like", "--hw", "lowbit90",
                 "--csv", str(d / "c.csv"), "-q"]) == 0
    sweep = d / "sweep.csv"
    with open(sweep, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["model", "hw", "accuracy", "energy_pj_per_inference", "cycles", "latency_s", "area_mm2",
                    "array"])
        for i, (acc, e, lat, area) in enumerate([(0.98, 3.0, 2e-6, 2.0), (0.97, 2.0, 3e-6, 1.0),
                                                 (0.96, 4.0, 4e-6, 3.0), (0.99, 5.0, 1e-6, 5.0)]):
            w.writerow(["lenet", "tsmc90", acc, e, 100 * (i + 1), lat, area, f"{8 * (i + 1)}x{8 * (i + 1)}"])
    return d / "c.csv", sweep


@needs_mpl
def test_plot_command_default_panels(results_csv, tmp_path, capsys):
    compare_csv, sweep = results_csv
    out = tmp_path / "front.png"
    assert main(["plot", str(sweep), "-o", str(out)]) == 0
    text = capsys.readouterr().out
    assert out.read_bytes().startswith(PNG_MAGIC)
    # energy (lower) vs accuracy (higher): (3, .98), (2, .97), (5, .99) are not dominated; (4, .96) is
    assert "energy_pj_per_inference vs accuracy: 4 points, 3 on the Pareto front" in text
    assert "array=8x8" in text and "array=24x24" not in text.split("accuracy:")[1].split("\n")[0]
    # the compare CSV has no accuracy (shapes only): that panel is left out, the other drawn
    assert main(["plot", str(compare_csv), "-o", str(tmp_path / "c.svg")]) == 0
    text = capsys.readouterr().out
    assert "vs accuracy: left out" in text and "latency_s vs area_mm2: 4 points" in text
    assert ET.parse(tmp_path / "c.svg").getroot().tag.endswith("svg")


@needs_mpl
def test_plot_command_one_panel_and_errors(results_csv, tmp_path, capsys):
    compare_csv, sweep = results_csv
    out = tmp_path / "one.png"
    assert main(["plot", str(compare_csv), str(sweep), "--x", "cycles", "--y", "energy_pj_per_inference",
                 "-o", str(out), "-q"]) == 0
    assert capsys.readouterr().out == "" and out.read_bytes().startswith(PNG_MAGIC)
    assert main(["plot", str(sweep), "--x", "cycles", "--y", "nope", "-o", str(out)]) == 2
    one_error_line(capsys.readouterr().err, "nope", "--y")
    assert main(["plot", str(sweep), "--x", "cycles", "-o", str(out)]) == 2
    one_error_line(capsys.readouterr().err, "--y")
    assert main(["plot", str(sweep), "-o", str(tmp_path / "f.jpg")]) == 2
    one_error_line(capsys.readouterr().err, "f.jpg", ".png or .svg")
    (tmp_path / "bad.csv").write_bytes(b"model,hw\n\xff\xfe\n")
    assert main(["plot", str(tmp_path / "bad.csv"), "-o", str(out)]) == 2
    one_error_line(capsys.readouterr().err, "bad.csv")


def test_missing_matplotlib_says_which_extra(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)   # import matplotlib now raises ImportError
    for args in (["run", LENET, "--hw", "tsmc90", "--plot", str(tmp_path / "r.png")],
                 ["plot", str(tmp_path / "any.csv"), "-o", str(tmp_path / "p.png")]):
        assert main(args) != 0
        one_error_line(capsys.readouterr().err, "'plot' extra", 'python -m pip install -e ".[plot]"')
    assert not list(tmp_path.iterdir())


# --------------------------------------------------------------------------------------------- Pareto

def brute_force_front(xs, ys, maximize):
    """O(n^2): a point is on the front unless another is at least as good in both and better in one."""
    def better_eq(a, b, up):
        return a >= b if up else a <= b

    front = []
    for i in range(len(xs)):
        dominated = any(better_eq(xs[j], xs[i], maximize[0]) and better_eq(ys[j], ys[i], maximize[1])
                        and (xs[j], ys[j]) != (xs[i], ys[i]) for j in range(len(xs)))
        front.append(not dominated)
    return front


coords = st.one_of(st.integers(-5, 5), st.floats(-1e6, 1e6, allow_nan=False))


@settings(max_examples=400, deadline=None)
@given(st.lists(st.tuples(coords, coords), max_size=40), st.booleans(), st.booleans())
def test_pareto_front_matches_brute_force(points, max_x, max_y):
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    assert pareto_front(xs, ys, (max_x, max_y)) == brute_force_front(xs, ys, (max_x, max_y))


def test_pareto_front_small_cases():
    assert pareto_front([], []) == []
    assert pareto_front([1, 1], [2, 2]) == [True, True]          # duplicates do not dominate each other
    assert pareto_front([1, 2, 3], [3, 2, 1]) == [True, True, True]
    assert pareto_front([1, 2], [1, 2]) == [True, False]
    assert pareto_front([1, 2], [1, 2], (False, True)) == [True, True]   # energy down, accuracy up


def test_point_labels_show_what_varies():
    columns = ["model", "hw", "accuracy", "energy_pj_per_inference", "energy_mac_pj", "array", "bits"]
    rows = [{"model": "m", "hw": "a", "array": "8x8", "bits": "8", "energy_mac_pj": "1"},
            {"model": "m", "hw": "b", "array": "16x16", "bits": "8", "energy_mac_pj": "2"}]
    assert point_labels(columns, rows) == ["a/array=8x8", "b/array=16x16"]


def test_csv_cells_from_files_cannot_be_formulas():
    from simulator.csvout import _csv_text

    text = _csv_text(["layer", "macs"], [{"layer": "=HYPERLINK(1)", "macs": -3}, {"layer": "a,b\nc", "macs": None}])
    rows = list(csv.reader(text.splitlines(keepends=True)))
    assert rows == [["layer", "macs"], ["'=HYPERLINK(1)", "-3"], ["a,b\nc", ""]]


@needs_mpl
def test_plot_names_from_files_and_missing_columns(tmp_path, capsys):
    """Names are drawn as text, never parsed as mathtext; a default panel whose column is absent is left out."""
    path = tmp_path / "odd.csv"
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["hw", "latency_s", "area_mm2"])
        w.writerows([["$\\frac{", 1e-6, 2.0], ["=1+2\n\x1b[31m", 2e-6, 1.0], ["x", "n/a", 1.0], ["y", 3e-6, 3.0]])
    out = tmp_path / "odd.png"
    assert main(["plot", str(path), "-o", str(out)]) == 0
    text = capsys.readouterr().out
    assert "vs accuracy: left out, no column 'energy_pj_per_inference'" in text
    assert "latency_s vs area_mm2: 3 points, 2 on the Pareto front" in text and "\x1b" not in text
    assert out.read_bytes().startswith(PNG_MAGIC)
