"""The architecture cost model: workloads + hardware -> cycles, accesses, energy and area per layer and model.

    Workload (shape, bits, event counts) --mapping--> fold schedule + staging loop nest
        --access--> words per memory level and tensor, DRAM bits
        --timing--> compute cycles + stall cycles by cause
        --energy--> pJ by category (MACs, converters, SRAM, DRAM, leakage × time, clock)

Cycles of a layer = compute_cycles + Σ stall_cycles, the causes being:
    onload, offload        the first staging tile's fill and the last one's write-back (never overlapped)
    dram                   DRAM transfers a step's compute window could not hide (Σ per step), plus the DRAM
                           time of tensors no buffer stages beyond the compute time
    memory:<level>         the buffer's read or write bandwidth to the array below the array's demand
    bank_conflicts         cycles that ask one bank for more distinct lines than it has ports
    converters             the slowest auxiliary stage (QE/CE/QK/CK, LUT, requantizer, ALU) beyond the compute
Stalls add: the model assumes no two causes hide each other (conservative; docs/architecture-model.md).
Cycles and latency are for one batch of N inferences; energies are per inference.
"""

from __future__ import annotations

import heapq
import math
import time
from dataclasses import dataclass, field, replace

import numpy as np

from simulator.errors import HwsimError
from simulator.hw.access import F, Link, geometry_of, warm_up
from simulator.hw.arch import UNIT_EVENTS, Hardware
from simulator.hw.area import AreaReport, Clock, design_area, design_clock
from simulator.hw.energy import (alu_add_energy, compare_energy, converter_energy, fp32_mac_energy, lut_read_energy,
                                 mult_energy, mac_energy, popcount_word_energy, requant_energy)
from simulator.hw.mapping import choose_staging, edge_traffic, fold_schedule

ENERGY_CATEGORIES = ("mac", "popcount", "lut", "converters", "requant", "other_alu", "sram", "dram", "leakage",
                     "clock")
TENSORS = ("weights", "inputs", "outputs")
STAGED = TENSORS + ("psums",)         # what a shared buffer can hold
MAX_BATCH = 1 << 20                   # inferences processed together
BANK_PIXELS = 1 << 21                 # output pixels of a batch the bank model walks exactly


@dataclass
class LayerCost:
    name: str
    op: str
    path: str
    macs: int                                   # per batch
    compute_cycles: int
    stall_cycles: dict                          # cause -> cycles
    utilization: float                          # useful PE-cycles / (PEs × cycles)
    accesses: dict                              # level -> {"reads": words, "writes": words, "by_tensor": {...}}
    dram_bits: dict                             # tensor -> {"read": bits, "write": bits} per batch
    mapping: dict
    energy_pj: dict = field(default_factory=dict)   # per inference, by category
    gated_macs: float = 0.0

    @property
    def cycles(self) -> int:
        return self.compute_cycles + sum(self.stall_cycles.values())

    @property
    def total_energy_pj(self) -> float:
        return sum(self.energy_pj.values())


@dataclass
class CostReport:
    hardware: Hardware
    batch: int
    layers: list
    area: AreaReport
    clock: Clock
    cost_s: float
    assumptions: list

    @property
    def cycles(self) -> int:
        return sum(layer.cycles for layer in self.layers)

    @property
    def latency_s(self) -> float:
        return self.cycles / self.clock.hz

    @property
    def throughput(self) -> float:
        return self.batch / self.latency_s if self.latency_s > 0 else math.inf

    @property
    def energy_breakdown_pj(self) -> dict:
        out = dict.fromkeys(ENERGY_CATEGORIES, 0.0)
        for layer in self.layers:
            for key, value in layer.energy_pj.items():
                out[key] += value
        return out

    @property
    def energy_pj(self) -> float:
        return sum(self.energy_breakdown_pj.values())


def check_batch(batch) -> None:
    if not (isinstance(batch, int) and 1 <= batch <= MAX_BATCH):
        raise HwsimError(f"must be an integer from 1 to {MAX_BATCH:,}, got {batch!r}", field="--batch")


