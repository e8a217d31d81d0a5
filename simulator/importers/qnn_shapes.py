"""A checked `.qnn` Model -> one `Workload` per layer, with the engine's event counts, measured or from shapes.

`workloads_from_model(model, trace)` takes the counts from an engine Trace when one is given (so value-dependent
facts such as zero-operand MACs come along); without one, `shape_counts(model)` derives every count the engine
records from shapes and encodings alone. It mirrors `simulator/engine.py` (Engine._mac, _encode, _maxpool,
_avgpool, _clip, _add, _count_decode, _count_encode, _count_traffic) and `units/pooling.py` (pool windows count
every slot, padded ones included: kernel - 1 compares / adds per output). tests/test_qnn_shapes.py checks it
equals the engine's trace on every shipped model and on random ones, so a cost estimate needs no input data.
Only value-dependent counts are left out: accumulator overflows, int16 pair saturations, zero-operand MACs.
"""

from __future__ import annotations

import math

from ..encodings import BinaryAct, CodebookW, EnqAct, Float32W, KnqAct, ThresholdAct
from ..errors import HwsimError
from ..graph import MAC_OPS, Model, table_bits
from ..hw.workload import EVENT_KEYS, Workload
from ..trace import LayerCounts, Trace

POPCOUNT_WORD_BITS = 64          # kernels/popcount.py WORD_BITS
VIEW_OPS = ("flatten", "reshape", "concat")


def _checked(model: Model) -> Model:
    if any(not lay.in_shapes or not lay.out_shape for lay in model.layers):
        model.check()
    return model


# ------------------------------------------------------------------------------------------ counts from shapes

def shape_counts(model: Model) -> Trace:
    """The engine's Trace for one inference, computed from shapes (no values: overflows etc. stay 0)."""
    model = _checked(model)
    layers = [_layer_counts(lay) for lay in model.layers]
    last = model.layers[-1]
    return Trace(layers, batch=1,
                 dram_input_bits=math.prod(model.input_shape) * model.input_enc.storage_bits,
                 dram_output_bits=math.prod(last.out_shape) * last.out_enc.storage_bits)


def _decode(enc, n, lc):          # Engine's _count_decode: the CE / CK converters in front of a datapath
    if isinstance(enc, EnqAct):
        lc.ce += n
    elif isinstance(enc, KnqAct):
        lc.ck += n


def _encode(enc, n, lc):          # Engine's _count_encode: the QE / QK converters behind it
    if isinstance(enc, EnqAct):
        lc.qe += n
    elif isinstance(enc, KnqAct):
        lc.qk += n
        lc.qk_comparators = len(enc.thresholds)


def _requant_and_encode(lay, out, lc):   # Engine: requantize, then _encode (clip: 2 compares per output)
    lc.requants = out
    if lay.attr("clip") is not None:
        lc.compares += 2 * out
    _encode(lay.out_enc, out, lc)


