"""The unfolding flow applied to a sample (:func:`unfold_reference`, :func:`unfold_masses`: posterior draws and
what is kept of them) and its measures from the stored outputs (:class:`workflow.unfolding.EvaluateUnfolding`):
closure, calibration, C2ST, the IBU baseline, the top-mass shifts, timing, and the goals of issue 16 as pass/fail.

``stored`` maps ``(seed, sample)`` to the arrays of :func:`unfold_reference` (sample ``"reference"``) and
:func:`unfold_masses` (a top-mass shift in GeV); ``reweighted`` maps a shift
to the latter after one iteration of prior reweighting.
"""

from __future__ import annotations

import json
import time
from typing import Callable

import numpy as np

from models.fit import sample_posterior

from . import unfolding as unf
from .fidelity import c2st_learning_curve

GOALS = {"closure_chi2_ndf": 1.5, "ratio_deviation": 0.02, "ks": 0.02, "coverage": 0.02, "c2st_auc": 0.55,
         "mass_shift_bias": 0.20, "ibu_error_ratio": 1.1}
"""The goals of issue 16 (upper limits)."""

IBU_OBSERVABLES = ("m_tt", "pt_t_had")


def _observable_matrix(params: np.ndarray, lepton_phi: np.ndarray, b_mass: float) -> np.ndarray:
    """The closure observables of parametrised events as a last axis of len(OBSERVABLES)."""
    obs = unf.observables(params, lepton_phi, b_mass)
    return np.stack([obs[k] for k in unf.OBSERVABLES], axis=-1)


EXAMPLES = 6
"""Whole posteriors kept per seed for the figure of single events."""


def unfold_reference(fit, objects: dict, samples: int, calibration_events: int, seed: int, b_mass: float,
                     device: str = "cpu", message=lambda text: None, closure_draws: int = 1) -> dict[str, np.ndarray]:
    """The closure draws (``closure_draws`` per event, all events: ``unfolded`` ``(closure_draws, n, 18)``), the
    calibration (rank and interval coverage of the truth among ``samples`` draws, per target and observable, on
    the first ``calibration_events`` events) and a few whole posteriors."""
    truth, context = unf.regression_data(objects)
    lphi = np.asarray(objects["obj_lepton_phi"], np.float64)
    t0 = time.perf_counter()
    closure, _ = sample_posterior(fit, context, closure_draws, seed=seed, device=device)
    closure_seconds = time.perf_counter() - t0
    n = min(calibration_events, len(truth))
    message(f"seed {seed}: {samples} posterior draws for each of {n} events")
    t0 = time.perf_counter()
    draws, _ = sample_posterior(fit, tuple(c[:n] for c in context), samples, seed=seed + 1, device=device)
    posterior_seconds = time.perf_counter() - t0
    full_draws = np.concatenate([draws, _observable_matrix(draws, lphi[:n], b_mass)], axis=-1)
    full_truth = np.concatenate([truth[:n], _observable_matrix(truth[:n], lphi[:n], b_mass)], axis=-1)
    names = list(unf.TARGETS) + list(unf.OBSERVABLES)
    cal = unf.calibration(full_draws, full_truth, names)
    return {"truth": truth.astype(np.float32), "unfolded": closure.astype(np.float32),
            "lepton_phi": lphi.astype(np.float32),
            "calibration_names": np.array(names), "calibration_json": np.array(json.dumps(cal)),
            "examples": full_draws[:, :EXAMPLES].transpose(1, 0, 2).astype(np.float32),
            "example_truth": full_truth[:EXAMPLES].astype(np.float32),
            "timing": np.array([closure_seconds, len(truth) * closure_draws, posterior_seconds, n * samples])}


