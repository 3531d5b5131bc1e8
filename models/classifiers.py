"""Signal-against-background classifiers: a boosted decision tree, a neural network on the engineered features
and a transformer on the reconstructed objects.

* ``bdt``: scikit-learn's histogram gradient boosting (the LightGBM algorithm; Ke et al., NeurIPS 2017), with
  early stopping on the validation partition. Stored with skops, whose loader accepts only the listed types.
* ``nn``: a torch MLP on log-compressed, standardised features, binary cross-entropy, AdamW, early stopping on the
  validation loss with the best epoch restored. Stored as tensors, loaded with ``weights_only=True``.
* ``transformer``: :class:`models.objectnet.ObjectTransformer` on the objects (lepton, MET, jets) instead of the
  features; ``score`` takes the tuple ``(objects, p4, mask, event)``. Trained by the same loop as ``nn``, stored
  the same way.

Both are trained with the classes weighted to equal total weight, so the score is a balanced posterior in [0, 1],
signal-like near 1. :class:`Classifier` is the common interface: ``score(x)`` for an event matrix.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.metrics import roc_auc_score

from analysis.config import BDTConfig, NNConfig
from analysis.io import InputError, atomic_path


OBJECT_CLASSIFIERS = ("transformer",)
"""Classifiers of the reconstructed objects, not of the feature matrix."""


def balanced_weights(y: np.ndarray) -> np.ndarray:
    """Per-event weights giving each class the same total weight (mean weight 1)."""
    y = np.asarray(y).astype(int)
    counts = np.bincount(y, minlength=2).astype(float)
    if np.any(counts == 0):
        raise ValueError(f"both classes are needed to train a classifier (events per class: {counts.tolist()})")
    return (len(y) / (2.0 * counts))[y]


@dataclasses.dataclass
class Classifier:
    """A trained classifier: ``kind`` (bdt or nn), its ``features`` and the fitted estimator."""

    kind: str
    features: list[str]
    estimator: object
    history: list[dict] = dataclasses.field(default_factory=list)
    train_seconds: float = 0.0

    def score(self, x, batch_size: int = 200_000) -> np.ndarray:
        """Signal probability of each event (rows of ``x``; for an object classifier the tuple of its inputs),
        float64 in [0, 1]."""
        if self.kind in OBJECT_CLASSIFIERS:
            from .objectnet import object_scores
            if not isinstance(x, tuple):
                raise ValueError(f"{self.kind}: expected the tuple (objects, p4, mask, event)")
            return object_scores(self.estimator, x)
        x = np.asarray(x, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != len(self.features):
            raise ValueError(f"{self.kind}: expected events x {len(self.features)} features, got {x.shape}")
        out = np.empty(len(x))
        for i in range(0, len(x), batch_size):
            chunk = x[i:i + batch_size]
            if self.kind == "bdt":
                out[i:i + batch_size] = self.estimator.predict_proba(chunk)[:, 1]
            else:
                with torch.no_grad():
                    out[i:i + batch_size] = torch.sigmoid(self.estimator(torch.from_numpy(chunk))).numpy()[:, 0]
        return out


# -- the neural network -------------------------------------------------------------------------------------------


class MLPClassifier(torch.nn.Module):
    """MLP with its input transform: x -> (log1p(x) where ``log_mask`` else x - shift) / scale -> logit."""

    def __init__(self, n_features: int, hidden: tuple[int, ...]):
        super().__init__()
        self.hidden = tuple(hidden)
        self.register_buffer("log_mask", torch.zeros(n_features, dtype=torch.bool))
        self.register_buffer("shift", torch.zeros(n_features))
        self.register_buffer("scale", torch.ones(n_features))
        layers: list[torch.nn.Module] = []
        width = n_features
        for h in hidden:
            layers += [torch.nn.Linear(width, h), torch.nn.SiLU()]
            width = h
        layers.append(torch.nn.Linear(width, 1))
        self.net = torch.nn.Sequential(*layers)

    def fit_transform(self, x: np.ndarray) -> None:
        """Set the input transform from training events: log1p for non-negative features with a long tail."""
        x = torch.as_tensor(x, dtype=torch.float32)
        nonneg = (x.min(dim=0).values >= 0) & (x.max(dim=0).values > 10 * x.median(dim=0).values.clamp_min(1e-6))
        self.log_mask.copy_(nonneg)
        z = torch.where(self.log_mask, torch.log1p(x.clamp_min(0)), x)
        self.shift.copy_(z.mean(dim=0))
        self.scale.copy_(z.std(dim=0).clamp_min(1e-6))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = torch.where(self.log_mask, torch.log1p(x.clamp_min(0)), x)
        return self.net((z - self.shift) / self.scale)


def train_nn(x_train: np.ndarray, y_train: np.ndarray, x_val: np.ndarray, y_val: np.ndarray, cfg: NNConfig,
             seed: int, on_epoch: Callable[[dict], None] | None = None) -> tuple[MLPClassifier, list[dict]]:
    """Train the MLP with class-balanced binary cross-entropy; early stopping on the validation loss."""
    torch.manual_seed(seed)
    model = MLPClassifier(x_train.shape[1], cfg.hidden_features)
    model.fit_transform(x_train)
    history = train_binary(model, x_train, y_train, x_val, y_val, epochs=cfg.epochs, batch_size=cfg.batch_size,
                           learning_rate=cfg.learning_rate, weight_decay=cfg.weight_decay, patience=cfg.patience,
                           seed=seed, on_epoch=on_epoch, name="nn")
    return model, history


def train_binary(model: torch.nn.Module, x_train, y_train: np.ndarray, x_val, y_val: np.ndarray, *, epochs: int,
                 batch_size: int, learning_rate: float, weight_decay: float, patience: int, seed: int,
                 on_epoch: Callable[[dict], None] | None = None, name: str = "classifier") -> list[dict]:
    """The one training loop of the network classifiers: ``model(*inputs) -> logits (n, 1)`` with inputs one
    array or a tuple of arrays (events first), class-balanced binary cross-entropy, AdamW with a cosine learning
    rate, early stopping on the validation loss with the best epoch restored (in place); returns the history."""
    from .training import _length, _rows, _tensor

    gen = torch.Generator().manual_seed(seed)
    xt, xv = _tensor(x_train), _tensor(x_val)
    call = (lambda m, c: m(*c)) if isinstance(xt, tuple) else (lambda m, c: m(c))
    yt, yv = torch.as_tensor(y_train, dtype=torch.float32), torch.as_tensor(y_val, dtype=torch.float32)
    wt = torch.as_tensor(balanced_weights(y_train), dtype=torch.float32)
    wv = torch.as_tensor(balanced_weights(y_val), dtype=torch.float32)
    opt = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)
    loss_fn = torch.nn.BCEWithLogitsLoss(reduction="none")
    best, best_state, bad, history = float("inf"), None, 0, []
    n = _length(xt)
    for epoch in range(1, epochs + 1):
        model.train()
        perm = torch.randperm(n, generator=gen)
        total = 0.0
        for i in range(0, n, batch_size):
            idx = perm[i:i + batch_size]
            loss = (loss_fn(call(model, _rows(xt, idx))[:, 0], yt[idx]) * wt[idx]).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        sched.step()
        model.eval()
        with torch.no_grad():
            nv = _length(xv)
            logits = torch.cat([call(model, _rows(xv, slice(lo, lo + 65536)))[:, 0] for lo in range(0, nv, 65536)])
            val = float((loss_fn(logits, yv) * wv).sum() / wv.sum())
            auc = float(roc_auc_score(y_val, logits.numpy()))
        if not np.isfinite(val):
            raise FloatingPointError(f"{name}: validation loss is not finite at epoch {epoch}")
        rec = {"epoch": epoch, "train_loss": total / n, "val_loss": val, "val_auc": auc}
        history.append(rec)
        if on_epoch:
            on_epoch(rec)
        if val < best - 1e-6:
            best, bad = val, 0
            best_state = {k: v.clone() for k, v in model.state_dict().items()}
        else:
            bad += 1
            if bad >= patience:
                break
    model.load_state_dict(best_state)
    model.eval()
    return history


# -- the boosted decision tree ------------------------------------------------------------------------------------


def train_bdt(x_train: np.ndarray, y_train: np.ndarray, x_val: np.ndarray, y_val: np.ndarray, cfg: BDTConfig,
              seed: int) -> tuple[HistGradientBoostingClassifier, list[dict]]:
    """Histogram gradient boosting with class-balanced weights; stops when the validation loss has not improved
    for ``cfg.patience`` iterations."""
    bdt = HistGradientBoostingClassifier(
        max_iter=cfg.max_iter, learning_rate=cfg.learning_rate, max_leaf_nodes=cfg.max_leaf_nodes,
        min_samples_leaf=cfg.min_samples_leaf, l2_regularization=cfg.l2_regularization, early_stopping=True,
        n_iter_no_change=cfg.patience, scoring="loss", random_state=seed)
    bdt.fit(x_train, y_train, sample_weight=balanced_weights(y_train), X_val=x_val, y_val=y_val,
            sample_weight_val=balanced_weights(y_val))
    history = [{"iteration": i + 1, "train_loss": float(-t), "val_loss": float(-v)}
               for i, (t, v) in enumerate(zip(bdt.train_score_[1:], bdt.validation_score_[1:]))]
    return bdt, history


def train_classifier(kind: str, features: list[str], x_train: np.ndarray, y_train: np.ndarray, x_val: np.ndarray,
                     y_val: np.ndarray, cfg, seed: int = 0,
                     on_epoch: Callable[[dict], None] | None = None) -> Classifier:
    """Train classifier ``kind`` (``bdt`` with ``cfg.bdt``, ``nn`` with ``cfg.nn``; ``cfg`` is the config's
    classifiers section)."""
    for name, arr in (("training", x_train), ("validation", x_val)):
        if not all(np.all(np.isfinite(np.asarray(a, dtype=np.float64))) for a in
                   (arr if isinstance(arr, tuple) else (arr,))):
            raise ValueError(f"{kind}: non-finite values in the {name} events")
    t0 = time.perf_counter()
    if kind == "bdt":
        est, history = train_bdt(x_train, y_train, x_val, y_val, cfg.bdt, seed)
    elif kind == "nn":
        est, history = train_nn(x_train, y_train, x_val, y_val, cfg.nn, seed, on_epoch)
    elif kind == "transformer":
        from .objectnet import train_object_classifier
        est, history, _ = train_object_classifier(x_train, y_train, x_val, y_val, cfg.transformer, seed, on_epoch)
    else:
        raise ValueError(f"unknown classifier {kind!r}; known: bdt, nn, transformer")
    return Classifier(kind, list(features), est, history, time.perf_counter() - t0)


# -- storage ------------------------------------------------------------------------------------------------------


def save_classifier(path: str | Path, clf: Classifier) -> None:
    """Write ``clf`` atomically: ``bdt`` as a skops file, ``nn`` as a torch file of tensors and plain values."""
    meta = {"kind": clf.kind, "features": clf.features, "train_seconds": clf.train_seconds}
    with atomic_path(path) as tmp:
        if clf.kind == "bdt":
            import skops.io as sio

            sio.dump({"estimator": clf.estimator, "meta": json.dumps(meta)}, tmp)
        elif clf.kind in OBJECT_CLASSIFIERS:
            torch.save({"state_dict": clf.estimator.state_dict(), "architecture": clf.estimator.hyperparameters(),
                        "meta": meta}, tmp)
        else:
            torch.save({"state_dict": clf.estimator.state_dict(), "hidden": list(clf.estimator.hidden),
                        "meta": meta}, tmp)


# The exact types a BDT written by save_classifier contains beyond skops's built-in primitives (dict, list, str,
# tuple); a stored BDT may hold nothing else. Obtained by training HistGradientBoostingClassifiers through
# train_classifier("bdt", ...) + save_classifier and listing every type in the file's schema.json, with
# skops.io.get_untrusted_types(file=...) as the check (skops 0.16, scikit-learn 1.9, numpy 2.4). Float32 and
# float64 features, float, int and bool labels, balanced and imbalanced classes, 1 to 30 iterations: identical
# lists; the binary variants do not differ (a multiclass model would hold HalfMultinomialLoss instead; hepflows
# trains binary classifiers only). With skops 0.16, get_untrusted_types reports only TreePredictor, the rest are
# in its default-trusted set; they are listed so that a skops release that trusts fewer types by default still
# loads genuine files. No prefix matching: builtins.exec, os.system, operator.attrgetter, ... are refused.
_SKOPS_TRUSTED_TYPES = frozenset({
    "numpy.ndarray",
    "numpy.random._generator.Generator",
    "numpy.uint64",
    "sklearn._loss._loss.CyHalfBinomialLoss",
    "sklearn._loss.link.Interval",
    "sklearn._loss.link.LogitLink",
    "sklearn._loss.loss.HalfBinomialLoss",
    "sklearn.ensemble._hist_gradient_boosting.binning._BinMapper",
    "sklearn.ensemble._hist_gradient_boosting.gradient_boosting.HistGradientBoostingClassifier",
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
    "sklearn.preprocessing._label.LabelEncoder",
})


def _load_skops(path: Path) -> Classifier:
    """Load a BDT skops file; :class:`~analysis.io.InputError` for a corrupt file or one with any type outside
    :data:`_SKOPS_TRUSTED_TYPES` (checked before anything in it is constructed)."""
    import skops.io as sio

    def invalid(e: BaseException) -> InputError:
        return InputError(f"{path}: not a valid model file ({type(e).__name__}: {e}); rerun TrainClassifier to "
                          "write it again")

    try:
        untrusted = sio.get_untrusted_types(file=path)
    except Exception as e:  # zipfile.BadZipFile for a truncated file, KeyError/JSON errors for a damaged schema
        raise invalid(e) from None
    refused = sorted(set(untrusted) - _SKOPS_TRUSTED_TYPES)
    if refused:
        raise InputError(f"{path}: refusing to load a model file with types a hepflows BDT never contains: "
                         f"{', '.join(refused)}; delete it and rerun TrainClassifier")
    try:
        # only the allow-listed types are trusted here, so skops itself refuses anything else as well
        payload = sio.load(path, trusted=sorted(untrusted))
        meta = json.loads(payload["meta"])
        return Classifier(meta["kind"], meta["features"], payload["estimator"], train_seconds=meta["train_seconds"])
    except Exception as e:  # a damaged member (CRC, zlib), or not a payload written by save_classifier
        raise invalid(e) from None


def load_classifier(path: str | Path) -> Classifier:
    """Load a classifier written by :func:`save_classifier`, without executing stored code."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"classifier file not found: {path}")
    if path.suffix == ".skops":
        return _load_skops(path)
    from .io import load_tensor_file

    payload = load_tensor_file(path, "TrainClassifier")  # weights_only=True; InputError naming the file
    if not isinstance(payload, dict) or not ({"meta", "state_dict"} <= set(payload)
                                             and ("hidden" in payload or "architecture" in payload)):
        raise InputError(f"{path}: not a hepflows classifier file; rerun TrainClassifier to write it again")
    try:
        meta = payload["meta"]
        if "architecture" in payload:
            from .objectnet import ObjectTransformer
            model = ObjectTransformer(**{k: payload["architecture"][k] for k in
                                         ("object_features", "event_features", "dim", "heads", "layers", "pair")})
        else:
            model = MLPClassifier(len(meta["features"]), tuple(payload["hidden"]))
        model.load_state_dict(payload["state_dict"])
        model.eval()
        return Classifier(meta["kind"], meta["features"], model, train_seconds=meta["train_seconds"])
    except (KeyError, TypeError, ValueError, RuntimeError) as e:  # a damaged payload
        raise InputError(f"{path}: not a valid classifier file ({type(e).__name__}: {e}); rerun TrainClassifier "
                         "to write it again") from None


