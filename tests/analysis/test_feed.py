"""Feeding the regressions into the analysis (analysis.feed): the masses recomputed from the skim's objects
reproduce the skim's features, and the true neutrino and true b-jet energies sharpen the signal's mass peaks, so
the recomputation uses the right objects; misaligned objects are refused."""

import numpy as np
import pytest

from analysis import bjet, neutrino
from analysis.features import HIGH_LEVEL, M_W
from analysis.feed import REGRESSED_FEATURES, b_candidates, check_alignment, recompute_masses, regressed_columns
from analysis.io import InputError


def _objects(cols):
    return {k: v for k, v in cols.items() if k.startswith(("obj_", "truth_"))}


def _half_width(x) -> float:
    q16, q84 = np.quantile(x[np.isfinite(x)], [0.16, 0.84])
    return 0.5 * (q84 - q16)


@pytest.mark.parametrize("sample", ["background", "signal"])
def test_masses_from_the_objects_are_the_skims(skimmed, sample):
    cols, _ = skimmed[sample]
    masses = recompute_masses(_objects(cols))
    for k in HIGH_LEVEL:
        np.testing.assert_allclose(masses[k], cols[k], rtol=2e-4, atol=1e-3, err_msg=k)
    check_alignment(cols, _objects(cols), sample)  # passes


def test_b_candidates_are_the_two_highest_btag_scores(skimmed):
    cols, _ = skimmed["signal"]
    objects = _objects(cols)
    slots = b_candidates(objects)
    scores = objects["obj_jet_btag"][:, :4]
    rows = np.arange(len(slots))[:, None]
    chosen = np.sort(scores[rows, slots], axis=1)
    np.testing.assert_array_equal(chosen, np.sort(scores, axis=1)[:, 2:])


def test_true_neutrino_and_b_energies_sharpen_the_signal(skimmed):
    """With the true neutrino, m_lv becomes the W line shape (no point mass) and the H+- and H0 candidates
    sharpen; scaling the b candidates that are b jets by their true response sharpens h -> bb. Scaling the
    wrong jets could not do this."""
    cols, _ = skimmed["signal"]
    objects = _objects(cols)
    nu = neutrino.true_neutrino(objects)
    has_nu = np.hypot(nu[:, 0], nu[:, 1]) > 0
    slots = b_candidates(objects)
    rows = np.arange(len(slots))[:, None]
    is_b = (objects["truth_jet_hadronFlavour"][rows, slots] == 5) \
        & (np.abs(objects["truth_jet_parton_pdgId"][rows, slots]) == 5)
    response = np.where(is_b, objects["truth_jet_parton_pt"][rows, slots]
                        / objects["obj_jet_pt"][rows, slots], 1.0)
    standard = recompute_masses(objects)
    regressed = recompute_masses(objects, nu=nu, b_response=response)
    sel = has_nu & is_b.all(axis=1)
    assert sel.mean() > 0.3
    assert np.mean(standard["m_lv"][sel] == np.float32(M_W)) > 0.5  # the W-mass solution: a point mass
    assert np.mean(regressed["m_lv"][sel] == np.float32(M_W)) < 0.01
    assert abs(np.median(regressed["m_lv"][sel]) - M_W) < 2.0 and _half_width(regressed["m_lv"][sel]) < 4.0
    for k in ("m_bb", "m_wwbb"):
        assert _half_width(regressed[k][sel]) < 0.9 * _half_width(standard[k][sel]), k
    np.testing.assert_array_equal(regressed["m_jj"], standard["m_jj"])  # the light jets stay
    # with the b quarks' own momenta the h -> bb peak is nearly the Higgs mass itself (jet angles are close to
    # the quarks'): scaling any other jets could not do this
    assert _half_width(regressed["m_bb"][sel]) < 0.3 * _half_width(standard["m_bb"][sel])
    assert abs(np.median(regressed["m_bb"][sel]) - 125.0) < 5.0


def test_misaligned_objects_are_refused(skimmed):
    cols, _ = skimmed["background"]
    objects = _objects(cols)
    shuffled = {k: v[::-1] for k, v in objects.items()}
    with pytest.raises(InputError, match="do not match the features row by row"):
        check_alignment(cols, shuffled, "background")
    with pytest.raises(InputError, match="rows of object columns"):
        check_alignment(cols, {k: v[:-1] for k, v in objects.items()}, "background")
    with pytest.raises(ValueError, match="expected some of"):
        regressed_columns(cols, objects, {"tau": None}, 4, 1)
    assert set(REGRESSED_FEATURES) < set(HIGH_LEVEL) and "m_jj" not in REGRESSED_FEATURES
    assert bjet.b_jets(objects)[0].size > 0
