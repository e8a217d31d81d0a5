"""The binary container of a `.qnn` file: fixed prefix, JSON header, packed tensor blobs.

Byte layout (all integers little-endian; full reference in docs/qnn-format.md):

    offset  size  field
    0       8     magic  b"HWSIMQNN"
    8       2     u16 format version (FORMAT_VERSION)
    10      2     u16 flags (0; every bit reserved)
    12      8     u64 header length H in bytes
    20      4     u32 CRC-32 of the H header bytes
    24      H     header: a UTF-8 JSON object
    24+H    ...   data section: the tensor blobs, located by the header's "tensors" table

The reader trusts nothing: every size is checked against the limits and the real file size, every
tensor entry is type-checked, and checksums are verified *before* anything of a declared size is
allocated.  Every failure is one :class:`HwsimError` naming the file and the offending item.
"""

from __future__ import annotations

import json
import math
import struct
import zlib

import numpy as np

from simulator.errors import HwsimError
from simulator.fileio import atomic_write_bytes
from simulator.qnn import bitpack

MAGIC = b"HWSIMQNN"
FORMAT_VERSION = 1

_PREFIX = struct.Struct("<8sHHQI")  # magic, version, flags, header length, header CRC-32
PREFIX_SIZE = _PREFIX.size  # 24

MAX_HEADER_BYTES = 64 << 20  # 64 MiB
MAX_NDIM = 8
MAX_ELEMENTS = 1 << 31  # per tensor
TENSOR_KEYS = ("shape", "bits", "signed", "offset", "nbytes", "crc32")
RESERVED_HEADER_KEYS = ("format_version", "tensors")


# --------------------------------------------------------------------------------------------- write


def write_container(path, header: dict, tensors: dict[str, tuple[np.ndarray, int, bool]]) -> None:
    """Write a `.qnn` container atomically.

    `header` is any JSON-serialisable dict (plain Python types, no NaN/Infinity); its
    "format_version" and "tensors" keys are reserved and (re)written here, everything else is
    stored untouched.  `tensors` maps name -> (integer array, bits, signed); blobs are stored in
    the dict's order.  Nothing is written if any value is invalid.
    """
    atomic_write_bytes(path, container_bytes(header, tensors, source=str(path)))


def container_bytes(header: dict, tensors: dict[str, tuple[np.ndarray, int, bool]], source: str = "<bytes>") -> bytes:
    """The bytes of a `.qnn` container (see :func:`write_container`), for staging in an output plan."""
    src = source
    if not isinstance(header, dict):
        raise HwsimError(f"header must be a dict, got {type(header).__name__}", source=src, field="header")
    if not isinstance(tensors, dict):
        raise HwsimError(f"tensors must be a dict, got {type(tensors).__name__}", source=src, field="tensors")

    table: dict[str, dict] = {}
    blobs: list[bytes] = []
    offset = 0
    for name, item in tensors.items():
        field = f"tensors.{name}"
        if not isinstance(name, str) or not name:
            raise HwsimError(f"tensor name must be a non-empty string, got {name!r}", source=src, field="tensors")
        if not isinstance(item, tuple) or len(item) != 3:
            raise HwsimError("must be a (values, bits, signed) tuple", source=src, field=field)
        values, bits, signed = item
        if not isinstance(values, np.ndarray):
            raise HwsimError(f"values must be a numpy array, got {type(values).__name__}", source=src, field=field)
        if values.ndim > MAX_NDIM:
            raise HwsimError(
                f"has {values.ndim} dimensions, at most {MAX_NDIM} allowed", source=src, field=f"{field}.shape"
            )
        if any(n > MAX_ELEMENTS for n in values.shape) or values.size > MAX_ELEMENTS:
            raise HwsimError(
                f"shape {values.shape} exceeds the limit of {MAX_ELEMENTS} elements", source=src, field=f"{field}.shape"
            )
        try:
            blob = bitpack.pack(values, bits, signed)
        except HwsimError as exc:
            raise HwsimError(exc.message, source=src, field=f"{field}.{exc.field}" if exc.field else field) from None
        table[name] = {
            "shape": [int(n) for n in values.shape],
            "bits": int(bits),
            "signed": bool(signed),
            "offset": offset,
            "nbytes": len(blob),
            "crc32": zlib.crc32(blob),
        }
        blobs.append(blob)
        offset += len(blob)

    full = {k: v for k, v in header.items() if k not in RESERVED_HEADER_KEYS}
    full["format_version"] = FORMAT_VERSION
    full["tensors"] = table
    try:
        text = json.dumps(full, allow_nan=False, ensure_ascii=False, separators=(",", ":"))
    except (TypeError, ValueError, RecursionError) as exc:
        raise HwsimError(f"header is not strict JSON: {exc}", source=src, field="header") from None
    try:
        header_bytes = text.encode("utf-8")
    except UnicodeEncodeError as exc:  # lone surrogates
        raise HwsimError(f"header is not valid UTF-8 text: {exc}", source=src, field="header") from None
    if len(header_bytes) > MAX_HEADER_BYTES:
        raise HwsimError(
            f"header is {len(header_bytes)} bytes, more than the limit of {MAX_HEADER_BYTES}",
            source=src,
            field="header",
        )
    prefix = _PREFIX.pack(MAGIC, FORMAT_VERSION, 0, len(header_bytes), zlib.crc32(header_bytes))
    return b"".join([prefix, header_bytes, *blobs])


