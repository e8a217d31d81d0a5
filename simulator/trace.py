"""Event counts: the only thing the engine hands to the cost model.

A count is a fact about one layer of one batch of inferences ("this layer did 1,806,336 MACs of 4b x 8b").
The cost model multiplies counts by per-event energies; it never sees tensor values.
Counts here are per batch; `Trace.per_inference()` divides by the batch size.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field


# Fields that describe the hardware rather than count events: copied, never summed or divided.
STATIC_FIELDS = ("name", "op", "acc_bits", "datapath", "popcount_word_bits", "lut_entries", "lut_width_bits",
                 "qk_comparators", "mul_bits", "batch")


@dataclass
class LayerCounts:
    name: str
    op: str
    # MACs keyed by (activation operand bits, weight operand bits); adder width is acc_bits.
    macs: Counter = field(default_factory=Counter)
    acc_bits: int = 0
    # float32 multiply-adds (a conv2d on float32 weights: ONNX Runtime's float ConvTranspose, encodings.Float32W)
    fp32_macs: int = 0
    # XNOR-popcount path: binary MACs (one bit x one bit) and popcount words of `popcount_word_bits`.
    binary_macs: int = 0
    popcount_words: int = 0
    popcount_word_bits: int = 64
    # Codebook weight decode: reads of a LUT of `lut_entries` x `lut_width_bits`.
    lut_reads: int = 0
    lut_entries: int = 0
    lut_width_bits: int = 0
    # Activation converters (seed 004): ENQ quantizer / converter, KNQ quantizer / converter.
    qe: int = 0
    ce: int = 0
    qk: int = 0
    ck: int = 0
    qk_comparators: int = 0   # comparators in one QK unit (2^T - 1)
    # Requantizations (multiplier + rounding shift + clamp), one per output element of conv/dense/add.
    requants: int = 0
    # Pooling, residual add and clip: comparisons and additions outside the MAC array.
    compares: int = 0
    adds: int = 0
    # Elementwise multiplications of two activations (mul layers: squeeze-and-excitation gating).
    muls: int = 0
    mul_bits: int = 0         # operand width of those multiplications (the wider input's value bits)
    # MACs whose activation operand is zero, and whose activation or weight operand is zero (what a zero-gated
    # PE skips; units/zero_gating.py). XNOR layers have no zero operands (+1/-1) unless padded with zeros.
    zero_act_macs: int = 0
    zero_any_macs: int = 0
    # Outputs whose accumulation overflowed the declared accumulator at least once.
    overflows: int = 0
    # The MAC datapath (graph attr `datapath`); with "x86_pair_sat16": int16 pair sums that saturated
    # (vpmaddubsw) and outputs with at least one such pair (kernels/pairsat.py).
    datapath: str = "exact"
    pair_saturations: int = 0
    pair_saturated_outputs: int = 0
    # Compulsory memory traffic in bits (each weight, input and output moved once), keyed by tensor name.
    weight_bits: dict = field(default_factory=dict)
    input_bits: dict = field(default_factory=dict)
    output_bits: dict = field(default_factory=dict)
    batch: int = 1

    @classmethod
    def fresh(cls, name: str, op: str, batch: int = 1) -> "LayerCounts":
        """LayerCounts(name, op, batch=batch), built from a copy of the defaults: the engine makes one per layer
        and run, and the generated __init__ (30 assignments) costs ~20 us there, its caches cold from the kernels."""
        counts = cls.__new__(cls)
        counts.__dict__.update(_DEFAULTS)
        counts.name, counts.op, counts.batch = name, op, batch
        counts.macs, counts.weight_bits, counts.input_bits, counts.output_bits = Counter(), {}, {}, {}
        return counts

    def total_macs(self) -> int:
        return sum(self.macs.values()) + self.fp32_macs

    def scaled(self, factor: float) -> "LayerCounts":
        """Counts divided by `factor` (the batch size), keeping the static fields."""
        def div(v):  # keep integers integral when the batch divides them (it always does today)
            return v // factor if float(v) % factor == 0 else v / factor
        factor = int(factor) if float(factor).is_integer() else factor
        out = LayerCounts(self.name, self.op)
        for key, value in self.__dict__.items():
            if key in STATIC_FIELDS:
                setattr(out, key, value)
            elif isinstance(value, Counter):
                setattr(out, key, Counter({k: div(v) for k, v in value.items()}))
            elif isinstance(value, dict):
                setattr(out, key, {k: div(v) for k, v in value.items()})
            else:
                setattr(out, key, div(value))
        out.batch = 1
        return out



# every field's default (the mutable ones are made anew by `LayerCounts.fresh`)
_DEFAULTS = {k: v for k, v in LayerCounts("", "").__dict__.items() if not isinstance(v, (Counter, dict))}

@dataclass
class Trace:
    layers: list[LayerCounts] = field(default_factory=list)
    batch: int = 1
    # Bits moved across the chip boundary (model input read, model output written), per batch.
    dram_input_bits: int = 0
    dram_output_bits: int = 0

    def per_inference(self) -> "Trace":
        f = self.batch
        per = [layer.scaled(f) for layer in self.layers]
        return Trace(per, 1, self.dram_input_bits / f, self.dram_output_bits / f)
