"""SCALE-Sim topology CSV -> list of `Workload` (shapes only, MAC path), read exactly as SCALE-Sim v3 reads it.

SCALE-Sim (github.com/scalesim-project/scale-sim-v3, scalesim/topology_utils.py) is the common currency for
accelerator workloads, so its files are read with its own rules (`load_arrays_conv` / `load_arrays_gemm`):

- The first line is a header and is skipped whatever it holds; blank lines are skipped (and rows of bare
  commas, on which SCALE-Sim crashes); fields are whitespace-stripped. Every row ends with a comma:
  SCALE-Sim drops whatever follows the last comma (its `mobilnet_paper.csv` writes "#dw" there), and so does
  hwsim. A row whose last comma is missing would lose its last value in SCALE-Sim (and crash it); hwsim reads
  that value instead.
- Convolution format: Layer name, IFMAP Height, IFMAP Width, Filter Height, Filter Width, Channels,
  Num Filter, Strides [, Sparsity N:M]. One stride for both directions. The ifmap size INCLUDES any padding
  (SCALE-Sim has no padding column). The ofmap is SCALE-Sim's ceil((H - R + stride) / stride), NOT
  (H - R) // stride + 1: when the stride does not divide H - R, SCALE-Sim adds one more output whose window
  runs past the ifmap (it skips those reads and counts the MACs). hwsim states that as bottom / right zero
  padding (Workload.pad); otherwise pad = 0. Write H = (P - 1) * stride + R (the rows a padded conv really
  reads) and both rules agree: a 3x3 / 2 conv with pad 1 from 56 to 28 is H = 57, not 58.
- GEMM format (SCALE-Sim's `-i gemm`; chosen here when the header reads "<name>, M, N, K"): Layer name, M, N,
  K [, Sparsity]. SCALE-Sim runs it as an M x K ifmap with N filters of 1 x K; hwsim reads it as a dense layer
  over M rows (C = K inputs, K = N outputs, P = M): the same M*N*K MACs and operand sizes.
- Depthwise: SCALE-Sim has no depthwise column. A layer whose name CONTAINS "DP" (case-sensitive, as in
  SCALE-Sim) is depthwise: SCALE-Sim splits it into `Channels` single-channel layers of `Num Filter` filters
  each; hwsim keeps it as one grouped Workload with G = Channels, C = 1, K = Num Filter (channel multiplier),
  the same MACs. (SCALE-Sim's own `mobilenet.csv` instead writes depthwise layers as Channels = C,
  Num Filter = 1, which SCALE-Sim and hwsim both read as a plain conv with one output channel.)
- Grouped convolutions have no SCALE-Sim form either; write one row per group (what the "DP" split does
  internally), which gets the MACs and the input, weight and output sizes right.
- Sparsity (v3's optional N:M column) is validated but not modelled: SCALE-Sim applies it only with
  `sparsity_support` on in its config, and hwsim costs dense layers.
- Duplicate layer names are allowed, as in SCALE-Sim (its sparsity/gemm.csv has two GEMM_1 rows).

Bits come from `bits=(a_bits, w_bits)`: operands and storage a_bits x w_bits, outputs a_bits, 32-bit
accumulators. Every MAC layer requantizes its outputs (events: requants = outputs), as the other front ends.
Anything malformed is one HwsimError naming the file, the row (file line number) and the column.
"""

from __future__ import annotations

import os
from dataclasses import replace

from ..errors import HwsimError
from ..hw.workload import Workload

CONV_COLUMNS = ("Layer name", "IFMAP Height", "IFMAP Width", "Filter Height", "Filter Width", "Channels",
                "Num Filter", "Strides", "Sparsity")
GEMM_COLUMNS = ("Layer name", "M", "N", "K", "Sparsity")
MAX_DIM = 100_000_000        # any single dimension (SCALE-Sim's unet2d.csv has M = 4,186,116)
MAX_MACS = 10 ** 15          # per layer
MAX_FILE_BYTES = 16 << 20    # a topology is a few hundred rows; refuse anything absurd before reading it


def load_topology(path, bits=(8, 8), fmt: str | None = None) -> list[Workload]:
    """Read a SCALE-Sim topology CSV. `fmt`: "conv", "gemm" or None (the header decides)."""
    source = os.fspath(path)
    a_bits, w_bits = _check_bits(bits, source)
    lines = _read_lines(source)
    if not lines[0].strip():
        raise HwsimError("the first line must be the header row (SCALE-Sim skips it whatever it holds), got a "
                         "blank line", source=source, field="row 1")
    header = [f.strip().lower() for f in lines[0].split(",")]
    if fmt is None:
        fmt = "gemm" if header[1:4] == ["m", "n", "k"] else "conv"
    if fmt not in ("conv", "gemm"):
        raise HwsimError(f"format must be 'conv' or 'gemm', got {fmt!r}", source=source)
    columns = CONV_COLUMNS if fmt == "conv" else GEMM_COLUMNS
    if len(header) > 1 and _is_int(header[1]):
        raise HwsimError("the first row must be the header (SCALE-Sim skips it), but it holds a layer",
                         source=source, field="row 1")
    workloads = []
    for line_no, raw in enumerate(lines[1:], start=2):
        row = raw.strip()
        if row.replace(",", "").strip():     # blank rows and rows of bare commas (",,,,,,,,") are spacers
            workloads.append(_row(source, line_no, row, columns, a_bits, w_bits))
    if not workloads:
        raise HwsimError("no layers: the file has a header row only", source=source)
    return workloads


