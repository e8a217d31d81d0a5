"""The Python API (docs/api.md): each command of the CLI as one call, `import simulator as hwsim` (or `import hwsim`).

The calls share the command line's code (simulator/commands.py), so a report is exactly what the matching
`--json` option writes. Everything heavy (the engine and its numba kernels, ONNX) is imported inside the calls:
`import simulator` stays light.
"""

from __future__ import annotations

import functools
import json
import os
import time
import types
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Sequence, Union

import numpy as np

from .errors import HwsimError

if TYPE_CHECKING:
    from .graph import Model
    from .hw.arch import Hardware
    from .trace import Trace

PathLike = Union[str, "os.PathLike[str]"]
ModelArg = Union["Model", PathLike]
HwArg = Union["Hardware", PathLike]
SetArg = Union[Mapping[str, Any], Iterable[str], None]


@dataclass
class Result:
    """What `run` returns."""
    outputs: np.ndarray        # the model's output codes [N, ...] (int64)
    values: np.ndarray         # the outputs' real values [N, ...], float32: what `hwsim run --output-values` writes
    trace: "Trace" = field(repr=False)   # the engine's event counts, summed over the N samples
    report: dict = field(repr=False)     # exactly what `hwsim run --json` writes
    accuracy: float | None = None        # with labels (or a dataset), else None


def _api(renames: Mapping[str, str] | None = None):
    """Decorate an API call: numpy floating-point warnings silenced as on the command line (results are checked
    where it matters), and a HwsimError names the call's keyword ("batch_size") where the shared code named the
    CLI option ("--batch-size"); it is raised from here, not from deep inside."""
    renames = {"--input": "x", "input": "x", **(renames or {})}

    def keyword(name):
        if name in renames:
            return renames[name]
        return name[2:].replace("-", "_") if isinstance(name, str) and name.startswith("--") else name

    def wrap(func):
        @functools.wraps(func)
        def call(*args, **kwargs):
            try:
                with np.errstate(all="ignore"):
                    return func(*args, **kwargs)
            except HwsimError as exc:
                # "y" names the labels of an array x (no source), or the member of a dataset .npz
                name = "labels" if exc.field == "y" and exc.source is None else keyword(exc.field)
                raise HwsimError(exc.message, source=keyword(exc.source), field=name) from None
            except MemoryError:
                raise HwsimError("out of memory: fewer samples (limit=N) or a smaller batch_size may help") from None
        return call
    return wrap


def _options(**kwargs) -> types.SimpleNamespace:
    """The options the command line's shared functions (simulator/commands.py) read, as attributes."""
    return types.SimpleNamespace(quiet=True, **kwargs)


def _is_path(value) -> bool:
    return isinstance(value, (str, os.PathLike))


def _input_file(path, what: str) -> str:
    from .commands import _check_input_file

    path = os.fspath(path)
    _check_input_file(path, what)   # a FIFO, device or directory is refused at once, as on the command line
    return path


def _inputs(x, labels, dataset, limit, batch_size) -> dict:
    """The input options of run / compare / validate: an array x (floats quantized, integers taken as codes),
    an .npy path, a dataset .npz (x and y), or nothing (the model's sample input)."""
    opts = {"input": None, "dataset": None, "x": None, "y": None, "limit": limit, "batch_size": batch_size}
    if not (isinstance(batch_size, int) and not isinstance(batch_size, bool)):
        raise HwsimError(f"must be an integer, got {batch_size!r}", field="batch_size")
    if limit is not None and not (isinstance(limit, int) and not isinstance(limit, bool)):
        raise HwsimError(f"must be an integer or None, got {limit!r}", field="limit")
    if dataset is not None:
        if x is not None:
            raise HwsimError("give x or dataset, not both", field="dataset")
        opts["dataset"] = _input_file(dataset, "dataset")
    elif _is_path(x):
        opts["input"] = _input_file(x, "x")   # an .npy file, read as `hwsim run --input` reads it
    elif x is not None:
        opts["x"] = np.asarray(x)
    if labels is not None:
        if opts["x"] is None:
            raise HwsimError("labels go with an array x (a dataset .npz carries its own 'y')", field="labels")
        opts["y"] = np.asarray(labels)
    return opts


def _model(model: ModelArg) -> "Model":
    from .graph import Model

    if isinstance(model, Model):
        return model
    if _is_path(model):
        return load_model(model)
    raise HwsimError(f"must be a Model or the path of a .qnn file, got {type(model).__name__}", field="model")


