"""Real-NanoAOD inputs: truncated files, non-finite kinematics, implausible content, RNTuple files.

Every bad input ends in one :class:`InputError` naming the file; implausible but readable content gives one
warning per file on the ``hepflows`` logger, also returned to the caller and kept in the skim summary.
"""

import json
import logging
import re

import awkward as ak
import law
import numpy as np
import pytest
import uproot

from analysis.features import FEATURES
from analysis.io import InputError
from analysis.ntuple import write_ntuple
from analysis.readers import check_nanoaod, sum_gen_weights
from analysis.skim import sample_normalisation, skim_nanoaod

N_EVENTS = 5000
COLLECTIONS = ("Jet", "Electron", "Muon", "GenPart")


@pytest.fixture(scope="module")
def ttree_file(tmp_path_factory, quickstart):
    """A generated 5k-event ttbar NanoAOD file (TTree ``Events`` and ``Runs``)."""
    from analysis.generator.nanoaod import write_nanoaod_file

    path = tmp_path_factory.mktemp("inputs") / "background_0.root"
    write_nanoaod_file(path, quickstart, "background", 0, n_events=N_EVENTS)
    return path


def read_file(path):
    """``(events, runs)``: the flat NanoAOD fields of a file as ``{name: array}``."""
    with uproot.open(path) as f:
        events, runs = f["Events"].arrays(), f["Runs"].arrays(library="np")
    return {k: events[k] for k in events.fields}, runs


def write_file(path, events: dict, runs: dict | None, rntuple: bool):
    """Write flat NanoAOD fields as an RNTuple (fields as given, counters included) or as a TTree (each collection
    zipped, so that uproot writes the ``nJet`` counter and ``Jet_*`` branches as NanoAOD does)."""
    with uproot.recreate(path) as f:
        if rntuple:
            f.mkrntuple("Events", ak.Array(events))
            if runs is not None:
                f.mkrntuple("Runs", ak.Array(runs))
            return path
        out = {}
        for coll in COLLECTIONS:
            fields = {k[len(coll) + 1:]: v for k, v in events.items() if k.startswith(coll + "_")}
            if fields:
                out[coll] = ak.zip(fields)
        counters = {f"n{c}" for c in COLLECTIONS}
        out |= {k: v for k, v in events.items() if k not in counters and k.split("_")[0] not in COLLECTIONS}
        f.mktree("Events", {k: v.type if isinstance(v, ak.Array) else v.dtype for k, v in out.items()})
        f["Events"].extend(out)
        if runs is not None:
            f.mktree("Runs", {k: v.dtype for k, v in runs.items()})
            f["Runs"].extend(runs)
    return path


def poisoned(values, index: list[int], value=np.nan):
    """``values`` (flat or jagged) with the flat entries ``index`` set to ``value``."""
    if values.ndim == 1:
        flat = ak.to_numpy(values).copy()
        flat[index] = value
        return flat
    flat = ak.to_numpy(ak.flatten(values)).copy()
    flat[index] = value
    return ak.unflatten(flat, ak.num(values))


def event_of(values, index: list[int]) -> np.ndarray:
    """The event of each flat entry ``index`` of ``values``."""
    if values.ndim == 1:
        return np.asarray(index)
    return np.repeat(np.arange(len(values)), ak.to_numpy(ak.num(values)))[index]


@pytest.fixture(scope="module")
def rntuple_file(ttree_file, tmp_path_factory):
    events, runs = read_file(ttree_file)
    return write_file(tmp_path_factory.mktemp("rntuple") / "background_0.root", events, runs, rntuple=True)


def test_rntuple_gives_the_same_skim_as_ttree(ttree_file, rntuple_file, quickstart, caplog):
    with uproot.open(rntuple_file) as f:
        assert f.classnames()["Events;1"] == "ROOT::RNTuple" and f.classnames()["Runs;1"] == "ROOT::RNTuple"
    assert check_nanoaod(rntuple_file) == check_nanoaod(ttree_file) == N_EVENTS
    assert sum_gen_weights([rntuple_file]) == sum_gen_weights([ttree_file]) == N_EVENTS
    norm = sample_normalisation(quickstart, "background", [rntuple_file])
    assert norm == sample_normalisation(quickstart, "background", [ttree_file])
    issues = []
    with caplog.at_level(logging.WARNING, logger="hepflows"):
        # several chunks, so that the RNTuple is read in entry ranges as a large file would be
        tree_cols, tree_cf = skim_nanoaod(ttree_file, quickstart, 0, norm, chunksize=1500, issues=issues)
        rn_cols, rn_cf = skim_nanoaod(rntuple_file, quickstart, 0, norm, chunksize=1500, issues=issues)
    assert issues == [] and not caplog.records  # a healthy file gives no warning
    assert rn_cf == tree_cf and tree_cf["finite_features"]["events"] > 1000
    assert set(FEATURES) | {"weight", "label", "event"} <= set(tree_cols) and set(rn_cols) == set(tree_cols)
    for k in tree_cols:
        np.testing.assert_array_equal(rn_cols[k], tree_cols[k], err_msg=k)


