"""The real-network units one by one: elementwise multiply against exact rationals and ONNX Runtime's QLinearMul,
Resize against ONNX Runtime's kernel over modes and sizes, lookup tables, Squeeze / Unsqueeze on codes, the
counts the cost model reads, and bad input for the new ops (one line naming the node)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from simulator.encodings import UniformAct, UniformW
from simulator.engine import Engine
from simulator.errors import HwsimError
from simulator.graph import Layer, Model
from simulator.importers.qnn_shapes import shape_counts
from simulator.units.elementwise import mul_codes, mul_reference
from simulator.units.resize import resize_linear_ort, resize_nearest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402


def _session(nodes, inputs, inits, opsets=(("", 17),), out_type=TensorProto.UINT8):
    graph = helper.make_graph(nodes, "g", inputs, [helper.make_tensor_value_info("y", out_type, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid(d, v) for d, v in opsets])
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


@settings(max_examples=60, deadline=None)
@given(st.integers(-255, 255), st.integers(-255, 255), st.floats(1e-3, 1.0), st.floats(1e-3, 1.0),
       st.floats(1e-4, 1.0), st.integers(0, 255))
def test_mul_float64_is_exact_rounding(a, b, sa, sb, so, zp):
    got = mul_codes(np.array([a]), np.array([b]), sa, sb, so, zp, 0, 255, "float64")
    want = mul_reference(np.array([a]), np.array([b]), sa, sb, so, zp, 0, 255)
    # float64 can only differ from the exact rational within one rounding of a half-integer
    assert abs(int(got[0]) - int(want[0])) <= 1
    exact = a * b * sa * sb / so
    if abs(exact - np.floor(exact) - 0.5) > 1e-6:
        assert got[0] == want[0]


@pytest.mark.parametrize("signed", [False, True])
@pytest.mark.parametrize("scales", [(0.02, 0.01, 0.003), (0.5, 0.25, 0.001), (0.1, 0.004, 2.0)])
def test_mul_float32_is_ort_qlinear_mul(signed, scales):
    """Every pair of codes through ORT's QLinearMul (broadcast scalar B and full tensors) against mul_codes."""
    sa, sb, so = scales
    dt, tp = (np.int8, TensorProto.INT8) if signed else (np.uint8, TensorProto.UINT8)
    za, zb, zo = (3, -7, 5) if signed else (128, 20, 100)
    lo, hi = (-128, 127) if signed else (0, 255)
    inits = [numpy_helper.from_array(np.array(v, t), n) for n, v, t in
             (("sa", sa, np.float32), ("za", za, dt), ("sb", sb, np.float32), ("zb", zb, dt),
              ("so", so, np.float32), ("zo", zo, dt))]
    node = helper.make_node("QLinearMul", ["a", "sa", "za", "b", "sb", "zb", "so", "zo"], ["y"],
                            domain="com.microsoft")
    codes = np.arange(lo, hi + 1)
    a, b = np.meshgrid(codes, codes)
    sess = _session([node], [helper.make_tensor_value_info("a", tp, list(a.shape)),
                             helper.make_tensor_value_info("b", tp, list(b.shape))], inits,
                    (("", 17), ("com.microsoft", 1)), tp)
    want = sess.run(None, {"a": a.astype(dt), "b": b.astype(dt)})[0].astype(np.int64)
    got = mul_codes(a - za, b - zb, sa, sb, so, zo, lo, hi, "float32")
    assert np.array_equal(got, want)


@pytest.mark.parametrize("mode,coord,nearest", [
    ("nearest", "asymmetric", "floor"), ("nearest", "half_pixel", "round_prefer_floor"),
    ("nearest", "align_corners", "round_prefer_ceil"), ("nearest", "tf_half_pixel_for_nn", "ceil"),
    ("linear", "half_pixel", "floor"), ("linear", "align_corners", "floor"), ("linear", "asymmetric", "floor"),
    ("linear", "pytorch_half_pixel", "floor")])
@pytest.mark.parametrize("size", [(16, 16), (7, 12), (3, 5), (1, 9)])
def test_resize_matches_onnx_runtime(mode, coord, nearest, size):
    """Resize of float32 dequantized values (what ORT runs between DequantizeLinear and QuantizeLinear)."""
    rng = np.random.default_rng(len(coord) + size[0])
    codes = rng.integers(0, 256, (2, 3, 6, 8))
    scale, zp, out_scale, out_zp = 0.037, 120, 0.041, 110
    x = ((codes - zp).astype(np.float32) * np.float32(scale))
    sizes = np.array([2, 3, *size], np.int64)
    node = helper.make_node("Resize", ["x", "", "", "sizes"], ["r"], mode=mode, coordinate_transformation_mode=coord,
                            nearest_mode=nearest)
    q = helper.make_node("QuantizeLinear", ["r", "os", "oz"], ["y"])
    inits = [numpy_helper.from_array(sizes, "sizes"), numpy_helper.from_array(np.array(out_scale, np.float32), "os"),
             numpy_helper.from_array(np.array(out_zp, np.uint8), "oz")]
    sess = _session([node, q], [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x.shape))], inits)
    want = sess.run(None, {"x": x})[0].astype(np.int64)
    scales = (np.float32(size[0]) / np.float32(6), np.float32(size[1]) / np.float32(8))
    if mode == "nearest":
        moved = resize_nearest(codes, size, scales, coord, nearest)
        got = np.clip(np.rint((moved - zp).astype(np.float32) * np.float32(scale) / np.float32(out_scale))
                      + out_zp, 0, 255).astype(np.int64)
    else:
        got = resize_linear_ort(codes - zp, scale, size, scales, coord, out_scale, out_zp, 0, 255)
    assert np.array_equal(got, want)


