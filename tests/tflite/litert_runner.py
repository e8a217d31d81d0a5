"""Run a .tflite model on one of LiteRT's three kernel paths, for the bit-exactness tests.

No TensorFlow: only `ai_edge_litert` (tests do `pytest.importorskip("ai_edge_litert")`).

Kernel paths (LiteRT 2.3.0):
  "reference"  OpResolverType.BUILTIN_REF: tflite/kernels/internal/reference/* (every tensor kept)
  "optimized"  OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES: the optimized builtin kernels (ruy / gemmlowp
               on x86), no XNNPACK (every tensor kept)
  "xnnpack"    OpResolverType.AUTO: what a plain Interpreter() runs; the XNNPACK delegate takes the ops it
               supports, the rest run on the optimized builtins. Intermediate tensors inside the delegate are
               not written back, so only the model inputs and outputs are returned.
"""

from __future__ import annotations

import numpy as np

KERNEL_PATHS = ("reference", "optimized", "xnnpack")


def _interpreter(path, kernels, num_threads=1):
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    resolver = {
        "reference": OpResolverType.BUILTIN_REF,
        "optimized": OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
        "xnnpack": OpResolverType.AUTO,
    }
    if kernels not in resolver:
        raise ValueError(f"kernels must be one of {KERNEL_PATHS}, not {kernels!r}")
    it = Interpreter(model_path=str(path), experimental_op_resolver_type=resolver[kernels],
                     experimental_preserve_all_tensors=(kernels != "xnnpack"), num_threads=num_threads)
    it.allocate_tensors()
    return it


def _detail(d):
    qp = d["quantization_parameters"]
    return {
        "name": d["name"],
        "index": int(d["index"]),
        "shape": tuple(int(s) for s in d["shape"]),
        "dtype": np.dtype(d["dtype"]),
        "scales": np.asarray(qp["scales"], dtype=np.float32),           # float32 as stored in the flatbuffer
        "zero_points": np.asarray(qp["zero_points"], dtype=np.int64),
        "quantized_dimension": int(qp["quantized_dimension"]),
    }


def tensor_details(path):
    """Every tensor of the model: name, index, shape, dtype, scales, zero points, quantized_dimension.

    Returns {"tensors": [detail...] by index, "inputs": [index...], "outputs": [index...],
    "ops": [{"op": name, "inputs": [...], "outputs": [...]}...]} (reference-kernel interpreter, no delegate)."""
    it = _interpreter(path, "reference")
    tensors = sorted((_detail(d) for d in it.get_tensor_details()), key=lambda t: t["index"])
    ops = [{"op": o["op_name"], "inputs": [int(i) for i in o["inputs"]], "outputs": [int(i) for i in o["outputs"]]}
           for o in it._get_ops_details()]
    return {"tensors": tensors,
            "inputs": [int(d["index"]) for d in it.get_input_details()],
            "outputs": [int(d["index"]) for d in it.get_output_details()],
            "ops": ops}


def _float_input_range(path, index):
    """(lo, hi) the model's first QUANTIZE of a float input can represent; (-1, 1) when there is none."""
    info = tensor_details(path)
    by_index = {t["index"]: t for t in info["tensors"]}
    for op in info["ops"]:
        if op["op"] == "QUANTIZE" and op["inputs"][0] == index:
            q = by_index[op["outputs"][0]]
            info_q = np.iinfo(q["dtype"])
            s, zp = float(q["scales"][0]), int(q["zero_points"][0])
            return (info_q.min - zp) * s, (info_q.max - zp) * s
    return -1.0, 1.0


def random_input(path, seed=0):
    """{input name: array} of valid inputs: uniform integer codes over the whole int8/uint8/int16 range, or
    for a float input uniform floats over the range its QUANTIZE can represent ((-1, 1) for a float model)."""
    rng = np.random.default_rng(seed)
    info = tensor_details(path)
    by_index = {t["index"]: t for t in info["tensors"]}
    out = {}
    for idx in info["inputs"]:
        t = by_index[idx]
        if np.issubdtype(t["dtype"], np.integer):
            ii = np.iinfo(t["dtype"])
            out[t["name"]] = rng.integers(ii.min, ii.max, size=t["shape"], endpoint=True).astype(t["dtype"])
        else:
            lo, hi = _float_input_range(path, idx)
            out[t["name"]] = rng.uniform(lo, hi, size=t["shape"]).astype(t["dtype"])
    return out


