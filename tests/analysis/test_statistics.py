"""Expected CLs limits: the fast exact route against pyhf's own upper_limit, known answers, and behaviour."""

from __future__ import annotations

import math

import numpy as np
import pyhf
import pytest
from scipy import optimize, stats

from analysis.statistics import (BANDS, ChannelModel, StatisticsError, band_targets, build_workspace,
                                 expected_limits, fit_signal_strength, observed_limit, pyhf_expected_limits,
                                 pyhf_observed_limit, pyhf_signal_fit)

SIG = np.array([2.0, 5.0, 9.0, 14.0])
BKG = np.array([400.0, 150.0, 60.0, 20.0])


def test_workspace_is_valid_pyhf():
    ws = build_workspace(SIG, BKG, 0.05 * BKG, 0.1, 0.02, name="p")
    pyhf.Workspace(ws)  # schema validation
    model = pyhf.Workspace(ws).model()
    assert set(model.config.par_order) == {"mu", "staterror_SR", "bkg_norm", "lumi"}
    assert model.config.poi_name == "mu"


@pytest.mark.parametrize("stat,syst,lumi", [(None, 0.0, 0.0), (0.08, 0.0, 0.0), (0.05, 0.1, 0.0)])
def test_fast_limit_agrees_with_pyhf(stat, syst, lumi):
    ws = build_workspace(SIG, BKG, None if stat is None else stat * BKG, syst, lumi, name="cmp")
    fast, ref = expected_limits(ws), pyhf_expected_limits(ws)
    for k in ref:
        assert fast[k] == pytest.approx(ref[k], rel=0.01), k


@pytest.mark.slow
def test_fast_limit_agrees_with_pyhf_8_bins_with_lumi():
    rng = np.random.default_rng(3)
    b = np.sort(rng.uniform(20, 2000, 8))[::-1]
    s = np.sort(rng.uniform(1, 40, 8))
    ws = build_workspace(s, b, rng.uniform(0.02, 0.2, 8) * b, 0.2, 0.017, name="big")
    fast, ref = expected_limits(ws), pyhf_expected_limits(ws)
    for k in ref:
        assert fast[k] == pytest.approx(ref[k], rel=0.01), k


def test_single_bin_known_answer():
    """One bin, no uncertainties: q~_mu,A = 2 (mu s - b ln(1 + mu s / b)); the median expected limit solves
    sqrt(q) = 1.96 (CLs = 2 Phi(-sqrt(q)) = 0.05)."""
    s, b = 10.0, 100.0

    def sqrtq(mu):
        return math.sqrt(2 * (mu * s - b * math.log1p(mu * s / b)))

    median = optimize.brentq(lambda mu: sqrtq(mu) - stats.norm.isf(0.025), 1e-6, 100)
    lim = expected_limits(build_workspace([s], [b], name="one"))
    assert lim["0"] == pytest.approx(median, rel=1e-6)
    for k, x in band_targets().items():  # every band: CLs_k(x_k) = 0.05
        assert stats.norm.cdf(k - x) / stats.norm.cdf(k) == pytest.approx(0.05, rel=1e-9)
        assert sqrtq(lim[str(k)]) == pytest.approx(x, rel=1e-6)


def test_bands_ordered_and_limit_shrinks_when_signal_grows():
    ws = build_workspace(SIG, BKG, 0.05 * BKG, 0.1, name="p")
    lim = expected_limits(ws)
    values = [lim[str(k)] for k in BANDS]
    assert values == sorted(values) and values[0] > 0
    doubled = expected_limits(build_workspace(2 * SIG, BKG, 0.05 * BKG, 0.1, name="p2"))
    for k in lim:  # mu only enters as mu * s: twice the signal, half the limit
        assert doubled[k] == pytest.approx(lim[k] / 2, rel=1e-5)


def test_uncertainties_weaken_the_limit():
    base = expected_limits(build_workspace(SIG, BKG, name="p"))["0"]
    stat = expected_limits(build_workspace(SIG, BKG, 0.1 * BKG, name="p"))["0"]
    more_stat = expected_limits(build_workspace(SIG, BKG, 0.2 * BKG, name="p"))["0"]
    syst = expected_limits(build_workspace(SIG, BKG, 0.1 * BKG, 0.2, name="p"))["0"]
    assert base < stat < more_stat
    assert syst > stat


