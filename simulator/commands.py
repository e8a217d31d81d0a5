"""The three commands: load -> engine -> counts -> cost -> report. Each returns the process exit status."""

from __future__ import annotations

import json
import time

import numpy as np

from . import report
from .engine import Engine, check_input_shape, quantize_input, run_batched
from .errors import HwsimError
from .fileio import atomic_save_npy, atomic_write_text, load_npy, load_npz
from .qnn.model_io import load_model


def load_inputs(model, args) -> tuple[np.ndarray, np.ndarray | None, str]:
    """Input codes [N, ...], labels or None, and a sentence saying where the input came from."""
    labels = None
    if getattr(args, "input", None):
        x = load_npy(args.input)
        where = f"{args.input}"
        source = args.input
    elif getattr(args, "dataset", None):
        data = load_npz(args.dataset)
        for key in ("x", "y"):
            if key not in data:
                raise HwsimError(f"missing array {key!r} (found {sorted(data)})", source=args.dataset, field=key)
        x, labels = data["x"], data["y"]
        where = f"dataset {args.dataset}"
        source = args.dataset
    elif model.sample_input is not None:
        x = model.sample_input
        where = f"the sample input stored in the model ({x.shape[0]} sample(s))"
        source = model.source
    else:
        lo, hi = model.input_enc.code_range()
        x = np.random.default_rng(0).integers(lo, hi + 1, size=(1,) + tuple(model.input_shape))
        where = "a deterministic synthetic input (uniform random codes, seed 0): the model stores no sample"
        source = "synthetic input"
    try:
        codes = check_input_shape(model, quantize_input(model, np.asarray(x)))
    except HwsimError as exc:
        raise HwsimError(exc.message, source=source, field="x" if labels is not None else exc.field) from None
    if labels is not None:
        labels = np.asarray(labels)
        if labels.ndim != 1 or labels.shape[0] != codes.shape[0] or not np.issubdtype(labels.dtype, np.integer):
            raise HwsimError(f"labels must be {codes.shape[0]} integers, got shape {list(labels.shape)} "
                             f"of {labels.dtype}", source=source, field="y")
    limit = getattr(args, "limit", None)
    if limit is not None:
        if limit < 1:
            raise HwsimError(f"must be positive, got {limit}", field="--limit")
        codes = codes[:limit]
        labels = None if labels is None else labels[:limit]
    return codes, labels, where


def _check_batch_size(args):
    if args.batch_size < 1:
        raise HwsimError(f"must be positive, got {args.batch_size}", field="--batch-size")


def accuracy(model, output_codes, labels) -> float:
    values = model.layers[-1].out_enc.decode(output_codes).reshape(len(output_codes), -1)
    return float(np.mean(np.argmax(values, axis=1) == labels))


def _hardware(args, hw_arg):
    from .hw.arch import load_hardware

    return load_hardware(hw_arg, getattr(args, "set", None) or [],
                         {"array": getattr(args, "array", None), "dataflow": getattr(args, "dataflow", None)})


def _check_batch(args):
    from .hw.cost import check_batch   # before the functional run, so a bad --batch fails fast

    check_batch(args.batch)


def _functional_run(args, model):
    """Run the model on the engine once: outputs, trace, accuracy and a sentence saying what ran."""
    _check_batch_size(args)
    codes, labels, where = load_inputs(model, args)
    engine = Engine(model)
    engine.run(codes[:1])  # JIT compile (or load the cache) outside the timed run
    result = run_batched(engine, codes, args.batch_size)
    acc = None if labels is None else accuracy(model, result.output, labels)
    return result, acc, where


def run(args) -> int:
    from .hw.cost import estimate
    from .importers.qnn_shapes import workloads_from_model

    t0 = time.perf_counter()
    if len(args.hw) > 1:
        raise HwsimError(f"takes one design, got {len(args.hw)}; to cost a model on several designs use "
                         f"'hwsim compare {args.model} " + " ".join(f"--hw {h}" for h in args.hw) + "'",
                         field="--hw")
    _check_batch(args)
    hw = _hardware(args, args.hw[0])
    model = load_model(args.model)
    result, acc, where = _functional_run(args, model)
    cost = estimate(workloads_from_model(model, result.trace), hw, args.batch)
    rep = report.run_report(model, result, cost, where, acc, wall_s=time.perf_counter() - t0)
    if args.output:
        atomic_save_npy(args.output, report.output_array(model, result.output))
    _write_reports(args, rep, report.cost_csv)
    print(report.format_run(rep))
    return 0


