"""Fidelity tests of generated events against independent simulated ("truth") events, with stated power.

The single classifier two-sample test of :mod:`analysis.metrics` answers "can one classifier, trained on this
many events, tell the samples apart?". A value near 0.5 says little unless the test could have seen a defect.
Here:

- :func:`c2st_learning_curve`: the classifier two-sample test (C2ST; Lopez-Paz and Oquab, ICLR 2017; Friedman,
  PHYSTAT 2003) repeated at increasing training sizes on one fixed held-out test set. The AUC against log10 of
  the training size shows whether the test had converged: a slope well above zero over the largest sizes means
  more events would have found more, i.e. the test lacked power at the size used; a curve flat at 0.5 up to a
  large size bounds what the classifier can find. Errors: a stratified bootstrap of the test set and the
  Hanley-McNeil standard error.
- :func:`group_aucs`: the same test on groups of columns (:data:`FEATURE_GROUPS`), to locate a defect.
- :func:`relative_azimuths`: the azimuths relative to the lepton. The physics is invariant under a common
  rotation in phi, so the absolute angles are (nearly) uniform and carry no information, while the relative
  ones carry the angular correlations a generator must reproduce; as explicit inputs they make those
  correlations visible to a tree classifier, which cuts on one variable at a time.
- :func:`validity_rates` and :func:`validity_comparison`: fractions of events passing physical constraints
  (pT ordering, jet-lepton and jet-jet separation, positive momenta, b-tag levels consistent with their
  scores), simulated against generated with binomial errors and a two-proportion z-test.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import mplhep as hep  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.ensemble import HistGradientBoostingClassifier  # noqa: E402
from sklearn.metrics import roc_auc_score  # noqa: E402
from sklearn.neural_network import MLPClassifier  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

from .features import BTAG_FEATURES, BTAG_SCORES, FEATURES, HIGH_LEVEL, btag_levels  # noqa: E402
from .features import in_support, min_separations, support_thresholds  # noqa: E402,F401  (re-exported)
from .metrics import hanley_mcneil_error  # noqa: E402
from .plotting import save_figure  # noqa: E402

JETS = [f"jet{i}" for i in range(1, 5)]

RELATIVE_AZIMUTHS = ["missing_energy_dphi_lep"] + [f"{j}_dphi_lep" for j in JETS]
"""Azimuth of the MET and of each of the four leading jets relative to the lepton, in [-pi, pi)."""

FEATURE_GROUPS: dict[str, list[str]] = {
    "masses": list(HIGH_LEVEL),
    "relative azimuths": list(RELATIVE_AZIMUTHS),
    "low-level kinematics": ["lepton_pT", "lepton_eta", "missing_energy_magnitude"]
    + [f"{j}_{v}" for j in JETS for v in ("pt", "eta")],
    "b tags": list(BTAG_FEATURES),
}
"""Column groups for :func:`group_aucs` and :func:`fidelity_matrix`. The absolute azimuths belong to no group:
they carry no physics beyond the relative ones (they are in the full matrix of :func:`fidelity_matrix`)."""

CLASSIFIERS = ("hgb", "mlp")

MAX_ITER = {"hgb": 5000, "mlp": 400}
"""Iteration limits of the C2ST classifiers (boosting rounds; MLP epochs); early stopping normally ends a fit
earlier. A fit that reaches its limit has not converged and its AUC is a lower bound (``converged`` in the
results). Until 2026-12-07 the limits were 400 rounds and 60 epochs: on the quickstart (one stored run, 10^5
events per class) the boosting stopped there with AUC 0.776 where the converged fit (1338 rounds, 21 s) gives
0.814, and the MLP with 0.79 where the converged one (140 epochs, 103 s) gives 0.824."""


def wrap_angle(x: np.ndarray) -> np.ndarray:
    """Angles wrapped to [-pi, pi), in float64."""
    w = np.mod(np.asarray(x, dtype=np.float64) + np.pi, 2 * np.pi) - np.pi
    return np.where(w >= np.pi, w - 2 * np.pi, w)  # np.mod can round up to exactly 2 pi


def relative_azimuths(columns: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The azimuths of the MET and the four jets relative to the lepton, ``phi_x - lepton_phi`` wrapped to
    [-pi, pi) (float64), keyed by :data:`RELATIVE_AZIMUTHS`. Works for features in GeV and in the "normalised"
    units of the UCI HIGGS CSV alike, since both keep phi in radians."""
    lep = np.asarray(columns["lepton_phi"], dtype=np.float64)
    sources = ["missing_energy_phi"] + [f"{j}_phi" for j in JETS]
    return {name: wrap_angle(np.asarray(columns[src], dtype=np.float64) - lep)
            for name, src in zip(RELATIVE_AZIMUTHS, sources)}


