"""Pythia 8 as the event source: settings, truth record, jets and detector, on a few hundred events.

The physics checks are those a realistic event source must pass beside the embedded generator: wider mass peaks
of matched jets (shower, hadronisation, out-of-cone losses), a b-jet response below the light-jet one
(semileptonic B decays), the configured b-tag efficiencies, more jets from radiation, and the skim's features
and truth columns on the files. Skipped without the optional extra (``HEPFLOWS_EXTRAS=pythia``).
"""

from __future__ import annotations

import json
import sys

import awkward as ak
import numpy as np
import pytest
import uproot

from analysis.config import ConfigError, config_from_dict, config_to_dict, load_config
from analysis.generator import kinematics as kin
from analysis.generator.nanoaod import generate_batch, write_nanoaod_file

pytest.importorskip("pythia8mc")
pytest.importorskip("fastjet")

from analysis.generator.pythia import MissingExtraError, make_pythia, pythia_settings, require_pythia  # noqa: E402

N_TTBAR, N_SIGNAL = 600, 300


def pythia_config(**pythia):
    d = config_to_dict(load_config("quickstart"))
    for s in d["samples"].values():
        s["source"] = "pythia8"
    d["pythia"].update(pythia)
    return config_from_dict(d)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    cfg = pythia_config()
    out = tmp_path_factory.mktemp("pythia")
    paths = {}
    for sample, n in (("background", N_TTBAR), ("signal", N_SIGNAL)):
        paths[sample] = out / f"{sample}.root"
        write_nanoaod_file(paths[sample], cfg, sample, 0, n_events=n)
    return cfg, paths


@pytest.fixture(scope="module")
def ttbar(files):
    return uproot.open(files[1]["background"])["Events"].arrays()


def _p4(a, prefix, mask):
    return kin.from_pt_eta_phi_m(*(ak.to_numpy(ak.flatten(a[f"{prefix}_{k}"][mask])) for k in
                                   ("pt", "eta", "phi", "mass")))


def _matched_mass(a, columns):
    """Invariant mass of the jets matched to the GenPart ``columns`` (one jet each, distinct), per event."""
    idx = a.Jet_genPartIdx
    ok = np.ones(len(a), bool)
    for c in columns:
        ok &= ak.to_numpy(ak.sum(idx == c, axis=1)) == 1
    total = 0
    for c in columns:
        total = total + _p4(a[ok], "Jet", (idx == c)[ok])
    return kin.mass(total)


def _peak(m, lo, hi):
    m = m[(m > lo) & (m < hi)]
    return float(np.median(m)), 0.5 * float(np.percentile(m, 84) - np.percentile(m, 16))


def test_settings_follow_the_configuration():
    cfg = pythia_config()
    plus = pythia_settings("ttbar", cfg, 7, 1, top_mass_shift=1.0)
    minus = pythia_settings("ttbar", cfg, 7, -1)
    assert "6:m0 = 173.5" in plus and "6:m0 = 172.5" in minus
    assert "24:onPosIfAny = 11 13" in plus and "24:onNegIfAny = 11 13" in minus
    assert "Random:seed = 7" in plus and "PartonLevel:MPI = on" in plus
    sig = pythia_settings("heavy_higgs", cfg, 1, 1)
    assert "35:m0 = 425.0" in sig and "37:m0 = 325.0" in sig and "25:onIfMatch = 5 -5" in sig
    off = pythia_settings("ttbar", pythia_config(mpi=False, settings=["Tune:pp = 14"]), 1, 1)
    assert "PartonLevel:MPI = off" in off and off[-1] == "Tune:pp = 14"
    with pytest.raises(ValueError, match="process"):
        pythia_settings("zprime", cfg, 1, 1)


def test_bad_settings_are_refused():
    with pytest.raises(ConfigError, match=r"pythia\.settings\[0\].*seed"):
        pythia_config(settings=["Random:seed = 3"])
    with pytest.raises(ConfigError, match=r"pythia\.pileup"):
        pythia_config(pileup=-1.0)
    with pytest.raises(ValueError, match="Nonsense:key"):
        make_pythia(["Nonsense:key = 3"])


def test_missing_extra_gives_one_message(monkeypatch):
    monkeypatch.setitem(sys.modules, "pythia8mc", None)
    with pytest.raises(MissingExtraError, match=r"pip install -e '\.\[pythia\]'"):
        require_pythia()


