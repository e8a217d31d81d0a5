"""hwsim: a hardware-accurate integer inference simulator for low-bit accelerators.

The Python API (docs/api.md, simulator/api.py): `import simulator as hwsim` (or `import hwsim`), then
`hwsim.load_model`, `import_model`, `run`, `compare`, `estimate`, `validate`, `inspect`, `quantize`,
`load_hardware`, `save_model`. Every name is imported on first use: `import simulator` loads neither numpy nor numba (the
command line, `python -m simulator.cli`, imports this package before it installs its Ctrl-C handling).
"""

import sys
import types

from .errors import HwsimError

__version__ = "0.1.0"

_API = ("Result", "compare", "estimate", "import_model", "inspect", "load_hardware", "load_model", "quantize", "run",
        "save_model", "validate")
_LAZY = {**{name: "api" for name in _API}, "Engine": "engine", "quantize_input": "engine", "Model": "graph",
         "no_limits": "graph", "Hardware": "hw.arch", "Trace": "trace"}
__all__ = ["HwsimError", "__version__", *_LAZY]


def __getattr__(name):
    if name in _LAZY:
        import importlib
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))


class _Package(types.ModuleType):
    """Importing the submodule simulator.validate would set the package attribute `validate` to that module,
    hiding the API function of that name; the attribute is left unset (the module stays importable: `from
    simulator.validate import compare`)."""

    def __setattr__(self, name, value):
        if name == "validate" and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
