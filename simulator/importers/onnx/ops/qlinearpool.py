"""QLinearAveragePool, QLinearGlobalAveragePool (com.microsoft) -> avgpool with ORT's float32 rounding."""

from . import MS, handler
from .pool import ort_pool_attrs


def _channels_first(node):
    if node.attr("channels_last", 0):
        node.fail(f"channels_last {node.op_type} is not supported")


@handler("QLinearAveragePool", domain=MS)
class QLinearAveragePool:
    def ort(self, node, imp):
        inp = node.inputs + [""] * (5 - len(node.inputs))
        x = imp.q_input(inp[0], inp[1], inp[2], node.where)
        _channels_first(node)
        attrs = ort_pool_attrs(node, x)
        attrs["count_include_pad"] = bool(node.attr("count_include_pad", 0))
        imp.qlinear(node, "avgpool", [x], imp.enc_like(inp[3], inp[4], x, node.where), attrs)


@handler("QLinearGlobalAveragePool", domain=MS)
class QLinearGlobalAveragePool:
    def ort(self, node, imp):
        inp = node.inputs
        x = imp.q_input(inp[0], inp[1], inp[2], node.where)
        _channels_first(node)
        if len(x.shape) != 3:
            node.fail(f"pooling needs a [C, H, W] input, got {list(x.shape)}")
        imp.qlinear(node, "avgpool", [x], imp.enc_like(inp[3], inp[4], x, node.where), {"global": True})
