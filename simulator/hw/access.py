"""DRAM <-> buffer traffic of a staging loop nest, from exact tile footprints (Timeloop's delta method).

The staging loop nest tiles a layer over the dims g, n, k, c, p, q (R and S are never split) in a given order,
outermost first. At every step the buffer holds one tile of each tensor; what it fetches is the part of the new
tile that the previous tile did not already hold (the *delta*), so sliding-window halos along p and q are reused
and never fetched twice, and im2col duplicates never reach DRAM. Tiles are boxes, so a delta is
|new box| - |new box ∩ previous box|, a product of per-dim interval lengths.

Outputs are partial sums while the reduction (c) is unfinished: a tile that re-enters the buffer with c > 0 is
read back (accumulator bits), and a tile leaving the buffer is written at accumulator bits unless its reduction is
complete (output bits). When no output-relevant loop with more than one tile sits inside the c loop, each output
tile is visited once and no partial sum moves.

Timing per step i: the link moves the fills of tile i plus the write-back of the outputs tile i displaced,
`transfer = ceil(bits / bandwidth) + latency`; for tensors in double-buffered buffers it overlaps the compute
window of the tile (the layer's compute cycles in proportion to the tile's MACs), otherwise it is serialised.
The first tile's fill is the onload and the last tile's output write-back the offload: in full when
serialised; when double-buffered they stream under their own tile's compute (the array starts on the first
operands and drains outputs as folds finish), so they cost the DRAM latency plus what that window cannot hide.

Two implementations of the same definition: `evaluate_nests` (numba; per dim, runs of identical tiles are merged,
so the work is a few cells per loop level, not one per step) and `walk_nest` (plain Python, every step of the
nest; the reference for tests).
"""

from __future__ import annotations

import itertools
import math
import os
import time
from dataclasses import dataclass

import numpy as np

from .. import jit
from ..jit import njit

COST = "cost"   # this module's kernels: a group of their own (jit.set_group_mode)
DIMS = ("g", "n", "k", "c", "p", "q")
G, N, K, C, P, Q = range(6)
TENSOR_DIMS = {"weights": (G, K, C), "inputs": (G, N, C, P, Q), "outputs": (G, N, K, P, Q)}

# Columns of the result row of one loop nest.
# buf_*: words of the staging buffers: fills of weights and inputs, partial sums read back (fill_psum) and
# written out unfinished (drain_psum) in the partial-sum buffer's words, finished outputs written out (drain_o).
RESULT_FIELDS = ("onload", "offload", "stall", "dram_w", "dram_i", "dram_o_read", "dram_o_write",
                 "buf_fill_w", "buf_fill_i", "buf_fill_psum", "buf_drain_o", "buf_drain_psum", "foot_w", "foot_i",
                 "foot_o", "single_visit", "steps")
F = {name: i for i, name in enumerate(RESULT_FIELDS)}


@dataclass(frozen=True)
class Geometry:
    """What the nest analysis needs of a layer (one convolution; dense = 1x1 on a 1x1 map)."""

    extents: tuple           # (G, N, K, C, P, Q)
    r: int
    s: int
    h: int
    w: int
    sh: int
    sw: int
    pt: int
    pl: int


@dataclass(frozen=True)
class Link:
    """The DRAM link and how each tensor is staged. bits: (weights, inputs, outputs final, partial sums)."""

    w_bits: int
    i_bits: int
    o_bits: int
    acc_bits: int
    staged: tuple            # (weights, inputs, outputs): True when an on-chip buffer stages the tensor
    double_buffered: tuple   # per tensor, for staged tensors
    buffer_word_bits: tuple  # word of the buffer of: weights, inputs, outputs, partial sums
    burst_bits: int
    bandwidth_bits: float
    latency: int
    compute_cycles: float


def geometry_of(wl) -> Geometry:
    return Geometry((wl.g, wl.n, wl.k, wl.c, wl.p, wl.q), wl.r, wl.s, wl.h, wl.w, wl.stride[0], wl.stride[1],
                    wl.pad[0], wl.pad[1])


