"""Fidelity tests with stated power, on samples with known differences."""

import json

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score
from threadpoolctl import threadpool_limits

from analysis.features import BTAG_FEATURES, BTAG_SCORES, FEATURES, HIGH_LEVEL
from analysis.fidelity import (FEATURE_GROUPS, RELATIVE_AZIMUTHS, bootstrap_aucs, c2st_learning_curve,
                               fidelity_matrix, group_aucs, plot_learning_curves, plot_validity,
                               relative_azimuths, validity_comparison, validity_rates)

JETS = [f"jet{i}" for i in range(1, 5)]
WPS = [0.3, 0.7]


@pytest.fixture(autouse=True)
def one_thread():
    """Small fits: OpenMP threads only cost time, and on a busy 2-core machine (two xdist workers) they make the
    boosted-tree fits 10-40 times slower (measured: this file 98 s with threads, 8 s without)."""
    with threadpool_limits(1):
        yield


def correlated_gaussians(rng, n, d=28, rho=0.3):
    cov = np.full((d, d), rho) + (1 - rho) * np.eye(d)
    return rng.multivariate_normal(np.zeros(d), cov, n)


def synthetic_columns(rng, n, m_bb_scale=1.0, overlap_fraction=0.0):
    """A column dict shaped like the ntuples: pT-ordered jets spread in (eta, phi), b-tag levels derived from
    scores, masses from broad distributions (m_bb a peak at 120 GeV)."""
    c = {"lepton_pT": rng.exponential(40, n) + 25, "lepton_eta": rng.normal(0, 1.2, n),
         "lepton_phi": rng.uniform(-np.pi, np.pi, n), "missing_energy_magnitude": rng.exponential(50, n) + 1,
         "missing_energy_phi": rng.uniform(-np.pi, np.pi, n)}
    pts = -np.sort(-(rng.exponential(50, (n, 4)) + 25), axis=1)
    scores = rng.uniform(0, 1, (n, 4))
    for i, j in enumerate(JETS):
        c[f"{j}_pt"], c[f"{j}_eta"], c[f"{j}_phi"] = pts[:, i], rng.normal(0, 1.5, n), rng.uniform(-np.pi, np.pi, n)
        c[f"{j}_btag_score"] = scores[:, i]
        c[f"{j}_btag"] = (scores[:, i, None] > np.array(WPS)).sum(axis=1).astype(np.float32)
    for name in HIGH_LEVEL:
        c[name] = rng.lognormal(np.log(150), 0.4, n)
    c["m_bb"] = np.abs(rng.normal(120, 20, n)) * m_bb_scale
    if overlap_fraction:
        sel = rng.random(n) < overlap_fraction
        c["jet2_eta"] = np.where(sel, c["jet1_eta"] + 0.1, c["jet2_eta"])
        c["jet2_phi"] = np.where(sel, c["jet1_phi"], c["jet2_phi"])
    return c


# ---------------------------------------------------------------------------------------------- azimuths


def test_relative_azimuths_wrap_into_half_open_interval():
    rng = np.random.default_rng(0)
    n = 10_000
    cols = {"lepton_phi": rng.uniform(-np.pi, np.pi, n), "missing_energy_phi": rng.uniform(-np.pi, np.pi, n)}
    cols.update({f"{j}_phi": rng.uniform(-np.pi, np.pi, n) for j in JETS})
    # boundary cases: differences of exactly +pi, -pi, 2 pi, and across the wrap
    cols["lepton_phi"][:4] = [0.0, np.pi, 0.0, np.pi - 0.05]
    cols["jet1_phi"][:4] = [np.pi, 0.0, 2 * np.pi, -np.pi + 0.05]
    rel = relative_azimuths(cols)
    assert list(rel) == RELATIVE_AZIMUTHS
    for name, v in rel.items():
        assert np.all(v >= -np.pi) and np.all(v < np.pi), name
    src = {"missing_energy_dphi_lep": "missing_energy_phi", **{f"{j}_dphi_lep": f"{j}_phi" for j in JETS}}
    for name, col in src.items():
        expected = np.angle(np.exp(1j * (cols[col] - cols["lepton_phi"])))
        assert np.allclose(np.exp(1j * rel[name]), np.exp(1j * expected))
    assert rel["jet1_dphi_lep"][:4] == pytest.approx([-np.pi, -np.pi, 0.0, 0.1])


def test_fidelity_matrix_columns_and_groups():
    cols = synthetic_columns(np.random.default_rng(1), 100)
    x, names = fidelity_matrix(cols)
    assert x.shape == (100, 33) and names == FEATURES + RELATIVE_AZIMUTHS
    assert np.array_equal(x[:, names.index("m_bb")], cols["m_bb"])
    x, names = fidelity_matrix(cols, ["masses", "b tags"])
    assert names == HIGH_LEVEL + BTAG_FEATURES and x.shape == (100, 11)
    assert len(FEATURE_GROUPS["low-level kinematics"]) == 11
    with pytest.raises(ValueError, match="unknown feature group"):
        fidelity_matrix(cols, ["angles"])


