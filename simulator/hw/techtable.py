"""Technology tables: per-event energies, areas and delays read from a YAML file.

Every number in a table is a *figure*: a mapping ``{value: ..., source: "..."}`` with an optional
``assumption: true`` (the figure is an assumption, not a citation or a derivation) and an optional
``scale: energy | area`` (the value is written at the reference node of the file's ``scaling:`` rule and
multiplied by that rule's factor when loaded). A number without a source is an error.

The schema is documented in docs/hwconfig-format.md. The loader reads the file with
``simulator.safeyaml.load_yaml`` (a bounded yaml.SafeLoader) and checks every field; the first problem
becomes one `HwsimError` naming the file and the dotted field path. Every figure, as written and after
scaling, must be finite and at most `MAX_FIGURE` (so no derived cost can overflow to inf).
"""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass, field
from pathlib import Path

import simulator
from simulator.errors import HwsimError
from simulator.safeyaml import load_yaml, read_document, short_repr

FORMAT = "hwsim-techtable/1"

# The largest figure a table or an architecture may hold, as written and after scaling: far above any real
# design (2^40-byte memories, 1e9-cycle latencies), and small enough that counts x figures stay finite.
MAX_FIGURE = 1e15

# Rows an energy-scaled figure depends on (the scaling rule), and an area-scaled one.
ENERGY_SCALING_ROWS = ("scaling.from_nm", "scaling.to_nm", "scaling.from_v", "scaling.to_v")
AREA_SCALING_ROWS = ("scaling.area_factor",)


# ----------------------------------------------------------------------------------------------------------
# Data classes: one per table section.


@dataclass(frozen=True)
class Figure:
    """One number of the table, with where it comes from."""

    row: str                          # dotted path in the file, e.g. "arith.add_pj_per_bit"
    value: float                      # value at this table's node (after scaling, if any)
    source: str
    assumption: bool = False
    scale: str | None = None          # None, "energy" or "area"
    written_value: float | None = None  # the value as written in the file, when scaled
    scale_factor: float = 1.0
    depends_on: tuple[str, ...] = ()  # scaling rows used to produce `value`

    def describe(self) -> str:
        """The source text, plus the scaling arithmetic when the value was scaled."""
        text = self.source
        if self.scale is not None:
            text += (f" [written {self.written_value:g} at the reference node, x{self.scale_factor:.6g} "
                     f"{self.scale} scaling rule = {self.value:.6g}]")
        if self.assumption:
            text += " [ASSUMPTION]"
        return text


@dataclass(frozen=True)
class Node:
    name: str
    description: str
    feature_nm: Figure


@dataclass(frozen=True)
class Scaling:
    """Node scaling rule: energy ∝ C·V² with C ∝ feature size; area by a fixed factor."""

    from_nm: Figure
    to_nm: Figure
    from_v: Figure
    to_v: Figure
    area_factor: Figure
    rule: str

    @property
    def energy_factor(self) -> float:
        v = self.to_v.value / self.from_v.value
        return (self.to_nm.value / self.from_nm.value) * v * v    # v * v: inf on overflow, never OverflowError


@dataclass(frozen=True)
class Arith:
    """Integer arithmetic fits: mult(a, w) = c2·a·w + c1·sqrt(a·w); add(n) = c·n (same form for area)."""

    mult_pj_per_bit2: Figure
    mult_pj_per_bit: Figure
    add_pj_per_bit: Figure
    mult_area_um2_per_bit2: Figure
    mult_area_um2_per_bit: Figure
    add_area_um2_per_bit: Figure
    # float32 multiply and add (optional): the fp32 MACs of ONNX Runtime's float ConvTranspose on float32 weights
    fp32_mult_pj: Figure | None = None
    fp32_add_pj: Figure | None = None


@dataclass(frozen=True)
class Logic:
    """Standard cells: energy per switching event of one cell, and cell area."""

    mux2_pj: Figure
    xnor2_pj: Figure
    full_adder_pj: Figure
    dff_pj_per_clock: Figure
    mux2_area_um2: Figure
    xnor2_area_um2: Figure
    full_adder_area_um2: Figure
    dff_area_um2: Figure
    leakage_nw_per_um2: Figure | None = None   # static power density of logic (optional: leakage of units)