def estimate(workloads, hw: Hardware, batch: int = 1) -> CostReport:
    """Cost `workloads` (one inference each) on `hw` for a batch of `batch` inferences processed together."""
    check_batch(batch)
    warm_up()   # numba's compile / cache load is start-up, not cost-model time
    start = time.perf_counter()
    tech, arch = hw.tech, hw.arch
    area = design_area(tech, arch)
    clock = design_clock(tech, arch, area)
    workloads = [wl.with_batch(batch) if wl.n != batch else wl for wl in workloads]
    plan = ResidencyPlan(workloads, arch)
    while True:
        try:
            layers = [_layer_cost(i, wl, hw, area, clock, batch, plan.at(i)) for i, wl in enumerate(workloads)]
            break
        except _DoesNotFit as exc:
            if not plan.evict_at(exc.index):
                raise HwsimError(exc.error.message, source=exc.error.source or hw.path, field=exc.error.field) \
                    from None
    assumptions = sorted(row for row, fig in {**tech.rows, **arch.rows}.items() if fig.assumption)
    return CostReport(hw, batch, layers, area, clock, time.perf_counter() - start, assumptions)


# ----------------------------------------------------------------------------------------------------------
# Activations that stay on chip between layers.


@dataclass(frozen=True)
class Residency:
    """What one layer finds on chip: its inputs and/or output kept whole in `level`, and the bits that level
    reserves for every resident activation alive during the layer (its own included)."""

    level: str | None = None
    inputs: bool = False
    output: bool = False
    reserved_bits: int = 0


class ResidencyPlan:
    """Keep a layer's whole output in the buffer that holds both inputs and outputs when it fits in half of it
    beside the other resident activations alive at the same time, so its consumers read it on chip (no DRAM
    round trip; when everything fits this is the compulsory model: only the model input, the weights and the
    model output cross the chip boundary). Views (flatten, reshape, concat) share their sources' storage. A
    layer that then cannot fit its staging tiles evicts the largest resident activation alive at it.
    The model input and the model output always move through DRAM; topology rows name no producers, so
    their layers never keep activations."""

    def __init__(self, workloads, arch):
        self.workloads = workloads
        buffer = arch.shared_level_for("outputs")
        self.level = buffer if (buffer is not None and buffer is arch.shared_level_for("inputs")
                                and arch.activation_residency) else None
        names = {wl.name: i for i, wl in enumerate(workloads)}
        self.sources = []                # per layer: the non-view producers it reads
        alias = {}
        last_use = {}
        for i, wl in enumerate(workloads):
            sources = []
            for name in wl.inputs:
                sources += alias.get(name, [name])
            if wl.path == "view":
                alias[wl.name] = sources
            for name in sources:
                if name in names:
                    last_use[name] = i
            self.sources.append(tuple(dict.fromkeys(sources)))
        self.span = {name: (names[name], end) for name, end in last_use.items()
                     if workloads[names[name]].path in ("mac", "xnor", "vector")}
        self.resident = set()
        # reserved bits per layer index: a Fenwick tree over range adds (linear-logarithmic in the layer count,
        # where summing every resident span at every layer was quadratic)
        self._tree = [0] * (len(workloads) + 2)
        if self.level is not None:
            budget = self.level.size_bits // 2
            # Spans in order of their start (each producer starts one): a resident span overlaps [start, end]
            # exactly when it ends at or after `start`, so the ones ended before it leave a heap for good.
            ending, alive = [], 0
            for name, (start, end) in sorted(self.span.items(), key=lambda kv: kv[1][0]):
                while ending and ending[0][0] < start:
                    alive -= heapq.heappop(ending)[1]
                bits = self.bits(name)
                if alive + bits <= budget:
                    self.resident.add(name)
                    heapq.heappush(ending, (end, bits))
                    alive += bits
            for name in self.resident:
                self._add_span(name, self.bits(name))

    def _add_span(self, name, bits: int) -> None:
        """Add `bits` to the reserved figure of every layer index in the span of `name`."""
        a, b = self.span[name]
        for i, v in ((a, bits), (b + 1, -bits)):
            i += 1
            while i < len(self._tree):
                self._tree[i] += v
                i += i & -i

    def _reserved(self, index: int) -> int:
        i, total = index + 1, 0
        while i > 0:
            total += self._tree[i]
            i -= i & -i
        return total

    def bits(self, name: str) -> int:
        wl = self.workloads[self.span[name][0]]
        return wl.output_elems * max(wl.out_bits, wl.acc_bits if wl.is_mac else 0)

    def _overlaps(self, name, start, end) -> bool:
        a, b = self.span[name]
        return a <= end and start <= b

    def at(self, index: int) -> Residency:
        if self.level is None:
            return Residency()
        wl = self.workloads[index]
        reserved = self._reserved(index)
        inputs = bool(self.sources[index]) and all(name in self.resident for name in self.sources[index])
        return Residency(self.level.name, inputs, wl.name in self.resident, reserved)

    def evict_at(self, index: int) -> bool:
        alive = [name for name in self.resident if self._overlaps(name, index, index)]
        if not alive:
            return False
        victim = max(alive, key=lambda name: (self.bits(name), name))
        self.resident.discard(victim)
        self._add_span(victim, -self.bits(victim))
        return True


