"""b-jet energy regression: inputs, targets and the measures that judge a correction.

The CMS b-jet energy regression (CMS, Comput. Softw. Big Sci. 4 (2020) 10, arXiv:1912.06046; NanoAOD
``Jet_bRegCorr`` and ``Jet_bRegRes``) predicts, per b jet, the ratio of the true b-quark pT (neutrinos of
semileptonic decays included) to the reconstructed jet pT, and a per-jet resolution. A conditional flow predicts
the whole pdf of that response (L. Sowa, KIT). This module holds what does not depend on the model, from the
skim's object-level columns (:func:`analysis.skim.object_columns`):

- which jets are b jets with a matched b quark (:func:`b_jets`), their context (:data:`CONTEXT`,
  :func:`jet_context`: kinematics, mass, b-tag score, the soft-lepton content of the jet, and the event: the
  MET projected on the jet, which a semileptonic decay's neutrino feeds, the lepton, the multiplicity) and the
  target (:func:`response`);
- the effective resolution and bias of pT_pred / pT_true in pT bins (:func:`binned_resolution`), the coverage
  of predicted intervals in pT bins (:func:`binned_coverage`), the closure when the test sample's true pT
  spectrum is reweighted (:func:`prior_closure`);
- the recalibration of posterior quantiles on held-out jets (:func:`pit_values`, :func:`Recalibration`:
  calibrated regression, Kuleshov, Fenner, Ermon, ICML 2018, arXiv:1807.00263), per reconstructed-pT bin;
- the mass resolution of h -> bb in signal events and of the hadronic top with the true jet assignment in
  ttbar, with and without the correction (:func:`hbb_mass`, :func:`hadronic_top_mass`,
  :func:`mass_resolution`).

Arrays are numpy; momenta in GeV.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from .neutrino import _mass, jet_p4, true_roles

CONTEXT = ["log_pt", "eta", "mass_over_pt", "btag", "n_muons", "n_electrons", "mu_ef", "ch_em_ef", "met_along_jet",
           "met_across_jet", "log_lepton_pt", "dr_lepton", "n_jets", "rank"]
"""The per-jet context of the regression (:func:`jet_context`)."""

PT_BINS = (20.0, 40.0, 60.0, 90.0, 130.0, 200.0, 1.0e4)
"""Edges of the reconstructed-jet pT bins of the metrics (GeV; the last bin is open)."""


def b_jets(objects: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """``(event, slot)`` of the stored jets of b hadron flavour whose matched parton is a b quark: the jets the
    regression is trained and measured on."""
    slots = np.arange(objects["obj_jet_pt"].shape[1])
    stored = slots[None, :] < np.asarray(objects["obj_n_jets"])[:, None]
    b = stored & (np.asarray(objects["truth_jet_hadronFlavour"]) == 5) \
        & (np.abs(np.asarray(objects["truth_jet_parton_pdgId"])) == 5) & (np.asarray(objects["truth_jet_parton_pt"]) > 0)
    return np.nonzero(b)


def b_jet_pt(objects: Mapping[str, np.ndarray]) -> np.ndarray:
    """Reconstructed pT of the b jets of :func:`b_jets`, in their order."""
    return np.asarray(objects["obj_jet_pt"], np.float64)[b_jets(objects)]


def response(objects: Mapping[str, np.ndarray], event: np.ndarray, slot: np.ndarray) -> np.ndarray:
    """The target: pT of the matched b quark (its full momentum, neutrinos included) over the jet's pT."""
    return (np.asarray(objects["truth_jet_parton_pt"], np.float64)[event, slot]
            / np.asarray(objects["obj_jet_pt"], np.float64)[event, slot])


def _get(objects, name: str, event, slot, default: float = 0.0) -> np.ndarray:
    return np.asarray(objects[name], np.float64)[event, slot] if name in objects else np.full(len(event), default)


