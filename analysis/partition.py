"""Deterministic, disjoint partitions of every sample: train, validation and reference.

Decided once (by the configuration's seed and the sample's name) and used by every later stage: generator and
classifier training use ``train`` with ``validation`` for early stopping; evaluation and analysis templates use
``reference``. No event appears in two partitions.
"""

from __future__ import annotations

import zlib

import numpy as np

from .config import PARTITIONS, PartitionConfig


def partition_indices(n: int, fractions: PartitionConfig, seed: int, key: str) -> dict[str, np.ndarray]:
    """Sorted row indices of each partition for ``n`` events; a seeded permutation split by ``fractions``."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, zlib.crc32(key.encode()), 0x9A57]))
    perm = rng.permutation(n)
    n_train = int(round(fractions.train * n))
    n_val = int(round(fractions.validation * n))
    cuts = {"train": perm[:n_train], "validation": perm[n_train:n_train + n_val],
            "reference": perm[n_train + n_val:]}
    return {name: np.sort(cuts[name]) for name in PARTITIONS}


def split_sample(columns: dict[str, np.ndarray], fractions: PartitionConfig, seed: int,
                 key: str) -> dict[str, dict[str, np.ndarray]]:
    """Split a sample's columns into the partitions of :func:`partition_indices`. The weights of each partition
    are scaled so that every partition carries the sample's full expected yield (sum of weights)."""
    total = float(np.sum(columns["weight"]))
    parts = {}
    for name, rows in partition_indices(len(columns["weight"]), fractions, seed, key).items():
        part = {k: v[rows] for k, v in columns.items()}
        sumw = float(part["weight"].sum())
        if sumw > 0:
            part["weight"] = part["weight"] * (total / sumw)
        parts[name] = part
    return parts


def bootstrap_rows(n: int, seed: int) -> np.ndarray:
    """Row indices of a bootstrap resample (``n`` draws with replacement) of ``n`` events, seeded by ``seed``:
    the training set of a generator replica."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0xB007]))
    return np.sort(rng.integers(0, n, n))


def split_rows(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A seeded split of ``n`` rows into two disjoint sorted index sets, the first holding ``fraction`` of them
    (the truth sample's calibration and test halves)."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x7E57]))
    perm = rng.permutation(n)
    k = int(round(fraction * n))
    return np.sort(perm[:k]), np.sort(perm[k:])


def split_objects(objects: dict[str, np.ndarray], fractions: PartitionConfig, seed: int,
                  key: str) -> dict[str, dict[str, np.ndarray]]:
    """The object-level columns of a sample (:func:`analysis.ntuple.read_objects` of its skimmed files, in
    file order) split into the same partitions as its flat ntuple (:func:`split_sample`, same ``seed`` and
    ``key``): row ``i`` of a partition here is row ``i`` of that partition there."""
    n = len(next(iter(objects.values()))) if objects else 0
    return {name: {k: v[rows] for k, v in objects.items()}
            for name, rows in partition_indices(n, fractions, seed, key).items()}
