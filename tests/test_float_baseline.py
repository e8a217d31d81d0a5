"""`hwsim validate --float-model`: the float ONNX model in ONNX Runtime beside hwsim's integer engine.

The float models here are built with onnx.helper from the shipped 8-bit digits model: its weights and biases
dequantized (codes × scale), the same layers in float. So the float model is the integer model's float twin, and
the two must agree on nearly every test image. Needs onnx + onnxruntime (the 'onnx' extra), not torch.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from simulator.cli import main  # noqa: E402
from simulator.errors import HwsimError  # noqa: E402
from simulator.float_baseline import FloatModel, top1_comparison  # noqa: E402
from simulator.qnn.model_io import load_model  # noqa: E402

MODELS = Path(__file__).resolve().parent.parent / "models"
U8 = MODELS / "lenet_digits_u8.qnn"
DATASET = MODELS / "digits_test.npz"


def float_twin(path, batch="N", in_shape=(1, 8, 8), in_type=TensorProto.FLOAT, classes=10, extra_input=False):
    """Write a float ONNX model computing lenet_digits_u8 with dequantized weights; return its path."""
    model = load_model(U8)
    nodes, inits, prev = [], [], "x"
    if tuple(in_shape) != (1, 8, 8):  # a model whose input is laid out differently: reshape it back
        inits.append(numpy_helper.from_array(np.array([-1, 1, 8, 8], np.int64), "shape0"))
        nodes.append(helper.make_node("Reshape", ["x", "shape0"], ["x0"]))
        prev = "x0"
    if in_type != TensorProto.FLOAT:
        nodes.append(helper.make_node("Cast", [prev], ["xf"], to=TensorProto.FLOAT))
        prev = "xf"
    for lay in model.layers:
        out = lay.name
        if lay.op in ("conv2d", "dense"):
            co = lay.out_shape[0]
            s_w = lay.weight_enc.channel_scales(co)
            w = (lay.weight_enc.decode(lay.weight) * s_w.reshape((-1,) + (1,) * (lay.weight.ndim - 1)))
            b = lay.bias * lay.in_encs[0].value_scale * s_w
            if lay.name == "fc2" and classes != 10:
                w, b = w[:classes], b[:classes]
            inits += [numpy_helper.from_array(w.astype(np.float32), f"{out}.w"),
                      numpy_helper.from_array(b.astype(np.float32), f"{out}.b")]
            if lay.op == "conv2d":
                pt, pl, pb, pr = lay.attr("padding")
                nodes.append(helper.make_node("Conv", [prev, f"{out}.w", f"{out}.b"], [out + "_pre"],
                                              pads=[pt, pl, pb, pr], kernel_shape=list(lay.weight.shape[2:])))
            else:
                nodes.append(helper.make_node("Gemm", [prev, f"{out}.w", f"{out}.b"], [out + "_pre"], transB=1))
            if lay.attr("clip") is not None:
                nodes.append(helper.make_node("Relu", [out + "_pre"], [out]))
            else:
                out += "_pre"
        elif lay.op == "maxpool":
            nodes.append(helper.make_node("MaxPool", [prev], [out], kernel_shape=list(lay.attr("kernel")),
                                          strides=list(lay.attr("stride"))))
        elif lay.op == "flatten":
            nodes.append(helper.make_node("Flatten", [prev], [out], axis=1))
        prev = out
    inputs = [helper.make_tensor_value_info("x", in_type, [batch, *in_shape])]
    if extra_input:
        inputs.append(helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 1]))
    graph = helper.make_graph(nodes, "digits_float", inputs,
                              [helper.make_tensor_value_info(prev, TensorProto.FLOAT, [batch, classes])], inits)
    onnx_model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    onnx.checker.check_model(onnx_model)
    onnx.save(onnx_model, path)
    return path


@pytest.fixture(scope="module")
def dyn_model(tmp_path_factory):
    return float_twin(tmp_path_factory.mktemp("f") / "dyn.onnx")


@pytest.fixture(scope="module")
def testset():
    with np.load(DATASET, allow_pickle=False) as d:
        return d["x"], d["y"]


def validate(capsys, *args):
    code = main(["validate", str(U8), *map(str, args)])
    cap = capsys.readouterr()
    return code, cap.out, cap.err


def one_error_line(err, *needles):
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("hwsim: error: ") and "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


def test_validate_reports_float_and_integer_accuracy_and_agreement(tmp_path, dyn_model, capsys):
    rep_path = tmp_path / "r.json"
    code, out, err = validate(capsys, "--dataset", DATASET, "--float-model", dyn_model, "--json", rep_path)
    assert code == 0, err
    rep = json.loads(rep_path.read_text())
    fb = rep["float_baseline"]
    assert rep["passed"] and rep["layers"]  # the bit-exactness table is still there
    assert fb["samples"] == 540 and fb["input_name"] == "x" and fb["batching"] == "dynamic batch"
    recorded = load_model(U8).metadata["expected_hwsim_test_accuracy"]    # what make_digits_models.py measured
    assert fb["integer_accuracy"] == rep["accuracy"] == pytest.approx(recorded, abs=1e-4)
    assert 0.97 <= fb["float_accuracy"] <= 1.0
    assert fb["top1_agreement"] >= 0.97 and fb["agreeing_samples"] == round(fb["top1_agreement"] * 540)
    assert 0 < fb["output_max_abs_diff"] < 5
    assert fb["input"] == "the float input x as given"
    for needle in ("float accuracy", "integer accuracy (hwsim engine)", "top-1 agreement", "PASS",
                   f"{100 * fb['top1_agreement']:.2f}%", f"{100 * fb['float_accuracy']:.2f}%"):
        assert needle in out, needle


def test_fixed_batch_sizes_give_the_same_outputs(tmp_path, dyn_model, testset):
    x, _ = testset
    ref = FloatModel.load(dyn_model).run(x, batch_size=64)
    assert ref.shape == (540, 10)
    for b in (1, 7):  # 540 = 77 * 7 + 1: the last chunk is padded and its extra rows dropped
        fm = FloatModel.load(float_twin(tmp_path / f"b{b}.onnx", batch=b))
        assert fm.fixed_batch == b and "fixed" in fm.batching()
        np.testing.assert_allclose(fm.run(x[:100]), ref[:100], rtol=1e-5, atol=1e-5)
    fm1 = FloatModel.load(tmp_path / "b1.onnx")
    np.testing.assert_allclose(fm1.run(x), ref, rtol=1e-5, atol=1e-5)


def test_fixed_batch_one_through_the_cli(tmp_path, capsys):
    path = float_twin(tmp_path / "b1.onnx", batch=1)
    rep_path = tmp_path / "r.json"
    code, out, err = validate(capsys, "--dataset", DATASET, "--float-model", path, "--json", rep_path, "--limit", 50)
    assert code == 0, err
    fb = json.loads(rep_path.read_text())["float_baseline"]
    assert fb["samples"] == 50 and "sample by sample" in fb["batching"] and "sample by sample" in out


def test_double_input_and_unlabelled_inputs(tmp_path, testset, capsys):
    x, _ = testset
    path = float_twin(tmp_path / "f64.onnx", in_type=TensorProto.DOUBLE)
    np.save(tmp_path / "x.npy", x[:30])
    rep_path = tmp_path / "r.json"
    code, out, err = validate(capsys, "--input", tmp_path / "x.npy", "--float-model", path, "--json", rep_path)
    assert code == 0, err
    fb = json.loads(rep_path.read_text())["float_baseline"]
    assert fb["float_accuracy"] is None and fb["integer_accuracy"] is None and fb["samples"] == 30
    assert fb["top1_agreement"] >= 0.9
    assert "n/a (no labels)" in out


def test_integer_codes_are_decoded_for_the_float_model(tmp_path, dyn_model, testset, capsys):
    x, _ = testset
    np.save(tmp_path / "codes.npy", np.rint(x[:40] * 16).astype(np.int64))  # the pixels: the input codes
    np.save(tmp_path / "x.npy", x[:40])
    reps = []
    for name in ("codes.npy", "x.npy"):
        code, _, err = validate(capsys, "--input", tmp_path / name, "--float-model", dyn_model,
                                "--json", tmp_path / "r.json")
        assert code == 0, err
        reps.append(json.loads((tmp_path / "r.json").read_text())["float_baseline"])
    assert "decoded" in reps[0]["input"]
    assert reps[0]["agreeing_samples"] == reps[1]["agreeing_samples"]  # decoding pixel codes is exact here
    assert reps[0]["output_max_abs_diff"] == pytest.approx(reps[1]["output_max_abs_diff"], rel=1e-6)


def test_bad_float_models_give_one_error_line(tmp_path, capsys):
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\x08\x07this is not an onnx model" * 10)
    cases = [
        (tmp_path / "missing.onnx", ("missing.onnx", "file not found")),
        (garbage, ("garbage.onnx", "cannot load the float model with ONNX Runtime")),
        (float_twin(tmp_path / "flat.onnx", in_shape=(64,)), ("input 'x' has shape [?, 64]", "[1, 8, 8]")),
        (float_twin(tmp_path / "u8.onnx", in_type=TensorProto.UINT8), ("tensor(uint8)", "float input")),
        (float_twin(tmp_path / "two.onnx", extra_input=True), ("exactly one input", "2")),
        (float_twin(tmp_path / "five.onnx", classes=5), ("5 values per sample", "10")),
    ]
    for path, needles in cases:
        code, out, err = validate(capsys, "--dataset", DATASET, "--float-model", path, "--limit", 5)
        assert code == 2, (path, out, err)
        one_error_line(err, *needles)


def test_wrong_layout_with_fixed_dims(tmp_path):
    fm = FloatModel.load(float_twin(tmp_path / "nhwc.onnx", in_shape=(8, 8, 1), batch=1))
    with pytest.raises(HwsimError, match=r"has shape \[1, 8, 8, 1\], but the samples are \[1, 8, 8\]"):
        fm.check_sample_shape((1, 8, 8))
    fm.check_sample_shape((8, 8, 1))


def test_missing_onnxruntime_names_the_extra(monkeypatch, dyn_model):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import fails as if not installed
    with pytest.raises(HwsimError, match=r"pip install -e \"\.\[onnx\]\""):
        FloatModel.load(dyn_model)


def test_top1_comparison_counts():
    f = np.array([[0.1, 0.9, 0.0], [0.5, 0.5, 0.0], [0.0, 0.2, 0.8], [1.0, 0.0, 0.0]])
    i = np.array([[0, 3, 1], [2, 2, 0], [4, 0, 1], [0, 1, 0]])  # ties go to the lower class on both sides
    rep = top1_comparison(f, i, np.array([1, 0, 2, 1]))
    # float argmax [1, 0, 2, 0], integer argmax [1, 0, 0, 1]
    assert rep["agreeing_samples"] == 2 and rep["top1_agreement"] == 0.5
    assert rep["float_accuracy"] == 0.75 and rep["integer_accuracy"] == 0.75
    assert top1_comparison(f, i)["float_accuracy"] is None


@pytest.mark.parametrize("key", ["u8", "codebook", "enq", "knq"])
def test_shipped_float_model_beside_the_digits_models(key, tmp_path, capsys):
    """models/lenet_digits_float.onnx is the float CNN the u8 / codebook / ENQ / KNQ models were quantized from."""
    rep_path = tmp_path / "r.json"
    code = main(["validate", str(MODELS / f"lenet_digits_{key}.qnn"), "--dataset", str(DATASET),
                 "--float-model", str(MODELS / "lenet_digits_float.onnx"), "--json", str(rep_path)])
    assert code == 0, capsys.readouterr().err
    rep = json.loads(rep_path.read_text())
    fb = rep["float_baseline"]
    assert fb["float_accuracy"] == pytest.approx(0.9889, abs=1e-4)
    assert fb["integer_accuracy"] == rep["accuracy"] >= 0.97
    assert fb["top1_agreement"] >= 0.97
