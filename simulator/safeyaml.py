"""The one YAML reader of hwsim: a yaml.SafeLoader that cannot be bombed.

Every YAML file hwsim reads (technology tables, architectures, recipes, `--set` values) goes through
`load_yaml`. On top of PyYAML's safe loader (no Python tags, ever) it enforces:

- document size: at most `MAX_BYTES` (1 MiB), checked before parsing;
- nesting depth: at most `MAX_DEPTH` (64) levels, checked while composing, so no RecursionError; an alias
  counts with the depth of what it refers to;
- aliases: at most `MAX_ALIASES` (100) alias uses, no alias to a collection that contains it, and at most
  `MAX_NODES` (100,000) nodes once every alias is expanded (a "billion laughs" fails after a few hundred events);
- duplicate mapping keys are an error naming both lines (YAML says keys are unique; PyYAML keeps the last);
- integers of more than `MAX_INT_DIGITS` (30) digits are refused (no OverflowError, no 4300-digit ValueError);
- floats must be finite: .inf, .nan and literals that overflow (1.0e+400) are refused (a caller that checks
  every number itself, naming the field, may take .inf / .nan through: `keep_special_floats`);
- timestamps are read as plain strings (hwsim has no date fields; a malformed date cannot raise ValueError).

Every failure is one `HwsimError` naming the source and, where known, the line.
"""

from __future__ import annotations

import math

import yaml
from yaml.constructor import SafeConstructor
from yaml.events import AliasEvent
from yaml.nodes import MappingNode, SequenceNode

from simulator.errors import HwsimError

MAX_BYTES = 1 << 20
MAX_DEPTH = 64
MAX_ALIASES = 100
MAX_NODES = 100_000
MAX_INT_DIGITS = 30

_MERGE_TAG = "tag:yaml.org,2002:merge"


class YamlSyntaxError(HwsimError):
    """The text is not YAML PyYAML's safe loader accepts (syntax, unknown tag, bad anchor...)."""


class _Limit(Exception):
    """A limit of this loader was exceeded at `mark` (turned into an HwsimError by load_yaml)."""

    def __init__(self, message: str, mark=None):
        super().__init__(message)
        self.message = message
        self.mark = mark


def _line(mark) -> str | None:
    return None if mark is None else f"line {mark.line + 1}"


class _Loader(yaml.SafeLoader):
    """SafeLoader with depth, alias and expansion limits in the composer and strict scalar constructors."""

    def __init__(self, stream, keep_special_floats: bool = False):
        super().__init__(stream)
        self._keep_special = keep_special_floats
        self._depth = 0
        self._aliases = 0
        self._nodes = 0

    # -- composition: depth, aliases, expanded size ------------------------------------------------------

    def compose_node(self, parent, index):
        event = self.peek_event()
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise _Limit(f"nested more than {MAX_DEPTH} levels deep", event.start_mark)
            if isinstance(event, AliasEvent) and event.anchor in self.anchors:
                target = self.anchors[event.anchor]
                size = getattr(target, "_hwsim_size", None)
                if size is None:
                    raise _Limit(f"alias *{event.anchor} refers to a collection that contains it",
                                 event.start_mark)
                self._aliases += 1
                if self._aliases > MAX_ALIASES:
                    raise _Limit(f"more than {MAX_ALIASES} aliases", event.start_mark)
                if self._depth - 1 + target._hwsim_height > MAX_DEPTH:
                    raise _Limit(f"alias *{event.anchor} nests more than {MAX_DEPTH} levels deep once expanded",
                                 event.start_mark)
                self._count(size, event.start_mark)
                return super().compose_node(parent, index)
            node = super().compose_node(parent, index)
            if getattr(node, "_hwsim_size", None) is None:   # a new node (not an alias of an earlier one)
                children = _children(node)
                node._hwsim_size = 1 + sum(c._hwsim_size for c in children)
                node._hwsim_height = 1 + max((c._hwsim_height for c in children), default=0)
                self._count(1, node.start_mark)
            return node
        finally:
            self._depth -= 1

    def _count(self, nodes: int, mark):
        self._nodes += nodes
        if self._nodes > MAX_NODES:
            raise _Limit(f"more than {MAX_NODES:,} values once aliases are expanded", mark)

    # -- construction: duplicate keys, numbers ------------------------------------------------------------

    def construct_mapping(self, node, deep=False):
        if isinstance(node, MappingNode):
            seen = {}
            for key_node, _ in node.value:
                if key_node.tag == _MERGE_TAG:
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    first = seen.setdefault(key, key_node)
                except TypeError:      # unhashable: the base constructor says so
                    continue
                if first is not key_node:
                    a, b = first.start_mark.line + 1, key_node.start_mark.line + 1
                    where = f"line {a}" if a == b else f"lines {a} and {b}"
                    raise _Limit(f"duplicate key {short_repr(key)} ({where}): a mapping's keys must be unique",
                                 key_node.start_mark)
        return super().construct_mapping(node, deep=deep)

    def construct_yaml_int(self, node):
        text = str(self.construct_scalar(node))
        digits = sum(ch.isalnum() for ch in text)
        if digits > MAX_INT_DIGITS + 2:          # + a 0x / 0b / 0o prefix
            raise _Limit(f"integer of {digits} digits is out of range (at most {MAX_INT_DIGITS})", node.start_mark)
        try:
            value = SafeConstructor.construct_yaml_int(self, node)
        except (ValueError, OverflowError):
            raise _Limit(f"not an integer: {short_repr(text)}", node.start_mark) from None
        if abs(value) >= 10 ** MAX_INT_DIGITS:
            raise _Limit(f"integer of {len(str(abs(value)))} digits is out of range (at most {MAX_INT_DIGITS})",
                         node.start_mark)
        return value

    def construct_yaml_float(self, node):
        text = str(self.construct_scalar(node))
        try:
            value = SafeConstructor.construct_yaml_float(self, node)
        except (ValueError, OverflowError):
            raise _Limit(f"not a number: {short_repr(text)}", node.start_mark) from None
        if not math.isfinite(value):
            special = text.strip().lstrip("+-").lower() in (".inf", ".nan")
            if not (special and self._keep_special):
                raise _Limit(f"{short_repr(text)} is not a finite number", node.start_mark)
        return value

    def construct_yaml_timestamp(self, node):
        return str(self.construct_scalar(node))


