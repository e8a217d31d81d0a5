"""Model <-> .qnn file: the graph goes into the container's JSON header, integer tensors into bit-packed blobs.

Tensor names: "<layer>.weight", "<layer>.bias", "<layer>.codebook", "<layer>.table" (lut), "sample_input".
Every field read from a file is type-checked here or in Model.check() before use.
"""

from __future__ import annotations

import os

import numpy as np


from ..encodings import EnqAct, KnqAct, UniformAct, activation_from_dict, weight_from_dict
from ..errors import HwsimError
from ..graph import ATTR_DEFAULTS, Layer, Model, check_sample_size, table_bits
from .container import container_bytes, read_container, write_container

MODEL_KEYS = {"name", "input", "output", "layers", "metadata"}
INPUT_KEYS = {"shape", "encoding", "rounding", "division"}
OUTPUT_KEYS = {"dequantize", "bias"}
LAYER_KEYS = {"name", "op", "inputs", "attrs", "encoding", "weight_encoding", "bias_bits"}


def model_to_header(model: Model) -> tuple[dict, dict]:
    model.check()
    tensors = {}
    layers = []
    for lay in model.layers:
        entry = {"name": lay.name, "op": lay.op, "inputs": list(lay.inputs),
                 "attrs": {k: v for k, v in lay.attrs.items() if k in ATTR_DEFAULTS[lay.op]},
                 "encoding": lay.out_enc.to_dict()}
        if lay.weight is not None:
            enc = lay.weight_enc
            entry["weight_encoding"] = enc.to_dict()
            tensors[f"{lay.name}.weight"] = (lay.weight, enc.storage_bits, enc.storage_signed)
            if lay.codebook is not None:
                tensors[f"{lay.name}.codebook"] = (lay.codebook, enc.table_bits, True)
        if lay.bias is not None:
            entry["bias_bits"] = lay.bias_bits
            tensors[f"{lay.name}.bias"] = (lay.bias, lay.bias_bits, True)
        if lay.table is not None:
            signed = lay.op == "lut_avgpool" or bool(lay.out_enc.code_range()[0] < 0)
            tensors[f"{lay.name}.table"] = (lay.table, table_bits(lay), signed)
        layers.append(entry)
    if model.sample_input is not None:
        enc = model.input_enc
        tensors["sample_input"] = (model.sample_input, enc.storage_bits, bool(getattr(enc, "signed", False)))
    inp = {"shape": list(model.input_shape), "encoding": model.input_enc.to_dict(), "rounding": model.input_rounding}
    if model.input_division != "float64":
        inp["division"] = model.input_division
    header = {"model": {"name": model.name, "input": inp, "layers": layers, "metadata": model.metadata}}
    if model.output_dequantize:
        header["model"]["output"] = {"dequantize": model.output_dequantize}
        if getattr(model, "output_bias", None) is not None:
            header["model"]["output"]["bias"] = [float(v) for v in model.output_bias]
    return header, tensors


def save_model(model: Model, path) -> None:
    header, tensors = model_to_header(model)
    write_container(path, header, tensors)


def model_bytes(model: Model, path="<bytes>") -> bytes:
    """The `.qnn` file of `model` as bytes (for an output plan, simulator.fileio.Outputs); `path` names it in
    errors."""
    header, tensors = model_to_header(model)
    return container_bytes(header, tensors, source=str(path))


def _require(d, keys, required, fld):
    if not isinstance(d, dict):
        raise HwsimError("must be a JSON object", field=fld)
    unknown = set(d) - keys
    if unknown:
        raise HwsimError(f"unknown key(s) {sorted(unknown)}", field=fld)
    missing = required - set(d)
    if missing:
        raise HwsimError(f"missing key(s) {sorted(missing)}", field=fld)


def _check_declared_sizes(header: dict, table: dict) -> None:
    """Declared sizes, before any blob is unpacked: the sample input is [N >= 1, *input shape], within the limit."""
    if "sample_input" not in table:
        return
    shape = table["sample_input"][0]
    m = header.get("model")
    inp = m.get("input") if isinstance(m, dict) else None
    want = inp.get("shape") if isinstance(inp, dict) else None
    fld = "tensors.sample_input.shape"
    if isinstance(want, list) and (len(shape) != len(want) + 1 or shape[1:] != want):
        raise HwsimError(f"{str(shape)[:60]} does not match [N, *model.input.shape]", field=fld)
    if not shape or shape[0] < 1:
        raise HwsimError("the sample input holds no samples", field=fld)
    count = 1
    for n in shape:
        count *= n
    check_sample_size(count, fld)


def _check_stored_width(header: dict, name: str, bits, signed, fld: str) -> None:
    """A tensor's stored width (the container's table) must be the width its header field declares."""
    table = header.get("tensors")
    entry = table.get(name) if isinstance(table, dict) else None
    if not isinstance(entry, dict):
        return  # not read from a container (header built in memory)
    if entry.get("bits") != bits or entry.get("signed") is not signed:
        kind = "signed" if signed else "unsigned"
        raise HwsimError(f"declares {kind} {bits}-bit values, but tensor {name!r} is stored as "
                         f"{'signed' if entry.get('signed') else 'unsigned'} {entry.get('bits')}-bit", field=fld)