@dataclass(frozen=True)
class Converters:
    """Seed 004's ENQ (QE, CE) and KNQ (QK, CK) converter units. QK energy scales with its comparators."""

    qe_pj: Figure
    ce_pj: Figure
    qk_pj_per_comparator: Figure
    ck_pj: Figure
    qe_area_um2: Figure
    ce_area_um2: Figure
    qk_area_um2: Figure
    ck_area_um2: Figure
    qk_reference_comparators: Figure
    qe_delay_ns: Figure | None = None
    ce_delay_ns: Figure | None = None
    qk_delay_ns: Figure | None = None
    ck_delay_ns: Figure | None = None


@dataclass(frozen=True)
class Requant:
    """Requantizer structure: multiplier width, rounding-shift width, clamp comparator width (bits)."""

    multiplier_bits: Figure
    shift_bits: Figure
    clamp_bits: Figure


@dataclass(frozen=True)
class Alu:
    """Operand widths (bits) of the compares (pooling, clip) and adds (residual) outside the MAC array."""

    compare_bits: Figure
    add_bits: Figure


@dataclass(frozen=True)
class SramMacro:
    """One CACTI SRAM macro (one bank, one port). Per-bit energy = energy per access / word_bits."""

    row: str
    cell_type: str
    size_bytes: Figure
    word_bits: Figure
    read_pj_per_access: Figure
    write_pj_per_access: Figure
    leakage_mw: Figure
    area_mm2: Figure
    access_ns: Figure
    cycle_ns: Figure

    @property
    def read_pj_per_bit(self) -> float:
        return self.read_pj_per_access.value / self.word_bits.value

    @property
    def write_pj_per_bit(self) -> float:
        return self.write_pj_per_access.value / self.word_bits.value


@dataclass(frozen=True)
class Sram:
    weights: SramMacro
    activations: SramMacro


@dataclass(frozen=True)
class Dram:
    pj_per_bit: Figure
    weights_on_chip: bool


@dataclass(frozen=True)
class TechTable:
    source: str                       # the file it was read from
    node: Node
    scaling: Scaling | None
    arith: Arith
    logic: Logic
    converters: Converters
    requant: Requant
    alu: Alu
    sram: Sram
    dram: Dram
    rows: dict = field(default_factory=dict)   # dotted row -> Figure, every figure of the table

    @property
    def name(self) -> str:
        return self.node.name

    def figure(self, row: str) -> Figure:
        return self.rows[row]


# ----------------------------------------------------------------------------------------------------------
# Finding a table: --hw tsmc90, --hw tsmc90.yaml, --hw hwconfigs/tsmc90.yaml.


def shipped_hwconfigs_dir() -> Path:
    """The directory of the tables shipped with hwsim (inside the package for wheel installs)."""
    inside = Path(simulator.__file__).parent / "hwconfigs"
    if inside.is_dir():
        return inside
    return Path(simulator.__file__).parents[1] / "hwconfigs"


def shipped_table_names() -> list[str]:
    directory = shipped_hwconfigs_dir()
    if not directory.is_dir():
        return []
    return sorted(p.stem for p in directory.glob("*.yaml"))


def resolve_hw_path(arg: str) -> Path:
    """`arg` as given if it is a file; else `arg` or `arg.yaml` in ./hwconfigs, then in the shipped tables."""
    given = Path(arg)
    try:
        if given.is_file():
            return given
        for directory in (Path.cwd() / "hwconfigs", shipped_hwconfigs_dir()):
            for candidate in (directory / arg, directory / (arg + ".yaml")):
                if candidate.is_file():
                    return candidate
    except OSError as exc:  # a name the system refuses, e.g. longer than 255 bytes
        raise HwsimError(f"no hardware table: a name of {len(arg)} characters cannot be a file "
                         f"({exc.strerror or exc})", source="--hw") from None
    names = ", ".join(shipped_table_names()) or "(none found)"
    raise HwsimError(f"no hardware table '{arg}': not a file, and not in ./hwconfigs or "
                     f"{shipped_hwconfigs_dir()}; shipped tables: {names}", source="--hw")


# ----------------------------------------------------------------------------------------------------------
# Loading and validation.


# Parsed hardware files, keyed by a digest of their bytes: parsing a design's YAML takes ~60 ms, reading it well
# under 1 ms, and `hwsim sweep` loads the same few files once per design point. A copy is handed out (callers
# may modify what they get).
_PARSED: dict = {}
_PARSED_MAX = 32