def _write_reports(args, rep, csv_writer):
    if getattr(args, "json", None):
        atomic_write_text(args.json, json.dumps(rep, indent=2) + "\n")
    if getattr(args, "csv", None):
        atomic_write_text(args.csv, csv_writer(rep))


def parse_bits(text: str) -> tuple[int, int]:
    parts = str(text).split(",")
    if len(parts) != 2 or not all(p.strip().isdigit() and 1 <= int(p) <= 32 for p in parts):
        raise HwsimError(f"must be A,W with activation and weight bits from 1 to 32, e.g. 8,8 or 4,2; got {text!r}",
                         field="--bits")
    return int(parts[0]), int(parts[1])


def load_network(path: str, bits) -> tuple[list, str]:
    """Workloads (shapes and shape-derived counts, one inference) of a .qnn, .onnx or SCALE-Sim .csv network."""
    from pathlib import Path

    suffix = Path(path).suffix.lower()
    if suffix == ".qnn":
        from .importers.qnn_shapes import workloads_from_model

        model = load_model(path)
        return workloads_from_model(model), model.name
    if suffix == ".onnx":
        from .importers.onnx_shapes import load_onnx_shapes

        return load_onnx_shapes(path, bits or (8, 8)), Path(path).stem
    if suffix == ".csv":
        from .importers.topology import load_topology

        return load_topology(path, bits or (8, 8)), Path(path).stem
    raise HwsimError("unknown network kind: give a .qnn model, an .onnx model or a SCALE-Sim topology .csv",
                     source=path)


def estimate(args) -> int:
    from .hw.cost import estimate as cost_estimate

    _check_batch(args)
    bits = parse_bits(args.bits) if args.bits else None
    if bits and args.network.lower().endswith(".qnn"):
        raise HwsimError("a .qnn model carries its own bit widths; --bits is for ONNX and topology files",
                         field="--bits")
    hw = _hardware(args, args.hw)
    workloads, name = load_network(args.network, bits)
    cost = cost_estimate(workloads, hw, args.batch)
    rep = report.cost_report(cost, network=args.network, network_name=name)
    _write_reports(args, rep, report.cost_csv)
    print(report.format_estimate(rep))
    return 0


def compare(args) -> int:
    from .hw.cost import estimate as cost_estimate
    from .importers.qnn_shapes import workloads_from_model

    _check_batch(args)
    if len(args.hw) < 2:
        raise HwsimError(f"needs at least two designs to compare, got {len(args.hw)}", field="--hw")
    designs = [_hardware(args, h) for h in args.hw]  # every --hw is checked before the functional run
    acc, where = None, "shapes only (no execution)"
    if args.network.lower().endswith(".qnn"):
        model = load_model(args.network)
        result, acc, where = _functional_run(args, model)
        workloads, name = workloads_from_model(model, result.trace), model.name
    else:
        if getattr(args, "dataset", None) or getattr(args, "input", None):
            raise HwsimError("inputs and accuracy need a .qnn model (ONNX and topology networks are shapes only)",
                             field="--dataset" if args.dataset else "--input")
        workloads, name = load_network(args.network, parse_bits(args.bits) if args.bits else None)
    reps = [report.cost_report(cost_estimate(workloads, hw, args.batch), args.network, name) for hw in designs]
    rep = {"hwsim_version": reps[0]["hwsim_version"], "network": reps[0]["network"], "input": where,
           "batch": args.batch, "accuracy": acc, "designs": reps}
    _write_reports(args, rep, report.compare_csv)
    print(report.format_compare(rep))
    return 0


def validate(args) -> int:
    from .validate import compare

    model = load_model(args.model)
    _check_batch_size(args)
    if args.tolerance_lsb < 0:
        raise HwsimError(f"must be >= 0, got {args.tolerance_lsb}", field="--tolerance-lsb")
    codes, labels, where = load_inputs(model, args)
    engine = Engine(model)
    float_model = None
    if getattr(args, "float_model", None):  # a bad float model fails here, before the layer-by-layer comparison
        from .float_baseline import FloatModel, float_baseline, float_inputs
        float_model = FloatModel.load(args.float_model)
        x_float, x_desc = float_inputs(model, args, codes)
        float_model.check_sample_shape(x_float.shape[1:])
    result = compare(engine, codes, args.tolerance_lsb, min(args.batch_size, 256))
    rep = {"model": args.model, "input": where, "samples": int(codes.shape[0]), **result.to_dict()}
    if labels is not None or float_model is not None:
        out = run_batched(engine, codes, args.batch_size).output
        if labels is not None:
            rep["accuracy"] = accuracy(model, out, labels)
        if float_model is not None:
            rep["float_baseline"] = float_baseline(float_model, model, x_float, x_desc, out, labels,
                                                   args.batch_size)
    if args.json:
        atomic_write_text(args.json, json.dumps(rep, indent=2) + "\n")
    print(report.format_validation(rep))
    return 0 if result.passed else 1


