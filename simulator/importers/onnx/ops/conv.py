"""Conv: 2-D convolution with groups, strides, pads / auto_pad -> conv2d."""

from ..frontend import as_float
from . import handler
from ._window import window


@handler("Conv")
class Conv:
    def to_float(self, node, fb):
        node.only_attrs({"kernel_shape": None, "strides": None, "pads": None, "auto_pad": None, "group": None,
                         "dilations": None})
        x = fb.tensor(node, 0)
        shape = fb.shape(x)
        if len(shape) != 3:
            node.fail(f"needs a 4-D NCHW input, got a per-sample shape {list(shape)}")
        w = as_float(node.const(1, "weights W"), node, "weights W")
        if w.ndim != 4:
            node.fail(f"weights must be 4-D [Co, Ci/group, KH, KW], got {list(w.shape)}")
        kernel = list(node.attr("kernel_shape", w.shape[2:]))
        if kernel != list(w.shape[2:]):
            node.fail(f"kernel_shape {kernel} does not match the weights {list(w.shape)}")
        group = node.attr("group", 1)
        if group < 1 or shape[0] != w.shape[1] * group or w.shape[0] % group:
            node.fail(f"weights {list(w.shape)} with group={group} do not fit a {shape[0]}-channel input")
        b = node.const(2, "bias B", required=False)
        if b is not None:
            b = as_float(b, node, "bias B")
            if b.shape != (w.shape[0],):
                node.fail(f"bias must be [{w.shape[0]}], got {list(b.shape)}")
        stride, padding = window(node, kernel, shape[1:])
        fb.emit(node, "conv2d", [x], {"stride": stride, "padding": padding, "groups": group}, w, b)
