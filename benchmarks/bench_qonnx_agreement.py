"""hwsim vs qonnx's own executor on Brevitas-like QONNX models with float32 (non power-of-two) scales.

    pip install -e ".[onnx]" qonnx
    python benchmarks/bench_qonnx_agreement.py [--quick]

Model: Quant input (uint8) -> 3 x [Conv 3x3 (8-bit narrow weights, per-channel float32 scales, float bias) ->
BatchNormalization -> ReLU -> Quant (uint8)], 16 -> 48 -> 64 channels, last conv -> Quant (int8); 12x12 inputs.
Imported twice: quant_as="auto" (batch norm and bias folded into exact integer thresholds) and "requant"
(the ordinary requantizer; each fractional bias rounded to whole accumulator units).

qonnx executes in float32 (ONNX Runtime conv, numpy Quant); hwsim is exact integer arithmetic. Per tensor:
chained = engine end to end vs qonnx; local = the hwsim layer fed qonnx's own input codes. Differences in LSBs.
Printed and written to benchmarks/results/qonnx_agreement.json.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from qonnx_factory import G  # noqa: E402

from simulator.importers.qonnx_import import compare_with_qonnx, format_agreement, import_qonnx  # noqa: E402


def brevitas_like(rng, path):
    def f(lo, hi, size=None):
        return np.float32(rng.uniform(lo, hi)) if size is None else rng.uniform(lo, hi, size=size).astype(np.float32)
    g = G([1, 16, 12, 12])
    x = g.quant("x", f(0.01, 0.05), 0, 8, 0, 0)
    c = 16
    for co in (48, 64):
        sw = f(0.002, 0.02, (co, 1, 1, 1))
        w = g.quant(g.const(rng.standard_normal((co, c, 3, 3)) * sw * 40, "w"), sw, 0, 8, 1, 1)
        y = g.conv(x, w, g.const(f(-0.3, 0.3, co)), pads=(1, 1, 1, 1))
        y = g.node("BatchNormalization", [y, g.const(f(0.5, 2, co)), g.const(f(-0.5, 0.5, co)),
                                          g.const(f(-0.2, 0.2, co)), g.const(f(0.5, 2, co))])
        y = g.node("Relu", [y])
        x = g.quant(y, f(0.02, 0.1), 0, 8, 0, 0)
        c = co
    sw = f(0.002, 0.02, (64, 1, 1, 1))
    w = g.quant(g.const(rng.standard_normal((64, c, 3, 3)) * sw * 40, "w"), sw, 0, 8, 1, 1)
    y = g.quant(g.conv(x, w, pads=(1, 1, 1, 1)), f(0.05, 0.2), 0, 8, 1, 0)
    return g.save(y, path)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="1 model, 50 inputs")
    args = ap.parse_args()
    seeds, n = (range(1), 50) if args.quick else (range(3), 200)
    out_dir = ROOT / "benchmarks" / "results"
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for seed in seeds:
        rng = np.random.default_rng(seed)
        path = brevitas_like(rng, out_dir / f"qonnx_agreement_{seed}.onnx")
        x = rng.uniform(0, 8, size=(n, 16, 12, 12)).astype(np.float32)
        for mode in ("auto", "requant"):
            model = import_qonnx(path, quant_as=mode)
            t = time.perf_counter()
            res = compare_with_qonnx(path, model, x)
            print(f"seed {seed}, quant_as={mode}, {n} inputs ({time.perf_counter() - t:.1f} s)")
            print(format_agreement(res) + "\n")
            rows.append({"seed": seed, "quant_as": mode, "inputs": n, "tensors": [r.to_dict() for r in res]})
        Path(path).unlink()
    for mode in ("auto", "requant"):
        sel = [t for r in rows if r["quant_as"] == mode for t in r["tensors"] if t["local_mismatches"] >= 0]
        total = sum(t["elements"] for t in sel)
        local = sum(t["local_mismatches"] for t in sel)
        print(f"{mode:8}: local mismatches {local} of {total} codes ({1e6 * local / total:.1f} per million), "
              f"max {max(t['local_max_diff_lsb'] for t in sel)} LSB; chained max "
              f"{max(t['max_diff_lsb'] for r in rows if r['quant_as'] == mode for t in r['tensors'])} LSB")
    (out_dir / "qonnx_agreement.json").write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
