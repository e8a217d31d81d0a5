"""The command line as a user runs it: happy paths, reports, and one clear error line for bad input."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from model_factory import random_model
from simulator.cli import main
from simulator.qnn.model_io import save_model

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("m") / "model.qnn"
    save_model(random_model(7), path)
    return path


def run_cli(*args):
    """Run hwsim in a fresh process: returns (exit code, stdout, stderr)."""
    proc = subprocess.run([sys.executable, "-m", "simulator.cli", *map(str, args)], capture_output=True, text=True,
                          cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    return proc.returncode, proc.stdout, proc.stderr


def one_error_line(err, *needles):
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("hwsim: error: ") and "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


def test_help_for_every_subcommand(capsys):
    for sub in ("run", "estimate", "compare", "validate", "inspect"):
        with pytest.raises(SystemExit) as exc:
            main([sub, "--help"])
        assert exc.value.code == 0
        assert sub in capsys.readouterr().out


def test_run_with_json_and_output(tmp_path, model_path, capsys):
    out, rep = tmp_path / "y.npy", tmp_path / "r.json"
    assert main(["run", str(model_path), "--hw", "tsmc90", "--output", str(out), "--json", str(rep)]) == 0
    text = capsys.readouterr().out
    assert "energy per inference" in text and "sample input stored in the model" in text
    report = json.loads(rep.read_text())
    for key in ("energy_pj_per_inference", "energy_breakdown_pj", "weight_storage_bits", "activation_storage_bits",
                "accuracy", "layers", "timing"):
        assert key in report
    assert set(report["energy_breakdown_pj"]) == {"mac", "popcount", "lut", "converters", "requant", "other_alu",
                                                  "sram", "dram", "leakage", "clock"}
    assert report["energy_pj_per_inference"] == pytest.approx(sum(report["energy_breakdown_pj"].values()))
    layer_sum = sum(layer["energy_pj"] for layer in report["layers"])
    assert report["energy_pj_per_inference"] == pytest.approx(layer_sum)
    assert report["cycles"] == sum(layer["cycles"] for layer in report["layers"])
    assert report["latency_s"] == pytest.approx(report["cycles"] / report["clock_hz"])
    for layer in report["layers"]:
        assert {"name", "op", "macs", "energy_pj", "cycles", "compute_cycles", "stall_cycles", "utilization",
                "accesses"} <= set(layer)
        assert layer["cycles"] == layer["compute_cycles"] + sum(layer["stall_cycles"].values())
    assert "compulsory" not in json.dumps(report) and "compulsory" not in text
    assert report["timing"]["functional_s"] > 0
    y = np.load(out)
    assert y.shape[0] == report["samples"] and np.issubdtype(y.dtype, np.integer)


def test_run_on_generic45_costs_less_than_tsmc90(tmp_path, model_path):
    """Dynamic energy (all but leakage) scales with C·V²: less at 45 nm on the same (default) architecture.
    Leakage is not ordered that way: CACTI's 45 nm HP devices leak ~12x more per um2 than 90 nm HP ones."""
    energies = {}
    for hw in ("tsmc90", "generic45"):
        rep = tmp_path / f"{hw}.json"
        assert main(["run", str(model_path), "--hw", hw, "--json", str(rep)]) == 0
        data = json.loads(rep.read_text())
        energies[hw] = data["energy_pj_per_inference"] - data["energy_breakdown_pj"]["leakage"]
    assert 0 < energies["generic45"] < energies["tsmc90"]


def test_dataset_accuracy_and_input_forms(tmp_path, model_path, capsys):
    from simulator.qnn.model_io import load_model
    from simulator.engine import Engine
    model = load_model(model_path)
    rng = np.random.default_rng(3)
    lo, hi = model.input_enc.code_range()
    x = rng.integers(lo, hi + 1, size=(20,) + tuple(model.input_shape))
    out = Engine(model).run(x).output
    labels = np.argmax(model.layers[-1].out_enc.decode(out), axis=1)
    labels[:5] = (labels[:5] + 1) % out.shape[1] if out.shape[1] > 1 else labels[:5]
    np.savez(tmp_path / "d.npz", x=x, y=labels)
    rep = tmp_path / "r.json"
    assert main(["run", str(model_path), "--hw", "generic45", "--dataset", str(tmp_path / "d.npz"),
                 "--json", str(rep)]) == 0
    expected = 1.0 if out.shape[1] == 1 else 15 / 20
    assert json.loads(rep.read_text())["accuracy"] == pytest.approx(expected)
    np.save(tmp_path / "x.npy", x[0])  # a single sample without the batch axis
    assert main(["run", str(model_path), "--hw", "generic45", "--input", str(tmp_path / "x.npy")]) == 0