def fidelity_matrix(columns: dict[str, np.ndarray],
                    groups: Sequence[str] | str | None = None) -> tuple[np.ndarray, list[str]]:
    """Stack columns into an ``(n, d)`` float64 matrix for the two-sample tests.

    Without ``groups``: the 28 :data:`~analysis.features.FEATURES` and the five :data:`RELATIVE_AZIMUTHS`
    (33 columns). With ``groups`` (names of :data:`FEATURE_GROUPS`): only those groups' columns, in that order.
    The relative azimuths are computed with :func:`relative_azimuths` unless ``columns`` already has them.
    Returns the matrix and the column names.
    """
    if groups is None:
        names = FEATURES + RELATIVE_AZIMUTHS
    else:
        groups = [groups] if isinstance(groups, str) else list(groups)
        unknown = [g for g in groups if g not in FEATURE_GROUPS]
        if unknown:
            raise ValueError(f"unknown feature group(s) {unknown}; known: {list(FEATURE_GROUPS)}")
        names = list(dict.fromkeys(n for g in groups for n in FEATURE_GROUPS[g]))
    cols = dict(columns)
    if any(n in RELATIVE_AZIMUTHS and n not in cols for n in names):
        cols.update({k: v for k, v in relative_azimuths(columns).items() if k not in cols})
    missing = [n for n in names if n not in cols]
    if missing:
        raise KeyError(f"columns missing for the fidelity matrix: {missing}")
    return np.column_stack([np.asarray(cols[n], dtype=np.float64) for n in names]), names


# ----------------------------------------------------------------------------------------------------------
# classifier two-sample test with a learning curve


def make_classifier(kind: str = "hgb", seed: int = 0):
    """The C2ST classifier. ``"hgb"``: a histogram gradient-boosted tree ensemble tuned for power (large trees,
    early stopping on 10 % of the training events after 20 rounds without gain, at most :data:`MAX_ITER`);
    ``"mlp"``: a (128, 128) multilayer perceptron (Adam, batches of 1000, early stopping after 5 epochs without
    gain, at most :data:`MAX_ITER` epochs), on inputs standardised on the training events (batches of 200 took
    133 s at 1e5 events per class on 2 cores, 1000 about a quarter of that)."""
    if kind == "hgb":
        return HistGradientBoostingClassifier(learning_rate=0.1, max_leaf_nodes=63, max_iter=MAX_ITER["hgb"],
                                              early_stopping=True, validation_fraction=0.1, n_iter_no_change=20,
                                              l2_regularization=1.0, random_state=seed)
    if kind == "mlp":
        return make_pipeline(StandardScaler(),
                             MLPClassifier(hidden_layer_sizes=(128, 128), early_stopping=True,
                                           max_iter=MAX_ITER["mlp"],
                                           batch_size=1000, n_iter_no_change=5, random_state=seed))
    raise ValueError(f"unknown classifier {kind!r}; choose one of {CLASSIFIERS}")


def _n_iter(clf) -> int:
    est = clf[-1] if hasattr(clf, "steps") else clf
    return int(getattr(est, "n_iter_", 0))


