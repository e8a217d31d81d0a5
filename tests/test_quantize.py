"""hwsim quantize / analyze: the float reader against ONNX Runtime, every scheme bit-exact in validate, recipes,
enq:auto against its definition, and one-line errors for bad input."""

from __future__ import annotations

import numpy as np
import pytest
import yaml

from onnx_factory import random_float_model

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from simulator.cli import main  # noqa: E402
from simulator.engine import Engine, quantize_input  # noqa: E402
from simulator.errors import HwsimError  # noqa: E402
from simulator.importers.onnx.float_reader import read_float_onnx  # noqa: E402
from simulator.qnn.model_io import load_model, save_model  # noqa: E402
from simulator.quant import weights as qw  # noqa: E402
from simulator.quant.pipeline import EnqAct, Quantizer, engine_outputs, quantize  # noqa: E402
from simulator.quant.schemes import Recipe, parse_scheme  # noqa: E402
from simulator.validate import compare  # noqa: E402


def ort_run(path, x):
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x.astype(np.float32)})[0]


def save(proto, path):
    onnx.save(proto, str(path))
    return path


def lenet_bn(seed=0, softmax=False):
    """conv -> BN -> relu -> maxpool -> conv(groups 2, stride 2, SAME) -> BN -> relu -> flatten -> MatMul + Add
    -> relu -> Gemm(transB) [-> Softmax]: the shapes PyTorch exports, with BatchNormalization to fold."""
    rng = np.random.default_rng(seed)
    inits, nodes = [], []

    def const(name, arr):
        inits.append(numpy_helper.from_array(np.asarray(arr, dtype=np.float32), name))
        return name

    def bn(x, c, name):
        ins = [x, const(f"{name}_g", rng.uniform(0.5, 1.5, c)), const(f"{name}_b", rng.normal(0, 0.1, c)),
               const(f"{name}_m", rng.normal(0, 0.1, c)), const(f"{name}_v", rng.uniform(0.5, 2, c))]
        nodes.append(helper.make_node("BatchNormalization", ins, [f"{name}_y"], name=f"/{name}/BatchNormalization",
                                      epsilon=1e-5))
        return f"{name}_y"

    nodes.append(helper.make_node("Conv", ["x", const("w1", rng.normal(0, 0.4, (8, 1, 3, 3))), const("b1", rng.normal(0, .1, 8))],
                                  ["c1"], name="/conv1/Conv", pads=[1, 1, 1, 1], kernel_shape=[3, 3]))
    nodes.append(helper.make_node("Relu", [bn("c1", 8, "bn1")], ["r1"], name="/Relu"))
    nodes.append(helper.make_node("MaxPool", ["r1"], ["p1"], name="/MaxPool", kernel_shape=[2, 2], strides=[2, 2]))
    nodes.append(helper.make_node("Conv", ["p1", const("w2", rng.normal(0, 0.3, (16, 4, 3, 3)))], ["c2"],
                                  name="/conv2/Conv", group=2, strides=[2, 2], auto_pad="SAME_UPPER"))
    nodes.append(helper.make_node("Relu", [bn("c2", 16, "bn2")], ["r2"], name="/Relu_1"))
    nodes.append(helper.make_node("Flatten", ["r2"], ["f"], name="/Flatten", axis=1))
    nodes.append(helper.make_node("MatMul", ["f", const("w3", rng.normal(0, 0.2, (64, 24)))], ["m"], name="/fc1/MatMul"))
    nodes.append(helper.make_node("Add", ["m", const("b3", rng.normal(0, 0.1, 24))], ["a"], name="/fc1/Add"))
    nodes.append(helper.make_node("Relu", ["a"], ["r3"], name="/Relu_2"))
    out = "logits" if softmax else "y"
    nodes.append(helper.make_node("Gemm", ["r3", const("w4", rng.normal(0, 0.3, (10, 24))), const("b4", rng.normal(0, .1, 10))],
                                  [out], name="/fc2/Gemm", transB=1))
    if softmax:
        nodes.append(helper.make_node("Softmax", ["logits"], ["y"], name="/Softmax", axis=1))
    graph = helper.make_graph(nodes, "lenet_bn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


@pytest.fixture(scope="module")
def digits():
    d = np.load("models/digits_test.npz")
    return d["x"][:300], d["y"][:300]


@pytest.fixture(scope="module")
def bn_model(tmp_path_factory):
    path = tmp_path_factory.mktemp("q") / "lenet_bn.onnx"
    return save(lenet_bn(), path)


# ------------------------------------------------------------------------------------------ the float reader

@pytest.mark.parametrize("seed", range(12))
def test_float_reader_matches_onnxruntime(tmp_path, seed):
    proto, in_shape, desc = random_float_model(seed)
    path = save(proto, tmp_path / "m.onnx")
    x = np.random.default_rng(seed).normal(size=(5,) + in_shape)
    fg = read_float_onnx(path)
    ours = fg.run(x)[fg.output]
    ref = ort_run(path, x)
    assert ours.shape == ref.shape, desc
    np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-4 * max(1.0, np.abs(ref).max()), err_msg=desc)