@pytest.mark.parametrize("rntuple", [False, True], ids=["ttree", "rntuple"])
def test_truncated_file_is_named(tmp_path, ttree_file, rntuple_file, quickstart, rntuple):
    good = rntuple_file if rntuple else ttree_file
    data = good.read_bytes()
    bad = tmp_path / "cut.root"
    bad.write_bytes(data[: int(0.6 * len(data))])
    message = (rf"^{re.escape(str(bad))}: truncated ROOT file: {len(data) * 6 // 10} of the {len(data)} bytes its "
               "header declares")
    with pytest.raises(InputError, match=message):
        check_nanoaod(bad)
    with pytest.raises(InputError, match=message):
        skim_nanoaod(bad, quickstart, 0, 1.0)
    # the normalisation reads every file of the sample: the error names the bad one, not the good one
    with pytest.raises(InputError, match=message):
        sum_gen_weights([good, bad])
    with pytest.raises(InputError, match=message + r".*\(sample 'background' is normalised with the generator "
                       r"weights of all its 2 files\)$"):
        sample_normalisation(quickstart, "background", [good, bad])
    assert sum_gen_weights([good]) == N_EVENTS


@pytest.mark.parametrize("branch, rntuple", [("Jet_pt", False), ("Jet_eta", True), ("Muon_phi", False),
                                             ("Electron_mass", True), ("MET_pt", False), ("genWeight", True)])
def test_non_finite_kinematics_refuse_the_file(tmp_path, ttree_file, quickstart, branch, rntuple):
    events, runs = read_file(ttree_file)
    n_obj = int(ak.count(events[branch]))
    nan_at, inf_at = [3, 4, 500, n_obj - 1], [700]
    n_ev = len(np.unique(event_of(events[branch], nan_at + inf_at)))
    events[branch] = poisoned(poisoned(events[branch], nan_at), inf_at, np.inf)
    path = write_file(tmp_path / "nan.root", events, runs, rntuple)
    word = {"Jet": "jets", "Muon": "muons", "Electron": "electrons"}.get(branch.split("_")[0])
    counts = f"{branch} in 5 of {n_obj:,} {word}, {n_ev} events" if word else f"{branch} in 5 events"
    with pytest.raises(InputError, match=rf"^{re.escape(str(path))}: non-finite \(NaN or infinite\) values: {counts} "
                       rf"\(of {N_EVENTS:,} events\); real NanoAOD has finite kinematics and weights, the file is "
                       "corrupt$"):
        skim_nanoaod(path, quickstart, 0, 1.0)


def test_implausible_content_warns_once_per_file(tmp_path, ttree_file, quickstart, caplog):
    """b-tag discriminant -3000 in every jet (seen in a real CMS file), identification flags all false or zero:
    the file is read, each problem is logged once with the file, branch and numbers, and returned to the caller."""
    events, runs = read_file(ttree_file)
    events["Jet_btagDeepFlavB"] = ak.full_like(events["Jet_btagDeepFlavB"], -3000.0)
    events["Muon_tightId"] = ak.zeros_like(events["Muon_tightId"])
    events["Electron_cutBased"] = ak.zeros_like(events["Electron_cutBased"])
    events["Jet_jetId"] = ak.zeros_like(events["Jet_jetId"])
    path = write_file(tmp_path / "odd.root", events, runs, rntuple=False)
    issues = []
    with caplog.at_level(logging.WARNING, logger="hepflows"):
        cols, cutflow = skim_nanoaod(path, quickstart, 0, 1.0, issues=issues)
    assert cutflow["all"]["events"] == N_EVENTS and cutflow["one_lepton"]["events"] == 0 == len(cols["label"])
    assert [r.getMessage() for r in caplog.records if r.name == "hepflows"] == issues and len(issues) == 4
    s = quickstart.skim
    btag, electron, muon, jet = issues
    assert btag.startswith(f"{path}: Jet_btagDeepFlavB lies outside [0, 1] for ")
    n = int(btag.split(" for ")[1].split(" of ")[0].replace(",", ""))
    assert 10_000 < n < int(ak.count(events["Jet_pt"])) and f"jets with pT > {s.jet_min_pt:g} GeV" in btag
    assert f"(100.0%: {n:,} below 0, 0 above 1, 0 not finite)" in btag
    assert muon.startswith(f"{path}: Muon_tightId is false for all ") and "muons with pT > " in muon
    assert muon.endswith("no muon passes the identification")
    assert electron.startswith(f"{path}: Electron_cutBased is below {s.electron_min_cut_based} for all ")
    assert jet == (f"{path}: Jet_jetId is below {s.jet_min_id} for all {n:,} jets with pT > {s.jet_min_pt:g} GeV and "
                   f"|eta| < {s.jet_max_eta:g}: no jet passes the identification")


