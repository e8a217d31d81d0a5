"""One handler per ONNX op, in the spirit of QONNX's custom_op/ layout: a new op is a new file and a test.

A handler checks the node's attributes, infers its output shape (through the graph it builds) and says what the
node becomes in hwsim. `to_float(node, builder)` lowers it into a FloatGraph (float_reader.py): it emits a node,
folds into the node before it (BatchNormalization, a bias Add), aliases a tensor (Identity), or records a constant.
"""

from __future__ import annotations

import importlib
import pkgutil

REGISTRY = {}


def handler(*op_types):
    """Class decorator: register one handler instance for these ONNX op types (default domain)."""
    def register(cls):
        instance = cls()
        for op in op_types:
            REGISTRY[op] = instance
        return cls
    return register


def float_ops() -> list:
    _load()
    return sorted(op for op, h in REGISTRY.items() if hasattr(h, "to_float"))


def lookup(node, reader: str):
    """The handler of `node` for `reader` ("to_float", ...), or fail naming the node and what is supported."""
    _load()
    h = REGISTRY.get(node.op_type)
    if h is None or not hasattr(h, reader) or node.proto.domain not in ("", "ai.onnx"):
        dom = f" (domain {node.proto.domain})" if node.proto.domain not in ("", "ai.onnx") else ""
        supported = sorted(op for op, x in REGISTRY.items() if hasattr(x, reader))
        node.fail(f"unsupported op {node.op_type!r}{dom}; supported: {', '.join(supported)}")
    return h


_loaded = False


def _load():
    global _loaded
    if not _loaded:
        for mod in pkgutil.iter_modules(__path__):
            importlib.import_module(f"{__name__}.{mod.name}")
        _loaded = True
