"""Progress bars on long work (commands.progress_bar): a tqdm bar on standard error when it is a terminal, shown
once the work has lasted PROGRESS_DELAY_S (2 s), never on a pipe and never with -q. Each command runs in a
pseudo-terminal (pty) of 100 columns; the work is made long enough by a tiled dataset or, for `run` (whose
numba engine does 5,400 digits in ~0.1 s), by the plain-Python kernels (HWSIM_KERNELS=python)."""

import fcntl
import os
import pty
import struct
import subprocess
import sys
import termios
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
DIGITS = ROOT / "models/digits_test.npz"


@pytest.fixture(scope="module")
def digits_x10(tmp_path_factory):
    """The digits test set tiled 10 times: 5,400 samples."""
    data = np.load(DIGITS)
    path = tmp_path_factory.mktemp("progress") / "digits_x10.npz"
    np.savez(path, x=np.tile(data["x"], (10, 1, 1, 1)), y=np.tile(data["y"], 10))
    return path


def start(args, terminal=True, env=None):
    """`hwsim ARGS` with standard error on a pseudo-terminal (or a pipe); standard output on a pipe."""
    master = slave = None
    if terminal:
        master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # a new pty is 0x0
    proc = subprocess.Popen([sys.executable, "-m", "simulator.cli", *map(str, args)], cwd=ROOT,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=slave if terminal else subprocess.PIPE, env={**os.environ, **(env or {})})
    if terminal:
        os.close(slave)
    return proc, master


def finish(proc, master):
    """Exit status, standard output and standard error (the terminal's bytes) of a started command."""
    err = b""
    if master is not None:
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:   # EIO: the child closed the terminal
                break
            if not chunk:
                break
            err += chunk
        os.close(master)
    out, piped_err = proc.communicate(timeout=300)
    return proc.returncode, out.decode(), (piped_err or err).decode(errors="replace")


def test_run_bar_on_a_terminal_only(tmp_path):
    # the test set 4 times over in Python mode: several seconds of engine work on any machine, well past the
    # bar's delay (the test set once took 1.3 s on a fast one: no bar, the test failed)
    d = np.load(DIGITS)
    data = tmp_path / "digits_x4.npz"
    np.savez(data, x=np.tile(d["x"], (4, 1, 1, 1)), y=np.tile(d["y"], 4))
    run = ["run", "models/lenet_digits_u8.qnn", "--hw", "tsmc90", "--dataset", data, "--batch-size", "30"]
    slow = {"HWSIM_KERNELS": "python"}
    started = [start(run, env=slow), start(run, terminal=False, env=slow), start([*run, "-q"], env=slow)]
    (rc_tty, out_tty, err_tty), (rc_pipe, out_pipe, err_pipe), (rc_q, out_q, err_q) = [finish(*p) for p in started]
    assert rc_tty == rc_pipe == rc_q == 0, (err_tty, err_pipe, err_q)
    assert "running:" in err_tty and "/2160 [" in err_tty and "sample/s" in err_tty, err_tty
    assert err_tty.endswith("\r")                                  # the bar is cleared before the report
    assert err_pipe == ""                                          # a pipe (a log): nothing new
    assert out_q == "" and err_q == ""                             # -q: nothing at all, even on a terminal
    for out in (out_tty, out_pipe):
        assert "accuracy              98.70% (2160 labelled samples)" in out


def test_quantize_and_validate_bars(digits_x10):
    quantize = ["quantize", "models/lenet_digits_float.onnx", "--calib", digits_x10, "-o",
                digits_x10.with_name("q.qnn"), "--weights", "kmeans:4", "--acts", "enq:auto"]
    validate = ["validate", "models/lenet_digits_u8.qnn", "--dataset", digits_x10, "--batch-size", "100"]
    started = [start(quantize), start(validate)]
    (rc_quant, out_quant, err_quant), (rc_val, out_val, err_val) = [finish(*p) for p in started]
    assert rc_quant == rc_val == 0, (err_quant, err_val)
    assert "calibrating:" in err_quant and "step/s" in err_quant, err_quant   # calibration and enq:auto search
    assert "integer (hwsim engine)" in out_quant
    assert "validating:" in err_val and "/5400 [" in err_val, err_val
    assert "PASS" in out_val


def test_no_bar_for_short_work():
    """A run shorter than PROGRESS_DELAY_S prints nothing new on a terminal."""
    rc, out, err = finish(*start(["run", "models/lenet_digits_u8.qnn", "--hw", "tsmc90", "--dataset", DIGITS]))
    assert rc == 0 and "98.70%" in out
    assert "running" not in err and "sample/s" not in err, err
