"""Rough edges from the "Ecosystem" issue: what a new user met when trying the README's workflows.

1. validate holds each layer to its declared requantization (float32 *is* ONNX Runtime's arithmetic), with the
   distance from exact rounding kept as information;
2. float inputs outside the input encoding's range are counted and warned about, not clamped silently;
3. the report separates hardware estimates, exact facts and the simulator's own speed; assumptions come with
   their values and meanings; prose is wrapped;
4. hints name commands that work (a checkout install, --dataset, hwsim import); export refuses a .qnn name;
5. run --output-values (dequantized outputs) and --show N (predicted classes beside the labels).
"""

from __future__ import annotations

import inspect
import json
import re
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import model_factory
from simulator import reference
from simulator.cli import main
from simulator.encodings import UniformAct, UniformW
from simulator.engine import Engine
from simulator.errors import HwsimError
from simulator.graph import Layer, Model
from simulator.qnn.model_io import load_model, save_model
from simulator.units.requantizer import quantize_multiplier, requantize_reference
from simulator.validate import compare

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / "models"
LENET = MODELS / "lenet_digits_u8.qnn"
DATASET = MODELS / "digits_test.npz"


def hwsim(capsys, *args):
    """Run the command line in this process: (exit status, stdout, stderr)."""
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("hwsim: error: ") and "Traceback" not in err, err
    return lines[0]


@pytest.fixture(autouse=True)
def columns(monkeypatch):
    monkeypatch.setenv("COLUMNS", "100")   # the report wraps prose to the terminal, at most 100 columns


# ------------------------------------------------------------------------ 1. the declared requantization


def _requant_cases(mode, rng):
    """Accumulators and multipliers valid for `mode` (TFLite's modes take int32 accumulators)."""
    acc = np.concatenate([rng.integers(-(1 << 31), 1 << 31, size=200), rng.integers(-3000, 3000, size=200),
                          np.array([0, 1, -1, 2 ** 31 - 1, -2 ** 31])])
    if mode == "shift":
        ms = [2.0 ** -k for k in (0, 1, 5, 13, 31, 40)] + [2.0, 8.0]
        acc = acc // 2 ** 8     # room for the left shifts
    else:
        ms = [float(m) for m in rng.uniform(1e-6, 0.999, size=6)] + [0.5, 0.25, 1.0 / 3, 2.0 ** -20]
        if mode != "fixed_double":
            ms.append(1.75)
    return acc.astype(np.int64), ms


@pytest.mark.parametrize("mode", ["float32", "float64", "fixed_double", "fixed_single", "shift"])
def test_reference_rounds_like_each_modes_definition(mode):
    """The reference's own rounding (written apart from the engine's requantizer) equals the requantizer's
    element-by-element reference (Python ints, IEEE scalars) in every mode."""
    rng = np.random.default_rng(sum(map(ord, mode)))
    acc, ms = _requant_cases(mode, rng)
    for m in ms:
        if mode == "fixed_double" and quantize_multiplier(m)[1] > 0:
            continue   # acc << shift would leave int32: TFLite's (and the engine's) error, not a rounding
        ok = acc if mode != "fixed_single" else acc[np.abs(acc * m) < 2 ** 31 - 2]   # a result beyond int32
        got = reference._requantize_one(ok, m, mode)                                 # stops the engine
        want = requantize_reference(ok, m, mode)
        np.testing.assert_array_equal(got, want, err_msg=f"{mode} m={m!r}")


def test_reference_writes_its_own_requantization():
    """The reference must not call the engine's requantizer: a bug there would then pass on both sides."""
    imports = [line for line in inspect.getsource(reference).splitlines() if re.match(r"\s*(from|import) ", line)]
    assert imports and not [line for line in imports if re.search(r"requantiz|residual_add|mul_codes|kernels",
                                                                     line)], imports


