"""ENQ (seed 004, section III): per-layer E-bit exponent-free nonuniform quantizer QE and converter CE.

Domain: an activation is the uniform q_m-bit fixed-point value x, an integer whose real value is x * 2^-F.
For layer i with E_i = `e_bits` (1 <= E <= q_m <= 32), the seed defines

    QE:  x -> floor(x / 2^(q_m - E))   if x <= 2^q_m - 1
         x -> 2^E - 1                  otherwise (saturation)
    CE:  k -> k * 2^(q_m - E)          (the QP P_{i,k} has fixed-point value V_{i,k} = k * 2^(q_m - E) * 2^-F)

Hardware: QE is a right shifter by a = q_m - E (DEC1 decodes the layer index L_idx into the shift select)
plus the saturation compare; CE is a left shifter by the same amount. Decoding returns the *bottom* of the
bin (floor quantization, no midpoint offset), exactly as the seed's V_{i,k}.

Negative inputs: the seed quantizes post-ReLU activations, so x >= 0 always. A negative x is clamped to code
0, as a ReLU in front of QE would; floor(x / 2^a) would otherwise give a negative code that does not fit in
E unsigned bits.
"""

from __future__ import annotations

import numpy as np

from simulator.errors import HwsimError
from simulator.units.rounding import as_int64


def _check_bits(e_bits, qm_bits) -> tuple[int, int]:
    for name, v in (("e_bits", e_bits), ("qm_bits", qm_bits)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            raise HwsimError(f"ENQ {name} must be an integer, got {v!r}")
    e, qm = int(e_bits), int(qm_bits)
    if not 1 <= e <= qm <= 32:
        raise HwsimError(f"ENQ needs 1 <= E <= q_m <= 32, got E={e}, q_m={qm}")
    return e, qm


def qe_encode(x, e_bits: int, qm_bits: int) -> np.ndarray:
    """QE: q_m-bit fixed-point integers -> E-bit codes (right shift by q_m - E, saturating)."""
    e, qm = _check_bits(e_bits, qm_bits)
    x = as_int64(x, "x")
    top = (1 << qm) - 1
    codes = np.clip(x, 0, top) >> (qm - e)          # x > 2^qm - 1 -> top >> a = 2^E - 1; x < 0 -> 0
    return codes


def ce_decode(codes, e_bits: int, qm_bits: int) -> np.ndarray:
    """CE: E-bit codes -> q_m-bit fixed-point integers (left shift by q_m - E)."""
    e, qm = _check_bits(e_bits, qm_bits)
    codes = as_int64(codes, "ENQ codes")
    bad = (codes < 0) | (codes >= (1 << e))
    if bad.any():
        raise HwsimError(f"ENQ code {int(codes[bad].ravel()[0])} out of range for E={e} (0..{(1 << e) - 1})")
    return codes << (qm - e)
