"""FloatGraph + calibration data + recipe -> a hwsim Model (.qnn) that the integer engine runs bit-exactly.

Steps (one way): plan the schemes per MAC layer -> fuse each ReLU / Clip into the layer before -> group the stored
tensors (MAC and add outputs; the inputs of a concat share one encoding) -> quantize the weights -> calibrate
each group's encoding, in network order, on the values it takes in the network quantized so far -> assemble the
layers. Every activation scale is a power of
two (seed 004: V_i = i * 2^-F) and every weight scale has at most 8 significant bits, so the float64 requantizer
is exact and `hwsim validate` finds the engine and the float64 reference equal bit for bit.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np

from ..encodings import (BinaryAct, BinaryW, CodebookW, EnqAct, KnqAct, Pow2W, TernaryW, UniformAct,
                         UniformW)
from ..errors import HwsimError
from ..floatgraph import FloatGraph
from ..graph import Layer, Model
from . import activations as qa
from . import weights as qw
from .schemes import Recipe, Scheme

PASS_OPS = ("maxpool", "avgpool", "relu", "clip", "flatten", "reshape", "concat")
LOGIT_BITS = 16          # the last layer's output: signed 16-bit with a power-of-two scale
UNIFORM8 = Scheme("uniform", 8)


@dataclass
class Plan:
    """What quantize decided, per MAC layer and per stored tensor; printed and written to the metadata."""
    weights: dict = field(default_factory=dict)        # MAC layer -> Scheme
    acts: dict = field(default_factory=dict)           # MAC layer -> Scheme of the tensor it reads
    fused: dict = field(default_factory=dict)          # relu / clip node -> the layer it is fused into
    tensor_scheme: dict = field(default_factory=dict)  # stored tensor -> Scheme ("logits" for the output)
    groups: dict = field(default_factory=dict)         # stored tensor -> group id (concat inputs share one)
    encodings: dict = field(default_factory=dict)      # stored tensor -> encoding (after calibration)
    notes: list = field(default_factory=list)


# ------------------------------------------------------------------------------------------------ planning

def plan_schemes(fg: FloatGraph, recipe: Recipe) -> Plan:
    plan = Plan()
    macs = fg.mac_nodes()
    if not macs:
        raise HwsimError("the model has no Conv / Gemm / MatMul layer to quantize", field="graph")
    names = {n.name: n for n in fg.nodes}
    for key in recipe.layers:
        if key in ("conv2d", "dense"):
            continue
        if key not in names:
            close = ", ".join(n.name for n in macs[:12])
            raise HwsimError(f"layer {key!r} does not exist (MAC layers: {close}; or the ops conv2d, dense)",
                             field=f"{recipe.source}: layers.{key}")
        if names[key].op not in ("conv2d", "dense"):
            raise HwsimError(f"layer {key!r} is a {names[key].op}; schemes apply to conv2d / dense layers",
                             field=f"{recipe.source}: layers.{key}")
    ends = {macs[0].name, macs[-1].name}
    for n in macs:
        w, a = recipe.weights, recipe.acts
        for key in (n.op, n.name):
            entry = recipe.layers.get(key, {})
            w, a = entry.get("weights", w), entry.get("acts", a)
        if n.name in ends and not recipe.all_layers and n.name not in recipe.layers:
            w, a = UNIFORM8, UNIFORM8      # the papers keep the first and last layers at 8 bits
        plan.weights[n.name], plan.acts[n.name] = w, a
    _check_against_layers(fg, plan, recipe)
    _fuse_activations(fg, plan)
    _tensor_schemes(fg, plan, recipe)
    return plan


def _check_against_layers(fg, plan, recipe):
    """What a scheme asks of the layer it applies to, checked before any calibration; errors name where the
    scheme was given (the recipe file and field, or the option)."""
    dictionary = None
    for n in fg.mac_nodes():
        w = plan.weights[n.name]
        co = n.weight.shape[0]
        if w.kind in ("kmeans", "siq"):
            groups = w.opt("groups", 1)
            if co % groups:
                raise recipe.error(w, f"groups={groups} does not divide the {co} output channels of layer "
                                      f"{n.name!r}", f"layer {n.name}")
        if w.kind == "dictionary":
            if dictionary is None:
                dictionary = w
            elif (w.bits, w.opt("init", "kmeans")) != (dictionary.bits, dictionary.opt("init", "kmeans")):
                raise recipe.error(w, f"dictionary layers share one table: {w} (layer {n.name!r}) differs from "
                                      f"{dictionary}; give them the same dictionary:N scheme", "recipe")


def _fuse_activations(fg, plan):
    """A Relu / Clip whose input is a MAC or add output read by nothing else becomes that layer's clip."""
    for n in fg.nodes:
        if n.op in ("relu", "clip"):
            src = n.inputs[0]
            prod = fg.producer(src)
            if prod is not None and prod.op in ("conv2d", "dense", "add") and len(fg.consumers(src)) == 1 \
                    and src != fg.output and prod.name not in plan.fused.values():
                plan.fused[n.name] = prod.name