CLASSIFIER_FILES = {"bdt": "model.skops", "nn": "model.pt", "transformer": "model.pt"}


def occlusion_importance(clf: Classifier, x, y: np.ndarray, hide: dict[str, Callable], seed: int = 0,
                         max_events: int = 10_000) -> dict[str, float]:
    """Drop of the ROC AUC when each input group is hidden (``hide[name](x)`` returns the inputs without it), on at
    most ``max_events`` events (seeded choice): the importance of an object classifier's input groups, where
    permuting one feature would leave the others that encode it (e.g. four-momenta) in place."""
    n = len(x[0]) if isinstance(x, tuple) else len(x)
    rows = np.sort(np.random.default_rng(seed).choice(n, min(n, max_events), replace=False))
    sub = tuple(a[rows] for a in x) if isinstance(x, tuple) else x[rows]
    base = roc_auc_score(y[rows], clf.score(sub))
    out = {name: float(base - roc_auc_score(y[rows], clf.score(f(sub)))) for name, f in hide.items()}
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))


def permutation_importance(clf: Classifier, x: np.ndarray, y: np.ndarray, seed: int = 0, n_repeats: int = 3,
                           max_events: int = 10_000) -> dict[str, float]:
    """Drop of the ROC AUC when each feature is permuted (mean over ``n_repeats``), on at most ``max_events``
    events: model-agnostic, so both classifiers are ranked the same way (scikit-learn's
    ``permutation_importance`` with an AUC scorer)."""
    from sklearn.inspection import permutation_importance as sk_perm

    rng = np.random.default_rng(seed)
    if len(x) > max_events:
        rows = rng.choice(len(x), max_events, replace=False)
        x, y = x[rows], y[rows]

    class _Scorer:  # the estimator interface sklearn's permutation_importance needs
        def fit(self, *a):  # pragma: no cover - never called
            return self

    def auc(_, xx, yy):
        return roc_auc_score(yy, clf.score(xx))

    res = sk_perm(_Scorer(), x, y, scoring=auc, n_repeats=n_repeats, random_state=seed)
    return {f: float(v) for f, v in zip(clf.features, res.importances_mean)}