def test_ttbar_truth_record(ttbar, files):
    a = ttbar
    assert len(a) == N_TTBAR
    pdg = ak.to_numpy(a.GenPart_pdgId[:, :10])
    assert np.all(np.abs(pdg[:, [0, 1]]) == 6) and np.all(np.abs(pdg[:, [2, 4]]) == 24)
    assert np.all(np.abs(pdg[:, [3, 5]]) == 5) and np.all(np.isin(np.abs(pdg[:, 6]), (11, 13)))
    assert np.all(np.abs(pdg[:, 7]) == np.abs(pdg[:, 6]) + 1)
    assert np.all(np.abs(pdg[:, [8, 9]]) <= 5)
    mother = ak.to_numpy(a.GenPart_genPartIdxMother[:, :10])
    assert np.all(mother == [-1, -1, 0, 0, 1, 1, 2, 2, 4, 4])
    # the W (last copy) is its decay products; both lepton charges, half each
    gp = {k: ak.to_numpy(a[f"GenPart_{k}"][:, :10]) for k in ("pt", "eta", "phi", "mass")}
    p4 = kin.from_pt_eta_phi_m(gp["pt"], gp["eta"], gp["phi"], gp["mass"])
    assert np.allclose(kin.mass(p4[:, 6] + p4[:, 7]), gp["mass"][:, 2], rtol=1e-3, atol=0.05)
    assert 0.4 < np.mean(pdg[:, 6] < 0) < 0.6
    assert abs(np.median(gp["mass"][:, :2]) - 172.5) < 1.0
    # the other neutrinos (hadron decays) follow, without mother
    extra = a.GenPart_pdgId[:, 10:]
    assert ak.all(np.isin(np.abs(ak.flatten(extra)), (12, 14, 16)))
    assert ak.all(ak.flatten(a.GenPart_genPartIdxMother[:, 10:]) == -1)
    assert ak.mean(ak.num(extra)) > 0.2  # semileptonic B and D decays
    meta = json.loads(uproot.open(files[1]["background"])["hepflows_metadata"])
    # leading order: sigma(ttbar) about 510 pb x 2 x BR(W -> e/mu nu) x BR(W -> q q') = about 149 pb
    assert meta["source"] == "pythia8" and 110 < meta["pythia_cross_section_pb"] < 190
    assert uproot.open(files[1]["background"])["Runs"]["genEventCount"].array()[0] == N_TTBAR


def test_mass_peaks_are_wider_than_the_embedded_generators(ttbar):
    w_mass, w_width = _peak(_matched_mass(ttbar, (8, 9)), 40, 120)
    t_mass, t_width = _peak(_matched_mass(ttbar, (5, 8, 9)), 100, 250)
    # out-of-cone radiation and neutrinos pull the peaks a few percent below the pole masses
    assert 70 < w_mass < 82 and 150 < t_mass < 172
    cfg = load_config("quickstart")
    truth, reco = generate_batch(np.random.default_rng(3), "ttbar", 4000, cfg)
    emb = {k: reco.jets.fields[k] for k in ("pt", "eta", "phi", "mass", "genPartIdx")}
    counts = reco.jets.counts
    a = ak.Array({f"Jet_{k}": ak.unflatten(v, counts) for k, v in emb.items()})
    _, w_width_emb = _peak(_matched_mass(a, (8, 9)), 40, 120)
    _, t_width_emb = _peak(_matched_mass(a, (5, 8, 9)), 100, 250)
    # measured: W 13.5 against 10.5 GeV, top 20.5 against 18.6 GeV (half the central 68 %)
    assert w_width > 1.15 * w_width_emb and t_width > 1.05 * t_width_emb


def test_b_jet_response_is_below_the_light_jet_response(ttbar):
    a = ttbar
    idx, flav = a.Jet_genPartIdx, a.Jet_hadronFlavour
    safe = ak.where(idx >= 0, idx, 0)
    parton_pt = a.GenPart_pt[safe]
    b = (flav == 5) & ((idx == 3) | (idx == 5))
    light = (flav == 0) & ((idx == 8) | (idx == 9))
    rb = ak.to_numpy(ak.flatten(a.Jet_pt[b] / parton_pt[b]))
    rl = ak.to_numpy(ak.flatten(a.Jet_pt[light] / parton_pt[light]))
    assert len(rb) > 500 and len(rl) > 300
    assert np.median(rb) < np.median(rl) - 0.01 and np.median(rb) < 0.97
    # b jets with a soft muon have lost more (the neutrino of the semileptonic decay)
    mu = ak.to_numpy(ak.flatten(a.Jet_nMuons[b])) > 0
    assert mu.sum() > 20 and np.median(rb[mu]) < np.median(rb[~mu])


