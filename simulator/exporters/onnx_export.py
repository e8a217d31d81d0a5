"""hwsim Model -> ONNX model that ONNX Runtime runs bit for bit like hwsim's engine (`hwsim export`).

The graph takes the model's float input ("input", float32 [N, *input_shape]), quantizes it as hwsim's input
quantizer does, and returns the codes of the last layer under that layer's name (float32 (code - zp) * scale
when the model has `output_dequantize`). Every hwsim tensor appears in the graph under its hwsim name, holding
its codes (uint8 / int8 / uint16 / int16 / int32 by encoding), so intermediate tensors can be compared too.

Each layer takes one route (`export_routes(model)` lists them, with the reason a layer is not QDQ):

- "qdq" (conv2d, dense): DequantizeLinear -> Conv / Gemm -> QuantizeLinear, which ONNX Runtime fuses into
  QLinearConv / QGemm. Taken only where those kernels provably compute what hwsim computes: requant "float32"
  (or "float64" where float32 is provably exact: a float32 multiplier m * 2^e with bound(|acc|) * m < 2^24),
  datapath "exact", uint8 uniform activations of at most 8 bits in and out (ORT on x86 fuses int8 QDQ
  convolutions only where its uint8 rewrite applies; unfused it computes in float), weight values that fit
  int8, an int32 bias, and an accumulator that cannot overflow. ORT recomputes the multiplier as
  float32(float32(x_scale * w_scale[c]) / y_scale); the exporter picks float32 weight scales (a few ulps
  around the natural ones) for which that equals hwsim's float32 multiplier exactly, and falls back to
  "integer" when no scale does. Weights go out as int8, or as uint8 with zero point 128 when they exceed
  +-64 (x86 ORT without VNNI sums u8 x s8 product pairs into a saturating int16: vpmaddubsw). Narrow widths
  and the layer's clip are a Clip on the uint8 codes after the QuantizeLinear.
- "qdq" (add with requant float32, rescale "dequantize", uniform <= 8-bit inputs and output): DequantizeLinear
  of every input, float32 Adds in input order, QuantizeLinear: that is the rescale's arithmetic whether ORT
  fuses it (QLinearAdd) or not.
- "qdq: ort_float32" (conv2d with arithmetic "ort_float32", on either route): DequantizeLinear -> ConvTranspose
  (stride 1, the kernel unflipped) -> QuantizeLinear, which ONNX Runtime runs unfused in float32 exactly as
  units/float_conv_transpose.py computes (8-bit codes; per-channel weights only without groups). Float32
  weights (Float32W) go out as a float32 weight initializer (and a float32 bias), no DequantizeLinear, as
  quantize_static's QOperator form writes them: ORT's session quantizes both the same way on load.
- "integer": an exact decomposition into standard ops: decoders (zero point, CE shift, CK Gather, sign),
  weights as their decoded integer values (codebook, ternary, binary, pow2 all become integers); the MAC as
  float32 Conv / Gemm over chunks of input channels whose partial sums provably stay within 2^24 (exact in any
  order; one chunk for most 8-bit layers), summed in int64, else an im2col of Slices and an int64 MatMul; wrap-around as a Mod; a saturating accumulator that can overflow as an ONNX
  Loop adding one product per step in hwsim's order and clamping; the x86_pair_sat16 datapath as a Loop over
  MLAS's product pairs with the int16 clamp; every requantization mode spelled out (float32 / float64: Cast,
  Mul, Round; shift and TFLite fixed point: int64 Add / Mul / Div / Mod, Div truncating as C's, the kernel
  paths' final shifts -- fixed_double_ruy half up, fixed_double_blocks8 a Where per channel -- as comparisons
  of the remainder; float64_away: Cast, double Mul, half-away rounding from Floor / Abs / Sign); threshold
  outputs as comparisons counted; encoders (uniform clamp, QE Clip + Div, QK comparisons counted, sign).
  Average pooling (rounding "tflite_codes": the value sums plus count * zero point, divided half away, minus
  the zero point), relu / clip and the other adds take this route too.
  Adds broadcast NumPy-style (a [N, C, 1, 1] input with a [N, C, H, W] one), as ONNX's Add does.
- "integer" (the real-network layers): mul (SE gating, NumPy broadcasting) as units/elementwise.py mul_codes:
  int64 product, then requant "float32" (QLinearMul: float32(product) * float32 ratio + float32(zp), Round half
  to even, INT32_MIN outside int32, saturate) or "float64" (double product, Round, + zp); linear resize as
  units/resize.py: the dequantized values, four Gathers of taps, float32 (or float64) weight * tap products
  summed left to right, Div by the output scale, Round (ORT's kernels on 8-bit codes, `arithmetic`: the same taps
  on the codes, float32 then Cast to int32, or int64 10-bit weights then Div by 2^20, both truncating); softmax
  "ort_qlinear" as units/elementwise.py
  qlinear_softmax: the exp table gathered at (code - row max), a Loop summing the row in order in float32,
  Round(e * floor(1 / s_out) / sum) + zp (ORT's own QLinearSoftmax kernel sums in another order on some
  builds, so it is not used).
- "codes": maxpool (MaxPool on the codes; float32 for 16/24-bit codes, negated for binary), concat, reshape;
  lut (a Gather of the table at code - lowest code; per-channel tables flattened, index c * codes + code);
  dilate (Reshape to [N, C, H, 1, W, 1], Pad with the zero code, Reshape, Slice off the trailing s - 1);
  nearest resize (Gathers along H and W at units/resize.py's index vectors); transpose (Transpose, batch first).

A model-level output_bias is an Add of the float32 per-channel bias after the final DequantizeLinear.

The input quantizer is a QuantizeLinear when that is exact (rounding half_even, <= 8 bits, and the division
in float32: input_division "float32" or a power-of-two scale), else the same steps in double.

Not expressible, reported as an HwsimError naming the layer: softmax arithmetic "float64" (an exact exp in
double, which ONNX's Exp does not promise bit for bit), accumulators whose exact value could leave int64
(beyond what hwsim's MAC, whose operands stay below 2^16, can run), and what hwsim itself refuses (a shift
requantizer with a multiplier that is not a power of two, a float32 multiplier that overflows).
"""

from __future__ import annotations

import json
import math

import numpy as np

from ..encodings import BinaryAct, EnqAct, Float32W, KnqAct, ThresholdAct, UniformAct
from ..errors import HwsimError
from ..fileio import atomic_write_bytes
from ..graph import MAC_OPS, Model, check_run_work, default_pad_code
from ..importers import require
from ..units.requantizer import quantize_multiplier, requantize
from ..units.residual_add import tflite_left_shift

OPSET = 19            # onnx >= 1.14, onnxruntime >= 1.15
IR_VERSION = 9
F32_EXACT = 1 << 24          # float32 holds every integer of magnitude <= 2^24
MAX_WINDOW_SLICES = 1 << 15  # Slice nodes of kernel windows in one export (2^14 took 2.4 s; 2^20 took 167 s, 13 GB)
MAX_FLOAT_CHUNKS = 1024      # float32 chunks of one MAC layer, beyond which the int64 path is used
INT64_SAFE = 1 << 62         # exact int64 sums below this (with room for a bias and a wrap offset)
FLOAT_CLAMP = float(1 << 40)  # float requant results are clamped here before the cast (hwsim: 2^62)
SCALE_SEARCH_ULPS = 64


def export_onnx(model: Model, path, *, qdq: bool = True) -> None:
    """Write `model` as an ONNX file at `path` (atomically). qdq=False takes the integer route everywhere."""
    atomic_write_bytes(path, onnx_bytes(model, qdq=qdq))


def onnx_bytes(model: Model, *, qdq: bool = True) -> bytes:
    """The serialized ONNX file of `model` (for an output plan, simulator.fileio.Outputs)."""
    return to_onnx(model, qdq=qdq).SerializeToString()


def to_onnx(model: Model, *, qdq: bool = True):
    """The ONNX ModelProto for `model` (see the module docstring)."""
    require("onnx")
    return _Exporter(model, qdq).build()


def export_routes(model: Model, *, qdq: bool = True) -> dict:
    """{layer name: route}: "qdq", "codes" (maxpool, concat, reshape, lut, dilate, nearest resize,
    transpose) or "integer", the latter followed, for conv / dense / add layers, by the reason QDQ would not
    be exact (e.g. "integer: output is knq")."""
    require("onnx")
    exp = _Exporter(model, qdq)
    exp.build()
    return dict(exp.routes)


# ----------------------------------------------------------------------------------------------- types

def _code_type(enc):
    """(ONNX element type, numpy dtype) holding the codes of an activation encoding."""
    from onnx import TensorProto as T
    if isinstance(enc, UniformAct):
        if enc.bits <= 8:
            return (T.INT8, np.int8) if enc.signed else (T.UINT8, np.uint8)
        return (T.INT16, np.int16) if enc.signed else (T.UINT16, np.uint16)
    if isinstance(enc, EnqAct):
        if enc.e_bits <= 8:
            return T.UINT8, np.uint8
        return (T.UINT16, np.uint16) if enc.e_bits <= 16 else (T.INT32, np.int32)
    return T.UINT8, np.uint8     # KNQ (t_bits <= 8) and binary (0 / 1)


def _is_pow2(x: float) -> bool:
    return x > 0 and math.frexp(x)[0] == 0.5


def _clamp(v, lo, hi):
    return max(lo, min(hi, v))


def _ort_multiplier(xs, ws, ys):
    """What ORT's QLinearConv / QGemm compute: float32(float32(x_scale * w_scale) / y_scale)."""
    with np.errstate(all="ignore"):
        return (np.float32(xs) * np.asarray(ws, dtype=np.float32)).astype(np.float32) / np.float32(ys)


def find_weight_scales(xs: np.float32, ys: np.float32, target: np.ndarray, start: np.ndarray):
    """float32 weight scales w with float32(float32(xs * w) / ys) == target (float32) per channel, searched
    outward from `start`; None when some channel has no such scale within SCALE_SEARCH_ULPS ulps."""
    target = np.asarray(target, dtype=np.float32)
    best = np.asarray(start, dtype=np.float32).copy()
    if not (np.isfinite(best).all() and (best > 0).all()):
        return None
    found = _ort_multiplier(xs, best, ys) == target
    up, down = best.copy(), best.copy()
    for _ in range(SCALE_SEARCH_ULPS):
        if found.all():
            break
        up = np.nextafter(up, np.float32(np.inf))
        down = np.nextafter(down, np.float32(0))
        for cand in (up, down):
            ok = ~found & (_ort_multiplier(xs, cand, ys) == target) & (cand > 0) & np.isfinite(cand)
            best[ok] = cand[ok]
            found |= ok
    return best if found.all() else None


# ----------------------------------------------------------------------------------------------- graph

class _Graph:
    """Nodes and initializers with unique names."""

    def __init__(self, reserved):
        self.nodes, self.inits = [], []
        self.used = {_utf8(r) for r in reserved}
        self.count = 0

    def name(self, hint: str) -> str:
        hint = _utf8(hint)
        while True:
            self.count += 1
            cand = f"{hint}/{self.count}"
            if cand not in self.used:
                self.used.add(cand)
                return cand

    def const(self, value, dtype, hint="c") -> str:
        from onnx import numpy_helper
        name = self.name(hint)
        self.inits.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def op(self, op_type, inputs, hint, out=None, domain="", **attrs) -> str:
        from onnx import helper
        out = _utf8(out) if out else self.name(hint)
        self.used.add(out)
        self.nodes.append(helper.make_node(op_type, [_utf8(i) for i in inputs], [out],
                                           name=self.name(f"{hint}:{op_type}"),
                                           domain=domain, **attrs))
        return out