def test_default_btag_values_of_a_few_jets_are_no_warning(tmp_path, ttree_file, quickstart, caplog):
    """Real NanoAOD sets the discriminant to -1 for a few jets: below 1 % of the jets in the acceptance, no
    warning; above, one."""
    events, runs = read_file(ttree_file)
    btag = events["Jet_btagDeepFlavB"]
    few = np.arange(0, int(ak.count(btag)), 400)  # 0.25 % of all jets
    quiet = write_file(tmp_path / "few.root", {**events, "Jet_btagDeepFlavB": poisoned(btag, few, -1.0)}, runs,
                       rntuple=True)
    many_at = np.arange(0, int(ak.count(btag)), 20)  # 5 %
    many = write_file(tmp_path / "many.root", {**events, "Jet_btagDeepFlavB": poisoned(btag, many_at, -1.0)}, runs,
                      rntuple=True)
    issues = []
    with caplog.at_level(logging.WARNING, logger="hepflows"):
        skim_nanoaod(quiet, quickstart, 0, 1.0, issues=issues)
        assert issues == []
        skim_nanoaod(many, quickstart, 0, 1.0, issues=issues)
    assert len(issues) == 1 and issues[0].startswith(f"{many}: Jet_btagDeepFlavB lies outside [0, 1]")
    assert "below 0, 0 above 1, 0 not finite" in issues[0]


def test_nested_rntuple_layout_is_explained(tmp_path, ttree_file):
    events, _ = read_file(ttree_file)
    nested = {"Jet": ak.zip({"pt": events["Jet_pt"], "eta": events["Jet_eta"]}), "MET_pt": events["MET_pt"]}
    path = tmp_path / "nested.root"
    with uproot.recreate(path) as f:
        f.mkrntuple("Events", ak.Array(nested))
    with pytest.raises(InputError, match=rf"^{re.escape(str(path))}: NanoAOD RNTuple fields missing: nJet, Jet_pt, "
                       r".* \(the RNTuple stores collections as nested fields, e.g. Jet.pt; the skim reads the flat "
                       "NanoAOD layout"):
        check_nanoaod(path)


def test_summary_warns_on_a_non_positive_yield(tmp_path, ttree_file, quickstart, monkeypatch, caplog):
    """A sample whose selected events weigh zero or less in total: one warning, kept in summary.json with the
    skim's per-file warnings, and the feature plot draws the sample unweighted and says so."""
    import workflow.skim as ws

    cols, cutflow = skim_nanoaod(ttree_file, quickstart, 0, 1.0)
    n = len(cols["label"])
    targets = {}
    for sample, weights, label in (("background", -np.abs(cols["weight"]), 0), ("signal", cols["weight"], 1)):
        ntuple, cf = tmp_path / f"{sample}_0.root", tmp_path / f"cutflow_{sample}_0.json"
        write_ntuple(ntuple, {**cols, "weight": weights, "label": np.full(n, label)}, {"sample": sample, "label": label})
        file_warnings = [f"{ntuple}: an earlier warning"] if sample == "signal" else []
        cf.write_text(json.dumps({"sample": sample, "index": 0, "cutflow": cutflow, "warnings": file_warnings}))
        targets[sample] = [{"ntuple": law.LocalFileTarget(str(ntuple)), "cutflow": law.LocalFileTarget(str(cf))}]

    class FakeSkim:
        def outputs_by_sample(self):
            return targets

    plotted = {}
    real_plot = ws.plot_features

    def plot_features(samples, path, units, title):
        plotted.update(samples=samples, title=title)
        return real_plot(samples, path, units=units, title=title)

    monkeypatch.setenv("HEPFLOWS_STORE", str(tmp_path / "store"))
    monkeypatch.setattr(ws.SkimSummary, "requires", lambda self: FakeSkim())
    monkeypatch.setattr(ws, "plot_features", plot_features)
    task = ws.SkimSummary(version="negative", config="quickstart")
    with caplog.at_level(logging.WARNING, logger="hepflows"):
        task.run()
    logged = [r.getMessage() for r in caplog.records if r.name == "hepflows"]
    total = -np.abs(cols["weight"]).sum()
    assert logged == [f"sample 'background': the {n:,} selected events have a total weight of {total:.6g} ({n:,} "
                      "with negative weight): the expected yield is not positive; the feature plot shows this "
                      "sample unweighted"]
    summary = json.loads((tmp_path / task.output()["summary.json"].path).read_text())
    assert summary["samples"]["background"]["warnings"] == logged
    assert summary["samples"]["signal"]["warnings"] == [f"{tmp_path}/signal_0.root: an earlier warning"]
    assert summary["warnings"] == logged + summary["samples"]["signal"]["warnings"]
    assert plotted["title"] == "quickstart: skimmed features (background unweighted: total weight not positive)"
    (label_b, (_, w_b)), (label_s, (_, w_s)) = plotted["samples"].items()
    assert label_b == f"background ({n} events, unweighted: total weight {total:.4g})" and np.all(w_b == 1)
    assert label_s == f"signal ({n} events)" and np.array_equal(w_s, cols["weight"])
    assert task.output()["features.png"].exists()
