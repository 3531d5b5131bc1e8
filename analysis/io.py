"""File helpers shared by every writer: atomic outputs and clear errors for unreadable inputs.

Outputs are written to a temporary file beside the destination and renamed into place only when complete, so an
interrupted job never leaves a file that looks finished (``os.replace`` is atomic on POSIX file systems).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator


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


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it to ``path``, on any error delete it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp" + path.suffix, dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        if tmp.is_file():  # the writer may have replaced the file, or (rarely) written a directory there
            _chmod_default(tmp, directory=False)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary directory beside ``path``; on success it replaces ``path``, on any error it is deleted,
    so that ``path`` is either absent or complete."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        _chmod_default(tmp, directory=True)
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


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
