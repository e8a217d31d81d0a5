"""Speed of the ONNX path: importing a ResNet-18-sized QDQ model, and hwsim's engine against ONNX Runtime.

    pip install -e ".[bench]"   # onnx, onnxruntime, threadpoolctl
    python benchmarks/bench_onnx.py [--quick] [--batches 1,8]

1. Import: `hwsim import resnet18_qdq.onnx -o resnet18.qnn` in a fresh process (wall time of the whole command,
   Python start-up included), best of a few runs. Target: under 10 s. The QDQ model is
   benchmarks/onnx_models.build_resnet18_qdq (ONNX Runtime's quantize_static of a random-weight ResNet-18:
   per-channel int8 weights, uint8 activations) when that module is present, else an equivalent built here.
2. Functional time: hwsim's engine alone (`timing.functional_s` of `hwsim run`: no loading, no JIT compile) on
   the imported model against ONNX Runtime's InferenceSession.run on the QDQ model, the same input and batch
   (ResNet-18 at batch 1 and 8), each at its best thread count (1 or 2: numba threads for hwsim, intra-op
   threads for ORT); median of repeated runs. Printed as hwsim / ORT. The same for the digits model made by
   models/make_onnx_example.py (lenet_digits_ort.qnn vs lenet_digits_ort_qdq.onnx) on the whole test set (540
   images, one batch). One `hwsim run --json` per model (at hwsim's best thread count) shows what the CLI
   reports: a single run, the first after the JIT warm-up, so usually slower than the median.
3. Where hwsim's time goes (one thread): per-layer engine time (each op runner timed in process), summed by op
   and listed for the slowest layers with their MACs and GMAC/s, and the time inside the main functions
   (MAC kernels and, inside them, the weight memo check and the max-|value| scans; requantizer; pooling; add).

The machine is shared: the load average at start and end is saved with the figures, and a busy second core hurts
2-thread runs most (numba's OpenMP layer waits at every parallel region's barrier for a descheduled thread).

Also checks that hwsim's output equals ONNX Runtime's (codes recovered from the dequantized output), so the
timed computations are the same computation. Figures are printed and written to benchmarks/results/onnx.json.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numba  # noqa: E402
import onnx  # noqa: E402
import onnxruntime as ort  # noqa: E402
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from simulator import engine as engine_mod  # noqa: E402
from simulator.engine import Engine, quantize_input  # noqa: E402
from simulator.kernels import im2col  # noqa: E402
from simulator.kernels import threads as kernel_threads  # noqa: E402
from simulator.qnn.model_io import load_model  # noqa: E402

THREADS = (1, 2)
IMPORT_TARGET_S = 10.0
MODELS = ROOT / "models"


# ----------------------------------------------------------------------------------------------------------
# The ResNet-18 QDQ model
# ----------------------------------------------------------------------------------------------------------
def _float_resnet18(path, seed=0):
    """A float ResNet-18 (ImageNet shape, batch dimension symbolic, no batch norm: folded away) with random
    He-initialised weights, written with onnx.helper."""
    rng = np.random.default_rng(seed)
    nodes, inits = [], []
    counter = defaultdict(int)

    def name(kind):
        counter[kind] += 1
        return f"{kind}{counter[kind]}"

    def conv(x, ci, co, k, stride, relu, gain=1.0):
        n = name("conv")
        w = rng.standard_normal((co, ci, k, k)).astype(np.float32) * np.float32(gain * np.sqrt(2.0 / (ci * k * k)))
        b = (0.01 * rng.standard_normal(co)).astype(np.float32)
        inits.extend([numpy_helper.from_array(w, f"{n}.weight"), numpy_helper.from_array(b, f"{n}.bias")])
        nodes.append(helper.make_node("Conv", [x, f"{n}.weight", f"{n}.bias"], [f"{n}_out"], kernel_shape=[k, k],
                                      strides=[stride, stride], pads=[k // 2] * 4))
        out = f"{n}_out"
        if relu:
            nodes.append(helper.make_node("Relu", [out], [f"{n}_relu"]))
            out = f"{n}_relu"
        return out

    x = conv("input", 3, 64, 7, 2, True)
    nodes.append(helper.make_node("MaxPool", [x], ["pool1"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]))
    x, ci = "pool1", 64
    for co, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
        for block in range(2):
            s = stride if block == 0 else 1
            y = conv(x, ci, co, 3, s, True)
            y = conv(y, co, co, 3, 1, False, gain=0.5)
            short = conv(x, ci, co, 1, s, False) if (s != 1 or ci != co) else x
            a = name("add")
            nodes.append(helper.make_node("Add", [y, short], [a]))
            nodes.append(helper.make_node("Relu", [a], [a + "_relu"]))
            x, ci = a + "_relu", co
    nodes.append(helper.make_node("GlobalAveragePool", [x], ["gap"]))
    nodes.append(helper.make_node("Flatten", ["gap"], ["flat"], axis=1))
    w = (rng.standard_normal((1000, 512)) * np.sqrt(1.0 / 512)).astype(np.float32)
    inits += [numpy_helper.from_array(w, "fc.weight"), numpy_helper.from_array(np.zeros(1000, np.float32), "fc.bias")]
    nodes.append(helper.make_node("Gemm", ["flat", "fc.weight", "fc.bias"], ["logits"], transB=1))
    graph = helper.make_graph(nodes, "resnet18", [helper.make_tensor_value_info("input", TensorProto.FLOAT,
                                                                               ["batch", 3, 224, 224])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 1000])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def build_resnet18_qdq_here(path, seed=0):
    """quantize_static (QDQ, per-channel int8 weights with reduce_range, uint8 activations) of the random
    ResNet-18 above, calibrated on 4 random images."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self):
            rng = np.random.default_rng(seed + 1)
            self.data = [{"input": rng.random((1, 3, 224, 224), dtype=np.float32)} for _ in range(4)]

        def get_next(self):
            return self.data.pop() if self.data else None

    with tempfile.TemporaryDirectory() as tmp:
        fp = Path(tmp) / "resnet18_float.onnx"
        _float_resnet18(fp, seed)
        quantize_static(str(fp), str(path), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        reduce_range=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    return path


def build_resnet18(path):
    try:
        from onnx_models import build_resnet18_qdq
        source = "benchmarks/onnx_models.build_resnet18_qdq"
    except ImportError:
        build_resnet18_qdq, source = build_resnet18_qdq_here, "bench_onnx.build_resnet18_qdq_here (fallback)"
    build_resnet18_qdq(str(path))
    return source


# ----------------------------------------------------------------------------------------------------------
# Timing helpers
# ----------------------------------------------------------------------------------------------------------
def run_cli(*args, env=None):
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "simulator.cli", *map(str, args)], cwd=ROOT, capture_output=True,
                          text=True, env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})})
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"hwsim {' '.join(map(str, args))} failed:\n{proc.stderr}")
    return elapsed, proc.stdout