def test_bad_models_name_the_point():
    with pytest.raises(StatisticsError, match=r"gen_n100: background bin\(s\) \[2\] empty"):
        build_workspace(SIG, [400.0, 150.0, 0.0, 20.0], name="gen_n100")
    with pytest.raises(StatisticsError, match="sim: the signal template is zero"):
        build_workspace(np.zeros(4), BKG, name="sim")
    with pytest.raises(StatisticsError, match="same, non-zero number of bins"):
        build_workspace(SIG[:3], BKG, name="x")
    with pytest.raises(StatisticsError, match="non-finite"):
        build_workspace(SIG, [np.nan, 1, 1, 1], name="x")
    ws = build_workspace(SIG, BKG, name="w")
    ws["channels"][0]["samples"][1]["modifiers"].append({"name": "shape", "type": "histosys",
                                                         "data": {"hi_data": list(BKG), "lo_data": list(BKG)}})
    with pytest.raises(StatisticsError, match="w: background modifier type 'histosys' is not supported"):
        ChannelModel.from_workspace(ws)
    with pytest.raises(StatisticsError, match="not in the layout"):
        expected_limits({"channels": []})


def test_generator_uncertainty_is_one_histosys_per_bin():
    gen = np.array([0.0, 5.0, 6.0, 4.0])
    ws = build_workspace(SIG, BKG, 0.05 * BKG, 0.1, name="g", generator_uncertainty=gen)
    model = pyhf.Workspace(ws).model()
    assert {p for p in model.config.par_order if p.startswith("generator_bin")} == {
        "generator_bin1", "generator_bin2", "generator_bin3"}  # a bin without uncertainty gets no parameter
    m = ChannelModel.from_workspace(ws)
    assert m.gen_rel == pytest.approx(gen / BKG)


@pytest.mark.slow
@pytest.mark.parametrize("stat", [None, 0.05])
def test_fast_limit_with_generator_uncertainty_agrees_with_pyhf(stat):
    ws = build_workspace(SIG, BKG, None if stat is None else stat * BKG, 0.1, name="gen",
                         generator_uncertainty=0.1 * BKG)
    fast, ref = expected_limits(ws), pyhf_expected_limits(ws)
    for k in ref:
        assert fast[k] == pytest.approx(ref[k], rel=0.005), k


@pytest.mark.slow
@pytest.mark.parametrize("gen", [None, 0.1])
def test_signal_fit_and_observed_limit_agree_with_pyhf(gen):
    """Observations off the background (a deficit and an excess): mu_hat, its profile-likelihood interval and the
    observed CLs limit against pyhf's fits and toms748 limit on the same workspace."""
    obs = BKG * np.array([1.0, 1.02, 0.97, 1.1])
    ws = build_workspace(SIG, BKG, 0.05 * BKG, 0.1, name="obs", observations=obs,
                         generator_uncertainty=None if gen is None else gen * BKG)
    fit = fit_signal_strength(ws)
    mu, down, up = pyhf_signal_fit(ws)
    assert fit.mu_hat == pytest.approx(mu, abs=2e-3 * fit.error)
    assert fit.error_down == pytest.approx(down, rel=5e-3)
    assert fit.error_up == pytest.approx(up, rel=5e-3)
    assert fit.significance > 0  # an excess in the signal-like bins
    assert observed_limit(ws, fit=fit) == pytest.approx(pyhf_observed_limit(ws), rel=0.01)


def test_signal_fit_of_background_only_data_is_zero():
    ws = build_workspace(SIG, BKG, 0.05 * BKG, 0.1, name="asimov")
    fit = fit_signal_strength(ws)
    assert fit.mu_hat == pytest.approx(0.0, abs=1e-4)
    assert fit.significance == pytest.approx(0.0, abs=1e-3)
    assert fit.error == pytest.approx(expected_limits(ws)["0"] / 1.96, rel=0.25)  # Gaussian regime, roughly