def _layer_counts(lay) -> LayerCounts:
    lc = LayerCounts(lay.name, lay.op)
    sizes = [math.prod(s) for s in lay.in_shapes]
    out = math.prod(lay.out_shape)
    in_enc = lay.in_encs[0]
    if lay.op in MAC_OPS:
        _mac_counts(lay, lc, sizes[0], out)
    elif lay.op == "maxpool":
        kh, kw = lay.attr("kernel")
        lc.compares = (kh * kw - 1) * out
    elif lay.op == "avgpool":
        kh, kw = lay.attr("kernel")      # Model.check() writes the global window here
        _decode(in_enc, sizes[0], lc)
        lc.adds = (kh * kw - 1) * out
        if lay.attr("rounding") == "ort_float32":
            lc.requants = out            # ORT's QLinearAveragePool requantizes; its encoder is not counted
        else:
            _encode(in_enc, out, lc)
    elif lay.op in ("relu", "clip"):
        _decode(in_enc, sizes[0], lc)
        lc.compares = (1 if lay.op == "relu" else 2) * sizes[0]
        _encode(in_enc, sizes[0], lc)
    elif lay.op == "add":
        for enc, size in zip(lay.in_encs, sizes):
            _decode(enc, size, lc)
        lc.adds = out
        _requant_and_encode(lay, out, lc)
    elif lay.op == "mul":                # Engine._mul: uniform operands only, its own rounding (no encoder)
        lc.muls = out
        lc.mul_bits = max(enc.operand_bits for enc in lay.in_encs)
        lc.requants = out
    elif lay.op == "resize" and lay.attr("mode") == "linear":   # Engine._resize: 4 taps, 3 adds, requant
        lc.muls, lc.adds, lc.requants = 4 * out, 3 * out, out
        lc.mul_bits = in_enc.operand_bits
    elif lay.op == "lut_avgpool":        # Engine._lut_avgpool
        lc.lut_reads, lc.lut_entries, lc.lut_width_bits = sizes[0], lay.table.shape[1], 32
        lc.adds, lc.requants = sizes[0], out
    elif lay.op == "softmax":            # Engine._softmax
        lc.lut_reads, lc.lut_entries, lc.lut_width_bits = 2 * out, 256, 32
        lc.adds, lc.requants = out, out
    elif lay.op == "lut":                # Engine._lut: one table read per element
        lc.lut_reads = sizes[0]
        lc.lut_entries = lay.table.shape[1]
        lc.lut_width_bits = lay.out_enc.storage_bits
    if lay.op not in VIEW_OPS:           # Engine's _count_traffic: compulsory traffic, views are free
        for name, enc, size in zip(lay.inputs, lay.in_encs, sizes):
            lc.input_bits[name] = size * enc.storage_bits
        lc.output_bits[lay.name] = out * lay.out_enc.storage_bits
        if lay.weight is not None:
            lc.weight_bits[f"{lay.name}.weight"] = lay.weight.size * lay.weight_enc.storage_bits
            if lay.bias is not None:
                lc.weight_bits[f"{lay.name}.bias"] = lay.bias.size * lay.bias_bits
            if lay.codebook is not None:
                lc.weight_bits[f"{lay.name}.codebook"] = lay.codebook.size * lay.weight_enc.table_bits
        if lay.table is not None:
            lc.weight_bits[f"{lay.name}.table"] = lay.table.size * table_bits(lay)
    return lc


