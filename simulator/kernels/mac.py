"""Bit-exact multiply-accumulate kernels for conv2d and dense layers.

Semantics (what every kernel here computes, and what a MAC PE with an `acc_bits` accumulator does):

- Operands are integer *values* (already decoded): activations x, weights w, both with |v| < 2^16;
  padded input positions hold the operand value `pad_value`.
- Each output's accumulator starts at bias[co] (0 if there is no bias), itself brought into the
  accumulator range by the policy. It then adds the window's products one at a time, in the order of the
  weight's [ci, kh, kw] index, row-major (input channel within the group, then kernel row, then kernel
  column), padded positions included. After *every* add (and after loading the bias) the policy is applied
  in `acc_bits`-bit two's complement:
    wrap      the value modulo 2^acc_bits, into [-2^(acc_bits-1), 2^(acc_bits-1) - 1]
    saturate  the value clamped to that range
- Result: (accumulators as int64 [N, Co, Ho, Wo] — [N, Co] for dense —, overflow count), where the count
  is the number of output elements whose accumulator left the range at least once (a bias outside the
  range counts: the register could not hold it).
- Geometry: Ho = (H + top + bottom - KH) // sh + 1, likewise Wo; groups divide Ci and Co; output channel co
  reads input channels of group co // (Co/groups). dense is a 1x1 conv: x [N, K], w [Co, K] -> [N, Co].

Two exact implementations are chosen between:
- When `accumulator_bound` proves that no partial sum can leave the range, in any order, the policy is
  never triggered and the result is the plain integer sum: an int16 SIMD kernel (im2col.py) computes it,
  with int32 lanes whose reduction is chunked so that each chunk fits, the chunks summed in int64.
  Operands beyond int16 are split into a high and a low byte part (x = 256·hi + lo) first. That kernel
  puts output channels in SIMD lanes, so convs with few output channels per group (depthwise) take the
  sequential kernel instead, which is exact all the same (and no overflow can happen there either).
- Otherwise a sequential kernel adds the products in the order above, applying the policy after every add
  (needed even for wrap: its result is order-independent, but the overflow count is not).
Packed weights and per-channel Σ|w| are remembered per weight array (im2col.memo_pack), checked against
the array's current values on every call.

`*_reference` are plain-Python versions (Python ints, small shapes only) for the tests.
"""
from __future__ import annotations

import numpy as np
from ..jit import njit, prange

from . import im2col
from .im2col import ConvGeometry, conv_geometry
from .threads import launcher, split

POLICIES = ("wrap", "saturate")
OPERAND_LIMIT = 1 << 16  # |x|, |w| must stay below this
_INT16_MAX = (1 << 15) - 1  # the SIMD kernel takes int16 operands in [-32767, 32767]


# ----------------------------------------------------------------------------------------------------------
# Accumulator arithmetic (Python ints)
# ----------------------------------------------------------------------------------------------------------
def acc_limits(acc_bits: int) -> tuple[int, int]:
    """Smallest and largest value of a signed acc_bits-bit accumulator."""
    return -(1 << (acc_bits - 1)), (1 << (acc_bits - 1)) - 1


def apply_policy(value: int, acc_bits: int, policy: str) -> tuple[int, bool]:
    """(value brought into the accumulator range, whether it was outside)."""
    lo, hi = acc_limits(acc_bits)
    if lo <= value <= hi:
        return value, False
    if policy == "saturate":
        return (lo if value < lo else hi), True
    return ((value - lo) % (1 << acc_bits)) + lo, True


def accumulator_bound(x_max_abs: int, w, bias) -> int:
    """Worst-case |partial sum| of any output channel: max_c |bias_c| + x_max_abs · Σ|w_c|."""
    w = np.asarray(w)
    if w.shape[0] == 0:
        return 0
    x_max_abs = int(x_max_abs)
    sums = _abs_row_sums(w)
    b = np.zeros(len(sums), np.int64) if bias is None else np.asarray(bias).astype(np.int64)
    if x_max_abs * int(sums.max()) < 2**61 and -(2**61) < b.min() and b.max() < 2**61:
        return int((np.abs(b) + x_max_abs * sums).max())  # no int64 overflow possible
    return max(abs(bi) + x_max_abs * si for bi, si in zip(b.tolist(), sums.tolist()))


