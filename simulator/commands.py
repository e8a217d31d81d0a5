"""The three commands: load -> engine -> counts -> cost -> report. Each returns the process exit status."""

from __future__ import annotations

import os
import stat
import sys
import time
from contextlib import contextmanager, nullcontext

import numpy as np

from . import jit, report
from .engine import Engine, check_input_shape, quantize_input, run_batched
from .encodings import BinaryAct, EnqAct
from .errors import HwsimError, safe_text
from .fileio import Outputs, _describe_kind, load_npy, load_npz
from .qnn.model_io import load_model
from .units.rounding import round_float


def load_inputs(model, args, facts: dict | None = None) -> tuple[np.ndarray, np.ndarray | None, str]:
    """Input codes [N, ...], labels or None, and a sentence saying where the input came from. `facts`, if given,
    receives what quantizing float inputs clamped (input_saturation).

    Memory is bounded by --limit and --batch-size: an `.npy` input is memory-mapped and only its first --limit
    samples are read; an `.npz` dataset is decompressed only up to --limit samples (its sizes checked before
    anything is decompressed); the samples used are quantized --batch-size at a time. Zero samples and labels
    outside the model's classes are refused with one line.
    """
    limit = getattr(args, "limit", None)
    if limit is not None and limit < 1:
        raise HwsimError(f"must be positive, got {limit}", field="--limit")
    shape = tuple(model.input_shape)
    labels, declared = None, {}
    if getattr(args, "input", None):
        x = load_npy(args.input, mmap=True)
        where = f"{args.input}"
        source = args.input
    elif getattr(args, "dataset", None):
        def rows(key, member_shape):  # records the declared shapes; a single sample x (no N axis) is not cut
            declared[key] = tuple(member_shape)
            return None if key == "x" and tuple(member_shape) == shape else limit

        data = load_npz(args.dataset, keys=("x", "y"), limit=rows)
        for key in ("x", "y"):
            if key not in data:
                raise HwsimError(f"missing array {key!r} (found {_npz_keys(args.dataset)})", source=args.dataset,
                                 field=key)
        x, labels = data["x"], data["y"]
        where = f"dataset {args.dataset}"
        source = args.dataset
    elif getattr(args, "x", None) is not None:   # an array given to the Python API (simulator/api.py)
        x, labels = args.x, getattr(args, "y", None)
        where = f"the array x given ({'float values, quantized' if np.issubdtype(x.dtype, np.floating) else 'codes'})"
        source = None
    elif model.sample_input is not None:
        x = model.sample_input
        where = f"the sample input stored in the model ({x.shape[0]} sample(s))"
        source = model.source
    else:
        lo, hi = model.input_enc.code_range()
        x = np.random.default_rng(0).integers(lo, hi + 1, size=(1,) + tuple(model.input_shape))
        where = "a deterministic synthetic input (uniform random codes, seed 0): the model stores no sample"
        source = "synthetic input"
    field = "x" if labels is not None else None
    try:
        x = check_input_shape(model, x)  # shape only (a view): [N, ...]
    except HwsimError as exc:
        raise HwsimError(exc.message, source=source, field=field or exc.field) from None
    total = declared["x"][0] if len(declared.get("x", ())) == len(shape) + 1 else x.shape[0]
    if total == 0:
        raise HwsimError(f"holds no samples (shape {list(declared.get('x', x.shape))}): nothing to run",
                         source=source, field=field or "input")
    if labels is not None:
        y_shape = declared.get("y", labels.shape)
        if len(y_shape) != 1 or y_shape[0] != total or not np.issubdtype(labels.dtype, np.integer):
            raise HwsimError(f"labels must be {total} integers, got shape {list(y_shape)} "
                             f"of {labels.dtype}", source=source, field="y")
    if limit is not None:
        x = x[:limit]
        labels = None if labels is None else labels[:limit]
    try:
        codes = _quantize_in_batches(model, x, getattr(args, "batch_size", None) or 512, facts)
    except HwsimError as exc:
        raise HwsimError(exc.message, source=source, field=field or exc.field) from None
    if labels is not None:
        labels = np.asarray(labels)
        _check_labels(model, labels, source)
    return codes, labels, where


