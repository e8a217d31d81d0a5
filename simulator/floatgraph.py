"""A float network in hwsim's own ops: what the float ONNX reader produces and what `quantize` / `analyze` start from.

Same op names and attribute names as the integer graph (graph.py), but real-valued: conv2d / dense carry float64
weights [Co, Ci/groups, KH, KW] / [Co, K] and a float64 bias; clip carries real bounds. BatchNormalization is
already folded into the weights. Shapes are per sample ([C, H, W] or [K]); `run` adds the batch axis and
evaluates in float64 (numpy; the reference convolution of reference.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from .errors import HwsimError
from .graph import LIMITS, MAX_DIM, limits_enabled
from .reference import conv2d_float

FLOAT_OPS = ("conv2d", "dense", "maxpool", "avgpool", "relu", "clip", "add", "concat", "flatten", "reshape")


@dataclass
class FloatNode:
    name: str
    op: str
    inputs: list
    attrs: dict = field(default_factory=dict)
    weight: np.ndarray | None = None
    bias: np.ndarray | None = None
    shape: tuple = ()          # output shape per sample, set by FloatGraph.add


@dataclass
class FloatGraph:
    input_shape: tuple
    nodes: list = field(default_factory=list)
    output: str = ""
    source: str = "model"
    notes: list = field(default_factory=list)      # what the reader changed (e.g. a final Softmax dropped)

    def shapes(self) -> dict:
        out = {"input": tuple(self.input_shape)}
        out.update({n.name: n.shape for n in self.nodes})
        return out

    def node(self, name):
        for n in self.nodes:
            if n.name == name:
                return n
        raise KeyError(name)

    def producer(self, tensor):
        return None if tensor == "input" else self.node(tensor)

    def consumers(self, tensor) -> list:
        return [n for n in self.nodes if tensor in n.inputs]

    def mac_nodes(self) -> list:
        return [n for n in self.nodes if n.op in ("conv2d", "dense")]

    def add(self, node: FloatNode) -> FloatNode:
        """Append a node, inferring its output shape from its inputs' (fails with the node's name)."""
        shapes = self.shapes()
        node.shape = _infer(node, [shapes[i] for i in node.inputs])
        _check_work(node, [shapes[i] for i in node.inputs])
        self.nodes.append(node)
        self.output = node.name
        return node

    def run(self, x: np.ndarray, keep=()) -> dict:
        """Evaluate on a batch x [N, *input_shape]; returns {tensor: float64 array} holding the output and every
        tensor named in `keep` (True: all of them)."""
        x = np.asarray(x, dtype=np.float64)
        if tuple(x.shape[1:]) != tuple(self.input_shape):
            raise HwsimError(f"input shape {list(x.shape[1:])} does not match the model's {list(self.input_shape)}")
        last_use = {name: i for i, n in enumerate(self.nodes) for name in n.inputs}
        tensors = {"input": x}
        for i, n in enumerate(self.nodes):
            tensors[n.name] = evaluate(n, [tensors[name] for name in n.inputs])
            for name in set(n.inputs):
                if last_use[name] == i and name != self.output and not (keep is True or name in keep):
                    del tensors[name]
        return tensors


def pool_windows(x, kernel, stride, padding, fill):
    pt, pl, pb, pr = padding
    xp = np.pad(x, ((0, 0), (0, 0), (pt, pb), (pl, pr)), constant_values=fill)
    return sliding_window_view(xp, tuple(kernel), axis=(2, 3))[:, :, ::stride[0], ::stride[1]]


def evaluate(n: FloatNode, xs: list) -> np.ndarray:
    """One node on float64 batches."""
    a = n.attrs
    if n.op == "conv2d":
        y = conv2d_float(xs[0], n.weight, a["stride"], a["padding"], a["groups"], 0.0)
        return y if n.bias is None else y + n.bias.reshape(1, -1, 1, 1)
    if n.op == "dense":
        y = xs[0] @ n.weight.T
        return y if n.bias is None else y + n.bias
    if n.op == "maxpool":
        return pool_windows(xs[0], a["kernel"], a["stride"], a["padding"], -np.inf).max(axis=(-2, -1))
    if n.op == "avgpool":
        if a.get("global"):
            return xs[0].mean(axis=(2, 3), keepdims=True)
        w = pool_windows(xs[0], a["kernel"], a["stride"], a["padding"], np.nan)
        if a.get("count_include_pad"):
            return np.nan_to_num(w, nan=0.0).sum(axis=(-2, -1)) / (a["kernel"][0] * a["kernel"][1])
        return np.nanmean(w, axis=(-2, -1))
    if n.op == "relu":
        return np.maximum(xs[0], 0.0)
    if n.op == "clip":
        return np.clip(xs[0], a["min"], a["max"])
    if n.op == "add":
        return sum(xs[1:], xs[0])
    if n.op == "concat":
        return np.concatenate(xs, axis=1)
    if n.op in ("flatten", "reshape"):
        return xs[0].reshape((xs[0].shape[0],) + tuple(n.shape))
    raise AssertionError(n.op)


def _window_out(size, k, s, before, after, name):
    out = (size + before + after - k) // s + 1
    if out < 1:
        raise HwsimError(f"the {k}-wide window does not fit the {size}-wide input", field=name)
    return out


def _ints(a: dict, key: str, n: int, lo: int, where: str) -> list:
    """attrs[key]: n integers in [lo, MAX_DIM] (a reader's bug or a hand-built graph fails here, not in numpy)."""
    value = a.get(key)
    if (not isinstance(value, (list, tuple)) or len(value) != n
            or any(isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)) or not lo <= v <= MAX_DIM
                   for v in value)):
        text = repr(value)
        raise HwsimError(f"{key} must be {n} integers in [{lo}, {MAX_DIM}], got "
                         f"{text if len(text) <= 80 else text[:77] + '...'}", field=where)
    return [int(v) for v in value]