def _abs_row_sums(w: np.ndarray) -> np.ndarray:
    """Σ|w| per output channel, int64, remembered with the weights (a layer's bound is asked every batch)."""
    return im2col.memo_pack(w, ("abs_sums",), lambda: np.abs(w.reshape(w.shape[0], -1).astype(np.int64)).sum(1))


def _max_abs(a: np.ndarray) -> int:
    return 0 if a.size == 0 else max(abs(int(a.min())), abs(int(a.max())))


def overflow_impossible(x, w, bias, padding, pad_value, acc_bits) -> bool:
    """True when the bound proves that no partial sum can leave the accumulator range, in any order: the
    policy never acts and conv2d_acc may use its fast exact sum (given enough output channels per group)."""
    x_max = max(_max_abs(np.asarray(x)), abs(int(pad_value)) if any(padding) else 0)
    return accumulator_bound(x_max, w, bias) <= acc_limits(acc_bits)[1]


# ----------------------------------------------------------------------------------------------------------
# Public API
# ----------------------------------------------------------------------------------------------------------
def conv2d_acc(x, w, bias, stride, padding, groups, pad_value, acc_bits, policy) -> tuple[np.ndarray, int]:
    """Accumulators int64 [N, Co, Ho, Wo] and overflow count (see the module docstring)."""
    x, w, bias, g, x_max, w_max = _check_conv(x, w, bias, stride, padding, groups, pad_value, acc_bits, policy)
    pad_value = int(pad_value)
    if g.n == 0:
        return np.zeros((0, g.co, g.ho, g.wo), np.int64), 0
    x_reach = max(x_max, abs(pad_value) if g.has_padding else 0)  # the largest |operand| a window can see
    # the SIMD kernel puts output channels in lanes: with few channels per group (depthwise) most lanes
    # would idle, and the sequential kernel is faster (and exact all the same)
    wide_enough = 4 * g.cog >= im2col.LANES[np.dtype(np.int16)]
    if wide_enough and accumulator_bound(x_reach, w, bias) <= acc_limits(acc_bits)[1]:
        return _sum_conv(x, w, bias, g, pad_value, x_reach, w_max), 0
    return _sequential_conv(x, w, bias, g, pad_value, acc_bits, policy)


def dense_acc(x, w, bias, acc_bits, policy) -> tuple[np.ndarray, int]:
    """Accumulators int64 [N, Co] and overflow count; the same semantics as a 1x1 conv."""
    x, w = np.asarray(x), np.asarray(w)
    if x.ndim != 2 or w.ndim != 2 or x.shape[1] != w.shape[1]:
        raise ValueError(f"dense: x must be [N, K] and w [Co, K], got {x.shape}, {w.shape}")
    if x.shape[0] == 0:
        return np.zeros((0, w.shape[0]), np.int64), 0
    # the batch becomes the width of a 1-row image: x [N, K] -> [1, K, 1, N]
    acc, count = conv2d_acc(x.T[None, :, None, :], w[:, :, None, None], bias,
                            (1, 1), (0, 0, 0, 0), 1, 0, acc_bits, policy)
    return np.ascontiguousarray(acc[0, :, 0, :].T), count


def check_accumulator(acc_bits, policy, who: str) -> None:
    """The accumulator contract every MAC kernel shares: 2..64 bits, wrap or saturate."""
    if not (isinstance(acc_bits, (int, np.integer)) and 2 <= acc_bits <= 64):
        raise ValueError(f"{who}: acc_bits must be an integer in 2..64, got {acc_bits!r}")
    if policy not in POLICIES:
        raise ValueError(f"{who}: policy must be one of {POLICIES}, got {policy!r}")


def _check_conv(x, w, bias, stride, padding, groups, pad_value, acc_bits, policy):
    """Validated arrays, geometry, max|x| and max|w|; ValueError on anything outside the contract."""
    x, w = np.asarray(x), np.asarray(w)
    if x.dtype.kind not in "iu" or w.dtype.kind not in "iu":
        raise ValueError(f"conv: x and w must be integer arrays, got {x.dtype} and {w.dtype}")
    g = conv_geometry(x.shape, w.shape, stride, padding, groups)
    check_accumulator(acc_bits, policy, "conv")
    x_max = _max_abs(x)
    w_max = im2col.memo_pack(w, ("max_abs",), lambda: _max_abs(w)) if w.size else 0
    for name, m in (("x", x_max), ("w", w_max), ("pad_value", abs(int(pad_value)))):
        if m >= OPERAND_LIMIT:
            raise ValueError(f"conv: |{name}| must be below 2^16, got {m}")
    if bias is not None:
        bias = np.asarray(bias)
        if bias.shape != (g.co,) or bias.dtype.kind not in "iu":
            raise ValueError(f"conv: bias must be an integer array of shape ({g.co},), got {bias.dtype} {bias.shape}")
        bias = bias.astype(np.int64)
    return x, w, bias, g, x_max, w_max


