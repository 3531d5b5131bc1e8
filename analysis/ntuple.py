"""The flat ntuple format shared by every stage after the skim.

One ROOT file with a TTree ``Events``: the 28 feature columns of :data:`analysis.features.FEATURES` (float32),
``label`` (1 signal, 0 background), ``generated`` (1 for flow-generated events, 0 for simulated or real ones),
``weight`` (events expected in the configured luminosity, where the source provides a cross-section) and
``event`` (the source's event number, row index, or the index of a generated event); where the source has them
(NanoAOD, simulated or real, and events generated from it) also the optional :data:`OPTIONAL_COLUMNS`, the
four leading jets' continuous b-tag scores and masses. A TObjString
``hepflows_metadata`` holds JSON provenance (sample, source, units, cutflow). Simulated, real and (later)
flow-generated events are all stored this way, so downstream tasks read them identically.
"""

from __future__ import annotations

import contextlib
import json
import os
from typing import Iterable, Iterator, Sequence

import numpy as np
import uproot

from .features import BTAG_SCORES, FEATURES, JET_MASSES
from .io import InputError, atomic_path, open_root, open_root_file

COLUMNS = FEATURES + ["label", "generated", "weight", "event"]
OPTIONAL_COLUMNS = list(BTAG_SCORES) + list(JET_MASSES)
_DTYPES = {"label": np.int32, "generated": np.int32, "event": np.int64, "weight": np.float64}


def _checked(columns: dict[str, np.ndarray], names: list[str]) -> dict[str, np.ndarray]:
    missing = [c for c in names if c not in columns]
    if missing:
        raise ValueError(f"ntuple columns missing: {missing}")
    lengths = {len(columns[c]) for c in names}
    if len(lengths) != 1:
        raise ValueError(f"ntuple columns differ in length: {sorted(lengths)}")
    return {c: np.asarray(columns[c], dtype=_DTYPES.get(c, np.float32)) for c in names}


class _Writer:
    def __init__(self, file, optional: list[str]):
        unknown = [c for c in optional if c not in OPTIONAL_COLUMNS]
        if unknown:
            raise ValueError(f"not ntuple columns: {unknown}; optional columns are {OPTIONAL_COLUMNS}")
        self.file = file
        self.names = COLUMNS + [c for c in OPTIONAL_COLUMNS if c in optional]
        self.file.mktree("Events", {c: np.dtype(_DTYPES.get(c, np.float32)) for c in self.names})
        self.n = 0

    def extend(self, columns: dict[str, np.ndarray]) -> None:
        data = _checked(columns, self.names)
        if len(data["label"]):
            self.file["Events"].extend(data)
            self.n += len(data["label"])


@contextlib.contextmanager
def ntuple_writer(path: str | os.PathLike, metadata: dict, optional: Sequence[str] = ()) -> Iterator[_Writer]:
    """Write a flat ntuple batch by batch (``writer.extend(columns)``), with the :data:`OPTIONAL_COLUMNS`
    named in ``optional``; the file appears, complete, only when the block ends without error."""
    with atomic_path(path) as tmp:
        with uproot.recreate(tmp, compression=uproot.LZ4(1)) as f:
            writer = _Writer(f, list(optional))
            yield writer
            f["hepflows_metadata"] = json.dumps(dict(metadata, n_events=writer.n), default=str)


OBJECT_PREFIXES = ("obj_", "truth_")
"""Columns with these prefixes are the object-level inputs and truth targets of the skim
(:func:`analysis.skim.object_columns`), one row per event of ``Events``, written to the TTree ``Objects``."""


def write_ntuple(path: str | os.PathLike, columns: dict[str, np.ndarray], metadata: dict) -> None:
    """Write a flat ntuple atomically. ``columns`` must hold every name of :data:`COLUMNS`, all of one length;
    those of :data:`OPTIONAL_COLUMNS` it holds are written too; object-level columns (:data:`OBJECT_PREFIXES`,
    also ``(n, k)`` arrays) go, row by row with ``Events``, to a second TTree ``Objects``; other names are
    ignored."""
    objects = {k: np.asarray(v) for k, v in columns.items() if k.startswith(OBJECT_PREFIXES)}
    if objects and {len(v) for v in objects.values()} != {len(columns["label"])}:
        raise ValueError("object-level columns and ntuple columns differ in length")
    with ntuple_writer(path, metadata, [c for c in OPTIONAL_COLUMNS if c in columns]) as w:
        w.extend(columns)
        if objects:
            w.file.mktree("Objects", {k: np.dtype((v.dtype, v.shape[1:])) if v.ndim > 1 else v.dtype
                                      for k, v in objects.items()})
            if len(columns["label"]):
                w.file["Objects"].extend(objects)


