"""Physics of the embedded generator and detector simulation."""

import awkward as ak
import numpy as np
import pytest
import uproot

from analysis.generator import kinematics as kin
from analysis.generator.nanoaod import generate_batch, to_nanoaod, write_nanoaod_file
from tests.conftest import half_iqr


def _jet_p4(jets, mask):
    sel = jets[mask]
    return ak.zip({"pt": sel.pt, "eta": sel.eta, "phi": sel.phi, "mass": sel.mass})


def _matched(events, gen_index):
    """Per event, the jet matched to GenPart ``gen_index`` (None when no jet or several jets match)."""
    jets = events["Jet"]
    m = jets.genPartIdx == gen_index
    one = ak.sum(m, axis=1) == 1
    return jets[m], one


def _sum_mass(*cols):
    px = sum(np.asarray(ak.flatten(c.pt * np.cos(c.phi))) for c in cols)
    py = sum(np.asarray(ak.flatten(c.pt * np.sin(c.phi))) for c in cols)
    pz = sum(np.asarray(ak.flatten(c.pt * np.sinh(c.eta))) for c in cols)
    e = sum(np.asarray(ak.flatten(np.sqrt((c.pt * np.cosh(c.eta)) ** 2 + c.mass**2))) for c in cols)
    return np.sqrt(np.maximum(e**2 - px**2 - py**2 - pz**2, 0))


def test_truth_top_and_w_line_shapes(ttbar_batch, quickstart):
    truth, _ = ttbar_batch
    phys = quickstart.physics
    for col in (0, 1):
        m = kin.mass(truth.p4[:, col])
        assert abs(np.median(m) - phys.top.mass) < 0.05
        assert half_iqr(m) == pytest.approx(phys.top.width / 2, rel=0.1)
    mw = kin.mass(truth.p4[:, 2])
    assert abs(np.median(mw) - phys.w.mass) < 0.1
    assert half_iqr(mw) == pytest.approx(phys.w.width / 2, rel=0.1)


def test_truth_momentum_conservation(ttbar_batch):
    truth, _ = ttbar_batch
    p = truth.p4
    np.testing.assert_allclose(p[:, 0], p[:, 2] + p[:, 3], atol=1e-6 * np.abs(p).max())  # t -> W b
    np.testing.assert_allclose(p[:, 2], p[:, 6] + p[:, 7], atol=1e-6 * np.abs(p).max())  # W -> l nu
    np.testing.assert_allclose(p[:, 4], p[:, 8] + p[:, 9], atol=1e-6 * np.abs(p).max())  # W -> q q'
    # ttbar recoils against ISR: transverse balance up to the intrinsic kT (3 GeV per component)
    total = p[:, 0, 1:3] + p[:, 1, 1:3] + (p[:, truth.isr, 1:3] * truth.valid[:, truth.isr, None]).sum(axis=1)
    assert np.std(total) == pytest.approx(3.0, rel=0.1)


def test_ttbar_mass_spectrum_falls_above_threshold(ttbar_batch):
    truth, _ = ttbar_batch
    mtt = kin.mass(truth.p4[:, 0] + truth.p4[:, 1])
    assert mtt.min() > 2 * 150.0
    counts, edges = np.histogram(mtt, bins=40, range=(340, 1140))
    peak = np.argmax(counts)
    assert edges[peak] < 500  # peaks close to threshold ...
    assert counts[-1] < 0.05 * counts[peak]  # ... and falls


def test_truth_signal_resonances(signal_batch, quickstart):
    truth, _ = signal_batch
    phys = quickstart.physics
    assert abs(np.median(kin.mass(truth.p4[:, 0])) - phys.heavy_higgs.mass) < 0.5
    assert abs(np.median(kin.mass(truth.p4[:, 2])) - phys.charged_higgs.mass) < 0.3
    assert abs(np.median(kin.mass(truth.p4[:, 4])) - phys.higgs.mass) < 0.01
    np.testing.assert_allclose(kin.mass(truth.p4[:, 5] + truth.p4[:, 6]), kin.mass(truth.p4[:, 4]), rtol=1e-6)


def test_exactly_one_charged_lepton(ttbar_batch, signal_batch):
    for truth, _ in (ttbar_batch, signal_batch):
        lep = np.abs(truth.pdg_id[:, truth.lepton])
        nu = np.abs(truth.pdg_id[:, truth.neutrino])
        assert set(np.unique(lep)) == {11, 13}
        np.testing.assert_array_equal(nu, lep + 1)
        assert 0.48 < np.mean(lep == 11) < 0.52


