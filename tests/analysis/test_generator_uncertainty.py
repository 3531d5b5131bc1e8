"""Generator uncertainty, pulls, spurious signal and amplification: tests with the power to fail."""

from __future__ import annotations

import numpy as np
import pytest

from analysis.generator_uncertainty import amplification, ensemble_pulls, inflation_factor, nonclosure, pull_summary, \
    replica_spread
from analysis.statistics import build_workspace, fit_signal_strength
from analysis.templates import make_template, scaled_weights

EDGES = np.linspace(0.5, 1.0, 11)
Y = 1.0e6  # expected background yield


def _scores(rng, n):
    """Background-like classifier scores: falling towards 1."""
    return rng.beta(1.5, 1.8, n)


def _template(rng, n, scale_top=1.0):
    x = _scores(rng, n)
    w = scaled_weights(n, Y)
    if scale_top != 1.0:  # a generator that under-populates the three most signal-like bins
        w = np.where(x >= EDGES[-4], w * scale_top, w)
    return make_template(x, w, EDGES)


def test_replicas_from_one_distribution_give_pulls_of_rms_one():
    """Replicas that differ from truth only by their own events: the spread equals their statistical noise, the
    subtracted generator uncertainty is about zero, and the pulls against an independent truth are unit
    Gaussian (RMS 1 within errors, coverage 68/95 %)."""
    rng = np.random.default_rng(1)
    values = []
    for trial in range(12):
        reps = {f"r{i}": _template(rng, 50_000) for i in range(6)}
        truth = _template(rng, 400_000)
        values.append(np.concatenate(list(ensemble_pulls({}, reps, truth).values())))
    s = pull_summary(np.concatenate(values))
    assert s["rms"] == pytest.approx(1.0, abs=3 * s["rms_error"] + 0.03)
    assert s["coverage68"] == pytest.approx(0.683, abs=3 * s["coverage68_error"])
    assert s["coverage95"] == pytest.approx(0.954, abs=3 * s["coverage95_error"])


def test_spread_measures_planted_replica_variation():
    """Replicas whose top bins vary by 8 % (on top of their own noise) give a generator uncertainty of 8 %
    there and about zero elsewhere."""
    rng = np.random.default_rng(2)
    reps = [_template(rng, 400_000, scale_top=1.0 + 0.08 * rng.standard_normal()) for _ in range(40)]
    sp = replica_spread(reps)
    assert np.median(sp.relative[-3:]) == pytest.approx(0.08, rel=0.3)
    assert np.all(sp.relative[:5] < 0.02)


def test_inflation_brings_under_covering_spread_to_rms_one():
    """All replicas share a 10 % bias of the top bins that their spread (about 3 %) cannot see: the raw pulls
    against truth are too wide, the measured inflation factor makes them RMS 1, and never scales down."""
    rng = np.random.default_rng(3)
    reps = {f"r{i}": _template(rng, 400_000, scale_top=0.9 + 0.03 * rng.standard_normal()) for i in range(6)}
    truth = _template(rng, 400_000)
    raw = np.concatenate(list(ensemble_pulls({}, reps, truth).values()))
    f = inflation_factor({}, reps, truth)
    fixed = np.concatenate(list(ensemble_pulls({}, reps, truth, f).values()))
    assert np.sqrt(np.mean(raw ** 2)) > 1.5
    assert f > 1.5
    assert np.sqrt(np.mean(fixed ** 2)) == pytest.approx(1.0, abs=1e-3)
    good = {f"r{i}": _template(rng, 400_000) for i in range(6)}
    assert inflation_factor({}, good, _template(rng, 2_000_000)) == pytest.approx(1.0, abs=0.3)


def _spurious(generated, truth, signal, delta=None):
    ws = build_workspace(signal.yields, generated.yields, generated.stat, 0.1, name="planted",
                         generator_uncertainty=delta, observations=truth.yields)
    fit = fit_signal_strength(ws)
    return fit.mu_hat / fit.error


def test_planted_bias_fails_spurious_signal_and_is_covered_by_matching_uncertainty():
    rng = np.random.default_rng(4)
    sig_x = 1.0 - 0.5 * rng.beta(1.0, 4.0, 50_000)  # signal peaks at high score
    signal = make_template(sig_x, np.full(len(sig_x), 2000.0 / len(sig_x)), EDGES)
    truth = _template(rng, 2_000_000)
    faithful = _template(rng, 1_000_000)
    biased = _template(rng, 1_000_000, scale_top=0.9)
    assert abs(_spurious(faithful, truth, signal)) < 3  # a faithful template: no spurious signal
    z = _spurious(biased, truth, signal)
    assert z > 3  # 10 % too little background where the signal is: a fake signal
    delta = np.where(EDGES[1:] > EDGES[-4], 0.1, 0.0) * biased.yields
    assert abs(_spurious(biased, truth, signal, delta)) < 1  # the matching uncertainty covers it


def test_amplification_of_a_simulated_template_is_its_size():
    """A template of M events with weights Y / M is worth M simulated events (within the estimate's errors)."""
    rng = np.random.default_rng(5)
    truth = _template(rng, 3_000_000)
    ms = []
    for _ in range(10):
        a = amplification(_template(rng, 50_000), truth, Y)
        ms.append(a["equivalent_events"])
    assert np.median(ms) == pytest.approx(50_000, rel=0.25)
    perfect = amplification(truth, truth, Y)  # no difference at all: only a lower bound
    assert perfect["lower_bound"] and perfect["equivalent_events"] > 1e6


def test_nonclosure_finds_a_smooth_bias_and_nothing_where_there_is_none():
    rng = np.random.default_rng(6)
    truth = _template(rng, 2_000_000)
    assert np.all(np.abs(nonclosure(_template(rng, 1_000_000), truth)) < 0.02)  # same distribution: ~nothing
    biased = _template(rng, 1_000_000, scale_top=0.88)
    nc = nonclosure(biased, truth)
    assert nc[-1] < -0.06 and abs(nc[0]) < 0.04  # the deficit where the signal is, little at low score
