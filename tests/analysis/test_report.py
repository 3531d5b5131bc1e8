"""The report's one-sentence answer follows the independent test, not the generator's agreement with itself."""

from __future__ import annotations

from analysis.report import verdict


def _limits(all_pass: bool, unc_pass: bool, unc_max: float, splits: dict | None = None) -> dict:
    sim = {"0.1": {"0": 1.0}}
    gen = {"0.1": {"median": [{"0": 1.2}, {"0": 0.8}]}}
    sp = {"max_sigma": 1.0, "generated_all_pass": all_pass, "generated_max_abs_z": 8.0,
          "generated_unc_all_pass": unc_pass, "generated_unc_max_abs_z": unc_max}
    if splits is not None:
        sp["splits"] = splits
    return {"spurious": sp, "simulated": sim, "sizes": [1000, 10_000], "generated": gen, "generated_unc": gen}


def test_verdict_without_truth_says_it_cannot_answer():
    assert verdict({"spurious": {}}).startswith("No independent truth sample")


def test_verdict_on_one_split():
    assert verdict(_limits(False, True, 0.4)).startswith("Only with the generator uncertainty")
    assert "from 10,000 generated events on" in verdict(_limits(False, True, 0.4))
    assert verdict(_limits(False, False, 1.4)).startswith("No:")


def test_verdict_rests_on_the_further_splits_when_there_are_some():
    """A calibrated procedure fails |z| <= 1 on one split a third of the time; the distribution over further
    splits decides, both ways: a lucky split does not rescue a biased procedure."""
    calibrated = {"z": [0.3, -0.5, 1.1, -0.2], "mean": 0.18, "rms": 0.63, "calibrated": True}
    biased = {"z": [0.9, 1.4, 0.2, 1.6], "mean": 1.03, "rms": 1.17, "calibrated": False}
    v = verdict(_limits(False, False, 1.42, calibrated))
    assert v.startswith("Only with the generator uncertainty") and "reaches 1.42" in v and "+0.18 sigma" in v
    v = verdict(_limits(False, True, 0.4, biased))
    assert v.startswith("No:") and "+1.03 sigma on average" in v