def test_batchnorm_and_bias_add_fold(bn_model):
    fg = read_float_onnx(bn_model)
    assert [n.op for n in fg.nodes] == ["conv2d", "relu", "maxpool", "conv2d", "relu", "flatten", "dense", "relu",
                                        "dense"]
    assert [n.name for n in fg.mac_nodes()] == ["conv1", "conv2", "fc1", "fc2"]
    assert fg.node("conv2").attrs["padding"] == [0, 0, 1, 1]        # SAME_UPPER, stride 2 on 4x4
    x = np.random.default_rng(1).uniform(0, 1, (7, 1, 8, 8))
    np.testing.assert_allclose(fg.run(x)[fg.output], ort_run(bn_model, x), rtol=1e-4, atol=1e-4)


def test_final_softmax_dropped_and_noted(tmp_path):
    fg = read_float_onnx(save(lenet_bn(softmax=True), tmp_path / "s.onnx"))
    assert fg.nodes[-1].op == "dense" and any("Softmax" in n for n in fg.notes)


# ------------------------------------------------------------------------------------------ every scheme

SCHEMES = [("uniform:8", "uniform:8"), ("uniform:4", "uniform:4"), ("kmeans:3", "uniform:8"),
           ("kmeans:4,groups=2", "knq:3"), ("ternary:twn", "enq:5"), ("ternary:hwang", "uniform:6"),
           ("pow2:3", "enq:auto"), ("dictionary:16", "knq:4"), ("binary:xnor", "binary"),
           ("uniform:2", "uniform:1")]


@pytest.mark.parametrize("w,a", SCHEMES)
@pytest.mark.parametrize("all_layers", [False, True])
def test_every_scheme_is_bit_exact_in_validate(tmp_path, bn_model, digits, w, a, all_layers):
    x, y = digits
    recipe = Recipe(weights=parse_scheme(w, "weights", "w"), acts=parse_scheme(a, "acts", "a"), all_layers=all_layers)
    res = quantize(read_float_onnx(bn_model), x, y, recipe, name="t")
    path = tmp_path / "t.qnn"
    save_model(res.model, path)
    model = load_model(path)
    assert compare(Engine(model), quantize_input(model, x)).passed
    meta = model.metadata["quantized_by"]
    assert meta["calibration_samples"] == len(x) and len(meta["float_model_sha256"]) == 64
    assert meta["recipe"]["weights"] == w
    kinds = {lay.name: lay.weight_enc.kind for lay in model.layers if lay.weight is not None}
    inner = kinds["conv2"], kinds["fc1"]
    expected = {"uniform": "uniform", "kmeans": "codebook", "ternary": "ternary", "pow2": "pow2",
                "dictionary": "codebook", "binary": "binary"}[w.split(":")[0]]
    assert inner == (expected, expected)
    assert (kinds["conv1"] == expected) == all_layers or expected == "uniform"


