"""Figures of the conditional applications (issue 15): what a physicist looks at for a neutrino or b-jet
regression: residuals against truth, the downstream jet assignment, calibration, per-event posteriors, and the
mass peaks a correction sharpens. Each function writes PNG and PDF files into a directory and returns their
paths."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping

import numpy as np

from .plotting import plt, save_figure, hep
from . import bjet, neutrino

_LABELS = {"w_mass": "W-mass solution", "dnn": "feed-forward (Huber)", "flow_sample": "flow, one sample",
           "flow_mode": "flow, mode", "flow_median": "flow, median",
           "flow_recalibrated": "flow, recalibrated quantiles", "truth": "true neutrino", "none": "no correction"}


def _save(fig, directory, name: str) -> list[Path]:
    return save_figure(fig, Path(directory) / f"{name}.png")


def plot_neutrino_regression(metrics: Mapping, example: Mapping, directory: str | os.PathLike,
                             title: str = "") -> list[Path]:
    """Residuals of pz and eta, the leptonic-b efficiency of the chi2 assignment per jet multiplicity, the rank
    histograms of the flow's posterior, and posteriors of pz for six events."""
    plt.style.use(hep.style.ROOT)
    objects, draws, estimates = example["objects"], example["draws"], example["estimates"]
    truth = neutrino.true_neutrino(objects)
    paths: list[Path] = []

    fig, axes = plt.subplots(1, 2, figsize=(16, 6))
    for name, nu in estimates.items():
        axes[0].hist(nu[:, 2] - truth[:, 2], bins=np.linspace(-300, 300, 81), histtype="step", lw=2,
                     label=f"{_LABELS.get(name, name)}: {metrics['resolution'][name]['pz']['resolution']:.1f} GeV")
        axes[1].hist(neutrino.eta_of(nu) - neutrino.eta_of(truth), bins=np.linspace(-4, 4, 81), histtype="step",
                     lw=2, label=f"{_LABELS.get(name, name)}: {metrics['resolution'][name]['eta']['resolution']:.2f}")
    axes[0].set_xlabel(r"$p_z^{\nu}$ estimated $-$ true [GeV]")
    axes[1].set_xlabel(r"$\eta^{\nu}$ estimated $-$ true")
    for ax in axes:
        ax.set_ylabel("events", fontsize=16)
        ax.legend(fontsize=11, title="resolution (half 16-84 %)", title_fontsize=11)
    fig.suptitle(f"{title}: neutrino resolution", fontsize=14)
    paths += _save(fig, directory, "neutrino_resolution")

    fig, ax = plt.subplots(figsize=(9, 6))
    for name, a in metrics["assignment"].items():
        eff = a["efficiency"]
        keys = [k for k in eff if eff[k]["events"]]
        ax.errorbar(range(len(keys)), [eff[k]["correct_b_lep"] for k in keys], yerr=[eff[k]["error"] for k in keys],
                    marker="o", capsize=3, label=_LABELS.get(name, name))
        ax.set_xticks(range(len(keys)), keys)
    ax.set_xlabel("jets in the event")
    ax.set_ylabel(r"$\chi^2$ assignment: leptonic b correct", fontsize=16)
    ax.legend(fontsize=11)
    ax.set_title(f"{title}: downstream jet assignment", fontsize=14)
    paths += _save(fig, directory, "neutrino_assignment")

    fig, axes = plt.subplots(1, 3, figsize=(18, 5.5))
    s = draws.shape[0]
    u = np.random.default_rng(0).uniform(size=truth.shape[0])
    for i, (ax, c) in enumerate(zip(axes, ("px", "py", "pz"))):
        pit = ((draws[..., i] < truth[None, :, i]).sum(axis=0) + u) / (s + 1)  # the randomised rank of the test
        ax.hist(pit, bins=np.linspace(0, 1, 21), histtype="stepfilled", alpha=0.6)
        ax.axhline(len(pit) / 20, color="k", ls="--", label="calibrated")
        cal = metrics["calibration"]["flow"][c]
        ax.set_title(f"{c}: KS {cal['ks']:.3f}, 68 % cover {cal['coverage68']:.3f}, 95 % {cal['coverage95']:.3f}",
                     fontsize=11)
        ax.set_xlabel(f"rank of the true {c} among {s} draws / {s + 1}", fontsize=13)
    axes[0].legend(fontsize=11)
    fig.suptitle(f"{title}: calibration of the flow posterior", fontsize=14)
    paths += _save(fig, directory, "neutrino_calibration")

    fig, axes = plt.subplots(2, 3, figsize=(18, 9))
    for j, ax in enumerate(axes.flat):
        ax.hist(draws[:, j, 2], bins=30, histtype="stepfilled", alpha=0.5, label="flow posterior")
        for name, style in (("truth", "k-"), ("w_mass", "r--"), ("flow_mode", "b:"), ("dnn", "g-.")):
            v = truth[j, 2] if name == "truth" else estimates[name][j, 2]
            ax.axvline(v, color=style[0], ls=style[1:], lw=2, label=_LABELS[name])
        ax.set_xlabel(r"$p_z^{\nu}$ [GeV]", fontsize=12)
    axes[0, 0].legend(fontsize=9)
    fig.suptitle(f"{title}: per-event posteriors", fontsize=14)
    paths += _save(fig, directory, "neutrino_posteriors")
    return paths


