"""The coffea skim: selection, features, cutflow, normalisation, and bad inputs."""

import awkward as ak
import numpy as np
import pytest
import uproot
import vector

from analysis.config import config_from_dict
from analysis.features import BTAG_FEATURES, BTAG_SCORES, FEATURES, btag_levels
from analysis.io import InputError
from analysis.ntuple import read_metadata, read_ntuples, read_objects, write_ntuple
from analysis.skim import CUTFLOW_STEPS, MAX_OBJECT_JETS, sample_normalisation, skim_nanoaod
from tests.conftest import histogram_mode, tiny_config_dict


def test_cutflow_is_monotonic_and_complete(skimmed):
    for name, (cols, cutflow) in skimmed.items():
        assert list(cutflow) == CUTFLOW_STEPS
        events = [cutflow[s]["events"] for s in CUTFLOW_STEPS]
        assert all(a >= b for a, b in zip(events, events[1:])), events
        assert events[-1] == len(cols["label"]) > 1000
        assert 0.15 < events[-1] / events[0] < 0.6  # single-lepton + 4 jets + 1 b tag acceptance


def test_selected_events_pass_the_cuts(skimmed, quickstart):
    s = quickstart.skim
    cols, _ = skimmed["background"]
    assert np.all(cols["lepton_pT"] > min(s.electron_min_pt, s.muon_min_pt))
    for i in range(1, 5):
        assert np.all(cols[f"jet{i}_pt"] > s.jet_min_pt) and np.all(np.abs(cols[f"jet{i}_eta"]) < s.jet_max_eta)
    assert np.all(cols["jet1_pt"] >= cols["jet2_pt"]) and np.all(cols["jet3_pt"] >= cols["jet4_pt"])
    levels = np.stack([cols[b] for b in BTAG_FEATURES])
    assert set(np.unique(levels)) <= {0.0, 1.0, 2.0}
    # the required b tag may sit on a fifth jet; the features describe the four leading ones
    assert np.mean((levels >= 1).sum(axis=0) >= s.min_btags) > 0.95
    # lepton-jet cleaning
    for i in range(1, 5):
        dphi = (cols["lepton_phi"] - cols[f"jet{i}_phi"] + np.pi) % (2 * np.pi) - np.pi
        dr = np.hypot(cols["lepton_eta"] - cols[f"jet{i}_eta"], dphi)
        assert np.all(dr > s.lepton_jet_min_dr - 1e-4)
    assert all(np.all(np.isfinite(cols[f])) for f in FEATURES)


def test_mass_peaks_in_the_features(skimmed):
    sig, _ = skimmed["signal"]
    bkg, _ = skimmed["background"]
    assert 110 < histogram_mode(sig["m_bb"], 0, 300) < 135
    assert 395 < histogram_mode(sig["m_wwbb"], 200, 800) < 455
    assert 160 < histogram_mode(bkg["m_jjj"], 0, 400) < 190
    assert 72 < histogram_mode(bkg["m_jj"], 0, 300) < 92
    # m_lv is pinned to m_W wherever the neutrino pz has a real solution
    assert np.mean(np.abs(bkg["m_lv"] - 80.38) < 0.05) > 0.5
    # the signal's m_bb is much narrower than the combinatorial background's
    assert np.std(sig["m_bb"][(sig["m_bb"] > 50) & (sig["m_bb"] < 200)]) < \
        np.std(bkg["m_bb"][(bkg["m_bb"] > 50) & (bkg["m_bb"] < 200)])


def test_weights_normalise_to_cross_section_times_luminosity(skimmed, quickstart):
    for name, (cols, cutflow) in skimmed.items():
        xsec_lumi = quickstart.sample(name).cross_section_pb * quickstart.luminosity_pb
        assert cutflow["all"]["sumw"] == pytest.approx(xsec_lumi, rel=1e-9)
        assert cols["weight"].sum() == pytest.approx(cutflow["finite_features"]["sumw"], rel=1e-9)
        assert np.all(cols["label"] == quickstart.sample(name).label)


