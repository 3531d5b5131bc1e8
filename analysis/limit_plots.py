"""Figures of the statistics stage: templates, limits against generated sample size and luminosity, the
generated-minus-simulated difference against the simulated band, and the closure test (results of
:func:`analysis.limits.run_scan`)."""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import mplhep as hep  # noqa: E402
import numpy as np  # noqa: E402

from .plotting import save_figure  # noqa: E402

_GREEN, _YELLOW = "#00cc00", "#ffcc00"


def _bands(rows: list[dict], key: str) -> np.ndarray:
    return np.asarray([r[key] for r in rows])


def _panels(n: int, height: float = 7):
    """One panel per systematic size, sharing the y axis."""
    plt.style.use(hep.style.ROOT)
    return plt.subplots(1, n, figsize=(8 * n, height), squeeze=False, sharey=True)


def _finish(fig, axes, ylabel: str, title: str, path) -> list[Path]:
    axes[0, 0].set_ylabel(ylabel)
    axes[0, 0].legend(fontsize=11)
    if title:
        fig.suptitle(title, fontsize=16)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_templates(results: dict, path: str | os.PathLike, title: str = "") -> list[Path]:
    """Score templates in the final binning: simulated and generated (largest N, each seed) background with
    their statistical uncertainties, the signal, and the ratio generated / simulated."""
    plt.style.use(hep.style.ROOT)
    t = results["templates"]
    edges = np.asarray(results["edges"])
    fig, (ax, rax) = plt.subplots(2, 1, figsize=(10, 10), gridspec_kw={"height_ratios": [3, 1]}, sharex=True)
    sim = np.asarray(t["simulated"]["yields"])
    sim_err = np.asarray(t["simulated"]["stat"])
    hep.histplot(sim, edges, yerr=sim_err, ax=ax, color="black", label=f"simulated ({results['simulated_events']:,} "
                 "events)")
    for s, tmpl in t["generated"].items():
        y = np.asarray(tmpl["yields"])
        hep.histplot(y, edges, yerr=np.asarray(tmpl["stat"]), ax=ax, label=f"generated, seed {s} "
                     f"({results['sizes'][-1]:,} events)")
        rax.errorbar(0.5 * (edges[1:] + edges[:-1]), y / sim, yerr=np.asarray(tmpl["stat"]) / sim, fmt="o", ms=4)
    hep.histplot(np.asarray(t["signal"]["yields"]), edges, ax=ax, color="red", ls="--", label="signal (mu = 1)")
    rax.fill_between(edges, np.r_[1 - sim_err / sim, (1 - sim_err / sim)[-1]],
                     np.r_[1 + sim_err / sim, (1 + sim_err / sim)[-1]], step="post", color="grey", alpha=0.3,
                     label="simulated stat. unc.")
    ax.set_yscale("log")
    ax.set_ylabel("expected events")
    ax.legend(fontsize=12)
    rax.axhline(1, color="black", lw=1)
    rax.set_ylabel("gen. / sim.")
    rax.set_xlabel("classifier score")
    rax.set_ylim(0.5, 1.5)
    if title:
        ax.set_title(title, fontsize=14)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_limit_scan(results: dict, path: str | os.PathLike, title: str = "") -> list[Path]:
    """Expected limit against the number of generated background events, one panel per systematic size:
    median over flow seeds with the seed spread and the expected +-1/2 sigma bands, each seed as a thin line, the
    simulated-background limit at its own size (with its bands) and the infinite-statistics limit."""
    systs = list(results["simulated"])
    sizes = np.asarray(results["sizes"])
    fig, axes = _panels(len(systs))
    for ax, k in zip(axes[0], systs):
        med = results["generated"][k]["median"]
        ax.fill_between(sizes, _bands(med, "-2"), _bands(med, "2"), color=_YELLOW, label=r"expected $\pm 2\sigma$")
        ax.fill_between(sizes, _bands(med, "-1"), _bands(med, "1"), color=_GREEN, label=r"expected $\pm 1\sigma$")
        ax.plot(sizes, _bands(med, "0"), color="black", lw=2, label="generated background (median of seeds)")
        for s, rows in results["generated"][k]["per_seed"].items():
            ax.plot(sizes, _bands(rows, "0"), lw=0.8, ls=":", color="navy")
        if k in results.get("generated_unc", {}):
            ax.plot(sizes, _bands(results["generated_unc"][k]["median"], "0"), color="purple", lw=2, ls="-.",
                    label="generated + generator uncertainty")
        sim = results["simulated"][k]
        n_sim = results["simulated_events"]
        ax.errorbar([n_sim], [sim["0"]], yerr=[[sim["0"] - sim["-1"]], [sim["1"] - sim["0"]]], fmt="s",
                    color="red", ms=9, capsize=4, label=r"simulated background ($\pm 1\sigma$)")
        ax.axhline(results["infinite"][k]["0"], color="grey", ls="--", label="infinite statistics")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("generated background events")
        ax.set_title(f"background systematic {float(k):.0%}", fontsize=16)
    return _finish(fig, axes, r"expected 95% CL upper limit on $\mu$", title, path)


