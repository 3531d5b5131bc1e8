"""Figures of the unfolding flow (issue 16): unfolded against true marginals with ratio panels, posteriors of
single events, calibration (rank histograms, coverage against nominal), the top-mass shift test and the IBU
comparison. Each writes PNG and PDF files into a directory; :func:`plot_unfolding` draws them all."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping

import numpy as np

from . import unfolding as unf
from .plotting import hep, plt, save_figure


def _save(fig, directory, name: str) -> list[Path]:
    return save_figure(fig, Path(directory) / f"{name}.png")


def _axis(name: str) -> str:
    label, unit = unf.OBSERVABLES.get(name, (name, ""))
    return f"{label} [{unit}]" if unit else label


def plot_marginals(metrics: Mapping, figures: Mapping, directory, title: str = "") -> list[Path]:
    seed = metrics["seeds"][0]
    names = list(unf.OBSERVABLES)
    fig, axes = plt.subplots(2, len(names), figsize=(4.2 * len(names), 7), gridspec_kw={"height_ratios": [3, 1]},
                             sharex="col")
    for i, k in enumerate(names):
        c = metrics["per_seed"][str(seed)]["closure"][k]
        edges, t, u = np.asarray(c["edges"]), np.asarray(c["truth"], float), np.asarray(c["unfolded"], float)
        axes[0, i].stairs(t, edges, label="truth (parton level)", lw=2, color="black")
        axes[0, i].stairs(u, edges, label="unfolded (flow)", lw=2, color="tab:red")
        axes[0, i].set_title(f"$\\chi^2$/ndf {c['chi2_ndf']:.2f}", fontsize=12)
        ratio = np.where(t > 0, u / np.maximum(t, 1), np.nan)
        err = np.where(t > 0, np.sqrt(t + u) / np.maximum(t, 1), np.nan)
        mid = 0.5 * (edges[1:] + edges[:-1])
        axes[1, i].errorbar(mid, ratio, err, fmt="o", ms=3, color="tab:red")
        axes[1, i].axhline(1, color="black", lw=1)
        axes[1, i].axhspan(0.98, 1.02, color="grey", alpha=0.3)
        axes[1, i].set_ylim(0.8, 1.2)
        axes[1, i].set_xlabel(_axis(k), fontsize=12)
        axes[0, i].tick_params(labelsize=10)
        axes[1, i].tick_params(labelsize=10)
    axes[0, 0].set_ylabel("events")
    axes[1, 0].set_ylabel("unfolded / truth")
    axes[0, 0].legend(fontsize=10)
    k = metrics["per_seed"][str(seed)].get("closure_draws", 1)
    fig.suptitle(f"{title}: closure on held-out events (seed {seed}, {k} draws per event, weight 1/{k})")
    return _save(fig, directory, "unfolding_marginals")


def plot_calibration(metrics: Mapping, directory, title: str = "") -> list[Path]:
    seed = metrics["seeds"][0]
    cal = metrics["per_seed"][str(seed)]["calibration"]
    names = list(cal)
    cols = 9
    rows = int(np.ceil(len(names) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.8 * rows), squeeze=False)
    for ax, k in zip(axes.flat, names):
        h = np.asarray(cal[k]["pit_histogram"], float)
        ax.stairs(h / h.mean(), np.linspace(0, 1, len(h) + 1), color="tab:blue", lw=2)
        ax.axhline(1, color="black", lw=1)
        ax.set_ylim(0, 2)
        ax.set_title(f"{k}\nKS {cal[k]['ks']:.3f}", fontsize=9)
        ax.tick_params(labelsize=8)
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    fig.suptitle(f"{title}: rank of the truth among the posterior draws (flat: calibrated; seed {seed})")
    paths = _save(fig, directory, "unfolding_ranks")

    fig, ax = plt.subplots(figsize=(max(10, 0.5 * len(names)), 6))
    x = np.arange(len(names))
    for level, color in ((68, "tab:blue"), (95, "tab:orange")):
        ax.plot(x, [cal[k][f"coverage{level}"] for k in names], "o", color=color, label=f"{level} % intervals")
        ax.axhspan(level / 100 - 0.02, level / 100 + 0.02, color=color, alpha=0.2)
    ax.set_xticks(x, names, rotation=90, fontsize=9)
    ax.set_ylabel("coverage")
    ax.legend(fontsize=11)
    ax.set_title(f"{title}: coverage of the central posterior intervals (bands: nominal +- 2 %)", fontsize=12)
    return paths + _save(fig, directory, "unfolding_coverage")


def plot_posteriors(metrics: Mapping, figures: Mapping, directory, title: str = "") -> list[Path]:
    seed = metrics["seeds"][0]
    draws, truth = figures["examples"][seed]
    names = list(unf.TARGETS) + list(unf.OBSERVABLES)
    show = ["m_tt", "pt_t_had", "m_t_had", "cos_theta_lep"]
    fig, axes = plt.subplots(len(show), len(draws), figsize=(3.4 * len(draws), 2.8 * len(show)), squeeze=False)
    for j in range(len(draws)):
        for i, k in enumerate(show):
            c = names.index(k)
            ax = axes[i, j]
            ax.hist(draws[j][:, c], bins=30, color="tab:red", alpha=0.6, density=True)
            ax.axvline(truth[j, c], color="black", lw=2)
            ax.tick_params(labelsize=8)
            if j == 0:
                ax.set_ylabel(_axis(k), fontsize=9)
    fig.suptitle(f"{title}: posteriors of single events (histogram) and the truth (line)")
    return _save(fig, directory, "unfolding_posteriors")


def plot_mass_shift(metrics: Mapping, directory, title: str = "") -> list[Path]:
    fig, ax = plt.subplots(figsize=(8, 6))
    for seed, tests in metrics["mass_shift"].items():
        x = [v["true_shift"] for v in tests.values()]
        y = [v["unfolded_shift"] for v in tests.values()]
        e = [v["unfolded_shift_error"] for v in tests.values()]
        ax.errorbar(x, y, e, fmt="o", ms=7, label=f"nominal prior, seed {seed}")
    if "mass_shift_reweighted" in metrics:
        t = metrics["mass_shift_reweighted"]
        ax.errorbar([v["true_shift"] for v in t.values()], [v["unfolded_shift"] for v in t.values()],
                    [v["unfolded_shift_error"] for v in t.values()], fmt="s", ms=7, label="after one reweighting")
    lim = 1.3 * max(abs(v["true_shift"]) for tests in metrics["mass_shift"].values() for v in tests.values())
    ax.plot([-lim, lim], [-lim, lim], color="black", lw=1, label="no bias")
    ax.fill_between([-lim, lim], [-0.8 * lim, 0.8 * lim], [-1.2 * lim, 1.2 * lim], color="grey", alpha=0.2,
                    label="bias within 20 %")
    ax.set_xlabel("true top-mass shift of the pseudo-data [GeV]")
    ax.set_ylabel("unfolded top-mass shift [GeV]")
    ax.legend(fontsize=11)
    ax.set_title(f"{title}: prior dependence", fontsize=12)
    return _save(fig, directory, "unfolding_mass_shift")


def plot_ibu(metrics: Mapping, directory, title: str = "") -> list[Path]:
    ibu = metrics["ibu"]
    fig, axes = plt.subplots(2, len(ibu), figsize=(8 * len(ibu), 8), gridspec_kw={"height_ratios": [3, 1]},
                             sharex="col", squeeze=False)
    for i, (k, m) in enumerate(ibu.items()):
        edges = np.asarray(m["edges"])
        mid = 0.5 * (edges[1:] + edges[:-1])
        t = np.asarray(m["expected"], float)
        axes[0, i].stairs(np.asarray(m["expected"]), edges, color="black", lw=2, label="truth (expected)")
        axes[0, i].errorbar(mid, m["ibu"], m["ibu_error"], fmt="s", ms=4, color="tab:blue",
                            label=f"IBU, {m['iterations']} iterations")
        axes[0, i].errorbar(mid, m["flow"], m["flow_error"], fmt="o", ms=4, color="tab:red", label="flow")
        axes[0, i].set_yscale("log")
        axes[0, i].legend(fontsize=11)
        for vals, err, color in ((m["ibu"], m["ibu_error"], "tab:blue"), (m["flow"], m["flow_error"], "tab:red")):
            axes[1, i].errorbar(mid, np.asarray(vals) / np.maximum(t, 1), np.asarray(err) / np.maximum(t, 1),
                                fmt="o", ms=3, color=color)
        axes[1, i].axhline(1, color="black", lw=1)
        axes[1, i].set_ylim(0.7, 1.3)
        axes[1, i].set_xlabel(_axis(k))
        axes[0, i].set_title(f"flow/IBU uncertainty (median over bins) {m['error_ratio_median']:.2f}", fontsize=12)
    axes[1, 0].set_ylabel("/ expected truth")
    fig.suptitle(f"{title}: against iterative Bayesian unfolding")
    return _save(fig, directory, "unfolding_ibu")


def plot_unfolding(metrics: Mapping, figures: Mapping, directory: str | os.PathLike, title: str = "") -> list[Path]:
    plt.style.use(hep.style.ROOT)
    return (plot_marginals(metrics, figures, directory, title) + plot_calibration(metrics, directory, title)
            + plot_posteriors(metrics, figures, directory, title) + plot_mass_shift(metrics, directory, title)
            + plot_ibu(metrics, directory, title))