def test_ntuple_roundtrip(tmp_path, skimmed):
    cols, cutflow = skimmed["signal"]
    path = tmp_path / "signal.root"
    write_ntuple(path, cols, {"sample": "signal", "cutflow": cutflow})
    back = read_ntuples([path, path])
    assert len(back["label"]) == 2 * len(cols["label"])
    np.testing.assert_array_equal(back["m_bb"][: len(cols["m_bb"])], cols["m_bb"])
    assert read_metadata(path)["cutflow"]["all"]["events"] == cutflow["all"]["events"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary files left
    # the b-tag scores are optional columns: read when asked for and present, skipped where a file lacks them
    assert BTAG_SCORES[0] not in back
    with_scores = read_ntuples([path], optional=BTAG_SCORES)
    np.testing.assert_array_equal(with_scores["jet2_btag_score"], cols["jet2_btag_score"])
    bare = tmp_path / "bare.root"
    write_ntuple(bare, {k: v for k, v in cols.items() if k not in BTAG_SCORES}, {"sample": "signal"})
    assert BTAG_SCORES[0] not in read_ntuples([path, bare], optional=BTAG_SCORES)


def test_btag_scores_are_kept_and_the_levels_follow_them(skimmed, quickstart):
    wps = [quickstart.detector.btag.working_points[w] for w in quickstart.skim.btag_feature_working_points]
    for name in ("background", "signal"):
        cols, _ = skimmed[name]
        for level, score in zip(BTAG_FEATURES, BTAG_SCORES):
            assert np.all((cols[score] > 0) & (cols[score] < 1))
            np.testing.assert_array_equal(cols[level], btag_levels(cols[score], wps))
    # b jets dominate the tagged region: the leading-score jet of signal events is mostly above the tight point
    sig, _ = skimmed["signal"]
    assert np.mean(np.max([sig[s] for s in BTAG_SCORES], axis=0) > wps[1]) > 0.6


def _rewrite(src, dst, drop=(), transform=None):
    """Copy a NanoAOD file, dropping branches and optionally transforming the arrays."""
    with uproot.open(src) as f:
        arrays = f["Events"].arrays()
    out = {}
    for coll in ("Jet", "Electron", "Muon", "GenPart"):
        fields = [k[len(coll) + 1:] for k in arrays.fields if k.startswith(coll + "_") and k not in drop]
        if fields:
            out[coll] = ak.zip({k: arrays[f"{coll}_{k}"] for k in fields})
    for k in arrays.fields:
        if "_" not in k or k.split("_")[0] not in ("Jet", "Electron", "Muon", "GenPart", "nJet"):
            if not k.startswith("n") and k not in drop:
                out[k] = arrays[k]
    if transform:
        out = transform(out)
    with uproot.recreate(dst) as f:
        f.mktree("Events", {k: (v.type if isinstance(v, ak.Array) else v.dtype) for k, v in out.items()})
        f["Events"].extend(out)
    return dst


def test_real_nanoaod_conventions(tmp_path, nanoaod_files, quickstart):
    """A file laid out like central CMS NanoAOD: unsigned counters and UChar flags, extra collections and
    trigger bits, no truth record, no Runs tree, no genWeight (collision data)."""

    def to_central(out):
        out["Jet"] = ak.zip({**{k: out["Jet"][k] for k in ("pt", "eta", "phi", "mass", "btagDeepFlavB")},
                             "jetId": ak.values_astype(out["Jet"]["jetId"], np.uint8),
                             "btagDeepFlavCvL": out["Jet"]["btagDeepFlavB"] * 0.5,
                             "puId": ak.values_astype(out["Jet"]["jetId"] + 1, np.uint8)})
        out["Electron"] = ak.zip({**{k: out["Electron"][k] for k in ("pt", "eta", "phi", "mass", "charge",
                                                                      "pfRelIso03_all")},
                                  "cutBased": ak.values_astype(out["Electron"]["cutBased"], np.uint8)})
        out["Photon"] = ak.zip({"pt": out["Jet"]["pt"][:, :1] * 0.3, "eta": out["Jet"]["eta"][:, :1]})
        out.pop("GenPart")
        for k in ("genWeight", "GenMET_pt", "GenMET_phi"):
            out.pop(k)
        n = len(out["MET_pt"])
        out["HLT_IsoMu24"] = np.ones(n, dtype=bool)
        out["PV_npvs"] = np.full(n, 32, dtype=np.int32)
        out["PuppiMET_pt"] = out["MET_pt"]
        out["PuppiMET_phi"] = out["MET_phi"]
        return out

    path = _rewrite(nanoaod_files["background"], tmp_path / "central.root", transform=to_central)
    with uproot.open(path) as f:
        assert "GenPart_pt" not in f["Events"].keys() and "Runs" not in f
        assert f["Events"]["Jet_jetId"].interpretation.content.from_dtype == np.dtype(">u1")
    norm = sample_normalisation(quickstart, "background", [path])
    cols, cutflow = skim_nanoaod(path, quickstart, 0, norm)
    assert cutflow["all"]["events"] == 40_000 and len(cols["label"]) > 5000
    assert cols["weight"][0] == pytest.approx(quickstart.sample("background").cross_section_pb
                                              * quickstart.luminosity_pb / 40_000)
    # the MET collection is configurable (Run 3 analyses use PUPPI MET)
    d = tiny_config_dict(skim={"met_collection": "PuppiMET"})
    cols2, _ = skim_nanoaod(path, config_from_dict(d), 0, norm)
    np.testing.assert_array_equal(cols2["missing_energy_magnitude"][:100], cols["missing_energy_magnitude"][:100])
    # collision data: object-level inputs, no truth targets; electrons without pdgId keep an unsigned id
    assert "obj_jet_pt" in cols and not any(k.startswith("truth_") for k in cols)
    assert set(np.unique(np.abs(cols["obj_lepton_pdgId"]))) <= {11, 13}


def test_object_level_columns_and_truth_targets(tmp_path, skimmed):
    """Beside the 28 features the skim keeps, row for row, the lepton, the MET, up to 10 selected jets (with
    soft-lepton content) and the truth targets: each jet's matched parton and the neutrino of the leptonic W.
    Physics: m(lepton, true neutrino) peaks at m_W; the MET follows the true neutrino; b jets with a soft
    lepton respond less to their b quark (its decay neutrino escaped). The Objects tree round-trips."""
    cols, _ = skimmed["background"]
    n = len(cols["label"])
    assert cols["obj_jet_pt"].shape == (n, MAX_OBJECT_JETS)
    np.testing.assert_array_equal(cols["obj_jet_pt"][:, 0], cols["jet1_pt"])
    np.testing.assert_array_equal(cols["obj_jet_pt"][:, 3], cols["jet4_pt"])
    np.testing.assert_array_equal(cols["obj_lepton_pt"], cols["lepton_pT"])
    assert np.all(cols["obj_n_jets"] >= 4)
    slots = np.arange(MAX_OBJECT_JETS)[None, :]
    assert np.all(cols["obj_jet_pt"][slots >= cols["obj_n_jets"][:, None]] == 0)
    assert np.all(cols["obj_jet_pt"][slots < np.minimum(cols["obj_n_jets"], MAX_OBJECT_JETS)[:, None]] > 0)
    lep = vector.array({"pt": cols["obj_lepton_pt"], "eta": cols["obj_lepton_eta"], "phi": cols["obj_lepton_phi"],
                        "mass": cols["obj_lepton_mass"]})
    nu = vector.array({"pt": cols["truth_nu_pt"], "eta": cols["truth_nu_eta"], "phi": cols["truth_nu_phi"],
                       "mass": np.zeros(n)})
    assert abs(np.median((lep + nu).mass) - 80.4) < 1.0
    assert np.corrcoef(cols["truth_nu_pt"], cols["obj_met_pt"])[0, 1] > 0.6
    b = (cols["truth_jet_hadronFlavour"] == 5) & (np.abs(cols["truth_jet_parton_pdgId"]) == 5)
    soft = (cols["obj_jet_nMuons"] + cols["obj_jet_nElectrons"]) > 0
    response = cols["obj_jet_pt"] / np.where(b, cols["truth_jet_parton_pt"], 1.0)
    assert response[b & soft].mean() < response[b & ~soft].mean() - 0.1
    path = tmp_path / "objects.root"
    write_ntuple(path, cols, {"sample": "background"})
    back = read_objects([path, path])
    assert set(back) == {k for k in cols if k.startswith(("obj_", "truth_"))}
    np.testing.assert_array_equal(back["obj_jet_eta"][:n], cols["obj_jet_eta"])
    assert len(back["truth_nu_pt"]) == 2 * n == 2 * len(read_ntuples([path])["label"])
    bare = tmp_path / "bare.root"
    write_ntuple(bare, {k: v for k, v in cols.items() if not k.startswith(("obj_", "truth_"))}, {})
    with pytest.raises(InputError, match="no object-level columns"):
        read_objects([bare])


def test_missing_file_and_non_root_file(tmp_path, quickstart):
    with pytest.raises(InputError, match="no such file"):
        skim_nanoaod(tmp_path / "nope.root", quickstart, 0, 1.0)
    text = tmp_path / "notes.root"
    text.write_text("this is not a ROOT file\n" * 100)
    with pytest.raises(InputError, match="not a readable ROOT file"):
        skim_nanoaod(text, quickstart, 0, 1.0)
    empty = tmp_path / "empty.root"
    empty.touch()
    with pytest.raises(InputError, match="file is empty"):
        skim_nanoaod(empty, quickstart, 0, 1.0)


def test_truncated_file(tmp_path, nanoaod_files, quickstart):
    data = nanoaod_files["signal"].read_bytes()
    cut = tmp_path / "cut.root"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match=r"cut\.root: (not a readable ROOT file|truncated ROOT file)"):
        skim_nanoaod(cut, quickstart, 1, 1.0)


