"""Binarizer: sign bits of binary (XNOR) layers, Larq Compute Engine convention.

    sign_bits(x)    = 1 if x < 0 else 0      (bit 1 encodes -1, bit 0 encodes +1; sign(0) = +1)
    bits_to_pm1(b)  = +1 if b == 0 else -1   (int8)

Hence bits_to_pm1(sign_bits(x)) = sign(x) with sign(0) = +1. A product of two +-1 values is
+1 exactly when the bits are equal, so a K-term dot product is K - 2 * popcount(a XOR w). Bit packing
(LSB first along channels) is the storage format's concern, not this unit's.
"""

from __future__ import annotations

import numpy as np

from simulator.errors import HwsimError
from simulator.units.rounding import as_int64


def sign_bits(x) -> np.ndarray:
    """uint8 bits: 1 for x < 0 (value -1), 0 for x >= 0 (value +1)."""
    a = np.asarray(x)
    if a.dtype.kind == "f":
        if np.isnan(a).any():
            raise HwsimError("sign_bits: NaN has no sign")
        return (a < 0).astype(np.uint8)
    return (as_int64(a, "x") < 0).astype(np.uint8)


def bits_to_pm1(bits) -> np.ndarray:
    """int8 +-1 values from bits (0 -> +1, 1 -> -1); any other bit value is an error."""
    b = as_int64(bits, "bits")
    bad = (b != 0) & (b != 1)
    if bad.any():
        raise HwsimError(f"binary bit must be 0 or 1, got {int(b[bad].ravel()[0])}")
    return (1 - 2 * b).astype(np.int8)
