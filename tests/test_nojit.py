"""Every numba kernel also runs as plain Python (Python mode: NUMBA_DISABLE_JIT=1, or small command-line runs), bit for bit the same.

A child process with the JIT disabled runs the engine on a few samples of every shipped model, and the kernels
on small cases that the models do not reach (wrap / saturate / 64-bit accumulators, operands beyond int16,
depthwise, every binary padding mode, the x86 pair-saturation datapath); this process computes the same with
the JIT and the two must agree exactly: output codes, event counts, overflow counts and dtypes.
Run as a script (`python tests/test_nojit.py OUT.pkl`), this file is that child.
"""
from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
MODELS = sorted((ROOT / "models").glob("lenet_digits_*.qnn"))
SAMPLES = 3


def model_results() -> dict:
    from simulator.engine import Engine, check_input_shape, quantize_input
    from simulator.qnn.model_io import load_model

    x = np.load(ROOT / "models" / "digits_test.npz")["x"][:SAMPLES]
    out = {}
    for path in MODELS:
        model = load_model(str(path))
        res = Engine(model).run(check_input_shape(model, quantize_input(model, x)))
        counts = [sorted((k, repr(v)) for k, v in vars(lay).items()) for lay in res.trace.layers]
        out[path.name] = (res.output, counts)
    return out


def kernel_results() -> dict:
    from simulator.kernels import mac, pairsat, popcount

    rng = np.random.default_rng(8)
    out = {}
    x = rng.integers(-40, 41, (2, 4, 7, 6))
    w = rng.integers(-60, 61, (6, 4, 3, 3))
    bias = rng.integers(-500, 501, 6)
    for acc_bits, policy in ((12, "wrap"), (12, "saturate"), (32, "wrap"), (2, "saturate")):
        out[f"conv {acc_bits} {policy}"] = mac.conv2d_acc(x, w, bias, (2, 1), (1, 0, 2, 1), 1, 3, acc_bits, policy)
        out[f"dense {acc_bits} {policy}"] = mac.dense_acc(x.reshape(2, -1)[:, :20], w.reshape(6, -1)[:, :20], bias,
                                                          acc_bits, policy)
    big_x, big_w = rng.integers(-65535, 65536, (1, 2, 5, 5)), rng.integers(-65535, 65536, (4, 2, 2, 2))
    out["conv beyond int16"] = mac.conv2d_acc(big_x, big_w, None, (1, 1), (1, 1, 1, 1), 1, -65535, 48, "wrap")
    for policy in ("wrap", "saturate"):  # the 64-bit register: numba's wrapping int64 add
        xs = np.full((1, 1, 1, 8), 65535)
        ws = np.full((3, 1, 1, 8), 65535) * np.array([1, -1, 1])[:, None, None, None]
        b = np.array([2**63 - 2**33, -(2**63) + 2**33, 5])
        out[f"conv 64 {policy}"] = mac.conv2d_acc(xs.reshape(1, 8, 1, 1), ws.reshape(3, 8, 1, 1), b, (1, 1),
                                                  (0, 0, 0, 0), 1, 0, 64, policy)
    out["depthwise"] = mac.conv2d_acc(x, rng.integers(-9, 10, (8, 1, 3, 3)), None, (1, 1), (1, 1, 1, 1), 4, 0,
                                      16, "saturate")
    xb, wb = rng.integers(0, 2, (2, 70, 5, 6)), rng.integers(0, 2, (8, 35, 3, 2))
    for mode in popcount.PAD_MODES:
        out[f"xnor {mode}"] = popcount.xnor_conv2d(xb, wb, (1, 2), (1, 1, 2, 0), 2, mode)
    out["xnor dense"] = popcount.xnor_dense(xb.reshape(2, -1)[:, :130], wb.reshape(8, -1)[:, :130])
    out["pack_bits"] = popcount.pack_bits(xb, axis=1)
    xc, wc = rng.integers(0, 256, (2, 3, 6, 5)), rng.integers(-128, 128, (4, 3, 3, 3))
    for acc_bits, policy in ((32, "wrap"), (16, "saturate"), (64, "wrap")):
        out[f"pairsat {acc_bits} {policy}"] = pairsat.conv2d_pairsat_acc(
            xc, wc, 7, rng.integers(-3, 4, 4), rng.integers(-999, 1000, 4), (1, 2), (1, 1, 0, 1), 1, 7, acc_bits,
            policy)
    out["pairsat dense"] = pairsat.dense_pairsat_acc(xc.reshape(2, -1)[:, :27], wc.reshape(4, -1)[:, :27], 128, 0,
                                                     None, 32, "wrap")
    # the code-driven fast paths (kernels/codes_path.py, epilogue.py, code_tables.py)
    from simulator.encodings import KnqAct, UniformAct
    from simulator.kernels import code_tables, codes_path, epilogue
    from simulator.kernels.im2col import conv_geometry
    codes = rng.integers(0, 256, (2, 6, 7, 6)).astype(np.uint8)
    table = np.arange(256) - 100
    for name, wshape, groups, stride in (("dw3x3", (6, 1, 3, 3), 6, (2, 1)), ("dw2x2 x2", (12, 1, 2, 2), 6, (1, 1)),
                                          ("conv", (8, 6, 3, 3), 1, (1, 2))):
        wv = rng.integers(-128, 128, wshape)
        g = conv_geometry(codes.shape, wv.shape, stride, (1, 1, 1, 0), groups)
        out[f"codes {name}"] = codes_path.conv2d_sum_codes(codes, table, 0, wv, None, g, 3, 155, 128, np.int32)
        if groups == 1:
            out[f"u8 {name}"] = codes_path.conv2d_sum_u8(codes, 0, -100, wv, None, g, 103, 128, np.int32, _chunk=2)
        out[f"zero taps {name}"] = codes_path.zero_taps_codes(codes, table == 0, 0, g, True)
    for name, (hw, stride) in (("dw fused", ((6, 7), (2, 1))), ("dw fused planar", ((4, 35), (1, 1)))):
        dcodes = rng.integers(0, 256, (2, 5) + hw).astype(np.uint8)
        wv = rng.integers(-128, 128, (5, 1, 3, 3))
        g = conv_geometry(dcodes.shape, wv.shape, stride, (1, 1, 1, 0), 5)
        for mode, enc in (("float32", UniformAct(8)), ("float64", KnqAct(2, (0, 3, 10, 40), (), 0))):
            ep = epilogue.make_epilogue(np.array([0.001, 0.003, 0.0007, 0.002, 0.01]), mode, (0, 200), enc)
            out[f"{name} {mode}"] = codes_path.depthwise_codes(dcodes, table, 0, wv, rng.integers(-999, 999, 5), g,
                                                               0, 155, ep)
    out["xnor signs"] = popcount.signs(rng.integers(-99, 99, (2, 3, 5)).astype(np.int32),
                                       np.array([2**31, 5, -2**33]))
    acc = rng.integers(-2**20, 2**20, (2, 3, 10))
    for mode in ("float32", "float64", "fixed_double", "fixed_single", "shift"):
        m = np.array([2.0 ** -9, 2.0 ** -7, 2.0 ** -12]) if mode == "shift" else np.array([0.001, 0.003, 0.0007])
        out[f"epilogue {mode}"] = epilogue.run_epilogue(epilogue.make_epilogue(m, mode, (0, 200), UniformAct(8)),
                                                        acc)
    out["maxpool codes"] = code_tables.maxpool_codes(codes, (3, 2), (2, 1), (1, 0, 1, 1))
    out["maxpool tiled"] = code_tables.maxpool_codes(codes[:, :, :6], (2, 3), (2, 3), (0, 0, 0, 0))
    out["maxpool tiled 2x2"] = code_tables.maxpool_codes(codes[:, :, :6], (2, 2), (2, 2), (0, 0, 0, 0))
    out["lookup2"] = code_tables.lookup2(codes[:, :3], codes[:, 3:], rng.integers(0, 9, (256, 256)).astype(np.uint8),
                                         0, 0)
    return out


