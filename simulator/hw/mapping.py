"""Mapping a layer onto the PE array and the buffers: the fold schedule and the staging loop nest.

The array level (the fold schedule). Per group, a convolution is a GEMM with M = N·P·Q pixels, K filters and a
reduction of C·R·S (for XNOR layers R·S·⌈C / word⌉ popcount words). A dataflow names which GEMM dims go on
the array's rows and columns and which one streams in time, exactly as SCALE-Sim does:

    os: rows <- pixels,    cols <- filters, time <- reduction   (outputs stay in the PEs)
    ws: rows <- reduction, cols <- filters, time <- pixels      (weights stay in the PEs)
    is: rows <- reduction, cols <- pixels,  time <- filters     (inputs stay in the PEs)

The array runs ⌈S_r/rows⌉·⌈S_c/cols⌉ folds. A systolic fold costs T + rows + cols − 2 cycles (os) or
2·rows + cols + T − 2 (ws, is) and the layer one cycle less than the sum (SCALE-Sim's formulas, docs/references.md
§5); a broadcast fold costs T (os), or T + rows (ws, is: the stationary operand is loaded one row per cycle).
An operand wider than the PE takes ⌈a/pe_a⌉·⌈w/pe_w⌉ cycles per MAC (bit-serial in time).

The staging level (the loop nest between DRAM and the buffers) tiles the layer over g, n, k, c, p, q. The
dataflow's streamed dims are the innermost loops (c for os, n·p·q for ws, k for is), so splitting them only
chops the stream of a fold into consecutive pieces and never changes the fold schedule: compute cycles do not
depend on the staging tiles. A small deterministic search over tile sizes (halving each dim from its full
extent) and the order of the two spatial dims keeps the nests that fit the buffers and picks the one with the
least latency, then the least energy. The candidates depend only on the layer, never on buffer sizes or
bandwidths, so a larger buffer or a faster link can only widen the choice: it never adds cycles.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from simulator.errors import HwsimError
from simulator.hw.access import C, G, K, N, P, Q, F, Geometry, Link, evaluate_nests

# Innermost (streamed) staging dims and the groups of spatial dims whose order is searched, per dataflow.
STREAMED = {"os": (C,), "ws": (N, P, Q), "is": (K,)}
SPATIAL_GROUPS = {"os": ((N, P, Q), (K,)), "ws": ((C,), (K,)), "is": ((C,), (N, P, Q))}


@dataclass(frozen=True)
class FoldSchedule:
    dataflow: str
    systolic: bool
    rows: int                 # array rows and columns
    cols: int
    s_r: int                  # GEMM dims of one group: on rows, on columns, streamed in time
    s_c: int
    t: int
    groups: int
    cycles_per_step: int      # cycles per streamed element (operands wider than the PE)

    @property
    def row_folds(self) -> int:
        return -(-self.s_r // self.rows)

    @property
    def col_folds(self) -> int:
        return -(-self.s_c // self.cols)

    @property
    def folds(self) -> int:
        return self.groups * self.row_folds * self.col_folds

    @property
    def compute_cycles(self) -> int:
        t = self.t * self.cycles_per_step
        if self.systolic:
            per_fold = t + self.rows + self.cols - 2 if self.dataflow == "os" else 2 * self.rows + self.cols + t - 2
            # SCALE-Sim's count (its final "- 1" included); on a 1x1 array that falls one cycle below the work
            # itself, which no schedule can beat: never report fewer cycles than the PE-cycles of useful work
            return max(self.folds * per_fold - 1, -(-self.active_pe_cycles // (self.rows * self.cols)))
        return self.folds * (t if self.dataflow == "os" else t + self.rows)

    @property
    def active_pe_cycles(self) -> int:
        """PE-cycles doing useful work: every (row, col, streamed step) of every fold actually used."""
        return self.groups * self.s_r * self.s_c * self.t * self.cycles_per_step


def fold_schedule(wl, pe, dataflow: str, systolic: bool) -> FoldSchedule:
    """The array-level schedule of a MAC or XNOR layer on PE array `pe` (arch.PeKind)."""
    if wl.path == "xnor" and pe.kind == "xnor":
        reduction = wl.r * wl.s * -(-wl.c // pe.word_bits)
        per_step = 1
    else:
        reduction = wl.c * wl.r * wl.s
        per_step = (-(-wl.a_op_bits // pe.a_bits)) * (-(-wl.w_op_bits // pe.w_bits)) if pe.kind == "mac" else 1
        if wl.mac_kind == "fp32":   # one fp32 MAC per PE step (an assumption: docs/architecture-model.md)
            per_step = 1
    pixels = wl.n * wl.p * wl.q
    s_r, s_c, t = {"os": (pixels, wl.k, reduction), "ws": (reduction, wl.k, pixels),
                   "is": (reduction, pixels, wl.k)}[dataflow]
    return FoldSchedule(dataflow, systolic, pe.rows, pe.cols, s_r, s_c, t, wl.g, per_step)


# ----------------------------------------------------------------------------------------------------------
# Array-edge traffic: what the PE array reads from and writes to the buffer that stages each tensor.


def vector_words(extent: int, lanes: int, bits: int, word_bits: int) -> int:
    """Words to deliver `extent` values to `lanes` lanes, one lane-vector per cycle: a partial word costs a word."""
    full, rest = divmod(extent, lanes)
    return full * -(-lanes * bits // word_bits) + (-(-rest * bits // word_bits) if rest else 0)


@dataclass(frozen=True)
class EdgeTraffic:
    """Elements and words moved between the buffers and the array edge (whole layer). Keys: weights, inputs,
    psums (partial sums read back into the array / written out unfinished), outputs (finished, written once)."""

    reads: dict               # tensor -> elements read toward the array (weights, inputs, psums)
    writes: dict              # psums / outputs -> elements written by the array
    read_words: dict          # tensor -> words of the tensor's buffer (or DRAM bursts when not staged)
    write_words: dict


def edge_traffic(fs: FoldSchedule, bits: dict, word_bits: dict, out_bits: int, acc_bits: int) -> EdgeTraffic:
    """bits[tensor]: bits per streamed element; word_bits[tensor]: the word of the buffer holding it."""
    g, r, c, t, rf, cf = fs.groups, fs.rows, fs.cols, fs.t, fs.row_folds, fs.col_folds
    reads, rwords = {}, {}
    if fs.dataflow == "os":
        reads["inputs"] = g * cf * fs.s_r * t
        rwords["inputs"] = g * cf * t * vector_words(fs.s_r, r, bits["inputs"], word_bits["inputs"])
        reads["weights"] = g * rf * fs.s_c * t
        rwords["weights"] = g * rf * t * vector_words(fs.s_c, c, bits["weights"], word_bits["weights"])
        # Outputs finish in the PEs: written once, drained one array row per cycle.
        writes = {"psums": 0, "outputs": g * fs.s_r * fs.s_c}
        wwords = {"psums": 0, "outputs": g * fs.s_r * vector_words(fs.s_c, c, out_bits, word_bits["outputs"])}
        reads["psums"], rwords["psums"] = 0, 0
    else:
        stationary = {"ws": "weights", "is": "inputs"}[fs.dataflow]
        streamed = {"ws": "inputs", "is": "weights"}[fs.dataflow]
        # The stationary operand is loaded once per fold, one array row per cycle; the other streams on rows.
        reads[stationary] = g * fs.s_r * fs.s_c
        rwords[stationary] = g * fs.s_r * vector_words(fs.s_c, c, bits[stationary], word_bits[stationary])
        reads[streamed] = g * cf * fs.s_r * t
        rwords[streamed] = g * cf * t * vector_words(fs.s_r, r, bits[streamed], word_bits[streamed])
        # Partial sums leave at the bottom of each column every streamed step and are read back by every row
        # fold but the first; the last row fold writes finished outputs.
        partial = g * (rf - 1) * fs.s_c * t
        partial_words = g * (rf - 1) * t * vector_words(fs.s_c, c, acc_bits, word_bits["psums"])
        writes = {"psums": partial, "outputs": g * fs.s_c * t}
        wwords = {"psums": partial_words,
                  "outputs": g * t * vector_words(fs.s_c, c, out_bits, word_bits["outputs"])}
        reads["psums"], rwords["psums"] = partial, partial_words
    return EdgeTraffic(reads, writes, rwords, wwords)


# ----------------------------------------------------------------------------------------------------------
# The staging search.


def halvings(extent: int) -> list[int]:
    """extent, ⌈extent/2⌉, ⌈extent/4⌉, ..., 1."""
    out, v = [], extent
    while True:
        out.append(v)
        if v == 1:
            return out
        v = -(-v // 2)


def candidate_nests(geom: Geometry, dataflow: str) -> tuple[np.ndarray, np.ndarray]:
    """All candidate (tiles, orders) of a layer for a dataflow; they depend on the layer shape only."""
    ext = geom.extents
    sizes = {d: halvings(ext[d]) for d in range(6)}
    tiles = []
    for combo in itertools.product(sizes[G], sizes[N], sizes[K], sizes[C], sizes[P]):
        g, n, k, c, p = combo
        for q in (sizes[Q] if p == 1 else [ext[Q]]):
            tiles.append((g, n, k, c, p, q))
    orders = []
    first, second = SPATIAL_GROUPS[dataflow]
    for a, b in ((first, second), (second, first)):
        orders.append((G,) + a + b + STREAMED[dataflow])
    tiles_arr = np.array(tiles, np.int64)
    all_tiles = np.repeat(tiles_arr, len(orders), axis=0)
    all_orders = np.tile(np.array(orders, np.int64), (len(tiles_arr), 1))
    return all_tiles, all_orders


@dataclass(frozen=True)
class StagingChoice:
    tile: tuple               # (g, n, k, c, p, q) staging tile
    order: tuple              # dims outermost first, as names
    result: np.ndarray        # the access.RESULT_FIELDS row of the chosen nest
    candidates: int           # nests evaluated
    fitting: int              # nests that fit the buffers
    psums_in_buffer: bool     # outputs held at accumulator width between visits


def choose_staging(wl, geom: Geometry, link: Link, fs: FoldSchedule, capacity: list, energy_per: dict,
                   dram_pj_per_bit: float, objective: str = "latency", latency_of=None) -> StagingChoice:
    """The fitting nest that minimises the objective over what the staging changes: "latency" (onload +
    offload + DRAM stalls, then energy), "energy" (DRAM and buffer-fill energy, then latency) or "edp"
    (their product over the layer: (compute + staging latency) x staging energy, then latency).

    capacity: [(level name, size bits, double buffered, tensors held)] of the shared buffers;
    energy_per: tensor (weights, inputs, outputs, psums) -> (pJ per write word, pJ per read word) of its buffer.
    latency_of: the staging cycles the layer is charged for given nest results (default: onload + offload +
    stalls of the nest alone); the candidates do not depend on the buffers, so a bigger buffer only adds
    fitting candidates and can never make the chosen latency worse."""
    tiles, orders = candidate_nests(geom, fs.dataflow)
    res = evaluate_nests(geom, link, tiles, orders)
    psums = (res[:, F["single_visit"]] == 0) | (fs.dataflow != "os" and fs.row_folds > 1)
    # Unfinished outputs are held at accumulator width: in the partial-sum buffer when the design has one,
    # else in the outputs' buffer (which then needs the wider tile).
    separate = any("psums" in held for _, _, _, held in capacity)
    out_bits = link.o_bits if separate else np.where(psums, link.acc_bits, link.o_bits)
    foot = {"weights": res[:, F["foot_w"]] * link.w_bits, "inputs": res[:, F["foot_i"]] * link.i_bits,
            "outputs": res[:, F["foot_o"]] * out_bits,
            "psums": np.where(psums, res[:, F["foot_o"]] * link.acc_bits, 0)}
    fits = np.ones(len(tiles), bool)
    need_by_level = {}
    for name, size_bits, double, held in capacity:
        need = sum(foot[t] for t in held) * (2 if double else 1)
        need_by_level[name] = need
        fits &= need <= size_bits
    if not fits.any():
        smallest = int(np.argmin(sum(foot.values())))
        for name, size_bits, double, held in capacity:
            need = need_by_level[name][smallest]
            if need > size_bits:
                parts = ", ".join(f"{t} {int(foot[t][smallest] + 7) // 8} B" for t in held)
                raise HwsimError(f"buffer '{name}' ({size_bits // 8} bytes) cannot hold the smallest tile of layer "
                                 f"'{wl.name}' ({parts}{', x2 double-buffered' if double else ''}: "
                                 f"{int(need + 7) // 8} bytes)", field=f"architecture.memory.{name}.size_bytes")
    latency = latency_of(res) if latency_of else res[:, F["onload"]] + res[:, F["offload"]] + res[:, F["stall"]]
    dram_bits = res[:, F["dram_w"]] + res[:, F["dram_i"]] + res[:, F["dram_o_read"]] + res[:, F["dram_o_write"]]
    energy = dram_bits * dram_pj_per_bit
    for tensor, col in (("weights", "buf_fill_w"), ("inputs", "buf_fill_i"), ("psums", "buf_fill_psum")):
        energy = energy + res[:, F[col]] * energy_per[tensor][0]
    energy = energy + res[:, F["buf_drain_o"]] * energy_per["outputs"][1]
    energy = energy + res[:, F["buf_drain_psum"]] * energy_per["psums"][1]
    index = np.flatnonzero(fits)
    keys = {"latency": (energy, latency), "energy": (latency, energy),
            "edp": (latency, (latency + link.compute_cycles) * energy)}[objective]
    best = index[np.lexsort((index, keys[0][index], keys[1][index]))[0]]
    return StagingChoice(tile=tuple(int(v) for v in tiles[best]),
                         order=tuple("gnkcpq"[d] for d in orders[best]), result=res[best],
                         candidates=len(tiles), fitting=int(fits.sum()), psums_in_buffer=bool(psums[best]))