def test_missing_branch(tmp_path, nanoaod_files, quickstart):
    path = _rewrite(nanoaod_files["signal"], tmp_path / "nobtag.root", drop=("Jet_btagDeepFlavB",))
    with pytest.raises(InputError, match="NanoAOD branches missing: Jet_btagDeepFlavB"):
        skim_nanoaod(path, quickstart, 1, 1.0)


def test_empty_selection_is_an_empty_result(nanoaod_files):
    cfg = config_from_dict(tiny_config_dict(skim={"jet_min_pt": 5000.0}))
    cols, cutflow = skim_nanoaod(nanoaod_files["signal"], cfg, 1, 1.0)
    assert len(cols["label"]) == 0 and cutflow["min_jets"]["events"] == 0
    assert cutflow["one_lepton"]["events"] > 0


def test_nan_inputs_refuse_the_file(tmp_path, nanoaod_files, quickstart):
    """Non-finite kinematics mean a corrupt file (real NanoAOD never has them): refused, not silently dropped.
    The finite_features step stays as a safety net for the features computed from finite inputs."""
    def poison(out):
        met = np.asarray(out["MET_pt"]).copy()
        met[::10] = np.nan
        out["MET_pt"] = met
        return out

    path = _rewrite(nanoaod_files["signal"], tmp_path / "nan.root", transform=poison)
    with pytest.raises(InputError, match=r"nan\.root: non-finite \(NaN or infinite\) values: MET_pt in 3,000 events "
                       r"\(of 30,000 events\)"):
        skim_nanoaod(path, quickstart, 1, 1.0)


