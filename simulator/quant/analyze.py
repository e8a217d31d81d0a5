"""`hwsim analyze`: where accuracy goes, per layer, and Lin et al.'s SQNR bit allocation (seed 002).

Per MAC layer, the SQNR of its weights and of the feature map it reads, each quantized alone at 1..8 bits against
the float model (weights: uniform symmetric per channel, 1 bit = sign * alpha; activations: uniform with F from the
calibration range, seed 004 §III-A). The allocation treats every weight and activation tensor as a noise source,
1/gamma_out = sum 1/gamma_i, and picks integer widths exactly (bitalloc.allocate_bits) for a total-bit budget or
a target output SQNR; the result is a recipe `hwsim quantize --recipe` takes. With a quantized model, the
measured SQNR of the integer engine's outputs against the float model's, layer by layer.
"""

from __future__ import annotations

import numpy as np

from ..errors import HwsimError
from . import activations as qa
from . import bitalloc
from . import weights as qw
from .pipeline import PASS_OPS, plan_schemes
from .schemes import RECIPE_FORMAT, Recipe

BITS = tuple(range(1, 9))


def weight_sqnr(w, bits) -> float:
    if bits == 1:
        codes, alpha = qw.xnor_binary(w)
        q = (1 - 2 * codes) * alpha.reshape((-1,) + (1,) * (w.ndim - 1))
    else:
        codes, scales = qw.uniform_weights(w, bits)
        q = codes * scales.reshape((-1,) + (1,) * (w.ndim - 1))
    return qa.sqnr_db(w, q)


def activation_sqnr(x, bits) -> float:
    signed = bool(x.min() < 0)
    frac = qa.frac_bits(float(np.abs(x).max()), bits, signed)
    return qa.sqnr_db(x, qa.uniform_codes(x, bits, frac, signed) * 2.0 ** -frac)


def analyze(fg, x, budget_bits=None, target_sqnr_db=None) -> dict:
    acts = fg.run(x, keep=True)
    rows = []
    for n in fg.mac_nodes():
        a = acts[n.inputs[0]]
        w_db = {b: weight_sqnr(n.weight, b) for b in BITS}
        a_db = {b: activation_sqnr(a, b) for b in BITS}
        rows.append({"name": n.name, "op": n.op, "reads_input": _reads_input(fg, n), "weight_elements": int(n.weight.size),
                     "activation_elements": int(a[0].size), "weight_sqnr_db": w_db, "activation_sqnr_db": a_db,
                     "weight_kappa_db_per_bit": _kappa(w_db), "activation_kappa_db_per_bit": _kappa(a_db)})
    rep = {"layers": rows, "bits": list(BITS), "calibration_samples": int(len(x))}
    if budget_bits is not None or target_sqnr_db is not None:
        table = [r["weight_sqnr_db"] for r in rows] + [r["activation_sqnr_db"] for r in rows]
        cost = [r["weight_elements"] for r in rows] + [r["activation_elements"] for r in rows]
        try:
            alloc = bitalloc.allocate_bits(table, cost, budget_bits=budget_bits, target_sqnr_db=target_sqnr_db,
                                           bits_range=(BITS[0], BITS[-1]))
        except ValueError as exc:
            raise HwsimError(str(exc), field="--budget-bits" if budget_bits is not None else "--target-sqnr-db") from None
        k = len(rows)
        rep["allocation"] = {"budget_bits": budget_bits, "target_sqnr_db": target_sqnr_db,
                             "predicted_output_sqnr_db": alloc["output_sqnr_db"], "total_bits": alloc["total_bits"],
                             "weights_bits": {r["name"]: b for r, b in zip(rows, alloc["bits"][:k])},
                             "activation_bits": {r["name"]: b for r, b in zip(rows, alloc["bits"][k:])}}
    return rep


def _reads_input(fg, n) -> bool:
    t = n.inputs[0]
    while t != "input":
        node = fg.node(t)
        if node.op not in PASS_OPS:
            return False
        t = node.inputs[0]
    return True


def _kappa(db_by_bits):
    finite = [(b, v) for b, v in db_by_bits.items() if np.isfinite(v)]
    if len(finite) < 2:
        return None
    return bitalloc.kappa_beta_fit(*zip(*finite))[0]


def allocation_recipe(rep) -> dict:
    """The allocation as a recipe for `hwsim quantize --recipe` (all layers: the allocation covers them all)."""
    alloc = rep["allocation"]
    layers, extra = {}, {}
    for row in rep["layers"]:
        name = row["name"]
        wb, ab = alloc["weights_bits"][name], alloc["activation_bits"][name]
        layers[name] = {"weights": "binary:xnor" if wb == 1 else f"uniform:{wb}"}
        if row["reads_input"]:
            extra["input"] = f"uniform:{ab}"       # the first layer reads the model input itself
        else:
            layers[name]["acts"] = f"uniform:{ab}"
    return {"format": RECIPE_FORMAT, **extra, "all_layers": True, "layers": layers,
            "note": f"hwsim analyze: Lin et al. SQNR allocation, predicted output SQNR "
                    f"{alloc['predicted_output_sqnr_db']:.1f} dB, {alloc['total_bits']:,} bits"}


def measured_sqnr(fg, model, x) -> list:
    """Per layer of a quantized model whose names match the float graph's: SQNR of the engine's real outputs."""
    from ..engine import Engine, quantize_input
    float_acts = fg.run(x, keep=True)
    plan = plan_schemes(fg, Recipe())
    res = Engine(model).run(quantize_input(model, x), keep_all=True)
    fused_into = {v: k for k, v in plan.fused.items()}
    rows = []
    for lay in model.layers:
        if lay.op in PASS_OPS and lay.op not in ("maxpool", "avgpool"):
            continue
        ref_name = fused_into.get(lay.name, lay.name)
        if ref_name not in float_acts or lay.name not in res.tensors:
            continue
        ref = float_acts[ref_name]
        got = lay.out_enc.decode(res.tensors[lay.name]).astype(np.float64) * lay.out_enc.value_scale
        if got.shape != ref.shape:
            continue
        rows.append({"name": lay.name, "op": lay.op, "sqnr_db": qa.sqnr_db(ref, got)})
    if not rows:
        raise HwsimError("no layer of the quantized model matches a layer of the float model by name (analyze "
                         "--qnn compares models made by 'hwsim quantize' from this float model)", field="--qnn")
    return rows
