"""Fast parametric detector simulation: from a :class:`~analysis.generator.processes.PartonLevel` record to the
reconstructed objects of a NanoAOD event.

Steps, in order:

1. **Semileptonic b decays** (b -> l nu X, probability ``b_semileptonic_fraction``): the neutrino carries a
   fraction z ~ Beta(2, 8) of the b momentum out of the jet, so the mean b-jet response is below one; the lepton
   (fraction Beta(2, 6)) stays inside the jet and is recorded as a non-isolated lepton.
2. **Merging**: partons closer than ``merge_dr`` in (eta, phi) are merged into one jet, closest pair first; the
   jet keeps the flavour of its heaviest constituent (b > c > light) and the truth index of the hardest.
3. **Jet response**: sigma(pT)/pT = sqrt((N/pT)^2 + S^2/pT + C^2), Gaussian angular smearing, a shower mass.
4. **Acceptance**: jets with pT > ``min_pt`` and |eta| < ``max_eta`` are stored; softer ones enter MET as
   unclustered activity; those beyond ``max_eta`` are lost.
5. **b tagging**: a DeepJet-like score whose fraction above the medium working point equals the configured
   efficiency for b, c and light jets (so the tagging efficiencies hold by construction).
6. **Leptons**: acceptance, efficiency of the tight identification, pT resolution, and a relative isolation
   computed from the partons in the isolation cone.
7. **MET**: minus the vector sum of the measured objects and of the unclustered activity (response
   ``unclustered_response``, Gaussian resolution ``const + sqrt_coef * sqrt(sum pT)`` per component).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..config import DetectorConfig, JetResponse
from . import kernels
from . import kinematics as kin
from .processes import ELECTRON_MASS, MUON_MASS, PartonLevel

# score shapes (Beta parameters) below and above the medium working point, per hadron flavour
_BTAG_SHAPES = {5: ((2.0, 1.5), (4.0, 1.0)), 4: ((1.2, 2.5), (1.5, 2.0)), 0: ((0.5, 6.0), (1.0, 3.0))}


@dataclass
class Collection:
    """A jagged collection as flat arrays plus per-event counts (the NanoAOD ``nX`` branch)."""

    counts: np.ndarray
    fields: dict[str, np.ndarray]


@dataclass
class RecoEvents:
    jets: Collection
    electrons: Collection
    muons: Collection
    met_pt: np.ndarray
    met_phi: np.ndarray
    genmet_pt: np.ndarray
    genmet_phi: np.ndarray


def _pad_select(values: dict[str, np.ndarray], keep: np.ndarray, order_key: np.ndarray) -> Collection:
    """Order the kept entries of padded ``(n, k)`` arrays by ``order_key`` (descending) and flatten them."""
    flat, counts = kernels.ordered_selection(keep, order_key)
    fields = {name: v.reshape(-1)[flat] for name, v in values.items()}
    return Collection(counts=counts, fields=fields)


def semileptonic_b_decays(rng: np.random.Generator, p4: np.ndarray, is_b: np.ndarray, fraction: float):
    """Split b partons into visible part, escaping neutrino and a non-prompt lepton.

    Returns ``(visible, neutrino, lepton, decayed)``: four-momenta of shape ``(n, P, 4)`` (zero where no decay)
    and the decay mask. The visible part keeps the lepton (particle-flow jets contain it).
    """
    shape = is_b.shape
    decayed = is_b & (rng.uniform(size=shape) < fraction)
    z_nu = np.where(decayed, rng.beta(2.0, 8.0, shape), 0.0)
    z_lep = np.where(decayed, np.minimum(rng.beta(2.0, 6.0, shape), 0.95 - z_nu), 0.0)
    neutrino = p4 * z_nu[..., None]
    neutrino[..., 0] = np.linalg.norm(neutrino[..., 1:], axis=-1)  # massless
    visible = p4 - neutrino
    # the lepton: a fraction of the b momentum, slightly off the b direction
    pt_b, eta_b, phi_b = kin.pt(p4), kin.eta(p4), kin.phi(p4)
    lep = kin.from_pt_eta_phi_m(z_lep * pt_b, eta_b + rng.normal(0, 0.05, shape),
                                kin.wrap_phi(phi_b + rng.normal(0, 0.05, shape)), 0.0)
    lep *= decayed[..., None]
    return visible, neutrino, lep, decayed


def merge_close_partons(p4: np.ndarray, valid: np.ndarray, flavour: np.ndarray, index: np.ndarray, dr: float,
                        owner: np.ndarray | None = None):
    """Merge partons closer than ``dr`` in (eta, phi), closest pair first, until none are that close.

    ``flavour`` is the hadron flavour (5, 4, 0): a merged jet keeps the highest; ``index`` (the truth index)
    is that of the harder constituent. Returns new arrays; merged-away slots become invalid. Each pass only
    revisits the events that merged in the previous one. With ``owner`` (an ``(n, P)`` array to fill), also
    records for every parton slot the slot of the jet it ended in.
    """
    p4, valid, flavour, index = p4.copy(), valid.copy(), flavour.copy(), index.copy()
    if owner is not None:
        owner[...] = np.arange(valid.shape[1])
    k = valid.shape[1]
    rows = np.arange(valid.shape[0])
    for _ in range(k - 1):
        if rows.size == 0:
            break
        sub = p4[rows]
        best_i, best_j, d2 = kernels.closest_pairs(kin.eta(sub), kin.phi(sub), valid[rows])
        merge = d2 < dr * dr
        r = rows[merge]
        i, j = best_i[merge], best_j[merge]
        harder_is_j = kin.pt(p4[r, j]) > kin.pt(p4[r, i])
        index[r, i] = np.where(harder_is_j, index[r, j], index[r, i])
        flavour[r, i] = np.maximum(flavour[r, i], flavour[r, j])
        p4[r, i] += p4[r, j]
        p4[r, j] = 0.0
        valid[r, j] = False
        if owner is not None:
            owner[r] = np.where(owner[r] == j[:, None], i[:, None], owner[r])
        rows = r
    return p4, valid, flavour, index


def soft_lepton_content(jets: np.ndarray, owner: np.ndarray, decayed: np.ndarray, leptons: np.ndarray,
                        flavour: np.ndarray) -> dict[str, np.ndarray]:
    """What a particle-flow jet of real NanoAOD records of the non-prompt leptons of semileptonic b decays
    inside it: ``nMuons`` and ``nElectrons`` (counts) and the energy fractions ``muEF`` (muons) and ``chEmEF``
    (electrons; here the charged electromagnetic fraction holds only them), per jet slot of ``jets``
    ``(n, P, 4)`` (the merged visible jets); ``owner`` maps each parton slot to its jet slot, ``decayed``,
    ``leptons`` ``(n, P, 4)`` and ``flavour`` (11 or 13) describe each parton's lepton. A jet with a soft lepton
    has, on average, lost a neutrino: what a b-jet energy regression learns from."""
    n, k = decayed.shape
    rows = np.repeat(np.arange(n), k).reshape(n, k)
    out = {}
    for name, fl in (("Muons", 13), ("Electrons", 11)):
        has = decayed & (flavour == fl)
        count = np.zeros((n, k), dtype=np.int64)
        energy = np.zeros((n, k))
        np.add.at(count, (rows[has], owner[has]), 1)
        np.add.at(energy, (rows[has], owner[has]), leptons[..., 0][has])
        out[f"n{name}"] = count
        out["muEF" if fl == 13 else "chEmEF"] = np.clip(energy / np.maximum(jets[..., 0], 1e-9), 0.0, 1.0)
    return out


def jet_resolution(pt: np.ndarray, noise: float, stochastic: float, constant: float) -> np.ndarray:
    """Relative jet pT resolution sqrt((N/pT)^2 + S^2/pT + C^2)."""
    pt = np.maximum(pt, 1e-3)
    return np.sqrt((noise / pt) ** 2 + stochastic**2 / pt + constant**2)


def btag_scores(rng: np.random.Generator, hadron_flavour: np.ndarray, wp: float,
                efficiency: dict[int, float]) -> np.ndarray:
    """DeepJet-like scores in (0, 1) with P(score > ``wp`` | flavour) = ``efficiency[flavour]`` exactly."""
    score = np.empty(hadron_flavour.shape)
    u = rng.uniform(size=hadron_flavour.shape)
    for flav, eff in efficiency.items():
        sel = hadron_flavour == flav
        (a_lo, b_lo), (a_hi, b_hi) = _BTAG_SHAPES[flav]
        m = int(sel.sum())
        lo = wp * rng.beta(a_lo, b_lo, m)
        hi = wp + (1.0 - wp) * rng.beta(a_hi, b_hi, m)
        score[sel] = np.where(u[sel] < eff, hi, lo)
    return np.clip(score, 1e-4, 1.0 - 1e-4)


def jet_response(rng: np.random.Generator, pt: np.ndarray, eta: np.ndarray, phi: np.ndarray, jc: JetResponse):
    """Measured ``(pt, eta, phi, scale)`` of jets with true ``pt``, ``eta``, ``phi``: Gaussian pT response of
    width :func:`jet_resolution` (``scale`` = measured / true pT, at least 0.05) and Gaussian angular smearing."""
    sigma = jet_resolution(pt, jc.noise, jc.stochastic, jc.constant)
    scale = np.maximum(1.0 + sigma * rng.normal(size=pt.shape), 0.05)
    return pt * scale, eta + rng.normal(0.0, jc.angular, pt.shape), \
        kin.wrap_phi(phi + rng.normal(0.0, jc.angular, pt.shape)), scale


def lepton_pt_response(rng: np.random.Generator, pt: np.ndarray, is_mu: np.ndarray, det: DetectorConfig):
    """Measured pT of leptons: Gaussian relative resolution of their flavour (at least 5 % of the true pT)."""
    res = np.where(is_mu, det.muon.resolution, det.electron.resolution)
    return pt * np.maximum(1.0 + res * rng.normal(size=pt.shape), 0.05)


def measure_leptons(rng: np.random.Generator, pt: np.ndarray, eta: np.ndarray, phi: np.ndarray,
                    pdg_id: np.ndarray, exists: np.ndarray, is_prompt: np.ndarray, gen_idx: np.ndarray,
                    isolation: np.ndarray, det: DetectorConfig) -> tuple[Collection, Collection, np.ndarray]:
    """Electrons and muons of NanoAOD from padded ``(n, L)`` leptons with measured ``pt``: acceptance of their
    flavour, the tight identification (efficiency of the flavour for prompt leptons, half of it for non-prompt
    ones; electrons fail to a looser ``cutBased`` level) and the relative ``isolation`` as ``pfRelIso03_all``
    (electrons) or ``pfRelIso04_all`` (muons). Returns ``(electrons, muons, stored)``."""
    is_mu = np.abs(pdg_id) == 13
    max_eta = np.where(is_mu, det.muon.max_eta, det.electron.max_eta)
    min_pt = np.where(is_mu, det.muon.min_pt, det.electron.min_pt)
    stored = exists & (pt > min_pt) & (np.abs(eta) < max_eta)
    eff = np.where(is_mu, det.muon.efficiency, det.electron.efficiency)
    passes_id = rng.uniform(size=pt.shape) < np.where(is_prompt, eff, 0.5 * eff)
    charge = np.where(pdg_id > 0, -1, 1)  # PDG: 11 = e-, -11 = e+
    fields = {"pt": pt, "eta": eta, "phi": phi, "charge": charge, "pdgId": pdg_id, "genPartIdx": gen_idx}
    ele_fields = dict(fields, mass=np.full(pt.shape, ELECTRON_MASS), pfRelIso03_all=isolation,
                      cutBased=np.where(passes_id, 4, rng.integers(1, 4, pt.shape)))
    mu_fields = dict(fields, mass=np.full(pt.shape, MUON_MASS), pfRelIso04_all=isolation, tightId=passes_id)
    return _pad_select(ele_fields, stored & ~is_mu, pt), _pad_select(mu_fields, stored & is_mu, pt), stored


def transverse_sum(pt: np.ndarray, phi: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per event the (x, y) momentum sum of the masked objects of padded ``(n, k)`` arrays."""
    return (pt * np.cos(phi) * mask).sum(axis=1), (pt * np.sin(phi) * mask).sum(axis=1)


