"""Parton-level unfolding of single-lepton ttbar events with a conditional flow: the physics without the model.

A conditional flow p(parton level | reco level) unfolds event by event (cINN unfolding: Bellagente, Butter,
Kasieczka, Plehn, Rousselot, Winterhalder, Ardizzone, Koethe, SciPost Phys. 9, 074 (2020), arXiv:2006.06685;
Backes, Butter, Dunford, Malaescu, arXiv:2212.08674, whose iterative reweighting of the training prior
:func:`prior_weights` follows; the CMS unfolding flow for the matrix-element method, A. Petre for CMS). This module
holds:

- :func:`ttbar_indices` and :func:`ttbar_partons`: the hard process read from a NanoAOD-like ``GenPart`` record
  by PDG ids and mother indices (tops, their W bosons and b quarks, the lepton, the neutrino, the W's quarks), no
  index layout assumed (but a record without copies of a particle); :func:`truth_columns`, the skim's columns;
- the parametrisation the flow learns (:data:`TARGETS`, 18 numbers, exact and invertible, :func:`parametrise` and
  :func:`partons_from`): the ttbar system in the lab (pT, rapidity, azimuth relative to the reconstructed lepton,
  and its mass above the sum of the two top masses, so that every sampled event is kinematically possible), the
  two top masses and the hadronic top's direction in the ttbar frame, then each decay in the parent's rest frame
  (the W's mass and direction in the top frame, the decay angles of the lepton and of the forward quark in the W
  frame). Modelling pT(ttbar) directly rather than the two tops' momenta matters: it is a small difference of
  two large, back-to-back momenta (a first version with the tops' momenta missed its closure with chi2/ndf 70). The b quarks and the second quark follow from momentum
  conservation. Masses sit near their Breit-Wigner peaks; the target table gives them the Gaussian-rank transform
  (the probit of their CDF), so the flow sees a Gaussian, not a narrow spike, and spends no capacity on the line
  shape. The lepton's helicity angle cos(theta*) is one of the 18 numbers;
- the observables of the closure test (:func:`observables`) and the measures: marginal closure (:func:`closure`),
  per-event calibration of the posterior (:func:`calibration`, the truth's rank among posterior draws), the top
  mass of a sample (:func:`top_mass_estimate`) and the prior dependence (:func:`mass_shift_test`), and the
  iterative Bayesian unfolding baseline of D'Agostini through ``pyunfold`` (:func:`ibu_unfold`).

Events whose partons leave the acceptance or merge into one jet stay in: the flow is trained on every selected
event whatever the jets look like, and p(parton | reco) carries the resulting ambiguity. The posterior is that of
*selected* events; the selection efficiency as a function of parton level is not part of the model.

Four-vectors are ``(..., 4)`` arrays (E, px, py, pz) in GeV.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from .neutrino import regression_context

ROLES = ("top_lep", "top_had", "w_lep", "w_had", "b_lep", "b_had", "lepton", "neutrino", "q1", "q2")
"""The partons read from the truth record (skim columns ``truth_<role>_{pt,eta,phi,mass}``)."""

TARGETS = ("tt_pt", "tt_y", "tt_dphi", "tt_excess", "top_had_m", "top_lep_m", "top_cos", "top_phi",
           "w_had_m", "w_had_cos", "w_had_phi", "q_cos", "q_phi",
           "w_lep_m", "w_lep_cos", "w_lep_phi", "lep_cos", "lep_phi")
"""The 18 numbers of the parametrisation, in this order (see the module docstring)."""

_KINDS = {"pt": "positive", "y": "real", "dphi": "real", "excess": "positive", "m": "real", "cos": "bounded",
          "phi": "angle"}
_LABELS = {
    "tt_pt": (r"$p_T^{t\bar t}$", "GeV"), "tt_y": (r"$y_{t\bar t}$", ""),
    "tt_dphi": (r"$\Delta\phi(t\bar t, \ell)$", ""), "tt_excess": (r"$m_{t\bar t} - m_t - m_{\bar t}$", "GeV"),
    "top_had_m": ("hadronic top mass", "GeV"), "top_lep_m": ("leptonic top mass", "GeV"),
    "top_cos": (r"hadronic top $\cos\theta$ ($t\bar t$ frame, beam axis)", ""),
    "top_phi": (r"hadronic top $\phi$ ($t\bar t$ frame, from $-\ell$)", ""),
    "w_had_m": ("hadronic W mass", "GeV"), "w_had_cos": (r"hadronic W $\cos\theta$ (top frame)", ""),
    "w_had_phi": (r"hadronic W $\phi$ (top frame)", ""), "q_cos": (r"forward quark $|\cos\theta^*|$", ""),
    "q_phi": (r"forward quark $\phi^*$", ""), "w_lep_m": ("leptonic W mass", "GeV"),
    "w_lep_cos": (r"leptonic W $\cos\theta$ (top frame)", ""), "w_lep_phi": (r"leptonic W $\phi$ (top frame)", ""),
    "lep_cos": (r"lepton $\cos\theta^*$ (helicity)", ""), "lep_phi": (r"lepton $\phi^*$", ""),
}

OBSERVABLES = {
    "m_t_had": ("hadronic top mass", "GeV"), "m_t_lep": ("leptonic top mass", "GeV"),
    "pt_t_had": ("hadronic top $p_T$", "GeV"), "pt_t_lep": ("leptonic top $p_T$", "GeV"),
    "y_t_had": ("hadronic top rapidity", ""), "y_t_lep": ("leptonic top rapidity", ""),
    "m_tt": (r"$m_{t\bar t}$", "GeV"), "pt_tt": (r"$p_T^{t\bar t}$", "GeV"),
    "cos_theta_lep": (r"lepton $\cos\theta^*$", ""),
}
"""The closure observables: name -> (label, unit)."""


# -- four-vector helpers ---------------------------------------------------------------------------------------

def p4_from_ptetaphim(pt, eta, phi, m) -> np.ndarray:
    pt, eta, phi, m = (np.asarray(v, np.float64) for v in (pt, eta, phi, m))
    px, py, pz = pt * np.cos(phi), pt * np.sin(phi), pt * np.sinh(eta)
    return np.stack([np.sqrt(px**2 + py**2 + pz**2 + m**2), px, py, pz], axis=-1)


def p4_from_ptyphim(pt, y, phi, m) -> np.ndarray:
    pt, y, phi, m = (np.asarray(v, np.float64) for v in (pt, y, phi, m))
    mt = np.sqrt(pt**2 + m**2)
    return np.stack([mt * np.cosh(y), pt * np.cos(phi), pt * np.sin(phi), mt * np.sinh(y)], axis=-1)


def mass(p: np.ndarray) -> np.ndarray:
    return np.sqrt(np.maximum(p[..., 0] ** 2 - (p[..., 1:] ** 2).sum(axis=-1), 0.0))


def pt(p: np.ndarray) -> np.ndarray:
    return np.hypot(p[..., 1], p[..., 2])


def rapidity(p: np.ndarray) -> np.ndarray:
    return 0.5 * np.log(np.maximum(p[..., 0] + p[..., 3], 1e-12) / np.maximum(p[..., 0] - p[..., 3], 1e-12))


def phi(p: np.ndarray) -> np.ndarray:
    return np.arctan2(p[..., 2], p[..., 1])


def wrap(x: np.ndarray) -> np.ndarray:
    return (np.asarray(x) + np.pi) % (2 * np.pi) - np.pi


def boost(p: np.ndarray, beta: np.ndarray) -> np.ndarray:
    """The four-vectors ``p`` in the frame moving with velocity ``beta`` ``(..., 3)`` (a pure boost)."""
    b2 = np.maximum((beta**2).sum(axis=-1), 1e-300)
    gamma = 1.0 / np.sqrt(np.maximum(1.0 - b2, 1e-300))
    bp = (beta * p[..., 1:]).sum(axis=-1)
    e = gamma * (p[..., 0] - bp)
    k = (gamma - 1.0) * bp / b2 - gamma * p[..., 0]
    return np.concatenate([e[..., None], p[..., 1:] + k[..., None] * beta], axis=-1)


def _velocity(p: np.ndarray) -> np.ndarray:
    return p[..., 1:] / p[..., :1]


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-300)


_BEAM = np.array([1.0, 0.0, 0.0, 1.0])


def _rest_frame_axes(parent: np.ndarray, z_ref: np.ndarray, x_ref: np.ndarray | None = None,
                     helicity: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Axes of the parent's rest frame (reached from the lab by a pure boost). ``helicity``: z along the
    parent's flight direction seen from ``z_ref`` (its grandparent: minus the grandparent's direction in the
    parent frame); otherwise z along ``z_ref`` seen in the parent frame. x towards ``x_ref`` (default: the beam)
    seen in that frame, made orthogonal to z; y = z x x."""
    beta = _velocity(parent)
    z = _unit(boost(z_ref, beta)[..., 1:]) * (-1.0 if helicity else 1.0)
    b = boost(np.broadcast_to(_BEAM if x_ref is None else x_ref, parent.shape), beta)[..., 1:]
    x = _unit(b - (b * z).sum(axis=-1, keepdims=True) * z)
    return x, np.cross(z, x), z


