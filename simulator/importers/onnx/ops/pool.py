"""MaxPool, AveragePool, GlobalAveragePool -> maxpool / avgpool."""

from . import handler
from ._window import window


def _pool(node, fb, op, ceil_ok, extra):
    x = fb.tensor(node, 0)
    shape = fb.shape(x)
    if len(shape) != 3:
        node.fail(f"needs a 4-D NCHW input, got a per-sample shape {list(shape)}")
    kernel = list(node.attr("kernel_shape", []))
    stride, padding = window(node, kernel, shape[1:], ceil_ok=ceil_ok)
    fb.emit(node, op, [x], dict({"kernel": kernel, "stride": stride, "padding": padding}, **extra))


@handler("MaxPool")
class MaxPool:
    def to_float(self, node, fb):
        node.only_attrs({"kernel_shape": None, "strides": None, "pads": None, "auto_pad": None, "ceil_mode": None,
                         "dilations": None, "storage_order": 0})
        if len(node.outputs) > 1 and node.outputs[1]:
            node.fail("the Indices output is not supported")
        _pool(node, fb, "maxpool", True, {})


@handler("AveragePool")
class AveragePool:
    def to_float(self, node, fb):
        node.only_attrs({"kernel_shape": None, "strides": None, "pads": None, "auto_pad": None, "ceil_mode": 0,
                         "count_include_pad": None, "dilations": None})
        _pool(node, fb, "avgpool", False, {"count_include_pad": bool(node.attr("count_include_pad", 0))})


@handler("GlobalAveragePool")
class GlobalAveragePool:
    def to_float(self, node, fb):
        node.only_attrs({})
        x = fb.tensor(node, 0)
        shape = fb.shape(x)
        if len(shape) != 3:
            node.fail(f"needs a 4-D NCHW input, got a per-sample shape {list(shape)}")
        fb.emit(node, "avgpool", [x], {"kernel": list(shape[1:]), "stride": list(shape[1:]),
                                       "padding": [0, 0, 0, 0], "global": True, "count_include_pad": True})
