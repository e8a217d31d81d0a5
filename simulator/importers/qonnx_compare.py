"""Per-tensor comparison of an imported QONNX model with qonnx's own executor (`compare_with_qonnx`).

qonnx_import.import_qonnx records which ONNX tensor each hwsim tensor stands for (metadata["qonnx_tensors"]);
this runs both and compares integer codes at every such tensor.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..errors import HwsimError
from ..graph import Model


@dataclass
class TensorAgreement:
    hwsim: str                 # hwsim tensor name
    onnx: str                  # the ONNX tensor it stands for
    elements: int
    mismatches: int            # chained: the engine run end to end vs qonnx
    max_diff_lsb: int
    local_mismatches: int      # the layer fed qonnx's own input codes (-1: not computable)
    local_max_diff_lsb: int
    histogram: dict = field(default_factory=dict)    # chained |diff| -> count
    off_grid: float = 0.0      # max |qonnx real / scale - nearest code|: how far qonnx's floats sit off the grid
    dequantized: bool = False  # a float graph output stored as 16-bit codes (lossy by design)

    def to_dict(self):
        return dict(self.__dict__)


def _qonnx_run(onnx_path, x):
    """Every tensor of qonnx's executor for a float32 batch x (re-batched; per sample if the graph fixes N)."""
    require_qonnx()
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.core.onnx_exec import execute_onnx
    from qonnx.transformation.infer_shapes import InferShapes

    def run(batch):
        m = ModelWrapper(str(onnx_path))
        inp = m.graph.input[0]
        inp.type.tensor_type.shape.dim[0].dim_value = batch.shape[0]
        del m.graph.value_info[:]
        for o in m.graph.output:
            if len(o.type.tensor_type.shape.dim):
                o.type.tensor_type.shape.dim[0].dim_value = batch.shape[0]
        m = m.transform(InferShapes())
        return execute_onnx(m, {inp.name: batch}, return_full_exec_context=True)

    x = np.asarray(x, np.float32)
    try:
        return run(x)
    except Exception:
        if x.shape[0] == 1:
            raise
    parts = [run(x[i:i + 1]) for i in range(x.shape[0])]
    common = set(parts[0]).intersection(*parts[1:])   # qonnx may add tensors with random names per run
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]
            if k in common and isinstance(parts[0][k], np.ndarray) and parts[0][k].ndim and parts[0][k].shape[0] == 1}


def require_qonnx():
    from . import require
    return require("qonnx", extra="qonnx")


def _qonnx_codes(entry, real):
    real = np.asarray(real, np.float64)
    if entry.get("binary"):
        return (real < 0).astype(np.int64), 0.0
    if entry.get("bias") is not None:   # a float output bias (model.output.bias) is added after dequantization
        bias = np.asarray(entry["bias"], np.float64)
        real = real - bias.reshape((1, -1) + (1,) * (real.ndim - 2))
    u = real / entry["scale"]
    codes = np.rint(u)
    off = float(np.abs(u - codes).max(initial=0.0))
    return codes.astype(np.int64) + entry["zero_point"], off


def compare_with_qonnx(onnx_path, qnn_model: Model, x) -> list:
    """Run qonnx's executor and the hwsim engine on the float input x [N, ...] and compare integer codes at every
    tensor the importer mapped (metadata "qonnx_tensors"). Returns one TensorAgreement per tensor, in graph order.

    chained: the engine's own end-to-end codes; local: the hwsim layer fed qonnx's codes of its inputs (what the
    layer's arithmetic alone contributes; -1 when an input has no ONNX counterpart). Differences in output LSBs.
    """
    from ..engine import RUNNERS, Engine, quantize_input
    from ..trace import LayerCounts

    mapping = qnn_model.metadata.get("qonnx_tensors")
    if not mapping:
        raise HwsimError("the model has no QONNX tensor mapping (import it with import_qonnx)",
                         source=qnn_model.source)
    x = np.asarray(x, np.float32)
    ctx = _qonnx_run(onnx_path, x)
    engine = Engine(qnn_model)
    ours = engine.run(quantize_input(qnn_model, x), keep_all=True).tensors
    theirs, offs = {}, {}
    for name, entry in mapping.items():
        theirs[name], offs[name] = _qonnx_codes(entry, ctx[entry["onnx"]])
    results = []
    for name in ["input"] + [lay.name for lay in qnn_model.layers]:
        if name not in mapping:
            continue
        entry = mapping[name]
        a, b = ours[name].astype(np.int64), theirs[name].reshape(ours[name].shape)
        d = np.abs(a - b)
        hist = dict(zip(*(v.tolist() for v in np.unique(d[d > 0], return_counts=True))))
        local_mm, local_max = -1, -1
        if name != "input":
            lay = qnn_model.layer(name)
            if all(n in theirs for n in lay.inputs):
                inputs = [theirs[n].reshape(ours[n].shape) for n in lay.inputs]
                out = RUNNERS[lay.op](engine, lay, inputs, LayerCounts(lay.name, lay.op))
                dl = np.abs(out.astype(np.int64) - b)
                local_mm, local_max = int(np.count_nonzero(dl)), int(dl.max(initial=0))
        results.append(TensorAgreement(name, entry["onnx"], int(a.size), int(np.count_nonzero(d)),
                                       int(d.max(initial=0)), local_mm, local_max, hist, offs[name],
                                       bool(entry.get("dequantized", False))))
    return results


def format_agreement(results) -> str:
    """A small text table of compare_with_qonnx results."""
    lines = [f"{'hwsim tensor':24} {'elements':>9} {'chained':>9} {'max':>4} {'local':>7} {'max':>4} {'off-grid':>9}"]
    for r in results:
        lines.append(f"{r.hwsim[:24]:24} {r.elements:9d} {r.mismatches:9d} {r.max_diff_lsb:4d} "
                     f"{r.local_mismatches:7d} {r.local_max_diff_lsb:4d} {r.off_grid:9.2e}"
                     + ("  (dequantized output)" if r.dequantized else ""))
    return "\n".join(lines)