def _set_list(values: SetArg) -> list[str]:
    """`set=` as the CLI's --set PATH=VALUE strings: a dict {path: value} (a str is taken as the CLI takes the
    text after '='; other values are written as JSON, which is YAML) or a list of "PATH=VALUE" strings."""
    if values is None:
        return []
    if isinstance(values, Mapping):
        def text(value):
            if isinstance(value, str):
                return value
            try:
                return json.dumps(value, default=lambda v: v.tolist() if isinstance(v, (np.generic, np.ndarray))
                                  else _unsupported(v))
            except (TypeError, ValueError) as exc:
                raise HwsimError(f"{exc}", field="set") from None
        return [f"{path}={text(value)}" for path, value in values.items()]
    if not isinstance(values, (list, tuple)) or not all(isinstance(v, str) for v in values):
        raise HwsimError('must be a dict {"path": value} or a list of "path=value" strings', field="set")
    return list(values)


def _unsupported(value):
    raise TypeError(f"a --set value must be a number, string, boolean, list or dict, got {type(value).__name__}")


def _report(rep: dict) -> dict:
    """The report as the JSON file holds it (strict JSON: lists, not tuples; Python numbers)."""
    from .report import to_json

    return json.loads(to_json(rep))


# --------------------------------------------------------------------------------------------- the calls

@_api()
def load_model(path: PathLike) -> "Model":
    """Read a `.qnn` model file (docs/qnn-format.md), checked as `hwsim run` checks it."""
    from .qnn.model_io import load_model as load

    if not _is_path(path):
        raise HwsimError(f"must be the path of a .qnn file, got {type(path).__name__}", field="path")
    return load(_input_file(path, "path"))


@_api({"--tflite-kernels": "tflite_kernels", "--tflite-output": "tflite_output"})
def import_model(path: PathLike, *, tflite_kernels: str = "xnnpack", tflite_output: str | None = None,
                 ort_cpu: str = "host", qdq_int8_allowed: bool = False) -> "Model":
    """Import a quantized ONNX model (QOperator, QDQ, QONNX) or a TFLite int8 model as `hwsim import` does
    (docs/tflite-import.md, docs/qonnx-import.md): `tflite_kernels` is the LiteRT kernel path to follow,
    `tflite_output` the tensor a multi-output TFLite graph ends at; `ort_cpu` and `qdq_int8_allowed` say which
    ONNX Runtime to match. Needs the 'tflite' or 'onnx' extra."""
    from .importers import import_any

    if not _is_path(path):
        raise HwsimError(f"must be the path of an .onnx or .tflite file, got {type(path).__name__}", field="path")
    return import_any(_input_file(path, "path"), qdq_int8_allowed=qdq_int8_allowed, ort_cpu=ort_cpu,
                      tflite_kernels=tflite_kernels, tflite_output=tflite_output)


@_api()
def save_model(model: "Model", path: PathLike) -> None:
    """Write `model` (e.g. from `quantize`) as a `.qnn` file."""
    from .graph import Model
    from .qnn.model_io import save_model as save

    if not isinstance(model, Model):
        raise HwsimError(f"must be a Model, got {type(model).__name__}", field="model")
    save(model, os.fspath(path))


@_api()
def load_hardware(hw: HwArg, *, set: SetArg = None, array: str | None = None,
                  dataflow: str | None = None) -> "Hardware":
    """A design: a shipped name (tsmc90, generic45, eyeriss65, tpu_like, lowbit90) or a YAML path, with the
    CLI's overrides: `set={"path": value}` (--set path=value), `array="32x32"`, `dataflow="os"|"ws"|"is"`.
    A design already loaded is returned as it is (overrides are applied when loading)."""
    from .commands import _hardware
    from .hw.arch import Hardware

    if isinstance(hw, Hardware):
        if set or array or dataflow:
            raise HwsimError("set=, array= and dataflow= apply when a design is loaded: give its name or path "
                             "here, or pass them to load_hardware", field="set" if set else
                             "array" if array else "dataflow")
        return hw
    if not _is_path(hw):
        raise HwsimError(f"must be a design name, a YAML path or a loaded design, got {type(hw).__name__}",
                         field="hw")
    return _hardware(_options(set=_set_list(set), array=array, dataflow=dataflow), os.fspath(hw))


