"""Hostile `.qnn` and ONNX files with *valid* checksums (issue 8): unbounded work from a tiny file, fields trusted
without a check, a sample input far larger than its file. Every case goes through the CLI (`simulator.cli.main`)
and must end in exit 2 with one line on stderr, fast and with bounded memory -- or, for the fuzzer, in exit 0.

The work and memory budget (simulator.graph.check_budget, docs/qnn-format.md "Limits") is computed from the
header alone, so `inspect`, `import` and `run` refuse the same files before any work starts.
"""

from __future__ import annotations

import copy
import json
import struct
import time
import tracemalloc
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from simulator.cli import main
from simulator.qnn.container import MAGIC, read_container, write_container

MODELS = sorted((Path(__file__).resolve().parents[1] / "models").glob("lenet_digits_*.qnn"))
HW = "tsmc90"
U8 = {"kind": "uniform", "bits": 8, "signed": False, "scale": 0.05, "zero_point": 0}
TIME_LIMIT_S = 2.0
MEMORY_LIMIT = 200 << 20   # peak Python/numpy allocations while a hostile file is refused


@pytest.fixture(scope="module", autouse=True)
def _warm_up():
    """Imports, the hardware file cache and the JIT compile happen once, outside the timed and traced calls."""
    import contextlib
    import io
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        for model in MODELS:
            main(["run", str(model), "--hw", HW])


def cli(capsys, *argv, trace_memory=True):
    """Run the CLI in-process: (exit status, stdout, stderr lines, seconds, peak traced bytes)."""
    if trace_memory:
        tracemalloc.start()
    t0 = time.perf_counter()
    try:
        rc = main([str(a) for a in argv])
    finally:
        elapsed = time.perf_counter() - t0
        peak = tracemalloc.get_traced_memory()[1] if trace_memory else 0
        if trace_memory:
            tracemalloc.stop()
    out, err = capsys.readouterr()
    return rc, out, err.splitlines(), elapsed, peak


def refused(capsys, *argv, words=()):
    rc, _, err, elapsed, peak = cli(capsys, *argv)
    assert rc == 2, (rc, err)
    assert len(err) == 1 and err[0].startswith("hwsim: error: "), err
    assert elapsed < TIME_LIMIT_S, (elapsed, err)
    assert peak < MEMORY_LIMIT, (peak, err)
    for w in words:
        assert w in err[0], err[0]
    return err[0]


def inspect_and_run_refused(capsys, path, words=()):
    a = refused(capsys, "inspect", path, words=words)
    b = refused(capsys, "run", path, "--hw", HW, words=words)
    return a, b


def write_model(path, input_shape, layers, tensors=None, input_encoding=U8):
    header = {"model": {"name": "hostile", "input": {"shape": input_shape, "encoding": input_encoding},
                        "layers": layers}}
    write_container(path, header, dict(tensors or {}))
    return path


def raw_container(path, header: dict, table: dict, data: bytes):
    """A container written by hand (declared sizes the writer would have to allocate), valid checksums."""
    full = dict(header, format_version=1, tensors=table)
    hb = json.dumps(full, separators=(",", ":")).encode()
    path.write_bytes(struct.pack("<8sHHQI", MAGIC, 1, 0, len(hb), zlib.crc32(hb)) + hb + data)
    return path


def load_parts(model_path):
    header, raw = read_container(model_path)
    table = header.pop("tensors")
    header.pop("format_version", None)
    tensors = {name: (raw[name], entry["bits"], entry["signed"]) for name, entry in table.items()}
    return header, tensors


def u8_variant(tmp_path, edit, name="m.qnn"):
    """lenet_digits_u8 with its header edited by `edit(model_dict, tensors)`; checksums recomputed."""
    header, tensors = load_parts(Path(MODELS[0]).with_name("lenet_digits_u8.qnn"))
    edit(header["model"], tensors)
    path = tmp_path / name
    write_container(path, header, tensors)
    return path


def layer(model, name):
    return next(lay for lay in model["layers"] if lay["name"] == name)


# ------------------------------------------------------------------------------------------ unbounded work

def test_maxpool_kernel_3001_pad_3000_on_1x1(tmp_path, capsys):
    path = write_model(tmp_path / "pool.qnn", [1, 1, 1], [
        {"name": "pool", "op": "maxpool", "inputs": ["input"], "encoding": U8,
         "attrs": {"kernel": [3001, 3001], "stride": [1, 1], "padding": [3000, 3000, 3000, 3000]}}])
    inspect_and_run_refused(capsys, path, words=("layers.pool", "9,006,001"))