def test_reconstructed_w_and_top_peaks(ttbar_batch):
    truth, reco = ttbar_batch
    ev = to_nanoaod(truth, reco, 1, 1)
    q1, ok1 = _matched(ev, 8)
    q2, ok2 = _matched(ev, 9)
    b, ok3 = _matched(ev, 5)
    ok = ok1 & ok2 & ok3
    mw = _sum_mass(q1[ok], q2[ok])
    mt = _sum_mass(q1[ok], q2[ok], b[ok])
    assert ak.sum(ok) > 20_000
    assert 77.0 < np.median(mw) < 88.0 and 4.0 < half_iqr(mw) < 12.0
    assert 165.0 < np.median(mt) < 182.0 and 7.0 < half_iqr(mt) < 20.0


def test_btag_efficiencies_as_configured(ttbar_batch, quickstart):
    _, reco = ttbar_batch
    f = reco.jets.fields
    bt = quickstart.detector.btag
    wp = bt.working_points["medium"]
    for flav, eff in ((5, bt.efficiency_b), (4, bt.efficiency_c), (0, bt.efficiency_light)):
        score = f["btagDeepFlavB"][f["hadronFlavour"] == flav]
        n = len(score)
        assert n > 5000
        measured = np.mean(score > wp)
        assert abs(measured - eff) < 4 * np.sqrt(eff * (1 - eff) / n) + 1e-3, (flav, measured, eff)
    # tighter working points keep fewer jets of every flavour
    assert np.mean(f["btagDeepFlavB"][f["hadronFlavour"] == 5] > bt.working_points["tight"]) < bt.efficiency_b


def test_b_jet_response_below_one(ttbar_batch):
    truth, reco = ttbar_batch
    ev = to_nanoaod(truth, reco, 1, 1)
    jets, gen = ev["Jet"], ev["GenPart"]

    def response(mask):
        j = jets[mask & (jets.genPartIdx >= 0)]
        return np.asarray(ak.flatten(j.pt / gen.pt[j.genPartIdx]))

    r_b = response(jets.hadronFlavour == 5)
    r_light = response((jets.hadronFlavour == 0) & (jets.genPartIdx < 10))
    assert np.mean(r_b) < 1.0
    assert np.median(r_b) < np.median(r_light) - 0.01  # neutrinos from semileptonic decays leave b jets


def test_soft_leptons_in_b_jets_mark_the_missing_neutrino(ttbar_batch, quickstart):
    """The jets record the non-prompt leptons of semileptonic b decays as NanoAOD does (``nMuons``,
    ``nElectrons``, energy fractions ``muEF`` and ``chEmEF``): only b jets carry them, in about the configured
    fraction of b jets, with fractions in [0, 1] that are non-zero exactly where a lepton is counted; and b jets
    with a soft lepton have lost its neutrino: their response to the b quark is lower by more than 0.1."""
    truth, reco = ttbar_batch
    ev = to_nanoaod(truth, reco, 1, 1)
    jets, gen = ev["Jet"], ev["GenPart"]
    n_mu, n_el = ak.flatten(jets.nMuons), ak.flatten(jets.nElectrons)
    mu_ef, em_ef = np.asarray(ak.flatten(jets.muEF)), np.asarray(ak.flatten(jets.chEmEF))
    assert np.all((mu_ef >= 0) & (mu_ef <= 1) & (em_ef >= 0) & (em_ef <= 1))
    np.testing.assert_array_equal(mu_ef > 0, np.asarray(n_mu) > 0)
    np.testing.assert_array_equal(em_ef > 0, np.asarray(n_el) > 0)
    soft = (jets.nMuons + jets.nElectrons) > 0
    flavour = jets.hadronFlavour
    assert not ak.any(soft & (flavour != 5))
    share = ak.sum(soft & (flavour == 5)) / ak.sum(flavour == 5)
    assert abs(share - quickstart.detector.b_semileptonic_fraction) < 0.04, share
    assert abs(float(ak.mean(jets.muEF[jets.nMuons > 0])) - float(ak.mean(jets.chEmEF[jets.nElectrons > 0]))) < 0.03

    def response(mask):
        j = jets[mask & (flavour == 5) & (jets.genPartIdx >= 0)]
        return float(np.mean(np.asarray(ak.flatten(j.pt / gen.pt[j.genPartIdx]))))

    assert response(soft) < response(~soft) - 0.1


