"""The compiled kernels (detector, numpy-order sums) give, bit for bit, what the numpy expressions they replaced
give."""

from __future__ import annotations

import numpy as np
import pytest

from analysis.generator import kernels
from analysis.generator import kinematics as kin
from analysis.numeric import pairwise_sum


@pytest.mark.parametrize("n", [1, 5, 7, 8, 9, 15, 16, 17, 40, 128, 129, 300, 1001])
def test_pairwise_sum_is_numpys_order(n):
    rng = np.random.default_rng(n)
    a = rng.lognormal(0.0, 4.0, (200, n)) * (rng.uniform(size=(200, n)) < 0.6)
    ours = np.array([pairwise_sum(row) for row in a])
    assert np.array_equal(ours, a.sum(axis=1))
    assert np.array_equal(ours, np.array([np.sum(row) for row in a]))
    if n >= 8:  # the order matters: a plain left-to-right sum differs somewhere
        assert not np.array_equal(ours, np.array([sum(row) for row in a]))


@pytest.mark.parametrize("n_partons", [4, 7, 10])
def test_isolation_sums_equal_the_broadcast_expression(n_partons):
    rng = np.random.default_rng(1)
    n, n_lep = 4000, 3
    leta, peta = rng.normal(0, 1.5, (n, n_lep)), rng.normal(0, 1.5, (n, n_partons))
    lphi, pphi = rng.uniform(-np.pi, np.pi, (n, n_lep)), rng.uniform(-np.pi, np.pi, (n, n_partons))
    peta[:, 0] = leta[:, 0] + rng.normal(0, 0.1, n)  # partons inside the cone, across the phi = +-pi seam
    pphi[:, 0] = kin.wrap_phi(lphi[:, 0] + rng.normal(0, 0.1, n))
    lphi[:5, 0], pphi[:5, 0] = np.pi - 1e-3, -np.pi + 1e-3
    ppt = rng.exponential(40.0, (n, n_partons))
    valid = rng.uniform(size=(n, n_partons)) < 0.8
    valid[:5, 0] = True
    cone = np.where(rng.uniform(size=(n, n_lep)) < 0.5, 0.3, 0.4)
    d_eta = leta[:, :, None] - peta[:, None, :]
    d_phi = kin.delta_phi(lphi[:, :, None], pphi[:, None, :])
    overlap = np.clip(1.0 - np.sqrt(d_eta**2 + d_phi**2) / cone[..., None], 0.0, None) * valid[:, None, :]
    reference = (overlap * ppt[:, None, :]).sum(axis=-1)
    ours = kernels.isolation_sums(leta, lphi, peta, pphi, ppt, valid, cone)
    assert np.array_equal(ours, reference)
    assert (ours[:5, 0] > 0).all()  # the seam does not hide a parton 0.002 away


def test_closest_pairs_equal_argmin_over_all_pairs():
    rng = np.random.default_rng(2)
    n, k = 5000, 7
    eta, phi = rng.normal(0, 1.0, (n, k)), rng.uniform(-np.pi, np.pi, (n, k))
    valid = rng.uniform(size=(n, k)) < 0.7
    eta[:10, 2], phi[:10, 2] = eta[:10, 0], phi[:10, 0]  # ties: two pairs at distance zero
    eta[:10, 3], phi[:10, 3] = eta[:10, 1], phi[:10, 1]
    valid[:10, :4] = True
    valid[10:20] = False  # no pair
    i_pair, j_pair = np.triu_indices(k, 1)
    d2 = (eta[:, i_pair] - eta[:, j_pair]) ** 2 + kin.delta_phi(phi[:, i_pair], phi[:, j_pair]) ** 2
    d2 = np.where(valid[:, i_pair] & valid[:, j_pair], d2, np.inf)
    best = np.argmin(d2, axis=1)
    bi, bj, bd2 = kernels.closest_pairs(eta, phi, valid)
    has = np.isfinite(d2).any(axis=1)
    assert np.array_equal(bd2, d2[np.arange(n), best])
    assert np.array_equal(bi[has], i_pair[best[has]]) and np.array_equal(bj[has], j_pair[best[has]])
    assert (bi[:10] == 0).all() and (bj[:10] == 2).all() and np.isinf(bd2[10:20]).all()


def test_ordered_selection_equals_stable_argsort_and_mask():
    rng = np.random.default_rng(3)
    n, k = 3000, 9
    key = np.round(rng.exponential(30.0, (n, k)), 0)  # rounded: many ties, broken by slot
    keep = rng.uniform(size=(n, k)) < 0.6
    order = np.argsort(np.where(keep, -key, np.inf), axis=1, kind="stable")
    kept = np.take_along_axis(keep, order, axis=1)
    values = rng.normal(size=(n, k))
    flat, counts = kernels.ordered_selection(keep, key)
    assert np.array_equal(counts, keep.sum(axis=1))
    assert np.array_equal(values.reshape(-1)[flat], np.take_along_axis(values, order, axis=1)[kept])
