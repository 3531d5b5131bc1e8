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
"""

from __future__ import annotations

import dataclasses
import time
from typing import Callable

import numpy as np

from .config import LimitConfig
from .statistics import BANDS, StatisticsError, build_workspace, expected_limits
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
              with_stat: bool = True) -> dict[str, float]:
        ws = build_workspace(self.signal.yields * lumi_scale, background.yields * lumi_scale,
                             background.stat * lumi_scale if with_stat else None, syst,
                             self.cfg.lumi_uncertainty, name=name)
        self.workspaces[name] = ws
        t0 = time.perf_counter()
        out = expected_limits(ws)
        self.seconds += time.perf_counter() - t0
        self.n_limits += 1
        return out


def _median_bands(rows: list[dict[str, float]]) -> dict[str, float]:
    return {str(k): float(np.median([r[str(k)] for r in rows])) for k in BANDS}


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
    return out
