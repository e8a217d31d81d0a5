"""Hostile or inconsistent model files: each is one HwsimError naming the file and the field."""

import copy

import numpy as np
import pytest

from simulator.encodings import CodebookW, UniformAct, UniformW
from simulator.errors import HwsimError
from simulator.graph import Layer, Model
from simulator.qnn.container import write_container
from simulator.qnn.model_io import load_model, model_to_header


def small_model():
    rng = np.random.default_rng(0)
    conv = Layer("conv", "conv2d", ["input"], {"padding": [1, 1, 1, 1]}, UniformAct(8, False, 0.25),
                 rng.integers(0, 16, (4, 2, 3, 3)), CodebookW(4, 8, 0, (0.01,)), rng.integers(-100, 100, (1, 16)))
    flat = Layer("flat", "flatten", ["conv"])
    fc = Layer("fc", "dense", ["flat"], {}, UniformAct(8, True, 0.5), rng.integers(-127, 128, (3, 4 * 5 * 5)),
               UniformW(8, True, (0.02,)))
    return Model("small", (2, 5, 5), UniformAct(8, False, 1 / 64), [conv, flat, fc])


def write_variant(tmp_path, mutate):
    header, tensors = model_to_header(small_model())
    header = copy.deepcopy(header)
    tensors = dict(tensors)
    mutate(header["model"], tensors)
    path = tmp_path / "bad.qnn"
    write_container(path, header, tensors)
    return path


def expect_error(tmp_path, mutate, *needles):
    path = write_variant(tmp_path, mutate)
    with pytest.raises(HwsimError) as exc:
        load_model(path)
    line = exc.value.line()
    assert line.startswith(str(path)), line
    for needle in needles:
        assert needle in line, (needle, line)


def test_valid_model_loads(tmp_path):
    assert load_model(write_variant(tmp_path, lambda m, t: None)).layers[-1].out_shape == (3,)


def test_unknown_op(tmp_path):
    def mutate(m, t):
        m["layers"][1]["op"] = "gelu"
    expect_error(tmp_path, mutate, "layers.flat.op", "gelu", "supported")


def test_shape_that_does_not_chain(tmp_path):
    def mutate(m, t):
        w, bits, signed = t["fc.weight"]
        t["fc.weight"] = (w[:, :-1], bits, signed)
    expect_error(tmp_path, mutate, "layers.fc.weight.shape", "99", "100")


def test_conv_channels_do_not_chain(tmp_path):
    def mutate(m, t):
        m["input"]["shape"] = [3, 5, 5]
    expect_error(tmp_path, mutate, "layers.conv.weight.shape", "3")


def test_index_beyond_codebook(tmp_path):
    def mutate(m, t):
        table, bits, signed = t["conv.codebook"]
        t["conv.codebook"] = (table[:, :10], bits, signed)  # indices go up to 15
    expect_error(tmp_path, mutate, "layers.conv.weight", "beyond the codebook")


def test_unknown_attribute_and_encoding(tmp_path):
    expect_error(tmp_path, lambda m, t: m["layers"][0]["attrs"].update(strides=[2, 2]), "layers.conv.attrs", "strides")
    expect_error(tmp_path, lambda m, t: m["layers"][0]["encoding"].update(kind="fp8"), "encoding.kind", "fp8")
    expect_error(tmp_path, lambda m, t: m["layers"][2]["weight_encoding"].update(scale=[-1.0]),
                 "weight_encoding.scale", "positive")


def test_missing_and_orphan_tensors(tmp_path):
    expect_error(tmp_path, lambda m, t: t.pop("fc.weight"), "fc.weight", "missing")
    expect_error(tmp_path, lambda m, t: t.update(extra=(np.zeros(3, dtype=np.int64), 8, True)), "extra")


def test_input_reference_to_later_layer(tmp_path):
    def mutate(m, t):
        m["layers"][0]["inputs"] = ["fc"]
    expect_error(tmp_path, mutate, "layers.conv.inputs", "earlier layer")


def test_wrong_types_in_header(tmp_path):
    expect_error(tmp_path, lambda m, t: m["layers"][0]["attrs"].update(stride=[1, True]), "attrs.stride")
    expect_error(tmp_path, lambda m, t: m["layers"][0]["attrs"].update(acc_bits=99), "attrs.acc_bits")
    expect_error(tmp_path, lambda m, t: m["layers"][0]["attrs"].update(requant="fp16"), "attrs.requant", "fp16")
    expect_error(tmp_path, lambda m, t: m.update(layers={}), "model.layers")
    expect_error(tmp_path, lambda m, t: m["layers"][0].update(name=7), "name")


def test_operands_beyond_the_mac_pe_are_a_model_error():
    from simulator.encodings import KnqAct
    big = Layer("k", "conv2d", ["input"], {}, KnqAct(1, (0, 70000)), np.ones((1, 2, 1, 1), dtype=np.int64),
                UniformW(8))
    nxt = Layer("c", "conv2d", ["k"], {}, UniformAct(8), np.ones((2, 1, 1, 1), dtype=np.int64), UniformW(8))
    with pytest.raises(HwsimError) as exc:
        Model("m", (2, 5, 5), UniformAct(8), [big, nxt]).check()
    assert "layers.c.inputs" in exc.value.line() and "2^16" in exc.value.line()
