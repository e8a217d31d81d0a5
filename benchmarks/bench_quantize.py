"""Quantization speed: `hwsim quantize` of the digits network with every non-retraining scheme, and the
calibration-heavy schemes (enq:auto, knq) on 1,000 samples.

Targets (issue 7, point 5): each non-retraining scheme under 10 s on 2 cores; enq:auto and knq calibration on
1,000 samples under 30 s. Each command runs as a user runs it, in a fresh process (`python -m simulator.cli
quantize ...`, numba cache warm after the first), and the wall time includes start-up. Prints the table and saves
benchmarks/results/quantize.json.

    python benchmarks/bench_quantize.py

The 1,000 calibration samples are scikit-learn's 8x8 digits outside the shipped test split when scikit-learn is
installed (python -m pip install -e ".[models]"), else the 540 shipped test samples tiled to 1,000 (said in the output).
"""

import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
FLOAT_MODEL = "models/lenet_digits_float.onnx"
PLAIN = [("uniform:8", "uniform:8"), ("kmeans:4", "uniform:8"), ("kmeans:4,groups=4", "uniform:8"),
         ("ternary:twn", "uniform:8"), ("ternary:hwang", "uniform:8"), ("binary:xnor", "binary"),
         ("pow2:4", "uniform:8"), ("dictionary:16", "uniform:8"), ("uniform:8", "enq:4")]
CALIBRATION_HEAVY = [("uniform:8", "enq:auto"), ("uniform:8", "knq:4"), ("uniform:8", "knq:5")]
TARGET_PLAIN_S, TARGET_CALIB_S = 10.0, 30.0


def calibration_1000(tmp):
    try:
        from sklearn.datasets import load_digits
        d = load_digits()
        x = (d.images.astype(np.float32) / 16.0)[:, None][:1000]
        y = d.target[:1000].astype(np.int64)
        how = "scikit-learn digits, first 1,000 images"
    except ImportError:
        d = np.load(ROOT / "models/digits_test.npz")
        idx = np.arange(1000) % len(d["x"])
        x, y = d["x"][idx], d["y"][idx]
        how = "the 540 shipped test images tiled to 1,000 (scikit-learn not installed)"
    path = Path(tmp) / "calib1000.npz"
    np.savez(path, x=x, y=y)
    return path, how


def timed(args):
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "simulator.cli", "quantize", *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode:
        raise SystemExit(f"failed: hwsim quantize {' '.join(map(str, args))}\n{proc.stderr}")
    acc = next((line for line in proc.stdout.splitlines() if line.startswith(("accuracy", "top-1"))), "")
    return wall, acc


def main():
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        timed([FLOAT_MODEL, "--calib", "models/digits_test.npz", "-o", Path(tmp) / "warm.qnn"])   # warm the JIT cache
        for w, a in PLAIN:
            wall, acc = timed([FLOAT_MODEL, "--calib", "models/digits_test.npz", "-o", Path(tmp) / "m.qnn",
                               "--weights", w, "--acts", a])
            rows.append({"weights": w, "acts": a, "calibration_samples": 540, "wall_s": wall,
                         "target_s": TARGET_PLAIN_S, "pass": wall < TARGET_PLAIN_S, "accuracy": acc})
        calib, how = calibration_1000(tmp)
        for w, a in CALIBRATION_HEAVY:
            wall, acc = timed([FLOAT_MODEL, "--calib", calib, "-o", Path(tmp) / "m.qnn", "--weights", w, "--acts", a])
            rows.append({"weights": w, "acts": a, "calibration_samples": 1000, "wall_s": wall,
                         "target_s": TARGET_CALIB_S, "pass": wall < TARGET_CALIB_S, "accuracy": acc})
    print(f"hwsim quantize {FLOAT_MODEL} (wall time of the whole command, fresh process, warm JIT cache)")
    print(f"1,000-sample calibration set: {how}")
    for r in rows:
        print(f"  {r['weights']:<18} {r['acts']:<10} {r['calibration_samples']:>5} samples  {r['wall_s']:6.2f} s "
              f"(target < {r['target_s']:.0f} s) {'PASS' if r['pass'] else 'FAIL'}  {r['accuracy']}")
    out = ROOT / "benchmarks" / "results" / "quantize.json"
    out.write_text(json.dumps({"model": FLOAT_MODEL, "calibration_1000": how, "rows": rows,
                               "python": platform.python_version(), "machine": platform.machine()}, indent=2) + "\n")
    print(f"saved {out.relative_to(ROOT)}")
    return 0 if all(r["pass"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
