"""Importers: quantized ONNX (QOperator, QDQ) and QONNX graphs -> hwsim Model."""

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


def import_any(path, qdq_int8_allowed: bool = False, ort_cpu: str = "host"):
    """Import an ONNX file, choosing the QONNX importer when the graph uses QONNX ops. `qdq_int8_allowed`:
    match ONNX Runtime run with the session option session.qdqisint8allowed=1; `ort_cpu`: the CPU whose ORT
    u8 x s8 kernels to match, "host", "vnni" or "avx2" (see import_onnx)."""
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
