"""Two-sample metrics on known answers."""

import numpy as np
import pytest
from scipy import stats

from analysis.metrics import (c2st, chi2_two_sample, common_edges, correlation_difference, evaluate,
                              feature_metrics, hanley_mcneil_error, js_distance, summarise)


def test_wasserstein_of_shifted_gaussians_is_the_shift():
    rng = np.random.default_rng(0)
    for d in (0.1, 0.5, 2.0):
        a, b = rng.normal(0, 1, 200_000), rng.normal(d, 1, 200_000)
        assert feature_metrics(a, b)["wasserstein"] == pytest.approx(d, abs=0.01)


def test_statistics_are_symmetric():
    rng = np.random.default_rng(1)
    a, b = rng.normal(0, 1, 5000), rng.exponential(1, 4000)
    m_ab, m_ba = feature_metrics(a, b), feature_metrics(b, a)
    for key in ("wasserstein", "ks_statistic", "ks_pvalue", "chi2_ndf", "chi2_pvalue", "js_distance"):
        assert m_ab[key] == pytest.approx(m_ba[key], rel=1e-9), key


def test_ks_pvalues_are_uniform_for_identical_distributions():
    rng = np.random.default_rng(2)
    p = [feature_metrics(rng.normal(size=400), rng.normal(size=400))["ks_pvalue"] for _ in range(300)]
    assert stats.kstest(p, "uniform").pvalue > 0.01
    assert 0.35 < np.mean(p) < 0.65


def test_chi2_pvalues_are_uniform_and_empty_bins_do_not_count():
    rng = np.random.default_rng(3)
    p = []
    for _ in range(300):
        a, b = rng.exponential(1, 2000), rng.exponential(1, 3000)
        p.append(chi2_two_sample(a, b, np.linspace(0, 30, 61))[2])  # most bins far in the tail are empty
    assert stats.kstest(p, "uniform").pvalue > 0.01
    chi2, ndf, _ = chi2_two_sample(rng.exponential(1, 2000), rng.exponential(1, 2000), np.linspace(0, 30, 61))
    assert ndf < 40  # the empty and sparse tail bins were merged, not counted
    # a real difference is detected
    _, _, p_shift = chi2_two_sample(rng.normal(0, 1, 5000), rng.normal(0.2, 1, 5000), np.linspace(-4, 4, 41))
    assert p_shift < 1e-3


def test_js_distance_limits():
    e = np.linspace(-5, 5, 21)
    a = np.random.default_rng(4).normal(size=10000)
    assert js_distance(a, a, e) == 0.0
    assert js_distance(np.full(100, -3.0), np.full(100, 3.0), e) == pytest.approx(1.0)


def test_discrete_features_get_one_bin_per_level():
    a = np.random.default_rng(5).integers(0, 3, 1000).astype(float)
    assert len(common_edges(a, a)) == 4


def test_c2st_identical_gives_auc_consistent_with_half():
    rng = np.random.default_rng(6)
    a, b = rng.normal(size=(8000, 5)), rng.normal(size=(8000, 5))
    r = c2st(a, b, seed=1)
    assert abs(r.auc - 0.5) < 3 * r.auc_error + 0.01
    assert 0.005 < r.auc_error < 0.02


def test_c2st_detects_a_correlation_the_marginals_miss():
    rng = np.random.default_rng(7)
    a = rng.normal(size=(8000, 2))
    cov = [[1.0, 0.6], [0.6, 1.0]]
    b = rng.multivariate_normal([0, 0], cov, 8000)
    r = c2st(a, b, seed=1)
    assert r.auc > 0.6 and r.auc - 0.5 > 5 * r.auc_error
    _, _, diff = correlation_difference(a, b)
    assert diff[0, 1] == pytest.approx(0.6, abs=0.05)


def test_hanley_mcneil_error_scales_with_sample_size():
    assert hanley_mcneil_error(0.5, 1000, 1000) == pytest.approx(np.sqrt(1 / 6000), rel=0.05)
    assert hanley_mcneil_error(0.7, 4000, 4000) < hanley_mcneil_error(0.7, 1000, 1000)


def test_evaluate_reports_each_metric_beside_its_mc_reference():
    rng = np.random.default_rng(8)
    sim = rng.normal(size=(6000, 3))
    gen = rng.normal(size=(3000, 3)) + np.array([0.0, 0.0, 0.3])
    r = evaluate(sim, gen, ["x", "y", "z"], seed=1, n_boot=5)
    assert r["n_events_each"] == 3000
    z, x = r["features"]["z"], r["features"]["x"]
    assert z["generated"]["wasserstein"]["value"] == pytest.approx(0.3, abs=0.05)
    assert z["mc_reference"]["wasserstein"]["value"] < 0.08
    assert x["generated"]["ks_pvalue"]["value"] > 1e-3 and z["generated"]["ks_pvalue"]["value"] < 1e-6
    assert z["generated"]["wasserstein"]["error"] > 0
    s = summarise(r)
    assert s["c2st_auc"] > s["c2st_auc_mc"] + 0.03
    with pytest.raises(ValueError, match="at least 100 simulated"):
        evaluate(sim[:60], gen, ["x", "y", "z"])
