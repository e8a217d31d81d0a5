"""ONNX models for benchmarks: a ResNet-18 with random weights, quantized by ONNX Runtime (QDQ).

    from benchmarks.onnx_models import build_resnet18_qdq
    build_resnet18_qdq("resnet18_qdq.onnx")            # 224x224, u8 activations x s8 per-channel weights

`python benchmarks/onnx_models.py [OUT.onnx]` builds it and times `hwsim`'s import of it (results in
benchmarks/results/onnx_import.json). Needs onnx and onnxruntime (python -m pip install -e ".[onnx]").
"""

from __future__ import annotations

import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))   # whole_model_nets


def resnet18_float(size: int = 224, num_classes: int = 1000, seed: int = 0):
    """The torchvision ResNet-18 topology (batch norm folded into conv biases) with random He-scaled weights."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    nodes, inits = [], []
    counter = [0]

    def name(base):
        counter[0] += 1
        return f"{base}_{counter[0]}"

    def conv(x, cin, cout, k, stride, pad, relu=True, tag="conv"):
        w = name(tag + "_w")
        b = name(tag + "_b")
        std = np.sqrt(2.0 / (cin * k * k))
        inits.append(numpy_helper.from_array((rng.normal(size=(cout, cin, k, k)) * std).astype(np.float32), w))
        inits.append(numpy_helper.from_array((rng.normal(size=cout) * 0.05).astype(np.float32), b))
        y = name(tag)
        nodes.append(helper.make_node("Conv", [x, w, b], [y], name=y, kernel_shape=[k, k], strides=[stride] * 2,
                                      pads=[pad] * 4))
        if relu:
            r = name(tag + "_relu")
            nodes.append(helper.make_node("Relu", [y], [r], name=r))
            return r
        return y

    def block(x, cin, cout, stride, tag):
        y = conv(x, cin, cout, 3, stride, 1, tag=tag + "_conv1")
        y = conv(y, cout, cout, 3, 1, 1, relu=False, tag=tag + "_conv2")
        skip = x if stride == 1 and cin == cout else conv(x, cin, cout, 1, stride, 0, relu=False,
                                                           tag=tag + "_downsample")
        s = name(tag + "_add")
        nodes.append(helper.make_node("Add", [y, skip], [s], name=s))
        r = name(tag + "_relu")
        nodes.append(helper.make_node("Relu", [s], [r], name=r))
        return r

    x = conv("input", 3, 64, 7, 2, 3, tag="conv1")
    p = name("maxpool")
    nodes.append(helper.make_node("MaxPool", [x], [p], name=p, kernel_shape=[3, 3], strides=[2, 2], pads=[1] * 4))
    x, c = p, 64
    for stage, (cout, stride) in enumerate([(64, 1), (128, 2), (256, 2), (512, 2)], start=1):
        x = block(x, c, cout, stride, f"layer{stage}_0")
        x = block(x, cout, cout, 1, f"layer{stage}_1")
        c = cout
    nodes.append(helper.make_node("GlobalAveragePool", [x], ["gap"], name="gap"))
    nodes.append(helper.make_node("Flatten", ["gap"], ["flat"], name="flatten", axis=1))
    inits.append(numpy_helper.from_array((rng.normal(size=(num_classes, c)) / np.sqrt(c)).astype(np.float32),
                                         "fc_w"))
    inits.append(numpy_helper.from_array(np.zeros(num_classes, dtype=np.float32), "fc_b"))
    nodes.append(helper.make_node("Gemm", ["flat", "fc_w", "fc_b"], ["logits"], name="fc", transB=1))
    graph = helper.make_graph(nodes, "resnet18",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, size, size])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", num_classes])],
                              inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def build_resnet18_qdq(path, *, size: int = 224, calib_samples: int = 2, seed: int = 0, per_channel: bool = True,
                       activation: str = "u8", weight: str = "s8", fmt: str = "QDQ"):
    """Write a quantized ResNet-18 (random weights) to `path` and return the path.

    Calibrated by onnxruntime.quantization.quantize_static (MinMax) on `calib_samples` random N(0, 1) images.
    `activation` / `weight`: "u8" or "s8"; `fmt`: "QDQ" or "QOperator". The float model is written next to it
    as `<path>.float.onnx` (removed afterwards).
    """
    from whole_model_nets import quantize_qdq

    return quantize_qdq(resnet18_float(size=size, seed=seed), path, size, fmt=fmt, per_channel=per_channel,
                        seed=seed + 1, calib_samples=calib_samples, activation=activation, weight=weight)


def time_import(path, repeats: int = 3) -> dict:
    """Best-of-`repeats` wall time of import_onnx (read + convert + check) and of writing the .qnn."""
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from simulator.importers import import_any
    from simulator.qnn.model_io import save_model

    best_import = best_save = float("inf")
    model = None
    for _ in range(repeats):
        t0 = time.perf_counter()
        model = import_any(path)
        t1 = time.perf_counter()
        save_model(model, os.fspath(path) + ".qnn")
        t2 = time.perf_counter()
        best_import, best_save = min(best_import, t1 - t0), min(best_save, t2 - t1)
    size = os.path.getsize(os.fspath(path) + ".qnn")
    os.remove(os.fspath(path) + ".qnn")
    return {"model": os.path.basename(os.fspath(path)), "layers": len(model.layers),
            "weights": int(sum(lay.weight.size for lay in model.layers if lay.weight is not None)),
            "import_s": round(best_import, 3), "save_qnn_s": round(best_save, 3), "qnn_bytes": size}


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    out = argv[0] if argv else "/tmp/resnet18_qdq.onnx"
    t0 = time.perf_counter()
    build_resnet18_qdq(out)
    built = time.perf_counter() - t0
    result = {"build_and_calibrate_s": round(built, 2), **time_import(out)}
    print(json.dumps(result, indent=2))
    res_dir = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
    os.makedirs(res_dir, exist_ok=True)
    with open(os.path.join(res_dir, "onnx_import.json"), "w") as f:
        json.dump(result, f, indent=2)
        f.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
