"""The 28 features of the HIGGS benchmark (Baldi, Sadowski, Whiteson, Nat. Commun. 5 (2014) 4308), in the data
set's order and meaning, computed from a selected lepton, the MET and the four leading jets.

Low level (21): lepton pT, eta, phi; MET magnitude and phi; for jets 1-4 (ordered by pT) pT, eta, phi and a
discrete b-tag level (the number of b-tag working points the jet passes, by default medium and tight, so 0, 1
or 2 like the three levels of the published data set).

High level (7), with this jet assignment (the paper does not document one; ours is fixed and reproducible):

- the two of the four leading jets with the highest b-tag score are the b candidates, the other two form the
  hadronic W: ``m_jj``;
- the neutrino pz solves m(l nu) = m_W with the MET as neutrino pT (the smaller-|pz| root; the real part when
  there is no real root), so ``m_lv`` is exactly m_W whenever a real solution exists (a point mass) and above
  it otherwise;
- of the two b candidates, the one making m(jj b) closer to m_t forms the hadronic top, ``m_jjj``; the other
  joins the leptonic W: ``m_jlv``;
- ``m_bb`` = m(b b); ``m_wbb`` = m(l nu b b) (the leptonic W with the h -> bb candidate, i.e. the H+- candidate
  when the W from H+- decays leptonically); ``m_wwbb`` = m(l nu j j b b), the H0 candidate.
"""

from __future__ import annotations

import functools
from typing import Callable, Sequence

import numpy as np
import vector

from models.features import Feature, FeatureTable

M_W = 80.38
M_TOP = 172.5

LOW_LEVEL = [
    "lepton_pT", "lepton_eta", "lepton_phi", "missing_energy_magnitude", "missing_energy_phi",
    "jet1_pt", "jet1_eta", "jet1_phi", "jet1_btag",
    "jet2_pt", "jet2_eta", "jet2_phi", "jet2_btag",
    "jet3_pt", "jet3_eta", "jet3_phi", "jet3_btag",
    "jet4_pt", "jet4_eta", "jet4_phi", "jet4_btag",
]
HIGH_LEVEL = ["m_jj", "m_jjj", "m_lv", "m_jlv", "m_bb", "m_wbb", "m_wwbb"]
FEATURES = LOW_LEVEL + HIGH_LEVEL
"""The 28 feature names, in the order of the columns of ``HIGGS.csv.gz``."""

BTAG_FEATURES = [f"jet{i}_btag" for i in range(1, 5)]
BTAG_SCORES = [f"jet{i}_btag_score" for i in range(1, 5)]
"""The continuous b-tag discriminants of the four leading jets: not HIGGS features, but kept by the skim of
NanoAOD (simulated or real) so that a generator can model them and derive the discrete levels from them."""
JET_MASSES = [f"jet{i}_mass" for i in range(1, 5)]
"""The masses of the four leading jets: not HIGGS features; kept by the skim of NanoAOD so that a generator can
model them and derive the six jet-dependent high-level masses exactly (:data:`MASS_DERIVED_INPUTS`)."""
# the skim stores the four leading jets in decreasing pT (in GeV; the HIGGS CSV's normalised jets are not)
JET_PTS = [f"jet{i}_pt" for i in range(1, 5)]
ANGLE_FEATURES = ["lepton_phi", "missing_energy_phi"] + [f"jet{i}_phi" for i in range(1, 5)]


def neutrino_pz(lep_px, lep_py, lep_pz, lep_e, met_px, met_py, m_w: float = M_W, return_real: bool = False):
    """Longitudinal neutrino momentum from the W-mass constraint m(l nu) = m_W (massless lepton and neutrino).

    Returns the root of smaller absolute value, or the real part of the complex pair when the discriminant is
    negative (MET resolution pushed the transverse mass above m_W). With ``return_real``, also the mask of
    events whose solution is real (where m(l nu) = m_W exactly).
    """
    pt2 = lep_px**2 + lep_py**2
    mu = 0.5 * m_w**2 + lep_px * met_px + lep_py * met_py
    a = mu * lep_pz / pt2
    disc = a**2 - (lep_e**2 * (met_px**2 + met_py**2) - mu**2) / pt2
    root = np.sqrt(np.maximum(disc, 0.0))
    pz = np.where(np.abs(a - root) < np.abs(a + root), a - root, a + root)
    return (pz, disc >= 0) if return_real else pz


