"""Pythia 8 as the event source: real Monte Carlo events through the parametrised detector, in NanoAOD layout.

Samples with ``source: pythia8`` are produced here instead of by the embedded generator
(:mod:`analysis.generator.processes`); everything downstream (skim, truth record, regression, unfolding) is the
same. Needs the optional extra ``.[pythia]`` (``pythia8mc`` 8.317.2, ``fastjet`` 3.5.2.0).

- **Events**: pp at 13 TeV with Pythia 8 (Bierlich et al., SciPost Phys. Codebases 8 (2022)), parton shower,
  hadronisation and multiparton interactions on (``pythia`` in the configuration switches them), generated in
  batches with ``Pythia.nextBatch`` (awkward arrays). Background: ``Top:gg2ttbar`` and ``Top:qqbar2ttbar``.
  Signal: the HIGGS benchmark gg -> H0 -> W H+- -> W W h -> W W b b with Pythia's two-Higgs-doublet states
  (``HiggsBSM:gg2H2``, H2 = H0, its only open channels W H+-, H+- -> W h, h -> b bbar; masses and widths from
  ``physics``). One W decays to e or mu and a neutrino, the other to quarks: half of each file is generated with
  W+ -> l+ nu and W- -> q q', the other half charge-conjugate (two Pythia instances), then shuffled.
- **Jets**: anti-kt (Cacciari, Salam, Soyez, JHEP 04 (2008) 063), R = ``pythia.jet_radius``, with FastJet on the
  visible stable particles (neutrinos and the prompt lepton left out), pile-up included when overlaid. Flavour by
  ghost association: B and C hadrons enter the clustering with their momenta scaled by 1e-18; a jet holding a B
  hadron is a b jet (5), else one holding a C hadron a c jet (4), else light (0). ``Jet_genPartIdx``: the hardest
  quark of the hard process within Delta R < R of the jet. ``GenJet``: the same clustering with the neutrinos.
- **Detector**: the embedded generator's model, shared code (:mod:`analysis.generator.detector`): jet pT and
  angular response, acceptance, b-tag scores with the configured efficiencies per hadron flavour, lepton
  resolution, identification and acceptance, the MET from the measured objects and the unclustered activity.
  What Pythia gives instead of a model: the b-jet response (semileptonic B decays and out-of-cone radiation are
  in the particles), the jet masses, the non-prompt leptons (every final-state e or mu above 3 GeV) and the
  isolation (the scalar pT sum of the visible particles in the cone, 0.3 for electrons and 0.4 for muons,
  divided by the lepton's pT).
- **Truth**: ``GenPart`` in the embedded generator's layout (:func:`analysis.generator.processes.generate_ttbar`
  and ``generate_heavy_higgs``): the resonances (tops, W bosons, Higgs bosons) as their last copy, just before
  their decay; the b quarks, quarks, lepton and neutrino as produced in the decay, before radiation; then every
  other final-state neutrino (those of hadron decays: status 1, no mother). A W is exactly its two decay
  products and the h its b quarks, but a top is its W and b only up to the recoil that the W takes from the b
  quark's radiation (measured on 2000 ttbar events: t != W + b in 80 % of them, median relative difference
  2.7e-3; m(W + b) has its median at 171.8 GeV against m_t's 172.5): the unfolding's two-body
  parametrisation (:func:`analysis.unfolding.parametrise`) is exact on the embedded generator only.
  ``GenJet`` keeps the neutrinos of hadron decays (central NanoAOD's GenJets leave them out).
"""

from __future__ import annotations

import dataclasses

import awkward as ak
import numpy as np

from ..config import AnalysisConfig, ConfigError, SampleConfig
from . import kernels
from . import kinematics as kin
from .detector import Collection, RecoEvents, _pad_select, btag_scores, jet_response, lepton_pt_response, \
    measure_leptons, missing_et, transverse_sum
from .processes import PartonLevel

PYTHIA_REQUIREMENT = "pythia8mc==8.317.2"
FASTJET_REQUIREMENT = "fastjet==3.5.2.0"
GHOST_SCALE = 1e-18
NON_PROMPT_MIN_PT = 3.0  # GeV: final-state e and mu below it are not lepton candidates
_NEUTRINOS = (12, 14, 16)
_QUIET = ("Print:quiet = on", "Next:numberCount = 0", "Next:numberShowEvent = 0", "Next:numberShowInfo = 0",
          "Next:numberShowProcess = 0")


