"""File helpers shared by every writer: atomic outputs and clear errors for unreadable inputs.

Outputs are written to a temporary file beside the destination and renamed into place only when complete, so an
interrupted job never leaves a file that looks finished (``os.replace`` is atomic on POSIX file systems).
Temporary names carry the writer's host and process id (``.<name>.<host>.<pid>.<random>.tmp<suffix>``): the
next writer of the same output removes those of writers on its host that no longer run (killed jobs), and those
older than a day from anywhere.

For reliability tests only, ``HEPFLOWS_KILL_BEFORE_RENAME=<glob>`` makes a writer whose output path matches the
glob kill its own process (SIGKILL) after the temporary file is complete and before it is renamed: the worst
moment for an interruption, reproducible.
"""

from __future__ import annotations

import contextlib
import errno
import fnmatch
import json
import os
import re
import shutil
import signal
import socket
import tempfile
import time
from pathlib import Path
from typing import Any, Iterable, Iterator


class InputError(RuntimeError):
    """An input file is missing, unreadable, truncated or lacks what the analysis needs."""


def _umask() -> int:
    """The process's umask: from /proc on Linux, else by setting and restoring it (briefly process-wide)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _chmod_default(path: Path, directory: bool) -> None:
    """Give ``path`` the permissions a plain ``open()``/``mkdir()`` would under the current umask (tempfile
    creates 0600/0700, which would lock a group-shared store to its writer). A directory's own mode only: its
    content was created by ordinary writers, or by these helpers."""
    os.chmod(path, (0o777 if directory else 0o666) & ~_umask())


_HOST = re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname().split(".")[0]) or "host"
_TMP_MAX_AGE_S = 86400.0


def _tmp_prefix(path: Path) -> str:
    return f".{path.name}.{_HOST}.{os.getpid()}."


def _pid_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_stale_temporaries(path: str | os.PathLike) -> list[Path]:
    """Remove the temporary files and directories that interrupted writers of ``path`` left beside it: those
    of a process on this host that no longer runs, and any older than a day (other hosts, old naming).
    Returns what was removed."""
    path = Path(path)
    removed = []
    if not path.parent.is_dir():
        return removed
    pattern = re.compile(re.escape(f".{path.name}.") + r"(?:(?P<host>[A-Za-z0-9-]+)\.(?P<pid>\d+)\.)?.*\.tmp")
    now = time.time()
    for cand in path.parent.iterdir():
        m = pattern.match(cand.name)
        if not m:
            continue
        try:
            age = now - cand.lstat().st_mtime
        except FileNotFoundError:
            continue
        dead = m["host"] == _HOST and m["pid"] is not None and int(m["pid"]) != os.getpid() \
            and not _pid_running(int(m["pid"]))
        if dead or age > _TMP_MAX_AGE_S:
            if cand.is_dir() and not cand.is_symlink():
                shutil.rmtree(cand, ignore_errors=True)
            else:
                cand.unlink(missing_ok=True)
            removed.append(cand)
    return removed


def _fault_point(path: Path) -> None:
    """The reliability tests' kill switch (see the module docstring)."""
    pattern = os.environ.get("HEPFLOWS_KILL_BEFORE_RENAME")
    if pattern and fnmatch.fnmatch(str(path), pattern):
        os.kill(os.getpid(), signal.SIGKILL)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it to ``path``, on any error delete it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    clean_stale_temporaries(path)
    fd, tmp = tempfile.mkstemp(prefix=_tmp_prefix(path), suffix=".tmp" + path.suffix, dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        if tmp.is_file():  # the writer may have replaced the file, or (rarely) written a directory there
            _chmod_default(tmp, directory=False)
        _fault_point(path)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary directory beside ``path``; on success it replaces ``path``, on any error it is deleted,
    so that ``path`` is either absent or complete. Two processes writing the same directory at once both
    succeed; the one that finishes last wins (each replacement moves the old directory aside first, as
    ``os.replace`` cannot replace a non-empty directory)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    clean_stale_temporaries(path)
    tmp = Path(tempfile.mkdtemp(prefix=_tmp_prefix(path), suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        _chmod_default(tmp, directory=True)
        _fault_point(path)
        _replace_directory(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _replace_directory(tmp: Path, path: Path, attempts: int = 50) -> None:
    for _ in range(attempts):
        old = None
        if path.exists() or path.is_symlink():
            old = Path(tempfile.mkdtemp(prefix=_tmp_prefix(path) + "old.", suffix=".tmp", dir=path.parent))
            try:
                os.replace(path, old / "d")  # atomic move aside; another writer may have done it already
            except FileNotFoundError:
                pass
        try:
            os.rename(tmp, path)
        except OSError as e:
            if e.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                raise
            continue  # a concurrent writer put its directory there in between: move that aside too
        finally:
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
        return
    raise OSError(errno.EEXIST, f"{path}: could not replace the directory (other writers kept replacing it)")


def write_json(path: str | os.PathLike, data: Any) -> None:
    """Write ``data`` as indented JSON, atomically."""
    with atomic_path(path) as tmp:
        with open(tmp, "w") as f:
            json.dump(data, f, indent=2, sort_keys=False, default=_json_default)
            f.write("\n")


def _json_default(obj: Any) -> Any:
    import numpy as np

    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def open_root_file(path: str | os.PathLike):
    """Open ``path`` with uproot; raise :class:`InputError` with a clear message if the file is missing, empty,
    not a ROOT file or cut off in its header."""
    import uproot

    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise InputError(f"{path}: file is empty")
    try:
        return uproot.open(path)
    except Exception as e:  # uproot raises a variety of errors for non-ROOT or cut-off files
        raise InputError(f"{path}: not a readable ROOT file ({type(e).__name__}: {e})") from None


def open_root(path: str | os.PathLike, tree: str = "Events"):
    """The TTree ``tree`` of ``path`` (see :func:`open_root_file`); a clear error if the tree is missing."""
    f = open_root_file(path)
    try:
        return f[tree]
    except Exception as e:
        keys = ", ".join(sorted({k.split(";")[0] for k in f.keys()})) or "none"
        raise InputError(f"{Path(path)}: cannot read tree {tree!r} ({type(e).__name__}: {e}); keys in file: "
                         f"{keys}") from None


def load_npz(path: str | os.PathLike, required: Iterable[str] = ()) -> dict[str, np.ndarray]:
    """All arrays of a ``.npz`` file, read at once (``np.load(..., allow_pickle=False)``), as a dict of numpy
    arrays. :class:`InputError` naming the file for a missing, empty, truncated or corrupt file, one that is not
    a ``.npz`` archive, an array of Python objects (refused: reading it would unpickle code), or without the
    arrays named in ``required``."""
    import zipfile
    import zlib

    import numpy as np

    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    with open(path, "rb") as f:
        magic = f.read(4)
    if not magic:
        raise InputError(f"{path}: not a readable .npz file (the file is empty)")
    if magic not in (b"PK\x03\x04", b"PK\x05\x06"):
        what = "a single .npy array" if magic == b"\x93NUM" else "no zip archive signature"
        raise InputError(f"{path}: not a readable .npz file ({what})")
    arrays: dict[str, Any] = {}
    name = None
    try:
        with np.load(path, allow_pickle=False) as z:
            for name in z.files:
                arrays[name] = z[name]
                if not isinstance(arrays[name], np.ndarray):  # a zip member other than a .npy array
                    raise InputError(f"{path}: not a readable .npz file (member {name!r} is not a numpy array)")
    except ValueError as e:
        if "allow_pickle" in str(e) or "pickled" in str(e):
            raise InputError(f"{path}: not a readable .npz file (array {name!r} holds Python objects, which are "
                             "refused)") from None
        raise InputError(f"{path}: not a readable .npz file (array {name!r}: {type(e).__name__}: {e})") from None
    except (zipfile.BadZipFile, zlib.error, OSError, EOFError, KeyError) as e:
        where = f"array {name!r}: " if name is not None else ""
        raise InputError(f"{path}: not a readable .npz file ({where}{type(e).__name__}: {e})") from None
    missing = [k for k in required if k not in arrays]
    if missing:
        raise InputError(f"{path}: arrays missing: {', '.join(missing)} (found: {', '.join(arrays) or 'none'})")
    return arrays
