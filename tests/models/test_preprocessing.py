import numpy as np
import pytest
import torch
from scipy import stats

from analysis.features import (
    ANGLE_FEATURES,
    BTAG_FEATURES,
    BTAG_SCORES,
    FEATURES,
    JET_MASS_FEATURES,
    JET_MASSES,
    btag_levels,
    derivations,
)
from analysis.partition import partition_indices
from analysis.config import PartitionConfig
from analysis.readers import read_higgs_csv
from models.features import Feature, FeatureTable
from models.fit import generator_columns
from models.preprocessing import Preprocessor, PreprocessingError, feature_kind


def test_feature_kinds():
    assert feature_kind("jet2_btag") == "discrete" and feature_kind("jet2_phi") == "angle"
    assert feature_kind("lepton_eta") == "bounded" and feature_kind("m_wwbb") == "positive"
    assert [feature_kind(f) for f in FEATURES].count("positive") == 13


def test_roundtrip_on_real_higgs_data(higgs_sample):
    _, x, _, _ = read_higgs_csv(higgs_sample)
    x = x.astype(np.float64)
    p = Preprocessor(FEATURES).fit(x, np.random.default_rng(1))
    z = p.forward(x, np.random.default_rng(2))
    assert z.shape == (7000, 28) and np.all(np.isfinite(z))
    np.testing.assert_allclose(p.inverse(z), x, rtol=1e-6, atol=1e-6)  # float32 data
    # discrete b tags come back on their exact levels
    for f in BTAG_FEATURES:
        i = FEATURES.index(f)
        assert set(np.unique(p.inverse(z)[:, i])) == set(np.unique(x[:, i]))


def test_roundtrip_with_derived_mass_on_generated_events(background_partitions):
    train = background_partitions["train"]
    p = Preprocessor(FEATURES, derived=["m_lv"]).fit(train, np.random.default_rng(1))
    z = p.forward(train, np.random.default_rng(2))
    assert z.shape == (len(train), 27) and p.flow_features == 27
    np.testing.assert_allclose(p.inverse(z), train, rtol=1e-4, atol=1e-4)


def test_standardised_and_gaussianised(background_partitions):
    train = background_partitions["train"]
    p = Preprocessor(FEATURES).fit(train, np.random.default_rng(1))
    z = p.forward(train, np.random.default_rng(1))
    np.testing.assert_allclose(z.mean(axis=0), 0.0, atol=0.02)  # up to the dequantisation noise
    np.testing.assert_allclose(z.std(axis=0), 1.0, atol=0.02)
    assert np.abs(z).max() < 8.0  # no heavy tails left for the flow to extrapolate


def test_inverse_of_any_point_is_physical(background_partitions):
    train = background_partitions["train"]
    p = Preprocessor(FEATURES, derived=["m_lv"]).fit(train, np.random.default_rng(1))
    x = p.inverse(np.random.default_rng(3).normal(0.0, 3.0, (20_000, 27)))
    for i, f in enumerate(FEATURES):
        kind = feature_kind(f)
        if kind == "positive":
            assert np.all(x[:, i] > 0), f
        elif kind == "angle":
            assert np.all(np.abs(x[:, i]) <= np.pi), f
        elif kind == "discrete":
            assert set(np.unique(x[:, i])) <= set(np.unique(train[:, i])), f
        else:
            assert np.all(np.abs(x[:, i]) <= np.abs(train[:, i]).max() * 1.01), f
    assert np.all(x[:, FEATURES.index("m_lv")] >= 80.38 - 1e-4)


def test_angles_are_relative_to_the_lepton(background_partitions):
    train = background_partitions["train"]
    p = Preprocessor(FEATURES).fit(train)
    rotated = train.copy()
    for f in ANGLE_FEATURES:
        i = FEATURES.index(f)
        rotated[:, i] = (rotated[:, i] + 1.0 + np.pi) % (2 * np.pi) - np.pi
    z, zr = p.forward(train), p.forward(rotated)
    others = [FEATURES.index(f) for f in FEATURES if f != "lepton_phi"]
    np.testing.assert_allclose(z[:, others], zr[:, others], atol=1e-6)  # a global rotation moves one column


def test_relative_azimuths_are_cut_where_the_density_is_lowest(background_partitions):
    train = background_partitions["train"]
    p = Preprocessor(FEATURES).fit(train)
    lep = train[:, FEATURES.index("lepton_phi")]
    for f in ("jet1_phi", "missing_energy_phi"):
        i = FEATURES.index(f)
        rel = (train[:, i] - lep + np.pi) % (2 * np.pi) - np.pi
        counts, _ = np.histogram(rel, 36, (-np.pi, np.pi))
        near = np.histogram(rel, 36, (p.cuts[i] - 0.3, p.cuts[i] + 0.3))[0].sum() / 0.6
        assert near < np.median(counts) / (2 * np.pi / 36), f  # the cut sits in a sparse region
    # jets are isolated from the lepton and mostly back to back with it: the jet cut lies near 0
    assert abs(p.cuts[FEATURES.index("jet1_phi")]) < 0.5
    z = p.forward(train)
    for f in ("jet1_phi", "jet2_phi", "missing_energy_phi"):  # Gaussian-rank: no dense region in the tails
        assert stats.kstest(z[:, FEATURES.index(f)], "norm").statistic < 0.02, f