# ----------------------------------------------------------------------------------------------------------
# Fast path: the exact sum, when the bound proves that the policy never acts
# ----------------------------------------------------------------------------------------------------------
def _sum_conv(x, w, bias, g: ConvGeometry, pad_value: int, x_reach: int, w_max: int) -> np.ndarray:
    init = np.zeros(g.co, np.int64) if bias is None else bias
    if x_reach <= _INT16_MAX and w_max <= _INT16_MAX:
        return _simd_conv(x, pad_value, w, g, init, x_reach, w_max)
    # operands beyond int16: x = 256·x_hi + x_lo (likewise w), four exact int16 convolutions
    total = np.zeros((g.n, g.co, g.ho, g.wo), np.int64)
    for sx, xp, pp in _split16(x, pad_value, x_reach):
        for sw, wp, _ in _split16(w, 0, w_max):
            xm = max(_max_abs(xp), abs(pp) if g.has_padding else 0)
            total += _simd_conv(xp, pp, wp, g, np.zeros(g.co, np.int64), xm, _max_abs(wp)) << (sx + sw)
    return total + init[:, None, None]


def _split16(a: np.ndarray, pad: int, a_max: int):
    """[(shift, part, pad part)] with a = Σ part << shift and every part within int16."""
    if a_max <= _INT16_MAX:
        return [(0, a, pad)]
    a = a.astype(np.int64)
    return [(8, a >> 8, pad >> 8), (0, a & 0xFF, pad & 0xFF)]


def _simd_conv(x, pad_value: int, w, g: ConvGeometry, init, x_max: int, w_max: int) -> np.ndarray:
    """init[co] + Σ x·w with the int16 micro-kernel; exact for operands within ±(2^15 - 1)."""
    ce = g.cig + (g.cig & 1)  # the kernel takes channels in pairs
    x_cl = x.reshape(g.n, g.groups, g.cig, g.h, g.w).transpose(0, 3, 4, 1, 2)
    pad_pixel = np.zeros((g.groups, ce), np.int16)
    pad_pixel[:, :g.cig] = pad_value
    canvas = im2col.make_canvas(x_cl, g, ce, np.int16, pad_pixel)
    nvec = im2col.choose_nvec(g.cog, np.int16, g.macs)
    wg = w.reshape(g.groups, g.cog, g.cig, g.kh, g.kw).transpose(0, 1, 3, 4, 2)
    wpk = im2col.memo_pack(w, ("int16", g.groups, nvec), lambda: im2col.pack_weights(wg, ce, np.int16, nvec))
    # int32 lanes are exact mod 2^32: sum at most `chunk` channel pairs before widening to int64
    chunk = ((1 << 31) - 1) // (2 * max(1, x_max) * max(1, w_max))
    return im2col.run_tiles(canvas, wpk, im2col.offset_table(g, canvas), g, nvec, chunk, init, 1)


# ----------------------------------------------------------------------------------------------------------
# Sequential path: the policy after every add, in the documented order
# ----------------------------------------------------------------------------------------------------------
def accumulator_start(bias, co: int, acc_bits: int, policy: str):
    """What a sequential kernel needs before its first add: the bias loaded into the register (by the policy),
    whether loading it overflowed, the register's limits and its wrap mask."""
    biases = [0] * co if bias is None else bias.tolist()
    started = [apply_policy(int(b), acc_bits, policy) for b in biases]
    init = np.array([v for v, _ in started], np.int64)
    init_over = np.array([o for _, o in started], np.bool_)
    lo, hi = acc_limits(acc_bits)
    mask = np.int64(-1) if acc_bits == 64 else np.int64((1 << acc_bits) - 1)
    return init, init_over, lo, hi, mask


def _sequential_conv(x, w, bias, g: ConvGeometry, pad_value, acc_bits, policy):
    init, init_over, lo, hi, mask = accumulator_start(bias, g.co, acc_bits, policy)
    acc = np.empty((g.n, g.co, g.ho, g.wo), np.int64)
    over = np.empty(acc.shape, np.bool_)
    split(_sequential_kernel, g.n * g.co, _phase_planes(x, g, pad_value), w.astype(np.int64), init, init_over, g.sh,
          g.sw, g.groups, np.int64(lo), np.int64(hi), mask, acc_bits == 64, policy == "saturate", acc, over,
          work=acc.size * w[0].size)
    return acc, int(np.count_nonzero(over))


