"""Taylor coefficients (models.taylor): exact on polynomials whose coefficients are known by hand, identical to
the tayloranalysis package's on a network, weighted means, and the classifier's standardised view."""

import numpy as np
import pytest
import torch

from models.classifiers import MLPClassifier
from models.taylor import mlp_standardised, posterior_mean, taylor_coefficients


def poly(v):  # f(x, y) = x y + x y^2 + y^3 (the tayloranalysis package's own check)
    return v[:, 0] * v[:, 1] + v[:, 0] * v[:, 1] ** 2 + v[:, 1] ** 3


def test_polynomial_coefficients_by_hand():
    x = np.random.default_rng(0).normal(size=(3000, 2)).astype(np.float32)
    X, Y = x[:, 0].astype(np.float64), x[:, 1].astype(np.float64)
    tc = taylor_coefficients(poly, x, ["x", "y"], order=3, batch_size=700)
    np.testing.assert_allclose(tc.first, [np.mean(np.abs(Y + Y**2)), np.mean(np.abs(X + 2 * X * Y + 3 * Y**2))],
                               rtol=1e-5)
    # t_xx = f_xx / 2 = 0, t_xy = f_xy = 1 + 2y, t_yy = f_yy / 2 = x + 3y; lower triangle empty
    np.testing.assert_allclose(tc.second, [[0.0, np.mean(np.abs(1 + 2 * Y))], [0.0, np.mean(np.abs(X + 3 * Y))]],
                               rtol=1e-5, atol=1e-7)
    # t_xyy = f_xyy / 2! = 1, t_yyy = f_yyy / 3! = 1, the rest 0
    assert tc.third[0, 1, 1] == pytest.approx(1.0) and tc.third[1, 1, 1] == pytest.approx(1.0)
    assert tc.third[0, 0, 1] == tc.third[0, 0, 0] == 0.0 and tc.third[1, 0, 0] == 0.0
    assert tc.ranking()[0][0] == "y" and tc.ranking()[1][0] == "y, y"
    assert tc.top(1) == ("y",) and tc.top(2) == ("y", "y")


def test_weights_and_batches():
    x = np.random.default_rng(1).normal(size=(1000, 2)).astype(np.float32)
    w = np.where(x[:, 0] > 0, 3.0, 1.0)
    tc = taylor_coefficients(poly, x, order=2, weights=w, batch_size=128)
    Y = x[:, 1].astype(np.float64)
    assert tc.first[0] == pytest.approx(np.average(np.abs(Y + Y**2), weights=w), rel=1e-5)
    with pytest.raises(ValueError, match="order"):
        taylor_coefficients(poly, x, order=4)
    with pytest.raises(ValueError, match="names"):
        taylor_coefficients(poly, x, ["a"])


def test_agrees_with_the_tayloranalysis_package():
    ta = pytest.importorskip("tayloranalysis")
    from itertools import combinations_with_replacement as cwr

    torch.manual_seed(3)
    model = MLPClassifier(6, (32, 32))
    x = np.random.default_rng(2).normal(size=(2000, 6)).astype(np.float32)
    model.fit_transform(x)
    fn, transform = mlp_standardised(model)
    z = transform(x)
    ours = taylor_coefficients(fn, z, order=2)

    class Wrapped(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = model

        def forward(self, x):  # the package passes the input by the name given to get_tc
            return fn(x)[:, None]

    idx = [(i,) for i in range(6)] + list(cwr(range(6), 2))
    theirs = ta.extend_model(Wrapped()).get_tc("x", {"x": torch.tensor(z)}, idx,
                                               reduce_func=lambda t: float(t.abs().mean()))
    for i in range(6):
        assert ours.first[i] == pytest.approx(theirs[(i,)], rel=1e-4, abs=1e-7)
    for i, j in cwr(range(6), 2):
        assert ours.second[i, j] == pytest.approx(theirs[(i, j)], rel=1e-4, abs=1e-7)


def test_standardised_view_of_the_classifier():
    """The logit in standardised inputs is the classifier's logit: the transform and the network compose to it."""
    torch.manual_seed(4)
    model = MLPClassifier(3, (16,))
    x = (np.random.default_rng(3).lognormal(size=(500, 3)) * [1, 1, 100]).astype(np.float32)
    model.fit_transform(x)
    fn, transform = mlp_standardised(model)
    with torch.no_grad():
        direct = model(torch.tensor(x))[:, 0].numpy()
        composed = fn(torch.tensor(transform(x))).numpy()
    np.testing.assert_allclose(direct, composed, rtol=1e-5, atol=1e-6)
    z = transform(x)
    assert np.allclose(z.mean(0), 0, atol=1e-4) and np.allclose(z.std(0), 1, atol=1e-2)


def test_posterior_mean_of_a_mixture_is_exact_and_differentiable():
    """first_mean agrees with the mean of draws, and the posterior-mean coefficients of a conditional mixture
    behind a deep-sets embedding (context entries written into the object array) agree with finite differences;
    fixed per-event tensors (the mask) are batched with the inputs."""
    from models.embedding import ConditionalDensity, DeepSetEmbedding
    from models.flows import MADEMoG

    torch.manual_seed(3)
    emb = DeepSetEmbedding(object_features=2, out_features=4, event_features=0, hidden_features=[8])
    model = ConditionalDensity(MADEMoG(2, components=3, hidden_features=[16], context=4), emb).eval()
    objects = torch.randn(50, 3, 2)
    mask = torch.ones(50, 3, dtype=torch.bool)
    mask[::2, 2] = False  # a padded slot: its entries cannot move the posterior
    with torch.no_grad():
        dist = model(objects[:1], mask[:1])
        draws = dist.sample((40000,))[:, 0, 0]
        assert abs(float(draws.mean() - dist.first_mean()[0])) < 5 * float(draws.std()) / 200

    def build(z, objects, mask):
        objects = objects.clone()
        objects[:, :, 0] = z  # feature 0 of each of the 3 slots
        return objects, mask

    fn = posterior_mean(model, build)
    z = objects[:, :, 0].clone()
    tc = taylor_coefficients(fn, z, ["a", "b", "c"], order=2, batch_size=16, given=(objects, mask))
    eps, grads = 1e-3, []
    with torch.no_grad():
        for i in range(3):
            up, down = z.clone(), z.clone()
            up[:, i] += eps
            down[:, i] -= eps
            grads.append((fn(up, objects, mask) - fn(down, objects, mask)) / (2 * eps))
    fd = torch.stack(grads, dim=1)
    np.testing.assert_allclose(tc.first, fd.abs().mean(dim=0).numpy(), rtol=2e-2, atol=1e-4)
    assert float(fd[::2, 2].abs().max()) == 0.0  # padded slot
    assert tc.second is not None and np.all(np.isfinite(tc.second))