def test_met_resolution(ttbar_batch):
    _, reco = ttbar_batch
    dx = reco.met_pt * np.cos(reco.met_phi) - reco.genmet_pt * np.cos(reco.genmet_phi)
    dy = reco.met_pt * np.sin(reco.met_phi) - reco.genmet_pt * np.sin(reco.genmet_phi)
    for d in (dx, dy):
        assert 12.0 < np.std(d) < 40.0
        assert abs(np.mean(d)) < 1.5
    # MET follows the neutrino: strongly correlated with the true MET
    assert np.corrcoef(reco.met_pt, reco.genmet_pt)[0, 1] > 0.7


def test_lepton_isolation_separates_prompt_from_b_decays(ttbar_batch):
    _, reco = ttbar_batch
    mu = reco.muons.fields
    prompt = mu["genPartIdx"] >= 0
    assert np.median(mu["pfRelIso04_all"][prompt]) < 0.05
    assert np.median(mu["pfRelIso04_all"][~prompt]) > 0.5
    assert np.mean(mu["tightId"][prompt]) == pytest.approx(0.95, abs=0.01)


def test_jets_ordered_and_in_acceptance(ttbar_batch, quickstart):
    truth, reco = ttbar_batch
    jets = to_nanoaod(truth, reco, 1, 1)["Jet"]
    assert ak.all(jets.pt[:, 1:] <= jets.pt[:, :-1])
    assert ak.all(jets.pt > quickstart.detector.jet.min_pt)
    assert ak.all(abs(jets.eta) < quickstart.detector.jet.max_eta)


def test_seed_reproducibility(quickstart):
    a = generate_batch(np.random.default_rng(5), "ttbar", 2000, quickstart)[1]
    b = generate_batch(np.random.default_rng(5), "ttbar", 2000, quickstart)[1]
    c = generate_batch(np.random.default_rng(6), "ttbar", 2000, quickstart)[1]
    np.testing.assert_array_equal(a.jets.fields["pt"], b.jets.fields["pt"])
    np.testing.assert_array_equal(a.met_pt, b.met_pt)
    assert not np.array_equal(a.met_pt, c.met_pt)


def test_nanoaod_file_layout(tmp_path, tiny_cfg):
    path = tmp_path / "bkg.root"
    meta = write_nanoaod_file(path, tiny_cfg, "background", 0, n_events=3000, batch_size=1000)
    with uproot.open(path) as f:
        ev = f["Events"]
        assert ev.num_entries == 3000
        for b in ("nJet", "Jet_pt", "Jet_eta", "Jet_phi", "Jet_mass", "Jet_btagDeepFlavB", "Jet_hadronFlavour",
                  "nElectron", "Electron_pt", "Electron_cutBased", "nMuon", "Muon_pt", "Muon_tightId",
                  "MET_pt", "MET_phi", "genWeight", "nGenPart", "GenPart_pdgId", "GenPart_genPartIdxMother"):
            assert b in ev.keys(), b
        assert f["Runs"]["genEventSumw"].array(library="np").sum() == 3000
        a = ev.arrays(["event", "GenPart_pdgId", "GenPart_genPartIdxMother"])
        assert len(np.unique(a.event)) == 3000
        # the W on the lepton side comes from the top on the lepton side
        assert ak.all(abs(a.GenPart_pdgId[:, 2]) == 24) and ak.all(a.GenPart_genPartIdxMother[:, 2] == 0)
    assert meta["n_events"] == 3000 and meta["process"] == "ttbar"
    # the same file index gives the same events
    write_nanoaod_file(tmp_path / "again.root", tiny_cfg, "background", 0, n_events=3000, batch_size=1000)
    with uproot.open(path) as f1, uproot.open(tmp_path / "again.root") as f2:
        np.testing.assert_array_equal(f1["Events"]["MET_pt"].array(library="np"),
                                      f2["Events"]["MET_pt"].array(library="np"))


def test_interrupted_generation_leaves_no_file(tmp_path, tiny_cfg):
    path = tmp_path / "killed.root"

    def interrupt(done, total):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_nanoaod_file(path, tiny_cfg, "background", 0, n_events=3000, batch_size=1000, progress=interrupt)
    assert list(tmp_path.iterdir()) == []