@pytest.mark.parametrize("seed", range(10))
def test_random_graphs_quantize_bit_exact(tmp_path, seed):
    """The class of graphs (residual adds, concats, depthwise, pools, MatMul/Gemm): uniform:8 and knq, bit-exact."""
    proto, in_shape, desc = random_float_model(seed)
    path = save(proto, tmp_path / "m.onnx")
    x = np.random.default_rng(seed).normal(size=(40,) + in_shape)
    fg = read_float_onnx(path)
    for acts in ("uniform:8", "uniform:4"):
        res = quantize(fg, x, None, Recipe(acts=parse_scheme(acts, "acts", "a"), all_layers=True), name="r")
        assert compare(Engine(res.model), quantize_input(res.model, x)).passed, desc
    # uniform 8-bit tracks the float model closely
    res = quantize(fg, x, None, Recipe(), name="r")
    ours = engine_outputs(res.model, x).astype(np.float64) * res.model.layers[-1].out_enc.value_scale
    ref = fg.run(x)[fg.output].reshape(len(x), -1)
    err = np.sqrt(np.mean((ours - ref) ** 2)) / (np.sqrt(np.mean(ref ** 2)) + 1e-12)
    assert err < 0.1, (desc, err)


def test_weights_are_the_api_quantizers(bn_model, digits):
    """The .qnn holds exactly what the seed formulas give for the (BatchNorm-folded) float weights."""
    x, y = digits
    fg = read_float_onnx(bn_model)
    res = quantize(fg, x, y, Recipe(weights=parse_scheme("ternary:twn", "weights", "w")), name="t")
    w = fg.node("conv2").weight
    codes, delta, alpha = qw.twn_ternary(w)
    lay = res.model.layer("conv2")
    np.testing.assert_array_equal(lay.weight, codes)
    assert delta == pytest.approx(0.7 * np.abs(w).mean())
    assert lay.weight_enc.scale[0] == qw.mantissa8(np.abs(w)[np.abs(w) > delta].mean())


def test_first_and_last_layers_stay_8_bit(bn_model, digits):
    x, y = digits
    res = quantize(read_float_onnx(bn_model), x, y, Recipe(weights=parse_scheme("kmeans:2", "weights", "w"),
                                                           acts=parse_scheme("enq:3", "acts", "a")), name="t")
    m = res.model
    assert m.layer("conv1").weight_enc.kind == "uniform" and m.layer("fc2").weight_enc.kind == "uniform"
    assert m.layer("conv1").out_enc.kind == "enq"          # read by conv2 with enq:3
    assert m.layer("fc1").out_enc.kind == "uniform"        # read by the last layer: 8 bit
    assert m.layer("fc2").out_enc.bits == 16               # logits
    assert m.input_enc.bits == 8


def test_enq_auto_is_smallest_within_budget(bn_model, digits):
    """Check the search's result against its definition: each E_i is the smallest keeping the metric within budget
    given the others, and no layer can go one bit lower."""
    x, y = digits
    fg = read_float_onnx(bn_model)
    recipe = Recipe(acts=parse_scheme("enq:auto", "acts", "a"), budget=0.02, all_layers=True)
    res = quantize(fg, x, y, recipe, name="t")
    q = Quantizer(fg, recipe, x)
    full = {t: EnqAct(8, 8, q.plan.encodings[t].frac_bits) for t in res.enq_bits}
    acc = lambda over: float((engine_outputs(q.build("t", over), x).argmax(1) == y).mean())  # noqa: E731
    reference = acc(full)
    chosen = {t: EnqAct(e, 8, q.plan.encodings[t].frac_bits) for t, e in res.enq_bits.items()}
    assert acc(chosen) >= reference - 0.02 - 1e-12
    assert res.enq_bits and all(1 <= e <= 8 for e in res.enq_bits.values())


