"""Speed of the integer kernels on one ResNet-style layer: 56×56×64 → 64, 3×3, pad 1, stride 1, batch 1.

    pip install -e ".[bench]"   # onnx, onnxruntime, threadpoolctl
    python benchmarks/bench_kernels.py [--quick]

1. ONNX Runtime QLinearConv (uint8 x, int8 weights in [-127, 127], zero points 0, int32 bias): the yardstick.
2. hwsim conv2d_acc on the same operands, acc_bits=32, wrap (the bound proves safety: fast path).
3. hwsim xnor_conv2d on the same shape, binary, counted in binary MACs ("+1" and "zero" padding).
   Also, for information: conv2d_acc with a 16-bit accumulator, where the exact sequential kernel runs.

Timing: JIT compile and warm-up excluded; the cases are timed in interleaved rounds (so a noisy neighbour
slows all of them alike) and each figure is MACs / the median of all its runs, best of 1 and 2 threads.
Every output is checked against an independent exact computation (float64 GEMM on an explicit im2col,
exact below 2^53). Figures are printed and written to benchmarks/results/kernels.json.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numba  # noqa: E402
import onnxruntime as ort  # noqa: E402
from onnx import TensorProto, helper, numpy_helper  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

from simulator.kernels import im2col, mac, popcount  # noqa: E402
from simulator.kernels import threads as kernel_threads  # noqa: E402

N, CI, H, W, CO, K = 1, 64, 56, 56, 64, 3
MACS = N * CO * H * W * CI * K * K  # 115,605,504
THREADS = (1, 2)
TARGET_8BIT_RATIO = 0.4
TARGET_BINARY_RATIO = 4.0


def exact_conv(x, w, pad_value=0):
    """Σ x·w per output, float64 GEMM on an explicit im2col (exact: every |partial sum| < 2^53)."""
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (1, 1), (1, 1)), constant_values=pad_value)
    cols = np.lib.stride_tricks.sliding_window_view(xp, (K, K), axis=(2, 3))  # [N, Ci, H, W, K, K]
    cols = cols.transpose(0, 2, 3, 1, 4, 5).reshape(N * H * W, CI * K * K)
    acc = cols @ w.reshape(CO, -1).astype(np.float64).T  # [N·H·W, Co]
    return acc.reshape(N, H, W, CO).transpose(0, 3, 1, 2)


# ----------------------------------------------------------------------------------------------------------
# The cases: each a function of the thread count that returns a callable to time
# ----------------------------------------------------------------------------------------------------------
def qlinearconv_model(w, bias, x_scale, w_scale, y_scale):
    inits = [numpy_helper.from_array(np.array(x_scale, np.float32), "x_scale"),
             numpy_helper.from_array(np.array(0, np.uint8), "x_zp"),
             numpy_helper.from_array(w, "w"),
             numpy_helper.from_array(np.array(w_scale, np.float32), "w_scale"),
             numpy_helper.from_array(np.array(0, np.int8), "w_zp"),
             numpy_helper.from_array(np.array(y_scale, np.float32), "y_scale"),
             numpy_helper.from_array(np.array(0, np.uint8), "y_zp"),
             numpy_helper.from_array(bias, "bias")]
    node = helper.make_node("QLinearConv", ["x", "x_scale", "x_zp", "w", "w_scale", "w_zp", "y_scale", "y_zp", "bias"],
                            ["y"], kernel_shape=[K, K], pads=[1, 1, 1, 1], strides=[1, 1])
    graph = helper.make_graph([node], "conv", [helper.make_tensor_value_info("x", TensorProto.UINT8, [N, CI, H, W])],
                              [helper.make_tensor_value_info("y", TensorProto.UINT8, [N, CO, H, W])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]).SerializeToString()


def ort_case(x, w, bias, scales):
    model = qlinearconv_model(w, bias, *scales)
    sessions = {}
    for threads in THREADS:
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        sessions[threads] = ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
    return lambda threads: (lambda: sessions[threads].run(None, {"x": x})[0])


def numba_case(fn):
    def at(threads):
        kernel_threads.set_count(threads)
        return fn
    return at


def requantize_like_ort(acc, scales):
    """ORT's float32 requantization (REFERENCES.md §4): float32(acc) × float32(sx·sw/sy), round half even, clamp."""
    x_scale, w_scale, y_scale = (np.float32(s) for s in scales)
    multiplier = np.float32(x_scale * w_scale / y_scale)
    return np.clip(np.rint(acc.astype(np.float32) * multiplier), 0, 255).astype(np.uint8)


