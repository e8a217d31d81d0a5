"""Hostile and unsupported .tflite files for tests/test_tflite_import.py, made from a valid fixture with the TFLite
schema's object API (TensorFlow's schema_py_generated, in the 'tflite-make' extra):

    python tests/tflite/make_bad_fixtures.py          # writes tests/tflite/bad/*.tflite

Each file breaks one thing the importer must name in one line: an unsupported operator, a tensor without
quantization parameters, per-channel activation scales, a zero scale, a dilated convolution, a rank-3
activation, a tensor index out of range, a buffer of the wrong size, two outputs.
"""

from __future__ import annotations

import argparse
import copy
from pathlib import Path

import flatbuffers
from tensorflow.lite.python import schema_py_generated as schema

HERE = Path(__file__).resolve().parent


def load(path: Path):
    buf = path.read_bytes()
    return schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(buf, 0))


def save(model, path: Path):
    b = flatbuffers.Builder(1024)
    b.Finish(model.Pack(b), file_identifier=b"TFL3")
    path.write_bytes(bytes(b.Output()))


def op_named(model, name):
    code = getattr(schema.BuiltinOperator, name)
    for i, oc in enumerate(model.operatorCodes):
        if max(oc.builtinCode, oc.deprecatedBuiltinCode) == code:
            return i
    raise KeyError(name)


def first_op(model, name):
    sub = model.subgraphs[0]
    idx = op_named(model, name)
    return next(op for op in sub.operators if op.opcodeIndex == idx)


def variants(base):
    sub = lambda m: m.subgraphs[0]   # noqa: E731

    def unsupported_op(m):          # the first DEPTHWISE_CONV_2D's opcode becomes TANH
        oc = m.operatorCodes[op_named(m, "DEPTHWISE_CONV_2D")]
        oc.builtinCode = oc.deprecatedBuiltinCode = schema.BuiltinOperator.TANH

    def no_quantization(m):         # the conv output loses its scale and zero point
        sub(m).tensors[first_op(m, "CONV_2D").outputs[0]].quantization = None

    def per_channel_activation(m):
        q = sub(m).tensors[first_op(m, "CONV_2D").outputs[0]].quantization
        q.scale = [q.scale[0], q.scale[0]]
        q.zeroPoint = [q.zeroPoint[0], q.zeroPoint[0]]

    def zero_scale(m):
        sub(m).tensors[first_op(m, "CONV_2D").outputs[0]].quantization.scale = [0.0]

    def dilated(m):
        first_op(m, "CONV_2D").builtinOptions.dilationHFactor = 2

    def rank3(m):
        t = sub(m).tensors[first_op(m, "DEPTHWISE_CONV_2D").outputs[0]]
        t.shape = [1, t.shape[1] * t.shape[2], t.shape[3]]

    def bad_index(m):
        first_op(m, "CONV_2D").inputs[1] = 100_000

    def bad_buffer(m):
        w = sub(m).tensors[first_op(m, "CONV_2D").inputs[1]]
        m.buffers[w.buffer].data = m.buffers[w.buffer].data[:-3]

    def two_outputs(m):
        sub(m).outputs = list(sub(m).outputs) + [first_op(m, "CONV_2D").outputs[0]]

    return {"unsupported_op": unsupported_op, "no_quantization": no_quantization,
            "per_channel_activation": per_channel_activation, "zero_scale": zero_scale, "dilated": dilated,
            "rank3": rank3, "bad_index": bad_index, "bad_buffer": bad_buffer, "two_outputs": two_outputs}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", default=str(HERE / "fixtures" / "mixed.tflite"),
                    help="a valid int8 model with CONV_2D and DEPTHWISE_CONV_2D")
    ap.add_argument("--out", default=str(HERE / "bad"))
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    base = load(Path(args.base))
    for name, change in variants(base).items():
        m = copy.deepcopy(base)
        change(m)
        save(m, out / f"{name}.tflite")
        print(name)


if __name__ == "__main__":
    main()
