"""Classifiers: near the Bayes-optimal separation of two Gaussians, safe storage, importances."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats
from sklearn.metrics import roc_auc_score

from analysis.config import BDTConfig, ClassifierConfig, NNConfig
from models.classifiers import (balanced_weights, load_classifier, permutation_importance, save_classifier,
                                train_classifier)

FEATURES = ["a", "b", "c", "d"]
SHIFT = np.array([1.2, 0.6, 0.0, 0.0])  # c and d carry no information


def _data(rng, n_bkg, n_sig):
    x = np.concatenate([rng.normal(size=(n_bkg, 4)), rng.normal(size=(n_sig, 4)) + SHIFT]).astype(np.float32)
    y = np.concatenate([np.zeros(n_bkg), np.ones(n_sig)])
    return x, y


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(11)
    return {p: _data(rng, n, n // 4) for p, n in (("train", 16000), ("val", 4000), ("test", 16000))}


CFG = ClassifierConfig(bdt=BDTConfig(max_iter=100),
                       nn=NNConfig(hidden_features=(32, 32), epochs=12, batch_size=256, patience=3))


@pytest.mark.parametrize("kind", ["bdt", "nn"])
def test_close_to_bayes_optimal(kind, data, tmp_path):
    (xt, yt), (xv, yv), (xr, yr) = data["train"], data["val"], data["test"]
    clf = train_classifier(kind, FEATURES, xt, yt, xv, yv, CFG, seed=1)
    score = clf.score(xr)
    assert np.all((score >= 0) & (score <= 1))
    optimal = stats.norm.cdf(np.linalg.norm(SHIFT) / np.sqrt(2))  # AUC of the likelihood ratio
    auc = roc_auc_score(yr, score)
    assert optimal - 0.015 < auc < optimal + 0.01
    # balanced training: the score is a balanced posterior, about 0.5 where the two densities cross
    mid = np.tile(SHIFT / 2, (1, 1)).astype(np.float32)
    assert clf.score(mid)[0] == pytest.approx(0.5, abs=0.1)

    path = tmp_path / ("model.skops" if kind == "bdt" else "model.pt")
    save_classifier(path, clf)
    again = load_classifier(path)
    np.testing.assert_allclose(again.score(xr[:500]), score[:500], rtol=1e-6, atol=1e-7)
    assert again.kind == kind and again.features == FEATURES

    imp = permutation_importance(clf, xr, yr, seed=2, max_events=4000)
    assert imp["a"] > imp["b"] > max(imp["c"], imp["d"]) and abs(imp["c"]) < 0.01


def test_nn_file_with_code_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("executed",))

    path = tmp_path / "model.pt"
    torch.save({"state_dict": {}, "hidden": [4], "meta": Evil()}, path)
    with pytest.raises(Exception, match="[Ww]eights only load failed|Unsupported global"):
        load_classifier(path)


def test_errors(data):
    (xt, yt), (xv, yv) = data["train"], data["val"]
    with pytest.raises(ValueError, match="both classes"):
        balanced_weights(np.zeros(10))
    bad = xt.copy()
    bad[3, 1] = np.nan
    with pytest.raises(ValueError, match="non-finite values in the training events"):
        train_classifier("bdt", FEATURES, bad, yt, xv, yv, CFG)
    with pytest.raises(ValueError, match="unknown classifier 'svm'"):
        train_classifier("svm", FEATURES, xt, yt, xv, yv, CFG)
    with pytest.raises(FileNotFoundError):
        load_classifier("/nonexistent/model.pt")
