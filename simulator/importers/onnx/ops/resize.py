"""Resize (nearest or bilinear, 2-D, the coordinate modes ONNX Runtime supports) -> resize.

In a quantized ONNX Runtime model: nearest moves codes (ORT drops the Q/DQ pair around it), so it is read on the
codes, with a rescale when the output is quantized differently; bilinear between a DequantizeLinear and a
QuantizeLinear is computed by ORT in float32 (units/resize.py reproduces it). Bilinear on 8-bit codes (the
QOperator form) is refused: ORT interpolates the codes either in float32 and truncates (NCHW) or in 10-bit
fixed point (its NHWC kernel after a layout change), and which one runs depends on the nodes around it.
"""

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
            if attrs["mode"] != "nearest":
                node.fail("bilinear Resize on 8-bit codes is not supported: ONNX Runtime runs either a float32 "
                          "NCHW kernel or a fixed-point NHWC kernel, depending on the layout of the nodes around it; "
                          "quantize in QDQ form, where ORT resizes dequantized values in float32")
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
