"""Resize (nearest or bilinear, 2-D, the coordinate modes ONNX Runtime supports) -> resize.

In a quantized ONNX Runtime model: nearest moves codes (ORT drops the Q/DQ pair around it), so it is read on the
codes, with a rescale when the output is quantized differently; bilinear between a DequantizeLinear and a
QuantizeLinear is computed by ORT in float32 (units/resize.py reproduces it).

Bilinear on 8-bit codes (the QOperator form) runs ORT's Resize kernel on the codes, and which arithmetic it uses
depends on the layout ORT gives the tensor: its NHWC transformer (onnxruntime/core/optimizer/nhwc_transformer.cc)
wraps QLinearConv in Transposes and the transpose optimizer pushes them through a Resize when that cancels them
(transpose_optimization HandleResize permutes the scales / sizes), e.g. QLinearConv -> Resize -> QLinearConv;
between a Transpose back to NCHW and a QLinearAdd it stays NCHW. The kernel (upsample.cc Upsample::BaseCompute)
takes NHWC when scales[1] != 1: the 10-bit fixed-point NhwcUpsampleBilinearInteger for 8-bit types; otherwise the
float32 UpsampleBilinear, truncated to the code type. The importer asks ORT itself: it builds a session on the
model with `optimized_model_filepath` (default optimizations, CPU) and reads the scales / sizes (and, where they
cannot tell, the Transposes upstream) of the Resize in the optimized graph; the layer's `arithmetic` names the
kernel (units/resize.py).
"""

import os
import tempfile

import numpy as np

from ....graph import Layer
from ....units.resize import COORDINATE_MODES, NEAREST_MODES
from . import handler

ATTRS = {"mode": None, "coordinate_transformation_mode": None, "nearest_mode": None, "cubic_coeff_a": None,
         "exclude_outside": 0, "extrapolation_value": None, "antialias": 0, "keep_aspect_ratio_policy": "stretch",
         "axes": None}


def resize_attrs(node, imp, shape) -> dict:
    """The hwsim resize attributes of `node` on a per-sample [C, H, W] tensor."""
    node.only_attrs(ATTRS)
    if len(shape) != 3:
        node.fail(f"Resize needs a [N, C, H, W] input, got a sample of shape {list(shape)}")
    text = node.text_attrs()
    mode = text.get("mode", "nearest")
    if mode not in ("nearest", "linear"):
        node.fail(f"Resize mode {mode!r} is not supported (nearest or linear)")
    coordinate = text.get("coordinate_transformation_mode", "half_pixel")
    if coordinate not in COORDINATE_MODES:
        node.fail(f"coordinate_transformation_mode {coordinate!r} is not supported; supported: "
                  f"{', '.join(COORDINATE_MODES)}")
    nearest_mode = text.get("nearest_mode", "round_prefer_floor")
    if nearest_mode not in NEAREST_MODES:
        node.fail(f"nearest_mode {nearest_mode!r} is not supported; supported: {', '.join(NEAREST_MODES)}")
    if node.attr("axes") is not None:
        node.fail("Resize with axes is not supported (give scales or sizes for all four axes)")
    if coordinate == "tf_crop_and_resize" or (node.input(1) and imp.const(node.inputs[1], node.where, "roi").size):
        node.fail("Resize with a region of interest (roi) is not supported")
    c, h, w = shape
    scales_name, sizes_name = node.input(2), node.input(3)
    scales = None if not scales_name else imp.const(scales_name, node.where, "scales").reshape(-1)
    if scales is not None and scales.size:
        if scales.size != 4 or not np.all(np.isfinite(scales)) or np.any(scales <= 0):
            node.fail(f"scales must be 4 positive factors, got {scales.tolist()[:6]}")
        if scales[0] != 1 or scales[1] != 1:
            node.fail(f"Resize may only scale H and W, got scales {scales.tolist()}")
        sh, sw = (np.float32(v) for v in scales[2:])
        size = [int(np.float32(h) * sh), int(np.float32(w) * sw)]   # ORT: static_cast<int64_t>(scale * dim)
    else:
        if not sizes_name:
            node.fail("Resize needs constant scales or sizes")
        sizes = imp.const(sizes_name, node.where, "sizes").reshape(-1)
        if sizes.size != 4 or sizes[1] != c or sizes[2] < 1 or sizes[3] < 1:
            node.fail(f"sizes must be [N, {c}, H, W] with H, W >= 1, got {sizes.tolist()[:6]}")
        size = [int(sizes[2]), int(sizes[3])]
        sh, sw = np.float32(size[0]) / np.float32(h), np.float32(size[1]) / np.float32(w)
    if min(size) < 1:
        node.fail(f"the output would be {size[0]}x{size[1]}")
    return {"size": size, "scales": [float(sh), float(sw)], "mode": mode, "coordinate": coordinate,
            "nearest_mode": nearest_mode}


@handler("Resize")
class Resize:
    def ort(self, node, imp):
        kind, payload = imp.lookup(node.inputs[0], node.where)
        if kind == "q":
            attrs = resize_attrs(node, imp, payload.shape)
            if attrs["mode"] != "nearest":   # bilinear on the codes: the kernel ORT picks for this node
                attrs["arithmetic"] = ort_codes_kernel(node, imp, attrs, payload.shape)
            imp.forms.add("QOperator")
            lay = Layer(imp.new_name(node.outputs[0]), "resize", [payload.name], attrs)
            imp.values[node.outputs[0]] = ("q", imp.add_layer(lay, [payload], node.where))
            return
        x = imp.dq_input(node.inputs[0], node.where)
        attrs = resize_attrs(node, imp, x.shape)
        if attrs["mode"] == "nearest":   # on the codes; a differently quantized output is a rescale after it
            lay = Layer(imp.new_name(node.outputs[0]), "resize", [x.name], attrs)
            imp.values[node.outputs[0]] = ("dq", imp.add_layer(lay, [x], node.where))
            return
        imp.qdq_group(node, "resize", [x], {"attrs": {**attrs, "requant": "float32"}})


