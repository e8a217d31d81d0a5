"""Safe file input/output: atomic writes and pickle-free, size-checked numpy loading.

Writes go to a temporary file in the target's directory, are fsynced and then renamed over the target
(`os.replace`), so a reader sees either the old file or the complete new one, never a half-written one;
on any failure the temporary file is removed.

Loads never unpickle (`allow_pickle=False` semantics: object arrays are refused), check the array size
declared in each `.npy` header against the bytes actually present *before* allocating, and turn every
failure into one :class:`~simulator.errors.HwsimError` naming the file (and the key inside an `.npz`).
"""

from __future__ import annotations

import io
import math
import os
import secrets
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

    OS errors become an HwsimError naming `path`; nothing partial is ever left behind.
    """
    path = Path(path)
    directory = path.parent if str(path.parent) else Path(".")
    tmp = None
    try:
        # O_EXCL on a random name instead of mkstemp: the kernel applies the umask to mode 0o666, so the
        # final file gets the same permissions a plain open(path, "wb") would give it.
        for _ in range(100):
            candidate = directory / f".{path.name}.{secrets.token_hex(6)}.tmp"
            try:
                fd = os.open(candidate, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
            except FileExistsError:
                continue
            tmp = candidate
            break
        else:
            raise FileExistsError(f"could not create a temporary file in {directory}")
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


def _read_npy_stream(f, available: int) -> np.ndarray:
    """Read one `.npy` image from binary stream `f` holding exactly `available` bytes.

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
    count = math.prod(int(n) for n in shape)
    nbytes = count * dtype.itemsize
    remaining = available - (f.tell() - start)
    if nbytes != remaining:
        raise ValueError(
            f"header declares shape {tuple(shape)} of {dtype} ({nbytes} bytes) but the file holds "
            f"{remaining} bytes of data"
        )
    buf = bytearray(nbytes)
    view = memoryview(buf)
    got = 0
    while got < nbytes:  # readinto may return short reads on compressed zip members
        n = f.readinto(view[got:])
        if not n:
            raise ValueError(f"file ends after {got} of {nbytes} data bytes")
        got += n
    arr = np.frombuffer(buf, dtype=dtype, count=count)
    if fortran_order:
        return arr.reshape(shape[::-1]).transpose()
    return arr.reshape(shape)


def load_npy(path) -> np.ndarray:
    """Load a `.npy` file without pickles; any failure is one HwsimError naming the file."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if f.read(4) == b"PK\x03\x04":
                raise ValueError("this is an .npz archive, not an .npy file (an .npz with x and y goes to --dataset)")
            f.seek(0)
            return _read_npy_stream(f, size)
    except HwsimError:
        raise
    except FileNotFoundError:
        raise HwsimError("file not found", source=str(path)) from None
    except OSError as exc:
        raise HwsimError(f"cannot read file: {exc.strerror or exc}", source=str(path)) from None
    except Exception as exc:  # corrupt header, truncated data, object arrays, ...
        raise HwsimError(f"not a valid .npy file: {_reason(exc)}", source=str(path)) from None


def load_npz(path, max_bytes: int = NPZ_MAX_BYTES) -> dict[str, np.ndarray]:
    """Load every array of an `.npz` archive (members named ``<key>.npy``) into a dict, without pickles.

    Any failure is one HwsimError naming the file and, where it applies, the key.
    """
    path = Path(path)
    key = None
    try:
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
            total = sum(info.file_size for info in infos)
            if total > max_bytes:
                raise ValueError(f"archive declares {total} uncompressed bytes, more than the limit of {max_bytes}")
            out: dict[str, np.ndarray] = {}
            for info in infos:
                key = info.filename
                if not key.endswith(".npy"):
                    raise ValueError("archive member is not an .npy array")
                key = key[: -len(".npy")]
                if key in out:
                    raise ValueError("duplicate key in archive")
                with zf.open(info) as member:
                    out[key] = _read_npy_stream(member, info.file_size)
            return out
    except HwsimError:
        raise
    except FileNotFoundError:
        raise HwsimError("file not found", source=str(path)) from None
    except zipfile.BadZipFile as exc:
        raise HwsimError(f"not a valid .npz archive: {_reason(exc)}", source=str(path), field=key) from None
    except OSError as exc:
        raise HwsimError(f"cannot read file: {exc.strerror or exc}", source=str(path), field=key) from None
    except Exception as exc:
        raise HwsimError(f"not a valid .npz archive: {_reason(exc)}", source=str(path), field=key) from None


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
