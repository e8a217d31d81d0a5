"""Hostile float ONNX window attributes, recipes checked against the model, and errors that name what the user
gave (the .onnx file and node, the recipe file and field, --set / --array), in one bounded line."""

from __future__ import annotations

import numpy as np
import pytest
import yaml

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from simulator.cli import main  # noqa: E402
from simulator.errors import HwsimError  # noqa: E402
from simulator.floatgraph import FloatGraph, FloatNode  # noqa: E402
from simulator.hw.arch import default_architecture_path, load_hardware  # noqa: E402
from simulator.importers.onnx.float_reader import read_float_onnx  # noqa: E402

CALIB = "models/digits_test.npz"       # x: [540, 1, 8, 8]
FLOAT = "models/lenet_digits_float.onnx"
QNN = "models/lenet_digits_u8.qnn"


def pool_model(op, conv_attrs=None, **attrs):
    """x [N, 1, 8, 8] -> Conv 3x3 (4 channels) -> op(**attrs) -> Flatten -> Gemm(10)."""
    rng = np.random.default_rng(0)
    conv_attrs = conv_attrs or {"pads": [1, 1, 1, 1], "kernel_shape": [3, 3]}
    k = conv_attrs["kernel_shape"]
    inits = [numpy_helper.from_array(rng.normal(0, .4, (4, 1, *k)).astype(np.float32), "w1"),
             numpy_helper.from_array(rng.normal(0, .3, (10, 64)).astype(np.float32), "w2")]
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c"], name="/conv1/Conv", **conv_attrs)]
    last = "c"
    if op:
        nodes.append(helper.make_node(op, ["c"], ["p"], name=f"/{op}_1", **attrs))
        last = "p"
    nodes += [helper.make_node("Flatten", [last], ["f"], name="/Flatten", axis=1),
              helper.make_node("Gemm", ["f", "w2"], ["y"], name="/fc/Gemm", transB=1)]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def save(proto, path):
    onnx.save(proto, str(path))
    return str(path)


def one_line(capsys, argv):
    rc = main([str(a) for a in argv])
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert rc == 2, err
    assert len(lines) == 1 and lines[0].startswith("hwsim: error: "), err
    assert "internal error" not in err and "Traceback" not in err
    assert len(lines[0]) <= 500, len(lines[0])
    return lines[0]


# ------------------------------------------------------------------------------------------- F2: window attributes

@pytest.mark.parametrize("op", ["MaxPool", "AveragePool"])
def test_quantize_zero_kernel_pool_is_one_error(tmp_path, capsys, op):
    path = save(pool_model(op, kernel_shape=[0, 0]), tmp_path / "F.onnx")
    line = one_line(capsys, ["quantize", path, "--calib", CALIB, "-o", tmp_path / "q.qnn", "--limit", 20])
    assert f"{path}: node /{op}_1 ({op}): kernel_shape" in line
    assert not (tmp_path / "q.qnn").exists()


@pytest.mark.parametrize("op,attrs,needle", [
    ("MaxPool", {"kernel_shape": [0, 2]}, "kernel_shape"),
    ("AveragePool", {"kernel_shape": [-1, -1]}, "kernel_shape"),
    ("MaxPool", {"kernel_shape": [2, 2], "strides": [0, 0]}, "strides"),
    ("MaxPool", {"kernel_shape": [2, 2], "strides": [-2, 2]}, "strides"),
    ("AveragePool", {"kernel_shape": [2, 2], "strides": [2 ** 62, 2 ** 62]}, "strides"),
    ("AveragePool", {"kernel_shape": [2, 2], "strides": [64, 64]}, "strides"),
    ("MaxPool", {"kernel_shape": [2, 2], "pads": [-1, 0, 0, 0]}, "pads"),
    ("MaxPool", {"kernel_shape": [2, 2], "pads": [2 ** 62, 0, 0, 0]}, "pads"),
    ("MaxPool", {"kernel_shape": [2, 2], "pads": [2, 2, 2, 2]}, "pads"),
    ("AveragePool", {"kernel_shape": [3, 3], "pads": [0, 0, 3, 0]}, "pads"),
    ("MaxPool", {"kernel_shape": [3001, 3001], "pads": [3000, 3000, 3000, 3000]}, "kernel window"),
    ("AveragePool", {"kernel_shape": [9, 9]}, "kernel_shape"),
    ("MaxPool", {"kernel_shape": [2 ** 62, 2]}, "kernel_shape"),
    ("MaxPool", {"kernel_shape": [2, 2], "dilations": [0, 0]}, "dilations"),
])
def test_float_reader_checks_every_window_attribute(tmp_path, op, attrs, needle):
    path = save(pool_model(op, **attrs), tmp_path / "F.onnx")
    with pytest.raises(HwsimError) as info:
        read_float_onnx(path)
    line = info.value.line()
    assert line.startswith(f"{path}: node /{op}_1 ({op}): ") and needle in line, line


