"""Implicit im2col: convolution geometry and one register-tiled micro-kernel shared by the MAC and XNOR paths.

No im2col matrix is ever built. The input is laid out once as a padded channels-last "canvas"
[N, Hp, Wpa, G, Ce] (G groups, Ce elements per group and pixel), and a small *offset table* lists, for
every reduction step r (kernel row, kernel column, channel element), how far its operand lies from the
top-left pixel of the window. A tile of P = 4 neighbouring output pixels × (nvec · lanes) output channels
walks the offset table with its accumulators in SIMD registers (weights packed one vector per step):

    acc[p, c] += combine(broadcast(x[base + p·x_step + offs[r]]), w[r, c])     for r in [r0, r1)

and then stores straight into the NCHW output: out = init + scale·acc for the first chunk of the
reduction (r0 == 0), out += scale·acc for later ones. Two combine operations, chosen by the canvas dtype:
- int16 canvas ("madd"): x holds channel *pairs*; combine = x0·w0 + x1·w1 in int32 lanes. LLVM turns
  this generic pattern into vpmaddwd (AVX2) or vpdpwssd (AVX-512 VNNI). int32 lanes are exact modulo 2^32,
  so the caller chooses `chunk` (reduction steps per call) such that every chunk's sum fits in int32; the
  chunks are summed in the int64 output.
- uint64 canvas ("xorpop"): x holds 64 packed channel bits; combine = popcount(x XOR w) in int64 lanes
  (one generic `llvm.ctpop` on a vector: vpopcntq where the CPU has it). On AVX2, which has no vector
  popcount, per byte instead: vpshufb's nibble table for at most 31 words a call, summed into the int64
  lanes (vpsadbw) when the tile is stored.

The IR is generic LLVM vector code, so it is correct on any target; only the speed depends on the CPU.
The micro-kernel is an `intrinsic`, which numba's cache does not track: after editing the IR code here,
clear the `__pycache__` of this package (numba only re-checks the source file of the jitted function).
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from ..jit import cpu_features, njit, prange
from .threads import launcher, split

TILE_P = 4  # output pixels per tile
SEGMENT = 16 * TILE_P  # output pixels of one row per parallel task (a multiple of TILE_P)
BLOCKS_PER_TASK = 8    # channel blocks (vectors of output channels) per parallel task: small images split too


def _vector_bits() -> int:
    """Width of the SIMD registers numba compiles for (it honours NUMBA_CPU_FEATURES, so do we)."""
    feats = cpu_features()
    if "+avx512bw" in feats:
        return 512
    if "+avx2" in feats:
        return 256
    return 128


VECTOR_BITS = _vector_bits()
# channel vectors per tile: on AVX2 (16 registers) 4 pixels × 2 vectors = 8 accumulators (measured as fast as 16);
# AVX-512's 32 registers hold 4 × 4 = 16 (fewer loads per product: 7-10% on a 3x3 64 -> 64 conv with VNNI), but
# that kernel takes ~4 s to compile: only calls of at least WIDE_TILE_MACS products use it, so a small model's
# first run never compiles it
MAX_NVEC = 4 if VECTOR_BITS == 512 else 2
WIDE_TILE_MACS = 1 << 25
LANES = {np.dtype(np.int16): VECTOR_BITS // 32, np.dtype(np.uint64): VECTOR_BITS // 64,
         np.dtype(np.uint8): VECTOR_BITS // 32, np.dtype(np.int8): VECTOR_BITS // 32}
ELEMS_PER_LANE = {np.dtype(np.int16): 2, np.dtype(np.uint64): 1, np.dtype(np.uint8): 4, np.dtype(np.int8): 4}


def _has_pmaddubsw() -> bool:
    feats = cpu_features()
    return (VECTOR_BITS == 256 and "+avx2" in feats) or (VECTOR_BITS == 512 and "+avx512bw" in feats)


def _has_vnni() -> bool:
    feats = cpu_features()
    return VECTOR_BITS == 512 and "+avx512vnni" in feats


VNNI = _has_vnni()   # vpdpbusd: 64 u8 x s8 products per instruction
PMADDUBSW = _has_pmaddubsw()   # vpmaddubsw: x86's pair-saturating u8 x s8 products (the _Maddubs8 op)
XORPOP_BYTES = PMADDUBSW and VECTOR_BITS == 256   # AVX2: popcounts per byte (microkernel._XorPopBytes)


def dw_lanes(dtype) -> int:
    """Channels a vector of the depthwise 3x3 sums (microkernel.dw3x3_sums) in float `dtype`."""
    return VECTOR_BITS // (8 * np.dtype(dtype).itemsize)


# ----------------------------------------------------------------------------------------------------------
# Geometry
# ----------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ConvGeometry:
    n: int
    ci: int
    h: int
    w: int
    co: int
    kh: int
    kw: int
    sh: int
    sw: int
    top: int
    left: int
    bottom: int
    right: int
    groups: int
    ho: int
    wo: int

    @property
    def cig(self) -> int:
        return self.ci // self.groups

    @property
    def cog(self) -> int:
        return self.co // self.groups

    @property
    def has_padding(self) -> bool:
        return (self.top, self.left, self.bottom, self.right) != (0, 0, 0, 0)

    @property
    def macs(self) -> int:
        """Products of the whole call: every output times its window."""
        return self.n * self.co * self.ho * self.wo * self.cig * self.kh * self.kw


def conv_geometry(x_shape, w_shape, stride, padding, groups) -> ConvGeometry:
    """Check a conv's shapes and arguments; raise ValueError with the reason."""
    if len(x_shape) != 4 or len(w_shape) != 4:
        raise ValueError(f"conv: x must be [N, Ci, H, W] and w [Co, Ci/groups, KH, KW], got {x_shape}, {w_shape}")
    n, ci, h, w = (int(v) for v in x_shape)
    co, cig, kh, kw = (int(v) for v in w_shape)
    sh, sw = (int(v) for v in stride)
    top, left, bottom, right = (int(v) for v in padding)
    groups = int(groups)
    if groups < 1 or ci % groups or co % groups:
        raise ValueError(f"conv: groups={groups} must divide Ci={ci} and Co={co}")
    if cig != ci // groups or cig < 1:
        raise ValueError(f"conv: weight has {cig} input channels per group, expected Ci/groups = {ci // groups}")
    if sh < 1 or sw < 1 or min(top, left, bottom, right) < 0 or kh < 1 or kw < 1:
        raise ValueError(f"conv: bad stride {stride}, padding {padding} or kernel {kh}x{kw}")
    ho = (h + top + bottom - kh) // sh + 1
    wo = (w + left + right - kw) // sw + 1
    if ho < 1 or wo < 1:
        raise ValueError(f"conv: kernel {kh}x{kw} does not fit the padded {h}x{w} input")
    return ConvGeometry(n, ci, h, w, co, kh, kw, sh, sw, top, left, bottom, right, groups, ho, wo)