def missing_et(rng: np.random.Generator, measured_x: np.ndarray, measured_y: np.ndarray, unclustered_x: np.ndarray,
               unclustered_y: np.ndarray, sum_pt: np.ndarray, det: DetectorConfig) -> tuple[np.ndarray, np.ndarray]:
    """``(pt, phi)`` of the missing transverse momentum: minus the measured objects' momentum sum and the
    unclustered activity at response ``unclustered_response``, with Gaussian resolution
    ``const + sqrt_coef * sqrt(sum_pt)`` per component (``sum_pt``: the scalar pT sum in the calorimeter)."""
    sigma_u = det.unclustered_resolution_const + det.unclustered_resolution_sqrt * np.sqrt(sum_pt)
    r = det.unclustered_response
    n = len(sum_pt)
    met_x = -(measured_x + r * unclustered_x) + sigma_u * rng.normal(size=n)
    met_y = -(measured_y + r * unclustered_y) + sigma_u * rng.normal(size=n)
    return np.hypot(met_x, met_y), np.arctan2(met_y, met_x)


def _isolation(lep: np.ndarray, partons: np.ndarray, valid: np.ndarray, cone: np.ndarray) -> np.ndarray:
    """Relative isolation of leptons ``(n, L, 4)`` with cone sizes ``cone`` ``(n, L)``: the pT of the parton
    activity inside the cone, each parton weighted by its overlap ``1 - dR/cone``."""
    lpt = np.maximum(kin.pt(lep), 1e-6)
    return kernels.isolation_sums(kin.eta(lep), kin.phi(lep), kin.eta(partons), kin.phi(partons),
                                  kin.pt(partons), valid, cone) / lpt


