"""Bilinear Resize on 8-bit codes (ONNX Runtime's QOperator form) against ONNX Runtime, bit for bit.

ORT runs its Resize kernel on the uint8 / int8 codes: the float32 UpsampleBilinear truncated to the code type
while the tensor is NCHW, the 10-bit fixed-point NhwcUpsampleBilinearInteger after its layout transformer moved
the channels last (a Resize between two QLinearConv), and, NHWC with an H scale of 1, the float32 kernel on
the [N, H, W, C] tensor. The importer asks ORT which one (simulator/importers/onnx/ops/resize.py); these tests
build small quantized graphs of each kind, import them, and compare every quantized tensor with ORT's."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

ort = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402
from ort_cuts import compare_every_tensor  # noqa: E402
from simulator.errors import HwsimError  # noqa: E402
from simulator.importers.onnx_import import import_onnx  # noqa: E402
from simulator.units.resize import resize_codes, resize_codes_reference  # noqa: E402

COORDS = ["half_pixel", "pytorch_half_pixel", "asymmetric", "align_corners"]
# (H, W, scales or None, sizes or None): upsample 2x, non-integer up / down, downsample, one axis only
SHAPES = [(6, 6, [2.0, 2.0], None), (7, 9, [1.7, 0.6], None), (12, 8, [0.5, 0.75], None),
          (5, 6, [3.3, 2.5], None), (6, 5, [1.0, 2.0], None), (6, 5, [2.0, 1.0], None),
          (5, 7, None, [9, 4]), (4, 4, None, [4, 4])]


def qoperator_model(dtype, h, w, scales, sizes, coord, convs, c=4, mode="linear", seed=0):
    """float x -> QuantizeLinear -> [QLinearConv] -> Resize -> [QLinearConv] -> DequantizeLinear -> y."""
    rng = np.random.default_rng(seed)
    zp = 0 if dtype == np.int8 else 128
    inits = [numpy_helper.from_array(np.array(0.05, np.float32), "s"),
             numpy_helper.from_array(np.array(zp, dtype), "z"),
             numpy_helper.from_array(rng.integers(-60, 61, (c, c, 3, 3)).astype(np.int8), "w"),
             numpy_helper.from_array(np.array(0.02, np.float32), "ws"),
             numpy_helper.from_array(np.array(0, np.int8), "wz"),
             numpy_helper.from_array(np.array(0.04, np.float32), "s2")]
    resize_in = ["", "", ""]
    if scales is not None:
        inits.append(numpy_helper.from_array(np.array([1, 1] + scales, np.float32), "scales"))
        resize_in[1] = "scales"
    else:
        inits.append(numpy_helper.from_array(np.array([1, c] + sizes, np.int64), "sizes"))
        resize_in[2] = "sizes"
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["xq"], name="quant")]
    t, s = "xq", "s"
    if convs:
        nodes.append(helper.make_node("QLinearConv", [t, s, "z", "w", "ws", "wz", "s2", "z"], ["c1"],
                                      name="conv1", pads=[1, 1, 1, 1]))
        t, s = "c1", "s2"
    nodes.append(helper.make_node("Resize", [t] + resize_in, ["r"], name="resize", mode=mode,
                                  coordinate_transformation_mode=coord))
    t = "r"
    if convs:
        nodes.append(helper.make_node("QLinearConv", [t, s, "z", "w", "ws", "wz", "s2", "z"], ["c2"],
                                      name="conv2", pads=[1, 1, 1, 1]))
        t = "c2"
    nodes.append(helper.make_node("DequantizeLinear", [t, "s2" if convs else "s", "z"], ["y"], name="dequant"))
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, c, h, w])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def ort_optimized_resize_scales(path, tmp_path):
    so = ort.SessionOptions()
    so.optimized_model_filepath = str(tmp_path / "opt.onnx")
    so.log_severity_level = 3
    ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    opt = onnx.load(str(tmp_path / "opt.onnx"))
    node = next(n for n in opt.graph.node if n.op_type == "Resize")
    consts = {t.name: numpy_helper.to_array(t) for t in opt.graph.initializer}
    return [consts[i].tolist() for i in node.input[1:] if i in consts and consts[i].size]


@pytest.mark.parametrize("convs", [False, True], ids=["nchw", "between_qlinearconv"])
@pytest.mark.parametrize("dtype", [np.uint8, np.int8])
@pytest.mark.parametrize("coord", COORDS)
def test_bilinear_on_codes_matches_onnx_runtime(tmp_path, convs, dtype, coord):
    seen = set()
    for k, (h, w, scales, sizes) in enumerate(SHAPES):
        path = tmp_path / f"m{k}.onnx"
        onnx.save(qoperator_model(dtype, h, w, scales, sizes, coord, convs, seed=k), str(path))
        model = import_onnx(path)
        (lay,) = [lay for lay in model.layers if lay.op == "resize"]
        seen.add(lay.attr("arithmetic"))
        x = 3 * np.random.default_rng(k).standard_normal((4, 4, h, w)).astype(np.float32)
        diffs = compare_every_tensor(path, model, x)
        assert "r" in diffs and sum(diffs.values()) == 0, (h, w, scales, sizes, lay.attr("arithmetic"), diffs)
    # a plain Resize stays NCHW; between two QLinearConv ORT moves it to NHWC (both NHWC kernels occur)
    assert seen == ({"ort_nchw_float32_trunc"} if not convs else
                    {"ort_nhwc_int10", "ort_nhwc_float32_trunc"})


def test_importer_reads_the_layout_ort_chooses(tmp_path):
    path = tmp_path / "m.onnx"
    onnx.save(qoperator_model(np.uint8, 6, 6, [2.0, 2.0], None, "half_pixel", True), str(path))
    assert ort_optimized_resize_scales(path, tmp_path) == [[1.0, 2.0, 2.0, 1.0]]   # NHWC scales
    (lay,) = [lay for lay in import_onnx(path).layers if lay.op == "resize"]
    assert lay.attr("arithmetic") == "ort_nhwc_int10"


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 5), st.integers(1, 5), st.integers(1, 9), st.integers(1, 9), st.booleans(),
       st.sampled_from(COORDS), st.sampled_from(["ort_nchw_float32_trunc", "ort_nhwc_int10",
                                                 "ort_nhwc_float32_trunc"]), st.integers(0, 1 << 30))
def test_fast_resize_codes_equal_the_scalar_reference(h, w, ho, wo, signed, coord, arithmetic, seed):
    rng = np.random.default_rng(seed)
    lo = -128 if signed else 0
    codes = rng.integers(lo, lo + 256, (2, 3, h, w))
    scales = (float(np.float32(ho) / np.float32(h)), float(np.float32(wo) / np.float32(w)))
    if seed % 3 == 0:   # a scale that is not out / in (given scales, not sizes)
        scales = (scales[0] * 1.01, scales[1])
    if arithmetic == "ort_nhwc_float32_trunc":   # ORT runs it only with an H scale of 1
        ho, scales = h, (1.0, scales[1])
    fast = resize_codes(codes, (ho, wo), scales, coord, arithmetic)
    ref = resize_codes_reference(codes, (ho, wo), scales, coord, arithmetic)
    assert fast.shape == (2, 3, ho, wo) and np.array_equal(fast, ref)
    assert fast.min() >= lo and fast.max() <= lo + 255   # convex: the codes stay in range


@pytest.mark.parametrize("arithmetic", ["ort_nchw_float32_trunc", "ort_nhwc_int10", "ort_nhwc_float32_trunc"])
def test_resize_on_codes_exports_exactly(arithmetic):
    pytest.importorskip("test_onnx_export")
    from test_onnx_export import assert_exact, code_input
    from simulator.encodings import UniformAct
    from simulator.graph import Layer, Model
    rng = np.random.default_rng(4)
    for enc in (UniformAct(8, False, 0.1, 3), UniformAct(8, True, 0.05, -2)):
        for (h, w), size in [((5, 7), (9, 4)), ((3, 3), (7, 11)), ((4, 6), (2, 3)), ((4, 4), (4, 4))]:
            for scales in ([size[0] / h, size[1] / w], [2.0, 1.5]):
                if arithmetic == "ort_nhwc_float32_trunc":   # H unchanged
                    size, scales = (h, size[1]), [1.0, scales[1]]
                lay = Layer("rs", "resize", ["input"], {"size": list(size), "scales": scales, "mode": "linear",
                                                        "coordinate": "half_pixel", "arithmetic": arithmetic})
                model = Model("rs", (3, h, w), enc, [lay]).check()
                assert_exact(model, code_input(model, rng, 3))


def test_an_unsupported_resize_mode_is_one_line_naming_the_node(tmp_path):
    path = tmp_path / "m.onnx"
    onnx.save(qoperator_model(np.uint8, 6, 6, [2.0, 2.0], None, "half_pixel", False, mode="cubic"), str(path))
    with pytest.raises(HwsimError) as exc:
        import_onnx(path)
    text = str(exc.value)
    assert "\n" not in text and "resize" in text and "cubic" in text


def test_missing_onnxruntime_is_one_line(tmp_path, monkeypatch):
    import sys
    path = tmp_path / "m.onnx"
    onnx.save(qoperator_model(np.uint8, 6, 6, [2.0, 2.0], None, "half_pixel", False), str(path))
    monkeypatch.setitem(sys.modules, "onnxruntime", None)   # import onnxruntime -> ImportError
    with pytest.raises(HwsimError) as exc:
        import_onnx(path)
    assert "\n" not in str(exc.value) and 'pip install -e ".[onnx]"' in str(exc.value)
