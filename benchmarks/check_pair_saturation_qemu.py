"""Check hwsim's `datapath: x86_pair_sat16` against real ONNX Runtime on an x86 CPU without VNNI (emulated).

    apt-get install -y qemu-user          # provides qemu-x86_64
    python benchmarks/check_pair_saturation_qemu.py [--cpu Haswell] [--qemu qemu-x86_64]

ONNX Runtime's uint8 x int8 kernels (MLAS) use `vpmaddubsw` on x86 without VNNI: adjacent pairs of u8·s8
products are summed into int16 with saturation. On this machine (VNNI) ORT is exact, so the same Python and
onnxruntime are run under `qemu-x86_64 -cpu Haswell` (AVX2, no VNNI, no AVX-512), where MLAS's CPUID dispatch
picks its AVX2 kernels. Cases cover every MLAS path a u8 x s8 layer can take:

- QLinearConv, symmetric weights (zero point 0), C_in % 4 == 0, C_out >= 16: the ConvSym kernel (indirection
  buffer, input channels in groups of 4 per kernel tap);
- QLinearConv with odd C_in / C_out < 16 / weight zero point != 0 / groups / pointwise: the im2col (NHWC) GEMM
  path, where with odd C_in a pair joins the last channel of one tap and the first of the next;
- QLinearConv depthwise (one channel per group): ORT's depthwise kernel, exact (hwsim refuses the x86 datapath
  there; compared with hwsim's exact datapath);
- QLinearMatMul (per-tensor and per-column weight zero points), MatMulInteger (int32 out, zero points
  != 0, odd K) and MatMulInteger with M = 1 and zero points 0 (MLAS's GEMV kernel);
- long reductions (K = 423 and 1001) that MLAS splits into K blocks (multiples of 4: pairs stay aligned).

For each case it prints and saves (benchmarks/results/pair_saturation.json): ORT-under-qemu vs exact integer
math (hwsim with the exact datapath, same float32 requantization as ORT), ORT-under-qemu vs hwsim with
`x86_pair_sat16`, and native ORT vs hwsim with this host's datapath (exact on a VNNI CPU, x86_pair_sat16 on
an x86 CPU without VNNI: `import_onnx`'s `host_int8_path`). Weights are full-range int8 codes.
The ORT worker runs without hwsim (numpy + onnxruntime only), so the emulated part stays short.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "pair_saturation.json"
# TCG cannot emulate these Haswell features; dropping them silences qemu's warnings (ORT does not use them)
CPU_TWEAKS = ",-pcid,-x2apic,-tsc-deadline,-hle,-invpcid,-rtm"


# ----------------------------------------------------------------------------------------------------------
# Cases: (name, kind, parameters). Random codes: u8 activations and full-range s8 weights.
# ----------------------------------------------------------------------------------------------------------
CONV_CASES = [
    # name, x shape, w shape, stride, pads [top, left, bottom, right], groups, x zp, w zp, expected MLAS path
    ("conv_convsym_c8", (2, 8, 10, 10), (16, 8, 3, 3), (1, 1), (1, 1, 1, 1), 1, 7, 0, "ConvSym (AVX2)"),
    ("conv_gemm_odd_cin", (2, 3, 11, 9), (8, 3, 3, 3), (2, 2), (1, 0, 1, 1), 1, 128, 0, "im2col GEMM U8S8"),
    ("conv_gemm_wzp", (1, 4, 8, 8), (16, 4, 3, 3), (1, 1), (1, 1, 1, 1), 1, 30, 5, "im2col GEMM U8S8"),
    ("conv_gemm_grouped", (1, 6, 7, 7), (8, 3, 3, 3), (1, 1), (0, 1, 2, 1), 2, 0, 0, "im2col GEMM U8S8 per group"),
    ("conv_pointwise_odd", (2, 5, 6, 6), (8, 5, 1, 1), (1, 1), (0, 0, 0, 0), 1, 9, 0, "direct GEMM U8S8"),
    ("conv_depthwise", (1, 8, 6, 6), (8, 1, 3, 3), (1, 1), (1, 1, 1, 1), 8, 11, 0, "depthwise (exact)"),
    ("conv_gemm_long_k", (1, 47, 6, 5), (8, 47, 3, 3), (1, 1), (1, 1, 1, 1), 1, 60, 0, "im2col GEMM U8S8, K=423"),
]
MATMUL_CASES = [
    # name, M, K, N, a zp, b zp (int or list per column), op
    ("qlinearmatmul", 6, 37, 12, 100, 0, "QLinearMatMul"),
    ("qlinearmatmul_col_zp", 4, 64, 10, 17, [-3, 0, 2, 5, -1, 0, 4, -2, 1, 3], "QLinearMatMul"),
    ("qlinearmatmul_long_k", 3, 1001, 16, 40, 1, "QLinearMatMul"),
    ("matmulinteger_zp", 5, 33, 10, 3, -2, "MatMulInteger"),
    ("matmulinteger_gemv", 1, 40, 24, 0, 0, "MatMulInteger"),
]


def _rng(name):
    return np.random.default_rng(sum(map(ord, name)))


def make_cases(workdir: Path) -> list:
    """Write the ONNX models and inputs into workdir; return the case descriptions (JSON-able)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    def const(name, value):
        return numpy_helper.from_array(np.asarray(value), name)

    cases, inputs = [], {}
    for name, xs, ws, stride, pads, groups, xzp, wzp, path in CONV_CASES:
        rng = _rng(name)
        x = rng.integers(0, 256, xs, dtype=np.uint8)
        w = rng.integers(-128, 128, ws, dtype=np.int8)
        b = rng.integers(-20000, 20000, ws[0], dtype=np.int32)
        q = dict(x_scale=0.02, w_scale=0.003, y_scale=0.6, y_zp=120)
        inits = [const("xs", np.float32(q["x_scale"])), const("xzp", np.uint8(xzp)), const("w", w),
                 const("ws", np.float32(q["w_scale"])), const("wzp", np.int8(wzp)),
                 const("ys", np.float32(q["y_scale"])), const("yzp", np.uint8(q["y_zp"])), const("b", b)]
        node = helper.make_node("QLinearConv", ["x", "xs", "xzp", "w", "ws", "wzp", "ys", "yzp", "b"], ["y"],
                                strides=list(stride), pads=list(pads), group=groups,
                                kernel_shape=list(ws[2:]))
        graph = helper.make_graph([node], name, [helper.make_tensor_value_info("x", TensorProto.UINT8, list(xs))],
                                  [helper.make_tensor_value_info("y", TensorProto.UINT8, None)], inits)
        onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), workdir / f"{name}.onnx")
        inputs[f"{name}.x"] = x
        cases.append(dict(name=name, op="QLinearConv", mlas_path=path, x_shape=list(xs), w_shape=list(ws),
                          stride=list(stride), pads=list(pads), groups=groups, x_zp=xzp, w_zp=wzp, **q,
                          w=w.tolist(), b=b.tolist()))
    for name, m, k, n, azp, bzp, op in MATMUL_CASES:
        rng = _rng(name)
        a = rng.integers(0, 256, (m, k), dtype=np.uint8)
        bw = rng.integers(-128, 128, (k, n), dtype=np.int8)
        bzp_arr = np.int8(bzp) if np.isscalar(bzp) else np.asarray(bzp, np.int8).reshape(1, n)
        q = dict(a_scale=0.05, b_scale=0.002, y_scale=0.9, y_zp=100)
        if op == "QLinearMatMul":
            inits = [const("as", np.float32(q["a_scale"])), const("azp", np.uint8(azp)), const("bw", bw),
                     const("bs", np.float32(q["b_scale"])), const("bzp", bzp_arr),
                     const("ys", np.float32(q["y_scale"])), const("yzp", np.uint8(q["y_zp"]))]
            node = helper.make_node(op, ["x", "as", "azp", "bw", "bs", "bzp", "ys", "yzp"], ["y"])
            out_type = TensorProto.UINT8
        else:
            inits = [const("azp", np.uint8(azp)), const("bw", bw), const("bzp", bzp_arr)]
            node = helper.make_node(op, ["x", "bw", "azp", "bzp"], ["y"])
            out_type = TensorProto.INT32
        graph = helper.make_graph([node], name, [helper.make_tensor_value_info("x", TensorProto.UINT8, [m, k])],
                                  [helper.make_tensor_value_info("y", out_type, None)], inits)
        onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), workdir / f"{name}.onnx")
        inputs[f"{name}.x"] = a
        cases.append(dict(name=name, op=op, mlas_path="GEMV U8S8" if m == 1 and op == "MatMulInteger"
                          else "GEMM U8S8", m=m, k=k, n=n, a_zp=azp, b_zp=bzp, **q, b=bw.tolist()))
    np.savez(workdir / "inputs.npz", **inputs)
    (workdir / "cases.json").write_text(json.dumps([c["name"] for c in cases]))
    return cases


