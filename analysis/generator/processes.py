"""Parton-level event generation for the two processes of the analysis.

- **Background**: pp -> ttbar -> b l nu b q q' (exactly one W decays to e or mu, the other to quarks).
- **Signal**: the HIGGS-benchmark process of Baldi, Sadowski and Whiteson (Nat. Commun. 5 (2014) 4308),
  gg -> H0 -> W H+- -> W W h -> W W b b, one W leptonic and one hadronic.

Both share the production model: the hard system gets a falling mass spectrum (ttbar) or a Breit-Wigner line
shape (H0), a Gaussian rapidity (longitudinal boost) and a transverse recoil against initial-state radiation
(ISR) partons with a power-law pT spectrum, plus a few GeV of intrinsic kT balanced by the beam remnants. Every
resonance mass is drawn from a truncated relativistic Breit-Wigner and every decay is done in the parent's rest
frame; the W bosons of top decays carry the (F0, FL, FR) helicity fractions of the configuration, those from
scalar decays are longitudinal. The result is a :class:`PartonLevel` record in the layout of NanoAOD's GenPart
collection (one row per particle, mother indices, PDG ids), from which :mod:`analysis.generator.detector`
builds the reconstructed event.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..config import PhysicsConfig
from . import kinematics as kin

ELECTRON_MASS = 0.000511
MUON_MASS = 0.10566
INTRINSIC_KT = 3.0  # GeV, per transverse component


@dataclass
class PartonLevel:
    """Truth record of a batch of events, padded to a fixed number of particles per event.

    ``p4`` has shape ``(n, G, 4)``; ``pdg_id``, ``mother`` (GenPart index of the mother, -1 for none) and
    ``valid`` have shape ``(n, G)``. Columns ``lepton`` and ``neutrino`` hold the W's charged lepton and
    neutrino, ``quarks`` the final-state quarks that become jets, and ``isr`` the ISR partons (valid where
    present).
    """

    p4: np.ndarray
    pdg_id: np.ndarray
    mother: np.ndarray
    valid: np.ndarray
    lepton: int
    neutrino: int
    quarks: tuple[int, ...]
    isr: tuple[int, ...]

    @property
    def n_events(self) -> int:
        return self.p4.shape[0]

    @property
    def jet_partons(self) -> tuple[int, ...]:
        """Columns of the partons that shower into jets: final-state quarks, then ISR partons."""
        return self.quarks + self.isr


def _isr(rng: np.random.Generator, n: int, phys: PhysicsConfig) -> tuple[np.ndarray, np.ndarray]:
    """ISR partons, shape ``(n, K, 4)``, with a validity mask ``(n, K)``; invalid slots hold zero vectors."""
    k = phys.isr_max_partons
    count = np.minimum(rng.poisson(phys.isr_mean_partons, n), k)
    valid = np.arange(k)[None, :] < count[:, None]
    # power law dN/dpT ~ pT^-a above pt_min, capped at 1 TeV
    u = rng.uniform(size=(n, k))
    pt = np.minimum(phys.isr_pt_min * u ** (-1.0 / (phys.isr_pt_power - 1.0)), 1000.0)
    eta = np.clip(rng.normal(0.0, 2.0, (n, k)), -5.0, 5.0)
    ph = rng.uniform(-np.pi, np.pi, (n, k))
    p4 = kin.from_pt_eta_phi_m(pt, eta, ph, 0.0) * valid[..., None]
    return p4, valid


def _hard_system(rng: np.random.Generator, m: np.ndarray, isr: np.ndarray, phys: PhysicsConfig) -> np.ndarray:
    """Lab four-momentum of the hard system of mass ``m``: recoil against ISR and intrinsic kT, Gaussian y."""
    n = m.shape[0]
    recoil = -isr[..., 1:3].sum(axis=1) + rng.normal(0.0, INTRINSIC_KT, (n, 2))
    pt = np.hypot(recoil[:, 0], recoil[:, 1])
    ph = np.arctan2(recoil[:, 1], recoil[:, 0])
    y = rng.normal(0.0, phys.rapidity_sigma, n)
    return kin.from_pt_y_phi_m(pt, y, ph, m)


def _w_masses(rng: np.random.Generator, n: int, phys: PhysicsConfig, upper: np.ndarray | float) -> np.ndarray:
    w = phys.w
    low, high = w.mass - 10 * w.width, w.mass + 10 * w.width
    m = kin.breit_wigner(rng, w.mass, w.width, n, low, high)
    return np.minimum(m, upper)


def _w_decay_flavours(rng: np.random.Generator, w_charge: np.ndarray, leptonic: np.ndarray):
    """PDG ids and masses of (down-type or charged lepton, up-type or neutrino) for W bosons of given charge.

    Leptonic: e or mu with equal probability. Hadronic: u d or c s with equal probability (CKM-diagonal).
    """
    n = w_charge.shape[0]
    muon = rng.uniform(size=n) < 0.5
    charm = rng.uniform(size=n) < 0.5
    lep_id = np.where(muon, 13, 11)
    down_id = np.where(charm, 3, 1)
    up_id = np.where(charm, 4, 2)
    # W+ -> l+ nu / u dbar ; W- -> l- nubar / d ubar. Particle ids: l- = +11, nu = +12, d = +1, u = +2.
    f1 = np.where(leptonic, -lep_id * w_charge, -down_id * w_charge)
    f2 = np.where(leptonic, (lep_id + 1) * w_charge, up_id * w_charge)
    m1 = np.where(leptonic, np.where(muon, MUON_MASS, ELECTRON_MASS), 0.0)
    m2 = np.where(leptonic, 0.0, np.where(charm, 1.5, 0.0))
    return f1, f2, m1, m2


def _decay_w(rng, w, parent, leptonic, w_charge, helicity):
    """W decays with helicity w.r.t. the W direction in ``parent``'s frame; returns (f1, f2, id1, id2)."""
    id1, id2, m1, m2 = _w_decay_flavours(rng, w_charge, leptonic)
    cos = kin.sample_w_helicity_cos(rng, w.shape[0], helicity)
    f1, f2 = kin.decay(rng, w, m1, m2, cos_theta=cos, grandparent=parent)
    return f1, f2, id1, id2


