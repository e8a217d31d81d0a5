"""hwsim sweep: spec validation, grid expansion and sampling, CSV columns and rows (equal to `hwsim run`'s
figures), resume, --jobs 1 vs a process pool, and a real dask.distributed cluster."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from simulator import cli, sweep

REPO = Path(__file__).resolve().parents[1]
U8 = str(REPO / "models" / "lenet_digits_u8.qnn")
KNQ = str(REPO / "models" / "lenet_digits_knq.qnn")
DIGITS = str(REPO / "models" / "digits_test.npz")
ROWS = "architecture.pe_array.mac.rows"     # a real --set path of every shipped design
BANKS = "memory.weight_sram.banks"          # tsmc90 (default architecture) and lowbit90 both have weight_sram


def write_spec(tmp_path, text: str, name: str = "spec.yaml") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def spec_text(models=(U8,), hw=("tsmc90", "lowbit90"), grid=None, extra="") -> str:
    grid = grid or {ROWS: [8, 16]}
    lines = [f"models: [{', '.join(models)}]", f"dataset: {DIGITS}", f"hw: [{', '.join(hw)}]", "grid:"]
    lines += [f"  {path}: {json.dumps(values)}" for path, values in grid.items()]
    return "\n".join(lines) + "\n" + extra


def run_sweep(spec_path, out, **kw) -> dict:
    return sweep.run_sweep(sweep.plan(sweep.load_spec(spec_path), out), out, quiet=True, **kw)


def read_rows(out) -> tuple[list, list]:
    with open(out, newline="") as f:
        rows = list(csv.reader(f))
    return rows[0], sorted(rows[1:])


# ------------------------------------------------------------------------------------------ spec errors

BAD_SPECS = [
    ("unknown key", spec_text(extra="gird: {a: [1]}\n"), "gird", "unknown key"),
    ("unknown path", spec_text(grid={"architecture.pe_array.rowz": [8, 16]}), "grid.architecture.pe_array.rowz",
     "no such field"),
    ("missing model", spec_text(models=(str(REPO / "models" / "nope.qnn"),)), "models[0]", "not found"),
    ("empty grid", spec_text().split("grid:")[0] + "grid: {}\n", "grid", "non-empty"),
    ("empty values", spec_text(grid={ROWS: []}), f"grid.{ROWS}", "non-empty list"),
    ("bad yaml", "models: [a\nhw: ]\n", "YAML syntax error", "YAML"),
    ("bad sample", spec_text(extra="sample: {n: 0}\n"), "sample.n", "integer >= 1"),
    ("missing hw", "models: [x.qnn]\ngrid: {dataflow: [os]}\n", "hw", "missing"),
    ("unknown design", spec_text(hw=("tsmc90", "no_such_design")), "hw[1]", "no hardware table"),
]


@pytest.mark.parametrize("case,text,field,words", BAD_SPECS, ids=[c[0] for c in BAD_SPECS])
def test_spec_errors_are_one_line_naming_spec_and_field(tmp_path, capsys, case, text, field, words):
    spec = write_spec(tmp_path, text)
    out = tmp_path / "r.csv"
    assert cli.main(["sweep", spec, "--out", str(out), "-q"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith(f"hwsim: error: {spec}"), err
    assert field in err and words in err, err
    assert not out.exists()   # nothing written before the spec is whole


def test_out_may_not_be_an_input(tmp_path, capsys):
    spec = write_spec(tmp_path, spec_text())
    assert cli.main(["sweep", spec, "--out", spec, "-q"]) == 2
    assert "input of the sweep" in capsys.readouterr().err


def test_dask_missing_names_the_extra(tmp_path, capsys, monkeypatch):
    import sys
    monkeypatch.setitem(sys.modules, "dask.distributed", None)   # import fails as when dask is not installed
    spec = write_spec(tmp_path, spec_text())
    assert cli.main(["sweep", spec, "--out", str(tmp_path / "r.csv"), "--dask", "local:1"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "'dask' extra" in err and 'pip install -e ".[dask]"' in err, err


# ------------------------------------------------------------------------------------------ points

def test_grid_expansion_order_and_seeded_sample():
    grid = {"a": [1, 2, 3], "b": ["x", "y"]}
    full = sweep.grid_points(grid, None)
    assert full == [(1, "x"), (1, "y"), (2, "x"), (2, "y"), (3, "x"), (3, "y")]
    sample = sweep.grid_points(grid, {"n": 4, "seed": 7})
    assert sample == sweep.grid_points(grid, {"n": 4, "seed": 7})           # reproducible
    assert len(set(sample)) == 4 and sorted(sample, key=full.index) == sample and set(sample) <= set(full)
    assert sweep.grid_points(grid, {"n": 99, "seed": 0}) == full              # n >= grid: every point once
    big = {p: list(range(1000)) for p in "abc"}                               # 1e9 points: never listed
    picked = sweep.grid_points(big, {"n": 5, "seed": 1})
    assert len(set(picked)) == 5 and picked == sweep.grid_points(big, {"n": 5, "seed": 1})
    assert picked != sweep.grid_points(big, {"n": 5, "seed": 2})


def test_plan_points_models_x_designs_x_grid(tmp_path):
    spec = write_spec(tmp_path, spec_text(models=(U8, KNQ), grid={ROWS: [8, 16, 32], "dataflow": ["os", "ws"]},
                                          extra="sample: {n: 4, seed: 0}\n"))
    plan = sweep.plan(sweep.load_spec(spec))
    assert len(plan.points) == 2 * 2 * 4
    assert plan.grid_paths == ["pe_array.mac.rows", "dataflow"]


def test_set_text_reads_back_as_the_same_value():
    from simulator.safeyaml import load_yaml
    for value in (16, 0.5, 1e-05, "os", "1e-5", "2024-01-01", ["weights", "inputs"], True, -3):
        assert load_yaml(sweep.set_text(value), "t") == value


# ------------------------------------------------------------------------------------------ rows

@pytest.fixture(scope="module")
def base_sweep(tmp_path_factory):
    """1 model x 2 designs x 2 points, here (--jobs 1); one point of lowbit90's is the shipped design."""
    tmp = tmp_path_factory.mktemp("sweep")
    spec = write_spec(tmp, spec_text())
    out = str(tmp / "r.csv")
    stats = run_sweep(spec, out, jobs=1)
    return spec, out, stats