def test_truth_indices_beyond_the_record_refuse_the_file(tmp_path, nanoaod_files, quickstart):
    """A jet-parton index pointing past the event's GenPart collection is a corrupt file: refused with one
    message naming the branch, not read as padding."""
    def corrupt(out):
        jet = out["Jet"]
        idx = ak.where(ak.local_index(jet.genPartIdx) == 0, 99, jet.genPartIdx)
        out["Jet"] = ak.with_field(jet, ak.values_astype(idx, np.int32), "genPartIdx")
        return out

    path = _rewrite(nanoaod_files["background"], tmp_path / "badidx.root", transform=corrupt)
    with pytest.raises(InputError, match=r"badidx\.root: skim failed .*Jet_genPartIdx points beyond the event's "
                       r"GenPart collection"):
        skim_nanoaod(path, quickstart, 0, 1.0)


@pytest.mark.parametrize("dtype,fill", [(np.float32, 0), (np.float64, 0.0), (np.int32, 0), (np.int64, -1)])
def test_padding_by_index_equals_awkwards_selection_pad_and_fill(dtype, fill):
    """The skim pads jagged collections by index (analysis.jagged): object mask, then a selection of events, then
    the leading ``width`` objects, as ``ak.fill_none(ak.pad_none(values[keep][rows], width, clip=True), fill)``
    gives it: clipped rows, the fill value, empty rows, events in any order, the unclipped counts."""
    from analysis import jagged

    rng = np.random.default_rng(3)
    counts = rng.integers(0, 14, 500)
    counts[:3] = 0
    values = ak.unflatten(rng.normal(50, 30, counts.sum()).astype(np.float32) if dtype in (np.float32, np.float64)
                          else rng.integers(-6, 30, counts.sum()).astype(np.int32), counts)
    keep = ak.unflatten(rng.uniform(size=counts.sum()) < 0.7, counts)
    for mask, rows in ((None, np.arange(500)), (None, rng.permutation(500)[:50]),
                       (keep, np.flatnonzero(rng.uniform(size=500) < 0.5)), (keep, rng.permutation(500)[:100])):
        selected = (values if mask is None else values[mask])[rows]
        ref = ak.to_numpy(ak.fill_none(ak.pad_none(selected, MAX_OBJECT_JETS, clip=True), fill)).astype(dtype)
        index, n_kept = jagged.slot_index(jagged.counts(values), rows, MAX_OBJECT_JETS,
                                          None if mask is None else jagged.flat(mask))
        ours = jagged.gather(jagged.flat(values), index, dtype=dtype, fill=fill)
        assert ours.dtype == ref.dtype and np.array_equal(ours, ref)
        assert np.array_equal(n_kept, ak.to_numpy(ak.num(selected)))
    with pytest.raises(ValueError, match="keep has 3 entries"):
        jagged.slot_index(counts, np.arange(5), 4, np.ones(3, bool))
    with pytest.raises(ValueError, match="distinct"):
        jagged.slot_index(counts, np.array([4, 4]), 4)
    with pytest.raises(IndexError):
        jagged.gather(np.arange(5.0), np.array([7, -1]))
    assert np.array_equal(jagged.gather(np.zeros(0), np.full((2, 3), -1), fill=-1), np.full((2, 3), -1))