def test_kmeans_input_codebook(bn_model, digits, tmp_path):
    x, y = digits
    recipe = Recipe(input=parse_scheme("kmeans:3", "input", "i"))
    res = quantize(read_float_onnx(bn_model), x, y, recipe, name="t")
    m = res.model
    assert m.input_enc.kind == "knq" and len(m.input_enc.centroids) == 8
    codes = quantize_input(m, x)
    assert codes.max() <= 7
    # nearest-centroid: each pixel's decoded value is the closest centroid to its fixed-point value
    v = np.rint(x / m.input_enc.value_scale)
    cents = np.asarray(m.input_enc.centroids)
    dist = np.abs(v[..., None] - cents)
    picked = np.take_along_axis(dist, codes[..., None], -1)[..., 0]
    assert np.all(picked == dist.min(-1))
    assert compare(Engine(m), codes).passed


# ------------------------------------------------------------------------------------------ CLI and recipes

def run_cli(capsys, *argv):
    rc = main(list(map(str, argv)))
    out, err = capsys.readouterr()
    return rc, out, err


def test_cli_quantize_analyze_recipe_roundtrip(tmp_path, capsys):
    calib = "models/digits_test.npz"
    rc, out, err = run_cli(capsys, "analyze", "models/lenet_digits_float.onnx", "--calib", calib,
                           "--target-sqnr-db", 25, "--recipe-out", tmp_path / "r.yaml", "--json", tmp_path / "a.json")
    assert rc == 0, err
    recipe = yaml.safe_load(open(tmp_path / "r.yaml"))
    assert recipe["format"] == "hwsim-recipe/1" and set(recipe["layers"]) == {"conv1", "conv2", "fc1", "fc2"}
    rc, out, err = run_cli(capsys, "quantize", "models/lenet_digits_float.onnx", "--calib", calib, "-o",
                           tmp_path / "m.qnn", "--recipe", tmp_path / "r.yaml")
    assert rc == 0, err
    assert "accuracy on" in out and "integer (hwsim engine)" in out
    model = load_model(tmp_path / "m.qnn")
    for name, entry in recipe["layers"].items():
        lay = model.layer(name)
        assert lay.weight_enc.bits == int(entry["weights"].split(":")[1])
    rc, out, err = run_cli(capsys, "validate", tmp_path / "m.qnn", "--dataset", calib)
    assert rc == 0 and "PASS" in out
    rc, out, err = run_cli(capsys, "analyze", "models/lenet_digits_float.onnx", "--calib", calib, "--qnn",
                           tmp_path / "m.qnn")
    assert rc == 0 and "measured SQNR" in out


def test_recipe_by_layer_and_op(tmp_path, bn_model, digits):
    x, y = digits
    path = tmp_path / "r.yaml"
    path.write_text("format: hwsim-recipe/1\nweights: uniform:6\nlayers:\n  dense: {weights: kmeans:3}\n"
                    "  fc1: {weights: pow2:3}\n")
    from simulator.quant.schemes import load_recipe
    res = quantize(read_float_onnx(bn_model), x, y, load_recipe(path), name="t")
    kinds = {lay.name: str(lay.weight_enc.kind) for lay in res.model.layers if lay.weight is not None}
    # conv1 / fc2 are the first / last layers; fc1 named explicitly wins over its op
    assert kinds == {"conv1": "uniform", "conv2": "uniform", "fc1": "pow2", "fc2": "uniform"}
    assert res.model.layer("conv2").weight_enc.bits == 6


BAD = [
    (["--weights", "knq:3"], "--weights: unknown weights scheme 'knq'"),
    (["--acts", "knq:3,centroids=16"], "3-bit KNQ has 8 centroids, not 16"),
    (["--acts", "enq:9"], "at most q_m = 8 bits"),
    (["--weights", "uniform:1"], "out of range"),
    (["--weights", "siq:2"], "--train"),
    (["--weights", "kmeans:3,groups=7"], "does not divide"),
    (["--budget", "2"], "--budget"),
]