def test_columns_extend_compare_csv(base_sweep, tmp_path):
    spec, out, stats = base_sweep
    assert stats == {**stats, "points": 4, "costed": 4, "skipped": 0, "errors": 0, "functional_runs": 1}
    header, rows = read_rows(out)
    assert header[:3] == ["model", "hw", ROWS] and header[-1] == "error"
    for col in ("accuracy", "energy_pj_per_inference", "cycles", "latency_s", "area_mm2", "edp_j_s",
                "throughput_inferences_per_s", "energy_dram_pj", "energy_sram_pj", "area_mac_pes_mm2"):
        assert col in header
    # compare --csv of the same designs: the same columns (a sweep may add area columns) and, for the points
    # at the designs' own array size, the same cells
    compare_out = tmp_path / "c.csv"
    assert cli.main(["compare", U8, "--hw", "tsmc90", "--hw", "lowbit90", "--dataset", DIGITS,
                     "--csv", str(compare_out), "-q"]) == 0
    with open(compare_out, newline="") as f:
        compare_rows = list(csv.DictReader(f))
    assert set(compare_rows[0]) <= set(header)
    with open(out, newline="") as f:
        ours = {(r["hw"], r[ROWS]): r for r in csv.DictReader(f)}
    for row in compare_rows:
        mine = ours[row["hw"], "16"]
        assert {k: mine[k] for k in row} == row


@pytest.mark.parametrize("hw,rows_value", [("tsmc90", 8), ("lowbit90", 16)])
def test_each_row_equals_hwsim_run(base_sweep, tmp_path, hw, rows_value):
    _, out, _ = base_sweep
    report = tmp_path / "run.json"
    assert cli.main(["run", U8, "--hw", hw, "--set", f"{ROWS}={rows_value}", "--dataset", DIGITS,
                     "--json", str(report), "-q"]) == 0
    rep = json.loads(report.read_text())
    with open(out, newline="") as f:
        row = next(r for r in csv.DictReader(f) if r["hw"] == rep["hw"]["name"] and r[ROWS] == str(rows_value))
    for key in ("energy_pj_per_inference", "cycles", "accuracy", "latency_s", "area_mm2", "edp_j_s"):
        assert row[key] == str(rep[key]), key
    assert row["error"] == ""


def test_the_issue_spec_with_the_short_array_path(tmp_path):
    """The spec as the issue writes it: `architecture.pe_array.rows` is the MAC array's rows (what --array and
    --set pe_array.rows set), and its rows equal those of the full path."""
    spec = write_spec(tmp_path, f"""models: [{U8}, {KNQ}]
dataset: {DIGITS}
hw: [tsmc90, lowbit90]
grid: {{architecture.pe_array.rows: [8, 16, 32]}}     # any path the report's `architecture` echoes
""")
    out = str(tmp_path / "short.csv")
    assert run_sweep(spec, out, jobs=1)["costed"] == 12
    full = write_spec(tmp_path, spec_text(models=(U8, KNQ), grid={ROWS: [8, 16, 32]}), "full.yaml")
    out_full = str(tmp_path / "full.csv")
    run_sweep(full, out_full, jobs=1)
    short_header, short_rows = read_rows(out)
    full_header, full_rows = read_rows(out_full)
    assert short_header == [ROWS.replace(".mac", "") if h == ROWS else h for h in full_header]
    assert short_rows == full_rows and not any(r[short_header.index("error")] for r in short_rows)


