"""python -m benchmarks.generator_reweighting OUT_JSON --store STORE [--config quickstart] [--version v1]
[--reweighter-events 200000]

Does a classifier reweighting of the generated background fix its template where the signal is? (Issue 13, a
means tried beside those the issue lists; DCTR-style refinement of a generator: Diefenbacher, Eren, Kasieczka,
Korol, Nachman, Shih, JINST 15 (2020) P11004.) From the stored outputs of a finished ``RunAnalysis``: a gradient-
boosted classifier learns the flow's generated events (the first ``--reweighter-events`` of the first analysis
seed's sample) against the simulated events the flow was trained and validated on (its training and validation
partitions: no truth event); each remaining generated event gets the weight p / (1 - p) (clipped at 20), the
density ratio of simulation to the flow. The reweighted template (weights normalised to the expected
background) is then judged as every template is, against the truth test template the reweighter never saw:
chi2 for the analysis binning, the ratio in the five most signal-like bins, the spurious signal without
generator uncertainty (mu_hat / sigma, sigma including the truth sample's bootstrap spread) and the expected
limit, for each background systematic; the effective number of events (sum w)^2 / sum w^2. Two reweighters:
``rw_fast`` (learning rate 0.1, 31 leaves) and ``rw_smooth`` (0.05, 15 leaves), beside ``unweighted`` (the same
events without weights) and ``unweighted_all`` (every generated event: reproduces the stored LimitScan).
"""

from __future__ import annotations

import datetime
import json
import time

import numpy as np
from sklearn.ensemble import HistGradientBoostingClassifier

from analysis.config import load_config
from analysis.fidelity import fidelity_matrix
from analysis.features import FEATURES
from analysis.io import write_json
from analysis.ntuple import read_ntuples
from benchmarks.stored_templates import StoredAnalysis, summary_line
from benchmarks.unfolding import stored, stored_run_parser

REWEIGHTERS = {"rw_fast": (0.1, 31, 200), "rw_smooth": (0.05, 15, 400)}
MAX_WEIGHT = 20.0


def main(argv: list[str] | None = None) -> None:
    ap = stored_run_parser(__doc__)
    ap.set_defaults(config="quickstart")
    ap.add_argument("--reweighter-events", type=int, default=200_000)
    args = ap.parse_args(argv)
    cfg = load_config(args.config)
    lc, seed, n_rw = cfg.limits, cfg.seed, args.reweighter_events
    analysis = StoredAnalysis(args.store, cfg, args.version)
    results, edges = analysis.results, analysis.edges
    flow_seed = cfg.flows.analysis_seeds[0]
    scores = analysis.scores[f"generated_{flow_seed}"]
    # the expected background the generated sample carries (the stored template holds the events above the cut)
    stored_total = float(np.sum(results["templates"]["generated"][str(flow_seed)]["yields"]))
    inside = np.sum((scores >= edges[0]) & (scores <= edges[-1]))
    expected = stored_total * len(scores) / inside

    def matrix(paths):
        return fidelity_matrix(read_ntuples(paths, columns=list(FEATURES)))[0]

    part = stored(args.store, "PartitionEvents", cfg.name, args.version)
    simulated = np.concatenate([matrix([part / f"background_{p}.root"]) for p in ("train", "validation")])
    sample = stored(args.store, "SampleFlow", cfg.name, args.version, f"{cfg.flows.default}_s{flow_seed}",
                    f"n{lc.generated_sizes.max}")
    generated = matrix(sorted(sample.glob("generated_*.root")))
    if len(generated) != len(scores):
        raise SystemExit(f"{sample}: {len(generated)} generated events against {len(scores)} scores")

    def judge(weights: np.ndarray, start: int) -> dict:
        return analysis.judge(scores[start:], weights, expected)

    out = {"date": datetime.datetime.now().isoformat(timespec="seconds"), "config": cfg.name,
           "store": str(args.store), "reweighter_events": n_rw, "simulated_events": int(len(simulated)),
           "generated_events": int(len(scores)), "variants": {}}
    out["variants"]["unweighted_all"] = judge(np.ones(len(scores)), 0)
    out["variants"]["unweighted"] = judge(np.ones(len(scores) - n_rw), n_rw)
    x = np.concatenate([generated[:n_rw], simulated])
    y = np.r_[np.zeros(n_rw), np.ones(len(simulated))]
    balance = np.r_[np.full(n_rw, len(simulated) / n_rw), np.ones(len(simulated))]
    for name, (rate, leaves, rounds) in REWEIGHTERS.items():
        t0 = time.perf_counter()
        clf = HistGradientBoostingClassifier(learning_rate=rate, max_leaf_nodes=leaves, max_iter=rounds,
                                             early_stopping=True, validation_fraction=0.2, n_iter_no_change=20,
                                             l2_regularization=1.0, random_state=seed)
        clf.fit(x, y, sample_weight=balance)
        p = clf.predict_proba(generated[n_rw:])[:, 1]
        w = np.clip(p / np.maximum(1 - p, 1e-12), 0, MAX_WEIGHT)
        row = judge(w, n_rw)
        row.update({"learning_rate": rate, "max_leaf_nodes": leaves, "rounds": int(clf.n_iter_),
                    "weight_percentiles_1_50_99": np.percentile(w, [1, 50, 99]).tolist(),
                    "seconds": time.perf_counter() - t0})
        out["variants"][name] = row
    for name, row in out["variants"].items():
        print(summary_line(name, row))
    write_json(args.out, out)


if __name__ == "__main__":
    main()