def test_maxpool_within_window_but_too_much_work(tmp_path, capsys):
    # 1001 x 1001 window (under the window limit) on a 1x1 input padded by 1000: 10^12 compares per sample
    path = write_model(tmp_path / "pool.qnn", [4, 1, 1], [
        {"name": "pool", "op": "maxpool", "inputs": ["input"], "encoding": U8,
         "attrs": {"kernel": [1001, 1001], "stride": [1, 1], "padding": [1000, 1000, 1000, 1000]}}])
    inspect_and_run_refused(capsys, path, words=("layers.pool", "compares"))


def _conv(name, k, pad, stride=(1, 1), co=1, ci=1):
    enc = {"kind": "binary", "scale": [0.1]}
    layer_ = {"name": name, "op": "conv2d", "inputs": ["input"], "encoding": U8, "weight_encoding": enc,
              "attrs": {"stride": list(stride), "padding": [pad] * 4}}
    return layer_, {f"{name}.weight": (np.zeros((co, ci, k, k), np.uint8), 1, False)}


def test_conv_3000x3000_kernel(tmp_path, capsys):
    lay, tensors = _conv("conv", 3000, 2999)
    path = write_model(tmp_path / "conv.qnn", [1, 1, 1], [lay], tensors)
    inspect_and_run_refused(capsys, path, words=("layers.conv", "window"))


def test_conv_too_many_macs(tmp_path, capsys):
    lay, tensors = _conv("conv", 1000, 999)   # 10^6 outputs x 10^6 taps
    path = write_model(tmp_path / "conv.qnn", [1, 1, 1], [lay], tensors)
    inspect_and_run_refused(capsys, path, words=("layers.conv", "MACs"))


@pytest.mark.parametrize("stride", [[10 ** 6, 10 ** 6], [2 ** 40, 1], [1, 2 ** 63]])
def test_huge_strides(tmp_path, capsys, stride):
    lay, tensors = _conv("conv", 3, 1, stride=stride)
    path = write_model(tmp_path / "conv.qnn", [1, 8, 8], [lay], tensors)
    inspect_and_run_refused(capsys, path, words=("layers.conv.attrs.stride",))
    pool = write_model(tmp_path / "pool.qnn", [1, 8, 8], [
        {"name": "pool", "op": "maxpool", "inputs": ["input"], "encoding": U8,
         "attrs": {"kernel": [2, 2], "stride": stride}}])
    inspect_and_run_refused(capsys, pool, words=("layers.pool.attrs.stride",))


@pytest.mark.parametrize("shape,words", [([1, 2 ** 20, 2 ** 20], ("elements",)), ([1, 2 ** 30, 1], ("input.shape",)),
                                         ([2 ** 40], ("input.shape",)), ([1, 1, 0], ("input.shape",))])
def test_huge_input_dims(tmp_path, capsys, shape, words):
    path = write_model(tmp_path / "big.qnn", shape, [
        {"name": "r", "op": "relu", "inputs": ["input"], "encoding": U8}])
    inspect_and_run_refused(capsys, path, words=words)


def test_reshape_to_huge_dims(tmp_path, capsys):
    path = write_model(tmp_path / "r.qnn", [1, 1, 1], [
        {"name": "r", "op": "reshape", "inputs": ["input"], "encoding": U8, "attrs": {"shape": [2 ** 62, 1, 1]}}])
    inspect_and_run_refused(capsys, path, words=("layers.r.attrs.shape",))


def test_no_limits_flag_and_environment(tmp_path, capsys, monkeypatch):
    # 10^12 compares: over the budget, but lifting it makes inspect accept the file (nothing is run)
    path = write_model(tmp_path / "pool.qnn", [1, 1, 1], [
        {"name": "pool", "op": "maxpool", "inputs": ["input"], "encoding": U8,
         "attrs": {"kernel": [1001, 1001], "stride": [1, 1], "padding": [1000, 1000, 1000, 1000]}}])
    refused(capsys, "inspect", path, words=("--no-limits",))
    rc, out, err, _, _ = cli(capsys, "inspect", "--no-limits", path)
    assert rc == 0 and not err, err
    monkeypatch.setenv("HWSIM_NO_LIMITS", "1")
    rc, out, err, _, _ = cli(capsys, "inspect", path)
    assert rc == 0 and not err, err


