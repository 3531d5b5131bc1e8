"""Neutrino reconstruction in single-lepton ttbar: the classical baseline and the measures of nu-Flows.

nu-Flows (Leigh, Raine, Zoch, Golling, SciPost Phys. 14, 159 (2023), arXiv:2207.00664) replaces the W-mass
solution for the neutrino by a conditional flow p(neutrino | reconstructed event). This module holds what does
not depend on the model: the inputs and targets from the skim's object-level columns
(:func:`analysis.skim.object_columns`), the W-mass baseline, and the measures the paper uses:

- resolution and bias of pz and eta against the true neutrino (:func:`regression_metrics`);
- the downstream chi2 jet assignment (:func:`chi2_assignment`): all assignments of up to 9 leading jets to
  (leptonic b, hadronic b, two W quarks), chi2 of the leptonic-top, hadronic-top and hadronic-W masses with the
  sigma of each term taken from the true assignment (:func:`assignment_sigmas`), and the fraction of events
  whose leptonic b is right, per jet multiplicity (:func:`assignment_efficiency`);
- calibration of posterior samples: the rank of the truth among them (KS distance to uniform) and the coverage
  of the central 68 % and 95 % intervals (:func:`rank_calibration`).

Arrays are numpy; momenta in GeV; neutrinos as ``(px, py, pz)``.
"""

from __future__ import annotations

import itertools
from typing import Mapping

import numpy as np
from scipy import stats

from .features import M_TOP, M_W, neutrino_pz

MULTIPLICITIES = (4, 5, 6, 7, 8, 9)
"""Jet multiplicities of the assignment table; the last one collects 9 and more."""


def _p4(pt, eta, phi, mass) -> np.ndarray:
    """``(..., 4)`` array (E, px, py, pz)."""
    pt, eta, phi, mass = (np.asarray(v, np.float64) for v in (pt, eta, phi, mass))
    px, py, pz = pt * np.cos(phi), pt * np.sin(phi), pt * np.sinh(eta)
    return np.stack([np.sqrt(px**2 + py**2 + pz**2 + mass**2), px, py, pz], axis=-1)


def _mass(p4: np.ndarray) -> np.ndarray:
    return np.sqrt(np.maximum(p4[..., 0] ** 2 - (p4[..., 1:] ** 2).sum(axis=-1), 0.0))


def lepton_p4(objects: Mapping[str, np.ndarray]) -> np.ndarray:
    return _p4(objects["obj_lepton_pt"], objects["obj_lepton_eta"], objects["obj_lepton_phi"],
               objects["obj_lepton_mass"])


def jet_p4(objects: Mapping[str, np.ndarray]) -> np.ndarray:
    """``(n, 10, 4)``; padded slots are zero."""
    return _p4(objects["obj_jet_pt"], objects["obj_jet_eta"], objects["obj_jet_phi"], objects["obj_jet_mass"])


def true_neutrino(objects: Mapping[str, np.ndarray]) -> np.ndarray:
    """The neutrino of the leptonic W from the truth record, ``(n, 3)`` = (px, py, pz)."""
    return _p4(objects["truth_nu_pt"], objects["truth_nu_eta"], objects["truth_nu_phi"], 0.0)[:, 1:]


def w_mass_neutrino(objects: Mapping[str, np.ndarray]) -> np.ndarray:
    """The classical estimate: the MET as the neutrino's transverse momentum and pz from m(l nu) = m_W, the
    smaller-|pz| root (the real part when complex), ``(n, 3)``."""
    lep = lepton_p4(objects)
    px = np.asarray(objects["obj_met_pt"], np.float64) * np.cos(objects["obj_met_phi"])
    py = np.asarray(objects["obj_met_pt"], np.float64) * np.sin(objects["obj_met_phi"])
    pz = neutrino_pz(lep[:, 1], lep[:, 2], lep[:, 3], lep[:, 0], px, py)
    return np.stack([px, py, pz], axis=1)


