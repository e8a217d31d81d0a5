"""Mutated model files through the whole reader (container + graph checks) and, when they load, the engine.

The container's own fuzz test (test_qnn_container.py) mostly meets CRC failures; these mutations rewrite the
header and tensors *with valid checksums*, so they reach the graph checks: wrong types, negative and huge
numbers, missing keys, swapped tensors, codes beyond a codebook. Every file must either load and run, or fail
with one HwsimError naming the file. Deterministic (fixed seed).
"""

import copy
import random
from pathlib import Path

import numpy as np
import pytest

from simulator.engine import Engine
from simulator.errors import HwsimError
from simulator.qnn.container import read_container, write_container
from simulator.qnn.model_io import load_model

MODELS = sorted((Path(__file__).resolve().parents[1] / "models").glob("*.qnn"))
WEIRD_VALUES = [None, True, False, 0, -1, 1, 2, 3, 7, 8, 9, 16, 17, 33, 64, 65, -(2**31), 2**31, 2**63, 10**12,
                0.5, -0.0, 1e-300, 1e300, "", "x", "uniform", "conv2d", "relu", "input", [], [0], [1, 1],
                [0, 0, 0, 0], [-1, -1], [10**9, 10**9], [2, 2, 2, 2], {}, {"kind": "binary"}, [[1]], "fc1"]


def paths_of(node, prefix=()):
    """Every (path, value) in a JSON tree."""
    yield prefix, node
    if isinstance(node, dict):
        for key, value in node.items():
            yield from paths_of(value, prefix + (key,))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from paths_of(value, prefix + (i,))


def set_path(tree, path, value, delete=False):
    node = tree
    for key in path[:-1]:
        node = node[key]
    if delete and isinstance(node, dict):
        del node[path[-1]]
    elif delete and isinstance(node, list):
        node.pop(path[-1])
    else:
        node[path[-1]] = value


def mutate(rng, header, tensors):
    header = copy.deepcopy(header)
    tensors = dict(tensors)
    kind = rng.randrange(4)
    model_paths = [p for p, _ in paths_of(header["model"]) if p]
    if kind == 0:      # replace one value anywhere in the graph description
        set_path(header["model"], rng.choice(model_paths), copy.deepcopy(rng.choice(WEIRD_VALUES)))
    elif kind == 1:    # delete a key or a list item
        set_path(header["model"], rng.choice(model_paths), None, delete=True)
    elif kind == 2:    # swap two tensors (shapes no longer chain)
        if len(tensors) >= 2:
            a, b = rng.sample(sorted(tensors), 2)
            tensors[a], tensors[b] = tensors[b], tensors[a]
    else:              # rewrite a tensor's values or shape: codes at the edges of their width, reshapes
        name = rng.choice(sorted(tensors))
        values, bits, signed = tensors[name]
        values = np.array(values, dtype=np.int64)
        lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
        flat = values.reshape(-1)
        if flat.size:
            idx = rng.randrange(flat.size)
            flat[idx] = rng.choice([lo, hi, 0])
        if rng.random() < 0.3 and values.size:
            values = values.reshape(-1)[: max(values.size - rng.randrange(1, 4), 0)]
        tensors[name] = (values, bits, signed)
    return header, tensors


@pytest.mark.parametrize("model_path", MODELS, ids=[p.stem for p in MODELS])
def test_mutated_models_load_or_fail_cleanly(tmp_path, model_path):
    header, raw_tensors = read_container(model_path)
    table = header.pop("tensors")
    header.pop("format_version", None)
    tensors = {name: (raw_tensors[name], entry["bits"], entry["signed"]) for name, entry in table.items()}
    rng = random.Random(f"fuzz-{model_path.stem}")
    n_files = 250  # per shipped model: five models give well over a thousand files
    outcomes = {"loaded": 0, "rejected": 0}
    for i in range(n_files):
        mutated_header, mutated_tensors = mutate(rng, header, tensors)
        path = tmp_path / f"m{i}.qnn"
        try:
            write_container(path, mutated_header, mutated_tensors)
        except HwsimError:
            continue  # the writer refused (e.g. a value beyond its width): nothing to read
        try:
            model = load_model(path)
        except HwsimError as exc:
            assert exc.line().startswith(str(path)), exc.line()
            outcomes["rejected"] += 1
            continue
        outcomes["loaded"] += 1
        if model.sample_input is not None:
            try:
                Engine(model).run(model.sample_input[:2])
            except HwsimError:
                pass
    assert outcomes["rejected"] > n_files // 4, outcomes

