"""ReduceMean over H and W (what the dynamo exporter writes for adaptive_avg_pool2d(x, 1), timm's SE blocks'
x.mean((2, 3), keepdim=True)) -> a global avgpool in a float graph; in an ORT-quantized graph (quantize_static
leaves ReduceMean in float: DequantizeLinear [-> float ops] -> ReduceMean -> QuantizeLinear) a lut_avgpool with
ORT's Eigen sum order. A flatten follows when keepdims=0."""

from . import handler


def _spatial_axes(node, rank, imp=None):
    """Check the axes are H and W of an NCHW tensor (attribute, or input from opset 18, an initializer or a
    Constant node's output for `imp`; negative allowed)."""
    node.only_attrs({"axes": None, "keepdims": None, "noop_with_empty_axes": 0})
    axes = node.attr("axes")
    if axes is None and imp is not None and node.input(1):
        axes = imp.const(node.input(1), node.where, "axes")
    elif axes is None:
        axes = node.const(1, "axes", required=False)
    given = [int(a) for a in (axes if axes is not None else [])]
    axes = sorted(a % 4 for a in given)
    if rank != 3 or axes != [2, 3]:
        node.fail(f"only the mean over H and W of an NCHW tensor (axes [2, 3]) is supported, got axes "
                  f"{given or 'all'} of a rank-{rank + 1} tensor")


@handler("ReduceMean")
class ReduceMean:
    def to_float(self, node, fb):
        x = fb.tensor(node, 0)
        shape = fb.shape(x)
        _spatial_axes(node, len(shape))
        pool = fb.emit(node, "avgpool", [x], {"kernel": list(shape[1:]), "stride": list(shape[1:]),
                                               "padding": [0, 0, 0, 0], "global": True, "count_include_pad": True})
        if not node.attr("keepdims", 1):
            fb.emit(node, "flatten", [pool.name])

    def ort(self, node, imp):
        """ORT computes DequantizeLinear (and any float island after it) and this ReduceMean in float32, then
        quantizes: a table of those float32 values, summed in ORT's order ("eigen_sse") and divided by H*W."""
        from ...onnx_import import Pending
        from ..islands import tabulate
        kind, payload = imp.lookup(node.inputs[0], node.where)
        if kind == "island":
            source, nodes, dq_names = payload.source, payload.nodes, payload.dq_names
        else:
            source = imp.dq_input(node.inputs[0], node.where)
            # the DequantizeLinear alone: an Identity makes it a (one-node) island for tabulate
            nodes = [imp.onnx.helper.make_node("Identity", [node.inputs[0]], [node.inputs[0] + "_hwsim_dq"])]
            dq_names = {node.inputs[0]}
        _spatial_axes(node, len(source.shape), imp)
        table = tabulate(imp, nodes, source, dq_names, None, None, node.where)
        ops = [n.op_type for n in nodes] if kind == "island" else ["DequantizeLinear"]
        params = {"table": table, "ops": ops, "pool_op": "ReduceMean", "sum_order": "eigen_sse"}
        if not node.attr("keepdims", 1):
            # [N, C] rather than [N, C, 1, 1]: a view, applied once the quantized layer exists
            params["after"] = [lambda q: imp.reshape(q, (q.shape[0],), node.where, node.outputs[0])]
        # no in_types: ORT never fuses ReduceMean, so differing 8-bit types around it change nothing
        imp.values[node.outputs[0]] = ("pending", Pending("lut_avgpool", node.where, [source], params,
                                                          node=node.proto.name or node.where))