# ----------------------------------------------------------------------------------------------------------
# Per-dim tile tables (shared by both implementations).


def tile_table(geom: Geometry, dim: int, tile: int):
    """(out sizes, lo, hi) per tile index; lo/hi are the input interval for p and q, the tile range otherwise."""
    extent = geom.extents[dim]
    n = -(-extent // tile)
    start = np.arange(n, dtype=np.int64) * tile
    size = np.minimum(tile, extent - start)
    if dim == P or dim == Q:
        stride, kernel, pad, limit = ((geom.sh, geom.r, geom.pt, geom.h) if dim == P
                                      else (geom.sw, geom.s, geom.pl, geom.w))
        lo = np.clip(start * stride - pad, 0, limit)
        hi = np.clip((start + size - 1) * stride + kernel - pad, 0, limit)
        return size, lo, hi
    return size, start, start + size


# ----------------------------------------------------------------------------------------------------------
# Fast path: numba over many candidate nests of one layer.


@njit(cache=True, group=COST)
def _table(extent, tile, stride, kernel, pad, limit, out_size, lo, hi):
    """Tile sizes of p or q and the input interval [lo, hi) each tile reads (halo, padding clipped)."""
    for j in range((extent + tile - 1) // tile):
        start = j * tile
        size = min(tile, extent - start)
        out_size[j] = size
        lo[j] = min(max(start * stride - pad, 0), limit)
        hi[j] = min(max((start + size - 1) * stride + kernel - pad, 0), limit)


@njit(cache=True, group=COST)
def _runs(role, n, out_size, lo, hi, rec, mult):
    """Records of p or q for one transition kind, runs of equal records merged. Returns the run count.

    role 0: outer (index unchanged, any j); 1: the advancing loop (j-1 -> j); 2: inner (n-1 -> 0);
    3: the first step (index 0, nothing before). rec columns: size, size_in, ov, ov_in, prev_size, then the
    reduction flags first / final / prev_final, always 1 here (they belong to c: _uniform_runs)."""
    count = 0
    j0, j1 = (0, n) if role == 0 else ((1, n) if role == 1 else (0, 1))
    for j in range(j0, j1):
        prev = j if role == 0 else (j - 1 if role == 1 else (n - 1 if role == 2 else -1))
        size = out_size[j]
        size_in = hi[j] - lo[j]
        if prev < 0:
            ov, ov_in, prev_size = 0, 0, 0
        elif prev == j:
            ov, ov_in, prev_size = size, size_in, size
        else:
            ov = 0
            ov_in = max(0, min(hi[j], hi[prev]) - max(lo[j], lo[prev]))
            prev_size = out_size[prev]
        count = _push(rec, mult, count, size, size_in, ov, ov_in, prev_size, 1, 1, 1, 1)
    return count


# One explicit signature: called with literal flags from a dozen places, numba would otherwise compile a
# version per literal combination (seconds of first-run compile time)
@njit("int64(int64[:, ::1], int64[::1], int64, int64, int64, int64, int64, int64, int64, int64, int64, int64)",
      cache=True, group=COST)
def _push(rec, mult, count, size, size_in, ov, ov_in, prev_size, first, final, prev_final, m):
    """Append a record with multiplicity m, merged into the last one when equal. Returns the run count."""
    if m <= 0:
        return count
    if count > 0:
        r = rec[count - 1]
        if (r[0] == size and r[1] == size_in and r[2] == ov and r[3] == ov_in and r[4] == prev_size
                and r[5] == first and r[6] == final and r[7] == prev_final):
            mult[count - 1] += m
            return count
    r = rec[count]
    r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7] = size, size_in, ov, ov_in, prev_size, first, final, prev_final
    mult[count] = m
    return count + 1


@njit(cache=True, group=COST)
def _uniform_runs(role, n, tile, extent, d, rec, mult):
    """`_runs` for g, n, k, c in O(1): every tile is full but the last, and distinct tiles never overlap, so a
    few segments of equal records cover any number of tiles (a batch of 10^6 costs what a batch of 2 does)."""
    last = extent - (n - 1) * tile
    first_size = tile if n > 1 else extent
    is_c = d == 3
    count = 0
    if role == 0:      # outer: index unchanged, any j
        count = _push(rec, mult, count, first_size, first_size, first_size, first_size, first_size, 1,
                      1 if (not is_c or n == 1) else 0, 1 if (not is_c or n == 1) else 0, 1)
        count = _push(rec, mult, count, tile, tile, tile, tile, tile, 1 if not is_c else 0, 1 if not is_c else 0,
                      1 if not is_c else 0, n - 2)
        if n > 1:
            count = _push(rec, mult, count, last, last, last, last, last, 1 if not is_c else 0, 1, 1, 1)
    elif role == 1:    # advancing: j-1 -> j for j = 1 .. n-1
        count = _push(rec, mult, count, tile, tile, 0, 0, tile, 1 if not is_c else 0, 1 if not is_c else 0,
                      1 if not is_c else 0, n - 2)
        count = _push(rec, mult, count, last, last, 0, 0, tile, 1 if not is_c else 0, 1, 1 if not is_c else 0, 1)
    elif role == 2:    # inner: n-1 -> 0
        if n == 1:
            count = _push(rec, mult, count, first_size, first_size, first_size, first_size, first_size, 1, 1, 1, 1)
        else:
            count = _push(rec, mult, count, first_size, first_size, 0, 0, last, 1, 1 if not is_c else 0, 1, 1)
    else:              # the first step
        count = _push(rec, mult, count, first_size, first_size, 0, 0, 0, 1, 1 if (not is_c or n == 1) else 0,
                      1 if not is_c else 0, 1)
    return count


@njit(cache=True, group=COST)
def _transfer(bits, bandwidth, latency):
    if bits <= 0:
        return 0.0
    return math.ceil(bits / bandwidth) + latency


@njit(cache=True, group=COST)
def _onload(db_bits, serial_bits, window, bandwidth, latency):
    """Start-up (or wind-down) of a staging pass: serialised transfers in full; a double-buffered transfer
    streams under its own tile's compute, costing the latency plus whatever the window cannot hide."""
    out = _transfer(serial_bits, bandwidth, latency)
    if db_bits > 0:
        out += latency + max(0.0, math.ceil(db_bits / bandwidth) - window)
    return out


@njit(cache=True, group=COST)
def _ceil_div(a, b):
    return (a + b - 1) // b


@njit(cache=True, group=COST)
def _evaluate(extents, r, s, h, w, sh, sw, pt, pl, tiles, orders, bits, staged, dbuf, word, burst, bandwidth,
              latency, compute_cycles, out):
    total_macs = 1.0
    for d in range(6):
        total_macs *= extents[d]
    total_macs *= r * s
    # Tile tables only for p and q (halos, padding); g, n, k, c are uniform (_uniform_runs).
    maxn = max(3, extents[4], extents[5])
    out_size = np.zeros((6, maxn), np.int64)
    lo = np.zeros((6, maxn), np.int64)
    hi = np.zeros((6, maxn), np.int64)
    ntile = np.zeros(6, np.int64)
    first_size = np.zeros(6, np.int64)
    last_size = np.zeros(6, np.int64)
    rec = np.zeros((6, maxn, 8), np.int64)
    mult = np.zeros((6, maxn), np.int64)
    nrun = np.zeros(6, np.int64)
    pos = np.zeros(6, np.int64)
    wb, ib, ob, ab = bits[0], bits[1], bits[2], bits[3]
    for ci in range(tiles.shape[0]):
        for d in range(6):
            tile = tiles[ci, d]
            n = (extents[d] + tile - 1) // tile
            if d >= 4:
                stride = sh if d == 4 else sw
                kern = r if d == 4 else s
                pad = pt if d == 4 else pl
                lim = h if d == 4 else w
                _table(extents[d], tile, stride, kern, pad, lim, out_size[d], lo[d], hi[d])
            ntile[d] = n
            first_size[d] = min(tile, extents[d])
            last_size[d] = extents[d] - (n - 1) * tile
        for li in range(6):
            pos[orders[ci, li]] = li
        # Each output tile visited once when no output-relevant loop with > 1 tile is inside the c loop.
        single = 1
        for li in range(pos[3] + 1, 6):
            d = orders[ci, li]
            if d != 3 and ntile[d] > 1:
                single = 0
        foot_w = first_size[0] * first_size[2] * first_size[3] * r * s
        max_in_p = 0
        for j in range(ntile[4]):
            max_in_p = max(max_in_p, hi[4, j] - lo[4, j])
        max_in_q = 0
        for j in range(ntile[5]):
            max_in_q = max(max_in_q, hi[5, j] - lo[5, j])
        foot_i = first_size[0] * first_size[1] * first_size[3] * max_in_p * max_in_q
        foot_o = first_size[0] * first_size[1] * first_size[2] * first_size[4] * first_size[5]
        res = out[ci]
        res[:] = 0.0
        res[12], res[13], res[14], res[15] = foot_w, foot_i, foot_o, single
        steps = 1.0
        for d in range(6):
            steps *= ntile[d]
        res[16] = steps
        # Transition kinds: -1 = the first step; li = the loop at position li advances.
        for li in range(-1, 6):
            if li >= 0 and ntile[orders[ci, li]] < 2:
                continue
            for d in range(6):
                if li < 0:
                    role = 3
                elif pos[d] < li:
                    role = 0
                elif pos[d] == li:
                    role = 1
                else:
                    role = 2
                if d < 4:
                    nrun[d] = _uniform_runs(role, ntile[d], tiles[ci, d], extents[d], d, rec[d], mult[d])
                else:
                    nrun[d] = _runs(role, ntile[d], out_size[d], lo[d], hi[d], rec[d], mult[d])
            idx = np.zeros(6, np.int64)
            while True:
                m = 1.0
                for d in range(6):
                    m *= mult[d, idx[d]]
                rg, rn, rk, rc, rp, rq = (rec[0, idx[0]], rec[1, idx[1]], rec[2, idx[2]], rec[3, idx[3]],
                                          rec[4, idx[4]], rec[5, idx[5]])
                new_w = (rg[0] * rk[0] * rc[0] - rg[2] * rk[2] * rc[2]) * r * s
                new_i = rg[0] * rn[0] * rc[0] * rp[1] * rq[1] - rg[2] * rn[2] * rc[2] * rp[3] * rq[3]
                ov_o = rg[2] * rn[2] * rk[2] * rp[2] * rq[2]
                new_o = rg[0] * rn[0] * rk[0] * rp[0] * rq[0] - ov_o
                exit_o = (rg[4] * rn[4] * rk[4] * rp[4] * rq[4] - ov_o) if li >= 0 else 0
                first = 1 if single == 1 else rc[5]
                prev_final = 1 if single == 1 else rc[7]
                fill_w = new_w * wb if staged[0] else 0
                fill_i = new_i * ib if staged[1] else 0
                read_o = new_o * ab if (staged[2] and first == 0) else 0
                drain_o = exit_o * (ob if prev_final == 1 else ab) if staged[2] else 0
                # DRAM moves whole bursts; the buffer whole words.
                dw = _ceil_div(fill_w, burst) * burst
                di = _ceil_div(fill_i, burst) * burst
                dro = _ceil_div(read_o, burst) * burst
                dwo = _ceil_div(drain_o, burst) * burst
                res[3] += m * dw
                res[4] += m * di
                res[5] += m * dro
                res[6] += m * dwo
                res[7] += m * _ceil_div(fill_w, word[0])
                res[8] += m * _ceil_div(fill_i, word[1])
                res[9] += m * _ceil_div(read_o, word[3])
                if prev_final == 1:
                    res[10] += m * _ceil_div(drain_o, word[2])
                else:
                    res[11] += m * _ceil_div(drain_o, word[3])
                db_bits = 0.0
                serial_bits = 0.0
                for t, moved in ((0, dw), (1, di), (2, dro + dwo)):
                    if dbuf[t]:
                        db_bits += moved
                    else:
                        serial_bits += moved
                tile_macs = rg[0] * rn[0] * rk[0] * rc[0] * rp[0] * rq[0] * r * s
                window = compute_cycles * tile_macs / total_macs
                if li < 0:
                    res[0] += _onload(db_bits, serial_bits, window, bandwidth, latency)
                else:
                    res[2] += m * (max(0.0, _transfer(db_bits, bandwidth, latency) - window)
                                   + _transfer(serial_bits, bandwidth, latency))
                # Odometer over the run lists.
                d = 5
                while d >= 0:
                    idx[d] += 1
                    if idx[d] < nrun[d]:
                        break
                    idx[d] = 0
                    d -= 1
                if d < 0:
                    break
        if staged[2]:
            last = last_size[0] * last_size[1] * last_size[2] * last_size[4] * last_size[5]
            last_window = compute_cycles * last * last_size[3] * r * s / total_macs
            moved = _ceil_div(last * ob, burst) * burst
            res[1] = (_onload(moved, 0, last_window, bandwidth, latency) if dbuf[2]
                      else _transfer(moved, bandwidth, latency))
            res[6] += _ceil_div(last * ob, burst) * burst
            res[10] += _ceil_div(last * ob, word[2])


# The cost model's kernels run as Python (their results kept on disk) until this process has spent
# PYTHON_BUDGET_S in them, unless numba's cache already holds `_evaluate`: compiling it takes ~8 s here, far
# more than the nest searches of a small network take as Python (LeNet: 0.3 s), so a first run does not wait
# for it; a big network's searches pass the budget and compile it then, once.
PYTHON_BUDGET_S = 1.0
_python_spent_s = 0.0


def kernel_cached() -> bool:
    """Whether numba's on-disk cache holds `_evaluate` (any surprise in numba's internals counts as cached; in
    Python mode there is nothing to compile)."""
    if jit.mode() == jit.PYTHON:
        return True
    try:
        return os.path.exists(_evaluate.cache_index_path())
    except Exception:
        return True


def _cost_mode() -> str:
    """The cost model's kernel mode for the next search, chosen at the first one (see PYTHON_BUDGET_S)."""
    if COST not in jit._group_modes:
        jit.set_group_mode(COST, jit.NUMBA if jit.mode() == jit.NUMBA and kernel_cached() else jit.PYTHON)
    elif jit.group_mode(COST) == jit.PYTHON and jit.mode() == jit.NUMBA and _python_spent_s > PYTHON_BUDGET_S:
        jit.set_group_mode(COST, jit.NUMBA)
    return jit.group_mode(COST)


def warm_up() -> None:
    """Load the kernel from numba's cache outside any timed region, if this process will use it."""
    if _cost_mode() == jit.NUMBA:
        geom = Geometry((1,) * 6, 1, 1, 1, 1, 1, 1, 0, 0)
        link = Link(8, 8, 8, 32, (True,) * 3, (True,) * 3, (8,) * 4, 8, 8.0, 0, 1.0)
        evaluate_nests(geom, link, np.ones((1, 6), np.int64), np.arange(6)[None, :])


def evaluate_nests(geom: Geometry, link: Link, tiles: np.ndarray, orders: np.ndarray) -> np.ndarray:
    """One result row (RESULT_FIELDS) per candidate nest: tiles [n, 6] sizes, orders [n, 6] dims outermost first."""
    global _python_spent_s
    tiles, orders = np.ascontiguousarray(tiles, np.int64), np.ascontiguousarray(orders, np.int64)
    if _cost_mode() == jit.PYTHON:   # ~1 ms a nest as Python: the results of earlier runs are kept on disk
        start = time.perf_counter()
        out = _disk_cached(geom, link, tiles, orders)
        _python_spent_s += time.perf_counter() - start
        return out
    return _evaluate_nests(geom, link, tiles, orders)


def _evaluate_nests(geom: Geometry, link: Link, tiles: np.ndarray, orders: np.ndarray) -> np.ndarray:
    out = np.zeros((len(tiles), len(RESULT_FIELDS)))
    bits = np.array([link.w_bits, link.i_bits, link.o_bits, link.acc_bits], np.int64)
    _evaluate(np.array(geom.extents, np.int64), geom.r, geom.s, geom.h, geom.w, geom.sh, geom.sw, geom.pt,
              geom.pl, tiles, orders, bits, np.array(link.staged, np.bool_), np.array(link.double_buffered, np.bool_),
              np.array(link.buffer_word_bits, np.int64), int(link.burst_bits), float(link.bandwidth_bits),
              float(link.latency), float(link.compute_cycles), out)
    return out


def cache_dir() -> str:
    """Where Python mode keeps evaluated nests: HWSIM_CACHE_DIR, else the user's cache directory."""
    root = os.environ.get("HWSIM_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "hwsim")
    return os.path.join(root, "nests")


def _disk_cached(geom: Geometry, link: Link, tiles: np.ndarray, orders: np.ndarray) -> np.ndarray:
    """evaluate_nests through a cache of .npy files named by a hash of the inputs and of this file's source (an
    edit invalidates it). A file that is missing, unreadable or of the wrong shape is computed again; a cache
    that cannot be written is skipped. Files are written whole (temporary file, then rename)."""
    import hashlib

    digest = hashlib.sha256(_source_digest())
    digest.update(repr((geom, link, tiles.shape, orders.shape, RESULT_FIELDS)).encode())
    digest.update(tiles.tobytes())
    digest.update(orders.tobytes())
    path = os.path.join(cache_dir(), digest.hexdigest() + ".npy")
    try:
        cached = np.load(path, allow_pickle=False)
        if cached.shape == (len(tiles), len(RESULT_FIELDS)) and cached.dtype == np.float64:
            return cached
    except (OSError, ValueError, EOFError):
        pass
    out = _evaluate_nests(geom, link, tiles, orders)
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        temp = f"{path}.{os.getpid()}.tmp"
        with open(temp, "wb") as f:
            np.save(f, out, allow_pickle=False)
        os.replace(temp, path)
    except OSError:
        pass
    return out


_SOURCE_DIGEST = None


def _source_digest() -> bytes:
    global _SOURCE_DIGEST
    if _SOURCE_DIGEST is None:
        import hashlib
        with open(__file__, "rb") as f:
            _SOURCE_DIGEST = hashlib.sha256(f.read()).digest()
    return _SOURCE_DIGEST


# ----------------------------------------------------------------------------------------------------------
# Reference: walk every step of the nest.


def walk_nest(geom: Geometry, link: Link, tile: tuple, order: tuple) -> dict:
    """The same quantities as `evaluate_nests`, by visiting every step of the nest in order (small layers only)."""
    tables = [tile_table(geom, d, tile[d]) for d in range(6)]
    counts = [len(t[0]) for t in tables]
    rs = geom.r * geom.s
    total_macs = math.prod(geom.extents) * rs
    wb, ib, ob, ab = link.w_bits, link.i_bits, link.o_bits, link.acc_bits

    def box(tensor, index):
        spans = []
        for d in TENSOR_DIMS[tensor]:
            size, lo, hi = tables[d]
            j = index[d]
            if tensor == "inputs" and d in (P, Q):
                spans.append((int(lo[j]), int(hi[j])))
            else:
                start = j * tile[d]
                spans.append((start, start + int(size[j])))
        return tuple(spans)

    def volume(spans):
        return math.prod(max(0, b - a) for a, b in spans)

    def common(x, y):
        return volume([(max(a, c), min(b, d)) for (a, b), (c, d) in zip(x, y)])

    steps = [tuple(sorted(zip(order, combo)))
             for combo in itertools.product(*(range(counts[d]) for d in order))]
    steps = [tuple(v for _, v in step) for step in steps]
    # Output visits: consecutive steps holding the same output tile; a visit is a tile's first / last one.
    out_boxes = [box("outputs", st) for st in steps]
    visits = []
    for i, b in enumerate(out_boxes):
        if i == 0 or b != out_boxes[i - 1]:
            visits.append((i, b))
    first_visit, last_visit = {}, {}
    for i, b in visits:
        first_visit.setdefault(b, i)
        last_visit[b] = i

    res = dict.fromkeys(RESULT_FIELDS, 0.0)

    def bursts(bits_):
        return -(-bits_ // link.burst_bits) * link.burst_bits

    def words(bits_, t):          # t: 0 weights, 1 inputs, 2 outputs, 3 partial sums
        return -(-bits_ // link.buffer_word_bits[t])

    def transfer(bits_):
        return 0 if bits_ <= 0 else math.ceil(bits_ / link.bandwidth_bits) + link.latency

    def streamed(db_bits, serial_bits, window):
        extra = link.latency + max(0.0, math.ceil(db_bits / link.bandwidth_bits) - window) if db_bits > 0 else 0
        return transfer(serial_bits) + extra

    prev = None
    visit_start = None
    for i, st in enumerate(steps):
        cur = {t: box(t, st) for t in TENSOR_DIMS}
        new = {t: volume(cur[t]) - (common(cur[t], prev[t]) if prev else 0) for t in TENSOR_DIMS}
        new["weights"] *= rs
        if prev is None or cur["outputs"] != prev["outputs"]:
            exit_o = 0 if prev is None else volume(prev["outputs"]) - common(cur["outputs"], prev["outputs"])
            exit_final = prev is not None and last_visit[prev["outputs"]] == visit_start
            visit_start = i
            first = first_visit[cur["outputs"]] == i
        else:
            exit_o, exit_final, first = 0, True, True
        fill = [new["weights"] * wb if link.staged[0] else 0, new["inputs"] * ib if link.staged[1] else 0]
        read_o = new["outputs"] * ab if (link.staged[2] and not first) else 0
        drain_o = exit_o * (ob if exit_final else ab) if link.staged[2] else 0
        dram = [bursts(fill[0]), bursts(fill[1]), bursts(read_o) + bursts(drain_o)]
        res["dram_w"] += dram[0]
        res["dram_i"] += dram[1]
        res["dram_o_read"] += bursts(read_o)
        res["dram_o_write"] += bursts(drain_o)
        res["buf_fill_w"] += words(fill[0], 0)
        res["buf_fill_i"] += words(fill[1], 1)
        res["buf_fill_psum"] += words(read_o, 3)
        if exit_final:
            res["buf_drain_o"] += words(drain_o, 2)
        else:
            res["buf_drain_psum"] += words(drain_o, 3)
        db = sum(x for t, x in enumerate(dram) if link.double_buffered[t])
        serial = sum(x for t, x in enumerate(dram) if not link.double_buffered[t])
        tile_macs = math.prod(int(tables[d][0][st[d]]) for d in range(6)) * rs
        window = link.compute_cycles * tile_macs / total_macs
        if prev is None:
            res["onload"] += streamed(db, serial, window)
        else:
            res["stall"] += max(0.0, transfer(db) - window) + transfer(serial)
        prev = cur
    if link.staged[2]:
        last_bits = volume(prev["outputs"]) * ob
        window = link.compute_cycles * math.prod(int(tables[d][0][steps[-1][d]]) for d in range(6)) * rs / total_macs
        res["offload"] = (streamed(bursts(last_bits), 0, window) if link.double_buffered[2]
                          else transfer(bursts(last_bits)))
        res["dram_o_write"] += bursts(last_bits)
        res["buf_drain_o"] += words(last_bits, 2)
    res["steps"] = len(steps)
    return res