def _npz_keys(path) -> list:
    """The array names in an .npz archive (for a message; [] when it cannot be listed)."""
    import zipfile
    try:
        with zipfile.ZipFile(path) as zf:
            return sorted(n[:-len(".npy")] for n in zf.namelist() if n.endswith(".npy"))
    except Exception:
        return []


def _quantize_in_batches(model, x, batch_size: int, stats: dict | None = None) -> np.ndarray:
    """quantize_input over [N, ...] `batch_size` samples at a time: the float intermediates stay one batch big
    and a memory-mapped input is read once, in order. `stats` (a dict) gets the saturation counts."""
    batch_size = max(1, int(batch_size))
    n = x.shape[0]
    saturation = input_saturation(model, np.asarray(x[:0]))
    codes = None
    for start in range(0, max(n, 1), batch_size):   # (an empty input still gets its empty codes)
        batch = np.asarray(x[start:start + batch_size])
        part = quantize_input(model, batch)
        _add_saturation(saturation, model, batch)
        if n <= batch_size:
            codes = part
        else:
            if codes is None:
                codes = np.empty((n,) + part.shape[1:], dtype=part.dtype)
            codes[start:start + batch_size] = part
    if stats is not None:
        stats.update(saturation, saturated_fraction=(saturation["saturated_codes"] / saturation["float_values"]
                                                     if saturation["float_values"] else 0.0))
    return codes


def input_saturation(model, x: np.ndarray) -> dict:
    """Float input values the input quantizer clamps to its encoding's ends: those whose rounded value lies
    strictly beyond the encoding's range (a value at an end, or within rounding of it, is not clamped). The same
    division and rounding as engine.quantize_input; counted here so that the engine's quantizer stays as it is."""
    enc = model.input_enc
    lo, hi = (0, (1 << enc.qm_bits) - 1) if isinstance(enc, EnqAct) else enc.value_range()  # QE takes 0..2^qm-1
    out = {"float_values": 0, "saturated_codes": 0, "below": 0, "above": 0,
           "range": [float(lo * enc.value_scale), float(hi * enc.value_scale)]}
    if isinstance(enc, BinaryAct) or not np.issubdtype(x.dtype, np.floating) or x.size == 0:
        return out     # codes are taken as they are; a sign has no range to leave
    if model.input_division == "float32":
        v = (x.astype(np.float32) / np.float32(enc.value_scale)).astype(np.float64)
    else:
        v = x.astype(np.float64) / enc.value_scale
    v = round_float(v, model.input_rounding)
    below, above = int(np.count_nonzero(v < lo)), int(np.count_nonzero(v > hi))
    out.update(float_values=int(x.size), saturated_codes=below + above, below=below, above=above)
    return out


def _add_saturation(total: dict, model, x: np.ndarray) -> None:
    part = input_saturation(model, x)
    for key in ("float_values", "saturated_codes", "below", "above"):
        total[key] += part[key]


def _check_labels(model, labels: np.ndarray, source) -> None:
    """Labels index the model's outputs (argmax over its flattened output): refuse any outside [0, classes)."""
    classes = int(np.prod(model.layers[-1].out_shape))
    bad = (labels < 0) | (labels >= classes)
    count = int(np.count_nonzero(bad))
    if count:
        example = labels[np.argmax(bad)]
        raise HwsimError(f"{count} of {labels.size} labels lie outside the model's classes 0..{classes - 1} "
                         f"(e.g. {int(example)})", source=source, field="y")


def memory_advice(args) -> str:
    """What would help after running out of memory, from the command and its options."""
    command = getattr(args, "command", None)
    limit, batch = getattr(args, "limit", None), getattr(args, "batch_size", None)
    if command in ("quantize", "analyze"):
        if limit is None:
            return "the calibration set or the model is too large: --limit N calibrates on the first N samples only"
        return f"the model (or --limit {limit} calibration samples) is too large for the memory available"
    if command in ("run", "compare", "validate"):
        if getattr(args, "input", None) or getattr(args, "dataset", None):
            if limit is None:
                fewer = f", a smaller --batch-size (now {batch}) runs fewer at a time" if batch and batch > 1 else ""
                return f"the input is too large: --limit N uses only its first N samples{fewer}"
            if batch and batch > 16:
                return f"try a smaller --batch-size (now {batch}) or a smaller --limit (now {limit})"
            return f"the model is too large for the memory available (even {batch} sample(s) at a time)"
        return "the model (or the sample input stored in it) is too large for the memory available"
    return "the model is too large for the memory available"


