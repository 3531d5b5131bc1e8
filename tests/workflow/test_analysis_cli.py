"""The end-to-end RunAnalysis chain through the real ``law`` command line on a tiny configuration: classifiers,
templates, pyhf workspaces, limit scans, the report, and rerun semantics."""

from __future__ import annotations

import json
import os
import re

import numpy as np
import pyhf
import pytest
import yaml

from analysis import bjet, neutrino
from analysis.objects import GROUPS
from analysis.statistics import expected_limits, fit_signal_strength, pyhf_expected_limits
from tests.conftest import tiny_config_dict
from tests.workflow.test_law_cli import env, law, store  # noqa: F401  (fixture and helpers)

pytestmark = pytest.mark.slow
RUN = ("--version", "v1")


@pytest.fixture(scope="module")
def analysis_config(env, tmp_path_factory):  # noqa: F811
    d = tiny_config_dict(bkg_events=24_000, sig_events=6000)
    d["name"] = "tinyana"
    d["flows"] = {"models": ["realnvp"], "default": "realnvp", "seeds": [1], "analysis_seeds": [1, 2],
                  "replicas": {"n": 3, "n_events": 20_000},
                  "hyperparameters": {"realnvp": {"transforms": 4, "hidden_features": [64, 64]}},
                  "training": {"epochs": 4, "patience": 4, "batch_size": 256},
                  "generation": {"events_per_chunk": 15_000, "batch_size": 5000, "evaluation_events": 3000}}
    d["classifiers"] = {"models": ["bdt", "nn", "transformer"], "bdt": {"max_iter": 60},
                        "nn": {"hidden_features": [64, 64], "epochs": 10, "batch_size": 128},
                        "transformer": {"dim": 16, "heads": 2, "layers": 1, "epochs": 3, "batch_size": 256}}
    d["limits"] = {"n_bins": 10, "min_count": 10, "background_systematics": [0.0, 0.1],
                   "generated_sizes": {"min": 2000, "max": 20_000, "points": 4}, "luminosities_fb": [30.0, 300.0],
                   "closure_splits": 8, "spurious_bootstraps": 5, "spurious_splits": 3}
    d["truth"] = {"factor": 4}
    d["fidelity"] = {"train_sizes": [1000, 2000, 4000], "test_size": 2000, "group_size": 2000}
    d["regression"] = {"applications": ["neutrino", "bjet"], "train_factor": 1, "samples": 32,
                       "evaluation_events": 2000, "hyperparameters": {"components": 3, "hidden_features": [32, 32]},
                       "embedding_features": 8, "embedding_hidden": [16], "dnn_hidden": [32],
                       "training": {"epochs": 4, "patience": 4, "batch_size": 256}, "feed": True, "feed_draws": 16}
    path = tmp_path_factory.mktemp("anacfg") / "tinyana.yaml"
    path.write_text(yaml.safe_dump(d))
    return str(path)


@pytest.fixture(scope="module")
def ran(env, analysis_config):  # noqa: F811
    return law(env, "RunAnalysis", *RUN, "--config", analysis_config, "--workers", "2", timeout=2400)


def test_report_and_every_stage(env, analysis_config, ran):  # noqa: F811
    report = store(env, "RunAnalysis", "tinyana", "v1", "report", "report.html")
    assert f"hepflows report: {report}" in ran.stdout  # the run ends by printing the report's path
    text = report.read_text()
    for heading in ("Can generated background replace", "The independent test", "Inputs and cutflow",
                    "training and evaluation",
                    "classifiers", "Templates and statistical model", "Expected limits", "Closure", "Provenance"):
        assert heading in text
    for src in re.findall(r"src='(figures/[^']+)'", text):  # every figure the page shows is there
        assert (report.parent / src).stat().st_size > 1000
    assert "git revision" in text and "pyhf" in text

    for kind in ("bdt", "nn"):
        m = json.loads(store(env, "TrainClassifier", "tinyana", "v1", kind, "metrics.json").read_text())
        assert m["reference_auc"] > 0.75  # heavy Higgs against ttbar separates well
        # the high-level masses of the resonance decay are among the most important features
        assert set(list(m["importance"])[:3]) & {"m_bb", "m_wwbb", "m_wbb", "m_jjj", "m_jlv", "m_jj"}
    scores = np.load(store(env, "ScoreEvents", "tinyana", "v1", "bdt", "scores.npz"))
    assert len(scores["generated_1"]) == len(scores["generated_2"]) == 20_000
    assert len(scores["replica_101"]) == 20_000 and str(scores["truth_source"]) == "independent simulation"
    assert scores["signal_score"].mean() > scores["background_score"].mean() + 0.3


