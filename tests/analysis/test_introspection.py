"""The planted-defect test of Taylor-coefficient introspection (analysis.introspection): a defect planted in one
half of simulated events is named by the C2ST's largest coefficient; a pair defect only by a second-order one."""

import numpy as np
import pytest

from analysis.features import FEATURES
from analysis.introspection import Defect, defect_trial, plant_defect
from analysis.ntuple import feature_matrix


@pytest.fixture(scope="module")
def events(skimmed):
    cols, _ = skimmed["background"]
    return feature_matrix(cols)


def test_defects_change_what_they_say(events):
    rng = np.random.default_rng(0)
    names = list(FEATURES)
    x = events[:5000]
    bb, jj, eta = names.index("m_bb"), names.index("m_jj"), names.index("jet2_eta")
    scaled = plant_defect(x, names, Defect("scale", ("m_bb",), 0.02), rng)
    np.testing.assert_allclose(scaled[:, bb], 1.02 * x[:, bb])
    assert np.array_equal(np.delete(scaled, bb, 1), np.delete(x, bb, 1))
    shuffled = plant_defect(x, names, Defect("shuffle", ("jet2_eta",)), rng)
    assert np.array_equal(np.sort(shuffled[:, eta]), np.sort(x[:, eta])) and not np.array_equal(shuffled[:, eta], x[:, eta])
    pair = plant_defect(x, names, Defect("pair", ("m_jj", "m_bb"), 0.05), rng)
    ratio = pair[:, bb] / x[:, bb]
    above = x[:, jj] > np.median(x[:, jj])
    assert np.allclose(ratio[above], 1.05) and np.allclose(ratio[~above], 0.95)
    with pytest.raises(ValueError, match="unknown defect"):
        plant_defect(x, names, Defect("rotate", ("m_bb",)), rng)


@pytest.mark.parametrize("defect", [Defect("scale", ("m_bb",), 0.08), Defect("pair", ("m_jj", "m_bb"), 0.5)],
                         ids=["scale", "pair"])
def test_planted_defect_is_named(events, defect):
    """Strong defects on few events (the benchmark measures the 2-3 % ones over 20 seeds)."""
    r = defect_trial(events, FEATURES, defect, seed=1, n_per_class=4000, n_test=1500)
    assert r["found"], (r["top_first"], r["top_pair"], r["top_ranking"])
    if defect.kind == "scale":
        assert r["auc"] > 0.53 and r["permutation_found"]


def test_regression_coefficients_name_what_moves_the_posterior_mean():
    """y ~ N(2 x0, (0.2 + 0.5 |x1|)^2): a trained conditional flow's posterior mean moves with x0 (by about
    2 sd(x0) / sd(y) in standardised units), barely with x1 (which sets the width) and not with x2."""
    from analysis.introspection import regression_coefficients
    from models.features import Feature, FeatureTable
    from models.fit import fit_conditional
    from models.training import TrainSettings

    rng = np.random.default_rng(5)
    x = rng.normal(size=(6000, 3)).astype(np.float32)
    y = (2 * x[:, 0] + (0.2 + 0.5 * np.abs(x[:, 1])) * rng.normal(size=len(x)))[:, None]
    emb = {"kind": "mlp", "in_features": 3, "out_features": 8, "hidden_features": [32]}
    fit = fit_conditional("made_mog", {"components": 3, "hidden_features": [32, 32]},
                          {"train": y[:5000], "validation": y[5000:]}, {"train": x[:5000], "validation": x[5000:]},
                          ["y"], FeatureTable([Feature("y", "standard")]), TrainSettings(epochs=15, batch_size=256,
                                                                                         seed=2), emb)
    tc = regression_coefficients(fit.model, x[5000:], [(f"x{i}", 0, (i,)) for i in range(3)], seed=1)
    expected = 2 * x[5000:, 0].std() / y.std()
    assert tc.top(1) == ("x0",)
    assert abs(tc.first[0] - expected) < 0.15 * expected, (tc.first, expected)
    assert tc.first[1] < 0.2 * tc.first[0] and tc.first[2] < 0.2 * tc.first[0], tc.first
