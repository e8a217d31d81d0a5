"""Reports: plain dicts (the JSON schema of docs/report-schema.md) and their terminal tables."""

from __future__ import annotations

import json
import math

import numpy as np

from . import __version__
from .errors import HwsimError, safe_text
from .graph import Model
from .csvout import compare_csv, cost_csv  # noqa: F401  (the --csv views; kept importable from here)

VIEW_OPS = ("flatten", "reshape", "concat")  # share storage with their inputs


def weight_storage_bits(model: Model) -> int:
    bits = 0
    for lay in model.layers:
        if lay.weight is not None:
            bits += lay.weight.size * lay.weight_enc.storage_bits
        if lay.bias is not None:
            bits += lay.bias.size * lay.bias_bits
        if lay.codebook is not None:
            bits += lay.codebook.size * lay.weight_enc.table_bits
    return bits


def activation_storage_bits(model: Model) -> int:
    """Bits to store every activation of one inference (seed 004's NB): the input and each layer's output."""
    bits = math.prod(model.input_shape) * model.input_enc.storage_bits
    for lay in model.layers:
        if lay.op not in VIEW_OPS:
            bits += math.prod(lay.out_shape) * lay.out_enc.storage_bits
    return bits


def output_array(model: Model, codes: np.ndarray) -> np.ndarray:
    """The output tensor as the model defines it: its codes in the narrowest fitting integer dtype, or, when the
    model ends in a dequantizer (`output.dequantize`), float32 (code - zero_point) * scale as ONNX DequantizeLinear."""
    enc = model.layers[-1].out_enc
    if getattr(model, "output_dequantize", False):
        y = (np.asarray(codes, dtype=np.int64) - enc.zero_point).astype(np.float32) * np.float32(enc.scale)
        if model.output_dequantize == "tflite_optimized":
            # LiteRT's optimized DEQUANTIZE (NEON code through NEON_2_SSE): each sample's blocks of 8 values as
            # float32(code) * scale + float32(-zp * scale), two float32 roundings; the size mod 8 left as above
            flat = y.reshape(y.shape[0], -1)
            body = flat.shape[1] // 8 * 8
            c = np.asarray(codes).reshape(flat.shape)[:, :body].astype(np.float32)
            flat[:, :body] = c * np.float32(enc.scale) + np.float32(np.float32(-enc.zero_point) * np.float32(enc.scale))
        bias = getattr(model, "output_bias", None)
        if bias is not None:   # a float bias added after dequantization (output.bias), per output channel
            y = y + np.asarray(bias, np.float32).reshape((1, -1) + (1,) * (y.ndim - 2))
        return y
    lo, hi = model.layers[-1].out_enc.code_range()
    for dtype in (np.uint8, np.int8, np.uint16, np.int16, np.int32):
        info = np.iinfo(dtype)
        if info.min <= lo and hi <= info.max:
            return codes.astype(dtype)
    return codes.astype(np.int64)


def output_values(model: Model, codes: np.ndarray) -> np.ndarray:
    """The output as real values, float32: what the model's output means (`--output-values`). A model that ends
    in a dequantizer already defines them (output_array); otherwise decoded code value x scale, computed in float32
    as ONNX DequantizeLinear does."""
    if getattr(model, "output_dequantize", False):
        return output_array(model, codes)
    enc = model.layers[-1].out_enc
    return enc.decode(np.asarray(codes)).astype(np.float32) * np.float32(enc.value_scale)


def check_classifier(model: Model, option: str) -> None:
    """Refuse an option that needs classes when the model's output has a single value per sample."""
    classes = math.prod(model.layers[-1].out_shape)
    if classes < 2:
        raise HwsimError(f"needs a classifier, but the model's output has {classes} value per sample (no class "
                         f"to pick)", source=model.source, field=option)


def predictions(model: Model, codes: np.ndarray, labels, count: int) -> list:
    """The first `count` samples' predicted classes (argmax of the real output values, ties to the lower class),
    with their labels when there are some."""
    values = output_values(model, codes[:count]).reshape(min(count, len(codes)), -1)
    return [{"sample": i, "predicted": int(c), "label": None if labels is None else int(labels[i])}
            for i, c in enumerate(np.argmax(values, axis=1))]


