"""What `hwsim quantize` and `hwsim analyze` print and write (report dicts + plain-text tables)."""

from __future__ import annotations

import math

from ..report import _enc_summary, _table, activation_storage_bits, weight_storage_bits


def _pct(v):
    return "-" if v is None else f"{100 * v:.2f}%"


def quantize_report(result, float_path, out_path, calib_path) -> dict:
    model, plan = result.model, result.plan
    layers = []
    for lay in model.layers:
        entry = {"name": lay.name, "op": lay.op, "output_encoding": _enc_summary(lay.out_enc)}
        if lay.op in ("conv2d", "dense"):
            entry.update(weights=str(plan.weights[lay.name]), acts=str(plan.acts[lay.name]),
                         weight_encoding=_enc_summary(lay.weight_enc), input_encoding=_enc_summary(lay.in_encs[0]),
                         weight_bits=int(lay.weight.size * lay.weight_enc.storage_bits
                                         + (0 if lay.codebook is None else lay.codebook.size * lay.weight_enc.table_bits)))
        layers.append(entry)
    float_bits = 32 * sum(lay.weight.size for lay in model.layers if lay.weight is not None)
    return {"float_model": float_path, "output": out_path, "calibration": calib_path,
            "calibration_samples": model.metadata["quantized_by"]["calibration_samples"],
            "input_encoding": _enc_summary(model.input_enc), "layers": layers,
            "weight_storage_bits": weight_storage_bits(model), "float32_weight_bits": float_bits,
            "activation_storage_bits": activation_storage_bits(model),
            "float_accuracy": result.float_accuracy, "integer_accuracy": result.accuracy,
            "top1_agreement": result.agreement, "enq_auto_bits": result.enq_bits,
            "notes": model.metadata["quantized_by"]["notes"], "seconds": result.seconds}


def format_quantize(rep: dict) -> str:
    rows = []
    for lay in rep["layers"]:
        if "weights" in lay:
            rows.append([lay["name"], lay["op"], lay["weights"], lay["weight_encoding"], f"{lay['weight_bits']:,}",
                         lay["input_encoding"], lay["output_encoding"]])
    kb = lambda bits: f"{bits / 8192:,.1f} KiB"  # noqa: E731
    ratio = rep["float32_weight_bits"] / max(rep["weight_storage_bits"], 1)
    out = [f"{rep['float_model']} -> {rep['output']} in {rep['seconds']:.2f} s (calibrated on "
           f"{rep['calibration_samples']} samples of {rep['calibration']}); input {rep['input_encoding']}", "",
           _table(["layer", "op", "weights", "weight encoding", "weight bits", "reads", "writes"], rows,
                  ["<", "<", "<", "<", ">", "<", "<"]), "",
           f"weights {kb(rep['weight_storage_bits'])} (float32 {kb(rep['float32_weight_bits'])}, {ratio:.1f}x smaller); "
           f"activations stored per inference {kb(rep['activation_storage_bits'])}"]
    if rep["enq_auto_bits"]:
        out.append("enq:auto chose E = " + ", ".join(f"{t}: {e}" for t, e in rep["enq_auto_bits"].items()))
    if rep["float_accuracy"] is not None:
        out.append(f"accuracy on {rep['calibration']}: float {_pct(rep['float_accuracy'])}, integer (hwsim engine) "
                   f"{_pct(rep['integer_accuracy'])}; top-1 agreement {_pct(rep['top1_agreement'])}")
    else:
        out.append(f"top-1 agreement of the integer engine with the float model: {_pct(rep['top1_agreement'])} "
                   "(no labels 'y' in the calibration file)")
    out += [f"note: {n}" for n in rep["notes"]]
    return "\n".join(out)


def _db(v):
    return "inf" if v == math.inf else f"{v:.1f}"


def format_analyze(rep: dict) -> str:
    bits = rep["bits"]
    out = [f"{rep['float_model']}: SQNR (dB) of each layer's weights (w) and of the feature map it reads (a), "
           f"each quantized alone, on {rep['calibration_samples']} calibration samples", ""]
    rows = []
    for r in rep["layers"]:
        for kind, key in (("w", "weight"), ("a", "activation")):
            kappa = r[f"{key}_kappa_db_per_bit"]
            rows.append([r["name"] if kind == "w" else "", kind, f"{r[f'{key}_elements']:,}"]
                        + [_db(r[f"{key}_sqnr_db"][b]) for b in bits] + ["-" if kappa is None else f"{kappa:.2f}"])
    out.append(_table(["layer", "", "elements"] + [f"{b}b" for b in bits] + ["kappa dB/bit"], rows,
                      ["<", "<", ">"] + [">"] * (len(bits) + 1)))
    alloc = rep.get("allocation")
    if alloc:
        goal = (f"budget {alloc['budget_bits']:,} bits" if alloc["budget_bits"] is not None
                else f"target output SQNR {alloc['target_sqnr_db']:g} dB")
        out += ["", f"Lin et al. allocation ({goal}): {alloc['total_bits']:,} bits, predicted output SQNR "
                    f"{_db(alloc['predicted_output_sqnr_db'])} dB",
                _table(["layer", "weight bits", "activation bits"],
                       [[n, b, alloc["activation_bits"][n]] for n, b in alloc["weights_bits"].items()],
                       ["<", ">", ">"])]
    if rep.get("recipe_out"):
        out.append(f"recipe written to {rep['recipe_out']} (hwsim quantize --recipe {rep['recipe_out']})")
    if rep.get("measured"):
        out += ["", f"measured SQNR of {rep['qnn']} (integer engine) against the float model, layer by layer:",
                _table(["layer", "op", "SQNR dB"], [[m["name"], m["op"], _db(m["sqnr_db"])] for m in rep["measured"]],
                       ["<", "<", ">"])]
    return "\n".join(out)