def test_failing_point_is_an_error_row(tmp_path):
    spec = write_spec(tmp_path, spec_text(hw=("tsmc90",), grid={BANKS: [0, 4]}))
    out = str(tmp_path / "r.csv")
    stats = run_sweep(spec, out, jobs=1)
    assert stats["costed"] == 2 and stats["errors"] == 1
    with open(out, newline="") as f:
        bad, good = sorted(csv.DictReader(f), key=lambda r: r[BANKS])
    assert "must be a positive integer" in bad["error"] and bad["energy_pj_per_inference"] == ""
    assert bad["model"] == "lenet_digits_u8" and bad["hw"] == "tsmc90"
    assert good["error"] == "" and float(good["energy_pj_per_inference"]) > 0


def test_resume_skips_rows_and_functional_runs(tmp_path):
    spec = write_spec(tmp_path, spec_text(models=(U8, KNQ), hw=("tsmc90",), grid={ROWS: [8, 16, 32]}))
    out = tmp_path / "r.csv"
    first = run_sweep(spec, str(out), jobs=1)
    assert first["costed"] == 6 and first["functional_runs"] == 2
    header, rows = read_rows(out)
    lines = out.read_text().splitlines(keepends=True)
    # keep the header, the three points of the first model and one of the second, and half a row (a kill
    # in the middle of a write)
    out.write_text("".join(lines[:5]) + lines[5][:20])
    again = run_sweep(spec, str(out), jobs=1)
    assert again["skipped"] == 4 and again["costed"] == 2
    assert again["functional_runs"] == 1      # the first model's points were all done: it is not run again
    assert read_rows(out) == (header, rows)
    done = run_sweep(spec, str(out), jobs=1)
    assert done["costed"] == 0 and done["functional_runs"] == 0
    assert read_rows(out) == (header, rows)


def test_another_sweeps_file_is_refused(base_sweep, tmp_path, capsys):
    _, out, _ = base_sweep
    spec = write_spec(tmp_path, spec_text(grid={ROWS: [8], "dataflow": ["os"]}))
    assert cli.main(["sweep", spec, "--out", out, "-q"]) == 2
    assert "another sweep's columns" in capsys.readouterr().err


def test_cli_summary_and_quiet(tmp_path, capsys):
    spec = write_spec(tmp_path, spec_text(hw=("tsmc90",), grid={ROWS: [8]}))
    out = str(tmp_path / "r.csv")
    assert cli.main(["sweep", spec, "--out", out, "--jobs", "1"]) == 0
    assert "1 points: 1 costed" in capsys.readouterr().out
    assert cli.main(["sweep", spec, "--out", out, "--jobs", "1", "-q"]) == 0
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""


# ------------------------------------------------------------------------------------------ parallel

def test_jobs_1_and_a_process_pool_give_the_same_rows(base_sweep, tmp_path, monkeypatch):
    spec, out, _ = base_sweep
    monkeypatch.setattr(sweep, "POOL_START_S", 0.0)   # start the workers even for this little work
    started = []

    class Pool(sweep._Pool):
        def __init__(self, jobs):
            started.append(jobs)
            super().__init__(jobs)
    monkeypatch.setattr(sweep, "_Pool", Pool)
    pooled = str(tmp_path / "pool.csv")
    stats = run_sweep(spec, pooled, jobs=2)
    assert started == [2]
    assert stats["costed"] == 4 and stats["errors"] == 0
    assert read_rows(pooled) == read_rows(out)


def test_dask_local_cluster_gives_the_same_rows(base_sweep, tmp_path):
    distributed = pytest.importorskip("distributed", reason='needs dask.distributed: pip install -e ".[dask]"')
    import logging
    spec, out, _ = base_sweep
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                                  silence_logs=logging.ERROR) as cluster:
        on_cluster = str(tmp_path / "dask.csv")
        stats = run_sweep(spec, on_cluster, dask=cluster.scheduler_address)
    assert stats["costed"] == 4 and stats["errors"] == 0
    assert read_rows(on_cluster) == read_rows(out)


def test_progress_bar_on_a_terminal_only(tmp_path, capsys, monkeypatch):
    import sys
    spec = write_spec(tmp_path, spec_text(hw=("tsmc90",), grid={ROWS: [8, 16]}))
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    assert cli.main(["sweep", spec, "--out", str(tmp_path / "a.csv"), "--jobs", "1"]) == 0
    assert "2/2" in capsys.readouterr().err                    # tqdm's count
    assert cli.main(["sweep", spec, "--out", str(tmp_path / "b.csv"), "--jobs", "1", "-q"]) == 0
    assert capsys.readouterr().err == ""
