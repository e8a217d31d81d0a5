"""Codebook LUT: weight index -> fixed-point value, one table per group of output channels.

    lut_decode(indices, table, channel_group)[c, ...] = table[channel_group[c], indices[c, ...]]

- `indices`: integer array whose axis 0 is the output channel (e.g. conv weights [C_out, C_in, kH, kW]).
- `table`: integer array [G, E]: G groups (G = 1: one codebook per tensor, as Deep Compression; G > 1:
  per-channel-group palettes, as Core ML), E entries of fixed-point values.
- `channel_group`: integer array [C_out] giving each output channel's group (None: all channels use group 0,
  allowed only when G = 1).
An index outside 0 .. E - 1 or a group outside 0 .. G - 1 is an HwsimError (the engine also checks at load).
Hardware: one SRAM/register-file read of an E-entry table per weight (the caller counts reads).
"""

from __future__ import annotations

import numpy as np

from simulator.errors import HwsimError
from simulator.units.rounding import as_int64


def _check(indices, table, channel_group):
    idx = as_int64(indices, "codebook indices")
    tab = as_int64(table, "codebook table")
    if tab.ndim != 2 or tab.shape[0] < 1 or tab.shape[1] < 1:
        raise HwsimError(f"codebook table must be [groups, entries] with both >= 1, got shape {tab.shape}")
    if idx.ndim < 1:
        raise HwsimError("codebook indices need an output-channel axis (axis 0)")
    g, e = tab.shape
    if channel_group is None:
        if g != 1:
            raise HwsimError(f"codebook with {g} groups needs a channel_group map")
        grp = np.zeros(idx.shape[0], dtype=np.int64)
    else:
        grp = as_int64(channel_group, "channel_group")
        if grp.ndim != 1 or grp.shape[0] != idx.shape[0]:
            raise HwsimError(f"channel_group must have one entry per output channel ({idx.shape[0]}), "
                             f"got shape {grp.shape}")
    badg = (grp < 0) | (grp >= g)
    if badg.any():
        raise HwsimError(f"channel_group value {int(grp[badg][0])} out of range (0..{g - 1})")
    bad = (idx < 0) | (idx >= e)
    if bad.any():
        raise HwsimError(f"codebook index {int(idx[bad].ravel()[0])} out of range (0..{e - 1})")
    return idx, tab, grp


def lut_decode(indices, table, channel_group=None) -> np.ndarray:
    """Decode codebook indices to fixed-point values (int64), table chosen per output channel."""
    idx, tab, grp = _check(indices, table, channel_group)
    rows = grp.reshape((-1,) + (1,) * (idx.ndim - 1))
    return tab[rows, idx]


def lut_decode_reference(indices, table, channel_group=None) -> np.ndarray:
    """Element-by-element reference of `lut_decode`."""
    idx, tab, grp = _check(indices, table, channel_group)
    out = np.empty(idx.shape, dtype=np.int64)
    for pos in np.ndindex(idx.shape):
        out[pos] = int(tab[int(grp[pos[0]]), int(idx[pos])])
    return out
