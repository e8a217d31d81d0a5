"""The ONNX front end every reader shares: load a file safely, walk its nodes, fold constants, report errors.

A reader (the float reader here; the quantized readers build on the same views) walks `OnnxGraph.nodes()` and
asks the op registry (`ops/`) for the handler of each node. A handler checks the node's attributes, infers its
output shape and says what the node becomes in hwsim. Every error is one HwsimError naming the file and the
node ("node conv1 (Conv)").
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass

import numpy as np

from ...errors import HwsimError
from .. import require

MAX_MODEL_BYTES = 2 << 30          # protobuf's own limit; a larger file cannot be a valid single-file model
# Ops a reader may evaluate when every input is a constant (shape arithmetic as exporters write it: Shape ->
# Gather -> Unsqueeze -> Concat -> Reshape; transposed or cast weights). Element-wise or shrinking ops only, on
# bounded inputs, so folding can never blow up memory.
FOLDABLE = ("Gather", "Unsqueeze", "Squeeze", "Concat", "Cast", "Slice", "Add", "Sub", "Mul", "Div", "Neg",
            "ReduceProd", "Reshape", "Transpose", "Identity", "Floor", "Ceil", "Sqrt")
MAX_FOLD_ELEMENTS = 1 << 24


def load_onnx(path):
    """Read an ONNX file; a missing or malformed file is one HwsimError naming it."""
    onnx = require("onnx")
    source = os.fspath(path)
    if not os.path.exists(source):
        raise HwsimError("file not found", source=source)
    if not os.path.isfile(source):
        raise HwsimError("not a file", source=source)
    if os.path.getsize(source) > MAX_MODEL_BYTES:
        raise HwsimError(f"larger than {MAX_MODEL_BYTES >> 30} GiB: not a single-file ONNX model", source=source)
    try:
        proto = onnx.load(source)
    except Exception as exc:  # protobuf DecodeError, external-data errors, ...
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise HwsimError(f"not a readable ONNX model ({type(exc).__name__}: {detail[:200]})", source=source) from None
    if not proto.HasField("graph") or not proto.graph.node:
        raise HwsimError("not an ONNX model: no graph nodes", source=source)
    return proto


def file_sha256(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass
class Node:
    """One ONNX node as a handler sees it: parsed attributes, constant inputs, and a way to fail."""
    proto: object
    index: int
    graph: "OnnxGraph"

    @property
    def op_type(self) -> str:
        return self.proto.op_type

    @property
    def name(self) -> str:
        return self.proto.name or f"{self.proto.op_type}_{self.index}"

    @property
    def where(self) -> str:
        return f"node {self.name} ({self.op_type})"

    @property
    def inputs(self) -> list:
        return list(self.proto.input)

    @property
    def outputs(self) -> list:
        return list(self.proto.output)

    def fail(self, message: str):
        raise HwsimError(message, field=self.where)

    def attrs(self) -> dict:
        onnx = require("onnx")
        return {a.name: onnx.helper.get_attribute_value(a) for a in self.proto.attribute}

    def attr(self, key, default=None):
        return self.attrs().get(key, default)

    def text_attrs(self) -> dict:
        """attrs() with string attributes decoded (rounding_mode="ROUND" rather than b"ROUND")."""
        return {k: v.decode() if isinstance(v, bytes) else v for k, v in self.attrs().items()}

    def input(self, i: int) -> str:
        """The name of input i, "" when it is absent (an omitted optional input)."""
        return self.proto.input[i] if i < len(self.proto.input) else ""

    def only_attrs(self, allowed: dict):
        """Fail on an attribute the handler does not implement with a value other than its neutral one."""
        for key, value in self.attrs().items():
            if key not in allowed:
                self.fail(f"attribute {key!r} is not supported")
            neutral = allowed[key]
            if neutral is not None and _plain(value) != neutral:
                self.fail(f"attribute {key}={_plain(value)!r} is not supported (only {neutral!r})")

    def const(self, i: int, what: str, required: bool = True):
        """Input i as a constant numpy array (an initializer or a folded Constant), or None when absent."""
        name = self.proto.input[i] if i < len(self.proto.input) else ""
        if not name:
            if required:
                self.fail(f"missing {what} (input {i})")
            return None
        if name not in self.graph.consts:
            self.fail(f"{what} ({name!r}) must be a constant (an initializer)")
        return self.graph.consts[name]

    def is_const(self, i: int) -> bool:
        return i < len(self.proto.input) and self.proto.input[i] in self.graph.consts


def _plain(value):
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


class OnnxGraph:
    """A loaded ONNX graph: constants as numpy arrays, the one data input, nodes in file order (checked topological)."""

    def __init__(self, path, proto=None):
        self.source = os.fspath(path)
        self.proto = load_onnx(path) if proto is None else proto
        onnx = require("onnx")
        graph = self.proto.graph
        self.consts = {}
        try:
            for init in graph.initializer:
                self.consts[init.name] = onnx.numpy_helper.to_array(init)
        except Exception as exc:
            raise HwsimError(f"unreadable initializer ({type(exc).__name__})", source=self.source,
                             field="graph.initializer") from None
        self.inputs = [vi for vi in graph.input if vi.name not in self.consts]
        if len(self.inputs) != 1:
            raise HwsimError(f"the graph must have exactly one data input, found {len(self.inputs)}",
                             source=self.source, field="graph.input")
        self.input_name = self.inputs[0].name
        self.output_names = [o.name for o in graph.output]
        if not self.output_names:
            raise HwsimError("the graph has no output", source=self.source, field="graph.output")
        self._check_order()

    def input_dims(self) -> list:
        """Declared input dimensions, None where symbolic or unknown."""
        tt = self.inputs[0].type.tensor_type
        if not tt.HasField("shape"):
            return []
        return [d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim]

    def _check_order(self):
        known = set(self.consts) | {self.input_name, ""}
        for i, proto in enumerate(self.proto.graph.node):
            node = Node(proto, i, self)
            for name in proto.input:
                if name not in known:
                    raise HwsimError(f"input {name!r} is not produced by an earlier node (a missing initializer? "
                                     "the graph must also be topologically sorted, as ONNX requires)",
                                     source=self.source, field=node.where)
            known.update(proto.output)

    def fold(self, node: "Node") -> bool:
        """Evaluate `node` if every input is a constant and its op is FOLDABLE (ONNX's reference implementation);
        its outputs become constants. Returns whether it was folded."""
        names = [n for n in node.inputs if n]
        if node.op_type not in FOLDABLE or not names or any(n not in self.consts for n in names):
            return False
        if node.proto.domain not in ("", "ai.onnx"):
            return False
        if sum(np.asarray(self.consts[n]).size for n in names) > MAX_FOLD_ELEMENTS:
            node.fail(f"constant inputs larger than {MAX_FOLD_ELEMENTS:,} elements are not folded")
        from onnx.reference import ReferenceEvaluator
        version = next((o.version for o in self.proto.opset_import if o.domain in ("", "ai.onnx")), None)
        try:
            ev = ReferenceEvaluator(node.proto, opsets={"": version} if version else None)
            outs = ev.run(None, {n: self.consts[n] for n in names})
        except Exception as exc:
            node.fail(f"cannot fold this constant expression ({type(exc).__name__}: {str(exc)[:120]})")
        for name, value in zip(node.outputs, outs):
            self.consts[name] = np.asarray(value)
        return True

    def nodes(self):
        for i, proto in enumerate(self.proto.graph.node):
            yield Node(proto, i, self)

    def error(self, exc: Exception, node: Node | None = None) -> HwsimError:
        """Any exception from a handler as one HwsimError line naming the file (and the node)."""
        if isinstance(exc, HwsimError):
            return HwsimError(exc.message, source=exc.source or self.source, field=exc.field)
        detail = str(exc).splitlines()[0][:200] if str(exc) else ""
        where = node.where if node is not None else None
        what = node.op_type if node is not None else "graph"
        return HwsimError(f"malformed {what} node ({type(exc).__name__}: {detail})", source=self.source, field=where)


def as_float(array, node: Node, what: str) -> np.ndarray:
    """A constant as float64, failing on a non-numeric type or on NaN / infinity."""
    a = np.asarray(array)
    if not (np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer)):
        node.fail(f"{what} must be numeric, got {a.dtype}")
    a = a.astype(np.float64)
    if not np.all(np.isfinite(a)):
        node.fail(f"{what} contains NaN or infinity")
    return a