def _same(a, b) -> bool:
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return (isinstance(a, np.ndarray) and isinstance(b, np.ndarray) and a.dtype == b.dtype
                and a.shape == b.shape and np.array_equal(a, b))
    if isinstance(a, (tuple, list)):
        return type(a) is type(b) and len(a) == len(b) and all(_same(p, q) for p, q in zip(a, b))
    return type(a) is type(b) and a == b


def test_kernels_bit_exact_without_the_jit(tmp_path):
    out_file = tmp_path / "nojit.pkl"
    env = dict(os.environ, NUMBA_DISABLE_JIT="1")
    proc = subprocess.run([sys.executable, "-W", "error", __file__, str(out_file)], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stderr == ""  # not even a warning (numpy's scalar overflow warnings, say)
    nojit = pickle.loads(out_file.read_bytes())
    assert nojit["jit disabled"] is True
    from simulator import jit
    assert jit.mode() == jit.NUMBA  # this side compiled
    assert len(MODELS) >= 6
    jit = {"models": model_results(), "kernels": kernel_results()}
    for part in ("models", "kernels"):
        assert sorted(nojit[part]) == sorted(jit[part])
        different = [name for name in jit[part] if not _same(jit[part][name], nojit[part][name])]
        assert not different, f"{part} differing without the JIT: {different}"


def test_report_identical_without_the_jit(tmp_path):
    """The whole command, cost model (hw/access.py's numba loops) included: the same JSON report but timings."""
    reports = []
    for disable in ("0", "1"):
        path = tmp_path / f"report{disable}.json"
        # HWSIM_KERNELS=numba: this small run would take Python mode by itself (simulator/jit.py)
        env = dict(os.environ, NUMBA_DISABLE_JIT=disable, HWSIM_KERNELS="numba" if disable == "0" else "auto")
        model = str(ROOT / "models" / "lenet_digits_xnor.qnn")
        proc = subprocess.run([sys.executable, "-m", "simulator.cli", "run", model, "--hw", "eyeriss65", "--json",
                               str(path)], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr[-3000:]
        report = json.loads(path.read_text())
        report.pop("timing")
        reports.append(report)
    assert reports[0] == reports[1]


if __name__ == "__main__":  # the child: NUMBA_DISABLE_JIT=1 in its environment
    from simulator import jit

    result = {"models": model_results(), "kernels": kernel_results()}
    result["jit disabled"] = jit.mode() == jit.PYTHON and "numba" not in sys.modules   # no numba at all
    
    Path(sys.argv[1]).write_bytes(pickle.dumps(result))