def eta_of(nu: np.ndarray) -> np.ndarray:
    return np.arcsinh(nu[..., 2] / np.maximum(np.hypot(nu[..., 0], nu[..., 1]), 1e-9))


def neutrino_p4(nu: np.ndarray) -> np.ndarray:
    return np.concatenate([np.linalg.norm(nu, axis=-1, keepdims=True), nu], axis=-1)


def _spread(residual: np.ndarray) -> dict[str, float]:
    q16, q50, q84 = np.percentile(residual, [16, 50, 84])
    return {"bias": float(q50), "resolution": float(0.5 * (q84 - q16))}


def regression_metrics(predicted: np.ndarray, truth: np.ndarray) -> dict[str, dict[str, float]]:
    """Bias (median residual) and resolution (half the 16-84 % interquantile width) of pz and eta, predicted
    minus true neutrino (both ``(n, 3)``)."""
    return {"pz": _spread(predicted[:, 2] - truth[:, 2]), "eta": _spread(eta_of(predicted) - eta_of(truth))}


def true_roles(objects: Mapping[str, np.ndarray]) -> np.ndarray:
    """``(n, 4)`` jet slots of (leptonic b, hadronic b, W quark, W quark) from the truth matching, -1 where the
    parton has no matched jet among the stored ones. The leptonic top decays to b and l+ (t -> b W+) or to
    b-bar and l-: the leptonic b has the PDG sign opposite to the lepton's (l+ has a negative PDG id)."""
    pdg = np.asarray(objects["truth_jet_parton_pdgId"])
    present = np.asarray(objects["obj_jet_pt"]) > 0
    lep_sign = -np.sign(objects["obj_lepton_pdgId"])  # +1 for l+ (leptonic top is t, its b has pdgId +5)
    roles = np.full((len(pdg), 4), -1)

    def first(mask: np.ndarray, skip: np.ndarray | None = None) -> np.ndarray:
        m = mask & present
        if skip is not None:
            m &= np.arange(m.shape[1])[None, :] != skip[:, None]
        return np.where(m.any(axis=1), np.argmax(m, axis=1), -1)

    roles[:, 0] = first(pdg == 5 * lep_sign[:, None])
    roles[:, 1] = first(pdg == -5 * lep_sign[:, None])
    light = (np.abs(pdg) >= 1) & (np.abs(pdg) <= 4)
    roles[:, 2] = first(light)
    roles[:, 3] = first(light, roles[:, 2])
    roles[roles[:, 2] < 0, 3] = -1
    return roles


def _top_masses(b_lep, b_had, q1, q2, lep, nu_p4) -> np.ndarray:
    """The chi2 terms' masses m(b_lep l nu), m(b_had q q), m(q q) from four-vectors (any common leading shape),
    stacked on a last axis of 3."""
    return np.stack([_mass(b_lep + lep + nu_p4), _mass(b_had + q1 + q2), _mass(q1 + q2)], axis=-1)


def role_masses(lep: np.ndarray, nu: np.ndarray, jets: np.ndarray, roles: np.ndarray) -> np.ndarray:
    """``(n, 3)`` masses m(b_lep l nu), m(b_had q q), m(q q) for ``roles`` ``(n, 4)`` of jet slots."""
    b_lep, b_had, q1, q2 = (np.take_along_axis(jets, roles[:, k, None, None], axis=1)[:, 0] for k in range(4))
    return _top_masses(b_lep, b_had, q1, q2, lep, neutrino_p4(nu))


def assignment_sigmas(objects: Mapping[str, np.ndarray], nu: np.ndarray) -> np.ndarray:
    """Sigma of each chi2 term (leptonic top, hadronic top, hadronic W) for neutrino estimate ``nu``: the RMS,
    about its nominal mass, of that mass with the true assignment (events where all four partons are matched)."""
    roles = true_roles(objects)
    ok = np.all(roles >= 0, axis=1)
    m = role_masses(lepton_p4(objects)[ok], nu[ok], jet_p4(objects)[ok], roles[ok])
    return np.sqrt(np.mean((m - np.array([M_TOP, M_TOP, M_W])) ** 2, axis=0))


