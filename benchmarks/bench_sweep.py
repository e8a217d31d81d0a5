"""Sweep benchmark: a 100-point architecture sweep of the digits model, whole command wall time.

Target (the "Ecosystem" issue): `hwsim sweep` of 1 model x 2 designs x 50 grid points (MAC array rows x
columns), on the 540-image digits test set, finishes in under 20 s on a 2-core machine.

Every figure is a fresh process running the whole command (`hwsim sweep SPEC --out NEW.csv -q`: imports, the
functional run, 100 cost points, the CSV), the median of --runs runs:
- default: no --jobs (CPU count); the sweep starts worker processes only when the work left outweighs their
  start-up (simulator/sweep.py, POOL_START_S), which 100 LeNet points do not;
- jobs1: --jobs 1, every point in the one process;
- pool: worker processes forced from the start (POOL_START_S = 0), what a larger sweep uses;
- resume: the same command on the finished CSV (every point skipped, no functional run);
- dask_local2: --dask local:2 (a LocalCluster of 2 worker processes started by the command), once, when
  dask.distributed is installed; starting a cluster costs seconds, which pays off on many machines only.
The target is judged on `default`, the command as a user types it.
The load average is saved with the figures: another busy process on a 2-core machine slows everything.

    python benchmarks/bench_sweep.py [--runs N]

Prints and saves the figures to benchmarks/results/sweep.json.
"""

import argparse
import csv
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGET_S = 20.0
SPEC = """\
models: [models/lenet_digits_u8.qnn]
dataset: models/digits_test.npz
hw: [tsmc90, lowbit90]
grid:
  architecture.pe_array.mac.rows: [4, 8, 12, 16, 24, 32, 48, 64, 96, 128]
  architecture.pe_array.mac.cols: [8, 16, 32, 64, 128]
"""
FORCED_POOL = ("import sys; from simulator import cli, sweep; sweep.POOL_START_S = 0.0; "
               "sys.exit(cli.main(sys.argv[1:]))")


def timed(command) -> float:
    start = time.perf_counter()
    subprocess.run(command, cwd=ROOT, check=True, capture_output=True)
    return time.perf_counter() - start


def count_rows(path) -> tuple[int, int]:
    """(rows, rows with an error) of a results CSV."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    return len(rows), sum(1 for r in rows if r["error"])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="runs of each local mode (median)")
    args = parser.parse_args()
    load_before = list(os.getloadavg())
    figures, rows = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        spec = Path(tmp) / "spec.yaml"
        spec.write_text(SPEC)
        hwsim = [sys.executable, "-m", "simulator.cli", "sweep", str(spec), "-q"]
        modes = {"default": hwsim, "jobs1": hwsim + ["--jobs", "1"],
                 "pool": [sys.executable, "-c", FORCED_POOL, "sweep", str(spec), "-q", "--jobs", "2"]}
        try:
            import distributed  # noqa: F401
            dask_ok = True
        except ImportError:
            dask_ok = False
        timed(modes["jobs1"] + ["--out", str(Path(tmp) / "warm.csv")])   # numba's cache filled, not timed
        for name, command in modes.items():
            times = []
            for run in range(args.runs):
                out = Path(tmp) / f"{name}{run}.csv"
                times.append(timed(command + ["--out", str(out)]))
                rows[name] = count_rows(out)
            figures[name] = statistics.median(times)
            print(f"{name:12s} {figures[name]:6.2f} s  (runs: {', '.join(f'{t:.2f}' for t in times)}; "
                  f"{rows[name][0]} rows, {rows[name][1]} errors)", flush=True)
        figures["resume"] = timed(modes["default"] + ["--out", str(Path(tmp) / "default0.csv")])
        print(f"{'resume':12s} {figures['resume']:6.2f} s  (every point already in the file)")
        if dask_ok:
            out = Path(tmp) / "dask.csv"
            figures["dask_local2"] = timed(hwsim + ["--dask", "local:2", "--out", str(out)])
            rows["dask_local2"] = count_rows(out)
            print(f"{'dask_local2':12s} {figures['dask_local2']:6.2f} s  ({rows['dask_local2'][0]} rows)")
    result = {
        "what": "hwsim sweep: 1 model (lenet_digits_u8) x 2 designs (tsmc90, lowbit90) x 50 grid points "
                "(pe_array.mac.rows x cols) on the 540-image digits test set; whole command wall time, fresh "
                "process, median of runs",
        "points": 100,
        "target_s": TARGET_S,
        "wall_s": {k: round(v, 3) for k, v in figures.items()},
        "rows": {k: {"rows": v[0], "errors": v[1]} for k, v in rows.items()},
        "meets_target": figures["default"] < TARGET_S,   # the command as a user types it
        "runs": args.runs,
        "cpu_count": os.cpu_count(),
        "load_average_before": load_before,
        "load_average_after": list(os.getloadavg()),
        "python": platform.python_version(),
        "machine": platform.machine(),
    }
    out = ROOT / "benchmarks" / "results" / "sweep.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"target: the default command under {TARGET_S:.0f} s: {'met' if result['meets_target'] else 'NOT met'}; "
          f"saved {out}")


if __name__ == "__main__":
    main()
