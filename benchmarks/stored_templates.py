"""The analysis of a finished ``RunAnalysis`` as a yardstick for any generated background sample (issue 13).

:class:`StoredAnalysis` loads from a store the analysis binning, the signal template, the classifier, and the
truth test template with its Poisson bootstraps, exactly as ``LimitScan`` builds them; :meth:`StoredAnalysis.judge`
then measures a generated sample's classifier scores the way every template is measured against truth: chi2 for
the analysis binning, the ratio in the five most signal-like bins, the spurious signal *without* generator
uncertainty (mu_hat / sigma, sigma including the truth sample's bootstrap spread) and the expected limit, for
each background systematic. Used by ``generator_reweighting`` and ``generator_templates``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from analysis import limits as L
from analysis.config import AnalysisConfig
from analysis.ntuple import feature_matrix
from analysis.partition import split_rows
from analysis.statistics import build_workspace, expected_limits, fit_signal_strength
from analysis.templates import make_template
from benchmarks.unfolding import stored


class StoredAnalysis:
    """The stored analysis of configuration ``cfg`` (version ``version``) in ``store``."""

    def __init__(self, store: Path, cfg: AnalysisConfig, version: str = "v1"):
        self.cfg, self.store, self.version = cfg, Path(store), version
        lc = cfg.limits
        scan = stored(self.store, "LimitScan", cfg.name, version)
        self.results = json.loads((scan / "limits.json").read_text())
        self.edges = np.asarray(self.results["edges"])
        self.classifier_name = self.results.get("classifier", lc.classifier)
        z = np.load(stored(self.store, "ScoreEvents", cfg.name, version, self.classifier_name, "scores.npz"),
                    allow_pickle=False)
        self.scores = {k: z[k] for k in z.files}
        self.signal = make_template(z["signal_score"], z["signal_weight"], self.edges)
        ts, tw = z["truth_score"], z["truth_weight"]
        _, test_rows = split_rows(len(ts), cfg.truth.calibration_fraction, cfg.seed)
        self.truth = L._truth_template(ts, tw, test_rows, self.edges)
        self.boots = L._truth_bootstraps(ts, tw, test_rows, self.edges, lc.spurious_bootstraps, cfg.seed)
        partition = json.loads(stored(self.store, "PartitionEvents", cfg.name, version, "partition.json").read_text())
        self.background_yield = float(partition["samples"]["background"]["expected_yield"])

    def classifier(self):
        """The analysis classifier, loaded through the exact skops allow-list."""
        from models.classifiers import load_classifier

        return load_classifier(stored(self.store, "TrainClassifier", self.cfg.name, self.version,
                                      self.classifier_name, "model.skops"))

    def score(self, columns: dict[str, np.ndarray]) -> np.ndarray:
        """Classifier scores of events given as ntuple columns."""
        return self.classifier().score(feature_matrix(columns))

    def judge(self, scores: np.ndarray, weights: np.ndarray, expected: float) -> dict:
        """A generated template (``scores``, ``weights`` normalised to ``expected`` background events) against
        the truth test template."""
        w = weights * expected / weights.sum()
        t = make_template(scores, w, self.edges)
        chi = L._chi2(t, self.truth)
        row = {"events": int(len(w)), "chi2": chi["chi2"], "ndf": chi["ndf"],
               "ratio_top5": [float(r) for r in chi["ratio"][-5:]], "ratio": [float(r) for r in chi["ratio"]],
               "pulls": [float(p) for p in chi["pulls"]],
               "effective_events": float(w.sum() ** 2 / np.sum(w ** 2)), "per_systematic": {}}
        lc = self.cfg.limits
        for syst in lc.background_systematics:
            ws = build_workspace(self.signal.yields, t.yields, t.stat, syst, lc.lumi_uncertainty)
            observed = {**ws, "observations": [{"name": "SR", "data": self.truth.yields.tolist()}]}
            fit = fit_signal_strength(observed)
            sigma = float(np.hypot(fit.error, L._truth_spread(observed, self.boots)))
            row["per_systematic"][f"{syst:g}"] = {"mu_hat": fit.mu_hat, "sigma": sigma, "z": fit.mu_hat / sigma,
                                                  "expected_limit": expected_limits(ws)["0"]}
        return row


def plot_ratios(rows: dict[str, dict], edges: np.ndarray, truth_relative: np.ndarray, path: str | Path,
                title: str = "") -> None:
    """Generated / truth per bin of the analysis binning for each judged template, with the truth test template's
    relative statistical error as a band (PNG and PDF)."""
    import matplotlib.pyplot as plt
    import mplhep as hep

    from analysis.plotting import save_figure

    plt.style.use(hep.style.ROOT)
    fig, ax = plt.subplots(figsize=(9, 6))
    ax.stairs(1 + truth_relative, edges, baseline=1 - truth_relative, fill=True, color="0.85",
              label="truth test template (stat.)")
    ax.axhline(1.0, color="k", lw=1)
    for tag, row in rows.items():
        z = next(iter(row["per_systematic"].values()))["z"]
        ax.stairs(np.asarray(row["ratio"]), edges, lw=2, label=f"{tag}: chi2 {row['chi2']:.0f}/{row['ndf']}, "
                                                                 f"spurious {z:+.1f} sigma")
    ax.set_xlabel("classifier score (analysis binning)")
    ax.set_ylabel("generated / truth")
    ax.set_ylim(0.75, 1.2)
    ax.legend(fontsize=11, loc="lower left")
    if title:
        ax.set_title(title, fontsize=13)
    save_figure(fig, path)
    plt.close(fig)


def summary_line(name: str, row: dict) -> str:
    first = next(iter(row["per_systematic"].values()))
    return (f"{name}: chi2 {row['chi2']:.1f}/{row['ndf']}, top-5 ratio "
            f"{' '.join(f'{r:.3f}' for r in row['ratio_top5'])}, spurious {first['z']:+.2f} sigma, expected limit "
            f"{first['expected_limit']:.4f}, effective events {row['effective_events']:,.0f}")
