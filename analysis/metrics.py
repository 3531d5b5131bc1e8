"""Two-sample metrics: how well generated events reproduce simulated ones.

Per feature, with scipy.stats and scipy.spatial where they provide the statistic:

- the Wasserstein-1 distance on the samples themselves (``scipy.stats.wasserstein_distance``), not on histogram
  contents;
- the Kolmogorov-Smirnov statistic and p-value (``scipy.stats.ks_2samp``);
- a chi-square two-sample test of homogeneity on a common binning (the contingency-table form, NIST/Press et
  al.): bins empty in both samples are dropped and do not count as degrees of freedom, and neighbouring bins
  are merged until each holds at least 5 expected events, so that the chi-square distribution applies;
- the Jensen-Shannon distance (``scipy.spatial.distance.jensenshannon``, base 2) between the normalised histograms.

Each comes with a bootstrap uncertainty and, from :func:`evaluate`, with the value for two disjoint halves of
simulated events of the same size (the MC-against-MC reference that a perfect generator would match).

Multivariate: a classifier two-sample test (C2ST; Lopez-Paz and Oquab, ICLR 2017; Friedman 2003): a gradient
boosted classifier learns to separate the two samples on one half, its ROC AUC on the other half (0.5 for
indistinguishable samples) comes with the Hanley-McNeil standard error; and the difference of the Pearson
correlation matrices.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats
from scipy.spatial.distance import jensenshannon
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.metrics import roc_auc_score, roc_curve

MIN_EXPECTED = 5.0


def common_edges(a: np.ndarray, b: np.ndarray, bins: int = 50) -> np.ndarray:
    """Bin edges shared by two samples: one bin per value for discrete data (at most ``bins`` distinct values),
    else equal-width bins between the joint 0.1 and 99.9 % quantiles, with the outer bins open to the extremes."""
    both = np.concatenate([a, b])
    values = np.unique(both)
    if len(values) <= min(bins, 20):
        mids = (values[1:] + values[:-1]) / 2
        return np.concatenate([[-np.inf], mids, [np.inf]])
    lo, hi = np.quantile(both, [0.001, 0.999])
    if hi <= lo:
        lo, hi = both.min() - 0.5, both.max() + 0.5
    edges = np.linspace(lo, hi, bins + 1)
    edges[0], edges[-1] = -np.inf, np.inf
    return edges


def _merge_sparse(n1: np.ndarray, n2: np.ndarray, minimum: float) -> tuple[np.ndarray, np.ndarray]:
    """Merge neighbouring bins until every bin holds at least ``minimum`` events in total (both samples)."""
    out1, out2, acc1, acc2 = [], [], 0.0, 0.0
    for x, y in zip(n1, n2):
        acc1 += x
        acc2 += y
        if acc1 + acc2 >= minimum:
            out1.append(acc1)
            out2.append(acc2)
            acc1 = acc2 = 0.0
    if acc1 + acc2 > 0:
        if out1:
            out1[-1] += acc1
            out2[-1] += acc2
        else:
            out1.append(acc1)
            out2.append(acc2)
    return np.array(out1), np.array(out2)


def chi2_two_sample(a: np.ndarray, b: np.ndarray, edges: np.ndarray) -> tuple[float, int, float]:
    """Chi-square test that two unweighted samples share one distribution, on common ``edges``.

    Uses the contingency-table statistic sum_i (K1 n2_i - K2 n1_i)^2 / (n1_i + n2_i) / (K1 K2) with
    K1 = sqrt(N2/N1), K2 = sqrt(N1/N2); empty bins are merged away. Returns (chi2, ndf, p-value).
    """
    n1, _ = np.histogram(a, edges)
    n2, _ = np.histogram(b, edges)
    n1, n2 = _merge_sparse(n1.astype(float), n2.astype(float), 2 * MIN_EXPECTED)
    N1, N2 = n1.sum(), n2.sum()
    if len(n1) < 2 or N1 == 0 or N2 == 0:
        return 0.0, 0, 1.0
    k1, k2 = np.sqrt(N2 / N1), np.sqrt(N1 / N2)
    chi2 = float(np.sum((k1 * n1 - k2 * n2) ** 2 / (n1 + n2)))
    ndf = len(n1) - 1
    return chi2, ndf, float(stats.chi2.sf(chi2, ndf))


def js_distance(a: np.ndarray, b: np.ndarray, edges: np.ndarray) -> float:
    """Jensen-Shannon distance (base 2, in [0, 1]) between the normalised histograms of ``a`` and ``b``."""
    h1, _ = np.histogram(a, edges)
    h2, _ = np.histogram(b, edges)
    if h1.sum() == 0 or h2.sum() == 0:
        return 1.0
    return float(jensenshannon(h1 / h1.sum(), h2 / h2.sum(), base=2))


def feature_metrics(a: np.ndarray, b: np.ndarray, edges: np.ndarray | None = None) -> dict[str, float]:
    """All one-dimensional statistics for one feature."""
    edges = common_edges(a, b) if edges is None else edges
    ks = stats.ks_2samp(a, b)
    chi2, ndf, p = chi2_two_sample(a, b, edges)
    return {"wasserstein": float(stats.wasserstein_distance(a, b)), "ks_statistic": float(ks.statistic),
            "ks_pvalue": float(ks.pvalue), "chi2_ndf": chi2 / ndf if ndf else 0.0, "chi2_pvalue": p,
            "js_distance": js_distance(a, b, edges)}


def bootstrap(a: np.ndarray, b: np.ndarray, rng: np.random.Generator, n_boot: int = 20,
              max_events: int = 50_000) -> dict[str, dict[str, float]]:
    """Feature metrics with bootstrap standard deviations (resampling both samples with replacement)."""
    edges = common_edges(a, b)
    central = feature_metrics(a, b, edges)
    na, nb = min(len(a), max_events), min(len(b), max_events)
    reps = [feature_metrics(a[rng.integers(0, len(a), na)], b[rng.integers(0, len(b), nb)], edges)
            for _ in range(n_boot)]
    return {k: {"value": v, "error": float(np.std([r[k] for r in reps], ddof=1)) if n_boot > 1 else 0.0}
            for k, v in central.items()}


def hanley_mcneil_error(auc: float, n_pos: int, n_neg: int) -> float:
    """Standard error of a ROC AUC (Hanley and McNeil, Radiology 143 (1982) 29)."""
    q1, q2 = auc / (2 - auc), 2 * auc**2 / (1 + auc)
    var = (auc * (1 - auc) + (n_pos - 1) * (q1 - auc**2) + (n_neg - 1) * (q2 - auc**2)) / (n_pos * n_neg)
    return float(np.sqrt(max(var, 0.0)))


@dataclass
class C2STResult:
    auc: float
    auc_error: float
    scores_a: np.ndarray  # classifier scores of held-out events of sample a
    scores_b: np.ndarray
    fpr: np.ndarray
    tpr: np.ndarray

    def summary(self) -> dict[str, float]:
        return {"auc": self.auc, "auc_error": self.auc_error, "n_test": int(len(self.scores_a) + len(self.scores_b))}


def c2st(a: np.ndarray, b: np.ndarray, seed: int = 0, max_iter: int = 200) -> C2STResult:
    """Classifier two-sample test: train on half of each sample to tell ``b`` (label 1) from ``a`` (label 0);
    ROC AUC on the other halves. 0.5 means the classifier cannot tell the samples apart."""
    rng = np.random.default_rng(seed)
    n = min(len(a), len(b))
    a, b = a[rng.permutation(len(a))[:n]], b[rng.permutation(len(b))[:n]]
    half = n // 2
    x_train = np.concatenate([a[:half], b[:half]])
    y_train = np.concatenate([np.zeros(half), np.ones(half)])
    x_test = np.concatenate([a[half:], b[half:]])
    y_test = np.concatenate([np.zeros(n - half), np.ones(n - half)])
    clf = HistGradientBoostingClassifier(max_iter=max_iter, learning_rate=0.1, early_stopping=True,
                                         validation_fraction=0.2, n_iter_no_change=10, random_state=seed)
    clf.fit(x_train, y_train)
    score = clf.predict_proba(x_test)[:, 1]
    auc = float(roc_auc_score(y_test, score))
    fpr, tpr, _ = roc_curve(y_test, score)
    return C2STResult(auc, hanley_mcneil_error(auc, n - half, n - half), score[y_test == 0], score[y_test == 1],
                      fpr, tpr)


def correlation_difference(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pearson correlation matrices of both samples and their difference ``corr(b) - corr(a)``."""
    ca, cb = np.corrcoef(a, rowvar=False), np.corrcoef(b, rowvar=False)
    return ca, cb, cb - ca


