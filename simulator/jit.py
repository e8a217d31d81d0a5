"""numba on demand: the kernels are numba functions, compiled (or loaded from numba's cache) at their first call,
or run as the Python they are written in, whichever a process asks for before its first kernel call.

Why: importing numba and loading a dozen cached kernels costs ~1.2 s, far more than a small run (a few images
of a small model) takes as plain Python and numpy. The command line therefore picks Python for small runs
(`prefer_python`); everything else, and the library by default, takes numba. Both modes give the same bits
(tests/test_nojit.py runs every kernel both ways); only the speed differs. NUMBA_DISABLE_JIT=1, numba's own
switch, selects Python mode for the whole process.

Tiers within numba mode: a one-run command plans its run on a warm-up sample (`planning`). A kernel with a
numpy twin whose whole run's work stays small (TWIN_WORK), and which is not in numba's cache yet, runs as its
twin for the process instead of being compiled: compiling one costs ~0.5-2 s, its twin a few ms on such work.
Every other kernel is compiled (or loaded) as before. The twins give the same bits (tests/test_kernel_twins.py).

`njit` returns a `Kernel`: a stand-in that forwards each call to the chosen implementation. On the first call
in numba mode the kernels of its group are built at once and each stand-in is replaced, in the globals of
hwsim's modules, by its numba dispatcher, so numba code calling another kernel sees a dispatcher, as numba
requires. Groups: the engine's kernels, and the cost model's (hw/access.py), which may stay Python in a numba
process until their work justifies compiling them (`set_group_mode`).
"""
from __future__ import annotations

import os
import sys
import threading
from contextlib import contextmanager

PYTHON, NUMBA = "python", "numba"
_mode = PYTHON if os.environ.get("NUMBA_DISABLE_JIT", "0").strip() not in ("", "0") else None
_kernels: list = []
_before_numba: list = []   # callables run once, just before numba is first imported
_building = threading.RLock()   # kernels first called on several threads at once are built once


def prefer_python(python: bool) -> str:
    """Ask for Python mode (True) or numba (False). Only the first choice counts, and only before the first
    kernel call; NUMBA_DISABLE_JIT=1 always means Python. Returns the mode in force."""
    global _mode
    if _mode is None:
        with _building:
            if _mode is None:
                _mode = PYTHON if python else NUMBA
    return _mode


def undecided() -> bool:
    """Whether no kernel mode was chosen yet in this process (its first run is about to start)."""
    return _mode is None


def mode() -> str:
    """The mode in force, fixing it (numba unless chosen otherwise) if no one chose yet."""
    return prefer_python(False)


def before_numba(hook) -> None:
    """Run `hook()` just before this process first imports numba (at once if it already did)."""
    if "numba" in sys.modules:
        hook()
    else:
        _before_numba.append(hook)


def import_numba():
    """The numba module, imported after the registered hooks."""
    if "numba" not in sys.modules:
        while _before_numba:
            _before_numba.pop(0)()
    import numba
    return numba


class Kernel:
    """A kernel before its mode is known. `python`: a replacement for Python mode (an intrinsic cannot run as
    Python; numpy twins avoid numpy's scalar overflow warnings); `build`: makes the numba object itself (for
    an intrinsic) instead of numba.njit(**options)(py_func); `group`: kernels that share a mode (the cost
    model's may stay Python while the engine's run numba: see `set_group_mode`)."""

    def __init__(self, py_func, options: dict, python=None, build=None, group: str = "engine"):
        self.py_func, self.options, self.python, self.build, self.group = py_func, options, python, build, group
        self.target = None
        self.tier = None         # NUMBA or PYTHON once a planned process chose it; see `tiered`
        self.planned_work = 0    # the run's work the plan gave the twin so far
        self.__name__, self.__qualname__ = py_func.__name__, py_func.__qualname__
        self.__module__, self.__doc__ = py_func.__module__, py_func.__doc__
        _kernels.append(self)

    def __call__(self, *args):
        if self.target is None:
            _resolve(self.group, group_mode(self.group))
        return self.target(*args)

    def cache_index_path(self) -> str:
        """Where numba's cache keeps this kernel's index (imports numba; compiles nothing)."""
        options = {k: v for k, v in self.options.items() if k != "signature_or_function"}
        return import_numba().njit(**options)(self.py_func)._cache._cache_file._index_path