def _check_batch_size(args):
    if args.batch_size < 1:
        raise HwsimError(f"must be positive, got {args.batch_size}", field="--batch-size")


def accuracy(model, output_codes, labels) -> float:
    values = model.layers[-1].out_enc.decode(output_codes).reshape(len(output_codes), -1)
    return float(np.mean(np.argmax(values, axis=1) == labels))


def _hardware(args, hw_arg, outputs: Outputs | None = None):
    """Load one --hw design; its files (the design and its technology table) become inputs of `outputs`."""
    from .hw.arch import load_hardware

    try:
        hw = load_hardware(hw_arg, getattr(args, "set", None) or [],
                           {"array": getattr(args, "array", None), "dataflow": getattr(args, "dataflow", None)})
    except OSError as exc:  # a path the system refuses (e.g. a `tech:` name too long)
        raise HwsimError(f"names a file that cannot be opened: {exc.strerror or exc}", source=hw_arg,
                         field="tech") from None
    if outputs is not None:
        outputs.add_inputs(hw.path, hw.tech.source)
    return hw


def _check_batch(args):
    from .hw.cost import check_batch   # before the functional run, so a bad --batch fails fast

    check_batch(args.batch)


# Kernels as plain Python for runs this small (simulator/jit.py): they finish in ~0.1-0.3 s, while loading numba
# and its cached kernels costs ~1.2 s (and compiling them, on a first run, ~10 s). Measured here: LeNet on 8
# digits (0.7 M MACs) runs in 0.12 s as Python; its cost model's loop-nest search in ~0.05 s per MAC layer.
PYTHON_KERNELS_MAX_OPS = 2_000_000
PYTHON_KERNELS_MAX_MAC_LAYERS = 8
KERNELS_ENV = "HWSIM_KERNELS"   # auto (default), numba or python


def choose_kernels(model, samples: int) -> str:
    """Fix this process's kernel mode before the first kernel call (jit.prefer_python): Python for small runs,
    numba otherwise, or what HWSIM_KERNELS asks for. Returns the mode in force."""
    from .graph import MAC_OPS, layer_figures

    wanted = os.environ.get(KERNELS_ENV, "auto").strip().lower() or "auto"
    if wanted not in ("auto", "numba", "python"):
        raise HwsimError(f"must be auto, numba or python, got {wanted!r}", field=KERNELS_ENV)
    if wanted == "auto":
        ops = samples * sum(layer_figures(lay)["ops"] for lay in model.layers)
        mac_layers = sum(lay.op in MAC_OPS for lay in model.layers)
        wanted = "python" if ops <= PYTHON_KERNELS_MAX_OPS and mac_layers <= PYTHON_KERNELS_MAX_MAC_LAYERS else "numba"
    return jit.prefer_python(wanted == "python")


COMPILING_NOTE = "hwsim: compiling the numba kernels for this CPU (first run after install only; cached afterwards)"

# A progress bar appears only once the work has lasted this long: short runs print nothing new, whatever their size.
PROGRESS_DELAY_S = 2.0


@contextmanager
def progress_bar(args, total: int, unit: str, desc: str | None = None):
    """Yields a callback done(n) (or done(n, total)) that moves a tqdm bar on standard error, or None: the bar is
    made only when standard error is a terminal and not with --quiet, and shown only after PROGRESS_DELAY_S.
    It is cleared when the work ends (or fails), so the report follows on a clean line."""
    if getattr(args, "quiet", False) or not sys.stderr.isatty() or total < 1:
        yield None
        return
    from tqdm import tqdm

    with tqdm(total=total, unit=unit, desc=desc, file=sys.stderr, delay=PROGRESS_DELAY_S, leave=False,
              dynamic_ncols=True) as bar:
        def done(n, new_total=None):
            if new_total is not None:
                bar.total = new_total
            bar.update(n - bar.n)
        yield done