def _model(layers, shape=(4, 3, 3)):
    return Model("t", shape, UniformAct(8, False, 0.05, 128), layers).check()


def test_lut_per_channel_and_shape_counts():
    rng = np.random.default_rng(0)
    table = rng.integers(0, 256, (4, 256))
    model = _model([Layer("t", "lut", ["input"], out_enc=UniformAct(8, False, 0.1, 0), table=table)])
    x = rng.integers(0, 256, (5, 4, 3, 3))
    result = Engine(model).run(x)
    want = np.stack([table[c][x[:, c]] for c in range(4)], axis=1)
    assert np.array_equal(result.output, want)
    per = result.trace.per_inference().layers[0]
    counted = shape_counts(model).layers[0]
    assert per.lut_reads == counted.lut_reads == 36 and counted.lut_entries == 256


@pytest.mark.parametrize("table_shape,needle", [((3, 256), "table shape"), ((1, 255), "table shape"),
                                                ((1, 256), None)])
def test_lut_table_must_fit(table_shape, needle):
    table = np.zeros(table_shape, dtype=np.int64)
    layer = Layer("t", "lut", ["input"], out_enc=UniformAct(8, False, 0.1, 0), table=table)
    if needle is None:
        _model([layer])
        return
    with pytest.raises(HwsimError, match=needle):
        _model([layer])


def test_mul_broadcast_counts_match_engine():
    u = UniformAct(8, False, 0.05, 128)
    layers = [Layer("p", "avgpool", ["input"], {"global": True, "kernel": [3, 3], "stride": [3, 3]}),
              Layer("m", "mul", ["input", "p"], {"requant": "float32"}, u)]
    model = _model(layers)
    x = np.random.default_rng(1).integers(0, 256, (2, 4, 3, 3))
    result = Engine(model).run(x, keep_all=True)
    p = result.tensors["p"]
    want = mul_codes(x - 128, p - 128, 0.05, 0.05, 0.05, 128, 0, 255, "float32")
    assert np.array_equal(result.output, want)
    assert result.trace.per_inference().layers[1].muls == shape_counts(model).layers[1].muls == 36


def test_mul_shapes_must_broadcast():
    u = UniformAct(8, False, 0.05, 128)
    layers = [Layer("f", "flatten", ["input"]), Layer("m", "mul", ["input", "f"], {"requant": "float32"}, u)]
    with pytest.raises(HwsimError, match="broadcast"):
        _model(layers)


# ------------------------------------------------------------------------------------- importer: bad input