def ort_session(path, threads):
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


BLOCK = 4   # runs of one side in a row in time_interleaved: the first warms up after the other side's block
# After its runs ORT's pool threads spin on a core for ~0.1 s (measured here: 2 busy cores for 50 ms, then
# part of one), which would take a core from the hwsim runs that follow; they start after this pause.
ORT_SPIN_S = 0.25


def time_interleaved(path, x, engine, codes, repeats):
    """(ORT's and hwsim's median time per thread count, their outputs). At each thread count the two sides take
    turns in blocks of BLOCK back-to-back runs, until each has `repeats` timed runs; the first run of a block is
    not timed (the other side's block left the caches cold), and hwsim's block starts ORT_SPIN_S after ORT's.
    So both meet the same spells of a shared machine: timing one side after the other once charged a slow
    minute to one of them alone; single runs in turn measured neither side's steady state. hwsim's time is its
    `functional_s`."""
    ort_per, hw_per, y_ort, y_hw = {}, {}, None, None
    for t in THREADS:
        sess = ort_session(path, t)
        name = sess.get_inputs()[0].name
        kernel_threads.set_count(t)
        engine.run(codes[:1])  # JIT compile / cache load
        ort_times, hw_times = [], []
        while len(hw_times) < repeats:
            for i in range(BLOCK):
                t0 = time.perf_counter()
                y_ort = sess.run(None, {name: x})[0]
                if i:
                    ort_times.append(time.perf_counter() - t0)
            time.sleep(ORT_SPIN_S)
            for i in range(BLOCK):
                res = engine.run(codes)
                if i:
                    hw_times.append(res.functional_s)
            y_hw = res.output
        ort_per[t], hw_per[t] = statistics.median(ort_times), statistics.median(hw_times)
        del sess
    kernel_threads.set_count(kernel_threads.DEFAULT_COUNT)
    return ort_per, y_ort, hw_per, y_hw


