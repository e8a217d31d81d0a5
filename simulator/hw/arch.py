"""The architecture description of a `--hw` file, its validation, and `--set` overrides.

A `--hw` file is either a technology table (format `hwsim-techtable/1`) that may carry an `architecture:`
section, or an architecture file (format `hwsim-arch/1`) that names its technology table (`tech: tsmc90`) and
carries the `architecture:` section. A table without an architecture gets the default one
(`hwconfigs/architectures/default.yaml`), and the report names it. Schema: docs/hwconfig-format.md.

Every number is a figure `{value, source[, assumption]}` read by the technology table's `FieldReader`, so a
number without a source is an error here too. `--set PATH=VALUE` edits the parsed YAML before validation, so an
override is checked exactly like the file; its source becomes "--set on the command line".
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path

from simulator.errors import HwsimError
from simulator.safeyaml import YamlSyntaxError, load_yaml, short_repr
from simulator.hw.techtable import (Figure, FieldReader, TechTable, parse_techtable, read_yaml, resolve_hw_path,
                                    shipped_hwconfigs_dir)

ARCH_FORMAT = "hwsim-arch/1"
TECH_FORMAT = "hwsim-techtable/1"
DATAFLOWS = ("os", "ws", "is")
INTERCONNECTS = ("systolic", "broadcast")
TENSORS = ("weights", "inputs", "outputs", "psums")   # psums: unfinished outputs at accumulator width
GATING = ("none", "zero_activation", "zero_any")
OBJECTIVES = ("latency", "energy", "edp")   # what the mapper minimises first (ties: the other, then order)
MACROS = ("cacti", "registers", "explicit")
UNIT_NAMES = ("requant", "qe", "ce", "qk", "ck", "lut", "alu")
# What each auxiliary unit executes (Workload.events keys) — one event per unit operation.
UNIT_EVENTS = {"requant": ("requants",), "qe": ("qe",), "ce": ("ce",), "qk": ("qk",), "ck": ("ck",),
               "lut": ("lut_reads",), "alu": ("compares", "adds", "muls")}
SET_SOURCE = "--set on the command line"


@dataclass(frozen=True)
class PeKind:
    """One PE array: MAC PEs (a_bits x w_bits into acc_bits) or XNOR-popcount PEs (word_bits per cycle)."""

    kind: str                  # "mac" or "xnor"
    rows: int
    cols: int
    a_bits: int                # MAC operand widths (1 for XNOR)
    w_bits: int
    acc_bits: int
    word_bits: int             # XNOR: bits per popcount word; MAC: 1
    register_bits: int         # flip-flops per PE clocked every cycle (clock energy, area)
    delay_ns: Figure | None    # critical path, for a derived clock

    @property
    def pes(self) -> int:
        return self.rows * self.cols


@dataclass(frozen=True)
class MemoryLevel:
    name: str
    size_bytes: int
    word_bits: int
    banks: int
    ports_per_bank: int
    read_bw_bits: int          # per cycle, to the PE array
    write_bw_bits: int
    holds: tuple               # subset of TENSORS
    double_buffered: bool
    per_pe: bool               # one instance per PE (a scratchpad / register file), else one shared macro
    interleave_words: int
    bank_conflicts: bool
    layout_pad_words: int      # spare words after each pixel's channels / each filter (bank-conflict layout skew)
    macro: str                 # cacti | registers | explicit
    cell_type: str | None
    explicit: dict             # macro: explicit -> figures per bank (read/write pj per access, leakage, area, cycle)

    @property
    def size_bits(self) -> int:
        return self.size_bytes * 8

    @property
    def bank_bytes(self) -> float:
        return self.size_bytes / self.banks


@dataclass(frozen=True)
class Dram:
    bandwidth_bits: float      # per cycle
    latency_cycles: int
    burst_bits: int            # a transfer moves whole bursts
    pj_per_bit: Figure


@dataclass(frozen=True)
class Unit:
    name: str
    count: int
    per_cycle: float           # operations per cycle per unit

    @property
    def throughput(self) -> float:
        return self.count * self.per_cycle


@dataclass(frozen=True)
class Architecture:
    name: str
    description: str
    source: str                 # the file the architecture came from (the default's path when defaulted)
    defaulted: bool             # True: the --hw file had no architecture, the default was used
    clock_mode: str             # given | derived
    clock_mhz: float | None     # given clock (None when derived: see area.derive_clock)
    interconnect: str
    mac: PeKind | None
    xnor: PeKind | None
    dataflow: str
    binary_dataflow: str
    gating: str
    objective: str              # mapper objective
    activation_residency: bool  # keep layer outputs that fit on chip for their consumers
    levels: tuple               # MemoryLevel, in file order
    dram: Dram
    units: dict                 # name -> Unit
    lut_entries: int            # size of one codebook LUT unit (area)
    lut_width_bits: int
    resolved: dict              # the architecture as a nested mapping of plain values (the --set paths)
    rows: dict                  # dotted row -> Figure, every figure of the architecture

    def level(self, name: str) -> MemoryLevel:
        for lv in self.levels:
            if lv.name == name:
                return lv
        raise KeyError(name)

    def shared_level_for(self, tensor: str) -> MemoryLevel | None:
        """The on-chip buffer (not per PE) that stages `tensor` between DRAM and the array, if any."""
        for lv in self.levels:
            if not lv.per_pe and tensor in lv.holds:
                return lv
        return None



@dataclass(frozen=True)
class Hardware:
    """What a --hw file resolves to: the technology table and the architecture on it."""

    path: str
    tech: TechTable
    arch: Architecture


# ----------------------------------------------------------------------------------------------------------
# Loading.


def default_architecture_path() -> Path:
    return shipped_hwconfigs_dir() / "architectures" / "default.yaml"


def load_hardware(arg: str, sets: list[str] | None = None, shortcuts: dict | None = None) -> Hardware:
    """Resolve `--hw ARG`, read its technology table and architecture, apply `--set` overrides and shortcuts."""
    path = resolve_hw_path(arg)
    source = str(path)
    data = read_yaml(path, source)
    if not isinstance(data, dict):
        raise HwsimError("must be a YAML mapping with a 'format' field", source=source)
    fmt = data.get("format")
    if fmt == TECH_FORMAT:
        tech = parse_techtable(data, source, ignore_keys=("architecture",))
        if "architecture" in data:
            arch_doc, arch_source, defaulted = data, source, False
        else:
            default = default_architecture_path()
            arch_doc, arch_source, defaulted = read_yaml(default, str(default)), str(default), True
    elif fmt == ARCH_FORMAT:
        header = _FileReader(source)
        header.mapping(data, "", required=["format", "name", "description", "tech", "architecture"])
        header.text(data, "name", "")
        header.text(data, "description", "")
        tech_arg = data["tech"]
        if not isinstance(tech_arg, str) or not tech_arg.strip():
            raise HwsimError("must name a technology table (a shipped name or a path)", source=source,
                             field="tech")
        beside = path.parent / tech_arg
        tech_path = beside if beside.is_file() else (beside.with_suffix(".yaml") if
                                                       beside.with_suffix(".yaml").is_file() else None)
        try:
            tech_path = tech_path or resolve_hw_path(tech_arg)
        except HwsimError as exc:
            raise HwsimError(exc.message, source=source, field="tech") from None
        tech_data = read_yaml(tech_path, str(tech_path))
        if not isinstance(tech_data, dict) or tech_data.get("format") != TECH_FORMAT:
            raise HwsimError(f"{tech_path} is not a technology table (format {TECH_FORMAT})", source=source,
                             field="tech")
        tech = parse_techtable(tech_data, str(tech_path), ignore_keys=("architecture",))
        arch_doc, arch_source, defaulted = data, source, False
    else:
        raise HwsimError(f"must be '{TECH_FORMAT}' or '{ARCH_FORMAT}', got {short_repr(fmt)}", source=source,
                         field="format")

    raw = arch_doc.get("architecture")
    if fmt == TECH_FORMAT:   # the design is named after its table (the default architecture says so itself)
        name = tech.name
        description = str(arch_doc.get("description", "")) if defaulted else tech.node.description
    else:
        name, description = str(arch_doc.get("name", "")), str(arch_doc.get("description", ""))
    arch = parse_architecture(raw, arch_source, tech, name, description, defaulted)
    overrides = list(sets or []) + _shortcut_sets(shortcuts or {})
    if overrides:
        raw = apply_sets(raw, overrides, arch.resolved)
        try:
            arch = parse_architecture(raw, arch_source, tech, arch.name, arch.description, defaulted)
        except HwsimError as exc:
            raise _blame_overrides(exc, list(sets or []), shortcuts or {}, arch_source) from None
    return Hardware(path=source, tech=tech, arch=arch)


def _blame_overrides(exc: HwsimError, sets: list[str], shortcuts: dict, arch_source: str) -> HwsimError:
    """The architecture parsed before the overrides, so an error now comes from them: name the option that gave
    the value (`--set PATH`, `--array`, `--dataflow`), never the file the user did not change."""
    if exc.source != arch_source:
        return exc
    given = []    # (architecture row, what the user typed it as, the text), later ones win
    for item in sets:
        path = item.split("=", 1)[0].strip().removeprefix("architecture.")
        given.append((f"architecture.{path}", f"--set architecture.{path}", f"--set {item.strip()}"))
    if shortcuts.get("array"):
        given += [("architecture.pe_array.mac.rows", "--array", f"--array {shortcuts['array']}"),
                  ("architecture.pe_array.mac.cols", "--array", f"--array {shortcuts['array']}")]
    if shortcuts.get("dataflow"):
        given.append(("architecture.dataflow", "--dataflow", f"--dataflow {shortcuts['dataflow']}"))
    fld = exc.field or ""
    for row, option, _ in reversed(given):
        if fld == row or fld.startswith(row + "."):
            rest = fld[len(row) + 1:]
            return HwsimError(exc.message, field=f"{option}.{rest}" if rest else option)
    # a combination: a value of the file conflicts with the overrides; name them, then the field
    texts = list(dict.fromkeys(text for _, _, text in given))
    shown = ", ".join(t if len(t) <= 60 else t[:57] + "..." for t in texts[:3])
    if len(texts) > 3:
        shown += f" (and {len(texts) - 3} more)"
    return HwsimError(exc.message, field=f"{shown}: {fld}" if fld else shown)


def _shortcut_sets(shortcuts: dict) -> list[str]:
    out = []
    array = shortcuts.get("array")
    if array:
        parts = str(array).lower().split("x")
        if len(parts) != 2 or not all(p.isdigit() and int(p) > 0 for p in parts):
            raise HwsimError(f"must be ROWSxCOLS with positive integers, e.g. 16x16, got {array!r}", field="--array")
        out += [f"pe_array.mac.rows={parts[0]}", f"pe_array.mac.cols={parts[1]}"]
    dataflow = shortcuts.get("dataflow")
    if dataflow:
        out.append(f"dataflow={dataflow}")
    return out


# ----------------------------------------------------------------------------------------------------------
# --set PATH=VALUE


# Short names of --set / sweep paths: the array's rows and columns are the MAC array's (what --array sets)
PATH_ALIASES = {"pe_array.rows": "pe_array.mac.rows", "pe_array.cols": "pe_array.mac.cols"}


def canonical_path(path: str) -> str:
    """A --set path without the report's `architecture.` prefix, its alias resolved."""
    path = path.strip().removeprefix("architecture.")
    return PATH_ALIASES.get(path, path)


