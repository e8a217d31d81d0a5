"""A layer as the cost model sees it: loop bounds, operand widths and event counts — never tensor values.

Every layer of every source (a `.qnn` model run by the engine, a `.qnn` read for shapes only, an ONNX model, a
SCALE-Sim topology CSV) becomes one `Workload`. The architecture model (mapping, access counts, timing,
energy, area) reads nothing else, so the three front ends cost identically.

Loop bounds follow Timeloop / Eyeriss naming, per group of a grouped convolution:

    N batch · G groups · K output channels · C input channels · P×Q output · R×S filter,  input H×W (unpadded)

A dense layer is a 1×1 convolution on a 1×1 map (C = inputs, K = outputs). A depthwise convolution has
G = channels, C = K = 1. Counts in `events` are for the whole batch of N inferences.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

MAC_PATHS = ("mac", "xnor")
PATHS = MAC_PATHS + ("vector", "view")
# Events the auxiliary units execute (per batch): requantizers, ENQ/KNQ converters, codebook LUT, ALU.
EVENT_KEYS = ("requants", "qe", "ce", "qk", "ck", "lut_reads", "compares", "adds", "muls")


@dataclass(frozen=True)
class Workload:
    name: str
    op: str                      # conv2d, dense, maxpool, avgpool, add, relu, clip, flatten, reshape, concat
    path: str                    # "mac" (MAC PEs), "xnor" (XNOR-popcount PEs), "vector" (ALU), "view" (free)
    n: int = 1
    g: int = 1
    k: int = 1
    c: int = 1
    p: int = 1
    q: int = 1
    r: int = 1
    s: int = 1
    h: int = 1
    w: int = 1
    stride: tuple = (1, 1)
    pad: tuple = (0, 0, 0, 0)    # top, left, bottom, right
    in_bits: int = 8             # storage bits of one input element (1 for packed binary activations)
    w_bits: int = 8              # storage bits of one weight element (codebook index bits, 1 for binary)
    out_bits: int = 8            # storage bits of one output element
    a_op_bits: int = 8           # operand widths the multiplier sees (after CE/CK/LUT decode)
    w_op_bits: int = 8
    acc_bits: int = 32
    extra_weight_bits: int = 0   # bias and codebook tables: fetched once per layer with the weights
    in_elems: int = 0            # vector layers: input elements read (all inputs), per batch
    out_elems: int = 0           # vector layers: output elements written, per batch
    events: dict = field(default_factory=dict)   # EVENT_KEYS -> count per batch
    qk_comparators: int = 0
    lut_entries: int = 0
    lut_width_bits: int = 0
    mul_bits: int = 0            # operand width of elementwise multiplications (mul layers)
    popcount_word_bits: int = 64
    mac_kind: str = "int"        # "int": integer MACs of a_op_bits x w_op_bits; "fp32": float32 MACs (ORT's float
    #                              ConvTranspose on float32 weights), one array step each, costed by arith.fp32_*
    zero_act_macs: int | None = None   # MACs whose activation operand is zero (None: unknown, shapes only)
    zero_any_macs: int | None = None   # MACs with a zero activation or a zero weight
    inputs: tuple = ()           # producing layers ("input": the model input); () = unknown (topology rows)

    def __post_init__(self):
        if self.path not in PATHS:
            raise ValueError(f"path must be one of {PATHS}, got {self.path!r}")
        for key in ("n", "g", "k", "c", "p", "q", "r", "s", "h", "w"):
            value = getattr(self, key)
            if not (isinstance(value, int) and value >= 1):
                raise ValueError(f"{self.name}: {key} must be a positive integer, got {value!r}")

    @property
    def is_mac(self) -> bool:
        return self.path in MAC_PATHS

    @property
    def macs(self) -> int:
        """Multiply-accumulates of the batch (binary MACs on the XNOR path)."""
        if not self.is_mac:
            return 0
        return self.n * self.g * self.k * self.c * self.p * self.q * self.r * self.s

    @property
    def input_elems(self) -> int:
        if self.is_mac:
            return self.n * self.g * self.c * self.h * self.w
        return self.in_elems

    @property
    def weight_elems(self) -> int:
        return self.g * self.k * self.c * self.r * self.s if self.is_mac else 0

    @property
    def output_elems(self) -> int:
        if self.is_mac:
            return self.n * self.g * self.k * self.p * self.q
        return self.out_elems

    def event(self, key: str) -> int:
        return self.events.get(key, 0)

    def with_batch(self, n: int) -> "Workload":
        """The same layer for a batch of n inferences (per-batch counts scaled from this one's)."""
        factor = n / self.n

        def scale(v):
            return None if v is None else _exact(v * factor)

        return replace(self, n=n, in_elems=scale(self.in_elems), out_elems=scale(self.out_elems),
                       events={k: scale(v) for k, v in self.events.items()},
                       zero_act_macs=scale(self.zero_act_macs), zero_any_macs=scale(self.zero_any_macs))


def _exact(v):
    return int(round(v)) if abs(v - round(v)) < 1e-9 else v

