"""Float ONNX (as PyTorch or Keras export it) -> FloatGraph, through the shared front end and the op handlers."""

from __future__ import annotations

import os
import re

import numpy as np

from ...errors import HwsimError
from ...floatgraph import FloatGraph, FloatNode
from .frontend import Node, OnnxGraph, file_sha256
from .ops import lookup


class FloatBuilder:
    """What a handler's `to_float` works with: ONNX tensor names -> FloatGraph tensors, shapes, constants."""

    def __init__(self, graph: OnnxGraph):
        self.onnx = graph
        dims = graph.input_dims()
        if len(dims) not in (2, 4) or any(d is None or d < 1 for d in dims[1:]):
            raise HwsimError(f"the input must be [N, C, H, W] or [N, K] with fixed C, H, W / K, got "
                             f"{['?' if d is None else d for d in dims]}", source=graph.source,
                             field=f"graph.input {graph.input_name}")
        self.graph = FloatGraph(tuple(dims[1:]), source=graph.source)
        self.tensors = {graph.input_name: "input"}     # ONNX name -> FloatGraph tensor name
        self.channels_last = {}      # ONNX name of an NCHW -> NHWC Transpose output -> the NCHW tensor
        self.flat_order = {}         # flattened FloatGraph tensor -> column order a dense reading it must use
        self.consumers = {}
        for proto in graph.proto.graph.node:
            for name in proto.input:
                self.consumers[name] = self.consumers.get(name, 0) + 1
        self.last_node = len(graph.proto.graph.node) - 1

    # --------------------------------------------------------------------------------------------- for handlers
    def tensor(self, node: Node, i: int) -> str:
        name = node.inputs[i] if i < len(node.inputs) else ""
        if name in self.channels_last:
            node.fail("a channels-last Transpose (perm [0, 2, 3, 1]) is supported only right before the Flatten / "
                      "Reshape that feeds a dense layer (Keras' flatten order)")
        if name not in self.tensors:
            node.fail(f"input {i} ({name!r}) is not an activation (constants are only allowed as weights, bias "
                      "and parameters)")
        return self.tensors[name]

    def flatten_input(self, node) -> tuple:
        """(tensor, column order) a Flatten / Reshape reads: after a channels-last Transpose the flatten runs on
        the NCHW tensor and records the NHWC order for the dense layer that reads it."""
        src = self.channels_last.get(node.inputs[0])
        if src is None:
            return self.tensor(node, 0), None
        c, h, w = self.shape(src)
        return src, np.arange(c * h * w).reshape(c, h, w).transpose(1, 2, 0).reshape(-1)

    def shape(self, tensor: str) -> tuple:
        return self.graph.shapes()[tensor]

    def emit(self, node: Node, op: str, inputs: list, attrs=None, weight=None, bias=None) -> FloatNode:
        name = self._unique(_display_name(node))
        try:
            fnode = self.graph.add(FloatNode(name, op, inputs, dict(attrs or {}), weight, bias))
        except HwsimError as exc:
            node.fail(exc.message)
        self.tensors[node.outputs[0]] = name
        return fnode

    def alias(self, node: Node, tensor: str):
        self.tensors[node.outputs[0]] = tensor

    def only_consumer(self, node: Node, i: int) -> bool:
        return self.consumers.get(node.inputs[i], 0) == 1 and node.inputs[i] not in self.onnx.output_names

    def is_last(self, node: Node) -> bool:
        return node.index == self.last_node

    def note(self, text: str):
        self.graph.notes.append(text)

    def _unique(self, base: str) -> str:
        base = re.sub(r"[^A-Za-z0-9_.\-]", "_", base) or "node"
        taken = {n.name for n in self.graph.nodes} | {"input"}
        name, k = base, 1
        while name in taken:
            k += 1
            name = f"{base}_{k}"
        return name


def _display_name(node: Node) -> str:
    """PyTorch's "/conv1/Conv" -> "conv1", "/Relu_1" -> "Relu_1": short names a recipe can refer to."""
    parts = [p for p in node.name.split("/") if p]
    if len(parts) > 1 and parts[-1].split("_")[0] == node.op_type:
        parts = parts[:-1]
    return ".".join(parts) or node.name


def read_float_onnx(path) -> FloatGraph:
    """Read a float ONNX model into a FloatGraph; one HwsimError line naming the file and node for anything wrong."""
    graph = OnnxGraph(path)
    node = None
    try:
        builder = FloatBuilder(graph)
        for node in graph.nodes():
            if not graph.fold(node):
                lookup(node, "to_float").to_float(node, builder)
        out = graph.output_names[0]
        if out not in builder.tensors:
            raise HwsimError(f"the output {out!r} is a constant", field="graph.output")
        fg = builder.graph
        if not fg.nodes:
            raise HwsimError("the graph has no layer", field="graph")
        fg.output = builder.tensors[out]
        fg.sha256 = file_sha256(os.fspath(path))
        return fg
    except Exception as exc:
        raise graph.error(exc, node) from None
