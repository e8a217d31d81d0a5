"""Issue 8, points 4 and 5: safe terminal output and outputs that never destroy what they should not.

Names and strings from files are escaped (no raw control characters reach the terminal) and bounded in length;
errors never echo more than a short excerpt of a file; no Python warning leaks. Outputs refuse read-only files,
FIFOs and directories, `-` is standard output, and a command's outputs appear together or not at all.
"""

import json
import os
import re
import stat
import struct
import subprocess
import sys
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest

from simulator.errors import HwsimError, safe_text
from simulator.fileio import Outputs, check_output_target
from simulator.qnn.container import PREFIX_SIZE, container_bytes
from simulator.qnn.model_io import load_model, model_to_header, save_model

ROOT = Path(__file__).resolve().parents[1]
LENET = ROOT / "models" / "lenet_digits_u8.qnn"
HOSTILE = ("bad\nname", "\x1b]0;title\x07", "\x1b[2J")
CONTROL = re.compile(r"[\x00-\x09\x0b-\x1f\x7f-\x9f]")  # anything but "\n"


def run_cli(*args, input=None):
    proc = subprocess.run([sys.executable, "-m", "simulator.cli", *map(str, args)], capture_output=True,
                          cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, input=input)
    return proc.returncode, proc.stdout.decode("utf-8", "surrogateescape"), proc.stderr.decode("utf-8", "surrogateescape")


def assert_terminal_safe(*texts, max_line=2000):
    for text in texts:
        assert not CONTROL.search(text), repr(CONTROL.search(text))
        assert "Traceback" not in text and "Warning" not in text, text[-2000:]
        for line in text.splitlines():
            assert len(line) <= max_line, line[:200]


def one_error_line(err, max_len=1000):
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err[:3000]
    assert lines[0].startswith("hwsim: error: "), lines[0][:300]
    assert len(lines[0]) <= max_len, len(lines[0])
    return lines[0]


def renamed_model(names):
    """LeNet with its layers renamed (references follow) and the given model name/metadata."""
    model = load_model(LENET)
    mapping = {}
    for lay, new in zip(model.layers, names):
        mapping[lay.name] = new
        lay.name = new
    for lay in model.layers:
        lay.inputs = [mapping.get(n, n) for n in lay.inputs]
    return model


def patch_header(data: bytes, old: bytes, new: bytes) -> bytes:
    """Replace bytes inside a container's JSON header, recomputing its length and checksum."""
    magic, version, flags, hlen, _ = struct.unpack_from("<8sHHQI", data)
    header = data[PREFIX_SIZE:PREFIX_SIZE + hlen]
    assert old in header
    header = header.replace(old, new)
    prefix = struct.pack("<8sHHQI", magic, version, flags, len(header), zlib.crc32(header))
    return prefix + header + data[PREFIX_SIZE + hlen:]


@pytest.fixture(scope="module")
def hostile_path(tmp_path_factory):
    model = renamed_model([f"{HOSTILE[i % 3]}{i}" for i in range(7)])
    model.metadata = dict(model.metadata, **{"note\x1b[31m": "line1\nline2\x1b]0;pwned\x07"})
    path = tmp_path_factory.mktemp("hostile") / "hostile.qnn"
    save_model(model, path)
    return path


# ----------------------------------------------------------------------------------------------- terminal

def test_safe_text_escapes_and_bounds():
    assert safe_text("conv1") == "conv1"
    assert safe_text("a\nb\x1b[2J\x07\x9b\u202e") == "a\\nb\\x1b[2J\\x07\\x9b\\u202e"
    long = safe_text("x" * 20_000_000, 200)
    assert len(long) < 240 and long.startswith("x" * 200) and "20,000,000 chars" in long
    line = HwsimError("bad " + "\x1b" * 10_000, source="f\n.qnn", field="layers.\x07").line()
    assert "\n" not in line and "\x1b" not in line and "\x07" not in line and len(line) < 1000
    assert safe_text("\ud800").encode("utf-8")  # a lone surrogate becomes an encodable escape


def test_hostile_names_are_escaped_in_inspect(hostile_path, tmp_path):
    code, out, err = run_cli("inspect", hostile_path, "--json", tmp_path / "r.json")
    assert code == 0, err
    assert_terminal_safe(out, err)
    assert "\\x1b]0;title\\x07" in out and "\\x1b[2J" in out and "bad\\nname" in out
    assert "line1\\nline2" in out
    # the JSON keeps the names exactly
    rep = json.loads((tmp_path / "r.json").read_text())
    assert rep["layers"][0]["name"] == "bad\nname0"


