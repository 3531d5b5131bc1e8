"""Feeding the analysis with the conditional regressions of issue 15: the high-level masses recomputed with the
regressed neutrino (nu-Flows: Leigh, Raine, Zoch, Golling, SciPost Phys. 14, 159 (2023)) and the regressed
energies of the b candidates (as CMS corrects b-tagged jets with ``Jet_bRegCorr``: Comput. Softw. Big Sci. 4
(2020) 10), on every event of every sample the analysis uses, through the same trained models.

What is replaced and how:

- the neutrino: the mode of ``draws`` posterior draws of the nu-Flows model (the estimate that assigns the
  leptonic b best, :func:`analysis.neutrino.evaluate`) instead of the W-mass solution with the MET, so ``m_lv`` is
  m(l nu) of the estimate (no point mass at m_W), and every mass with the leptonic W uses it;
- the b candidates (the two of the four leading jets with the highest b-tag score, the assignment of
  :func:`analysis.features.high_level_masses`, whatever their true flavour): their four-momenta scaled by the
  posterior median of the b-jet response (:mod:`analysis.bjet`);
- recomputed: :data:`REGRESSED_FEATURES`; ``m_jj`` (the two light jets) and the 21 low-level features stay.
"""

from __future__ import annotations

from typing import Callable, Mapping

import numpy as np

from . import bjet, neutrino
from .features import HIGH_LEVEL, high_level_masses
from .io import InputError

REGRESSED_FEATURES = ["m_lv", "m_jjj", "m_jlv", "m_bb", "m_wbb", "m_wwbb"]
"""The high-level masses that change when the neutrino and the b candidates are regressed."""
APPLICATIONS = ("neutrino", "bjet")


def _four_jets(objects: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {k: np.asarray(objects[f"obj_jet_{k}"], np.float64)[:, :4] for k in ("pt", "eta", "phi", "mass", "btag")}


def b_candidates(objects: Mapping[str, np.ndarray]) -> np.ndarray:
    """``(n, 2)`` jet slots of the b candidates: the two of the four leading jets with the highest b-tag score
    (stable order, as :func:`~analysis.features.high_level_masses` assigns them)."""
    return np.argsort(-_four_jets(objects)["btag"], axis=1, kind="stable")[:, :2]


def recompute_masses(objects: Mapping[str, np.ndarray], nu: np.ndarray | None = None,
                     b_response: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """The seven high-level masses (float32) from the object columns of the skim: as the skim computed them when
    ``nu`` and ``b_response`` are None; with ``nu`` ``(n, 3)`` (lab px, py, pz) the neutrino replaced; with
    ``b_response`` ``(n, 2)`` the b candidates' (:func:`b_candidates`) four-momenta scaled by it."""
    lepton = {k: np.asarray(objects[f"obj_lepton_{k}"], np.float64) for k in ("pt", "eta", "phi", "mass")}
    met = {k: np.asarray(objects[f"obj_met_{k}"], np.float64) for k in ("pt", "phi")}
    jets = _four_jets(objects)
    if b_response is not None:
        rows = np.arange(len(lepton["pt"]))[:, None]
        slots = b_candidates(objects)
        factor = np.ones_like(jets["pt"])
        factor[rows, slots] = np.asarray(b_response, np.float64)
        jets["pt"], jets["mass"] = jets["pt"] * factor, jets["mass"] * factor
    masses = high_level_masses(lepton, met, jets, neutrino=nu)
    return {k: np.asarray(masses[k], np.float32) for k in HIGH_LEVEL}


def check_alignment(columns: Mapping[str, np.ndarray], objects: Mapping[str, np.ndarray], what: str) -> None:
    """InputError unless the object columns belong row by row to the flat features: ``m_jj`` (which neither
    regression changes) recomputed from the objects must equal the ntuple's within float32 rounding."""
    n, m = len(columns["m_jj"]), len(objects["obj_lepton_pt"])
    if n != m:
        raise InputError(f"{what}: {n} events but {m} rows of object columns; skim it again")
    if n == 0:
        return
    mjj = recompute_masses({k: v[:2000] for k, v in objects.items()})["m_jj"]
    bad = ~np.isclose(mjj, np.asarray(columns["m_jj"][:2000], np.float32), rtol=1e-4, atol=1e-3)
    if bad.any():
        raise InputError(f"{what}: the object columns do not match the features row by row ({int(bad.sum())} "
                         "of the first 2000 events differ in m_jj); skim it again")


def neutrino_estimate(fit, objects: Mapping[str, np.ndarray], draws: int, seed: int,
                      device: str = "cpu") -> np.ndarray:
    """``(n, 3)`` lab-frame neutrino momenta: the mode of ``draws`` posterior draws of the nu-Flows model
    ``fit`` (:class:`models.fit.ConditionalFit`)."""
    from models.fit import sample_posterior
    samples, logp = sample_posterior(fit, neutrino.regression_context(objects), draws, seed=seed, device=device)
    return neutrino.mode_of_samples(neutrino.from_lepton_frame(samples, objects), logp)


def b_response_estimate(fit, objects: Mapping[str, np.ndarray], draws: int, seed: int,
                        device: str = "cpu") -> np.ndarray:
    """``(n, 2)`` posterior-median responses of the b candidates (:func:`b_candidates`) from the b-jet model
    ``fit``."""
    from models.fit import sample_posterior
    slots = b_candidates(objects)
    n = len(slots)
    event, slot = np.repeat(np.arange(n), 2), slots.reshape(-1)
    samples, _ = sample_posterior(fit, bjet.jet_context(objects, event, slot), draws, seed=seed, device=device)
    return np.median(samples[..., 0], axis=0).reshape(n, 2)


def regressed_columns(columns: Mapping[str, np.ndarray], objects: Mapping[str, np.ndarray],
                      fits: Mapping[str, object], draws: int, seed: int, device: str = "cpu",
                      chunk: int = 20_000, what: str = "sample",
                      progress: Callable[[int, int], None] | None = None) -> dict[str, np.ndarray]:
    """A copy of the flat ``columns`` with :data:`REGRESSED_FEATURES` recomputed through the models ``fits``
    (``{"neutrino": ..., "bjet": ...}``; either may be missing, then that part stays as measured), in chunks of
    ``chunk`` events (bounded memory; chunk ``i`` draws with seed ``seed + i``)."""
    unknown = sorted(set(fits) - set(APPLICATIONS))
    if unknown or not fits:
        raise ValueError(f"fits: expected some of {APPLICATIONS}, got {sorted(fits)}")
    check_alignment(columns, objects, what)
    n = len(columns["m_jj"])
    out = {k: np.array(v) for k, v in columns.items()}
    for i, lo in enumerate(range(0, n, chunk)):
        rows = slice(lo, min(n, lo + chunk))
        obj = {k: v[rows] for k, v in objects.items()}
        nu = neutrino_estimate(fits["neutrino"], obj, draws, seed + i, device) if "neutrino" in fits else None
        resp = b_response_estimate(fits["bjet"], obj, draws, seed + i, device) if "bjet" in fits else None
        masses = recompute_masses(obj, nu, resp)
        for k in REGRESSED_FEATURES:
            out[k][rows] = masses[k]
        if progress is not None:
            progress(rows.stop, n)
    bad = [k for k in REGRESSED_FEATURES if not np.all(np.isfinite(out[k]))]
    if bad:
        raise InputError(f"{what}: non-finite regressed masses {bad}; the regression models are broken")
    return out