# ------------------------------------------------------------------- which kernel ORT runs on 8-bit codes

NHWC_DOMAIN = "com.ms.internal.nhwc"


def ort_codes_kernel(node, imp, attrs, shape) -> str:
    """The units/resize.py arithmetic of ORT's kernel for bilinear Resize `node` on codes of [C, H, W] `shape`."""
    onnx = imp.onnx
    optimized = _ort_optimized(imp, node)
    mine = [n for n in imp.proto.graph.node if n.op_type == "Resize"]
    theirs = [n for n in optimized.graph.node if n.op_type == "Resize"]
    names = [n.name for n in mine]
    if node.proto.name and names.count(node.proto.name) == 1 and [n.name for n in theirs].count(node.proto.name) == 1:
        onode = next(n for n in theirs if n.name == node.proto.name)
    elif len(theirs) == len(mine):   # unnamed: ORT keeps the nodes' order
        onode = theirs[mine.index(node.proto)]
    else:
        node.fail(f"cannot find this Resize in ONNX Runtime's optimized graph ({len(mine)} Resize nodes in the "
                  f"model, {len(theirs)} after optimization), so which bilinear kernel ORT runs is unknown")
    if onode.domain not in ("", "ai.onnx"):   # an execution provider's layout-converted kernel, not the CPU one
        node.fail(f"ONNX Runtime runs this Resize as a {onode.domain} node; hwsim models the CPU kernel only")
    consts = {t.name: onnx.numpy_helper.to_array(t) for t in optimized.graph.initializer}
    producers = {}
    for n in optimized.graph.node:
        for out in n.output:
            producers[out] = n
        if n.op_type == "Constant" and n.attribute:
            consts[n.output[0]] = onnx.numpy_helper.to_array(n.attribute[0].t)
    c, h, w = shape
    (ho, wo), (sh, sw) = attrs["size"], (np.float32(v) for v in attrs["scales"])
    inputs = list(onode.input) + ["", "", ""]
    if inputs[2] and consts.get(inputs[2], np.zeros(0)).size:   # scales, permuted with the layout
        got = consts[inputs[2]].astype(np.float32).reshape(-1).tolist()
        layouts = {"nchw": [1, 1, sh, sw], "nhwc": [1, sh, sw, 1]}
    elif inputs[3] in consts:                                   # sizes (the batch entry is not checked)
        got = consts[inputs[3]].astype(np.int64).reshape(-1).tolist()[1:]
        layouts = {"nchw": [c, ho, wo], "nhwc": [ho, wo, c]}
    else:
        node.fail("ONNX Runtime's optimized graph gives this Resize no constant scales or sizes, so which "
                  "bilinear kernel it runs is unknown")
    found = [k for k, v in layouts.items() if [float(a) for a in v] == [float(a) for a in got]]
    if not found:
        node.fail(f"ONNX Runtime rewrote this Resize with scales / sizes {got}, neither its NCHW nor its NHWC form; "
                  "hwsim does not model that kernel")
    nhwc = found == ["nhwc"] or (len(found) == 2 and _nhwc_input(onode.input[0], producers, consts))
    if not nhwc:
        return "ort_nchw_float32_trunc"
    # Upsample::BaseCompute: NHWC only when scales[1] (here the H scale) != 1, else the NCHW code on [N, H, W, C]
    return "ort_nhwc_int10" if sh != np.float32(1) else "ort_nhwc_float32_trunc"


def _nhwc_input(name, producers, consts) -> bool:
    """Whether tensor `name` of ORT's optimized graph is channels-last: follow first inputs up to a Transpose,
    a channels_last / NHWC-domain node or a graph input."""
    seen = set()
    while name in producers and name not in seen:
        seen.add(name)
        n = producers[name]
        attrs = {a.name: a for a in n.attribute}
        if n.op_type == "Transpose":
            return list(attrs["perm"].ints) == [0, 2, 3, 1]
        if n.domain == NHWC_DOMAIN or ("channels_last" in attrs and attrs["channels_last"].i == 1):
            return True
        data = [i for i in n.input if i and i not in consts]
        if not data:
            return False
        name = data[0]
    return False


def _ort_optimized(imp, node):
    """ONNX Runtime's optimized graph of the model (default optimizations, CPU), built once per import."""
    cached = getattr(imp, "_ort_optimized_resize", None)
    if cached is not None:
        return cached
    from ... import require
    ort = require("onnxruntime")
    with tempfile.TemporaryDirectory(prefix="hwsim_ort_") as tmp:
        path = os.path.join(tmp, "optimized.onnx")
        options = ort.SessionOptions()
        options.log_severity_level = 3
        options.intra_op_num_threads = 1
        options.optimized_model_filepath = path
        try:
            ort.InferenceSession(imp.proto.SerializeToString(), options, providers=["CPUExecutionProvider"])
            optimized = imp.onnx.load(path)
        except Exception as exc:  # ORT's own reason, on one line
            detail = str(exc).strip().splitlines()[-1][:200] if str(exc).strip() else type(exc).__name__
            node.fail(f"ONNX Runtime cannot load this model to tell which bilinear kernel it runs on 8-bit codes: "
                      f"{detail}")
    imp._ort_optimized_resize = optimized
    return optimized