def test_limits_workspaces_and_scan(env, ran):  # noqa: F811
    res = json.loads(store(env, "LimitScan", "tinyana", "v1", "limits.json").read_text())
    assert res["sizes"] == [2000, 4309, 9283, 20000]
    edges = np.asarray(res["edges"])
    assert edges[0] == 0.5 and edges[-1] == 1.0
    assert min(res["templates"]["simulated"]["counts"]) >= 10
    for k in ("0", "0.1"):
        med = [r["0"] for r in res["generated"][k]["median"]]
        assert med[-1] < med[0]  # more generated events, stronger limit
        assert res["infinite"][k]["0"] < min(med[-1], res["simulated"][k]["0"])
        assert abs(res["closure"][k]["pull"]) < 4  # t-distributed with 7 degrees of freedom
    ws_dir = store(env, "LimitScan", "tinyana", "v1", "workspaces")
    files = sorted(f for f in ws_dir.glob("*.json") if not f.name.startswith("spurious_"))
    assert len(files) == res["timing"]["limits"]  # one workspace per limit, plus the spurious-signal ones
    assert len(list(ws_dir.glob("spurious_*.json"))) == 2 * (1 + 2 * 2)  # per syst: simulated, 2 seeds x 2 kinds
    ws = json.loads((ws_dir / "simulated_syst0.1.json").read_text())
    pyhf.Workspace(ws)  # valid pyhf JSON
    assert expected_limits(ws)["0"] == pytest.approx(res["simulated"]["0.1"]["0"], rel=1e-6)


def test_rerun_of_one_stage_reruns_exactly_its_dependents(env, analysis_config, ran):  # noqa: F811
    def mtime(*parts):
        return store(env, *parts).stat().st_mtime

    report = ("RunAnalysis", "tinyana", "v1", "report", "report.html")
    limits = ("LimitScan", "tinyana", "v1", "limits.json")
    scores = ("ScoreEvents", "tinyana", "v1", "bdt", "scores.npz")
    model = ("TrainClassifier", "tinyana", "v1", "bdt", "model.skops")
    before = {p: mtime(*p) for p in (report, limits, scores, model)}
    law(env, "LimitScan", *RUN, "--config", analysis_config, "--remove-output", "0,a,y")
    assert mtime(*limits) > before[limits]
    law(env, "RunAnalysis", *RUN, "--config", analysis_config)
    assert mtime(*report) > before[report]  # downstream of the rerun stage: rerun
    assert mtime(*scores) == before[scores] and mtime(*model) == before[model]  # upstream: untouched


def test_vanished_input_is_redone(env, analysis_config, ran):  # noqa: F811
    """A task whose input file has vanished is out of date: law redoes the requirement, then the task."""
    scores = store(env, "ScoreEvents", "tinyana", "v1", "bdt", "scores.npz")
    limits = store(env, "LimitScan", "tinyana", "v1", "limits.json")
    before = limits.stat().st_mtime
    scores.unlink()
    status = law(env, "LimitScan", *RUN, "--config", analysis_config, "--print-status", "1").stdout
    assert re.search(r"scores\.npz\)\n[\s│]*absent", status)
    law(env, "LimitScan", *RUN, "--config", analysis_config)
    assert scores.exists() and limits.stat().st_mtime > before


