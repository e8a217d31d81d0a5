"""Every quantized tensor ONNX Runtime computes, next to hwsim's: the graph's quantized intermediate tensors
become extra graph outputs (one ORT run), and each is compared with the hwsim layer the importer mapped it to
(`metadata["onnx_tensors"]`).

The extra outputs change what ORT runs on x86: its QDQS8ToU8 rewrite leaves an int8 QuantizeLinear that is a
graph output as int8, so a MAC layer reading it runs on the exact s8 x s8 kernel instead of the u8 x s8 one
(pair-saturating without VNNI). hwsim therefore imports that same extended graph, with the model's options."""

from __future__ import annotations

import numpy as np


def with_outputs(path, names):
    """The ONNX model at `path` with `names` appended to its graph outputs (the first output stays first)."""
    import onnx
    m = onnx.load(str(path))
    have = {o.name for o in m.graph.output}
    for name in names:
        if name not in have:
            m.graph.output.append(onnx.helper.make_empty_tensor_value_info(name))
    return m


def ort_tensors(path, x, names):
    import onnxruntime as ort
    m = with_outputs(path, names)
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.log_severity_level = 3
    sess = ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])
    outs = [sess.run(names, {sess.get_inputs()[0].name: x[i:i + 1]}) for i in range(len(x))]
    return {name: np.concatenate([o[k] for o in outs]) for k, name in enumerate(names)}


def compare_every_tensor(path, model, x):
    """{onnx tensor: number of codes that differ} for every quantized tensor; and how many were compared."""
    from simulator.engine import Engine, quantize_input
    from simulator.importers.onnx_import import import_onnx
    mapping = model.metadata["onnx_tensors"]
    names = [n for n, layer in mapping.items() if layer != "input"]
    ref = ort_tensors(path, x, names)
    cpu = model.metadata.get("ort_cpu", {}).get("requested", "host")
    model = import_onnx(path, qdq_int8_allowed=model.metadata["ort_qdq_int8_allowed"], ort_cpu=cpu,
                        extra_outputs=names)
    mapping = model.metadata["onnx_tensors"]
    result = Engine(model).run(quantize_input(model, x), keep_all=True)
    diffs = {}
    for name in names:
        ours = result.tensors[mapping[name]]
        theirs = ref[name].astype(np.int64)
        if theirs.ndim == 4 and ours.ndim == 2:
            theirs = theirs.reshape(len(x), -1)
        diffs[name] = int(np.count_nonzero(ours.reshape(theirs.shape) != theirs))
    return diffs