@_api()
def run(model: ModelArg, x: np.ndarray | PathLike | None = None, *, hw: HwArg, labels: np.ndarray | None = None,
        dataset: PathLike | None = None, set: SetArg = None, array: str | None = None,
        dataflow: str | None = None, batch: int = 1, limit: int | None = None, batch_size: int = 512) -> Result:
    """Run `model` bit-exactly on the integer engine and cost it on the design `hw` (`hwsim run`).

    x: float values (quantized by the model's input quantizer) or integer codes, [N, ...] or one sample; the
    path of an .npy file; None: the sample input stored in the model. labels (with an array x) or dataset (an
    .npz with 'x' and 'y') add the accuracy. set / array / dataflow override the design (load_hardware);
    batch: inferences processed together; limit: the first N samples only; batch_size: samples per engine batch.
    """
    from .commands import _functional_run, run_report
    from .hw.cost import check_batch
    from .report import output_values

    t0 = time.perf_counter()
    check_batch(batch)
    design = load_hardware(hw, set=set, array=array, dataflow=dataflow)
    model = _model(model)
    facts = {}
    result, acc, where = _functional_run(_options(**_inputs(x, labels, dataset, limit, batch_size)), model, facts)
    rep = run_report(model, result, design, batch, where, acc, t0, facts)
    return Result(result.output, output_values(model, result.output), result.trace, _report(rep), acc)


@_api()
def compare(model: ModelArg, x: np.ndarray | PathLike | None = None, *, hw: Sequence[HwArg],
            labels: np.ndarray | None = None, dataset: PathLike | None = None, set: SetArg = None,
            array: str | None = None, dataflow: str | None = None, batch: int = 1, bits: str | None = None,
            limit: int | None = None, batch_size: int = 512) -> list[dict]:
    """Cost one network on several designs (`hwsim compare`): one report per design of `hw`, in order.

    A model (a Model or a .qnn path) runs on the engine once; each report is then exactly what `hwsim run
    --json` writes for that design. An ONNX model or a SCALE-Sim topology .csv is costed from its shapes: each
    report is what `hwsim estimate --json` writes (no x; `bits="A,W"` as in estimate). set / array / dataflow
    apply to every design. Other arguments as in `run`.
    """
    from .commands import _functional_run, load_network, run_report
    from .hw.cost import check_batch, estimate as cost_estimate
    from .report import cost_report

    t0 = time.perf_counter()
    check_batch(batch)
    if not isinstance(hw, (list, tuple)) or not hw:
        raise HwsimError("must be a list of designs, e.g. hw=['tsmc90', 'eyeriss65']", field="hw")
    designs = [load_hardware(h, set=set, array=array, dataflow=dataflow) for h in hw]
    if _is_path(model) and not os.fspath(model).lower().endswith(".qnn"):
        if x is not None or labels is not None or dataset is not None:
            raise HwsimError("inputs and accuracy need a .qnn model (ONNX and topology networks are shapes only)",
                             field="x")
        network = _input_file(model, "model")
        workloads, name = load_network(network, _bits(bits))
        return [_report(cost_report(cost_estimate(workloads, d, batch), network, name)) for d in designs]
    if bits is not None:
        raise HwsimError("a .qnn model carries its own bit widths; bits= is for ONNX and topology files",
                         field="bits")
    model = _model(model)
    facts = {}
    result, acc, where = _functional_run(_options(**_inputs(x, labels, dataset, limit, batch_size)), model, facts)
    return [_report(run_report(model, result, d, batch, where, acc, t0, facts)) for d in designs]


def _bits(bits) -> tuple[int, int] | None:
    from .commands import parse_bits

    if bits is None:
        return None
    return parse_bits(",".join(map(str, bits)) if isinstance(bits, (tuple, list)) else bits)


@_api()
def estimate(network: ModelArg, *, hw: HwArg, bits: str | tuple[int, int] | None = None, set: SetArg = None,
             array: str | None = None, dataflow: str | None = None, batch: int = 1) -> dict:
    """Cost a network from its shapes alone, without running it (`hwsim estimate`): exactly what `hwsim
    estimate --json` writes. network: a .qnn path or a Model, an .onnx model (float or quantized), or a
    SCALE-Sim topology .csv; bits: activation and weight bits "A,W" (or (A, W)) for ONNX and topology files
    (default 8,8)."""
    from .commands import load_network
    from .graph import Model
    from .hw.cost import check_batch, estimate as cost_estimate
    from .report import cost_report

    check_batch(batch)
    pair = _bits(bits)
    is_model = isinstance(network, Model)
    if pair and (is_model or _is_path(network) and os.fspath(network).lower().endswith(".qnn")):
        raise HwsimError("a .qnn model carries its own bit widths; bits= is for ONNX and topology files",
                         field="bits")
    design = load_hardware(hw, set=set, array=array, dataflow=dataflow)
    if is_model:
        from .importers.qnn_shapes import workloads_from_model
        workloads, name, path = workloads_from_model(network), network.name, network.source
    elif _is_path(network):
        path = _input_file(network, "network")
        workloads, name = load_network(path, pair)
    else:
        raise HwsimError(f"must be a Model or the path of a .qnn, .onnx or topology .csv file, got "
                         f"{type(network).__name__}", field="network")
    return _report(cost_report(cost_estimate(workloads, design, batch), network=path, network_name=name))