@pytest.mark.parametrize("args,message", BAD)
def test_cli_impossible_options(tmp_path, capsys, args, message):
    out_path = tmp_path / "o.qnn"
    rc, out, err = run_cli(capsys, "quantize", "models/lenet_digits_float.onnx", "--calib", "models/digits_test.npz",
                           "-o", out_path, *args)
    assert rc == 2 and message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not out_path.exists()


def test_bad_recipes_and_data(tmp_path, capsys, bn_model):
    def q(*extra, model=bn_model, calib=None):
        if calib is None:
            calib = tmp_path / "c.npz"
            np.savez(calib, x=np.random.default_rng(0).uniform(0, 1, (20, 1, 8, 8)).astype(np.float32))
        out_path = tmp_path / "o.qnn"
        rc, out, err = run_cli(capsys, "quantize", model, "--calib", calib, "-o", out_path, *extra)
        assert rc == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
        assert not out_path.exists()
        return err

    r = tmp_path / "r.yaml"
    r.write_text("format: hwsim-recipe/1\nlayers:\n  conv9: {weights: uniform:4}\n")
    assert "layer 'conv9' does not exist" in q("--recipe", r)
    r.write_text("format: hwsim-recipe/1\nlayers:\n  MaxPool: {weights: uniform:4}\n")
    assert "is a maxpool" in q("--recipe", r)
    r.write_text("format: hwsim-recipe/1\nlayers:\n  conv2: {acts: \"knq:3,centroids=16\"}\n")
    assert "r.yaml: layers.conv2.acts" in q("--recipe", r)
    r.write_text("format: hwsim-recipe/1\nweights: [1, 2\n")
    assert "not valid YAML" in q("--recipe", r)
    r.write_text("!!python/object/apply:os.system ['echo hi']\n")
    assert "r.yaml" in q("--recipe", r)
    bad = tmp_path / "bad.npz"
    np.savez(bad, x=np.zeros((4, 1, 7, 8), np.float32))
    assert "does not match the model input" in q(calib=bad)
    np.savez(bad, x=np.full((4, 1, 8, 8), np.nan, np.float32))
    assert "NaN" in q(calib=bad)
    np.savez(bad, x=np.zeros((4, 1, 8, 8), np.bool_))
    assert "must be a float array" in q(calib=bad)
    np.savez(bad, y=np.zeros(4))
    assert "missing array 'x'" in q(calib=bad)
    # NaN weights and an unsupported op in the float model
    proto = lenet_bn()
    w = numpy_helper.to_array(proto.graph.initializer[0]).copy()
    w[0, 0, 0, 0] = np.nan
    proto.graph.initializer[0].CopyFrom(numpy_helper.from_array(w, proto.graph.initializer[0].name))
    assert "NaN" in q(model=save(proto, tmp_path / "nan.onnx"))
    proto = lenet_bn()
    proto.graph.node[1].op_type = "Sigmoid"
    err = q(model=save(proto, tmp_path / "sig.onnx"))
    assert "unsupported op 'Sigmoid'" in err and "supported: " in err and "Conv" in err


def test_budget_no_allocation_can_meet(capsys, tmp_path):
    rc, out, err = run_cli(capsys, "analyze", "models/lenet_digits_float.onnx", "--calib", "models/digits_test.npz",
                           "--budget-bits", 100, "--recipe-out", tmp_path / "r.yaml")
    assert rc == 2 and "below the minimum" in err and not (tmp_path / "r.yaml").exists()
    rc, out, err = run_cli(capsys, "analyze", "models/lenet_digits_float.onnx", "--calib", "models/digits_test.npz",
                           "--target-sqnr-db", 500)
    assert rc == 2 and "above the best reachable" in err