def _enc_summary(enc) -> str:
    d = enc.to_dict()
    kind = d.pop("kind")
    if kind == "knq":
        return f"knq T={d['t_bits']} F={d['frac_bits']} d=[{d['centroids'][0]}..{d['centroids'][-1]}]"
    if kind == "enq":
        return f"enq E={d['e_bits']} qm={d['qm_bits']} F={d['frac_bits']}"
    if kind == "uniform" and "bits" in d:
        sign = "s" if d.get("signed") else "u"
        zp = d.get("zero_point")
        zps = set(zp) if isinstance(zp, list) else {zp}
        if zps == {0}:
            return f"{sign}{d['bits']}"
        return f"{sign}{d['bits']} zp={zp if len(zps) > 1 or not isinstance(zp, list) else zp[0]}"
    if kind == "codebook":
        return f"codebook {d['index_bits']}b->{d['table_bits']}b"
    if kind == "pow2":
        return f"pow2 {d['bits']}b"
    return kind


def run_report(model, result, cost, input_desc, accuracy, wall_s) -> dict:
    """The run report: the functional facts of each layer (per inference) beside the architecture's costs."""
    per = result.trace.per_inference()
    rep = cost_report(cost, network=model.source, network_name=model.name)
    for entry, lay, counts in zip(rep["layers"], model.layers, per.layers):
        entry.update({
            "output_shape": list(lay.out_shape), "output_encoding": _enc_summary(lay.out_enc),
            "weight_encoding": _enc_summary(lay.weight_enc) if lay.weight_enc is not None else None,
            "macs_by_bits": {**{f"{a}x{w}": v for (a, w), v in sorted(counts.macs.items())},
                             **({"fp32": counts.fp32_macs} if counts.fp32_macs else {})},
            "binary_macs": counts.binary_macs, "popcount_words": counts.popcount_words,
            "lut_reads": counts.lut_reads, "qe": counts.qe, "ce": counts.ce, "qk": counts.qk, "ck": counts.ck,
            "requants": counts.requants, "compares": counts.compares, "adds": counts.adds, "muls": counts.muls,
            "zero_act_macs": counts.zero_act_macs, "zero_any_macs": counts.zero_any_macs,
            "overflows": counts.overflows, "datapath": counts.datapath,
            "pair_saturations": counts.pair_saturations, "pair_saturated_outputs": counts.pair_saturated_outputs,
        })
    rep.update({
        "model": {"path": model.source, "name": model.name},
        "input": input_desc,
        "samples": result.trace.batch,
        "accuracy": accuracy,
        "weight_storage_bits": weight_storage_bits(model),
        "activation_storage_bits": activation_storage_bits(model),
        "overflows": int(sum(c.overflows for c in result.trace.layers)),
    })
    from . import jit
    rep["timing"].update({"kernels": jit.mode(), "functional_s": result.functional_s, "wall_s": wall_s,
                          "inferences_per_s": (result.trace.batch / result.functional_s
                                               if result.functional_s > 0 else None)})
    return rep


ARCH_NOTES = (
    "cycles: SCALE-Sim fold schedule on the array (systolic fill/drain included) plus stalls by cause (onload, "
    "offload, DRAM, buffer bandwidth, bank conflicts, converter stages), summed per layer; the causes are assumed "
    "not to hide one another",
    "memory: exact staging-tile footprints with halo reuse between DRAM and each buffer (refetches when tiles do "
    "not fit), array-edge reads per the fold schedule, accesses in physical words (partial words cost a word)",
    "between layers an activation stays on chip whole when it fits in half of the buffer holding inputs and "
    "outputs (its DRAM round trip is skipped), otherwise it goes through DRAM whole; weights are fetched once per "
    "batch",
    "not modelled: cycle-accurate DRAM (bandwidth + fixed latency per transfer only), on-chip network "
    "contention and energy, inter-layer fusion (tile-by-tile across layers), clock tree and control logic, "
    "run-length compression of DRAM traffic",
)


