"""One handler per ONNX op, in the spirit of QONNX's custom_op/ layout: a new op is a new file and a test.

A handler checks the node's attributes, infers its output shape (through the graph it builds) and says what the
node becomes in hwsim, with one method per reader:

- `to_float(node, builder)` lowers it into a FloatGraph (float_reader.py): it emits a node, folds into the node
  before it (BatchNormalization, a bias Add), aliases a tensor (Identity), or records a constant;
- `ort(node, imp)` reads it in a quantized QOperator / QDQ model, bit-exact with ONNX Runtime (onnx_import.py);
- `qonnx(node, imp)` reads it in a QONNX graph (qonnx_import.py).

The registry is keyed by (domain, op type); "" is the default ONNX domain (also spelled "ai.onnx").
"""

from __future__ import annotations

import importlib
import pkgutil

MS = "com.microsoft"
QONNX = "qonnx.custom_op.general"    # the QONNX reader also finds these ops under other domain names (lookup)
REGISTRY = {}                      # (domain, op type) -> handler instance


def _domain(domain: str) -> str:
    return "" if domain in ("", "ai.onnx") else domain


def handler(*op_types, domain=""):
    """Class decorator: register one handler instance for these op types in `domain` (a name or a tuple)."""
    domains = (domain,) if isinstance(domain, str) else tuple(domain)

    def register(cls):
        instance = cls()
        for d in domains:
            for op in op_types:
                REGISTRY[(_domain(d), op)] = instance
        return cls
    return register


def supported(reader: str) -> list:
    """The ops `reader` handles, sorted; ops outside the default domain carry it: "QGemm (com.microsoft)"."""
    _load()
    default = {op for (d, op), h in REGISTRY.items() if d == "" and hasattr(h, reader)}
    other = {f"{op} ({d})" for (d, op), h in REGISTRY.items()
             if d != "" and op not in default and hasattr(h, reader)}
    return sorted(default | other)


def supported_summary(reader: str) -> str:
    """The ops of `reader` for an error line: the default domain by name, the others counted by domain
    (the whole list is in docs/qonnx-import.md)."""
    ops = supported(reader)
    plain = [op for op in ops if " (" not in op]
    others = {}
    for op in ops:
        if " (" in op:
            dom = op.split(" (", 1)[1].rstrip(")")
            others[dom] = others.get(dom, 0) + 1
    extra = "".join(f" + {n} {dom} op{'s' if n > 1 else ''}" for dom, n in sorted(others.items()))
    return ", ".join(plain) + extra


def domain_ops(domain: str) -> set:
    """The op types registered in `domain` (QONNX: the ops that mark a graph as QONNX)."""
    _load()
    return {op for d, op in REGISTRY if d == _domain(domain)}


def float_ops() -> list:
    return supported("to_float")


def lookup(node, reader: str, any_domain: bool = False):
    """The handler of `node` for `reader` ("to_float", "ort", "qonnx"), or fail naming the node and what is
    supported. `any_domain`: match the op type in whatever domain the node declares (QONNX's custom ops come
    under several domain names: qonnx.custom_op.general, finn.custom_op.general, onnx.brevitas, ...)."""
    _load()
    domain = _domain(node.proto.domain)
    h = REGISTRY.get((domain, node.op_type))
    if (h is None or not hasattr(h, reader)) and any_domain:
        h = next((x for (d, op), x in REGISTRY.items() if op == node.op_type and hasattr(x, reader)), None)
    if h is None or not hasattr(h, reader):
        dom = f" (domain {domain})" if domain else ""
        node.fail(f"unsupported op {node.op_type!r}{dom}; supported: {supported_summary(reader)}")
    return h


_loaded = False


def _load():
    global _loaded
    if not _loaded:
        for mod in pkgutil.iter_modules(__path__):
            importlib.import_module(f"{__name__}.{mod.name}")
        _loaded = True