def header_to_model(header: dict, tensors: dict, source: str) -> Model:
    m = header.get("model")
    _require(m, MODEL_KEYS, {"name", "input", "layers"}, "model")
    inp = m["input"]
    _require(inp, INPUT_KEYS, {"shape", "encoding"}, "model.input")
    if not isinstance(inp["shape"], list):
        raise HwsimError("must be a list", field="model.input.shape")
    if not isinstance(m["layers"], list):
        raise HwsimError("must be a list", field="model.layers")
    used = set()

    def tensor(name):
        used.add(name)
        return tensors.get(name)

    layers = []
    for i, d in enumerate(m["layers"]):
        fld = f"model.layers[{i}]"
        _require(d, LAYER_KEYS, {"name", "op", "inputs", "encoding"}, fld)
        name = d["name"]
        if not isinstance(name, str):
            raise HwsimError("must be a string", field=f"{fld}.name")
        if not isinstance(d.get("attrs", {}), dict):
            raise HwsimError("must be a JSON object", field=f"{fld}.attrs")
        if not isinstance(d["inputs"], list) or not all(isinstance(x, str) for x in d["inputs"]):
            raise HwsimError("must be a list of tensor names", field=f"{fld}.inputs")
        lay = Layer(name=name, op=d["op"], inputs=list(d["inputs"]), attrs=dict(d.get("attrs", {})),
                    out_enc=activation_from_dict(d["encoding"], f"{fld}.encoding"))
        if "weight_encoding" in d:
            lay.weight_enc = weight_from_dict(d["weight_encoding"], f"{fld}.weight_encoding")
            lay.weight = tensor(f"{name}.weight")
            if lay.weight is None:
                raise HwsimError(f"tensor '{name}.weight' is missing", field=f"{fld}.weight_encoding")
            enc = lay.weight_enc
            _check_stored_width(header, f"{name}.weight", enc.storage_bits, bool(enc.storage_signed),
                                f"{fld}.weight_encoding")
            lay.codebook = tensor(f"{name}.codebook")
            if lay.codebook is not None:
                _check_stored_width(header, f"{name}.codebook", getattr(enc, "table_bits", None), True,
                                    f"{fld}.weight_encoding.table_bits")
        lay.bias = tensor(f"{name}.bias")
        lay.table = tensor(f"{name}.table")
        if lay.table is not None:
            out_enc = lay.out_enc
            if lay.op == "lut_avgpool":
                _check_stored_width(header, f"{name}.table", 32, True, f"{fld}.op")
            elif isinstance(out_enc, (UniformAct, KnqAct, EnqAct)):
                _check_stored_width(header, f"{name}.table", out_enc.storage_bits,
                                    bool(out_enc.code_range()[0] < 0), f"{fld}.encoding")
        bias_bits = d.get("bias_bits", 32)
        if isinstance(bias_bits, bool) or not isinstance(bias_bits, int) or not 1 <= bias_bits <= 64:
            raise HwsimError(f"must be an integer in [1, 64], got {str(bias_bits)[:40]}", field=f"{fld}.bias_bits")
        if lay.bias is not None:
            _check_stored_width(header, f"{name}.bias", bias_bits, True, f"{fld}.bias_bits")
        lay.bias_bits = bias_bits
        layers.append(lay)
    metadata = m.get("metadata", {})
    if not isinstance(metadata, dict):
        raise HwsimError("must be a JSON object", field="model.metadata")
    sample = tensor("sample_input")
    extra = set(tensors) - used
    if extra:
        raise HwsimError(f"tensor(s) {sorted(extra)} belong to no layer", field="tensors")
    if not isinstance(m["name"], str):
        raise HwsimError("must be a string", field="model.name")
    rounding = inp.get("rounding", "half_even")
    division = inp.get("division", "float64")
    if not isinstance(division, str):
        raise HwsimError(f"must be a string, got {division!r}", field="model.input.division")
    out = m.get("output", {})
    _require(out, OUTPUT_KEYS, set(), "model.output")
    dequantize = out.get("dequantize", False)
    if not (isinstance(dequantize, bool) or dequantize == "tflite_optimized"):
        raise HwsimError(f"must be true, false or 'tflite_optimized', got {dequantize!r}",
                         field="model.output.dequantize")
    output_bias = out.get("bias")
    if output_bias is not None:
        if (not isinstance(output_bias, list) or not output_bias or len(output_bias) > (1 << 24)
                or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in output_bias)):
            raise HwsimError("must be a non-empty list of numbers (one float32 per output channel)",
                             field="model.output.bias")
        output_bias = np.asarray(output_bias, dtype=np.float64)
    input_enc = activation_from_dict(inp["encoding"], "model.input.encoding")
    if sample is not None:
        _check_stored_width(header, "sample_input", input_enc.storage_bits, bool(getattr(input_enc, "signed", False)),
                            "model.input.encoding")
    model = Model(name=m["name"], input_shape=tuple(inp["shape"]),
                  input_enc=input_enc,
                  layers=layers, input_rounding=rounding, sample_input=sample, metadata=metadata,
                  source=source, input_division=division, output_dequantize=dequantize)
    if output_bias is not None:
        model.output_bias = output_bias
    return model.check()


def load_model(path) -> Model:
    source = os.fspath(path)
    header, tensors = read_container(path, check_table=_check_declared_sizes)
    try:
        return header_to_model(header, tensors, source)
    except HwsimError as exc:
        raise HwsimError(exc.message, source=source, field=exc.field) from None