def cost_report(cost, network: str, network_name: str | None = None) -> dict:
    """The architecture part of a report (run, estimate, compare): docs/report-schema.md."""
    hw, arch, tech = cost.hardware, cost.hardware.arch, cost.hardware.tech
    batch = cost.batch
    energy = cost.energy_pj
    macs = sum(layer.macs for layer in cost.layers) / batch
    layers = []
    for layer in cost.layers:
        layers.append({
            "name": layer.name, "op": layer.op, "path": layer.path, "macs": layer.macs / batch,
            "cycles": layer.cycles, "compute_cycles": layer.compute_cycles,
            "stall_cycles": dict(layer.stall_cycles), "utilization": layer.utilization,
            "gated_macs": layer.gated_macs / batch, "active_macs": (layer.macs - layer.gated_macs) / batch,
            "energy_pj": layer.total_energy_pj, "energy_breakdown_pj": dict(layer.energy_pj),
            "accesses": layer.accesses, "dram_bits": layer.dram_bits,
            "mapping": layer.mapping,
        })
    clock = cost.clock
    return checked_plain({
        "hwsim_version": __version__,
        "network": {"path": network, "name": network_name or network},
        "hw": {"path": hw.path, "name": arch.name, "technology": tech.name,
               "technology_nm": tech.node.feature_nm.value, "technology_source": tech.source,
               "architecture_source": arch.source, "default_architecture": arch.defaulted},
        "architecture": arch.resolved,
        "batch": batch,
        "cycles": cost.cycles,
        "latency_s": cost.latency_s,
        "clock_hz": clock.hz,
        "clock": {"mode": clock.mode, "limited_by": clock.limited_by, "critical_path_ns": clock.delay_ns,
                  "critical_paths_ns": clock.considered, "units_without_delay": clock.without_delay},
        "throughput_inferences_per_s": cost.throughput,
        "macs_per_inference": macs,
        "gated_macs_per_inference": sum(layer.gated_macs for layer in cost.layers) / batch,
        "energy_pj_per_inference": energy,
        "energy_breakdown_pj": cost.energy_breakdown_pj,
        "edp_j_s": energy * 1e-12 * cost.latency_s,
        "tops_per_w": 2 * macs / energy if energy else None,
        "area_mm2": cost.area.total_mm2,
        "area_breakdown_mm2": dict(cost.area.breakdown_mm2),
        "leakage_mw": cost.area.leakage_mw,
        "layers": layers,
        "assumptions": list(cost.assumptions),
        "assumption_figures": _assumption_figures(cost),
        "notes": list(ARCH_NOTES),
        "timing": {"cost_s": cost.cost_s},
    })


def _assumption_figures(cost) -> list:
    """Each assumption row with its value and what it means (the figure's `source` text in the design's files)."""
    rows = {**cost.hardware.tech.rows, **cost.hardware.arch.rows}
    return [{"row": row, "value": rows[row].value, "source": rows[row].source} for row in cost.assumptions
            if row in rows]


def add_input_saturation(rep: dict, stats: dict) -> dict:
    """The input quantizer's clamping (commands.input_saturation) as report fields; nothing when no input was
    quantized (shapes only)."""
    if "saturated_codes" in stats:
        rep.update({"input_float_values": stats["float_values"], "input_saturated_codes": stats["saturated_codes"],
                    "input_saturated_fraction": stats["saturated_fraction"], "input_range": stats["range"]})
    return rep