# ----------------------------------------------------------------------------------------------------------
# The ORT worker (run natively and under qemu): numpy + onnxruntime only
# ----------------------------------------------------------------------------------------------------------
def worker(workdir: Path, tag: str) -> None:
    import onnxruntime as ort

    names = json.loads((workdir / "cases.json").read_text())
    inputs = np.load(workdir / "inputs.npz")
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.log_severity_level = 3
    outs = {}
    for name in names:
        sess = ort.InferenceSession(str(workdir / f"{name}.onnx"), so, providers=["CPUExecutionProvider"])
        outs[name] = sess.run(None, {"x": inputs[f"{name}.x"]})[0]
    np.savez(workdir / f"out_{tag}.npz", **outs)
    (workdir / f"ort_{tag}.json").write_text(json.dumps({"onnxruntime": ort.__version__}))


def run_worker(workdir: Path, tag: str, prefix: list) -> dict:
    cmd = prefix + [sys.executable, str(Path(__file__).resolve()), "--worker", str(workdir), "--tag", tag]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(f"ORT worker ({' '.join(cmd[:3])}) failed:\n{proc.stderr[-3000:]}")
    data = np.load(workdir / f"out_{tag}.npz")
    info = json.loads((workdir / f"ort_{tag}.json").read_text())
    return {"outputs": {k: data[k] for k in data.files}, "seconds": time.perf_counter() - t0, **info}


