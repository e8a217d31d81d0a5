"""Compare the integer engine with the float64 reference, layer by layer.

The reference computes each layer's real result and rounds it in the layer's declared arithmetic: a `requant`
mode (float32, fixed_double, ...) is part of what the model means, so a model that is bit-exact to its declared
arithmetic passes (reference.py). How far that arithmetic lands from exact real-number rounding is reported
beside it as information (`exact_rounding_*`), not as the pass criterion.

Two comparisons per layer:
  chained  the reference runs on its own previous outputs (end to end): where the two first part ways;
  local    the reference layer is fed the engine's own inputs: what this layer alone contributes.
Differences are in output LSBs (code units of the layer's output encoding). A layer passes when its local
difference is within the tolerance: end to end, a one-LSB difference can grow through later layers, which says
nothing about their arithmetic. With tolerance 0 the two criteria coincide.

A MAC layer with a non-exact `datapath` (x86_pair_sat16: int16 pair saturation) departs from the exact math of
the reference on purpose; its local mismatches are what that datapath costs. For such a layer the comparison
also runs the same layer with the exact datapath on the same inputs and reports: the saturated pairs and the
outputs holding one (from the trace), how many output codes the datapath changed, and the exact twin's own
local mismatches (what is left when the datapath is taken out). The pass rule is unchanged: such a layer
passes only when its outputs agree with the reference within the tolerance.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from . import interrupt
from .engine import RUNNERS, Engine, _last_use, batch_for_memory, check_input_shape, check_stored_samples
from .errors import HwsimError
from .graph import check_run_work
from .reference import reference_layer, reference_layer_pair
from .trace import LayerCounts


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
    # information: the engine's outputs against the exact real result rounded (local; the declared
    # requantization, e.g. ONNX Runtime's float32, may land elsewhere on ties and near-ties)
    exact_rounding_mismatches: int = 0
    exact_rounding_max_diff_lsb: int = 0
    # MAC datapath and, when it is not "exact", what it cost against the exact datapath (module docstring)
    datapath: str = "-"                  # "-" for layers without a MAC PE
    pair_saturations: int = 0            # int16 pair sums that saturated
    pair_saturated_outputs: int = 0      # outputs with at least one saturated pair
    datapath_changed_outputs: int = 0    # output codes that differ from the exact datapath's (same inputs)
    exact_datapath_local_mismatches: int | None = None
    exact_datapath_local_max_diff_lsb: int | None = None
    declared: str = ""                   # what the layer's declared arithmetic does beside exact rounding

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


VALIDATE_PASSES = 1   # measured: validate of the worst accepted layers takes 1-3x run (8.3 s at most), so the
#                       execution limit is the same as run's


def compare(engine: Engine, codes: np.ndarray, tolerance_lsb: int = 0, batch_size: int = 256,
            progress=None) -> Validation:
    """Engine against reference, layer by layer, `batch_size` samples at a time (fewer for a model with large
    layers: batch_for_memory). Both sides keep a tensor only until its last consumer has run, so memory follows
    the live tensors, not the whole graph; the execution limit (graph.check_run_work) is checked first.
    `progress`, if given, is called after each batch with the number of samples done (a progress bar)."""
    model = engine.model
    try:
        check_run_work(model, 1, passes=VALIDATE_PASSES)
    except HwsimError as exc:
        raise HwsimError(exc.message, source=model.source, field=exc.field) from None
    check_stored_samples(model, check_input_shape(model, np.asarray(codes)), VALIDATE_PASSES)
    batch_size = batch_for_memory(model, batch_size)
    last_use = _last_use(model)
    totals, datapath_totals = {}, {}
    for start in range(0, len(codes), batch_size):
        batch = check_input_shape(model, np.asarray(codes[start:start + batch_size])).astype(np.int64)
        ours, theirs = {"input": batch}, {"input": batch}
        for i, lay in enumerate(model.layers):
            interrupt.check()
            lay_counts = LayerCounts(lay.name, lay.op, batch=batch.shape[0])
            ins = [ours[n] for n in lay.inputs]
            a = ours[lay.name] = engine.run_layer(lay, ins, lay_counts).astype(np.int64)
            theirs[lay.name] = reference_layer(lay, [theirs[n] for n in lay.inputs])
            chained = np.abs(a - theirs[lay.name])
            ref_local, ref_exact = reference_layer_pair(lay, ins)
            local = np.abs(a - ref_local)
            exact = np.abs(a - ref_exact)
            if lay_counts.datapath != "exact":
                _add_datapath_cost(datapath_totals.setdefault(lay.name, [lay_counts.datapath, 0, 0, 0, 0, 0]),
                                   engine, lay, ours, a, ref_local, lay_counts)
            del ins
            for name in set(lay.inputs):
                if last_use[name] == i:
                    del ours[name], theirs[name]
            t = totals.setdefault(lay.name, [0, 0, 0, 0, 0, {}, 0, 0])
            t[0] += a.size
            t[1] += int(np.count_nonzero(chained))
            t[2] = max(t[2], int(chained.max(initial=0)))
            t[3] += int(np.count_nonzero(local))
            t[4] = max(t[4], int(local.max(initial=0)))
            values, counts = np.unique(local[local > 0], return_counts=True)
            for v, c in zip(values.tolist(), counts.tolist()):
                t[5][v] = t[5].get(v, 0) + c
            t[6] += int(np.count_nonzero(exact))
            t[7] = max(t[7], int(exact.max(initial=0)))
        if progress is not None:
            progress(start + batch.shape[0])
    layers = []
    for lay in model.layers:
        t = totals[lay.name]
        requant = lay.attr("requant") if lay.op in ("conv2d", "dense", "add", "mul") else "-"
        layers.append(LayerComparison(lay.name, lay.op, requant, *t[:5], diff_histogram=t[5],
                                      exact_rounding_mismatches=t[6], exact_rounding_max_diff_lsb=t[7],
                                      datapath=lay.attr("datapath") if lay.op in ("conv2d", "dense") else "-",
                                      declared=declared_arithmetic(lay)))
        if lay.name in datapath_totals:
            d = datapath_totals[lay.name]
            layers[-1].datapath = d[0]
            (layers[-1].pair_saturations, layers[-1].pair_saturated_outputs, layers[-1].datapath_changed_outputs,
             layers[-1].exact_datapath_local_mismatches, layers[-1].exact_datapath_local_max_diff_lsb) = d[1:]
    return Validation(layers, tolerance_lsb)


# What each declared rounding does beside exact rounding (the real result rounded half to even), for the notes
# validate prints under its table; the runtime each one reproduces is in docs/qnn-format.md.
DECLARED = {
    "float32": "float32 requantization (ONNX Runtime's MLAS, TFLite's XNNPACK delegate): the float32 multiplier "
               "and product round before the result does",
    "fixed_double": "TFLite reference kernels (gemmlowp): a fixed-point multiplier, rounded twice (the doubling "
                    "high multiply, ties up, then the rounding shift, ties away from zero)",
    "fixed_double_ruy": "TFLite optimized x86 kernels (ruy): the fixed-point multiplier of fixed_double, but the "
                        "final shift rounds ties up, (x + 2^(e-1)) >> e",
    "fixed_single": "TFLite single rounding: a fixed-point multiplier, one shift rounding ties up",
    "float64_away": "TFLite reference fully connected: the double product rounded half away from zero",
    "shift": "a power-of-two shift rounding ties up",
    "tflite_codes": "TFLite average pool: the sum of raw codes (zero point included) divided by the cell count, "
                    "ties away from zero",
    "ort_float32": "ONNX Runtime's float32 pooling arithmetic",
}


def declared_arithmetic(lay) -> str:
    """One phrase: how the layer's declared arithmetic can depart from exact rounding ('' for exact layers)."""
    if lay.op in ("conv2d", "dense", "add", "mul"):
        key = lay.attr("requant")
    elif lay.op == "avgpool":
        key = lay.attr("rounding")
    else:
        return ""
    return DECLARED.get(key, "")


def _add_datapath_cost(d, engine, lay, ours, out, ref_local, counts):
    """Accumulate [datapath, saturated pairs, saturated outputs, changed outputs, exact twin's local mismatches,
    its max |diff|] for a layer with a non-exact datapath: the same layer, exact datapath, same inputs."""
    twin = replace(lay, attrs={**lay.attrs, "datapath": "exact"})
    exact = RUNNERS[lay.op](engine, twin, [ours[n] for n in lay.inputs], LayerCounts(lay.name, lay.op))
    exact = exact.astype(np.int64)
    d[1] += counts.pair_saturations
    d[2] += counts.pair_saturated_outputs
    d[3] += int(np.count_nonzero(exact != out))
    diff = np.abs(exact - ref_local)
    d[4] += int(np.count_nonzero(diff))
    d[5] = max(d[5], int(diff.max(initial=0)))