def ort_output_codes(qdq_path, y):
    """Codes behind ORT's dequantized output (the DequantizeLinear producing the graph output), checked exact."""
    model = onnx.load(str(qdq_path), load_external_data=False)
    inits = {t.name: t for t in model.graph.initializer}
    node = next(n for n in model.graph.node if model.graph.output[0].name in n.output)
    if node.op_type != "DequantizeLinear":
        return None
    scale = np.float32(numpy_helper.to_array(inits[node.input[1]]))
    zp = int(numpy_helper.to_array(inits[node.input[2]])) if len(node.input) > 2 else 0
    q = np.rint(y.astype(np.float64) / np.float64(scale)).astype(np.int64) + zp
    if not np.array_equal(((q - zp).astype(np.float32) * scale).astype(np.float32), y):
        return None
    return q


# Functions whose time the profile splits out: (module, attribute, label). memo_pack is the weight memo of the
# SIMD kernel: on a hit it copies the weight array (int64 values) and compares it with the stored copy.
PROFILED = ((engine_mod.mac, "conv2d_acc", "MAC kernel conv2d_acc (incl. its weight checks)"),
            (engine_mod.mac, "dense_acc", "MAC kernel dense_acc (incl. its weight checks)"),
            (im2col, "memo_pack", "  of which weight memo check (im2col.memo_pack: copy + compare of int64 weights)"),
            (engine_mod.mac, "_max_abs", "  of which max|x|, max|w| scans (mac._max_abs)"),
            (engine_mod, "requantize", "requantizer (units.requantizer.requantize)"),
            (engine_mod.pooling, "maxpool", "maxpool (units.pooling.maxpool)"),
            (engine_mod.pooling, "avgpool", "avgpool (units.pooling.avgpool)"),
            (engine_mod, "residual_add", "residual add (units.residual_add)"))


