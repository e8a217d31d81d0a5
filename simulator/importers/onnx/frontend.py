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
    check_valid(proto, source)
    return proto


MIN_OPSET = 7   # older default-domain opsets lack the op versions the readers implement (opset 1: no QDQ, ...)


def check_valid(proto, source: str) -> None:
    """Refuse a graph that is not valid ONNX, with one line: an opset outside [MIN_OPSET, what this onnx
    knows], negative dimensions, a node that writes its own input or a tensor written twice (not SSA), an
    input no earlier node produces; then ONNX's own checker (``check_model``, no shape inference), its first
    line as the reason."""
    onnx = require("onnx")
    newest = onnx.defs.onnx_opset_version()
    for op in proto.opset_import:
        if op.domain in ("", "ai.onnx") and not MIN_OPSET <= op.version <= newest:
            raise HwsimError(f"opset {op.version} is not supported: hwsim reads ONNX opsets {MIN_OPSET} to {newest}"
                             + (" (the installed onnx knows none newer)" if op.version > newest else ""),
                             source=source, field="opset_import")
    graph = proto.graph
    for init in graph.initializer:
        if any(d < 0 for d in init.dims):
            raise HwsimError(f"initializer {_short(init.name)!r} has a negative dimension {list(init.dims)}",
                             source=source, field="graph.initializer")
    for kind, infos in (("input", graph.input), ("output", graph.output), ("value_info", graph.value_info)):
        for vi in infos:
            tt = vi.type.tensor_type if vi.type.HasField("tensor_type") else None
            if tt is not None and tt.HasField("shape") and any(
                    d.HasField("dim_value") and d.dim_value < 0 for d in tt.shape.dim):
                dims = [d.dim_value if d.HasField("dim_value") else d.dim_param for d in tt.shape.dim]
                raise HwsimError(f"{kind} {_short(vi.name)!r} has a negative dimension {dims}", source=source,
                                 field=f"graph.{kind}")
    written = {}  # tensor name -> what defines it
    for init in graph.initializer:
        if init.name in written:
            raise HwsimError(f"initializer {_short(init.name)!r} is defined twice (ONNX graphs are in single "
                             "static assignment form)", source=source, field="graph.initializer")
        written[init.name] = "an initializer"
    for vi in graph.input:
        written.setdefault(vi.name, "a graph input")
    for i, node_proto in enumerate(graph.node):
        where = Node(node_proto, i, None).where
        for name in node_proto.output:
            if name and name in node_proto.input:
                raise HwsimError(f"the node writes its own input {_short(name)!r} (a cycle: ONNX graphs are "
                                 "acyclic, in single static assignment form)", source=source, field=where)
        for name in node_proto.input:
            if name and name not in written:
                raise HwsimError(f"input {_short(name)!r} is not produced by an earlier node (a missing "
                                 "initializer? the graph must also be topologically sorted, as ONNX requires)",
                                 source=source, field=where)
        for name in node_proto.output:
            if not name:
                continue
            if name in written:
                raise HwsimError(f"tensor {_short(name)!r} is written twice (already {written[name]}): ONNX graphs "
                                 "are in single static assignment form", source=source, field=where)
            written[name] = f"the output of {where}"
    # Every node of a standard op hwsim reads (or folds) is checked against its ONNX schema (attributes, input
    # and output counts), the error naming the node. Any other node (an op ONNX does not define at the model's
    # opset, or one no reader handles) is left to the readers, which refuse it naming the ops they support: for
    # the whole-model check it is moved to a private domain (the checker skips ops of domains it has no schemas
    # for), then put back.
    from .ops import domain_ops
    readable = domain_ops("") | set(FOLDABLE)
    ctx = onnx.checker.C.CheckerContext()
    ctx.ir_version = proto.ir_version
    imports = {op.domain: op.version for op in proto.opset_import}
    ctx.opset_imports = imports
    unknown = []
    for i, node_proto in enumerate(graph.node):
        domain = node_proto.domain
        version = imports.get(domain, imports.get({"": "ai.onnx", "ai.onnx": ""}.get(domain, domain)))
        if domain not in ("", "ai.onnx") or version is None:
            continue  # custom domains (QONNX, com.microsoft) are the readers' to check; no import: checker
        try:
            if node_proto.op_type not in readable:
                raise LookupError(node_proto.op_type)
            onnx.defs.get_schema(node_proto.op_type, version, "")
        except Exception:
            unknown.append((node_proto, node_proto.HasField("domain"), domain))
            continue
        try:
            onnx.checker.check_node(node_proto, ctx)
        except Exception as exc:
            where = Node(node_proto, i, None).where
            raise HwsimError(f"malformed {_short(node_proto.op_type)} node (not valid ONNX: {_reason(exc)})",
                             source=source, field=where) from None
    # The checker also insists on a shape for every graph input and output, which ONNX leaves optional (unknown
    # rank; ONNX Runtime runs such models): those get an empty shape for the check only (no shape inference
    # runs, so its content is never used), then the field is cleared again.
    shapeless = [vi.type.tensor_type for vi in list(graph.input) + list(graph.output)
                 if vi.type.HasField("tensor_type") and not vi.type.tensor_type.HasField("shape")]
    private = "hwsim.unchecked"
    try:
        for tt in shapeless:
            tt.shape.SetInParent()
        if unknown:
            for node_proto, _, _ in unknown:
                node_proto.domain = private
            proto.opset_import.add(domain=private, version=1)
        onnx.checker.check_model(proto, full_check=False)
    except Exception as exc:  # onnx.checker.ValidationError, or protobuf errors on odd fields
        raise HwsimError(f"not a valid ONNX model: {_reason(exc)}", source=source) from None
    finally:
        for tt in shapeless:
            tt.ClearField("shape")
        if unknown:
            for node_proto, had_domain, domain in unknown:  # proto2: an unset field stays unset
                if had_domain:
                    node_proto.domain = domain
                else:
                    node_proto.ClearField("domain")
            for k in range(len(proto.opset_import) - 1, -1, -1):
                if proto.opset_import[k].domain == private:
                    del proto.opset_import[k]


def _reason(exc: Exception) -> str:
    """The first line of an exception's message (the checker's reason, without its context lines)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return _short(lines[0] if lines else type(exc).__name__, 200)


def _short(text, limit: int = 80) -> str:
    """A name or message from the file for an error line: no control characters, bounded length."""
    text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(text))
    return text if len(text) <= limit else text[:limit] + "..."


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
