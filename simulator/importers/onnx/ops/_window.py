"""Window attributes shared by Conv and the pools: strides, pads / auto_pad, dilations, ceil_mode."""

from __future__ import annotations

import math


def window(node, kernel, in_hw, ceil_ok=False) -> tuple[list, list]:
    """(stride [2], padding [top, left, bottom, right]) of a 2-D window op, or fail naming the attribute."""
    a = node.attrs()
    if len(kernel) != 2:
        node.fail(f"only 2-D windows are supported, kernel {list(kernel)}")
    if any(d != 1 for d in a.get("dilations", [1, 1])):
        node.fail(f"dilations {list(a['dilations'])} are not supported (only 1)")
    strides = list(a.get("strides", [1, 1]))
    if len(strides) != 2 or any(s < 1 for s in strides):
        node.fail(f"strides must be two positive integers, got {strides}")
    auto = a.get("auto_pad", b"NOTSET")
    auto = auto.decode() if isinstance(auto, bytes) else auto
    if auto in ("NOTSET", ""):
        pads = list(a.get("pads", [0, 0, 0, 0]))
        if len(pads) != 4 or any(p < 0 for p in pads):
            node.fail(f"pads must be four non-negative integers, got {pads}")
        top, left, bottom, right = pads
    elif auto == "VALID":
        top = left = bottom = right = 0
    elif auto in ("SAME_UPPER", "SAME_LOWER"):
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
    return strides, [top, left, bottom, right]