class MissingExtraError(ConfigError):
    """A configuration asks for Pythia 8 (``source: pythia8``), but the optional extra ``.[pythia]`` is not
    installed: a problem of the set-up, reported in one line like a configuration error."""


def require_pythia():
    """Import ``pythia8mc`` and ``fastjet``, or say in one message how to install them."""
    try:
        import fastjet
        import pythia8mc
    except ImportError as e:
        raise MissingExtraError(
            f"source 'pythia8' needs the optional extra (missing: {e.name}): pip install -e '.[pythia]' or "
            f"HEPFLOWS_EXTRAS=pythia source setup.sh ({PYTHIA_REQUIREMENT}, {FASTJET_REQUIREMENT})") from None
    return pythia8mc, fastjet


# -- settings -------------------------------------------------------------------------------------------------

def pythia_settings(process: str, cfg: AnalysisConfig, seed: int, lepton_charge: int,
                    top_mass_shift: float = 0.0) -> list[str]:
    """The ``readString`` lines of one Pythia instance: beams, the process and its decays with the masses and
    widths of ``cfg.physics``, t -> W b only (no CKM-suppressed W s, W d), W+ -> l+ nu and W- -> q q' (``lepton_charge`` +1) or the reverse (-1), the
    stages switched by ``cfg.pythia``, the seed, then ``cfg.pythia.settings``."""
    phys, pc = cfg.physics, cfg.pythia
    lines = ["Beams:eCM = 13000.", *_QUIET, "Random:setSeed = on", f"Random:seed = {seed}"]
    top = phys.top.mass + top_mass_shift
    lines += [f"6:m0 = {top}", f"6:mWidth = {phys.top.width}", "6:doForceWidth = on",
              "6:onMode = off", "6:onIfMatch = 24 5",
              f"24:m0 = {phys.w.mass}", f"24:mWidth = {phys.w.width}", "24:doForceWidth = on",
              f"5:m0 = {phys.b_mass}", "24:onMode = off"]
    leptonic, hadronic = "11 13", "1 2 3 4 5"
    pos, neg = (leptonic, hadronic) if lepton_charge > 0 else (hadronic, leptonic)
    lines += [f"24:onPosIfAny = {pos}", f"24:onNegIfAny = {neg}"]
    if process == "ttbar":
        lines += ["Top:gg2ttbar = on", "Top:qqbar2ttbar = on"]
    elif process == "heavy_higgs":
        h0, hc, h = phys.heavy_higgs, phys.charged_higgs, phys.higgs
        lines += ["Higgs:useBSM = on", "HiggsBSM:gg2H2 = on", "HiggsH2:coup2HchgW = 1.0",
                  f"35:m0 = {h0.mass}", f"35:mWidth = {h0.width}", "35:doForceWidth = on",
                  f"35:mMin = {h0.mass - 10 * h0.width}", f"35:mMax = {h0.mass + 10 * h0.width}",
                  "35:onMode = off", "35:onIfMatch = 24 -37", "35:onIfMatch = 37 -24",
                  f"37:m0 = {hc.mass}", f"37:mWidth = {hc.width}", "37:doForceWidth = on",
                  f"37:mMin = {hc.mass - 10 * hc.width}", f"37:mMax = {hc.mass + 10 * hc.width}",
                  "37:onMode = off", "37:onIfMatch = 24 25",
                  f"25:m0 = {h.mass}", f"25:mWidth = {h.width}", "25:onMode = off", "25:onIfMatch = 5 -5"]
    else:
        raise ValueError(f"no Pythia set-up for process {process!r}")
    onoff = {True: "on", False: "off"}
    lines += [f"PartonLevel:ISR = {onoff[pc.isr]}", f"PartonLevel:FSR = {onoff[pc.fsr]}",
              f"PartonLevel:MPI = {onoff[pc.mpi]}", f"HadronLevel:all = {onoff[pc.hadronisation]}"]
    return lines + list(pc.settings)


def pileup_settings(seed: int) -> list[str]:
    """Minimum-bias events (``SoftQCD:nonDiffractive``) to overlay as pile-up."""
    return ["Beams:eCM = 13000.", *_QUIET, "Random:setSeed = on", f"Random:seed = {seed}",
            "SoftQCD:nonDiffractive = on"]


