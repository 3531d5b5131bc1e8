"""Jagged per-event collections (NanoAOD's ``Jet``, ``GenPart``) as padded numpy arrays, by index.

The skim keeps, for each selected event, the leading objects that pass the object selection. Selecting with
awkward (``collection[mask][sel]``) copies every branch of the collection twice before it can be padded; here
the positions of each selected event's first ``width`` kept objects in the branches' flat content are found
once (:func:`slot_index`), and every branch is then padded by one numpy gather of those positions
(:func:`gather`). The result is what ``ak.fill_none(ak.pad_none(collection[keep][rows],
width, clip=True), fill)`` gives, element for element (tested).
"""

from __future__ import annotations

import awkward as ak
import numpy as np


def flat(values: ak.Array) -> np.ndarray:
    """The flat content of a jagged per-event array (one entry per object, in event order)."""
    return ak.to_numpy(ak.flatten(values, axis=1))


def counts(values: ak.Array) -> np.ndarray:
    """Objects per event of a jagged per-event array."""
    return ak.to_numpy(ak.num(values, axis=1)).astype(np.int64)


def per_event(n_obj: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """How many objects of each event ``mask`` (flat, one entry per object) selects."""
    n_obj = np.asarray(n_obj, np.int64)
    return np.bincount(np.repeat(np.arange(len(n_obj)), n_obj)[np.asarray(mask, bool)], minlength=len(n_obj))


def slot_index(n_obj: np.ndarray, rows: np.ndarray, width: int,
               keep: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Positions in the flat content of the first ``width`` kept objects of each event in ``rows``.

    ``n_obj``: objects per event of the whole collection (:func:`counts`); ``rows``: the events wanted, distinct,
    in the order wanted; ``keep``: a flat boolean per object (default: every object). Returns ``(index,
    n_kept)``: ``index`` ``(len(rows), width)`` with -1 where an event has fewer kept objects, and the number of
    kept objects of each event (not clipped at ``width``). Without ``keep`` the positions follow from the offsets;
    with it the work is vectorised over every object of the collection (no compiled kernel: numba's first call
    in a fresh skim process costs more than it saves there).
    """
    n_obj, rows = np.asarray(n_obj, np.int64), np.asarray(rows, np.int64)
    if keep is not None and len(keep) != int(n_obj.sum()):
        raise ValueError(f"keep has {len(keep)} entries for a collection of {int(n_obj.sum())} objects")
    if len(np.unique(rows)) != len(rows):
        raise ValueError("rows must be distinct events")
    if keep is None:  # every object: the positions follow from the offsets
        starts = (np.cumsum(n_obj) - n_obj)[rows]
        n_kept = n_obj[rows]
        local = np.arange(width)[None, :]
        return np.where(local < n_kept[:, None], starts[:, None] + local, -1), n_kept
    slot_of_event = np.full(len(n_obj), -1, np.int64)
    slot_of_event[rows] = np.arange(len(rows))
    wanted = np.repeat(slot_of_event >= 0, n_obj)
    if keep is not None:
        wanted &= np.asarray(keep, bool)
    pos = np.flatnonzero(wanted)  # the kept objects of the wanted events, in event order
    slot = np.repeat(slot_of_event, n_obj)[pos]
    n_kept = np.bincount(slot, minlength=len(rows))
    starts = np.flatnonzero(np.r_[True, slot[1:] != slot[:-1]]) if len(slot) else np.zeros(0, np.int64)
    rank = np.arange(len(pos)) - np.repeat(starts, np.diff(np.r_[starts, len(pos)]))  # within its event
    index = np.full((len(rows), width), -1, np.int64)
    first = rank < width
    index[slot[first], rank[first]] = pos[first]
    return index, n_kept


def gather(content: np.ndarray, index: np.ndarray, dtype=np.float32, fill=0) -> np.ndarray:
    """``content`` at ``index`` (any shape; -1: ``fill``), cast to ``dtype``; an index beyond ``content`` raises
    ``IndexError``."""
    if content.size == 0 and not np.any(index >= 0):
        return np.full(index.shape, fill, dtype=dtype)
    out = np.take(content, np.maximum(index, 0)).astype(dtype, copy=False)
    np.putmask(out, index < 0, fill)
    return out