# ----------------------------------------------------------------------------------------------------------
# hwsim side
# ----------------------------------------------------------------------------------------------------------
def _f32_multiplier(s_in, s_w, s_out):
    """ORT's output scale: float32(s_in * s_w) / s_out, each step rounded to float32."""
    return float((np.float32(s_in) * np.float32(s_w)) / np.float32(s_out))


def hwsim_outputs(case: dict, x: np.ndarray, datapath: str):
    """(output codes or int32 accumulators, saturated pairs, saturated outputs) of hwsim for one case."""
    sys.path.insert(0, str(ROOT))
    from simulator.encodings import UniformAct, UniformW
    from simulator.engine import Engine
    from simulator.graph import Layer, Model
    from simulator.kernels import mac, pairsat

    if case["op"] == "MatMulInteger":
        b = np.asarray(case["b"], np.int64)
        zw = np.broadcast_to(np.asarray(case["b_zp"], np.int64).reshape(-1), (case["n"],))
        if datapath == "exact":
            acc, _ = mac.dense_acc(x.astype(np.int64) - case["a_zp"], (b - zw).T, None, 32, "wrap")
            return acc, 0, 0
        acc, _, pairs, outs = pairsat.dense_pairsat_acc(x, b.T, case["a_zp"], zw, None, 32, "wrap")
        return acc, pairs, outs
    if case["op"] == "QLinearConv":
        w = np.asarray(case["w"], np.int8)
        mult = _f32_multiplier(case["x_scale"], case["w_scale"], case["y_scale"])
        layer = Layer("conv", "conv2d", ["input"],
                      {"stride": case["stride"], "padding": case["pads"], "groups": case["groups"],
                       "requant": "float32", "multiplier": [mult], "datapath": datapath},
                      UniformAct(8, False, case["y_scale"], case["y_zp"]), w,
                      UniformW(8, True, (case["w_scale"],), (case["w_zp"],)),
                      bias=np.asarray(case["b"], np.int64), bias_bits=32)
        model = Model(case["name"], tuple(case["x_shape"][1:]), UniformAct(8, False, case["x_scale"], case["x_zp"]),
                      [layer])
    else:  # QLinearMatMul: a dense layer over the rows of A
        b = np.asarray(case["b"], np.int8)
        zps = tuple(int(z) for z in np.asarray(case["b_zp"]).reshape(-1))
        mult = _f32_multiplier(case["a_scale"], case["b_scale"], case["y_scale"])
        layer = Layer("fc", "dense", ["input"], {"requant": "float32", "multiplier": [mult], "datapath": datapath},
                      UniformAct(8, False, case["y_scale"], case["y_zp"]), np.ascontiguousarray(b.T),
                      UniformW(8, True, (case["b_scale"],), zps))
        model = Model(case["name"], (case["k"],), UniformAct(8, False, case["a_scale"], case["a_zp"]), [layer])
    res = Engine(model).run(x)
    lay = res.trace.layers[0]
    return res.output, lay.pair_saturations, lay.pair_saturated_outputs