def _functional_run(args, model, facts: dict | None = None, auto_kernels: bool = False):
    """Run the model on the engine once: outputs, trace, accuracy and a sentence saying what ran. `facts`, if
    given, receives the input's saturation counts (load_inputs) and its labels (`labels`, or None).
    `auto_kernels`: a one-run process (the run and compare commands) picks the kernel mode for this run's
    size; the library and a sweep, which run on, keep numba."""
    _check_batch_size(args)
    codes, labels, where = load_inputs(model, args, facts)
    if facts is not None:
        facts["labels"] = labels
    plan = auto_kernels and jit.undecided()   # the process's one run: its warm-up plans the kernels' tiers
    if auto_kernels:
        choose_kernels(model, len(codes))
    engine = Engine(model)
    # a note for a person waiting (not with --quiet), when numba starts compiling; logs and pipes keep their one
    # line per error
    if jit.mode() == jit.NUMBA and sys.stderr.isatty() and not getattr(args, "quiet", False):
        jit.on_first_compile(lambda: print(COMPILING_NOTE, file=sys.stderr, flush=True))
    # JIT compile (or load the cache) outside the timed run. A one-run process plans on it which kernels are
    # worth compiling for this run's size (jit.planning); the library and a sweep, which run on, compile them.
    with jit.planning(len(codes) + 1) if plan else nullcontext():
        engine.run(codes[:1])
    with progress_bar(args, len(codes), "sample", "running") as done:
        result = run_batched(engine, codes, args.batch_size, progress=done)
    acc = None if labels is None else accuracy(model, result.output, labels)
    return result, acc, where


def run_report(model, result, hw, batch: int, where: str, acc, t0: float, facts: dict) -> dict:
    """The report `hwsim run --json` writes (and simulator.api.run returns): the functional run `result` costed
    on the design `hw` for batches of `batch`; `t0` is when the command started (its wall time), `facts` what
    _functional_run noted (the input's saturation)."""
    from .hw.cost import estimate
    from .importers.qnn_shapes import workloads_from_model

    cost = estimate(workloads_from_model(model, result.trace), hw, batch)
    rep = report.run_report(model, result, cost, where, acc, wall_s=time.perf_counter() - t0)
    return report.add_input_saturation(rep, facts)


def run(args) -> int:
    t0 = time.perf_counter()
    if len(args.hw) > 1:
        raise HwsimError(f"takes one design, got {len(args.hw)}; to cost a model on several designs use "
                         f"'hwsim compare {args.model} " + " ".join(f"--hw {h}" for h in args.hw) + "'",
                         field="--hw")
    _check_batch(args)
    if args.plot:   # a bad extension or a missing matplotlib fails before the run
        from . import plots
        fmt = plots.figure_format(args.plot, "--plot")
        plots.require_matplotlib("--plot")
    show = getattr(args, "show", None)
    if show is not None and show < 1:
        raise HwsimError(f"must be positive, got {show}", field="--show")
    outputs = _outputs(args, binary=("output", "output_values", "plot"))
    hw = _hardware(args, args.hw[0], outputs)
    model = load_qnn(args.model, "run")
    if show is not None:
        report.check_classifier(model, "--show")
    facts = {}
    result, acc, where = _functional_run(args, model, facts, auto_kernels=True)
    rep = run_report(model, result, hw, args.batch, where, acc, t0, facts)
    if show is not None:
        rep["predictions"] = report.predictions(model, result.output, facts["labels"], show)
    with outputs:
        if args.output:
            outputs.npy(args.output, report.output_array(model, result.output))
        if getattr(args, "output_values", None):
            outputs.npy(args.output_values, report.output_values(model, result.output))
        _write_reports(args, rep, report.cost_csv, outputs)
        if args.plot:
            outputs.bytes(args.plot, plots.run_figure(rep, fmt))
        _emit(report.format_run(rep), outputs)
    return 0


# The input files each command reads (argparse dest -> option shown in errors; None: the positional argument)
INPUT_FILES = {
    "run": {"model": None, "input": "--input", "dataset": "--dataset"},
    "estimate": {"network": None},
    "compare": {"network": None, "input": "--input", "dataset": "--dataset"},
    "validate": {"model": None, "input": "--input", "dataset": "--dataset", "float_model": "--float-model"},
    "import": {"onnx_model": None},
    "export": {"model": None},
    "quantize": {"float_model": None, "calib": "--calib", "train": "--train", "recipe": "--recipe"},
    "analyze": {"float_model": None, "calib": "--calib", "qnn": "--qnn"},
    "inspect": {"model": None},
}
OUTPUT_OPTIONS = {"json": "--json", "csv": "--csv", "output": "--output", "recipe_out": "--recipe-out",
                  "plot": "--plot", "output_values": "--output-values"}


