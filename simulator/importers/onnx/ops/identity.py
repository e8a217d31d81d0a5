"""Identity and Dropout (inference: identity) -> no layer; the output names the input."""

from . import handler


@handler("Identity", "Dropout")
class Identity:
    def to_float(self, node, fb):
        if node.op_type == "Dropout" and len(node.outputs) > 1 and node.outputs[1]:
            node.fail("the mask output is not supported")
        if node.is_const(0):
            node.graph.consts[node.outputs[0]] = node.graph.consts[node.inputs[0]]
            return
        fb.alias(node, fb.tensor(node, 0))

    def ort(self, node, imp):
        if node.op_type == "Dropout" and len(node.outputs) > 1 and node.outputs[1]:
            node.fail("the mask output is not supported")
        imp.values[node.outputs[0]] = imp.lookup(node.inputs[0], node.where)

    def qonnx(self, node, imp):
        imp.env[node.outputs[0]] = imp.get(node.inputs[0])