def plain(value):
    """numpy scalars -> Python numbers, non-finite floats -> None, recursively: the report is strict JSON."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    return value


def nonfinite_path(value, path: str = ""):
    """(dotted path, value) of the first inf or NaN number in a report tree, or None when every number is finite."""
    if isinstance(value, dict):
        for key, item in value.items():
            found = nonfinite_path(item, f"{path}.{key}" if path else str(key))
            if found:
                return found
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            found = nonfinite_path(item, f"{path}[{i}]")
            if found:
                return found
    elif isinstance(value, (float, np.floating)) and not math.isfinite(value):
        return path or "(report)", float(value)
    return None


COST_OVERFLOW = ("the cost arithmetic overflowed: a figure of the design is too large (or too small, as a "
                 "divisor) for this network; check the --hw file's figures")


def check_finite(rep, source: str | None = None, why: str = "a report holds finite numbers only") -> None:
    """Refuse a report holding inf or NaN: one HwsimError naming the figure, never inf in a table or Infinity in
    the JSON."""
    found = nonfinite_path(rep)
    if found:
        path, value = found
        raise HwsimError(f"is {value} (not a finite number): {why}", source=source, field=path)


def checked_plain(rep: dict) -> dict:
    """`plain(rep)` of a cost report, after refusing any non-finite figure (naming the --hw file and the figure)."""
    check_finite(rep, source=(rep.get("hw") or {}).get("path"), why=COST_OVERFLOW)
    return plain(rep)


def to_json(rep) -> str:
    """The report as strict JSON text (allow_nan=False: never Infinity or NaN); a non-finite number is one
    HwsimError naming it. numpy scalars and arrays are written as Python numbers and lists."""
    check_finite(rep)

    def default(obj):
        if isinstance(obj, (np.generic, np.ndarray)):
            return obj.tolist()
        raise TypeError(f"{type(obj).__name__} is not JSON serializable")

    try:
        return json.dumps(rep, indent=2, allow_nan=False, default=default) + "\n"
    except ValueError as exc:     # a non-finite number check_finite could not see (inside a numpy array)
        raise HwsimError(f"cannot be written as JSON: {exc}", field="report") from None


# --------------------------------------------------------------------------------------------- terminal

CELL_LIMIT = 200  # characters of a table cell (names from files are escaped and cut to this)
WRAP_MAX = 100    # prose lines are wrapped to the terminal's width, at most this many columns


def wrap(text: str, indent: str = "") -> list:
    """A paragraph as lines no wider than the terminal (or WRAP_MAX columns); continuation lines indented."""
    import shutil
    import textwrap
    width = max(40, min(WRAP_MAX, shutil.get_terminal_size((WRAP_MAX, 24)).columns))
    return textwrap.wrap(text, width, subsequent_indent=indent + "  ", initial_indent=indent,
                         break_on_hyphens=False, break_long_words=False) or [""]


def _s(value, limit: int = 200) -> str:
    """A string from a file (name, path, metadata) made safe for one terminal line: escaped and bounded."""
    return safe_text(value, limit)


def _table(headers, rows, align=None):
    headers = [_s(h, CELL_LIMIT) for h in headers]
    rows = [[_s(c, CELL_LIMIT) for c in row] for row in rows]
    cols = list(zip(*([headers] + rows))) if rows else [[h] for h in headers]
    widths = [max(len(str(c)) for c in col) for col in cols]
    align = align or ["<"] + [">"] * (len(headers) - 1)
    fmt = "  ".join(f"{{:{a}{w}}}" for a, w in zip(align, widths))
    lines = [fmt.format(*headers), "  ".join("-" * w for w in widths)]
    lines += [fmt.format(*[str(c) for c in row]) for row in rows]
    return "\n".join(lines)


def _si(value, unit):
    for factor, prefix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= factor:
            return f"{value / factor:.3g} {prefix}{unit}"
    return f"{value:.3g} {unit}"


def _energy(pj):
    for factor, unit in ((1e6, "uJ"), (1e3, "nJ")):
        if abs(pj) >= factor:
            return f"{pj / factor:.4g} {unit}"
    return f"{pj:.4g} pJ"


def _seconds(s):
    for factor, unit in ((1, "s"), (1e-3, "ms"), (1e-6, "us")):
        if s >= factor:
            return f"{s / factor:.4g} {unit}"
    return f"{s * 1e9:.4g} ns"


def format_cost(rep: dict) -> str:
    """Per-layer cycles and energy, then the model's totals: the part of run and estimate about the hardware."""
    rows = []
    for layer in rep["layers"]:
        stalls = {k: v for k, v in layer["stall_cycles"].items() if v}
        top = ", ".join(f"{k} {v:,}" for k, v in sorted(stalls.items(), key=lambda kv: -kv[1])[:2])
        rows.append([layer["name"], layer["op"], f"{layer['macs']:,.0f}", f"{layer['cycles']:,}",
                     f"{layer['compute_cycles']:,}", top or "-", f"{100 * layer['utilization']:.0f}%",
                     _energy(layer["energy_pj"])])
    hw = rep["hw"]
    arch = f"{_s(hw['name'])}" + (" (default architecture)" if hw["default_architecture"] else "")
    out = [f"hw {_s(hw['path'])}: {arch} on {_s(hw['technology'])} ({hw['technology_nm']:g} nm); batch {rep['batch']}; "
           f"cycles and latency per batch, energy per inference", "",
           _table(["layer", "op", "MACs", "cycles", "compute", "largest stalls", "util", "energy"], rows,
                  ["<", "<", ">", ">", ">", "<", ">", ">"]), ""]
    total = rep["energy_pj_per_inference"]
    breakdown = [[k, _energy(v), f"{100 * v / total:.1f}%" if total else "-"]
                 for k, v in rep["energy_breakdown_pj"].items() if v]
    out += [_table(["energy", "per inference", "share"], breakdown), ""]
    area = sorted(rep["area_breakdown_mm2"].items(), key=lambda kv: -kv[1])
    out += [_table(["area", "mm2", "share"], [[k, f"{v:.4f}", f"{100 * v / rep['area_mm2']:.1f}%"] for k, v in area]),
            ""]
    clock = rep["clock"]
    how = "given" if clock["mode"] == "given" else \
        f"derived: {clock['limited_by']} ({clock['critical_path_ns']:.3g} ns critical path)"
    out.append("hardware estimates (cost model: cited figures and the assumptions below; not measurements):")
    out.append(f"cycles                {rep['cycles']:,} per batch of {rep['batch']}")
    out.append(f"clock                 {rep['clock_hz'] / 1e6:.4g} MHz ({how})")
    out.append(f"latency               {_seconds(rep['latency_s'])}")
    out.append(f"throughput            {rep['throughput_inferences_per_s']:,.1f} inferences/s of the modelled hardware")
    out.append(f"energy per inference  {_energy(total)}")
    if rep["tops_per_w"]:
        out.append(f"efficiency            {rep['tops_per_w']:.3g} TOPS/W (2 ops per MAC)")
    out.append(f"area                  {rep['area_mm2']:.4g} mm2 (leakage {rep['leakage_mw']:.3g} mW)")
    gated = rep["gated_macs_per_inference"]
    out.append(f"MACs per inference    {rep['macs_per_inference']:,.0f}"
               + (f" ({gated:,.0f} gated on a zero operand, {rep['macs_per_inference'] - gated:,.0f} active)"
                  if gated else ""))
    return "\n".join(out)


