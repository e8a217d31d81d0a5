"""Start-up benchmark: a second `hwsim run` of the example model must start and finish in under 3 s.

Runs the README's everyday command several times in fresh processes; the first run may compile the numba
kernels (or load them from the cache), every later run must hit the cache. Prints and saves the figures to
benchmarks/results/startup.json.

    python benchmarks/bench_startup.py [--runs N]
"""

import argparse
import json
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COMMAND = [sys.executable, "-m", "simulator.cli", "run", "models/lenet_digits_u8.qnn", "--hw", "tsmc90"]
TARGET_S = 3.0


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    times = []
    for _ in range(args.runs):
        start = time.perf_counter()
        subprocess.run(COMMAND, cwd=ROOT, check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    later = times[1:] or times
    result = {"command": " ".join(["hwsim"] + COMMAND[3:]), "first_run_s": times[0], "later_runs_s": later,
              "later_median_s": statistics.median(later), "later_max_s": max(later), "target_s": TARGET_S,
              "meets_target": max(later) < TARGET_S, "python": platform.python_version()}
    out = ROOT / "benchmarks" / "results" / "startup.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"{result['command']}")
    print(f"first run {times[0]:.2f} s; later runs median {result['later_median_s']:.2f} s, "
          f"max {result['later_max_s']:.2f} s (target < {TARGET_S} s): "
          f"{'OK' if result['meets_target'] else 'MISSED'}")
    return 0 if result["meets_target"] else 1


if __name__ == "__main__":
    sys.exit(main())
