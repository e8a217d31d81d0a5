"""Window attributes shared by Conv and the pools: strides, pads / auto_pad, dilations, ceil_mode."""

from __future__ import annotations

import math

import numpy as np

from ....graph import MAX_DIM


def _ints(value, n, lo, hi=MAX_DIM) -> bool:
    """value is a list of n integers in [lo, hi]."""
    return (isinstance(value, (list, tuple)) and len(value) == n
            and all(isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_)) and lo <= v <= hi
                    for v in value))


def _show(value, limit=80) -> str:
    text = repr([int(v) if isinstance(v, (int, np.integer)) else v for v in value]
                if isinstance(value, (list, tuple)) else value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def window(node, kernel, in_hw, ceil_ok=False, pool=False) -> tuple[list, list]:
    """(stride [2], padding [top, left, bottom, right]) of a 2-D window op, or fail naming the attribute.

    Every attribute is bounded as the integer graph's check bounds it (graph.MAX_DIM; strides at most the padded
    input, or 16); with the input size `in_hw` known, the kernel must fit the padded input; `pool`: pads must be
    smaller than the kernel (ONNX Runtime's rule: no window wholly in padding)."""
    a = node.attrs()
    kernel = list(kernel)
    if len(kernel) != 2:
        node.fail(f"only 2-D windows are supported, kernel_shape {_show(kernel)}")
    if not _ints(kernel, 2, 1):
        node.fail(f"kernel_shape must be two integers in [1, {MAX_DIM}], got {_show(kernel)}")
    dilations = a.get("dilations", [1, 1])
    if not isinstance(dilations, (list, tuple)) or any(d != 1 for d in dilations):
        node.fail(f"dilations {_show(dilations)} are not supported (only 1)")
    strides = list(a.get("strides", [1, 1]))
    if not _ints(strides, 2, 1):
        node.fail(f"strides must be two integers in [1, {MAX_DIM}], got {_show(strides)}")
    auto = a.get("auto_pad", b"NOTSET")
    auto = auto.decode() if isinstance(auto, bytes) else auto
    if auto in ("NOTSET", ""):
        pads = list(a.get("pads", [0, 0, 0, 0]))
        if not _ints(pads, 4, 0):
            node.fail(f"pads must be four integers in [0, {MAX_DIM}], got {_show(pads)}")
        top, left, bottom, right = (int(p) for p in pads)
    elif auto == "VALID":
        top = left = bottom = right = 0
    elif auto in ("SAME_UPPER", "SAME_LOWER"):
        if in_hw is None:
            node.fail(f"auto_pad {auto} is not supported here; export explicit pads")
        extra = [max((math.ceil(n / s) - 1) * s + k - n, 0) for n, s, k in zip(in_hw, strides, kernel)]
        small = [e // 2 for e in extra]
        big = [e - e // 2 for e in extra]
        (top, left), (bottom, right) = (small, big) if auto == "SAME_UPPER" else (big, small)
    else:
        node.fail(f"auto_pad {auto!r} is not supported")
    if a.get("ceil_mode", 0):
        if not ceil_ok:
            node.fail("ceil_mode=1 is not supported")
        # ceil mode = extra bottom/right padding up to one more window (never a window wholly in padding)
        for axis, (n, k, s) in enumerate(zip(in_hw, kernel, strides)):
            before, after = (top, bottom) if axis == 0 else (left, right)
            span = n + before + after - k
            if span % s:
                grow = s - span % s
                if (span + grow) // s * s >= n + before:
                    grow = 0
                if axis == 0:
                    bottom += grow
                else:
                    right += grow
    strides, kernel = [int(v) for v in strides], [int(k) for k in kernel]
    padding = [top, left, bottom, right]
    if pool and (max(top, bottom) >= kernel[0] or max(left, right) >= kernel[1]):
        node.fail(f"pads {padding} must be smaller than the kernel_shape {kernel}")
    if in_hw is not None:
        ext = [in_hw[0] + top + bottom, in_hw[1] + left + right]
        if ext[0] < kernel[0] or ext[1] < kernel[1]:
            node.fail(f"kernel_shape {kernel} does not fit the padded input {ext[0]}x{ext[1]}")
        if any(s > max(e, 16) for s, e in zip(strides, ext)):
            node.fail(f"strides {strides} are larger than the padded input {ext[0]}x{ext[1]}")
    return strides, padding
