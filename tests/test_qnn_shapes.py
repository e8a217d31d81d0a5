"""qnn_shapes: counts from shapes alone equal the engine's measured trace; workloads carry them faithfully.

`shape_counts(model)` must reproduce every field the engine records per inference, except the value-dependent
ones (accumulator overflows, int16 pair saturations, zero-operand MACs), on the shipped models, on random
models from tests/model_factory.py and on edge models that exercise what the factory does not (x86 pair
saturation, threshold outputs, ONNX Runtime average pooling, global pools, multi-input adds with clip, ...).
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from model_factory import random_act_enc, random_model, random_weight
from simulator.encodings import BinaryAct, ThresholdAct, UniformAct, UniformW
from simulator.engine import Engine
from simulator.errors import HwsimError
from simulator.graph import Layer, Model
from simulator.importers.qnn_shapes import shape_counts, workloads_from_model
from simulator.qnn.model_io import load_model
from simulator.trace import LayerCounts

VALUE_DEPENDENT = {"overflows", "pair_saturations", "pair_saturated_outputs", "zero_act_macs", "zero_any_macs"}
MODELS = Path(__file__).resolve().parents[1] / "models"
SHIPPED = sorted(str(p) for p in MODELS.glob("*.qnn"))


def engine_trace(model, n=None):
    codes = model.sample_input
    if codes is None or n is not None:
        lo, hi = model.input_enc.code_range()
        codes = np.random.default_rng(0).integers(lo, hi + 1, size=(n or 2,) + tuple(model.input_shape))
    return Engine(model).run(codes).trace


def assert_same_counts(model, trace=None):
    measured = (trace or engine_trace(model)).per_inference()
    derived = shape_counts(model)
    assert derived.batch == 1
    assert derived.dram_input_bits == measured.dram_input_bits
    assert derived.dram_output_bits == measured.dram_output_bits
    assert [lc.name for lc in derived.layers] == [lc.name for lc in measured.layers]
    for got, want in zip(derived.layers, measured.layers):
        for key, value in want.__dict__.items():
            if key in VALUE_DEPENDENT or key.startswith("zero_"):
                continue
            assert getattr(got, key) == value, f"{model.name} layer {want.name} ({want.op}): {key}"


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: Path(p).stem)
def test_shipped_models_match_the_engine(path):
    assert_same_counts(load_model(path))


def test_random_factory_models_match_the_engine():
    for seed in range(150):
        assert_same_counts(random_model(seed))


def edge_model(seed) -> Model:
    """What model_factory leaves out: pair-saturating datapath, threshold outputs, ORT avgpool, global pools,
    padded max pools, clip layers, multi-input adds with clip, reshape, multipliers."""
    rng = np.random.default_rng(seed)
    c, h, w = int(rng.integers(1, 4)), int(rng.integers(4, 8)), int(rng.integers(4, 8))
    u8 = UniformAct(8, False, 2.0 ** -6, int(rng.integers(0, 3)))
    layers, shape, enc, name = [], (c, h, w), u8, "input"

    def add(lay):
        nonlocal shape, enc, name
        layers.append(lay)
        Model("edge", (c, h, w), u8, list(layers)).check()
        shape, enc, name = lay.out_shape, lay.out_enc, lay.name

    for i in range(int(rng.integers(2, 6))):
        kind = str(rng.choice(["pairsat", "threshold", "ortpool", "gpool", "maxpool", "clip", "add3", "reshape",
                               "conv"]))
        if kind in ("ortpool", "gpool", "maxpool") and min(shape[1:]) < 2:
            kind = "conv"
        if kind in ("ortpool", "pairsat") and not (isinstance(enc, UniformAct) and enc.bits == 8 and not enc.signed):
            kind = "conv"
        if kind in ("clip", "add3", "gpool") and isinstance(enc, BinaryAct):
            kind = "conv"
        lname = f"e{i}"
        if kind in ("pairsat", "threshold", "conv"):
            co = int(rng.integers(1, 4))
            wshape = (co, shape[0], 2, 2) if min(shape[1:]) >= 2 else (co, shape[0], 1, 1)
            attrs = {"padding": [1, 0, 0, 1] if wshape[2] == 2 else [0, 0, 0, 0], "stride": [1, 2]}
            if kind == "pairsat":
                wenc, wcodes, table = UniformW(8, True, (2.0 ** -7,), (1,)), rng.integers(-128, 128, wshape), None
                attrs["datapath"] = "x86_pair_sat16"
                out_enc = u8
            else:
                wenc, wcodes, table = random_weight(rng, wshape, isinstance(enc, BinaryAct))
                out_enc = random_act_enc(rng)
                if kind == "threshold":
                    rows = np.sort(rng.integers(-500, 500, size=(co, 3)))
                    out_enc = ThresholdAct(4, False, 0.25, 0, tuple(tuple(int(t) for t in r) for r in rows))
                elif not isinstance(out_enc, BinaryAct) and rng.integers(2):
                    attrs["clip"] = [0, 100]
            attrs["multiplier"] = [2.0 ** -8]
            add(Layer(lname, "conv2d", [name], attrs, out_enc, wcodes, wenc, table,
                      rng.integers(-9, 9, co) if rng.integers(2) else None, 24))
        elif kind == "ortpool":
            add(Layer(lname, "avgpool", [name], {"kernel": [2, 2], "stride": [1, 1], "padding": [1, 0, 0, 1],
                                                 "rounding": "ort_float32"}, UniformAct(8, False, 2.0 ** -5, 3)))
        elif kind == "gpool":
            attrs = {"global": True, "rounding": "ort_float32" if enc == u8 and rng.integers(2) else "half_up"}
            add(Layer(lname, "avgpool", [name], attrs, u8 if attrs["rounding"] == "ort_float32" else None))
        elif kind == "maxpool":
            add(Layer(lname, "maxpool", [name], {"kernel": [2, 2], "stride": [2, 1], "padding": [0, 1, 1, 0]}))
        elif kind == "clip":
            lo, hi = enc.value_range()
            add(Layer(lname, "clip", [name], {"min": lo + 1, "max": max(lo + 1, hi - 1)}))
        elif kind == "add3":
            add(Layer(lname, "add", [name, name, name], {"requant": "float64", "clip": [-3, 90]},
                      UniformAct(8, True, 2.0 ** -4, 0)))
        else:
            add(Layer(lname, "reshape", [name], {"shape": [shape[0] * shape[1], shape[2], 1]}))
    layers.append(Layer("flat", "flatten", [name]))
    wenc, wcodes, table = random_weight(rng, (3, math.prod(shape)), isinstance(enc, BinaryAct))
    layers.append(Layer("fc", "dense", ["flat"], {"requant": "float32"}, u8, wcodes, wenc, table))
    lo, hi = u8.code_range()
    return Model("edge", (c, h, w), u8, layers,
                 sample_input=rng.integers(lo, hi + 1, size=(3, c, h, w))).check()


def test_edge_models_match_the_engine():
    ops = set()
    for seed in range(60):
        model = edge_model(seed)
        ops |= {(lay.op, lay.attr("rounding") if lay.op == "avgpool" else type(lay.out_enc).__name__)
                for lay in model.layers}
        assert_same_counts(model)
    assert ("avgpool", "ort_float32") in ops and ("conv2d", "ThresholdAct") in ops


def test_batch_does_not_change_per_inference_counts():
    model = load_model(MODELS / "lenet_digits_knq.qnn")
    assert_same_counts(model, engine_trace(model, n=5))


# ------------------------------------------------------------------------------------------ workloads

def test_workloads_from_shapes_and_from_trace_agree():
    for path in SHIPPED:
        model = load_model(path)
        shapes = workloads_from_model(model)
        measured = workloads_from_model(model, engine_trace(model))
        assert [w.name for w in shapes] == [lay.name for lay in model.layers]
        assert all(w.zero_act_macs is None and w.zero_any_macs is None for w in shapes)   # unknown from shapes
        unknown = [replace(w, zero_act_macs=None, zero_any_macs=None) for w in measured]
        assert shapes == unknown     # every other field: Workload equality


def test_workload_fields_follow_the_model():
    model = load_model(MODELS / "lenet_digits_xnor.qnn")
    trace = engine_trace(model).per_inference()
    wls = {w.name: w for w in workloads_from_model(model)}
    conv1, conv2, fc1, fc2 = (model.layer(n) for n in ("conv1", "conv2", "fc1", "fc2"))
    assert wls["conv2"].path == wls["fc1"].path == "xnor" and wls["conv1"].path == wls["fc2"].path == "mac"
    for lay, lc in zip(model.layers, trace.layers):
        wl = wls[lay.name]
        assert wl.n == 1
        if wl.path == "xnor":
            assert wl.macs == lc.binary_macs and (wl.in_bits, wl.w_bits, wl.a_op_bits) == (1, 1, 1)
            assert wl.popcount_word_bits == 64
        elif wl.path == "mac":
            assert wl.macs == lc.total_macs() and list(lc.macs) == [(wl.a_op_bits, wl.w_op_bits)]
        assert wl.event("requants") == lc.requants and wl.event("compares") == lc.compares
    c2 = wls["conv2"]
    assert (c2.g, c2.k, c2.c, c2.p, c2.q, c2.r, c2.s, c2.h, c2.w) == (1, 64, 32, 4, 4, 3, 3, 8, 8)
    assert c2.stride == (2, 2) and c2.pad == (1, 1, 1, 1)
    assert wls["fc2"].extra_weight_bits == fc2.bias.size * fc2.bias_bits
    assert wls["conv1"].out_bits == 1 and wls["conv1"].acc_bits == conv1.attr("acc_bits")
    assert wls["flatten"].path == "view" and wls["flatten"].macs == 0
    cb = {w.name: w for w in workloads_from_model(load_model(MODELS / "lenet_digits_codebook.qnn"))}["conv2"]
    lay = load_model(MODELS / "lenet_digits_codebook.qnn").layer("conv2")
    assert cb.w_bits == lay.weight_enc.storage_bits and cb.w_op_bits == lay.weight_enc.table_bits
    assert cb.extra_weight_bits == lay.bias.size * lay.bias_bits + lay.codebook.size * lay.weight_enc.table_bits
    assert cb.lut_entries == lay.codebook.shape[1] and cb.event("lut_reads") == lay.weight.size


def test_grouped_and_depthwise_convs_and_vector_layers():
    models = [random_model(seed) for seed in range(40)]
    grouped = [m for m in models if any(lay.op == "conv2d" and lay.attr("groups") > 1 for lay in m.layers)]
    assert grouped and any(lay.op in ("maxpool", "avgpool", "add") for m in grouped for lay in m.layers)
    for lay, wl in ((lay, wl) for m in grouped for lay, wl in zip(m.layers, workloads_from_model(m))):
        if lay.op == "conv2d":
            g = lay.attr("groups")
            assert wl.g == g and wl.k * g == lay.out_shape[0] and wl.c * g == lay.in_shapes[0][0]
            assert wl.macs == math.prod(lay.out_shape) * lay.weight[0].size
        elif wl.path == "vector":
            assert wl.in_elems == sum(math.prod(s) for s in lay.in_shapes)
            assert wl.out_elems == math.prod(lay.out_shape) and wl.macs == 0


def test_zero_mac_counts_come_from_the_trace_only():
    model = load_model(MODELS / "lenet_digits_u8.qnn")
    trace = engine_trace(model, n=1)
    for lc in trace.layers:
        lc.zero_act_macs, lc.zero_any_macs = 7, 9     # as another LayerCounts version records them
    measured = workloads_from_model(model, trace)
    assert all((w.zero_act_macs, w.zero_any_macs) == ((7, 9) if w.is_mac else (None, None)) for w in measured)
    assert all(w.zero_act_macs is None and w.zero_any_macs is None for w in workloads_from_model(model))


def test_a_foreign_trace_is_one_error():
    trace = engine_trace(load_model(MODELS / "lenet_digits_xnor.qnn"))
    with pytest.raises(HwsimError, match="do not match"):
        workloads_from_model(load_model(MODELS / "lenet_digits_u8.qnn"), trace)


def test_unchecked_model_is_checked():
    model = random_model(5)
    for lay in model.layers:
        lay.in_shapes, lay.out_shape = [], ()
    assert isinstance(shape_counts(model).layers[0], LayerCounts)
    assert model.layers[-1].out_shape
