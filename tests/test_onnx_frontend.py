"""The shared ONNX front end: one op registry (importers/onnx/ops/, one handler file per op) that the float reader,
the QOperator / QDQ reader (`ort`) and the QONNX reader (`qonnx`) all dispatch through."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from simulator.errors import HwsimError  # noqa: E402
from simulator.importers.onnx import ops  # noqa: E402
from simulator.importers.onnx.float_reader import read_float_onnx  # noqa: E402
from simulator.importers.onnx.frontend import Node, OnnxGraph  # noqa: E402
from simulator.importers.onnx.ops import MS, QONNX, REGISTRY, handler, lookup, supported, supported_summary  # noqa: E402
from simulator.importers.onnx_import import import_onnx  # noqa: E402
from simulator.importers.qonnx_import import import_qonnx  # noqa: E402

OPS_DIR = Path(ops.__file__).parent
READERS = ("to_float", "ort", "qonnx")


# --------------------------------------------------------------------------------------------- tiny graphs

def save(tmp_path, nodes, inits, name="m.onnx", in_dims=(1, 2, 4, 4), out="y", opsets=(("", 17),)):
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(in_dims))],
                              [helper.make_tensor_value_info(out, TensorProto.FLOAT, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid(d, v) for d, v in opsets])
    model.ir_version = 8
    path = tmp_path / name
    path.write_bytes(model.SerializeToString())
    return path


def init(name, value, dtype=np.float32):
    return numpy_helper.from_array(np.asarray(value, dtype=dtype), name)


def qdq_graph(tmp_path, extra=None, name="qdq.onnx"):
    """x -> Q -> DQ -> Relu [-> extra] -> Q -> DQ -> y (`extra`: (op, domain) of one more node)."""
    inits = [init("s", 0.05), init("z", 128, np.uint8)]
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["xq"], name="q_x"),
             helper.make_node("DequantizeLinear", ["xq", "s", "z"], ["xf"], name="dq_x"),
             helper.make_node("Relu", ["xf"], ["r"], name="relu")]
    last = "r"
    if extra is not None:
        nodes.append(helper.make_node(extra[0], [last], ["e"], name="extra", domain=extra[1]))
        last = "e"
    nodes += [helper.make_node("QuantizeLinear", [last, "s", "z"], ["yq"], name="q_y"),
              helper.make_node("DequantizeLinear", ["yq", "s", "z"], ["y"], name="dq_y")]
    return save(tmp_path, nodes, inits, name)


def qonnx_graph(tmp_path, extra=None, name="qonnx.onnx"):
    """x -> Quant -> MaxPool [-> extra] -> y."""
    inits = [init("s", 0.5), init("z", 0.0), init("b", 8.0)]
    nodes = [helper.make_node("Quant", ["x", "s", "z", "b"], ["xq"], name="quant", domain=QONNX, signed=1, narrow=0,
                              rounding_mode="ROUND"),
             helper.make_node("MaxPool", ["xq"], ["p"], name="pool", kernel_shape=[2, 2], strides=[2, 2])]
    last = "p"
    if extra is not None:
        nodes.append(helper.make_node(extra[0], [last], ["e"], name="extra", domain=extra[1]))
        last = "e"
    return save(tmp_path, nodes, inits, name, out=last, opsets=(("", 13), (QONNX, 1)))


def float_graph(tmp_path, extra=None, name="float.onnx"):
    """x -> Conv -> Relu [-> extra] -> y."""
    rng = np.random.default_rng(0)
    inits = [init("w", rng.normal(size=(3, 2, 3, 3)))]
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"], name="relu")]
    last = "r"
    if extra is not None:
        nodes.append(helper.make_node(extra[0], [last], ["e"], name="extra", domain=extra[1]))
        last = "e"
    return save(tmp_path, nodes, inits, name, out=last)


def read(reader, path):
    return {"to_float": read_float_onnx, "ort": import_onnx, "qonnx": import_qonnx}[reader](path)


GRAPHS = {"to_float": float_graph, "ort": qdq_graph, "qonnx": qonnx_graph}


# --------------------------------------------------------------------------------------------- the registry

def test_every_registered_op_has_its_handler_file():
    ops._load()
    files = {p.stem for p in OPS_DIR.glob("*.py") if not p.stem.startswith("_")}
    used = set()
    for (domain, op), h in REGISTRY.items():
        module = type(h).__module__
        assert module.startswith("simulator.importers.onnx.ops."), (op, module)
        stem = module.rsplit(".", 1)[1]
        assert stem in files, (op, module)
        assert op in (OPS_DIR / f"{stem}.py").read_text(), f"{op} is registered in {stem}.py but not named there"
        assert any(hasattr(h, r) for r in READERS), f"{op}: a handler without a reader method"
        used.add(stem)
    assert files == used, f"handler files that register nothing: {files - used}"


def test_readers_cover_their_ops():
    assert {"Conv", "Gemm", "MatMul", "BatchNormalization", "Softmax"} <= set(supported("to_float"))
    ort = set(supported("ort"))
    assert {"QuantizeLinear", "DequantizeLinear", "QLinearConv", "QLinearMatMul", "Conv", "AveragePool"} <= ort
    assert {f"{op} ({MS})" for op in ("QGemm", "QLinearAdd", "QLinearConcat", "QLinearAveragePool")} <= ort
    qonnx = set(supported("qonnx"))
    assert {f"{op} ({QONNX})" for op in ("Quant", "BipolarQuant", "MultiThreshold", "Trunc")} <= qonnx
    assert {"Conv", "Mul", "Div", "Sub", "Transpose"} <= qonnx
    assert {"Softmax", "Mul", "Resize", "ConvTranspose", f"QLinearSoftmax ({MS})", f"QLinearMul ({MS})"} <= ort
    assert "Softmax" not in qonnx and "Quant" not in supported("to_float")


def test_handler_methods_stay_small():
    """One op, one short method per reader: shared logic lives in the reader's builder or a helper."""
    for path in OPS_DIR.glob("*.py"):
        for cls in (n for n in ast.parse(path.read_text()).body if isinstance(n, ast.ClassDef)):
            for fn in (n for n in cls.body if isinstance(n, ast.FunctionDef) and n.name in READERS):
                assert fn.end_lineno - fn.lineno < 60, f"{path.name} {cls.name}.{fn.name}"