class _DoesNotFit(Exception):
    def __init__(self, index, error):
        super().__init__(error.message)
        self.index, self.error = index, error


def _layer_cost(index, wl, hw, area, clock, batch, residency) -> "LayerCost":
    try:
        if wl.path == "view":
            cost = _view_cost(wl)
        elif wl.is_mac:
            cost = _mac_cost(wl, hw, area, residency)
        else:
            cost = _vector_cost(wl, hw, area, residency)
        _add_energy(cost, wl, hw, area, clock, batch)
        return cost
    except HwsimError as exc:
        if "smallest tile" in exc.message:
            raise _DoesNotFit(index, exc) from None
        raise HwsimError(exc.message, source=exc.source or hw.path, field=exc.field) from None


# ----------------------------------------------------------------------------------------------------------
# Per layer kind.


def _view_cost(wl) -> LayerCost:
    return LayerCost(wl.name, wl.op, wl.path, 0, 0, {}, 0.0, {}, {}, {"note": "a view: shares storage, no work"})


def _pe_for(wl, arch):
    """The array a MAC layer runs on: binary layers on the XNOR array when there is one, else the MAC array."""
    if wl.path == "xnor" and arch.xnor is not None:
        return arch.xnor, arch.binary_dataflow
    if arch.mac is None:
        raise HwsimError(f"layer '{wl.name}' needs MAC PEs but the design has only an XNOR array",
                         field="architecture.pe_array.mac")
    return arch.mac, arch.dataflow


