"""Event sources side by side: what changes between the embedded generator, Pythia 8 and the UCI HIGGS data.

The same analysis on two sources differs in the physics of the events (peak widths of the reconstructed
resonances), in how well signal separates from background (classifier AUC), in how faithfully a flow learns the
background (C2ST AUC against the truth sample) and in the limits. :func:`peak_widths` measures the resonance
peaks without a fit model: the core of each peak by an iterated truncated RMS (a window of +-1.5 sigma around
the mean of the previous step, the RMS corrected for the truncation, starting from the shortest interval holding
half of the events), so that the combinatorial continuum of wrong jet assignments widens it little; its width
relative to its centre, unit-free and so comparable with the HIGGS data set's normalised features; and the
fraction of events within +-2 sigma of the centre (how much of the distribution is peak). :func:`source_summary` collects the headline numbers of one finished ``RunAnalysis`` and
:func:`comparison_rows` puts several side by side.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

# the reconstructed resonance masses of the 28 features (signal: W, top-like, t, h, H+, H0 candidates; m_lv is
# left out: the neutrino's pz is solved with the W mass, so it is the W mass by construction)
PEAK_FEATURES = ("m_jj", "m_jjj", "m_jlv", "m_bb", "m_wbb", "m_wwbb")
GAUSS_HALF = 1.3489795  # length of the shortest half of a unit Gaussian (2 x 0.6745)
WINDOW = 1.5  # the core window, in sigma
MIN_EVENTS = 100  # fewer events than this: a peak is not measured (NaN)
TRUNCATED_RMS = 0.7426469  # RMS of a unit Gaussian truncated at +-1.5 (scipy.stats.truncnorm(-1.5, 1.5).std())


def core_peak(values: np.ndarray, iterations: int = 10) -> tuple[float, float]:
    """``(centre, sigma)`` of the core of a peak: the shortest half's centre and Gaussian-equivalent width, then
    ``iterations`` times the mean and the truncation-corrected RMS of the values within +-1.5 sigma."""
    x = np.asarray(values, np.float64)
    x = x[np.isfinite(x)]
    lo, hi = shortest_interval(x)
    c, s = 0.5 * (lo + hi), (hi - lo) / GAUSS_HALF
    for _ in range(iterations):
        w = x[np.abs(x - c) < WINDOW * s]
        if len(w) < 10:
            break
        c, s = float(w.mean()), float(w.std() / TRUNCATED_RMS)
    return c, s


def shortest_interval(values: np.ndarray, fraction: float = 0.5) -> tuple[float, float]:
    """The shortest interval ``[lo, hi]`` holding ``fraction`` of the finite ``values``."""
    x = np.sort(np.asarray(values, np.float64)[np.isfinite(values)])
    if len(x) < 10:
        raise ValueError(f"a peak needs at least 10 values, got {len(x)}")
    k = max(int(np.ceil(fraction * len(x))), 2)
    widths = x[k - 1:] - x[:len(x) - k + 1]
    i = int(np.argmin(widths))
    return float(x[i]), float(x[i + k - 1])


def peak_widths(columns: Mapping[str, np.ndarray], features=PEAK_FEATURES, n_boot: int = 50,
                seed: int = 0) -> dict[str, dict[str, float]]:
    """Per feature (:func:`core_peak`): ``centre``, ``sigma``, ``relative`` (sigma / centre) and its bootstrap
    standard deviation ``relative_error`` (``n_boot`` resamples), ``in_peak`` (fraction within +-2 sigma of the
    centre), ``n`` events."""
    rng = np.random.default_rng(seed)
    out = {}
    nan = float("nan")

    def relative(c: float, s: float) -> float:
        return s / c if c > 0 else nan

    for f in features:
        if f not in columns:
            continue
        x = np.asarray(columns[f], np.float64)
        x = x[np.isfinite(x)]
        if len(x) < MIN_EVENTS:  # too few events for a peak: recorded as not measured
            out[f] = {"centre": nan, "sigma": nan, "relative": nan, "relative_error": nan, "in_peak": nan,
                      "n": int(len(x))}
            continue
        centre, sigma = core_peak(x)
        boot = [relative(*core_peak(rng.choice(x, len(x)))) for _ in range(n_boot)]
        out[f] = {"centre": centre, "sigma": sigma, "relative": relative(centre, sigma),
                  "relative_error": float(np.std(boot)), "in_peak": float(np.mean(np.abs(x - centre) < 2 * sigma)),
                  "n": int(len(x))}
    return out


def source_summary(comparison: Mapping, fidelity: Mapping, limits: Mapping, signal_peaks: Mapping,
                   background_peaks: Mapping, n_events: Mapping[str, int]) -> dict:
    """The headline numbers of one finished analysis: classifier AUCs (``CompareClassifiers``), the C2ST of the
    default generator against the truth sample at its largest size (``FidelityTest``), the expected limits and
    spurious signals at the first background systematic (``LimitScan``), the peak widths and the sizes."""
    clf = {c["classifier"]: c["reference_auc"] for c in comparison["classifiers"]}
    seed = next(iter(fidelity["generated"]))
    c2st = fidelity["generated"][seed]["c2st"]
    svs = fidelity.get("simulated_vs_simulated", {})
    summ = limits["summary"][next(iter(limits["summary"]))]
    return {
        "events": dict(n_events),
        "classifier_auc": clf,
        "c2st_auc": c2st["auc"][-1], "c2st_auc_error": c2st["auc_error"][-1], "c2st_size": c2st["sizes"][-1],
        "c2st_mc_vs_mc": svs["auc"][-1] if svs else None,
        "limit_simulated": summ["simulated"],
        "limit_generated": summ["generated_largest_n"],
        "limit_generated_unc": summ.get("generated_unc_largest_n"),
        "spurious_z_simulated": summ.get("spurious_z_simulated"),
        "spurious_z_generated": summ.get("spurious_z_generated"),
        "spurious_z_generated_unc": summ.get("spurious_z_generated_unc"),
        "signal_peaks": dict(signal_peaks), "background_peaks": dict(background_peaks),
    }


def comparison_rows(summaries: Mapping[str, Mapping], higgs_peaks: Mapping | None = None) -> list[dict]:
    """Rows ``{"quantity": ..., <source>: value, ...}`` with the sources' summaries side by side (and the UCI
    HIGGS data set's relative peak widths, ``higgs_peaks``, where given: signal and background)."""
    names = list(summaries)
    rows = []

    def add(quantity, get, fmt="{:.3f}"):
        row = {"quantity": quantity}
        for n in names:
            try:
                v = get(summaries[n])
            except (KeyError, TypeError, IndexError):
                v = None
            row[n] = "-" if v is None else (fmt.format(v) if isinstance(v, (int, float)) else str(v))
        rows.append(row)
        return row

    add("selected background events", lambda s: s["events"]["background"], "{:,}")
    add("selected signal events", lambda s: s["events"]["signal"], "{:,}")
    for f in PEAK_FEATURES:
        row = add(f"signal {f}: core sigma / centre (in peak)", lambda s, f=f: _rel(s["signal_peaks"][f]), "{}")
        if higgs_peaks is not None:
            row["UCI HIGGS"] = _rel(higgs_peaks["signal"][f]) if f in higgs_peaks["signal"] else "-"
    for f in ("m_jj", "m_jjj", "m_bb"):
        row = add(f"background {f}: core sigma / centre (in peak)", lambda s, f=f: _rel(s["background_peaks"][f]),
                  "{}")
        if higgs_peaks is not None:
            row["UCI HIGGS"] = _rel(higgs_peaks["background"][f]) if f in higgs_peaks["background"] else "-"
    clfs = sorted({c for s in summaries.values() for c in s["classifier_auc"]})
    for c in clfs:
        add(f"{c} AUC (signal against background)", lambda s, c=c: s["classifier_auc"][c])
    add("generator C2ST AUC against the truth sample", lambda s: f"{s['c2st_auc']:.3f} +- {s['c2st_auc_error']:.3f} "
        f"({s['c2st_size']:,}/class)", "{}")
    add("C2ST AUC simulation against simulation", lambda s: s["c2st_mc_vs_mc"])
    add("expected limit, simulated template (mu)", lambda s: s["limit_simulated"])
    add("expected limit, generated template (mu)", lambda s: s["limit_generated"])
    add("expected limit, generated + generator unc. (mu)", lambda s: s["limit_generated_unc"])
    add("spurious signal, simulated template (sigma)", lambda s: s["spurious_z_simulated"], "{:+.2f}")
    add("spurious signal, generated template (sigma)", lambda s: s["spurious_z_generated"], "{:+.2f}")
    add("spurious signal, generated + unc. (sigma)", lambda s: s["spurious_z_generated_unc"], "{:+.2f}")
    return rows