def _pythia_seed(ss: np.random.SeedSequence) -> int:
    return int(ss.generate_state(1, np.uint32)[0]) % 900_000_000 + 1


def make_pythia(lines: list[str]):
    """An initialised ``pythia8mc.Pythia`` for ``lines``; a refused setting or a failed initialisation raises."""
    pythia8mc, _ = require_pythia()
    p = pythia8mc.Pythia("", False)
    for line in lines:
        if not p.readString(line):
            raise ValueError(f"Pythia refused the setting {line!r}")
    if not p.init():
        raise RuntimeError(f"Pythia failed to initialise with settings {lines}")
    return p


# -- the event record as flat numpy arrays --------------------------------------------------------------------

@dataclasses.dataclass
class FlatRecord:
    """Pythia's event records of a batch, flattened: per particle ``id``, ``status``, ``d1``, ``d2`` (global
    indices of the first and last daughter, -1 for none), ``p4`` ``(N, 4)`` (E, px, py, pz); ``offsets`` (n+1)
    where each event starts; ``event`` the event of each particle."""

    pid: np.ndarray
    status: np.ndarray
    d1: np.ndarray
    d2: np.ndarray
    p4: np.ndarray
    offsets: np.ndarray
    event: np.ndarray

    @classmethod
    def from_batch(cls, prt: ak.Array) -> "FlatRecord":
        counts = ak.to_numpy(ak.num(prt.id)).astype(np.int64)
        offsets = np.concatenate([[0], np.cumsum(counts)])
        event = np.repeat(np.arange(len(counts)), counts)
        start = offsets[:-1][event]

        def flat(x):
            return ak.to_numpy(ak.flatten(x)).astype(np.int64)

        d1, d2 = flat(prt.daughter1), flat(prt.daughter2)
        p = prt.p
        p4 = np.stack([ak.to_numpy(ak.flatten(p[k])) for k in ("e", "px", "py", "pz")], axis=1)
        return cls(pid=flat(prt.id), status=flat(prt.status), d1=np.where(d1 > 0, d1 + start, -1),
                   d2=np.where(d2 > 0, d2 + start, -1), p4=p4, offsets=offsets, event=event)

    def last_copy(self, idx: np.ndarray) -> np.ndarray:
        """Follow a particle through its copies to the last one (as Pythia's ``iBotCopyId``): recoil copies (a
        single daughter) and emissions (a daughter of the same id beside the emitted parton)."""
        idx = idx.copy()
        for _ in range(1000):
            d1, d2 = self.d1[idx], self.d2[idx]
            pid = self.pid[idx]
            same1 = (d1 >= 0) & (self.pid[np.maximum(d1, 0)] == pid)
            same2 = (d2 >= 0) & (self.pid[np.maximum(d2, 0)] == pid)
            if not (same1 | same2).any():
                return idx
            idx = np.where(same1, d1, np.where(same2, d2, idx))
        raise RuntimeError("Pythia record: a chain of copies does not end")

    def two_daughters(self, idx: np.ndarray, what: str) -> tuple[np.ndarray, np.ndarray]:
        d1, d2 = self.d1[idx], self.d2[idx]
        if np.any((d1 < 0) | (d2 != d1 + 1)):
            raise RuntimeError(f"Pythia record: {what} does not decay into two particles in every event")
        return d1, d2


