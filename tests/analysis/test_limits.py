"""Limit scans on synthetic scores: the physics of generated against simulated background in the fit."""

from __future__ import annotations

import numpy as np
import pytest

from analysis.config import LimitConfig, ScanSizes
from analysis.limits import ScoredSamples, run_scan, simulated_limit, split_spurious
from analysis.statistics import StatisticsError


def _samples(rng, n_sim=20_000, n_gen=200_000, shift=0.0):
    y_sig, y_bkg = 4e4, 1e7
    return ScoredSamples(
        signal_scores=rng.beta(5, 1.5, 5000), signal_weights=np.full(5000, y_sig / 5000),
        background_scores=rng.beta(1.5, 5, n_sim), background_weights=np.full(n_sim, y_bkg / n_sim),
        generated={s: np.clip(rng.beta(1.5, 5, n_gen) + shift, 0, 1) for s in (1, 2)},
        expected_background=y_bkg, luminosity_fb=139.0)


CFG = LimitConfig(score_cut=0.4, n_bins=12, min_count=20, background_systematics=(0.0, 0.1),
                  generated_sizes=ScanSizes(min=2000, max=200_000, points=6), luminosities_fb=(30.0, 300.0),
                  closure_splits=6)


@pytest.fixture(scope="module")
def scan():
    return run_scan(_samples(np.random.default_rng(5)), CFG, seed=1)


def test_scan_physics(scan):
    res, workspaces = scan
    assert res["timing"]["limits"] == len(workspaces)
    for k in ("0", "0.1"):
        med = [r["0"] for r in res["generated"][k]["median"]]
        # more generated events, smaller statistical uncertainty, stronger limit, towards infinite statistics
        assert med[-1] < med[0]
        assert res["infinite"][k]["0"] < med[-1]
        assert res["infinite"][k]["0"] < res["simulated"][k]["0"]
        # a generator that reproduces the simulation at the simulated sample size gives its limit (10 %)
        n = res["sizes"]
        i = int(np.argmin(np.abs(np.log(np.asarray(n) / res["simulated_events"]))))
        assert med[i] == pytest.approx(res["simulated"][k]["0"], rel=0.25)
        # limits fall with luminosity
        lum = res["luminosity"]
        assert lum["simulated"][k][1]["0"] < lum["simulated"][k][0]["0"]
        assert lum["infinite"][k][1]["0"] < lum["infinite"][k][0]["0"]
    # a systematic never helps
    assert res["simulated"]["0.1"]["0"] >= res["simulated"]["0"]["0"] * (1 - 1e-9)


def test_closure_is_zero_within_uncertainty(scan):
    res, _ = scan
    for k in ("0", "0.1"):
        c = res["closure"][k]
        assert abs(c["pull"]) < 3
        assert abs(c["mean"]) < 3 * c["mean_error"]


def test_binning_holds_min_count_for_smallest_generated(scan):
    res, _ = scan
    counts = res["templates"]["simulated"]["counts"]
    assert min(counts) >= CFG.min_count


def test_mismodelling_generator_is_visible():
    """A generator with a shifted score shape gives a limit well away from the simulated one."""
    res, _ = run_scan(_samples(np.random.default_rng(6), shift=0.08), CFG, seed=1)
    med = res["generated"]["0"]["median"]
    i = int(np.argmin(np.abs(np.asarray(res["sizes"]) - res["simulated_events"])))
    assert abs(med[i]["0"] / res["simulated"]["0"]["0"] - 1) > 0.3


def test_too_small_generated_sample_is_a_clear_error():
    s = _samples(np.random.default_rng(7), n_gen=1000)
    with pytest.raises(StatisticsError, match="generated sample of flow seed 1 has 1000 events; the scan needs"):
        run_scan(s, CFG, seed=1)


def test_simulated_limit_ranks_classifiers():
    """The expected limit from a classifier's simulated templates: a classifier that separates signal from
    background sets a stronger limit than one that hardly does, and the bands are ordered."""
    rng = np.random.default_rng(3)
    n_s, n_b = 4000, 40000
    labels = np.r_[np.ones(n_s), np.zeros(n_b)]
    weights = np.r_[np.full(n_s, 50.0 / n_s), np.full(n_b, 20000.0 / n_b)]
    good = np.r_[rng.beta(5, 1.5, n_s), rng.beta(1.5, 5, n_b)]
    poor = np.r_[rng.beta(2.2, 2, n_s), rng.beta(2, 2.2, n_b)]
    cfg = LimitConfig(n_bins=10, min_count=20, background_systematics=(0.05,))
    a, b = simulated_limit(good, labels, weights, cfg), simulated_limit(poor, labels, weights, cfg)
    assert a["-2"] < a["-1"] < a["0"] < a["1"] < a["2"]
    assert a["0"] < 0.5 * b["0"]
    assert a["signal_yield"] < 50.0 and a["background_yield"] < 20000.0  # only what is above the score cut


def _split_samples(rng, extra: float) -> ScoredSamples:
    """Truth and simulation from one score distribution; the generated background and its replicas carry a
    fraction ``extra`` of signal-like events."""
    y_sig, y_bkg, n = 4e4, 1e7, 100_000

    def generated(m):
        k = int(extra * m)
        return rng.permutation(np.r_[rng.beta(1.5, 5, m - k), rng.beta(8, 1.2, k)])
    return ScoredSamples(
        signal_scores=rng.beta(5, 1.5, 5000), signal_weights=np.full(5000, y_sig / 5000),
        background_scores=rng.beta(1.5, 5, 20_000), background_weights=np.full(20_000, y_bkg / 20_000),
        generated={1: generated(n)}, expected_background=y_bkg, luminosity_fb=139.0,
        truth_scores=rng.beta(1.5, 5, 200_000), truth_weights=np.full(200_000, y_bkg / 200_000),
        replicas={s: generated(n) for s in (11, 12, 13)})


def test_spurious_signal_over_truth_splits_tells_a_faithful_generator_from_a_biased_one():
    """Further calibration/test splits of the truth sample: a generator from the truth's own distribution gives
    z centred on zero, no fit on the lower bound of mu, calibrated; one with 0.2 % extra signal-like events and
    only the replica spread as uncertainty fakes a negative signal on every split and is not calibrated."""
    cfg = LimitConfig(n_bins=8, min_count=20, background_systematics=(0.1,), spurious_splits=4,
                      spurious_bootstraps=10)
    tail = np.random.default_rng(0).beta(1.5, 5, 10 ** 6)
    edges = np.r_[np.quantile(tail[tail > 0.4], np.linspace(0, 1, 9)[:-1]), 1.0]
    edges[0] = 0.4
    good = split_spurious(_split_samples(np.random.default_rng(3), 0.0), cfg, 1, "replicas", edges, 100_000)
    bad = split_spurious(_split_samples(np.random.default_rng(3), 0.002), cfg, 1, "replicas", edges, 100_000)
    assert len(good["z"]) == len(bad["z"]) == 4 and np.all(np.isfinite(good["z"] + bad["z"]))
    assert good["calibrated"] and good["at_bound"] == 0 and abs(good["mean"]) < 0.5
    assert not bad["calibrated"] and max(bad["z"]) < -1.0