def _assemble(columns, n, isr, isr_valid, lepton, neutrino, quarks) -> PartonLevel:
    """Stack (p4, pdg, mother) columns and the ISR partons into a :class:`PartonLevel`."""
    k = isr.shape[1]
    g = len(columns)
    p4 = np.concatenate([np.stack([c[0] for c in columns], axis=1), isr], axis=1)
    pdg = np.concatenate([np.stack([np.broadcast_to(c[1], (n,)) for c in columns], axis=1),
                          np.full((n, k), 21)], axis=1).astype(np.int32)
    mother = np.concatenate([np.stack([np.broadcast_to(c[2], (n,)) for c in columns], axis=1),
                             np.full((n, k), -1)], axis=1).astype(np.int32)
    valid = np.concatenate([np.ones((n, g), dtype=bool), isr_valid], axis=1)
    return PartonLevel(p4=p4, pdg_id=pdg, mother=mother, valid=valid, lepton=lepton, neutrino=neutrino,
                       quarks=quarks, isr=tuple(range(g, g + k)))


def generate_ttbar(rng: np.random.Generator, n: int, phys: PhysicsConfig) -> PartonLevel:
    """Semileptonic ttbar events (l = e, mu) at parton level.

    GenPart layout: 0 t(lep side), 1 t(had side), 2 W(lep), 3 b(lep), 4 W(had), 5 b(had), 6 lepton,
    7 neutrino, 8 down-type quark, 9 up-type quark, then ISR partons.
    """
    t = phys.top
    mt = kin.breit_wigner(rng, t.mass, t.width, 2 * n, t.mass - 15 * t.width, t.mass + 15 * t.width)
    mt_lep, mt_had = mt[:n], mt[n:]
    mtt = mt_lep + mt_had + rng.gamma(phys.mtt_gamma_shape, phys.mtt_gamma_scale, n)
    isr, isr_valid = _isr(rng, n, phys)
    tt = _hard_system(rng, mtt, isr, phys)

    # which top decays leptonically: the lepton-side top is a top (charge +) half of the time
    lep_top_charge = np.where(rng.uniform(size=n) < 0.5, 1, -1)
    top_lep, top_had = kin.decay(rng, tt, mt_lep, mt_had)

    mb = phys.b_mass
    mw_lep = _w_masses(rng, n, phys, mt_lep - mb - 1.0)
    mw_had = _w_masses(rng, n, phys, mt_had - mb - 1.0)
    w_lep, b_lep = kin.decay(rng, top_lep, mw_lep, mb)
    w_had, b_had = kin.decay(rng, top_had, mw_had, mb)
    lep, nu, lep_id, nu_id = _decay_w(rng, w_lep, top_lep, np.ones(n, bool), lep_top_charge, phys.w_helicity)
    qd, qu, qd_id, qu_id = _decay_w(rng, w_had, top_had, np.zeros(n, bool), -lep_top_charge, phys.w_helicity)

    columns = [
        (top_lep, 6 * lep_top_charge, -1),
        (top_had, -6 * lep_top_charge, -1),
        (w_lep, 24 * lep_top_charge, 0),
        (b_lep, 5 * lep_top_charge, 0),
        (w_had, -24 * lep_top_charge, 1),
        (b_had, -5 * lep_top_charge, 1),
        (lep, lep_id, 2),
        (nu, nu_id, 2),
        (qd, qd_id, 4),
        (qu, qu_id, 4),
    ]
    return _assemble(columns, n, isr, isr_valid, lepton=6, neutrino=7, quarks=(3, 5, 8, 9))


