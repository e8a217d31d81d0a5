"""hwsim's engine on imported ONNX models equals ONNX Runtime on the original quantized model, bit for bit.

Random small float models (tests/onnx_factory.py) are quantized by onnxruntime.quantization.quantize_static in
every combination of format (QDQ, QOperator), types (u8 x s8, s8 x s8, u8 x u8), per-channel and reduce_range
(7-bit weights), imported, and run on random inputs (float32, some saturating). The comparison is on ORT's own
output: float32 after the final DequantizeLinear (or the 8-bit codes when the graph ends quantized).
The importer matches the ORT of the machine the tests run on (`ort_cpu="host"`): with VNNI ORT's u8 x s8 kernels
are exact integer sums; on x86 AVX2 without VNNI they saturate product pairs to int16, and the importer gives
those layers the x86_pair_sat16 datapath (docs/references.md §4). The tests at the end check that choice.
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

import onnx  # noqa: E402

from onnx_factory import TYPE_COMBOS, ort_float_nodes, ort_run, quantize, random_float_model  # noqa: E402
from simulator.engine import Engine, quantize_input  # noqa: E402
from simulator.importers.onnx_import import import_onnx  # noqa: E402
from simulator.qnn.model_io import load_model, save_model  # noqa: E402
from simulator.report import output_array  # noqa: E402

N_MODELS = 48
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def settings(seed):
    """Every (format, types, per_channel, reduce_range) combination appears twice in 48 seeds."""
    rng = np.random.default_rng(seed + 999)
    extra = {"WeightSymmetric": bool(rng.integers(2))} if rng.integers(3) == 0 else {}
    return dict(fmt=("QDQ", "QOperator")[seed % 2], types=tuple(TYPE_COMBOS)[(seed // 2) % 3],
                per_channel=bool((seed // 6) % 2), reduce_range=bool((seed // 12) % 2), extra_options=extra)


def build(tmp_path, seed):
    proto, shape, desc = random_float_model(seed)
    fpath, qpath = tmp_path / "float.onnx", tmp_path / "quant.onnx"
    onnx.save(proto, str(fpath))
    quantize(fpath, qpath, shape, seed=seed, **settings(seed))
    return qpath, shape, desc


def inputs(seed, shape, n=16):
    rng = np.random.default_rng(seed + 7)
    return (rng.normal(size=(n,) + tuple(shape)) * (1.0, 3.0)[seed % 2]).astype(np.float32)


def hwsim_out(model, x):
    return output_array(model, Engine(model).run(quantize_input(model, x)).output)


@pytest.mark.parametrize("seed", range(N_MODELS))
def test_random_model_bit_exact(tmp_path, seed):
    """Default ORT session; for the few int8 QDQ graphs ORT itself leaves partly in float32 (its QDQS8ToU8
    rewrite, see import_onnx), the importer must name exactly those nodes, and hwsim then equals ORT run with
    session.qdqisint8allowed=1, where every group runs on ORT's integer kernels."""
    qpath, shape, desc = build(tmp_path, seed)
    x = inputs(seed, shape)
    model = import_onnx(qpath)
    floats = ort_float_nodes(qpath)
    assert sorted(model.metadata.get("ort_float_nodes", [])) == floats
    int8_allowed = bool(floats)
    if int8_allowed:
        assert ort_float_nodes(qpath, int8_allowed=True) == []
        model = import_onnx(qpath, qdq_int8_allowed=True)
    ref = ort_run(qpath, x, int8_allowed)
    out = hwsim_out(model, x)
    assert out.dtype == ref.dtype
    out = out.reshape(ref.shape)
    bad = int(np.sum(out != ref))
    assert bad == 0, f"{desc} {settings(seed)}: {bad} of {ref.size} outputs differ from ONNX Runtime"
    # the .qnn round trip keeps every field the arithmetic needs
    save_model(model, tmp_path / "m.qnn")
    again = load_model(tmp_path / "m.qnn")
    assert again.input_division == "float32" and again.output_dequantize
    np.testing.assert_array_equal(hwsim_out(again, x).reshape(ref.shape), ref)


def test_factory_covers_every_op():
    ops, kinds = set(), set()
    for seed in range(N_MODELS):
        proto, _, desc = random_float_model(seed)
        ops |= {n.op_type for n in proto.graph.node}
        kinds.add(desc.split(":")[0] == "mlp")
        for n in proto.graph.node:
            if n.op_type == "Conv":
                group = [a.i for a in n.attribute if a.name == "group"][0]
                strides = [a.ints for a in n.attribute if a.name == "strides"][0]
                ops |= {"depthwise"} if group > 1 and len(n.input) else set()
                ops |= {"strided"} if strides[0] > 1 else set()
                ops |= {"bias"} if len(n.input) == 3 else set()
    want = {"Conv", "Relu", "Clip", "Add", "MaxPool", "AveragePool", "GlobalAveragePool", "Concat", "Flatten",
            "Reshape", "Gemm", "MatMul", "depthwise", "strided", "bias"}
    assert want <= ops, want - ops
    assert kinds == {True, False}
    combos = {(s["fmt"], s["types"], s["per_channel"], s["reduce_range"]) for s in map(settings, range(N_MODELS))}
    assert len(combos) == 24