def load_qnn(path, command: str):
    """load_model, and for an ONNX file given where a .qnn is needed, the command that converts it."""
    try:
        return load_model(path)
    except HwsimError as exc:
        if exc.field != "magic" or not str(path).lower().endswith(".onnx"):
            raise
        qnn = str(path)[:-len(".onnx")] + ".qnn"
        raise HwsimError(f"is an ONNX model; hwsim {command} takes a .qnn model: convert it first with "
                         f"'hwsim import {path} -o {qnn}' (a float model: 'hwsim quantize {path} --calib "
                         f"CALIB.npz -o {qnn}'), then 'hwsim {command} {qnn} ...'", source=str(path)) from None


def _input_paths(args) -> list[str]:
    """The input files named on the command line (--hw resolved to its file), each checked to be a regular
    file (a FIFO, device, socket or directory is refused at once; a missing one is left to its loader)."""
    from .hw.techtable import resolve_hw_path

    paths = []
    for dest, option in INPUT_FILES.get(getattr(args, "command", None), {}).items():
        path = getattr(args, dest, None)
        if path:
            _check_input_file(path, option)
            paths.append(path)
    hw = getattr(args, "hw", None)
    for arg in ([hw] if isinstance(hw, str) else hw or []):
        try:
            paths.append(str(resolve_hw_path(arg)))
        except HwsimError:
            pass  # reported when the design is loaded
    return paths


def _check_input_file(path: str, option: str | None) -> None:
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return
    except (OSError, ValueError) as exc:
        raise HwsimError(f"cannot read file: {getattr(exc, 'strerror', None) or exc}", source=path,
                         field=option) from None
    if not stat.S_ISREG(mode):
        raise HwsimError(f"not a regular file ({_describe_kind(mode)}): refusing to read it", source=path,
                         field=option)


def _outputs(args, text=("json", "csv"), binary=()) -> Outputs:
    """The command's output plan, its targets checked before any work (see fileio.Outputs): none may be an
    input of the command, and every input file is checked to be a regular file.

    Every command stages its outputs in the plan and hands it its report (_emit); the plan then writes
    standard output and commits the files (all outputs appear together, or none on any failure)."""
    names = {getattr(args, k): option for k, option in OUTPUT_OPTIONS.items()
             if isinstance(getattr(args, k, None), str)}
    outputs = Outputs(inputs=_input_paths(args), names=names, quiet=getattr(args, "quiet", False))
    outputs.check(*(getattr(args, k, None) for k in text), binary=[getattr(args, k, None) for k in binary])
    return outputs


def _emit(text: str, outputs: Outputs) -> None:
    """Hand the report text to the plan (inside its block): control characters escaped; printed at commit,
    on standard error when an output went to standard output ('-')."""
    outputs.report(safe_text(text, limit=None, keep_newlines=True))


def _write_reports(args, rep, csv_writer, outputs: Outputs):
    if getattr(args, "json", None):
        outputs.text(args.json, report.to_json(rep))
    if getattr(args, "csv", None):
        outputs.text(args.csv, csv_writer(rep))


def parse_bits(text: str) -> tuple[int, int]:
    parts = str(text).split(",")
    if len(parts) != 2 or not all(p.strip().isdigit() and 1 <= int(p) <= 32 for p in parts):
        raise HwsimError(f"must be A,W with activation and weight bits from 1 to 32, e.g. 8,8 or 4,2; got {text!r}",
                         field="--bits")
    return int(parts[0]), int(parts[1])


def load_network(path: str, bits) -> tuple[list, str]:
    """Workloads (shapes and shape-derived counts, one inference) of a .qnn, .onnx, .tflite or SCALE-Sim .csv
    network."""
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
    if suffix == ".tflite":     # imported as `hwsim import` would (the default kernel path: shapes do not care)
        from .importers.qnn_shapes import workloads_from_model
        from .importers.tflite_import import import_tflite

        model = import_tflite(path)
        return workloads_from_model(model), model.name
    raise HwsimError("unknown network kind: give a .qnn model, an .onnx model, a .tflite model or a SCALE-Sim "
                     "topology .csv", source=path)