def read_objects(paths: Iterable[str | os.PathLike]) -> dict[str, np.ndarray]:
    """The object-level columns (TTree ``Objects``) of skimmed ntuples, concatenated in the order of ``paths``,
    row for row with :func:`read_ntuples` of the same files; :class:`InputError` naming a file without them
    (skimmed before they existed, or from the HIGGS CSV, which has no objects)."""
    parts = []
    for p in paths:
        f = open_root_file(p)
        if "Objects" not in f:
            raise InputError(f"{p}: no object-level columns (TTree Objects); rerun the Skim of this file")
        try:
            parts.append(f["Objects"].arrays(library="np"))
        except Exception as e:
            raise InputError(f"{p}: unreadable Objects tree ({type(e).__name__}: {e})") from None
    if not parts:
        return {}
    keys = set(parts[0])
    if any(set(q) != keys for q in parts):
        raise InputError("the files hold different object-level columns (skimmed with different sources)")
    return {k: np.concatenate([q[k] for q in parts]) for k in parts[0]}


def read_metadata(path: str | os.PathLike) -> dict:
    """The JSON provenance stored with a flat ntuple (empty if the file has none); :class:`InputError` naming the
    file if it cannot be read (truncated, corrupt)."""
    f = open_root_file(path)
    try:
        return json.loads(str(f["hepflows_metadata"])) if "hepflows_metadata" in f else {}
    except Exception as e:  # uproot raises OSError, ValueError, KeyError, ... for a damaged file
        raise InputError(f"{path}: unreadable ntuple, truncated or corrupt ({type(e).__name__}: "
                         f"{str(e).splitlines()[0] if str(e) else ''})") from None


def feature_matrix(columns: dict[str, np.ndarray]) -> np.ndarray:
    """The 28 features as a float64 array of shape (n, 28), in :data:`FEATURES` order."""
    return np.stack([np.asarray(columns[f], dtype=np.float64) for f in FEATURES], axis=1)


def _describe(values: dict) -> str:
    """``sample 'signal' (label 1)`` and the like, for messages about the provenance of an ntuple."""
    words = []
    if "sample" in values:
        words.append(f"sample {values['sample']!r}")
    if "label" in values:
        words.append(f"(label {values['label']})" if words else f"label {values['label']}")
    words += [f"{k} {v!r}" for k, v in values.items() if k not in ("sample", "label")]
    return " ".join(words)


def _check_provenance(path: str | os.PathLike, expect: dict) -> None:
    """:class:`InputError` unless the metadata stored with ``path`` has the values of ``expect``."""
    meta = read_metadata(path)
    found = {k: meta.get(k) for k in expect}
    if any(found[k] != v for k, v in expect.items()):
        absent = [k for k in expect if k not in meta]
        if absent:
            raise InputError(f"{path}: ntuple without {', '.join(absent)} in its hepflows metadata, expected "
                             f"{_describe(expect)}")
        raise InputError(f"{path}: ntuple of {_describe(found)}, expected {_describe(expect)}")


def read_ntuples(paths: Iterable[str | os.PathLike], columns: Sequence[str] = COLUMNS,
                 optional: Sequence[str] = (), expect: dict | None = None) -> dict[str, np.ndarray]:
    """Concatenate columns of several flat ntuples into numpy arrays, with clear errors for bad files. Columns
    named in ``optional`` are read when every file has them and left out otherwise.

    ``expect`` (e.g. ``{"sample": "background", "label": 0}``): each file's stored metadata
    (:func:`read_metadata`) must have these values, and with ``label`` every event's ``label`` column too, or
    :class:`InputError` names the file (say, a signal ntuple copied in place of a background one)."""
    paths = list(paths)
    trees = [open_root(p) for p in paths]
    columns = list(columns) + [c for c in optional if c not in columns and trees
                               and all(c in t.keys() for t in trees)]
    check_label = expect is not None and "label" in expect
    read = columns + (["label"] if check_label and "label" not in columns else [])
    parts: dict[str, list[np.ndarray]] = {c: [] for c in columns}
    for p, tree in zip(paths, trees):
        absent = [c for c in read if c not in tree.keys()]
        if absent:
            raise InputError(f"{p}: not a hepflows ntuple, branches missing: {absent}")
        if expect is not None:
            _check_provenance(p, expect)
        try:
            arrays = tree.arrays(read, library="np")
        except Exception as e:
            raise InputError(f"{p}: cannot read ntuple ({type(e).__name__}: {e})") from None
        if check_label:
            wrong = arrays["label"] != expect["label"]
            if wrong.any():
                i = int(np.argmax(wrong))
                whose = f" for sample {expect['sample']!r}" if "sample" in expect else ""
                raise InputError(f"{p}: {int(wrong.sum())} of {len(wrong)} events have label {arrays['label'][i]} "
                                 f"(the first at entry {i}), expected label {expect['label']}{whose}")
        for c in columns:
            parts[c].append(arrays[c])
    return {c: (np.concatenate(v) if v else np.zeros(0, dtype=_DTYPES.get(c, np.float32))) for c, v in parts.items()}
