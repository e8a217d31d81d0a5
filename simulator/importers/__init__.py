"""Importers: quantized ONNX (QOperator, QDQ), QONNX graphs and TFLite / LiteRT int8 models -> hwsim Model."""

from __future__ import annotations

from ..errors import HwsimError


def require(module: str, extra: str = "onnx"):
    """Import an optional dependency or fail with one line saying which extra to install."""
    import importlib
    try:
        return importlib.import_module(module)
    except ImportError:
        # hwsim is installed from its checkout (it is on no package index), so the hint names that command
        raise HwsimError(f"this needs the '{module}' package: python -m pip install -e \".[{extra}]\" "
                         f"(in the hwsim checkout)") from None


def unique_name(base: str, taken: set) -> str:
    """`base`, or `base_2`, `base_3`, ...: the first name not in `taken`, which it joins."""
    cand, k = base, 1
    while cand in taken:
        k += 1
        cand = f"{base}_{k}"
    taken.add(cand)
    return cand


def prune_layers(layers: list, out_name: str) -> list:
    """The layers `out_name` depends on, in their order, with the shapes and encodings Model.check() fills in
    cleared (it recomputes them)."""
    by_name = {lay.name: lay for lay in layers}
    keep, stack = set(), [out_name]
    while stack:
        n = stack.pop()
        if n in keep or n not in by_name:
            continue
        keep.add(n)
        stack.extend(by_name[n].inputs)
    kept = [lay for lay in layers if lay.name in keep]
    for lay in kept:
        lay.in_shapes, lay.in_encs = [], []
    return kept


def is_tflite(path) -> bool:
    """A .tflite name, or a file carrying the TFLite flatbuffer identifier 'TFL3'."""
    if str(path).lower().endswith(".tflite"):
        return True
    try:
        with open(path, "rb") as f:
            return f.read(8)[4:8] == b"TFL3"
    except OSError:
        return False


def import_any(path, qdq_int8_allowed: bool = False, ort_cpu: str = "host", tflite_kernels: str = "xnnpack",
               tflite_output: str | None = None):
    """Import an ONNX or TFLite file, choosing the QONNX importer when an ONNX graph uses QONNX ops.
    `qdq_int8_allowed`: match ONNX Runtime run with the session option session.qdqisint8allowed=1; `ort_cpu`:
    the CPU whose ORT u8 x s8 kernels to match, "host", "vnni" or "avx2" (see import_onnx); `tflite_kernels`:
    the LiteRT kernel path a .tflite model should match, "xnnpack", "optimized" or "reference";
    `tflite_output`: the tensor a .tflite model's hwsim model ends at (needed when the graph has several)."""
    if is_tflite(path):
        from .tflite_import import import_tflite
        return import_tflite(path, tflite_kernels, tflite_output)
    require("onnx")
    from .onnx.frontend import load_onnx
    from .onnx.ops import QONNX, domain_ops
    from .onnx_import import import_onnx
    proto = load_onnx(path)
    qonnx_ops = domain_ops(QONNX)       # Quant, BipolarQuant, MultiThreshold, Trunc
    if any(node.op_type in qonnx_ops for node in proto.graph.node):
        from .qonnx_import import import_qonnx
        return import_qonnx(path, proto)
    return import_onnx(path, proto, qdq_int8_allowed=qdq_int8_allowed, ort_cpu=ort_cpu)