def test_vanished_regressed_truth_ntuple_is_written_again(env, analysis_config, ran):  # noqa: F811
    """The regressed truth ntuples are RegressEvents branch outputs: one vanished is written again by its
    branch alone, and TruthSample, which reads it, is out of date and rerun."""
    info = store(env, "TruthSample", "tinyana", "v1", "regressed", "truth.json")
    files = json.loads(info.read_text())["files"]
    victim, other = files[0], files[-1]
    before, other_before = info.stat().st_mtime, os.stat(other).st_mtime
    os.unlink(victim)
    law(env, "TruthSample", *RUN, "--config", analysis_config, "--features", "regressed")
    assert os.path.isfile(victim) and json.loads(info.read_text())["files"][0] == victim
    assert info.stat().st_mtime > before and os.stat(other).st_mtime == other_before


def test_regressions_trained_on_their_own_samples_evaluated_and_reported(env, ran):  # noqa: F811
    """nu-Flows and the b-jet regression run in the chain: trained on their own simulated samples (one per
    analysis sample, skimmed with --regression), evaluated on the analysis's reference partitions against the
    classical baselines and the truth, with figures and a report section."""
    skim = store(env, "Skim", "tinyana", "v1")
    assert (skim / "background_regression_0.root").is_file() and (skim / "signal_regression_0.root").is_file()
    hist = json.loads(store(env, "TrainRegression", "tinyana", "v1", "neutrino", "flow_1", "history.json").read_text())
    part = json.loads(store(env, "PartitionEvents", "tinyana", "v1", "partition.json").read_text())
    n_bkg = sum(part["samples"]["background"]["sizes"].values())
    assert abs(sum(hist["events"].values()) - n_bkg) < 0.1 * n_bkg  # a sample as large as the analysis's

    nu = json.loads(store(env, "EvaluateRegression", "tinyana", "v1", "neutrino", "metrics.json").read_text())
    m = nu["per_seed"]["1"]
    assert set(m["resolution"]) == {"w_mass", "dnn", "flow_sample", "flow_mode", "truth"}
    assert abs(m["masses"]["w_mass"]["m_lv"]["median"] - 80.4) < 1.0  # the constraint puts m(l nu) at m_W
    assert m["resolution"]["truth"]["pz"]["resolution"] == 0.0
    eff = {k: v["efficiency"]["4"]["correct_b_lep"] for k, v in m["assignment"].items()}
    assert eff["truth"] > eff["w_mass"]  # the true neutrino is the ceiling of the downstream assignment
    for c in ("px", "py", "pz"):
        assert 0 <= m["calibration"]["flow"][c]["ks"] < 0.3
    assert m["timing"]["posterior_draws"] == 32 * m["events"]

    bj = json.loads(store(env, "EvaluateRegression", "tinyana", "v1", "bjet", "metrics.json").read_text())
    b = bj["per_seed"]["1"]
    res = {k: v["all"]["resolution"] for k, v in b["resolution"].items()}
    # the soft-lepton content tells which jets lost a neutrino: even a short training sharpens the response
    assert res["dnn"] < 0.99 * res["none"] and res["flow_median"] < 0.99 * res["none"]
    assert b["masses"]["none"]["signal"]["peak"] == "h -> bb" and b["masses"]["none"]["background"]["peak"] == \
        "hadronic top"
    assert set(b["coverage"]) == {"dnn", "flow_median", "flow_recalibrated"}
    # recalibrated on held-out jets of the training samples, measured on the reference jets
    assert abs(b["coverage"]["flow_recalibrated"]["68"]["all"] - 0.68) < 0.05
    figures = store(env, "EvaluateRegression", "tinyana", "v1", "bjet", "figures")
    assert all((figures / f"bjet_{n}.png").stat().st_size > 1000 for n in ("resolution", "masses", "coverage"))
    text = store(env, "RunAnalysis", "tinyana", "v1", "report", "report.html").read_text()
    assert "Conditional flows on the truth record" in text and "b-jet energy regression" in text


