"""The unfolding flow through the real ``law`` command line on a tiny configuration: its own training sample and
top-mass-shifted pseudo-data generated and skimmed, flows trained per seed, samples unfolded, one reweighting
iteration, the evaluation, its figures and its report section."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

from analysis import unfolding as unf
from analysis.config import load_config
from analysis.report import ReportBuilder
from models.io import load_conditional
from tests.conftest import tiny_config_dict
from tests.workflow.test_law_cli import env, law, store  # noqa: F401  (fixture and helpers)

pytestmark = pytest.mark.slow
RUN = ("--version", "v1")


@pytest.fixture(scope="module")
def unfolding_config(env, tmp_path_factory):  # noqa: F811
    d = tiny_config_dict(bkg_events=12_000, sig_events=2000)
    d["name"] = "tinyunf"
    d["unfolding"] = {"enabled": True, "train_factor": 1, "seeds": [1, 2], "samples": 32, "evaluation_events": 1000,
                      "closure_draws": 2, "bins": 20, "shift_draws": 4,
                      "hyperparameters": {"components": 3, "hidden_features": [32, 32]}, "embedding_features": 8,
                      "embedding_hidden": [16], "training": {"epochs": 3, "patience": 3, "batch_size": 256}}
    path = tmp_path_factory.mktemp("unfcfg") / "tinyunf.yaml"
    path.write_text(yaml.safe_dump(d))
    return str(path)


@pytest.fixture(scope="module")
def ran(env, unfolding_config):  # noqa: F811
    return law(env, "EvaluateUnfolding", *RUN, "--config", unfolding_config, "--workers", "2", timeout=1200)


def test_samples_models_and_unfoldings_in_the_store(env, unfolding_config, ran):  # noqa: F811
    skim = store(env, "Skim", "tinyunf", "v1")
    for name in ("background_unfolding_0", "background_unfolding_mt_m1_0", "background_unfolding_mt_p1_0"):
        assert (skim / f"{name}.root").is_file()
    for seed in (1, 2):
        fit, meta = load_conditional(store(env, "TrainUnfolding", "tinyunf", "v1", f"seed_{seed}", "model.pt"),
                                     "TrainUnfolding")
        assert meta["seed"] == seed and fit.preprocessor.features == list(unf.TARGETS)
        ref = np.load(store(env, "UnfoldSample", "tinyunf", "v1", "reference", f"seed_{seed}", "unfolded.npz"))
        assert ref["unfolded"].shape == (2, *ref["truth"].shape) and ref["truth"].shape[1] == 18
        assert np.isfinite(ref["unfolded"]).all()
    rw = store(env, "ReweightUnfolding", "tinyunf", "v1", "mt_p1")
    assert (rw / "model.pt").is_file() and (rw / "unfolded.npz").is_file()
    meta = json.loads((rw / "history.json").read_text())
    assert meta["reweighted"] and meta["weights"]["max"] > meta["weights"]["min"]


def test_evaluation_measures_and_figures(env, ran):  # noqa: F811
    m = json.loads(store(env, "EvaluateUnfolding", "tinyunf", "v1", "metrics.json").read_text())
    assert set(m["per_seed"]) == {"1", "2"}
    first = m["per_seed"]["1"]
    assert set(first["closure"]) == set(unf.OBSERVABLES)
    assert set(first["calibration"]) == set(unf.TARGETS) | set(unf.OBSERVABLES)
    for v in first["calibration"].values():
        assert 0 <= v["ks"] <= 1 and sum(v["pit_histogram"]) == 1000
    assert 0.4 < first["c2st"]["auc"][-1] <= 1.0 and len(first["c2st"]["sizes"]) >= 2
    # the pseudo-data really carry the shifted top mass: the truth moves by the generator's shift
    for seed in ("1", "2"):
        for key, shift in (("-1", -1.0), ("+1", 1.0)):
            assert m["mass_shift"][seed][key]["true_shift"] == pytest.approx(shift, abs=0.2)
    assert set(m["mass_shift_reweighted"]) == {"-1", "+1"}
    for k in ("m_tt", "pt_t_had"):
        ibu = m["ibu"][k]
        assert len(ibu["ibu"]) == 20 and all(e > 0 for e in ibu["ibu_error"]) and ibu["ibu_chi2_ndf"] < 5
    assert set(m["summary"]["goals"]) >= {"calibration KS <= 0.02", "C2ST AUC <= 0.55"}
    figures = store(env, "EvaluateUnfolding", "tinyunf", "v1", "figures")
    for name in ("unfolding_marginals", "unfolding_ranks", "unfolding_coverage", "unfolding_posteriors",
                 "unfolding_mass_shift", "unfolding_ibu"):
        assert (figures / f"{name}.png").stat().st_size > 1000 and (figures / f"{name}.pdf").is_file()


def test_report_section(env, unfolding_config, ran, tmp_path):  # noqa: F811
    from workflow.report import unfolding_section

    m = json.loads(store(env, "EvaluateUnfolding", "tinyunf", "v1", "metrics.json").read_text())
    rep = ReportBuilder("test")
    unfolding_section(rep, load_config(unfolding_config), m, str(store(env, "EvaluateUnfolding", "tinyunf", "v1",
                                                                      "figures")))
    rep.write(tmp_path)
    text = (tmp_path / "report.html").read_text()
    assert "Unfolding flow" in text and "Prior dependence" in text and "iterative Bayesian unfolding" in text
    assert text.count("unfolding_") >= 6


def test_rerun_is_complete_and_disabled_config_refused(env, unfolding_config, ran):  # noqa: F811
    again = law(env, "EvaluateUnfolding", *RUN, "--config", unfolding_config, "--workers", "2")
    assert "unfolding flow seed" not in again.stdout + again.stderr  # nothing trained again
    proc = law(env, "EvaluateUnfolding", *RUN, check=False)  # the default configuration has no unfolding
    assert proc.returncode != 0
    assert (proc.stdout + proc.stderr).count("has no unfolding (unfolding.enabled: false)") == 1
