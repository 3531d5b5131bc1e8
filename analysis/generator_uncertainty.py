"""The generator's own uncertainty, its calibration against independent simulation, and what generated events are
worth.

A flow trained on a finite simulated sample is itself uncertain. An ensemble of K replicas, each trained on a
bootstrap resample of the training partition with its own seed (the statistical bootstrap of Efron applied to the
whole training, as for the "Bayesian/ensemble" uncertainties of generative models, cf. Butter et al.,
arXiv:2104.04543), shows how much a template would move had the generator seen another training sample:

* :func:`replica_spread`: per bin, the standard deviation of the replica templates minus what their own finite
  number of events explains (the generator uncertainty ``delta``, relative to the mean yield), shrunk towards
  its mean over the bins as far as the replicas cannot resolve a difference between bins (empirical Bayes); it
  enters the fit as one Gaussian-constrained nuisance parameter per bin
  (:func:`analysis.statistics.build_workspace`).
* :func:`nonclosure`: where the replicas share a bias (a limitation of the flow that no resample of its training
  data removes), their spread cannot cover it. The bias is measured against the calibration part of the truth
  sample as a smooth polynomial in the score, with the statistical covariance of that fit
  (:func:`nonclosure_fit`); it is either taken as a coherent uncertainty of its full size or, better, corrected
  for, with the fit's own statistical uncertainty as coherent eigen-variations (a correction measured on a
  finite sample is itself uncertain; without that term the corrected template claims the calibration sample's
  fluctuations as knowledge).
* :func:`pulls`: (generated template - truth template) / total template uncertainty per bin, where the truth
  template comes from independent simulation the generator never saw; a calibrated uncertainty gives pulls of
  RMS 1 (68 % within 1, 95 % within 2). :func:`inflation_factor` measures by how much ``delta`` must be scaled
  to reach an RMS of 1 when it under-covers; it is measured on one half of the truth sample (calibration) and
  judged on the other (test), so the spurious-signal test stays independent.
* :func:`amplification`: the number of simulated events whose template would have the same mean squared error
  against the truth template as a generated template (Butter, Diefenbacher, Kasieczka, Nachman, Plehn,
  arXiv:2008.06545; Bieringer et al., arXiv:2408.00838), in units of the training partition.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np
from scipy import optimize

from .templates import Template


@dataclasses.dataclass(frozen=True)
class ReplicaSpread:
    """Per-bin generator uncertainty from an ensemble of replica templates."""

    relative: np.ndarray  # delta / mean yield per bin (shrunk towards the pooled value, see replica_spread)
    std: np.ndarray  # raw standard deviation of the replica yields
    stat: np.ndarray  # RMS statistical uncertainty of the replica templates (their own events)
    n_replicas: int
    per_bin: np.ndarray  # the unshrunk per-bin estimate, floored at zero
    pooled: float  # the relative spread common to all bins
    resolved: float  # weight of the per-bin estimates against the pooled one (bin mean; 0: pooled only)

    def to_dict(self) -> dict:
        return {"relative": self.relative.tolist(), "std": self.std.tolist(), "stat": self.stat.tolist(),
                "n_replicas": self.n_replicas, "pooled": self.pooled, "resolved": self.resolved,
                "per_bin": self.per_bin.tolist()}


def replica_spread(replicas: Sequence[Template]) -> ReplicaSpread:
    """Generator uncertainty from at least two replica templates (same binning).

    Per bin the excess variance d_i = (var(yields) - mean(stat^2)) / mean^2 (a spread the replicas' own events
    explain is not the generator's). With K replicas d_i has a noise of about sqrt(2 / (K - 1)) times the
    bin's total relative variance (71 % of it for five replicas), so per-bin values are mostly noise: two
    quickstart runs whose trainings differed only in rounding gave uncorrelated per-bin spreads (0 against 2.7 %
    in the most signal-like bin, limits 0.37 against 0.57) and the same pooled one (0.93 % and 0.94 %). So each
    d_i is shrunk towards their precision-weighted mean by the share of the between-bin variance that the noise
    does not explain (empirical Bayes, method of moments): five replicas give the pooled value wherever the
    bins do not differ by more than their noise, many replicas keep a real per-bin structure. The relative
    spread is the square root of the shrunk d_i, floored at zero."""
    if len(replicas) < 2:
        raise ValueError(f"a generator uncertainty needs at least 2 replicas, got {len(replicas)}")
    y = np.stack([r.yields for r in replicas])
    st = np.stack([r.stat for r in replicas])
    k = len(replicas)
    var = y.var(axis=0, ddof=1)
    stat2 = np.mean(st ** 2, axis=0)
    mean = y.mean(axis=0)
    filled = mean > 0
    d = np.zeros_like(mean)
    d[filled] = (var[filled] - stat2[filled]) / mean[filled] ** 2
    per_bin = np.sqrt(np.maximum(d, 0.0))
    pooled, w = 0.0, np.zeros_like(mean)
    if filled.any():
        s2 = stat2[filled] / mean[filled] ** 2
        for _ in range(3):  # noise of d_i from the expected variance s2 + pooled (not the noisy var itself)
            noise2 = 2.0 / (k - 1) * (s2 + pooled) ** 2
            pooled = max(float(np.sum(d[filled] / noise2) / np.sum(1.0 / noise2)), 0.0)
        tau2 = max(float(np.mean((d[filled] - pooled) ** 2) - np.mean(noise2)), 0.0)
        w[filled] = tau2 / (tau2 + noise2)
    shrunk = np.where(filled, pooled + w * (d - pooled), 0.0)
    rel = np.sqrt(np.maximum(shrunk, 0.0))
    return ReplicaSpread(rel, np.sqrt(var), np.sqrt(stat2), k, per_bin, float(np.sqrt(pooled)),
                         float(w[filled].mean()) if filled.any() else 0.0)


def pulls(generated: Template, truth: Template, delta: np.ndarray | None = None) -> np.ndarray:
    """(generated - truth) / sqrt(stat_generated^2 + stat_truth^2 + delta^2) per bin."""
    var = generated.stat ** 2 + truth.stat ** 2
    if delta is not None:
        var = var + np.asarray(delta, dtype=float) ** 2
    return (generated.yields - truth.yields) / np.sqrt(var)


def pull_summary(values: np.ndarray) -> dict[str, float]:
    """RMS and coverage of pulls: fractions within 1 and 2 (nominal 0.683 and 0.954), with binomial errors."""
    v = np.asarray(values, dtype=float).ravel()
    n = len(v)
    c1, c2 = float(np.mean(np.abs(v) < 1)), float(np.mean(np.abs(v) < 2))
    return {"n": n, "rms": float(np.sqrt(np.mean(v ** 2))), "rms_error": float(np.sqrt(np.mean(v ** 2) / (2 * n))),
            "mean": float(v.mean()), "coverage68": c1, "coverage68_error": float(np.sqrt(c1 * (1 - c1) / n)),
            "coverage95": c2, "coverage95_error": float(np.sqrt(c2 * (1 - c2) / n))}


@dataclasses.dataclass(frozen=True)
class NonClosure:
    """A smooth non-closure of generated against truth templates and the statistical uncertainty of its fit.

    ``values``: p(x_i) per bin, relative and signed (generated / truth - 1); ``variations``: one row per
    eigenvector of the fitted coefficients' covariance, the relative shift of p(x_i) by one standard deviation
    along it (rows independent, their squares summing to the variance of p(x_i))."""

    values: np.ndarray
    variations: np.ndarray

    @property
    def fit_error(self) -> np.ndarray:
        """Standard deviation of the fitted non-closure per bin."""
        return np.sqrt(np.sum(self.variations ** 2, axis=0))

    def to_dict(self) -> dict:
        return {"values": self.values.tolist(), "variations": self.variations.tolist(),
                "fit_error": self.fit_error.tolist()}


def nonclosure_fit(template: Template, truth: Template, degree: int = 2) -> NonClosure:
    """The measured non-closure of a generated template against an independent truth template, relative to the
    template, per bin and signed: p(x_i), where p is a polynomial of ``degree`` in the bin centre x_i fitted by
    weighted least squares to g_i / t_i - 1 (weights from both templates' statistical uncertainties), with the
    fit's covariance propagated to every bin as eigen-variations. A smooth fit, not the per-bin differences:
    those carry the truth template's own fluctuations, which an independent test sample would not repeat. It is
    the usual HEP remedy when a model's own uncertainty does not cover its disagreement with an independent
    reference; in the statistical model it is coherent (all bins move together), since a shared bias is, and
    independent per-bin parameters would let a signal-like bias pass as signal."""
    g, t = template.yields, truth.yields
    ok = (t > 0) & (g > 0)
    r = np.divide(g, t, out=np.ones_like(g), where=ok) - 1.0
    var = np.divide(template.stat ** 2 + (g / np.where(ok, t, 1.0)) ** 2 * truth.stat ** 2, np.where(ok, t, 1.0) ** 2)
    x = 0.5 * (template.edges[1:] + template.edges[:-1])
    deg = min(degree, int(ok.sum()) - 1)
    if deg < 0:
        return NonClosure(np.zeros_like(g), np.zeros((0, len(g))))
    vander = np.vander(x, deg + 1)  # the column order of np.polyfit's coefficients
    w = 1.0 / var[ok]
    a = vander[ok]
    cov = np.linalg.inv(a.T @ (a * w[:, None]))  # (A^T W A)^-1: the weights are the inverse variances
    coef = cov @ (a.T @ (w * r[ok]))
    lam, vec = np.linalg.eigh(0.5 * (cov + cov.T))
    variations = (vander @ (vec * np.sqrt(np.maximum(lam, 0.0)))).T
    return NonClosure(vander @ coef, variations[::-1])  # largest variation first


def combine_nonclosures(fits: Sequence[NonClosure]) -> NonClosure:
    """One non-closure from the fits of several templates against the same truth (the analysis seeds): the
    median of their values per bin, and the mean of their bin covariances as eigen-variations (the fits share
    the truth template's fluctuations, so their errors are not averaged down)."""
    if not fits:
        raise ValueError("no non-closure fits to combine")
    values = np.median([f.values for f in fits], axis=0)
    cov = np.mean([f.variations.T @ f.variations for f in fits], axis=0)
    lam, vec = np.linalg.eigh(0.5 * (cov + cov.T))
    keep = lam > 1e-12 * max(float(lam.max(initial=0.0)), 1e-300)
    variations = (vec[:, keep] * np.sqrt(lam[keep])).T[::-1]
    return NonClosure(values, variations)


def nonclosure(template: Template, truth: Template, degree: int = 2) -> np.ndarray:
    """The fitted non-closure p(x_i) per bin of :func:`nonclosure_fit` (relative, signed), without its errors."""
    return nonclosure_fit(template, truth, degree).values


def corrected(template: Template, correction: np.ndarray | None) -> Template:
    """``template`` with every bin divided by 1 + ``correction`` (a measured relative non-closure, generated /
    truth - 1): the generated template brought onto the truth; its statistical uncertainty scales alike."""
    if correction is None:
        return template
    f = 1.0 / (1.0 + np.asarray(correction, dtype=float))
    return dataclasses.replace(template, yields=template.yields * f, stat=template.stat * f)


def _total(rel: np.ndarray, extra: np.ndarray | None) -> np.ndarray:
    return rel if extra is None else np.sqrt(rel ** 2 + np.asarray(extra, dtype=float) ** 2)


def ensemble_pulls(templates: dict[str, Template], replicas: dict[str, Template], truth: Template,
                   factor: float = 1.0, extra: np.ndarray | None = None,
                   correction: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Pulls against ``truth`` of every analysis template (uncertainty from all replicas) and of every replica
    (uncertainty from the others, leave-one-out), with the relative ``extra`` uncertainty (e.g. a measured
    :func:`nonclosure` or the error of a correction) added in quadrature and the whole generator uncertainty
    scaled by ``factor``; every template first :func:`corrected` by ``correction`` if given."""
    out = {}
    spread = replica_spread(list(replicas.values()))
    for name, t in templates.items():
        t = corrected(t, correction)
        out[name] = pulls(t, truth, factor * _total(spread.relative, extra) * t.yields)
    if len(replicas) >= 3:
        for name, t in replicas.items():
            others = replica_spread([r for k, r in replicas.items() if k != name])
            t = corrected(t, correction)
            out[name] = pulls(t, truth, factor * _total(others.relative, extra) * t.yields)
    return out


def inflation_factor(templates: dict[str, Template], replicas: dict[str, Template], truth: Template,
                     target_rms: float = 1.0, max_factor: float = 100.0, extra: np.ndarray | None = None,
                     correction: np.ndarray | None = None) -> float:
    """The factor (>= 1) by which the replica spread must be scaled for the pulls of :func:`ensemble_pulls`
    against ``truth`` to reach an RMS of ``target_rms``; 1 when they already do (the uncertainty is never scaled
    down), ``max_factor`` when no finite factor reaches it (bins without replica spread keep their pulls)."""

    def excess(f: float) -> float:
        p = np.concatenate(list(ensemble_pulls(templates, replicas, truth, f, extra, correction).values()))
        return float(np.sqrt(np.mean(p ** 2))) - target_rms

    if excess(1.0) <= 0:
        return 1.0
    if excess(max_factor) > 0:
        return max_factor
    return float(optimize.brentq(excess, 1.0, max_factor, xtol=1e-4))


def amplification(generated: Template, truth: Template, expected_yield: float) -> dict[str, float]:
    """Equivalent simulated sample size of ``generated`` against ``truth``.

    A simulated template of M events of weight Y/M (Y the expected yield) has per-bin variance (Y/M) t_i, so
    its summed squared error against the truth is Y T / M with T = sum_i t_i; the generated template's measured
    one, MSE = sum_i (g_i - t_i)^2 - sigma_t,i^2 (the truth's own noise removed), gives M = Y T / MSE.
    ``expected_yield`` is Y, the expected yield of the whole selected background. When the measured MSE is not above twice its own uncertainty the
    generated template is indistinguishable from truth at this precision and M is a lower bound (``bound``)."""
    g, t = generated.yields, truth.yields
    d2 = (g - t) ** 2
    mse = float(np.sum(d2 - truth.stat ** 2))
    mse_err = float(np.sqrt(np.sum(2 * truth.stat ** 4 + 4 * d2 * truth.stat ** 2)))
    bound = mse < 2 * mse_err
    used = max(mse, 2 * mse_err) if bound else mse
    m = expected_yield * float(np.sum(t)) / used if used > 0 else float("inf")
    return {"equivalent_events": m, "lower_bound": bool(bound), "mse": mse, "mse_error": mse_err}
