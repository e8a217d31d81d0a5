"""Read a .tflite flatbuffer into plain Python objects, with the maintained schema package `tflite`.

Everything the importer needs is copied out of the flatbuffer here, once, with every length, index and offset
checked against the file: a truncated or hostile file gives one HwsimError line, never an IndexError deep in
the importer, a huge allocation or a hang. The `tflite` package (generated from TFLite's schema.fbs) does the
decoding; it does no bounds checks of its own, which is why each access below is guarded.
"""

from __future__ import annotations

import math
import os
import struct
from dataclasses import dataclass, field

import numpy as np

from ..errors import HwsimError
from . import require

MAX_FILE_BYTES = 256 << 20          # a .tflite this tool can simulate is far smaller
MAX_TENSORS = 100_000
MAX_OPS = 100_000
MAX_RANK = 8

# TFLite TensorType values (schema.fbs) -> numpy dtype names
TENSOR_TYPES = {0: "float32", 1: "float16", 2: "int32", 3: "uint8", 4: "int64", 6: "bool", 7: "int16",
                9: "int8", 10: "float64", 15: "uint32", 16: "uint16", 17: "int4"}


@dataclass
class TTensor:
    index: int
    name: str
    shape: tuple                      # as stored, batch dimension included
    dtype: str                        # numpy dtype name, or "type N" for a type hwsim does not know
    scales: np.ndarray                # float32, empty when the tensor is not quantized
    zero_points: np.ndarray           # int64
    quantized_dimension: int
    data: np.ndarray | None = None    # constant tensors: the values, reshaped to `shape`


@dataclass
class TOp:
    index: int
    name: str                         # the builtin operator name, e.g. "CONV_2D"
    inputs: list                      # tensor indices, -1 for an omitted optional input
    outputs: list
    options: dict = field(default_factory=dict)


@dataclass
class TGraph:
    tensors: list
    ops: list
    inputs: list
    outputs: list
    version: int
    description: str
    subgraphs: int


def _fail(path, msg, where=None):
    raise HwsimError(msg, source=os.fspath(path), field=where)


def _builtin_names(tfl) -> dict:
    return {v: k for k, v in vars(tfl.BuiltinOperator).items() if not k.startswith("_") and isinstance(v, int)}


# Builtin options read per op: (options class name, {our key: accessor name})
_OPTIONS = {
    "CONV_2D": ("Conv2DOptions", {"padding": "Padding", "stride_w": "StrideW", "stride_h": "StrideH",
                                  "activation": "FusedActivationFunction", "dilation_w": "DilationWFactor",
                                  "dilation_h": "DilationHFactor"}),
    "DEPTHWISE_CONV_2D": ("DepthwiseConv2DOptions", {
        "padding": "Padding", "stride_w": "StrideW", "stride_h": "StrideH", "depth_multiplier": "DepthMultiplier",
        "activation": "FusedActivationFunction", "dilation_w": "DilationWFactor", "dilation_h": "DilationHFactor"}),
    "FULLY_CONNECTED": ("FullyConnectedOptions", {"activation": "FusedActivationFunction",
                                                  "weights_format": "WeightsFormat", "keep_num_dims": "KeepNumDims"}),
    "AVERAGE_POOL_2D": ("Pool2DOptions", {"padding": "Padding", "stride_w": "StrideW", "stride_h": "StrideH",
                                          "filter_w": "FilterWidth", "filter_h": "FilterHeight",
                                          "activation": "FusedActivationFunction"}),
    "ADD": ("AddOptions", {"activation": "FusedActivationFunction"}),
    "SUB": ("SubOptions", {"activation": "FusedActivationFunction"}),
    "MUL": ("MulOptions", {"activation": "FusedActivationFunction"}),
    "CONCATENATION": ("ConcatenationOptions", {"axis": "Axis", "activation": "FusedActivationFunction"}),
    "SOFTMAX": ("SoftmaxOptions", {"beta": "Beta"}),
    "REDUCER": ("ReducerOptions", {"keep_dims": "KeepDims"}),
    "SQUEEZE": ("SqueezeOptions", {"squeeze_dims": "SqueezeDimsAsNumpy"}),
    "RESHAPE": ("ReshapeOptions", {"new_shape": "NewShapeAsNumpy"}),
}
_OPTIONS["MAX_POOL_2D"] = _OPTIONS["AVERAGE_POOL_2D"]
_OPTIONS["MEAN"] = _OPTIONS["REDUCER"]


