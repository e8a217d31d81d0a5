"""Reports: plain dicts (the JSON schema of docs/report-schema.md) and their terminal tables."""

from __future__ import annotations

import math

import numpy as np

from . import __version__
from .graph import MAC_OPS, Model

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
        return (np.asarray(codes, dtype=np.int64) - enc.zero_point).astype(np.float32) * np.float32(enc.scale)
    lo, hi = model.layers[-1].out_enc.code_range()
    for dtype in (np.uint8, np.int8, np.uint16, np.int16, np.int32):
        info = np.iinfo(dtype)
        if info.min <= lo and hi <= info.max:
            return codes.astype(dtype)
    return codes.astype(np.int64)


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


def run_report(model, result, energy, table, hw_path, input_desc, accuracy, wall_s) -> dict:
    per = result.trace.per_inference()
    layer_energy = {le.name: le for le in energy.layers}
    layers = []
    for lay, counts in zip(model.layers, per.layers):
        layers.append({
            "name": lay.name, "op": lay.op, "output_shape": list(lay.out_shape),
            "output_encoding": _enc_summary(lay.out_enc),
            "weight_encoding": _enc_summary(lay.weight_enc) if lay.weight_enc is not None else None,
            "path": "xnor-popcount" if lay.is_xnor else ("mac" if lay.op in MAC_OPS else "-"),
            "macs": counts.total_macs() + counts.binary_macs,
            "macs_by_bits": {f"{a}x{w}": v for (a, w), v in sorted(counts.macs.items())},
            "binary_macs": counts.binary_macs, "popcount_words": counts.popcount_words,
            "lut_reads": counts.lut_reads, "qe": counts.qe, "ce": counts.ce, "qk": counts.qk, "ck": counts.ck,
            "requants": counts.requants, "compares": counts.compares, "adds": counts.adds,
            "overflows": counts.overflows,
            "datapath": counts.datapath, "pair_saturations": counts.pair_saturations,
            "pair_saturated_outputs": counts.pair_saturated_outputs,
            "weight_bits": sum(counts.weight_bits.values()), "input_bits": sum(counts.input_bits.values()),
            "output_bits": sum(counts.output_bits.values()),
            "energy_pj": layer_energy[lay.name].total_energy_pj,
            "energy_breakdown_pj": dict(layer_energy[lay.name].energy_pj),
        })
    samples = result.trace.batch
    return {
        "hwsim_version": __version__,
        "model": {"path": model.source, "name": model.name},
        "hw": {"path": str(hw_path), "name": table.name, "technology_nm": table.node.feature_nm.value},
        "input": input_desc,
        "samples": samples,
        "accuracy": accuracy,
        "energy_pj_per_inference": energy.total_energy_pj,
        "energy_breakdown_pj": dict(energy.energy_pj),
        "chip_io_energy_pj": energy.chip_io.total_energy_pj,
        "weight_storage_bits": weight_storage_bits(model),
        "activation_storage_bits": activation_storage_bits(model),
        "macs_per_inference": sum(layer["macs"] for layer in layers),
        "overflows": int(sum(c.overflows for c in result.trace.layers)),
        "layers": layers,
        "memory_model": energy.memory_model,
        "assumptions": list(energy.assumptions_used),
        "notes": [energy.leakage_model, energy.not_costed],
        "timing": {"functional_s": result.functional_s, "wall_s": wall_s,
                   "inferences_per_s": samples / result.functional_s if result.functional_s > 0 else None},
    }


# --------------------------------------------------------------------------------------------- terminal

def _table(headers, rows, align=None):
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


def format_run(rep: dict) -> str:
    rows = []
    for layer in rep["layers"]:
        events = []
        if layer["binary_macs"]:
            events.append(f"{layer['popcount_words']:,.0f} pc-words")
        for key in ("lut_reads", "qe", "ce", "qk", "ck"):
            if layer[key]:
                events.append(f"{key.replace('_reads', '')} {layer[key]:,.0f}")
        if layer["overflows"]:
            events.append(f"OVERFLOW {layer['overflows']:,.0f}")
        if layer.get("pair_saturations"):
            events.append(f"PAIR-SAT {layer['pair_saturations']:,.0f}")
        bits = ", ".join(layer["macs_by_bits"]) or ("1x1 xnor" if layer["binary_macs"] else "")
        rows.append([layer["name"], layer["op"], "x".join(map(str, layer["output_shape"])), layer["output_encoding"],
                     f"{layer['macs']:,.0f}", bits, " ".join(events), _energy(layer["energy_pj"])])
    rows.append(["(chip I/O)", "dram", "", "", "", "", "model input in, output out", _energy(rep["chip_io_energy_pj"])])
    out = [f"hwsim {rep['hwsim_version']}  model {rep['model']['path']} ({rep['model']['name']})  "
           f"hw {rep['hw']['path']} ({rep['hw']['name']}, {rep['hw']['technology_nm']:g} nm)",
           f"input: {rep['input']}; {rep['samples']} inference(s); figures are per inference", "",
           _table(["layer", "op", "output", "encoding", "MACs", "a x w bits", "other events", "energy"], rows,
                  ["<", "<", "<", "<", ">", "<", "<", ">"]), ""]
    total = rep["energy_pj_per_inference"]
    breakdown = [[k, _energy(v), f"{100 * v / total:.1f}%" if total else "-"]
                 for k, v in rep["energy_breakdown_pj"].items()]
    out += [_table(["energy", "per inference", "share"], breakdown), ""]
    out.append(f"energy per inference  {_energy(total)}")
    out.append(f"MACs per inference    {rep['macs_per_inference']:,.0f}")
    out.append(f"weight storage        {rep['weight_storage_bits']:,} bits ({rep['weight_storage_bits'] / 8 / 1024:.2f} KiB)")
    out.append(f"activation storage    {rep['activation_storage_bits']:,} bits "
               f"({rep['activation_storage_bits'] / 8 / 1024:.2f} KiB, all activations of one inference)")
    if rep["accuracy"] is not None:
        out.append(f"accuracy              {100 * rep['accuracy']:.2f}% ({rep['samples']} labelled samples)")
    if rep["overflows"]:
        out.append(f"accumulator overflows {rep['overflows']:,} outputs over the whole run")
    timing = rep["timing"]
    rate = f", {timing['inferences_per_s']:,.0f} inferences/s" if timing["inferences_per_s"] else ""
    out.append(f"functional time       {timing['functional_s'] * 1e3:.1f} ms{rate} (integer simulation only)")
    out.append(f"memory model: {rep['memory_model']}")
    for note in rep["notes"]:
        out.append(f"note: {note}")
    if rep["assumptions"]:
        out.append(f"assumptions used ({len(rep['assumptions'])}): " + "; ".join(rep["assumptions"]))
    return "\n".join(out)


