"""Kernel modes (simulator/jit.py): which runs take Python mode, that such a run never imports numba and gives
the report numba mode gives, and the on-disk cache of the cost model's loop-nest results in Python mode."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from simulator.commands import PYTHON_KERNELS_MAX_OPS, choose_kernels
from simulator.errors import HwsimError
from simulator.graph import layer_figures
from simulator.qnn.model_io import load_model

ROOT = Path(__file__).resolve().parents[1]
U8 = ROOT / "models" / "lenet_digits_u8.qnn"


def _run(args, env_extra, tmp_path):
    env = {**os.environ, **env_extra, "HWSIM_CACHE_DIR": str(tmp_path / "cache")}
    env.pop("NUMBA_DISABLE_JIT", None)
    code = ("import sys; from simulator.cli import main; status = main(sys.argv[1:]); "
            "print('numba imported' if 'numba' in sys.modules else 'no numba', file=sys.stderr); sys.exit(status)")
    return subprocess.run([sys.executable, "-c", code, *map(str, args)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)


def test_small_run_takes_python_mode_without_numba_and_reports_the_same(tmp_path):
    reports = {}
    for kernels in ("auto", "numba"):
        out = tmp_path / f"{kernels}.json"
        proc = _run(["run", U8, "--hw", "tsmc90", "--json", out, "-q"], {"HWSIM_KERNELS": kernels}, tmp_path)
        assert proc.returncode == 0, proc.stderr
        assert proc.stderr.strip().endswith("no numba" if kernels == "auto" else "numba imported")
        reports[kernels] = json.loads(out.read_text())
    assert reports["auto"]["timing"]["kernels"] == "python" and reports["numba"]["timing"]["kernels"] == "numba"
    for rep in reports.values():
        rep.pop("timing")
    assert reports["auto"] == reports["numba"]


def test_the_dataset_run_takes_numba_mode(tmp_path):
    out = tmp_path / "r.json"
    proc = _run(["run", U8, "--hw", "tsmc90", "--dataset", ROOT / "models" / "digits_test.npz", "--json", out, "-q"],
                {}, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(out.read_text())["timing"]["kernels"] == "numba"


def test_choose_kernels_threshold_and_env(monkeypatch):
    """The rule as documented: Python mode up to PYTHON_KERNELS_MAX_OPS MACs / ops in the whole run; a bad
    HWSIM_KERNELS is one error naming it. (jit.prefer_python is stubbed: this process keeps its mode.)"""
    from simulator import jit
    chosen = []
    monkeypatch.setattr(jit, "prefer_python", lambda python: chosen.append(python) or "x")
    model = load_model(str(U8))
    per_sample = sum(layer_figures(lay)["ops"] for lay in model.layers)
    limit = PYTHON_KERNELS_MAX_OPS // per_sample
    monkeypatch.delenv("HWSIM_KERNELS", raising=False)
    choose_kernels(model, limit)
    choose_kernels(model, limit + 1)
    monkeypatch.setenv("HWSIM_KERNELS", "numba")
    choose_kernels(model, 1)
    monkeypatch.setenv("HWSIM_KERNELS", "python")
    choose_kernels(model, 10 ** 6)
    assert chosen == [True, False, False, True]
    monkeypatch.setenv("HWSIM_KERNELS", "fast")
    with pytest.raises(HwsimError) as exc:
        choose_kernels(model, 1)
    assert exc.value.field == "HWSIM_KERNELS"


def test_nest_cache_returns_what_the_evaluation_computes(tmp_path, monkeypatch):
    """Python mode's disk cache: a hit equals a fresh evaluation; a corrupt or wrong-shaped file is computed
    again (and replaced); an unwritable cache directory only means no cache."""
    from simulator.hw import access
    geom = access.Geometry((1, 2, 8, 4, 6, 6), 3, 3, 8, 8, 1, 1, 1, 1)
    link = access.Link(8, 8, 8, 32, (True,) * 3, (True, False, True), (64,) * 4, 64, 32.0, 10, 500.0)
    tiles = np.array([[1, 1, 8, 4, 6, 6], [1, 2, 4, 2, 3, 6], [1, 1, 2, 4, 2, 2]], np.int64)
    orders = np.array([[0, 1, 2, 3, 4, 5], [3, 2, 1, 0, 5, 4], [5, 4, 3, 2, 1, 0]], np.int64)
    want = access._evaluate_nests(geom, link, tiles, orders)
    monkeypatch.setenv("HWSIM_CACHE_DIR", str(tmp_path / "c"))
    first = access._disk_cached(geom, link, tiles, orders)
    files = list((tmp_path / "c" / "nests").glob("*.npy"))
    assert len(files) == 1 and np.array_equal(first, want)
    np.save(files[0], np.ones((2, 2)))   # wrong shape
    assert np.array_equal(access._disk_cached(geom, link, tiles, orders), want)
    files[0].write_bytes(b"not an npy file")
    assert np.array_equal(access._disk_cached(geom, link, tiles, orders), want)
    assert np.array_equal(np.load(files[0]), want)   # replaced by the computed rows
    assert np.array_equal(access._disk_cached(geom, link, tiles[:2], orders[:2]), want[:2])   # another key
    blocker = tmp_path / "file"
    blocker.write_text("x")
    monkeypatch.setenv("HWSIM_CACHE_DIR", str(blocker))   # a file where the directory should be
    assert np.array_equal(access._disk_cached(geom, link, tiles, orders), want)


def test_cost_model_mode_python_first_then_numba_past_its_budget(monkeypatch):
    """_cost_mode: numba at once when numba's cache holds `_evaluate`; otherwise Python until the process has
    spent PYTHON_BUDGET_S in the nest searches, then numba (once); always Python in a Python-mode process."""
    from simulator import jit
    from simulator.hw import access
    calls = []
    modes = {}
    monkeypatch.setattr(jit, "_group_modes", modes)
    monkeypatch.setattr(jit, "set_group_mode", lambda group, m: calls.append(m) or modes.__setitem__(group, m) or m)
    monkeypatch.setattr(jit, "mode", lambda: jit.NUMBA)
    monkeypatch.setattr(access, "kernel_cached", lambda: False)
    monkeypatch.setattr(access, "_python_spent_s", 0.0)
    assert access._cost_mode() == jit.PYTHON
    monkeypatch.setattr(access, "_python_spent_s", access.PYTHON_BUDGET_S / 2)
    assert access._cost_mode() == jit.PYTHON
    monkeypatch.setattr(access, "_python_spent_s", access.PYTHON_BUDGET_S * 2)
    assert access._cost_mode() == jit.NUMBA and access._cost_mode() == jit.NUMBA
    assert calls == [jit.PYTHON, jit.NUMBA]
    modes.clear()
    monkeypatch.setattr(access, "kernel_cached", lambda: True)
    assert access._cost_mode() == jit.NUMBA
    modes.clear()
    monkeypatch.setattr(jit, "mode", lambda: jit.PYTHON)
    assert access._cost_mode() == jit.PYTHON