def plot_difference(results: dict, path: str | os.PathLike, title: str = "") -> list[Path]:
    """Relative difference of the generated-background limit (median of seeds) from the simulated-background
    limit, against the number of generated events, inside the simulated expected +-1/2 sigma band (relative to
    its median); one panel per systematic size."""
    systs = list(results["simulated"])
    sizes = np.asarray(results["sizes"])
    fig, axes = _panels(len(systs), 6.5)
    for ax, k in zip(axes[0], systs):
        sim = results["simulated"][k]
        rel = {b: sim[b] / sim["0"] - 1 for b in ("-2", "-1", "1", "2")}
        ax.axhspan(rel["-2"], rel["2"], color=_YELLOW, label=r"simulated $\pm 2\sigma$")
        ax.axhspan(rel["-1"], rel["1"], color=_GREEN, label=r"simulated $\pm 1\sigma$")
        ax.axhline(0, color="black", lw=1)
        for s, rows in results["generated"][k]["per_seed"].items():
            ax.plot(sizes, _bands(rows, "0") / sim["0"] - 1, lw=1, label=f"generated, seed {s}")
        ax.plot(sizes, _bands(results["generated"][k]["median"], "0") / sim["0"] - 1, color="black", lw=2,
                label="median of seeds")
        ax.axvline(results["simulated_events"], color="red", ls=":", label="simulated sample size")
        ax.set_xscale("log")
        ax.set_xlabel("generated background events")
        ax.set_title(f"background systematic {float(k):.0%}", fontsize=16)
    return _finish(fig, axes, "(limit gen. - limit sim.) / limit sim.", title, path)


def plot_luminosity(results: dict, path: str | os.PathLike, title: str = "") -> list[Path]:
    """Expected limit against integrated luminosity for simulated, generated (largest N, median of seeds) and
    infinite-statistics background; one panel per systematic size, simulated bands shaded."""
    lumi = results["luminosity"]
    L = np.asarray(lumi["luminosities_fb"])
    systs = list(lumi["simulated"])
    fig, axes = _panels(len(systs))
    for ax, k in zip(axes[0], systs):
        sim = lumi["simulated"][k]
        ax.fill_between(L, _bands(sim, "-2"), _bands(sim, "2"), color=_YELLOW, label=r"simulated $\pm 2\sigma$")
        ax.fill_between(L, _bands(sim, "-1"), _bands(sim, "1"), color=_GREEN, label=r"simulated $\pm 1\sigma$")
        ax.plot(L, _bands(sim, "0"), color="red", lw=2, label="simulated background")
        ax.plot(L, _bands(lumi["generated"][k], "0"), color="black", lw=2,
                label=f"generated background ({results['sizes'][-1]:,} events)")
        ax.plot(L, _bands(lumi["infinite"][k], "0"), color="grey", ls="--", label="infinite statistics")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(r"integrated luminosity [fb$^{-1}$]")
        ax.set_title(f"background systematic {float(k):.0%}", fontsize=16)
    return _finish(fig, axes, r"expected 95% CL upper limit on $\mu$", title, path)


