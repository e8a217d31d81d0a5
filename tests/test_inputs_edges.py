"""Hostile and edge-case inputs (issue 8, points 6 and 7): memory bounded by --limit and --batch-size (a memory-
mapped .npy, a prefix of an .npz member, zip bombs refused before decompression), zero samples and labels outside
the model's classes refused with one line, ONNX graphs that are not valid ONNX refused with the reason, and the
out-of-memory advice naming what would help."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import time
import tracemalloc
import zipfile
from pathlib import Path

import numpy as np
import pytest

from model_factory import random_model
from simulator import commands, fileio
from simulator.cli import main
from simulator.errors import HwsimError
from simulator.qnn.model_io import save_model

ROOT = Path(__file__).resolve().parents[1]
FLOAT_ONNX = ROOT / "models" / "lenet_digits_float.onnx"   # input [1, 8, 8], 10 classes


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("m") / "model.qnn"
    save_model(random_model(7), path)  # input [3, 6, 6], 3 outputs
    return path


def one_line(capsys, *needles):
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("hwsim: error: ") and "Traceback" not in err, err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def _npy_header(shape, descr="<f4") -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": descr, "fortran_order": False, "shape": tuple(shape)})
    return buf.getvalue()


def zip_bomb(path, samples, sample_shape=(3, 6, 6)):
    """An .npz whose x is `samples` samples of float32 zeros, deflated ~1000:1 (written in chunks, never held)."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        with zf.open("x.npy", "w", force_zip64=True) as member:
            member.write(_npy_header((samples,) + sample_shape))
            left, chunk = samples * 4 * int(np.prod(sample_shape)), bytes(1 << 22)
            while left:
                member.write(chunk[:min(left, len(chunk))])
                left -= min(left, len(chunk))
        buf = io.BytesIO()
        np.save(buf, np.zeros(samples, np.int64))
        zf.writestr("y.npy", buf.getvalue())
    return path


# ------------------------------------------------------------------------------------------ memory bounds

PEAK_SCRIPT = """
import resource, sys
from simulator.cli import main
def peak():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kB on Linux
model, small, big = sys.argv[1:4]
assert main(["run", model, "--hw", "tsmc90", "--input", small]) == 0
before = peak()
assert main(["run", model, "--hw", "tsmc90", "--input", big, "--limit", "10", "--batch-size", "4"]) == 0
print("PEAK", before, peak())
"""