def _phase_planes(x, g: ConvGeometry, pad_value: int, dtype=np.int64) -> np.ndarray:
    """The padded input split by stride phase, [N, Ci, sh, sw, Hq, Wq] of `dtype`: plane (a, b) holds the padded
    input's rows a, a+sh, ... and columns b, b+sw, ... Tap (kh, kw) of output (oh, ow) is then element
    (oh + kh//sh, ow + kw//sw) of plane (kh % sh, kw % sw): a stride-1 access for any stride."""
    if g.sh == g.sw == 1 and not g.has_padding and x.dtype == dtype:   # the input is its only plane: no copy
        return np.ascontiguousarray(x)[:, :, None, None]
    hp, wp = g.h + g.top + g.bottom, g.w + g.left + g.right
    xpad = np.full((g.n, g.ci, hp, wp), pad_value, dtype)
    xpad[:, :, g.top:g.top + g.h, g.left:g.left + g.w] = x
    if g.sh == g.sw == 1:
        return xpad[:, :, None, None]
    planes = np.full((g.n, g.ci, g.sh, g.sw, -(-hp // g.sh), -(-wp // g.sw)), pad_value, dtype)
    for a in range(g.sh):
        for b in range(g.sw):
            part = xpad[:, :, a::g.sh, b::g.sw]
            planes[:, :, a, b, :part.shape[2], :part.shape[3]] = part
    return planes


@njit(nogil=True, cache=True)
def _sequential_kernel(t0, t1, planes, w, init, init_over, sh, sw, groups, lo, hi, mask, bits64, saturate, acc, over):
    n, co_total, ho, wo = acc.shape
    _, cig, kh_n, kw_n = w.shape
    hq, wq = planes.shape[4], planes.shape[5]
    flat = planes.reshape(n, planes.shape[1], sh, sw, hq * wq)
    cog = co_total // groups
    m = (ho - 1) * wq + wo
    # one task per (image, output channel); inside it, one product at a time for all the channel's outputs,
    # as one run with row pitch wq: output q = oh·wq + ow reads its phase plane at q + (kh//sh)·wq + kw//sw.
    # The wq - wo extra outputs per row are computed and dropped: long loops that vectorise.
    for t in range(t0, t1):
        ni, co = t // co_total, t % co_total
        c0 = (co // cog) * cig
        a = np.full(m, init[co])
        o = np.full(m, init_over[co])
        for ci in range(cig):
            for kh in range(kh_n):
                for kw in range(kw_n):
                    wv = w[co, ci, kh, kw]
                    if wv != 0:  # adding 0 to an in-range accumulator changes nothing
                        start = (kh // sh) * wq + kw // sw
                        xs = flat[ni, c0 + ci, kh % sh, kw % sw, start:start + m]
                        _add_row(a, o, xs, wv, lo, hi, mask, bits64, saturate)
        for oh in range(ho):
            acc[ni, co, oh] = a[oh * wq:oh * wq + wo]
            over[ni, co, oh] = o[oh * wq:oh * wq + wo]


@njit(cache=True)
def _add_row(a, o, xrow, wv, lo, hi, mask, bits64, saturate):
    """a[i] = policy(a[i] + xrow[i]·wv) and o[i] |= whether it left the range, for a run of outputs."""
    if bits64:
        _add_row_64(a, o, xrow, wv, saturate)
    elif saturate:
        _add_row_saturate(a, o, xrow, wv, lo, hi)
    else:
        _add_row_wrap(a, o, xrow, wv, lo, mask)


# Python mode: the same three row functions on whole numpy arrays, whose int64 arithmetic wraps silently as
# numba's does (numpy *scalars* would warn on the 64-bit wrap), and fast.
def _add_row_wrap_numpy(a, o, xrow, wv, lo, mask):
    s = a + xrow * wv
    r = ((s - lo) & mask) + lo
    o |= r != s
    a[:] = r


def _add_row_saturate_numpy(a, o, xrow, wv, lo, hi):
    s = a + xrow * wv
    r = np.minimum(np.maximum(s, lo), hi)
    o |= r != s
    a[:] = r


def _add_row_64_numpy(a, o, xrow, wv, saturate):
    p = xrow * wv
    s = a + p
    left = ((a ^ s) & (p ^ s)) < 0
    if saturate:
        s = np.where(left, np.where(p > 0, np.iinfo(np.int64).max, np.iinfo(np.int64).min), s)
    o |= left
    a[:] = s


# One product per output of a run, the policy applied after the add. Branch-free, so the loops vectorise.
# Below 64 bits, |acc| < 2^62 and |product| < 2^32: the int64 sum itself cannot overflow.
@njit(cache=True, python=_add_row_wrap_numpy)
def _add_row_wrap(a, o, xrow, wv, lo, mask):
    for ow in range(a.shape[0]):
        s = a[ow] + xrow[ow] * wv
        r = ((s - lo) & mask) + lo  # modulo 2^bits into [lo, hi]
        o[ow] |= r != s
        a[ow] = r


@njit(cache=True, python=_add_row_saturate_numpy)
def _add_row_saturate(a, o, xrow, wv, lo, hi):
    for ow in range(a.shape[0]):
        s = a[ow] + xrow[ow] * wv
        r = min(max(s, lo), hi)
        o[ow] |= r != s
        a[ow] = r


@njit(cache=True, python=_add_row_64_numpy)
def _add_row_64(a, o, xrow, wv, saturate):
    """The 64-bit accumulator: numba's int64 add wraps like the hardware; overflow read off the signs."""
    for ow in range(a.shape[0]):
        p = xrow[ow] * wv
        s = a[ow] + p
        left = ((a[ow] ^ s) & (p ^ s)) < 0
        if left and saturate:
            s = np.int64(9223372036854775807) if p > 0 else np.int64(-9223372036854775808)
        o[ow] |= left
        a[ow] = s


# ----------------------------------------------------------------------------------------------------------
# Reference kernels: plain Python ints, the semantics read straight off the docstring
# ----------------------------------------------------------------------------------------------------------
def conv2d_acc_reference(x, w, bias, stride, padding, groups, pad_value, acc_bits, policy):
    g = conv_geometry(np.shape(x), np.shape(w), stride, padding, groups)
    xs, ws = np.asarray(x).tolist(), np.asarray(w).tolist()
    acc = np.zeros((g.n, g.co, g.ho, g.wo), np.int64)
    count = 0
    for n in range(g.n):
        for co in range(g.co):
            c0 = (co // g.cog) * g.cig
            for oh in range(g.ho):
                for ow in range(g.wo):
                    a, left = apply_policy(0 if bias is None else int(bias[co]), acc_bits, policy)
                    for ci in range(g.cig):
                        for kh in range(g.kh):
                            for kw in range(g.kw):
                                ih, iw = oh * g.sh + kh - g.top, ow * g.sw + kw - g.left
                                inside = 0 <= ih < g.h and 0 <= iw < g.w
                                xv = xs[n][c0 + ci][ih][iw] if inside else int(pad_value)
                                a, o = apply_policy(a + xv * ws[co][ci][kh][kw], acc_bits, policy)
                                left |= o
                    acc[n, co, oh, ow] = a
                    count += left
    return acc, count


def dense_acc_reference(x, w, bias, acc_bits, policy):
    xs, ws = np.asarray(x).tolist(), np.asarray(w).tolist()
    acc = np.zeros((len(xs), len(ws)), np.int64)
    count = 0
    for n, xrow in enumerate(xs):
        for co, wrow in enumerate(ws):
            a, left = apply_policy(0 if bias is None else int(bias[co]), acc_bits, policy)
            for xv, wv in zip(xrow, wrow):
                a, o = apply_policy(a + xv * wv, acc_bits, policy)
                left |= o
            acc[n, co] = a
            count += left
    return acc, count


# ---------------------------------------------------------------------------------------------------------
# Parallel launchers (threads.launcher): each kernel's chunks on numba's threads; here, beside the kernels,
# because numba's cache keys a function on its own file
# ---------------------------------------------------------------------------------------------------------
@launcher(_sequential_kernel)
@njit(parallel=True, nogil=True, cache=True)
def _sequential_kernel_launch(n_tasks, chunks,
                              planes, w, init, init_over, sh, sw, groups, lo, hi, mask, bits64, saturate, acc, over):
    for c in prange(chunks):
        _sequential_kernel(n_tasks * c // chunks, n_tasks * (c + 1) // chunks,
                           planes, w, init, init_over, sh, sw, groups, lo, hi, mask, bits64, saturate, acc, over)