def _hard_process(rec: FlatRecord, process: str) -> tuple[PartonLevel, np.ndarray, np.ndarray]:
    """The truth record in the embedded generator's GenPart layout, the global index of the prompt lepton's last
    copy and of the W neutrino's last copy."""
    first = rec.offsets[:-1]
    n = len(first)

    def pick(a, b, cond):
        return np.where(cond, a, b), np.where(cond, b, a)

    if process == "ttbar":
        if np.any(np.abs(rec.pid[first + 5]) != 6) or np.any(np.abs(rec.pid[first + 6]) != 6):
            raise RuntimeError("Pythia record: rows 5 and 6 are not the top quarks of the hard process")
        t1, t2 = rec.last_copy(first + 5), rec.last_copy(first + 6)
        tops = []
        for t in (t1, t2):
            a, b = rec.two_daughters(t, "a top quark")
            w, bq = pick(a, b, np.abs(rec.pid[a]) == 24)
            tops.append((t, w, bq))
        wl1 = rec.last_copy(tops[0][1])
        x1, _ = rec.two_daughters(wl1, "a W")
        lep_first = np.isin(np.abs(rec.pid[x1]), (11, 12, 13, 14))
        (t_lep, w_lep, b_lep), (t_had, w_had, b_had) = [
            tuple(np.where(lep_first, p, q) for p, q in zip(tops[0], tops[1])),
            tuple(np.where(lep_first, q, p) for p, q in zip(tops[0], tops[1]))]
        w_lep_last, w_had_last = rec.last_copy(w_lep), rec.last_copy(w_had)
        lep_rows = [t_lep, t_had, w_lep_last, b_lep, w_had_last, b_had]
        mothers = [-1, -1, 0, 0, 1, 1, 2, 2, 4, 4]
        lepton, neutrino, quarks = 6, 7, (3, 5, 8, 9)
    elif process == "heavy_higgs":
        if np.any(rec.pid[first + 5] != 35):
            raise RuntimeError("Pythia record: row 5 is not the H0 (id 35) of the hard process")
        h0 = rec.last_copy(first + 5)
        a, b = rec.two_daughters(h0, "the H0")
        w1, hc = pick(a, b, np.abs(rec.pid[a]) == 24)
        hc = rec.last_copy(hc)
        a, b = rec.two_daughters(hc, "the H+-")
        w2, h = pick(a, b, np.abs(rec.pid[a]) == 24)
        h = rec.last_copy(h)
        bq, bbar = rec.two_daughters(h, "the h")
        bq, bbar = pick(bq, bbar, rec.pid[bq] > 0)
        w1l, w2l = rec.last_copy(w1), rec.last_copy(w2)
        x1, _ = rec.two_daughters(w1l, "a W")
        w1_leptonic = np.isin(np.abs(rec.pid[x1]), (11, 12, 13, 14))
        w_lep_last = np.where(w1_leptonic, w1l, w2l)
        w_had_last = np.where(w1_leptonic, w2l, w1l)
        lep_rows = [h0, w1l, hc, w2l, h, bq, bbar]
        w_lep_index = np.where(w1_leptonic, 1, 3)
        w_had_index = np.where(w1_leptonic, 3, 1)
        mothers = [-1, 0, 0, 2, 2, 4, 4, w_lep_index, w_lep_index, w_had_index, w_had_index]
        lepton, neutrino, quarks = 7, 8, (5, 6, 9, 10)
    else:
        raise ValueError(f"no Pythia set-up for process {process!r}")

    a, b = rec.two_daughters(w_lep_last, "the leptonic W")
    lep, nu = pick(a, b, np.isin(np.abs(rec.pid[a]), (11, 13)))
    a, b = rec.two_daughters(w_had_last, "the hadronic W")
    qd, qu = pick(a, b, np.abs(rec.pid[a]) % 2 == 1)
    if not np.all(np.isin(np.abs(rec.pid[lep]), (11, 13))):
        raise RuntimeError("Pythia record: the leptonic W does not decay to e or mu in every event")
    rows = np.stack(lep_rows + [lep, nu, qd, qu], axis=1)
    mother = np.stack([np.broadcast_to(np.asarray(m), (n,)) for m in mothers], axis=1).astype(np.int32)
    truth = PartonLevel(p4=rec.p4[rows], pdg_id=rec.pid[rows].astype(np.int32), mother=mother,
                        valid=np.ones(rows.shape, bool), lepton=lepton, neutrino=neutrino, quarks=quarks, isr=())
    return truth, rec.last_copy(lep), rec.last_copy(nu)


# -- jets -----------------------------------------------------------------------------------------------------