def jet_context(objects: Mapping[str, np.ndarray], event: np.ndarray, slot: np.ndarray) -> np.ndarray:
    """``(n, len(CONTEXT))`` float32 context of jets ``(event, slot)``; soft-lepton columns missing from a
    source count as zero."""
    pt = np.asarray(objects["obj_jet_pt"], np.float64)[event, slot]
    eta = np.asarray(objects["obj_jet_eta"], np.float64)[event, slot]
    phi = np.asarray(objects["obj_jet_phi"], np.float64)[event, slot]
    mass = np.asarray(objects["obj_jet_mass"], np.float64)[event, slot]
    met, met_phi = (np.asarray(objects[k], np.float64)[event] for k in ("obj_met_pt", "obj_met_phi"))
    lep_eta, lep_phi = (np.asarray(objects[k], np.float64)[event] for k in ("obj_lepton_eta", "obj_lepton_phi"))
    d_phi = np.angle(np.exp(1j * (met_phi - phi)))
    d_r = np.hypot(lep_eta - eta, np.angle(np.exp(1j * (lep_phi - phi))))
    cols = [np.log(pt), eta, mass / pt, _get(objects, "obj_jet_btag", event, slot),
            _get(objects, "obj_jet_nMuons", event, slot), _get(objects, "obj_jet_nElectrons", event, slot),
            _get(objects, "obj_jet_muEF", event, slot), _get(objects, "obj_jet_chEmEF", event, slot),
            met * np.cos(d_phi) / pt, met * np.sin(d_phi) / pt,
            np.log(np.asarray(objects["obj_lepton_pt"], np.float64)[event]), d_r,
            np.asarray(objects["obj_n_jets"], np.float64)[event], slot.astype(np.float64)]
    return np.stack(cols, axis=1).astype(np.float32)


def target_table():
    """The feature table of the target: the response, positive."""
    from models.features import Feature, FeatureTable

    return FeatureTable([Feature("response", "positive", label=r"$p_T^{true}/p_T^{reco}$")])


def effective_resolution(ratio: np.ndarray, weights: np.ndarray | None = None) -> dict[str, float]:
    """Median and effective resolution (half the 16-84 % interquantile width) of ``ratio`` (e.g. pT_pred /
    pT_true), optionally weighted."""
    q16, q50, q84 = _quantiles(ratio, [0.16, 0.5, 0.84], weights)
    return {"median": float(q50), "resolution": float(0.5 * (q84 - q16)), "events": int(len(ratio))}


def _quantiles(x: np.ndarray, q, weights=None) -> np.ndarray:
    x = np.asarray(x, np.float64)
    if len(x) == 0:
        return np.full(len(q), np.nan)
    if weights is None:
        return np.quantile(x, q)
    order = np.argsort(x)
    cw = np.cumsum(np.asarray(weights, np.float64)[order])
    return np.interp(np.asarray(q) * cw[-1], cw - 0.5 * np.asarray(weights)[order], x[order])


def _bin_names(bins) -> list[str]:
    return [f"{lo:g}-{hi:g}" if hi < 1e4 else f">{lo:g}" for lo, hi in zip(bins[:-1], bins[1:])]


def binned_resolution(predicted_pt: np.ndarray, true_pt: np.ndarray, reco_pt: np.ndarray,
                      bins=PT_BINS, weights: np.ndarray | None = None) -> dict[str, dict[str, float]]:
    """:func:`effective_resolution` of predicted_pt / true_pt in bins of the reconstructed pT, and over all
    jets (``"all"``)."""
    ratio = np.asarray(predicted_pt, np.float64) / np.asarray(true_pt, np.float64)
    out = {"all": effective_resolution(ratio, weights)}
    idx = np.digitize(reco_pt, bins) - 1
    for i, name in enumerate(_bin_names(bins)):
        sel = idx == i
        out[name] = effective_resolution(ratio[sel], None if weights is None else weights[sel])
    return out


def binned_coverage(lower: np.ndarray, upper: np.ndarray, truth: np.ndarray, reco_pt: np.ndarray,
                    bins=PT_BINS) -> dict[str, float]:
    """Fraction of jets whose true response lies in their predicted interval [lower, upper], over all jets and in
    bins of the reconstructed pT."""
    inside = (truth >= lower) & (truth <= upper)
    out = {"all": float(inside.mean())}
    idx = np.digitize(reco_pt, bins) - 1
    for i, name in enumerate(_bin_names(bins)):
        sel = idx == i
        out[name] = float(inside[sel].mean()) if sel.any() else float("nan")
    return out