def _rel(p: Mapping) -> str:
    if not np.isfinite(p["relative"]):
        return f"- ({p.get('n', 0)} events)"
    peak = f" ({100 * p['in_peak']:.0f} %)" if "in_peak" in p else ""
    return f"{p['relative']:.3f} +- {p['relative_error']:.3f}{peak}"


def plot_peaks(columns: Mapping[str, Mapping[str, np.ndarray]], path, features=("m_jj", "m_jjj", "m_bb", "m_wbb",
                                                                                   "m_wwbb")) -> None:
    """Signal mass distributions of each source, scaled to their peak's centre (:func:`core_peak`; unit-free, so
    the HIGGS data set's normalised features compare), normalised to unit area."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(features), figsize=(3.2 * len(features), 3.0))
    bins = np.linspace(0.0, 2.5, 51)
    for ax, f in zip(np.atleast_1d(axes), features):
        for name, cols in columns.items():
            if f not in cols:
                continue
            x = np.asarray(cols[f], np.float64)
            x = x[np.isfinite(x)]
            if len(x) < MIN_EVENTS:
                continue
            ax.hist(x / core_peak(x)[0], bins=bins, density=True, histtype="step", label=name)
        ax.set_xlabel(f"{f} / peak centre")
        ax.set_yticks([])
    np.atleast_1d(axes)[0].legend(fontsize=7, frameon=False)
    fig.suptitle("Signal resonance peaks by event source", fontsize=9)
    fig.savefig(path, dpi=110)
    plt.close(fig)