def _qdq_maxpool_onnx(path, k, p, hw=1):
    onnx_ = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper
    inits = [numpy_helper.from_array(np.array(0.05, np.float32), "s"),
             numpy_helper.from_array(np.array(0, np.uint8), "z")]
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["xq"]),
             helper.make_node("DequantizeLinear", ["xq", "s", "z"], ["xd"]),
             helper.make_node("MaxPool", ["xd"], ["y"], kernel_shape=[k, k], pads=[p] * 4, strides=[1, 1]),
             helper.make_node("QuantizeLinear", ["y", "s", "z"], ["yq"]),
             helper.make_node("DequantizeLinear", ["yq", "s", "z"], ["out"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, hw, hw])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx_.save(model, path)
    return path


def test_onnx_maxpool_3001_refused_at_import(tmp_path, capsys):
    src = _qdq_maxpool_onnx(tmp_path / "mp.onnx", 3001, 3000)
    out = tmp_path / "mp.qnn"
    refused(capsys, "import", src, "-o", out, words=("maxpool",))
    assert not out.exists()
    from simulator.errors import HwsimError
    from simulator.importers import import_any
    with pytest.raises(HwsimError, match="window"):
        import_any(str(src))
    # the same graph with a sane window imports and runs
    ok = _qdq_maxpool_onnx(tmp_path / "ok.onnx", 3, 1)
    assert cli(capsys, "import", ok, "-o", tmp_path / "ok.qnn")[0] == 0
    assert cli(capsys, "run", tmp_path / "ok.qnn", "--hw", HW)[0] == 0


# ------------------------------------------------------------------------------- fields trusted without a check

@pytest.mark.parametrize("bias_bits", [131072, 65, 64, 33, 16, 0, -1, True, 32.0, "32", [32], None])
def test_bias_bits_must_match_the_stored_width(tmp_path, capsys, bias_bits):
    path = u8_variant(tmp_path, lambda m, t: layer(m, "conv1").__setitem__("bias_bits", bias_bits))
    inspect_and_run_refused(capsys, path, words=("bias_bits",))


def test_bias_values_must_fit_bias_bits(tmp_path, capsys):
    def edit(m, t):
        layer(m, "conv1")["bias_bits"] = 4
        t["conv1.bias"] = (np.full(16, 7, np.int64), 4, True)       # fits in 4 bits: accepted
    assert cli(capsys, "inspect", u8_variant(tmp_path, edit))[0] == 0

    def edit_bad(m, t):
        layer(m, "conv1")["bias_bits"] = 4
        t["conv1.bias"] = (np.full(16, 7, np.int64), 8, True)        # stored 8-bit, declared 4
    inspect_and_run_refused(capsys, u8_variant(tmp_path, edit_bad, "bad.qnn"), words=("bias_bits",))


@pytest.mark.parametrize("value", [[1], "no", "false", 1, 0, None, {}, 1.0])
@pytest.mark.parametrize("where", ["input", "layer", "weight"])
def test_signed_must_be_a_boolean(tmp_path, capsys, value, where):
    def edit(m, t):
        enc = {"input": lambda: m["input"]["encoding"], "layer": lambda: layer(m, "fc2")["encoding"],
               "weight": lambda: layer(m, "fc1")["weight_encoding"]}[where]()
        enc["signed"] = value
    inspect_and_run_refused(capsys, u8_variant(tmp_path, edit), words=("signed", "true or false"))


@pytest.mark.parametrize("key,value", [("count_include_pad", "no"), ("global", [1]), ("global", 1)])
def test_avgpool_booleans(tmp_path, capsys, key, value):
    path = write_model(tmp_path / "a.qnn", [1, 4, 4], [
        {"name": "a", "op": "avgpool", "inputs": ["input"], "encoding": U8, "attrs": {key: value}}])
    inspect_and_run_refused(capsys, path, words=(f"layers.a.attrs.{key}",))


@pytest.mark.parametrize("key,value", [("bits", 8.0), ("bits", True), ("zero_point", 0.0), ("zero_point", 10 ** 30),
                                       ("scale", "1"), ("scale", -1.0)])
def test_encoding_numbers_are_typed(tmp_path, capsys, key, value):
    path = u8_variant(tmp_path, lambda m, t: layer(m, "fc2")["encoding"].__setitem__(key, value))
    inspect_and_run_refused(capsys, path, words=(f"encoding.{key}",))


@pytest.mark.parametrize("key,value", [("acc_bits", 32.0), ("acc_bits", 65), ("acc_bits", True), ("groups", 1.0),
                                       ("padding", [1.0, 1, 1, 1]), ("clip", [0, 2 ** 40]), ("stride", [True, 1])])