def _mac_counts(lay, lc, in_size, out):
    in_enc, w_enc, out_enc = lay.in_encs[0], lay.weight_enc, lay.out_enc
    k = lay.weight[0].size               # reduction length of one output
    lc.acc_bits = lay.attr("acc_bits")
    if lay.is_xnor:
        ci, kh, kw = lay.weight.shape[1:] if lay.op == "conv2d" else (k, 1, 1)
        lc.binary_macs = out * k
        lc.popcount_words = out * -(-ci // POPCOUNT_WORD_BITS) * kh * kw
    elif lay.attr("datapath") == "x86_pair_sat16":
        lc.macs[(8, 8)] += out * k       # raw u8 x s8 codes; no decoder
        lc.datapath = "x86_pair_sat16"
    elif isinstance(w_enc, Float32W):    # float32 weights (ORT's float ConvTranspose): fp32 MACs
        lc.fp32_macs = out * k
    else:   # arithmetic "ort_float32" (ORT's float ConvTranspose) counts as the integer conv of its shape
        lc.macs[(in_enc.operand_bits, w_enc.operand_bits)] += out * k
        _decode(in_enc, in_size, lc)
    if isinstance(w_enc, CodebookW):
        lc.lut_reads = lay.weight.size   # each weight index decoded once per inference
        lc.lut_entries = lay.codebook.shape[1]
        lc.lut_width_bits = w_enc.table_bits
    if isinstance(out_enc, BinaryAct):
        return                           # the sign of the accumulator: no requantizer
    if isinstance(out_enc, ThresholdAct):
        lc.qk += out                     # comparator bank instead of requantizer and clip
        lc.qk_comparators = out_enc.n_thresholds
        return
    _requant_and_encode(lay, out, lc)


# ------------------------------------------------------------------------------------------ workloads

def workloads_from_model(model: Model, trace: Trace | None = None) -> list[Workload]:
    """One Workload per layer, events per inference (n = 1). `trace`: an engine Trace of this model."""
    model = _checked(model)
    counts = shape_counts(model) if trace is None else trace.per_inference()
    names = [lay.name for lay in model.layers]
    if [lc.name for lc in counts.layers] != names:
        raise HwsimError(f"the trace's layers {[lc.name for lc in counts.layers][:6]} do not match the model's "
                         f"{names[:6]}", source=model.source)
    return [_workload(lay, lc, measured=trace is not None) for lay, lc in zip(model.layers, counts.layers)]


def _workload(lay, lc, measured):
    events = {key: getattr(lc, key) for key in EVENT_KEYS if getattr(lc, key)}
    common = dict(events=events, qk_comparators=lc.qk_comparators, lut_entries=lc.lut_entries,
                  lut_width_bits=lc.lut_width_bits, out_bits=lay.out_enc.storage_bits, inputs=tuple(lay.inputs),
                  mul_bits=lc.mul_bits)
    if lay.op in VIEW_OPS:
        return Workload(lay.name, lay.op, "view", **common)
    if lay.op not in MAC_OPS:
        return _vector(lay, common)
    if lay.op == "conv2d":
        co, ci, kh, kw = lay.weight.shape
        g = lay.attr("groups")
        _, h, w = lay.in_shapes[0]
        _, p, q = lay.out_shape
        dims = dict(g=g, k=co // g, c=ci, p=p, q=q, r=kh, s=kw, h=h, w=w, stride=tuple(lay.attr("stride")),
                    pad=tuple(lay.attr("padding")))
    else:
        co, ci = lay.weight.shape
        dims = dict(k=co, c=ci)
    w_enc = lay.weight_enc
    extra = 0 if lay.bias is None else lay.bias.size * lay.bias_bits
    if lay.codebook is not None:
        extra += lay.codebook.size * w_enc.table_bits
    if lay.is_xnor:
        bits = dict(in_bits=1, w_bits=1, a_op_bits=1, w_op_bits=1, popcount_word_bits=lc.popcount_word_bits)
    else:
        keys = list(lc.macs) or [(lay.in_encs[0].operand_bits, w_enc.operand_bits)]
        a_op, w_op = max(keys)           # one key per layer: the engine's (activation, weight) operand bits
        bits = dict(in_bits=lay.in_encs[0].storage_bits, w_bits=w_enc.storage_bits, a_op_bits=a_op, w_op_bits=w_op)
        if isinstance(w_enc, Float32W):  # float32 operands (the 8-bit input is dequantized): fp32 MACs
            bits.update(a_op_bits=32, w_op_bits=32, mac_kind="fp32")
    zeros = {key: getattr(lc, key, None) if measured else None for key in ("zero_act_macs", "zero_any_macs")}
    path = "xnor" if lay.is_xnor else "mac"
    return Workload(lay.name, lay.op, path, **dims, **bits, acc_bits=lay.attr("acc_bits"),
                    extra_weight_bits=extra, **common, **zeros)


def _vector(lay, common):
    """Pools, add, mul, relu, clip on the ALU and lut on the LUT units: elements in (all inputs) and out; the
    window for pools; the table is loaded like weights."""
    shape = lay.in_shapes[0]
    if len(shape) == 3:
        c, h, w = shape
        p, q = lay.out_shape[1:]
    else:
        c, h, w, p, q = shape[0], 1, 1, 1, 1
    dims = dict(k=c, c=c, h=h, w=w, p=p, q=q)
    if lay.op in ("maxpool", "avgpool"):
        kh, kw = lay.attr("kernel")
        dims.update(r=kh, s=kw, stride=tuple(lay.attr("stride")), pad=tuple(lay.attr("padding")))
    in_bits = max(enc.storage_bits for enc in lay.in_encs)   # the widest input when an add mixes encodings
    table_size = 0 if lay.table is None else lay.table.size * table_bits(lay)
    return Workload(lay.name, lay.op, "vector", **dims, in_bits=in_bits,
                    in_elems=sum(math.prod(s) for s in lay.in_shapes), out_elems=math.prod(lay.out_shape),
                    extra_weight_bits=table_size, **common)

