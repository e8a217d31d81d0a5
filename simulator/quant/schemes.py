"""Quantization schemes as the CLI and recipes spell them ("kmeans:4,groups=8"), and recipes (hwsim-recipe/1).

A layer's `weights` scheme quantizes its weights; its `acts` scheme is the encoding of the feature map it *reads*
(the tensor its MAC units take as input: what decides an XNOR PE, a CE/CK converter in front of it, and the γ_a
of Lin et al.'s allocation). The model input's encoding is the `input` scheme.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from ..errors import HwsimError

WEIGHT_KINDS = {"uniform": "B", "kmeans": "B", "siq": "B", "ternary": "twn|hwang", "binary": "xnor", "pow2": "B",
                "dictionary": "N"}
ACT_KINDS = {"uniform": "B", "enq": "E|auto", "knq": "T", "binary": ""}
INPUT_KINDS = {"uniform": "B", "kmeans": "B"}
OPTIONS = {"binary": {"beta"}, "kmeans": {"groups"}, "siq": {"groups", "rounds", "epochs"}, "enq": {"qm"}, "knq": {"qm", "centroids"},
           "dictionary": {"init"}}
BIT_LIMITS = {"uniform": (1, 16), "kmeans": (1, 8), "siq": (1, 8), "pow2": (2, 4), "dictionary": (2, 256),
              "enq": (1, 16), "knq": (1, 8)}
RECIPE_FORMAT = "hwsim-recipe/1"
RECIPE_KEYS = {"format", "weights", "acts", "input", "all_layers", "layers", "budget", "note"}


@dataclass(frozen=True)
class Scheme:
    kind: str
    arg: object = None               # bits (int), or a variant name ("twn", "hwang", "xnor", "auto"), or None
    options: tuple = ()              # sorted (key, value) pairs
    # where the scheme was given ("--weights", "layers.conv2.weights", ...): names it in errors found later
    # (against the model's layers); not part of the scheme's identity
    where: str = field(default="", compare=False, repr=False)

    def opt(self, key, default=None):
        return dict(self.options).get(key, default)

    @property
    def bits(self):
        return self.arg if isinstance(self.arg, int) else None

    def __str__(self):
        text = self.kind if self.arg is None else f"{self.kind}:{self.arg}"
        return text + "".join(f",{k}={v}" for k, v in self.options)


def parse_scheme(text, role: str, where: str) -> Scheme:
    """role: "weights" | "acts" | "input". `where` names the option or recipe field in errors."""
    kinds = {"weights": WEIGHT_KINDS, "acts": ACT_KINDS, "input": INPUT_KINDS}[role]
    listing = ", ".join(f"{k}:{v}" if v else k for k, v in kinds.items())
    if not isinstance(text, str) or not text.strip():
        raise HwsimError(f"must be a scheme string ({listing})", field=where)
    head, *opts = text.strip().split(",")
    kind, _, arg = head.partition(":")
    if kind not in kinds:
        raise HwsimError(f"unknown {role} scheme {kind!r}; one of: {listing}", field=where)
    spec = kinds[kind]
    value = None
    if spec in ("B", "E|auto", "T", "N"):
        if spec == "E|auto" and arg == "auto":
            value = "auto"
        else:
            try:
                value = int(arg)
            except ValueError:
                raise HwsimError(f"{kind} needs a number: {kind}:{spec}, got {text!r}", field=where) from None
            lo, hi = BIT_LIMITS[kind]
            if kind == "uniform" and role == "weights":
                lo = 2        # symmetric weights need a sign and a magnitude bit (1 bit: binary:xnor)
            if not lo <= value <= hi:
                raise HwsimError(f"{kind}:{value} is out of range ({lo}..{hi})", field=where)
    elif spec:
        if arg not in spec.split("|"):
            raise HwsimError(f"{kind} takes {kind}:{spec}, got {text!r}", field=where)
        value = arg
    elif arg:
        raise HwsimError(f"{kind} takes no argument, got {text!r}", field=where)
    options = {}
    for opt in opts:
        key, eq, val = opt.partition("=")
        if not eq or key.strip() not in OPTIONS.get(kind, ()):
            allowed = ", ".join(sorted(OPTIONS.get(kind, ()))) or "none"
            raise HwsimError(f"unknown option {opt!r} for {kind} (options: {allowed})", field=where)
        key, val = key.strip(), val.strip()
        if key == "init":
            if val not in ("uniform", "kmeans"):
                raise HwsimError(f"init must be uniform or kmeans, got {val!r}", field=where)
            options[key] = val
            continue
        try:
            options[key] = int(val)
        except ValueError:
            raise HwsimError(f"option {key} needs an integer, got {val!r}", field=where) from None
        if options[key] < 1:
            raise HwsimError(f"option {key} must be positive, got {val}", field=where)
    if options.get("beta", 1) != 1:
        raise HwsimError("beta=1 gives plain sign activations (networks trained without XNOR-Net's scaling); "
                         "omit it for beta = mean|X|", field=where)
    if kind in ("enq", "knq"):
        qm = options.get("qm", 8)
        if not 1 <= qm <= 16:
            raise HwsimError(f"qm must be 1..16, got {qm}", field=where)
        if "centroids" in options and options["centroids"] != 1 << value:
            raise HwsimError(f"{value}-bit KNQ has {1 << value} centroids, not {options['centroids']}", field=where)
        if isinstance(value, int) and value > qm:
            raise HwsimError(f"{kind}:{value} needs at most q_m = {qm} bits ({2 ** value} levels cannot come out of "
                             f"{qm}-bit activations)", field=where)
    return Scheme(kind, value, tuple(sorted(options.items())), where=where)


@dataclass
class Recipe:
    weights: Scheme = field(default_factory=lambda: Scheme("uniform", 8))
    acts: Scheme = field(default_factory=lambda: Scheme("uniform", 8))
    input: Scheme = field(default_factory=lambda: Scheme("uniform", 8))
    all_layers: bool = False
    layers: dict = field(default_factory=dict)     # layer name or op -> {"weights": Scheme, "acts": Scheme}
    budget: float = 0.01                           # enq:auto: accuracy (or agreement) drop allowed
    source: str = "defaults"

    def error(self, scheme: Scheme, message: str, fallback: str) -> HwsimError:
        """An error about `scheme` as applied to the model, naming where the user gave it: the option
        ("--weights") or the recipe file and field ("R.yaml: layers.conv2.weights"); `fallback` otherwise."""
        where = getattr(scheme, "where", "")
        if not where:
            return HwsimError(message, field=fallback)
        if where.startswith("--") or self.source in ("defaults", "recipe", ""):
            return HwsimError(message, field=where)
        return HwsimError(message, source=self.source, field=where)

    def to_dict(self) -> dict:
        return {"format": RECIPE_FORMAT, "weights": str(self.weights), "acts": str(self.acts),
                "input": str(self.input), "all_layers": self.all_layers, "budget": self.budget,
                "layers": {k: {r: str(s) for r, s in v.items()} for k, v in self.layers.items()}}


def load_recipe(path) -> Recipe:
    """Read a recipe YAML (simulator.safeyaml: bounded size, depth, aliases; no duplicate keys); every field
    checked, errors name the file and field."""
    from simulator.safeyaml import YamlSyntaxError, load_yaml, read_document
    source = os.fspath(path)
    raw = read_document(source, source, "a recipe")
    try:
        data = load_yaml(raw, source)
    except YamlSyntaxError as exc:
        raise HwsimError("not valid YAML" + exc.message.removeprefix("YAML syntax error"), source=source) from None
    try:
        return recipe_from_dict(data, source)
    except HwsimError as exc:
        raise HwsimError(exc.message, source=source, field=exc.field) from None


def recipe_from_dict(data, source="recipe") -> Recipe:
    if not isinstance(data, dict):
        raise HwsimError("must be a mapping (see docs/quantization.md)", field="recipe")
    if data.get("format") != RECIPE_FORMAT:
        raise HwsimError(f"must be {RECIPE_FORMAT!r}, got {data.get('format')!r}", field="format")
    unknown = set(data) - RECIPE_KEYS
    if unknown:
        raise HwsimError(f"unknown key(s) {sorted(map(str, unknown))}; allowed: {sorted(RECIPE_KEYS)}", field="recipe")
    r = Recipe(source=source)
    for role in ("weights", "acts", "input"):
        if role in data:
            setattr(r, role, parse_scheme(data[role], role, role))
    if "all_layers" in data:
        if not isinstance(data["all_layers"], bool):
            raise HwsimError("must be true or false", field="all_layers")
        r.all_layers = data["all_layers"]
    if "budget" in data:
        b = data["budget"]
        if isinstance(b, bool) or not isinstance(b, (int, float)) or not 0 <= b <= 1:
            raise HwsimError(f"must be a number in [0, 1], got {b!r}", field="budget")
        r.budget = float(b)
    layers = data.get("layers") or {}
    if not isinstance(layers, dict):
        raise HwsimError("must be a mapping of layer name or op -> {weights, acts}", field="layers")
    for key, entry in layers.items():
        where = f"layers.{key}"
        if not isinstance(entry, dict) or not entry or set(entry) - {"weights", "acts"}:
            raise HwsimError("must be a mapping with 'weights' and/or 'acts'", field=where)
        r.layers[str(key)] = {role: parse_scheme(text, role, f"{where}.{role}") for role, text in entry.items()}
    return r