def test_btag_efficiencies_as_configured(ttbar):
    cfg = load_config("quickstart")
    bt = cfg.detector.btag
    score = ak.to_numpy(ak.flatten(ttbar.Jet_btagDeepFlavB))
    flav = ak.to_numpy(ak.flatten(ttbar.Jet_hadronFlavour))
    for f, eff in ((5, bt.efficiency_b), (4, bt.efficiency_c), (0, bt.efficiency_light)):
        sel = flav == f
        k, n = int((score[sel] > bt.working_points["medium"]).sum()), int(sel.sum())
        assert n > 200 and abs(k / n - eff) < 4 * np.sqrt(eff * (1 - eff) / n) + 1e-3, (f, k / n, eff)
    # ghost association: two b jets in most events, almost all matched to a b quark within R
    nb = ak.to_numpy(ak.sum(ttbar.Jet_hadronFlavour == 5, axis=1))
    assert np.mean(nb >= 2) > 0.5


def test_radiation_gives_more_jets(ttbar):
    cfg = load_config("quickstart")
    _, reco = generate_batch(np.random.default_rng(4), "ttbar", 4000, cfg)
    pt = ak.unflatten(reco.jets.fields["pt"], reco.jets.counts)
    n_emb = ak.to_numpy(ak.sum(pt > 30, axis=1))
    n_py = ak.to_numpy(ak.sum(ttbar.Jet_pt > 30, axis=1))
    # measured: 3.9 against 3.4 jets above 30 GeV; 12 % against 1 % of events with six or more
    assert np.mean(n_py) > np.mean(n_emb) + 0.2 and np.mean(n_py >= 6) > 4 * np.mean(n_emb >= 6)
    # particle-level jets: every reconstructed jet above 30 GeV with a close GenJet, mostly
    gj = ak.to_numpy(ak.flatten(ttbar.Jet_genJetIdx[ttbar.Jet_pt > 30]))
    assert np.mean(gj >= 0) > 0.9


def test_signal_truth_record(files):
    a = uproot.open(files[1]["signal"])["Events"].arrays()
    pdg = ak.to_numpy(a.GenPart_pdgId[:, :11])
    assert np.all(pdg[:, 0] == 35) and np.all(np.abs(pdg[:, 2]) == 37) and np.all(pdg[:, 4] == 25)
    assert np.all(pdg[:, 5] == 5) and np.all(pdg[:, 6] == -5) and np.all(np.isin(np.abs(pdg[:, 7]), (11, 13)))
    mass = ak.to_numpy(a.GenPart_mass[:, :5])
    assert abs(np.median(mass[:, 0]) - 425) < 3 and abs(np.median(mass[:, 2]) - 325) < 2
    assert abs(np.median(mass[:, 4]) - 125) < 0.5
    mother = ak.to_numpy(a.GenPart_genPartIdxMother[:, :11])
    assert np.all(np.isin(mother[:, 7], (1, 3))) and np.all(mother[:, 7] == mother[:, 8])
    assert np.all(mother[:, 9] == 4 - mother[:, 7])  # the other W decays to quarks


def test_the_skim_reads_pythia_files(files):
    from analysis.features import FEATURES
    from analysis.skim import sample_normalisation, skim_nanoaod

    cfg, paths = files
    norm = sample_normalisation(cfg, "background", [str(paths["background"])])
    cols, cutflow = skim_nanoaod(str(paths["background"]), cfg, 0, norm)
    n = len(cols["label"])
    assert 0.1 * N_TTBAR < n < 0.6 * N_TTBAR
    assert all(np.all(np.isfinite(cols[f])) for f in FEATURES)
    # the unfolding's parton level and the neutrino regression's target are found in every selected event
    assert np.all(cols["truth_ttbar"] == 1) and np.all(cols["truth_nu_pt"] > 0)


def test_same_seed_same_events_and_pileup(tmp_path):
    cfg = pythia_config()
    a, b = tmp_path / "a.root", tmp_path / "b.root"
    for p in (a, b):
        write_nanoaod_file(p, cfg, "background", 3, n_events=60)
    ea, eb = (uproot.open(p)["Events"].arrays() for p in (a, b))
    for k in ("Jet_pt", "Muon_pt", "Electron_pt", "MET_pt", "GenPart_pt"):
        assert ak.all(ak.flatten(ea[k], axis=None) == ak.flatten(eb[k], axis=None)), k
    # pile-up adds activity: more jets and worse isolation of the prompt lepton, the hard process unchanged
    pu = tmp_path / "pu.root"
    write_nanoaod_file(pu, pythia_config(pileup=30.0), "background", 3, n_events=60)
    ep = uproot.open(pu)["Events"].arrays()
    assert ak.all(ak.flatten(ep.GenPart_pt[:, :10]) == ak.flatten(ea.GenPart_pt[:, :10]))
    assert ak.sum(ep.nJet) > ak.sum(ea.nJet)
    iso = (lambda e: np.median(ak.to_numpy(ak.flatten(e.Muon_pfRelIso04_all[e.Muon_genPartIdx == 6]))))
    assert iso(ep) > iso(ea)