def unfold_masses(fit, objects: dict, draws: int, seed: int, b_mass: float, device: str = "cpu") -> dict:
    """``draws`` posterior draws per event of the two top masses, and their truth."""
    truth, context = unf.regression_data(objects)
    lphi = np.asarray(objects["obj_lepton_phi"], np.float64)
    x, _ = sample_posterior(fit, context, draws, seed=seed + 2, device=device)
    obs = unf.observables(x, lphi, b_mass)
    true = unf.observables(truth, lphi, b_mass)
    return {"m_t_had": obs["m_t_had"].astype(np.float32), "m_t_lep": obs["m_t_lep"].astype(np.float32),
            "truth_m_t_had": true["m_t_had"].astype(np.float32), "truth_m_t_lep": true["m_t_lep"].astype(np.float32)}


def _obs(params: np.ndarray, lphi: np.ndarray, b_mass: float) -> dict[str, np.ndarray]:
    return unf.observables(params.astype(np.float64), lphi.astype(np.float64), b_mass)


def _bootstrap_error(values: np.ndarray, edges: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """Per-bin standard deviation of the histogram of ``values`` under Poisson(1) event weights."""
    reps = [np.histogram(values, edges, weights=rng.poisson(1.0, len(values)))[0] for _ in range(n_boot)]
    return np.std(reps, axis=0, ddof=1)


def evaluate(cfg, stored: dict, reweighted: dict, train: dict, reference: dict,
             message: Callable[[str], None] = lambda text: None) -> tuple[dict, dict]:
    """``(metrics, figure data)``; see the module docstring."""
    u, b_mass = cfg.unfolding, cfg.physics.b_mass
    seeds = list(u.seeds)
    first = seeds[0]
    ref0 = stored[(first, "reference")]
    lphi = ref0["lepton_phi"]
    truth_obs = _obs(ref0["truth"], lphi, b_mass)
    edges = {k: unf.edges_of(v, u.bins, k) for k, v in truth_obs.items()}
    metrics: dict = {"config": cfg.name, "seeds": seeds, "events": {"reference": int(len(lphi))}, "per_seed": {}}
    figures: dict = {"edges": edges, "truth": truth_obs, "unfolded": {}, "calibration": {}, "examples": {}}
    for seed in seeds:
        ref = stored[(seed, "reference")]
        draws = ref["unfolded"]  # (K, n, 18): K draws per event, each of weight 1 / K
        k_draws = draws.shape[0]
        obs = _obs(draws, np.broadcast_to(lphi, draws.shape[:2]), b_mass)
        flat = {k: v.ravel() for k, v in obs.items()}
        weights = np.full(flat["m_tt"].shape, 1.0 / k_draws)
        closure = {k: unf.closure(flat[k], truth_obs[k], edges[k], weights) for k in unf.OBSERVABLES}
        cal = json.loads(str(ref["calibration_json"]))
        message(f"seed {seed}: C2ST of unfolded against true parton-level events")
        a = np.concatenate([ref["truth"], np.stack([truth_obs[k] for k in unf.OBSERVABLES], axis=1)], axis=1)
        b = np.concatenate([draws[0], np.stack([obs[k][0] for k in unf.OBSERVABLES], axis=1)], axis=1)
        test = max(len(a) // 4, 50)
        avail = len(a) - test
        sizes = sorted({max(avail // 8, 20), max(avail // 4, 30), max(avail // 2, 40), avail})
        curve = c2st_learning_curve(a, b, sizes, test, seed=seed, threads=1)
        curve.pop("_scores", None)
        closure_seconds, n_closure, posterior_seconds, n_posterior = (float(x) for x in ref["timing"])
        metrics["per_seed"][str(seed)] = {
            "closure": closure, "closure_draws": int(k_draws), "calibration": cal, "c2st": curve,
            "timing": {"closure_draws_per_second": n_closure / max(closure_seconds, 1e-9),
                       "posterior_draws_per_second": n_posterior / max(posterior_seconds, 1e-9)}}
        figures["unfolded"][seed] = (flat, weights)
        figures.setdefault("per_event", {})[seed] = obs  # (draws, events) per observable
        figures["calibration"][seed] = cal
        figures["examples"][seed] = (ref["examples"], ref["example_truth"])

    # prior dependence: top-mass shifts, before and after one reweighting iteration
    def estimate(m_had, m_lep):
        return unf.top_mass_estimate(m_had, m_lep, seed=1)

    shifts = [float(s) for s in u.mass_shifts]
    metrics["mass_shift"] = {}
    for seed in seeds:
        obs = figures["per_event"][seed]
        nominal = {"truth": estimate(truth_obs["m_t_had"], truth_obs["m_t_lep"]),
                   "unfolded": estimate(obs["m_t_had"], obs["m_t_lep"])}
        shifted = {s: {"truth": estimate(stored[(seed, s)]["truth_m_t_had"], stored[(seed, s)]["truth_m_t_lep"]),
                       "unfolded": estimate(stored[(seed, s)]["m_t_had"], stored[(seed, s)]["m_t_lep"])}
                   for s in shifts}
        metrics["mass_shift"][str(seed)] = unf.mass_shift_test(nominal, shifted)
        if seed == first and reweighted:
            after = {s: {"truth": shifted[s]["truth"], "unfolded": estimate(r["m_t_had"], r["m_t_lep"])}
                     for s, r in reweighted.items()}
            metrics["mass_shift_reweighted"] = unf.mass_shift_test(nominal, after)

    # the IBU baseline on m_tt and the hadronic top pT, both against the expected (population) truth
    # distribution, read from the training events' truth scaled to the reference sample: an unfolded spectrum
    # estimates that, with its own statistical error
    message("IBU baseline")
    rng = np.random.default_rng(cfg.seed)
    n_train = min(len(train["obj_n_jets"]), 100_000)
    sub = unf.with_truth({k: v[:n_train] for k, v in train.items()})
    train_truth = _obs(unf.regression_data(sub)[0], sub["obj_lepton_phi"], b_mass)
    train_reco = unf.reco_observables(sub)
    data_reco = unf.reco_observables(reference)
    n_ref = len(lphi)
    metrics["ibu"] = {}
    figures["ibu"] = {}
    for k in IBU_OBSERVABLES:
        reco_edges = np.quantile(train_reco[k], np.linspace(0.005, 0.995, u.bins + 1))
        ibu = unf.ibu_unfold(data_reco[k], train_reco[k], train_truth[k], edges[k], reco_edges, u.ibu_iterations)
        scale = n_ref / len(train_truth[k])
        expected = unf.response(train_truth[k], train_truth[k], edges[k], edges[k]).diagonal() * scale
        expected_var = expected * scale
        t = unf.response(truth_obs[k], truth_obs[k], edges[k], edges[k]).diagonal()  # these events' truth
        flows, boot = [], []
        for seed in seeds:
            flat, weights = figures["unfolded"][seed]
            x = np.clip(flat[k], edges[k][0], np.nextafter(edges[k][-1], -np.inf))
            flows.append(np.histogram(x, edges[k], weights=weights)[0])
            # bootstrap over events: every draw of an event carries the event's Poisson weight
            k_draws = int(round(1.0 / weights[0]))
            per_event = x.reshape(k_draws, -1)
            reps = []
            for _ in range(50):
                w = np.broadcast_to(rng.poisson(1.0, per_event.shape[1]) / k_draws, per_event.shape)
                reps.append(np.histogram(per_event.ravel(), edges[k], weights=w.ravel())[0])
            boot.append(np.std(reps, axis=0, ddof=1))
        flow = np.mean(flows, axis=0)  # the seeds' mean: its model error is their spread over sqrt(seeds)
        seed_var = np.var(flows, axis=0, ddof=1) / len(flows) if len(flows) > 1 else np.zeros_like(flow)
        flow_err = np.sqrt(np.mean(np.square(boot), axis=0) + seed_var)
        ibu_err = np.hypot(ibu["stat_err"], ibu["sys_err"])  # data and response-matrix statistics
        ok = (expected > 0) & (ibu_err > 0)
        nb = int(ok.sum())

        def chi2(values, err):
            return float(np.sum((values - expected)[ok] ** 2 / (err[ok] ** 2 + expected_var[ok])) / nb)

        metrics["ibu"][k] = {
            "iterations": u.ibu_iterations,
            "ibu_chi2_ndf": chi2(ibu["unfolded"], ibu_err),
            "flow_chi2_ndf": chi2(flow, flow_err),
            "flow_chi2_ndf_ibu_errors": chi2(flow, ibu_err),
            "flow_within_ibu_error": float(np.mean(np.abs(flow - expected)[ok]
                                                   <= np.sqrt(ibu_err**2 + expected_var)[ok])),
            "ibu_within_ibu_error": float(np.mean(np.abs(ibu["unfolded"] - expected)[ok]
                                                  <= np.sqrt(ibu_err**2 + expected_var)[ok])),
            "error_ratio_median": float(np.median((flow_err / np.where(ibu_err > 0, ibu_err, np.nan))[ok])),
            "truth": t.tolist(), "expected": expected.tolist(), "ibu": ibu["unfolded"].tolist(),
            "ibu_error": ibu_err.tolist(), "flow": flow.tolist(), "flow_error": flow_err.tolist(),
            "edges": edges[k].tolist()}
        figures["ibu"][k] = metrics["ibu"][k]
    metrics["summary"] = _summary(metrics, seeds)
    return metrics, figures


def _summary(metrics: dict, seeds: list[int]) -> dict:
    per = metrics["per_seed"]
    chi2 = [c["chi2_ndf"] for s in per.values() for c in s["closure"].values()]
    dev = [c["max_ratio_deviation"] for s in per.values() for c in s["closure"].values()
           if c["max_ratio_deviation"] is not None]
    ks = [c["ks"] for s in per.values() for c in s["calibration"].values()]
    cov68 = [abs(c["coverage68"] - 0.68) for s in per.values() for c in s["calibration"].values()]
    cov95 = [abs(c["coverage95"] - 0.95) for s in per.values() for c in s["calibration"].values()]
    auc = [s["c2st"]["auc"][-1] for s in per.values()]
    bias = [abs(v["bias"]) for s in metrics["mass_shift"].values() for v in s.values() if v["bias"] is not None]
    bias_rw = [abs(v["bias"]) for v in metrics.get("mass_shift_reweighted", {}).values() if v["bias"] is not None]
    ratio = [v["error_ratio_median"] for v in metrics["ibu"].values()]
    within = [v["flow_chi2_ndf_ibu_errors"] for v in metrics["ibu"].values()]
    out = {"closure_chi2_ndf_max": max(chi2), "closure_ratio_deviation_max": max(dev) if dev else None,
           "calibration_ks_max": max(ks), "coverage68_deviation_max": max(cov68),
           "coverage95_deviation_max": max(cov95), "c2st_auc": max(auc),
           "mass_shift_bias_max": max(bias) if bias else None,
           "mass_shift_bias_reweighted_max": max(bias_rw) if bias_rw else None,
           "ibu_error_ratio_max": max(ratio), "flow_chi2_ndf_ibu_errors_max": max(within),
           "flow_within_ibu_error_min": min(v["flow_within_ibu_error"] for v in metrics["ibu"].values())}
    g = GOALS
    out["goals"] = {
        "closure chi2/ndf <= 1.5": out["closure_chi2_ndf_max"] <= g["closure_chi2_ndf"],
        "closure ratio within 2 % (bins >= 1000 events)": dev != [] and max(dev) <= g["ratio_deviation"],
        "calibration KS <= 0.02": out["calibration_ks_max"] <= g["ks"],
        "coverage 68/95 % within 2 %": max(out["coverage68_deviation_max"], out["coverage95_deviation_max"])
        <= g["coverage"],
        "C2ST AUC <= 0.55": out["c2st_auc"] <= g["c2st_auc"],
        "top-mass shift bias <= 20 % after reweighting": bool(bias_rw) and max(bias_rw) <= g["mass_shift_bias"],
        "closure within IBU's statistical error (chi2/ndf <= 1.5)": max(within) <= g["closure_chi2_ndf"],
        "per-bin uncertainty <= 1.1 x IBU": out["ibu_error_ratio_max"] <= g["ibu_error_ratio"],
    }
    return out