def stored_name(plan, tensor):
    """The hwsim tensor a float tensor lives in (a fused activation lives in its layer's output)."""
    return plan.fused.get(tensor, tensor)


def _tensor_schemes(fg, plan, recipe):
    """Every stored tensor's scheme: from the MAC layers that read it, through pass-through ops."""
    stored = ["input"] + [n.name for n in fg.nodes if n.op in ("conv2d", "dense", "add")]
    parent = {t: t for t in stored}

    def find(t):
        while parent[t] != t:
            t = parent[t]
        return t

    def sources(tensor):
        """The stored tensors a float tensor's values come from (through pass-through ops)."""
        t = stored_name(plan, tensor)
        if t in parent:
            return [t]
        node = fg.node(t)
        return [s for i in node.inputs for s in sources(i)]

    readers = {t: [] for t in stored}
    for n in fg.nodes:
        if n.op in ("conv2d", "dense"):
            for s in sources(n.inputs[0]):
                readers[s].append(n.name)
        if n.op == "concat":
            srcs = [s for i in n.inputs for s in sources(i)]
            for s in srcs[1:]:
                parent[find(s)] = find(srcs[0])
    outputs = set(sources(fg.output))
    for t in stored:
        plan.groups[t] = find(t)
    for g in dict.fromkeys(plan.groups[t] for t in stored):      # network order: deterministic
        members = [t for t in stored if plan.groups[t] == g]
        if any(t in outputs for t in members):
            plan.tensor_scheme.update({t: "logits" for t in members})
            continue
        schemes = {}
        for t in members:
            for r in readers[t]:
                schemes.setdefault(plan.acts[r], []).append(r)
        if len(schemes) > 1:
            listing = "; ".join(f"{s} by {', '.join(rs)}" for s, rs in schemes.items())
            raise HwsimError(f"tensor {members[0]!r} is read with different activation schemes ({listing}); one "
                             "tensor has one encoding: give these layers the same acts", field="recipe")
        if schemes:
            scheme = next(iter(schemes))
        elif recipe.acts.kind in ("uniform", "enq", "knq") and recipe.acts.arg != "auto":
            scheme = recipe.acts          # read only by adds / pools: the default activation scheme
        else:
            scheme = UNIFORM8
        if "input" in members:
            scheme = _input_scheme(scheme, recipe, plan)
        plan.tensor_scheme.update({t: scheme for t in members})


def _input_scheme(read_as, recipe, plan):
    if read_as.kind == "binary":
        return read_as                       # --all-layers with binary acts: a sign input
    if read_as != UNIFORM8 and read_as != recipe.input:
        plan.notes.append(f"the model input is quantized with the input scheme {recipe.input} (acts {read_as} "
                          "applies to feature maps only)")
    return recipe.input


# ------------------------------------------------------------------------------------------------ calibration

def _frac(max_value, bits, signed):
    """F from the calibration range, within the encodings' [-32, 32] (a near-zero tensor would ask for more)."""
    return max(-32, min(32, qa.frac_bits(max_value, bits, signed)))


