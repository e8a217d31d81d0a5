"""Squeeze / Unsqueeze of a quantized tensor with constant axes -> reshape (or flatten) on its codes; the batch
axis stays first. (On constants they are folded by the front end.)"""

from . import handler


def _axes(node, imp):
    axes = node.attr("axes")
    if node.input(1):
        axes = imp.const(node.inputs[1], node.where, "axes").reshape(-1).tolist()
    return None if axes is None else [int(a) for a in axes]


@handler("Squeeze", "Unsqueeze")
class SqueezeUnsqueeze:
    def ort(self, node, imp):
        node.only_attrs({"axes": None})

        def build(x):
            full = [1] + list(x.shape)              # with the batch axis
            axes = _axes(node, imp)
            if node.op_type == "Squeeze":
                if axes is None:
                    axes = [i for i, d in enumerate(full) if d == 1 and i > 0]
                axes = sorted({imp.norm_axis(a, len(full)) for a in axes})
                if 0 in axes or any(not 0 <= a < len(full) or full[a] != 1 for a in axes):
                    node.fail(f"cannot squeeze axes {axes} of a [N, {', '.join(map(str, x.shape))}] tensor "
                              "(only size-1 axes after the batch axis)")
                shape = [d for i, d in enumerate(full) if i not in axes]
            else:
                if axes is None:
                    node.fail("Unsqueeze needs axes")
                rank = len(full) + len(axes)
                axes = sorted({imp.norm_axis(a, rank) for a in axes})
                if 0 in axes or any(not 0 <= a < rank for a in axes):
                    node.fail(f"cannot unsqueeze axes {axes} (the batch axis stays first)")
                rest = iter(full)
                shape = [1 if i in axes else next(rest) for i in range(rank)]
            per_sample = tuple(shape[1:])
            if len(per_sample) not in (1, 3):
                node.fail(f"gives a sample of shape {list(per_sample)}; hwsim tensors are [K] or [C, H, W]")
            return imp.reshape(x, per_sample, node.where, node.outputs[0])
        imp.on_codes(node, build)
