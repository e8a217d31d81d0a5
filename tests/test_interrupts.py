"""Ctrl-C at any moment: `hwsim: interrupted` on one line, exit status 130, no traceback, no output left behind,
and a numba cache that works on the next run (simulator/interrupt.py).

The command runs as `python -X importtime -m simulator.cli ...`: the import-time lines on standard error tell
the test where start-up is (they are left out when the rest of standard error is compared). Each case sends
SIGINT at a point (a module just imported, then a delay) and accepts two endings: interrupted (130, the one
line, no outputs, no temporary files) or finished before the signal (0); every phase must see at least one
interruption (the delay shrinks until it does).
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / "models"
LINE = "hwsim: interrupted"
TERM_LINE = "hwsim: terminated"
ENDINGS = {signal.SIGINT: (LINE, 130), signal.SIGTERM: (TERM_LINE, 143)}
CLI = ["-m", "simulator.cli"]
SCRIPT = ["-c", "import sys; from simulator.entry import main; sys.exit(main())"]  # as the console script
HANG_S = 120   # longer than any command here takes (a first run compiles the kernels): a hang, killed

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")


def _run_and_interrupt(args, trigger, delay, env=None, cwd=None, sig=signal.SIGINT, launcher=CLI):
    """Start the command, wait for `trigger` (a module whose import just finished; None: from the start),
    sleep `delay`, send `sig`; return (exit status, standard error without the import-time lines)."""
    cmd = [sys.executable, "-X", "importtime", *launcher, *map(str, args)]
    # numba mode even for small runs (simulator/jit.py): the phases under test include numba's import and cache
    env = {**(os.environ if env is None else env), "HWSIM_KERNELS": "numba"}
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    lines = []
    # a command that hangs must fail the test, not hang it: reading its standard error would wait for ever
    watchdog = threading.Timer(HANG_S, proc.kill)
    watchdog.start()
    try:
        if trigger is not None:
            pattern = re.compile(rf"\|\s+{re.escape(trigger)}(\.\S+)?$")
            for line in proc.stderr:
                lines.append(line)
                if pattern.search(line.rstrip("\n")):
                    break
        time.sleep(delay)
        if proc.poll() is None:
            proc.send_signal(sig)
        lines += proc.stderr.readlines()
        status = proc.wait(timeout=HANG_S)
    finally:
        watchdog.cancel()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    # the first-run note ("hwsim: compiling the numba kernels ...") is information, not part of the ending
    return status, [ln.rstrip("\n") for ln in lines
                    if not ln.startswith("import time:") and not ln.startswith("hwsim: compiling the numba kernels")]


def _temporaries(directory: Path):
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".tmp") or ".tmp." in p.name)


def _check_ending(status, err, outputs, directory, sig=signal.SIGINT):
    """'interrupted' or 'finished'; anything else fails the test."""
    if status == 0:
        assert err == [], err
        return "finished"
    line, expected = ENDINGS[sig]
    assert status == expected, f"exit status {status}, stderr:\n" + "\n".join(err[-30:])
    assert err == [line]
    assert [p.name for p in outputs if p.exists()] == []
    assert _temporaries(directory) == []
    return "interrupted"


def _interrupt_at(args, points, outputs, directory, env=None, sig=signal.SIGINT, launcher=CLI):
    """Send `sig` at each (trigger, delay); halve a delay that let the command finish (up to 3 times)."""
    endings = []
    for trigger, delay in points:
        for _ in range(4):
            status, err = _run_and_interrupt(args, trigger, delay, env=env, cwd=directory, sig=sig, launcher=launcher)
            ending = _check_ending(status, err, outputs, directory, sig)
            if ending == "interrupted":
                break
            for p in outputs:
                p.unlink(missing_ok=True)
            delay /= 2
        endings.append(ending)
    assert "interrupted" in endings
    return endings


@pytest.fixture(scope="module")
def big_dataset(tmp_path_factory):
    d = np.load(MODELS / "digits_test.npz")
    path = tmp_path_factory.mktemp("data") / "digits_x10.npz"
    np.savez(path, x=np.tile(d["x"], (10, 1, 1, 1)), y=np.tile(d["y"], 10))
    return path


def test_interrupt_during_start_up_and_imports(tmp_path):
    out = tmp_path / "y.npy"
    args = ["run", MODELS / "lenet_digits_u8.qnn", "--hw", "tsmc90", "--output", out]
    # argparse: just after the handler went in (start-up: exit at once); numpy / numba: heavy imports inside
    # the command's guard; simulator.commands: the imports are done, the command starts
    _interrupt_at(args, [("argparse", 0.0), ("numpy", 0.0), ("numba", 0.0), ("simulator.commands", 0.0)],
                  [out], tmp_path)


def test_interrupt_during_the_first_numba_compile_keeps_the_cache_usable(tmp_path):
    cache = tmp_path / "numba_cache"
    env = dict(os.environ, NUMBA_CACHE_DIR=str(cache))
    work = tmp_path / "work"
    work.mkdir()
    out, report = work / "y.npy", work / "r.json"
    args = ["run", MODELS / "lenet_digits_u8.qnn", "--hw", "tsmc90", "--output", out, "--json", report]
    # a fresh cache: the first kernels compile for seconds after the imports; several interruptions, each
    # at another point of the compile, the cache filling up in between
    endings = _interrupt_at(args, [("simulator.commands", 0.5), ("simulator.commands", 2.0),
                                   ("simulator.commands", 4.0)], [out, report], work, env=env)
    assert endings[0] == "interrupted"
    if cache.exists():
        leftovers = [p for p in cache.rglob("*") if ".tmp" in p.name]
        assert leftovers == []
    # the next run works with that cache and computes what a run with the shared cache computes
    done = subprocess.run([sys.executable, "-m", "simulator.cli", *map(str, args)], cwd=work, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    # nothing on stderr but, if the interrupted compiles left kernels to build, the first-run note
    assert done.stderr in ("", "hwsim: compiling the numba kernels for this CPU (first run after install only; "
                               "cached afterwards)\n"), done.stderr
    reference = tmp_path / "reference.npy"
    ref = subprocess.run([sys.executable, "-m", "simulator.cli", "run", MODELS / "lenet_digits_u8.qnn", "--hw",
                          "tsmc90", "--output", reference], cwd=work, capture_output=True, text=True, timeout=300)
    assert ref.returncode == 0, ref.stderr[-3000:]
    a, b = np.load(out), np.load(reference)
    assert a.dtype == b.dtype and np.array_equal(a, b)


def test_interrupt_during_a_run_leaves_no_outputs(tmp_path, big_dataset):
    out, report, csv = tmp_path / "y.npy", tmp_path / "r.json", tmp_path / "layers.csv"
    args = ["run", MODELS / "lenet_digits_u8.qnn", "--hw", "tsmc90", "--dataset", big_dataset, "--batch-size", "8",
            "--output", out, "--json", report, "--csv", csv]
    _interrupt_at(args, [("simulator.commands", 0.3), ("simulator.commands", 1.0)], [out, report, csv], tmp_path)


def test_interrupt_during_quantize_leaves_no_outputs(tmp_path):
    pytest.importorskip("onnx")
    qnn, report = tmp_path / "q.qnn", tmp_path / "q.json"
    args = ["quantize", MODELS / "lenet_digits_float.onnx", "--calib", MODELS / "digits_test.npz", "-o", qnn,
            "--json", report]
    _interrupt_at(args, [("simulator.commands", 0.1), ("simulator.commands", 0.6)], [qnn, report], tmp_path)


def _child(code: str, *args, timeout=60):
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code), *map(str, args)], capture_output=True,
                          text=True, timeout=timeout)


def test_interrupt_while_committing_outputs_is_too_late(tmp_path):
    """SIGINT between two renames of the commit: the commit completes and the command has finished (status 0,
    both files): exit status 130 only ever means that no output was written."""
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    proc = _child("""
        import os, signal, sys
        from simulator import fileio, interrupt

        interrupt.install()
        real_replace = os.replace

        def replace(src, dst):
            os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C during the commit
            real_replace(src, dst)

        try:
            with interrupt.guarded():
                outputs = fileio.Outputs()
                with outputs:
                    outputs.text(sys.argv[1], "a")
                    outputs.text(sys.argv[2], "b")
                    os.replace = replace
                os.replace = real_replace
                interrupt.check()
            sys.exit(0)
        except KeyboardInterrupt:
            sys.exit(interrupt.report())
    """, a, b)
    assert (proc.returncode, proc.stderr) == (0, "")
    assert a.read_text() == "a" and b.read_text() == "b"
    assert _temporaries(tmp_path) == []


def test_interrupt_swallowed_by_an_unraisable_context_is_delivered_again():
    """A KeyboardInterrupt that lands where Python ignores exceptions (a __del__, a ctypes callback) is not
    printed as 'Exception ignored ...' and still ends the command with 130."""
    proc = _child("""
        import gc, os, signal, sys, time
        from simulator import interrupt

        class Finalized:
            def __del__(self):
                os.kill(os.getpid(), signal.SIGINT)
                for _ in range(1000):  # the handler runs here: the exception cannot leave __del__
                    pass

        interrupt.install()
        try:
            with interrupt.guarded():
                Finalized()
                gc.collect()
                deadline = time.monotonic() + 5
                while time.monotonic() < deadline:  # delivered again by the retry timer
                    sum(range(100))
            sys.exit(0)
        except KeyboardInterrupt:
            sys.exit(interrupt.report())
    """)
    assert (proc.returncode, proc.stderr) == (130, LINE + "\n")


@pytest.mark.parametrize("module", ["numba.core.caching", "llvmlite.binding.executionengine"])
def test_interrupt_waits_while_llvmlite_callbacks_or_numba_cache_run(module):
    """Inside the modules of WAIT_MODULES (llvmlite's ctypes callbacks, numba's cache) the interrupt is only
    recorded; it is raised right after, and a second Ctrl-C meanwhile changes nothing."""
    from simulator import interrupt
    assert module in interrupt.WAIT_MODULES
    proc = _child("""
        import os, signal, sys, time
        from simulator import interrupt

        def callback():  # runs as if it were a function of that module
            os.kill(os.getpid(), signal.SIGINT)
            os.kill(os.getpid(), signal.SIGINT)
            deadline = time.monotonic() + 0.3
            while time.monotonic() < deadline:
                pass
            done.append(True)

        done = []
        space = {"__name__": sys.argv[1], "os": os, "signal": signal, "time": time, "done": done}
        callback = type(callback)(callback.__code__, space)
        interrupt.install()
        try:
            with interrupt.guarded():
                callback()
                assert interrupt.pending()
                time.sleep(1)
                print("not delivered")
        except KeyboardInterrupt:
            print("delivered after the callback" if done else "raised inside the callback")
    """, module)
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "delivered after the callback\n", "")


def test_nothing_changes_without_install():
    """Library users and in-process callers keep Python's own Ctrl-C."""
    proc = _child("""
        import os, signal
        if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:   # a background launch: Python's own handler back
            signal.signal(signal.SIGINT, signal.default_int_handler)
        from simulator import interrupt
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
        interrupt.check()
        with interrupt.guarded():
            pass
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
        try:
            os.kill(os.getpid(), signal.SIGINT)
            for _ in range(10000):
                pass
        except KeyboardInterrupt:
            print("raised")
    """)
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "raised\n", "")