def njit(*args, python=None, build=None, group: str = "engine", **options):
    """numba.njit's decorator forms (@njit, @njit(...), @njit("signature", ...)), deferred; see `Kernel`."""
    if len(args) == 1 and callable(args[0]) and not options:
        return Kernel(args[0], {})
    if args:
        options["signature_or_function"] = args[0]
    return lambda func: Kernel(func, options, python, build, group)


_group_modes: dict = {}


def group_mode(group: str) -> str:
    """The mode of a group of kernels: its own if set (set_group_mode), else the process's."""
    return _group_modes.get(group) or mode()


def set_group_mode(group: str, wanted: str) -> str:
    """Run a group's kernels in Python or numba mode (never numba under NUMBA_DISABLE_JIT=1). A group may move
    from Python to numba at any time between calls (its kernels are then built and bound); returns the mode."""
    if mode() == PYTHON:
        wanted = PYTHON
    with _building:
        if _group_modes.get(group) != wanted:
            _group_modes[group] = wanted
            if wanted == NUMBA:
                _resolve(group, NUMBA, rebuild=True)
    return wanted


def _resolve(group: str, wanted: str, rebuild: bool = False):
    """Give the group's kernels their targets (rebuild: also those that ran as Python until now)."""
    with _building:
        kernels = [k for k in _kernels if k.group == group and (k.target is None or rebuild)]
        if wanted == PYTHON:
            for k in kernels:
                k.target = k.python or k.py_func
        else:
            _build_and_bind(import_numba(), kernels)


# Work (elements a call touches, as `threads.split` counts it) a kernel's numpy twin may take over a planned run
# instead of the kernel being compiled: ~80 ms of numpy at the twins' measured rate (~20-40 ns an element: a
# few passes over it, against ~1 ns compiled), against ~0.5-2 s to compile a kernel.
TWIN_WORK = 1 << 21
_twins: dict = {}      # id(numba dispatcher) -> its Kernel, for kernels with a numpy twin
_plan_scale = None     # the factor from a call's work to the run's: None without a plan (numba for all)


@contextmanager
def planning(scale: float):
    """Plan the kernels' tiers on a warm-up run whose work, times `scale`, is the whole run's (see `tiered`).
    After it, each kernel the warm-up gave its twin stays a twin for the process, and a kernel the warm-up did
    not call (a variant chosen by the batch size) counts the run's own work."""
    global _plan_scale
    _plan_scale = float(scale)
    try:
        yield
    finally:
        _plan_scale = 1.0
        for k in _twins.values():
            if k.tier is None and k.planned_work:
                k.tier = PYTHON


def tiered(kernel, work: int):
    """(the function to call, whether it is a Python twin) for `kernel` (a numba dispatcher, or anything)
    about to do `work`. In a planned process: the twin while the run's projected work for it stays within
    TWIN_WORK and numba's cache does not hold it; otherwise the kernel, for the rest of the process."""
    if _plan_scale is None:   # no plan in this process (the library): every kernel compiled, at no cost here
        return kernel, False
    if isinstance(kernel, Kernel):   # a stand-in not yet replaced where the caller found it (the first call)
        if kernel.target is None:
            _resolve(kernel.group, group_mode(kernel.group))
        kernel = kernel.target
    k = _twins.get(id(kernel))
    if k is None or k.tier == NUMBA:
        return kernel, False
    if k.tier == PYTHON:
        return k.python, True
    projected = k.planned_work + work * _plan_scale
    if projected > TWIN_WORK or kernel.signatures or _in_cache(kernel):
        k.tier = NUMBA
        return kernel, False
    k.planned_work = projected
    return k.python, True


