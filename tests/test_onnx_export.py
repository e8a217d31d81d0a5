"""`hwsim export`: the ONNX model ONNX Runtime runs must give hwsim's output codes bit for bit.

Models: the shipped LeNets (540 test images), the shared random-model factory (every op and encoding), and two
generators of this file: `qdq_model` (uniform <= 8-bit float32-requant layers with arbitrary scales and explicit
multipliers, which must take the fused QDQ route) and `general_model` (every requant mode with arbitrary scales,
narrow accumulators that really wrap or saturate, 16-bit activations, every input rounding).
"""

from __future__ import annotations

import glob
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from model_factory import random_model
from simulator.encodings import (BinaryAct, BinaryW, CodebookW, EnqAct, KnqAct, Pow2W, TernaryW, ThresholdAct,
                                 UniformAct, UniformW)
from simulator.engine import Engine, quantize_input
from simulator.errors import HwsimError
from simulator.graph import ROUNDINGS, Layer, Model
from simulator.qnn.model_io import load_model
from simulator.report import output_array

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from simulator.exporters import onnx_export  # noqa: E402
from simulator.exporters.onnx_export import export_onnx, export_routes, find_weight_scales, to_onnx  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
ALL_MODES = ("float32", "float64", "shift", "fixed_double", "fixed_single")