# -------------------------------------------------------------------------------------------------- C2ST


def test_bootstrap_aucs_equal_weighted_roc_auc():
    rng = np.random.default_rng(2)
    sa, sb = np.round(rng.normal(0, 1, 3000), 1), np.round(rng.normal(0.2, 1, 2000), 1)  # many ties
    reps = bootstrap_aucs(sa, sb, 3, np.random.default_rng(9))
    g = np.random.default_rng(9)
    y = np.r_[np.zeros(3000), np.ones(2000)]
    for r in reps:
        w = np.r_[np.bincount(g.integers(0, 3000, 3000), minlength=3000),
                  np.bincount(g.integers(0, 2000, 2000), minlength=2000)]
        assert r == pytest.approx(roc_auc_score(y, np.r_[sa, sb], sample_weight=w), abs=1e-12)


def test_learning_curve_of_identical_distributions_stays_at_half():
    rng = np.random.default_rng(3)
    a, b = correlated_gaussians(rng, 8000), correlated_gaussians(rng, 8000)
    r = c2st_learning_curve(a, b, [500, 1000, 2000, 4000], test_size=4000, seed=1, n_boot=100)
    assert r["sizes"] == [500, 1000, 2000, 4000] and not r["clipped"]
    for auc, err, (lo, hi) in zip(r["auc"], r["auc_error"], r["auc_interval95"]):
        assert abs(auc - 0.5) < 3 * err
        assert lo < auc < hi and lo - 0.01 < 0.5 < hi + 0.01
        assert 0.004 < err < 0.01
    assert abs(r["slope_last"]) < 3 * r["slope_last_error"] + 0.01
    assert set(r["_scores"]) == {"a", "b"} and len(r["_scores"]["a"]) == 4000
    json.dumps({k: v for k, v in r.items() if k != "_scores"})


def test_learning_curve_detects_a_planted_shift_and_rises_with_training_size():
    rng = np.random.default_rng(4)
    a, b = correlated_gaussians(rng, 8000), correlated_gaussians(rng, 8000)
    b[:, 5] += 0.2  # one of 28 correlated features shifted by 0.2 sigma: optimal AUC 0.556
    r = c2st_learning_curve(a, b, [500, 1000, 2000, 4000], test_size=4000, seed=1, n_boot=100)
    assert r["auc"][-1] - 0.5 > 4 * r["auc_error"][-1]
    assert r["auc_interval95"][-1][0] > 0.5
    assert r["auc"][-1] > r["auc"][0]
    assert r["slope"] > 0


def test_iteration_limit_is_reported_and_training_draws_widen_the_error(monkeypatch):
    """A fit stopped by its iteration limit is flagged (its AUC a lower bound); further draws of the training
    events give a spread that enters the error."""
    from analysis import fidelity

    rng = np.random.default_rng(6)
    a, b = correlated_gaussians(rng, 9000), correlated_gaussians(rng, 9000)
    b[:, 3] = b[:, 3] + 0.4 * np.sign(b[:, 7])  # an interaction of two features
    free = c2st_learning_curve(a, b, [1000, 4000], test_size=4000, seed=2, n_boot=50, draws=2)
    assert free["converged"] == [True, True] and free["max_iter"] == fidelity.MAX_ITER["hgb"]
    assert len(free["draw_aucs"]) == 3 and free["draw_aucs"][0] == free["auc"][-1]
    assert 0 < free["draw_spread"] < 0.05
    half68 = (free["auc_interval68"][-1][1] - free["auc_interval68"][-1][0]) / 2
    assert free["auc_total_error"] == pytest.approx(np.hypot(half68, free["draw_spread"]))
    assert free["slope_last_total_error"] > free["slope_last_error"]  # the draws' noise widens the slope's error
    monkeypatch.setitem(fidelity.MAX_ITER, "hgb", 3)
    capped = c2st_learning_curve(a, b, [1000, 4000], test_size=4000, seed=2, n_boot=50)
    assert capped["converged"] == [False, False] and capped["n_iter"] == [3, 3]
    assert capped["draw_spread"] is None and capped["draw_aucs"] == [capped["auc"][-1]]


def test_learning_curve_clips_sizes_and_rejects_too_small_samples():
    rng = np.random.default_rng(5)
    a, b = rng.normal(size=(1600, 3)), rng.normal(size=(2000, 3))
    r = c2st_learning_curve(a, b, [200, 400, 800, 1600], test_size=600, n_boot=10, classifier="mlp")
    assert r["sizes"] == [200, 400, 800, 1000] and r["clipped"]
    assert r["requested_sizes"] == [200, 400, 800, 1600] and r["classifier"] == "mlp"
    with pytest.raises(ValueError, match="fewer than 2"):
        c2st_learning_curve(a, b, [1000, 2000], test_size=1000)
    with pytest.raises(ValueError, match="unknown classifier"):
        c2st_learning_curve(a, b, [100, 200], test_size=100, classifier="svm")


