"""Write then read gives back exactly the same model, for random models covering every op and encoding."""

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from model_factory import random_model
from simulator.qnn.model_io import load_model, model_to_header, save_model


def assert_same_model(a, b):
    assert a.name == b.name and tuple(a.input_shape) == tuple(b.input_shape)
    assert a.input_enc == b.input_enc and a.input_rounding == b.input_rounding
    assert a.metadata == b.metadata
    assert (a.sample_input is None) == (b.sample_input is None)
    if a.sample_input is not None:
        np.testing.assert_array_equal(a.sample_input, b.sample_input)
    assert len(a.layers) == len(b.layers)
    for x, y in zip(a.layers, b.layers):
        assert (x.name, x.op, list(x.inputs), x.out_enc, x.weight_enc, x.out_shape) == \
               (y.name, y.op, list(y.inputs), y.out_enc, y.weight_enc, y.out_shape)
        assert {k: v for k, v in x.attrs.items()} == {k: v for k, v in y.attrs.items()}
        for key in ("weight", "bias", "codebook"):
            u, v = getattr(x, key), getattr(y, key)
            assert (u is None) == (v is None)
            if u is not None:
                assert u.shape == v.shape
                np.testing.assert_array_equal(u, v)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**32 - 1))
def test_write_read_roundtrip(tmp_path, seed):
    model = random_model(seed, requant=("float64", "float32", "fixed_double", "fixed_single", "shift"))
    path = tmp_path / "m.qnn"
    save_model(model, path)
    loaded = load_model(path)
    assert_same_model(model, loaded)
    # a second write of the loaded model produces the same bytes: nothing is lost or reordered
    path2 = tmp_path / "m2.qnn"
    save_model(loaded, path2)
    assert path.read_bytes() == path2.read_bytes()


def test_file_size_shows_real_storage(tmp_path):
    """4-bit codebook indices take about N/2 bytes in the file, binary weights about N/8."""
    from simulator.encodings import BinaryAct, BinaryW, CodebookW, UniformAct
    from simulator.graph import Layer, Model
    rng = np.random.default_rng(0)
    n_out, k = 64, 1024
    def model_with(enc, codes, table=None, in_enc=UniformAct(8)):
        lay = Layer("fc", "dense", ["input"], {}, UniformAct(8), codes, enc, table)
        return Model("m", (k,), in_enc, [lay])
    sizes = {}
    for label, enc, codes, table, in_enc in [
            ("cb4", CodebookW(4, 8), rng.integers(0, 16, (n_out, k)), rng.integers(-128, 128, (1, 16)), UniformAct(8)),
            ("bin", BinaryW((1.0,)), rng.integers(0, 2, (n_out, k)), None, BinaryAct())]:
        path = tmp_path / f"{label}.qnn"
        save_model(model_with(enc, codes, table, in_enc), path)
        header, _ = model_to_header(model_with(enc, codes, table, in_enc))
        sizes[label] = path.stat().st_size
    n = n_out * k
    assert n / 2 <= sizes["cb4"] < n / 2 + 4096
    assert n / 8 <= sizes["bin"] < n / 8 + 4096
