"""Engine throughput per op kind on this machine: the figures behind LIMITS["run_work"] and OP_WORK_WEIGHT
(simulator/graph.py, docs/qnn-format.md "Limits").

    python benchmarks/limits_throughput.py [--quick]

Each case builds a one-layer .qnn in a temporary directory, runs it once on the engine (JIT warm-up) and then
times a second run; it prints the operations (as layer_figures counts them), seconds, operations per second
and the weighted work (graph.run_work) per second, which should stay near or above the budget's rate.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from simulator.engine import Engine
from simulator.graph import LIMITS, layer_figures, no_limits, run_work
from simulator.qnn.container import write_container
from simulator.qnn.model_io import load_model

U8 = {"kind": "uniform", "bits": 8, "signed": False, "scale": 0.05, "zero_point": 0}
S8W = {"kind": "uniform", "bits": 8, "signed": True, "scale": [0.01]}


def conv(ci, co, k, hw, groups=1, pad=0, stride=1, bits_w=8):
    w = np.random.default_rng(0).integers(-100, 100, size=(co, ci // groups, k, k)).astype(np.int8)
    lay = {"name": "l", "op": "conv2d", "inputs": ["input"], "encoding": U8, "weight_encoding": S8W,
           "attrs": {"stride": [stride, stride], "padding": [pad] * 4, "groups": groups}}
    return [ci, hw, hw], [lay], {"l.weight": (w, bits_w, True)}


def dense(k, co):
    w = np.random.default_rng(0).integers(-100, 100, size=(co, k)).astype(np.int8)
    lay = {"name": "l", "op": "dense", "inputs": ["input"], "encoding": U8, "weight_encoding": S8W}
    return [k], [lay], {"l.weight": (w, 8, True)}


def pool(op, c, hw, k, stride=1):
    lay = {"name": "l", "op": op, "inputs": ["input"], "encoding": U8,
           "attrs": {"kernel": [k, k], "stride": [stride, stride]}}
    return [c, hw, hw], [lay], {}


def eltwise(op, n, inputs=1):
    lay = {"name": "l", "op": op, "inputs": ["input"] * inputs, "encoding": U8}
    return [1, n, n], [lay], {}


CASES = {
    "conv 64->64 3x3 on 56x56 (SIMD kernel)": lambda: conv(64, 64, 3, 56, pad=1),
    "conv 3->64 3x3 on 224x224 (first VGG layer)": lambda: conv(3, 64, 3, 224, pad=1),
    "conv 1->1 32x32 on 288x288 (sequential kernel)": lambda: conv(1, 1, 32, 288),
    "conv 1->32 33x33 on 128x128": lambda: conv(1, 32, 33, 128, pad=16),
    "depthwise conv 256 3x3 on 56x56": lambda: conv(256, 256, 3, 56, groups=256, pad=1),
    "dense 4096 -> 4096": lambda: dense(4096, 4096),
    "dense 2^22 -> 1": lambda: dense(1 << 22, 1),
    "maxpool 64ch 3x3/1 on 112x112": lambda: pool("maxpool", 64, 112, 3),
    "maxpool 1ch 256x256/1 on 384x384": lambda: pool("maxpool", 1, 384, 256),
    "avgpool 1ch 256x256/1 on 384x384": lambda: pool("avgpool", 1, 384, 256),
    "relu on 1x4096x4096": lambda: eltwise("relu", 4096),
    "add of 2 on 1x2048x2048": lambda: eltwise("add", 2048, 2),
    "add of 64 on 1x256x256": lambda: eltwise("add", 256, 64),
    "concat of 64 on 1x256x256": lambda: eltwise("concat", 256, 64),
}


def measure(name, build, tmp):
    shape, layers, tensors = build()
    path = Path(tmp) / "m.qnn"
    write_container(path, {"model": {"name": "bench", "input": {"shape": shape, "encoding": U8},
                                     "layers": layers}}, tensors)
    with no_limits():
        model = load_model(str(path))
        engine = Engine(model)
        codes = np.random.default_rng(1).integers(0, 256, size=(1,) + tuple(shape))
        engine.run(codes)
        t0 = time.perf_counter()
        engine.run(codes)
        dt = time.perf_counter() - t0
    ops = layer_figures(model.layers[0])["ops"]
    work = run_work(model)
    print(f"{name:48s} ops {ops:14,d}  {dt:7.3f} s  {ops / dt / 1e6:9.1f} Mops/s  "
          f"work {work / dt / 1e6:9.1f} M/s")
    return work / dt


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="only the slowest cases")
    args = ap.parse_args()
    rates = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, build in CASES.items():
            if args.quick and "sequential" not in name and "256x256" not in name:
                continue
            rates.append(measure(name, build, tmp))
    slowest = min(rates)
    print(f"slowest weighted rate {slowest / 1e6:.1f} M work/s: run_work limit {LIMITS['run_work']:,} "
          f"-> at most {LIMITS['run_work'] / slowest:.1f} s per run")


if __name__ == "__main__":
    main()