def activation_encoding(scheme: Scheme, values: np.ndarray, where: str, seed: int = 0, e_bits=None):
    """Encoding of a stored tensor from its float calibration values."""
    lo, hi = float(values.min()), float(values.max())
    if scheme == "logits":
        return UniformAct(LOGIT_BITS, True, 2.0 ** -_frac(max(abs(lo), abs(hi)), LOGIT_BITS, True))
    kind = scheme.kind
    if kind == "binary":
        return BinaryAct(1.0 if scheme.opt("beta") == 1 else qw.mantissa8(qw.xnor_beta(values)))
    if kind == "uniform":
        signed = lo < 0
        return UniformAct(scheme.bits, signed, 2.0 ** -_frac(max(abs(lo), abs(hi)), scheme.bits, signed))
    if kind in ("enq", "knq", "kmeans"):
        qm = scheme.opt("qm", 8)
        if lo < 0:
            raise HwsimError(f"{kind} quantizes non-negative activations (after a ReLU), but this tensor reaches "
                             f"{lo:.4g} on the calibration set", field=where)
        frac = _frac(hi, qm, False)
        if kind == "enq":
            return EnqAct(qm if scheme.arg == "auto" else (e_bits or scheme.bits), qm, frac)
        t = scheme.bits
        cents = qa.knq_centroids(values, t, qm, frac, seed=seed)
        rule = "nearest" if kind == "kmeans" else "seed"
        return KnqAct(t, tuple(int(c) for c in cents), tuple(int(v) for v in qa.knq_thresholds(cents, rule)), frac)
    raise AssertionError(kind)


# ------------------------------------------------------------------------------------------------ weights

