"""Input readers: checks for NanoAOD files and the UCI HIGGS CSV reader.

NanoAOD files (from the embedded generator or real CMS production) are read by the coffea skim; here we check up
front that a file is a readable ROOT file with the branches the skim needs, so a bad input fails with one clear
message instead of a traceback from deep inside coffea. The UCI HIGGS CSV (``HIGGS.csv.gz``: no header, the label
then the 28 features, gzip or plain) is read straight into the flat ntuple format.
"""

from __future__ import annotations

import contextlib
import glob
import gzip
import io
import os
import zlib
from functools import lru_cache
from pathlib import Path
from typing import Iterator

import numpy as np

from .features import FEATURES
from .io import InputError, open_root, open_root_file


def required_nanoaod_branches(btag: str = "btagDeepFlavB", met: str = "MET") -> list[str]:
    """Branches without which the skim cannot run (identification and isolation branches are optional)."""
    jets = [f"Jet_{v}" for v in ("pt", "eta", "phi", "mass", btag)]
    leps = [f"{c}_{v}" for c in ("Electron", "Muon") for v in ("pt", "eta", "phi", "mass")]
    return ["nJet", *jets, "nElectron", "nMuon", *leps, f"{met}_pt", f"{met}_phi"]


def _reason(e: Exception) -> str:
    """``Type: message`` of an exception on one line (uproot's messages span several)."""
    return f"{type(e).__name__}: {' '.join(str(e).split())}"


def _is_rntuple(obj) -> bool:
    import uproot

    return isinstance(obj, uproot.behaviors.RNTuple.HasFields)


def _check_file_end(path: str | os.PathLike, file) -> None:
    """Raise :class:`InputError` if ``path`` is shorter than the end its ROOT header declares (``fEND``): a file
    cut off during copy or writing. Costs nothing beyond the header uproot has already read."""
    size = Path(path).stat().st_size
    end = getattr(getattr(file, "file", file), "fEND", None)
    if isinstance(end, (int, np.integer)) and size < end:
        raise InputError(f"{path}: truncated ROOT file: {size} of the {int(end)} bytes its header declares "
                         f"({100 * size / end:.0f} %); the copy or the writing was cut off")


def _open_checked(path: str | os.PathLike, name: str):
    """The TTree or RNTuple ``name`` of ``path``, once the file is known to be complete. An RNTuple reads its
    header and footer (field list, page list) lazily: they are read here, so that a damaged one fails now."""
    _check_file_end(path, open_root_file(path))
    obj = open_root(path, name)
    try:
        obj.keys()
    except Exception as e:
        raise InputError(f"{path}: corrupt ROOT file, cannot read the fields of {name!r} ({_reason(e)})") from None
    return obj


def check_nanoaod(path: str | os.PathLike, btag: str = "btagDeepFlavB", met: str = "MET") -> int:
    """Raise :class:`InputError` unless ``path`` is a NanoAOD file the skim can read; return its event count.

    ``Events`` may be a TTree or an RNTuple with the same flat NanoAOD fields (``nJet``, ``Jet_pt``, ...): both
    are checked alike, and both are read by the same coffea skim."""
    events = _open_checked(path, "Events")
    keys = set(events.keys())
    required = required_nanoaod_branches(btag, met)
    missing = [b for b in required if b not in keys]
    if missing:
        what = "RNTuple fields" if _is_rntuple(events) else "branches"
        nested = sorted({k.split(".")[0] for k in keys if "." in k})
        hint = (f" (the RNTuple stores collections as nested fields, e.g. {nested[0]}.pt; the skim reads the flat "
                f"NanoAOD layout nJet, Jet_pt, ...)" if nested else "")
        raise InputError(f"{path}: NanoAOD {what} missing: {', '.join(missing)}{hint}")
    check_complete(path, events, required)
    return events.num_entries