def format_run(rep: dict) -> str:
    rows = []
    for layer in rep["layers"]:
        events = []
        if layer["binary_macs"]:
            events.append(f"{layer['popcount_words']:,.0f} pc-words")
        for key in ("lut_reads", "muls", "qe", "ce", "qk", "ck"):
            if layer.get(key):
                events.append(f"{key.replace('_reads', '')} {layer[key]:,.0f}")
        if layer["overflows"]:
            events.append(f"OVERFLOW {layer['overflows']:,.0f}")
        if layer.get("pair_saturations"):
            events.append(f"PAIR-SAT {layer['pair_saturations']:,.0f}")
        bits = ", ".join(layer["macs_by_bits"]) or ("1x1 xnor" if layer["binary_macs"] else "")
        rows.append([layer["name"], layer["op"], "x".join(map(str, layer["output_shape"])), layer["output_encoding"],
                     bits, " ".join(events)])
    out = [f"hwsim {rep['hwsim_version']}  model {_s(rep['model']['path'])} ({_s(rep['model']['name'])})",
           f"input: {_s(rep['input'], 400)}; {rep['samples']} inference(s) run", "",
           _table(["layer", "op", "output", "encoding", "a x w bits", "other events"], rows,
                  ["<", "<", "<", "<", "<", "<"]), "", format_cost(rep)]
    out += ["", "exact, from the model and its bit-exact run:"]
    out.append(f"weight storage        {rep['weight_storage_bits']:,} bits ({rep['weight_storage_bits'] / 8 / 1024:.2f} KiB)")
    out.append(f"activation storage    {rep['activation_storage_bits']:,} bits "
               f"({rep['activation_storage_bits'] / 8 / 1024:.2f} KiB, all activations of one inference)")
    if rep["accuracy"] is not None:
        out.append(f"accuracy              {100 * rep['accuracy']:.2f}% ({rep['samples']} labelled samples)")
    if rep["overflows"]:
        out.append(f"accumulator overflows {rep['overflows']:,} outputs over the whole run")
    out += saturation_warning(rep)
    out += _predictions(rep)
    out += wrap(_timing_line(rep))
    out += _notes(rep)
    return "\n".join(out)


def _timing_line(rep: dict) -> str:
    """How fast the simulator itself ran on this machine: never to be read as the hardware's throughput."""
    timing = rep["timing"]
    parts = [f"cost model {timing['cost_s'] * 1e3:.1f} ms"]
    if timing.get("functional_s") is not None:
        rate = (f", {timing['inferences_per_s']:,.0f} simulated inferences/s" if timing.get("inferences_per_s")
                else "")
        kernels = f" ({timing['kernels']} kernels)" if timing.get("kernels") else ""
        parts.insert(0, f"integer simulation {timing['functional_s'] * 1e3:.1f} ms{rate}{kernels}")
    return "simulator speed (this machine, not hardware): " + "; ".join(parts)


def _predictions(rep: dict) -> list:
    """The --show table: sample, predicted class, label and whether they agree."""
    shown = rep.get("predictions")
    if not shown:
        return []
    labelled = shown[0]["label"] is not None
    rows = [[p["sample"], p["predicted"]] + ([p["label"], "yes" if p["predicted"] == p["label"] else "NO"]
                                             if labelled else []) for p in shown]
    header = ["sample", "predicted"] + (["label", "correct"] if labelled else [])
    return ["", f"predicted classes (argmax of the output), first {len(shown)} of {rep['samples']} samples:",
            _table(header, rows, [">"] * len(header)), ""]


