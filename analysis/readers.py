"""Input readers: checks for NanoAOD files and the UCI HIGGS CSV reader.

NanoAOD files (from the embedded generator or real CMS production) are read by the coffea skim; here we check up
front that a file is a readable ROOT file with the branches the skim needs, so a bad input fails with one clear
message instead of a traceback from deep inside coffea. The UCI HIGGS CSV (``HIGGS.csv.gz``: no header, the label
then the 28 features, gzip or plain) is read straight into the flat ntuple format.
"""

from __future__ import annotations

import gzip
import os
from functools import lru_cache
from pathlib import Path

import numpy as np

from .features import FEATURES
from .io import InputError, open_root, open_root_file


def required_nanoaod_branches(btag: str = "btagDeepFlavB", met: str = "MET") -> list[str]:
    """Branches without which the skim cannot run (identification and isolation branches are optional)."""
    jets = [f"Jet_{v}" for v in ("pt", "eta", "phi", "mass", btag)]
    leps = [f"{c}_{v}" for c in ("Electron", "Muon") for v in ("pt", "eta", "phi", "mass")]
    return ["nJet", *jets, "nElectron", "nMuon", *leps, f"{met}_pt", f"{met}_phi"]


def check_nanoaod(path: str | os.PathLike, btag: str = "btagDeepFlavB", met: str = "MET") -> int:
    """Raise :class:`InputError` unless ``path`` is a NanoAOD file the skim can read; return its event count."""
    tree = open_root(path, "Events")
    keys = set(tree.keys())
    missing = [b for b in required_nanoaod_branches(btag, met) if b not in keys]
    if missing:
        raise InputError(f"{path}: NanoAOD branches missing: {', '.join(missing)}")
    check_complete(path, tree, required_nanoaod_branches(btag, met))
    return tree.num_entries


def check_complete(path: str | os.PathLike, tree, branches: list[str]) -> None:
    """Raise :class:`InputError` if any basket of ``branches`` lies beyond the end of the file (a file cut off
    during copy or writing). Reads only the baskets' bookkeeping, no data."""
    size = Path(path).stat().st_size
    for name in branches:
        br = tree[name]
        try:
            n = br.num_baskets
            seek = np.asarray(br.member("fBasketSeek"))[:n]
            nbytes = np.asarray(br.member("fBasketBytes"))[:n]
        except Exception as e:
            raise InputError(f"{path}: corrupt ROOT file, branch {name} ({type(e).__name__}: {e})") from None
        if n and np.any(seek + nbytes > size):
            raise InputError(f"{path}: truncated ROOT file: baskets of {name} end beyond the file's "
                             f"{size} bytes")


def sum_gen_weights(paths: list[str | os.PathLike]) -> float:
    """Sum of generator weights over files: ``Runs/genEventSumw`` as in NanoAOD, else the sum of ``genWeight``,
    else the number of events (real data)."""
    total = 0.0
    for p in paths:
        f = open_root_file(p)
        if "Runs" in f and "genEventSumw" in f["Runs"].keys():
            total += float(np.sum(f["Runs"]["genEventSumw"].array(library="np")))
        elif "genWeight" in f["Events"].keys():
            total += float(np.sum(f["Events"]["genWeight"].array(library="np")))
        else:
            total += float(f["Events"].num_entries)
    return total


def _open_text(path: Path):
    with open(path, "rb") as f:
        magic = f.read(2)
    return gzip.open(path, "rt") if magic == b"\x1f\x8b" else open(path, "rt")


@lru_cache(maxsize=8)
def _count_rows(path: str, mtime: float) -> int:
    with _open_text(Path(path)) as f:
        return sum(1 for line in f if line.strip())


def count_higgs_rows(path: str | os.PathLike) -> int:
    """Number of events in a HIGGS CSV file (cached per file modification time)."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: no such file")
    return _count_rows(str(p), p.stat().st_mtime)


def read_higgs_csv(path: str | os.PathLike, start: int = 0, stop: int | None = None):
    """Rows ``[start, stop)`` of a UCI HIGGS CSV file.

    Returns ``(labels, features, row_index, n_dropped)``: int labels, float32 features of shape ``(n, 28)`` in
    :data:`~analysis.features.FEATURES` order, the row numbers, and the number of rows dropped for non-finite
    values. Raises :class:`InputError` for a missing, unreadable or wrongly formatted file.
    """
    import pandas as pd

    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: no such file")
    nrows = None if stop is None else max(stop - start, 0)
    try:
        with _open_text(p) as f:
            df = pd.read_csv(f, header=None, skiprows=start, nrows=nrows, dtype=np.float64,
                             na_values=["nan", "NaN", ""], keep_default_na=True)
    except pd.errors.EmptyDataError:
        raise InputError(f"{p}: no rows in [{start}, {stop})") from None
    except (ValueError, OSError, EOFError, UnicodeDecodeError) as e:
        raise InputError(f"{p}: not a HIGGS CSV file ({type(e).__name__}: {e})") from None
    if df.shape[1] != 1 + len(FEATURES):
        raise InputError(f"{p}: expected {1 + len(FEATURES)} columns (label + 28 features), found {df.shape[1]}")
    values = df.to_numpy()
    rows = np.arange(start, start + len(values))
    finite = np.isfinite(values).all(axis=1)
    labels = values[finite, 0]
    if not np.isin(labels, (0.0, 1.0)).all():
        raise InputError(f"{p}: the first column must be the label 0 or 1")
    return labels.astype(np.int32), values[finite, 1:].astype(np.float32), rows[finite], int((~finite).sum())