def plot_closure(results: dict, path: str | os.PathLike, title: str = "") -> list[Path]:
    """Closure: relative limit differences of random simulated halves (one through the generated-sample path, one
    through the simulated path), per systematic size, with their mean and its uncertainty."""
    plt.style.use(hep.style.ROOT)
    c = results["closure"]
    systs = [k for k in c if k != "edges"]
    fig, ax = plt.subplots(figsize=(9, 6.5))
    for i, k in enumerate(systs):
        rel = np.asarray(c[k]["relative"])
        ax.plot(np.full(len(rel), i) + np.linspace(-0.15, 0.15, len(rel)), rel, "o", alpha=0.6)
        m, e = float(rel.mean()), float(rel.std(ddof=1) / np.sqrt(len(rel)))
        ax.errorbar([i], [m], yerr=[e], fmt="s", color="black", ms=9, capsize=6)
    ax.axhline(0, color="grey", ls="--")
    ax.set_xticks(range(len(systs)), [f"syst. {float(k):.0%}" for k in systs])
    ax.set_ylabel("(limit A - limit B) / limit B")
    ax.set_title((title + ": " if title else "") + "closure, simulated background in both roles", fontsize=13)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_truth_templates(results: dict, path: str | os.PathLike, title: str = "") -> list[Path]:
    """The independent test of the templates: the truth test template (simulation the generator never saw)
    against the simulated and the generated templates (largest N, each seed) and the bootstrap replicas, with the
    ratio to truth and the generator uncertainty (replica spread, after calibration) as a band."""
    plt.style.use(hep.style.ROOT)
    edges = np.asarray(results["edges"])
    centres = 0.5 * (edges[1:] + edges[:-1])
    truth = results["truth"]["test_template"]
    t, t_err = np.asarray(truth["yields"]), np.asarray(truth["stat"])
    fig, (ax, rax) = plt.subplots(2, 1, figsize=(10, 10), gridspec_kw={"height_ratios": [3, 1]}, sharex=True)
    hep.histplot(t, edges, yerr=t_err, ax=ax, color="black", histtype="errorbar",
                 label=f"truth: {results['truth']['source']} ({results['truth']['test_events']:,} events)")
    sim = np.asarray(results["templates"]["simulated"]["yields"])
    hep.histplot(sim, edges, ax=ax, color="grey", label="simulated (reference partition)")
    rax.errorbar(centres, sim / t, yerr=np.asarray(results["templates"]["simulated"]["stat"]) / t, fmt="s", ms=4,
                 color="grey")
    gu = results.get("generator_uncertainty")
    for s, tmpl in results["templates"]["generated"].items():
        y = np.asarray(tmpl["yields"])
        hep.histplot(y, edges, ax=ax, lw=2, label=f"generated, seed {s} ({results['sizes'][-1]:,} events)")
        rax.errorbar(centres, y / t, yerr=np.asarray(tmpl["stat"]) / t, fmt="o", ms=4)
        if gu is not None:
            if gu.get("correction") is not None:  # the band sits on the corrected template the fit uses
                y = y / (1.0 + np.asarray(gu["correction"]))
                rax.plot(centres, y / t, lw=1.5, ls="--", label=f"seed {s} corrected by the calibration non-closure")
            rel = np.asarray(gu["relative"]) * y / t
            rax.fill_between(edges, np.r_[y / t - rel, (y / t - rel)[-1]], np.r_[y / t + rel, (y / t + rel)[-1]],
                             step="post", alpha=0.25, label=f"generator unc. ({gu['construction']}, "
                             f"x{gu['inflation']:.2f})")
    if gu is not None:
        for name, tmpl in gu["templates"].items():
            rax.plot(centres, np.asarray(tmpl["yields"]) / t, lw=0.8, ls=":", color="navy")
    rax.fill_between(edges, np.r_[1 - t_err / t, (1 - t_err / t)[-1]], np.r_[1 + t_err / t, (1 + t_err / t)[-1]],
                     step="post", color="black", alpha=0.15, label="truth stat. unc.")
    ax.set_yscale("log")
    ax.set_ylabel("expected events")
    ax.legend(fontsize=11)
    rax.axhline(1, color="black", lw=1)
    rax.set_ylabel("template / truth")
    rax.set_xlabel("classifier score")
    rax.set_ylim(0.6, 1.4)
    rax.legend(fontsize=9, ncol=2)
    if title:
        ax.set_title(title, fontsize=14)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_spurious(results: dict, path: str | os.PathLike, title: str = "") -> list[Path]:
    """Spurious signal against the truth test template: mu_hat / sigma against the number of generated events,
    without and with the generator uncertainty in the model (median over seeds, each seed thin), the simulated
    template at its own size, and the pass band of +-``max_sigma``; one panel per systematic size; beside the
    largest size, the mean and RMS of the spurious signal over further calibration/test splits of the truth."""
    sp = results["spurious"]
    systs = list(results["simulated"])
    sizes = np.asarray(results["sizes"])
    fig, axes = _panels(len(systs), 6.5)
    m = sp["max_sigma"]
    for ax, k in zip(axes[0], systs):
        ax.axhspan(-m, m, color=_GREEN, alpha=0.5, label=rf"pass: $|\hat\mu| \leq {m:g}\sigma$")
        for key, colour, label in (("generated", "crimson", "generated, stat. only"),
                                   ("generated_unc", "navy", "generated + generator unc.")):
            if k not in sp.get(key, {}):
                continue
            z = np.asarray([[r["z"] for r in rows] for rows in sp[key][k].values()])
            for row in z:
                ax.plot(sizes, row, lw=0.7, ls=":", color=colour)
            ax.plot(sizes, np.median(z, axis=0), lw=2, color=colour, label=label)
        splits = sp.get("splits")
        if splits and float(k) == splits["background_systematic"]:
            ax.errorbar([sizes[-1] * 1.25], [splits["mean"]], yerr=[splits["rms"]], fmt="D", color="navy", ms=8,
                        capsize=5, label=f"{len(splits['z'])} further truth splits: mean ± RMS")
        sim = sp["simulated"][k]
        ax.plot([results["simulated_events"]], [sim["z"]], "s", color="black", ms=9, label="simulated template")
        ax.axhline(0, color="black", lw=1)
        ax.set_xscale("log")
        ax.set_xlabel("generated background events")
        ax.set_title(f"background systematic {float(k):.0%}", fontsize=16)
    return _finish(fig, axes, r"spurious signal $\hat\mu / \sigma$ (truth pseudo-data)", title, path)


