"""Implicit im2col: convolution geometry and one register-tiled micro-kernel shared by the MAC and XNOR paths.

No im2col matrix is ever built. The input is laid out once as a padded channels-last "canvas"
[N, Hp, Wpa, G, Ce] (G groups, Ce elements per group and pixel), and a small *offset table* lists, for
every reduction step r (kernel row, kernel column, channel element), how far its operand lies from the
top-left pixel of the window. A tile of P neighbouring output pixels × (nvec · lanes) output channels then
walks the offset table with its accumulators held in SIMD registers:

    acc[p, co] += combine(broadcast(x[base + p·x_step + offs[r]]), w[r, co])     for r in [r0, r1)

Two combine operations, chosen by the canvas dtype:
- int16 canvas ("madd"): x holds channel *pairs*; combine = x0·w0 + x1·w1 in int32 lanes. LLVM turns
  this generic pattern into vpmaddwd (AVX2) or vpdpwssd (AVX-512 VNNI). int32 lanes are exact modulo 2^32,
  so the caller chooses `chunk` (reduction steps per call) such that every chunk's sum fits in int32; the
  chunks are summed in int64.
- uint64 canvas ("xorpop"): x holds 64 packed channel bits; combine = popcount(x XOR w) in int64 lanes
  (one generic `llvm.ctpop` on a vector: vpopcntq where the CPU has it, a nibble-table expansion elsewhere).

The IR is generic LLVM vector code, so it is correct on any target; only the speed depends on the CPU.
The micro-kernel is an `intrinsic`, which numba's cache does not track: after editing the IR code here,
clear the `__pycache__` of this package (numba only re-checks the source file of the jitted function).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.core import config
from numba.core.codegen import get_host_cpu_features
from numba.extending import intrinsic

TILE_P = 4  # output pixels per tile: with 4 channel vectors that is 16 accumulator registers
SEGMENT = 8 * TILE_P  # output pixels of one row per parallel task (a multiple of TILE_P)


def _vector_bits() -> int:
    """Width of the SIMD registers numba compiles for (it honours NUMBA_CPU_FEATURES, so do we)."""
    feats = config.CPU_FEATURES if config.CPU_FEATURES is not None else get_host_cpu_features()
    if "+avx512bw" in feats:
        return 512
    if "+avx2" in feats:
        return 256
    return 128


VECTOR_BITS = _vector_bits()
MAX_NVEC = 4 if VECTOR_BITS == 512 else 2  # keep P·nvec accumulators within the register file
LANES = {np.dtype(np.int16): VECTOR_BITS // 32, np.dtype(np.uint64): VECTOR_BITS // 64}
ELEMS_PER_LANE = {np.dtype(np.int16): 2, np.dtype(np.uint64): 1}


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
    _copy_into(x_cl, canvas, g.top, g.left)
    return canvas


@njit(parallel=True, cache=True)
def _copy_into(x_cl, canvas, top, left):
    """canvas[:, top + i, left + j, :, :C] = x_cl[:, i, j] and zeros in the spare channels (a transposing copy)."""
    n, h, w, groups, c = x_cl.shape
    ce = canvas.shape[4]
    for t in prange(n * h):
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
    out = np.zeros(groups * ncb * kh * kw * ce * nvec * lanes, dtype)
    _pack_into(wg, ce, nvec, lanes, e, out)
    return out


@njit(cache=True)
def _pack_into(wg, ce, nvec, lanes, e, out):
    groups, cog, kh_n, kw_n, c_n = wg.shape
    width = nvec * lanes
    ncb = (cog + width - 1) // width
    rows = ce // e  # reduction steps per kernel position
    step = width * e  # distance between consecutive reduction steps
    half = e - 1  # e is 1 or 2: c // e == c >> half, c % e == c & half
    for gi in range(groups):
        for co in range(cog):
            cb, lane_el = co // width, (co % width) * e
            block = (gi * ncb + cb) * kh_n * kw_n * rows * step + lane_el
            for kh in range(kh_n):
                for kw in range(kw_n):
                    base = block + (kh * kw_n + kw) * rows * step
                    for c in range(c_n):
                        out[base + (c >> half) * step + (c & half)] = wg[gi, co, kh, kw, c]


def choose_nvec(cog: int, dtype) -> int:
    """Fewest vectors that cover a group's output channels, at most MAX_NVEC."""
    lanes = LANES[np.dtype(dtype)]
    nvec = 1
    while nvec < MAX_NVEC and nvec * lanes < cog:
        nvec *= 2
    return nvec


def run_tiles(canvas, wpk, offs, g: ConvGeometry, nvec: int, chunk: int, init, scale: int,
              out_dtype=np.int64) -> np.ndarray:
    """out[n, co, oh, ow] = init[co] + scale · Σ_r combine(...) as `out_dtype` [N, Co, Ho, Wo]."""
    _, hp, wpa, groups, ce = canvas.shape
    lanes = LANES[canvas.dtype]
    e = ELEMS_PER_LANE[canvas.dtype]
    out = np.empty((g.n, g.co, g.ho, g.wo), out_dtype)
    geom = (g.n, groups, g.ho, g.wo, g.sh, g.sw, hp, wpa, ce, g.cog, lanes, e)
    _run_tiles(canvas.ravel(), wpk, offs, geom, nvec, max(1, chunk), np.asarray(init, np.int64), scale, out)
    return out


