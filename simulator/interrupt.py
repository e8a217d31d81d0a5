"""Ctrl-C (SIGINT) and SIGTERM for the command line: one line `hwsim: interrupted`, exit status 130, nothing
half done.

The `hwsim` command (simulator/entry.py, then cli.entry; `python -m simulator.cli`) calls :func:`install` first
thing. From then on:

- Start-up (module imports, before the command's guard): nothing has been written, so the handler prints the
  line and ends the process at once (no KeyboardInterrupt travelling through the import machinery).
- Inside :func:`guarded` (the command): the handler records the interrupt and raises KeyboardInterrupt where
  the program is, so every ``finally`` / ``with`` runs: staged outputs are discarded, temporary files
  removed. cli prints the line and returns 130.
- Except where a KeyboardInterrupt would do harm, where the interrupt is only recorded and delivered as soon
  as the program has left that place (a timer re-checks every RETRY_S):
    * llvmlite's object-cache ctypes callbacks (WAIT_MODULES), run while numba compiles: a KeyboardInterrupt
      raised there is printed as "Exception ignored ... ctypes callback" and then lost (the run went on and
      exited 0), and the compiled object it was handing over goes missing;
    * numba's cache (loading, saving): saving writes index and data through temporary files that a
      KeyboardInterrupt would leave behind (numba's clean-up catches only Exception);
    * module imports (importlib): numpy turns a KeyboardInterrupt inside its C extensions' import into an
      ImportError (a traceback, exit 1);
    * the output functions listed in CRITICAL (committing staged outputs renames them all or none; a
      temporary file just created is registered for cleanup before the interrupt lands), and any code
      inside :func:`critical`. Once the commit has renamed the files the command has finished: an interrupt
      that waited for the renames or for the report printed after them is too late and ignored (status 0,
      every output written), and a second one while that report blocks undoes the renames before exiting. So exit status
      130 means that none of the command's outputs was written (but a sweep's rows, appended as they are
      computed so that the sweep can resume).
- A recorded interrupt is also raised by :func:`check`, which the engine calls between layers, and one lost
  anyway (an "unraisable" KeyboardInterrupt, e.g. in a ``__del__``) is silenced and delivered again.
- A second Ctrl-C while the first is being handled is ignored: the line is printed once, never a traceback.
  Except while standard output is written (:func:`stdout_write`: the write may block on a slow reader): the
  first Ctrl-C waits until the text is out whole, a second one removes the staged files and exits at once.
- SIGTERM is handled the same way, with the line `hwsim: terminated` and exit status 143.

Nothing here acts unless :func:`install` was called: library users and the tests keep Python's behaviour.
"""
from __future__ import annotations

import contextlib
import os
import signal
import sys

LINE = "hwsim: interrupted"
EXIT_STATUS = 130
TERM_LINE = "hwsim: terminated"
TERM_STATUS = 143
RETRY_S = 0.02

# (module, function) pairs during which an interrupt waits (see the module docstring)
CRITICAL = {
    ("simulator.fileio", "commit"),
    ("simulator.fileio", "discard"),
    ("simulator.fileio", "_stage"),
    ("simulator.fileio", "_create_temp"),
    ("simulator.fileio", "_unlink_quietly"),
    ("simulator.fileio", "atomic_write_bytes"),
}
# modules during which an interrupt waits: numba's cache (it saves index and data through temporary files that
# a KeyboardInterrupt would leave behind), llvmlite's object-cache ctypes callbacks (they ignore exceptions) and
# the import machinery (a KeyboardInterrupt inside a C extension's import, numpy's, becomes an ImportError)
WAIT_MODULES = ("numba.core.caching", "llvmlite.binding.executionengine", "importlib._bootstrap",
                "importlib._bootstrap_external")

_OFF, _STARTUP, _GUARDED, _DONE = range(4)
_phase = _OFF
_pending = False     # an interrupt arrived
_delivered = False   # ... and was raised as KeyboardInterrupt
_signum = None       # the signal of the interrupt (SIGINT or SIGTERM; the first one counts)
_force_exit = None   # while standard output is written: clean-up before exiting at a second interrupt
_critical_depth = 0
_previous_unraisablehook = None


def install() -> None:
    """Take over SIGINT for the command line (start-up phase: an interrupt exits at once)."""
    global _phase, _previous_unraisablehook
    if _phase != _OFF:
        return
    try:
        signal.signal(signal.SIGINT, _on_signal)
        signal.signal(signal.SIGTERM, _on_signal)
        signal.signal(signal.SIGALRM, _on_signal)
    except ValueError:  # not the main thread: leave Python's handling alone
        return
    _phase = _STARTUP
    _previous_unraisablehook = sys.unraisablehook
    sys.unraisablehook = _unraisable


