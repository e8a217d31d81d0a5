"""SRAM bank-conflict stall cycles of the operand streams at a PE array's edge.

The model is SCALE-Sim v3's bank model, applied to our fold schedule. In every cycle the array edge requests a set
of elements of one tensor from that tensor's SRAM buffer. An element's address is its index in the tensor layout
below.

    line  = addr // elems_per_word            elems_per_word = max(1, word_bits // elem_bits)
    bank  = (line // interleave_words) % banks

Reading several elements of the same line costs one access. Each bank serves `ports_per_bank` distinct lines per
cycle, so a cycle whose busiest bank is asked for L distinct lines stalls for ceil(L / ports) - 1 extra cycles.
A cycle with no requests stalls for 0. The result is the sum of the stalls over every cycle of every fold.

Layouts (G groups, C input / K output channels per group, Ctot = G*C, T = C*R*S):

* inputs  NHWC:          addr = ((n*H + h)*W + w)*Cp + g*C + c     (pixel pitch Cp = Ctot unless padded)
* weights [G][K][R][S][C]: addr = (g*K + k)*Tp + tau,   tau = (r*S + s)*C + c   (filter pitch Tp = T unless padded)
* im2col: pixel m = (n, p, q) in raster order, h = p*sh + r - pt, w = q*sw + s - pl. An element with h or w
  outside the input is padding: the array makes it up, so it is never requested.

Fold schedule (SCALE-Sim dataflows). Each group has its own folds. One array pass runs per (row fold, column fold).

* os: rows = pixels, cols = filters. Both tensors stream (skewed): input lane i = pixel, cycle t reads
  tau = t - i; weight lane j = filter, cycle t reads tau = t - j.
* ws: rows = taus, cols = filters. Weights are preloaded, one cycle per array row. Inputs stream: lane i = tau,
  cycle t reads pixel t - i.
* is: rows = taus, cols = pixels. Inputs are preloaded, one cycle per array row. Weights stream: lane i = tau,
  cycle t reads filter t - i.

A stream that depends on one array dimension only is repeated for every fold of the other dimension.

Two implementations give the same number:

* `conflict_cycles_bruteforce` builds every request of every fold straight from the definitions above. It is the
  reference for the tests.
* `conflict_cycles` is the fast one. It computes the stalls of a few representative cycles and multiplies each by
  the number of cycles that have the same stall count. See "Analytical method" below.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

DATAFLOWS = ("os", "ws", "is")
TENSORS = ("inputs", "weights")

# Upper bound on the elements the analytical path holds at once (rows x lanes). It bounds the memory used for a
# 256-wide array without slowing small ones.
_CHUNK_ELEMS = 1 << 21


@dataclass(frozen=True)
class BankSpec:
    """One SRAM buffer: `banks` banks of `ports_per_bank` ports, `word_bits`-bit lines, and `interleave_words`
    consecutive lines per bank before the next bank."""

    banks: int
    ports_per_bank: int
    word_bits: int
    interleave_words: int = 1

    def __post_init__(self):
        for key in ("banks", "ports_per_bank", "word_bits", "interleave_words"):
            _require_positive(key, getattr(self, key))

    def elems_per_word(self, elem_bits: int) -> int:
        return max(1, self.word_bits // elem_bits)

    def modulus(self, elem_bits: int) -> int:
        """The address shift that keeps every cycle's stalls unchanged. Shifting all addresses of a cycle by a
        multiple of it moves every line by a multiple of interleave*banks lines. Each line stays in its bank, and
        lines that were distinct stay distinct."""
        return self.elems_per_word(elem_bits) * self.interleave_words * self.banks


@dataclass(frozen=True)
class ConvGeometry:
    """Loop bounds of one (possibly grouped) convolution, per group. See the module docstring.

    P and Q are given, so bottom and right padding are implied. A dense layer is a 1x1 convolution on a 1x1 map."""

    n: int
    g: int
    k: int
    c: int
    p: int
    q: int
    r: int
    s: int
    h: int
    w: int
    sh: int = 1
    sw: int = 1
    pt: int = 0
    pl: int = 0
    c_pitch: int = 0        # 0: Ctot (unpadded NHWC); else elements between consecutive pixels (>= Ctot)
    t_pitch: int = 0        # 0: T (unpadded); else elements between consecutive filters (>= T)

    def __post_init__(self):
        for key in ("n", "g", "k", "c", "p", "q", "r", "s", "h", "w", "sh", "sw"):
            _require_positive(key, getattr(self, key))
        for key in ("pt", "pl", "c_pitch", "t_pitch"):
            value = getattr(self, key)
            if not (_is_int(value) and value >= 0):
                raise ValueError(f"{key} must be a non-negative integer, got {value!r}")
        if self.c_pitch and self.c_pitch < self.ctot or self.t_pitch and self.t_pitch < self.t:
            raise ValueError("a pitch must be at least the length it holds")

    @property
    def t(self) -> int:
        """Reduction length per output (im2col columns): C*R*S."""
        return self.c * self.r * self.s

    @property
    def m(self) -> int:
        """Output pixels of the batch (im2col rows): N*P*Q."""
        return self.n * self.p * self.q

    @property
    def ctot(self) -> int:
        return self.g * self.c

    @property
    def cp(self) -> int:
        """Input pixel pitch in elements: Ctot, or more when the layout pads each pixel's channels."""
        return self.c_pitch or self.ctot

    @property
    def tp(self) -> int:
        """Filter pitch in elements: T, or more when the layout pads each filter."""
        return self.t_pitch or self.t


