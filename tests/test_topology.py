"""Shape-only front ends: SCALE-Sim topology CSVs (importers/topology.py) and ONNX shapes (importers/onnx_shapes.py).

The shipped topologies (models/topologies/) are checked against MAC counts recomputed here from the published
layer tables, not from the files. Bad inputs must give one HwsimError line naming the file and the place.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from simulator.errors import HwsimError
from simulator.hw.workload import Workload
from simulator.importers.qnn_shapes import workloads_from_model
from simulator.importers.topology import load_topology
from simulator.qnn.model_io import load_model

MODELS = Path(__file__).resolve().parents[1] / "models"
TOPO = MODELS / "topologies"


def macs(workloads, prefix=""):
    return sum(w.macs for w in workloads if w.name.startswith(prefix))


def conv_macs(out, k, cin, cout, groups=1):
    return out * out * k * k * (cin // groups) * cout


# ------------------------------------------------------------------------------------ shipped topologies

def test_alexnet_eyeriss_per_layer():
    wls = load_topology(f"{TOPO}/alexnet_eyeriss.csv")
    # Eyeriss (JSSC 2017): H 227/31/15/15/15, R 11/5/3/3/3, E 55/27/13/13/13, C 3/48/256/192/192, M 96/256/384/384/256
    want = {"CONV1": conv_macs(55, 11, 3, 96), "CONV2": conv_macs(27, 5, 96, 256, groups=2),
            "CONV3": conv_macs(13, 3, 256, 384), "CONV4": conv_macs(13, 3, 384, 384, groups=2),
            "CONV5": conv_macs(13, 3, 384, 256, groups=2)}
    assert want == {"CONV1": 105_415_200, "CONV2": 223_948_800, "CONV3": 149_520_384, "CONV4": 112_140_288,
                    "CONV5": 74_760_192}
    assert {name: macs(wls, name) for name in want} == want
    conv2 = [w for w in wls if w.name.startswith("CONV2")]
    assert len(conv2) == 2 and all((w.c, w.k, w.h, w.p, w.r) == (48, 128, 31, 27, 5) for w in conv2)
    assert sum(w.input_elems for w in conv2) == 96 * 31 * 31          # both groups read the whole input
    assert sum(w.weight_elems for w in conv2) == 256 * 48 * 5 * 5


def test_vgg16():
    wls = load_topology(f"{TOPO}/vgg16.csv")
    cfg = [(224, 3, 64), (224, 64, 64), (112, 64, 128), (112, 128, 128), (56, 128, 256), (56, 256, 256),
           (56, 256, 256), (28, 256, 512), (28, 512, 512), (28, 512, 512), (14, 512, 512), (14, 512, 512),
           (14, 512, 512)]
    conv = sum(conv_macs(p, 3, a, b) for p, a, b in cfg)
    assert conv == 15_346_630_656                                     # the well-known 15.35 G
    assert macs([w for w in wls if w.op == "conv2d"]) == conv
    assert macs([w for w in wls if w.op == "dense"]) == 7 * 7 * 512 * 4096 + 4096 * 4096 + 4096 * 1000
    assert [w.p for w in wls if w.op == "conv2d"] == [p for p, _, _ in cfg]


def test_resnet18():
    wls = load_topology(f"{TOPO}/resnet18.csv")
    want = conv_macs(112, 7, 3, 64) + 4 * conv_macs(56, 3, 64, 64)
    for out, cin, cout in ((28, 64, 128), (14, 128, 256), (7, 256, 512)):
        want += conv_macs(out, 3, cin, cout) + 3 * conv_macs(out, 3, cout, cout) + conv_macs(out, 1, cin, cout)
    want += 512 * 1000
    assert macs(wls) == want == 1_814_073_344
    assert [w.p for w in wls if w.name.endswith(("conv1", "downsample"))] == [112, 56, 56, 28, 28, 28, 14, 14,
                                                                               14, 7, 7, 7]


def test_mobilenet_v1_depthwise():
    wls = load_topology(f"{TOPO}/mobilenet_v1.csv")
    want = conv_macs(112, 3, 3, 32)
    blocks = [(112, 32, 64, 1), (112, 64, 128, 2), (56, 128, 128, 1), (56, 128, 256, 2), (28, 256, 256, 1),
              (28, 256, 512, 2)] + [(14, 512, 512, 1)] * 5 + [(14, 512, 1024, 2), (7, 1024, 1024, 1)]
    for size, cin, cout, stride in blocks:
        out = size // stride
        want += conv_macs(out, 3, cin, cin, groups=cin) + conv_macs(out, 1, cin, cout)
    want += 1024 * 1000
    assert macs(wls) == want == 568_740_352                           # the paper's 569 M mult-adds
    dw = [w for w in wls if "DP" in w.name]
    assert len(dw) == 13 and all(w.c == 1 and w.k == 1 and w.g > 1 for w in dw)
    assert [w.g for w in dw] == [cin for _, cin, _, _ in blocks]


@pytest.mark.parametrize("name", ["alexnet_eyeriss", "vgg16", "resnet18", "mobilenet_v1"])
def test_shipped_sizes_are_exact(name):
    """H = (P - 1) * stride + R everywhere: no implicit SCALE-Sim end padding, bits as asked."""
    for w in load_topology(f"{TOPO}/{name}.csv", bits=(4, 2)):
        assert w.pad == (0, 0, 0, 0) and (w.p - 1) * w.stride[0] + w.r == w.h
        assert (w.in_bits, w.w_bits, w.out_bits, w.a_op_bits, w.w_op_bits, w.acc_bits) == (4, 2, 4, 4, 2, 32)
        assert w.path == "mac" and w.events == {"requants": w.output_elems}


# ------------------------------------------------------------------------------------ SCALE-Sim format

HEADER = "Layer name, IFMAP Height, IFMAP Width, Filter Height, Filter Width, Channels, Num Filter, Strides,\n"


def topo(tmp_path, text, name="topo.csv"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_scalesim_quirks(tmp_path):
    text = ("\ufeff" + HEADER + "\n"
            "Conv1 ,  224, 224, 11, 11, 3, 96, 4,\n"              # SCALE-Sim's alexnet.csv: ceil -> 55
            ",,,,,,,,\n"                                          # spacer row
            "\tConv2_dw, 112, 112, 3, 3, 1, 1, 1,#dw\n"           # text after the last comma is dropped
            "Conv2_DP, 114, 114, 3, 3, 32, 2, 1,\n"               # 'DP' in the name: depthwise
            "Conv2_DP, 5, 5, 3, 3, 2, 6, 1, 2:4,\n"               # duplicate name, v3 sparsity column
            "FC, 1, 1, 1, 1, 512, 1000, 1\n")                     # no trailing comma: keep the stride
    wls = load_topology(topo(tmp_path, text))
    assert [w.name for w in wls] == ["Conv1", "Conv2_dw", "Conv2_DP", "Conv2_DP", "FC"]
    c1 = wls[0]
    assert (c1.p, c1.q, c1.pad) == (55, 55, (0, 0, 3, 3)) and c1.macs == 55 * 55 * 11 * 11 * 3 * 96
    assert (wls[2].g, wls[2].c, wls[2].k, wls[2].p) == (32, 1, 2, 112) and wls[2].macs == 32 * 2 * 112 * 112 * 9
    assert wls[4].op == "dense" and (wls[4].c, wls[4].k) == (512, 1000)


def test_gemm_format(tmp_path):
    wls = load_topology(topo(tmp_path, "Layer,M,N,K,\nL0,196,192,384,\nL1, 3, 5, 16, 3:4,\n\n"))
    assert [(w.op, w.p, w.k, w.c, w.macs) for w in wls] == [("dense", 196, 192, 384, 196 * 192 * 384),
                                                            ("dense", 3, 5, 16, 240)]
    assert wls[0].input_elems == 196 * 384 and wls[0].weight_elems == 384 * 192 and wls[0].output_elems == 196 * 192
    assert wls[0].events == {"requants": 196 * 192}
    # the same file forced to the convolution format is a column-count error
    with pytest.raises(HwsimError, match="row 2 .L0.: expected 8"):
        load_topology(tmp_path / "topo.csv", fmt="conv")


def one_line_error(path, **kw):
    with pytest.raises(HwsimError) as info:
        load_topology(path, **kw)
    text = str(info.value)
    assert "\n" not in text and text.startswith(str(path))
    return text


BAD_ROWS = [
    ("conv2, 27, 27, x, 5, 96, 256, 1,", "row 2 (conv2): Filter Height: must be a positive integer, got 'x'"),
    ("conv2, 27, 27, 5, 5, 96, 0, 1,", "row 2 (conv2): Num Filter: must be a positive integer, got '0'"),
    ("conv2, 27, 27, 5, 5, -96, 256, 1,", "Channels: must be a positive integer, got '-96'"),
    ("conv2, 27, 27, 5.5, 5, 96, 256, 1,", "Filter Height: must be a positive integer, got '5.5'"),
    ("conv2, 27, 27, 5, 5, 96, 256, ,", "Strides: must be a positive integer, got ''"),
    ("conv2, 3, 27, 5, 5, 96, 256, 1,", "row 2 (conv2): Filter Height: 5 is larger than the IFMAP Height 3"),
    ("conv2, 27, 27, 5, 5, 96, 256,", "row 2 (conv2): expected 8 comma-separated columns"),
    ("conv2, 27, 27, 5, 5, 96, 256, 1, 1:1, 7,", "got 10"),
    ("conv2, 27, 27, 5, 5, 96, 256, 1, 1,", "Sparsity: must be N:M"),
    ("conv2, 27, 27, 5, 5, 96, 256, 1, 4:2,", "Sparsity: must be N:M"),
    ("conv2, 999999999999, 27, 5, 5, 96, 256, 1,", "IFMAP Height: 999999999999 exceeds the limit"),
    ("big, 100000, 100000, 3, 3, 100000, 100000, 1,", "row 2 (big): 9e+20 MACs exceed the limit"),
    ("conv2\t27\t27\t5\t5\t96\t256\t1", "got 1"),
    (", 27, 27, 5, 5, 96, 256, 1, 1:1, 7,", "row 2: expected 8"),
]


@pytest.mark.parametrize("row,message", BAD_ROWS)
def test_bad_rows(tmp_path, row, message):
    path = topo(tmp_path, HEADER + row + "\n")
    assert message in one_line_error(path)


def test_bad_files(tmp_path):
    assert one_line_error(tmp_path / "missing.csv").endswith("missing.csv: file not found")
    assert one_line_error(tmp_path).endswith(": not a file")
    assert one_line_error(topo(tmp_path, " \n\n")).endswith("topo.csv: empty file")
    assert one_line_error(topo(tmp_path, HEADER)).endswith("no layers: the file has a header row only")
    assert "row 1: the first row must be the header" in one_line_error(topo(tmp_path, "c1, 5, 5, 3, 3, 1, 1, 1,\n"))
    binary = tmp_path / "bin.csv"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe" * 10)
    assert "not a text CSV file" in one_line_error(binary)
    huge = tmp_path / "huge.csv"
    with open(huge, "wb") as f:
        f.truncate(17 << 20)
    assert "larger than 16 MiB" in one_line_error(huge)
    assert "bits must be" in one_line_error(topo(tmp_path, HEADER + "c, 5, 5, 3, 3, 1, 1, 1,\n"), bits=(0, 8))
    assert "format must be" in one_line_error(tmp_path / "topo.csv", fmt="xyz")


def test_error_line_format(tmp_path):
    path = topo(tmp_path, HEADER + "conv1, 227, 227, 11, 11, 3, 96, 4,\nconv2, 31, 31, x, 5, 48, 256, 1,\n")
    assert one_line_error(path) == f"{path}: row 3 (conv2): Filter Height: must be a positive integer, got 'x'"


# ------------------------------------------------------------------------------------ ONNX shapes

def mac_list(workloads):
    return [(w.op, w.g, w.k, w.c, w.p, w.q, w.r, w.s, w.macs) for w in workloads if w.is_mac]


def test_onnx_lenet_matches_the_qnn_model():
    pytest.importorskip("onnx")
    from simulator.importers.onnx_shapes import load_onnx_shapes
    qnn = workloads_from_model(load_model(MODELS / "lenet_digits_ort.qnn"))
    flt = load_onnx_shapes(MODELS / "lenet_digits_float.onnx")
    qdq = load_onnx_shapes(MODELS / "lenet_digits_ort_qdq.onnx")
    assert mac_list(flt) == mac_list(qdq) == mac_list(qnn)
    assert [w.macs for w in qnn if w.is_mac] == [9216, 73728, 8192, 640]
    # the QDQ file carries everything the .qnn import knows: identical workloads but for the names
    strip = [{**w.__dict__, "name": "", "inputs": ()} for w in qdq]
    assert strip == [{**w.__dict__, "name": "", "inputs": ()} for w in qnn]
    # ... and the same graph: each layer reads the same producers (names mapped layer by layer).
    rename = {a.name: b.name for a, b in zip(qdq, qnn)} | {"input": "input"}
    assert [tuple(rename[x] for x in w.inputs) for w in qdq] == [w.inputs for w in qnn]
    # the float model: Relu is its own vector layer, bits from the `bits` argument
    relus = [w for w in load_onnx_shapes(MODELS / "lenet_digits_float.onnx", bits=(4, 2)) if w.op == "relu"]
    assert [w.events["compares"] for w in relus] == [1024, 512, 64] and relus[0].in_bits == 4
    assert all((w.in_bits, w.w_bits, w.a_op_bits) == (4, 2, 4)
               for w in load_onnx_shapes(MODELS / "lenet_digits_float.onnx", bits=(4, 2)) if w.is_mac)


def make_onnx(tmp_path, nodes, inits, in_shape, name="m.onnx", out_shape=None):
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, in_shape)],
                              [helper.make_tensor_value_info(nodes[-1].output[0], TensorProto.FLOAT, out_shape)],
                              [numpy_helper.from_array(np.asarray(v, dtype=np.float32 if np.asarray(v).dtype
                                                                  .kind == "f" else np.asarray(v).dtype), k)
                               for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path / name
    onnx.save(model, str(path))
    return path


def shapes_of(path, **kw):
    from simulator.importers.onnx_shapes import load_onnx_shapes
    return load_onnx_shapes(path, **kw)


def test_onnx_float_ops(tmp_path):
    from onnx import helper
    rng = np.random.default_rng(0)
    n = helper.make_node
    nodes = [
        n("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", strides=[2, 2], auto_pad="SAME_UPPER", kernel_shape=[3, 3]),
        n("BatchNormalization", ["c1", "g", "be", "mu", "var"], ["bn"], name="bn"),
        n("Relu", ["bn"], ["r1"], name="relu1"),
        n("Conv", ["r1", "w2"], ["c2"], name="dw", group=8, pads=[1, 1, 1, 1], kernel_shape=[3, 3]),
        n("Add", ["c2", "r1"], ["a"], name="res"),
        n("Clip", ["a", "lo", ""], ["cl"], name="clip"),
        n("MaxPool", ["cl"], ["mp"], name="pool", kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
        n("Concat", ["mp", "mp"], ["cat"], name="cat", axis=1),
        n("GlobalAveragePool", ["cat"], ["gap"], name="gap"),
        n("Dropout", ["gap"], ["dr"], name="drop"),
        n("Reshape", ["dr", "shape"], ["flat"], name="flat"),
        n("MatMul", ["flat", "w3"], ["mm"], name="fc"),
        n("Add", ["mm", "b3"], ["y"], name="bias"),
    ]
    inits = {"w1": rng.normal(size=(8, 3, 3, 3)), "b1": np.zeros(8), "g": np.ones(8), "be": np.zeros(8),
             "mu": np.zeros(8), "var": np.ones(8), "w2": rng.normal(size=(8, 1, 3, 3)), "lo": np.array(0.0),
             "shape": np.array([-1, 16], dtype=np.int64), "w3": rng.normal(size=(16, 10)), "b3": np.zeros(10)}
    wls = {w.name: w for w in shapes_of(make_onnx(tmp_path, nodes, inits, ["batch", 3, 15, 15]))}
    assert list(wls) == ["conv1", "relu1", "dw", "res", "clip", "pool", "cat", "gap", "flat", "fc"]
    c1 = wls["conv1"]
    assert (c1.p, c1.q, c1.pad, c1.stride, c1.extra_weight_bits) == (8, 8, (1, 1, 1, 1), (2, 2), 8 * 32)
    dw = wls["dw"]
    assert (dw.g, dw.k, dw.c, dw.p) == (8, 1, 1, 8) and dw.macs == 8 * 8 * 8 * 9
    assert wls["relu1"].events == {"compares": 512} and wls["clip"].events == {"compares": 512}   # one bound
    assert wls["res"].events == {"adds": 512, "requants": 512} and wls["res"].in_elems == 1024
    assert (wls["pool"].p, wls["pool"].events) == (4, {"compares": 8 * 16 * 8})
    assert wls["gap"].events == {"adds": 16 * 15} and wls["gap"].r == 4        # float model: no requantizer
    assert wls["cat"].path == wls["flat"].path == "view"
    assert (wls["fc"].op, wls["fc"].c, wls["fc"].k, wls["fc"].macs) == ("dense", 16, 10, 160)


def test_onnx_batch_dimension(tmp_path):
    from onnx import helper
    nodes = [helper.make_node("Conv", ["x", "w"], ["y"], name="c", kernel_shape=[1, 1])]
    inits = {"w": np.ones((4, 2, 1, 1))}
    one = shapes_of(make_onnx(tmp_path, nodes, inits, ["N", 2, 5, 5], "a.onnx"))[0]
    two = shapes_of(make_onnx(tmp_path, nodes, inits, [2, 2, 5, 5], "b.onnx"))[0]
    assert one.n == 1 and two.n == 2 and two.macs == 2 * one.macs == 2 * 4 * 2 * 25
    assert two.events["requants"] == 2 * one.events["requants"]
    assert two.with_batch(1) == Workload(**{**two.__dict__, "n": 1, "events": one.events})


def onnx_error(path):
    with pytest.raises(HwsimError) as info:
        shapes_of(path)
    text = str(info.value)
    assert "\n" not in text and text.startswith(str(path))
    return text


def test_onnx_unsupported_and_malformed(tmp_path):
    from onnx import helper
    n = helper.make_node
    conv = n("Conv", ["x", "w"], ["c"], name="conv", kernel_shape=[3, 3])
    w = {"w": np.ones((4, 2, 3, 3))}
    text = onnx_error(make_onnx(tmp_path, [conv, n("TopK", ["c", "w"], ["y", "i"], name="act")], w, [1, 2, 6, 6]))
    assert "node act (TopK): unsupported op 'TopK'; supported: Conv, " in text
    text = onnx_error(make_onnx(tmp_path, [conv], w, ["N", 2, "H", 6]))
    assert "tensor 'x' has unknown or empty dimensions [1, 2, ?, 6]" in text
    dil = n("Conv", ["x", "w"], ["y"], name="dil", kernel_shape=[3, 3], dilations=[2, 2])
    text = onnx_error(make_onnx(tmp_path, [dil], w, [1, 2, 9, 9]))
    assert "node dil (Conv): dilations [2, 2] are not supported" in text
    mm = n("MatMul", ["x", "x"], ["y"], name="mm")
    assert "node mm (MatMul): the weight 'x' must be a constant" in onnx_error(make_onnx(tmp_path, [mm], {}, [4, 4]))
    conv2 = n("Conv", ["x", "w"], ["c2"], name="conv2", kernel_shape=[3, 3])
    sub = n("Sub", ["c", "c2"], ["y"], name="sq")
    text = onnx_error(make_onnx(tmp_path, [conv, conv2, sub], w, [1, 2, 6, 6]))
    assert "Sub of two activations is not supported" in text
    pool = n("MaxPool", ["x"], ["y"], name="p", kernel_shape=[2, 2], strides=[2, 2], ceil_mode=1)
    assert "ceil_mode" in onnx_error(make_onnx(tmp_path, [pool], {}, [1, 1, 5, 5]))


def test_onnx_bad_files(tmp_path):
    pytest.importorskip("onnx")
    text = tmp_path / "text.onnx"
    text.write_text("this is not a protobuf\n" * 20)
    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")
    trunc = tmp_path / "trunc.onnx"
    data = (MODELS / "lenet_digits_float.onnx").read_bytes()
    trunc.write_bytes(data[: len(data) // 2])
    for path in (text, empty, trunc, tmp_path / "missing.onnx"):
        onnx_error(path)


def test_onnx_missing_package(monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx", None)          # import onnx -> ImportError
    with pytest.raises(HwsimError, match=r'python -m pip install -e "\.\[onnx\]"'):
        shapes_of(MODELS / "lenet_digits_float.onnx")


def test_onnx_random_quantized_models_match_the_importer(tmp_path):
    """QDQ and QOperator files from onnxruntime.quantization: the same workloads as import_onnx + qnn_shapes
    (models without Concat: import_onnx adds rescaling layers there that shapes alone cannot see)."""
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from onnx_factory import quantize, random_float_model
    from simulator.importers.onnx_import import import_onnx
    checked = 0
    for seed in range(40):
        model, in_shape, desc = random_float_model(seed)
        if "concat" in desc:
            continue
        fp = tmp_path / f"f{seed}.onnx"
        onnx.save(model, str(fp))
        float_macs = mac_list(shapes_of(fp))
        for fmt in ("QDQ", "QOperator"):
            qp = tmp_path / f"{fmt}{seed}.onnx"
            quantize(fp, qp, in_shape, fmt=fmt, seed=seed)
            got = [{**w.__dict__, "name": "", "inputs": ()} for w in shapes_of(qp) if w.path != "view"]
            want = [{**w.__dict__, "name": "", "inputs": ()}   # shapes alone model the exact datapath
                    for w in workloads_from_model(import_onnx(qp, ort_cpu="vnni"))
                    if w.path != "view"]
            assert got == want, (seed, desc, fmt)
            assert mac_list(shapes_of(qp)) == float_macs
        checked += 1
        if checked == 4:
            break
    assert checked == 4


def test_onnx_dynamic_quantization(tmp_path):
    pytest.importorskip("onnxruntime")
    from onnxruntime.quantization import QuantType, quantize_dynamic
    path = tmp_path / "dyn.onnx"
    quantize_dynamic(str(MODELS / "lenet_digits_float.onnx"), str(path), weight_type=QuantType.QInt8,
                     op_types_to_quantize=["Conv", "Gemm", "MatMul"])
    wls = shapes_of(path)
    assert mac_list(wls) == mac_list(shapes_of(MODELS / "lenet_digits_float.onnx"))
    assert all((w.in_bits, w.w_bits, w.a_op_bits) == (8, 8, 9) for w in wls if w.is_mac)   # uint8, computed zp
