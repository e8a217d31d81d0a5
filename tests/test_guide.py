"""docs/guide.md runs as written: every ```sh and ```python block, in order, in a fresh directory, each exiting 0
(the guide writes everything under tutorial/ and names the shipped designs, so it needs nothing from the
checkout but hwsim itself); then the facts the text tells the reader to look for are checked in the outputs."""

import csv
import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest

for _module in ("torch", "onnx", "onnxruntime", "sklearn", "matplotlib"):
    pytest.importorskip(_module, reason=f"docs/guide.md needs {_module}: "
                                        'pip install -e ".[onnx,torch,plot,models]"')

ROOT = Path(__file__).resolve().parent.parent
GUIDE = ROOT / "docs/guide.md"
BLOCK = re.compile(r"^```(sh|python)\n(.*?)^```", re.S | re.M)


def shims(directory: Path) -> dict:
    """`hwsim` and `python` on PATH as this checkout under this interpreter, whatever is installed."""
    directory.mkdir()
    hwsim = directory / "hwsim"
    hwsim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m simulator.cli "$@"\n')
    hwsim.chmod(hwsim.stat().st_mode | stat.S_IXUSR)
    (directory / "python").symlink_to(sys.executable)
    path = os.pathsep.join([str(directory), os.environ.get("PATH", "")])
    pythonpath = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PATH": path, "PYTHONPATH": pythonpath, "MPLBACKEND": "Agg"}


def run_guide(work: Path, env: dict) -> list:
    """Each block in a fresh process (sh: bash -e, so every command must succeed): [(code, stdout)]."""
    ran = []
    for i, (lang, code) in enumerate(BLOCK.findall(GUIDE.read_text()), 1):
        cmd = ["bash", "-e", "-o", "pipefail", "-c", code] if lang == "sh" else [sys.executable, "-c", code]
        proc = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, (f"docs/guide.md block {i} ({lang}) exited {proc.returncode}:\n{code}\n"
                                      f"--- stdout\n{proc.stdout[-3000:]}\n--- stderr\n{proc.stderr[-3000:]}")
        ran.append((code, proc.stdout))
    return ran


def test_guide_runs_as_written(tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    ran = run_guide(work, shims(tmp_path / "bin"))
    assert len(ran) >= 12

    def output(command: str) -> str:
        """The output of the first block containing `command`."""
        return next(out for code, out in ran if command in code)

    tut = work / "tutorial"
    assert re.search(r"float accuracy on the test set: 9\d\.\d\d%", output("torch.onnx.export"))
    quantized = output("hwsim quantize")
    assert quantized.count("integer (hwsim engine)") == 2, quantized     # each model's accuracy is printed
    assert "kmeans:4" in quantized and "knq T=3" in quantized
    assert "quantized_by" in output("hwsim inspect")

    run = output("hwsim run tutorial/knq.qnn --hw tsmc90 --dataset")
    assert re.search(r"^accuracy +9\d\.\d\d% \(540 labelled samples\)$", run, re.M), run
    assert "first 5 of 540 samples" in run
    with open(tut / "knq_layers.csv", newline="") as f:
        layers = [row["layer"] for row in csv.DictReader(f)]
    assert layers == ["conv1", "MaxPool", "conv2", "MaxPool_1", "Flatten", "fc1", "fc2", "total"]
    assert output("cut -d,").splitlines()[-1].startswith("total,")
    assert '"energy_pj_per_inference"' in (tut / "knq_tsmc90.json").read_text()

    validated = output("hwsim validate")
    assert "PASS: every layer is bit-exact" in validated and "float accuracy" in validated

    compared = output("hwsim compare")
    assert "tsmc90" in compared and "lowbit90-enq-knq" in compared
    for name in ("knq", "u8"):
        with open(tut / f"{name}_designs.csv", newline="") as f:
            rows = list(csv.DictReader(f))
        assert [(r["model"], r["hw"]) for r in rows] == [(name, "tsmc90"), (name, "lowbit90-enq-knq")]

    assert "36 points: 36 costed (0 with an error)" in output("hwsim sweep")
    with open(tut / "sweep.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 36 and not any(r["error"] for r in rows)
    designs = {(m, h) for m in ("u8", "knq") for h in ("tsmc90", "lowbit90-enq-knq")}
    assert {(r["model"], r["hw"]) for r in rows} == designs

    for figure in ("knq_tsmc90.png", "designs.png", "sweep.png", "energy_area.svg"):
        assert (tut / figure).stat().st_size > 1000, figure

    assert "5,400 of 5,400 output codes equal" in output("onnxruntime")
    api = output("import simulator as hwsim")
    assert "bit-exact: True" in api and api.count(" uJ ") >= 5

    topology = output("hwsim estimate tutorial/two_layers.csv")   # shapes only: a SCALE-Sim topology
    assert re.search(r"^eyeriss65: [\d,]+ cycles, \d+\.\d{3} uJ per inference$", topology, re.M), topology
    with open(tut / "two_layers_designs.csv", newline="") as f:
        assert [r["hw"] for r in csv.DictReader(f)] == ["tsmc90", "eyeriss65"]
