"""The flow-matching model (`cfm`): exact densities, what the training objective learns, context, persistence."""

import math

import numpy as np
import pytest
import torch

from models.flow_matching import FlowMatching
from models.io import load_generator, save_generator
from models.preprocessing import Preprocessor
from models.registry import build
from models.training import TrainSettings, objective_values, train_model


def _zero_field(model: FlowMatching) -> FlowMatching:
    last = model.field.ode[-1]
    with torch.no_grad():
        for p in last.parameters():
            p.zero_()
    return model


def test_a_vanishing_field_is_the_identity_and_its_density_the_standard_normal():
    """With f = 0 the ODE map is the identity: samples are standard normal and log_prob is exactly the normal
    log-density (the exact Jacobian trace adds nothing)."""
    torch.manual_seed(0)
    model = _zero_field(build("cfm", 3, {"hidden_features": [16, 16]})).eval()
    x = torch.randn(500, 3)
    with torch.no_grad():
        lp = model().log_prob(x)
        s = model().sample((20000,))
    normal = -0.5 * (x ** 2).sum(-1) - 1.5 * math.log(2 * math.pi)
    torch.testing.assert_close(lp, normal, rtol=1e-5, atol=1e-5)
    assert float(s.mean(0).abs().max()) < 0.03 and float((s.std(0) - 1).abs().max()) < 0.03


def test_flow_matching_learns_a_correlated_gaussian_with_exact_densities():
    """Trained through the one training loop (which picks the model's own objective), the flow reproduces the
    mean and covariance of a correlated, shifted Gaussian (within 4 % of a sigma and 7 % of sigma^2), and its log_prob agrees with the analytic density
    event by event (an untrained field is off by several nats)."""
    g = torch.Generator().manual_seed(1)
    cov = torch.tensor([[1.0, 0.8], [0.8, 1.0]]) * torch.tensor([[0.5], [2.0]]) * torch.tensor([0.5, 2.0])
    truth = torch.distributions.MultivariateNormal(torch.tensor([3.0, -1.0]), cov)
    torch.manual_seed(1)
    x = truth.sample((12000,))
    torch.manual_seed(2)
    model = build("cfm", 2, {"hidden_features": [64, 64]})
    with torch.no_grad():
        before = float((model.eval()().log_prob(x[:300]) - truth.log_prob(x[:300])).abs().mean())
    result = train_model(model, x[:10000], x[10000:], TrainSettings(epochs=80, batch_size=256, learning_rate=1e-3,
                                                                       patience=80, seed=1))
    assert result.best_epoch > 1
    with torch.no_grad():
        s = model().sample((20000,))
        after = (model().log_prob(x[:300]) - truth.log_prob(x[:300])).abs()
    scale = cov.diagonal().sqrt()
    assert float(((s.mean(0) - truth.mean) / scale).abs().max()) < 0.04
    assert float(((torch.cov(s.T) - cov) / torch.outer(scale, scale)).abs().max()) < 0.07  # within 7 % of sigma^2
    assert float(after.median()) < 0.1 < 1.0 < before


def test_the_validation_loss_uses_fixed_noise_and_training_noise_varies():
    torch.manual_seed(0)
    model = build("cfm", 4, {"hidden_features": [8]})
    x = torch.randn(100, 4)
    model.eval()
    a, b = objective_values(model, x, lambda m, v, c: m.objective(v)), model.objective(x).detach()
    torch.testing.assert_close(torch.as_tensor(a, dtype=torch.float32), b)
    model.train()
    assert not torch.equal(model.objective(x).detach(), model.objective(x).detach())


def test_a_conditional_flow_matching_model_uses_its_context():
    """p(x | c) = N(2c, 0.3^2): samples given c follow 2c, and a shuffled context gives a worse density."""
    g = torch.Generator().manual_seed(0)
    c = torch.rand(6000, 1, generator=g) * 2 - 1
    x = 2 * c + 0.3 * torch.randn(6000, 1, generator=g)
    torch.manual_seed(1)
    model = build("cfm", 1, {"hidden_features": [32, 32]}, context=1)
    train_model(model, x[:5000], x[5000:], TrainSettings(epochs=15, batch_size=256, learning_rate=3e-3, seed=1),
                c_train=c[:5000], c_val=c[5000:])
    with torch.no_grad():
        draws = model(c[5000:5300]).sample((20,))
        assert float((draws.mean(0) - 2 * c[5000:5300]).abs().mean()) < 0.1
        assert abs(float(draws.std(0).mean()) - 0.3) < 0.06
        right = -model(c[5000:5300]).log_prob(x[5000:5300]).mean()
        wrong = -model(c[5000:5300][torch.randperm(300, generator=g)]).log_prob(x[5000:5300]).mean()
    assert float(wrong) > float(right) + 0.5


def test_flow_matching_behind_an_embedding_trains_on_its_objective():
    """A conditional density (flow behind an embedding of the event) with a flow-matching flow is trained on the
    flow-matching objective, embedding included: samples given c follow 2 c."""
    from models.embedding import ConditionalDensity, MLPEmbedding

    g = torch.Generator().manual_seed(0)
    c = torch.rand(6000, 2, generator=g) * 2 - 1
    x = 2 * c[:, :1] + 0.3 * torch.randn(6000, 1, generator=g)
    torch.manual_seed(1)
    model = ConditionalDensity(build("cfm", 1, {"hidden_features": [32, 32]}, context=4),
                               MLPEmbedding(2, 4, [16]).fit_scaling(c[:5000]))
    assert callable(model.objective)
    train_model(model, x[:5000], x[5000:], TrainSettings(epochs=15, batch_size=256, learning_rate=3e-3, seed=1),
                c_train=(c[:5000],), c_val=(c[5000:],))
    with torch.no_grad():
        draws = model(c[5000:5300]).sample((20,))
    assert float((draws.mean(0) - 2 * c[5000:5300, :1]).abs().mean()) < 0.12


def test_a_flow_matching_generator_round_trips_through_the_model_file(tmp_path):
    rng = np.random.default_rng(0)
    features = ["lepton_pT", "lepton_eta"]
    data = np.stack([rng.gamma(3.0, 20.0, 500) + 25, rng.normal(0, 1, 500)], axis=1)
    prep = Preprocessor(features).fit(data, rng)
    hyper = {"hidden_features": [8, 8], "freqs": 2, "atol": 1e-5, "rtol": 1e-4}
    torch.manual_seed(0)
    model = build("cfm", prep.flow_features, hyper).eval()
    path = tmp_path / "model.pt"
    save_generator(path, "cfm", hyper, model.state_dict(), prep, {"epoch": 1})
    loaded, prep2, _ = load_generator(path)
    z = torch.randn(50, prep.flow_features)
    with torch.no_grad():
        torch.testing.assert_close(loaded().log_prob(z), model().log_prob(z))
    assert prep2.features == features


@pytest.mark.parametrize("bad", [{"components": 3}, {"hidden": [8]}])
def test_unknown_flow_matching_hyperparameters_are_refused(bad):
    with pytest.raises(ValueError, match="unknown hyperparameter"):
        build("cfm", 2, bad)