def session(proto, optimize=True):
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    if not optimize:
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(proto.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def assert_exact(model, x, qdq=True, optimize=True):
    """ORT on the float32 input == hwsim's engine on the same input quantized by hwsim."""
    x = np.asarray(x, dtype=np.float32)
    expected = output_array(model, Engine(model).run(quantize_input(model, x)).output)
    got = session(to_onnx(model, qdq=qdq), optimize).run(None, {"input": x})[0]
    assert got.shape == expected.shape and (got.dtype == np.float32) == model.output_dequantize
    bad = got != expected
    assert not bad.any(), (f"{int(bad.sum())} of {bad.size} outputs differ; routes "
                           f"{export_routes(model, qdq=qdq)}")


def float_input(model, rng, n=3):
    """Float inputs that cover the input quantizer's range, its saturation, and exact ties."""
    enc = model.input_enc
    shape = (n,) + tuple(model.input_shape)
    if isinstance(enc, BinaryAct):
        return rng.normal(0, 1, shape).astype(np.float32) * (rng.random(shape) > 0.1)
    lo, hi = enc.code_range()
    codes = rng.uniform(lo - 3, hi + 3, shape) - enc.zero_point
    codes = np.where(rng.random(shape) < 0.3, np.round(codes) + 0.5, codes)      # ties of every rounding mode
    return (codes * enc.scale).astype(np.float32)


def odd_scale(rng, lo, hi):
    """A scale that is not a power of two: 2^k times a random mantissa."""
    return float(2.0 ** int(rng.integers(lo, hi + 1)) * rng.uniform(1.0, 2.0))


# ------------------------------------------------------------------------------------ shipped models

def dataset_for(model):
    """The shipped test set whose samples have the model's input shape (8x8 digits, 28x28 MNIST)."""
    for name in ("digits_test.npz", "mnist_test.npz", "digits_test_nhwc.npz"):
        x = np.load(ROOT / "models" / name)["x"]
        if tuple(x.shape[1:]) == tuple(model.input_shape):
            return x
    raise AssertionError(f"no shipped data set of shape {model.input_shape}")


@pytest.mark.parametrize("path", sorted(glob.glob(str(ROOT / "models" / "*.qnn"))), ids=lambda p: Path(p).stem)
def test_shipped_models_bit_exact(path):
    model = load_model(path)
    assert_exact(model, dataset_for(model))


def test_mobilenet_mnist_exports_every_op():
    """The shipped MobileNet (HardSwish / HardSigmoid luts, SE gating muls with broadcasting, residual adds, a
    float output), exported and run on the MNIST test set: bit for bit the engine's output."""
    model = load_model(ROOT / "models" / "mobilenet_mnist.qnn")
    assert {"lut", "mul", "add"} <= {lay.op for lay in model.layers}
    routes = export_routes(model)
    assert {routes[lay.name] for lay in model.layers if lay.op == "lut"} == {"codes"}
    assert {routes[lay.name] for lay in model.layers if lay.op == "mul"} == {"integer"}
    x = np.load(ROOT / "models" / "mnist_test.npz")["x"]
    assert x.shape[1:] == (1, 28, 28)
    assert_exact(model, x)


def test_shipped_u8_routes_and_file(tmp_path):
    model = load_model(ROOT / "models" / "lenet_digits_u8.qnn")
    out = tmp_path / "u8.onnx"
    export_onnx(model, out)
    proto = onnx.load(out)
    onnx.checker.check_model(proto)
    routes = export_routes(model)
    # float64 requantization: ORT's fused kernels compute in float32, which provably rounds the same only in
    # conv1 (5-bit inputs: every float32 product acc * M is exact); the others take the exact integer route
    assert routes["conv1"] == "qdq" and routes["pool1"] == "codes"
    assert routes["conv2"] == "integer: requant float64 (float32 could round differently)"
    names = {o for n in proto.graph.node for o in n.output}
    assert {"conv1", "pool1", "conv2", "flatten", "fc1", "fc2"} <= names      # every hwsim tensor, by name
    assert [o.name for o in proto.graph.output] == ["fc2"]


# ------------------------------------------------------------------------------------ factory models

@pytest.mark.parametrize("seed", range(40))
def test_factory_models(seed):
    model = random_model(seed, requant=ALL_MODES)
    rng = np.random.default_rng(seed)
    x = float_input(model, rng)
    assert_exact(model, x, qdq=True)
    assert_exact(model, x, qdq=False)


@pytest.mark.parametrize("seed", range(40, 55))
def test_factory_models_int64_accumulators(seed, monkeypatch):
    """The im2col + int64 MatMul accumulator (taken when partial sums may exceed 2^24) on the same models."""
    monkeypatch.setattr(onnx_export, "F32_EXACT", 0)
    model = random_model(seed, requant=ALL_MODES)
    assert_exact(model, float_input(model, np.random.default_rng(seed)), qdq=False)


@pytest.mark.parametrize("name, limit", [("u8", 1 << 20), ("knq", 1 << 16)])
def test_float32_accumulator_in_chunks(name, limit, monkeypatch):
    """Layers whose sums may pass the float32-exact limit (lowered here): float32 Conv / Gemm over chunks of
    input channels, summed in int64, or the int64 im2col + MatMul when one channel alone may pass it."""
    monkeypatch.setattr(onnx_export, "F32_EXACT", limit)
    model = load_model(ROOT / "models" / f"lenet_digits_{name}.qnn")
    ops = [n.op_type for n in to_onnx(model, qdq=False).graph.node]
    assert ops.count("Conv") + ops.count("Gemm") > 4                 # 2 conv + 2 dense layers: some chunked
    assert ("MatMul" in ops) == (name == "knq")                      # knq's conv2: a channel alone passes 2^16
    assert_exact(model, dataset_for(model)[:100], qdq=False)


def test_integer_route_needs_no_graph_optimization():
    for seed in range(5):
        model = random_model(seed, requant=ALL_MODES)
        assert_exact(model, float_input(model, np.random.default_rng(seed)), qdq=False, optimize=False)


# ------------------------------------------------------------------------------------ QDQ route

def uniform_weights(rng, shape, per_channel):
    co = shape[0]
    kind = rng.choice(["uniform", "uniform_zp", "codebook", "ternary", "binary", "pow2"])
    n = co if per_channel else 1
    scales = tuple(odd_scale(rng, -9, -4) for _ in range(n))
    if kind.startswith("uniform"):
        bits = int(rng.integers(2, 9))
        lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
        zp = (0,) if kind == "uniform" or bits == 8 else tuple(int(rng.integers(lo, hi + 1)) for _ in range(n))
        return UniformW(bits, True, scales, zp), rng.integers(lo, hi + 1, size=shape), None
    if kind == "codebook":
        enc = CodebookW(int(rng.integers(1, 5)), 8, 0, (scales[0],))
        entries = int(rng.integers(1, (1 << enc.index_bits) + 1))
        return enc, rng.integers(0, entries, size=shape), rng.integers(-128, 128, size=(1, entries))
    if kind == "ternary":
        return TernaryW(scales), rng.integers(-1, 2, size=shape), None
    if kind == "binary":
        return BinaryW(scales), rng.integers(0, 2, size=shape), None
    return Pow2W(4, scales), rng.integers(-8, 8, size=shape), None


def uniform_act(rng, max_bits=8):
    bits = int(rng.integers(2, max_bits + 1))
    signed = bool(rng.integers(2))
    lo = -(1 << (bits - 1)) if signed else 0
    zp = int(rng.integers(lo, lo + (1 << bits))) if rng.integers(2) else (0 if signed else lo)
    return UniformAct(bits, signed, odd_scale(rng, -7, -1), zp)


def qdq_model(seed, narrow=True) -> Model:
    """Conv / maxpool / add stacks and a dense head, all unsigned uniform <= 8 bits, float32 requantization.
    narrow=False: 8-bit activations only, no clip, zero-point padding (plain QDQ: Q / DQ around float ops)."""
    rng = np.random.default_rng(seed)

    def uniform_act(rng):   # unsigned: ORT on x86 fuses int8 QDQ convolutions only in some graph contexts
        bits = int(rng.integers(2, 9)) if narrow else 8
        zp = int(rng.integers(0, 1 << bits)) if rng.integers(2) else 0
        return UniformAct(bits, False, odd_scale(rng, -7, -1), zp)

    c, h, w = int(rng.integers(1, 5)), int(rng.integers(4, 9)), int(rng.integers(4, 9))
    input_enc = uniform_act(rng)
    layers, shape, enc, name = [], (c, h, w), input_enc, "input"
    lay_in_enc = [input_enc]

    def mac_attrs(lay):
        """requant float32 with, mostly, the multiplier ORT itself computes from the float32 scales (what the
        ONNX importer writes), so that the fused kernels can reproduce it; else hwsim's own multiplier."""
        lay.attrs["requant"] = "float32"
        if rng.integers(3) == 0 and narrow:
            lay.attrs["clip"] = sorted(int(v) for v in rng.integers(-40, 200, size=2))
        if rng.integers(4):
            co = lay.weight.shape[0]
            ws = lay.weight_enc.channel_scales(co).astype(np.float32)
            m = (np.float32(lay_in_enc[0].scale) * ws).astype(np.float32) / np.float32(lay.out_enc.scale)
            lay.attrs["multiplier"] = [float(v) for v in np.broadcast_to(m, (co,))]
        return lay

    for i in range(int(rng.integers(1, 4))):
        choice = rng.integers(6)
        if choice == 0 and min(shape[1:]) >= 2:
            lay = Layer(f"p{i}", "maxpool", [name], {"kernel": [2, 2], "stride": [int(rng.integers(1, 3))] * 2})
        elif choice == 1:   # ORT's QLinearAdd (DQ, DQ -> Add -> Q), or a one-input rescale (DQ -> Q)
            inputs = [name]
            if rng.integers(2):
                wenc, wcodes, table = uniform_weights(rng, (shape[0], shape[0], 1, 1), True)
                lay_in_enc[0] = enc
                layers.append(mac_attrs(Layer(f"b{i}", "conv2d", [name], {}, uniform_act(rng), wcodes, wenc, table)))
                inputs = [name, f"b{i}"]
            lay = Layer(f"a{i}", "add", inputs, {"requant": "float32", "rescale": "dequantize"}, uniform_act(rng))
            if rng.integers(2) and narrow:
                lay.attrs["clip"] = sorted(int(v) for v in rng.integers(-40, 200, size=2))
        else:
            groups = int(rng.choice([g for g in (1, shape[0]) if shape[0] % g == 0]))
            co = groups * int(rng.integers(1, 4))
            kh, kw = int(rng.integers(1, min(3, shape[1]) + 1)), int(rng.integers(1, min(3, shape[2]) + 1))
            wenc, wcodes, table = uniform_weights(rng, (co, shape[0] // groups, kh, kw), bool(rng.integers(2)))
            out_enc = uniform_act(rng)
            attrs = {"stride": [int(rng.integers(1, 3)), int(rng.integers(1, 3))], "groups": groups,
                     "padding": [int(rng.integers(0, k)) for k in (kh, kw, kh, kw)]}
            if rng.integers(2) and narrow:   # padding with a code other than the zero point: an explicit Pad
                lo, hi = enc.code_range()
                attrs["pad_code"] = int(rng.integers(lo, hi + 1))
            bias = rng.integers(-3000, 3000, size=co) if rng.integers(3) else None
            lay_in_enc[0] = enc
            lay = mac_attrs(Layer(f"c{i}", "conv2d", [name], attrs, out_enc, wcodes, wenc, table, bias, 32))
        layers.append(lay)
        Model("qdq", (c, h, w), input_enc, list(layers)).check()
        shape, enc, name = lay.out_shape, lay.out_enc, lay.name
    layers.append(Layer("flat", "flatten", [name]))
    k = int(np.prod(shape))
    co = int(rng.integers(1, 6))
    wenc, wcodes, table = uniform_weights(rng, (co, k), bool(rng.integers(2)))
    out_enc = uniform_act(rng)
    lay_in_enc[0] = enc
    layers.append(mac_attrs(Layer("fc", "dense", ["flat"], {}, out_enc, wcodes, wenc, table,
                                  rng.integers(-3000, 3000, size=co), 32)))
    return Model("qdq", (c, h, w), input_enc, layers).check()


@settings(max_examples=60, deadline=None, derandomize=True)
@given(st.integers(0, 2**32 - 1))
def test_qdq_route_is_exact(seed):
    model = qdq_model(seed)
    routes = export_routes(model)
    for lay in model.layers:
        if lay.op in ("conv2d", "dense"):
            # ORT's own multiplier is always reproducible; hwsim's float64-computed one is, for most channels
            assert routes[lay.name] == "qdq" or (lay.attr("multiplier") is None and "no float32 weight scale"
                                                 in routes[lay.name]), routes
        if lay.op == "add":
            assert routes[lay.name] == "qdq", routes
    assert_exact(model, float_input(model, np.random.default_rng(seed)))


def test_qdq_route_is_taken():
    counts = {"qdq": 0, "other": 0}
    for seed in range(30):
        model = qdq_model(seed)
        for lay in model.layers:
            if lay.op in ("conv2d", "dense"):
                counts["qdq" if export_routes(model)[lay.name] == "qdq" else "other"] += 1
    assert counts["qdq"] >= 3 * counts["other"], counts


def optimized_ops(proto, tmp_path):
    """The op types of ORT's optimized graph (the fused kernels it will run)."""
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    opts.optimized_model_filepath = str(tmp_path / "opt.onnx")
    ort.InferenceSession(proto.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    return [n.op_type for n in onnx.load(tmp_path / "opt.onnx").graph.node]


def test_qdq_layers_are_fused_by_ort(tmp_path):
    """Every conv / dense layer exported as QDQ runs on ORT's integer kernels (QLinearConv / QGemm): their
    exactness rests on that, and an unfused float Conv would mostly, but not always, round the same."""
    fused = 0
    for seed in range(40):
        model = qdq_model(seed)
        routes = export_routes(model)
        n_qdq = sum(routes[lay.name] == "qdq" for lay in model.layers if lay.op in ("conv2d", "dense"))
        ops = optimized_ops(to_onnx(model), tmp_path)
        n_fused = sum(op in ("QLinearConv", "QGemm") for op in ops)
        # the integer route's float32 Conv / Gemm (exact under 2^24) is the only other source of these ops
        n_float = sum(routes[lay.name].startswith("integer") for lay in model.layers if lay.op in ("conv2d", "dense"))
        assert n_fused == n_qdq and sum(op in ("Conv", "Gemm", "MatMul") for op in ops) <= n_float, (routes, ops)
        fused += n_fused
    assert fused >= 40


def test_weight_scale_search_reproduces_ort_multiplier():
    rng = np.random.default_rng(0)
    for _ in range(200):
        xs, ys = np.float32(odd_scale(rng, -8, 0)), np.float32(odd_scale(rng, -8, 0))
        w = np.float32(rng.uniform(1e-3, 1e-1, 16)).astype(np.float32)
        target = (xs * w).astype(np.float32) / ys                        # ORT: float32 product, then quotient
        start = (target.astype(np.float64) * float(ys) / float(xs)).astype(np.float32)   # not w itself
        ws = find_weight_scales(xs, ys, target, start)
        assert ws is not None
        assert ((xs * ws).astype(np.float32) / ys == target).all()


def test_wide_uint8_weights_avoid_the_u8s8_kernel():
    """uint8 activations with weights beyond +-64 go out as uint8 weights (zero point 128), so non-VNNI x86
    kernels cannot saturate pairs of u8 x s8 products in int16."""
    for seed in range(40):
        model = qdq_model(seed)
        proto = to_onnx(model)
        inits = {t.name: t for t in proto.graph.initializer}
        for lay in model.layers:
            if lay.op not in ("conv2d", "dense"):
                continue
            if export_routes(model)[lay.name] != "qdq":
                continue
            w = Engine(model).plans[lay.name].w_values.astype(np.int64)
            wq = next(t for name, t in inits.items() if name.startswith(f"{lay.name}/weight/"))
            unsigned = not lay.in_encs[0].signed and np.abs(w).max() > 64
            assert (wq.data_type == onnx.TensorProto.UINT8) == unsigned


# ------------------------------------------------------------------------------------ integer route

def act_enc(rng, allow_binary=True):
    kind = rng.choice(["uniform", "uniform16", "enq", "knq", "knq_big"] + (["binary"] if allow_binary else []))
    if kind == "uniform":
        return uniform_act(rng)
    if kind == "uniform16":
        return UniformAct(int(rng.integers(9, 17)), bool(rng.integers(2)), odd_scale(rng, -12, -4), 0)
    if kind == "enq":
        qm = int(rng.integers(2, 13))
        return EnqAct(int(rng.integers(1, qm + 1)), qm, int(rng.integers(0, 8)))
    if kind.startswith("knq"):
        t = int(rng.integers(1, 4))
        top = 60000 if kind == "knq_big" else 300      # hwsim's MAC takes operands below 2^16
        cents = np.sort(rng.choice(np.arange(-top // 4, top), size=1 << t, replace=False))
        return KnqAct(t, tuple(int(v) for v in cents), (), int(rng.integers(0, 8)))
    return BinaryAct(odd_scale(rng, -2, 1))


def any_weights(rng, shape, in_binary):
    if in_binary and rng.integers(2):
        return BinaryW(tuple(odd_scale(rng, -6, -1) for _ in range(shape[0]))), rng.integers(0, 2, size=shape), None
    if rng.integers(4) == 0:
        bits = int(rng.integers(9, 17))
        scales = (odd_scale(rng, -14, -8),)
        return UniformW(bits, True, scales, (0,)), rng.integers(-(1 << (bits - 1)), 1 << (bits - 1), size=shape), None
    if rng.integers(4) == 0:
        return Pow2W(5, (odd_scale(rng, -16, -10),)), rng.integers(-16, 16, size=shape), None
    return uniform_weights(rng, shape, bool(rng.integers(2)))


def mac_layer(rng, name, src, shape, enc, op, requant, residual=False):
    in_binary = isinstance(enc, BinaryAct)
    if residual:
        groups, co, kh, kw = 1, shape[0], 1, 1
        wshape = (co, co, 1, 1)
    elif op == "conv2d":
        groups = int(rng.choice([g for g in (1, 2, shape[0]) if shape[0] % g == 0]))
        co = groups * int(rng.integers(1, 4))
        kh, kw = int(rng.integers(1, min(3, shape[1]) + 1)), int(rng.integers(1, min(3, shape[2]) + 1))
        wshape = (co, shape[0] // groups, kh, kw)
    else:
        co = int(rng.integers(1, 5))
        wshape = (co, shape[0])
    wenc, wcodes, table = any_weights(rng, wshape, in_binary)
    out_enc = act_enc(rng, allow_binary=not residual)
    acc_bits = int(rng.choice([12, 16, 20, 32, 32]))
    attrs = {"requant": requant, "acc_bits": acc_bits, "overflow": str(rng.choice(["wrap", "saturate"]))}
    u8 = isinstance(enc, UniformAct) and enc.bits == 8 and not enc.signed
    depthwise = op == "conv2d" and wshape[1] == 1 and co == groups
    if u8 and not depthwise and rng.integers(2):     # ORT's non-VNNI u8 x s8 kernel, pair saturation and all
        attrs["datapath"] = "x86_pair_sat16"
        zp = tuple(int(z) for z in rng.integers(-3, 4, size=co if rng.integers(2) else 1))
        wenc, wcodes, table = UniformW(8, True, (odd_scale(rng, -9, -5),), zp), rng.integers(-128, 128, wshape), None
    if not residual and rng.integers(4) == 0:        # a comparator bank on the accumulator (QONNX MultiThreshold)
        base = uniform_act(rng, 4)
        lo, hi = base.code_range()
        n_rows, n_thresholds = co if rng.integers(2) else 1, int(rng.integers(1, hi - lo + 1))
        rows = np.sort(rng.integers(-3000, 3000, size=(n_rows, n_thresholds)))
        out_enc = ThresholdAct(base.bits, base.signed, base.scale, base.zero_point,
                               tuple(tuple(int(t) for t in r) for r in rows))
    if op == "conv2d":
        if not residual:
            attrs.update({"stride": [int(rng.integers(1, 3)), int(rng.integers(1, 3))], "groups": groups,
                          "padding": [int(rng.integers(0, k)) for k in (kh, kw, kh, kw)]})
        if in_binary:
            attrs["binary_pad"] = str(rng.choice(["+1", "-1", "zero"]))
        elif rng.integers(2):
            lo, hi = enc.code_range()
            attrs["pad_code"] = int(rng.integers(lo, hi + 1))
    if requant == "shift":
        attrs["multiplier"] = [2.0 ** -int(rng.integers(-2, 14)) for _ in range(co if rng.integers(2) else 1)]
    elif rng.integers(4) == 0:
        attrs["multiplier"] = [float(rng.uniform(1e-5, 0.5)) for _ in range(co)]
    if not isinstance(out_enc, (BinaryAct, ThresholdAct)) and rng.integers(2):
        attrs["clip"] = sorted(int(v) for v in rng.integers(-300, 3000, size=2))
    bias = rng.integers(-(1 << 10), 1 << 10, size=co) if rng.integers(2) else None
    return Layer(name, op, [src], attrs, out_enc, wcodes, wenc, table, bias, 16)


def general_model(seed) -> Model:
    rng = np.random.default_rng(seed)
    c, h, w = int(rng.integers(1, 4)), int(rng.integers(3, 7)), int(rng.integers(3, 7))
    if rng.integers(5) == 0:
        input_enc = BinaryAct(1.0)
    else:
        input_enc = uniform_act(rng, 8) if rng.integers(3) else UniformAct(12, bool(rng.integers(2)),
                                                                            odd_scale(rng, -8, -2), 0)
    rounding = str(rng.choice(ROUNDINGS))
    division = str(rng.choice(["float64", "float32"]))
    layers, shape, enc, name = [], (c, h, w), input_enc, "input"
    for i in range(int(rng.integers(1, 4))):
        op = str(rng.choice(["conv2d", "conv2d", "maxpool", "avgpool", "relu", "clip", "add", "concat", "reshape"]))
        if op in ("avgpool", "relu", "clip", "add") and isinstance(enc, BinaryAct):
            op = "conv2d"
        if op in ("maxpool", "avgpool") and min(shape[1:]) < 2:
            op = "conv2d"
        requant = str(rng.choice(ALL_MODES))
        lname = f"l{i}"
        if op == "conv2d":
            lay = mac_layer(rng, lname, name, shape, enc, "conv2d", requant)
        elif op == "maxpool":
            lay = Layer(lname, "maxpool", [name], {"kernel": [2, 2], "stride": [int(rng.integers(1, 3))] * 2,
                                                   "padding": [int(rng.integers(0, 2)), 0, 0, int(rng.integers(0, 2))]})
        elif op == "avgpool":
            glob_ = bool(rng.integers(4) == 0)
            ort_pool = isinstance(enc, UniformAct) and rng.integers(2)
            attrs = {"rounding": "ort_float32" if ort_pool else str(rng.choice(ROUNDINGS)),
                     "count_include_pad": bool(rng.integers(2))}
            kw = int(rng.integers(1, 3))
            attrs.update({"global": True} if glob_ else {"kernel": [2, kw], "stride": [1, 2],
                                                         "padding": [1, 0, 0, int(rng.integers(0, kw))]})
            out_enc = None
            if ort_pool:        # ONNX Runtime's QLinearAveragePool requantizes to its own encoding
                out_enc = uniform_act(rng)
                if rng.integers(2):
                    attrs["float_zero_point"] = out_enc.zero_point + 128
            lay = Layer(lname, "avgpool", [name], attrs, out_enc)
        elif op == "relu":
            lay = Layer(lname, "relu", [name])
        elif op == "clip":
            lo, hi = enc.value_range()
            a, b = sorted(int(v) for v in rng.integers(lo - 2, hi + 3, size=2))
            lay = Layer(lname, "clip", [name], {"min": a, "max": b})
        elif op == "add":   # a residual branch: a 1x1 conv back to the same shape, added to the trunk
            branch = mac_layer(rng, lname + "b", name, shape, enc, "conv2d", str(rng.choice(ALL_MODES)),
                               residual=True)
            layers.append(branch)
            mode = requant if requant != "shift" else "float64"   # shift needs power-of-two scale ratios
            inputs = [[name], [name, lname + "b"], [lname + "b", name, name]][int(rng.integers(3))]
            rescale = str(rng.choice(["ratio", "dequantize"])) if mode in ("float32", "float64") else "ratio"
            lay = Layer(lname, "add", inputs, {"requant": mode, "rescale": rescale}, act_enc(rng, False))
            if rng.integers(2):
                lay.attrs["clip"] = [-5, int(rng.integers(0, 200))]
        elif op == "concat":
            lay = Layer(lname, "concat", [name, name])
        else:
            lay = Layer(lname, "reshape", [name], {"shape": [shape[0] * shape[1], shape[2], 1]})
        layers.append(lay)
        Model("general", (c, h, w), input_enc, list(layers), input_rounding=rounding,
              input_division=division).check()
        shape, enc, name = lay.out_shape, lay.out_enc, lname
    layers.append(Layer("flat", "flatten", [name]))
    layers.append(mac_layer(rng, "fc", "flat", (int(np.prod(shape)),), enc, "dense", str(rng.choice(ALL_MODES))))
    return Model("general", (c, h, w), input_enc, layers, input_rounding=rounding, input_division=division).check()


def engine_runs(model, x):
    try:
        Engine(model).run(quantize_input(model, x))
        return True
    except HwsimError:     # e.g. a fixed-point requantizer handed more than int32: hwsim itself refuses
        return False


@settings(max_examples=120, deadline=None, derandomize=True)
@given(st.integers(0, 2**32 - 1))
def test_general_models_are_exact(seed):
    model = general_model(seed)
    x = float_input(model, np.random.default_rng(seed))
    if not engine_runs(model, x):
        return
    assert_exact(model, x)


def test_narrow_accumulators_really_overflow_and_match():
    """The wrap (Mod) and saturate (Loop) accumulators on layers whose sums do leave the register."""
    rng = np.random.default_rng(5)
    tested = {"wrap": 0, "saturate": 0}
    for seed in range(400):
        model = general_model(seed)
        x = float_input(model, rng, n=4)
        try:
            trace = Engine(model).run(quantize_input(model, x)).trace
        except HwsimError:
            continue
        hit = [lay for lay, cnt in zip(model.layers, trace.layers) if getattr(cnt, "overflows", 0)]
        if not hit:
            continue
        assert_exact(model, x)
        for lay in hit:
            tested[lay.attr("overflow")] += 1
        if min(tested.values()) >= 4:
            break
    assert min(tested.values()) >= 4, tested


# ------------------------------------------------------------------------------------ inputs and outputs

@pytest.mark.parametrize("rounding", ROUNDINGS)
@pytest.mark.parametrize("scale", [2.0 ** -4, 0.0371])
def test_input_quantizer(rounding, scale):
    model = Model("q", (1, 2, 64), UniformAct(7, True, scale, -3),
                  [Layer("r", "reshape", ["input"], {"shape": [128]})], input_rounding=rounding).check()
    rng = np.random.default_rng(1)
    x = np.concatenate([float_input(model, rng, 20), (np.arange(-70, 70, 0.5) * scale)[None].repeat(2, 0)
                        .reshape(-1)[:2 * 128].reshape(2, 1, 2, 64)])
    assert_exact(model, x)
    assert_exact(model, x, optimize=False)


def test_input_division_float32_uses_quantize_linear():
    model = Model("q", (8,), UniformAct(8, False, 0.0371, 3), [Layer("r", "relu", ["input"])]).check()
    model.input_division = "float32"
    proto = to_onnx(model)
    assert proto.graph.node[0].op_type == "QuantizeLinear"
    x = (np.random.default_rng(0).uniform(-1, 10, (500, 8))).astype(np.float32)
    got = session(proto).run(None, {"input": x})[0]
    ref = np.clip(np.clip(np.rint(x / np.float32(0.0371)) + 3, 0, 255), 3, 255)   # float32 division, relu
    assert (got == ref).all()


def test_output_dequantize():
    model = qdq_model(11)
    model.output_dequantize = True
    x = float_input(model, np.random.default_rng(0))
    codes = Engine(model).run(quantize_input(model, x)).output
    enc = model.layers[-1].out_enc
    got = session(to_onnx(model)).run(None, {"input": x})[0]
    assert got.dtype == np.float32
    assert (got == (codes - enc.zero_point).astype(np.float32) * np.float32(enc.scale)).all()


# ------------------------------------------------------------------------------------ errors and the CLI

def test_operands_beyond_the_mac_pe_are_refused_before_export():
    """A dense layer whose exact sum could reach 2^63 (2^17 KNQ values up to 2^31 times -2^15) cannot be
    exported as int64 arithmetic; hwsim's graph check already refuses it (operands must stay below 2^16)."""
    k = 1 << 17
    knq = KnqAct(1, (0, (1 << 31) - 1))
    first = Layer("d1", "dense", ["input"], {"requant": "float64"}, knq, np.ones((k, 1), np.int64),
                  UniformW(2, True, (1.0,), (0,)))
    second = Layer("d2", "dense", ["d1"], {"requant": "float64", "acc_bits": 48}, UniformAct(8),
                   np.full((1, k), -16), Pow2W(5, (1.0,)))
    with pytest.raises(HwsimError) as exc:
        Model("big", (1,), UniformAct(8), [first, second]).check()
    assert exc.value.field == "layers.d2.inputs" and "2^16" in exc.value.message


def test_model_hwsim_cannot_run_is_refused():
    model = qdq_model(1)
    fc = model.layers[-1]
    fc.attrs = {**fc.attrs, "requant": "shift", "multiplier": [0.3] * fc.weight.shape[0]}
    with pytest.raises(HwsimError) as exc:
        to_onnx(model)
    assert exc.value.field == "layers.fc" and "power-of-two" in exc.value.message


def test_cli_export(tmp_path):
    from simulator.cli import main
    out = tmp_path / "m.onnx"
    assert main(["export", str(ROOT / "models" / "lenet_digits_knq.qnn"), "-o", str(out)]) == 0
    model = load_model(ROOT / "models" / "lenet_digits_knq.qnn")
    x = np.load(ROOT / "models" / "digits_test.npz")["x"][:50]
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert (sess.run(None, {"input": x})[0] == Engine(model).run(quantize_input(model, x)).output).all()
    bad = tmp_path / "truncated.qnn"
    bad.write_bytes((ROOT / "models" / "lenet_digits_knq.qnn").read_bytes()[:-5])
    assert main(["export", str(bad), "-o", str(tmp_path / "bad.onnx")]) == 2
    assert not (tmp_path / "bad.onnx").exists()


# ------------------------------------------------------------------------------------ import -> export

def test_pair_saturation_datapath():
    """ORT's non-VNNI u8 x s8 arithmetic (datapath x86_pair_sat16), reproduced on any machine by integer ops."""
    model = load_model(ROOT / "models" / "lenet_digits_ort.qnn")
    rng = np.random.default_rng(0)
    for lay in model.layers:
        if lay.op in ("conv2d", "dense"):
            lay.attrs["datapath"] = "x86_pair_sat16"
            lay.weight = rng.integers(-128, 128, size=lay.weight.shape)     # full range: pairs do saturate
    model.check()
    x = np.load(ROOT / "models" / "digits_test.npz")["x"][:200]
    trace = Engine(model).run(quantize_input(model, x)).trace
    assert sum(getattr(c, "pair_saturations", 0) for c in trace.layers) > 0      # the saturation does happen
    assert all(r.startswith("integer: datapath") for n, r in export_routes(model).items()
               if model.layer(n).op in ("conv2d", "dense"))
    assert_exact(model, x)


def test_ort_model_import_export_roundtrip(tmp_path):
    """ONNX Runtime's own QDQ LeNet -> hwsim import -> export: ORT runs the export exactly as the original."""
    importer = pytest.importorskip("simulator.importers.onnx_import")
    src = ROOT / "models" / "lenet_digits_ort_qdq.onnx"
    if not src.exists():
        pytest.skip("no ORT example model")
    imported = importer.import_onnx(str(src))   # the datapath of this CPU's ORT ("host")
    routes = export_routes(imported)
    # a VNNI (or non-x86) CPU: plain QDQ; x86 without VNNI: the MAC layers as the pair-saturating datapath's Loops
    allowed = {"qdq", "codes"} | ({"integer: datapath x86_pair_sat16"} if importer.host_int8_path() == "avx2"
                                  else set())
    assert set(routes.values()) <= allowed, routes
    x = np.load(ROOT / "models" / "digits_test.npz")["x"]
    x = x.reshape((len(x),) + tuple(imported.input_shape)).astype(np.float32)
    sess = ort.InferenceSession(str(src), providers=["CPUExecutionProvider"])
    original = sess.run(None, {sess.get_inputs()[0].name: x})[0]
    exported = session(to_onnx(imported)).run(None, {"input": x})[0]
    assert (exported == original).all()
    assert_exact(imported, x)


def test_import_export_roundtrip(tmp_path):
    """hwsim QDQ-route model -> export -> import: the import computes what the original computes."""
    importer = pytest.importorskip("simulator.importers.onnx_import")
    done = 0
    for seed in range(40):
        model = qdq_model(seed, narrow=False)
        model.input_division = "float32"          # the input quantizer as a plain QuantizeLinear
        if not set(export_routes(model).values()) <= {"qdq", "codes"}:
            continue
        path = tmp_path / f"m{seed}.onnx"
        export_onnx(model, path)
        imported = importer.import_onnx(str(path))
        x = float_input(model, np.random.default_rng(seed)).astype(np.float32)
        want = Engine(model).run(quantize_input(model, x)).output
        assert (Engine(imported).run(quantize_input(imported, x)).output == want).all()
        assert_exact(imported, x)
        done += 1
    assert done >= 5


# ------------------------------------------------------------------------------------ elementwise and resize layers

def random_lut(rng, name, src, in_enc, out_enc, channels):
    """A lut from `in_enc` codes to random `out_enc` codes: one table or one per channel."""
    lo, hi = in_enc.code_range()
    olo, ohi = out_enc.code_range()
    return Layer(name, "lut", [src], {}, out_enc, table=rng.integers(olo, ohi + 1, size=(channels, hi - lo + 1)))


def code_input(model, rng, n=4):
    """Float inputs that quantize to every code of the input encoding (uniformly random codes)."""
    enc = model.input_enc
    lo, hi = enc.code_range()
    codes = rng.integers(lo, hi + 1, size=(n,) + tuple(model.input_shape))
    return ((codes - enc.zero_point) * enc.scale).astype(np.float32)


@pytest.mark.parametrize("in_enc, out_enc, per_channel, shape", [
    (UniformAct(8, False, 0.05, 7), UniformAct(8, True, 0.1, -3), False, (3, 4, 5)),
    (UniformAct(8, False, 0.05, 7), UniformAct(8, False, 0.1, 9), True, (3, 4, 5)),
    (UniformAct(8, True, 0.03, -5), UniformAct(12, True, 0.01, 100), True, (5, 2, 3)),
    (UniformAct(4, True, 0.25, 0), UniformAct(16, False, 0.01, 300), True, (6,)),
    (UniformAct(11, True, 0.25, 3), UniformAct(6, False, 0.3, 1), True, (2, 3, 3)),
])
def test_lut_exports_as_gather(in_enc, out_enc, per_channel, shape):
    rng = np.random.default_rng(shape[0])
    lay = random_lut(rng, "lut", "input", in_enc, out_enc, shape[0] if per_channel else 1)
    model = Model("lut", shape, in_enc, [lay]).check()
    assert export_routes(model) == {"lut": "codes"}
    assert "Gather" in [n.op_type for n in to_onnx(model).graph.node]
    assert_exact(model, code_input(model, rng, 20))
    assert_exact(model, code_input(model, rng, 5), optimize=False)


def mul_model(rng, mode, a_enc, b_enc, out_enc, gate_first=False, shape=(3, 4, 5)):
    """input (a_enc) -> lut to b_enc -> global maxpool [C, 1, 1] -> mul(a, gate) (or mul(gate, a))."""
    layers = [random_lut(rng, "b", "input", a_enc, b_enc, shape[0]),
              Layer("gate", "maxpool", ["b"], {"kernel": list(shape[1:]), "stride": list(shape[1:])})]
    inputs = ["gate", "input"] if gate_first else ["input", "gate"]
    layers.append(Layer("mul", "mul", inputs, {"requant": mode}, out_enc))
    return Model("mul", shape, a_enc, layers).check()


@pytest.mark.parametrize("mode", ["float32", "float64"])
@pytest.mark.parametrize("case", range(8))
def test_mul_broadcasting_is_exact(mode, case):
    rng = np.random.default_rng(case)
    if case == 0:      # power-of-two scales: exact ties of the half-to-even rounding
        encs = UniformAct(8, False, 0.5, 3), UniformAct(8, True, 0.25, 0), UniformAct(8, False, 1.0, 100)
    elif case == 1:    # a tiny output scale: products far outside int32 (INT32_MIN in float32), saturation
        encs = UniformAct(8, False, 0.5, 3), UniformAct(8, True, 0.25, -2), UniformAct(8, True, 1e-9, 0)
    elif case == 2:    # 16-bit operands: products beyond 2^24 (float32 rounds them), 16-bit output
        encs = UniformAct(16, True, 0.01, 7), UniformAct(16, False, 0.02, 0), UniformAct(16, True, 0.5, -9)
    else:
        encs = uniform_act(rng), uniform_act(rng), uniform_act(rng, 16)
    model = mul_model(rng, mode, *encs, gate_first=bool(case % 2))
    assert export_routes(model)["mul"] == "integer"
    assert_exact(model, code_input(model, rng, 30))


def test_mul_of_equal_shapes():
    rng = np.random.default_rng(3)
    a = UniformAct(8, False, 0.05, 7)
    layers = [random_lut(rng, "b", "input", a, UniformAct(7, True, 0.07, 2), 3),
              Layer("mul", "mul", ["b", "input"], {"requant": "float32"}, UniformAct(8, True, 0.01, -1))]
    model = Model("mul", (3, 4, 5), a, layers).check()
    assert_exact(model, code_input(model, rng, 30))


@pytest.mark.parametrize("requant, rescale", [("float32", "dequantize"), ("float64", "dequantize"),
                                              ("float32", "ratio"), ("float64", "ratio"),
                                              ("fixed_double", "ratio"), ("fixed_single", "ratio"),
                                              ("shift", "ratio")])
def test_add_broadcasting_is_exact(requant, rescale):
    rng = np.random.default_rng(len(requant) + len(rescale))
    pow2 = requant == "shift"
    a = UniformAct(8, False, 0.125 if pow2 else 0.047, 11)
    b = UniformAct(8, True, 0.25 if pow2 else 0.031, -4)
    out = UniformAct(8, False, 0.25 if pow2 else 0.061, 120)
    layers = [random_lut(rng, "b", "input", a, b, 3),
              Layer("gate", "maxpool", ["b"], {"kernel": [4, 5], "stride": [4, 5]}),           # [3, 1, 1]
              Layer("row", "maxpool", ["input"], {"kernel": [4, 1], "stride": [4, 1]}),        # [3, 1, 5]
              Layer("add", "add", ["input", "gate", "row"], {"requant": requant, "rescale": rescale}, out)]
    model = Model("add", (3, 4, 5), a, layers).check()
    assert model.layers[-1].out_shape == (3, 4, 5)
    assert_exact(model, code_input(model, rng, 30))
    layers[-1] = Layer("add", "add", ["gate", "input"], {"requant": requant, "rescale": rescale}, out)
    model = Model("add", (3, 4, 5), a, layers).check()
    assert_exact(model, code_input(model, rng, 30))
    assert_exact(model, code_input(model, rng, 30), qdq=False)


@pytest.mark.parametrize("stride", [(2, 2), (3, 3), (2, 3), (3, 1), (1, 1)])
@pytest.mark.parametrize("enc", [UniformAct(8, False, 0.1, 17), UniformAct(8, True, 0.1, -3),
                                 UniformAct(12, True, 0.1, 5), UniformAct(16, False, 0.1, 900)])
def test_dilate_is_exact(stride, enc):
    model = Model("dil", (2, 3, 4), enc, [Layer("dil", "dilate", ["input"], {"stride": list(stride)})]).check()
    assert model.layers[0].out_shape == (2, 2 * stride[0] + 1, 3 * stride[1] + 1)
    assert export_routes(model) == {"dil": "codes"}
    assert_exact(model, code_input(model, np.random.default_rng(0), 5))


def test_dilate_then_conv_as_transposed_convolution():
    rng = np.random.default_rng(5)
    enc = UniformAct(8, False, 0.05, 9)
    wenc, wcodes, _ = UniformW(8, True, (0.01,), (0,)), rng.integers(-100, 100, size=(4, 2, 3, 3)), None
    layers = [Layer("dil", "dilate", ["input"], {"stride": [2, 2]}),
              Layer("conv", "conv2d", ["dil"], {"padding": [2, 2, 2, 2], "requant": "float32"},
                    UniformAct(8, False, 0.2, 3), wcodes, wenc)]
    model = Model("convT", (2, 4, 3), enc, layers).check()
    assert_exact(model, code_input(model, rng, 5))


RESIZE_CASES = [((5, 7), (9, 4)), ((3, 3), (7, 11)), ((4, 6), (2, 3)), ((5, 5), (1, 1)), ((1, 3), (3, 7)),
                ((6, 4), (13, 9))]


@pytest.mark.parametrize("coordinate", ["half_pixel", "pytorch_half_pixel", "asymmetric", "align_corners",
                                        "tf_half_pixel_for_nn"])
@pytest.mark.parametrize("nearest_mode", ["floor", "ceil", "round_prefer_floor", "round_prefer_ceil"])
def test_resize_nearest_is_exact(coordinate, nearest_mode):
    rng = np.random.default_rng(1)
    for enc in (UniformAct(8, False, 0.1, 3), UniformAct(16, True, 0.1, 0)):
        for (h, w), size in RESIZE_CASES:
            for scales in ([size[0] / h, size[1] / w], [2.0, 1.5]):
                lay = Layer("rs", "resize", ["input"], {"size": list(size), "scales": scales, "mode": "nearest",
                                                        "coordinate": coordinate, "nearest_mode": nearest_mode})
                model = Model("rs", (2, h, w), enc, [lay]).check()
                assert export_routes(model) == {"rs": "codes"}
                assert_exact(model, code_input(model, rng, 3))


@pytest.mark.parametrize("coordinate", ["half_pixel", "pytorch_half_pixel", "asymmetric", "align_corners",
                                        "tf_half_pixel_for_nn"])
@pytest.mark.parametrize("requant", ["float32", "float64"])
def test_resize_linear_is_exact(coordinate, requant):
    rng = np.random.default_rng(2)
    encs = [(UniformAct(8, False, 0.1, 3), UniformAct(8, False, 0.1, 3)),          # same scale: exact ties
            (UniformAct(8, False, 0.0371, 128), UniformAct(8, True, 0.0173, -7)),
            (UniformAct(12, True, 0.003, 5), UniformAct(8, False, 0.9, 0))]
    for in_enc, out_enc in encs:
        for (h, w), size in RESIZE_CASES:
            for scales in ([size[0] / h, size[1] / w], [2.0, 1.5]):
                lay = Layer("rs", "resize", ["input"], {"size": list(size), "scales": scales, "mode": "linear",
                                                        "coordinate": coordinate, "requant": requant}, out_enc)
                model = Model("rs", (2, h, w), in_enc, [lay]).check()
                assert export_routes(model) == {"rs": "integer"}
                assert_exact(model, code_input(model, rng, 3))


@pytest.mark.parametrize("signed", [False, True])
@pytest.mark.parametrize("k", [1, 2, 10, 225, 1000])
def test_softmax_ort_qlinear_is_exact(signed, k):
    rng = np.random.default_rng(k)
    for trial in range(6):
        lo = -128 if signed else 0
        in_enc = UniformAct(8, signed, float(2.0 ** rng.uniform(-8, 1)), int(rng.integers(lo, lo + 256)))
        out_zp = lo if trial % 2 else int(rng.integers(lo, lo + 256))
        out_scale = [1 / 256, 1 / 255, float(2.0 ** rng.uniform(-12, -5))][trial % 3]
        lay = Layer("sm", "softmax", ["input"], {"arithmetic": "ort_qlinear"}, UniformAct(8, signed, out_scale, out_zp))
        model = Model("sm", (k,), in_enc, [lay]).check()
        assert_exact(model, code_input(model, rng, 40))


def test_softmax_float64_is_refused_naming_the_layer():
    enc = UniformAct(8, False, 0.1, 0)
    model = Model("sm", (10,), enc, [Layer("probs", "softmax", ["input"], {"arithmetic": "float64"},
                                           UniformAct(8, False, 1 / 256, 0))]).check()
    with pytest.raises(HwsimError) as exc:
        to_onnx(model)
    assert exc.value.field == "layers.probs" and "float64" in exc.value.message


@pytest.mark.parametrize("shape", [(3, 4, 5), (6,)])
def test_output_bias(shape):
    rng = np.random.default_rng(len(shape))
    enc = UniformAct(8, False, 0.05, 7)
    model = Model("ob", shape, enc, [random_lut(rng, "lut", "input", enc, UniformAct(8, True, 0.0371, -3), 1)])
    model.output_dequantize = True
    model.output_bias = rng.normal(0, 3, shape[0]).astype(np.float32)
    model.check()
    x = code_input(model, rng, 20)
    assert_exact(model, x)
    codes = Engine(model).run(quantize_input(model, x)).output
    plain = (codes + 3).astype(np.float32) * np.float32(0.0371)
    got = session(to_onnx(model)).run(None, {"input": x})[0]
    bias = model.output_bias.reshape((1, -1) + (1,) * (len(shape) - 1))
    assert (got == plain + bias).all() and not (got == plain).all()


@pytest.mark.parametrize("perm", [[1, 2, 0], [2, 0, 1], [0, 2, 1]])
def test_transpose_is_exact(perm):
    enc = UniformAct(12, True, 0.1, 5)
    model = Model("tr", (2, 3, 4), enc, [Layer("tr", "transpose", ["input"], {"perm": perm})]).check()
    assert export_routes(model) == {"tr": "codes"}
    assert_exact(model, code_input(model, np.random.default_rng(0), 5))


def test_op_without_an_exporter_is_one_error_naming_the_layer(monkeypatch):
    monkeypatch.delitem(onnx_export.EMITTERS, "dilate")
    model = Model("dil", (2, 3, 4), UniformAct(8), [Layer("zeros", "dilate", ["input"], {"stride": [2, 2]})]).check()
    with pytest.raises(HwsimError) as exc:
        to_onnx(model)
    assert exc.value.field == "layers.zeros" and "dilate" in exc.value.message