def read_yaml(path, source: str | None = None):
    """Load a YAML file with simulator.safeyaml (size, depth, alias, duplicate-key and number limits); an
    unreadable file, a syntax error or a limit is one HwsimError naming the file."""
    import copy
    import hashlib

    source = source or str(path)
    raw = read_document(path, source, "a hardware description")
    key = hashlib.sha256(raw).digest()
    if key in _PARSED:
        return copy.deepcopy(_PARSED[key])
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise HwsimError("not a UTF-8 text file", source=source) from None
    # .inf / .nan are let through to FieldReader.figure, which refuses them naming the row (every number of a
    # table or an architecture is a figure); numbers that overflow (1.0e+400) are refused by the loader.
    data = load_yaml(text, source, keep_special_floats=True)
    if len(_PARSED) >= _PARSED_MAX:
        _PARSED.clear()
    _PARSED[key] = data
    return copy.deepcopy(data)


def load_techtable(path) -> TechTable:
    """Read and validate a technology table. Any problem raises one HwsimError naming file and field."""
    return parse_techtable(read_yaml(path), str(path))


TOP_LEVEL = ("format", "node", "scaling", "arith", "logic", "converters", "requant", "alu", "sram", "dram")


def parse_techtable(data, source: str, ignore_keys: tuple[str, ...] = ()) -> TechTable:
    """Validate an already-parsed YAML mapping. `ignore_keys`: top-level keys another loader validates
    (e.g. a later `architecture:` section in the same --hw file)."""
    r = FieldReader(source)
    top = r.mapping(data, "", required=[k for k in TOP_LEVEL if k != "scaling"],
                    optional=["scaling", *ignore_keys])
    fmt = top["format"]
    if fmt != FORMAT:
        r.fail("format", f"must be '{FORMAT}', got {short_repr(fmt)}")

    node = r.read_node(top["node"])
    r.scaling = r.read_scaling(top["scaling"], node) if "scaling" in top else None
    table = TechTable(
        source=source,
        node=node,
        scaling=r.scaling,
        arith=r.read_arith(top["arith"]),
        logic=r.read_logic(top["logic"]),
        converters=r.read_converters(top["converters"]),
        requant=r.read_requant(top["requant"]),
        alu=r.read_alu(top["alu"]),
        sram=r.read_sram(top["sram"]),
        dram=r.read_dram(top["dram"]),
        rows=r.rows,
    )
    return table


def _show(value) -> str:
    if isinstance(value, bool):
        return f"{str(value).lower()} (a boolean)"
    if isinstance(value, str):
        return f"{short_repr(value)} (a string)"
    if value is None:
        return "nothing (null)"
    if isinstance(value, (dict, list)):
        return f"a {'mapping' if isinstance(value, dict) else 'list'}"
    return short_repr(value)