def test_input_scheme_cannot_be_enq():
    with pytest.raises(HwsimError, match="unknown input scheme"):
        parse_scheme("enq:4", "input", "--input")


@pytest.mark.parametrize("w,a,inp", [("uniform:8", "uniform:8", "uniform:8"), ("kmeans:4", "knq:3", "kmeans:3"),
                                     ("ternary:twn", "enq:5", "uniform:6"), ("binary:xnor", "binary", "uniform:8")])
def test_quantized_models_export_and_run_in_onnxruntime(tmp_path, bn_model, digits, w, a, inp):
    """An independent executor: the .qnn that quantize writes, exported to ONNX, gives the same codes in ORT."""
    from simulator.exporters.onnx_export import export_onnx
    x, y = digits
    recipe = Recipe(weights=parse_scheme(w, "weights", "w"), acts=parse_scheme(a, "acts", "a"),
                    input=parse_scheme(inp, "input", "i"))
    model = quantize(read_float_onnx(bn_model), x, y, recipe, name="t").model
    export_onnx(model, tmp_path / "t.onnx")
    sess = ort.InferenceSession(str(tmp_path / "t.onnx"), providers=["CPUExecutionProvider"])
    got = sess.run(None, {sess.get_inputs()[0].name: x.astype(np.float32)})[0]
    ours = Engine(model).run(quantize_input(model, x)).output
    np.testing.assert_array_equal(got.reshape(ours.shape).astype(np.int64), ours)