def saturation_warning(rep: dict) -> list:
    """A warning when float inputs fell outside the input encoding's range and were clamped to its ends."""
    count = rep.get("input_saturated_codes")
    if not count:
        return []
    lo, hi = rep["input_range"]
    return wrap(f"warning: {count:,} of {rep['input_float_values']:,} input values "
                f"({100 * rep['input_saturated_fraction']:.2f}%) lie outside [{lo:.6g}, {hi:.6g}], the range the "
                f"model's input encoding represents, and were clamped to its ends (saturated codes); is the data "
                f"normalised as the model expects (as its calibration data was)?")


def _notes(rep: dict) -> list:
    out = []
    for note in rep["notes"]:
        out += wrap(f"note: {note}")
    figures = rep.get("assumption_figures") or [{"row": row} for row in rep["assumptions"]]
    if figures:
        out += wrap(f"assumptions ({len(figures)} figures the design's files mark 'assumption: true'; the "
                    f"estimates rest on them):")
        for fig in figures:
            value = f" = {fig['value']:g}" if isinstance(fig.get("value"), (int, float)) else ""
            source = str(fig.get("source") or "")
            source = source[len("assumption: "):] if source.lower().startswith("assumption: ") else source
            meaning = f": {_s(source, 400)}" if source else ""
            out += wrap(f"{_s(fig['row'])}{value}{meaning}", indent="  ")
    return out


def format_estimate(rep: dict) -> str:
    out = [f"hwsim {rep['hwsim_version']}  network {_s(rep['network']['path'])} (shapes only: no execution, no accuracy, "
           f"no zero gating)", "", format_cost(rep)] + wrap(_timing_line(rep))
    return "\n".join(out + _notes(rep))


# Rows of the compare table: (label, report key or function, better: "min" / "max" / None, format).
COMPARE_ROWS = (
    ("energy / inference", lambda r: r["energy_pj_per_inference"], "min", _energy),
) + tuple((f"  {cat}", (lambda c: lambda r: r["energy_breakdown_pj"][c])(cat), None, _energy)
          for cat in ("mac", "popcount", "lut", "converters", "requant", "other_alu", "sram", "dram", "leakage",
                      "clock")) + (
    ("cycles (per batch)", lambda r: r["cycles"], "min", lambda v: f"{v:,}"),
    ("clock", lambda r: r["clock_hz"], None, lambda v: f"{v / 1e6:.4g} MHz"),
    ("latency", lambda r: r["latency_s"], "min", _seconds),
    ("throughput", lambda r: r["throughput_inferences_per_s"], "max", lambda v: f"{v:,.1f} inf/s"),
    ("area", lambda r: r["area_mm2"], "min", lambda v: f"{v:.4g} mm2"),
    ("energy-delay product", lambda r: r["edp_j_s"], "min", lambda v: f"{v:.4g} J*s"),
    ("TOPS/W", lambda r: r["tops_per_w"] or 0.0, "max", lambda v: f"{v:.3g}"),
)


def compare_table(rep: dict) -> tuple[list, list]:
    """Header and rows (strings, best design marked '*') of a compare report."""
    designs = rep["designs"]
    header = ["metric"] + [d["hw"]["name"] for d in designs]
    rows = []
    for label, get, better, fmt in COMPARE_ROWS:
        values = [get(d) for d in designs]
        if better is None and not any(values):
            continue
        best = None
        if better and len(set(values)) > 1:
            best = (min if better == "min" else max)(values)
        rows.append([label] + [fmt(v) + (" *" if best is not None and v == best else "") for v in values])
    if rep.get("accuracy") is not None:
        rows.append(["accuracy"] + [f"{100 * rep['accuracy']:.2f}%"] * len(designs))
    return header, rows