def _check_bits(bits, source):
    try:
        a_bits, w_bits = bits
    except (TypeError, ValueError):
        raise HwsimError(f"bits must be (a_bits, w_bits), got {bits!r}", source=source) from None
    for b in (a_bits, w_bits):
        if isinstance(b, bool) or not isinstance(b, int) or not 1 <= b <= 32:
            raise HwsimError(f"bits must be integers in [1, 32], got {bits!r}", source=source)
    return a_bits, w_bits


def _read_lines(source):
    if not os.path.exists(source):
        raise HwsimError("file not found", source=source)
    if not os.path.isfile(source):
        raise HwsimError("not a file", source=source)
    if os.path.getsize(source) > MAX_FILE_BYTES:
        raise HwsimError(f"file is larger than {MAX_FILE_BYTES >> 20} MiB; not a topology CSV", source=source)
    try:
        with open(source, encoding="utf-8-sig") as f:   # some SCALE-Sim files start with a BOM
            text = f.read()
    except UnicodeDecodeError as exc:
        raise HwsimError(f"not a text CSV file (byte {exc.start} is not UTF-8)", source=source) from None
    except OSError as exc:
        raise HwsimError(f"cannot read: {exc.strerror or exc}", source=source) from None
    lines = text.splitlines()
    if not any(line.strip() for line in lines):
        raise HwsimError("empty file", source=source)
    return lines


def _is_int(text):
    text = text.strip()
    return text.lstrip("+").isdigit() and text.isascii()


def _row(source, line_no, row, columns, a_bits, w_bits):
    pieces = row.split(",")
    name = pieces[0].strip()
    where = f"row {line_no} ({name})" if name else f"row {line_no}"
    need = len(columns) - 1          # required columns; the last one (Sparsity) is optional
    elems = pieces[:-1]              # SCALE-Sim: row.split(',')[:-1]
    if len(elems) < need and pieces[-1].strip():
        elems = pieces               # no trailing comma: keep the last value
    if not need <= len(elems) <= need + 1:
        raise HwsimError(f"expected {need} comma-separated columns ({', '.join(columns[:-1])}), optionally "
                         f"{columns[-1]} (N:M), each followed by a comma; got {len(elems)}", source=source,
                         field=where)
    values = {}
    for col, text in zip(columns[1:need], elems[1:need]):
        text = text.strip()
        value = int(text) if _is_int(text) else None
        if value is None or value < 1:
            raise HwsimError(f"must be a positive integer, got {text!r}", source=source, field=f"{where}: {col}")
        if value > MAX_DIM:
            raise HwsimError(f"{value} exceeds the limit of {MAX_DIM:,}", source=source, field=f"{where}: {col}")
        values[col] = value
    if len(elems) > need:
        _check_sparsity(elems[need].strip(), source, f"{where}: {columns[-1]}")
    name = name or f"row{line_no}"
    if columns is GEMM_COLUMNS:
        m, n, k = values["M"], values["N"], values["K"]
        wl = Workload(name, "dense", "mac", k=n, c=k, h=m, p=m, events={"requants": m * n})
    else:
        wl = _conv(values, name, source, where)
    if wl.macs > MAX_MACS:
        raise HwsimError(f"{wl.macs:.3g} MACs exceed the limit of {MAX_MACS:.0e} per layer", source=source,
                         field=where)
    return _with_bits(wl, a_bits, w_bits)


def _conv(v, name, source, where):
    h, w, r, s = v["IFMAP Height"], v["IFMAP Width"], v["Filter Height"], v["Filter Width"]
    channels, filters, stride = v["Channels"], v["Num Filter"], v["Strides"]
    for fcol, f, icol, i in (("Filter Height", r, "IFMAP Height", h), ("Filter Width", s, "IFMAP Width", w)):
        if f > i:
            raise HwsimError(f"{f} is larger than the {icol} {i}", source=source, field=f"{where}: {fcol}")
    # SCALE-Sim: ofmap = ceil((H - R + stride) / stride). When the stride does not divide H - R, its last
    # window runs past the ifmap; those reads are skipped (address -1) but the MACs are counted: zero padding
    # at the bottom / right, which the Workload states explicitly.
    p, q = -(-(h - r) // stride) + 1, -(-(w - s) // stride) + 1
    pad = (0, 0, (p - 1) * stride + r - h, (q - 1) * stride + s - w)
    if "DP" in name:   # SCALE-Sim's depthwise convention: one single-channel layer per channel
        g, k, c = channels, filters, 1
    else:
        g, k, c = 1, filters, channels
    op = "dense" if (h, w, r, s, g) == (1, 1, 1, 1, 1) else "conv2d"
    return Workload(name, op, "mac", g=g, k=k, c=c, p=p, q=q, r=r, s=s, h=h, w=w, stride=(stride, stride),
                    pad=pad, events={"requants": g * k * p * q})


def _check_sparsity(text, source, field):
    parts = text.split(":")
    ok = len(parts) == 2 and all(_is_int(t) for t in parts)
    if not ok or not 1 <= int(parts[0]) <= int(parts[1]) <= MAX_DIM:
        raise HwsimError(f"must be N:M with 1 <= N <= M (e.g. 2:4), got {text!r}", source=source, field=field)


def _with_bits(wl, a_bits, w_bits):
    return replace(wl, in_bits=a_bits, w_bits=w_bits, out_bits=a_bits, a_op_bits=a_bits, w_op_bits=w_bits,
                   acc_bits=32)