def run(path, inputs, kernels="xnnpack", num_threads=1):
    """Invoke the model once on one kernel path.

    inputs: an ndarray (single-input model) or a dict keyed by input name or tensor index.
    Returns {"tensors": {index: ndarray}, "names": {index: name}, "inputs": [index...], "outputs": [index...],
    "kernels": kernels, "ops": [node op names; with "xnnpack" the delegated nodes stay listed and a "DELEGATE"
    node is appended per XNNPACK partition]}.
    For "reference" / "optimized", "tensors" holds every non-constant tensor that has data after invoke
    (preserve_all_tensors) and the constants; for "xnnpack" only the inputs and outputs."""
    it = _interpreter(path, kernels, num_threads)
    in_details = it.get_input_details()
    if not isinstance(inputs, dict):
        if len(in_details) != 1:
            raise ValueError(f"model has {len(in_details)} inputs; pass a dict")
        inputs = {in_details[0]["index"]: inputs}
    by_name = {d["name"]: d for d in in_details}
    by_idx = {int(d["index"]): d for d in in_details}
    given = set()
    for key, value in inputs.items():
        d = by_name.get(key) if isinstance(key, str) else by_idx.get(int(key))
        if d is None:
            raise KeyError(f"no model input {key!r}; inputs are {sorted(by_name)}")
        arr = np.asarray(value)
        if arr.dtype != d["dtype"] or tuple(arr.shape) != tuple(d["shape"]):
            raise ValueError(f"input {d['name']!r}: expected {np.dtype(d['dtype'])}{[int(v) for v in d['shape']]}, "
                             f"got {arr.dtype}{list(arr.shape)}")
        it.set_tensor(d["index"], arr)
        given.add(int(d["index"]))
    missing = set(by_idx) - given
    if missing:
        raise ValueError(f"missing inputs {[by_idx[i]['name'] for i in sorted(missing)]}")
    it.invoke()

    outputs = [int(d["index"]) for d in it.get_output_details()]
    names = {int(d["index"]): d["name"] for d in it.get_tensor_details()}
    if kernels == "xnnpack":
        wanted = sorted(set(by_idx) | set(outputs))
    else:
        wanted = sorted(i for i, n in names.items() if n)  # unnamed = a kernel's scratch tensor, not the model's
    tensors = {}
    for idx in wanted:
        try:
            tensors[idx] = np.array(it.get_tensor(idx))  # copy: the buffer belongs to the interpreter
        except ValueError:  # no data (e.g. an optional / scratch tensor)
            continue
    ops = [o["op_name"] for o in it._get_ops_details()]
    return {"tensors": tensors, "names": {i: names[i] for i in tensors}, "inputs": sorted(by_idx),
            "outputs": outputs, "kernels": kernels, "ops": ops}


def xnnpack_nodes(path):
    """Indices of the model's nodes (operators) that the XNNPACK delegate takes on the "xnnpack" path; the
    others run on the optimized builtin kernels. Found from the DELEGATE nodes' boundary tensors: walking back
    from a partition's outputs, every producer met before the partition's inputs is inside it."""
    it = _interpreter(path, "xnnpack")
    ops = it._get_ops_details()
    model_ops = [o for o in ops if o["op_name"] != "DELEGATE"]
    producer = {int(t): o["index"] for o in model_ops for t in o["outputs"]}
    inputs_of = {o["index"]: [int(t) for t in o["inputs"] if t >= 0] for o in model_ops}
    taken = set()
    for d in ops:
        if d["op_name"] != "DELEGATE":
            continue
        boundary = {int(t) for t in d["inputs"]}
        stack = [int(t) for t in d["outputs"]]
        while stack:
            t = stack.pop()
            if t in boundary or t not in producer or producer[t] in taken:
                continue
            taken.add(producer[t])
            stack.extend(inputs_of[producer[t]])
    return taken


def outputs(result):
    """{output name: array} of a run() result."""
    return {result["names"][i]: result["tensors"][i] for i in result["outputs"]}
