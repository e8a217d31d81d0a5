"""The .qnn binary container, the bit packer and safe file I/O.

Round trips (hypothesis), bitpack against an independent pure-Python packer, a deterministic fuzz of
mutated files (every outcome must be a valid result or one HwsimError), and atomic-write guarantees.
"""

from __future__ import annotations

import io
import json
import os
import random
import struct
import time
import tracemalloc
import zipfile
import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from simulator import fileio
from simulator.errors import HwsimError
from simulator.qnn import bitpack
from simulator.qnn.container import (
    FORMAT_VERSION,
    MAGIC,
    PREFIX_SIZE,
    parse_container,
    read_container,
    write_container,
)

SETTINGS = settings(
    deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


# ------------------------------------------------------------------ independent reference packer


def ref_pack(values, bits):
    """Element i at bits [i*b, (i+1)*b), LSB first, two's complement: one big little-endian int."""
    acc = 0
    for i, v in enumerate(values):
        acc |= (int(v) & ((1 << bits) - 1)) << (i * bits)
    return acc.to_bytes((len(values) * bits + 7) // 8, "little")


def ref_unpack(data, count, bits, signed):
    acc = int.from_bytes(data, "little")
    out = []
    for i in range(count):
        v = (acc >> (i * bits)) & ((1 << bits) - 1)
        if signed and v >> (bits - 1):
            v -= 1 << bits
        out.append(v)
    return out


def value_range(bits, signed):
    return (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)


def array_of(values, bits, signed, shape=None):
    dtype = np.uint64 if (not signed and bits == 64) else np.int64
    arr = np.array(values, dtype=dtype)
    return arr.reshape(shape) if shape is not None else arr


# ------------------------------------------------------------------------------------ strategies


@st.composite
def tensor_specs(draw):
    bits = draw(st.integers(1, 64))
    signed = draw(st.booleans())
    shape = draw(st.lists(st.integers(0, 5), min_size=0, max_size=4))
    count = int(np.prod(shape, dtype=np.int64)) if shape else 1
    lo, hi = value_range(bits, signed)
    edges = sorted({lo, min(lo + 1, hi), 0, max(hi - 1, lo), hi, -1 if signed else 1})
    elem = st.one_of(st.sampled_from(edges), st.integers(lo, hi))
    values = draw(st.lists(elem, min_size=count, max_size=count))
    return array_of(values, bits, signed, shape), bits, signed


json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70),
    st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=8),
)
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3),
    max_leaves=12,
)
headers = st.dictionaries(
    st.text(max_size=8).filter(lambda k: k not in ("tensors", "format_version")), json_values, max_size=4
)
tensor_names = st.text(min_size=1, max_size=8)


# -------------------------------------------------------------------------------------- round trip