def _mac_cost(wl, hw, area: AreaReport, residency: Residency) -> LayerCost:
    arch = hw.arch
    pe, dataflow = _pe_for(wl, arch)
    fs = fold_schedule(wl, pe, dataflow, arch.interconnect == "systolic")
    compute = fs.compute_cycles
    # Where each tensor is staged: its shared buffer; partial sums in their own buffer when the design has one,
    # else with the outputs. None: streamed between DRAM and the array edge.
    shared = {t: arch.shared_level_for(t) for t in TENSORS}
    shared["psums"] = arch.shared_level_for("psums") or shared["outputs"]
    binary_words = wl.path == "xnor" and pe.kind == "xnor"
    # Bits of one streamed element: a packed popcount word on the XNOR array, else one operand.
    elem_bits = {"weights": pe.word_bits if binary_words else wl.w_bits,
                 "inputs": pe.word_bits if binary_words else wl.in_bits, "psums": wl.acc_bits,
                 "outputs": wl.out_bits}
    word = {t: (lv.word_bits if lv else arch.dram.burst_bits) for t, lv in shared.items()}
    edge = edge_traffic(fs, elem_bits, word, wl.out_bits, wl.acc_bits)

    geom = geometry_of(wl)
    # A resident tensor is already on chip (inputs) or stays there (outputs): no DRAM traffic, no staging tile.
    on_chip = {"weights": False, "inputs": residency.inputs, "outputs": residency.output, "psums": residency.output}
    out_home = shared["outputs"] or shared["psums"]
    link = Link(w_bits=wl.w_bits, i_bits=wl.in_bits, o_bits=wl.out_bits, acc_bits=wl.acc_bits,
                staged=(shared["weights"] is not None, shared["inputs"] is not None and not on_chip["inputs"],
                        out_home is not None and not on_chip["outputs"]),
                double_buffered=tuple(bool(lv and lv.double_buffered)
                                      for lv in (shared["weights"], shared["inputs"], out_home)),
                buffer_word_bits=tuple(word[t] for t in (*TENSORS, "psums")), burst_bits=arch.dram.burst_bits,
                bandwidth_bits=arch.dram.bandwidth_bits, latency=arch.dram.latency_cycles, compute_cycles=compute)
    capacity = []
    for lv in arch.levels:
        if not lv.per_pe:
            reserved = residency.reserved_bits if lv.name == residency.level else 0
            capacity.append((lv.name, lv.size_bits - reserved, lv.double_buffered,
                             [t for t in STAGED if t in lv.holds and not on_chip[t]]))
    macro = area.macros
    energy_per = {t: ((macro[lv.name].write_pj, macro[lv.name].read_pj) if lv else (0.0, 0.0))
                  for t, lv in shared.items()}
    # DRAM traffic: staged tensors from the chosen nest; unstaged ones stream at the array edge.
    extra = _bursts(wl.extra_weight_bits, arch.dram.burst_bits)
    bypass = {}
    for t in ("weights", "inputs"):
        if shared[t] is None:
            bypass[t] = {"read": edge.read_words[t] * word[t] + (extra if t == "weights" else 0), "write": 0.0}
    if out_home is None:
        bypass["outputs"] = {"read": edge.read_words["psums"] * word["psums"],
                             "write": sum(edge.write_words[t] * word[t] for t in ("psums", "outputs"))}
    bypass_bits = sum(v["read"] + v["write"] for v in bypass.values())
    staged_cols = ([F["dram_w"]] if "weights" not in bypass else []) + ([F["dram_i"]] if "inputs" not in bypass else []) \
        + ([F["dram_o_read"], F["dram_o_write"]] if "outputs" not in bypass else [])
    fixed_bits = bypass_bits + (extra if "weights" not in bypass else 0)

    def staging_stalls(r):
        """(onload, offload, DRAM stall) of nest results r [..., fields], exactly as the layer is charged:
        the staging search ranks candidates by the same cycles the report shows."""
        onload, offload = np.floor(r[..., F["onload"]]), np.floor(r[..., F["offload"]])
        stall = r[..., F["stall"]] + max(0.0, math.ceil(bypass_bits / arch.dram.bandwidth_bits) - compute)
        # One link carries staged and streamed traffic alike: the layer can never beat its total DRAM bits /
        # bandwidth (Timeloop's throttling bound), whatever overlap the per-step model found.
        total_bits = sum(r[..., c] for c in staged_cols) + fixed_bits
        link_floor = np.ceil(total_bits / arch.dram.bandwidth_bits)
        return onload, offload, np.ceil(np.maximum(stall, link_floor - compute - onload - offload))

    choice = choose_staging(wl, geom, link, fs, capacity, energy_per, arch.dram.pj_per_bit.value,
                            arch.objective, latency_of=lambda r: sum(staging_stalls(r)))
    res = choice.result
    dram = {"weights": {"read": res[F["dram_w"]] + extra, "write": 0.0},
            "inputs": {"read": res[F["dram_i"]], "write": 0.0},
            "outputs": {"read": res[F["dram_o_read"]], "write": res[F["dram_o_write"]]}}
    dram.update(bypass)

    # Accesses per on-chip level and tensor, in that level's words.
    staged_words = {
        "weights": {"reads": edge.read_words["weights"],
                    "writes": res[F["buf_fill_w"]] + -(-wl.extra_weight_bits // word["weights"])},
        "inputs": {"reads": edge.read_words["inputs"], "writes": res[F["buf_fill_i"]]},
        "outputs": {"reads": res[F["buf_drain_o"]], "writes": edge.write_words["outputs"]},
        "psums": {"reads": edge.read_words["psums"] + res[F["buf_drain_psum"]],
                  "writes": edge.write_words["psums"] + res[F["buf_fill_psum"]]},
    }
    by_level = {lv.name: {} for lv in arch.levels}
    for t, lv in shared.items():
        if lv is not None and any(staged_words[t].values()):
            by_level[lv.name][t] = staged_words[t]
    for lv in arch.levels:
        if lv.per_pe:
            for t in lv.holds:
                by_level[lv.name][t] = _pe_level_accesses(t, wl, fs, edge, binary_words)
    accesses = {name: {"reads": sum(v["reads"] for v in by_tensor.values()),
                       "writes": sum(v["writes"] for v in by_tensor.values()), "by_tensor": by_tensor}
                for name, by_tensor in by_level.items() if by_tensor}

    # Stalls.
    onload, offload, dram_stall = staging_stalls(res)
    stalls = {"onload": int(onload), "offload": int(offload), "dram": int(dram_stall)}
    for lv in arch.levels:
        if lv.per_pe:
            continue
        homed = [t for t, home in shared.items() if home is lv]
        read_bits = sum(edge.read_words.get(t, 0) for t in homed) * lv.word_bits
        write_bits = sum(edge.write_words.get(t, 0) for t in homed) * lv.word_bits
        need = max(math.ceil(read_bits / lv.read_bw_bits), math.ceil(write_bits / lv.write_bw_bits))
        stalls[f"memory:{lv.name}"] = max(0, need - compute)
    stalls["bank_conflicts"] = _bank_conflicts(wl, fs, pe, shared, elem_bits, binary_words)
    stage, stages = _unit_stages(wl, hw)
    stalls["converters"] = max(0, stage - compute)

    cost = LayerCost(wl.name, wl.op, wl.path, wl.macs, int(compute), stalls, 0.0, accesses, dram, {})
    cost.utilization = fs.active_pe_cycles / (pe.pes * cost.cycles) if cost.cycles else 0.0
    cost.mapping = {
        "array": f"{pe.kind} {pe.rows}x{pe.cols} {arch.interconnect}", "dataflow": dataflow,
        "gemm": {"rows_dim": fs.s_r, "cols_dim": fs.s_c, "streamed": fs.t, "groups": fs.groups},
        "folds": fs.folds, "cycles_per_step": fs.cycles_per_step,
        "staging_tile": dict(zip("gnkcpq", choice.tile)), "staging_order": "".join(choice.order),
        "staging_steps": int(res[F["steps"]]), "nests_evaluated": choice.candidates,
        "nests_fitting": choice.fitting, "psums_in_buffer": choice.psums_in_buffer,
        "unit_stage_cycles": stages, "inputs_on_chip": residency.inputs, "output_on_chip": residency.output,
    }
    return cost


def _bank_conflicts(wl, fs, pe, shared, elem_bits, binary_words) -> int:
    """Extra cycles of the array-edge streams of inputs and weights from buffers that model their banks.
    On the XNOR array the streamed element is a popcount word: channels count in words."""
    from simulator.hw import banks

    if binary_words:
        wl = replace(wl, c=-(-wl.c // pe.word_bits))
    # The input streams of a batch are materialised per pixel: beyond BANK_PIXELS pixels, cost the first images
    # that fit and scale by the batch (exact when every image repeats the same pattern; stated in the docs).
    images = max(1, min(wl.n, BANK_PIXELS // max(1, wl.p * wl.q)))
    scale = wl.n / images
    if images < wl.n:
        wl = replace(wl, n=images)
    total = 0
    for tensor in ("inputs", "weights"):
        lv = shared[tensor]
        if lv is None or not lv.bank_conflicts:
            continue
        spec = banks.BankSpec(lv.banks, lv.ports_per_bank, lv.word_bits, lv.interleave_words)
        bits, pad = elem_bits[tensor], lv.layout_pad_words
        geom = banks.geometry(wl, c_pitch=banks.padded_pitch(wl.g * wl.c, bits, lv.word_bits, pad),
                              t_pitch=banks.padded_pitch(wl.c * wl.r * wl.s, bits, lv.word_bits, pad))
        total += banks.conflict_cycles(geom, fs.dataflow, pe.rows, pe.cols, tensor, bits, spec)
    return int(round(total * scale))


def _pe_level_accesses(tensor, wl, fs, edge, binary_words) -> dict:
    """A per-PE scratchpad: one read per MAC of its operand (read + write of the partial sum for outputs),
    filled by what the array edge delivers (one element per access)."""
    per_mac = fs.active_pe_cycles if binary_words else wl.macs
    if tensor in ("outputs", "psums"):
        leaving = edge.writes["outputs"] + edge.writes["psums"]
        return {"reads": per_mac + leaving, "writes": per_mac + edge.reads["psums"]}
    return {"reads": per_mac, "writes": edge.reads[tensor]}


def _unit_stages(wl, hw) -> tuple[int, dict]:
    """Cycles each auxiliary unit needs for this layer's events (they run beside the array as pipeline stages)."""
    stages = {}
    for name, keys in UNIT_EVENTS.items():
        events = sum(wl.event(k) for k in keys)
        if not events:
            continue
        unit = hw.arch.units[name]
        if unit.count == 0:
            raise HwsimError(f"layer '{wl.name}' needs {events:,} {name} operations but the design has no {name} "
                             f"units (add some: --set units.{name}.count=N)", field=f"architecture.units.{name}.count")
        stages[name] = math.ceil(events / unit.throughput)
    return (max(stages.values()) if stages else 0), stages


def _vector_cost(wl, hw, area: AreaReport, residency: Residency) -> LayerCost:
    """Pooling, residual add, ReLU / clip: the ALU lanes stream the inputs from and outputs to DRAM (or from and
    to the buffer, for activations kept on chip)."""
    arch = hw.arch
    stage, stages = _unit_stages(wl, hw)
    main = "lut" if wl.op == "lut" else "alu"      # the unit doing the layer's work; the others are stages
    compute = stages.get(main, 0)
    in_lv, out_lv = arch.shared_level_for("inputs"), arch.shared_level_for("outputs")
    in_bits, out_bits = wl.in_elems * wl.in_bits, wl.out_elems * wl.out_bits
    burst = arch.dram.burst_bits
    dram = {"inputs": {"read": 0.0 if residency.inputs else _bursts(in_bits, burst), "write": 0.0},
            "outputs": {"read": 0.0, "write": 0.0 if residency.output else _bursts(out_bits, burst)}}
    if wl.extra_weight_bits:   # a lut's table, fetched once per batch like weights
        dram["weights"] = {"read": _bursts(wl.extra_weight_bits, burst), "write": 0.0}
    moved = sum(v["read"] + v["write"] for v in dram.values())
    transfer = math.ceil(moved / arch.dram.bandwidth_bits) + arch.dram.latency_cycles if moved else 0
    overlapped = all(lv is not None and lv.double_buffered for lv in (in_lv, out_lv))
    stalls = {"dram": max(0, transfer - compute) if overlapped else transfer,
              "converters": max(0, stage - compute)}
    accesses = {}
    for lv, tensor, bits in ((in_lv, "inputs", in_bits), (out_lv, "outputs", out_bits)):
        if lv is None:
            continue
        entry = accesses.setdefault(lv.name, {"reads": 0, "writes": 0, "by_tensor": {}})
        n_words = -(-bits // lv.word_bits)
        # Inputs are written in from DRAM and read by the ALU; outputs written by the ALU and read out to DRAM.
        # A tensor kept on chip skips the DRAM side: inputs are only read, outputs only written.
        kept = residency.inputs if tensor == "inputs" else residency.output
        reads = n_words if (tensor == "inputs" or not kept) else 0
        writes = n_words if (tensor == "outputs" or not kept) else 0
        entry["by_tensor"][tensor] = {"reads": reads, "writes": writes}
        entry["reads"] += reads
        entry["writes"] += writes
    cost = LayerCost(wl.name, wl.op, wl.path, 0, int(compute), stalls, 0.0, accesses, dram,
                     {"unit_stage_cycles": stages, "alu_lanes": arch.units["alu"].throughput,
                      "inputs_on_chip": residency.inputs, "output_on_chip": residency.output})
    lanes = arch.units[main].throughput
    work = sum(wl.event(k) for k in UNIT_EVENTS[main])
    cost.utilization = work / (lanes * cost.cycles) if cost.cycles else 0.0
    return cost


def _bursts(bits: float, burst: int) -> float:
    return -(-bits // burst) * burst if bits else 0.0


# ----------------------------------------------------------------------------------------------------------
# Energy.


def _add_energy(cost: LayerCost, wl, hw, area: AreaReport, clock: Clock, batch: int) -> None:
    tech, arch = hw.tech, hw.arch
    e = dict.fromkeys(ENERGY_CATEGORIES, 0.0)
    if wl.is_mac:
        pe, _ = _pe_for(wl, arch)
        if wl.path == "xnor" and pe.kind == "xnor":
            words = wl.n * wl.g * wl.k * wl.p * wl.q * wl.r * wl.s * -(-wl.c // pe.word_bits)
            e["popcount"] = words * popcount_word_energy(tech, pe.word_bits, wl.acc_bits).pj
        else:
            gated = {"none": 0, "zero_activation": wl.zero_act_macs, "zero_any": wl.zero_any_macs}[arch.gating] or 0
            cost.gated_macs = gated
            per_mac = (fp32_mac_energy(tech, wl.name) if wl.mac_kind == "fp32"
                       else mac_energy(tech, wl.a_op_bits, wl.w_op_bits, wl.acc_bits))
            e["mac"] = (wl.macs - gated) * per_mac.pj
        # The PEs' pipeline registers take the clock every cycle; register-file scratchpads (macro: registers)
        # are written through enables (clock-gated), so they cost their write energy per access instead.
        cost.mapping["clocked_registers"] = pe.pes * pe.register_bits
        e["clock"] = pe.pes * pe.register_bits * cost.cycles * tech.logic.dff_pj_per_clock.value
    if wl.event("lut_reads"):
        e["lut"] = wl.event("lut_reads") * lut_read_energy(tech, wl.lut_entries or arch.lut_entries,
                                                           wl.lut_width_bits or arch.lut_width_bits).pj
    e["converters"] = (wl.event("qe") * converter_energy(tech, "qe").pj + wl.event("ce") * converter_energy(tech, "ce").pj
                       + wl.event("qk") * converter_energy(tech, "qk", wl.qk_comparators).pj
                       + wl.event("ck") * converter_energy(tech, "ck").pj)
    e["requant"] = wl.event("requants") * requant_energy(tech).pj
    e["other_alu"] = wl.event("compares") * compare_energy(tech).pj + wl.event("adds") * alu_add_energy(tech).pj
    if wl.event("muls"):
        e["other_alu"] += wl.event("muls") * mult_energy(tech, wl.mul_bits, wl.mul_bits).pj
    for name, acc in cost.accesses.items():
        macro = area.macros[name]
        e["sram"] += acc["reads"] * macro.read_pj + acc["writes"] * macro.write_pj
    e["dram"] = sum(v["read"] + v["write"] for v in cost.dram_bits.values()) * arch.dram.pj_per_bit.value
    # Leakage of every macro and unit while this layer runs (mW × s = mJ; ×1e9 -> pJ).
    e["leakage"] = area.leakage_mw * (cost.cycles / clock.hz) * 1e9
    cost.energy_pj = {k: v / batch for k, v in e.items()}
