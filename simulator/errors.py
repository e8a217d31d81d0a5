"""One error type for every bad input: the CLI prints it as a single line and exits non-zero.

Names and strings that come from files (layer, tensor and op names, metadata, model names, file excerpts) may
hold anything: newlines, terminal escape sequences, lone surrogates, megabytes of text. :func:`safe_text` makes
such a string safe for a terminal line (control and other non-printable characters shown as visible escapes
such as ``\\x1b``, never sent; length bounded with an ellipsis), and :meth:`HwsimError.line` applies it to the
source, the field and the message, so an error is always one short line.
"""

from __future__ import annotations

import re

# Longest rendering of each part of an error line (characters, after escaping).
SOURCE_LIMIT = 200
FIELD_LIMIT = 200
MESSAGE_LIMIT = 400

_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
_UNSAFE = re.compile(r"[^\x20-\x7e]")  # fast check; non-ASCII printable characters are allowed after all


def _escape_char(ch: str) -> str:
    if ch in _ESCAPES:
        return _ESCAPES[ch]
    if ch.isprintable():
        return ch
    o = ord(ch)
    if o < 0x100:
        return f"\\x{o:02x}"
    if o < 0x10000:
        return f"\\u{o:04x}"
    return f"\\U{o:08x}"


def safe_text(value, limit: int | None = 200, keep_newlines: bool = False) -> str:
    """`value` as text safe to print: every non-printable character (control characters incl. newline, ESC,
    BEL, C1 controls, lone surrogates, line separators, bidi overrides) shown as a visible escape, and, when
    `limit` is given, at most `limit` characters followed by "... (N chars)" if it was cut. `keep_newlines`
    leaves "\\n" as is (for multi-line report text whose lines are already safe)."""
    text = value if isinstance(value, str) else str(value)
    if (limit is None or len(text) <= limit) and not _UNSAFE.search(text):
        return text
    total = len(text)
    src = text if limit is None else text[: limit + 1]  # an escape is never shorter than its character
    if keep_newlines:
        out = "\n".join("".join(_escape_char(c) for c in part) if _UNSAFE.search(part) else part
                        for part in src.split("\n"))
    else:
        out = "".join(_escape_char(c) for c in src) if _UNSAFE.search(src) else src
    if limit is not None and (len(out) > limit or total > len(src)):
        out = out[:limit] + f"... ({total:,} chars)"
    return out


def excerpt(value, limit: int = 60) -> str:
    """A short escaped excerpt of text taken from a file, for quoting it in an error message."""
    return safe_text(value, limit)


class HwsimError(Exception):
    """A user-facing error. `source` is the file (or object) and `field` the place inside it."""

    def __init__(self, message: str, source: str | None = None, field: str | None = None):
        self.message = message
        self.source = source
        self.field = field
        super().__init__(self.line())

    def line(self) -> str:
        """The error as one line: escaped (no control characters) and bounded in length."""
        parts = [safe_text(p, limit) for p, limit in ((self.source, SOURCE_LIMIT), (self.field, FIELD_LIMIT)) if p]
        return ": ".join(parts + [safe_text(self.message, MESSAGE_LIMIT)])