def _pt_bin_axes(axes, x, bins) -> None:
    """The reconstructed-pT bins as the x axis of each of ``axes``, with a legend; room between the panels."""
    for ax in axes:
        ax.set_xticks(x, bins, rotation=30)
        ax.set_xlabel(r"reconstructed jet $p_T$ [GeV]")
        ax.legend(fontsize=11)
    axes[0].figure.subplots_adjust(wspace=0.3)


def plot_bjet_regression(metrics: Mapping, example: Mapping, directory: str | os.PathLike,
                         title: str = "") -> list[Path]:
    """Resolution and bias of pT_pred / pT_true in pT bins, interval coverage in pT bins, the h -> bb and
    hadronic-top mass peaks with and without correction, and the response posteriors of six jets."""
    plt.style.use(hep.style.ROOT)
    paths: list[Path] = []
    bins = [k for k in metrics["resolution"]["none"] if k != "all"]
    x = np.arange(len(bins))
    fig, axes = plt.subplots(1, 2, figsize=(16, 6))
    for m, res in metrics["resolution"].items():
        axes[0].plot(x, [res[b]["resolution"] for b in bins], "o-", label=f"{_LABELS.get(m, m)} "
                     f"({res['all']['resolution']:.3f})")
        axes[1].plot(x, [res[b]["median"] for b in bins], "o-", label=_LABELS.get(m, m))
    axes[0].set_ylabel(r"effective resolution of $p_T^{pred}/p_T^{true}$", fontsize=16)
    axes[1].set_ylabel(r"median of $p_T^{pred}/p_T^{true}$", fontsize=16)
    axes[1].axhline(1.0, color="k", lw=1)
    _pt_bin_axes(axes, x, bins)
    fig.suptitle(f"{title}: b-jet energy regression", fontsize=14)
    paths += _save(fig, directory, "bjet_resolution")

    fig, axes = plt.subplots(1, 2, figsize=(16, 6))
    for m, cov in metrics["coverage"].items():
        for level, ax in zip(("50", "68"), axes):
            ax.plot(x, [cov[level][b] for b in bins], "o-", label=f"{_LABELS.get(m, m)} ({cov[level]['all']:.3f})")
    for level, ax in zip((0.50, 0.68), axes):
        ax.axhline(level, color="k", ls="--")
        ax.set_ylabel(f"coverage of the {round(100 * level)} % interval", fontsize=16)
    _pt_bin_axes(axes, x, bins)
    fig.suptitle(f"{title}: per-jet calibration", fontsize=14)
    paths += _save(fig, directory, "bjet_coverage")

    reference, predictions = example["reference"], example["predictions"]
    samples = list(reference)
    fig, axes = plt.subplots(1, len(samples), figsize=(8 * len(samples), 6), squeeze=False)
    for ax, s in zip(axes[0], samples):
        objects = reference[s]
        event, slot = bjet.b_jets(objects)
        for m in ("none", *predictions):
            factor = np.ones(len(event)) if m == "none" else predictions[m][s]["response"]
            p4 = bjet.corrected_jets(objects, event, slot, factor)
            peaks = metrics["masses"][m]
            if s not in peaks:
                continue
            mass = bjet.hbb_mass(objects, p4) if peaks[s]["peak"] == "h -> bb" else bjet.hadronic_top_mass(objects, p4)
            ax.hist(mass[np.isfinite(mass)], bins=np.linspace(0, 300, 61), histtype="step", lw=2,
                    label=f"{_LABELS.get(m, m)}: {100 * peaks[s]['relative_resolution']:.1f} %")
        if s in metrics["masses"]["none"]:
            ax.set_xlabel(f"{metrics['masses']['none'][s]['peak']} mass [GeV] ({s})")
        ax.legend(fontsize=11, title="relative resolution", title_fontsize=11)
    fig.suptitle(f"{title}: mass peaks with the corrected b jets", fontsize=14)
    paths += _save(fig, directory, "bjet_masses")

    fig, axes = plt.subplots(2, 3, figsize=(18, 9))
    for j, ax in enumerate(axes.flat):
        ax.hist(example["draws"][:, j], bins=30, histtype="stepfilled", alpha=0.5, label="flow posterior")
        ax.axvline(example["truth"][j], color="k", lw=2, label="true response")
        ax.set_xlabel(r"$p_T^{true}/p_T^{reco}$", fontsize=12)
    axes[0, 0].legend(fontsize=9)
    fig.suptitle(f"{title}: per-jet response posteriors", fontsize=14)
    paths += _save(fig, directory, "bjet_posteriors")
    return paths