def keras_like(seed=0, nhwc_input=False):
    """What tf2onnx writes for a small Keras CNN: per-channel Mul / Add / Sub / Div after the conv (a folded
    BatchNorm), a channels-last Transpose before the flatten (Keras flattens NHWC), MatMul + Add, Softmax."""
    rng = np.random.default_rng(seed)
    inits, nodes = [], []

    def const(name, arr, dtype=np.float32):
        inits.append(numpy_helper.from_array(np.asarray(arr, dtype=dtype), name))
        return name

    x = "x"
    if nhwc_input:
        nodes.append(helper.make_node("Transpose", ["x"], ["xt"], name="in_t", perm=[0, 3, 1, 2]))
        x = "xt"
    nodes += [helper.make_node("Conv", [x, const("w", rng.normal(0, .4, (6, 2, 3, 3)))], ["c"], name="conv",
                               pads=[1, 1, 1, 1]),
              helper.make_node("Mul", ["c", const("s", rng.uniform(0.5, 2, (1, 6, 1, 1)))], ["m"], name="bn_mul"),
              helper.make_node("Add", [const("t", rng.normal(0, .2, (6, 1, 1))), "m"], ["a"], name="bn_add"),
              helper.make_node("Sub", ["a", const("u", rng.normal(0, .2, (1, 6, 1, 1)))], ["sb"], name="sub"),
              helper.make_node("Div", ["sb", const("d", rng.uniform(0.5, 2, (6, 1, 1)))], ["dv"], name="div"),
              helper.make_node("Relu", ["dv"], ["r"], name="relu"),
              helper.make_node("MaxPool", ["r"], ["p"], name="pool", kernel_shape=[2, 2], strides=[2, 2]),
              helper.make_node("Transpose", ["p"], ["pt"], name="to_nhwc", perm=[0, 2, 3, 1]),
              helper.make_node("Reshape", ["pt", const("shape", [-1, 6 * 3 * 4], np.int64)], ["f"], name="flatten"),
              helper.make_node("MatMul", ["f", const("w2", rng.normal(0, .2, (72, 16)))], ["mm"], name="dense"),
              helper.make_node("Add", ["mm", const("b2", rng.normal(0, .1, 16))], ["h"], name="dense_bias"),
              helper.make_node("Relu", ["h"], ["hr"], name="relu2"),
              helper.make_node("MatMul", ["hr", const("w3", rng.normal(0, .3, (16, 5)))], ["o"], name="out"),
              helper.make_node("Softmax", ["o"], ["y"], name="softmax", axis=-1)]
    shape = ["N", 6, 8, 2] if nhwc_input else ["N", 2, 6, 8]
    graph = helper.make_graph(nodes, "keras_like", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model


def test_keras_style_graph_folds_and_matches_onnxruntime(tmp_path):
    path = save(keras_like(), tmp_path / "k.onnx")
    fg = read_float_onnx(path)
    assert [n.op for n in fg.nodes] == ["conv2d", "relu", "maxpool", "flatten", "dense", "relu", "dense"]
    x = np.random.default_rng(3).normal(size=(9, 2, 6, 8))
    logits = fg.run(x)[fg.output]
    probs = ort_run(path, x)
    e = np.exp(logits - logits.max(1, keepdims=True))
    np.testing.assert_allclose(e / e.sum(1, keepdims=True), probs, rtol=1e-4, atol=1e-6)
    res = quantize(fg, x, None, Recipe(), name="k")
    assert compare(Engine(res.model), quantize_input(res.model, x)).passed and res.agreement > 0.8


def test_channels_last_input_is_one_clear_error(tmp_path, capsys):
    path = save(keras_like(nhwc_input=True), tmp_path / "k.onnx")
    with pytest.raises(HwsimError, match="channels-last .NHWC. input.*inputs-as-nchw"):
        read_float_onnx(path)


@pytest.mark.parametrize("dynamo", [False, True])
def test_pytorch_exports_with_dynamic_batch(tmp_path, dynamo):
    """PyTorch's two exporters on a residual / depthwise / ReLU6 / BatchNorm / view(N, -1) network: the legacy one
    writes Shape -> Gather -> Unsqueeze -> Concat -> Reshape (folded as constants), the dynamo one ReduceMean."""
    torch = pytest.importorskip("torch")
    import torch.nn as nn
    import torch.nn.functional as F

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.c1, self.b1 = nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8)
            self.c2, self.b2 = nn.Conv2d(8, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8)
            self.dw, self.pw, self.fc = nn.Conv2d(8, 8, 3, padding=1, groups=8), nn.Conv2d(8, 16, 1), nn.Linear(16, 10)

        def forward(self, x):
            x = F.relu(self.b1(self.c1(x)))
            x = F.relu(x + self.b2(self.c2(x)))
            x = F.relu6(self.pw(F.relu6(self.dw(x))))
            x = F.adaptive_avg_pool2d(x, 1)
            return self.fc(x.view(x.size(0), -1))

    torch.manual_seed(0)
    net = Net()
    for bn in (net.b1, net.b2):
        bn.running_mean.uniform_(-0.2, 0.2)
        bn.running_var.uniform_(0.5, 2)
    net.train(False)
    path = tmp_path / "net.onnx"
    kwargs = ({"dynamic_shapes": {"x": {0: torch.export.Dim("N")}}, "dynamo": True} if dynamo else
              {"dynamic_axes": {"x": {0: "N"}, "y": {0: "N"}}, "dynamo": False, "opset_version": 17})
    try:
        torch.onnx.export(net, (torch.zeros(1, 3, 12, 12),), str(path), input_names=["x"], output_names=["y"], **kwargs)
    except Exception as exc:            # the dynamo exporter needs onnxscript
        pytest.skip(f"torch.onnx.export failed here: {type(exc).__name__}")
    x = np.random.default_rng(0).normal(size=(32, 3, 12, 12))
    fg = read_float_onnx(path)
    np.testing.assert_allclose(fg.run(x)[fg.output], ort_run(path, x), rtol=1e-4, atol=1e-4)
    res = quantize(fg, x, None, Recipe(), name="net")
    assert compare(Engine(res.model), quantize_input(res.model, x)).passed and res.agreement >= 0.9