def quantize_weights(n, scheme: Scheme, dictionary=None):
    """-> (codes, weight encoding, codebook or None) for one conv2d / dense FloatNode."""
    w, co = n.weight, n.weight.shape[0]
    kind = scheme.kind
    if kind == "uniform":
        codes, scales = qw.uniform_weights(w, scheme.bits)
        return codes, UniformW(scheme.bits, True, tuple(map(float, scales)), (0,)), None
    if kind in ("kmeans", "siq"):
        groups = scheme.opt("groups", 1)
        if co % groups:
            raise HwsimError(f"groups={groups} does not divide the {co} output channels", field=f"layer {n.name}")
        idx, table, scales = qw.kmeans_weights(w, scheme.bits, groups=groups)
        enc = CodebookW(scheme.bits, 8, 0 if groups == 1 else co // groups, tuple(map(float, scales)))
        return idx, enc, table
    if kind == "ternary":
        if scheme.arg == "twn":
            codes, _, alpha = qw.twn_ternary(w)
        else:
            codes, alpha = qw.hwang_ternary(w)
        return codes, TernaryW((qw.mantissa8(alpha),)), None
    if kind == "binary":
        codes, alpha = qw.xnor_binary(w)
        return codes, BinaryW(tuple(qw.mantissa8(a) for a in alpha)), None
    if kind == "pow2":
        codes, scales = qw.pow2_weights(w, scheme.bits)
        return codes, Pow2W(scheme.bits, tuple(map(float, scales))), None
    if kind == "dictionary":
        table, table_scale, layer_scale, idx = dictionary[n.name]
        index_bits = max(1, math.ceil(math.log2(len(table))))
        enc = CodebookW(index_bits, 8, 0, (qw.mantissa8(table_scale * layer_scale),))
        return idx, enc, np.asarray(table, dtype=np.int64)[None, :]
    raise AssertionError(kind)


def _dictionary(fg, plan):
    """Seed 003: one table for every dictionary layer, with a scaling factor per layer."""
    layers = [n for n in fg.mac_nodes() if plan.weights[n.name].kind == "dictionary"]
    if not layers:
        return {}
    entries = {plan.weights[n.name].bits for n in layers}
    inits = {plan.weights[n.name].opt("init", "kmeans") for n in layers}
    if len(entries) > 1 or len(inits) > 1:
        raise HwsimError("dictionary layers share one table: give them the same dictionary:N scheme", field="recipe")
    table, table_scale, layer_scales, idx = qw.dictionary_weights([n.weight for n in layers], entries.pop(),
                                                                  init=inits.pop())
    return {n.name: (table, table_scale, s, i) for n, s, i in zip(layers, layer_scales, idx)}


# ------------------------------------------------------------------------------------------------ assembly

@dataclass
class Quantizer:
    """Holds what does not change while `enq:auto` searches: plan, calibration activations, quantized weights."""
    fg: FloatGraph
    recipe: Recipe
    calib_x: np.ndarray
    seed: int = 0
    plan: Plan = None
    float_acts: dict = None
    weight_cache: dict = field(default_factory=dict)
    on_step: object = None   # on_step(done, total) after each calibration step or enq:auto evaluation
    steps_done: int = 0

    def __post_init__(self):
        self.plan = plan_schemes(self.fg, self.recipe)
        self.float_acts = self.fg.run(self.calib_x, keep=True)
        dictionary = _dictionary(self.fg, self.plan)
        for n in self.fg.mac_nodes():
            scheme = self.plan.weights[n.name]
            if scheme.kind == "siq":
                raise HwsimError("siq weights are made by retraining: run through quantize() (needs --train)",
                                 field=f"layer {n.name}")
            try:
                self.weight_cache[n.name] = quantize_weights(n, scheme, dictionary)
            except ValueError as exc:        # the quantizers' argument checks: one line naming the layer
                raise HwsimError(str(exc), field=f"layer {n.name} ({scheme})") from None
        self._calibrate()

    def _calibrate(self):
        """Each tensor's encoding from the values it takes in the network quantized so far (sequential
        calibration: downstream of ternary or binary layers the ranges differ from the float model's). A tensor
        is measured through a fine 16-bit probe encoding; the members of a concat group are decided together."""
        plan, order = self.plan, list(self.plan.groups)
        fused_out = {v: k for k, v in plan.fused.items()}
        for t in order:
            group = [m for m in order if plan.groups[m] == plan.groups[t]]
            if t != group[-1]:
                continue                     # decide the group when its last member has been computed
            measured = {}
            if group != ["input"]:
                # the float range (before and after a fused activation: a sign reads the pre-activation) sizes
                # the probe; a probe that saturates is widened and the tensor measured again
                headroom = 4.0
                while True:
                    probes = {m: _probe(headroom * max(np.abs(self.float_acts[m]).max(initial=0.0),
                                                       np.abs(self.float_acts[fused_out.get(m, m)]).max(initial=0.0)))
                              for m in order if m not in plan.encodings}
                    model = self.build("calibration", probes, upto=t)
                    measured = self._measured(model, group)
                    top = {m: model.layer(m).out_enc.value_scale * ((1 << 15) - 1) for m in group if m != "input"}
                    if headroom >= 2.0 ** 20 or all(np.abs(measured[m]).max(initial=0.0) < top[m] for m in top):
                        break
                    headroom *= 16.0
            values = np.concatenate([self.calib_x.reshape(-1) if m == "input" else measured[m].reshape(-1)
                                     for m in group])
            scheme = plan.tensor_scheme[t]
            try:
                enc = activation_encoding(scheme, values, f"tensor {t}", self.seed)
            except ValueError as exc:
                raise HwsimError(str(exc), field=f"tensor {t} ({scheme})") from None
            plan.encodings.update({m: enc for m in group})
            self.step()

    def step(self):
        """A calibration step or an enq:auto evaluation is done: tell on_step (a progress bar). The total counts
        the tensor groups and enq:auto's greedy search at its longest (it often stops sooner)."""
        self.steps_done += 1
        if self.on_step is not None:
            auto = self.auto_tensors()
            qm = max((self.plan.tensor_scheme[t].opt("qm", 8) for t in auto), default=1)
            total = len(set(self.plan.groups.values())) + (1 + len(auto) * (qm - 1) if auto else 0)
            self.on_step(self.steps_done, max(total, self.steps_done))

    def _measured(self, model, tensors) -> dict:
        """Real values of `tensors` in `model` (a prefix with probe encodings) on the calibration set."""
        from ..engine import Engine, quantize_input
        res = Engine(model).run(quantize_input(model, self.calib_x), keep_all=True)
        out = {}
        for t in tensors:
            if t != "input":
                enc = model.layer(t).out_enc
                out[t] = enc.decode(res.tensors[t]).astype(np.float64) * enc.value_scale
        return out

    def auto_tensors(self) -> list:
        return [t for t, s in self.plan.tensor_scheme.items() if s != "logits" and s.kind == "enq" and s.arg == "auto"]

    def build(self, name: str, overrides=None, upto=None) -> Model:
        """The hwsim Model with the decided encodings (and `overrides`); `upto`: only the layers up to that one."""
        encs = dict(self.plan.encodings, **(overrides or {}))
        fg, plan = self.fg, self.plan
        layers = []
        for n in fg.nodes:
            if layers and layers[-1].name == upto:
                break
            if n.name in plan.fused:
                continue
            inputs = [stored_name(plan, i) for i in n.inputs]
            if n.op in ("conv2d", "dense"):
                layers.append(self._mac_layer(n, inputs, encs))
            elif n.op == "add":
                layers.append(Layer(n.name, "add", inputs, {"requant": "float64"}, out_enc=encs[n.name]))
                self._fused_clip(layers[-1], encs[n.name])
            elif n.op == "clip":
                enc = _encoding_of(layers, inputs[0], encs)
                lo, hi = _clip_values(n.attrs["min"], n.attrs["max"], enc)
                layers.append(Layer(n.name, "clip", inputs, {"min": lo, "max": hi}))
            elif n.op == "avgpool":
                attrs = {"kernel": n.attrs["kernel"], "stride": n.attrs["stride"], "padding": n.attrs["padding"],
                         "count_include_pad": n.attrs.get("count_include_pad", False)}
                if n.attrs.get("global"):
                    attrs["global"] = True
                layers.append(Layer(n.name, "avgpool", inputs, attrs))
            elif n.op == "maxpool":
                layers.append(Layer(n.name, "maxpool", inputs, {k: n.attrs[k] for k in ("kernel", "stride", "padding")}))
            elif n.op == "reshape":
                layers.append(Layer(n.name, "reshape", inputs, {"shape": list(n.attrs["shape"])}))
            else:
                layers.append(Layer(n.name, n.op, inputs))
        model = Model(name, tuple(fg.input_shape), encs["input"], layers)
        try:
            return model.check()
        except HwsimError as exc:
            # the built graph is the float model's: name the file the user gave, never the internal "model"
            if exc.source not in (None, model.source):
                raise
            raise HwsimError(exc.message, source=getattr(fg, "source", None) or None,
                             field=f"quantized graph: {exc.field}" if exc.field else "quantized graph") from None

    def _mac_layer(self, n, inputs, encs):
        codes, wenc, codebook = self.weight_cache[n.name]
        in_enc = _encoding_of_tensor(self.fg, self.plan, n.inputs[0], encs)
        out_enc = encs[n.name]
        co = n.weight.shape[0]
        s_in, s_w = in_enc.value_scale, wenc.channel_scales(co)
        attrs = {"acc_bits": 32, "requant": "float64"}
        if n.op == "conv2d":
            attrs.update(stride=list(n.attrs["stride"]), padding=list(n.attrs["padding"]), groups=n.attrs["groups"])
            if isinstance(in_enc, BinaryAct):
                attrs["binary_pad"] = "zero"      # the float model pads with zeros, not with a +-1 sign
        bias = None
        if n.bias is not None:
            b = n.bias / (s_in * s_w)
            # a sign output is acc + b >= 0, i.e. acc + floor(b) >= 0 for an integer acc: exact, no rounding
            bias = (np.floor(b) if isinstance(out_enc, BinaryAct) else np.rint(b)).astype(np.int64)
            if np.abs(bias).max(initial=0) >= 2 ** 31:
                raise HwsimError("the bias does not fit 32 bits at this layer's scales (weights or activations too "
                                 "finely scaled)", source=getattr(self.fg, "source", None) or None,
                                 field=f"layer {n.name}")
        lay = Layer(n.name, n.op, inputs, attrs, out_enc=out_enc, weight=codes, weight_enc=wenc,
                    codebook=codebook, bias=bias, bias_bits=32)
        self._fused_clip(lay, out_enc)
        return lay

    def _fused_clip(self, lay, out_enc):
        act = next((self.fg.node(r) for r, p in self.plan.fused.items() if p == lay.name), None)
        scheme = self.plan.tensor_scheme.get(lay.name)
        if act is None or isinstance(out_enc, BinaryAct) or getattr(scheme, "kind", None) == "binary":
            return        # a sign is taken of the pre-activation (a ReLU before it would make every sign +1)
        lo, hi = (0.0, math.inf) if act.op == "relu" else (act.attrs["min"], act.attrs["max"])
        lay.attrs["clip"] = list(_clip_values(lo, hi, out_enc))


def _probe(top):
    """A fine signed 16-bit encoding reaching `top`: measures a tensor's values in the partly quantized network."""
    return UniformAct(16, True, 2.0 ** -_frac(top, 16, True))


def _clip_values(lo, hi, enc):
    """Real bounds -> integer value bounds of `enc` (within its range)."""
    vlo, vhi = enc.value_range() if not isinstance(enc, UniformAct) else _uniform_values(enc)
    s = enc.value_scale
    a = vlo if lo == -math.inf else max(vlo, min(vhi, math.ceil(lo / s - 1e-9)))
    b = vhi if hi == math.inf else min(vhi, max(vlo, math.floor(hi / s + 1e-9)))
    return int(a), int(b)


def _uniform_values(enc):
    lo, hi = enc.code_range()
    return lo - enc.zero_point, hi - enc.zero_point


def _encoding_of(layers, name, encs):
    return encs.get(name) or next(lay for lay in layers if lay.name == name).out_enc


def _encoding_of_tensor(fg, plan, tensor, encs):
    t = stored_name(plan, tensor)
    while t not in encs:
        t = stored_name(plan, fg.node(t).inputs[0])
    return encs[t]


# ------------------------------------------------------------------------------------------------ entry point

def check_calibration(fg: FloatGraph, data: dict, source: str, limit: int | None = None
                      ) -> tuple[np.ndarray, np.ndarray | None]:
    """x (float64, the first `limit` samples: cut before converting) and y of a calibration set, checked:
    at least one sample, the model's input shape, finite values, labels within the model's outputs."""
    if "x" not in data:
        raise HwsimError(f"missing array 'x' (found {sorted(data)})", source=source, field="x")
    x = data["x"]
    if not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)) or x.dtype == np.bool_:
        raise HwsimError(f"must be a float array, got {x.dtype}", source=source, field="x")
    if x.ndim != len(fg.input_shape) + 1 or tuple(x.shape[1:]) != tuple(fg.input_shape):
        raise HwsimError(f"shape {list(x.shape)} does not match the model input [N, "
                         f"{', '.join(map(str, fg.input_shape))}]", source=source, field="x")
    if x.shape[0] < 1:
        raise HwsimError(f"holds no samples (shape {list(x.shape)}): nothing to calibrate on", source=source,
                         field="x")
    y = data.get("y")
    if y is not None:
        y = np.asarray(y)
        if y.shape != (x.shape[0],) or not np.issubdtype(y.dtype, np.integer):
            raise HwsimError(f"must be {x.shape[0]} integer labels, got shape {list(y.shape)} of {y.dtype}",
                             source=source, field="y")
    if limit is not None:
        x, y = x[:limit], None if y is None else y[:limit]
    x = x.astype(np.float64)
    if not np.all(np.isfinite(x)):
        raise HwsimError("contains NaN or infinity", source=source, field="x")
    if y is not None and fg.output in fg.shapes():
        classes = int(np.prod(fg.shapes()[fg.output]))
        bad = (y < 0) | (y >= classes)
        if np.any(bad):
            raise HwsimError(f"{int(np.count_nonzero(bad))} of {y.size} labels lie outside the model's classes "
                             f"0..{classes - 1} (e.g. {int(y[np.argmax(bad)])})", source=source, field="y")
    return x, y


