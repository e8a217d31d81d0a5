"""Safe file input/output: atomic writes and pickle-free, size-checked numpy loading.

Writes go to a temporary file in the target's directory, are fsynced and then renamed over the target
(`os.replace`), so a reader sees either the old file or the complete new one, never a half-written one;
on any failure the temporary file is removed.

Loads never unpickle (`allow_pickle=False` semantics: object arrays are refused), check the array size
declared in each `.npy` header against the bytes actually present *before* allocating, and turn every
failure into one :class:`~simulator.errors.HwsimError` naming the file (and the key inside an `.npz`).
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import secrets
import shutil
import stat
import sys
import zipfile
from pathlib import Path

import numpy as np
import numpy.lib.format as npformat

from simulator.errors import HwsimError

# Upper bound on the total uncompressed array bytes `load_npz` accepts (guards against zip bombs; the
# archive's declared member sizes are checked against it before anything is decompressed).
NPZ_MAX_BYTES = 1 << 32


def atomic_write_bytes(path, data: bytes) -> None:
    """Write `data` to `path` atomically (temp file in the same directory, fsync, `os.replace`).

    OS errors become an HwsimError naming `path`; nothing partial is ever left behind. The target is checked
    first (:func:`check_output_target`: no FIFO, device, directory or read-only file is replaced).
    """
    path = check_output_target(path)
    directory = path.parent if str(path.parent) else Path(".")
    tmp = None
    try:
        fd, tmp = _create_temp(directory, path.name)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        tmp = None
        _fsync_directory(directory)
    except OSError as exc:
        raise HwsimError(f"cannot write file: {exc.strerror or exc}", source=str(path)) from exc
    finally:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass


def _fsync_directory(directory: Path) -> None:
    """Make the rename itself durable where the platform allows it (best effort)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_text(path, text: str, encoding: str = "utf-8") -> None:
    """Write `text` to `path` atomically (no newline translation)."""
    atomic_write_bytes(path, text.encode(encoding))


def atomic_save_npy(path, array) -> None:
    """Save `array` as a `.npy` file at exactly `path` (no suffix is appended), atomically, no pickles."""
    buf = io.BytesIO()
    try:
        np.save(buf, np.asarray(array), allow_pickle=False)
    except ValueError as exc:  # object arrays
        raise HwsimError(f"cannot save array: {exc}", source=str(path)) from exc
    atomic_write_bytes(path, buf.getvalue())


# --------------------------------------------------------------------------------------------- output plans

STDOUT = "-"  # an output path meaning standard output (text outputs only)


def _describe_kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "not a regular file"


def check_output_target(path) -> Path:
    """Refuse an output path whose existing file must not be replaced; return the path to rename onto.

    The target must not exist (its directory must), or be a regular file (or a symbolic link to one: the file
    the link points to is replaced, the link stays) that the user may write. The permission is checked as the
    user (``os.access``), not via the directory an atomic rename needs; as root, a file without the owner's
    write bit counts as read-only. FIFOs, devices, sockets and directories are refused. Raises one HwsimError
    naming the path.
    """
    text = os.fspath(path)
    if not text:
        raise HwsimError("empty output path")
    p = Path(text)
    try:
        st = os.stat(p)  # follows symbolic links
    except FileNotFoundError:
        if os.path.islink(p):
            raise HwsimError("is a symbolic link to a missing file: refusing to write through it",
                             source=text) from None
        directory = p.parent if str(p.parent) else Path(".")
        if not directory.is_dir():
            raise HwsimError("cannot write file: its directory does not exist", source=text) from None
        return p
    except OSError as exc:
        raise HwsimError(f"cannot write file: {exc.strerror or exc}", source=text) from None
    if not stat.S_ISREG(st.st_mode):
        raise HwsimError(f"not a regular file ({_describe_kind(st.st_mode)}): refusing to replace it",
                         source=text)
    effective = os.access in os.supports_effective_ids
    writable = os.access(p, os.W_OK, effective_ids=effective) if effective else os.access(p, os.W_OK)
    if not writable or (hasattr(os, "geteuid") and os.geteuid() == 0 and not st.st_mode & stat.S_IWUSR):
        raise HwsimError("the existing file is read-only: refusing to replace it", source=text)
    if _sticky_forbids_replace(p, st):
        raise HwsimError("belongs to another user in a shared (sticky) directory: it cannot be replaced",
                         source=text)
    return Path(os.path.realpath(p)) if os.path.islink(p) else p


