"""Transposing copies of byte codes (NCHW planes <-> channels-last rows), 8x8 bytes at a time.

A copy that turns [C, W] bytes into [W, C] (the channel vectors of the u8 canvas, the depthwise kernel's
channels-last scratch) reads or writes one element per instruction in plain numba: ~0.5 ns an element, a third
of a depthwise layer's time. Eight rows of eight bytes instead go through three rounds of interleaving
shuffles (punpck{l,h}{bw,wd,dq} on x86) as an LLVM IR intrinsic: ~12 shuffles per 64 bytes.

`transpose_bytes` is the kernel-side helper (njit): full 8x8 blocks through the intrinsic, edges element by
element. `_block8` is the intrinsic in numba mode; its numpy twin (`_block8_numpy`) runs in Python mode.
The reference is `transpose_bytes_reference` (numpy), which the tests compare against.
"""
from __future__ import annotations

import numpy as np

from ..jit import njit


def _block8_numpy(src, s_off, s_stride, dst, d_off, d_stride, add):
    """dst[d_off + j·d_stride + i] = src[s_off + i·s_stride + j] + add (mod 256) for i, j < 8."""
    rows = np.stack([src[s_off + i * s_stride:s_off + i * s_stride + 8] for i in range(8)]).astype(np.uint8)
    for j in range(8):
        dst[d_off + j * d_stride:d_off + j * d_stride + 8] = (rows[:, j] + np.uint8(add & 0xFF)).astype(dst.dtype)


def _build_block8():
    from llvmlite import ir
    from numba import types
    from numba.extending import intrinsic

    i8, i32, i64 = ir.IntType(8), ir.IntType(32), ir.IntType(64)
    v8, v16 = ir.VectorType(i8, 8), ir.VectorType(i8, 16)

    def mask(indices):
        return ir.Constant(ir.VectorType(i32, len(indices)), list(indices))

    @intrinsic
    def block8(typingctx, src, s_off, s_stride, dst, d_off, d_stride, add):
        if (src.dtype != types.uint8 or dst.dtype != types.uint8 or src.ndim != 1 or dst.ndim != 1
                or any(a != types.int64 for a in (s_off, s_stride, d_off, d_stride, add))):
            return None   # the IR below assumes exactly these types
        sig = types.void(src, s_off, s_stride, dst, d_off, d_stride, add)

        def codegen(context, builder, signature, args):
            sa, s_off, s_stride, da, d_off, d_stride, add = args
            sd = context.make_array(signature.args[0])(context, builder, sa).data
            dd = context.make_array(signature.args[3])(context, builder, da).data
            rows = []
            for i in range(8):   # eight unaligned 8-byte loads
                ptr = builder.gep(sd, [builder.add(s_off, builder.mul(s_stride, ir.Constant(i64, i)))])
                rows.append(builder.bitcast(builder.load(builder.bitcast(ptr, i64.as_pointer()), align=1), v8))
            # round 1: bytes of rows 2k, 2k+1 interleaved: [r0[0] r1[0] r0[1] r1[1] ...]
            t = [builder.shuffle_vector(rows[2 * k], rows[2 * k + 1], mask([x for j in range(8) for x in (j, 8 + j)]))
                 for k in range(4)]
            # round 2: 16-bit pairs of (t0, t1) and (t2, t3): 4 bytes per column (rows 4k..4k+3), columns 0-3, 4-7
            def pairs(a, b, cols):
                return builder.shuffle_vector(a, b, mask([x for j in cols for x in (2 * j, 2 * j + 1, 16 + 2 * j,
                                                                                      17 + 2 * j)]))
            u0, u1 = pairs(t[0], t[1], range(4)), pairs(t[0], t[1], range(4, 8))
            u2, u3 = pairs(t[2], t[3], range(4)), pairs(t[2], t[3], range(4, 8))
            # round 3: 32-bit quads: a column's eight bytes, two columns per vector
            def quads(a, b, cols):
                return builder.shuffle_vector(a, b, mask([x for j in cols for x in
                                                          [4 * j + q for q in range(4)] + [16 + 4 * j + q for q in range(4)]]))
            v = [quads(u0, u2, (0, 1)), quads(u0, u2, (2, 3)), quads(u1, u3, (0, 1)), quads(u1, u3, (2, 3))]
            shift = builder.trunc(add, i8)
            shift_v = builder.shuffle_vector(builder.insert_element(ir.Constant(v16, None), shift, ir.Constant(i32, 0)),
                                             ir.Constant(v16, None), mask([0] * 16))
            for k, vec in enumerate(v):
                vec = builder.add(vec, shift_v)
                for half in range(2):
                    col = 2 * k + half
                    out = builder.bitcast(builder.shuffle_vector(vec, vec, mask(range(8 * half, 8 * half + 8))), i64)
                    ptr = builder.gep(dd, [builder.add(d_off, builder.mul(d_stride, ir.Constant(i64, col)))])
                    builder.store(out, builder.bitcast(ptr, i64.as_pointer()), align=1)
            return context.get_dummy_value()

        return sig, codegen

    return block8


# the 8x8 block: the LLVM IR intrinsic in numba mode (built when numba is loaded), the numpy twin in Python mode
_block8 = njit(build=_build_block8)(_block8_numpy)


def _transpose_bytes_numpy(src, s_off, s_stride, dst, d_off, d_stride, rows, cols, add):
    if rows == 0 or cols == 0:
        return
    block = np.lib.stride_tricks.as_strided(src[s_off:], (rows, cols), (s_stride, 1), writeable=False)
    out = np.lib.stride_tricks.as_strided(dst[d_off:], (cols, rows), (d_stride, 1))
    out[...] = (block.T.astype(np.uint8) + np.uint8(add & 0xFF)).astype(dst.dtype)


@njit(nogil=True, cache=True, python=_transpose_bytes_numpy)
def transpose_bytes(src, s_off, s_stride, dst, d_off, d_stride, rows, cols, add):
    """dst[d_off + j·d_stride + i] = (src[s_off + i·s_stride + j] + add) mod 256 for i < rows, j < cols:
    a [rows, cols] block of bytes (row pitch s_stride) stored transposed (row pitch d_stride). src and dst are
    1-D uint8 arrays (views of the codes); the blocks must not overlap."""
    full_r, full_c = rows - rows % 8, cols - cols % 8
    a8 = np.uint8(add & 0xFF)
    for i0 in range(0, full_r, 8):
        for j0 in range(0, full_c, 8):
            _block8(src, s_off + i0 * s_stride + j0, s_stride, dst, d_off + j0 * d_stride + i0, d_stride, add)
        for i in range(i0, i0 + 8):   # the last columns, fewer than 8
            for j in range(full_c, cols):
                dst[d_off + j * d_stride + i] = np.uint8(src[s_off + i * s_stride + j] + a8)
    for i in range(full_r, rows):     # the last rows, fewer than 8 (all of them for 3-channel images): a row to
        if cols > 0:                  # a strided column through views (indices from ranges: no negative-index
            row = src[s_off + i * s_stride:s_off + i * s_stride + cols]   # checks in the loop)
            column = dst[d_off + i:d_off + i + (cols - 1) * d_stride + 1:d_stride]
            for j in range(cols):
                column[j] = np.uint8(row[j] + a8)


def transpose_bytes_reference(block: np.ndarray, add: int) -> np.ndarray:
    """The same copy of a [rows, cols] uint8 block in numpy: its transpose plus `add`, mod 256."""
    return ((np.asarray(block, np.int64).T + add) % 256).astype(np.uint8)