def apply_sets(raw, sets: list[str], resolved: dict):
    """A deep copy of the raw `architecture:` mapping with each override applied (figures keep their shape)."""
    import copy

    raw = copy.deepcopy(raw)
    leaves = sorted(flatten_paths(resolved))
    for item in sets:
        if "=" not in item:
            raise HwsimError(f"must be PATH=VALUE, got {item!r}", field="--set")
        path, text = (part.strip() for part in item.split("=", 1))
        if path not in leaves and canonical_path(path) in leaves:
            path = canonical_path(path)    # the report's full name of the field, or a short name
        if path not in leaves:
            close = difflib.get_close_matches(path, leaves, n=1, cutoff=0.5)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise HwsimError(f"no such field '{path}'{hint} (the report's 'architecture' lists every path)",
                             field="--set")
        try:
            value = load_yaml(text, "--set") if text else None
        except YamlSyntaxError:
            value = text
        except HwsimError as exc:
            raise HwsimError(f"{path}: {exc.message}", field="--set") from None
        keys = path.split(".")
        node = raw
        for key in keys[:-1]:
            if not isinstance(node.get(key), dict):
                node[key] = {}
            node = node[key]
        if keys[-1] == "macro" and len(keys) == 3:
            # Switching a level's macro drops the fields only the old macro reads.
            stale = [] if value == "cacti" else ["cell_type"]
            if value != "explicit":
                stale += ["read_pj_per_access", "write_pj_per_access", "leakage_mw", "area_mm2", "cycle_ns"]
            for key in stale:
                node.pop(key, None)
        current = node.get(keys[-1])
        if isinstance(current, dict) and "value" in current or _is_figure_path(keys):
            node[keys[-1]] = {"value": value, "source": SET_SOURCE}
        else:
            node[keys[-1]] = value
    return raw