# ---------------------------------------------------------------------------------------------- read


def read_container(path, check_table=None) -> tuple[dict, dict[str, np.ndarray]]:
    """Read and fully validate a `.qnn` container.

    Returns ``(header, tensors)``: the header dict exactly as stored (including the "format_version"
    and "tensors" table, which gives each tensor's bits and signedness) and name -> numpy array of the
    declared shape in the smallest fitting integer dtype (see bitpack.result_dtype).
    `check_table(header, table)`, if given, runs after the tensor table is validated and before any blob is
    checksummed or unpacked (`table`: name -> (shape, bits, signed)); it may raise HwsimError to refuse the file
    (e.g. a declared size beyond what the caller accepts).
    """
    src = str(path)
    try:
        with open(path, "rb") as f:
            raw = f.read(len(MAGIC))
            if raw == MAGIC:  # don't slurp a large non-.qnn file just to reject its magic
                raw += f.read()
    except FileNotFoundError:
        raise HwsimError("file not found", source=src) from None
    except IsADirectoryError:
        raise HwsimError("is a directory, not a .qnn file", source=src) from None
    except OSError as exc:
        raise HwsimError(f"cannot read file: {exc.strerror or exc}", source=src) from None
    return parse_container(raw, source=src, check_table=check_table)


def parse_container(raw: bytes, source: str = "<bytes>", check_table=None) -> tuple[dict, dict[str, np.ndarray]]:
    """Validate and decode the bytes of a `.qnn` container (see :func:`read_container`)."""

    def fail(message: str, field: str) -> HwsimError:
        return HwsimError(message, source=source, field=field)

    # --- fixed prefix
    truncated = f"truncated file: {len(raw)} bytes, a .qnn file starts with a {PREFIX_SIZE}-byte prefix"
    if len(raw) < len(MAGIC) and MAGIC.startswith(raw):
        raise fail(truncated, "header")
    if raw[: len(MAGIC)] != MAGIC:
        raise fail("not a .qnn file (bad magic bytes)", "magic")
    if len(raw) < PREFIX_SIZE:
        raise fail(truncated, "header")
    _, version, flags, header_len, header_crc = _PREFIX.unpack_from(raw)
    if version > FORMAT_VERSION:
        raise fail(
            f"written by a newer hwsim (format version {version}; this hwsim reads version {FORMAT_VERSION}): "
            "upgrade hwsim to read it",
            "format_version",
        )
    if version < 1:
        raise fail(f"invalid format version {version}", "format_version")
    if flags != 0:
        raise fail(f"unknown flags 0x{flags:04x} (must be 0 in format version {FORMAT_VERSION})", "flags")
    if header_len > MAX_HEADER_BYTES:
        raise fail(f"header length {header_len} exceeds the limit of {MAX_HEADER_BYTES} bytes", "header")
    if header_len > len(raw) - PREFIX_SIZE:
        raise fail(
            f"truncated file: header length {header_len} but only {len(raw) - PREFIX_SIZE} bytes follow the prefix",
            "header",
        )
    header_bytes = raw[PREFIX_SIZE : PREFIX_SIZE + header_len]
    if zlib.crc32(header_bytes) != header_crc:
        raise fail("header checksum mismatch (file corrupted)", "header")
    data_start = PREFIX_SIZE + header_len
    data_len = len(raw) - data_start

    # --- header JSON
    header = _parse_header_json(header_bytes, fail)
    fv = header.get("format_version")
    if "format_version" not in header:
        raise fail("required key is missing", "format_version")
    if not _is_int(fv) or fv != version:
        raise fail(f"must be the integer {version} (the prefix version), got {_show(fv)}", "format_version")
    if "tensors" not in header:
        raise fail("required key is missing", "tensors")
    table = header["tensors"]
    if not isinstance(table, dict):
        raise fail(f"must be an object, got {_json_type(table)}", "tensors")

    # --- tensor table: types, limits, sizes, placement (no allocation of declared sizes yet)
    entries = []
    for name, entry in table.items():
        field = f"tensors.{name}"
        if not name:
            raise fail("tensor name must not be empty", "tensors")
        if not isinstance(entry, dict):
            raise fail(f"must be an object, got {_json_type(entry)}", field)
        missing = [k for k in TENSOR_KEYS if k not in entry]
        if missing:
            raise fail(f"missing key(s) {', '.join(missing)}", field)
        extra = [k for k in entry if k not in TENSOR_KEYS]
        if extra:
            raise fail(f"unexpected key(s) {', '.join(extra)}", field)

        shape = entry["shape"]
        if not isinstance(shape, list):
            raise fail(f"must be a list of non-negative integers, got {_json_type(shape)}", f"{field}.shape")
        if len(shape) > MAX_NDIM:
            raise fail(f"has {len(shape)} dimensions, at most {MAX_NDIM} allowed", f"{field}.shape")
        for i, n in enumerate(shape):
            if not _is_int(n) or n < 0:
                raise fail(f"dimension {i} must be a non-negative integer, got {_show(n)}", f"{field}.shape")
            if n > MAX_ELEMENTS:
                raise fail(f"dimension {i} is {n}, more than the limit of {MAX_ELEMENTS}", f"{field}.shape")
        count = math.prod(shape)  # exact Python int: no overflow
        if count > MAX_ELEMENTS:
            raise fail(
                f"shape {_show(shape)} has {count} elements, more than the limit of {MAX_ELEMENTS}", f"{field}.shape"
            )

        bits = entry["bits"]
        if not _is_int(bits) or not bitpack.MIN_BITS <= bits <= bitpack.MAX_BITS:
            raise fail(f"must be an integer {bitpack.MIN_BITS}..{bitpack.MAX_BITS}, got {_show(bits)}", f"{field}.bits")
        signed = entry["signed"]
        if not isinstance(signed, bool):
            raise fail(f"must be true or false, got {_show(signed)}", f"{field}.signed")
        offset = entry["offset"]
        if not _is_int(offset) or offset < 0:
            raise fail(f"must be a non-negative integer, got {_show(offset)}", f"{field}.offset")
        nbytes = entry["nbytes"]
        if not _is_int(nbytes) or nbytes < 0:
            raise fail(f"must be a non-negative integer, got {_show(nbytes)}", f"{field}.nbytes")
        expected = bitpack.packed_nbytes(count, bits)
        if nbytes != expected:
            raise fail(f"is {nbytes} but {count} values of {bits} bits take {expected} bytes", f"{field}.nbytes")
        if offset + nbytes > data_len:
            raise fail(
                f"blob [{offset}, {offset + nbytes}) lies beyond the end of the data section ({data_len} bytes)",
                f"{field}.offset",
            )
        crc = entry["crc32"]
        if not _is_int(crc) or not 0 <= crc <= 0xFFFFFFFF:
            raise fail(f"must be an integer 0..4294967295, got {_show(crc)}", f"{field}.crc32")
        entries.append((name, shape, count, bits, signed, offset, nbytes, crc))

    # Blobs must not overlap; gaps between blobs are allowed, bytes after the last blob are not.
    placed = sorted((e for e in entries if e[6] > 0), key=lambda e: e[5])
    end, prev = 0, None
    for e in placed:
        if e[5] < end:
            raise fail(f"blob [{e[5]}, {e[5] + e[6]}) overlaps tensor {prev!r}", f"tensors.{e[0]}.offset")
        end, prev = e[5] + e[6], e[0]
    if data_len > end:
        raise fail(f"{data_len - end} unexpected bytes after the last tensor blob", "data")
    if check_table is not None:  # the caller's limits on declared sizes, before anything is unpacked
        try:
            check_table(header, {e[0]: (list(e[1]), e[3], e[4]) for e in entries})
        except HwsimError as exc:
            if exc.source is None:
                raise HwsimError(exc.message, source=source, field=exc.field) from None
            raise

    # --- checksums, then decode (sizes are now proven to be within the file)
    out: dict[str, np.ndarray] = {}
    for name, shape, count, bits, signed, offset, nbytes, crc in entries:
        blob = raw[data_start + offset : data_start + offset + nbytes]
        if zlib.crc32(blob) != crc:
            raise fail("data checksum mismatch (file corrupted)", f"tensors.{name}.crc32")
        try:
            values = bitpack.unpack(blob, count, bits, signed)
        except HwsimError as exc:
            raise fail(exc.message, f"tensors.{name}") from None
        out[name] = values.reshape(shape)
    return header, out