def test_regressed_features_feed_the_whole_analysis(env, ran):  # noqa: F811
    """With regression.feed the analysis runs again on the same events with the six high-level masses of the
    regressed neutrino and b jets (truth sample included), under a 'regressed' level of the store, and the
    report compares the two."""
    from analysis.features import FEATURES, M_W
    from analysis.feed import REGRESSED_FEATURES
    from analysis.ntuple import read_ntuples

    part = store(env, "PartitionEvents", "tinyana", "v1")
    assert json.loads((part / "regressed" / "partition.json").read_text())["features"] == "regressed"
    for sample in ("background", "signal"):
        std = read_ntuples([part / f"{sample}_reference.root"])
        reg = read_ntuples([part / "regressed" / f"{sample}_reference.root"])
        np.testing.assert_array_equal(std["event"], reg["event"])  # the same events, row by row
        for k in FEATURES:
            if k in REGRESSED_FEATURES:
                assert np.mean(std[k] != reg[k]) > 0.9, k
            else:  # the low-level features and m_jj stay
                np.testing.assert_array_equal(std[k], reg[k], err_msg=k)
        assert np.mean(std["m_lv"] == np.float32(M_W)) > 0.5 and np.mean(reg["m_lv"] == np.float32(M_W)) < 0.01
    assert (part / "regressed" / "masses.png").stat().st_size > 1000
    # the inference ran as a branched workflow, one regressed ntuple per skimmed file of every sample
    skimmed = sorted(p.name for p in store(env, "Skim", "tinyana", "v1").glob("*.root")
                     if p.name.startswith(("background_", "signal_")) and "regression" not in p.name
                     and "truth" not in p.name)
    assert sorted(p.name for p in store(env, "RegressEvents", "tinyana", "v1").glob("*.root")) == skimmed

    truth = json.loads(store(env, "TruthSample", "tinyana", "v1", "truth.json").read_text())
    reg_truth = json.loads(store(env, "TruthSample", "tinyana", "v1", "regressed", "truth.json").read_text())
    assert reg_truth["selected"] == truth["selected"] and len(reg_truth["files"]) == len(truth["files"])
    assert all("/RegressEvents/" in f and "/truth/" in f for f in reg_truth["files"])  # one branch per file
    a, b = read_ntuples(truth["files"][:1]), read_ntuples(reg_truth["files"][:1])
    np.testing.assert_array_equal(a["jet1_pt"], b["jet1_pt"])
    assert np.mean(a["m_bb"] != b["m_bb"]) > 0.9

    from models.io import load_generator
    _, prep, _ = load_generator(store(env, "TrainFlow", "tinyana", "v1", "realnvp_s1", "model.pt"))
    _, prep_reg, _ = load_generator(store(env, "TrainFlow", "tinyana", "v1", "regressed", "realnvp_s1", "model.pt"))
    # the regressed m_lv is no function of the lepton and MET: modelled, not derived
    assert "m_lv" in prep.derived and "m_lv" not in prep_reg.derived
    res = json.loads(store(env, "LimitScan", "tinyana", "v1", "regressed", "limits.json").read_text())
    assert res["truth"]["test_events"] + res["truth"]["calibration_events"] == truth["selected"]
    text = store(env, "RunAnalysis", "tinyana", "v1", "report", "report.html").read_text()
    assert "What the regressions buy" in text and text.count("<td>regressed</td>") >= 3


