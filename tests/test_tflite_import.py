"""`hwsim import MODEL.tflite`: bit-exact against LiteRT on each kernel path, and clean refusals of bad files.

Every fixture under tests/tflite/fixtures (made by tests/tflite/make_fixtures.py with the TF converter) is
imported for each kernel path and run on seeded random inputs; every TFLite tensor hwsim holds is compared with
LiteRT's (all tensors on the reference and optimized paths, whose interpreters keep them; the output on the
XNNPACK path, whose delegate keeps none). LiteRT (`ai_edge_litert`, in the test extra) is the reference.
"""

from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from simulator.engine import Engine, quantize_input
from simulator.errors import HwsimError
from simulator.report import output_array

pytest.importorskip("tflite")
litert = pytest.importorskip("ai_edge_litert")

from simulator.importers.tflite_import import import_tflite  # noqa: E402
from tests.tflite import litert_runner  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "tflite" / "fixtures"
BAD = ROOT / "tests" / "tflite" / "bad"
DIGITS = ROOT / "models" / "digits_cnn_int8.tflite"
REFUSED = {"float32_model", "int16x8", "concat_mixed_scales_invalid"}   # bad-input fixtures
VALID = sorted(p.stem for p in FIXTURES.glob("*.tflite") if p.stem not in REFUSED)
PATHS = ("reference", "optimized", "xnnpack")


def compare(path, kernels, seeds=range(3)):
    """(values compared, values that differ, first differences) between hwsim and LiteRT. A graph with several
    outputs is imported once per output (a hwsim model has one)."""
    info = litert_runner.tensor_details(path)
    names = [info["tensors"][i]["name"] for i in info["outputs"]]
    compared, differ, where = 0, 0, []
    for name in names:
        c, d, w = compare_one(path, kernels, seeds, name if len(names) > 1 else None)
        compared, differ, where = compared + c, differ + d, where + w
    return compared, differ, where


def compare_one(path, kernels, seeds, output):
    model = import_tflite(path, kernels, output)
    engine = Engine(model)
    tensors = model.metadata["tflite_tensors"]
    kept = {lay.name for lay in model.layers}
    compared, differ, where = 0, 0, []
    for seed in seeds:
        feed = litert_runner.random_input(path, seed)
        (x,) = feed.values()
        got = litert_runner.run(path, x, kernels)
        codes = quantize_input(model, x) if np.issubdtype(x.dtype, np.floating) else x.astype(np.int64)
        res = engine.run(np.asarray(codes), keep_all=True)   # the model's batch runs as hwsim's batch
        for name, m in tensors.items():
            ref = got["tensors"].get(m["index"])
            if ref is None or m["hwsim"] not in kept or m["index"] in got["inputs"]:
                continue
            mine = res.tensors[m["hwsim"]]
            mine = mine.transpose(0, 2, 3, 1) if m["layout"] == "CHW" else mine.reshape(ref.shape)
            ref = ref.astype(np.int64)
            assert ref.shape == mine.shape, (name, ref.shape, mine.shape)
            n = int((ref != mine).sum())
            compared += ref.size
            differ += n
            if n:
                where.append((name, n))
        if model.output_dequantize:   # a DEQUANTIZE output: the float32 values themselves
            out = got["tensors"][got["outputs"][0]]
            values = output_array(model, res.tensors[model.output_name])
            assert values.dtype == np.float32
            compared += out.size
            differ += int((values.reshape(out.shape) != out).sum())
    return compared, differ, where


@pytest.mark.parametrize("kernels", PATHS)
@pytest.mark.parametrize("name", VALID)
def test_bit_exact_against_litert(name, kernels):
    compared, differ, where = compare(FIXTURES / f"{name}.tflite", kernels)
    assert compared > 0
    assert differ == 0, f"{differ} of {compared} values differ: {where[:5]}"


@pytest.mark.parametrize("kernels", PATHS)
def test_digits_model_bit_exact(kernels):
    """The shipped trained model: every tensor on random inputs, and the logits of the whole digits test set
    (the README's accuracy) equal LiteRT's on this kernel path."""
    compared, differ, where = compare(DIGITS, kernels, seeds=range(2))
    assert compared > 0 and differ == 0, where[:5]
    data = np.load(ROOT / "models" / "digits_test_nhwc.npz")
    model = import_tflite(DIGITS, kernels)
    codes = quantize_input(model, data["x"])
    ours = Engine(model).run(codes.astype(np.int64)).output
    theirs = np.concatenate([litert_runner.outputs(litert_runner.run(DIGITS, codes[i:i + 1].astype(np.int8),
                                                                      kernels)).popitem()[1]
                             for i in range(len(codes))])
    assert np.array_equal(ours, theirs)
    assert abs(np.mean(ours.argmax(1) == data["y"]) - 0.9778) < 0.0001