def geometry(workload, c_pitch: int = 0, t_pitch: int = 0) -> ConvGeometry:
    """The bank model's view of a `simulator.hw.workload.Workload` (a MAC layer), with optional layout pitches."""
    sh, sw = workload.stride
    pt, pl = workload.pad[0], workload.pad[1]
    return ConvGeometry(n=workload.n, g=workload.g, k=workload.k, c=workload.c, p=workload.p, q=workload.q,
                        r=workload.r, s=workload.s, h=workload.h, w=workload.w, sh=sh, sw=sw, pt=pt, pl=pl,
                        c_pitch=c_pitch, t_pitch=t_pitch)


def padded_pitch(length: int, elem_bits: int, word_bits: int, pad_words: int) -> int:
    """The pitch (elements) of a row of `length` elements stored whole words apart plus `pad_words` spare words —
    the usual skew that breaks power-of-two strides across banks; 0 (unpadded) when pad_words is 0."""
    if pad_words == 0:
        return 0
    per_word = max(1, word_bits // elem_bits)
    return (-(-length // per_word) + pad_words) * per_word


# ---------------------------------------------------------------------------------------------------------------
# Brute force: every request of every fold.
# ---------------------------------------------------------------------------------------------------------------

def conflict_cycles_bruteforce(geom: ConvGeometry, dataflow: str, rows: int, cols: int, tensor: str,
                               elem_bits: int, bank: BankSpec) -> int:
    """Stall cycles from walking every fold's requests. This is the reference. It loops over folds and is
    vectorised within a fold."""
    _check_args(dataflow, rows, cols, tensor, elem_bits)
    row_extent, col_extent = {"os": (geom.m, geom.k), "ws": (geom.t, geom.k), "is": (geom.t, geom.m)}[dataflow]
    epw = bank.elems_per_word(elem_bits)
    total = 0
    for g in range(geom.g):
        for row_fold in _fold_ranges(row_extent, rows):
            for col_fold in _fold_ranges(col_extent, cols):
                cycle, addr = _fold_requests(geom, dataflow, tensor, g, row_fold, col_fold)
                total += _requests_stalls(cycle, addr, epw, bank)
    return total


def _fold_ranges(extent: int, size: int):
    """(first index, used PEs) of each fold of `extent` over `size` PEs."""
    return [(start, min(size, extent - start)) for start in range(0, extent, size)]


def _fold_requests(geom, dataflow, tensor, g, row_fold, col_fold):
    """(cycle, address) of every element the edge requests for `tensor` in one fold (padding dropped).

    A skewed stream is written as a (lane, index) grid with cycle = lane + index. That is the same as "at cycle t,
    lane i requests index t - i when it is in range". A preload is a (row u, lane j) grid with cycle = u."""
    (r0, ru), (c0, cu) = row_fold, col_fold
    if dataflow == "os":
        if tensor == "inputs":                       # lane i: pixel r0+i, reads tau
            lane, tau = _grid(ru, geom.t)
            return _keep(lane + tau, *_input_addr(geom, g, r0 + lane, tau))
        lane, tau = _grid(cu, geom.t)                # lane j: filter c0+j, reads tau
        return lane + tau, _weight_addr(geom, g, c0 + lane, tau)
    if dataflow == "ws":
        if tensor == "weights":                      # preload: row u holds tau r0+u, lane j filter c0+j
            u, lane = _grid(ru, cu)
            return u, _weight_addr(geom, g, c0 + lane, r0 + u)
        lane, m = _grid(ru, geom.m)                  # lane i: tau r0+i, reads pixel m
        return _keep(lane + m, *_input_addr(geom, g, m, r0 + lane))
    if tensor == "inputs":                           # is preload: row u holds tau r0+u, lane j pixel c0+j
        u, lane = _grid(ru, cu)
        return _keep(u, *_input_addr(geom, g, c0 + lane, r0 + u))
    lane, k = _grid(ru, geom.k)                      # is stream: lane i: tau r0+i, reads filter k
    return lane + k, _weight_addr(geom, g, k, r0 + lane)


def _grid(a: int, b: int):
    i, j = np.meshgrid(np.arange(a, dtype=np.int64), np.arange(b, dtype=np.int64), indexing="ij")
    return i.ravel(), j.ravel()


def _keep(cycle, addr, valid):
    return cycle[valid], addr[valid]


def _input_addr(geom: ConvGeometry, g: int, m, tau):
    """NHWC address and not-padding mask of im2col element (m, tau) of group g."""
    n, pq = np.divmod(m, geom.p * geom.q)
    p, q = np.divmod(pq, geom.q)
    rs, c = np.divmod(tau, geom.c)
    r, s = np.divmod(rs, geom.s)
    h = p * geom.sh + r - geom.pt
    w = q * geom.sw + s - geom.pl
    valid = (h >= 0) & (h < geom.h) & (w >= 0) & (w < geom.w)
    return ((n * geom.h + h) * geom.w + w) * geom.cp + g * geom.c + c, valid


def _weight_addr(geom: ConvGeometry, g: int, k, tau):
    return (g * geom.k + k) * geom.tp + tau


def _requests_stalls(cycle, addr, epw: int, bank: BankSpec) -> int:
    """Sum over cycles of ceil(max over banks of distinct lines / ports) - 1. It uses a (cycle, line) np.unique.
    This is deliberately a different counting method from the analytical path's per-row sort."""
    if cycle.size == 0:
        return 0
    line = addr // epw
    span = int(line.max()) + 1
    cycle, line = np.divmod(np.unique(cycle * span + line), span)
    bank_of = (line // bank.interleave_words) % bank.banks
    cycles, cycle_id = np.unique(cycle, return_inverse=True)
    per_bank = np.bincount(cycle_id * bank.banks + bank_of, minlength=len(cycles) * bank.banks)
    per_bank = per_bank.reshape(len(cycles), bank.banks)
    peak = per_bank.max(axis=1)                              # >= 1: only cycles with requests are listed
    return int((-(-peak // bank.ports_per_bank) - 1).sum())


# ---------------------------------------------------------------------------------------------------------------
# Analytical method.
#
# Every array pass is a *stream*. A lane fold of `width` consecutive indices of one loop dimension (the lane axis)
# sits on the PE edge. In cycle t, lane l reads index x = t - skew*l of the other dimension (the x axis):
# skew = 1 for the systolic streams and 0 for the preloads. A preload's cycles over all its folds are exactly
# "every x once per lane fold", so it is a stream with skew 0 over the full x axis. The address of (lane, x) is
# separable: lane_addr + x_addr + group offset. For im2col the pixel part is ((n*H + p*sh)*W + q*sw)*Ctot and the
# tap part is ((r-pt)*W + s-pl)*Ctot + c. Whether an element is padding depends only on a class of the lane index
# and a class of x: the (r, s) of a tap, and the valid r/s ranges of a pixel.
#
# The stalls of a cycle do not change when every address is shifted by a multiple of the modulus (see
# BankSpec.modulus). The method reduces the work in three steps, and each step is exact.
#
# 1. Lane folds. Two folds have the same per-cycle stalls for every t when they agree on (lane addresses relative
#    to the first lane, lane classes, first address mod modulus), with group offsets included. One representative
#    per class is costed and then multiplied by the class size.
# 2. Cycles. The x axis splits into runs: maximal ranges where x_addr grows by a fixed slope and the class is
#    constant (a tap of C channels; the part of an output row with the same padding class). Piece k is the set of
#    cycles in which lane 0 reads run k.
#    - Its first min(len, width-1) cycles are the *transition*. Some lanes still read the width-1 indices before
#      the run. Those cycles are fully determined by (their number, the run's class, run start mod modulus, the
#      class and address relative to the run start of each of the width-1 preceding indices). Pieces are grouped
#      by that key. For example, all interior output rows of a ws pixel stream collapse to one.
#    - Its remaining cycles are *steady*: every lane is inside run k. The addresses are then const + slope*t, so
#      the stalls repeat with period modulus / gcd(slope, modulus). One period is costed per
#      (class, run start mod modulus), weighted by how many steady cycles fall on each phase.
#    - The width-1 tail cycles after the last x are costed once per lane class.
# 3. The representative cycles (lane fold class x cycle) are costed as rows of a matrix. Each row's lines are
#    sorted, first occurrences are marked, distinct lines are counted per (row, bank) with bincount, and the
#    maximum is taken over banks. There is no per-cycle Python loop.
# ---------------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Axis:
    """One loop dimension as the array edge sees it."""

    addr: np.ndarray    # address contribution of each index (int64)
    cls: np.ndarray     # padding class of each index: validity of (lane, x) depends only on the two classes
    slope: int          # address step between neighbours inside a run


@dataclass(frozen=True)
class _Stream:
    lane: _Axis
    x: _Axis
    valid: np.ndarray            # [lane class, x class] -> element is real data (not padding)
    lanes: int                   # PEs along the edge the lanes occupy (fold width)
    skew: int                    # 1: lane l reads x = t - l (systolic); 0: all lanes read x = t (preload)
    repeat: int                  # passes of each lane fold (folds of the other array dimension)
    group_offsets: np.ndarray    # address offset of each group


def conflict_cycles(geom: ConvGeometry, dataflow: str, rows: int, cols: int, tensor: str, elem_bits: int,
                    bank: BankSpec) -> int:
    """Stall cycles from bank conflicts of `tensor`'s edge stream over the whole layer. The result is exactly equal
    to `conflict_cycles_bruteforce`; this function costs only representative cycles (see "Analytical method")."""
    _check_args(dataflow, rows, cols, tensor, elem_bits)
    stream = _stream(geom, dataflow, rows, cols, tensor)
    modulus = bank.modulus(elem_bits)
    epw = bank.elems_per_word(elem_bits)
    total = 0
    for width, fold_start, fold_offset, fold_count in _lane_fold_classes(stream, modulus):
        cycles, weights = _representative_cycles(stream.x, width, stream.skew, modulus)
        total += _weighted_stalls(stream, width, fold_start, fold_offset, fold_count, cycles, weights, epw, bank)
    return total * stream.repeat


def _stream(geom: ConvGeometry, dataflow: str, rows: int, cols: int, tensor: str) -> _Stream:
    """Which dimension sits on the edge, which one streams past it, and how often the stream is repeated."""
    if tensor == "inputs":
        pixels, taps, valid = _input_axes(geom)
        offsets = np.arange(geom.g, dtype=np.int64) * geom.c
        if dataflow == "os":
            return _Stream(pixels, taps, valid, rows, 1, -(-geom.k // cols), offsets)
        if dataflow == "ws":
            return _Stream(taps, pixels, np.ascontiguousarray(valid.T), rows, 1, -(-geom.k // cols), offsets)
        return _Stream(pixels, taps, valid, cols, 0, 1, offsets)
    filters = _Axis(np.arange(geom.k, dtype=np.int64) * geom.tp, np.zeros(geom.k, np.int64), geom.tp)
    taps = _Axis(np.arange(geom.t, dtype=np.int64), np.zeros(geom.t, np.int64), 1)
    always = np.ones((1, 1), dtype=bool)
    offsets = np.arange(geom.g, dtype=np.int64) * geom.k * geom.tp
    if dataflow == "os":
        return _Stream(filters, taps, always, cols, 1, -(-geom.m // rows), offsets)
    if dataflow == "ws":
        return _Stream(filters, taps, always, cols, 0, 1, offsets)
    return _Stream(taps, filters, always, rows, 1, -(-geom.m // cols), offsets)


def _input_axes(geom: ConvGeometry):
    """Pixel axis, tap axis, and the validity table [pixel class, tap class] of im2col.

    A pixel's class is (class of its output row p, class of its output column q). An output row's class is the set
    of filter rows r that land inside the input, and likewise for columns. A tap's class is r*S + s."""
    row_cls, row_ok = _edge_classes(geom.p, geom.sh, geom.pt, geom.r, geom.h)        # row_ok[class, r]
    col_cls, col_ok = _edge_classes(geom.q, geom.sw, geom.pl, geom.s, geom.w)
    m = np.arange(geom.m, dtype=np.int64)
    n, pq = np.divmod(m, geom.p * geom.q)
    p, q = np.divmod(pq, geom.q)
    pixels = _Axis(((n * geom.h + p * geom.sh) * geom.w + q * geom.sw) * geom.cp,
                   row_cls[p] * len(col_ok) + col_cls[q], geom.sw * geom.cp)

    tau = np.arange(geom.t, dtype=np.int64)
    rs, c = np.divmod(tau, geom.c)
    r, s = np.divmod(rs, geom.s)
    taps = _Axis(((r - geom.pt) * geom.w + (s - geom.pl)) * geom.cp + c, rs, 1)

    # valid[row class * col classes + col class, r*S + s] = row_ok[row class, r] & col_ok[col class, s]
    valid = row_ok[:, None, :, None] & col_ok[None, :, None, :]
    return pixels, taps, valid.reshape(len(row_ok) * len(col_ok), geom.r * geom.s)


def _edge_classes(outputs: int, stride: int, pad: int, kernel: int, size: int):
    """Class id of each output position along one spatial axis, and which kernel taps of each class read real
    input (not padding): ok[class, tap]."""
    pos = np.arange(outputs, dtype=np.int64)[:, None] * stride + np.arange(kernel) - pad
    ok = (pos >= 0) & (pos < size)
    ids, first, _ = _group_rows(ok)
    return ids, ok[first]


def _lane_fold_classes(stream: _Stream, modulus: int):
    """Classes of lane folds (over all groups) with identical per-cycle stalls.

    Yields (width, representative fold start, its group offset, class size) per fold width. There are at most two
    widths: full folds and the edge fold."""
    lane = stream.lane
    size = len(lane.addr)
    starts = np.arange(0, size, stream.lanes, dtype=np.int64)
    widths = np.minimum(stream.lanes, size - starts)
    group_res, group_first, group_count = np.unique(stream.group_offsets % modulus, return_index=True,
                                                    return_counts=True)
    for width in np.unique(widths):
        width = int(width)
        start = starts[widths == width]
        idx = start[:, None] + np.arange(width)
        shape = np.concatenate([lane.addr[idx] - lane.addr[start, None], lane.cls[idx]], axis=1)
        shape_id = _group_rows(shape)[0]
        base = (lane.addr[start, None] + group_res[None, :]) % modulus       # (folds, group residues)
        key = (shape_id[:, None] * modulus + base).ravel()
        _, first, inverse = np.unique(key, return_index=True, return_inverse=True)
        count = np.bincount(inverse.ravel(), weights=np.broadcast_to(group_count, base.shape).ravel())
        fold, res = np.divmod(first, len(group_res))
        yield width, start[fold], stream.group_offsets[group_first[res]], np.rint(count).astype(np.int64)


def _representative_cycles(x: _Axis, width: int, skew: int, modulus: int):
    """Cycles of one lane fold's stream whose stalls, each weighted, add up to the whole stream's.

    The result depends on the lane fold only through its width. The lane fold's own base residue is handled by
    pairing every lane class with every representative (see step 2 of "Analytical method")."""
    start, length = _runs(x)
    ramp = np.minimum(length, skew * (width - 1))     # transition cycles of each piece
    parts = [_transition_cycles(x, start, ramp, width, modulus),
             _steady_cycles(x, start + ramp, length - ramp, modulus)]
    if skew and width > 1:                             # tail: lanes drain after the last x
        tail = len(x.addr) + np.arange(width - 1, dtype=np.int64)
        parts.append((tail, np.ones(width - 1, dtype=np.int64)))
    cycles = np.concatenate([c for c, _ in parts])
    weights = np.concatenate([w for _, w in parts])
    return cycles, weights


def _runs(x: _Axis):
    """Start and length of the maximal index ranges where the address grows by `slope` and the class is constant."""
    breaks = np.flatnonzero((np.diff(x.addr) != x.slope) | (np.diff(x.cls) != 0)) + 1
    start = np.concatenate([[0], breaks]).astype(np.int64)
    length = np.diff(np.append(start, len(x.addr)))
    return start, length


def _transition_cycles(x: _Axis, start, ramp, width: int, modulus: int):
    """One representative per class of transitions: the first `ramp` cycles of a piece. Lanes 1..width-1 may still
    read the width-1 indices before the run. The key is therefore those indices' classes and relative addresses,
    plus the ramp length, the run's class, and its start address mod modulus."""
    sel = np.flatnonzero(ramp > 0)
    if sel.size == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    s = start[sel]
    before = s[:, None] - np.arange(1, width)          # index read by lane o during the piece's first cycle
    inside = before >= 0
    idx = np.where(inside, before, 0)
    key = np.column_stack([ramp[sel], x.cls[s], x.addr[s] % modulus,
                           np.where(inside, x.cls[idx], -1),
                           np.where(inside, x.addr[idx] - x.addr[s, None], 0)])
    _, first, counts = _group_rows(key)
    rep = sel[first]
    return _ranges(start[rep], ramp[rep]), np.repeat(counts.astype(np.int64), ramp[rep])


def _steady_cycles(x: _Axis, start, length, modulus: int):
    """One period of the steady cycles per (run class, run start mod modulus). Each phase is weighted by the
    number of steady cycles, over all runs of the class, that fall on it.

    In a steady cycle every lane reads inside one run. The addresses are const + slope*t and validity is fixed,
    so the stalls repeat every modulus / gcd(slope, modulus) cycles."""
    sel = np.flatnonzero(length > 0)
    if sel.size == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    period = modulus // math.gcd(x.slope % modulus, modulus)
    s, n = start[sel], length[sel]
    _, cls_id = np.unique(x.cls[s] * modulus + x.addr[s] % modulus, return_inverse=True)
    cls_id = cls_id.ravel()
    classes = int(cls_id.max()) + 1
    phases = int(min(period, n.max()))
    full, rem = np.divmod(n, period)                   # phase j gets full + (j < rem) cycles of a run
    at_least = np.bincount(cls_id * (phases + 1) + rem, minlength=classes * (phases + 1))
    at_least = np.cumsum(at_least.reshape(classes, phases + 1)[:, ::-1], axis=1)[:, ::-1]   # #runs with rem >= j
    weight = np.bincount(cls_id, weights=full, minlength=classes).astype(np.int64)[:, None] + at_least[:, 1:]
    longest = np.lexsort((n, cls_id))                  # representative: the class's longest run
    last = np.flatnonzero(np.diff(np.append(cls_id[longest], classes)))
    rep = longest[last]
    cls_of, phase = np.nonzero(weight > 0)             # weight > 0 implies phase < the representative's length
    return s[rep][cls_of] + phase, weight[cls_of, phase]


def _ranges(start, length):
    """Concatenation of arange(start[i], start[i] + length[i])."""
    offset = np.arange(int(length.sum()), dtype=np.int64) - np.repeat(np.cumsum(length) - length, length)
    return np.repeat(start, length) + offset


def _weighted_stalls(stream: _Stream, width, fold_start, fold_offset, fold_count, cycles, weights, epw, bank):
    """Sum over (lane fold class, representative cycle) of class size x cycle weight x stalls of that cycle. It is
    evaluated in chunks of lane fold classes to bound memory."""
    lanes = np.arange(width, dtype=np.int64)
    x = cycles[:, None] - stream.skew * lanes          # (cycles, lanes)
    active = (x >= 0) & (x < len(stream.x.addr))
    x = np.clip(x, 0, len(stream.x.addr) - 1)
    x_addr, x_cls = stream.x.addr[x], stream.x.cls[x]
    # Real addresses are below the tensor size. int32 lines sort ~7x faster than int64 (SIMD sort).
    span = int(np.abs(stream.lane.addr).max() + np.abs(stream.x.addr).max() + np.abs(stream.group_offsets).max())
    dtype = np.int32 if span < 2**31 - 1 else np.int64
    x_addr = x_addr.astype(dtype)
    per_chunk = max(1, _CHUNK_ELEMS // (len(cycles) * max(width, bank.banks)))   # also bounds the bank counters
    total = 0
    for lo in range(0, len(fold_start), per_chunk):
        idx = fold_start[lo:lo + per_chunk, None] + lanes                           # (folds, lanes)
        lane_addr = (fold_offset[lo:lo + per_chunk, None] + stream.lane.addr[idx]).astype(dtype)
        addr = lane_addr[:, None, :] + x_addr[None]                                 # (folds, cycles, lanes)
        valid = active[None] & stream.valid[stream.lane.cls[idx][:, None, :], x_cls[None]]
        stalls = _row_stalls(addr.reshape(-1, width), valid.reshape(-1, width), epw, bank)
        stalls = stalls.reshape(len(idx), len(cycles))
        total += int(fold_count[lo:lo + per_chunk] @ (stalls @ weights))
    return total


def _row_stalls(addr, valid, epw: int, bank: BankSpec):
    """Stall cycles of each row (one cycle's requests; `valid` marks real requests)."""
    rows, banks = len(addr), bank.banks
    line = np.where(valid, _div(addr, epw), -1)        # valid addresses are >= 0
    line.sort(axis=1)
    new = np.ones(line.shape, dtype=bool)              # first occurrence of each distinct line of the row
    new[:, 1:] = line[:, 1:] != line[:, :-1]
    new &= line >= 0
    row_base = (np.arange(rows, dtype=np.int64) * banks)[:, None]
    if rows * banks < 2**31 - 1:
        row_base = row_base.astype(line.dtype)
    slot = np.where(new, row_base + _mod(_div(line, bank.interleave_words), banks), rows * banks)
    per_bank = np.bincount(slot.ravel(), minlength=rows * banks + 1)[:-1].reshape(rows, banks)
    peak = per_bank.max(axis=1)
    return np.maximum(-(-peak // bank.ports_per_bank) - 1, 0)


def _div(a, d: int):
    """a // d, as a shift when d is a power of two (the common case, and several times faster)."""
    return a >> (d.bit_length() - 1) if d & (d - 1) == 0 else a // a.dtype.type(d)


def _mod(a, d: int):
    return a & (d - 1) if d & (d - 1) == 0 else a % a.dtype.type(d)


def _group_rows(matrix):
    """Group equal rows: (group id of each row, first row of each group, group sizes).

    np.unique(axis=0) does the same job but sorts rows as opaque byte strings. Here a lexsort over the columns
    is used instead, which is an order of magnitude faster."""
    matrix = np.asarray(matrix)
    order = np.lexsort(matrix.T[::-1])
    ordered = matrix[order]
    new = np.ones(len(matrix), dtype=bool)
    new[1:] = (ordered[1:] != ordered[:-1]).any(axis=1)
    ids = np.empty(len(matrix), dtype=np.int64)
    ids[order] = np.cumsum(new) - 1
    starts = np.flatnonzero(new)
    return ids, order[starts], np.diff(np.append(starts, len(matrix)))


# ---------------------------------------------------------------------------------------------------------------

def _check_args(dataflow, rows, cols, tensor, elem_bits):
    if dataflow not in DATAFLOWS:
        raise ValueError(f"dataflow must be one of {DATAFLOWS}, got {dataflow!r}")
    if tensor not in TENSORS:
        raise ValueError(f"tensor must be one of {TENSORS}, got {tensor!r}")
    for key, value in (("rows", rows), ("cols", cols), ("elem_bits", elem_bits)):
        _require_positive(key, value)


def _is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _require_positive(key, value):
    if not (_is_int(value) and value >= 1):
        raise ValueError(f"{key} must be a positive integer, got {value!r}")