def _arbitrary_scales(rng, lo, hi):
    return 2.0 ** int(rng.integers(lo, hi + 1)) * float(rng.uniform(0.55, 0.95))


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2 ** 32 - 1))
def test_engine_is_bit_exact_to_the_declared_modes_with_arbitrary_scales(seed):
    """Random models of every op with scales that are not powers of two (so float32, fixed_double and
    fixed_single really round differently from exact arithmetic): validate passes, end to end and layer by
    layer; the exact-rounding columns only inform."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(model_factory, "pow2", _arbitrary_scales)
        model = model_factory.random_model(seed, requant=("float32", "float64", "fixed_double", "fixed_single"))
    try:
        result = compare(Engine(model), model.sample_input)
    except HwsimError:   # e.g. a fixed-point requantizer handed more than int32: the engine itself refuses
        return
    assert result.passed, [(c.name, c.requant, c.local_max_diff_lsb) for c in result.layers]
    assert all(c.mismatches == 0 and c.local_mismatches == 0 for c in result.layers)


def test_arbitrary_scales_do_differ_from_exact_rounding(monkeypatch):
    """The property above is not vacuous: over a few models the declared modes land off exact rounding."""
    monkeypatch.setattr(model_factory, "pow2", _arbitrary_scales)
    off = 0
    for seed in range(60):
        model = model_factory.random_model(seed, requant=("float32", "fixed_double", "fixed_single"))
        result = compare(Engine(model), model.sample_input)
        assert result.passed
        off += sum(c.exact_rounding_mismatches for c in result.layers)
    assert off > 0


def test_fixed_double_double_rounding_passes_and_is_reported():
    """TFLite's fixed_double rounds twice: with M = 1/4, 5/4 becomes 2 instead of 1. That is the declared
    arithmetic, so validate passes; the exact-rounding fields count those outputs, at most one LSB."""
    rng = np.random.default_rng(1)
    w = rng.integers(-127, 128, size=(4, 16))
    lay = Layer("fc", "dense", ["input"], {"requant": "fixed_double"}, UniformAct(16, True, 2.0 ** -13), w,
                UniformW(8, True, (2.0 ** -9,)))
    model = Model("m", (16,), UniformAct(8, False, 2.0 ** -6), [lay])
    result = compare(Engine(model), rng.integers(0, 256, size=(300, 16)))
    comp = result.layers[0]
    assert result.passed and comp.local_mismatches == comp.mismatches == 0
    assert comp.exact_rounding_mismatches > 0 and comp.exact_rounding_max_diff_lsb == 1


def test_readme_float_model_workflow_passes(tmp_path, capsys):
    """The README's `hwsim validate ... --float-model ...` on the shipped ONNX Runtime model: PASS, exit 0, and
    the three outputs ONNX Runtime's float32 requantization puts 1 LSB from exact rounding shown as such."""
    pytest.importorskip("onnxruntime")
    rep_path = tmp_path / "v.json"
    code, out, _ = hwsim(capsys, "validate", MODELS / "lenet_digits_ort.qnn", "--float-model",
                         MODELS / "lenet_digits_float.onnx", "--dataset", DATASET, "--json", rep_path)
    rep = json.loads(rep_path.read_text())
    assert code == 0 and rep["passed"] and "PASS" in out and "FAIL" not in out
    assert all(c["local_mismatches"] == 0 and c["mismatches"] == 0 for c in rep["layers"])
    off = {c["name"]: c["exact_rounding_mismatches"] for c in rep["layers"] if c["exact_rounding_mismatches"]}
    assert off == {"Relu_1_output_0": 3}
    assert max(c["exact_rounding_max_diff_lsb"] for c in rep["layers"]) == 1
    assert "vs exact rounding" in out and "3 (max 1)" in out


# ------------------------------------------------------------------------ 2. saturated input codes