def test_signal_fit_near_the_lower_bound_of_mu_agrees_with_pyhf():
    """A deficit where the signal is: mu may fall only until the most signal-like bin keeps half its background.
    An interval ending just inside that bound is found where the profile crosses (not cut at the bound), and a
    deficit beyond it is flagged, with a non-negative lower error and the upper half-width as the error (the
    split test once reported z = -314 from a bracket beyond the bound and a negative lower error)."""
    sig, bkg = np.array([1.0, 2.0, 5.0, 20.0]), np.array([1000.0, 300.0, 50.0, 3.0])
    lo = -0.5 * np.min(bkg / sig)
    inside = build_workspace(sig, bkg, 0.05 * bkg, 0.1, name="inside", observations=bkg * [1, 1, 1, 1.1])
    fit = fit_signal_strength(inside)
    mu, down, up = pyhf_signal_fit(inside)
    assert not fit.at_bound and not fit.truncated and fit.mu_hat - fit.error_down > lo
    assert fit.mu_hat == pytest.approx(mu, abs=5e-3 * fit.error)
    assert fit.error_down == pytest.approx(down, rel=5e-3) and fit.error_up == pytest.approx(up, rel=5e-3)
    beyond = build_workspace(sig, bkg, 0.05 * bkg, 0.1, name="beyond", observations=bkg * [1, 1, 0.8, 0.0])
    fit = fit_signal_strength(beyond)
    mu, down, up = pyhf_signal_fit(beyond)
    assert fit.at_bound and fit.truncated
    assert fit.mu_hat >= lo and fit.mu_hat == pytest.approx(lo, abs=1e-3 * abs(lo)) and mu == pytest.approx(lo, abs=1e-3 * abs(lo))
    assert 0 <= fit.error_down < 1e-3 * abs(lo) and fit.error == fit.error_up == pytest.approx(up, rel=5e-3)
    assert fit.significance < 0 and fit_signal_strength(beyond, interval=False).at_bound


@pytest.mark.slow
def test_coherent_generator_shape_agrees_with_pyhf():
    """The non-closure shape (one histosys moving every bin) with per-bin generator uncertainties and the
    staterror: expected limits, the fit and the observed limit against pyhf."""
    shape = BKG * np.array([0.02, 0.0, -0.08, -0.12])
    ws = build_workspace(SIG, BKG, 0.05 * BKG, 0.1, name="shape", generator_uncertainty=0.05 * BKG,
                         generator_shape=shape)
    assert "generator_shape" in pyhf.Workspace(ws).model().config.par_order
    obs = BKG * np.array([1.0, 1.02, 1.05, 1.12])  # a generator-like deficit where the signal is
    _assert_fast_agrees_with_pyhf(ws, build_workspace(SIG, BKG, 0.05 * BKG, 0.1, name="shape_obs",
                                                      generator_uncertainty=0.05 * BKG, generator_shape=shape,
                                                      observations=obs))


def _assert_fast_agrees_with_pyhf(ws: dict, ws_obs: dict) -> None:
    """Expected limits of ``ws``, and the fit and observed limit of ``ws_obs`` (with observations): the fast
    route against pyhf."""
    fast, ref = expected_limits(ws), pyhf_expected_limits(ws)
    for k in ref:
        assert fast[k] == pytest.approx(ref[k], rel=0.005), k
    fit = fit_signal_strength(ws_obs)
    mu, down, up = pyhf_signal_fit(ws_obs)
    assert fit.mu_hat == pytest.approx(mu, abs=5e-3 * fit.error)
    assert fit.error_up == pytest.approx(up, rel=5e-3)
    assert observed_limit(ws_obs, fit=fit) == pytest.approx(pyhf_observed_limit(ws_obs), rel=0.01)


@pytest.mark.slow
def test_several_coherent_shapes_agree_with_pyhf():
    """Three independent coherent shapes (the eigen-variations of a fitted non-closure correction) beside the
    per-bin generator uncertainties, the staterror and the normalisation: expected limits, the fit to data with
    a deficit where the signal is, and the observed limit against pyhf; each shape is its own parameter."""
    shapes = BKG * np.array([[0.01, 0.01, 0.02, 0.03], [-0.02, 0.0, 0.01, 0.04], [0.0, 0.005, -0.01, 0.02]])
    ws = build_workspace(SIG, BKG, 0.05 * BKG, 0.1, name="shapes", generator_uncertainty=0.03 * BKG,
                         generator_shape=shapes)
    pars = pyhf.Workspace(ws).model().config.par_order
    assert {"generator_shape", "generator_shape1", "generator_shape2"} <= set(pars)
    assert ChannelModel.from_workspace(ws).shape.shape == (3, 4)
    obs = BKG * np.array([0.99, 1.02, 1.06, 1.1])
    _assert_fast_agrees_with_pyhf(ws, build_workspace(SIG, BKG, 0.05 * BKG, 0.1, name="shapes_obs",
                                                      generator_uncertainty=0.03 * BKG, generator_shape=shapes,
                                                      observations=obs))


