"""Softmax. Float reader: as the last node, dropped (monotone, so top-1 is unchanged); the reader notes it.
Quantized ONNX Runtime model: DequantizeLinear -> Softmax -> QuantizeLinear, which ORT fuses into QLinearSoftmax
-> a softmax layer with ORT's table arithmetic (qlinearsoftmax.py)."""

from . import handler


@handler("Softmax")
class Softmax:
    def to_float(self, node, fb):
        if not fb.is_last(node):
            node.fail("Softmax is only supported as the model's last node (where it is dropped)")
        fb.alias(node, fb.tensor(node, 0))
        fb.note(f"{node.where}: final Softmax dropped (the quantized model outputs logits; top-1 is unchanged)")

    def ort(self, node, imp):
        from .qlinearsoftmax import softmax_axis_ok
        x = imp.dq_input(node.inputs[0], node.where)
        softmax_axis_ok(node, x)
        imp.qdq_group(node, "softmax", [x])
