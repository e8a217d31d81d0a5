"""Every quantized tensor ONNX Runtime computes, next to hwsim's: the graph's quantized intermediate tensors
become extra graph outputs (one ORT run), and each is compared with the hwsim layer the importer mapped it to
(`metadata["onnx_tensors"]`)."""

from __future__ import annotations

import numpy as np


def ort_tensors(path, x, names):
    import onnx
    import onnxruntime as ort
    m = onnx.load(str(path))
    have = {o.name for o in m.graph.output}
    for name in names:
        if name not in have:
            m.graph.output.append(onnx.helper.make_empty_tensor_value_info(name))
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.log_severity_level = 3
    sess = ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])
    outs = [sess.run(names, {sess.get_inputs()[0].name: x[i:i + 1]}) for i in range(len(x))]
    return {name: np.concatenate([o[k] for o in outs]) for k, name in enumerate(names)}


def compare_every_tensor(path, model, x):
    """{onnx tensor: number of codes that differ} for every quantized tensor; and how many were compared."""
    from simulator.engine import Engine, quantize_input
    mapping = model.metadata["onnx_tensors"]
    names = [n for n, layer in mapping.items() if layer != "input"]
    ref = ort_tensors(path, x, names)
    result = Engine(model).run(quantize_input(model, x), keep_all=True)
    diffs = {}
    for name in names:
        ours = result.tensors[mapping[name]]
        theirs = ref[name].astype(np.int64)
        if theirs.ndim == 4 and ours.ndim == 2:
            theirs = theirs.reshape(len(x), -1)
        diffs[name] = int(np.count_nonzero(ours.reshape(theirs.shape) != theirs))
    return diffs