def format_compare(rep: dict) -> str:
    header, rows = compare_table(rep)
    out = [f"hwsim {rep['hwsim_version']}  compare {_s(rep['network']['path'])}: {len(rep['designs'])} designs, "
           f"batch {rep['batch']}; {_s(rep['input'], 400)}", "",
           _table(header, rows, ["<"] + [">"] * (len(header) - 1)), ""]
    out += wrap("* best design in that row. Every row but accuracy is a hardware estimate (the designs' cost "
                "models), not a measurement. " + ("Shapes only: no functional run." if rep["accuracy"] is None and
                                                 rep["input"].startswith("shapes") else
                                                 "The functional run happened once: every design computes the "
                                                 "same output bits."))
    for d in rep["designs"]:
        arch = " (default architecture)" if d["hw"]["default_architecture"] else ""
        out.append(f"{_s(d['hw']['name'])}{arch}: {_s(d['hw']['path'])} on {_s(d['hw']['technology'])}, "
                   f"{len(d['assumptions'])} assumption rows")
    out += saturation_warning(rep)
    return "\n".join(out)


def format_validation(rep: dict) -> str:
    rows = []
    datapaths = any(c.get("datapath", "-") not in ("exact", "-") for c in rep["layers"])
    for c in rep["layers"]:
        items = sorted(c["diff_histogram"].items())
        hist = ", ".join(f"{k}:{v}" for k, v in items[:8]) + (f", ... ({len(items)} values)" if len(items) > 8 else "")
        off_exact = c.get("exact_rounding_mismatches", 0)
        rows.append([c["name"], c["op"], c["requant"]] + ([c.get("datapath", "-")] if datapaths else [])
                    + [f"{c['elements']:,}", f"{c['mismatches']:,}", c["max_diff_lsb"], f"{c['local_mismatches']:,}",
                       c["local_max_diff_lsb"], hist or "-",
                       f"{off_exact:,} (max {c['exact_rounding_max_diff_lsb']})" if off_exact else "0"])
    out = wrap(f"validate {_s(rep['model'])} against the float64 reference, each layer rounded in its declared "
               f"requantization mode; input: {_s(rep['input'], 400)}; {rep['samples']} samples")
    out += ["", _table(["layer", "op", "requant"] + (["datapath"] if datapaths else [])
                       + ["elements", "mismatches", "max LSB", "local mism.", "local max", "local |diff| LSB: count",
                          "vs exact rounding"], rows), ""]
    out += wrap("mismatches: the reference runs end to end on its own outputs; local: each reference layer is fed "
                "the engine's inputs, so it shows what that layer alone contributes. vs exact rounding "
                "(information, not a failure): local outputs that differ from the exact real result rounded, "
                "with the largest difference in LSB; a float32 or fixed-point requantization lands there by "
                "its own declared arithmetic.")
    out += _datapath_notes(rep)
    if "accuracy" in rep:
        out.append(f"accuracy of the integer engine: {100 * rep['accuracy']:.2f}%")
    fb = rep.get("float_baseline")
    if fb:
        def pct(v):
            return "n/a (no labels)" if v is None else f"{100 * v:.2f}%"
        agree = "n/a" if fb["top1_agreement"] is None else \
            f"{100 * fb['top1_agreement']:.2f}% ({fb['agreeing_samples']:,} of {fb['samples']:,} samples)"
        out += ["", f"float baseline: {_s(fb['model'])} in {fb['runtime']} ({fb['batching']}); input "
                    f"{_s(repr(fb['input_name']))} <- {_s(fb['input'])}; output {_s(repr(fb['output_name']))}",
                _table(["", "value"], [["float accuracy", pct(fb["float_accuracy"])],
                                       ["integer accuracy (hwsim engine)", pct(fb["integer_accuracy"])],
                                       ["top-1 agreement (float vs integer)", agree],
                                       ["max |float - integer| output", f"{fb['output_max_abs_diff']:.4g}"]],
                       ["<", "<"]),
                ""]
    out += saturation_warning(rep)
    off_exact = [c for c in rep["layers"] if c.get("exact_rounding_mismatches")]
    explained = [c for c in off_exact if c.get("declared")]
    if explained:
        out += ["", "where the declared arithmetic departs from exact rounding (the layer's own runtime path):"]
        for c in explained:
            out += wrap(f"{_s(c['name'])}: {c['exact_rounding_mismatches']:,} of {c['elements']:,} outputs, up to "
                        f"{c['exact_rounding_max_diff_lsb']} LSB: {c['declared']}", indent="  ")
    if off_exact:
        kinds = sorted({c["requant"] if c["requant"] != "-" else c["op"] for c in off_exact})
        out += wrap(f"vs exact rounding: {sum(c['exact_rounding_mismatches'] for c in off_exact):,} output(s) in "
                    f"{len(off_exact)} layer(s) differ from the exact real result rounded, by at most "
                    f"{max(c['exact_rounding_max_diff_lsb'] for c in off_exact)} LSB: the layers' declared "
                    f"arithmetic ({', '.join(kinds)}), not a simulator error (information only)")
    if rep["passed"]:
        tol = "bit-exact" if rep["tolerance_lsb"] == 0 else f"within {rep['tolerance_lsb']} LSB of the reference"
        out.append(f"PASS: every layer is {tol} to its declared arithmetic")
    else:
        out.append(f"FAIL: first layer whose own result differs by more than {rep['tolerance_lsb']} LSB: "
                   f"{_s(rep['first_divergent_layer'])}")
    if rep["first_differing_layer_end_to_end"]:
        out.append(f"end to end, the engine and the reference first part ways at "
                   f"{_s(rep['first_differing_layer_end_to_end'])}")
    return "\n".join(out)