def _fit_and_score(kind: str, seed: int, a_train: np.ndarray, b_train: np.ndarray, x_test: np.ndarray,
                   threads: int | None = None) -> tuple[np.ndarray, float, int]:
    """Train the classifier to tell ``b`` (label 1) from ``a`` (label 0); return the test scores P(b), the
    training time in seconds and the number of iterations (boosting iterations or MLP epochs) run. ``threads``
    limits the OpenMP/BLAS thread pools (``threadpoolctl``; None: no limit)."""
    x = np.concatenate([a_train, b_train])
    y = np.concatenate([np.zeros(len(a_train)), np.ones(len(b_train))])
    clf = make_classifier(kind, seed)
    with threadpool_limits(threads):
        start = time.perf_counter()
        clf.fit(x, y)
        seconds = time.perf_counter() - start
        score = clf.predict_proba(x_test)[:, 1]
    return score, seconds, _n_iter(clf)


def bootstrap_aucs(scores_a: np.ndarray, scores_b: np.ndarray, n_boot: int,
                   rng: np.random.Generator) -> np.ndarray:
    """ROC AUCs (``b`` positive) of ``n_boot`` stratified bootstrap resamples of two score samples.

    A resample is represented by its multiplicities (``np.bincount`` of the drawn indices), so each AUC is the
    weighted Mann-Whitney statistic sum_i w_i [#a below b_i + ties/2] / (n_a n_b), from the placements of the
    ``b`` scores among the sorted ``a`` scores (computed once). Identical to ``roc_auc_score`` with the
    multiplicities as sample weights (tested), but O(n) per resample: 6-8 ms at 1e5 events per class, where
    ``roc_auc_score`` on resampled indices takes about 55 ms, i.e. 11 s for 200 resamples (measured on a busy
    2-core machine).
    """
    scores_a, scores_b = np.asarray(scores_a), np.asarray(scores_b)
    na, nb = len(scores_a), len(scores_b)
    order = np.argsort(scores_a, kind="stable")
    sorted_a = scores_a[order]
    lo = np.searchsorted(sorted_a, scores_b, side="left")
    hi = np.searchsorted(sorted_a, scores_b, side="right")
    out = np.empty(n_boot)
    for k in range(n_boot):
        wa = np.bincount(rng.integers(0, na, na), minlength=na)[order]
        wb = np.bincount(rng.integers(0, nb, nb), minlength=nb)
        cum = np.concatenate([[0], np.cumsum(wa)])
        below, ties = cum[lo], cum[hi] - cum[lo]
        out[k] = np.dot(wb, below + 0.5 * ties) / (na * nb)
    return out