@contextlib.contextmanager
def guarded():
    """The command proper: an interrupt raises KeyboardInterrupt (at a safe point); on leaving, interrupts
    are ignored (the command has finished; its status stands)."""
    global _phase
    if _phase == _OFF:
        yield
        return
    _phase = _GUARDED
    try:
        yield
    finally:
        finish()


def finish() -> None:
    """The command has finished (or reported its interruption): later interrupts are ignored."""
    global _phase
    if _phase == _OFF:
        return
    _phase = _DONE
    with contextlib.suppress(ValueError, OSError):
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGALRM, signal.SIG_IGN)


def pending() -> bool:
    """True once an interrupt has arrived (whether or not it was raised yet)."""
    return _pending


def check() -> None:
    """Raise KeyboardInterrupt if an interrupt has arrived and not been acted on: call it at safe points."""
    global _delivered
    if _pending and _phase == _GUARDED:
        _delivered = True
        raise KeyboardInterrupt


@contextlib.contextmanager
def critical():
    """A block that an interrupt must not cut in two: the interrupt is raised when the block ends."""
    global _critical_depth
    _critical_depth += 1
    try:
        yield
    finally:
        _critical_depth -= 1
    if _critical_depth == 0 and _pending and not _delivered:
        check()


@contextlib.contextmanager
def stdout_write(cleanup):
    """Standard output being written (part of a critical section): an interrupt waits until the text is out,
    but a second one calls `cleanup()` and exits at once (a reader that never reads must not hang hwsim)."""
    global _force_exit
    _force_exit = cleanup
    try:
        yield
    finally:
        _force_exit = None


def _line_and_status(signum):
    return (TERM_LINE, TERM_STATUS) if signum == signal.SIGTERM else (LINE, EXIT_STATUS)


def report(stream=None) -> int:
    """Print the one line (once per process) and return the exit status; later interrupts are ignored."""
    global _reported
    line, status = _line_and_status(_signum)
    if _phase == _OFF or not _reported:  # (not installed: in-process callers, every time)
        _reported = _phase != _OFF
        print(line, file=sys.stderr if stream is None else stream, flush=True)
    finish()
    return status


_reported = False


# ------------------------------------------------------------------------------------------------ internals

def _on_signal(signum, frame):
    """SIGINT or SIGTERM, and SIGALRM: the timer that retries a waiting interrupt."""
    global _pending, _delivered, _signum
    stop = signum in (signal.SIGINT, signal.SIGTERM)
    if _phase == _STARTUP:
        if not stop:
            return
        _exit_now(signum)  # nothing written yet; no traceback through half-imported modules
    if _phase != _GUARDED or _delivered:
        return  # finished, or a second Ctrl-C while the first one unwinds
    if stop:
        if _pending and _force_exit is not None:  # a second one while standard output blocks
            with contextlib.suppress(Exception):
                _force_exit()
            _exit_now(_signum)
        _pending = True
        _signum = _signum or signum
    elif not _pending:
        return
    if _critical_depth or _must_wait(frame):
        signal.setitimer(signal.ITIMER_REAL, RETRY_S)
        return
    _delivered = True
    raise KeyboardInterrupt


def _exit_now(signum):
    line, status = _line_and_status(signum)
    with contextlib.suppress(OSError):
        os.write(2, (line + "\n").encode())
    os._exit(status)


def _must_wait(frame) -> bool:
    while frame is not None:
        name = frame.f_globals.get("__name__", "")
        if name in WAIT_MODULES or (name, frame.f_code.co_name) in CRITICAL:
            return True
        frame = frame.f_back
    return False


def _unraisable(unraisable):
    """A KeyboardInterrupt that could not propagate (raised in a ctypes callback, a __del__, ...): silenced,
    and delivered again at the next safe point."""
    global _delivered
    if unraisable.exc_type is not None and issubclass(unraisable.exc_type, KeyboardInterrupt) and _phase != _OFF:
        if _phase == _GUARDED and _pending:
            _delivered = False
            with contextlib.suppress(ValueError, OSError):
                signal.setitimer(signal.ITIMER_REAL, RETRY_S)
        return
    (_previous_unraisablehook or sys.__unraisablehook__)(unraisable)