def test_the_paths_really_differ():
    """The three declared paths are not one arithmetic under three names: each records its own requantization,
    and on the mixed network hwsim's outputs for the three paths differ (each equal to its LiteRT path above)."""
    path = FIXTURES / "mixed.tflite"
    inputs = [litert_runner.random_input(path, s) for s in range(8)]
    x = np.concatenate([next(iter(f.values())) for f in inputs]).astype(np.int64)
    modes, outs = {}, {}
    for kernels in PATHS:
        model = import_tflite(path, kernels)
        modes[kernels] = {lay.attrs.get("requant") for lay in model.layers if lay.op in ("conv2d", "dense")}
        outs[kernels] = Engine(model).run(x).output
    assert modes["xnnpack"] == {"float32"}
    assert modes["reference"] >= {"fixed_double", "float64_away"}
    assert "fixed_double_ruy" in modes["optimized"]
    assert (outs["reference"] != outs["optimized"]).any()
    assert (outs["reference"] != outs["xnnpack"]).any()


# ------------------------------------------------------------------------------------------- command line
def hwsim(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "simulator.entry", *map(str, args)], capture_output=True,
                          text=True, cwd=cwd, timeout=300)


def test_cli_import_then_run(tmp_path):
    out = tmp_path / "mixed.qnn"
    r = hwsim("import", FIXTURES / "mixed.tflite", "-o", out, "--tflite-kernels", "optimized")
    assert r.returncode == 0, r.stderr
    assert "mixed.tflite -> " in r.stdout and out.exists()
    r = hwsim("run", out, "--hw", "tsmc90")
    assert r.returncode == 0, r.stderr
    assert "energy" in r.stdout.lower()


BAD_CASES = {
    "unsupported_op": "unsupported operator TANH",
    "no_quantization": "has no quantization parameters",
    "per_channel_activation": "activations need one scale",
    "zero_scale": "must be finite and > 0",
    "dilated": "dilation",
    "rank3": "is declared [1, 64, 16]",
    "bad_index": "refers to tensor 100000",
    "bad_buffer": "bytes of data",
    "two_outputs": "choose it with --tflite-output",
}


@pytest.mark.parametrize("name", sorted(BAD_CASES))
def test_bad_file_one_line_no_output(name, tmp_path):
    out = tmp_path / "x.qnn"
    r = hwsim("import", BAD / f"{name}.tflite", "-o", out)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    assert f"{name}.tflite" in lines[0] and BAD_CASES[name] in lines[0], lines[0]
    assert not out.exists()


@pytest.mark.parametrize("name, text", [("float32_model", "float model"), ("int16x8", "16x8 model"),
                                        ("concat_mixed_scales_invalid", "requires them equal")])
def test_refused_models_say_what_is_supported(name, text, tmp_path):
    r = hwsim("import", FIXTURES / f"{name}.tflite", "-o", tmp_path / "x.qnn")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert text in r.stderr and "int8" in r.stderr


def test_unknown_kernel_path_is_refused():
    with pytest.raises(HwsimError, match="unknown TFLite kernel path"):
        import_tflite(FIXTURES / "mixed.tflite", "gpu")


def test_truncated_and_corrupt_files_give_one_error(tmp_path):
    """Seeded corruption of a valid file (flipped bytes, truncation, huge lengths): the importer either imports
    it or raises HwsimError; never another exception."""
    data = (FIXTURES / "mixed.tflite").read_bytes()
    rng = random.Random(12)
    target = tmp_path / "fz.tflite"
    outcomes = {"imported": 0, "refused": 0}
    for k in range(240):
        b = bytearray(data)
        if k % 3 == 0:
            for _ in range(rng.randint(1, 8)):
                b[rng.randrange(8, len(b))] = rng.randrange(256)
        elif k % 3 == 1:
            b = b[:rng.randrange(8, len(b))]
        else:
            i = rng.randrange(8, len(b) - 4)
            b[i:i + 4] = rng.choice([b"\xff\xff\xff\x7f", b"\0\0\0\x80", b"\xff\xff\xff\xff", b"\x10\0\0\0"])
        target.write_bytes(bytes(b))
        try:
            import_tflite(target)
            outcomes["imported"] += 1
        except HwsimError as exc:
            assert "fz.tflite" in str(exc)
            outcomes["refused"] += 1
    assert outcomes["refused"] > 100


def test_not_a_flatbuffer(tmp_path):
    p = tmp_path / "a.tflite"
    p.write_bytes(b"ONNX protobuf, not a flatbuffer")
    with pytest.raises(HwsimError, match="not a TFLite flatbuffer"):
        import_tflite(p)