@_api()
def validate(model: ModelArg, x: np.ndarray | PathLike | None = None, *, labels: np.ndarray | None = None,
             dataset: PathLike | None = None, tolerance_lsb: int = 0, float_model: PathLike | None = None,
             limit: int | None = None, batch_size: int = 512) -> dict:
    """Compare the integer engine with the float64 reference of the same quantized graph, layer by layer
    (`hwsim validate`): exactly what `hwsim validate --json` writes; `report["passed"]` is True when every layer
    is bit-exact (within `tolerance_lsb` output LSBs). float_model: a float ONNX model to compare accuracy and
    top-1 agreement with (needs the 'onnx' extra). Inputs as in `run`."""
    from .commands import validate_report

    model = _model(model)
    opts = _inputs(x, labels, dataset, limit, batch_size)
    fm = None if float_model is None else _input_file(float_model, "float_model")
    return _report(validate_report(_options(tolerance_lsb=tolerance_lsb, float_model=fm, **opts), model))


@_api()
def inspect(model: ModelArg) -> dict:
    """A model's layers, encodings, shapes and storage: exactly what `hwsim inspect --json` writes."""
    from .report import inspect_report

    model = _model(model)
    return _report(inspect_report(model, model.source))


@_api({"--input": "input"})
def quantize(float_model: PathLike, calib_x: np.ndarray | PathLike, calib_y: np.ndarray | None = None, *,
             weights: str | None = None, acts: str | None = None, input: str | None = None,
             recipe: PathLike | None = None, all_layers: bool = False, budget: float | None = None,
             train: PathLike | tuple | None = None, limit: int | None = None, seed: int = 0,
             name: str | None = None) -> "Model":
    """Quantize a float ONNX model into a Model (`hwsim quantize`; docs/quantization.md; needs the 'onnx'
    extra). calib_x: float calibration inputs [N, ...] (calib_y: optional labels) or an .npz path with 'x' and
    'y'. weights / acts / input: schemes as on the command line ("kmeans:4", "enq:auto", ...); recipe: a
    recipe YAML; train: (x, y) or an .npz for siq retraining; name: the model's name (default: the file's)."""
    from .commands import _load_calibration, _recipe
    from .importers.onnx.float_reader import read_float_onnx
    from .quant.pipeline import check_calibration, quantize as run_quantize

    if not _is_path(float_model):
        raise HwsimError(f"must be the path of a float ONNX model, got {type(float_model).__name__}",
                         field="float_model")
    path = _input_file(float_model, "float_model")
    opts = _options(recipe=None if recipe is None else _input_file(recipe, "recipe"), weights=weights, acts=acts,
                    input=input, all_layers=all_layers, budget=budget)
    chosen = _recipe(opts)
    fg = read_float_onnx(path)

    def data(x, y, what, lim):
        if _is_path(x):
            if y is not None:
                raise HwsimError("labels come from the .npz file's 'y'", field=what)
            return _load_calibration(fg, _input_file(x, what), lim, what)
        arrays = {"x": np.asarray(x)} if y is None else {"x": np.asarray(x), "y": np.asarray(y)}
        return check_calibration(fg, arrays, what, lim)

    if limit is not None and not (isinstance(limit, int) and limit >= 1):
        raise HwsimError(f"must be a positive integer, got {limit!r}", field="limit")
    x, y = data(calib_x, calib_y, "calib_x", limit)
    train_xy = None
    if isinstance(train, (tuple, list)) and len(train) == 2:
        train_xy = data(train[0], train[1], "train", None)
    elif _is_path(train):
        train_xy = data(train, None, "train", None)
    elif train is not None:
        raise HwsimError("must be (x, y) or the path of an .npz with 'x' and 'y'", field="train")
    stem = os.path.splitext(os.path.basename(path))[0]
    return run_quantize(fg, x, y, chosen, name=name or stem, seed=seed, train=train_xy).model