def estimate(args) -> int:
    from .hw.cost import estimate as cost_estimate

    _check_batch(args)
    bits = parse_bits(args.bits) if args.bits else None
    if bits and args.network.lower().endswith(".qnn"):
        raise HwsimError("a .qnn model carries its own bit widths; --bits is for ONNX and topology files",
                         field="--bits")
    outputs = _outputs(args)
    hw = _hardware(args, args.hw, outputs)
    workloads, name = load_network(args.network, bits)
    cost = cost_estimate(workloads, hw, args.batch)
    rep = report.cost_report(cost, network=args.network, network_name=name)
    with outputs:
        _write_reports(args, rep, report.cost_csv, outputs)
        _emit(report.format_estimate(rep), outputs)
    return 0


def compare(args) -> int:
    from .hw.cost import estimate as cost_estimate
    from .importers.qnn_shapes import workloads_from_model

    _check_batch(args)
    if len(args.hw) < 2:
        raise HwsimError(f"needs at least two designs to compare, got {len(args.hw)}", field="--hw")
    outputs = _outputs(args)
    designs = [_hardware(args, h, outputs) for h in args.hw]  # every --hw is checked before the functional run
    acc, where, saturation = None, "shapes only (no execution)", {}
    if args.network.lower().endswith(".qnn"):
        model = load_model(args.network)
        result, acc, where = _functional_run(args, model, saturation, auto_kernels=True)
        workloads, name = workloads_from_model(model, result.trace), model.name
    else:
        if getattr(args, "dataset", None) or getattr(args, "input", None):
            raise HwsimError("inputs and accuracy need a .qnn model (ONNX and topology networks are shapes only)",
                             field="--dataset" if args.dataset else "--input")
        workloads, name = load_network(args.network, parse_bits(args.bits) if args.bits else None)
    reps = [report.cost_report(cost_estimate(workloads, hw, args.batch), args.network, name) for hw in designs]
    rep = {"hwsim_version": reps[0]["hwsim_version"], "network": reps[0]["network"], "input": where,
           "batch": args.batch, "accuracy": acc, "designs": reps}
    report.add_input_saturation(rep, saturation)
    with outputs:
        _write_reports(args, rep, report.compare_csv, outputs)
        _emit(report.format_compare(rep), outputs)
    return 0


def validate(args) -> int:
    outputs = _outputs(args, text=("json",))
    model = load_qnn(args.model, "validate")
    rep = validate_report(args, model, auto_kernels=True)
    with outputs:
        if args.json:
            outputs.text(args.json, report.to_json(rep))
        _emit(report.format_validation(rep), outputs)
    return 0 if rep["passed"] else 1


def validate_report(args, model, auto_kernels: bool = False) -> dict:
    """The report `hwsim validate --json` writes (and simulator.api.validate returns): the engine against the
    float64 reference layer by layer on the inputs `args` names, with accuracy and the float baseline if asked.
    `auto_kernels`: as in _functional_run (the command line's validate)."""
    from .validate import compare

    _check_batch_size(args)
    if args.tolerance_lsb < 0:
        raise HwsimError(f"must be >= 0, got {args.tolerance_lsb}", field="--tolerance-lsb")
    saturation = {}
    codes, labels, where = load_inputs(model, args, saturation)
    if auto_kernels:
        choose_kernels(model, 3 * len(codes))   # the engine, then the float reference twice
    engine = Engine(model)
    float_model = None
    if getattr(args, "float_model", None):  # a bad float model fails here, before the layer-by-layer comparison
        from .float_baseline import FloatModel, float_baseline, float_inputs
        float_model = FloatModel.load(args.float_model)
        x_float, x_desc = float_inputs(model, args, codes)
        float_model.check_sample_shape(x_float.shape[1:])
    with progress_bar(args, len(codes), "sample", "validating") as done:
        result = compare(engine, codes, args.tolerance_lsb, min(args.batch_size, 256), progress=done)
    rep = {"model": model.source, "input": where, "samples": int(codes.shape[0]), **result.to_dict()}
    report.add_input_saturation(rep, saturation)
    if labels is not None or float_model is not None:
        out = run_batched(engine, codes, args.batch_size).output
        if labels is not None:
            rep["accuracy"] = accuracy(model, out, labels)
        if float_model is not None:
            rep["float_baseline"] = float_baseline(float_model, model, x_float, x_desc, out, labels,
                                                   args.batch_size)
    return rep