def tap_outputs(k: int, pad: int, stride: int, n_out: int, size: int) -> tuple[int, int]:
    """(first, end): the outputs o < n_out whose tap k reads an input position o·stride + k - pad in [0, size)
    (a range: the positions grow with o); first == end when none does."""
    first = max(0, -(-(pad - k) // stride))
    return first, max(first, min(n_out, (size - 1 + pad - k) // stride + 1))


def canvas_shape(g: ConvGeometry, ce: int) -> tuple[int, int, int, int, int]:
    """[N, Hp, Wpa, G, Ce]; Wpa is wide enough for the last, partly unused, tile of each output row."""
    wo_tiles = -(-g.wo // TILE_P) * TILE_P
    wpa = max(g.w + g.left + g.right, (wo_tiles - 1) * g.sw + g.kw)
    return g.n, g.h + g.top + g.bottom, wpa, g.groups, ce


def make_canvas(x_cl, g: ConvGeometry, ce: int, dtype, pad_pixel) -> np.ndarray:
    """Canvas [N, Hp, Wpa, G, ce] of `dtype`: x_cl [N, H, W, G, C≤ce] (any view, converted on the way in)
    in the image area with zeros in its spare channel elements, `pad_pixel` [G, ce] everywhere else."""
    canvas = np.empty(canvas_shape(g, ce), dtype)
    if g.has_padding or canvas.shape[2] > g.w:
        canvas[...] = pad_pixel
    split(_copy_into, g.n * g.h, x_cl, canvas, g.top, g.left, work=canvas.size)
    return canvas


@njit(nogil=True, cache=True)
def _copy_into(t0, t1, x_cl, canvas, top, left):
    """canvas[:, top + i, left + j, :, :C] = x_cl[:, i, j] and zeros in the spare channels (a transposing copy)."""
    n, h, w, groups, c = x_cl.shape
    ce = canvas.shape[4]
    for t in range(t0, t1):
        ni, i = t // h, t % h
        for j in range(w):
            for gi in range(groups):
                dst = canvas[ni, top + i, left + j, gi]
                for k in range(c):
                    dst[k] = x_cl[ni, i, j, gi, k]
                for k in range(c, ce):
                    dst[k] = 0


def offset_table(g: ConvGeometry, canvas: np.ndarray) -> np.ndarray:
    """Offset (in canvas elements) of reduction step r = (kh, kw, channel lane) from the window's corner."""
    _, _, wpa, groups, ce = canvas.shape
    return _offsets(g.kh, g.kw, wpa, groups * ce, ce, ELEMS_PER_LANE[canvas.dtype])


@lru_cache(maxsize=64)
def _offsets(kh: int, kw: int, wpa: int, pix: int, ce: int, e: int) -> np.ndarray:
    khs, kws, cs = np.meshgrid(np.arange(kh), np.arange(kw), np.arange(0, ce, e), indexing="ij")
    offs = ((khs * wpa + kws) * pix + cs).ravel().astype(np.int64)
    offs.flags.writeable = False  # shared between calls
    return offs


def pack_weights(wg, ce: int, dtype, nvec: int) -> np.ndarray:
    """wg [G, Cog, KH, KW, C≤ce] (any view) -> flat [G, ncb, KH, KW, R, nvec·lanes, e] of `dtype` (R = ce / e
    reduction steps per kernel position), one contiguous vector per (reduction step, vector): element
    [g, cb, kh, kw, c // e, co % (nvec·lanes), c % e] is wg[g, cb·nvec·lanes + co, kh, kw, c]; spare channels
    and output lanes get zero weights. In numpy: once per layer, a padded copy and one transposing copy."""
    groups, cog, kh, kw, c_n = wg.shape
    lanes, e = LANES[np.dtype(dtype)], ELEMS_PER_LANE[np.dtype(dtype)]
    assert ce % e == 0 and c_n <= ce
    width = nvec * lanes
    ncb = -(-cog // width)
    wdtype = np.int8 if np.dtype(dtype) == np.uint8 else dtype   # u8 activations meet s8 weights (also int8)
    padded = np.zeros((groups, ncb * width, kh, kw, ce), wdtype)
    padded[:, :cog, :, :, :c_n] = wg
    return np.ascontiguousarray(padded.reshape(groups, ncb, width, kh, kw, ce // e, e)
                                .transpose(0, 1, 3, 4, 5, 2, 6)).reshape(-1)


_PACKED: OrderedDict = OrderedDict()  # (address, shape, strides, dtype, params) -> (w's bytes, packed)
_PACKED_MAX = 64  # layers remembered (each costs its weights twice: the bytes and the packed copy)
_PACKED_LOCK = threading.Lock()


def _frozen_root(w: np.ndarray):
    """The array owning w's memory if w and every array between them are read-only, else None."""
    a = w
    while isinstance(a, np.ndarray):
        if a.flags.writeable:
            return None
        if a.base is None:
            return a if a.flags.owndata else None
        a = a.base
    return None


def memo_pack(w: np.ndarray, params: tuple, build):
    """build() for weights w, remembered: a layer run batch after batch packs its weights once. An entry is
    reused only while the memory still holds the same values (compared with a stored copy, far cheaper than
    packing), so a caller that edits or frees its array is never served stale weights. `params` must name
    everything else build() depends on."""
    key = (w.ctypes.data, w.shape, w.strides, w.dtype.str, params)
    # A read-only array that owns its memory (the engine freezes its decoded weights) cannot change under us;
    # the entry keeps a reference to it, so its address cannot be reused while cached: no copy to compare.
    root = _frozen_root(w)
    frozen = root is not None
    values = root if frozen else w.tobytes()
    with _PACKED_LOCK:
        hit = _PACKED.get(key)
        if hit is not None:
            _PACKED.move_to_end(key)
    if hit is not None and (hit[0] is values if frozen else
                            (not isinstance(hit[0], np.ndarray) and hit[0] == values)):
        return hit[1]
    packed = build()
    with _PACKED_LOCK:
        _PACKED[key] = (values, packed)
        while len(_PACKED) > _PACKED_MAX:
            _PACKED.popitem(last=False)
    return packed


def choose_nvec(cog: int, dtype, macs: int = 0) -> int:
    """Fewest vectors that cover a group's output channels, at most MAX_NVEC (2 for a call of fewer than
    WIDE_TILE_MACS products: `macs`)."""
    lanes = LANES[np.dtype(dtype)]
    cap = MAX_NVEC if macs >= WIDE_TILE_MACS else min(2, MAX_NVEC)
    nvec = 1
    while nvec < cap and nvec * lanes < cog:
        nvec *= 2
    return nvec


@dataclass(frozen=True)
class TilePlan:
    """Everything `_run_tiles` needs besides the canvas and weights, for one geometry and init: built once per
    layer and input shape by callers that run a layer batch after batch (`tile_plan`)."""
    offs: np.ndarray
    geom: tuple
    table: np.ndarray
    row_class: np.ndarray
    col_class: np.ndarray
    mid_class: int
    odd_cols: np.ndarray
    out_shape: tuple


def tile_plan(g: ConvGeometry, canvas_shape_, dtype, init, row_class=None, col_class=None, offs=None) -> TilePlan:
    _, hp, wpa, groups, ce = canvas_shape_
    lanes, e = LANES[np.dtype(dtype)], ELEMS_PER_LANE[np.dtype(dtype)]
    init = np.asarray(init, np.int64)
    if init.ndim == 1:
        init = init[:, None, None]
        row_class, col_class = np.zeros(g.ho, np.int64), np.zeros(g.wo, np.int64)
    table = np.ascontiguousarray(init.transpose(1, 2, 0))  # [row class, column class, Co]: channels contiguous
    # the micro-kernel stores with the class of the middle column; columns of another class are adjusted after
    mid_class = int(col_class[g.wo // 2])
    odd_cols = np.flatnonzero(col_class != mid_class).astype(np.int64)
    offs = _offsets(g.kh, g.kw, wpa, groups * ce, ce, e) if offs is None else offs
    geom = (g.n, groups, g.ho, g.wo, g.sh, g.sw, hp, wpa, ce, g.cog, lanes, e)
    return TilePlan(offs, geom, table, np.asarray(row_class, np.int64), np.asarray(col_class, np.int64), mid_class,
                    odd_cols, (g.n, g.co, g.ho, g.wo))


def run_planned(canvas, wpk, tp: TilePlan, nvec: int, chunk: int, scale: int = 1, out_dtype=np.int64):
    out = np.empty(tp.out_shape, out_dtype)
    n, groups, ho, wo = tp.geom[:4]
    cog, lanes = tp.geom[9], tp.geom[10]
    chunks = -(-(-(-cog // (nvec * lanes))) // BLOCKS_PER_TASK)   # of channel blocks
    split(_RUN_TILES[nvec], n * groups * ho * -(-wo // SEGMENT) * chunks, canvas.reshape(-1), wpk, tp.offs, tp.geom,
          max(1, chunk), tp.table, tp.row_class, tp.col_class, tp.mid_class, tp.odd_cols, scale, out,
          work=out.size * tp.offs.shape[0] // 4)   # a reduction step of an output: a fraction of a vector op
    return out


def run_tiles(canvas, wpk, offs, g: ConvGeometry, nvec: int, chunk: int, init, scale: int,
              out_dtype=np.int64, row_class=None, col_class=None) -> np.ndarray:
    """out[n, co, oh, ow] = init[co, row_class[oh], col_class[ow]] + scale · Σ_r combine(...), `out_dtype`
    [N, Co, Ho, Wo]. `init` may also be just [Co] (no classes): a bias. Classes let a per-output offset that
    depends only on where the window meets the padding (binary zero padding) ride along for free."""
    return run_planned(canvas, wpk, tile_plan(g, canvas.shape, canvas.dtype, init, row_class, col_class, offs), nvec,
                       chunk, scale, out_dtype)


def _tiles_kernel(nvec: int):
    """The tile loop for `nvec` vectors of output channels: a compile-time constant of the micro-kernel, so one
    kernel per count (its own cache entry), compiled only when a layer first needs it."""
    def run_tiles(t0, t1, xf, wpk, offs, geom, chunk, table, row_class, col_class, mid_class, odd_cols, scale, out):
        _run_tiles_body(t0, t1, xf, wpk, offs, geom, nvec, chunk, table, row_class, col_class, mid_class, odd_cols,
                        scale, out)
    run_tiles.__qualname__ = run_tiles.__name__ = f"_run_tiles_nvec{nvec}"
    return njit(nogil=True, cache=True)(run_tiles)


@njit(inline="always")
def _run_tiles_body(t0, t1, xf, wpk, offs, geom, nvec, chunk, table, row_class, col_class, mid_class, odd_cols, scale,
                    out):
    n, groups, ho, wo, sh, sw, hp, wpa, ce, cog, lanes, e = geom
    co_n = out.shape[1]
    width = nvec * lanes
    ncb = (cog + width - 1) // width
    nseg = (wo + SEGMENT - 1) // SEGMENT
    chunks = (ncb + BLOCKS_PER_TASK - 1) // BLOCKS_PER_TASK
    nr = offs.shape[0]
    w_cb_stride = nr * width * e
    n_cls = table.shape[1]
    out_flat = out.reshape(-1)
    table_flat = table.reshape(-1)
    for t in range(t0, t1):
        # task = (image, group, output row, segment of the row, chunk of channel blocks)
        part = t % chunks
        seg = (t // chunks) % nseg
        oh = (t // (chunks * nseg)) % ho
        gi = (t // (chunks * nseg * ho)) % groups
        ni = t // (chunks * nseg * ho * groups)
        cb0, cb1 = part * BLOCKS_PER_TASK, min(ncb, (part + 1) * BLOCKS_PER_TASK)
        ow0 = seg * SEGMENT
        ow1 = min(ow0 + SEGMENT, wo)
        row_table = row_class[oh] * n_cls * co_n  # table[row class] as a flat offset
        for cb in range(cb0, cb1):
            co0 = gi * cog + cb * width
            nco = min(width, cog - cb * width)
            w_base = (gi * ncb + cb) * w_cb_stride
            for ow in range(ow0, ow1, TILE_P):
                x_base = ((ni * hp + oh * sh) * wpa + ow * sw) * groups * ce + gi * ce
                out_base = ((ni * co_n + co0) * ho + oh) * wo + ow
                init_base = row_table + mid_class * co_n + co0
                npix = min(TILE_P, wo - ow)
                for r0 in range(0, nr, chunk):
                    r1 = min(r0 + chunk, nr)
                    # nvec: a compile-time constant of the micro-kernel (a literal argument, see above)
                    _tile(xf, x_base, sw * groups * ce, offs, r0, r1, wpk, w_base,
                          out_flat, out_base, ho * wo, npix, nco, table_flat, init_base, scale, nvec)
        # columns whose class differs from the middle one's (only with classes): swap the offset
        for i in range(odd_cols.shape[0]):
            ow = odd_cols[i]
            if ow0 <= ow < ow1:
                for co in range(gi * cog + cb0 * width, gi * cog + min(cog, cb1 * width)):
                    delta = table_flat[row_table + col_class[ow] * co_n + co] - table_flat[row_table + mid_class * co_n + co]
                    out_flat[((ni * co_n + co) * ho + oh) * wo + ow] += delta


# one kernel per vector count (module names: each gets its launcher below; a count above MAX_NVEC is never run)
_run_tiles_nvec1, _run_tiles_nvec2, _run_tiles_nvec3, _run_tiles_nvec4 = (_tiles_kernel(n) for n in range(1, 5))
_RUN_TILES = {n: k for n, k in enumerate((_run_tiles_nvec1, _run_tiles_nvec2, _run_tiles_nvec3, _run_tiles_nvec4), 1)
              if n <= MAX_NVEC}


def run_sign_tiles(canvas, wpk, tp: TilePlan, nvec: int, above: np.ndarray) -> np.ndarray:
    """Bits straight from the XNOR popcount sums (uint64 canvas, the whole reduction in one micro-kernel call):
    uint8 [N, Ho, Wo, ceil(Co / 8)], bit c % 8 of byte c // 8 of a pixel = Σ popcount > above[row class,
    column class, c] (the classes of `tp`). `above` [row classes, column classes, Co + spare] int64 (≥ one
    tile's channels of spare values past Co: the last block reads them). Needs whole bytes of channels per
    tile: groups of a multiple of 8 channels (or one group), blocks of a multiple of 8 (or a single block)."""
    n, groups, ho, wo = tp.geom[:4]
    cog, lanes = tp.geom[9], tp.geom[10]
    width = nvec * lanes
    assert (groups == 1 or cog % 8 == 0) and (width % 8 == 0 or cog <= width) and above.shape[2] >= groups * cog + width
    out = np.empty((n, ho, wo, -(-(groups * cog) // 8)), np.uint8)
    chunks = -(-(-(-cog // width)) // BLOCKS_PER_TASK)
    split(_RUN_SIGN_TILES[nvec], n * groups * ho * -(-wo // SEGMENT) * chunks, canvas.reshape(-1), wpk, tp.offs,
          tp.geom, above, tp.row_class, tp.col_class, out, work=n * groups * cog * ho * wo * tp.offs.shape[0] // 4)
    return out


def _sign_tiles_kernel(nvec: int):
    """run_sign_tiles' tile loop for `nvec` vectors of output channels (as _tiles_kernel)."""
    def run_sign_tiles(t0, t1, xf, wpk, offs, geom, above, row_class, col_class, out):
        _run_sign_tiles_body(t0, t1, xf, wpk, offs, geom, nvec, above, row_class, col_class, out)
    run_sign_tiles.__qualname__ = run_sign_tiles.__name__ = f"_run_sign_tiles_nvec{nvec}"
    return njit(nogil=True, cache=True)(run_sign_tiles)


@njit(inline="always")
def _run_sign_tiles_body(t0, t1, xf, wpk, offs, geom, nvec, above, row_class, col_class, out):
    n, groups, ho, wo, sh, sw, hp, wpa, ce, cog, lanes, e = geom
    nb = out.shape[3]
    width = nvec * lanes
    ncb = (cog + width - 1) // width
    nseg = (wo + SEGMENT - 1) // SEGMENT
    chunks = (ncb + BLOCKS_PER_TASK - 1) // BLOCKS_PER_TASK
    nr = offs.shape[0]
    w_cb_stride = nr * width * e
    n_cls, row_len = above.shape[1], above.shape[2]
    out_flat = out.reshape(-1)
    above_flat = above.reshape(-1)
    for t in range(t0, t1):
        # task = (image, group, output row, segment of the row, chunk of channel blocks), as in _run_tiles_body
        part = t % chunks
        seg = (t // chunks) % nseg
        oh = (t // (chunks * nseg)) % ho
        gi = (t // (chunks * nseg * ho)) % groups
        ni = t // (chunks * nseg * ho * groups)
        ow1 = min((seg + 1) * SEGMENT, wo)
        row_base = row_class[oh] * n_cls
        for cb in range(part * BLOCKS_PER_TASK, min(ncb, (part + 1) * BLOCKS_PER_TASK)):
            co0 = gi * cog + cb * width
            nco = min(width, cog - cb * width)
            w_base = (gi * ncb + cb) * w_cb_stride
            for ow in range(seg * SEGMENT, ow1, TILE_P):
                x_base = ((ni * hp + oh * sh) * wpa + ow * sw) * groups * ce + gi * ce
                # each pixel's limits: its column's class (padding taps), the last real column's past wo
                bases = ((row_base + col_class[ow]) * row_len + co0,
                         (row_base + col_class[min(ow + 1, wo - 1)]) * row_len + co0,
                         (row_base + col_class[min(ow + 2, wo - 1)]) * row_len + co0,
                         (row_base + col_class[min(ow + 3, wo - 1)]) * row_len + co0)
                _tile_signs(xf, x_base, sw * groups * ce, offs, 0, nr, wpk, w_base, out_flat,
                            ((ni * ho + oh) * wo + ow) * nb + co0 // 8, nb, min(TILE_P, wo - ow), nco, above_flat,
                            bases, nvec)


# one kernel per vector count, as _RUN_TILES
_run_sign_tiles_nvec1, _run_sign_tiles_nvec2, _run_sign_tiles_nvec4 = (_sign_tiles_kernel(n) for n in (1, 2, 4))
_RUN_SIGN_TILES = {n: k for n, k in ((1, _run_sign_tiles_nvec1), (2, _run_sign_tiles_nvec2), (4, _run_sign_tiles_nvec4))
                   if n <= MAX_NVEC}


# ----------------------------------------------------------------------------------------------------------
# The micro-kernel in numpy, for Python mode (an intrinsic cannot run as Python): the same function
# ----------------------------------------------------------------------------------------------------------
def _tile_numpy(x, x_base, x_step, offs, r0, r1, w, w_base, out, out_base, out_stride, npix, nco,
                init, init_base, scale, nvec):
    """What `_tile` computes, bit for bit: int16 pairs summed in int32 lanes (wrapping mod 2^32, as the
    vector lanes do), popcounts in int64; the store truncates to the output's dtype."""
    lanes, e = LANES[x.dtype], ELEMS_PER_LANE[x.dtype]
    width = nvec * lanes
    npix, nco, nr = int(npix), int(nco), int(r1) - int(r0)
    offs = np.asarray(offs[r0:r1], np.int64)
    idx = x_base + np.arange(npix, dtype=np.int64)[:, None] * x_step + offs[None, :]  # [P, R]
    wv = w[w_base + r0 * width * e:w_base + r1 * width * e].reshape(nr, width, e)[:, :nco]  # [R, C, e]
    if x.dtype == np.int8:  # u8 bytes in an int8 canvas: pairs saturated to int16, then summed (wrapping)
        xv = np.stack([x.view(np.uint8)[idx + k] for k in range(e)], axis=-1).astype(np.int64)  # [P, R, 4]
        prod = xv[:, :, None, :] * wv.astype(np.int64)[None]                                    # [P, R, C, 4]
        pairs = np.clip(prod[..., 0::2] + prod[..., 1::2], -(1 << 15), (1 << 15) - 1)
        acc = pairs.sum(axis=(1, 3)).astype(np.int32).astype(np.int64)
    elif e in (2, 4):  # int16 pairs / u8 quads: x·w per step, summed in an int32 lane (wrapping)
        xv = np.stack([x[idx + k] for k in range(e)], axis=-1).astype(np.int64)  # [P, R, e]
        acc = np.einsum("pre,rce->pc", xv, wv.astype(np.int64)).astype(np.int32).astype(np.int64)
    else:  # 64 packed bits: popcount(x XOR w)
        acc = np.bitwise_count(x[idx][:, :, None] ^ wv[None, :, :, 0]).sum(axis=1, dtype=np.int64)
    rows = out_base + np.arange(nco, dtype=np.int64)[None, :] * out_stride + np.arange(npix)[:, None]  # [P, C]
    if r0 == 0:
        before = np.broadcast_to(np.asarray(init[init_base:init_base + nco], np.int64)[None, :], acc.shape)
    else:
        before = out[rows].astype(np.int64)
    out[rows] = (before + np.int64(scale) * acc).astype(out.dtype)


def _build_tile():
    from .microkernel import tile
    return tile


# the micro-kernel: the LLVM IR intrinsic in numba mode (built when numba is loaded), this twin in Python mode
_tile = njit(build=_build_tile)(_tile_numpy)


def _tile_signs_numpy(x, x_base, x_step, offs, r0, r1, w, w_base, out, out_base, pixel_stride, npix, nco,
                      above, above_bases, nvec):
    """What `_tile_signs` computes, bit for bit (microkernel.tile_signs)."""
    lanes = LANES[x.dtype]
    width = nvec * lanes
    npix, nco, nr = int(npix), int(nco), int(r1) - int(r0)
    offs = np.asarray(offs[r0:r1], np.int64)
    idx = x_base + np.arange(npix, dtype=np.int64)[:, None] * x_step + offs[None, :]   # [P, R]
    wv = w[w_base + r0 * width:w_base + r1 * width].reshape(nr, width)[:, :nco]         # [R, C]
    acc = np.bitwise_count(x[idx][:, :, None] ^ wv[None]).sum(axis=1, dtype=np.int64)  # [P, C]
    for p in range(npix):
        bits = np.zeros(-(-nco // 8) * 8, np.uint8)
        bits[:nco] = acc[p] > above[above_bases[p]:above_bases[p] + nco]
        start = out_base + p * pixel_stride
        out[start:start + bits.size // 8] = np.packbits(bits, bitorder="little")


def _build_tile_signs():
    from .microkernel import tile_signs
    return tile_signs


_tile_signs = njit(build=_build_tile_signs)(_tile_signs_numpy)


# ---------------------------------------------------------------------------------------------------------
# Parallel launchers (threads.launcher): each kernel's chunks on numba's threads; here, beside the kernels,
# because numba's cache keys a function on its own file
# ---------------------------------------------------------------------------------------------------------
@launcher(_copy_into)
@njit(parallel=True, nogil=True, cache=True)
def _copy_into_launch(n_tasks, chunks, x_cl, canvas, top, left):
    for c in prange(chunks):
        _copy_into(n_tasks * c // chunks, n_tasks * (c + 1) // chunks, x_cl, canvas, top, left)


@launcher(_run_tiles_nvec1)
@njit(parallel=True, nogil=True, cache=True)
def _run_tiles_nvec1_launch(n_tasks, chunks,
                            xf, wpk, offs, geom, chunk, table, row_class, col_class, mid_class, odd_cols, scale, out):
    for c in prange(chunks):
        _run_tiles_nvec1(n_tasks * c // chunks, n_tasks * (c + 1) // chunks,
                         xf, wpk, offs, geom, chunk, table, row_class, col_class, mid_class, odd_cols, scale, out)


@launcher(_run_tiles_nvec2)
@njit(parallel=True, nogil=True, cache=True)
def _run_tiles_nvec2_launch(n_tasks, chunks,
                            xf, wpk, offs, geom, chunk, table, row_class, col_class, mid_class, odd_cols, scale, out):
    for c in prange(chunks):
        _run_tiles_nvec2(n_tasks * c // chunks, n_tasks * (c + 1) // chunks,
                         xf, wpk, offs, geom, chunk, table, row_class, col_class, mid_class, odd_cols, scale, out)


@launcher(_run_tiles_nvec3)
@njit(parallel=True, nogil=True, cache=True)
def _run_tiles_nvec3_launch(n_tasks, chunks,
                            xf, wpk, offs, geom, chunk, table, row_class, col_class, mid_class, odd_cols, scale, out):
    for c in prange(chunks):
        _run_tiles_nvec3(n_tasks * c // chunks, n_tasks * (c + 1) // chunks,
                         xf, wpk, offs, geom, chunk, table, row_class, col_class, mid_class, odd_cols, scale, out)


@launcher(_run_tiles_nvec4)
@njit(parallel=True, nogil=True, cache=True)
def _run_tiles_nvec4_launch(n_tasks, chunks,
                            xf, wpk, offs, geom, chunk, table, row_class, col_class, mid_class, odd_cols, scale, out):
    for c in prange(chunks):
        _run_tiles_nvec4(n_tasks * c // chunks, n_tasks * (c + 1) // chunks,
                         xf, wpk, offs, geom, chunk, table, row_class, col_class, mid_class, odd_cols, scale, out)


@launcher(_run_sign_tiles_nvec1)
@njit(parallel=True, nogil=True, cache=True)
def _run_sign_tiles_nvec1_launch(n_tasks, chunks, xf, wpk, offs, geom, above, row_class, col_class, out):
    for c in prange(chunks):
        _run_sign_tiles_nvec1(n_tasks * c // chunks, n_tasks * (c + 1) // chunks,
                              xf, wpk, offs, geom, above, row_class, col_class, out)


@launcher(_run_sign_tiles_nvec2)
@njit(parallel=True, nogil=True, cache=True)
def _run_sign_tiles_nvec2_launch(n_tasks, chunks, xf, wpk, offs, geom, above, row_class, col_class, out):
    for c in prange(chunks):
        _run_sign_tiles_nvec2(n_tasks * c // chunks, n_tasks * (c + 1) // chunks,
                              xf, wpk, offs, geom, above, row_class, col_class, out)


@launcher(_run_sign_tiles_nvec4)
@njit(parallel=True, nogil=True, cache=True)
def _run_sign_tiles_nvec4_launch(n_tasks, chunks, xf, wpk, offs, geom, above, row_class, col_class, out):
    for c in prange(chunks):
        _run_sign_tiles_nvec4(n_tasks * c // chunks, n_tasks * (c + 1) // chunks,
                              xf, wpk, offs, geom, above, row_class, col_class, out)
