"""Softmax as the last node: dropped (monotone, so top-1 is unchanged); the reader notes it."""

from . import handler


@handler("Softmax")
class Softmax:
    def to_float(self, node, fb):
        if not fb.is_last(node):
            node.fail("Softmax is only supported as the model's last node (where it is dropped)")
        fb.alias(node, fb.tensor(node, 0))
        fb.note(f"{node.where}: final Softmax dropped (the quantized model outputs logits; top-1 is unchanged)")