def inspect(args) -> int:
    outputs = _outputs(args, text=("json",))
    model = load_qnn(args.model, "inspect")
    rep = report.inspect_report(model, args.model)
    with outputs:
        if args.json:
            outputs.text(args.json, report.to_json(rep))
        _emit(report.format_inspect(rep), outputs)
    return 0


def import_model(args) -> int:
    from .importers import import_any
    from .qnn.model_io import model_bytes

    outputs = _outputs(args, text=(), binary=("output",))
    if str(args.output).lower().endswith(".onnx"):   # import writes a .qnn: an .onnx name would mislead
        raise HwsimError("import writes a .qnn model; give a .qnn output name (an ONNX model is what 'hwsim "
                         "export' writes)", source=args.output, field="-o")
    model = import_any(args.onnx_model, qdq_int8_allowed=args.ort_qdq_int8_allowed, ort_cpu=args.ort_cpu,
                       tflite_kernels=args.tflite_kernels, tflite_output=args.tflite_output)
    with outputs:
        outputs.bytes(args.output, model_bytes(model, args.output))
        lines = [f"{args.onnx_model} -> {args.output}: {len(model.layers)} layers, input "
                 f"{list(model.input_shape)}, {report.weight_storage_bits(model):,} weight bits"]
        tables = model.metadata.get("lookup_tables") or {}
        if tables:
            lines.append(f"note: {len(tables)} float island(s) became lookup-table layers (metadata lookup_tables)")
        # what the importer had to decide (a rounded bias, a float output bias): said here, not only in inspect
        lines += [f"note: {safe_text(n, 300)}" for n in (model.metadata.get("import_notes") or [])[:20]]
        _emit("\n".join(lines), outputs)
    if model.metadata.get("ort_warning"):
        print(f"hwsim: warning: {safe_text(model.metadata['ort_warning'], 1000)}", file=sys.stderr)
    return 0


def export_model(args) -> int:
    from .exporters.onnx_export import onnx_bytes

    outputs = _outputs(args, text=(), binary=("output",))
    if str(args.output).lower().endswith(".qnn"):   # export writes ONNX: a .qnn name would hold an ONNX file
        raise HwsimError("export writes an ONNX model; give an .onnx output name (a .qnn model is what 'hwsim "
                         "import' writes)", source=args.output, field="-o")
    model = load_qnn(args.model, "export")
    with outputs:
        outputs.bytes(args.output, onnx_bytes(model))
        _emit(f"{args.model} -> {args.output}", outputs)
    return 0


def _load_calibration(fg, path, limit=None, what="--calib"):
    from .quant.pipeline import check_calibration
    if path is None:
        return None, None
    if limit is not None and limit < 1:
        raise HwsimError(f"must be positive, got {limit}", field="--limit")
    declared = {}

    def rows(key, shape):  # only the first --limit samples are decompressed; the declared shapes are kept
        declared[key] = tuple(shape)
        return limit

    data = load_npz(path, keys=("x", "y"), limit=rows)
    if "x" not in data:
        raise HwsimError(f"missing array 'x' (found {_npz_keys(path)})", source=path, field="x")
    dx, dy = declared.get("x", ()), declared.get("y", ())
    if len(dx) > 1 and len(dy) == 1 and dx[0] != dy[0]:  # both cut to --limit, they could agree
        raise HwsimError(f"must be {dx[0]} integer labels, got shape {list(dy)} of {data['y'].dtype}",
                         source=path, field="y")
    return check_calibration(fg, data, path, limit)


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
    from .qnn.model_io import model_bytes
    from .quant.pipeline import quantize as run_quantize
    from .quant.summary import format_quantize, quantize_report

    if not args.output.lower().endswith(".qnn"):
        raise HwsimError("the output must be a .qnn file", field="-o")
    outputs = _outputs(args, text=("json",), binary=("output",))
    recipe = _recipe(args)
    fg = read_float_onnx(args.float_model)
    x, y = _load_calibration(fg, args.calib, args.limit)
    train = _load_calibration(fg, args.train, None, "--train") if args.train else None
    name = os.path.splitext(os.path.basename(args.output))[0]
    with progress_bar(args, 1, "step", "calibrating") as done:   # the pipeline tells the total as it goes
        result = run_quantize(fg, x, y, recipe, name=name, seed=args.seed, train=train, on_step=done)
    rep = quantize_report(result, args.float_model, args.output, args.calib)
    with outputs:
        outputs.bytes(args.output, model_bytes(result.model, args.output))
        if args.json:
            outputs.text(args.json, report.to_json(rep))
        _emit(format_quantize(rep), outputs)
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
    outputs = _outputs(args, text=("json", "recipe_out"))
    fg = read_float_onnx(args.float_model)
    x, _ = _load_calibration(fg, args.calib, args.limit)
    model = load_model(args.qnn) if args.qnn else None
    rep = run_analyze(fg, x, args.budget_bits, args.target_sqnr_db)
    rep["float_model"] = args.float_model
    if model is not None:
        rep["qnn"], rep["measured"] = args.qnn, measured_sqnr(fg, model, x)
    with outputs:
        if args.recipe_out:
            outputs.text(args.recipe_out, yaml.safe_dump(allocation_recipe(rep), sort_keys=False))
            rep["recipe_out"] = args.recipe_out
        if args.json:
            outputs.text(args.json, report.to_json(report.plain(rep)))
        _emit(format_analyze(rep), outputs)
    return 0