def _slope(sizes: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Least-squares slope of ``values`` (sizes first; extra axes are fitted separately) against log10(size)."""
    return np.polyfit(np.log10(sizes), values, 1)[0]


def c2st_learning_curve(a: np.ndarray, b: np.ndarray, sizes: Sequence[int], test_size: int, seed: int = 0,
                        classifier: str = "hgb", n_boot: int = 200, threads: int | None = None,
                        draws: int = 0) -> dict:
    """Classifier two-sample test with stated power: the test AUC against the number of training events
    (Lopez-Paz and Oquab, ICLR 2017; Friedman, PHYSTAT 2003).

    ``a`` (reference, e.g. simulated; label 0) and ``b`` (e.g. generated; label 1) are ``(n, d)`` arrays. Each is
    shuffled (seeded); its first ``test_size`` events form a fixed held-out test set, and for each training size
    n of ``sizes`` (events per class, ascending) a fresh classifier (:func:`make_classifier`) is trained on the
    first n of the remaining events of each class (nested training sets) and evaluated on that same test set.
    Sizes above what both samples hold after the test set are clipped to it (duplicates dropped;
    ``"requested_sizes"`` and ``"clipped"`` record it); fewer than two sizes left raise ``ValueError``.

    Per size: the AUC, its Hanley-McNeil standard error (Radiology 143 (1982) 29), 68 and 95 % percentile
    intervals from ``n_boot`` stratified bootstrap resamples of the test set (:func:`bootstrap_aucs`, the same
    resamples for every size), the training time and the number of iterations run. ``slope`` and ``slope_last``
    are the fitted slopes of the AUC against log10(n) over all sizes and over the two largest; their errors
    (``slope_error``, ``slope_last_error``) are the bootstrap spread, i.e. test-set fluctuations only (training
    is not repeated). A ``slope_last`` well above zero means the test had not converged: it lacked power at the
    largest size and a larger training sample would separate the samples better. ``converged`` says per size
    whether the fit ended before its iteration limit (:data:`MAX_ITER`); where it did not, that AUC is a lower
    bound.

    ``draws``: further classifiers at the largest size, each trained on another random draw of that many events
    per class from what is left after the test set (the test events are never used; the same events where
    nothing more is left) with its own seed, all evaluated on the same test set. Their spread is the part of the
    AUC's uncertainty that the test-set bootstrap cannot see (training events and classifier seed: 0.002-0.004 at
    10^5 per class on the quickstart over three and four draws, two to three times the bootstrap's 68 %
    half-width of 0.0012). The draws overlap where the pool is not much larger than the size (on the quickstart
    about half of each draw is shared), and a spread from three values is itself uncertain by about 50 %, so it
    is a rough, rather low, estimate: ``draw_aucs`` (the curve's own fit first), ``draw_spread`` (their standard
    deviation), ``auc_total_error`` (68 %: the bootstrap's 68 % half-width and the draw spread added in
    quadrature, for the largest size), ``slope_last_total_error`` (the bootstrap error of ``slope_last`` with the
    draw spread of both points added).

    ``threads`` limits the thread pools of the fits (``threadpoolctl``; None: no limit). On a machine whose cores
    are busy, one thread is much faster: OpenMP threads of the boosted trees then wait for each other.

    Cost (measured once each on the 2-core development machine while another job kept it busy, so approximate):
    one ``"hgb"`` fit on 1e5 events per class with 33 features took 2.4 s with one thread (5.6 s with two) when
    early stopping ended it after 36 iterations (a weak defect), and 5.0 s with one thread (95 s with two) for a
    strong defect ending after 100 iterations; i.e. about 0.05 s per iteration on one thread, up to 20 s for the
    400-iteration maximum. The 200 bootstrap resamples of a 1e5 + 1e5 test set take 1-2 s per size, where
    ``roc_auc_score`` on resampled indices would take about 11 s.

    Returns a JSON-ready dict: ``classifier``, ``sizes``, ``test_size``, ``auc``, ``auc_error``,
    ``auc_interval68``, ``auc_interval95``, ``train_seconds``, ``n_iter``, ``slope``, ``slope_error``,
    ``slope_last``, ``slope_last_error``, ``requested_sizes``, ``clipped``, ``n_features``, ``converged``,
    ``max_iter``, ``draw_aucs``, ``draw_spread``, ``auc_total_error``, ``slope_last_total_error``, and under ``"_scores"`` (not JSON) the
    test scores of the largest size, ``{"a": ..., "b": ...}``.
    """
    if classifier not in CLASSIFIERS:
        raise ValueError(f"unknown classifier {classifier!r}; choose one of {CLASSIFIERS}")
    a, b = np.asarray(a), np.asarray(b)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"a and b must be 2-D with the same number of columns, got {a.shape} and {b.shape}")
    requested = sorted({int(n) for n in sizes})
    if not requested or requested[0] < 1 or test_size < 1:
        raise ValueError(f"training sizes and test_size must be positive, got {list(sizes)} and {test_size}")
    available = min(len(a), len(b)) - test_size
    use = sorted({min(n, available) for n in requested if min(n, available) >= 1})
    if len(use) < 2:
        raise ValueError(f"samples of {len(a)} and {len(b)} events leave {max(available, 0)} training events per "
                         f"class after {test_size} test events: fewer than 2 of the training sizes {requested} "
                         f"remain; need at least {requested[1] if len(requested) > 1 else requested[0]} + "
                         f"{test_size} events in each sample")
    rng = np.random.default_rng(seed)
    a, b = a[rng.permutation(len(a))], b[rng.permutation(len(b))]
    a_test, b_test, a_train, b_train = a[:test_size], b[:test_size], a[test_size:], b[test_size:]
    x_test = np.concatenate([a_test, b_test])
    y_test = np.concatenate([np.zeros(test_size), np.ones(test_size)])

    auc, err, i68, i95, seconds, iters, boots = [], [], [], [], [], [], []
    for n in use:
        score, sec, it = _fit_and_score(classifier, seed, a_train[:n], b_train[:n], x_test, threads)
        value = float(roc_auc_score(y_test, score))
        reps = bootstrap_aucs(score[:test_size], score[test_size:], n_boot, np.random.default_rng([seed, 1]))
        auc.append(value)
        err.append(hanley_mcneil_error(value, test_size, test_size))
        i68.append([float(q) for q in np.quantile(reps, [0.16, 0.84])])
        i95.append([float(q) for q in np.quantile(reps, [0.025, 0.975])])
        seconds.append(float(sec))
        iters.append(it)
        boots.append(reps)
    x, boots = np.array(use, dtype=float), np.array(boots)
    slope_boot, last_boot = _slope(x, boots), _slope(x[-2:], boots[-2:])
    n = use[-1]
    draw_aucs = [auc[-1]]
    for d in range(1, draws + 1):
        rng_d = np.random.default_rng([seed, 2, d])
        ia = rng_d.choice(len(a_train), n, replace=False)
        ib = rng_d.choice(len(b_train), n, replace=False)
        s_d, _, _ = _fit_and_score(classifier, seed + d, a_train[ia], b_train[ib], x_test, threads)
        draw_aucs.append(float(roc_auc_score(y_test, s_d)))
    draw_spread = float(np.std(draw_aucs, ddof=1)) if draws else None
    half68 = (i68[-1][1] - i68[-1][0]) / 2
    return {
        "classifier": classifier,
        "sizes": [int(n) for n in use],
        "requested_sizes": requested,
        "clipped": use != requested,
        "test_size": int(test_size),
        "n_features": int(a.shape[1]),
        "auc": auc,
        "auc_error": err,
        "auc_interval68": i68,
        "auc_interval95": i95,
        "train_seconds": seconds,
        "n_iter": iters,
        "slope": float(_slope(x, np.array(auc))),
        "slope_error": float(np.std(slope_boot, ddof=1)) if n_boot > 1 else 0.0,
        "slope_last": float(_slope(x[-2:], np.array(auc[-2:]))),
        "slope_last_error": float(np.std(last_boot, ddof=1)) if n_boot > 1 else 0.0,
        "max_iter": MAX_ITER[classifier],
        "converged": [it < MAX_ITER[classifier] for it in iters],
        "draw_aucs": draw_aucs,
        "draw_spread": draw_spread,
        "auc_total_error": float(np.hypot(half68, draw_spread or 0.0)),
        "slope_last_total_error": float(np.hypot(np.std(last_boot, ddof=1) if n_boot > 1 else 0.0,
                                                 np.sqrt(2) * (draw_spread or 0.0) / np.log10(x[-1] / x[-2]))),
        "_scores": {"a": score[:test_size], "b": score[test_size:]},
    }


def group_aucs(a_cols: dict[str, np.ndarray], b_cols: dict[str, np.ndarray], size: int, test_size: int,
               seed: int = 0, threads: int | None = None) -> dict[str, dict]:
    """Locate a defect: for each group of :data:`FEATURE_GROUPS`, the ``"hgb"`` C2ST AUC (with its
    Hanley-McNeil error) on that group's columns only, trained on ``size`` events per class and tested on
    ``test_size`` held-out events per class (the same events for every group). ``threads`` as for
    :func:`c2st_learning_curve`.

    Returns ``{group: {"auc", "auc_error", "columns", "train_seconds"}}``.
    """
    n_a, n_b = len(next(iter(a_cols.values()))), len(next(iter(b_cols.values())))
    if min(n_a, n_b) < size + test_size:
        raise ValueError(f"group_aucs needs {size} + {test_size} events per sample, got {n_a} and {n_b}")
    rng = np.random.default_rng(seed)
    ia, ib = rng.permutation(n_a)[:size + test_size], rng.permutation(n_b)[:size + test_size]
    out = {}
    for group in FEATURE_GROUPS:
        xa, names = fidelity_matrix(a_cols, [group])
        xb, _ = fidelity_matrix(b_cols, [group])
        xa, xb = xa[ia], xb[ib]
        score, sec, _ = _fit_and_score("hgb", seed, xa[test_size:], xb[test_size:],
                                       np.concatenate([xa[:test_size], xb[:test_size]]), threads)
        auc = float(roc_auc_score(np.r_[np.zeros(test_size), np.ones(test_size)], score))
        out[group] = {"auc": auc, "auc_error": hanley_mcneil_error(auc, test_size, test_size), "columns": names,
                      "train_seconds": float(sec)}
    return out


# ----------------------------------------------------------------------------------------------------------
# physical validity


def validity_masks(columns: dict[str, np.ndarray], min_dr: float = 0.4,
                   btag_working_points: Sequence[float] | None = None) -> dict[str, np.ndarray]:
    """Per event, whether it passes each physical constraint of :func:`validity_rates` (boolean arrays)."""
    c = {k: np.asarray(v) for k, v in columns.items()}
    pts = [c[f"{j}_pt"] for j in JETS]
    out = {"jets_pt_ordered": (pts[0] >= pts[1]) & (pts[1] >= pts[2]) & (pts[2] >= pts[3])}
    separations = min_separations(c)
    out["jet_lepton_dr_ok"] = separations["jet_lepton"] >= min_dr
    out["jet_jet_dr_ok"] = separations["jet_jet"] >= min_dr
    out["pt_positive"] = np.logical_and.reduce([c["lepton_pT"] > 0, c["missing_energy_magnitude"] > 0]
                                               + [p > 0 for p in pts])
    if btag_working_points is not None and all(s in c for s in BTAG_SCORES):
        wps = [float(w) for w in btag_working_points]
        out["btag_consistent"] = np.logical_and.reduce(
            [c[level] == btag_levels(c[score], wps) for level, score in zip(BTAG_FEATURES, BTAG_SCORES)])
    return out


def validity_rates(columns: dict[str, np.ndarray], min_dr: float = 0.4,
                   btag_working_points: Sequence[float] | None = None) -> dict[str, float]:
    """Fractions of events passing physical constraints:

    - ``jets_pt_ordered``: jet1_pt >= jet2_pt >= jet3_pt >= jet4_pt;
    - ``jet_lepton_dr_ok``: Delta R(jet, lepton) >= ``min_dr`` for all four jets;
    - ``jet_jet_dr_ok``: Delta R >= ``min_dr`` for all six jet pairs;
    - ``pt_positive``: lepton, jet and MET transverse momenta all > 0;
    - ``btag_consistent`` (only with ``btag_working_points`` and the :data:`~analysis.features.BTAG_SCORES`
      columns present): each jetN_btag equals the number of working points its score exceeds.

    Delta R = sqrt(Delta eta^2 + Delta phi^2) with Delta phi wrapped to [-pi, pi). In the "normalised" units of
    the UCI HIGGS CSV eta and phi are not rescaled, so the Delta R cuts apply unchanged.
    """
    return {k: float(np.mean(m)) for k, m in validity_masks(columns, min_dr, btag_working_points).items()}


def validity_comparison(simulated_cols: dict[str, np.ndarray], generated_cols: dict[str, np.ndarray],
                        **kw) -> dict[str, dict]:
    """:func:`validity_rates` (keyword arguments passed on) of simulated and generated events side by side.

    Per rate: ``simulated`` and ``generated`` fractions with their binomial standard errors
    sqrt(p (1 - p) / n) (``simulated_error``, ``generated_error``), ``difference`` (generated - simulated) with
    ``difference_error`` (the two errors in quadrature), ``significance``: the two-proportion z statistic with
    the pooled fraction under the hypothesis of equal rates (so defined also when one rate is exactly 0 or 1;
    0 when both samples agree perfectly), ``consistent``: |z| < 3, and the event counts.
    """
    sim = validity_masks(simulated_cols, **kw)
    gen = validity_masks(generated_cols, **kw)
    out = {}
    for key in sim:
        if key not in gen:
            continue
        ns, ng = len(sim[key]), len(gen[key])
        ks, kg = int(sim[key].sum()), int(gen[key].sum())
        ps, pg = ks / ns, kg / ng
        es, eg = np.sqrt(ps * (1 - ps) / ns), np.sqrt(pg * (1 - pg) / ng)
        pool = (ks + kg) / (ns + ng)
        se_pool = np.sqrt(pool * (1 - pool) * (1 / ns + 1 / ng))
        z = (pg - ps) / se_pool if se_pool > 0 else 0.0
        out[key] = {"simulated": ps, "simulated_error": float(es), "generated": pg, "generated_error": float(eg),
                    "difference": pg - ps, "difference_error": float(np.hypot(es, eg)),
                    "significance": float(z), "consistent": bool(abs(z) < 3), "n_simulated": ns,
                    "n_generated": ng}
    return out


# ----------------------------------------------------------------------------------------------------------
# figures


def plot_learning_curves(curves: dict[str, dict], path: str | os.PathLike, title: str = "") -> list[Path]:
    """C2ST AUC against training events per class (log x), one curve per entry of ``curves`` (label ->
    :func:`c2st_learning_curve` result), error bars from the 68 % bootstrap interval, a band for the 95 %
    interval, and a line at 0.5 (indistinguishable samples)."""
    plt.style.use(hep.style.ROOT)
    fig, ax = plt.subplots(figsize=(10, 7))
    for label, curve in curves.items():
        x, auc = np.asarray(curve["sizes"], dtype=float), np.asarray(curve["auc"])
        i68, i95 = np.asarray(curve["auc_interval68"]), np.asarray(curve["auc_interval95"])
        yerr = np.clip(np.stack([auc - i68[:, 0], i68[:, 1] - auc]), 0, None)
        line = ax.errorbar(x, auc, yerr=yerr, fmt="o-", capsize=3,
                           label=f"{label} (slope last {curve['slope_last']:+.3f}/dec)")
        ax.fill_between(x, i95[:, 0], i95[:, 1], color=line[0].get_color(), alpha=0.15, lw=0)
    ax.axhline(0.5, color="black", ls="--", lw=1)
    ax.set_xscale("log")
    ax.set_xlabel("training events per class")
    ax.set_ylabel("C2ST AUC (held-out test set)")
    ax.legend(fontsize=12)
    if title:
        ax.set_title(title, fontsize=14)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_validity(comparison: dict[str, dict], path: str | os.PathLike, title: str = "") -> list[Path]:
    """Physical-validity rates (:func:`validity_comparison`): simulated and generated fractions as bars with
    binomial errors (left), and the significance of each difference with the +-3 sigma band (right)."""
    plt.style.use(hep.style.ROOT)
    keys = list(comparison)
    x = np.arange(len(keys))
    fig, (ax, zax) = plt.subplots(1, 2, figsize=(16, 7), gridspec_kw={"width_ratios": (3, 2)})
    for offset, side in ((-0.2, "simulated"), (0.2, "generated")):
        values = [comparison[k][side] for k in keys]
        errors = [comparison[k][f"{side}_error"] for k in keys]
        ax.bar(x + offset, values, width=0.4, yerr=errors, capsize=3, label=side)
    lo = min([comparison[k][s] for k in keys for s in ("simulated", "generated")], default=0.0)
    ax.set_ylim(max(0.0, lo - 0.1 * (1.0 - lo) - 0.02), 1.0 + 0.02)
    ax.set_xticks(x, keys, rotation=30, ha="right", fontsize=12)
    ax.set_ylabel("fraction of events passing")
    ax.legend(fontsize=12)
    z = np.array([comparison[k]["significance"] for k in keys])
    zax.bar(x, z, color=["tab:green" if abs(v) < 3 else "tab:red" for v in z])
    zax.axhspan(-3, 3, color="grey", alpha=0.2)
    zax.axhline(0, color="black", lw=0.8)
    zax.set_xticks(x, keys, rotation=30, ha="right", fontsize=12)
    zax.set_ylabel("significance of generated - simulated [$\\sigma$]", fontsize=16)
    if title:
        fig.suptitle(title, fontsize=16)
    fig.tight_layout()
    return save_figure(fig, path)
