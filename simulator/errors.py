"""One error type for every bad input: the CLI prints it as a single line and exits non-zero."""


class HwsimError(Exception):
    """A user-facing error. `source` is the file (or object) and `field` the place inside it."""

    def __init__(self, message: str, source: str | None = None, field: str | None = None):
        self.message = message
        self.source = source
        self.field = field
        super().__init__(self.line())

    def line(self) -> str:
        parts = [p for p in (self.source, self.field) if p]
        return ": ".join(parts + [self.message])