def lv_mass(lepton_pt, lepton_eta, lepton_phi, met, met_phi, lepton_mass=0.0) -> np.ndarray:
    """m(l nu) with the neutrino pz from the W-mass constraint: exactly m_W where the constraint has a real
    solution, above it otherwise. A deterministic function of the lepton and MET features."""
    lep = _ptetaphim(lepton_pt, lepton_eta, lepton_phi, np.broadcast_to(lepton_mass, np.shape(lepton_pt)))
    met_px, met_py = met * np.cos(met_phi), met * np.sin(met_phi)
    pz, real = neutrino_pz(lep.px, lep.py, lep.pz, lep.E, met_px, met_py, return_real=True)
    nu = _lorentz(met_px, met_py, pz, np.sqrt(met_px**2 + met_py**2 + pz**2))
    return np.where(real, M_W, np.maximum(np.asarray((lep + nu).mass), M_W))


DERIVED_FEATURES = {
    "m_lv": (("lepton_pT", "lepton_eta", "lepton_phi", "missing_energy_magnitude", "missing_energy_phi"), lv_mass),
}
"""Features that are deterministic functions of others (valid for features in GeV): name -> (inputs, function)."""


JET_MASS_FEATURES = ["m_jj", "m_jjj", "m_jlv", "m_bb", "m_wbb", "m_wwbb"]
"""The high-level masses built from the jets: deterministic functions of :data:`MASS_DERIVED_INPUTS`."""
MASS_DERIVED_INPUTS = (["lepton_pT", "lepton_eta", "lepton_phi", "missing_energy_magnitude", "missing_energy_phi"]
                       + [f"jet{i}_{k}" for i in range(1, 5) for k in ("pt", "eta", "phi")]
                       + JET_MASSES + BTAG_SCORES)


def _jet_mass_feature(*inputs: np.ndarray, name: str) -> np.ndarray:
    """One of :data:`JET_MASS_FEATURES` from the columns :data:`MASS_DERIVED_INPUTS` (in that order), with the
    jet assignment of :func:`high_level_masses` and a massless lepton (as for ``m_lv``)."""
    c = dict(zip(MASS_DERIVED_INPUTS, (np.asarray(v, np.float64) for v in inputs)))
    lepton = {"pt": c["lepton_pT"], "eta": c["lepton_eta"], "phi": c["lepton_phi"]}
    met = {"pt": c["missing_energy_magnitude"], "phi": c["missing_energy_phi"]}
    jets = {k: np.stack([c[f"jet{i}_{k}"] for i in range(1, 5)], axis=1) for k in ("pt", "eta", "phi", "mass")}
    jets["btag"] = np.stack([c[s] for s in BTAG_SCORES], axis=1)
    return high_level_masses(lepton, met, jets)[name]


def derivations(btag_working_points: Sequence[float] = ()) -> dict[str, tuple[tuple[str, ...], Callable]]:
    """:data:`DERIVED_FEATURES`, the jet-dependent masses (:data:`JET_MASS_FEATURES`) as functions of the
    objects (:data:`MASS_DERIVED_INPUTS`, usable where the jets' masses and b-tag scores are modelled), and with
    ``btag_working_points`` also each jet's b-tag level as a function of its continuous score
    (:data:`BTAG_SCORES`, :func:`btag_levels`)."""
    out = dict(DERIVED_FEATURES)
    for name in JET_MASS_FEATURES:
        out[name] = (tuple(MASS_DERIVED_INPUTS), functools.partial(_jet_mass_feature, name=name))
    if len(btag_working_points):
        wps = [float(w) for w in btag_working_points]
        for level, score in zip(BTAG_FEATURES, BTAG_SCORES):
            out[level] = ((score,), functools.partial(btag_levels, working_points=wps))
    return out


