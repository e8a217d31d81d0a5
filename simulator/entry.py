"""The `hwsim` console script. Ctrl-C (SIGINT) and SIGTERM are handled before anything else is imported: until
the command line takes over (simulator/interrupt.py), a signal prints one line and exits at once (nothing has
been written yet). Only os, signal and sys are imported here; Python's own start-up before this module runs
is outside hwsim's control."""

import os
import signal
import sys


def _early_exit(signum, frame):
    terminated = signum == signal.SIGTERM
    try:
        os.write(2, b"hwsim: terminated\n" if terminated else b"hwsim: interrupted\n")
    finally:
        os._exit(143 if terminated else 130)


def _occupy_closed_std_fds():
    """A closed standard stream (`>&-`) gets /dev/null, so no file opened later takes its descriptor number
    (sys.stdout stays None: '-' outputs are refused)."""
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            new = os.open(os.devnull, os.O_RDWR)
            if new != fd:
                os.dup2(new, fd)
                os.close(new)


signal.signal(signal.SIGINT, _early_exit)
signal.signal(signal.SIGTERM, _early_exit)


def main() -> int:
    _occupy_closed_std_fds()
    from simulator.cli import entry  # installs simulator.interrupt's handlers first thing

    return entry()


if __name__ == "__main__":
    sys.exit(main())
