"""Weight and activation encodings: how integer codes in memory map to the values the datapath uses.

Every encoding has three views of a number:
  code   what is stored in memory (`storage_bits` wide);
  value  the integer the arithmetic sees after the decoder (CE shift, CK mux, codebook LUT, zero-point removal);
  real   value * scale, the number the float model means.
The engine works on codes and values only; the float reference works on reals.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .errors import HwsimError


def _check_int(value, lo, hi, field):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not lo <= value <= hi:
        text = repr(value)
        text = text if len(text) <= 60 else text[:57] + "..."
        raise HwsimError(f"must be an integer in [{lo}, {hi}], got {text}", field=field)
    return int(value)


def _check_bool(value, field):
    if not isinstance(value, (bool, np.bool_)):
        text = repr(value)
        text = text if len(text) <= 60 else text[:57] + "..."
        raise HwsimError(f"must be true or false, got {text}", field=field)
    return bool(value)


def _check_scale(value, field):
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        raise HwsimError(f"must be a positive finite number, got {repr(value)[:60]}", field=field)
    try:
        value = float(value)
    except OverflowError:   # an integer beyond the float range
        value = math.inf
    if not math.isfinite(value) or value <= 0:
        raise HwsimError(f"must be a positive finite number, got {str(value)[:40]}", field=field)
    return value


def _check_scales(values, field):
    if not isinstance(values, (list, tuple, np.ndarray)) or not len(values):
        raise HwsimError("must be a non-empty list of positive numbers", field=field)
    return tuple(_check_scale(v, f"{field}[{i}]") for i, v in enumerate(values))


def int_range(bits: int, signed: bool) -> tuple[int, int]:
    if signed:
        return -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    return 0, (1 << bits) - 1


# --------------------------------------------------------------------------------------------- activations

@dataclass(frozen=True)
class UniformAct:
    """q-bit uniform: value = code - zero_point, real = value * scale (seed 004: scale = 2^-F, zero_point 0)."""
    bits: int
    signed: bool = False
    scale: float = 1.0
    zero_point: int = 0
    kind = "uniform"

    def __post_init__(self):
        _check_int(self.bits, 1, 16, "bits")
        object.__setattr__(self, "signed", _check_bool(self.signed, "signed"))
        _check_scale(self.scale, "scale")
        lo, hi = int_range(self.bits, self.signed)
        _check_int(self.zero_point, lo, hi, "zero_point")

    @property
    def storage_bits(self):
        return self.bits

    @property
    def value_scale(self):
        return self.scale

    @property
    def operand_bits(self):
        # (code - zp) needs one more bit when the zero point is inside the range.
        return self.bits if self.zero_point == 0 else self.bits + 1

    def code_range(self):
        return int_range(self.bits, self.signed)

    def value_range(self):
        lo, hi = self.code_range()
        return lo - self.zero_point, hi - self.zero_point

    def decode(self, codes):
        return codes.astype(np.int64) - self.zero_point

    def encode(self, values):
        lo, hi = self.code_range()
        # clamp in the value domain first: value + zero_point could leave int64 for values near +-2^63
        return np.clip(values.astype(np.int64), lo - self.zero_point, hi - self.zero_point) + self.zero_point

    def to_dict(self):
        return {"kind": "uniform", "bits": self.bits, "signed": self.signed, "scale": self.scale,
                "zero_point": self.zero_point}


@dataclass(frozen=True)
class EnqAct:
    """Seed 004 ENQ: E-bit code k stands for the q_m-bit fixed-point value k << (q_m - E), real = value * 2^-F.

    Encoding (QE): x >> (q_m - E) if 0 <= x <= 2^q_m - 1, 2^E - 1 above, 0 below. Decoding (CE): left shift.
    """
    e_bits: int
    qm_bits: int
    frac_bits: int = 0
    kind = "enq"

    def __post_init__(self):
        _check_int(self.qm_bits, 1, 24, "qm_bits")
        _check_int(self.e_bits, 1, self.qm_bits, "e_bits")
        _check_int(self.frac_bits, -32, 32, "frac_bits")

    @property
    def storage_bits(self):
        return self.e_bits

    @property
    def value_scale(self):
        return 2.0 ** -self.frac_bits

    @property
    def operand_bits(self):
        return self.qm_bits

    def code_range(self):
        return 0, (1 << self.e_bits) - 1

    def value_range(self):
        return 0, ((1 << self.e_bits) - 1) << (self.qm_bits - self.e_bits)

    def decode(self, codes):
        from .units.enq import ce_decode
        return ce_decode(codes.astype(np.int64), self.e_bits, self.qm_bits)

    def encode(self, values):
        from .units.enq import qe_encode
        return qe_encode(values.astype(np.int64), self.e_bits, self.qm_bits)

    def to_dict(self):
        return {"kind": "enq", "e_bits": self.e_bits, "qm_bits": self.qm_bits, "frac_bits": self.frac_bits}


@dataclass(frozen=True)
class KnqAct:
    """Seed 004 KNQ: T-bit code k stands for centroid d_k (a fixed-point integer), real = d_k * 2^-F.

    Encoding (QK, comparators + priority encoder): k = number of thresholds t with x >= t. The seed's rule
    "x -> k if d_k <= x < d_{k+1}" is thresholds = centroids[1:], the default.
    """
    t_bits: int
    centroids: tuple
    thresholds: tuple = ()
    frac_bits: int = 0
    kind = "knq"

    def __post_init__(self):
        _check_int(self.t_bits, 1, 8, "t_bits")
        _check_int(self.frac_bits, -32, 32, "frac_bits")
        n = 1 << self.t_bits
        for name in ("centroids", "thresholds"):
            if not isinstance(getattr(self, name), (list, tuple, np.ndarray)):
                raise HwsimError("must be a list of integers", field=name)
        cents = tuple(self.centroids)
        if len(cents) != n:
            raise HwsimError(f"needs exactly 2^t_bits = {n} entries, got {len(cents)}", field="centroids")
        for i, c in enumerate(cents):
            _check_int(c, -(1 << 31), (1 << 31) - 1, f"centroids[{i}]")
        # Non-decreasing, not strictly: seed 004's Table IV has rows with repeated centroids (conv1_2: 13 zeros).
        if any(b < a for a, b in zip(cents, cents[1:])):
            raise HwsimError("must be non-decreasing", field="centroids")
        object.__setattr__(self, "centroids", tuple(int(c) for c in cents))
        thr = tuple(self.thresholds) if len(self.thresholds) else cents[1:]
        if len(thr) != n - 1:
            raise HwsimError(f"needs 2^t_bits - 1 = {n - 1} entries, got {len(thr)}", field="thresholds")
        for i, t in enumerate(thr):
            _check_int(t, -(1 << 31), (1 << 31) - 1, f"thresholds[{i}]")
        if any(b < a for a, b in zip(thr, thr[1:])):
            raise HwsimError("must be non-decreasing", field="thresholds")
        object.__setattr__(self, "thresholds", tuple(int(t) for t in thr))

    @property
    def storage_bits(self):
        return self.t_bits

    @property
    def value_scale(self):
        return 2.0 ** -self.frac_bits

    @property
    def operand_bits(self):
        lo, hi = self.value_range()
        return max(hi.bit_length(), 1) + (1 if lo < 0 else 0)

    def code_range(self):
        return 0, (1 << self.t_bits) - 1

    def value_range(self):
        return self.centroids[0], self.centroids[-1]

    def decode(self, codes):
        from .units.knq import ck_decode
        return ck_decode(codes.astype(np.int64), np.asarray(self.centroids, dtype=np.int64))

    def encode(self, values):
        from .units.knq import qk_encode
        return qk_encode(values.astype(np.int64), np.asarray(self.thresholds, dtype=np.int64))

    def to_dict(self):
        return {"kind": "knq", "t_bits": self.t_bits, "centroids": list(self.centroids),
                "thresholds": list(self.thresholds), "frac_bits": self.frac_bits}


@dataclass(frozen=True)
class BinaryAct:
    """Sign bits, Larq convention: bit 1 means -1 (x < 0), bit 0 means +1 (x >= 0, so sign(0) = +1).
    value in {-1, +1}, real = value * scale (XNOR-Net's beta)."""
    scale: float = 1.0
    kind = "binary"

    def __post_init__(self):
        _check_scale(self.scale, "scale")

    storage_bits = 1
    operand_bits = 1

    @property
    def value_scale(self):
        return self.scale

    def code_range(self):
        return 0, 1

    def value_range(self):
        return -1, 1

    def decode(self, codes):
        return 1 - 2 * codes.astype(np.int64)

    def encode(self, values):
        return (values < 0).astype(np.int64)

    def to_dict(self):
        return {"kind": "binary", "scale": self.scale}


THRESHOLD_LIMIT = 1 << 62   # thresholds are clamped here: "always fires" / "never fires"


@dataclass(frozen=True)
class ThresholdAct(UniformAct):
    """Uniform storage written by a comparator bank on the producing layer's accumulator (QONNX/FINN
    MultiThreshold; also any monotone activation + quantizer folded into thresholds, as FINN does).

    Stored code, value and real are exactly UniformAct's (value = code - zero_point, real = value * scale), so
    every consumer decodes it as uniform. Only the producing conv2d / dense layer differs: instead of the
    requantizer + clip it computes, per output channel c,

        code = lo + #{ i : acc >= thresholds[c][i] }        (lo = the lowest code of (bits, signed))

    with the thresholds integers in accumulator units (the bias already folded in). `thresholds` is one row
    (shared) or one row per output channel, each non-decreasing, at most hi - lo entries.
    Hardware: the same comparator bank + priority encoder as KNQ's QK, but acc-width comparators.
    Pass-through layers (maxpool, avgpool, relu, ...) use the uniform value -> code encoder (`encode`).
    """
    thresholds: tuple = ()
    kind = "threshold"

    def __post_init__(self):
        super().__post_init__()
        rows = self.thresholds
        if not isinstance(rows, (list, tuple)) or not rows or not all(isinstance(r, (list, tuple)) for r in rows):
            raise HwsimError("must be a non-empty list of threshold rows (lists of integers)", field="thresholds")
        n = len(rows[0])
        lo, hi = self.code_range()
        if not 1 <= n <= hi - lo:
            raise HwsimError(f"rows need 1..{hi - lo} thresholds for {self.bits}-bit codes, got {n}",
                             field="thresholds")
        clean = []
        for c, row in enumerate(rows):
            if len(row) != n:
                raise HwsimError(f"row has {len(row)} thresholds, row 0 has {n}", field=f"thresholds[{c}]")
            row = tuple(_check_int(t, -THRESHOLD_LIMIT, THRESHOLD_LIMIT, f"thresholds[{c}][{i}]")
                        for i, t in enumerate(row))
            if any(b < a for a, b in zip(row, row[1:])):
                raise HwsimError("must be non-decreasing", field=f"thresholds[{c}]")
            clean.append(row)
        object.__setattr__(self, "thresholds", tuple(clean))

    @property
    def n_thresholds(self):
        return len(self.thresholds[0])

    def threshold_array(self, channels: int) -> np.ndarray:
        """The thresholds as an int64 [channels, n] array (a shared row is broadcast)."""
        t = np.asarray(self.thresholds, dtype=np.int64)
        if t.shape[0] not in (1, channels):
            raise HwsimError(f"has {t.shape[0]} rows, expected 1 or {channels} (output channels)",
                             field="thresholds")
        return np.broadcast_to(t, (channels, t.shape[1]))

    def encode_acc(self, acc, channel_axis: int = 1):
        """The comparator bank: accumulators (int64, channels on `channel_axis`) -> codes."""
        acc = np.asarray(acc, dtype=np.int64)
        t = self.threshold_array(acc.shape[channel_axis])
        a = np.moveaxis(acc, channel_axis, -1)
        # One comparator per threshold gives a thermometer code; its count #{i : a >= t_i} is, for a sorted row,
        # the insertion point searchsorted(row, a, "right") (tests/test_qonnx.py checks it against the count).
        if len(self.thresholds) == 1:
            count = np.searchsorted(t[0], a, side="right")
        else:
            count = np.empty(a.shape, dtype=np.int64)
            for c in range(t.shape[0]):
                count[..., c] = np.searchsorted(t[c], a[..., c], side="right")
        return np.moveaxis(count.astype(np.int64), -1, channel_axis) + self.code_range()[0]

    def to_dict(self):
        return {**super().to_dict(), "kind": "threshold", "thresholds": [list(r) for r in self.thresholds]}


ACTIVATION_KINDS = {"uniform": UniformAct, "enq": EnqAct, "knq": KnqAct, "binary": BinaryAct,
                    "threshold": ThresholdAct}


def _kind(d):
    kind = d.get("kind") if isinstance(d, dict) else None
    return kind if isinstance(kind, str) else None


def activation_from_dict(d, field="encoding"):
    if _kind(d) not in ACTIVATION_KINDS:
        kind = d.get("kind") if isinstance(d, dict) else d
        raise HwsimError(f"unknown activation encoding {kind!r}; known: {sorted(ACTIVATION_KINDS)}",
                         field=f"{field}.kind")
    cls = ACTIVATION_KINDS[d["kind"]]
    args = {k: v for k, v in d.items() if k != "kind"}
    if "centroids" in args:
        args["centroids"] = tuple(args["centroids"]) if isinstance(args["centroids"], list) else args["centroids"]
    if "thresholds" in args:
        args["thresholds"] = tuple(args["thresholds"]) if isinstance(args["thresholds"], list) else args["thresholds"]
    try:
        return cls(**args)
    except TypeError as exc:
        raise HwsimError(f"bad fields for {d['kind']} encoding: {exc}", field=field) from None
    except HwsimError as exc:
        raise HwsimError(exc.message, field=f"{field}.{exc.field}" if exc.field else field) from None


# --------------------------------------------------------------------------------------------- weights
# Weight codes are stored as given by `storage_bits`/`storage_signed`; `decode` gives the integer operand
# values the MAC sees; `channel_scales(co)` the real scale of one value unit for each output channel.

def _per_channel(scales, co, field):
    if len(scales) == 1:
        return np.full(co, scales[0], dtype=np.float64)
    if len(scales) != co:
        raise HwsimError(f"has {len(scales)} entries, expected 1 or {co} (output channels)", field=field)
    return np.asarray(scales, dtype=np.float64)


@dataclass(frozen=True)
class UniformW:
    """value = code - zero_point (per tensor or per output channel), real = value * scale[c]."""
    bits: int
    signed: bool = True
    scale: tuple = (1.0,)
    zero_point: tuple = (0,)
    kind = "uniform"

    def __post_init__(self):
        _check_int(self.bits, 1, 16, "bits")
        object.__setattr__(self, "signed", _check_bool(self.signed, "signed"))
        object.__setattr__(self, "scale", _check_scales(self.scale, "scale"))
        lo, hi = int_range(self.bits, self.signed)
        if not isinstance(self.zero_point, (list, tuple)) or not self.zero_point:
            raise HwsimError("must be a non-empty list of integers", field="zero_point")
        object.__setattr__(self, "zero_point", tuple(
            _check_int(z, lo, hi, f"zero_point[{i}]") for i, z in enumerate(self.zero_point)))

    @property
    def storage_bits(self):
        return self.bits

    storage_signed = property(lambda self: self.signed)

    @property
    def operand_bits(self):
        return self.bits if all(z == 0 for z in self.zero_point) else self.bits + 1

    def decode(self, codes):
        zp = np.asarray(self.zero_point, dtype=np.int64)
        if zp.size > 1:
            zp = zp.reshape((-1,) + (1,) * (codes.ndim - 1))
        return codes.astype(np.int64) - zp

    def channel_scales(self, co):
        if len(self.zero_point) not in (1, co):
            raise HwsimError(f"has {len(self.zero_point)} entries, expected 1 or {co}", field="zero_point")
        return _per_channel(self.scale, co, "scale")

    def check_codes(self, codes):
        pass  # the container already bounds codes to (bits, signed)

    def to_dict(self):
        return {"kind": "uniform", "bits": self.bits, "signed": self.signed, "scale": list(self.scale),
                "zero_point": list(self.zero_point)}


@dataclass(frozen=True)
class CodebookW:
    """index_bits-bit indices into a table of signed fixed-point integers (table_bits wide).

    One table per group of `group_size` consecutive output channels (group_size 0 = one table for the tensor).
    value = table[group(c)][index], real = value * scale[group(c)] (one scale, or one per group).
    The table itself is stored as a tensor `<layer>.codebook` of shape [groups, entries].
    """
    index_bits: int
    table_bits: int
    group_size: int = 0
    scale: tuple = (1.0,)
    kind = "codebook"

    def __post_init__(self):
        _check_int(self.index_bits, 1, 8, "index_bits")
        _check_int(self.table_bits, 2, 16, "table_bits")
        _check_int(self.group_size, 0, 1 << 20, "group_size")
        object.__setattr__(self, "scale", _check_scales(self.scale, "scale"))

    @property
    def storage_bits(self):
        return self.index_bits

    storage_signed = False

    @property
    def operand_bits(self):
        return self.table_bits

    def groups(self, co):
        if self.group_size == 0:
            return np.zeros(co, dtype=np.int64)
        return np.arange(co, dtype=np.int64) // self.group_size

    def n_groups(self, co):
        return int(self.groups(co).max()) + 1 if co else 1

    def channel_scales(self, co):
        group_scales = _per_channel(self.scale, self.n_groups(co), "scale")
        return group_scales[self.groups(co)]

    def to_dict(self):
        return {"kind": "codebook", "index_bits": self.index_bits, "table_bits": self.table_bits,
                "group_size": self.group_size, "scale": list(self.scale)}


@dataclass(frozen=True)
class TernaryW:
    """Codes in {-1, 0, +1} (2-bit two's complement), real = code * alpha[c] (TWN / Hwang ternary)."""
    scale: tuple = (1.0,)
    kind = "ternary"
    storage_bits = 2
    storage_signed = True
    operand_bits = 2

    def __post_init__(self):
        object.__setattr__(self, "scale", _check_scales(self.scale, "scale"))

    def decode(self, codes):
        return codes.astype(np.int64)

    def channel_scales(self, co):
        return _per_channel(self.scale, co, "scale")

    def to_dict(self):
        return {"kind": "ternary", "scale": list(self.scale)}


@dataclass(frozen=True)
class BinaryW:
    """XNOR-Net B = sign(W): bit 1 means -1, bit 0 means +1; real = value * alpha[c], alpha = mean|W_c|."""
    scale: tuple = (1.0,)
    kind = "binary"
    storage_bits = 1
    storage_signed = False
    operand_bits = 1

    def __post_init__(self):
        object.__setattr__(self, "scale", _check_scales(self.scale, "scale"))

    def decode(self, codes):
        return 1 - 2 * codes.astype(np.int64)

    def channel_scales(self, co):
        return _per_channel(self.scale, co, "scale")

    def to_dict(self):
        return {"kind": "binary", "scale": list(self.scale)}


@dataclass(frozen=True)
class Pow2W:
    """Power-of-two weights for shift-add PEs: signed code c, value = sign(c) * 2^(|c| - 1), 0 for c = 0.

    `bits` is the code width: 4 bits give 0, +-1, +-2, ..., +-64 (code -8 = -128). real = value * scale[c].
    """
    bits: int
    scale: tuple = (1.0,)
    kind = "pow2"
    storage_signed = True

    def __post_init__(self):
        _check_int(self.bits, 2, 5, "bits")  # 5 bits: |value| up to 2^15
        object.__setattr__(self, "scale", _check_scales(self.scale, "scale"))

    @property
    def storage_bits(self):
        return self.bits

    @property
    def operand_bits(self):
        return (1 << (self.bits - 1)) + 1  # |value| up to 2^(2^(bits-1) - 1), plus sign

    def decode(self, codes):
        c = codes.astype(np.int64)
        mag = np.where(c == 0, 0, np.left_shift(1, np.maximum(np.abs(c) - 1, 0)))
        return np.sign(c) * mag

    def channel_scales(self, co):
        return _per_channel(self.scale, co, "scale")

    def to_dict(self):
        return {"kind": "pow2", "bits": self.bits, "scale": list(self.scale)}


@dataclass(frozen=True)
class Float32W:
    """float32 weights held exactly: each stored code is the IEEE-754 bit pattern of one float32, as a signed
    32-bit integer; `floats(codes)` is `codes.view(float32)`, the value multiplied as it is (real = value).

    What onnxruntime.quantization's QOperator form leaves of a ConvTranspose (float weights between
    DequantizeLinear and QuantizeLinear: ORT has no QLinearConvTranspose CPU kernel). Only a conv2d with
    `arithmetic: "ort_float32"` (ORT's float32 ConvTranspose, units/float_conv_transpose.py) takes them
    (graph.py checks it); they have no integer operand values, so `decode` refuses: the integer MAC path,
    accumulator bounds and requantizer never see them. Their MACs are fp32 MACs (trace: `fp32_macs`)."""
    kind = "float32"
    storage_bits = 32
    storage_signed = True
    operand_bits = 32

    def decode(self, codes):
        raise HwsimError("float32 weights have no integer operand values: only a conv2d with arithmetic "
                         "'ort_float32' computes with them", field="weight_encoding.kind")

    @staticmethod
    def floats(codes) -> np.ndarray:
        """The float32 values of stored bit patterns (int32 range, checked at load)."""
        return np.ascontiguousarray(np.asarray(codes).astype(np.int32)).view(np.float32)

    @staticmethod
    def codes(values) -> np.ndarray:
        """float32 values -> their bit patterns as int64 codes (what the .qnn weight tensor stores)."""
        return np.ascontiguousarray(np.asarray(values, dtype=np.float32)).view(np.int32).astype(np.int64)

    def channel_scales(self, co):
        return np.ones(co, dtype=np.float64)   # the stored float is the real weight

    def to_dict(self):
        return {"kind": "float32"}


WEIGHT_KINDS = {"uniform": UniformW, "codebook": CodebookW, "ternary": TernaryW, "binary": BinaryW,
                "pow2": Pow2W, "float32": Float32W}


def weight_from_dict(d, field="weight_encoding"):
    if _kind(d) not in WEIGHT_KINDS:
        kind = d.get("kind") if isinstance(d, dict) else d
        raise HwsimError(f"unknown weight encoding {kind!r}; known: {sorted(WEIGHT_KINDS)}",
                         field=f"{field}.kind")
    cls = WEIGHT_KINDS[d["kind"]]
    args = {k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items() if k != "kind"}
    try:
        return cls(**args)
    except TypeError as exc:
        raise HwsimError(f"bad fields for {d['kind']} weights: {exc}", field=field) from None
    except HwsimError as exc:
        raise HwsimError(exc.message, field=f"{field}.{exc.field}" if exc.field else field) from None