@pytest.mark.skipif(sys.platform != "linux", reason="ru_maxrss in kB and sparse files: Linux")
def test_limit_on_a_big_npy_reads_only_the_samples_used(tmp_path, model_path):
    """--limit 10 on a 200 MB .npy: the file is memory-mapped and only 10 samples are read and quantized (before:
    the whole file was loaded, converted to float64 and quantized)."""
    big = tmp_path / "big.npy"
    n = (200 << 20) // (3 * 6 * 6 * 4)
    x = np.lib.format.open_memmap(big, mode="w+", dtype=np.float32, shape=(n, 3, 6, 6))  # sparse: zeros
    x[:10] = np.random.default_rng(0).random((10, 3, 6, 6))
    x.flush()
    del x
    small = tmp_path / "small.npy"
    np.save(small, np.random.default_rng(0).random((10, 3, 6, 6)).astype(np.float32))
    proc = subprocess.run([sys.executable, "-c", PEAK_SCRIPT, str(model_path), str(small), str(big)],
                          capture_output=True, text=True, cwd=ROOT, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr
    before, after = map(int, proc.stdout.split("PEAK")[1].split())
    assert after - before < 40 * 1024, (before, after)  # kB: far below the file's 200 MB


def test_zip_bomb_with_limit_decompresses_only_a_prefix(tmp_path, model_path, capsys):
    bomb = zip_bomb(tmp_path / "bomb.npz", 400_000)  # 173 MB of zeros in ~170 kB
    assert bomb.stat().st_size < 1 << 20
    tracemalloc.start()
    try:
        t0 = time.perf_counter()
        data = fileio.load_npz(bomb, limit=1)
        elapsed = time.perf_counter() - t0
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert data["x"].shape == (1, 3, 6, 6) and data["y"].shape == (1,)
    assert peak < 4 << 20 and elapsed < 5
    assert main(["run", str(model_path), "--hw", "tsmc90", "--dataset", str(bomb), "--limit", "1"]) == 0
    assert "1 labelled sample" in capsys.readouterr().out


def test_zip_bomb_without_limit_is_refused_before_decompression(tmp_path, model_path, capsys):
    bomb = zip_bomb(tmp_path / "bomb.npz", 400_000)
    t0 = time.perf_counter()
    assert main(["run", str(model_path), "--hw", "tsmc90", "--dataset", str(bomb)]) == 2
    assert time.perf_counter() - t0 < 30
    one_line(capsys, str(bomb), "zip bomb", "--limit")
    with pytest.raises(HwsimError, match="zip bomb"):
        fileio.load_npz(bomb)


def test_npz_guards_before_decompression(tmp_path):
    # a compression method .npz never uses (bzip2 can expand a few kB into gigabytes in one call)
    p = tmp_path / "bz.npz"
    with zipfile.ZipFile(p, "w", zipfile.ZIP_BZIP2) as zf:
        buf = io.BytesIO()
        np.save(buf, np.zeros(10))
        zf.writestr("x.npy", buf.getvalue())
    with pytest.raises(HwsimError, match="compression method"):
        fileio.load_npz(p)
    # a declared size deflate cannot produce from the compressed bytes: patched central directory
    good = tmp_path / "good.npz"
    with zipfile.ZipFile(good, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("x.npy", _npy_header((1 << 18,), "<f8") + bytes(8 << 18))
    raw = bytearray(good.read_bytes())
    info = zipfile.ZipFile(good).infolist()[0]
    cd = raw.rindex(b"PK\x01\x02")
    raw[cd + 24:cd + 28] = (1 << 31).to_bytes(4, "little")       # uncompressed size in the central directory
    (tmp_path / "lie.npz").write_bytes(bytes(raw))
    assert info.file_size < 1 << 22
    with pytest.raises(HwsimError, match="zip bomb|declares"):
        fileio.load_npz(tmp_path / "lie.npz")
    # a limit reads a prefix of every member and keeps the rest compressed
    p = tmp_path / "d.npz"
    np.savez_compressed(p, x=np.arange(40.0).reshape(10, 4), y=np.arange(10), z=np.zeros(3))
    got = fileio.load_npz(p, keys=("x", "y"), limit=3)
    assert set(got) == {"x", "y"} and np.array_equal(got["x"], np.arange(12.0).reshape(3, 4))
    assert np.array_equal(got["y"], np.arange(3))
    fortran = tmp_path / "f.npz"
    np.savez(fortran, x=np.asfortranarray(np.arange(40.0).reshape(10, 4)))
    assert np.array_equal(fileio.load_npz(fortran, limit=2)["x"], np.arange(40.0).reshape(10, 4))  # all of it


def test_npy_is_memory_mapped_read_only(tmp_path):
    p = tmp_path / "a.npy"
    np.save(p, np.arange(24, dtype=np.int16).reshape(6, 4))
    m = fileio.load_npy(p, mmap=True)
    assert isinstance(m, np.memmap) and not m.flags.writeable
    assert np.array_equal(m[:2], np.arange(8).reshape(2, 4))
    (tmp_path / "short.npy").write_bytes(p.read_bytes()[:-2])
    with pytest.raises(HwsimError, match="holds"):
        fileio.load_npy(tmp_path / "short.npy", mmap=True)
    np.save(tmp_path / "e.npy", np.zeros((0, 4)))
    assert fileio.load_npy(tmp_path / "e.npy", mmap=True).shape == (0, 4)


def test_batched_quantization_matches_one_shot(tmp_path, model_path, capsys):
    x = np.random.default_rng(1).normal(0, 2, (37, 3, 6, 6)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    outs = []
    for bs in ("1000", "5"):
        out = tmp_path / f"y{bs}.npy"
        assert main(["run", str(model_path), "--hw", "tsmc90", "--input", str(tmp_path / "x.npy"),
                     "--batch-size", bs, "--output", str(out)]) == 0
        outs.append(np.load(out))
    assert outs[0].shape[0] == 37 and np.array_equal(outs[0], outs[1])


# ------------------------------------------------------------------------------------------ zero samples

@pytest.mark.parametrize("command", ["run", "validate", "compare"])
def test_zero_samples_refused(tmp_path, model_path, capsys, command):
    np.save(tmp_path / "x0.npy", np.zeros((0, 3, 6, 6), np.float32))
    np.savez(tmp_path / "d0.npz", x=np.zeros((0, 3, 6, 6), np.float32), y=np.zeros(0, np.int64))
    hw = {"run": ["--hw", "tsmc90"], "compare": ["--hw", "tsmc90", "--hw", "generic45"], "validate": []}[command]
    for flag, name in (("--input", "x0.npy"), ("--dataset", "d0.npz")):
        assert main([command, str(model_path), *hw, flag, str(tmp_path / name)]) == 2
        one_line(capsys, name, "no samples")


@pytest.mark.parametrize("command", ["quantize", "analyze"])
def test_zero_calibration_samples_refused(tmp_path, capsys, command):
    calib = tmp_path / "c0.npz"
    np.savez(calib, x=np.zeros((0, 1, 8, 8), np.float32), y=np.zeros(0, np.int64))
    extra = ["-o", str(tmp_path / "q.qnn")] if command == "quantize" else []
    assert main([command, str(FLOAT_ONNX), "--calib", str(calib), *extra]) == 2
    one_line(capsys, "c0.npz", "no samples")
    assert not (tmp_path / "q.qnn").exists()


def test_calibration_limit_cuts_before_converting(tmp_path):
    from simulator.importers.onnx.float_reader import read_float_onnx
    fg = read_float_onnx(FLOAT_ONNX)
    calib = tmp_path / "c.npz"
    np.savez_compressed(calib, x=np.random.default_rng(0).random((50, 1, 8, 8)).astype(np.float32),
                        y=np.arange(50) % 10)
    x, y = commands._load_calibration(fg, str(calib), 7)
    assert x.shape == (7, 1, 8, 8) and x.dtype == np.float64 and y.shape == (7,)
    np.savez_compressed(calib, x=np.zeros((50, 1, 8, 8), np.float32), y=np.arange(49) % 10)
    with pytest.raises(HwsimError, match="50 integer labels"):  # a mismatch hidden by the cut is still found
        commands._load_calibration(fg, str(calib), 7)


# ------------------------------------------------------------------------------------------ labels

@pytest.mark.parametrize("bad", [10**9, -5, 3])
@pytest.mark.parametrize("command", ["run", "validate"])
def test_labels_outside_the_classes_refused(tmp_path, model_path, capsys, bad, command):
    y = np.zeros(8, np.int64)
    y[5] = bad
    np.savez(tmp_path / "d.npz", x=np.zeros((8, 3, 6, 6), np.float32), y=y)
    hw = ["--hw", "tsmc90"] if command == "run" else []
    assert main([command, str(model_path), *hw, "--dataset", str(tmp_path / "d.npz")]) == 2
    one_line(capsys, "d.npz", "1 of 8 labels", "0..2", str(bad))
    # labels beyond --limit are never read, so they cannot fail the run
    assert main([command, str(model_path), *hw, "--dataset", str(tmp_path / "d.npz"), "--limit", "5"]) in (0, 1)


def test_calibration_labels_outside_the_classes_refused(tmp_path, capsys):
    calib = tmp_path / "c.npz"
    np.savez(calib, x=np.zeros((4, 1, 8, 8), np.float32), y=np.array([0, 1, 10**9, -5]))
    assert main(["analyze", str(FLOAT_ONNX), "--calib", str(calib)]) == 2
    one_line(capsys, "c.npz", "2 of 4 labels", "0..9")


# ------------------------------------------------------------------------------------------ invalid ONNX

onnx = pytest.importorskip("onnx")
from onnx import helper, numpy_helper  # noqa: E402

from test_onnx_bad import tiny_qdq  # noqa: E402  (a valid QDQ model the importer accepts)


def _opset(version):
    m = tiny_qdq()
    m.opset_import[0].version = version
    return m


def _negative_dims():
    m = tiny_qdq()
    m.graph.initializer[2].dims[0] = -3
    return m


def _negative_input_dim():
    m = tiny_qdq()
    m.graph.input[0].type.tensor_type.shape.dim[1].dim_value = -2
    return m


def _self_loop():
    m = tiny_qdq()
    m.graph.node.insert(5, helper.make_node("Relu", ["c"], ["c"], name="loop"))
    return m


def _duplicate_output():
    m = tiny_qdq()
    m.graph.node.insert(2, helper.make_node("Relu", ["xf"], ["xq"], name="again"))
    return m


def _duplicate_initializer():
    m = tiny_qdq()
    m.graph.initializer.append(numpy_helper.from_array(np.array(0.5, np.float32), "x_scale"))
    return m


def _bad_attribute_type():
    m = tiny_qdq()
    conv = next(n for n in m.graph.node if n.op_type == "Conv")
    conv.attribute.append(helper.make_attribute("group", 1.5))
    return m


@pytest.mark.parametrize("build, needles", [
    (lambda: _opset(1), ["opset 1", "7 to"]),
    (lambda: _opset(99), ["opset 99"]),
    (_negative_dims, ["w_q", "negative dimension"]),
    (_negative_input_dim, ["negative dimension"]),
    (_self_loop, ["node loop (Relu)", "writes its own input"]),
    (_duplicate_output, ["node again (Relu)", "'xq'", "written twice"]),
    (_duplicate_initializer, ["x_scale", "twice"]),
    (_bad_attribute_type, ["conv1", "not valid ONNX"]),
])
def test_invalid_onnx_refused_with_the_reason(tmp_path, capsys, build, needles):
    src = tmp_path / "bad.onnx"
    src.write_bytes(build().SerializeToString())
    out = tmp_path / "out.qnn"
    assert main(["import", str(src), "-o", str(out)]) == 2
    one_line(capsys, str(src), *needles)
    assert not out.exists()


def test_checker_reason_is_reported(tmp_path, capsys):
    m = tiny_qdq()
    m.ir_version = 0  # the checker's own finding
    src = tmp_path / "noir.onnx"
    src.write_bytes(m.SerializeToString())
    assert main(["import", str(src), "-o", str(tmp_path / "o.qnn")]) == 2
    one_line(capsys, "not a valid ONNX model", "ir_version")


def test_valid_model_still_imports_and_is_left_unchanged(tmp_path):
    from simulator.importers.onnx.frontend import load_onnx
    src = tmp_path / "ok.onnx"
    m = tiny_qdq(extra_op="Frobnicate")  # unknown to ONNX: the reader, not the checker, names it
    src.write_bytes(m.SerializeToString())
    proto = load_onnx(src)
    assert proto.SerializeToString() == m.SerializeToString()  # the check's temporary changes are undone
    assert main(["import", str(tmp_path / "ok.onnx"), "-o", str(tmp_path / "o.qnn")]) == 2
    src.write_bytes(tiny_qdq().SerializeToString())
    assert main(["import", str(src), "-o", str(tmp_path / "o.qnn")]) == 0


# ------------------------------------------------------------------------------------------ out of memory

def test_out_of_memory_advice_names_what_helps(tmp_path, model_path, capsys, monkeypatch):
    def oom(args):
        raise MemoryError

    monkeypatch.setattr(commands, "run", oom)
    np.save(tmp_path / "x.npy", np.zeros((2, 3, 6, 6), np.float32))
    base = ["run", str(model_path), "--hw", "tsmc90"]
    assert main(base + ["--input", str(tmp_path / "x.npy")]) == 2
    one_line(capsys, "out of memory", "--limit N")
    assert main(base + ["--input", str(tmp_path / "x.npy"), "--limit", "1", "--batch-size", "1"]) == 2
    one_line(capsys, "out of memory", "model is too large")
    assert main(base + ["--input", str(tmp_path / "x.npy"), "--limit", "5"]) == 2
    one_line(capsys, "out of memory", "--batch-size (now 512)")
    monkeypatch.setattr(commands, "import_model", oom)
    assert main(["import", "m.onnx", "-o", "m.qnn"]) == 2
    one_line(capsys, "out of memory", "model is too large")


# --------------------------------------------------------------------------- input files that are not files

def _cli(*args, timeout=60):
    proc = subprocess.run([sys.executable, "-m", "simulator.cli", *map(str, args)], capture_output=True, text=True,
                          cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=timeout)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("hwsim: error: "), proc.stderr[-3000:]
    return proc.returncode, lines[0]


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_input_files_that_are_not_regular_files_are_refused_at_once(tmp_path, model_path):
    """A FIFO (which would block forever), a directory or a device given as an input file: one line at once."""
    fifo = tmp_path / "in.fifo"
    os.mkfifo(fifo)
    lenet = ROOT / "models" / "lenet_digits_u8.qnn"
    cases = [
        (["run", lenet, "--hw", "tsmc90", "--input", fifo], "--input: not a regular file (a FIFO)"),
        (["validate", lenet, "--dataset", fifo], "--dataset: not a regular file (a FIFO)"),
        (["compare", lenet, "--hw", "tsmc90", "--hw", "generic45", "--input", fifo], "--input"),
        (["inspect", fifo], "not a regular file (a FIFO)"),
        (["estimate", fifo, "--hw", "tsmc90"], "not a regular file (a FIFO)"),
        (["inspect", tmp_path], "not a regular file (a directory)"),
        (["quantize", FLOAT_ONNX, "--calib", fifo, "-o", tmp_path / "o.qnn"], "--calib: not a regular file"),
        (["analyze", FLOAT_ONNX, "--calib", ROOT / "models" / "digits_test.npz", "--qnn", fifo], "--qnn"),
        (["validate", lenet, "--float-model", fifo], "--float-model"),
    ]
    if os.path.exists("/dev/zero"):
        cases.append((["run", lenet, "--hw", "tsmc90", "--input", "/dev/zero"], "not a regular file (a device)"))
    for args, needle in cases:
        start = time.monotonic()
        code, line = _cli(*args, timeout=30)
        assert code == 2 and needle in line, (args, line)
        assert time.monotonic() - start < 20
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.fifo"]


def test_hw_names_too_long_for_a_file_are_one_line(tmp_path, capsys):
    """--hw or an architecture's `tech:` longer than a file name may be: one line, exit 2 (no internal error)."""
    lenet = ROOT / "models" / "lenet_digits_u8.qnn"
    for name in ("A" * 256, "A" * 300, "/".join(["B" * 200] * 30)):
        assert main(["run", str(lenet), "--hw", name]) == 2
        one_line(capsys, "--hw", "cannot be a file")
    arch = (ROOT / "hwconfigs" / "architectures" / "default.yaml").read_text()
    design = tmp_path / "design.yaml"
    design.write_text(arch.replace("format: hwsim-arch/1", "format: hwsim-arch/1\ntech: '" + "A" * 300 + "'", 1))
    assert main(["estimate", str(lenet), "--hw", str(design)]) == 2
    one_line(capsys, str(design), "tech")
