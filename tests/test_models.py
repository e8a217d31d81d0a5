"""The shipped example models (models/*.qnn, made by models/make_digits_models.py) on the shipped test set.

For each model: it loads, its integer engine agrees bit for bit with the float64 reference on the whole test set
(540 images), its accuracy as measured by the engine stays above a floor (the measured accuracy minus one
percentage point) and equals the accuracy the generating script recorded, and its encodings are the ones its
name promises. Needs only numpy + hwsim (no torch, no scikit-learn).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from simulator.encodings import BinaryAct, BinaryW, CodebookW, EnqAct, KnqAct, UniformAct, UniformW
from simulator.engine import Engine, quantize_input
from simulator.qnn.model_io import load_model
from simulator.validate import compare

MODELS = Path(__file__).resolve().parent.parent / "models"

# hwsim-measured test accuracy when the files were made (see models/README.md), minus one percentage point.
FLOORS = {
    "u8": 0.977,        # measured 0.9870
    "codebook": 0.969,  # measured 0.9796
    "enq": 0.971,       # measured 0.9815
    "knq": 0.977,       # measured 0.9870
    "xnor": 0.984,      # measured 0.9944
}


@pytest.fixture(scope="module")
def testset():
    with np.load(MODELS / "digits_test.npz", allow_pickle=False) as d:
        x, y = d["x"], d["y"]
    assert x.dtype == np.float32 and x.shape == (540, 1, 8, 8)
    assert y.dtype == np.int64 and y.shape == (540,)
    assert set(np.unique(y)) == set(range(10))
    # x = pixel / 16: every value is an exact sixteenth in [0, 1]
    assert x.min() >= 0 and x.max() <= 1 and np.array_equal(x * 16, np.rint(x * 16))
    return x, y


def _model(key):
    return load_model(MODELS / f"lenet_digits_{key}.qnn")


def _mac_layers(model):
    return [lay for lay in model.layers if lay.op in ("conv2d", "dense")]


@pytest.mark.parametrize("key", sorted(FLOORS))
def test_model_accuracy_and_bit_exact(key, testset):
    x, y = testset
    model = _model(key)
    codes = quantize_input(model, x)
    assert np.array_equal(codes, np.rint(x.astype(np.float64) * 16).astype(np.int64))  # the raw pixels
    assert np.array_equal(model.sample_input, codes[:8])

    engine = Engine(model)
    validation = compare(engine, codes)
    assert validation.passed, f"{key}: engine and float64 reference part ways at {validation.first_divergent}"

    out = engine.run(codes).output
    pred = model.layers[-1].out_enc.decode(out).argmax(axis=1)
    acc = float((pred == y).mean())
    assert acc >= FLOORS[key], f"{key}: hwsim accuracy {acc:.4f} below the floor {FLOORS[key]}"
    assert abs(acc - model.metadata["expected_hwsim_test_accuracy"]) < 5e-5
    assert (MODELS / f"lenet_digits_{key}.qnn").stat().st_size < 64 * 1024


def test_metadata_says_how_it_was_made():
    for key in FLOORS:
        md = _model(key).metadata
        for field in ("description", "dataset", "input", "made_by", "float_test_accuracy", "seeds"):
            assert field in md, f"{key}: metadata.{field} missing"


def test_u8_encodings():
    model = _model("u8")
    for lay in _mac_layers(model):
        assert isinstance(lay.weight_enc, UniformW) and lay.weight_enc.bits == 8 and lay.weight_enc.signed
        assert lay.bias_bits == 32
    for lay in _mac_layers(model)[:-1]:
        enc = lay.out_enc
        assert isinstance(enc, UniformAct) and enc.bits == 8 and not enc.signed
        assert np.log2(enc.scale) == np.round(np.log2(enc.scale))  # power-of-two activation scale


def test_codebook_encodings():
    for lay in _mac_layers(_model("codebook")):
        assert isinstance(lay.weight_enc, CodebookW) and lay.weight_enc.index_bits == 4
        assert lay.codebook.shape == (1, 16)


def test_enq_encodings():
    encs = [lay.out_enc for lay in _mac_layers(_model("enq"))[:-1]]
    assert all(isinstance(e, EnqAct) and e.qm_bits == 8 and e.e_bits < 8 for e in encs)


def test_knq_encodings():
    encs = [lay.out_enc for lay in _mac_layers(_model("knq"))[:-1]]
    for e in encs:
        assert isinstance(e, KnqAct) and e.t_bits in (3, 4)
        assert e.thresholds == e.centroids[1:]          # seed 004: x -> k if d_k <= x < d_{k+1}
        assert 0 <= e.centroids[0] and e.centroids[-1] <= 255


def test_xnor_has_popcount_layers():
    model = _model("xnor")
    xnor = [lay.name for lay in model.layers if lay.is_xnor]
    assert len(xnor) >= 1
    for name in xnor:
        lay = model.layer(name)
        assert isinstance(lay.weight_enc, BinaryW) and isinstance(lay.in_encs[0], BinaryAct)