class FieldReader:
    """Walks the parsed YAML, collecting figures by dotted row; every failure names the row."""

    def __init__(self, source: str):
        self.source = source
        self.rows: dict[str, Figure] = {}
        self.scaling: Scaling | None = None

    def fail(self, row: str, message: str):
        raise HwsimError(message, source=self.source, field=row or None)

    # -- structure ----------------------------------------------------------------------------------------

    def mapping(self, value, row: str, required, optional=()) -> dict:
        if not isinstance(value, dict):
            self.fail(row, f"must be a mapping, got {_show(value)}")
        allowed = list(required) + list(optional)
        for key in value:
            if not isinstance(key, str):
                self.fail(row, f"keys must be strings, got {_show(key)}")
            if key not in allowed:
                close = difflib.get_close_matches(key, allowed, n=1)
                hint = f"; did you mean '{close[0]}'?" if close else f"; allowed: {', '.join(allowed)}"
                self.fail(_join(row, key), f"unknown field{hint}")
        for key in required:
            if key not in value:
                self.fail(_join(row, key), "missing required field")
        return value

    def text(self, parent: dict, key: str, row: str) -> str:
        value = parent[key]
        if not isinstance(value, str) or not value.strip():
            self.fail(_join(row, key), f"must be a non-empty string, got {_show(value)}")
        return value

    def flag(self, parent: dict, key: str, row: str) -> bool:
        value = parent[key]
        if not isinstance(value, bool):
            self.fail(_join(row, key), f"must be true or false, got {_show(value)}")
        return value

    def figure(self, parent: dict, key: str, row: str, kind: str = "nonnegative") -> Figure:
        """A figure `{value, source[, assumption][, scale]}`. kind: nonnegative | positive | count."""
        full = _join(row, key)
        raw = parent[key]
        if not isinstance(raw, dict):
            self.fail(full, f"must be a mapping {{value: ..., source: '...'}} (every number needs a "
                            f"source), got {_show(raw)}")
        self.mapping(raw, full, required=["value", "source"], optional=["assumption", "scale"])
        value = raw["value"]
        what = {"nonnegative": "a non-negative number", "positive": "a positive number",
                "count": "a positive integer"}[kind]
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            hint = ""
            if isinstance(value, str):
                hint = " (YAML reads 1e-3 as a string: write 1.0e-3, with a decimal point and a signed exponent)"
            self.fail(full, f"must be {what}, got {_show(value)}{hint}")
        if not math.isfinite(value):
            self.fail(full, f"must be {what}, got {value!r}")
        if value < 0 or (kind != "nonnegative" and value == 0):
            self.fail(full, f"must be {what}, got {value!r}")
        if value > MAX_FIGURE:
            self.fail(full, f"must be at most {MAX_FIGURE:g} (no figure of a design is larger), got {value:g}")
        if kind == "count" and value != int(value):
            self.fail(full, f"must be {what}, got {value!r}")
        source = raw["source"]
        if not isinstance(source, str) or not source.strip():
            self.fail(_join(full, "source"), f"must be a non-empty string, got {_show(source)}")
        assumption = raw.get("assumption", False)
        if not isinstance(assumption, bool):
            self.fail(_join(full, "assumption"), f"must be true or false, got {_show(assumption)}")

        scale = raw.get("scale")
        fig = Figure(row=full, value=int(value) if kind == "count" else float(value), source=source,
                     assumption=assumption)
        if scale is not None:
            fig = self._scaled(fig, scale, key)
        self.rows[full] = fig
        return fig

    def _scaled(self, fig: Figure, scale, key: str) -> Figure:
        row = _join(fig.row, "scale")
        if scale not in ("energy", "area"):
            self.fail(row, f"must be 'energy' or 'area', got {_show(scale)}")
        if self.scaling is None:
            self.fail(row, "needs a top-level 'scaling:' section (the rule that scales it)")
        if scale == "energy" and "_pj" not in key:
            self.fail(row, "'energy' scaling applies only to energy figures (names containing _pj)")
        if scale == "area" and not ("_um2" in key or "_mm2" in key):
            self.fail(row, "'area' scaling applies only to area figures (names containing _um2 or _mm2)")
        if scale == "energy":
            factor, rows = self.scaling.energy_factor, ENERGY_SCALING_ROWS
        else:
            factor, rows = self.scaling.area_factor.value, AREA_SCALING_ROWS
        if not (math.isfinite(factor) and 0 < factor <= MAX_FIGURE):
            self.fail(row, f"the {scale} scaling factor of the 'scaling:' rule is {factor:g}: out of range "
                           f"(must be positive and at most {MAX_FIGURE:g})")
        scaled = fig.value * factor
        if not (math.isfinite(scaled) and scaled <= MAX_FIGURE):
            self.fail(fig.row, f"{fig.value:g} x{factor:.6g} ({scale} scaling rule) = {scaled:g}: out of range "
                               f"after scaling (must be at most {MAX_FIGURE:g})")
        return Figure(row=fig.row, value=scaled, source=fig.source, assumption=fig.assumption,
                      scale=scale, written_value=fig.value, scale_factor=factor, depends_on=rows)

    # -- sections -----------------------------------------------------------------------------------------

    def read_node(self, raw) -> Node:
        m = self.mapping(raw, "node", required=["name", "description", "feature_nm"])
        return Node(name=self.text(m, "name", "node"), description=self.text(m, "description", "node"),
                    feature_nm=self.figure(m, "feature_nm", "node", "positive"))

    def read_scaling(self, raw, node: Node) -> Scaling:
        keys = ["rule", "from_nm", "to_nm", "from_v", "to_v", "area_factor"]
        m = self.mapping(raw, "scaling", required=keys)
        rule = self.text(m, "rule", "scaling")
        for k in keys[1:]:
            if isinstance(m[k], dict) and "scale" in m[k]:
                self.fail(f"scaling.{k}.scale", "the scaling rule itself cannot be scaled")
        figs = {k: self.figure(m, k, "scaling", "positive") for k in keys[1:]}
        if figs["to_nm"].value != node.feature_nm.value:
            self.fail("scaling.to_nm", f"must equal node.feature_nm ({node.feature_nm.value:g}), "
                                             f"got {figs['to_nm'].value:g}")
        scaling = Scaling(rule=rule, **figs)
        factor = scaling.energy_factor
        if not (math.isfinite(factor) and 1 / MAX_FIGURE <= factor <= MAX_FIGURE):
            self.fail("scaling", f"energy factor (to_nm/from_nm) x (to_v/from_v)^2 = {factor:g} is out of range "
                                 f"({1 / MAX_FIGURE:g} to {MAX_FIGURE:g})")
        return scaling

    def read_arith(self, raw) -> Arith:
        keys = ["mult_pj_per_bit2", "mult_pj_per_bit", "add_pj_per_bit",
                "mult_area_um2_per_bit2", "mult_area_um2_per_bit", "add_area_um2_per_bit"]
        optional = ["fp32_mult_pj", "fp32_add_pj"]
        m = self.mapping(raw, "arith", required=keys, optional=optional)
        return Arith(**{k: self.figure(m, k, "arith") for k in keys + [k for k in optional if k in m]})

    def read_logic(self, raw) -> Logic:
        keys = ["mux2_pj", "xnor2_pj", "full_adder_pj", "dff_pj_per_clock",
                "mux2_area_um2", "xnor2_area_um2", "full_adder_area_um2", "dff_area_um2"]
        m = self.mapping(raw, "logic", required=keys, optional=["leakage_nw_per_um2"])
        figs = {k: self.figure(m, k, "logic") for k in keys}
        if "leakage_nw_per_um2" in m:
            figs["leakage_nw_per_um2"] = self.figure(m, "leakage_nw_per_um2", "logic")
        return Logic(**figs)

    def read_converters(self, raw) -> Converters:
        keys = ["qe_pj", "ce_pj", "qk_pj_per_comparator", "ck_pj",
                "qe_area_um2", "ce_area_um2", "qk_area_um2", "ck_area_um2"]
        delays = ["qe_delay_ns", "ce_delay_ns", "qk_delay_ns", "ck_delay_ns"]
        m = self.mapping(raw, "converters", required=keys + ["qk_reference_comparators"], optional=delays)
        figs = {k: self.figure(m, k, "converters") for k in keys}
        figs["qk_reference_comparators"] = self.figure(m, "qk_reference_comparators", "converters", "count")
        for k in delays:
            if k in m:
                figs[k] = self.figure(m, k, "converters", "positive")
        return Converters(**figs)

    def read_requant(self, raw) -> Requant:
        keys = ["multiplier_bits", "shift_bits", "clamp_bits"]
        m = self.mapping(raw, "requant", required=keys)
        return Requant(**{k: self.figure(m, k, "requant", "count") for k in keys})

    def read_alu(self, raw) -> Alu:
        keys = ["compare_bits", "add_bits"]
        m = self.mapping(raw, "alu", required=keys)
        return Alu(**{k: self.figure(m, k, "alu", "count") for k in keys})

    def read_sram_macro(self, raw, row: str) -> SramMacro:
        counts = ["size_bytes", "word_bits"]
        numbers = ["read_pj_per_access", "write_pj_per_access", "leakage_mw", "area_mm2", "access_ns", "cycle_ns"]
        m = self.mapping(raw, row, required=["cell_type"] + counts + numbers)
        figs = {k: self.figure(m, k, row, "count") for k in counts}
        figs.update({k: self.figure(m, k, row) for k in numbers})
        return SramMacro(row=row, cell_type=self.text(m, "cell_type", row), **figs)

    def read_sram(self, raw) -> Sram:
        m = self.mapping(raw, "sram", required=["weights", "activations"])
        return Sram(weights=self.read_sram_macro(m["weights"], "sram.weights"),
                    activations=self.read_sram_macro(m["activations"], "sram.activations"))

    def read_dram(self, raw) -> Dram:
        m = self.mapping(raw, "dram", required=["pj_per_bit", "weights_on_chip"])
        return Dram(pj_per_bit=self.figure(m, "pj_per_bit", "dram"),
                    weights_on_chip=self.flag(m, "weights_on_chip", "dram"))


def _join(row: str, key: str) -> str:
    return f"{row}.{key}" if row else key