def generate_heavy_higgs(rng: np.random.Generator, n: int, phys: PhysicsConfig) -> PartonLevel:
    """HIGGS-benchmark signal gg -> H0 -> W H+- -> W W h -> W W b b at parton level.

    GenPart layout: 0 H0, 1 W (from H0), 2 H+-, 3 W (from H+-), 4 h, 5 b, 6 bbar, 7 lepton, 8 neutrino,
    9 down-type quark, 10 up-type quark, then ISR partons. Which W decays leptonically is random; the mothers of
    the W decay products say which.
    """
    h0, hc, h = phys.heavy_higgs, phys.charged_higgs, phys.higgs
    m_h0 = kin.breit_wigner(rng, h0.mass, h0.width, n, h0.mass - 10 * h0.width, h0.mass + 10 * h0.width)
    m_hc = kin.breit_wigner(rng, hc.mass, hc.width, n, hc.mass - 10 * hc.width, hc.mass + 10 * hc.width)
    m_h = kin.breit_wigner(rng, h.mass, h.width, n, h.mass - 10 * h.width, h.mass + 10 * h.width)
    mw_max_1 = m_h0 - m_hc - 1.0
    mw1 = _w_masses(rng, n, phys, mw_max_1)
    m_hc = np.minimum(m_hc, m_h0 - mw1 - 1.0)
    mw2 = _w_masses(rng, n, phys, m_hc - m_h - 1.0)

    isr, isr_valid = _isr(rng, n, phys)
    h0_p4 = _hard_system(rng, m_h0, isr, phys)
    hc_charge = np.where(rng.uniform(size=n) < 0.5, 1, -1)
    w1, hc_p4 = kin.decay(rng, h0_p4, mw1, m_hc)
    w2, h_p4 = kin.decay(rng, hc_p4, mw2, m_h)
    b, bbar = kin.decay(rng, h_p4, phys.b_mass, phys.b_mass)

    # one W leptonic, one hadronic; W's from scalar decays are longitudinally polarised
    w1_leptonic = rng.uniform(size=n) < 0.5
    w_lep = np.where(w1_leptonic[:, None], w1, w2)
    w_had = np.where(w1_leptonic[:, None], w2, w1)
    parent_lep = np.where(w1_leptonic[:, None], h0_p4, hc_p4)
    parent_had = np.where(w1_leptonic[:, None], hc_p4, h0_p4)
    charge_w1, charge_w2 = -hc_charge, hc_charge
    charge_lep = np.where(w1_leptonic, charge_w1, charge_w2)
    longitudinal = (1.0, 0.0, 0.0)
    lep, nu, lep_id, nu_id = _decay_w(rng, w_lep, parent_lep, np.ones(n, bool), charge_lep, longitudinal)
    qd, qu, qd_id, qu_id = _decay_w(rng, w_had, parent_had, np.zeros(n, bool), -charge_lep, longitudinal)
    w_lep_index = np.where(w1_leptonic, 1, 3)
    w_had_index = np.where(w1_leptonic, 3, 1)

    columns = [
        (h0_p4, 35, -1),
        (w1, 24 * charge_w1, 0),
        (hc_p4, 37 * hc_charge, 0),
        (w2, 24 * charge_w2, 2),
        (h_p4, 25, 2),
        (b, 5, 4),
        (bbar, -5, 4),
        (lep, lep_id, w_lep_index),
        (nu, nu_id, w_lep_index),
        (qd, qd_id, w_had_index),
        (qu, qu_id, w_had_index),
    ]
    return _assemble(columns, n, isr, isr_valid, lepton=7, neutrino=8, quarks=(5, 6, 9, 10))


PROCESS_GENERATORS = {"ttbar": generate_ttbar, "heavy_higgs": generate_heavy_higgs}