def simulate(rng: np.random.Generator, truth: PartonLevel, det: DetectorConfig) -> RecoEvents:
    """Reconstructed jets, electrons, muons and MET for a batch of parton-level events."""
    n = truth.n_events
    cols = np.array(truth.jet_partons)
    p4 = truth.p4[:, cols]
    valid = truth.valid[:, cols]
    pdg = np.abs(truth.pdg_id[:, cols])
    flavour = np.where(pdg == 5, 5, np.where(pdg == 4, 4, 0))
    index = np.broadcast_to(cols, valid.shape).copy()

    # 1. semileptonic b decays
    visible, nu_b, lep_b, decayed = semileptonic_b_decays(rng, p4, (pdg == 5) & valid,
                                                          det.b_semileptonic_fraction)
    # 2. merging of close partons
    owner = np.empty(valid.shape, dtype=np.int64)
    merged, mvalid, mflav, midx = merge_close_partons(visible, valid, flavour, index, det.jet.merge_dr, owner)

    # 3. response
    jc = det.jet
    tpt, teta, tphi, tm = kin.pt(merged), kin.eta(merged), kin.phi(merged), kin.mass(merged)
    rpt, reta, rphi, scale = jet_response(rng, tpt, teta, tphi, jc)
    shower = jc.shower_mass_fraction * rng.gamma(4.0, 0.25, tpt.shape)
    rmass = np.sqrt(tm**2 + (shower * tpt) ** 2) * scale

    # 4. acceptance
    in_calo = mvalid & (np.abs(teta) < jc.max_eta)
    stored = in_calo & (rpt > jc.min_pt) & (np.abs(reta) < jc.max_eta)
    unclustered = in_calo & ~stored

    # 5. b tagging
    bt = det.btag
    score = btag_scores(rng, mflav, bt.working_points["medium"],
                        {5: bt.efficiency_b, 4: bt.efficiency_c, 0: bt.efficiency_light})

    # truth-parton flavour of the jet (signed PDG id of the hardest constituent; 21 for gluons)
    parton_flavour = np.take_along_axis(truth.pdg_id, midx, axis=1)
    # (the non-prompt leptons' flavours are drawn with the leptons below; the jets are stored after that, so
    # that the soft-lepton content of each jet is known and no random number moves)
    np_flavour = np.where(rng.uniform(size=decayed.shape) < 0.5, 11, 13)
    soft = soft_lepton_content(merged, owner, decayed, lep_b, np_flavour)
    jets = _pad_select(
        {"pt": rpt, "eta": reta, "phi": rphi, "mass": rmass, "btagDeepFlavB": score,
         "hadronFlavour": mflav, "partonFlavour": parton_flavour, "genPartIdx": midx,
         "jetId": np.full(rpt.shape, 6), **soft},
        stored, rpt)

    # 6. leptons: the prompt one from the W, then non-prompt ones from b decays
    prompt = truth.p4[:, truth.lepton][:, None, :]
    prompt_id = truth.pdg_id[:, truth.lepton][:, None]
    np_id = np.where(truth.pdg_id[:, cols] > 0, np_flavour, -np_flavour)  # b -> l-, bbar -> l+
    lep_p4 = np.concatenate([prompt, lep_b], axis=1)
    lep_id = np.concatenate([prompt_id, np_id], axis=1)
    lep_exists = np.concatenate([np.ones((n, 1), bool), decayed], axis=1)
    is_prompt = np.zeros(lep_exists.shape, bool)
    is_prompt[:, 0] = True
    gen_idx = np.where(is_prompt, truth.lepton, -1)

    lpt, leta, lphi = kin.pt(lep_p4), kin.eta(lep_p4), kin.phi(lep_p4)
    is_mu = np.abs(lep_id) == 13
    r_lpt = lepton_pt_response(rng, lpt, is_mu, det)
    # isolation: activity of all jet partons in the cone; a non-prompt lepton sits inside its own b jet, whose
    # visible momentum contains the lepton itself, so that part is removed
    cone = np.where(is_mu, 0.4, 0.3)
    iso = _isolation(lep_p4, visible, valid, cone)
    own = np.concatenate([np.zeros((n, 1)), np.clip(1.0 - 0.05 / cone[:, 1:], 0, None)], axis=1)
    iso = np.clip(iso - own, 0.0, None) + rng.exponential(0.02, lpt.shape)
    electrons, muons, lep_stored = measure_leptons(rng, r_lpt, leta, lphi, lep_id, lep_exists, is_prompt, gen_idx,
                                                   iso, det)

    # 7. missing transverse momentum
    jx, jy = transverse_sum(rpt, rphi, stored)
    prompt_stored = lep_stored[:, :1]
    prompt_in_calo = np.abs(leta[:, :1]) < jc.max_eta
    lx, ly = transverse_sum(r_lpt[:, :1], lphi[:, :1], prompt_stored)
    soft_lep = prompt_in_calo & ~prompt_stored
    ux, uy = transverse_sum(tpt, tphi, unclustered)
    ulx, uly = transverse_sum(lpt[:, :1], lphi[:, :1], soft_lep)
    sum_pt = (tpt * in_calo).sum(axis=1) + (lpt[:, :1] * prompt_in_calo).sum(axis=1)
    met_pt, met_phi = missing_et(rng, jx + lx, jy + ly, ux + ulx, uy + uly, sum_pt, det)

    nu = truth.p4[:, truth.neutrino]
    gx = nu[:, 1] + nu_b[..., 1].sum(axis=1)
    gy = nu[:, 2] + nu_b[..., 2].sum(axis=1)
    return RecoEvents(jets=jets, electrons=electrons, muons=muons, met_pt=met_pt, met_phi=met_phi,
                      genmet_pt=np.hypot(gx, gy), genmet_phi=np.arctan2(gy, gx))