def _sticky_forbids_replace(path, st) -> bool:
    """True when renaming onto the existing file `path` (stat `st`) would fail with EPERM: its directory is
    sticky (like /tmp) and the effective user, not root, owns neither the file nor the directory."""
    if not hasattr(os, "geteuid") or os.geteuid() in (0, st.st_uid):
        return False
    try:
        directory = os.stat(os.path.dirname(os.path.realpath(path)) or ".")
    except OSError:
        return False
    return bool(directory.st_mode & stat.S_ISVTX) and directory.st_uid != os.geteuid()


def _create_temp(directory: Path, name: str, suffix: str = ".tmp"):
    """(fd, path) of a new temporary file next to the target. O_EXCL on a random name instead of mkstemp: the
    kernel applies the umask to mode 0o666, so the final file gets the permissions a plain open(path, "wb")
    would give it."""
    for _ in range(100):
        candidate = directory / f".{name}.{secrets.token_hex(6)}{suffix}"
        try:
            fd = os.open(candidate, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
        except FileExistsError:
            continue
        return fd, candidate
    raise FileExistsError(f"could not create a temporary file in {directory}")


class Outputs:
    """The output plan of one command: every output is staged, then all are committed together.

    ``text(path, s)``, ``npy(path, array)`` and ``bytes(path, data)`` check the target
    (:func:`check_output_target`) and write the content to a temporary file in the target's directory
    (fsynced); ``report(text)`` adds the command's printed report. :meth:`commit` writes the text for ``-`` to
    standard output first, then renames every temporary onto its target as one transaction (an existing
    target is kept as a hard-linked backup until the end; on any failure every target is restored), then
    prints the report: on standard output (a failure there restores the targets too), or on standard error
    when ``-`` took standard output. Used as a context manager, the plan commits when the block ends normally
    and, on any exception (KeyboardInterrupt included), removes every temporary: no output is left.
    ``check(*paths)`` refuses bad targets early, before the expensive work. A target that is the same file as
    one of the command's `inputs` (also ``add_inputs``) is refused: outputs never replace what the command
    reads.
    """

    def __init__(self, inputs=(), names=None, quiet=False):
        self._quiet = quiet  # --quiet: the files (and '-') are still written, the printed report is not
        self._staged: list[tuple[Path, Path, str]] = []  # (temporary, final target, path as given)
        self._backups: list[Path] = []
        self._stdout_text: str | None = None
        self._report: str | None = None
        self._seen: set[str] = set()
        self._inputs: list[str] = []
        self._names = dict(names or {})  # output path as given -> its option, for error lines
        self._done = False
        self.add_inputs(*inputs)

    @property
    def uses_stdout(self) -> bool:
        """True when an output goes to standard output (the report then belongs on standard error)."""
        return self._stdout_text is not None or STDOUT in self._seen

    def add_inputs(self, *paths) -> None:
        """Files the command reads (None skipped): no output may replace them."""
        self._inputs += [os.fspath(p) for p in paths if p is not None and os.fspath(p) not in ("", STDOUT)]

    def __enter__(self) -> "Outputs":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.discard()

    def _refuse_input(self, given: str) -> None:
        """Refuse an output that is the same file (any path, link or hard link) as an input of the command."""
        try:
            st = os.stat(given)
        except OSError:
            return  # does not exist (yet): cannot be an input that was read
        for path in self._inputs:
            try:
                other = os.stat(path)
            except OSError:
                continue
            if (other.st_dev, other.st_ino) == (st.st_dev, st.st_ino):
                same = "" if path == given else f" ({path})"
                raise HwsimError(f"is an input of this command{same}: refusing to overwrite it", source=given,
                                 field=self._names.get(given))

    def _check_one(self, text: str, binary: bool):
        """Check one target as given: (key telling two outputs of the same file apart, path to rename onto or
        None for standard output)."""
        if text == STDOUT:
            if binary:
                raise HwsimError("this output is binary: it cannot go to standard output ('-'); give a file",
                                 source=text)
            if sys.stdout is None:
                raise HwsimError("cannot write to standard output: it is closed")
            return STDOUT, None
        target = check_output_target(text)
        self._refuse_input(text)
        return os.path.realpath(target), target

    def _claim(self, path, allow_stdout: bool):
        """Check one target before staging; returns the path to rename onto (None for standard output)."""
        if path is None:
            raise HwsimError("no output path given")
        text = os.fspath(path)
        key, target = self._check_one(text, binary=not allow_stdout)
        if key in self._seen:
            raise HwsimError("given for two outputs of the same command", source=text)
        self._seen.add(key)
        return target

    def check(self, *paths, binary=()) -> None:
        """Refuse bad targets early (None entries are skipped); paths in `binary` may not be '-'."""
        seen = set()
        for path in list(paths) + list(binary):
            if path is None:
                continue
            try:
                key, _ = self._check_one(os.fspath(path), binary=path in binary)
            except HwsimError as exc:   # name the option too, when the command said which one it is
                raise HwsimError(exc.message, source=exc.source,
                                 field=exc.field or self._names.get(os.fspath(path))) from None
            if key in seen:
                raise HwsimError("given for two outputs of the same command", source=os.fspath(path))
            seen.add(key)

    def _stage(self, path, write) -> None:
        if self._done:
            raise RuntimeError("output plan already committed or discarded")
        target = self._claim(path, allow_stdout=False)
        directory = target.parent if str(target.parent) else Path(".")
        tmp = None
        try:
            fd, tmp = _create_temp(directory, target.name)
            with os.fdopen(fd, "wb") as f:
                write(f)
                f.flush()
                os.fsync(f.fileno())
            self._staged.append((tmp, target, os.fspath(path)))
            tmp = None
        except OSError as exc:
            raise HwsimError(f"cannot write file: {exc.strerror or exc}", source=os.fspath(path)) from exc
        finally:
            if tmp is not None:
                _unlink_quietly(tmp)

    def bytes(self, path, data: bytes) -> None:
        """Stage binary `data` for `path`."""
        self._stage(path, lambda f: f.write(data))

    def text(self, path, text: str, encoding: str = "utf-8") -> None:
        """Stage `text` for `path` ('-': standard output, written at commit), no newline translation."""
        if os.fspath(path) == STDOUT:
            self._claim(path, allow_stdout=True)
            self._stdout_text = text
            return
        # a lone surrogate (from a name in a file) cannot be encoded: it is written as a backslash escape
        self.bytes(path, text.encode(encoding, errors="backslashreplace"))

    def npy(self, path, array) -> None:
        """Stage `array` as a `.npy` file at exactly `path` (no suffix appended, no pickles)."""
        arr = np.asarray(array)
        if arr.dtype.hasobject:
            raise HwsimError("cannot save array: object arrays are not saved", source=os.fspath(path))
        self._stage(path, lambda f: npformat.write_array(f, arr, allow_pickle=False))

    def report(self, text: str) -> None:
        """The command's report, printed at commit (standard output, or standard error when '-' is used);
        dropped when the plan is quiet."""
        if not self._quiet:
            self._report = text + "\n"

    def discard(self) -> None:
        """Remove every staged temporary and backup; nothing is written."""
        self._done = True
        staged, self._staged = self._staged, []
        backups, self._backups = self._backups, []
        for path in [tmp for tmp, _, _ in staged] + backups:
            _unlink_quietly(path)
        self._stdout_text = None

    def commit(self) -> None:
        """Write standard output, then rename every staged file onto its target (all of them or none), then
        print the report. Interrupts (simulator/interrupt.py): one that waited for standard output stops the
        commit before any file is written; once the files are renamed the command has finished, and one that
        waited for the renames or the report is too late and ignored; a second one while the report blocks
        undoes the renames before exiting. Interrupted means that no file was written."""
        if self._done:
            return
        from . import interrupt
        data, report = self._stdout_text, self._report
        done: list[tuple[Path, Path | None]] = []  # (target, its backup or None) already renamed
        try:
            interrupt.check()   # a Ctrl-C that arrived while staging stops before any output is committed
            for _, target, given in self._staged:  # the targets may have changed since staging
                check_output_target(given)
                self._refuse_input(given)
            backups = []
            for _, target, given in self._staged:
                backups.append(self._backup(target, given))
            if data is not None:  # a second Ctrl-C while this blocks exits at once, nothing committed
                with interrupt.stdout_write(self.discard):
                    _write_stdout(data)
                interrupt.check()  # one that waited for standard output: no file is written
            directories = set()
            for (tmp, target, given), backup in zip(self._staged, backups):
                try:
                    os.replace(tmp, target)
                except OSError as exc:
                    raise HwsimError(f"cannot write file: {exc.strerror or exc}", source=given) from exc
                done.append((target, backup))
                directories.add(target.parent if str(target.parent) else Path("."))
            self._staged = []
            if report is not None and data is None:  # the report is out, or the files are restored
                with interrupt.stdout_write(lambda: self._undo(done)):
                    _write_stdout(report, escape=False)
            for directory in directories:
                _fsync_directory(directory)
        except BaseException:
            self._undo(done)
            raise
        finally:
            self.discard()  # temporaries not renamed and the backups
        if report is not None and data is not None:
            print(report, end="", file=sys.stderr, flush=True)
        interrupt.finish()  # the outputs are in place: the command has finished, its status stands

    def _undo(self, done: list[tuple[Path, Path | None]]) -> None:
        """Put every target replaced at commit back (`done`: target, its backup or None), remove the new ones,
        then the temporaries and backups."""
        while done:
            target, backup = done.pop()
            if backup is None:
                _unlink_quietly(target)
            else:
                with contextlib.suppress(OSError):
                    os.replace(backup, target)
                self._backups.remove(backup)  # (if it could not be put back, it stays: never deleted)
        self.discard()

    def _backup(self, target: Path, given: str) -> Path | None:
        """Keep the existing `target` as a hard link beside it (a copy where links are refused), so a failed
        commit can restore it; None when there is no target."""
        if not os.path.lexists(target):
            return None
        directory = target.parent if str(target.parent) else Path(".")
        try:
            try:
                backup = _link_beside(target, directory)
                self._backups.append(backup)
            except OSError:  # hard links refused here: a copy
                fd, backup = _create_temp(directory, target.name, ".bak")
                os.close(fd)
                self._backups.append(backup)
                shutil.copy2(target, backup)
        except OSError as exc:
            raise HwsimError(f"cannot keep the existing file until the outputs are committed: "
                             f"{exc.strerror or exc}", source=given) from exc
        return backup


def _link_beside(target: Path, directory: Path) -> Path:
    """A new hard link to `target` under a fresh name in `directory`."""
    for _ in range(100):
        candidate = directory / f".{target.name}.{secrets.token_hex(6)}.bak"
        try:
            os.link(target, candidate)
        except FileExistsError:
            continue
        return candidate
    raise FileExistsError(f"could not create a backup link in {directory}")


def _write_stdout(text: str, escape: bool = True) -> None:
    """Write `text` to standard output in one piece, straight to its file descriptor (nothing left in a
    buffer to fail later); a failure is one HwsimError, a reader that went away (EPIPE) is not an error."""
    stream = sys.stdout
    if stream is None:
        raise HwsimError("cannot write to standard output: it is closed")
    try:
        if escape and stream.isatty():  # data for a terminal: control characters shown, not sent
            from simulator.errors import safe_text
            text = safe_text(text, limit=None, keep_newlines=True)
        stream.flush()
        try:
            fd = stream.fileno()
        except (OSError, ValueError):  # not a real file (captured by a test): write through the stream
            stream.write(text)
            stream.flush()
            return
        data = memoryview(text.encode(getattr(stream, "encoding", None) or "utf-8", errors="backslashreplace"))
        while data:
            data = data[os.write(fd, data):]
    except BrokenPipeError:  # output piped into head/less that closed early: the rest goes nowhere
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except (OSError, ValueError) as exc:
        raise HwsimError(f"cannot write to standard output: {getattr(exc, 'strerror', None) or exc}") from None


def _unlink_quietly(path) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def _read_npy_header(f, available: int):
    """Parse the header of one `.npy` image at stream `f`'s position, the image holding exactly `available`
    bytes: (shape, fortran_order, dtype, data bytes). Nothing beyond the header is read or allocated.

    Raises ValueError with a human-readable reason; the caller adds file and key.
    """
    start = f.tell()
    major, minor = npformat.read_magic(f)
    if (major, minor) == (1, 0):
        shape, fortran_order, dtype = npformat.read_array_header_1_0(f)
    elif (major, minor) == (2, 0):
        shape, fortran_order, dtype = npformat.read_array_header_2_0(f)
    else:
        raise ValueError(f"unsupported .npy format version {major}.{minor}")
    if dtype.hasobject:
        raise ValueError("contains Python objects (pickled data is never loaded)")
    if dtype.itemsize == 0:
        raise ValueError(f"zero-size dtype {dtype} is not supported")
    shape = tuple(int(n) for n in shape)
    nbytes = math.prod(shape) * dtype.itemsize
    remaining = available - (f.tell() - start)
    if nbytes != remaining:
        raise ValueError(
            f"header declares shape {shape} of {dtype} ({nbytes} bytes) but the file holds "
            f"{remaining} bytes of data"
        )
    return shape, bool(fortran_order), dtype, nbytes


def _prefix_rows(shape, fortran_order: bool, rows) -> int | None:
    """How many leading entries (axis 0) to read when only the first `rows` are wanted; None: read it all
    (no limit, a 0-d array, or a Fortran-order array whose first axis is not a contiguous prefix)."""
    if rows is None or not shape or (fortran_order and len(shape) > 1):
        return None
    return max(0, min(int(rows), shape[0]))


def _read_npy_stream(f, available: int, rows: int | None = None) -> np.ndarray:
    """Read one `.npy` image from binary stream `f` holding exactly `available` bytes; with `rows`, only the
    first `rows` entries along axis 0 are read (C order; the rest of the stream is never touched).

    Raises ValueError with a human-readable reason; the caller adds file and key.
    """
    shape, fortran_order, dtype, nbytes = _read_npy_header(f, available)
    n = _prefix_rows(shape, fortran_order, rows)
    if n is not None:
        shape = (n,) + shape[1:]
        nbytes = math.prod(shape) * dtype.itemsize
    count = math.prod(shape)
    buf = bytearray(nbytes)
    view = memoryview(buf)
    got = 0
    while got < nbytes:  # readinto may return short reads on compressed zip members
        k = f.readinto(view[got:])
        if not k:
            raise ValueError(f"file ends after {got} of {nbytes} data bytes")
        got += k
    arr = np.frombuffer(buf, dtype=dtype, count=count)
    if fortran_order:
        return arr.reshape(shape[::-1]).transpose()
    return arr.reshape(shape)


def load_npy(path, *, mmap: bool = False) -> np.ndarray:
    """Load a `.npy` file without pickles; any failure is one HwsimError naming the file.

    With ``mmap=True`` a regular file is memory-mapped read-only (after its header is checked against the
    file size): nothing is read until used, so slicing the first samples of a huge file costs only those
    samples. Otherwise (and for anything that is not a regular file) the array is read into a writable array.
    """
    path = Path(path)
    try:
        with open(path, "rb") as f:
            st = os.fstat(f.fileno())
            size = st.st_size
            if f.read(4) == b"PK\x03\x04":
                raise ValueError("this is an .npz archive, not an .npy file (an .npz with x and y goes to --dataset)")
            f.seek(0)
            if not (mmap and stat.S_ISREG(st.st_mode)):
                return _read_npy_stream(f, size)
            shape, fortran_order, dtype, nbytes = _read_npy_header(f, size)
            if nbytes == 0:  # mmap cannot map zero bytes
                return np.zeros(shape, dtype=dtype)
            return np.memmap(f, dtype=dtype, mode="r", offset=f.tell(), shape=shape,
                             order="F" if fortran_order else "C")
    except HwsimError:
        raise
    except FileNotFoundError:
        raise HwsimError("file not found", source=str(path)) from None
    except OSError as exc:
        raise HwsimError(f"cannot read file: {exc.strerror or exc}", source=str(path)) from None
    except Exception as exc:  # corrupt header, truncated data, object arrays, ...
        raise HwsimError(f"not a valid .npy file: {_reason(exc)}", source=str(path)) from None


# Zip bomb guards of `load_npz`, checked on the sizes the archive declares, before anything is decompressed:
# deflate cannot expand data more than ~1032:1, so a larger declared ratio is a lie (or not deflate); and a
# member that would expand to more than NPZ_RATIO_FLOOR bytes at more than NPZ_MAX_RATIO:1 (real data sets
# compress a few times, not hundreds) is refused unless only a prefix of it is read (a limit).
NPZ_DEFLATE_MAX_RATIO = 1100
NPZ_MAX_RATIO = 200
NPZ_RATIO_FLOOR = 64 << 20


class _Refused(ValueError):
    """A well-formed archive refused for its size (reported without "not a valid .npz archive")."""


def _member_plan(zf, info, key: str, limit, max_left: int):
    """Check one archive member before decompressing its data: (bytes of data that will be read, rows to
    read or None for all). Opens the member only to parse its `.npy` header (a few kB decompressed at most)."""
    method = info.compress_type
    if method not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        raise ValueError(f"compression method {method} is not supported (.npz archives are stored or deflated)")
    if method == zipfile.ZIP_STORED and info.compress_size != info.file_size:
        raise ValueError(f"stored member declares {info.file_size} bytes but holds {info.compress_size}")
    ratio = info.file_size / max(info.compress_size, 1)
    if method == zipfile.ZIP_DEFLATED and info.file_size > (1 << 20) and ratio > NPZ_DEFLATE_MAX_RATIO:
        raise ValueError(f"declares {info.file_size} bytes from {info.compress_size} compressed "
                         f"({ratio:.0f}:1, more than deflate can produce): corrupt or a zip bomb")
    with zf.open(info) as member:
        shape, fortran_order, dtype, nbytes = _read_npy_header(member, info.file_size)
    rows = limit(key, shape) if callable(limit) else limit
    n = _prefix_rows(shape, fortran_order, rows)
    wanted = nbytes if n is None else n * (nbytes // shape[0] if shape[0] else 0)
    if wanted > max_left:
        raise _Refused(f"holds {wanted} bytes of data ({shape} of {dtype}), more than the {max_left} bytes "
                         f"left of the archive's limit" + ("" if rows is not None else
                                                          "; --limit N reads only the first N samples"))
    if wanted > NPZ_RATIO_FLOOR and ratio > NPZ_MAX_RATIO:
        raise _Refused(f"expands {info.compress_size} compressed bytes to {info.file_size} ({ratio:.0f}:1): "
                         f"refused as a likely zip bomb" + ("" if rows is not None else
                                                             "; --limit N reads only the first N samples"))
    return wanted, rows


def load_npz(path, max_bytes: int = NPZ_MAX_BYTES, *, keys=None, limit=None) -> dict[str, np.ndarray]:
    """Load the arrays of an `.npz` archive (members named ``<key>.npy``) into a dict, without pickles.

    `keys`: load only these members (the others are not decompressed; the ones missing are just absent).
    `limit`: an int N reads only the first N entries along axis 0 of each member, or a callable
    ``limit(key, shape) -> N or None`` deciding per member (None: all of it). Only that prefix is ever
    decompressed. Every member's declared size, its `.npy` header and its compression ratio are checked
    against `max_bytes` and the zip bomb guards before any data is decompressed.

    Any failure is one HwsimError naming the file and, where it applies, the key.
    """
    path = Path(path)
    key = None
    try:
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
            names = set()
            for info in infos:
                key = info.filename
                if not key.endswith(".npy"):
                    raise ValueError("archive member is not an .npy array")
                key = key[: -len(".npy")]
                if key in names:
                    raise ValueError("duplicate key in archive")
                names.add(key)
            key = None
            chosen = [info for info in infos if keys is None or info.filename[: -len(".npy")] in keys]
            if limit is None:
                total = sum(info.file_size for info in chosen)
                if total > max_bytes:
                    raise _Refused(f"archive declares {total} uncompressed bytes, more than the limit of {max_bytes}")
            plans, left = [], max_bytes
            for info in chosen:  # every member checked before any is decompressed
                key = info.filename[: -len(".npy")]
                wanted, rows = _member_plan(zf, info, key, limit, left)
                left -= wanted
                plans.append((info, key, rows))
            out: dict[str, np.ndarray] = {}
            for info, key, rows in plans:
                with zf.open(info) as member:
                    out[key] = _read_npy_stream(member, info.file_size, rows)
            return out
    except HwsimError:
        raise
    except _Refused as exc:
        raise HwsimError(str(exc), source=str(path), field=key) from None
    except FileNotFoundError:
        raise HwsimError("file not found", source=str(path)) from None
    except zipfile.BadZipFile as exc:
        if _starts_with(path, b"\x93NUMPY"):   # a lone array where an archive of named arrays is needed
            raise HwsimError("this is an .npy array, not an .npz archive: numpy.savez(FILE, x=inputs, y=labels) "
                             "makes one (a single .npy array is what --input takes)", source=str(path)) from None
        raise HwsimError(f"not a valid .npz archive: {_reason(exc)}", source=str(path), field=key) from None
    except OSError as exc:
        raise HwsimError(f"cannot read file: {exc.strerror or exc}", source=str(path), field=key) from None
    except Exception as exc:
        raise HwsimError(f"not a valid .npz archive: {_reason(exc)}", source=str(path), field=key) from None


def _starts_with(path, magic: bytes) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(len(magic)) == magic
    except OSError:
        return False


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
