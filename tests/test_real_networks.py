"""Real-network op set against ONNX Runtime, tensor by tensor: MobileNetV2, MobileNetV3-small, an
EfficientNet-Lite-style block and an FPN/UNet-style head (Resize, ConvTranspose), built with torch from their
published architectures (tests/torch_mobilenets.py), quantized by onnxruntime.quantization.quantize_static in
QDQ and QOperator form, per tensor and per channel, with and without ORT's pre-processing. Every quantized
tensor ORT computes is compared with the hwsim layer the importer mapped it to (tests/ort_cuts.py)."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
ort = pytest.importorskip("onnxruntime")
quantization = pytest.importorskip("onnxruntime.quantization")

import torch_mobilenets as tm  # noqa: E402
from ort_cuts import compare_every_tensor  # noqa: E402
from simulator.importers.onnx_import import import_onnx  # noqa: E402

SIZE = 32
BUILDERS = {"mobilenet_v2": lambda: tm.mobilenet_v2(width=0.25),
            "mobilenet_v3_small": lambda: tm.mobilenet_v3_small(width=0.5),
            "efficientnet_lite_block": tm.efficientnet_lite_block,
            "fpn_head": tm.FpnHead}


class _Reader(quantization.CalibrationDataReader):
    def __init__(self, name):
        self.data = iter([{name: np.random.default_rng(i).standard_normal((1, 3, SIZE, SIZE)).astype(np.float32)}
                          for i in range(4)])

    def get_next(self):
        return next(self.data, None)


@pytest.fixture(scope="module")
def float_models(tmp_path_factory):
    root = tmp_path_factory.mktemp("nets")
    paths = {}
    for name, build in BUILDERS.items():
        torch.manual_seed(0)
        net = tm.init_batchnorm(build())
        path = root / f"{name}.onnx"
        import warnings
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(net, torch.randn(1, 3, SIZE, SIZE), str(path), opset_version=17, dynamo=False,
                              input_names=["x"], output_names=["y"])
        paths[name] = path
    return paths


def quantize(src, dst, fmt, per_channel, preprocess):
    import logging
    logging.getLogger().setLevel(logging.ERROR)   # ORT's "consider pre-processing" advice
    if preprocess:
        from onnxruntime.quantization.shape_inference import quant_pre_process
        pre = dst.with_suffix(".pre.onnx")
        quant_pre_process(str(src), str(pre))
        src = pre
    quantization.quantize_static(str(src), str(dst), _Reader("x"), quant_format=fmt, per_channel=per_channel,
                                 activation_type=quantization.QuantType.QUInt8,
                                 weight_type=quantization.QuantType.QInt8)
    return dst


CASES = [(net, fmt, pc, pre) for net in BUILDERS for fmt in ("QDQ", "QOperator") for pc in (False, True)
         for pre in (False, True)]
# Every tensor must equal ORT's, in both forms: fpn_head's ConvTranspose is ORT's float32 ConvTranspose bit for
# bit (conv2d arithmetic "ort_float32", units/float_conv_transpose.py), on float32 weights in QOperator form
# (encodings.Float32W: ORT's session quantizes them on load), and its bilinear Resize on 8-bit codes is ORT's
# kernel (units/resize.py).


@pytest.mark.parametrize("net,fmt,per_channel,preprocess", CASES,
                         ids=[f"{n}-{f}-{'pc' if p else 'pt'}{'-pre' if q else ''}" for n, f, p, q in CASES])
def test_every_quantized_tensor_matches_onnx_runtime(float_models, tmp_path, net, fmt, per_channel, preprocess):
    fmt_enum = getattr(quantization.QuantFormat, fmt)
    path = quantize(float_models[net], tmp_path / "q.onnx", fmt_enum, per_channel, preprocess)
    model = import_onnx(path)
    x = np.random.default_rng(7).standard_normal((8, 3, SIZE, SIZE)).astype(np.float32)
    diffs = compare_every_tensor(path, model, x)
    assert len(diffs) >= 10
    float_nodes = model.metadata.get("ort_float_nodes", [])
    if net == "fpn_head" and fmt == "QOperator":   # its ConvTranspose keeps float32 weights (Float32W)
        assert any(getattr(lay.weight_enc, "kind", None) == "float32" for lay in model.layers)
    if net == "mobilenet_v3_small" and fmt == "QOperator" and not preprocess:   # HardSwish -> float GAP
        assert any(lay.op == "lut_avgpool" for lay in model.layers)
    assert not float_nodes
    assert sum(diffs.values()) == 0, {k: v for k, v in diffs.items() if v}


@pytest.mark.parametrize("fmt", ["QDQ", "QOperator"])
@pytest.mark.parametrize("act", ["QUInt8", "QInt8"])
def test_softmax_head_is_ort_qlinear_softmax(tmp_path, fmt, act):
    """A classifier ending in Softmax: ORT runs QLinearSoftmax (an exp table, float32 sums); so does hwsim."""
    from torch import nn

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.fc = nn.Conv2d(3, 8, 3, 2, 1), nn.Linear(8 * 8 * 8, 10)

        def forward(self, x):
            return torch.softmax(self.fc(torch.flatten(torch.relu(self.conv(x)), 1)), -1)

    torch.manual_seed(1)
    src = tmp_path / "f.onnx"
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(Net().eval(), torch.randn(1, 3, 16, 16), str(src), opset_version=17, dynamo=False,
                          input_names=["x"], output_names=["y"])

    class Reader(quantization.CalibrationDataReader):
        def __init__(self):
            self.data = iter([{"x": np.random.default_rng(i).standard_normal((1, 3, 16, 16)).astype(np.float32)}
                              for i in range(4)])

        def get_next(self):
            return next(self.data, None)

    dst = tmp_path / "q.onnx"
    quantization.quantize_static(str(src), str(dst), Reader(), quant_format=getattr(quantization.QuantFormat, fmt),
                                 activation_type=getattr(quantization.QuantType, act),
                                 weight_type=quantization.QuantType.QInt8)
    model = import_onnx(dst)
    assert model.layers[-1].op == "softmax" and model.layers[-1].attr("arithmetic") == "ort_qlinear"
    x = 3 * np.random.default_rng(3).standard_normal((64, 3, 16, 16)).astype(np.float32)
    diffs = compare_every_tensor(dst, model, x)
    assert len(diffs) == 4 and sum(diffs.values()) == 0, diffs


def test_qlinear_softmax_kernel_against_onnx_runtime():
    """The QLinearSoftmax unit alone, uint8 and int8, on row lengths from 3 to 1000 and several input scales."""
    from onnx import TensorProto, helper, numpy_helper
    from simulator.units.elementwise import qlinear_softmax
    # the last rows: where a double logarithm in the table, a non-ordered sum or a finite-only fix-up differ
    cases = [(s, d, xs, 1 / 256, -128 if s else 0) for s in (False, True)
             for d, xs in ((10, 0.1), (1000, 0.05), (7, 0.3), (3, 1.5), (100, 0.004))]
    cases += [(True, 225, 0.011918051397274695, 1 / 256, -96), (False, 132, 0.04631994905201723, 1 / 256, 68),
              (False, 300, 0.3, 2.0 ** -9, 3), (True, 57, 1.2, 2.0 ** -8.5, 10)]
    for signed, d, xs, ys, yz in cases:
        if True:
            dt, tp = (np.int8, TensorProto.INT8) if signed else (np.uint8, TensorProto.UINT8)
            inits = [numpy_helper.from_array(np.array(xs, np.float32), "xs"),
                     numpy_helper.from_array(np.array(0, dt), "xz"),
                     numpy_helper.from_array(np.array(ys, np.float32), "ys"),
                     numpy_helper.from_array(np.array(yz, dt), "yz")]
            node = helper.make_node("QLinearSoftmax", ["x", "xs", "xz", "ys", "yz"], ["y"], domain="com.microsoft",
                                    axis=-1, opset=13)
            graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", tp, [64, d])],
                                      [helper.make_tensor_value_info("y", tp, None)], inits)
            m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13),
                                                        helper.make_opsetid("com.microsoft", 1)])
            sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
            lo, hi = (-128, 127) if signed else (0, 255)
            x = np.random.default_rng(d).integers(lo, hi + 1, (64, d)).astype(dt)
            want = sess.run(None, {"x": x})[0].astype(np.int64)
            got = qlinear_softmax(x.astype(np.int64), xs, ys, yz, signed)
            assert np.array_equal(got, want), (signed, d, xs)
