"""Figures of the skim stage: the cutflow and the 28 features of signal against background.

Histograms are ``hist`` objects drawn with ``mplhep``; every figure is written as PNG and PDF, atomically.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import hist
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import mplhep as hep  # noqa: E402
import numpy as np  # noqa: E402

from .features import BTAG_FEATURES, FEATURES, feature_table  # noqa: E402
from .io import atomic_path  # noqa: E402


def save_figure(fig, path: str | os.PathLike) -> list[Path]:
    """Save ``fig`` at ``path`` (its suffix is replaced) as PNG and PDF, atomically; close it."""
    path = Path(path)
    written = []
    # the tight bounding box once for both formats (computing it walks every tick of every axis: for the
    # 28-panel figures it was most of the plotting time)
    bbox = fig.get_tightbbox(fig.canvas.get_renderer()).padded(0.1)
    for ext in (".png", ".pdf"):
        out = path.with_suffix(ext)
        with atomic_path(out) as tmp:
            fig.savefig(tmp, format=ext[1:], dpi=110, bbox_inches=bbox)
        written.append(out)
    plt.close(fig)
    return written


@functools.lru_cache(maxsize=4)
def _table(units: str):
    return feature_table(units=units)


def feature_axis_label(name: str, units: str) -> str:
    """The axis label of a column from the feature table (unit in brackets); other names as they are."""
    table = _table(units)
    return table[name].axis_label if name in table else name


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
        ax.minorticks_off()  # 28 panels: the minor ticks were most of the drawing time
    axes.flat[0].legend(fontsize=13)
    if title:
        fig.suptitle(title, fontsize=20)
    fig.subplots_adjust(left=0.04, right=0.99, bottom=0.05, top=0.95, wspace=0.35, hspace=0.3)
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
    """Training NLL and the median (the early-stopping criterion) and mean validation NLL per epoch, the learning
    rate on a second axis, the best epoch marked, and optionally a baseline (e.g. a Gaussian fit) and the test
    NLL (medians) as horizontal lines. The mean can run off the scale: it is dominated by a few events."""
    plt.style.use(hep.style.ROOT)
    fig, ax = plt.subplots(figsize=(9, 6))
    epochs = [h["epoch"] for h in history]
    train = [h["train_nll"] for h in history]
    median = [h.get("val_median_nll", h["val_nll"]) for h in history]
    ax.plot(epochs, train, "o-", label="training")
    ax.plot(epochs, median, "s-", label="validation (median)")
    ax.plot(epochs, [h["val_nll"] for h in history], "^:", alpha=0.6, label="validation (mean)")
    best = epochs[int(np.argmin(median))]
    ax.axvline(best, color="grey", ls=":", label=f"best epoch {best}")
    if baseline is not None:
        ax.axhline(baseline, color="black", ls="--", label=f"multivariate Gaussian ({baseline:.2f})")
    if test_nll is not None:
        ax.axhline(test_nll, color="tab:red", ls="-.", label=f"test ({test_nll:.2f})")
    values = train + median + ([baseline] if baseline is not None else [])
    ax.set_ylim(min(values) - 0.5, max(values) + 1.0)
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


def plot_overlays_with_ratio(simulated: np.ndarray, generated: np.ndarray, names: list[str],
                             path: str | os.PathLike, units: str = "GeV", title: str = "",
                             labels: tuple[str, str] = ("simulated", "generated")) -> list[Path]:
    """Per feature: unit-area histograms of simulated (band: statistical uncertainty) and generated (points
    with errors) events, and the ratio generated / simulated with both uncertainties, on a common binning."""
    plt.style.use(hep.style.ROOT)
    ncols = 7
    nrows = int(np.ceil(len(names) / ncols))
    fig = plt.figure(figsize=(4.2 * ncols, 4.6 * nrows))
    outer = fig.add_gridspec(nrows, ncols, hspace=0.45, wspace=0.35)
    for k, name in enumerate(names):
        inner = outer[k // ncols, k % ncols].subgridspec(2, 1, height_ratios=(3, 1), hspace=0.05)
        ax, rax = fig.add_subplot(inner[0]), fig.add_subplot(inner[1])
        axis = feature_binning(name, simulated[:, k], generated[:, k])
        edges = axis.edges
        n_s, _ = np.histogram(np.clip(simulated[:, k], edges[0], edges[-1]), edges)
        n_g, _ = np.histogram(np.clip(generated[:, k], edges[0], edges[-1]), edges)
        f_s, f_g = n_s / max(n_s.sum(), 1), n_g / max(n_g.sum(), 1)
        e_s, e_g = np.sqrt(n_s) / max(n_s.sum(), 1), np.sqrt(n_g) / max(n_g.sum(), 1)
        centers = 0.5 * (edges[1:] + edges[:-1])
        hep.histplot(f_s, edges, ax=ax, label=labels[0], histtype="step", color="tab:blue")
        ax.stairs(f_s + e_s, edges, baseline=f_s - e_s, fill=True, alpha=0.3, color="tab:blue")
        ax.errorbar(centers, f_g, yerr=e_g, fmt="o", ms=2.5, color="tab:orange", label=labels[1])
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.where(f_s > 0, f_g / f_s, np.nan)
            r_err = np.where(f_s > 0, e_g / f_s, np.nan)
            band = np.where(f_s > 0, e_s / f_s, np.nan)
        rax.stairs(1 + band, edges, baseline=1 - band, fill=True, alpha=0.3, color="tab:blue")
        rax.errorbar(centers, ratio, yerr=r_err, fmt="o", ms=2.5, color="tab:orange")
        rax.axhline(1.0, color="black", lw=0.8)
        rax.set_ylim(0.5, 1.5)
        rax.set_xlabel(feature_axis_label(name, units), fontsize=12)
        rax.set_ylabel("gen./sim.", fontsize=10)
        ax.set_xticklabels([])
        ax.set_ylabel("fraction", fontsize=11)
        for a in (ax, rax):
            a.tick_params(labelsize=9)
            a.set_xlim(edges[0], edges[-1])
            a.minorticks_off()  # 56 axes: the minor ticks were most of the drawing time
        if k == 0:
            ax.legend(fontsize=10)
    if title:
        fig.suptitle(title, fontsize=20)
    return save_figure(fig, path)


def plot_correlations(corr_simulated: np.ndarray, corr_generated: np.ndarray, names: list[str],
                      path: str | os.PathLike, title: str = "") -> list[Path]:
    """Correlation matrices of simulated and generated events side by side, and their difference."""
    plt.style.use(hep.style.ROOT)
    fig, axes = plt.subplots(1, 3, figsize=(30, 10))
    diff = corr_generated - corr_simulated
    lim = max(float(np.abs(diff).max()), 0.05)
    for ax, mat, label, cmap, vmax in ((axes[0], corr_simulated, "simulated", "RdBu_r", 1.0),
                                       (axes[1], corr_generated, "generated", "RdBu_r", 1.0),
                                       (axes[2], diff, "generated - simulated", "PuOr_r", lim)):
        im = ax.imshow(mat, cmap=cmap, vmin=-vmax, vmax=vmax)
        ax.set_xticks(range(len(names)), names, rotation=90, fontsize=9)
        ax.set_yticks(range(len(names)), names, fontsize=9)
        ax.set_title(label, fontsize=16)
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    if title:
        fig.suptitle(title, fontsize=20)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_c2st(generated, reference, path: str | os.PathLike, title: str = "") -> list[Path]:
    """Classifier two-sample test: held-out score distributions of simulated and generated events, and the ROC
    curves of the generated-against-simulated and the MC-against-MC tests (``metrics.C2STResult`` objects)."""
    plt.style.use(hep.style.ROOT)
    fig, (ax, rax) = plt.subplots(1, 2, figsize=(16, 7))
    bins = np.linspace(0, 1, 41)
    ax.hist(generated.scores_a, bins, histtype="step", density=True, label="simulated (held out)")
    ax.hist(generated.scores_b, bins, histtype="step", density=True, label="generated (held out)")
    ax.set_xlabel("classifier score: P(generated)")
    ax.set_ylabel("density")
    ax.legend(fontsize=12)
    rax.plot(generated.fpr, generated.tpr, label=f"generated vs simulated: AUC {generated.auc:.3f} "
             f"$\\pm$ {generated.auc_error:.3f}")
    rax.plot(reference.fpr, reference.tpr, label=f"simulated vs simulated: AUC {reference.auc:.3f} "
             f"$\\pm$ {reference.auc_error:.3f}")
    rax.plot([0, 1], [0, 1], color="grey", ls=":")
    rax.set_xlabel("false positive rate")
    rax.set_ylabel("true positive rate")
    rax.legend(fontsize=12, loc="lower right")
    if title:
        fig.suptitle(title, fontsize=16)
    fig.tight_layout()
    return save_figure(fig, path)