# Work a parallel launcher (threads.launcher) must expect over a planned run before it is compiled: compiling
# one costs ~0.3-0.5 s once (numba's cache keeps it), two threads save half of ~1 ns an element.
LAUNCH_WORK = 1 << 30
_launch_work: dict = {}   # id(launcher) -> the planned run's work projected for it so far (True: launch)


def worth_launching(launcher, work: int) -> bool:
    """Whether a parallel launcher should run `work` (else `threads.split` uses its worker threads): always
    without a plan (the library) or once compiled or cached; in a planned one-run command, once the run's
    projected work for it repays compiling it."""
    if _plan_scale is None:
        return True
    if isinstance(launcher, Kernel):   # (keyed on its dispatcher: callers pass either)
        if launcher.target is None:
            _resolve(launcher.group, group_mode(launcher.group))
        launcher = launcher.target
    key = id(launcher)
    projected = _launch_work.get(key, 0)
    if projected is True:
        return True
    projected += work * _plan_scale
    if projected > LAUNCH_WORK or launcher.signatures or _in_cache(launcher):
        projected = True
    _launch_work[key] = projected
    return projected is True


def _in_cache(dispatcher) -> bool:
    """Whether numba's on-disk cache holds some compilation of the kernel (loading it costs little); any
    surprise in numba's internals counts as cached (the kernel is then used as before)."""
    try:
        return os.path.exists(dispatcher._cache._cache_file._index_path)
    except Exception:
        return True


def on_first_compile(callback) -> None:
    """Call `callback()` once, when numba starts compiling something in this process (not when it loads a
    kernel from its cache). Numba mode only: importing numba here would defeat Python mode."""
    import_numba()
    from numba.core import event

    class _Once(event.Listener):   # stays registered (removing it while numba loops over listeners could skip one)
        done = False

        def on_start(self, _event):
            if not self.done:
                self.done = True
                callback()

        def on_end(self, _event):
            pass

    event.register("numba:compile", _Once())


def prange(*args):
    """numba.prange in hwsim's modules once numba is loaded (_build_and_bind puts it in place of this stand-in
    in their globals, where the parallel launchers find it); range in Python mode."""
    return range(*args)


def _build_and_bind(numba, kernels):
    """Build the kernels' numba objects and put each in place of its stand-in wherever hwsim's modules bind it
    (and numba.prange in place of `prange`)."""
    built = {}
    for k in kernels:
        if k.build is not None:
            k.target = k.build()
        elif not _is_dispatcher(k.target):
            options = dict(k.options)
            signature = options.pop("signature_or_function", None)
            decorate = numba.njit(signature, **options) if signature else numba.njit(**options)
            k.target = decorate(k.py_func)
            if k.python is not None:
                _twins[id(k.target)] = k
        built[id(k)] = k.target
    for name, module in list(sys.modules.items()):
        if module is None or not (name == "simulator" or name.startswith("simulator.")):
            continue
        namespace = vars(module)
        for attr, value in list(namespace.items()):
            if isinstance(value, Kernel) and id(value) in built:
                namespace[attr] = built[id(value)]
            elif value is prange and name != __name__:   # (this module keeps its stand-in)
                namespace[attr] = numba.prange


def _is_dispatcher(target) -> bool:
    return target is not None and hasattr(target, "py_func") and not isinstance(target, Kernel)


def cpu_features() -> frozenset:
    """The host's SIMD features in LLVM's names ("+avx2", "+avx512bw", "+avx512vnni"), as numba compiles for
    them (it honours NUMBA_CPU_FEATURES): read from /proc/cpuinfo where there is one, so that Python mode
    needs no numba; elsewhere from numba."""
    forced = os.environ.get("NUMBA_CPU_FEATURES")
    if forced:
        return frozenset(f.strip() for f in forced.split(",") if f.strip().startswith("+"))
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset("+" + flag.replace("_", "") for flag in line.split(":", 1)[1].split())
    except OSError:
        pass
    import_numba()
    from numba.core.codegen import get_host_cpu_features
    return frozenset(f for f in get_host_cpu_features().split(",") if f.startswith("+"))