def check_complete(path: str | os.PathLike, tree, branches: list[str]) -> None:
    """Raise :class:`InputError` if any basket of ``branches`` lies beyond the end of the file (a file cut off
    during copy or writing). Reads only the baskets' bookkeeping, no data.

    For an RNTuple, every page of every field is checked against the file size (a walk over the page list that
    the footer already holds; ``branches`` need not be named one by one)."""
    size = Path(path).stat().st_size
    if _is_rntuple(tree):
        try:
            ends = [page.locator.offset + page.locator.num_bytes
                    for cluster in tree.page_link_list for column in cluster for page in column.pages
                    if getattr(page.locator.type, "name", "STANDARD") == "STANDARD"]
        except Exception as e:
            raise InputError(f"{path}: corrupt ROOT file, page list of RNTuple {tree.name!r} ({_reason(e)})") from None
        if ends and max(ends) > size:
            n_out = sum(e > size for e in ends)
            raise InputError(f"{path}: truncated ROOT file: {n_out} of the {len(ends)} pages of RNTuple "
                             f"{tree.name!r} end beyond the file's {size} bytes")
        return
    for name in branches:
        br = tree[name]
        try:
            n = br.num_baskets
            seek = np.asarray(br.member("fBasketSeek"))[:n]
            nbytes = np.asarray(br.member("fBasketBytes"))[:n]
        except Exception as e:
            raise InputError(f"{path}: corrupt ROOT file, branch {name} ({_reason(e)})") from None
        if n and np.any(seek + nbytes > size):
            raise InputError(f"{path}: truncated ROOT file: baskets of {name} end beyond the file's "
                             f"{size} bytes")


def sum_gen_weights(paths: list[str | os.PathLike]) -> float:
    """Sum of generator weights over files: ``Runs/genEventSumw`` as in NanoAOD (``genEventSumw_`` in old
    versions), else the sum of ``genWeight``, else the number of events (real data). TTree or RNTuple alike.

    Each file is checked for truncation first, and every failure is an :class:`InputError` naming the file."""
    total = 0.0
    for p in paths:
        f = open_root_file(p)
        _check_file_end(p, f)
        try:
            keys = {k.split(";")[0] for k in f.keys()}
            runs = _open_checked(p, "Runs") if "Runs" in keys else None
            key = next((k for k in ("genEventSumw", "genEventSumw_") if runs is not None and k in runs.keys()), None)
            if key is not None:
                check_complete(p, runs, [key])
                source, values = f"Runs/{key}", runs[key].array(library="np")
            else:
                events = _open_checked(p, "Events")
                if "genWeight" in events.keys():
                    check_complete(p, events, ["genWeight"])
                    source, values = "Events/genWeight", events["genWeight"].array(library="np")
                else:
                    source, values = "the number of events", np.array([events.num_entries], dtype=np.float64)
            sumw = float(np.sum(values, dtype=np.float64))
        except InputError:
            raise
        except Exception as e:
            raise InputError(f"{p}: cannot read the generator weights ({_reason(e)})") from None
        if not np.isfinite(sumw):
            raise InputError(f"{p}: the sum of {source} is {sumw}: the file is corrupt")
        total += sumw
    return total


def _check_root_file(path: str) -> None:
    """The first, cheap check of a listed input file: a readable, non-empty file with ROOT's signature (a
    precise message for the commonest mistakes before :func:`check_nanoaod` opens it)."""
    if not os.path.isfile(path):
        raise InputError(f"{path}: not a file")
    try:
        with open(path, "rb") as f:
            magic = f.read(4)
    except OSError as e:
        raise InputError(f"{path}: cannot read ({e.strerror or e})") from None
    if not magic:
        raise InputError(f"{path}: file is empty")
    if magic != b"root":
        raise InputError(f"{path}: not a ROOT file (it starts with {magic!r}, a ROOT file with b'root')")


@lru_cache(maxsize=4096)
def _checked_nanoaod(path: str, mtime: float, size: int, btag: str, met: str) -> None:
    """:func:`check_nanoaod` once per file version and process (about 10 ms a file): the
    branches the skim needs and a file that is not cut off, before any branch runs."""
    check_nanoaod(path, btag, met)


def _listed(real: str, sample: str, entry: str, path: str) -> str:
    return f"sample {sample!r} (files entry {entry!r}{f', as {path}' if path != real else ''})"