def test_generator_shapes_must_be_numbered_without_gaps():
    ws = build_workspace(SIG, BKG, 0.05 * BKG, name="gap", generator_shape=np.stack([0.01 * BKG, 0.02 * BKG]))
    ws["channels"][0]["samples"][1]["modifiers"][-1]["name"] = "generator_shape7"
    with pytest.raises(StatisticsError, match="numbered"):
        ChannelModel.from_workspace(ws)


def _profile_two_numpy(c, a, n, s2, r2):
    """The vectorised numpy profiling that the compiled ``_profile_two`` replaced (reference, kept verbatim)."""
    def quadratic(c, a, n, s2):
        B = a * a * s2 + c - a
        C = a * s2 * c - n * a * s2 - c
        disc = np.sqrt(np.maximum(B * B - 4 * a * C, 0.0))
        q = -0.5 * (B + np.where(B >= 0, disc, -disc))
        with np.errstate(divide="ignore", invalid="ignore"):
            r1, r2_ = q / a, np.where(q != 0, C / q, -np.inf)
        return np.maximum(np.maximum(r1, r2_), 1e-10)

    p = quadratic(c, a, n, s2 + r2)
    x = 1.0 + (p - 1.0) * s2 / (s2 + r2)
    y = 1.0 + (p - 1.0) * r2 / (s2 + r2)
    for _ in range(30):
        lam = c + a * x * y
        w = 1.0 - n / lam
        q = n / (lam * lam)
        fx = w * a * y + (x - 1.0) / s2
        fy = w * a * x + (y - 1.0) / r2
        hxx = q * a * a * y * y + 1.0 / s2
        hyy = q * a * a * x * x + 1.0 / r2
        hxy = q * a * a * x * y + w * a
        det = hxx * hyy - hxy * hxy
        dx = (hyy * fx - hxy * fy) / det
        dy = (hxx * fy - hxy * fx) / det
        step = 1.0
        for _ in range(30):
            nx, ny = x - step * dx, y - step * dy
            if np.all(c + a * nx * ny > 0):
                break
            step *= 0.5
        x, y = np.maximum(nx, 1e-10), ny
        if max(np.max(np.abs(dx)), np.max(np.abs(dy))) * step < 1e-12:
            break
    return x * y, float(np.sum((x - 1.0) ** 2 / (2 * s2) + (y - 1.0) ** 2 / (2 * r2))), x, quadratic


@pytest.mark.parametrize("bins", [1, 5, 20, 40, 150])
def test_compiled_profiling_is_bit_identical_to_numpy(bins):
    """The compiled per-bin profiling (staterror and generator factor together, and the closed-form quadratic)
    gives exactly what the numpy expressions give, including data far from the expectation (strong pulls) and
    bins with no events."""
    from analysis.statistics import _profile_two, _quadratic_gamma

    rng = np.random.default_rng(bins)
    for trial in range(20):
        a = rng.uniform(5, 5000, bins)
        c = rng.uniform(0, 50, bins) * (trial % 3 != 0)
        n = rng.poisson(a * rng.uniform(0.5, 1.6, bins)).astype(float)
        s2 = rng.uniform(0.005, 0.2, bins) ** 2
        r2 = np.maximum(rng.uniform(0, 0.3, bins), 1e-12) ** 2
        ref_gamma, ref_constraint, ref_x, quadratic = _profile_two_numpy(c, a, n, s2, r2)
        gamma, constraint, x = _profile_two(c, a, n, s2, r2)
        assert np.array_equal(gamma, ref_gamma) and np.array_equal(x, ref_x) and constraint == ref_constraint
        assert np.array_equal(_quadratic_gamma(c, a, n, s2), quadratic(c, a, n, s2))