@settings(SETTINGS, max_examples=300)
@given(header=headers, tensors=st.dictionaries(tensor_names, tensor_specs(), max_size=4))
def test_round_trip(tmp_path, header, tensors):
    path = tmp_path / "m.qnn"
    write_container(path, header, tensors)
    got_header, got = read_container(path)
    assert {k: v for k, v in got_header.items() if k not in ("tensors", "format_version")} == header
    assert got_header["format_version"] == FORMAT_VERSION
    assert list(got) == list(tensors)
    for name, (values, bits, signed) in tensors.items():
        entry = got_header["tensors"][name]
        assert entry["bits"] == bits and entry["signed"] == signed and entry["shape"] == list(values.shape)
        assert got[name].shape == values.shape
        assert got[name].dtype == bitpack.result_dtype(bits, signed)
        assert [int(v) for v in got[name].ravel()] == [int(v) for v in values.ravel()]
    # Data section is exactly the packed blobs, back to back.
    header_len = struct.unpack_from("<Q", path.read_bytes(), 12)[0]
    data_len = sum((v.size * b + 7) // 8 for v, b, _ in tensors.values())
    assert path.stat().st_size == PREFIX_SIZE + header_len + data_len


# ------------------------------------------------------------------------------------------ bitpack


@SETTINGS
@given(spec=tensor_specs())
def test_bitpack_matches_reference(spec):
    values, bits, signed = spec
    flat = [int(v) for v in values.ravel()]
    data = bitpack.pack(values, bits, signed)
    assert data == ref_pack(flat, bits)
    assert bitpack.unpack(data, len(flat), bits, signed).tolist() == ref_unpack(data, len(flat), bits, signed) == flat


@pytest.mark.parametrize("bits", range(1, 65))
@pytest.mark.parametrize("signed", [False, True])
def test_bitpack_random_every_width(bits, signed):
    rng = random.Random(bits * 2 + signed)
    lo, hi = value_range(bits, signed)
    n = 1000 + bits  # lengths whose bit count is not a multiple of 8
    flat = [rng.choice((lo, hi, rng.randint(lo, hi))) for _ in range(n)]
    data = bitpack.pack(array_of(flat, bits, signed), bits, signed)
    assert len(data) == (n * bits + 7) // 8
    assert data == ref_pack(flat, bits)
    out = bitpack.unpack(data, n, bits, signed)
    assert out.dtype == bitpack.result_dtype(bits, signed)
    assert out.tolist() == flat


def test_bitpack_small_dtypes_and_bool():
    assert bitpack.pack(np.array([1, 0, 1, 1], dtype=np.uint8), 1, False) == bytes([0b1101])
    assert bitpack.pack(np.array([True, False, True]), 1, False) == bytes([0b101])
    assert bitpack.pack(np.array([-1, 0], dtype=np.int8), 3, True) == bytes([0b000111])
    assert bitpack.unpack(b"\x07", 2, 3, True).tolist() == [-1, 0]


@pytest.mark.parametrize(
    "values,bits,signed",
    [([2], 1, False), ([-1], 4, False), ([8], 4, True), ([-9], 4, True), ([2**63], 64, True), ([256], 8, False)],
)
def test_bitpack_out_of_range(values, bits, signed):
    arr = np.array(values, dtype=np.uint64 if values[0] >= 2**63 else np.int64)
    with pytest.raises(HwsimError, match="does not fit"):
        bitpack.pack(arr, bits, signed)


@pytest.mark.parametrize("bits", [0, 65, True, 4.0])
def test_bitpack_bad_width(bits):
    with pytest.raises(HwsimError):
        bitpack.pack(np.zeros(3, dtype=np.int64), bits, False)


def test_bitpack_rejects_floats_and_bad_length_and_padding():
    with pytest.raises(HwsimError, match="integer array"):
        bitpack.pack(np.zeros(3), 4, False)
    with pytest.raises(HwsimError, match="need 2 bytes"):
        bitpack.unpack(b"\x00", 3, 4, False)
    with pytest.raises(HwsimError, match="padding"):
        bitpack.unpack(b"\x00\xf0", 3, 4, False)


def test_file_sizes(tmp_path):
    path = tmp_path / "sizes.qnn"
    rng = np.random.default_rng(1)
    write_container(path, {}, {"a": (rng.integers(0, 16, 1000), 4, False)})
    header, _ = read_container(path)
    assert header["tensors"]["a"]["nbytes"] == 500
    header_len = struct.unpack_from("<Q", path.read_bytes(), 12)[0]
    assert path.stat().st_size - PREFIX_SIZE - header_len == 500

    write_container(path, {}, {"b": (rng.integers(0, 2, 1000), 1, False)})
    header, tensors = read_container(path)
    assert header["tensors"]["b"]["nbytes"] == 125
    header_len = struct.unpack_from("<Q", path.read_bytes(), 12)[0]
    assert path.stat().st_size - PREFIX_SIZE - header_len == 125
    assert tensors["b"].dtype == np.uint8


def test_bitpack_speed():
    rng = np.random.default_rng(2)
    values = rng.integers(-8, 8, 1_000_000)
    t0 = time.perf_counter()
    data = bitpack.pack(values, 4, True)
    out = bitpack.unpack(data, values.size, 4, True)
    assert time.perf_counter() - t0 < 2.0
    assert np.array_equal(out, values)


# ------------------------------------------------------------------------- hand-made bad files


def build(header: dict, data: bytes = b"", *, version=FORMAT_VERSION, flags=0, header_text=None, crc=None,
          header_len=None) -> bytes:
    """Assemble a container from parts, with optional inconsistencies."""
    text = header_text if header_text is not None else json.dumps(header, separators=(",", ":"))
    hb = text.encode("utf-8") if isinstance(text, str) else text
    return (
        struct.pack("<8sHHQI", MAGIC, version, flags, len(hb) if header_len is None else header_len,
                    zlib.crc32(hb) if crc is None else crc)
        + hb + data
    )


def good_parts():
    """A valid (header, data) pair with a 3x5 4-bit signed tensor and a 7-element 13-bit one."""
    a = np.arange(-7, 8).reshape(3, 5)
    b = np.array([0, 1, 8191, 4096, 17, 0, 5])
    da, db = bitpack.pack(a, 4, True), bitpack.pack(b, 13, False)
    header = {
        "graph": {"name": "t"},
        "format_version": 1,
        "tensors": {
            "a": {"shape": [3, 5], "bits": 4, "signed": True, "offset": 0, "nbytes": len(da), "crc32": zlib.crc32(da)},
            "b": {"shape": [7], "bits": 13, "signed": False, "offset": len(da), "nbytes": len(db),
                  "crc32": zlib.crc32(db)},
        },
    }
    return header, da + db


def check_bad(raw: bytes, field: str | None = None, match: str | None = None) -> HwsimError:
    with pytest.raises(HwsimError) as info:
        parse_container(raw, source="x.qnn")
    err = info.value
    assert err.source == "x.qnn"
    if field is not None:
        assert err.field == field, err.line()
    if match is not None:
        assert match in err.message, err.line()
    return err


def test_good_parts_parse():
    header, data = good_parts()
    got_header, tensors = parse_container(build(header, data))
    assert got_header == header
    assert tensors["a"].tolist() == np.arange(-7, 8).reshape(3, 5).tolist()
    assert tensors["b"].tolist() == [0, 1, 8191, 4096, 17, 0, 5]


def test_structural_errors():
    header, data = good_parts()
    check_bad(b"", "header", "truncated")
    check_bad(b"HWSIM", "header", "truncated")
    check_bad(b"PK\x03\x04" + bytes(40), "magic")
    check_bad(build(header, data)[:20], "header", "truncated")
    err = check_bad(build(header, data, version=2), "format_version", "written by a newer hwsim")
    assert err.line().startswith("x.qnn: format_version: written by a newer hwsim")
    check_bad(build(header, data, version=0), "format_version")
    check_bad(build(header, data, flags=1), "flags")
    check_bad(build(header, data, header_len=(64 << 20) + 1), "header", "limit")
    check_bad(build(header, data, header_len=10**6), "header", "truncated")
    check_bad(build(header, data, crc=0), "header", "checksum")
    check_bad(build(header, data)[:-1], "tensors.b.offset", "beyond")
    check_bad(build(header, data + b"\x00"), "data", "after the last tensor")
    bad = bytearray(build(header, data))
    bad[-1] ^= 0x01
    check_bad(bytes(bad), "tensors.b.crc32", "checksum")


@pytest.mark.parametrize(
    "text,match",
    [
        ("[1, 2]", "JSON object"),
        ("{", "not valid JSON"),
        ('{"a": NaN}', "NaN"),
        ('{"a": -Infinity}', "Infinity"),
        ('{"a": 1e999}', "float range"),
        ('{"a": 1, "a": 2}', "duplicate"),
        ("[" * 100000 + "]" * 100000, "nested"),
    ],
)
def test_strict_json(text, match):
    check_bad(build({}, header_text=text), "header", match)


def test_bad_utf8():
    check_bad(build({}, header_text=b'{"a": "\xff"}'), "header", "UTF-8")


def edit(header: dict, name: str, **changes) -> dict:
    h = json.loads(json.dumps(header))
    for k, v in changes.items():
        if v is _DELETE:
            del h["tensors"][name][k]
        else:
            h["tensors"][name][k] = v
    return h


_DELETE = object()


@pytest.mark.parametrize(
    "changes,field,match",
    [
        ({"bits": True}, "tensors.a.bits", "integer"),
        ({"bits": 0}, "tensors.a.bits", "1..64"),
        ({"bits": 65}, "tensors.a.bits", "1..64"),
        ({"bits": 4.0}, "tensors.a.bits", "integer"),
        ({"signed": 1}, "tensors.a.signed", "true or false"),
        ({"shape": [3, -5]}, "tensors.a.shape", "non-negative"),
        ({"shape": [3, False]}, "tensors.a.shape", "non-negative integer"),
        ({"shape": "3x5"}, "tensors.a.shape", "list"),
        ({"shape": [1] * 9}, "tensors.a.shape", "dimensions"),
        ({"shape": [0, 2**40]}, "tensors.a.shape", "limit"),
        ({"shape": [10**6, 10**6]}, "tensors.a.shape", "1000000000000 elements"),
        ({"offset": -1}, "tensors.a.offset", "non-negative"),
        ({"offset": 1}, "tensors.b.offset", "overlaps"),
        ({"nbytes": 7}, "tensors.a.nbytes", "take 8 bytes"),
        ({"crc32": 2**32}, "tensors.a.crc32", "0..4294967295"),
        ({"crc32": None}, "tensors.a.crc32", "integer"),
        ({"bits": _DELETE}, "tensors.a", "missing key(s) bits"),
        ({"extra": 1}, "tensors.a", "unexpected key(s) extra"),
    ],
)
def test_tensor_table_errors(changes, field, match):
    header, data = good_parts()
    check_bad(build(edit(header, "a", **changes), data), field, match)


def test_header_level_errors():
    header, data = good_parts()
    for h, field in [
        ({k: v for k, v in header.items() if k != "tensors"}, "tensors"),
        ({**header, "tensors": []}, "tensors"),
        ({**header, "tensors": {"a": 5}}, "tensors.a"),
        ({**header, "tensors": {"": header["tensors"]["a"]}}, "tensors"),
        ({**header, "format_version": True}, "format_version"),
        ({**header, "format_version": 2}, "format_version"),
        ({k: v for k, v in header.items() if k != "format_version"}, "format_version"),
    ]:
        check_bad(build(h, data), field)


def test_huge_declared_tensor_fails_fast_without_allocating():
    header = {
        "format_version": 1,
        "tensors": {"w": {"shape": [10**6, 10**6], "bits": 8, "signed": False, "offset": 0,
                          "nbytes": 10**12, "crc32": 0}},
    }
    raw = build(header, b"\x00" * 16)
    tracemalloc.start()
    try:
        t0 = time.perf_counter()
        err = check_bad(raw, "tensors.w.shape", "elements")
        elapsed = time.perf_counter() - t0
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert "1000000000000" in err.message
    assert elapsed < 1.0
    assert peak < 10 * 2**20


def test_huge_nbytes_within_limits_is_checked_against_file():
    # A legal element count whose blob is not in the file: rejected before allocating.
    header = {
        "format_version": 1,
        "tensors": {"w": {"shape": [2**31], "bits": 64, "signed": True, "offset": 0, "nbytes": 2**34, "crc32": 0}},
    }
    tracemalloc.start()
    try:
        check_bad(build(header, b""), "tensors.w.offset", "beyond")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 10 * 2**20


def test_gaps_between_blobs_are_allowed():
    header, data = good_parts()
    h = edit(header, "b", offset=header["tensors"]["b"]["offset"] + 3)
    _, tensors = parse_container(build(h, data[:8] + b"\xaa\xbb\xcc" + data[8:]))
    assert tensors["b"].tolist() == [0, 1, 8191, 4096, 17, 0, 5]


def test_nonzero_padding_bits_rejected():
    header = {"format_version": 1, "tensors": {"a": {"shape": [3], "bits": 4, "signed": False, "offset": 0,
                                                     "nbytes": 2, "crc32": zlib.crc32(b"\x21\xf3")}}}
    check_bad(build(header, b"\x21\xf3"), "tensors.a", "padding")


def test_read_missing_file_and_directory(tmp_path):
    with pytest.raises(HwsimError, match="file not found"):
        read_container(tmp_path / "nope.qnn")
    with pytest.raises(HwsimError):
        read_container(tmp_path)


def test_write_errors(tmp_path):
    p = tmp_path / "w.qnn"
    with pytest.raises(HwsimError) as info:
        write_container(p, {"x": float("nan")}, {})
    assert info.value.field == "header"
    with pytest.raises(HwsimError):
        write_container(p, {"x": np.int64(3)}, {})  # numpy scalars are not JSON
    with pytest.raises(HwsimError) as info:
        write_container(p, {}, {"w": (np.array([1.5]), 4, False)})
    assert info.value.field == "tensors.w.values"
    with pytest.raises(HwsimError) as info:
        write_container(p, {}, {"w": (np.array([1]), 0, False)})
    assert info.value.field == "tensors.w.bits"
    with pytest.raises(HwsimError):
        write_container(p, {}, {"w": (np.zeros((1,) * 9, dtype=np.int64), 4, False)})
    with pytest.raises(HwsimError):
        write_container(p, {}, {"w": [1, 2]})
    assert not p.exists()


def test_reserved_header_keys_are_rewritten(tmp_path):
    p = tmp_path / "r.qnn"
    write_container(p, {"format_version": 99, "tensors": "junk", "g": 1}, {"a": (np.array([1, 2]), 2, False)})
    header, tensors = read_container(p)
    assert header["format_version"] == FORMAT_VERSION and header["g"] == 1
    assert set(header["tensors"]) == {"a"}
    # A header read back can be written again unchanged.
    write_container(p, header, {"a": (tensors["a"], 2, False)})
    assert read_container(p)[0] == header


# ---------------------------------------------------------------------------------------------- fuzz


def _fuzz_bases():
    rng = np.random.default_rng(7)
    bases = []
    for tensors in (
        {"a": (rng.integers(-8, 8, (3, 5)), 4, True), "b": (rng.integers(0, 2, 37), 1, False),
         "c": (rng.integers(-(2**40), 2**40, 6), 41, True), "z": (np.zeros((0, 4), dtype=np.int64), 7, False)},
        {"w": (rng.integers(0, 256, (4, 4)), 8, False),
         "q": (rng.integers(-(2**63), 2**63 - 1, 3, dtype=np.int64), 64, True)},
        {},
    ):
        header = {"graph": {"layers": [{"op": "conv", "w": "a"}], "eps": 0.5}}
        table, blobs, off = {}, [], 0
        for name, (v, b, s) in tensors.items():
            blob = bitpack.pack(v, b, s)
            table[name] = {"shape": list(v.shape), "bits": b, "signed": s, "offset": off, "nbytes": len(blob),
                           "crc32": zlib.crc32(blob)}
            blobs.append(blob)
            off += len(blob)
        header = {**header, "format_version": 1, "tensors": table}
        bases.append((header, b"".join(blobs)))
    return bases


_BAD_VALUES = [None, True, False, -1, 0, 1, 65, 2**31 + 1, 2**64, 10**12, -(10**12), 1.5, "4", [], [1], {}, {"a": 1}]


def _mutations(rng: random.Random, header: dict, data: bytes):
    """Yield (label, raw bytes) for one base file."""
    raw = build(header, data)
    hlen = struct.unpack_from("<Q", raw, 12)[0]
    dstart = PREFIX_SIZE + hlen
    # Truncation at every structural boundary, and one byte either side.
    cuts = {0, 1, 7, 8, 9, 10, 11, 12, 19, 20, 23, 24, 25, dstart - 1, dstart, dstart + 1, len(raw) - 1}
    for e in header["tensors"].values():
        cuts |= {dstart + e["offset"], dstart + e["offset"] + e["nbytes"] - 1}
    for c in sorted(x for x in cuts if 0 <= x < len(raw)):
        yield f"truncate@{c}", raw[:c]
    for _ in range(20):
        yield "truncate-random", raw[: rng.randrange(len(raw))]
    # Random bit flips: prefix, header, data.
    for region, lo, hi in (("prefix", 0, PREFIX_SIZE), ("header", PREFIX_SIZE, dstart), ("data", dstart, len(raw))):
        if hi <= lo:
            continue
        for _ in range(100):
            b = bytearray(raw)
            for _ in range(rng.randint(1, 3)):
                b[rng.randrange(lo, hi)] ^= 1 << rng.randrange(8)
            yield f"flip-{region}", bytes(b)
    # Data flips with the checksum recomputed, so the decoder sees them (padding bits etc).
    for name, e in header["tensors"].items():
        if e["nbytes"] == 0:
            continue
        for _ in range(5):
            d = bytearray(data)
            d[e["offset"] + rng.randrange(e["nbytes"])] ^= 1 << rng.randrange(8)
            h = edit(header, name, crc32=zlib.crc32(bytes(d[e["offset"]:e["offset"] + e["nbytes"]])))
            yield "flip-data-crc-ok", build(h, bytes(d))
    # Random garbage, with and without a valid magic.
    for _ in range(40):
        junk = rng.randbytes(rng.randrange(0, 200))
        yield "random", junk
        yield "random-magic", MAGIC + junk
        yield "random-prefix", raw[:PREFIX_SIZE] + junk
    # Header edits (JSON valid, checksums recomputed): wrong types, bad sizes, overlaps.
    names = list(header["tensors"])
    keys = ["shape", "bits", "signed", "offset", "nbytes", "crc32"]
    for name in names:
        for key in keys:
            for bad in rng.sample(_BAD_VALUES, 6):
                yield f"edit-{key}", build(edit(header, name, **{key: bad}), data)
        for shape in ([-1], [10**12], [10**6, 10**6], [2**31, 2], [0, 10**30], [1] * 9, [2.0], [[2]], [True]):
            yield "edit-shape", build(edit(header, name, shape=shape), data)
        for bits in (0, 65, -3, 2**70):
            yield "edit-bits", build(edit(header, name, bits=bits), data)
        yield "missing-key", build(edit(header, name, **{rng.choice(keys): _DELETE}), data)
        yield "extra-key", build(edit(header, name, dtype="int8"), data)
        e = header["tensors"][name]
        for off in (0, 1, e["offset"] - 1, e["offset"] + 1, len(data), len(data) + 1, 2**63, 2**64 + 5):
            yield "edit-offset", build(edit(header, name, offset=off), data)
        # nbytes/shape consistent but blob out of range or overlapping
        yield "grow-shape", build(edit(header, name, shape=[10**5], nbytes=(10**5 * e["bits"] + 7) // 8), data)
    if len(names) >= 2:
        a, b = names[0], names[1]
        yield "overlap", build(edit(header, b, offset=header["tensors"][a]["offset"]), data)
        yield "duplicate-blob", build(edit(header, b, **{k: header["tensors"][a][k] for k in keys}), data)
    # Textual edits of the JSON: NaN / Infinity / big numbers / structure.
    text = json.dumps(header, separators=(",", ":"))
    for old, new in (('"eps":0.5', '"eps":NaN'), ('"eps":0.5', '"eps":Infinity'), ('"eps":0.5', '"eps":-1e400'),
                     ('"eps":0.5', '"eps":1' + "0" * 5000), ('"bits":', '"bits":1,"bits":'), ("{", "["),
                     ('"tensors":', '"tensors":null,"x":'), ('"format_version":1', '"format_version":"1"')):
        yield "text-edit", build({}, data, header_text=text.replace(old, new, 1))
    for _ in range(100):
        t = list(text)
        for _ in range(rng.randint(1, 4)):
            t[rng.randrange(len(t))] = rng.choice('{}[],:"0123456789-eE.tfn \\')
        yield "text-mutate", build({}, data, header_text="".join(t))
    # Prefix fields.
    for version in (0, 2, 255, 65535):
        yield "version", build(header, data, version=version)
    for flags in (1, 0x8000):
        yield "flags", build(header, data, flags=flags)
    for hl in (0, hlen - 1, hlen + 1, len(raw), 64 << 20, 2**64 - 1):
        yield "header-len", build(header, data, header_len=hl)
    yield "trailing", raw + b"\x00"
    yield "trailing-many", raw + rng.randbytes(100)


def _check_valid_result(result):
    header, tensors = result
    assert isinstance(header, dict)
    table = header["tensors"]
    assert set(tensors) == set(table)
    for name, arr in tensors.items():
        e = table[name]
        assert list(arr.shape) == e["shape"]
        assert arr.dtype == bitpack.result_dtype(e["bits"], e["signed"])
        if arr.size:
            lo, hi = value_range(e["bits"], e["signed"])
            assert lo <= int(arr.min()) and int(arr.max()) <= hi


def test_fuzz_mutated_files(tmp_path):
    rng = random.Random(20240611)
    path = tmp_path / "fuzz.qnn"
    n_cases, n_errors, fields = 0, 0, set()
    for header, data in _fuzz_bases():
        for label, raw in _mutations(rng, header, data):
            path.write_bytes(raw)
            try:
                result = read_container(path)
            except HwsimError as exc:
                n_errors += 1
                fields.add((exc.field or "").split(".")[-1])
                assert exc.source == str(path)
                assert "\n" not in exc.line()
            except Exception as exc:  # pragma: no cover - this is the failure being hunted
                raise AssertionError(f"{label}: {type(exc).__name__}: {exc}") from exc
            else:
                _check_valid_result(result)
            n_cases += 1
    assert n_cases >= 1000, n_cases
    assert n_errors >= 0.9 * n_cases
    assert {"magic", "header", "data", "format_version", "flags", "shape", "bits", "signed", "offset",
            "nbytes", "crc32"} <= fields


# ------------------------------------------------------------------------------------ atomic writes


def _leftovers(directory):
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".tmp"))


def test_atomic_write_value_out_of_range_leaves_old_file(tmp_path):
    p = tmp_path / "m.qnn"
    write_container(p, {"v": 1}, {"a": (np.array([1, 2, 3]), 4, False)})
    before = p.read_bytes()
    with pytest.raises(HwsimError) as info:
        write_container(p, {"v": 2}, {"a": (np.array([1, 2, 3]), 4, False), "b": (np.array([0, 16]), 4, False)})
    assert info.value.field == "tensors.b.values"
    assert p.read_bytes() == before
    assert _leftovers(tmp_path) == []
    fresh = tmp_path / "fresh.qnn"
    with pytest.raises(HwsimError):
        write_container(fresh, {}, {"b": (np.array([-1]), 4, False)})
    assert not fresh.exists() and _leftovers(tmp_path) == []


@pytest.mark.parametrize("failing", ["replace", "fsync"])
def test_atomic_write_failure_removes_temp(tmp_path, monkeypatch, failing):
    p = tmp_path / "m.qnn"
    write_container(p, {"v": 1}, {})
    before = p.read_bytes()

    def boom(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, failing, boom)
    with pytest.raises(HwsimError, match="No space left") as info:
        write_container(p, {"v": 2}, {"a": (np.arange(10), 4, False)})
    monkeypatch.undo()
    assert info.value.source == str(p)
    assert p.read_bytes() == before
    assert _leftovers(tmp_path) == []


def test_atomic_write_interrupt_removes_temp(tmp_path, monkeypatch):
    p = tmp_path / "t.txt"

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        fileio.atomic_write_text(p, "hello")
    monkeypatch.undo()
    assert not p.exists() and _leftovers(tmp_path) == []


def test_atomic_write_missing_directory(tmp_path):
    with pytest.raises(HwsimError, match="cannot write"):
        fileio.atomic_write_bytes(tmp_path / "no" / "such" / "f.bin", b"x")


def test_atomic_write_text_and_permissions(tmp_path):
    p = tmp_path / "t.txt"
    fileio.atomic_write_text(p, "héllo\n")
    assert p.read_bytes() == "héllo\n".encode()
    umask = os.umask(0)
    os.umask(umask)
    assert p.stat().st_mode & 0o777 == 0o666 & ~umask


# ---------------------------------------------------------------------------------- npy / npz loading


def test_npy_round_trip_and_errors(tmp_path):
    p = tmp_path / "a.npy"
    arr = np.arange(12, dtype=np.int16).reshape(3, 4)
    fileio.atomic_save_npy(p, arr)
    got = fileio.load_npy(p)
    assert got.dtype == arr.dtype and np.array_equal(got, arr)
    got[0, 0] = 5  # writable
    fortran = np.asfortranarray(arr.astype(np.float32))
    fileio.atomic_save_npy(p, fortran)
    assert np.array_equal(fileio.load_npy(p), fortran)

    with pytest.raises(HwsimError, match="cannot save"):
        fileio.atomic_save_npy(tmp_path / "o.npy", np.array([{}, 1], dtype=object))
    assert not (tmp_path / "o.npy").exists()

    with pytest.raises(HwsimError, match="file not found") as info:
        fileio.load_npy(tmp_path / "missing.npy")
    assert info.value.source == str(tmp_path / "missing.npy")

    obj = tmp_path / "obj.npy"
    np.save(obj, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(HwsimError, match="objects"):
        fileio.load_npy(obj)

    good = p.read_bytes()
    (tmp_path / "trunc.npy").write_bytes(good[:-3])
    with pytest.raises(HwsimError, match="holds"):
        fileio.load_npy(tmp_path / "trunc.npy")
    (tmp_path / "junk.npy").write_bytes(b"hello world")
    with pytest.raises(HwsimError, match="not a valid .npy"):
        fileio.load_npy(tmp_path / "junk.npy")


def test_npy_huge_declared_shape_no_allocation(tmp_path):
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": "<f8", "fortran_order": False, "shape": (10**6, 10**6)})
    p = tmp_path / "huge.npy"
    p.write_bytes(buf.getvalue() + b"\x00" * 64)
    tracemalloc.start()
    try:
        with pytest.raises(HwsimError, match="8000000000000 bytes"):
            fileio.load_npy(p)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 10 * 2**20


def test_npz_round_trip_and_errors(tmp_path):
    p = tmp_path / "d.npz"
    x, y = np.arange(20, dtype=np.uint8).reshape(4, 5), np.array([1, -2, 3], dtype=np.int64)
    np.savez_compressed(p, x=x, y=y)
    got = fileio.load_npz(p)
    assert set(got) == {"x", "y"} and np.array_equal(got["x"], x) and np.array_equal(got["y"], y)

    with pytest.raises(HwsimError, match="npz"):
        fileio.load_npy(p)
    with pytest.raises(HwsimError, match="not a valid .npz"):
        fileio.load_npz(_write(tmp_path / "j.npz", b"junk"))
    with pytest.raises(HwsimError, match="file not found"):
        fileio.load_npz(tmp_path / "nothing.npz")

    bad = tmp_path / "bad.npz"
    with zipfile.ZipFile(bad, "w") as zf:
        zf.writestr("good.npy", _npy_bytes(np.arange(3)))
        zf.writestr("broken.npy", _npy_bytes(np.arange(3))[:-4])
    with pytest.raises(HwsimError) as info:
        fileio.load_npz(bad)
    assert info.value.field == "broken" and info.value.source == str(bad)

    obj = tmp_path / "obj.npz"
    np.savez(obj, o=np.array([None, 1], dtype=object))
    with pytest.raises(HwsimError, match="objects") as info:
        fileio.load_npz(obj)
    assert info.value.field == "o"

    with pytest.raises(HwsimError, match="limit"):
        fileio.load_npz(p, max_bytes=10)

    raw = bytearray(p.read_bytes())
    for i in range(40, len(raw) - 40, 7):  # corrupt compressed bytes: always one HwsimError
        c = bytearray(raw)
        c[i] ^= 0xFF
        _write(tmp_path / "c.npz", bytes(c))
        try:
            fileio.load_npz(tmp_path / "c.npz")
        except HwsimError:
            pass


def _npy_bytes(arr):
    b = io.BytesIO()
    np.save(b, arr)
    return b.getvalue()


def _write(path, data):
    path.write_bytes(data)
    return path