def test_layer_attrs_are_typed(tmp_path, capsys, key, value):
    path = u8_variant(tmp_path, lambda m, t: layer(m, "conv1")["attrs"].__setitem__(key, value))
    inspect_and_run_refused(capsys, path, words=(f"conv1.attrs.{key}",))


def test_weight_width_must_match_the_encoding(tmp_path, capsys):
    def edit(m, t):
        w = t["fc1.weight"][0]
        t["fc1.weight"] = (w, 16, True)      # stored 16-bit, encoding says 8
    inspect_and_run_refused(capsys, u8_variant(tmp_path, edit), words=("weight_encoding", "stored"))


def _threshold_variant(tmp_path, rows):
    def edit(m, t):
        enc = layer(m, "fc2")["encoding"]
        enc.update(kind="threshold", thresholds=[[i, i + 100] for i in range(rows)])
        layer(m, "fc2")["attrs"].pop("clip", None)
    return u8_variant(tmp_path, edit, f"thr{rows}.qnn")


@pytest.mark.parametrize("rows", [3, 11])
def test_threshold_row_count_wrong_fails_inspect_and_run(tmp_path, capsys, rows):
    inspect_and_run_refused(capsys, _threshold_variant(tmp_path, rows), words=("thresholds", "rows"))


@pytest.mark.parametrize("rows", [1, 10])
def test_threshold_row_count_right_runs(tmp_path, capsys, rows):
    path = _threshold_variant(tmp_path, rows)
    assert cli(capsys, "inspect", path)[0] == 0
    assert cli(capsys, "run", path, "--hw", HW)[0] == 0


# --------------------------------------------------------------------------------------------- sample input