def test_hostile_names_are_escaped_in_run(hostile_path):
    code, out, err = run_cli("run", hostile_path, "--hw", "tsmc90")
    assert code == 0, err
    assert_terminal_safe(out, err)
    assert "\\x1b[2J" in out


def test_hostile_name_in_error_is_escaped(tmp_path):
    model = load_model(LENET)
    header, tensors = model_to_header(model)
    header["model"]["layers"][1]["inputs"] = ["\x1b]0;title\x07\nhwsim: error: fake"]
    path = tmp_path / "bad_input.qnn"
    path.write_bytes(container_bytes(header, tensors))
    code, out, err = run_cli("inspect", path)
    assert code == 2
    one_error_line(err)
    assert_terminal_safe(out, err)


def test_huge_op_and_layer_names_give_short_lines(tmp_path):
    model = load_model(LENET)
    header, tensors = model_to_header(model)
    header["model"]["layers"][1]["op"] = "X" * 20_000_000
    path = tmp_path / "huge_op.qnn"
    path.write_bytes(container_bytes(header, tensors))
    code, out, err = run_cli("inspect", path)
    assert code == 2
    one_error_line(err)
    assert len(out) + len(err) < 2000

    big = renamed_model(["conv1", "P" * 20_000_000, "conv2", "pool2", "flatten", "fc1", "fc2"])
    path = tmp_path / "huge_name.qnn"
    save_model(big, path)
    code, out, err = run_cli("inspect", path)
    assert code in (0, 2), err[:500]
    if code == 2:
        one_error_line(err)
    assert_terminal_safe(out, err, max_line=1000)
    assert len(out) + len(err) < 20_000


def test_lone_surrogate_model_name_prints(tmp_path):
    model = load_model(LENET)
    model.name = "SURROGATE_HERE"
    data = container_bytes(*model_to_header(model))
    path = tmp_path / "surrogate.qnn"
    path.write_bytes(patch_header(data, b'"SURROGATE_HERE"', b'"\\udfff\\ud800 \\u001b[2J"'))
    for args in (("inspect", path, "--json", tmp_path / "i.json"),
                 ("run", path, "--hw", "tsmc90", "--json", tmp_path / "r.json", "--output", tmp_path / "y.npy")):
        code, out, err = run_cli(*args)
        assert code in (0, 2), err[-2000:]
        assert_terminal_safe(out, err)
        if code == 2:
            one_error_line(err)
        else:
            assert err.strip() == ""
            json.loads(Path(args[args.index("--json") + 1]).read_text())


def test_hw_file_contents_not_echoed(tmp_path):
    code, out, err = run_cli("estimate", LENET, "--hw", "/etc/passwd")
    assert code == 2
    line = one_error_line(err, max_len=400)
    assert "root:x:" not in line or len(line) < 300
    secret = tmp_path / "secret.yaml"
    secret.write_text("format: |\n" + "".join(f"  secret line {i} \x1b[2J password{i}\n" for i in range(2000)))
    code, out, err = run_cli("estimate", LENET, "--hw", secret)
    assert code == 2
    line = one_error_line(err, max_len=800)
    assert "password1999" not in line
    assert_terminal_safe(out, err)


