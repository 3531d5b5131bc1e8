import numpy as np
import pytest

from analysis.features import (
    FEATURES,
    JET_MASS_FEATURES,
    JET_MASSES,
    MASS_DERIVED_INPUTS,
    btag_levels,
    compute_features,
    derivations,
    neutrino_pz,
)


def test_feature_list_matches_higgs_layout():
    assert len(FEATURES) == 28 and len(set(FEATURES)) == 28
    assert FEATURES[:5] == ["lepton_pT", "lepton_eta", "lepton_phi", "missing_energy_magnitude",
                            "missing_energy_phi"]
    assert FEATURES[21:] == ["m_jj", "m_jjj", "m_lv", "m_jlv", "m_bb", "m_wbb", "m_wwbb"]


def test_neutrino_pz_solves_w_mass():
    rng = np.random.default_rng(0)
    n = 1000
    lpt, leta, lphi = rng.uniform(20, 200, n), rng.normal(0, 1, n), rng.uniform(-np.pi, np.pi, n)
    lx, ly, lz = lpt * np.cos(lphi), lpt * np.sin(lphi), lpt * np.sinh(leta)
    le = np.sqrt(lx**2 + ly**2 + lz**2)
    # a real W decay: build neutrinos with m(l nu) = 80.38 by construction via small MET
    mx, my = rng.normal(0, 40, n), rng.normal(0, 40, n)
    pz = neutrino_pz(lx, ly, lz, le, mx, my)
    ne = np.sqrt(mx**2 + my**2 + pz**2)
    m2 = (le + ne) ** 2 - (lx + mx) ** 2 - (ly + my) ** 2 - (lz + pz) ** 2
    mt2 = 2 * (lpt * np.hypot(mx, my) - lx * mx - ly * my)
    real = mt2 < 80.38**2  # a real solution exists when the transverse mass is below m_W
    np.testing.assert_allclose(np.sqrt(m2[real]), 80.38, rtol=1e-6)
    assert np.all(np.sqrt(np.maximum(m2[~real], 0)) >= 80.38 - 1e-6)


def test_btag_levels():
    np.testing.assert_array_equal(btag_levels(np.array([0.1, 0.3, 0.8]), [0.2783, 0.71]), [0, 1, 2])


def test_jet_assignment_on_a_constructed_event():
    # two b jets (high score) forming m_bb = 125 and two light jets; lepton and MET
    jets = {"pt": np.array([[120.0, 90.0, 60.0, 40.0]]), "eta": np.array([[0.1, -0.3, 0.5, 1.0]]),
            "phi": np.array([[0.0, 2.0, -2.0, 1.0]]), "mass": np.array([[10.0, 8.0, 6.0, 5.0]]),
            "btag": np.array([[0.05, 0.9, 0.1, 0.95]])}
    f = compute_features({"pt": np.array([50.0]), "eta": np.array([0.2]), "phi": np.array([-1.0])},
                         {"pt": np.array([40.0]), "phi": np.array([2.5])}, jets, [0.2783, 0.71])
    assert [f[f"jet{i}_btag"][0] for i in range(1, 5)] == [0, 2, 0, 2]
    # m_bb is the mass of jets 2 and 4 (the b candidates), m_jj that of jets 1 and 3
    def mass(i, j):
        pt, eta, phi, m = (jets[k][0, [i, j]] for k in ("pt", "eta", "phi", "mass"))
        e = np.sqrt((pt * np.cosh(eta)) ** 2 + m**2)
        return np.sqrt(e.sum() ** 2 - (pt * np.cos(phi)).sum() ** 2 - (pt * np.sin(phi)).sum() ** 2
                       - (pt * np.sinh(eta)).sum() ** 2)
    assert f["m_bb"][0] == pytest.approx(mass(1, 3), rel=1e-5)
    assert f["m_jj"][0] == pytest.approx(mass(0, 2), rel=1e-5)
    assert f["m_wwbb"][0] > f["m_wbb"][0] > f["m_bb"][0]
    assert all(v.dtype == np.float32 for v in f.values())


def test_jet_masses_derived_from_objects_agree_with_the_skim(skimmed):
    """The six jet-dependent masses, recomputed from the stored objects (jets with masses and b-tag scores,
    lepton, MET) by the derivations a generator uses, reproduce the skim's values to 1e-4 (float32 inputs, massless lepton); with the
    jets' scores permuted, the roles change and so do the masses (the derivation uses its inputs)."""
    cols, _ = skimmed["background"]
    assert all(m in cols for m in JET_MASSES) and np.all(np.stack([cols[m] for m in JET_MASSES]) >= 0)
    d = derivations()
    for name in JET_MASS_FEATURES:
        inputs, fn = d[name]
        assert list(inputs) == MASS_DERIVED_INPUTS
        np.testing.assert_allclose(fn(*(cols[i] for i in inputs)), cols[name], rtol=1e-4, atol=1e-3)
    swapped = dict(cols, jet1_btag_score=cols["jet4_btag_score"], jet4_btag_score=cols["jet1_btag_score"])
    inputs, fn = d["m_bb"]
    assert np.mean(np.abs(fn(*(swapped[i] for i in inputs)) - cols["m_bb"]) > 1.0) > 0.2