# ----------------------------------------------------------------------------------------------------------
def find_qemu(explicit: str | None) -> str | None:
    return shutil.which(explicit or "qemu-x86_64")


def check(qemu: str, cpu: str = "Haswell", out: Path | None = RESULTS, verbose: bool = True) -> dict:
    if platform.machine() not in ("x86_64", "AMD64"):
        raise RuntimeError(f"this check runs the host's x86-64 Python under qemu-x86_64; host is {platform.machine()}")
    from simulator.importers.onnx_import import host_int8_path
    host_path = host_int8_path()   # what native ORT computes here: exact sums, or the pair-saturating kernels
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="pairsat_") as tmp:
        workdir = Path(tmp)
        cases = make_cases(workdir)
        inputs = np.load(workdir / "inputs.npz")
        native = run_worker(workdir, "native", [])
        emulated = run_worker(workdir, "qemu", [qemu, "-cpu", cpu + CPU_TWEAKS])
        rows = []
        for case in cases:
            name = case["name"]
            x = inputs[f"{name}.x"]
            exact, _, _ = hwsim_outputs(case, x, "exact")
            depthwise = case["op"] == "QLinearConv" and case["w_shape"][1] == 1 and case["groups"] == case["w_shape"][0]
            if depthwise:  # hwsim refuses x86_pair_sat16 here; ORT's depthwise kernel is exact
                x86, pairs, outs = exact, 0, 0
            else:
                x86, pairs, outs = hwsim_outputs(case, x, "x86_pair_sat16")
            q, nat = emulated["outputs"][name], native["outputs"][name]
            assert q.shape == x86.shape == nat.shape, (name, q.shape, x86.shape, nat.shape)
            rows.append({
                "case": name, "op": case["op"], "mlas_path": case["mlas_path"],
                "hwsim_datapath": "exact (depthwise)" if depthwise else "x86_pair_sat16",
                "output": "int32 accumulators" if case["op"] == "MatMulInteger" else "uint8 codes",
                "elements": int(q.size),
                "qemu_ort_vs_exact_mismatches": int(np.count_nonzero(q.astype(np.int64) != exact)),
                "qemu_ort_vs_hwsim_x86_mismatches": int(np.count_nonzero(q.astype(np.int64) != x86)),
                "native_ort_vs_hwsim_host_mismatches": int(np.count_nonzero(
                    nat.astype(np.int64) != (x86 if host_path == "avx2" else exact))),
                "saturated_pairs": int(pairs), "saturated_outputs": int(outs),
                "max_abs_diff_qemu_vs_exact": int(np.abs(q.astype(np.int64) - exact).max(initial=0)),
            })
    total = {k: sum(r[k] for r in rows) for k in ("elements", "qemu_ort_vs_exact_mismatches",
                                                  "qemu_ort_vs_hwsim_x86_mismatches",
                                                  "native_ort_vs_hwsim_host_mismatches")}
    result = {
        "what": "ONNX Runtime u8 x s8 kernels under qemu-x86_64 (AVX2, no VNNI) vs hwsim datapaths",
        "qemu": qemu, "qemu_cpu": cpu + CPU_TWEAKS, "onnxruntime": native["onnxruntime"],
        "host_cpu_has_vnni": _host_has_vnni(), "host_int8_path": host_path, "python": sys.version.split()[0],
        "ort_seconds": {"native": round(native["seconds"], 2), "qemu": round(emulated["seconds"], 2)},
        "wall_seconds": round(time.perf_counter() - t0, 2),
        "passed": total["qemu_ort_vs_hwsim_x86_mismatches"] == 0 and total["native_ort_vs_hwsim_host_mismatches"] == 0,
        "totals": total, "cases": rows,
    }
    if verbose:
        print(format_table(result))
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp_out = out.with_suffix(".json.tmp")
        tmp_out.write_text(json.dumps(result, indent=2) + "\n")
        os.replace(tmp_out, out)
        if verbose:
            print(f"saved {out}")
    return result


