"""ReduceMean over H and W in ORT-quantized models (timm / EfficientNet-Lite SE blocks: x.mean((2, 3),
keepdim=True)). quantize_static leaves ReduceMean in float: ORT computes DequantizeLinear [-> float ops] ->
float32 ReduceMean -> QuantizeLinear, and its float ReduceMean sums with Eigen's vectorized redux (SSE packets
of 4, two accumulators, the row's unaligned head added after the packets): lut_avgpool sum_order "eigen_sse"
(units/elementwise.py). Checked here bit for bit against ORT's float kernel, then tensor by tensor on
quantized networks (tests/ort_cuts.py)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from simulator.units.elementwise import eigen_sse_sum, eigen_sse_sums

ort = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

SIZES = [(1, 1), (2, 2), (3, 3), (7, 7), (5, 9), (14, 14), (28, 28), (1, 3), (2, 3), (3, 5), (4, 4), (6, 6),
         (9, 9), (13, 11), (17, 1), (1, 17), (10, 10), (56, 56), (15, 15), (2, 7)]


def _session(model):
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


def _float_reducemean(shape, opset, keepdims, axes):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    if opset >= 18:
        node = helper.make_node("ReduceMean", ["x", "axes"], ["y"], keepdims=keepdims)
        inits = [numpy_helper.from_array(np.array(axes, np.int64), "axes")]
    else:
        node = helper.make_node("ReduceMean", ["x"], ["y"], axes=list(axes), keepdims=keepdims)
        inits = []
    graph = helper.make_graph([node], "g", [x], [y], inits)
    return _session(helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)]))


def _aligned(shape, offset, rng):
    """A float32 array whose data starts `offset` floats past a 64-byte boundary (ORT reads a contiguous
    numpy input in place), with magnitudes spread over 7 decades so the sum order shows in the last bits."""
    n = int(np.prod(shape))
    buf = np.empty(n + 32, dtype=np.float32)
    skip = (16 - buf.ctypes.data % 64 // 4) % 16 + offset
    x = buf[skip:skip + n].reshape(shape)
    x[...] = rng.standard_normal(shape) * 10.0 ** rng.integers(-3, 4, size=shape)
    assert x.ctypes.data % 64 == 4 * offset
    return x


def _bits(a):
    return np.asarray(a, dtype=np.float32).view(np.int32)


def test_eigen_sum_is_ort_float_reducemean():
    """ORT's float ReduceMean, every spatial size, opset 13 (axes attribute) and 18 (axes input), keepdims 0 / 1,
    axes [2, 3] and [-2, -1]: 0 bit mismatches with eigen_sse_sums / float32(H*W); a sequential sum differs."""
    rng = np.random.default_rng(0)
    rows = seq_diff = 0
    for k, (h, w) in enumerate(SIZES):
        c = int(rng.integers(1, 40))
        axes = (2, 3) if k % 2 else (-2, -1)
        sess = _float_reducemean((1, c, h, w), 13 if k % 3 else 18, k % 2, axes)
        x = _aligned((1, c, h, w), 0, rng)
        got = sess.run(None, {"x": x})[0].reshape(c)
        flat = x.reshape(1, c, h * w)
        want = eigen_sse_sums(flat)[0] / np.float32(h * w)
        assert np.array_equal(_bits(got), _bits(want)), (h, w, c)
        seq = flat[0, :, 0].copy()
        for j in range(1, h * w):
            seq = seq + flat[0, :, j]
        seq_diff += int(np.count_nonzero(_bits(seq / np.float32(h * w)) != _bits(got)))
        rows += c
    assert rows > 300 and seq_diff > 0.1 * rows


def test_eigen_sum_follows_the_row_alignment():
    """The head Eigen sums last is the part of the row before a 16-byte boundary: an input starting 0..3 floats
    past one gives different bits, each reproduced by eigen_sse_sum with that offset; batch rows too."""
    rng = np.random.default_rng(1)
    for h, w in [(3, 3), (5, 9), (7, 7), (14, 14), (2, 3)]:
        n, c = 3, 11
        sess = _float_reducemean((n, c, h, w), 13, 1, (2, 3))
        for offset in range(4):
            x = _aligned((n, c, h, w), offset, rng)
            got = sess.run(None, {"x": x})[0].reshape(n * c)
            flat = x.reshape(n * c, h * w)
            want = [eigen_sse_sum(flat[r], offset + r * h * w) / np.float32(h * w) for r in range(n * c)]
            assert np.array_equal(_bits(got), _bits(want)), (h, w, offset)


finite = st.floats(-1e6, 1e6, width=32, allow_nan=False, allow_infinity=False)


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 3), st.integers(1, 9), st.integers(1, 70), st.data())
def test_fast_eigen_sums_equal_the_reference(n, c, size, data):
    vals = data.draw(st.lists(finite, min_size=n * c * size, max_size=n * c * size))
    flat = np.array(vals, dtype=np.float32).reshape(n, c, size)
    fast = eigen_sse_sums(flat)
    ref = [[eigen_sse_sum(flat[i, j], j * size) for j in range(c)] for i in range(n)]
    assert np.array_equal(_bits(fast), _bits(ref))


def test_lut_avgpool_sum_order_is_checked():
    from simulator.encodings import UniformAct
    from simulator.errors import HwsimError
    from simulator.graph import Layer, Model
    enc = UniformAct(bits=8, signed=False, scale=0.1, zero_point=3)
    table = np.arange(256, dtype=np.float32).view(np.int32).astype(np.int64).reshape(1, -1)
    lay = Layer("gap", "lut_avgpool", ["input"], {"sum_order": "pairwise"}, enc, table=table)
    with pytest.raises(HwsimError, match="'sequential' or 'eigen_sse'"):
        Model(name="m", input_shape=(2, 3, 3), input_enc=enc, layers=[lay]).check()


# ----------------------------------------------------------------------------------- quantized models
def _qdq_reducemean(shape, in_scale, in_zp, out_scale, out_zp, signed, keepdims=1, opset=13):
    """x -> QuantizeLinear -> DequantizeLinear -> ReduceMean(H, W) -> QuantizeLinear -> DequantizeLinear."""
    dt = np.int8 if signed else np.uint8
    inits = [numpy_helper.from_array(np.array(in_scale, np.float32), "s_in"),
             numpy_helper.from_array(np.array(in_zp, dt), "z_in"),
             numpy_helper.from_array(np.array(out_scale, np.float32), "s_out"),
             numpy_helper.from_array(np.array(out_zp, dt), "z_out")]
    if opset >= 18:
        inits.append(numpy_helper.from_array(np.array([2, 3], np.int64), "axes"))
        rm = helper.make_node("ReduceMean", ["xd", "axes"], ["m"], keepdims=keepdims)
    else:
        rm = helper.make_node("ReduceMean", ["xd"], ["m"], axes=[2, 3], keepdims=keepdims)
    nodes = [helper.make_node("QuantizeLinear", ["x", "s_in", "z_in"], ["xq"]),
             helper.make_node("DequantizeLinear", ["xq", "s_in", "z_in"], ["xd"]), rm,
             helper.make_node("QuantizeLinear", ["m", "s_out", "z_out"], ["mq"]),
             helper.make_node("DequantizeLinear", ["mq", "s_out", "z_out"], ["y"])]
    graph = helper.make_graph(nodes, "rm", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, *shape])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8 if opset < 18 else 9
    return model


@pytest.mark.parametrize("signed", [False, True])
@pytest.mark.parametrize("opset,keepdims", [(13, 1), (18, 0)])
def test_means_on_rounding_ties_match_ort(tmp_path, signed, opset, keepdims):
    """DequantizeLinear -> ReduceMean -> QuantizeLinear with input codes whose exact mean is a half-integer
    multiple of the output scale: the float32 rounding of the sum decides each code, so only ORT's own sum order
    gives 0 differences (a sequential sum gives many)."""
    from ort_cuts import compare_every_tensor

    from simulator.engine import Engine, quantize_input
    from simulator.importers.onnx_import import import_onnx
    rng = np.random.default_rng(2 + signed + keepdims)
    s = np.float32(0.0371)
    lo, zp = (-128, -5) if signed else (0, 7)
    total, flips = 0, 0
    for c, h, w in [(7, 3, 6), (13, 7, 8), (5, 14, 14), (9, 5, 9), (3, 28, 28), (6, 2, 2), (11, 1, 1)]:
        path = tmp_path / f"rm{c}_{h}_{w}.onnx"
        onnx.save(_qdq_reducemean((c, h, w), s, zp, s, zp, signed, keepdims, opset), str(path))
        model = import_onnx(path)
        lay = [lay for lay in model.layers if lay.op == "lut_avgpool"]
        assert len(lay) == 1 and lay[0].attr("sum_order") == "eigen_sse"
        assert model.metadata["lookup_tables"][lay[0].name] == "DequantizeLinear -> ReduceMean"
        n, size = 24, h * w
        codes = rng.integers(lo + 20, lo + 236, (n, c, size))
        if size % 2 == 0:   # each row's code sum L * (m + 1/2): an exact tie for QuantizeLinear (+1 on d codes)
            d = (size // 2 - codes.sum(-1) % size) % size
            codes += np.arange(size) < d[..., None]
        x = ((codes - zp) * s).astype(np.float32).reshape(n, c, h, w)
        diffs = compare_every_tensor(path, model, x)
        assert sum(diffs.values()) == 0, diffs
        total += n * c
        ours = Engine(model).run(quantize_input(model, x)).output
        lay[0].attrs["sum_order"] = "sequential"
        seq = Engine(model).run(quantize_input(model, x)).output
        lay[0].attrs["sum_order"] = "eigen_sse"
        flips += int(np.count_nonzero(seq != ours))
    assert flips > 0.05 * total   # the test tells the sum orders apart


class _Reader:
    def __init__(self, shape, n=4):
        self.data = iter([{"x": np.random.default_rng(i).standard_normal(shape).astype(np.float32)}
                          for i in range(n)])

    def get_next(self):
        return next(self.data, None)


def _se_net(act, keepdim, c):
    import torch
    from torch import nn

    class Net(nn.Module):
        """conv -> act -> SE (x.mean((2, 3)) squeeze, ReLU, sigmoid gate) -> conv."""

        def __init__(self):
            super().__init__()
            self.c1, self.act = nn.Conv2d(3, c, 3, 1, 1), act()
            self.f1, self.f2 = nn.Conv2d(c, 4, 1), nn.Conv2d(4, c, 1)
            self.c2 = nn.Conv2d(c, 8, 1)

        def forward(self, x):
            x = self.act(self.c1(x))
            s = x.mean((2, 3), keepdim=keepdim)
            if not keepdim:
                s = s.reshape(-1, c, 1, 1)
            return self.c2(x * torch.sigmoid(self.f2(torch.relu(self.f1(s)))))
    return Net().eval()


def _quantize(net, shape, tmp_path, fmt, act_type, per_channel, opset=17):
    import torch
    quantization = pytest.importorskip("onnxruntime.quantization")
    import logging
    logging.getLogger().setLevel(logging.ERROR)
    src, dst = tmp_path / "f.onnx", tmp_path / "q.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, torch.randn(1, *shape), str(src), opset_version=opset, dynamo=False,
                          input_names=["x"], output_names=["y"])
    quantization.quantize_static(str(src), str(dst), _Reader((1, *shape)),
                                 quant_format=getattr(quantization.QuantFormat, fmt), per_channel=per_channel,
                                 activation_type=getattr(quantization.QuantType, act_type),
                                 weight_type=quantization.QuantType.QInt8)
    return dst


SE_CASES = [(fmt, act, pc, a, size) for fmt in ("QDQ", "QOperator") for act in ("QUInt8", "QInt8")
            for pc in (False, True) for a, size in (("relu", 7), ("hardswish", 5), ("hardswish", 14),
                                                    ("relu", 9), ("hardswish", 3))]


@pytest.mark.parametrize("fmt,act,per_channel,activation,size", SE_CASES,
                         ids=[f"{f}-{a}-{'pc' if p else 'pt'}-{n}-{s}x{s}" for f, a, p, n, s in SE_CASES])
def test_se_block_with_mean_matches_ort(tmp_path, fmt, act, per_channel, activation, size):
    torch = pytest.importorskip("torch")
    from ort_cuts import compare_every_tensor

    from simulator.importers.onnx_import import import_onnx
    torch.manual_seed(size)
    c = 12 if size % 2 else 10            # rows of 5x5, 3x3, 7x7... start off the 16-byte boundary
    keepdim = size not in (9, 3)          # keepdims=0: ReduceMean -> flatten view, then a Reshape back
    net = _se_net(torch.nn.ReLU if activation == "relu" else torch.nn.Hardswish, keepdim, c)
    path = _quantize(net, (3, size, size), tmp_path, fmt, act, per_channel, opset=17 if keepdim else 18)
    model = import_onnx(path)
    pools = [lay for lay in model.layers if lay.op == "lut_avgpool"]
    assert len(pools) == 1 and pools[0].attr("sum_order") == "eigen_sse"
    x = 2 * np.random.default_rng(size).standard_normal((16, 3, size, size)).astype(np.float32)
    diffs = compare_every_tensor(path, model, x)
    # int8 QDQ: ORT's QDQS8ToU8 rewrite leaves the conv whose output two DequantizeLinears read (the SE input) in
    # float32 (metadata ort_float_nodes, tests/test_real_networks.py); none of these cases shows a difference
    assert len(diffs) >= 7 and sum(diffs.values()) == 0, {k: v for k, v in diffs.items() if v}
    assert bool(model.metadata.get("ort_float_nodes")) == (fmt == "QDQ" and act == "QInt8")


@pytest.mark.parametrize("fmt", ["QDQ", "QOperator"])
@pytest.mark.parametrize("per_channel", [False, True])
def test_efficientnet_lite_block_mean_matches_ort(tmp_path, fmt, per_channel):
    torch = pytest.importorskip("torch")
    import torch_mobilenets as tm
    from ort_cuts import compare_every_tensor

    from simulator.importers.onnx_import import import_onnx
    torch.manual_seed(0)
    net = tm.init_batchnorm(tm.efficientnet_lite_block_mean())
    path = _quantize(net, (3, 32, 32), tmp_path, fmt, "QUInt8", per_channel)
    model = import_onnx(path)
    assert any(lay.op == "lut_avgpool" and lay.attr("sum_order") == "eigen_sse" for lay in model.layers)
    x = np.random.default_rng(7).standard_normal((8, 3, 32, 32)).astype(np.float32)
    diffs = compare_every_tensor(path, model, x)
    assert len(diffs) >= 10 and sum(diffs.values()) == 0, {k: v for k, v in diffs.items() if v}


@pytest.mark.parametrize("axes", [[1], [3], [1, 2, 3], [0, 2, 3]])
def test_reducemean_over_other_axes_is_one_line_naming_the_node(tmp_path, axes):
    from simulator.errors import HwsimError
    from simulator.importers.onnx_import import import_onnx
    model = _qdq_reducemean((4, 3, 3), 0.05, 3, 0.05, 3, False)
    model.graph.node[2].attribute[0].CopyFrom(helper.make_attribute("axes", axes))
    model.graph.node[2].name = "se_squeeze"
    path = tmp_path / "bad.onnx"
    onnx.save(model, str(path))
    with pytest.raises(HwsimError) as info:
        import_onnx(path)
    text = str(info.value)
    assert "\n" not in text and "se_squeeze" in text and "axes [2, 3]" in text


def test_float_island_before_reducemean_matches_ort(tmp_path):
    """DequantizeLinear -> Mul(2) -> ReduceMean -> QuantizeLinear (a float island, as a QOperator model's
    HardSwish): one lut_avgpool whose table is the island's float32 results; ties as above, 0 differences."""
    from ort_cuts import compare_every_tensor

    from simulator.importers.onnx_import import import_onnx
    rng = np.random.default_rng(9)
    s, zp = np.float32(0.0371), 7
    for c, h, w in [(13, 7, 8), (5, 14, 14), (6, 3, 4)]:
        model = _qdq_reducemean((c, h, w), s, zp, 2 * s, zp, False)
        model.graph.initializer.append(numpy_helper.from_array(np.array(2.0, np.float32), "two"))
        model.graph.node.insert(2, helper.make_node("Mul", ["xd", "two"], ["x2"]))
        model.graph.node[3].input[0] = "x2"
        path = tmp_path / "island.onnx"
        onnx.save(model, str(path))
        m = import_onnx(path)
        assert [lay.op for lay in m.layers] == ["lut_avgpool"]
        assert m.metadata["lookup_tables"][m.layers[0].name] == "Mul -> ReduceMean"
        codes = rng.integers(20, 236, (32, c, h * w))
        d = (h * w // 2 - codes.sum(-1) % (h * w)) % (h * w)
        codes += np.arange(h * w) < d[..., None]
        x = ((codes - zp) * s).astype(np.float32).reshape(-1, c, h, w)
        diffs = compare_every_tensor(path, m, x)
        assert sum(diffs.values()) == 0, diffs


def test_estimate_counts_reducemean_as_the_engine(tmp_path):
    """hwsim estimate (onnx_shapes) on QDQ and QOperator SE models: the engine's lut_avgpool counts; a float
    graph's ReduceMean is a global average pool; other axes: one line naming the node."""
    pytest.importorskip("torch")
    import torch
    from test_onnx_shapes_real_ops import strip

    from simulator.errors import HwsimError
    from simulator.importers.onnx_import import import_onnx
    from simulator.importers.onnx_shapes import load_onnx_shapes
    from simulator.importers.qnn_shapes import workloads_from_model
    torch.manual_seed(0)
    net = _se_net(torch.nn.ReLU, True, 12)
    for fmt in ("QDQ", "QOperator"):
        (tmp_path / fmt).mkdir()
        path = _quantize(net, (3, 7, 7), tmp_path / fmt, fmt, "QUInt8", False)
        # shapes alone model the exact datapath (not the x86 one ORT's kernels have without VNNI)
        shapes, engine = load_onnx_shapes(path), workloads_from_model(import_onnx(path, ort_cpu="vnni"))
        assert "lut_avgpool" in [wl.op for wl in shapes]
        assert strip(shapes) == strip(engine)
    ops = [wl.op for wl in load_onnx_shapes(tmp_path / "QDQ" / "f.onnx")]
    assert "avgpool" in ops and "lut_avgpool" not in ops
    bad = _qdq_reducemean((4, 3, 3), 0.05, 3, 0.05, 3, False)
    bad.graph.node[2].attribute[0].CopyFrom(helper.make_attribute("axes", [1]))
    onnx.save(bad, str(tmp_path / "bad.onnx"))
    with pytest.raises(HwsimError) as info:
        load_onnx_shapes(tmp_path / "bad.onnx")
    assert "\n" not in str(info.value) and "ReduceMean" in str(info.value) and "axes [2, 3]" in str(info.value)


def test_export_refuses_lut_avgpool_naming_the_layer(tmp_path):
    """The ONNX exporter has no lut_avgpool route: one error naming the layer (not a KeyError)."""
    from simulator.errors import HwsimError
    from simulator.exporters.onnx_export import export_onnx
    from simulator.importers.onnx_import import import_onnx
    path = tmp_path / "rm.onnx"
    onnx.save(_qdq_reducemean((4, 3, 3), 0.05, 3, 0.05, 3, False), str(path))
    model = import_onnx(path)
    with pytest.raises(HwsimError) as info:
        export_onnx(model, tmp_path / "out.onnx")
    assert "lut_avgpool" in str(info.value) and model.layers[0].name in str(info.value)