def test_introspection_names_what_the_networks_use(env, ran):  # noqa: F811
    """Taylor coefficients of the nn classifier and of a C2ST between generated and truth events, in the report."""
    t = json.loads(store(env, "Introspect", "tinyana", "v1", "taylor.json").read_text())
    assert t["nn"]["names"] == t["c2st"]["names"] and len(t["nn"]["first"]) == 28
    second = np.asarray(t["nn"]["second"])
    assert second.shape == (28, 28) and np.all(np.tril(second, -1) == 0) and np.all(second >= 0)
    # the resonance masses separate the heavy Higgs from ttbar: among the top first-order coefficients
    top = [k for k, _ in sorted(zip(t["nn"]["names"], t["nn"]["first"]), key=lambda kv: -kv[1])[:6]]
    assert set(top) & {"m_bb", "m_wwbb", "m_wbb", "m_jjj", "m_jlv", "m_jj"}
    assert 0.5 < t["c2st"]["auc"] <= 1.0 and t["c2st"]["test_per_class"] >= 100
    # the regression flows' posterior means, in the context entries of each application (the physics of the
    # ranking is measured on the regression configuration: a 4-epoch flow on a tiny sample has hardly learnt)
    reg = t["regression"]
    assert set(reg) == {"neutrino", "bjet"}
    assert set(reg["bjet"]["names"]) <= set(bjet.CONTEXT)
    assert set(reg["neutrino"]["names"]) <= {label for label, _, _ in neutrino.taylor_inputs()}
    assert "MET cos dphi" in reg["neutrino"]["names"] and reg["neutrino"]["events"] > 100
    for entry in reg.values():
        first = np.asarray(entry["first"])
        assert np.all(np.isfinite(first)) and np.all(first >= 0) and first.max() > 0
    text = store(env, "RunAnalysis", "tinyana", "v1", "report", "report.html").read_text()
    assert "What the networks use: Taylor coefficients" in text and "figures/c2st_taylor.png" in text
    assert "figures/neutrino_taylor.png" in text


def test_object_classifier_competes(env, ran):  # noqa: F811
    """The transformer on the reconstructed objects trains beside the BDT and the MLP, is compared in ROC AUC and
    in the expected limit with simulated templates, and is not used where it cannot be (generated events)."""
    comp = json.loads(store(env, "CompareClassifiers", "tinyana", "v1", "comparison.json").read_text())
    rows = {r["classifier"]: r for r in comp["classifiers"]}
    assert set(rows) == {"bdt", "nn", "transformer"} and rows["transformer"]["inputs"] == "objects"
    assert rows["transformer"]["reference_auc"] > 0.6  # 3 epochs on a tiny sample: above chance already
    for r in rows.values():
        assert 0 < r["expected_limit"]["-2"] < r["expected_limit"]["0"] < r["expected_limit"]["2"]
    metrics = json.loads(store(env, "TrainClassifier", "tinyana", "v1", "transformer", "metrics.json").read_text())
    assert metrics["importance_kind"] == "occlusion" and set(metrics["importance"]) == set(GROUPS)
    assert not store(env, "ScoreEvents", "tinyana", "v1", "transformer").exists()
    text = store(env, "RunAnalysis", "tinyana", "v1", "report", "report.html").read_text()
    assert "expected limit (simulated templates)" in text and "classifier_transformer" in text


def test_regressed_features_need_the_feed_setting(env):  # noqa: F811
    proc = law(env, "PartitionEvents", "--version", "v1", "--features", "regressed", check=False)
    assert proc.returncode != 0
    assert proc.stderr.count("--features regressed needs a configuration with regression.feed: true") == 1


