"""The feed-forward Huber and quantile regression (the CMS-style baseline), the MLP embedding, and saving and
loading conditional models with only tensors and plain values."""

import numpy as np
import pytest
import torch

from analysis.io import InputError
from models.fit import fit_conditional, sample_posterior
from models.features import Feature, FeatureTable
from models.io import load_conditional, save_conditional
from models.regression import QUANTILES, fit_regressor, predict
from models.training import TrainSettings


def _data(n, seed):
    """y ~ N(2 x0, (0.2 + 0.5 |x1|)^2): a heteroscedastic target whose quantiles are known."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3)).astype(np.float32)
    sigma = 0.2 + 0.5 * np.abs(x[:, 1])
    y = (2 * x[:, 0] + sigma * rng.normal(size=n))[:, None]
    return x, y, sigma


def test_quantile_regressor_learns_central_value_and_quantiles():
    x, y, _ = _data(12000, 1)
    xt, yt, sigma = _data(4000, 2)
    fit = fit_regressor({"train": y[:10000], "validation": y[10000:]}, {"train": x[:10000], "validation": x[10000:]},
                        {"kind": "mlp", "in_features": 3, "out_features": 16, "hidden_features": [32]},
                        TrainSettings(epochs=25, batch_size=256, learning_rate=3e-3, seed=1), [32])
    central, q = predict(fit.model, xt)
    assert central.shape == (4000, 1) and q.shape == (4000, 1, len(QUANTILES))
    assert np.median(np.abs(central[:, 0] - 2 * xt[:, 0])) < 0.15
    # the predicted 68 % half-width follows the true sigma, and the intervals cover as they should
    half68 = 0.5 * (q[:, 0, 3] - q[:, 0, 0])
    assert np.corrcoef(half68, sigma)[0, 1] > 0.8
    cover = np.mean((yt[:, 0] >= q[:, 0, 0]) & (yt[:, 0] <= q[:, 0, 3]))
    assert abs(cover - 0.68) < 0.04


def test_conditional_models_save_and_load(tmp_path):
    x, y, _ = _data(3000, 4)
    emb = {"kind": "mlp", "in_features": 3, "out_features": 8, "hidden_features": [16]}
    settings = TrainSettings(epochs=2, batch_size=256, seed=1)
    flow = fit_conditional("made_mog", {"components": 2, "hidden_features": [16, 16]},
                           {"train": y[:2500], "validation": y[2500:]}, {"train": x[:2500], "validation": x[2500:]},
                           ["y"], FeatureTable([Feature("y", "standard")]), settings, emb)
    dnn = fit_regressor({"train": y[:2500], "validation": y[2500:]}, {"train": x[:2500], "validation": x[2500:]},
                        emb, settings, [16])
    for fit, name in ((flow, "flow.pt"), (dnn, "dnn.pt")):
        save_conditional(tmp_path / name, fit, {"seed": 1})
        loaded, meta = load_conditional(tmp_path / name)
        assert meta == {"seed": 1} and type(loaded) is type(fit)
    f2, _ = load_conditional(tmp_path / "flow.pt")
    a, la = sample_posterior(flow, x[:50], 4, seed=3)
    b, lb = sample_posterior(f2, x[:50], 4, seed=3)
    np.testing.assert_allclose(a, b, rtol=1e-5)
    d2, _ = load_conditional(tmp_path / "dnn.pt")
    np.testing.assert_allclose(predict(dnn.model, x[:50])[0], predict(d2.model, x[:50])[0], rtol=1e-6)
    # a file holding Python objects is refused, naming the file
    torch.save({"format": "hepflows-conditional-1", "x": np.array([1])}, tmp_path / "evil.pt")
    with pytest.raises(InputError, match="evil.pt"):
        load_conditional(tmp_path / "evil.pt")
