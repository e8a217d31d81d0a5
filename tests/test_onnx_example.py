"""The ecosystem example (models/make_onnx_example.py): PyTorch -> ONNX -> ONNX Runtime quantize_static (QDQ)
-> `hwsim import` -> models/lenet_digits_ort.qnn.

hwsim's engine and ONNX Runtime, running the shipped QDQ model on the float test images, give the same output
tensor code for code on every test image; and `hwsim validate --float-model` reports float accuracy, integer
accuracy and top-1 agreement. Needs onnx + onnxruntime and the shipped files only (no torch, no scikit-learn).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import numpy_helper  # noqa: E402

from simulator.cli import main  # noqa: E402
from simulator.engine import Engine, quantize_input  # noqa: E402
from simulator.qnn.model_io import load_model  # noqa: E402

MODELS = Path(__file__).resolve().parent.parent / "models"
FLOAT = MODELS / "lenet_digits_float.onnx"
QDQ = MODELS / "lenet_digits_ort_qdq.onnx"
QNN = MODELS / "lenet_digits_ort.qnn"
DATASET = MODELS / "digits_test.npz"

# Measured when the files were made (models/README.md).
FLOAT_ACCURACY = 0.9889
INTEGER_ACCURACY = 0.9889


@pytest.fixture(scope="module")
def testset():
    with np.load(DATASET, allow_pickle=False) as d:
        return d["x"], d["y"]


def ort_session(path):
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def ort_output_codes(x):
    """ONNX Runtime's output of the QDQ model as integer codes: the graph output is DequantizeLinear(q), a float32
    (q - zp) * scale; q is recovered and checked by dequantizing it again (bit for bit)."""
    model = onnx.load(str(QDQ))
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    node = next(n for n in model.graph.node if model.graph.output[0].name in n.output)
    assert node.op_type == "DequantizeLinear"
    scale, zp = np.float32(inits[node.input[1]]), int(inits[node.input[2]])
    y = ort_session(QDQ).run(None, {"input": x})[0]
    q = np.rint(y.astype(np.float64) / np.float64(scale)).astype(np.int64) + zp
    assert np.array_equal(((q - zp).astype(np.float32) * scale).astype(np.float32), y)
    return q


def test_shipped_files_are_what_the_readme_says():
    fm, qm = onnx.load(str(FLOAT)), onnx.load(str(QDQ))
    assert fm.opset_import[0].version >= 13 and qm.opset_import[0].version >= 13
    assert {n.op_type for n in fm.graph.node} == {"Conv", "Relu", "MaxPool", "Flatten", "Gemm"}
    inits = {t.name: numpy_helper.to_array(t) for t in qm.graph.initializer}
    weights = [k for k in inits if k.endswith("weight_quantized")]
    assert len(weights) == 4
    for k in weights:
        base = k[: -len("_quantized")]
        assert inits[k].dtype == np.int8                                   # int8 weights ...
        assert inits[base + "_scale"].shape == (inits[k].shape[0],)        # ... one scale per output channel
        assert not inits[base + "_zero_point"].any()                       # symmetric
    act_zps = [v for k, v in inits.items() if k.endswith("zero_point") and "weight" not in k and "bias" not in k]
    assert act_zps and all(v.dtype == np.uint8 for v in act_zps)          # uint8 activations
    for path in (FLOAT, QDQ, QNN):
        assert path.stat().st_size < 100_000


def test_hwsim_equals_onnx_runtime_on_every_test_output(testset):
    x, y = testset
    model = load_model(QNN)
    ours = Engine(model).run(quantize_input(model, x)).output.reshape(len(x), -1)
    theirs = ort_output_codes(x)
    assert ours.shape == theirs.shape == (540, 10)
    differ = np.argwhere(ours != theirs)
    assert differ.size == 0, f"{len(differ)} output codes differ, first at {differ[:5].tolist()}"
    assert np.mean(np.argmax(theirs, axis=1) == y) == pytest.approx(INTEGER_ACCURACY, abs=1e-4)


def test_validate_reports_float_baseline(tmp_path, capsys):
    rep_path = tmp_path / "r.json"
    code = main(["validate", str(QNN), "--float-model", str(FLOAT), "--dataset", str(DATASET),
                 "--json", str(rep_path)])
    out = capsys.readouterr().out
    rep = json.loads(rep_path.read_text())
    # bit-exact to the model's declared float32 requantization (ONNX Runtime's), which may land one LSB from
    # exact rounding on a few outputs (information only); never more.
    assert code == 0 and rep["passed"] and "PASS" in out
    assert max(c["local_max_diff_lsb"] for c in rep["layers"]) == 0
    assert max(c["exact_rounding_max_diff_lsb"] for c in rep["layers"]) <= 1
    assert sum(c["exact_rounding_mismatches"] for c in rep["layers"]) <= 10
    fb = rep["float_baseline"]
    assert fb["samples"] == 540 and fb["input_name"] == "input" and fb["output_name"] == "logits"
    assert fb["float_accuracy"] == pytest.approx(FLOAT_ACCURACY, abs=1e-4)
    assert fb["integer_accuracy"] == rep["accuracy"] == pytest.approx(INTEGER_ACCURACY, abs=1e-4)
    assert fb["float_accuracy"] >= FLOAT_ACCURACY - 0.01 and fb["integer_accuracy"] >= INTEGER_ACCURACY - 0.01
    assert 0.97 <= fb["top1_agreement"] <= 1.0
    assert "float accuracy" in out and "top-1 agreement" in out
