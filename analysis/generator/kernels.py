"""Compiled loops (numba) for the detector simulation's per-event combinatorics.

The detector works on padded ``(events, slots)`` arrays; its pairwise steps (lepton isolation against every
parton, the closest pair of partons, the pT ordering of the stored objects) are loops over a handful of slots per
event, where numpy must build several ``(events, slots, slots)`` temporaries. These kernels run the same loops
without them. They do only arithmetic, comparisons and square roots (IEEE-exact), take every transcendental value
(eta, phi) from numpy, and sum in numpy's order (:func:`analysis.numeric.pairwise_sum`), so the detector's output is bit for bit
what the numpy expressions they replace give (``tests/analysis/test_generator_kernels.py`` compares both). Their inputs are finite by construction (the
generator's); with NaN they would not reproduce numpy's choices (a NaN distance or key is skipped, not chosen).
"""

from __future__ import annotations

import math

import numba
import numpy as np

from ..numeric import pairwise_sum

_TWO_PI = 2 * np.pi


@numba.njit(cache=True, inline="always")
def _delta_phi(a: float, b: float) -> float:
    d = a - b
    if d > np.pi:
        return d - _TWO_PI
    if d < -np.pi:
        return d + _TWO_PI
    return d


@numba.njit(cache=True, error_model="numpy")
def isolation_sums(leta, lphi, peta, pphi, ppt, valid, cone):
    """For leptons ``(n, L)`` and partons ``(n, P)`` (eta, phi, pT; ``valid`` mask): the sum over partons of
    ``max(1 - dR/cone, 0) * pT``, shape ``(n, L)``, with ``cone`` ``(n, L)``."""
    n, n_lep = leta.shape
    n_par = peta.shape[1]
    out = np.empty((n, n_lep))
    term = np.empty(n_par)
    for e in range(n):
        for j in range(n_lep):
            for k in range(n_par):
                d_eta = leta[e, j] - peta[e, k]
                d_phi = _delta_phi(lphi[e, j], pphi[e, k])
                d_r = math.sqrt(d_eta * d_eta + d_phi * d_phi)
                overlap = max(1.0 - d_r / cone[e, j], 0.0) * (1.0 if valid[e, k] else 0.0)
                term[k] = overlap * ppt[e, k]
            out[e, j] = pairwise_sum(term)
    return out


@numba.njit(cache=True, error_model="numpy")
def cone_sums(lep_eta, lep_phi, lep_event, p_eta, p_phi, p_pt, offsets, cone, exclude):
    """For leptons (flat, event ``lep_event``) and particles (flat, event e's in ``offsets[e]:offsets[e + 1]``):
    the scalar pT sum of the particles within Delta R < ``cone`` of each lepton, leaving out particle
    ``exclude[i]`` (the lepton itself; -1: none)."""
    out = np.zeros(lep_eta.shape[0])
    for i in range(lep_eta.shape[0]):
        e = lep_event[i]
        c2 = cone[i] * cone[i]
        s = 0.0
        for j in range(offsets[e], offsets[e + 1]):
            if j == exclude[i]:
                continue
            d_eta = p_eta[j] - lep_eta[i]
            d_phi = _delta_phi(p_phi[j], lep_phi[i])
            if d_eta * d_eta + d_phi * d_phi < c2:
                s += p_pt[j]
        out[i] = s
    return out


@numba.njit(cache=True, error_model="numpy")
def closest_pairs(eta, phi, valid):
    """Per row of ``(n, P)`` partons: the closest valid pair in (eta, phi), as indices ``i < j`` and its squared
    distance (``inf`` when fewer than two are valid; ties go to the first pair in ``np.triu_indices`` order)."""
    n, k = eta.shape
    best_i = np.zeros(n, np.int64)
    best_j = np.ones(n, np.int64)
    best_d2 = np.full(n, np.inf)
    for e in range(n):
        for i in range(k):
            for j in range(i + 1, k):
                if valid[e, i] and valid[e, j]:
                    d_eta = eta[e, i] - eta[e, j]
                    d_phi = _delta_phi(phi[e, i], phi[e, j])
                    d2 = d_eta * d_eta + d_phi * d_phi
                    if d2 < best_d2[e]:
                        best_d2[e], best_i[e], best_j[e] = d2, i, j
    return best_i, best_j, best_d2


@numba.njit(cache=True)
def ordered_selection(keep, key):
    """Flat indices (into the row-major ``(n, P)`` arrays) of the kept entries, per row in descending ``key``
    (ties by slot), rows one after another; and the count per row. What a stable argsort of
    ``where(keep, -key, inf)`` followed by the mask selects."""
    n, k = keep.shape
    counts = np.zeros(n, np.int64)
    for e in range(n):
        for s in range(k):
            if keep[e, s]:
                counts[e] += 1
    flat = np.empty(counts.sum(), np.int64)
    slots = np.empty(k, np.int64)
    pos = 0
    for e in range(n):
        m = 0
        for s in range(k):  # insertion sort, stable: a later slot moves only past strictly smaller keys
            if keep[e, s]:
                t = m
                while t > 0 and key[e, slots[t - 1]] < key[e, s]:
                    slots[t] = slots[t - 1]
                    t -= 1
                slots[t] = s
                m += 1
        for t in range(m):
            flat[pos] = e * k + slots[t]
            pos += 1
    return flat, counts
