"""Expected-limit scans: generated against simulated background in the final fit.

For every point a template is filled, a pyhf workspace built (:func:`analysis.statistics.build_workspace`) and
the expected CLs limit with its bands computed (:func:`analysis.statistics.expected_limits`):

* ``generated``: the first N events of each flow seed's generated sample, for log-spaced N, each event weighted
  so that the sample carries the full expected background yield; its statistical uncertainty is that of N events;
* ``simulated``: the simulated background of the reference partition, at its own size;
* ``infinite``: the simulated template without statistical uncertainty (the infinite-statistics limit);
* ``luminosity``: the three above (generated at the largest N) against integrated luminosity;
* ``closure``: simulated background in both roles: random halves A and B of the reference events, A through the
  generated-sample path (equal weights, normalised to the expected yield) and B through the simulated path; the
  difference of their limits must be zero within its spread.

Each for every configured background systematic size. The binning is fixed once (:mod:`analysis.templates`).

The independent test (:func:`independent_test`): the truth sample, simulated background the generator never saw,
split into a calibration and a test part (``truth.calibration_fraction``):

* ``generated_unc``: every generated point again with the generator uncertainty in the model (per-bin
  nuisance parameters of the size of the bootstrap replicas' spread, :mod:`analysis.generator_uncertainty`),
  with the non-closure measured on the calibration part either as a coherent uncertainty or corrected for (the
  correction's fit error then coherent), scaled by the inflation factor measured on the calibration part when
  that still under-covers;
* ``spurious``: every workspace (simulated, generated with and without generator uncertainty, every size, seed
  and systematic) fitted to the truth test template as background-only pseudo-data: mu_hat +- sigma, where sigma
  adds the truth sample's own statistical spread (Poisson bootstraps of its events) to the fit's interval, the
  observed limit, and whether |mu_hat| <= ``limits.spurious_max_sigma`` sigma;
* template fidelity (chi2 against the truth test template), pulls and their coverage, and the amplification
  (equivalent simulated sample size) of every generated size.
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Callable

import numpy as np

from .config import LimitConfig
from .generator_uncertainty import NonClosure, ReplicaSpread, amplification, combine_nonclosures, corrected, \
    ensemble_pulls, inflation_factor, nonclosure_fit, pull_summary, pulls, replica_spread
from .partition import split_rows
from .statistics import BANDS, StatisticsError, build_workspace, expected_limits, fit_signal_strength, \
    observed_limit
from .templates import Template, make_template, merged_edges, scaled_weights


@dataclasses.dataclass
class ScoredSamples:
    """Classifier scores of the samples entering the fit. Weights are normalised to the configuration's
    luminosity ``luminosity_fb``; ``generated`` maps flow seed -> scores of its generated background events
    (in generation order); ``expected_background`` is the selected background's expected yield, carried by
    every generated sample."""

    signal_scores: np.ndarray
    signal_weights: np.ndarray
    background_scores: np.ndarray
    background_weights: np.ndarray
    generated: dict[int, np.ndarray]
    expected_background: float
    luminosity_fb: float
    truth_scores: np.ndarray | None = None
    truth_weights: np.ndarray | None = None
    truth_source: str = "independent simulation"
    replicas: dict[int, np.ndarray] = dataclasses.field(default_factory=dict)
    n_train: int = 0  # events of the generator's training partition (amplification unit)
    calibration_fraction: float = 0.5  # of the truth events, for the generator uncertainty's calibration


MAX_INFLATION = 100.0  # a generator uncertainty that needs more than this is reported as not reaching RMS 1


def _syst_key(v: float) -> str:
    return f"{v:g}"


class _Runner:
    """Builds, stores and evaluates the workspaces of one scan; counts limits and time."""

    def __init__(self, signal: Template, cfg: LimitConfig):
        self.signal = signal
        self.cfg = cfg
        self.workspaces: dict[str, dict] = {}
        self.n_limits = 0
        self.seconds = 0.0

    def limit(self, name: str, background: Template, syst: float, lumi_scale: float = 1.0,
              with_stat: bool = True, generator: tuple[np.ndarray, np.ndarray | None] | None = None
              ) -> dict[str, float]:
        """``generator``: (per-bin generator uncertainty, coherent generator shape or None), absolute."""
        per_bin, shape = generator if generator is not None else (None, None)
        ws = build_workspace(self.signal.yields * lumi_scale, background.yields * lumi_scale,
                             background.stat * lumi_scale if with_stat else None, syst,
                             self.cfg.lumi_uncertainty, name=name,
                             generator_uncertainty=None if per_bin is None else per_bin * lumi_scale,
                             generator_shape=None if shape is None else shape * lumi_scale)
        self.workspaces[name] = ws
        t0 = time.perf_counter()
        out = expected_limits(ws)
        self.seconds += time.perf_counter() - t0
        self.n_limits += 1
        return out


def _median_bands(rows: list[dict[str, float]]) -> dict[str, float]:
    return {str(k): float(np.median([r[str(k)] for r in rows])) for k in BANDS}


def simulated_limit(scores: np.ndarray, labels: np.ndarray, weights: np.ndarray, cfg: LimitConfig) -> dict:
    """The expected CLs limit (median and bands) on mu of one classifier with simulated templates of the scored
    events (``labels`` 1 signal, 0 background, ``weights`` normalised to the expected yields): ``cfg.n_bins``
    bins above ``cfg.score_cut`` merged to ``cfg.min_count`` background events, the background's statistical
    uncertainty per bin and the first background systematic, as the simulated-template point of the scan. The
    scan's bins must also hold the smallest generated sample, so they are coarser at the high-score end and its
    limit weaker (quickstart BDT: 0.909 there, 0.832 here). Compares classifiers, including those that cannot
    score generated events."""
    scores, labels, weights = (np.asarray(a) for a in (scores, labels, weights))
    bkg, sig = labels == 0, labels == 1
    edges = merged_edges([scores[bkg]], cfg.score_cut, cfg.n_bins, cfg.min_count)
    s = make_template(scores[sig], weights[sig], edges)
    b = make_template(scores[bkg], weights[bkg], edges)
    if s.total <= 0:
        raise StatisticsError(f"no signal above the score cut {cfg.score_cut}; no limit can be set")
    syst = cfg.background_systematics[0]
    ws = build_workspace(s.yields, b.yields, b.stat, syst, cfg.lumi_uncertainty, name="classifier")
    return {**expected_limits(ws), "bins": len(edges) - 1, "background_systematic": syst,
            "signal_yield": s.total, "background_yield": b.total}


def run_scan(samples: ScoredSamples, cfg: LimitConfig, seed: int,
             progress: Callable[[str], None] | None = None) -> tuple[dict, dict[str, dict]]:
    """Run every scan of the module docstring; returns (results, workspaces by point name).

    :class:`analysis.statistics.StatisticsError` or :class:`analysis.templates.TemplateError` (naming the point)
    if a template cannot be made or a limit not computed.
    """
    sizes = cfg.generated_sizes.values()
    seeds = sorted(samples.generated)
    for s in seeds:
        if len(samples.generated[s]) < sizes[-1]:
            raise StatisticsError(f"generated sample of flow seed {s} has {len(samples.generated[s])} events; the "
                                  f"scan needs {sizes[-1]} (limits.generated_sizes.max)")
    edges = merged_edges([samples.background_scores] + [samples.generated[s][:sizes[0]] for s in seeds],
                         cfg.score_cut, cfg.n_bins, cfg.min_count)
    sig = make_template(samples.signal_scores, samples.signal_weights, edges)
    sim = make_template(samples.background_scores, samples.background_weights, edges)
    if sig.total <= 0:
        raise StatisticsError(f"no signal above the score cut {cfg.score_cut}; no limit can be set")
    run = _Runner(sig, cfg)
    say = progress or (lambda msg: None)
    Y = samples.expected_background

    def generated_template(scores: np.ndarray) -> Template:
        return make_template(scores, scaled_weights(len(scores), Y), edges)

    results: dict = {"edges": edges.tolist(), "sizes": sizes, "seeds": seeds,
                     "systematics": list(cfg.background_systematics), "bands": list(BANDS),
                     "simulated_events": int(len(samples.background_scores)),
                     "templates": {"signal": sig.to_dict(), "simulated": sim.to_dict()},
                     "simulated": {}, "infinite": {}, "generated": {}}
    for syst in cfg.background_systematics:
        k = _syst_key(syst)
        results["simulated"][k] = run.limit(f"simulated_syst{k}", sim, syst)
        results["infinite"][k] = run.limit(f"infinite_syst{k}", sim, syst, with_stat=False)
        per_seed = {}
        for s in seeds:
            rows = []
            for n in sizes:
                rows.append(run.limit(f"generated_s{s}_n{n}_syst{k}", generated_template(samples.generated[s][:n]),
                                      syst))
            per_seed[str(s)] = rows
            say(f"syst {k}: seed {s} done ({run.n_limits} limits, {run.seconds:.1f} s)")
        results["generated"][k] = {"per_seed": per_seed,
                                   "median": [_median_bands([per_seed[str(s)][i] for s in seeds])
                                              for i in range(len(sizes))]}
    largest = {s: generated_template(samples.generated[s][:sizes[-1]]) for s in seeds}
    results["templates"]["generated"] = {str(s): largest[s].to_dict() for s in seeds}

    # luminosity scan (templates scale with luminosity; their relative statistical uncertainty does not)
    lumis = list(cfg.luminosities_fb)
    lumi = {"luminosities_fb": lumis, "simulated": {}, "generated": {}, "infinite": {}}
    for syst in cfg.background_systematics:
        k = _syst_key(syst)
        lumi["simulated"][k], lumi["infinite"][k], lumi["generated"][k] = [], [], []
        for L in lumis:
            scale = L / samples.luminosity_fb
            lumi["simulated"][k].append(run.limit(f"lumi{L:g}_simulated_syst{k}", sim, syst, scale))
            lumi["infinite"][k].append(run.limit(f"lumi{L:g}_infinite_syst{k}", sim, syst, scale, with_stat=False))
            lumi["generated"][k].append(_median_bands([
                run.limit(f"lumi{L:g}_generated_s{s}_syst{k}", largest[s], syst, scale) for s in seeds]))
    results["luminosity"] = lumi
    say(f"luminosity scan done ({run.n_limits} limits)")

    results["closure"] = _closure(samples, cfg, seed, run)
    if samples.truth_scores is not None:
        independent_test(samples, cfg, seed, run, results, edges, largest, generated_template, say)
    results["summary"] = _summary(results)
    results["timing"] = {"limits": run.n_limits, "seconds": run.seconds,
                         "ms_per_limit": 1e3 * run.seconds / max(run.n_limits, 1)}
    return results, run.workspaces


def _closure(samples: ScoredSamples, cfg: LimitConfig, seed: int, run: _Runner) -> dict:
    """Simulated background in both roles; see the module docstring."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0xC105]))
    scores, weights = samples.background_scores, samples.background_weights
    n = len(scores)
    splits = [rng.permutation(n) for _ in range(cfg.closure_splits)]
    halves = [(p[: n // 2], p[n // 2:]) for p in splits]
    edges = merged_edges([scores[h] for pair in halves for h in pair], cfg.score_cut, cfg.n_bins,
                         max(1, cfg.min_count // 2))
    signal = make_template(samples.signal_scores, samples.signal_weights, edges)
    closure_run = _Runner(signal, cfg)
    out = {"edges": edges.tolist()}
    for syst in cfg.background_systematics:
        k = _syst_key(syst)
        diffs, rel = [], []
        for i, (a, b) in enumerate(halves):
            as_generated = make_template(scores[a], scaled_weights(len(a), samples.expected_background), edges)
            wb = weights[b] * (weights.sum() / weights[b].sum())
            as_simulated = make_template(scores[b], wb, edges)
            la = closure_run.limit(f"closure{i}_generated_role_syst{k}", as_generated, syst)["0"]
            lb = closure_run.limit(f"closure{i}_simulated_role_syst{k}", as_simulated, syst)["0"]
            diffs.append(la - lb)
            rel.append((la - lb) / lb)
        d = np.asarray(diffs)
        mean, std = float(d.mean()), float(d.std(ddof=1))
        out[k] = {"differences": diffs, "relative": rel, "mean": mean, "std": std,
                  "mean_error": std / np.sqrt(len(d)), "pull": mean / (std / np.sqrt(len(d))) if std > 0 else 0.0}
    run.n_limits += closure_run.n_limits
    run.seconds += closure_run.seconds
    run.workspaces.update(closure_run.workspaces)
    return out


def _summary(results: dict) -> dict:
    """The study's answer per systematic size: the generated-background limit at the largest N (median over
    seeds) against the simulated and the infinite-statistics limits."""
    out = {}
    for k in results["simulated"]:
        sim = results["simulated"][k]
        gen = results["generated"][k]["median"][-1]
        inf = results["infinite"][k]
        spread = [results["generated"][k]["per_seed"][s][-1]["0"] for s in results["generated"][k]["per_seed"]]
        out[k] = {
            "simulated": sim["0"], "generated_largest_n": gen["0"], "infinite": inf["0"],
            "generated_seed_spread": float(np.std(spread)),
            "gain_over_simulated": 1.0 - gen["0"] / sim["0"],
            "gap_to_infinite": gen["0"] / inf["0"] - 1.0,
            # difference in units of the simulated expected band (+1 sigma side if positive, -1 if negative)
            "difference_in_sigma": (gen["0"] - sim["0"]) / ((sim["1"] - sim["0"]) if gen["0"] > sim["0"]
                                                            else (sim["0"] - sim["-1"])),
            "within_2sigma": bool(sim["-2"] <= gen["0"] <= sim["2"]),
        }
        if "generated_unc" in results:
            out[k]["generated_unc_largest_n"] = results["generated_unc"][k]["median"][-1]["0"]
        sp = results.get("spurious")
        if sp:
            out[k]["spurious_z_simulated"] = sp["simulated"][k]["z"]
            for key in ("generated", "generated_unc"):
                if k in sp[key]:
                    out[k][f"spurious_z_{key}"] = float(np.median([rows[-1]["z"] for rows in sp[key][k].values()]))
            if "splits" in sp:
                out[k]["spurious_splits_mean"], out[k]["spurious_splits_rms"] = sp["splits"]["mean"], sp["splits"]["rms"]
    return out


def _truth_template(scores: np.ndarray, weights: np.ndarray, rows: np.ndarray, edges: np.ndarray) -> Template:
    """Template of a part of the truth sample, its weights scaled so that the part carries the full yield."""
    w = weights[rows] * (weights.sum() / weights[rows].sum())
    return make_template(scores[rows], w, edges)


def _chi2(a: Template, b: Template, delta: np.ndarray | None = None) -> dict[str, float]:
    p = pulls(a, b, delta)
    ratio = np.divide(a.yields, b.yields, out=np.full_like(a.yields, np.nan), where=b.yields > 0)
    return {"chi2": float(np.sum(p ** 2)), "ndf": int(len(p)), "pulls": p.tolist(), "ratio": ratio.tolist()}


def _truth_bootstraps(ts: np.ndarray, tw: np.ndarray, rows: np.ndarray, edges: np.ndarray, n: int,
                      seed: int) -> list[np.ndarray]:
    """``n`` Poisson bootstraps (yields per bin) of the truth part ``rows``, its weights scaled to the full
    truth yield as in :func:`_truth_template`: the truth sample's own statistical fluctuations."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x5B51]))
    scale = tw.sum() / tw[rows].sum()
    return [make_template(ts[rows], tw[rows] * rng.poisson(1.0, len(rows)) * scale, edges).yields for _ in range(n)]


def _truth_spread(workspace: dict, boots: list[np.ndarray]) -> float:
    """Standard deviation of the best-fit mu of ``workspace`` over the truth bootstraps ``boots``."""
    return float(np.std([fit_signal_strength(workspace, data=b, interval=False).mu_hat for b in boots], ddof=1))


def _generator_options(templates: list[Template], t_cal: Template
                       ) -> tuple[NonClosure, dict[str, tuple[np.ndarray | None, np.ndarray | None, np.ndarray | None]]]:
    """The non-closure of the analysis ``templates`` against the calibration template and the three
    constructions of the generator uncertainty, each as (extra relative uncertainty in the pulls, coherent
    relative shapes for the fit, correction of the template)."""
    ncfit = combine_nonclosures([nonclosure_fit(t, t_cal) for t in templates])
    nc = ncfit.values
    # relative to the corrected template g / (1 + nc): the fit's variations shrink by 1 / (1 + nc)
    fit_shapes = ncfit.variations / (1.0 + nc)
    fit_err = np.sqrt(np.sum(fit_shapes ** 2, axis=0))
    return ncfit, {"replicas": (None, None, None), "replicas+nonclosure": (nc, nc[None, :], None),
                   "replicas+correction": (fit_err, fit_shapes, nc)}


def split_spurious(samples: ScoredSamples, cfg: LimitConfig, seed: int, construction: str, edges: np.ndarray,
                   size: int) -> dict:
    """The spurious signal of the generated template of the first ``size`` events of the first analysis seed
    (first background systematic, binning ``edges``) over ``cfg.spurious_splits`` further random
    calibration/test splits of the truth sample, the ``construction`` of the generator uncertainty
    (``replicas``, ``replicas+nonclosure``, ``replicas+correction``) measured anew on each calibration part:
    z = mu_hat / sigma on each test part. For a calibrated procedure the z are centred on zero with an RMS of at
    most 1 (the splits overlap, so they are not independent: the mean's error is larger than
    RMS / sqrt(splits))."""
    Y = samples.expected_background

    def generated_template(scores: np.ndarray) -> Template:
        return make_template(scores, scaled_weights(len(scores), Y), edges)

    signal = make_template(samples.signal_scores, samples.signal_weights, edges)
    analysis_t = {f"s{s}": generated_template(samples.generated[s][:size]) for s in sorted(samples.generated)}
    template = next(iter(analysis_t.values()))
    reps = {f"boot{s}": generated_template(samples.replicas[s]) for s in sorted(samples.replicas)}
    spread = replica_spread(list(reps.values()))
    ts, tw = np.asarray(samples.truth_scores, float), np.asarray(samples.truth_weights, float)
    syst = cfg.background_systematics[0]
    zs, factors, at_bound = [], [], []
    for k in range(cfg.spurious_splits):
        split_seed = seed + 7919 * (k + 1)
        cal_rows, test_rows = split_rows(len(ts), samples.calibration_fraction, split_seed)
        t_cal = _truth_template(ts, tw, cal_rows, edges)
        t_test = _truth_template(ts, tw, test_rows, edges)
        _, options = _generator_options(list(analysis_t.values()), t_cal)
        extra, shapes, corr = options[construction]
        f = inflation_factor(analysis_t, reps, t_cal, extra=extra, max_factor=MAX_INFLATION, correction=corr)
        t = corrected(template, corr)
        ws = build_workspace(signal.yields, t.yields, t.stat, syst, cfg.lumi_uncertainty, name=f"split{k}",
                             generator_uncertainty=f * spread.relative * t.yields,
                             generator_shape=None if shapes is None else f * shapes * t.yields,
                             observations=t_test.yields)
        fit = fit_signal_strength(ws)
        boots = _truth_bootstraps(ts, tw, test_rows, edges, cfg.spurious_bootstraps, split_seed)
        zs.append(fit.mu_hat / math.hypot(fit.error, _truth_spread(ws, boots)))
        factors.append(f)
        at_bound.append(fit.at_bound)
    z = np.asarray(zs)
    mean, rms = float(z.mean()), float(np.sqrt(np.mean(z ** 2)))
    return {"construction": construction, "background_systematic": syst, "z": z.tolist(), "inflation": factors,
            "mean": mean, "rms": rms, "within_max_sigma": float(np.mean(np.abs(z) <= cfg.spurious_max_sigma)),
            # splits whose fit ends on the lower bound of mu (a deficit the model cannot describe; their |z| is a
            # lower bound): none may, for a calibrated procedure
            "at_bound": int(sum(at_bound)),
            # unbiased within half a sigma and not under-covering (RMS within 1.25: 10 splits' RMS scatters)
            "calibrated": bool(abs(mean) <= 0.5 and rms <= 1.25 and not any(at_bound))}


def independent_test(samples: ScoredSamples, cfg: LimitConfig, seed: int, run: "_Runner", results: dict,
                     edges: np.ndarray, largest: dict[int, Template], generated_template, say) -> None:
    """The independent test of the module docstring; adds ``truth``, ``generator_uncertainty``,
    ``generated_unc``, ``spurious``, ``template_fidelity`` and ``amplification`` to ``results``."""
    t0 = time.perf_counter()
    fraction = samples.calibration_fraction
    ts, tw = np.asarray(samples.truth_scores, float), np.asarray(samples.truth_weights, float)
    cal_rows, test_rows = split_rows(len(ts), fraction, seed)
    t_cal = _truth_template(ts, tw, cal_rows, edges)
    t_test = _truth_template(ts, tw, test_rows, edges)
    Y = samples.expected_background
    sizes, seeds = results["sizes"], results["seeds"]
    results["truth"] = {"source": samples.truth_source, "events": int(len(ts)),
                        "calibration_events": int(len(cal_rows)), "test_events": int(len(test_rows)),
                        "test_template": t_test.to_dict(), "calibration_template": t_cal.to_dict()}

    # -- generator uncertainty from the replicas, calibrated on the calibration part -----------------------------
    # three constructions, all calibrated on the calibration part only: the replica spread (one parameter per bin)
    # scaled by a factor; the same plus the non-closure measured there as one coherent shape systematic of its
    # full size; and the generated templates corrected by that non-closure, with the correction's own statistical
    # uncertainty (the fit's eigen-variations, coherent) beside the spread. Each is then scaled if still needed.
    # The one that reaches a pull RMS of 1 with the smallest total uncertainty is used. (An uncorrected bias
    # covered by a constrained shape leaks into the signal where it looks like signal: the constraint pulls the
    # shape back and mu takes the rest; the correction removes that, and its error keeps the calibration half's
    # fluctuations from being claimed as knowledge.)
    reps = {f"boot{s}": generated_template(samples.replicas[s]) for s in sorted(samples.replicas)}
    spread: ReplicaSpread | None = replica_spread(list(reps.values())) if len(reps) >= 2 else None
    factor, per_bin_rel, shape_rel, correction = 1.0, None, None, None
    if spread is not None:
        analysis_t = {f"s{s}": largest[s] for s in seeds}
        ncfit, options = _generator_options(list(largest.values()), t_cal)
        nc = ncfit.values
        constructions = {}
        for name, (ex, _, corr) in options.items():
            f = inflation_factor(analysis_t, reps, t_cal, extra=ex, max_factor=MAX_INFLATION, correction=corr)
            total = f * (spread.relative if ex is None else np.sqrt(spread.relative ** 2 + ex ** 2))
            summaries = {}
            for part, truth in (("calibration", t_cal), ("test", t_test)):
                for label, g in (("raw", 1.0), ("inflated", f)):
                    summaries[f"{part}_{label}"] = pull_summary(np.concatenate(list(
                        ensemble_pulls(analysis_t, reps, truth, g, ex, corr).values())))
            constructions[name] = {"inflation": f, "reaches_rms_1": f < MAX_INFLATION, "pulls": summaries,
                                   "relative": total.tolist(), "mean_relative": float(np.sqrt(np.mean(total ** 2)))}
        usable = [n for n, c in constructions.items() if c["reaches_rms_1"]] or list(constructions)
        chosen = min(usable, key=lambda n: constructions[n]["mean_relative"])
        factor = constructions[chosen]["inflation"]
        extra, shapes, correction = options[chosen]
        per_bin_rel = factor * spread.relative
        shape_rel = None if shapes is None else factor * shapes
        results["generator_uncertainty"] = {
            "construction": chosen, "constructions": constructions,
            "relative": constructions[chosen]["relative"], "per_bin_relative": per_bin_rel.tolist(),
            "shape_relative": None if shape_rel is None else shape_rel.tolist(),
            "correction": None if correction is None else correction.tolist(),
            "spread": spread.to_dict(), "nonclosure": nc.tolist(), "nonclosure_fit": ncfit.to_dict(),
            "inflation": factor, "replica_seeds": sorted(samples.replicas),
            "replica_events": {str(k): int(len(v)) for k, v in samples.replicas.items()},
            "pulls": constructions[chosen]["pulls"],
            "test_pulls": {k: v.tolist() for k, v in
                           ensemble_pulls(analysis_t, reps, t_test, factor, extra, correction).items()},
            "templates": {k: t.to_dict() for k, t in reps.items()}}
        say(f"generator uncertainty: {len(reps)} replicas, construction {chosen}, inflation {factor:.2f}, test "
            f"pull RMS {constructions[chosen]['pulls']['test_inflated']['rms']:.2f}")

    def with_uncertainty(t: Template) -> tuple[Template, tuple[np.ndarray, np.ndarray | None]]:
        """The generated template as the fit sees it (corrected if the construction corrects) and its generator
        uncertainty: (per-bin, coherent shapes), absolute."""
        t = corrected(t, correction)
        return t, (per_bin_rel * t.yields, None if shape_rel is None else shape_rel * t.yields)

    # -- generated points with the generator uncertainty -------------------------------------------------------
    if spread is not None:
        results["generated_unc"] = {}
        for syst in cfg.background_systematics:
            k = _syst_key(syst)
            per_seed = {}
            for s in seeds:
                rows = []
                for n in sizes:
                    t, gen = with_uncertainty(generated_template(samples.generated[s][:n]))
                    rows.append(run.limit(f"generated_s{s}_n{n}_syst{k}_genunc", t, syst, generator=gen))
                per_seed[str(s)] = rows
            results["generated_unc"][k] = {"per_seed": per_seed, "median": [
                _median_bands([per_seed[str(s)][i] for s in seeds]) for i in range(len(sizes))]}
        say(f"limits with generator uncertainty done ({run.n_limits} limits)")

    # -- spurious signal against the truth test part -----------------------------------------------------------
    boots = _truth_bootstraps(ts, tw, test_rows, edges, cfg.spurious_bootstraps, seed)

    def observed_ws(name: str) -> dict:
        ws = run.workspaces[name]
        return {**ws, "observations": [{"name": "SR", "data": t_test.yields.tolist()}]}

    def truth_spread(name: str) -> float:
        return _truth_spread(observed_ws(name), boots)

    def spurious_row(name: str, expected: dict, truth_sigma: float) -> dict:
        ws = observed_ws(name)
        fit = fit_signal_strength(ws)
        sigma = math.hypot(fit.error, truth_sigma)
        # a minimum on the lower bound of mu is a deficit the model cannot describe (mu_hat truncated): no pass
        return {**fit.to_dict(), "truth_error": truth_sigma, "sigma": sigma, "z": fit.mu_hat / sigma,
                "pass": bool(abs(fit.mu_hat) <= cfg.spurious_max_sigma * sigma and not fit.at_bound),
                "observed_limit": observed_limit(ws, fit=fit), "expected_limit": expected["0"]}

    spurious: dict = {"max_sigma": cfg.spurious_max_sigma, "bootstraps": cfg.spurious_bootstraps,
                      "simulated": {}, "generated": {}, "generated_unc": {}}
    stored = {}
    for syst in cfg.background_systematics:
        k = _syst_key(syst)
        name = f"simulated_syst{k}"
        spurious["simulated"][k] = spurious_row(name, results["simulated"][k], truth_spread(name))
        stored[f"spurious_{name}"] = observed_ws(name)
        for key, suffix in (("generated", ""), ("generated_unc", "_genunc")):
            if key not in results:
                continue
            spurious[key][k] = {}
            for s in seeds:
                top = f"generated_s{s}_n{sizes[-1]}_syst{k}{suffix}"
                sigma_t = truth_spread(top)  # the largest N leans most on the data: a conservative spread
                spurious[key][k][str(s)] = [
                    spurious_row(f"generated_s{s}_n{n}_syst{k}{suffix}", results[key][k]["per_seed"][str(s)][i],
                                 sigma_t) for i, n in enumerate(sizes)]
                stored[f"spurious_{top}"] = observed_ws(top)
        say(f"syst {k}: spurious-signal fits done")
    for key in ("generated", "generated_unc"):
        rows = [r for k in spurious[key] for s in spurious[key][k] for r in spurious[key][k][s]]
        spurious[f"{key}_all_pass"] = bool(rows) and all(r["pass"] for r in rows)
        spurious[f"{key}_max_abs_z"] = max((abs(r["z"]) for r in rows), default=float("nan"))
    if spread is not None and cfg.spurious_splits:
        spurious["splits"] = split_spurious(samples, cfg, seed, results["generator_uncertainty"]["construction"],
                                            edges, sizes[-1])
        sp = spurious["splits"]
        say(f"spurious signal over {cfg.spurious_splits} further truth splits: mean {sp['mean']:+.2f}, RMS "
            f"{sp['rms']:.2f}" + (f", {sp['at_bound']} fit(s) on the lower bound of mu" if sp["at_bound"] else "")
            + f" ({'calibrated' if sp['calibrated'] else 'NOT calibrated'})")
    results["spurious"] = spurious
    run.workspaces.update(stored)

    # -- template fidelity and amplification -------------------------------------------------------------------
    sim = make_template(samples.background_scores, samples.background_weights, edges)
    fidelity = {"simulated": _chi2(sim, t_test)}
    for s in seeds:
        fidelity[f"s{s}"] = _chi2(largest[s], t_test)
        if spread is not None:
            t = corrected(largest[s], correction)
            fidelity[f"s{s}_with_uncertainty"] = _chi2(
                t, t_test, np.asarray(results["generator_uncertainty"]["relative"]) * t.yields)
    for name, t in reps.items():
        fidelity[name] = _chi2(t, t_test)
    results["template_fidelity"] = fidelity
    amp = {"n_train": samples.n_train, "simulated": amplification(sim, t_test, Y),
           "per_seed": {str(s): [amplification(generated_template(samples.generated[s][:n]), t_test, Y)
                                 for n in sizes] for s in seeds}}
    amp["median"] = [float(np.median([amp["per_seed"][str(s)][i]["equivalent_events"] for s in seeds]))
                     for i in range(len(sizes))]
    results["amplification"] = amp
    results["independent_test_seconds"] = time.perf_counter() - t0