def _is_figure_path(keys: list[str]) -> bool:
    plain = {"mode", "interconnect", "dataflow", "binary_dataflow", "gating", "objective", "activation_residency",
             "holds", "double_buffered",
             "per_pe", "bank_conflicts", "macro", "cell_type"}
    return keys[-1] not in plain


def flatten_paths(tree: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in tree.items():
        path = f"{prefix}.{key}" if prefix else key
        if isinstance(value, dict):
            out.update(flatten_paths(value, path))
        else:
            out[path] = value
    return out


# ----------------------------------------------------------------------------------------------------------
# Parsing and validation.


class _FileReader(FieldReader):
    """FieldReader with the architecture's own checks; rows are prefixed 'architecture.'."""

    def choice(self, parent: dict, key: str, row: str, options, default=None):
        if key not in parent:
            if default is None:
                self.fail(_join(row, key), "missing required field")
            return default
        value = parent[key]
        if value not in options:
            close = difflib.get_close_matches(str(value)[:100], options, n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            self.fail(_join(row, key), f"must be one of {', '.join(options)}, got {short_repr(value)}{hint}")
        return value

    def bool_or(self, parent: dict, key: str, row: str, default: bool) -> bool:
        return self.flag(parent, key, row) if key in parent else default

    def count(self, parent: dict, key: str, row: str, default=None) -> int:
        if key not in parent:
            if default is None:
                self.fail(_join(row, key), "missing required field")
            return default
        return int(self.figure(parent, key, row, "count").value)

    def whole(self, parent: dict, key: str, row: str) -> int:
        """A figure that must be a whole number >= 0 (a count that may be zero)."""
        value = self.figure(parent, key, row, "nonnegative").value
        if value != int(value):
            self.fail(_join(row, key), f"must be a whole number, got {value!r}")
        return int(value)

    def within(self, parent: dict, key: str, row: str, lo: float, hi: float, default=None) -> float:
        """A positive figure inside [lo, hi]: the model's arithmetic stays finite for any accepted file."""
        value = self.positive(parent, key, row, default)
        if not lo <= value <= hi:
            self.fail(_join(row, key), f"must be between {lo:g} and {hi:g}, got {value!r}")
        return value

    def positive(self, parent: dict, key: str, row: str, default=None) -> float:
        if key not in parent:
            if default is None:
                self.fail(_join(row, key), "missing required field")
            return default
        return self.figure(parent, key, row, "positive").value


def parse_architecture(raw, source: str, tech: TechTable, name: str, description: str,
                       defaulted: bool) -> Architecture:
    r = _FileReader(source)
    top = "architecture"
    m = r.mapping(raw, top, required=["clock", "pe_array", "memory", "dram"],
                  optional=["dataflow", "binary_dataflow", "gating", "objective", "activation_residency", "units"])
    resolved: dict = {}

    # Clock.
    cm = r.mapping(m["clock"], f"{top}.clock", required=["mode"], optional=["mhz"])
    clock_mode = r.choice(cm, "mode", f"{top}.clock", ("given", "derived"))
    clock_mhz = None
    if clock_mode == "given":
        clock_mhz = r.within(cm, "mhz", f"{top}.clock", 1e-3, 1e7)
    elif cm.get("mhz") is not None:
        r.fail(f"{top}.clock.mhz", "is only read with mode: given (a derived clock comes from the units' "
                                   "critical paths); set clock.mode=given to fix the clock")
    resolved["clock"] = {"mode": clock_mode, "mhz": clock_mhz}

    # PE arrays.
    pm = r.mapping(m["pe_array"], f"{top}.pe_array", required=["interconnect"], optional=["mac", "xnor"])
    interconnect = r.choice(pm, "interconnect", f"{top}.pe_array", INTERCONNECTS)
    if "mac" not in pm and "xnor" not in pm:
        r.fail(f"{top}.pe_array", "needs a 'mac' array, an 'xnor' array, or both")
    mac = _pe(r, pm["mac"], f"{top}.pe_array.mac", "mac") if "mac" in pm else None
    xnor = _pe(r, pm["xnor"], f"{top}.pe_array.xnor", "xnor") if "xnor" in pm else None
    resolved["pe_array"] = {"interconnect": interconnect}
    for pe in (mac, xnor):
        if pe is not None:
            entry = {"rows": pe.rows, "cols": pe.cols, "acc_bits": pe.acc_bits, "register_bits": pe.register_bits}
            if pe.kind == "mac":
                entry.update(a_bits=pe.a_bits, w_bits=pe.w_bits)
            else:
                entry["word_bits"] = pe.word_bits
            entry["delay_ns"] = None if pe.delay_ns is None else pe.delay_ns.value
            resolved["pe_array"][pe.kind] = entry

    dataflow = r.choice(m, "dataflow", top, DATAFLOWS, default="os")
    binary_dataflow = r.choice(m, "binary_dataflow", top, DATAFLOWS, default=dataflow)
    gating = r.choice(m, "gating", top, GATING, default="none")
    objective = r.choice(m, "objective", top, OBJECTIVES, default="latency")
    residency = r.bool_or(m, "activation_residency", top, True)
    resolved.update(dataflow=dataflow, binary_dataflow=binary_dataflow, gating=gating, objective=objective,
                    activation_residency=residency)

    # Memory levels.
    mem = m["memory"]
    if not isinstance(mem, dict) or not mem:
        r.fail(f"{top}.memory", "must be a mapping of at least one named level (e.g. glb: {...})")
    levels = []
    resolved["memory"] = {}
    for lname, lraw in mem.items():
        if not isinstance(lname, str) or not lname.replace("_", "").isalnum():
            r.fail(f"{top}.memory", f"level names must be identifiers, got {short_repr(lname)}")
        lv = _level(r, lraw, f"{top}.memory.{lname}", lname, tech)
        levels.append(lv)
        resolved["memory"][lname] = _level_resolved(lv)
    for tensor in TENSORS:
        shared = [lv.name for lv in levels if not lv.per_pe and tensor in lv.holds]
        if len(shared) > 1:
            r.fail(f"{top}.memory", f"{tensor} are held by several shared buffers ({_names(shared)}): "
                                    f"give each tensor at most one on-chip buffer and at most one per-PE level")
        per_pe = [lv.name for lv in levels if lv.per_pe and tensor in lv.holds]
        if len(per_pe) > 1:
            r.fail(f"{top}.memory", f"{tensor} are held by several per-PE levels ({_names(per_pe)})")

    # DRAM.
    dm = r.mapping(m["dram"], f"{top}.dram", required=["bandwidth_bits_per_cycle", "latency_cycles"],
                   optional=["burst_bits", "pj_per_bit"])
    bw = r.within(dm, "bandwidth_bits_per_cycle", f"{top}.dram", 1e-3, 1e9)
    latency_fig = r.figure(dm, "latency_cycles", f"{top}.dram", "nonnegative")
    if latency_fig.value != int(latency_fig.value) or latency_fig.value > 1e9:
        r.fail(f"{top}.dram.latency_cycles", f"must be a whole number of cycles up to 1e9, got {latency_fig.value!r}")
    burst = r.count(dm, "burst_bits", f"{top}.dram", default=8)
    pj = r.figure(dm, "pj_per_bit", f"{top}.dram") if "pj_per_bit" in dm else tech.dram.pj_per_bit
    dram = Dram(bandwidth_bits=bw, latency_cycles=int(latency_fig.value), burst_bits=burst, pj_per_bit=pj)
    resolved["dram"] = {"bandwidth_bits_per_cycle": bw, "latency_cycles": dram.latency_cycles,
                        "burst_bits": burst, "pj_per_bit": pj.value}

    # Auxiliary units.
    um = m.get("units", {}) or {}
    r.mapping(um, f"{top}.units", required=[], optional=list(UNIT_NAMES))
    units = {}
    resolved["units"] = {}
    for uname in UNIT_NAMES:
        row = f"{top}.units.{uname}"
        extra = ["entries", "width_bits"] if uname == "lut" else []
        if uname in um:
            u = r.mapping(um[uname], row, required=[], optional=["count", "per_cycle"] + extra)
            count = r.whole(u, "count", row) if "count" in u else 0
            unit = Unit(uname, count, r.within(u, "per_cycle", row, 1e-6, 1e9, default=1.0))
        else:
            u, unit = {}, Unit(uname, 0, 1.0)
        units[uname] = unit
        resolved["units"][uname] = {"count": unit.count, "per_cycle": unit.per_cycle}
        if uname == "lut":
            lut_entries = r.count(u, "entries", row, default=16)
            lut_width = r.count(u, "width_bits", row, default=8)
            resolved["units"]["lut"].update(entries=lut_entries, width_bits=lut_width)

    return Architecture(name=name, description=description, source=source, defaulted=defaulted,
                        clock_mode=clock_mode, clock_mhz=clock_mhz, interconnect=interconnect, mac=mac, xnor=xnor,
                        dataflow=dataflow, binary_dataflow=binary_dataflow, gating=gating, objective=objective,
                        activation_residency=residency, levels=tuple(levels),
                        dram=dram, units=units, lut_entries=lut_entries, lut_width_bits=lut_width,
                        resolved=resolved, rows=dict(r.rows))


def _pe(r: _FileReader, raw, row: str, kind: str) -> PeKind:
    common = ["rows", "cols", "acc_bits", "register_bits"]
    own = ["a_bits", "w_bits"] if kind == "mac" else ["word_bits"]
    m = r.mapping(raw, row, required=common + own, optional=["delay_ns"])
    rows, cols = r.count(m, "rows", row), r.count(m, "cols", row)
    for key, value in (("rows", rows), ("cols", cols)):
        if value > 4096:
            r.fail(f"{row}.{key}", f"must be at most 4096, got {value}")
    acc = r.count(m, "acc_bits", row)
    if acc > 64:
        r.fail(f"{row}.acc_bits", f"must be at most 64, got {acc}")
    regs = r.whole(m, "register_bits", row)
    delay = None
    if m.get("delay_ns") is not None:
        r.within(m, "delay_ns", row, 1e-3, 1e6)
        delay = r.rows[f"{row}.delay_ns"]
    if kind == "mac":
        a, w = r.count(m, "a_bits", row), r.count(m, "w_bits", row)
        for key, value in (("a_bits", a), ("w_bits", w)):
            if value > 32:
                r.fail(f"{row}.{key}", f"must be at most 32, got {value}")
        return PeKind("mac", rows, cols, a, w, acc, 1, regs, delay)
    word = r.count(m, "word_bits", row)
    if word > 4096:
        r.fail(f"{row}.word_bits", f"must be at most 4096, got {word}")
    return PeKind("xnor", rows, cols, 1, 1, acc, word, regs, delay)


def _level(r: _FileReader, raw, row: str, name: str, tech: TechTable) -> MemoryLevel:
    m = r.mapping(raw, row, required=["size_bytes", "word_bits", "holds"],
                  optional=["banks", "ports_per_bank", "read_bw_bits_per_cycle", "write_bw_bits_per_cycle",
                            "double_buffered", "per_pe", "interleave_words", "bank_conflicts",
                            "layout_pad_words", "macro",
                            "cell_type", "read_pj_per_access", "write_pj_per_access", "leakage_mw",
                            "area_mm2", "cycle_ns"])
    size = r.count(m, "size_bytes", row)
    word = r.count(m, "word_bits", row)
    banks = r.count(m, "banks", row, default=1)
    ports = r.count(m, "ports_per_bank", row, default=1)
    if size > 1 << 40:
        r.fail(f"{row}.size_bytes", f"must be at most 2^40 bytes, got {size}")
    if word > 4096:
        r.fail(f"{row}.word_bits", f"must be at most 4096, got {word}")
    if banks > 4096 or ports > 64:
        r.fail(f"{row}.banks" if banks > 4096 else f"{row}.ports_per_bank", "is implausibly large (banks <= 4096, "
                                                                           "ports <= 64)")
    if (size * 8) % (banks * word):
        r.fail(f"{row}.banks", f"{banks} banks of {word}-bit words do not divide {size} bytes evenly "
                               f"({size * 8} bits is not a multiple of banks x word_bits = {banks * word})")
    holds = m["holds"]
    if (not isinstance(holds, list) or not holds or any(t not in TENSORS for t in holds)
            or len(set(holds)) != len(holds)):
        r.fail(f"{row}.holds", f"must be a non-empty list of distinct tensors from {', '.join(TENSORS)}, "
                               f"got {short_repr(holds)}")
    if "interleave_words" in m and r.count(m, "interleave_words", row) > 1 << 20:
        r.fail(f"{row}.interleave_words", "must be at most 2^20")
    read_bw = r.count(m, "read_bw_bits_per_cycle", row, default=banks * ports * word)
    write_bw = r.count(m, "write_bw_bits_per_cycle", row, default=banks * ports * word)
    macro = r.choice(m, "macro", row, MACROS, default="cacti")
    cell_type = None
    explicit = {}
    for key in ("read_pj_per_access", "write_pj_per_access", "leakage_mw", "area_mm2", "cycle_ns"):
        if key in m and macro != "explicit":
            r.fail(f"{row}.{key}", f"is only read with macro: explicit (this level is macro: {macro})")
    if "cell_type" in m and macro != "cacti":
        r.fail(f"{row}.cell_type", f"is only read with macro: cacti (this level is macro: {macro})")
    if macro == "cacti":
        cell_type = r.choice(m, "cell_type", row, ("itrs-hp", "itrs-lop", "itrs-lstp"), default="itrs-hp")
    elif macro == "explicit":
        for key, kind in (("read_pj_per_access", "nonnegative"), ("write_pj_per_access", "nonnegative"),
                          ("leakage_mw", "nonnegative"), ("area_mm2", "nonnegative"), ("cycle_ns", "positive")):
            if key not in m:
                r.fail(f"{row}.{key}", "missing required field (macro: explicit gives every figure per bank)")
            explicit[key] = r.figure(m, key, row, kind)
            if key == "cycle_ns" and not 1e-3 <= explicit[key].value <= 1e6:
                r.fail(f"{row}.cycle_ns", f"must be between 0.001 and 1e+06, got {explicit[key].value!r}")
    return MemoryLevel(name=name, size_bytes=size, word_bits=word, banks=banks, ports_per_bank=ports,
                       read_bw_bits=read_bw, write_bw_bits=write_bw, holds=tuple(holds),
                       double_buffered=r.bool_or(m, "double_buffered", row, False),
                       per_pe=r.bool_or(m, "per_pe", row, False),
                       interleave_words=r.count(m, "interleave_words", row, default=1),
                       bank_conflicts=r.bool_or(m, "bank_conflicts", row, False),
                       layout_pad_words=r.whole(m, "layout_pad_words", row) if "layout_pad_words" in m else 0,
                       macro=macro, cell_type=cell_type, explicit=explicit)


def _level_resolved(lv: MemoryLevel) -> dict:
    out = {"size_bytes": lv.size_bytes, "word_bits": lv.word_bits, "banks": lv.banks,
           "ports_per_bank": lv.ports_per_bank, "read_bw_bits_per_cycle": lv.read_bw_bits,
           "write_bw_bits_per_cycle": lv.write_bw_bits, "holds": list(lv.holds),
           "double_buffered": lv.double_buffered, "per_pe": lv.per_pe, "interleave_words": lv.interleave_words,
           "bank_conflicts": lv.bank_conflicts, "layout_pad_words": lv.layout_pad_words, "macro": lv.macro}
    if lv.cell_type:
        out["cell_type"] = lv.cell_type
    for key, fig in lv.explicit.items():
        out[key] = fig.value
    return out


def _names(names: list, limit: int = 4) -> str:
    """A few level names, then the count: an error line stays short with thousands of levels."""
    if len(names) <= limit:
        return ", ".join(names)
    return ", ".join(names[:limit]) + f", ... ({len(names)} levels)"


def _join(row: str, key: str) -> str:
    return f"{row}.{key}" if row else key