def test_independent_test_against_truth(env, ran):  # noqa: F811
    """The truth sample is independent and large, every workspace is fitted to it, the generator uncertainty
    comes from the replicas with a measured calibration, and the stored workspaces agree with pyhf."""
    truth = json.loads(store(env, "TruthSample", "tinyana", "v1", "truth.json").read_text())
    part = json.loads(store(env, "PartitionEvents", "tinyana", "v1", "partition.json").read_text())
    n_train = part["samples"]["background"]["sizes"]["train"]
    assert truth["source"] == "independent simulation"
    assert truth["selected"] > 3.5 * n_train  # factor 4 in this configuration
    assert all("background_truth" in f for f in truth["files"])

    res = json.loads(store(env, "LimitScan", "tinyana", "v1", "limits.json").read_text())
    assert res["truth"]["test_events"] + res["truth"]["calibration_events"] == truth["selected"]
    gu = res["generator_uncertainty"]
    assert gu["replica_seeds"] == [101, 102, 103] and gu["inflation"] >= 1.0
    assert 0.5 < gu["pulls"]["calibration_inflated"]["rms"] < 1.5  # the calibration brings the RMS to 1
    sp = res["spurious"]
    for k in ("0", "0.1"):
        assert len(sp["generated"][k]["1"]) == len(res["sizes"]) == len(sp["generated_unc"][k]["2"])
        for key in ("generated", "generated_unc"):
            for rows in sp[key][k].values():
                for r in rows:
                    assert r["sigma"] >= r["error"] > 0 and r["observed_limit"] > 0
                    assert r["pass"] == (abs(r["mu_hat"]) <= sp["max_sigma"] * r["sigma"])
        # the generator uncertainty widens the interval of the largest generated template
        assert sp["generated_unc"][k]["1"][-1]["error"] > sp["generated"][k]["1"][-1]["error"]
    assert res["amplification"]["n_train"] == n_train
    assert len(res["amplification"]["median"]) == len(res["sizes"])

    ws_dir = store(env, "LimitScan", "tinyana", "v1", "workspaces")
    ws = json.loads((ws_dir / f"generated_s1_n{res['sizes'][-1]}_syst0.1_genunc.json").read_text())
    # the stored workspace itself, through pyhf (the median; every band is compared in tests/analysis)
    fast, ref = expected_limits(ws), pyhf_expected_limits(ws, bands=(0,))
    assert list(ref) == ["0"]
    for b in ref:
        assert fast[b] == pytest.approx(ref[b], rel=0.01), b
    assert fast["0"] == pytest.approx(res["generated_unc"]["0.1"]["per_seed"]["1"][-1]["0"], rel=1e-6)
    if gu["correction"] is not None:  # the fit sees the generated template corrected by the non-closure
        bkg = np.asarray(ws["channels"][0]["samples"][1]["data"])
        largest = np.asarray(res["templates"]["generated"]["1"]["yields"])
        assert bkg == pytest.approx(largest / (1.0 + np.asarray(gu["correction"])), rel=1e-9)
    splits = sp["splits"]  # the spurious signal over further truth splits, recalibrated on each
    assert len(splits["z"]) == len(splits["inflation"]) == 3 and splits["construction"] == gu["construction"]
    assert splits["rms"] == pytest.approx(float(np.sqrt(np.mean(np.square(splits["z"])))))
    assert min(splits["inflation"]) >= 1.0
    spur = json.loads((ws_dir / f"spurious_generated_s1_n{res['sizes'][-1]}_syst0.1.json").read_text())
    assert spur["observations"][0]["data"] == pytest.approx(res["truth"]["test_template"]["yields"])
    assert fit_signal_strength(spur).mu_hat == pytest.approx(sp["generated"]["0.1"]["1"][-1]["mu_hat"], abs=1e-4)

    fid = json.loads(store(env, "FidelityTest", "tinyana", "v1", "fidelity.json").read_text())
    mc = fid["simulated_vs_simulated"]
    assert mc["sizes"] == [1000, 2000, 4000] and abs(mc["auc"][-1] - 0.5) < 0.05
    for s in ("1", "2"):
        assert fid["generated"][s]["c2st"]["auc"][-1] > 0.5 - 0.05
        assert "jets_pt_ordered" in fid["generated"][s]["validity"]
    assert set(fid["generated"]["1"]["groups"]) == {"masses", "relative azimuths", "low-level kinematics", "b tags"}
