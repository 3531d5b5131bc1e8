"""The object-level classifier (models.objectnet): pair features by hand, invariance under permutations of the
objects, that its pair features find a resonance between two of the objects, and storage."""

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from models.classifiers import Classifier, load_classifier, occlusion_importance, save_classifier
from analysis.config import TransformerConfig as ObjectSettings
from models.objectnet import ObjectTransformer, object_scores, pair_features, train_object_classifier


def _p4(pt, eta, phi, m):
    px, py, pz = pt * np.cos(phi), pt * np.sin(phi), pt * np.sinh(eta)
    return np.stack([np.sqrt(px**2 + py**2 + pz**2 + m**2), px, py, pz], axis=-1)


def test_pair_features_by_hand():
    # two massless objects back to back in the transverse plane, pT 50 and 30: m^2 = 2 pT1 pT2 (1 - cos pi)
    p4 = torch.tensor(_p4(np.array([50.0, 30.0]), np.array([0.0, 0.0]), np.array([0.0, np.pi]), 0.0)[None],
                      dtype=torch.float64)
    f = pair_features(p4)
    assert f.shape == (1, 2, 2, 4)
    np.testing.assert_allclose(f[0, 0, 1, 0].exp().item(), 2 * 50 * 30 * 2, rtol=1e-9)
    np.testing.assert_allclose(f[0, 0, 1, 1].exp().item(), np.pi, rtol=1e-9)
    np.testing.assert_allclose(f[0, 0, 1, 2].exp().item(), 30 * np.pi, rtol=1e-9)
    np.testing.assert_allclose(f[0, 0, 1, 3].exp().item(), 30 / 80, rtol=1e-9)
    assert torch.allclose(f[0], f[0].transpose(0, 1))  # symmetric


def _events(n, rng, signal):
    """Four objects per event; in signal events two of them, at random slots, are the decay products of a
    resonance of 125 GeV (10 % resolution): only their pair mass tells the classes apart."""
    pt = rng.exponential(40, size=(n, 4)) + 20
    eta, phi = rng.uniform(-2, 2, size=(n, 4)), rng.uniform(-np.pi, np.pi, size=(n, 4))
    p4 = _p4(pt, eta, phi, 0.0)
    if signal:
        # a 125 GeV resonance with the momentum of the sum, decayed isotropically in its rest frame
        parent_pt, parent_eta, parent_phi = rng.exponential(40, n) + 20, rng.uniform(-1.5, 1.5, n), rng.uniform(
            -np.pi, np.pi, n)
        mass = rng.normal(125.0, 12.5, n)  # a 10 % mass resolution
        parent = _p4(parent_pt, parent_eta, parent_phi, mass)
        cos_t, ph = rng.uniform(-1, 1, n), rng.uniform(-np.pi, np.pi, n)
        k = (mass / 2)[:, None] * np.stack([np.ones(n), np.sqrt(1 - cos_t**2) * np.cos(ph),
                                            np.sqrt(1 - cos_t**2) * np.sin(ph), cos_t], axis=1)
        beta = parent[:, 1:] / parent[:, :1]
        gamma = parent[:, 0] / mass
        def boost(q):
            bp = (beta * q[:, 1:]).sum(1)
            b2 = (beta**2).sum(1)
            e = gamma * (q[:, 0] + bp)
            vec = q[:, 1:] + ((gamma - 1) * bp / b2)[:, None] * beta + (gamma * q[:, 0])[:, None] * beta
            return np.concatenate([e[:, None], vec], axis=1)
        d1, d2 = boost(k), boost(k * np.array([1, -1, -1, -1]))
        slots = np.argsort(rng.random((n, 4)), axis=1)[:, :2]
        p4[np.arange(n), slots[:, 0]], p4[np.arange(n), slots[:, 1]] = d1, d2
    pt = np.hypot(p4[..., 1], p4[..., 2])
    eta = np.arcsinh(p4[..., 3] / pt)
    mask = np.ones((n, 4), dtype=bool)
    feats = np.stack([np.log(pt), eta, np.cos(np.arctan2(p4[..., 2], p4[..., 1])),
                      np.sin(np.arctan2(p4[..., 2], p4[..., 1]))], axis=-1) * mask[..., None]
    p4 = p4 * mask[..., None]
    event = mask.sum(1, keepdims=True).astype(np.float32)
    return feats.astype(np.float32), p4.astype(np.float32), mask, event


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(7)
    parts = {}
    for name, n in (("train", 3000), ("val", 1000), ("test", 2000)):
        s, b = _events(n, rng, True), _events(n, rng, False)
        parts[name] = (tuple(np.concatenate([a, c]) for a, c in zip(s, b)),
                       np.concatenate([np.ones(n), np.zeros(n)]))
    return parts


def test_invariant_under_permutations_of_the_objects(data):
    torch.manual_seed(0)
    (x, _), = [data["test"]]
    model = ObjectTransformer(4, 1, dim=16, heads=2, layers=2).fit_scaling(*x).eval()
    perm = np.array([2, 0, 3, 1])
    a = object_scores(model, tuple(v[:200] for v in x))
    b = object_scores(model, (x[0][:200, perm], x[1][:200, perm], x[2][:200, perm], x[3][:200]))
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    assert np.std(a) > 0  # and the output is not trivially constant


def _closest_pair_auc(x, y):
    """ROC AUC of the best cut-based use of the pair masses: the distance of the pair mass closest to 125 GeV."""
    p4 = x[1].astype(np.float64)
    d = np.full(len(p4), np.inf)
    for i in range(4):
        for j in range(i + 1, 4):
            s = p4[:, i] + p4[:, j]
            d = np.minimum(d, np.abs(np.sqrt(np.maximum(s[:, 0] ** 2 - (s[:, 1:] ** 2).sum(1), 0)) - 125.0))
    return roc_auc_score(y, -d)


def test_finds_a_resonance_among_unordered_objects(data):
    """Two of four objects, at random slots, come from a resonance: the transformer learns it beyond the
    closest-pair-mass cut (0.72; the decay also shapes the pair's angles and momenta, which a network can use,
    a cut cannot) in a few epochs, from the objects alone."""
    (xt, yt), (xv, yv), (xs, ys) = data["train"], data["val"], data["test"]
    settings = ObjectSettings(dim=32, heads=4, layers=1, epochs=8, batch_size=128, patience=8)
    model, history, seconds = train_object_classifier(xt, yt, xv, yv, settings, seed=1)
    auc = roc_auc_score(ys, object_scores(model, xs))
    cut = _closest_pair_auc(xs, ys)
    assert 0.65 < cut < 0.8
    assert auc > cut + 0.03, (auc, cut, history[-1])


def test_stored_and_loaded_with_weights_only(data, tmp_path):
    (xt, yt), (xv, yv), (xs, ys) = data["train"], data["val"], data["test"]
    model, history, seconds = train_object_classifier(
        tuple(a[::10] for a in xt), yt[::10], xv, yv, ObjectSettings(dim=16, heads=2, layers=1, epochs=1), seed=2)
    clf = Classifier("transformer", ["objects"], model, history, seconds)
    save_classifier(tmp_path / "model.pt", clf)
    loaded = load_classifier(tmp_path / "model.pt")
    np.testing.assert_allclose(loaded.score(xs), clf.score(xs), rtol=1e-6)
    with pytest.raises(ValueError, match="tuple"):
        loaded.score(xs[0])
    # hiding every object but one changes the score; hiding nothing changes nothing
    imp = occlusion_importance(clf, xs, ys, {"none": lambda x: x}, seed=0)
    assert imp == {"none": 0.0}