def inspect(args) -> int:
    model = load_model(args.model)
    rep = report.inspect_report(model, args.model)
    if args.json:
        atomic_write_text(args.json, json.dumps(rep, indent=2) + "\n")
    print(report.format_inspect(rep))
    return 0


def import_model(args) -> int:
    from .importers import import_any
    from .qnn.model_io import save_model

    model = import_any(args.onnx_model, qdq_int8_allowed=args.ort_qdq_int8_allowed)
    save_model(model, args.output)
    print(f"{args.onnx_model} -> {args.output}: {len(model.layers)} layers, input {list(model.input_shape)}, "
          f"{report.weight_storage_bits(model):,} weight bits")
    if model.metadata.get("ort_warning"):
        import sys
        print(f"hwsim: warning: {model.metadata['ort_warning']}", file=sys.stderr)
    return 0


def export_model(args) -> int:
    from .exporters.onnx_export import export_onnx

    model = load_model(args.model)
    export_onnx(model, args.output)
    print(f"{args.model} -> {args.output}")
    return 0


def _load_calibration(fg, path, limit=None, what="--calib"):
    from .quant.pipeline import check_calibration
    if path is None:
        return None, None
    x, y = check_calibration(fg, load_npz(path), path)
    if limit is not None:
        if limit < 1:
            raise HwsimError(f"must be positive, got {limit}", field="--limit")
        x, y = x[:limit], None if y is None else y[:limit]
    return x, y


def _recipe(args):
    from .quant.schemes import Recipe, load_recipe, parse_scheme
    recipe = load_recipe(args.recipe) if args.recipe else Recipe()
    for role in ("weights", "acts", "input"):
        text = getattr(args, role, None)
        if text is not None:
            setattr(recipe, role, parse_scheme(text, role, f"--{role}"))
    if args.all_layers:
        recipe.all_layers = True
    if args.budget is not None:
        if not 0 <= args.budget <= 1:
            raise HwsimError(f"must be in [0, 1], got {args.budget}", field="--budget")
        recipe.budget = args.budget
    return recipe


def quantize(args) -> int:
    import os

    from .importers.onnx.float_reader import read_float_onnx
    from .qnn.model_io import save_model
    from .quant.pipeline import quantize as run_quantize
    from .quant.summary import format_quantize, quantize_report

    if not args.output.lower().endswith(".qnn"):
        raise HwsimError("the output must be a .qnn file", field="-o")
    recipe = _recipe(args)
    fg = read_float_onnx(args.float_model)
    x, y = _load_calibration(fg, args.calib, args.limit)
    train = _load_calibration(fg, args.train, None, "--train") if args.train else None
    name = os.path.splitext(os.path.basename(args.output))[0]
    result = run_quantize(fg, x, y, recipe, name=name, seed=args.seed, train=train)
    save_model(result.model, args.output)
    rep = quantize_report(result, args.float_model, args.output, args.calib)
    if args.json:
        atomic_write_text(args.json, json.dumps(rep, indent=2) + "\n")
    print(format_quantize(rep))
    return 0


def analyze(args) -> int:
    import yaml

    from .importers.onnx.float_reader import read_float_onnx
    from .qnn.model_io import load_model
    from .quant.analyze import allocation_recipe, analyze as run_analyze, measured_sqnr
    from .quant.summary import format_analyze

    if args.budget_bits is not None and args.target_sqnr_db is not None:
        raise HwsimError("give one of --budget-bits and --target-sqnr-db", field="--budget-bits")
    if args.recipe_out and args.budget_bits is None and args.target_sqnr_db is None:
        raise HwsimError("a recipe needs an allocation: add --budget-bits N or --target-sqnr-db S", field="--recipe-out")
    fg = read_float_onnx(args.float_model)
    x, _ = _load_calibration(fg, args.calib, args.limit)
    model = load_model(args.qnn) if args.qnn else None
    rep = run_analyze(fg, x, args.budget_bits, args.target_sqnr_db)
    rep["float_model"] = args.float_model
    if model is not None:
        rep["qnn"], rep["measured"] = args.qnn, measured_sqnr(fg, model, x)
    if args.recipe_out:
        atomic_write_text(args.recipe_out, yaml.safe_dump(allocation_recipe(rep), sort_keys=False))
        rep["recipe_out"] = args.recipe_out
    if args.json:
        atomic_write_text(args.json, json.dumps(report.plain(rep), indent=2) + "\n")
    print(format_analyze(rep))
    return 0
