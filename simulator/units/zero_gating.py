"""Zero-operand MACs: what a zero-gated MAC PE skips (Eyeriss gates MACs on zero ifmaps).

Counts, for one conv / dense layer and a batch of inputs, the MACs whose activation operand is zero and those
whose activation or weight operand is zero, without visiting every MAC:

    zero_act  = Σ_positions [x = 0] · (how many (output, tap) pairs read that position) · K per group
                (+ padded taps when the pad value is zero)
    zero_w    = (output positions) · (zero weights)
    both      = Σ_{k, c, r, s} [w = 0] · (output positions whose tap (r, s) of channel c reads a zero)
    zero_any  = zero_act + zero_w - both

Operands are the decoded integers the multiplier sees (after zero-point subtraction, CE/CK, LUT decode).
A reference that visits every MAC is in tests/test_zero_gating.py.
"""

from __future__ import annotations

import numpy as np


def zero_operand_macs(x_values: np.ndarray, w_values: np.ndarray, stride=(1, 1), padding=(0, 0, 0, 0),
                      groups: int = 1, pad_value: int = 0) -> tuple[int, int]:
    """(MACs with a zero activation, MACs with a zero activation or weight) of a conv [N,C,H,W] x [K,C/g,R,S]
    or a dense [N,C] x [K,C] layer."""
    if x_values.ndim == 2:
        x_values = x_values[:, :, None, None]
        w_values = w_values[:, :, None, None]
    n, c_total, h, w = x_values.shape
    k_total, c, r, s = w_values.shape
    sh, sw = stride
    pt, pl, pb, pr = padding
    p = (h + pt + pb - r) // sh + 1
    q = (w + pl + pr - s) // sw + 1
    k = k_total // groups
    zero_x = np.zeros((n, c_total, h + pt + pb, w + pl + pr), bool)
    zero_x[:, :, pt:pt + h, pl:pl + w] = x_values == 0
    if pad_value == 0:
        zero_x[:, :, :pt, :] = zero_x[:, :, pt + h:, :] = True
        zero_x[:, :, :, :pl] = zero_x[:, :, :, pl + w:] = True
    # taps[c_total, r, s]: over the batch and every output position, how often tap (r, s) of channel c reads a zero.
    taps = np.empty((c_total, r, s), np.int64)
    for i in range(r):
        for j in range(s):
            window = zero_x[:, :, i:i + sh * (p - 1) + 1:sh, j:j + sw * (q - 1) + 1:sw]
            taps[:, i, j] = window.sum(axis=(0, 2, 3))
    zero_act = int(taps.sum()) * k
    zero_w_mask = (w_values == 0).reshape(groups, k, c, r, s)
    zero_w = n * p * q * int(zero_w_mask.sum())
    per_group_taps = taps.reshape(groups, c, r, s)
    both = int(np.einsum("gkcrs,gcrs->", zero_w_mask.astype(np.int64), per_group_taps))
    return zero_act, zero_act + zero_w - both
