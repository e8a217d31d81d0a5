"""Float baseline for `hwsim validate --float-model FLOAT.onnx`: what quantization cost, beside bit-exactness.

The float model (the network the .qnn was quantized from, as ONNX) runs in ONNX Runtime on the *float* inputs
(the dataset's `x`, e.g. pixel / 16 for the digits set: the values before the model's input quantizer), the
integer model runs in hwsim's engine on the input codes, and the two are compared on their top-1 prediction:

    float accuracy     argmax of the float model's output against the labels
    integer accuracy   argmax of the decoded output of hwsim's engine against the labels
    top-1 agreement    fraction of samples whose two argmaxes agree (needs no labels)

The float model must have one input, whose per-sample shape is the dataset's, and a first output with one value
per class (the integer model's output size). A batch dimension fixed in the file (often 1, as exporters write
it) is honoured by running chunks of exactly that size; a symbolic batch dimension takes `batch_size` samples
per call. Any problem with the file or the shapes is one HwsimError line.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from .errors import HwsimError

# ONNX Runtime's names of the float element types an input may have, and the numpy dtype fed to it.
FLOAT_TYPES = {"tensor(float)": np.float32, "tensor(double)": np.float64, "tensor(float16)": np.float16}
MAX_REASON = 300


def _reason(exc: BaseException) -> str:
    """The first non-empty line of an exception's message, shortened (ORT's messages can run to pages)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    text = lines[0] if lines else type(exc).__name__
    return text if len(text) <= MAX_REASON else text[:MAX_REASON] + "..."


def _dims(shape) -> list:
    """ORT shape -> list of int (fixed) or None (symbolic / unknown)."""
    return [d if isinstance(d, int) and d >= 0 else None for d in shape]


def _fmt_dims(dims) -> str:
    return "[" + ", ".join("?" if d is None else str(d) for d in dims) + "]"