def _is_heavy_hadron(pid: np.ndarray, quark: int) -> np.ndarray:
    """Hadrons holding a ``quark`` (PDG numbering: mesons nq1q2J, baryons nq1q2q3J; diquarks, with a zero tens
    digit, are partons and left out)."""
    a = np.abs(pid)
    return (a > 100) & ((a // 10) % 10 != 0) & (((a // 100) % 10 == quark) | ((a // 1000) % 10 == quark))


def _cluster(fastjet, p4: np.ndarray, counts: np.ndarray, radius: float, min_pt: float):
    """anti-kt jets of per-event particle lists (``p4`` flat ``(N, 4)`` ordered by event, ``counts`` per
    event): the jets as padded ``(n, J, 4)`` arrays ordered by pT, their validity and the flat input indices of
    their constituents (jagged ``(n, jets, constituents)``)."""
    arr = ak.zip({k: ak.unflatten(p4[:, i], counts) for k, i in (("px", 1), ("py", 2), ("pz", 3), ("E", 0))})
    cs = fastjet.ClusterSequence(arr, fastjet.JetDefinition(fastjet.antikt_algorithm, radius))
    jets = cs.inclusive_jets(min_pt=min_pt)
    const = cs.constituent_index(min_pt=min_pt)
    order = ak.argsort(np.hypot(jets.px, jets.py), axis=1, ascending=False)
    jets, const = jets[order], const[order]
    width = max(int(ak.max(ak.num(jets), initial=0)), 1)
    njet = ak.to_numpy(ak.num(jets))
    valid = np.arange(width)[None, :] < njet[:, None]
    out = np.zeros((len(counts), width, 4))
    for i, k in enumerate(("E", "px", "py", "pz")):
        out[..., i] = ak.to_numpy(ak.fill_none(ak.pad_none(jets[k], width, axis=1), 0.0))
    offsets = np.concatenate([[0], np.cumsum(counts)])[:-1]
    return out, valid, const + offsets


def _per_jet(const: ak.Array, values: np.ndarray, width: int, reducer) -> np.ndarray:
    """Reduce ``values`` (flat, per clustering input) over each jet's constituents: padded ``(n, width)``."""
    flat = ak.to_numpy(ak.flatten(const, axis=None))
    nested = ak.unflatten(ak.unflatten(np.asarray(values)[flat], ak.to_numpy(ak.flatten(ak.num(const, axis=2)))),
                          ak.to_numpy(ak.num(const, axis=1)))
    per = reducer(nested, axis=-1)
    return ak.to_numpy(ak.fill_none(ak.pad_none(per, width, axis=1), 0))


def _delta_r2(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Squared Delta R between every object of padded ``a`` ``(n, J, 4)`` and of ``b`` ``(n, K, 4)``: ``(n, J, K)``."""
    deta = kin.eta(a)[:, :, None] - kin.eta(b)[:, None, :]
    dphi = kin.delta_phi(kin.phi(a)[:, :, None], kin.phi(b)[:, None, :])
    return deta**2 + dphi**2


def _match_partons(jets: np.ndarray, valid: np.ndarray, truth: PartonLevel, radius: float):
    """Per jet the GenPart column of the hardest hard-process quark within Delta R < ``radius`` (-1: none)."""
    cols = np.array(truth.quarks)
    q = truth.p4[:, cols]
    close = (_delta_r2(jets, q) < radius**2) & valid[:, :, None]
    qpt = np.where(close, kin.pt(q)[:, None, :], -1.0)
    best = np.argmax(qpt, axis=2)
    return np.where(close.any(axis=2), cols[best], -1)


# -- one batch ------------------------------------------------------------------------------------------------

@dataclasses.dataclass
class PythiaBatch:
    """What one batch of Pythia events becomes: the truth record (its fixed GenPart layout and the other
    final-state neutrinos), the reconstructed event and the particle-level jets (``GenJet``)."""

    truth: PartonLevel
    reco: RecoEvents
    genjets: Collection
    extra_neutrinos: Collection


def _flat_pileup(pileup: ak.Array, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Visible stable particles of the minimum-bias records ``pileup`` (``counts[i]`` of them for event i, in
    order): their four-momenta and the event each belongs to."""
    rec = FlatRecord.from_batch(pileup)
    sel = (rec.status > 0) & ~np.isin(np.abs(rec.pid), _NEUTRINOS)
    owner = np.repeat(np.arange(len(counts)), counts)
    return rec.p4[sel], owner[rec.event[sel]]


def simulate_batch(rng: np.random.Generator, prt: ak.Array, process: str, cfg: AnalysisConfig,
                   pileup: ak.Array | None = None, pileup_counts: np.ndarray | None = None) -> PythiaBatch:
    """Truth, reconstructed event and particle-level jets of a batch of Pythia events ``prt`` (the ``prt`` field
    of ``Pythia.nextBatch``); ``pileup``: minimum-bias records to overlay, ``pileup_counts[i]`` on event i."""
    _, fastjet = require_pythia()
    det, pc = cfg.detector, cfg.pythia
    jc = det.jet
    rec = FlatRecord.from_batch(prt)
    n = len(rec.offsets) - 1
    truth, lep_last, nu_last = _hard_process(rec, process)

    final = rec.status > 0
    apid = np.abs(rec.pid)
    is_nu = final & np.isin(apid, _NEUTRINOS)
    prompt = np.zeros(len(final), bool)
    prompt[lep_last] = True
    visible = final & ~is_nu

    # the visible particles of each event, then its pile-up, ordered by event (a stable sort keeps the event's
    # own particles first and in record order)
    own_event = rec.event[visible]
    vis_p4, vis_event, vis_kind = rec.p4[visible], own_event, apid[visible]
    vis_prompt = prompt[visible]
    if pileup is not None and len(pileup):
        pu_p4, pu_event = _flat_pileup(pileup, pileup_counts)
        order = np.argsort(np.concatenate([vis_event, pu_event]), kind="stable")
        vis_p4 = np.concatenate([vis_p4, pu_p4])[order]
        vis_event = np.concatenate([vis_event, pu_event])[order]
        vis_kind = np.concatenate([vis_kind, np.zeros(len(pu_event), np.int64)])[order]  # 0: pile-up
        vis_prompt = np.concatenate([vis_prompt, np.zeros(len(pu_event), bool)])[order]
    vis_counts = np.bincount(vis_event, minlength=n)
    vis_offsets = np.concatenate([[0], np.cumsum(vis_counts)])
    own_offsets = np.concatenate([[0], np.cumsum(np.bincount(own_event, minlength=n))])
    position = np.full(len(rec.pid), -1)  # record particle -> its row in the visible list
    position[visible] = np.arange(len(own_event)) - own_offsets[own_event] + vis_offsets[own_event]

    # particle-level jets (GenJet): all stable particles but the prompt lepton and the W's neutrino, no pile-up
    gsel = final & ~prompt
    gsel[nu_last] = False
    gjets, gvalid, _ = _cluster(fastjet, rec.p4[gsel], np.bincount(rec.event[gsel], minlength=n), pc.jet_radius,
                                10.0)
    genjets = _pad_select({"pt": kin.pt(gjets), "eta": kin.eta(gjets), "phi": kin.phi(gjets),
                           "mass": kin.mass(gjets)}, gvalid, kin.pt(gjets))

    # reconstruction input: the visible particles less the prompt lepton, then the B and C hadron ghosts
    ghost_b = _is_heavy_hadron(rec.pid, 5)
    ghost = ghost_b | _is_heavy_hadron(rec.pid, 4)
    keep = ~vis_prompt
    in_event = np.concatenate([vis_event[keep], rec.event[ghost]])
    order = np.argsort(in_event, kind="stable")
    in_p4 = np.concatenate([vis_p4[keep], rec.p4[ghost] * GHOST_SCALE])[order]
    in_kind = np.concatenate([vis_kind[keep], np.where(ghost_b[ghost], -5, -4)])[order]  # < 0: ghosts
    jets, jvalid, const = _cluster(fastjet, in_p4, np.bincount(in_event, minlength=n), pc.jet_radius,
                                   0.3 * jc.min_pt)
    width = jets.shape[1]
    has_b = _per_jet(const, in_kind == -5, width, ak.any).astype(bool)
    has_c = _per_jet(const, in_kind == -4, width, ak.any).astype(bool)
    flavour = np.where(has_b, 5, np.where(has_c, 4, 0))
    soft = {}
    for name, code, ef in (("Muons", 13, "muEF"), ("Electrons", 11, "chEmEF")):
        soft[f"n{name}"] = _per_jet(const, in_kind == code, width, ak.sum).astype(np.int64)
        energy = _per_jet(const, np.where(in_kind == code, in_p4[:, 0], 0.0), width, ak.sum)
        soft[ef] = np.clip(energy / np.maximum(jets[..., 0], 1e-9), 0.0, 1.0)

    # detector response (shared with the embedded generator)
    tpt, teta, tphi, tm = kin.pt(jets), kin.eta(jets), kin.phi(jets), kin.mass(jets)
    rpt, reta, rphi, scale = jet_response(rng, tpt, teta, tphi, jc)
    in_calo = jvalid & (np.abs(teta) < jc.max_eta)
    stored = in_calo & (rpt > jc.min_pt) & (np.abs(reta) < jc.max_eta)
    bt = det.btag
    score = btag_scores(rng, flavour, bt.working_points["medium"],
                        {5: bt.efficiency_b, 4: bt.efficiency_c, 0: bt.efficiency_light})
    gen_idx = _match_partons(jets, jvalid, truth, pc.jet_radius)
    parton_flavour = np.where(gen_idx >= 0, np.take_along_axis(truth.pdg_id, np.maximum(gen_idx, 0), axis=1), 0)
    genjet_idx = _match_jets(jets, jvalid, gjets, gvalid, pc.jet_radius / 2)
    reco_jets = _pad_select(
        {"pt": rpt, "eta": reta, "phi": rphi, "mass": tm * scale, "btagDeepFlavB": score, "hadronFlavour": flavour,
         "partonFlavour": parton_flavour, "genPartIdx": gen_idx, "genJetIdx": genjet_idx,
         "jetId": np.full(rpt.shape, 6), **soft}, stored, rpt)

    # leptons: every final-state e and mu above NON_PROMPT_MIN_PT, and the W's (prompt) one
    cand = (final & np.isin(apid, (11, 13)) & (kin.pt(rec.p4) > NON_PROMPT_MIN_PT)) | prompt
    c_idx = np.flatnonzero(cand)
    c_event = rec.event[c_idx]
    c_counts = np.bincount(c_event, minlength=n)
    lwidth = max(int(c_counts.max(initial=0)), 1)
    slot = np.arange(len(c_idx)) - np.concatenate([[0], np.cumsum(c_counts)])[:-1][c_event]
    exists = np.zeros((n, lwidth), bool)
    exists[c_event, slot] = True

    def padded(v):
        out = np.zeros((n, lwidth), dtype=np.asarray(v).dtype)
        out[c_event, slot] = v
        return out

    lp4 = rec.p4[c_idx]
    lpt, leta, lphi = padded(kin.pt(lp4)), padded(kin.eta(lp4)), padded(kin.phi(lp4))
    lep_id = padded(rec.pid[c_idx].astype(np.int32))
    is_prompt = padded(prompt[c_idx])
    is_mu = np.abs(lep_id) == 13
    r_lpt = lepton_pt_response(rng, lpt, is_mu, det)
    # isolation: the visible particles in the cone (pile-up included), the lepton itself left out
    cone = np.where(apid[c_idx] == 13, 0.4, 0.3)
    sums = kernels.cone_sums(kin.eta(lp4), kin.phi(lp4), c_event, kin.eta(vis_p4), kin.phi(vis_p4), kin.pt(vis_p4),
                      vis_offsets, cone, position[c_idx])
    iso = padded(sums / np.maximum(kin.pt(lp4), 1e-6))
    electrons, muons, lep_stored = measure_leptons(rng, r_lpt, leta, lphi, lep_id, exists, is_prompt,
                                                   np.where(is_prompt, truth.lepton, -1), iso, det)

    # MET: the measured jets and prompt lepton; the rest of the visible activity in the calorimeter unclustered
    jx, jy = transverse_sum(rpt, rphi, stored)
    prompt_stored = lep_stored & is_prompt
    lx, ly = transverse_sum(r_lpt, lphi, prompt_stored)
    calo = np.abs(kin.eta(vis_p4)) < jc.max_eta
    vx = np.bincount(vis_event, weights=vis_p4[:, 1] * calo, minlength=n)
    vy = np.bincount(vis_event, weights=vis_p4[:, 2] * calo, minlength=n)
    sum_pt = np.bincount(vis_event, weights=kin.pt(vis_p4) * calo, minlength=n)
    tjx, tjy = transverse_sum(tpt, tphi, stored)
    tlx, tly = transverse_sum(lpt, lphi, prompt_stored)
    met_pt, met_phi = missing_et(rng, jx + lx, jy + ly, vx - tjx - tlx, vy - tjy - tly, sum_pt, det)
    gx = np.bincount(rec.event, weights=rec.p4[:, 1] * is_nu, minlength=n)
    gy = np.bincount(rec.event, weights=rec.p4[:, 2] * is_nu, minlength=n)
    reco = RecoEvents(jets=reco_jets, electrons=electrons, muons=muons, met_pt=met_pt, met_phi=met_phi,
                      genmet_pt=np.hypot(gx, gy), genmet_phi=np.arctan2(gy, gx))

    # the other final-state neutrinos (hadron decays) for the truth record
    other_nu = is_nu.copy()
    other_nu[nu_last] = False
    nu_p4 = rec.p4[other_nu]
    m = int(other_nu.sum())
    extra = Collection(counts=np.bincount(rec.event[other_nu], minlength=n), fields={
        "pt": kin.pt(nu_p4), "eta": kin.eta(nu_p4), "phi": kin.phi(nu_p4), "mass": np.zeros(m),
        "pdgId": rec.pid[other_nu], "status": np.ones(m), "genPartIdxMother": np.full(m, -1),
        "statusFlags": np.zeros(m)})
    return PythiaBatch(truth=truth, reco=reco, genjets=genjets, extra_neutrinos=extra)


def _match_jets(jets: np.ndarray, valid: np.ndarray, gjets: np.ndarray, gvalid: np.ndarray, dr: float):
    """Per jet the index of the closest particle-level jet within ``dr`` (NanoAOD's ``Jet_genJetIdx``; -1: none);
    ``gjets`` ordered as they are stored."""
    d2 = np.where(gvalid[:, None, :] & valid[:, :, None], _delta_r2(jets, gjets), np.inf)
    best = np.argmin(d2, axis=2)
    return np.where(np.take_along_axis(d2, best[..., None], axis=2)[..., 0] < dr * dr, best, -1)


# -- the source of one file -----------------------------------------------------------------------------------

class PythiaSource:
    """The Pythia instances of one file (the two lepton charges, pile-up) and the detector's random stream, all
    seeded from ``seed`` (the file's :class:`numpy.random.SeedSequence`)."""

    def __init__(self, cfg: AnalysisConfig, sample: SampleConfig, seed: np.random.SeedSequence):
        self.cfg, self.process = cfg, sample.process
        det_ss, plus_ss, minus_ss, pu_ss = seed.spawn(4)
        self.rng = np.random.default_rng(det_ss)
        self.settings = {charge: pythia_settings(sample.process, cfg, _pythia_seed(ss), charge,
                                                 sample.top_mass_shift)
                         for charge, ss in ((1, plus_ss), (-1, minus_ss))}
        self.instances = {charge: make_pythia(lines) for charge, lines in self.settings.items()}
        self.pileup = make_pythia(pileup_settings(_pythia_seed(pu_ss))) if cfg.pythia.pileup > 0 else None

    def generate(self, n: int) -> PythiaBatch:
        """``n`` events, half of each lepton charge, shuffled, through jets and detector."""
        parts = [self.instances[c].nextBatch(k).prt for c, k in ((1, n - n // 2), (-1, n // 2)) if k > 0]
        prt = ak.concatenate(parts) if len(parts) > 1 else parts[0]
        prt = prt[self.rng.permutation(n)]
        pileup, counts = None, None
        if self.pileup is not None:
            counts = self.rng.poisson(self.cfg.pythia.pileup, n)
            total = int(counts.sum())
            pileup = self.pileup.nextBatch(total).prt if total else None
        return simulate_batch(self.rng, prt, self.process, self.cfg, pileup, counts)

    def cross_section_pb(self) -> float:
        """Pythia's (leading-order) estimate of the cross-section of the file's process, in pb: the sum over the
        two charge-conjugate instances, each of which generates one charge assignment of the two W decays."""
        return float(np.sum([p.infoPython().sigmaGen() * 1e9 for p in self.instances.values()]))


def pythia_to_nanoaod(batch: PythiaBatch, first_event: int, lumi_block: int) -> dict:
    """The branches of :func:`analysis.generator.nanoaod.to_nanoaod` plus ``GenJet``, ``Jet_genJetIdx`` and the
    other final-state neutrinos appended to ``GenPart``."""
    from .nanoaod import _jagged, to_nanoaod

    out = to_nanoaod(batch.truth, batch.reco, first_event, lumi_block)
    types = {"pdgId": "int32", "status": "int32", "genPartIdxMother": "int32", "statusFlags": "int32"}
    extra = _jagged(batch.extra_neutrinos, types)
    out["GenPart"] = ak.concatenate([out["GenPart"], extra[out["GenPart"].fields]], axis=1)
    out["GenJet"] = _jagged(batch.genjets, {})
    return out