def _axes_of(parent, grand, frame):
    """Helicity axes (``grand`` the grandparent) or, with ``frame`` = ``(z_ref, x_ref)``, axes fixed by them."""
    if frame is None:
        return _rest_frame_axes(parent, grand)
    return _rest_frame_axes(parent, frame[0], frame[1], helicity=False)


def decay_angles(parent: np.ndarray, child: np.ndarray, grand: np.ndarray | None = None,
                 frame: tuple[np.ndarray, np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(cos theta, phi)`` of ``child`` in the rest frame of ``parent``: helicity axes (:func:`_rest_frame_axes`)
    about the grandparent ``grand``, or the axes of ``frame`` = ``(z_ref, x_ref)``."""
    x, y, z = _axes_of(parent, grand, frame)
    c = _unit(boost(child, _velocity(parent))[..., 1:])
    return np.clip((c * z).sum(axis=-1), -1.0, 1.0), np.arctan2((c * y).sum(axis=-1), (c * x).sum(axis=-1))


def two_body(parent: np.ndarray, grand: np.ndarray | None, m1, m2, cos_theta, phi_,
             frame: tuple[np.ndarray, np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of :func:`decay_angles`: the lab four-vectors of the decay ``parent -> 1 + 2`` with daughter masses
    ``m1``, ``m2`` and daughter 1 at ``(cos_theta, phi_)`` in the parent frame; where the parent is lighter than
    ``m1 + m2`` the momentum is zero."""
    m = mass(parent)
    m1, m2 = np.broadcast_to(np.asarray(m1, np.float64), m.shape), np.broadcast_to(np.asarray(m2, np.float64), m.shape)
    lam = (m**2 - (m1 + m2) ** 2) * (m**2 - (m1 - m2) ** 2)
    p = np.sqrt(np.maximum(lam, 0.0)) / (2 * np.maximum(m, 1e-9))
    x, y, z = _axes_of(parent, grand, frame)
    s = np.sqrt(np.maximum(1.0 - cos_theta**2, 0.0))
    d = (s * np.cos(phi_))[..., None] * x + (s * np.sin(phi_))[..., None] * y + np.asarray(cos_theta)[..., None] * z
    rest = np.concatenate([np.sqrt(p**2 + m1**2)[..., None], p[..., None] * d], axis=-1)
    one = boost(rest, -_velocity(parent))
    return one, parent - one


def _tt_frame(lepton_phi: np.ndarray, shape) -> tuple[np.ndarray, np.ndarray]:
    """Axes of the ttbar rest frame: z along the beam, x opposite to the reconstructed lepton's transverse
    direction (where the hadronic top goes), both as lab four-vectors."""
    ref = np.asarray(lepton_phi, np.float64)
    x_ref = np.stack([np.ones_like(ref), -np.cos(ref), -np.sin(ref), np.zeros_like(ref)], axis=-1)
    return np.broadcast_to(_BEAM, shape), np.broadcast_to(x_ref, shape)


# -- the truth record ------------------------------------------------------------------------------------------

def ttbar_indices(pdg: np.ndarray, mother: np.ndarray) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Where the hard process of single-lepton ttbar sits in a padded truth record: ``pdg``, ``mother`` ``(n, G)``
    (mother index, -1 for none; padding: pdg 0). Returns role -> ``(n,)`` index into the record (:data:`ROLES`;
    q1 the down-type quark; clipped into ``[0, G)``, meaningful only where the mask is true) and a mask of the
    events where every role was found exactly once: leptons and quarks whose mother is a W whose mother is a top,
    that W and top, and the b quark whose mother is that top. It assumes a record without copies of a particle
    (as both event sources write it: the Pythia source keeps the last copies)."""
    pdg, mother = np.asarray(pdg), np.asarray(mother)
    n, g = pdg.shape
    a = np.abs(pdg)
    safe = np.where(mother >= 0, mother, 0)
    mother_id = np.where(mother >= 0, np.take_along_axis(a, safe, axis=1), 0)
    grand = np.where(mother >= 0, np.take_along_axis(mother, safe, axis=1), -1)
    grand_id = np.where(grand >= 0, np.take_along_axis(a, np.where(grand >= 0, grand, 0), axis=1), 0)
    from_top_w = (mother_id == 24) & (grand_id == 6)
    masks = {"lepton": from_top_w & np.isin(a, (11, 13, 15)), "neutrino": from_top_w & np.isin(a, (12, 14, 16)),
             "q1": from_top_w & np.isin(a, (1, 3)), "q2": from_top_w & np.isin(a, (2, 4))}
    ok = np.all([m.sum(axis=1) == 1 for m in masks.values()], axis=0)
    idx = {k: np.argmax(m, axis=1) for k, m in masks.items()}
    rows = np.arange(n)
    idx["w_lep"], idx["w_had"] = mother[rows, idx["lepton"]], mother[rows, idx["q1"]]
    ok &= (mother[rows, idx["q2"]] == idx["w_had"]) & (idx["w_lep"] != idx["w_had"])
    idx["top_lep"], idx["top_had"] = mother[rows, idx["w_lep"]], mother[rows, idx["w_had"]]
    ok &= (idx["top_lep"] >= 0) & (idx["top_had"] >= 0) & (idx["top_lep"] != idx["top_had"])
    for side in ("lep", "had"):
        m = (a == 5) & (mother == idx[f"top_{side}"][:, None])
        ok &= m.sum(axis=1) == 1
        idx[f"b_{side}"] = np.argmax(m, axis=1)
    return {r: np.clip(idx[r], 0, g - 1) for r in ROLES}, ok


def ttbar_partons(pdg: np.ndarray, mother: np.ndarray, p4: np.ndarray) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """The hard process of single-lepton ttbar (:func:`ttbar_indices`) from a padded truth record with
    four-vectors ``p4`` ``(n, G, 4)``: role -> ``(n, 4)`` four-vectors (zero where the mask is false) and the mask.
    A shower generator's chains of copies (t -> t -> W ...) must first be collapsed to their last copies."""
    idx, ok = ttbar_indices(pdg, mother)
    rows = np.arange(len(ok))
    return {r: np.where(ok[:, None], p4[rows, i], 0.0) for r, i in idx.items()}, ok


def truth_columns(kinematics: Mapping[str, Sequence[np.ndarray]], ok: np.ndarray) -> dict[str, np.ndarray]:
    """The skim's truth columns: ``truth_<role>_{pt,eta,phi,mass}`` (float32) and ``truth_ttbar`` (1 where the
    hard process was found, ``ok``) from role -> ``(pt, eta, phi, mass)`` of the particles :func:`ttbar_indices`
    found (zero where ``ok`` is false)."""
    out = {"truth_ttbar": ok.astype(np.int8)}
    for r in ROLES:
        p = np.where(ok[:, None], p4_from_ptetaphim(*kinematics[r]), 0.0)
        eta_r = np.arcsinh(p[:, 3] / np.maximum(pt(p), 1e-9))
        for k, v in (("pt", pt(p)), ("eta", np.where(ok, eta_r, 0.0)), ("phi", phi(p)), ("mass", mass(p))):
            out[f"truth_{r}_{k}"] = v.astype(np.float32)
    return out


def truth_partons(objects: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Role -> ``(n, 4)`` from the skim's truth columns (:func:`truth_columns`)."""
    missing = [f"truth_{r}_pt" for r in ROLES if f"truth_{r}_pt" not in objects]
    if missing:
        raise KeyError(f"the skim has no parton-level truth ({missing[0]}, ...): skimmed before the unfolding "
                       "existed, or a sample without GenPart; rerun the skim under a new --version")
    return {r: p4_from_ptetaphim(*(objects[f"truth_{r}_{k}"] for k in ("pt", "eta", "phi", "mass"))) for r in ROLES}


# -- parametrisation -------------------------------------------------------------------------------------------

def parametrise(partons: Mapping[str, np.ndarray], lepton_phi: np.ndarray) -> np.ndarray:
    """``(n, 18)`` :data:`TARGETS` of the partons: the ttbar system in the lab (pT, rapidity, azimuth relative to
    ``lepton_phi``, the reconstructed lepton's: the event is rotated so that it sits at zero, as the context
    is; its mass above the two top masses), the two top masses and the hadronic top's direction in the ttbar
    frame (beam axis, azimuth from minus the lepton), then each decay in helicity angles."""
    th, tl = partons["top_had"], partons["top_lep"]
    tt = th + tl
    ref = np.asarray(lepton_phi, np.float64)
    top_cos, top_phi = decay_angles(tt, th, frame=_tt_frame(ref, tt.shape))
    wh, wl = partons["w_had"], partons["w_lep"]
    w_had_cos, w_had_phi = decay_angles(th, wh, tt)
    w_lep_cos, w_lep_phi = decay_angles(tl, wl, tt)
    q_cos, q_phi = decay_angles(wh, partons["q1"], th)
    q2_cos, q2_phi = decay_angles(wh, partons["q2"], th)
    forward = q_cos >= 0  # the quark emitted along the W's flight direction: the other one is back to back
    q_cos, q_phi = np.where(forward, q_cos, q2_cos), np.where(forward, q_phi, q2_phi)
    lep_cos, lep_phi = decay_angles(wl, partons["lepton"], tl)
    cols = [pt(tt), rapidity(tt), wrap(phi(tt) - ref), mass(tt) - mass(th) - mass(tl), mass(th), mass(tl),
            top_cos, top_phi, mass(wh), w_had_cos, w_had_phi, np.abs(q_cos), q_phi,
            mass(wl), w_lep_cos, w_lep_phi, lep_cos, lep_phi]
    return np.stack(cols, axis=-1)


def partons_from(params: np.ndarray, lepton_phi: np.ndarray, b_mass: float = 4.8) -> dict[str, np.ndarray]:
    """Inverse of :func:`parametrise`: role -> four-vectors ``(..., 4)`` (leading sample axes allowed; the lepton
    and the quarks massless, the b quarks of mass ``b_mass``; q1 is the forward quark)."""
    p = np.asarray(params, np.float64)
    ref = np.asarray(lepton_phi, np.float64)
    c = {name: p[..., i] for i, name in enumerate(TARGETS)}
    m_had, m_lep = c["top_had_m"], c["top_lep_m"]
    tt = p4_from_ptyphim(c["tt_pt"], c["tt_y"], wrap(c["tt_dphi"] + ref), m_had + m_lep + np.maximum(c["tt_excess"], 0))
    th, tl = two_body(tt, None, m_had, m_lep, np.clip(c["top_cos"], -1, 1), c["top_phi"],
                      frame=_tt_frame(np.broadcast_to(ref, tt.shape[:-1]), tt.shape))
    wh, bh = two_body(th, tt, c["w_had_m"], b_mass, np.clip(c["w_had_cos"], -1, 1), c["w_had_phi"])
    wl, bl = two_body(tl, tt, c["w_lep_m"], b_mass, np.clip(c["w_lep_cos"], -1, 1), c["w_lep_phi"])
    q1, q2 = two_body(wh, th, 0.0, 0.0, np.clip(np.abs(c["q_cos"]), 0, 1), c["q_phi"])
    lep, nu = two_body(wl, tl, 0.0, 0.0, np.clip(c["lep_cos"], -1, 1), c["lep_phi"])
    return {"top_had": th, "top_lep": tl, "w_had": wh, "w_lep": wl, "b_had": bh, "b_lep": bl,
            "q1": q1, "q2": q2, "lepton": lep, "neutrino": nu}


def target_table():
    """The feature table of :data:`TARGETS` for :class:`models.preprocessing.Preprocessor`: pT(ttbar) and the mass
    excess positive, masses, the rapidity and the ttbar azimuth relative to the lepton Gaussian-rank transformed
    (a Breit-Wigner becomes a Gaussian; the relative azimuth on its interval (-pi, pi], the sparse region along
    the lepton at neither end), cosines bounded, the decay azimuths (and the top's in the ttbar frame) on the
    circle."""
    from models.features import Feature, FeatureTable

    return FeatureTable([Feature(name, _KINDS[name.rsplit("_", 1)[1]], _LABELS[name][1], label=_LABELS[name][0])
                         for name in TARGETS])


def regression_data(objects: Mapping[str, np.ndarray]) -> tuple[np.ndarray, tuple]:
    """``(targets (n, 18), context)`` of the events with the hard process found: the parametrised partons and
    the reconstructed event as the deep-sets context of :func:`analysis.neutrino.regression_context` (lepton,
    MET and up to 10 jets with b tags, in the lepton's azimuthal frame; no jet-parton assignment)."""
    keep = np.asarray(objects["truth_ttbar"]) > 0
    sub = {k: v[keep] for k, v in objects.items()}
    return parametrise(truth_partons(sub), sub["obj_lepton_phi"]), regression_context(sub)


def with_truth(objects: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The events with the hard process found (the rows :func:`regression_data` keeps)."""
    keep = np.asarray(objects["truth_ttbar"]) > 0
    return {k: v[keep] for k, v in objects.items()}


def embedding_spec(out_features: int, hidden: list[int]) -> dict:
    from .neutrino import embedding_spec as spec

    return spec(out_features, hidden)


# -- observables and measures ----------------------------------------------------------------------------------

def observables(params: np.ndarray, lepton_phi: np.ndarray, b_mass: float = 4.8) -> dict[str, np.ndarray]:
    """The closure observables (:data:`OBSERVABLES`) of parametrised events ``(..., 18)``; cos(theta*) clipped to
    [-1, 1] as :func:`partons_from` does (the bounded transform's inverse reaches 0.1 % beyond the training
    range: 0.03 % of the draws)."""
    p = partons_from(params, lepton_phi, b_mass)
    tt = p["top_had"] + p["top_lep"]
    return {"m_t_had": mass(p["top_had"]), "m_t_lep": mass(p["top_lep"]), "pt_t_had": pt(p["top_had"]),
            "pt_t_lep": pt(p["top_lep"]), "y_t_had": rapidity(p["top_had"]), "y_t_lep": rapidity(p["top_lep"]),
            "m_tt": mass(tt), "pt_tt": pt(tt),
            "cos_theta_lep": np.clip(np.asarray(params, np.float64)[..., TARGETS.index("lep_cos")], -1.0, 1.0)}


def edges_of(truth: np.ndarray, bins: int = 40, name: str = "") -> np.ndarray:
    """``bins`` equal-width bins over the central 99 % of ``truth``; masses: the median +- 2.5 x the 10-90 %
    range (about +- 7.7 widths of a Breit-Wigner); cosines: [-1, 1]."""
    lo, hi = np.quantile(truth, [0.005, 0.995])
    if name.startswith("m_t_") or name.endswith("_m"):
        q10, q50, q90 = np.quantile(truth, [0.1, 0.5, 0.9])
        lo, hi = q50 - 2.5 * (q90 - q10), q50 + 2.5 * (q90 - q10)
    if name.startswith("cos"):
        lo, hi = -1.0, 1.0
    return np.linspace(lo, hi, bins + 1)


def closure(unfolded: np.ndarray, truth: np.ndarray, edges: np.ndarray, weights: np.ndarray | None = None,
            min_count: int = 1000) -> dict:
    """Marginal closure of an unfolded sample (one or more draws per event, ``weights`` per draw summing to the
    number of events) against the truth of the same events: chi2 with variance ``u + t`` per bin (a draw from a
    calibrated posterior differs from the truth as two draws do), ndf the number of filled bins, and the largest
    |ratio - 1| (with its statistical error) where the truth bin holds at least ``min_count`` events."""
    if weights is None:  # every draw weighs the number of events over the number of draws
        weights = np.full(len(unfolded), len(truth) / max(len(unfolded), 1))
    t, _ = np.histogram(truth, edges)
    u, _ = np.histogram(unfolded, edges, weights=weights)
    w2, _ = np.histogram(unfolded, edges, weights=weights**2)
    var = t + w2
    filled = var > 0
    chi2 = float(np.sum((u - t)[filled] ** 2 / var[filled]))
    big = t >= min_count
    ratio = np.where(t > 0, u / np.maximum(t, 1), np.nan)
    dev = np.abs(ratio - 1)[big]
    worst = int(np.argmax(dev)) if big.any() else -1
    return {"chi2": chi2, "ndf": int(filled.sum()), "chi2_ndf": chi2 / max(int(filled.sum()), 1),
            "bins_with_min_count": int(big.sum()), "max_ratio_deviation": float(dev.max()) if big.any() else None,
            "max_ratio_deviation_error": float(np.sqrt(var[big][worst]) / t[big][worst]) if big.any() else None,
            "truth": t.tolist(), "unfolded": u.tolist(), "edges": edges.tolist()}


def calibration(draws: np.ndarray, truth: np.ndarray, names: Sequence[str], seed: int = 0) -> dict[str, dict]:
    """Per quantity: the rank of the truth among the posterior ``draws`` ``(S, n, d)`` as a randomised probability
    integral transform, ``(rank + U(0, 1) (ties + 1)) / (S + 1)``, exactly uniform for a calibrated posterior:
    its KS distance to uniform (and p-value), the coverage of the central 68 % and 95 % intervals read from it
    (the truth inside the interval between the ranks of those quantiles; reading the interval from sample
    quantiles instead under-covers by about 1 % at 200 draws), and its histogram (20 bins) for the figure.
    The azimuths modelled on the circle (names ending in ``_phi``) are compared on the circle's representative
    nearest the posterior median; ``tt_dphi``, modelled on its interval, on that interval."""
    from scipy import stats

    out = {}
    s_count = draws.shape[0]
    u = np.random.default_rng(seed).uniform(size=truth.shape[0])
    for i, name in enumerate(names):
        s, t = draws[..., i].T, truth[:, i]
        if name.endswith("_phi"):  # circular: unwrap around the median draw
            med = np.median(s, axis=1)
            s, t = med[:, None] + wrap(s - med[:, None]), med + wrap(t - med)
        below = (s < t[:, None]).sum(axis=1)
        ties = (s == t[:, None]).sum(axis=1)
        pit = (below + u * (ties + 1)) / (s_count + 1)
        ks = stats.kstest(pit, "uniform")
        out[name] = {"ks": float(ks.statistic), "ks_pvalue": float(ks.pvalue),
                     "coverage68": float(np.mean(np.abs(pit - 0.5) <= 0.34)),
                     "coverage95": float(np.mean(np.abs(pit - 0.5) <= 0.475)),
                     "pit_histogram": np.histogram(pit, np.linspace(0, 1, 21))[0].tolist()}
    return out


def top_mass_estimate(m_had: np.ndarray, m_lep: np.ndarray, n_boot: int = 50, seed: int = 0) -> dict[str, float]:
    """The top mass of a sample: the median of both tops' masses pooled (the peak of a Breit-Wigner; the
    tails of the truncated line shape do not move it), with a bootstrap error over events: ``m_had`` and
    ``m_lep`` are ``(n,)`` or ``(draws, n)``, and a resampled event brings all its draws and both its tops."""
    had, lep = np.atleast_2d(m_had), np.atleast_2d(m_lep)
    n = had.shape[1]
    rng = np.random.default_rng(seed)
    boots = []
    for _ in range(n_boot):
        rows = rng.integers(0, n, n)
        boots.append(np.median(np.concatenate([had[:, rows].ravel(), lep[:, rows].ravel()])))
    return {"median": float(np.median(np.concatenate([had.ravel(), lep.ravel()]))), "error": float(np.std(boots))}


def mass_shift_test(nominal: dict, shifted: dict[float, dict]) -> dict:
    """Prior dependence: per generator shift of the top mass, the shift seen in the truth of the pseudo-data and
    in its unfolding, each against the nominal sample's (estimates of :func:`top_mass_estimate` under keys
    ``truth`` and ``unfolded``), and the bias ``(unfolded shift - true shift) / true shift``."""
    out = {}
    for shift, est in shifted.items():
        true = est["truth"]["median"] - nominal["truth"]["median"]
        seen = est["unfolded"]["median"] - nominal["unfolded"]["median"]
        err = np.hypot(est["unfolded"]["error"], nominal["unfolded"]["error"])
        out[f"{shift:+g}"] = {"generator_shift": shift, "true_shift": true, "unfolded_shift": seen,
                              "unfolded_shift_error": float(err), "bias": (seen - true) / true if true else None,
                              "bias_error": float(err / abs(true)) if true else None}
    return out


def top_mass_edges(mass: float, width: float, bins: int = 60) -> np.ndarray:
    """The bins of the prior reweighting: the generator's truncated Breit-Wigner range, +- 15 widths."""
    return np.linspace(mass - 15 * width, mass + 15 * width, bins + 1)


def prior_weights(train_masses: tuple[np.ndarray, np.ndarray], unfolded_masses: tuple[np.ndarray, np.ndarray],
                  edges: np.ndarray) -> np.ndarray:
    """One iteration of the prior reweighting of Backes et al. (arXiv:2212.08674): per training event the ratio
    of the unfolded to the training distribution of the hadronic and leptonic top masses (histograms in
    ``edges``, the two tops independent), normalised to mean one; events outside the edges keep weight one."""
    w = np.ones(len(train_masses[0]))
    for tr, un in zip(train_masses, unfolded_masses):
        ht = np.histogram(tr, edges)[0].astype(float)
        hu = np.histogram(un, edges)[0].astype(float)
        if ht.sum() == 0 or hu.sum() == 0:  # nothing inside the edges: no information, weights stay
            continue
        ht, hu = ht / ht.sum(), hu / hu.sum()
        ratio = np.where(ht > 0, hu / np.where(ht > 0, ht, 1), 1.0)
        i = np.searchsorted(edges, tr) - 1
        inside = (i >= 0) & (i < len(ratio))
        w[inside] *= ratio[i[inside]]
    return w / w.mean()


# -- reconstructed observables and the iterative Bayesian unfolding baseline ------------------------------------

def reco_observables(objects: Mapping[str, np.ndarray], sigmas: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Reconstruction-level counterparts of m_tt and the hadronic top's pT for the IBU baseline: the W-mass
    neutrino and the chi2 jet assignment of :mod:`analysis.neutrino` (events without four jets get the lepton,
    neutrino and all jets)."""
    from . import neutrino as nu

    est = nu.w_mass_neutrino(objects)
    lep, jets = nu.lepton_p4(objects), nu.jet_p4(objects)
    sig = np.array([20.0, 15.0, 10.0]) if sigmas is None else sigmas
    roles = nu.chi2_assignment(objects, est, sig)
    ok = np.all(roles >= 0, axis=1)
    had = np.zeros_like(lep)
    four = np.zeros_like(lep)
    r = np.flatnonzero(ok)
    for k in (1, 2, 3):
        had[r] += jets[r, roles[r, k]]
    for k in range(4):
        four[r] += jets[r, roles[r, k]]
    four[~ok] = jets[~ok].sum(axis=1)
    had[~ok] = four[~ok]
    tt = four + lep + nu.neutrino_p4(est)
    return {"m_tt": mass(tt), "pt_t_had": pt(had)}


def response(reco: np.ndarray, truth: np.ndarray, reco_edges: np.ndarray, truth_edges: np.ndarray) -> np.ndarray:
    """Counts ``(reco bins, truth bins)``, values outside the edges in the first and last bins."""
    rc = np.clip(reco, reco_edges[0], np.nextafter(reco_edges[-1], -np.inf))
    tc = np.clip(truth, truth_edges[0], np.nextafter(truth_edges[-1], -np.inf))
    return np.histogram2d(rc, tc, [reco_edges, truth_edges])[0]


def ibu_unfold(data_reco: np.ndarray, train_reco: np.ndarray, train_truth: np.ndarray, truth_edges: np.ndarray,
               reco_edges: np.ndarray, iterations: int = 4) -> dict[str, np.ndarray]:
    """D'Agostini's iterative Bayesian unfolding (pyunfold) of the reconstructed values ``data_reco`` with the
    response of the training events (every selected event migrates somewhere: efficiency one, out-of-range
    values in the edge bins), the training truth as the starting prior, ``iterations`` iterations. Returns the
    unfolded counts and their statistical errors (data and response statistics)."""
    from pyunfold import iterative_unfold

    counts = response(train_reco, train_truth, reco_edges, truth_edges)
    per_truth = counts.sum(axis=0)
    resp = counts / np.maximum(per_truth, 1)
    resp_err = np.sqrt(counts) / np.maximum(per_truth, 1)
    data = np.histogram(np.clip(data_reco, reco_edges[0], np.nextafter(reco_edges[-1], -np.inf)), reco_edges)[0]
    eff = np.ones(resp.shape[1])
    prior = per_truth / per_truth.sum()
    with np.errstate(divide="ignore", invalid="ignore"):
        out = iterative_unfold(data=data.astype(float), data_err=np.sqrt(data), response=resp, response_err=resp_err,
                               efficiencies=eff, efficiencies_err=np.zeros_like(eff), prior=prior, ts="ks",
                               ts_stopping=0.0, max_iter=iterations, return_iterations=False)
    return {"unfolded": np.asarray(out["unfolded"]), "stat_err": np.asarray(out["stat_err"]),
            "sys_err": np.asarray(out["sys_err"])}
