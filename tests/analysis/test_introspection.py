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
