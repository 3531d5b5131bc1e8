"""Score binning with a minimum count per background bin, and weighted templates."""

from __future__ import annotations

import numpy as np
import pytest

from analysis.templates import TemplateError, make_template, merged_edges, scaled_weights


def test_merged_edges_reach_min_count_for_every_sample():
    rng = np.random.default_rng(1)
    big, small = rng.beta(1.5, 5, 200_000), rng.beta(1.5, 5, 3000)
    edges = merged_edges([big, small], 0.3, 30, 25)
    assert edges[0] == pytest.approx(0.3) and edges[-1] == 1.0 and np.all(np.diff(edges) > 0)
    for x in (big, small):
        counts = np.histogram(x, edges)[0]
        assert counts.min() >= 25
    # the well-populated low-score end keeps the fine binning; merging happened at the high end
    assert edges[1] - edges[0] == pytest.approx(0.7 / 30)
    assert edges[-1] - edges[-2] > 0.7 / 30
    # the fine edges are a superset of the merged ones
    fine = np.linspace(0.3, 1, 31)
    assert all(np.isclose(fine, e).any() for e in edges)


def test_merged_edges_errors_when_too_few_events():
    with pytest.raises(TemplateError, match="only 3 events above the score cut"):
        merged_edges([np.array([0.6, 0.7, 0.8, 0.1])], 0.5, 10, 5)


def test_template_yields_and_stat():
    scores = np.array([0.1, 0.55, 0.6, 0.95, 1.0])
    weights = np.array([9.0, 1.0, 2.0, 3.0, 4.0])
    t = make_template(scores, weights, np.array([0.5, 0.7, 1.0]))
    np.testing.assert_allclose(t.yields, [3.0, 7.0])  # 0.1 is below the cut; 1.0 lies in the last bin
    np.testing.assert_allclose(t.stat, [np.sqrt(5.0), 5.0])
    np.testing.assert_array_equal(t.counts, [2, 2])


def test_scaled_weights_carry_the_expected_yield():
    w = scaled_weights(1000, 5e6)
    assert w.sum() == pytest.approx(5e6) and np.all(w == w[0])
    with pytest.raises(TemplateError):
        scaled_weights(0, 1.0)
