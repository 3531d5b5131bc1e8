"""The end-to-end RunAnalysis chain through the real ``law`` command line on a tiny configuration: classifiers,
templates, pyhf workspaces, limit scans, the report, and rerun semantics."""

from __future__ import annotations

import json
import re

import numpy as np
import pyhf
import pytest
import yaml

from analysis.statistics import expected_limits
from tests.conftest import tiny_config_dict
from tests.workflow.test_law_cli import env, law, store  # noqa: F401  (fixture and helpers)

pytestmark = pytest.mark.slow
RUN = ("--version", "v1")


@pytest.fixture(scope="module")
def analysis_config(env, tmp_path_factory):  # noqa: F811
    d = tiny_config_dict(bkg_events=24_000, sig_events=6000)
    d["name"] = "tinyana"
    d["flows"] = {"models": ["realnvp"], "default": "realnvp", "seeds": [1], "analysis_seeds": [1, 2],
                  "hyperparameters": {"realnvp": {"transforms": 4, "hidden_features": [64, 64]}},
                  "training": {"epochs": 4, "patience": 4, "batch_size": 256},
                  "generation": {"events_per_chunk": 15_000, "batch_size": 5000, "evaluation_events": 3000}}
    d["classifiers"] = {"bdt": {"max_iter": 60}, "nn": {"hidden_features": [64, 64], "epochs": 10, "batch_size": 128}}
    d["limits"] = {"n_bins": 10, "min_count": 10, "background_systematics": [0.0, 0.1],
                   "generated_sizes": {"min": 2000, "max": 20_000, "points": 4}, "luminosities_fb": [30.0, 300.0],
                   "closure_splits": 8}
    path = tmp_path_factory.mktemp("anacfg") / "tinyana.yaml"
    path.write_text(yaml.safe_dump(d))
    return str(path)


@pytest.fixture(scope="module")
def ran(env, analysis_config):  # noqa: F811
    return law(env, "RunAnalysis", *RUN, "--config", analysis_config, "--workers", "2", timeout=900)


def test_report_and_every_stage(env, analysis_config, ran):  # noqa: F811
    report = store(env, "RunAnalysis", "tinyana", "v1", "report", "report.html")
    assert f"hepflows report: {report}" in ran.stdout  # the run ends by printing the report's path
    text = report.read_text()
    for heading in ("Can generated background replace", "Inputs and cutflow", "training and evaluation",
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
    files = sorted(ws_dir.glob("*.json"))
    assert len(files) == res["timing"]["limits"]
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
