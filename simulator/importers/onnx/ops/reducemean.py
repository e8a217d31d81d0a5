"""ReduceMean over H and W (what the dynamo exporter writes for adaptive_avg_pool2d(x, 1)) -> a global avgpool
(and a flatten when keepdims=0)."""

from . import handler


@handler("ReduceMean")
class ReduceMean:
    def to_float(self, node, fb):
        node.only_attrs({"axes": None, "keepdims": None, "noop_with_empty_axes": 0})
        x = fb.tensor(node, 0)
        shape = fb.shape(x)
        axes = node.attr("axes")
        if axes is None:
            axes = node.const(1, "axes", required=False)
        axes = sorted(int(a) % 4 for a in (axes if axes is not None else []))
        if len(shape) != 3 or axes != [2, 3]:
            node.fail(f"only the mean over H and W of an NCHW tensor (axes [2, 3]) is supported, got axes {axes}")
        pool = fb.emit(node, "avgpool", [x], {"kernel": list(shape[1:]), "stride": list(shape[1:]),
                                               "padding": [0, 0, 0, 0], "global": True, "count_include_pad": True})
        if not node.attr("keepdims", 1):
            fb.emit(node, "flatten", [pool.name])
