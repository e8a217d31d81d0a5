"""Brevitas exports as users make them (issue: float bias, constant binary scales, both torch exporters).

Brevitas' QuantConv2d / QuantLinear keep a *float* bias by default. Hidden layers fold it exactly into their
thresholds; a float graph output keeps it as a float32 added after dequantization (model.output.bias), as qonnx's
executor computes it. Checked against qonnx's executor at every mapped tensor (codes), and on the float output
(values), for a 4-bit power-of-two CNN and a binary CNN with the constant 0.1 weight scale, trained a little on
the digits, exported with `export_qonnx` by both torch exporters, raw and after qonnx's cleanup.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
brevitas = pytest.importorskip("brevitas")
pytest.importorskip("qonnx")
pytest.importorskip("onnxoptimizer")

import brevitas.nn as qnn  # noqa: E402
from brevitas.export import export_qonnx  # noqa: E402
from brevitas.quant import Int8ActPerTensorFixedPoint, Int8WeightPerTensorFixedPoint  # noqa: E402
from brevitas.quant.binary import SignedBinaryActPerTensorConst, SignedBinaryWeightPerTensorConst  # noqa: E402

from simulator.engine import Engine, quantize_input  # noqa: E402
from simulator.importers.qonnx_compare import _qonnx_run, compare_with_qonnx  # noqa: E402
from simulator.importers.qonnx_import import import_qonnx  # noqa: E402
from simulator.qnn.model_io import load_model, save_model  # noqa: E402
from simulator.report import output_array  # noqa: E402


def pow2_cnn():
    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inp = qnn.QuantIdentity(act_quant=Int8ActPerTensorFixedPoint, return_quant_tensor=True)
            self.c1 = qnn.QuantConv2d(1, 8, 3, padding=1, weight_bit_width=4, bias=True,
                                      weight_quant=Int8WeightPerTensorFixedPoint)
            self.r1 = qnn.QuantReLU(act_quant=Int8ActPerTensorFixedPoint, bit_width=4, return_quant_tensor=True)
            self.fc = qnn.QuantLinear(8 * 8 * 8, 10, bias=True, weight_bit_width=4,
                                      weight_quant=Int8WeightPerTensorFixedPoint)

        def forward(self, x):
            x = self.r1(self.c1(self.inp(x)))
            return self.fc(x.reshape(x.shape[0], -1))
    return Net()


def binary_cnn():
    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inp = qnn.QuantIdentity(act_quant=SignedBinaryActPerTensorConst, return_quant_tensor=True)
            self.c1 = qnn.QuantConv2d(1, 16, 3, padding=1, weight_quant=SignedBinaryWeightPerTensorConst, bias=True)
            self.a1 = qnn.QuantIdentity(act_quant=SignedBinaryActPerTensorConst, return_quant_tensor=True)
            self.fc = qnn.QuantLinear(16 * 8 * 8, 10, bias=True, weight_quant=SignedBinaryWeightPerTensorConst)

        def forward(self, x):
            x = self.a1(self.c1(self.inp(x)))
            return self.fc(x.reshape(x.shape[0], -1))
    return Net()


@pytest.fixture(scope="module")
def digits():
    """The shipped held-out digits (540 images, pixel / 16): 400 to train a little, 100 to compare on."""
    from pathlib import Path
    data = np.load(Path(__file__).resolve().parents[1] / "models" / "digits_test.npz")
    return data["x"].astype(np.float32) - 0.25, data["y"].astype(np.int64)


def _train(net, x, y):
    torch.manual_seed(0)
    opt = torch.optim.Adam(net.parameters(), 1e-2)
    xt, yt = torch.from_numpy(x[:400]), torch.from_numpy(y[:400])
    for _ in range(15):
        loss = torch.nn.functional.cross_entropy(net(xt), yt)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return net.eval()


@pytest.mark.parametrize("build", [pow2_cnn, binary_cnn], ids=["pow2-4bit", "binary-0.1"])
@pytest.mark.parametrize("dynamo", [False, True], ids=["legacy", "dynamo"])
@pytest.mark.parametrize("cleanup", [False, True], ids=["raw", "cleanup"])
def test_float_bias_exports_match_qonnx(tmp_path, digits, build, dynamo, cleanup):
    x, y = digits
    torch.manual_seed(0)
    net = _train(build(), x, y)
    path = tmp_path / "net.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        export_qonnx(net, torch.randn(1, 1, 8, 8), str(path), dynamo=dynamo)
    if cleanup:
        from qonnx.util.cleanup import cleanup as qonnx_cleanup
        qonnx_cleanup(str(path), out_file=str(path))
    model = import_qonnx(path)
    assert model.output_dequantize and model.output_bias is not None      # Brevitas' float bias, kept as float
    assert any("float bias added after dequantization" in n for n in model.metadata["import_notes"])
    saved = tmp_path / "net.qnn"
    save_model(model, saved)
    model = load_model(saved)                                               # the bias survives the file
    xs = x[400:500]
    for t in compare_with_qonnx(path, model, xs):
        assert t.mismatches == 0, t
        assert t.off_grid < 1e-3, t                                         # was 0.48 with the bias rounded
    # the float output itself: equal where qonnx's float32 sum is exact (power-of-two scales), else within
    # float32 rounding of the same value
    import onnx
    out_name = onnx.load(str(path)).graph.output[0].name
    theirs = _qonnx_run(path, xs)[out_name]
    ours = output_array(model, Engine(model).run(quantize_input(model, xs)).output)
    if build is pow2_cnn:
        assert np.array_equal(ours, theirs)
    else:
        np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-4)