def feature_kind(name: str) -> str:
    """The kind (:data:`models.features.KINDS`) of a HIGGS feature or extra ntuple column, from its name."""
    if name in BTAG_FEATURES:
        return "discrete"
    if name in BTAG_SCORES:
        return "real"  # NanoAOD fills undefined discriminants with negative values
    if name in ANGLE_FEATURES:
        return "angle"
    if name.endswith("_eta"):
        return "bounded"
    return "positive"


def feature_table(btag_working_points: Sequence[float] = (), units: str = "GeV") -> FeatureTable:
    """The table of the HIGGS features and the extra ntuple columns (b-tag scores, jet masses): kinds, units
    (GeV for momenta and masses when ``units`` is GeV; none for the normalised HIGGS CSV), and the derivations
    of :func:`derivations` (valid for features in GeV; the b-tag levels only with ``btag_working_points``)."""
    gev = units == "GeV"
    derived = derivations(btag_working_points) if gev else {}
    rows = []
    for name in FEATURES + BTAG_SCORES + JET_MASSES:
        kind = feature_kind(name)
        unit = "GeV" if gev and kind == "positive" else ""
        inputs, fn = derived.get(name, ((), None))
        rows.append(Feature(name, kind, unit, inputs=tuple(inputs), derive=fn))
    return FeatureTable(rows, reference_angle="lepton_phi")


def _lorentz(px, py, pz, e):
    return vector.array({"px": px, "py": py, "pz": pz, "E": e})


def _ptetaphim(pt, eta, phi, mass):
    return vector.array({"pt": pt, "eta": eta, "phi": phi, "mass": mass})


def btag_levels(score: np.ndarray, working_points: list[float]) -> np.ndarray:
    """Number of working points a b-tag score passes (0 ... len(working_points))."""
    wps = np.asarray(sorted(working_points))
    return (np.asarray(score)[..., None] > wps).sum(axis=-1).astype(np.float32)


def compute_features(lepton: dict, met: dict, jets: dict, btag_working_points: list[float]) -> dict[str, np.ndarray]:
    """The 28 features for events with one lepton and (at least) four jets, and the jets' b-tag scores and masses.

    ``lepton`` and ``met`` map ``pt``/``eta``/``phi``(/``mass``) to arrays of shape ``(n,)``; ``jets`` maps
    ``pt``, ``eta``, ``phi``, ``mass``, ``btag`` (the continuous discriminant) to arrays of shape ``(n, 4)``,
    ordered by pT. Returns float32 arrays keyed by :data:`FEATURES`, :data:`BTAG_SCORES` and :data:`JET_MASSES`.
    """
    out: dict[str, np.ndarray] = {}
    out["lepton_pT"], out["lepton_eta"], out["lepton_phi"] = lepton["pt"], lepton["eta"], lepton["phi"]
    out["missing_energy_magnitude"], out["missing_energy_phi"] = met["pt"], met["phi"]
    levels = btag_levels(jets["btag"], btag_working_points)
    for i in range(4):
        for name in ("pt", "eta", "phi"):
            out[f"jet{i + 1}_{name}"] = jets[name][:, i]
        out[f"jet{i + 1}_btag"] = levels[:, i]

    out.update(high_level_masses(lepton, met, jets))
    for i, name in enumerate(BTAG_SCORES):
        out[name] = np.asarray(jets["btag"])[:, i]
    for i, name in enumerate(JET_MASSES):
        out[name] = np.asarray(jets["mass"])[:, i]
    return {k: np.asarray(out[k], dtype=np.float32) for k in FEATURES + BTAG_SCORES + JET_MASSES}


