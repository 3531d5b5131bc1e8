"""What a network uses (issue 17): Taylor coefficients (:mod:`models.taylor`; Wunsch, Friese, Wolf, Quast,
Comput. Softw. Big Sci. 2 (2018) 5) of the analysis's MLP classifier and of a differentiable classifier two-sample
test (C2ST) that tells generated from simulated events, and the planted-defect test that shows they point at what
is wrong: a known defect planted in one half of simulated events, a C2ST trained to find it, and the question
whether its largest coefficient names the defect (and whether permutation importance does).

Defects (:func:`plant_defect`), on the "generated" half only:

- ``scale``: one feature multiplied by ``1 + size`` (e.g. m_bb by 2 %): a marginal defect;
- ``shuffle``: one feature permuted across events: its marginal intact, every correlation it has broken;
- ``pair``: feature ``j`` scaled by ``1 + size`` where feature ``i`` is above its median and by ``1 - size`` below
  it: both marginals nearly intact (``j``'s smeared at order ``size``), the (i, j) correlation wrong; only a
  coefficient of the pair (second order) can name it, permutation importance can name one feature at most.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from models.classifiers import Classifier, permutation_importance, train_nn
from models.taylor import TaylorCoefficients, mlp_standardised, posterior_mean, taylor_coefficients

from .config import NNConfig

DEFECTS = ("scale", "shuffle", "pair")
C2ST_NN = NNConfig(hidden_features=(128, 128), epochs=20, batch_size=512, learning_rate=1e-3, weight_decay=1e-4,
                   patience=4)
"""The differentiable C2ST: the analysis's MLP (SiLU: smooth, so second derivatives exist; a ReLU network's vanish
almost everywhere), early-stopped on a validation split."""


@dataclass(frozen=True)
class Defect:
    kind: str
    features: tuple[str, ...]  # one feature (scale, shuffle) or the pair (i, j) (pair: j is the one changed)
    size: float = 0.0

    @property
    def label(self) -> str:
        if self.kind == "scale":
            return f"{self.features[0]} x {1 + self.size:g}"
        if self.kind == "shuffle":
            return f"{self.features[0]} shuffled"
        return f"{self.features[1]} x (1 +- {self.size:g}) by {self.features[0]} above/below median"


def plant_defect(x: np.ndarray, names: Sequence[str], defect: Defect, rng: np.random.Generator) -> np.ndarray:
    """A copy of the events ``x`` (columns ``names``) with ``defect`` planted."""
    if defect.kind not in DEFECTS:
        raise ValueError(f"unknown defect {defect.kind!r}; known: {DEFECTS}")
    x = np.array(x, dtype=np.float64)
    names = list(names)
    if defect.kind == "scale":
        x[:, names.index(defect.features[0])] *= 1.0 + defect.size
    elif defect.kind == "shuffle":
        k = names.index(defect.features[0])
        x[:, k] = x[rng.permutation(len(x)), k]
    else:
        i, j = (names.index(f) for f in defect.features)
        above = x[:, i] > np.median(x[:, i])
        x[:, j] *= np.where(above, 1.0 + defect.size, 1.0 - defect.size)
    return x


def train_c2st(a: np.ndarray, b: np.ndarray, names: Sequence[str], seed: int, cfg: NNConfig = C2ST_NN,
               validation_fraction: float = 0.2) -> Classifier:
    """The differentiable C2ST: an MLP trained to tell ``b`` (label 1) from ``a`` (label 0)."""
    rng = np.random.default_rng(seed)
    x = np.concatenate([a, b]).astype(np.float32)
    y = np.concatenate([np.zeros(len(a)), np.ones(len(b))])
    perm = rng.permutation(len(x))
    n_val = int(validation_fraction * len(x))
    val, train = perm[:n_val], perm[n_val:]
    t0 = time.perf_counter()
    model, history = train_nn(x[train], y[train], x[val], y[val], cfg, seed)
    return Classifier("nn", list(names), model, history, time.perf_counter() - t0)


def coefficients(clf: Classifier, x: np.ndarray, order: int = 2, max_events: int = 20_000,
                 seed: int = 0) -> TaylorCoefficients:
    """Taylor coefficients of an MLP classifier's logit in its standardised inputs (:func:`mlp_standardised`) over
    at most ``max_events`` of the events ``x``."""
    if len(x) > max_events:
        x = x[np.sort(np.random.default_rng(seed).choice(len(x), max_events, replace=False))]
    fn, transform = mlp_standardised(clf.estimator)
    return taylor_coefficients(fn, transform(x), clf.features, order=order)


def regression_coefficients(model: torch.nn.Module, context, inputs: Sequence[tuple[str, int, tuple[int, ...]]],
                            max_events: int = 20_000, seed: int = 0, batch_size: int = 2048) -> TaylorCoefficients:
    """Taylor coefficients of a conditional flow's posterior mean of its first target feature
    (:func:`models.taylor.posterior_mean`; standardised flow space) in the context entries ``inputs``
    (``(label, context element, index within an event)``, e.g. ``("MET log pT", 0, (1, 0))``: object 1, feature
    0 of the first context array), each in units of its spread over the events; every other context entry held
    at its value. ``context``: one array or a tuple of arrays with events first, as the model takes it; at most
    ``max_events`` events (seeded choice). Inputs without spread (constant over the events) are left out."""
    ctx = context if isinstance(context, tuple) else (context,)
    n = len(ctx[0])
    rows = np.arange(n)
    if n > max_events:
        rows = np.sort(np.random.default_rng(seed).choice(n, max_events, replace=False))
    ctx = tuple(torch.as_tensor(np.asarray(c)[rows]) for c in ctx)
    raw = torch.stack([ctx[e][(slice(None), *idx)].double() for _, e, idx in inputs], dim=1)
    mean, std = raw.mean(dim=0), raw.std(dim=0)
    keep = [i for i in range(len(inputs)) if float(std[i]) > 0]
    inputs, mean, std = [inputs[i] for i in keep], mean[keep].float(), std[keep].float()
    z = (raw[:, keep].float() - mean) / std

    def build(z: torch.Tensor, *fixed: torch.Tensor) -> tuple:
        values = mean + std * z
        parts = [f.clone() if any(e == k for _, e, _ in inputs) else f for k, f in enumerate(fixed)]
        for col, (_, e, idx) in enumerate(inputs):
            parts[e][(slice(None), *idx)] = values[:, col]
        return tuple(parts)

    model = model.eval()
    return taylor_coefficients(posterior_mean(model, build), z, [label for label, _, _ in inputs], order=2,
                               batch_size=batch_size, given=ctx)


def top_mixed(tc: TaylorCoefficients) -> tuple[str, str]:
    """The pair ``i != j`` of the largest mixed second-order coefficient."""
    second = np.array(tc.second)
    np.fill_diagonal(second, -np.inf)
    i, j = np.unravel_index(int(np.argmax(second)), second.shape)
    return tc.names[i], tc.names[j]


def defect_trial(x: np.ndarray, names: Sequence[str], defect: Defect, seed: int, n_per_class: int,
                 n_test: int = 10_000, inputs: Sequence[str] | None = None) -> dict:
    """One trial of the planted-defect test: disjoint halves of the simulated events ``x`` (seeded), the defect in
    the second, a C2ST (seed ``seed``) on ``n_per_class`` events per class, and on ``n_test`` held-out events per
    class: its AUC, the top first-order feature, the top mixed pair, and the top feature of permutation
    importance. ``found`` says whether the Taylor coefficients name the defect: for ``scale`` and ``shuffle`` the
    top first-order feature, for ``pair`` the top mixed pair. ``inputs``: the C2ST sees only these features (e.g.
    the low-level ones, which no feature is a deterministic function of; a high-level mass changed alone also
    breaks its ties to the masses built from the same objects, which a C2ST rightly flags)."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x7A71]))
    need = 2 * (n_per_class + n_test)
    if len(x) < need:
        raise ValueError(f"{need} events needed, {len(x)} given")
    rows = rng.permutation(len(x))[:need]
    a, b = x[rows[: need // 2]], plant_defect(x[rows[need // 2:]], names, defect, rng)
    if inputs is not None:
        keep = [list(names).index(f) for f in inputs]
        a, b, names = a[:, keep], b[:, keep], list(inputs)
    clf = train_c2st(a[:n_per_class], b[:n_per_class], names, seed)
    xt = np.concatenate([a[n_per_class:], b[n_per_class:]])
    yt = np.concatenate([np.zeros(len(a) - n_per_class), np.ones(len(b) - n_per_class)])
    auc = float(roc_auc_score(yt, clf.score(xt)))
    t0 = time.perf_counter()
    tc = coefficients(clf, xt, order=2, seed=seed)
    taylor_seconds = time.perf_counter() - t0
    pi = permutation_importance(clf, xt, yt, seed=seed)
    top1, pair = tc.top(1)[0], top_mixed(tc)
    pi_top = max(pi, key=pi.get)
    if defect.kind == "pair":
        found = set(pair) == set(defect.features)
        pi_found = pi_top in defect.features
    else:
        found = top1 == defect.features[0]
        pi_found = pi_top == defect.features[0]
    return {"seed": seed, "auc": auc, "top_first": top1, "top_pair": list(pair), "top_ranking": tc.ranking(5),
            "permutation_top": pi_top, "found": bool(found), "permutation_found": bool(pi_found),
            "train_seconds": clf.train_seconds, "taylor_seconds": taylor_seconds}