def _datapath_notes(rep: dict) -> list:
    """One line per MAC layer whose declared datapath departs from exact arithmetic (validate.py)."""
    notes = []
    for c in rep["layers"]:
        if c.get("datapath", "-") in ("exact", "-"):
            continue
        explained = c["local_max_diff_lsb"] > rep["tolerance_lsb"] and \
            c["exact_datapath_local_max_diff_lsb"] is not None and \
            c["exact_datapath_local_max_diff_lsb"] <= rep["tolerance_lsb"]
        notes.append(
            f"{_s(c['name'])}: datapath {c['datapath']} (int16 pair saturation, x86 vpmaddubsw): "
            f"{c['pair_saturations']:,} saturated pairs in {c['pair_saturated_outputs']:,} outputs; they changed "
            f"{c['datapath_changed_outputs']:,} of {c['elements']:,} output codes vs the exact datapath. "
            f"The exact datapath on the same inputs: {c['exact_datapath_local_mismatches']:,} local mismatches, "
            f"max {c['exact_datapath_local_max_diff_lsb']} LSB"
            + (" (so the datapath explains this layer's local mismatches)." if explained else "."))
    return [""] + notes if notes else []


def inspect_report(model: Model, path) -> dict:
    layers = []
    for lay in model.layers:
        entry = {"name": lay.name, "op": lay.op, "inputs": list(lay.inputs), "output_shape": list(lay.out_shape),
                 "encoding": lay.out_enc.to_dict(), "encoding_summary": _enc_summary(lay.out_enc),
                 "attrs": lay.attrs}
        if lay.weight is not None:
            entry["weight_shape"] = list(lay.weight.shape)
            entry["weight_encoding"] = lay.weight_enc.to_dict()
            entry["weight_encoding_summary"] = _enc_summary(lay.weight_enc)
            entry["path"] = "xnor-popcount" if lay.is_xnor else "mac"
        layers.append(entry)
    return {"path": str(path), "name": model.name, "input_shape": list(model.input_shape),
            "input_encoding": model.input_enc.to_dict(), "input_encoding_summary": _enc_summary(model.input_enc),
            "input_rounding": model.input_rounding,
            "sample_input": None if model.sample_input is None else list(model.sample_input.shape),
            "weight_storage_bits": weight_storage_bits(model),
            "activation_storage_bits": activation_storage_bits(model),
            "metadata": model.metadata, "layers": layers}


def format_inspect(rep: dict) -> str:
    rows = []
    for lay in rep["layers"]:
        attrs = ", ".join(f"{k}={v}" for k, v in lay["attrs"].items() if k not in ("multiplier",))
        rows.append([lay["name"], lay["op"], ",".join(lay["inputs"]), "x".join(map(str, lay["output_shape"])),
                     lay["encoding_summary"], lay.get("weight_encoding_summary", ""),
                     "x".join(map(str, lay.get("weight_shape", []))), attrs])
    out = [f"{_s(rep['path'])}: model {_s(repr(rep['name']))}, input {rep['input_shape']} "
           f"{rep['input_encoding_summary']} (rounding {rep['input_rounding']})",
           f"sample input: {rep['sample_input'] or 'none'}", "",
           _table(["layer", "op", "inputs", "output", "encoding", "weights", "weight shape", "attributes"], rows,
                  ["<"] * 8), "",
           f"weight storage {rep['weight_storage_bits']:,} bits; activation storage "
           f"{rep['activation_storage_bits']:,} bits per inference"]
    for key, value in rep["metadata"].items():
        out.append(f"{_s(key, CELL_LIMIT)}: {_s(value, 1000)}")
    return "\n".join(out)