def test_warnings_never_reach_the_user(monkeypatch, capsys):
    from simulator import cli, commands

    def noisy(args):
        warnings.warn("stray warning", RuntimeWarning)
        np.log(np.zeros(3))  # numpy RuntimeWarning: divide by zero
        np.float64(1e308) * 10  # overflow
        raise HwsimError("the real error", source="x.qnn")

    monkeypatch.setattr(commands, "inspect", noisy)
    assert cli.main(["inspect", "x.qnn"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.strip() == "hwsim: error: x.qnn: the real error"


def test_internal_error_line_is_escaped(monkeypatch, capsys):
    from simulator import cli, commands

    def broken(args):
        raise ValueError("boom\n\x1b[2J" + "y" * 100_000)

    monkeypatch.setattr(commands, "inspect", broken)
    monkeypatch.delenv("HWSIM_DEBUG", raising=False)
    assert cli.main(["inspect", "x.qnn"]) == 3
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "\x1b" not in err and len(err) < 1000


# ------------------------------------------------------------------------------------------------ outputs

def _is_root():
    return hasattr(os, "geteuid") and os.geteuid() == 0


def test_read_only_target_refused_and_untouched(tmp_path):
    target = tmp_path / "report.json"
    target.write_text("precious")
    target.chmod(0o444)
    try:
        code, out, err = run_cli("inspect", LENET, "--json", target)
        assert code == 2
        assert "read-only" in one_error_line(err)
        assert target.read_text() == "precious"
        with pytest.raises(HwsimError, match="read-only"):
            check_output_target(target)
    finally:
        target.chmod(0o644)
    assert out == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.json"]


def test_read_only_check_runs_as_the_user(tmp_path):
    """The file's own permission decides, checked as the user (as root, who may write anything, a file without
    its owner's write bit counts as read-only), not the directory's that an atomic rename needs."""
    writable, read_only = tmp_path / "w.json", tmp_path / "r.json"
    for path, mode in ((writable, 0o600), (read_only, 0o044)):
        path.write_text("x")
        path.chmod(mode)
    try:
        assert os.access(tmp_path, os.W_OK)
        assert check_output_target(writable) == writable
        with pytest.raises(HwsimError, match="read-only"):
            check_output_target(read_only)
        with pytest.raises(HwsimError, match="read-only"):
            with Outputs() as outputs:
                outputs.text(read_only, "y")
        if _is_root():
            assert os.access(read_only, os.W_OK)  # root could: the mode bits decide
    finally:
        read_only.chmod(0o644)
    assert read_only.read_text() == "x"


def test_fifo_and_directory_targets_refused(tmp_path):
    fifo = tmp_path / "out.fifo"
    os.mkfifo(fifo)
    directory = tmp_path / "dir.json"
    directory.mkdir()
    for target in (fifo, directory):
        code, out, err = run_cli("inspect", LENET, "--json", target)
        assert code == 2
        assert "not a regular file" in one_error_line(err)
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    assert directory.is_dir() and not any(directory.iterdir())
    code, out, err = run_cli("run", LENET, "--hw", "tsmc90", "--output", fifo)
    assert code == 2 and "not a regular file" in one_error_line(err)
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    with pytest.raises(HwsimError, match="not a regular file"):
        check_output_target(fifo)
    if os.path.exists("/dev/null"):
        with pytest.raises(HwsimError, match="not a regular file"):
            check_output_target("/dev/null")


def test_dash_writes_json_to_stdout(tmp_path):
    code, out, err = run_cli("inspect", LENET, "--json", "-")
    assert code == 0, err
    rep = json.loads(out)
    assert rep["name"] == "lenet_digits_u8"
    assert "weight storage" in err  # the report itself went to standard error
    code, out, err = run_cli("export", LENET, "-o", "-")
    assert code == 2 and "standard output" in one_error_line(err)


def test_later_output_failure_leaves_no_output(tmp_path):
    y = tmp_path / "y.npy"
    code, out, err = run_cli("run", LENET, "--hw", "tsmc90", "--output", y, "--json", tmp_path / "missing" / "r.json")
    assert code == 2
    one_error_line(err)
    assert not y.exists()
    assert list(tmp_path.iterdir()) == []


def test_outputs_plan_all_or_nothing(tmp_path):
    a, b = tmp_path / "a.txt", tmp_path / "b.npy"
    a.write_text("old")
    with pytest.raises(RuntimeError):
        with Outputs() as outputs:
            outputs.text(a, "new")
            outputs.npy(b, np.arange(3))
            raise RuntimeError("later failure")
    assert a.read_text() == "old" and not b.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]  # no temporaries left

    with Outputs() as outputs:
        outputs.text(a, "new")
        outputs.npy(b, np.arange(3))
        assert a.read_text() == "old" and not b.exists()  # nothing before the commit
    assert a.read_text() == "new" and np.load(b).tolist() == [0, 1, 2]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "b.npy"]

    with pytest.raises(HwsimError, match="two outputs"):
        with Outputs() as outputs:
            outputs.text(a, "x")
            outputs.text(tmp_path / "." / "a.txt", "y")
    assert a.read_text() == "new"


def test_symlink_to_regular_file_is_written_through(tmp_path):
    real = tmp_path / "real.json"
    real.write_text("old")
    link = tmp_path / "link.json"
    link.symlink_to(real)
    with Outputs() as outputs:
        outputs.text(link, "new")
    assert link.is_symlink() and real.read_text() == "new"
    dangling = tmp_path / "dangling.json"
    dangling.symlink_to(tmp_path / "nowhere")
    with pytest.raises(HwsimError, match="symbolic link"):
        check_output_target(dangling)


