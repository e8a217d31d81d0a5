"""`import hwsim`: the same Python API as `import simulator` (docs/api.md; the code is in the package
`simulator`)."""

import simulator as _simulator
from simulator import (HwsimError, Result, __version__, compare, estimate, inspect, load_hardware,  # noqa: F401
                       load_model, quantize, run, save_model, validate)

__all__ = _simulator.__all__


def __getattr__(name):   # simulator's other names, imported on first use (Engine, quantize_input, ...)
    return getattr(_simulator, name)