def plot_pulls(results: dict, path: str | os.PathLike, title: str = "") -> list[Path]:
    """Pulls (template - truth) / total uncertainty of the generated and replica templates per bin, on the test
    part of the truth sample, with the generator uncertainty after calibration, against a unit Gaussian."""
    plt.style.use(hep.style.ROOT)
    gu = results.get("generator_uncertainty")
    if gu is None:  # no replicas configured: nothing to calibrate
        fig, ax = plt.subplots(figsize=(9, 7))
        ax.text(0.5, 0.5, "no generator replicas (flows.replicas.n = 0)", ha="center", transform=ax.transAxes)
        return save_figure(fig, path)
    values = np.concatenate([np.asarray(v) for v in gu["test_pulls"].values()])
    fig, ax = plt.subplots(figsize=(9, 7))
    bins = np.linspace(-5, 5, 41)
    ax.hist(np.clip(values, -4.99, 4.99), bins=bins, histtype="stepfilled", alpha=0.6,
            label=f"templates x bins ({len(values)})")
    x = np.linspace(-5, 5, 400)
    ax.plot(x, len(values) * (bins[1] - bins[0]) * np.exp(-0.5 * x * x) / np.sqrt(2 * np.pi), color="black",
            label="unit Gaussian")
    p = gu["pulls"]
    txt = "\n".join(f"{name.replace('_', ', ')}: RMS {v['rms']:.2f}, within 1: {v['coverage68']:.2f}, within 2: "
                    f"{v['coverage95']:.2f}" for name, v in p.items())
    ax.text(0.02, 0.97, f"{gu['construction']}, inflation {gu['inflation']:.2f}\n{txt}", transform=ax.transAxes,
            va="top", fontsize=10)
    ax.set_xlabel("(template - truth) / total uncertainty")
    ax.set_ylabel("bins")
    ax.legend(fontsize=11, loc="upper right")
    if title:
        ax.set_title(title, fontsize=14)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_amplification(results: dict, path: str | os.PathLike, title: str = "") -> list[Path]:
    """Amplification: the simulated sample size with the same template MSE against truth as the generated
    template, against the number of generated events, in units of the training partition; the simulated
    template's own value as a check and the diagonal (generated events worth as much as simulated ones)."""
    plt.style.use(hep.style.ROOT)
    amp = results["amplification"]
    n_train = max(amp["n_train"], 1)
    sizes = np.asarray(results["sizes"], dtype=float)
    fig, ax = plt.subplots(figsize=(9, 7))
    for s, rows in amp["per_seed"].items():
        eq = np.asarray([r["equivalent_events"] for r in rows]) / n_train
        bound = np.asarray([r["lower_bound"] for r in rows])
        ax.plot(sizes, eq, lw=1.5, label=f"generated, seed {s}")
        ax.plot(sizes[bound], eq[bound], "^", ms=5, color="grey")
    sim = amp["simulated"]
    ax.plot([results["simulated_events"]], [sim["equivalent_events"] / n_train], "s", color="black", ms=9,
            label=f"simulated template ({results['simulated_events']:,} events)")
    ax.plot(sizes, sizes / n_train, ls="--", color="grey", label="as many simulated events")
    ax.axhline(1.0, color="red", ls=":", label="training partition")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("generated background events")
    ax.set_ylabel("equivalent simulated events / training events")
    ax.legend(fontsize=11)
    if title:
        ax.set_title(title + " (triangles: lower bounds)", fontsize=13)
    fig.tight_layout()
    return save_figure(fig, path)