def test_validate_and_inspect(tmp_path, model_path, capsys):
    assert main(["validate", str(model_path)]) == 0
    assert "PASS" in capsys.readouterr().out
    assert main(["inspect", str(model_path), "--json", str(tmp_path / "i.json")]) == 0
    assert "fc" in capsys.readouterr().out
    assert json.loads((tmp_path / "i.json").read_text())["layers"][-1]["name"] == "fc"


def test_truncated_model_is_one_error_line(tmp_path, model_path):
    bad = tmp_path / "bad.qnn"
    bad.write_bytes(model_path.read_bytes()[:-7])
    code, out, err = run_cli("run", bad, "--hw", "tsmc90", "--output", tmp_path / "y.npy")
    assert code != 0
    one_error_line(err, str(bad))
    assert not (tmp_path / "y.npy").exists()


def test_bad_yaml_is_one_error_line(tmp_path, model_path):
    table = yaml.safe_load((ROOT / "hwconfigs" / "tsmc90.yaml").read_text())
    broken = tmp_path / "neg.yaml"

    def first_number_path(node, path=()):
        if isinstance(node, dict):
            if "value" in node and isinstance(node["value"], (int, float)) and not isinstance(node["value"], bool):
                return path + ("value",)
            for key, value in node.items():
                found = first_number_path(value, path + (key,))
                if found:
                    return found
        return None

    path = first_number_path(table)
    node = table
    for key in path[:-1]:
        node = node[key]
    node["value"] = -4
    broken.write_text(yaml.safe_dump(table))
    code, _, err = run_cli("run", model_path, "--hw", broken)
    assert code != 0
    one_error_line(err, str(broken), ".".join(path[:-1]))


def test_unknown_hw_name_lists_shipped_tables(model_path):
    code, _, err = run_cli("run", model_path, "--hw", "tsmc7")
    assert code != 0
    one_error_line(err, "tsmc90")


def test_input_shape_mismatch(tmp_path, model_path):
    np.save(tmp_path / "x.npy", np.zeros((2, 5, 5, 5), dtype=np.float32))
    code, _, err = run_cli("run", model_path, "--hw", "tsmc90", "--input", tmp_path / "x.npy")
    assert code != 0
    one_error_line(err, "x.npy", "does not match")


def _run_on_a_terminal(args, env, terminal: bool) -> str:
    """Standard error of `hwsim args` run with standard error on a pseudo-terminal (or a pipe)."""
    import pty
    if not terminal:
        done = subprocess.run([sys.executable, "-m", "simulator.cli", *map(str, args)], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        return done.stderr
    leader, follower = pty.openpty()
    chunks = []
    try:
        child = subprocess.Popen([sys.executable, "-m", "simulator.cli", *map(str, args)], cwd=ROOT, env=env,
                                 stdout=subprocess.DEVNULL, stderr=follower)
        os.close(follower)   # the child's copy stays open until it ends
        while True:          # read as it writes (a full terminal buffer would block it)
            try:
                chunk = os.read(leader, 65536)
            except OSError:   # the child closed the terminal: everything was read
                break
            if not chunk:
                break
            chunks.append(chunk)
        assert child.wait(timeout=300) == 0, b"".join(chunks).decode(errors="replace")
    finally:
        os.close(leader)
    return b"".join(chunks).decode(errors="replace")


@pytest.mark.skipif(sys.platform == "win32", reason="pseudo-terminals")
def test_compiling_note_when_numba_compiles_on_a_terminal_only(tmp_path):
    """A person at a terminal is told why the first run waits, when numba starts compiling (not when it loads
    its cache); a pipe or a log gets nothing extra (one line per error stays the rule)."""
    from simulator.commands import COMPILING_NOTE
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "numba"), "HWSIM_CACHE_DIR": str(tmp_path / "hwsim")}
    env.pop("NUMBA_DISABLE_JIT", None)
    args = ["run", ROOT / "models" / "lenet_digits_u8.qnn", "--hw", "tsmc90", "--dataset",
            ROOT / "models" / "digits_test.npz"]
    assert COMPILING_NOTE not in _run_on_a_terminal(args, env, terminal=False)   # compiles, into a pipe
    fresh = {**env, "NUMBA_CACHE_DIR": str(tmp_path / "numba2")}
    assert COMPILING_NOTE in _run_on_a_terminal(args, fresh, terminal=True)       # compiles, on a terminal
    assert COMPILING_NOTE not in _run_on_a_terminal(args, fresh, terminal=True)   # loads the cache
    # --quiet: nothing but errors
    quiet = {**env, "NUMBA_CACHE_DIR": str(tmp_path / "numba3")}
    assert COMPILING_NOTE not in _run_on_a_terminal(args + ["--quiet"], quiet, terminal=True)