def test_quantized_output_codes(tmp_path):
    """A graph that ends in QuantizeLinear (no DequantizeLinear): the output is the 8-bit codes."""
    qpath, shape, _ = build(tmp_path, 3)
    proto = onnx.load(str(qpath))
    last = proto.graph.node[-1]
    assert last.op_type == "DequantizeLinear"
    codes_name = last.input[0]
    del proto.graph.node[-1]
    proto.graph.output[0].name = codes_name
    proto.graph.output[0].type.tensor_type.elem_type = onnx.TensorProto.INT8
    cpath = tmp_path / "codes.onnx"
    onnx.save(proto, str(cpath))
    x = inputs(3, shape)
    ref = ort_run(cpath, x)
    model = import_onnx(cpath)
    assert not model.output_dequantize
    out = hwsim_out(model, x)
    assert out.dtype == ref.dtype == np.int8
    np.testing.assert_array_equal(out.reshape(ref.shape), ref)


def _cli(*args, cwd):
    env = {**os.environ, "PYTHONPATH": REPO + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run([sys.executable, "-m", "simulator.cli", *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def test_cli_import_then_run(tmp_path):
    seed = next(s for s in range(N_MODELS) if "res" in random_float_model(s)[2]
                and settings(s)["fmt"] == "QDQ")
    qpath, shape, _ = build(tmp_path, seed)
    x = inputs(seed, shape, n=8)
    np.save(tmp_path / "x.npy", x)
    r = _cli("import", qpath, "-o", tmp_path / "m.qnn", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    r = _cli("run", tmp_path / "m.qnn", "--hw", "tsmc90", "--input", tmp_path / "x.npy", "--output",
             tmp_path / "y.npy", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    y = np.load(tmp_path / "y.npy", allow_pickle=False)
    ref = ort_run(qpath, x)
    assert y.dtype == np.float32
    np.testing.assert_array_equal(y.reshape(ref.shape), ref)


def test_validate_runs_on_imported_model(tmp_path):
    from simulator.validate import compare
    qpath, shape, _ = build(tmp_path, 5)
    model = import_onnx(qpath)
    engine = Engine(model)
    result = compare(engine, quantize_input(model, inputs(5, shape)), 1, 64)
    assert result.to_dict()  # runs layer by layer against the float reference; ORT's float32 may differ by 1 LSB


def test_cli_ort_qdq_int8_allowed_flag(tmp_path):
    """The import flag reaches the importer and is recorded with the model."""
    from simulator.cli import main
    from simulator.qnn.model_io import load_model
    from pathlib import Path
    src = Path(__file__).resolve().parents[1] / "models" / "lenet_digits_ort_qdq.onnx"
    for flag, expected in (([], False), (["--ort-qdq-int8-allowed"], True)):
        out = tmp_path / f"m{int(expected)}.qnn"
        assert main(["import", str(src), "-o", str(out), *flag]) == 0
        assert load_model(out).metadata["ort_qdq_int8_allowed"] is expected


def test_host_int8_path_follows_the_cpu_features(monkeypatch):
    """NUMBA_CPU_FEATURES (what numba compiles for) decides, as the host's flags do without it."""
    from simulator.importers.onnx_import import host_int8_path
    for feats, expected in (("+avx2,+fma", "avx2"), ("+avx2,+avx512vnni", "vnni"), ("+avx2,+avxvnni", "vnni"),
                            ("+neon,+dotprod", "vnni"), ("+sse4.2", "vnni")):
        monkeypatch.setenv("NUMBA_CPU_FEATURES", feats)
        assert host_int8_path() == expected


@pytest.mark.parametrize("ort_cpu", ["vnni", "avx2"])
def test_ort_cpu_chooses_the_u8s8_datapath(tmp_path, ort_cpu):
    """On an AVX2 CPU without VNNI, every u8 x s8 conv / dense layer but the depthwise ones gets the
    pair-saturating datapath; with VNNI every layer stays exact. The CLI option says the same."""
    seed = next(s for s in range(N_MODELS) if "conv" in random_float_model(s)[2])
    proto, shape, _ = random_float_model(seed)
    fpath, path = tmp_path / "float.onnx", tmp_path / "quant.onnx"
    onnx.save(proto, str(fpath))
    quantize(fpath, path, shape, seed=seed, fmt="QDQ", types="u8s8")
    model = import_onnx(path, ort_cpu=ort_cpu)
    assert model.metadata["ort_cpu"] == {"requested": ort_cpu, "int8_kernel": ort_cpu}
    macs = [lay for lay in model.layers if lay.op in ("conv2d", "dense")]
    assert macs
    for lay in macs:
        depthwise = lay.op == "conv2d" and lay.weight.shape[1] == 1 and lay.weight.shape[0] == lay.attr("groups")
        expected = "x86_pair_sat16" if ort_cpu == "avx2" and not depthwise else "exact"
        assert lay.attr("datapath") == expected, lay.name
    out = tmp_path / "m.qnn"
    proc = subprocess.run([sys.executable, "-m", "simulator.cli", "import", str(path), "-o", str(out),
                           "--ort-cpu", ort_cpu], capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    assert [lay.attr("datapath") for lay in load_model(str(out)).layers if lay.op in ("conv2d", "dense")] == \
        [lay.attr("datapath") for lay in macs]