def evaluate(simulated: np.ndarray, generated: np.ndarray, names: list[str], seed: int = 0,
             n_boot: int = 20) -> dict:
    """Compare ``generated`` with ``simulated`` events (arrays ``(n, d)``), each metric beside its MC-against-MC
    reference: the simulated events are split into two disjoint halves A and B of size n; generated events
    (n of them) are compared with A, and B with A.

    Returns a JSON-ready dict plus, under ``"_arrays"``, what the plots need.
    """
    rng = np.random.default_rng(seed)
    sim = simulated[rng.permutation(len(simulated))]
    n = min(len(sim) // 2, len(generated))
    if n < 50:
        raise ValueError(f"evaluation needs at least 100 simulated and 50 generated events, got {len(simulated)} "
                         f"and {len(generated)}")
    half_a, half_b = sim[:n], sim[n:2 * n]
    gen = generated[rng.permutation(len(generated))[:n]]
    per_feature = {}
    for i, name in enumerate(names):
        per_feature[name] = {"generated": bootstrap(half_a[:, i], gen[:, i], rng, n_boot),
                             "mc_reference": bootstrap(half_a[:, i], half_b[:, i], rng, n_boot)}
    c_gen, c_mc = c2st(half_a, gen, seed), c2st(half_a, half_b, seed)
    corr_a, corr_gen, diff = correlation_difference(half_a, gen)
    _, _, diff_mc = correlation_difference(half_a, half_b)
    return {
        "n_events_each": int(n),
        "features": per_feature,
        "c2st": {"generated": c_gen.summary(), "mc_reference": c_mc.summary()},
        "correlation": {"max_abs_difference": float(np.abs(diff).max()),
                        "mc_max_abs_difference": float(np.abs(diff_mc).max()),
                        "rms_difference": float(np.sqrt(np.mean(diff**2))),
                        "mc_rms_difference": float(np.sqrt(np.mean(diff_mc**2)))},
        "_arrays": {"simulated": half_a, "generated": gen, "c2st": c_gen, "c2st_mc": c_mc,
                    "corr_simulated": corr_a, "corr_generated": corr_gen},
    }


def summarise(result: dict) -> dict[str, float]:
    """Means over features of each statistic, for generated and MC reference: one row of a comparison table."""
    out = {}
    feats = result["features"].values()
    for key in ("wasserstein", "ks_statistic", "chi2_ndf", "js_distance"):
        for side in ("generated", "mc_reference"):
            out[f"{key}_{side}"] = float(np.mean([f[side][key]["value"] for f in feats]))
    out["c2st_auc"] = result["c2st"]["generated"]["auc"]
    out["c2st_auc_error"] = result["c2st"]["generated"]["auc_error"]
    out["c2st_auc_mc"] = result["c2st"]["mc_reference"]["auc"]
    out["corr_rms_difference"] = result["correlation"]["rms_difference"]
    out["corr_rms_difference_mc"] = result["correlation"]["mc_rms_difference"]
    return out
