"""The Python API (simulator/api.py): every example of docs/api.md runs, and the calls give what the command line
gives for the same input — output codes, reports (timing aside), one functional run costed on several designs."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import simulator as hwsim
from simulator.report import output_array

ROOT = Path(__file__).resolve().parent.parent
U8 = "models/lenet_digits_u8.qnn"
HEAVY = ("numba", "onnx", "onnxruntime", "torch", "matplotlib")


@pytest.fixture(autouse=True)
def at_root(monkeypatch):
    monkeypatch.chdir(ROOT)   # the docs' and tests' paths are relative to the repository's root


@pytest.fixture(scope="module")
def digits():
    data = np.load(ROOT / "models/digits_test.npz")
    return data["x"][:40], data["y"][:40]


def cli(*args):
    """`hwsim ARGS` in a fresh process: stdout, or the failure with its stderr."""
    proc = subprocess.run([sys.executable, "-m", "simulator.cli", *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def untimed(rep):
    """A report without its wall-clock figures (the `timing` objects), which differ from run to run."""
    if isinstance(rep, dict):
        return {k: untimed(v) for k, v in rep.items() if k != "timing"}
    if isinstance(rep, list):
        return [untimed(v) for v in rep]
    return rep


def test_docs_examples_run():
    text = (ROOT / "docs/api.md").read_text()
    blocks = re.findall(r"^```python\n(.*?)^```", text, re.S | re.M)
    assert len(blocks) >= 10
    namespace = {"__name__": "docs_api"}
    for i, block in enumerate(blocks):   # in order, sharing one namespace, as the page reads
        exec(compile(block, f"docs/api.md, python block {i + 1}", "exec"), namespace)


def test_import_is_light_and_hwsim_alias():
    # not even numpy: `python -m simulator.cli` imports the package before it installs its Ctrl-C handling
    code = ("import sys, simulator; heavy = [m for m in %r if m in sys.modules]; assert not heavy, heavy; "
            "import hwsim; assert hwsim.run is simulator.run and hwsim.Result is simulator.Result; "
            "assert not [m for m in %r if m in sys.modules]; print(hwsim.__version__)") % (("numpy",) + HEAVY, HEAVY)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == hwsim.__version__


def test_run_matches_cli_output_and_json(tmp_path, digits):
    x, _ = digits
    np.save(tmp_path / "x.npy", x)
    cli("run", U8, "--hw", "tsmc90", "--input", tmp_path / "x.npy", "--output", tmp_path / "y.npy",
        "--output-values", tmp_path / "v.npy", "--json", tmp_path / "r.json", "-q")
    want = json.loads((tmp_path / "r.json").read_text())
    res = hwsim.run(U8, x, hw="tsmc90")
    assert np.array_equal(res.outputs, np.load(tmp_path / "y.npy"))
    values = np.load(tmp_path / "v.npy")
    assert res.values.dtype == values.dtype and np.array_equal(res.values, values)
    mine, theirs = untimed(res.report), untimed(want)
    assert mine["input"] == "the array x given (float values, quantized)"
    assert {**mine, "input": None} == {**theirs, "input": None}
    by_path = hwsim.run(U8, tmp_path / "x.npy", hw="tsmc90")   # an .npy path reads as --input does
    assert untimed(by_path.report) == theirs and set(by_path.report["timing"]) == set(want["timing"])


def test_run_sample_input_report_equals_cli(tmp_path):
    cli("run", "models/lenet_digits_knq.qnn", "--hw", "lowbit90", "--set", "pe_array.mac.rows=8", "--batch", "2",
        "--json", tmp_path / "r.json", "-q")
    want = json.loads((tmp_path / "r.json").read_text())
    res = hwsim.run("models/lenet_digits_knq.qnn", hw="lowbit90", set={"pe_array.mac.rows": 8}, batch=2)
    assert untimed(res.report) == untimed(want)


def test_estimate_and_validate_equal_cli(tmp_path):
    cli("estimate", "models/topologies/vgg16.csv", "--hw", "tpu_like", "--set", "memory.unified_buffer.banks=64",
        "--bits", "8,4", "--json", tmp_path / "e.json", "-q")
    rep = hwsim.estimate("models/topologies/vgg16.csv", hw="tpu_like", set={"memory.unified_buffer.banks": 64},
                         bits=(8, 4))
    assert untimed(rep) == untimed(json.loads((tmp_path / "e.json").read_text()))
    cli("validate", U8, "--dataset", "models/digits_test.npz", "--limit", "30", "--json", tmp_path / "v.json", "-q")
    rep = hwsim.validate(U8, dataset="models/digits_test.npz", limit=30)
    assert rep == json.loads((tmp_path / "v.json").read_text()) and rep["passed"]


def test_compare_equals_separate_runs(digits):
    x, y = digits
    model = hwsim.load_model(U8)
    designs = ["tsmc90", "hwconfigs/eyeriss65.yaml", hwsim.load_hardware("lowbit90")]
    reports = hwsim.compare(model, x, hw=designs, labels=y, batch=2)
    assert [r["hw"]["name"] for r in reports] == ["tsmc90", "eyeriss65", "lowbit90-enq-knq"]
    for rep, design in zip(reports, designs):
        alone = hwsim.run(model, x, hw=design, labels=y, batch=2)
        assert untimed(rep) == untimed(alone.report)
        assert rep["accuracy"] == alone.accuracy
    shapes = hwsim.compare("models/topologies/resnet18.csv", hw=["tsmc90", "eyeriss65"], bits="8,8")
    assert [untimed(r) for r in shapes] == [untimed(hwsim.estimate("models/topologies/resnet18.csv", hw=h))
                                            for h in ("tsmc90", "eyeriss65")]


def test_float_and_integer_inputs(digits):
    x, _ = digits
    model = hwsim.load_model(U8)
    codes = hwsim.quantize_input(model, x)
    assert np.issubdtype(codes.dtype, np.integer)
    floats = hwsim.run(model, x, hw="tsmc90")
    ints = hwsim.run(model, codes, hw="tsmc90")
    assert np.array_equal(floats.outputs, ints.outputs)
    assert ints.report["input"] == "the array x given (codes)"
    one = hwsim.run(model, x[3], hw="tsmc90")                  # a single sample, no N axis
    assert np.array_equal(one.outputs, floats.outputs[3:4])
    enc = model.layers[-1].out_enc                              # values: the dequantized outputs
    assert np.array_equal(floats.values, enc.decode(floats.outputs).astype(np.float32) * np.float32(enc.value_scale))
    with pytest.raises(hwsim.HwsimError, match="outside"):     # integers are codes: not quantized, range-checked
        hwsim.run(model, (x * 1000).astype(np.int64), hw="tsmc90")


def test_values_of_a_dequantizing_model(digits):
    x, _ = digits
    model = hwsim.load_model("models/lenet_digits_ort.qnn")
    assert model.output_dequantize
    res = hwsim.run(model, x[:5], hw="tsmc90")
    assert np.array_equal(res.values, output_array(model, res.outputs))   # what --output writes for it
    assert not np.array_equal(res.values, res.outputs)


def test_engine_refuses_floats(digits):
    x, _ = digits
    model = hwsim.load_model(U8)
    engine = hwsim.Engine(model)
    for bad in (x, x.astype(np.float64).round()):   # even float values that are whole numbers
        with pytest.raises(hwsim.HwsimError, match="integer input codes.*quantize_input"):
            engine.run(bad)
    codes = hwsim.quantize_input(model, x)
    assert np.array_equal(engine.run(codes).output, hwsim.run(model, codes, hw="tsmc90").outputs)


def test_validate_stays_the_function():
    import simulator.validate  # noqa: F401  (the submodule of the same name must not replace the API call)
    from simulator.validate import compare
    assert callable(hwsim.validate) and callable(compare)
    assert hwsim.validate(U8, limit=2)["passed"]


@pytest.mark.parametrize("call, field", [
    (lambda m, x: hwsim.run(m, x, hw="tsmc90", batch_size=0), "batch_size"),
    (lambda m, x: hwsim.run(m, x, hw="tsmc90", batch=0), "batch"),
    (lambda m, x: hwsim.run(m, x, hw="tsmc90", limit=0), "limit"),
    (lambda m, x: hwsim.run(m, x[:, :, :4], hw="tsmc90"), "x"),
    (lambda m, x: hwsim.run(m, x, hw="tsmc90", labels=[1, 2]), "labels"),
    (lambda m, x: hwsim.run(m, hw="tsmc90", labels=[1]), "labels"),
    (lambda m, x: hwsim.run(m, x, hw="tsmc90", set={"pe_array.mac.rowz": 8}), "set"),
    (lambda m, x: hwsim.run(m, x, hw="tsmc90", set="pe_array.mac.rows=8"), "set"),
    (lambda m, x: hwsim.run(m, x, hw=hwsim.load_hardware("tsmc90"), array="8x8"), "array"),
    (lambda m, x: hwsim.run(m, x, hw=42), "hw"),
    (lambda m, x: hwsim.run(42, x, hw="tsmc90"), "model"),
    (lambda m, x: hwsim.compare(m, x, hw="tsmc90"), "hw"),
    (lambda m, x: hwsim.estimate(m, hw="tsmc90", bits="4,4"), "bits"),
    (lambda m, x: hwsim.quantize("models/lenet_digits_float.onnx", x, weights="bogus:3"), "weights"),
])
def test_errors_name_the_argument(digits, call, field):
    x, _ = digits
    with pytest.raises(hwsim.HwsimError) as info:
        call(hwsim.load_model(U8), x)
    assert info.value.field == field or info.value.source == field, str(info.value)


def test_missing_files_are_one_line_errors():
    with pytest.raises(hwsim.HwsimError, match="nosuch.qnn"):
        hwsim.load_model("nosuch.qnn")
    with pytest.raises(hwsim.HwsimError, match="no hardware table 'nosuch'"):
        hwsim.run(U8, hw="nosuch")
