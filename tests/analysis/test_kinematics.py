import numpy as np
import pytest
import vector

from analysis.generator import kinematics as kin


def _random_p4(rng, n, m):
    return kin.from_pt_eta_phi_m(rng.uniform(1, 300, n), rng.normal(0, 2, n), rng.uniform(-np.pi, np.pi, n), m)


def test_boost_agrees_with_vector():
    rng = np.random.default_rng(0)
    p = _random_p4(rng, 1000, rng.uniform(0, 100, 1000))
    parent = _random_p4(rng, 1000, 172.5)
    ours = kin.boost(p, kin.velocity(parent))
    v = vector.array({"E": p[:, 0], "px": p[:, 1], "py": p[:, 2], "pz": p[:, 3]})
    vp = vector.array({"E": parent[:, 0], "px": parent[:, 1], "py": parent[:, 2], "pz": parent[:, 3]})
    ref = v.boost_p4(vp)
    np.testing.assert_allclose(ours[:, 0], ref.E, rtol=1e-9)
    np.testing.assert_allclose(ours[:, 1], ref.px, rtol=1e-7, atol=1e-7)
    np.testing.assert_allclose(ours[:, 3], ref.pz, rtol=1e-7, atol=1e-7)
    back = kin.boost(ours, -kin.velocity(parent))
    np.testing.assert_allclose(back, p, atol=1e-7 * np.abs(p).max())


def test_decay_conserves_four_momentum_and_masses():
    rng = np.random.default_rng(1)
    parent = _random_p4(rng, 5000, 172.5)
    d1, d2 = kin.decay(rng, parent, 80.4, 4.8)
    np.testing.assert_allclose(d1 + d2, parent, atol=1e-6 * np.abs(parent).max())
    np.testing.assert_allclose(kin.mass(d1), 80.4, rtol=1e-6)
    np.testing.assert_allclose(kin.mass(d2), 4.8, rtol=1e-4)


def test_breit_wigner_peak_and_width():
    rng = np.random.default_rng(2)
    m = kin.breit_wigner(rng, 172.5, 1.4, 200_000, 150.0, 195.0)
    assert abs(np.median(m) - 172.5) < 0.02
    q75, q25 = np.percentile(m, [75, 25])
    assert 0.5 * (q75 - q25) == pytest.approx(0.7, rel=0.05)  # a Breit-Wigner's half IQR is Gamma/2
    assert m.min() >= 150.0 and m.max() <= 195.0


@pytest.mark.parametrize("fractions, mean", [((1.0, 0.0, 0.0), 0.0), ((0.0, 1.0, 0.0), -0.5),
                                              ((0.0, 0.0, 1.0), 0.5), ((0.687, 0.311, 0.002), -0.1545)])
def test_w_helicity_angle(fractions, mean):
    rng = np.random.default_rng(3)
    c = kin.sample_w_helicity_cos(rng, 400_000, fractions)
    assert np.all(np.abs(c) <= 1)
    assert c.mean() == pytest.approx(mean, abs=0.004)
    if fractions[0] == 1.0:  # longitudinal: <c^2> = 1/5
        assert np.mean(c**2) == pytest.approx(0.2, abs=0.003)


def test_helicity_axis_in_decay():
    """Left-handed W from top decays: the charged lepton goes backwards to the W flight direction."""
    rng = np.random.default_rng(4)
    n = 50_000
    top = _random_p4(rng, n, 172.5)
    w, _ = kin.decay(rng, top, 80.4, 4.8)
    cos = kin.sample_w_helicity_cos(rng, n, (0.0, 1.0, 0.0))
    lep, _ = kin.decay(rng, w, 0.0, 0.0, cos_theta=cos, grandparent=top)
    # measure cos theta*: lepton in W rest frame against the W direction in the top rest frame
    beta_w = kin.velocity(w)
    lep_w = kin.boost(lep, -beta_w)[:, 1:]
    top_w = kin.boost(top, -beta_w)[:, 1:]
    axis = -top_w / np.linalg.norm(top_w, axis=1, keepdims=True)
    measured = np.sum(lep_w * axis, axis=1) / np.linalg.norm(lep_w, axis=1)
    np.testing.assert_allclose(measured, cos, atol=1e-6)
