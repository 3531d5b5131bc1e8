"""The physics of the neutrino regression that does not depend on a model: baseline, metrics, assignment."""

import numpy as np
import pytest

from analysis.features import M_W
from analysis.neutrino import (
    assignment_efficiency,
    assignment_sigmas,
    chi2_assignment,
    lepton_p4,
    neutrino_p4,
    rank_calibration,
    regression_metrics,
    true_neutrino,
    true_roles,
    w_mass_neutrino,
)


@pytest.fixture(scope="module")
def objects(skimmed):
    cols, _ = skimmed["background"]
    return {k: v for k, v in cols.items() if k.startswith(("obj_", "truth_"))}


def _mass(p4):
    return np.sqrt(np.maximum(p4[..., 0] ** 2 - (p4[..., 1:] ** 2).sum(axis=-1), 0.0))


def test_w_mass_baseline_and_its_resolution(objects):
    """The W-mass neutrino puts m(l nu) at m_W where the constraint has a real root, and its pz resolution is
    tens of GeV (the two-fold ambiguity and the MET resolution): the baseline a regression must beat. The true
    neutrino scores zero bias and resolution."""
    nu_w, nu_t = w_mass_neutrino(objects), true_neutrino(objects)
    m = _mass(lepton_p4(objects) + neutrino_p4(nu_w))
    assert np.mean(np.abs(m - M_W) < 0.5) > 0.6
    base = regression_metrics(nu_w, nu_t)
    assert 20.0 < base["pz"]["resolution"] < 150.0 and abs(base["pz"]["bias"]) < 10.0
    assert 0.2 < base["eta"]["resolution"] < 1.5
    ceiling = regression_metrics(nu_t, nu_t)
    assert ceiling["pz"]["resolution"] == 0.0 and ceiling["eta"]["bias"] == 0.0


def test_chi2_assignment_finds_the_leptonic_b(objects):
    """With sigmas from the true assignment, the chi2 assignment picks the right leptonic b far more often than
    chance (1/n_jets), at every multiplicity with events; with the true neutrino at least as often as with the
    W-mass one (the truth is the ceiling); and less often with more jets (more wrong combinations)."""
    roles = true_roles(objects)
    both = (roles[:, 0] >= 0) & (roles[:, 1] >= 0)
    assert np.mean(roles[:, 0] >= 0) > 0.6 and np.all(roles[both, 0] != roles[both, 1])
    rows = np.arange(3000)
    sub = {k: v[rows] for k, v in objects.items()}
    result = {}
    for name, nu in (("w_mass", w_mass_neutrino(sub)), ("truth", true_neutrino(sub))):
        sigmas = assignment_sigmas(objects, w_mass_neutrino(objects) if name == "w_mass" else true_neutrino(objects))
        assert np.all((sigmas > 5) & (sigmas < 80)), sigmas
        result[name] = assignment_efficiency(sub, chi2_assignment(sub, nu, sigmas))
    for k, row in result["w_mass"].items():
        if row["events"] >= 100:
            assert row["correct_b_lep"] > 1.5 / (int(k.strip(">=")) if k[0] != ">" else 9), (k, row)
    assert result["w_mass"]["4"]["correct_b_lep"] > result["w_mass"]["6"]["correct_b_lep"]
    both = [k for k in result["truth"] if result["truth"][k]["events"] >= 300]
    total = lambda name: sum(result[name][k]["correct_b_lep"] * result[name][k]["events"] for k in both)  # noqa: E731
    assert total("truth") >= total("w_mass")


def test_rank_calibration_tells_calibrated_from_overconfident():
    rng = np.random.default_rng(1)
    mu = rng.normal(0, 3, 4000)
    truth = mu + rng.normal(0, 1, 4000)
    good = mu[:, None] + rng.normal(0, 1, (4000, 256))
    narrow = mu[:, None] + rng.normal(0, 0.5, (4000, 256))
    cal, over = rank_calibration(good, truth), rank_calibration(narrow, truth)
    assert cal["ks"] < 0.03 and abs(cal["coverage68"] - 0.68) < 0.03 and abs(cal["coverage95"] - 0.95) < 0.02
    assert over["ks"] > 0.1 and over["coverage68"] < 0.5


def test_context_and_target_frames(objects):
    """The context is invariant under a common rotation of all azimuths (it lives in the lepton's frame), padded
    jet slots are masked, and the target frame round-trips."""
    from analysis.neutrino import (OBJECT_FEATURES, from_lepton_frame, regression_context, to_lepton_frame)

    feats, mask, event = regression_context(objects)
    n = len(objects["obj_lepton_pt"])
    assert feats.shape == (n, 12, len(OBJECT_FEATURES)) and mask.shape == (n, 12) and event.shape == (n, 2)
    np.testing.assert_array_equal(mask[:, 2:].sum(axis=1), np.minimum(objects["obj_n_jets"], 10))
    assert np.all(mask[:, :2]) and np.all(feats[~mask] == 0)
    turned = dict(objects)
    for k in ("obj_lepton_phi", "obj_met_phi", "obj_jet_phi", "truth_nu_phi"):
        turned[k] = objects[k] + 0.7
    np.testing.assert_allclose(regression_context(turned)[0], feats, atol=2e-5)
    nu = true_neutrino(objects)
    np.testing.assert_allclose(to_lepton_frame(true_neutrino(turned), turned), to_lepton_frame(nu, objects),
                               atol=1e-3)
    np.testing.assert_allclose(from_lepton_frame(to_lepton_frame(nu, objects), objects), nu, atol=1e-6)


def test_conditional_fit_samples_and_mode(objects):
    """The generic conditional fit (registry model behind a deep-sets embedding, the one training loop) trains
    on the neutrino target, samples S draws per event with their log-densities, and the mode is the draw of
    highest density."""
    from analysis.neutrino import (EVENT_FEATURES, OBJECT_FEATURES, TARGETS, mode_of_samples, regression_context,
                                   target_table, to_lepton_frame)
    from models.fit import fit_conditional, sample_posterior
    from models.training import TrainSettings

    rows = {"train": slice(0, 3000), "validation": slice(3000, 3600), "test": slice(3600, 3800)}
    part = {q: {k: v[r] for k, v in objects.items()} for q, r in rows.items()}
    targets = {q: to_lepton_frame(true_neutrino(part[q]), part[q]) for q in part}
    contexts = {q: regression_context(part[q]) for q in part}
    fit = fit_conditional("made_mog", {"components": 3, "hidden_features": [32, 32]}, targets, contexts, TARGETS,
                          target_table(), TrainSettings(epochs=3, batch_size=256, seed=1),
                          {"kind": "deep_sets", "object_features": len(OBJECT_FEATURES),
                           "event_features": len(EVENT_FEATURES), "out_features": 8, "hidden_features": [16]})
    assert fit.preprocessor.kinds == ["standard"] * 3 and len(fit.result.history) == 3
    draws, logp = sample_posterior(fit, contexts["test"], 16, seed=3)
    assert draws.shape == (16, 200, 3) and logp.shape == (16, 200) and np.all(np.isfinite(logp))
    mode = mode_of_samples(draws, logp)
    np.testing.assert_array_equal(mode[5], draws[np.argmax(logp[:, 5]), 5])