# ------------------------------------------------------------------------------------------- helpers


def _reject_constant(name: str):
    raise ValueError(f"{name} is not allowed in a .qnn header (strict JSON)")


def _parse_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # e.g. 1e999 overflows to inf without calling parse_constant
        raise ValueError(f"number {text} is out of the float range")
    return value


def _unique_object(pairs):
    obj = {}
    for k, v in pairs:
        if k in obj:
            raise ValueError(f"duplicate key {k!r}")
        obj[k] = v
    return obj


def _parse_header_json(header_bytes: bytes, fail) -> dict:
    try:
        text = header_bytes.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise fail(f"header is not valid UTF-8 ({exc.reason} at byte {exc.start})", "header") from None
    try:
        header = json.loads(
            text,
            parse_constant=_reject_constant,
            parse_float=_parse_float,
            object_pairs_hook=_unique_object,
        )
    except RecursionError:
        raise fail("header JSON is nested too deeply", "header") from None
    except ValueError as exc:  # json.JSONDecodeError, our hooks, int digit limit
        raise fail(f"header is not valid JSON: {exc}", "header") from None
    if not isinstance(header, dict):
        raise fail(f"header must be a JSON object, got {_json_type(header)}", "header")
    return header


def _is_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _json_type(x) -> str:
    if x is None:
        return "null"
    if isinstance(x, bool):
        return "a boolean"
    if isinstance(x, (int, float)):
        return "a number"
    if isinstance(x, str):
        return "a string"
    if isinstance(x, list):
        return "a list"
    return "an object"


def _show(x, limit: int = 60) -> str:
    """A short JSON rendering of a (possibly huge) bad value for an error message."""
    try:
        text = json.dumps(x, allow_nan=True)
    except (ValueError, TypeError, RecursionError):
        text = f"<{_json_type(x)}>"
    return text if len(text) <= limit else text[: limit - 3] + "..."