def nanoaod_input_files(cfg, name: str, sample,
                        seen: dict[str, tuple[str, str, str]] | None = None) -> list[str]:
    """The files of the NanoAOD sample ``name`` (``sample`` its :class:`~analysis.config.SampleConfig`): its
    ``files`` entries (paths or glob patterns) resolved and checked before any work starts, each file fully by
    :func:`check_nanoaod`. :class:`InputError` for an entry that names no file or a pattern that matches none, a
    file that is unreadable, empty, not a ROOT file, truncated or without the skim's branches, and a file listed
    twice (compared by
    real path, so a glob matching a listed file or a symbolic link to it counts too): ``seen``, shared between
    samples, maps each real path to the (sample, entry, path) that listed it first."""
    seen = {} if seen is None else seen
    files: list[str] = []
    for pattern in sample.files:
        resolved = str(cfg.resolve_path(pattern))
        if os.path.exists(resolved):  # a path, used as it is (even with glob characters in its name)
            matches = [resolved]
        elif glob.has_magic(resolved):
            matches = sorted(m for m in glob.glob(resolved) if os.path.isfile(m))
            if not matches:
                raise InputError(f"{resolved}: no file matches (sample {name!r}, files entry {pattern!r})")
        else:
            broken = " (a broken symbolic link)" if os.path.islink(resolved) else ""
            raise InputError(f"{resolved}: no such file{broken} (sample {name!r}, files entry {pattern!r})")
        for path in matches:
            _check_root_file(path)
            st = os.stat(path)
            _checked_nanoaod(path, st.st_mtime, st.st_size, cfg.skim.btag_discriminant, cfg.skim.met_collection)
            real = os.path.realpath(path)
            if real in seen:
                raise InputError(f"{real}: input file listed twice, in {_listed(real, *seen[real])} and in "
                                 f"{_listed(real, name, pattern, path)}; each file may be skimmed only once")
            seen[real] = (name, pattern, path)
            files.append(path)
    return files


N_COLUMNS = 1 + len(FEATURES)  # the label, then the 28 features
_NA_VALUES = ["nan", "NaN", ""]  # with pandas's default missing-value markers: non-finite, dropped and counted
_BATCH_LINES = 50_000  # lines parsed at once by read_higgs_csv (bounds the memory of the text held)


# file signatures of formats sometimes mistaken for a CSV file
_OTHER_FORMATS = {b"PK\x03\x04": "a zip archive", b"PK\x05\x06": "a zip archive", b"BZh": "bzip2-compressed",
                  b"\xfd7zXZ\x00": "xz-compressed", b"(\xb5/\xfd": "zstd-compressed", b"root": "a ROOT file",
                  b"\x93NUMPY": "a numpy file"}


def _open_text(path: Path):
    """The lines of a text file as bytes (parsed and decoded as UTF-8 by the readers below), gzip-decompressed
    when the file starts with the gzip magic bytes; :class:`InputError` for a file of another known format."""
    with open(path, "rb") as f:
        magic = f.read(8)
    for signature, what in _OTHER_FORMATS.items():
        if magic.startswith(signature):
            raise InputError(f"{path}: {what}, not a CSV file; expected comma-separated values (label + 28 "
                             "features), plain or gzip-compressed")
    return gzip.open(path, "rb") if magic.startswith(b"\x1f\x8b") else open(path, "rb")


@contextlib.contextmanager
def _csv_errors(path: Path) -> Iterator[None]:
    """Translate what opening, decompressing or decoding a CSV file raises into one :class:`InputError` that
    names the file."""
    try:
        yield
    except (EOFError, gzip.BadGzipFile, zlib.error) as e:
        raise InputError(f"{path}: truncated or corrupt gzip file ({type(e).__name__}: {e})") from None
    except UnicodeDecodeError as e:
        raise _not_text(path, e) from None
    except OSError as e:
        raise InputError(f"{path}: cannot read ({type(e).__name__}: {e.strerror or e})") from None


def _check_csv_file(path: Path) -> None:
    if not path.is_file():
        raise InputError(f"{path}: no such file")