def test_group_aucs_locate_a_defect_in_the_masses():
    rng = np.random.default_rng(6)
    a_cols, b_cols = synthetic_columns(rng, 6000), synthetic_columns(rng, 6000, m_bb_scale=1.05)
    g = group_aucs(a_cols, b_cols, size=3000, test_size=3000, seed=2)
    assert list(g) == list(FEATURE_GROUPS)
    masses = g["masses"]
    assert masses["auc"] - 0.5 > 5 * masses["auc_error"]
    for name, res in g.items():
        if name != "masses":
            assert abs(res["auc"] - 0.5) < 3 * res["auc_error"], name
            assert res["auc"] < masses["auc"]


# ---------------------------------------------------------------------------------------------- validity


def hand_made_events():
    """Ten well-separated, ordered events; then 3 with jets out of pT order, 2 with jet2 on top of jet1, 1 with
    jet4 on the lepton across the phi wrap, 1 with MET = 0 and 1 with an inconsistent b-tag level."""
    n = 10
    c = {"lepton_pT": np.full(n, 50.0), "lepton_eta": np.zeros(n), "lepton_phi": np.full(n, np.pi - 0.05),
         "missing_energy_magnitude": np.full(n, 40.0), "missing_energy_phi": np.zeros(n)}
    for i, (pt, eta, phi) in enumerate([(100, 1.5, 0.0), (80, -1.5, 0.0), (60, 1.5, 2.0), (40, -1.5, 2.0)]):
        j = JETS[i]
        c[f"{j}_pt"], c[f"{j}_eta"], c[f"{j}_phi"] = np.full(n, float(pt)), np.full(n, eta), np.full(n, phi)
        c[f"{j}_btag_score"] = np.full(n, 0.5)
        c[f"{j}_btag"] = np.full(n, 1.0, dtype=np.float32)
    c["jet3_pt"][:3] = 90.0  # out of order
    c["jet2_eta"][3:5], c["jet2_phi"][3:5] = 1.6, 0.1  # Delta R(jet1, jet2) = 0.14
    c["jet4_eta"][5], c["jet4_phi"][5] = 0.0, -np.pi + 0.05  # Delta phi to the lepton 0.1 across the wrap
    c["missing_energy_magnitude"][6] = 0.0
    c["jet1_btag"][7] = 2.0
    return c


def test_validity_rates_count_hand_made_events_exactly():
    c = hand_made_events()
    r = validity_rates(c, btag_working_points=WPS)
    assert r == {"jets_pt_ordered": 0.7, "jet_lepton_dr_ok": 0.9, "jet_jet_dr_ok": 0.8, "pt_positive": 0.9,
                 "btag_consistent": 0.9}
    assert "btag_consistent" not in validity_rates(c)
    no_scores = {k: v for k, v in c.items() if k not in BTAG_SCORES}
    assert "btag_consistent" not in validity_rates(no_scores, btag_working_points=WPS)
    assert validity_rates(c, min_dr=0.1)["jet_jet_dr_ok"] == 1.0


def test_validity_comparison_flags_a_planted_overlap_only():
    rng = np.random.default_rng(7)
    sim, gen = synthetic_columns(rng, 20_000), synthetic_columns(rng, 20_000)
    same = validity_comparison(sim, gen, btag_working_points=WPS)
    assert set(same) == {"jets_pt_ordered", "jet_lepton_dr_ok", "jet_jet_dr_ok", "pt_positive", "btag_consistent"}
    assert all(v["consistent"] for v in same.values()), same
    assert same["jets_pt_ordered"]["significance"] == 0.0  # both exactly 1
    bad = validity_comparison(sim, synthetic_columns(rng, 20_000, overlap_fraction=0.05))
    jj = bad["jet_jet_dr_ok"]
    assert not jj["consistent"] and jj["significance"] < -3
    assert jj["difference"] == pytest.approx(-0.05 * jj["simulated"], abs=0.01)
    assert bad["jet_lepton_dr_ok"]["consistent"] and bad["jets_pt_ordered"]["consistent"]
    json.dumps(bad)


# ----------------------------------------------------------------------------------------------- figures


def test_plots_write_png(tmp_path):
    rng = np.random.default_rng(8)
    a, b = rng.normal(size=(1500, 3)), rng.normal(size=(1500, 3)) + [0.3, 0, 0]
    curves = {"shifted": c2st_learning_curve(a, b, [200, 500, 1000], test_size=500, n_boot=20),
              "same": c2st_learning_curve(a, rng.normal(size=(1500, 3)), [200, 500, 1000], test_size=500,
                                          n_boot=20)}
    written = plot_learning_curves(curves, tmp_path / "curves", title="test")
    assert {p.suffix for p in written} == {".png", ".pdf"} and all(p.stat().st_size > 0 for p in written)
    comp = validity_comparison(hand_made_events(), synthetic_columns(rng, 500), btag_working_points=WPS)
    written = plot_validity(comp, tmp_path / "validity.png", title="test")
    assert (tmp_path / "validity.png").stat().st_size > 0 and len(written) == 2