def _sample_model(tmp_path, shape, name="s.qnn"):
    """A model with a 1-bit input (an XNOR conv) whose sample_input declares `shape` (zeros, valid checksums)."""
    count = int(np.prod(shape))
    blob = bytes((count + 7) // 8)
    weight = bytes(3)   # [2, 1, 3, 3] sign bits, all +1
    binary = {"kind": "binary", "scale": 1.0}
    header = {"model": {"name": "s", "input": {"shape": [1, 8, 8], "encoding": binary},
                        "layers": [{"name": "c", "op": "conv2d", "inputs": ["input"], "encoding": U8,
                                    "weight_encoding": {"kind": "binary", "scale": [0.1]},
                                    "attrs": {"clip": [0, 255]}}]}}
    table = {"sample_input": {"shape": list(shape), "bits": 1, "signed": False, "offset": 0, "nbytes": len(blob),
                              "crc32": zlib.crc32(blob)},
             "c.weight": {"shape": [2, 1, 3, 3], "bits": 1, "signed": False, "offset": len(blob), "nbytes": 3,
                          "crc32": zlib.crc32(weight)}}
    return raw_container(tmp_path / name, header, table, blob + weight)


def test_sample_input_of_2_28_one_bit_elements(tmp_path, capsys):
    path = _sample_model(tmp_path, [1 << 22, 1, 8, 8])   # a 32 MiB file
    assert path.stat().st_size > 32 << 20
    inspect_and_run_refused(capsys, path, words=("sample_input", "limit"))


@pytest.mark.parametrize("shape", [[0, 1, 8, 8], [4, 1, 8, 9], [4, 64], [1 << 20, 1, 1, 1]])
def test_sample_input_shape_checked_before_unpacking(tmp_path, capsys, shape):
    inspect_and_run_refused(capsys, _sample_model(tmp_path, shape), words=("sample_input",))


def test_small_sample_input_runs(tmp_path, capsys):
    path = _sample_model(tmp_path, [2, 1, 8, 8])
    assert cli(capsys, "inspect", path)[0] == 0
    assert cli(capsys, "run", path, "--hw", HW)[0] == 0


# ------------------------------------------------------------- execution limit, memory, layer counts (red team)

def _relu_chain(path, n, shape=(1, 4, 4)):
    layers = [{"name": f"r{i}", "op": "relu", "inputs": ["input" if i == 0 else f"r{i - 1}"], "encoding": U8}
              for i in range(n)]
    return write_model(path, list(shape), layers)


def test_maxpool_within_structural_limits_is_refused_by_run_not_inspect(tmp_path, capsys):
    # red team time_maxpool_window_2e20_ops_2e36: 2^36 compares passed every limit and hung `run` for > 60 s
    path = write_model(tmp_path / "pool.qnn", [1, 1279, 1279], [
        {"name": "p", "op": "maxpool", "inputs": ["input"], "encoding": U8,
         "attrs": {"kernel": [1024, 1024], "stride": [1, 1]}}])
    assert cli(capsys, "inspect", path)[0] == 0          # structure and memory are within the limits
    for argv in (("run", path, "--hw", HW), ("validate", path), ("export", path, "-o", tmp_path / "p.onnx")):
        line = refused(capsys, *argv, words=("layers.p", "execution limit", "--no-limits"))
        assert str(path) in line


def test_conv_at_2_35_macs_is_refused_by_run(tmp_path, capsys):
    # red team work_conv_2e35_macs: 41 s in run
    lay, tensors = _conv("c", 33, 16, co=2)     # 2.3 G MACs on the sequential kernel (2 output channels)
    path = write_model(tmp_path / "conv.qnn", [1, 1024, 1024], [lay], tensors)
    refused(capsys, "run", path, "--hw", HW, words=("layers.c", "execution limit"))


def test_layer_bytes_limit_keeps_the_engine_under_2_gb(tmp_path, capsys):
    # a 1x1 conv on 1x4096x4096 touches 402 MB of int64 per sample (was accepted up to 8 GiB)
    lay, tensors = _conv("c", 1, 0)
    path = write_model(tmp_path / "conv.qnn", [1, 4096, 4096], [lay], tensors)
    inspect_and_run_refused(capsys, path, words=("layers.c", "bytes", "MiB"))


def test_run_batched_shrinks_the_batch_for_big_layers(tmp_path):
    from simulator.engine import batch_for_memory
    from simulator.graph import LIMITS
    from simulator.qnn.model_io import load_model
    model = load_model(_relu_chain(tmp_path / "r.qnn", 2, (1, 1024, 1024)))   # 16 MiB per sample per layer
    assert batch_for_memory(model, 512) == LIMITS["layer_bytes"] // (16 << 20)
    assert batch_for_memory(load_model(MODELS[0]), 512) == 512


def test_single_sample_warm_up_is_reused_by_run_batched(tmp_path, monkeypatch):
    from simulator.engine import Engine, run_batched
    from simulator.qnn.model_io import load_model
    engine = Engine(load_model(_relu_chain(tmp_path / "r.qnn", 1, (1, 1024, 2048))))   # heavy enough to reuse
    codes = np.zeros((1, 1, 1024, 2048), np.int64)
    calls = []
    real = Engine.run_layer
    monkeypatch.setattr(Engine, "run_layer", lambda self, *a, **kw: calls.append(1) or real(self, *a, **kw))
    first = engine.run(codes[:1])                 # the CLI's JIT warm-up
    result = run_batched(engine, codes)
    assert len(calls) == 1 and np.array_equal(result.output, first.output)


def test_validate_keeps_only_live_tensors(tmp_path, capsys):
    # 64 layers of 512 KiB each: keeping every tensor of both sides was > 64 MiB
    path = _relu_chain(tmp_path / "r.qnn", 64, (1, 256, 256))
    rc, _, err, elapsed, peak = cli(capsys, "validate", path)
    assert rc == 0 and not err and elapsed < 5
    assert peak < 24 << 20, peak


def test_reference_conv_and_avgpool_are_memory_lean():
    from numpy.lib.stride_tricks import sliding_window_view
    from simulator.reference import _window_sums, conv2d_float
    rng = np.random.default_rng(0)
    for groups, cg, cog, k, stride, pad in [(1, 3, 5, 3, (1, 1), (1, 1, 1, 1)), (2, 2, 3, 4, (2, 1), (0, 1, 2, 3)),
                                           (1, 1, 1, 5, (1, 2), (0, 0, 0, 0)), (3, 1, 1, 2, (3, 3), (1, 0, 1, 0))]:
        x = rng.integers(-9, 9, size=(2, groups * cg, 9, 11)).astype(float)
        w = rng.integers(-9, 9, size=(groups * cog, cg, k, k)).astype(float)
        xp = np.pad(x, ((0, 0), (0, 0), (pad[0], pad[2]), (pad[1], pad[3])), constant_values=2.0)
        win = sliding_window_view(xp, (k, k), axis=(2, 3))[:, :, ::stride[0], ::stride[1]]
        want = np.concatenate([np.einsum("nchwij,ocij->nohw", win[:, g * cg:(g + 1) * cg],
                                         w[g * cog:(g + 1) * cog]) for g in range(groups)], axis=1)
        assert np.array_equal(conv2d_float(x, w, stride, pad, groups, 2.0), want)
    # a 32x32 kernel on 300x300: the windows were 269^2 x 1024 float64 (590 MB); now about the output
    tracemalloc.start()
    conv2d_float(np.ones((1, 1, 300, 300)), np.ones((1, 1, 32, 32)), (1, 1), (0, 0, 0, 0), 1, 0.0)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 8 << 20, peak

    class Pool:
        attrs = {"padding": [10, 10, 10, 10], "kernel": [64, 64], "stride": [1, 1]}
        attr = lambda self, key: self.attrs[key]   # noqa: E731
    tracemalloc.start()
    sums, count = _window_sums(Pool(), np.ones((1, 1, 128, 128)), 3.0)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 8 << 20, peak                      # the windows were 85^2 x 4096 float64 (237 MB)
    assert sums[0, 0, 0, 0] == 54 * 54 + 3.0 * (4096 - 54 * 54) and count[0, 0] == 54 * 54


def test_stored_samples_count_in_the_execution_limit(tmp_path, capsys):
    # red team work_sample_262144: 2^18 stored samples ran 36.7 s; 2^14 samples of 64 elements (within
    # sample_elements) times lenet's work per sample is over the execution limit: inspect accepts, run refuses
    def edit(m, t):
        t["sample_input"] = (np.zeros((1 << 14, 1, 8, 8), np.uint8), 5, False)
    path = u8_variant(tmp_path, edit)
    assert cli(capsys, "inspect", path)[0] == 0
    refused(capsys, "run", path, "--hw", HW, words=("sample_input", "16,384 samples", "execution limit"))


def test_layer_count_limit(tmp_path, capsys, monkeypatch):
    from simulator.graph import LIMITS
    assert LIMITS["layers"] == 16384
    monkeypatch.setitem(LIMITS, "layers", 100)    # the same check as at 16,384, on a file that loads fast
    inspect_and_run_refused(capsys, _relu_chain(tmp_path / "r.qnn", 101), words=("layers:", "101 layers"))
    assert cli(capsys, "inspect", _relu_chain(tmp_path / "ok.qnn", 100))[0] == 0


def test_inputs_per_layer_and_per_model_limits(tmp_path, capsys):
    add = {"name": "a", "op": "add", "inputs": ["input"] * 1025, "encoding": U8}
    inspect_and_run_refused(capsys, write_model(tmp_path / "a.qnn", [1, 2, 2], [add]),
                            words=("layers.a.inputs", "1,025 inputs"))
    adds = [{"name": f"a{i}", "op": "add", "inputs": ["input"] * 1024, "encoding": U8} for i in range(65)]
    inspect_and_run_refused(capsys, write_model(tmp_path / "m.qnn", [1, 2, 2], adds), words=("layers:", "66,560"))


def test_many_layers_estimate_is_linear(tmp_path, capsys):
    # the residency plan summed every resident span at every layer: 20,000 layers took > 60 s
    from simulator.hw.arch import load_hardware
    from simulator.hw.cost import ResidencyPlan
    from simulator.importers.qnn_shapes import workloads_from_model
    from simulator.qnn.model_io import load_model
    arch = load_hardware(HW, [], {}).arch

    def plan_seconds(layers):
        workloads = workloads_from_model(load_model(_relu_chain(tmp_path / f"r{layers}.qnn", layers)))
        t0 = time.perf_counter()
        plan = ResidencyPlan(workloads, arch)
        reserved = [plan.at(i).reserved_bits for i in range(len(workloads))]
        assert len(reserved) == layers
        return time.perf_counter() - t0

    # linear: 4x the layers take ~4x the time (quadratic: ~16x); a ratio, so a slow machine does not fail it
    small, big = min(plan_seconds(4096) for _ in range(2)), plan_seconds(16384)
    assert big < 8 * small + 0.5, (small, big)


def test_onnx_estimate_refuses_more_layers_than_import(tmp_path, capsys, monkeypatch):
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper
    from simulator.graph import LIMITS
    monkeypatch.setitem(LIMITS, "layers", 100)   # the same check as at 16,384 layers, on a small graph
    nodes = [helper.make_node("Relu", ["x" if i == 0 else f"t{i - 1}"], [f"t{i}"]) for i in range(101)]
    graph = helper.make_graph(nodes, "chain", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("t100", TensorProto.FLOAT, [1, 4])])
    path = tmp_path / "chain.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    refused(capsys, "estimate", path, "--hw", HW, words=("graph.node", "limit of 100"))
    monkeypatch.setitem(LIMITS, "layers", 101)
    assert cli(capsys, "estimate", path, "--hw", HW)[0] == 0