def _check_work(n: FloatNode, shapes: list):
    """The integer graph's per-sample budget (graph.LIMITS), checked as each node is read: calibration evaluates
    the float graph before the quantized one is ever checked (lifted like it: --no-limits, HWSIM_NO_LIMITS=1)."""
    if not limits_enabled():
        return
    out, window = math.prod(n.shape), 1
    if n.op == "conv2d":
        window = int(n.weight.shape[2]) * int(n.weight.shape[3])
        ops = out * int(n.weight.shape[1]) * window
    elif n.op == "dense":
        ops = out * int(n.weight.shape[1])
    elif n.op in ("maxpool", "avgpool"):
        window = math.prod(shapes[0][1:]) if n.attrs.get("global") else math.prod(n.attrs["kernel"])
        ops = out * window
    else:
        ops = out * max(len(n.inputs), 1)
    hint = "(lift the limits with --no-limits or HWSIM_NO_LIMITS=1)"
    for value, key, what in ((window, "window", "a kernel window of {:,} cells"),
                             (out, "output_elements", "an output of {:,} elements per sample"),
                             (ops, "layer_ops", "{:,} operations per sample")):
        if value > LIMITS[key]:
            raise HwsimError(f"{n.op} with {what.format(value)}, more than the limit of {LIMITS[key]:,} {hint}",
                             field=f"node {n.name}")


def _infer(n: FloatNode, shapes: list) -> tuple:
    a, where = n.attrs, f"node {n.name}"
    x = shapes[0]
    if n.op in ("conv2d", "maxpool", "avgpool") and len(x) != 3:
        raise HwsimError(f"{n.op} needs a [C, H, W] input, got {list(x)}", field=where)
    if n.op == "conv2d":
        co, cg, kh, kw = n.weight.shape
        _ints(a, "stride", 2, 1, where)
        _ints(a, "padding", 4, 0, where)
        _ints({"groups": [a.get("groups")]}, "groups", 1, 1, where)
        if min(kh, kw, co, cg) < 1:
            raise HwsimError(f"weights {list(n.weight.shape)} have an empty dimension", field=where)
        if x[0] != cg * a["groups"] or co % a["groups"]:
            raise HwsimError(f"weights {list(n.weight.shape)} with {a['groups']} group(s) do not fit a "
                             f"{x[0]}-channel input", field=where)
        pt, pl, pb, pr = a["padding"]
        return (co, _window_out(x[1], kh, a["stride"][0], pt, pb, where),
                _window_out(x[2], kw, a["stride"][1], pl, pr, where))
    if n.op == "dense":
        if len(x) != 1 or x[0] != n.weight.shape[1]:
            raise HwsimError(f"weights {list(n.weight.shape)} do not fit a {list(x)} input", field=where)
        return (n.weight.shape[0],)
    if n.op in ("maxpool", "avgpool"):
        if a.get("global"):
            return (x[0], 1, 1)
        (kh, kw), (sh, sw) = _ints(a, "kernel", 2, 1, where), _ints(a, "stride", 2, 1, where)
        pt, pl, pb, pr = _ints(a, "padding", 4, 0, where)
        if max(pt, pb) >= kh or max(pl, pr) >= kw:
            raise HwsimError(f"padding {[pt, pl, pb, pr]} must be smaller than the kernel {kh}x{kw}", field=where)
        return (x[0], _window_out(x[1], kh, sh, pt, pb, where), _window_out(x[2], kw, sw, pl, pr, where))
    if n.op in ("relu", "clip"):
        return x
    if n.op == "add":
        if any(s != x for s in shapes[1:]):
            raise HwsimError(f"adds tensors of shapes {[list(s) for s in shapes]}", field=where)
        return x
    if n.op == "concat":
        if any(len(s) != len(x) or s[1:] != x[1:] for s in shapes):
            raise HwsimError(f"concatenates {[list(s) for s in shapes]} along channels", field=where)
        return (sum(s[0] for s in shapes),) + tuple(x[1:])
    if n.op == "flatten":
        return (math.prod(x),)
    if n.op == "reshape":
        shape = tuple(a["shape"])
        if math.prod(shape) != math.prod(x):
            raise HwsimError(f"reshapes {list(x)} to {list(shape)}", field=where)
        return shape
    raise HwsimError(f"unknown op {n.op!r}", field=where)