def test_unnormalised_dataset_is_warned_about(tmp_path, capsys):
    """Raw pixels (0..16) instead of the model's 0..1: the codes saturate; the report says how many, what
    fraction and why, and the JSON has the counts."""
    data = np.load(DATASET)
    x, y = data["x"] * 16, data["y"]
    np.savez(tmp_path / "raw.npz", x=x, y=y)
    enc = load_model(LENET).input_enc
    expected = int(np.count_nonzero(np.rint(x.astype(np.float64) / enc.scale) > enc.value_range()[1]))
    assert expected > 0
    rep_path = tmp_path / "r.json"
    code, out, _ = hwsim(capsys, "run", LENET, "--hw", "tsmc90", "--dataset", tmp_path / "raw.npz", "--json",
                         rep_path)
    assert code == 0
    rep = json.loads(rep_path.read_text())
    assert rep["input_saturated_codes"] == expected and rep["input_float_values"] == x.size
    assert rep["input_saturated_fraction"] == pytest.approx(expected / x.size)
    assert rep["input_range"] == [0.0, enc.value_range()[1] * enc.scale]
    warning = " ".join(line.strip() for line in out.split("warning:", 1)[1].splitlines()[:4])
    assert f"{expected:,} of {x.size:,} input values" in warning and "%" in warning and "normalised" in warning
    # validate and compare count them too
    for args in (["validate", LENET], ["compare", LENET, "--hw", "tsmc90", "--hw", "generic45"]):
        code, out, _ = hwsim(capsys, *args, "--dataset", tmp_path / "raw.npz", "--json", rep_path)
        assert "warning:" in out and json.loads(rep_path.read_text())["input_saturated_codes"] == expected


def test_values_at_the_ends_are_not_saturated(tmp_path, capsys):
    """Only values strictly outside the range count: the ends themselves, and values that round onto them,
    are ordinary codes; each value beyond is counted once, below or above."""
    enc = load_model(LENET).input_enc
    top = enc.value_range()[1] * enc.scale          # 1.9375 for u5 at 1/16
    x = np.zeros((3, 1, 8, 8), np.float32)
    x[0, 0, 0, :4] = [0.0, top, top + 0.4 * enc.scale, 1.0]      # ends, and rounding onto the top code
    x[1, 0, 0, :3] = [top + enc.scale, 5.0, -enc.scale]           # beyond: 2 above, 1 below
    np.save(tmp_path / "x.npy", x)
    rep_path = tmp_path / "r.json"
    code, out, _ = hwsim(capsys, "run", LENET, "--hw", "tsmc90", "--input", tmp_path / "x.npy", "--json", rep_path)
    rep = json.loads(rep_path.read_text())
    assert code == 0 and rep["input_saturated_codes"] == 3 and rep["input_float_values"] == x.size
    assert "warning: 3 of 192 input values (1.56%)" in out


def test_normalised_and_integer_inputs_have_no_warning(tmp_path, capsys):
    rep_path = tmp_path / "r.json"
    code, out, _ = hwsim(capsys, "run", LENET, "--hw", "tsmc90", "--dataset", DATASET, "--json", rep_path)
    rep = json.loads(rep_path.read_text())
    assert code == 0 and "warning" not in out
    assert rep["input_saturated_codes"] == 0 and rep["input_float_values"] == 540 * 64
    codes = np.full((2, 1, 8, 8), 31, np.uint8)      # codes at the top are taken as they are
    np.save(tmp_path / "c.npy", codes)
    code, out, _ = hwsim(capsys, "run", LENET, "--hw", "tsmc90", "--input", tmp_path / "c.npy", "--json", rep_path)
    rep = json.loads(rep_path.read_text())
    assert code == 0 and "warning" not in out
    assert rep["input_saturated_codes"] == 0 and rep["input_float_values"] == 0


# ------------------------------------------------------------------------ 3. estimate, measured, simulator speed


def test_run_report_labels_estimates_and_simulator_speed(tmp_path, capsys):
    rep_path = tmp_path / "r.json"
    code, out, _ = hwsim(capsys, "run", LENET, "--hw", "tsmc90", "--dataset", DATASET, "--json", rep_path)
    assert code == 0
    lines = out.splitlines()
    speed = [line for line in lines if "inferences/s" in line]
    # two rates: the design's (estimated) and the simulator's own, each saying which it is
    assert any(line.startswith("throughput") and "modelled hardware" in line for line in speed)
    sim = [i for i, line in enumerate(lines) if line.startswith("simulator speed (this machine, not hardware)")]
    assert len(sim) == 1 and "simulated inferences/s" in " ".join(" ".join(lines[sim[0]:sim[0] + 2]).split())
    assert "hardware estimates" in out and "not measurements" in out
    assert "exact, from the model and its bit-exact run:" in out
    rep = json.loads(rep_path.read_text())
    assert rep["timing"]["inferences_per_s"] > 0 and rep["throughput_inferences_per_s"] > 0