def _requant_variant(tmp_path, mode, multiplier):
    def edit(m, t):
        attrs = layer(m, "conv1").setdefault("attrs", {})
        attrs.update(requant=mode, multiplier=[multiplier])
    return u8_variant(tmp_path, edit)


@pytest.mark.parametrize("mode,multiplier", [("fixed_double", 2.0 ** 40), ("fixed_double", 1e38),
                                             ("shift", 2.0 ** 70)])
def test_multiplier_no_accumulator_survives_is_refused_by_inspect(tmp_path, capsys, mode, multiplier):
    inspect_and_run_refused(capsys, _requant_variant(tmp_path, mode, multiplier),
                            words=("layers.conv1.attrs.multiplier", "every non-zero accumulator"))


@pytest.mark.parametrize("mode", ["fixed_double", "fixed_single"])
def test_data_dependent_requant_overflow_names_file_and_layer(tmp_path, capsys, mode):
    path = _requant_variant(tmp_path, mode, 2.0 ** 20)
    assert cli(capsys, "inspect", path)[0] == 0
    line = refused(capsys, "run", path, "--hw", HW, words=(str(path), "layers.conv1", "int32"))
    assert "int32_overflow" not in line and "saturate" not in line


def test_export_of_a_wide_dense_layer_is_fast(tmp_path, capsys):
    # red team work_dense_1x2e24: the float32 chunking looped over 2^24 inputs in Python (> 60 s)
    w = np.full((1, 1 << 21), 127, np.int8)
    path = write_model(tmp_path / "d.qnn", [1 << 21], [
        {"name": "d", "op": "dense", "inputs": ["input"], "encoding": U8,
         "weight_encoding": {"kind": "uniform", "bits": 8, "signed": True, "scale": [1e-6], "zero_point": [0]}}],
        {"d.weight": (w, 8, True)})
    rc, _, err, elapsed, _ = cli(capsys, "export", path, "-o", tmp_path / "d.onnx", trace_memory=False)
    assert rc == 0 and not err and elapsed < 4.0, (rc, err, elapsed)