def _separator(text: str) -> tuple[str, int] | None:
    """The separator ``text`` seems to use instead of commas, and its field count; None if none does."""
    found = [(name, len(text.split(sep))) for sep, name in (("\t", "tab"), (";", "semicolon"), ("|", "pipe"),
                                                             (None, "space"))]
    for name, n in found:  # one giving exactly the 29 fields wins (e.g. semicolons with decimal commas)
        if n == N_COLUMNS:
            return name, n
    if "," not in text:
        found = [(name, n) for name, n in found if n > 1]
        if found:
            return max(found, key=lambda t: t[1])
    return None


def _not_text(path: Path, e: UnicodeDecodeError, where: str = "") -> InputError:
    return InputError(f"{path}: {where}not a text file: byte 0x{e.object[e.start]:02x} is not UTF-8 text (a binary "
                      "file, or compressed other than with gzip?); expected comma-separated values (label + 28 "
                      "features), plain or gzip-compressed")


def _line_error(path: Path, lineno: int, line: bytes) -> InputError:
    """The error for a non-blank ``line`` (number ``lineno``, 1-based) without 29 comma-separated fields."""
    try:
        text = line.decode("utf-8").rstrip("\r\n")
    except UnicodeDecodeError as e:
        return _not_text(path, e, f"line {lineno}: ")
    if "\x00" in text:
        return InputError(f"{path}: line {lineno}: binary data (NUL bytes), not a text file; expected "
                          f"comma-separated values (label + 28 features), plain or gzip-compressed")
    sep = _separator(text)
    if sep is not None:
        return InputError(f"{path}: expected comma-separated values (label + 28 features), found "
                          f"{sep[0]}-separated ({sep[1]} fields on line {lineno})")
    n = text.count(",") + 1
    return InputError(f"{path}: line {lineno} has {n} field{'s' if n != 1 else ''}, expected {N_COLUMNS} columns "
                      "(label + 28 features)")


def _is_number(value: str) -> bool:
    value = value.strip()
    if value in ("", "nan", "NaN", "NA", "N/A", "NULL", "null", "-nan", "-NaN", "n/a", "<NA>", "None", "#N/A"):
        return True
    try:
        float(value)
    except ValueError:
        return False
    return True


def _value_error(path: Path, linenos: list[int], lines: list[bytes], error: Exception) -> InputError:
    """The error for a batch of lines that pandas could not read as numbers: names the first bad value."""
    for lineno, line in zip(linenos, lines):
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError as e:
            return _not_text(path, e, f"line {lineno}: ")
        for i, value in enumerate(text.rstrip("\r\n").split(",")):
            if not _is_number(value):
                what = "the label" if i == 0 else f"feature {i} ({FEATURES[i - 1]})"
                return InputError(f"{path}: not a HIGGS CSV file: line {lineno}: {what} is {value.strip()!r}, "
                                  "not a number")
    return InputError(f"{path}: not a HIGGS CSV file: lines {linenos[0]}-{linenos[-1]}: not numbers "
                      f"({type(error).__name__}: {error})")


def _data_lines(path: Path, f) -> Iterator[tuple[int, bytes]]:
    """``(line number, line)`` of every non-blank line of the binary file ``f``; :class:`InputError` at the
    first one without 29 comma-separated fields."""
    for lineno, line in enumerate(f, 1):
        if line.count(b",") != N_COLUMNS - 1:
            if not line.strip():
                continue
            raise _line_error(path, lineno, line)
        yield lineno, line


@lru_cache(maxsize=8)
def _count_rows(path: str, mtime: float) -> int:
    p = Path(path)
    n = 0
    with _csv_errors(p), _open_text(p) as f:
        for lineno, line in _data_lines(p, f):
            if n == 0:  # the cheap check of the first line: numbers, not a header or words
                _parse_lines(p, [lineno], [line])
            n += 1
    return n


