"""Compare the integer engine with the float64 reference, layer by layer.

Two comparisons per layer:
  chained  the reference runs on its own previous outputs (end to end): where the two first part ways;
  local    the reference layer is fed the engine's own inputs: what this layer alone contributes.
Differences are in output LSBs (code units of the layer's output encoding). A layer passes when its local
difference is within the tolerance: end to end, a one-LSB difference can grow through later layers, which says
nothing about their arithmetic. With tolerance 0 the two criteria coincide.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .engine import Engine
from .reference import reference_layer, run_reference


@dataclass
class LayerComparison:
    name: str
    op: str
    requant: str
    elements: int
    mismatches: int
    max_diff_lsb: int
    local_mismatches: int
    local_max_diff_lsb: int
    diff_histogram: dict = field(default_factory=dict)   # local |diff| in LSB -> count

    def to_dict(self):
        return dict(self.__dict__)


@dataclass
class Validation:
    layers: list
    tolerance_lsb: int = 0

    @property
    def first_divergent(self):
        """The first layer whose own arithmetic (fed the engine's inputs) is off by more than the tolerance.
        With tolerance 0 this is also where the end-to-end runs first part ways."""
        for comp in self.layers:
            if comp.local_max_diff_lsb > self.tolerance_lsb:
                return comp.name
        return None

    @property
    def first_differing_end_to_end(self):
        for comp in self.layers:
            if comp.mismatches:
                return comp.name
        return None

    @property
    def passed(self):
        return self.first_divergent is None

    def to_dict(self):
        return {"passed": self.passed, "tolerance_lsb": self.tolerance_lsb,
                "first_divergent_layer": self.first_divergent,
                "first_differing_layer_end_to_end": self.first_differing_end_to_end,
                "layers": [c.to_dict() for c in self.layers]}


def compare(engine: Engine, codes: np.ndarray, tolerance_lsb: int = 0, batch_size: int = 256) -> Validation:
    model = engine.model
    totals = {}
    for start in range(0, len(codes), batch_size):
        batch = codes[start:start + batch_size]
        ours = engine.run(batch, keep_all=True).tensors
        theirs = run_reference(model, batch)
        for lay in model.layers:
            a = ours[lay.name].astype(np.int64)
            chained = np.abs(a - theirs[lay.name])
            local = np.abs(a - reference_layer(lay, [ours[n] for n in lay.inputs]))
            t = totals.setdefault(lay.name, [0, 0, 0, 0, 0, {}])
            t[0] += a.size
            t[1] += int(np.count_nonzero(chained))
            t[2] = max(t[2], int(chained.max(initial=0)))
            t[3] += int(np.count_nonzero(local))
            t[4] = max(t[4], int(local.max(initial=0)))
            values, counts = np.unique(local[local > 0], return_counts=True)
            for v, c in zip(values.tolist(), counts.tolist()):
                t[5][v] = t[5].get(v, 0) + c
    layers = []
    for lay in model.layers:
        t = totals[lay.name]
        requant = lay.attr("requant") if lay.op in ("conv2d", "dense", "add") else "-"
        layers.append(LayerComparison(lay.name, lay.op, requant, *t[:5], diff_histogram=t[5]))
    return Validation(layers, tolerance_lsb)
