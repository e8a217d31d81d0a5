"""Bad ONNX input: one clear error line naming the file and the place, exit status 2, no traceback, and no
.qnn file left behind. Run through the real command line (`python -m simulator.cli import X.onnx -o out.qnn`)."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from simulator.errors import HwsimError  # noqa: E402
from simulator.importers.onnx_import import import_onnx  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tiny_qdq(*, x_scale=0.05, x_zp=(np.uint8, 128), in_dims=("N", 2, 6, 6), drop_init=None, extra_op=None,
             float_model=False):
    """x -> Q -> DQ -> Conv(DQ(w), DQ(b)) -> Q -> DQ -> y, written directly (no calibration)."""
    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(np.array(x_scale, dtype=np.float32), "x_scale"),
        numpy_helper.from_array(np.array(x_zp[1], dtype=x_zp[0]), "x_zp"),
        numpy_helper.from_array(rng.integers(-127, 128, size=(3, 2, 3, 3)).astype(np.int8), "w_q"),
        numpy_helper.from_array(np.full(3, 0.01, dtype=np.float32), "w_scale"),
        numpy_helper.from_array(np.zeros(3, dtype=np.int8), "w_zp"),
        numpy_helper.from_array(rng.integers(-100, 100, size=3).astype(np.int32), "b_q"),
        numpy_helper.from_array(np.float32(x_scale) * np.full(3, 0.01, dtype=np.float32), "b_scale"),
        numpy_helper.from_array(np.zeros(3, dtype=np.int32), "b_zp"),
        numpy_helper.from_array(np.array(0.1, dtype=np.float32), "y_scale"),
        numpy_helper.from_array(np.array(0, dtype=np.uint8), "y_zp"),
    ]
    if float_model:
        inits = [numpy_helper.from_array(rng.normal(size=(3, 2, 3, 3)).astype(np.float32), "w")]
        nodes = [helper.make_node("Conv", ["x", "w"], ["y"], name="conv", pads=[1, 1, 1, 1])]
    else:
        nodes = [
            helper.make_node("QuantizeLinear", ["x", "x_scale", "x_zp"], ["xq"], name="quant_x"),
            helper.make_node("DequantizeLinear", ["xq", "x_scale", "x_zp"], ["xf"], name="dq_x"),
            helper.make_node("DequantizeLinear", ["w_q", "w_scale", "w_zp"], ["w"], name="dq_w", axis=0),
            helper.make_node("DequantizeLinear", ["b_q", "b_scale", "b_zp"], ["b"], name="dq_b", axis=0),
            helper.make_node("Conv", ["xf", "w", "b"], ["c"], name="conv1", pads=[1, 1, 1, 1]),
            helper.make_node("QuantizeLinear", ["c", "y_scale", "y_zp"], ["cq"], name="quant_c"),
            helper.make_node("DequantizeLinear", ["cq", "y_scale", "y_zp"], ["y" if extra_op is None else "cf"],
                             name="dq_c"),
        ]
        if extra_op is not None:
            nodes.append(helper.make_node(extra_op, ["cf"], ["y"], name="head"))
    inits = [i for i in inits if i.name != drop_init]
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(in_dims))],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def write(tmp_path, model, name="bad.onnx"):
    path = tmp_path / name
    path.write_bytes(model.SerializeToString())
    return path


def cli_import(tmp_path, src):
    out = tmp_path / "out.qnn"
    env = {**os.environ, "PYTHONPATH": REPO + os.pathsep + os.environ.get("PYTHONPATH", "")}
    r = subprocess.run([sys.executable, "-m", "simulator.cli", "import", str(src), "-o", str(out)], cwd=tmp_path,
                       env=env, capture_output=True, text=True, timeout=120)
    return r, out


def assert_clean_failure(r, out, src, *needles):
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert "Traceback" not in r.stderr
    assert lines[0].startswith("hwsim: error: ") and str(src) in lines[0], lines[0]
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    assert not out.exists()
    assert not [p for p in os.listdir(out.parent) if p.startswith("out.qnn") or p.endswith(".tmp")]


def test_valid_tiny_model_imports(tmp_path):
    src = write(tmp_path, tiny_qdq(), "good.onnx")
    r, out = cli_import(tmp_path, src)
    assert r.returncode == 0, r.stderr
    assert out.exists()


def test_malformed_file(tmp_path):
    src = tmp_path / "garbage.onnx"
    src.write_bytes(b"\x08\x07\x12\xff\xff\xff\xff\x0fnot an onnx file at all" * 7)
    r, out = cli_import(tmp_path, src)
    assert_clean_failure(r, out, src, "ONNX")


def test_truncated_file(tmp_path):
    data = tiny_qdq().SerializeToString()
    src = tmp_path / "truncated.onnx"
    src.write_bytes(data[: len(data) // 2])
    r, out = cli_import(tmp_path, src)
    assert_clean_failure(r, out, src)


def test_empty_and_missing_file(tmp_path):
    src = tmp_path / "empty.onnx"
    src.write_bytes(b"")
    r, out = cli_import(tmp_path, src)
    assert_clean_failure(r, out, src, "no graph")
    r, out = cli_import(tmp_path, tmp_path / "nope.onnx")
    assert_clean_failure(r, out, tmp_path / "nope.onnx", "not found")


def test_unsupported_op(tmp_path):
    src = write(tmp_path, tiny_qdq(extra_op="Hardmax"))
    r, out = cli_import(tmp_path, src)
    assert_clean_failure(r, out, src, "head", "Hardmax", "supported:", "QLinearConv", "AveragePool")


def test_dynamic_spatial_dimension(tmp_path):
    src = write(tmp_path, tiny_qdq(in_dims=("N", 2, "height", 6)))
    r, out = cli_import(tmp_path, src)
    assert_clean_failure(r, out, src, "dynamic", "height")


def test_symbolic_batch_is_fine(tmp_path):
    for dims in (("batch", 2, 6, 6), (1, 2, 6, 6)):
        model = import_onnx(write(tmp_path, tiny_qdq(in_dims=dims), "ok.onnx"))
        assert model.input_shape == (2, 6, 6)


def test_missing_initializer(tmp_path):
    src = write(tmp_path, tiny_qdq(drop_init="w_scale"))
    r, out = cli_import(tmp_path, src)
    assert_clean_failure(r, out, src, "dq_w", "w_scale", "missing initializer")


@pytest.mark.parametrize("scale", [0.0, -0.5, float("inf"), float("nan")])
def test_bad_scale(tmp_path, scale):
    src = write(tmp_path, tiny_qdq(x_scale=scale))
    r, out = cli_import(tmp_path, src)
    assert_clean_failure(r, out, src, "x_scale", "positive")


@pytest.mark.parametrize("zp", [(np.uint16, 300), (np.int32, -129), (np.int32, 5)])
def test_zero_point_out_of_range(tmp_path, zp):
    src = write(tmp_path, tiny_qdq(x_zp=zp))
    r, out = cli_import(tmp_path, src)
    needles = ["x_zp", "zero point"] + (["outside the 8-bit range"] if not -128 <= zp[1] <= 255 else [])
    assert_clean_failure(r, out, src, *needles)


def test_float_model_is_refused(tmp_path):
    src = write(tmp_path, tiny_qdq(float_model=True))
    r, out = cli_import(tmp_path, src)
    assert_clean_failure(r, out, src, "conv", "QuantizeLinear")


def test_api_errors_name_the_file(tmp_path):
    src = write(tmp_path, tiny_qdq(extra_op="Softmax"))
    with pytest.raises(HwsimError) as info:
        import_onnx(src)
    assert info.value.source == str(src)
    assert "node head (Softmax)" in info.value.line()
