"""The unfolding's physics (analysis.unfolding): the hard process read from the truth record, the exact and
invertible parametrisation, the physics it exposes (W helicity), and the measures (closure, calibration, mass
shift, prior reweighting, IBU) on cases whose answer is known."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from analysis import unfolding as unf
from analysis.generator.processes import generate_ttbar


@pytest.fixture(scope="module")
def partons(quickstart):
    truth = generate_ttbar(np.random.default_rng(5), 20_000, quickstart.physics)
    pdg = np.where(truth.valid, truth.pdg_id, 0)
    mother = np.where(truth.valid, truth.mother, -1)
    found, ok = unf.ttbar_partons(pdg, mother, truth.p4)
    return truth, found, ok


def test_hard_process_found_by_ids_and_mothers(partons):
    truth, found, ok = partons
    assert ok.all()
    # the generator's layout: 0 t(lep), 1 t(had), 2 W(lep), 3 b(lep), 4 W(had), 5 b(had), 6 lepton, 7 nu, 8 d, 9 u
    for role, col in (("top_lep", 0), ("top_had", 1), ("w_lep", 2), ("b_lep", 3), ("w_had", 4), ("b_had", 5),
                      ("lepton", 6), ("neutrino", 7), ("q1", 8), ("q2", 9)):
        np.testing.assert_allclose(found[role], truth.p4[:, col], rtol=1e-12, atol=1e-9)


def test_record_order_does_not_matter_and_incomplete_events_are_flagged(partons):
    truth, found, _ = partons
    n = 200
    pdg = np.where(truth.valid, truth.pdg_id, 0)[:n]
    mother = np.where(truth.valid, truth.mother, -1)[:n]
    perm = np.random.default_rng(1).permutation(pdg.shape[1])  # shuffle the record, remap the mother indices
    inverse = np.argsort(perm)
    m2 = mother[:, perm]
    m2 = np.where(m2 >= 0, inverse[np.maximum(m2, 0)], -1)
    again, ok = unf.ttbar_partons(pdg[:, perm], m2, truth.p4[:n, perm])
    assert ok.all()
    np.testing.assert_allclose(again["q2"], found["q2"][:n])
    pdg_broken = pdg.copy()
    pdg_broken[:10, 6] = 0  # no lepton: not a single-lepton ttbar event
    _, ok = unf.ttbar_partons(pdg_broken, mother, truth.p4[:n])
    assert not ok[:10].any() and ok[10:].all()


def test_parametrisation_is_exact_and_invertible(partons, quickstart):
    _, found, _ = partons
    lphi = np.random.default_rng(2).uniform(-np.pi, np.pi, len(found["top_had"]))
    params = unf.parametrise(found, lphi)
    assert params.shape == (len(lphi), len(unf.TARGETS))
    back = unf.partons_from(params, lphi, quickstart.physics.b_mass)
    for role in ("top_had", "top_lep", "w_had", "w_lep", "b_had", "b_lep"):
        np.testing.assert_allclose(back[role], found[role], rtol=1e-9, atol=1e-7)
    for role in ("lepton", "neutrino"):  # massless in the parametrisation; a muon weighs 0.106 GeV
        np.testing.assert_allclose(back[role], found[role], atol=0.01)
    # the W's quarks: q1 is the forward one, so compare as an unordered pair (charm quarks weigh 1.5 GeV)
    same = np.abs(back["q1"] - found["q1"]).max(axis=1) < 2.0
    swapped = np.abs(back["q1"] - found["q2"]).max(axis=1) < 2.0
    assert np.all(same | swapped) and 0.3 < same.mean() < 0.7
    np.testing.assert_allclose(back["q1"] + back["q2"], found["w_had"], atol=1e-7)
    # every combination of values inside the ranges gives kinematically possible partons
    rng = np.random.default_rng(3)
    shuffled = np.stack([rng.permutation(params[:, i]) for i in range(params.shape[1])], axis=1)
    p = unf.partons_from(shuffled, lphi)
    assert np.isfinite(np.stack(list(p.values()))).all()
    assert np.all(unf.mass(p["top_had"] + p["top_lep"]) >= unf.mass(p["top_had"]) + unf.mass(p["top_lep"]) - 1e-6)


def test_helicity_angle_carries_the_configured_w_polarisation(quickstart):
    """The lepton's cos(theta*) is the W helicity angle: its distribution is 3/4 F0 (1 - c^2) + 3/8 FL (1 - c)^2
    + 3/8 FR (1 + c)^2, so its mean is (FR - FL) / 2 and a fit gives back the fractions the generator used."""
    for f0, fl in ((0.687, 0.311), (0.3, 0.7)):
        phys = dataclasses.replace(quickstart.physics, w_helicity=(f0, fl, 1 - f0 - fl))
        truth = generate_ttbar(np.random.default_rng(9), 40_000, phys)
        found, _ = unf.ttbar_partons(np.where(truth.valid, truth.pdg_id, 0), np.where(truth.valid, truth.mother, -1),
                                     truth.p4)
        c = unf.parametrise(found, np.zeros(len(truth.p4)))[:, unf.TARGETS.index("lep_cos")]
        assert np.mean(c) == pytest.approx((1 - f0 - fl - fl) / 2, abs=0.01)
        # second moment: <c^2> = F0/5 + 2/5 (FL + FR)
        assert np.mean(c**2) == pytest.approx(f0 / 5 + 0.4 * (1 - f0), abs=0.01)


def test_top_mass_line_shape_becomes_gaussian_in_the_flow_space(partons):
    from models.preprocessing import Preprocessor

    _, found, _ = partons
    params = unf.parametrise(found, np.zeros(len(found["top_had"])))
    prep = Preprocessor(list(unf.TARGETS), table=unf.target_table()).fit(params, np.random.default_rng(0))
    z = prep.forward(params)
    i = unf.TARGETS.index("top_had_m")
    from scipy import stats

    assert stats.kstest(z[:, i], "norm").statistic < 0.02  # a Breit-Wigner spike becomes a unit Gaussian
    back = prep.inverse(z)
    assert np.quantile(np.abs(back[:, i] - params[:, i]), 0.99) < 0.5


def test_closure_and_calibration_measures_tell_right_from_wrong():
    rng = np.random.default_rng(0)
    n = 20_000
    mu = rng.normal(0, 1, n)  # per-event posterior N(mu, 1); the truth drawn from it (calibrated) or not
    truth = mu + rng.normal(0, 1, n)
    draws = mu[None, :, None] + rng.normal(0, 1, (200, n, 1))
    good = unf.calibration(draws, truth[:, None], ["x"])["x"]
    assert good["ks"] < 0.02 and abs(good["coverage68"] - 0.68) < 0.015 and abs(good["coverage95"] - 0.95) < 0.01
    narrow = unf.calibration(mu[None, :, None] + 0.5 * rng.normal(0, 1, (200, n, 1)), truth[:, None], ["x"])["x"]
    assert narrow["ks"] > 0.1 and narrow["coverage68"] < 0.45
    edges = unf.edges_of(truth, 40)
    assert unf.closure(draws[0, :, 0], truth, edges)["chi2_ndf"] < 1.5
    biased = unf.closure(draws[0, :, 0] + 0.2, truth, edges)
    assert biased["chi2_ndf"] > 2 and biased["max_ratio_deviation"] > 0.05
    # several draws per event without weights: each counts 1 / draws, the same closure as with explicit weights
    two = np.concatenate([draws[0, :, 0], draws[1, :, 0]])
    assert unf.closure(two, truth, edges)["chi2_ndf"] == pytest.approx(
        unf.closure(two, truth, edges, np.full(len(two), 0.5))["chi2_ndf"])
    assert unf.closure(two, truth, edges)["chi2_ndf"] < 1.5


def test_mass_shift_and_prior_reweighting():
    rng = np.random.default_rng(1)
    def estimate(center):
        m = center + rng.standard_cauchy((2, 25_000)) * 0.7  # two draws per event
        return unf.top_mass_estimate(m, center + rng.standard_cauchy((2, 25_000)) * 0.7)

    nominal = {"truth": estimate(172.5), "unfolded": estimate(172.5)}
    shifted = {1.0: {"truth": estimate(173.5), "unfolded": estimate(172.6)}}
    r = unf.mass_shift_test(nominal, shifted)["+1"]
    assert r["true_shift"] == pytest.approx(1.0, abs=0.05)
    assert r["bias"] == pytest.approx(-0.9, abs=0.1)  # the prior keeps the unfolded mass near the nominal
    # reweighting the training prior towards an unfolded distribution shifted by +1 moves its median by +1
    train = 172.5 + rng.standard_cauchy(200_000) * 0.7
    target = 173.5 + rng.standard_cauchy(200_000) * 0.7
    edges = np.linspace(152, 193, 201)
    w = unf.prior_weights((train, np.full_like(train, 100.0)), (target, np.full_like(target, 100.0)), edges)
    coarse = np.linspace(168, 179, 12)
    weighted = np.histogram(train, coarse, weights=w)[0]
    wanted = np.histogram(target, coarse)[0]
    ratio = (weighted / weighted.sum()) / (wanted / wanted.sum())
    assert np.all(np.abs(ratio - 1) < 0.05)  # the training prior now looks like the unfolded distribution
    assert np.all(np.abs(np.histogram(train, coarse)[0] / weighted - 1)[[0, -1]] > 0.1)  # and no longer like itself


def test_ibu_unfolds_a_smeared_spectrum():
    rng = np.random.default_rng(2)
    truth = rng.exponential(100, 200_000) + 300
    reco = truth * rng.normal(1, 0.1, len(truth))
    edges = np.linspace(300, 800, 21)
    reco_edges = np.quantile(reco[:100_000], np.linspace(0.005, 0.995, 21))
    data_truth = rng.exponential(100, 50_000) + 300
    data_reco = data_truth * rng.normal(1, 0.1, len(data_truth))
    out = unf.ibu_unfold(data_reco, reco[:100_000], truth[:100_000], edges, reco_edges, iterations=4)
    t = unf.response(data_truth, data_truth, edges, edges).diagonal()
    assert np.all(out["stat_err"] > 0.3 * np.sqrt(t)) and np.all(out["stat_err"] < 3 * np.sqrt(t))
    smeared = np.histogram(np.clip(data_reco, edges[0], edges[-1] - 1e-9), edges)[0]
    assert np.abs(out["unfolded"] - t).sum() < 0.5 * np.abs(smeared - t).sum()  # better than no unfolding


def test_configuration_of_the_unfolding_is_validated():
    from analysis.config import ConfigError, config_from_dict
    from tests.conftest import tiny_config_dict

    cfg = config_from_dict(tiny_config_dict(unfolding={"enabled": True, "train_factor": 2, "mass_shifts": [-1.5, 1]}))
    samples = cfg.unfolding_samples
    assert set(samples) == {"background_unfolding", "background_unfolding_mt_m1p5", "background_unfolding_mt_p1"}
    assert samples["background_unfolding"].n_files == 2 and samples["background_unfolding_mt_m1p5"].top_mass_shift == -1.5
    assert not config_from_dict(tiny_config_dict()).unfolding_samples  # off by default
    bad = [({"unfolding": {"enabled": True, "model": "nope"}}, "unfolding.model"),
           ({"unfolding": {"enabled": True, "mass_shifts": [0.0]}}, "unfolding.mass_shifts"),
           ({"unfolding": {"enabled": True, "samples": 2}}, "unfolding.samples"),
           ({"unfolding": {"enabled": "yes"}}, "unfolding.enabled")]
    for extra, key in bad:
        with pytest.raises(ConfigError, match=key):
            config_from_dict(tiny_config_dict(**extra))
    d = tiny_config_dict(unfolding={"enabled": True})
    d["samples"]["background"]["process"] = "heavy_higgs"
    with pytest.raises(ConfigError, match="needs a simulated ttbar background sample"):
        config_from_dict(d)
    d = tiny_config_dict()
    d["samples"]["my_unfolding_x"] = d["samples"].pop("signal")
    with pytest.raises(ConfigError, match="reserved"):
        config_from_dict(d)
    d = tiny_config_dict()
    d["samples"]["signal"]["top_mass_shift"] = 20.0
    with pytest.raises(ConfigError, match="top_mass_shift"):
        config_from_dict(d)
    with pytest.raises(ConfigError, match="steps of 0.01"):
        config_from_dict(tiny_config_dict(unfolding={"enabled": True, "mass_shifts": [1e-5]}))