@dataclass
class QuantizeResult:
    model: Model
    plan: Plan
    float_accuracy: float | None
    accuracy: float | None              # the integer engine's, on the calibration set
    agreement: float                    # top-1 agreement of the engine with the float model
    enq_bits: dict                      # enq:auto tensor -> chosen E
    seconds: float


def engine_outputs(model: Model, x: np.ndarray) -> np.ndarray:
    """The integer engine's decoded output on float inputs (the model's own input quantizer)."""
    from ..engine import Engine, quantize_input, run_batched
    codes = quantize_input(model, x)
    out = run_batched(Engine(model), codes).output
    return model.layers[-1].out_enc.decode(out).reshape(len(x), -1)


def quantize(fg: FloatGraph, x: np.ndarray, y, recipe: Recipe, *, name: str, seed: int = 0,
             train=None, progress=None, on_step=None) -> QuantizeResult:
    """Quantize `fg` with `recipe`, calibrated on x; the metadata records how. `train`: (x, y) for siq.
    `on_step(done, total)`: called as calibration and the enq:auto search advance (a progress bar)."""
    start = time.perf_counter()
    if any(s.kind == "siq" for s in plan_schemes(fg, recipe).weights.values()):
        if train is None:
            raise HwsimError("siq weights need --train TRAIN.npz (x, y): SIQ retrains the network", field="--train")
        from .siq import siq_retrain
        fg, recipe = siq_retrain(fg, recipe, train, seed=seed, progress=progress)
    q = Quantizer(fg, recipe, x, seed, on_step=on_step)
    float_pred = q.float_acts[fg.output].reshape(len(x), -1).argmax(1)

    def score(model):
        pred = engine_outputs(model, x).argmax(1)
        return float((pred == y).mean()) if y is not None else float((pred == float_pred).mean())

    enq_bits = {}
    auto = q.auto_tensors()
    if auto:
        qm = {t: q.plan.tensor_scheme[t].opt("qm", 8) for t in auto}

        def evaluate(choice):
            metric = score(q.build(name, {t: EnqAct(e, qm[t], q.plan.encodings[t].frac_bits)
                                          for t, e in zip(auto, choice)}))
            q.step()
            return metric

        choice = qa.enq_search(evaluate, len(auto), max(qm.values()), recipe.budget)
        enq_bits = {t: min(e, qm[t]) for t, e in zip(auto, choice)}
        for t, e in enq_bits.items():
            q.plan.encodings[t] = EnqAct(e, qm[t], q.plan.encodings[t].frac_bits)
    model = q.build(name)
    pred = engine_outputs(model, x).argmax(1)
    result = QuantizeResult(
        model, q.plan,
        float_accuracy=None if y is None else float((float_pred == y).mean()),
        accuracy=None if y is None else float((pred == y).mean()),
        agreement=float((pred == float_pred).mean()), enq_bits=enq_bits, seconds=0.0)
    model.metadata = {"quantized_by": {
        "tool": "hwsim quantize", "float_model": getattr(fg, "source", ""),
        "float_model_sha256": getattr(fg, "sha256", ""), "recipe": recipe.to_dict(),
        "layers": {n: {"weights": str(q.plan.weights[n]), "acts": str(q.plan.acts[n])} for n in q.plan.weights},
        "enq_auto_bits": enq_bits, "calibration_samples": int(len(x)), "seed": seed,
        "calibration_accuracy": {"float": result.float_accuracy, "integer": result.accuracy,
                                 "top1_agreement": result.agreement},
        "notes": list(fg.notes) + q.plan.notes}}
    from ..engine import quantize_input
    model.sample_input = quantize_input(model, x[:8])
    result.seconds = time.perf_counter() - start
    return result