def test_btag_levels_derived_from_generated_scores(background_partitions, skimmed, quickstart):
    """With the continuous scores as inputs the flow space holds scores, not levels, and the inverse returns
    the levels those scores give at the working points."""
    cols, _ = skimmed["background"]
    columns = FEATURES + BTAG_SCORES
    x = np.stack([np.asarray(cols[c], np.float64) for c in columns], axis=1)[:5000]
    wps = [quickstart.detector.btag.working_points[w] for w in quickstart.skim.btag_feature_working_points]
    p = Preprocessor(columns, derived=["m_lv"] + BTAG_FEATURES, btag_working_points=wps).fit(x)
    assert p.flow_features == 28 - 1 - 4 + 4
    back = p.inverse(p.forward(x))
    np.testing.assert_allclose(back, x, rtol=1e-4, atol=1e-4)
    anywhere = p.inverse(np.random.default_rng(4).normal(0.0, 2.0, (5000, p.flow_features)))
    for level, score in zip(BTAG_FEATURES, BTAG_SCORES):
        np.testing.assert_array_equal(anywhere[:, columns.index(level)],
                                      btag_levels(anywhere[:, columns.index(score)], wps))
    with pytest.raises(PreprocessingError, match="cannot derive"):
        Preprocessor(columns, derived=BTAG_FEATURES)  # no working points: levels cannot be derived
    with pytest.raises(PreprocessingError, match="need the inputs"):
        Preprocessor(FEATURES, derived=BTAG_FEATURES, btag_working_points=wps)  # no scores among the features


def test_masses_derived_from_generated_objects(skimmed, quickstart):
    """With the jets' masses and scores modelled (``generator_columns(..., derive_masses=True)``), the flow space
    holds no high-level mass, the round trip is exact, and every mass of a generated event is the one its own
    objects give: generated events are exactly self-consistent."""
    cols, _ = skimmed["background"]
    wps = [quickstart.detector.btag.working_points[w] for w in quickstart.skim.btag_feature_working_points]
    columns, derived, wps = generator_columns(cols, "GeV", wps, derive_masses=True)
    assert set(derived) == {"m_lv", *BTAG_FEATURES, *JET_MASS_FEATURES}
    assert columns == FEATURES + BTAG_SCORES + JET_MASSES
    assert generator_columns(cols, "GeV", wps)[0] == FEATURES + BTAG_SCORES  # off by default
    x = np.stack([np.asarray(cols[c], np.float64) for c in columns], axis=1)[:5000]
    p = Preprocessor(columns, derived=derived, btag_working_points=wps).fit(x)
    assert p.flow_features == 28 - 1 - 4 - 6 + 4 + 4
    back = p.inverse(p.forward(x))
    np.testing.assert_allclose(back, x, rtol=1e-4, atol=2e-3)
    anywhere = p.inverse(np.random.default_rng(4).normal(0.0, 1.5, (5000, p.flow_features)))
    gen = dict(zip(columns, anywhere.T))
    for name in JET_MASS_FEATURES:
        inputs, fn = derivations()[name]
        np.testing.assert_array_equal(gen[name], fn(*(gen[i] for i in inputs)))
    assert np.all(anywhere[:, [columns.index(m) for m in JET_MASSES]] >= 0)


def test_state_survives_weights_only_load(tmp_path, background_partitions):
    train = background_partitions["train"]
    p = Preprocessor(FEATURES, derived=["m_lv"]).fit(train, np.random.default_rng(1))
    torch.save(p.state_dict(), tmp_path / "prep.pt")
    q = Preprocessor.from_state_dict(torch.load(tmp_path / "prep.pt", weights_only=True))
    z = p.forward(train[:1000], np.random.default_rng(5))
    np.testing.assert_array_equal(q.forward(train[:1000], np.random.default_rng(5)), z)
    np.testing.assert_array_equal(q.inverse(z), p.inverse(z))


def test_bad_training_data():
    x = np.abs(np.random.default_rng(0).normal(1, 0.3, (100, 28)))
    bad = x.copy()
    bad[5, FEATURES.index("jet1_pt")] = -3.0
    with pytest.raises(PreprocessingError, match="jet1_pt: expected positive values"):
        Preprocessor(FEATURES).fit(bad)
    nan = x.copy()
    nan[0, 0] = np.nan
    with pytest.raises(PreprocessingError, match="NaN"):
        Preprocessor(FEATURES).fit(nan)
    with pytest.raises(PreprocessingError, match="not a discrete b-tag level"):
        Preprocessor(FEATURES).fit(x)  # continuous values in the b-tag columns
    with pytest.raises(PreprocessingError, match="at least 2"):
        Preprocessor(FEATURES).fit(x[:1])
    with pytest.raises(PreprocessingError, match="cannot derive"):
        Preprocessor(FEATURES, derived=["jet1_eta"])
    with pytest.raises(PreprocessingError, match="need the inputs.*jet1_mass"):
        Preprocessor(FEATURES, derived=["m_bb"])  # derivable from the objects, but the jet masses are not there