# ------------------------------------------------------------------------------- outputs that are inputs

MODELS = ROOT / "models"


def _workdir(tmp_path):
    """Copies of the shipped files a command may read, in a fresh directory."""
    import shutil
    for src, name in ((LENET, "m.qnn"), (MODELS / "lenet_digits_ort_qdq.onnx", "q.onnx"),
                      (MODELS / "lenet_digits_float.onnx", "f.onnx"), (MODELS / "digits_test.npz", "c.npz"),
                      (ROOT / "hwconfigs" / "tsmc90.yaml", "hw.yaml")):
        shutil.copy(src, tmp_path / name)
    np.save(tmp_path / "x.npy", np.load(tmp_path / "c.npz")["x"][:4])
    (tmp_path / "link.qnn").symlink_to(tmp_path / "m.qnn")
    os.link(tmp_path / "m.qnn", tmp_path / "hard.qnn")


@pytest.mark.parametrize("victim, option, args", [
    ("m.qnn", "--json", ["run", "m.qnn", "--hw", "tsmc90", "--json", "m.qnn"]),
    ("m.qnn", "--output", ["run", "m.qnn", "--hw", "tsmc90", "--output", "link.qnn"]),
    ("x.npy", "--output", ["run", "m.qnn", "--hw", "tsmc90", "--input", "x.npy", "--output", "x.npy"]),
    ("c.npz", "--csv", ["run", "m.qnn", "--hw", "tsmc90", "--dataset", "c.npz", "--csv", "c.npz"]),
    ("hw.yaml", "--json", ["run", "m.qnn", "--hw", "hw.yaml", "--json", "hw.yaml"]),
    ("q.onnx", "--output", ["import", "q.onnx", "-o", "q.onnx"]),
    ("m.qnn", "--output", ["export", "m.qnn", "-o", "hard.qnn"]),
    ("f.onnx", "--json", ["quantize", "f.onnx", "--calib", "c.npz", "-o", "o.qnn", "--json", "f.onnx"]),
    ("c.npz", "--json", ["quantize", "f.onnx", "--calib", "c.npz", "-o", "o.qnn", "--json", "c.npz"]),
    ("m.qnn", "--json", ["inspect", "m.qnn", "--json", "m.qnn"]),
    ("m.qnn", "--json", ["compare", "m.qnn", "--hw", "tsmc90", "--hw", "generic45", "--json", "link.qnn"]),
    ("f.onnx", "--csv", ["estimate", "f.onnx", "--hw", "tsmc90", "--csv", "f.onnx"]),
    ("m.qnn", "--json", ["validate", "m.qnn", "--json", "m.qnn"]),
    ("f.onnx", "--json", ["analyze", "f.onnx", "--calib", "c.npz", "--json", "f.onnx"]),
])
def test_output_that_is_an_input_is_refused_and_the_input_kept(tmp_path, victim, option, args):
    """An output naming a file the command reads (the same path, a symbolic link or a hard link to it) is
    refused before any work: one line naming the output, the input untouched, nothing written."""
    _workdir(tmp_path)
    before = (tmp_path / victim).read_bytes()
    listing = sorted(p.name for p in tmp_path.iterdir())
    proc = subprocess.run([sys.executable, "-m", "simulator.cli", *args], capture_output=True, text=True,
                          cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 2, proc.stderr
    line = one_error_line(proc.stderr)
    assert f"{option}: is an input of this command" in line, line
    assert (tmp_path / victim).read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == listing


def test_output_that_is_the_tech_table_of_an_architecture_is_refused(tmp_path):
    """The technology table an architecture file names is an input too."""
    tech = tmp_path / "tech.yaml"
    tech.write_bytes((ROOT / "hwconfigs" / "tsmc90.yaml").read_bytes())
    arch = (ROOT / "hwconfigs" / "architectures" / "default.yaml").read_text()
    design = tmp_path / "design.yaml"
    design.write_text(arch.replace("format: hwsim-arch/1", "format: hwsim-arch/1\ntech: tech.yaml", 1))
    code, out, err = run_cli("run", LENET, "--hw", design, "--json", tech)
    assert code == 2, err
    assert "is an input of this command" in one_error_line(err)
    assert tech.read_bytes() == (ROOT / "hwconfigs" / "tsmc90.yaml").read_bytes()


# ------------------------------------------------------------------------------- commit as a transaction

def _cli_child(code, cwd, *args):
    """Run the CLI in a child after `code` (a patch of the environment hwsim sees)."""
    import textwrap
    script = textwrap.dedent(code) + "\nimport sys\nfrom simulator.cli import main\nsys.exit(main(sys.argv[1:]))\n"
    return subprocess.run([sys.executable, "-c", script, *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, env={**os.environ, "PYTHONPATH": str(ROOT)})


def test_failed_rename_at_commit_restores_every_target(tmp_path):
    """A rename that fails at commit (EPERM, say) undoes the ones already done: a replaced file is back, a
    new one removed, no temporary or backup left."""
    (tmp_path / "a.json").write_text("OLD REPORT")
    (tmp_path / "b.csv").write_text("old csv")
    proc = _cli_child("""
        import errno, os
        real_replace = os.replace
        def replace(src, dst):
            if str(dst).endswith("b.csv"):
                raise PermissionError(errno.EPERM, "Operation not permitted")
            real_replace(src, dst)
        os.replace = replace
    """, tmp_path, "run", LENET, "--hw", "tsmc90", "--output", "y.npy", "--json", "a.json", "--csv", "b.csv")
    assert proc.returncode == 2, proc.stderr
    assert "b.csv: cannot write file: Operation not permitted" in one_error_line(proc.stderr)
    assert proc.stdout == ""
    assert (tmp_path / "a.json").read_text() == "OLD REPORT"
    assert (tmp_path / "b.csv").read_text() == "old csv"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "b.csv"]


def test_outputs_plan_keeps_no_backup_after_success(tmp_path):
    a = tmp_path / "a.txt"
    a.write_text("old")
    link = tmp_path / "other-name.txt"
    os.link(a, link)
    with Outputs() as outputs:
        outputs.text(a, "new")
    assert a.read_text() == "new" and link.read_text() == "old"  # replaced, not written in place
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "other-name.txt"]


