"""The physics of the b-jet energy regression that does not depend on a model: the jets, target and context,
what the generator's semileptonic decays do to the response, and the measures of a correction."""

import numpy as np
import pytest

from analysis import bjet


@pytest.fixture(scope="module")
def samples(skimmed):
    out = {}
    for name, label in (("background", 0), ("signal", 1)):
        cols, _ = skimmed[name]
        out[name] = ({k: v for k, v in cols.items() if k.startswith(("obj_", "truth_"))}, label)
    return out


def test_b_jets_and_their_response(samples):
    """b jets are stored jets of b flavour matched to a b quark; a jet with a soft lepton lost the neutrino of
    the semileptonic decay, so its response pT_true/pT_reco lies well above one, and near one without."""
    objects, _ = samples["background"]
    event, slot = bjet.b_jets(objects)
    assert len(event) > 0.8 * len(objects["obj_n_jets"])  # ttbar: about two b jets per selected event
    assert np.all(slot < objects["obj_n_jets"][event])
    assert np.all(np.abs(objects["truth_jet_parton_pdgId"][event, slot]) == 5)
    r = bjet.response(objects, event, slot)
    ctx = bjet.jet_context(objects, event, slot)
    assert ctx.shape == (len(event), len(bjet.CONTEXT)) and np.all(np.isfinite(ctx))
    soft = (ctx[:, bjet.CONTEXT.index("n_muons")] + ctx[:, bjet.CONTEXT.index("n_electrons")]) > 0
    assert 0.1 < soft.mean() < 0.6
    # semileptonic decays: the neutrino takes Beta(2, 8) of the b momentum (mean 0.2) out of the jet
    assert np.median(r[soft]) > np.median(r[~soft]) + 0.1
    assert abs(np.median(r[~soft]) - 1.0) < 0.08
    # the MET of the event points along a semileptonic jet: its neutrino
    along = ctx[:, bjet.CONTEXT.index("met_along_jet")]
    assert np.mean(along[soft]) > np.mean(along[~soft])


def test_resolution_coverage_and_masses(samples):
    """The measures: the true response as the prediction has zero width and unit median; intervals that hold
    the truth cover it; the h -> bb peak of the signal and the hadronic top of ttbar are found near their
    masses, and correcting with the true response sharpens them."""
    preds = {"perfect": {}, "wide": {}}
    for s, (objects, _) in samples.items():
        r = bjet.response(objects, *bjet.b_jets(objects))
        preds["perfect"][s] = {"response": r, "q16": r - 1e-9, "q25": r - 1e-9, "q75": r + 1e-9, "q84": r + 1e-9}
        preds["wide"][s] = {"response": np.full(len(r), np.median(r)), "q16": r - 1, "q25": r - 1, "q75": r - 0.5,
                            "q84": r + 1}
    m = bjet.evaluate(samples, preds)
    assert m["resolution"]["perfect"]["all"]["resolution"] < 1e-9
    assert abs(m["resolution"]["perfect"]["all"]["median"] - 1) < 1e-9
    assert m["resolution"]["none"]["all"]["resolution"] > 0.08
    assert m["coverage"]["perfect"]["68"]["all"] == 1.0 and m["coverage"]["wide"]["50"]["all"] == 0.0
    assert "none" not in m["coverage"]
    hbb, top = m["masses"]["none"]["signal"], m["masses"]["none"]["background"]
    assert hbb["peak"] == "h -> bb" and 95 < hbb["median"] < 135
    assert top["peak"] == "hadronic top" and 150 < top["median"] < 185
    assert m["masses"]["perfect"]["signal"]["improvement_over_none"] > 0.1
    assert m["prior"]["perfect"]["slope+1"] == pytest.approx(1.0)


def test_weighted_quantiles_and_prior_closure():
    """The prior check reweights the true spectrum: a prediction that pulls every jet to the median response
    is biased once the spectrum changes (a softer one holds more jets of high true response: under-corrected), a
    perfect one is not."""
    rng = np.random.default_rng(3)
    pt = rng.exponential(60, 20000) + 20
    truth = 1 + 30 / pt + rng.normal(0, 0.02, len(pt))
    flat = bjet.prior_closure(np.full(len(pt), np.median(truth)), truth, pt)
    good = bjet.prior_closure(truth, truth, pt)
    assert good == {"unweighted": 1.0, "slope-1": 1.0, "slope+1": 1.0}
    assert flat["slope-1"] < 1.0 < flat["slope+1"]


def test_recalibration_restores_the_coverage_of_a_too_narrow_posterior_in_every_pt_bin():
    """A posterior 20 % too narrow at low pT and 10 % too wide at high pT: its 68 % intervals cover 58 % and 73 %;
    recalibrated on held-out jets (PIT quantiles per pT bin, Kuleshov et al.) they cover 68 % within 1.5 points in
    both bins on independent jets; a calibrated posterior stays calibrated."""
    from analysis.bjet import Recalibration, pit_values

    rng = np.random.default_rng(5)

    def jets(n):
        pt = rng.choice([30.0, 250.0], n)
        width = np.where(pt < 100, 0.8, 1.1)  # the posterior's width relative to the truth's spread
        centre = rng.normal(size=n)
        truth = centre + rng.normal(size=n)
        draws = centre + width * rng.normal(size=(256, n))
        return pt, truth, draws

    pt, truth, draws = jets(40_000)
    recal = Recalibration(pit_values(draws, truth, rng), pt)
    pt, truth, draws = jets(40_000)
    raw_lo, raw_hi = np.quantile(draws, [0.16, 0.84], axis=0)
    q = recal.quantiles(draws, pt, (0.16, 0.84))
    for sel, raw in ((pt < 100, 0.576), (pt > 100, 0.729)):
        assert np.mean((truth >= raw_lo) & (truth <= raw_hi), where=sel) == pytest.approx(raw, abs=0.02)
        assert np.mean((truth >= q[0.16]) & (truth <= q[0.84]), where=sel) == pytest.approx(0.68, abs=0.015)
    # a calibrated posterior: the levels stay where they were
    centre = rng.normal(size=20_000)
    truth, draws = centre + rng.normal(size=20_000), centre + rng.normal(size=(256, 20_000))
    calibrated = Recalibration(pit_values(draws, truth, rng), np.full(20_000, 50.0))
    assert calibrated.levels(0.84, np.array([50.0]))[0] == pytest.approx(0.84, abs=0.01)
