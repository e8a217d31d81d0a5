"""The micro-kernel of kernels/im2col.py as an LLVM IR intrinsic (numba mode only: imported when numba loads).

The IR is generic LLVM vector code, so it is correct on any target; only the speed depends on the CPU. An
`intrinsic` is not tracked by numba's cache: after editing the IR here, clear kernels/__pycache__ (numba only
re-checks the source file of the jitted function that calls it).
"""
from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic

from .im2col import LANES, PMADDUBSW, TILE_P, VECTOR_BITS, VNNI, XORPOP_BYTES, dw_lanes


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
    """64 packed bits: acc_i64 += popcount(x XOR w) (generic IR: vpopcntq where the CPU has it)."""

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


class _XorPopBytes(_XorPop64):
    """The same sums on AVX2 (im2col.XORPOP_BYTES), counted per byte: the accumulator holds 8 byte counts per
    64-bit lane, a nibble-table lookup (vpshufb) each step with no horizontal sum, added into the lane's int64
    (vpsadbw) only when the tile is stored. A byte count grows by at most 8 a step, so a call takes at most
    31 steps (the caller's chunk, popcount.XORPOP_STEPS: 31 · 8 = 248 < 256)."""

    def __init__(self, lanes):
        super().__init__(lanes)
        self.acc_type = ir.VectorType(ir.IntType(8), 8 * lanes)
        self.w_type = ir.VectorType(_I64, lanes)

    def load_x(self, builder, ptr):
        return _splat(builder, builder.load(ptr, align=8), self.w_type)

    def _call(self, builder, name, ret, args):
        mod = builder.module
        fn = mod.globals.get(name) or ir.Function(mod, ir.FunctionType(ret, [a.type for a in args]), name)
        return builder.call(fn, args)

    def accumulate(self, builder, acc, xb, wv):
        v = builder.bitcast(builder.xor(xb, wv), self.acc_type)
        size = self.acc_type.count
        table = ir.Constant(self.acc_type, [bin(i).count("1") for i in range(16)] * (size // 16))
        nibble = ir.Constant(self.acc_type, [15] * size)
        low = builder.and_(v, nibble)
        high = builder.and_(builder.lshr(v, ir.Constant(self.acc_type, [4] * size)), nibble)
        counts = builder.add(self._call(builder, "llvm.x86.avx2.pshuf.b", self.acc_type, [table, low]),
                             self._call(builder, "llvm.x86.avx2.pshuf.b", self.acc_type, [table, high]))
        return builder.add(acc, counts)

    def widen(self, builder, acc):
        return self._call(builder, "llvm.x86.avx2.psad.bw", self.w_type,
                          [acc, ir.Constant(self.acc_type, [0] * self.acc_type.count)])


def _op_for(dtype):
    if dtype == types.uint8:
        return _Dpbusd8(LANES[np.dtype(np.uint8)])
    if dtype == types.int8:
        return _Maddubs8(LANES[np.dtype(np.int8)])
    if dtype == types.int16:
        return _Madd16(LANES[np.dtype(np.int16)])
    if dtype == types.uint64:
        return (_XorPopBytes if XORPOP_BYTES else _XorPop64)(LANES[np.dtype(np.uint64)])
    return None


@intrinsic
def tile(typingctx, x, x_base, x_step, offs, r0, r1, w, w_base, out, out_base, out_stride, npix, nco,
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


def _in_lanes(builder, op, acc, lane_t):
    """An accumulator vector as `op.lanes` lanes of lane_t: int64 (op.widen), or int32 (truncated: exact
    modulo 2^32, all an int32 output keeps)."""
    if lane_t is _I32 and acc.type.element == _I32:
        return acc
    wide = op.widen(builder, acc)
    return builder.trunc(wide, ir.VectorType(_I32, op.lanes)) if lane_t is _I32 else wide


def _store_tile(builder, op, nv, accs, out0, out_stride, npix, nco, init0, scale, first, out_type):
    """Transpose each channel vector's P pixels into a row (shuffles) and store it into the output plane of
    its channel: the whole row when all P pixels exist, else pixel by pixel; channels ≥ nco are skipped."""
    # the sums in the output's width: an int32 output keeps init + scale·acc modulo 2^32 whichever width it is
    # computed in, so its multiply and adds run in int32 lanes (AVX2 has no int64 vector multiply)
    lane_t = _I32 if out_type.width == 32 else _I64
    row_type = ir.VectorType(lane_t, TILE_P)
    out_row = ir.VectorType(out_type, TILE_P)
    scale_v = _splat(builder, builder.trunc(scale, lane_t) if lane_t is _I32 else scale, row_type)
    full = builder.icmp_signed("==", npix, ir.Constant(_I64, TILE_P))
    for v in range(nv):
        block = _concat(builder, [_in_lanes(builder, op, accs[p][v], lane_t) for p in range(TILE_P)])  # [pixel, lane]
        by_lane = builder.shuffle_vector(block, block, _mask([p * op.lanes + l for l in range(op.lanes)
                                                             for p in range(TILE_P)]))
        for lane in range(op.lanes):
            c = v * op.lanes + lane
            column = builder.shuffle_vector(by_lane, by_lane, _mask(range(lane * TILE_P, (lane + 1) * TILE_P)))
            column = builder.mul(column, scale_v)
            dst = builder.gep(out0, [builder.mul(out_stride, ir.Constant(_I64, c))])
            with builder.if_then(builder.icmp_signed("<", ir.Constant(_I64, c), nco), likely=True):
                init = builder.load(builder.gep(init0, [ir.Constant(_I64, c)]))
                init = _splat(builder, builder.trunc(init, lane_t) if lane_t is _I32 else init, row_type)
                with builder.if_else(full, likely=True) as (whole, partial):
                    with whole:   # (the output's own width: the lanes are int32 for an int32 output)
                        ptr = builder.bitcast(dst, out_row.as_pointer())
                        value = builder.add(builder.select(first, init, builder.load(ptr, align=1)), column)
                        builder.store(value, ptr, align=1)
                    with partial:
                        for p in range(TILE_P):
                            with builder.if_then(builder.icmp_signed("<", ir.Constant(_I64, p), npix)):
                                ptr = builder.gep(dst, [ir.Constant(_I64, p)])
                                pick = builder.select(first, builder.extract_element(init, ir.Constant(_I32, p)),
                                                      builder.load(ptr))
                                value = builder.add(pick, builder.extract_element(column, ir.Constant(_I32, p)))
                                builder.store(value, ptr)


@intrinsic
def tile_signs(typingctx, x, x_base, x_step, offs, r0, r1, w, w_base, out, out_base, pixel_stride, npix, nco,
               above, above_bases, nvec):
    """One XNOR tile whose popcount sums go straight to bits (no sums tensor, no transpose): with acc[p, c] the
    sums of `tile` over the whole reduction (r0 = 0 .. r1 = all steps in one call),

        bit c of out[out_base + p·pixel_stride + c // 8] = acc[p, c] > above[above_bases[p] + c]

    for p < npix; the bits of the tile's channels c ≥ nco are 0 (the spare bits of a packed pixel) and no byte
    past ceil(nco / 8) is written. `above` must hold nvec·lanes readable values from every base."""
    scalars = (x_base, x_step, r0, r1, w_base, out_base, pixel_stride, npix, nco)
    if (not isinstance(nvec, types.IntegerLiteral) or x.dtype != types.uint64 or w.dtype != types.uint64
            or out.dtype != types.uint8 or above.dtype != types.int64
            or any(types.unliteral(a) != types.int64 for a in scalars)
            or not (isinstance(above_bases, types.UniTuple) and above_bases.count == TILE_P
                    and above_bases.dtype == types.int64)):
        return None  # the IR below assumes exactly these types
    sig = types.void(x, x_base, x_step, offs, r0, r1, w, w_base, out, out_base, pixel_stride, npix, nco,
                     above, above_bases, nvec)

    def codegen(context, builder, signature, args):
        op = _op_for(signature.args[0].dtype)
        nv = signature.args[-1].literal_value
        (xa, x_base, x_step, oa, r0, r1, wa, w_base, out_a, out_base, pixel_stride, npix, nco,
         above_a, above_bases, _) = args
        xd, od, wd, outd, above_d = [context.make_array(signature.args[i])(context, builder, a).data
                                     for i, a in ((0, xa), (3, oa), (6, wa), (8, out_a), (13, above_a))]
        accs = _reduction_loop(builder, op, nv, xd, x_base, x_step, od, r0, r1, wd, w_base)
        _store_signs(builder, op, nv, accs, builder.gep(outd, [out_base]), pixel_stride, npix, nco, above_d,
                     [builder.extract_value(above_bases, p) for p in range(TILE_P)])
        return context.get_dummy_value()

    return sig, codegen


def _store_signs(builder, op, nv, accs, out0, pixel_stride, npix, nco, above_d, above_bases):
    """Per pixel: compare each channel vector's sums with their limits, the nv masks side by side as one
    width-bit integer (bit c = channel c), stored as ceil(width / 8) bytes (byte by byte where nco < width)."""
    lanes, width = op.lanes, nv * op.lanes
    sums_t = ir.VectorType(_I64, lanes)
    keep = builder.icmp_signed("<", ir.Constant(ir.VectorType(_I64, width), list(range(width))),
                               _splat(builder, nco, ir.VectorType(_I64, width)))   # the tile's real channels
    bits_t = ir.IntType(max(8, width))
    whole = builder.icmp_signed("==", nco, ir.Constant(_I64, width))
    for p in range(TILE_P):
        with builder.if_then(builder.icmp_signed("<", ir.Constant(_I64, p), npix), likely=True):
            masks = []
            for v in range(nv):
                ptr = builder.gep(above_d, [builder.add(above_bases[p], ir.Constant(_I64, v * lanes))])
                limit = builder.load(builder.bitcast(ptr, sums_t.as_pointer()), align=8)
                masks.append(builder.icmp_signed(">", op.widen(builder, accs[p][v]), limit))
            bits = builder.and_(_concat(builder, masks), keep)
            bits = builder.zext(builder.bitcast(bits, ir.IntType(width)), bits_t)
            dst = builder.gep(out0, [builder.mul(pixel_stride, ir.Constant(_I64, p))])
            with builder.if_else(whole, likely=True) as (all_channels, some):
                with all_channels:   # (a 4-channel block, AVX2's narrowest, is a whole layer: its byte's
                    builder.store(bits, builder.bitcast(dst, bits_t.as_pointer()), align=1)   # high bits spare)
                with some:
                    for b in range(bits_t.width // 8):
                        with builder.if_then(builder.icmp_signed("<", ir.Constant(_I64, 8 * b), nco)):
                            byte = builder.trunc(builder.lshr(bits, ir.Constant(bits_t, 8 * b)), ir.IntType(8))
                            builder.store(byte, builder.gep(dst, [ir.Constant(_I64, b)]))


# ----------------------------------------------------------------------------------------------------------
# Depthwise 3x3 sums, channels in SIMD lanes, the nine weight vectors held in registers
# ----------------------------------------------------------------------------------------------------------
@intrinsic
def dw3x3_sums(typingctx, x, x_base, x_step, pitch, wt, acc, npix, blocks):
    """acc[p·C + c] = Σ_(kh, kw) wt[(3·kh + kw)·C + c] · x[x_base + p·x_step + kh·pitch + kw·C + c] for p < npix
    and c < blocks·L (L lanes a vector: im2col.dw_lanes of the dtype; C = wt's row: wt is [9, C] flattened,
    acc's pixel pitch C too). Per block of L channels the nine weight vectors are loaded once and stay in
    registers while the pixels go by: a pixel costs nine loads and nine multiply-adds (the compiled loop
    reloaded each weight per pixel and kernel row). The caller uses it where every partial sum is an integer
    that the float type holds exactly, so the order and fusing of the adds cannot change a bit."""
    floats = (types.float32, types.float64)
    if (x.dtype not in floats or wt.dtype != x.dtype or acc.dtype != x.dtype
            or any(types.unliteral(a) != types.int64 for a in (x_base, x_step, pitch, npix, blocks))):
        return None
    sig = types.void(x, x_base, x_step, pitch, wt, acc, npix, blocks)

    def codegen(context, builder, signature, args):
        xa, x_base, x_step, pitch, wa, acc_a, npix, blocks = args
        w_arr = context.make_array(signature.args[4])(context, builder, wa)
        xd = context.make_array(signature.args[0])(context, builder, xa).data
        accd = context.make_array(signature.args[5])(context, builder, acc_a).data
        wd = w_arr.data
        c_n = builder.udiv(builder.extract_value(w_arr.shape, 0), ir.Constant(_I64, 9))   # wt: 9 rows of C
        single = signature.args[0].dtype == types.float32
        lanes = dw_lanes(np.float32 if single else np.float64)
        vec = ir.VectorType(ir.FloatType() if single else ir.DoubleType(), lanes)
        name = f"llvm.fma.v{lanes}f{32 if single else 64}"
        fma = builder.module.globals.get(name) or ir.Function(builder.module, ir.FunctionType(vec, [vec] * 3), name)
        align = 4 if single else 8

        def load(base, index):
            return builder.load(builder.bitcast(builder.gep(base, [index]), vec.as_pointer()), align=align)

        # for b in range(blocks): weights -> registers; for p in range(npix): nine loads and multiply-adds
        entry = builder.block
        block_loop = builder.append_basic_block("dw.block")
        pix_loop = builder.append_basic_block("dw.pixel")
        block_end = builder.append_basic_block("dw.block_end")
        done = builder.append_basic_block("dw.done")
        zero = ir.Constant(_I64, 0)
        builder.cbranch(builder.and_(builder.icmp_signed(">", blocks, zero), builder.icmp_signed(">", npix, zero)),
                        block_loop, done)
        builder.position_at_end(block_loop)
        b = builder.phi(_I64)
        b.add_incoming(zero, entry)
        c0 = builder.mul(b, ir.Constant(_I64, lanes))
        weights = [load(wd, builder.add(builder.mul(ir.Constant(_I64, t), c_n), c0)) for t in range(9)]
        offsets = [builder.add(builder.add(builder.mul(ir.Constant(_I64, kh), pitch),
                                           builder.mul(ir.Constant(_I64, kw), c_n)), c0)
                   for kh in range(3) for kw in range(3)]
        builder.branch(pix_loop)
        builder.position_at_end(pix_loop)
        p = builder.phi(_I64)
        p.add_incoming(zero, block_loop)
        base = builder.add(x_base, builder.mul(p, x_step))
        total = builder.fmul(weights[0], load(xd, builder.add(base, offsets[0])))
        for t in range(1, 9):
            total = builder.call(fma, [weights[t], load(xd, builder.add(base, offsets[t])), total])
        dst = builder.add(builder.mul(p, c_n), c0)
        builder.store(total, builder.bitcast(builder.gep(accd, [dst]), vec.as_pointer()), align=align)
        p_next = builder.add(p, ir.Constant(_I64, 1))
        p.add_incoming(p_next, pix_loop)
        builder.cbranch(builder.icmp_signed("<", p_next, npix), pix_loop, block_end)
        builder.position_at_end(block_end)
        b_next = builder.add(b, ir.Constant(_I64, 1))
        b.add_incoming(b_next, block_end)
        builder.cbranch(builder.icmp_signed("<", b_next, blocks), block_loop, done)
        builder.position_at_end(done)
        return context.get_dummy_value()

    return sig, codegen


# ----------------------------------------------------------------------------------------------------------
# Bytes equal to a value, a vector at a time: the compare's lane mask as an integer, popcounted
# ----------------------------------------------------------------------------------------------------------
@intrinsic
def count_equal(typingctx, x, start, stop, value):
    """How many of x[start:stop] (uint8) equal `value` (uint8): per vector of bytes one compare, its mask as an
    integer and one popcount (vpcmpeqb + kmov + popcnt on AVX-512); the tail one masked load (the bytes past
    stop read as value ^ 1: never a match, and never touched in memory)."""
    if (x.dtype != types.uint8 or value != types.uint8
            or any(types.unliteral(a) != types.int64 for a in (start, stop))):
        return None
    sig = types.int64(x, start, stop, value)

    def codegen(context, builder, signature, args):
        xa, start, stop, value = args
        xd = context.make_array(signature.args[0])(context, builder, xa).data
        lanes = VECTOR_BITS // 8
        vec = ir.VectorType(ir.IntType(8), lanes)
        mask_t = ir.IntType(lanes)
        module = builder.module

        def declare(name, ret, params):
            return module.globals.get(name) or ir.Function(module, ir.FunctionType(ret, params), name)

        ctpop = declare(f"llvm.ctpop.i{lanes}", mask_t, [mask_t])
        bools = ir.VectorType(ir.IntType(1), lanes)
        masked_load = declare(f"llvm.masked.load.v{lanes}i8.p0v{lanes}i8", vec,
                              [vec.as_pointer(), _I32, bools, vec])
        wanted = _splat(builder, value, vec)

        def matches(v):
            hits = builder.call(ctpop, [builder.bitcast(builder.icmp_unsigned("==", v, wanted), mask_t)])
            return builder.zext(hits, _I64) if lanes < 64 else hits

        entry = builder.block
        vec_loop = builder.append_basic_block("count.vectors")
        tail = builder.append_basic_block("count.tail")
        done = builder.append_basic_block("count.done")
        step = ir.Constant(_I64, lanes)
        builder.cbranch(builder.icmp_signed("<=", builder.add(start, step), stop), vec_loop, tail)
        builder.position_at_end(vec_loop)
        i = builder.phi(_I64)
        total = builder.phi(_I64)
        i.add_incoming(start, entry)
        total.add_incoming(ir.Constant(_I64, 0), entry)
        total_next = builder.add(total, matches(builder.load(builder.bitcast(builder.gep(xd, [i]), vec.as_pointer()),
                                                             align=1)))
        i_next = builder.add(i, step)
        i.add_incoming(i_next, vec_loop)
        total.add_incoming(total_next, vec_loop)
        builder.cbranch(builder.icmp_signed("<=", builder.add(i_next, step), stop), vec_loop, tail)
        builder.position_at_end(tail)
        j = builder.phi(_I64)
        so_far = builder.phi(_I64)
        j.add_incoming(start, entry)
        so_far.add_incoming(ir.Constant(_I64, 0), entry)
        j.add_incoming(i_next, vec_loop)
        so_far.add_incoming(total_next, vec_loop)
        left = builder.sub(stop, j)   # 0 <= left < lanes (or negative for an empty range: no lane)
        inside = builder.icmp_signed("<", ir.Constant(ir.VectorType(_I64, lanes), list(range(lanes))),
                                     _splat(builder, left, ir.VectorType(_I64, lanes)))
        other = _splat(builder, builder.xor(value, ir.Constant(ir.IntType(8), 1)), vec)
        last = builder.call(masked_load, [builder.bitcast(builder.gep(xd, [j]), vec.as_pointer()),
                                          ir.Constant(_I32, 1), inside, other])
        result = builder.add(so_far, matches(last))
        builder.branch(done)
        builder.position_at_end(done)
        return result

    return sig, codegen