def test_assumptions_listed_with_values_and_meanings(tmp_path, capsys):
    rep_path = tmp_path / "r.json"
    code, out, _ = hwsim(capsys, "run", LENET, "--hw", "tsmc90", "--json", rep_path)
    rep = json.loads(rep_path.read_text())
    figures = {f["row"]: f for f in rep["assumption_figures"]}
    assert set(figures) == set(rep["assumptions"]) and len(figures) > 5
    assert figures["alu.add_bits"]["value"] == 16 and "residual adds" in figures["alu.add_bits"]["source"]
    assert figures["architecture.clock.mhz"]["value"] == 200
    text = " ".join(line.strip() for line in out.splitlines())
    assert "alu.add_bits = 16: the trace does not yet carry operand widths of residual adds" in text
    assert "architecture.clock.mhz = 200: Eyeriss-class clock" in text
    assert "; architecture.dram.burst_bits; " not in out      # not the old ';'-joined list of names


@pytest.mark.parametrize("width", [60, 100, 250])
def test_report_prose_is_wrapped(capsys, monkeypatch, width):
    monkeypatch.setenv("COLUMNS", str(width))
    code, out, _ = hwsim(capsys, "run", LENET, "--hw", "tsmc90")
    assert code == 0
    limit = min(width, 100)
    prose = [line for line in out.splitlines() if line.startswith(("note:", "  ", "assumptions", "simulator"))
             and not line.startswith("  " * 3)]
    assert len(prose) > 10
    assert max(len(line) for line in prose) <= limit, max(prose, key=len)
    assert any("note: memory:" in line for line in prose)


# ------------------------------------------------------------------------ 4. hints that lead somewhere


def test_missing_extra_names_the_checkout_install():
    from simulator.importers import require
    with pytest.raises(HwsimError) as exc:
        require("hwsim_no_such_module_xyz", "onnx")
    assert 'python -m pip install -e ".[onnx]"' in exc.value.line() and "hwsim[" not in exc.value.line()


def test_no_package_index_install_hints_left():
    """hwsim is on no package index: no `pip install 'hwsim[...]'` anywhere in the code or the docs."""
    hint = re.compile(r"hwsim\[[a-z]+\]")
    files = [p for p in (ROOT / "simulator").rglob("*.py")] + list((ROOT / "benchmarks").rglob("*.py"))
    files += list((ROOT / "docs").glob("*.md")) + [ROOT / "README.md"]
    found = [str(p.relative_to(ROOT)) for p in files if hint.search(p.read_text(errors="replace"))]
    assert found == []


def test_import_help_names_the_checkout_install(capsys):
    with pytest.raises(SystemExit):
        main(["import", "--help"])
    assert 'python -m pip install -e ".[onnx]"' in " ".join(capsys.readouterr().out.split())


def test_npz_given_to_input_names_the_dataset_option(capsys):
    code, _, err = hwsim(capsys, "run", LENET, "--hw", "tsmc90", "--input", DATASET)
    line = one_error_line(err)
    assert code == 2 and "--dataset" in line and "load_npz" not in line


@pytest.mark.parametrize("command, extra", [("run", ["--hw", "tsmc90"]), ("validate", []), ("inspect", []),
                                            ("export", ["-o", "out.onnx"])])
def test_onnx_model_where_a_qnn_is_needed_names_hwsim_import(capsys, command, extra):
    onnx = MODELS / "lenet_digits_float.onnx"
    code, _, err = hwsim(capsys, command, onnx, *extra)
    line = one_error_line(err)
    assert code == 2 and str(onnx) in line
    assert f"hwsim import {onnx} -o {str(onnx)[:-5]}.qnn" in line and f"then 'hwsim {command} " in line


def test_export_refuses_a_qnn_output_name(tmp_path, capsys):
    target = tmp_path / "knq.qnn"
    code, _, err = hwsim(capsys, "export", MODELS / "lenet_digits_knq.qnn", "-o", target)
    line = one_error_line(err)
    assert code == 2 and str(target) in line and "-o" in line and ".onnx" in line
    assert not target.exists() and list(tmp_path.iterdir()) == []