@njit(parallel=True, cache=True)
def _run_tiles(xf, wpk, offs, geom, nvec, chunk, init, scale, out):
    n, groups, ho, wo, sh, sw, hp, wpa, ce, cog, lanes, e = geom
    width = nvec * lanes
    ncb = (cog + width - 1) // width
    nseg = (wo + SEGMENT - 1) // SEGMENT
    nr = offs.shape[0]
    w_cb_stride = nr * width * e
    for t in prange(n * groups * ho * nseg):
        # task = (image, group, output row, segment of the row), all channel blocks
        seg = t % nseg
        oh = (t // nseg) % ho
        gi = (t // (nseg * ho)) % groups
        ni = t // (nseg * ho * groups)
        ow0 = seg * SEGMENT
        npix = min(SEGMENT, wo - ow0)
        acc = np.empty(width * SEGMENT, np.int64)  # [channel, pixel] of this segment
        for cb in range(ncb):
            w_base = (gi * ncb + cb) * w_cb_stride
            for ow in range(ow0, ow0 + npix, TILE_P):
                x_base = ((ni * hp + oh * sh) * wpa + ow * sw) * groups * ce + gi * ce
                acc_p = acc[ow - ow0:]
                for r0 in range(0, nr, chunk):
                    r1 = min(r0 + chunk, nr)
                    # the vector count must be a compile-time constant of the micro-kernel
                    if nvec == 1:
                        _tile(xf, x_base, sw * groups * ce, offs, r0, r1, wpk, w_base, acc_p, 1)
                    elif nvec == 2:
                        _tile(xf, x_base, sw * groups * ce, offs, r0, r1, wpk, w_base, acc_p, 2)
                    else:
                        _tile(xf, x_base, sw * groups * ce, offs, r0, r1, wpk, w_base, acc_p, 4)
            for j in range(min(width, cog - cb * width)):
                co = gi * cog + cb * width + j
                dst = out[ni, co, oh, ow0:ow0 + npix]
                src = acc[j * SEGMENT:j * SEGMENT + npix]
                for q in range(npix):
                    dst[q] = init[co] + scale * src[q]


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
    if dtype == types.int16:
        return _Madd16(LANES[np.dtype(np.int16)])
    if dtype == types.uint64:
        return _XorPop64(LANES[np.dtype(np.uint64)])
    return None


@intrinsic
def _tile(typingctx, x, x_base, x_step, offs, r0, r1, w, w_base, acc, nvec):
    """acc[(v·lanes + l)·SEGMENT + p] (=, if r0 == 0, else +=) Σ_{r0≤r<r1} combine(x[x_base + p·x_step + offs[r]], w[w_base + (r·nvec + v)·lanes·e + l·e])
    for pixels p < TILE_P, vectors v < nvec, lanes l: a P × (nvec·lanes) tile of outputs, stored channel-major."""
    if not isinstance(nvec, types.IntegerLiteral) or _op_for(x.dtype) is None or w.dtype != x.dtype:
        return None
    sig = types.void(x, x_base, x_step, offs, r0, r1, w, w_base, acc, nvec)

    def codegen(context, builder, signature, args):
        op = _op_for(signature.args[0].dtype)
        nv = signature.args[9].literal_value
        xa, x_base, x_step, oa, r0, r1, wa, w_base, acc_a, _ = args
        data = [context.make_array(signature.args[i])(context, builder, a).data
                for i, a in ((0, xa), (3, oa), (6, wa), (8, acc_a))]
        xd, od, wd, accd = data
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
            new.append([builder.add(accs[p][v], op.combine(builder, xb, wvs[v])) for v in range(nv)])
        r_next = builder.add(r, ir.Constant(_I64, 1))
        tail = builder.block
        r.add_incoming(r_next, tail)
        for p in range(TILE_P):
            for v in range(nv):
                accs[p][v].add_incoming(new[p][v], tail)
        builder.cbranch(builder.icmp_signed("<", r_next, r1), loop, done)

        builder.position_at_end(done)
        # transpose each channel vector's P pixels into acc[channel, pixel] rows (SEGMENT apart); the first
        # chunk (r0 == 0) stores, later chunks add
        first = builder.icmp_signed("==", r0, ir.Constant(_I64, 0))
        row_type = ir.VectorType(_I64, TILE_P)
        for v in range(nv):
            block = _concat(builder, [op.widen(builder, new[p][v]) for p in range(TILE_P)])  # [pixel, lane]
            lanes = op.lanes
            by_lane = builder.shuffle_vector(block, block, _mask([p * lanes + l for l in range(lanes) for p in range(TILE_P)]))
            for lane in range(lanes):
                column = builder.shuffle_vector(by_lane, by_lane, _mask(range(lane * TILE_P, (lane + 1) * TILE_P)))
                ptr = builder.bitcast(builder.gep(accd, [ir.Constant(_I64, (v * lanes + lane) * SEGMENT)]),
                                      row_type.as_pointer())
                before = builder.select(first, ir.Constant(row_type, None), builder.load(ptr, align=8))
                builder.store(builder.add(before, column), ptr, align=8)
        return context.get_dummy_value()

    return sig, codegen