_Loader.add_constructor("tag:yaml.org,2002:int", _Loader.construct_yaml_int)
_Loader.add_constructor("tag:yaml.org,2002:float", _Loader.construct_yaml_float)
_Loader.add_constructor("tag:yaml.org,2002:timestamp", _Loader.construct_yaml_timestamp)


def _children(node):
    if isinstance(node, SequenceNode):
        return node.value
    if isinstance(node, MappingNode):
        return [part for pair in node.value for part in pair]
    return ()


def short_repr(value, limit: int = 60) -> str:
    """A short, escaped repr of a value read from a file, for a message (never the whole of a long string or a
    large structure: reprlib stops early)."""
    import reprlib

    r = reprlib.Repr()
    r.maxstring, r.maxother, r.maxlevel = limit, limit, 3
    return _clip(r.repr(value), limit)


def _clip(text: str, limit: int) -> str:
    text = text.encode("ascii", "backslashreplace").decode("ascii")
    text = "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in text)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def read_document(path, source: str, what: str) -> bytes:
    """A YAML file's bytes, refusing one larger than MAX_BYTES before it is parsed; an unreadable file or one too
    large is one HwsimError naming it (`what` says what the file should have been)."""
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_BYTES + 1)
    except OSError as exc:
        raise HwsimError(f"cannot read file: {exc.strerror or exc}", source=source) from None
    if len(raw) > MAX_BYTES:
        raise HwsimError(f"larger than {MAX_BYTES:,} bytes: not {what}", source=source)
    return raw


def load_yaml(text_or_bytes, source: str, keep_special_floats: bool = False):
    """Parse one YAML document safely. Any problem is one HwsimError(message, source=source, field=line).

    `keep_special_floats`: let the literals .inf / .nan through (a number that overflows, like 1.0e+400, is still
    refused) for a caller that checks every number itself and names the field (the hardware tables: every
    number is a figure, and FieldReader.figure refuses a non-finite one naming its row)."""
    data = text_or_bytes
    if isinstance(data, (bytes, bytearray, memoryview)):
        size = len(data)
        data = bytes(data)
    elif isinstance(data, str):
        size = len(data) if len(data) > MAX_BYTES else len(data.encode("utf-8", "surrogatepass"))
    else:
        raise TypeError(f"load_yaml takes str or bytes, not {type(data).__name__}")
    if size > MAX_BYTES:
        raise HwsimError(f"YAML document of {size:,} bytes is larger than the limit of {MAX_BYTES:,} bytes",
                         source=source)
    loader = None
    try:
        loader = _Loader(data, keep_special_floats)
        return loader.get_single_data()
    except _Limit as exc:
        raise HwsimError(exc.message, source=source, field=_line(exc.mark)) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        context = getattr(exc, "context", None)
        if context and not context.startswith("while"):
            problem = f"{context}, {problem}"
        if isinstance(exc, yaml.reader.ReaderError):
            problem = f"{exc.reason} (character #x{exc.character:04x} at position {exc.position})"
        raise YamlSyntaxError(f"YAML syntax error{where}: {_clip(str(problem), 200)}", source=source) from None
    except RecursionError:      # not reachable with MAX_DEPTH; kept so no traceback can ever escape
        raise HwsimError(f"nested too deeply (limit {MAX_DEPTH} levels)", source=source) from None
    except (ValueError, TypeError, OverflowError, UnicodeError) as exc:
        raise HwsimError(f"not valid YAML ({type(exc).__name__}: {_clip(str(exc), 120)})",
                         source=source) from None
    finally:
        if loader is not None:
            loader.dispose()
