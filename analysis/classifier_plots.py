"""Figures of the classifier stage: ROC curves, score distributions, feature importances, training curves."""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import mplhep as hep  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.metrics import roc_curve  # noqa: E402

from .plotting import save_figure  # noqa: E402


def plot_classifier(kind: str, y: np.ndarray, score: np.ndarray, weight: np.ndarray, auc: float,
                    importance: dict[str, float], history: list[dict], path: str | os.PathLike,
                    title: str = "") -> list[Path]:
    """One classifier on the reference partition: normalised score distributions of signal and background,
    the ROC curve, the permutation importances (AUC drop) and the training curve."""
    plt.style.use(hep.style.ROOT)
    fig, axes = plt.subplots(2, 2, figsize=(16, 13))
    ax = axes[0, 0]
    bins = np.linspace(0, 1, 41)
    for label, name in ((0, "background"), (1, "signal")):
        m = y == label
        ax.hist(score[m], bins, weights=weight[m], density=True, histtype="step", lw=2, label=f"{name} (simulated)")
    ax.set_yscale("log")
    ax.set_xlabel(f"{kind} score")
    ax.set_ylabel("normalised")
    ax.legend(fontsize=13)
    ax = axes[0, 1]
    fpr, tpr, _ = roc_curve(y, score)
    ax.plot(tpr, 1 - fpr, lw=2, label=f"{kind}: AUC {auc:.4f}")
    ax.set_xlabel("signal efficiency")
    ax.set_ylabel("background rejection")
    ax.legend(fontsize=13, loc="lower left")
    ax = axes[1, 0]
    top = sorted(importance.items(), key=lambda kv: kv[1])[-15:]
    ax.barh([k for k, _ in top], [v for _, v in top])
    ax.tick_params(axis="y", labelsize=11)
    ax.set_xlabel("ROC AUC drop when permuted")
    ax = axes[1, 1]
    if history:
        x = [h.get("epoch", h.get("iteration")) for h in history]
        ax.plot(x, [h["train_loss"] for h in history], label="training")
        ax.plot(x, [h["val_loss"] for h in history], label="validation")
        ax.set_xlabel("epoch" if "epoch" in history[0] else "boosting iteration")
        ax.set_ylabel("weighted binary cross-entropy")
        ax.legend(fontsize=13)
    if title:
        fig.suptitle(title, fontsize=18)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_roc_comparison(curves: dict[str, tuple[np.ndarray, np.ndarray, float]], path: str | os.PathLike,
                        title: str = "") -> list[Path]:
    """ROC curves of several classifiers (``name -> (y, score, auc)``) on the same reference events, with the
    background rejection on a log scale."""
    plt.style.use(hep.style.ROOT)
    fig, ax = plt.subplots(figsize=(9, 8))
    for name, (y, score, auc) in curves.items():
        fpr, tpr, _ = roc_curve(y, score)
        ok = fpr > 0
        ax.plot(tpr[ok], 1 / fpr[ok], lw=2, label=f"{name}: AUC {auc:.4f}")
    ax.set_yscale("log")
    ax.set_xlabel("signal efficiency")
    ax.set_ylabel("1 / background efficiency")
    ax.legend(fontsize=14)
    if title:
        ax.set_title(title, fontsize=14)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_taylor(tc, path: str | os.PathLike, title: str = "", top: int = 15) -> list[Path]:
    """Taylor coefficients of a network (:class:`models.taylor.TaylorCoefficients`): the ``top`` largest first-
    and second-order <|t|> as ranked bars, and the symmetric matrix of all second-order <|t_ij|>."""
    plt.style.use(hep.style.ROOT)
    fig = plt.figure(figsize=(30, 11))
    grid = fig.add_gridspec(1, 3, width_ratios=[1, 1, 1.3], wspace=1.0)
    names = list(tc.names)
    d = len(names)
    order = np.argsort(-tc.first)[:top]
    ax = fig.add_subplot(grid[0])
    ax.barh(np.arange(len(order))[::-1], tc.first[order], color="tab:blue")
    ax.set_yticks(np.arange(len(order))[::-1], [names[i] for i in order], fontsize=13)
    ax.set_xlabel(r"first order $\langle|t_i|\rangle$")
    ax = fig.add_subplot(grid[1])
    if tc.second is not None:
        iu = np.triu_indices(d)
        vals = tc.second[iu]
        best = np.argsort(-vals)[:top]
        labels = [f"{names[iu[0][k]]}, {names[iu[1][k]]}" for k in best]
        ax.barh(np.arange(len(best))[::-1], vals[best], color="tab:orange")
        ax.set_yticks(np.arange(len(best))[::-1], labels, fontsize=12)
        ax.set_xlabel(r"second order $\langle|t_{ij}|\rangle$")
        ax = fig.add_subplot(grid[2])
        full = tc.second + np.triu(tc.second, 1).T
        im = ax.imshow(full, cmap="viridis", origin="upper")
        ax.set_xticks(range(d), names, rotation=90, fontsize=9)
        ax.set_yticks(range(d), names, fontsize=9)
        fig.colorbar(im, ax=ax, fraction=0.046, label=r"$\langle|t_{ij}|\rangle$")
        ax.set_title("second order (symmetric)", fontsize=14)
    fig.suptitle(title or "Taylor coefficients", fontsize=20)
    return save_figure(fig, path)