def test_the_hwsim_script_is_the_early_entry():
    """The console script is simulator/entry.py: its signal handlers go in before anything but os, signal and
    sys is imported, then cli.entry (Ctrl-C handled from start-up to exit) takes over."""
    text = (ROOT / "pyproject.toml").read_text()
    assert re.search(r'^hwsim = "simulator\.entry:main"$', text, re.M)
    proc = subprocess.run([sys.executable, "-X", "importtime", "-c", "import simulator.entry"],
                          capture_output=True, text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    names = [line.rsplit("|", 1)[1].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")]
    imported = names[names.index("simulator") + 1:names.index("simulator.entry")]
    assert set(imported) <= {"signal"}, imported


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_while_the_console_script_imports_the_cli(tmp_path, sig):
    """A signal just after the console script's module is imported (simulator.cli, argparse still loading):
    the one line, no traceback."""
    out = tmp_path / "y.npy"
    args = ["run", MODELS / "lenet_digits_u8.qnn", "--hw", "tsmc90", "--output", out]
    endings = _interrupt_at(args, [("simulator.entry", 0.0), ("simulator.entry", 0.005), ("simulator.entry", 0.02),
                                   ("argparse", 0.0), ("simulator.commands", 0.0)], [out], tmp_path, sig=sig,
                            launcher=SCRIPT)
    assert endings[:3] == ["interrupted"] * 3


def test_sigterm_during_a_run_leaves_no_outputs(tmp_path, big_dataset):
    """SIGTERM is handled like Ctrl-C: staged outputs removed, one line `hwsim: terminated`, exit 143."""
    out, report, csv = tmp_path / "y.npy", tmp_path / "r.json", tmp_path / "layers.csv"
    args = ["run", MODELS / "lenet_digits_u8.qnn", "--hw", "tsmc90", "--dataset", big_dataset, "--batch-size", "8",
            "--output", out, "--json", report, "--csv", csv]
    _interrupt_at(args, [("numpy", 0.0), ("simulator.commands", 0.3), ("simulator.commands", 1.0)],
                  [out, report, csv], tmp_path, sig=signal.SIGTERM)


def _blocked_on_stdout(proc, timeout=60):
    """Wait until `proc` blocks writing to its standard output pipe (Linux: /proc/PID/wchan)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read()
        with open(f"/proc/{proc.pid}/wchan") as f:
            if "pipe_write" in f.read():
                return
        time.sleep(0.05)
    raise AssertionError("never blocked on standard output")


@pytest.mark.skipif(not os.path.exists(f"/proc/{os.getpid()}/wchan"), reason="needs Linux /proc")
@pytest.mark.parametrize("second", [False, True])
def test_interrupt_while_standard_output_blocks(tmp_path, second):
    """`--json -` into a pipe nobody reads yet (more than the pipe buffer). One Ctrl-C waits until the JSON is
    out whole, then the command reports the interruption (one line at the end) and writes no file; a second
    one exits at once: exit 130, only the line on standard error. No file output, no temporary left."""
    csv = tmp_path / "r.csv"
    topo = MODELS / "topologies" / "resnet18.csv"
    r, w = os.pipe()
    proc = subprocess.Popen([sys.executable, "-m", "simulator.cli", "compare", str(topo), "--hw", "tsmc90", "--hw",
                             "generic45", "--hw", "tpu_like", "--json", "-", "--csv", str(csv)],
                            stdout=w, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    os.close(w)
    try:
        _blocked_on_stdout(proc)
        proc.send_signal(signal.SIGINT)
        time.sleep(0.3)
        assert proc.poll() is None  # still writing: the JSON is not cut
        if second:
            proc.send_signal(signal.SIGINT)
            assert proc.wait(timeout=10) == 130
        with os.fdopen(r, "rb") as reader:
            data = reader.read()
        err = proc.stderr.read()
        assert proc.wait(timeout=60) == 130
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if second:
        assert err == LINE + "\n"
        assert list(tmp_path.iterdir()) == []
    else:
        assert json.loads(data)["designs"]
        lines = err.splitlines()
        assert lines[-1] == LINE and lines.count(LINE) == 1 and "Traceback" not in err
        assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(sys.platform != "linux", reason="needs Linux pipes (F_SETPIPE_SZ) and /proc")
@pytest.mark.parametrize("second", [False, True])
def test_interrupt_while_the_report_blocks(tmp_path, second):
    """The printed report (after the files are renamed) into a one-page pipe nobody reads yet. One Ctrl-C is
    too late: the command has finished (status 0, the report whole, the file written); a second one while the
    report still blocks undoes the renames and exits at once (130, the line, no file, no temporary)."""
    import fcntl
    csv = tmp_path / "r.csv"
    r, w = os.pipe()
    fcntl.fcntl(w, fcntl.F_SETPIPE_SZ, 4096)
    proc = subprocess.Popen([sys.executable, "-m", "simulator.cli", "run", str(MODELS / "lenet_digits_u8.qnn"),
                             "--hw", "tsmc90", "--csv", str(csv)],  # a report of ~7 kB
                            stdout=w, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    os.close(w)
    try:
        _blocked_on_stdout(proc)
        assert csv.exists()  # the report comes after the renames
        proc.send_signal(signal.SIGINT)
        time.sleep(0.3)
        assert proc.poll() is None  # the report is not cut
        if second:
            proc.send_signal(signal.SIGINT)
            assert proc.wait(timeout=10) == 130
        with os.fdopen(r, "rb") as reader:
            data = reader.read()
        err = proc.stderr.read()
        status = proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if second:
        assert (status, err) == (130, LINE + "\n")
        assert list(tmp_path.iterdir()) == []
    else:
        assert (status, err) == (0, "")
        assert len(data) > 4096 and data.decode().rstrip().splitlines()[-1].strip()
        assert sorted(p.name for p in tmp_path.iterdir()) == ["r.csv"]


def test_interrupt_waits_until_an_import_is_done(tmp_path):
    """A Ctrl-C during an import (numpy's C extensions turn a KeyboardInterrupt into an ImportError) is raised
    once the import is done."""
    (tmp_path / "slow_module.py").write_text(textwrap.dedent("""
        import os, signal, time
        os.kill(os.getpid(), signal.SIGINT)
        end = time.monotonic() + 0.3
        while time.monotonic() < end:
            pass
        DONE = True
    """))
    proc = _child("""
        import sys, time
        sys.path.insert(0, sys.argv[1])
        from simulator import interrupt
        interrupt.install()
        try:
            with interrupt.guarded():
                import slow_module
                time.sleep(1)
                print("not delivered")
        except KeyboardInterrupt:
            print("delivered after the import" if "slow_module" in sys.modules else "raised inside the import")
    """, tmp_path)
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "delivered after the import\n", "")


def test_kernel_thread_wait_survives_an_interrupt_just_after_the_wake_up():
    """A KeyboardInterrupt landing just after the caller took the worker's 'done' wake-up (Ctrl-C between two
    bytecodes): the wait must still end (the chunk is done) and raise the interrupt. Waiting on the lock again
    hung the command for ever (seen in CI)."""
    from simulator.kernels import threads

    worker = threads._Worker()
    real_done = worker._done

    class InterruptedAfterAcquire:   # the real lock, and an interrupt the first time it is taken
        fired = False

        def acquire(self):
            real_done.acquire()
            if not self.fired:
                self.fired = True
                raise KeyboardInterrupt

        def release(self):
            real_done.release()

    worker._done = InterruptedAfterAcquire()
    gate = threading.Event()   # the chunk ends only once the caller waits
    worker.start(lambda a: gate.wait(10) and a + 1, (41,))
    outcome = []

    def wait():
        try:
            outcome.append(worker.wait())
        except KeyboardInterrupt:
            outcome.append("interrupted")

    waiter = threading.Thread(target=wait, daemon=True)
    waiter.start()
    time.sleep(0.3)
    gate.set()
    waiter.join(10)
    assert not waiter.is_alive(), "the wait hung"
    assert outcome == ["interrupted"]
    worker._done = real_done   # and the worker still serves the next job
    worker.start(lambda a: a * 2, (21,))
    assert worker.wait() == 42