def profile_layers(engine, codes, repeats=3):
    """Engine time per layer (each op runner timed) and per function (PROFILED), the median run of a few after a
    warm-up, one thread."""
    kernel_threads.set_count(1)
    original = dict(engine_mod.RUNNERS)
    saved = [(mod, attr, getattr(mod, attr), label) for mod, attr, label in PROFILED if hasattr(mod, attr)]

    def timed_runner(fn, times):
        def wrapper(self, lay, inputs, counts):
            t0 = time.perf_counter()
            out = fn(self, lay, inputs, counts)
            times[lay.name] = times.get(lay.name, 0.0) + time.perf_counter() - t0
            return out
        return wrapper

    def timed_fn(fn, label, times):
        def wrapper(*a, **k):
            t0 = time.perf_counter()
            out = fn(*a, **k)
            times[label] = times.get(label, 0.0) + time.perf_counter() - t0
            return out
        return wrapper

    engine.run(codes[:1])
    engine.run(codes)
    runs = []
    try:
        for _ in range(repeats):
            times, ftimes = {}, {}
            for op, fn in original.items():
                engine_mod.RUNNERS[op] = timed_runner(fn, times)
            for mod, attr, fn, label in saved:
                setattr(mod, attr, timed_fn(fn, label, ftimes))
            res = engine.run(codes)
            runs.append((res.functional_s, times, ftimes, res))
    finally:
        engine_mod.RUNNERS.update(original)
        for mod, attr, fn, _ in saved:
            setattr(mod, attr, fn)
        kernel_threads.set_count(kernel_threads.DEFAULT_COUNT)
    runs.sort(key=lambda r: r[0])
    _, times, ftimes, res = runs[len(runs) // 2]
    per_inf = res.trace.per_inference()
    rows = []
    for lay, counts in zip(engine.model.layers, per_inf.layers):
        macs = (counts.total_macs() + counts.binary_macs) * len(codes)
        desc = lay.op
        if lay.op == "conv2d":
            kh, kw = lay.weight.shape[2:]
            desc = (f"conv {kh}x{kw} s{lay.attr('stride')[0]} {lay.in_shapes[0][0]}->{lay.out_shape[0]} "
                    f"@{lay.out_shape[1]}x{lay.out_shape[2]}")
        elif lay.op == "dense":
            desc = f"dense {lay.weight.shape[1]}->{lay.weight.shape[0]}"
        elif lay.op in ("maxpool", "avgpool"):
            desc = f"{lay.op} {lay.attr('kernel')} s{lay.attr('stride')} in {list(lay.in_shapes[0])}"
        t = times.get(lay.name, 0.0)
        rows.append({"layer": lay.name, "op": lay.op, "what": desc, "seconds": t, "macs": int(macs),
                     "gmacs": macs / t / 1e9 if macs and t > 0 else None})
    by_op = defaultdict(float)
    for r in rows:
        by_op[r["op"]] += r["seconds"]
    total = sum(r["seconds"] for r in rows)
    return {"threads": 1, "total_s": total, "functional_s": res.functional_s,
            "by_op_s": dict(sorted(by_op.items(), key=lambda kv: -kv[1])),
            "by_function_s": {label: ftimes[label] for _, _, label in PROFILED if label in ftimes},
            "slowest_layers": sorted(rows, key=lambda r: -r["seconds"])[:8], "layers": rows}


def compare_models(label, qnn_path, qdq_path, x, repeats, hw="tsmc90"):
    model = load_model(qnn_path)
    engine = Engine(model)
    codes = quantize_input(model, x)
    ort_per, y_ort, hw_per, y_hw = time_interleaved(qdq_path, x, engine, codes, repeats)
    q_ort = ort_output_codes(qdq_path, y_ort)
    equal = None if q_ort is None else int(np.count_nonzero(q_ort.reshape(len(x), -1) == y_hw.reshape(len(x), -1)))
    best_hw, best_ort = min(hw_per.values()), min(ort_per.values())
    with tempfile.TemporaryDirectory() as tmp:
        xp, rp = Path(tmp) / "x.npy", Path(tmp) / "r.json"
        np.save(xp, x)
        run_cli("run", qnn_path, "--hw", hw, "--input", xp, "--json", rp,
                env={"NUMBA_NUM_THREADS": str(min(hw_per, key=hw_per.get))})
        cli_functional = json.loads(rp.read_text())["timing"]["functional_s"]
    result = {
        "model": str(Path(qnn_path).relative_to(ROOT)) if Path(qnn_path).is_relative_to(ROOT) else Path(qnn_path).name,
        "batch": int(len(x)),
        "hwsim_functional_s": {str(t): v for t, v in hw_per.items()},
        "ort_s": {str(t): v for t, v in ort_per.items()},
        "hwsim_best_s": best_hw, "hwsim_best_threads": min(hw_per, key=hw_per.get),
        "ort_best_s": best_ort, "ort_best_threads": min(ort_per, key=ort_per.get),
        "ratio_hwsim_over_ort": best_hw / best_ort,
        "hwsim_cli_functional_s": cli_functional,
        "outputs_equal": equal, "outputs": int(y_hw.size),
        "profile": profile_layers(engine, codes, repeats=5),
    }
    print(f"\n{label}: batch {len(x)}; hwsim engine {best_hw * 1e3:.1f} ms ({result['hwsim_best_threads']} thr), "
          f"ONNX Runtime {best_ort * 1e3:.1f} ms ({result['ort_best_threads']} thr): hwsim / ORT = "
          f"{result['ratio_hwsim_over_ort']:.1f}x\n  (one `hwsim run --json`, same threads: timing.functional_s "
          f"{cli_functional * 1e3:.1f} ms, the first run after the JIT warm-up)")
    print("  per thread count: hwsim " + ", ".join(f"{t}: {v * 1e3:.1f} ms" for t, v in hw_per.items())
          + "; ORT " + ", ".join(f"{t}: {v * 1e3:.1f} ms" for t, v in ort_per.items()))
    print(f"  outputs equal to ONNX Runtime's: "
          + ("n/a (output is not a dequantized tensor)" if equal is None else f"{equal:,} of {y_hw.size:,}"))
    prof = result["profile"]
    print(f"  engine time by op (1 thread, profiled run, {prof['total_s'] * 1e3:.1f} ms): "
          + ", ".join(f"{op} {s * 1e3:.1f} ms ({100 * s / prof['total_s']:.0f}%)" for op, s in prof["by_op_s"].items()))
    for label, sec in prof["by_function_s"].items():
        print(f"    {label:<80} {sec * 1e3:8.2f} ms")
    for r in prof["slowest_layers"][:6]:
        rate = f", {r['gmacs']:.1f} GMAC/s" if r["gmacs"] else ""
        print(f"    {r['layer']:<24} {r['what']:<40} {r['seconds'] * 1e3:8.2f} ms{rate}")
    return result


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer repeats")
    ap.add_argument("--batches", default="1,8", help="ResNet-18 batch sizes, comma separated (default 1,8)")
    ap.add_argument("--keep", metavar="DIR", help="keep the ResNet-18 .onnx / .qnn files in DIR")
    args = ap.parse_args()
    repeats = 3 if args.quick else 10
    results = {"machine": {"cpu_count": os.cpu_count(), "python": platform.python_version(),
                           "numpy": np.__version__, "numba": numba.__version__, "onnx": onnx.__version__,
                           "onnxruntime": ort.__version__,
                           "vnni": "avx512_vnni" in Path("/proc/cpuinfo").read_text()
                           if Path("/proc/cpuinfo").exists() else None},
               "timing": f"median of {repeats} runs after a warm-up, best of {list(THREADS)} threads per side",
               "load_average_at_start": list(os.getloadavg())}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.keep) if args.keep else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        qdq, qnn = work / "resnet18_qdq.onnx", work / "resnet18.qnn"
        t0 = time.perf_counter()
        source = build_resnet18(qdq)
        print(f"ResNet-18 QDQ model from {source}: {qdq.stat().st_size / 1e6:.1f} MB "
              f"(built in {time.perf_counter() - t0:.1f} s)")
        import_times = [run_cli("import", qdq, "-o", qnn)[0] for _ in range(2 if args.quick else 3)]
        results["import"] = {"model": source, "onnx_bytes": qdq.stat().st_size, "qnn_bytes": qnn.stat().st_size,
                             "wall_s": import_times, "best_s": min(import_times), "target_s": IMPORT_TARGET_S,
                             "meets_target": min(import_times) < IMPORT_TARGET_S}
        print(f"hwsim import (fresh process, wall): best {min(import_times):.2f} s of "
              f"{', '.join(f'{t:.2f}' for t in import_times)} (target < {IMPORT_TARGET_S:.0f} s): "
              f"{'OK' if results['import']['meets_target'] else 'MISSED'}")
        for i, batch in enumerate(int(b) for b in args.batches.split(",")):
            # N(0, 1) images: the distribution build_resnet18_qdq calibrates on
            x = np.random.default_rng(0).standard_normal((batch, 3, 224, 224)).astype(np.float32)
            key = "resnet18" if i == 0 else f"resnet18_batch{batch}"
            results[key] = compare_models("ResNet-18", qnn, qdq, x, repeats if batch <= 2 else max(3, repeats // 3))

    digits_qnn, digits_qdq = MODELS / "lenet_digits_ort.qnn", MODELS / "lenet_digits_ort_qdq.onnx"
    if digits_qnn.exists() and digits_qdq.exists():
        with np.load(MODELS / "digits_test.npz", allow_pickle=False) as d:
            x = d["x"]
        results["digits"] = compare_models("digits (lenet_digits_ort, whole test set)", digits_qnn, digits_qdq, x,
                                           repeats * 3)
    else:
        print("digits ORT model not found (run models/make_onnx_example.py): skipped")
    results["load_average_at_end"] = list(os.getloadavg())
    print(f"load average (1, 5, 15 min) at start {results['load_average_at_start']}, at end "
          f"{results['load_average_at_end']} on {os.cpu_count()} cores: other work slows the 2-thread runs most")
    out = ROOT / "benchmarks" / "results" / "onnx.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nwrote {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