def _assignments(k: int) -> np.ndarray:
    """All (b_lep, b_had, q1 < q2) of ``k`` jets, ``(m, 4)``."""
    rows = [(a, b, c, d) for a, b in itertools.permutations(range(k), 2)
            for c, d in itertools.combinations([j for j in range(k) if j not in (a, b)], 2)]
    return np.array(rows, dtype=np.int64)


def chi2_assignment(objects: Mapping[str, np.ndarray], nu: np.ndarray, sigmas: np.ndarray,
                    max_jets: int = 9) -> np.ndarray:
    """The jet assignment minimising chi2 = sum of ((m - m_nominal) / sigma)^2 over the leptonic-top, hadronic-
    top and hadronic-W masses, over all assignments of the leading ``min(n_jets, max_jets)`` jets; ``(n, 4)``
    jet slots (b_lep, b_had, q1, q2)."""
    lep, jets = lepton_p4(objects), jet_p4(objects)
    n_jets = np.minimum(np.asarray(objects["obj_n_jets"]), min(max_jets, jets.shape[1]))
    nominal = np.array([M_TOP, M_TOP, M_W])
    out = np.full((len(lep), 4), -1)
    for k in np.unique(n_jets):
        if k < 4:
            continue
        rows = np.flatnonzero(n_jets == k)
        cand = _assignments(int(k))
        J, L, N = jets[rows], lep[rows][:, None], neutrino_p4(nu[rows])[:, None]
        best_chi2 = np.full(len(rows), np.inf)
        for lo in range(0, len(cand), 256):  # bounded memory: (events, candidates, 4) per role
            c = cand[lo:lo + 256]
            m = _top_masses(*(J[:, c[:, r]] for r in range(4)), L, N)
            chi2 = (((m - nominal) / sigmas) ** 2).sum(axis=-1)
            i = np.argmin(chi2, axis=1)
            value = chi2[np.arange(len(rows)), i]
            better = value < best_chi2
            best_chi2[better] = value[better]
            out[rows[better]] = c[i[better]]
    return out


def assignment_efficiency(objects: Mapping[str, np.ndarray], chosen: np.ndarray) -> dict[str, dict[str, float]]:
    """Per jet multiplicity (4 ... 8, and 9 or more), the fraction of events whose chosen leptonic b is the true
    one, among events where the true leptonic b is a stored jet, with its binomial error."""
    truth = true_roles(objects)[:, 0]
    n_jets = np.asarray(objects["obj_n_jets"])
    out = {}
    for k in MULTIPLICITIES:
        sel = ((n_jets == k) if k < MULTIPLICITIES[-1] else (n_jets >= k)) & (truth >= 0)
        n = int(sel.sum())
        p = float(np.mean(chosen[sel, 0] == truth[sel])) if n else float("nan")
        out[f"{k}" if k < MULTIPLICITIES[-1] else f">={k}"] = {
            "events": n, "correct_b_lep": p, "error": float(np.sqrt(p * (1 - p) / n)) if n else float("nan")}
    return out