def test_import_refuses_an_onnx_output_name(tmp_path, capsys):
    target = tmp_path / "ort.onnx"
    code, _, err = hwsim(capsys, "import", MODELS / "lenet_digits_ort_qdq.onnx", "-o", target)
    line = one_error_line(err)
    assert code == 2 and str(target) in line and "-o" in line and ".qnn" in line
    assert list(tmp_path.iterdir()) == []


def test_npy_given_as_dataset_says_how_to_make_an_npz(tmp_path, capsys):
    np.save(tmp_path / "x.npy", np.load(DATASET)["x"])
    code, _, err = hwsim(capsys, "run", LENET, "--hw", "tsmc90", "--dataset", tmp_path / "x.npy")
    line = one_error_line(err)
    assert code == 2 and "numpy.savez" in line and "--input" in line


# ------------------------------------------------------------------------ 5. --output-values and --show


def test_output_values_and_show(tmp_path, capsys):
    codes_path, values_path, rep_path = tmp_path / "y.npy", tmp_path / "v.npy", tmp_path / "r.json"
    code, out, _ = hwsim(capsys, "run", LENET, "--hw", "tsmc90", "--dataset", DATASET, "--output", codes_path,
                         "--output-values", values_path, "--show", 7, "--json", rep_path)
    assert code == 0
    codes, values = np.load(codes_path), np.load(values_path)
    enc = load_model(LENET).layers[-1].out_enc
    assert values.dtype == np.float32 and values.shape == codes.shape == (540, 10)
    np.testing.assert_array_equal(values, (codes.astype(np.int64) - enc.zero_point).astype(np.float32)
                                  * np.float32(enc.scale))
    labels = np.load(DATASET)["y"]
    rep = json.loads(rep_path.read_text())
    assert [p["predicted"] for p in rep["predictions"]] == np.argmax(values[:7], axis=1).tolist()
    assert [p["label"] for p in rep["predictions"]] == labels[:7].tolist()
    table = out.split("predicted classes (argmax of the output), first 7 of 540 samples:", 1)[1].splitlines()
    assert table[1].split() == ["sample", "predicted", "label", "correct"]
    rows = [line.split() for line in table[3:10]]
    assert [int(r[1]) for r in rows] == np.argmax(values[:7], axis=1).tolist()
    assert [int(r[2]) for r in rows] == labels[:7].tolist()


def test_show_without_labels(capsys):
    code, out, _ = hwsim(capsys, "run", LENET, "--hw", "tsmc90", "--show", 100)   # the stored sample input
    assert code == 0
    table = out.split("predicted classes (argmax of the output), first 8 of 8 samples:", 1)[1].splitlines()
    assert table[1].split() == ["sample", "predicted"]


def test_show_and_output_values_errors(tmp_path, capsys):
    code, _, err = hwsim(capsys, "run", LENET, "--hw", "tsmc90", "--show", 0)
    assert code == 2 and "--show: must be positive" in one_error_line(err)
    code, _, err = hwsim(capsys, "run", LENET, "--hw", "tsmc90", "--output-values", "-")
    assert code == 2 and "--output-values" in one_error_line(err)
    code, _, err = hwsim(capsys, "run", LENET, "--hw", "tsmc90", "--output-values", LENET)
    assert code == 2 and "--output-values: is an input of this command" in one_error_line(err)
    # a model with one output value per sample has no class to show
    w = np.ones((1, 64), np.int64)
    single = Model("one", (1, 8, 8), UniformAct(8, False, 2.0 ** -4),
                   [Layer("flat", "flatten", ["input"]),
                    Layer("fc", "dense", ["flat"], {"requant": "float64"}, UniformAct(8, True, 1.0), w,
                          UniformW(8, True, (2.0 ** -6,)))])
    save_model(single.check(), tmp_path / "one.qnn")
    code, _, err = hwsim(capsys, "run", tmp_path / "one.qnn", "--hw", "tsmc90", "--show", 3,
                         "--output-values", tmp_path / "v.npy")
    line = one_error_line(err)
    assert code == 2 and "one.qnn" in line and "--show" in line and "classifier" in line
    assert not (tmp_path / "v.npy").exists()