def test_export_bounds_window_slices(tmp_path, capsys):
    # a 1024x1024 conv with one output: cheap to run, but the exact ONNX form had 2^20 Slice nodes (167 s, 13 GB)
    w = np.random.default_rng(0).integers(-100, 100, size=(1, 1, 1024, 1024)).astype(np.int8)
    path = write_model(tmp_path / "k.qnn", [1, 1024, 1024], [
        {"name": "k", "op": "conv2d", "inputs": ["input"], "encoding": U8,
         "weight_encoding": {"kind": "uniform", "bits": 8, "signed": True, "scale": [0.01]}}],
        {"k.weight": (w, 8, True)})
    refused(capsys, "export", path, "-o", tmp_path / "k.onnx", words=("layers.k", "Slice", "export limit"))


def test_export_escapes_lone_surrogates_in_names(tmp_path, capsys):
    onnx = pytest.importorskip("onnx")

    def edit(m, t):   # placeholders, then JSON escapes of lone surrogates (strict JSON; the reader accepts them)
        m["name"] = "m@HI"
        old = m["layers"][0]["name"]
        m["layers"][0]["name"] = "c@LO"
        for lay in m["layers"][1:]:
            lay["inputs"] = ["c@LO" if i == old else i for i in lay["inputs"]]
        for key in [k for k in t if k.startswith(old + ".")]:
            t["c@LO" + key[len(old):]] = t.pop(key)
    raw = u8_variant(tmp_path, edit).read_bytes()
    size = struct.unpack("<Q", raw[12:20])[0]
    header = raw[24:24 + size].replace(b"@HI", b"\\ud800").replace(b"@LO", b"\\udc00")
    path = tmp_path / "s.qnn"
    path.write_bytes(struct.pack("<8sHHQI", MAGIC, 1, 0, len(header), zlib.crc32(header)) + header
                     + raw[24 + size:])
    assert cli(capsys, "inspect", path)[0] == 0
    out = tmp_path / "m.onnx"
    rc, _, err, _, _ = cli(capsys, "export", path, "-o", out, trace_memory=False)
    assert rc == 0 and not err, err
    proto = onnx.load(str(out))
    assert proto.graph.name == "m\\ud800" and any(n.output[0] == "c\\udc00" for n in proto.graph.node)


@pytest.mark.parametrize("key", ["op", "overflow", "pad_code"])
def test_huge_values_are_cut_in_the_error_line(tmp_path, capsys, key):
    def edit(m, t):
        conv = layer(m, "conv1")
        if key == "op":
            conv["op"] = 10 ** 400
        else:
            conv.setdefault("attrs", {})[key] = 10 ** 400
    line = refused(capsys, "inspect", u8_variant(tmp_path, edit), words=("layers.conv1",))
    assert "0" * 60 not in line      # the 401-digit value is cut (the unknown-op line also lists every op)
    assert len(line) < 400, len(line)