def _node(op, domain="", name="n1"):
    graph = OnnxGraph.__new__(OnnxGraph)       # lookup only needs the node's own fields
    graph.consts = {}
    return Node(helper.make_node(op, ["x"], ["y"], name=name, domain=domain), 0, graph)


@pytest.mark.parametrize("reader", READERS)
def test_lookup_error_names_node_op_and_what_the_reader_supports(reader):
    with pytest.raises(HwsimError) as info:
        lookup(_node("Frobnicate"), reader)
    err = info.value
    assert err.field == "node n1 (Frobnicate)"
    assert err.message.startswith("unsupported op 'Frobnicate'; supported: ")
    assert err.message.endswith(supported_summary(reader))
    assert all(op.split(" (")[0] in err.message or " (" in op for op in supported(reader))
    assert len(err.line().splitlines()) == 1


def test_lookup_domains():
    assert type(lookup(_node("QGemm", MS), "ort")).__name__ == "QGemm"
    assert type(lookup(_node("QLinearConv", MS), "ort")) is type(lookup(_node("QLinearConv"), "ort"))
    with pytest.raises(HwsimError, match=r"unsupported op 'QGemm';"):
        lookup(_node("QGemm"), "ort")                               # QGemm exists only in com.microsoft
    with pytest.raises(HwsimError, match=r"unsupported op 'Conv' \(domain acme\)"):
        lookup(_node("Conv", "acme"), "ort")
    # QONNX's custom ops come under several domain names: the QONNX reader matches the op type in any of them
    assert type(lookup(_node("MultiThreshold", "finn.custom_op.general"), "qonnx", any_domain=True)).__name__ \
        == "MultiThreshold"
    with pytest.raises(HwsimError, match=r"unsupported op 'Quant' \(domain qonnx.custom_op.general\)"):
        lookup(_node("Quant", QONNX), "to_float")
    assert lookup(_node("Conv", "ai.onnx"), "to_float") is lookup(_node("Conv"), "to_float")


# --------------------------------------------------------------------------------------------- the readers

@pytest.mark.parametrize("reader", READERS)
def test_each_reader_rejects_an_unknown_op_with_one_line(tmp_path, reader):
    path = GRAPHS[reader](tmp_path, extra=("Frobnicate", ""))
    with pytest.raises(HwsimError) as info:
        read(reader, path)
    line = info.value.line()
    assert len(line.splitlines()) == 1 and "Traceback" not in line
    assert str(path) in line and "node extra (Frobnicate)" in line
    assert "unsupported op 'Frobnicate'; supported: " + supported_summary(reader) in line
    assert len(line) < 500


@pytest.fixture
def new_op():
    """A handler for an op no reader knows, registered the way a new ops/<op>.py file would register it."""
    calls = []

    @handler("HwsimTestPassthrough")
    class Passthrough:
        def to_float(self, node, fb):
            calls.append("to_float")
            fb.alias(node, fb.tensor(node, 0))

        def ort(self, node, imp):
            calls.append("ort")
            imp.values[node.outputs[0]] = imp.lookup(node.inputs[0], node.where)

        def qonnx(self, node, imp):
            calls.append("qonnx")
            imp.env[node.outputs[0]] = imp.get(node.inputs[0])

    yield calls
    del REGISTRY[("", "HwsimTestPassthrough")]


@pytest.mark.parametrize("reader", READERS)
def test_a_new_op_handler_is_found_without_touching_the_readers(tmp_path, new_op, reader):
    plain = read(reader, GRAPHS[reader](tmp_path))
    extended = read(reader, GRAPHS[reader](tmp_path, extra=("HwsimTestPassthrough", ""), name="ext.onnx"))
    assert new_op == [reader]
    assert "HwsimTestPassthrough" in supported(reader)
    if reader == "to_float":
        assert [n.op for n in extended.nodes] == [n.op for n in plain.nodes]
    else:
        assert [lay.op for lay in extended.layers] == [lay.op for lay in plain.layers]


def test_readers_share_one_loader():
    from simulator.importers import onnx_import
    from simulator.importers.onnx import frontend
    assert onnx_import.load_onnx is frontend.load_onnx
    for module in ("onnx_import", "qonnx_import"):
        src = inspect.getsource(__import__(f"simulator.importers.{module}", fromlist=["_"]))
        assert "lookup(node, " in src and "onnx.load(" not in src
