"""Figures of the skim stage: the cutflow and the 28 features of signal against background.

Histograms are ``hist`` objects drawn with ``mplhep``; every figure is written as PNG and PDF, atomically.
"""

from __future__ import annotations

import os
from pathlib import Path

import hist
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import mplhep as hep  # noqa: E402
import numpy as np  # noqa: E402

from .features import BTAG_FEATURES, FEATURES  # noqa: E402
from .io import atomic_path  # noqa: E402

_GEV_FEATURES = {"lepton_pT", "missing_energy_magnitude", "jet1_pt", "jet2_pt", "jet3_pt", "jet4_pt",
                 "m_jj", "m_jjj", "m_lv", "m_jlv", "m_bb", "m_wbb", "m_wwbb"}


def save_figure(fig, path: str | os.PathLike) -> list[Path]:
    """Save ``fig`` at ``path`` (its suffix is replaced) as PNG and PDF, atomically; close it."""
    path = Path(path)
    written = []
    for ext in (".png", ".pdf"):
        out = path.with_suffix(ext)
        with atomic_path(out) as tmp:
            fig.savefig(tmp, format=ext[1:], dpi=110, bbox_inches="tight")
        written.append(out)
    plt.close(fig)
    return written


def feature_axis_label(name: str, units: str) -> str:
    return f"{name} [GeV]" if (units == "GeV" and name in _GEV_FEATURES) else name


def feature_binning(name: str, *samples: np.ndarray, bins: int = 40) -> hist.axis.Regular:
    """A common axis for one feature: discrete b-tag levels get one bin each, others span the 0.5-99.5 %
    quantiles of all samples together."""
    values = np.concatenate([np.asarray(s, dtype=float) for s in samples]) if samples else np.zeros(0)
    values = values[np.isfinite(values)]
    if name in BTAG_FEATURES:
        levels = np.unique(values) if values.size else np.array([0.0])
        if levels.size <= 8:
            lo, hi = float(levels.min()), float(levels.max())
            step = float(np.min(np.diff(levels))) if levels.size > 1 else 1.0
            n = int(round((hi - lo) / step)) + 1
            return hist.axis.Regular(n, lo - step / 2, hi + step / 2, name=name)
    if values.size == 0:
        return hist.axis.Regular(bins, 0.0, 1.0, name=name)
    lo, hi = np.quantile(values, [0.005, 0.995])
    if hi <= lo:
        lo, hi = lo - 0.5, hi + 0.5
    return hist.axis.Regular(bins, float(lo), float(hi), name=name)


def plot_features(
    samples: dict[str, tuple[dict[str, np.ndarray], np.ndarray]],
    path: str | os.PathLike,
    units: str = "GeV",
    title: str = "",
) -> list[Path]:
    """Unit-area distributions of the 28 features, one panel each, one line per sample.

    ``samples`` maps a legend label to ``(columns, weights)``.
    """
    plt.style.use(hep.style.ROOT)
    fig, axes = plt.subplots(4, 7, figsize=(28, 15))
    for ax, name in zip(axes.flat, FEATURES):
        axis = feature_binning(name, *(cols[name] for cols, _ in samples.values()))
        for label, (cols, w) in samples.items():
            h = hist.Hist(axis, storage=hist.storage.Weight())
            h.fill(np.asarray(cols[name]), weight=np.asarray(w))
            total = h.values().sum()
            if total > 0:
                hep.histplot(h / total, ax=ax, label=label, histtype="step", yerr=False, flow="none")
        ax.set_xlabel(feature_axis_label(name, units), fontsize=13)
        ax.set_ylabel("fraction of events", fontsize=13)
        ax.tick_params(labelsize=11)
    axes.flat[0].legend(fontsize=13)
    if title:
        fig.suptitle(title, fontsize=20)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_cutflow(cutflows: dict[str, dict], path: str | os.PathLike, title: str = "") -> list[Path]:
    """Cutflow per sample: events after each step (left) and efficiency relative to all events (right)."""
    plt.style.use(hep.style.ROOT)
    fig, (ax_n, ax_eff) = plt.subplots(1, 2, figsize=(16, 6))
    for label, cf in cutflows.items():
        steps = list(cf)
        counts = np.array([cf[s]["events"] for s in steps], dtype=float)
        x = np.arange(len(steps))
        ax_n.step(x, counts, where="mid", label=label, marker="o")
        first = counts[0] if counts[0] > 0 else 1.0
        ax_eff.step(x, counts / first, where="mid", label=label, marker="o")
        for ax in (ax_n, ax_eff):
            ax.set_xticks(x, steps, rotation=30, ha="right", fontsize=12)
    ax_n.set_yscale("log")
    ax_n.set_ylabel("events (unweighted)")
    ax_eff.set_ylabel("fraction of all events")
    ax_eff.set_ylim(0, 1.05)
    ax_n.legend(fontsize=12)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_training_history(history: list[dict], path: str | os.PathLike, title: str = "",
                          baseline: float | None = None, test_nll: float | None = None) -> list[Path]:
    """Training and validation negative log-likelihood per epoch, the learning rate on a second axis, the best
    epoch marked, and optionally a baseline (e.g. a Gaussian fit) and the test NLL as horizontal lines."""
    plt.style.use(hep.style.ROOT)
    fig, ax = plt.subplots(figsize=(9, 6))
    epochs = [h["epoch"] for h in history]
    ax.plot(epochs, [h["train_nll"] for h in history], "o-", label="training")
    ax.plot(epochs, [h["val_nll"] for h in history], "s-", label="validation")
    best = min(history, key=lambda h: h["val_nll"])
    ax.axvline(best["epoch"], color="grey", ls=":", label=f"best epoch {best['epoch']}")
    if baseline is not None:
        ax.axhline(baseline, color="black", ls="--", label=f"multivariate Gaussian ({baseline:.2f})")
    if test_nll is not None:
        ax.axhline(test_nll, color="tab:red", ls="-.", label=f"test ({test_nll:.2f})")
    ax.set_xlabel("epoch")
    ax.set_ylabel("negative log-likelihood per event")
    ax2 = ax.twinx()
    ax2.plot(epochs, [h["learning_rate"] for h in history], color="tab:green", alpha=0.5)
    ax2.set_ylabel("learning rate", color="tab:green")
    ax.legend(fontsize=12)
    if title:
        ax.set_title(title, fontsize=14)
    fig.tight_layout()
    return save_figure(fig, path)