def _qdq_graph(tmp_path, middle, extra_inits=(), out="m"):
    f32 = TensorProto.FLOAT
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["xq"]),
             helper.make_node("DequantizeLinear", ["xq", "s", "z"], ["xd"]), *middle,
             helper.make_node("QuantizeLinear", [out, "s", "z"], ["yq"]),
             helper.make_node("DequantizeLinear", ["yq", "s", "z"], ["y"])]
    inits = [numpy_helper.from_array(np.array(0.05, np.float32), "s"),
             numpy_helper.from_array(np.array(128, np.uint8), "z"), *extra_inits]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", f32, ["N", 2, 4, 4])],
                              [helper.make_tensor_value_info("y", f32, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    path = tmp_path / "m.onnx"
    onnx.save(model, str(path))
    return path


def _import_error(path):
    from simulator.importers.onnx_import import import_onnx
    with pytest.raises(HwsimError) as info:
        import_onnx(path)
    line = info.value.line()
    assert len(line.splitlines()) == 1 and str(path) in line
    return line


def test_resize_cubic_is_refused_naming_the_node(tmp_path):
    sizes = numpy_helper.from_array(np.array([1, 2, 8, 8], np.int64), "sz")
    path = _qdq_graph(tmp_path, [helper.make_node("Resize", ["xd", "", "", "sz"], ["m"], name="up", mode="cubic")],
                      [sizes])
    line = _import_error(path)
    assert "node up (Resize)" in line and "cubic" in line


def test_resize_with_dynamic_sizes_is_refused(tmp_path):
    nodes = [helper.make_node("Shape", ["xd"], ["shp"]),
             helper.make_node("Resize", ["xd", "", "", "shp"], ["m"], name="up", mode="nearest")]
    line = _import_error(_qdq_graph(tmp_path, nodes))
    assert "up" in line


def test_island_with_a_position_dependent_constant_is_refused(tmp_path):
    const = numpy_helper.from_array(np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4), "c")
    path = _qdq_graph(tmp_path, [helper.make_node("Mul", ["xd", "c"], ["m"], name="scale")], [const])
    line = _import_error(path)
    assert "not elementwise per channel" in line


def test_island_per_channel_constant_becomes_a_per_channel_table(tmp_path):
    from simulator.importers.onnx_import import import_onnx
    from ort_cuts import compare_every_tensor
    const = numpy_helper.from_array(np.array([0.5, 2.0], np.float32).reshape(1, 2, 1, 1), "c")
    nodes = [helper.make_node("Mul", ["xd", "c"], ["t"]), helper.make_node("HardSigmoid", ["t"], ["m"])]
    path = _qdq_graph(tmp_path, nodes, [const])
    model = import_onnx(path)
    assert [lay.op for lay in model.layers] == ["lut"] and model.layers[0].table.shape == (2, 256)
    x = np.random.default_rng(0).standard_normal((4, 2, 4, 4)).astype(np.float32) * 4
    assert sum(compare_every_tensor(path, model, x).values()) == 0


def test_squeeze_unsqueeze_on_codes(tmp_path):
    from simulator.importers.onnx_import import import_onnx
    from ort_cuts import compare_every_tensor
    axes = numpy_helper.from_array(np.array([2, 3], np.int64), "ax")
    qd = [helper.make_node("QuantizeLinear", ["sq", "s", "z"], ["sqq"]),
          helper.make_node("DequantizeLinear", ["sqq", "s", "z"], ["sqd"])]
    nodes = [helper.make_node("GlobalAveragePool", ["xd"], ["g"]),
             helper.make_node("QuantizeLinear", ["g", "s", "z"], ["gq"]),
             helper.make_node("DequantizeLinear", ["gq", "s", "z"], ["gd"]),
             helper.make_node("Squeeze", ["gd", "ax"], ["sq"]), *qd,
             helper.make_node("Unsqueeze", ["sqd", "ax"], ["m"])]
    path = _qdq_graph(tmp_path, nodes, [axes])
    model = import_onnx(path)
    assert [lay.op for lay in model.layers] == ["avgpool", "flatten", "reshape"]
    x = np.random.default_rng(0).standard_normal((4, 2, 4, 4)).astype(np.float32)
    assert sum(compare_every_tensor(path, model, x).values()) == 0


def test_transpose_on_codes_keeps_the_batch_axis(tmp_path):
    from simulator.importers.onnx_import import import_onnx
    from ort_cuts import compare_every_tensor
    qd = [helper.make_node("QuantizeLinear", ["t", "s", "z"], ["tq"]),
          helper.make_node("DequantizeLinear", ["tq", "s", "z"], ["td"])]
    nodes = [helper.make_node("Transpose", ["xd"], ["t"], perm=[0, 2, 3, 1]), *qd,
             helper.make_node("Flatten", ["td"], ["m"])]
    path = _qdq_graph(tmp_path, nodes)
    model = import_onnx(path)
    assert [(lay.op, lay.out_shape) for lay in model.layers] == [("transpose", (4, 4, 2)), ("flatten", (32,))]
    x = np.random.default_rng(0).standard_normal((4, 2, 4, 4)).astype(np.float32)
    assert sum(compare_every_tensor(path, model, x).values()) == 0
    bad = _qdq_graph(tmp_path, [helper.make_node("Transpose", ["xd"], ["m"], name="tb", perm=[1, 0, 2, 3])])
    assert "batch axis first" in _import_error(bad)


@pytest.mark.parametrize("bias,needle", [([0.5, 1.0], "one per output channel"), ([float("inf")] * 3, "finite"),
                                         ([1.0, 2.0, 3.0], None)])
def test_output_bias_is_checked(bias, needle):
    layers = [Layer("f", "flatten", ["input"]), Layer("d", "dense", ["f"], {"requant": "float64"},
                                                          UniformAct(16, True, 0.01, 0),
                                                          np.ones((3, 36), dtype=np.int64),
                                                          UniformW(8, True, (0.1,), (0,)))]
    model = Model("t", (4, 3, 3), UniformAct(8, False, 0.05, 128), layers, output_dequantize=True)
    model.output_bias = np.asarray(bias)
    if needle is None:
        model.check()
        from simulator.report import output_array
        y = output_array(model, np.zeros((2, 3), dtype=np.int64))
        assert np.array_equal(y, np.tile(np.float32(bias), (2, 1)))
        return
    with pytest.raises(HwsimError, match=needle):
        model.check()


def test_import_says_which_islands_became_tables(tmp_path):
    import subprocess
    import sys
    const = numpy_helper.from_array(np.array([0.5, 2.0], np.float32).reshape(1, 2, 1, 1), "c")
    path = _qdq_graph(tmp_path, [helper.make_node("Mul", ["xd", "c"], ["t"]),
                                 helper.make_node("HardSigmoid", ["t"], ["m"])], [const])
    r = subprocess.run([sys.executable, "-m", "simulator.cli", "import", str(path), "-o", str(tmp_path / "m.qnn")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "note: 1 float island(s) became lookup-table layers" in r.stdout