# ------------------------------------------------------------------------------------------------- fuzzer

BASES = [load_parts(p) for p in MODELS]


def _paths(node, prefix=()):
    yield prefix
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _paths(v, prefix + (i,))


EDGE_INTS = [0, 1, -1, 2, 3, 7, 8, 15, 16, 17, 31, 32, 33, 63, 64, 65, 255, 256, 3000, 3001, 2 ** 15, 2 ** 16,
             2 ** 24, 2 ** 24 + 1, 2 ** 31, 2 ** 32, 2 ** 40, 2 ** 63, 2 ** 64, -(2 ** 31), -(2 ** 63), 10 ** 30]
SCALARS = st.one_of(
    st.sampled_from(EDGE_INTS), st.integers(-(2 ** 70), 2 ** 70), st.booleans(), st.none(),
    st.floats(allow_nan=False, allow_infinity=False, width=64),
    st.sampled_from(["", "no", "yes", "true", "uniform", "threshold", "binary", "conv2d", "maxpool", "input",
                     "wrap", "saturate", "float32", "shift", "fixed_double", "x86_pair_sat16", "ort_float32"]))
VALUES = st.one_of(
    SCALARS,
    st.lists(st.sampled_from(EDGE_INTS), min_size=0, max_size=5),
    st.lists(SCALARS, min_size=1, max_size=4),
    st.just([1]), st.just({}), st.just({"kind": "binary"}), st.just([[1, 2]]),
)


@st.composite
def mutations(draw):
    index = draw(st.integers(0, len(BASES) - 1))
    header, tensors = BASES[index]
    header = copy.deepcopy(header)
    model = header["model"]
    paths = [p for p in _paths(model) if p and p[0] in ("input", "layers")]
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(paths))
        node = model
        try:
            for key in path[:-1]:
                node = node[key]
            kind = draw(st.sampled_from(["replace", "replace", "scale", "nudge", "nudge", "delete"]))
            old = node[path[-1]]
            if kind == "scale" and isinstance(old, int) and not isinstance(old, bool):
                node[path[-1]] = old * draw(st.sampled_from([0, -1, 2, 1000, 3001, 2 ** 20, 2 ** 40]))
            elif kind == "nudge" and isinstance(old, (int, float)) and not isinstance(old, bool):
                node[path[-1]] = old + draw(st.integers(-3, 3)) if isinstance(old, int) else old * draw(
                    st.sampled_from([0.5, 2.0, 1e-30, 1e30]))
            elif kind == "delete" and isinstance(node, dict):
                del node[path[-1]]
            else:
                node[path[-1]] = draw(VALUES)
        except (KeyError, IndexError, TypeError):
            continue   # an earlier mutation changed the tree under this path
    # sometimes add an attribute a layer does not set (kernel, stride, padding, groups, ...)
    if draw(st.booleans()):
        layers = model.get("layers") if isinstance(model.get("layers"), list) else []
        lay = draw(st.sampled_from([lay for lay in layers if isinstance(lay, dict)] or [{}]))
        if isinstance(lay.get("attrs"), dict):
            key = draw(st.sampled_from(["kernel", "stride", "padding", "groups", "global", "count_include_pad",
                                        "datapath", "pad_code", "binary_pad", "multiplier", "acc_bits"]))
            lay["attrs"][key] = draw(VALUES)
    return index, header, dict(tensors)


@settings(max_examples=60, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.data_too_large])
@given(case=mutations())
def test_fuzzed_headers_with_valid_checksums(tmp_path, capsys, case):
    index, header, tensors = case
    path = tmp_path / "fuzz.qnn"
    from simulator.errors import HwsimError
    try:
        write_container(path, header, tensors)
    except HwsimError:
        return   # not representable as strict JSON (e.g. a huge float): nothing to read
    for argv in (["inspect", path], ["run", path, "--hw", HW]):
        rc, _, err, elapsed, _ = cli(capsys, *argv, trace_memory=False)
        assert rc in (0, 2), (MODELS[index].name, argv[0], err, json.dumps(header["model"])[:2000])
        if rc == 2:
            assert len(err) == 1 and err[0].startswith("hwsim: error: "), err
        else:
            assert not err, err
        assert elapsed < 10, (elapsed, argv[0], err)