HELPER_FIXTURES = sorted(p.relative_to(ROOT / "tests" / "tflite").as_posix()
                         for d in ("mode_fixtures", "op_fixtures", "xnnpack_fixtures")
                         for p in (ROOT / "tests" / "tflite" / d).glob("*.tflite"))
# the limits these one-op fixtures run into: hwsim models have one input; ops outside the supported list
KNOWN_LIMITS = ("hwsim models have one input", "unsupported operator", "SOFTMAX needs")


@pytest.mark.parametrize("name", HELPER_FIXTURES)
def test_one_op_fixtures_through_the_importer(name):
    """The one-op fixtures of the arithmetic tests (odd channel counts, per-tensor weights, ties), imported
    whole: bit-exact on every path, or refused for a stated limit."""
    path = ROOT / "tests" / "tflite" / name
    for kernels in PATHS:
        try:
            compared, differ, where = compare(path, kernels, seeds=range(2))
        except HwsimError as exc:
            assert any(text in exc.message for text in KNOWN_LIMITS), exc.message
            return
        assert compared > 0 and differ == 0, (kernels, differ, where[:3])


def test_most_one_op_fixtures_import():
    refused = 0
    for name in HELPER_FIXTURES:
        try:
            import_tflite(ROOT / "tests" / "tflite" / name)
        except HwsimError:
            refused += 1
    assert len(HELPER_FIXTURES) - refused >= 60, refused


@pytest.mark.parametrize("size", [8, 13, 30, 64])
def test_optimized_input_quantizer_matches_the_kernel_model(size):
    """input.division 'tflite_optimized' (engine) against tflite_arith.quantize_float, a separately written
    model of LiteRT's AffineQuantize checked op by op against LiteRT: blocks of 8 and the tail, ties included."""
    from simulator.encodings import UniformAct
    from simulator.graph import Layer, Model
    from simulator.importers.tflite_arith import QParams, quantize_float
    enc = UniformAct(8, True, 0.05, -3)
    model = Model("q", (size,), enc, [Layer("f", "flatten", ["input"])], input_rounding="half_even",
                  input_division="tflite_optimized").check()
    rng = np.random.default_rng(size)
    x = (rng.integers(-140, 140, (6, size)) * 0.025).astype(np.float32)     # many exact ties of x / 0.05
    x[1] = rng.uniform(-8, 8, size).astype(np.float32)
    want = np.stack([quantize_float(row, "optimized", QParams(0.05, -3, "int8")) for row in x])
    assert np.array_equal(quantize_input(model, x).astype(np.int64), want)


def test_optimized_dequantize_blocks_of_eight():
    """output.dequantize 'tflite_optimized': blocks of 8 as f32(q)*s + f32(-zp*s), the rest f32(q - zp) * s."""
    from simulator.encodings import UniformAct
    from simulator.graph import Layer, Model
    enc = UniformAct(8, True, 0.0123, 17)
    model = Model("d", (11,), enc, [Layer("f", "flatten", ["input"])], output_dequantize="tflite_optimized").check()
    codes = np.arange(-128, 128, dtype=np.int64)[:231].reshape(21, 11)
    got = output_array(model, codes)
    s, zp = np.float32(0.0123), 17
    for row, out in zip(codes, got):
        for i, q in enumerate(row):
            want = (np.float32(q) * s + np.float32(np.float32(-zp) * s)) if i < 8 else np.float32(q - zp) * s
            assert out[i] == want


def test_validate_explains_the_declared_path(tmp_path):
    """hwsim validate on an imported model: bit-exact to the declared arithmetic, and per layer where the
    path's rounding departs from exact rounding (the mixed network's avg pool and requantizers on the
    reference path depart on random inputs)."""
    out = tmp_path / "m.qnn"
    assert hwsim("import", FIXTURES / "mixed.tflite", "-o", out, "--tflite-kernels", "reference").returncode == 0
    r = hwsim("validate", out)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "PASS: every layer is bit-exact to its declared arithmetic" in r.stdout
    notes = " ".join(r.stdout.split("where the declared arithmetic departs from exact rounding")[1].split())
    assert "TFLite reference kernels (gemmlowp)" in notes and "TFLite average pool" in notes


def test_shipped_digits_qnn_is_the_import_of_the_tflite():
    """models/digits_cnn_int8.qnn is what `hwsim import models/digits_cnn_int8.tflite` writes today."""
    from simulator.qnn.model_io import model_bytes
    shipped = ROOT / "models" / "digits_cnn_int8.qnn"
    assert model_bytes(import_tflite(DIGITS), shipped) == shipped.read_bytes()