# ----------------------------------------------------------------------------------------------- exporter

class _Exporter:
    def __init__(self, model: Model, qdq: bool):
        from ..engine import Engine
        self.model = model
        self.qdq = qdq
        try:
            self.engine = Engine(model)          # checks the model and prepares every MAC plan as hwsim does
            # the graph written holds the engine's work (one Slice per kernel position on the integer conv path):
            # a model beyond the execution limit would take minutes and gigabytes to write (red team: 2^20-cell conv)
            check_run_work(model, 1)
        except HwsimError as exc:
            raise HwsimError(exc.message, source=exc.source or model.source, field=exc.field) from None
        self.g = _Graph({"input"} | {lay.name for lay in model.layers})
        if len(self.g.used) != len(model.layers) + 1:   # two names alike once made valid UTF-8 (_utf8)
            seen = {"input"}
            for i, lay in enumerate(model.layers):
                if _utf8(lay.name) in seen:
                    raise HwsimError(f"layer name {_utf8(lay.name)!r} is not unique once its unpaired surrogates "
                                     "are escaped for ONNX (names there are UTF-8)", source=model.source,
                                     field=f"layers[{i}].name")
                seen.add(_utf8(lay.name))
        self.codes = {}                           # hwsim tensor -> ONNX tensor holding its codes
        self.slices = 0                           # window Slice nodes written (MAX_WINDOW_SLICES)
        self.routes = {}

    # ------------------------------------------------------------------ driver
    def build(self):
        from onnx import TensorProto as T
        from onnx import checker, helper
        model = self.model
        self.codes["input"] = self._input()
        for lay in model.layers:
            self.lay = lay
            try:
                if lay.op not in EMITTERS:    # an op newer than this exporter: one clear error, not a KeyError
                    raise HwsimError(f"op {lay.op!r} has no ONNX export")
                out = EMITTERS[lay.op](self, lay)
            except HwsimError as exc:
                fld = f"layers.{lay.name}" + (f".{exc.field}" if exc.field else "")
                raise HwsimError(exc.message, source=model.source, field=fld) from None
            if out != _utf8(lay.name):
                self.g.op("Identity", [out], lay.name, out=lay.name)
            self.codes[lay.name] = lay.name
        last = model.layers[-1]
        elem, _ = _code_type(last.out_enc)
        out_name = _utf8(last.name)
        if getattr(model, "output_dequantize", False) == "tflite_optimized":
            raise HwsimError("output.dequantize 'tflite_optimized' (LiteRT's blockwise DEQUANTIZE) has no ONNX form; "
                             "export takes output.dequantize true or false", field="output.dequantize")
        if getattr(model, "output_dequantize", False) and isinstance(last.out_enc, UniformAct):
            # the codes keep their name with a suffix; the float output takes the layer's name
            codes = self.g.name(f"{last.name}/codes")
            for node in self.g.nodes:
                node.output[:] = [codes if o == out_name else o for o in node.output]
                node.input[:] = [codes if i == out_name else i for i in node.input]
            enc = last.out_enc
            bias = getattr(model, "output_bias", None)
            deq = out_name if bias is None else None
            if enc.bits <= 8:   # float32(code - zp) * scale
                y = self.g.op("DequantizeLinear", [codes, self.g.const(np.float32(enc.scale), np.float32, "out_scale"),
                                                   self.g.const(enc.zero_point, _code_type(enc)[1], "out_zp")],
                              "output", out=deq)
            else:               # opset 19 has no 16-bit DequantizeLinear: the same arithmetic spelled out
                v = self.g.op("Sub", [self.cast(codes, T.INT32, "output"), self.g.const(enc.zero_point, np.int32)],
                              "output")
                y = self.g.op("Mul", [self.cast(v, T.FLOAT, "output"),
                                      self.g.const(np.float32(enc.scale), np.float32)], "output", out=deq)
            if bias is not None:   # output.bias: float32 per output channel, added after the dequantization
                b = np.asarray(bias, dtype=np.float32).reshape((1, -1) + (1,) * (len(last.out_shape) - 1))
                self.g.op("Add", [y, self.g.const(b, np.float32, "output_bias")], "output", out=out_name)
            elem = T.FLOAT
        n_dim = ["N"] + list(model.input_shape)
        graph = helper.make_graph(
            self.g.nodes, _safe_name(_utf8(model.name)),
            [helper.make_tensor_value_info("input", T.FLOAT, n_dim)],
            [helper.make_tensor_value_info(out_name, elem, ["N"] + list(last.out_shape))],
            initializer=self.g.inits,
            doc_string=_utf8(f"exported by hwsim from {model.source}"))
        proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=IR_VERSION,
                                  producer_name="hwsim")
        helper.set_model_props(proto, {"hwsim.routes": json.dumps(self.routes),
                                       "hwsim.model": _utf8(model.name)})
        checker.check_model(proto)
        return proto

    # ------------------------------------------------------------------ small helpers
    def c64(self, v, hint="c"):
        return self.g.const(np.asarray(v, dtype=np.int64), np.int64, hint)

    def cast(self, x, to, hint):
        return self.g.op("Cast", [x], hint, to=int(to))

    def shape1(self, values, ndim):
        """Per-channel constants broadcast along axis 1 of an [N, C, ...] tensor (scalars stay scalars)."""
        values = np.asarray(values)
        if values.size == 1:
            return values.reshape(())
        return values.reshape((1, -1) + (1,) * (ndim - 2))

    def floor_div(self, x, d, hint):
        """floor(x / d) for int64 x and positive int64 d (scalar or broadcast array): (x - x mod d) / d."""
        d = np.asarray(d, dtype=np.int64)
        if (d == 1).all():
            return x
        dc = self.c64(d, hint)
        r = self.g.op("Mod", [x, dc], hint, fmod=0)     # sign of the divisor: r in [0, d)
        return self.g.op("Div", [self.g.op("Sub", [x, r], hint), dc], hint)

    def values(self, codes, enc, hint):
        """codes (any code type) -> int64 operand values (the decoders: zp removal, CE shift, CK mux, sign)."""
        from onnx import TensorProto as T
        x = self.cast(codes, T.INT64, hint)
        if isinstance(enc, UniformAct):
            return x if enc.zero_point == 0 else self.g.op("Sub", [x, self.c64(enc.zero_point)], hint)
        if isinstance(enc, EnqAct):
            shift = enc.qm_bits - enc.e_bits
            return x if shift == 0 else self.g.op("Mul", [x, self.c64(1 << shift)], hint)
        if isinstance(enc, KnqAct):
            return self.g.op("Gather", [self.c64(enc.centroids, "centroids"), x], hint, axis=0)
        # binary: bit 1 -> -1, bit 0 -> +1
        return self.g.op("Sub", [self.c64(1), self.g.op("Mul", [x, self.c64(2)], hint)], hint)

    def encode(self, v, enc, clip, hint, out=None):
        """int64 values -> codes: the layer's clip [lo, hi] (or None), then the encoder of `enc`."""
        from onnx import TensorProto as T
        elem, _ = _code_type(enc)
        lo, hi = (None, None) if clip is None else (int(clip[0]), int(clip[1]))
        if isinstance(enc, UniformAct):
            c_lo, c_hi = enc.code_range()
            zp = enc.zero_point
            # clamp(clamp(v, lo, hi) + zp, c_lo, c_hi) == clamp(v + zp, clamp(lo + zp), clamp(hi + zp))
            a = c_lo if lo is None else _clamp(lo + zp, c_lo, c_hi)
            b = c_hi if hi is None else _clamp(hi + zp, c_lo, c_hi)
            if zp:
                v = self.g.op("Add", [v, self.c64(zp)], hint)
            v = self.g.op("Clip", [v, self.c64(a), self.c64(b)], hint)
            return self.g.op("Cast", [v], hint, out=out, to=int(elem))
        if isinstance(enc, EnqAct):
            top = (1 << enc.qm_bits) - 1
            a = 0 if lo is None else _clamp(lo, 0, top)
            b = top if hi is None else _clamp(hi, 0, top)
            v = self.g.op("Clip", [v, self.c64(a), self.c64(b)], hint)
            shift = enc.qm_bits - enc.e_bits
            if shift:
                v = self.g.op("Div", [v, self.c64(1 << shift)], hint)   # v >= 0: truncation is the shift
            return self.g.op("Cast", [v], hint, out=out, to=int(elem))
        if isinstance(enc, KnqAct):
            if clip is not None:
                v = self.g.op("Clip", [v, self.c64(lo), self.c64(hi)], hint)
            ge = self.g.op("GreaterOrEqual", [self.g.op("Unsqueeze", [v, self.c64([-1])], hint),
                                              self.c64(enc.thresholds, "thresholds")], hint)
            count = self.g.op("ReduceSum", [self.cast(ge, T.INT64, hint), self.c64([-1])], hint, keepdims=0)
            return self.g.op("Cast", [count], hint, out=out, to=int(elem))
        # binary: x < 0 -> 1
        return self.g.op("Cast", [self.g.op("Less", [v, self.c64(0)], hint)], hint, out=out, to=int(elem))

    def clip_codes(self, codes, elem, lo, hi, hint, out=None):
        """Clip codes of type `elem` to [lo, hi]; 16-bit types go through int32 (ORT has no 16-bit Clip)."""
        from onnx import TensorProto as T
        from onnx.helper import tensor_dtype_to_np_dtype
        dt = tensor_dtype_to_np_dtype(elem)
        if elem in (T.UINT8, T.INT8, T.INT32):
            return self.g.op("Clip", [codes, self.g.const(lo, dt), self.g.const(hi, dt)], hint, out=out)
        x = self.cast(codes, T.INT32, hint)
        x = self.g.op("Clip", [x, self.g.const(lo, np.int32), self.g.const(hi, np.int32)], hint)
        return self.g.op("Cast", [x], hint, out=out, to=int(elem))

    def round_float(self, v, mode, hint):
        """A double tensor rounded to integers (still double) as simulator.units.rounding.round_float."""
        from onnx import TensorProto as T
        g = self.g
        if mode == "half_even":
            return g.op("Round", [v], hint)
        if mode == "floor":
            return g.op("Floor", [v], hint)
        half = g.const(0.5, np.float64)
        if mode == "half_up":     # r = floor(v); r + (v - r >= 1/2)
            r = g.op("Floor", [v], hint)
            ge = g.op("GreaterOrEqual", [g.op("Sub", [v, r], hint), half], hint)
            return g.op("Add", [r, self.cast(ge, T.DOUBLE, hint)], hint)
        sign = g.op("Sign", [v], hint)
        t = g.op("Mul", [g.op("Floor", [g.op("Abs", [v], hint)], hint), sign], hint)     # trunc(v)
        if mode == "trunc":
            return t
        # half_away: t + sign(v) * (|v - t| >= 1/2)
        ge = g.op("GreaterOrEqual", [g.op("Abs", [g.op("Sub", [v, t], hint)], hint), half], hint)
        return g.op("Add", [t, g.op("Mul", [sign, self.cast(ge, T.DOUBLE, hint)], hint)], hint)

    def round_div(self, x, d, mode, hint):
        """int64 x / d (d > 0, scalar or broadcast array) rounded as simulator.units.rounding.round_div."""
        from onnx import TensorProto as T
        d = np.asarray(d, dtype=np.int64)
        if (d == 1).all():
            return x
        dc = self.c64(d, hint)
        r = self.g.op("Mod", [x, dc], hint, fmod=0)
        q = self.g.op("Div", [self.g.op("Sub", [x, r], hint), dc], hint)
        if mode == "floor":
            return q
        other = self.g.op("Sub", [dc, r], hint)
        if mode == "trunc":
            inc = self.g.op("And", [self.g.op("Greater", [r, self.c64(0)], hint),
                                    self.g.op("Less", [x, self.c64(0)], hint)], hint)
        else:
            above = self.g.op("Greater", [r, other], hint)
            tie = self.g.op("Equal", [r, other], hint)
            if mode == "half_up":
                cond = tie
            elif mode == "half_even":
                odd = self.g.op("Equal", [self.g.op("Mod", [q, self.c64(2)], hint, fmod=0), self.c64(1)], hint)
                cond = self.g.op("And", [tie, odd], hint)
            else:  # half_away
                cond = self.g.op("And", [tie, self.g.op("GreaterOrEqual", [x, self.c64(0)], hint)], hint)
            inc = self.g.op("Or", [above, cond], hint)
        return self.g.op("Add", [q, self.cast(inc, T.INT64, hint)], hint)

    def pad_nchw(self, x, pads, value, dtype, hint):
        pt, pl, pb, pr = pads
        if not any(pads):
            return x
        return self.g.op("Pad", [x, self.c64([0, 0, pt, pl, 0, 0, pb, pr]), self.g.const(value, dtype)],
                         hint, mode="constant")

    def window_slices(self, xp, kernel, stride, out_hw, hint):
        """The strided view of every window slot (i, j) of a padded [N, C, Hp, Wp] tensor: [N, C, Ho, Wo] each."""
        (kh, kw), (sh, sw), (ho, wo) = kernel, stride, out_hw
        self.slices += kh * kw
        if self.slices > MAX_WINDOW_SLICES:   # 5 constants and a node each: ~0.15 ms and 0.5 KB apiece to build
            raise HwsimError(f"the exact ONNX form writes one Slice node per kernel window cell; this layer's "
                             f"{kh}x{kw} window brings the model to {self.slices:,}, more than the export limit "
                             f"of {MAX_WINDOW_SLICES:,}")
        views = []
        for i in range(kh):
            for j in range(kw):
                if (kh, kw) == (1, 1) and (sh, sw) == (1, 1):
                    views.append(xp)
                    continue
                views.append(self.g.op("Slice", [xp, self.c64([i, j]),
                                                 self.c64([i + sh * (ho - 1) + 1, j + sw * (wo - 1) + 1]),
                                                 self.c64([2, 3]), self.c64([sh, sw])], hint))
        return views

    # ------------------------------------------------------------------ input quantizer
    def _input(self):
        from onnx import TensorProto as T
        model, g = self.model, self.g
        enc = model.input_enc
        elem, dt = _code_type(enc)
        if isinstance(enc, BinaryAct):
            return g.op("Cast", [g.op("Less", ["input", g.const(np.float32(0), np.float32)], "input")],
                        "input", to=int(elem))
        division = getattr(model, "input_division", "float64")
        if division not in ("float32", "float64"):
            raise HwsimError(f"input division {division!r} (a LiteRT quantizer) has no ONNX form here; export takes "
                             "float32 or float64 input division", field="input.division")
        lo, hi = enc.code_range()
        scale = enc.value_scale
        f32_scale = np.float32(scale)
        exact_f32 = division == "float32" or (_is_pow2(scale) and float(f32_scale) == scale
                                              and np.isfinite(f32_scale) and f32_scale >= np.finfo(np.float32).tiny)
        if model.input_rounding == "half_even" and exact_f32 and isinstance(enc, UniformAct) and enc.bits <= 8:
            # QuantizeLinear: saturate(round_half_even(x / scale) + zp), the division in float32
            codes = g.op("QuantizeLinear", ["input", g.const(f32_scale, np.float32, "input_scale"),
                                            g.const(enc.zero_point, dt, "input_zp")], "input")
            tlo, thi = (np.iinfo(dt).min, np.iinfo(dt).max)
            if (lo, hi) != (tlo, thi):
                codes = self.clip_codes(codes, elem, lo, hi, "input")
            return codes
        # the same quantizer in double: x / scale, the declared rounding, clamp
        if division == "float32":
            x = g.op("Div", ["input", g.const(f32_scale, np.float32, "input_scale")], "input")
            v = self.cast(x, T.DOUBLE, "input")
        else:
            v = g.op("Div", [self.cast("input", T.DOUBLE, "input"), g.const(scale, np.float64, "input_scale")],
                     "input")
        v = self.round_float(v, model.input_rounding, "input")
        v = g.op("Clip", [v, g.const(-FLOAT_CLAMP, np.float64), g.const(FLOAT_CLAMP, np.float64)], "input")
        return self.encode(self.cast(v, T.INT64, "input"), enc, None, "input")

    # ------------------------------------------------------------------ conv / dense
    def _mac(self, lay):
        if lay.op == "conv2d" and lay.attr("arithmetic") == "ort_float32":
            self.routes[lay.name] = "qdq: ort_float32"
            return self._conv_transpose_float(lay)
        plan = self.qdq and self._qdq_plan(lay)
        if isinstance(plan, dict):
            self.routes[lay.name] = "qdq"
            return self._mac_qdq(lay, plan)
        self.routes[lay.name] = "integer" + (f": {plan}" if isinstance(plan, str) else "")
        return self._mac_integer(lay)

    def _bound(self, lay):
        """Largest |partial sum| of any output: max_c |bias_c| + x_reach * sum |w_c| (Python integers)."""
        plan = self.engine.plans[lay.name]
        lo, hi = lay.in_encs[0].value_range()
        reach = max(abs(int(lo)), abs(int(hi)))
        if lay.op == "conv2d" and any(lay.attr("padding")):
            reach = max(reach, abs(int(plan.pad_value)))
        w = plan.w_values.reshape(plan.w_values.shape[0], -1).astype(np.int64)   # the engine keeps them narrow
        sums = [int(s) for s in np.abs(w).sum(axis=1, dtype=np.int64)]
        bias = [0] * len(sums) if plan.bias is None else [int(b) for b in plan.bias]
        return max(abs(b) + reach * s for b, s in zip(bias, sums))

    def _float_chunks(self, lay, bound):
        """Ranges [c0, c1) of the weight's axis 1 (input channels of a conv, inputs of a dense layer) such that
        float32 computes each range's partial sums exactly (every |partial sum| <= F32_EXACT), or None."""
        if bound <= F32_EXACT:
            return [(0, lay.weight.shape[1])]
        if lay.op == "conv2d" and int(lay.attr("groups")) > 1:
            return None
        plan = self.engine.plans[lay.name]
        lo, hi = lay.in_encs[0].value_range()
        reach = max(abs(int(lo)), abs(int(hi)))
        if lay.op == "conv2d" and any(lay.attr("padding")):
            reach = max(reach, abs(int(plan.pad_value)))
        w = np.abs(plan.w_values.astype(np.int64))
        per_input = reach * (w.reshape(w.shape[0], w.shape[1], -1).sum(axis=2) if w.ndim == 4 else w)   # [Co, Cin]
        if per_input.max() > F32_EXACT:
            return None
        # Greedy maximal chunks, each found by a binary search on the prefix sums (every column fits alone, so
        # a chunk holds at least one): vectorised over the output channels, no Python loop over the inputs.
        # More than MAX_FLOAT_CHUNKS chunks: None (the exact int64 path, one node instead of thousands).
        k = w.shape[1]
        prefix = np.zeros((w.shape[0], k + 1), np.int64)
        np.cumsum(per_input, axis=1, out=prefix[:, 1:])
        chunks, start = [], 0
        while start < k:
            if len(chunks) >= MAX_FLOAT_CHUNKS:
                return None
            lo, hi = start + 1, k
            while lo < hi:
                mid = (lo + hi + 1) // 2
                if (prefix[:, mid] - prefix[:, start]).max() <= F32_EXACT:
                    lo = mid
                else:
                    hi = mid - 1
            chunks.append((start, lo))
            start = lo
        return chunks

    def _max_product(self, lay):
        plan = self.engine.plans[lay.name]
        lo, hi = lay.in_encs[0].value_range()
        reach = max(abs(int(lo)), abs(int(hi)), abs(int(plan.pad_value)))
        return reach * int(np.abs(plan.w_values.astype(np.int64)).max())

    def _qdq_plan(self, lay):
        """The QDQ parameters when ORT's fused kernel is provably exact for this layer, else the reason."""
        plan = self.engine.plans[lay.name]
        in_enc, out_enc = lay.in_encs[0], lay.out_enc
        # uint8 in and out: ORT on x86 fuses int8 QDQ convolutions only after rewriting Q -> DQ pairs to uint8
        # (QDQS8ToU8Transformer), which depends on the graph around the layer; unfused it computes in float
        if not (isinstance(in_enc, UniformAct) and in_enc.bits <= 8 and not in_enc.signed):
            return f"input is {_enc_name(in_enc)}"
        if not (type(out_enc) is UniformAct and out_enc.bits <= 8 and not out_enc.signed):
            return f"output is {_enc_name(out_enc)}"
        mode = lay.attr("requant")
        if mode == "float64" and not _float32_is_exact(plan.multiplier, self._bound(lay)):
            return "requant float64 (float32 could round differently)"
        if mode not in ("float32", "float64"):
            return f"requant {mode}"
        if lay.attr("datapath") != "exact":
            return f"datapath {lay.attr('datapath')}"
        w = plan.w_values.astype(np.int64)   # the engine keeps them in their narrowest dtype
        if w.min() < -128 or w.max() > 127:
            return "weight values beyond int8"
        bias = plan.bias
        if bias is not None and (bias.min() < -(1 << 31) or bias.max() > (1 << 31) - 1):
            return "bias beyond int32"
        acc_hi = min((1 << (lay.attr("acc_bits") - 1)) - 1, (1 << 31) - 1)
        if self._bound(lay) > acc_hi:
            return "accumulator may overflow"
        xs, ys = np.float32(in_enc.scale), np.float32(out_enc.scale)
        tiny = np.finfo(np.float32).tiny
        if not (np.isfinite(xs) and np.isfinite(ys) and xs >= tiny and ys >= tiny):
            return "activation scale outside float32's normal range"
        with np.errstate(over="ignore"):
            target = plan.multiplier.astype(np.float32)
        if not np.isfinite(target).all() or (target < tiny).any():
            return "multiplier outside float32's normal range"
        explicit = lay.attr("multiplier") is not None
        co = w.shape[0]
        with np.errstate(all="ignore"):
            start = (plan.multiplier * float(ys) / float(xs) if explicit
                     else lay.weight_enc.channel_scales(co)).astype(np.float32)
        ws = find_weight_scales(xs, ys, target, start)
        if ws is None:
            return "no float32 weight scale reproduces the multiplier in ORT's arithmetic"
        if int(np.abs(w).max()) <= 64:
            wtype, wcodes, wzp = np.int8, w, 0
        else:   # u8 x s8 would hit the saturating int16 pair sums of non-VNNI x86 kernels: use u8 x u8
            wtype, wcodes, wzp = np.uint8, w + 128, 128
        return {"xs": xs, "ys": ys, "ws": ws, "wtype": wtype, "wcodes": wcodes.astype(wtype), "wzp": wzp}

    def _mac_qdq(self, lay, p):
        g, name = self.g, lay.name
        in_enc = lay.in_encs[0]
        plan = self.engine.plans[name]
        _, in_dt = _code_type(in_enc)
        x = self.codes[lay.inputs[0]]
        attrs = {}
        if lay.op == "conv2d":
            pads = list(lay.attr("padding"))
            pad_code = lay.attr("pad_code")
            pad_code = default_pad_code(in_enc) if pad_code is None else pad_code
            if any(pads) and pad_code != in_enc.zero_point:
                x = self.pad_nchw(x, pads, pad_code, in_dt, name)   # ORT pads with the zero point
                pads = [0, 0, 0, 0]
            attrs = {"strides": list(lay.attr("stride")), "pads": pads, "group": int(lay.attr("groups")),
                     "kernel_shape": list(lay.weight.shape[2:])}
        xf = g.op("DequantizeLinear", [x, g.const(p["xs"], np.float32, f"{name}/x_scale"),
                                       g.const(in_enc.zero_point, in_dt, f"{name}/x_zp")], name)
        co = p["wcodes"].shape[0]
        wf = g.op("DequantizeLinear", [g.const(p["wcodes"], p["wtype"], f"{name}/weight"),
                                       g.const(p["ws"], np.float32, f"{name}/w_scale"),
                                       g.const(np.full(co, p["wzp"]), p["wtype"], f"{name}/w_zp")], name, axis=0)
        inputs = [xf, wf]
        if plan.bias is not None:
            bs = (np.float32(p["xs"]) * p["ws"]).astype(np.float32)
            inputs.append(g.op("DequantizeLinear", [g.const(plan.bias, np.int32, f"{name}/bias"),
                                                    g.const(bs, np.float32, f"{name}/b_scale"),
                                                    g.const(np.zeros(co), np.int32, f"{name}/b_zp")], name, axis=0))
        if lay.op == "conv2d":
            yf = g.op("Conv", inputs, name, **attrs)
        else:
            yf = g.op("Gemm", inputs, name, transB=1)
        return self._quantize_out(lay, yf)

    def _conv_transpose_float(self, lay):
        """conv2d arithmetic "ort_float32" as ONNX Runtime's own unfused float32 ConvTranspose (on any route: it
        has no integer form): DequantizeLinear of the (dilated) input codes and of the weight codes unflipped to
        ONNX's [Ci, Co/g, KH, KW], a stride-1 ConvTranspose with pads k - 1 - padding, QuantizeLinear. ORT then
        runs what units/float_conv_transpose.py computes: the same SGEMM (K = Ci/g, the weight's DequantizeLinear
        not folded), col2im in the same kernel order, the zero-inserted pixels adding exact zeros."""
        g, name = self.g, lay.name
        in_enc, w_enc, out_enc = lay.in_encs[0], lay.weight_enc, lay.out_enc
        co, cig, kh, kw = lay.weight.shape
        groups = int(lay.attr("groups"))
        if isinstance(w_enc, Float32W):
            return self._conv_transpose_float32(lay)
        per_channel = len(w_enc.scale) > 1 or len(w_enc.zero_point) > 1
        if max(in_enc.bits, w_enc.bits, out_enc.bits) > 8 or (per_channel and groups > 1):
            raise HwsimError("conv2d arithmetic 'ort_float32' exports as DequantizeLinear -> ConvTranspose -> "
                             "QuantizeLinear, which takes 8-bit codes and per-channel weights only without groups",
                             field="attrs.arithmetic")
        _, in_dt = _code_type(in_enc)
        w_dt = np.int8 if w_enc.signed else np.uint8
        cog = co // groups
        wcodes = lay.weight.reshape(groups, cog, cig, kh, kw)[..., ::-1, ::-1].transpose(0, 2, 1, 3, 4)
        wcodes = np.ascontiguousarray(wcodes.reshape(groups * cig, cog, kh, kw))
        ws = np.asarray(w_enc.scale, dtype=np.float32)
        wzp = np.asarray(w_enc.zero_point)
        if per_channel:
            ws, wzp = np.broadcast_to(ws, (co,)), np.broadcast_to(wzp, (co,))
        else:
            ws, wzp = ws.reshape(()), wzp.reshape(())
        xf = g.op("DequantizeLinear", [self.codes[lay.inputs[0]], g.const(np.float32(in_enc.scale), np.float32,
                                       f"{name}/x_scale"), g.const(in_enc.zero_point, in_dt, f"{name}/x_zp")], name)
        wf = g.op("DequantizeLinear", [g.const(wcodes, w_dt, f"{name}/weight"), g.const(ws, np.float32,
                                       f"{name}/w_scale"), g.const(wzp, w_dt, f"{name}/w_zp")], name, axis=1)
        inputs = [xf, wf]
        plan = self.engine.plans[name]
        if plan.bias is not None:
            from ..units.float_conv_transpose import bias_scales
            inputs.append(g.op("DequantizeLinear", [g.const(plan.bias, np.int32, f"{name}/bias"),
                                                    g.const(bias_scales(lay, co), np.float32, f"{name}/b_scale"),
                                                    g.const(np.zeros(co), np.int32, f"{name}/b_zp")], name, axis=0))
        pt, pl, pb, pr = (int(v) for v in lay.attr("padding"))
        yf = g.op("ConvTranspose", inputs, name, strides=[1, 1], group=groups, kernel_shape=[kh, kw],
                  pads=[kh - 1 - pt, kw - 1 - pl, kh - 1 - pb, kw - 1 - pr])
        return self._quantize_out(lay, yf)

    def _conv_transpose_float32(self, lay):
        """conv2d "ort_float32" on float32 weights: DequantizeLinear of the (dilated) input codes, a stride-1
        ConvTranspose on float32 weight and bias initializers (the kernel unflipped), QuantizeLinear: the
        QOperator form, which ORT's WeightBiasQuantization turns into what units/float_conv_transpose.py
        computes."""
        from ..units.float_conv_transpose import bias_scales, dequantize
        g, name, in_enc = self.g, lay.name, lay.in_encs[0]
        co, cig, kh, kw = lay.weight.shape
        groups = int(lay.attr("groups"))
        if max(in_enc.bits, lay.out_enc.bits) > 8:
            raise HwsimError("conv2d arithmetic 'ort_float32' exports as DequantizeLinear -> ConvTranspose -> "
                             "QuantizeLinear, which takes 8-bit codes", field="attrs.arithmetic")
        _, in_dt = _code_type(in_enc)
        w = Float32W.floats(lay.weight).reshape(groups, co // groups, cig, kh, kw)[..., ::-1, ::-1]
        w = np.ascontiguousarray(w.transpose(0, 2, 1, 3, 4).reshape(groups * cig, co // groups, kh, kw))
        xf = g.op("DequantizeLinear", [self.codes[lay.inputs[0]], g.const(np.float32(in_enc.scale), np.float32,
                                       f"{name}/x_scale"), g.const(in_enc.zero_point, in_dt, f"{name}/x_zp")], name)
        inputs = [xf, g.const(w, np.float32, f"{name}/weight")]
        if lay.bias is not None:
            inputs.append(g.const(dequantize(lay.bias, bias_scales(lay, co)), np.float32, f"{name}/bias"))
        pt, pl, pb, pr = (int(v) for v in lay.attr("padding"))
        yf = g.op("ConvTranspose", inputs, name, strides=[1, 1], group=groups, kernel_shape=[kh, kw],
                  pads=[kh - 1 - pt, kw - 1 - pl, kh - 1 - pb, kw - 1 - pr])
        return self._quantize_out(lay, yf)

    def _mac_integer(self, lay):
        name = lay.name
        plan = self.engine.plans[name]
        if lay.attr("datapath") == "x86_pair_sat16":
            acc, ndim = self._acc_pairsat(lay), 1 + len(lay.out_shape)
        else:
            acc, ndim = self._acc_values(lay)
        out_enc = lay.out_enc
        if isinstance(out_enc, BinaryAct):   # the sign of the accumulator (bias = threshold)
            return self.encode(acc, out_enc, None, name, out=name)
        if isinstance(out_enc, ThresholdAct):
            return self._threshold_encode(acc, out_enc, ndim, name)
        v = self.requant(acc, plan.multiplier, lay.attr("requant"), ndim, name)
        return self.encode(v, out_enc, lay.attr("clip"), name, out=name)

    def _policy(self, lay, bound):
        """(wrap, saturate): what the accumulator policy must do when `bound` may exceed the register."""
        acc_bits, policy = lay.attr("acc_bits"), lay.attr("overflow")
        if bound <= (1 << (acc_bits - 1)) - 1:
            return False, False
        if policy == "wrap" and bound >= INT64_SAFE:
            raise HwsimError(f"the exact accumulator (worst case |sum| {bound}) does not fit int64",
                             field="attrs.acc_bits")
        return policy == "wrap", policy == "saturate"

    def _wrap(self, acc, acc_bits, hint):
        """Two's complement wrap-around of an exact int64 sum: ((acc - lo) mod 2^bits) + lo."""
        lo = -(1 << (acc_bits - 1))
        g = self.g
        return g.op("Add", [g.op("Mod", [g.op("Sub", [acc, self.c64(lo)], hint), self.c64(1 << acc_bits)], hint,
                                 fmod=0), self.c64(lo)], hint)

    def _acc_values(self, lay):
        """The accumulators of the exact MAC datapath on decoded values: (int64 tensor, rank)."""
        from onnx import TensorProto as T
        g, name = self.g, lay.name
        plan = self.engine.plans[name]
        w = plan.w_values.astype(np.int64)
        co = w.shape[0]
        has_bias = plan.bias is not None
        bias = plan.bias.astype(np.int64) if has_bias else np.zeros(co, np.int64)
        acc_bits = lay.attr("acc_bits")
        bound = self._bound(lay)
        wrap, saturate = self._policy(lay, bound)
        if saturate and (1 << (acc_bits - 1)) + self._max_product(lay) >= 1 << 63:
            raise HwsimError(f"a {acc_bits}-bit saturating accumulator plus one product can leave int64",
                             field="attrs.acc_bits")
        x = self.values(self.codes[lay.inputs[0]], lay.in_encs[0], name)
        # float32 Conv / Gemm over chunks of input channels whose partial sums provably stay within 2^24 (exact
        # in any order), summed in int64; one chunk (bias included) for most 8-bit layers
        chunks = None if saturate else self._float_chunks(lay, bound)
        conv = lay.op == "conv2d"
        if conv:
            pads = tuple(lay.attr("padding"))
            kernel, stride = tuple(lay.weight.shape[2:]), tuple(lay.attr("stride"))
            groups = int(lay.attr("groups"))
            _, ho, wo = lay.out_shape
        if chunks is not None:
            xf = self.cast(x, T.FLOAT, name)
            if conv:
                xf = self.pad_nchw(xf, pads, np.float32(plan.pad_value), np.float32, name)
            with_bias = has_bias and len(chunks) == 1
            acc = None
            for c0, c1 in chunks:
                part = xf
                if (c0, c1) != (0, w.shape[1]):
                    part = g.op("Slice", [xf, self.c64([c0]), self.c64([c1]), self.c64([1])], name)
                inputs = [part, g.const(w[:, c0:c1].astype(np.float32), np.float32, f"{name}/weight")]
                if with_bias:
                    inputs.append(g.const(bias.astype(np.float32), np.float32, f"{name}/bias"))
                if conv:
                    y = g.op("Conv", inputs, name, kernel_shape=list(kernel), strides=list(stride),
                             pads=[0, 0, 0, 0], group=groups)
                else:
                    y = g.op("Gemm", inputs, name, transB=1)
                y = self.cast(y, T.INT64, name)
                acc = y if acc is None else g.op("Add", [acc, y], name)
            if has_bias and not with_bias:
                acc = g.op("Add", [acc, self.c64(self.shape1(bias, 4 if conv else 2) if co > 1 else bias,
                                                 f"{name}/bias")], name)
        elif conv:
            cols = self._im2col(x, pads, kernel, stride, groups, plan.pad_value, (ho, wo), name)
            wg = w.reshape(groups, co // groups, -1)                        # [G, Co/G, K], order (ci, kh, kw)
            bg = bias.reshape(1, groups, co // groups, 1)
            if saturate:
                acc = self._acc_sequential(cols, wg, bg, acc_bits, name)
            else:
                acc = g.op("MatMul", [self.c64(wg, f"{name}/weight"), cols], name)   # [N, G, Co/G, P]
                if has_bias:
                    acc = g.op("Add", [acc, self.c64(bg, f"{name}/bias")], name)
            acc = g.op("Reshape", [acc, self.c64([0, co, ho, wo])], name)
        elif saturate:
            cols = g.op("Reshape", [x, self.c64([0, 1, -1, 1])], name)             # [N, 1, K, 1]
            acc = self._acc_sequential(cols, w[None], bias.reshape(1, 1, co, 1), acc_bits, name)
            acc = g.op("Reshape", [acc, self.c64([0, co])], name)
        else:
            acc = g.op("MatMul", [x, self.c64(w.T.copy(), f"{name}/weight")], name)
            if has_bias:
                acc = g.op("Add", [acc, self.c64(bias, f"{name}/bias")], name)
        ndim = 4 if conv else 2
        if wrap:
            acc = self._wrap(acc, acc_bits, name)
        return acc, ndim

    def _im2col(self, x, pads, kernel, stride, groups, pad_value, out_hw, hint, channels_inner=False):
        """[N, C, H, W] int64 -> columns [N, G, K, Ho*Wo], K = Cg*KH*KW: padding, one strided Slice per kernel
        position, Concat. The reduction index runs in the weight's order (ci, kh, kw), or with channels
        innermost (kh, kw, ci) as MLAS's NHWC kernels."""
        g = self.g
        (kh, kw), (ho, wo) = kernel, out_hw
        xp = self.pad_nchw(x, pads, np.int64(pad_value), np.int64, hint)
        views = self.window_slices(xp, kernel, stride, out_hw, hint)
        cols = g.op("Concat", [g.op("Unsqueeze", [v, self.c64([2])], hint) for v in views], hint, axis=2)
        if channels_inner:     # [N, C, KK, Ho, Wo] -> [N, G, Cg, KK, P] -> [N, G, KK, Cg, P]
            cols = g.op("Reshape", [cols, self.c64([0, groups, -1, kh * kw, ho * wo])], hint)
            cols = g.op("Transpose", [cols], hint, perm=[0, 1, 3, 2, 4])
        return g.op("Reshape", [cols, self.c64([0, groups, -1, ho * wo])], hint)

    def _acc_loop(self, acc0, steps, step, clamp, hint, elem=None):
        """An ONNX Loop of `steps` iterations: acc = clamp(acc + step(sub, k)) (no clamp when `clamp` is None).
        `step(sub, k)` adds the k-th contribution's nodes to the body graph `sub` and returns its name; the
        accumulator is int64 unless `elem` says otherwise."""
        from onnx import TensorProto as T
        from onnx import helper
        g = self.g
        it, cond_in, acc_in = g.name(f"{hint}/k"), g.name(f"{hint}/cond"), g.name(f"{hint}/acc_in")
        cond_out, acc_out = g.name(f"{hint}/cond_out"), g.name(f"{hint}/acc_out")
        sub = _Graph(g.used)
        total = sub.op("Add", [acc_in, step(sub, it)], hint, out=None if clamp else acc_out)
        if clamp:
            sub.op("Clip", [total, sub.const(clamp[0], np.int64), sub.const(clamp[1], np.int64)], hint, out=acc_out)
        sub.op("Identity", [cond_in], hint, out=cond_out)
        g.used |= sub.used
        body = helper.make_graph(
            sub.nodes, f"{hint}_accumulate",
            [helper.make_tensor_value_info(it, T.INT64, []), helper.make_tensor_value_info(cond_in, T.BOOL, []),
             helper.make_tensor_value_info(acc_in, elem or T.INT64, None)],
            [helper.make_tensor_value_info(cond_out, T.BOOL, []),
             helper.make_tensor_value_info(acc_out, elem or T.INT64, None)],
            initializer=sub.inits)
        return g.op("Loop", [self.c64(steps), g.const(True, np.bool_), acc0], hint, body=body)

    def _acc_start(self, cols, bias, hint):
        """The accumulators' start value: `bias` [1, G, Co/G, 1] broadcast to [N, G, Co/G, P] of `cols`."""
        g = self.g
        first = g.op("Slice", [cols, self.c64([0]), self.c64([1]), self.c64([2])], hint)   # [N, G, 1, P]
        return g.op("Add", [g.op("Mul", [first, self.c64(0)], hint), self.c64(bias, f"{hint}/bias")], hint)

    def _acc_sequential(self, cols, wg, bias, acc_bits, hint):
        """hwsim's sequential saturating accumulator: bias loaded and clamped, then one product per step in the
        weight's reduction order, clamped after every add. cols [N, G, K, P], wg [G, Co/G, K]."""
        lo, hi = -(1 << (acc_bits - 1)), (1 << (acc_bits - 1)) - 1
        wc = self.c64(wg, f"{hint}/weight")

        def step(sub, k):
            ax = sub.const(np.array([2], np.int64), np.int64)
            xk = sub.op("Unsqueeze", [sub.op("Gather", [cols, k], hint, axis=2), ax], hint)   # [N, G, 1, P]
            wk = sub.op("Unsqueeze", [sub.op("Gather", [wc, k], hint, axis=2), ax], hint)     # [G, Co/G, 1]
            return sub.op("Mul", [xk, wk], hint)

        acc0 = self._acc_start(cols, np.clip(bias, lo, hi), hint)
        return self._acc_loop(acc0, wg.shape[2], step, (lo, hi), hint)

    def _acc_pairsat(self, lay):
        """ORT's non-VNNI x86 u8 x s8 datapath (kernels/pairsat.py): raw codes, reduction in MLAS's order
        (kh, kw, ci), adjacent products summed into a saturating int16, the zero-point correction last."""
        from onnx import TensorProto as T
        g, name = self.g, lay.name
        plan = self.engine.plans[name]
        in_enc, w_enc = lay.in_encs[0], lay.weight_enc
        zx = int(in_enc.zero_point)
        wc = lay.weight.astype(np.int64)
        co = wc.shape[0]
        zw = np.broadcast_to(np.asarray(w_enc.zero_point, np.int64), (co,))
        acc_bits = lay.attr("acc_bits")
        lo, hi = -(1 << (acc_bits - 1)), (1 << (acc_bits - 1)) - 1
        bias = plan.bias.astype(np.int64) if plan.bias is not None else np.zeros(co, np.int64)
        x = self.cast(self.codes[lay.inputs[0]], T.INT64, name)
        if lay.op == "conv2d":
            groups = int(lay.attr("groups"))
            _, ho, wo = lay.out_shape
            pad = lay.attr("pad_code")
            pad = default_pad_code(in_enc) if pad is None else pad
            cols = self._im2col(x, tuple(lay.attr("padding")), tuple(wc.shape[2:]), tuple(lay.attr("stride")), groups,
                                pad, (ho, wo), name, channels_inner=True)
            wk = wc.transpose(0, 2, 3, 1).reshape(groups, co // groups, -1)          # (kh, kw, ci) order
        else:
            groups = 1
            cols = g.op("Reshape", [x, self.c64([0, 1, -1, 1])], name)
            wk = wc[None]
        k = wk.shape[2]
        zwg = zw.reshape(groups, co // groups, 1)
        # c = -zw * sum_k x_k - zx * sum_k w_k + K * zx * zw   (exact, per output)
        sum_x = g.op("ReduceSum", [cols, self.c64([2])], name, keepdims=1)              # [N, G, 1, P]
        corr = g.op("Add", [g.op("Mul", [sum_x, self.c64(-zwg)], name),
                            self.c64(-zx * wk.sum(axis=2, keepdims=True) + k * zx * zwg)], name)
        if k % 2:   # MLAS pads K with a zero code: the last product is alone
            cols = g.op("Pad", [cols, self.c64([0, 0, 0, 0, 0, 0, 1, 0]), self.c64(0)], name, mode="constant")
            wk = np.concatenate([wk, np.zeros(wk.shape[:2] + (1,), np.int64)], axis=2)
        cols2 = g.op("Reshape", [cols, self.c64([0, groups, k // 2 + k % 2, 2, -1])], name)   # [N, G, K2, 2, P]
        w2 = self.c64(wk.reshape(groups, co // groups, -1, 2), f"{name}/weight")                # [G, Co/G, K2, 2]
        bound = int(np.abs(bias).max()) + (k // 2 + 1) * (1 << 15) + 255 * k * int(np.abs(zw).max()) \
            + abs(zx) * int(np.abs(wk).sum(axis=2).max()) + k * abs(zx) * int(np.abs(zw).max())
        wrap, saturate = self._policy(lay, bound)

        def step(sub, j):
            xj = sub.op("Unsqueeze", [sub.op("Gather", [cols2, j], name, axis=2),
                                      sub.const(np.array([2], np.int64), np.int64)], name)   # [N, G, 1, 2, P]
            wj = sub.op("Unsqueeze", [sub.op("Gather", [w2, j], name, axis=2),
                                      sub.const(np.array([3], np.int64), np.int64)], name)   # [G, Co/G, 2, 1]
            pair = sub.op("ReduceSum", [sub.op("Mul", [xj, wj], name), sub.const(np.array([3], np.int64), np.int64)],
                          name, keepdims=0)                                                   # [N, G, Co/G, P]
            return sub.op("Clip", [pair, sub.const(-(1 << 15), np.int64), sub.const((1 << 15) - 1, np.int64)], name)

        bias4 = bias.reshape(1, groups, co // groups, 1)
        acc0 = self._acc_start(cols, np.clip(bias4, lo, hi) if saturate else bias4, name)
        acc = self._acc_loop(acc0, k // 2 + k % 2, step, (lo, hi) if saturate else None, name)
        acc = g.op("Add", [acc, corr], name)
        if saturate:
            acc = g.op("Clip", [acc, self.c64(lo), self.c64(hi)], name)
        acc = g.op("Reshape", [acc, self.c64([0, co] + ([ho, wo] if lay.op == "conv2d" else []))], name)
        return self._wrap(acc, acc_bits, name) if wrap else acc

    def _threshold_encode(self, acc, enc, ndim, hint):
        """A comparator bank on the accumulator (ThresholdAct): code = lo + #{i: acc >= t[c][i]}."""
        from onnx import TensorProto as T
        g = self.g
        co = int(self.lay.out_shape[0])
        t = enc.threshold_array(co)
        t = t.reshape((co,) + (1,) * (ndim - 2) + (t.shape[1],))
        ge = g.op("GreaterOrEqual", [g.op("Unsqueeze", [acc, self.c64([-1])], hint), self.c64(t, "thresholds")], hint)
        count = g.op("ReduceSum", [self.cast(ge, T.INT64, hint), self.c64([-1])], hint, keepdims=0)
        count = g.op("Add", [count, self.c64(enc.code_range()[0])], hint)
        return g.op("Cast", [count], hint, out=hint, to=int(_code_type(enc)[0]))

    # ------------------------------------------------------------------ requantizer
    def requant(self, acc, multiplier, mode, ndim, hint):
        """int64 accumulator -> int64 rounded value, exactly as simulator.units.requantizer.requantize."""
        from onnx import TensorProto as T
        g = self.g
        m = np.atleast_1d(np.asarray(multiplier, dtype=np.float64))
        requantize(np.zeros((1, m.size) + (1,) * (ndim - 2), np.int64), m, mode)  # hwsim's own checks
        if mode in ("float32", "float64"):
            ftype, elem = (np.float32, T.FLOAT) if mode == "float32" else (np.float64, T.DOUBLE)
            with np.errstate(over="ignore"):
                mc = m.astype(ftype)
            p = g.op("Mul", [self.cast(acc, elem, hint), g.const(self.shape1(mc, ndim), ftype, f"{hint}/multiplier")],
                     hint)
            p = g.op("Round", [p], hint)                                            # half to even
            p = g.op("Clip", [p, g.const(-FLOAT_CLAMP, ftype), g.const(FLOAT_CLAMP, ftype)], hint)
            return self.cast(p, T.INT64, hint)
        if mode == "float64_away":   # TFLite's reference FC: round(double(acc) * m), half away from zero
            x = g.op("Clip", [acc, self.c64(-(1 << 31)), self.c64((1 << 31) - 1)], hint)  # hwsim: int32 or error
            p = g.op("Mul", [self.cast(x, T.DOUBLE, hint), g.const(self.shape1(m, ndim), np.float64,
                                                                   f"{hint}/multiplier")], hint)
            p = self.round_float(p, "half_away", hint)
            # a result outside int32 is an error in hwsim; the clamp only keeps the cast defined
            p = g.op("Clip", [p, g.const(-FLOAT_CLAMP, np.float64), g.const(FLOAT_CLAMP, np.float64)], hint)
            return self.cast(p, T.INT64, hint)
        if mode == "shift":
            s = np.array([1 - math.frexp(float(v))[1] for v in m], dtype=np.int64)   # m = 2^-s
            right = np.maximum(s, 0)
            half = np.where(right > 0, np.left_shift(1, np.maximum(right - 1, 0)), 0)
            v = acc
            if half.any():
                v = g.op("Add", [v, self.c64(self.shape1(half, ndim))], hint)
            v = self.floor_div(v, self.shape1(np.left_shift(1, right), ndim), hint)      # round half up
            left = np.maximum(-s, 0)
            if left.any():
                v = g.op("Mul", [v, self.c64(self.shape1(np.left_shift(1, left), ndim))], hint)
            return v
        q = np.empty(m.size, np.int64)
        e = np.empty(m.size, np.int64)
        single = mode == "fixed_single"
        for i, v in enumerate(m):
            q[i], e[i] = quantize_multiplier(float(v), single_rounding=single)
        x = g.op("Clip", [acc, self.c64(-(1 << 31)), self.c64((1 << 31) - 1)], hint)  # hwsim: int32 or error
        if single:
            total = 31 - e                                                  # in [1, 62]
            v = g.op("Add", [g.op("Mul", [x, self.c64(self.shape1(q, ndim))], hint),
                             self.c64(self.shape1(np.left_shift(1, total - 1), ndim))], hint)
            return self.floor_div(v, self.shape1(np.left_shift(1, total), ndim), hint)
        left, right = np.maximum(e, 0), np.maximum(-e, 0)
        if left.any():
            x = g.op("Mul", [x, self.c64(self.shape1(np.left_shift(1, left), ndim))], hint)
            x = g.op("Clip", [x, self.c64(-(1 << 31)), self.c64((1 << 31) - 1)], hint)
        # SaturatingRoundingDoublingHighMul(x, q): (x*q + nudge) / 2^31, C division (truncation)
        ab = g.op("Mul", [x, self.c64(self.shape1(q, ndim))], hint)
        nudge = g.op("Where", [g.op("GreaterOrEqual", [ab, self.c64(0)], hint), self.c64(1 << 30),
                               self.c64(1 - (1 << 30))], hint)
        high = g.op("Div", [g.op("Add", [ab, nudge], hint), self.c64(1 << 31)], hint)
        if not right.any():
            return high
        # RoundingDivideByPOT(high, right): floor shift plus (remainder > (mask >> 1) + (high < 0))
        div = self.shape1(np.left_shift(1, right), ndim)
        rem = g.op("Mod", [high, self.c64(div)], hint, fmod=0)
        floor = g.op("Div", [g.op("Sub", [high, rem], hint), self.c64(div)], hint)
        # ruy / NEON final shift, half up: floor((high + 2^(r-1)) / 2^r) = floor + (rem > 2^(r-1) - 1); r = 0: + 0
        up = self.shape1(np.where(right > 0, (np.left_shift(1, right) >> 1) - 1, 0), ndim)
        if mode == "fixed_double_ruy":
            return g.op("Add", [floor, self.cast(g.op("Greater", [rem, self.c64(up)], hint), T.INT64, hint)], hint)
        threshold = g.op("Add", [self.c64(self.shape1((np.left_shift(1, right) - 1) >> 1, ndim)),
                                 self.cast(g.op("Less", [high, self.c64(0)], hint), T.INT64, hint)], hint)
        if mode == "fixed_double_blocks8":
            # channels in full blocks of 8 round their last shift half up (threshold (2^r)/2 - 1), the rest as
            # RoundingDivideByPOT; the multipliers are per channel here (one per output channel of the layer)
            blocks = np.arange(m.size) < m.size // 8 * 8
            threshold = g.op("Where", [g.const(self.shape1(blocks, ndim), np.bool_, f"{hint}/blocks8"),
                                       self.c64(up), threshold], hint)
        return g.op("Add", [floor, self.cast(g.op("Greater", [rem, threshold], hint), T.INT64, hint)], hint)

    # ------------------------------------------------------------------ other layers
    def _maxpool(self, lay):
        from onnx import TensorProto as T
        self.routes[lay.name] = "codes"
        g, name = self.g, lay.name
        enc = lay.in_encs[0]
        elem, _ = _code_type(enc)
        attrs = {"kernel_shape": list(lay.attr("kernel")), "strides": list(lay.attr("stride")),
                 "pads": list(lay.attr("padding"))}
        x = self.codes[lay.inputs[0]]
        if isinstance(enc, BinaryAct):     # codes descend with the value: max of values = min of codes
            y = g.op("MaxPool", [g.op("Neg", [self.cast(x, T.FLOAT, name)], name)], name, **attrs)
            return g.op("Cast", [g.op("Neg", [y], name)], name, out=name, to=int(elem))
        if elem in (T.UINT8, T.INT8):
            return g.op("MaxPool", [x], name, out=name, **attrs)
        # 16- and 24-bit codes: float32 holds them exactly, and MaxPool pads with -inf (never wins)
        y = g.op("MaxPool", [self.cast(x, T.FLOAT, name)], name, **attrs)
        return g.op("Cast", [y], name, out=name, to=int(elem))

    def _avgpool(self, lay):
        self.routes[lay.name] = "integer"
        g, name = self.g, lay.name
        enc = lay.in_encs[0]
        c, h, w = lay.in_shapes[0]
        _, ho, wo = lay.out_shape
        kernel, stride, pads = tuple(lay.attr("kernel")), tuple(lay.attr("stride")), tuple(lay.attr("padding"))
        x = self.values(self.codes[lay.inputs[0]], enc, name)
        window = kernel[0] * kernel[1]
        if lay.attr("rounding") in ("xnnpack_mean", "tflite_mean_reference", "tflite_mean_optimized"):
            raise HwsimError(f"avgpool rounding {lay.attr('rounding')!r} (LiteRT's MEAN arithmetic) has no ONNX "
                             "export", field="attrs.rounding")
        if lay.attr("rounding") == "ort_float32":
            return self._avgpool_ort(lay, x)
        if not any(pads) and kernel == (h, w):
            total, divisor = g.op("ReduceSum", [x, self.c64([2, 3])], name, keepdims=1), window
        else:
            include = bool(lay.attr("count_include_pad"))
            pv = int(enc.decode(np.array([default_pad_code(enc)]))[0]) if include else 0
            xp = self.pad_nchw(x, pads, np.int64(pv), np.int64, name)
            views = self.window_slices(xp, kernel, stride, (ho, wo), name)
            total = views[0]
            for v in views[1:]:
                total = g.op("Add", [total, v], name)
            if include:
                divisor = window
            else:   # real positions in each window, computed here
                divisor = _window_counts((h, w), kernel, stride, pads, (ho, wo)).reshape(1, 1, ho, wo)
        if lay.attr("rounding") == "tflite_codes":
            # TFLite sums raw codes: value + zero point per real cell, then rounds half away, back to values
            zp = int(enc.zero_point)
            total = g.op("Add", [total, self.c64(np.asarray(divisor, dtype=np.int64) * zp, name)], name)
            v = g.op("Sub", [self.round_div(total, divisor, "half_away", name), self.c64(zp)], name)
            return self.encode(v, enc, None, name, out=name)
        v = self.round_div(total, divisor, lay.attr("rounding"), name)
        return self.encode(v, enc, None, name, out=name)

    def _avgpool_ort(self, lay, x):
        """ONNX Runtime's quantized average pooling in its float32 arithmetic (units/pooling.py avgpool_ort)."""
        from onnx import TensorProto as T
        g, name = self.g, lay.name
        in_enc, out_enc = lay.in_encs[0], lay.out_enc
        f32 = np.float32
        c, h, w = lay.in_shapes[0]
        _, ho, wo = lay.out_shape
        kernel, stride, pads = tuple(lay.attr("kernel")), tuple(lay.attr("stride")), tuple(lay.attr("padding"))
        window = kernel[0] * kernel[1]
        if kernel == (h, w) and not any(pads):     # QLinearGlobalAveragePool: exact sum, float32 requantizer
            total = self.cast(g.op("ReduceSum", [x, self.c64([2, 3])], name, keepdims=1), T.FLOAT, name)
            m = f32(in_enc.scale) / (f32(out_enc.scale) * f32(window))
            r = g.op("Round", [g.op("Mul", [total, g.const(m, f32)], name)], name)
            r = g.op("Clip", [r, g.const(-FLOAT_CLAMP, f32), g.const(FLOAT_CLAMP, f32)], name)
            return self.encode(self.cast(r, T.INT64, name), out_enc, None, name, out=name)
        real = g.op("Mul", [self.cast(x, T.FLOAT, name), g.const(f32(in_enc.scale), f32)], name)
        views = self.window_slices(self.pad_nchw(real, pads, f32(0), f32, name), kernel, stride, (ho, wo), name)
        total = views[0]
        for v in views[1:]:                        # row-major window order, one float32 add at a time
            total = g.op("Add", [total, v], name)
        if lay.attr("count_include_pad"):
            divisor = f32(window)
        else:
            divisor = _window_counts((h, w), kernel, stride, pads, (ho, wo)).astype(f32).reshape(1, 1, ho, wo)
        fzp = lay.attr("float_zero_point")
        fzp = out_enc.zero_point if fzp is None else int(fzp)
        avg = g.op("Div", [total, g.const(divisor, f32)], name)
        code = g.op("Add", [g.op("Div", [avg, g.const(f32(out_enc.scale), f32)], name), g.const(f32(fzp), f32)], name)
        code = g.op("Clip", [g.op("Round", [code], name), g.const(-FLOAT_CLAMP, f32), g.const(FLOAT_CLAMP, f32)],
                    name)
        v = g.op("Sub", [self.cast(code, T.INT64, name), self.c64(fzp)], name)
        return self.encode(v, out_enc, None, name, out=name)

    def _clip(self, lay):
        self.routes[lay.name] = "integer"
        enc = lay.in_encs[0]
        lo, hi = (0, None) if lay.op == "relu" else (lay.attr("min"), lay.attr("max"))
        x = self.values(self.codes[lay.inputs[0]], enc, lay.name)
        if isinstance(enc, UniformAct) and hi is None:
            hi = enc.value_range()[1]
        if hi is None:
            hi = 1 << 40
        return self.encode(x, enc, [lo, hi], lay.name, out=lay.name)

    def _reshape(self, lay):
        self.routes[lay.name] = "codes"
        return self.g.op("Reshape", [self.codes[lay.inputs[0]], self.c64([0] + list(lay.out_shape))], lay.name,
                         out=lay.name)

    def _transpose(self, lay):
        self.routes[lay.name] = "codes"
        perm = [0] + [int(p) + 1 for p in lay.attr("perm")]      # the batch axis stays first
        return self.g.op("Transpose", [self.codes[lay.inputs[0]]], lay.name, out=lay.name, perm=perm)

    def _concat(self, lay):
        self.routes[lay.name] = "codes"
        return self.g.op("Concat", [self.codes[n] for n in lay.inputs], lay.name, out=lay.name, axis=1)

    def _add(self, lay):
        """Residual add / rescale (one or more inputs), as simulator.units.residual_add."""
        from onnx import TensorProto as T
        g, name = self.g, lay.name
        mode, rescale = lay.attr("requant"), lay.attr("rescale")
        if rescale == "xnnpack" or lay.attr("subtract") or lay.attr("input_rounding") != "double":
            raise HwsimError("add with LiteRT's arithmetic (rescale 'xnnpack', subtract, input_rounding 'single') "
                             "has no ONNX export", field="attrs")
        if self.qdq and mode == "float32" and rescale == "dequantize":
            reason = self._qdq_add_reason(lay)
            if reason is None:
                self.routes[name] = "qdq"
                return self._add_qdq(lay)
            self.routes[name] = f"integer: {reason}"
        else:
            self.routes[name] = "integer" if not self.qdq else f"integer: requant {mode}, rescale {rescale}"
        values = [self.values(self.codes[n], e, name) for n, e in zip(lay.inputs, lay.in_encs)]
        scales = [e.value_scale for e in lay.in_encs]
        out_scale = lay.out_enc.value_scale
        ndim = 1 + len(lay.out_shape)
        if rescale == "dequantize":   # sum_i float(v_i) * s_i in input order, / s_out, round half to even
            ftype, elem = (np.float32, T.FLOAT) if mode == "float32" else (np.float64, T.DOUBLE)
            total = None
            for v, s in zip(values, scales):
                term = g.op("Mul", [self.cast(v, elem, name), g.const(ftype(s), ftype)], name)
                total = term if total is None else g.op("Add", [total, term], name)
            total = g.op("Round", [g.op("Div", [total, g.const(ftype(out_scale), ftype)], name)], name)
            total = g.op("Clip", [total, g.const(-FLOAT_CLAMP, ftype), g.const(FLOAT_CLAMP, ftype)], name)
            out = self.cast(total, T.INT64, name)
        elif mode in ("float32", "float64"):
            ftype, elem = (np.float32, T.FLOAT) if mode == "float32" else (np.float64, T.DOUBLE)
            total = None
            for v, s in zip(values, scales):
                term = g.op("Mul", [self.cast(v, elem, name), g.const(ftype(s / out_scale), ftype)], name)
                total = term if total is None else g.op("Add", [total, term], name)
            total = g.op("Clip", [g.op("Round", [total], name), g.const(-FLOAT_CLAMP, ftype),
                                  g.const(FLOAT_CLAMP, ftype)], name)
            out = self.cast(total, T.INT64, name)
        elif mode in ("fixed_double", "fixed_single"):
            value_bits = max(max(abs(lo), abs(hi)).bit_length() for lo, hi in (e.value_range() for e in lay.in_encs))
            left_shift = tflite_left_shift(value_bits)
            twice_max = 2.0 * max(scales)
            total = None
            for v, s in zip(values, scales):
                shifted = g.op("Mul", [v, self.c64(1 << left_shift)], name)
                term = self.requant(shifted, np.array([s / twice_max]), mode, ndim, name)
                total = term if total is None else g.op("Add", [total, term], name)
            out = self.requant(total, np.array([twice_max / ((1 << left_shift) * out_scale)]), mode, ndim, name)
        else:  # shift: align to the finest scale, sum, shift to the output
            finest = min(scales)
            total = None
            for v, s in zip(values, scales):
                ratio = s / finest
                exponent = int(np.round(np.log2(ratio)))
                if ratio != 2.0 ** exponent:
                    raise HwsimError(f"shift mode needs power-of-two scale ratios, got {ratio}", field="attrs.requant")
                term = v if exponent == 0 else g.op("Mul", [v, self.c64(1 << exponent)], name)
                total = term if total is None else g.op("Add", [total, term], name)
            out = self.requant(total, np.array([finest / out_scale]), "shift", ndim, name)
        return self.encode(out, lay.out_enc, lay.attr("clip"), name, out=name)

    def _qdq_add_reason(self, lay):
        for e in lay.in_encs:
            if not (isinstance(e, UniformAct) and e.bits <= 8):
                return f"input is {_enc_name(e)}"
        if not (type(lay.out_enc) is UniformAct and lay.out_enc.bits <= 8):
            return f"output is {_enc_name(lay.out_enc)}"
        tiny = np.finfo(np.float32).tiny
        if any(not (tiny <= np.float32(e.scale) < np.inf) for e in lay.in_encs + [lay.out_enc]):
            return "scale outside float32's normal range"
        return None

    def _add_qdq(self, lay):
        """DequantizeLinear of every input, float32 Adds in input order, QuantizeLinear: exactly rescale
        "dequantize" in float32 whether ORT fuses it (QLinearAdd) or not; one input is a DQ -> Q rescale."""
        g, name = self.g, lay.name
        total = None
        for src, e in zip(lay.inputs, lay.in_encs):
            dq = g.op("DequantizeLinear", [self.codes[src], g.const(np.float32(e.scale), np.float32, f"{name}/x_scale"),
                                           g.const(e.zero_point, _code_type(e)[1], f"{name}/x_zp")], name)
            total = dq if total is None else g.op("Add", [total, dq], name)
        return self._quantize_out(lay, total)

    def _quantize_out(self, lay, y):
        """QuantizeLinear to the layer's (<= 8-bit uniform) output, then a Clip for narrow widths and the clip."""
        g, name, enc = self.g, lay.name, lay.out_enc
        elem, dt = _code_type(enc)
        c_lo, c_hi = enc.code_range()
        clip, zp = lay.attr("clip"), enc.zero_point
        a = c_lo if clip is None else _clamp(int(clip[0]) + zp, c_lo, c_hi)
        b = c_hi if clip is None else _clamp(int(clip[1]) + zp, c_lo, c_hi)
        need_clip = (a, b) != (np.iinfo(dt).min, np.iinfo(dt).max)
        codes = g.op("QuantizeLinear", [y, g.const(np.float32(enc.scale), np.float32, f"{name}/y_scale"),
                                        g.const(zp, dt, f"{name}/y_zp")], name, out=None if need_clip else name)
        if need_clip:
            codes = self.clip_codes(codes, elem, a, b, name, out=name)
        return codes


    # ------------------------------------------------------------------ elementwise and real-network layers
    def _lut(self, lay):
        """Output code = table[c, code - lowest code]: a Gather of the table (an initializer of output codes); a
        per-channel table [C, codes] is gathered flattened at c * codes + (code - lowest code), in int64."""
        from onnx import TensorProto as T
        self.routes[lay.name] = "codes"
        g, name = self.g, lay.name
        enc = lay.in_encs[0]
        lo, _ = enc.code_range()
        _, dt = _code_type(lay.out_enc)
        table = np.asarray(lay.table)
        index = self.cast(self.codes[lay.inputs[0]], T.INT64, name)
        if lo:
            index = g.op("Sub", [index, self.c64(lo)], name)
        if table.shape[0] > 1:
            ndim = 1 + len(lay.in_shapes[0])
            offsets = (np.arange(table.shape[0], dtype=np.int64) * table.shape[1]).reshape((1, -1) + (1,) * (ndim - 2))
            index = g.op("Add", [index, self.c64(offsets, f"{name}/row")], name)
        return g.op("Gather", [g.const(table.reshape(-1).astype(dt), dt, f"{name}/table"), index], name, out=name,
                    axis=0)

    def _mul(self, lay):
        """y = v_a * v_b rescaled as units/elementwise.py mul_codes, in explicit ops (NumPy broadcasting)."""
        from onnx import TensorProto as T
        self.routes[lay.name] = "integer"
        g, name = self.g, lay.name
        (ea, eb), out = lay.in_encs, lay.out_enc
        if lay.attr("requant") not in ("float32", "float64") or lay.attr("clip") is not None:
            raise HwsimError(f"mul requant {lay.attr('requant')!r} (LiteRT's arithmetic) or a fused clip has no ONNX "
                             "export", field="attrs")
        lo, hi = out.code_range()
        elem, _ = _code_type(out)
        a = self.values(self.codes[lay.inputs[0]], ea, name)
        b = self.values(self.codes[lay.inputs[1]], eb, name)
        product = g.op("Mul", [a, b], name)                        # |v| < 2^17: exact in int64
        f32 = np.float32
        if lay.attr("requant") == "float32":
            # QLinearMul: float32(product) * float32 ratio + float32(zp), round half to even, INT32_MIN outside
            # int32 (cvtps2dq), saturate
            ratio = f32(f32(ea.scale) * f32(eb.scale)) / f32(out.scale)
            r = g.op("Mul", [self.cast(product, T.FLOAT, name), g.const(ratio, f32, f"{name}/ratio")], name)
            r = g.op("Round", [g.op("Add", [r, g.const(f32(out.zero_point), f32)], name)], name)
            inside = g.op("And", [g.op("GreaterOrEqual", [r, g.const(f32(-2.0 ** 31), f32)], name),
                                  g.op("Less", [r, g.const(f32(2.0 ** 31), f32)], name)], name)
            r = g.op("Where", [inside, r, g.const(f32(-2.0 ** 31), f32)], name)
            r = g.op("Clip", [r, g.const(f32(lo), f32), g.const(f32(hi), f32)], name)
            return g.op("Cast", [r], name, out=name, to=int(elem))
        # float64: rint(clip(float64(product) * (s_a * s_b / s_out), +-2^62)) + zp, clamped
        real = g.op("Mul", [self.cast(product, T.DOUBLE, name),
                            g.const(ea.scale * eb.scale / out.scale, np.float64, f"{name}/ratio")], name)
        r = g.op("Round", [g.op("Clip", [real, g.const(-2.0 ** 62, np.float64), g.const(2.0 ** 62, np.float64)],
                                name)], name)
        r = g.op("Clip", [r, g.const(float(lo - out.zero_point), np.float64),
                          g.const(float(hi - out.zero_point), np.float64)], name)
        return self.encode(self.cast(r, T.INT64, name), out, None, name, out=name)

    def _dilate(self, lay):
        """Zero insertion on the codes: [N, C, H, 1, W, 1], padded with the zero code to [.., H, s_h, W, s_w],
        reshaped to [N, C, H s_h, W s_w] and the trailing (s - 1) rows / columns sliced off."""
        from onnx import TensorProto as T
        self.routes[lay.name] = "codes"
        g, name = self.g, lay.name
        enc = lay.in_encs[0]
        sh, sw = (int(v) for v in lay.attr("stride"))
        c, h, w = lay.in_shapes[0]
        x = self.codes[lay.inputs[0]]
        if (sh, sw) == (1, 1):
            return g.op("Identity", [x], name, out=name)
        elem, dt = _code_type(enc)
        wide = elem not in (T.UINT8, T.INT8, T.INT32)          # ORT's Pad has no 16-bit kernels
        if wide:
            x, dt = self.cast(x, T.INT32, name), np.int32
        x = g.op("Reshape", [x, self.c64([0, c, h, 1, w, 1])], name)
        x = g.op("Pad", [x, self.c64([0, 0, 0, 0, 0, 0, 0, 0, 0, sh - 1, 0, sw - 1]),
                         g.const(default_pad_code(enc), dt, f"{name}/zero")], name, mode="constant")
        x = g.op("Reshape", [x, self.c64([0, c, h * sh, w * sw])], name)
        _, ho, wo = lay.out_shape
        x = g.op("Slice", [x, self.c64([0, 0]), self.c64([ho, wo]), self.c64([2, 3])], name,
                 out=None if wide else name)
        return g.op("Cast", [x], name, out=name, to=int(elem)) if wide else x

    def _pad(self, lay):
        """Constant padding of the codes (ONNX Pad, mode constant, the pad code as the value)."""
        from onnx import TensorProto as T
        self.routes[lay.name] = "codes"
        g, name = self.g, lay.name
        enc = lay.in_encs[0]
        top, left, bottom, right = (int(v) for v in lay.attr("padding"))
        code = default_pad_code(enc) if lay.attr("pad_code") is None else int(lay.attr("pad_code"))
        elem, dt = _code_type(enc)
        x = self.codes[lay.inputs[0]]
        wide = elem not in (T.UINT8, T.INT8, T.INT32)          # ORT's Pad has no 16-bit kernels
        if wide:
            x, dt = self.cast(x, T.INT32, name), np.int32
        x = g.op("Pad", [x, self.c64([0, 0, top, left, 0, 0, bottom, right]), g.const(code, dt, f"{name}/code")],
                 name, out=None if wide else name, mode="constant")
        return g.op("Cast", [x], name, out=name, to=int(elem)) if wide else x

    def _resize(self, lay):
        from onnx import TensorProto as T
        from ..units import resize
        g, name = self.g, lay.name
        size, scales, coord = lay.attr("size"), lay.attr("scales"), lay.attr("coordinate")
        _, h, w = lay.in_shapes[0]
        x = self.codes[lay.inputs[0]]
        if lay.attr("mode") == "nearest":   # moves codes: two Gathers with units/resize.py's index vectors
            self.routes[name] = "codes"
            nm = lay.attr("nearest_mode")
            rows = resize.nearest_index(resize.source_coordinates(size[0], h, scales[0], coord), h, nm)
            cols = resize.nearest_index(resize.source_coordinates(size[1], w, scales[1], coord), w, nm)
            x = g.op("Gather", [x, self.c64(rows, f"{name}/rows")], name, axis=2)
            return g.op("Gather", [x, self.c64(cols, f"{name}/cols")], name, out=name, axis=3)
        arithmetic = lay.attr("arithmetic")
        if arithmetic != "dequantized":     # ORT's kernels on the 8-bit codes: the codes stay codes
            self.routes[name] = "integer"
            return self._resize_codes(lay, x, size, scales, coord, arithmetic)
        # linear: ORT's UpsampleBilinear spelled out (float32), or the float64 reference, tap by tap
        self.routes[name] = "integer"
        enc, out = lay.in_encs[0], lay.out_enc
        ftype, felem = (np.float32, T.FLOAT) if lay.attr("requant") == "float32" else (np.float64, T.DOUBLE)
        real = g.op("Mul", [self.cast(self.values(x, enc, name), felem, name), g.const(ftype(enc.scale), ftype)],
                    name)
        if tuple(size) == (h, w) and ftype is np.float32:   # ORT copies an input of the output's size
            y = real
        else:
            y = self._bilinear_taps(real, size, scales, coord, h, w, ftype, resize._linear_axis, name)
        r = g.op("Round", [g.op("Div", [y, g.const(ftype(out.scale), ftype)], name)], name)
        lo, hi = out.code_range()
        r = g.op("Clip", [r, g.const(ftype(lo - out.zero_point), ftype), g.const(ftype(hi - out.zero_point), ftype)],
                 name)
        return self.encode(self.cast(r, T.INT64, name), out, None, name, out=name)

    def _bilinear_taps(self, v, size, scales, coord, h, w, ftype, axis_fn, name):
        """sum of (weight) * tap over the four taps, left to right (units/resize.py), on tensor `v`."""
        g = self.g
        y1, y2, dy1, dy2 = axis_fn(size[0], h, scales[0], coord)
        x1, x2, dx1, dx2 = axis_fn(size[1], w, scales[1], coord)
        if ftype is np.float64:
            dy1, dy2, dx1, dx2 = (a.astype(np.float64) for a in (dy1, dy2, dx1, dx2))
        dy1, dy2 = dy1[:, None], dy2[:, None]
        r1 = g.op("Gather", [v, self.c64(y1)], name, axis=2)
        r2 = g.op("Gather", [v, self.c64(y2)], name, axis=2)
        taps = [(dx2 * dy2, r1, x1), (dx1 * dy2, r1, x2), (dx2 * dy1, r2, x1), (dx1 * dy1, r2, x2)]
        y = None
        for weight, rows, cols in taps:     # (weight) * tap, summed left to right
            term = g.op("Mul", [g.const(weight.astype(ftype), ftype, f"{name}/weight"),
                                g.op("Gather", [rows, self.c64(cols)], name, axis=3)], name)
            y = term if y is None else g.op("Add", [y, term], name)
        return y

    def _resize_codes(self, lay, x, size, scales, coord, arithmetic):
        """ORT's Resize kernels on 8-bit codes (units/resize.py resize_codes): float32 taps truncated toward zero,
        or 10-bit integer weights whose int64 sum is divided by 2^20 (ONNX integer Div truncates toward zero)."""
        from onnx import TensorProto as T
        from ..units import resize
        g, name = self.g, lay.name
        elem, _ = _code_type(lay.out_enc)
        c, h, w = lay.in_shapes[0]
        if tuple(size) == (h, w):
            return g.op("Identity", [x], name, out=name)
        if arithmetic == "ort_nhwc_float32_trunc":   # the NCHW kernel on [N, H, W, C]: over W (as H) and C (as W)
            x = g.op("Transpose", [x], name, perm=[0, 2, 3, 1])
            size, scales, h, w = (size[1], c), (scales[1], 1.0), w, c
        if arithmetic == "ort_nhwc_int10":
            v = self.cast(x, T.INT64, name)
            y = self._bilinear_taps(v, size, scales, coord, h, w, np.int64, resize._int10_axis, name)
            y = g.op("Div", [y, self.c64(1 << 20)], name)
        else:
            v = self.cast(x, T.FLOAT, name)
            y = self._bilinear_taps(v, size, scales, coord, h, w, np.float32, resize._linear_axis, name)
            y = self.cast(y, T.INT32, name)       # Cast float -> int: truncation toward zero
        if arithmetic == "ort_nhwc_float32_trunc":
            y = g.op("Transpose", [y], name, perm=[0, 3, 1, 2])
        return g.op("Cast", [y], name, out=name, to=int(elem))

    def _softmax(self, lay):
        """ONNX Runtime's QLinearSoftmax as units/elementwise.py qlinear_softmax computes it, spelled out: the exp
        table gathered at the code's offset from the row's max, a sequential float32 sum (a Loop, in order),
        round(e * floor(1 / s_out) / sum) + zp, saturated. (ORT's own QLinearSoftmax kernel sums differently in
        some builds, so it is not used.)"""
        from onnx import TensorProto as T
        from ..units.elementwise import qlinear_softmax_table
        g, name = self.g, lay.name
        enc, out = lay.in_encs[0], lay.out_enc
        if lay.attr("arithmetic") != "ort_qlinear":
            raise HwsimError(f"softmax arithmetic {lay.attr('arithmetic')!r} has no bit-exact ONNX form; "
                             "only 'ort_qlinear' exports")
        if len(lay.in_shapes[0]) != 1:
            raise HwsimError("a softmax over the channels of [C, H, W] does not export (only a [K] vector does)")
        self.routes[name] = "integer"
        f32 = np.float32
        (k,) = lay.in_shapes[0]
        x = self.cast(self.codes[lay.inputs[0]], T.INT64, name)
        top = g.op("ReduceMax", [x, self.c64([1])], name, keepdims=1)
        if enc.signed:   # (127 - max + code) & 0xFF
            index = g.op("Mod", [g.op("Add", [g.op("Sub", [x, top], name), self.c64(127)], name), self.c64(256)],
                         name, fmod=0)
        else:            # 255 - max + code
            index = g.op("Add", [g.op("Sub", [x, top], name), self.c64(255)], name)
        table = qlinear_softmax_table(enc.scale, k, enc.signed)
        e = g.op("Gather", [g.const(table, f32, f"{name}/exp_table"), index], name, axis=0)      # [N, K]
        total = g.op("Gather", [e, self.c64(0)], name, axis=1)                                   # [N]
        if k > 1:
            def step(sub, it):
                col = sub.op("Add", [it, sub.const(1, np.int64)], name)
                return sub.op("Gather", [e, col], name, axis=1)
            total = self._acc_loop(total, k - 1, step, None, name, elem=T.FLOAT)
        ys = f32(np.floor(f32(1.0) / f32(out.scale)))
        q = g.op("Div", [g.op("Mul", [e, g.const(ys, f32, f"{name}/y_scale")], name),
                         g.op("Unsqueeze", [total, self.c64([1])], name)], name)
        q = g.op("Round", [q], name)
        q = g.op("Where", [g.op("IsNaN", [q], name), g.const(f32(0), f32), q], name)   # inf saturates below
        lo, hi = out.code_range()
        q = g.op("Clip", [g.op("Add", [q, g.const(f32(out.zero_point), f32)], name), g.const(f32(lo), f32),
                          g.const(f32(hi), f32)], name)
        return g.op("Cast", [q], name, out=name, to=int(_code_type(out)[0]))


def _float32_is_exact(multipliers, bound) -> bool:
    """True when float32 requantization provably equals float64 for every |acc| <= bound: each multiplier is a
    float32 m * 2^e (m odd) with bound * m < 2^24, so float32(acc) * M is exact, as in float64 (pow2 scales)."""
    for v in np.atleast_1d(multipliers):
        v = float(v)
        if not (float(np.float32(v)) == v and v >= np.finfo(np.float32).tiny * (1 << 24)):
            return False
        num, _ = v.as_integer_ratio()          # v = num / 2^k with num odd
        if bound * num >= 1 << 24:
            return False
    return True


def _window_counts(hw, kernel, stride, pads, out_hw):
    """The number of real (unpadded) positions in each pooling window, int64 [Ho, Wo]."""
    (h, w), (ho, wo) = hw, out_hw
    ones = np.pad(np.ones((h, w), np.int64), ((pads[0], pads[2]), (pads[1], pads[3])))
    count = np.zeros((ho, wo), np.int64)
    for i in range(kernel[0]):
        for j in range(kernel[1]):
            count += ones[i:i + stride[0] * (ho - 1) + 1:stride[0], j:j + stride[1] * (wo - 1) + 1:stride[1]]
    return count


def _enc_name(enc):
    bits = getattr(enc, "bits", None)
    if not bits:
        return enc.kind
    return f"{enc.kind} {'int' if enc.signed else 'uint'}{bits}"


def _utf8(text) -> str:
    """`text` as valid UTF-8 for the ONNX protobuf: unpaired surrogates (valid in a JSON header's escapes, not
    in UTF-8) become backslash escapes such as \\ud800; any other string is unchanged."""
    text = str(text)
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _safe_name(name):
    return str(name) if name else "hwsim_model"


EMITTERS = {"conv2d": _Exporter._mac, "dense": _Exporter._mac, "maxpool": _Exporter._maxpool,
            "avgpool": _Exporter._avgpool, "relu": _Exporter._clip, "clip": _Exporter._clip,
            "flatten": _Exporter._reshape, "reshape": _Exporter._reshape, "concat": _Exporter._concat,
            "add": _Exporter._add, "lut": _Exporter._lut, "mul": _Exporter._mul, "dilate": _Exporter._dilate,
            "pad": _Exporter._pad,
            "resize": _Exporter._resize, "softmax": _Exporter._softmax, "transpose": _Exporter._transpose}

assert set(EMITTERS) >= set(MAC_OPS)