def high_level_masses(lepton: dict, met: dict, jets: dict, neutrino: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """The seven high-level masses (:data:`HIGH_LEVEL`, float64) with the jet assignment of the module docstring,
    from the objects as :func:`compute_features` takes them (lepton mass 0 if ``lepton`` has none).

    ``neutrino``: an estimate of the neutrino momentum ``(n, 3)`` (px, py, pz in GeV; e.g. regressed by
    nu-Flows) used instead of the W-mass solution with the MET; ``m_lv`` is then m(l nu) itself, no point mass.
    """
    out: dict[str, np.ndarray] = {}
    lep = _ptetaphim(lepton["pt"], lepton["eta"], lepton["phi"], lepton.get("mass", np.zeros_like(lepton["pt"])))
    if neutrino is None:
        met_px, met_py = met["pt"] * np.cos(met["phi"]), met["pt"] * np.sin(met["phi"])
        pz, real = neutrino_pz(lep.px, lep.py, lep.pz, lep.E, met_px, met_py, return_real=True)
    else:
        met_px, met_py, pz = (np.asarray(neutrino, np.float64)[:, k] for k in range(3))
        real = np.zeros(len(pz), bool)
    nu = _lorentz(met_px, met_py, pz, np.sqrt(met_px**2 + met_py**2 + pz**2))
    w_lep = lep + nu

    # jet roles: b candidates are the two highest b-tag scores among the four leading jets
    order = np.argsort(-np.asarray(jets["btag"]), axis=1, kind="stable")
    j4 = _ptetaphim(*(np.take_along_axis(np.asarray(jets[k]), order, axis=1) for k in ("pt", "eta", "phi", "mass")))
    b1, b2, q1, q2 = j4[:, 0], j4[:, 1], j4[:, 2], j4[:, 3]
    w_had = q1 + q2
    top1, top2 = w_had + b1, w_had + b2
    first_is_had = np.abs(np.asarray(top1.mass) - M_TOP) <= np.abs(np.asarray(top2.mass) - M_TOP)
    b_lep_mass = np.where(first_is_had, np.asarray((w_lep + b2).mass), np.asarray((w_lep + b1).mass))
    bb = b1 + b2
    out["m_jj"] = np.asarray(w_had.mass)
    out["m_jjj"] = np.where(first_is_had, np.asarray(top1.mass), np.asarray(top2.mass))
    # exact where the constraint holds: the float64 roundoff of sqrt(E^2 - p^2) would smear the point mass
    out["m_lv"] = (np.where(real, M_W, np.maximum(np.asarray(w_lep.mass), M_W)) if neutrino is None
                   else np.asarray(w_lep.mass))
    out["m_jlv"] = b_lep_mass
    out["m_bb"] = np.asarray(bb.mass)
    out["m_wbb"] = np.asarray((w_lep + bb).mass)
    out["m_wwbb"] = np.asarray((w_lep + w_had + bb).mass)
    return out


# physical support of generated events (used to reject events outside it)

def min_separations(columns: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Per event, the smallest Delta R between a jet and the lepton (``jet_lepton``) and between two of the four
    jets (``jet_jet``)."""
    c = columns
    jets = [f"jet{i}" for i in range(1, 5)]

    def delta_r(a: str, b: str) -> np.ndarray:
        deta = np.asarray(c[f"{a}_eta"], np.float64) - np.asarray(c[f"{b}_eta"], np.float64)
        dphi = np.mod(np.asarray(c[f"{a}_phi"], np.float64) - np.asarray(c[f"{b}_phi"], np.float64) + np.pi,
                      2 * np.pi) - np.pi
        return np.hypot(deta, dphi)

    jl = np.min([delta_r(j, "lepton") for j in jets], axis=0)
    jj = np.min([delta_r(j, k) for m, j in enumerate(jets) for k in jets[m + 1:]], axis=0)
    return {"jet_lepton": jl, "jet_jet": jj}


def support_thresholds(training: dict[str, np.ndarray]) -> dict[str, float]:
    """The physical support of the training sample in the separations of :func:`min_separations`: their
    minima (the skim's Delta R cut between jets and the lepton, the jet clustering's between jets)."""
    return {k: float(np.min(v)) for k, v in min_separations(training).items()}


def in_support(columns: dict[str, np.ndarray], thresholds: dict[str, float]) -> np.ndarray:
    """Whether each event lies inside the support ``thresholds`` of :func:`support_thresholds`."""
    seps = min_separations(columns)
    return np.logical_and.reduce([seps[k] >= t for k, t in thresholds.items()])