def test_target_of_another_user_in_a_sticky_directory_refused_early(tmp_path):
    """In a sticky directory (like /tmp) a file that the user does not own, in a directory the user does not
    own, cannot be renamed onto (EPERM): refused before any work, unless root. Run as another user by
    pretending the effective user id differs from the owner of both."""
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    target = shared / "b.csv"
    target.write_text("someone else's")
    target.chmod(0o666)
    other = os.stat(target).st_uid + 4242
    proc = _cli_child(f"import os\nos.geteuid = lambda: {other}\n", tmp_path,
                      "run", LENET, "--hw", "tsmc90", "--json", "a.json", "--csv", target)
    assert proc.returncode == 2, proc.stderr
    assert "sticky" in one_error_line(proc.stderr)
    assert target.read_text() == "someone else's"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shared"]
    assert sorted(p.name for p in shared.iterdir()) == ["b.csv"]


# ---------------------------------------------------------------------------------- standard output fails

@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_standard_output_full_is_one_error_and_no_file_output(tmp_path):
    """Standard output that cannot be written (a full device): one line, exit 2, and no file output (standard
    output is written before the files are committed)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for args in (["run", LENET, "--hw", "tsmc90", "--json", "-", "--csv", "r.csv", "--output", "y.npy"],
                 ["inspect", LENET], ["run", LENET, "--hw", "tsmc90", "--json", "r.json"]):
        with open("/dev/full", "wb") as full:
            proc = subprocess.run([sys.executable, "-m", "simulator.cli", *map(str, args)], stdout=full,
                                  stderr=subprocess.PIPE, text=True, cwd=tmp_path, env=env)
        assert (proc.returncode, proc.stderr) == (
            2, "hwsim: error: cannot write to standard output: No space left on device\n"), (args, proc.stderr)
        assert list(tmp_path.iterdir()) == []


def test_closed_standard_output_is_one_error_and_no_file_output(tmp_path):
    """`hwsim ... --json - >&-`: refused at once with one line; the console script's entry keeps the closed
    descriptor occupied so no file opened later takes its place."""
    proc = subprocess.run([sys.executable, "-m", "simulator.entry", "run", str(LENET), "--hw", "tsmc90",
                           "--json", "-", "--csv", "r.csv"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                          text=True, cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT)},
                          preexec_fn=lambda: os.close(1))
    assert (proc.returncode, proc.stderr) == (
        2, "hwsim: error: --json: cannot write to standard output: it is closed\n")   # the option is named
    assert list(tmp_path.iterdir()) == []