def pit_values(draws: np.ndarray, truth: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Randomised probability integral transform of each truth under its posterior draws (``draws``: (S, n)):
    (number of draws below the truth + U(0, 1) x (ties + 1)) / (S + 1), uniform on (0, 1) for a calibrated
    posterior, whatever S."""
    d = np.asarray(draws, np.float64)
    t = np.asarray(truth, np.float64)
    below = np.sum(d < t, axis=0)
    ties = np.sum(d == t, axis=0)
    return (below + rng.uniform(size=len(t)) * (ties + 1)) / (d.shape[0] + 1)


class Recalibration:
    """Recalibrated quantile levels per bin of the reconstructed pT (Kuleshov et al., arXiv:1807.00263): the
    nominal level p of the posterior becomes the level at which a fraction p of held-out truths lie below, the
    p-quantile of their PIT values in that bin (the empirical CDF of the PIT is the isotonic recalibration map).
    Bins with fewer than ``min_jets`` held-out jets use the map of all jets. A posterior that is too narrow gets
    levels pushed outwards, one with a bias shifted levels."""

    def __init__(self, pit: np.ndarray, reco_pt: np.ndarray, bins=PT_BINS, min_jets: int = 200):
        pit, reco_pt = np.asarray(pit, np.float64), np.asarray(reco_pt, np.float64)
        if len(pit) < min_jets:
            raise ValueError(f"a recalibration needs at least {min_jets} held-out jets, got {len(pit)}")
        self.bins = np.asarray(bins, np.float64)
        idx = np.digitize(reco_pt, self.bins) - 1
        self.overall = np.sort(pit)
        self.per_bin = [np.sort(pit[idx == i]) if np.sum(idx == i) >= min_jets else self.overall
                        for i in range(len(self.bins) - 1)]

    def levels(self, nominal: float, reco_pt: np.ndarray) -> np.ndarray:
        """The recalibrated level of the nominal ``nominal`` for each jet (by its reconstructed pT)."""
        idx = np.clip(np.digitize(np.asarray(reco_pt, np.float64), self.bins) - 1, 0, len(self.per_bin) - 1)
        table = np.asarray([np.quantile(p, nominal) for p in self.per_bin])
        return table[idx]

    def quantiles(self, draws: np.ndarray, reco_pt: np.ndarray, nominal) -> dict[float, np.ndarray]:
        """Per jet, the posterior quantiles (from ``draws``, (S, n)) at the recalibrated levels of each nominal
        level in ``nominal``."""
        d = np.sort(np.asarray(draws, np.float64), axis=0)
        s = d.shape[0]
        cols = np.arange(d.shape[1])
        out = {}
        for q in nominal:
            pos = np.clip(self.levels(q, reco_pt) * (s + 1) - 1, 0, s - 1)  # the PIT's (S + 1) grid
            lo = np.floor(pos).astype(int)
            hi = np.minimum(lo + 1, s - 1)
            frac = pos - lo
            out[q] = d[lo, cols] * (1 - frac) + d[hi, cols] * frac
        return out


def prior_closure(predicted: np.ndarray, truth: np.ndarray, true_pt: np.ndarray,
                  slopes=(-1.0, 1.0)) -> dict[str, float]:
    """Prior dependence: the median of predicted / true response when the test jets are reweighted by
    ``(pT_true / median pT_true)^slope`` (a softer and a harder spectrum than the training one), and unweighted."""
    ratio = np.asarray(predicted, np.float64) / np.asarray(truth, np.float64)
    ref = np.median(true_pt)
    out = {"unweighted": float(np.median(ratio))}
    for s in slopes:
        out[f"slope{s:+g}"] = float(_quantiles(ratio, [0.5], (np.asarray(true_pt) / ref) ** s)[0])
    return out


def corrected_jets(objects: Mapping[str, np.ndarray], event: np.ndarray, slot: np.ndarray,
                   factor: np.ndarray) -> np.ndarray:
    """Jet four-momenta ``(n, 10, 4)`` with the jets ``(event, slot)`` scaled by ``factor`` (a predicted
    response), the others unchanged."""
    p4 = jet_p4(objects)
    p4[event, slot] *= np.asarray(factor, np.float64)[:, None]
    return p4


def hbb_mass(objects: Mapping[str, np.ndarray], jets: np.ndarray) -> np.ndarray:
    """m_bb of the two b jets matched to b quarks in events that have exactly two (in the heavy-Higgs signal
    both come from h -> bb); NaN elsewhere. ``jets`` from :func:`~analysis.neutrino.jet_p4` or
    :func:`corrected_jets`."""
    event, slot = b_jets(objects)
    n = len(objects["obj_n_jets"])
    count = np.bincount(event, minlength=n)
    out = np.full(n, np.nan)
    two = np.flatnonzero(count == 2)
    first = np.searchsorted(event, two)
    pair = jets[two, slot[first]] + jets[two, slot[first + 1]]
    out[two] = _mass(pair)
    return out


def hadronic_top_mass(objects: Mapping[str, np.ndarray], jets: np.ndarray) -> np.ndarray:
    """m(b_had q q) with the true assignment (:func:`~analysis.neutrino.true_roles`); NaN where a role's jet is
    not stored."""
    roles = true_roles(objects)
    ok = np.all(roles[:, 1:] >= 0, axis=1)
    out = np.full(len(roles), np.nan)
    r = np.flatnonzero(ok)
    p = sum(jets[r, roles[r, k]] for k in (1, 2, 3))
    out[r] = _mass(p)
    return out


def mass_resolution(mass: np.ndarray) -> dict[str, float]:
    """Median, effective resolution (half the 16-84 % width) and their ratio of a mass peak (NaN entries
    dropped)."""
    m = np.asarray(mass, np.float64)
    m = m[np.isfinite(m)]
    q16, q50, q84 = np.quantile(m, [0.16, 0.5, 0.84])
    return {"median": float(q50), "resolution": float(0.5 * (q84 - q16)),
            "relative_resolution": float(0.5 * (q84 - q16) / q50), "events": int(len(m))}


# -- one application of the conditional layer: data and evaluation -------------------------------------------

TAYLOR_TARGET = "the response pT_true / pT_reco"
"""What introspection differentiates: the posterior mean of the response (:func:`taylor_inputs`)."""


def taylor_inputs() -> list[tuple[str, int, tuple[int, ...]]]:
    """Every context variable, for introspection (:func:`analysis.introspection.regression_coefficients`)."""
    return [(name, 0, (i,)) for i, name in enumerate(CONTEXT)]


def regression_data(objects: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """``(targets (n_jets, 1), context (n_jets, len(CONTEXT)))`` of the b jets of :func:`b_jets`."""
    event, slot = b_jets(objects)
    return response(objects, event, slot)[:, None], jet_context(objects, event, slot)


def embedding_spec(out_features: int, hidden: list[int]) -> dict:
    """The MLP embedding of :func:`jet_context` (``models.embedding.build_embedding``)."""
    return {"kind": "mlp", "in_features": len(CONTEXT), "out_features": out_features, "hidden_features": list(hidden)}


def evaluate(samples: Mapping[str, tuple[Mapping[str, np.ndarray], int]],
             predictions: Mapping[str, Mapping[str, Mapping[str, np.ndarray]]]) -> dict:
    """Every measure of b-jet corrections. ``samples``: name -> (object columns, label: 0 ttbar background, 1
    heavy-Higgs signal); ``predictions``: method -> sample -> ``{"response": (n,), "q16", "q25", "q75",
    "q84"}`` per b jet of :func:`b_jets` (the quantiles where the method has them); the method ``none`` (no
    correction) is added. Resolution and bias of pT_pred / pT_true in pT bins over all samples' b jets,
    coverage of the 50 % and 68 % intervals in pT bins, the prior dependence, and the h -> bb (signal) and
    hadronic-top (background, true assignment) mass peaks."""
    jets = {s: b_jets(obj) for s, (obj, _) in samples.items()}
    truth = {s: response(obj, *jets[s]) for s, (obj, _) in samples.items()}
    reco = {s: np.asarray(obj["obj_jet_pt"], np.float64)[jets[s]] for s, (obj, _) in samples.items()}
    predictions = {"none": {s: {"response": np.ones(len(truth[s]))} for s in samples}, **predictions}
    cat = {k: np.concatenate([v[s] for s in samples]) for k, v in (("truth", truth), ("reco", reco))}
    out: dict = {"jets": {s: int(len(truth[s])) for s in samples}, "resolution": {}, "coverage": {},
                 "prior": {}, "masses": {}}
    for method, pred in predictions.items():
        r = np.concatenate([pred[s]["response"] for s in samples])
        out["resolution"][method] = binned_resolution(r * cat["reco"], cat["truth"] * cat["reco"], cat["reco"])
        out["prior"][method] = prior_closure(r, cat["truth"], cat["truth"] * cat["reco"])
        if "q16" in pred[next(iter(samples))]:
            q = {k: np.concatenate([pred[s][k] for s in samples]) for k in ("q16", "q25", "q75", "q84")}
            out["coverage"][method] = {"50": binned_coverage(q["q25"], q["q75"], cat["truth"], cat["reco"]),
                                       "68": binned_coverage(q["q16"], q["q84"], cat["truth"], cat["reco"])}
        out["masses"][method] = {}
        for s, (obj, label) in samples.items():
            p4 = corrected_jets(obj, *jets[s], pred[s]["response"])
            mass = hbb_mass(obj, p4) if label == 1 else hadronic_top_mass(obj, p4)
            if np.isfinite(mass).sum() >= 10:
                out["masses"][method][s] = {"peak": "h -> bb" if label == 1 else "hadronic top",
                                            **mass_resolution(mass)}
    for method in predictions:
        for s, m in out["masses"][method].items():
            base = out["masses"]["none"][s]["relative_resolution"]
            m["improvement_over_none"] = float(1.0 - m["relative_resolution"] / base)
    return out