def test_partitions_are_disjoint_and_reproducible():
    fr = PartitionConfig()
    a = partition_indices(10_000, fr, 42, "background")
    b = partition_indices(10_000, fr, 42, "background")
    c = partition_indices(10_000, fr, 42, "signal")
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["train"], c["train"])
    allidx = np.concatenate(list(a.values()))
    assert len(np.unique(allidx)) == 10_000 == len(allidx)
    assert len(a["train"]) == 5000 and len(a["validation"]) == 1000 and len(a["reference"]) == 4000


JET_PTS = ["jet1_pt", "jet2_pt", "jet3_pt", "jet4_pt"]


def test_ordered_jet_pts_roundtrip_and_stay_ordered(background_partitions):
    """Jet pTs modelled as the leading pT and ratios: exact round trip, and any point of flow space (here
    standard-normal noise, far from the data) comes back in decreasing order and inside the training range."""
    train = background_partitions["train"]
    p = Preprocessor(FEATURES, derived=["m_lv"], ordered=JET_PTS).fit(train, np.random.default_rng(1))
    z = p.forward(train, np.random.default_rng(2))
    assert np.all(np.isfinite(z))
    np.testing.assert_allclose(p.inverse(z), train, rtol=1e-4, atol=1e-4)
    noise = np.random.default_rng(3).normal(size=(20_000, p.flow_features)) * 1.5
    back = p.inverse(noise)
    idx = [FEATURES.index(f) for f in JET_PTS]
    pts = back[:, idx]
    assert np.all(np.diff(pts, axis=1) <= 0) and np.all(pts > 0)
    # without the ordering the same noise puts many events out of order
    q = Preprocessor(FEATURES, derived=["m_lv"]).fit(train, np.random.default_rng(1))
    assert np.mean(np.any(np.diff(q.inverse(noise)[:, idx], axis=1) > 0, axis=1)) > 0.3
    # the state survives saving
    r = Preprocessor.from_state_dict(p.state_dict())
    np.testing.assert_allclose(r.inverse(z), p.inverse(z))


def test_ordered_features_are_checked(background_partitions):
    train = background_partitions["train"].copy()
    with pytest.raises(PreprocessingError, match="ordered features must be"):
        Preprocessor(FEATURES, ordered=["jet1_pt", "jet1_eta"])
    i, j = FEATURES.index("jet1_pt"), FEATURES.index("jet2_pt")
    train[0, [i, j]] = train[0, [j, i]]  # one event out of order
    with pytest.raises(PreprocessingError, match="not positive and in decreasing order"):
        Preprocessor(FEATURES, ordered=JET_PTS).fit(train, np.random.default_rng(1))


def test_a_table_of_another_application():
    """The preprocessing is not tied to the HIGGS features: a neutrino-regression table (momentum components of
    kind ``real``, a pseudorapidity, a derived energy) fits, round-trips and derives with no HIGGS name."""
    rng = np.random.default_rng(3)
    px, py = rng.normal(0, 40, 5000), rng.normal(0, 40, 5000)
    eta = np.clip(rng.normal(0, 1.2, 5000), -4, 4)
    energy = lambda px_, py_, eta_: np.hypot(px_, py_) * np.cosh(eta_)  # noqa: E731
    table = FeatureTable([Feature("nu_px", "real", "GeV"), Feature("nu_py", "real", "GeV"),
                          Feature("nu_eta", "bounded"),
                          Feature("nu_e", "positive", "GeV", inputs=("nu_px", "nu_py", "nu_eta"), derive=energy)])
    x = np.stack([px, py, eta, energy(px, py, eta)], axis=1)
    names = ["nu_px", "nu_py", "nu_eta", "nu_e"]
    p = Preprocessor(names, reference_angle=None, derived=["nu_e"], table=table).fit(x)
    assert p.flow_features == 3 and p.kinds == ["real", "real", "bounded", "positive"]
    np.testing.assert_allclose(p.inverse(p.forward(x)), x, rtol=1e-6, atol=1e-2)
    q = Preprocessor.from_state_dict(p.state_dict(), table=table)
    np.testing.assert_array_equal(q.inverse(p.forward(x[:100])), p.inverse(p.forward(x[:100])))
    with pytest.raises(PreprocessingError, match="not in the feature table"):
        Preprocessor(["nu_pz"], reference_angle=None, table=table)
    with pytest.raises(ValueError, match="unknown kind"):
        Feature("nu_pz", "momentum")
    with pytest.raises(ValueError, match="needs both inputs and a function"):
        Feature("nu_e", "positive", inputs=("nu_px",))
    assert table["nu_px"].axis_label == "nu_px [GeV]"