def format_validation(rep: dict) -> str:
    rows = []
    datapaths = any(c.get("datapath", "-") not in ("exact", "-") for c in rep["layers"])
    for c in rep["layers"]:
        items = sorted(c["diff_histogram"].items())
        hist = ", ".join(f"{k}:{v}" for k, v in items[:8]) + (f", ... ({len(items)} values)" if len(items) > 8 else "")
        rows.append([c["name"], c["op"], c["requant"]] + ([c.get("datapath", "-")] if datapaths else [])
                    + [f"{c['elements']:,}", f"{c['mismatches']:,}", c["max_diff_lsb"], f"{c['local_mismatches']:,}",
                       c["local_max_diff_lsb"], hist or "-"])
    out = [f"validate {rep['model']} against the float64 reference; input: {rep['input']}; {rep['samples']} samples",
           "", _table(["layer", "op", "requant"] + (["datapath"] if datapaths else [])
                      + ["elements", "mismatches", "max LSB", "local mism.", "local max", "local |diff| LSB: count"],
                      rows), "",
           "mismatches: the reference runs end to end on its own outputs; local: each reference layer is fed "
           "the engine's inputs, so it shows what that layer alone contributes."]
    out += _datapath_notes(rep)
    if "accuracy" in rep:
        out.append(f"accuracy of the integer engine: {100 * rep['accuracy']:.2f}%")
    fb = rep.get("float_baseline")
    if fb:
        def pct(v):
            return "n/a (no labels)" if v is None else f"{100 * v:.2f}%"
        agree = "n/a" if fb["top1_agreement"] is None else \
            f"{100 * fb['top1_agreement']:.2f}% ({fb['agreeing_samples']:,} of {fb['samples']:,} samples)"
        out += ["", f"float baseline: {fb['model']} in {fb['runtime']} ({fb['batching']}); input "
                    f"{fb['input_name']!r} <- {fb['input']}; output {fb['output_name']!r}",
                _table(["", "value"], [["float accuracy", pct(fb["float_accuracy"])],
                                       ["integer accuracy (hwsim engine)", pct(fb["integer_accuracy"])],
                                       ["top-1 agreement (float vs integer)", agree],
                                       ["max |float - integer| output", f"{fb['output_max_abs_diff']:.4g}"]],
                       ["<", "<"]),
                ""]
    if rep["passed"]:
        tol = "bit-exact" if rep["tolerance_lsb"] == 0 else f"within {rep['tolerance_lsb']} LSB of the reference"
        out.append(f"PASS: every layer is {tol}")
    else:
        out.append(f"FAIL: first layer whose own result differs by more than {rep['tolerance_lsb']} LSB: "
                   f"{rep['first_divergent_layer']}")
        failing = [c for c in rep["layers"] if c["local_max_diff_lsb"] > rep["tolerance_lsb"]]
        if all(c["requant"] in ("float32", "fixed_double", "fixed_single") and c["local_max_diff_lsb"] == 1
               and c.get("datapath", "exact") in ("exact", "-") for c in failing):
            out.append("note: every failing layer requantizes in float32 or fixed point, as its runtime does, and is "
                       "off by at most 1 LSB where exact rounding lands elsewhere; that is the declared arithmetic, "
                       "not a simulator error (--tolerance-lsb 1 accepts it)")
    if rep["first_differing_layer_end_to_end"]:
        out.append(f"end to end, the engine and the reference first part ways at "
                   f"{rep['first_differing_layer_end_to_end']}")
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
            f"{c['name']}: datapath {c['datapath']} (int16 pair saturation, x86 vpmaddubsw): "
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
    out = [f"{rep['path']}: model {rep['name']!r}, input {rep['input_shape']} "
           f"{rep['input_encoding_summary']} (rounding {rep['input_rounding']})",
           f"sample input: {rep['sample_input'] or 'none'}", "",
           _table(["layer", "op", "inputs", "output", "encoding", "weights", "weight shape", "attributes"], rows,
                  ["<"] * 8), "",
           f"weight storage {rep['weight_storage_bits']:,} bits; activation storage "
           f"{rep['activation_storage_bits']:,} bits per inference"]
    for key, value in rep["metadata"].items():
        out.append(f"{key}: {value}")
    return "\n".join(out)