@pytest.mark.parametrize("attrs,needle", [
    ({"kernel_shape": [3, 3], "strides": [0, 1]}, "strides"),
    ({"kernel_shape": [3, 3], "pads": [-1, -1, -1, -1]}, "pads"),
    ({"kernel_shape": [3, 3], "strides": [2 ** 40, 1]}, "strides"),
])
def test_float_conv_window_attributes(tmp_path, attrs, needle):
    path = save(pool_model(None, conv_attrs=attrs), tmp_path / "F.onnx")
    with pytest.raises(HwsimError) as info:
        read_float_onnx(path)
    assert info.value.source == path and "/conv1/Conv (Conv)" in info.value.field and needle in info.value.message


def test_valid_pools_still_read(tmp_path):
    fg = read_float_onnx(save(pool_model("MaxPool", kernel_shape=[2, 2], strides=[2, 2]), tmp_path / "a.onnx"))
    assert fg.node("MaxPool_1").shape == (4, 4, 4)
    fg = read_float_onnx(save(pool_model("AveragePool", kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
                              tmp_path / "b.onnx"))
    assert fg.node("AveragePool_1").shape == (4, 4, 4)


def test_float_graph_refuses_empty_pool_window():
    fg = FloatGraph((1, 8, 8), source="F.onnx")
    for attrs in ({"kernel": [0, 0], "stride": [1, 1], "padding": [0, 0, 0, 0]},
                  {"kernel": [2, 2], "stride": [0, 2], "padding": [0, 0, 0, 0]},
                  {"kernel": [2, 2], "stride": [2, 2], "padding": [2, 0, 0, 0]}):
        with pytest.raises(HwsimError, match="node p"):
            fg.add(FloatNode("p", "maxpool", ["input"], attrs))


# ------------------------------------------------------------------------------------------- F5: error attribution

def test_quantize_stride_error_names_onnx_file_and_attribute(tmp_path, capsys):
    path = save(pool_model("AveragePool", kernel_shape=[2, 2], strides=[2 ** 62, 2 ** 62]), tmp_path / "F.onnx")
    line = one_line(capsys, ["quantize", path, "--calib", CALIB, "-o", tmp_path / "q.qnn", "--limit", 20])
    assert f"{path}: node /AveragePool_1 (AveragePool): strides" in line
    assert "model:" not in line and "attrs.stride" not in line


def test_graph_check_error_names_the_onnx_file(tmp_path, capsys):
    """A float Conv the float reader accepts but the integer graph refuses (pads >= a 1x1 kernel): the error
    names the .onnx file, never the internal "model"."""
    path = save(pool_model("MaxPool", conv_attrs={"kernel_shape": [1, 1], "pads": [1, 1, 1, 1]},
                           kernel_shape=[2, 2], strides=[2, 2], pads=[0, 0, 0, 0]), tmp_path / "F.onnx")
    proto = onnx.load(path)      # 10x10 conv output -> 5x5 pool: Gemm over 4 * 5 * 5
    proto.graph.initializer[1].CopyFrom(numpy_helper.from_array(np.ones((10, 100), np.float32), "w2"))
    save(proto, path)
    line = one_line(capsys, ["quantize", path, "--calib", CALIB, "-o", tmp_path / "q.qnn", "--limit", 20])
    assert line.startswith(f"hwsim: error: {path}: ") and "padding" in line, line
    assert "error: model:" not in line


def _recipe(tmp_path, text):
    path = tmp_path / "R.yaml"
    path.write_text(text)
    return str(path)


def _no_calibration(monkeypatch):
    def boom(*args, **kwargs):
        raise AssertionError("calibration ran before the recipe was checked against the model")
    monkeypatch.setattr(FloatGraph, "run", boom)


def test_recipe_groups_checked_before_calibration_names_recipe_field(tmp_path, capsys, monkeypatch):
    _no_calibration(monkeypatch)
    r = _recipe(tmp_path, "format: hwsim-recipe/1\nlayers:\n  conv2: {weights: 'kmeans:3,groups=1000000000'}\n")
    line = one_line(capsys, ["quantize", FLOAT, "--calib", CALIB, "-o", tmp_path / "q.qnn", "--recipe", r])
    assert f"{r}: layers.conv2.weights: groups=1000000000 does not divide the 32 output channels" in line
    r = _recipe(tmp_path, "format: hwsim-recipe/1\nall_layers: true\nweights: 'siq:2,groups=5'\n")
    line = one_line(capsys, ["quantize", FLOAT, "--calib", CALIB, "-o", tmp_path / "q.qnn", "--recipe", r])
    assert f"{r}: weights: groups=5 does not divide" in line
    line = one_line(capsys, ["quantize", FLOAT, "--calib", CALIB, "-o", tmp_path / "q.qnn", "--recipe", r,
                             "--weights", "kmeans:3,groups=7"])
    assert "error: --weights: groups=7 does not divide" in line and r not in line


def test_recipe_dictionary_mismatch_checked_before_calibration(tmp_path, capsys, monkeypatch):
    _no_calibration(monkeypatch)
    r = _recipe(tmp_path, "format: hwsim-recipe/1\nall_layers: true\nweights: dictionary:16\n"
                          "layers:\n  conv2: {weights: dictionary:32}\n")
    line = one_line(capsys, ["quantize", FLOAT, "--calib", CALIB, "-o", tmp_path / "q.qnn", "--recipe", r])
    assert f"{r}: layers.conv2.weights: dictionary layers share one table" in line


def _hw_error(*args, **kwargs):
    with pytest.raises(HwsimError) as info:
        load_hardware(*args, **kwargs)
    line = info.value.line()
    assert "default.yaml" not in line and str(default_architecture_path()) not in line, line
    return line


@pytest.mark.parametrize("item,start", [
    ("pe_array.mac.rows=-3", "--set architecture.pe_array.mac.rows: must be a positive integer"),
    ("architecture.pe_array.mac.rows=-3", "--set architecture.pe_array.mac.rows: must be a positive integer"),
    ("clock.mhz=0", "--set architecture.clock.mhz: must be a positive number"),
    ("memory.weight_sram.banks=3", "--set architecture.memory.weight_sram.banks: 3 banks"),
    ("dataflow=xs", "--set architecture.dataflow: must be one of"),
    ("memory.weight_sram.size_bytes=17",
     "--set memory.weight_sram.size_bytes=17: architecture.memory.weight_sram.banks: 4 banks"),
])
def test_bad_set_values_name_set_not_the_default_file(item, start):
    assert _hw_error("tsmc90", [item]).startswith(start)


def test_bad_array_shortcut_names_array():
    assert _hw_error("tsmc90", [], {"array": "5000x4"}).startswith("--array: must be at most 4096")


def test_bad_set_via_cli(tmp_path, capsys):
    line = one_line(capsys, ["run", QNN, "--hw", "tsmc90", "--set", "architecture.pe_array.mac.rows=-3"])
    assert line == "hwsim: error: --set architecture.pe_array.mac.rows: must be a positive integer, got -3"


def test_set_prefix_architecture_is_accepted():
    hw = load_hardware("tsmc90", ["architecture.pe_array.mac.rows=8"])
    assert hw.arch.mac.rows == 8


def test_file_errors_still_name_the_file(tmp_path):
    data = yaml.safe_load(default_architecture_path().read_text())
    data["tech"] = "tsmc90"
    data["architecture"]["clock"]["mhz"]["value"] = 0
    path = tmp_path / "a.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(HwsimError) as info:
        load_hardware(str(path), ["pe_array.mac.rows=8"])
    assert info.value.source == str(path) and info.value.field == "architecture.clock.mhz"


# ------------------------------------------------------------------------------------------- F6: long lines

def test_thousands_of_memory_levels_give_a_short_line(tmp_path):
    data = yaml.safe_load(default_architecture_path().read_text())
    data["tech"] = "tsmc90"
    mem = data["architecture"]["memory"]
    for i in range(2000):      # small levels: the file stays under the 1 MiB limit
        mem[f"l{i}"] = {"size_bytes": {"value": 1024, "source": "s"}, "word_bits": {"value": 64, "source": "s"},
                        "holds": ["weights"]}
    path = tmp_path / "many.yaml"
    path.write_text(yaml.safe_dump(data, default_flow_style=True, width=200, sort_keys=False))
    with pytest.raises(HwsimError) as info:
        load_hardware(str(path))
    line = info.value.line()
    assert len(line) < 400 and "(2001 levels)" in line and "weight_sram, l0" in line, line