@dataclass
class FloatModel:
    """A float ONNX model in an ONNX Runtime session, with the one input and the output hwsim uses."""
    path: str
    session: object
    input_name: str
    input_dims: list          # int or None per dimension, batch first
    input_dtype: type
    output_name: str

    @classmethod
    def load(cls, path) -> "FloatModel":
        from .importers import require
        ort = require("onnxruntime")
        path = str(path)
        if not os.path.isfile(path):
            raise HwsimError("file not found", source=path)
        opts = ort.SessionOptions()
        opts.log_severity_level = 3  # errors only: no warnings on stderr beside hwsim's one line
        try:
            session = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
        except Exception as exc:  # InvalidProtobuf, InvalidGraph, Fail, NotImplemented, ...
            raise HwsimError(f"cannot load the float model with ONNX Runtime: {_reason(exc)}", source=path) from None
        inputs, outputs = session.get_inputs(), session.get_outputs()
        if len(inputs) != 1:
            names = ", ".join(repr(i.name) for i in inputs) or "none"
            raise HwsimError(f"the float model must have exactly one input, it has {len(inputs)} ({names})",
                             source=path)
        if not outputs:
            raise HwsimError("the float model has no output", source=path)
        inp = inputs[0]
        if inp.type not in FLOAT_TYPES:
            raise HwsimError(f"input {inp.name!r} is {inp.type}; --float-model needs a model with a float input",
                             source=path)
        dims = _dims(inp.shape)
        if len(dims) < 1:
            raise HwsimError(f"input {inp.name!r} is a scalar; it needs a batch dimension", source=path)
        return cls(path, session, inp.name, dims, FLOAT_TYPES[inp.type], outputs[0].name)

    @property
    def fixed_batch(self) -> int | None:
        b = self.input_dims[0]
        return b if b else None

    def check_sample_shape(self, sample_shape) -> None:
        """The per-sample shape of the data must be the model's (symbolic dimensions accept any size)."""
        sample_shape = tuple(int(d) for d in sample_shape)
        want = self.input_dims[1:]
        if len(want) != len(sample_shape) or any(w is not None and w != s for w, s in zip(want, sample_shape)):
            raise HwsimError(f"input {self.input_name!r} has shape {_fmt_dims(self.input_dims)}, but the samples "
                             f"are {list(sample_shape)} (batch first: [N, {', '.join(map(str, sample_shape))}])",
                             source=self.path)

    def batching(self) -> str:
        b = self.fixed_batch
        if b == 1:
            return "batch fixed to 1 in the file: run sample by sample"
        if b:
            return f"batch fixed to {b} in the file: run in chunks of {b} (the last one padded)"
        return "dynamic batch"

    def run(self, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """The first output for every sample of x [N, ...], as float64 [N, outputs per sample]."""
        x = np.asarray(x)
        self.check_sample_shape(x.shape[1:])
        n = x.shape[0]
        chunk = self.fixed_batch or max(1, int(batch_size))
        x = x.astype(self.input_dtype, copy=False)
        outs = []
        for start in range(0, n, chunk):
            part = x[start:start + chunk]
            m = part.shape[0]
            if self.fixed_batch and m < chunk:  # pad a short last chunk to the fixed size, drop the extra rows
                part = np.concatenate([part, np.repeat(part[-1:], chunk - m, axis=0)])
            try:
                y = self.session.run([self.output_name], {self.input_name: np.ascontiguousarray(part)})[0]
            except Exception as exc:
                raise HwsimError(f"ONNX Runtime failed to run the float model: {_reason(exc)}",
                                 source=self.path) from None
            y = np.asarray(y)
            if y.ndim < 1 or y.shape[0] != part.shape[0]:
                raise HwsimError(f"output {self.output_name!r} has shape {list(y.shape)} for a batch of "
                                 f"{part.shape[0]}: its first dimension must be the batch", source=self.path)
            outs.append(y.reshape(y.shape[0], -1)[:m].astype(np.float64))
        if not outs:
            return np.zeros((0, 0))
        return np.concatenate(outs)


def float_inputs(model, args, codes: np.ndarray) -> tuple[np.ndarray, str]:
    """The float values the float model gets, aligned with `codes` (load_inputs' result, --limit applied).

    The dataset's (or --input's) float array as it is; when the inputs are integer codes (or the model's stored
    sample), the codes decoded by the model's input encoding (value = decoded code × scale).
    """
    from .fileio import load_npy, load_npz
    raw = getattr(args, "x", None)   # an array given to the Python API (simulator/api.py)
    n = codes.shape[0]     # only the samples load_inputs kept (--limit) are read
    if getattr(args, "input", None):
        raw = load_npy(args.input, mmap=True)
    elif getattr(args, "dataset", None):
        raw = load_npz(args.dataset, keys=("x",), limit=n).get("x")
    if raw is not None and np.issubdtype(raw.dtype, np.floating):
        if tuple(raw.shape) == tuple(model.input_shape):
            raw = raw[None]
        return np.array(raw[:n]), "the float input x as given"
    enc = model.input_enc
    values = (enc.decode(codes).astype(np.float64) * enc.value_scale).astype(np.float32)
    return values, "the input codes decoded by the model's input encoding (code value × scale)"


def output_values(model, codes: np.ndarray) -> np.ndarray:
    """Real values of the integer model's output codes, [N, outputs per sample]."""
    enc = model.layers[-1].out_enc
    return (enc.decode(codes).astype(np.float64) * enc.value_scale).reshape(len(codes), -1)


def top1_comparison(float_out: np.ndarray, int_out: np.ndarray, labels=None) -> dict:
    """Accuracies and agreement of two [N, classes] score arrays (argmax, ties to the lower class)."""
    pf, pi = np.argmax(float_out, axis=1), np.argmax(int_out, axis=1)
    agree = int(np.count_nonzero(pf == pi))
    n = len(pf)
    rep = {"samples": n, "top1_agreement": agree / n if n else None, "agreeing_samples": agree,
           "float_accuracy": None, "integer_accuracy": None}
    if labels is not None:
        labels = np.asarray(labels)
        rep["float_accuracy"] = float(np.mean(pf == labels)) if n else None
        rep["integer_accuracy"] = float(np.mean(pi == labels)) if n else None
    return rep


def float_baseline(float_model: FloatModel, model, x_float: np.ndarray, input_desc: str, int_codes: np.ndarray,
                   labels=None, batch_size: int = 256) -> dict:
    """Run the float model on x_float and compare it with the integer engine's output codes (the report's
    `float_baseline` object, docs/report-schema.md)."""
    y_float = float_model.run(x_float, batch_size)
    y_int = output_values(model, int_codes)
    if y_float.shape[1] != y_int.shape[1]:
        raise HwsimError(f"output {float_model.output_name!r} has {y_float.shape[1]} values per sample, the "
                         f"integer model's output {y_int.shape[1]}", source=float_model.path)
    diff = np.abs(y_float - y_int)
    rep = {"model": float_model.path, "runtime": f"onnxruntime {_ort_version()}",
           "input_name": float_model.input_name, "output_name": float_model.output_name,
           "input": input_desc, "batching": float_model.batching(),
           **top1_comparison(y_float, y_int, labels),
           "output_max_abs_diff": float(diff.max()) if diff.size else 0.0,
           "output_mean_abs_diff": float(diff.mean()) if diff.size else 0.0}
    return rep


def _ort_version() -> str:
    import onnxruntime
    return onnxruntime.__version__
