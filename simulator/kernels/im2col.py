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
  (one generic `llvm.ctpop` on a vector: vpopcntq where the CPU has it, a nibble-table expansion elsewhere).

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
from llvmlite import ir
from numba import njit, types
from numba.core import config
from numba.core.codegen import get_host_cpu_features
from numba.extending import intrinsic

from .threads import split

TILE_P = 4  # output pixels per tile
SEGMENT = 16 * TILE_P  # output pixels of one row per parallel task (a multiple of TILE_P)


def _vector_bits() -> int:
    """Width of the SIMD registers numba compiles for (it honours NUMBA_CPU_FEATURES, so do we)."""
    feats = config.CPU_FEATURES if config.CPU_FEATURES is not None else get_host_cpu_features()
    if "+avx512bw" in feats:
        return 512
    if "+avx2" in feats:
        return 256
    return 128


VECTOR_BITS = _vector_bits()
# NUMBA_DISABLE_JIT=1: every @njit function runs as the Python it is written in; the few that cannot (the
# intrinsic micro-kernel) or that would raise numpy's scalar overflow warnings have a numpy twin chosen instead.
JIT_DISABLED = bool(config.DISABLE_JIT)
MAX_NVEC = 2  # channel vectors per tile: 4 pixels × 2 vectors = 8 accumulators (measured as fast as 16)
LANES = {np.dtype(np.int16): VECTOR_BITS // 32, np.dtype(np.uint64): VECTOR_BITS // 64,
         np.dtype(np.uint8): VECTOR_BITS // 32, np.dtype(np.int8): VECTOR_BITS // 32}
ELEMS_PER_LANE = {np.dtype(np.int16): 2, np.dtype(np.uint64): 1, np.dtype(np.uint8): 4, np.dtype(np.int8): 4}


def _has_pmaddubsw() -> bool:
    feats = config.CPU_FEATURES if config.CPU_FEATURES is not None else get_host_cpu_features()
    return (VECTOR_BITS == 256 and "+avx2" in feats) or (VECTOR_BITS == 512 and "+avx512bw" in feats)


def _has_vnni() -> bool:
    feats = config.CPU_FEATURES if config.CPU_FEATURES is not None else get_host_cpu_features()
    return VECTOR_BITS == 512 and "+avx512vnni" in feats


VNNI = _has_vnni()   # vpdpbusd: 64 u8 x s8 products per instruction
PMADDUBSW = _has_pmaddubsw()   # vpmaddubsw: x86's pair-saturating u8 x s8 products (the _Maddubs8 op)


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
    """wg [G, Cog, KH, KW, C≤ce] (any view) -> flat [G, ncb, R, nvec, lanes, e] of `dtype`, one contiguous
    vector per (reduction step r, vector v); spare channels and output lanes get zero weights."""
    groups, cog, kh, kw, _ = wg.shape
    lanes, e = LANES[np.dtype(dtype)], ELEMS_PER_LANE[np.dtype(dtype)]
    ncb = -(-cog // (nvec * lanes))
    wdtype = np.int8 if np.dtype(dtype) == np.uint8 else dtype   # u8 activations meet s8 weights (also int8)
    out = np.zeros(groups * ncb * kh * kw * ce * nvec * lanes, wdtype)
    _pack_into(np.array(wg, order="C"), ce, nvec, lanes, e, out)   # a writable C copy: one specialization
    return out


@njit(cache=True)
def _pack_into(wg, ce, nvec, lanes, e, out):
    groups, cog, kh_n, kw_n, c_n = wg.shape
    width = nvec * lanes
    ncb = (cog + width - 1) // width
    rows = ce // e  # reduction steps per kernel position
    step = width * e  # distance between consecutive reduction steps
    for gi in range(groups):
        for co in range(cog):
            cb, lane_el = co // width, (co % width) * e
            block = (gi * ncb + cb) * kh_n * kw_n * rows * step + lane_el
            for kh in range(kh_n):
                for kw in range(kw_n):
                    base = block + (kh * kw_n + kw) * rows * step
                    for c in range(c_n):
                        out[base + (c // e) * step + (c % e)] = wg[gi, co, kh, kw, c]


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


def choose_nvec(cog: int, dtype) -> int:
    """Fewest vectors that cover a group's output channels, at most MAX_NVEC."""
    lanes = LANES[np.dtype(dtype)]
    nvec = 1
    while nvec < MAX_NVEC and nvec * lanes < cog:
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
    split(_RUN_TILES[nvec], n * groups * ho * -(-wo // SEGMENT), canvas.reshape(-1), wpk, tp.offs, tp.geom,
          max(1, chunk), tp.table, tp.row_class, tp.col_class, tp.mid_class, tp.odd_cols, scale, out,
          work=out.size * tp.offs.shape[0])
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
    nr = offs.shape[0]
    w_cb_stride = nr * width * e
    n_cls = table.shape[1]
    out_flat = out.reshape(-1)
    table_flat = table.reshape(-1)
    for t in range(t0, t1):
        # task = (image, group, output row, segment of the row), all channel blocks
        seg = t % nseg
        oh = (t // nseg) % ho
        gi = (t // (nseg * ho)) % groups
        ni = t // (nseg * ho * groups)
        ow0 = seg * SEGMENT
        ow1 = min(ow0 + SEGMENT, wo)
        row_table = row_class[oh] * n_cls * co_n  # table[row class] as a flat offset
        for cb in range(ncb):
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
                for co in range(gi * cog, (gi + 1) * cog):
                    delta = table_flat[row_table + col_class[ow] * co_n + co] - table_flat[row_table + mid_class * co_n + co]
                    out_flat[((ni * co_n + co) * ho + oh) * wo + ow] += delta


_RUN_TILES = {n: _tiles_kernel(n) for n in range(1, MAX_NVEC + 1)}


# ----------------------------------------------------------------------------------------------------------
# The micro-kernel, written as LLVM IR
# ----------------------------------------------------------------------------------------------------------
_I16, _I32, _I64 = ir.IntType(16), ir.IntType(32), ir.IntType(64)


def _mask(indices):
    indices = list(indices)
    return ir.Constant(ir.VectorType(_I32, len(indices)), indices)


def _concat(builder, vectors):
    """One vector holding `vectors` back to back (pairwise shuffles; the count must be a power of two)."""
    while len(vectors) > 1:
        n = vectors[0].type.count
        vectors = [builder.shuffle_vector(a, b, _mask(range(2 * n))) for a, b in zip(vectors[::2], vectors[1::2])]
    return vectors[0]


def _splat(builder, scalar, vtype):
    v = builder.insert_element(ir.Constant(vtype, None), scalar, ir.Constant(_I32, 0))
    return builder.shuffle_vector(v, ir.Constant(vtype, None), ir.Constant(ir.VectorType(_I32, vtype.count), [0] * vtype.count))


class _Madd16:
    """int16 channel pairs: acc_i32 += x0·w0 + x1·w1 (the form LLVM matches to vpmaddwd / vpdpwssd)."""

    def __init__(self, lanes):
        self.lanes = lanes
        self.acc_type = ir.VectorType(_I32, lanes)
        self.w_type = ir.VectorType(_I16, 2 * lanes)
        self.align = 2

    def load_x(self, builder, ptr):
        pair = builder.load(builder.bitcast(ptr, _I32.as_pointer()), align=2)
        return builder.bitcast(_splat(builder, pair, self.acc_type), self.w_type)

    def combine(self, builder, xb, wv):
        wide = ir.VectorType(_I32, 2 * self.lanes)
        prod = builder.mul(builder.sext(xb, wide), builder.sext(wv, wide))
        even = ir.Constant(ir.VectorType(_I32, self.lanes), list(range(0, 2 * self.lanes, 2)))
        odd = ir.Constant(ir.VectorType(_I32, self.lanes), list(range(1, 2 * self.lanes, 2)))
        return builder.add(builder.shuffle_vector(prod, prod, even), builder.shuffle_vector(prod, prod, odd))

    def widen(self, builder, acc):
        return builder.sext(acc, ir.VectorType(_I64, self.lanes))


class _Dpbusd8:
    """u8 activation quads times s8 weight quads: acc_i32 += x0·w0 + x1·w1 + x2·w2 + x3·w3 (AVX-512 VNNI
    vpdpbusd where the CPU has it: the non-saturating form, exact modulo 2^32 like the generic IR below)."""

    def __init__(self, lanes):
        self.lanes = lanes
        self.acc_type = ir.VectorType(_I32, lanes)
        self.w_type = ir.VectorType(ir.IntType(8), 4 * lanes)
        self.align = 1

    def load_x(self, builder, ptr):
        quad = builder.load(builder.bitcast(ptr, _I32.as_pointer()), align=1)
        return _splat(builder, quad, self.acc_type)      # kept as i32 lanes (the intrinsic's operand type)

    def accumulate(self, builder, acc, xb, wv):
        if VNNI and self.lanes == 16:
            name = "llvm.x86.avx512.vpdpbusd.512"
            mod = builder.module
            fn = mod.globals.get(name) or ir.Function(
                mod, ir.FunctionType(self.acc_type, [self.acc_type] * 3), name)
            return builder.call(fn, [acc, xb, builder.bitcast(wv, self.acc_type)])
        wide = ir.VectorType(_I32, 4 * self.lanes)
        xs = builder.zext(builder.bitcast(xb, self.w_type), wide)
        prod = builder.mul(xs, builder.sext(wv, wide))
        total = acc
        for k in range(4):
            pick = ir.Constant(ir.VectorType(_I32, self.lanes), list(range(k, 4 * self.lanes, 4)))
            total = builder.add(total, builder.shuffle_vector(prod, prod, pick))
        return total

    def widen(self, builder, acc):
        return builder.sext(acc, ir.VectorType(_I64, self.lanes))


class _Maddubs8(_Dpbusd8):
    """The pair-saturating u8 x s8 step of x86 without VNNI (vpmaddubsw, then vpmaddwd against 1s):
    acc_i32 += sat16(x0·w0 + x1·w1) + sat16(x2·w2 + x3·w3), x unsigned bytes (held in an int8 canvas, which is
    what selects this op), w signed. The x86 instructions where the CPU has them, else generic IR with
    llvm.sadd.sat (same result on any target). Same operands and lanes as _Dpbusd8; only the step differs."""

    def load_x(self, builder, ptr):
        return builder.bitcast(super().load_x(builder, ptr), self.w_type)   # byte lanes for vpmaddubsw

    def _call(self, builder, name, ret, args):
        mod = builder.module
        fn = mod.globals.get(name) or ir.Function(mod, ir.FunctionType(ret, [a.type for a in args]), name)
        return builder.call(fn, args)

    def accumulate(self, builder, acc, xb, wv):
        pairs_t = ir.VectorType(_I16, 2 * self.lanes)
        ones = ir.Constant(pairs_t, [1] * (2 * self.lanes))
        if PMADDUBSW and self.lanes in (8, 16):
            suffix = "avx2.pmadd.ub.sw" if self.lanes == 8 else "avx512.pmaddubs.w.512"
            pairs = self._call(builder, f"llvm.x86.{suffix}", pairs_t, [xb, wv])
            wide = "avx2.pmadd.wd" if self.lanes == 8 else "avx512.pmaddw.d.512"
            return builder.add(acc, self._call(builder, f"llvm.x86.{wide}", self.acc_type, [pairs, ones]))
        prod_t = ir.VectorType(_I16, 4 * self.lanes)
        prod = builder.mul(builder.zext(xb, prod_t), builder.sext(wv, prod_t))   # |x·w| <= 32,640: exact
        even = _mask(range(0, 4 * self.lanes, 2))
        odd = _mask(range(1, 4 * self.lanes, 2))
        pairs = self._call(builder, f"llvm.sadd.sat.v{2 * self.lanes}i16", pairs_t,
                           [builder.shuffle_vector(prod, prod, even), builder.shuffle_vector(prod, prod, odd)])
        wide = builder.sext(pairs, ir.VectorType(_I32, 2 * self.lanes))
        return builder.add(acc, builder.add(builder.shuffle_vector(wide, wide, _mask(range(0, 2 * self.lanes, 2))),
                                            builder.shuffle_vector(wide, wide, _mask(range(1, 2 * self.lanes, 2)))))


class _XorPop64:
    """64 packed bits: acc_i64 += popcount(x XOR w)."""

    def __init__(self, lanes):
        self.lanes = lanes
        self.acc_type = ir.VectorType(_I64, lanes)
        self.w_type = self.acc_type
        self.align = 8

    def load_x(self, builder, ptr):
        return _splat(builder, builder.load(ptr, align=8), self.acc_type)

    def combine(self, builder, xb, wv):
        name = f"llvm.ctpop.v{self.lanes}i64"
        mod = builder.module
        fn = mod.globals.get(name) or ir.Function(mod, ir.FunctionType(self.acc_type, [self.acc_type]), name)
        return builder.call(fn, [builder.xor(xb, wv)])

    def widen(self, builder, acc):
        return acc


def _op_for(dtype):
    if dtype == types.uint8:
        return _Dpbusd8(LANES[np.dtype(np.uint8)])
    if dtype == types.int8:
        return _Maddubs8(LANES[np.dtype(np.int8)])
    if dtype == types.int16:
        return _Madd16(LANES[np.dtype(np.int16)])
    if dtype == types.uint64:
        return _XorPop64(LANES[np.dtype(np.uint64)])
    return None


@intrinsic
def _tile(typingctx, x, x_base, x_step, offs, r0, r1, w, w_base, out, out_base, out_stride, npix, nco,
          init, init_base, scale, nvec):
    """One tile: P = TILE_P output pixels × nvec·lanes output channels,

        acc[p, c] = Σ_{r0≤r<r1} combine(x[x_base + p·x_step + offs[r]], w[w_base + ((r·nvec + v)·lanes + l)·e])
                    (c = v·lanes + l), accumulated in registers, then for p < npix and c < nco:
        out[out_base + c·out_stride + p] = init[init_base + c] + scale·acc[p, c]   (first chunk, r0 == 0)
        out[out_base + c·out_stride + p] += scale·acc[p, c]                         (later chunks)."""
    scalars = (x_base, x_step, r0, r1, w_base, out_base, out_stride, npix, nco, init_base, scale)
    w_ok = w.dtype == (types.int8 if x.dtype in (types.uint8, types.int8) else x.dtype)
    if (not isinstance(nvec, types.IntegerLiteral) or _op_for(x.dtype) is None or not w_ok
            or out.dtype not in (types.int32, types.int64) or any(a != types.int64 for a in scalars)):
        return None  # the IR below assumes exactly these types
    sig = types.void(x, x_base, x_step, offs, r0, r1, w, w_base, out, out_base, out_stride, npix, nco,
                     init, init_base, scale, nvec)

    def codegen(context, builder, signature, args):
        op = _op_for(signature.args[0].dtype)
        nv = signature.args[-1].literal_value
        (xa, x_base, x_step, oa, r0, r1, wa, w_base, out_a, out_base, out_stride, npix, nco,
         init_a, init_base, scale, _) = args
        xd, od, wd, outd, initd = [context.make_array(signature.args[i])(context, builder, a).data
                                   for i, a in ((0, xa), (3, oa), (6, wa), (8, out_a), (13, init_a))]
        accs = _reduction_loop(builder, op, nv, xd, x_base, x_step, od, r0, r1, wd, w_base)
        out_type = context.get_value_type(signature.args[8].dtype)
        _store_tile(builder, op, nv, accs, builder.gep(outd, [out_base]), out_stride, npix, nco,
                    builder.gep(initd, [init_base]), scale, builder.icmp_signed("==", r0, ir.Constant(_I64, 0)),
                    out_type)
        return context.get_dummy_value()

    return sig, codegen


def _reduction_loop(builder, op, nv, xd, x_base, x_step, od, r0, r1, wd, w_base):
    """The loop over r; returns the accumulators [pixel][vector] after it."""
    lanes_per_vec = op.w_type.count  # elements of w per vector
    pix = [builder.gep(xd, [builder.add(x_base, builder.mul(x_step, ir.Constant(_I64, p)))]) for p in range(TILE_P)]
    w0 = builder.gep(wd, [w_base])
    entry = builder.block
    loop = builder.append_basic_block("tile.loop")
    done = builder.append_basic_block("tile.done")
    builder.branch(loop)
    builder.position_at_end(loop)
    r = builder.phi(_I64)
    accs = [[builder.phi(op.acc_type) for _ in range(nv)] for _ in range(TILE_P)]
    r.add_incoming(r0, entry)
    for row in accs:
        for a in row:
            a.add_incoming(ir.Constant(op.acc_type, None), entry)
    off = builder.load(builder.gep(od, [r]))
    wrow = builder.gep(w0, [builder.mul(r, ir.Constant(_I64, nv * lanes_per_vec))])
    wvs = [builder.load(builder.bitcast(builder.gep(wrow, [ir.Constant(_I64, v * lanes_per_vec)]),
                                        op.w_type.as_pointer()), align=op.align) for v in range(nv)]
    new = []
    for p in range(TILE_P):
        xb = op.load_x(builder, builder.gep(pix[p], [off]))
        new.append([op.accumulate(builder, accs[p][v], xb, wvs[v]) if hasattr(op, "accumulate")
                    else builder.add(accs[p][v], op.combine(builder, xb, wvs[v])) for v in range(nv)])
    r_next = builder.add(r, ir.Constant(_I64, 1))
    tail = builder.block
    r.add_incoming(r_next, tail)
    for p in range(TILE_P):
        for v in range(nv):
            accs[p][v].add_incoming(new[p][v], tail)
    builder.cbranch(builder.icmp_signed("<", r_next, r1), loop, done)
    builder.position_at_end(done)
    return new


def _store_tile(builder, op, nv, accs, out0, out_stride, npix, nco, init0, scale, first, out_type):
    """Transpose each channel vector's P pixels into a row (shuffles) and store it into the output plane of
    its channel: the whole row when all P pixels exist, else pixel by pixel; channels ≥ nco are skipped."""
    row_type = ir.VectorType(_I64, TILE_P)
    out_row = ir.VectorType(out_type, TILE_P)
    scale_v = _splat(builder, scale, row_type)
    full = builder.icmp_signed("==", npix, ir.Constant(_I64, TILE_P))
    for v in range(nv):
        block = _concat(builder, [op.widen(builder, accs[p][v]) for p in range(TILE_P)])  # [pixel, lane]
        by_lane = builder.shuffle_vector(block, block, _mask([p * op.lanes + l for l in range(op.lanes)
                                                             for p in range(TILE_P)]))
        for lane in range(op.lanes):
            c = v * op.lanes + lane
            column = builder.shuffle_vector(by_lane, by_lane, _mask(range(lane * TILE_P, (lane + 1) * TILE_P)))
            column = builder.mul(column, scale_v)
            dst = builder.gep(out0, [builder.mul(out_stride, ir.Constant(_I64, c))])
            with builder.if_then(builder.icmp_signed("<", ir.Constant(_I64, c), nco), likely=True):
                init = _splat(builder, builder.load(builder.gep(init0, [ir.Constant(_I64, c)])), row_type)
                with builder.if_else(full, likely=True) as (whole, partial):
                    with whole:
                        ptr = builder.bitcast(dst, out_row.as_pointer())
                        before = builder.sext(builder.load(ptr, align=1), row_type) \
                            if out_type.width < 64 else builder.load(ptr, align=1)
                        value = builder.add(builder.select(first, init, before), column)
                        builder.store(builder.trunc(value, out_row) if out_type.width < 64 else value, ptr, align=1)
                    with partial:
                        for p in range(TILE_P):
                            with builder.if_then(builder.icmp_signed("<", ir.Constant(_I64, p), npix)):
                                ptr = builder.gep(dst, [ir.Constant(_I64, p)])
                                old = builder.load(ptr)
                                before = builder.sext(old, _I64) if out_type.width < 64 else old
                                pick = builder.select(first, builder.extract_element(init, ir.Constant(_I32, p)), before)
                                value = builder.add(pick, builder.extract_element(column, ir.Constant(_I32, p)))
                                builder.store(builder.trunc(value, out_type) if out_type.width < 64 else value, ptr)


# ----------------------------------------------------------------------------------------------------------
# The micro-kernel in numpy, for NUMBA_DISABLE_JIT=1 (an intrinsic cannot run as Python): the same function
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


if JIT_DISABLED:
    _tile = _tile_numpy  # noqa: F811  (the intrinsic is not callable from Python)
