"""Event sources side by side: the peak-width measure and the comparison table."""

from __future__ import annotations

import numpy as np
import pytest

from analysis.sources import comparison_rows, peak_widths, shortest_interval, source_summary


def test_shortest_half_of_a_gaussian_peak_on_a_tail():
    rng = np.random.default_rng(1)
    peak = rng.normal(80.0, 8.0, 20_000)
    tail = rng.uniform(20.0, 400.0, 8_000)  # wrong jet pairings: a broad combinatorial background (29 %)
    p = peak_widths({"m_jj": np.concatenate([peak, tail])}, features=("m_jj",))["m_jj"]
    assert abs(p["centre"] - 80.0) < 1.0
    # the core width stays close to the peak's sigma (the shortest half alone would be 1.4x wider here)
    assert abs(p["sigma"] - 8.0) < 0.6
    lo, hi = shortest_interval(np.concatenate([peak, tail]))
    assert (hi - lo) / 1.349 > 1.3 * 8.0
    # the peak holds 20000 x 0.954 events of 28000 within +-2 sigma, plus the tail's share of the window
    assert abs(p["in_peak"] - (20_000 * 0.954 + 8_000 * 32 / 380) / 28_000) < 0.02
    assert abs(p["relative"] - 0.1) < 4 * p["relative_error"] + 0.01


def test_core_of_a_pure_gaussian_is_its_sigma():
    from scipy.stats import truncnorm

    from analysis.sources import TRUNCATED_RMS, WINDOW, core_peak

    assert TRUNCATED_RMS == pytest.approx(truncnorm(-WINDOW, WINDOW).std(), rel=1e-6)
    c, s = core_peak(np.random.default_rng(5).normal(3.0, 0.5, 200_000))
    assert c == pytest.approx(3.0, abs=0.005) and s == pytest.approx(0.5, rel=0.01)


def test_relative_width_is_unit_free_and_errors_cover():
    rng = np.random.default_rng(2)
    x = rng.normal(125.0, 15.0, 5_000)
    a = peak_widths({"m_bb": x}, features=("m_bb",))["m_bb"]
    b = peak_widths({"m_bb": x / 125.0}, features=("m_bb",))["m_bb"]
    assert a["relative"] == pytest.approx(b["relative"], rel=1e-9)
    reps = [peak_widths({"m_bb": rng.normal(125.0, 15.0, 5_000)}, features=("m_bb",), n_boot=10)["m_bb"]["relative"]
            for _ in range(20)]
    assert np.std(reps) == pytest.approx(a["relative_error"], rel=0.5)


def test_shortest_interval_refuses_too_few_values():
    with pytest.raises(ValueError, match="at least 10"):
        shortest_interval(np.array([1.0, np.nan, 2.0]))
    assert shortest_interval(np.array([0, 1, 2, 3, 10, 11, 12, 13, 14, 15.0])) == (10.0, 14.0)


def test_comparison_rows_put_sources_side_by_side():
    peaks = {f: {"relative": 0.1, "relative_error": 0.01, "in_peak": 0.8} for f in ("m_jj", "m_jjj", "m_jlv",
                                                                                     "m_bb", "m_wbb", "m_wwbb")}
    fid = {"generated": {"1": {"c2st": {"auc": [0.6, 0.7], "auc_error": [0.01, 0.005], "sizes": [10, 20]}}},
           "simulated_vs_simulated": {"auc": [0.5, 0.501]}}
    lim = {"summary": {"0.05": {"simulated": 0.9, "generated_largest_n": 0.2, "generated_unc_largest_n": 0.5,
                                "spurious_z_simulated": 0.1, "spurious_z_generated": 8.0,
                                "spurious_z_generated_unc": 0.2}}}
    a = source_summary({"classifiers": [{"classifier": "bdt", "reference_auc": 0.91}]}, fid, lim, peaks, peaks,
                       {"background": 1000, "signal": 500})
    b = dict(a, classifier_auc={"bdt": 0.81, "nn": 0.80})
    rows = comparison_rows({"embedded": a, "pythia": b},
                           {"signal": {"m_jj": {"relative": 0.2, "relative_error": 0.02}}, "background": {}})
    by = {r["quantity"]: r for r in rows}
    assert by["bdt AUC (signal against background)"] == {"quantity": "bdt AUC (signal against background)",
                                                         "embedded": "0.910", "pythia": "0.810"}
    assert by["nn AUC (signal against background)"]["embedded"] == "-"
    assert by["signal m_jj: core sigma / centre (in peak)"]["UCI HIGGS"] == "0.200 +- 0.020"
    assert by["signal m_jj: core sigma / centre (in peak)"]["embedded"] == "0.100 +- 0.010 (80 %)"
    assert by["signal m_bb: core sigma / centre (in peak)"]["UCI HIGGS"] == "-"
    assert by["spurious signal, generated template (sigma)"]["pythia"] == "+8.00"
    assert by["generator C2ST AUC against the truth sample"]["embedded"] == "0.700 +- 0.005 (20/class)"


def test_too_few_events_are_not_a_peak():
    from analysis.sources import _rel

    p = peak_widths({"m_bb": np.array([1.0, 2.0, np.nan] * 20)}, features=("m_bb",))["m_bb"]
    assert p["n"] == 40 and np.isnan(p["relative"]) and _rel(p) == "- (40 events)"