def _random_leptons(rng, n, pdg, with_id=True):
    counts = rng.integers(0, 3, n)
    total = int(counts.sum())
    fields = {"pt": rng.exponential(40, total).astype(np.float32), "eta": rng.uniform(-2.6, 2.6, total).astype(
        np.float32), "phi": rng.uniform(-np.pi, np.pi, total).astype(np.float32),
              "mass": np.full(total, 0.105, np.float32)}
    if with_id:
        fields["pdgId"] = (pdg * rng.choice([-1, 1], total)).astype(np.int32)
    return ak.unflatten(ak.zip(fields), counts), ak.unflatten(rng.uniform(size=total) < 0.6, counts)


@pytest.mark.parametrize("n_leptons", [1, 2])
def test_flat_lepton_selection_and_cleaning_equal_awkwards(n_leptons):
    """The skim's selection on flat branches gives what awkward's did: the selected leptons of events with exactly
    ``n_leptons`` of them in the order of ``ak.concatenate([electrons, muons])`` (a file without ``Muon_pdgId``
    gets 13), and jets cleaned against them with coffea's Delta R from ``metric_table``, to the last bit."""
    from coffea.nanoevents.methods import vector as cvector

    from analysis import jagged
    from analysis.skim import _clean_of_leptons, _lepton_table

    rng = np.random.default_rng(8)
    n = 3000
    ele, ele_ok = _random_leptons(rng, n, 11)
    mu, mu_ok = _random_leptons(rng, n, 13, with_id=False)
    n_lep = jagged.per_event(jagged.counts(ele.pt), jagged.flat(ele_ok)) + jagged.per_event(
        jagged.counts(mu.pt), jagged.flat(mu_ok))
    assert np.array_equal(n_lep, ak.to_numpy(ak.num(ele[ele_ok]) + ak.num(mu[mu_ok])))
    rows = np.flatnonzero(n_lep == n_leptons)
    ele_slots, _ = jagged.slot_index(jagged.counts(ele.pt), rows, n_leptons, jagged.flat(ele_ok))
    mu_slots, _ = jagged.slot_index(jagged.counts(mu.pt), rows, n_leptons, jagged.flat(mu_ok))
    table = _lepton_table(ele, mu, ele_slots, mu_slots)
    mu_with_id = ak.with_field(mu, ak.values_astype(ak.ones_like(mu.pt) * 13, np.int32), "pdgId")
    reference = ak.concatenate([ele[ele_ok], mu_with_id[mu_ok]], axis=1)[rows]
    for f in ("pt", "eta", "phi", "mass", "pdgId"):
        ref = ak.to_numpy(reference[f]).reshape(len(rows), n_leptons)
        assert table[f].dtype == ref.dtype and np.array_equal(table[f], ref), f

    counts = rng.integers(0, 9, n)
    total = int(counts.sum())
    jets = ak.zip({"pt": rng.exponential(50, total).astype(np.float32),
                   "eta": rng.uniform(-2.5, 2.5, total).astype(np.float32),
                   "phi": rng.uniform(-np.pi, np.pi, total).astype(np.float32),
                   "mass": rng.uniform(0, 20, total).astype(np.float32)})
    jets = ak.unflatten(jets, counts)
    clean = _clean_of_leptons({f: jagged.flat(jets[f]) for f in ("pt", "eta", "phi", "mass")}, counts, rows,
                              table, 1.0, cvector.behavior)
    as_vectors = {"with_name": "PtEtaPhiMLorentzVector", "behavior": cvector.behavior}
    j = ak.zip({f: jets[f] for f in ("pt", "eta", "phi", "mass")}, **as_vectors)[rows]
    leptons = ak.zip({f: reference[f] for f in ("pt", "eta", "phi", "mass")}, **as_vectors)
    expected = ak.to_numpy(ak.flatten(ak.all(j.metric_table(leptons) > 1.0, axis=-1)))
    owned = np.repeat(np.isin(np.arange(n), rows), counts)
    assert np.array_equal(clean[owned], expected) and clean[~owned].all()
    assert 0.05 < 1 - expected.mean() < 0.5  # the cleaning removed some jets, not all