def _host_has_vnni() -> bool | None:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    return "avx512_vnni" in flags or "avx_vnni" in flags


def format_table(result: dict) -> str:
    head = ["case", "MLAS path", "elements", "qemu ORT != exact", "qemu ORT != hwsim x86", "native ORT != hwsim host",
            "sat. pairs", "sat. outputs", "max |diff|"]
    rows = [[r["case"], r["mlas_path"], r["elements"], r["qemu_ort_vs_exact_mismatches"],
             r["qemu_ort_vs_hwsim_x86_mismatches"], r["native_ort_vs_hwsim_host_mismatches"], r["saturated_pairs"],
             r["saturated_outputs"], r["max_abs_diff_qemu_vs_exact"]] for r in result["cases"]]
    widths = [max(len(str(v)) for v in col) for col in zip(head, *rows)]
    lines = [f"onnxruntime {result['onnxruntime']} under {Path(result['qemu']).name} -cpu {result['qemu_cpu']} "
             f"(host VNNI: {result['host_cpu_has_vnni']})",
             "  ".join(str(h).rjust(w) for h, w in zip(head, widths)),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(str(v).rjust(w) for v, w in zip(row, widths)) for row in rows]
    t = result["totals"]
    lines.append(f"total: {t['elements']:,} outputs; ORT without VNNI differs from exact math on "
                 f"{t['qemu_ort_vs_exact_mismatches']:,}; hwsim x86_pair_sat16 differs from it on "
                 f"{t['qemu_ort_vs_hwsim_x86_mismatches']:,}; native ORT vs hwsim with this host's datapath: "
                 f"{t['native_ort_vs_hwsim_host_mismatches']:,}  -> {'PASS' if result['passed'] else 'FAIL'}")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--qemu", help="qemu-x86_64 binary (default: from PATH)")
    ap.add_argument("--cpu", default="Haswell", help="qemu CPU model with AVX2 and without VNNI (default Haswell)")
    ap.add_argument("--out", default=str(RESULTS), help="JSON file for the figures")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--tag", default="native", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        worker(Path(args.worker), args.tag)
        return 0
    qemu = find_qemu(args.qemu)
    if qemu is None:
        print("qemu-x86_64 not found: install it (apt-get install -y qemu-user) or pass --qemu", file=sys.stderr)
        return 2
    result = check(qemu, args.cpu, Path(args.out))
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