def rank_calibration(samples: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """Calibration of posterior samples ``(n, S)`` of one quantity against ``truth`` ``(n,)``: the rank of the
    truth among the samples as a randomised probability integral transform (exactly uniform for a calibrated
    posterior; KS distance to uniform and its p-value) and the coverage of the central 68 % and 95 % sample
    intervals."""
    samples, truth = np.asarray(samples, np.float64), np.asarray(truth, np.float64)
    s = samples.shape[1]
    below = (samples < truth[:, None]).sum(axis=1)
    ties = (samples == truth[:, None]).sum(axis=1)
    # randomised probability integral transform: (rank + U(0, 1)) / (S + 1), ties spread over their positions,
    # is exactly uniform on [0, 1] for a calibrated posterior (S + 1 equally likely ranks, each a cell of 1/(S+1))
    u = np.random.default_rng(0).uniform(size=len(truth))
    rank = (below + u * (ties + 1)) / (s + 1)
    ks = stats.kstest(rank, "uniform")
    out = {"ks": float(ks.statistic), "ks_pvalue": float(ks.pvalue)}
    for level in (0.68, 0.95):
        lo, hi = np.quantile(samples, [(1 - level) / 2, (1 + level) / 2], axis=1)
        out[f"coverage{round(100 * level)}"] = float(np.mean((truth >= lo) & (truth <= hi)))
    return out


# -- inputs and targets of a conditional flow p(neutrino | event) ----------------------------------------------

OBJECT_FEATURES = ["log_pt", "eta", "cos_dphi", "sin_dphi", "log_mass", "btag", "soft_lepton", "is_lepton",
                   "is_met", "is_jet"]
"""Per-object context features: kinematics in the frame where the lepton has azimuth 0 (the physics is invariant
under a common rotation), the b-tag score and the presence of a soft lepton for jets, and the object type."""
EVENT_FEATURES = ["n_jets", "log_met"]
TARGETS = ["nu_px", "nu_py", "nu_pz"]
"""The regression target: the neutrino momentum in the lepton's azimuthal frame (GeV)."""


def target_table():
    """The feature table of the target (momentum components in GeV, kind ``standard``: only standardised, so
    the flow's density orders samples as the density of the momenta does, as the mode estimate needs)."""
    from models.features import Feature, FeatureTable

    return FeatureTable([Feature(name, "standard", "GeV", label=label)
                         for name, label in zip(TARGETS, ["neutrino px'", "neutrino py'", "neutrino pz"])])


def _rotate(px: np.ndarray, py: np.ndarray, angle: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    c, s = np.cos(angle), np.sin(angle)
    return c * px + s * py, -s * px + c * py


def to_lepton_frame(nu: np.ndarray, objects: Mapping[str, np.ndarray]) -> np.ndarray:
    """``(n, 3)`` lab-frame neutrino momenta -> the frame where the lepton's azimuth is zero."""
    px, py = _rotate(nu[:, 0], nu[:, 1], np.asarray(objects["obj_lepton_phi"], np.float64))
    return np.stack([px, py, nu[:, 2]], axis=1)


def from_lepton_frame(nu: np.ndarray, objects: Mapping[str, np.ndarray]) -> np.ndarray:
    """Inverse of :func:`to_lepton_frame`; ``nu`` may carry leading sample axes ``(..., n, 3)``."""
    px, py = _rotate(nu[..., 0], nu[..., 1], -np.asarray(objects["obj_lepton_phi"], np.float64))
    return np.stack([px, py, nu[..., 2]], axis=-1)


def regression_context(objects: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The context of p(neutrino | event): ``(objects (n, 12, len(OBJECT_FEATURES)), mask (n, 12), event (n, 2))``
    with the lepton, the MET and the 10 jet slots as objects (padded jet slots masked out), for
    :class:`models.embedding.DeepSetEmbedding`."""
    n = len(objects["obj_lepton_pt"])
    ref = np.asarray(objects["obj_lepton_phi"], np.float64)
    pts = [objects["obj_lepton_pt"][:, None], objects["obj_met_pt"][:, None], objects["obj_jet_pt"]]
    etas = [objects["obj_lepton_eta"][:, None], np.zeros((n, 1)), objects["obj_jet_eta"]]
    phis = [objects["obj_lepton_phi"][:, None], objects["obj_met_phi"][:, None], objects["obj_jet_phi"]]
    masses = [objects["obj_lepton_mass"][:, None], np.zeros((n, 1)), objects["obj_jet_mass"]]
    pt, eta = np.concatenate(pts, axis=1).astype(np.float64), np.concatenate(etas, axis=1).astype(np.float64)
    dphi = np.concatenate(phis, axis=1) - ref[:, None]
    mass = np.concatenate(masses, axis=1).astype(np.float64)
    k = pt.shape[1]
    kind = np.zeros((n, k, 3))
    kind[:, 0, 0], kind[:, 1, 1], kind[:, 2:, 2] = 1.0, 1.0, 1.0
    soft = np.zeros((n, k))
    if "obj_jet_nMuons" in objects:
        soft[:, 2:] = (np.asarray(objects["obj_jet_nMuons"]) + np.asarray(objects["obj_jet_nElectrons"])) > 0
    btag = np.zeros((n, k))
    btag[:, 2:] = objects["obj_jet_btag"]
    mask = pt > 0
    feats = np.stack([np.log(np.maximum(pt, 1e-3)), eta, np.cos(dphi), np.sin(dphi), np.log1p(mass), btag, soft],
                     axis=-1)
    feats = np.concatenate([feats, kind], axis=-1) * mask[..., None]
    event = np.stack([np.asarray(objects["obj_n_jets"], np.float64),
                      np.log(np.maximum(np.asarray(objects["obj_met_pt"], np.float64), 1e-3))], axis=1)
    return feats.astype(np.float32), mask, event.astype(np.float32)


TAYLOR_TARGET = "the momentum along the lepton (px')"
"""What introspection differentiates: the flow's first target, its posterior mean (:func:`taylor_inputs`)."""


def taylor_inputs() -> list[tuple[str, int, tuple[int, ...]]]:
    """The context entries whose Taylor coefficients introspection reports (``(label, context element, index in
    the event)``, :func:`analysis.introspection.regression_coefficients`): the lepton's pT and eta, the MET's pT
    and direction relative to the lepton, the four leading jets' kinematics and b-tag scores, and the event
    features."""
    f = {name: i for i, name in enumerate(OBJECT_FEATURES)}
    out = [("lepton log pT", 0, (0, f["log_pt"])), ("lepton eta", 0, (0, f["eta"])),
           ("MET log pT", 0, (1, f["log_pt"])), ("MET cos dphi", 0, (1, f["cos_dphi"])),
           ("MET sin dphi", 0, (1, f["sin_dphi"]))]
    for j in range(4):
        out += [(f"jet{j + 1} {label}", 0, (2 + j, f[name])) for label, name in
                (("log pT", "log_pt"), ("eta", "eta"), ("cos dphi", "cos_dphi"), ("sin dphi", "sin_dphi"),
                 ("log mass", "log_mass"), ("b tag", "btag"))]
    return out + [(name, 2, (i,)) for i, name in enumerate(EVENT_FEATURES)]


def mode_of_samples(samples: np.ndarray, log_prob: np.ndarray) -> np.ndarray:
    """The mode estimate: per event the sample ``(S, n, 3)`` with the highest model log-density ``(S, n)``."""
    best = np.argmax(log_prob, axis=0)
    return samples[best, np.arange(samples.shape[1])]


# -- one application of the conditional layer: data and evaluation -------------------------------------------

def regression_data(objects: Mapping[str, np.ndarray]) -> tuple[np.ndarray, tuple]:
    """``(targets (n, 3), context)`` of the events: the true neutrino in the lepton frame, and
    :func:`regression_context`."""
    return to_lepton_frame(true_neutrino(objects), objects), regression_context(objects)


def embedding_spec(out_features: int, hidden: list[int]) -> dict:
    """The deep-sets embedding of :func:`regression_context` (``models.embedding.build_embedding``)."""
    return {"kind": "deep_sets", "object_features": len(OBJECT_FEATURES), "event_features": len(EVENT_FEATURES),
            "out_features": out_features, "hidden_features": list(hidden)}


def leptonic_masses(objects: Mapping[str, np.ndarray], nu: np.ndarray) -> dict[str, np.ndarray]:
    """m(l nu) and the leptonic top mass m(b l nu) with the true leptonic b (NaN where it is not a stored jet)."""
    lep = lepton_p4(objects)
    n4 = neutrino_p4(nu)
    b = true_roles(objects)[:, 0]
    ok = b >= 0
    m_blv = np.full(len(lep), np.nan)
    jets = jet_p4(objects)
    r = np.flatnonzero(ok)
    m_blv[r] = _mass(jets[r, b[r]] + lep[r] + n4[r])
    return {"m_lv": _mass(lep + n4), "m_blv": m_blv}


def _peak(m: np.ndarray, nominal: float) -> dict[str, float]:
    m = m[np.isfinite(m)]
    q16, q50, q84 = np.quantile(m, [0.16, 0.5, 0.84])
    return {"median": float(q50), "resolution": float(0.5 * (q84 - q16)),
            "within_10_percent": float(np.mean(np.abs(m / nominal - 1) < 0.1))}


def gap_closed(efficiencies: Mapping[str, Mapping[str, dict]], method: str, baseline: str = "w_mass",
               ceiling: str = "truth", multiplicities: tuple[str, ...] = ("5", "6", "7", "8", ">=9")) -> dict:
    """Per multiplicity and averaged over ``multiplicities`` (those with events), the fraction of the gap in
    leptonic-b efficiency between ``baseline`` and ``ceiling`` that ``method`` closes."""
    out, closed = {}, []
    for k in efficiencies[method]:
        e = {m: efficiencies[m][k]["correct_b_lep"] for m in (method, baseline, ceiling)}
        gap = e[ceiling] - e[baseline]
        out[k] = float((e[method] - e[baseline]) / gap) if efficiencies[method][k]["events"] and gap > 0 \
            else float("nan")
        if k in multiplicities and np.isfinite(out[k]):
            closed.append(out[k])
    out["mean_5_to_9"] = float(np.mean(closed)) if closed else float("nan")
    return out


def quantile_coverage(quantiles: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """Coverage of predicted 50 % and 68 % intervals: ``quantiles`` ``(n, 4)`` at 16, 25, 75 and 84 % (a
    quantile regression's output), ``truth`` ``(n,)``."""
    inside = lambda lo, hi: float(np.mean((truth >= quantiles[:, lo]) & (truth <= quantiles[:, hi])))  # noqa: E731
    return {"coverage50": inside(1, 2), "coverage68": inside(0, 3)}


def evaluate(objects: Mapping[str, np.ndarray], estimates: Mapping[str, np.ndarray],
             draws: Mapping[str, np.ndarray] | None = None) -> dict:
    """Every measure of the neutrino estimates (lab-frame ``(n, 3)`` each; ``truth`` is added) on the events
    ``objects``: pz and eta resolution and bias, m_lv and m_blv peaks, the chi2 assignment's leptonic-b
    efficiency per multiplicity with the fraction of the W-mass-to-truth gap closed, and, for posterior
    ``draws`` ``(S, n, 3)`` per method, the calibration of each component."""
    truth = true_neutrino(objects)
    estimates = {**estimates, "truth": truth}
    out: dict = {"events": int(len(truth)), "resolution": {}, "masses": {}, "assignment": {}, "calibration": {}}
    for name, nu in estimates.items():
        out["resolution"][name] = regression_metrics(nu, truth)
        masses = leptonic_masses(objects, nu)
        out["masses"][name] = {"m_lv": _peak(masses["m_lv"], M_W), "m_blv": _peak(masses["m_blv"], M_TOP)}
        sig = assignment_sigmas(objects, nu)
        out["assignment"][name] = {"sigmas": sig.tolist(),
                                   "efficiency": assignment_efficiency(objects, chi2_assignment(objects, nu, sig))}
    eff = {k: v["efficiency"] for k, v in out["assignment"].items()}
    out["gap_closed"] = {k: gap_closed(eff, k) for k in estimates if k not in ("w_mass", "truth")}
    for name, d in (draws or {}).items():
        out["calibration"][name] = {c: rank_calibration(d[..., i].T, truth[:, i])
                                    for i, c in enumerate(("px", "py", "pz"))}
    return out
