"""Pack and unpack integer arrays at a declared bit width (the `.qnn` tensor blob format).

Stream layout (see docs/qnn-format.md, "Bit packing"):

- little-endian bit order: element ``i`` occupies bits ``[i*b, (i+1)*b)`` of the stream, least
  significant bit first; stream bit ``k`` is bit ``k % 8`` of byte ``k // 8``;
- signed values are stored as ``b``-bit two's complement, unsigned values as plain ``b``-bit binary;
- the stream is ``ceil(N*b/8)`` bytes long; the unused high bits of the last byte are zero.

The bit stream is a little-endian :class:`bitarray.bitarray`: numpy does the per-element arithmetic
(splitting values into bit planes and back, vectorised over elements), bitarray turns the bit planes
into the byte stream (``bitarray.pack`` / ``bitarray.unpack``).  Widths 8, 16, 32 and 64 are whole
little-endian machine words, identical to that stream, and take a direct numpy path.
"""

from __future__ import annotations

import numpy as np
from bitarray import bitarray

from simulator.errors import HwsimError

MIN_BITS = 1
MAX_BITS = 64

# Elements handled per chunk on the bit-plane path: bounds the temporary (chunk x bits) byte matrix
# to a few MiB whatever the tensor size.
_CHUNK = 1 << 16

_BYTE_ALIGNED = (8, 16, 32, 64)


def packed_nbytes(count: int, bits: int) -> int:
    """Length in bytes of the packed stream of `count` elements at `bits` bits (Python ints, exact)."""
    return (count * bits + 7) // 8


def value_range(bits: int, signed: bool) -> tuple[int, int]:
    """Smallest and largest value representable in `bits` bits (two's complement when signed)."""
    if signed:
        return -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    return 0, (1 << bits) - 1


def result_dtype(bits: int, signed: bool) -> np.dtype:
    """Smallest numpy integer dtype holding every `bits`-bit value (int8/uint8 ... int64/uint64)."""
    for width in (8, 16, 32, 64):
        if bits <= width:
            return np.dtype(f"{'i' if signed else 'u'}{width // 8}")
    raise ValueError(bits)  # unreachable after _check_width


def _check_width(bits, signed) -> None:
    if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)):
        raise HwsimError(f"bit width must be an integer, got {bits!r}", field="bits")
    if not MIN_BITS <= bits <= MAX_BITS:
        raise HwsimError(f"bit width must be {MIN_BITS}..{MAX_BITS}, got {bits}", field="bits")
    if not isinstance(signed, (bool, np.bool_)):
        raise HwsimError(f"signed must be true or false, got {signed!r}", field="signed")


def pack(values, bits: int, signed: bool) -> bytes:
    """Pack the integer array `values` (flattened in C order) at `bits` bits per element.

    Raises HwsimError if a value does not fit in (`bits`, `signed`) or the array is not integer.
    """
    _check_width(bits, signed)
    bits, signed = int(bits), bool(signed)
    arr = np.asarray(values)
    if arr.dtype == np.bool_:
        arr = arr.astype(np.uint8)
    if arr.dtype.kind not in "iu":
        raise HwsimError(f"values must be an integer array, got dtype {arr.dtype}", field="values")
    flat = arr.reshape(-1)
    count = flat.size
    if count:
        lo, hi = value_range(bits, signed)
        vmin, vmax = int(flat.min()), int(flat.max())  # Python ints: no mixed-sign numpy comparison
        if vmin < lo or vmax > hi:
            bad = vmin if vmin < lo else vmax
            kind = "signed" if signed else "unsigned"
            raise HwsimError(
                f"value {bad} does not fit in {bits}-bit {kind} range [{lo}, {hi}]", field="values"
            )
    if bits in _BYTE_ALIGNED:
        dtype = np.dtype(f"<{'i' if signed else 'u'}{bits // 8}")
        return flat.astype(dtype, copy=False).tobytes()

    # Two's complement modulo 2^64, then only the low `bits` bits are used.
    if flat.dtype.kind == "u":
        words = flat.astype(np.uint64, copy=False)
    else:
        words = flat.astype(np.int64, copy=False).view(np.uint64)
    stream = bitarray(endian="little")
    shifts = np.arange(bits, dtype=np.uint64)
    one = np.uint64(1)
    for start in range(0, count, _CHUNK):
        chunk = words[start : start + _CHUNK]
        planes = np.empty((chunk.size, bits), dtype=np.uint8)  # planes[i, j] = bit j of element i
        for j in range(bits):
            planes[:, j] = (chunk >> shifts[j]) & one
        stream.pack(planes.tobytes())  # one byte per bit, row-major: exactly the stream order
    return stream.tobytes()  # pad bits of the last byte are zero


def unpack(data: bytes, count: int, bits: int, signed: bool) -> np.ndarray:
    """Inverse of :func:`pack`: a 1-D array of `count` values in the smallest fitting dtype.

    `data` must be exactly ``ceil(count*bits/8)`` bytes with zero padding bits (HwsimError otherwise).
    """
    _check_width(bits, signed)
    bits, signed = int(bits), bool(signed)
    if isinstance(count, bool) or not isinstance(count, (int, np.integer)) or count < 0:
        raise HwsimError(f"element count must be a non-negative integer, got {count!r}", field="count")
    count = int(count)
    data = bytes(data) if not isinstance(data, (bytes, bytearray, memoryview)) else data
    expected = packed_nbytes(count, bits)
    if len(data) != expected:
        raise HwsimError(
            f"{count} values of {bits} bits need {expected} bytes, got {len(data)}", field="data"
        )
    out_dtype = result_dtype(bits, signed)
    if bits in _BYTE_ALIGNED:
        dtype = np.dtype(f"<{'i' if signed else 'u'}{bits // 8}")
        return np.frombuffer(data, dtype=dtype, count=count).astype(out_dtype)  # native order copy

    stream = bitarray(endian="little")
    stream.frombytes(bytes(data))
    nbits = count * bits
    if stream[nbits:].any():
        raise HwsimError("padding bits after the last value are not zero", field="data")
    words = np.empty(count, dtype=np.uint64)
    for start in range(0, count, _CHUNK):
        stop = min(start + _CHUNK, count)
        planes = np.frombuffer(stream[start * bits : stop * bits].unpack(), dtype=np.uint8)
        planes = planes.reshape(stop - start, bits)
        acc = np.zeros(stop - start, dtype=np.uint64)
        for j in range(bits):
            acc |= planes[:, j].astype(np.uint64) << np.uint64(j)
        words[start:stop] = acc
    if signed:
        # Sign-extend: subtract 2^bits where the top bit is set (bits <= 63 here, so no overflow).
        values = words.view(np.int64)
        values -= ((words >> np.uint64(bits - 1)) & np.uint64(1)).view(np.int64) << np.int64(bits)
        return values.astype(out_dtype)
    return words.astype(out_dtype)