def time_rounds(cases: dict, rounds: int, repeats: int) -> dict:
    """{case: {threads: [seconds, ...]}}, the cases interleaved round by round."""
    times = {name: {t: [] for t in THREADS} for name in cases}
    for _ in range(rounds):
        for name, at in cases.items():
            for threads in THREADS:
                fn = at(threads)
                for _ in range(3):  # warm-up: caches, thread pools
                    fn()
                for _ in range(repeats):
                    t0 = time.perf_counter()
                    fn()
                    times[name][threads].append(time.perf_counter() - t0)
                time.sleep(0.02)  # let spinning worker threads settle before the next case
    return times


def rates(samples: dict, macs: int = MACS) -> tuple[float, dict]:
    per_thread = {t: macs / float(np.median(s)) / 1e9 for t, s in samples.items()}
    return max(per_thread.values()), per_thread


# ----------------------------------------------------------------------------------------------------------
def main() -> int:
    # the kernels use no BLAS; one BLAS thread keeps the checking GEMMs' spinning threads off the timed cores
    with threadpool_limits(limits=1, user_api="blas"):
        return run()


def run() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds")
    args = parser.parse_args()
    rounds, repeats = (2, 7) if args.quick else (5, 15)
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (N, CI, H, W)).astype(np.uint8)
    w = rng.integers(-127, 128, (CO, CI, K, K)).astype(np.int8)
    bias = rng.integers(-5000, 5000, CO).astype(np.int32)
    xb = rng.integers(0, 2, (N, CI, H, W)).astype(np.uint8)
    wb = rng.integers(0, 2, (CO, CI, K, K)).astype(np.uint8)
    scales = (0.02, 0.003, 0.5)
    b64 = bias.astype(np.int64)
    assert mac.overflow_impossible(x, w, b64, (1, 1, 1, 1), 0, 32), "the bound should prove this layer safe"

    cases = {
        "ort": ort_case(x, w, bias, scales),
        "mac": numba_case(lambda: mac.conv2d_acc(x, w, b64, (1, 1), (1, 1, 1, 1), 1, 0, 32, "wrap")),
        "xnor+1": numba_case(lambda: popcount.xnor_conv2d(xb, wb, (1, 1), (1, 1, 1, 1), 1, "+1")),
        "xnor0": numba_case(lambda: popcount.xnor_conv2d(xb, wb, (1, 1), (1, 1, 1, 1), 1, "zero")),
        "mac16": numba_case(lambda: mac.conv2d_acc(x, w, b64, (1, 1), (1, 1, 1, 1), 1, 0, 16, "saturate")),
    }

    # correctness first (this also compiles everything)
    y_ort = cases["ort"](1)()
    acc, overflows = cases["mac"](1)()
    mac_ok = overflows == 0 and np.array_equal(acc, exact_conv(x, w) + bias[None, :, None, None])
    ort_mismatch = int(np.count_nonzero(requantize_like_ort(acc, scales) != y_ort))
    xb_pm, wb_pm = 1 - 2 * xb.astype(np.int64), 1 - 2 * wb.astype(np.int64)
    xnor_ok = {"xnor+1": np.array_equal(cases["xnor+1"](1)(), exact_conv(xb_pm, wb_pm, 1)),
               "xnor0": np.array_equal(cases["xnor0"](1)(), exact_conv(xb_pm, wb_pm, 0))}
    acc16, count16 = cases["mac16"](1)()
    mac16_ok = np.array_equal(acc16[:, :, :3, :3], mac.conv2d_acc_reference(x[:, :, :4, :4], w, b64, (1, 1), (1, 1, 1, 1), 1, 0,
                                                               16, "saturate")[0][:, :, :3, :3])

    times = time_rounds(cases, rounds, repeats)
    ort_rate, ort_threads = rates(times["ort"])
    mac_rate, mac_threads = rates(times["mac"])
    ratio = mac_rate / ort_rate
    print(f"ONNX Runtime QLinearConv   {ort_rate:7.1f} GMAC/s   (per threads: {fmt(ort_threads)})")
    print(f"hwsim conv2d_acc (int8)    {mac_rate:7.1f} GMAC/s   (per threads: {fmt(mac_threads)})  "
          f"ratio to ORT {ratio:.2f} (target ≥ {TARGET_8BIT_RATIO})  exact: {mac_ok}")
    print(f"  ORT output vs float32 requantization of the exact accumulators: {ort_mismatch} of {y_ort.size} differ")
    binary = {}
    for name, mode in (("xnor+1", "+1"), ("xnor0", "zero")):
        rate, per_thread = rates(times[name])
        binary[mode] = {"gmacs": rate, "per_threads": per_thread, "ratio_to_8bit": rate / mac_rate,
                        "exact": xnor_ok[name]}
        print(f"hwsim xnor_conv2d pad {mode:4s} {rate:7.1f} GMAC/s   (per threads: {fmt(per_thread)})  "
              f"{rate / mac_rate:.1f}x the 8-bit rate (target ≥ {TARGET_BINARY_RATIO}x)  exact: {xnor_ok[name]}")
    seq_rate, seq_threads = rates(times["mac16"])
    print(f"hwsim conv2d_acc, 16-bit saturating accumulator (sequential kernel, {count16} overflowing outputs): "
          f"{seq_rate:.1f} GMAC/s   (per threads: {fmt(seq_threads)})  matches reference: {mac16_ok}")

    results = {
        "layer": "56x56x64 -> 64, 3x3, pad 1, stride 1, batch 1", "macs": MACS,
        "timing": f"{rounds} interleaved rounds x {repeats} runs per case and thread count; median",
        "machine": machine_info(),
        "ort_qlinearconv": {"gmacs": ort_rate, "per_threads": ort_threads},
        "hwsim_conv2d_acc": {"gmacs": mac_rate, "per_threads": mac_threads, "ratio_to_ort": ratio,
                             "target": TARGET_8BIT_RATIO, "exact": mac_ok,
                             "ort_outputs_differing_from_exact_requantization": ort_mismatch},
        "hwsim_xnor_conv2d": binary | {"target_ratio_to_8bit": TARGET_BINARY_RATIO},
        "hwsim_conv2d_acc_sequential_16bit_saturate": {"gmacs": seq_rate, "per_threads": seq_threads,
                                                       "overflowing_outputs": count16},
    }
    out = ROOT / "benchmarks" / "results" / "kernels.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(results, indent=2, default=str) + "\n")
    os.replace(tmp, out)
    print(f"wrote {out.relative_to(ROOT)}")
    return 0 if mac_ok and mac16_ok and all(xnor_ok.values()) else 1


def fmt(per_thread: dict) -> str:
    return ", ".join(f"{t}: {v:.1f}" for t, v in per_thread.items())


def machine_info() -> dict:
    from llvmlite import binding
    from numba.core.codegen import get_host_cpu_features

    feats = get_host_cpu_features()
    return {"cpu": binding.get_host_cpu_name(), "cores": os.cpu_count(), "python": platform.python_version(),
            "numpy": np.__version__, "numba": numba.__version__, "onnxruntime": ort.__version__,
            "simd_vector_bits": im2col.VECTOR_BITS,
            "vnni": "+avx512vnni" in feats or "+avxvnni" in feats,
            "load_average_at_end": os.getloadavg()}


if __name__ == "__main__":
    sys.exit(main())