_MASS_RANGES = {"m_lv": (40.0, 160.0), "m_jjj": (0.0, 500.0), "m_jlv": (0.0, 500.0), "m_bb": (0.0, 400.0),
                "m_wbb": (100.0, 800.0), "m_wwbb": (200.0, 1200.0)}


def plot_regressed_masses(samples: Mapping[str, tuple[Mapping, Mapping, np.ndarray]], path: str | os.PathLike,
                          title: str = "") -> list[Path]:
    """The high-level masses that feeding the regressions changes (:data:`analysis.feed.REGRESSED_FEATURES`),
    standard (dashed) against regressed (solid), per sample ``label -> (standard columns, regressed columns,
    weights)``, unit area; the legend gives each peak's half 16-84 % width."""
    from .feed import REGRESSED_FEATURES
    plt.style.use(hep.style.ROOT)
    fig, axes = plt.subplots(2, 3, figsize=(21, 12))
    fig.subplots_adjust(wspace=0.3, hspace=0.3)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, name in zip(axes.flat, REGRESSED_FEATURES):
        bins = np.linspace(*_MASS_RANGES[name], 61)
        for i, (label, (standard, regressed, weights)) in enumerate(samples.items()):
            for cols, style, kind in ((standard, "--", "standard"), (regressed, "-", "regressed")):
                x = np.asarray(cols[name], np.float64)
                q16, q84 = np.quantile(x, [0.16, 0.84])
                ax.hist(x, bins=bins, weights=weights, density=True, histtype="step", ls=style, lw=2,
                        color=colours[i % len(colours)], label=f"{label}, {kind} ({0.5 * (q84 - q16):.1f} GeV)")
        ax.set_xlabel(f"{name} [GeV]")
        ax.set_ylabel("unit area")
        ax.legend(fontsize=11)
    fig.suptitle(title or "high-level masses: standard against regressed neutrino and b jets")
    return save_figure(fig, path)