def tables(args) -> int:
    """Write a design's per-action energies and per-instance areas as Accelergy ERT / ART files."""
    from .hw.accelergy import ART_FILE, ERT_FILE, components, prepare_directory, render

    outputs = _outputs(args, text=())
    hw = _hardware(args, args.hw, outputs)
    comps, facts = components(hw)
    ert, art = render(comps, facts)     # everything computed before anything touches the disk
    out_dir = prepare_directory(args.accelergy)
    with outputs:
        outputs.text(out_dir / ERT_FILE, ert)
        outputs.text(out_dir / ART_FILE, art)
        with_area = sum(c.area_um2 is not None for c in comps)
        _emit(f"{facts['design']}: wrote {out_dir / ERT_FILE} ({len(comps)} components, "
              f"{sum(len(c.actions) for c in comps)} actions, pJ) and {out_dir / ART_FILE} "
              f"({with_area} components, um^2)", outputs)
    return 0


def plot(args) -> int:
    """`hwsim plot`: the Pareto front of one or more CSVs of design points, as one figure."""
    from . import plots

    if (args.x is None) != (args.y is None):
        raise HwsimError("give both --x and --y (one panel), or neither (the two default panels)",
                         field="--x" if args.x is None else "--y")
    fmt = plots.figure_format(args.output, "-o")
    plots.require_matplotlib("hwsim plot")
    for path in args.results:
        _check_input_file(path, None)
    outputs = _outputs(args, text=(), binary=("output",))
    outputs.add_inputs(*args.results)
    columns, rows = plots.read_results(args.results)
    source = args.results[0] if len(args.results) == 1 else ", ".join(args.results)
    if not rows:
        raise HwsimError("holds no rows: nothing to plot", source=source)
    panels = [(args.x, args.y)] if args.x else list(plots.DEFAULT_PANELS)
    figure, summary = plots.pareto_figure(columns, rows, panels, fmt, source, chosen=bool(args.x))
    with outputs:
        outputs.bytes(args.output, figure)
        _emit("\n".join([f"{source} -> {args.output}: {len(rows)} rows"] + summary), outputs)
    return 0


def sweep(args) -> int:
    """`hwsim sweep`: every model x design x grid point of a spec, one row per point appended to --out."""
    from . import sweep as sweeps

    if args.jobs is not None and args.jobs < 1:
        raise HwsimError(f"must be positive, got {args.jobs}", field="--jobs")
    if args.dask:
        sweeps.check_dask()
    _check_input_file(args.spec, None)
    plan = sweeps.plan(sweeps.load_spec(args.spec), args.out)   # every spec error before any work
    stats = sweeps.run_sweep(plan, args.out, jobs=args.jobs, dask=args.dask, quiet=args.quiet)
    if not args.quiet:
        print(safe_text(sweeps.summary_line(args.out, stats), limit=None))
    return 0