def check_higgs_head(path: str | os.PathLike, n_lines: int = 100) -> None:
    """The cheap check of a HIGGS CSV file, for when its length is not needed: its first ``n_lines`` lines
    are comma-separated numbers with 29 fields; :class:`InputError` (naming the file and line) otherwise, and
    for an empty, corrupt or non-text file."""
    p = Path(path)
    _check_csv_file(p)
    linenos, lines = [], []
    with _csv_errors(p), _open_text(p) as f:
        for lineno, line in _data_lines(p, f):
            linenos.append(lineno)
            lines.append(line)
            if len(lines) >= n_lines:
                break
    if not lines:
        raise InputError(f"{p}: no events (empty file)")
    _parse_lines(p, linenos, lines)


def count_higgs_rows(path: str | os.PathLike) -> int:
    """Number of events (non-blank lines) in a HIGGS CSV file, cached per file modification time. Reads the whole
    file, so it also raises :class:`InputError` for an empty, truncated or corrupt file, a line without 29
    comma-separated fields, or a first line that is not numbers."""
    p = Path(path)
    _check_csv_file(p)
    n = _count_rows(str(p), p.stat().st_mtime)
    if n == 0:
        raise InputError(f"{p}: no events (empty file)")
    return n


def _parse_lines(path: Path, linenos: list[int], lines: list[bytes]) -> np.ndarray:
    import pandas as pd

    try:
        df = pd.read_csv(io.BytesIO(b"".join(lines)), header=None, dtype=np.float64, na_values=_NA_VALUES,
                         keep_default_na=True, skip_blank_lines=False)
    except (ValueError, pd.errors.ParserError) as e:  # UnicodeDecodeError included
        raise _value_error(path, linenos, lines, e) from None
    if df.shape != (len(lines), N_COLUMNS):  # not expected after the field count check of every line
        raise InputError(f"{path}: lines {linenos[0]}-{linenos[-1]}: expected {len(lines)} rows of {N_COLUMNS} "
                         f"columns, read {df.shape[0]} of {df.shape[1]}")
    return df.to_numpy()


def read_higgs_csv(path: str | os.PathLike, start: int = 0, stop: int | None = None):
    """Rows ``[start, stop)`` of a UCI HIGGS CSV file (rows: its non-blank lines, counted from 0).

    Returns ``(labels, features, row_index, n_dropped)``: int labels, float32 features of shape ``(n, 28)`` in
    :data:`~analysis.features.FEATURES` order, the row numbers, and the number of rows dropped for non-finite
    values. Raises :class:`InputError` for a missing, empty, unreadable or wrongly formatted file (naming the
    line of a row without 29 comma-separated fields, or with a value that is not a number).
    """
    p = Path(path)
    _check_csv_file(p)
    blocks: list[np.ndarray] = []
    line_numbers: list[int] = []
    row, at_end = 0, True
    with _csv_errors(p), _open_text(p) as f:
        linenos: list[int] = []
        lines: list[bytes] = []
        for lineno, line in _data_lines(p, f):
            if stop is not None and row >= stop:
                at_end = False
                break
            if row >= start:
                linenos.append(lineno)
                lines.append(line)
                if len(lines) == _BATCH_LINES:
                    blocks.append(_parse_lines(p, linenos, lines))
                    line_numbers += linenos
                    linenos, lines = [], []
            row += 1
        if lines:
            blocks.append(_parse_lines(p, linenos, lines))
            line_numbers += linenos
    if row == 0:
        raise InputError(f"{p}: no events (empty file)")
    if not blocks:
        raise InputError(f"{p}: no rows in [{start}, {stop})" + (f" (the file has {row} rows)" if at_end else ""))
    values = np.concatenate(blocks)
    rows = np.arange(start, start + len(values))
    finite = np.isfinite(values).all(axis=1)
    bad = finite & ~np.isin(values[:, 0], (0.0, 1.0))
    if bad.any():
        i = int(np.argmax(bad))
        raise InputError(f"{p}: line {line_numbers[i]}: the first column must be the label 0 or 1, found "
                         f"{values[i, 0]:g}")
    labels = values[finite, 0]
    return labels.astype(np.int32), values[finite, 1:].astype(np.float32), rows[finite], int((~finite).sum())