def _read_options(tfl, op_fb, name):
    spec = _OPTIONS.get(name)
    if spec is None:
        return {}
    table = op_fb.BuiltinOptions()
    if table is None:
        return {}
    opts = getattr(tfl, spec[0])()
    opts.Init(table.Bytes, table.Pos)
    out = {}
    for key, accessor in spec[1].items():
        value = getattr(opts, accessor)()
        if isinstance(value, np.ndarray):
            value = [int(v) for v in value]
        elif isinstance(value, (int, np.integer)):
            value = int(value)
        elif isinstance(value, (float, np.floating)):
            value = float(value)
        out[key] = value
    return out


def _count(path, n, limit, what, buf_len):
    if not 0 <= n <= min(limit, buf_len // 4):
        _fail(path, f"malformed TFLite flatbuffer: {what} count {n} is impossible for a {buf_len}-byte file")
    return n


def read_tflite(path) -> TGraph:
    tfl = require("tflite", "tflite")
    path = os.fspath(path)
    try:
        size = os.path.getsize(path)
    except OSError as exc:
        _fail(path, f"cannot read: {exc.strerror or exc}")
    if size > MAX_FILE_BYTES:
        _fail(path, f"the file is {size:,} bytes; hwsim reads TFLite models up to {MAX_FILE_BYTES:,} bytes")
    with open(path, "rb") as f:
        buf = f.read()
    if len(buf) < 8 or buf[4:8] != b"TFL3":
        _fail(path, "not a TFLite flatbuffer (its file identifier is not 'TFL3')", "magic")
    try:
        return _read(tfl, path, bytearray(buf))
    except HwsimError:
        raise
    except (IndexError, struct.error, ValueError, TypeError, AttributeError, UnicodeDecodeError, OverflowError,
            RecursionError, MemoryError) as exc:
        what = ("an offset or length points outside the file" if isinstance(exc, (IndexError, struct.error))
                else f"{type(exc).__name__} while decoding it")
        _fail(path, f"malformed TFLite flatbuffer: {what} (truncated or corrupt file?)")


def _text(raw) -> str:
    if raw is None:
        return ""
    return raw.decode("utf-8", "replace") if isinstance(raw, (bytes, bytearray)) else str(raw)


def _read(tfl, path, buf) -> TGraph:
    n = len(buf)
    model = tfl.Model.GetRootAs(buf, 0)
    version = int(model.Version())
    n_sub = _count(path, model.SubgraphsLength(), 1000, "subgraph", n)
    if n_sub < 1:
        _fail(path, "the model has no subgraph", "subgraphs")
    sub = model.Subgraphs(0)
    names = _builtin_names(tfl)
    n_codes = _count(path, model.OperatorCodesLength(), 10_000, "operator code", n)
    codes = []
    for i in range(n_codes):
        oc = model.OperatorCodes(i)
        code = max(int(oc.BuiltinCode()), int(oc.DeprecatedBuiltinCode()))
        name = names.get(code, f"builtin code {code}")
        if name == "CUSTOM":
            name = f"CUSTOM ({_text(oc.CustomCode())})"
        codes.append(name)
    n_buffers = _count(path, model.BuffersLength(), 10 * MAX_TENSORS, "buffer", n)

    tensors = []
    for i in range(_count(path, sub.TensorsLength(), MAX_TENSORS, "tensor", n)):
        t = sub.Tensors(i)
        shape = tuple(int(d) for d in t.ShapeAsNumpy()) if t.ShapeLength() else ()
        if len(shape) > MAX_RANK:
            _fail(path, f"tensor {i} has rank {len(shape)}", f"tensors[{i}].shape")
        type_id = int(t.Type())
        dtype = TENSOR_TYPES.get(type_id, f"type {type_id}")
        q = t.Quantization()
        scales = np.zeros(0, np.float32)
        zps = np.zeros(0, np.int64)
        qdim = 0
        if q is not None:
            if q.ScaleLength():
                scales = np.asarray(q.ScaleAsNumpy(), dtype=np.float32)
            if q.ZeroPointLength():
                zps = np.asarray(q.ZeroPointAsNumpy(), dtype=np.int64)
            qdim = int(q.QuantizedDimension())
        data = None
        b = int(t.Buffer())
        if not 0 <= b < max(n_buffers, 1):
            _fail(path, f"tensor {i} names buffer {b}, but the file has {n_buffers}", f"tensors[{i}].buffer")
        if b > 0:
            data = _buffer_data(path, model.Buffers(b), buf, i, dtype, shape)
        tensors.append(TTensor(i, _text(t.Name()), shape, dtype, scales, zps, qdim, data))

    def tensor_list(arr, where):
        out = [int(v) for v in arr]
        for v in out:
            if not -1 <= v < len(tensors):
                _fail(path, f"refers to tensor {v}, but the subgraph has {len(tensors)}", where)
        return out

    ops = []
    for i in range(_count(path, sub.OperatorsLength(), MAX_OPS, "operator", n)):
        o = sub.Operators(i)
        ci = int(o.OpcodeIndex())
        if not 0 <= ci < len(codes):
            _fail(path, f"operator {i} has opcode index {ci}, but the file has {len(codes)}", f"operators[{i}]")
        name = codes[ci]
        ins = tensor_list(o.InputsAsNumpy() if o.InputsLength() else [], f"operators[{i}].inputs")
        outs = tensor_list(o.OutputsAsNumpy() if o.OutputsLength() else [], f"operators[{i}].outputs")
        ops.append(TOp(i, name, ins, outs, _read_options(tfl, o, name)))
    g_in = tensor_list(sub.InputsAsNumpy() if sub.InputsLength() else [], "subgraphs[0].inputs")
    g_out = tensor_list(sub.OutputsAsNumpy() if sub.OutputsLength() else [], "subgraphs[0].outputs")
    return TGraph(tensors, ops, g_in, g_out, version, _text(model.Description()), n_sub)


def _buffer_data(path, buffer, buf, i, dtype, shape):
    where = f"tensors[{i}].buffer"
    offset = int(buffer.Offset()) if hasattr(buffer, "Offset") else 0
    if offset > 1:                     # large models keep constant data after the flatbuffer
        length = int(buffer.Size())
        if offset + length > len(buf):
            _fail(path, f"tensor {i}'s data lies beyond the end of the file (offset {offset}, {length} bytes)", where)
        raw = bytes(buf[offset:offset + length])
    else:
        if not buffer.DataLength():
            return None
        raw = buffer.DataAsNumpy().tobytes()
    if not raw:
        return None
    if dtype not in ("float32", "int32", "int8", "uint8", "int16", "int64", "float16"):
        return np.frombuffer(raw, dtype=np.uint8)     # the importer refuses the tensor by its type
    count = math.prod(shape) if shape else 1
    item = np.dtype(dtype).itemsize
    if any(d < 0 for d in shape) or len(raw) != count * item:
        _fail(path, f"tensor {i} ({list(shape)}, {dtype}) holds {len(raw)} bytes of data, expected "
                    f"{count * item}", where)
    return np.frombuffer(raw, dtype=np.dtype(dtype).newbyteorder("<")).reshape(shape)
